// elementwise.cu: fill, add, axpy, u8 -> f32, relu (and its bit-mask form), channel concat /
// split (float32), and d8_sgd_step (with the non-finite check). Grid-stride loops over int64 element counts.
#include "common.cuh"

#include <cstdio>

using namespace d8cuda;

namespace {

constexpr int kBlock = 256;

__global__ void fill_k(float* y, int64_t n, float v) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    y[i] = v;
}
__global__ void add_k(float* y, const float* a, const float* b, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    y[i] = a[i] + b[i];
}
__global__ void axpy_k(float* y, float alpha, const float* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    y[i] = __fadd_rn(y[i], __fmul_rn(alpha, x[i]));  // as the cpu: no fused multiply-add
}
__global__ void u8_k(float* y, const uint8_t* x, int64_t n, float scale, float shift) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    y[i] = __fadd_rn(__fmul_rn(static_cast<float>(x[i]), scale), shift);
}
__global__ void relu_k(float* y, const float* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}
__global__ void relu_bwd_k(float* dx, const float* dy, const float* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}
// y[r, 0:ca] = a[r], y[r, ca:ca+cb] = b[r] (split: the reverse).
template <bool Split>
__global__ void concat_k(float* y, float* a, float* b, int64_t rows, int ca, int cb) {
  const int64_t c = int64_t{ca} + cb, n = rows * c;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / c, j = i % c;
    float* src = j < ca ? a + r * ca + j : b + r * cb + (j - ca);
    if (Split)
      *src = y[i];
    else
      y[i] = *src;
  }
}

__device__ inline bool nonfinite_f(float v) {
  return (__float_as_uint(v) & 0x7f800000u) == 0x7f800000u;
}

// nonfinite (may be null): set to 1 when a grad or an updated w is NaN or infinite.
__global__ void sgd_k(float* w, float* buf, unsigned* nonfinite, const float* g, int64_t n,
                      float lr, float mom, float wd, int mode) {
  bool bad = false;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float gr = g[i];
    bad |= nonfinite_f(gr);
    const float gi = __fadd_rn(gr, __fmul_rn(wd, w[i]));
    if (mode == 0) {
      w[i] = __fsub_rn(w[i], __fmul_rn(lr, gi));
    } else {
      const float m = __fadd_rn(__fmul_rn(mom, buf[i]), gi);
      buf[i] = m;
      const float step = mode == 2 ? __fadd_rn(gi, __fmul_rn(mom, m)) : m;
      w[i] = __fsub_rn(w[i], __fmul_rn(lr, step));
    }
    bad |= nonfinite_f(w[i]);
  }
  if (nonfinite && bad) nonfinite[0] = 1u;  // a plain store of 1: races are benign
}

// One thread per mask byte: bit t of byte j is x[8j + t] > 0 (LSB first; bits past n are 0).
// cap > 0: y = min(max(x, 0), cap) and the bit is 0 < x < cap (ReLU6 with cap 6).
__global__ void relu_mask_k(float* y, uint8_t* mask, const float* x, int64_t n, float cap) {
  const int64_t nb = (n + 7) / 8;
  for (int64_t j = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; j < nb;
       j += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i0 = j * 8;
    const int cnt = n - i0 < 8 ? static_cast<int>(n - i0) : 8;
    unsigned bits = 0;
    for (int t = 0; t < cnt; ++t) {
      const float v = x[i0 + t];
      const bool pos = v > 0.0f;
      const bool in = pos && (cap <= 0.0f || v < cap);
      bits |= static_cast<unsigned>(in) << t;
      y[i0 + t] = pos ? (cap > 0.0f && v >= cap ? cap : v) : 0.0f;
    }
    mask[j] = static_cast<uint8_t>(bits);
  }
}
__global__ void relu_mask_bwd_k(float* dx, const float* dy, const uint8_t* mask, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    dx[i] = (mask[i >> 3] >> (i & 7)) & 1u ? dy[i] : 0.0f;
}

struct NArg {
  const char* name;
  const d8_buffer* buf;
  int64_t elem = 4;
};
int32_t check_n(const char* fn, char* dims, size_t cap, int64_t n,
                std::initializer_list<NArg> args) {
  snprintf(dims, cap, "n=%lld", static_cast<long long>(n));
  if (n < 0)
    return fail(D8_ERR_INVALID_ARGUMENT, "%s: n must be non-negative, got %lld", fn,
                static_cast<long long>(n));
  for (const NArg& a : args)
    if (int32_t e = check_buffer(fn, a.name, a.buf, mul64(n, a.elem), dims)) return e;
  return D8_OK;
}

}  // namespace

