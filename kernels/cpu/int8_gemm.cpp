// int8_gemm.cpp: int8 x int8 -> int32 GEMM micro-kernels, operand packing, the variant switch
// (d8_set_int8_kernel / d8_int8_kernel_name) and d8_gemm_i8. Formats: int8_gemm.h.
//
// Variants (numbered as in daint8.h; each a drop-in for the one before, selectable at run time):
//   1 portable     plain loops over the packed panels, MR x NR = 4 x 16; GCC vectorizes them for
//                  whatever the build targets. The readable reference.
//   2 avx2         the sign trick, MR x NR = 4 x 16 (two ymm of 8 int32 per row):
//                  vpsignb moves a's sign onto b, vpmaddubsw(|a| u8, b*sign(a) s8) adds pairs into
//                  int16 (|q| <= 127: a pair is at most 2*127*127 = 32258, no saturation),
//                  vpmaddwd with ones widens to int32. 4 instructions per 32 MACs.
//   3 avx512-vnni  vpdpbusd (u8 x s8, 4 products into each int32 lane, 64 MACs per instruction)
//                  with the +128 offset: A holds a + 128 (unsigned), B stays signed, and the
//                  accumulators start at -128 * sum_k B[j, k] (comp, computed once when B is packed).
//                  MR x NR = 12 x 32 (24 zmm accumulators), or 12 x 16 for N <= 16; GEMMs with
//                  few rows (wgrad: M = Kg) take the MR in 6..12 that wastes least. The offset was
//                  chosen over the sign trick because AVX-512 has no vpsignb: the trick would cost
//                  two extra instructions per vpdpbusd, the offset costs one XOR per A byte at
//                  packing time (fused into im2col) and one column-sum per B column.
// The SIMD variants are compiled with function-level target attributes, so the library builds
// for baseline x86-64 and picks the best variant the CPU has at run time (__builtin_cpu_supports).
#include "int8_gemm.h"

#include <cmath>

#include "common.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#define D8_X86 1
#define D8_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define D8_TARGET_AVXVNNI __attribute__((target("avx2,fma,avxvnni")))
#define D8_TARGET_VNNI __attribute__((target("avx512f,avx512bw,avx512vnni")))
#else
#define D8_X86 0
#endif

namespace d8cpu {
namespace i8 {
namespace {

inline int32_t load_i32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// ---- variant 1: portable -------------------------------------------------------------------------
constexpr int kPortMR = 4, kPortNR = 16;

// Shared scalar epilogue for a finished tile acc[MR][NR] (row-major, NR columns).
template <int MR, int NR>
void epilogue_scalar(const int32_t (&acc)[MR][NR], int mrows, int ncols, const Epi& e,
                     int64_t i0, int64_t j0) {
  for (int i = 0; i < mrows; ++i) {
    const int64_t row = (i0 + i) * e.ldc + j0;
    if (e.mode == kStoreI32) {
      int32_t* c = static_cast<int32_t*>(e.c) + row;
      for (int j = 0; j < ncols; ++j) c[j] = acc[i][j];
    } else if (e.mode == kAddI32) {
      int32_t* c = static_cast<int32_t*>(e.c) + row;
      for (int j = 0; j < ncols; ++j)
        c[j] = static_cast<int32_t>(static_cast<uint32_t>(c[j]) + static_cast<uint32_t>(acc[i][j]));
    } else {
      float* c = static_cast<float*>(e.c) + row;
      const float* cs = e.col_scale + j0;
      const float* bs = e.bias ? e.bias + j0 : nullptr;
      const bool add = e.mode == kAddF32;
      // one rounding, as the SIMD epilogues' vfmadd and the cuda kernels' __fmaf_rn (written out:
      // GCC would contract it only where the target has FMA)
      for (int j = 0; j < ncols; ++j)
        c[j] = std::fma(static_cast<float>(acc[i][j]), cs[j], add ? c[j] : bs ? bs[j] : 0.0f);
    }
  }
}

void tile_portable(int64_t k4, const uint8_t* a, int64_t lda, const int32_t* koff,
                   const int8_t* bp, const int32_t* comp, int mrows, int ncols, const Epi& e,
                   int64_t i0, int64_t j0, int) {
  (void)comp;  // flip == 0: A is signed as is
  int32_t acc[kPortMR][kPortNR] = {};
  for (int64_t t = 0; t < k4; ++t) {
    const int8_t* b = bp + t * kPortNR * 4;
    for (int i = 0; i < kPortMR; ++i) {
      const int8_t* ai = reinterpret_cast<const int8_t*>(a + i * lda + (koff ? koff[t] : 4 * t));
      const int32_t a0 = ai[0], a1 = ai[1], a2 = ai[2], a3 = ai[3];
      for (int j = 0; j < kPortNR; ++j)
        acc[i][j] += a0 * b[4 * j] + a1 * b[4 * j + 1] + a2 * b[4 * j + 2] + a3 * b[4 * j + 3];
    }
  }
  epilogue_scalar<kPortMR, kPortNR>(acc, mrows, ncols, e, i0, j0);
}

#if D8_X86
// ---- 256-bit epilogue, shared by avx2 and avx-vnni ------------------------------------------------
// Full 8-column vectors use plain loads / stores: vmaskmov stores are slow on AMD cores (Zen 2 /
// Zen 3 issue them as many micro-ops), so masks are kept for the partial last vector.
template <int MR, int NV>
D8_TARGET_AVX2 inline void epilogue_256(const __m256i (&acc)[MR][NV], int mrows, int ncols,
                                        const Epi& e, int64_t i0, int64_t j0) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const int mode = e.mode;
  const int64_t ldc = e.ldc;
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    const int rem = ncols - 8 * v;
    if (rem <= 0) break;
    const int64_t col = j0 + 8 * v;
    if (rem >= 8) {
      if (mode >= kStoreF32) {
        const __m256 s = _mm256_loadu_ps(e.col_scale + col);
        const __m256 bb = e.bias ? _mm256_loadu_ps(e.bias + col) : _mm256_setzero_ps();
        float* c = static_cast<float*>(e.c) + i0 * ldc + col;
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) {
          if (i >= mrows) break;
          const __m256 base = mode == kAddF32 ? _mm256_loadu_ps(c + i * ldc) : bb;
          _mm256_storeu_ps(c + i * ldc, _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i][v]), s, base));
        }
      } else {
        __m256i* c = reinterpret_cast<__m256i*>(static_cast<int32_t*>(e.c) + i0 * ldc + col);
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) {
          if (i >= mrows) break;
          __m256i* ci = reinterpret_cast<__m256i*>(reinterpret_cast<int32_t*>(c) + i * ldc);
          __m256i r = acc[i][v];
          if (mode == kAddI32) r = _mm256_add_epi32(r, _mm256_loadu_si256(ci));
          _mm256_storeu_si256(ci, r);
        }
      }
      continue;
    }
    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(rem), lane);
    if (mode >= kStoreF32) {
      const __m256 s = _mm256_maskload_ps(e.col_scale + col, m);
      const __m256 bb = e.bias ? _mm256_maskload_ps(e.bias + col, m) : _mm256_setzero_ps();
      float* c = static_cast<float*>(e.c) + i0 * ldc + col;
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) {
        if (i >= mrows) break;
        const __m256 base = mode == kAddF32 ? _mm256_maskload_ps(c + i * ldc, m) : bb;
        _mm256_maskstore_ps(c + i * ldc, m,
                            _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i][v]), s, base));
      }
    } else {
      int* c = static_cast<int*>(e.c) + i0 * ldc + col;
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) {
        if (i >= mrows) break;
        __m256i r = acc[i][v];
        if (mode == kAddI32) r = _mm256_add_epi32(r, _mm256_maskload_epi32(c + i * ldc, m));
        _mm256_maskstore_epi32(c + i * ldc, m, r);
      }
    }
  }
}

// Epi::pf inside a tile's k-loop: [pf, pf + pf_bytes) one line a k-group, two past k4 lines, so
// the caller's next operands arrive while the tile computes (a burst before a long GEMM held the
// load pipe as long as the demand misses it replaced). prefetcht2, the hint for the outer caches:
// L1 is the tile's B panel's (prefetcht0 measured alike on the Zen 4 guest).
struct PfLines {
  const char* p = nullptr;
  int64_t l1 = 0, l2 = 0, k4 = 0;
  PfLines() = default;
  PfLines(const Epi& e, int64_t k4_) : p(static_cast<const char*>(e.pf)), k4(k4_) {
    const int64_t lines = p ? (e.pf_bytes + 63) / 64 : 0;
    l1 = std::min(lines, k4), l2 = lines - k4;
  }
  inline __attribute__((always_inline)) void at(int64_t t) const {
    if (t < l1) __asm__ volatile("prefetcht2 %0" : : "m"(p[64 * t]));
    if (t < l2) __asm__ volatile("prefetcht2 %0" : : "m"(p[64 * (t + k4)]));
  }
};

