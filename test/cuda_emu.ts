/**
 * `deno task test:cuda-emu`: the GPU tests (test/gpu, every op of the cuda backend against the cpu
 * backend, each INT8 case under kernel versions 1, 2 and 3) on the CPU emulation of the cuda
 * backend (kernels/cuda/emu/README.md): the cuda sources compiled with g++ against an emulated
 * CUDA (ffi/build_cuda_emu.ts), loaded through `DAINT8_CUDA_LIB`. It checks the kernels' logic
 * (indexing, the mma / ldmatrix fragment layouts, the cp.async pipeline, reductions, rounding)
 * on any machine; CI runs it after `deno task test` (.ci/run). It does not replace a run on a GPU.
 *
 * @module
 */
import { buildCudaEmu } from "../ffi/build_cuda_emu.ts";
import { TEST_PERMISSIONS } from "./helpers/child_tests.ts";

const root = decodeURIComponent(new URL("../", import.meta.url).pathname);

if (import.meta.main) {
  const lib = await buildCudaEmu({ verbose: true });
  const child = new Deno.Command(Deno.execPath(), {
    args: ["test", ...TEST_PERMISSIONS, "test/gpu/", ...Deno.args],
    cwd: root,
    // threads run in a shuffled order between synchronization points (D8_CUDA_EMU_ORDER,
    // kernels/cuda/emu/README.md): a read of another thread's shared write without a barrier
    // between them then fails somewhere
    env: {
      DAINT8_CUDA_LIB: lib,
      DAINT8_REQUIRE_CUDA: "1",
      D8_CUDA_EMU_ORDER: Deno.env.get("D8_CUDA_EMU_ORDER") ?? "shuffle",
    },
    stdout: "inherit",
    stderr: "inherit",
  }).outputSync();
  Deno.exit(child.code);
}
