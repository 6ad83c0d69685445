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

__attribute__((target("avx2"))) static void transpose8_avx2(const float *src, size_t ls, float *dst, size_t ld)
{
    __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + ls), r2 = _mm256_loadu_ps(src + 2 * ls),
           r3 = _mm256_loadu_ps(src + 3 * ls), r4 = _mm256_loadu_ps(src + 4 * ls), r5 = _mm256_loadu_ps(src + 5 * ls),
           r6 = _mm256_loadu_ps(src + 6 * ls), r7 = _mm256_loadu_ps(src + 7 * ls);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
           t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
           t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE),
           u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE),
           u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
           u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(dst, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(dst + ld, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(dst + 2 * ld, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(dst + 3 * ld, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(dst + 4 * ld, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(dst + 5 * ld, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(dst + 6 * ld, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(dst + 7 * ld, _mm256_permute2f128_ps(u3, u7, 0x31));
}

const qp_gemm_t8_fn qp_gemm_transpose8_avx2 = transpose8_avx2;
const qp_gemm_kernel_s qp_gemm_avx2_s = {6, 16, s_avx2_6x16};
const qp_gemm_kernel_d qp_gemm_avx2_d = {6, 8, d_avx2_6x8};
const qp_gemm_kernel_s qp_gemm_avx512_s = {8, 32, s_avx512_8x32};
const qp_gemm_kernel_d qp_gemm_avx512_d = {12, 16, d_avx512_12x16};

#else

const qp_gemm_t8_fn qp_gemm_transpose8_avx2 = NULL;
const qp_gemm_kernel_s qp_gemm_avx2_s = {0, 0, NULL};
const qp_gemm_kernel_d qp_gemm_avx2_d = {0, 0, NULL};
const qp_gemm_kernel_s qp_gemm_avx512_s = {0, 0, NULL};
const qp_gemm_kernel_d qp_gemm_avx512_d = {0, 0, NULL};

#endif