// ---- variant 2: AVX2, sign trick ------------------------------------------------------------------
constexpr int kAvx2MR = 4, kAvx2NV = 2;  // NR = 16

template <int MR, int NV>
D8_TARGET_AVX2 void tile_avx2(int64_t k4, const uint8_t* a, int64_t lda, const int32_t* koff,
                              const int8_t* bp, const int32_t* comp, int mrows, int ncols,
                              const Epi& e, int64_t i0, int64_t j0, int) {
  if constexpr (MR == kAvx2MR && NV == kAvx2NV) {
    // a GEMM's last rows run a tile of their exact height (the 4-row tile would multiply rows
    // that nobody stores: a 5-pixel row of the exact-window forward is 4 + 1)
    if (mrows < MR) {
      if (mrows == 1) return tile_avx2<1, NV>(k4, a, lda, koff, bp, comp, 1, ncols, e, i0, j0, 0);
      if (mrows == 2) return tile_avx2<2, NV>(k4, a, lda, koff, bp, comp, 2, ncols, e, i0, j0, 0);
      return tile_avx2<3, NV>(k4, a, lda, koff, bp, comp, mrows, ncols, e, i0, j0, 0);
    }
  }
  (void)comp;
  __m256i acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_setzero_si256();
  const __m256i ones = _mm256_set1_epi16(1);
  if constexpr (MR == 4 && NV == 2) {
    // The k-loop in asm: GCC's register allocation of the intrinsic form below spilled two
    // accumulators and reloaded B (16.5 MACs/clock on Zen 3; this loop: see README).
    // Per k-group |b| of both B vectors (shared by the four rows); per row vpbroadcastd, then per
    // vector vpsignb (a with b's signs), vpmaddubsw (|b| unsigned), vpmaddwd, vpaddd: the same
    // byte products a*b as |a| * sign(b, a), one vpabsb per vector and k-group instead of one per
    // row (the row mix in bench/ports/x86_ports.cpp on Zen 4: 18.3 -> 19.7 MACs/clock). All 16
    // ymm registers: 8 accumulators, b, |b| (2 each), a, two temporaries, the ones.
    const uint8_t* a0 = a;
    const uint8_t* a1 = a + lda;
    const uint8_t* a2 = a + 2 * lda;
    const uint8_t* a3 = a + 3 * lda;
    __m256i c00 = acc[0][0], c01 = acc[0][1], c10 = acc[1][0], c11 = acc[1][1];
    __m256i c20 = acc[2][0], c21 = acc[2][1], c30 = acc[3][0], c31 = acc[3][1];
    __m256i b0, b1, ab0, ab1, av, t0, t1;
#define D8_AVX2_ROW(A, C0, C1)                                                            \
  "vpbroadcastd (%[" A "],%[o]), %[av]\n\t"                                               \
  "vpsignb %[b0], %[av], %[t0]\n\t"                                                       \
  "vpsignb %[b1], %[av], %[t1]\n\t"                                                       \
  "vpmaddubsw %[t0], %[ab0], %[t0]\n\t"                                                   \
  "vpmaddubsw %[t1], %[ab1], %[t1]\n\t"                                                   \
  "vpmaddwd %[ones], %[t0], %[t0]\n\t"                                                    \
  "vpmaddwd %[ones], %[t1], %[t1]\n\t"                                                    \
  "vpaddd %[t0], %[" C0 "], %[" C0 "]\n\t"                                                \
  "vpaddd %[t1], %[" C1 "], %[" C1 "]\n\t"
    // o = the k-group's byte offset in every row: 4 * t, or koff[t] (implicit GEMM)
    auto step = [&](int64_t o, const int8_t* bq) __attribute__((always_inline)) {
      __asm__(
          "vmovdqu (%[b]), %[b0]\n\t"
          "vmovdqu 32(%[b]), %[b1]\n\t"
          "vpabsb %[b0], %[ab0]\n\t"
          "vpabsb %[b1], %[ab1]\n\t"  //
          D8_AVX2_ROW("a0", "c00", "c01") D8_AVX2_ROW("a1", "c10", "c11")
              D8_AVX2_ROW("a2", "c20", "c21") D8_AVX2_ROW("a3", "c30", "c31")
          : [c00] "+x"(c00), [c01] "+x"(c01), [c10] "+x"(c10), [c11] "+x"(c11),
            [c20] "+x"(c20), [c21] "+x"(c21), [c30] "+x"(c30), [c31] "+x"(c31),
            [b0] "=&x"(b0), [b1] "=&x"(b1), [ab0] "=&x"(ab0), [ab1] "=&x"(ab1), [av] "=&x"(av),
            [t0] "=&x"(t0), [t1] "=&x"(t1)
          : [b] "r"(bq), [o] "r"(o), [a0] "r"(a0), [a1] "r"(a1), [a2] "r"(a2), [a3] "r"(a3),
            [ones] "x"(ones)
          : "memory");
    };
    if (koff && e.pf) {
      const PfLines pf(e, k4);
      for (int64_t t = 0; t < k4; ++t) {
        pf.at(t);
        step(koff[t], bp + 64 * t);
      }
    } else if (koff) {
      for (int64_t t = 0; t < k4; ++t) step(koff[t], bp + 64 * t);
    } else {
      const int8_t* bq = bp;
      for (int64_t o = 0; o < 4 * k4; o += 4, bq += 64) step(o, bq);
    }
#undef D8_AVX2_ROW
    acc[0][0] = c00, acc[0][1] = c01, acc[1][0] = c10, acc[1][1] = c11;
    acc[2][0] = c20, acc[2][1] = c21, acc[3][0] = c30, acc[3][1] = c31;
  } else {
    for (int64_t t = 0; t < k4; ++t) {
      __m256i b[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v)
        b[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + (t * NV + v) * 32));
      const int64_t o = koff ? koff[t] : 4 * t;
      __m256i ab[NV];  // |b|, and a takes b's signs (as the asm tile above)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) ab[v] = _mm256_abs_epi8(b[v]);
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) {
        const __m256i av = _mm256_set1_epi32(load_i32(a + i * lda + o));
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) {
          const __m256i p16 = _mm256_maddubs_epi16(ab[v], _mm256_sign_epi8(av, b[v]));
          acc[i][v] = _mm256_add_epi32(acc[i][v], _mm256_madd_epi16(p16, ones));
        }
      }
    }
  }
  epilogue_256<MR, NV>(acc, mrows, ncols, e, i0, j0);
}

// ---- variant 4: AVX-VNNI (VEX vpdpbusd ymm, no AVX-512), the +128 offset of variant 3 -----------
// Same operand formats as avx512-vnni (flip 0x80, comp = 128 * colsum(B), accumulators start at
// -comp), 8 int32 lanes per vector, MR x NR = 6 x 16 (12 ymm accumulators, 2 B vectors, 1
// broadcast), the avx2 epilogue. Emul = true replaces the one vpdpbusd by an exact AVX2 sequence
// (even / odd bytes widened to int16, two vpmaddwd): D8_CPU_INT8_EMULATE_AVXVNNI=1 makes the
// variant runnable on any AVX2 CPU, so its packing, offset and epilogue are tested where the
// instruction does not exist. Only the instruction itself is then untested.
constexpr int kAvxVnniMR = 6, kAvxVnniNV = 2;

D8_TARGET_AVX2 inline __m256i dpbusd_emulated(__m256i acc, __m256i a_u8, __m256i b_s8) {
  const __m256i lo = _mm256_set1_epi16(0x00FF);
  const __m256i a_even = _mm256_and_si256(a_u8, lo), a_odd = _mm256_srli_epi16(a_u8, 8);
  const __m256i b_even = _mm256_srai_epi16(_mm256_slli_epi16(b_s8, 8), 8);
  const __m256i b_odd = _mm256_srai_epi16(b_s8, 8);
  return _mm256_add_epi32(acc, _mm256_add_epi32(_mm256_madd_epi16(a_even, b_even),
                                                _mm256_madd_epi16(a_odd, b_odd)));
}

