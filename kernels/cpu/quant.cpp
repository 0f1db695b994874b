// quant.cpp: INT8 quantization kernels (PAPER.md): d8_quantize_i8, d8_quantize_i8_dual,
// d8_quantize_i8_maxscale, d8_dequantize_i8, d8_absmax_f32, d8_channel_stats_f32, and the
// quantizer decision d8_quant_decide with d8_quant_error.
//
// Quantizer (s = the clip, inv = 127 / s in f32; inv = 0 when s <= 0 or s is not finite):
//   v = clamp(x * inv, -127, 127)   (NaN -> 0)
//   nearest:    q = round half away from zero (v): t = trunc(v); t += (v - t >= 0.5) - (v - t <= -0.5)
//   stochastic: q = min(floor(v + u), 127), u in [0, 1) from the element's counter hash below.
// Dequantized value q * (s / 127) in f32 (the scale the GEMM epilogues multiply by).
//
// Counter hash (bit-exact contract for other backends, 32-bit arithmetic only so WGSL computes it
// too): element index i (flat, outer*inner + c), lo / hi = its low / high 32 bits,
//   k0  = mix32(seed ^ 0x9e3779b9),  k1 = mix32(k0 + hi * 0x85ebca6b + 0x632be5ab)
//   h   = mix32(mix32(lo ^ k0) + k1)                mix32 = Wellons' "lowbias32"
//   u   = (h >> 8) * 2^-24                          24 random bits, exactly representable
// so u depends only on (seed, i): the result is the same for any thread count or split.
// The dual kernel uses the same u for both outputs, so each equals the single-output call.
//
// The hot loops are compiled twice (baseline x86-64 and target("avx2")) and picked at run time.
#include "common.h"

#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#define D8_QX86 1
#else
#define D8_QX86 0
#endif

namespace d8cpu {
namespace {

constexpr int64_t kGrain = int64_t{1} << 15;  // elements per thread at least

inline uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}
// Hash keys of one 2^32-element block, plus the clamp bound 127 passed as data: with a literal
// GCC threads the clamp into branches ("v <= -127 gives -127") and the loop no longer vectorizes.
struct Keys {
  uint32_t k0, k1;
  float lim;
};
inline Keys keys_for(uint32_t seed, uint64_t hi) {
  const uint32_t k0 = mix32(seed ^ 0x9e3779b9u);
  const uint32_t k1 = mix32(k0 + static_cast<uint32_t>(hi) * 0x85ebca6bu + 0x632be5abu);
  return {k0, k1, 127.0f};
}

inline float inv_of(float s) { return (s > 0.0f && s <= FLT_MAX) ? 127.0f / s : 0.0f; }
inline float scale_of(float s) { return (s > 0.0f && s <= FLT_MAX) ? s / 127.0f : 0.0f; }

typedef int32_t int32_alias __attribute__((may_alias));
inline int32_t bits_of(float f) {
  int32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

// u in [0, 1) of element lo (the counter hash above).
__attribute__((always_inline)) inline float uniform_of(uint32_t lo, Keys k) {
  const uint32_t h = mix32(mix32(lo ^ k.k0) + k.k1);
  return static_cast<float>(h >> 8) * (1.0f / 16777216.0f);
}
// One element: v = x * inv already computed. Written without ordered float comparisons
// (<, >=: GCC will not if-convert them under the default -ftrapping-math, so the loops would not
// vectorize): the rounding adjustments come from exact arithmetic on the fraction d instead.
// u: uniform_of(lo, k) when Stoch, else unused (the dual kernel hashes once for its two outputs).
template <bool Stoch>
__attribute__((always_inline)) inline int8_t quant1u(float v, float u, Keys k) {
  v = v == v ? v : 0.0f;                       // NaN -> 0
  v = std::min(std::max(v, -k.lim), k.lim);    // k.lim == 127
  int32_t t;
  if (Stoch) {
    const float f = v + u;                       // in [-127, 128]
    t = static_cast<int32_t>(f);                 // trunc
    const float d = f - static_cast<float>(t);   // exact, in (-1, 1); +0 when f is an integer
    t += bits_of(d) >> 31;                       // floor: -1 when d < 0
    t = std::min(t, 127);                        // v + u may round up to 128
  } else {
    t = static_cast<int32_t>(v);                 // trunc
    const float d = v - static_cast<float>(t);   // exact, in (-1, 1)
    t += static_cast<int32_t>(d + d);            // +-1 when |d| >= 0.5: half away from zero
  }
  return static_cast<int8_t>(t);
}
template <bool Stoch>
__attribute__((always_inline)) inline int8_t quant1(float v, uint32_t lo, Keys k) {
  return quant1u<Stoch>(v, Stoch ? uniform_of(lo, k) : 0.0f, k);
}

// y[i] = q(x[i] * inv[PerElem ? i : 0]) for i < n; element i has flat index lo0 + i (low 32 bits).
template <bool PerElem, bool Stoch>
__attribute__((always_inline)) inline void quant_span_body(int8_t* __restrict y,
                                                           const float* __restrict x, int64_t n,
                                                           const float* __restrict inv,
                                                           uint32_t lo0, Keys k) {
  const float s0 = inv[0];
  // a 32-bit induction: from lo0 + i GCC built the counters in 64-bit lanes and narrowed them
  // (vpaddq, vpermt2d): the stochastic dual quantizer 0.224-0.227 -> 0.212-0.218 ms on 802,816
  // elements (Zen 4, 2 threads, best of 500)
  uint32_t lo = lo0;
  for (int64_t i = 0; i < n; ++i, ++lo)
    y[i] = quant1<Stoch>(x[i] * (PerElem ? inv[i] : s0), lo, k);
}

// Dual: yt with the scalar invt, yc with invc[i]; same u.
template <bool Stoch>
__attribute__((always_inline)) inline void dual_span_body(int8_t* __restrict yt,
                                                          int8_t* __restrict yc,
                                                          const float* __restrict x, int64_t n,
                                                          float invt,
                                                          const float* __restrict invc,
                                                          uint32_t lo0, Keys k) {
  uint32_t lo = lo0;  // (as above)
  for (int64_t i = 0; i < n; ++i, ++lo) {
    const float u = Stoch ? uniform_of(lo, k) : 0.0f;
    yt[i] = quant1u<Stoch>(x[i] * invt, u, k);
    yc[i] = quant1u<Stoch>(x[i] * invc[i], u, k);
  }
}

using SpanFn = void (*)(int8_t*, const float*, int64_t, const float*, uint32_t, Keys);
using DualFn = void (*)(int8_t*, int8_t*, const float*, int64_t, float, const float*, uint32_t,
                        Keys);

template <bool P, bool S>
void span_base(int8_t* y, const float* x, int64_t n, const float* inv, uint32_t lo, Keys k) {
  quant_span_body<P, S>(y, x, n, inv, lo, k);
}
template <bool S>
void dual_base(int8_t* yt, int8_t* yc, const float* x, int64_t n, float it, const float* ic,
               uint32_t lo, Keys k) {
  dual_span_body<S>(yt, yc, x, n, it, ic, lo, k);
}
#if D8_QX86
template <bool P, bool S>
__attribute__((target("avx2"))) void span_avx2(int8_t* y, const float* x, int64_t n,
                                               const float* inv, uint32_t lo, Keys k) {
  quant_span_body<P, S>(y, x, n, inv, lo, k);
}
template <bool S>
__attribute__((target("avx2"))) void dual_avx2(int8_t* yt, int8_t* yc, const float* x, int64_t n,
                                               float it, const float* ic, uint32_t lo, Keys k) {
  dual_span_body<S>(yt, yc, x, n, it, ic, lo, k);
}
// The same loops in 512-bit vectors (GCC's -march tuning for AVX-512 Intel cores keeps 256-bit
// vectors unless told otherwise): 16 hashes per instruction, 2x the avx2 clone on Sapphire Rapids.
#define D8_Q512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,prefer-vector-width=512")))
template <bool P, bool S>
D8_Q512 void span_avx512(int8_t* y, const float* x, int64_t n, const float* inv, uint32_t lo,
                         Keys k) {
  quant_span_body<P, S>(y, x, n, inv, lo, k);
}
template <bool S>
D8_Q512 void dual_avx512(int8_t* yt, int8_t* yc, const float* x, int64_t n, float it,
                         const float* ic, uint32_t lo, Keys k) {
  dual_span_body<S>(yt, yc, x, n, it, ic, lo, k);
}
#endif

bool use_avx512() {
#if D8_QX86
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  }();
  return has;
#else
  return false;
#endif
}

bool use_avx2() {
#if D8_QX86
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
  }();
  return has;
#else
  return false;
#endif
}

