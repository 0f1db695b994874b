// conv.cpp: 2-D convolution forward, data gradient, weight gradient, and the bias gradient.
//
// Layouts: x [N, H, W, C], w [K, R, S, C/G] (OHWI), y [N, P, Q, K], all float32.
// GEMM view, per group g (Cg = C/G, Kg = K/G, KD = R*S*Cg), M = N*P*Q:
//   fprop: y[M, Kg]    = col[M, KD] . W_g[Kg, KD]^T
//   dgrad: dcol[M, KD] = dy[M, Kg] . W_g[Kg, KD], then col2im (scatter-add into dx), or for
//          stride 1 (pad <= kernel-1) dx = fprop of dy with the flipped, transposed weights
//          (a gather: rows parallelize without write conflicts); a cost model picks one
//   wgrad: dW_g[Kg, KD] = dy[M, Kg]^T . col[M, KD], per-thread partial sums over row ranges
// col is the im2col matrix: row m = output pixel (n, p, q), columns (r, s, c) with c fastest.
// It is never materialized by the default paths:
//   fprop v4 (exact):    on x itself, each output's window cut to its taps inside x (no padding
//                        multiply-adds); v3 (unpadded) where v4 does not apply: as v2 on x for
//                        the interior outputs, im2col rows for the border
//   strided dgrad:       by phase, stride-1 correlations of dy with sub-kernels, dx in place
//   fprop v2 (implicit): A[q, tap] = xpad[pixel(q) + koff[tap]], one gemm per output row
//   wgrad v3 (in place): per column class of in-image taps, B[m, tap] = x[window(m) + run] and
//                        A^T[m] = dy row of m through one offset-pair list, padding rows left out
//   wgrad v2 (gather):   B[m, tap] = xpad[boff[m] + tap run], dy read in place as A^T
// where xpad is x, or a zero-bordered copy when padding is needed (input-sized, R*S times
// smaller than col). The version 1 paths build col in chunks of ~256 KB per thread (kept as the
// readable reference and for narrow outputs, see use_implicit). For 1x1, stride 1, pad 0
// convolutions col is x itself. Depthwise (G == C == K) uses direct loops vectorized over
// channels instead of 1-wide GEMMs. Threads take contiguous ranges of output rows / row chunks
// and each runs the single-threaded gemm_core.
#include "common.h"
#include "conv_geom.h"
#include "gemm.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <utility>
#include <vector>

