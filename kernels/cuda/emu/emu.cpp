// The CPU emulation's scheduler and runtime API (kernels/cuda/emu/README.md).
#include "cuda_runtime.h"

#if !defined(__x86_64__)
#error "the cuda emulation switches fibers with x86-64 code (d8emu_switch below)"
#endif

#include <sys/mman.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

// x86-64 context switch: the callee-saved registers on the old stack, then the new stack's.
extern "C" void d8emu_switch(void** save_sp, void* load_sp);
__asm__(R"(
  .text
  .p2align 4
  .globl d8emu_switch
  .hidden d8emu_switch
  .type d8emu_switch,@function
d8emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size d8emu_switch, .-d8emu_switch
)");

namespace emu {

thread_local uint3 block_idx;
thread_local dim3 block_dim, grid_dim;

struct Fiber {
  void* sp;
  uint3 tid;
  int lane, warp;
  bool done;
  int wait;  // 0 runnable, 1 warp barrier, 2 block barrier
  uint64_t gen;
};

namespace {

constexpr size_t kStack = 256 * 1024;     // per thread (the int8 tiles keep ~1 KB of accumulators)
constexpr size_t kSmem = 228 * 1024;      // dynamic shared memory of one block (sm_90 opt-in)
constexpr int kMaxThreads = 1024;

struct Block {
  std::vector<Fiber> f;
  std::vector<int> warp_live, warp_count;
  std::vector<uint64_t> warp_gen;
  std::vector<uint32_t> slots;  // [warp][lane][16]
  int live = 0, block_count = 0;
  uint64_t block_gen = 0;
  void* sched_sp = nullptr;
  Fiber* cur = nullptr;
  BlockFn fn = nullptr;
  void* closure = nullptr;
};

thread_local Block* g_block = nullptr;
thread_local unsigned char* g_stacks = nullptr;  // kMaxThreads stacks, mapped once per OS thread
thread_local unsigned char* g_smem = nullptr;
thread_local cudaError_t g_error = cudaSuccess;
thread_local int g_order = 0;                       // 0 forward, 1 reverse, 2 shuffle
thread_local uint64_t g_rng = 0x9E3779B97F4A7C15ull;  // the shuffle's state

void release_warp(Block& b, int w) {
  if (b.warp_live[w] > 0 && b.warp_count[w] == b.warp_live[w]) {
    b.warp_count[w] = 0;
    ++b.warp_gen[w];
  }
}
void release_block(Block& b) {
  if (b.live > 0 && b.block_count == b.live) {
    b.block_count = 0;
    ++b.block_gen;
  }
}

void yield() {
  Block& b = *g_block;
  d8emu_switch(&b.cur->sp, b.sched_sp);
}

[[noreturn]] void fiber_entry() {
  Block& b = *g_block;
  b.fn(b.closure);
  Fiber& me = *b.cur;
  me.done = true;
  --b.live;
  --b.warp_live[me.warp];
  release_warp(b, me.warp);  // an exited lane no longer holds its warp's barrier
  release_block(b);
  d8emu_switch(&me.sp, b.sched_sp);
  std::abort();  // never resumed
}

void* fresh_stack(int i) {
  // [top - 8] a null return address, [top - 16] fiber_entry, then six callee-saved registers
  unsigned char* top = g_stacks + (i + 1) * kStack;
  void** sp = reinterpret_cast<void**>(top);
  *--sp = nullptr;
  *--sp = reinterpret_cast<void*>(&fiber_entry);
  for (int r = 0; r < 6; ++r) *--sp = nullptr;
  return sp;
}

}  // namespace

const uint3& thread_idx() { return g_block->cur->tid; }
unsigned char* smem_base() { return g_smem; }
int lane_id() { return g_block->cur->lane; }
uint32_t* lane_slot(int lane) {
  return g_block->slots.data() + (g_block->cur->warp * 32 + lane) * 16;
}

void warp_sync() {
  Block& b = *g_block;
  Fiber& me = *b.cur;
  const uint64_t gen = b.warp_gen[me.warp];
  ++b.warp_count[me.warp];
  release_warp(b, me.warp);
  if (b.warp_gen[me.warp] != gen) return;
  me.wait = 1, me.gen = gen;
  yield();
}

void block_sync() {
  Block& b = *g_block;
  Fiber& me = *b.cur;
  const uint64_t gen = b.block_gen;
  ++b.block_count;
  release_block(b);
  if (b.block_gen != gen) return;
  me.wait = 2, me.gen = gen;
  yield();
}

void run_grid(dim3 grid, dim3 block, size_t smem, BlockFn fn, void* closure) {
  const uint64_t nt = uint64_t{block.x} * block.y * block.z;
  if (nt == 0 || nt > kMaxThreads || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
      grid.y > 65535 || grid.z > 65535 || smem > kSmem) {
    g_error = cudaErrorInvalidConfiguration;
    return;
  }
  if (!g_stacks) {
    void* m = mmap(nullptr, kMaxThreads * kStack, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
      g_error = cudaErrorMemoryAllocation;
      return;
    }
    g_stacks = static_cast<unsigned char*>(m);
    g_smem = static_cast<unsigned char*>(std::aligned_alloc(128, kSmem));
  }
  Block b;
  const int n = static_cast<int>(nt), warps = (n + 31) / 32;
  // D8_CUDA_EMU_ORDER: the order the block's threads run in between synchronization points:
  // forward (default), reverse or shuffle. A kernel that reads another thread's shared-memory
  // write without a barrier between them gets the value in one order and not in another.
  static const int order_mode = [] {
    const char* o = std::getenv("D8_CUDA_EMU_ORDER");
    return !o ? 0 : std::strcmp(o, "reverse") == 0 ? 1 : std::strcmp(o, "shuffle") == 0 ? 2 : 0;
  }();
  g_order = order_mode;
  std::vector<int> order(n);
  for (int i = 0; i < n; ++i) order[i] = g_order == 1 ? n - 1 - i : i;
  b.f.resize(n);
  b.slots.assign(static_cast<size_t>(warps) * 32 * 16, 0);
  b.fn = fn, b.closure = closure;
  Block* outer = g_block;
  g_block = &b;
  grid_dim = grid, block_dim = block;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        block_idx = {bx, by, bz};
        // shared memory starts as garbage on a GPU: a pattern, so a kernel that reads what it did
        // not write fails its test here too
        std::memset(g_smem, 0xA5, smem);
        b.warp_live.assign(warps, 0);
        b.warp_count.assign(warps, 0);
        b.warp_gen.assign(warps, 0);
        b.live = n, b.block_count = 0, b.block_gen = 0;
        for (int i = 0; i < n; ++i) {
          Fiber& f = b.f[i];
          f.tid = {static_cast<unsigned>(i % block.x), static_cast<unsigned>(i / block.x % block.y),
                   static_cast<unsigned>(i / (block.x * block.y))};
          f.lane = i % 32, f.warp = i / 32, f.done = false, f.wait = 0, f.gen = 0;
          f.sp = fresh_stack(i);
          ++b.warp_live[f.warp];
        }
        while (b.live > 0) {
          bool ran = false;
          if (g_order == 2)  // a fresh shuffle every round (xorshift)
            for (int i = n - 1; i > 0; --i) {
              g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
              std::swap(order[i], order[static_cast<int>(g_rng % static_cast<uint64_t>(i + 1))]);
            }
          for (int oi = 0; oi < n; ++oi) {
            const int i = order[oi];
            Fiber& f = b.f[i];
            if (f.done) continue;
            if (f.wait == 1 && b.warp_gen[f.warp] == f.gen) continue;
            if (f.wait == 2 && b.block_gen == f.gen) continue;
            f.wait = 0;
            b.cur = &f;
            d8emu_switch(&b.sched_sp, f.sp);
            ran = true;
          }
          if (!ran) {
            std::fprintf(stderr,
                         "cuda emulation: block (%u, %u, %u) deadlocked: its threads wait at "
                         "barriers the others never reach (divergent __syncthreads or warp "
                         "collective)\n",
                         bx, by, bz);
            std::abort();
          }
        }
      }
  g_block = outer;
}

