// linear.cpp: fully connected layer as three calls of the one GEMM (gemm.h).
//   fwd:   y[m, n]  = x[m, k] . w[n, k]^T (+ bias[n])   B = w viewed transposed (rsb 1, csb k)
//   dgrad: dx[m, k] = dy[m, n] . w[n, k]
//   wgrad: dw[n, k] = dy[m, n]^T . x[m, k]              A = dy viewed transposed (rsa 1, csa n)
#include "common.h"
#include "gemm.h"

using namespace d8cpu;

extern "C" int32_t d8_linear_fwd(d8_buffer* y, const d8_buffer* x, const d8_buffer* w,
                                 const d8_buffer* bias, int64_t m, int32_t n, int32_t k) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[96];
    if (int32_t e = check_mnk(fn, dims, sizeof dims, m, n, k)) return e;
    if (int32_t e = check_buffer(fn, "y", y, mul64(m, n, 4), dims)) return e;
    if (int32_t e = check_buffer(fn, "x", x, mul64(m, k, 4), dims)) return e;
    if (int32_t e = check_buffer(fn, "w", w, mul64(n, k, 4), dims)) return e;
    if (bias)
      if (int32_t e = check_buffer(fn, "bias", bias, mul64(n, 4), dims)) return e;
    sgemm(m, n, k, 1.0f, cfptr(x), k, 1, cfptr(w), 1, k, 0.0f, fptr(y), n,
          bias ? cfptr(bias) : nullptr);
    return D8_OK;
  });
}

extern "C" int32_t d8_linear_dgrad(d8_buffer* dx, const d8_buffer* dy, const d8_buffer* w,
                                   int64_t m, int32_t n, int32_t k) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[96];
    if (int32_t e = check_mnk(fn, dims, sizeof dims, m, n, k)) return e;
    if (int32_t e = check_buffer(fn, "dx", dx, mul64(m, k, 4), dims)) return e;
    if (int32_t e = check_buffer(fn, "dy", dy, mul64(m, n, 4), dims)) return e;
    if (int32_t e = check_buffer(fn, "w", w, mul64(n, k, 4), dims)) return e;
    sgemm(m, k, n, 1.0f, cfptr(dy), n, 1, cfptr(w), k, 1, 0.0f, fptr(dx), k, nullptr);
    return D8_OK;
  });
}

extern "C" int32_t d8_linear_wgrad(d8_buffer* dw, const d8_buffer* x, const d8_buffer* dy,
                                   int64_t m, int32_t n, int32_t k) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[96];
    if (int32_t e = check_mnk(fn, dims, sizeof dims, m, n, k)) return e;
    if (int32_t e = check_buffer(fn, "dw", dw, mul64(n, k, 4), dims)) return e;
    if (int32_t e = check_buffer(fn, "x", x, mul64(m, k, 4), dims)) return e;
    if (int32_t e = check_buffer(fn, "dy", dy, mul64(m, n, 4), dims)) return e;
    sgemm(n, k, m, 1.0f, cfptr(dy), 1, n, cfptr(x), k, 1, 0.0f, fptr(dw), k, nullptr);
    return D8_OK;
  });
}
