// cuda_runtime.h of the CPU emulation of the CUDA backend (kernels/cuda/emu/README.md): what the
// kernels in kernels/cuda use of CUDA C++, the warp-level instructions of int8_conv.cu, and the
// runtime API, so that the whole library (every kernel, the allocator, the ABI) builds with g++
// and runs on the CPU. Each thread of a block is a fiber on its own stack; a block's fibers run in
// turn on one OS thread, switching only where CUDA threads synchronize (__syncthreads,
// __syncwarp, the shuffles, ldmatrix, mma), so every barrier and every warp-collective exchange
// is exact. It checks the kernels' logic (indices, fragment layouts, pipelines, reductions)
// against the cpu backend without a GPU; it says nothing about speed, data races between
// unsynchronized threads, or the memory model.
#ifndef DAINT8_CUDA_EMU_RUNTIME_H
#define DAINT8_CUDA_EMU_RUNTIME_H

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#define D8_CUDA_EMU 1
#ifndef __CUDA_ARCH__
#define __CUDA_ARCH__ 900
#endif
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define __restrict__ __restrict

// ---- types ----------------------------------------------------------------------------------
struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
struct alignas(16) float4 {
  float x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevice = 101,
  cudaErrorNoDevice = 100,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchFailure = 719,
};
using cudaError = cudaError_t;
enum cudaMemcpyKind : int {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};
enum cudaFuncAttribute : int { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
struct CUstream_st;
using cudaStream_t = CUstream_st*;
constexpr unsigned cudaStreamNonBlocking = 1;
struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  size_t sharedMemPerBlock;
  size_t sharedMemPerBlockOptin;
  int major, minor;
  int multiProcessorCount;
  int warpSize;
  int maxThreadsPerBlock;
};

// ---- runtime API (kernels/cuda/emu/emu.cpp) ----------------------------------------------------
const char* cudaGetErrorString(cudaError_t e);
const char* cudaGetErrorName(cudaError_t e);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
cudaError_t cudaGetDeviceCount(int* n);
cudaError_t cudaGetDevice(int* d);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d);
cudaError_t cudaDriverGetVersion(int* v);
cudaError_t cudaRuntimeGetVersion(int* v);
cudaError_t cudaMalloc(void** p, size_t bytes);
template <class T>
cudaError_t cudaMalloc(T** p, size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(p), bytes);
}
cudaError_t cudaFree(void* p);
cudaError_t cudaMallocHost(void** p, size_t bytes);
template <class T>
cudaError_t cudaMallocHost(T** p, size_t bytes) {
  return cudaMallocHost(reinterpret_cast<void**>(p), bytes);
}
cudaError_t cudaFreeHost(void* p);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t s = nullptr);
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t s = nullptr);
cudaError_t cudaStreamCreate(cudaStream_t* s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaDeviceSynchronize();
template <class F>
cudaError_t cudaFuncSetAttribute(F*, cudaFuncAttribute, int) {
  return cudaSuccess;
}

// ---- the block scheduler (emu.cpp) -------------------------------------------------------------
namespace emu {
const uint3& thread_idx();
extern thread_local uint3 block_idx;
extern thread_local dim3 block_dim, grid_dim;
unsigned char* smem_base();      // this block's dynamic shared memory
void warp_sync();                // the live lanes of the calling thread's warp
void block_sync();               // the live threads of the block
uint32_t* lane_slot(int lane);   // 16 words per lane of the caller's warp, for exchanges
int lane_id();
using BlockFn = void (*)(void* closure);
// Runs fn(closure) for every thread of every block of the grid (blocks in turn).
void run_grid(dim3 grid, dim3 block, size_t smem, BlockFn fn, void* closure);

template <class... P>
struct Launcher {
  dim3 grid, block;
  size_t smem;
  template <class... A>
  void operator()(void (*k)(P...), A&&... a) const {
    struct Closure {
      void (*k)(P...);
      std::tuple<std::decay_t<P>...> args;
    };
    Closure c{k, std::tuple<std::decay_t<P>...>(static_cast<P>(a)...)};
    run_grid(grid, block, smem, [](void* p) {
      Closure& cl = *static_cast<Closure*>(p);
      std::apply([&](auto&... v) { cl.k(v...); }, cl.args);
    }, &c);
  }
};
struct LaunchCfg {
  dim3 grid, block;
  size_t smem;
  template <class... P, class... A>
  void operator()(void (*k)(P...), A&&... a) const {
    Launcher<P...>{grid, block, smem}(k, std::forward<A>(a)...);
  }
};
inline LaunchCfg launch(dim3 grid, dim3 block, size_t smem = 0, cudaStream_t = nullptr) {
  return {grid, block, smem};
}

// ---- warp-level instructions of int8_conv.cu ---------------------------------------------------
// ldmatrix.sync.aligned.m8n8.x4.shared.b16: lanes 8i .. 8i+7 give the row addresses of matrix i;
// lane l receives, of each matrix, the 4 bytes at column pair l % 4 of row l / 4.
void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr);
// mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 (PTX ISA fragment layouts: groupID = lane / 4,
// t = lane % 4; A rows g / g+8, k bytes 4t.. / 16+4t..; B k bytes 4t.. / 16+4t.., column g;
// C rows g / g+8, columns 2t, 2t+1).
void mma_m16n8k32_s8(int32_t (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]);
// mma.sync.aligned.m8n8k16.row.col.s32.s8.s8.s32: A row g bytes 4t..; B bytes 4t.., column g;
// C row g, columns 2t, 2t+1.
void mma_m8n8k16_s8(int32_t (&c)[2], uint32_t a, uint32_t b);
// A generic-proxy write of 16 bytes of shared memory at dst (cp_async16 notes its own): until the
// writing thread's next fence_proxy_async_shared, a wgmma that reads them stops the process.
void note_generic_smem_write(uint32_t dst);
// cp.async.cg.shared.global with a source size of 16 or 0 bytes (zero fill): done at once (the
// earliest completion the PTX semantics allow).
inline void cp_async16(uint32_t dst, const void* src, bool valid) {
  unsigned char* d = smem_base() + dst;
  if (valid)
    std::memcpy(d, src, 16);
  else
    std::memset(d, 0, 16);
  note_generic_smem_write(dst);
}
// ---- warpgroup MMA (sm_90a; README.md "Warpgroup MMA"): asynchronous, checked ----------------
// wgmma.mma_async.sync.aligned.m64n{n}k32.s32.s8.s8 d, a_desc, b_desc, scale_d
// d: the calling thread's n/2 int32 accumulator registers (PTX fragment layout: warp w of the
// warpgroup, g = lane / 4, t = lane % 4: d[i] is row 16w + g + 8 * ((i >> 1) & 1), column
// 8 * (i >> 2) + 2t + (i & 1)); A (64 x 32 bytes) and B (n x 32 bytes), both K-major, from shared
// memory descriptors; scale_d 0: D = A.B, else D = A.B + D. Queued: d is written when a
// wgmma_wait_group completes its group, from the shared memory and d of that moment.
void wgmma_m64nk32_s8(int32_t* d, int n, uint64_t a_desc, uint64_t b_desc, int scale_d);
void wgmma_fence();                  // wgmma.fence.sync.aligned
void wgmma_commit_group();           // wgmma.commit_group.sync.aligned
void wgmma_wait_group(int pending);  // wgmma.wait_group.sync.aligned pending (0..7)
void fence_proxy_async_shared();     // fence.proxy.async.shared::cta
inline uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(static_cast<const unsigned char*>(p) - smem_base());
}
}  // namespace emu

