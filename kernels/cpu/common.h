// common.h: internal helpers shared by every cpu kernel file (not part of the ABI).
//   - error reporting (fail, the last-error message) and the exception guard at the ABI boundary
//   - buffer / context structs and argument checks
//   - thread count and the parallel helpers (team.cpp's pool, else OpenMP, when compiled with
//     -fopenmp; serial otherwise)
//   - per-thread scratch memory that is reused between calls
#ifndef DAINT8_CPU_COMMON_H
#define DAINT8_CPU_COMMON_H

#include "daint8.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <new>
#include <type_traits>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

// ---- handles (opaque in the ABI) ------------------------------------------------------------
struct d8_context {
  uint64_t magic;
  int32_t threads;       // 0 = library default (omp_get_max_threads())
  int32_t int8_variant;  // 0 = auto (best the CPU has), else a forced i8 variant
};

struct d8_buffer {
  uint64_t magic;
  int64_t bytes;
  void* data;  // 64-byte aligned
  d8_context* ctx;
};

// Internal symbols stay out of the shared library's dynamic symbol table.
#pragma GCC visibility push(hidden)

namespace d8cpu {

constexpr uint64_t kContextMagic = 0x6438636f6e746578ull;  // "d8contex"
constexpr uint64_t kBufferMagic = 0x6438627566666572ull;   // "d8buffer"
constexpr uint64_t kDeadMagic = 0x6465616462656566ull;     // freed handle

// ---- errors ---------------------------------------------------------------------------------
// Formats the calling thread's last-error message and returns code. Never throws.
int32_t fail(int32_t code, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

// Runs body(fn) and turns every escaping C++ exception into a status code.
template <class F>
int32_t guard(const char* fn, F&& body) noexcept {
  try {
    return body(fn);
  } catch (const std::bad_alloc&) {
    return fail(D8_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
  } catch (const std::exception& e) {
    return fail(D8_ERR_INTERNAL, "%s: internal error: %s", fn, e.what());
  } catch (...) {
    return fail(D8_ERR_INTERNAL, "%s: unknown internal error", fn);
  }
}

// Product of non-negative factors, or -1 when it does not fit in int64.
inline int64_t mul64(int64_t a, int64_t b) {
  int64_t r;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r)) return -1;
  return r;
}
inline int64_t mul64(int64_t a, int64_t b, int64_t c) { return mul64(mul64(a, b), c); }
inline int64_t mul64(int64_t a, int64_t b, int64_t c, int64_t d) {
  return mul64(mul64(a, b, c), d);
}

// Null / dead handle check. name is the argument name as in the header ("y", "dw").
int32_t check_handle(const char* fn, const char* name, const d8_buffer* b);
int32_t check_context(const char* fn, const d8_context* ctx);

// Checks that b is a live buffer holding at least `need` bytes (need < 0: shape overflow).
// dims describes the shape in the message, e.g. "n=1,p=16,q=16,k=4".
int32_t check_buffer(const char* fn, const char* name, const d8_buffer* b, int64_t need,
                     const char* dims);

// check_buffer on each argument in order; the first failure's code, else D8_OK.
struct BufferArg {
  const char* name;
  const d8_buffer* buf;
  int64_t need;  // bytes
};
int32_t check_buffers(const char* fn, const char* dims, std::initializer_list<BufferArg> args);

// GEMM-like sizes: writes "m=..,n=..,k=.." into dims (cap bytes) and checks all are positive.
int32_t check_mnk(const char* fn, char* dims, size_t cap, int64_t m, int32_t n, int32_t k);

// Copies text (NUL-terminated) into out[capacity]. Too small a capacity is an error that still
// writes the truncated, terminated prefix when capacity >= 1.
int32_t write_string(const char* fn, char* out, int32_t capacity, const char* text);

// Raw data pointer of a checked buffer.
inline float* fptr(const d8_buffer* b) { return static_cast<float*>(b->data); }
inline const float* cfptr(const d8_buffer* b) { return static_cast<const float*>(b->data); }

// An output buffer `a` that must not be the input `b` (null a: nothing to check).
int32_t check_distinct(const char* fn, const char* a, const d8_buffer* pa, const char* b,
                       const d8_buffer* pb);
// Validates a convolution / pooling geometry (positive dims, groups divide channels, p and q
// match the formula, reserved fields zero). Writes "n=..,h=..,..." into dims (cap bytes).
int32_t check_conv_shape(const char* fn, const d8_conv_shape* s, char* dims, int cap,
                         int32_t allowed_flags = 0);
// check_conv_shape without a backend's own limits (kernels/arg_checks.inc).
int32_t check_conv_geometry(const char* fn, const d8_conv_shape* s, char* dims, int cap,
                            int32_t allowed_flags = 0);
// The knobs of d8_quant_decide: a message naming the bad one (kernels/arg_checks.inc).
int32_t check_knobs(const char* fn, const d8_quant_knobs* kn, char* dims, size_t cap);
// Batch-norm arguments (kernels/arg_checks.inc): positive m and c (dims gets "m=..,c=.."), each
// buffer's size; training also m >= 2 and eps > 0. mask / residual / dres may be null (plain batch
// norm); when given, their sizes and the fused op's aliasing rules are checked.
int32_t check_bn(const char* fn, char* dims, size_t cap, int64_t m, int32_t c);
// d8_batchnorm_relu_fwd_train's cap: 0 or finite > 0 (kernels/arg_checks.inc).
int32_t check_relu_cap(const char* fn, float cap);
int32_t check_bn_fwd_train(const char* fn, char* dims, size_t cap, const d8_buffer* y,
                           const d8_buffer* mask, const d8_buffer* save_mean,
                           const d8_buffer* save_invstd, const d8_buffer* running_mean,
                           const d8_buffer* running_var, const d8_buffer* x,
                           const d8_buffer* residual, const d8_buffer* gamma,
                           const d8_buffer* beta, int64_t m, int32_t c, float eps);
int32_t check_bn_bwd(const char* fn, char* dims, size_t cap, const d8_buffer* dx,
                     const d8_buffer* dres, const d8_buffer* dgamma, const d8_buffer* dbeta,
                     const d8_buffer* dy, const d8_buffer* mask, const d8_buffer* x,
                     const d8_buffer* gamma, const d8_buffer* save_mean,
                     const d8_buffer* save_invstd, int64_t m, int32_t c);

// ---- per-context settings ---------------------------------------------------------------------
// Every op runs with the settings of the context of the buffers it was given: check_handle records
// the context of each live buffer it checks on the calling thread, and the settings below read it.
void set_current_context(const d8_context* ctx);
const d8_context* current_context();  // null before the first checked buffer
int num_threads();                     // threads a parallel region may use (>= 1)
int32_t max_threads();                 // most threads a request may use (larger ones are capped)
// Whether the 16-column tiles (fp32 16 floats, avx512-vnni 16 int32) run over pairs of k: one
// 8-byte broadcast per two FMAs / vpdpbusd instead of one per instruction. Pays on cores that
// issue two 512-bit FMAs and two vpdpbusd a clock and so cannot also load a broadcast for each
// (Zen 5, measured: bench/ports/x86_ports.cpp, kernels/cpu/README.md); not on Zen 4, which splits
// a zmm operation into two halves (one a clock: a broadcast each fits). On: AMD family 26 (Zen 5)
// and later. D8_CPU_ZMM_PAIRS=1 / 0 forces it (measurements, tests).
bool zmm_pairs();

// Threads worth using for `work` units when one thread should get at least `grain` units.
inline int threads_for(int64_t work, int64_t grain) {
  int t = num_threads();
  if (grain < 1) grain = 1;
  int64_t useful = work / grain;
  if (useful < 1) useful = 1;
  return static_cast<int>(std::min<int64_t>(t, useful));
}

// The library's fork/join (team.cpp): persistent workers that take a region through one cache
// line each, the calling thread being thread 0. run() returns false when the pool does not take
// the region (busy with another calling thread, no thread could be created, D8_CPU_POOL=0), and
// parallel() opens an OpenMP region instead. barrier() is the team barrier inside parallel()'s f,
// for either kind of region; inside() says the calling thread runs a share of a pool region.
namespace team {
bool inside();
bool run(int nt, void (*fn)(void*, int, int), void* arg);
void barrier();
}  // namespace team

// Runs f(tid, nthreads) on up to nt threads and returns the team size actually obtained
// (nthreads; OpenMP may grant fewer than nt: OMP_DYNAMIC, nesting, thread limits). Code that
// combines per-thread partial results afterwards must combine that many, not nt. Threads of the
// team meet at team::barrier(). A region opened inside another (the pool's or OpenMP's) runs on
// the calling thread alone.
// f must not throw (allocate everything before calling).
template <class F>
int parallel(int nt, F&& f) {
#ifdef _OPENMP
  if (nt > 1 && !team::inside() && !omp_in_parallel()) {
    using Fr = std::remove_reference_t<F>;
    if (team::run(
            nt, [](void* a, int t, int T) { (*static_cast<Fr*>(a))(t, T); },
            const_cast<void*>(static_cast<const void*>(&f))))
      return nt;
    int size = 1;
#pragma omp parallel num_threads(nt)
    {
      const int t = omp_get_thread_num(), T = omp_get_num_threads();
      if (t == 0) size = T;
      f(t, T);
    }
    return size;
  }
#endif
  (void)nt;
  f(0, 1);
  return 1;
}

// Splits [0, n) into contiguous ranges, one per thread: f(begin, end). grain = smallest range
// worth a thread.
template <class F>
void parallel_for(int64_t n, int64_t grain, F&& f) {
  if (n <= 0) return;
  int nt = threads_for(n, grain);
  parallel(nt, [&](int t, int T) {
    int64_t b = n * t / T, e = n * (t + 1) / T;
    if (b < e) f(b, e);
  });
}

// ---- scratch memory ----------------------------------------------------------------------------
// Grow-only, 64-byte aligned buffers owned by the calling thread, one per slot, reused between
// calls (freed at thread exit). Throws std::bad_alloc. Contents are undefined.
enum ScratchSlot : int {
  kSlotPackB = 0,    // sgemm: packed B
  kSlotGemmWork,     // sgemm: per-thread packed A blocks
  kSlotConvB,        // conv: packed weights
  kSlotConvCol,      // conv: per-thread im2col / dcol chunks
  kSlotConvWork,     // conv: per-thread packed panels
  kSlotConvPartial,  // conv: per-thread partial weight gradients, transformed weights
  kSlotConvPad,      // conv: zero-padded copy of the input (implicit GEMM)
  kSlotConvOffsets,  // conv: kernel-tap offset table (implicit GEMM)
  kSlotMisc,         // small per-op tables (partial sums)
  kSlotCount
};
float* scratch(int slot, size_t nfloats);

inline int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

// Short copies / fills / adds of float runs (im2col rows, packing): inline vector code instead of
// a libc call per few floats.
// The empty asm in these loops keeps GCC from turning them into memcpy / memset calls (loop
// idiom recognition): the runs here are short (one im2col row segment, one padded row), where a
// libc call costs about as much as the copy.
inline void copy_floats(float* __restrict d, const float* __restrict s, int64_t n) {
#if defined(__AVX512F__)
  for (; n >= 16; n -= 16, d += 16, s += 16) {
    _mm512_storeu_ps(d, _mm512_loadu_ps(s));
    __asm__("");
  }
  if (n > 0) {
    const __mmask16 m = static_cast<__mmask16>((1u << n) - 1u);
    _mm512_mask_storeu_ps(d, m, _mm512_maskz_loadu_ps(m, s));
  }
#else
  typedef float v4u __attribute__((vector_size(16), aligned(4)));
  for (; n >= 4; n -= 4, d += 4, s += 4) *reinterpret_cast<v4u*>(d) = *reinterpret_cast<const v4u*>(s);
  for (; n > 0; --n) *d++ = *s++;
#endif
}
inline void zero_floats(float* __restrict d, int64_t n) {
#if defined(__AVX512F__)
  for (; n >= 16; n -= 16, d += 16) {
    _mm512_storeu_ps(d, _mm512_setzero_ps());
    __asm__("");
  }
  if (n > 0) _mm512_mask_storeu_ps(d, static_cast<__mmask16>((1u << n) - 1u), _mm512_setzero_ps());
#else
  typedef float v4u __attribute__((vector_size(16), aligned(4)));
  for (; n >= 4; n -= 4, d += 4) *reinterpret_cast<v4u*>(d) = v4u{};
  for (; n > 0; --n) *d++ = 0.0f;
#endif
}
inline void add_floats(float* __restrict d, const float* __restrict s, int64_t n) {
#if defined(__AVX512F__)
  for (; n >= 16; n -= 16, d += 16, s += 16)
    _mm512_storeu_ps(d, _mm512_add_ps(_mm512_loadu_ps(d), _mm512_loadu_ps(s)));
  if (n > 0) {
    const __mmask16 m = static_cast<__mmask16>((1u << n) - 1u);
    _mm512_mask_storeu_ps(d, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, d), _mm512_maskz_loadu_ps(m, s)));
  }
