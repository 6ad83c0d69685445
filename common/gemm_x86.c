/* AVX2+FMA and AVX-512F micro-kernels (common/gemm_kernels.h).
 *
 * Each is compiled for its instruction set with a target attribute, so both
 * exist whatever -march the rest is built with; which one runs is decided
 * at run time (common/gemm.c).  Shapes (accumulator registers in brackets):
 *   f32 AVX2    6 x 16  (12 ymm)      f32 AVX-512   8 x 32  (16 zmm)
 *   f64 AVX2    6 x  8  (12 ymm)      f64 AVX-512  12 x 16  (24 zmm)
 * (f32 AVX-512 is 8 rows high rather than 12: the 64-row products of GPTQ
 * chunks and attention blocks then have no edge panel, and it measured
 * faster at every shape of bench/bench_gemm.c.)
 * Per k: NR/lanes vector loads of b, MR broadcasts of a, MR·NR/lanes FMAs,
 * each into its own accumulator: lane j of row i's accumulator is the one
 * chain of C[i][j]. */
#include "common/gemm_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#if defined(__clang__)
#define UNROLL _Pragma("unroll")
#else
#define UNROLL _Pragma("GCC unroll 16")
#endif

/* One kernel body for every (type, ISA): VEC the register type, LANES its
 * width, MR × (NV·LANES) the tile. */
#define DEFINE_KERNEL(NAME, TARGET, T, VEC, LANES, MR, NV, LOADU, STOREU, ZERO, SET1, FMADD)               \
    __attribute__((target(TARGET))) static void NAME(size_t kc, const T *a, const T *b, T *c, size_t ldc,   \
                                                     int load)                                              \
    {                                                                                                       \
        VEC acc[MR][NV];                                                                                    \
        UNROLL for (int i = 0; i < MR; i++)                                                                 \
            UNROLL for (int v = 0; v < NV; v++)                                                             \
                acc[i][v] = load ? LOADU(c + (size_t)i * ldc + v * LANES) : ZERO();                        \
        for (size_t k = 0; k < kc; k++) {                                                                   \
            VEC bv[NV];                                                                                     \
            UNROLL for (int v = 0; v < NV; v++)                                                             \
                bv[v] = LOADU(b + v * LANES);                                                               \
            UNROLL for (int i = 0; i < MR; i++) {                                                           \
                VEC ai = SET1(a[i]);                                                                        \
                UNROLL for (int v = 0; v < NV; v++)                                                         \
                    acc[i][v] = FMADD(ai, bv[v], acc[i][v]);                                                \
            }                                                                                               \
            a += MR;                                                                                        \
            b += NV * LANES;                                                                                \
        }                                                                                                   \
        UNROLL for (int i = 0; i < MR; i++)                                                                 \
            UNROLL for (int v = 0; v < NV; v++)                                                             \
                STOREU(c + (size_t)i * ldc + v * LANES, acc[i][v]);                                        \
    }

DEFINE_KERNEL(s_avx2_6x16, "avx2,fma", float, __m256, 8, 6, 2, _mm256_loadu_ps, _mm256_storeu_ps,
              _mm256_setzero_ps, _mm256_set1_ps, _mm256_fmadd_ps)
DEFINE_KERNEL(d_avx2_6x8, "avx2,fma", double, __m256d, 4, 6, 2, _mm256_loadu_pd, _mm256_storeu_pd,
              _mm256_setzero_pd, _mm256_set1_pd, _mm256_fmadd_pd)
DEFINE_KERNEL(s_avx512_8x32, "avx512f", float, __m512, 16, 8, 2, _mm512_loadu_ps, _mm512_storeu_ps,
              _mm512_setzero_ps, _mm512_set1_ps, _mm512_fmadd_ps)
DEFINE_KERNEL(d_avx512_12x16, "avx512f", double, __m512d, 8, 12, 2, _mm512_loadu_pd, _mm512_storeu_pd,
              _mm512_setzero_pd, _mm512_set1_pd, _mm512_fmadd_pd)

const qp_gemm_kernel_s qp_gemm_avx2_s = {6, 16, s_avx2_6x16};
const qp_gemm_kernel_d qp_gemm_avx2_d = {6, 8, d_avx2_6x8};
const qp_gemm_kernel_s qp_gemm_avx512_s = {8, 32, s_avx512_8x32};
const qp_gemm_kernel_d qp_gemm_avx512_d = {12, 16, d_avx512_12x16};

#else

const qp_gemm_kernel_s qp_gemm_avx2_s = {0, 0, NULL};
const qp_gemm_kernel_d qp_gemm_avx2_d = {0, 0, NULL};
const qp_gemm_kernel_s qp_gemm_avx512_s = {0, 0, NULL};
const qp_gemm_kernel_d qp_gemm_avx512_d = {0, 0, NULL};

#endif
