// zoo_ops.cpp: the few ops the model zoo needs beyond the core set: elementwise multiply (dropout
// masks), ReLU6 forward / backward (MobileNetV2) and adaptive average pooling (VGG, AlexNet,
// torchvision's windows: start = floor(i * in / out), end = ceil((i + 1) * in / out)).
#include "common.h"

#include <cmath>

#include <cstdio>

using namespace d8cpu;

namespace {

constexpr int64_t kGrain = int64_t{1} << 15;

int32_t check_elems(const char* fn, char* dims, size_t cap, int64_t n,
                    std::initializer_list<BufferArg> args) {
  snprintf(dims, cap, "n=%lld", static_cast<long long>(n));
  if (n < 0)
    return fail(D8_ERR_INVALID_ARGUMENT, "%s: n must be non-negative, got %lld", fn,
                static_cast<long long>(n));
  return check_buffers(fn, dims, args);
}

int32_t check_adaptive(const char* fn, char* dims, size_t cap, int32_t n, int32_t h, int32_t w,
                       int32_t c, int32_t p, int32_t q) {
  snprintf(dims, cap, "n=%d,h=%d,w=%d,c=%d,p=%d,q=%d", n, h, w, c, p, q);
  if (n < 1 || h < 1 || w < 1 || c < 1 || p < 1 || q < 1)
    return fail(D8_ERR_INVALID_ARGUMENT, "%s: every size must be positive (%s)", fn, dims);
  return D8_OK;
}

inline int64_t win_start(int64_t i, int64_t in, int64_t out) { return i * in / out; }
inline int64_t win_end(int64_t i, int64_t in, int64_t out) { return ((i + 1) * in + out - 1) / out; }

}  // namespace

extern "C" int32_t d8_mul_f32(d8_buffer* y, const d8_buffer* a, const d8_buffer* b, int64_t n) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[48];
    const int64_t bytes = mul64(n, 4);
    if (int32_t e = check_elems(fn, dims, sizeof dims, n,
                                {{"y", y, bytes}, {"a", a, bytes}, {"b", b, bytes}}))
      return e;
    float* py = fptr(y);  // may alias a or b: elementwise, same index
    const float* pa = cfptr(a);
    const float* pb = cfptr(b);
    parallel_for(n, kGrain, [&](int64_t b0, int64_t e) {
      for (int64_t i = b0; i < e; ++i) py[i] = pa[i] * pb[i];
    });
    return D8_OK;
  });
}

extern "C" int32_t d8_relu6_fwd(d8_buffer* y, const d8_buffer* x, int64_t n) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[48];
    const int64_t bytes = mul64(n, 4);
    if (int32_t e = check_elems(fn, dims, sizeof dims, n, {{"y", y, bytes}, {"x", x, bytes}}))
      return e;
    float* py = fptr(y);
    const float* px = cfptr(x);
    parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const float v = px[i];
        py[i] = v > 0.0f ? (v < 6.0f ? v : 6.0f) : 0.0f;  // NaN -> 0
      }
    });
    return D8_OK;
  });
}

// dx = dy where 0 < y < 6 (the input was strictly inside the linear range), else 0: PyTorch's
// hardtanh backward.
extern "C" int32_t d8_relu6_bwd(d8_buffer* dx, const d8_buffer* dy, const d8_buffer* y,
                                int64_t n) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[48];
    const int64_t bytes = mul64(n, 4);
    if (int32_t e = check_elems(fn, dims, sizeof dims, n,
                                {{"dx", dx, bytes}, {"dy", dy, bytes}, {"y", y, bytes}}))
      return e;
    float* pdx = fptr(dx);
    const float* pdy = cfptr(dy);
    const float* py = cfptr(y);
    parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const float g = pdy[i];
        pdx[i] = (py[i] > 0.0f && py[i] < 6.0f) ? g : 0.0f;
      }
    });
    return D8_OK;
  });
}

