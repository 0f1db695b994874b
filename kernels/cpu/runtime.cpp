// runtime.cpp: library / context / buffer functions of daint8.h, the last-error message,
// thread settings, scratch memory and the shared argument checks.
#include "common.h"
#include "gemm.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace d8cpu {

// ---- errors ---------------------------------------------------------------------------------
// A fixed array rather than std::string: writing the message can never allocate or throw.
static thread_local char g_last_error[1024] = "";

int32_t fail(int32_t code, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g_last_error, sizeof g_last_error, fmt, ap);
  va_end(ap);
  return code;
}

int32_t check_context(const char* fn, const d8_context* ctx) {
  if (!ctx) return fail(D8_ERR_INVALID_ARGUMENT, "%s: ctx is null", fn);
  if (ctx->magic != kContextMagic)
    return fail(D8_ERR_INVALID_ARGUMENT, "%s: ctx is not a live context (destroyed or foreign)",
                fn);
  set_current_context(ctx);
  return D8_OK;
}

int32_t check_handle(const char* fn, const char* name, const d8_buffer* b) {
  if (!b) return fail(D8_ERR_INVALID_ARGUMENT, "%s: %s is null", fn, name);
  if (b->magic != kBufferMagic)
    return fail(D8_ERR_INVALID_ARGUMENT, "%s: %s is not a live buffer (freed or foreign)", fn,
                name);
  set_current_context(b->ctx);
  return D8_OK;
}

int32_t check_buffer(const char* fn, const char* name, const d8_buffer* b, int64_t need,
                     const char* dims) {
  if (int32_t e = check_handle(fn, name, b)) return e;
  if (need < 0)
    return fail(D8_ERR_INVALID_ARGUMENT, "%s: %s size overflows int64 (%s)", fn, name, dims);
  if (b->bytes < need)
    return fail(D8_ERR_INVALID_ARGUMENT, "%s: %s holds %lld bytes, shape needs %lld (%s)", fn,
                name, static_cast<long long>(b->bytes), static_cast<long long>(need), dims);
  return D8_OK;
}

int32_t check_buffers(const char* fn, const char* dims, std::initializer_list<BufferArg> args) {
  for (const BufferArg& a : args)
    if (int32_t e = check_buffer(fn, a.name, a.buf, a.need, dims)) return e;
  return D8_OK;
}

#include "arg_checks.inc"

int32_t check_distinct(const char* fn, const char* a, const d8_buffer* pa, const char* b,
                       const d8_buffer* pb) {
  if (pa && pa == pb)
    return fail(D8_ERR_INVALID_ARGUMENT, "%s: %s must not be the same buffer as %s", fn, a, b);
  return D8_OK;
}

int32_t check_conv_shape(const char* fn, const d8_conv_shape* s, char* dims, int cap,
                         int32_t allowed_flags) {
  return check_conv_geometry(fn, s, dims, cap, allowed_flags);
}

// ---- threads --------------------------------------------------------------------------------
static thread_local const d8_context* tl_ctx = nullptr;

// More threads than this gain nothing and risk exhausting the system's thread resources (a
// failed thread creation inside OpenMP aborts the process): requests are capped here.
int32_t max_threads() {
#ifdef _OPENMP
  return std::max(256, 4 * omp_get_num_procs());
#else
  return 1;
#endif
}

bool zmm_pairs() {
  static const bool on = [] {
    if (const char* e = std::getenv("D8_CPU_ZMM_PAIRS"); e && (e[0] == '0' || e[0] == '1'))
      return e[0] == '1';
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    unsigned a, b, c, d;
    if (!__builtin_cpu_is("amd") || !__get_cpuid(1, &a, &b, &c, &d)) return false;
    const unsigned family = ((a >> 8) & 0xF) + (((a >> 8) & 0xF) == 0xF ? (a >> 20) & 0xFF : 0);
    return family >= 0x1A;
#else
    return false;
#endif
  }();
  return on;
}

void set_current_context(const d8_context* ctx) { tl_ctx = ctx; }
const d8_context* current_context() {
  return tl_ctx && tl_ctx->magic == kContextMagic ? tl_ctx : nullptr;
}

