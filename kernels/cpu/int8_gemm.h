// int8_gemm.h: the int8 x int8 -> int32 GEMM engine behind d8_gemm_i8 and the int8 convolutions
// (int8_conv.cpp). Internal to the cpu backend, not part of the ABI.
//
//   C[M, N] = A[M, K] . B[N, K]^T      both operands reduce along contiguous K
//
// Operand formats, shared by every variant (only the micro-kernel differs):
//   A   row-major bytes, row stride lda >= round_up(K, 4); rows must be readable up to a multiple
//       of the plan's MR (the extra rows' results are never stored). Each byte holds a ^ flip:
//       the AVX-512 VNNI variant stores a + 128 (flip 0x80, the unsigned operand of vpdpbusd),
//       portable and AVX2 store a as is (flip 0). Bytes between K and lda are don't-care.
//   Bp  B packed in panels of NR columns; panel p holds columns p*NR .. p*NR+NR-1 as
//       [K4][NR][4] int8 (K4 = round_up(K, 4) / 4: four consecutive k of one column form the
//       32-bit group vpdpbusd / pmaddubsw reduce), zero past N and past K.
//   comp [round_up(N, NR)] int32: 128 * sum_k B[j, k] when flip == 0x80 (the +128 offset on A adds
//       exactly that to every dot product; the micro-kernel starts its accumulators at -comp),
//       zeros otherwise.
// Products are exact: |a|, |b| <= 127 (the quantizer never writes -128). int32 wraps modulo 2^32,
// so the +128 offset is exact whenever the true sum fits in int32 (K <= 133,144).
#ifndef DAINT8_CPU_INT8_GEMM_H
#define DAINT8_CPU_INT8_GEMM_H

#include <cstdint>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__AVX512BW__)
#include <immintrin.h>
#endif

