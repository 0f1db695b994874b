// gemm.cpp: blocked single-precision GEMM (Goto / BLIS structure).
//
// Loop nest of gemm_core (single thread):
//   for ic in M step MC            rows of A kept in L2 (read in place, or packed when csa != 1)
//     for pc in K step KC          one K block: B panel rows pc..pc+KC
//       for jr in N step NR        one packed B micro-panel [KC][NR], stays in L1
//         for ir in MC step MR     micro-kernel: MR x NR accumulators in registers
//
// The micro-kernel broadcasts one A element per row and multiplies it into NV vectors of B:
// MR*NV fused multiply-adds per k. A is read directly from its rows (no packing) when it is
// row-major, which is the common case here: im2col chunks, activations, dY. That matters for
// the small N of CNN layers (16..64 output channels), where packing A would cost as much as the
// arithmetic. B (weights) is always packed into NR-wide zero-padded panels.
//
// Tile sizes per ISA (one constexpr block):
//   AVX-512: 16-float vectors, NV=2: 12 x 32 (24 zmm accumulators), NV=1: 16 x 16 (16 zmm)
//   AVX2:     8-float vectors, NV=2:  6 x 16 (12 ymm),              NV=1: 12 x  8 (12 ymm)
//   other:    4-float vectors, NV=2:  6 x  8,                       NV=1: 12 x  4
// Written with GCC vector extensions, so the same source is the AVX-512, AVX2, SSE and NEON
// kernel; a*b+c contracts to FMA where the target has it.
#include "gemm.h"

#include "common.h"

#if defined(__AVX__)
#include <immintrin.h>
#endif

#include <array>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <utility>