int num_threads() {
#ifdef _OPENMP
  const d8_context* c = current_context();
  int t = c ? c->threads : 0;
  if (t <= 0) t = omp_get_max_threads();
  return t < 1 ? 1 : t;
#else
  return 1;
#endif
}

// ---- scratch --------------------------------------------------------------------------------
namespace {
struct ScratchArena {
  void* ptr[kSlotCount] = {};
  size_t cap[kSlotCount] = {};
  ~ScratchArena() {
    for (int i = 0; i < kSlotCount; ++i) std::free(ptr[i]);
  }
};
thread_local ScratchArena t_arena;
}  // namespace

float* scratch(int slot, size_t nfloats) {
  ScratchArena& a = t_arena;
  size_t bytes = nfloats * sizeof(float);
  if (bytes == 0) bytes = 64;
  if (bytes > a.cap[slot]) {
    std::free(a.ptr[slot]);
    a.ptr[slot] = nullptr;
    a.cap[slot] = 0;
    size_t want = (bytes + bytes / 4 + 63) / 64 * 64;  // some headroom, multiple of 64
    void* p = std::aligned_alloc(64, want);
    if (!p) throw std::bad_alloc();
    a.ptr[slot] = p;
    a.cap[slot] = want;
  }
  return static_cast<float*>(a.ptr[slot]);
}

}  // namespace d8cpu

using namespace d8cpu;

// ---- library ----------------------------------------------------------------------------------
extern "C" int32_t d8_abi_version(void) { return D8_ABI_VERSION; }

extern "C" const char* d8_last_error(void) { return g_last_error; }

extern "C" int32_t d8_last_error_copy(char* out, int32_t capacity) {
  const int32_t len = static_cast<int32_t>(std::strlen(g_last_error));
  if (out && capacity > 0) {
    const int32_t n = std::min(len, capacity - 1);
    std::memcpy(out, g_last_error, static_cast<size_t>(n));
    out[n] = '\0';
  }
  return len;
}

extern "C" int32_t d8_backend_name(char* out, int32_t capacity) {
  return guard(__func__, [&](const char* fn) { return write_string(fn, out, capacity, "cpu"); });
}

// The core clock in GHz while `threads` threads run at once, measured once per process and
// thread count: a dependent chain of 1-cycle integer adds (one add per clock on every x86-64 and
// AArch64 core this targets) timed with the steady clock, best of 5 blocks of ~4 ms per thread,
// then the mean over the threads. 0 where no chain is written for the architecture. On a VM
// /proc/cpuinfo reports the TSC rate, not the boost clock, so % of peak needs this.
static double measure_clock_ghz(int threads) {
#if defined(__x86_64__) || defined(__aarch64__)
  static std::atomic<int64_t> cached_threads{0};
  static std::atomic<double> cached{0.0};
  if (cached_threads.load() == threads) return cached.load();
  std::vector<double> ghz(static_cast<size_t>(threads), 0.0);
  const int team = parallel(threads, [&](int t, int) {
    constexpr int kIters = 4000;  // x 1000 adds ~ 4e6 cycles ~ 1-4 ms
    uint64_t x = 0;
    const uint64_t one = 1;
    double best_ns = 1e300;
    for (int rep = 0; rep < 5; ++rep) {
      auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < kIters; ++i) {
#if defined(__x86_64__)
        // register-register: Golden Cove folds dependent `add $imm` at rename (6 per clock)
        __asm__ volatile(".rept 1000\n add %1, %0\n .endr" : "+r"(x) : "r"(one));
#else
        __asm__ volatile(".rept 1000\n add %0, %0, #1\n .endr" : "+r"(x));
#endif
      }
      double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0)
                      .count();
      best_ns = std::min(best_ns, ns);
    }
    ghz[static_cast<size_t>(t)] = 1000.0 * kIters / best_ns;
  });
  double sum = 0;
  for (int t = 0; t < team; ++t) sum += ghz[static_cast<size_t>(t)];
  const double g = sum / team;
  cached.store(g);
  cached_threads.store(threads);
  return g;
#else
  (void)threads;
  return 0.0;
#endif
}

