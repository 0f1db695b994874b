// team.cpp: the library's own fork/join for parallel() (common.h), in place of an OpenMP region.
//
// Why: on the 2-vCPU Zen 5 guest an empty 2-thread `#pragma omp parallel` (libgomp) took 2.5-3.1
// us, and a ResNet-20 step at batch 64 opens ~250 regions, LeNet-5's ~24; a fork/join through one
// cache line per worker took 0.33-0.42 us there (kernels/cpu/README.md, "Threads").
//
// How: persistent workers, each waiting on its own 64-byte slot. The caller is thread 0: it writes
// the job into the slots of workers 1 .. nt-1, bumps each slot's generation, runs its own share and
// waits for the team's done count. A waiting worker spins (pause) for a while, then sleeps on its
// slot's condition variable; OMP_WAIT_POLICY is honoured as libgomp reads it (passive: sleep at
// once; active: spin without a limit; unset: spin ~2 ms first). team::barrier() is the team's
// barrier (a sense counter) inside such a region, and `#pragma omp barrier` inside an OpenMP one.
//
// When the pool does not take a region, parallel() opens the OpenMP region as before: the pool is
// in use by another calling thread, the region wants more threads than there are processors, a
// thread cannot be created, or D8_CPU_POOL=0 (measurements).
// A region opened from inside a team runs on the calling thread alone, as nested OpenMP regions do
// by default.
#include "common.h"

#ifdef _OPENMP
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#if defined(__linux__)
#include <pthread.h>
#endif
#include <thread>
#include <vector>

namespace d8cpu {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// How long a waiting thread spins before it sleeps (workers) or yields (barriers, the join).
int64_t spin_ns() {
  static const int64_t ns = [] {
    const char* p = std::getenv("OMP_WAIT_POLICY");
    if (p && (p[0] == 'p' || p[0] == 'P')) return int64_t{0};
    if (p && (p[0] == 'a' || p[0] == 'A')) return INT64_MAX;
    return int64_t{2'000'000};
  }();
  return ns;
}

// Spins until done() holds, checking the clock every 256 pauses; past the spin budget it calls
// idle() between checks (a yield, or a sleep that returns when woken).
template <class Done, class Idle>
void wait_until(Done&& done, Idle&& idle) {
  const int64_t budget = spin_ns();
  if (done()) return;
  if (budget > 0) {
    const auto t0 = std::chrono::steady_clock::now();
    for (;;) {
      for (int i = 0; i < 256; ++i) {
        if (done()) return;
        cpu_relax();
      }
      if (budget == INT64_MAX) continue;
      if (std::chrono::steady_clock::now() - t0 > std::chrono::nanoseconds(budget)) break;
    }
  }
  while (!done()) idle();
}

struct Team {
  alignas(64) std::atomic<int> done{0};  // workers finished
  alignas(64) std::atomic<int> arrived{0};
  std::atomic<unsigned> phase{0};  // barrier generation
  int size = 1;
};

using Fn = void (*)(void*, int, int);

struct alignas(64) Slot {
  std::atomic<uint64_t> go{0};  // generation: the job below is new when it changes
  std::atomic<bool> sleeping{false};
  Fn fn = nullptr;
  void* arg = nullptr;
  int t = 0;
  Team* team = nullptr;
  std::mutex m;
  std::condition_variable cv;
};

thread_local Team* tl_team = nullptr;  // the team this thread runs a share of, if any

class Pool {
 public:
  // Runs fn(arg, t, nt) for t = 0 .. nt-1, t = 0 on the calling thread. False when the pool cannot
  // take it now (nothing ran).
  bool run(int nt, Fn fn, void* arg) {
    // more threads than processors: spinning workers would hold the cores the others need (libgomp
    // shortens its spins then); OpenMP takes those regions
    if (nt > hw_) return false;
    if (busy_.exchange(true, std::memory_order_acquire)) return false;
    if (!grow(nt - 1)) {
      busy_.store(false, std::memory_order_release);
      return false;
    }
    Team team;
    team.size = nt;
    for (int i = 1; i < nt; ++i) {
      Slot& s = *slots_[i - 1];
      s.fn = fn, s.arg = arg, s.t = i, s.team = &team;
      s.go.fetch_add(1, std::memory_order_seq_cst);
      if (s.sleeping.load(std::memory_order_seq_cst)) {
        { std::lock_guard<std::mutex> lk(s.m); }
        s.cv.notify_one();
      }
    }
    tl_team = &team;
    fn(arg, 0, nt);
    tl_team = nullptr;
    wait_until([&] { return team.done.load(std::memory_order_acquire) == nt - 1; },
               [] { std::this_thread::yield(); });
    busy_.store(false, std::memory_order_release);
    return true;
  }

 private:
  // At least n workers (under busy_). False when a thread (or its slot) could not be created.
  bool grow(int n) {
    while (static_cast<int>(slots_.size()) < n) {
      Slot* s = nullptr;
      try {
        slots_.reserve(static_cast<size_t>(n));
        s = new Slot();
        std::thread(worker, s).detach();
      } catch (...) {  // std::system_error, std::bad_alloc
        delete s;
        return false;
      }
      slots_.push_back(s);  // (reserved: no throw)
    }
    return true;
  }

  static void worker(Slot* s) {
#if defined(__linux__)
    pthread_setname_np(pthread_self(), "daint8-worker");  // as `top -H` and debuggers show it
#endif
    uint64_t seen = 0;
    for (;;) {
      wait_until([&] { return s->go.load(std::memory_order_acquire) != seen; },
                 [&] {
                   std::unique_lock<std::mutex> lk(s->m);
                   s->sleeping.store(true, std::memory_order_seq_cst);
                   s->cv.wait(lk, [&] { return s->go.load(std::memory_order_seq_cst) != seen; });
                   s->sleeping.store(false, std::memory_order_relaxed);
                 });
      seen = s->go.load(std::memory_order_acquire);
      Team* team = s->team;
      tl_team = team;
      s->fn(s->arg, s->t, team->size);
      tl_team = nullptr;
      team->done.fetch_add(1, std::memory_order_release);
    }
  }

  const int hw_ = std::max(1, omp_get_num_procs());
  std::atomic<bool> busy_{false};
  std::vector<Slot*> slots_;  // never freed: detached workers use them until the process ends
};

bool pool_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("D8_CPU_POOL");
    return !(e && e[0] == '0');
  }();
  return on;
}

}  // namespace

namespace team {

bool inside() { return tl_team != nullptr; }

bool run(int nt, void (*fn)(void*, int, int), void* arg) {
  if (!pool_enabled()) return false;
  static Pool* pool = new Pool();  // leaked on purpose: workers outlive static destruction
  return pool->run(nt, fn, arg);
}

void barrier() {
  Team* team = tl_team;
  if (!team) {
#pragma omp barrier
    return;
  }
  const unsigned ph = team->phase.load(std::memory_order_acquire);
  if (team->arrived.fetch_add(1, std::memory_order_acq_rel) + 1 == team->size) {
    team->arrived.store(0, std::memory_order_relaxed);
    team->phase.store(ph + 1, std::memory_order_release);
    return;
  }
  wait_until([&] { return team->phase.load(std::memory_order_acquire) != ph; },
             [] { std::this_thread::yield(); });
}

}  // namespace team
}  // namespace d8cpu

#else  // no OpenMP: every region runs on the calling thread

namespace d8cpu {
namespace team {
bool inside() { return false; }
bool run(int, void (*)(void*, int, int), void*) { return false; }
void barrier() {}
}  // namespace team
}  // namespace d8cpu

#endif
