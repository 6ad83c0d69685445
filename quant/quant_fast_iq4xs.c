/* Fast IQ4_XS, byte-identical to qp_iq4_xs_row (ggml_iq4xs.c).
 *
 * The reference spends its time in qp_iq4_block_scale: 16 passes (the start
 * scale and 15 trial scales) over each 32-weight block, each weight placed
 * on the table by a branchy binary search.  The passes are independent, so
 * AVX2 runs them side by side: lane k of two 8-lane vectors is pass k, and
 * for each weight j in order every lane does the reference's float
 * operations (al = id·x, the table neighbour, sumqx += (w·q)·x, sumq2 +=
 * (w·q)·q) — the same roundings in the same order per pass, so the sums
 * are bit-identical; the best pass is then chosen in the reference's order.
 * The final re-pick of every weight is elementwise and vectorised over j.
 *
 * best_index_int8 as a vector: for al strictly inside the table, the
 * binary search ends at ml = #{k in 1..14 : val[k] <= al}, mu = ml + 1, and
 * picks ml iff (al − val[ml]) < (val[mu] − al), both differences rounded
 * as in the reference.  The count form gives the reference's answer at
 * and beyond both ends too (0 below val[0], 15 above val[15], ±inf
 * included); only NaN (a NaN scale from all-zero imatrix weights) needs
 * its own case: the search then walks up to 15.
 *
 * Without AVX2 this is the reference.
 *
 * Shapes: x[n] f32, n % 256 == 0 -> n/256 blocks of 136 bytes; qw[n] or NULL. */
#include "quant/ggml_impl.h"

#if defined(__AVX2__)
#include <immintrin.h>

#define NSUB (QP_QK_K / QP_QK)

typedef struct {
    __m256 val[16];     /* val[k] broadcast (k = 1..14 are compared against) */
    __m256 tab_lo, tab_hi;   /* val[0..7], val[8..15] for permutes */
} iq4_table;

static void table_init(iq4_table *t)
{
    float lo[8], hi[8];
    for (int k = 0; k < 16; k++)
        t->val[k] = _mm256_set1_ps((float)qp_kvalues_iq4nl[k]);
    for (int k = 0; k < 8; k++) {
        lo[k] = (float)qp_kvalues_iq4nl[k];
        hi[k] = (float)qp_kvalues_iq4nl[8 + k];
    }
    t->tab_lo = _mm256_loadu_ps(lo);
    t->tab_hi = _mm256_loadu_ps(hi);
}

/* val[idx] for 8 lane indices 0..15 */
static inline __m256 table_at(const iq4_table *t, __m256i idx)
{
    const __m256 lo = _mm256_permutevar8x32_ps(t->tab_lo, idx);
    const __m256 hi = _mm256_permutevar8x32_ps(t->tab_hi, idx);
    const __m256i upper = _mm256_cmpgt_epi32(idx, _mm256_set1_epi32(7));
    return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(upper));
}

/* best_index_int8(16, kvalues_iq4nl, al) for 8 lanes: the index, and the
 * table value at it in *q */
static inline __m256i best_index8(const iq4_table *t, __m256 al, __m256 *q)
{
    __m256i ml = _mm256_setzero_si256();
    for (int k = 1; k < 15; k++)   /* mask lanes are −1 */
        ml = _mm256_sub_epi32(ml, _mm256_castps_si256(_mm256_cmp_ps(t->val[k], al, _CMP_LE_OQ)));
    const __m256i mu = _mm256_add_epi32(ml, _mm256_set1_epi32(1));
    const __m256 vl = table_at(t, ml), vu = table_at(t, mu);
    const __m256 take_lo = _mm256_cmp_ps(_mm256_sub_ps(al, vl), _mm256_sub_ps(vu, al), _CMP_LT_OQ);
    const __m256 nan = _mm256_cmp_ps(al, al, _CMP_UNORD_Q);
    *q = _mm256_blendv_ps(_mm256_blendv_ps(vu, vl, take_lo), t->val[15], nan);
    __m256i idx = _mm256_add_epi32(ml, _mm256_andnot_si256(_mm256_castps_si256(take_lo), _mm256_set1_epi32(1)));
    return _mm256_blendv_epi8(idx, _mm256_set1_epi32(15), _mm256_castps_si256(nan));
}

/* qp_iq4_block_scale with the 16 passes in lanes: lane 0 the start scale,
 * lanes 1..15 itry = −7..7. */