namespace d8cpu {
namespace {

inline void zero_n(float* d, int64_t n) { zero_floats(d, n); }
inline void copy_n(float* __restrict d, const float* __restrict s, int64_t n) { copy_floats(d, s, n); }
inline void add_n(float* __restrict d, const float* __restrict s, int64_t n) { add_floats(d, s, n); }

// col[i, (r, s, c)] = x[img, pp*sh - ph + r, qq*sw - pw + s, g*Cg + c] for rows m0 .. m0+cnt.
void im2col(float* __restrict col, const float* __restrict x, const Geom& G, int64_t m0,
            int64_t cnt, int64_t g) {
  Cursor cur(G, m0);
  const int64_t cg = G.cg, scg = G.s * cg;
  for (int64_t i = 0; i < cnt; ++i, cur.next(G)) {
    float* d = col + i * G.kd;
    const int64_t ih0 = cur.pp * G.sh - G.ph, iw0 = cur.qq * G.sw - G.pw;
    const float* ximg = x + cur.img * G.h * G.w * G.c + g * cg;
    // valid s range: 0 <= iw0 + s < W
    const int64_t s_lo = std::min(G.s, std::max<int64_t>(0, -iw0));
    const int64_t s_hi = std::max(s_lo, std::min(G.s, G.w - iw0));
    for (int64_t r = 0; r < G.r; ++r) {
      float* dr = d + r * scg;
      const int64_t ih = ih0 + r;
      if (ih < 0 || ih >= G.h) {
        zero_n(dr, scg);
        continue;
      }
      const float* xr = ximg + (ih * G.w + iw0 + s_lo) * G.c;  // first valid tap of the row
      zero_n(dr, s_lo * cg);
      if (G.g == 1) {  // the valid window row is one contiguous run of x
        copy_n(dr + s_lo * cg, xr, (s_hi - s_lo) * cg);
      } else {
        for (int64_t s = s_lo; s < s_hi; ++s) copy_n(dr + s * cg, xr + (s - s_lo) * G.c, cg);
      }
      zero_n(dr + s_hi * cg, (G.s - s_hi) * cg);
    }
  }
}

int64_t row_quantum() { return std::lcm(gemm_mr(1), gemm_mr(2)); }

constexpr int64_t kChunkBytes = 256 * 1024;

// Rows per im2col / dcol chunk of about kChunkBytes, a multiple of both micro-tile heights.
int64_t col_chunk_rows(int64_t m, int64_t kd, int threads) {
  return chunk_rows(m, 4 * kd, threads, row_quantum(), kChunkBytes);
}

// ---- input views for the implicit GEMM ------------------------------------------------------------
// The implicit GEMM reads A[i, kk] = src[pixel(i) + koff[kk]] straight from the (padded) input.
// With padding the input is first copied into a zero-bordered buffer (its size is the input's,
// R*S times smaller than an im2col matrix), so no tap needs a bounds check.
struct Src {
  const float* base;
  int64_t img_stride, row_stride;  // floats
};

// Rows b .. e of the zero-bordered copy of x (hn rows of wn pixels per image, counted from x's
// first image) into xp.
void pad_rows(float* __restrict xp, const float* __restrict x, const Geom& G, int64_t b,
              int64_t e) {
  const int64_t hn = (G.p - 1) * G.sh + G.r, wn = (G.q - 1) * G.sw + G.s, C = G.c;
  const int64_t left = std::min(G.pw, wn);
  const int64_t inner = std::max<int64_t>(0, std::min(G.w, wn - G.pw));
  for (int64_t row = b; row < e; ++row) {
    const int64_t img = row / hn, ih = row % hn - G.ph;
    float* d = xp + row * wn * C;
    if (ih < 0 || ih >= G.h) {
      zero_n(d, wn * C);
      continue;
    }
    zero_n(d, left * C);
    copy_n(d + left * C, x + (img * G.h + ih) * G.w * C, inner * C);
    zero_n(d + (left + inner) * C, (wn - left - inner) * C);
  }
}

// slack > 0: always copy, and keep `slack` readable (zeroed) floats after the last image.
Src padded_input(const float* x, const Geom& G, int64_t slack = 0) {
  const int64_t hn = (G.p - 1) * G.sh + G.r;  // rows / columns the windows reach
  const int64_t wn = (G.q - 1) * G.sw + G.s;
  const int64_t C = G.c;
  if (G.ph == 0 && G.pw == 0 && hn <= G.h && wn <= G.w) {
    // No padding needed: read x in place if the slack past the last window's last tap still
    // lies inside x (1x1 stride-2 shortcuts, valid convolutions).
    const int64_t last = (((G.n - 1) * G.h + hn - 1) * G.w + wn - 1) * C + C;
    if (last + slack <= G.n * G.h * G.w * C) return {x, G.h * G.w * C, G.w * C};
  }
  float* xp = scratch(kSlotConvPad, static_cast<size_t>(G.n * hn * wn * C + slack));
  zero_n(xp + G.n * hn * wn * C, slack);
  parallel_for(G.n * hn, std::max<int64_t>(1, (int64_t{1} << 15) / (wn * C)),
               [&](int64_t b, int64_t e) { pad_rows(xp, x, G, b, e); });
  return {xp, hn * wn * C, wn * C};
}

// t[(r*ns + s)*cg + c] = r*row_stride + s*pix + c for r < R, s < ns, c < cg: the offsets of a
// window's taps from its first one.
void fill_tap_offsets(int64_t* t, int64_t R, int64_t ns, int64_t cg, int64_t row_stride,
                      int64_t pix) {
  int64_t i = 0;
  for (int64_t r = 0; r < R; ++r)
    for (int64_t s = 0; s < ns; ++s)
      for (int64_t c = 0; c < cg; ++c) t[i++] = r * row_stride + s * pix + c;
}

// koff[(r*S + s)*Cg + c] = offset of tap (r, s, c) from its window's top-left pixel.
const int64_t* tap_offsets(const Geom& G, const Src& src) {
  int64_t* koff = reinterpret_cast<int64_t*>(
      scratch(kSlotConvOffsets, static_cast<size_t>(2 * G.kd + 16)));
  fill_tap_offsets(koff, G.r, G.s, G.cg, src.row_stride, G.c);
  return koff;
}

// Packs the implicit im2col rows m0 .. m0+cnt of group g as gemm B panels ([cnt][NR] per NR
// columns): each row is copied run by run (S*C contiguous floats per kernel row when G == 1).
void pack_b_im2col(float* dst, const Src& src, const Geom& G, int64_t m0, int64_t cnt, int64_t g,
                   int nv) {
  const int64_t NR = gemm_nr(nv), kd = G.kd, kdp = round_up(kd, NR);
  Cursor cur(G, m0);
  for (int64_t i = 0; i < cnt; ++i, cur.next(G)) {
    const float* pix = src.base + cur.img * src.img_stride + cur.pp * G.sh * src.row_stride +
                       cur.qq * G.sw * G.c + g * G.cg;
    int64_t kk = 0;
    auto put = [&](const float* run, int64_t len) {
      while (len > 0) {
        const int64_t jp = kk / NR, off = kk % NR, nn = std::min(len, NR - off);
        copy_n(dst + (jp * cnt + i) * NR + off, run, nn);
        kk += nn, run += nn, len -= nn;
      }
    };
    for (int64_t r = 0; r < G.r; ++r) {
      const float* rowp = pix + r * src.row_stride;
      if (G.g == 1) {
        put(rowp, G.s * G.c);
      } else {
        for (int64_t s = 0; s < G.s; ++s) put(rowp + s * G.c, G.cg);
      }
    }
    if (kdp > kd) zero_n(dst + ((kdp / NR - 1) * cnt + i) * NR + kd % NR, kdp - kd);
  }
}

// ---- depthwise (G == C == K): direct loops over the contiguous channel dimension ----------------
// Channel blocks of one vector live in registers across the R*S taps; the input is read from the
// zero-padded copy, so taps need no bounds checks.
#if defined(__AVX512F__)
constexpr int kDwVW = 16;
#elif defined(__AVX__)
constexpr int kDwVW = 8;
#else
constexpr int kDwVW = 4;
#endif
typedef float dwv __attribute__((vector_size(kDwVW * 4), aligned(4)));

// wt[(r*S + s)*C + c] = w[c, r, s, 0], or the kernel flipped in r and s.
float* transpose_depthwise_weights(const float* w, const Geom& G, bool flip) {
  const int64_t rs = G.r * G.s;
  float* wt = scratch(kSlotConvPartial, static_cast<size_t>(rs * G.c));
  for (int64_t ch = 0; ch < G.c; ++ch)
    for (int64_t i = 0; i < rs; ++i) wt[(flip ? rs - 1 - i : i) * G.c + ch] = w[ch * rs + i];
  return wt;
}

// y[pixel, c] = bias[c] + sum_taps x[tap, c] * wt[tap, c]. Depthwise work is memory bound, so
// no padded copy: each pixel's valid tap range is computed once.
void depthwise_fwd_wt(float* y, const float* x, const float* wt, const float* bias,
                      const Geom& G) {
  const int64_t C = G.c, cv = C / kDwVW * kDwVW;
  parallel_for(G.n * G.p, std::max<int64_t>(1, 4096 / (G.q * C * G.r * G.s) + 1),
               [&](int64_t b, int64_t e) {
    for (int64_t row = b; row < e; ++row) {
      const int64_t img = row / G.p, pp = row % G.p;
      const int64_t ih0 = pp * G.sh - G.ph;
      const int64_t r_lo = std::max<int64_t>(0, -ih0), r_hi = std::min(G.r, G.h - ih0);
      for (int64_t qq = 0; qq < G.q; ++qq) {
        float* __restrict yo = y + (row * G.q + qq) * C;
        const int64_t iw0 = qq * G.sw - G.pw;
        const int64_t s_lo = std::max<int64_t>(0, -iw0), s_hi = std::min(G.s, G.w - iw0);
        const int64_t base = ((img * G.h + ih0) * G.w + iw0) * C;  // tap (0, 0), maybe outside
        // four channel vectors at a time: four independent fma chains over the taps (one chain
        // waited the fma latency at every tap: 3x slower on Zen 4, 96 channels at 32x32)
        int64_t cb = 0;
        for (; cb + 4 * kDwVW <= cv; cb += 4 * kDwVW) {
          dwv acc[4];
          for (int u = 0; u < 4; ++u)
            acc[u] = bias ? *reinterpret_cast<const dwv*>(bias + cb + u * kDwVW) : dwv{};
          for (int64_t r = r_lo; r < r_hi; ++r)
            for (int64_t s = s_lo; s < s_hi; ++s) {
              const float* xp = x + (base + (r * G.w + s) * C + cb);
              const float* wp = wt + (r * G.s + s) * C + cb;
              for (int u = 0; u < 4; ++u)
                acc[u] += *reinterpret_cast<const dwv*>(xp + u * kDwVW) *
                          *reinterpret_cast<const dwv*>(wp + u * kDwVW);
            }
          for (int u = 0; u < 4; ++u) *reinterpret_cast<dwv*>(yo + cb + u * kDwVW) = acc[u];
        }
        for (; cb < cv; cb += kDwVW) {
          dwv acc = bias ? *reinterpret_cast<const dwv*>(bias + cb) : dwv{};
          for (int64_t r = r_lo; r < r_hi; ++r)
            for (int64_t s = s_lo; s < s_hi; ++s)
              acc += *reinterpret_cast<const dwv*>(x + (base + (r * G.w + s) * C + cb)) *
                     *reinterpret_cast<const dwv*>(wt + (r * G.s + s) * C + cb);
          *reinterpret_cast<dwv*>(yo + cb) = acc;
        }
        for (int64_t ch = cv; ch < C; ++ch) {
          float acc = bias ? bias[ch] : 0.0f;
          for (int64_t r = r_lo; r < r_hi; ++r)
            for (int64_t s = s_lo; s < s_hi; ++s)
              acc += x[base + (r * G.w + s) * C + ch] * wt[(r * G.s + s) * C + ch];
          yo[ch] = acc;
        }
      }
    }
  });
}

void depthwise_fwd(float* y, const float* x, const float* w, const float* bias, const Geom& G) {
  depthwise_fwd_wt(y, x, transpose_depthwise_weights(w, G, false), bias, G);
}

// Gather form: every dx pixel sums the dy pixels whose windows cover it (no write conflicts).
// Stride 1 is exactly a depthwise forward of dy with the flipped kernel. add: dx += the gradient
// (D8_CONV_ACCUMULATE), through the general loop.
void depthwise_dgrad(float* dx, const float* dy, const float* w, const Geom& G, bool add) {
  if (dgrad_as_fwd(G) && !add)
    return depthwise_fwd_wt(dx, dy, transpose_depthwise_weights(w, G, true), nullptr,
                            make_geom(dgrad_as_fwd_shape(G)));
  const float* wt = transpose_depthwise_weights(w, G, false);
  const int64_t C = G.c;
  parallel_for(G.n * G.h, std::max<int64_t>(1, 4096 / (G.w * C * G.r * G.s) + 1),
               [&](int64_t b, int64_t e) {
    for (int64_t row = b; row < e; ++row) {
      const int64_t img = row / G.h, ih = row % G.h;
      for (int64_t iw = 0; iw < G.w; ++iw) {
        float* dxp = dx + (row * G.w + iw) * C;
        if (!add) zero_n(dxp, C);
        for_each_cover(G, ih, iw, [&](int64_t r, int64_t s, int64_t pp, int64_t qq) {
          float* __restrict o = dxp;
          const float* __restrict dyp = dy + ((img * G.p + pp) * G.q + qq) * C;
          const float* __restrict wp = wt + (r * G.s + s) * C;
          for (int64_t ch = 0; ch < C; ++ch) o[ch] += dyp[ch] * wp[ch];
        });
      }
    }
  });
}

void depthwise_wgrad(float* dw, const float* x, const float* dy, const Geom& G) {
  const int64_t C = G.c, rs = G.r * G.s, rows = G.n * G.p, cv = C / kDwVW * kDwVW;
  const int nt = threads_for(rows * G.q * C * rs, kMacsPerThread);
  float* part = scratch(kSlotConvPartial, static_cast<size_t>(nt * rs * C));
  const int team = parallel(nt, [&](int t, int T) {
    float* __restrict acc = part + t * rs * C;
    zero_n(acc, rs * C);
    const int64_t b = rows * t / T, e = rows * (t + 1) / T;
    for (int64_t row = b; row < e; ++row) {
      const int64_t img = row / G.p, pp = row % G.p;
      const int64_t ih0 = pp * G.sh - G.ph;
      const int64_t r_lo = std::max<int64_t>(0, -ih0), r_hi = std::min(G.r, G.h - ih0);
      for (int64_t qq = 0; qq < G.q; ++qq) {
        const float* __restrict dyp = dy + (row * G.q + qq) * C;
        const int64_t iw0 = qq * G.sw - G.pw;
        const int64_t s_lo = std::max<int64_t>(0, -iw0), s_hi = std::min(G.s, G.w - iw0);
        const int64_t base = ((img * G.h + ih0) * G.w + iw0) * C;
        for (int64_t r = r_lo; r < r_hi; ++r)
          for (int64_t s = s_lo; s < s_hi; ++s) {
            const float* __restrict xp = x + (base + (r * G.w + s) * C);
            float* __restrict ap = acc + (r * G.s + s) * C;
            for (int64_t cb = 0; cb < cv; cb += kDwVW)
              *reinterpret_cast<dwv*>(ap + cb) += *reinterpret_cast<const dwv*>(dyp + cb) *
                                                  *reinterpret_cast<const dwv*>(xp + cb);
            for (int64_t ch = cv; ch < C; ++ch) ap[ch] += dyp[ch] * xp[ch];
          }
      }
    }
  });
  for (int t = 1; t < team; ++t) add_n(part, part + t * rs * C, rs * C);
  for (int64_t ch = 0; ch < C; ++ch)
    for (int64_t i = 0; i < rs; ++i) dw[ch * rs + i] = part[i * C + ch];
}

// Wide weights (conv_geom.h wide_weights): the im2col path below splits B's panels over the
// threads, over row chunks they share (Zen 4, 2 threads, batch 16, paired: 512 -> 512 4x4 fprop
// 10.1-10.5 -> 7.0-7.1 ms, its stride-1 dgrad 11.1-11.7 -> 8.1-8.2 ms, 256 -> 512 stride 2 fprop
// 4.9-5.1 -> 3.4 ms; the 64..256-channel layers unchanged).
// Maps up to 15 pixels wide: the 256 -> 256 14x14 fprop and dgrad at batch 8 (2.4 MB of weights)
// 9.13 -> 8.39 ms (medians, both forms alternating in one process, Zen 4, 2 threads); the 8x8
// layers of ResNet-18 and VGG-16 at 32x32 inputs (their fp32 steps within 1%).
bool wide_b(const Geom& G) { return wide_weights(G, sizeof(float), 16); }

// Path choice: the implicit GEMM runs one output row (Q pixels) per gemm call; for narrow
// outputs the im2col path's long row chunks use the register tile better.
bool use_implicit(const Geom& G) {
  const ConvPath f = forced_path();
  if (f != kAuto) return f == kImplicit;
  if (wide_b(G)) return false;
  // Measured on AVX-512 (README): implicit wins for wide rows and for few channels (short
  // im2col runs); im2col wins for narrow outputs with many channels (8x8, 64 channels) on
  // Sapphire Rapids. On Zen 4 (AMD with AVX-512) implicit measured faster on every ResNet-20
  // shape, 14x14x32 and 7x7x64 included (1 and 2 threads, kernels/cpu/README.md).
#if defined(__x86_64__) || defined(__i386__)
  static const bool amd_avx512 = [] {
    __builtin_cpu_init();
    return __builtin_cpu_is("amd") && __builtin_cpu_supports("avx512f");
  }();
  if (amd_avx512) return true;
#endif
  // Rows wide enough for the tile: with AVX-512 (12 x 32 / 16 x 16 tiles) implicit measured
  // faster from 14-pixel rows on (Sapphire Rapids, interleaved, 2026-12-03: 32->32 14x14 fprop
  // 1.05-1.30 vs 1.30-1.50 ms, dgrad 1.58 vs 1.79 ms, 16->32 stride 2 0.97 vs 1.13 ms) and tied at
  // 7x7; the AVX2 build (6 x 16 tiles) on the same core still ran 7x7 26% and 14x14 2-3% faster
  // through im2col.
#if defined(__AVX512F__)
  constexpr int64_t kWideRow = 8;
#else
  constexpr int64_t kWideRow = 16;
#endif
  return G.q >= kWideRow || G.cg * G.s < 32;
}

// ---- stems: few input channels --------------------------------------------------------------------
// fprop, direct form for a network's first conv with few output channels (LeNet-5's 1->6 5x5): the
// GEMM forms vectorize over the 6-16 output channels (6 of 16 lanes used) with one broadcast of x
// per multiply-add, and reduce over R*S*C <= 100 taps (odd: no pairs tile). Here 16 output pixels
// of a row share each vector load of a channel-planar padded copy of the image (rows wide enough
// for a 16-lane load at every window start), up to 16 output channels sit in registers, each fed
// by a broadcast weight, and the 16 x K block is written into y's channel-last layout through a
// stack buffer. Measured on Zen 4, 2 threads, batch 64: LeNet-5's conv1 0.44 -> 0.14 ms; the
// 1->16 and 3->16 3x3 stems tie with the GEMM forms and a 3->64 7x7 stem ran 8% slower, so the
// rule is K <= 16. A direct wgrad of the same shape (dY and x as channel planes) measured no
// faster than the gathered wgrad and is not kept. Ungrouped, stride 1, C <= 4, not 1x1, and not
// when D8_CPU_CONV_PATH forces a GEMM form (the tests run those too).
bool small_c_direct(const Geom& G) {
  return G.g == 1 && G.c <= 4 && G.sh == 1 && G.sw == 1 && G.k <= 16 && !G.pointwise &&
         forced_path() == kAuto;
}

struct Planes {
  int64_t wr;          // floats per plane row: a 16-lane load at every window start of the row
  int64_t plane, per;  // floats per channel plane (H + 2*ph rows), per thread's image copy
};
Planes planes_of(const Geom& G) {
  Planes pl;
  pl.wr = round_up(round_up(G.q, 16) + G.s - 1, 16);
  pl.plane = (G.h + 2 * G.ph) * pl.wr;
  pl.per = round_up(G.c * pl.plane, 16);
  return pl;
}

// xp[c][ih + ph][iw + pw] = x[ih][iw][c] of one image; zeros around (xp was zeroed once: only
// the interior is written, the padding stays 0).
void planar_image(float* __restrict xp, const float* __restrict xi, const Geom& G,
                  const Planes& pl) {
  for (int64_t c = 0; c < G.c; ++c)
    for (int64_t ih = 0; ih < G.h; ++ih) {
      float* d = xp + c * pl.plane + (ih + G.ph) * pl.wr + G.pw;
      const float* s = xi + ih * G.w * G.c + c;
      for (int64_t iw = 0; iw < G.w; ++iw) d[iw] = s[iw * G.c];
    }
}

// One block of KB output channels (k0 ..) for 16 pixels of output row p from q0: y (+ bias).
template <int KB>
void small_c_block(float* __restrict y, const float* __restrict xp, const float* __restrict wt,
                   const float* bias, const Geom& G, const Planes& pl, int64_t p, int64_t q0,
                   int64_t k0) {
  v16f acc[KB];
  for (int kk = 0; kk < KB; ++kk) acc[kk] = v16f{} + (bias ? bias[k0 + kk] : 0.0f);
  for (int64_t c = 0; c < G.c; ++c)
    for (int64_t r = 0; r < G.r; ++r) {
      const float* row = xp + c * pl.plane + (p + r) * pl.wr + q0;
      const float* wr = wt + ((c * G.r + r) * G.s) * G.k + k0;
      for (int64_t s = 0; s < G.s; ++s) {
        const v16f xv = load16(row + s);
        const float* wv = wr + s * G.k;
        for (int kk = 0; kk < KB; ++kk) acc[kk] += xv * wv[kk];
      }
    }
  alignas(64) float tmp[KB][16];
  for (int kk = 0; kk < KB; ++kk) store16(tmp[kk], acc[kk]);
  const int64_t nq = std::min<int64_t>(16, G.q - q0);
  for (int64_t i = 0; i < nq; ++i)
    for (int kk = 0; kk < KB; ++kk) y[i * G.k + kk] = tmp[kk][i];
}

template <int... KB>
void small_c_dispatch(std::integer_sequence<int, KB...>, int kb, float* y, const float* xp,
                      const float* wt, const float* bias, const Geom& G, const Planes& pl,
                      int64_t p, int64_t q0, int64_t k0) {
  using Fn = void (*)(float*, const float*, const float*, const float*, const Geom&,
                      const Planes&, int64_t, int64_t, int64_t);
  static constexpr Fn table[] = {&small_c_block<KB + 1>...};
  table[kb - 1](y, xp, wt, bias, G, pl, p, q0, k0);
}

bool conv_fwd_small_c(float* y, const float* x, const float* w, const float* bias,
                      const Geom& G) {
  if (!small_c_direct(G)) return false;
  const Planes pl = planes_of(G);
  const int nt = static_cast<int>(
      std::min<int64_t>(threads_for(G.m * G.k * G.kd, kMacsPerThread), G.n));
  float* bufs = scratch(kSlotConvPad, static_cast<size_t>(nt * pl.per));
  // weights [(c, r, s)][K]
  float* wt = scratch(kSlotConvB, static_cast<size_t>(G.kd * G.k));
  for (int64_t k = 0; k < G.k; ++k)
    for (int64_t r = 0; r < G.r; ++r)
      for (int64_t s = 0; s < G.s; ++s)
        for (int64_t c = 0; c < G.c; ++c)
          wt[((c * G.r + r) * G.s + s) * G.k + k] = w[((k * G.r + r) * G.s + s) * G.c + c];
  parallel(nt, [&](int t, int T) {
    float* xp = bufs + t * pl.per;
    zero_n(xp, pl.per);
    for (int64_t img = G.n * t / T; img < G.n * (t + 1) / T; ++img) {
      planar_image(xp, x + img * G.h * G.w * G.c, G, pl);
      for (int64_t p = 0; p < G.p; ++p)
        for (int64_t q0 = 0; q0 < G.q; q0 += 16)
          for (int64_t k0 = 0; k0 < G.k; k0 += 16) {
            const int kb = static_cast<int>(std::min<int64_t>(16, G.k - k0));
            small_c_dispatch(std::make_integer_sequence<int, 16>{}, kb,
                             y + ((img * G.p + p) * G.q + q0) * G.k + k0, xp, wt, bias, G, pl,
                             p, q0, k0);
          }
    }
  });
  return true;
}

// ---- GEMM paths -----------------------------------------------------------------------------------
// The wide-weights im2col form without the padding taps (ungrouped; conv_fwd_im2col below): the
// output pixels fall into classes of equal tap spans (rows r in [rlo, rhi), columns s in [slo,
// shi): 9 classes for a 3x3 pad-1 conv), and each class's im2col rows hold only its valid taps,
// (r, s, c) in order. Per class one GEMM per kernel row r over the B rows (r*S + slo)*C .. + ns*C,
// a contiguous run of the panels (all of r's rows in one run when the class spans every s), into
// the thread's scratch of C columns; then each thread copies its columns into y (+ bias, + y
// when beta). As in conv_fwd_im2col, the threads share the gathering of a chunk's rows and each
// multiplies all of them by its own B panels, so B is read once per chunk. The padding holds 18%
// of a 3x3 conv's nominal multiply-adds on 7x7 maps and 31% on 4x4 (ResNet-18's last stage on
// 32x32 inputs). Returns false for more than kMaxSpanClasses classes a dimension.
constexpr int64_t kMaxSpanClasses = 8;
bool conv_fwd_im2col_exact(float* y, const float* x, const float* bp, int nv, const float* bias,
                           const Geom& G, float beta) {
  if (G.g != 1 || G.pointwise) return false;
  struct Cls {
    int64_t lo, hi, o0, o1;  // tap span [lo, hi) of the outputs [o0, o1)
  };
  auto classes = [](int64_t n, int64_t stride, int64_t pad, int64_t in, int64_t k, Cls* out) {
    int64_t nc = 0;
    for (int64_t o = 0; o < n; ++o) {
      const Span sp = tap_span(o, stride, pad, in, k);
      const int64_t lo = sp.lo, hi = std::max(sp.lo, sp.hi);
      if (nc > 0 && out[nc - 1].lo == lo && out[nc - 1].hi == hi) {
        out[nc - 1].o1 = o + 1;
      } else {
        if (nc == kMaxSpanClasses) return int64_t{-1};
        out[nc++] = {lo, hi, o, o + 1};
      }
    }
    return nc;
  };
  Cls rc[kMaxSpanClasses], qc[kMaxSpanClasses];
  const int64_t nrc = classes(G.p, G.sh, G.ph, G.h, G.r, rc);
  const int64_t nqc = classes(G.q, G.sw, G.pw, G.w, G.s, qc);
  if (nrc < 0 || nqc < 0) return false;
  if (nrc == 1 && nqc == 1 && rc[0].lo == 0 && rc[0].hi == G.r && qc[0].lo == 0 &&
      qc[0].hi == G.s)
    return false;  // no padding tap: the plain form does the same work
  const int64_t C = G.c, K = G.k, S = G.s, KD = G.kd, NR = gemm_nr(nv);
  const int64_t ncls = nrc * nqc, pq = G.p * G.q, hwc = G.h * G.w * C;
  // per class: taps per row (kq), pixels per image
  int64_t kq[kMaxSpanClasses * kMaxSpanClasses], per_img[kMaxSpanClasses * kMaxSpanClasses];
  int64_t img_floats = 0;  // compact im2col floats of one image
  for (int64_t c = 0; c < ncls; ++c) {
    const Cls &a = rc[c / nqc], &b = qc[c % nqc];
    kq[c] = (a.hi - a.lo) * (b.hi - b.lo) * C;
    per_img[c] = (a.o1 - a.o0) * (b.o1 - b.o0);
    img_floats += per_img[c] * kq[c];
  }
  // chunks of whole images, up to 8 MB of compact rows (at least one image)
  const int64_t ci = std::max<int64_t>(1, std::min(G.n, (int64_t{8} << 20) / (4 * img_floats)));
  const int nt = threads_for(G.m * G.k * G.kd, kMacsPerThread);
  const int64_t panels = ceil_div(K, NR);
  float* col = scratch(kSlotConvCol, static_cast<size_t>(ci * img_floats));
  // the threads' C scratch: thread t's columns [j0, j0 + jn) of every row at cs_all + rows*j0
  float* cs_all = scratch(kSlotConvPartial, static_cast<size_t>(ci * pq * panels * NR));
  parallel(nt, [&](int t, int T) {
    const int64_t p0 = panels * t / T, p1 = panels * (t + 1) / T;
    const int64_t j0 = p0 * NR, jn = std::min(p1 * NR, K) - j0;
    float* cs = cs_all + ci * pq * j0;
    for (int64_t i0 = 0; i0 < G.n; i0 += ci) {
      const int64_t ni = std::min(ci, G.n - i0), rows = ni * pq;
      // class c's rows: images i0 .. i0+ni, then its outputs (p, q) row-major; at col + coff
      int64_t coff[kMaxSpanClasses * kMaxSpanClasses], roff[kMaxSpanClasses * kMaxSpanClasses];
      for (int64_t c = 0, fo = 0, ro = 0; c < ncls; ++c) {
        coff[c] = fo, roff[c] = ro;
        fo += ni * per_img[c] * kq[c], ro += ni * per_img[c];
      }
      // gather this thread's share of the rows (flat order over the classes)
      for (int64_t fr = rows * t / T; fr < rows * (t + 1) / T; ++fr) {
        int64_t c = 0;
        while (c + 1 < ncls && roff[c + 1] <= fr) ++c;
        const Cls &a = rc[c / nqc], &b = qc[c % nqc];
        const int64_t i = fr - roff[c], img = i0 + i / per_img[c], pix = i % per_img[c];
        const int64_t nq = b.o1 - b.o0, p = a.o0 + pix / nq, q = b.o0 + pix % nq;
        const int64_t ns = b.hi - b.lo;
        float* d = col + coff[c] + i * kq[c];
        const float* xs = x + img * hwc + ((p * G.sh - G.ph) * G.w + (q * G.sw - G.pw + b.lo)) * C;
        for (int64_t r = a.lo; r < a.hi; ++r, d += ns * C) copy_n(d, xs + r * G.w * C, ns * C);
      }
      team::barrier();
      if (jn > 0) {
        for (int64_t c = 0; c < ncls; ++c) {
          const Cls &a = rc[c / nqc], &b = qc[c % nqc];
          const int64_t m = ni * per_img[c], ns = b.hi - b.lo;
          if (m == 0) continue;
          float* cc = cs + roff[c] * jn;
          if (kq[c] == 0) {  // no tap inside: zeros
            zero_n(cc, m * jn);
            continue;
          }
          const bool whole = ns == S;  // all of r's rows in one run of B
          const int64_t runs = whole ? 1 : a.hi - a.lo, kr = whole ? kq[c] : ns * C;
          for (int64_t u = 0; u < runs; ++u) {
            const int64_t brow = ((a.lo + u) * S + b.lo) * C;
            gemm_core(m, jn, kr, 1.0f, col + coff[c] + u * kr, kq[c], 1, nullptr,
                      bp + p0 * KD * NR + brow * NR, nv, u == 0 ? 0.0f : 1.0f, cc, jn, nullptr,
                      nullptr, KD);
          }
        }
        // scatter the thread's columns into y
        for (int64_t c = 0; c < ncls; ++c) {
          const Cls &a = rc[c / nqc], &b = qc[c % nqc];
          const int64_t nq = b.o1 - b.o0, n_img = per_img[c];
          for (int64_t i = 0; i < ni * n_img; ++i) {
            const int64_t img = i0 + i / n_img, pix = i % n_img;
            const int64_t p = a.o0 + pix / nq, q = b.o0 + pix % nq;
            const float* src = cs + (roff[c] + i) * jn;
            float* dst = y + ((img * G.p + p) * G.q + q) * K + j0;
            if (beta != 0.0f) {
              for (int64_t j = 0; j < jn; ++j)
                dst[j] = src[j] + (bias ? bias[j0 + j] : 0.0f) + beta * dst[j];
            } else if (bias) {
              for (int64_t j = 0; j < jn; ++j) dst[j] = src[j] + bias[j0 + j];
            } else {
              copy_n(dst, src, jn);
            }
          }
        }
      }
      team::barrier();
    }
  });
  return true;
}

// fprop, version 1: im2col chunks (CH rows x KD) then one gemm per chunk and group.
void conv_fwd_im2col(float* y, const float* x, const float* bp, int64_t pbf, int nv,
                     const float* bias, const Geom& G, float beta) {
  const int nt = threads_for(G.m * G.k * G.kd, kMacsPerThread);
  if (wide_b(G) && nv != kNvPairs) {
    if (forced_path() == kAuto && conv_fwd_im2col_exact(y, x, bp, nv, bias, G, beta)) return;
    // im2col chunks of up to 8 MB shared by the threads (each gathers a share of the rows), then
    // each thread multiplies the whole chunk by its own B panels: B is read once per chunk
    const int64_t ch = std::min(G.m, std::max<int64_t>(row_quantum(),
                                                       (int64_t{8} << 20) / (4 * G.kd)));
    float* col = scratch(kSlotConvCol, static_cast<size_t>(ch * G.kd));
    const int64_t nr = gemm_nr(nv), panels = ceil_div(G.kg, nr);
    parallel(nt, [&](int t, int T) {
      const int64_t p0 = panels * t / T, p1 = panels * (t + 1) / T;
      for (int64_t m0 = 0; m0 < G.m; m0 += ch) {
        const int64_t cnt = std::min(ch, G.m - m0);
        const int64_t r0 = cnt * t / T, r1 = cnt * (t + 1) / T;
        if (r1 > r0) im2col(col + r0 * G.kd, x, G, m0 + r0, r1 - r0, 0);
        team::barrier();
        if (p1 > p0)
          gemm_core(cnt, std::min(p1 * nr, G.kg) - p0 * nr, G.kd, 1.0f, col, G.kd, 1, nullptr,
                    bp + p0 * G.kd * nr, nv, beta, y + m0 * G.k + p0 * nr, G.k,
                    bias ? bias + p0 * nr : nullptr, nullptr);
        team::barrier();
      }
    });
    return;
  }
  const int64_t ch = col_chunk_rows(G.m, G.kd, nt);
  const int64_t nchunks = ceil_div(G.m, ch);
  float* col =
      G.pointwise ? nullptr : scratch(kSlotConvCol, static_cast<size_t>(nt * ch * G.kd));
  parallel(nt, [&](int t, int T) {
    float* colt = G.pointwise ? nullptr : col + t * ch * G.kd;
    for (int64_t ci = nchunks * t / T; ci < nchunks * (t + 1) / T; ++ci) {
      const int64_t m0 = ci * ch, cnt = std::min(ch, G.m - m0);
      for (int64_t g = 0; g < G.g; ++g) {
        const float* a;
        int64_t lda;
        if (G.pointwise) {
          a = x + m0 * G.c + g * G.cg;
          lda = G.c;
        } else {
          im2col(colt, x, G, m0, cnt, g);
          a = colt;
          lda = G.kd;
        }
        gemm_core(cnt, G.kg, G.kd, 1.0f, a, lda, 1, nullptr, bp + g * pbf, nv, beta,
                  y + m0 * G.k + g * G.kg, G.k, bias ? bias + g * G.kg : nullptr, nullptr);
      }
    }
  });
}

// fprop, version 2: implicit GEMM, one gemm per output row and group; A rows are the Q output
// pixels of that row (stride sw*C in the padded input), columns the taps via koff.
void conv_fwd_implicit(float* y, const float* x, const float* bp, int64_t pbf, int nv,
                       const float* bias, const Geom& G, float beta) {
  const Src src = padded_input(x, G);
  const int64_t* koff = tap_offsets(G, src);
  const int64_t rows = G.n * G.p;
  const int nt = threads_for(G.m * G.k * G.kd, kMacsPerThread);
  parallel(nt, [&](int t, int T) {
    for (int64_t row = rows * t / T; row < rows * (t + 1) / T; ++row) {
      const int64_t img = row / G.p, pp = row % G.p;
      const float* a0 = src.base + img * src.img_stride + pp * G.sh * src.row_stride;
      for (int64_t g = 0; g < G.g; ++g)
        gemm_core(G.q, G.kg, G.kd, 1.0f, a0 + g * G.cg, G.sw * G.c, 1, koff, bp + g * pbf, nv,
                  beta, y + row * G.q * G.k + g * G.kg, G.k, bias ? bias + g * G.kg : nullptr,
                  nullptr);
    }
  });
}

// fprop, version 3: implicit GEMM on x itself, no padded copy. The interior outputs (windows
// wholly inside x) read x through koff as version 2 does; the border outputs (windows that reach
// the padding) go through im2col rows, which zero the taps outside x: per thread, the border
// pixels of its output rows are gathered into one chunk, one GEMM writes them to a scratch, and
// their rows are copied into y. Chosen when at least kInteriorShare of the outputs are interior
// and the interior rows are at least 8 pixels wide; returns false otherwise. Measured against
// version 2 in one process, interleaved (Sapphire Rapids, 2026-12-03): 16->32 stride-2 28x28
// fprop 1.01 vs 1.15 ms, 16->16 28x28 fprop 2.00 vs 2.06 ms, the 14x14 layers equal. Forcing a
// path (D8_CPU_CONV_PATH) runs version 2 or 1, so the tests compare all three.
constexpr double kInteriorShare = 0.7;

struct Interior {
  int64_t p0, p1, q0, q1;  // interior output rows [p0, p1) and columns [q0, q1)
};
Interior interior_of(const Geom& G) {
  auto range = [](int64_t pad, int64_t stride, int64_t in, int64_t k, int64_t out) {
    const int64_t lo = std::min(out, ceil_div(pad, stride));
    const int64_t last = in - k + pad;  // the last window start (in padded coordinates) inside
    const int64_t hi = last < 0 ? lo : std::max(lo, std::min(out, last / stride + 1));
    return std::pair<int64_t, int64_t>{lo, hi};
  };
  const auto [p0, p1] = range(G.ph, G.sh, G.h, G.r, G.p);
  const auto [q0, q1] = range(G.pw, G.sw, G.w, G.s, G.q);
  return {p0, p1, q0, q1};
}

bool conv_fwd_unpadded(float* y, const float* x, const float* bp, int64_t pbf, int nv,
                       const float* bias, const Geom& G, float beta) {
  const Interior I = interior_of(G);
  const int64_t inner = (I.p1 - I.p0) * (I.q1 - I.q0);
  if (inner < kInteriorShare * static_cast<double>(G.p * G.q) || I.q1 - I.q0 < 8) return false;
  const Src src{x, G.h * G.w * G.c, G.w * G.c};
  const int64_t* koff = tap_offsets(G, src);
  const int64_t rows = G.n * G.p;
  const int nt = threads_for(G.m * G.k * G.kd, kMacsPerThread);
  // border chunk per thread: at most this many pixels (a multiple of the tile heights)
  const int64_t bmax = std::max<int64_t>(row_quantum(), col_chunk_rows(G.m, G.kd, nt));
  float* work = scratch(kSlotConvCol, static_cast<size_t>(nt * bmax * (G.kd + G.k)));
  int64_t* bms =
      reinterpret_cast<int64_t*>(scratch(kSlotConvWork, static_cast<size_t>(2 * nt * bmax)));
  parallel(nt, [&](int t, int T) {
    float* col = work + t * bmax * (G.kd + G.k);
    float* yb = col + bmax * G.kd;
    int64_t* bm = bms + t * bmax;  // output pixel (row of y) of each gathered border pixel
    int64_t nb = 0;
    auto flush = [&] {
      if (nb == 0) return;
      for (int64_t g = 0; g < G.g; ++g) {
        for (int64_t i = 0; i < nb; ++i) im2col(col + i * G.kd, x, G, bm[i], 1, g);
        gemm_core(nb, G.kg, G.kd, 1.0f, col, G.kd, 1, nullptr, bp + g * pbf, nv, 0.0f,
                  yb, G.kg, bias ? bias + g * G.kg : nullptr, nullptr);
        for (int64_t i = 0; i < nb; ++i) {
          float* d = y + bm[i] * G.k + g * G.kg;
          const float* src = yb + i * G.kg;
          if (beta != 0.0f) {
            for (int64_t j = 0; j < G.kg; ++j) d[j] += src[j];  // (beta is 0 or 1)
          } else {
            copy_n(d, src, G.kg);
          }
        }
      }
      nb = 0;
    };
    auto border = [&](int64_t m0, int64_t cnt) {
      for (int64_t i = 0; i < cnt; ++i) {
        bm[nb++] = m0 + i;
        if (nb == bmax) flush();
      }
    };
    for (int64_t row = rows * t / T; row < rows * (t + 1) / T; ++row) {
      const int64_t img = row / G.p, pp = row % G.p;
      if (pp < I.p0 || pp >= I.p1) {
        border(row * G.q, G.q);
        continue;
      }
      border(row * G.q, I.q0);
      border(row * G.q + I.q1, G.q - I.q1);
      const float* a0 = x + img * src.img_stride + (pp * G.sh - G.ph) * src.row_stride +
                        (I.q0 * G.sw - G.pw) * G.c;
      for (int64_t g = 0; g < G.g; ++g)
        gemm_core(I.q1 - I.q0, G.kg, G.kd, 1.0f, a0 + g * G.cg, G.sw * G.c, 1, koff,
                  bp + g * pbf, nv, beta, y + (row * G.q + I.q0) * G.k + g * G.kg, G.k,
                  bias ? bias + g * G.kg : nullptr, nullptr);
    }
    flush();
  });
  return true;
}

// fprop, version 4 (exact windows): x read in place as in version 3, but no output pixel is
// multiplied by the padding. Output row p sees the kernel rows r in [rlo(p), rhi(p)), output
// column q the kernel columns s in [slo(q), shi(q)) (tap_span); the interior columns [q0, q1) see
// every s. Per output row, one GEMM over the interior columns whose reduction is the rows
// r in [rlo, rhi) of the full tap list: a contiguous run of B's rows (bp from row rlo*S*Cg, panel
// stride KD). Each border column q has its own weights B_q (the taps r < R, s in [slo, shi),
// packed once per call): one GEMM down the interior rows (A rows sh*W*C floats apart), and per
// corner (border row x border column) one GEMM over that border row's r run for up to 8 images
// (A rows an image apart). A koff table holds the offsets from a window's first inside tap, one
// table per distinct column count ns (an r run is a prefix of it). Work units (below), split
// over the threads.
// Against version 3 (border pixels through im2col rows, zero taps included, then a copy) this
// skips the nominal multiply-adds of the padding: 18% of ResNet-20's 7x7 layers, 9% of the
// 14x14, 5% of the 28x28. Returns false (versions 3 / 2 run) for grouped convs, for more than
// kMaxBorderCols border columns, when there are no interior columns, fewer images than threads,
// or border-column weights over kMaxBorderWeightBytes (wide layers, below).
constexpr int64_t kMaxBorderCols = 8;
constexpr int64_t kMaxBurstBytes = int64_t{256} << 10;  // next-image prefetch (below): L2 share
constexpr int64_t kMaxBorderWeightBytes = int64_t{256} << 10;

bool conv_fwd_exact(float* y, const float* x, const float* w, const float* bp, int nv,
                    const float* bias, const Geom& G, float beta) {
  const int nt = threads_for(G.m * G.k * G.kd, kMacsPerThread);
  if (G.g != 1 || G.n < nt) return false;  // (an image's interior unit is most of its work)
  const Interior I = interior_of(G);
  const int64_t nbc = I.q0 + (G.q - I.q1);
  if (I.q1 <= I.q0 || nbc > kMaxBorderCols) return false;
  const int64_t C = G.c, K = G.k, R = G.r, S = G.s, KD = G.kd, NR = gemm_nr(nv);
  auto border_col = [&](int64_t i) { return i < I.q0 ? i : I.q1 + (i - I.q0); };
  // per border column: its span, packed B (R*ns*C rows) and koff table; the interior's table
  struct Col {
    int64_t q, slo, ns;
    float* b;
    const int64_t* koff;
  };
  Col cols[kMaxBorderCols];
  int64_t bfloats = 0, maxns = 0;
  for (int64_t i = 0; i < nbc; ++i) {
    const int64_t q = border_col(i);
    const Span sp = tap_span(q, G.sw, G.pw, G.w, S);
    const int64_t ns = std::max<int64_t>(0, sp.hi - sp.lo);
    cols[i] = {q, sp.lo, ns, nullptr, nullptr};
    bfloats += round_up(packb_floats(std::max<int64_t>(1, R * ns * C), K, nv), 16);
    maxns = std::max(maxns, ns);
  }
  // Wide layers keep version 3: each border column's weights are packed per call, and its corner
  // pixels stream them once per pixel, so they must stay small (L2) and cheap next to the work.
  // 512->512 7x7 at batch 8 (6 MB per border column) ran 9.8 -> 18-21 ms with exact windows,
  // ResNet-20's 64->64 7x7 (98 KB) 1.05 -> 0.93 ms.
  if (4 * R * maxns * C * K > kMaxBorderWeightBytes ||
      static_cast<double>(bfloats) * 1024 > static_cast<double>(G.m) * K * KD)
    return false;
  // koff tables for ns = 1 .. S, built where used: koff_ns[(r*ns + s)*C + c] = (r*W + s)*C + c
  int64_t* ktab = reinterpret_cast<int64_t*>(
      scratch(kSlotConvOffsets, static_cast<size_t>(2 * R * C * S * (S + 1) / 2 + 16)));
  const int64_t* koff_of[64] = {};
  auto table = [&](int64_t ns) -> const int64_t* {
    if (ns <= 0) return nullptr;
    if (ns < 64 && koff_of[ns]) return koff_of[ns];
    int64_t* t = ktab + R * C * (ns - 1) * ns / 2;  // tables for 1 .. ns-1 come before
    fill_tap_offsets(t, R, ns, C, G.w * C, C);
    if (ns < 64) koff_of[ns] = t;
    return t;
  };
  const int64_t* koff = table(S);
  const int64_t wmax = K * R * S * C;
  float* bcols = scratch(kSlotConvCol, static_cast<size_t>(bfloats + nbc * wmax));
  {
    float* pb = bcols;
    for (int64_t i = 0; i < nbc; ++i) {
      cols[i].koff = table(cols[i].ns);
      cols[i].b = pb;
      pb += round_up(packb_floats(std::max<int64_t>(1, R * cols[i].ns * C), K, nv), 16);
    }
    float* wtmp = pb;
    // B_q[(r*ns + s')*C + c][j] = w[j][r][slo + s'][c], one column per thread (when each is at
    // least 32K floats: a fork-join costs more than packing the small ones)
    parallel_for(nbc, std::max<int64_t>(1, (int64_t{1} << 15) / wmax), [&](int64_t b0, int64_t b1) {
      for (int64_t i = b0; i < b1; ++i) {
        const Col& cl = cols[i];
        if (cl.ns == 0) continue;
        const int64_t kdq = R * cl.ns * C;
        float* wt = wtmp + i * wmax;
        for (int64_t j = 0; j < K; ++j)
          for (int64_t r = 0; r < R; ++r)
            copy_n(wt + j * kdq + r * cl.ns * C, w + j * KD + (r * S + cl.slo) * C, cl.ns * C);
        pack_b(cl.b, wt, 1, kdq, kdq, K, nv);
      }
    });
  }
  // Work units per image: its interior rows (one batched GEMM), each border row's interior
  // columns, each border column down the interior rows; the threads split them evenly (an image's
  // units are in that order). Corners (border row x border column) run as one GEMM per corner
  // over up to kCornerImages images, A rows an image apart, by the thread that owns those images'
  // first units, after them. (A corner per image and call was a one-row tile, two accumulators
  // waiting on the FMA latency: 8% of the 64 -> 64 7x7 fprop for 4.4% of its multiply-adds.
  // Corner units of their own, at the end of each block, tipped the even split at batch 8: one
  // thread got 5 of the 8 interiors of a 64 -> 64 56x56 fprop.)
  constexpr int64_t kCornerImages = 8;
  const int64_t nbr = I.p0 + (G.p - I.p1), inner = I.p1 > I.p0 ? 1 : 0;
  const int64_t hwc = G.h * G.w * C, pqk = G.p * G.q * K, units_img = nbr + inner + nbc;
  const int64_t units = G.n * units_img;
  auto border_row = [&](int64_t b) { return b < I.p0 ? b : I.p1 + (b - I.p0); };
  const bool burst = G.sh * G.sw > 1 && 4 * (hwc + pqk) <= kMaxBurstBytes;
  // the corners of images [img0, img0 + nimg)
  auto corners = [&](int64_t img0, int64_t nimg) {
    for (int64_t c = 0; c < nbr * nbc; ++c) {
      const int64_t p = border_row(c / nbc);
      const Col& cl = cols[c % nbc];
      const Span rs = tap_span(p, G.sh, G.ph, G.h, R);
      const int64_t nr = std::max<int64_t>(0, rs.hi - rs.lo), r0 = nr > 0 ? rs.lo : 0;
      const int64_t kq = cl.ns > 0 ? nr * cl.ns * C : 0;
      const float* xi = x + img0 * hwc;
      const float* ap = xi + ((p * G.sh - G.ph + r0) * G.w + (cl.q * G.sw - G.pw + cl.slo)) * C;
      gemm_core(nimg, K, kq, 1.0f, kq > 0 ? ap : xi, hwc, 1, cl.koff, cl.b + r0 * cl.ns * C * NR,
                nv, beta, y + img0 * pqk + (p * G.q + cl.q) * K, pqk, bias, nullptr,
                R * cl.ns * C);
    }
  };
  parallel(nt, [&](int t, int T) {
    const int64_t u0 = units * t / T, u1 = units * (t + 1) / T;
    // this thread's corners: the images whose first unit it owns, a block at a time
    const int64_t ib = ceil_div(u1, units_img);
    int64_t cb = ceil_div(u0, units_img);
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t img = u / units_img, v = u % units_img;
      if (img >= cb + kCornerImages) corners(cb, kCornerImages), cb += kCornerImages;
      const float* xi = x + img * hwc;
      float* yi = y + img * pqk;
      if (v < inner) {  // the interior rows' interior columns: full windows
        // strided with small images: the next image's x and y requested up front (cold
        // operands on the Zen 4 guest: 16->32 stride 2 at batch 64 8-10% faster, 32->64 2-3%;
        // the stride-1 layers measured neutral to 5% slower, and a 7x7 stride-2 stem, 3.8 MB a
        // image, 2-4% slower: they skip it)
        if (burst && img + 1 < G.n && u + units_img < u1) {
          prefetch_bytes(xi + hwc, 4 * hwc, false);
          prefetch_bytes(yi + pqk, 4 * pqk, true);
        }
        const float* a = xi + ((I.p0 * G.sh - G.ph) * G.w + (I.q0 * G.sw - G.pw)) * C;
        gemm_core(I.q1 - I.q0, K, KD, 1.0f, a, G.sw * C, 1, koff, bp, nv, beta,
                  yi + (I.p0 * G.q + I.q0) * K, K, bias, nullptr, 0, I.p1 - I.p0,
                  G.sh * G.w * C, G.q * K);
      } else if (v < inner + nbr) {  // border row p: its interior columns
        const int64_t p = border_row(v - inner);
        const Span rs = tap_span(p, G.sh, G.ph, G.h, R);
        const int64_t nr = std::max<int64_t>(0, rs.hi - rs.lo);
        const int64_t r0 = nr > 0 ? rs.lo : 0;
        const float* a = xi + ((p * G.sh - G.ph + r0) * G.w + (I.q0 * G.sw - G.pw)) * C;
        gemm_core(I.q1 - I.q0, K, nr * S * C, 1.0f, a, G.sw * C, 1, koff, bp + r0 * S * C * NR,
                  nv, beta, yi + (p * G.q + I.q0) * K, K, bias, nullptr, KD);
      } else if (inner) {  // border column q down the interior rows
        const Col& cl = cols[v - inner - nbr];
        const int64_t kq = R * cl.ns * C;
        const float* a =
            xi + ((I.p0 * G.sh - G.ph) * G.w + (cl.q * G.sw - G.pw + cl.slo)) * C;
        gemm_core(I.p1 - I.p0, K, kq, 1.0f, kq > 0 ? a : xi, G.sh * G.w * C, 1, cl.koff, cl.b,
                  nv, beta, yi + (I.p0 * G.q + cl.q) * K, G.q * K, bias, nullptr);
      }
    }
    for (; cb < ib; cb += kCornerImages) corners(cb, std::min(kCornerImages, ib - cb));
  });
  return true;
}

// y = conv(x, w) (+ bias), or y += conv(x, w) with beta = 1 (the gather dgrad with
// D8_CONV_ACCUMULATE; no bias then).
void conv_fwd_impl(float* y, const float* x, const float* w, const float* bias, const Geom& G,
                   float beta) {
  if (G.depthwise) return depthwise_fwd(y, x, w, bias, G);  // (beta 0: see depthwise_dgrad)
  if (beta == 0.0f && conv_fwd_small_c(y, x, w, bias, G)) return;
  // Weights of group g as B[kk, j] = w[(g*Kg + j)*KD + kk] (transposed view), packed once; the
  // pairs layout for narrow outputs (Kg <= one vector) when A's tap pairs are adjacent: always in
  // im2col rows and x itself, through koff when Cg is even.
  const bool implicit = !G.pointwise && use_implicit(G);
  const int nv = !implicit || G.cg % 2 == 0 ? gemm_nv_pairs(G.kg, G.kd) : gemm_nv(G.kg);
  const int64_t pbf = round_up(packb_floats(G.kd, G.kg, nv), 16);
  float* bp = scratch(kSlotConvB, static_cast<size_t>(pbf * G.g));
  for (int64_t g = 0; g < G.g; ++g)
    pack_b_parallel(bp + g * pbf, w + g * G.kg * G.kd, 1, G.kd, G.kd, G.kg, nv);
  if (!implicit) return conv_fwd_im2col(y, x, bp, pbf, nv, bias, G, beta);
  if (forced_path() == kAuto && conv_fwd_exact(y, x, w, bp, nv, bias, G, beta)) return;
  if (forced_path() == kAuto && conv_fwd_unpadded(y, x, bp, pbf, nv, bias, G, beta)) return;
  conv_fwd_implicit(y, x, bp, pbf, nv, bias, G, beta);
}

// Strided dgrad by phase (ungrouped, stride > 1, at least as many images as threads), the form
// of the INT8 dgrad (int8_conv.cpp dgrad_phases): the dx pixels with (ih + ph) % sh == u and
// (iw + pw) % sw == v receive exactly the taps r = u + sh*j, s = v + sw*l (j < ju, l < jv) from
// dy[a - j][b - l] (ih + ph = sh*a + u, iw + pw = sw*b + v): a stride-1 correlation of dy with a
// ju x jv kernel and C output columns. Per thread a zero-bordered copy of one image's dy (jmax-1
// rows / columns before, enough after); per phase B[(j*jv + l)*K + k][c] = w[k][r][s][c] packed
// once, a koff table of backward offsets, and one gemm_core per dx row of the phase writing dx in
// place (rows sw*C apart; beta 1 adds). No dcol and no col2im, whose R*S*C floats per dy pixel
// were written and read again. Phases without taps (R < sh or S < sw) are zeros: the image's dx
// is cleared once. Returns false (the scatter runs) where it does not apply.
bool dgrad_phases_f32(float* dx, const float* dy, const float* w, const Geom& G, bool add) {
  if (G.g != 1 || (G.sh == 1 && G.sw == 1) || forced_path() != kAuto) return false;
  const int nt = threads_for(G.m * G.k * G.kd, kMacsPerThread);
  if (G.n < nt) return false;
  const int64_t C = G.c, K = G.k;
  const int64_t jmax = ceil_div(G.r, G.sh), lmax = ceil_div(G.s, G.sw);
  const int64_t amax = ceil_div(G.h + G.ph, G.sh), bmax = ceil_div(G.w + G.pw, G.sw);
  const int64_t top = jmax - 1, left = lmax - 1;
  const int64_t hq = top + std::max(amax, G.p), wq = left + std::max(bmax, G.q);
  struct Phase {
    int64_t u, v, ju, jv, kd;
    float* bp;
    int64_t* koff;
  };
  Phase ph[64];
  if (G.sh * G.sw > 64) return false;
  // one nv for every phase: pairs when dy's k pairs are adjacent (K even) and C fits a vector
  const int nv = K % 2 == 0 ? gemm_nv_pairs(C, 2) : gemm_nv(C);
  int64_t nph = 0, bfloats = 0, offs = 0;
  for (int64_t u = 0; u < G.sh; ++u)
    for (int64_t v = 0; v < G.sw; ++v) {
      const PhaseRange pr = phase_range(G, u, v);
      const int64_t ju = pr.ju, jv = pr.jv;
      ph[nph++] = {u, v, ju, jv, ju * jv * K, nullptr, nullptr};
      if (ju * jv > 0) bfloats += round_up(packb_floats(ju * jv * K, C, nv), 16), offs += ju * jv * K;
    }
  float* bbuf = scratch(kSlotConvB, static_cast<size_t>(bfloats + jmax * lmax * K * C));
  int64_t* koffs = reinterpret_cast<int64_t*>(
      scratch(kSlotConvOffsets, static_cast<size_t>(2 * std::max<int64_t>(offs, 1))));
  {
    float* pb = bbuf;
    int64_t* po = koffs;
    float* wt = bbuf + bfloats;
    for (int64_t i = 0; i < nph; ++i) {
      Phase& f = ph[i];
      if (f.kd == 0) continue;
      for (int64_t t = 0; t < f.ju * f.jv; ++t) {
        const int64_t r = f.u + G.sh * (t / f.jv), sc = f.v + G.sw * (t % f.jv);
        for (int64_t k = 0; k < K; ++k)
          copy_n(wt + (t * K + k) * C, w + k * G.kd + (r * G.s + sc) * C, C);
        for (int64_t k = 0; k < K; ++k)
          po[t * K + k] = -((t / f.jv) * wq + (t % f.jv)) * K + k;
      }
      f.bp = pb;
      pack_b(pb, wt, C, 1, f.kd, C, nv);
      pb += round_up(packb_floats(f.kd, C, nv), 16);
      f.koff = po;
      po += f.kd;
    }
  }
  bool empty = false;
  for (int64_t i = 0; i < nph; ++i) empty = empty || ph[i].kd == 0;
  const int64_t img_floats = hq * wq * K, slack = gemm_nr(2);
  float* all = scratch(kSlotConvPad, static_cast<size_t>(nt * (img_floats + slack)));
  const int64_t pqk = G.p * G.q * K, hwc = G.h * G.w * C;
  parallel(nt, [&](int t, int T) {
    float* dyp = all + t * (img_floats + slack);
    zero_n(dyp, img_floats + slack);
    const int64_t img1 = G.n * (t + 1) / T;
    for (int64_t img = G.n * t / T; img < img1; ++img) {
      for (int64_t a = 0; a < G.p; ++a)
        copy_n(dyp + ((a + top) * wq + left) * K, dy + img * pqk + a * G.q * K, G.q * K);
      float* dxi = dx + img * hwc;
      if (empty && !add) zero_n(dxi, hwc);
      // the next image's dx and dy, a share before each phase (as int8_conv.cpp dgrad_phases)
      const bool next = img + 1 < img1;
      const PrefetchShares pdx{next ? dx + (img + 1) * hwc : nullptr, 4 * hwc, nph, true};
      const PrefetchShares pdy{next ? dy + (img + 1) * pqk : nullptr, 4 * pqk, nph, false};
      for (int64_t i = 0; i < nph; ++i) {
        pdx.share(i);
        pdy.share(i);
        const Phase& f = ph[i];
        const PhaseRange pr = phase_range(G, f.u, f.v);
        if (pr.empty()) continue;
        const int64_t a_lo = pr.a_lo, a_hi = pr.a_hi, b_lo = pr.b_lo, b_hi = pr.b_hi;
        // the phase's dx rows in one call: dy rows wq*K apart, dx rows sh*W*C
        gemm_core(b_hi - b_lo + 1, C, f.kd, 1.0f, dyp + ((a_lo + top) * wq + b_lo + left) * K, K,
                  1, f.koff, f.bp, nv, add ? 1.0f : 0.0f,
                  dxi + ((G.sh * a_lo + f.u - G.ph) * G.w + (G.sw * b_lo + f.v - G.pw)) * C,
                  G.sw * C, nullptr, nullptr, 0, a_hi - a_lo + 1, wq * K, G.sh * G.w * C);
      }
    }
  });
  return true;
}

// The gather dgrad where its forward takes the im2col form (ungrouped, not implicit: the wide
// weights, conv_geom.h wide_weights; or a forced im2col path), with B packed straight from w:
// panel row (r', s', k) of columns c .. c+NR is w[k][R-1-r'][S-1-s'][c .. c+NR], a contiguous
// run, so no flipped, transposed copy of w is written and transposed again into panels (two
// passes over 9.4 MB at 512 -> 512 3x3: 16% of that dgrad at batch 8 in perf). Returns false
// where conv_fwd_impl would take another form (or the pairs layout).
bool dgrad_im2col_direct(float* dx, const float* dy, const float* w, const Geom& G,
                         const Geom& G2, bool add) {
  if (G.g != 1 || G2.pointwise || use_implicit(G2) || (!add && small_c_direct(G2))) return false;
  const int nv = gemm_nv_pairs(G2.kg, G2.kd);
  if (nv == kNvPairs) return false;
  const int64_t nr = gemm_nr(nv), panels = ceil_div(G.c, nr), rs = G.r * G.s, K = G.k;
  const int64_t pbf = round_up(packb_floats(G2.kd, G2.kg, nv), 16);
  float* bp = scratch(kSlotConvB, static_cast<size_t>(pbf));
  parallel_for(panels * rs, std::max<int64_t>(1, (int64_t{1} << 13) / (K * nr)),
               [&](int64_t b, int64_t e) {
                 for (int64_t u = b; u < e; ++u) {
                   const int64_t jp = u / rs, t = u % rs, j0 = jp * nr;
                   const int64_t cols = std::min(nr, G.c - j0);
                   const int64_t ft = (G.r - 1 - t / G.s) * G.s + (G.s - 1 - t % G.s);
                   float* d = bp + (jp * G2.kd + t * K) * nr;
                   const float* src = w + ft * G.c + j0;
                   for (int64_t k = 0; k < K; ++k, d += nr, src += rs * G.c) {
                     copy_n(d, src, cols);
                     if (cols < nr) zero_n(d + cols, nr - cols);
                   }
                 }
               });
  conv_fwd_im2col(dx, dy, bp, pbf, nv, nullptr, G2, add ? 1.0f : 0.0f);
  return true;
}

// dx = dgrad(dy, w), or dx += dgrad(dy, w) when add (D8_CONV_ACCUMULATE): in the GEMM (beta 1),
// the border copy or col2im of every form, no extra pass over dx.
void conv_dgrad_impl(float* dx, const float* dy, const float* w, const Geom& G, bool add) {
  if (G.depthwise) return depthwise_dgrad(dx, dy, w, G, add);

  // Two forms; pick the one with less work (multiply-add vectors plus data movement):
  //   gather:  stride 1, pad <= kernel-1: dx = fprop(dy, flipped weights), N = C
  //   scatter: dcol = dy . W (N = R*S*C, long rows), then col2im; threads own whole images
  const bool can_gather = dgrad_as_fwd(G);
  const int64_t vw = gemm_nr(1);
  const double gather_cost = static_cast<double>(G.n * G.h * G.w) * ceil_div(G.cg, vw) *
                             (G.r * G.s * G.kg) * G.g;
  const double scatter_cost = static_cast<double>(G.m) * G.g *
                              (G.kg * ceil_div(G.kd, vw) + G.kd / 8.0);
  const int T = num_threads();
  const bool gather =
      can_gather && (gather_cost <= scatter_cost || (G.n < T && T > 1));
  if (gather) {  // dx = conv(dy, w') (conv_geom.h)
    const Geom G2 = make_geom(dgrad_as_fwd_shape(G));
    if (dgrad_im2col_direct(dx, dy, w, G, G2, add)) return;
    float* wt = scratch(kSlotConvPartial, static_cast<size_t>(G.c * G.r * G.s * G.kg));
    flip_transpose_weights(wt, w, G, transpose_f32);  // 16 x 16 register blocks (AVX-512)
    return conv_fwd_impl(dx, dy, wt, nullptr, G2, add ? 1.0f : 0.0f);
  }
  // by phase (strided): the gather's cost, each dx pixel taking R*S/(sh*sw) taps on average;
  // few input channels (a 3-channel 7x7 stride-2 stem: C of one vector's lanes) scatter instead
  // (that stem's dgrad ran 12.8 -> 50-54 ms by phase, batch 8 at 224)
  const double phase_cost = gather_cost / static_cast<double>(G.sh * G.sw);
  if (phase_cost <= scatter_cost && dgrad_phases_f32(dx, dy, w, G, add)) return;

  const int nv = gemm_nv(G.kd);
  const int64_t pbf = round_up(packb_floats(G.kg, G.kd, nv), 16);
  float* bp = scratch(kSlotConvB, static_cast<size_t>(pbf * G.g));
  for (int64_t g = 0; g < G.g; ++g)
    pack_b_parallel(bp + g * pbf, w + g * G.kg * G.kd, G.kd, 1, G.kg, G.kd, nv);

  int nt = threads_for(G.m * G.k * G.kd, kMacsPerThread);
  nt = static_cast<int>(std::min<int64_t>(nt, G.n));
  const int64_t ch = col_chunk_rows(G.m, G.kd, nt);
  float* dcol = scratch(kSlotConvCol, static_cast<size_t>(nt * ch * G.kd));
  const int64_t pq = G.p * G.q, hwc = G.h * G.w * G.c;
  parallel(nt, [&](int t, int T2) {
    float* dct = dcol + t * ch * G.kd;
    const int64_t i0 = G.n * t / T2, i1 = G.n * (t + 1) / T2;
    if (!add) zero_n(dx + i0 * hwc, (i1 - i0) * hwc);
    for (int64_t m0 = i0 * pq; m0 < i1 * pq; m0 += ch) {
      const int64_t cnt = std::min(ch, i1 * pq - m0);
      for (int64_t g = 0; g < G.g; ++g) {
        if (G.pointwise) {  // 1x1 (stride 1 never gets here unless n < threads): dcol is dx
          gemm_core(cnt, G.kd, G.kg, 1.0f, dy + m0 * G.k + g * G.kg, G.k, 1, nullptr,
                    bp + g * pbf, nv, add ? 1.0f : 0.0f, dx + m0 * G.c + g * G.cg, G.c, nullptr,
                    nullptr);
          continue;
        }
        gemm_core(cnt, G.kd, G.kg, 1.0f, dy + m0 * G.k + g * G.kg, G.k, 1, nullptr, bp + g * pbf,
                  nv, 0.0f, dct, G.kd, nullptr, nullptr);
        col2im_add(dx, dct, G, m0, cnt, g);
      }
    }
  });
}

// dw[i] = sum of the per-thread partials part[t*ld + i], t < team (the threads that actually
// ran: OpenMP may grant fewer than asked for). part == dw when team == 1 (nothing to do).
void sum_partials(float* dw, const float* part, int64_t ld, int64_t total, int team) {
  if (part == dw && team == 1) return;
  parallel_for(total, 1 << 14, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      float v = part[i];
      for (int t = 1; t < team; ++t) v += part[t * ld + i];
      dw[i] = v;
    }
  });
}

