// int8_conv.cu: INT8 convolutions and GEMM on the device (PAPER.md): d8_conv2d_fwd_i8,
// d8_conv2d_dgrad_i8, d8_conv2d_wgrad_i8, d8_gemm_i8. int8 x int8 -> int32, rescaled to f32 in
// the epilogue exactly as the cpu backend does (kernels/cpu/int8_conv.cpp).
//
// Layouts: x [N, H, W, C] int8, w [K, R, S, C/G] int8 (OHWI), dy [N, P, Q, K] int8; y, dx, dw f32.
// Implicit-GEMM mappings, per group g (Cg = C/G, Kg = K/G, KD = R*S*Cg). Every GEMM is
// C[rows, cols] = A[rows, red] . B[cols, red]^T with both operands reducing along contiguous bytes
// in shared memory (the int8 mma.sync shapes are row.col only):
//   fprop: rows M = N*P*Q, cols Kg, red KD = (r, s, c)
//          A[m, (r, s, c)] = x[img, p*sh - ph + r, q*sw - pw + s, g*Cg + c] (0 in the padding)
//          B[k, :] = w[g*Kg + k, :] (rows of KD bytes)
//          epilogue y = float(acc) * (x_scale * w_scale[k or 0]) (+ bias[k])
//   dgrad: one GEMM per stride phase (rr, ss) in [0, sh) x [0, sw): the input pixels
//          (h, w) = (h0 + hi*sh, w0 + wi*sw) with h0 = (rr - ph) mod sh (w0 alike) take exactly the
//          taps (r, s) = (rr + j*sh, ss + l*sw), j < nr = ceil((R - rr) / sh), l < ns alike, so no
//          reduction byte is a structural zero (stride 1: one phase, all R*S taps).
//          rows M = N*hp*wp (the phase's pixels), cols Cg, red nr*ns*Kg = (j, l, kk)
//          A[(img, hi, wi), (j, l, kk)] = dy[img, bh + hi - j, bw + wi - l, g*Kg + kk] (0 out of
//          range), bh = (h0 + ph - rr) / sh (exact, >= 0), bw alike;
//          B[c, (j, l, kk)] = wT_phase[g*Cg + c, j, l, kk] = w[g*Kg + kk, rr + j*sh, ss + l*sw, c]
//          (a transposed copy, the phases' blocks one after another: transpose_w_k);
//          epilogue dx = float(acc) * (dy_scale * w_scale), or dx += that (D8_CONV_ACCUMULATE:
//          two roundings, as the cpu's epilogue). A phase without taps (1x1 stride 2: three of
//          four) has an empty reduction: its pixels get 0 (or keep dx).
//   wgrad: rows Kg, cols KD = (r, s, c), red M = N*P*Q
//          A[kk, m] = dy[m, g*Kg + kk], B[(r, s, c), m] = x at pixel m's tap (r, s), channel c
//          M is the outer dimension of both NHWC tensors, so the loader transposes 4 x 4 byte
//          blocks in registers (__byte_perm) on the way into shared memory. The reduction is split
//          along M (blockIdx.z) into chunks of at most 65,536 rows (65,536 * 127 * 127 < 2^31: no
//          int32 partial can overflow); the int32 partials are added into an int64 sum (exact and
//          order-free), then dw = float(double(sum) * (double(dy_scale[k or 0]) * x_scale)): the
//          cpu's formula, so dw is bit-identical to the cpu backend.
//   gemm:  c[m, n] = a[m, :] . b[n, :] (int32 out)
//
// Kernel versions (d8_set_int8_kernel / d8_cuda_set_int8_kernel; each op falls back to version 1
// for shapes the faster kernel cannot do, so every shape works with every setting):
//   1 simple:       one thread per output, dp4a over 4 channels when 4-aligned, else plain loops.
//                   Every shape (3-channel stem, groups, depthwise). The readable reference.
//   2 mma-m8n8k16:  tensor cores, mma.sync.m8n8k16.s8 (sm_75+), ldmatrix from swizzled shared
//                   memory, global loads staged through registers (prefetch of the next k tile
//                   during the MMAs of this one).
//   3 mma-m16n8k32: mma.sync.m16n8k32.s8 (sm_80+), fprop / dgrad / gemm with a 3-stage cp.async
//                   pipeline; wgrad with the register-staged transposing loader.
//   valid(): channels per group (the 16-byte chunks of a reduction) must be multiples of 16:
//   fprop Cg, dgrad Kg, wgrad Cg and Kg, gemm k.
// Tiles: BM x BN x 64 bytes, 8 warps; 128 x 128 (warp 64 x 32) or 128 x 64 (warp 32 x 32) picked
// by the column count (wgrad: 64 x 128 when Kg <= 64). Shared memory rows are 64 bytes, with the
// 16-byte chunk index XOR-swizzled by (row >> 1) & 3 so that ldmatrix is conflict free.
#include "common.cuh"

#include <algorithm>
#include <cstdio>

using namespace d8cuda;

namespace {

constexpr int kOpFwd = 0, kOpDgrad = 1, kOpGemm = 2, kOpWgrad = 3;
constexpr int BK = 64;                    // reduction bytes per k tile (versions 2 and 3)
constexpr int kBKWg = 128;                // version 4 (wgmma): 128-byte rows, 128B swizzle
constexpr int kWgStages = 4;              // version 4 pipeline: 4 stages, loads 2 tiles ahead
constexpr int kMma16 = 0, kMma32 = 1, kWgmma = 2;  // the MMA a tensor-core kernel issues
constexpr int kThreads = 256;             // 8 warps
constexpr int kStages = 3;                // cp.async pipeline depth (version 3)
constexpr int64_t kWgradRows = 65536;     // reduction rows per int32 partial

struct ImmaParams {
  const int8_t* a;  // fprop: x, dgrad: dy, gemm: a, wgrad: dy
  const int8_t* b;  // fprop: w, dgrad: wT, gemm: b, wgrad: x
  ConvGeom G;
  int64_t rows;     // GEMM rows (M)
  int cols;         // GEMM columns (N)
  int64_t red;      // reduction length (bytes per row of A and B; wgrad: pixels)
  float* out_f;     // fprop y, dgrad dx
  int32_t* out_i;   // gemm c
  unsigned long long* out_s;  // wgrad int64 sums [K][KD]
  const float* cs;  // fprop: column scales [K] (x_scale * w_scale); dgrad: [1] dy_scale * w_scale
  const float* bias;
  int splits;       // wgrad: reduction splits per group
  int64_t split_len;
  DgradPhase ph;    // dgrad: the stride phase (mapping at the top; common.cuh)
  bool add;         // dgrad: D8_CONV_ACCUMULATE, dx += the result
};

// D8_CUDA_EMU: the CPU emulation (kernels/cuda/emu) supplies the warp-level instructions.
__device__ __forceinline__ uint32_t smem_u32(const void* p) {
#if defined(D8_CUDA_EMU)
  return emu::smem_u32(p);
#else
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
#endif
}
// Byte offset of 16-byte chunk `chunk` of tile row `row`. 64-byte rows (versions 2 and 3): the
// chunk index (0..3) XOR (row >> 1) & 3, conflict-free ldmatrix. 128-byte rows (version 4): the
// chunk index (0..7) XOR row & 7, which is wgmma's 128-byte swizzle (address bits 4-6 XOR bits
// 7-9) when the tile starts 1024-byte aligned.
template <int BKT>
__device__ __forceinline__ int swz(int row, int chunk) {
  if constexpr (BKT == 128) return row * 128 + ((chunk ^ (row & 7)) << 4);
  return row * 64 + ((chunk ^ ((row >> 1) & 3)) << 4);
}

__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
#if defined(D8_CUDA_EMU)
  emu::cp_async16(dst, src, valid);
#elif __CUDA_ARCH__ >= 800
  const int n = valid ? 16 : 0;  // 0: zero-fill, nothing read
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(n));
#else
  (void)dst, (void)src, (void)valid;
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if __CUDA_ARCH__ >= 800 && !defined(D8_CUDA_EMU)
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if __CUDA_ARCH__ >= 800 && !defined(D8_CUDA_EMU)
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
#if defined(D8_CUDA_EMU)
  emu::ldmatrix_x4(r, addr);
#elif __CUDA_ARCH__ >= 750
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
#else
  r[0] = r[1] = r[2] = r[3] = 0;
  (void)addr;
#endif
}

// c[0..3] += A(16 x 32) . B(32 x 8): one m16n8k32, or four m8n8k16 (rows 0-7 and 8-15 times the
// k halves; the fragments coincide: a0/a1 = rows g / g+8 of k 0-15, a2/a3 of k 16-31, b0/b1 = k
// 0-15 / 16-31, and m8n8's c0, c1 sit where m16n8's c0, c1 (top) and c2, c3 (bottom) do).
template <bool MMA32>
__device__ __forceinline__ void mma_16x8x32(int32_t (&c)[4], const uint32_t (&a)[4],
                                            const uint32_t (&b)[2]) {
  if constexpr (MMA32) {
#if defined(D8_CUDA_EMU)
    emu::mma_m16n8k32_s8(c, a, b);
#elif __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
  } else {
#if defined(D8_CUDA_EMU)
    int32_t top[2] = {c[0], c[1]}, bot[2] = {c[2], c[3]};
    emu::mma_m8n8k16_s8(top, a[0], b[0]);
    emu::mma_m8n8k16_s8(bot, a[1], b[0]);
    emu::mma_m8n8k16_s8(top, a[2], b[1]);
    emu::mma_m8n8k16_s8(bot, a[3], b[1]);
    c[0] = top[0], c[1] = top[1], c[2] = bot[0], c[3] = bot[1];
#elif __CUDA_ARCH__ >= 750
    asm volatile("mma.sync.aligned.m8n8k16.row.col.s32.s8.s8.s32 {%0, %1}, {%2}, {%3}, {%0, %1};\n"
                 : "+r"(c[0]), "+r"(c[1])
                 : "r"(a[0]), "r"(b[0]));
    asm volatile("mma.sync.aligned.m8n8k16.row.col.s32.s8.s8.s32 {%0, %1}, {%2}, {%3}, {%0, %1};\n"
                 : "+r"(c[2]), "+r"(c[3])
                 : "r"(a[1]), "r"(b[0]));
    asm volatile("mma.sync.aligned.m8n8k16.row.col.s32.s8.s8.s32 {%0, %1}, {%2}, {%3}, {%0, %1};\n"
                 : "+r"(c[0]), "+r"(c[1])
                 : "r"(a[2]), "r"(b[1]));
    asm volatile("mma.sync.aligned.m8n8k16.row.col.s32.s8.s8.s32 {%0, %1}, {%2}, {%3}, {%0, %1};\n"
                 : "+r"(c[2]), "+r"(c[3])
                 : "r"(a[3]), "r"(b[1]));
#endif
  }
}

