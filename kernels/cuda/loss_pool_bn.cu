// loss_pool_bn.cu: softmax cross-entropy, max / average / global average pooling and batch norm
// (float32, NHWC).
//   - Reductions are deterministic: per-row or per-block partials in double, combined in a fixed
//     order (no float atomics), so a run repeats bit for bit.
//   - Backward pools are gathers (each dx element sums the windows covering it), no atomics.
//   - softmax_xent_fwd / bwd check the labels on the device; a bad label is reported by the next
//     synchronizing call of the context (no host read inside a step).
#include "common.cuh"

#include <cmath>
#include <cstdio>

using namespace d8cuda;

namespace {

constexpr int kBlock = 256;

// ---- softmax cross-entropy -------------------------------------------------------------------
// One warp per row: max, exp, sum (double), probs, row loss (double) and hit.
// flag[0] = the first row with a bad label, or -1: set by check_labels_k before any kernel
// writes, so a bad label leaves every output untouched (as the cpu).
__global__ void check_labels_k(int32_t* flag, const int32_t* labels, int n, int classes) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    if (labels[i] < 0 || labels[i] >= classes) atomicMin(flag, i);
}

__global__ void xent_fwd_k(double* row_loss, float* probs, const float* logits,
                           const int32_t* labels, int n, int classes, const int32_t* flag) {
  const int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
  if (warp >= n || flag[0] != 0x7fffffff) return;
  const int64_t C = classes;
  const float* xi = logits + warp * C;
  float* pi = probs + warp * C;
  const int y = labels[warp];
  // argmax with the lowest index on ties (as the cpu's strict >)
  float mx = -INFINITY;
  int am = 0x7fffffff;
  for (int j = lane; j < classes; j += 32) {
    const float v = xi[j];
    if (v > mx || (am == 0x7fffffff)) mx = v, am = j;
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float m2 = __shfl_down_sync(0xffffffffu, mx, o);
    const int a2 = __shfl_down_sync(0xffffffffu, am, o);
    if (m2 > mx || (m2 == mx && a2 < am)) mx = m2, am = a2;
  }
  mx = __shfl_sync(0xffffffffu, mx, 0);
  am = __shfl_sync(0xffffffffu, am, 0);
  const float xy = xi[y];  // before probs (which may alias logits) is written
  __syncwarp();
  double sum = 0.0;
  for (int j = lane; j < classes; j += 32) {
    const float e = expf(__fsub_rn(xi[j], mx));
    pi[j] = e;
    sum += e;
  }
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_down_sync(0xffffffffu, sum, o);
  sum = __shfl_sync(0xffffffffu, sum, 0);
  const float inv = static_cast<float>(1.0 / sum);
  for (int j = lane; j < classes; j += 32) pi[j] = __fmul_rn(pi[j], inv);
  if (lane == 0) {
    row_loss[2 * warp] = log(sum) + static_cast<double>(mx) - static_cast<double>(xy);
    row_loss[2 * warp + 1] = am == y ? 1.0 : 0.0;
  }
}

// One block: rows summed in a fixed order (thread-strided, then a fixed tree).
__global__ void xent_sum_k(float* stats, float* accum, const double* row_loss, int n,
                           const int32_t* flag) {
  if (flag[0] != 0x7fffffff) return;
  __shared__ double l[kBlock], c[kBlock];
  double a = 0.0, b = 0.0;
  for (int i = threadIdx.x; i < n; i += kBlock) a += row_loss[2 * i], b += row_loss[2 * i + 1];
  l[threadIdx.x] = a;
  c[threadIdx.x] = b;
  __syncthreads();
  for (int s = kBlock / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) l[threadIdx.x] += l[threadIdx.x + s], c[threadIdx.x] += c[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    stats[0] = static_cast<float>(l[0] / n);
    stats[1] = static_cast<float>(c[0]);
    if (accum) {
      accum[0] = __fadd_rn(accum[0], static_cast<float>(l[0]));
      accum[1] = __fadd_rn(accum[1], static_cast<float>(c[0]));
      accum[2] = __fadd_rn(accum[2], static_cast<float>(n));
      accum[3] = __fadd_rn(accum[3], 1.0f);
    }
  }
}