#define threadIdx (::emu::thread_idx())
#define blockIdx (::emu::block_idx)
#define blockDim (::emu::block_dim)
#define gridDim (::emu::grid_dim)

// ---- device built-ins ---------------------------------------------------------------------------
inline void __syncthreads() { emu::block_sync(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::warp_sync(); }
template <class T>
T emu_shfl_from(T v, int src_lane) {
  static_assert(sizeof(T) <= 8, "shuffles move up to 8 bytes");
  uint32_t* mine = emu::lane_slot(emu::lane_id());
  std::memcpy(mine, &v, sizeof v);
  emu::warp_sync();
  T out;
  std::memcpy(&out, emu::lane_slot(src_lane), sizeof out);
  emu::warp_sync();
  return out;
}
template <class T>
T __shfl_sync(unsigned, T v, int src, int width = 32) {
  const int lane = emu::lane_id();
  return emu_shfl_from(v, (lane & ~(width - 1)) + (src & (width - 1)));
}
template <class T>
T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32) {
  const int lane = emu::lane_id();
  const int in = (lane & (width - 1)) + static_cast<int>(delta);
  return emu_shfl_from(v, in < width ? lane + static_cast<int>(delta) : lane);
}
template <class T>
T __shfl_xor_sync(unsigned, T v, int mask, int width = 32) {
  const int lane = emu::lane_id();
  const int src = lane ^ mask;
  return emu_shfl_from(v, (src & ~(width - 1)) == (lane & ~(width - 1)) ? src : lane);
}
// One OS thread runs every fiber and switches only at synchronization points: atomics are plain.
template <class T>
T atomicAdd(T* p, T v) {
  const T old = *p;
  *p = old + v;
  return old;
}
template <class T>
T atomicMax(T* p, T v) {
  const T old = *p;
  if (v > old) *p = v;
  return old;
}
template <class T>
T atomicMin(T* p, T v) {
  const T old = *p;
  if (v < old) *p = v;
  return old;
}
inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// The _rn intrinsics are single IEEE operations, never contracted into an FMA (the emulation
// builds with -ffp-contract=off).
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
// __byte_perm(x, y, s): byte i of the result is byte (s >> 4i) & 7 of the 8 bytes y:x.
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
  const uint64_t v = (uint64_t{y} << 32) | x;
  unsigned r = 0;
  for (int i = 0; i < 4; ++i) r |= static_cast<unsigned>((v >> (8 * ((s >> (4 * i)) & 7))) & 0xff) << (8 * i);
  return r;
}
inline int __dp4a(int a, int b, int c) {
  for (int i = 0; i < 4; ++i)
    c += static_cast<int8_t>(a >> (8 * i)) * static_cast<int8_t>(b >> (8 * i));
  return c;
}
template <class T>
T __ldg(const T* p) {
  return *p;
}
template <class A, class B>
inline auto min(A a, B b) -> decltype(a < b ? a : b) {
  return b < a ? b : a;
}
template <class A, class B>
inline auto max(A a, B b) -> decltype(a < b ? a : b) {
  return a < b ? b : a;
}

#endif  // DAINT8_CUDA_EMU_RUNTIME_H
