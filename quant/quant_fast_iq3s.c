/* Fast IQ3_S, byte-identical to qp_iq3_s_row (ggml_iq3s.c): the
 * reference's block code with the two searches that take its time in AVX2
 * (as quant_fast_iq3xxs.c does for IQ3_XXS).  Without AVX2 this is the
 * reference.
 *
 * Shapes: x[n] f32, n % 256 == 0 -> n/256 blocks of 110 bytes; qw[n] or NULL. */
#include "quant/ggml_iq3s_impl.h"

#include <math.h>
#include <string.h>

#if defined(__AVX2__)
#include <immintrin.h>

/* qp_iq3s_best_neighbour with 8 list entries per vector: each lane
 * accumulates its entry's d2 over i = 0..3 with the reference's operations
 * ((w·diff)·diff added to 0, then in order), so the d2 are bit-identical.
 * The reference keeps the first entry of smallest d2 (strict <; d2 >= 0 and
 * finite): the first lane equal to the minimum, padding lanes excluded. */
static int best_neighbour_avx2(int u, const float *xval, const float *w, float scale, int8_t *L)
{
    const uint16_t *nb = qp_iq3s_neighbours - qp_iq3s_kmap[u] - 1;
    const int n = nb[0], npad = (n + 7) & ~7;
    const float *c = qp_iq3s_coords + qp_iq3s_coord_off[u];
    __m256 d2v[512 / 8];
    const __m256 vs = _mm256_set1_ps(scale), inf = _mm256_set1_ps(INFINITY);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256 vmin = inf;
    for (int j0 = 0, k = 0; j0 < npad; j0 += 8, k++) {
        __m256 d2 = _mm256_setzero_ps();
        for (int i = 0; i < 4; ++i) {
            const __m256 diff = _mm256_sub_ps(_mm256_mul_ps(vs, _mm256_loadu_ps(c + i * npad + j0)),
                                              _mm256_set1_ps(xval[i]));
            d2 = _mm256_add_ps(d2, _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(w[i]), diff), diff));
        }
        const __m256i valid = _mm256_cmpgt_epi32(_mm256_set1_epi32(n - j0), lane);
        d2 = _mm256_blendv_ps(inf, d2, _mm256_castsi256_ps(valid));
        d2v[k] = d2;
        vmin = _mm256_min_ps(vmin, d2);
    }
    __m128 h = _mm_min_ps(_mm256_castps256_ps128(vmin), _mm256_extractf128_ps(vmin, 1));
    h = _mm_min_ps(h, _mm_movehl_ps(h, h));
    h = _mm_min_ss(h, _mm_movehdup_ps(h));
    const __m256 m = _mm256_set1_ps(_mm_cvtss_f32(h));
    int j = 0;
    for (int k = 0;; k++) {
        const int mask = _mm256_movemask_ps(_mm256_cmp_ps(d2v[k], m, _CMP_EQ_OQ));
        if (mask) {
            j = 8 * k + __builtin_ctz((unsigned)mask);
            break;
        }
    }
    const int grid_index = nb[1 + j];
    for (int i = 0; i < 4; ++i)
        L[i] = (int8_t)((qp_iq3s_grid_pos[grid_index][i] - 1) / 2);
    return grid_index;
}

/* qp_iq3s_trials_ref with the 19 trials side by side: levels vectorised
 * over the 32 weights (nearest_int by the same 1.5·2^23 trick), the
 * neighbour searches as above, then the two sums of every trial at once,
 * lane t = trial t (lanes 19..23 copies of trial 18), each accumulated over
 * i in the reference's order and operations; the accepted trial is then
 * chosen in the reference's order. */
