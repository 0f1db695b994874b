// pool.cpp: max / average pooling (NHWC, one window per channel) and global average pooling.
// Every inner loop runs over the contiguous channel dimension; threads split output rows
// (forward) or input rows (average backward, a gather), or whole images (max backward, a
// scatter through argmax).
#include "common.h"
#include "conv_geom.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <mutex>

using namespace d8cpu;

namespace {

constexpr int64_t kGrain = int64_t{1} << 14;  // output elements per thread at least

int32_t check_pool(const char* fn, const d8_conv_shape* s, char* dims, int cap) {
  if (s && (s->k != s->c || s->groups != s->c))
    return fail(D8_ERR_INVALID_ARGUMENT,
                "%s: pooling needs k == c and groups == c, got c=%d, k=%d, groups=%d", fn, s->c,
                s->k, s->groups);
  return check_conv_shape(fn, s, dims, cap);
}

int64_t x_bytes(const d8_conv_shape& s) { return mul64(int64_t{s.n} * s.h, int64_t{s.w} * s.c, 4); }
int64_t y_bytes(const d8_conv_shape& s) { return mul64(int64_t{s.n} * s.p, int64_t{s.q} * s.c, 4); }

}  // namespace

extern "C" int32_t d8_maxpool_fwd(d8_buffer* y, d8_buffer* argmax, const d8_buffer* x,
                                  const d8_conv_shape* shape) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[256];
    if (int32_t e = check_pool(fn, shape, dims, sizeof dims)) return e;
    const int64_t yb = y_bytes(*shape);
    if (int32_t e = check_buffers(fn, dims, {{"y", y, yb}, {"argmax", argmax, yb},
                                             {"x", x, x_bytes(*shape)}}))
      return e;
    if (int64_t{shape->h} * shape->w > INT32_MAX)
      return fail(D8_ERR_INVALID_ARGUMENT, "%s: h*w must fit int32 argmax indices (%s)", fn, dims);
    const Geom G = make_geom(*shape);
    const int64_t C = G.c, H = G.h, W = G.w, P = G.p, Q = G.q;
    const float* px = cfptr(x);
    float* py = fptr(y);
    int32_t* pa = static_cast<int32_t*>(argmax->data);
    parallel_for(G.n * P, std::max<int64_t>(1, kGrain / (Q * C)), [&](int64_t b, int64_t e) {
      for (int64_t row = b; row < e; ++row) {
        const int64_t img = row / P, pp = row % P;
        for (int64_t qq = 0; qq < Q; ++qq) {
          float* __restrict yo = py + (row * Q + qq) * C;
          int32_t* __restrict ao = pa + (row * Q + qq) * C;
#if defined(__AVX512F__)
          // 16 channels at a time in registers (masked tail): no per-channel loop overhead
          // when C is small (LeNet's 6).
          for (int64_t cb = 0; cb < C; cb += 16) {
            const __mmask16 mk = C - cb >= 16 ? __mmask16(0xFFFF)
                                              : static_cast<__mmask16>((1u << (C - cb)) - 1u);
            __m512 best = _mm512_setzero_ps();
            __m512i arg = _mm512_set1_epi32(-1);
            bool seen = false;
            for_each_tap(G, pp, qq, [&](int64_t, int64_t, int64_t ih, int64_t iw) {
              const __m512 v = _mm512_maskz_loadu_ps(mk, px + ((img * H + ih) * W + iw) * C + cb);
              const __m512i idx = _mm512_set1_epi32(static_cast<int32_t>(ih * W + iw));
              if (!seen) {
                best = v;
                arg = idx;
                seen = true;
              } else {  // take when greater, or NaN (propagates, as in PyTorch)
                const __mmask16 take = _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) |
                                       _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
                best = _mm512_mask_mov_ps(best, take, v);
                arg = _mm512_mask_mov_epi32(arg, take, idx);
              }
            });
            _mm512_mask_storeu_ps(yo + cb, mk, best);
            _mm512_mask_storeu_epi32(ao + cb, mk, arg);
          }
          continue;
#endif
          bool any = false;
          for_each_tap(G, pp, qq, [&](int64_t, int64_t, int64_t ih, int64_t iw) {
            float* __restrict yr = yo;
            int32_t* __restrict ar = ao;
            const int32_t idx = static_cast<int32_t>(ih * W + iw);
            const float* __restrict xi = px + ((img * H + ih) * W + iw) * C;
            if (!any) {
              for (int64_t ch = 0; ch < C; ++ch) {
                yr[ch] = xi[ch];
                ar[ch] = idx;
              }
              any = true;
            } else {
              for (int64_t ch = 0; ch < C; ++ch) {
                const float v = xi[ch];
                const bool take = v > yr[ch] || v != v;  // NaN propagates, as in PyTorch
                yr[ch] = take ? v : yr[ch];
                ar[ch] = take ? idx : ar[ch];
              }
            }
          });
          if (!any) {  // window entirely in padding
            for (int64_t ch = 0; ch < C; ++ch) {
              yo[ch] = 0.0f;
              ao[ch] = -1;
            }
          }
        }
      }
    });
    return D8_OK;
  });
}