namespace d8cpu {

// ---- tile hierarchy ---------------------------------------------------------------------------
#if defined(__AVX512F__)
constexpr int kVW = 16;   // floats per vector
#ifndef D8_MR1
#define D8_MR1 16
#endif
#ifndef D8_MR2
#define D8_MR2 12
#endif
constexpr int kMR1 = D8_MR1;  // rows of the NV=1 micro-tile
constexpr int kMR2 = D8_MR2;  // rows of the NV=2 micro-tile
#define D8_GEMM_ISA "avx512"
#elif defined(__AVX__)
constexpr int kVW = 8;
constexpr int kMR1 = 12;
constexpr int kMR2 = 6;
#if defined(__FMA__)
#define D8_GEMM_ISA "avx2-fma"
#else
#define D8_GEMM_ISA "avx"
#endif
#else
constexpr int kVW = 4;
constexpr int kMR1 = 12;
constexpr int kMR2 = 6;
#define D8_GEMM_ISA "generic 128-bit"
#endif
#ifndef D8_KC
#define D8_KC 256
#endif
#ifndef D8_MC
#define D8_MC 240
#endif
constexpr int64_t kKC = D8_KC;  // K block
constexpr int64_t kMC = D8_MC;  // M block (multiple of kMR1 and kMR2)
constexpr int kMaxMR = kMR1 > kMR2 ? kMR1 : kMR2;
// Rows of the pairs tile (ukernel_pairs): 2 accumulators per row, row pointers kept in registers.
constexpr int kMRP = kVW == 16 ? 8 : 6;
static_assert(kMC % kMR1 == 0 && kMC % kMR2 == 0, "MC must be a multiple of both MR");

typedef float vf __attribute__((vector_size(kVW * 4)));                // aligned
typedef float vfu __attribute__((vector_size(kVW * 4), aligned(4)));   // unaligned access

int gemm_nv(int64_t n) {
  if (n <= kVW) return 1;
  return round_up(n, 2 * kVW) == round_up(n, kVW) ? 2 : 1;
}
int64_t gemm_nr(int nv) { return nv == kNvPairs ? kVW : int64_t{nv} * kVW; }
int64_t gemm_mr(int nv) { return nv == kNvPairs ? kMRP : nv == 1 ? kMR1 : kMR2; }
// Pairs on 8-float vectors, and on 16-float vectors where zmm_pairs() (Zen 5). With AVX-512 the
// one-vector tile (16 rows, a few row bases: ukernel) measured faster on Zen 4, which issues one
// zmm FMA and up to three loads a clock, so a broadcast per FMA fits (16 -> 32 stride-2 fp32
// dgrad, 2 threads, batch 64: 0.83-0.86 -> 0.60 ms with the one-tile driver path; 16 -> 16 fprop
// and dgrad 2-4%). With AVX2 (two FMAs and two loads a clock on Zen 2 and Intel cores) the 12-row
// one-vector tile would wait on its loads: pairs stay. Zen 5 issues two zmm FMAs a clock, and the
// one-vector tile's broadcast per FMA waits as AVX2's does: pairs there (2 threads, batch 64, a
// test build switching the tile, back to back: 16 -> 16 fprop and dgrad 0.63 -> 0.52 ms, 16 -> 32
// s2 dgrad 0.40 -> 0.33).
int gemm_nv_pairs(int64_t n, int64_t k) {
  static const bool zmm = kVW == 16 && zmm_pairs();
  return n <= kVW && (kVW == 8 || zmm) && k % 2 == 0 && k >= 2 ? kNvPairs : gemm_nv(n);
}
int64_t gemm_kc() { return kKC; }
int64_t gemm_mc() { return kMC; }
const char* gemm_isa() {
  static char text[64];
  static const int once = [] {
    snprintf(text, sizeof text, "%s (%dx%d and %dx%d tiles)", D8_GEMM_ISA, kMR2, 2 * kVW, kMR1,
             kVW);
    return 0;
  }();
  (void)once;
  return text;
}

// ---- micro-kernel -------------------------------------------------------------------------------
// acc[ROWS][NV] = sum_k A[i, k] * Bpanel[k, :] over kc steps, then
// C = alpha * acc + (beta != 0 ? beta * C : 0) + bias, for the first ncols (<= NV*kVW) columns.
// How A is addressed (AM):
//   kRows:    A[i, k] = a[i*lda + k]          row-major, read in place
//   kPacked:  A[i, k] = a[k*lda + i]          packed sliver, lda = MR
//   kOffsets: A[i, k] = a[i*lda + koff[k]]    implicit im2col: row i is output pixel i of one
//                                             output row, koff[k] the input offset of (r, s, c)
//   kGatherB: A[i, k] = a[k*lda + i]          (dY rows read in place as A transposed) and
//             B[k, :] = b[koff[k] .. + NR]    (input pixels read in place: implicit im2col of B)
//   kGatherAB: A[i, k] = a[koff[2k] + i], B[k, :] = b[koff[2k+1] .. + NR]: both gathered, so a
//             wgrad can leave out the pixels whose tap row lies in the padding
// b (all but kGatherB): packed panel [kc][NV*kVW]; its rows are vector aligned (scratch is 64-byte
// aligned and every panel is a multiple of kVW floats).
enum AMode : int { kRows = 0, kPacked = 1, kOffsets = 2, kGatherB = 3, kGatherAB = 4 };
constexpr int kModes = 5;

template <int ROWS, int NV>
static inline void store_partial(vf (&acc)[ROWS][NV], float* __restrict c, int64_t ldc,
                                 int64_t ncols, float alpha, float beta,
                                 const float* __restrict bias) {
#if defined(__AVX512F__)
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    const int64_t valid = ncols - int64_t{v} * kVW;
    if (valid <= 0) break;
    const __mmask16 mk = valid >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << valid) - 1u);
    const __m512 bb = bias ? _mm512_maskz_loadu_ps(mk, bias + v * kVW) : _mm512_setzero_ps();
#pragma GCC unroll 32
    for (int i = 0; i < ROWS; ++i) {
      float* cp = c + i * ldc + v * kVW;
      __m512 r = _mm512_add_ps(static_cast<__m512>(acc[i][v] * alpha), bb);
      if (beta != 0.0f)
        r = _mm512_fmadd_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(mk, cp), r);
      _mm512_mask_storeu_ps(cp, mk, r);
    }
  }
#else
  for (int i = 0; i < ROWS; ++i)
    for (int64_t j = 0; j < ncols; ++j) {
      float v = alpha * acc[i][j / kVW][j % kVW] + (bias ? bias[j] : 0.0f);
      if (beta != 0.0f) v += beta * c[i * ldc + j];
      c[i * ldc + j] = v;
    }
#endif
}