static float trials_avx2(const float *xval, const float *weight, const float *waux, float max, int8_t *L,
                         bool *on_grid)
{
    enum { NT = QP_IQ3S_NTRIAL, NL = 24 };
    int8_t La[NT][32];
    int8_t Lt[32][NL];   /* transposed: Lt[i][t] */
    bool og[NT][8];
    const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f), magic = _mm256_set1_ps(12582912.f);
    const __m256i lo = _mm256_setzero_si256(), hi = _mm256_set1_epi32(QP_IQ3S_KMAXQ - 1);
    for (int t = 0; t < NT; ++t) {
        const float id = (2 * QP_IQ3S_KMAXQ - 1 + (t - 9) * 0.2f) / max;
        const float this_scale = 1 / id;
        const __m256 vid = _mm256_set1_ps(id);
        for (int j = 0; j < 32; j += 8) {
            const __m256 v = _mm256_mul_ps(half, _mm256_sub_ps(_mm256_mul_ps(vid, _mm256_loadu_ps(xval + j)), one));
            __m256i l = _mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(_mm256_add_ps(v, magic)),
                                                          _mm256_set1_epi32(0x007fffff)),
                                         _mm256_set1_epi32(0x00400000));
            l = _mm256_max_epi32(lo, _mm256_min_epi32(hi, l));
            int32_t li[8];
            _mm256_storeu_si256((__m256i *)li, l);
            for (int k = 0; k < 8; k++)
                La[t][j + k] = (int8_t)li[k];
        }
        for (int k = 0; k < 8; ++k) {
            const int u = qp_iq3s_levels_key(La[t] + 4 * k);
            og[t][k] = qp_iq3s_kmap[u] >= 0;
            if (qp_iq3s_kmap[u] < 0)
                best_neighbour_avx2(u, xval + 4 * k, waux + 4 * k, this_scale, La[t] + 4 * k);
        }
        for (int i = 0; i < 32; ++i)
            Lt[i][t] = La[t][i];
    }
    for (int i = 0; i < 32; ++i)
        for (int t = NT; t < NL; ++t)
            Lt[i][t] = Lt[i][NT - 1];
    __m256 sqx[NL / 8], sq2[NL / 8];
    for (int g = 0; g < NL / 8; g++)
        sqx[g] = sq2[g] = _mm256_setzero_ps();
    for (int i = 0; i < 32; ++i) {
        const __m256 w = _mm256_set1_ps(weight[i]), wx = _mm256_mul_ps(w, _mm256_set1_ps(xval[i]));
        for (int g = 0; g < NL / 8; g++) {
            const __m128i l8 = _mm_loadl_epi64((const __m128i *)(Lt[i] + 8 * g));
            const __m256 lf = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(l8));
            const __m256 q = _mm256_add_ps(_mm256_add_ps(lf, lf), one);   /* 2l + 1, exact */
            sqx[g] = _mm256_add_ps(sqx[g], _mm256_mul_ps(wx, q));
            sq2[g] = _mm256_add_ps(sq2[g], _mm256_mul_ps(_mm256_mul_ps(w, q), q));
        }
    }
    float sumqx[NL], sumq2[NL];
    for (int g = 0; g < NL / 8; g++) {
        _mm256_storeu_ps(sumqx + 8 * g, sqx[g]);
        _mm256_storeu_ps(sumq2 + 8 * g, sq2[g]);
    }
    float best = 0;
    float scale = max / (2 * QP_IQ3S_KMAXQ - 1);
    for (int t = 0; t < NT; ++t) {
        if (sumq2[t] > 0 && sumqx[t] * sumqx[t] > best * sumq2[t]) {
            scale = sumqx[t] / sumq2[t];
            best = scale * sumqx[t];
            memcpy(L, La[t], 32);
            memcpy(on_grid, og[t], sizeof og[t]);
        }
    }
    return scale;
}

void qp_iq3_s_fast(const float *x, void *y, int64_t n, const float *qw)
{
    static const qp_iq3s_search fast = { trials_avx2, best_neighbour_avx2 };
    qp_iq3_s_row_search(x, y, n, qw, &fast);
}

#else

void qp_iq3_s_fast(const float *x, void *y, int64_t n, const float *qw)
{
    qp_iq3_s_row(x, y, n, qw);
}

#endif
