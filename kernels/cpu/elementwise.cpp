// elementwise.cpp: fill, add, axpy, uint8 -> float, relu, channel concat / split.
// Plain loops over contiguous memory (auto-vectorized), split across threads when large.
#include "common.h"

#include <cstdio>
#include <cstring>

using namespace d8cpu;

namespace {

constexpr int64_t kGrain = int64_t{1} << 15;  // elements per thread at least

// An n-element operand: name, buffer, bytes per element.
struct NArg {
  const char* name;
  const d8_buffer* buf;
  int64_t elem = 4;
};

// Writes "n=.." into dims, checks n >= 0 and that every buffer holds n elements (in order).
int32_t check_n(const char* fn, char* dims, size_t cap, int64_t n,
                std::initializer_list<NArg> args) {
  snprintf(dims, cap, "n=%lld", static_cast<long long>(n));
  if (n < 0)
    return fail(D8_ERR_INVALID_ARGUMENT, "%s: n must be non-negative, got %lld", fn,
                static_cast<long long>(n));
  for (const NArg& a : args)
    if (int32_t e = check_buffer(fn, a.name, a.buf, mul64(n, a.elem), dims)) return e;
  return D8_OK;
}

}  // namespace

extern "C" int32_t d8_fill_f32(d8_buffer* y, int64_t n, float value) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[48];
    if (int32_t e = check_n(fn, dims, sizeof dims, n, {{"y", y}})) return e;
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
    if (int32_t e = check_n(fn, dims, sizeof dims, n, {{"y", y}, {"a", a}, {"b", b}})) return e;
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
    if (int32_t e = check_n(fn, dims, sizeof dims, n, {{"y", y}, {"x", x}})) return e;
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
    if (int32_t e = check_n(fn, dims, sizeof dims, n, {{"y", y}, {"x", x, 1}})) return e;
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
    if (int32_t e = check_n(fn, dims, sizeof dims, n, {{"y", y}, {"x", x}})) return e;
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
    if (int32_t e = check_n(fn, dims, sizeof dims, n, {{"dx", dx}, {"dy", dy}, {"y", y}})) return e;
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

extern "C" int32_t d8_relu_fwd_mask(d8_buffer* y, d8_buffer* mask, const d8_buffer* x,
                                    int64_t n) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[48];
    if (int32_t e = check_n(fn, dims, sizeof dims, n, {{"y", y}, {"x", x}})) return e;
    const int64_t nb = (n + 7) / 8;
    if (int32_t e = check_buffer(fn, "mask", mask, nb, dims)) return e;
    if (mask == x || mask == y)
      return fail(D8_ERR_INVALID_ARGUMENT, "%s: mask must not be the same buffer as x or y", fn);
    float* py = fptr(y);
    const float* px = cfptr(x);
    uint8_t* pm = static_cast<uint8_t*>(mask->data);
    // Whole bytes per thread: 8 elements a byte, the last byte's missing elements count as 0.
    parallel_for(nb, kGrain / 8, [&](int64_t b, int64_t e) {
      const int64_t i0 = b * 8, cnt = std::min(e * 8, n) - i0;
      for (int64_t i = i0; i < i0 + cnt; ++i) py[i] = px[i] > 0.0f ? px[i] : 0.0f;
      pack_positive_bits(pm + b, py + i0, cnt);
    });
    return D8_OK;
  });
}

extern "C" int32_t d8_relu_bwd_mask(d8_buffer* dx, const d8_buffer* dy, const d8_buffer* mask,
                                    int64_t n) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    char dims[48];
    if (int32_t e = check_n(fn, dims, sizeof dims, n, {{"dx", dx}, {"dy", dy}})) return e;
    const int64_t nb = (n + 7) / 8;
    if (int32_t e = check_buffer(fn, "mask", mask, nb, dims)) return e;
    if (mask == dx || mask == dy)
      return fail(D8_ERR_INVALID_ARGUMENT, "%s: mask must not be the same buffer as dx or dy", fn);
    float* pdx = fptr(dx);
    const float* pdy = cfptr(dy);
    const uint8_t* pm = static_cast<const uint8_t*>(mask->data);
    parallel_for(nb, kGrain / 8, [&](int64_t b, int64_t e) {
      const int64_t i0 = b * 8;
      masked_floats(pdx + i0, pdy + i0, pm, i0, std::min(e * 8, n) - i0);
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
    if (int32_t e = check_buffers(fn, dims, {{"y", y, mul64(rows, c, 4)},
                                             {"a", a, mul64(rows, ca, 4)},
                                             {"b", b, mul64(rows, cb, 4)}}))
      return e;
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
    if (int32_t e = check_buffers(fn, dims, {{"da", da, mul64(rows, ca, 4)},
                                             {"db", db, mul64(rows, cb, 4)},
                                             {"dy", dy, mul64(rows, c, 4)}}))
      return e;
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