#else
  for (int64_t i = 0; i < n; ++i) d[i] += s[i];
#endif
}
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Software prefetch of a byte range, one request per 64-byte line: `for_write` asks for the lines
// in a writable state (prefetchw where the CPU has it), so the stores that follow skip the
// read-for-ownership miss. A conv calls these one output row or one input image ahead of use:
// cold outputs and inputs (the step's activations live in DRAM or L3) then arrive while the
// tiles before them compute, instead of stalling the stores and the padding copy.
// (asm volatile on x86: GCC 12 deletes a loop of __builtin_prefetch once it is inlined into a
// caller's loop, as a loop without side effects.)
inline void prefetch_bytes(const void* p, int64_t bytes, bool for_write) {
  const char* c = static_cast<const char*>(p);
  const char* e = c + bytes;
  c = reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(c) & ~uintptr_t{63});
#if defined(__x86_64__)
#if defined(__PRFCHW__)
  if (for_write)
    for (; c < e; c += 64) __asm__ volatile("prefetchw %0" : : "m"(*c));
#else
  (void)for_write;  // (portable builds: no prefetchw)
#endif
  for (; c < e; c += 64) __asm__ volatile("prefetcht0 %0" : : "m"(*c));
#else
  if (for_write)
    for (; c < e; c += 64) __builtin_prefetch(c, 1, 3);
  else
    for (; c < e; c += 64) __builtin_prefetch(c, 0, 3);