#define D8_LAUNCH(kernel, n, ...)                                                     \
  do {                                                                                \
    if ((n) > 0) kernel<<<grid_1d((n), kBlock), kBlock, 0, ctx->stream>>>(__VA_ARGS__); \
    return launch_check(fn, #kernel);                                                 \
  } while (0)

extern "C" int32_t d8_fill_f32(d8_buffer* y, int64_t n, float value) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[48];
    if (int32_t e = check_n(fn, dims, sizeof dims, n, {{"y", y}})) return e;
    d8_context* ctx;
    if (int32_t e = op_context(fn, {y}, &ctx)) return e;
    D8_LAUNCH(fill_k, n, fptr(y), n, value);
  });
}

namespace d8cuda {
int32_t add_into(const char* fn, d8_context* ctx, float* y, const float* x, int64_t n) {
  add_k<<<grid_1d(n, kBlock), kBlock, 0, ctx->stream>>>(y, y, x, n);
  return launch_check(fn, "add_k");
}
int32_t relu_mask_into(const char* fn, d8_context* ctx, float* y, uint8_t* mask, const float* x,
                       int64_t n, float cap) {
  relu_mask_k<<<grid_1d((n + 7) / 8, kBlock), kBlock, 0, ctx->stream>>>(y, mask, x, n, cap);
  return launch_check(fn, "relu_mask_k");
}
}  // namespace d8cuda

extern "C" int32_t d8_add_f32(d8_buffer* y, const d8_buffer* a, const d8_buffer* b, int64_t n) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[48];
    if (int32_t e = check_n(fn, dims, sizeof dims, n, {{"y", y}, {"a", a}, {"b", b}})) return e;
    d8_context* ctx;
    if (int32_t e = op_context(fn, {y, a, b}, &ctx)) return e;
    D8_LAUNCH(add_k, n, fptr(y), fptr(a), fptr(b), n);
  });
}

extern "C" int32_t d8_axpy_f32(d8_buffer* y, float alpha, const d8_buffer* x, int64_t n) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[48];
    if (int32_t e = check_n(fn, dims, sizeof dims, n, {{"y", y}, {"x", x}})) return e;
    d8_context* ctx;
    if (int32_t e = op_context(fn, {y, x}, &ctx)) return e;
    D8_LAUNCH(axpy_k, n, fptr(y), alpha, fptr(x), n);
  });
}

extern "C" int32_t d8_u8_to_f32(d8_buffer* y, const d8_buffer* x, int64_t n, float scale,
                                float shift) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[48];
    if (int32_t e = check_n(fn, dims, sizeof dims, n, {{"y", y}, {"x", x, 1}})) return e;
    if (x == y) return fail(D8_ERR_INVALID_ARGUMENT, "%s: y and x must be different buffers", fn);
    d8_context* ctx;
    if (int32_t e = op_context(fn, {y, x}, &ctx)) return e;
    D8_LAUNCH(u8_k, n, fptr(y), static_cast<const uint8_t*>(x->data), n, scale, shift);
  });
}

extern "C" int32_t d8_relu_fwd(d8_buffer* y, const d8_buffer* x, int64_t n) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[48];
    if (int32_t e = check_n(fn, dims, sizeof dims, n, {{"y", y}, {"x", x}})) return e;
    d8_context* ctx;
    if (int32_t e = op_context(fn, {y, x}, &ctx)) return e;
    D8_LAUNCH(relu_k, n, fptr(y), fptr(x), n);
  });
}

extern "C" int32_t d8_relu_bwd(d8_buffer* dx, const d8_buffer* dy, const d8_buffer* y, int64_t n) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[48];
    if (int32_t e = check_n(fn, dims, sizeof dims, n, {{"dx", dx}, {"dy", dy}, {"y", y}})) return e;
    d8_context* ctx;
    if (int32_t e = op_context(fn, {dx, dy, y}, &ctx)) return e;
    D8_LAUNCH(relu_bwd_k, n, fptr(dx), fptr(dy), fptr(y), n);
  });
}

namespace {
int32_t check_concat(const char* fn, char* dims, size_t cap, int64_t rows, int32_t ca,
                     int32_t cb) {
  snprintf(dims, cap, "rows=%lld,ca=%d,cb=%d", static_cast<long long>(rows), ca, cb);
  if (rows < 1 || ca < 1 || cb < 1)
    return fail(D8_ERR_INVALID_ARGUMENT, "%s: rows, ca and cb must be positive (%s)", fn, dims);
  return D8_OK;
}
}  // namespace

extern "C" int32_t d8_concat_channels(d8_buffer* y, const d8_buffer* a, const d8_buffer* b,
                                      int64_t rows, int32_t ca, int32_t cb) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[96];
    if (int32_t e = check_concat(fn, dims, sizeof dims, rows, ca, cb)) return e;
    const int64_t c = int64_t{ca} + cb;
    if (int32_t e = check_buffers(fn, dims, {{"y", y, mul64(rows, c, 4)},
                                             {"a", a, mul64(rows, ca, 4)},
                                             {"b", b, mul64(rows, cb, 4)}}))
      return e;
    if (y == a || y == b) return fail(D8_ERR_INVALID_ARGUMENT, "%s: y must not alias a or b", fn);
    d8_context* ctx;
    if (int32_t e = op_context(fn, {y, a, b}, &ctx)) return e;
    D8_LAUNCH(concat_k<false>, rows * c, fptr(y), fptr(a), fptr(b), rows, ca, cb);
  });
}