// wgrad, version 2: no im2col at all. dW[Kg, taps] += dy^T . X where dy rows are read in place
// (A transposed) and X's row for pixel m is the input window itself, reached through a per-pixel
// offset table; one gather-GEMM per contiguous run of taps (S*C floats per kernel row when
// G == 1).
void conv_wgrad_gather(float* dw, const float* x, const float* dy, const Geom& G) {
  const Src src = padded_input(x, G, 2 * gemm_nr(2));
  const int nt = threads_for(G.m * G.k * G.kd, kMacsPerThread);
  const int64_t ch = std::max<int64_t>(16, std::min<int64_t>(512, ceil_div(G.m, 2 * nt)));
  const int64_t dwf = round_up(G.k * G.kd, 16);
  float* part = nt > 1 ? scratch(kSlotConvPartial, static_cast<size_t>(nt * dwf)) : dw;
  int64_t* boffs = reinterpret_cast<int64_t*>(
      scratch(kSlotConvWork, static_cast<size_t>(2 * nt * round_up(ch, 16))));
  const int team = parallel(nt, [&](int t, int T) {
    float* acc = part + t * dwf;
    int64_t* boff = boffs + t * round_up(ch, 16);
    zero_n(acc, G.k * G.kd);
    const int64_t b = G.m * t / T, e = G.m * (t + 1) / T;
    for (int64_t m0 = b; m0 < e; m0 += ch) {
      const int64_t cnt = std::min(ch, e - m0);
      Cursor cur(G, m0);
      for (int64_t i = 0; i < cnt; ++i, cur.next(G))
        boff[i] = cur.img * src.img_stride + cur.pp * G.sh * src.row_stride + cur.qq * G.sw * G.c;
      for (int64_t g = 0; g < G.g; ++g) {
        const float* a = dy + m0 * G.k + g * G.kg;
        float* cg = acc + g * G.kg * G.kd;
        for (int64_t r = 0; r < G.r; ++r) {
          const float* brow = src.base + r * src.row_stride + g * G.cg;
          if (G.g == 1) {
            gemm_gather_b(G.kg, G.s * G.c, cnt, a, G.k, brow, boff, cg + r * G.s * G.c, G.kd);
          } else {
            for (int64_t s = 0; s < G.s; ++s)
              gemm_gather_b(G.kg, G.cg, cnt, a, G.k, brow + s * G.c, boff,
                            cg + (r * G.s + s) * G.cg, G.kd);
          }
        }
      }
    }
  });
  sum_partials(dw, part, dwf, G.k * G.kd, team);
}

