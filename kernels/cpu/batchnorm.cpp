// batchnorm.cpp: batch normalization over the rows of x[m, c] (NHWC flattened: m = N*H*W).
// Statistics are accumulated in double per thread over row ranges, with each channel shifted by
// its first-row value (the "shifted data" variance: no catastrophic cancellation when the mean
// is large against the spread). Normalization loops run over the contiguous channel dimension.
#include "common.h"

#include <cmath>
#include <cstdio>
#include <numeric>
#include <type_traits>

using namespace d8cpu;

namespace {

constexpr int64_t kGrain = int64_t{1} << 15;

// NS per-channel sums over row ranges, reduced across threads in double: body(t, b, e, acc)
// (thread t) adds rows [b, e) into acc[0..NS-1][c] (zeroed), and out[k][j] receives the totals.
template <int NS, class F>
void channel_sums(int64_t m, int64_t c, double* const (&out)[NS], F&& body) {
  const int nt = threads_for(m * c, kGrain);
  const int64_t ld = round_up(c, 8);
  double* part =
      reinterpret_cast<double*>(scratch(kSlotMisc, static_cast<size_t>(2 * NS * ld * nt)));
  const int team = parallel(nt, [&](int t, int T) {
    double* acc[NS];
    for (int k = 0; k < NS; ++k) {
      acc[k] = part + (NS * t + k) * ld;
      for (int64_t j = 0; j < c; ++j) acc[k][j] = 0.0;
    }
    body(t, m * t / T, m * (t + 1) / T, acc);
  });
  for (int k = 0; k < NS; ++k)
    for (int64_t j = 0; j < c; ++j) {
      double v = 0.0;
      for (int t = 0; t < team; ++t) v += part[(NS * t + k) * ld + j];
      out[k][j] = v;
    }
}

}  // namespace