extern "C" int32_t d8_split_channels(d8_buffer* da, d8_buffer* db, const d8_buffer* dy,
                                     int64_t rows, int32_t ca, int32_t cb) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[96];
    if (int32_t e = check_concat(fn, dims, sizeof dims, rows, ca, cb)) return e;
    const int64_t c = int64_t{ca} + cb;
    if (int32_t e = check_buffers(fn, dims, {{"da", da, mul64(rows, ca, 4)},
                                             {"db", db, mul64(rows, cb, 4)},
                                             {"dy", dy, mul64(rows, c, 4)}}))
      return e;
    if (da == dy || db == dy || da == db)
      return fail(D8_ERR_INVALID_ARGUMENT, "%s: da, db and dy must be different buffers", fn);
    d8_context* ctx;
    if (int32_t e = op_context(fn, {da, db, dy}, &ctx)) return e;
    D8_LAUNCH(concat_k<true>, rows * c, fptr(dy), fptr(da), fptr(db), rows, ca, cb);
  });
}

extern "C" int32_t d8_sgd_step(d8_buffer* w, d8_buffer* momentum_buf, d8_buffer* nonfinite,
                               const d8_buffer* grad, int64_t n, float lr, float momentum,
                               float weight_decay, int32_t nesterov) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[48];
    snprintf(dims, sizeof dims, "n=%lld", static_cast<long long>(n));
    if (n < 0) return fail(D8_ERR_INVALID_ARGUMENT, "%s: n must be non-negative (%s)", fn, dims);
    if (int32_t e = check_buffer(fn, "w", w, mul64(n, 4), dims)) return e;
    if (int32_t e = check_buffer(fn, "grad", grad, mul64(n, 4), dims)) return e;
    const bool use_mom = momentum != 0.0f;
    if (use_mom || momentum_buf)
      if (int32_t e = check_buffer(fn, "momentum_buf", momentum_buf, mul64(n, 4), dims)) return e;
    if (nonfinite)
      if (int32_t e = check_buffer(fn, "nonfinite", nonfinite, 4, dims)) return e;
    d8_context* ctx;
    if (int32_t e = op_context(fn, {w, momentum_buf, nonfinite, grad}, &ctx)) return e;
    const int mode = !use_mom ? 0 : nesterov ? 2 : 1;
    D8_LAUNCH(sgd_k, n, fptr(w), momentum_buf ? fptr(momentum_buf) : nullptr,
              nonfinite ? static_cast<unsigned*>(nonfinite->data) : nullptr, fptr(grad), n, lr,
              momentum, weight_decay, mode);
  });
}

extern "C" int32_t d8_relu_fwd_mask(d8_buffer* y, d8_buffer* mask, const d8_buffer* x,
                                    int64_t n) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[48];
    if (int32_t e = check_n(fn, dims, sizeof dims, n, {{"y", y}, {"x", x}})) return e;
    const int64_t nb = (n + 7) / 8;
    if (int32_t e = check_buffer(fn, "mask", mask, nb, dims)) return e;
    if (mask == x || mask == y)
      return fail(D8_ERR_INVALID_ARGUMENT, "%s: mask must not be the same buffer as x or y", fn);
    d8_context* ctx;
    if (int32_t e = op_context(fn, {y, mask, x}, &ctx)) return e;
    D8_LAUNCH(relu_mask_k, nb, fptr(y), static_cast<uint8_t*>(mask->data), fptr(x), n, 0.0f);
  });
}

extern "C" int32_t d8_relu_bwd_mask(d8_buffer* dx, const d8_buffer* dy, const d8_buffer* mask,
                                    int64_t n) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[48];
    if (int32_t e = check_n(fn, dims, sizeof dims, n, {{"dx", dx}, {"dy", dy}})) return e;
    const int64_t nb = (n + 7) / 8;
    if (int32_t e = check_buffer(fn, "mask", mask, nb, dims)) return e;
    if (mask == dx || mask == dy)
      return fail(D8_ERR_INVALID_ARGUMENT, "%s: mask must not be the same buffer as dx or dy", fn);
    d8_context* ctx;
    if (int32_t e = op_context(fn, {dx, dy, mask}, &ctx)) return e;
    D8_LAUNCH(relu_mask_bwd_k, n, fptr(dx), fptr(dy), static_cast<const uint8_t*>(mask->data), n);
  });
}