// ---- wgmma (version 4, sm_90a) ---------------------------------------------------------------
// Shared memory matrix descriptor of a K-major operand in rows of BKT bytes with the BKT-byte
// swizzle (swz<BKT>: 128 -> 128B swizzle, 64 -> 64B swizzle): start address >> 4 (bits 0-13),
// leading byte offset unused for swizzled K-major layouts (1), stride byte offset 8 * BKT >> 4
// (bits 32-45: the 8-row swizzle atoms are stacked 8 * BKT bytes apart), layout type (bits
// 62-63) 1 = 128B or 2 = 64B swizzle. A k32 slice of a row starts 32 * slice bytes in.
template <int BKT>
__device__ __forceinline__ uint64_t wg_desc(uint32_t addr) {
  static_assert(BKT == 128 || BKT == 64, "128B or 64B swizzle");
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | (uint64_t{1} << 16) |
         (uint64_t{8 * BKT >> 4} << 32) | (uint64_t{BKT == 128 ? 1u : 2u} << 62);
}
#if defined(D8_CUDA_EMU)
template <int N>
__device__ __forceinline__ void wgmma_s8(int32_t (&d)[N / 8][4], uint64_t da, uint64_t db) {
  emu::wgmma_m64nk32_s8(&d[0][0], N, da, db, 1);
}
__device__ __forceinline__ void wgmma_fence() { emu::wgmma_fence(); }
__device__ __forceinline__ void wgmma_commit() { emu::wgmma_commit_group(); }
template <int N>
__device__ __forceinline__ void wgmma_wait() { emu::wgmma_wait_group(N); }
__device__ __forceinline__ void fence_proxy_async() { emu::fence_proxy_async_shared(); }
#elif defined(__CUDA_ARCH_FEAT_SM90_ALL)
// wgmma.mma_async m64nNk32 s32 += s8 . s8, A and B K-major from shared memory (scale-d 1: the
// accumulators start at zero). d[j][v] is the fragment of n8 block j: row 16 * (warp % 4) +
// lane / 4 + 8 * (v >> 1), column 8j + 2 * (lane % 4) + (v & 1), mma.sync's C layout per warp.
__device__ __forceinline__ void wgmma_s8_128(int32_t (&d)[16][4], uint64_t da, uint64_t db) {
  asm volatile(
      "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
      "}, %64, %65, 1;\n"
      : "+r"(d[0][0]), "+r"(d[0][1]), "+r"(d[0][2]), "+r"(d[0][3]), "+r"(d[1][0]), "+r"(d[1][1]),
        "+r"(d[1][2]), "+r"(d[1][3]), "+r"(d[2][0]), "+r"(d[2][1]), "+r"(d[2][2]), "+r"(d[2][3]),
        "+r"(d[3][0]), "+r"(d[3][1]), "+r"(d[3][2]), "+r"(d[3][3]), "+r"(d[4][0]), "+r"(d[4][1]),
        "+r"(d[4][2]), "+r"(d[4][3]), "+r"(d[5][0]), "+r"(d[5][1]), "+r"(d[5][2]), "+r"(d[5][3]),
        "+r"(d[6][0]), "+r"(d[6][1]), "+r"(d[6][2]), "+r"(d[6][3]), "+r"(d[7][0]), "+r"(d[7][1]),
        "+r"(d[7][2]), "+r"(d[7][3]), "+r"(d[8][0]), "+r"(d[8][1]), "+r"(d[8][2]), "+r"(d[8][3]),
        "+r"(d[9][0]), "+r"(d[9][1]), "+r"(d[9][2]), "+r"(d[9][3]), "+r"(d[10][0]), "+r"(d[10][1]),
        "+r"(d[10][2]), "+r"(d[10][3]), "+r"(d[11][0]), "+r"(d[11][1]), "+r"(d[11][2]), "+r"(d[11][3]),
        "+r"(d[12][0]), "+r"(d[12][1]), "+r"(d[12][2]), "+r"(d[12][3]), "+r"(d[13][0]), "+r"(d[13][1]),
        "+r"(d[13][2]), "+r"(d[13][3]), "+r"(d[14][0]), "+r"(d[14][1]), "+r"(d[14][2]), "+r"(d[14][3]),
        "+r"(d[15][0]), "+r"(d[15][1]), "+r"(d[15][2]), "+r"(d[15][3])
      : "l"(da), "l"(db)
      : "memory");
}
__device__ __forceinline__ void wgmma_s8_64(int32_t (&d)[8][4], uint64_t da, uint64_t db) {
  asm volatile(
      "wgmma.mma_async.sync.aligned.m64n64k32.s32.s8.s8 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
      "}, %32, %33, 1;\n"
      : "+r"(d[0][0]), "+r"(d[0][1]), "+r"(d[0][2]), "+r"(d[0][3]), "+r"(d[1][0]), "+r"(d[1][1]),
        "+r"(d[1][2]), "+r"(d[1][3]), "+r"(d[2][0]), "+r"(d[2][1]), "+r"(d[2][2]), "+r"(d[2][3]),
        "+r"(d[3][0]), "+r"(d[3][1]), "+r"(d[3][2]), "+r"(d[3][3]), "+r"(d[4][0]), "+r"(d[4][1]),
        "+r"(d[4][2]), "+r"(d[4][3]), "+r"(d[5][0]), "+r"(d[5][1]), "+r"(d[5][2]), "+r"(d[5][3]),
        "+r"(d[6][0]), "+r"(d[6][1]), "+r"(d[6][2]), "+r"(d[6][3]), "+r"(d[7][0]), "+r"(d[7][1]),
        "+r"(d[7][2]), "+r"(d[7][3])
      : "l"(da), "l"(db)
      : "memory");
}
__device__ __forceinline__ void wgmma_s8_256(int32_t (&d)[32][4], uint64_t da, uint64_t db) {
  asm volatile(
      "wgmma.mma_async.sync.aligned.m64n256k32.s32.s8.s8 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
      "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
      "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "
      "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "
      "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
      "}, %128, %129, 1;\n"
      : "+r"(d[0][0]), "+r"(d[0][1]), "+r"(d[0][2]), "+r"(d[0][3]), "+r"(d[1][0]), "+r"(d[1][1]),
        "+r"(d[1][2]), "+r"(d[1][3]), "+r"(d[2][0]), "+r"(d[2][1]), "+r"(d[2][2]), "+r"(d[2][3]),
        "+r"(d[3][0]), "+r"(d[3][1]), "+r"(d[3][2]), "+r"(d[3][3]), "+r"(d[4][0]), "+r"(d[4][1]),
        "+r"(d[4][2]), "+r"(d[4][3]), "+r"(d[5][0]), "+r"(d[5][1]), "+r"(d[5][2]), "+r"(d[5][3]),
        "+r"(d[6][0]), "+r"(d[6][1]), "+r"(d[6][2]), "+r"(d[6][3]), "+r"(d[7][0]), "+r"(d[7][1]),
        "+r"(d[7][2]), "+r"(d[7][3]), "+r"(d[8][0]), "+r"(d[8][1]), "+r"(d[8][2]), "+r"(d[8][3]),
        "+r"(d[9][0]), "+r"(d[9][1]), "+r"(d[9][2]), "+r"(d[9][3]), "+r"(d[10][0]), "+r"(d[10][1]),
        "+r"(d[10][2]), "+r"(d[10][3]), "+r"(d[11][0]), "+r"(d[11][1]), "+r"(d[11][2]), "+r"(d[11][3]),
        "+r"(d[12][0]), "+r"(d[12][1]), "+r"(d[12][2]), "+r"(d[12][3]), "+r"(d[13][0]), "+r"(d[13][1]),
        "+r"(d[13][2]), "+r"(d[13][3]), "+r"(d[14][0]), "+r"(d[14][1]), "+r"(d[14][2]), "+r"(d[14][3]),
        "+r"(d[15][0]), "+r"(d[15][1]), "+r"(d[15][2]), "+r"(d[15][3]), "+r"(d[16][0]), "+r"(d[16][1]),
        "+r"(d[16][2]), "+r"(d[16][3]), "+r"(d[17][0]), "+r"(d[17][1]), "+r"(d[17][2]), "+r"(d[17][3]),
        "+r"(d[18][0]), "+r"(d[18][1]), "+r"(d[18][2]), "+r"(d[18][3]), "+r"(d[19][0]), "+r"(d[19][1]),
        "+r"(d[19][2]), "+r"(d[19][3]), "+r"(d[20][0]), "+r"(d[20][1]), "+r"(d[20][2]), "+r"(d[20][3]),
        "+r"(d[21][0]), "+r"(d[21][1]), "+r"(d[21][2]), "+r"(d[21][3]), "+r"(d[22][0]), "+r"(d[22][1]),
        "+r"(d[22][2]), "+r"(d[22][3]), "+r"(d[23][0]), "+r"(d[23][1]), "+r"(d[23][2]), "+r"(d[23][3]),
        "+r"(d[24][0]), "+r"(d[24][1]), "+r"(d[24][2]), "+r"(d[24][3]), "+r"(d[25][0]), "+r"(d[25][1]),
        "+r"(d[25][2]), "+r"(d[25][3]), "+r"(d[26][0]), "+r"(d[26][1]), "+r"(d[26][2]), "+r"(d[26][3]),
        "+r"(d[27][0]), "+r"(d[27][1]), "+r"(d[27][2]), "+r"(d[27][3]), "+r"(d[28][0]), "+r"(d[28][1]),
        "+r"(d[28][2]), "+r"(d[28][3]), "+r"(d[29][0]), "+r"(d[29][1]), "+r"(d[29][2]), "+r"(d[29][3]),
        "+r"(d[30][0]), "+r"(d[30][1]), "+r"(d[30][2]), "+r"(d[30][3]), "+r"(d[31][0]), "+r"(d[31][1]),
        "+r"(d[31][2]), "+r"(d[31][3])
      : "l"(da), "l"(db)
      : "memory");
}
template <int N>
__device__ __forceinline__ void wgmma_s8(int32_t (&d)[N / 8][4], uint64_t da, uint64_t db) {
  static_assert(N == 256 || N == 128 || N == 64, "m64n256k32, m64n128k32 or m64n64k32");
  if constexpr (N == 256) wgmma_s8_256(d, da, db);
  else if constexpr (N == 128) wgmma_s8_128(d, da, db);
  else wgmma_s8_64(d, da, db);
}
__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// cp.async writes shared memory through the generic proxy, wgmma reads it through the async one
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
#else
// Not sm_90a (sm_75..sm_89 SASS, compute_90 PTX): version 4 is never launched there (the host
// allows it on compute capability 9.0 only, where the sm_90a code runs); trap if it ever were.
template <int N>
__device__ __forceinline__ void wgmma_s8(int32_t (&)[N / 8][4], uint64_t, uint64_t) {
  __trap();
}
__device__ __forceinline__ void wgmma_fence() {}
__device__ __forceinline__ void wgmma_commit() {}
template <int N>
__device__ __forceinline__ void wgmma_wait() {}
__device__ __forceinline__ void fence_proxy_async() {}
#endif