// wgrad, version 3 (ungrouped, C a whole number of vectors, at least as many images as threads):
// no padded copy of x and no multiply-add on the padding. The output columns q fall into a few
// classes by the taps s their windows have inside x ([slo, shi): all S in the interior, fewer at
// the borders); per class one list of (dy row, window start in x) offset pairs over a group of
// the thread's images, output row major, so that for kernel row r the pixels whose tap row lies
// inside the image (rows p in [plo, phi)) are one slice of it. One gathered GEMM per class and
// kernel row adds dy^T . window run into dW's columns (r, slo .. shi). The runs are whole vectors,
// so no tile reads past a run's end (x has no slack after its last pixel). Version 2 pads the
// whole batch first, reads the copy back from L3 and multiplies the zero rows and columns (5% of
// the multiply-adds of a 28x28 map with a 3x3 kernel, 18% at 7x7). Returns false where it does
// not apply.
bool conv_wgrad_direct(float* dw, const float* x, const float* dy, const Geom& G) {
  if (G.g != 1 || G.c % gemm_nr(1) != 0) return false;
  const int nt = threads_for(G.m * G.k * G.kd, kMacsPerThread);
  if (G.n < nt) return false;
  // column classes: the runs of equal [slo, shi), in q order
  struct Cls {
    int64_t slo, shi, q0, q1;
  };
  std::vector<Cls> cls;
  for (int64_t q = 0; q < G.q; ++q) {
    const Span sp = tap_span(q, G.sw, G.pw, G.w, G.s);
    if (!cls.empty() && cls.back().slo == sp.lo && cls.back().shi == sp.hi && cls.back().q1 == q)
      cls.back().q1 = q + 1;
    else
      cls.push_back({sp.lo, sp.hi, q, q + 1});
  }
  // per kernel row r, the output rows p whose tap row lies inside the image: [plo, phi)
  std::vector<Span> rows(static_cast<size_t>(G.r));
  for (int64_t r = 0; r < G.r; ++r) {
    int64_t plo = 0, phi = G.p;  // ih = p*sh - ph + r in [0, H)
    while (plo < phi && plo * G.sh - G.ph + r < 0) ++plo;
    while (phi > plo && (phi - 1) * G.sh - G.ph + r >= G.h) --phi;
    rows[static_cast<size_t>(r)] = {plo, phi};
  }
  const int64_t pq = G.p * G.q, img = G.h * G.w * G.c, wc = G.w * G.c;
  constexpr int64_t kGroupPixels = 512;
  const int64_t gi = std::max<int64_t>(
      1, std::min(ceil_div(kGroupPixels, pq), ceil_div(G.n, static_cast<int64_t>(nt))));
  const int64_t dwf = round_up(G.k * G.kd, 16);
  float* part = nt > 1 ? scratch(kSlotConvPartial, static_cast<size_t>(nt * dwf)) : dw;
  // per class, the offset pairs of a group of cnt images (relative to the group's first image),
  // built when cnt changes (a thread's last group may be shorter)
  const int64_t ab_n = round_up(2 * gi * pq, 16);
  int64_t* lists = reinterpret_cast<int64_t*>(
      scratch(kSlotConvWork, static_cast<size_t>(2 * nt * ab_n)));
  const int team = parallel(nt, [&](int t, int T) {
    float* acc = part + t * dwf;
    int64_t* ab = lists + t * ab_n;
    zero_n(acc, G.k * G.kd);
    const int64_t i0 = G.n * t / T, i1 = G.n * (t + 1) / T;
    int64_t built = 0;
    for (int64_t g0 = i0; g0 < i1; g0 += gi) {
      const int64_t cnt = std::min(gi, i1 - g0);
      if (cnt != built) {
        int64_t np = 0;
        for (const Cls& c : cls) {
          if (c.shi <= c.slo) continue;
          for (int64_t p = 0; p < G.p; ++p)
            for (int64_t j = 0; j < cnt; ++j) {
              const int64_t arow = (j * pq + p * G.q) * G.k;
              const int64_t brow = j * img + (p * G.sh - G.ph) * wc;
              for (int64_t q = c.q0; q < c.q1; ++q, ++np) {
                ab[2 * np] = arow + q * G.k;
                ab[2 * np + 1] = brow + (q * G.sw - G.pw + c.slo) * G.c;
              }
            }
        }
        built = cnt;
      }
      const int64_t* list = ab;
      for (const Cls& c : cls) {
        if (c.shi <= c.slo) continue;  // windows wholly in the padding
        const int64_t row = cnt * (c.q1 - c.q0);
        for (int64_t r = 0; r < G.r; ++r) {
          const Span pr = rows[static_cast<size_t>(r)];
          gemm_gather_ab(G.k, (c.shi - c.slo) * G.c, (pr.hi - pr.lo) * row, dy + g0 * pq * G.k,
                         x + g0 * img + r * wc, list + 2 * pr.lo * row,
                         acc + (r * G.s + c.slo) * G.c, G.kd);
        }
        list += 2 * G.p * row;
      }
    }
  });
  sum_partials(dw, part, dwf, G.k * G.kd, team);
  return true;
}