// The k-loop (Koff as in vnni_kloop below).
template <int MR, int NV, bool Emul, bool Koff, bool Pf = false>
D8_TARGET_AVXVNNI inline __attribute__((always_inline)) void avxvnni_kloop(
    __m256i (&acc)[MR][NV], int64_t k4, const uint8_t* a, int64_t lda, const int32_t* koff,
    const int8_t* bp, const PfLines& pf = PfLines{}) {
  for (int64_t t = 0; t < k4; ++t) {
    if constexpr (Pf) pf.at(t);
    __m256i b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      b[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + (t * NV + v) * 32));
    const uint8_t* at = a + (Koff ? static_cast<int64_t>(koff[t]) : 4 * t);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const __m256i av = _mm256_set1_epi32(load_i32(at + i * lda));
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        if constexpr (Emul)
          acc[i][v] = dpbusd_emulated(acc[i][v], av, b[v]);
        else
          acc[i][v] = _mm256_dpbusd_avx_epi32(acc[i][v], av, b[v]);
      }
    }
  }
}

// Accumulators start at -comp (the +128 offset's correction), 8 columns per vector.
template <int MR, int NV>
D8_TARGET_AVX2 inline void start_at_neg_comp(__m256i (&acc)[MR][NV], const int32_t* comp) {
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    const __m256i c0 = _mm256_sub_epi32(
        _mm256_setzero_si256(), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(comp + 8 * v)));
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) acc[i][v] = c0;
  }
}

template <int MR, int NV, bool Emul>
D8_TARGET_AVXVNNI void tile_avxvnni(int64_t k4, const uint8_t* a, int64_t lda,
                                    const int32_t* koff, const int8_t* bp, const int32_t* comp,
                                    int mrows, int ncols, const Epi& e, int64_t i0, int64_t j0,
                                    int) {
  if constexpr (MR == kAvxVnniMR) {
    // a GEMM's last rows run a tile of their exact height, as the avx2 tile's do
    if (mrows < MR) {
      using Fn = void (*)(int64_t, const uint8_t*, int64_t, const int32_t*, const int8_t*,
                          const int32_t*, int, int, const Epi&, int64_t, int64_t, int);
      static constexpr Fn kShort[] = {nullptr, &tile_avxvnni<1, NV, Emul>,
                                      &tile_avxvnni<2, NV, Emul>, &tile_avxvnni<3, NV, Emul>,
                                      &tile_avxvnni<4, NV, Emul>, &tile_avxvnni<5, NV, Emul>};
      static_assert(kAvxVnniMR == 6, "kShort covers 1 .. kAvxVnniMR - 1 rows");
      return kShort[mrows](k4, a, lda, koff, bp, comp, mrows, ncols, e, i0, j0, 0);
    }
  }
  __m256i acc[MR][NV];
  start_at_neg_comp<MR, NV>(acc, comp);
  if (koff && e.pf)
    avxvnni_kloop<MR, NV, Emul, true, true>(acc, k4, a, lda, koff, bp, PfLines(e, k4));
  else if (koff)
    avxvnni_kloop<MR, NV, Emul, true>(acc, k4, a, lda, koff, bp);
  else
    avxvnni_kloop<MR, NV, Emul, false>(acc, k4, a, lda, koff, bp);
  epilogue_256<MR, NV>(acc, mrows, ncols, e, i0, j0);
}

// ---- variant 3: AVX-512 VNNI, vpdpbusd with the +128 offset ---------------------------------------
constexpr int kVnniMR = 12;

// The k-loop, instantiated with contiguous k-groups (Koff = false: byte offset 4 t) and through
// the koff table (implicit GEMM), so neither loop tests which it is.
template <int MR, int NV, bool Koff, bool Pf = false>
D8_TARGET_VNNI inline __attribute__((always_inline)) void vnni_kloop(
    __m512i (&acc)[MR][NV], int64_t k4, const uint8_t* a, int64_t lda, const int32_t* koff,
    const int8_t* bp, const PfLines& pf = PfLines{}) {
  for (int64_t t = 0; t < k4; ++t) {
    if constexpr (Pf) pf.at(t);
    __m512i b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) b[v] = _mm512_loadu_si512(bp + (t * NV + v) * 64);
    const uint8_t* at = a + (Koff ? static_cast<int64_t>(koff[t]) : 4 * t);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      const __m512i av = _mm512_set1_epi32(load_i32(at + i * lda));
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_dpbusd_epi32(acc[i][v], av, b[v]);
    }
  }
}

// The finished MR x 16*NV tile into C (Epi's modes): rows past mrows, columns past ncols dropped.
template <int MR, int NV>
D8_TARGET_VNNI inline __attribute__((always_inline)) void vnni_epilogue(
    const __m512i (&acc)[MR][NV], int mrows, int ncols, const Epi& e, int64_t i0, int64_t j0) {
  const int mode = e.mode;
  const int64_t ldc = e.ldc;
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    const int rem = ncols - 16 * v;
    if (rem <= 0) break;
    const __mmask16 m = rem >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << rem) - 1);
    const int64_t col = j0 + 16 * v;
    if (mode >= kStoreF32) {
      const __m512 s = _mm512_maskz_loadu_ps(m, e.col_scale + col);
      const __m512 bb = e.bias ? _mm512_maskz_loadu_ps(m, e.bias + col) : _mm512_setzero_ps();
      float* c = static_cast<float*>(e.c) + i0 * ldc + col;
#pragma GCC unroll 32
      for (int i = 0; i < MR; ++i) {
        if (i >= mrows) break;
        // (maskz_ form: the plain cvtepi32_ps trips a -Wmaybe-uninitialized in GCC 12's header)
        const __m512 f = _mm512_maskz_cvtepi32_ps(m, acc[i][v]);
        const __m512 base = mode == kAddF32 ? _mm512_maskz_loadu_ps(m, c + i * ldc) : bb;
        _mm512_mask_storeu_ps(c + i * ldc, m, _mm512_fmadd_ps(f, s, base));
      }
    } else {
      int32_t* c = static_cast<int32_t*>(e.c) + i0 * ldc + col;
#pragma GCC unroll 32
      for (int i = 0; i < MR; ++i) {
        if (i >= mrows) break;
        __m512i r = acc[i][v];
        if (mode == kAddI32) r = _mm512_add_epi32(r, _mm512_maskz_loadu_epi32(m, c + i * ldc));
        _mm512_mask_storeu_epi32(c + i * ldc, m, r);
      }
    }
  }
}

// Pairs: the 16-column tile over pairs of k-groups (Plan::pairs). One 8-byte broadcast of a row's
// k-groups 2p and 2p + 1 feeds two vpdpbusd: even lanes multiply k-group 2p, odd lanes 2p + 1.
// pair_panels lays B's two vectors of a pair out so that each column's two halves land in lanes
// one shuffle apart: vector 0 holds column 2j's k-group 2p in lane 2j and column 2j + 1's
// k-group 2p + 1 in lane 2j + 1; vector 1 column 2j + 1's k-group 2p in lane 2j and column 2j's
// k-group 2p + 1 in lane 2j + 1. So row i's result is acc0 + (acc1 with each lane pair swapped):
// one vpshufd and one add (the layout before this needed two shifts, two adds and a blend).
// One broadcast per two vpdpbusd, as the 32-column tile: on Zen 5, which issues two vpdpbusd a
// clock, the 16-column tile's broadcast per vpdpbusd held it to 78-86% of that (14 and 28 rows,
// K = 512, hot), the 32-column tile to 98%. (Zen 4 issues one vpdpbusd zmm a clock, a broadcast
// each fits: there the 16-column tile stays, zmm_pairs() in common.h.) MR <= 14. k4 even; with
// koff, k-groups 2p and 2p + 1 contiguous.
// The k-loop is one asm statement per row on accumulators pinned to zmm0-27 by local register
// variables (B in zmm28-29, the broadcast in zmm30): with the intrinsic form, GCC 12 copied or
// spilled accumulators inside the loop for every cheaper combine tried (this one among them) and
// for rows started from one register; only the old shift-and-blend combine escaped that.
// Hot in L1 on Zen 5 (13 x 16, K = 144, one core): the k-loop alone 99.6% of two vpdpbusd a
// clock, the whole tile 85% before, 90% after.
#define D8_PAIRS_ROW_REGS(i, x, y) \
  register __m512i acc##i##e asm(x); \
  register __m512i acc##i##o asm(y);
#define D8_PAIRS_ROW(i)                                                        \
  if constexpr (MR > i)                                                        \
    __asm__("vpbroadcastq (%[p]), %%zmm30\n\t"                                 \
            "vpdpbusd %[b0], %%zmm30, %[x]\n\t"                                \
            "vpdpbusd %[b1], %%zmm30, %[y]"                                    \
            : [x] "+v"(acc##i##e), [y] "+v"(acc##i##o)                         \
            : [b0] "v"(b0), [b1] "v"(b1), [p] "r"(at + i * lda)              \
            : "xmm30", "memory");
#define D8_PAIRS_ROWS(M)                                                       \
  M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11) M(12) M(13)