// The accumulators pinned in program order: the wait asm names no register, so without this
// the compiler could read an accumulator between the wgmma writing it and the wait (ptxas then
// serializes the wgmmas, warning C7514).
template <int NJ>
__device__ __forceinline__ void fence_acc(int32_t (&d)[NJ][4]) {
#if !defined(D8_CUDA_EMU)
#pragma unroll
  for (int j = 0; j < NJ; ++j)
#pragma unroll
    for (int v = 0; v < 4; ++v) asm volatile("" : "+r"(d[j][v])::"memory");
#else
  (void)d;
#endif
}

// ---- operand rows (fprop / dgrad / gemm): the global address of one 16-byte chunk ------------
struct RowA {
  const int8_t* base;
  int y0, x0;  // fprop: ih0, iw0; dgrad: h + ph, w + pw
  bool ok;
};

template <int OP>
__device__ __forceinline__ RowA make_row_a(const ImmaParams& p, int g, int64_t m) {
  RowA r{p.a, 0, 0, m < p.rows};
  if (!r.ok) return r;
  const ConvGeom& G = p.G;
  if constexpr (OP == kOpFwd) {
    const int qq = static_cast<int>(m % G.q), pp = static_cast<int>(m / G.q % G.p);
    const int64_t img = m / (int64_t{G.p} * G.q);
    r.base = p.a + img * G.h * G.w * G.c + int64_t{g} * G.cg;
    r.y0 = pp * G.sh - G.ph;
    r.x0 = qq * G.sw - G.pw;
  } else if constexpr (OP == kOpDgrad) {
    const int wi = static_cast<int>(m % p.ph.wp), hi = static_cast<int>(m / p.ph.wp % p.ph.hp);
    const int64_t img = m / (int64_t{p.ph.hp} * p.ph.wp);
    r.base = p.a + img * G.p * G.q * G.k + int64_t{g} * G.kg;
    r.y0 = p.ph.bh + hi;  // dy row for j = 0
    r.x0 = p.ph.bw + wi;
  } else {
    r.base = p.a + m * p.red;
  }
  return r;
}

// Address of A's chunk at reduction offset k (a multiple of 16), or null (zero).
template <int OP>
__device__ __forceinline__ const int8_t* a_chunk(const ImmaParams& p, const RowA& r, int64_t k) {
  if (!r.ok || k >= p.red) return nullptr;
  const ConvGeom& G = p.G;
  if constexpr (OP == kOpFwd) {
    const int tap = static_cast<int>(k / G.cg), c = static_cast<int>(k % G.cg);
    const int ih = r.y0 + tap / G.s, iw = r.x0 + tap % G.s;
    if (ih < 0 || ih >= G.h || iw < 0 || iw >= G.w) return nullptr;
    return r.base + (int64_t{ih} * G.w + iw) * G.c + c;
  } else if constexpr (OP == kOpDgrad) {
    const int tap = static_cast<int>(k / G.kg), kk = static_cast<int>(k % G.kg);
    const int pp = r.y0 - tap / p.ph.ns, qq = r.x0 - tap % p.ph.ns;
    if (pp < 0 || qq < 0 || pp >= G.p || qq >= G.q) return nullptr;
    return r.base + (int64_t{pp} * G.q + qq) * G.k + kk;
  } else {
    return r.base + k;
  }
}

// 4 x 4 byte transpose: o[j] byte u = w[u] byte j.
__device__ __forceinline__ void transpose4x4(uint32_t (&o)[4], uint32_t w0, uint32_t w1,
                                             uint32_t w2, uint32_t w3) {
  const uint32_t t0 = __byte_perm(w0, w1, 0x5140), t1 = __byte_perm(w0, w1, 0x7362);
  const uint32_t t2 = __byte_perm(w2, w3, 0x5140), t3 = __byte_perm(w2, w3, 0x7362);
  o[0] = __byte_perm(t0, t2, 0x5410);
  o[1] = __byte_perm(t0, t2, 0x7632);
  o[2] = __byte_perm(t1, t3, 0x5410);
  o[3] = __byte_perm(t1, t3, 0x7632);
}

__device__ __forceinline__ uint4 ld16(const int8_t* src) {
  return src ? __ldg(reinterpret_cast<const uint4*>(src)) : make_uint4(0, 0, 0, 0);
}

