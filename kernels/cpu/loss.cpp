// loss.cpp: softmax cross-entropy over logits [n, classes] with int32 labels.
#include "common.h"

#include <cmath>
#include <cstdio>

using namespace d8cpu;

namespace {

int32_t check_xent(const char* fn, char* dims, size_t cap, int32_t n, int32_t classes) {
  snprintf(dims, cap, "n=%d,classes=%d", n, classes);
  if (n < 1 || classes < 1)
    return fail(D8_ERR_INVALID_ARGUMENT, "%s: n and classes must be positive (%s)", fn, dims);
  return D8_OK;
}

int32_t check_labels(const char* fn, const int32_t* labels, int32_t n, int32_t classes) {
  for (int32_t i = 0; i < n; ++i)
    if (labels[i] < 0 || labels[i] >= classes)
      return fail(D8_ERR_INVALID_ARGUMENT, "%s: labels[%d] = %d is outside [0, %d)", fn, i,
                  labels[i], classes);
  return D8_OK;
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
    const int32_t* lab = static_cast<const int32_t*>(labels->data);
    if (int32_t e = check_labels(fn, lab, n, classes)) return e;
    const float* x = cfptr(logits);
    float* pr = fptr(probs);  // may alias logits: each row is read before it is overwritten
    const int64_t C = classes;
    const int nt = threads_for(int64_t{n} * C, 1 << 15);
    double* part = reinterpret_cast<double*>(scratch(kSlotMisc, static_cast<size_t>(4 * nt)));
    const int team = parallel(nt, [&](int t, int T) {
      double loss = 0.0, correct = 0.0;
      for (int64_t i = int64_t{n} * t / T; i < int64_t{n} * (t + 1) / T; ++i) {
        const float* xi = x + i * C;
        float* pi = pr + i * C;
        float mx = xi[0];
        int64_t am = 0;
        for (int64_t j = 1; j < C; ++j)
          if (xi[j] > mx) mx = xi[j], am = j;
        const int64_t y = lab[i];
        const float xy = xi[y];
        double sum = 0.0;
        for (int64_t j = 0; j < C; ++j) {
          const float e = std::exp(xi[j] - mx);
          pi[j] = e;
          sum += e;
        }
        const float inv = static_cast<float>(1.0 / sum);
        for (int64_t j = 0; j < C; ++j) pi[j] *= inv;
        loss += std::log(sum) + static_cast<double>(mx) - static_cast<double>(xy);
        correct += am == y ? 1.0 : 0.0;
      }
      part[2 * t] = loss;
      part[2 * t + 1] = correct;
    });
    double loss = 0.0, correct = 0.0;
    for (int t = 0; t < team; ++t) loss += part[2 * t], correct += part[2 * t + 1];
    float* st = fptr(stats);
    st[0] = static_cast<float>(loss / n);
    st[1] = static_cast<float>(correct);
    if (accum) {
      float* a = fptr(accum);
      a[0] += static_cast<float>(loss);
      a[1] += static_cast<float>(correct);
      a[2] += static_cast<float>(n);
      a[3] += 1.0f;
    }
    return D8_OK;
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
    const int32_t* lab = static_cast<const int32_t*>(labels->data);
    if (seed)
      if (int32_t e = check_buffer(fn, "seed", seed, 4, dims)) return e;
    if (int32_t e = check_labels(fn, lab, n, classes)) return e;
    if (seed) scale *= cfptr(seed)[0];
    const float* p = cfptr(probs);
    float* d = fptr(dlogits);  // may alias probs
    const int64_t C = classes;
    parallel_for(n, std::max<int64_t>(1, (1 << 15) / C), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        for (int64_t j = 0; j < C; ++j) d[i * C + j] = scale * p[i * C + j];
        d[i * C + lab[i]] -= scale;
      }
    });
    return D8_OK;
  });
}
