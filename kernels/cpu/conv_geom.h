// conv_geom.h: convolution / pooling geometry shared by conv.cpp, int8_conv.cpp and pool.cpp
// (internal, not part of the ABI).
//   - Geom: a d8_conv_shape widened to int64 plus the derived GEMM sizes
//   - Cursor: output pixel (img, pp, qq) of a flat row index m
//   - window walks for direct loops (the taps of one output pixel, the outputs covering one input
//     pixel), always in ascending (r, s) order
//   - the stride-1 dgrad-as-forward rewrite (its shape and transposed, flipped weights)
//   - col2im_add (float dcol -> dx), row chunk sizes
#ifndef DAINT8_CPU_CONV_GEOM_H
#define DAINT8_CPU_CONV_GEOM_H

#include "common.h"

#include <cstdlib>
#include <cstring>

// Internal symbols stay out of the shared library's dynamic symbol table.
#pragma GCC visibility push(hidden)

namespace d8cpu {

struct Geom {
  int64_t n, h, w, c, k, r, s, g, sh, sw, ph, pw, p, q;
  int64_t cg, kg, kd, m;  // channels per group, outputs per group, R*S*Cg, N*P*Q
  bool pointwise;         // 1x1, stride 1, pad 0: col == x
  bool depthwise;         // Cg == 1 and Kg == 1
};

inline Geom make_geom(const d8_conv_shape& s) {
  Geom G;
  G.n = s.n, G.h = s.h, G.w = s.w, G.c = s.c, G.k = s.k, G.r = s.r, G.s = s.s, G.g = s.groups;
  G.sh = s.stride_h, G.sw = s.stride_w, G.ph = s.pad_h, G.pw = s.pad_w, G.p = s.p, G.q = s.q;
  G.cg = G.c / G.g;
  G.kg = G.k / G.g;
  G.kd = G.r * G.s * G.cg;
  G.m = G.n * G.p * G.q;
  G.pointwise = G.r == 1 && G.s == 1 && G.sh == 1 && G.sw == 1 && G.ph == 0 && G.pw == 0;
  G.depthwise = G.cg == 1 && G.kg == 1 && G.g > 1;
  return G;
}

// D8_CPU_CONV_PATH=im2col|implicit forces the GEMM form of the fp32 and INT8 forward convs (and
// of the dgrads that run as forwards), for tests and benchmarks; unset (kAuto) = each kernel's
// own choice.
enum ConvPath { kAuto, kIm2col, kImplicit };
inline ConvPath forced_path() {
  static const ConvPath p = [] {
    const char* e = std::getenv("D8_CPU_CONV_PATH");
    if (!e) return kAuto;
    if (!std::strcmp(e, "im2col")) return kIm2col;
    if (!std::strcmp(e, "implicit")) return kImplicit;
    return kAuto;
  }();
  return p;
}

// Which taps of output o's window (kernel extent k, along one dimension) lie inside the input:
// [lo, hi), none when hi <= lo. The exact-window forwards (conv.cpp v4, int8_conv.cpp) run each
// output's GEMM over those taps only.
struct Span {
  int64_t lo, hi;
};
inline Span tap_span(int64_t o, int64_t stride, int64_t pad, int64_t in, int64_t k) {
  const int64_t start = o * stride - pad;  // input coordinate of tap 0
  return {std::max<int64_t>(0, -start), std::min<int64_t>(k, in - start)};
}

// The strided dgrad by phase (conv.cpp dgrad_phases_f32, int8_conv.cpp dgrad_phases): phase
// (u, v) holds the dx pixels ih = sh*a + u - ph, iw = sw*b + v - pw for a in [a_lo, a_hi], b in
// [b_lo, b_hi] (inside dx), and receives the taps r = u + sh*j (j < ju), s = v + sw*l (l < jv)
// from dy[a - j][b - l]. None (empty()) when the phase has no taps or no pixels.
struct PhaseRange {
  int64_t ju, jv, a_lo, a_hi, b_lo, b_hi;
  bool empty() const { return ju * jv == 0 || a_hi < a_lo || b_hi < b_lo; }
};
inline PhaseRange phase_range(const Geom& G, int64_t u, int64_t v) {
  auto lo = [](int64_t pad, int64_t o, int64_t st) { return ceil_div(std::max<int64_t>(0, pad - o), st); };
  auto hi = [](int64_t in, int64_t pad, int64_t o, int64_t st) {
    return in - 1 + pad - o < 0 ? -1 : (in - 1 + pad - o) / st;
  };
  return {u < G.r ? ceil_div(G.r - u, G.sh) : 0, v < G.s ? ceil_div(G.s - v, G.sw) : 0,
          lo(G.ph, u, G.sh), hi(G.h, G.ph, u, G.sh), lo(G.pw, v, G.sw), hi(G.w, G.pw, v, G.sw)};
}

// One thread per this many multiply-adds at least (conv GEMMs and direct loops).
constexpr int64_t kMacsPerThread = int64_t{1} << 18;

// Output pixel cursor over rows m = (img*P + pp)*Q + qq.
struct Cursor {
  int64_t img, pp, qq;
  Cursor(const Geom& G, int64_t m) {
    const int64_t pq = G.p * G.q;
    img = m / pq;
    pp = m % pq / G.q;
    qq = m % G.q;
  }
  void next(const Geom& G) {
    if (++qq == G.q) {
      qq = 0;
      if (++pp == G.p) pp = 0, ++img;
    }
  }
};

// f(r, s, ih, iw) for every tap of output pixel (pp, qq) that lies inside the input, (r, s)
// ascending. The valid ranges are computed once: no per-tap bounds checks.
template <class F>
__attribute__((always_inline)) inline void for_each_tap(const Geom& G, int64_t pp, int64_t qq,
                                                        F&& f) {
  const int64_t ih0 = pp * G.sh - G.ph, iw0 = qq * G.sw - G.pw;  // tap (0, 0), maybe outside
  const int64_t r0 = std::max<int64_t>(0, -ih0), r1 = std::min(G.r, G.h - ih0);
  const int64_t s0 = std::max<int64_t>(0, -iw0), s1 = std::min(G.s, G.w - iw0);
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t s = s0; s < s1; ++s) f(r, s, ih0 + r, iw0 + s);
}

