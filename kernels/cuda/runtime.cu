// runtime.cu: library / context / buffer functions of daint8.h for the cuda backend, the
// last-error message, the caching allocator, the argument checks and the int8 kernel choice.
//
// Every context owns one device, one non-blocking stream and one caching allocator. Ops are
// enqueued on the stream of the context that owns their first output buffer and return at once;
// d8_synchronize waits. A download synchronizes the stream (the host needs the bytes).
#include "common.cuh"

#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace d8cuda {

// ---- errors ---------------------------------------------------------------------------------
static thread_local char g_last_error[1024] = "";

int32_t fail(int32_t code, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g_last_error, sizeof g_last_error, fmt, ap);
  va_end(ap);
  return code;
}

int32_t cuda_fail(const char* fn, const char* what, cudaError_t e) {
  cudaGetLastError();  // clear a non-sticky error (OOM, bad configuration)
  const int32_t code = e == cudaErrorMemoryAllocation ? D8_ERR_OUT_OF_MEMORY
                       : e == cudaErrorInvalidConfiguration ? D8_ERR_INTERNAL
                                                            : D8_ERR_DEVICE;
  return fail(code, "%s: %s: %s (%s)", fn, what, cudaGetErrorString(e), cudaGetErrorName(e));
}

int32_t launch_check(const char* fn, const char* kernel) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return cuda_fail(fn, kernel, e);
  return D8_OK;
}

// ---- checks (same rules and messages as the cpu backend) ------------------------------------
int32_t check_context(const char* fn, const d8_context* ctx) {
  if (!ctx) return fail(D8_ERR_INVALID_ARGUMENT, "%s: ctx is null", fn);
  if (ctx->magic != kContextMagic)
    return fail(D8_ERR_INVALID_ARGUMENT, "%s: ctx is not a live context (destroyed or foreign)",
                fn);
  return D8_OK;
}

int32_t check_handle(const char* fn, const char* name, const d8_buffer* b) {
  if (!b) return fail(D8_ERR_INVALID_ARGUMENT, "%s: %s is null", fn, name);
  if (b->magic != kBufferMagic)
    return fail(D8_ERR_INVALID_ARGUMENT, "%s: %s is not a live buffer (freed or foreign)", fn,
                name);
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

int32_t check_same_ctx(const char* fn, std::initializer_list<const d8_buffer*> bufs) {
  const d8_context* ctx = nullptr;
  for (const d8_buffer* b : bufs) {
    if (!b) continue;
    if (!ctx) ctx = b->ctx;
    if (b->ctx != ctx)
      return fail(D8_ERR_INVALID_ARGUMENT,
                  "%s: buffers belong to different contexts (one op runs on one device stream)",
                  fn);
  }
  if (ctx) return check_context(fn, ctx);
  return D8_OK;
}

#include "arg_checks.inc"

int32_t check_conv_shape(const char* fn, const d8_conv_shape* s, char* dims, int cap,
                         int32_t allowed_flags) {
  if (int32_t e = check_conv_geometry(fn, s, dims, cap, allowed_flags)) return e;
  // Kernels index with int32 per dimension and int64 for flat offsets; keep every tensor's
  // element count below 2^31 * 64 and the reduction below int32.
  if (int64_t{s->r} * s->s * (s->c / s->groups) > (int64_t{1} << 30))
    return fail(D8_ERR_UNSUPPORTED, "%s: r*s*c/groups above 2^30 is not supported (%s)", fn,
                dims);
  return D8_OK;
}

int32_t check_distinct(const char* fn, const char* a, const d8_buffer* pa, const char* b,
                       const d8_buffer* pb) {
  if (pa && pa == pb)
    return fail(D8_ERR_INVALID_ARGUMENT, "%s: %s must not be the same buffer as %s", fn, a, b);
  return D8_OK;
}

int32_t pending_label_error(const char* fn, d8_context* ctx) {
  if (!ctx->label_pending) return D8_OK;
  ctx->label_pending = 0;
  const int32_t row = ctx->host_flag[0];
  if (row == 0x7fffffff) return D8_OK;
  const int32_t lab = ctx->host_flag[1];
  ctx->host_flag[0] = 0x7fffffff;
  // clear the device flag for the next steps (stream-ordered; the stream is idle here)
  cudaMemcpyAsync(ctx->flag, ctx->host_flag, 4, cudaMemcpyHostToDevice, ctx->stream);
  cudaStreamSynchronize(ctx->stream);
  return fail(D8_ERR_INVALID_ARGUMENT,
              "%s: %s: labels[%d] = %d is outside [0, %d) (found on the device, reported at this "
              "synchronizing call; the loss outputs of that call and of later ones before it were "
              "not written)",
              fn, ctx->label_fn, row, lab, ctx->label_classes);
}

int32_t use_device(const char* fn, d8_context* ctx) {
  int cur = -1;
  cudaError_t e = cudaGetDevice(&cur);
  if (e != cudaSuccess) return cuda_fail(fn, "cudaGetDevice", e);
  if (cur != ctx->device) {
    e = cudaSetDevice(ctx->device);
    if (e != cudaSuccess) return cuda_fail(fn, "cudaSetDevice", e);
  }
  return D8_OK;
}

// ---- allocator ------------------------------------------------------------------------------
size_t Allocator::class_of(size_t bytes) {
  if (bytes <= 65536) return (bytes + 511) / 512 * 512;
  size_t p = 65536;
  while (p * 2 < bytes) p *= 2;  // p < bytes <= 2p
  const size_t step = p / 4;
  return (bytes + step - 1) / step * step;
}

void* Allocator::alloc(size_t bytes, size_t* cls, cudaError_t* err, cudaStream_t stream) {
  const size_t c = class_of(bytes);
  *cls = c;
  *err = cudaSuccess;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.find(c);
    if (it != free_.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      cached_ -= c;
      in_use_ += c;
      return p;
    }
  }
  void* p = nullptr;
  cudaError_t e = cudaMalloc(&p, c);
  if (e == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    trim(stream);
    e = cudaMalloc(&p, c);
  }
  if (e != cudaSuccess) {
    *err = e;
    return nullptr;
  }
  std::lock_guard<std::mutex> lock(mu_);
  in_use_ += c;
  return p;
}