extern "C" int32_t d8_maxpool_bwd(d8_buffer* dx, const d8_buffer* dy, const d8_buffer* argmax,
                                  const d8_conv_shape* shape) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[256];
    if (int32_t e = check_pool(fn, shape, dims, sizeof dims)) return e;
    const int64_t yb = y_bytes(*shape);
    if (int32_t e = check_buffers(fn, dims, {{"dx", dx, x_bytes(*shape)}, {"dy", dy, yb},
                                             {"argmax", argmax, yb}}))
      return e;
    const d8_conv_shape& S = *shape;
    const int64_t C = S.c, HW = int64_t{S.h} * S.w, PQ = int64_t{S.p} * S.q;
    float* pdx = fptr(dx);
    const float* pdy = cfptr(dy);
    const int32_t* pa = static_cast<const int32_t*>(argmax->data);
    int bad = 0;
    int64_t bad_at = -1;
    int32_t bad_val = 0;
    std::mutex bad_mutex;  // the threads that find a bad index report one of them
    // Threads own whole images: the scatter of one image never touches another.
    const int nt = static_cast<int>(std::min<int64_t>(threads_for(S.n * PQ * C, kGrain), S.n));
    parallel(nt, [&](int t, int T) {
      const int64_t i0 = int64_t{S.n} * t / T, i1 = int64_t{S.n} * (t + 1) / T;
      std::memset(pdx + i0 * HW * C, 0, static_cast<size_t>((i1 - i0) * HW * C) * 4);
      for (int64_t img = i0; img < i1; ++img) {
        float* dxi = pdx + img * HW * C;
        for (int64_t o = img * PQ; o < (img + 1) * PQ; ++o) {
          const float* g = pdy + o * C;
          const int32_t* a = pa + o * C;
          for (int64_t ch = 0; ch < C; ++ch) {
            const int32_t idx = a[ch];
            if (idx == -1) continue;
            if (idx < 0 || idx >= HW) {
              {
                const std::lock_guard<std::mutex> lock(bad_mutex);
                bad = 1;
                bad_at = o * C + ch;
                bad_val = idx;
              }
              continue;
            }
            dxi[idx * C + ch] += g[ch];
          }
        }
      }
    });
    if (bad)
      return fail(D8_ERR_INVALID_ARGUMENT,
                  "%s: argmax[%lld] = %d is outside the input plane [0, %lld) (%s)", fn,
                  static_cast<long long>(bad_at), bad_val, static_cast<long long>(HW), dims);
    return D8_OK;
  });
}

extern "C" int32_t d8_avgpool_fwd(d8_buffer* y, const d8_buffer* x, const d8_conv_shape* shape) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[256];
    if (int32_t e = check_pool(fn, shape, dims, sizeof dims)) return e;
    if (int32_t e = check_buffers(fn, dims, {{"y", y, y_bytes(*shape)}, {"x", x, x_bytes(*shape)}}))
      return e;
    const Geom G = make_geom(*shape);
    const int64_t C = G.c, H = G.h, W = G.w, P = G.p, Q = G.q;
    const float inv = 1.0f / static_cast<float>(G.r * G.s);
    const float* px = cfptr(x);
    float* py = fptr(y);
    parallel_for(G.n * P, std::max<int64_t>(1, kGrain / (Q * C)), [&](int64_t b, int64_t e) {
      for (int64_t row = b; row < e; ++row) {
        const int64_t img = row / P, pp = row % P;
        for (int64_t qq = 0; qq < Q; ++qq) {
          float* __restrict yo = py + (row * Q + qq) * C;
          for (int64_t ch = 0; ch < C; ++ch) yo[ch] = 0.0f;
          for_each_tap(G, pp, qq, [&](int64_t, int64_t, int64_t ih, int64_t iw) {
            float* __restrict o = yo;
            const float* __restrict xi = px + ((img * H + ih) * W + iw) * C;
            for (int64_t ch = 0; ch < C; ++ch) o[ch] += xi[ch];
          });
          for (int64_t ch = 0; ch < C; ++ch) yo[ch] *= inv;
        }
      }
    });
    return D8_OK;
  });
}