SpanFn pick_span(bool per_elem, bool stoch) {
#if D8_QX86
  if (use_avx512()) {
    if (per_elem) return stoch ? &span_avx512<true, true> : &span_avx512<true, false>;
    return stoch ? &span_avx512<false, true> : &span_avx512<false, false>;
  }
  if (use_avx2()) {
    if (per_elem) return stoch ? &span_avx2<true, true> : &span_avx2<true, false>;
    return stoch ? &span_avx2<false, true> : &span_avx2<false, false>;
  }
#endif
  if (per_elem) return stoch ? &span_base<true, true> : &span_base<true, false>;
  return stoch ? &span_base<false, true> : &span_base<false, false>;
}
DualFn pick_dual(bool stoch) {
#if D8_QX86
  if (use_avx512()) return stoch ? &dual_avx512<true> : &dual_avx512<false>;
  if (use_avx2()) return stoch ? &dual_avx2<true> : &dual_avx2<false>;
#endif
  return stoch ? &dual_base<true> : &dual_base<false>;
}

// Calls f(b, e, keys) over [b, e) split where the high 32 bits of the index change.
template <class F>
void for_blocks(int64_t b, int64_t e, uint32_t seed, F&& f) {
  while (b < e) {
    const uint64_t hi = static_cast<uint64_t>(b) >> 32;
    const int64_t end = std::min<int64_t>(e, static_cast<int64_t>((hi + 1) << 32));
    f(b, end, keys_for(seed, hi));
    b = end;
  }
}

// inv (or scale) repeated: rep[j] = v[j % inner] for j < reps*inner, reps rows per span.
int64_t rows_per_span(int64_t inner) { return std::max<int64_t>(1, 1024 / inner); }

float* replicate(const float* v, int64_t inner, int64_t reps, int slot) {
  float* r = scratch(slot, static_cast<size_t>(reps * inner));
  for (int64_t t = 0; t < reps; ++t) std::memcpy(r + t * inner, v, static_cast<size_t>(inner) * 4);
  return r;
}

