// conv_f32.cu: float32 convolution (fprop, dgrad, wgrad), linear (fwd, dgrad, wgrad) and the bias
// gradient. A true FP32 path: plain FMA (no TF32, no tensor cores), one SGEMM-style tiled kernel
// for all six GEMMs, which differ only in how they read their operands (implicit GEMM: nothing is
// materialized).
//
// GEMM: C[M, N] = sum_k A(m, k) * B(n, k), per group g (Cg = C/G, Kg = K/G, KD = R*S*Cg):
//   fprop:  M = N*P*Q, N = Kg, K = KD = (r, s, c)   A = x gathered (zero padding), B = w rows
//   dgrad:  M = N*H*W, N = Cg, K = R*S*Kg = (r, s, kk)
//           A(m, (r, s, kk)) = dy[img, (h + ph - r) / sh, (w + pw - s) / sw, kk] when the division
//           is exact and in range, else 0; B(c, (r, s, kk)) = w[kk, r, s, c]
//   wgrad:  M = Kg, N = KD, K = N*P*Q (split in chunks, partials summed in a fixed order)
//           A(kk, m) = dy[m, kk], B((r, s, c), m) = x at pixel m's tap (r, s)
//   linear: fwd M = m, N = n, K = k; dgrad M = m, N = k, K = n; wgrad M = n, N = k, K = m (split)
// Tile 64 x 64 x 16, 256 threads, 4 x 4 outputs per thread, double-buffered shared memory.
// Depthwise convolutions (one channel per group) run direct kernels instead (dw_*_k).
#include "common.cuh"

#include <algorithm>
#include <cstdio>

using namespace d8cuda;