namespace d8cpu {
namespace i8 {

enum Variant : int { kAuto = 0, kPortable = 1, kAvx2 = 2, kVnni = 3, kAvxVnni = 4, kAmx = 5 };

bool cpu_has(int variant);          // whether this CPU can run the variant
bool avxvnni_emulated();            // D8_CPU_INT8_EMULATE_AVXVNNI=1: avx-vnni runs emulated (tests)
bool amx_emulated();                // D8_CPU_INT8_EMULATE_AMX=1: amx runs emulated (tests)
int best_variant();                 // best variant this CPU has
int active_variant();               // the current context's variant, or best_variant() when auto
const char* variant_name(int variant);

// What the micro-kernel does with its finished MR x NR int32 tile.
enum EpiMode : int {
  kStoreI32 = 0,  // C int32 = acc
  kAddI32 = 1,    // C int32 += acc
  kStoreF32 = 2,  // C f32 = acc * col_scale[j] (+ bias[j])
  kAddF32 = 3,    // C f32 += acc * col_scale[j] (rows may overlap: each row adds in program order)
};
struct Epi {
  int mode;
  void* c;                 // C[0, 0] of this GEMM (int32 or f32), row stride ldc elements
  int64_t ldc;
  const float* col_scale;  // kStoreF32: [N]
  const float* bias;       // kStoreF32: [N] or null
  // What the caller reads next, [pf, pf + pf_bytes), prefetched into L2 a line a k-group while
  // the GEMM runs, each tile taking its share (null: none). The avx2, avx-vnni and avx512-vnni
  // tiles of implicit GEMMs (koff) do it; the others ignore it.
  const void* pf = nullptr;
  int64_t pf_bytes = 0;
};

// One micro-tile: rows i0 .. i0+mrows-1 and columns j0 .. j0+ncols-1 of C, full K.
// a = A row i0, bp = the panel holding column j0, comp = comp + j0. Row i's k-group t is the 4
// bytes at a + i*lda + 4*t, or, with a koff table (implicit GEMM: A read in place from a padded
// input, no im2col copy), at a + i*lda + koff[t]. Every row a tile reads (MR of them, even past
// mrows) must be readable. kg (amx only; the others ignore it): the reduction runs in chunks of kg
// k-groups (kg divides k4), and with koff the kg groups of a chunk are contiguous, so chunk c reads
// the 4*kg bytes at koff[c*kg] of each row.
using TileFn = void (*)(int64_t k4, const uint8_t* a, int64_t lda, const int32_t* koff,
                        const int8_t* bp, const int32_t* comp, int mrows, int ncols, const Epi& e,
                        int64_t i0, int64_t j0, int kg);

struct Plan {
  int variant;
  int mr, nr;     // micro-tile rows / columns
  uint8_t flip;   // XOR applied to A bytes (0x80 or 0)
  TileFn tile;
  int kg = 1;     // amx: k-groups per tile chunk, at most 16 (one 64-byte tile row); others 1
  bool exact_rows = false;  // a GEMM's last, partial tile multiplies only its rows (avx2)
  // avx512-vnni, 16 columns (plan_for's pairs): the tile runs over pairs of k-groups, B's packed
  // panels converted by pair_panels after packing; every GEMM's k4 even, from an even k-group of
  // B, and with koff k-groups 2p and 2p + 1 contiguous (the implicit GEMMs: window rows or taps of
  // a multiple of 8 bytes). The tile ignores Epi::pf.
  bool pairs = false;
  // avx512-vnni, 16 columns, A rows 4 bytes apart (plan_rowpairs): C's row pairs interleaved
  bool row_pairs = false;
};

// The largest divisor of n that is at most cap (n, cap >= 1).
inline int divisor_at_most(int64_t n, int cap) {
  for (int d = cap; d > 1; --d)
    if (n % d == 0) return d;
  return 1;
}
// With a koff table whose k-groups come in contiguous runs of `run` groups (a window row of the
// implicit forward, a tap of the phase dgrad): amx chunks must not straddle a run.
inline void set_runs(Plan& p, int64_t run) { p.kg = divisor_at_most(run, p.kg); }
// The active variant's tile for an N-column problem (VNNI: 16 or 32 columns). m > 0: the GEMM has
// only m rows (wgrad), pick the tile height that wastes the least; 0: many rows.
// pairs: the caller can run a pairs plan (above); it gets one on avx512-vnni where zmm_pairs()
// (common.h: cores that issue two vpdpbusd zmm a clock).
Plan plan_for(int64_t n, int64_t m = 0, bool pairs = false);

// The row-pairs tile's plan (int8_gemm.cpp, tile_vnni_rowpairs) for a GEMM of m rows (0: many)
// with lda = 4 and 16 columns, where the variant is avx512-vnni and zmm_pairs(); else a plan with
// row_pairs false and no tile (the caller keeps its own).
Plan plan_rowpairs(int64_t m);

// ---- packing ------------------------------------------------------------------------------------
inline int64_t k4_of(int64_t k) { return (k + 3) / 4; }
// Bytes of Bp for an [N, K] operand and int32 entries of comp.
inline int64_t packb_bytes(int64_t n, int64_t k, int nr) {
  return (n + nr - 1) / nr * nr * k4_of(k) * 4;
}
inline int64_t comp_len(int64_t n, int nr) { return (n + nr - 1) / nr * nr; }

// B given as rows: B[j, k] = src[j*ld + k] (weights [K_out][RSC] in fprop, d8_gemm_i8's b).
void pack_b_rows(int8_t* bp, int32_t* comp, const int8_t* src, int64_t ld, int64_t n, int64_t k,
                 const Plan& p);
// B given as columns: B[j, k] = src[k*ld + j] (W^T in dgrad, col^T in wgrad). comp may be null
// (the caller then accounts for the offset itself, as wgrad does with its row of ones).
void pack_b_cols(int8_t* bp, int32_t* comp, const int8_t* src, int64_t ld, int64_t n, int64_t k,
                 const Plan& p);
// A pairs plan's B: each of `panels` packed panels (k4 k-groups, k4 even) re-laid in place so
// that pair p (k-groups 2p, 2p + 1) is two 64-byte vectors, the even columns and the odd ones,
// each column's two k-groups adjacent. A no-op for other plans; comp is unchanged.
void pair_panels(const Plan& p, int8_t* bp, int64_t k4, int64_t panels);
// comp[j] = 128 * (sum of column j of the cnt k-groups) for every column of `panels` packed
// panels of nr columns, cnt k-groups each (the +128 offset's correction).
void panel_comp(int32_t* comp, const int8_t* bp, int64_t cnt, int nr, int64_t panels);
// A rows: a[i*lda + k] = src[i*ld + k] ^ flip for i < m, k < K; bytes K .. lda-1 and the rows
// m .. mpad-1 (mpad >= round_up(m, MR): every row a tile may read) are filled with flip.
void pack_a_rows(uint8_t* a, int64_t lda, const int8_t* src, int64_t ld, int64_t m, int64_t k,
                 uint8_t flip, int64_t mpad);
// A transposed: a[i*lda + k] = src[k*ld + i] ^ flip (dy^T in wgrad); same padding.
void pack_a_cols(uint8_t* a, int64_t lda, const int8_t* src, int64_t ld, int64_t m, int64_t k,
                 uint8_t flip, int64_t mpad);

#if defined(__SSE2__)
// Four rows of 16 bytes -> 64 bytes where column c's four bytes are adjacent (r0[c] r1[c] r2[c]
// r3[c]): 16 columns of one k-group of a B panel.
inline void interleave4x16(int8_t* dst, __m128i r0, __m128i r1, __m128i r2, __m128i r3) {
  const __m128i l01 = _mm_unpacklo_epi8(r0, r1), h01 = _mm_unpackhi_epi8(r0, r1);
  const __m128i l23 = _mm_unpacklo_epi8(r2, r3), h23 = _mm_unpackhi_epi8(r2, r3);
  __m128i* o = reinterpret_cast<__m128i*>(dst);
  _mm_storeu_si128(o + 0, _mm_unpacklo_epi16(l01, l23));
  _mm_storeu_si128(o + 1, _mm_unpackhi_epi16(l01, l23));
  _mm_storeu_si128(o + 2, _mm_unpacklo_epi16(h01, h23));
  _mm_storeu_si128(o + 3, _mm_unpackhi_epi16(h01, h23));
}

// The same from rows src, src + ld, src + 2*ld, src + 3*ld, every byte XORed with flip. (One
// AVX-512 VBMI vpermb for the whole 4 x 16 transpose measured within 1-2% of the unpacks in the
// wgrad's packs on the Zen 4 guest: they wait on their loads, not on the shuffles. Not kept.)
inline void interleave4x16_rows(int8_t* dst, const int8_t* src, int64_t ld, uint8_t flip) {
  const __m128i f = _mm_set1_epi8(static_cast<char>(flip));
  const auto row = [&](int64_t i) {
    return _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i * ld)), f);
  };
  interleave4x16(dst, row(0), row(1), row(2), row(3));
}
#endif

