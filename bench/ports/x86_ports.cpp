// x86_ports.cpp: throughput of the ymm instructions behind the int8 and fp32 GEMM kernels on this
// core (kernels/cpu/README.md "Peaks"). Each test is a block of independent instructions written
// in asm (no spills, no dependency chains longer than the instruction's own accumulator), timed
// with rdtsc, best of 300 repetitions (robust on a shared machine: one undisturbed repetition is
// enough). The TSC is converted to core clocks with a dependent chain of 1-cycle adds.
//
//   g++ -O2 -mavx2 -mfma bench/ports/x86_ports.cpp -o /tmp/x86_ports && /tmp/x86_ports
//   g++ -O2 -march=native bench/ports/x86_ports.cpp -o /tmp/x86_ports && /tmp/x86_ports
//
// Built for a core with AVX-512 (F) it adds the zmm FMA row; with AVX-512 VNNI the zmm and
// ymm (EVEX) vpdpbusd rows; with AVX-VNNI the VEX ymm vpdpbusd row. Each vpdpbusd does 4 MACs
// per 32-bit lane: 64 per zmm, 32 per ymm. On cores that split a zmm into two 256-bit halves
// (Zen 4) the zmm rows issue at half the ymm rate, which is what these rows show.
//
// "step" rows are the per-32-MAC instruction mix of the avx2 variant (vpsignb, vpmaddubsw,
// vpmaddwd with ones, vpaddd) and, for comparison, the mix without vpsignb (possible only when
// one operand is unsigned) and the int16 route (vpmaddwd on int16 operands + vpaddd). The "tile
// row" rows are one row of the avx2 tile with what it adds to the mix: the A broadcast and one
// vpabsb per row (the tile before 2026-12-07), or one vpabsb per B vector and k-group, shared by
// the tile's four rows (the tile since).
#include <x86intrin.h>
#include <cstdio>
#include <cstdint>
#include <algorithm>
static const int ITERS = 20000;
#define R10(I) I(0) I(1) I(2) I(3) I(4) I(5) I(6) I(7) I(8) I(9)
#define BENCH(NAME, BODY, PER) \
__attribute__((noinline)) double NAME() { uint64_t best=~0ull; \
  for (int rep=0; rep<300; ++rep) { uint64_t t0=__rdtsc(); \
    for (int it=0; it<ITERS; ++it) __asm__ volatile(BODY ::: "xmm0","xmm1","xmm2","xmm3","xmm4","xmm5","xmm6","xmm7","xmm8","xmm9","xmm10","xmm11","xmm12","xmm13"); \
    best=std::min<uint64_t>(best,__rdtsc()-t0);} return double(PER)*ITERS/best; }
