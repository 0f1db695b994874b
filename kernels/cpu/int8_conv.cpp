// int8_conv.cpp: INT8 convolutions (PAPER.md): d8_conv2d_fwd_i8, d8_conv2d_dgrad_i8,
// d8_conv2d_wgrad_i8. int8 x int8 -> int32 in the GEMMs of int8_gemm.h, rescaled to f32 after.
//
// Layouts: x [N, H, W, C] int8, w [K, R, S, C/G] int8 (OHWI), dy [N, P, Q, K] int8; y, dx, dw f32.
// Implicit-GEMM mapping, per group g (Cg = C/G, Kg = K/G, KD = R*S*Cg, M = N*P*Q). Every GEMM is
// C[rows, cols] = A[rows, red] . B[cols, red]^T, both operands reducing along contiguous bytes:
//   fprop: y[M, Kg]      = col[M, KD] . W_g[Kg, KD]^T          (rows M, cols Kg, red KD)
//          Ungrouped convs read col in place (implicit GEMM, fwd_implicit: a padded copy of each
//          image and a k-group offset table); grouped and 1x1 convs gather an im2col chunk (the
//          VNNI +128 offset fused into the gather). B = W_g packed once;
//          epilogue y = acc * x_scale[0] * w_scale[k or 0] (+ bias[k]).
//   dgrad: stride 1 and pad <= kernel-1: dx = fprop(dy, W') with W'[c, r', s', kk] =
//          W[kk, R-1-r', S-1-s', c] and padding R-1-pad (a gather: rows parallelize freely).
//          Strided, ungrouped: one implicit GEMM per phase of dx (dgrad_phases), written in place.
//          Otherwise dcol[M, KD] = dy[M, Kg] . (W_g^T)[KD, Kg]^T (rows M, cols KD, red Kg: the
//          reduction runs over the output channels, so W is packed transposed), then col2im
//          scatter-adds dcol into dx, each thread owning whole images.
//          epilogue acc * dy_scale[0] * w_scale[0].
//   wgrad: dW_g[Kg, KD]  = dy^T[Kg, M] . col^T[KD, M]^T        (rows Kg, cols KD, red M)
//          M is not contiguous in NHWC: per chunk of MC rows dy is transposed to [Kg][MC] (A, 16x16
//          byte-block transposes) and the chunk's col is interleaved four rows at a time into B
//          panels ([MC/4][NR][4] is exactly a 4-row byte interleave); when Cg % 16 == 0 the panels
//          are gathered straight from x (no col matrix). The micro-kernel thus still reduces
//          contiguous bytes. VNNI offset: each group's A gets one extra row of ones, so the GEMM
//          also yields colsum(B) and no per-chunk column sums are needed. int32 partials cover at
//          most 65536 rows (65536 * 127 * 127 < 2^31), then go into a per-thread double sum:
//          integers below 2^53 add exactly, so dW does not depend on the chunking or the thread
//          count. epilogue dw = sum * dy_scale[k or 0] * x_scale[0].
// 1x1 stride-1 unpadded convs skip the im2col gather: A is x's rows (one XOR-copy per row that adds
// the offset and pads K to 4), and wgrad packs B straight from x.
// Depthwise (G == C == K) uses direct int32 loops over the contiguous channel dimension.
// Preconditions: operands in [-127, 127] (the quantizer never writes -128).
#include "common.h"
#include "conv_geom.h"
#include "int8_gemm.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#elif defined(__SSSE3__)
#include <tmmintrin.h>
#endif

namespace d8cpu {
namespace {

// Scratch (common.h) in bytes, 64-byte aligned.
template <class T>
T* scratch_bytes(int slot, int64_t bytes) {
  return reinterpret_cast<T*>(scratch(slot, static_cast<size_t>((bytes + 3) / 4)));
}

constexpr int64_t kAChunkBytes = 96 * 1024;        // fprop / dgrad A block per thread
constexpr int64_t kAChunkBytesL1 = 16 * 1024;      // the same when B is one panel
constexpr int64_t kWgradChunkBytes = 192 * 1024;   // wgrad col + packed B + A per thread
constexpr int64_t kMaxRowsI32 = 65536;             // wgrad: rows per int32 partial

// d[i] = s[i] ^ flip; 64 bytes at a time where AVX-512 BW is compiled in, else 16, the tail as
// one overlapping block. (The implicit forward's padding copy is 9-12% of a 16-channel forward;
// 64-byte steps took 1-3% off the whole pass.)
inline void xor_copy(uint8_t* __restrict d, const int8_t* __restrict s, int64_t n, uint8_t flip) {
#if defined(__AVX512BW__)
  if (n >= 64) {
    const __m512i f = _mm512_set1_epi8(static_cast<char>(flip));
    int64_t i = 0;
    for (; i + 64 <= n; i += 64)
      _mm512_storeu_si512(d + i, _mm512_xor_si512(_mm512_loadu_si512(s + i), f));
    if (i < n)
      _mm512_storeu_si512(d + n - 64, _mm512_xor_si512(_mm512_loadu_si512(s + n - 64), f));
    return;
  }
#endif
#if defined(__SSE2__)
  if (n >= 16) {
    const __m128i f = _mm_set1_epi8(static_cast<char>(flip));
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i),
                       _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i)), f));
    if (i < n)
      _mm_storeu_si128(
          reinterpret_cast<__m128i*>(d + n - 16),
          _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + n - 16)), f));
    return;
  }
#endif
  const uint8_t* __restrict u = reinterpret_cast<const uint8_t*>(s);
  for (int64_t i = 0; i < n; ++i) d[i] = u[i] ^ flip;
}
inline void fill(uint8_t* d, int64_t n, uint8_t v) {
#if defined(__AVX512BW__)
  if (n >= 64) {
    const __m512i f = _mm512_set1_epi8(static_cast<char>(v));
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) _mm512_storeu_si512(d + i, f);
    if (i < n) _mm512_storeu_si512(d + n - 64, f);
    return;
  }
#endif
#if defined(__SSE2__)
  if (n >= 16) {
    const __m128i f = _mm_set1_epi8(static_cast<char>(v));
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), f);
    if (i < n) _mm_storeu_si128(reinterpret_cast<__m128i*>(d + n - 16), f);
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i) d[i] = v;
}

#if defined(__SSE2__)
// xor_copy of a compile-time length (a multiple of 16): the interior copies of 3x3 convs with
// 16 / 32 / 64 channels (48 / 96 / 192 bytes) unrolled, without xor_copy's loop and tail tests.
template <int N>
inline void xor_copy_n(uint8_t* __restrict d, const int8_t* __restrict s, __m128i f) {
#pragma GCC unroll 16
  for (int i = 0; i < N; i += 16)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i),
                     _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i)), f));
}
#endif

// One window row (S taps of cg bytes, ungrouped conv) of output column qq that touches the left or
// right padding: padding taps hold flip.
inline void edge_window(uint8_t* d, const int8_t* xr, int64_t qq, const Geom& G, int64_t cg,
                        uint8_t flip) {
  const int64_t iw0 = qq * G.sw - G.pw;
  const int64_t s_lo = std::min(G.s, std::max<int64_t>(0, -iw0));
  const int64_t s_hi = std::max(s_lo, std::min(G.s, G.w - iw0));
  fill(d, s_lo * cg, flip);
  xor_copy(d + s_lo * cg, xr + (iw0 + s_lo) * G.c, (s_hi - s_lo) * cg, flip);
  fill(d + s_hi * cg, (G.s - s_hi) * cg, flip);
}

// col[i*ld + (r, s, c)] = x[img, pp*sh - ph + r, qq*sw - pw + s, g*Cg + c] ^ flip for the rows
// m0 .. m0+cnt-1; padding positions hold 0 ^ flip, bytes KD .. ld-1 hold flip.
// Works one output-row segment (fixed img, pp) at a time, r outside, so the per-pixel work of an
// interior pixel of an ungrouped conv is R contiguous copies of S*Cg bytes.
void im2col_i8(uint8_t* __restrict col, int64_t ld, const int8_t* __restrict x, const Geom& G,
               int64_t m0, int64_t cnt, int64_t g, uint8_t flip) {
  Cursor cur(G, m0);
  const int64_t cg = G.cg, scg = G.s * cg;
  int64_t i = 0;
  while (i < cnt) {
    const int64_t q0 = cur.qq, q1 = std::min(G.q, q0 + (cnt - i)), nq = q1 - q0;
    const int8_t* ximg = x + cur.img * G.h * G.w * G.c + g * cg;
    uint8_t* drow = col + i * ld;
    for (int64_t r = 0; r < G.r; ++r) {
      const int64_t ih = cur.pp * G.sh - G.ph + r;
      uint8_t* d = drow + r * scg;
      if (ih < 0 || ih >= G.h) {
        for (int64_t j = 0; j < nq; ++j) fill(d + j * ld, scg, flip);
        continue;
      }
      const int8_t* xr = ximg + ih * G.w * G.c;
      int64_t j = 0;
#if defined(__SSE2__)
      // interior pixels of an ungrouped conv with a common window width: unrolled copies (the
      // window row is S*Cg contiguous bytes of x; reading all of it stays inside x)
      if (G.g == 1 && (scg == 48 || scg == 96 || scg == 192 || (scg > 16 && scg <= 32))) {
        // first interior pixel (iw0 >= 0) and the end of the interior run (iw0 + S <= W)
        int64_t j_lo = 0;
        while (j_lo < nq && (q0 + j_lo) * G.sw - G.pw < 0) ++j_lo;
        int64_t j_hi = j_lo;
        while (j_hi < nq && (q0 + j_hi) * G.sw - G.pw + G.s <= G.w) ++j_hi;
        const __m128i f = _mm_set1_epi8(static_cast<char>(flip));
        auto run = [&](auto n) {
          constexpr int N = decltype(n)::value;
          uint8_t* dd = d + j_lo * ld;
          const int8_t* src = xr + ((q0 + j_lo) * G.sw - G.pw) * G.c;
          const int64_t step = G.sw * G.c;
          for (int64_t jj = j_lo; jj < j_hi; ++jj, dd += ld, src += step) xor_copy_n<N>(dd, src, f);
        };
        if (scg <= 32) {  // two overlapping 16-byte copies (LeNet-5's conv2: 5 taps x 6 = 30)
          uint8_t* dd = d + j_lo * ld;
          const int8_t* src = xr + ((q0 + j_lo) * G.sw - G.pw) * G.c;
          const int64_t step = G.sw * G.c, o = scg - 16;
          for (int64_t jj = j_lo; jj < j_hi; ++jj, dd += ld, src += step) {
            const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
            const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + o));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(dd), _mm_xor_si128(lo, f));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(dd + o), _mm_xor_si128(hi, f));
          }
        } else if (scg == 48) run(std::integral_constant<int, 48>{});
        else if (scg == 96) run(std::integral_constant<int, 96>{});
        else run(std::integral_constant<int, 192>{});
        // the border pixels below go through the general path
        for (; j < j_lo; ++j) edge_window(d + j * ld, xr, q0 + j, G, cg, flip);
        for (j = j_hi; j < nq; ++j) edge_window(d + j * ld, xr, q0 + j, G, cg, flip);
        continue;
      }
#endif
      for (; j < nq; ++j, d += ld) {
        const int64_t iw0 = (q0 + j) * G.sw - G.pw;
        if (G.g == 1 && iw0 >= 0 && iw0 + G.s <= G.w) {  // interior: one contiguous run
          xor_copy(d, xr + iw0 * G.c, scg, flip);
          continue;
        }
        const int64_t s_lo = std::min(G.s, std::max<int64_t>(0, -iw0));
        const int64_t s_hi = std::max(s_lo, std::min(G.s, G.w - iw0));
        fill(d, s_lo * cg, flip);
        if (G.g == 1) {
          xor_copy(d + s_lo * cg, xr + (iw0 + s_lo) * G.c, (s_hi - s_lo) * cg, flip);
        } else {
          for (int64_t s = s_lo; s < s_hi; ++s) xor_copy(d + s * cg, xr + (iw0 + s) * G.c, cg, flip);
        }
        fill(d + s_hi * cg, (G.s - s_hi) * cg, flip);
      }
    }
    if (ld > G.kd)
      for (int64_t j = 0; j < nq; ++j) fill(drow + j * ld + G.kd, ld - G.kd, flip);
    i += nq;
    cur.qq = q1 - 1;
    cur.next(G);
  }
}

#if defined(__SSE2__)
// wgrad's B straight from x, skipping the col matrix: B[j = (r, s, c), kk] = x at tap (r, s),
// channel g*Cg + c, of output pixel m0 + kk, for the columns j0 <= j < j1, packed as [K4][NR][4]
// panels (int8_gemm.h) from column j0 with zeros for padding taps, rows past cnt and columns past
// j1. Needs Cg % 16 == 0 and j0 % NR == 0, so a 16-column block never straddles a tap or a panel
// (NR is 16 or 32).
void pack_b_im2col(int8_t* bp, const int8_t* x, const Geom& G, int64_t m0, int64_t cnt, int64_t g,
                   int nr, int64_t j0, int64_t j1) {
  const int64_t k4 = i8::k4_of(cnt), pstride = k4 * 4 * nr, nj = j1 - j0, njp = round_up(nj, nr);
  [[maybe_unused]] const bool all_cols = j0 == 0 && j1 == G.kd;  // (read by the AVX2 path)
  const int64_t tap0 = j0 / G.cg, r0 = tap0 / G.s, s0 = tap0 % G.s;  // the first tap in range
  const int nr_shift = nr == 32 ? 5 : 4;  // NR is 16 or 32
  const __m128i z = _mm_setzero_si128();
  Cursor cur(G, m0);
  // Unpadded geometry (the caller's zero-padded copy): every window lies inside x, and a pixel's
  // window start is a pointer that steps by sw*C along an output row.
  const bool unpadded = G.ph == 0 && G.pw == 0;
  const int8_t* wp = unpadded ? x + ((cur.img * G.h + cur.pp * G.sh) * G.w + cur.qq * G.sw) * G.c +
                                    g * G.cg
                              : nullptr;
  for (int64_t t = 0; t < k4; ++t) {
    int64_t ih0[4], iw0[4];
    const int8_t* base[4];
    const int8_t* p[4];
    bool interior = true;
    if (unpadded && 4 * t + 4 <= cnt) {
      for (int u = 0; u < 4; ++u) {
        p[u] = wp;
        if (++cur.qq == G.q) {
          cur.qq = 0;
          if (++cur.pp == G.p) cur.pp = 0, ++cur.img;
          wp = x + ((cur.img * G.h + cur.pp * G.sh) * G.w) * G.c + g * G.cg;
        } else {
          wp += G.sw * G.c;
        }
      }
    } else {
      for (int u = 0; u < 4; ++u) {
        if (4 * t + u < cnt) {
          ih0[u] = cur.pp * G.sh - G.ph;
          iw0[u] = cur.qq * G.sw - G.pw;
          base[u] = x + cur.img * G.h * G.w * G.c + g * G.cg;
          cur.next(G);
        } else {
          ih0[u] = iw0[u] = 0;
          base[u] = nullptr;
        }
      }
      for (int u = 0; u < 4; ++u)
        interior = interior && base[u] && ih0[u] >= 0 && ih0[u] + G.r <= G.h && iw0[u] >= 0 &&
                   iw0[u] + G.s <= G.w;
      if (interior)
        for (int u = 0; u < 4; ++u) p[u] = base[u] + (ih0[u] * G.w + iw0[u]) * G.c;
    }
    int8_t* dt = bp + t * 4 * nr;
    if (interior) {  // every tap of the four pixels is inside x: no per-tap checks
      int64_t j = 0;
#if defined(__AVX2__)
      if (G.cg == 16 && G.g == 1 && all_cols) {
        // 16 channels: taps s and s+1 are 32 contiguous bytes of each pixel's window row; one
        // ymm interleave does both (lane 0 tap s, lane 1 tap s+1), then each tap's 64 bytes go
        // to its panel. The last tap of an odd S goes through the SSE2 path below.
        auto dst = [&](int64_t jj) { return dt + (jj >> nr_shift) * pstride + (jj & (nr - 1)) * 4; };
        for (int64_t r = 0; r < G.r; ++r) {
          int64_t s = 0;
          for (; s + 1 < G.s; s += 2, j += 32) {
            const int64_t off = (r * G.w + s) * G.c;
            const __m256i v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p[0] + off));
            const __m256i v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p[1] + off));
            const __m256i v2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p[2] + off));
            const __m256i v3 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p[3] + off));
            const __m256i l01 = _mm256_unpacklo_epi8(v0, v1), h01 = _mm256_unpackhi_epi8(v0, v1);
            const __m256i l23 = _mm256_unpacklo_epi8(v2, v3), h23 = _mm256_unpackhi_epi8(v2, v3);
            const __m256i o0 = _mm256_unpacklo_epi16(l01, l23), o1 = _mm256_unpackhi_epi16(l01, l23);
            const __m256i o2 = _mm256_unpacklo_epi16(h01, h23), o3 = _mm256_unpackhi_epi16(h01, h23);
            int8_t* d0 = dst(j);
            int8_t* d1 = dst(j + 16);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(d0), _mm256_permute2x128_si256(o0, o1, 0x20));
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(d0 + 32), _mm256_permute2x128_si256(o2, o3, 0x20));
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(d1), _mm256_permute2x128_si256(o0, o1, 0x31));
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(d1 + 32), _mm256_permute2x128_si256(o2, o3, 0x31));
          }
          for (; s < G.s; ++s, j += 16) {
            const int64_t off = (r * G.w + s) * G.c;
            i8::interleave4x16(
                dst(j), _mm_loadu_si128(reinterpret_cast<const __m128i*>(p[0] + off)),
                _mm_loadu_si128(reinterpret_cast<const __m128i*>(p[1] + off)),
                _mm_loadu_si128(reinterpret_cast<const __m128i*>(p[2] + off)),
                _mm_loadu_si128(reinterpret_cast<const __m128i*>(p[3] + off)));
          }
        }
      } else
