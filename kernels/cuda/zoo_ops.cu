// zoo_ops.cu: the model zoo's extra ops (kernels/cpu/zoo_ops.cpp): elementwise multiply, ReLU6
// forward / backward, adaptive average pooling (torchvision windows: start = floor(i * in / out),
// end = ceil((i + 1) * in / out)). One thread per output element; the pooling sums run in the
// cpu's order (rows, then columns; the backward gathers the windows in ascending (i, j)), with
// explicitly rounded float operations, so results equal the cpu's bit for bit.
#include "common.cuh"

#include <cstdio>

using namespace d8cuda;

namespace {

constexpr int kBlock = 256;

__global__ void mul_k(float* y, const float* a, const float* b, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    y[i] = __fmul_rn(a[i], b[i]);
}
__global__ void relu6_k(float* y, const float* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float v = x[i];
    y[i] = v > 0.0f ? (v < 6.0f ? v : 6.0f) : 0.0f;  // NaN -> 0
  }
}
__global__ void relu6_bwd_k(float* dx, const float* dy, const float* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float g = dy[i], v = y[i];
    dx[i] = (v > 0.0f && v < 6.0f) ? g : 0.0f;
  }
}

__device__ inline int64_t win_start(int64_t i, int64_t in, int64_t out) { return i * in / out; }
__device__ inline int64_t win_end(int64_t i, int64_t in, int64_t out) {
  return ((i + 1) * in + out - 1) / out;
}

__global__ void adaptive_fwd_k(float* y, const float* x, int n, int h, int w, int c, int p,
                               int q) {
  const int64_t total = int64_t{n} * p * q * c;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < total;
       t += int64_t{gridDim.x} * blockDim.x) {
    const int64_t k = t % c, j = t / c % q, i = t / (int64_t{c} * q) % p;
    const int64_t img = t / (int64_t{c} * q * p);
    const int64_t h0 = win_start(i, h, p), h1 = win_end(i, h, p);
    const int64_t w0 = win_start(j, w, q), w1 = win_end(j, w, q);
    float acc = 0.0f;
    for (int64_t a = h0; a < h1; ++a)
      for (int64_t b = w0; b < w1; ++b) acc = __fadd_rn(acc, x[((img * h + a) * w + b) * c + k]);
    const float inv = __fdiv_rn(1.0f, static_cast<float>((h1 - h0) * (w1 - w0)));
    y[t] = __fmul_rn(acc, inv);
  }
}

__global__ void adaptive_bwd_k(float* dx, const float* dy, int n, int h, int w, int c, int p,
                               int q) {
  const int64_t total = int64_t{n} * h * w * c;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < total;
       t += int64_t{gridDim.x} * blockDim.x) {
    const int64_t k = t % c, b = t / c % w, a = t / (int64_t{c} * w) % h;
    const int64_t img = t / (int64_t{c} * w * h);
    float acc = 0.0f;
    for (int64_t i = 0; i < p; ++i) {
      const int64_t h0 = win_start(i, h, p), h1 = win_end(i, h, p);
      if (a < h0 || a >= h1) continue;
      for (int64_t j = 0; j < q; ++j) {
        const int64_t w0 = win_start(j, w, q), w1 = win_end(j, w, q);
        if (b < w0 || b >= w1) continue;
        const float inv = __fdiv_rn(1.0f, static_cast<float>((h1 - h0) * (w1 - w0)));
        acc = __fmaf_rn(dy[((img * p + i) * q + j) * c + k], inv, acc);  // as the cpu: one rounding
      }
    }
    dx[t] = acc;
  }
}

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

}  // namespace

extern "C" int32_t d8_mul_f32(d8_buffer* y, const d8_buffer* a, const d8_buffer* b, int64_t n) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[48];
    const int64_t bytes = mul64(n, 4);
    if (int32_t e = check_elems(fn, dims, sizeof dims, n,
                                {{"y", y, bytes}, {"a", a, bytes}, {"b", b, bytes}}))
      return e;
    d8_context* ctx;
    if (int32_t e = op_context(fn, {y, a, b}, &ctx)) return e;
    if (n > 0) mul_k<<<grid_1d(n, kBlock), kBlock, 0, ctx->stream>>>(fptr(y), fptr(a), fptr(b), n);
    return launch_check(fn, "mul_k");
  });
}

extern "C" int32_t d8_relu6_fwd(d8_buffer* y, const d8_buffer* x, int64_t n) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[48];
    const int64_t bytes = mul64(n, 4);
    if (int32_t e = check_elems(fn, dims, sizeof dims, n, {{"y", y, bytes}, {"x", x, bytes}}))
      return e;
    d8_context* ctx;
    if (int32_t e = op_context(fn, {y, x}, &ctx)) return e;
    if (n > 0) relu6_k<<<grid_1d(n, kBlock), kBlock, 0, ctx->stream>>>(fptr(y), fptr(x), n);
    return launch_check(fn, "relu6_k");
  });
}

extern "C" int32_t d8_relu6_bwd(d8_buffer* dx, const d8_buffer* dy, const d8_buffer* y,
                                int64_t n) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[48];
    const int64_t bytes = mul64(n, 4);
    if (int32_t e = check_elems(fn, dims, sizeof dims, n,
                                {{"dx", dx, bytes}, {"dy", dy, bytes}, {"y", y, bytes}}))
      return e;
    d8_context* ctx;
    if (int32_t e = op_context(fn, {dx, dy, y}, &ctx)) return e;
    if (n > 0)
      relu6_bwd_k<<<grid_1d(n, kBlock), kBlock, 0, ctx->stream>>>(fptr(dx), fptr(dy), fptr(y), n);
    return launch_check(fn, "relu6_bwd_k");
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
    d8_context* ctx;
    if (int32_t e = op_context(fn, {y, x}, &ctx)) return e;
    adaptive_fwd_k<<<grid_1d(int64_t{n} * p * q * c, kBlock), kBlock, 0, ctx->stream>>>(
        fptr(y), fptr(x), n, h, w, c, p, q);
    return launch_check(fn, "adaptive_fwd_k");
  });
}

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
    d8_context* ctx;
    if (int32_t e = op_context(fn, {dx, dy}, &ctx)) return e;
    adaptive_bwd_k<<<grid_1d(int64_t{n} * h * w * c, kBlock), kBlock, 0, ctx->stream>>>(
        fptr(dx), fptr(dy), n, h, w, c, p, q);
    return launch_check(fn, "adaptive_bwd_k");
  });
}