template <int MR>
D8_TARGET_VNNI void tile_vnni_pairs(int64_t k4, const uint8_t* a, int64_t lda,
                                    const int32_t* koff, const int8_t* bp, const int32_t* comp,
                                    int mrows, int ncols, const Epi& e, int64_t i0, int64_t j0,
                                    int) {
  static_assert(MR <= 14, "two accumulators a row in zmm0-27");
  D8_PAIRS_ROW_REGS(0, "zmm0", "zmm1") D8_PAIRS_ROW_REGS(1, "zmm2", "zmm3")
  D8_PAIRS_ROW_REGS(2, "zmm4", "zmm5") D8_PAIRS_ROW_REGS(3, "zmm6", "zmm7")
  D8_PAIRS_ROW_REGS(4, "zmm8", "zmm9") D8_PAIRS_ROW_REGS(5, "zmm10", "zmm11")
  D8_PAIRS_ROW_REGS(6, "zmm12", "zmm13") D8_PAIRS_ROW_REGS(7, "zmm14", "zmm15")
  D8_PAIRS_ROW_REGS(8, "zmm16", "zmm17") D8_PAIRS_ROW_REGS(9, "zmm18", "zmm19")
  D8_PAIRS_ROW_REGS(10, "zmm20", "zmm21") D8_PAIRS_ROW_REGS(11, "zmm22", "zmm23")
  D8_PAIRS_ROW_REGS(12, "zmm24", "zmm25") D8_PAIRS_ROW_REGS(13, "zmm26", "zmm27")
  register __m512i b0 asm("zmm28");
  register __m512i b1 asm("zmm29");
  // acc0 starts at -comp (each lane's own column), acc1 at zero
  const __m512i nc = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_loadu_si512(comp));
  const __m512i z = _mm512_setzero_si512();
#define D8_PAIRS_INIT(i) \
  if constexpr (MR > i) acc##i##e = nc, acc##i##o = z;
  D8_PAIRS_ROWS(D8_PAIRS_INIT)
  for (int64_t t = 0; t < k4 / 2; ++t) {
    b0 = _mm512_loadu_si512(bp + t * 128);
    b1 = _mm512_loadu_si512(bp + t * 128 + 64);
    const uint8_t* at = a + (koff ? static_cast<int64_t>(koff[2 * t]) : 8 * t);
    D8_PAIRS_ROWS(D8_PAIRS_ROW)
  }
  __m512i r[MR][1];
  // (maskz_ shuffle with a full mask: the plain one trips -Wuninitialized in GCC 12's header)
#define D8_PAIRS_SUM(i)                                                                   \
  if constexpr (MR > i)                                                                   \
    r[i][0] = _mm512_add_epi32(acc##i##e, _mm512_maskz_shuffle_epi32(0xFFFF, acc##i##o,   \
                                                                     _MM_PERM_CDAB));
  D8_PAIRS_ROWS(D8_PAIRS_SUM)
#undef D8_PAIRS_SUM
#undef D8_PAIRS_INIT
#undef D8_PAIRS_ROWS
#undef D8_PAIRS_ROW
#undef D8_PAIRS_ROW_REGS
  vnni_epilogue<MR, 1>(r, mrows, std::min(ncols, 16), e, i0, j0);
}

template <int MR, int NV>
D8_TARGET_VNNI void tile_vnni(int64_t k4, const uint8_t* a, int64_t lda, const int32_t* koff,
                              const int8_t* bp, const int32_t* comp, int mrows, int ncols,
                              const Epi& e, int64_t i0, int64_t j0, int) {
  __m512i acc[MR][NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    const __m512i c0 = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_loadu_si512(comp + 16 * v));
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) acc[i][v] = c0;
  }
  if (koff && e.pf)
    vnni_kloop<MR, NV, true, true>(acc, k4, a, lda, koff, bp, PfLines(e, k4));
  else if (koff)
    vnni_kloop<MR, NV, true>(acc, k4, a, lda, koff, bp);
  else
    vnni_kloop<MR, NV, false>(acc, k4, a, lda, koff, bp);
  vnni_epilogue<MR, NV>(acc, mrows, ncols, e, i0, j0);
}

// Row pairs (Plan::row_pairs): the 16-column tile for A rows 4 bytes apart (lda = 4: the
// image-quad wgrad, whose A rows are the (s, c) of a window row), where one 8-byte broadcast holds
// k-group t of two adjacent rows. It feeds two vpdpbusd, of B's columns 0-7 and 8-15 each lane
// duplicated (two vpermd per k-group), so lane 2j + r of acc[p][h] is row 2p + r, column 8h + j:
// one broadcast per two vpdpbusd, as the pairs tile, with neither operand re-laid. C is stored
// as it comes out, row pairs interleaved: element (i, j) at c[(i / 2) * 32 + 2 j + i % 2] (row i0
// from c + i0 * ldc, ldc = 16). kStoreI32 / kAddI32 only; 16 columns; MR and mrows even.
template <int MR, bool Pf>
D8_TARGET_VNNI void tile_vnni_rowpairs(int64_t k4, const uint8_t* a, int64_t lda,
                                       const int32_t* koff, const int8_t* bp,
                                       const int32_t* comp, int mrows, int, const Epi& e,
                                       int64_t i0, int64_t, int) {
  static_assert(MR % 2 == 0, "rows come in pairs");
  constexpr int kP = MR / 2;
  (void)lda;  // 4
  const __m512i dlo = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
  const __m512i dhi = _mm512_add_epi32(dlo, _mm512_set1_epi32(8));
  __m512i acc[kP][2];
  {
    const __m512i nc = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_loadu_si512(comp));
    const __m512i c0 = _mm512_maskz_permutexvar_epi32(0xFFFF, dlo, nc);
    const __m512i c1 = _mm512_maskz_permutexvar_epi32(0xFFFF, dhi, nc);
#pragma GCC unroll 16
    for (int q = 0; q < kP; ++q) acc[q][0] = c0, acc[q][1] = c1;
  }
  const PfLines pf = Pf ? PfLines(e, k4) : PfLines{};
  // (maskz_ permutes with full masks: the plain ones trip -Wuninitialized in GCC 12's header)
  for (int64_t t = 0; t < k4; ++t) {
    if constexpr (Pf) pf.at(t);
    const __m512i b = _mm512_loadu_si512(bp + t * 64);
    const __m512i b0 = _mm512_maskz_permutexvar_epi32(0xFFFF, dlo, b);
    const __m512i b1 = _mm512_maskz_permutexvar_epi32(0xFFFF, dhi, b);
    const uint8_t* at = a + (koff ? static_cast<int64_t>(koff[t]) : 4 * t);
#pragma GCC unroll 16
    for (int q = 0; q < kP; ++q) {
      int64_t v;
      std::memcpy(&v, at + 8 * q, 8);
      const __m512i av = _mm512_set1_epi64(v);
      acc[q][0] = _mm512_dpbusd_epi32(acc[q][0], av, b0);
      acc[q][1] = _mm512_dpbusd_epi32(acc[q][1], av, b1);
    }
  }
  int32_t* c = static_cast<int32_t*>(e.c) + i0 * e.ldc;
#pragma GCC unroll 16
  for (int q = 0; q < kP; ++q) {
    if (2 * q >= mrows) break;
    __m512i r0 = acc[q][0], r1 = acc[q][1];
    if (e.mode == kAddI32) {
      r0 = _mm512_add_epi32(r0, _mm512_loadu_si512(c + 32 * q));
      r1 = _mm512_add_epi32(r1, _mm512_loadu_si512(c + 32 * q + 16));
    }
    _mm512_storeu_si512(c + 32 * q, r0);
    _mm512_storeu_si512(c + 32 * q + 16, r1);
  }
}
template <int MR>
D8_TARGET_VNNI void tile_vnni_rowpairs_any(int64_t k4, const uint8_t* a, int64_t lda,
                                           const int32_t* koff, const int8_t* bp,
                                           const int32_t* comp, int mrows, int ncols,
                                           const Epi& e, int64_t i0, int64_t j0, int kg) {
  if (koff && e.pf)
    return tile_vnni_rowpairs<MR, true>(k4, a, lda, koff, bp, comp, mrows, ncols, e, i0, j0, kg);
  tile_vnni_rowpairs<MR, false>(k4, a, lda, koff, bp, comp, mrows, ncols, e, i0, j0, kg);
}