extern "C" int32_t d8_device_info(d8_context* ctx, char* out, int32_t capacity) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    if (int32_t e = check_context(fn, ctx)) return e;
    char text[512];
    int threads = ctx->threads > 0 ? ctx->threads : num_threads();
#ifndef _OPENMP
    threads = 1;
#endif
#if defined(__x86_64__)
    const char* arch = "x86_64";
#elif defined(__aarch64__)
    const char* arch = "aarch64";
#else
    const char* arch = "unknown-arch";
#endif
    char features[160] = "";
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    int pos = 0;
    auto add = [&](bool has, const char* name) {
      if (has && pos < static_cast<int>(sizeof features))
        pos += snprintf(features + pos, sizeof features - static_cast<size_t>(pos), "%s%s",
                        pos ? " " : ", ", name);
    };
    add(__builtin_cpu_supports("avx2"), "AVX2");
    add(__builtin_cpu_supports("fma"), "FMA");
    add(__builtin_cpu_supports("avx512f"), "AVX-512");
    add(__builtin_cpu_supports("avx512vnni"), "AVX-512-VNNI");
    add(__builtin_cpu_supports("avxvnni"), "AVX-VNNI");
#endif
    char clock[48] = "";
    if (double g = measure_clock_ghz(threads); g > 0)
      snprintf(clock, sizeof clock, ", core clock %.2f GHz (measured)", g);
    snprintf(text, sizeof text, "cpu: %s, %d thread%s%s%s; gemm kernel %s%s%s", arch, threads,
             threads == 1 ? "" : "s", features, clock, gemm_isa(),
             zmm_pairs() ? ", 16-column tiles over k pairs" : "",
#ifdef _OPENMP
             ""
#else
             " (built without OpenMP)"
#endif
    );
    return write_string(fn, out, capacity, text);
  });
}

// ---- context ----------------------------------------------------------------------------------
extern "C" int32_t d8_context_create(d8_context** out, int32_t device) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    if (!out) return fail(D8_ERR_INVALID_ARGUMENT, "%s: out is null", fn);
    *out = nullptr;
    (void)device;  // ignored by the cpu backend
    d8_context* ctx = new d8_context{kContextMagic, 0, 0};
    *out = ctx;
    return D8_OK;
  });
}

extern "C" int32_t d8_context_destroy(d8_context* ctx) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    if (int32_t e = check_context(fn, ctx)) return e;
    ctx->magic = kDeadMagic;
    delete ctx;
    return D8_OK;
  });
}

extern "C" int32_t d8_set_num_threads(d8_context* ctx, int32_t threads) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    if (int32_t e = check_context(fn, ctx)) return e;
    if (threads < 0)
      return fail(D8_ERR_INVALID_ARGUMENT, "%s: threads must be >= 0 (0 = all cores), got %d", fn,
                  threads);
    ctx->threads = std::min(threads, max_threads());
    return D8_OK;
  });
}

extern "C" int32_t d8_synchronize(d8_context* ctx) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    return check_context(fn, ctx);  // every cpu op runs synchronously
  });
}

// ---- buffers ----------------------------------------------------------------------------------
extern "C" int32_t d8_buffer_alloc(d8_buffer** out, d8_context* ctx, int64_t bytes) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    if (!out) return fail(D8_ERR_INVALID_ARGUMENT, "%s: out is null", fn);
    *out = nullptr;
    if (int32_t e = check_context(fn, ctx)) return e;
    if (bytes <= 0)
      return fail(D8_ERR_INVALID_ARGUMENT, "%s: bytes must be positive, got %lld", fn,
                  static_cast<long long>(bytes));
    if (bytes > (int64_t{1} << 46))
      return fail(D8_ERR_OUT_OF_MEMORY, "%s: %lld bytes is more than this backend allocates", fn,
                  static_cast<long long>(bytes));
    size_t rounded = (static_cast<size_t>(bytes) + 63) / 64 * 64;
    void* data = std::aligned_alloc(64, rounded);
    if (!data)
      return fail(D8_ERR_OUT_OF_MEMORY, "%s: cannot allocate %lld bytes", fn,
                  static_cast<long long>(bytes));
    d8_buffer* b = new (std::nothrow) d8_buffer{kBufferMagic, bytes, data, ctx};
    if (!b) {
      std::free(data);
      return fail(D8_ERR_OUT_OF_MEMORY, "%s: cannot allocate the buffer handle", fn);
    }
    *out = b;
    return D8_OK;
  });
}