void conv_wgrad_impl(float* dw, const float* x, const float* dy, const Geom& G) {
  if (G.depthwise) return depthwise_wgrad(dw, x, dy, G);
  if (forced_path() != kIm2col) {
    if (conv_wgrad_direct(dw, x, dy, G)) return;
    return conv_wgrad_gather(dw, x, dy, G);
  }
  // dW_g[Kg, KD] += dy[rows, g*Kg:(g+1)*Kg]^T . col_g[rows, KD] per chunk; A is dy transposed
  // (packed by gemm_core), B is the chunk, packed straight from the (padded) input. Each thread
  // sums its own partial dW.
  const int nv = gemm_nv(G.kd);
  const int nt = threads_for(G.m * G.k * G.kd, kMacsPerThread);
  const int64_t ch = col_chunk_rows(G.m, G.kd, nt);
  const int64_t nchunks = ceil_div(G.m, ch);
  const bool implicit = false;  // version 1 kept as the readable reference (D8_CPU_CONV_PATH=im2col)
  const int64_t colf = G.pointwise || implicit ? 0 : round_up(ch * G.kd, 16);
  const int64_t pbf = round_up(packb_floats(ch, G.kd, nv), 16);
  const int64_t wkf = round_up(gemm_work_floats(nv), 16);
  const int64_t per = colf + pbf + wkf;
  Src src{x, 0, 0};
  if (implicit) src = padded_input(x, G);
  float* work = scratch(kSlotConvWork, static_cast<size_t>(nt * per));
  const int64_t dwf = round_up(G.k * G.kd, 16);
  float* part = nt > 1 ? scratch(kSlotConvPartial, static_cast<size_t>(nt * dwf)) : dw;
  const int team = parallel(nt, [&](int t, int T) {
    float* colt = work + t * per;
    float* bpk = colt + colf;
    float* awk = bpk + pbf;
    float* acc = part + t * dwf;
    zero_n(acc, G.k * G.kd);
    for (int64_t ci = nchunks * t / T; ci < nchunks * (t + 1) / T; ++ci) {
      const int64_t m0 = ci * ch, cnt = std::min(ch, G.m - m0);
      for (int64_t g = 0; g < G.g; ++g) {
        if (G.pointwise) {
          pack_b(bpk, x + m0 * G.c + g * G.cg, G.c, 1, cnt, G.kd, nv);
        } else if (implicit) {
          pack_b_im2col(bpk, src, G, m0, cnt, g, nv);
        } else {
          im2col(colt, x, G, m0, cnt, g);
          pack_b(bpk, colt, G.kd, 1, cnt, G.kd, nv);
        }
        gemm_core(G.kg, G.kd, cnt, 1.0f, dy + m0 * G.k + g * G.kg, 1, G.k, nullptr, bpk, nv, 1.0f,
                  acc + g * G.kg * G.kd, G.kd, nullptr, awk);
      }
    }
  });
  sum_partials(dw, part, dwf, G.k * G.kd, team);
}