__global__ void xent_bwd_k(float* d, const float* p, const int32_t* labels, const float* seed,
                           int n, int classes, float scale0, const int32_t* flag) {
  if (flag[0] != 0x7fffffff) return;
  const float scale = seed ? __fmul_rn(scale0, seed[0]) : scale0;
  const int64_t total = int64_t{n} * classes;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t row = i / classes;
    const int j = static_cast<int>(i % classes);
    const int y = labels[row];
    const float v = __fmul_rn(scale, p[i]);
    d[i] = j == y ? __fsub_rn(v, scale) : v;
  }
}

int32_t check_xent(const char* fn, char* dims, size_t cap, int32_t n, int32_t classes) {
  snprintf(dims, cap, "n=%d,classes=%d", n, classes);
  if (n < 1 || classes < 1)
    return fail(D8_ERR_INVALID_ARGUMENT, "%s: n and classes must be positive (%s)", fn, dims);
  return D8_OK;
}

__global__ void label_value_k(int32_t* flag, const int32_t* labels) {
  if (flag[0] != 0x7fffffff) flag[1] = labels[flag[0]];
}

// Labels are checked on the device, without a host read: check_labels_k records the first bad
// row in the context's flag (kept until reported), every later loss kernel sees it and writes
// nothing, and the flag is copied to pinned host memory; the next d8_synchronize or download
// reports the error (pending_label_error, runtime.cu).
int32_t start_label_check(const char* fn, d8_context* ctx, const d8_buffer* labels, int n,
                          int classes) {
  check_labels_k<<<grid_1d(n, kBlock), kBlock, 0, ctx->stream>>>(ctx->flag, i32ptr(labels), n,
                                                                 classes);
  label_value_k<<<1, 1, 0, ctx->stream>>>(ctx->flag, i32ptr(labels));
  return launch_check(fn, "check_labels_k");
}
int32_t finish_label_check(const char* fn, d8_context* ctx, int classes) {
  const cudaError_t e = cudaMemcpyAsync(ctx->host_flag, ctx->flag, 8, cudaMemcpyDeviceToHost,
                                        ctx->stream);
  if (e != cudaSuccess) return cuda_fail(fn, "copying the label check", e);
  if (!ctx->label_pending) {
    ctx->label_fn = fn;
    ctx->label_classes = classes;
  }
  ctx->label_pending = 1;
  return D8_OK;
}

// ---- pools ---------------------------------------------------------------------------------
// One thread per output element (n, p, q, c).
__global__ void maxpool_fwd_k(float* y, int32_t* arg, const float* x, ConvGeom G) {
  const int64_t total = G.m * G.c;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int ch = static_cast<int>(i % G.c);
    const int64_t pix = i / G.c;
    const int qq = static_cast<int>(pix % G.q), pp = static_cast<int>(pix / G.q % G.p);
    const int64_t img = pix / (int64_t{G.p} * G.q);
    const int ih0 = pp * G.sh - G.ph, iw0 = qq * G.sw - G.pw;
    float best = 0.0f;
    int32_t bi = -1;
    for (int r = 0; r < G.r; ++r) {
      const int ih = ih0 + r;
      if (ih < 0 || ih >= G.h) continue;
      for (int s = 0; s < G.s; ++s) {
        const int iw = iw0 + s;
        if (iw < 0 || iw >= G.w) continue;
        const float v = x[((img * G.h + ih) * G.w + iw) * G.c + ch];
        if (bi < 0 || v > best || v != v) best = v, bi = ih * G.w + iw;
      }
    }
    y[i] = best;
    arg[i] = bi;
  }
}

// Gather over the outputs covering (ih, iw): dx = sum of dy where argmax points here.
template <bool Max>
__global__ void pool_bwd_k(float* dx, const float* dy, const int32_t* arg, ConvGeom G,
                           float inv) {
  const int64_t total = int64_t{G.n} * G.h * G.w * G.c;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int ch = static_cast<int>(i % G.c);
    const int64_t pix = i / G.c;
    const int iw = static_cast<int>(pix % G.w), ih = static_cast<int>(pix / G.w % G.h);
    const int64_t img = pix / (int64_t{G.h} * G.w);
    const int self = ih * G.w + iw;
    float acc = 0.0f;
    const int th = ih + G.ph, tw = iw + G.pw;
    for (int r = th % G.sh; r < G.r && r <= th; r += G.sh) {
      const int pp = (th - r) / G.sh;
      if (pp >= G.p) continue;
      for (int s = tw % G.sw; s < G.s && s <= tw; s += G.sw) {
        const int qq = (tw - s) / G.sw;
        if (qq >= G.q) continue;
        const int64_t o = ((img * G.p + pp) * G.q + qq) * G.c + ch;
        if (Max) {
          if (arg[o] == self) acc = __fadd_rn(acc, dy[o]);
        } else {
          acc = __fadd_rn(acc, dy[o]);
        }
      }
    }
    dx[i] = Max ? acc : __fmul_rn(acc, inv);
  }
}