template <int ROWS, int NV>
static inline void store_tile(vf (&acc)[ROWS][NV], float* __restrict c, int64_t ldc,
                              int64_t ncols, float alpha, float beta,
                              const float* __restrict bias) {
  if (ncols < NV * kVW) return store_partial<ROWS, NV>(acc, c, ldc, ncols, alpha, beta, bias);
  vf bb[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v)
    bb[v] = bias ? *reinterpret_cast<const vfu*>(bias + v * kVW) : vf{};
  if (beta == 0.0f) {
#pragma GCC unroll 32
    for (int i = 0; i < ROWS; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v)
        *reinterpret_cast<vfu*>(c + i * ldc + v * kVW) = acc[i][v] * alpha + bb[v];
  } else {
#pragma GCC unroll 32
    for (int i = 0; i < ROWS; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        vfu* cp = reinterpret_cast<vfu*>(c + i * ldc + v * kVW);
        *cp = acc[i][v] * alpha + bb[v] + beta * vf(*cp);
      }
  }
}

template <int ROWS, int NV, int AM>
static void ukernel(int64_t kc, const float* __restrict a, int64_t lda,
                    const int64_t* __restrict koff, const float* __restrict b, float* __restrict c,
                    int64_t ldc, int64_t ncols, float alpha, float beta,
                    const float* __restrict bias) {
  vf acc[ROWS][NV];
#pragma GCC unroll 32
  for (int i = 0; i < ROWS; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = vf{};
  // One-vector tiles of many rows in place (kRows / kOffsets, rows lda apart): 16 row pointers
  // do not fit the general registers, and GCC kept the rest in vector registers (a vmovq per row
  // and k). Instead every k derives a few bases 3*lda apart from one row pointer, and row i is
  // base[i / 3] + (i % 3)*lda: an index register scaled by 1 or 2 (dgrad_phases_f32's 14-row
  // tiles, L1-resident operands: 88 -> 100% of the FMA peak at k = 128, Zen 4).
  constexpr bool kBases = NV == 1 && ROWS > 8 && (AM == kRows || AM == kOffsets);
  if constexpr (kBases) {
    constexpr int NB = (ROWS + 2) / 3;
    const int64_t L = lda * static_cast<int64_t>(sizeof(float)), L3 = 3 * L;
    for (int64_t k = 0; k < kc; ++k) {
      const vf bv = *reinterpret_cast<const vf*>(b + k * kVW);
      const char* q[NB];
      q[0] = reinterpret_cast<const char*>(a + (AM == kOffsets ? koff[k] : k));
#pragma GCC unroll 8
      for (int j = 1; j < NB; ++j) {
        q[j] = q[j - 1] + L3;
        __asm__("" : "+r"(q[j]));  // opaque: GCC would otherwise hoist i*lda per row again
      }
#pragma GCC unroll 32
      for (int i = 0; i < ROWS; ++i) {
        float s;
        std::memcpy(&s, q[i / 3] + (i % 3) * L, sizeof s);
        acc[i][0] += s * bv;
      }
    }
    return store_tile<ROWS, NV>(acc, c, ldc, ncols, alpha, beta, bias);
  }

  // Row pointers as loop invariants, indexed by k (kRows) or koff[k] (kOffsets): every
  // broadcast is one base + index*4 address. (Computing a + koff[k] + i*lda inside the loop
  // makes GCC chain 'add lda' through the rows: one cycle of latency per row.)
  const float* ar[ROWS];
#pragma GCC unroll 32
  for (int i = 0; i < ROWS; ++i) {
    ar[i] = a + i * lda;
    if (AM == kOffsets) __asm__("" : "+r"(ar[i]));  // opaque: keep one register per row
  }

  for (int64_t k = 0; k < kc; ++k) {
    vf bv[NV];
    if (AM == kGatherB || AM == kGatherAB) {
      const vfu* bk = reinterpret_cast<const vfu*>(b + koff[AM == kGatherAB ? 2 * k + 1 : k]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) bv[v] = bk[v];
    } else {
      const vf* bk = reinterpret_cast<const vf*>(b + k * (NV * kVW));
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) bv[v] = bk[v];
    }
    // kPacked / kGatherB / kGatherAB: A column k is contiguous
    const float* ak = AM == kGatherAB ? a + koff[2 * k] : a + k * lda;
    const int64_t ko = AM == kOffsets ? koff[k] : k;
#pragma GCC unroll 32
    for (int i = 0; i < ROWS; ++i) {
      const float s = (AM == kPacked || AM == kGatherB || AM == kGatherAB) ? ak[i] : ar[i][ko];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] += s * bv[v];
    }
  }

  store_tile<ROWS, NV>(acc, c, ldc, ncols, alpha, beta, bias);
}