// Smallest r >= max(lo, 0) with r == t (mod st), for t >= 0.
inline int64_t first_congruent(int64_t t, int64_t st, int64_t lo) {
  int64_t r = t % st;
  if (r < lo) r += ceil_div(lo - r, st) * st;
  return r;
}

// f(r, s, pp, qq) for every output pixel (pp, qq) whose window covers input pixel (ih, iw) at tap
// (r, s), (r, s) ascending: ih + ph - r = pp*sh with 0 <= pp < P, likewise for iw. The gather form
// of a backward pass (no write conflicts between input pixels).
template <class F>
__attribute__((always_inline)) inline void for_each_cover(const Geom& G, int64_t ih, int64_t iw,
                                                          F&& f) {
  const int64_t th = ih + G.ph, tw = iw + G.pw;  // >= 0
  const int64_t r0 = first_congruent(th, G.sh, th - (G.p - 1) * G.sh);
  const int64_t s0 = first_congruent(tw, G.sw, tw - (G.q - 1) * G.sw);
  const int64_t r1 = std::min(G.r, th + 1), s1 = std::min(G.s, tw + 1);
  for (int64_t r = r0, pp = (th - r0) / G.sh; r < r1; r += G.sh, --pp)
    for (int64_t s = s0, qq = (tw - s0) / G.sw; s < s1; s += G.sw, --qq) f(r, s, pp, qq);
}

// Wide weights: over 1 MB of weights (`elem` bytes each; the zoo's 3x3 layers from 512 channels:
// 9.4 MB fp32, 2.4 MB int8) on output maps narrower than `qmax` pixels, ungrouped, not 1x1. A
// GEMM per output row then streams all of B for Q rows, so each weight is loaded again for every
// few outputs: the fp32 and INT8 forwards take their im2col forms there (conv.cpp, int8_conv.cpp;
// fp32 up to 15-pixel rows since its im2col form leaves out the padding taps, INT8 up to 7).
inline bool wide_weights(const Geom& G, int64_t elem, int64_t qmax = 8) {
  return G.g == 1 && !G.pointwise && elem * G.kd * G.kg > (int64_t{1} << 20) && G.q < qmax;
}

// ---- dgrad as a forward convolution -------------------------------------------------------------
// With stride 1 and pad <= kernel-1, dx = conv(dy, w') where w'[g*Cg + c, r', s', kk] =
// w[g*Kg + kk, R-1-r', S-1-s', c] and the padding is R-1-ph / S-1-pw: its output is exactly H x W.
inline bool dgrad_as_fwd(const Geom& G) {
  return G.sh == 1 && G.sw == 1 && G.ph <= G.r - 1 && G.pw <= G.s - 1;
}