__global__ void avgpool_fwd_k(float* y, const float* x, ConvGeom G, float inv) {
  const int64_t total = G.m * G.c;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int ch = static_cast<int>(i % G.c);
    const int64_t pix = i / G.c;
    const int qq = static_cast<int>(pix % G.q), pp = static_cast<int>(pix / G.q % G.p);
    const int64_t img = pix / (int64_t{G.p} * G.q);
    const int ih0 = pp * G.sh - G.ph, iw0 = qq * G.sw - G.pw;
    float acc = 0.0f;
    for (int r = 0; r < G.r; ++r) {
      const int ih = ih0 + r;
      if (ih < 0 || ih >= G.h) continue;
      for (int s = 0; s < G.s; ++s) {
        const int iw = iw0 + s;
        if (iw < 0 || iw >= G.w) continue;
        acc = __fadd_rn(acc, x[((img * G.h + ih) * G.w + iw) * G.c + ch]);
      }
    }
    y[i] = __fmul_rn(acc, inv);
  }
}

__global__ void gap_fwd_k(float* y, const float* x, int n, int hw, int c, float inv) {
  const int64_t total = int64_t{n} * c;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t img = i / c, ch = i % c;
    float acc = 0.0f;
    for (int j = 0; j < hw; ++j) acc = __fadd_rn(acc, x[(img * hw + j) * c + ch]);
    y[i] = __fmul_rn(acc, inv);
  }
}
__global__ void gap_bwd_k(float* dx, const float* dy, int n, int hw, int c, float inv) {
  const int64_t total = int64_t{n} * hw * c;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t img = i / (int64_t{hw} * c), ch = i % c;
    dx[i] = __fmul_rn(dy[img * c + ch], inv);
  }
}

int32_t check_pool(const char* fn, const d8_conv_shape* s, char* dims, int cap) {
  if (s && (s->k != s->c || s->groups != s->c))
    return fail(D8_ERR_INVALID_ARGUMENT,
                "%s: pooling needs k == c and groups == c, got c=%d, k=%d, groups=%d", fn, s->c,
                s->k, s->groups);
  return check_conv_shape(fn, s, dims, cap);
}
int64_t x_bytes(const d8_conv_shape& s) { return mul64(int64_t{s.n} * s.h, int64_t{s.w} * s.c, 4); }
int64_t y_bytes(const d8_conv_shape& s) { return mul64(int64_t{s.n} * s.p, int64_t{s.q} * s.c, 4); }

// ---- batch norm -------------------------------------------------------------------------------
// Per-channel sums over rows in double with the first row as shift: blocks of (32 channels x 8
// row lanes) over fixed row ranges (blockIdx.y), partials [nb][NS][c], combined in order.
template <int NS>
__global__ void bn_sums_k(double* part, const float* x, const float* dy, const float* mean,
                          int64_t m, int c, int64_t brows) {
  __shared__ double acc[NS][8][32];
  const int ch = blockIdx.x * 32 + threadIdx.x;
  const int64_t r0 = blockIdx.y * brows, r1 = r0 + brows < m ? r0 + brows : m;
  double a[NS];
  for (int k = 0; k < NS; ++k) a[k] = 0.0;
  if (ch < c) {
    const double sh = NS == 2 ? static_cast<double>(x[ch]) : static_cast<double>(mean[ch]);
    for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) {
      const double d = static_cast<double>(x[r * c + ch]) - sh;
      if (NS == 2) {
        a[0] += d;
        a[1] += d * d;
      } else {
        const double g = dy[r * c + ch];
        a[0] += g;
        a[1] += g * d;
        a[2] += d;
      }
    }
  }
  for (int k = 0; k < NS; ++k) acc[k][threadIdx.y][threadIdx.x] = a[k];
  __syncthreads();
  if (threadIdx.y == 0 && ch < c)
    for (int k = 0; k < NS; ++k) {
      double t = 0.0;
      for (int l = 0; l < 8; ++l) t += acc[k][l][threadIdx.x];
      part[(blockIdx.y * int64_t{NS} + k) * c + ch] = t;
    }
}