// Pairs kernel (nv == kNvPairs, 8-float vectors: gemm_nv_pairs): N <= one vector, where the
// one-vector tile needs a broadcast per FMA (more loads than AVX2 cores' load ports issue). Two
// adjacent k of A (contiguous in memory: taps (r, s, c), (r, s, c+1)) are broadcast as one 64-bit
// pair, so lane j of a vector multiplies A[i, k0 + j%2] into B's pair layout; the two vectors hold
// N/2 columns each, and one broadcast feeds two FMAs. The store adds the lane pairs (even + odd
// lanes) into one vector of N columns. A must be row-major in place (kRows, or kOffsets with
// koff[k0+1] = koff[k0] + 1 for every even k0: the conv caller checks Cg is even); kc is even.
typedef double vd __attribute__((vector_size(kVW * 4)));
typedef int vi __attribute__((vector_size(kVW * 4)));

// One vbroadcastsd (a lane-by-lane initializer made GCC emit one masked broadcast per lane).
static inline vf broadcast_pair(double pair) {
#if defined(__AVX512F__)
  return reinterpret_cast<vf>(_mm512_castpd_ps(_mm512_set1_pd(pair)));
#elif defined(__AVX__)
  return reinterpret_cast<vf>(_mm256_castpd_ps(_mm256_set1_pd(pair)));
#else
  vd dv;
  for (int j = 0; j < kVW / 2; ++j) dv[j] = pair;
  return reinterpret_cast<vf>(dv);
#endif
}

template <int ROWS, int AM>
static void ukernel_pairs(int64_t kc, const float* __restrict a, int64_t lda,
                          const int64_t* __restrict koff, const float* __restrict b,
                          float* __restrict c, int64_t ldc, int64_t ncols, float alpha, float beta,
                          const float* __restrict bias) {
  vf acc[ROWS][2];
#pragma GCC unroll 32
  for (int i = 0; i < ROWS; ++i) acc[i][0] = acc[i][1] = vf{};
  const float* ar[ROWS];
#pragma GCC unroll 32
  for (int i = 0; i < ROWS; ++i) {
    ar[i] = a + i * lda;
    if (AM == kOffsets) __asm__("" : "+r"(ar[i]));
  }
  for (int64_t k = 0; k < kc; k += 2) {
    const vf* bk = reinterpret_cast<const vf*>(b + k * kVW);
    const vf b0 = bk[0], b1 = bk[1];
    const int64_t ko = AM == kOffsets ? koff[k] : k;
#pragma GCC unroll 32
    for (int i = 0; i < ROWS; ++i) {
      double pair;  // two floats as one 64-bit lane: moved, never computed on
      std::memcpy(&pair, ar[i] + ko, sizeof pair);
      const vf av = broadcast_pair(pair);
      acc[i][0] += av * b0;
      acc[i][1] += av * b1;
    }
  }
  vi ev, od;
  for (int j = 0; j < kVW / 2; ++j) {
    ev[j] = 2 * j, od[j] = 2 * j + 1;
    ev[j + kVW / 2] = kVW + 2 * j, od[j + kVW / 2] = kVW + 2 * j + 1;
  }
  vf out[ROWS][1];
#pragma GCC unroll 32
  for (int i = 0; i < ROWS; ++i)
    out[i][0] = __builtin_shuffle(acc[i][0], acc[i][1], ev) +
                __builtin_shuffle(acc[i][0], acc[i][1], od);
  store_tile<ROWS, 1>(out, c, ldc, ncols, alpha, beta, bias);
}

using KernFn = void (*)(int64_t, const float*, int64_t, const int64_t*, const float*, float*,
                        int64_t, int64_t, float, float, const float*);