static float block_scale_avx2(const iq4_table *t, const float *xb, const float *weight, float max)
{
    const int8_t *values = qp_kvalues_iq4nl;
    float ids[16];
    ids[0] = 1 / (-max / values[0]);
    for (int itry = -7; itry <= 7; ++itry)
        ids[8 + itry] = (itry + values[0]) / max;
    const __m256 id0 = _mm256_loadu_ps(ids), id1 = _mm256_loadu_ps(ids + 8);
    __m256 sqx0 = _mm256_setzero_ps(), sq20 = _mm256_setzero_ps();
    __m256 sqx1 = _mm256_setzero_ps(), sq21 = _mm256_setzero_ps();
    for (int j = 0; j < QP_QK; ++j) {
        const __m256 x = _mm256_set1_ps(xb[j]), w = _mm256_set1_ps(weight[j]);
        __m256 q0, q1;
        (void)best_index8(t, _mm256_mul_ps(id0, x), &q0);
        (void)best_index8(t, _mm256_mul_ps(id1, x), &q1);
        const __m256 wq0 = _mm256_mul_ps(w, q0), wq1 = _mm256_mul_ps(w, q1);
        sqx0 = _mm256_add_ps(sqx0, _mm256_mul_ps(wq0, x));
        sq20 = _mm256_add_ps(sq20, _mm256_mul_ps(wq0, q0));
        sqx1 = _mm256_add_ps(sqx1, _mm256_mul_ps(wq1, x));
        sq21 = _mm256_add_ps(sq21, _mm256_mul_ps(wq1, q1));
    }
    float sumqx[16], sumq2[16];
    _mm256_storeu_ps(sumqx, sqx0);
    _mm256_storeu_ps(sumqx + 8, sqx1);
    _mm256_storeu_ps(sumq2, sq20);
    _mm256_storeu_ps(sumq2 + 8, sq21);
    float d = sumqx[0] / sumq2[0];
    float best = d * sumqx[0];
    for (int k = 1; k < 16; ++k) {
        if (sumq2[k] > 0 && sumqx[k] * sumqx[k] > best * sumq2[k]) {
            d = sumqx[k] / sumq2[k];
            best = d * sumqx[k];
        }
    }
    return d;
}

static void block_avx2(const iq4_table *t, const float *x, qp_block_iq4_xs *y, const float *qw)
{
    float weight[QP_QK], scales[NSUB];
    uint8_t L[QP_QK_K];

    float sigma2 = 0;   /* sequential, as the reference sums it */
    for (int j = 0; j < QP_QK_K; ++j)
        sigma2 += x[j] * x[j];
    sigma2 *= 2.f / QP_QK_K;
    const __m256 s2 = _mm256_set1_ps(sigma2);

    float max_scale = 0, amax_scale = 0;
    for (int ib = 0; ib < NSUB; ++ib) {
        const float *xb = x + QP_QK * ib;
        for (int j = 0; j < QP_QK; j += 8) {
            const __m256 v = _mm256_loadu_ps(xb + j), v2 = _mm256_mul_ps(v, v);
            const __m256 w = qw ? _mm256_mul_ps(_mm256_loadu_ps(qw + QP_QK * ib + j),
                                                _mm256_sqrt_ps(_mm256_add_ps(s2, v2)))
                                : v2;
            _mm256_storeu_ps(weight + j, w);
        }
        float amax;
        const float max = qp_first_absmax(xb, QP_QK, &amax);
        if (amax < QP_GROUP_MAX_EPS) {
            scales[ib] = 0;
            continue;
        }
        const float d = block_scale_avx2(t, xb, weight, max);
        scales[ib] = d;
        if (fabsf(d) > amax_scale) {
            amax_scale = fabsf(d);
            max_scale = d;
        }
    }

    const float d = -max_scale / 32;
    y->d = QP_FP16(d);
    y->scales_h = 0;
    const float id = d ? 1 / d : 0.f;
    for (int ib = 0; ib < NSUB; ++ib) {
        int l = qp_nearest_int(id * scales[ib]);
        l = QP_MAX(-32, QP_MIN(31, l));
        const float dl = d * l;
        const __m256 idl = _mm256_set1_ps(dl ? 1 / dl : 0.f);
        for (int j = 0; j < QP_QK; j += 8) {
            __m256 q;
            const __m256i idx = best_index8(t, _mm256_mul_ps(idl, _mm256_loadu_ps(x + QP_QK * ib + j)), &q);
            int32_t li[8];
            _mm256_storeu_si256((__m256i *)li, idx);
            for (int k = 0; k < 8; k++)
                L[QP_QK * ib + j + k] = (uint8_t)li[k];
        }
        l += 32;
        const uint8_t l_l = (uint8_t)(l & 0xf), l_h = (uint8_t)(l >> 4);
        if (ib % 2 == 0)
            y->scales_l[ib / 2] = l_l;
        else
            y->scales_l[ib / 2] |= (uint8_t)(l_l << 4);
        y->scales_h |= (uint16_t)(l_h << 2 * ib);
    }
    for (int i = 0; i < NSUB; ++i)
        for (int j = 0; j < 16; ++j)
            y->qs[16 * i + j] = (uint8_t)(L[32 * i + j] | (L[32 * i + 16 + j] << 4));
}

void qp_iq4_xs_fast(const float *x, void *vy, int64_t n, const float *qw)
{
    iq4_table t;
    table_init(&t);
    qp_block_iq4_xs *y = vy;
    const int64_t nb = n / QP_QK_K;
    for (int64_t ib = 0; ib < nb; ++ib)
        block_avx2(&t, x + QP_QK_K * ib, &y[ib], qw ? qw + QP_QK_K * ib : NULL);
}

#else

void qp_iq4_xs_fast(const float *x, void *y, int64_t n, const float *qw)
{
    qp_iq4_xs_row(x, y, n, qw);
}

#endif