// Runs f(b, e, inv, keys) over the elements of rows x inner (row-major) in spans of whole rows,
// split where the hash keys change, with inv[i - b] = inv_of(clips[i % inner]) (a row of inverse
// clips replicated rows_per_span times: a span's first element starts a row).
template <class F>
void for_row_spans(int64_t rows, int64_t inner, const float* clips, uint32_t seed, F&& f) {
  const int64_t reps = rows_per_span(inner);
  float* inv1 = scratch(kSlotMisc, static_cast<size_t>(inner));
  for (int64_t c = 0; c < inner; ++c) inv1[c] = inv_of(clips[c]);
  const float* inv = replicate(inv1, inner, reps, kSlotConvB);
  const int64_t spans = ceil_div(rows, reps);
  parallel_for(spans, std::max<int64_t>(1, kGrain / (reps * inner)), [&](int64_t b, int64_t e) {
    for (int64_t sp = b; sp < e; ++sp) {
      const int64_t e0 = sp * reps * inner, e1 = std::min(rows, (sp + 1) * reps) * inner;
      for_blocks(e0, e1, seed, [&](int64_t b1, int64_t b2, Keys k) {
        // the replicated row starts on a row boundary: offset (b1 - e0) into it
        f(b1, b2, inv + (b1 - e0), k);
      });
    }
  });
}

// Writes "outer=..,inner=..,layout=.." into dims and checks the three.
int32_t check_scaled(const char* fn, char* dims, size_t cap, int64_t outer, int32_t inner,
                     int32_t layout) {
  snprintf(dims, cap, "outer=%lld,inner=%d,layout=%d", static_cast<long long>(outer), inner,
           layout);
  if (outer < 0 || inner < 1)
    return fail(D8_ERR_INVALID_ARGUMENT, "%s: outer must be >= 0 and inner >= 1 (%s)", fn, dims);
  if (layout != D8_SCALE_TENSOR && layout != D8_SCALE_INNER && layout != D8_SCALE_OUTER)
    return fail(D8_ERR_INVALID_ARGUMENT,
                "%s: layout must be D8_SCALE_TENSOR (0), D8_SCALE_INNER (1) or D8_SCALE_OUTER (2), "
                "got %d (%s)",
                fn, layout, dims);
  return D8_OK;
}
int32_t check_rounding(const char* fn, int32_t rounding, const char* dims) {
  if (rounding != D8_ROUND_NEAREST && rounding != D8_ROUND_STOCHASTIC)
    return fail(D8_ERR_INVALID_ARGUMENT,
                "%s: rounding must be D8_ROUND_NEAREST (0) or D8_ROUND_STOCHASTIC (1), got %d (%s)",
                fn, rounding, dims);
  return D8_OK;
}
int64_t clip_count(int32_t layout, int64_t outer, int32_t inner) {
  return layout == D8_SCALE_TENSOR ? 1 : layout == D8_SCALE_INNER ? inner : outer;
}

}  // namespace
}  // namespace d8cpu

using namespace d8cpu;

extern "C" int32_t d8_quantize_i8(d8_buffer* y, const d8_buffer* x, int64_t outer, int32_t inner,
                                  const d8_buffer* clips, int32_t layout, int32_t rounding,
                                  uint32_t seed) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[96];
    if (int32_t e = check_scaled(fn, dims, sizeof dims, outer, inner, layout)) return e;
    if (int32_t e = check_rounding(fn, rounding, dims)) return e;
    const int64_t total = mul64(outer, inner);
    if (int32_t e = check_buffer(fn, "y", y, total, dims)) return e;
    if (int32_t e = check_buffer(fn, "x", x, mul64(total, 4), dims)) return e;
    const int64_t nclips = clip_count(layout, outer, inner);
    if (int32_t e = check_buffer(fn, "clips", clips, mul64(nclips, 4), dims)) return e;
    if (int32_t e = check_distinct(fn, "y", y, "x", x)) return e;
    if (int32_t e = check_distinct(fn, "y", y, "clips", clips)) return e;
    if (total == 0) return D8_OK;
    int8_t* py = static_cast<int8_t*>(y->data);
    const float* px = cfptr(x);
    const float* pc = cfptr(clips);
    const bool stoch = rounding == D8_ROUND_STOCHASTIC;
    if (layout == D8_SCALE_TENSOR) {
      const float inv = inv_of(pc[0]);
      const SpanFn f = pick_span(false, stoch);
      parallel_for(total, kGrain, [&](int64_t b, int64_t e) {
        for_blocks(b, e, seed, [&](int64_t b1, int64_t e1, Keys k) {
          f(py + b1, px + b1, e1 - b1, &inv, static_cast<uint32_t>(b1), k);
        });
      });
    } else if (layout == D8_SCALE_OUTER) {
      float* inv = scratch(kSlotMisc, static_cast<size_t>(outer));
      for (int64_t o = 0; o < outer; ++o) inv[o] = inv_of(pc[o]);
      const SpanFn f = pick_span(false, stoch);
      parallel_for(outer, std::max<int64_t>(1, kGrain / inner), [&](int64_t b, int64_t e) {
        for (int64_t o = b; o < e; ++o)
          for_blocks(o * inner, (o + 1) * inner, seed, [&](int64_t b1, int64_t e1, Keys k) {
            f(py + b1, px + b1, e1 - b1, inv + o, static_cast<uint32_t>(b1), k);
          });
      });
    } else {  // D8_SCALE_INNER: spans of whole rows against a replicated inv row
      const SpanFn f = pick_span(true, stoch);
      for_row_spans(outer, inner, pc, seed, [&](int64_t b, int64_t e, const float* inv, Keys k) {
        f(py + b, px + b, e - b, inv, static_cast<uint32_t>(b), k);
      });
    }
    return D8_OK;
  });
}

