/* qpipe's own matrix products, with one accumulation order on every CPU.
 *
 * Why not OpenBLAS: its result bits depend on the kernel it picks for the
 * CPU (Haswell, SkylakeX, Cooperlake, ...), on OPENBLAS_CORETYPE and on its
 * thread count, so the same recipe gave different calibration statistics,
 * GPTQ/AWQ codes and evaluation metrics on two machines, and a lock written
 * on one failed on the other.  Every product whose result can reach an
 * artifact's bytes or a gated metric goes through these functions instead.
 *
 * The contract (numerics profile QP_NUMERICS_PROFILE, common/numerics.h):
 *
 *   C[i][j] := fold over k = 0, 1, …, K−1 (in this order) of
 *                  acc = fma(alpha·A(i,k), B(k,j), acc)
 *              starting from acc = 0 when beta == 0, else beta·C[i][j]
 *
 * where alpha·A(i,k) and beta·C[i][j] are f32 (f64) products rounded once
 * (skipped when the factor is 1, which is exact anyway) and fma rounds once
 * (IEEE 754 fusedMultiplyAdd).  A(i,k) is A[i·lda + k], or A[k·lda + i] when
 * ta is QP_TRANS; B(k,j) is B[k·ldb + j], or B[j·ldb + k] when tb is
 * QP_TRANS.  When beta == 0, C is not read (it may hold NaN).  The bits are
 * the same on every path for every result that is not NaN; which NaN (its
 * sign and payload) comes out of a NaN input is not specified (IEEE 754
 * leaves it open, and compilers order fma operands freely), and nothing
 * qpipe writes or hashes is meant to hold one.
 *
 * Every element is one sequential chain of fused multiply-adds, so any
 * implementation that keeps each element in one accumulator lane gives the
 * same bits: the element-by-element reference (qp_sgemm_ref), and the
 * blocked driver with its portable C, AVX2+FMA and AVX-512 micro-kernels
 * (register tiles of MR rows × NR columns over packed panels; blocking K
 * only stores and reloads the f32/f64 accumulator, which changes nothing).  tests/common/test_gemm.c checks each path bit for bit
 * against the reference.
 *
 *   A  [M, K] (or [K, M] when transposed), row stride lda
 *   B  [K, N] (or [N, K] when transposed), row stride ldb
 *   C  [M, N], row stride ldc; must not overlap A or B
 *
 * A call runs on the calling thread; callers parallelise by giving threads
 * disjoint blocks of C (each element's chain is then computed whole by one
 * thread, so the result never depends on the thread count). */
#ifndef QP_COMMON_GEMM_H
#define QP_COMMON_GEMM_H

#include <stddef.h>

typedef enum { QP_NOTRANS = 0, QP_TRANS = 1 } qp_trans;

void qp_sgemm(qp_trans ta, qp_trans tb, size_t m, size_t n, size_t k, float alpha, const float *a, size_t lda,
              const float *b, size_t ldb, float beta, float *c, size_t ldc);
void qp_dgemm(qp_trans ta, qp_trans tb, size_t m, size_t n, size_t k, double alpha, const double *a, size_t lda,
              const double *b, size_t ldb, double beta, double *c, size_t ldc);

/* The implementations.  AUTO picks the fastest the CPU runs; the others
 * exist so that tests can compare them and so that one machine can compute
 * what another would (the bits are the same by the contract above). */
typedef enum {
    QP_GEMM_AUTO = 0,
    QP_GEMM_SCALAR,   /* portable C micro-kernels over fma()/fmaf() (4x16 f32, 4x8 f64) */
    QP_GEMM_AVX2,     /* AVX2 + FMA micro-kernels (6x16 f32, 6x8 f64) */
    QP_GEMM_AVX512,   /* AVX-512F micro-kernels (8x32 f32, 12x16 f64) */
} qp_gemm_path;

/* Selects the path for the whole process.  Returns 0, or -1 (and changes
 * nothing) when the CPU cannot run it.  Not thread-safe against products
 * running at the same time.  The environment variable QPIPE_GEMM (scalar,
 * avx2, avx512) sets the initial choice; an unknown or unsupported value
 * is ignored (qp_gemm_path_active() tells what is in use). */
int qp_gemm_set_path(qp_gemm_path path);
qp_gemm_path qp_gemm_path_active(void);
/* 1 when this CPU can run the path. */
int qp_gemm_path_supported(qp_gemm_path path);
/* "scalar", "avx2", "avx512" ("auto" for QP_GEMM_AUTO). */
const char *qp_gemm_path_name(qp_gemm_path path);

/* One left operand for several products (the column blocks of a linear
 * layer, q/k/v from one input): pack alpha·A [m, k] once, then run
 * C[m, n] = A·B (+ beta·C) per block from the packed copy.  Same bits as
 * qp_sgemm with that alpha; saves re-packing A for every block.  The
 * layout belongs to one path: take qp_gemm_path_active() once and pass the
 * same path to all three calls.
 *   size:   floats the packed copy needs (0 when m or k is 0)
 *   parts:  the packing is cut into this many independent parts (slices of
 *           K), so that threads can share it; pack_a writes part `part`
 *   packed: the product; ap is the packed copy of the same m, k */
size_t qp_sgemm_packed_size(qp_gemm_path path, size_t m, size_t k);
size_t qp_sgemm_pack_parts(size_t k);
void qp_sgemm_pack_a(qp_gemm_path path, float *ap, size_t part, qp_trans ta, size_t m, size_t k, float alpha,
                     const float *a, size_t lda);
void qp_sgemm_packed(qp_gemm_path path, const float *ap, size_t m, size_t k, qp_trans tb, size_t n, const float *b,
                     size_t ldb, float beta, float *c, size_t ldc);

/* One path, whatever qp_gemm_set_path chose and whatever the size (the
 * plain calls run products under a few thousand multiply-adds through the
 * reference: the same bits, without the packing); for tests and benchmarks.
 * Returns -1 (and computes nothing) for AUTO or a path the CPU lacks. */
int qp_sgemm_with(qp_gemm_path path, qp_trans ta, qp_trans tb, size_t m, size_t n, size_t k, float alpha,
                  const float *a, size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc);
int qp_dgemm_with(qp_gemm_path path, qp_trans ta, qp_trans tb, size_t m, size_t n, size_t k, double alpha,
                  const double *a, size_t lda, const double *b, size_t ldb, double beta, double *c, size_t ldc);

/* The element-by-element reference, for tests (and tiny products). */
void qp_sgemm_ref(qp_trans ta, qp_trans tb, size_t m, size_t n, size_t k, float alpha, const float *a, size_t lda,
                  const float *b, size_t ldb, float beta, float *c, size_t ldc);
void qp_dgemm_ref(qp_trans ta, qp_trans tb, size_t m, size_t n, size_t k, double alpha, const double *a,
                  size_t lda, const double *b, size_t ldb, double beta, double *c, size_t ldc);

#endif