// ---- argument checks ------------------------------------------------------------------------------
struct ConvSizes {
  int64_t x, w, y;  // bytes
};
ConvSizes conv_sizes(const d8_conv_shape& s) {
  return {mul64(int64_t{s.n} * s.h, int64_t{s.w} * s.c, 4),
          mul64(int64_t{s.k} * s.r, int64_t{s.s} * (s.c / s.groups), 4),
          mul64(int64_t{s.n} * s.p, int64_t{s.q} * s.k, 4)};
}

}  // namespace
}  // namespace d8cpu

using namespace d8cpu;

extern "C" int32_t d8_conv2d_fwd(d8_buffer* y, const d8_buffer* x, const d8_buffer* w,
                                 const d8_buffer* bias, const d8_conv_shape* shape) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[256];
    if (int32_t e = check_conv_shape(fn, shape, dims, sizeof dims)) return e;
    const ConvSizes z = conv_sizes(*shape);
    if (int32_t e = check_buffers(fn, dims, {{"y", y, z.y}, {"x", x, z.x}, {"w", w, z.w}}))
      return e;
    if (bias)
      if (int32_t e = check_buffer(fn, "bias", bias, int64_t{shape->k} * 4, dims)) return e;
    conv_fwd_impl(fptr(y), cfptr(x), cfptr(w), bias ? cfptr(bias) : nullptr, make_geom(*shape),
                  0.0f);
    return D8_OK;
  });
}