// The shape of that forward convolution (input dy [N, P, Q, K], output [N, H, W, C]).
inline d8_conv_shape dgrad_as_fwd_shape(const Geom& G) {
  d8_conv_shape s2{};
  s2.n = static_cast<int32_t>(G.n), s2.h = static_cast<int32_t>(G.p);
  s2.w = static_cast<int32_t>(G.q), s2.c = static_cast<int32_t>(G.k);
  s2.k = static_cast<int32_t>(G.c), s2.r = static_cast<int32_t>(G.r);
  s2.s = static_cast<int32_t>(G.s), s2.groups = static_cast<int32_t>(G.g);
  s2.stride_h = 1, s2.stride_w = 1;
  s2.pad_h = static_cast<int32_t>(G.r - 1 - G.ph), s2.pad_w = static_cast<int32_t>(G.s - 1 - G.pw);
  s2.p = static_cast<int32_t>(G.h), s2.q = static_cast<int32_t>(G.w);
  return s2;
}

// wt = w' above ([C, R, S, Kg]) from w ([K, R, S, Cg]): per group and tap a Kg x Cg transpose,
// tr(dst, ldd, src, lds, rows, cols) writing dst[c*ldd + kk] = src[kk*lds + c] for kk < rows,
// c < cols (gemm.h transpose_f32, int8_conv.cpp transpose_i8), the threads taking (group, tap,
// 32-channel strip) units. The plain loop walked Cg destination lines KD apart per source row and
// missed L1 on every element at 512 channels.
template <class T, class Tr>
void flip_transpose_weights(T* wt, const T* w, const Geom& G, Tr&& tr) {
  constexpr int64_t kStrip = 32;
  const int64_t rs = G.r * G.s, kdt = rs * G.kg, strips = (G.cg + kStrip - 1) / kStrip;
  const int64_t grain = std::max<int64_t>(1, 16384 / (kStrip * std::max<int64_t>(G.kg, 1)));
  parallel_for(G.g * rs * strips, grain,
               [&](int64_t b, int64_t e) {
                 for (int64_t u = b; u < e; ++u) {
                   const int64_t g = u / (rs * strips), tap = u / strips % rs;
                   const int64_t c0 = u % strips * kStrip;
                   const int64_t ft = (G.r - 1 - tap / G.s) * G.s + (G.s - 1 - tap % G.s);
                   tr(wt + (g * G.cg + c0) * kdt + ft * G.kg, kdt,
                      w + (g * G.kg * rs + tap) * G.cg + c0, rs * G.cg, G.kg,
                      std::min(kStrip, G.cg - c0));
                 }
               });
}

// ---- GEMM helpers -------------------------------------------------------------------------------
// dx[img, ih, iw, g*Cg + c] += dcol[i, (r, s, c)] for rows m0 .. m0+cnt (inverse of im2col;
// padding entries dropped).
inline void col2im_add(float* __restrict dx, const float* __restrict dcol, const Geom& G,
                       int64_t m0, int64_t cnt, int64_t g) {
  Cursor cur(G, m0);
  const int64_t cg = G.cg, scg = G.s * cg;
  for (int64_t i = 0; i < cnt; ++i, cur.next(G)) {
    const float* d = dcol + i * G.kd;
    const int64_t ih0 = cur.pp * G.sh - G.ph, iw0 = cur.qq * G.sw - G.pw;
    float* ximg = dx + cur.img * G.h * G.w * G.c + g * cg;
    const int64_t s_lo = std::min(G.s, std::max<int64_t>(0, -iw0));
    const int64_t s_hi = std::max(s_lo, std::min(G.s, G.w - iw0));
    for (int64_t r = 0; r < G.r; ++r) {
      const int64_t ih = ih0 + r;
      if (ih < 0 || ih >= G.h) continue;
      const float* dr = d + r * scg;
      float* xr = ximg + (ih * G.w + iw0 + s_lo) * G.c;  // first valid tap of the row
      if (G.g == 1) {  // the valid window row is one contiguous run of dx
        add_floats(xr, dr + s_lo * cg, (s_hi - s_lo) * cg);
      } else {
        for (int64_t s = s_lo; s < s_hi; ++s) add_floats(xr + (s - s_lo) * G.c, dr + s * cg, cg);
      }
    }
  }
}

// Rows per chunk of an m-row GEMM operand: about `bytes` (row_bytes per row), a multiple of
// `quantum`, and small enough that every thread gets a few chunks.
inline int64_t chunk_rows(int64_t m, int64_t row_bytes, int threads, int64_t quantum,
                          int64_t bytes) {
  int64_t rows = bytes / std::max<int64_t>(row_bytes, 1);
  rows = std::max(quantum, rows / quantum * quantum);
  const int64_t balanced = round_up(ceil_div(m, 4 * int64_t{threads}), quantum);
  rows = std::min(rows, std::max(quantum, balanced));
  return std::min(rows, round_up(m, quantum));
}

}  // namespace d8cpu

#pragma GCC visibility pop

#endif  // DAINT8_CPU_CONV_GEOM_H