namespace {

constexpr int BM = 64, BN = 64, BK = 16, kThreads = 256;
constexpr int64_t kSplitRows = 2048;  // wgrad: reduction rows per split (at most 64 splits)

struct FwdOp {
  const float* x;
  const float* w;
  const float* bias;
  float* y;
  ConvGeom G;
  __device__ int64_t rows() const { return G.m; }
  __device__ int cols() const { return G.kg; }
  __device__ int64_t red() const { return G.kd; }
  __device__ float a(int g, int64_t m, int64_t k) const {
    const int tap = static_cast<int>(k / G.cg), c = static_cast<int>(k % G.cg);
    const int r = tap / G.s, s = tap % G.s;
    const int qq = static_cast<int>(m % G.q), pp = static_cast<int>(m / G.q % G.p);
    const int64_t img = m / (int64_t{G.p} * G.q);
    const int ih = pp * G.sh - G.ph + r, iw = qq * G.sw - G.pw + s;
    if (ih < 0 || ih >= G.h || iw < 0 || iw >= G.w) return 0.0f;
    return x[((img * G.h + ih) * G.w + iw) * G.c + int64_t{g} * G.cg + c];
  }
  __device__ float b(int g, int n, int64_t k) const {
    return w[(int64_t{g} * G.kg + n) * G.kd + k];
  }
  __device__ void store(int g, int64_t m, int n, float v) const {
    const int64_t col = int64_t{g} * G.kg + n;
    y[m * G.k + col] = bias ? __fadd_rn(v, bias[col]) : v;
  }
};

// One GEMM per stride phase, as the INT8 dgrad (mapping at the top of int8_conv.cu): rows are the
// phase's input pixels (h0 + hi*sh, w0 + wi*sw), the reduction only the taps (rr + j*sh,
// ss + l*sw) that reach them, (j, l, kk) in the order of (r, s, kk), so each dx sums the same
// nonzero products in the same order as a reduction over every tap would.
struct DgradOp {
  const float* dy;
  const float* w;
  float* dx;
  ConvGeom G;
  DgradPhase ph;
  bool add;  // D8_CONV_ACCUMULATE: dx += the result (two roundings, as the cpu)
  __device__ int64_t rows() const { return int64_t{G.n} * ph.hp * ph.wp; }
  __device__ int cols() const { return G.cg; }
  __device__ int64_t red() const { return int64_t{ph.nr} * ph.ns * G.kg; }
  __device__ float a(int g, int64_t m, int64_t k) const {
    const int tap = static_cast<int>(k / G.kg), kk = static_cast<int>(k % G.kg);
    const int wi = static_cast<int>(m % ph.wp), hi = static_cast<int>(m / ph.wp % ph.hp);
    const int64_t img = m / (int64_t{ph.hp} * ph.wp);
    const int pp = ph.bh + hi - tap / ph.ns, qq = ph.bw + wi - tap % ph.ns;
    if (pp < 0 || qq < 0 || pp >= G.p || qq >= G.q) return 0.0f;
    return dy[((img * G.p + pp) * G.q + qq) * G.k + int64_t{g} * G.kg + kk];
  }
  __device__ float b(int g, int c, int64_t k) const {
    const int tap = static_cast<int>(k / G.kg), kk = static_cast<int>(k % G.kg);
    const int r = ph.rr + tap / ph.ns * G.sh, s = ph.ss + tap % ph.ns * G.sw;
    return w[(int64_t{g} * G.kg + kk) * G.kd + int64_t{r * G.s + s} * G.cg + c];
  }
  __device__ void store(int g, int64_t m, int c, float v) const {
    const int wi = static_cast<int>(m % ph.wp), hi = static_cast<int>(m / ph.wp % ph.hp);
    const int64_t img = m / (int64_t{ph.hp} * ph.wp);
    const int64_t pix =
        (img * G.h + ph.h0 + int64_t{hi} * G.sh) * G.w + ph.w0 + int64_t{wi} * G.sw;
    float* o = dx + pix * G.c + int64_t{g} * G.cg + c;
    *o = add ? __fadd_rn(*o, v) : v;
  }
};

// Split-K over the pixels: partial[split][K][KD].
struct WgradOp {
  const float* x;
  const float* dy;
  float* part;
  ConvGeom G;
  __device__ int64_t rows() const { return G.kg; }
  __device__ int cols() const { return G.kd; }
  __device__ int64_t red() const { return G.m; }
  __device__ float a(int g, int64_t kk, int64_t m) const {
    return dy[m * G.k + int64_t{g} * G.kg + kk];
  }
  __device__ float b(int g, int n, int64_t m) const {
    const int tap = n / G.cg, c = n % G.cg;
    const int r = tap / G.s, s = tap % G.s;
    const int qq = static_cast<int>(m % G.q), pp = static_cast<int>(m / G.q % G.p);
    const int64_t img = m / (int64_t{G.p} * G.q);
    const int ih = pp * G.sh - G.ph + r, iw = qq * G.sw - G.pw + s;
    if (ih < 0 || ih >= G.h || iw < 0 || iw >= G.w) return 0.0f;
    return x[((img * G.h + ih) * G.w + iw) * G.c + int64_t{g} * G.cg + c];
  }
  __device__ void store(int g, int64_t kk, int n, float v, int split) const {
    part[(int64_t{split} * G.k + int64_t{g} * G.kg + kk) * G.kd + n] = v;
  }
};

// Linear as a GEMM with strided operands: A(i, j) = a[i*ra + j*ca], B(col, j) = b[col*rb + j*cb].
struct GemmOp {
  const float* a_;
  const float* b_;
  const float* bias;
  float* c_;
  int64_t m;
  int n;
  int64_t k;
  int64_t ra, ca, rb, cb;
  __device__ int64_t rows() const { return m; }
  __device__ int cols() const { return n; }
  __device__ int64_t red() const { return k; }
  __device__ float a(int, int64_t i, int64_t j) const { return a_[i * ra + j * ca]; }
  __device__ float b(int, int col, int64_t j) const { return b_[col * rb + j * cb]; }
  __device__ void store(int, int64_t i, int col, float v) const {
    c_[i * n + col] = bias ? __fadd_rn(v, bias[col]) : v;
  }
  __device__ void store(int, int64_t i, int col, float v, int split) const {
    c_[(int64_t{split} * m + i) * n + col] = v;
  }
};

// blockIdx.z = group * splits + split; Split: reduction range [split*len, (split+1)*len).
template <class Op, bool Split>
__global__ void __launch_bounds__(kThreads) sgemm_k(Op op, int splits, int64_t split_len) {
  __shared__ float As[2][BK][BM + 4];
  __shared__ float Bs[2][BK][BN + 4];
  const int g = blockIdx.z / splits, split = blockIdx.z % splits;
  const int64_t m0 = blockIdx.x * int64_t{BM};
  const int n0 = blockIdx.y * BN;
  const int64_t M = op.rows();
  const int N = op.cols();
  int64_t k_begin = 0, k_end = op.red();
  if (Split) {
    k_begin = split * split_len;
    k_end = k_begin + split_len < k_end ? k_begin + split_len : k_end;
  }
  const int tid = threadIdx.x;
  const int tx = tid % 16, ty = tid / 16;  // 16 x 16 threads, 4 x 4 outputs each
  float acc[4][4] = {};
  // Loader: element e = tid + i*256 of the 64 x 16 tile; row = e / 16, kk = e % 16.
  float ra[4], rb[4];
  auto load = [&](int64_t k0) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int e = tid + i * kThreads, row = e / BK, kk = e % BK;
      const int64_t k = k0 + kk;
      const int64_t m = m0 + row;
      ra[i] = (m < M && k < k_end) ? op.a(g, m, k) : 0.0f;
      const int n = n0 + row;
      rb[i] = (n < N && k < k_end) ? op.b(g, n, k) : 0.0f;
    }
  };
  auto stash = [&](int buf) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int e = tid + i * kThreads, row = e / BK, kk = e % BK;
      As[buf][kk][row] = ra[i];
      Bs[buf][kk][row] = rb[i];
    }
  };
  int buf = 0;
  load(k_begin);
  stash(0);
  __syncthreads();
  for (int64_t k0 = k_begin; k0 < k_end; k0 += BK) {
    const bool more = k0 + BK < k_end;
    if (more) load(k0 + BK);
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      float av[4], bv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) av[i] = As[buf][kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) bv[j] = Bs[buf][kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    if (more) {
      stash(buf ^ 1);
      __syncthreads();
      buf ^= 1;
    }
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t m = m0 + ty + 16 * i;
    if (m >= M) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int n = n0 + tx + 16 * j;
      if (n >= N) continue;
      if constexpr (Split)
        op.store(g, m, n, acc[i][j], split);
      else
        op.store(g, m, n, acc[i][j]);
    }
  }
}