// tab [4][c] floats: mean_hi, mean_lo, scale (gamma * invstd), beta.
__global__ void bn_train_stats_k(float* tab, float* sm, float* si, float* rm, float* rv,
                                 const double* part, int nb, const float* x, const float* gamma,
                                 const float* beta, int64_t m, int c, float momentum, float eps) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= c) return;
  double s1 = 0.0, s2 = 0.0;
  for (int b = 0; b < nb; ++b) s1 += part[(b * 2LL) * c + j], s2 += part[(b * 2LL + 1) * c + j];
  const double md = static_cast<double>(m), mom = momentum;
  const double dm = s1 / md;
  const double mean = static_cast<double>(x[j]) + dm;
  double var = s2 / md - dm * dm;
  var = var > 0.0 ? var : 0.0;
  const double invstd = 1.0 / sqrt(var + static_cast<double>(eps));
  const float hi = static_cast<float>(mean);
  tab[j] = hi;
  tab[c + j] = static_cast<float>(mean - static_cast<double>(hi));
  tab[2 * c + j] = static_cast<float>(invstd * gamma[j]);
  tab[3 * c + j] = beta[j];
  sm[j] = static_cast<float>(mean);
  si[j] = static_cast<float>(invstd);
  rm[j] = static_cast<float>((1.0 - mom) * rm[j] + mom * mean);
  rv[j] = static_cast<float>((1.0 - mom) * rv[j] + mom * var * md / (md - 1.0));
}

__global__ void bn_apply_k(float* y, const float* x, const float* tab, int64_t m, int c) {
  const int64_t total = m * c;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int j = static_cast<int>(i % c);
    y[i] = __fadd_rn(__fmul_rn(__fsub_rn(__fsub_rn(x[i], tab[j]), tab[c + j]), tab[2 * c + j]),
                     tab[3 * c + j]);
  }
}

__global__ void bn_infer_tab_k(float* tab, const float* g, const float* bt, const float* rm,
                               const float* rv, int c, float eps) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= c) return;
  const double s = static_cast<double>(g[j]) / sqrt(static_cast<double>(rv[j]) + eps);
  tab[j] = static_cast<float>(s);
  tab[c + j] = static_cast<float>(static_cast<double>(bt[j]) - s * rm[j]);
}
__global__ void bn_infer_k(float* y, const float* x, const float* tab, int64_t m, int c) {
  const int64_t total = m * c;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int j = static_cast<int>(i % c);
    y[i] = __fadd_rn(__fmul_rn(x[i], tab[j]), tab[c + j]);
  }
}

// tab [4][c]: k1, k2, k3, mlo.
__global__ void bn_bwd_stats_k(float* tab, float* dg, float* dbt, const double* part, int nb,
                               const float* gamma, const float* invstd, int64_t m, int c) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= c) return;
  double sdy = 0.0, sdyx = 0.0, sx = 0.0;
  for (int b = 0; b < nb; ++b) {
    sdy += part[(b * 3LL) * c + j];
    sdyx += part[(b * 3LL + 1) * c + j];
    sx += part[(b * 3LL + 2) * c + j];
  }
  const double md = static_cast<double>(m), is = invstd[j];
  const double dmean = sx / md;
  const double dgam = (sdyx - dmean * sdy) * is;
  dg[j] = static_cast<float>(dgam);
  dbt[j] = static_cast<float>(sdy);
  tab[j] = static_cast<float>(gamma[j] * is);
  tab[c + j] = static_cast<float>(sdy / md);
  tab[2 * c + j] = static_cast<float>(dgam / md * is);
  tab[3 * c + j] = static_cast<float>(dmean);
}
__global__ void bn_bwd_apply_k(float* dx, const float* dy, const float* x, const float* mean,
                               const float* tab, int64_t m, int c) {
  const int64_t total = m * c;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int j = static_cast<int>(i % c);
    const float xc = __fsub_rn(__fsub_rn(x[i], mean[j]), tab[3 * c + j]);
    dx[i] = __fmul_rn(tab[j], __fsub_rn(__fsub_rn(dy[i], tab[c + j]), __fmul_rn(xc, tab[2 * c + j])));
  }
}

