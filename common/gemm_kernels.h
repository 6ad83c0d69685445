/* Internal to common/gemm*.c: the register-tile micro-kernels.
 *
 * A micro-kernel computes one tile C[0:MR, 0:NR] (row stride ldc) from
 *   a: a packed panel of A, kc groups of MR values (A(0..MR-1, k) for k = 0…)
 *   b: a packed panel of B, kc groups of NR values (B(k, 0..NR-1))
 * as, for every element, acc = (load ? C[i][j] : 0) followed by
 * acc = fma(a[k·MR + i], b[k·NR + j], acc) for k = 0 … kc−1, then stores acc:
 * exactly the chain the reference computes (common/gemm.h), with each
 * element in its own vector lane. */
#ifndef QP_COMMON_GEMM_KERNELS_H
#define QP_COMMON_GEMM_KERNELS_H

#include <stddef.h>

typedef void (*qp_gemm_kern_s)(size_t kc, const float *a, const float *b, float *c, size_t ldc, int load);
typedef void (*qp_gemm_kern_d)(size_t kc, const double *a, const double *b, double *c, size_t ldc, int load);

typedef struct {
    int mr, nr;
    qp_gemm_kern_s kern;
} qp_gemm_kernel_s;

typedef struct {
    int mr, nr;
    qp_gemm_kern_d kern;
} qp_gemm_kernel_d;

/* The largest MR and NR of any kernel (edge tiles go through a buffer of
 * this size). */
#define QP_GEMM_MR_MAX 12
#define QP_GEMM_NR_MAX 32

/* dst[c·ld + r] = src[r·ls + c] for an 8 × 8 block of f32: packing is
 * mostly transposing, and an AVX2 transpose moves the data several times
 * faster than element copies (no arithmetic: the bits cannot change).
 * NULL when this build has none; the CPU must have AVX2 to call it. */
typedef void (*qp_gemm_t8_fn)(const float *src, size_t ls, float *dst, size_t ld);
extern const qp_gemm_t8_fn qp_gemm_transpose8_avx2;

/* NULL fields when this build has no such kernels (not x86-64 / not GCC
 * or clang); whether the CPU can run them is the caller's question. */
extern const qp_gemm_kernel_s qp_gemm_avx2_s, qp_gemm_avx512_s;
extern const qp_gemm_kernel_d qp_gemm_avx2_d, qp_gemm_avx512_d;

#endif