extern "C" int32_t d8_adaptive_avgpool_fwd(d8_buffer* y, const d8_buffer* x, int32_t n,
                                           int32_t h, int32_t w, int32_t c, int32_t p,
                                           int32_t q) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[96];
    if (int32_t e = check_adaptive(fn, dims, sizeof dims, n, h, w, c, p, q)) return e;
    if (int32_t e = check_buffers(fn, dims, {{"y", y, mul64(int64_t{n} * p, int64_t{q} * c, 4)},
                                             {"x", x, mul64(int64_t{n} * h, int64_t{w} * c, 4)}}))
      return e;
    if (x == y) return fail(D8_ERR_INVALID_ARGUMENT, "%s: y and x must be different buffers", fn);
    float* py = fptr(y);
    const float* px = cfptr(x);
    parallel_for(int64_t{n} * p, 1, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t img = r / p, i = r % p;
        const int64_t h0 = win_start(i, h, p), h1 = win_end(i, h, p);
        for (int64_t j = 0; j < q; ++j) {
          const int64_t w0 = win_start(j, w, q), w1 = win_end(j, w, q);
          float* out = py + ((img * p + i) * q + j) * c;
          for (int64_t k = 0; k < c; ++k) out[k] = 0.0f;
          for (int64_t a = h0; a < h1; ++a)
            for (int64_t b = w0; b < w1; ++b) {
              const float* in = px + ((img * h + a) * w + b) * c;
              for (int64_t k = 0; k < c; ++k) out[k] += in[k];
            }
          const float inv = 1.0f / static_cast<float>((h1 - h0) * (w1 - w0));
          for (int64_t k = 0; k < c; ++k) out[k] *= inv;
        }
      }
    });
    return D8_OK;
  });
}

// dx[n, h, w, c] = sum over the windows holding (h, w) of dy / window size. Each image is one
// task (windows of one image overlap, images do not).
extern "C" int32_t d8_adaptive_avgpool_bwd(d8_buffer* dx, const d8_buffer* dy, int32_t n,
                                           int32_t h, int32_t w, int32_t c, int32_t p,
                                           int32_t q) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[96];
    if (int32_t e = check_adaptive(fn, dims, sizeof dims, n, h, w, c, p, q)) return e;
    if (int32_t e = check_buffers(fn, dims, {{"dx", dx, mul64(int64_t{n} * h, int64_t{w} * c, 4)},
                                             {"dy", dy, mul64(int64_t{n} * p, int64_t{q} * c, 4)}}))
      return e;
    if (dx == dy)
      return fail(D8_ERR_INVALID_ARGUMENT, "%s: dx and dy must be different buffers", fn);
    float* pdx = fptr(dx);
    const float* pdy = cfptr(dy);
    parallel_for(n, 1, [&](int64_t i0, int64_t i1) {
      for (int64_t img = i0; img < i1; ++img) {
        float* d = pdx + img * h * w * c;
        for (int64_t t = 0; t < int64_t{h} * w * c; ++t) d[t] = 0.0f;
        for (int64_t i = 0; i < p; ++i) {
          const int64_t h0 = win_start(i, h, p), h1 = win_end(i, h, p);
          for (int64_t j = 0; j < q; ++j) {
            const int64_t w0 = win_start(j, w, q), w1 = win_end(j, w, q);
            const float inv = 1.0f / static_cast<float>((h1 - h0) * (w1 - w0));
            const float* g = pdy + ((img * p + i) * q + j) * c;
            for (int64_t a = h0; a < h1; ++a)
              for (int64_t b = w0; b < w1; ++b) {
                float* o = d + (a * w + b) * c;
                // one rounding, written out: GCC contracts a*b+c into an FMA only where the
                // target has one, and the cuda kernel must match it bit for bit either way
                for (int64_t k = 0; k < c; ++k) o[k] = std::fma(g[k], inv, o[k]);
              }
          }
        }
      }
    });
    return D8_OK;
  });
}