// Row blocks for the deterministic sums.
void bn_blocks(int64_t m, int64_t* nb, int64_t* brows) {
  *nb = m < 128 * 64 ? ceil_div(m, 64) : 128;
  *brows = ceil_div(m, *nb);
}

}  // namespace

extern "C" int32_t d8_softmax_xent_fwd(d8_buffer* stats, d8_buffer* probs, d8_buffer* accum,
                                       const d8_buffer* logits, const d8_buffer* labels, int32_t n,
                                       int32_t classes) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[64];
    if (int32_t e = check_xent(fn, dims, sizeof dims, n, classes)) return e;
    if (int32_t e = check_buffer(fn, "stats", stats, 8, dims)) return e;
    if (int32_t e = check_buffer(fn, "probs", probs, mul64(n, classes, 4), dims)) return e;
    if (int32_t e = check_buffer(fn, "logits", logits, mul64(n, classes, 4), dims)) return e;
    if (int32_t e = check_buffer(fn, "labels", labels, mul64(n, 4), dims)) return e;
    if (accum)
      if (int32_t e = check_buffer(fn, "accum", accum, 16, dims)) return e;
    d8_context* ctx;
    if (int32_t e = op_context(fn, {stats, probs, accum, logits, labels}, &ctx)) return e;
    Scratch sc;
    if (int32_t e = sc.get(fn, ctx, static_cast<size_t>(n) * 16)) return e;
    if (int32_t e = start_label_check(fn, ctx, labels, n, classes)) return e;
    xent_fwd_k<<<grid_1d(int64_t{n} * 32, kBlock), kBlock, 0, ctx->stream>>>(
        sc.as<double>(), fptr(probs), fptr(logits), i32ptr(labels), n, classes, ctx->flag);
    xent_sum_k<<<1, kBlock, 0, ctx->stream>>>(fptr(stats), accum ? fptr(accum) : nullptr,
                                              sc.as<double>(), n, ctx->flag);
    if (int32_t e = launch_check(fn, "xent kernels")) return e;
    return finish_label_check(fn, ctx, classes);
  });
}

extern "C" int32_t d8_softmax_xent_bwd(d8_buffer* dlogits, const d8_buffer* probs,
                                       const d8_buffer* labels, const d8_buffer* seed,
                                       int32_t n, int32_t classes, float scale) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[64];
    if (int32_t e = check_xent(fn, dims, sizeof dims, n, classes)) return e;
    if (int32_t e = check_buffer(fn, "dlogits", dlogits, mul64(n, classes, 4), dims)) return e;
    if (int32_t e = check_buffer(fn, "probs", probs, mul64(n, classes, 4), dims)) return e;
    if (int32_t e = check_buffer(fn, "labels", labels, mul64(n, 4), dims)) return e;
    if (seed)
      if (int32_t e = check_buffer(fn, "seed", seed, 4, dims)) return e;
    d8_context* ctx;
    if (int32_t e = op_context(fn, {dlogits, probs, labels, seed}, &ctx)) return e;
    if (int32_t e = start_label_check(fn, ctx, labels, n, classes)) return e;
    xent_bwd_k<<<grid_1d(int64_t{n} * classes, kBlock), kBlock, 0, ctx->stream>>>(
        fptr(dlogits), fptr(probs), i32ptr(labels), seed ? fptr(seed) : nullptr, n, classes,
        scale, ctx->flag);
    if (int32_t e = launch_check(fn, "xent_bwd_k")) return e;
    return finish_label_check(fn, ctx, classes);
  });
}

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
    d8_context* ctx;
    if (int32_t e = op_context(fn, {y, argmax, x}, &ctx)) return e;
    const ConvGeom G = make_geom(*shape);
    maxpool_fwd_k<<<grid_1d(G.m * G.c, kBlock), kBlock, 0, ctx->stream>>>(fptr(y), i32ptr(argmax),
                                                                          fptr(x), G);
    return launch_check(fn, "maxpool_fwd_k");
  });
}