#if defined(__AVX512BW__)
// The same for 64 bytes of each row: four 64-byte blocks, block L holding columns 16L .. 16L + 15
// as interleave4x16_rows writes them (out[L] = the 64 bytes it would write for src + 16L). The
// byte and word unpacks work within 128-bit lanes; a 4 x 4 transpose of the lanes then gathers
// each block (maskz_ forms with full masks: the plain shuffle trips -Wmaybe-uninitialized in GCC
// 12's header). A quarter of the loads and stores of four 16-byte interleaves, and about a third
// of their instructions (the wgrad's x and dy re-layouts).
inline void interleave4x64_rows(__m512i out[4], const int8_t* src, int64_t ld, __m512i flip) {
  const auto row = [&](int64_t i) {
    return _mm512_xor_si512(_mm512_loadu_si512(src + i * ld), flip);
  };
  const __m512i r0 = row(0), r1 = row(1), r2 = row(2), r3 = row(3);
  const __m512i l01 = _mm512_unpacklo_epi8(r0, r1), h01 = _mm512_unpackhi_epi8(r0, r1);
  const __m512i l23 = _mm512_unpacklo_epi8(r2, r3), h23 = _mm512_unpackhi_epi8(r2, r3);
  // lane L of a, b, c, d: 16-byte parts 0, 1, 2, 3 of block L
  const __m512i a = _mm512_unpacklo_epi16(l01, l23), b = _mm512_unpackhi_epi16(l01, l23);
  const __m512i c = _mm512_unpacklo_epi16(h01, h23), d = _mm512_unpackhi_epi16(h01, h23);
  const __m512i ab01 = _mm512_maskz_shuffle_i64x2(0xFF, a, b, 0x44);  // a.0 a.1 b.0 b.1
  const __m512i ab23 = _mm512_maskz_shuffle_i64x2(0xFF, a, b, 0xEE);  // a.2 a.3 b.2 b.3
  const __m512i cd01 = _mm512_maskz_shuffle_i64x2(0xFF, c, d, 0x44);
  const __m512i cd23 = _mm512_maskz_shuffle_i64x2(0xFF, c, d, 0xEE);
  out[0] = _mm512_maskz_shuffle_i64x2(0xFF, ab01, cd01, 0x88);  // a.0 b.0 c.0 d.0
  out[1] = _mm512_maskz_shuffle_i64x2(0xFF, ab01, cd01, 0xDD);  // a.1 b.1 c.1 d.1
  out[2] = _mm512_maskz_shuffle_i64x2(0xFF, ab23, cd23, 0x88);
  out[3] = _mm512_maskz_shuffle_i64x2(0xFF, ab23, cd23, 0xDD);
}
#endif