extern "C" int32_t d8_quantize_i8_dual(d8_buffer* y_tensor, d8_buffer* y_channel,
                                       const d8_buffer* x, int64_t rows, int32_t channels,
                                       const d8_buffer* clip_tensor,
                                       const d8_buffer* clips_channel, int32_t rounding,
                                       uint32_t seed) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[80];
    snprintf(dims, sizeof dims, "rows=%lld,channels=%d", static_cast<long long>(rows), channels);
    if (rows < 0 || channels < 1)
      return fail(D8_ERR_INVALID_ARGUMENT, "%s: rows must be >= 0 and channels >= 1 (%s)", fn,
                  dims);
    if (int32_t e = check_rounding(fn, rounding, dims)) return e;
    const int64_t total = mul64(rows, channels);
    if (int32_t e = check_buffer(fn, "y_tensor", y_tensor, total, dims)) return e;
    if (int32_t e = check_buffer(fn, "y_channel", y_channel, total, dims)) return e;
    if (int32_t e = check_buffer(fn, "x", x, mul64(total, 4), dims)) return e;
    if (int32_t e = check_buffer(fn, "clip_tensor", clip_tensor, 4, dims)) return e;
    if (int32_t e = check_buffer(fn, "clips_channel", clips_channel, mul64(channels, 4), dims))
      return e;
    if (int32_t e = check_distinct(fn, "y_tensor", y_tensor, "y_channel", y_channel)) return e;
    if (int32_t e = check_distinct(fn, "y_tensor", y_tensor, "x", x)) return e;
    if (int32_t e = check_distinct(fn, "y_channel", y_channel, "x", x)) return e;
    if (total == 0) return D8_OK;
    int8_t* yt = static_cast<int8_t*>(y_tensor->data);
    int8_t* yc = static_cast<int8_t*>(y_channel->data);
    const float* px = cfptr(x);
    const float invt = inv_of(cfptr(clip_tensor)[0]);
    const DualFn f = pick_dual(rounding == D8_ROUND_STOCHASTIC);
    for_row_spans(rows, channels, cfptr(clips_channel), seed,
                  [&](int64_t b, int64_t e, const float* inv, Keys k) {
      f(yt + b, yc + b, px + b, e - b, invt, inv, static_cast<uint32_t>(b), k);
    });
    return D8_OK;
  });
}

extern "C" int32_t d8_dequantize_i8(d8_buffer* y, const d8_buffer* q, int64_t outer, int32_t inner,
                                    const d8_buffer* clips, int32_t layout) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[96];
    if (int32_t e = check_scaled(fn, dims, sizeof dims, outer, inner, layout)) return e;
    const int64_t total = mul64(outer, inner);
    if (int32_t e = check_buffer(fn, "y", y, mul64(total, 4), dims)) return e;
    if (int32_t e = check_buffer(fn, "q", q, total, dims)) return e;
    const int64_t nclips = clip_count(layout, outer, inner);
    if (int32_t e = check_buffer(fn, "clips", clips, mul64(nclips, 4), dims)) return e;
    if (int32_t e = check_distinct(fn, "y", y, "q", q)) return e;
    if (int32_t e = check_distinct(fn, "y", y, "clips", clips)) return e;
    if (total == 0) return D8_OK;
    float* py = fptr(y);
    const int8_t* pq = static_cast<const int8_t*>(q->data);
    const float* pc = cfptr(clips);
    if (layout == D8_SCALE_TENSOR) {
      const float sc = scale_of(pc[0]);
      parallel_for(total, kGrain, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) py[i] = static_cast<float>(pq[i]) * sc;
      });
    } else if (layout == D8_SCALE_OUTER) {
      parallel_for(outer, std::max<int64_t>(1, kGrain / inner), [&](int64_t b, int64_t e) {
        for (int64_t o = b; o < e; ++o) {
          const float sc = scale_of(pc[o]);
          float* __restrict yo = py + o * inner;
          const int8_t* __restrict qo = pq + o * inner;
          for (int64_t c = 0; c < inner; ++c) yo[c] = static_cast<float>(qo[c]) * sc;
        }
      });
    } else {
      float* sc = scratch(kSlotMisc, static_cast<size_t>(inner));
      for (int64_t c = 0; c < inner; ++c) sc[c] = scale_of(pc[c]);
      parallel_for(outer, std::max<int64_t>(1, kGrain / inner), [&](int64_t b, int64_t e) {
        for (int64_t o = b; o < e; ++o) {
          float* __restrict yo = py + o * inner;
          const int8_t* __restrict qo = pq + o * inner;
          for (int64_t c = 0; c < inner; ++c) yo[c] = static_cast<float>(qo[c]) * sc[c];
        }
      });
    }
    return D8_OK;
  });
}

namespace d8cpu {
namespace {

// |x| of a float as the bit pattern of a non-negative float, NaN as 0: the max of these is the
// max |x| with NaN ignored, and an integer max vectorizes (std::max on floats stays scalar under
// GCC's default -ftrapping-math: 16 vmaxss per 16 elements).
inline int32_t abs_bits(int32_t b) {
  b &= 0x7fffffff;
  return b > 0x7f800000 ? 0 : b;
}

// max |x[0..n)| on the calling thread, NaN ignored.
float absmax_span(const float* __restrict px, int64_t n) {
  const int32_t* __restrict xb = reinterpret_cast<const int32_alias*>(px);
  int32_t lane[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) lane[j] = std::max(lane[j], abs_bits(xb[i + j]));
  int32_t m = 0;
  for (; i < n; ++i) m = std::max(m, abs_bits(xb[i]));
  for (int j = 0; j < 16; ++j) m = std::max(m, lane[j]);
  float f;
  std::memcpy(&f, &m, sizeof f);
  return f;
}

float absmax_parallel(const float* px, int64_t n) {
  const int nt = threads_for(n, kGrain);
  float part[256];
  const int team = parallel(std::min(nt, 256), [&](int t, int T) {
    const int64_t b = n * t / T, e = n * (t + 1) / T;
    part[t] = absmax_span(px + b, e - b);
  });
  float m = 0.0f;
  for (int t = 0; t < team; ++t) m = part[t] > m ? part[t] : m;
  return m;
}

}  // namespace
}  // namespace d8cpu