template <int NV, int AM, int... R>
static constexpr std::array<KernFn, sizeof...(R)> make_table(std::integer_sequence<int, R...>) {
  return {{&ukernel<R + 1, NV, AM>...}};
}
// Tables indexed by rows - 1 (edge tiles use the kernel with exactly that many rows).
static constexpr std::array<KernFn, kMR1> kTab1[kModes] = {
    make_table<1, kRows>(std::make_integer_sequence<int, kMR1>{}),
    make_table<1, kPacked>(std::make_integer_sequence<int, kMR1>{}),
    make_table<1, kOffsets>(std::make_integer_sequence<int, kMR1>{}),
    make_table<1, kGatherB>(std::make_integer_sequence<int, kMR1>{}),
    make_table<1, kGatherAB>(std::make_integer_sequence<int, kMR1>{})};
static constexpr std::array<KernFn, kMR2> kTab2[kModes] = {
    make_table<2, kRows>(std::make_integer_sequence<int, kMR2>{}),
    make_table<2, kPacked>(std::make_integer_sequence<int, kMR2>{}),
    make_table<2, kOffsets>(std::make_integer_sequence<int, kMR2>{}),
    make_table<2, kGatherB>(std::make_integer_sequence<int, kMR2>{}),
    make_table<2, kGatherAB>(std::make_integer_sequence<int, kMR2>{})};

template <int AM, int... R>
static constexpr std::array<KernFn, sizeof...(R)> make_pairs_table(
    std::integer_sequence<int, R...>) {
  return {{&ukernel_pairs<R + 1, AM>...}};
}
static constexpr std::array<KernFn, kMRP> kTabP[2] = {
    make_pairs_table<kRows>(std::make_integer_sequence<int, kMRP>{}),
    make_pairs_table<kOffsets>(std::make_integer_sequence<int, kMRP>{})};

// Three-vector tiles for the gathered-B wgrad of 16-channel layers (runs of S*C = 48 taps on
// AVX-512): a 16 x 16 tile needs one broadcast per FMA, more loads than the two load ports issue;
// 8 x 48 needs 11 loads per 24 FMAs.
constexpr int kMR3 = kVW == 16 ? 8 : 4;
static constexpr std::array<KernFn, kMR3> kTab3[2] = {
    make_table<3, kGatherB>(std::make_integer_sequence<int, kMR3>{}),
    make_table<3, kGatherAB>(std::make_integer_sequence<int, kMR3>{})};

// ---- packing ------------------------------------------------------------------------------------
int64_t packb_floats(int64_t k, int64_t n, int nv) {
  if (nv == kNvPairs) return round_up(k, 2) * kVW;
  return round_up(n, gemm_nr(nv)) * k;
}

// Pairs layout (nv == kNvPairs, N <= one vector): per pair of k rows (k0, k0 + 1) two vectors,
// lane j of vector v holding B[k0 + j % 2][v * kVW/2 + j / 2] (zero past N).
static void pack_b_pairs(float* dst, const float* b, int64_t rsb, int64_t csb, int64_t k,
                         int64_t n) {
  for (int64_t k0 = 0; k0 < k; k0 += 2)
    for (int v = 0; v < 2; ++v)
      for (int j = 0; j < kVW; ++j) {
        const int64_t kk = k0 + j % 2, col = v * (kVW / 2) + j / 2;
        dst[k0 * kVW + v * kVW + j] = kk < k && col < n ? b[kk * rsb + col * csb] : 0.0f;
      }
}

void transpose_f32(float* __restrict dst, int64_t ldd, const float* __restrict src, int64_t lds,
                   int64_t rows, int64_t cols) {
  int64_t rv = 0, cv = 0;  // the rows and columns the 16 x 16 register blocks covered
#if defined(__AVX512F__)
  rv = rows / 16 * 16, cv = cols / 16 * 16;
  for (int64_t r0 = 0; r0 < rv; r0 += 16)
    for (int64_t c0 = 0; c0 < cv; c0 += 16)
      transpose16x16_4b(dst + c0 * ldd + r0, 4 * ldd, src + r0 * lds + c0, 4 * lds);
#endif
  constexpr int64_t kB = 32;  // the rest in 32 x 32 blocks (source and destination lines in L1)
  for (int64_t c0 = 0; c0 < cols; c0 += kB)
    for (int64_t r0 = 0; r0 < rows; r0 += kB) {
      const int64_t c1 = std::min(cols, c0 + kB), r1 = std::min(rows, r0 + kB);
      for (int64_t c = c0; c < c1; ++c)
        for (int64_t r = c < cv ? std::max(r0, rv) : r0; r < r1; ++r)
          dst[c * ldd + r] = src[r * lds + c];
    }
}