// ---- variant 5: AMX (Sapphire Rapids and later), tdpbusd on 16 x 64-byte tiles -----------------
// The operand formats of avx512-vnni (A + 128 unsigned, B signed, comp = 128 * colsum(B)): a B
// panel [K4][NR][4] is already AMX's B layout, so a chunk of kg k-groups of 16 columns is a tile of
// kg rows of 64 bytes (row stride 4*NR), and A rows (stride lda) are the A tile's rows, 4*kg bytes
// each. MR x NR = 32 x 32 (two A tiles, two B tiles, four C tiles tmm0-3) or 16-row / 16-column
// halves for short GEMMs. One tdpbusd is 16 x 16 x 4*kg multiply-adds. The C tiles start at -comp
// (a tileloadd of one row with stride 0), are stored once to the stack, and the avx2 epilogue
// finishes them. The tile configuration (A columns and B rows depend on kg) is loaded once per
// thread and kg. Emul = true runs the same chunk walk with the AVX2 emulation of vpdpbusd in
// place of the tiles (D8_CPU_INT8_EMULATE_AMX=1), so the addressing and the koff runs are tested
// on any AVX2 CPU; only the tile instructions are not.
#define D8_TARGET_AMX __attribute__((target("amx-tile,amx-int8,avx2,fma")))
// Inline asm rather than the intrinsics: GCC 12's _tile_loadconfig / _tile_stored tell the
// compiler nothing about the memory they read or write (it dropped the stores of a stack config
// before ldtilecfg), so every one here clobbers memory. AT&T operand order: tdpbusd B, A, C.
#define D8_AMX_LOAD(t, base, stride)                                                  \
  __asm__ volatile("tileloadd (%0,%1,1), %%tmm" #t ::"r"(base), "r"(static_cast<int64_t>(stride)) \
                   : "memory")
#define D8_AMX_STORE(t, base, stride)                                                  \
  __asm__ volatile("tilestored %%tmm" #t ", (%0,%1,1)" ::"r"(base),                     \
                   "r"(static_cast<int64_t>(stride))                                   \
                   : "memory")
#define D8_AMX_DP(c, a, b) __asm__ volatile("tdpbusd %%tmm" #b ", %%tmm" #a ", %%tmm" #c ::)

struct alignas(64) AmxConfig {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

D8_TARGET_AMX inline void amx_configure(int kg) {
  static thread_local int configured = 0;  // kg of this thread's tile configuration, 0: none
  if (configured == kg) return;
  AmxConfig c{};
  c.palette = 1;
  for (int t = 0; t < 4; ++t) c.rows[t] = 16, c.colsb[t] = 64;  // C: 16 x 16 int32
  for (int t = 4; t < 6; ++t) c.rows[t] = 16, c.colsb[t] = static_cast<uint16_t>(4 * kg);  // A
  for (int t = 6; t < 8; ++t) c.rows[t] = static_cast<uint8_t>(kg), c.colsb[t] = 64;  // B
  __asm__ volatile("ldtilecfg %0" ::"m"(c) : "memory");
  configured = kg;
}

template <int MT, int NT, bool Emul>
D8_TARGET_AMX void tile_amx(int64_t k4, const uint8_t* a, int64_t lda, const int32_t* koff,
                            const int8_t* bp, const int32_t* comp, int mrows, int ncols,
                            const Epi& e, int64_t i0, int64_t j0, int kg) {
  constexpr int MR = 16 * MT, NR = 16 * NT, NV = NR / 8;
  const int64_t bstride = 4 * NR, nchunks = k4 / kg;
  alignas(64) __m256i acc[MR][NV];
  if constexpr (Emul) {
    start_at_neg_comp<MR, NV>(acc, comp);
    for (int64_t c = 0; c < nchunks; ++c) {
      const uint8_t* at = a + (koff ? static_cast<int64_t>(koff[c * kg]) : 4 * kg * c);
      const int8_t* bt = bp + c * kg * bstride;
      for (int i = 0; i < MR; ++i)
        for (int g = 0; g < kg; ++g) {
          const __m256i av = _mm256_set1_epi32(load_i32(at + i * lda + 4 * g));
          for (int v = 0; v < NV; ++v)
            acc[i][v] = dpbusd_emulated(
                acc[i][v], av, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bt + g * bstride + 32 * v)));
        }
    }
  } else {
    amx_configure(kg);
    alignas(64) int32_t c0[NR];
    for (int j = 0; j < NR; ++j) c0[j] = static_cast<int32_t>(0u - static_cast<uint32_t>(comp[j]));
    D8_AMX_LOAD(0, c0, 0);
    if constexpr (NT == 2) D8_AMX_LOAD(1, c0 + 16, 0);
    if constexpr (MT == 2) {
      D8_AMX_LOAD(2, c0, 0);
      if constexpr (NT == 2) D8_AMX_LOAD(3, c0 + 16, 0);
    }
    for (int64_t c = 0; c < nchunks; ++c) {
      const uint8_t* at = a + (koff ? static_cast<int64_t>(koff[c * kg]) : 4 * kg * c);
      const int8_t* bt = bp + c * kg * bstride;
      D8_AMX_LOAD(6, bt, bstride);
      if constexpr (NT == 2) D8_AMX_LOAD(7, bt + 64, bstride);
      D8_AMX_LOAD(4, at, lda);
      D8_AMX_DP(0, 4, 6);
      if constexpr (NT == 2) D8_AMX_DP(1, 4, 7);
      if constexpr (MT == 2) {
        D8_AMX_LOAD(5, at + 16 * lda, lda);
        D8_AMX_DP(2, 5, 6);
        if constexpr (NT == 2) D8_AMX_DP(3, 5, 7);
      }
    }
    char* out = reinterpret_cast<char*>(&acc[0][0]);
    D8_AMX_STORE(0, out, 4 * NR);
    if constexpr (NT == 2) D8_AMX_STORE(1, out + 64, 4 * NR);
    if constexpr (MT == 2) {
      D8_AMX_STORE(2, out + 16 * 4 * NR, 4 * NR);
      if constexpr (NT == 2) D8_AMX_STORE(3, out + 16 * 4 * NR + 64, 4 * NR);
    }
  }
  epilogue_256<MR, NV>(acc, mrows, ncols, e, i0, j0);
}

// Whether the CPU has AMX-INT8, the OS enables tile state (XCR0 bits 17-18) and Linux grants
// this process the tile data permission (arch_prctl ARCH_REQ_XCOMP_PERM, once per process).
bool amx_native() {
  static const bool ok = [] {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    if (!((d >> 24) & 1) || !((d >> 25) & 1)) return false;  // AMX-TILE, AMX-INT8
    if (!__get_cpuid(1, &a, &b, &c, &d) || !((c >> 27) & 1)) return false;  // OSXSAVE
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if (((lo >> 17) & 3) != 3) return false;
#if defined(__linux__)
    constexpr long kReqXcompPerm = 0x1023, kXfeatureTileData = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureTileData) == 0;
#else
    return false;
#endif
  }();
  return ok;
}
#endif  // D8_X86

}  // namespace

// ---- variant switch: per context (the context of the op's buffers) ---------------------------------

bool cpu_has(int variant) {
  switch (variant) {
    case kPortable:
      return true;
#if D8_X86
    case kAvx2:
      __builtin_cpu_init();
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case kAvxVnni:
      __builtin_cpu_init();
      return (__builtin_cpu_supports("avxvnni") || avxvnni_emulated()) &&
             __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case kVnni:
      __builtin_cpu_init();
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vnni");
    case kAmx:  // the tiles, or their emulation (needs AVX2 and FMA for it and the epilogue)
      __builtin_cpu_init();
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             (amx_native() || amx_emulated());
#endif
    default:
      return false;
  }
}

// An emulation switch: the variable is exactly "1".
static bool env_is_one(const char* name) {
  const char* v = std::getenv(name);
  return v && v[0] == '1' && v[1] == 0;
}
bool avxvnni_emulated() { return env_is_one("D8_CPU_INT8_EMULATE_AVXVNNI"); }
bool amx_emulated() { return env_is_one("D8_CPU_INT8_EMULATE_AMX"); }

int best_variant() {
  // Emulation never wins auto: only a CPU that reports avxvnni gets avx-vnni by default. amx is
  // never auto: on the Sapphire Rapids guest (kernels/cpu/README.md) avx512-vnni, which every
  // AMX CPU has, was faster on every ResNet-20 and LeNet-5 pass on two of three days measured,
  // so amx runs only when forced (d8_set_int8_kernel, CpuBackend.setInt8Kernel("amx")).
  static const int best =
      cpu_has(kVnni) ? kVnni
#if D8_X86
                          : (__builtin_cpu_supports("avxvnni") && cpu_has(kAvxVnni)) ? kAvxVnni
#endif
                          : cpu_has(kAvx2) ? kAvx2 : kPortable;
  return best;
}

