// sgd.cpp: SGD with momentum / Nesterov / weight decay (PyTorch semantics, dampening 0).
#include "common.h"

#include <cstdio>

using namespace d8cpu;

#include <cmath>
#include <cstring>

namespace {
// Whether any of x[0..n) is NaN or infinite: the exponent bits all set, tested as integers (no
// float compares, so the loop vectorizes).
bool any_nonfinite(const float* __restrict x, int64_t n) {
  uint32_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    uint32_t b;
    std::memcpy(&b, x + i, 4);
    bad |= ((b & 0x7f800000u) == 0x7f800000u) ? 1u : 0u;
  }
  return bad != 0;
}
}  // namespace

extern "C" int32_t d8_sgd_step(d8_buffer* w, d8_buffer* momentum_buf, d8_buffer* nonfinite,
                               const d8_buffer* grad, int64_t n, float lr, float momentum,
                               float weight_decay, int32_t nesterov) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[48];
    snprintf(dims, sizeof dims, "n=%lld", static_cast<long long>(n));
    if (n < 0)
      return fail(D8_ERR_INVALID_ARGUMENT, "%s: n must be non-negative (%s)", fn, dims);
    if (int32_t e = check_buffer(fn, "w", w, mul64(n, 4), dims)) return e;
    if (int32_t e = check_buffer(fn, "grad", grad, mul64(n, 4), dims)) return e;
    const bool use_mom = momentum != 0.0f;
    if (use_mom || momentum_buf)
      if (int32_t e = check_buffer(fn, "momentum_buf", momentum_buf, mul64(n, 4), dims)) return e;
    if (nonfinite)
      if (int32_t e = check_buffer(fn, "nonfinite", nonfinite, 4, dims)) return e;
    bool bad = false;
    float* pw = fptr(w);
    const float* pg = cfptr(grad);
    float* pb = momentum_buf ? fptr(momentum_buf) : nullptr;
    const bool nest = nesterov != 0;
    // nonfinite: one flag per thread range, or-ed after the loop (a relaxed store of true)
    parallel_for(n, 1 << 15, [&](int64_t b, int64_t e) {
      if (nonfinite && any_nonfinite(pg + b, e - b)) __atomic_store_n(&bad, true, __ATOMIC_RELAXED);
      if (!use_mom) {
        for (int64_t i = b; i < e; ++i) pw[i] -= lr * (pg[i] + weight_decay * pw[i]);
      } else if (nest) {
        for (int64_t i = b; i < e; ++i) {
          const float g = pg[i] + weight_decay * pw[i];
          const float m = momentum * pb[i] + g;
          pb[i] = m;
          pw[i] -= lr * (g + momentum * m);
        }
      } else {
        for (int64_t i = b; i < e; ++i) {
          const float g = pg[i] + weight_decay * pw[i];
          const float m = momentum * pb[i] + g;
          pb[i] = m;
          pw[i] -= lr * m;
        }
      }
      if (nonfinite && any_nonfinite(pw + b, e - b)) __atomic_store_n(&bad, true, __ATOMIC_RELAXED);
    });
    if (bad) static_cast<uint32_t*>(nonfinite->data)[0] = 1u;
    return D8_OK;
  });
}