#endif
}
// [p, p + bytes) prefetched in `steps` shares of whole lines (the last one shorter), share(i)
// before step i of the work that runs ahead of its use (the next image's operands while this
// image computes). Null p: no-op. (The shares' bounds by multiplication: two 64-bit divisions a
// share, computed per GEMM, were 2% of the 16 -> 32 stride-2 INT8 dgrad, 56 GEMMs an image.)
struct PrefetchShares {
  const void* p;
  int64_t bytes, per;
  bool for_write;
  PrefetchShares(const void* p_, int64_t bytes_, int64_t steps, bool write)
      : p(steps > 0 ? p_ : nullptr),
        bytes(bytes_),
        per(steps > 0 ? (bytes_ + 64 * steps - 1) / (64 * steps) * 64 : 0),
        for_write(write) {}
  // share i: bytes [begin(i), end(i)) of p
  int64_t begin(int64_t i) const { return std::min(bytes, i * per); }
  int64_t end(int64_t i) const { return std::min(bytes, begin(i) + per); }
  void share(int64_t i) const {
    if (!p) return;
    prefetch_bytes(static_cast<const char*>(p) + begin(i), end(i) - begin(i), for_write);
  }
};

// ---- register transposes ------------------------------------------------------------------------
#if defined(__AVX512F__)
// A 16 x 16 transpose of 4-byte elements (floats, or the 4-byte k-groups of int8 operands): the
// bytes at dst + t*dstride receive element t of the 16 rows src + i*sstride, i = 0..15 (strides
// in bytes). Unpacks of 32- and then 64-bit elements within 128-bit lanes, then two rounds of
// 128-bit lane shuffles. (maskz_ forms with full masks: the plain ones trip -Wuninitialized in
// GCC 12's header.)
inline void transpose16x16_4b(void* dst, int64_t dstride, const void* src, int64_t sstride) {
  const __mmask16 k16 = 0xFFFF;
  const __mmask8 k8 = 0xFF;
  const char* s = static_cast<const char*>(src);
  char* d = static_cast<char*>(dst);
  __m512i r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_si512(s + i * sstride);
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_maskz_unpacklo_epi32(k16, r[i], r[i + 1]);
    t[i + 1] = _mm512_maskz_unpackhi_epi32(k16, r[i], r[i + 1]);
  }
  // r[i + e] (i = 4q), lane L: element e + 4L of rows 4q .. 4q+3
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_maskz_unpacklo_epi64(k8, t[i], t[i + 2]);
    r[i + 1] = _mm512_maskz_unpackhi_epi64(k8, t[i], t[i + 2]);
    r[i + 2] = _mm512_maskz_unpacklo_epi64(k8, t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_maskz_unpackhi_epi64(k8, t[i + 1], t[i + 3]);
  }
  for (int e = 0; e < 4; ++e) {
    // lanes: element e and e+8 (0x88) or e+4 and e+12 (0xdd) of rows 0-3, then of rows 4-7
    const __m512i v0 = _mm512_maskz_shuffle_i32x4(k16, r[e], r[e + 4], 0x88);
    const __m512i v1 = _mm512_maskz_shuffle_i32x4(k16, r[e], r[e + 4], 0xdd);
    const __m512i v2 = _mm512_maskz_shuffle_i32x4(k16, r[e + 8], r[e + 12], 0x88);
    const __m512i v3 = _mm512_maskz_shuffle_i32x4(k16, r[e + 8], r[e + 12], 0xdd);
    _mm512_storeu_si512(d + e * dstride, _mm512_maskz_shuffle_i32x4(k16, v0, v2, 0x88));
    _mm512_storeu_si512(d + (e + 8) * dstride, _mm512_maskz_shuffle_i32x4(k16, v0, v2, 0xdd));
    _mm512_storeu_si512(d + (e + 4) * dstride, _mm512_maskz_shuffle_i32x4(k16, v1, v3, 0x88));
    _mm512_storeu_si512(d + (e + 12) * dstride, _mm512_maskz_shuffle_i32x4(k16, v1, v3, 0xdd));
  }
}
#endif