// Argmax entries outside [0, h*w) (other than -1) match no input pixel and are ignored (the cpu
// reports them; the gather form here cannot without a host round trip).
extern "C" int32_t d8_maxpool_bwd(d8_buffer* dx, const d8_buffer* dy, const d8_buffer* argmax,
                                  const d8_conv_shape* shape) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[256];
    if (int32_t e = check_pool(fn, shape, dims, sizeof dims)) return e;
    const int64_t yb = y_bytes(*shape);
    if (int32_t e = check_buffers(fn, dims, {{"dx", dx, x_bytes(*shape)}, {"dy", dy, yb},
                                             {"argmax", argmax, yb}}))
      return e;
    d8_context* ctx;
    if (int32_t e = op_context(fn, {dx, dy, argmax}, &ctx)) return e;
    const ConvGeom G = make_geom(*shape);
    pool_bwd_k<true><<<grid_1d(int64_t{G.n} * G.h * G.w * G.c, kBlock), kBlock, 0, ctx->stream>>>(
        fptr(dx), fptr(dy), i32ptr(argmax), G, 1.0f);
    return launch_check(fn, "pool_bwd_k");
  });
}

extern "C" int32_t d8_avgpool_fwd(d8_buffer* y, const d8_buffer* x, const d8_conv_shape* shape) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[256];
    if (int32_t e = check_pool(fn, shape, dims, sizeof dims)) return e;
    if (int32_t e = check_buffers(fn, dims, {{"y", y, y_bytes(*shape)}, {"x", x, x_bytes(*shape)}}))
      return e;
    d8_context* ctx;
    if (int32_t e = op_context(fn, {y, x}, &ctx)) return e;
    const ConvGeom G = make_geom(*shape);
    const float inv = 1.0f / static_cast<float>(G.r * G.s);
    avgpool_fwd_k<<<grid_1d(G.m * G.c, kBlock), kBlock, 0, ctx->stream>>>(fptr(y), fptr(x), G,
                                                                          inv);
    return launch_check(fn, "avgpool_fwd_k");
  });
}

extern "C" int32_t d8_avgpool_bwd(d8_buffer* dx, const d8_buffer* dy, const d8_conv_shape* shape) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[256];
    if (int32_t e = check_pool(fn, shape, dims, sizeof dims)) return e;
    if (int32_t e =
            check_buffers(fn, dims, {{"dx", dx, x_bytes(*shape)}, {"dy", dy, y_bytes(*shape)}}))
      return e;
    d8_context* ctx;
    if (int32_t e = op_context(fn, {dx, dy}, &ctx)) return e;
    const ConvGeom G = make_geom(*shape);
    const float inv = 1.0f / static_cast<float>(G.r * G.s);
    pool_bwd_k<false><<<grid_1d(int64_t{G.n} * G.h * G.w * G.c, kBlock), kBlock, 0,
                        ctx->stream>>>(fptr(dx), fptr(dy), nullptr, G, inv);
    return launch_check(fn, "pool_bwd_k");
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
    d8_context* ctx;
    if (int32_t e = op_context(fn, {y, x}, &ctx)) return e;
    gap_fwd_k<<<grid_1d(int64_t{n} * c, kBlock), kBlock, 0, ctx->stream>>>(
        fptr(y), fptr(x), n, hw, c, 1.0f / static_cast<float>(hw));
    return launch_check(fn, "gap_fwd_k");
  });
}

extern "C" int32_t d8_global_avgpool_bwd(d8_buffer* dx, const d8_buffer* dy, int32_t n, int32_t hw,
                                         int32_t c) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[96];
    if (int32_t e = check_global(fn, dims, sizeof dims, n, hw, c)) return e;
    if (int32_t e = check_buffer(fn, "dx", dx, mul64(n, hw, c, 4), dims)) return e;
    if (int32_t e = check_buffer(fn, "dy", dy, mul64(n, c, 4), dims)) return e;
    d8_context* ctx;
    if (int32_t e = op_context(fn, {dx, dy}, &ctx)) return e;
    gap_bwd_k<<<grid_1d(int64_t{n} * hw * c, kBlock), kBlock, 0, ctx->stream>>>(
        fptr(dx), fptr(dy), n, hw, c, 1.0f / static_cast<float>(hw));
    return launch_check(fn, "gap_bwd_k");
  });
}