void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  const int lane = lane_id();
  lane_slot(lane)[0] = addr;
  warp_sync();
  for (int i = 0; i < 4; ++i) {
    const uint32_t row = lane_slot(8 * i + lane / 4)[0];
    std::memcpy(&r[i], g_smem + row + (lane % 4) * 4, 4);
  }
  warp_sync();
}

namespace {
int8_t byte_of(uint32_t w, int i) { return static_cast<int8_t>(w >> (8 * i)); }
}  // namespace

void mma_m16n8k32_s8(int32_t (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  const int lane = lane_id();
  uint32_t* s = lane_slot(lane);
  for (int i = 0; i < 4; ++i) s[i] = a[i];
  s[4] = b[0], s[5] = b[1];
  warp_sync();
  const int g = lane / 4, t = lane % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
    int32_t acc = c[i];
    for (int k = 0; k < 32; ++k) {
      const int kt = (k % 16) / 4, kb = k % 4, hi = k >= 16 ? 1 : 0;
      const uint32_t aw = lane_slot((row % 8) * 4 + kt)[(row >= 8 ? 1 : 0) + 2 * hi];
      const uint32_t bw = lane_slot(col * 4 + kt)[4 + hi];
      acc += int32_t{byte_of(aw, kb)} * int32_t{byte_of(bw, kb)};
    }
    c[i] = acc;
  }
  warp_sync();
}