void Allocator::release(void* p, size_t cls) {
  if (!p) return;
  std::lock_guard<std::mutex> lock(mu_);
  free_[cls].push_back(p);
  in_use_ -= cls;
  cached_ += cls;
}

void Allocator::trim(cudaStream_t stream) {
  cudaStreamSynchronize(stream);  // blocks still referenced by enqueued work finish first
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& kv : free_)
    for (void* p : kv.second) cudaFree(p);
  free_.clear();
  cached_ = 0;
}

Scratch::~Scratch() {
  if (ctx_ && p_) ctx_->alloc->release(p_, cls_);
}

int32_t Scratch::get(const char* fn, d8_context* ctx, size_t bytes) {
  ctx_ = ctx;
  cudaError_t e;
  p_ = ctx->alloc->alloc(bytes < 256 ? 256 : bytes, &cls_, &e, ctx->stream);
  if (!p_) {
    cudaGetLastError();
    return fail(e == cudaErrorMemoryAllocation ? D8_ERR_OUT_OF_MEMORY : D8_ERR_DEVICE,
                "%s: cannot allocate %zu bytes of device scratch: %s", fn, bytes,
                cudaGetErrorString(e));
  }
  return D8_OK;
}

// ---- int8 kernel choice -----------------------------------------------------------------------
// Version 4 (wgmma) exists as sm_90a code only, which runs on compute capability 9.0 exactly.
static bool wgmma_device(const d8_context* ctx) { return ctx->cc == 90; }

// DAINT8_CUDA_NO_WGMMA=1 keeps auto at version 3 on sm_90 (the GPU check sets it for the
// benchmarks after a failed version-4 test); read once per process.
static bool wgmma_disabled() {
  static const bool off = [] {
    const char* e = std::getenv("DAINT8_CUDA_NO_WGMMA");
    return e && *e && std::strcmp(e, "0") != 0;
  }();
  return off;
}

int int8_version(const d8_context* ctx) {
  int v = ctx->int8_kernel;
  if (v == 0)
    v = wgmma_device(ctx) && !wgmma_disabled() ? 4 : ctx->cc >= 80 ? 3 : ctx->cc >= 75 ? 2 : 1;
  return v;
}

const char* int8_version_name(int v) {
  switch (v) {
    case 1: return "simple";
    case 2: return "mma-m8n8k16";
    case 3: return "mma-m16n8k32";
    case 4: return "wgmma-m64nNk32";
    default: return "auto";
  }
}

static int version_of_name(const char* name) {
  if (!name) return -1;
  for (int v = 0; v <= 4; ++v)
    if (std::strcmp(name, int8_version_name(v)) == 0) return v;
  if (std::strcmp(name, "dp4a") == 0) return 1;
  return -1;
}