#endif
      // the taps from (r0, s0) on, channel blocks from j0's, while the column is below j1
      for (int64_t r = r0, s = s0, c0 = j0 - tap0 * G.cg; j < nj;) {
        const int64_t off = (r * G.w + s) * G.c;
        for (; c0 < G.cg && j < nj; c0 += 16, j += 16)
          i8::interleave4x16(
              dt + (j >> nr_shift) * pstride + (j & (nr - 1)) * 4,
              _mm_loadu_si128(reinterpret_cast<const __m128i*>(p[0] + off + c0)),
              _mm_loadu_si128(reinterpret_cast<const __m128i*>(p[1] + off + c0)),
              _mm_loadu_si128(reinterpret_cast<const __m128i*>(p[2] + off + c0)),
              _mm_loadu_si128(reinterpret_cast<const __m128i*>(p[3] + off + c0)));
        c0 = 0;
        if (++s == G.s) s = 0, ++r;
      }
    } else {
      for (int64_t r = r0, s = s0, c00 = j0 - tap0 * G.cg, jt = -c00; jt < nj;) {
        const int8_t* src[4];
        for (int u = 0; u < 4; ++u) {
          const int64_t ih = ih0[u] + r, iw = iw0[u] + s;
          src[u] = (base[u] && ih >= 0 && ih < G.h && iw >= 0 && iw < G.w)
                       ? base[u] + (ih * G.w + iw) * G.c
                       : nullptr;
        }
        // jt: this tap's channel 0 relative to j0 (negative for a first tap entered mid-way)
        for (int64_t c0 = c00; c0 < G.cg && jt + c0 < nj; c0 += 16) {
          const int64_t j = jt + c0;
          __m128i v[4];
          for (int u = 0; u < 4; ++u)
            v[u] = src[u] ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(src[u] + c0)) : z;
          i8::interleave4x16(dt + (j >> nr_shift) * pstride + (j & (nr - 1)) * 4, v[0], v[1],
                             v[2], v[3]);
        }
        jt += G.cg, c00 = 0;
        if (++s == G.s) s = 0, ++r;
      }
    }
    if (njp > nj)
      std::memset(dt + (nj / nr) * pstride + (nj % nr) * 4, 0, static_cast<size_t>((njp - nj) * 4));
  }
}
#endif

// ---- depthwise (G == C == K): direct loops over the contiguous channel dimension ----------------
// A pixel's taps are gathered first (input or dy rows and weight rows), then each block of 16
// channels sums them in a register: widened int8 x int32 weights (the weights transposed and
// widened once per call, wt[(r*S + s)*C + c] = w[c, r, s, 0]), 16 int32 lanes per vector; the
// channels past the last full block run scalar. (The int32 accumulators in memory that this
// replaced, one channel loop per tap, made the stride-2 dgrad and wgrad slower than fp32's.)
// 16 int8 sign-extended to int32 lanes (vpmovsxbd; GCC 12 turns __builtin_convertvector of
// bytes into per-byte scalar code; the maskz form: the plain one's undefined merge operand warns)
inline v16i widen16(const int8_t* p) {
#if defined(__AVX512F__)
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return reinterpret_cast<v16i>(_mm512_maskz_cvtepi8_epi32(static_cast<__mmask16>(0xffff), b));
#elif defined(__AVX2__)
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m256i lo = _mm256_cvtepi8_epi32(b), hi = _mm256_cvtepi8_epi32(_mm_srli_si128(b, 8));
  v16i v;
  std::memcpy(&v, &lo, 32);
  std::memcpy(reinterpret_cast<char*>(&v) + 32, &hi, 32);
  return v;
#else
  v16i v;
  for (int i = 0; i < 16; ++i) v[i] = p[i];
  return v;
#endif
}
inline v16f to_f32(v16i v) { return __builtin_convertvector(v, v16f); }
// a * b + c rounded once per lane (as cuda's fmaf and the GEMM epilogues' vfmadd)
inline v16f fma16(v16f a, v16f b, v16f c) {
  for (int i = 0; i < 16; ++i) c[i] = std::fma(a[i], b[i], c[i]);
  return c;
}

int32_t* depthwise_weights_i32(const int8_t* w, const Geom& G) {
  const int64_t rs = G.r * G.s;
  int32_t* wt = scratch_bytes<int32_t>(kSlotConvB, 4 * rs * G.c);
  for (int64_t ch = 0; ch < G.c; ++ch)
    for (int64_t i = 0; i < rs; ++i) wt[i * G.c + ch] = w[ch * rs + i];
  return wt;
}

// Runs body(img, a, b, src, wrow) for every pixel (a, b) of `per_img` rows of `cols` pixels per
// image (output pixels for fwd, input pixels for dgrad), rows split over the threads; src and
// wrow are the thread's room for the pixel's R*S taps.
template <class F>
void depthwise_pixels(const Geom& G, int64_t per_img, int64_t cols, F&& body) {
  const int64_t rows = G.n * per_img;
  const int nt = threads_for(rows * cols * G.c * G.r * G.s, kMacsPerThread);
  parallel(nt, [&](int t, int T) {
    std::vector<const int8_t*> src(static_cast<size_t>(G.r * G.s));
    std::vector<const int32_t*> wrow(src.size());
    for (int64_t row = rows * t / T; row < rows * (t + 1) / T; ++row)
      for (int64_t b = 0; b < cols; ++b)
        body(row / per_img, row % per_img, b, src.data(), wrow.data());
  });
}

// The sums of one pixel's n taps, src[i] (C int8) times wrow[i] (C int32), 16 channels at a time:
// out16(c0, acc) per full block, out1(c, acc) per channel past them.
template <class O16, class O1>
__attribute__((always_inline)) inline void depthwise_sums(const int8_t* const* src,
                                                          const int32_t* const* wrow, int n,
                                                          int64_t C, O16&& out16, O1&& out1) {
  const int64_t cv = C / 16 * 16;
  for (int64_t c0 = 0; c0 < cv; c0 += 16) {
    v16i acc{};
    for (int i = 0; i < n; ++i) acc += widen16(src[i] + c0) * load16(wrow[i] + c0);
    out16(c0, acc);
  }
  for (int64_t ch = cv; ch < C; ++ch) {
    int32_t acc = 0;
    for (int i = 0; i < n; ++i) acc += int32_t{src[i][ch]} * wrow[i][ch];
    out1(ch, acc);
  }
}

// y[m, c] = acc * cs[c] (+ bias[c])
void depthwise_fwd(float* y, const int8_t* x, const int8_t* w, const float* cs, const float* bias,
                   const Geom& G) {
  const int32_t* wt = depthwise_weights_i32(w, G);
  const int64_t C = G.c;
  depthwise_pixels(G, G.p, G.q, [&](int64_t img, int64_t pp, int64_t qq, const int8_t** src,
                                    const int32_t** wrow) {
    int n = 0;
    for_each_tap(G, pp, qq, [&](int64_t r, int64_t s, int64_t ih, int64_t iw) {
      src[n] = x + ((img * G.h + ih) * G.w + iw) * C;
      wrow[n++] = wt + (r * G.s + s) * C;
    });
    float* __restrict yp = y + ((img * G.p + pp) * G.q + qq) * C;
    depthwise_sums(
        src, wrow, n, C,
        [&](int64_t c0, v16i acc) {  // acc * cs + bias with one rounding, as below
          const v16f a = to_f32(acc), c = load16(cs + c0);
          store16(yp + c0, bias ? fma16(a, c, load16(bias + c0)) : a * c);
        },
        [&](int64_t ch, int32_t acc) {
          const float a = static_cast<float>(acc);
          yp[ch] = bias ? std::fma(a, cs[ch], bias[ch]) : a * cs[ch];
        });
  });
}

// Gather form: every dx pixel sums the dy pixels whose windows cover it (no write conflicts).
void depthwise_dgrad(float* dx, const int8_t* dy, const int8_t* w, float scale, const Geom& G,
                     bool add) {
  const int32_t* wt = depthwise_weights_i32(w, G);
  const int64_t C = G.c;
  depthwise_pixels(G, G.h, G.w, [&](int64_t img, int64_t ih, int64_t iw, const int8_t** src,
                                    const int32_t** wrow) {
    int n = 0;
    for_each_cover(G, ih, iw, [&](int64_t r, int64_t s, int64_t pp, int64_t qq) {
      src[n] = dy + ((img * G.p + pp) * G.q + qq) * C;
      wrow[n++] = wt + (r * G.s + s) * C;
    });
    float* __restrict dxp = dx + ((img * G.h + ih) * G.w + iw) * C;
    depthwise_sums(
        src, wrow, n, C,
        [&](int64_t c0, v16i acc) {
          const v16f v = to_f32(acc) * scale;
          store16(dxp + c0, add ? load16(dxp + c0) + v : v);  // D8_CONV_ACCUMULATE: dx +=
        },
        [&](int64_t ch, int32_t acc) {
          const float v = static_cast<float>(acc) * scale;
          dxp[ch] = add ? dxp[ch] + v : v;
        });
  });
}

// dw[c, r, s] = sum * row_scale[c] (row_scale = dy_scale[c or 0] * x_scale, as doubles). Per
// thread int32 sums [tap][C] (flushed into doubles every kMaxRowsI32 pixels).
void depthwise_wgrad(float* dw, const int8_t* x, const int8_t* dy, const double* row_scale,
                     const Geom& G) {
  const int64_t C = G.c, rs = G.r * G.s, rows = G.n * G.p, len = round_up(rs * C, 16);
  const int64_t cv = C / 16 * 16;
  const int nt = threads_for(rows * G.q * C * rs, kMacsPerThread);
  int32_t* acc32 = scratch_bytes<int32_t>(kSlotConvWork, nt * len * 4);
  double* accd = scratch_bytes<double>(kSlotConvPartial, nt * len * 8);
  const int team = parallel(nt, [&](int t, int T) {
    int32_t* __restrict a32 = acc32 + t * len;
    double* __restrict ad = accd + t * len;
    for (int64_t i = 0; i < rs * C; ++i) a32[i] = 0, ad[i] = 0.0;
    int64_t pixels = 0;
    std::vector<const int8_t*> src(static_cast<size_t>(rs));
    std::vector<int32_t*> arow(src.size());
    for (int64_t row = rows * t / T; row < rows * (t + 1) / T; ++row) {
      const int64_t img = row / G.p, pp = row % G.p;
      for (int64_t qq = 0; qq < G.q; ++qq) {
        if (pixels == kMaxRowsI32) {  // each entry got at most one product per pixel
          for (int64_t i = 0; i < rs * C; ++i) ad[i] += a32[i], a32[i] = 0;
          pixels = 0;
        }
        ++pixels;
        const int8_t* dyq = dy + (row * G.q + qq) * C;
        int n = 0;
        for_each_tap(G, pp, qq, [&](int64_t r, int64_t s, int64_t ih, int64_t iw) {
          src[n] = x + ((img * G.h + ih) * G.w + iw) * C;
          arow[n++] = a32 + (r * G.s + s) * C;
        });
        // taps outer: each tap's sums are one run of stores advancing with its x loads (with the
        // taps inner, nine store streams at fixed distances from the loads 4K-aliased with them
        // in some processes: 2.5x slower on the Zen 4 guest, depending on where x lay)
        for (int i = 0; i < n; ++i) {
          int32_t* __restrict a = arow[i];
          const int8_t* __restrict xs = src[i];
          for (int64_t c0 = 0; c0 < cv; c0 += 16)
            store16(a + c0, load16(a + c0) + widen16(dyq + c0) * widen16(xs + c0));
        }
        for (int64_t ch = cv; ch < C; ++ch)
          for (int i = 0; i < n; ++i) arow[i][ch] += int32_t{dyq[ch]} * src[i][ch];
      }
    }
    for (int64_t i = 0; i < rs * C; ++i) ad[i] += a32[i];
  });
  for (int64_t ch = 0; ch < C; ++ch)
    for (int64_t i = 0; i < rs; ++i) {
      double v = 0.0;
      for (int t = 0; t < team; ++t) v += accd[t * len + i * C + ch];
      dw[ch * rs + i] = static_cast<float>(v * row_scale[ch]);
    }
}

// ---- GEMM paths -----------------------------------------------------------------------------------
// The padded input extents a conv reads: hp = (P-1)*sh + R rows, wp = (Q-1)*sw + S columns,
// starting at (-ph, -pw).
inline int64_t padded_h(const Geom& G) { return (G.p - 1) * G.sh + G.r; }
inline int64_t padded_w(const Geom& G) { return (G.q - 1) * G.sw + G.s; }

// One image xi [H, W, C] into d [hp, wp, C] with bytes ^ flip; positions outside x hold flip.
void pad_image(uint8_t* d, const int8_t* xi, const Geom& G, int64_t hp, int64_t wp,
               uint8_t flip) {
  const int64_t wc = G.w * G.c, left = std::min(G.pw, wp);
  const int64_t inner = std::max<int64_t>(0, std::min(wp - G.pw, G.w));  // columns from x
  for (int64_t a = 0; a < hp; ++a, d += wp * G.c) {
    const int64_t ih = a - G.ph;
    if (ih < 0 || ih >= G.h || inner == 0) {
      fill(d, wp * G.c, flip);
      continue;
    }
    fill(d, left * G.c, flip);
    xor_copy(d + left * G.c, xi + ih * wc, inner * G.c, flip);
    fill(d + (left + inner) * G.c, (wp - left - inner) * G.c, flip);
  }
}

// B packed with the threads taking runs of panels: from rows (pack_b_rows: a wide layer's weights,
// 512 x 4608 bytes) or from columns (pack_b_cols: a pointwise dgrad's weights as they are, no
// transposed copy first).
void pack_b_par(bool cols, int8_t* bp, int32_t* comp, const int8_t* src, int64_t ld, int64_t n,
                int64_t k, const i8::Plan& P) {
  const int64_t pb = i8::packb_bytes(P.nr, k, P.nr);
  parallel_for(ceil_div(n, P.nr), std::max<int64_t>(1, (int64_t{1} << 16) / pb),
               [&](int64_t b, int64_t e) {
                 const int64_t j0 = b * P.nr, j1 = std::min(n, e * P.nr);
                 if (cols)
                   i8::pack_b_cols(bp + b * pb, comp + j0, src + j0, ld, j1 - j0, k, P);
                 else
                   i8::pack_b_rows(bp + b * pb, comp + j0, src + j0 * ld, ld, j1 - j0, k, P);
               });
}

// dst[c*ldd + kk] = src[kk*lds + c] for kk < rows, c < cols: 16 x 16 SSE2 blocks, scalar edges.
void transpose_i8(int8_t* dst, int64_t ldd, const int8_t* src, int64_t lds, int64_t rows,
                  int64_t cols) {
  int64_t c0 = 0, k0 = 0;
#if defined(__SSE2__)
  const __m128i zero = _mm_setzero_si128();
  k0 = rows / 16 * 16;
  for (; c0 + 16 <= cols; c0 += 16)
    for (int64_t kk = 0; kk < k0; kk += 16)
      i8::transpose16x16_xor(reinterpret_cast<uint8_t*>(dst + c0 * ldd + kk), ldd,
                             src + kk * lds + c0, lds, zero);
#endif
  for (int64_t c = 0; c < cols; ++c)  // the columns past c0, and the rows past k0 of the rest
    for (int64_t kk = c < c0 ? k0 : 0; kk < rows; ++kk) dst[c * ldd + kk] = src[kk * lds + c];
}

