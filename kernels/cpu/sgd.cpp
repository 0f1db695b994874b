// sgd.cpp: SGD with momentum / Nesterov / weight decay (PyTorch semantics, dampening 0).
#include "common.h"

#include <cstdio>

using namespace d8cpu;

extern "C" int32_t d8_sgd_step(d8_buffer* w, d8_buffer* momentum_buf, const d8_buffer* grad,
                               int64_t n, float lr, float momentum, float weight_decay,
                               int32_t nesterov) {
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
    float* pw = fptr(w);
    const float* pg = cfptr(grad);
    float* pb = momentum_buf ? fptr(momentum_buf) : nullptr;
    const bool nest = nesterov != 0;
    parallel_for(n, 1 << 15, [&](int64_t b, int64_t e) {
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
    });
    return D8_OK;
  });
}