namespace {

// Rows [b, e) of y = bn(x) (+ residual) (then max(., 0) with Relu, and min(., cap) when cap > 0):
// one vector loop over channels, or with c % 16 == 0 blocks of 16 channels whose coefficients stay
// in registers over the rows.
template <bool Res, bool Relu>
void bn_apply_rows(float* py, const float* px, const float* pr, const float* mean_hi,
                   const float* mean_lo, const float* scale, const float* beta, int64_t c,
                   int64_t b, int64_t e, float cap) {
  const float hi = Relu && cap > 0.0f ? cap : INFINITY;
  const v16f hv = v16f{} + hi;
  if (c % 16 == 0) {
    for (int64_t j = 0; j < c; j += 16) {
      const v16f mh = load16(mean_hi + j), ml = load16(mean_lo + j);
      const v16f sc = load16(scale + j), bt = load16(beta + j);
      for (int64_t i = b; i < e; ++i) {
        v16f v = ((load16(px + i * c + j) - mh) - ml) * sc + bt;
        if constexpr (Res) v += load16(pr + i * c + j);
        if constexpr (Relu) {
          v = v > 0.0f ? v : v16f{};
          v = v < hv ? v : hv;
        }
        store16(py + i * c + j, v);
      }
    }
    return;
  }
  for (int64_t i = b; i < e; ++i) {
    const float* xr = px + i * c;
    float* yr = py + i * c;
    for (int64_t j = 0; j < c; ++j) {
      float v = ((xr[j] - mean_hi[j]) - mean_lo[j]) * scale[j] + beta[j];
      if constexpr (Res) v += pr[i * c + j];
      if constexpr (Relu) v = std::min(v > 0.0f ? v : 0.0f, hi);
      yr[j] = v;
    }
  }
}

// The training forward, fused with a residual add (residual non-null) and a ReLU that writes its
// bit mask (mask non-null) when asked.
int32_t bn_fwd_train(const char* fn, d8_buffer* y, d8_buffer* mask, d8_buffer* save_mean,
                     d8_buffer* save_invstd, d8_buffer* running_mean, d8_buffer* running_var,
                     const d8_buffer* x, const d8_buffer* residual, const d8_buffer* gamma,
                     const d8_buffer* beta, int64_t m, int32_t c, float momentum, float eps,
                     float cap) {
  char dims[64];
  if (int32_t e = check_relu_cap(fn, cap)) return e;
  if (int32_t e = check_bn_fwd_train(fn, dims, sizeof dims, y, mask, save_mean, save_invstd,
                                     running_mean, running_var, x, residual, gamma, beta, m, c,
                                     eps))
    return e;
  const float* px = cfptr(x);
  const float* shift = px;  // first row
  double* st = reinterpret_cast<double*>(
      scratch(kSlotConvPartial, static_cast<size_t>(4 * round_up(c, 8) + 6 * c)));
  double* s1 = st;
  double* s2 = st + round_up(c, 8);
  // mean as a float pair hi + lo: x - hi is exact for x near the mean, so a large mean does not
  // cost the normalized output its low bits.
  float* mean_hi = reinterpret_cast<float*>(s2 + round_up(c, 8));
  float* mean_lo = mean_hi + c;
  float* scale_f = mean_lo + c;
  double* const sums[2] = {s1, s2};
  channel_sums<2>(m, c, sums, [&](int, int64_t b, int64_t e, double* const* acc) {
    double* __restrict p1 = acc[0];
    double* __restrict p2 = acc[1];
    if (c % 16 == 0) {
      const int64_t chunk = std::max<int64_t>(1, 4096 / c);
      for (int64_t r = b; r < e; r += chunk) {
        const int64_t re = std::min(r + chunk, e);
        for (int64_t j = 0; j < c; j += 16) {
          v8d a[4] = {};
          shifted_sums16(a, px, c, j, r, re, shift, [](v16f) {});
          add8d(p1 + j, a[0]), add8d(p1 + j + 8, a[1]), add8d(p2 + j, a[2]), add8d(p2 + j + 8, a[3]);
        }
      }
      return;
    }
    for (int64_t i = b; i < e; ++i) {
      const float* row = px + i * c;
      for (int64_t j = 0; j < c; ++j) {
        const double d = static_cast<double>(row[j]) - static_cast<double>(shift[j]);
        p1[j] += d;
        p2[j] += d * d;
      }
    }
  });

  float* sm = fptr(save_mean);
  float* si = fptr(save_invstd);
  float* rm = fptr(running_mean);
  float* rv = fptr(running_var);
  const float* g = cfptr(gamma);
  const double md = static_cast<double>(m), mom = momentum;
  for (int64_t j = 0; j < c; ++j) {
    const double dm = s1[j] / md;
    const double mean = static_cast<double>(shift[j]) + dm;
    const double var = std::max(0.0, s2[j] / md - dm * dm);  // biased
    const double invstd = 1.0 / std::sqrt(var + static_cast<double>(eps));
    mean_hi[j] = static_cast<float>(mean);
    mean_lo[j] = static_cast<float>(mean - static_cast<double>(mean_hi[j]));
    scale_f[j] = static_cast<float>(invstd * g[j]);
    sm[j] = static_cast<float>(mean);
    si[j] = static_cast<float>(invstd);
    rm[j] = static_cast<float>((1.0 - mom) * rm[j] + mom * mean);
    rv[j] = static_cast<float>((1.0 - mom) * rv[j] + mom * var * md / (md - 1.0));
  }

  float* py = fptr(y);  // may alias x: every element is read before it is written
  const float* pr = residual ? cfptr(residual) : nullptr;
  const float* bt = cfptr(beta);
  auto rows = [&](auto res, auto relu, int64_t b, int64_t e) {
    bn_apply_rows<decltype(res)::value, decltype(relu)::value>(py, px, pr, mean_hi, mean_lo,
                                                               scale_f, bt, c, b, e, cap);
  };
  using T = std::true_type;
  using F = std::false_type;
  if (!mask) {
    parallel_for(m, std::max<int64_t>(1, kGrain / c), [&](int64_t b, int64_t e) {
      pr ? rows(T{}, F{}, b, e) : rows(F{}, F{}, b, e);
    });
    return D8_OK;
  }
  // With the mask: whole mask bytes per thread, so threads split at blocks of `blk` rows (blk * c
  // a multiple of 8), and each chunk's bits are packed while its outputs are in cache.
  uint8_t* pm = static_cast<uint8_t*>(mask->data);
  const int64_t blk = 8 / std::gcd<int64_t>(c, 8);
  const int64_t chunk = round_up(std::max<int64_t>(1, 4096 / c), blk);
  parallel_for(ceil_div(m, blk), std::max<int64_t>(1, kGrain / (c * blk)), [&](int64_t b, int64_t e) {
    for (int64_t r = b * blk, end = std::min(e * blk, m); r < end; r += chunk) {
      const int64_t re = std::min(r + chunk, end);
      pr ? rows(T{}, T{}, r, re) : rows(F{}, T{}, r, re);
      pack_positive_bits(pm + r * c / 8, py + r * c, (re - r) * c, cap);
    }
  });
  return D8_OK;
}

}  // namespace