int active_variant() {
  const d8_context* c = current_context();
  const int f = c ? c->int8_variant : kAuto;
  return f == kAuto ? best_variant() : f;
}

const char* variant_name(int variant) {
  switch (variant) {
    case kPortable: return "portable";
    case kAvx2: return "avx2";
    case kVnni: return "avx512-vnni";
    case kAvxVnni: return "avx-vnni";
    case kAmx: return "amx";
    default: return "auto";
  }
}

#if D8_X86
namespace {
// Rows per VNNI tile. Without a row count (m = 0: long GEMMs) 12. With one (the implicit forward:
// m = Q pixels of an output row; wgrad: m = Kg + 1 rows) the MR with the least work, counting a
// tile as MR broadcasts + 2 (B loads, loop) per k-group, up to the register file's limit: 32 zmm
// hold MR x NV accumulators + NV B vectors + 1 broadcast, so MR <= 28 for one 16-column vector
// and <= 14 for two. Taller tiles load each B vector for more rows, and an output row of 28 or
// 14 pixels is one tile.
constexpr int kVnniMaxMR1 = 28, kVnniMaxMR2 = 14;
// The shortest VNNI tile: 4 rows keep 4 (one vector) or 8 independent vpdpbusd chains in
// flight; rows of 5 pixels (the exact-window forward's interior of a 7x7 map) then waste no row.
constexpr int kVnniMinMR = 4;
int vnni_mr(int64_t m, int nv) {
  if (m <= 0) return kVnniMR;
  const int top = nv == 1 ? kVnniMaxMR1 : kVnniMaxMR2;
  int best = top;
  int64_t best_cost = INT64_MAX;
  for (int mr = top; mr >= kVnniMinMR; --mr) {
    const int64_t cost = (m + mr - 1) / mr * (mr + 2);
    if (cost < best_cost) best = mr, best_cost = cost;
  }
  return best;
}

// The MR-row tile (Pairs: the pairs tile's, NV = 2)
template <int MR, int NV, bool Pairs>
TileFn vnni_tile_of() {
  if constexpr (Pairs)
    return &tile_vnni_pairs<MR>;
  else
    return &tile_vnni<MR, NV>;
}
template <int NV, int MR, bool Pairs = false>
TileFn vnni_tile_from(int mr) {
  if constexpr (MR < kVnniMinMR) {
    (void)mr;
    return vnni_tile_of<kVnniMinMR, NV, Pairs>();
  } else {
    return mr == MR ? vnni_tile_of<MR, NV, Pairs>() : vnni_tile_from<NV, MR - 1, Pairs>(mr);
  }
}
template <bool Emul>
TileFn amx_tile(bool m1, bool n1) {
  return m1 ? (n1 ? &tile_amx<1, 1, Emul> : &tile_amx<1, 2, Emul>)
            : (n1 ? &tile_amx<2, 1, Emul> : &tile_amx<2, 2, Emul>);
}
template <int NV>
TileFn vnni_tile(int mr) {
  return vnni_tile_from<NV, NV == 1 ? kVnniMaxMR1 : kVnniMaxMR2>(mr);
}
D8_TARGET_VNNI void pair_panels_vnni(int8_t* bp, int64_t k4, int64_t panels) {
  for (int64_t pi = 0; pi < panels; ++pi)
    for (int64_t t = 0; t < k4; t += 2) {
      int8_t* q = bp + (pi * k4 + t) * 64;
      const __m512i r0 = _mm512_loadu_si512(q), r1 = _mm512_loadu_si512(q + 64);
      // r0 / r1: k-group t / t + 1 of columns 0-15 (lane j: column j). Vector 0: lane 2j
      // column 2j's k-group t, lane 2j + 1 column 2j + 1's k-group t + 1; vector 1: lane 2j
      // column 2j + 1's k-group t, lane 2j + 1 column 2j's k-group t + 1 (tile_vnni_pairs)
      const __m512i v0 = _mm512_mask_blend_epi32(0xAAAA, r0, r1);
      const __m512i v1 =
          _mm512_maskz_shuffle_epi32(0xFFFF, _mm512_mask_blend_epi32(0xAAAA, r1, r0), _MM_PERM_CDAB);
      _mm512_storeu_si512(q, v0);
      _mm512_storeu_si512(q + 64, v1);
    }
}
}  // namespace
#endif

void pair_panels(const Plan& p, int8_t* bp, int64_t k4, int64_t panels) {
#if D8_X86
  if (p.pairs) return pair_panels_vnni(bp, k4, panels);
#endif
  (void)p, (void)bp, (void)k4, (void)panels;
}

Plan plan_rowpairs(int64_t m) {
#if D8_X86
  if (active_variant() == kVnni && zmm_pairs()) {
    // 8, 16 or 24 rows (24: 24 accumulators, B and its two duplicates, the broadcast and the two
    // index vectors), whichever computes the fewest rows plus two a tile for m
    int mr = 24;
    if (m > 0)
      for (int h : {16, 8})
        if ((m + h - 1) / h * (h + 2) < (m + mr - 1) / mr * (mr + 2)) mr = h;
    Plan p{kVnni, mr, 16, 0x80,
           mr == 24 ? &tile_vnni_rowpairs_any<24>
                    : mr == 16 ? &tile_vnni_rowpairs_any<16> : &tile_vnni_rowpairs_any<8>};
    p.row_pairs = true;
    return p;
  }
#endif
  (void)m;
  return Plan{};
}

Plan plan_for(int64_t n, int64_t m, bool pairs) {
  const int v = active_variant();
#if D8_X86
  if (v == kAmx) {
    // 16-row tiles for GEMMs of at most 16 rows (wgrad with Kg <= 15), 16 columns for N <= 16
    static const bool native = amx_native();
    const bool m1 = m > 0 && m <= 16, n1 = n <= 16;
    const TileFn f = native ? amx_tile<false>(m1, n1) : amx_tile<true>(m1, n1);
    return {kAmx, m1 ? 16 : 32, n1 ? 16 : 32, 0x80, f, 16};
  }
  if (v == kVnni) {
    if (n <= 16 && pairs && zmm_pairs()) {
      const int mr = vnni_mr(m, 2);
      return {kVnni, mr, 16, 0x80, vnni_tile_from<2, kVnniMaxMR2, true>(mr), 1, false, true};
    }
    if (n <= 16) {
      const int mr = vnni_mr(m, 1);
      return {kVnni, mr, 16, 0x80, vnni_tile<1>(mr)};
    }
    const int mr = vnni_mr(m, 2);
    return {kVnni, mr, 32, 0x80, vnni_tile<2>(mr)};
  }
  if (v == kAvxVnni) {
    // the instruction when the CPU has it, else (D8_CPU_INT8_EMULATE_AVXVNNI=1) the emulation
    static const bool native = __builtin_cpu_supports("avxvnni");
    const TileFn f = native ? &tile_avxvnni<kAvxVnniMR, kAvxVnniNV, false>
                            : &tile_avxvnni<kAvxVnniMR, kAvxVnniNV, true>;
    return {kAvxVnni, kAvxVnniMR, 8 * kAvxVnniNV, 0x80, f, 1, true};
  }
  if (v == kAvx2) return {kAvx2, kAvx2MR, 8 * kAvx2NV, 0, &tile_avx2<kAvx2MR, kAvx2NV>, 1, true};
#endif
  (void)n;
  (void)m;
  return {kPortable, kPortMR, kPortNR, 0, &tile_portable};
}

// ---- packing ------------------------------------------------------------------------------------
// A B panel holds element (k-group t, column j) at t*4*nr + 4*j: from B's rows (4 bytes a k-group
// each) that is a transpose of 4-byte elements. Blocks of bw columns x bw k-groups run as one
// register transpose (bw = 16 with AVX-512: transpose16x16_4b, common.h; 4 with SSE2); edges and
// the k % 4 tail byte by byte.
// (The 4-byte copy per element this replaced ran at 2.25 GB/s on one Zen 4 thread, 11% of a VGG-16
// daint8 step at batch 16, whose 25088 x 4096 fc weights were packed twice a step.)
#if defined(__SSE2__)
// dst + t*dstride (t < 4) = the t-th 4-byte element of the 4 rows src + i*sstride (bytes).
inline void transpose4x4_4b(int8_t* dst, int64_t dstride, const int8_t* src, int64_t sstride) {
  const auto ld = [&](int i) {
    return _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i * sstride));
  };
  const __m128i a = ld(0), b = ld(1), c = ld(2), d = ld(3);
  const __m128i ab0 = _mm_unpacklo_epi32(a, b), ab1 = _mm_unpackhi_epi32(a, b);
  const __m128i cd0 = _mm_unpacklo_epi32(c, d), cd1 = _mm_unpackhi_epi32(c, d);
  const auto st = [&](int t, __m128i v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + t * dstride), v);
  };
  st(0, _mm_unpacklo_epi64(ab0, cd0));
  st(1, _mm_unpackhi_epi64(ab0, cd0));
  st(2, _mm_unpacklo_epi64(ab1, cd1));
  st(3, _mm_unpackhi_epi64(ab1, cd1));
}
#endif