extern "C" int32_t d8_conv2d_dgrad(d8_buffer* dx, const d8_buffer* dy, const d8_buffer* w,
                                   const d8_conv_shape* shape) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[256];
    if (int32_t e = check_conv_shape(fn, shape, dims, sizeof dims, D8_CONV_ACCUMULATE)) return e;
    const ConvSizes z = conv_sizes(*shape);
    if (int32_t e = check_buffers(fn, dims, {{"dx", dx, z.x}, {"dy", dy, z.y}, {"w", w, z.w}}))
      return e;
    const bool add = (shape->flags & D8_CONV_ACCUMULATE) != 0;
    if (add) {  // dx is read: it must be neither input
      if (int32_t e = check_distinct(fn, "dx", dx, "dy", dy)) return e;
      if (int32_t e = check_distinct(fn, "dx", dx, "w", w)) return e;
    }
    conv_dgrad_impl(fptr(dx), cfptr(dy), cfptr(w), make_geom(*shape), add);
    return D8_OK;
  });
}

extern "C" int32_t d8_conv2d_wgrad(d8_buffer* dw, const d8_buffer* x, const d8_buffer* dy,
                                   const d8_conv_shape* shape) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[256];
    if (int32_t e = check_conv_shape(fn, shape, dims, sizeof dims)) return e;
    const ConvSizes z = conv_sizes(*shape);
    if (int32_t e = check_buffers(fn, dims, {{"dw", dw, z.w}, {"x", x, z.x}, {"dy", dy, z.y}}))
      return e;
    conv_wgrad_impl(fptr(dw), cfptr(x), cfptr(dy), make_geom(*shape));
    return D8_OK;
  });
}