extern "C" int32_t d8_absmax_f32(d8_buffer* out, const d8_buffer* x, int64_t n) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[48];
    snprintf(dims, sizeof dims, "n=%lld", static_cast<long long>(n));
    if (n < 0)
      return fail(D8_ERR_INVALID_ARGUMENT, "%s: n must be non-negative (%s)", fn, dims);
    if (int32_t e = check_buffer(fn, "out", out, 4, dims)) return e;
    if (int32_t e = check_buffer(fn, "x", x, mul64(n, 4), dims)) return e;
    const float m = n > 0 ? absmax_parallel(cfptr(x), n) : 0.0f;
    fptr(out)[0] = m;
    return D8_OK;
  });
}

// Statistics per fixed block of rows (the partition depends on rows only, not on the thread
// count), combined in block order: the result is identical for any number of threads.
extern "C" int32_t d8_channel_stats_f32(d8_buffer* out, const d8_buffer* x, int64_t rows,
                                        int32_t channels) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[80];
    snprintf(dims, sizeof dims, "rows=%lld,channels=%d", static_cast<long long>(rows), channels);
    if (rows < 1 || channels < 1)
      return fail(D8_ERR_INVALID_ARGUMENT, "%s: rows and channels must be positive (%s)", fn,
                  dims);
    if (int32_t e = check_buffer(fn, "out", out, mul64(4, channels, 4), dims)) return e;
    if (int32_t e = check_buffer(fn, "x", x, mul64(rows, channels, 4), dims)) return e;
    if (int32_t e = check_distinct(fn, "out", out, "x", x)) return e;
    const float* px = cfptr(x);
    const int64_t C = channels;
    const int64_t nblocks = std::min<int64_t>(256, ceil_div(rows, 256));
    const int64_t brows = ceil_div(rows, nblocks);
    const int64_t ld = round_up(C, 8);
    // Per block: sum (x - x0), sum (x - x0)^2 (shifted by row 0: no cancellation for large
    // means), max |x|, then in pass 2 the count of |x| > std.
    double* s1 = reinterpret_cast<double*>(scratch(kSlotConvPartial, static_cast<size_t>(2 * 3 * nblocks * ld)));
    double* s2 = s1 + nblocks * ld;
    int32_t* cnt = reinterpret_cast<int32_t*>(s2 + nblocks * ld);  // brows <= 2^31
    // max |x| as abs_bits (vectorizes; NaN ignored)
    int32_t* mx =
        reinterpret_cast<int32_t*>(scratch(kSlotConvWork, static_cast<size_t>(nblocks * ld)));
    int32_t* stdv_bits = reinterpret_cast<int32_t*>(scratch(kSlotMisc, static_cast<size_t>(ld)));
    const float* x0 = px;  // shift
    const int nt = threads_for(rows * C, kGrain);
    parallel(nt, [&](int t, int T) {
      for (int64_t bl = nblocks * t / T; bl < nblocks * (t + 1) / T; ++bl) {
        double* __restrict a1 = s1 + bl * ld;
        double* __restrict a2 = s2 + bl * ld;
        int32_t* __restrict am = mx + bl * ld;
        for (int64_t c = 0; c < C; ++c) a1[c] = 0.0, a2[c] = 0.0, am[c] = 0;
        const int64_t r1 = std::min(rows, (bl + 1) * brows);
        if (C % 16 == 0) {  // 16 channels at a time, the rows inside: the same sums, in registers
          for (int64_t j = 0; j < C; j += 16) {
            v8d b[4] = {};
            v16i bm{};
            shifted_sums16(b, px, C, j, bl * brows, r1, x0, [&](v16f v) {
              v16i ab = reinterpret_cast<v16i>(v) & 0x7fffffff;  // abs_bits, 16 lanes
              ab = ab > 0x7f800000 ? v16i{} : ab;
              bm = bm > ab ? bm : ab;
            });
            std::memcpy(a1 + j, &b[0], 64), std::memcpy(a1 + j + 8, &b[1], 64);
            std::memcpy(a2 + j, &b[2], 64), std::memcpy(a2 + j + 8, &b[3], 64);
            std::memcpy(am + j, &bm, 64);
          }
          continue;
        }
        for (int64_t r = bl * brows; r < r1; ++r) {
          const float* __restrict xr = px + r * C;
          for (int64_t c = 0; c < C; ++c) {
            const double d = static_cast<double>(xr[c]) - static_cast<double>(x0[c]);
            a1[c] += d;
            a2[c] += d * d;
          }
          const int32_t* __restrict xb = reinterpret_cast<const int32_alias*>(xr);
          for (int64_t c = 0; c < C; ++c) am[c] = std::max(am[c], abs_bits(xb[c]));
        }
      }
    });
    float* o = fptr(out);
    for (int64_t c = 0; c < C; ++c) {
      double t1 = 0.0, t2 = 0.0;
      int32_t mb = 0;
      for (int64_t bl = 0; bl < nblocks; ++bl) {
        t1 += s1[bl * ld + c];
        t2 += s2[bl * ld + c];
        mb = std::max(mb, mx[bl * ld + c]);
      }
      float m;
      std::memcpy(&m, &mb, sizeof m);
      const double mean_d = t1 / static_cast<double>(rows);
      const double var = std::max(0.0, t2 / static_cast<double>(rows) - mean_d * mean_d);
      o[c] = m;
      o[C + c] = static_cast<float>(std::sqrt(var));
      o[3 * C + c] = static_cast<float>(static_cast<double>(x0[c]) + mean_d);
      stdv_bits[c] = bits_of(o[C + c]);
    }
    parallel(nt, [&](int t, int T) {
      for (int64_t bl = nblocks * t / T; bl < nblocks * (t + 1) / T; ++bl) {
        // |x| > std compared as the bit patterns of non-negative floats (integer compare)
        int32_t* __restrict ac = cnt + bl * ld;
        for (int64_t c = 0; c < C; ++c) ac[c] = 0;
        const int64_t r1 = std::min(rows, (bl + 1) * brows);
        if (C % 16 == 0) {
          for (int64_t j = 0; j < C; j += 16) {
            v16i sb, n{};
            std::memcpy(&sb, stdv_bits + j, 64);
            for (int64_t r = bl * brows; r < r1; ++r)
              n -= (reinterpret_cast<v16i>(load16(px + r * C + j)) & 0x7fffffff) > sb;
            std::memcpy(ac + j, &n, 64);
          }
          continue;
        }
        for (int64_t r = bl * brows; r < r1; ++r) {
          const float* __restrict xr = px + r * C;
          for (int64_t c = 0; c < C; ++c)
            ac[c] += (bits_of(xr[c]) & 0x7fffffff) > stdv_bits[c] ? 1 : 0;
        }
      }
    });
    for (int64_t c = 0; c < C; ++c) {
      int64_t n = 0;
      for (int64_t bl = 0; bl < nblocks; ++bl) n += cnt[bl * ld + c];
      o[2 * C + c] = static_cast<float>(n / static_cast<double>(rows));
    }
    return D8_OK;
  });
}

