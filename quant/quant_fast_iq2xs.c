/* Fast IQ2_XXS and IQ2_XS, byte-identical to qp_iq2_xxs_row / qp_iq2_xs_row
 * (ggml_iq2xs.c): the reference's block code with the neighbour search —
 * where their time goes: nearly every group of 8 levels is off the grid —
 * in AVX2.  Without AVX2 this is the reference.
 *
 * Shapes: x[n] f32, n % 256 == 0 -> n/256 blocks of 66 / 74 bytes; qw[n]. */
#include "quant/ggml_iq2xs_impl.h"

#include <float.h>

#if defined(__AVX2__)
#include <immintrin.h>

/* qp_iq2_best_neighbour with 8 list entries per vector: each lane
 * accumulates its entry's d2 over i = 0..7 with the reference's operations
 * ((w·diff)·diff added to 0, then in order), so the d2 are bit-identical.
 * The reference keeps the first entry strictly below the best so far,
 * starting from FLT_MAX: that is the first entry equal to the smallest d2
 * below FLT_MAX (min_ps(d2, m) keeps m where d2 is NaN, as the reference's
 * comparison does; padding lanes are FLT_MAX), and none when there is no
 * such entry (then the reference's fallback, the first listed). */
static int best_neighbour_avx2(const qp_iq2_tables *t, int u, const float *xval, const float *w, float scale,
                               int8_t *L)
{
    const uint16_t *nb = t->neighbours - t->kmap[u] - 1;
    const int n = nb[0], npad = (n + 7) & ~7;
    const float *c = t->coords + t->coord_off[u];
    __m256 d2v[512 / 8];
    __m256 vx[8], vw[8];
    for (int i = 0; i < 8; ++i) {
        vx[i] = _mm256_set1_ps(xval[i]);
        vw[i] = _mm256_set1_ps(w[i]);
    }
    const __m256 vs = _mm256_set1_ps(scale), big = _mm256_set1_ps(FLT_MAX);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256 vmin = big;
    for (int j0 = 0, k = 0; j0 < npad; j0 += 8, k++) {
        __m256 d2 = _mm256_setzero_ps();
        for (int i = 0; i < 8; ++i) {
            const __m256 diff = _mm256_sub_ps(_mm256_mul_ps(vs, _mm256_loadu_ps(c + i * npad + j0)), vx[i]);
            d2 = _mm256_add_ps(d2, _mm256_mul_ps(_mm256_mul_ps(vw[i], diff), diff));
        }
        const __m256i valid = _mm256_cmpgt_epi32(_mm256_set1_epi32(n - j0), lane);
        d2 = _mm256_blendv_ps(big, d2, _mm256_castsi256_ps(valid));
        d2v[k] = d2;
        vmin = _mm256_min_ps(d2, vmin);
    }
    __m128 h = _mm_min_ps(_mm256_extractf128_ps(vmin, 1), _mm256_castps256_ps128(vmin));
    h = _mm_min_ps(_mm_movehl_ps(h, h), h);
    h = _mm_min_ss(_mm_shuffle_ps(h, h, 1), h);
    const float m = _mm_cvtss_f32(h);
    int grid_index = nb[1];
    if (m < FLT_MAX) {
        const __m256 vm = _mm256_set1_ps(m);
        for (int k = 0;; k++) {
            const int mask = _mm256_movemask_ps(_mm256_cmp_ps(d2v[k], vm, _CMP_EQ_OQ));
            if (mask) {
                grid_index = nb[1 + 8 * k + __builtin_ctz((unsigned)mask)];
                break;
            }
        }
    }
    for (int i = 0; i < 8; ++i)
        L[i] = (int8_t)((t->pos[grid_index][i] - 1) / 2);
    return grid_index;
}
#define NEAREST best_neighbour_avx2
#else
#define NEAREST qp_iq2_best_neighbour
#endif

void qp_iq2_xxs_fast(const float *x, void *y, int64_t n, const float *qw)
{
    qp_iq2_xxs_row_search(x, y, n, qw, NEAREST);
}

void qp_iq2_xs_fast(const float *x, void *y, int64_t n, const float *qw)
{
    qp_iq2_xs_row_search(x, y, n, qw, NEAREST);
}