// ---- 16-channel blocks (batch norm, channel statistics) --------------------------------------
// GCC vector extensions: one zmm on AVX-512 builds, split into ymm / xmm halves by the compiler
// elsewhere. The per-channel loops over [rows, c] with c % 16 == 0 run one block of 16 channels
// at a time with the row loop inside, so their sums stay in registers (a per-row loop over c
// floats keeps them in memory: a store-to-load chain per row, plus runtime alias checks).
// (Internal inline helpers, in every file that includes this one: -Wpsabi's note that 64-byte
// vectors pass differently without AVX-512 does not concern them.)
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float v16f __attribute__((vector_size(64)));
typedef double v8d __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
inline v16f load16(const float* p) {
  v16f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store16(float* p, v16f v) { std::memcpy(p, &v, sizeof v); }
inline v16i load16(const int32_t* p) {
  v16i v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store16(int32_t* p, v16i v) { std::memcpy(p, &v, sizeof v); }
// The low / high 8 floats of v widened to double.
inline v8d lo8d(v16f v) {
  return __builtin_convertvector(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7), v8d);
}
inline v8d hi8d(v16f v) {
  return __builtin_convertvector(__builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15), v8d);
}
inline void add8d(double* p, v8d v) {
  v8d a;
  std::memcpy(&a, p, sizeof a);
  a += v;
  std::memcpy(p, &a, sizeof a);
}
// Rows [r0, r1) of the 16 channels at j of x [rows, c]: s[0], s[1] += x - shift (the low and high 8
// channels, in double), s[2], s[3] += (x - shift)^2, in row order; each(v) also sees every row.
template <class F>
inline void shifted_sums16(v8d (&s)[4], const float* px, int64_t c, int64_t j, int64_t r0,
                           int64_t r1, const float* shift, F&& each) {
  const v16f sv = load16(shift + j);
  const v8d sl = lo8d(sv), sh = hi8d(sv);
  for (int64_t i = r0; i < r1; ++i) {
    const v16f v = load16(px + i * c + j);
    const v8d dl = lo8d(v) - sl, dh = hi8d(v) - sh;
    s[0] += dl, s[1] += dh, s[2] += dl * dl, s[3] += dh * dh;
    each(v);
  }
}
// v where the 16 bits at mask[i0 / 8] (i0 a multiple of 16) are set, else 0.
inline v16f keep16(v16f v, const uint8_t* mask, int64_t i0) {
  uint16_t k;
  std::memcpy(&k, mask + (i0 >> 3), 2);
  const v16i bit = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768};
  const v16i on = ((v16i{} + static_cast<int32_t>(k)) & bit) != 0;
  return reinterpret_cast<v16f>(reinterpret_cast<v16i>(v) & on);
}

