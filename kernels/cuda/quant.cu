// quant.cu: INT8 quantization on the device (PAPER.md): d8_quantize_i8, d8_quantize_i8_dual,
// d8_dequantize_i8, d8_absmax_f32, d8_quantize_i8_maxscale, d8_channel_stats_f32, and the
// quantizer decision d8_quant_decide with d8_quant_error.
//
// Bit-exact with the cpu backend (kernels/cpu/quant.cpp states the contract):
//   inv = 127 / s in f32 (0 when s <= 0 or s is not finite), v = clamp(x * inv, -127, 127),
//   NaN -> 0; nearest = half away from zero; stochastic = min(floor(v + u), 127) with
//   u = (h >> 8) * 2^-24, h = mix32(mix32(lo ^ k0) + k1), k0 = mix32(seed ^ 0x9e3779b9),
//   k1 = mix32(k0 + hi * 0x85ebca6b + 0x632be5ab), lo / hi the halves of the flat index i.
// Every float operation is an explicitly rounded intrinsic (__fmul_rn, __fadd_rn): nvcc would
// otherwise be free to contract, and the cpu build does not.
// absmax is an exact max (order-free). channel_stats sums in double per fixed row block and
// combines the blocks in order (deterministic; equal to the cpu's to double rounding, not bits).
#include "common.cuh"

#include <cfloat>
#include <cmath>
#include <cstdio>

using namespace d8cuda;

namespace {

__device__ inline uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}
__device__ inline float inv_of(float s) {
  return (s > 0.0f && s <= FLT_MAX) ? __fdiv_rn(127.0f, s) : 0.0f;
}
__device__ inline float scale_of(float s) {
  return (s > 0.0f && s <= FLT_MAX) ? __fdiv_rn(s, 127.0f) : 0.0f;
}

// u in [0, 1) of flat element i.
__device__ inline float uniform(uint32_t seed, uint64_t i) {
  const uint32_t k0 = mix32(seed ^ 0x9e3779b9u);
  const uint32_t k1 = mix32(k0 + static_cast<uint32_t>(i >> 32) * 0x85ebca6bu + 0x632be5abu);
  const uint32_t h = mix32(mix32(static_cast<uint32_t>(i) ^ k0) + k1);
  return __fmul_rn(static_cast<float>(h >> 8), 1.0f / 16777216.0f);
}

// One element; u < 0: nearest.
__device__ inline int8_t quant1(float x, float inv, float u) {
  float v = __fmul_rn(x, inv);
  v = v == v ? v : 0.0f;
  v = fminf(fmaxf(v, -127.0f), 127.0f);
  int32_t t;
  if (u >= 0.0f) {
    const float f = __fadd_rn(v, u);
    t = static_cast<int32_t>(floorf(f));
    t = t > 127 ? 127 : t;
  } else {
    t = static_cast<int32_t>(v);                  // trunc
    const float d = __fsub_rn(v, static_cast<float>(t));
    t += static_cast<int32_t>(__fadd_rn(d, d));  // +-1 when |d| >= 0.5
  }
  return static_cast<int8_t>(t);
}

// layout: 0 tensor, 1 inner (clips[i % inner]), 2 outer (clips[i / inner]).
__global__ void quantize_k(int8_t* y, const float* x, int64_t total, int inner,
                           const float* clips, int layout, int stoch, uint32_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float s = layout == 0 ? clips[0] : layout == 1 ? clips[i % inner] : clips[i / inner];
    y[i] = quant1(x[i], inv_of(s), stoch ? uniform(seed, static_cast<uint64_t>(i)) : -1.0f);
  }
}

__global__ void quantize_dual_k(int8_t* yt, int8_t* yc, const float* x, int64_t total,
                                int channels, const float* clip_t, const float* clips_c,
                                int stoch, uint32_t seed) {
  const float invt = inv_of(clip_t[0]);
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float u = stoch ? uniform(seed, static_cast<uint64_t>(i)) : -1.0f;
    const float xi = x[i];
    yt[i] = quant1(xi, invt, u);
    yc[i] = quant1(xi, inv_of(clips_c[i % channels]), u);
  }
}