// ---- max-clip quantization with its own scale (X and W) ------------------------------------------
extern "C" int32_t d8_quantize_i8_maxscale(d8_buffer* y, d8_buffer* scale, const d8_buffer* x,
                                           int64_t outer, int32_t inner, int32_t layout) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[96];
    if (int32_t e = check_scaled(fn, dims, sizeof dims, outer, inner, layout)) return e;
    if (layout == D8_SCALE_INNER)
      return fail(D8_ERR_INVALID_ARGUMENT,
                  "%s: layout must be D8_SCALE_TENSOR (0) or D8_SCALE_OUTER (2), got %d (%s)", fn,
                  layout, dims);
    const int64_t total = mul64(outer, inner);
    if (int32_t e = check_buffer(fn, "y", y, total, dims)) return e;
    if (int32_t e = check_buffer(fn, "x", x, mul64(total, 4), dims)) return e;
    const int64_t nsc = layout == D8_SCALE_TENSOR ? 1 : outer;
    if (int32_t e = check_buffer(fn, "scale", scale, mul64(std::max<int64_t>(nsc, 1), 4), dims))
      return e;
    if (int32_t e = check_distinct(fn, "y", y, "x", x)) return e;
    if (int32_t e = check_distinct(fn, "scale", scale, "x", x)) return e;
    if (int32_t e = check_distinct(fn, "scale", scale, "y", y)) return e;
    int8_t* py = static_cast<int8_t*>(y->data);
    const float* px = cfptr(x);
    float* ps = fptr(scale);
    const SpanFn f = pick_span(false, false);
    const Keys k = keys_for(0, 0);
    if (layout == D8_SCALE_TENSOR) {
      const float s = total > 0 ? absmax_parallel(px, total) : 0.0f;
      ps[0] = scale_of(s);
      const float inv = inv_of(s);
      parallel_for(total, kGrain, [&](int64_t b, int64_t e) {
        f(py + b, px + b, e - b, &inv, 0u, k);
      });
    } else {
      parallel_for(outer, std::max<int64_t>(1, kGrain / inner), [&](int64_t b, int64_t e) {
        for (int64_t o = b; o < e; ++o) {
          const float s = absmax_span(px + o * inner, inner);
          ps[o] = scale_of(s);
          const float inv = inv_of(s);
          f(py + o * inner, px + o * inner, inner, &inv, 0u, k);
        }
      });
    }
    return D8_OK;
  });
}