void pack_b_rows(int8_t* bp, int32_t* comp, const int8_t* src, int64_t ld, int64_t n, int64_t k,
                 const Plan& p) {
  const int nr = p.nr;
  const int64_t k4 = k4_of(k), kfull = k / 4;
  const int64_t panels = (n + nr - 1) / nr;
#if defined(__AVX512F__)
  constexpr int bw = 16;  // nr is 16 or 32
#elif defined(__SSE2__)
  constexpr int bw = 4;
#else
  constexpr int bw = 1;
#endif
  const int64_t ts = bw > 1 ? kfull / bw * bw : 0;  // k-groups the register transposes take
  for (int64_t pi = 0; pi < panels; ++pi) {
    int8_t* panel = bp + pi * k4 * 4 * nr;
    // the panel's full blocks of bw columns, each down all k-groups: bw source rows streaming,
    // each row's line two lines ahead prefetched (Zen 4, one thread, 4096 x 25088: 4.0-4.2 ->
    // 4.2-4.4 GB/s; every block of k-groups in turn over the panel's blocks, nr rows streaming,
    // ran 1.4x slower)
    const int fb = static_cast<int>(std::clamp<int64_t>((n - pi * nr) / bw, 0, nr / bw));
#if defined(__AVX512F__) || defined(__SSE2__)
    for (int b = 0; b < fb; ++b) {
      const int8_t* s = src + (pi * nr + b * bw) * ld;
      for (int64_t t0 = 0; t0 < ts; t0 += bw) {
        if (t0 + 32 < kfull)
          for (int i = 0; i < bw; ++i) __builtin_prefetch(s + i * ld + 4 * (t0 + 32));
        int8_t* d = panel + t0 * 4 * nr + 4 * b * bw;
#if defined(__AVX512F__)
        transpose16x16_4b(d, 4 * nr, s + 4 * t0, ld);
#else
        transpose4x4_4b(d, 4 * nr, s + 4 * t0, ld);
#endif
      }
    }
#endif
    for (int j = 0; j < nr; ++j) {
      const int64_t col = pi * nr + j;
      int8_t* d = panel + 4 * j;
      if (col >= n) {
        for (int64_t t = 0; t < k4; ++t) std::memset(d + t * 4 * nr, 0, 4);
        comp[col] = 0;
        continue;
      }
      const int8_t* s = src + col * ld;
      int32_t sum = 0;
      for (int64_t t = j < fb * bw ? ts : 0; t < kfull; ++t) std::memcpy(d + t * 4 * nr, s + 4 * t, 4);
      if (kfull < k4) {
        int8_t tail[4] = {0, 0, 0, 0};
        for (int64_t kk = 4 * kfull; kk < k; ++kk) tail[kk - 4 * kfull] = s[kk];
        std::memcpy(d + kfull * 4 * nr, tail, 4);
      }
      if (p.flip)
        for (int64_t kk = 0; kk < k; ++kk) sum += s[kk];
      comp[col] = p.flip ? 128 * sum : 0;
    }
  }
}

// comp[j] = 128 * (sum of column j of the cnt k-groups of packed B), for every column of the
// panels (the VNNI offset's correction for this chunk). A column's four bytes of a k-group are
// adjacent, so one dot product with bytes of 1 sums them into the column's int32 lane.
void panel_comp(int32_t* comp, const int8_t* bp, int64_t cnt, int nr, int64_t panels) {
  for (int64_t pi = 0; pi < panels; ++pi) {
    const int8_t* b = bp + pi * cnt * 4 * nr;
    int32_t* cp = comp + pi * nr;
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
    const __m512i one8 = _mm512_set1_epi8(1);
    for (int v = 0; v < nr / 16; ++v) {
      __m512i acc[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
                        _mm512_setzero_si512()};  // four chains: dpbusd's latency
      int64_t t = 0;
      for (; t + 4 <= cnt; t += 4)
        for (int u = 0; u < 4; ++u)
          acc[u] = _mm512_dpbusd_epi32(acc[u], one8, _mm512_loadu_si512(b + (t + u) * 4 * nr + 64 * v));
      for (; t < cnt; ++t)
        acc[0] = _mm512_dpbusd_epi32(acc[0], one8, _mm512_loadu_si512(b + t * 4 * nr + 64 * v));
      const __m512i sum =
          _mm512_add_epi32(_mm512_add_epi32(acc[0], acc[1]), _mm512_add_epi32(acc[2], acc[3]));
      _mm512_storeu_si512(cp + 16 * v, _mm512_maskz_slli_epi32(__mmask16(0xFFFF), sum, 7));
    }
#elif defined(__AVX2__)
    const __m256i one8 = _mm256_set1_epi8(1), one16 = _mm256_set1_epi16(1);
    for (int v = 0; v < nr / 8; ++v) {
      __m256i acc = _mm256_setzero_si256();
      for (int64_t t = 0; t < cnt; ++t) {
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + t * 4 * nr + 32 * v));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(one8, x), one16));
      }
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(cp + 8 * v), _mm256_slli_epi32(acc, 7));
    }
#elif defined(__SSSE3__)
    const __m128i one8 = _mm_set1_epi8(1), one16 = _mm_set1_epi16(1);
    for (int v = 0; v < nr / 4; ++v) {
      __m128i acc = _mm_setzero_si128();
      for (int64_t t = 0; t < cnt; ++t) {
        const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + t * 4 * nr + 16 * v));
        acc = _mm_add_epi32(acc, _mm_madd_epi16(_mm_maddubs_epi16(one8, x), one16));
      }
      _mm_storeu_si128(reinterpret_cast<__m128i*>(cp + 4 * v), _mm_slli_epi32(acc, 7));
    }
#else
    for (int j = 0; j < nr; ++j) {
      int32_t sum = 0;
      for (int64_t t = 0; t < cnt; ++t)
        for (int u = 0; u < 4; ++u) sum += b[t * 4 * nr + 4 * j + u];
      cp[j] = 128 * sum;
    }
#endif
  }
}

void pack_b_cols(int8_t* bp, int32_t* comp, const int8_t* src, int64_t ld, int64_t n, int64_t k,
                 const Plan& p) {
  const int nr = p.nr;
  const int64_t k4 = k4_of(k);
  const int64_t panels = (n + nr - 1) / nr;
  if (comp)
    for (int64_t j = 0; j < panels * nr; ++j) comp[j] = 0;
  // Blocks of kTB k-groups (4*kTB source rows), each across all panels, so the panels of a block
  // read the same source lines and pages; a panel's lines written whole; comp added up per block
  // from the packed lines while they are in cache. (k-groups outer and panels inner, with comp
  // summed from the source rows afterwards, read B twice and walked every panel per k-group: 6.8%
  // of a VGG-16 daint8 step at batch 16 in perf, 4.3% this way with one block. The blocks matter
  // in the streamed runs of 512 columns, fwd_stream_b: that fc's dgrad 28.7-29.3 ms with one
  // block, 17.5-17.7 ms with blocks of 128, 2 threads, alternated.)
  constexpr int64_t kTB = 128;
  for (int64_t tb = 0; tb < k4; tb += kTB) {
    const int64_t te = std::min(k4, tb + kTB);
    for (int64_t pi = 0; pi < panels; ++pi) {
      int8_t* panel = bp + pi * k4 * 4 * nr;
      for (int64_t t = tb; t < te; ++t) {
        // the four source rows of this k-group (null past k: zeros)
        const int8_t* rows[4];
        for (int u = 0; u < 4; ++u) rows[u] = 4 * t + u < k ? src + (4 * t + u) * ld : nullptr;
        int8_t* d = panel + t * 4 * nr;
        for (int jj = 0; jj < nr; jj += 16) {
          const int64_t j0 = pi * nr + jj;
          const int64_t valid = std::min<int64_t>(16, n - j0);  // columns of this block inside B
#if defined(__SSE2__)
          __m128i r[4];
          for (int u = 0; u < 4; ++u) {
            if (!rows[u] || valid <= 0) {
              r[u] = _mm_setzero_si128();
            } else if (valid == 16) {
              r[u] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[u] + j0));
            } else {  // staged: never read past column n
              alignas(16) int8_t tmp[16] = {};
              std::memcpy(tmp, rows[u] + j0, static_cast<size_t>(valid));
              r[u] = _mm_load_si128(reinterpret_cast<const __m128i*>(tmp));
            }
          }
          interleave4x16(d + 4 * jj, r[0], r[1], r[2], r[3]);
#else
          for (int j = 0; j < 16; ++j)
            for (int u = 0; u < 4; ++u)
              d[4 * (jj + j) + u] = (rows[u] && j < valid) ? rows[u][j0 + j] : 0;
#endif
        }
      }
      if (comp && p.flip) {
        int32_t part[32];  // nr <= 32
        panel_comp(part, panel + tb * 4 * nr, te - tb, nr, 1);
        for (int j = 0; j < nr; ++j) comp[pi * nr + j] += part[j];
      }
    }
  }
}