// ---- the tensor-core kernel -----------------------------------------------------------------
// MMA: kMma16 (version 2), kMma32 (version 3) or kWgmma (version 4: warpgroup w of 4 warps issues
// wgmma m64nWNk32 for rows 64 * (w / (BN / WN)), columns WN * (w % (BN / WN)); WM = 16 rows per
// warp). Version 4 fprop / dgrad / gemm use 128-byte k tiles and cp.async; its wgrad keeps the
// 64-byte tiles of the register-transposing loader (64B swizzle), double-buffered.
template <int OP, int BM, int BN, int WM, int WN, bool ASYNC, int MMA>
__global__ void __launch_bounds__(kThreads) imma_k(ImmaParams p) {
  constexpr int kWarpsN = BN / WN, MI = WM / 16, NI = WN / 8;
  constexpr int BKT = MMA == kWgmma && OP != kOpWgrad ? kBKWg : BK;  // bytes per k tile
  constexpr int kCh = BKT / 16;                     // 16-byte chunks per tile row
  static_assert((BM / WM) * (BN / WN) == kThreads / 32, "8 warps");
  static_assert(OP != kOpWgrad || !ASYNC, "wgrad transposes in registers");
  static_assert(OP != kOpWgrad || BM + BN <= kThreads, "one wgrad load task per thread");
  static_assert(MMA != kWgmma || (ASYNC == (OP != kOpWgrad) && BM % 64 == 0 && WM == 16),
                "wgmma tiles");
  constexpr int kStageBytes = (BM + BN) * BKT;
  constexpr int CA = BM * kCh / kThreads, CB = BN * kCh / kThreads;  // chunks per thread
#if __CUDA_ARCH__ >= 750
  if constexpr (MMA != kMma16 || ASYNC) {
#if __CUDA_ARCH__ < 800
    return;  // never launched below sm_80 (the host checks the compute capability)
#endif
  }
  extern __shared__ __align__(128) unsigned char smem_raw[];
  // version 4: the swizzle atoms must start 1024-byte aligned (the host adds 1024 bytes)
  unsigned char* smem = smem_raw;
  if constexpr (MMA == kWgmma) smem += (1024 - (smem_u32(smem_raw) & 1023)) & 1023;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  // warp tile origin (version 4: warpgroup (warp / 4) tile, then 16 rows per warp)
  const int wm0 = MMA == kWgmma ? (warp >> 2) / kWarpsN * 64 + (warp & 3) * 16
                                : (warp / kWarpsN) * WM;
  const int wn0 = MMA == kWgmma ? (warp >> 2) % kWarpsN * WN : (warp % kWarpsN) * WN;
  const ConvGeom& G = p.G;

  int g, split = 0;
  int64_t m0, k_begin = 0, k_end;
  int n0;
  if constexpr (OP == kOpWgrad) {
    g = blockIdx.z / p.splits;
    split = blockIdx.z % p.splits;
    m0 = blockIdx.x * int64_t{BM};  // rows kk
    n0 = blockIdx.y * BN;           // cols (r, s, c)
    k_begin = split * p.split_len;
    k_end = k_begin + p.split_len < p.red ? k_begin + p.split_len : p.red;
  } else {
    g = blockIdx.z;
    m0 = blockIdx.x * int64_t{BM};
    n0 = blockIdx.y * BN;
    k_end = p.red;
  }
  const int ktiles = static_cast<int>((k_end - k_begin + BKT - 1) / BKT);

  // Per-thread operand rows (fprop / dgrad / gemm): chunk i covers tile row tid/kCh + i*(256/kCh),
  // 16-byte chunk tid % kCh of each k tile.
  constexpr int kRowStep = kThreads / kCh;
  RowA ra[CA > 0 ? CA : 1];
  const int chunk = tid % kCh, row0 = tid / kCh;
  // B rows n0 + row0 + i * kRowStep (B row n of group g: p.b + (g * cols + n) * red): one base
  // pointer and a stride, not CB pointers (registers)
  const int8_t* rb0 = OP != kOpWgrad ? p.b + (int64_t{g} * p.cols + n0 + row0) * p.red : p.b;
  const int64_t rb_step = int64_t{kRowStep} * p.red;
  auto rb = [&](int i) -> const int8_t* {  // B row i's address, or null past the last column
    return n0 + row0 + i * kRowStep < p.cols ? rb0 + i * rb_step : nullptr;
  };
  if constexpr (OP != kOpWgrad) {
#pragma unroll
    for (int i = 0; i < CA; ++i) ra[i] = make_row_a<OP>(p, g, m0 + row0 + i * kRowStep);
  }

  // wgrad load task: A (tid < BM): kk chunk tid/16, pixel quad tid%16; B: (r,s,c) chunk, quad.
  const bool wa = tid < BM, wb = !wa && tid < BM + BN;
  const int wj = wa ? tid / 16 : (tid - BM) / 16, wq = tid % 16;

  auto stage_ptr = [&](int s) { return smem + s * kStageBytes; };

  // Register staging (versions 2 and wgrad): 4 x 16 bytes per thread.
  uint4 reg[4];
  auto load_regs = [&](int kt) {
    const int64_t k0 = k_begin + int64_t{kt} * BKT;
    if constexpr (OP == kOpWgrad) {
      for (int u = 0; u < 4; ++u) {
        const int64_t m = k0 + wq * 4 + u;
        const int8_t* src = nullptr;
        if (m < k_end) {
          if (wa) {
            const int kk = static_cast<int>(m0) + wj * 16;
            if (kk < G.kg) src = p.a + m * G.k + int64_t{g} * G.kg + kk;
          } else if (wb) {
            const int n = n0 + wj * 16;
            if (n < G.kd) {
              const int tap = n / G.cg, c = n % G.cg;
              const int qq = static_cast<int>(m % G.q), pp = static_cast<int>(m / G.q % G.p);
              const int64_t img = m / (int64_t{G.p} * G.q);
              const int ih = pp * G.sh - G.ph + tap / G.s, iw = qq * G.sw - G.pw + tap % G.s;
              if (ih >= 0 && ih < G.h && iw >= 0 && iw < G.w)
                src = p.b + ((img * G.h + ih) * G.w + iw) * G.c + int64_t{g} * G.cg + c;
            }
          }
        }
        reg[u] = ld16(src);
      }
    } else {
#pragma unroll
      for (int i = 0; i < CA; ++i) reg[i] = ld16(a_chunk<OP>(p, ra[i], k0 + chunk * 16));
#pragma unroll
      for (int i = 0; i < CB; ++i) {
        const int64_t k = k0 + chunk * 16;
        const int8_t* b = rb(i);
        reg[CA + i] = ld16(b && k < p.red ? b + k : nullptr);
      }
    }
  };
  auto store_regs = [&](int s) {
    unsigned char* st = stage_ptr(s);
    if constexpr (OP == kOpWgrad) {
      if (!wa && !wb) return;
      unsigned char* base = wa ? st : st + BM * BK;
      const uint32_t* w0 = reinterpret_cast<const uint32_t*>(&reg[0]);
      const uint32_t* w1 = reinterpret_cast<const uint32_t*>(&reg[1]);
      const uint32_t* w2 = reinterpret_cast<const uint32_t*>(&reg[2]);
      const uint32_t* w3 = reinterpret_cast<const uint32_t*>(&reg[3]);
#pragma unroll
      for (int t = 0; t < 4; ++t) {  // bytes 4t..4t+3 of each pixel's 16
        uint32_t o[4];
        transpose4x4(o, w0[t], w1[t], w2[t], w3[t]);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int row = wj * 16 + t * 4 + j;  // kk (A) or (r, s, c) (B) within the tile
          *reinterpret_cast<uint32_t*>(base + swz<BK>(row, wq >> 2) + (wq & 3) * 4) = o[j];
#if defined(D8_CUDA_EMU)
          if constexpr (MMA == kWgmma)  // the emulation checks the proxy fence for these too
            emu::note_generic_smem_write(smem_u32(base + swz<BK>(row, wq >> 2)));
#endif
        }
      }
    } else {
#pragma unroll
      for (int i = 0; i < CA; ++i)
        *reinterpret_cast<uint4*>(st + swz<BKT>(row0 + i * kRowStep, chunk)) = reg[i];
#pragma unroll
      for (int i = 0; i < CB; ++i)
        *reinterpret_cast<uint4*>(st + BM * BKT + swz<BKT>(row0 + i * kRowStep, chunk)) =
            reg[CA + i];
    }
  };
  auto issue_async = [&](int kt, int s) {
    if constexpr (OP != kOpWgrad) {
      unsigned char* st = stage_ptr(s);
      const int64_t k0 = k_begin + int64_t{kt} * BKT;
#pragma unroll
      for (int i = 0; i < CA; ++i) {
        const int8_t* src = a_chunk<OP>(p, ra[i], k0 + chunk * 16);
        cp_async16(smem_u32(st + swz<BKT>(row0 + i * kRowStep, chunk)), src ? src : p.a,
                   src != nullptr);
      }
#pragma unroll
      for (int i = 0; i < CB; ++i) {
        const int64_t k = k0 + chunk * 16;
        const int8_t* b = rb(i);
        const bool ok = b && k < p.red;
        cp_async16(smem_u32(st + BM * BKT + swz<BKT>(row0 + i * kRowStep, chunk)),
                   ok ? b + k : p.b, ok);
      }
    }
  };

  int32_t acc[MI][NI][4];
#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int j = 0; j < NI; ++j)
#pragma unroll
      for (int v = 0; v < 4; ++v) acc[i][j][v] = 0;

  auto compute = [&](int s) {
    const unsigned char* st = stage_ptr(s);
    const uint32_t a_base = smem_u32(st), b_base = smem_u32(st + BM * BK);
    const int lr = lane & 7, lj = lane >> 3;
#pragma unroll
    for (int ks = 0; ks < 2; ++ks) {  // two k32 steps per 64-byte tile
      uint32_t af[MI][4], bf[NI][2];
#pragma unroll
      for (int i = 0; i < MI; ++i) {
        const int row = wm0 + i * 16 + lr + (lj & 1) * 8;
        ldmatrix_x4(af[i], a_base + swz<BK>(row, ks * 2 + (lj >> 1)));
      }
#pragma unroll
      for (int j = 0; j < NI / 2; ++j) {
        const int row = wn0 + j * 16 + lr + (lj >> 1) * 8;
        uint32_t r[4];
        ldmatrix_x4(r, b_base + swz<BK>(row, ks * 2 + (lj & 1)));
        bf[2 * j][0] = r[0];
        bf[2 * j][1] = r[1];
        bf[2 * j + 1][0] = r[2];
        bf[2 * j + 1][1] = r[3];
      }
#pragma unroll
      for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j) mma_16x8x32<MMA == kMma32>(acc[i][j], af[i], bf[j]);
    }
  };

  // version 4: warpgroup (warp / 4)'s A rows and B rows within a stage
  const uint32_t wg_a = static_cast<uint32_t>((warp >> 2) / kWarpsN * 64 * BKT);
  const uint32_t wg_b = static_cast<uint32_t>((warp >> 2) % kWarpsN * WN * BKT);
  auto issue_wgmma = [&](int s) {
    if constexpr (MMA == kWgmma) {
      const unsigned char* st = stage_ptr(s);
      const uint32_t a0 = smem_u32(st) + wg_a, b0 = smem_u32(st + BM * BKT) + wg_b;
      fence_acc(acc[0]);
      wgmma_fence();
#pragma unroll
      for (int ks = 0; ks < BKT / 32; ++ks)
        wgmma_s8<WN>(acc[0], wg_desc<BKT>(a0 + ks * 32), wg_desc<BKT>(b0 + ks * 32));
      wgmma_commit();
    } else {
      (void)s, (void)wg_a, (void)wg_b;
    }
  };

  if constexpr (MMA == kWgmma && OP == kOpWgrad) {
    // Two stages: the registers of tile kt + 1 are loaded and stored into the other stage while
    // the wgmmas of tile kt run; that stage was read by tile kt - 1's wgmmas, which every
    // warpgroup waited for before the barrier.
    if (ktiles > 0) {
      load_regs(0);
      store_regs(0);
    }
    for (int kt = 0; kt < ktiles; ++kt) {
      fence_proxy_async();  // this thread's stores, visible to the wgmma (async proxy)
      __syncthreads();
      issue_wgmma(kt & 1);
      if (kt + 1 < ktiles) {
        load_regs(kt + 1);
        store_regs((kt + 1) & 1);
      }
      wgmma_wait<0>();
      fence_acc(acc[0]);
    }
  } else if constexpr (MMA == kWgmma) {
    // Loads run kWgStages - 2 tiles ahead and one wgmma group stays in flight, so the stage a
    // load overwrites was read by the group before the one in flight, which every warpgroup has
    // waited for before the barrier: (kt + 2) % 4 == (kt - 2) % 4.
    constexpr int D = kWgStages - 2;
#pragma unroll
    for (int s = 0; s < D; ++s) {
      if (s < ktiles) issue_async(s, s);
      cp_async_commit();
    }
    for (int kt = 0; kt < ktiles; ++kt) {
      cp_async_wait<D - 1>();
      fence_proxy_async();  // this thread's copies, visible to the wgmma (async proxy)
      __syncthreads();
      const int nk = kt + D;
      if (nk < ktiles) issue_async(nk, nk % kWgStages);
      cp_async_commit();
      issue_wgmma(kt % kWgStages);
      wgmma_wait<1>();
      fence_acc(acc[0]);
    }
    wgmma_wait<0>();
    fence_acc(acc[0]);
  } else if constexpr (ASYNC) {
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
      if (s < ktiles) issue_async(s, s);
      cp_async_commit();
    }
    for (int kt = 0; kt < ktiles; ++kt) {
      cp_async_wait<kStages - 2>();
      __syncthreads();
      const int nk = kt + kStages - 1;
      if (nk < ktiles) issue_async(nk, nk % kStages);
      cp_async_commit();
      compute(kt % kStages);
    }
    cp_async_wait<0>();
  } else {
    if (ktiles > 0) {
      load_regs(0);
      store_regs(0);
    }
    __syncthreads();
    for (int kt = 0; kt < ktiles; ++kt) {
      const bool more = kt + 1 < ktiles;
      if (more) load_regs(kt + 1);  // in flight during the MMAs
      compute(0);
      __syncthreads();
      if (more) {
        store_regs(0);
        __syncthreads();
      }
    }
  }

  // ---- epilogue: acc[i][j][v] is C[row, col] with row = wm0 + 16i + lane/4 + 8*(v >= 2),
  // col = wn0 + 8j + 2*(lane%4) + (v & 1).
  const int gq = lane >> 2, tq = lane & 3;
