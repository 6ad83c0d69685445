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
 * ((w·diff)·diff added to 0, then in order), so the d2 are bit-identical;
 * then the reference's scan over them (first strictly smaller than the best
 * so far, from FLT_MAX), which also keeps its answer for NaN distances. */
static int best_neighbour_avx2(const qp_iq2_tables *t, int u, const float *xval, const float *w, float scale,
                               int8_t *L)
{
    const uint16_t *nb = t->neighbours - t->kmap[u] - 1;
    const int n = nb[0], npad = (n + 7) & ~7;
    const float *c = t->coords + t->coord_off[u];
    float d2s[512];
    const __m256 vs = _mm256_set1_ps(scale);
    for (int j0 = 0; j0 < npad; j0 += 8) {
        __m256 d2 = _mm256_setzero_ps();
        for (int i = 0; i < 8; ++i) {
            const __m256 diff = _mm256_sub_ps(_mm256_mul_ps(vs, _mm256_loadu_ps(c + i * npad + j0)),
                                              _mm256_set1_ps(xval[i]));
            d2 = _mm256_add_ps(d2, _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(w[i]), diff), diff));
        }
        _mm256_storeu_ps(d2s + j0, d2);
    }
    float best_d2 = FLT_MAX;
    int jbest = -1;
    for (int j = 0; j < n; ++j) {
        if (d2s[j] < best_d2) {
            best_d2 = d2s[j];
            jbest = j;
        }
    }
    const int grid_index = nb[1 + (jbest < 0 ? 0 : jbest)];
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