// out[i] = sum over splits of part[s][i], in split order.
__global__ void reduce_splits_k(float* out, const float* part, int64_t n, int splits) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    float v = 0.0f;
    for (int s = 0; s < splits; ++s) v = __fadd_rn(v, part[s * n + i]);
    out[i] = v;
  }
}

// db[j] = sum_i dy[i, j]: 32 columns x 8 row lanes per block, fixed row blocks, doubles.
__global__ void bias_part_k(double* part, const float* dy, int64_t m, int n, int64_t brows) {
  __shared__ double acc[8][32];
  const int j = blockIdx.x * 32 + threadIdx.x;
  const int64_t r0 = blockIdx.y * brows, r1 = r0 + brows < m ? r0 + brows : m;
  double a = 0.0;
  if (j < n)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) a += dy[r * n + j];
  acc[threadIdx.y][threadIdx.x] = a;
  __syncthreads();
  if (threadIdx.y == 0 && j < n) {
    for (int l = 1; l < 8; ++l) a += acc[l][threadIdx.x];
    part[blockIdx.y * int64_t{n} + j] = a;
  }
}
__global__ void bias_sum_k(float* db, const double* part, int n, int nb) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= n) return;
  double a = 0.0;
  for (int b = 0; b < nb; ++b) a += part[int64_t{b} * n + j];
  db[j] = static_cast<float>(a);
}