// ---- the quantizer decision ---------------------------------------------------------------------
namespace d8cpu {
namespace {

uint64_t get_u64(const uint32_t* w) { return uint64_t{w[0]} | (uint64_t{w[1]} << 32); }
void put_u64(uint32_t* w, uint64_t v) {
  w[0] = static_cast<uint32_t>(v);
  w[1] = static_cast<uint32_t>(v >> 32);
}

// Cosine distances 1 - cos(x, qdq(x, clip_i)) of nearest-rounded quantization for nc clips, over
// x [n]: f64 sums per fixed block of 4096 elements (independent of the thread count), combined in
// block order.
void dsgc_distances(double* out, const float* x, int64_t n, const float* clips, int nc) {
  constexpr int64_t kBlock = 4096;
  const int64_t nb = std::max<int64_t>(1, ceil_div(n, kBlock));
  // per block: gg, then (dot, qq) per clip
  const int64_t stride = 1 + 2 * static_cast<int64_t>(nc);
  double* part = reinterpret_cast<double*>(scratch(kSlotConvPartial, static_cast<size_t>(2 * nb * stride)));
  float inv[64], sc[64];
  for (int i = 0; i < nc; ++i) inv[i] = inv_of(clips[i]), sc[i] = scale_of(clips[i]);
  const Keys k = keys_for(0, 0);
  parallel_for(nb, 1, [&](int64_t b, int64_t e) {
    for (int64_t bl = b; bl < e; ++bl) {
      double* p = part + bl * stride;
      const int64_t i0 = bl * kBlock, i1 = std::min(n, i0 + kBlock);
      double gg = 0.0;
      for (int64_t i = i0; i < i1; ++i) gg += static_cast<double>(x[i]) * x[i];
      p[0] = gg;
      for (int c = 0; c < nc; ++c) {
        double dot = 0.0, qq = 0.0;
        for (int64_t i = i0; i < i1; ++i) {
          const float q = static_cast<float>(quant1<false>(x[i] * inv[c], 0u, k)) * sc[c];
          dot += static_cast<double>(x[i]) * q;
          qq += static_cast<double>(q) * q;
        }
        p[1 + 2 * c] = dot;
        p[2 + 2 * c] = qq;
      }
    }
  });
  double gg = 0.0;
  for (int64_t bl = 0; bl < nb; ++bl) gg += part[bl * stride];
  for (int c = 0; c < nc; ++c) {
    double dot = 0.0, qq = 0.0;
    for (int64_t bl = 0; bl < nb; ++bl) dot += part[bl * stride + 1 + 2 * c], qq += part[bl * stride + 2 + 2 * c];
    if (!(clips[c] > 0.0f)) out[c] = 1.0;
    else if (gg == 0.0 || qq == 0.0) out[c] = gg == 0.0 ? 0.0 : 1.0;
    else out[c] = 1.0 - dot / std::sqrt(gg * qq);
  }
}

// f32 arithmetic in source order, no contraction into fma: the same bits on every backend.
__attribute__((optimize("fp-contract=off"))) float ema_update(float ema, float keep, float a,
                                                               float m) {
  const float x = keep * ema;
  const float y = a * m;
  return x + y;
}
// 1 - k * a, rounded twice (no fma).
__attribute__((optimize("fp-contract=off"))) float keep_of(float k, float a) {
  const float ka = k * a;
  return 1.0f - ka;
}
// row[i0] + (row[i0 + 1] - row[i0]) * frac at position pos >= 0 (clamped to the row).
__attribute__((optimize("fp-contract=off"))) float table_lookup(const float* row, int32_t size,
                                                                float pos) {
  int64_t i0 = static_cast<int64_t>(pos);
  if (i0 > size - 2) i0 = size - 2;
  const float frac = std::min(pos - static_cast<float>(i0), 1.0f);
  const float a = row[i0], b = row[i0 + 1];
  const float d = (b - a) * frac;
  return a + d;
}
__attribute__((optimize("fp-contract=off"))) float lerp_ratio(float lo, int i, int n) {
  if (n == 1) return 1.0f;
  const float t = static_cast<float>(i) / static_cast<float>(n - 1);
  const float span = 1.0f - lo;
  const float d = span * t;
  return lo + d;
}

}  // namespace
}  // namespace d8cpu

extern "C" int32_t d8_quant_decide(d8_buffer* state, d8_buffer* clip_tensor,
                                   d8_buffer* scale_tensor, d8_buffer* clips_channel,
                                   d8_buffer* scales_channel, d8_buffer* record,
                                   d8_buffer* stats, const d8_buffer* dy,
                                   const d8_buffer* table, int64_t rows,
                                   const d8_quant_knobs* knobs) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[128];
    if (int32_t e = check_knobs(fn, knobs, dims, sizeof dims)) return e;
    const d8_quant_knobs& kn = *knobs;
    const int64_t C = kn.channels;
    if (int32_t e = check_buffers(fn, dims,
                                  {{"state", state, (D8_QSTATE_HEADER + 2 * C) * 4},
                                   {"clip_tensor", clip_tensor, 4},
                                   {"scale_tensor", scale_tensor, 4},
                                   {"record", record, 32},
                                   {"stats", stats, 4 * C * 4}}))
      return e;
    if (kn.gvq)
      if (int32_t e = check_buffers(fn, dims, {{"clips_channel", clips_channel, C * 4},
                                               {"scales_channel", scales_channel, C * 4}}))
        return e;
    if (rows < 1)
      return fail(D8_ERR_INVALID_ARGUMENT, "%s: rows must be >= 1, got %lld (%s)", fn,
                  static_cast<long long>(rows), dims);
    if (int32_t e = check_buffer(fn, "dy", dy, mul64(rows, C, 4), dims)) return e;
    if (int32_t e = check_distinct(fn, "stats", stats, "dy", dy)) return e;
    if (kn.clip == D8_CLIP_MCS_SOLVE)
      if (int32_t e = check_buffer(fn, "table", table, mul64(3, kn.table_size, 4), dims)) return e;
    if (int32_t e = d8_channel_stats_f32(stats, dy, rows, kn.channels)) return e;

    uint32_t* w = static_cast<uint32_t*>(state->data);
    float* wf = reinterpret_cast<float*>(w);
    float* ema = wf + D8_QSTATE_HEADER;
    uint32_t* bell = w + D8_QSTATE_HEADER + C;
    const float* st = cfptr(stats);
    const float* mx = st;
    const float* sd = st + C;
    const float* share = st + 2 * C;
    const uint64_t step = get_u64(w);
    float gmax = 0.0f;
    for (int64_t c = 0; c < C; ++c) gmax = mx[c] > gmax ? mx[c] : gmax;
    const bool refresh = step % static_cast<uint64_t>(kn.stats_period) == 0;

    if (w[8] == 0) {
      for (int64_t c = 0; c < C; ++c) ema[c] = mx[c], bell[c] = 1u;
      w[8] = 1u;
    } else {
      const float keep = keep_of(kn.k, kn.a);
      for (int64_t c = 0; c < C; ++c) ema[c] = ema_update(ema[c], keep, kn.a, mx[c]);
    }
    if (refresh) {
      uint64_t bells = 0;
      for (int64_t c = 0; c < C; ++c) {
        bell[c] = share[c] > kn.lambda ? 1u : 0u;
        bells += bell[c];
      }
      put_u64(w + 2, get_u64(w + 2) + bells);
      put_u64(w + 4, get_u64(w + 4) + static_cast<uint64_t>(C));
    }
    float ratio = wf[6] > 0.0f ? wf[6] : 1.0f;
    if (kn.clip == D8_CLIP_DSGC && refresh) {
      const int nc = kn.dsgc_candidates;
      float ratios[64], clips[64];
      double dist[64] = {};  // (filled by dsgc_distances; zeroed so the serial build sees it set)
      for (int i = 0; i < nc; ++i) {
        ratios[i] = lerp_ratio(kn.dsgc_min_ratio, i, nc);
        clips[i] = ratios[i] * gmax;
      }
      dsgc_distances(dist, cfptr(dy), rows * C, clips, nc);
      int best = 0;
      for (int i = 1; i < nc; ++i)
        if (dist[i] < dist[best]) best = i;
      ratio = ratios[best];
      wf[6] = ratio;
      wf[7] = static_cast<float>(dist[best]);
    }
    const float tclip = kn.clip == D8_CLIP_DSGC ? ratio * gmax : gmax;
    fptr(clip_tensor)[0] = tclip;
    fptr(scale_tensor)[0] = scale_of(tclip);
    float* rec = fptr(record);
    float cmean = tclip, cmin = tclip, cmax = tclip;
    if (kn.gvq) {
      float* cc = fptr(clips_channel);
      float* cs = fptr(scales_channel);
      const float* tab = table ? cfptr(table) : nullptr;
      const float tmin = 1.7320508f * 1.001f;  // sqrt(3) * 1.001: the inverted-T fit's domain
      double sum = 0.0;
      for (int64_t c = 0; c < C; ++c) {
        const float m = mx[c];
        float s = m;
        switch (kn.clip) {
          case D8_CLIP_DSGC: s = ratio * m; break;
          case D8_CLIP_MCS: s = bell[c] ? m : std::min(ema[c], m); break;
          case D8_CLIP_MCS_SOLVE: {
            const float sig = sd[c];
            if (sig > 0.0f && m > 0.0f) {
              const float r = std::min(m / sig, kn.table_max);
              const int fam = bell[c] ? 0 : (kn.sharp_inverted_t && r > tmin) ? 2 : 1;
              s = std::min(m, table_lookup(tab + fam * int64_t{kn.table_size}, kn.table_size,
                                           r / kn.table_step) * sig);
            }
            break;
          }
          default: break;
        }
        cc[c] = s;
        cs[c] = scale_of(s);
        sum += s;
        cmin = c == 0 ? s : std::min(cmin, s);
        cmax = c == 0 ? s : std::max(cmax, s);
      }
      cmean = static_cast<float>(sum / static_cast<double>(C));
    }
    uint64_t nb = 0;
    for (int64_t c = 0; c < C; ++c) nb += bell[c];
    rec[0] = tclip;
    rec[1] = cmean;
    rec[2] = cmin;
    rec[3] = cmax;
    rec[4] = gmax;
    rec[5] = static_cast<float>(static_cast<double>(nb) / static_cast<double>(C));
    rec[6] = kn.clip == D8_CLIP_DSGC ? wf[7] : 0.0f;
    put_u64(w, step + 1);
    return D8_OK;
  });
}