__global__ void dequantize_k(float* y, const int8_t* q, int64_t total, int inner,
                             const float* clips, int layout) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float s = layout == 0 ? clips[0] : layout == 1 ? clips[i % inner] : clips[i / inner];
    y[i] = __fmul_rn(static_cast<float>(q[i]), scale_of(s));
  }
}

// max |x| (NaN ignored, like the cpu's std::max(m, NaN) = m): non-negative floats order as their
// bit patterns, so an unsigned atomicMax is exact.
__global__ void absmax_k(unsigned* out, const float* x, int64_t n) {
  float m = 0.0f;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float a = fabsf(x[i]);
    m = a > m ? a : m;
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float b = __shfl_down_sync(0xffffffffu, m, o);
    m = b > m ? b : m;
  }
  if ((threadIdx.x & 31) == 0) atomicMax(out, __float_as_uint(m));
}

// Channel statistics, pass 1: per block of rows (blockIdx.y) and 32 channels (blockIdx.x,
// threadIdx.x), 8 row lanes (threadIdx.y) summing (x - x0) and (x - x0)^2 in double and max |x|;
// the 8 lanes are combined in order.
constexpr int kStatLanes = 8;
__global__ void stats1_k(double* s1, double* s2, float* mx, const float* x, int64_t rows, int c,
                         int64_t brows) {
  __shared__ double a1[kStatLanes][32], a2[kStatLanes][32];
  __shared__ float am[kStatLanes][32];
  const int ch = blockIdx.x * 32 + threadIdx.x;
  const int64_t bl = blockIdx.y;
  const int64_t r0 = bl * brows, r1 = r0 + brows < rows ? r0 + brows : rows;
  double t1 = 0.0, t2 = 0.0;
  float m = 0.0f;
  if (ch < c) {
    const double x0 = x[ch];
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kStatLanes) {
      const float v = x[r * c + ch];
      const double d = static_cast<double>(v) - x0;
      t1 += d;
      t2 += d * d;
      const float a = fabsf(v);
      m = a > m ? a : m;
    }
  }
  a1[threadIdx.y][threadIdx.x] = t1;
  a2[threadIdx.y][threadIdx.x] = t2;
  am[threadIdx.y][threadIdx.x] = m;
  __syncthreads();
  if (threadIdx.y == 0 && ch < c) {
    for (int l = 1; l < kStatLanes; ++l) {
      t1 += a1[l][threadIdx.x];
      t2 += a2[l][threadIdx.x];
      m = am[l][threadIdx.x] > m ? am[l][threadIdx.x] : m;
    }
    s1[bl * c + ch] = t1;
    s2[bl * c + ch] = t2;
    mx[bl * c + ch] = m;
  }
}

// Pass 2 (one thread per channel): blocks in order -> max, std, mean.
__global__ void stats2_k(float* out, const double* s1, const double* s2, const float* mx,
                         const float* x, int64_t rows, int c, int64_t nblocks) {
  const int ch = blockIdx.x * blockDim.x + threadIdx.x;
  if (ch >= c) return;
  double t1 = 0.0, t2 = 0.0;
  float m = 0.0f;
  for (int64_t b = 0; b < nblocks; ++b) {
    t1 += s1[b * c + ch];
    t2 += s2[b * c + ch];
    m = mx[b * c + ch] > m ? mx[b * c + ch] : m;
  }
  const double mean_d = t1 / static_cast<double>(rows);
  double var = t2 / static_cast<double>(rows) - mean_d * mean_d;
  var = var > 0.0 ? var : 0.0;
  out[ch] = m;
  out[c + ch] = static_cast<float>(sqrt(var));
  out[3 * c + ch] = static_cast<float>(static_cast<double>(x[ch]) + mean_d);
}