#define FMA(i) "vfmadd231ps %%ymm14, %%ymm15, %%ymm" #i "\n"
#define MUBS(i) "vpmaddubsw %%ymm14, %%ymm15, %%ymm1" #i "\n"
#define PADD(i) "vpaddd %%ymm14, %%ymm" #i ", %%ymm" #i "\n"
#define MWD(i) "vpmaddwd %%ymm14, %%ymm15, %%ymm1" #i "\n"
#define SGN(i) "vpsignb %%ymm14, %%ymm15, %%ymm1" #i "\n"
// independent outputs (no chains): write ymm10..13 rotating (false deps only via rename)
#define MUBS4 "vpmaddubsw %%ymm14, %%ymm15, %%ymm10\n vpmaddubsw %%ymm14, %%ymm15, %%ymm11\n vpmaddubsw %%ymm14, %%ymm15, %%ymm12\n vpmaddubsw %%ymm14, %%ymm15, %%ymm13\n"
#define MWD4 "vpmaddwd %%ymm14, %%ymm15, %%ymm10\n vpmaddwd %%ymm14, %%ymm15, %%ymm11\n vpmaddwd %%ymm14, %%ymm15, %%ymm12\n vpmaddwd %%ymm14, %%ymm15, %%ymm13\n"
#define SGN4 "vpsignb %%ymm14, %%ymm15, %%ymm10\n vpsignb %%ymm14, %%ymm15, %%ymm11\n vpsignb %%ymm14, %%ymm15, %%ymm12\n vpsignb %%ymm14, %%ymm15, %%ymm13\n"
#define ADD4 "vpaddd %%ymm14, %%ymm15, %%ymm10\n vpaddd %%ymm14, %%ymm15, %%ymm11\n vpaddd %%ymm14, %%ymm15, %%ymm12\n vpaddd %%ymm14, %%ymm15, %%ymm13\n"
#define MIX4 "vpmaddubsw %%ymm14, %%ymm15, %%ymm10\n vpmaddwd %%ymm14, %%ymm15, %%ymm11\n vpmaddubsw %%ymm14, %%ymm15, %%ymm12\n vpmaddwd %%ymm14, %%ymm15, %%ymm13\n"
// AVX2 sign-trick product step into acc i: t = sign(b, a); t = maddubs(|a|, t); t = madd(t, ones); acc += t
#define STEP(i) "vpsignb %%ymm14, %%ymm15, %%ymm10\n vpmaddubsw %%ymm10, %%ymm13, %%ymm11\n vpmaddwd %%ymm12, %%ymm11, %%ymm11\n vpaddd %%ymm11, %%ymm" #i ", %%ymm" #i "\n"
#define STEP3(i) "vpmaddubsw %%ymm14, %%ymm13, %%ymm11\n vpmaddwd %%ymm12, %%ymm11, %%ymm11\n vpaddd %%ymm11, %%ymm" #i ", %%ymm" #i "\n"
// One row of the avx2 tile (int8_gemm.cpp tile_avx2's k-loop): a broadcast of the row's 4 A bytes,
// |a| once, then per B vector (two: 16 columns) sign, maddubs, maddwd, add: 64 MACs. Accumulator
// pairs rotate over 4 rows (ymm0-7), as in the 4 x 2 tile; the broadcast reads from a stack slot.
#define TROW(i, j) "vpbroadcastd (%%rsp), %%ymm13\n vpabsb %%ymm13, %%ymm9\n" \
  "vpsignb %%ymm13, %%ymm14, %%ymm10\n vpsignb %%ymm13, %%ymm15, %%ymm11\n" \
  "vpmaddubsw %%ymm10, %%ymm9, %%ymm10\n vpmaddubsw %%ymm11, %%ymm9, %%ymm11\n" \
  "vpmaddwd %%ymm12, %%ymm10, %%ymm10\n vpmaddwd %%ymm12, %%ymm11, %%ymm11\n" \
  "vpaddd %%ymm10, %%ymm" #i ", %%ymm" #i "\n vpaddd %%ymm11, %%ymm" #j ", %%ymm" #j "\n"
// The same four rows with the signs moved onto A: |b| once per B vector and k-group (shared by the
// four rows), then per row and vector sign(a, b), maddubs(|b|, .), maddwd, add.
#define TROWB(i, j) "vpbroadcastd (%%rsp), %%ymm13\n" \
  "vpsignb %%ymm14, %%ymm13, %%ymm10\n vpsignb %%ymm15, %%ymm13, %%ymm11\n" \
  "vpmaddubsw %%ymm10, %%ymm8, %%ymm10\n vpmaddubsw %%ymm11, %%ymm9, %%ymm11\n" \
  "vpmaddwd %%ymm12, %%ymm10, %%ymm10\n vpmaddwd %%ymm12, %%ymm11, %%ymm11\n" \
  "vpaddd %%ymm10, %%ymm" #i ", %%ymm" #i "\n vpaddd %%ymm11, %%ymm" #j ", %%ymm" #j "\n"
