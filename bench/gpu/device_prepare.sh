#!/usr/bin/env bash
# Prepares the one GPU run: the device machine's image has nvcc, g++ and PyTorch but no Deno, so
# a gzip of this machine's deno binary (~42 MB) goes into .gpu/ (git-ignored, excluded from
# deno.json), to be carried with the working tree. Then run, on the device machine, from the
# repository root:
#   bash bench/gpu/device_run.sh "$OUT/gpucheck"
# (carry: [".gpu"]). The libraries are rebuilt there (build/ is not carried: the cpu library is
# built with -march=native for the machine that builds it).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .gpu
deno_bin="$(readlink -f "$(command -v deno)")"
gzip -6 -c "$deno_bin" > .gpu/deno.gz.tmp
mv .gpu/deno.gz.tmp .gpu/deno.gz
ls -la .gpu/deno.gz