// ---- ReLU bit masks (d8_relu_fwd_mask): bit t of byte j stands for element 8j + t -------------
// out[0..ceil(n/8)) = the bits of y[0..n) > 0 (NaN: 0); y[0] is an element whose index is a
// multiple of 8, and the bits past n are 0.
// With cap > 0 the bits of 0 < y < cap instead (y clamped to [0, cap]: MobileNetV2's ReLU6).
inline void pack_positive_bits(uint8_t* __restrict out, const float* __restrict y, int64_t n,
                               float cap = 0.0f) {
  const float hi = cap > 0.0f ? cap : INFINITY;  // y < +inf: no upper bound
  int64_t i = 0;
#if defined(__AVX512F__)
  const __m512 vh = _mm512_set1_ps(hi);
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(y + i);
    const uint16_t k = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GT_OQ) &
                       (cap > 0.0f ? _mm512_cmp_ps_mask(v, vh, _CMP_LT_OQ) : __mmask16(0xFFFF));
    std::memcpy(out + i / 8, &k, 2);
  }
#elif defined(__AVX2__)
  const __m256 vh = _mm256_set1_ps(hi);
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(y + i);
    __m256 b = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GT_OQ);
    if (cap > 0.0f) b = _mm256_and_ps(b, _mm256_cmp_ps(v, vh, _CMP_LT_OQ));
    out[i / 8] = static_cast<uint8_t>(_mm256_movemask_ps(b));
  }