template <class Op>
int32_t launch_gemm(const char* fn, d8_context* ctx, const Op& op, int64_t M, int N, int groups) {
  const dim3 grid(static_cast<unsigned>(ceil_div(M, BM)), static_cast<unsigned>(ceil_div(N, BN)),
                  static_cast<unsigned>(groups));
  if (grid.x > 0x7fffffffu || grid.y > 65535)
    return fail(D8_ERR_UNSUPPORTED, "%s: GEMM of %lld x %d is too large for one launch", fn,
                static_cast<long long>(M), N);
  sgemm_k<Op, false><<<grid, kThreads, 0, ctx->stream>>>(op, 1, 0);
  return launch_check(fn, "sgemm_k");
}

// Split-K GEMM into scratch partials, then the ordered sum into out (elements = groups*M*N).
template <class Op>
int32_t launch_split(const char* fn, d8_context* ctx, Op& op, float** part_ptr, float* out,
                     int64_t M, int N, int groups, int64_t red) {
  const int splits = static_cast<int>(std::min<int64_t>(64, std::max<int64_t>(1, ceil_div(red, kSplitRows))));
  const int64_t len = round_up(ceil_div(red, splits), BK);
  const int64_t n_out = int64_t{groups} * M * N;
  Scratch sc;
  if (int32_t e = sc.get(fn, ctx, static_cast<size_t>(n_out * splits * 4))) return e;
  *part_ptr = sc.as<float>();
  const dim3 grid(static_cast<unsigned>(ceil_div(M, BM)), static_cast<unsigned>(ceil_div(N, BN)),
                  static_cast<unsigned>(groups * splits));
  if (grid.y > 65535 || grid.z > 65535)
    return fail(D8_ERR_UNSUPPORTED, "%s: weight gradient of %lld x %d is too large", fn,
                static_cast<long long>(M), N);
  sgemm_k<Op, true><<<grid, kThreads, 0, ctx->stream>>>(op, splits, len);
  reduce_splits_k<<<grid_1d(n_out, 256), 256, 0, ctx->stream>>>(out, sc.as<float>(), n_out,
                                                                splits);
  return launch_check(fn, "sgemm_k (split)");
}

// ---- depthwise (G == C == K, one channel per group): direct kernels ------------------------
// The GEMM above would fill one column of a 64-wide tile per group; these run one thread per
// output element with the channel fastest (coalesced NHWC access). w[c, r, s] = w[(c*R + r)*S + s].
__device__ inline bool dw_input(const ConvGeom& G, int64_t pix, int r, int s, int64_t* at) {
  const int qq = static_cast<int>(pix % G.q), pp = static_cast<int>(pix / G.q % G.p);
  const int64_t img = pix / (int64_t{G.p} * G.q);
  const int ih = pp * G.sh - G.ph + r, iw = qq * G.sw - G.pw + s;
  if (ih < 0 || ih >= G.h || iw < 0 || iw >= G.w) return false;
  *at = ((img * G.h + ih) * G.w + iw) * G.c;
  return true;
}

__global__ void dw_fwd_k(float* y, const float* x, const float* w, const float* bias, ConvGeom G) {
  const int64_t total = G.m * G.c;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int c = static_cast<int>(i % G.c);
    const int64_t pix = i / G.c;
    float acc = 0.0f;
    for (int r = 0; r < G.r; ++r)
      for (int s = 0; s < G.s; ++s) {
        int64_t at;
        if (dw_input(G, pix, r, s, &at)) acc = fmaf(x[at + c], w[(c * G.r + r) * G.s + s], acc);
      }
    y[i] = bias ? __fadd_rn(acc, bias[c]) : acc;
  }
}

__global__ void dw_dgrad_k(float* dx, const float* dy, const float* w, ConvGeom G) {
  const int64_t total = int64_t{G.n} * G.h * G.w * G.c;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int c = static_cast<int>(i % G.c);
    const int64_t pix = i / G.c;
    const int iw = static_cast<int>(pix % G.w), ih = static_cast<int>(pix / G.w % G.h);
    const int64_t img = pix / (int64_t{G.h} * G.w);
    float acc = 0.0f;
    for_each_cover(G, img, ih, iw, [&](int64_t o, int r, int s) {
      acc = fmaf(dy[o * G.c + c], w[(c * G.r + r) * G.s + s], acc);
    });
    dx[i] = acc;
  }
}