extern "C" int32_t d8_buffer_free(d8_buffer* buf) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    if (int32_t e = check_handle(fn, "buf", buf)) return e;
    std::free(buf->data);
    buf->magic = kDeadMagic;
    buf->data = nullptr;
    buf->bytes = 0;
    delete buf;
    return D8_OK;
  });
}

extern "C" int32_t d8_buffer_size(int64_t* out_bytes, const d8_buffer* buf) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    if (!out_bytes) return fail(D8_ERR_INVALID_ARGUMENT, "%s: out_bytes is null", fn);
    if (int32_t e = check_handle(fn, "buf", buf)) return e;
    *out_bytes = buf->bytes;
    return D8_OK;
  });
}

static int32_t check_range(const char* fn, const char* name, const d8_buffer* b, int64_t offset,
                           int64_t bytes) {
  if (int32_t e = check_handle(fn, name, b)) return e;
  if (offset < 0 || bytes < 0)
    return fail(D8_ERR_INVALID_ARGUMENT, "%s: offset %lld and bytes %lld must be non-negative", fn,
                static_cast<long long>(offset), static_cast<long long>(bytes));
  if (offset > b->bytes || bytes > b->bytes - offset)
    return fail(D8_ERR_INVALID_ARGUMENT,
                "%s: range [%lld, %lld) is outside %s, which holds %lld bytes", fn,
                static_cast<long long>(offset), static_cast<long long>(offset) + bytes, name,
                static_cast<long long>(b->bytes));
  return D8_OK;
}

// Large copies split across threads (each thread copies one contiguous piece).
static void copy_bytes(void* dst, const void* src, int64_t bytes) {
  const int64_t kGrain = int64_t{1} << 20;
  auto* d = static_cast<char*>(dst);
  const auto* s = static_cast<const char*>(src);
  parallel_for(bytes, kGrain, [&](int64_t b, int64_t e) {
    std::memcpy(d + b, s + b, static_cast<size_t>(e - b));
  });
}

extern "C" int32_t d8_buffer_upload(d8_buffer* dst, int64_t dst_offset, const void* src,
                                    int64_t bytes) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    if (int32_t e = check_range(fn, "dst", dst, dst_offset, bytes)) return e;
    if (bytes == 0) return D8_OK;
    if (!src) return fail(D8_ERR_INVALID_ARGUMENT, "%s: src is null", fn);
    copy_bytes(static_cast<char*>(dst->data) + dst_offset, src, bytes);
    return D8_OK;
  });
}

extern "C" int32_t d8_buffer_download(void* dst, const d8_buffer* src, int64_t src_offset,
                                      int64_t bytes) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    if (int32_t e = check_range(fn, "src", src, src_offset, bytes)) return e;
    if (bytes == 0) return D8_OK;
    if (!dst) return fail(D8_ERR_INVALID_ARGUMENT, "%s: dst is null", fn);
    copy_bytes(dst, static_cast<const char*>(src->data) + src_offset, bytes);
    return D8_OK;
  });
}

extern "C" int32_t d8_buffer_copy(d8_buffer* dst, int64_t dst_offset, const d8_buffer* src,
                                  int64_t src_offset, int64_t bytes) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    if (int32_t e = check_range(fn, "dst", dst, dst_offset, bytes)) return e;
    if (int32_t e = check_range(fn, "src", src, src_offset, bytes)) return e;
    if (bytes == 0) return D8_OK;
    char* d = static_cast<char*>(dst->data) + dst_offset;
    const char* s = static_cast<const char*>(src->data) + src_offset;
    if (dst == src && d != s && d < s + bytes && s < d + bytes) {
      std::memmove(d, s, static_cast<size_t>(bytes));  // overlapping ranges in one buffer
    } else if (d != s) {
      copy_bytes(d, s, bytes);
    }
    return D8_OK;
  });
}
