// common.cuh: internal helpers shared by every cuda kernel file (not part of the ABI).
//   - the context (device, stream, caching allocator, int8 kernel choice) and buffer structs
//   - error reporting: fail(), the ABI guard, CUDA status -> D8 status with cudaGetErrorString
//   - argument checks, with the same rules and messages as the cpu backend (kernels/cpu/common.h)
//   - launch helpers (grid sizes, the check after every launch)
#ifndef DAINT8_CUDA_COMMON_CUH
#define DAINT8_CUDA_COMMON_CUH

// The ABI functions are exported (the library builds with -fvisibility=hidden).
#pragma GCC visibility push(default)
#include "daint8.h"
#pragma GCC visibility pop

#include <cuda_runtime.h>

#include <cstddef>
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <mutex>
#include <new>
#include <vector>

namespace d8cuda {

constexpr uint64_t kContextMagic = 0x6438636f6e746578ull;  // "d8contex"
constexpr uint64_t kBufferMagic = 0x6438627566666572ull;   // "d8buffer"
constexpr uint64_t kDeadMagic = 0x6465616462656566ull;     // freed handle

// ---- caching device allocator -------------------------------------------------------------------
// Size classes: 512-byte multiples up to 64 KiB, then 4 classes per power of two (x1, x1.25, x1.5,
// x1.75). Freed blocks go to their class's free list and are reused by later allocations of the
// same class. Every op of a context runs on its one stream, so a block freed after the ops that
// used it were enqueued can be handed to the next op at once (stream order protects it). On
// cudaMalloc failure the cache is released (after a stream synchronize) and the allocation retried.
class Allocator {
 public:
  static size_t class_of(size_t bytes);
  // Returns a device pointer or nullptr with *err set to the cudaMalloc error.
  void* alloc(size_t bytes, size_t* cls, cudaError_t* err, cudaStream_t stream);
  void release(void* p, size_t cls);  // back to the free list
  void trim(cudaStream_t stream);     // cudaFree every cached block
  size_t bytes_in_use() const { return in_use_; }
  size_t bytes_cached() const { return cached_; }

 private:
  std::mutex mu_;
  std::map<size_t, std::vector<void*>> free_;
  size_t in_use_ = 0, cached_ = 0;
};

}  // namespace d8cuda

struct d8_context {
  uint64_t magic;
  int32_t device;
  cudaStream_t stream;
  cudaDeviceProp prop;
  int cc;              // compute capability * 10 (75, 80, 86, 89, 90)
  int32_t int8_kernel; // d8_set_int8_kernel: 0 = auto, else a kernel version
  d8cuda::Allocator* alloc;
  int32_t* flag;       // device int32 [4]: [0] first bad label row (INT32_MAX: none), [1] its label
  int32_t* host_flag;  // pinned host copy, refreshed after each label check (async)
  int32_t label_pending;  // a label check was enqueued and not yet reported
  int32_t label_classes;
  const char* label_fn;
};

struct d8_buffer {
  uint64_t magic;
  int64_t bytes;
  void* data;  // device pointer
  size_t cls;  // allocator size class
  d8_context* ctx;
};