extern "C" int32_t d8_quant_error(d8_buffer* record, const d8_buffer* x, const d8_buffer* q,
                                  const d8_buffer* clips, int64_t rows, int32_t channels,
                                  int32_t layout) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[96];
    if (int32_t e = check_scaled(fn, dims, sizeof dims, rows, channels, layout)) return e;
    if (layout == D8_SCALE_OUTER)
      return fail(D8_ERR_INVALID_ARGUMENT,
                  "%s: layout must be D8_SCALE_TENSOR (0) or D8_SCALE_INNER (1) (%s)", fn, dims);
    const int64_t total = mul64(rows, channels);
    const int64_t ncl = layout == D8_SCALE_TENSOR ? 1 : channels;
    if (int32_t e = check_buffers(fn, dims, {{"record", record, 32}, {"x", x, mul64(total, 4)},
                                             {"q", q, total}, {"clips", clips, ncl * 4}}))
      return e;
    const float* px = cfptr(x);
    const int8_t* pq = static_cast<const int8_t*>(q->data);
    float* sc = scratch(kSlotMisc, static_cast<size_t>(ncl));
    for (int64_t c = 0; c < ncl; ++c) sc[c] = scale_of(cfptr(clips)[c]);
    constexpr int64_t kRowsPerBlock = 256;
    const int64_t nb = std::max<int64_t>(1, ceil_div(rows, kRowsPerBlock));
    double* part = reinterpret_cast<double*>(scratch(kSlotConvPartial, static_cast<size_t>(4 * nb)));
    parallel_for(nb, 1, [&](int64_t b, int64_t e) {
      for (int64_t bl = b; bl < e; ++bl) {
        double num = 0.0, den = 0.0;
        for (int64_t r = bl * kRowsPerBlock; r < std::min(rows, (bl + 1) * kRowsPerBlock); ++r)
          for (int64_t c = 0; c < channels; ++c) {
            const int64_t i = r * channels + c;
            const double g = px[i];
            const double d = g - static_cast<double>(static_cast<float>(pq[i]) * sc[ncl == 1 ? 0 : c]);
            num += d * d;
            den += g * g;
          }
        part[2 * bl] = num;
        part[2 * bl + 1] = den;
      }
    });
    double num = 0.0, den = 0.0;
    for (int64_t bl = 0; bl < nb; ++bl) num += part[2 * bl], den += part[2 * bl + 1];
    fptr(record)[7] = den > 0.0 ? static_cast<float>(std::sqrt(num / den)) : 0.0f;
    return D8_OK;
  });
}
