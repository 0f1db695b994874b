// quant.cu: INT8 quantization on the device (PAPER.md): d8_quantize_i8, d8_quantize_i8_dual,
// d8_dequantize_i8, d8_absmax_f32, d8_channel_stats_f32.
//
// Bit-exact with the cpu backend (kernels/cpu/quant.cpp states the contract):
//   inv = 127 / s in f32 (0 when s <= 0 or s is not finite), v = clamp(x * inv, -127, 127),
//   NaN -> 0; nearest = half away from zero; stochastic = min(floor(v + u), 127) with
//   u = (h >> 8) * 2^-24, h = mix32(mix32(uint32(i) ^ k0) + k1), (k0, k1) = the halves of
//   splitmix64(seed ^ splitmix64(i >> 32)), i the flat element index.
// Every float operation is an explicitly rounded intrinsic (__fmul_rn, __fadd_rn): nvcc would
// otherwise be free to contract, and the cpu build does not.
// absmax is an exact max (order-free). channel_stats sums in double per fixed row block and
// combines the blocks in order (deterministic; equal to the cpu's to double rounding, not bits).
#include "common.cuh"

#include <cfloat>
#include <cstdio>

using namespace d8cuda;

namespace {

__host__ __device__ inline uint64_t splitmix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
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
__device__ inline float uniform(uint64_t seed, uint64_t i) {
  const uint64_t z = splitmix64(seed ^ splitmix64(i >> 32));
  const uint32_t h = mix32(mix32(static_cast<uint32_t>(i) ^ static_cast<uint32_t>(z)) +
                           static_cast<uint32_t>(z >> 32));
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
                           const float* clips, int layout, int stoch, uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float s = layout == 0 ? clips[0] : layout == 1 ? clips[i % inner] : clips[i / inner];
    y[i] = quant1(x[i], inv_of(s), stoch ? uniform(seed, static_cast<uint64_t>(i)) : -1.0f);
  }
}

__global__ void quantize_dual_k(int8_t* yt, int8_t* yc, const float* x, int64_t total,
                                int channels, const float* clip_t, const float* clips_c,
                                int stoch, uint64_t seed) {
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
constexpr int kBlock = 256;

}  // namespace

extern "C" int32_t d8_quantize_i8(d8_buffer* y, const d8_buffer* x, int64_t outer, int32_t inner,
                                  const d8_buffer* clips, int32_t layout, int32_t rounding,
                                  uint64_t seed) {
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
                                       uint64_t seed) {
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
        s1, s2, mx, fptr(x), rows, channels, brows);
    stats2_k<<<grid_1d(c, 128), 128, 0, ctx->stream>>>(fptr(out), s1, s2, mx, fptr(x), rows,
                                                       channels, nblocks);
    cudaError_t err = cudaMemsetAsync(cnt, 0, static_cast<size_t>(c) * 8, ctx->stream);
    if (err != cudaSuccess) return cuda_fail(fn, "cudaMemsetAsync", err);
    const unsigned gy = static_cast<unsigned>(nblocks < 64 ? nblocks : 64);
    stats3_k<<<dim3(cb, gy), dim3(32, 8), 0, ctx->stream>>>(cnt, fptr(out), fptr(x), rows,
                                                           channels);
    stats4_k<<<grid_1d(c, 128), 128, 0, ctx->stream>>>(fptr(out), cnt, rows, channels);
    return launch_check(fn, "channel_stats kernels");
  });
}