int32_t set_int8(const char* fn, d8_context* ctx, int32_t v) {
  if (v < 0 || v > 4)
    return fail(D8_ERR_INVALID_ARGUMENT,
                "%s: variant must be 0 (auto), 1 (simple), 2 (mma-m8n8k16), 3 (mma-m16n8k32) or 4 "
                "(wgmma-m64nNk32), got %d",
                fn, v);
  if (v == 4 && !wgmma_device(ctx))
    return fail(D8_ERR_UNSUPPORTED,
                "%s: the wgmma-m64nNk32 int8 kernel needs compute capability 9.0 (sm_90a code), "
                "this device has %d.%d",
                fn, ctx->cc / 10, ctx->cc % 10);
  const int need = v == 3 ? 80 : v == 2 ? 75 : 0;
  if (ctx->cc < need)
    return fail(D8_ERR_UNSUPPORTED,
                "%s: the %s int8 kernel needs compute capability %d.%d, this device has %d.%d", fn,
                int8_version_name(v), need / 10, need % 10, ctx->cc / 10, ctx->cc % 10);
  ctx->int8_kernel = v;
  return D8_OK;
}

}  // namespace d8cuda

using namespace d8cuda;

// ---- library ----------------------------------------------------------------------------------
extern "C" int32_t d8_abi_version(void) { return D8_ABI_VERSION; }

extern "C" const char* d8_last_error(void) { return g_last_error; }

extern "C" int32_t d8_last_error_copy(char* out, int32_t capacity) {
  const int32_t len = static_cast<int32_t>(std::strlen(g_last_error));
  if (out && capacity > 0) {
    const int32_t n = len < capacity - 1 ? len : capacity - 1;
    std::memcpy(out, g_last_error, static_cast<size_t>(n));
    out[n] = '\0';
  }
  return len;
}

extern "C" int32_t d8_backend_name(char* out, int32_t capacity) {
  return guard(__func__, [&](const char* fn) { return write_string(fn, out, capacity, "cuda"); });
}

extern "C" int32_t d8_device_info(d8_context* ctx, char* out, int32_t capacity) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    if (int32_t e = check_context(fn, ctx)) return e;
    int driver = 0, runtime = 0;
    cudaDriverGetVersion(&driver);
    cudaRuntimeGetVersion(&runtime);
    char text[512];
    snprintf(text, sizeof text,
             "cuda: %s, %d SMs, compute capability %d.%d, %.1f GiB, driver %d.%d, runtime %d.%d; "
             "int8 kernel %s",
             ctx->prop.name, ctx->prop.multiProcessorCount, ctx->prop.major, ctx->prop.minor,
             static_cast<double>(ctx->prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0),
             driver / 1000, driver % 1000 / 10, runtime / 1000, runtime % 1000 / 10,
             int8_version_name(int8_version(ctx)));
    return write_string(fn, out, capacity, text);
  });
}

// ---- context ----------------------------------------------------------------------------------
extern "C" int32_t d8_context_create(d8_context** out, int32_t device) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    if (!out) return fail(D8_ERR_INVALID_ARGUMENT, "%s: out is null", fn);
    *out = nullptr;
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) return cuda_fail(fn, "no usable CUDA device (cudaGetDeviceCount)", e);
    if (device < 0 || device >= count)
      return fail(D8_ERR_INVALID_ARGUMENT, "%s: device %d does not exist (%d CUDA device%s)", fn,
                  device, count, count == 1 ? "" : "s");
    if ((e = cudaSetDevice(device)) != cudaSuccess) return cuda_fail(fn, "cudaSetDevice", e);
    d8_context* ctx = new d8_context{};
    ctx->magic = kContextMagic;
    ctx->device = device;
    if ((e = cudaGetDeviceProperties(&ctx->prop, device)) != cudaSuccess) {
      delete ctx;
      return cuda_fail(fn, "cudaGetDeviceProperties", e);
    }
    ctx->cc = ctx->prop.major * 10 + ctx->prop.minor;
    if (ctx->cc < 75) {
      const int cc = ctx->cc;
      delete ctx;
      return fail(D8_ERR_UNSUPPORTED,
                  "%s: device %d has compute capability %d.%d; this library is built for 7.5+",
                  fn, device, cc / 10, cc % 10);
    }
    if ((e = cudaStreamCreateWithFlags(&ctx->stream, cudaStreamNonBlocking)) != cudaSuccess) {
      delete ctx;
      return cuda_fail(fn, "cudaStreamCreate", e);
    }
    ctx->alloc = new Allocator();
    if ((e = cudaMalloc(&ctx->flag, 64)) != cudaSuccess ||
        (e = cudaMallocHost(&ctx->host_flag, 64)) != cudaSuccess) {
      cudaGetLastError();
      if (ctx->flag) cudaFree(ctx->flag);
      cudaStreamDestroy(ctx->stream);
      delete ctx->alloc;
      delete ctx;
      return cuda_fail(fn, "allocating the context's flags", e);
    }
    ctx->host_flag[0] = 0x7fffffff;
    ctx->host_flag[1] = 0;
    if ((e = cudaMemcpy(ctx->flag, ctx->host_flag, 8, cudaMemcpyHostToDevice)) != cudaSuccess) {
      cudaFree(ctx->flag);
      cudaFreeHost(ctx->host_flag);
      cudaStreamDestroy(ctx->stream);
      delete ctx->alloc;
      delete ctx;
      return cuda_fail(fn, "initializing the context's flags", e);
    }
    *out = ctx;
    return D8_OK;
  });
}

