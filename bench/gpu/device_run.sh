#!/usr/bin/env bash
# On the GPU machine (see bench/gpu/device_prepare.sh): unpacks the carried deno, then runs
# `deno task gpu:check DIR` (build, cuda build check, test:gpu, INT8 benchmark, PyTorch peer).
# Everything is logged under DIR; nvidia-smi's view of the device goes there too.
set -uo pipefail
cd "$(dirname "$0")/../.."
dir="${1:?usage: device_run.sh DIR}"
mkdir -p "$dir" /tmp/daint8-bin
if ! command -v deno >/dev/null 2>&1; then
  gunzip -c .gpu/deno.gz > /tmp/daint8-bin/deno && chmod +x /tmp/daint8-bin/deno
  export PATH="/tmp/daint8-bin:$PATH"
fi
export DENO_NO_UPDATE_CHECK=1
nvidia-smi > "$dir/nvidia-smi.txt" 2>&1 || true
deno --version > "$dir/deno-version.txt" 2>&1
deno task gpu:check "$dir" 2>&1 | tee "$dir/gpu_check.log"
exit "${PIPESTATUS[0]}"