namespace d8cuda {

// ---- errors ---------------------------------------------------------------------------------
int32_t fail(int32_t code, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

// A CUDA error as a status: OOM -> D8_ERR_OUT_OF_MEMORY, anything else D8_ERR_DEVICE, with
// cudaGetErrorString's text. Clears the (non-sticky) error state.
int32_t cuda_fail(const char* fn, const char* what, cudaError_t e);

// Checks the last launch (configuration errors are reported at once; faults inside a kernel show
// up at the next synchronizing call).
int32_t launch_check(const char* fn, const char* kernel);

template <class F>
int32_t guard(const char* fn, F&& body) noexcept {
  try {
    return body(fn);
  } catch (const std::bad_alloc&) {
    return fail(D8_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
  } catch (...) {
    return fail(D8_ERR_INTERNAL, "%s: unknown internal error", fn);
  }
}

inline int64_t mul64(int64_t a, int64_t b) {
  int64_t r;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r)) return -1;
  return r;
}
inline int64_t mul64(int64_t a, int64_t b, int64_t c) { return mul64(mul64(a, b), c); }
inline int64_t mul64(int64_t a, int64_t b, int64_t c, int64_t d) {
  return mul64(mul64(a, b, c), d);
}
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

int32_t check_context(const char* fn, const d8_context* ctx);
int32_t check_handle(const char* fn, const char* name, const d8_buffer* b);
int32_t check_buffer(const char* fn, const char* name, const d8_buffer* b, int64_t need,
                     const char* dims);
struct BufferArg {
  const char* name;
  const d8_buffer* buf;
  int64_t need;
};
int32_t check_buffers(const char* fn, const char* dims, std::initializer_list<BufferArg> args);
// Every buffer of one op must belong to one context (its stream and device).
int32_t check_same_ctx(const char* fn, std::initializer_list<const d8_buffer*> bufs);
int32_t check_mnk(const char* fn, char* dims, size_t cap, int64_t m, int32_t n, int32_t k);
int32_t write_string(const char* fn, char* out, int32_t capacity, const char* text);
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
int32_t check_distinct(const char* fn, const char* a, const d8_buffer* pa, const char* b,
                       const d8_buffer* pb);

// After a stream synchronize: the deferred label error of d8_softmax_xent_* (0 when none).
int32_t pending_label_error(const char* fn, d8_context* ctx);

// Makes the context's device current on the calling thread.
int32_t use_device(const char* fn, d8_context* ctx);

// y[i] += x[i] for i < n on the context's stream (D8_CONV_ACCUMULATE: the dgrads compute into a
// Scratch and add it here); a launch status.
int32_t add_into(const char* fn, d8_context* ctx, float* y, const float* x, int64_t n);
// y = relu(x) with its bit mask as d8_relu_fwd_mask, or with cap > 0 the clamp to [0, cap] and
// the bits of 0 < x < cap (d8_batchnorm_relu_fwd_train's ReLU6); a launch status.
int32_t relu_mask_into(const char* fn, d8_context* ctx, float* y, uint8_t* mask, const float* x,
                       int64_t n, float cap);

// Temporary device memory from the context's allocator, returned to it when the object dies
// (after the kernels using it were enqueued: stream order keeps it alive long enough).
class Scratch {
 public:
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch();
  // 0 or a status (already reported with fail()).
  int32_t get(const char* fn, d8_context* ctx, size_t bytes);
  template <class T>
  T* as() const {
    return static_cast<T*>(p_);
  }