#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t row = m0 + wm0 + i * 16 + gq + h * 8;
      if (row >= p.rows) continue;
      float* dxr = nullptr;  // dgrad: the row's pixel in dx (the phase's pixels are strided)
      if constexpr (OP == kOpDgrad) {
        const int wi = static_cast<int>(row % p.ph.wp);
        const int hi = static_cast<int>(row / p.ph.wp % p.ph.hp);
        const int64_t img = row / (int64_t{p.ph.hp} * p.ph.wp);
        const int64_t pix =
            (img * G.h + p.ph.h0 + int64_t{hi} * G.sh) * G.w + p.ph.w0 + int64_t{wi} * G.sw;
        dxr = p.out_f + pix * G.c + int64_t{g} * G.cg;
      }
#pragma unroll
      for (int j = 0; j < NI; ++j)
#pragma unroll
        for (int u = 0; u < 2; ++u) {
          const int col = n0 + wn0 + j * 8 + tq * 2 + u;
          const int32_t a = acc[i][j][h * 2 + u];
          if (col >= p.cols) continue;
          if constexpr (OP == kOpWgrad) {
            if (a != 0)
              atomicAdd(p.out_s + (int64_t{g} * G.kg + row) * G.kd + col,
                        static_cast<unsigned long long>(static_cast<long long>(a)));
          } else if constexpr (OP == kOpFwd) {
            const int k = g * G.kg + col;
            // one rounding, as the cpu backend's fused epilogue (vfmadd): acc * scale + bias
            const float fa = static_cast<float>(a);
            p.out_f[row * G.k + k] =
                p.bias ? __fmaf_rn(fa, p.cs[k], p.bias[k]) : __fmul_rn(fa, p.cs[k]);
          } else if constexpr (OP == kOpDgrad) {
            const float d = __fmul_rn(static_cast<float>(a), p.cs[0]);
            dxr[col] = p.add ? __fadd_rn(dxr[col], d) : d;
          } else {
            p.out_i[row * p.cols + col] = a;
          }
        }
    }
#endif  // __CUDA_ARCH__ >= 750
}

// ---- version 1: simple kernels (every shape) ------------------------------------------------
__device__ __forceinline__ int32_t dot_bytes(const int8_t* a, const int8_t* b, int n,
                                             bool aligned4) {
  int32_t s = 0;
  int i = 0;
  if (aligned4)
    for (; i + 4 <= n; i += 4)
      s = __dp4a(*reinterpret_cast<const int*>(a + i), *reinterpret_cast<const int*>(b + i), s);
  for (; i < n; ++i) s += int32_t{a[i]} * b[i];
  return s;
}

__global__ void fwd_simple_k(float* y, const int8_t* x, const int8_t* w, const float* cs,
                             const float* bias, ConvGeom G) {
  const int64_t total = G.m * G.k;
  const bool al = G.cg % 4 == 0;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int k = static_cast<int>(i % G.k), g = k / G.kg;
    const int64_t m = i / G.k;
    const int qq = static_cast<int>(m % G.q), pp = static_cast<int>(m / G.q % G.p);
    const int64_t img = m / (int64_t{G.p} * G.q);
    int32_t acc = 0;
    for_each_tap(G, pp, qq, [&](int ih, int iw, int r, int s) {
      acc += dot_bytes(x + ((img * G.h + ih) * G.w + iw) * G.c + int64_t{g} * G.cg,
                       w + int64_t{k} * G.kd + (r * G.s + s) * G.cg, G.cg, al);
    });
    const float fa = static_cast<float>(acc);  // one rounding with a bias, as the cpu's epilogue
    y[i] = bias ? __fmaf_rn(fa, cs[k], bias[k]) : __fmul_rn(fa, cs[k]);
  }
}

// dx[(img, h, w), c] = sum over covering (r, s) and kk of dy * w.
__global__ void dgrad_simple_k(float* dx, const int8_t* dy, const int8_t* w,
                               const float* scale_p, ConvGeom G, bool add) {
  const float scale = scale_p[0];
  const int64_t total = int64_t{G.n} * G.h * G.w * G.c;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int ch = static_cast<int>(i % G.c), g = ch / G.cg, c = ch % G.cg;
    const int64_t pix = i / G.c;
    const int iw = static_cast<int>(pix % G.w), ih = static_cast<int>(pix / G.w % G.h);
    const int64_t img = pix / (int64_t{G.h} * G.w);
    int32_t acc = 0;
    for_each_cover(G, img, ih, iw, [&](int64_t o, int r, int s) {
      const int8_t* d = dy + o * G.k + int64_t{g} * G.kg;
      const int8_t* wp = w + (int64_t{g} * G.kg) * G.kd + (r * G.s + s) * G.cg + c;
      for (int kk = 0; kk < G.kg; ++kk) acc += int32_t{d[kk]} * wp[int64_t{kk} * G.kd];
    });
    const float d = __fmul_rn(static_cast<float>(acc), scale);
    dx[i] = add ? __fadd_rn(dx[i], d) : d;  // D8_CONV_ACCUMULATE: two roundings, as the cpu
  }
}

// One thread per dw element and blockIdx.y per chunk of <= 65,536 pixels: int32 partial, then an
// exact int64 atomic add.
__global__ void wgrad_simple_k(unsigned long long* sum, const int8_t* x, const int8_t* dy,
                               ConvGeom G, int64_t chunk) {
  const int64_t total = int64_t{G.k} * G.kd;
  const int64_t m_begin = blockIdx.y * chunk;
  const int64_t m_end = m_begin + chunk < G.m ? m_begin + chunk : G.m;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int k = static_cast<int>(i / G.kd), j = static_cast<int>(i % G.kd);
    const int g = k / G.kg, tap = j / G.cg, c = j % G.cg, r = tap / G.s, s = tap % G.s;
    int32_t acc = 0;
    for (int64_t m = m_begin; m < m_end; ++m) {
      const int qq = static_cast<int>(m % G.q), pp = static_cast<int>(m / G.q % G.p);
      const int64_t img = m / (int64_t{G.p} * G.q);
      const int ih = pp * G.sh - G.ph + r, iw = qq * G.sw - G.pw + s;
      if (ih < 0 || ih >= G.h || iw < 0 || iw >= G.w) continue;
      acc += int32_t{dy[m * G.k + k]} *
             x[((img * G.h + ih) * G.w + iw) * G.c + int64_t{g} * G.cg + c];
    }
    if (acc != 0) atomicAdd(sum + i, static_cast<unsigned long long>(static_cast<long long>(acc)));
  }
}

// dw[k, j] = float(double(sum) * (double(dy_scale[k or 0]) * double(x_scale))): the cpu's formula.
__global__ void wgrad_finish_k(float* dw, const unsigned long long* sum, const float* xs,
                               const float* ds, int per_channel, int k_total, int kd) {
  const int64_t total = int64_t{k_total} * kd;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int k = static_cast<int>(i / kd);
    const double rs = static_cast<double>(ds[per_channel ? k : 0]) * static_cast<double>(xs[0]);
    dw[i] = static_cast<float>(static_cast<double>(static_cast<long long>(sum[i])) * rs);
  }
}

__global__ void gemm_simple_k(int32_t* c, const int8_t* a, const int8_t* b, int64_t m, int n,
                              int k) {
  const int64_t total = m * n;
  const bool al = k % 4 == 0;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t row = i / n;
    const int col = static_cast<int>(i % n);
    c[i] = dot_bytes(a + row * k, b + int64_t{col} * k, k, al);
  }
}

// ---- depthwise (G == C == K, one channel per group, C % 4 == 0): the dp4a kernels ------------
// Tensor cores do not apply (a one-channel GEMM per group), so every setting but version 1 runs
// these for depthwise convs, reported as version 2. One thread holds 4 channels: one 32-bit word
// of an NHWC pixel, so the lanes of a warp read consecutive words of the same tap. The product of
// lane j's channel alone is __dp4a(a, b & (0xff << 8j)): one instruction a multiply-add, no byte
// extraction, exact int32. Weights come transposed, wt[(r*S + s)*C + c] = w[c, r, s], so a word
// holds a tap's 4 channels. Epilogues: the version-1 kernels' formulas (the cpu's).
bool dw_i8(const ConvGeom& G) { return is_depthwise(G) && G.c % 4 == 0; }

__device__ __forceinline__ int word_at(const int8_t* p) {
  return __ldg(reinterpret_cast<const int*>(p));
}
__device__ __forceinline__ int byte_lane(int b, int j) {
  return static_cast<int>(static_cast<unsigned>(b) & (0xffu << (8 * j)));
}
__device__ __forceinline__ void dp4a_lanes(int32_t (&acc)[4], int a, int b) {
#pragma unroll
  for (int j = 0; j < 4; ++j) acc[j] = __dp4a(a, byte_lane(b, j), acc[j]);
}

