// elementwise.cpp: fill, add, axpy, uint8 -> float, relu, channel concat / split.
// Plain loops over contiguous memory (auto-vectorized), split across threads when large.
#include "common.h"

#include <cstdio>
#include <cstring>

using namespace d8cpu;

namespace {

constexpr int64_t kGrain = int64_t{1} << 15;  // elements per thread at least

int32_t check_count(const char* fn, int64_t n) {
  if (n < 0)
    return fail(D8_ERR_INVALID_ARGUMENT, "%s: n must be non-negative, got %lld", fn,
                static_cast<long long>(n));
  return D8_OK;
}

void dims_n(char* out, size_t cap, int64_t n) {
  snprintf(out, cap, "n=%lld", static_cast<long long>(n));
}

}  // namespace

extern "C" int32_t d8_fill_f32(d8_buffer* y, int64_t n, float value) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[48];
    dims_n(dims, sizeof dims, n);
    if (int32_t e = check_count(fn, n)) return e;
    if (int32_t e = check_buffer(fn, "y", y, mul64(n, 4), dims)) return e;
    float* py = fptr(y);
    parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) py[i] = value;
    });
    return D8_OK;
  });
}

extern "C" int32_t d8_add_f32(d8_buffer* y, const d8_buffer* a, const d8_buffer* b, int64_t n) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[48];
    dims_n(dims, sizeof dims, n);
    if (int32_t e = check_count(fn, n)) return e;
    if (int32_t e = check_buffer(fn, "y", y, mul64(n, 4), dims)) return e;
    if (int32_t e = check_buffer(fn, "a", a, mul64(n, 4), dims)) return e;
    if (int32_t e = check_buffer(fn, "b", b, mul64(n, 4), dims)) return e;
    float* py = fptr(y);  // may alias a or b: elementwise, same index
    const float* pa = cfptr(a);
    const float* pb = cfptr(b);
    parallel_for(n, kGrain, [&](int64_t b0, int64_t e) {
      for (int64_t i = b0; i < e; ++i) py[i] = pa[i] + pb[i];
    });
    return D8_OK;
  });
}

extern "C" int32_t d8_axpy_f32(d8_buffer* y, float alpha, const d8_buffer* x, int64_t n) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[48];
    dims_n(dims, sizeof dims, n);
    if (int32_t e = check_count(fn, n)) return e;
    if (int32_t e = check_buffer(fn, "y", y, mul64(n, 4), dims)) return e;
    if (int32_t e = check_buffer(fn, "x", x, mul64(n, 4), dims)) return e;
    float* py = fptr(y);
    const float* px = cfptr(x);
    parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) py[i] += alpha * px[i];
    });
    return D8_OK;
  });
}

extern "C" int32_t d8_u8_to_f32(d8_buffer* y, const d8_buffer* x, int64_t n, float scale,
                                float shift) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[48];
    dims_n(dims, sizeof dims, n);
    if (int32_t e = check_count(fn, n)) return e;
    if (int32_t e = check_buffer(fn, "y", y, mul64(n, 4), dims)) return e;
    if (int32_t e = check_buffer(fn, "x", x, n, dims)) return e;
    float* __restrict py = fptr(y);
    const uint8_t* __restrict px = static_cast<const uint8_t*>(x->data);
    if (x == y)
      return fail(D8_ERR_INVALID_ARGUMENT, "%s: y and x must be different buffers", fn);
    parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) py[i] = static_cast<float>(px[i]) * scale + shift;
    });
    return D8_OK;
  });
}

extern "C" int32_t d8_relu_fwd(d8_buffer* y, const d8_buffer* x, int64_t n) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[48];
    dims_n(dims, sizeof dims, n);
    if (int32_t e = check_count(fn, n)) return e;
    if (int32_t e = check_buffer(fn, "y", y, mul64(n, 4), dims)) return e;
    if (int32_t e = check_buffer(fn, "x", x, mul64(n, 4), dims)) return e;
    float* py = fptr(y);
    const float* px = cfptr(x);
    parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) py[i] = px[i] > 0.0f ? px[i] : 0.0f;
    });
    return D8_OK;
  });
}

extern "C" int32_t d8_relu_bwd(d8_buffer* dx, const d8_buffer* dy, const d8_buffer* y, int64_t n) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[48];
    dims_n(dims, sizeof dims, n);
    if (int32_t e = check_count(fn, n)) return e;
    if (int32_t e = check_buffer(fn, "dx", dx, mul64(n, 4), dims)) return e;
    if (int32_t e = check_buffer(fn, "dy", dy, mul64(n, 4), dims)) return e;
    if (int32_t e = check_buffer(fn, "y", y, mul64(n, 4), dims)) return e;
    float* pdx = fptr(dx);
    const float* pdy = cfptr(dy);
    const float* py = cfptr(y);
    parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const float g = pdy[i];  // unconditional load: a select, not a branch per element
        pdx[i] = py[i] > 0.0f ? g : 0.0f;
      }
    });
    return D8_OK;
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
    if (int32_t e = check_buffer(fn, "y", y, mul64(rows, c, 4), dims)) return e;
    if (int32_t e = check_buffer(fn, "a", a, mul64(rows, ca, 4), dims)) return e;
    if (int32_t e = check_buffer(fn, "b", b, mul64(rows, cb, 4), dims)) return e;
    if (y == a || y == b)
      return fail(D8_ERR_INVALID_ARGUMENT, "%s: y must not alias a or b", fn);
    float* py = fptr(y);
    const float* pa = cfptr(a);
    const float* pb = cfptr(b);
    parallel_for(rows, std::max<int64_t>(1, kGrain / c), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        std::memcpy(py + r * c, pa + r * ca, static_cast<size_t>(ca) * 4);
        std::memcpy(py + r * c + ca, pb + r * cb, static_cast<size_t>(cb) * 4);
      }
    });
    return D8_OK;
  });
}

extern "C" int32_t d8_split_channels(d8_buffer* da, d8_buffer* db, const d8_buffer* dy,
                                     int64_t rows, int32_t ca, int32_t cb) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[96];
    if (int32_t e = check_concat(fn, dims, sizeof dims, rows, ca, cb)) return e;
    const int64_t c = int64_t{ca} + cb;
    if (int32_t e = check_buffer(fn, "da", da, mul64(rows, ca, 4), dims)) return e;
    if (int32_t e = check_buffer(fn, "db", db, mul64(rows, cb, 4), dims)) return e;
    if (int32_t e = check_buffer(fn, "dy", dy, mul64(rows, c, 4), dims)) return e;
    if (da == dy || db == dy || da == db)
      return fail(D8_ERR_INVALID_ARGUMENT, "%s: da, db and dy must be different buffers", fn);
    float* pa = fptr(da);
    float* pb = fptr(db);
    const float* py = cfptr(dy);
    parallel_for(rows, std::max<int64_t>(1, kGrain / c), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        std::memcpy(pa + r * ca, py + r * c, static_cast<size_t>(ca) * 4);
        std::memcpy(pb + r * cb, py + r * c + ca, static_cast<size_t>(cb) * 4);
      }
    });
    return D8_OK;
  });
}