// C % 4 == 0: one thread per 4 channels of a pixel (float4 loads and stores; the layout and
// grid of the INT8 depthwise kernels, dw_launch), taps summed in the same (r, s) order with the
// same fmaf as dw_fwd_k / dw_dgrad_k, so the outputs are theirs bit for bit. wt[tap*C + c] =
// w[c, tap] (dw_transpose_k), so a float4 holds a tap's 4 channels.
__device__ __forceinline__ void fma4(float4& acc, const float4 a, const float4 b) {
  acc.x = fmaf(a.x, b.x, acc.x), acc.y = fmaf(a.y, b.y, acc.y);
  acc.z = fmaf(a.z, b.z, acc.z), acc.w = fmaf(a.w, b.w, acc.w);
}

__global__ void dw_fwd4_k(float* y, const float* x, const float* wt, const float* bias,
                          ConvGeom G) {
  dw_fwd_quads<float4>(
      G,
      [&](float4& a, int64_t xo, int64_t wo) {
        fma4(a, *reinterpret_cast<const float4*>(x + xo),
             *reinterpret_cast<const float4*>(wt + wo));
      },
      [&](float4 a, int64_t yo, int c0) {
        if (bias) {
          a.x = __fadd_rn(a.x, bias[c0]), a.y = __fadd_rn(a.y, bias[c0 + 1]);
          a.z = __fadd_rn(a.z, bias[c0 + 2]), a.w = __fadd_rn(a.w, bias[c0 + 3]);
        }
        *reinterpret_cast<float4*>(y + yo) = a;
      });
}

__global__ void dw_dgrad4_k(float* dx, const float* dy, const float* wt, ConvGeom G, bool add) {
  dw_dgrad_quads<float4>(
      G,
      [&](float4& a, int64_t dyo, int64_t wo) {
        fma4(a, *reinterpret_cast<const float4*>(dy + dyo),
             *reinterpret_cast<const float4*>(wt + wo));
      },
      [&](float4 a, int64_t dxo, int) {
        float4* d = reinterpret_cast<float4*>(dx + dxo);
        if (add) {  // D8_CONV_ACCUMULATE
          const float4 old = *d;
          a.x = __fadd_rn(old.x, a.x), a.y = __fadd_rn(old.y, a.y);
          a.z = __fadd_rn(old.z, a.z), a.w = __fadd_rn(old.w, a.w);
        }
        *d = a;
      });
}

// part[split][c*R*S + tap] = sum over the split's pixels of dy[m, c] * x[m's tap, c]; one thread
// per (tap, c), channel fastest.
__global__ void dw_wgrad_part_k(float* part, const float* x, const float* dy, ConvGeom G,
                                int64_t len) {
  const int taps = G.r * G.s;
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e >= int64_t{taps} * G.c) return;
  const int c = static_cast<int>(e % G.c), tap = static_cast<int>(e / G.c);
  const int r = tap / G.s, s = tap % G.s;
  const int64_t m0 = blockIdx.y * len, m1 = m0 + len < G.m ? m0 + len : G.m;
  float acc = 0.0f;
  for (int64_t m = m0; m < m1; ++m) {
    int64_t at;
    if (dw_input(G, m, r, s, &at)) acc = fmaf(dy[m * G.c + c], x[at + c], acc);
  }
  part[int64_t{blockIdx.y} * taps * G.c + int64_t{c} * taps + tap] = acc;
}

struct ConvBytes {
  int64_t x, w, y;
};
ConvBytes conv_bytes(const d8_conv_shape& s) {
  return {mul64(int64_t{s.n} * s.h, int64_t{s.w} * s.c, 4),
          mul64(int64_t{s.k} * s.r, int64_t{s.s} * (s.c / s.groups), 4),
          mul64(int64_t{s.n} * s.p, int64_t{s.q} * s.k, 4)};
}

}  // namespace

