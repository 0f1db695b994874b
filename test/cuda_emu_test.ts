/**
 * The source rewrite of the CPU emulation of the cuda backend (ffi/build_cuda_emu.ts): launches
 * and dynamic shared memory in the forms kernels/cuda uses, and every .cu file there. The emulated
 * kernels themselves run in `deno task test:cuda-emu` (test/cuda_emu.ts).
 */
import { deepStrictEqual as assertEquals, throws as assertThrows } from "node:assert/strict";
import { emuSource } from "../ffi/build_cuda_emu.ts";

const root = decodeURIComponent(new URL("../", import.meta.url).pathname);

/** Builds `dir/name` from a CUDA source (a kernel and its main) against the emulation. */
function buildEmuProgram(dir: string, name: string, cu: string): void {
  Deno.writeTextFileSync(`${dir}/${name}.cpp`, emuSource(cu, `${name}.cu`));
  const cc = new Deno.Command(Deno.env.get("CXX") || "g++", {
    args: [
      "-std=c++17",
      "-O1",
      `-I${root}kernels/cuda/emu`,
      `${dir}/${name}.cpp`,
      `${root}kernels/cuda/emu/emu.cpp`,
      "-o",
      `${dir}/${name}`,
    ],
    stderr: "piped",
  }).outputSync();
  assertEquals(cc.success, true, new TextDecoder().decode(cc.stderr));
}

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
      buildEmuProgram(dir, "race", RACE_CU);
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

// The emulated warpgroup MMA (kernels/cuda/emu/README.md "Warpgroup MMA") against a plain matmul:
// A (128 x K) and B (n x K) random int8 written to shared memory in each canonical K-major layout
// (this test's own reading of the PTX ISA: place() below, row / 16-byte-chunk formulas, not the
// emulation's address-bit XOR), two warpgroups each multiplying its 64 rows of A by B over K / 32
// k32 slices (the descriptor start advanced along K), two slices a group, then wait_group(1) and
// (0); every thread's fragment compared with the reference. argv[1] names a misuse instead, which
// must stop the process with the emulation's message.
const WGMMA_CU = `#include <cuda_runtime.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
// Byte (r, k) of a rows x K K-major int8 matrix. mode 0: no swizzle, 8 x 16-byte core matrices
// ((8,m),(16,2k)):((16,SBO),(1,LBO)), variant 0: LBO 128, SBO K / 16 * 128 (a row group's core
// matrices side by side along K), variant 1: LBO rows / 8 * 128, SBO 128 (a K chunk's core
// matrices side by side along rows). Modes 1, 2, 3: 128-, 64-, 32-byte swizzle, rows W bytes
// apart in atoms of 8 rows (SBO 8W), K split into W-byte atom columns rows * W bytes apart, and
// the 16-byte chunk c of row r stored at chunk c ^ (r % 8) / (8 / (W / 16)).
unsigned place(int mode, int variant, int rows, int K, int r, int k) {
  if (mode == 0) {
    const unsigned lbo = variant ? rows / 8 * 128 : 128, sbo = variant ? 128 : K / 16 * 128;
    return (r / 8) * sbo + (k / 16) * lbo + (r % 8) * 16 + k % 16;
  }
  const int w = mode == 1 ? 128 : mode == 2 ? 64 : 32;
  const int chunk = (k % w) / 16, f = (r % 8) / (8 / (w / 16));
  return (k / w) * rows * w + r * w + (chunk ^ f) * 16 + k % 16;
}
unsigned long long desc(int mode, int variant, int rows, int K, unsigned base, int r0, int k0) {
  unsigned lbo, sbo;
  if (mode == 0) {
    lbo = variant ? rows / 8 * 128 : 128;
    sbo = variant ? 128 : K / 16 * 128;
  } else {
    lbo = 16;  // unused by the swizzled K-major layouts ("assumed 1")
    sbo = 8 * (mode == 1 ? 128 : mode == 2 ? 64 : 32);
  }
  const unsigned start = base + place(mode, variant, rows, K, r0, k0);
  return (start >> 4) | (unsigned long long)(lbo >> 4) << 16 | (unsigned long long)(sbo >> 4) << 32 |
         (unsigned long long)mode << 62;
}
int init(int t, int i) { return 1000 * t - 37 * i + 5; }
__global__ void wg_kernel(const signed char* A, const signed char* B, int* out, int* still, int mode,
                          int variant, int n, int K, int acc, int bad) {
  extern __shared__ __align__(1024) unsigned char smem[];
  const int t = threadIdx.x, wg = t / 128;
  const unsigned sa = 0, sb = 16384;
  for (int e = t; e < 128 * K; e += 256) smem[sa + place(mode, variant, 128, K, e / K, e % K)] = A[e];
  for (int c = t; c < n * K / 16; c += 256) {  // 16 bytes of one row: one 16-byte chunk
    const int r = c / (K / 16), k = c % (K / 16) * 16;
    emu::cp_async16(emu::smem_u32(smem + sb + place(mode, variant, n, K, r, k)), B + r * K + k, true);
  }
  if (bad != 2) emu::fence_proxy_async_shared();
  __syncthreads();
  int d[128];
  for (int i = 0; i < n / 2; ++i) d[i] = acc ? init(t, i) : 777777;
  if (bad != 4) emu::wgmma_fence();
  for (int j = 0; j < K / 32; ++j) {
    unsigned long long da = desc(mode, variant, 128, K, sa, 64 * wg, 32 * j);
    if (bad == 5) da += 128 >> 4;  // 128-byte swizzle, start in row 1 of the atom
    const unsigned long long db = desc(mode, variant, n, K, sb, 0, 32 * j);
    emu::wgmma_m64nk32_s8(d, n, da, db, bad == 6 && t == 5 && j == 1 ? 0 : acc || j > 0);
    if (j % 2 == 1) emu::wgmma_commit_group();
  }
  int same = 1;  // nothing written before a wait_group completes the group
  for (int i = 0; i < n / 2; ++i) same &= d[i] == (acc ? init(t, i) : 777777);
  still[t] = same;
  if (bad == 1 && t == 200) smem[sb + 3] ^= 1;
  if (bad == 3) return;
  if (bad == 7 && t == 7) d[0] = 1;
  emu::wgmma_wait_group(1);
  emu::wgmma_wait_group(0);
  if (bad == 8) {  // a register write, then a wgmma on the same registers with no wgmma_fence
    d[0] = 0;
    emu::wgmma_m64nk32_s8(d, n, desc(mode, variant, 128, K, sa, 64 * wg, 0), desc(mode, variant, n, K, sb, 0, 0), 1);
    emu::wgmma_commit_group();
    emu::wgmma_wait_group(0);
  }
  for (int i = 0; i < n / 2; ++i) out[t * (n / 2) + i] = d[i];
}
int main(int argc, char** argv) {
  const char* names[] = {"", "overwrite", "noproxy", "nowait", "nofence", "unaligned", "divergent",
                         "accwrite", "refence"};
  int bad = 0;
  for (int i = 1; i < 9; ++i)
    if (argc > 1 && !strcmp(argv[1], names[i])) bad = i;
  signed char *A, *B;
  int *out, *still;
  cudaMalloc(&A, 128 * 128);
  cudaMalloc(&B, 256 * 128);
  cudaMalloc(&out, 256 * 128 * 4);
  cudaMalloc(&still, 256 * 4);
  unsigned long long s = 12345;
  const int ns[] = {8, 24, 48, 64, 128, 256};
  int cases = 0, bad_cases = 0;
  for (int layout = 0; layout < 5; ++layout)
    for (int K = 64; K <= 128; K += 64)
      for (int ni = 0; ni < 6; ++ni) {
        const int mode = layout < 2 ? 0 : layout - 1, variant = layout == 1, n = ns[ni];
        const int acc = (ni + K / 64) % 2;
        if (bad && (mode != 1 || n != 64 || K != 128)) continue;
        for (int i = 0; i < 128 * 128; ++i) A[i] = (signed char)((s = s * 6364136223846793005ull + 1442695040888963407ull) >> 56);
        for (int i = 0; i < 256 * 128; ++i) B[i] = (signed char)((s = s * 6364136223846793005ull + 1442695040888963407ull) >> 56);
        wg_kernel<<<1, 256, 49152>>>(A, B, out, still, mode, variant, n, K, acc, bad);
        int wrong = 0, moved = 0;
        for (int t = 0; t < 256; ++t) {
          const int wg = t / 128, w = t % 128 / 32, g = t % 32 / 4, q = t % 4;
          moved += !still[t];
          for (int i = 0; i < n / 2; ++i) {
            const int row = 64 * wg + 16 * w + g + 8 * ((i >> 1) & 1), col = 8 * (i >> 2) + 2 * q + (i & 1);
            int ref = acc ? init(t, i) : 0;
            for (int k = 0; k < K; ++k) ref += A[row * K + k] * B[col * K + k];
            wrong += out[t * (n / 2) + i] != ref;
          }
        }
        ++cases;
        if (wrong || moved) {
          ++bad_cases;
          printf("layout %d n %d K %d acc %d: %d wrong, %d threads saw d change before a wait\\n", layout, n, K, acc, wrong, moved);
        }
      }
  printf("%d of %d cases exact\\n", cases - bad_cases, cases);
  return bad_cases != 0;
}
`;