struct Lanes4 {
  int32_t v[4];
};

// y[pixel, c0 .. c0+3]: one thread per (output pixel, 4 channels) (dw_fwd_quads, common.cuh)
__global__ void dw_fwd_i8_k(float* y, const int8_t* x, const int8_t* wt, const float* cs,
                            const float* bias, ConvGeom G) {
  dw_fwd_quads<Lanes4>(
      G,
      [&](Lanes4& a, int64_t xo, int64_t wo) {
        dp4a_lanes(a.v, word_at(x + xo), word_at(wt + wo));
      },
      [&](const Lanes4& a, int64_t yo, int c0) {
        float o[4];
#pragma unroll
        for (int l = 0; l < 4; ++l) {
          const float fa = static_cast<float>(a.v[l]);
          o[l] = bias ? __fmaf_rn(fa, cs[c0 + l], bias[c0 + l]) : __fmul_rn(fa, cs[c0 + l]);
        }
        *reinterpret_cast<float4*>(y + yo) = make_float4(o[0], o[1], o[2], o[3]);
      });
}

// dx[pixel, c0 .. c0+3] (= or +=): one thread per (input pixel, 4 channels), the dy pixels whose
// windows cover it (gather form: no write conflicts; dw_dgrad_quads)
__global__ void dw_dgrad_i8_k(float* dx, const int8_t* dy, const int8_t* wt, const float* scale_p,
                              ConvGeom G, bool add) {
  const float scale = scale_p[0];
  dw_dgrad_quads<Lanes4>(
      G,
      [&](Lanes4& a, int64_t dyo, int64_t wo) {
        dp4a_lanes(a.v, word_at(dy + dyo), word_at(wt + wo));
      },
      [&](const Lanes4& a, int64_t dxo, int) {
        float4* d = reinterpret_cast<float4*>(dx + dxo);
        float o[4];
#pragma unroll
        for (int l = 0; l < 4; ++l) o[l] = __fmul_rn(static_cast<float>(a.v[l]), scale);
        if (add) {  // D8_CONV_ACCUMULATE: two roundings, as the cpu
          const float4 old = *d;
          o[0] = __fadd_rn(old.x, o[0]), o[1] = __fadd_rn(old.y, o[1]);
          o[2] = __fadd_rn(old.z, o[2]), o[3] = __fadd_rn(old.w, o[3]);
        }
        *d = make_float4(o[0], o[1], o[2], o[3]);
      });
}

// sum[c*taps + tap] += the dy x x products of one chunk of `len` pixels (blockIdx.y), for kDwTaps
// taps from blockIdx.z * kDwTaps and `qb` channel quads from blockIdx.x * qb. A block's threads
// are qb quads x (256 / qb) pixel lanes; each thread keeps int32 sums of its pixels, the block
// adds its lanes' sums in shared memory (int32: a chunk has at most 65,536 pixels, each giving
// every (c, tap) one product of at most 128 * 128), then one exact int64 atomic add per output.
constexpr int kDwTaps = 9, kDwThreads = 256;
__global__ void __launch_bounds__(kDwThreads)
    dw_wgrad_i8_k(unsigned long long* sum, const int8_t* x, const int8_t* dy, ConvGeom G,
                  int64_t len, int qb) {
  __shared__ int32_t part[kDwTaps * 4][kDwThreads];
  const int lanes = kDwThreads / qb;
  const int quads = G.c / 4, taps = G.r * G.s;
  const int ql = threadIdx.x % qb, lane = threadIdx.x / qb;
  const int quad = blockIdx.x * qb + ql, t0 = blockIdx.z * kDwTaps;
  const int nt = taps - t0 < kDwTaps ? taps - t0 : kDwTaps;
  int32_t acc[kDwTaps][4] = {};
  if (quad < quads && lane < lanes) {
    const int c0 = quad * 4;
    const int64_t m1 = (blockIdx.y + 1) * len < G.m ? (blockIdx.y + 1) * len : G.m;
    int64_t m = blockIdx.y * len + lane;
    // pixel m's coordinates, stepped by `lanes` pixels below (no division a pixel)
    int qq = static_cast<int>(m % G.q), pp = static_cast<int>(m / G.q % G.p);
    int64_t img = m / (int64_t{G.p} * G.q);
    for (; m < m1; m += lanes) {
      const int d = word_at(dy + m * G.c + c0);
      int dl[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) dl[j] = byte_lane(d, j);
#pragma unroll
      for (int t = 0; t < kDwTaps; ++t) {
        if (t >= nt) break;
        const int tap = t0 + t, r = tap / G.s, s = tap % G.s;
        const int ih = pp * G.sh - G.ph + r, iw = qq * G.sw - G.pw + s;
        if (ih < 0 || ih >= G.h || iw < 0 || iw >= G.w) continue;
        const int a = word_at(x + ((img * G.h + ih) * G.w + iw) * G.c + c0);
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[t][j] = __dp4a(a, dl[j], acc[t][j]);
      }
      for (qq += lanes; qq >= G.q;) {
        qq -= G.q;
        if (++pp == G.p) pp = 0, ++img;
      }
    }
  }
#pragma unroll
  for (int t = 0; t < kDwTaps; ++t)
#pragma unroll
    for (int j = 0; j < 4; ++j) part[t * 4 + j][threadIdx.x] = acc[t][j];
  __syncthreads();
  for (int o = threadIdx.x; o < qb * nt * 4; o += kDwThreads) {
    const int q = o % qb, tj = o / qb;
    if (blockIdx.x * qb + q >= quads) continue;
    int32_t v = 0;
    for (int l = 0; l < lanes; ++l) v += part[tj][l * qb + q];
    const int c = (blockIdx.x * qb + q) * 4 + tj % 4, tap = t0 + tj / 4;
    if (v != 0)
      atomicAdd(sum + int64_t{c} * taps + tap,
                static_cast<unsigned long long>(static_cast<long long>(v)));
  }
}

// cs[k] = x_scale * w_scale[k or 0] (float product, as the cpu).
__global__ void col_scales_k(float* cs, const float* xs, const float* ws, int per_channel, int k) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j < k) cs[j] = __fmul_rn(xs[0], ws[per_channel ? j : 0]);
}
__global__ void dgrad_scale_k(float* out, const float* a, const float* b) {
  out[0] = __fmul_rn(a[0], b[0]);
}

// The dgrad's B (mapping at the top): per stride phase (rr, ss), a block
// wT[g*Cg + c, j, l, kk] = w[g*Kg + kk, rr + j*sh, ss + l*sw, c], the blocks in row-major phase
// order (stride 1: one block, wT[g*Cg + c, r, s, kk]). One thread per byte of w.
__global__ void transpose_w_k(int8_t* wt, const int8_t* w, ConvGeom G) {
  const int64_t total = int64_t{G.k} * G.kd;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int c = static_cast<int>(i % G.cg);
    const int tap = static_cast<int>(i / G.cg % (G.r * G.s));
    const int k = static_cast<int>(i / G.kd), g = k / G.kg, kk = k % G.kg;
    const int r = tap / G.s, s = tap % G.s;
    const int rr = r % G.sh, ss = s % G.sw;
    const int ns = phase_taps(ss, G.s, G.sw);
    const int taps = phase_taps(rr, G.r, G.sh) * ns;
    const int64_t block = int64_t{G.c} * G.kg * phase_taps_before(G, rr, ss);
    const int t = (r / G.sh) * ns + s / G.sw;
    wt[block + ((int64_t{g} * G.cg + c) * taps + t) * G.kg + kk] = w[i];
  }
}

// ---- launch -----------------------------------------------------------------------------------
template <int OP, int BM, int BN, int WM, int WN, bool ASYNC, int MMA>
int32_t launch_imma(const char* fn, d8_context* ctx, const ImmaParams& p, dim3 grid) {
  auto kern = imma_k<OP, BM, BN, WM, WN, ASYNC, MMA>;
  const int smem = MMA != kWgmma  ? (ASYNC ? kStages : 1) * (BM + BN) * BK
                   : OP == kOpWgrad ? 2 * (BM + BN) * BK + 1024  // + alignment slack
                                    : kWgStages * (BM + BN) * kBKWg + 1024;
  if (smem > 48 * 1024) {
    const cudaError_t e =
        cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (e != cudaSuccess) return cuda_fail(fn, "cudaFuncSetAttribute", e);
  }
  kern<<<grid, kThreads, smem, ctx->stream>>>(p);
  return launch_check(fn, "imma_k");
}

// Tile configuration by column count; version 2 = m8n8k16 + register staging, 3 = m16n8k32 +
// cp.async (fprop / dgrad / gemm).
template <int OP>
int32_t run_imma(const char* fn, d8_context* ctx, const ImmaParams& p, int groups, int version) {
  const bool wide = p.cols > 64;
  // version 4, more than 128 columns: 128 x 256 tiles (85 multiply-adds per operand byte against
  // 64 at 128 x 128: wgmma's INT8 rate outruns the L2's bytes per clock at 128 x 128), unless
  // that leaves fewer than two waves of CTAs (one CTA per SM fits)
  const int64_t row_tiles = ceil_div(p.rows, 128);
  const bool wide256 = version == 4 && p.cols > 128 &&
                       row_tiles * ceil_div(p.cols, 256) * groups >=
                           2 * int64_t{ctx->prop.multiProcessorCount};
  const int bn = wide256 ? 256 : wide ? 128 : 64;
  const dim3 grid(static_cast<unsigned>(row_tiles), static_cast<unsigned>(ceil_div(p.cols, bn)),
                  static_cast<unsigned>(groups));
  if (grid.y > 65535 || grid.z > 65535 || grid.x > 0x7fffffffu)
    return fail(D8_ERR_UNSUPPORTED, "%s: problem too large for one launch", fn);
  if (version == 4) {
    if (wide256) return launch_imma<OP, 128, 256, 16, 256, true, kWgmma>(fn, ctx, p, grid);
    if (wide) return launch_imma<OP, 128, 128, 16, 128, true, kWgmma>(fn, ctx, p, grid);
    return launch_imma<OP, 128, 64, 16, 64, true, kWgmma>(fn, ctx, p, grid);
  }
  if (version == 3) {
    if (wide) return launch_imma<OP, 128, 128, 64, 32, true, kMma32>(fn, ctx, p, grid);
    return launch_imma<OP, 128, 64, 32, 32, true, kMma32>(fn, ctx, p, grid);
  }
  if (wide) return launch_imma<OP, 128, 128, 64, 32, false, kMma16>(fn, ctx, p, grid);
  return launch_imma<OP, 128, 64, 32, 32, false, kMma16>(fn, ctx, p, grid);
}

