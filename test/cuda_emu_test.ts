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

// A kernel that reads a neighbour's shared-memory write with and without a barrier, run by the
// emulation in each thread order: the synced result never changes, the racy one does.
const RACE_CU = `#include <cuda_runtime.h>
#include <cstdio>
__global__ void racy(int* out) {
  __shared__ int s[64];
  s[threadIdx.x] = threadIdx.x + 1;
  out[threadIdx.x] = s[(threadIdx.x + 1) % 64];
}
__global__ void synced(int* out) {
  __shared__ int s[64];
  s[threadIdx.x] = threadIdx.x + 1;
  __syncthreads();
  out[threadIdx.x] = s[(threadIdx.x + 1) % 64];
}
int main() {
  int* o;
  cudaMalloc(&o, 256);
  for (int k = 0; k < 2; ++k) {
    for (int i = 0; i < 64; ++i) o[i] = -1;
    if (k == 0) racy<<<1, 64>>>(o); else synced<<<1, 64>>>(o);
    int good = 0;
    for (int i = 0; i < 64; ++i) good += o[i] == (i + 1) % 64 + 1;
    printf("%d\\n", good);
  }
}
`;

Deno.test({
  name: "cuda emulation: barriers are exact, and the thread order exposes a missing one",
  ignore: Deno.build.arch !== "x86_64",
  fn() {
    const dir = Deno.makeTempDirSync();
    try {
      Deno.writeTextFileSync(`${dir}/race.cpp`, emuSource(RACE_CU, "race.cu"));
      const cc = new Deno.Command(Deno.env.get("CXX") || "g++", {
        args: [
          "-std=c++17",
          "-O1",
          `-I${root}kernels/cuda/emu`,
          `${dir}/race.cpp`,
          `${root}kernels/cuda/emu/emu.cpp`,
          "-o",
          `${dir}/race`,
        ],
        stderr: "piped",
      }).outputSync();
      assertEquals(cc.success, true, new TextDecoder().decode(cc.stderr));
      const seen = (order: string) => {
        const r = new Deno.Command(`${dir}/race`, { env: { D8_CUDA_EMU_ORDER: order } })
          .outputSync();
        return new TextDecoder().decode(r.stdout).trim().split("\n").map(Number);
      };
      const [fwd, rev, shuf] = ["forward", "reverse", "shuffle"].map(seen);
      // synced: every thread sees its neighbour's write in every order
      assertEquals([fwd![1], rev![1], shuf![1]], [64, 64, 64]);
      // racy: forward, only the last thread's neighbour (thread 0) has written; reverse, all
      // but the last; shuffled, some in between
      assertEquals([fwd![0], rev![0]], [1, 63]);
      assertEquals(shuf![0]! > 1 && shuf![0]! < 63, true, `shuffled: ${shuf![0]}`);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
