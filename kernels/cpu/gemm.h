// gemm.h: the one single-precision GEMM behind conv fprop / dgrad / wgrad and linear.
//
//   C[M, N] = alpha * A[M, K] . B[K, N] + beta * C  (+ bias[N] broadcast over rows)
//
// Operands are strided views: A[i, k] = A[i*rsa + k*csa], B[k, j] = B[k*rsb + j*csb], so a
// transposed operand is just swapped strides. C is row-major with leading dimension ldc.
// beta == 0 overwrites C without reading it (C may hold garbage / NaN).
//
// Two levels:
//   sgemm()      packs B, splits the work across threads, calls gemm_core. For linear layers and
//                the benchmark.
//   gemm_core()  single-threaded, B already packed (pack_b). Conv code calls it from inside its own
//                parallel loop over row chunks, packing the weights once per call.
#ifndef DAINT8_CPU_GEMM_H
#define DAINT8_CPU_GEMM_H

#include <cstdint>

// Internal symbols stay out of the shared library's dynamic symbol table.
#pragma GCC visibility push(hidden)

namespace d8cpu {

// Register tile and cache blocks, chosen per ISA at compile time (see gemm.cpp):
// NR = nv * kVecWidth columns (nv = 1 or 2 vectors), MR rows.
int gemm_nv(int64_t n);          // vectors per micro-tile row for an N-column problem
// nv value of the pairs layout (gemm.cpp ukernel_pairs): N <= one vector, K even, A in place
// with each even/odd k pair adjacent in memory.
constexpr int kNvPairs = 0;
// kNvPairs where that layout applies and pays (n <= one 8-float vector, k even: AVX2 builds),
// else gemm_nv(n); the caller guarantees the adjacency of A's k pairs.
int gemm_nv_pairs(int64_t n, int64_t k);
// dst[c*ldd + r] = src[r*lds + c] for r < rows, c < cols: 16 x 16 blocks transposed in
// registers on AVX-512, the rest in 32 x 32 blocks (each block's lines stay in L1).
void transpose_f32(float* dst, int64_t ldd, const float* src, int64_t lds, int64_t rows,
                   int64_t cols);
int64_t gemm_nr(int nv);         // micro-tile columns
int64_t gemm_mr(int nv);         // micro-tile rows
int64_t gemm_kc();               // K block
int64_t gemm_mc();               // M block (rows per packed / cached A block)
const char* gemm_isa();          // "avx512 (16 floats x 2 vectors)" etc.

// Packed B: panels of NR columns, each [K][NR] (zero-padded past N), panel after panel.
int64_t packb_floats(int64_t k, int64_t n, int nv);
void pack_b(float* dst, const float* b, int64_t rsb, int64_t csb, int64_t k, int64_t n, int nv);
// Same, panels split across threads (for large B).
void pack_b_parallel(float* dst, const float* b, int64_t rsb, int64_t csb, int64_t k, int64_t n,
                     int nv);

// Floats of `work` gemm_core needs when csa != 1 (A is then packed MC x KC at a time).
int64_t gemm_work_floats(int nv);

// Single-threaded C = alpha * A . Bp + beta * C (+ bias). A is read in place when csa == 1
// (row-major rows, lda = rsa), otherwise packed into work. koff (csa == 1 only, else null):
// A[i, k] = a[i*rsa + koff[k]], an implicit im2col (row i = output pixel, koff[k] = input
// offset of kernel tap k), so convolutions need no im2col copy. bk: the k rows of each packed B
// panel (the panel stride; 0 = k): a GEMM over rows k0 .. k0+k of a B packed with bk rows passes
// bp + k0 * gemm_nr(nv) (k0 even with the pairs layout). batch > 1 runs `batch` such GEMMs with
// the same B, the i-th on a + i*a_step and c + i*c_step (the output rows of a convolution: one
// call instead of one per row, whose set-up cost shows on short rows and reductions).
void gemm_core(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t rsa,
               int64_t csa, const int64_t* koff, const float* bp, int nv, float beta, float* c,
               int64_t ldc, const float* bias, float* work, int64_t bk = 0, int64_t batch = 1,
               int64_t a_step = 0, int64_t c_step = 0);

// Single-threaded C[m, n] += A . B with A[i, kk] = a[kk*lda + i] and B[kk, j] = b[boff[kk] + j]
// (rows of B gathered through an offset table, read in place). Reads up to gemm_nr(2) floats
// past b[boff[kk] + n - 1]: the caller keeps that much readable slack after its data.
void gemm_gather_b(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                   const int64_t* boff, float* c, int64_t ldc);

// Same with A gathered too: A[i, kk] = a[ab[2kk] + i], B[kk, j] = b[ab[2kk+1] + j] (a wgrad's
// list of the pixels a tap row sees inside the image). Both read nothing past a row of B when n is
// a multiple of the vector width (gemm_nr(1)); otherwise the same slack as gemm_gather_b.
void gemm_gather_ab(int64_t m, int64_t n, int64_t k, const float* a, const float* b,
                    const int64_t* ab, float* c, int64_t ldc);

// Multi-threaded general GEMM (uses the calling thread's scratch for packed operands).
void sgemm(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t rsa, int64_t csa,
           const float* b, int64_t rsb, int64_t csb, float beta, float* c, int64_t ldc,
           const float* bias);

}  // namespace d8cpu

#pragma GCC visibility pop

#endif  // DAINT8_CPU_GEMM_H