int32_t run_imma_wgrad(const char* fn, d8_context* ctx, ImmaParams p, int version) {
  const ConvGeom& G = p.G;
  const int splits = static_cast<int>(ceil_div(G.m, kWgradRows) > 1 ? ceil_div(G.m, kWgradRows) : 1);
  // More splits than the int32 bound needs when the (Kg x KD) tile grid is small, so that the
  // GPU fills up: at least ~4 tiles of 64 rows each per split.
  const bool tall = G.kg > 64;
  const int bm = tall ? 128 : 64;
  const int64_t tiles = ceil_div(G.kg, bm) * ceil_div(G.kd, 128) * G.g;
  int64_t want = std::max<int64_t>(splits, ceil_div(2 * ctx->prop.multiProcessorCount, tiles));
  want = std::min<int64_t>(want, std::max<int64_t>(1, ceil_div(G.m, 4 * BK)));
  p.splits = static_cast<int>(want);
  p.split_len = round_up(ceil_div(G.m, want), BK);
  if (p.split_len > kWgradRows) p.split_len = kWgradRows;
  p.splits = static_cast<int>(ceil_div(G.m, p.split_len));
  const dim3 grid(static_cast<unsigned>(ceil_div(G.kg, bm)),
                  static_cast<unsigned>(ceil_div(G.kd, 128)),
                  static_cast<unsigned>(int64_t{G.g} * p.splits));
  if (grid.y > 65535 || grid.z > 65535)
    return fail(D8_ERR_UNSUPPORTED, "%s: weight gradient too large for one launch", fn);
  if (version == 4) {  // two warpgroups: 2 x 1 of m64n128 tiles, or 1 x 2 of m64n64
    if (tall) return launch_imma<kOpWgrad, 128, 128, 16, 128, false, kWgmma>(fn, ctx, p, grid);
    return launch_imma<kOpWgrad, 64, 128, 16, 64, false, kWgmma>(fn, ctx, p, grid);
  }
  if (version == 3) {
    if (tall) return launch_imma<kOpWgrad, 128, 128, 64, 32, false, kMma32>(fn, ctx, p, grid);
    return launch_imma<kOpWgrad, 64, 128, 32, 32, false, kMma32>(fn, ctx, p, grid);
  }
  if (tall) return launch_imma<kOpWgrad, 128, 128, 64, 32, false, kMma16>(fn, ctx, p, grid);
  return launch_imma<kOpWgrad, 64, 128, 32, 32, false, kMma16>(fn, ctx, p, grid);
}

// The dp4a depthwise wgrad: channel quads per block the largest divisor of C/4 up to 16 (no idle
// quad slots: 32 channels take 8 quads x 32 lanes, 144 take 12 x 21), or 16 when that divisor is
// below 8; pixel chunks of at most 65,536 (int32 block sums), enough of them for ~4 blocks per SM,
// none shorter than 1,024 pixels unless the int32 bound asks for it.
int32_t run_dw_wgrad(const char* fn, d8_context* ctx, unsigned long long* sum, const int8_t* x,
                     const int8_t* dy, const ConvGeom& G, const char* dims) {
  const int quads = G.c / 4;
  int qb = 1;
  for (int d = 16; d > 1; --d)
    if (quads % d == 0) {
      qb = d;
      break;
    }
  if (qb < 8) qb = std::min(quads, 16);
  const int64_t gx = ceil_div(quads, qb), gz = ceil_div(G.r * G.s, kDwTaps);
  const int64_t fewest = ceil_div(G.m, kWgradRows);
  int64_t chunks = std::max(fewest, ceil_div(4 * int64_t{ctx->prop.multiProcessorCount}, gx * gz));
  chunks = std::min(chunks, std::max(fewest, ceil_div(G.m, 1024)));
  const int64_t len = ceil_div(G.m, chunks);
  chunks = ceil_div(G.m, len);
  if (chunks > 65535 || gz > 65535)
    return fail(D8_ERR_UNSUPPORTED, "%s: too many pixels or taps for one launch (%s)", fn, dims);
  dw_wgrad_i8_k<<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(chunks),
                       static_cast<unsigned>(gz)),
                  kDwThreads, 0, ctx->stream>>>(sum, x, dy, G, len, qb);
  return launch_check(fn, "dw_wgrad_i8_k");
}

// valid(): whether the tensor-core kernels can run this op (else version 1 runs).
bool imma_valid_fwd(const ConvGeom& G) { return G.cg % 16 == 0; }
bool imma_valid_dgrad(const ConvGeom& G) { return G.kg % 16 == 0; }
bool imma_valid_wgrad(const ConvGeom& G) { return G.kg % 16 == 0 && G.cg % 16 == 0; }
bool imma_valid_gemm(int k) { return k % 16 == 0; }

struct ConvElems {
  int64_t x, w, y;
};
ConvElems conv_elems(const d8_conv_shape& s) {
  return {mul64(int64_t{s.n} * s.h, int64_t{s.w} * s.c),
          mul64(int64_t{s.k} * s.r, int64_t{s.s} * (s.c / s.groups)),
          mul64(int64_t{s.n} * s.p, int64_t{s.q} * s.k)};
}

constexpr int kBlock = 256;

}  // namespace

// Version actually run by the last int8 op on this thread (tests and benchmarks report it).
static thread_local int t_last_version = 0;

extern "C" __attribute__((visibility("default"))) int32_t d8_cuda_last_int8_version(void) {
  return t_last_version;
}

extern "C" int32_t d8_conv2d_fwd_i8(d8_buffer* y, const d8_buffer* x, const d8_buffer* w,
                                    const d8_buffer* bias, const d8_buffer* x_scale,
                                    const d8_buffer* w_scale, int32_t w_layout,
                                    const d8_conv_shape* shape) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[256];
    if (int32_t e = check_conv_shape(fn, shape, dims, sizeof dims)) return e;
    if (w_layout != D8_SCALE_TENSOR && w_layout != D8_SCALE_OUTER)
      return fail(D8_ERR_INVALID_ARGUMENT,
                  "%s: w_layout must be D8_SCALE_TENSOR (0) or D8_SCALE_OUTER (2), got %d (%s)", fn,
                  w_layout, dims);
    const ConvElems z = conv_elems(*shape);
    const int64_t k = shape->k;
    if (int32_t e = check_buffer(fn, "y", y, mul64(z.y, 4), dims)) return e;
    if (int32_t e = check_buffer(fn, "x", x, z.x, dims)) return e;
    if (int32_t e = check_buffer(fn, "w", w, z.w, dims)) return e;
    if (bias)
      if (int32_t e = check_buffer(fn, "bias", bias, k * 4, dims)) return e;
    if (int32_t e = check_buffer(fn, "x_scale", x_scale, 4, dims)) return e;
    if (int32_t e = check_buffer(fn, "w_scale", w_scale, w_layout == D8_SCALE_OUTER ? k * 4 : 4,
                                 dims))
      return e;
    if (int32_t e = check_distinct(fn, "y", y, "x", x)) return e;
    if (int32_t e = check_distinct(fn, "y", y, "w", w)) return e;
    d8_context* ctx;
    if (int32_t e = op_context(fn, {y, x, w, bias, x_scale, w_scale}, &ctx)) return e;
    const ConvGeom G = make_geom(*shape);
    int v = int8_version(ctx);
    const bool dw = v > 1 && dw_i8(G);  // the dp4a depthwise kernels (their weights after cs)
    Scratch cs;
    if (int32_t e = cs.get(fn, ctx, static_cast<size_t>(k * 4 + (dw ? z.w : 0)))) return e;
    col_scales_k<<<grid_1d(k, 128), 128, 0, ctx->stream>>>(
        cs.as<float>(), fptr(x_scale), fptr(w_scale), w_layout == D8_SCALE_OUTER,
        static_cast<int>(k));
    if (dw) {
      t_last_version = 2;
      int8_t* wt = reinterpret_cast<int8_t*>(cs.as<float>() + k);
      dw_transpose_k<int8_t><<<grid_1d(z.w, kBlock), kBlock, 0, ctx->stream>>>(wt, i8ptr(w), G.c,
                                                                       G.r * G.s);
      const DwLaunch l = dw_launch(int64_t{G.q} * (G.c / 4), int64_t{G.n} * G.p);
      dw_fwd_i8_k<<<l.grid, l.block, 0, ctx->stream>>>(
          fptr(y), i8ptr(x), wt, cs.as<float>(), bias ? fptr(bias) : nullptr, G);
      return launch_check(fn, "dw_fwd_i8_k");
    }
    if (v > 1 && !imma_valid_fwd(G)) v = 1;
    t_last_version = v;
    if (v == 1) {
      fwd_simple_k<<<grid_1d(G.m * G.k, kBlock), kBlock, 0, ctx->stream>>>(
          fptr(y), i8ptr(x), i8ptr(w), cs.as<float>(), bias ? fptr(bias) : nullptr, G);
      return launch_check(fn, "fwd_simple_k");
    }
    ImmaParams p{};
    p.a = i8ptr(x);
    p.b = i8ptr(w);
    p.G = G;
    p.rows = G.m;
    p.cols = G.kg;
    p.red = G.kd;
    p.out_f = fptr(y);
    p.cs = cs.as<float>();
    p.bias = bias ? fptr(bias) : nullptr;
    return run_imma<kOpFwd>(fn, ctx, p, G.g, v);
  });
}