void mma_m8n8k16_s8(int32_t (&c)[2], uint32_t a, uint32_t b) {
  const int lane = lane_id();
  uint32_t* s = lane_slot(lane);
  s[0] = a, s[1] = b;
  warp_sync();
  const int g = lane / 4, t = lane % 4;
  for (int i = 0; i < 2; ++i) {
    const int col = 2 * t + i;
    int32_t acc = c[i];
    for (int k = 0; k < 16; ++k) {
      const uint32_t aw = lane_slot(g * 4 + k / 4)[0];
      const uint32_t bw = lane_slot(col * 4 + k / 4)[1];
      acc += int32_t{byte_of(aw, k % 4)} * int32_t{byte_of(bw, k % 4)};
    }
    c[i] = acc;
  }
  warp_sync();
}

}  // namespace emu

// ---- runtime API ------------------------------------------------------------------------------
namespace {
thread_local int g_device = 0;
}

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
  }
  return "cudaErrorUnknown";
}
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    default: return cudaGetErrorName(e);
  }
}
cudaError_t cudaGetLastError() {
  const cudaError_t e = emu::g_error;
  emu::g_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return emu::g_error; }
cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* d) {
  *d = g_device;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) {
  if (d != 0) return cudaErrorInvalidDevice;
  g_device = d;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d) {
  if (d != 0) return cudaErrorInvalidDevice;
  std::memset(p, 0, sizeof *p);
  std::snprintf(p->name, sizeof p->name, "daint8 CUDA emulation on the CPU (sm_90)");
  p->totalGlobalMem = size_t{16} << 30;
  p->sharedMemPerBlock = 48 * 1024;
  p->sharedMemPerBlockOptin = 227 * 1024;
  // D8_CUDA_EMU_CC=75 / 80 / 90 picks the compute capability the host code sees
  const char* cc = std::getenv("D8_CUDA_EMU_CC");
  const int v = cc ? std::atoi(cc) : 90;
  p->major = v / 10, p->minor = v % 10;
  p->multiProcessorCount = 4;
  p->warpSize = 32;
  p->maxThreadsPerBlock = 1024;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* v) {
  *v = 13000;
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = 13000;
  return cudaSuccess;
}
cudaError_t cudaMalloc(void** p, size_t bytes) {
  // host memory; an allocation the host cannot make is the device's out of memory
  *p = std::aligned_alloc(256, (std::max<size_t>(bytes, 1) + 255) / 256 * 256);
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFree(void* p) {
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void** p, size_t bytes) { return cudaMalloc(p, bytes); }
cudaError_t cudaFreeHost(void* p) { return cudaFree(p); }
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind k,
                            cudaStream_t) {
  return cudaMemcpy(dst, src, bytes, k);
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t) {
  if (bytes) std::memset(p, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* s) {
  *s = reinterpret_cast<cudaStream_t>(new char[1]);
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) { return cudaStreamCreate(s); }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete[] reinterpret_cast<char*>(s);
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