extern "C" int32_t d8_context_destroy(d8_context* ctx) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    if (int32_t e = check_context(fn, ctx)) return e;
    use_device(fn, ctx);
    cudaStreamSynchronize(ctx->stream);
    ctx->alloc->trim(ctx->stream);
    cudaFree(ctx->flag);
    cudaFreeHost(ctx->host_flag);
    cudaStreamDestroy(ctx->stream);
    cudaGetLastError();
    delete ctx->alloc;
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
    return D8_OK;  // host threads do not matter to the cuda backend
  });
}

extern "C" int32_t d8_synchronize(d8_context* ctx) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    if (int32_t e = check_context(fn, ctx)) return e;
    if (int32_t e = use_device(fn, ctx)) return e;
    const cudaError_t e = cudaStreamSynchronize(ctx->stream);
    if (e != cudaSuccess) return cuda_fail(fn, "cudaStreamSynchronize", e);
    return pending_label_error(fn, ctx);
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
    if (int32_t e = use_device(fn, ctx)) return e;
    size_t cls = 0;
    cudaError_t err;
    void* data = ctx->alloc->alloc(static_cast<size_t>(bytes), &cls, &err, ctx->stream);
    if (!data) return cuda_fail(fn, "cudaMalloc", err);
    d8_buffer* b = new (std::nothrow) d8_buffer{kBufferMagic, bytes, data, cls, ctx};
    if (!b) {
      ctx->alloc->release(data, cls);
      return fail(D8_ERR_OUT_OF_MEMORY, "%s: cannot allocate the buffer handle", fn);
    }
    *out = b;
    return D8_OK;
  });
}

extern "C" int32_t d8_buffer_free(d8_buffer* buf) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    if (int32_t e = check_handle(fn, "buf", buf)) return e;
    if (buf->ctx && buf->ctx->magic == kContextMagic) buf->ctx->alloc->release(buf->data, buf->cls);
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
  return check_context(fn, b->ctx);
}

// Uploads from pageable host memory: cudaMemcpyAsync returns once the source is staged, so the
// caller may reuse its array at once.
extern "C" int32_t d8_buffer_upload(d8_buffer* dst, int64_t dst_offset, const void* src,
                                    int64_t bytes) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    if (int32_t e = check_range(fn, "dst", dst, dst_offset, bytes)) return e;
    if (bytes == 0) return D8_OK;
    if (!src) return fail(D8_ERR_INVALID_ARGUMENT, "%s: src is null", fn);
    d8_context* ctx = dst->ctx;
    if (int32_t e = use_device(fn, ctx)) return e;
    cudaError_t e = cudaMemcpyAsync(static_cast<char*>(dst->data) + dst_offset, src,
                                    static_cast<size_t>(bytes), cudaMemcpyHostToDevice,
                                    ctx->stream);
    // The host array may be released by the caller right after return: wait for the copy
    // (pageable copies are staged, pinned ones would otherwise still be read).
    if (e == cudaSuccess) e = cudaStreamSynchronize(ctx->stream);
    if (e != cudaSuccess) return cuda_fail(fn, "cudaMemcpyAsync (upload)", e);
    return D8_OK;
  });
}

extern "C" int32_t d8_buffer_download(void* dst, const d8_buffer* src, int64_t src_offset,
                                      int64_t bytes) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    if (int32_t e = check_range(fn, "src", src, src_offset, bytes)) return e;
    if (bytes == 0) return D8_OK;
    if (!dst) return fail(D8_ERR_INVALID_ARGUMENT, "%s: dst is null", fn);
    d8_context* ctx = src->ctx;
    if (int32_t e = use_device(fn, ctx)) return e;
    cudaError_t e = cudaMemcpyAsync(dst, static_cast<const char*>(src->data) + src_offset,
                                    static_cast<size_t>(bytes), cudaMemcpyDeviceToHost,
                                    ctx->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(ctx->stream);
    if (e != cudaSuccess) return cuda_fail(fn, "cudaMemcpyAsync (download)", e);
    return pending_label_error(fn, ctx);
  });
}