extern "C" int32_t d8_avgpool_bwd(d8_buffer* dx, const d8_buffer* dy, const d8_conv_shape* shape) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[256];
    if (int32_t e = check_pool(fn, shape, dims, sizeof dims)) return e;
    if (int32_t e =
            check_buffers(fn, dims, {{"dx", dx, x_bytes(*shape)}, {"dy", dy, y_bytes(*shape)}}))
      return e;
    const Geom G = make_geom(*shape);
    const int64_t C = G.c, H = G.h, W = G.w, P = G.p, Q = G.q;
    const float inv = 1.0f / static_cast<float>(G.r * G.s);
    float* pdx = fptr(dx);
    const float* pdy = cfptr(dy);
    // Gather: dx[ih, iw] sums dy over the windows that cover it.
    parallel_for(G.n * H, std::max<int64_t>(1, kGrain / (W * C)), [&](int64_t b, int64_t e) {
      for (int64_t row = b; row < e; ++row) {
        const int64_t img = row / H, ih = row % H;
        for (int64_t iw = 0; iw < W; ++iw) {
          float* __restrict o = pdx + (row * W + iw) * C;
          for (int64_t ch = 0; ch < C; ++ch) o[ch] = 0.0f;
          for_each_cover(G, ih, iw, [&](int64_t, int64_t, int64_t pp, int64_t qq) {
            float* __restrict od = o;
            const float* __restrict g = pdy + ((img * P + pp) * Q + qq) * C;
            for (int64_t ch = 0; ch < C; ++ch) od[ch] += g[ch];
          });
          for (int64_t ch = 0; ch < C; ++ch) o[ch] *= inv;
        }
      }
    });
    return D8_OK;
  });
}

namespace {
int32_t check_global(const char* fn, char* dims, size_t cap, int32_t n, int32_t hw, int32_t c) {
  snprintf(dims, cap, "n=%d,hw=%d,c=%d", n, hw, c);
  if (n < 1 || hw < 1 || c < 1)
    return fail(D8_ERR_INVALID_ARGUMENT, "%s: n, hw and c must be positive (%s)", fn, dims);
  return D8_OK;
}
}  // namespace

extern "C" int32_t d8_global_avgpool_fwd(d8_buffer* y, const d8_buffer* x, int32_t n, int32_t hw,
                                         int32_t c) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[96];
    if (int32_t e = check_global(fn, dims, sizeof dims, n, hw, c)) return e;
    if (int32_t e = check_buffer(fn, "y", y, mul64(n, c, 4), dims)) return e;
    if (int32_t e = check_buffer(fn, "x", x, mul64(n, hw, c, 4), dims)) return e;
    const float* px = cfptr(x);
    float* py = fptr(y);
    const int64_t C = c, HW = hw;
    const float inv = 1.0f / static_cast<float>(hw);
    parallel_for(n, std::max<int64_t>(1, kGrain / (HW * C)), [&](int64_t b, int64_t e) {
      for (int64_t img = b; img < e; ++img) {
        float* __restrict yo = py + img * C;
        for (int64_t ch = 0; ch < C; ++ch) yo[ch] = 0.0f;
        for (int64_t i = 0; i < HW; ++i) {
          const float* __restrict xi = px + (img * HW + i) * C;
          for (int64_t ch = 0; ch < C; ++ch) yo[ch] += xi[ch];
        }
        for (int64_t ch = 0; ch < C; ++ch) yo[ch] *= inv;
      }
    });
    return D8_OK;
  });
}

extern "C" int32_t d8_global_avgpool_bwd(d8_buffer* dx, const d8_buffer* dy, int32_t n, int32_t hw,
                                         int32_t c) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[96];
    if (int32_t e = check_global(fn, dims, sizeof dims, n, hw, c)) return e;
    if (int32_t e = check_buffer(fn, "dx", dx, mul64(n, hw, c, 4), dims)) return e;
    if (int32_t e = check_buffer(fn, "dy", dy, mul64(n, c, 4), dims)) return e;
    const float* pdy = cfptr(dy);
    float* pdx = fptr(dx);
    const int64_t C = c, HW = hw;
    const float inv = 1.0f / static_cast<float>(hw);
    parallel_for(int64_t{n} * HW, std::max<int64_t>(1, kGrain / C), [&](int64_t b, int64_t e) {
      for (int64_t row = b; row < e; ++row) {
        const float* __restrict g = pdy + (row / HW) * C;
        float* __restrict o = pdx + row * C;
        for (int64_t ch = 0; ch < C; ++ch) o[ch] = g[ch] * inv;
      }
    });
    return D8_OK;
  });
}
