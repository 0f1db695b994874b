// The CPU emulation's scheduler and runtime API (kernels/cuda/emu/README.md).
#include "cuda_runtime.h"

#if !defined(__x86_64__)
#error "the cuda emulation switches fibers with x86-64 code (d8emu_switch below)"
#endif

#include <sys/mman.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <deque>
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

// ---- warpgroup MMA state (README.md "Warpgroup MMA") ----
struct WgOp {  // one issued wgmma.mma_async of one thread, queued until a wait_group completes it
  int32_t* d;
  int n;
  uint64_t a, b;
  int scale_d;
  int64_t group;        // -1 while uncommitted, else the thread's wgmma-group number
  uint64_t operands;  // hash of the thread's A and B bytes at issue
};
struct WgAcc {  // an accumulator (d array) of a thread's wgmmas
  int32_t* d;
  int n;
  int inflight;     // its queued wgmmas
  uint64_t hash;    // of its contents as the wgmmas left them (or at the first issue)
  uint64_t fences;  // the thread's wgmma_fence count when a wgmma last wrote it
};
struct WgThread {
  std::vector<WgOp> q;  // in issue order
  std::vector<WgAcc> acc;
  int64_t groups = 0;   // wgmma-groups committed
  uint64_t events = 0;  // wgmma-family instructions executed (fence, mma, commit, wait)
  uint64_t fences = 0;  // wgmma_fence count
};
struct WgEvent {  // the k-th wgmma-family instruction of a warpgroup, as its first thread gave it
  int kind;       // 0 fence, 1 mma, 2 commit, 3 wait
  int n, scale_d;
  uint64_t a, b;
  int seen;
};
struct WgLog {
  std::deque<WgEvent> ev;
  uint64_t base = 0;  // events before ev.front(), seen by every thread of the warpgroup
};

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
  size_t smem = 0;  // the launch's dynamic shared memory bytes
  // wgmma: per-thread queues and per-warpgroup instruction logs, set up by the first use in a block
  bool wg_used = false;
  std::vector<WgThread> wgt;
  std::vector<WgLog> wglog;
  // generic-proxy shared-memory writes not yet followed by their writer's proxy fence: per 16-byte
  // chunk, the writer + 1 (0 none) and the writer's proxy-fence count at the write
  bool generic_written = false;
  std::vector<uint16_t> chunk_writer;
  std::vector<uint32_t> chunk_epoch;
  std::vector<uint32_t> proxy_fences;  // per thread, fence.proxy.async count (never reset)
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

void wgmma_exit_check(Block& b, Fiber& me);
void wgmma_block_end(Block& b);
void wgmma_block_start(Block& b, size_t smem);

