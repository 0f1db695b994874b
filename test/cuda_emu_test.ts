/**
 * The source rewrite of the CPU emulation of the cuda backend (ffi/build_cuda_emu.ts): launches
 * and dynamic shared memory in the forms kernels/cuda uses, and every .cu file there. The emulated
 * kernels themselves run in `deno task test:cuda-emu` (test/cuda_emu.ts).
 */
import { deepStrictEqual as assertEquals, throws as assertThrows } from "node:assert/strict";
import { emuSource } from "../ffi/build_cuda_emu.ts";

const root = decodeURIComponent(new URL("../", import.meta.url).pathname);

Deno.test("cuda emulation rewrite: a templated kernel, a multi-line config, no arguments", () => {
  assertEquals(
    emuSource("sgemm_k<Op, false><<<grid, kThreads, 0, ctx->stream>>>(op, 1, 0);"),
    "::emu::launch(grid, kThreads, 0, ctx->stream)(sgemm_k<Op, false>, op, 1, 0);",
  );
  assertEquals(
    emuSource("k<<<grid_1d(n, 256), 256, 0,\n    ctx->stream>>>(\n    a, b);"),
    "::emu::launch(grid_1d(n, 256), 256, 0,\n    ctx->stream)(k, \n    a, b);",
  );
  assertEquals(emuSource("done_k<<<1, 1>>>();"), "::emu::launch(1, 1)(done_k);");
});

Deno.test("cuda emulation rewrite: dynamic shared memory becomes the block's emulated buffer", () => {
  assertEquals(
    emuSource("  extern __shared__ __align__(128) unsigned char smem[];"),
    "  unsigned char* smem = reinterpret_cast<unsigned char*>(::emu::smem_base());",
  );
  assertEquals(
    emuSource("extern __shared__ float buf[];"),
    "float* buf = reinterpret_cast<float*>(::emu::smem_base());",
  );
});

Deno.test("cuda emulation rewrite: every kernels/cuda source, and a launch it cannot read", () => {
  for (const e of Deno.readDirSync(`${root}kernels/cuda`)) {
    if (!e.isFile || !e.name.endsWith(".cu")) continue;
    const text = Deno.readTextFileSync(`${root}kernels/cuda/${e.name}`);
    const out = emuSource(text, e.name);
    assertEquals(out.includes("<<<"), false, e.name);
    assertEquals(out.includes("extern __shared__"), false, e.name);
  }
  assertThrows(() => emuSource("(*table[i])<<<g, b>>>(x);", "t.cu"), /t\.cu: a kernel launch/);
});