extern "C" int32_t d8_bias_grad(d8_buffer* db, const d8_buffer* dy, int64_t m, int32_t n) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[64];
    snprintf(dims, sizeof dims, "m=%lld,n=%d", static_cast<long long>(m), n);
    if (m < 1 || n < 1)
      return fail(D8_ERR_INVALID_ARGUMENT, "%s: m and n must be positive (%s)", fn, dims);
    if (int32_t e = check_buffer(fn, "db", db, mul64(n, 4), dims)) return e;
    if (int32_t e = check_buffer(fn, "dy", dy, mul64(m, n, 4), dims)) return e;
    // Per-thread sums over row ranges. Rows are summed as flat runs of `per` floats (a whole
    // number of rows, >= 64 floats, so the loop vectorizes even for n = 6) into float
    // accumulators, folded into double every 64 runs; then the threads' doubles are added up.
    const float* src = cfptr(dy);
    const int nt = threads_for(m * n, 1 << 16);
    const int64_t rows_per = n >= 64 ? 1 : 64 / n + (64 % n ? 1 : 0);
    const int64_t per = rows_per * n;
    const int64_t ld = round_up(n, 8), ldf = round_up(per, 16);
    double* part = reinterpret_cast<double*>(
        scratch(kSlotMisc, static_cast<size_t>((2 * ld + ldf) * nt)));
    const int team = parallel(nt, [&](int t, int T) {
      double* tot = part + t * (ld + ldf / 2);
      float* acc = reinterpret_cast<float*>(tot + ld);
      for (int64_t j = 0; j < n; ++j) tot[j] = 0.0;
      for (int64_t j = 0; j < per; ++j) acc[j] = 0.0f;
      const int64_t b = m * t / T, e = m * (t + 1) / T;
      const int64_t runs = (e - b) / rows_per;
      const float* p0 = src + b * n;
      for (int64_t u = 0; u < runs; ++u) {
        const float* p = p0 + u * per;
        for (int64_t j = 0; j < per; ++j) acc[j] += p[j];
        if ((u & 63) == 63 || u == runs - 1) {
          for (int64_t j = 0; j < per; ++j) {
            tot[j % n] += acc[j];
            acc[j] = 0.0f;
          }
        }
      }
      for (int64_t i = b + runs * rows_per; i < e; ++i)
        for (int64_t j = 0; j < n; ++j) tot[j] += src[i * n + j];
    });
    float* out = fptr(db);
    for (int64_t j = 0; j < n; ++j) {
      double v = 0.0;
      for (int t = 0; t < team; ++t) v += part[t * (ld + ldf / 2) + j];
      out[j] = static_cast<float>(v);
    }
    return D8_OK;
  });
}