// Pass 3: count |x| > std per channel (exact integers, order-free).
__global__ void stats3_k(unsigned long long* cnt, const float* out, const float* x, int64_t rows,
                         int c) {
  const int ch = blockIdx.x * 32 + threadIdx.x;
  if (ch >= c) return;
  const float sd = out[c + ch];
  unsigned long long n = 0;
  for (int64_t r = blockIdx.y * int64_t{blockDim.y} + threadIdx.y; r < rows;
       r += int64_t{gridDim.y} * blockDim.y)
    n += fabsf(x[r * c + ch]) > sd ? 1 : 0;
  atomicAdd(cnt + ch, n);
}
__global__ void stats4_k(float* out, const unsigned long long* cnt, int64_t rows, int c) {
  const int ch = blockIdx.x * blockDim.x + threadIdx.x;
  if (ch < c)
    out[2 * c + ch] = static_cast<float>(static_cast<double>(cnt[ch]) / static_cast<double>(rows));
}

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
// The statistics kernels on ctx's stream: out f32 [4, channels] of x [rows, channels].
int32_t channel_stats_dev(const char* fn, d8_context* ctx, float* out, const float* x,
                          int64_t rows, int32_t channels) {
    const int64_t c = channels;
    const int64_t nblocks = rows < 256 * 256 ? ceil_div(rows, 256) : 256;
    const int64_t brows = ceil_div(rows, nblocks);
    Scratch sc;
    const size_t bytes = static_cast<size_t>(nblocks * c * (8 + 8 + 4) + c * 8 + 64);
    if (int32_t e = sc.get(fn, ctx, bytes)) return e;
    double* s1 = sc.as<double>();
    double* s2 = s1 + nblocks * c;
    unsigned long long* cnt = reinterpret_cast<unsigned long long*>(s2 + nblocks * c);
    float* mx = reinterpret_cast<float*>(cnt + c);
    const unsigned cb = static_cast<unsigned>(ceil_div(c, 32));
    stats1_k<<<dim3(cb, static_cast<unsigned>(nblocks)), dim3(32, kStatLanes), 0, ctx->stream>>>(
        s1, s2, mx, x, rows, channels, brows);
    stats2_k<<<grid_1d(c, 128), 128, 0, ctx->stream>>>(out, s1, s2, mx, x, rows,
                                                       channels, nblocks);
    cudaError_t err = cudaMemsetAsync(cnt, 0, static_cast<size_t>(c) * 8, ctx->stream);
    if (err != cudaSuccess) return cuda_fail(fn, "cudaMemsetAsync", err);
    const unsigned gy = static_cast<unsigned>(nblocks < 64 ? nblocks : 64);
    stats3_k<<<dim3(cb, gy), dim3(32, 8), 0, ctx->stream>>>(cnt, out, x, rows,
                                                           channels);
    stats4_k<<<grid_1d(c, 128), 128, 0, ctx->stream>>>(out, cnt, rows, channels);
  return launch_check(fn, "channel_stats kernels");
}

constexpr int kBlock = 256;

}  // namespace

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
    if (int32_t e = check_buffer(fn, "clips", clips,
                                 mul64(clip_count(layout, outer, inner), 4), dims))
      return e;
    if (int32_t e = check_distinct(fn, "y", y, "x", x)) return e;
    if (int32_t e = check_distinct(fn, "y", y, "clips", clips)) return e;
    d8_context* ctx;
    if (int32_t e = op_context(fn, {y, x, clips}, &ctx)) return e;
    if (total == 0) return D8_OK;
    quantize_k<<<grid_1d(total, kBlock), kBlock, 0, ctx->stream>>>(
        i8ptr(y), fptr(x), total, inner, fptr(clips), layout,
        rounding == D8_ROUND_STOCHASTIC, seed);
    return launch_check(fn, "quantize_k");
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
    d8_context* ctx;
    if (int32_t e = op_context(fn, {y_tensor, y_channel, x, clip_tensor, clips_channel}, &ctx))
      return e;
    if (total == 0) return D8_OK;
    quantize_dual_k<<<grid_1d(total, kBlock), kBlock, 0, ctx->stream>>>(
        i8ptr(y_tensor), i8ptr(y_channel), fptr(x), total, channels, fptr(clip_tensor),
        fptr(clips_channel), rounding == D8_ROUND_STOCHASTIC, seed);
    return launch_check(fn, "quantize_dual_k");
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
    if (int32_t e = check_buffer(fn, "clips", clips,
                                 mul64(clip_count(layout, outer, inner), 4), dims))
      return e;
    if (int32_t e = check_distinct(fn, "y", y, "q", q)) return e;
    if (int32_t e = check_distinct(fn, "y", y, "clips", clips)) return e;
    d8_context* ctx;
    if (int32_t e = op_context(fn, {y, q, clips}, &ctx)) return e;
    if (total == 0) return D8_OK;
    dequantize_k<<<grid_1d(total, kBlock), kBlock, 0, ctx->stream>>>(fptr(y), i8ptr(q), total,
                                                                     inner, fptr(clips), layout);
    return launch_check(fn, "dequantize_k");
  });
}