extern "C" int32_t d8_batchnorm_fwd_train(d8_buffer* y, d8_buffer* save_mean,
                                          d8_buffer* save_invstd, d8_buffer* running_mean,
                                          d8_buffer* running_var, const d8_buffer* x,
                                          const d8_buffer* gamma, const d8_buffer* beta, int64_t m,
                                          int32_t c, float momentum, float eps) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    return bn_fwd_train(fn, y, nullptr, save_mean, save_invstd, running_mean, running_var, x,
                        nullptr, gamma, beta, m, c, momentum, eps, 0.0f);
  });
}

extern "C" int32_t d8_batchnorm_relu_fwd_train(d8_buffer* y, d8_buffer* mask, d8_buffer* save_mean,
                                               d8_buffer* save_invstd, d8_buffer* running_mean,
                                               d8_buffer* running_var, const d8_buffer* x,
                                               const d8_buffer* residual, const d8_buffer* gamma,
                                               const d8_buffer* beta, int64_t m, int32_t c,
                                               float momentum, float eps, float cap) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    if (!mask) return fail(D8_ERR_INVALID_ARGUMENT, "%s: mask is null", fn);
    return bn_fwd_train(fn, y, mask, save_mean, save_invstd, running_mean, running_var, x,
                        residual, gamma, beta, m, c, momentum, eps, cap);
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
    if (int32_t e = check_buffer(fn, "y", y, mc, dims)) return e;
    if (int32_t e = check_buffer(fn, "x", x, mc, dims)) return e;
    if (int32_t e = check_buffer(fn, "gamma", gamma, cb, dims)) return e;
    if (int32_t e = check_buffer(fn, "beta", beta, cb, dims)) return e;
    if (int32_t e = check_buffer(fn, "running_mean", running_mean, cb, dims)) return e;
    if (int32_t e = check_buffer(fn, "running_var", running_var, cb, dims)) return e;
    if (!(eps > 0.0f))
      return fail(D8_ERR_INVALID_ARGUMENT, "%s: eps must be positive, got %g", fn,
                  static_cast<double>(eps));
    float* tab = scratch(kSlotMisc, static_cast<size_t>(2 * c));
    float* scale = tab;
    float* offs = tab + c;
    const float* g = cfptr(gamma);
    const float* bt = cfptr(beta);
    const float* rm = cfptr(running_mean);
    const float* rv = cfptr(running_var);
    for (int64_t j = 0; j < c; ++j) {
      const double s = static_cast<double>(g[j]) / std::sqrt(static_cast<double>(rv[j]) + eps);
      scale[j] = static_cast<float>(s);
      offs[j] = static_cast<float>(static_cast<double>(bt[j]) - s * rm[j]);
    }
    const float* px = cfptr(x);
    float* py = fptr(y);
    parallel_for(m, std::max<int64_t>(1, kGrain / c), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const float* xr = px + i * c;
        float* yr = py + i * c;
        for (int64_t j = 0; j < c; ++j) yr[j] = xr[j] * scale[j] + offs[j];
      }
    });
    return D8_OK;
  });
}