[[noreturn]] void fiber_entry() {
  Block& b = *g_block;
  b.fn(b.closure);
  Fiber& me = *b.cur;
  if (b.wg_used) wgmma_exit_check(b, me);
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
        wgmma_block_start(b, smem);
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
        if (b.wg_used) wgmma_block_end(b);
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


// ---- warpgroup MMA (README.md "Warpgroup MMA") ------------------------------------------------
namespace {

[[noreturn]] void wg_fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void wg_fail(const char* fmt, ...) {
  Block& b = *g_block;
  const uint3 t = b.cur ? b.cur->tid : uint3{0, 0, 0};
  std::fprintf(stderr, "cuda emulation: block (%u, %u, %u) thread (%u, %u, %u): ", block_idx.x,
               block_idx.y, block_idx.z, t.x, t.y, t.z);
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fputc('\n', stderr);
  std::abort();
}

uint64_t hash_bytes(const void* p, size_t n, uint64_t h = 0x243F6A8885A308D3ull) {
  const unsigned char* c = static_cast<const unsigned char*>(p);
  for (size_t i = 0; i < n; ++i) h = (h ^ c[i]) * 0x100000001B3ull;
  return h;
}

void wgmma_block_start(Block& b, size_t smem) {
  b.smem = smem;
  if (b.wg_used) {
    b.wg_used = false;
    b.wgt.clear();
    b.wglog.clear();
  }
  if (b.generic_written) {
    b.generic_written = false;
    std::fill(b.chunk_writer.begin(), b.chunk_writer.end(), 0);
  }
}

int fiber_index(Block& b, Fiber& f) { return static_cast<int>(&f - b.f.data()); }

WgThread& wg_self() {
  Block& b = *g_block;
  const int n = static_cast<int>(b.f.size());
  const int i = fiber_index(b, *b.cur);
  const int wg = i / 128;
  if (n < 128 * (wg + 1))
    wg_fail("a wgmma instruction in warpgroup %d, which has %d threads: a warpgroup is 128 "
            "consecutive threads, all of which must execute it", wg, n - 128 * wg);
  if (!b.wg_used) {
    b.wg_used = true;
    b.wgt.assign(n, WgThread{});
    b.wglog.assign((n + 127) / 128, WgLog{});
  }
  return b.wgt[i];
}

const char* const kWgKind[] = {"wgmma_fence", "wgmma_m64nk32_s8", "wgmma_commit_group",
                               "wgmma_wait_group"};

// .aligned: every thread of the warpgroup executes the same sequence of wgmma instructions with
// the same operands (n, descriptors, scale_d, wait count); the first thread to reach the k-th one
// records it, the others compare.
void wg_log(WgThread& me, int kind, int n = 0, uint64_t a = 0, uint64_t bd = 0, int scale = 0) {
  Block& b = *g_block;
  WgLog& log = b.wglog[fiber_index(b, *b.cur) / 128];
  const uint64_t k = me.events++;
  if (k - log.base >= log.ev.size()) {
    log.ev.push_back(WgEvent{kind, n, scale, a, bd, 0});
  } else {
    const WgEvent& e = log.ev[k - log.base];
    if (e.kind != kind || e.n != n || e.a != a || e.b != bd || e.scale_d != scale)
      wg_fail("its wgmma instruction #%llu is %s (n %d, a_desc 0x%016llx, b_desc 0x%016llx, "
              "scale_d / pending %d), another thread of its warpgroup executed %s (n %d, a_desc "
              "0x%016llx, b_desc 0x%016llx, scale_d / pending %d) there: wgmma instructions are "
              ".aligned, all 128 threads must execute the same ones with the same operands",
              static_cast<unsigned long long>(k), kWgKind[kind], n,
              static_cast<unsigned long long>(a), static_cast<unsigned long long>(bd), scale,
              kWgKind[e.kind], e.n, static_cast<unsigned long long>(e.a),
              static_cast<unsigned long long>(e.b), e.scale_d);
  }
  WgEvent& e = log.ev[k - log.base];
  if (++e.seen == 128) {
    // seen by the whole warpgroup (the front ones first, as every thread goes in order)
    while (!log.ev.empty() && log.ev.front().seen == 128) log.ev.pop_front(), ++log.base;
  }
}

struct Desc {
  uint32_t start, lbo, sbo;
  int base_offset, mode;  // mode: 0 none, 1 128-byte swizzle, 2 64-byte, 3 32-byte
};
Desc decode(uint64_t d) {
  return Desc{static_cast<uint32_t>(d & 0x3FFF) << 4, static_cast<uint32_t>((d >> 16) & 0x3FFF) << 4,
              static_cast<uint32_t>((d >> 32) & 0x3FFF) << 4, static_cast<int>((d >> 49) & 7),
              static_cast<int>(d >> 62)};
}
const char* const kModeName[] = {"no swizzle", "128-byte swizzle", "64-byte swizzle",
                                 "32-byte swizzle"};
int swizzle_bytes(int mode) { return mode == 1 ? 128 : mode == 2 ? 64 : mode == 3 ? 32 : 16; }

// What the emulation requires of a descriptor (README.md): no base offset, and with a swizzle,
// a start inside the first row of a pattern-aligned swizzle atom with the 32-byte K slice in that
// row, and 8-row groups (SBO) a whole number of patterns apart.
void check_desc(const Desc& d, uint64_t raw, const char* which, int rows) {
  if (d.mode == 0) return;
  const uint32_t w = swizzle_bytes(d.mode), pattern = 8 * w;
  if (d.base_offset != 0)
    wg_fail("%s descriptor 0x%016llx (%s) has matrix base offset %d: the emulation only "
            "implements base offset 0 (swizzle patterns starting on %u-byte boundaries)", which,
            static_cast<unsigned long long>(raw), kModeName[d.mode], d.base_offset, pattern);
  if (d.start % pattern + 32 > w)
    wg_fail("%s descriptor 0x%016llx (%s): start address %u is %u bytes into its %u-byte swizzle "
            "pattern; the 32-byte K slice must lie in the first %u-byte row of a pattern that "
            "starts on a %u-byte boundary (else the base offset field would be needed, which the "
            "emulation does not implement)", which, static_cast<unsigned long long>(raw),
            kModeName[d.mode], d.start, d.start % pattern, pattern, w, pattern);
  if (rows > 8 && d.sbo % pattern != 0)
    wg_fail("%s descriptor 0x%016llx (%s): stride byte offset %u is not a multiple of the "
            "%u-byte swizzle pattern, so its 8-row groups do not start on pattern boundaries",
            which, static_cast<unsigned long long>(raw), kModeName[d.mode], d.sbo, pattern);
}

// The shared address of the 16 bytes K chunk kc (0 or 1) of row r of a K-major operand.
// Canonical K-major layouts (T = 16 one-byte elements): no swizzle ((8,m),(T,2k)):((T,SBO),(1,LBO));
// swizzled ((8,m),(T,2k)):((W,SBO),(1,T)) with rows W = 32, 64, 128 bytes apart, then
// Swizzle<1|2|3,4,3> on the address: its bits 7.. XORed into bits 4...
uint32_t chunk_addr(const Desc& d, int r, int kc) {
  if (d.mode == 0) return d.start + (r % 8) * 16 + (r / 8) * d.sbo + kc * d.lbo;
  const uint32_t w = swizzle_bytes(d.mode);
  const uint32_t lin = d.start + (r % 8) * w + (r / 8) * d.sbo + kc * 16;
  const uint32_t mask = d.mode == 1 ? 7 : d.mode == 2 ? 3 : 1;
  return lin ^ (((lin >> 7) & mask) << 4);
}

// The calling thread's operand bytes: A rows 16w + g and 16w + g + 8; B rows (columns of D)
// 8j + 2t + e for j < n / 8, e < 2 (row-major [row][32]). Checks the bounds, and, with
// check_proxy, that no chunk holds a generic write its writer has not proxy-fenced.
void gather(const WgOp& op, int8_t (&a)[2][32], int8_t (*b)[32], bool check_proxy) {
  Block& blk = *g_block;
  const int i = fiber_index(blk, *blk.cur) % 128, w = i / 32, lane = i % 32, g = lane / 4,
            t = lane % 4;
  const Desc da = decode(op.a), db = decode(op.b);
  auto load = [&](const Desc& d, uint64_t raw, const char* which, int r, int8_t* out) {
    for (int kc = 0; kc < 2; ++kc) {
      const uint32_t addr = chunk_addr(d, r, kc);
      if (addr + 16 > blk.smem)
        wg_fail("%s descriptor 0x%016llx (%s, LBO %u, SBO %u): row %d bytes %d..%d are at shared "
                "address %u, outside the block's %zu bytes of dynamic shared memory", which,
                static_cast<unsigned long long>(raw), kModeName[d.mode], d.lbo, d.sbo, r, 16 * kc,
                16 * kc + 15, addr, blk.smem);
      if (check_proxy && blk.generic_written) {
        const uint16_t wr = blk.chunk_writer[addr / 16];
        if (wr != 0 && blk.proxy_fences[wr - 1] == blk.chunk_epoch[addr / 16]) {
          const uint3 wt = blk.f[wr - 1].tid;
          wg_fail("wgmma reads %s row %d bytes %d..%d at shared address %u, which thread (%u, %u, "
                  "%u) wrote through the generic proxy (cp.async) with no fence.proxy.async "
                  "(fence_proxy_async_shared) since: wgmma reads shared memory through the async "
                  "proxy", which, r, 16 * kc, 16 * kc + 15, addr, wt.x, wt.y, wt.z);
        }
      }
      std::memcpy(out + 16 * kc, g_smem + addr, 16);
    }
  };
  for (int h = 0; h < 2; ++h) load(da, op.a, "A", 16 * w + g + 8 * h, a[h]);
  for (int j = 0; j < op.n / 8; ++j)
    for (int e = 0; e < 2; ++e) load(db, op.b, "B", 8 * j + 2 * t + e, b[2 * j + e]);
}

uint64_t operand_hash(const int8_t (&a)[2][32], const int8_t (*b)[32], int n) {
  return hash_bytes(b, static_cast<size_t>(n / 4) * 32, hash_bytes(a, sizeof a));
}
uint64_t acc_hash(const int32_t* d, int n) { return hash_bytes(d, sizeof(int32_t) * (n / 2)); }

// The thread's record of accumulator array d, or null before its first wgmma.
WgAcc* find_acc(WgThread& me, const int32_t* d) {
  for (WgAcc& x : me.acc)
    if (x.d == d) return &x;
  return nullptr;
}

void complete(WgThread& me, size_t idx) {
  WgOp& op = me.q[idx];
  int8_t a[2][32], b[64][32];  // B: n / 4 <= 64 rows
  gather(op, a, b, false);
  if (operand_hash(a, b, op.n) != op.operands)
    wg_fail("the shared memory of a wgmma's A (desc 0x%016llx) or B (desc 0x%016llx) operand "
            "changed between the wgmma's issue and its completion (wgmma_wait_group): a kernel "
            "must not overwrite a stage that wgmmas in flight read before waiting for them",
            static_cast<unsigned long long>(op.a), static_cast<unsigned long long>(op.b));
  WgAcc* ac = find_acc(me, op.d);
  if (acc_hash(op.d, op.n) != ac->hash)
    wg_fail("the accumulator registers of a wgmma in flight (n %d) were written by other code "
            "before the wgmma_wait_group that completes it", op.n);
  for (int i = 0; i < op.n / 2; ++i) {
    const int h = (i >> 1) & 1, j = i >> 2, e = i & 1;
    int32_t acc = op.scale_d ? op.d[i] : 0;
    for (int k = 0; k < 32; ++k) acc += int32_t{a[h][k]} * int32_t{b[2 * j + e][k]};
    op.d[i] = acc;
  }
  ac->hash = acc_hash(op.d, op.n);
  ac->fences = me.fences;
  --ac->inflight;
}

void wgmma_exit_check(Block& b, Fiber& me) {
  const WgThread& t = b.wgt[fiber_index(b, me)];
  if (!t.q.empty())
    wg_fail("the kernel returned with %zu wgmma(s) not completed by a wgmma_wait_group (%zu of "
            "them not even committed)", t.q.size(),
            static_cast<size_t>(std::count_if(t.q.begin(), t.q.end(),
                                               [](const WgOp& o) { return o.group < 0; })));
}

void wgmma_block_end(Block& b) {
  for (size_t w = 0; w < b.wglog.size(); ++w) {
    const WgLog& log = b.wglog[w];
    const uint64_t total = log.base + log.ev.size();
    if (total == 0) continue;
    for (int i = 0; i < 128; ++i) {
      const WgThread& t = b.wgt[128 * w + i];
      if (t.events != total) {
        const uint3 id = b.f[128 * w + i].tid;
        std::fprintf(stderr,
                     "cuda emulation: block (%u, %u, %u): thread (%u, %u, %u) executed %llu wgmma "
                     "instructions, another thread of its warpgroup %llu: wgmma instructions are "
                     ".aligned, all 128 threads of a warpgroup must execute each of them\n",
                     block_idx.x, block_idx.y, block_idx.z, id.x, id.y, id.z,
                     static_cast<unsigned long long>(t.events),
                     static_cast<unsigned long long>(total));
        std::abort();
      }
    }
  }
}

}  // namespace

void note_generic_smem_write(uint32_t dst) {
  Block& b = *g_block;
  if (!b.generic_written) {
    b.generic_written = true;
    if (b.chunk_writer.empty()) {
      b.chunk_writer.assign(kSmem / 16, 0);
      b.chunk_epoch.assign(kSmem / 16, 0);
    }
    if (b.proxy_fences.size() < b.f.size()) b.proxy_fences.resize(b.f.size(), 0);
  }
  if (dst / 16 >= b.chunk_writer.size()) return;
  const int i = fiber_index(b, *b.cur);
  b.chunk_writer[dst / 16] = static_cast<uint16_t>(i + 1);
  b.chunk_epoch[dst / 16] = b.proxy_fences[i];
}

void fence_proxy_async_shared() {
  Block& b = *g_block;
  // orders the thread's earlier generic writes before later async-proxy reads: they are no
  // longer pending (the count only matters where the thread wrote since the block began)
  if (b.generic_written) ++b.proxy_fences[fiber_index(b, *b.cur)];
}

void wgmma_fence() {
  WgThread& me = wg_self();
  wg_log(me, 0);
  ++me.fences;
}

void wgmma_m64nk32_s8(int32_t* d, int n, uint64_t a_desc, uint64_t b_desc, int scale_d) {
  WgThread& me = wg_self();
  if (!(n >= 8 && n <= 256 && (n <= 32 ? n % 8 == 0 : n % 16 == 0)))
    wg_fail("wgmma m64n%dk32 .s32: n must be 8, 16, 24, 32, or a multiple of 16 from 48 to 256", n);
  scale_d = scale_d != 0;
  wg_log(me, 1, n, a_desc, b_desc, scale_d);
  if (me.fences == 0)
    wg_fail("a wgmma issued with no wgmma_fence before it (wgmma.fence must precede the first "
            "wgmma.mma_async of a warpgroup)");
  const Desc da = decode(a_desc), db = decode(b_desc);
  check_desc(da, a_desc, "A", 64);
  check_desc(db, b_desc, "B", n);
  WgAcc* ac = find_acc(me, d);
  const uint64_t h = acc_hash(d, n);
  if (ac && ac->inflight > 0) {
    // chained on wgmmas in flight (ordered by default when of the same shape)
    if (ac->n != n)
      wg_fail("a wgmma (n %d) on accumulator registers that a wgmma of another shape (n %d) in "
              "flight writes", n, ac->n);
    if (h != ac->hash)
      wg_fail("the accumulator registers of a wgmma in flight (n %d) were written by other code "
              "before the wgmma_wait_group that completes it", ac->n);
  } else {
    if (ac && ac->fences == me.fences && ac->n == n && h != ac->hash)
      wg_fail("a wgmma on accumulator registers that other code wrote after the wgmma that last "
              "wrote them completed, with no wgmma_fence between (wgmma.fence must order "
              "register accesses before a wgmma that accesses the same registers)");
    if (!ac) {
      me.acc.push_back(WgAcc{d, n, 0, 0, 0});
      ac = &me.acc.back();
    }
    ac->n = n, ac->hash = h;
  }
  ++ac->inflight;
  WgOp op{d, n, a_desc, b_desc, scale_d, -1, 0};
  int8_t a[2][32], b[64][32];  // B: n / 4 <= 64 rows
  gather(op, a, b, true);
  op.operands = operand_hash(a, b, n);
  me.q.push_back(op);
}

void wgmma_commit_group() {
  WgThread& me = wg_self();
  wg_log(me, 2);
  for (WgOp& o : me.q)
    if (o.group < 0) o.group = me.groups;
  ++me.groups;
}

void wgmma_wait_group(int pending) {
  WgThread& me = wg_self();
  if (pending < 0 || pending > 7)
    wg_fail("wgmma_wait_group(%d): the pending count is an integer constant 0..7", pending);
  wg_log(me, 3, 0, 0, 0, pending);
  // complete, in issue order, every op of the groups before the `pending` most recent ones
  const int64_t limit = me.groups - pending;
  size_t k = 0;
  for (; k < me.q.size() && me.q[k].group >= 0 && me.q[k].group < limit; ++k) complete(me, k);
  me.q.erase(me.q.begin(), me.q.begin() + static_cast<std::ptrdiff_t>(k));
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