// koff[t] of k-group t for a reduction over window rows of `run` bytes each (a multiple of 4),
// consecutive window rows row_stride bytes apart: the implicit forward's offset table.
void fill_row_koff(int32_t* koff, int64_t k4, int64_t run, int64_t row_stride) {
  for (int64_t t = 0; t < k4; ++t)
    koff[t] = static_cast<int32_t>((4 * t) / run * row_stride + (4 * t) % run);
}

// Exact windows for fwd_implicit (conv.cpp's fprop v4 in INT8): no output multiplies the padding
// except at the corners. The padded copy stays (it applies the offset flip). Output row p runs
// over its inside window rows [rlo, rhi) only: a run of the packed B's k-groups (SC4/4 per window
// row), with the comp of that run (comp = 128 x the column sums of the k-groups used; 0 without
// the flip). The interior columns [q0, q1) see every kernel column; each border column q (at most
// kMaxBorderColsI8) gets its weights re-laid as [K][R][SC4q] over its inside kernel columns
// [slo, slo + ns) (SC4q = round_up(ns*C, 4)), packed with its comp and koff, and one GEMM down all
// P output rows (A rows sh*Wp*C bytes apart). Off (the per-row full-window loop runs) for amx
// (its chunks of kg k-groups), a forced D8_CPU_CONV_PATH, outputs with no inside taps, and
// shapes without interior columns. Plans: pr for rows of q1 - q0 pixels, pc for P-row columns.
constexpr int64_t kMaxBorderColsI8 = 8;
constexpr int64_t kMaxBorderWeightBytesI8 = int64_t{128} << 10;  // per border column
struct ExactI8 {
  struct Col {
    int64_t q, slo, ns, sc4;  // output column, its inside kernel columns [slo, slo + ns), SC4q
    const int8_t* bp;
    const int32_t* comp;
    const int32_t* koff;
  };
  bool on = false;
  int64_t q0 = 0, q1 = 0, nbc = 0, R = 0, nrc = 0;
  int64_t bytes = 0;      // of the tables exact_tables_i8 writes
  int64_t relaid_at = 0;  // where in them the re-laid border-column weights go
  i8::Plan pr, pc;
  Col cols[kMaxBorderColsI8];
  const int32_t* comps = nullptr;  // [rlo][rhi] -> comp of window rows [rlo, rhi), nrc entries
  const int32_t* comp_of(int64_t lo, int64_t hi) const { return comps + (lo * (R + 1) + hi) * nrc; }
};

// Whether exact windows apply, and their geometry and table size (no weights read: the tables
// come from exact_tables_i8).
ExactI8 exact_windows_i8(const Geom& G, const i8::Plan& P, int64_t sc4) {
  ExactI8 ex;
  if (P.variant == i8::kAmx || forced_path() != kAuto) return ex;
  for (int64_t p = 0; p < G.p; ++p) {
    const Span r = tap_span(p, G.sh, G.ph, G.h, G.r);
    if (r.hi <= r.lo) return ex;
  }
  int64_t q0 = G.q, q1 = 0, slo[kMaxBorderColsI8], ns[kMaxBorderColsI8], bq[kMaxBorderColsI8];
  int64_t nbc = 0;
  for (int64_t q = 0; q < G.q; ++q) {
    const Span sp = tap_span(q, G.sw, G.pw, G.w, G.s);
    if (sp.hi <= sp.lo) return ex;
    if (sp.lo == 0 && sp.hi == G.s) {
      q0 = std::min(q0, q), q1 = q + 1;
      continue;
    }
    if (nbc == kMaxBorderColsI8) return ex;
    bq[nbc] = q, slo[nbc] = sp.lo, ns[nbc] = sp.hi - sp.lo, ++nbc;
  }
  if (q1 <= q0) return ex;
  int64_t bq_bytes = 0;
  for (int64_t i = 0; i < nbc; ++i) {
    if (bq[i] > q0 && bq[i] < q1) return ex;  // (interior columns are one run)
    bq_bytes += G.k * G.r * round_up(ns[i] * G.c, 4);
  }
  // Wide layers keep the full windows: each border column's weights (and comp) are re-laid and
  // packed per call, which must stay small (L2) and cheap next to the work: 512->512 7x7 at batch
  // 8 (1.5 MB per border column) ran 2.6 -> 3.9 ms with exact windows.
  if (bq_bytes > kMaxBorderWeightBytesI8 * std::max<int64_t>(nbc, 1) ||
      static_cast<double>(bq_bytes) * 1024 > static_cast<double>(G.m) * G.k * G.kd)
    return ex;
  // k-group pairs as P (the interior's runs start at whole window rows of P's B), and for the
  // border columns where each one's window rows hold whole pairs
  bool col_pairs = P.pairs;
  for (int64_t i = 0; i < nbc; ++i) col_pairs = col_pairs && round_up(ns[i] * G.c, 4) % 8 == 0;
  const i8::Plan pr = i8::plan_for(G.k, q1 - q0, P.pairs), pc = i8::plan_for(G.k, G.p, col_pairs);
  // Only where it computes fewer tile rows x window bytes than the full windows: a tile of fixed
  // height over 5 interior pixels can compute as many rows as over all 7 (the avx2 tile did, before
  // its partial tiles got their exact height: Zen 4, avx2 forced, 64->64 7x7 fprop 1.02 -> 1.14
  // ms with exact windows).
  auto rows_of = [](int64_t m, const i8::Plan& pl) {
    return pl.exact_rows ? m : ceil_div(m, pl.mr) * pl.mr;
  };
  double full = static_cast<double>(G.p) * rows_of(G.q, P) * G.r * sc4, exact = 0;
  for (int64_t p = 0; p < G.p; ++p) {
    const Span r = tap_span(p, G.sh, G.ph, G.h, G.r);
    exact += static_cast<double>(rows_of(q1 - q0, pr)) * (r.hi - r.lo) * sc4;
  }
  for (int64_t i = 0; i < nbc; ++i)
    exact += static_cast<double>(rows_of(G.p, pc)) * G.r * round_up(ns[i] * G.c, 4);
  if (exact >= full) return ex;
  ex.q0 = q0, ex.q1 = q1, ex.nbc = nbc, ex.R = G.r, ex.pr = pr, ex.pc = pc;
  ex.nrc = i8::comp_len(G.k, P.nr);
  // tables: comps [(R+1)^2][nrc] and the rows' [R][nrc], then per column packed B, comp, koff;
  // and one re-laid w
  ex.bytes = 4 * ((G.r + 1) * (G.r + 1) + G.r) * ex.nrc;
  int64_t relaid = 0;
  for (int64_t i = 0; i < nbc; ++i) {
    const int64_t s4 = round_up(ns[i] * G.c, 4), kq = G.r * s4;
    ex.bytes += round_up(i8::packb_bytes(G.k, kq, P.nr), 64) + round_up(4 * ex.nrc, 64) +
                round_up(4 * kq / 4, 64);
    relaid = std::max(relaid, G.k * kq);
    ex.cols[i] = {bq[i], slo[i], ns[i], s4, nullptr, nullptr, nullptr};
  }
  ex.relaid_at = ex.bytes;
  ex.bytes = round_up(ex.bytes + relaid, 64);
  ex.on = true;
  return ex;
}

// The tables of exact windows (ex from exact_windows_i8, on) for weights wt [K][R][SC4], written
// into buf (ex.bytes).
void exact_tables_i8(ExactI8& ex, const Geom& G, const i8::Plan& P, const int8_t* wt,
                     int64_t sc4, int64_t wp, char* buf) {
  const int64_t K = G.k, C = G.c, kdp = G.r * sc4, nrc = ex.nrc;
  int32_t* comps = reinterpret_cast<int32_t*>(buf);
  // comp of window row r for column j (0 without the flip and past K), then of every run [lo, hi)
  int32_t* row = comps + (G.r + 1) * (G.r + 1) * nrc;
  for (int64_t r = 0; r < G.r; ++r)
    for (int64_t j = 0; j < nrc; ++j) {
      int32_t sum = 0;
      if (P.flip && j < K)
        for (int64_t b = 0; b < sc4; ++b) sum += wt[j * kdp + r * sc4 + b];
      row[r * nrc + j] = 128 * sum;
    }
  for (int64_t lo = 0; lo <= G.r; ++lo)
    for (int64_t hi = 0; hi <= G.r; ++hi) {
      int32_t* c = comps + (lo * (G.r + 1) + hi) * nrc;
      for (int64_t j = 0; j < nrc; ++j) {
        int32_t v = 0;
        for (int64_t r = lo; r < hi; ++r) v += row[r * nrc + j];
        c[j] = v;
      }
    }
  ex.comps = comps;
  char* pb = buf + 4 * ((G.r + 1) * (G.r + 1) + G.r) * nrc;
  int8_t* wq = reinterpret_cast<int8_t*>(buf + ex.relaid_at);
  for (int64_t i = 0; i < ex.nbc; ++i) {
    ExactI8::Col& col = ex.cols[i];
    const int64_t s4 = col.sc4, kq = G.r * s4, nc = col.ns * C;
    // wq[k][r][b] = w'[k][r][slo*C + b] for b < ns*C, zeros to s4 (w' = wt, [K][R][SC4])
    for (int64_t k = 0; k < K; ++k)
      for (int64_t r = 0; r < G.r; ++r) {
        int8_t* d = wq + k * kq + r * s4;
        std::memcpy(d, wt + k * kdp + r * sc4 + col.slo * C, static_cast<size_t>(nc));
        std::memset(d + nc, 0, static_cast<size_t>(s4 - nc));
      }
    int8_t* bpq = reinterpret_cast<int8_t*>(pb);
    pb += round_up(i8::packb_bytes(K, kq, P.nr), 64);
    int32_t* cq = reinterpret_cast<int32_t*>(pb);
    pb += round_up(4 * nrc, 64);
    i8::pack_b_rows(bpq, cq, wq, kq, K, kq, P);
    i8::pair_panels(ex.pc, bpq, kq / 4, ceil_div(K, P.nr));
    int32_t* ko = reinterpret_cast<int32_t*>(pb);
    pb += round_up(4 * kq / 4, 64);
    fill_row_koff(ko, kq / 4, s4, wp * C);
    col.bp = bpq, col.comp = cq, col.koff = ko;
  }
}

// Per-thread copies of the prepared weights (packed B, comp, offsets, exact-window tables) up to
// this size a thread: each thread of the region prepares its own at the region's start instead of
// the calling thread preparing one copy before it. The serial preparation and the other threads'
// reads of lines another core wrote cost more than preparing twice in parallel: Zen 5 guest, 2
// threads, avx512-vnni, 32->64 stride 2 fprop at batch 64: the calling thread's preparation took
// 9.1 us of a 84 us call (4.5 us on one thread).
constexpr int64_t kOwnWeightsBytes = int64_t{192} << 10;

// Where the prepared weights of a region go: one copy per thread (own: more than one thread and
// at most kOwnWeightsBytes each), prepared by each thread inside the region, or one copy the
// calling thread prepares before it. Allocated here (a region's function must not throw).
struct PrepCopies {
  int64_t bytes;
  bool own;
  char* base;
  PrepCopies(int nt, int64_t b)
      : bytes(round_up(b, 64)),
        own(nt > 1 && b <= kOwnWeightsBytes),
        base(scratch_bytes<char>(kSlotConvB, (own ? nt : 1) * bytes)) {}
  char* of(int t) const { return base + (own ? t : 0) * bytes; }
};

// The weights of an implicit forward: w as given (OHWI), or the weights of the conv whose data
// gradient this forward computes (flip_of: its geometry; dx = conv(dy, w'), conv_geom.h), which
// the preparation flips and transposes first.
struct FwdWeights {
  const int8_t* w;
  const Geom* flip_of = nullptr;
};

// fprop, implicit GEMM (ungrouped, not 1x1): no im2col. Each thread copies one image at a time
// into a padded buffer xp [Hp][Wp][C] (the offset flip applied, padding = flip; Hp = (P-1)*sh +
// R, Wp = (Q-1)*sw + S), and the tile reads A in place: output pixel q of output row p is the
// row at xp + (p*sh*Wp + q*sw)*C, and its k-group t at koff[t] from there. The reduction runs
// over R window rows of S*C contiguous bytes each, padded to SC4 = round_up(S*C, 4) (the weights
// are re-laid as [K][R][SC4] with zeros, so the up to 3 bytes a group reads past a window row
// meet zero weights). One gemm_block per output row (Q tile rows). Returns false (the caller
// runs the im2col form) when it does not apply: grouped or 1x1 convs, fewer images than threads
// worth using, or D8_CPU_CONV_PATH=im2col.
bool fwd_implicit(float* y, const int8_t* x, const FwdWeights& wsrc, const float* cs,
                  const float* bias, const Geom& G, int mode) {
  if (G.g != 1 || G.pointwise || forced_path() == kIm2col) return false;
  // Wide weights (conv_geom.h): the im2col chunks of fwd_core give each B panel more rows (Zen 4, 2 threads, batch 16, avx512-vnni, paired, two alternations: 512 ->
  // 512 4x4 fprop 2.33-2.66 -> 1.92-2.02 ms, its stride-1 dgrad 2.44-3.12 -> 1.98-2.20 ms, 256 ->
  // 512 stride 2 fprop 1.17-1.42 -> 1.02-1.06 ms; as the fp32 path's wide_b in conv.cpp).
  if (forced_path() == kAuto && wide_weights(G, 1)) return false;
  const int want = threads_for(G.m * G.k * G.kd, kMacsPerThread);
  if (G.n < want) return false;
  const int nt = want;
  const int64_t sc = G.s * G.c, sc4 = round_up(sc, 4), kdp = G.r * sc4, k4 = kdp / 4;
  // k-group pairs (int8_gemm.h) where every window row holds whole pairs
  i8::Plan P = i8::plan_for(G.k, G.q, sc4 % 8 == 0);
  i8::set_runs(P, sc4 / 4);  // amx chunks stay inside a window row
  const int64_t hp = padded_h(G), wp = padded_w(G);
  const int64_t rs = G.sw * G.c;  // bytes between consecutive output pixels' windows
  const ExactI8 plan = exact_windows_i8(G, P, sc4);

  // Prepared weights, [K][R][SC4] (zero past S*C in each window row), packed, with koff per
  // k-group and the exact windows' tables: one copy per thread (kOwnWeightsBytes) or one shared
  struct Prep {
    const int8_t* bp;
    const int32_t* comp;
    const int32_t* koff;
    ExactI8 ex;
  };
  const int64_t bpb = round_up(i8::packb_bytes(G.k, kdp, P.nr), 64);
  const int64_t flipb = wsrc.flip_of ? round_up(G.k * G.kd, 64) : 0;
  const int64_t relayb = sc4 != sc ? round_up(G.k * kdp, 64) : 0;
  const PrepCopies copies(nt, bpb + round_up(4 * i8::comp_len(G.k, P.nr), 64) +
                                 round_up(4 * k4, 64) + flipb + relayb +
                                 (plan.on ? plan.bytes : 0));
  // (inside a region, parallel_for and pack_b_par run on the calling thread alone)
  const auto prepare = [&](char* buf) {
    Prep pr{};
    char* at = buf;
    const auto take = [&at](int64_t bytes) {
      char* p = at;
      at += bytes;
      return p;
    };
    int8_t* bp = reinterpret_cast<int8_t*>(take(bpb));
    int32_t* comp = reinterpret_cast<int32_t*>(take(round_up(4 * i8::comp_len(G.k, P.nr), 64)));
    int32_t* koff = reinterpret_cast<int32_t*>(take(round_up(4 * k4, 64)));
    const int8_t* wt = wsrc.w;
    if (wsrc.flip_of) {
      int8_t* d = reinterpret_cast<int8_t*>(take(flipb));
      flip_transpose_weights(d, wsrc.w, *wsrc.flip_of, transpose_i8);  // 16 x 16 SSE2 blocks
      wt = d;
    }
    if (sc4 != sc) {  // [K][R][SC4] with zeros (already that layout when S*C is a multiple of 4)
      int8_t* d = reinterpret_cast<int8_t*>(take(relayb));
      for (int64_t k = 0; k < G.k; ++k)
        for (int64_t r = 0; r < G.r; ++r) {
          int8_t* dr = d + k * kdp + r * sc4;
          std::memcpy(dr, wt + (k * G.r + r) * sc, static_cast<size_t>(sc));
          std::memset(dr + sc, 0, static_cast<size_t>(sc4 - sc));
        }
      wt = d;
    }
    pack_b_par(false, bp, comp, wt, kdp, G.k, kdp, P);
    i8::pair_panels(P, bp, k4, ceil_div(G.k, P.nr));
    fill_row_koff(koff, k4, sc4, wp * G.c);
    pr.ex = plan;
    if (plan.on) exact_tables_i8(pr.ex, G, P, wt, sc4, wp, take(plan.bytes));
    pr.bp = bp, pr.comp = comp, pr.koff = koff;
    return pr;
  };
  const Prep shared = copies.own ? Prep{} : prepare(copies.of(0));

  // a tile reads MR rows from its first: the last row's extra rows run past the image (the
  // border columns' GEMMs step down whole padded rows)
  const int64_t slack = plan.on ? std::max(std::max(P.mr, plan.pr.mr) * rs,
                                           plan.pc.mr * G.sh * wp * G.c)
                                : P.mr * rs;
  const int64_t img_bytes = hp * wp * G.c, xp_bytes = round_up(img_bytes + slack + 64, 64);
  uint8_t* xpall = scratch_bytes<uint8_t>(kSlotConvPad, nt * xp_bytes);
  const int64_t hwc = G.h * G.w * G.c;
  const int64_t yimg = G.p * G.q * G.k;  // floats of one image's y
  parallel(nt, [&](int t, int T) {
    const Prep mine = copies.own ? prepare(copies.of(t)) : shared;
    const int8_t* bp = mine.bp;
    const int32_t* comp = mine.comp;
    const int32_t* koff = mine.koff;
    const ExactI8& ex = mine.ex;
    uint8_t* xp = xpall + t * xp_bytes;
    fill(xp + img_bytes, xp_bytes - img_bytes, P.flip);
    const int64_t img1 = G.n * (t + 1) / T;
    for (int64_t img = G.n * t / T; img < img1; ++img) {
      pad_image(xp, x + img * hwc, G, hp, wp, P.flip);
      float* yi = y + img * yimg;
      // before output row pp, a 1/P share of the next image's x and y: its padding copy and its
      // stores then find their lines in cache (cold operands, batch 64 on the Zen 4 guest:
      // 6-23% off the 3x3 forwards, most on the stride-2 ones; hot, within 2%)
      const bool next = img + 1 < img1;
      const PrefetchShares px{next ? x + (img + 1) * hwc : nullptr, hwc, G.p, false};
      const PrefetchShares py{next ? yi + yimg : nullptr, 4 * yimg, G.p, true};
      const auto ahead = [&](int64_t pp) {
        px.share(pp);
        py.share(pp);
      };
      if (!ex.on) {
        for (int64_t pp = 0; pp < G.p; ++pp) {
          ahead(pp);
          const i8::Epi e{mode, yi + pp * G.q * G.k, G.k, cs, bias};
          i8::gemm_block(P, G.q, G.k, kdp, xp + pp * G.sh * wp * G.c, rs, bp, comp, e, koff);
        }
        continue;
      }
      // each output row over its inside window rows [rlo, rhi), interior columns only: a run of
      // B's k-groups (panel stride k4) with that run's comp
      for (int64_t pp = 0; pp < G.p; ++pp) {
        ahead(pp);
        const Span r = tap_span(pp, G.sh, G.ph, G.h, G.r);
        const int64_t t0 = r.lo * sc4 / 4;
        const i8::Epi e{mode, yi + (pp * G.q + ex.q0) * G.k, G.k, cs, bias};
        i8::gemm_block(ex.pr, ex.q1 - ex.q0, G.k, (r.hi - r.lo) * sc4,
                       xp + pp * G.sh * wp * G.c + ex.q0 * rs, rs, bp + 4 * t0 * P.nr,
                       ex.comp_of(r.lo, r.hi), e, koff + t0, k4);
      }
      // each border column down all output rows, its own weights (the padding rows it meets
      // are the flip, which its comp cancels: only the corners multiply padding)
      for (int64_t i = 0; i < ex.nbc; ++i) {
        const ExactI8::Col& c = ex.cols[i];
        const i8::Epi e{mode, yi + c.q * G.k, G.q * G.k, cs, bias};
        i8::gemm_block(ex.pc, G.p, G.k, G.r * c.sc4, xp + (c.q * G.sw + c.slo) * G.c,
                       G.sh * wp * G.c, c.bp, c.comp, e, c.koff);
      }
    }
  });
  return true;
}