static void pack_b_panels(float* dst, const float* b, int64_t rsb, int64_t csb, int64_t k,
                          int64_t n, int nv, int64_t p0, int64_t p1) {
  const int64_t nr_full = gemm_nr(nv);
  for (int64_t jp = p0; jp < p1; ++jp) {
    const int64_t j0 = jp * nr_full;
    const int64_t nr = std::min(nr_full, n - j0);
    float* d = dst + jp * k * nr_full;
    if (csb == 1) {
      for (int64_t kk = 0; kk < k; ++kk) {
        const float* s = b + kk * rsb + j0;
        float* dk = d + kk * nr_full;
        for (int64_t j = 0; j < nr; ++j) dk[j] = s[j];
        for (int64_t j = nr; j < nr_full; ++j) dk[j] = 0.0f;
      }
    } else {
      // Column-major B (rsb == 1 is the transposed-weight case, a conv's [K][KD] weights): a
      // transpose in 16 x 16 register blocks (transpose_f32); other strides 16 k at a time, so
      // the panel rows written stay in L1. (A whole-column walk, one float per panel row, k rows
      // apart: ~5 cycles a float, 5% of the 64 -> 64 7x7 fprop on Zen 4.)
      if (rsb == 1) {
        transpose_f32(d, nr_full, b + j0 * csb, csb, nr, k);
      } else {
        for (int64_t k0 = 0; k0 < k; k0 += 16) {
          const int64_t k1 = std::min(k, k0 + 16);
          for (int64_t j = 0; j < nr; ++j) {
            const float* s = b + (j0 + j) * csb;
            for (int64_t kk = k0; kk < k1; ++kk) d[kk * nr_full + j] = s[kk * rsb];
          }
        }
      }
      if (nr < nr_full)
        for (int64_t kk = 0; kk < k; ++kk)
          for (int64_t j = nr; j < nr_full; ++j) d[kk * nr_full + j] = 0.0f;
    }
  }
}

void pack_b(float* dst, const float* b, int64_t rsb, int64_t csb, int64_t k, int64_t n, int nv) {
  if (nv == kNvPairs) return pack_b_pairs(dst, b, rsb, csb, k, n);
  pack_b_panels(dst, b, rsb, csb, k, n, nv, 0, ceil_div(n, gemm_nr(nv)));
}

void pack_b_parallel(float* dst, const float* b, int64_t rsb, int64_t csb, int64_t k, int64_t n,
                     int nv) {
  if (nv == kNvPairs) return pack_b_pairs(dst, b, rsb, csb, k, n);  // one small panel
  const int64_t panels = ceil_div(n, gemm_nr(nv));
  const int64_t per_panel = k * gemm_nr(nv);
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 13) / std::max<int64_t>(1, per_panel));
  parallel_for(panels, grain, [&](int64_t p0, int64_t p1) {
    pack_b_panels(dst, b, rsb, csb, k, n, nv, p0, p1);
  });
}

// Packs A[0:m, 0:kc] (strided) into MR-row slivers, each [kc][MR]; sliver i starts at i*kc*MR.
// Rows past m in the last sliver are left unset (the edge kernel never reads them).
static void pack_a(float* dst, const float* a, int64_t rsa, int64_t csa, int64_t m, int64_t kc,
                   int64_t mr_full) {
  for (int64_t i0 = 0; i0 < m; i0 += mr_full) {
    const int64_t mr = std::min(mr_full, m - i0);
    float* d = dst + i0 * kc;
    const float* s = a + i0 * rsa;
    if (rsa == 1) {
      for (int64_t kk = 0; kk < kc; ++kk) {
        const float* sk = s + kk * csa;
        float* dk = d + kk * mr_full;
        for (int64_t i = 0; i < mr; ++i) dk[i] = sk[i];
      }
    } else {
      for (int64_t i = 0; i < mr; ++i)
        for (int64_t kk = 0; kk < kc; ++kk) d[kk * mr_full + i] = s[i * rsa + kk * csa];
    }
  }
}