extern "C" int32_t d8_conv2d_fwd(d8_buffer* y, const d8_buffer* x, const d8_buffer* w,
                                 const d8_buffer* bias, const d8_conv_shape* shape) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[256];
    if (int32_t e = check_conv_shape(fn, shape, dims, sizeof dims)) return e;
    const ConvBytes z = conv_bytes(*shape);
    if (int32_t e = check_buffers(fn, dims, {{"y", y, z.y}, {"x", x, z.x}, {"w", w, z.w}}))
      return e;
    if (bias)
      if (int32_t e = check_buffer(fn, "bias", bias, int64_t{shape->k} * 4, dims)) return e;
    if (int32_t e = check_distinct(fn, "y", y, "x", x)) return e;
    if (int32_t e = check_distinct(fn, "y", y, "w", w)) return e;
    d8_context* ctx;
    if (int32_t e = op_context(fn, {y, x, w, bias}, &ctx)) return e;
    const ConvGeom G = make_geom(*shape);
    if (is_depthwise(G) && G.c % 4 == 0) {  // 4 channels a thread
      Scratch wt;
      if (int32_t e = wt.get(fn, ctx, static_cast<size_t>(z.w))) return e;
      dw_transpose_k<float><<<grid_1d(z.w / 4, 256), 256, 0, ctx->stream>>>(wt.as<float>(), fptr(w),
                                                                       G.c, G.r * G.s);
      const DwLaunch l = dw_launch(int64_t{G.q} * (G.c / 4), int64_t{G.n} * G.p);
      dw_fwd4_k<<<l.grid, l.block, 0, ctx->stream>>>(fptr(y), fptr(x), wt.as<float>(),
                                                     bias ? fptr(bias) : nullptr, G);
      return launch_check(fn, "dw_fwd4_k");
    }
    if (is_depthwise(G)) {
      dw_fwd_k<<<grid_1d(G.m * G.c, 256), 256, 0, ctx->stream>>>(
          fptr(y), fptr(x), fptr(w), bias ? fptr(bias) : nullptr, G);
      return launch_check(fn, "dw_fwd_k");
    }
    const FwdOp op{fptr(x), fptr(w), bias ? fptr(bias) : nullptr, fptr(y), G};
    return launch_gemm(fn, ctx, op, G.m, G.kg, G.g);
  });
}

extern "C" int32_t d8_conv2d_dgrad(d8_buffer* dx, const d8_buffer* dy, const d8_buffer* w,
                                   const d8_conv_shape* shape) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[256];
    if (int32_t e = check_conv_shape(fn, shape, dims, sizeof dims, D8_CONV_ACCUMULATE)) return e;
    const ConvBytes z = conv_bytes(*shape);
    if (int32_t e = check_buffers(fn, dims, {{"dx", dx, z.x}, {"dy", dy, z.y}, {"w", w, z.w}}))
      return e;
    if (int32_t e = check_distinct(fn, "dx", dx, "dy", dy)) return e;
    if (int32_t e = check_distinct(fn, "dx", dx, "w", w)) return e;
    d8_context* ctx;
    if (int32_t e = op_context(fn, {dx, dy, w}, &ctx)) return e;
    const ConvGeom G = make_geom(*shape);
    // D8_CONV_ACCUMULATE: the GEMM's and dw_dgrad4_k's stores add into dx; dw_dgrad_k goes
    // through a scratch, then dx += it
    const bool add = (shape->flags & D8_CONV_ACCUMULATE) != 0;
    if (!is_depthwise(G)) {
      for (const DgradPhase& ph : dgrad_phases(G)) {
        const DgradOp op{fptr(dy), fptr(w), fptr(dx), G, ph, add};
        if (int32_t e = launch_gemm(fn, ctx, op, int64_t{G.n} * ph.hp * ph.wp, G.cg, G.g))
          return e;
      }
      return D8_OK;
    }
    if (G.c % 4 == 0) {  // 4 channels a thread, dx += in the store
      Scratch wt;
      if (int32_t e = wt.get(fn, ctx, static_cast<size_t>(z.w))) return e;
      dw_transpose_k<float><<<grid_1d(z.w / 4, 256), 256, 0, ctx->stream>>>(wt.as<float>(), fptr(w),
                                                                       G.c, G.r * G.s);
      const DwLaunch l = dw_launch(int64_t{G.w} * (G.c / 4), int64_t{G.n} * G.h);
      dw_dgrad4_k<<<l.grid, l.block, 0, ctx->stream>>>(fptr(dx), fptr(dy), wt.as<float>(), G,
                                                       add);
      return launch_check(fn, "dw_dgrad4_k");
    }
    Scratch tmp;
    if (add)
      if (int32_t e = tmp.get(fn, ctx, static_cast<size_t>(z.x))) return e;
    float* out = add ? tmp.as<float>() : fptr(dx);
    dw_dgrad_k<<<grid_1d(int64_t{G.n} * G.h * G.w * G.c, 256), 256, 0, ctx->stream>>>(
        out, fptr(dy), fptr(w), G);
    if (int32_t e = launch_check(fn, "dw_dgrad_k")) return e;
    return add ? add_into(fn, ctx, fptr(dx), out, z.x / 4) : D8_OK;
  });
}