extern "C" int32_t d8_batchnorm_fwd_train(d8_buffer* y, d8_buffer* save_mean,
                                          d8_buffer* save_invstd, d8_buffer* running_mean,
                                          d8_buffer* running_var, const d8_buffer* x,
                                          const d8_buffer* gamma, const d8_buffer* beta, int64_t m,
                                          int32_t c, float momentum, float eps) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[64];
    if (int32_t e = check_bn_fwd_train(fn, dims, sizeof dims, y, nullptr, save_mean, save_invstd,
                                       running_mean, running_var, x, nullptr, gamma, beta, m, c,
                                       eps))
      return e;
    d8_context* ctx;
    if (int32_t e = op_context(
            fn, {y, save_mean, save_invstd, running_mean, running_var, x, gamma, beta}, &ctx))
      return e;
    int64_t nb, brows;
    bn_blocks(m, &nb, &brows);
    Scratch sc;
    if (int32_t e = sc.get(fn, ctx, static_cast<size_t>(nb * 2 * c * 8 + 4 * c * 4))) return e;
    double* part = sc.as<double>();
    float* tab = reinterpret_cast<float*>(part + nb * 2 * c);
    const unsigned cblocks = static_cast<unsigned>(ceil_div(c, 32));
    // The shift row (x[0]) must be read before y overwrites it when y aliases x: the stats
    // kernel reads it before bn_apply_k runs (stream order).
    bn_sums_k<2><<<dim3(cblocks, static_cast<unsigned>(nb)), dim3(32, 8), 0, ctx->stream>>>(
        part, fptr(x), nullptr, nullptr, m, c, brows);
    bn_train_stats_k<<<grid_1d(c, 128), 128, 0, ctx->stream>>>(
        tab, fptr(save_mean), fptr(save_invstd), fptr(running_mean), fptr(running_var), part,
        static_cast<int>(nb), fptr(x), fptr(gamma), fptr(beta), m, c, momentum, eps);
    bn_apply_k<<<grid_1d(m * c, kBlock), kBlock, 0, ctx->stream>>>(fptr(y), fptr(x), tab, m, c);
    return launch_check(fn, "batchnorm train kernels");
  });
}

extern "C" int32_t d8_batchnorm_fwd_infer(d8_buffer* y, const d8_buffer* x, const d8_buffer* gamma,
                                          const d8_buffer* beta, const d8_buffer* running_mean,
                                          const d8_buffer* running_var, int64_t m, int32_t c,
                                          float eps) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[64];
    if (int32_t e = check_bn(fn, dims, sizeof dims, m, c)) return e;
    const int64_t mc = mul64(m, c, 4), cb = int64_t{c} * 4;
    if (int32_t e = check_buffers(fn, dims, {{"y", y, mc}, {"x", x, mc}, {"gamma", gamma, cb},
                                             {"beta", beta, cb},
                                             {"running_mean", running_mean, cb},
                                             {"running_var", running_var, cb}}))
      return e;
    if (!(eps > 0.0f))
      return fail(D8_ERR_INVALID_ARGUMENT, "%s: eps must be positive, got %g", fn,
                  static_cast<double>(eps));
    d8_context* ctx;
    if (int32_t e = op_context(fn, {y, x, gamma, beta, running_mean, running_var}, &ctx)) return e;
    Scratch sc;
    if (int32_t e = sc.get(fn, ctx, static_cast<size_t>(2 * c * 4))) return e;
    bn_infer_tab_k<<<grid_1d(c, 128), 128, 0, ctx->stream>>>(
        sc.as<float>(), fptr(gamma), fptr(beta), fptr(running_mean), fptr(running_var), c, eps);
    bn_infer_k<<<grid_1d(m * c, kBlock), kBlock, 0, ctx->stream>>>(fptr(y), fptr(x),
                                                                   sc.as<float>(), m, c);
    return launch_check(fn, "batchnorm infer kernels");
  });
}