// fprop of an ungrouped pointwise conv with few rows (a fully connected layer at a small batch:
// m = the batch) and large weights, B streamed: the threads take runs of B's panels and pack each
// one right before its GEMM, which then finds it in cache, so the weights cross memory once
// (packing all of B first and then running the GEMM wrote and re-read it: VGG-16's 25088 x 4096
// fc weights, 102 MB; and two row tiles read it twice). One tile down all m <= 28 rows (16
// columns wide on avx512-vnni). w_cols as fwd_core.
constexpr int64_t kStreamRows = 28;
bool fwd_stream_b(float* y, const int8_t* x, const int8_t* w, const float* cs, const float* bias,
                  const Geom& G, int mode, bool w_cols) {
  if (G.g != 1 || !G.pointwise || G.m > kStreamRows || G.kg * G.kd < (int64_t{1} << 20))
    return false;
  const i8::Plan P = i8::plan_for(16, G.m);
  const int64_t lda = 4 * i8::k4_of(G.kd), mpad = round_up(G.m, P.mr);
  uint8_t* a = scratch_bytes<uint8_t>(kSlotConvCol, mpad * lda);
  i8::pack_a_rows(a, lda, x, G.c, G.m, G.kd, P.flip, mpad);
  // panels per pack: by rows one (nr rows of K contiguous bytes); by columns up to 512 columns (a
  // run of 512 bytes of each of the K source rows, each source page visited once per run) and 2
  // MiB packed: 4096 x 25088 fc dgrad (VGG-16), Zen 4, 2 threads: 17-23 ms with 128 columns,
  // 16.2-16.8 with 512 or 1024
  const int64_t gp =
      w_cols ? std::clamp<int64_t>((int64_t{2} << 20) / (P.nr * G.kd), 1, 512 / P.nr) : 1;
  const int64_t pb = round_up(i8::packb_bytes(gp * P.nr, G.kd, P.nr), 64), per = pb + 4 * gp * P.nr;
  const int nt = threads_for(G.m * G.k * G.kd, kMacsPerThread);
  char* buf = scratch_bytes<char>(kSlotConvB, nt * per);
  const int64_t steps = ceil_div(G.kg, gp * P.nr);
  parallel(nt, [&](int t, int T) {
    int8_t* bp = reinterpret_cast<int8_t*>(buf + t * per);
    int32_t* comp = reinterpret_cast<int32_t*>(buf + t * per + pb);
    for (int64_t pi = steps * t / T; pi < steps * (t + 1) / T; ++pi) {
      const int64_t j0 = pi * gp * P.nr, nc = std::min<int64_t>(gp * P.nr, G.kg - j0);
      if (w_cols)
        i8::pack_b_cols(bp, comp, w + j0, G.k, nc, G.kd, P);
      else
        i8::pack_b_rows(bp, comp, w + j0 * G.kd, G.kd, nc, G.kd, P);
      const i8::Epi e{mode, y + j0, G.k, cs + j0, bias ? bias + j0 : nullptr};
      i8::gemm_block(P, G.m, nc, G.kd, a, lda, bp, comp, e);
    }
  });
  return true;
}

// y [M, K] f32 = conv(x, w) * cs[k] (+ bias[k]).  x [N, H, W, C] int8, w [K, R, S, Cg] int8.
// mode kAddF32 adds into y instead (no bias; the gather dgrad with D8_CONV_ACCUMULATE). w_cols: w
// is [KD][K] instead (ungrouped pointwise convs only: a pointwise dgrad's own weights, packed by
// columns).
void fwd_core(float* y, const int8_t* x, const int8_t* w, const float* cs, const float* bias,
              const Geom& G, int mode = i8::kStoreF32, bool w_cols = false) {
  // (adding: the grouped im2col form below; the dgrads never get here with depthwise shapes)
  if (G.depthwise && mode == i8::kStoreF32) return depthwise_fwd(y, x, w, cs, bias, G);
  if (!w_cols && fwd_implicit(y, x, FwdWeights{w}, cs, bias, G, mode)) return;
  if (fwd_stream_b(y, x, w, cs, bias, G, mode, w_cols)) return;
  const i8::Plan P = i8::plan_for(G.kg);
  const int64_t lda = 4 * i8::k4_of(G.kd);
  // Weights of group g packed once: B[j, kk] = w[(g*Kg + j)*KD + kk], then comp.
  const int64_t bpb = round_up(i8::packb_bytes(G.kg, G.kd, P.nr), 64);
  const int64_t per_g = bpb + round_up(4 * i8::comp_len(G.kg, P.nr), 64);
  char* bbuf = scratch_bytes<char>(kSlotConvB, per_g * G.g);
  if (G.g == 1) {
    pack_b_par(w_cols, reinterpret_cast<int8_t*>(bbuf), reinterpret_cast<int32_t*>(bbuf + bpb), w,
               w_cols ? G.k : G.kd, G.kg, G.kd, P);
  } else {
    parallel_for(G.g, 1, [&](int64_t b, int64_t e) {
      for (int64_t g = b; g < e; ++g)
        i8::pack_b_rows(reinterpret_cast<int8_t*>(bbuf + g * per_g),
                        reinterpret_cast<int32_t*>(bbuf + g * per_g + bpb), w + g * G.kg * G.kd,
                        G.kd, G.kg, G.kd, P);
    });
  }

  const int nt = threads_for(G.m * G.k * G.kd, kMacsPerThread);
  // A block: L2-sized when several B panels reuse it, L1-sized when there is one panel.
  const int64_t ch = chunk_rows(G.m, lda, nt, P.mr, G.kg > P.nr ? kAChunkBytes : kAChunkBytesL1);
  const int64_t nchunks = ceil_div(G.m, ch);
  const int64_t abytes = round_up(round_up(ch, P.mr) * lda, 64);
  uint8_t* abuf = scratch_bytes<uint8_t>(kSlotConvCol, nt * abytes);
  parallel(nt, [&](int t, int T) {
    uint8_t* at = abuf + t * abytes;
    for (int64_t ci = nchunks * t / T; ci < nchunks * (t + 1) / T; ++ci) {
      const int64_t m0 = ci * ch, cnt = std::min(ch, G.m - m0), mpad = round_up(cnt, P.mr);
      for (int64_t g = 0; g < G.g; ++g) {
        if (G.pointwise) {
          i8::pack_a_rows(at, lda, x + m0 * G.c + g * G.cg, G.c, cnt, G.cg, P.flip, mpad);
        } else {
          im2col_i8(at, lda, x, G, m0, cnt, g, P.flip);
          fill(at + cnt * lda, (mpad - cnt) * lda, P.flip);
        }
        const i8::Epi e{mode, y + m0 * G.k + g * G.kg, G.k, cs + g * G.kg,
                        bias ? bias + g * G.kg : nullptr};
        const int8_t* bp = reinterpret_cast<const int8_t*>(bbuf + g * per_g);
        const int32_t* comp = reinterpret_cast<const int32_t*>(bbuf + g * per_g + bpb);
        i8::gemm_block(P, cnt, G.kg, G.kd, at, lda, bp, comp, e);
      }
    }
  });
}

// Strided dgrad as implicit GEMMs by phase (ungrouped convs, stride > 1 in either dimension): the
// dx pixels with (ih + ph) % sh == u and (iw + pw) % sw == v receive exactly the taps r = u + sh*j,
// s = v + sw*l (j < Ju = ceil((R - u) / sh), l < Jv), from dy[a - j][b - l] where ih + ph = sh*a
// + u, iw + pw = sw*b + v. Each phase is a stride-1 correlation of dy with a Ju x Jv kernel and C
// output columns, run like fwd_implicit: dy copied per image into a padded buffer (the offset
// flip applied; Jmax - 1 rows / columns before, enough after), the tile reads it through a
// k-group offset table (negative offsets: taps look back), the weights of the phase re-laid as
// [C][Ju][Jv][K4] (K4 = round_up(K, 4), zeros past K) and packed, and the epilogue writes dx rows
// directly (ldc = sw*C: consecutive tile rows are sw pixels apart). No dcol, no col2im. Where a
// phase has no taps (R < sh or S < sw), the image's dx is zeroed first and that phase skipped.
// Returns false (the caller scatters) when it does not apply: grouped convs, fewer images than
// threads, or D8_CPU_CONV_PATH=im2col.
bool dgrad_phases(float* dx, const int8_t* dy, const int8_t* w, float scale, const Geom& G,
                  bool acc) {
  if (G.g != 1 || (G.sh == 1 && G.sw == 1) || forced_path() == kIm2col) return false;
  const int want = threads_for(G.m * G.k * G.kd, kMacsPerThread);
  if (G.n < want) return false;
  const int nt = want;
  const int64_t k4b = round_up(G.k, 4);  // bytes per tap in the reduction
  const int64_t jmax = ceil_div(G.r, G.sh), lmax = ceil_div(G.s, G.sw);
  // a ranges over [0, amax): ih = sh*a + u - ph < H for some u; rows a - j for j < jmax
  const int64_t amax = ceil_div(G.h + G.ph, G.sh), bmax = ceil_div(G.w + G.pw, G.sw);
  const int64_t top = jmax - 1, left = lmax - 1;
  const int64_t hq = top + std::max(amax, G.p), wq = left + std::max(bmax, G.q);
  const int64_t rowb = wq * G.k;
  // one plan for every phase (C columns, rows of the longest phase row: 14 pixels for a 28-wide
  // dx at stride 2, where bmax is 15 and a 15-row tile would multiply a row nobody stores); per
  // phase (u, v) its tap counts, packed weights, comp and koff
  int64_t nbmax = 1;
  for (int64_t v = 0; v < G.sw; ++v) {
    const PhaseRange pr = phase_range(G, 0, v);
    if (pr.jv > 0) nbmax = std::max(nbmax, pr.b_hi - pr.b_lo + 1);
  }
  // k-group pairs (int8_gemm.h) where a tap holds whole pairs
  i8::Plan P = i8::plan_for(G.c, nbmax, k4b % 8 == 0);
  i8::set_runs(P, k4b / 4);  // amx chunks stay inside a tap
  struct Phase {
    int64_t u, v, ju, jv, kd;
    int8_t* bp;
    int32_t* comp;
    int32_t* koff;
    PhaseRange pr;  // its dx rows and columns
  };
  std::vector<Phase> ph;
  int64_t bytes = 0, offs = 0;
  for (int64_t u = 0; u < G.sh; ++u)
    for (int64_t v = 0; v < G.sw; ++v) {
      const PhaseRange pr = phase_range(G, u, v);
      const int64_t ju = pr.ju, jv = pr.jv;
      Phase f{u, v, ju, jv, ju * jv * k4b, nullptr, nullptr, nullptr, pr};
      if (f.kd > 0) {
        bytes += round_up(i8::packb_bytes(G.c, f.kd, P.nr), 64) +
                 round_up(4 * i8::comp_len(G.c, P.nr), 64);
        offs += f.kd / 4;
      }
      ph.push_back(f);
    }
  // each phase's weights packed, its comp and koff: one copy per thread (kOwnWeightsBytes, as
  // fwd_implicit) or one shared
  const int64_t koffb = round_up(4 * std::max<int64_t>(offs, 1), 64);
  const int64_t wtb = round_up(G.c * std::max<int64_t>(jmax * lmax * k4b, 1), 64);
  const PrepCopies copies(nt, round_up(bytes, 64) + koffb + wtb);
  // fills ph's bp, comp and koff (fs: a copy of ph, per thread) from buf
  const auto prepare = [&](std::vector<Phase>& fs, char* buf) {
    char* pb = buf;
    int32_t* po = reinterpret_cast<int32_t*>(buf + round_up(bytes, 64));
    int8_t* wt = reinterpret_cast<int8_t*>(buf + round_up(bytes, 64) + koffb);
    for (Phase& f : fs) {
      if (f.kd == 0) continue;
      // wt[c][j][l][kk] = w[kk][u + sh*j][v + sw*l][c], zeros for kk >= K: a K x C transpose
      // per tap, the threads taking taps once they are worth a fork (>= 32 KB each; ResNet-20's
      // are 0.5-2 KB, and a fork-join per phase showed in the step on a shared 2-core VM)
      parallel_for(f.ju * f.jv, std::max<int64_t>(1, (int64_t{1} << 15) / (G.k * G.c)),
                   [&](int64_t b, int64_t e) {
        for (int64_t tj = b; tj < e; ++tj) {
          const int64_t r = f.u + G.sh * (tj / f.jv), sc = f.v + G.sw * (tj % f.jv);
          int8_t* d = wt + tj * k4b;
          transpose_i8(d, f.kd, w + (r * G.s + sc) * G.c, G.kd, G.k, G.c);
          if (k4b > G.k)
            for (int64_t c = 0; c < G.c; ++c)
              std::memset(d + c * f.kd + G.k, 0, static_cast<size_t>(k4b - G.k));
        }
      });
      f.bp = reinterpret_cast<int8_t*>(pb);
      pb += round_up(i8::packb_bytes(G.c, f.kd, P.nr), 64);
      f.comp = reinterpret_cast<int32_t*>(pb);
      pb += round_up(4 * i8::comp_len(G.c, P.nr), 64);
      pack_b_par(false, f.bp, f.comp, wt, f.kd, G.c, f.kd, P);
      i8::pair_panels(P, f.bp, f.kd / 4, ceil_div(G.c, P.nr));
      f.koff = po;
      for (int64_t t = 0; t < f.kd / 4; ++t) {
        const int64_t tap = (4 * t) / k4b, kk = (4 * t) % k4b, j = tap / f.jv, l = tap % f.jv;
        po[t] = static_cast<int32_t>(-(j * wq + l) * G.k + kk);
      }
      po += f.kd / 4;
    }
  };
  if (!copies.own) prepare(ph, copies.of(0));
  // the threads' copies of ph (allocated here: a region's function must not throw)
  std::vector<std::vector<Phase>> mine(copies.own ? static_cast<size_t>(nt) : 0, ph);
  float* cs = scratch_bytes<float>(kSlotMisc, G.c * 4);
  for (int64_t c = 0; c < G.c; ++c) cs[c] = scale;

  // per-thread padded dy: hq x wq pixels, plus slack for the tile's extra rows and group reads
  const int64_t img_bytes = hq * rowb, dyp_bytes = round_up(img_bytes + P.mr * G.k + 64, 64);
  uint8_t* all = scratch_bytes<uint8_t>(kSlotConvPad, nt * dyp_bytes);
  const uint8_t flip = P.flip;
  const int64_t pqk = G.p * G.q * G.k, hwc = G.h * G.w * G.c;
  const bool empty_phase =
      std::any_of(ph.begin(), ph.end(), [](const Phase& f) { return f.kd == 0; });
  int64_t steps = 0;  // GEMMs per image (one per phase row)
  for (const Phase& f : ph)
    if (!f.pr.empty()) steps += f.pr.a_hi - f.pr.a_lo + 1;
  parallel(nt, [&](int t, int T) {
    std::vector<Phase>& fs = copies.own ? mine[static_cast<size_t>(t)] : ph;
    if (copies.own) prepare(fs, copies.of(t));
    uint8_t* dyp = all + t * dyp_bytes;
    fill(dyp, dyp_bytes, flip);
    const int64_t img1 = G.n * (t + 1) / T;
    for (int64_t img = G.n * t / T; img < img1; ++img) {
      const int8_t* dyi = dy + img * pqk;
      // before GEMM i of this image, a 1/steps share of the next image's dx and dy: the phases'
      // strided stores defeat the hardware prefetchers, and cold dx lines stalled every tile
      // (16->32 stride 2 at batch 64, cold: 0.38 -> 0.21 ms on the Zen 4 guest)
      const bool next = img + 1 < img1;
      const PrefetchShares pdx{next ? dx + (img + 1) * hwc : nullptr, 4 * hwc, steps, true};
      const PrefetchShares pdy{next ? dy + (img + 1) * pqk : nullptr, pqk, steps, false};
      int64_t step = 0;
      const auto ahead = [&]() {
        pdx.share(step);
        pdy.share(step++);
      };
      for (int64_t a = 0; a < G.p; ++a)
        xor_copy(dyp + (a + top) * rowb + left * G.k, dyi + a * G.q * G.k, G.q * G.k, flip);
      float* dxi = dx + img * hwc;
      // phases without taps (1x1 stride 2: three of four) are zeros: one memset of the image
      if (empty_phase && !acc) std::memset(dxi, 0, static_cast<size_t>(hwc) * sizeof(float));
      for (const Phase& f : fs) {
        // dx rows / columns of this phase: ih = sh*a + u - ph in [0, H), iw likewise
        const PhaseRange& pr = f.pr;
        if (pr.empty()) continue;
        const int64_t a_lo = pr.a_lo, a_hi = pr.a_hi, b_lo = pr.b_lo, b_hi = pr.b_hi;
        const int64_t nb = b_hi - b_lo + 1;
        for (int64_t a = a_lo; a <= a_hi; ++a) {
          ahead();
          float* drow = dxi + ((G.sh * a + f.u - G.ph) * G.w + (G.sw * b_lo + f.v - G.pw)) * G.c;
          const i8::Epi e{acc ? i8::kAddF32 : i8::kStoreF32, drow, G.sw * G.c, cs, nullptr};
          i8::gemm_block(P, nb, G.c, f.kd, dyp + (a + top) * rowb + (b_lo + left) * G.k, G.k,
                         f.bp, f.comp, e, f.koff);
        }
      }
    }
  });
  return true;
}

