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

/**
 * The two halves the emulated run splits test/gpu into, run side by side (the emulation is
 * single-threaded, CI has 2 cores): the INT8 conv cases of every kernel version, and the rest
 * (`deno test --filter` takes no look-ahead). The run fails unless the halves hold every test
 * once.
 */
export const EMU_HALVES = ["/^cuda: int8 conv fprop/", "/^cuda: (?:[^i]|int8 [^c])/"] as const;

/** [tests run (passed, failed or ignored), tests in the files] of a `deno test` summary. */
export function summaryCounts(out: string): [number, number] {
  const m = /(\d+) passed \| (\d+) failed(?: \| (\d+) ignored)?(?: \| (\d+) filtered out)?/
    .exec(out);
  if (!m) return [0, 0];
  const [ran, filtered] = [+m[1]! + +m[2]! + +(m[3] ?? 0), +(m[4] ?? 0)];
  return [ran, ran + filtered];
}

if (import.meta.main) {
  const lib = await buildCudaEmu({ verbose: true });
  // arguments of the caller's (`deno task test:cuda-emu --filter ...`): one run, as given
  const filters = Deno.args.length ? [[]] : EMU_HALVES.map((f) => ["--filter", f]);
  const halves = filters.map((filter) =>
    new Deno.Command(Deno.execPath(), {
      args: ["test", ...TEST_PERMISSIONS, ...filter, "test/gpu/", ...Deno.args],
      cwd: root,
      // threads run in a shuffled order between synchronization points (D8_CUDA_EMU_ORDER,
      // kernels/cuda/emu/README.md): a read of another thread's shared write without a barrier
      // between them then fails somewhere
      env: {
        DAINT8_CUDA_LIB: lib,
        DAINT8_REQUIRE_CUDA: "1",
        NO_COLOR: "1", // the summary line is read back
        D8_CUDA_EMU_ORDER: Deno.env.get("D8_CUDA_EMU_ORDER") ?? "shuffle",
      },
      stdout: "piped",
      stderr: "piped",
    }).output()
  );
  let code = 0, ran = 0, total = 0;
  for (const [i, r] of (await Promise.all(halves)).entries()) {
    if (filters.length > 1) console.log(`--- test:cuda-emu, filter ${EMU_HALVES[i]} ---`);
    await Deno.stdout.write(r.stdout);
    await Deno.stderr.write(r.stderr);
    if (r.code !== 0) code = r.code;
    const [n, all] = summaryCounts(new TextDecoder().decode(r.stdout));
    ran += n;
    total = all;
  }
  if (code === 0 && filters.length > 1 && ran !== total) {
    console.error(`test:cuda-emu: the halves ran ${ran} of ${total} tests (EMU_HALVES)`);
    code = 1;
  }
  Deno.exit(code);
}