 private:
  d8_context* ctx_ = nullptr;
  void* p_ = nullptr;
  size_t cls_ = 0;
};

// The int8 kernel version an op of ctx runs (1 simple, 2 mma m8n8k16, 3 mma m16n8k32 + cp.async),
// the forced one or the best the device has.
int int8_version(const d8_context* ctx);
const char* int8_version_name(int v);

inline unsigned grid_1d(int64_t n, int block, int64_t cap = 65535 * 8) {
  int64_t g = ceil_div(n, block);
  if (g < 1) g = 1;
  if (g > cap) g = cap;
  return static_cast<unsigned>(g);
}

// Geometry as passed to kernels (int32 fits every dimension; products are widened in kernels).
struct ConvGeom {
  int n, h, w, c, k, r, s, g, sh, sw, ph, pw, p, q;
  int cg, kg, kd;  // C/G, K/G, R*S*Cg
  int64_t m;       // N*P*Q
};
inline ConvGeom make_geom(const d8_conv_shape& s) {
  ConvGeom G;
  G.n = s.n, G.h = s.h, G.w = s.w, G.c = s.c, G.k = s.k, G.r = s.r, G.s = s.s, G.g = s.groups;
  G.sh = s.stride_h, G.sw = s.stride_w, G.ph = s.pad_h, G.pw = s.pad_w, G.p = s.p, G.q = s.q;
  G.cg = G.c / G.g;
  G.kg = G.k / G.g;
  G.kd = G.r * G.s * G.cg;
  G.m = int64_t{G.n} * G.p * G.q;
  return G;
}

// One channel per group (MobileNetV2's 3x3 convs): direct kernels instead of GEMMs.
inline bool is_depthwise(const ConvGeom& G) { return G.g > 1 && G.cg == 1 && G.kg == 1; }

// ---- dgrad stride phases (the GEMM dgrads: int8_conv.cu, conv_f32.cu) ------------------------
// Phase (rr, ss), rr < sh, ss < sw: the input pixels (h0 + hi*sh, w0 + wi*sw), h0 = (rr - ph) mod
// sh (w0 alike), hi < hp, wi < wp, take exactly the taps (rr + j*sh, ss + l*sw), j < nr, l < ns;
// output pixel (bh + hi - j, bw + wi - l) of dy. Stride 1: one phase with every tap.
// Taps of a phase along one axis: r = rr + j*stride < extent.
__host__ __device__ inline int phase_taps(int rr, int extent, int stride) {
  return rr < extent ? (extent - rr + stride - 1) / stride : 0;
}
// Taps of the phases before (rr, ss) in row-major phase order.
__host__ __device__ inline int64_t phase_taps_before(const ConvGeom& G, int rr, int ss) {
  int before_r = 0, before_s = 0;
  for (int x = 0; x < rr; ++x) before_r += phase_taps(x, G.r, G.sh);
  for (int x = 0; x < ss; ++x) before_s += phase_taps(x, G.s, G.sw);
  return int64_t{before_r} * G.s + int64_t{phase_taps(rr, G.r, G.sh)} * before_s;
}
struct DgradPhase {
  int rr, ss, h0, w0, hp, wp, bh, bw, nr, ns;
};
// The phases with at least one input pixel, in row-major (rr, ss) order.
inline std::vector<DgradPhase> dgrad_phases(const ConvGeom& G) {
  std::vector<DgradPhase> out;
  for (int rr = 0; rr < G.sh; ++rr)
    for (int ss = 0; ss < G.sw; ++ss) {
      DgradPhase p;
      p.rr = rr, p.ss = ss;
      p.h0 = ((rr - G.ph) % G.sh + G.sh) % G.sh;
      p.w0 = ((ss - G.pw) % G.sw + G.sw) % G.sw;
      p.hp = phase_taps(p.h0, G.h, G.sh);  // pixels h0, h0 + sh, ... < H: the same count
      p.wp = phase_taps(p.w0, G.w, G.sw);
      if (p.hp == 0 || p.wp == 0) continue;
      p.bh = (p.h0 + G.ph - rr) / G.sh;  // exact, >= 0
      p.bw = (p.w0 + G.pw - ss) / G.sw;
      p.nr = phase_taps(rr, G.r, G.sh);
      p.ns = phase_taps(ss, G.s, G.sw);
      out.push_back(p);
    }
  return out;
}

// The launch shape of the direct depthwise kernels that give a thread 4 channels of a pixel
// (int8_conv.cu, conv_f32.cu): `cols` (pixel, quad) pairs a row, `rows` rows; 256-thread blocks
// of whole warps along a row, as many rows as fit. The kernels stride over rows by
// gridDim.y * blockDim.y.
struct DwLaunch {
  dim3 grid, block;
};
inline DwLaunch dw_launch(int64_t cols, int64_t rows) {
  const int bx = static_cast<int>(std::min<int64_t>(256, round_up(cols, 32))), by = 256 / bx;
  return {dim3(static_cast<unsigned>(ceil_div(cols, bx)),
               static_cast<unsigned>(std::min<int64_t>(ceil_div(rows, by), 65535))),
          dim3(static_cast<unsigned>(bx), static_cast<unsigned>(by))};
}

// Depthwise weights [C, taps] transposed to wt[tap*C + c], so that consecutive channels of a tap
// are adjacent (4 of them one int8 word or one float4).
template <class T>
__global__ void dw_transpose_k(T* wt, const T* w, int c_total, int taps) {
  const int64_t total = int64_t{c_total} * taps;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int c = static_cast<int>(i % c_total), tap = static_cast<int>(i / c_total);
    wt[i] = w[int64_t{c} * taps + tap];
  }
}

// fprop's window, output pixel (pp, qq): calls f(ih, iw, r, s) for every tap (r, s) whose input
// pixel (ih, iw) lies inside the image, taps in (r, s) order.
template <class F>
__device__ inline void for_each_tap(const ConvGeom& G, int pp, int qq, F&& f) {
  for (int r = 0; r < G.r; ++r) {
    const int ih = pp * G.sh - G.ph + r;
    if (ih < 0 || ih >= G.h) continue;
    for (int s = 0; s < G.s; ++s) {
      const int iw = qq * G.sw - G.pw + s;
      if (iw < 0 || iw >= G.w) continue;
      f(ih, iw, r, s);
    }
  }
}