// Scatter dgrad without a dcol buffer (ungrouped convs; dgrad_core takes it where the gather form
// costs more: few input channels, e.g. LeNet-5's conv2). For dy column q of an image and kernel
// row r, one GEMM of P rows x S*C columns x K: row a holds pixel (a, q)'s contributions to dx row
// a*sh + r, columns q*sw .. q*sw + S - 1, which the epilogue adds (kAddF32) into a zeroed
// per-image dx buffer padded to every window's extent; its interior is then the image's dx.
// Rows of one GEMM land in different dx rows: no tile's store overlaps the next row's load (the
// rows of a pixel row would, at C floats apart, and stall store forwarding). B_r[s*C + c][k] =
// w[k][r][s][c] packed once per r. Threads take whole images. The dcol form wrote and re-read
// R*S*C floats per dy pixel; here each contribution goes once into an L1-sized buffer.
void dgrad_scatter(float* dx, const int8_t* dy, const int8_t* w, float scale, const Geom& G,
                   bool acc) {
  const int nt = static_cast<int>(
      std::min<int64_t>(threads_for(G.m * G.k * G.kd, kMacsPerThread), G.n));
  const int64_t sc = G.s * G.c, k4b = round_up(G.k, 4);
  const i8::Plan P = i8::plan_for(sc, G.p);
  const int64_t bpr = round_up(i8::packb_bytes(sc, G.k, P.nr), 64);
  const int64_t cpr = round_up(4 * i8::comp_len(sc, P.nr), 64);
  // B_r per kernel row r, per thread where small (PrepCopies)
  const PrepCopies copies(nt, G.r * (bpr + cpr));
  const auto prepare = [&](char* bbuf) {
    for (int64_t r = 0; r < G.r; ++r)
      i8::pack_b_cols(reinterpret_cast<int8_t*>(bbuf + r * (bpr + cpr)),
                      reinterpret_cast<int32_t*>(bbuf + r * (bpr + cpr) + bpr), w + r * sc, G.kd,
                      sc, G.k, P);
  };
  if (!copies.own) prepare(copies.of(0));
  float* cs = scratch_bytes<float>(kSlotMisc, sc * 4);
  for (int64_t j = 0; j < sc; ++j) cs[j] = scale;
  // dx buffer rows / columns: every window's extent, and all of dx past the padding
  const int64_t hb = std::max((G.p - 1) * G.sh + G.r, G.ph + G.h);
  const int64_t wb = std::max((G.q - 1) * G.sw + G.s, G.pw + G.w);
  const int64_t dxb = round_up(hb * wb * G.c * 4, 64);
  // dy of one image, the offset flip applied, k4b bytes per pixel; a tile reads MR rows Q pixels
  // apart from its first
  const int64_t dyb = round_up((std::max<int64_t>(G.p, P.mr) + 1) * G.q * k4b, 64);
  char* work = scratch_bytes<char>(kSlotConvWork, nt * (dxb + dyb));
  const int64_t pqk = G.p * G.q * G.k, hwc = G.h * G.w * G.c;
  parallel(nt, [&](int t, int T) {
    char* bbuf = copies.of(t);
    if (copies.own) prepare(bbuf);
    float* dxp = reinterpret_cast<float*>(work + t * (dxb + dyb));
    uint8_t* dyc = reinterpret_cast<uint8_t*>(work + t * (dxb + dyb) + dxb);
    fill(dyc, dyb, P.flip);
    for (int64_t img = G.n * t / T; img < G.n * (t + 1) / T; ++img) {
      const int8_t* dyi = dy + img * pqk;
      if (k4b == G.k) {
        xor_copy(dyc, dyi, pqk, P.flip);
      } else {
        for (int64_t i = 0; i < G.p * G.q; ++i) xor_copy(dyc + i * k4b, dyi + i * G.k, G.k, P.flip);
      }
      std::memset(dxp, 0, static_cast<size_t>(hb * wb * G.c) * sizeof(float));
      for (int64_t q = 0; q < G.q; ++q)
        for (int64_t r = 0; r < G.r; ++r) {
          const char* br = bbuf + r * (bpr + cpr);
          const i8::Epi e{i8::kAddF32, dxp + (r * wb + q * G.sw) * G.c, G.sh * wb * G.c, cs,
                          nullptr};
          i8::gemm_block(P, G.p, sc, G.k, dyc + q * k4b, G.q * k4b,
                         reinterpret_cast<const int8_t*>(br),
                         reinterpret_cast<const int32_t*>(br + bpr), e);
        }
      float* dxi = dx + img * hwc;
      for (int64_t ih = 0; ih < G.h; ++ih) {
        float* d = dxi + ih * G.w * G.c;
        const float* src = dxp + ((ih + G.ph) * wb + G.pw) * G.c;
        if (acc) {
          for (int64_t i = 0; i < G.w * G.c; ++i) d[i] += src[i];
        } else {
          std::memcpy(d, src, static_cast<size_t>(G.w * G.c) * sizeof(float));
        }
      }
    }
  });
}

// dx [N, H, W, C] f32 = dgrad(dy, w) * scale, or dx += that when acc (D8_CONV_ACCUMULATE): every
// form adds in its epilogue or final copy, no extra pass over dx.
void dgrad_core(float* dx, const int8_t* dy, const int8_t* w, float scale, const Geom& G,
                bool acc) {
  if (G.depthwise) return depthwise_dgrad(dx, dy, w, scale, G, acc);
  // Two forms, as conv.cpp's dgrad: gather (stride 1, pad <= kernel-1: dx = fprop(dy, flipped
  // weights), N = C; strided: by phase, each dx pixel taking R*S/(sh*sw) taps on average) or
  // scatter (dy . W added into dx, N = S*C per kernel row); the cheaper by tile columns x
  // reduction plus data movement. Few input channels (LeNet-5's conv2: C = 6 of a 16-column tile,
  // pad 4 around a 10x10 dy; a 3-channel 7x7 stride-2 stem, 12.0 ms by phase against 4.9 ms
  // scattered at batch 8, 224 px) scatter: dgrad_scatter for g == 1 (no dcol buffer), the dcol +
  // col2im form below for grouped convs.
  const int64_t nr = i8::plan_for(G.c).nr;
  const double gather_cost = static_cast<double>(G.n * G.h * G.w) * ceil_div(G.cg, nr) * nr *
                             (G.r * G.s * G.kg) * G.g;
  const double scatter_cost = static_cast<double>(G.m) * G.g *
                              (G.kg * ceil_div(G.kd, nr) * nr + G.kd * 8.0);
  if (gather_cost / static_cast<double>(G.sh * G.sw) <= scatter_cost &&
      dgrad_phases(dx, dy, w, scale, G, acc))
    return;
  if (dgrad_as_fwd(G) && gather_cost <= scatter_cost) {  // dx = conv(dy, w') (conv_geom.h)
    if (G.pointwise && G.g == 1) {  // w' = W^T: B is W packed by columns, no transposed copy
      float* cs = scratch_bytes<float>(kSlotMisc, G.c * 4);
      for (int64_t c = 0; c < G.c; ++c) cs[c] = scale;
      return fwd_core(dx, dy, w, cs, nullptr, make_geom(dgrad_as_fwd_shape(G)),
                      acc ? i8::kAddF32 : i8::kStoreF32, true);
    }
    float* cs = scratch_bytes<float>(kSlotMisc, G.c * 4);
    for (int64_t c = 0; c < G.c; ++c) cs[c] = scale;
    const Geom F = make_geom(dgrad_as_fwd_shape(G));
    const int mode = acc ? i8::kAddF32 : i8::kStoreF32;
    // the implicit forward flips and transposes the weights itself (per thread where small)
    if (G.g == 1 && fwd_implicit(dx, dy, FwdWeights{w, &G}, cs, nullptr, F, mode)) return;
    int8_t* wt = scratch_bytes<int8_t>(kSlotConvPartial, G.c * G.r * G.s * G.kg);
    flip_transpose_weights(wt, w, G, transpose_i8);  // 16 x 16 SSE2 blocks
    return fwd_core(dx, dy, wt, cs, nullptr, F, mode);
  }

  if (G.g == 1) return dgrad_scatter(dx, dy, w, scale, G, acc);
  // Grouped: dcol = dy . W_g (B[j, kk] = w[(g*Kg + kk)*KD + j]), then scatter-add.
  const i8::Plan P = i8::plan_for(G.kd);
  const int64_t lda = 4 * i8::k4_of(G.kg);
  const int64_t bpb = round_up(i8::packb_bytes(G.kd, G.kg, P.nr), 64);
  const int64_t per_g = bpb + round_up(4 * i8::comp_len(G.kd, P.nr), 64);
  char* bbuf = scratch_bytes<char>(kSlotConvB, per_g * G.g);
  for (int64_t g = 0; g < G.g; ++g)
    i8::pack_b_cols(reinterpret_cast<int8_t*>(bbuf + g * per_g),
                    reinterpret_cast<int32_t*>(bbuf + g * per_g + bpb), w + g * G.kg * G.kd, G.kd,
                    G.kd, G.kg, P);
  float* cs = scratch_bytes<float>(kSlotMisc, G.kd * 4);
  for (int64_t j = 0; j < G.kd; ++j) cs[j] = scale;

  int nt = threads_for(G.m * G.k * G.kd, kMacsPerThread);
  nt = static_cast<int>(std::min<int64_t>(nt, G.n));
  const int64_t ch = chunk_rows(G.m, lda + 4 * G.kd, nt, P.mr, kAChunkBytes);
  const int64_t abytes = round_up(round_up(ch, P.mr) * lda, 64);
  const int64_t dbytes = round_up(ch * G.kd * 4, 64);
  char* work = scratch_bytes<char>(kSlotConvCol, nt * (abytes + dbytes));
  const int64_t pq = G.p * G.q, hwc = G.h * G.w * G.c;
  parallel(nt, [&](int t, int T) {
    uint8_t* at = reinterpret_cast<uint8_t*>(work + t * (abytes + dbytes));
    float* dcol = reinterpret_cast<float*>(work + t * (abytes + dbytes) + abytes);
    const int64_t i0 = G.n * t / T, i1 = G.n * (t + 1) / T;
    if (!acc) std::memset(dx + i0 * hwc, 0, static_cast<size_t>((i1 - i0) * hwc) * sizeof(float));
    for (int64_t m0 = i0 * pq; m0 < i1 * pq; m0 += ch) {
      const int64_t cnt = std::min(ch, i1 * pq - m0);
      for (int64_t g = 0; g < G.g; ++g) {
        i8::pack_a_rows(at, lda, dy + m0 * G.k + g * G.kg, G.k, cnt, G.kg, P.flip,
                        round_up(cnt, P.mr));
        const i8::Epi e{i8::kStoreF32, dcol, G.kd, cs, nullptr};
        i8::gemm_block(P, cnt, G.kd, G.kg, at, lda,
                       reinterpret_cast<const int8_t*>(bbuf + g * per_g),
                       reinterpret_cast<const int32_t*>(bbuf + g * per_g + bpb), e);
        col2im_add(dx, dcol, G, m0, cnt, g);
      }
    }
  });
}

// dw [K, KD] f32 = (dy^T . col) * row_scale[k].
// VNNI offset without per-chunk column sums: each group's A block gets one extra row of ones
// (u8 1), so the GEMM itself accumulates colsum(B) in that row of C; the flush subtracts 128 times
// it (mod 2^32: exact, since the true sums fit in int32).
// C[i, j] without the +128 offset: v - 128 * colsum (mod 2^32), colsum = the row of ones.
inline int32_t unbiased(int32_t v, int32_t colsum, bool ones) {
  uint32_t u = static_cast<uint32_t>(v);
  if (ones) u -= 128u * static_cast<uint32_t>(colsum);
  return static_cast<int32_t>(u);
}