extern "C" int32_t d8_absmax_f32(d8_buffer* out, const d8_buffer* x, int64_t n) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[48];
    snprintf(dims, sizeof dims, "n=%lld", static_cast<long long>(n));
    if (n < 0) return fail(D8_ERR_INVALID_ARGUMENT, "%s: n must be non-negative (%s)", fn, dims);
    if (int32_t e = check_buffer(fn, "out", out, 4, dims)) return e;
    if (int32_t e = check_buffer(fn, "x", x, mul64(n, 4), dims)) return e;
    d8_context* ctx;
    if (int32_t e = op_context(fn, {out, x}, &ctx)) return e;
    cudaError_t err = cudaMemsetAsync(out->data, 0, 4, ctx->stream);
    if (err != cudaSuccess) return cuda_fail(fn, "cudaMemsetAsync", err);
    if (n == 0) return D8_OK;
    absmax_k<<<grid_1d(n, kBlock, 2048), kBlock, 0, ctx->stream>>>(
        static_cast<unsigned*>(out->data), fptr(x), n);
    return launch_check(fn, "absmax_k");
  });
}

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
    d8_context* ctx;
    if (int32_t e = op_context(fn, {out, x}, &ctx)) return e;
    return channel_stats_dev(fn, ctx, fptr(out), fptr(x), rows, channels);
  });
}

// ---- max-clip quantization with its own scale ------------------------------------------------
namespace {

__device__ inline float block_max(float v, float* sh) {
  for (int o = 16; o > 0; o >>= 1) {
    const float b = __shfl_down_sync(0xffffffffu, v, o);
    v = b > v ? b : v;
  }
  if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    v = threadIdx.x < (blockDim.x >> 5) ? sh[threadIdx.x] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) {
      const float b = __shfl_down_sync(0xffffffffu, v, o);
      v = b > v ? b : v;
    }
    if (threadIdx.x == 0) sh[0] = v;
  }
  __syncthreads();
  const float r = sh[0];
  __syncthreads();
  return r;
}

// One block per row o: s = max |x[o, :]|, scale[o] = s / 127, y[o, :] = nearest(x * 127 / s).
__global__ void maxscale_rows_k(int8_t* y, float* scale, const float* x, int inner) {
  __shared__ float sh[32];
  const int64_t o = blockIdx.x;
  const float* xr = x + o * inner;
  float m = 0.0f;
  for (int i = threadIdx.x; i < inner; i += blockDim.x) {
    const float a = fabsf(xr[i]);
    m = a > m ? a : m;
  }
  const float s = block_max(m, sh);
  if (threadIdx.x == 0) scale[o] = scale_of(s);
  const float inv = inv_of(s);
  for (int i = threadIdx.x; i < inner; i += blockDim.x) y[o * inner + i] = quant1(xr[i], inv, -1.0f);
}