extern "C" int32_t d8_conv2d_dgrad_i8(d8_buffer* dx, const d8_buffer* dy, const d8_buffer* w,
                                      const d8_buffer* dy_scale, const d8_buffer* w_scale,
                                      const d8_conv_shape* shape) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[256];
    if (int32_t e = check_conv_shape(fn, shape, dims, sizeof dims, D8_CONV_ACCUMULATE)) return e;
    const ConvElems z = conv_elems(*shape);
    if (int32_t e = check_buffer(fn, "dx", dx, mul64(z.x, 4), dims)) return e;
    if (int32_t e = check_buffer(fn, "dy", dy, z.y, dims)) return e;
    if (int32_t e = check_buffer(fn, "w", w, z.w, dims)) return e;
    if (int32_t e = check_buffer(fn, "dy_scale", dy_scale, 4, dims)) return e;
    if (int32_t e = check_buffer(fn, "w_scale", w_scale, 4, dims)) return e;
    if (int32_t e = check_distinct(fn, "dx", dx, "dy", dy)) return e;
    if (int32_t e = check_distinct(fn, "dx", dx, "w", w)) return e;
    d8_context* ctx;
    if (int32_t e = op_context(fn, {dx, dy, w, dy_scale, w_scale}, &ctx)) return e;
    const ConvGeom G = make_geom(*shape);
    // The scale product dy_scale * w_scale is formed on the device (the scales live there) and
    // read by the epilogues through a pointer; the transposed weights share the scratch.
    Scratch sc;
    if (int32_t e = sc.get(fn, ctx, static_cast<size_t>(z.w + 256))) return e;
    float* scale = sc.as<float>();
    dgrad_scale_k<<<1, 1, 0, ctx->stream>>>(scale, fptr(dy_scale), fptr(w_scale));
    // D8_CONV_ACCUMULATE: the epilogues add into dx (dx += float(acc) * scale, two roundings)
    const bool add = (shape->flags & D8_CONV_ACCUMULATE) != 0;
    int v = int8_version(ctx);
    int8_t* wt = reinterpret_cast<int8_t*>(scale + 64);
    if (v > 1 && dw_i8(G)) {  // the dp4a depthwise kernel
      t_last_version = 2;
      dw_transpose_k<int8_t><<<grid_1d(z.w, kBlock), kBlock, 0, ctx->stream>>>(wt, i8ptr(w), G.c,
                                                                       G.r * G.s);
      const DwLaunch l = dw_launch(int64_t{G.w} * (G.c / 4), int64_t{G.n} * G.h);
      dw_dgrad_i8_k<<<l.grid, l.block, 0, ctx->stream>>>(fptr(dx), i8ptr(dy), wt, scale, G, add);
      return launch_check(fn, "dw_dgrad_i8_k");
    }
    if (v > 1 && !imma_valid_dgrad(G)) v = 1;
    t_last_version = v;
    if (v == 1) {
      dgrad_simple_k<<<grid_1d(int64_t{G.n} * G.h * G.w * G.c, kBlock), kBlock, 0,
                       ctx->stream>>>(fptr(dx), i8ptr(dy), i8ptr(w), scale, G, add);
      return launch_check(fn, "dgrad_simple_k");
    }
    transpose_w_k<<<grid_1d(z.w, kBlock), kBlock, 0, ctx->stream>>>(wt, i8ptr(w), G);
    if (int32_t e = launch_check(fn, "transpose_w_k")) return e;
    ImmaParams p{};
    p.G = G;
    p.cs = scale;
    p.a = i8ptr(dy);
    p.cols = G.cg;
    p.out_f = fptr(dx);
    p.add = add;
    // one GEMM per stride phase (mapping at the top of the file; common.cuh)
    for (const DgradPhase& ph : dgrad_phases(G)) {
      p.ph = ph;
      p.rows = int64_t{G.n} * ph.hp * ph.wp;
      p.red = int64_t{ph.nr} * ph.ns * G.kg;
      p.b = wt + int64_t{G.c} * G.kg * phase_taps_before(G, ph.rr, ph.ss);
      if (int32_t e = run_imma<kOpDgrad>(fn, ctx, p, G.g, v)) return e;
    }
    return D8_OK;
  });
}

extern "C" int32_t d8_conv2d_wgrad_i8(d8_buffer* dw, const d8_buffer* x, const d8_buffer* dy,
                                      const d8_buffer* x_scale, const d8_buffer* dy_scale,
                                      int32_t dy_layout, const d8_conv_shape* shape) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[256];
    if (int32_t e = check_conv_shape(fn, shape, dims, sizeof dims)) return e;
    if (dy_layout != D8_SCALE_TENSOR && dy_layout != D8_SCALE_INNER)
      return fail(D8_ERR_INVALID_ARGUMENT,
                  "%s: dy_layout must be D8_SCALE_TENSOR (0) or D8_SCALE_INNER (1), got %d (%s)",
                  fn, dy_layout, dims);
    const ConvElems z = conv_elems(*shape);
    const int64_t k = shape->k;
    if (int32_t e = check_buffer(fn, "dw", dw, mul64(z.w, 4), dims)) return e;
    if (int32_t e = check_buffer(fn, "x", x, z.x, dims)) return e;
    if (int32_t e = check_buffer(fn, "dy", dy, z.y, dims)) return e;
    if (int32_t e = check_buffer(fn, "x_scale", x_scale, 4, dims)) return e;
    if (int32_t e = check_buffer(fn, "dy_scale", dy_scale,
                                 dy_layout == D8_SCALE_INNER ? k * 4 : 4, dims))
      return e;
    if (int32_t e = check_distinct(fn, "dw", dw, "x", x)) return e;
    if (int32_t e = check_distinct(fn, "dw", dw, "dy", dy)) return e;
    d8_context* ctx;
    if (int32_t e = op_context(fn, {dw, x, dy, x_scale, dy_scale}, &ctx)) return e;
    const ConvGeom G = make_geom(*shape);
    Scratch sc;
    if (int32_t e = sc.get(fn, ctx, static_cast<size_t>(z.w * 8))) return e;
    unsigned long long* sum = sc.as<unsigned long long>();
    cudaError_t err = cudaMemsetAsync(sum, 0, static_cast<size_t>(z.w * 8), ctx->stream);
    if (err != cudaSuccess) return cuda_fail(fn, "cudaMemsetAsync", err);
    int v = int8_version(ctx);
    const bool direct = v > 1 && dw_i8(G);  // the dp4a depthwise kernel
    if (!direct && v > 1 && !imma_valid_wgrad(G)) v = 1;
    t_last_version = direct ? 2 : v;
    if (direct) {
      if (int32_t e = run_dw_wgrad(fn, ctx, sum, i8ptr(x), i8ptr(dy), G, dims)) return e;
    } else if (v == 1) {
      const int64_t chunks = ceil_div(G.m, kWgradRows);
      const unsigned gx = grid_1d(z.w, kBlock, 4096);
      if (chunks > 65535) return fail(D8_ERR_UNSUPPORTED, "%s: too many pixels (%s)", fn, dims);
      wgrad_simple_k<<<dim3(gx, static_cast<unsigned>(chunks)), kBlock, 0, ctx->stream>>>(
          sum, i8ptr(x), i8ptr(dy), G, kWgradRows);
      if (int32_t e = launch_check(fn, "wgrad_simple_k")) return e;
    } else {
      ImmaParams p{};
      p.a = i8ptr(dy);
      p.b = i8ptr(x);
      p.G = G;
      p.rows = G.kg;
      p.cols = G.kd;
      p.red = G.m;
      p.out_s = sum;
      if (int32_t e = run_imma_wgrad(fn, ctx, p, v)) return e;
    }
    wgrad_finish_k<<<grid_1d(z.w, kBlock), kBlock, 0, ctx->stream>>>(
        fptr(dw), sum, fptr(x_scale), fptr(dy_scale), dy_layout == D8_SCALE_INNER,
        static_cast<int>(k), G.kd);
    return launch_check(fn, "wgrad_finish_k");
  });
}

extern "C" int32_t d8_gemm_i8(d8_buffer* c, const d8_buffer* a, const d8_buffer* b, int64_t m,
                              int32_t n, int32_t k) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[96];
    if (int32_t e = check_mnk(fn, dims, sizeof dims, m, n, k)) return e;
    if (int32_t e = check_buffer(fn, "c", c, mul64(m, n, 4), dims)) return e;
    if (int32_t e = check_buffer(fn, "a", a, mul64(m, k), dims)) return e;
    if (int32_t e = check_buffer(fn, "b", b, mul64(n, k), dims)) return e;
    if (c == a || c == b)
      return fail(D8_ERR_INVALID_ARGUMENT, "%s: c must not be the same buffer as a or b (%s)", fn,
                  dims);
    d8_context* ctx;
    if (int32_t e = op_context(fn, {c, a, b}, &ctx)) return e;
    int v = int8_version(ctx);
    if (v > 1 && !imma_valid_gemm(k)) v = 1;
    t_last_version = v;
    if (v == 1) {
      gemm_simple_k<<<grid_1d(m * n, kBlock), kBlock, 0, ctx->stream>>>(i32ptr(c), i8ptr(a),
                                                                        i8ptr(b), m, n, k);
      return launch_check(fn, "gemm_simple_k");
    }
    ImmaParams p{};
    p.a = i8ptr(a);
    p.b = i8ptr(b);
    p.rows = m;
    p.cols = n;
    p.red = k;
    p.out_i = i32ptr(c);
    return run_imma<kOpGemm>(fn, ctx, p, 1, v);
  });
}