// n columns of dw (from dw's column 0 on; row stride KD) from an int32 C block [K + 1][n] whose
// last row holds the column sums (the row of ones), unbiased and scaled per row.
void store_dw_cols(float* dw, const int32_t* c, int64_t n, const double* row_scale, const Geom& G,
                   bool ones) {
  const int32_t* cs = c + G.k * n;  // read only with the row of ones (C has K rows without it)
#if defined(__AVX512F__)
  // A dw of 16 MiB and more goes to memory anyway: non-temporal stores skip reading its lines
  // first (whole aligned lines only; VGG-16's 25088 x 4096 fc wgrad at batch 16, Zen 4, 2
  // threads: 43 -> 24 ms). Same values as the loop below (int32 -> double, one product, rounded
  // to float once).
  if (G.k * G.kd >= (int64_t{1} << 22) && n % 16 == 0 && G.kd % 16 == 0 &&
      reinterpret_cast<uintptr_t>(dw) % 64 == 0) {
    const __m512i c128 = _mm512_set1_epi32(128);
    for (int64_t i = 0; i < G.k; ++i) {
      float* o = dw + i * G.kd;
      const int32_t* ci = c + i * n;
      const __m512d s = _mm512_set1_pd(row_scale[i]);
      for (int64_t j = 0; j < n; j += 16) {
        __m512i v = _mm512_loadu_si512(ci + j);
        if (ones) v = _mm512_sub_epi32(v, _mm512_mullo_epi32(c128, _mm512_loadu_si512(cs + j)));
        // (maskz_ forms with full masks: the plain ones trip -Wmaybe-uninitialized in GCC 12)
        const auto half = [&](__m256i h) {
          return _mm512_maskz_cvtpd_ps(0xFF, _mm512_mul_pd(_mm512_maskz_cvtepi32_pd(0xFF, h), s));
        };
        const __m256 lo = half(_mm512_maskz_extracti64x4_epi64(0xF, v, 0));
        const __m256 hi = half(_mm512_maskz_extracti64x4_epi64(0xF, v, 1));
        _mm256_stream_ps(o + j, lo);
        _mm256_stream_ps(o + j + 8, hi);
      }
    }
    _mm_sfence();
    return;
  }
#endif
  for (int64_t i = 0; i < G.k; ++i) {
    float* __restrict o = dw + i * G.kd;
    const int32_t* ci = c + i * n;
    const double s = row_scale[i];
    for (int64_t j = 0; j < n; ++j)
      o[j] = static_cast<float>(static_cast<double>(unbiased(ci[j], ones ? cs[j] : 0, ones)) * s);
  }
}

// Pointwise wgrad with a short reduction (linear layers: M = the batch): the threads split the KD
// columns of dw instead of the M rows, so each computes its block of dw exactly in one int32 GEMM
// over all M rows (no per-thread copy of dw, no double partial sums, no combine pass). Each thread
// packs dy^T (K rows and the row of ones, small at these M) and its columns of x. Returns false
// (the row-split form runs) for grouped convs and M beyond kShortWgradRows.
constexpr int64_t kShortWgradRows = 1024;
constexpr int64_t kShortCBytes = 512 * 1024;
bool wgrad_short(float* dw, const int8_t* x, const int8_t* dy, const double* row_scale,
                 const Geom& G, const i8::Plan& P, bool ones) {
  if (!G.pointwise || G.g != 1 || G.m > kShortWgradRows) return false;
  const int64_t kga = G.k + (ones ? 1 : 0), lda = round_up(G.m, 4);
  const int64_t panels = ceil_div(G.kd, P.nr);
  const int nt = static_cast<int>(
      std::min<int64_t>(threads_for(G.m * G.k * G.kd, kMacsPerThread), panels));
  // columns per block: whole panels, the block's int32 C at most kShortCBytes (L2), converted
  // into dw right after its GEMM (one C of all a thread's columns, 205 MB for VGG-16's 25088 x
  // 4096 fc, went through memory twice more: 58-63 -> 43 ms)
  const int64_t cols =
      std::min(ceil_div(panels, nt), std::max<int64_t>(1, kShortCBytes / (4 * kga * P.nr))) * P.nr;
  const int64_t ab = round_up((kga + P.mr) * lda, 64);
  const int64_t bb = round_up(i8::packb_bytes(cols, G.m, P.nr), 64);
  const int64_t cb = round_up(4 * kga * cols, 64), zb = round_up(4 * cols, 64);
  char* work = scratch_bytes<char>(kSlotConvWork, nt * (ab + bb + cb) + zb);
  int32_t* zero_comp = reinterpret_cast<int32_t*>(work + nt * (ab + bb + cb));
  std::memset(zero_comp, 0, static_cast<size_t>(zb));
  parallel(nt, [&](int t, int T) {
    const int64_t j0 = std::min(G.kd, panels * t / T * P.nr);
    const int64_t j1 = std::min(G.kd, panels * (t + 1) / T * P.nr);
    if (j1 <= j0) return;
    uint8_t* at = reinterpret_cast<uint8_t*>(work + t * (ab + bb + cb));
    int8_t* bp = reinterpret_cast<int8_t*>(at + ab);
    int32_t* c = reinterpret_cast<int32_t*>(at + ab + bb);
    i8::pack_a_cols(at, lda, dy, G.k, G.k, G.m, P.flip, G.k);
    if (ones) fill(at + G.k * lda, lda, 1);
    fill(at + kga * lda, P.mr * lda, P.flip);
    for (int64_t jb = j0; jb < j1; jb += cols) {
      const int64_t n = std::min(cols, j1 - jb);
      i8::pack_b_cols(bp, nullptr, x + jb, G.c, n, G.m, P);
      i8::gemm_block(P, kga, n, G.m, at, lda, bp, zero_comp, {i8::kStoreI32, c, n, nullptr, nullptr});
      store_dw_cols(dw + jb, c, n, row_scale, G, ones);
    }
  });
  return true;
}

// The direct gather's source: x itself, or a zero-padded copy of the batch when the conv pads
// (Gb then describes the copy). Every window is then inside it, and pack_b_im2col takes its
// branch-free interior path for every group of four pixels (with 28x28 maps and pad 1 about 30%
// of them touch the border).
const int8_t* wgrad_source(const int8_t* x, const Geom& G, Geom& Gb) {
  Gb = G;
  if (!(G.ph > 0 || G.pw > 0 || padded_h(G) > G.h || padded_w(G) > G.w)) return x;
  const int64_t hp = padded_h(G), wp = padded_w(G), img = hp * wp * G.c, hwc = G.h * G.w * G.c;
  uint8_t* xp = scratch_bytes<uint8_t>(kSlotConvPad, G.n * img + 64);
  parallel_for(G.n, std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(img, 1)),
               [&](int64_t b, int64_t e) {
                 for (int64_t i = b; i < e; ++i) pad_image(xp + i * img, x + i * hwc, G, hp, wp, 0);
               });
  Gb.h = hp, Gb.w = wp, Gb.ph = Gb.pw = 0;
  return reinterpret_cast<const int8_t*>(xp);
}

// Which wgrad form runs: D8_CPU_WGRAD=rows|cols|quads|quads-filters forces one where the shape
// allows it (tests, benchmarks; quads: the image quads with the threads splitting the reduction,
// quads-filters: splitting the filters); unset, the shape decides (wgrad_by_cols, wgrad_quads).
enum WgradForm { kWgradAuto, kWgradRows, kWgradCols, kWgradQuads, kWgradQuadsFilters };
WgradForm forced_wgrad() {
  static const WgradForm f = [] {
    const char* e = std::getenv("D8_CPU_WGRAD");
    if (e && !std::strcmp(e, "rows")) return kWgradRows;
    if (e && !std::strcmp(e, "cols")) return kWgradCols;
    if (e && !std::strcmp(e, "quads")) return kWgradQuads;
    if (e && !std::strcmp(e, "quads-filters")) return kWgradQuadsFilters;
    return kWgradAuto;
  }();
  return f;
}

// wgrad split by columns (ungrouped, direct gather, M within one int32 partial). When dw is large
// next to the reduction (late layers: 512 channels at 7x7) the row-split form below costs more in
// its per-thread int32 and double copies of dw and their combine than in the GEMM. Here the
// threads split dw's columns instead: A = dy^T with the row of ones is packed once and shared;
// each thread runs its columns in blocks whose int32 C stays in L2, over the reduction in chunks
// whose A block stays in L2, gathering B (its columns of the im2col) per block and chunk. The sums
// are exact, so dw is the row-split form's bit for bit.
constexpr int64_t kColsBlockBytes = 192 * 1024;  // int32 C of one column block
constexpr int64_t kColsChunkBytes = 192 * 1024;  // A rows of one reduction chunk
constexpr int64_t kColsMaxRows = 1024;  // rows of one chunk (32-column B panel: 32 KB, L1)
bool wgrad_by_cols(float* dw, const int8_t* x, const int8_t* dy, const double* row_scale,
                   const Geom& G, const i8::Plan& P, bool ones, bool direct) {
  const WgradForm form = forced_wgrad();
  if (form == kWgradRows || form == kWgradQuads || form == kWgradQuadsFilters || !direct ||
      G.g != 1 || G.m > kMaxRowsI32)
    return false;
  const int64_t kga = G.k + (ones ? 1 : 0), lda = round_up(G.m, 4);
  const int64_t panels = ceil_div(G.kd, P.nr);
  const int nt = static_cast<int>(
      std::min<int64_t>(threads_for(G.m * G.k * G.kd, kMacsPerThread), panels));
  // The row-split form's chunks hold 192 KB / (KD + K) rows: from KD + K = 576 (3x3 over 64
  // channels and 64 filters, a 1x1 stride-2 256 -> 512) this form measured faster on Zen 4 with
  // 2 threads, below it (3x3 32 -> 32, 32 -> 64) slower (kernels/cpu/README.md); and it needs 4
  // panels a thread, for balance.
  if (form == kWgradAuto && !(G.kd + G.k >= 576 && panels >= 4 * nt)) return false;
  Geom Gb;
  const int8_t* xb = wgrad_source(x, G, Gb);
  const int64_t nb = std::max<int64_t>(1, kColsBlockBytes / (4 * kga) / P.nr) * P.nr;
  const int64_t mc =
      std::min(lda, std::clamp<int64_t>(kColsChunkBytes / kga / 64 * 64, 64, kColsMaxRows));
  const int64_t ab = round_up((kga + P.mr) * lda, 64);
  const int64_t bb = round_up(i8::packb_bytes(nb, mc, P.nr), 64), cb = round_up(4 * kga * nb, 64);
  const int64_t zb = round_up(4 * nb, 64);
  char* work = scratch_bytes<char>(kSlotConvWork, ab + nt * (bb + cb) + zb);
  uint8_t* at = reinterpret_cast<uint8_t*>(work);
  int32_t* zero_comp = reinterpret_cast<int32_t*>(work + ab + nt * (bb + cb));
  std::memset(zero_comp, 0, static_cast<size_t>(zb));
  // A[i, kk] = dy[kk, i] ^ flip, the threads taking rows; then the row of ones and MR spare rows
  parallel_for(G.k, std::max<int64_t>(16, (int64_t{1} << 16) / lda), [&](int64_t b, int64_t e) {
    i8::pack_a_cols(at + b * lda, lda, dy + b, G.k, e - b, G.m, P.flip, e - b);
  });
  if (ones) fill(at + G.k * lda, lda, 1);
  fill(at + kga * lda, P.mr * lda, P.flip);
  parallel(nt, [&](int t, int T) {
    int8_t* bp = reinterpret_cast<int8_t*>(work + ab + t * (bb + cb));
    int32_t* c = reinterpret_cast<int32_t*>(work + ab + t * (bb + cb) + bb);
    const int64_t j0 = std::min(G.kd, panels * t / T * P.nr);
    const int64_t j1 = std::min(G.kd, panels * (t + 1) / T * P.nr);
    for (int64_t jb = j0; jb < j1; jb += nb) {
      const int64_t n = std::min(nb, j1 - jb);
      for (int64_t m0 = 0; m0 < G.m; m0 += mc) {
        const int64_t cnt = std::min(mc, G.m - m0);
        pack_b_im2col(bp, xb, Gb, m0, cnt, 0, P.nr, jb, jb + n);
        i8::gemm_block(P, kga, n, cnt, at + m0, lda, bp, zero_comp,
                       {m0 == 0 ? i8::kStoreI32 : i8::kAddI32, c, n, nullptr, nullptr});
      }
      store_dw_cols(dw + jb, c, n, row_scale, G, ones);
    }
  });
  return true;
}

#if defined(__SSE2__)
// The image-quad form keeps a thread's int32 dW^T [KD][K] in L2 while every chunk adds into it:
// up to 256 KB (3x3 64 -> 64: 147 KB) it measured faster than both other forms on Zen 4 with 2
// threads (kernels/cpu/README.md); the wide layers (3x3 256 -> 256: 2.4 MB) take the column split.
constexpr int64_t kQuadMaxDwBytes = 256 * 1024;
bool quads_pay(const Geom& G) { return !G.pointwise && 4 * G.kd * G.k <= kQuadMaxDwBytes; }
// ---- wgrad over image quads: x is the broadcast operand, read in place -------------------------
// dW^T[KD, K] = X4[KD, red] . dY4[K, red]^T, the reduction running over k-groups t = (image quad
// n4, output pixel): a k-group's four bytes are the four images 4*n4 .. 4*n4+3 at one pixel and
// channel. x is re-laid as xq [N4][Hp][Wp][C][4] (zero-padded, the offset flip applied), a
// window of quads at a time per thread, so the A rows (r, s, c) of window row r sit 4 bytes apart
// (lda = 4: a tile's MR rows are MR*4 contiguous bytes) and k-group t of output pixel (p, q)
// starts koff[t] = (((n4 - first quad of the window)*Hp + p*sh)*Wp + q*sw)*4C bytes from window
// row r's base: one implicit GEMM per window row, S*C rows. dy is
// interleaved four images at a time into the B panels, per chunk of the reduction. Neither operand
// is an im2col (the row-split and column-split forms gather KD bytes of B per pixel, this one 4K
// per quad of pixels), and no row of ones pads the GEMM: comp is the chunk's dy column sums.
// Images past N (N % 4 != 0) are zeros in both operands.
// Rows row0 .. row1-1 of xq (row = n4*hp + a) into xq's rows row0 - base .. (xq holds the quads
// from base / hp on).
void quad_image_rows(uint8_t* xq, const int8_t* x, const Geom& G, int64_t hp, int64_t wp,
                     uint8_t flip, int64_t row0, int64_t row1, int64_t base) {
  const int64_t pix = 4 * G.c, c16 = G.c / 16 * 16, wc = G.w * G.c;
  const __m128i f = _mm_set1_epi8(static_cast<char>(flip));
  for (int64_t row = row0; row < row1; ++row) {  // row = n4*hp + a
    const int64_t n4 = row / hp, a = row % hp, ih = a - G.ph;
    uint8_t* d = xq + (row - base) * wp * pix;
    if (ih < 0 || ih >= G.h) {
      fill(d, wp * pix, flip);
      continue;
    }
    const int8_t* s[4];  // the four images' input row ih (null past N)
    for (int u = 0; u < 4; ++u) s[u] = 4 * n4 + u < G.n ? x + ((4 * n4 + u) * G.h + ih) * wc : nullptr;
    const int64_t b0 = std::min(G.pw, wp), b1 = std::max(b0, std::min(wp, G.pw + G.w));
    fill(d, b0 * pix, flip);
    fill(d + b1 * pix, (wp - b1) * pix, flip);
    if (s[3] && c16 == G.c) {  // a full quad: no per-pixel checks
      // the four rows' bytes (b0 .. b1) * C are one run each, its interleave one run of d
      const int8_t* s0 = s[0] + (b0 - G.pw) * G.c;
      const int64_t is = s[1] - s[0], n = (b1 - b0) * G.c;
      int8_t* db = reinterpret_cast<int8_t*>(d + b0 * pix);
      int64_t o = 0;
#if defined(__AVX512BW__)
      const __m512i f64 = _mm512_set1_epi8(static_cast<char>(flip));
      for (; o + 64 <= n; o += 64) {
        __m512i v[4];
        i8::interleave4x64_rows(v, s0 + o, is, f64);
        for (int l = 0; l < 4; ++l) _mm512_storeu_si512(db + 4 * o + 64 * l, v[l]);
      }
#endif
      for (; o < n; o += 16) i8::interleave4x16_rows(db + 4 * o, s0 + o, is, flip);
      continue;
    }
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t off = (b - G.pw) * G.c;
      uint8_t* db = d + b * pix;
      int64_t c0 = 0;
      for (; c0 < c16; c0 += 16) {
        __m128i v[4];
        for (int u = 0; u < 4; ++u)
          v[u] = _mm_xor_si128(
              s[u] ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(s[u] + off + c0)) : _mm_setzero_si128(), f);
        i8::interleave4x16(reinterpret_cast<int8_t*>(db + 4 * c0), v[0], v[1], v[2], v[3]);
      }
      for (; c0 < G.c; ++c0)
        for (int u = 0; u < 4; ++u)
          db[4 * c0 + u] = static_cast<uint8_t>((s[u] ? s[u][off + c0] : 0) ^ flip);
    }
  }
}