#if defined(__SSE2__)
// 16 x 16 byte transpose: out row i (stride ldo) = column i of the 16 input rows (stride ldi),
// XORed with f.
inline void transpose16x16_xor(uint8_t* out, int64_t ldo, const int8_t* in, int64_t ldi,
                               __m128i f) {
  __m128i a[16], b[16];
  for (int i = 0; i < 16; ++i) a[i] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i * ldi));
  for (int i = 0; i < 8; ++i) {  // 16-bit elements: rows (2i, 2i+1), columns 0-7 / 8-15
    b[2 * i] = _mm_unpacklo_epi8(a[2 * i], a[2 * i + 1]);
    b[2 * i + 1] = _mm_unpackhi_epi8(a[2 * i], a[2 * i + 1]);
  }
  for (int q = 0; q < 4; ++q) {  // 32-bit elements: rows 4q..4q+3, columns in fours
    a[4 * q + 0] = _mm_unpacklo_epi16(b[4 * q], b[4 * q + 2]);
    a[4 * q + 1] = _mm_unpackhi_epi16(b[4 * q], b[4 * q + 2]);
    a[4 * q + 2] = _mm_unpacklo_epi16(b[4 * q + 1], b[4 * q + 3]);
    a[4 * q + 3] = _mm_unpackhi_epi16(b[4 * q + 1], b[4 * q + 3]);
  }
  for (int h = 0; h < 2; ++h)  // 64-bit elements: rows 8h..8h+7, columns 2m, 2m+1
    for (int q = 0; q < 4; ++q) {
      b[8 * h + 2 * q] = _mm_unpacklo_epi32(a[8 * h + q], a[8 * h + 4 + q]);
      b[8 * h + 2 * q + 1] = _mm_unpackhi_epi32(a[8 * h + q], a[8 * h + 4 + q]);
    }
  for (int m = 0; m < 8; ++m) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + (2 * m) * ldo),
                     _mm_xor_si128(_mm_unpacklo_epi64(b[m], b[8 + m]), f));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + (2 * m + 1) * ldo),
                     _mm_xor_si128(_mm_unpackhi_epi64(b[m], b[8 + m]), f));
  }
}
#endif

// Single-threaded C[0:m, 0:n] over a packed A block (m rows) and all of Bp. With koff (k4_of(k)
// entries), A is read in place as described at TileFn. bk4: k-groups per packed B panel (the panel
// stride; 0 = k4_of(k)): a GEMM over k-groups t0 .. t0 + k/4 of a B packed with bk4 passes
// bp + 4 * t0 * p.nr (and the comp of those k-groups).
void gemm_tiles(const Plan& p, int64_t m, int64_t n, int64_t k, const uint8_t* a, int64_t lda,
                const int8_t* bp, const int32_t* comp, const Epi& e, const int32_t* koff,
                int64_t bk4);
// A GEMM of one tile (the stride-2 dgrad's phase rows: 14 x 16 x 32..128 at 16 -> 32 channels, 56
// of them per image) calls the tile directly: the out-of-line loop's setup showed as 4.8% of that
// pass (perf).
inline void gemm_block(const Plan& p, int64_t m, int64_t n, int64_t k, const uint8_t* a,
                       int64_t lda, const int8_t* bp, const int32_t* comp, const Epi& e,
                       const int32_t* koff = nullptr, int64_t bk4 = 0) {
  if (m <= p.mr && n <= p.nr && !e.pf && (koff || p.kg == 1))
    return p.tile(k4_of(k), a, lda, koff, bp, comp, static_cast<int>(m), static_cast<int>(n), e, 0,
                  0, p.kg);
  gemm_tiles(p, m, n, k, a, lda, bp, comp, e, koff, bk4);
}

}  // namespace i8
}  // namespace d8cpu

#endif  // DAINT8_CPU_INT8_GEMM_H