int64_t gemm_work_floats(int nv) { return round_up(kMC, gemm_mr(nv)) * kKC; }

// ---- single-threaded driver ---------------------------------------------------------------------
void gemm_core(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t rsa,
               int64_t csa, const int64_t* koff, const float* bp, int nv, float beta, float* c,
               int64_t ldc, const float* bias, float* work, int64_t bk, int64_t batch,
               int64_t a_step, int64_t c_step) {
  if (m <= 0 || n <= 0 || batch <= 0) return;
  const int64_t NR = gemm_nr(nv), MR = gemm_mr(nv);
  if (bk == 0) bk = k;
  const int mode = csa != 1 ? kPacked : (koff ? kOffsets : kRows);
  const bool pairs = nv == kNvPairs;
  if (pairs && (mode == kPacked || k % 2 != 0))
    throw std::logic_error("gemm_core: the pairs layout needs in-place A and an even K");
  const KernFn* tab = pairs     ? kTabP[mode == kOffsets ? 1 : 0].data()
                      : nv == 1 ? kTab1[mode].data()
                                : kTab2[mode].data();

  if (k <= 0) {  // C = beta * C + bias
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
          float* cij = c + b * c_step + i * ldc + j;
          float v = bias ? bias[j] : 0.0f;
          if (beta != 0.0f) v += beta * *cij;
          *cij = v;
        }
    return;
  }

  // One tile per batch entry (in-place A, one K block, one panel): a dgrad_phases_f32 row, 56
  // calls per image at 16 -> 32 stride 2; the loop nest's per-tile index arithmetic measured
  // 5.7% of that pass (perf).
  if (mode != kPacked && m <= MR && n <= NR && k <= kKC) {
    const KernFn tile = tab[m - 1];
    for (int64_t bi = 0; bi < batch; ++bi)
      tile(k, a + bi * a_step, rsa, koff, bp, c + bi * c_step, ldc, n, alpha, beta, bias);
    return;
  }

  // K blocks of equal size (at most kKC): no short tail block that reloads C for little work.
  // (even with the pairs layout: a block starts on a pair)
  const int64_t kcb0 = ceil_div(k, ceil_div(k, kKC));
  const int64_t kcb = pairs ? round_up(kcb0, 2) : kcb0;
  for (int64_t bi = 0; bi < batch; ++bi)
  for (int64_t ic = 0; ic < m; ic += kMC) {
    const int64_t mc = std::min(kMC, m - ic);
    // Row tiles: packed slivers are MR rows each; in-place A is split into equal tiles
    // (e.g. 16 rows as 8 + 8 rather than 12 + 4: small tiles waste the register block).
    const int64_t tiles = ceil_div(mc, MR);
    for (int64_t pc = 0; pc < k; pc += kcb) {
      const int64_t kc = std::min(kcb, k - pc);
      const bool first = pc == 0;
      const float cbeta = first ? beta : 1.0f;
      const float* ablk;
      int64_t lda;
      if (mode == kPacked) {
        pack_a(work, a + bi * a_step + ic * rsa + pc * csa, rsa, csa, mc, kc, MR);
        ablk = work;
        lda = MR;
      } else {
        ablk = a + bi * a_step + ic * rsa + (mode == kRows ? pc : 0);
        lda = rsa;
      }
      const int64_t* ko = mode == kOffsets ? koff + pc : nullptr;
      for (int64_t jr = 0; jr < n; jr += NR) {
        const int64_t ncols = std::min(NR, n - jr);
        const float* bpan = bp + (jr / NR) * bk * NR + pc * NR;
        const float* bb = (first && bias) ? bias + jr : nullptr;
        int64_t ir = 0;
        for (int64_t t = 0; t < tiles; ++t) {
          const int64_t rows =
              mode == kPacked ? std::min(MR, mc - ir) : mc / tiles + (t < mc % tiles ? 1 : 0);
          const float* ap = mode == kPacked ? ablk + ir * kc : ablk + ir * lda;
          tab[rows - 1](kc, ap, lda, ko, bpan, c + bi * c_step + (ic + ir) * ldc + jr, ldc, ncols,
                        alpha, cbeta, bb);
          ir += rows;
        }
      }
    }
  }
}

