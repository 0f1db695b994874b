// int8_tile.cpp: multiply-adds per core clock of the active int8 micro-kernel in a hot loop (A
// block of 96 rows and the packed B panels L1/L2 resident, best of 2000 calls by rdtsc): the
// kernel's own ceiling, without im2col, packing or memory traffic (kernels/cpu/README.md).
//
//   W=kernels; g++ -std=c++17 -O3 -march=native -fopenmp -I$W bench/ports/int8_tile.cpp \
//       $W/cpu/*.cpp -o /tmp/int8_tile
//   /tmp/int8_tile N K [variant [M]]  # e.g. 16 144 (ResNet-20 stage 1 fprop), variant as in
//                                     # d8_set_int8_kernel; D8_CPU_INT8_EMULATE_AVXVNNI=1 for 4;
//                                     # M: rows of the GEMM, given to the plan as its row-count
//                                     # hint (the implicit forward's Q, 28 in stage 1)
// The TSC-to-clock factor (1.25 on the Zen 3 VM measured) comes from x86_ports.cpp: pass it as
// CLOCKS_PER_TICK in the environment.
// Hot-loop throughput of the active int8 tile: A block (m rows) x B panel(s), L1/L2 resident.
#include "cpu/int8_gemm.h"
#include "daint8.h"
#include "cpu/common.h"
#include <x86intrin.h>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <algorithm>
using namespace d8cpu::i8;
extern "C" int32_t d8_set_int8_kernel(d8_context*, int32_t);
int main(int argc, char** argv) {
  int64_t m = 96, n = atoi(argc > 1 ? argv[1] : "16"), k = atoi(argc > 2 ? argv[2] : "144");
  const int64_t hint = argc > 4 ? atoi(argv[4]) : 0;
  if (hint > 0) m = hint;
  d8_context* ctx = nullptr;
  d8_context_create(&ctx, 0);
  if (argc > 3) d8_set_int8_kernel(ctx, atoi(argv[3]));
  d8cpu::set_current_context(ctx);
  Plan p = plan_for(n, hint);
  int64_t lda = 4 * k4_of(k);
  std::vector<uint8_t> a((m + p.mr) * lda);
  std::vector<int8_t> b(n * k), bp(packb_bytes(n, k, p.nr) + 64);
  std::vector<int32_t> comp(comp_len(n, p.nr) + 16), c(m * n);
  for (auto& v : a) v = static_cast<uint8_t>(rand() % 255);
  for (auto& v : b) v = static_cast<int8_t>(rand() % 255 - 127);
  pack_b_rows(bp.data(), comp.data(), b.data(), k, n, k, p);
  Epi e{kStoreI32, c.data(), n, nullptr, nullptr};
  uint64_t best = ~0ull;
  for (int r = 0; r < 2000; ++r) { uint64_t t0 = __rdtsc(); gemm_block(p, m, n, k, a.data(), lda, bp.data(), comp.data(), e); best = std::min<uint64_t>(best, __rdtsc() - t0); }
  const char* cpt = std::getenv("CLOCKS_PER_TICK");
  const double clk = cpt ? std::atof(cpt) : 1.0;  // core clocks per TSC tick (x86_ports)
  printf("%s mr %d nr %d  m %ld n %ld k %ld: %.1f MACs/clock\n", variant_name(p.variant), p.mr, p.nr, m, n, k, double(m) * n * k / (best * clk));
}