Deno.test({
  name: "cuda emulation: wgmma m64nNk32 s8 in every swizzle mode, asynchronous and checked",
  ignore: Deno.build.arch !== "x86_64",
  fn() {
    const dir = Deno.makeTempDirSync();
    try {
      buildEmuProgram(dir, "wgmma", WGMMA_CU);
      const run = (what: string, order = "shuffle") => {
        const r = new Deno.Command(`${dir}/wgmma`, {
          args: what ? [what] : [],
          env: { D8_CUDA_EMU_ORDER: order },
          stdout: "piped",
          stderr: "piped",
        }).outputSync();
        const dec = new TextDecoder();
        return { ok: r.success, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
      };
      // 5 layouts (no swizzle in two LBO / SBO arrangements, 128-, 64-, 32-byte swizzle) x
      // K 64, 128 x n 8, 24, 48, 64, 128, 256, with and without an initial accumulator
      for (const order of ["forward", "shuffle"]) {
        const good = run("", order);
        assertEquals(good.ok, true, good.out + good.err);
        assertEquals(good.out.trim(), "60 of 60 cases exact");
      }
      const misuse: [string, RegExp][] = [
        ["overwrite", /operand changed between the wgmma's issue and its completion/],
        ["noproxy", /no fence\.proxy\.async/],
        ["nowait", /returned with 4 wgmma\(s\) not completed/],
        ["nofence", /no wgmma_fence before it/],
        ["unaligned", /start address \d+ is 128 bytes into its 1024-byte swizzle pattern/],
        ["divergent", /are \.aligned/],
        ["accwrite", /written by other code before the wgmma_wait_group/],
        ["refence", /with no wgmma_fence between/],
      ];
      for (const [what, msg] of misuse) {
        const r = run(what);
        assertEquals(r.ok, false, `${what}: ${r.out}`);
        assertEquals(msg.test(r.err), true, `${what}: ${r.err}`);
      }
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