// Tensor layout: s = the absmax bits (absmax_k), scale[0] = s / 127, y = nearest(x * 127 / s).
__global__ void maxscale_tensor_k(int8_t* y, float* scale, const float* x, int64_t n,
                                  const unsigned* bits) {
  const float s = __uint_as_float(bits[0]);
  if (blockIdx.x == 0 && threadIdx.x == 0) scale[0] = scale_of(s);
  const float inv = inv_of(s);
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    y[i] = quant1(x[i], inv, -1.0f);
}

}  // namespace

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
    if (int32_t e = check_buffer(fn, "scale", scale, mul64(nsc > 1 ? nsc : 1, 4), dims)) return e;
    if (int32_t e = check_distinct(fn, "y", y, "x", x)) return e;
    if (int32_t e = check_distinct(fn, "scale", scale, "x", x)) return e;
    if (int32_t e = check_distinct(fn, "scale", scale, "y", y)) return e;
    d8_context* ctx;
    if (int32_t e = op_context(fn, {y, scale, x}, &ctx)) return e;
    if (layout == D8_SCALE_OUTER) {
      if (outer == 0) return D8_OK;
      if (outer > 0x7fffffffLL) return fail(D8_ERR_UNSUPPORTED, "%s: too many rows (%s)", fn, dims);
      maxscale_rows_k<<<static_cast<unsigned>(outer), kBlock, 0, ctx->stream>>>(
          i8ptr(y), fptr(scale), fptr(x), inner);
      return launch_check(fn, "maxscale_rows_k");
    }
    Scratch sc;
    if (int32_t e = sc.get(fn, ctx, 4)) return e;
    cudaError_t err = cudaMemsetAsync(sc.as<unsigned>(), 0, 4, ctx->stream);
    if (err != cudaSuccess) return cuda_fail(fn, "cudaMemsetAsync", err);
    if (total > 0)
      absmax_k<<<grid_1d(total, kBlock, 2048), kBlock, 0, ctx->stream>>>(sc.as<unsigned>(),
                                                                         fptr(x), total);
    maxscale_tensor_k<<<grid_1d(total > 0 ? total : 1, kBlock), kBlock, 0, ctx->stream>>>(
        i8ptr(y), fptr(scale), fptr(x), total, sc.as<unsigned>());
    return launch_check(fn, "maxscale kernels");
  });
}