#define TABS "vpabsb %%ymm14, %%ymm8\n vpabsb %%ymm15, %%ymm9\n"
// int16 route: vpmaddwd on int16 operands (16 MACs) + add
#define W16(i) "vpmaddwd %%ymm14, %%ymm13, %%ymm11\n vpaddd %%ymm11, %%ymm" #i ", %%ymm" #i "\n"
BENCH(fma, R10(FMA), 10)
BENCH(mubs, MUBS4 MUBS4 MUBS4, 12)
BENCH(mwd, MWD4 MWD4 MWD4, 12)
BENCH(sgn, SGN4 SGN4 SGN4, 12)
BENCH(add, ADD4 ADD4 ADD4, 12)
BENCH(mix, MIX4 MIX4 MIX4, 12)
BENCH(step, R10(STEP), 10)
BENCH(step3, R10(STEP3), 10)
BENCH(w16, R10(W16), 10)
BENCH(trow, TROW(0, 1) TROW(2, 3) TROW(4, 5) TROW(6, 7) TROW(0, 1) TROW(2, 3) TROW(4, 5) TROW(6, 7), 8)
BENCH(trowb, TABS TROWB(0, 1) TROWB(2, 3) TROWB(4, 5) TROWB(6, 7) TABS TROWB(0, 1) TROWB(2, 3) TROWB(4, 5) TROWB(6, 7), 8)
#ifdef __AVX512F__
#define ZFMA(i) "vfmadd231ps %%zmm14, %%zmm15, %%zmm" #i "\n"
BENCH(zfma, R10(ZFMA), 10)
#endif
#ifdef __AVX512VNNI__
#define ZDP(i) "vpdpbusd %%zmm14, %%zmm15, %%zmm" #i "\n"
#define YDPE(i) "%{evex%} vpdpbusd %%ymm14, %%ymm15, %%ymm" #i "\n"
BENCH(zdp, R10(ZDP), 10)
BENCH(ydpe, R10(YDPE), 10)
#endif
#ifdef __AVXVNNI__
#define YDPV(i) "%{vex%} vpdpbusd %%ymm14, %%ymm15, %%ymm" #i "\n"
BENCH(ydpv, R10(YDPV), 10)
#endif
// The clock: a chain of dependent register-register adds (1 clock each). Not `add $1`: Golden
// Cove (Sapphire Rapids) folds immediate adds at rename, 6 of them per clock measured.
__attribute__((noinline)) double clk() { uint64_t best=~0ull; uint64_t x=0, one=1;
  for (int rep=0; rep<300; ++rep) { uint64_t t0=__rdtsc();
    for (int it=0; it<ITERS; ++it) __asm__ volatile(".rept 100\n add %1, %0\n .endr" : "+r"(x) : "r"(one));
    best=std::min<uint64_t>(best,__rdtsc()-t0);} return 100.0*ITERS/best; }
int main() {
  double c = clk();
  printf("core clocks per TSC tick: %.3f\n", c);
  struct { const char* n; double (*f)(); double macs; } L[] = {
    {"vfmadd231ps ymm", fma, 8}, {"vpmaddubsw ymm", mubs, 0}, {"vpmaddwd ymm", mwd, 0},
    {"vpsignb ymm", sgn, 0}, {"vpaddd ymm", add, 0}, {"vpmaddubsw+vpmaddwd mixed", mix, 0},
    {"sign+maddubs+maddwd+add step", step, 32}, {"maddubs+maddwd+add step", step3, 32},
    {"maddwd(int16)+add step", w16, 16}, {"avx2 tile row (bcast, abs, 2 x step)", trow, 64},
    {"tile row, |b| per k-group", trowb, 64}};
  auto row = [&](const char* n, double (*f)(), double macs) { double ipc = f() / c;
    printf("%-32s %.2f /clock", n, ipc); if (macs) printf(" = %.1f MACs/clock", ipc*macs); printf("\n"); };
  for (auto& l : L) row(l.n, l.f, l.macs);
#ifdef __AVX512F__
  row("vfmadd231ps zmm", zfma, 16);
#endif
#ifdef __AVX512VNNI__
  row("vpdpbusd zmm", zdp, 64);
  row("vpdpbusd ymm (EVEX)", ydpe, 32);
#endif
#ifdef __AVXVNNI__
  row("vpdpbusd ymm (VEX, AVX-VNNI)", ydpv, 32);
#endif
}