// dy's k-groups t0 .. t0+cnt-1 as B panels [cnt][NR][4] (column j = output channel, zeros past
// K), and each group's koff: (((n4 - q0)*Hp + p*sh)*Wp + q*sw) * 4C, from the quad q0 that xq
// starts with. The chunk runs as segments of consecutive pixels of one quad: a full quad's four
// source rows advance by K bytes a pixel and koff by sw*4C (a jump at each output row's end), so
// the loop carries no per-group branches, divisions or multiplies (this pass had been ~11% of the
// 16 -> 16 28x28 wgrad, most of it that bookkeeping); a quad past N (N % 4 != 0) takes the
// byte loop with zeros for its missing images.
void pack_dy_quads(int8_t* bp, int32_t* koff, const int8_t* dy, const Geom& G, int64_t hp,
                   int64_t wp, int64_t t0, int64_t cnt, int nr, int64_t q0) {
  const int64_t pq = G.p * G.q, panels = ceil_div(G.k, nr), pstride = cnt * 4 * nr;
  const int64_t kfull = G.k / 16 * 16, pix = 4 * G.c;
  const int nr_shift = nr == 32 ? 5 : 4;  // NR is 16 or 32
  const int64_t step_q = G.sw * pix, row_stride = G.sh * wp * pix;
  for (int64_t t = 0; t < cnt;) {
    const int64_t g = t0 + t, n4 = g / pq, px0 = g % pq, run = std::min(cnt - t, pq - px0);
    int64_t pp = px0 / G.q, qq = px0 % G.q;
    const int64_t base = (n4 - q0) * hp * wp * pix;
    int64_t off = pp * row_stride + qq * step_q;
    for (int64_t i = 0; i < run; ++i) {
      koff[t + i] = static_cast<int32_t>(base + off);
      off += step_q;
      if (++qq == G.q) qq = 0, off = ++pp * row_stride;
    }
#if defined(__AVX512BW__)
    if (4 * n4 + 3 < G.n && kfull == G.k && G.k == panels * nr) {
      // the run's dy rows are one run of run * K bytes in each image: 64 of them at a time, each
      // 16-byte block to its pixel's panel (K whole panels: no zero columns to write)
      const int8_t* s0 = dy + (4 * n4 * pq + px0) * G.k;
      const int64_t is = pq * G.k, n = run * G.k;
      const __m512i zero = _mm512_setzero_si512();
      int8_t* dt = bp + t * 4 * nr;
      int64_t o = 0, i = 0, j = 0;  // block's source offset, its pixel and column
      const auto dst = [&]() {
        int8_t* p = dt + i * 4 * nr + (j >> nr_shift) * pstride + (j & (nr - 1)) * 4;
        if ((j += 16) == G.k) j = 0, ++i;
        return p;
      };
      for (; o + 64 <= n; o += 64) {
        __m512i v[4];
        i8::interleave4x64_rows(v, s0 + o, is, zero);
        for (int l = 0; l < 4; ++l) _mm512_storeu_si512(dst(), v[l]);
      }
      for (; o < n; o += 16) i8::interleave4x16_rows(dst(), s0 + o, is, 0);
      t += run;
      continue;
    }
#endif
    if (4 * n4 + 3 < G.n) {
      const int8_t* s0 = dy + (4 * n4 * pq + px0) * G.k;
      const int64_t is = pq * G.k;  // image stride
      int8_t* dt = bp + t * 4 * nr;
      for (int64_t i = 0; i < run; ++i, s0 += G.k, dt += 4 * nr) {
        for (int64_t j = 0; j < kfull; j += 16)
          i8::interleave4x16_rows(dt + (j >> nr_shift) * pstride + (j & (nr - 1)) * 4, s0 + j,
                                  is, 0);
        for (int64_t j = kfull; j < panels * nr; ++j)  // K % 16 columns, then zeros
          for (int u = 0; u < 4; ++u)
            dt[(j / nr) * pstride + (j % nr) * 4 + u] = j < G.k ? s0[u * is + j] : 0;
      }
    } else {
      for (int64_t i = 0; i < run; ++i) {
        int8_t* dt = bp + (t + i) * 4 * nr;
        for (int64_t j = 0; j < panels * nr; ++j)
          for (int u = 0; u < 4; ++u) {
            const int64_t n = 4 * n4 + u;
            dt[(j / nr) * pstride + (j % nr) * 4 + u] =
                (n < G.n && j < G.k) ? dy[(n * pq + px0 + i) * G.k + j] : 0;
          }
      }
    }
    t += run;
  }
}

#if defined(__AVX512F__)
// Rows jb .. jb+15, columns k0 .. k1-1 (multiples of 16) of dW^T summed over the threads' int32
// partials `parts` (row j, column kk at part[j * K + kk], or with the row pairs interleaved at
// part[(j / 2) * 32 + 2 * kk + j % 2], K = 16), each element times row_scale[kk] in double and
// rounded to float, into dw's columns jb .. jb+15 (16-float runs of each row kk): the scalar
// reduction's operations (exact int32 sums mod 2^32, one double product, one rounding), in
// registers, and a 16 x 16 register transpose for the stores. The 64->64 7x7 wgrad's reduction
// took 18 us of its 300 on one thread the scalar way.
void reduce_rows16(float* dw, int64_t kd, int64_t K, int64_t k0, int64_t k1, int64_t jb,
                   const uint32_t* const* parts, int nparts, bool rp, const double* rs) {
  alignas(64) float blk[16][16];
  const __m512i ev = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i od = _mm512_add_epi32(ev, _mm512_set1_epi32(1));
  for (int64_t kb = k0; kb < k1; kb += 16) {
    const __m512d s0 = _mm512_loadu_pd(rs + kb), s1 = _mm512_loadu_pd(rs + kb + 8);
    // (maskz_ forms with full masks: the plain ones trip -Wmaybe-uninitialized in GCC 12's header)
    const auto put = [&](float* o, __m512i v) {
      const __m256i v0 = _mm512_maskz_extracti64x4_epi64(0xF, v, 0);
      const __m256i v1 = _mm512_maskz_extracti64x4_epi64(0xF, v, 1);
      const __m512d d0 = _mm512_mul_pd(_mm512_maskz_cvtepi32_pd(0xFF, v0), s0);
      const __m512d d1 = _mm512_mul_pd(_mm512_maskz_cvtepi32_pd(0xFF, v1), s1);
      _mm256_store_ps(o, _mm512_maskz_cvtpd_ps(0xFF, d0));
      _mm256_store_ps(o + 8, _mm512_maskz_cvtpd_ps(0xFF, d1));
    };
    for (int jj = 0; jj < 16; jj += 2) {
      const int64_t j = jb + jj;
      __m512i r0 = _mm512_setzero_si512(), r1 = _mm512_setzero_si512();
      for (int p = 0; p < nparts; ++p) {
        if (rp) {  // K = 16, j even: rows j and j + 1 interleaved in 32 elements
          const uint32_t* a = parts[p] + (j / 2) * 32;
          const __m512i lo = _mm512_loadu_si512(a), hi = _mm512_loadu_si512(a + 16);
          r0 = _mm512_add_epi32(r0, _mm512_permutex2var_epi32(lo, ev, hi));
          r1 = _mm512_add_epi32(r1, _mm512_permutex2var_epi32(lo, od, hi));
        } else {
          r0 = _mm512_add_epi32(r0, _mm512_loadu_si512(parts[p] + j * K + kb));
          r1 = _mm512_add_epi32(r1, _mm512_loadu_si512(parts[p] + (j + 1) * K + kb));
        }
      }
      put(blk[jj], r0);
      put(blk[jj + 1], r1);
    }
    transpose16x16_4b(dw + kb * kd + jb, 4 * kd, blk, 64);
  }
}
#endif

// Slack after each thread's slice of the image-quad wgrad's shared scratch (x windows; packed dy,
// partials, offsets): one page and one line. Measured, not explained: with the slices back to back
// the worker thread's re-layouts ran up to 2x the calling thread's and its GEMMs 5-15% longer on the
// Zen 5 guest (TSC stamps; whichever vCPU it ran on, and with the threads' images swapped); with
// this slack every wgrad of ResNet-20 ran 2-6% faster (2 threads, the builds alternating in one
// process, bitwise equal: 16->32 s2 0.0917 -> 0.0858 ms, 32->64 s2 0.0892 -> 0.0853, 16->16
// 0.1620 -> 0.1566). 1088 and 4096 bytes measured alike, 64 bytes helped only some shapes.
constexpr int64_t kSliceSkew = 4096 + 64;
constexpr int64_t kQuadChunkBytes = 32 * 1024;    // packed dy of one reduction chunk (L1)
constexpr int64_t kQuadWindowBytes = 128 * 1024;  // re-laid x of a window of quads (L2)
bool wgrad_quads(float* dw, const int8_t* x, const int8_t* dy, const double* row_scale,
                 const Geom& G) {
  const WgradForm form = forced_wgrad();
  // amx reads a chunk of k-groups as one contiguous run: here consecutive k-groups are 4C bytes apart
  if (form == kWgradRows || form == kWgradCols || G.g != 1 || i8::active_variant() == i8::kAmx)
    return false;
  if (form == kWgradAuto && !quads_pay(G)) return false;
  const int64_t sc = G.s * G.c;
  // 16 filters and even window rows: the row-pairs tile where it runs (int8_gemm.h; one broadcast
  // of two adjacent A rows per two vpdpbusd), its int32 dW^T's row pairs interleaved
  const i8::Plan RP = G.k == 16 && sc % 2 == 0 ? i8::plan_rowpairs(sc) : i8::Plan{};
  const bool rp = RP.row_pairs;
  const i8::Plan P = rp ? RP : i8::plan_for(G.k, sc);
  const int64_t hp = padded_h(G), wp = padded_w(G), n4 = ceil_div(G.n, 4), pq = G.p * G.q;
  const int64_t pix = 4 * G.c, k4 = n4 * pq, hwc = G.h * G.w * G.c;
  const int64_t quad_bytes = hp * wp * pix, slack = round_up(4 * P.mr + 64, 64);
  // x is re-laid by each thread a window of whole quads at a time, just before the chunks that
  // read it: L2-resident, not a batch-sized buffer written and read back from memory (3x3 at
  // batch 64, cold operands on the Zen 4 guest: the stride-2 layers 2-9% faster, 64->64 7x7 2%
  // slower; windows of 32-128 KB measured alike, 512 KB and the whole batch slower)
  const int64_t wq = std::max<int64_t>(1, std::min(n4, kQuadWindowBytes / quad_bytes));
  // (each thread's slice of the shared scratch buffers kSliceSkew bytes longer than it needs:
  // see its definition)
  const int64_t xw_bytes = round_up(wq * quad_bytes + slack, 64) + kSliceSkew;
  if (xw_bytes > INT32_MAX) return false;  // koff is int32
  const int64_t panels = ceil_div(G.k, P.nr), kp = panels * P.nr;
  const int nt = static_cast<int>(
      std::min<int64_t>(threads_for(G.m * G.k * G.kd, kMacsPerThread), ceil_div(k4, 16)));
  // k-groups per chunk: its B in L1, and at least one chunk a thread
  const int64_t ct = std::min(std::max<int64_t>(16, kQuadChunkBytes / (4 * kp) / 16 * 16),
                              round_up(ceil_div(k4, nt), 16));

  uint8_t* xall = scratch_bytes<uint8_t>(kSlotConvPad, nt * xw_bytes);

  const int64_t bb = round_up(ct * 4 * kp, 64), cb = round_up(4 * G.kd * G.k, 64);
  const int64_t ob_bytes = round_up(4 * (ct + kp), 64), db = round_up(8 * G.kd * G.k, 64);
  // Up to kMaxRowsI32 reduction rows in all, the threads' int32 partials add exactly (mod 2^32,
  // the true sum fits); beyond, each thread flushes its int32 sums into doubles every
  // kMaxRowsI32 rows and the doubles are combined.
  const bool wide = 4 * k4 > kMaxRowsI32;
  // The threads split the reduction (each its share of the quads into its own int32 dW^T, then
  // the partials summed across threads), or the filters: each thread takes whole panels of dW^T's
  // columns over the whole reduction, re-laying all of x and packing all of dy itself, and no
  // partial crosses cores. The filter split pays where x is small next to dW^T: on the Zen 5
  // guest, 64->64 7x7 at batch 64 (x 200 KB, dW^T 147 KB) the reduction's cross-core sums took
  // 17.6 us of a 160 us pass; 32->64 s2 14x14 re-lays 400 KB of x for a 74 KB dW^T.
  const bool filters_ok = !rp && !wide && nt >= 2 && panels >= nt;
  const bool by_filters =
      filters_ok && (form == kWgradQuadsFilters ||
                     (form == kWgradAuto && G.n * hwc <= 2 * 4 * G.kd * G.k));
  const int64_t per = bb + cb + ob_bytes + (wide ? db : 0) + kSliceSkew;
  char* work = scratch_bytes<char>(kSlotConvWork, nt * per);
  std::vector<uint8_t> has(static_cast<size_t>(nt), 0);  // the thread summed k-groups
  // dw[k, j] = (the threads' exact sums of dW^T[j, k], in a fixed order) * row_scale[k]: per row j
  // of dW^T the sums and the scaling run along k (vector code), then the row goes to dw's column j.
  // Each thread takes a slice of j after a barrier, in the same parallel region (a second region
  // for it ran on one thread below 16K outputs: 32->64 s2, 4.5% of the pass serial).
  // Sixteen rows of dW^T at a time: their sums and scaling vectorize along k (restrict pointers:
  // GCC left the int32 adds and the int -> double conversions scalar when they shared a buffer),
  // and the block goes to dw as 16-float runs of each row k instead of single floats 4 * kd bytes
  // apart (the scalar reduce was 6.6% of the 32 -> 64 s2 pass, perf, one thread).
  constexpr int kJb = 16;
  const int64_t kr = round_up(G.k, 16);
  const int64_t rbuf = round_up(4 * kr + 8 * kr + 4 * kJb * kr, 64);
  char* cbuf = scratch_bytes<char>(kSlotConvCol, nt * rbuf);
  // row j of the threads' dW^T: element kk at row(j) + kk * step
  const int64_t step = rp ? 2 : 1;
  const auto row = [&](int64_t j) { return rp ? (j / 2) * 32 + j % 2 : j * G.k; };
  // rows j0 .. j1-1, columns k0 .. k1-1 of dW^T from the partials of threads th0 .. th1-1 into dw
  const auto reduce = [&](int64_t j0, int64_t j1, int64_t k0, int64_t k1, int th0, int th1,
                          char* buf) {
    uint32_t* __restrict su = reinterpret_cast<uint32_t*>(buf);
    double* __restrict sd = reinterpret_cast<double*>(buf + 4 * kr);
    float* __restrict ob = reinterpret_cast<float*>(buf + 12 * kr);  // [kJb][kr]
    const double* __restrict rs = row_scale;
#if defined(__AVX512F__)
    const uint32_t* parts[64];  // the threads' partials that hold sums (at most 64: else scalar)
    int np = 0;
    bool vec = !wide && k0 % 16 == 0 && k1 % 16 == 0;
    for (int th = th0; th < th1 && vec; ++th)
      if (has[th]) {
        if (np == 64) vec = false;
        else parts[np++] = reinterpret_cast<const uint32_t*>(work + th * per + bb);
      }
#endif
    for (int64_t jb = j0; jb < j1; jb += kJb) {
      const int64_t nj = std::min<int64_t>(kJb, j1 - jb);
#if defined(__AVX512F__)
      if (vec && nj == kJb && (!rp || jb % 2 == 0)) {
        reduce_rows16(dw, G.kd, G.k, k0, k1, jb, parts, np, rp, rs);
        continue;
      }
#endif
      for (int64_t jj = 0; jj < nj; ++jj) {
        const int64_t j = jb + jj;
        if (wide) {
          for (int64_t kk = k0; kk < k1; ++kk) sd[kk] = 0.0;
          for (int th = th0; th < th1; ++th) {
            if (!has[th]) continue;
            const double* __restrict a =
                reinterpret_cast<const double*>(work + th * per + bb + cb + ob_bytes) + row(j);
            for (int64_t kk = k0; kk < k1; ++kk) sd[kk] += a[kk * step];
          }
        } else {
          for (int64_t kk = k0; kk < k1; ++kk) su[kk] = 0;
          for (int th = th0; th < th1; ++th) {
            if (!has[th]) continue;
            const uint32_t* __restrict a =
                reinterpret_cast<const uint32_t*>(work + th * per + bb) + row(j);
            for (int64_t kk = k0; kk < k1; ++kk) su[kk] += a[kk * step];  // mod 2^32: exact
          }
          for (int64_t kk = k0; kk < k1; ++kk)
            sd[kk] = static_cast<double>(static_cast<int32_t>(su[kk]));
        }
        float* __restrict o = ob + jj * kr;
        for (int64_t kk = k0; kk < k1; ++kk) o[kk] = static_cast<float>(sd[kk] * rs[kk]);
      }
      for (int64_t kk = k0; kk < k1; ++kk) {
        float* __restrict d = dw + kk * G.kd + jb;
        for (int64_t jj = 0; jj < nj; ++jj) d[jj] = ob[jj * kr + kk];
      }
    }
  };
  parallel(nt, [&](int t, int T) {
    char* base = work + t * per;
    int8_t* bp = reinterpret_cast<int8_t*>(base);
    int32_t* c = reinterpret_cast<int32_t*>(base + bb);
    int32_t* koff = reinterpret_cast<int32_t*>(base + bb + cb);
    int32_t* comp = koff + ct;
    double* ad = reinterpret_cast<double*>(base + bb + cb + ob_bytes);
    if (!P.flip) std::memset(comp, 0, static_cast<size_t>(4 * kp));
    int64_t rows = 0;  // reduction rows (4 per k-group) in c since the last flush
    bool flushed = false;
    auto flush = [&] {
      for (int64_t i = 0; i < G.kd * G.k; ++i)
        ad[i] = (flushed ? ad[i] : 0.0) + static_cast<double>(c[i]);
      flushed = true, rows = 0;
    };
    uint8_t* xq = xall + t * xw_bytes;
    // this thread's k-groups, and its columns of dW^T (whole panels)
    const int64_t g0 = by_filters ? 0 : k4 * t / T, g1 = by_filters ? k4 : k4 * (t + 1) / T;
    const int64_t c0 = by_filters ? panels * t / T * P.nr : 0;
    const int64_t c1 = by_filters ? std::min(G.k, panels * (t + 1) / T * P.nr) : G.k;
    for (int64_t w0 = g0; w0 < g1;) {
      // the window: quads qa .. qb-1, k-groups w0 .. w1-1 of this thread, in equal chunks
      const int64_t qa = w0 / pq, qb = std::min(n4, qa + wq), w1 = std::min(g1, qb * pq);
      quad_image_rows(xq, x, G, hp, wp, P.flip, qa * hp, qb * hp, qa * hp);
      fill(xq + (qb - qa) * quad_bytes, slack, P.flip);
      const int64_t len = w1 - w0, nch = ceil_div(len, ct);
      // The next window's images (x for its re-layout, dy for its packs) are prefetched by this
      // window's GEMMs, a line a k-group inside the tiles (Epi::pf): the first sx of the nch*R
      // GEMMs take shares of x, the others of dy, in proportion to their bytes. Cold operands
      // (batch 64, Zen 4 guest, avx512-vnni): 16->32 s2 0.19 -> 0.175 ms, 32->64 s2 0.183 ->
      // 0.178, 16->16 28x28 0.337 -> 0.32; hot within the noise. (A burst per GEMM, before it,
      // measured no gain; windows of one quad, so that less of the first window goes unfetched,
      // gained a little more cold but lost 6-13% hot on 64-channel layers: shorter GEMMs.)
      const int64_t na = std::min(G.n, 4 * qb), nb = std::min(G.n, 4 * std::min(qb + wq, n4));
      const bool more = w1 < g1 && nb > na;
      const int64_t xb = more ? (nb - na) * hwc : 0, db = more ? (nb - na) * pq * G.k : 0;
      const int64_t steps = nch * G.r;
      const int64_t sx = more ? std::clamp<int64_t>((steps * xb + (xb + db) / 2) / (xb + db), 1,
                                                    std::max<int64_t>(1, steps - 1))
                              : 0;
      const auto prefetch = [&](i8::Epi& er, int64_t st) {
        if (!more) return;
        const bool isx = st < sx;  // (sx >= 1: a single GEMM takes x)
        const int64_t n = isx ? sx : steps - sx, i = isx ? st : st - sx, tot = isx ? xb : db;
        er.pf = (isx ? x + na * hwc : dy + na * pq * G.k) + tot * i / n;
        er.pf_bytes = tot * (i + 1) / n - tot * i / n;
      };
      for (int64_t ch = 0; ch < nch; ++ch) {
        const int64_t t0 = w0 + len * ch / nch, cnt = w0 + len * (ch + 1) / nch - t0;
        if (rows > 0 && rows + 4 * cnt > kMaxRowsI32) flush();
        pack_dy_quads(bp, koff, dy, G, hp, wp, t0, cnt, P.nr, qa);
        // this thread's panels of the chunk's packed dy (all of them but with the filter split)
        const int8_t* bq = bp + c0 / P.nr * (cnt * 4 * P.nr);
        if (P.flip) i8::panel_comp(comp + c0, bq, cnt, P.nr, ceil_div(c1 - c0, P.nr));
        const i8::Epi e{rows == 0 ? i8::kStoreI32 : i8::kAddI32, nullptr, G.k, nullptr, nullptr};
        for (int64_t r = 0; r < G.r; ++r) {
          i8::Epi er = e;
          er.c = c + r * sc * G.k + c0;
          prefetch(er, ch * G.r + r);
          i8::gemm_block(P, sc, c1 - c0, 4 * cnt, xq + r * wp * pix, 4, bq, comp + c0, er, koff);
        }
        rows += 4 * cnt;
      }
      w0 = w1;
    }
    if (wide && rows > 0) flush();
    has[t] = g1 > g0;
    if (by_filters) return reduce(0, G.kd, c0, c1, t, t + 1, cbuf + t * rbuf);
    team::barrier();
    reduce(G.kd * t / T, G.kd * (t + 1) / T, 0, G.k, 0, T, cbuf + t * rbuf);
  });
  return true;
}
#endif