#endif
  for (; i < n; i += 8) {
    const int64_t cnt = std::min<int64_t>(8, n - i);
    uint32_t bits = 0;
    for (int64_t t = 0; t < cnt; ++t)
      bits |= static_cast<uint32_t>(y[i + t] > 0.0f && (cap <= 0.0f || y[i + t] < hi)) << t;
    out[i / 8] = static_cast<uint8_t>(bits);
  }
}
// g[t] = dy[t] where the mask bit of element i0 + t is set, else 0, for t in [0, n). g may be dy.
inline void masked_floats(float* g, const float* dy, const uint8_t* mask, int64_t i0, int64_t n) {
  int64_t t = 0;
  auto one = [&](int64_t u) {
    const int64_t i = i0 + u;
    g[u] = (mask[i >> 3] >> (i & 7)) & 1u ? dy[u] : 0.0f;
  };
  for (; t < n && ((i0 + t) & 7); ++t) one(t);
#if defined(__AVX512F__)
  for (; t + 16 <= n; t += 16) {
    uint16_t k;
    std::memcpy(&k, mask + ((i0 + t) >> 3), 2);
    _mm512_storeu_ps(g + t, _mm512_maskz_loadu_ps(k, dy + t));
  }
#elif defined(__AVX2__)
  const __m256i lanes = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  for (; t + 8 <= n; t += 8) {
    const __m256i b = _mm256_and_si256(_mm256_set1_epi32(mask[(i0 + t) >> 3]), lanes);
    const __m256 on = _mm256_castsi256_ps(_mm256_cmpeq_epi32(b, lanes));
    _mm256_storeu_ps(g + t, _mm256_and_ps(_mm256_loadu_ps(dy + t), on));
  }
#endif
  for (; t < n; ++t) one(t);
}

}  // namespace d8cpu

#pragma GCC visibility pop

#endif  // DAINT8_CPU_COMMON_H