extern "C" int32_t d8_batchnorm_bwd(d8_buffer* dx, d8_buffer* dgamma, d8_buffer* dbeta,
                                    const d8_buffer* dy, const d8_buffer* x, const d8_buffer* gamma,
                                    const d8_buffer* save_mean, const d8_buffer* save_invstd,
                                    int64_t m, int32_t c) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[64];
    if (int32_t e = check_bn_bwd(fn, dims, sizeof dims, dx, nullptr, dgamma, dbeta, dy, nullptr, x,
                                 gamma, save_mean, save_invstd, m, c))
      return e;
    d8_context* ctx;
    if (int32_t e = op_context(fn, {dx, dgamma, dbeta, dy, x, gamma, save_mean, save_invstd},
                               &ctx))
      return e;
    int64_t nb, brows;
    bn_blocks(m, &nb, &brows);
    Scratch sc;
    if (int32_t e = sc.get(fn, ctx, static_cast<size_t>(nb * 3 * c * 8 + 4 * c * 4))) return e;
    double* part = sc.as<double>();
    float* tab = reinterpret_cast<float*>(part + nb * 3 * c);
    const unsigned cblocks = static_cast<unsigned>(ceil_div(c, 32));
    bn_sums_k<3><<<dim3(cblocks, static_cast<unsigned>(nb)), dim3(32, 8), 0, ctx->stream>>>(
        part, fptr(x), fptr(dy), fptr(save_mean), m, c, brows);
    bn_bwd_stats_k<<<grid_1d(c, 128), 128, 0, ctx->stream>>>(
        tab, fptr(dgamma), fptr(dbeta), part, static_cast<int>(nb), fptr(gamma),
        fptr(save_invstd), m, c);
    bn_bwd_apply_k<<<grid_1d(m * c, kBlock), kBlock, 0, ctx->stream>>>(
        fptr(dx), fptr(dy), fptr(x), fptr(save_mean), tab, m, c);
    return launch_check(fn, "batchnorm backward kernels");
  });
}

// The ReLU-fused batch norm, composed here from the batch-norm, add and masked-ReLU launches on
// the same stream (one fused kernel pair is the CUDA issue's work): same results and aliasing
// rules as the cpu backend's one-pass version.
extern "C" int32_t d8_batchnorm_relu_fwd_train(d8_buffer* y, d8_buffer* mask, d8_buffer* save_mean,
                                               d8_buffer* save_invstd, d8_buffer* running_mean,
                                               d8_buffer* running_var, const d8_buffer* x,
                                               const d8_buffer* residual, const d8_buffer* gamma,
                                               const d8_buffer* beta, int64_t m, int32_t c,
                                               float momentum, float eps, float cap) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    if (!mask) return fail(D8_ERR_INVALID_ARGUMENT, "%s: mask is null", fn);
    if (int32_t e = check_relu_cap(fn, cap)) return e;
    char dims[64];
    if (int32_t e = check_bn_fwd_train(fn, dims, sizeof dims, y, mask, save_mean, save_invstd,
                                       running_mean, running_var, x, residual, gamma, beta, m, c,
                                       eps))
      return e;
    if (int32_t e = d8_batchnorm_fwd_train(y, save_mean, save_invstd, running_mean, running_var, x,
                                           gamma, beta, m, c, momentum, eps))
      return e;
    if (residual)
      if (int32_t e = d8_add_f32(y, y, residual, m * c)) return e;
    d8_context* ctx;
    if (int32_t e = op_context(fn, {y, mask}, &ctx)) return e;
    return relu_mask_into(fn, ctx, fptr(y), static_cast<uint8_t*>(mask->data), fptr(y), m * c, cap);
  });
}

extern "C" int32_t d8_batchnorm_relu_bwd(d8_buffer* dx, d8_buffer* dresidual, d8_buffer* dgamma,
                                         d8_buffer* dbeta, const d8_buffer* dy,
                                         const d8_buffer* mask, const d8_buffer* x,
                                         const d8_buffer* gamma, const d8_buffer* save_mean,
                                         const d8_buffer* save_invstd, int64_t m, int32_t c) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    if (!mask) return fail(D8_ERR_INVALID_ARGUMENT, "%s: mask is null", fn);
    char dims[64];
    if (int32_t e = check_bn_bwd(fn, dims, sizeof dims, dx, dresidual, dgamma, dbeta, dy, mask, x,
                                 gamma, save_mean, save_invstd, m, c))
      return e;
    d8_buffer* g = dresidual ? dresidual : dx;  // dx may alias dy: the masked copy goes in place
    if (int32_t e = d8_relu_bwd_mask(g, dy, mask, m * c)) return e;
    return d8_batchnorm_bwd(dx, dgamma, dbeta, g, x, gamma, save_mean, save_invstd, m, c);
  });
}