void wgrad_core(float* dw, const int8_t* x, const int8_t* dy, const double* row_scale,
                const Geom& G) {
  if (G.depthwise) return depthwise_wgrad(dw, x, dy, row_scale, G);
  const bool ones = i8::plan_for(G.kd).flip != 0;
  const i8::Plan P = i8::plan_for(G.kd, G.kg + (ones ? 1 : 0));
  if (wgrad_short(dw, x, dy, row_scale, G, P, ones)) return;
#if defined(__SSE2__)
  if (wgrad_quads(dw, x, dy, row_scale, G)) return;
  const bool direct = !G.pointwise && G.cg % 16 == 0;
#else
  const bool direct = false;
#endif
  if (wgrad_by_cols(dw, x, dy, row_scale, G, P, ones, direct)) return;
  const int nt = threads_for(G.m * G.k * G.kd, kMacsPerThread);
  const int64_t kga = G.kg + (ones ? 1 : 0);  // A / C rows per group
  const bool use_col = !G.pointwise && !direct;
  // Rows per chunk: col [MC][KD] + packed B [round_up(KD, NR)][MC] + A [G*kga + MR][MC] bytes.
  const int64_t kdp = round_up(G.kd, P.nr);
  const int64_t arows = G.g * kga + P.mr;
  const int64_t per_row = (use_col ? G.kd : 0) + kdp + arows;
  int64_t mc = std::max<int64_t>(16, kWgradChunkBytes / per_row / 16 * 16);
  mc = std::min<int64_t>(mc, std::max<int64_t>(16, round_up(ceil_div(G.m, 2 * int64_t{nt}), 16)));
  mc = std::min<int64_t>(mc, 4096);  // <= kMaxRowsI32, a multiple of 4
  const int64_t nchunks = ceil_div(G.m, mc);

  const int64_t colb = use_col ? round_up(mc * G.kd, 64) : 0;
  const int64_t bpb = round_up(i8::packb_bytes(G.kd, mc, P.nr), 64);
  const int64_t ab = round_up(arows * mc, 64);
  const int64_t compb = round_up(4 * kdp, 64);
  const int64_t per = colb + bpb + ab;
  char* work = scratch_bytes<char>(kSlotConvWork, nt * per + compb);
  int32_t* zero_comp = reinterpret_cast<int32_t*>(work + nt * per);
  std::memset(zero_comp, 0, static_cast<size_t>(compb));
  const int64_t len = round_up(G.g * kga * G.kd, 16);  // int32 C per thread
  const int64_t dlen = round_up(G.k * G.kd, 16);       // double sums per thread
  int32_t* acc32 = scratch_bytes<int32_t>(kSlotConvCol, nt * len * 4);
  double* accd = scratch_bytes<double>(kSlotConvPartial, nt * dlen * 8);
  Geom Gb = G;
  const int8_t* xb = direct ? wgrad_source(x, G, Gb) : x;

  const int team = parallel(nt, [&](int t, int T) {
    char* base = work + t * per;
    uint8_t* colt = reinterpret_cast<uint8_t*>(base);
    int8_t* bpt = reinterpret_cast<int8_t*>(base + colb);
    uint8_t* at = reinterpret_cast<uint8_t*>(base + colb + bpb);
    int32_t* a32 = acc32 + t * len;
    double* ad = accd + t * dlen;
    for (int64_t i = 0; i < G.k * G.kd; ++i) ad[i] = 0.0;
    int64_t rows = 0;  // rows in a32 since the last flush (0: a32 holds nothing)
    auto flush = [&] {
      for (int64_t g = 0; g < G.g; ++g)
        for (int64_t i = 0; i < G.kg; ++i) {
          const int32_t* c = a32 + (g * kga + i) * G.kd;
          // column sums (the row of ones; without it, kga == Kg and this row is not there: the
          // last thread's would lie past the buffer, found by AddressSanitizer)
          const int32_t* cs = a32 + (g * kga + G.kg) * G.kd;
          double* __restrict o = ad + (g * G.kg + i) * G.kd;
          for (int64_t j = 0; j < G.kd; ++j)
            o[j] += static_cast<double>(unbiased(c[j], ones ? cs[j] : 0, ones));
        }
      rows = 0;
    };
    for (int64_t ci = nchunks * t / T; ci < nchunks * (t + 1) / T; ++ci) {
      const int64_t m0 = ci * mc, cnt = std::min(mc, G.m - m0), lda = round_up(cnt, 4);
      if (rows > 0 && rows + cnt > kMaxRowsI32) flush();
      // A_g[i, kk] = dy[m0 + kk, g*Kg + i] ^ flip, then the row of ones; MR spare rows at the end
      for (int64_t g = 0; g < G.g; ++g) {
        uint8_t* ag = at + g * kga * lda;
        i8::pack_a_cols(ag, lda, dy + m0 * G.k + g * G.kg, G.k, G.kg, cnt, P.flip, G.kg);
        if (ones) fill(ag + G.kg * lda, lda, 1);
      }
      fill(at + G.g * kga * lda, P.mr * lda, P.flip);
      for (int64_t g = 0; g < G.g; ++g) {
        if (G.pointwise) {
          i8::pack_b_cols(bpt, nullptr, x + m0 * G.c + g * G.cg, G.c, G.kd, cnt, P);
        } else if (direct) {
#if defined(__SSE2__)
          pack_b_im2col(bpt, xb, Gb, m0, cnt, g, P.nr, 0, G.kd);
#endif
        } else {
          im2col_i8(colt, G.kd, x, G, m0, cnt, g, 0);
          i8::pack_b_cols(bpt, nullptr, reinterpret_cast<const int8_t*>(colt), G.kd, G.kd, cnt,
                          P);
        }
        const i8::Epi e{rows == 0 ? i8::kStoreI32 : i8::kAddI32, a32 + g * kga * G.kd, G.kd,
                        nullptr, nullptr};
        i8::gemm_block(P, kga, G.kd, cnt, at + g * kga * lda, lda, bpt, zero_comp, e);
      }
      rows += cnt;
    }
    if (rows > 0) flush();
  });
  // Fixed-order combine of the per-thread exact sums, then the scales.
  parallel_for(G.k, 1, [&](int64_t b, int64_t e) {
    for (int64_t kk = b; kk < e; ++kk)
      for (int64_t j = 0; j < G.kd; ++j) {
        const int64_t i = kk * G.kd + j;
        double v = 0.0;
        for (int t = 0; t < team; ++t) v += accd[t * dlen + i];
        dw[i] = static_cast<float>(v * row_scale[kk]);
      }
  });
}

// ---- argument checks ------------------------------------------------------------------------------
struct ConvBytes {
  int64_t x, w, y;  // elements (= int8 bytes)
};
ConvBytes conv_elems(const d8_conv_shape& s) {
  return {mul64(int64_t{s.n} * s.h, int64_t{s.w} * s.c),
          mul64(int64_t{s.k} * s.r, int64_t{s.s} * (s.c / s.groups)),
          mul64(int64_t{s.n} * s.p, int64_t{s.q} * s.k)};
}


}  // namespace
}  // namespace d8cpu

using namespace d8cpu;

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
    const ConvBytes z = conv_elems(*shape);
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
    const Geom G = make_geom(*shape);
    // Column scales x_scale * w_scale[k], on the calling thread's scratch (read by all threads).
    float* cs = reinterpret_cast<float*>(scratch(kSlotMisc, static_cast<size_t>(k)));
    const float xs = cfptr(x_scale)[0];
    const float* ws = cfptr(w_scale);
    for (int64_t j = 0; j < k; ++j) cs[j] = xs * ws[w_layout == D8_SCALE_OUTER ? j : 0];
    fwd_core(fptr(y), static_cast<const int8_t*>(x->data), static_cast<const int8_t*>(w->data), cs,
             bias ? cfptr(bias) : nullptr, G);
    return D8_OK;
  });
}

extern "C" int32_t d8_conv2d_dgrad_i8(d8_buffer* dx, const d8_buffer* dy, const d8_buffer* w,
                                      const d8_buffer* dy_scale, const d8_buffer* w_scale,
                                      const d8_conv_shape* shape) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[256];
    if (int32_t e = check_conv_shape(fn, shape, dims, sizeof dims, D8_CONV_ACCUMULATE)) return e;
    const ConvBytes z = conv_elems(*shape);
    if (int32_t e = check_buffer(fn, "dx", dx, mul64(z.x, 4), dims)) return e;
    if (int32_t e = check_buffer(fn, "dy", dy, z.y, dims)) return e;
    if (int32_t e = check_buffer(fn, "w", w, z.w, dims)) return e;
    if (int32_t e = check_buffer(fn, "dy_scale", dy_scale, 4, dims)) return e;
    if (int32_t e = check_buffer(fn, "w_scale", w_scale, 4, dims)) return e;
    if (int32_t e = check_distinct(fn, "dx", dx, "dy", dy)) return e;
    if (int32_t e = check_distinct(fn, "dx", dx, "w", w)) return e;
    const float scale = cfptr(dy_scale)[0] * cfptr(w_scale)[0];
    dgrad_core(fptr(dx), static_cast<const int8_t*>(dy->data),
               static_cast<const int8_t*>(w->data), scale, make_geom(*shape),
               (shape->flags & D8_CONV_ACCUMULATE) != 0);
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
    const ConvBytes z = conv_elems(*shape);
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
    double* rsc = reinterpret_cast<double*>(scratch(kSlotMisc, static_cast<size_t>(2 * k)));
    const double xs = cfptr(x_scale)[0];
    const float* ds = cfptr(dy_scale);
    for (int64_t j = 0; j < k; ++j)
      rsc[j] = static_cast<double>(ds[dy_layout == D8_SCALE_INNER ? j : 0]) * xs;
    wgrad_core(fptr(dw), static_cast<const int8_t*>(x->data),
               static_cast<const int8_t*>(dy->data), rsc, make_geom(*shape));
    return D8_OK;
  });
}