extern "C" int32_t d8_conv2d_wgrad(d8_buffer* dw, const d8_buffer* x, const d8_buffer* dy,
                                   const d8_conv_shape* shape) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[256];
    if (int32_t e = check_conv_shape(fn, shape, dims, sizeof dims)) return e;
    const ConvBytes z = conv_bytes(*shape);
    if (int32_t e = check_buffers(fn, dims, {{"dw", dw, z.w}, {"x", x, z.x}, {"dy", dy, z.y}}))
      return e;
    if (int32_t e = check_distinct(fn, "dw", dw, "x", x)) return e;
    if (int32_t e = check_distinct(fn, "dw", dw, "dy", dy)) return e;
    d8_context* ctx;
    if (int32_t e = op_context(fn, {dw, x, dy}, &ctx)) return e;
    const ConvGeom G = make_geom(*shape);
    if (is_depthwise(G)) {
      // Pixels split in chunks of >= 512 (at most 256 chunks), partials summed in chunk order.
      const int64_t outs = int64_t{G.r} * G.s * G.c;
      const int splits = static_cast<int>(std::min<int64_t>(256, std::max<int64_t>(1, ceil_div(G.m, 512))));
      const int64_t len = ceil_div(G.m, splits);
      Scratch sc;
      if (int32_t e = sc.get(fn, ctx, static_cast<size_t>(outs * splits * 4))) return e;
      const dim3 grid(static_cast<unsigned>(ceil_div(outs, 128)), static_cast<unsigned>(splits));
      if (grid.x > 0x7fffffffu)
        return fail(D8_ERR_UNSUPPORTED, "%s: depthwise weight gradient too large (%s)", fn, dims);
      dw_wgrad_part_k<<<grid, 128, 0, ctx->stream>>>(sc.as<float>(), fptr(x), fptr(dy), G, len);
      reduce_splits_k<<<grid_1d(outs, 256), 256, 0, ctx->stream>>>(fptr(dw), sc.as<float>(), outs,
                                                                   splits);
      return launch_check(fn, "dw_wgrad kernels");
    }
    WgradOp op{fptr(x), fptr(dy), nullptr, G};
    return launch_split(fn, ctx, op, &op.part, fptr(dw), G.kg, G.kd, G.g, G.m);
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
    if (int32_t e = check_distinct(fn, "db", db, "dy", dy)) return e;
    d8_context* ctx;
    if (int32_t e = op_context(fn, {db, dy}, &ctx)) return e;
    const int64_t nb = m < 128 * 64 ? ceil_div(m, 64) : 128, brows = ceil_div(m, nb);
    Scratch sc;
    if (int32_t e = sc.get(fn, ctx, static_cast<size_t>(nb * n * 8))) return e;
    bias_part_k<<<dim3(static_cast<unsigned>(ceil_div(n, 32)), static_cast<unsigned>(nb)),
                  dim3(32, 8), 0, ctx->stream>>>(sc.as<double>(), fptr(dy), m, n, brows);
    bias_sum_k<<<grid_1d(n, 128), 128, 0, ctx->stream>>>(fptr(db), sc.as<double>(), n,
                                                         static_cast<int>(nb));
    return launch_check(fn, "bias_grad kernels");
  });
}