extern "C" int32_t d8_buffer_copy(d8_buffer* dst, int64_t dst_offset, const d8_buffer* src,
                                  int64_t src_offset, int64_t bytes) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    if (int32_t e = check_range(fn, "dst", dst, dst_offset, bytes)) return e;
    if (int32_t e = check_range(fn, "src", src, src_offset, bytes)) return e;
    if (int32_t e = check_same_ctx(fn, {dst, src})) return e;
    if (bytes == 0) return D8_OK;
    d8_context* ctx = dst->ctx;
    if (int32_t e = use_device(fn, ctx)) return e;
    char* d = static_cast<char*>(dst->data) + dst_offset;
    const char* s = static_cast<const char*>(src->data) + src_offset;
    if (d == s) return D8_OK;
    cudaError_t e;
    if (dst == src && d < s + bytes && s < d + bytes) {
      // Overlapping ranges of one buffer: through a scratch copy (memmove semantics).
      Scratch tmp;
      if (int32_t st = tmp.get(fn, ctx, static_cast<size_t>(bytes))) return st;
      e = cudaMemcpyAsync(tmp.as<char>(), s, static_cast<size_t>(bytes),
                          cudaMemcpyDeviceToDevice, ctx->stream);
      if (e == cudaSuccess)
        e = cudaMemcpyAsync(d, tmp.as<char>(), static_cast<size_t>(bytes),
                            cudaMemcpyDeviceToDevice, ctx->stream);
    } else {
      e = cudaMemcpyAsync(d, s, static_cast<size_t>(bytes), cudaMemcpyDeviceToDevice,
                          ctx->stream);
    }
    if (e != cudaSuccess) return cuda_fail(fn, "cudaMemcpyAsync (copy)", e);
    return D8_OK;
  });
}

// ---- int8 kernel choice (daint8.h: d8_set_int8_kernel, per context) ---------------------------
// cuda variants: 0 auto (3 on sm_80+, 2 on sm_75), 1 simple (dp4a / plain loops, every shape),
// 2 mma-m8n8k16 (sm_75+), 3 mma-m16n8k32 with cp.async pipelines (sm_80+).
extern "C" int32_t d8_set_int8_kernel(d8_context* ctx, int32_t variant) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    if (int32_t e = check_context(fn, ctx)) return e;
    return set_int8(fn, ctx, variant);
  });
}

// The version the context's int8 ops run ("simple", "mma-m8n8k16", "mma-m16n8k32"); shapes a
// tensor-core kernel cannot do still fall back to "simple".
extern "C" int32_t d8_int8_kernel_name(d8_context* ctx, char* out, int32_t capacity) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    if (int32_t e = check_context(fn, ctx)) return e;
    return write_string(fn, out, capacity, int8_version_name(int8_version(ctx)));
  });
}

// cuda-only extension (not in daint8.h, looked up by name): the per-context choice by name.
extern "C" __attribute__((visibility("default"))) int32_t d8_cuda_set_int8_kernel(
    d8_context* ctx, const char* name) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    if (int32_t e = check_context(fn, ctx)) return e;
    const int v = version_of_name(name);
    if (v < 0)
      return fail(D8_ERR_INVALID_ARGUMENT,
                  "%s: kernel name must be \"auto\", \"simple\", \"mma-m8n8k16\" or "
                  "\"mma-m16n8k32\", got \"%s\"",
                  fn, name ? name : "(null)");
    return set_int8(fn, ctx, v);
  });
}

// Bytes the context's allocator hands out now and keeps cached (tests: memory stays flat).
extern "C" __attribute__((visibility("default"))) int32_t d8_cuda_memory_stats(
    d8_context* ctx, int64_t* in_use, int64_t* cached) {
  return guard(__func__, [&](const char* fn) -> int32_t {
    if (int32_t e = check_context(fn, ctx)) return e;
    if (!in_use || !cached) return fail(D8_ERR_INVALID_ARGUMENT, "%s: out pointer is null", fn);
    *in_use = static_cast<int64_t>(ctx->alloc->bytes_in_use());
    *cached = static_cast<int64_t>(ctx->alloc->bytes_cached());
    return D8_OK;
  });
}