namespace {

// The training backward; with a mask (the fused ReLU's), the gradient is g = dy where the mask bit
// is set, else 0, built per chunk of rows in a per-thread buffer (never in memory as a whole), and
// written to dresidual as well when that is non-null (the residual branch's gradient).
int32_t bn_bwd(const char* fn, d8_buffer* dx, d8_buffer* dres, d8_buffer* dgamma, d8_buffer* dbeta,
               const d8_buffer* dy, const d8_buffer* mask, const d8_buffer* x,
               const d8_buffer* gamma, const d8_buffer* save_mean, const d8_buffer* save_invstd,
               int64_t m, int32_t c) {
  char dims[64];
  if (int32_t e = check_bn_bwd(fn, dims, sizeof dims, dx, dres, dgamma, dbeta, dy, mask, x, gamma,
                               save_mean, save_invstd, m, c))
    return e;

  const float* px = cfptr(x);
  const float* pdy = cfptr(dy);
  const uint8_t* pm = mask ? static_cast<const uint8_t*>(mask->data) : nullptr;
  const float* mean = cfptr(save_mean);
  const float* invstd = cfptr(save_invstd);
  const float* g = cfptr(gamma);
  const int64_t cd = round_up(c, 8);
  double* st = reinterpret_cast<double*>(
      scratch(kSlotConvPartial, static_cast<size_t>(6 * cd + 8 * c)));
  double* sdy = st;
  double* sdyx = st + cd;
  double* sx = st + 2 * cd;
  float* k1 = reinterpret_cast<float*>(st + 3 * cd);
  float* k2 = k1 + c;
  float* k3 = k2 + c;
  float* mlo = k3 + c;
  // Rows of the gradient per chunk and the per-thread chunk buffers (masked case only).
  const int64_t chunk = std::max<int64_t>(1, 4096 / c);
  float* gbuf = pm && c % 16 != 0
                    ? scratch(kSlotConvCol, static_cast<size_t>(num_threads() * chunk * c))
                    : nullptr;
  // The gradient of rows [r, re): dy itself, or its masked copy in thread t's buffer.
  auto grad_rows = [&](int t, int64_t r, int64_t re) -> const float* {
    if (!pm) return pdy + r * c;
    float* buf = gbuf + t * chunk * c;
    masked_floats(buf, pdy + r * c, pm, r * c, (re - r) * c);
    return buf;
  };
  // sdy = sum dy, sdyx = sum dy * (x - mean), sx = sum (x - mean). save_mean is the batch
  // mean rounded to float; sx / m recovers the rounding (the forward normalized with the
  // unrounded mean), so a large mean does not leak into dgamma and dx.
  double* const sums[3] = {sdy, sdyx, sx};
  channel_sums<3>(m, c, sums, [&](int t, int64_t b, int64_t e, double* const* acc) {
    double* __restrict p1 = acc[0];
    double* __restrict p2 = acc[1];
    double* __restrict p3 = acc[2];
    if (c % 16 == 0) {  // blocks of 16 channels, g masked in registers, sums in registers
      // Float partial sums over kRowsF rows, then added in double: 4 float operations per 16
      // values instead of 12 in double (6 conversions, 6 sums). x - mean is computed in float
      // (exact when x and the mean are within a factor 2 of each other, else rounded once, as
      // the second pass rounds it); a partial of kRowsF rows errs by at most kRowsF float
      // roundings of its terms. Measured (Zen 4, 2 threads, ReLU mask and residual, best of 500
      // calls, the two builds alternating on a busy host): the whole backward [50176, 16] 0.33-0.48
      // -> 0.20-0.37 ms, [12544, 32] 0.163-0.167 -> 0.132-0.138 ms.
      constexpr int64_t kRowsF = 8;
      for (int64_t r = b; r < e; r += chunk) {
        const int64_t re = std::min(r + chunk, e);
        for (int64_t j = 0; j < c; j += 16) {
          const v16f mu = load16(mean + j);
          v8d s1l{}, s1h{}, s2l{}, s2h{}, s3l{}, s3h{};
          for (int64_t i0 = r; i0 < re; i0 += kRowsF) {
            const int64_t i1 = std::min(i0 + kRowsF, re);
            v16f f1{}, f2{}, f3{};
            for (int64_t i = i0; i < i1; ++i) {
              v16f gv = load16(pdy + i * c + j);
              if (pm) gv = keep16(gv, pm, i * c + j);
              const v16f xc = load16(px + i * c + j) - mu;
              f1 += gv, f2 += gv * xc, f3 += xc;
            }
            s1l += lo8d(f1), s1h += hi8d(f1), s2l += lo8d(f2), s2h += hi8d(f2);
            s3l += lo8d(f3), s3h += hi8d(f3);
          }
          add8d(p1 + j, s1l), add8d(p1 + j + 8, s1h), add8d(p2 + j, s2l);
          add8d(p2 + j + 8, s2h), add8d(p3 + j, s3l), add8d(p3 + j + 8, s3h);
        }
      }
      return;
    }
    for (int64_t r = b; r < e; r += chunk) {
      const int64_t re = std::min(r + chunk, e);
      const float* gr = grad_rows(t, r, re);
      for (int64_t i = r; i < re; ++i) {
        const float* xr = px + i * c;
        const float* dr = gr + (i - r) * c;
        for (int64_t j = 0; j < c; ++j) {
          const double d = dr[j];
          const double xc = static_cast<double>(xr[j]) - static_cast<double>(mean[j]);
          p1[j] += d;
          p2[j] += d * xc;
          p3[j] += xc;
        }
      }
    }
  });
  float* dg = fptr(dgamma);
  float* dbt = fptr(dbeta);
  const double md = static_cast<double>(m);
  for (int64_t j = 0; j < c; ++j) {
    const double is = invstd[j];
    const double dmean = sx[j] / md;  // true mean - save_mean
    mlo[j] = static_cast<float>(dmean);
    const double dgam = (sdyx[j] - dmean * sdy[j]) * is;  // sum dy * xhat
    dg[j] = static_cast<float>(dgam);
    dbt[j] = static_cast<float>(sdy[j]);
    // dx = gamma*invstd * (dy - sum(dy)/m - xhat * sum(dy*xhat)/m)
    k1[j] = static_cast<float>(g[j] * is);
    k2[j] = static_cast<float>(sdy[j] / md);
    k3[j] = static_cast<float>(dgam / md * is);
  }
  float* pdx = fptr(dx);  // may alias dy: each element is read before it is written
  float* pdr = dres ? fptr(dres) : nullptr;
  const int nt = threads_for(m * c, kGrain);
  parallel(nt, [&](int t, int T) {
    const int64_t b = m * t / T, e = m * (t + 1) / T;
    if (c % 16 == 0) {  // dx and dresidual from dy and the mask bits directly, no g buffer
      for (int64_t r = b; r < e; r += chunk) {
        const int64_t re = std::min(r + chunk, e);
        for (int64_t j = 0; j < c; j += 16) {
          const v16f a1 = load16(k1 + j), a2 = load16(k2 + j), a3 = load16(k3 + j);
          const v16f mu = load16(mean + j), ml = load16(mlo + j);
          for (int64_t i = r; i < re; ++i) {
            v16f gv = load16(pdy + i * c + j);
            if (pm) gv = keep16(gv, pm, i * c + j);
            if (pdr) store16(pdr + i * c + j, gv);
            const v16f xv = load16(px + i * c + j);
            store16(pdx + i * c + j, a1 * (gv - a2 - ((xv - mu) - ml) * a3));
          }
        }
      }
      return;
    }
    for (int64_t r = b; r < e; r += chunk) {
      const int64_t re = std::min(r + chunk, e);
      const float* gr = grad_rows(t, r, re);
      if (pdr) copy_floats(pdr + r * c, gr, (re - r) * c);
      for (int64_t i = r; i < re; ++i) {
        const float* xr = px + i * c;
        const float* dr = gr + (i - r) * c;
        float* o = pdx + i * c;
        for (int64_t j = 0; j < c; ++j)
          o[j] = k1[j] * (dr[j] - k2[j] - ((xr[j] - mean[j]) - mlo[j]) * k3[j]);
      }
    }
  });
  return D8_OK;
}

}  // namespace

extern "C" int32_t d8_batchnorm_bwd(d8_buffer* dx, d8_buffer* dgamma, d8_buffer* dbeta,
                                    const d8_buffer* dy, const d8_buffer* x, const d8_buffer* gamma,
                                    const d8_buffer* save_mean, const d8_buffer* save_invstd,
                                    int64_t m, int32_t c) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    return bn_bwd(fn, dx, nullptr, dgamma, dbeta, dy, nullptr, x, gamma, save_mean, save_invstd,
                  m, c);
  });
}

extern "C" int32_t d8_batchnorm_relu_bwd(d8_buffer* dx, d8_buffer* dresidual, d8_buffer* dgamma,
                                         d8_buffer* dbeta, const d8_buffer* dy,
                                         const d8_buffer* mask, const d8_buffer* x,
                                         const d8_buffer* gamma, const d8_buffer* save_mean,
                                         const d8_buffer* save_invstd, int64_t m, int32_t c) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    if (!mask) return fail(D8_ERR_INVALID_ARGUMENT, "%s: mask is null", fn);
    return bn_bwd(fn, dx, dresidual, dgamma, dbeta, dy, mask, x, gamma, save_mean, save_invstd, m,
                  c);
  });
}