extern "C" int32_t d8_linear_fwd(d8_buffer* y, const d8_buffer* x, const d8_buffer* w,
                                 const d8_buffer* bias, int64_t m, int32_t n, int32_t k) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[96];
    if (int32_t e = check_mnk(fn, dims, sizeof dims, m, n, k)) return e;
    if (int32_t e = check_buffers(fn, dims, {{"y", y, mul64(m, n, 4)}, {"x", x, mul64(m, k, 4)},
                                             {"w", w, mul64(n, k, 4)}}))
      return e;
    if (bias)
      if (int32_t e = check_buffer(fn, "bias", bias, mul64(n, 4), dims)) return e;
    if (int32_t e = check_distinct(fn, "y", y, "x", x)) return e;
    if (int32_t e = check_distinct(fn, "y", y, "w", w)) return e;
    d8_context* ctx;
    if (int32_t e = op_context(fn, {y, x, w, bias}, &ctx)) return e;
    const GemmOp op{fptr(x), fptr(w), bias ? fptr(bias) : nullptr, fptr(y), m, n, k, k, 1, k, 1};
    return launch_gemm(fn, ctx, op, m, n, 1);
  });
}

extern "C" int32_t d8_linear_dgrad(d8_buffer* dx, const d8_buffer* dy, const d8_buffer* w,
                                   int64_t m, int32_t n, int32_t k) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[96];
    if (int32_t e = check_mnk(fn, dims, sizeof dims, m, n, k)) return e;
    if (int32_t e = check_buffers(fn, dims, {{"dx", dx, mul64(m, k, 4)},
                                             {"dy", dy, mul64(m, n, 4)}, {"w", w, mul64(n, k, 4)}}))
      return e;
    if (int32_t e = check_distinct(fn, "dx", dx, "dy", dy)) return e;
    if (int32_t e = check_distinct(fn, "dx", dx, "w", w)) return e;
    d8_context* ctx;
    if (int32_t e = op_context(fn, {dx, dy, w}, &ctx)) return e;
    // dx[i, col] = sum_j dy[i, j] * w[j, col]
    const GemmOp op{fptr(dy), fptr(w), nullptr, fptr(dx), m, k, n, n, 1, 1, k};
    return launch_gemm(fn, ctx, op, m, k, 1);
  });
}

extern "C" int32_t d8_linear_wgrad(d8_buffer* dw, const d8_buffer* x, const d8_buffer* dy,
                                   int64_t m, int32_t n, int32_t k) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[96];
    if (int32_t e = check_mnk(fn, dims, sizeof dims, m, n, k)) return e;
    if (int32_t e = check_buffers(fn, dims, {{"dw", dw, mul64(n, k, 4)},
                                             {"x", x, mul64(m, k, 4)}, {"dy", dy, mul64(m, n, 4)}}))
      return e;
    if (int32_t e = check_distinct(fn, "dw", dw, "x", x)) return e;
    if (int32_t e = check_distinct(fn, "dw", dw, "dy", dy)) return e;
    d8_context* ctx;
    if (int32_t e = op_context(fn, {dw, x, dy}, &ctx)) return e;
    // dw[i, col] = sum_j dy[j, i] * x[j, col]  (rows n, cols k, reduction m)
    GemmOp op{fptr(dy), fptr(x), nullptr, nullptr, n, k, m, 1, n, 1, k};
    return launch_split(fn, ctx, op, &op.c_, fptr(dw), n, k, 1, m);
  });
}