void pack_a_rows(uint8_t* a, int64_t lda, const int8_t* src, int64_t ld, int64_t m, int64_t k,
                 uint8_t flip, int64_t mpad) {
  for (int64_t i = 0; i < m; ++i) {
    uint8_t* __restrict d = a + i * lda;
    const uint8_t* __restrict s = reinterpret_cast<const uint8_t*>(src + i * ld);
    for (int64_t kk = 0; kk < k; ++kk) d[kk] = s[kk] ^ flip;
    for (int64_t kk = k; kk < lda; ++kk) d[kk] = flip;
  }
  if (mpad > m) std::memset(a + m * lda, flip, static_cast<size_t>((mpad - m) * lda));
}


void pack_a_cols(uint8_t* a, int64_t lda, const int8_t* src, int64_t ld, int64_t m, int64_t k,
                 uint8_t flip, int64_t mpad) {
  // a[i, kk] = src[kk, i]: 16 x 16 blocks (SSE2), scalar edges.
  const uint8_t* s = reinterpret_cast<const uint8_t*>(src);
  int64_t i0 = 0;
#if defined(__SSE2__)
  const __m128i f = _mm_set1_epi8(static_cast<char>(flip));
  const int64_t mf = m / 16 * 16, kf = k / 16 * 16;
  for (; i0 < mf; i0 += 16) {
    for (int64_t k0 = 0; k0 < kf; k0 += 16)
      transpose16x16_xor(a + i0 * lda + k0, lda, src + k0 * ld + i0, ld, f);
    for (int64_t i = i0; i < i0 + 16; ++i)
      for (int64_t kk = kf; kk < k; ++kk) a[i * lda + kk] = s[kk * ld + i] ^ flip;
  }
#endif
  for (int64_t i = i0; i < m; ++i)
    for (int64_t kk = 0; kk < k; ++kk) a[i * lda + kk] = s[kk * ld + i] ^ flip;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t kk = k; kk < lda; ++kk) a[i * lda + kk] = flip;
  if (mpad > m) std::memset(a + m * lda, flip, static_cast<size_t>((mpad - m) * lda));
}

void gemm_tiles(const Plan& p, int64_t m, int64_t n, int64_t k, const uint8_t* a, int64_t lda,
                const int8_t* bp, const int32_t* comp, const Epi& e, const int32_t* koff,
                int64_t bk4) {
  const int64_t k4 = k4_of(k);
  const int64_t panel_bytes = (bk4 > 0 ? bk4 : k4) * 4 * p.nr;
  // amx chunks: kg | k4 (with koff the caller chose kg for its runs, see set_runs)
  const int kg = koff ? p.kg : divisor_at_most(k4, p.kg);
  // The tiles read the caller's Epi in place, unless they take prefetch shares: a copy of the
  // whole struct (two ymm loads) right after the caller wrote it field by field missed store
  // forwarding, ~6% of a 16 -> 32 stride-2 dgrad whose phase rows are GEMMs of one tile (perf).
  const Epi* ep = &e;
  Epi et;
  int64_t tix = 0;
  PrefetchShares shares(nullptr, 0, 0, false);  // one share of e.pf a tile
  if (e.pf) {
    et.mode = e.mode;
    et.c = e.c;
    et.ldc = e.ldc;
    et.col_scale = e.col_scale;
    et.bias = e.bias;
    ep = &et;
    shares = PrefetchShares(e.pf, e.pf_bytes, ((n + p.nr - 1) / p.nr) * ((m + p.mr - 1) / p.mr),
                            false);
  }
  for (int64_t j = 0; j < n; j += p.nr) {
    const int8_t* b = bp + (j / p.nr) * panel_bytes;
    const int nc = static_cast<int>(std::min<int64_t>(p.nr, n - j));
    for (int64_t i = 0; i < m; i += p.mr, ++tix) {
      if (e.pf) {  // this tile's share
        et.pf = static_cast<const char*>(e.pf) + shares.begin(tix);
        et.pf_bytes = shares.end(tix) - shares.begin(tix);
      }
      p.tile(k4, a + i * lda, lda, koff, b, comp + j, static_cast<int>(std::min<int64_t>(p.mr, m - i)),
             nc, *ep, i, j, kg);
    }
  }
}

}  // namespace i8
}  // namespace d8cpu

using namespace d8cpu;

extern "C" int32_t d8_set_int8_kernel(d8_context* ctx, int32_t variant) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    if (int32_t e = check_context(fn, ctx)) return e;
    if (variant < i8::kAuto || variant > i8::kAmx)
      return fail(D8_ERR_INVALID_ARGUMENT,
                  "%s: variant must be 0 (auto), 1 (portable), 2 (avx2), 3 (avx512-vnni), 4 "
                  "(avx-vnni) or 5 (amx), got %d",
                  fn, variant);
    if (variant != i8::kAuto && !i8::cpu_has(variant))
      return fail(D8_ERR_UNSUPPORTED, "%s: this CPU cannot run the %s int8 kernel (variant %d)",
                  fn, i8::variant_name(variant), variant);
    ctx->int8_variant = variant;
    return D8_OK;
  });
}

extern "C" int32_t d8_int8_kernel_name(d8_context* ctx, char* out, int32_t capacity) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    if (int32_t e = check_context(fn, ctx)) return e;
    return write_string(fn, out, capacity, i8::variant_name(i8::active_variant()));
  });
}

// c int32 [m, n] = a int8 [m, k] . b int8 [n, k]^T
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
    const i8::Plan P = i8::plan_for(n);
    const int64_t k4 = i8::k4_of(k), lda = 4 * k4;
    // Packed B and comp on the calling thread's scratch; per-thread A blocks.
    const int64_t bpb = round_up(i8::packb_bytes(n, k, P.nr), 64);
    const int64_t cl = i8::comp_len(n, P.nr);
    char* bbuf = reinterpret_cast<char*>(scratch(kSlotConvB, static_cast<size_t>((bpb + 4 * cl) / 4 + 16)));
    int8_t* bp = reinterpret_cast<int8_t*>(bbuf);
    int32_t* comp = reinterpret_cast<int32_t*>(bbuf + bpb);
    i8::pack_b_rows(bp, comp, static_cast<const int8_t*>(b->data), k, n, k, P);

    const int nt = threads_for(m * int64_t{n} * k, int64_t{1} << 18);
    int64_t ch = std::max<int64_t>(P.mr, (96 * 1024 / lda) / P.mr * P.mr);
    ch = std::min(ch, round_up(ceil_div(m, nt), P.mr));
    const int64_t nchunks = ceil_div(m, ch);
    const int64_t abytes = round_up((ch + P.mr) * lda, 64);
    uint8_t* abuf = reinterpret_cast<uint8_t*>(scratch(kSlotConvCol, static_cast<size_t>(nt * abytes / 4)));
    const int8_t* pa = static_cast<const int8_t*>(a->data);
    int32_t* pc = static_cast<int32_t*>(c->data);
    parallel(nt, [&](int t, int T) {
      uint8_t* at = abuf + t * abytes;
      for (int64_t ci = nchunks * t / T; ci < nchunks * (t + 1) / T; ++ci) {
        const int64_t m0 = ci * ch, cnt = std::min(ch, m - m0);
        i8::pack_a_rows(at, lda, pa + m0 * k, k, cnt, k, P.flip, round_up(cnt, P.mr));
        const i8::Epi e{i8::kStoreI32, pc + m0 * n, n, nullptr, nullptr};
        i8::gemm_block(P, cnt, n, k, at, lda, bp, comp, e);
      }
    });
    return D8_OK;
  });
}