// dgrad's gather, one input pixel (img, ih, iw): calls f(o, r, s) for every tap (r, s) whose
// output pixel covers it, o = that output pixel's flat index (img, p, q), taps in (r, s) order.
// Only the taps r = rh + j*sh (rh = (ih + ph) mod sh) reach row ih, from the output row
// (ih + ph - rh) / sh down by one a tap: two divisions a pixel, none a tap; columns alike. The walk
// every direct dgrad kernel shares (the int8 simple and depthwise kernels, the fp32 depthwise one).
template <class F>
__device__ inline void for_each_cover(const ConvGeom& G, int64_t img, int ih, int iw, F&& f) {
  const int rh = (ih + G.ph) % G.sh, rw = (iw + G.pw) % G.sw;
  const int ow0 = (iw + G.pw - rw) / G.sw;
  int oh = (ih + G.ph - rh) / G.sh;
  for (int r = rh; r < G.r && oh >= 0; r += G.sh, --oh) {
    if (oh >= G.p) continue;
    int ow = ow0;
    for (int s = rw; s < G.s && ow >= 0; s += G.sw, --ow)
      if (ow < G.q) f((img * G.p + oh) * G.q + ow, r, s);
  }
}

// The walks of the 4-channel depthwise kernels (int8_conv.cu, conv_f32.cu; launched with
// dw_launch): thread x is a (pixel, channel quad) pair along a row, y strides over the rows (index
// math in 32 bits within a row). fprop: per output pixel, mac(acc, xo, wo) for every window tap
// inside the image (xo: the tap's input element at channel c0, wo: its weight at wt[tap][c0]),
// then done(acc, yo, c0) (yo: the output element). dgrad: per input pixel, mac over the dy pixels
// whose windows cover it (for_each_cover), then done(acc, dxo, c0). Acc starts value-initialized.
template <class Acc, class Mac, class Done>
__device__ inline void dw_fwd_quads(const ConvGeom& G, Mac&& mac, Done&& done) {
  const int quads = G.c / 4;
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= G.q * quads) return;
  const int c0 = j % quads * 4, qq = j / quads;
  for (int64_t row = blockIdx.y * blockDim.y + threadIdx.y; row < int64_t{G.n} * G.p;
       row += int64_t{gridDim.y} * blockDim.y) {
    const int64_t img = row / G.p;
    const int pp = static_cast<int>(row % G.p);
    Acc acc{};
    for_each_tap(G, pp, qq, [&](int ih, int iw, int r, int s) {
      mac(acc, ((img * G.h + ih) * G.w + iw) * G.c + c0, (r * G.s + s) * G.c + c0);
    });
    done(acc, (row * G.q + qq) * G.c + c0, c0);
  }
}

template <class Acc, class Mac, class Done>
__device__ inline void dw_dgrad_quads(const ConvGeom& G, Mac&& mac, Done&& done) {
  const int quads = G.c / 4;
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= G.w * quads) return;
  const int c0 = j % quads * 4, iw = j / quads;
  for (int64_t row = blockIdx.y * blockDim.y + threadIdx.y; row < int64_t{G.n} * G.h;
       row += int64_t{gridDim.y} * blockDim.y) {
    const int64_t img = row / G.h;
    const int ih = static_cast<int>(row % G.h);
    Acc acc{};
    for_each_cover(G, img, ih, iw, [&](int64_t o, int r, int s) {
      mac(acc, o * G.c + c0, (r * G.s + s) * G.c + c0);
    });
    done(acc, (row * G.w + iw) * G.c + c0, c0);
  }
}


inline float* fptr(const d8_buffer* b) { return static_cast<float*>(b->data); }
inline int8_t* i8ptr(const d8_buffer* b) { return static_cast<int8_t*>(b->data); }
inline int32_t* i32ptr(const d8_buffer* b) { return static_cast<int32_t*>(b->data); }

// The context of an op's buffers (all must share it), with its device made current.
inline int32_t op_context(const char* fn, std::initializer_list<const d8_buffer*> bufs,
                          d8_context** ctx) {
  if (int32_t e = check_same_ctx(fn, bufs)) return e;
  *ctx = nullptr;
  for (const d8_buffer* b : bufs)
    if (b) {
      *ctx = b->ctx;
      break;
    }
  if (!*ctx) return fail(D8_ERR_INVALID_ARGUMENT, "%s: no buffer given", fn);
  return use_device(fn, *ctx);
}

}  // namespace d8cuda

#endif  // DAINT8_CUDA_COMMON_CUH