// ---- the quantizer decision --------------------------------------------------------------------
// Same steps and f32 formulas as the cpu (kernels/cpu/quant.cpp, d8_quant_decide), each float
// operation an explicitly rounded intrinsic. Kernels on the stream, no host read:
//   1. channel statistics of dy into stats (channel_stats_dev);
//   2. DSGC only: dsgc_k, per block of 4096 elements, f64 sums of x*x and, per candidate clip,
//      x*q and q*q (it reads the step and gmax itself and does nothing on non-refresh steps);
//   3. decide_k, one block: EMA, classes, counters, the DSGC choice (blocks summed in order per
//      candidate), clips, scales, record, step + 1.
// Differences from the cpu: the statistics' f64 sums and the DSGC f64 sums are added in another
// order (equal to double rounding, so a clip can differ in its last bit when it depends on the
// standard deviation), and record[1] (channel clip mean, a log) sums in a tree.
namespace {

constexpr int64_t kDsgcBlock = 4096;

__device__ inline uint64_t get_u64(const uint32_t* w) { return uint64_t{w[0]} | (uint64_t{w[1]} << 32); }
__device__ inline void put_u64(uint32_t* w, uint64_t v) {
  w[0] = static_cast<uint32_t>(v);
  w[1] = static_cast<uint32_t>(v >> 32);
}
__device__ inline float lerp_ratio(float lo, int i, int n) {
  if (n == 1) return 1.0f;
  const float t = __fdiv_rn(static_cast<float>(i), static_cast<float>(n - 1));
  return __fadd_rn(lo, __fmul_rn(__fsub_rn(1.0f, lo), t));
}
__device__ inline float fmin_cpu(float a, float b) { return b < a ? b : a; }  // std::min(a, b)
__device__ inline float table_lookup(const float* row, int size, float pos) {
  int64_t i0 = static_cast<int64_t>(pos);
  if (i0 > size - 2) i0 = size - 2;
  const float frac = fmin_cpu(__fsub_rn(pos, static_cast<float>(i0)), 1.0f);
  const float a = row[i0], b = row[i0 + 1];
  return __fadd_rn(a, __fmul_rn(__fsub_rn(b, a), frac));
}
__device__ inline float gmax_of(const float* mx, int c) {
  float g = 0.0f;
  for (int i = 0; i < c; ++i) g = mx[i] > g ? mx[i] : g;
  return g;
}

// part[bl * (1 + 2 nc) + ...]: gg, then (dot, qq) per candidate.
__global__ void dsgc_k(double* part, const float* x, int64_t n, const float* stats,
                       const uint32_t* state, d8_quant_knobs kn) {
  if (get_u64(state) % static_cast<uint64_t>(kn.stats_period) != 0) return;
  __shared__ double red[kBlock];
  __shared__ float gm;
  if (threadIdx.x == 0) gm = gmax_of(stats, kn.channels);
  __syncthreads();
  const int nc = kn.dsgc_candidates;
  const int64_t stride = 1 + 2 * int64_t{nc};
  const int64_t i0 = blockIdx.x * kDsgcBlock, i1 = i0 + kDsgcBlock < n ? i0 + kDsgcBlock : n;
  auto reduce = [&](double v) -> double {
    red[threadIdx.x] = v;
    __syncthreads();
    for (int s = kBlock / 2; s > 0; s >>= 1) {
      if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
      __syncthreads();
    }
    const double r = red[0];
    __syncthreads();
    return r;
  };
  double gg = 0.0;
  for (int64_t i = i0 + threadIdx.x; i < i1; i += kBlock) gg += static_cast<double>(x[i]) * x[i];
  gg = reduce(gg);
  if (threadIdx.x == 0) part[blockIdx.x * stride] = gg;
  for (int c = 0; c < nc; ++c) {
    const float clip = __fmul_rn(lerp_ratio(kn.dsgc_min_ratio, c, nc), gm);
    const float inv = inv_of(clip), sc = scale_of(clip);
    double dot = 0.0, qq = 0.0;
    for (int64_t i = i0 + threadIdx.x; i < i1; i += kBlock) {
      const float q = __fmul_rn(static_cast<float>(quant1(x[i], inv, -1.0f)), sc);
      dot += static_cast<double>(x[i]) * q;
      qq += static_cast<double>(q) * q;
    }
    dot = reduce(dot);
    qq = reduce(qq);
    if (threadIdx.x == 0) {
      part[blockIdx.x * stride + 1 + 2 * c] = dot;
      part[blockIdx.x * stride + 2 + 2 * c] = qq;
    }
  }
}

__global__ void decide_k(uint32_t* w, float* clip_t, float* scale_t, float* clips_c,
                         float* scales_c, float* rec, const float* stats, const double* part,
                         int64_t nb, const float* table, d8_quant_knobs kn) {
  __shared__ float gm;
  __shared__ int refresh_s;
  __shared__ float ratio_s;
  __shared__ double dist[64];
  __shared__ unsigned long long bells_s;
  __shared__ double sum_s[kBlock];
  __shared__ float min_s[kBlock], max_s[kBlock];
  const int C = kn.channels, tid = threadIdx.x;
  float* wf = reinterpret_cast<float*>(w);
  float* ema = wf + D8_QSTATE_HEADER;
  uint32_t* bell = w + D8_QSTATE_HEADER + C;
  const float* mx = stats;
  const float* sd = stats + C;
  const float* share = stats + 2 * int64_t{C};
  const uint64_t step = get_u64(w);
  const bool first = w[8] == 0;
  if (tid == 0) {
    gm = gmax_of(mx, C);
    refresh_s = step % static_cast<uint64_t>(kn.stats_period) == 0;
    bells_s = 0;
  }
  __syncthreads();
  const bool refresh = refresh_s != 0;
  const float keep = __fsub_rn(1.0f, __fmul_rn(kn.k, kn.a));
  unsigned long long bells = 0;
  for (int c = tid; c < C; c += kBlock) {
    if (first) {
      ema[c] = mx[c];
      bell[c] = 1u;
    } else {
      ema[c] = __fadd_rn(__fmul_rn(keep, ema[c]), __fmul_rn(kn.a, mx[c]));
    }
    if (refresh) {
      bell[c] = share[c] > kn.lambda ? 1u : 0u;
      bells += bell[c];
    }
  }
  if (refresh) atomicAdd(&bells_s, bells);
  __syncthreads();
  if (tid == 0) {
    if (first) w[8] = 1u;
    if (refresh) {
      put_u64(w + 2, get_u64(w + 2) + bells_s);
      put_u64(w + 4, get_u64(w + 4) + static_cast<uint64_t>(C));
    }
    ratio_s = wf[6] > 0.0f ? wf[6] : 1.0f;
  }
  const int nc = kn.dsgc_candidates;
  if (kn.clip == D8_CLIP_DSGC && refresh) {
    const int64_t stride = 1 + 2 * int64_t{nc};
    if (tid < nc) {
      double gg = 0.0, dot = 0.0, qq = 0.0;
      for (int64_t b = 0; b < nb; ++b) {
        gg += part[b * stride];
        dot += part[b * stride + 1 + 2 * tid];
        qq += part[b * stride + 2 + 2 * tid];
      }
      const float clip = __fmul_rn(lerp_ratio(kn.dsgc_min_ratio, tid, nc), gm);
      double d;
      if (!(clip > 0.0f)) d = 1.0;
      else if (gg == 0.0 || qq == 0.0) d = gg == 0.0 ? 0.0 : 1.0;
      else d = 1.0 - dot / sqrt(gg * qq);
      dist[tid] = d;
    }
    __syncthreads();
    if (tid == 0) {
      int best = 0;
      for (int i = 1; i < nc; ++i)
        if (dist[i] < dist[best]) best = i;
      ratio_s = lerp_ratio(kn.dsgc_min_ratio, best, nc);
      wf[6] = ratio_s;
      wf[7] = static_cast<float>(dist[best]);
    }
  }
  __syncthreads();
  const float ratio = ratio_s;
  const float tclip = kn.clip == D8_CLIP_DSGC ? __fmul_rn(ratio, gm) : gm;
  double sum = 0.0;
  float cmin = tclip, cmax = tclip;
  bool any = false;
  if (kn.gvq) {
    const float tmin = __fmul_rn(1.7320508f, 1.001f);
    for (int c = tid; c < C; c += kBlock) {
      const float m = mx[c];
      float s = m;
      if (kn.clip == D8_CLIP_DSGC) {
        s = __fmul_rn(ratio, m);
      } else if (kn.clip == D8_CLIP_MCS) {
        s = bell[c] ? m : fmin_cpu(ema[c], m);
      } else if (kn.clip == D8_CLIP_MCS_SOLVE) {
        const float sig = sd[c];
        if (sig > 0.0f && m > 0.0f) {
          const float r = fmin_cpu(__fdiv_rn(m, sig), kn.table_max);
          const int fam = bell[c] ? 0 : (kn.sharp_inverted_t && r > tmin) ? 2 : 1;
          s = fmin_cpu(m, __fmul_rn(table_lookup(table + fam * int64_t{kn.table_size},
                                                 kn.table_size, __fdiv_rn(r, kn.table_step)),
                                    sig));
        }
      }
      clips_c[c] = s;
      scales_c[c] = scale_of(s);
      sum += s;
      cmin = !any ? s : fmin_cpu(cmin, s);
      cmax = !any ? s : (cmax < s ? s : cmax);
      any = true;
    }
  }
  sum_s[tid] = sum;
  min_s[tid] = any ? cmin : INFINITY;
  max_s[tid] = any ? cmax : -INFINITY;
  __syncthreads();
  for (int s = kBlock / 2; s > 0; s >>= 1) {
    if (tid < s) {
      sum_s[tid] += sum_s[tid + s];
      min_s[tid] = fmin_cpu(min_s[tid], min_s[tid + s]);
      max_s[tid] = max_s[tid] < max_s[tid + s] ? max_s[tid + s] : max_s[tid];
    }
    __syncthreads();
  }
  if (tid == 0) {
    clip_t[0] = tclip;
    scale_t[0] = scale_of(tclip);
    uint64_t nbell = 0;
    for (int c = 0; c < C; ++c) nbell += bell[c];
    rec[0] = tclip;
    rec[1] = kn.gvq ? static_cast<float>(sum_s[0] / static_cast<double>(C)) : tclip;
    rec[2] = kn.gvq ? min_s[0] : tclip;
    rec[3] = kn.gvq ? max_s[0] : tclip;
    rec[4] = gm;
    rec[5] = static_cast<float>(static_cast<double>(nbell) / static_cast<double>(C));
    rec[6] = kn.clip == D8_CLIP_DSGC ? wf[7] : 0.0f;
    put_u64(w, step + 1);
  }
}

// record[7] from per-block (256 rows) f64 sums, combined in block order.
constexpr int64_t kErrRows = 256;
__global__ void qerr_part_k(double* part, const float* x, const int8_t* q, const float* clips,
                            int64_t rows, int channels, int per_channel) {
  __shared__ double a[kBlock], b[kBlock];
  const int64_t r0 = blockIdx.x * kErrRows, r1 = r0 + kErrRows < rows ? r0 + kErrRows : rows;
  double num = 0.0, den = 0.0;
  for (int64_t i = r0 * channels + threadIdx.x; i < r1 * channels; i += kBlock) {
    const int c = static_cast<int>(i % channels);
    const double g = x[i];
    const double d =
        g - static_cast<double>(__fmul_rn(static_cast<float>(q[i]), scale_of(clips[per_channel ? c : 0])));
    num += d * d;
    den += g * g;
  }
  a[threadIdx.x] = num;
  b[threadIdx.x] = den;
  __syncthreads();
  for (int s = kBlock / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) a[threadIdx.x] += a[threadIdx.x + s], b[threadIdx.x] += b[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) part[2 * blockIdx.x] = a[0], part[2 * blockIdx.x + 1] = b[0];
}
__global__ void qerr_sum_k(float* rec, const double* part, int64_t nb) {
  double num = 0.0, den = 0.0;
  for (int64_t b = 0; b < nb; ++b) num += part[2 * b], den += part[2 * b + 1];
  rec[7] = den > 0.0 ? static_cast<float>(sqrt(num / den)) : 0.0f;
}

}  // namespace

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
    d8_context* ctx;
    if (int32_t e = op_context(fn, {state, clip_tensor, scale_tensor, kn.gvq ? clips_channel : nullptr,
                                    kn.gvq ? scales_channel : nullptr, record, stats, dy,
                                    kn.clip == D8_CLIP_MCS_SOLVE ? table : nullptr},
                               &ctx))
      return e;
    if (int32_t e = channel_stats_dev(fn, ctx, fptr(stats), fptr(dy), rows, kn.channels)) return e;
    const int64_t n = rows * C;
    Scratch sc;
    int64_t nb = 0;
    if (kn.clip == D8_CLIP_DSGC) {
      nb = ceil_div(n, kDsgcBlock);
      if (nb > 0x7fffffffLL) return fail(D8_ERR_UNSUPPORTED, "%s: dy too large (%s)", fn, dims);
      if (int32_t e = sc.get(fn, ctx, static_cast<size_t>(nb * (1 + 2 * kn.dsgc_candidates) * 8)))
        return e;
      dsgc_k<<<static_cast<unsigned>(nb), kBlock, 0, ctx->stream>>>(
          sc.as<double>(), fptr(dy), n, fptr(stats), static_cast<const uint32_t*>(state->data), kn);
    }
    decide_k<<<1, kBlock, 0, ctx->stream>>>(
        static_cast<uint32_t*>(state->data), fptr(clip_tensor), fptr(scale_tensor),
        kn.gvq ? fptr(clips_channel) : nullptr, kn.gvq ? fptr(scales_channel) : nullptr,
        fptr(record), fptr(stats), sc.as<double>(), nb,
        table && kn.clip == D8_CLIP_MCS_SOLVE ? fptr(table) : nullptr, kn);
    return launch_check(fn, "decide kernels");
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
    d8_context* ctx;
    if (int32_t e = op_context(fn, {record, x, q, clips}, &ctx)) return e;
    const int64_t nb = rows > 0 ? ceil_div(rows, kErrRows) : 1;
    if (nb > 0x7fffffffLL) return fail(D8_ERR_UNSUPPORTED, "%s: too many rows (%s)", fn, dims);
    Scratch sc;
    if (int32_t e = sc.get(fn, ctx, static_cast<size_t>(nb * 16))) return e;
    qerr_part_k<<<static_cast<unsigned>(nb), kBlock, 0, ctx->stream>>>(
        sc.as<double>(), fptr(x), i8ptr(q), fptr(clips), rows, channels, ncl > 1);
    qerr_sum_k<<<1, 1, 0, ctx->stream>>>(fptr(record), sc.as<double>(), nb);
    return launch_check(fn, "quant_error kernels");
  });
}