// ---- gathered-B accumulate (conv wgrad without im2col) -------------------------------------------
// pairs false: A column kk at a + kk*lda, B row kk at b + offs[kk] (kGatherB); true: at
// a + offs[2kk] and b + offs[2kk+1] (kGatherAB, lda unused).
static void gather_tiles(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                         const float* b, const int64_t* offs, bool pairs, float* c, int64_t ldc) {
  if (m <= 0 || n <= 0 || k <= 0) return;
  int nv = gemm_nv(n);
  if (nv == 1 && n > 2 * kVW && n % (3 * kVW) == 0) nv = 3;
  const int64_t NR = gemm_nr(nv), MR = nv == 3 ? kMR3 : gemm_mr(nv);
  const int mode = pairs ? kGatherAB : kGatherB;
  const KernFn* tab = nv == 3   ? kTab3[pairs ? 1 : 0].data()
                      : nv == 1 ? kTab1[mode].data()
                                : kTab2[mode].data();
  const int64_t tiles = ceil_div(m, MR);
  for (int64_t jr = 0; jr < n; jr += NR) {
    const int64_t ncols = std::min(NR, n - jr);
    int64_t ir = 0;
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t rows = m / tiles + (t < m % tiles ? 1 : 0);
      tab[rows - 1](k, a + ir, lda, offs, b + jr, c + ir * ldc + jr, ldc, ncols, 1.0f, 1.0f,
                    nullptr);
      ir += rows;
    }
  }
}

void gemm_gather_b(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                   const int64_t* boff, float* c, int64_t ldc) {
  gather_tiles(m, n, k, a, lda, b, boff, false, c, ldc);
}

void gemm_gather_ab(int64_t m, int64_t n, int64_t k, const float* a, const float* b,
                    const int64_t* ab, float* c, int64_t ldc) {
  gather_tiles(m, n, k, a, 0, b, ab, true, c, ldc);
}

// ---- multi-threaded general GEMM ---------------------------------------------------------------
void sgemm(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t rsa, int64_t csa,
           const float* b, int64_t rsb, int64_t csb, float beta, float* c, int64_t ldc,
           const float* bias) {
  if (m <= 0 || n <= 0) return;
  const int nv = gemm_nv(n);
  const int64_t NR = gemm_nr(nv), MR = gemm_mr(nv);
  const int64_t kk = std::max<int64_t>(k, 0);
  float* bp = scratch(kSlotPackB, static_cast<size_t>(packb_floats(kk, n, nv)));
  if (kk > 0) pack_b_parallel(bp, b, rsb, csb, kk, n, nv);

  // One thread per ~256K multiply-adds; fewer for small problems (a parallel region costs us).
  const int64_t macs = m * n * std::max<int64_t>(kk, 1);
  int nt = threads_for(macs, int64_t{1} << 18);
  const int64_t row_tiles = ceil_div(m, MR), panels = ceil_div(n, NR);
  nt = static_cast<int>(std::min<int64_t>(nt, std::max(row_tiles, panels)));
  const int64_t wf = gemm_work_floats(nv);
  float* work = scratch(kSlotGemmWork, static_cast<size_t>(wf * nt));
  if (nt <= 1) {
    gemm_core(m, n, kk, alpha, a, rsa, csa, nullptr, bp, nv, beta, c, ldc, bias, work);
    return;
  }
  const bool split_rows = row_tiles >= 2 * nt || row_tiles >= panels;
  parallel(nt, [&](int t, int T) {
    float* w = work + wf * t;
    if (split_rows) {
      const int64_t r0 = row_tiles * t / T * MR, r1 = std::min(m, row_tiles * (t + 1) / T * MR);
      if (r0 < r1)
        gemm_core(r1 - r0, n, kk, alpha, a + r0 * rsa, rsa, csa, nullptr, bp, nv, beta,
                  c + r0 * ldc, ldc, bias, w);
    } else {
      const int64_t p0 = panels * t / T, p1 = panels * (t + 1) / T;
      const int64_t j0 = p0 * NR, j1 = std::min(n, p1 * NR);
      if (j0 < j1)
        gemm_core(m, j1 - j0, kk, alpha, a, rsa, csa, nullptr, bp + p0 * kk * NR, nv, beta,
                  c + j0, ldc, bias ? bias + j0 : nullptr, w);
    }
  });
}

}  // namespace d8cpu
