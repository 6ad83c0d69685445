/* Fast Q4_K / Q5_K / Q6_K reference quantizers, byte-identical to
 * ggml_kquants.c.  The costly part of those is a scale search run
 * independently on every sub-block (make_qkx2_quants on the 8 sub-blocks of
 * 32 for Q4_K/Q5_K, make_qx_quants on the 16 sub-blocks of 16 for Q6_K), so
 * the AVX2 kernels run 8 sub-blocks side by side, one per lane: lane j does
 * exactly the scalar search of sub-block j — same operations, same
 * sequential order over the sub-block's elements — and the scalar branches
 * become per-lane blends.  Vectorising ACROSS problems instead of along one
 * keeps every accumulation order, hence the bytes.
 *
 * Shapes: x[n] f32, n % 256 == 0 -> n/256 super-blocks. */
#include "quant/ggml_impl.h"

#include <math.h>

#if defined(__AVX2__)
#include <immintrin.h>

/* ggml's nearest_int on 8 lanes (the same float add, the same bit trick). */
static inline __m256i nearest8(__m256 f)
{
    __m256 v = _mm256_add_ps(f, _mm256_set1_ps(12582912.f));
    __m256i i = _mm256_and_si256(_mm256_castps_si256(v), _mm256_set1_epi32(0x007fffff));
    return _mm256_sub_epi32(i, _mm256_set1_epi32(0x00400000));
}

static inline __m256i clamp8(__m256i l, int lo, int hi)
{
    return _mm256_max_epi32(_mm256_set1_epi32(lo), _mm256_min_epi32(_mm256_set1_epi32(hi), l));
}

static inline __m256 abs8(__m256 v)
{
    return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
}

/* xt[i] = (x[0·stride + i], …, x[7·stride + i]) for i < n: element i of the
 * 8 sub-blocks in the 8 lanes. */
static inline void transpose_in(__m256 *xt, const float *x, int stride, int n)
{
    const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(stride));
    for (int i = 0; i < n; i++)
        xt[i] = _mm256_i32gather_ps(x + i, idx, 4);
}

/* Lane-wise levels back to L[j·stride + i]. */
static inline void transpose_out(uint8_t *L, const __m256i *lt, int stride, int n)
{
    for (int i = 0; i < n; i++) {
        int32_t v[8];
        _mm256_storeu_si256((__m256i *)(void *)v, lt[i]);
        for (int j = 0; j < 8; j++)
            L[j * stride + i] = (uint8_t)v[j];
    }
}

/* ---- Q4_K / Q5_K: weights av_x + |x|, make_qkx2_quants(32, nmax, …, use_mad = false) ---- */

static void qkx2_lanes(const float *x, int nmax, float rmin, float rdelta, int nstep, uint8_t *L, float *scales,
                       float *mins)
{
    __m256 X[32], W[32];
    __m256i Lb[32], La[32];
    transpose_in(X, x, 32, 32);

    /* weights: av_x = sqrt(Σx²/32) per sub-block */
    __m256 sum_x2 = _mm256_setzero_ps();
    for (int i = 0; i < 32; i++)
        sum_x2 = _mm256_add_ps(sum_x2, _mm256_mul_ps(X[i], X[i]));
    const __m256 av_x = _mm256_sqrt_ps(_mm256_div_ps(sum_x2, _mm256_set1_ps(32)));
    for (int i = 0; i < 32; i++)
        W[i] = _mm256_add_ps(av_x, abs8(X[i]));

    __m256 min = X[0], max = X[0];
    __m256 sum_w = W[0];
    __m256 sum_x = _mm256_mul_ps(sum_w, X[0]);
    for (int i = 1; i < 32; i++) {
        min = _mm256_min_ps(X[i], min);   /* = x < min ? x : min, as the scalar if */
        max = _mm256_max_ps(X[i], max);
        sum_w = _mm256_add_ps(sum_w, W[i]);
        sum_x = _mm256_add_ps(sum_x, _mm256_mul_ps(W[i], X[i]));
    }
    const __m256 zero = _mm256_setzero_ps();
    min = _mm256_blendv_ps(min, zero, _mm256_cmp_ps(min, zero, _CMP_GT_OQ));
    const __m256 degenerate = _mm256_cmp_ps(max, min, _CMP_EQ_OQ);
    const __m256 min0 = min;
    const __m256 fnmax = _mm256_set1_ps((float)nmax);

    __m256 iscale = _mm256_div_ps(fnmax, _mm256_sub_ps(max, min));
    __m256 scale = _mm256_div_ps(_mm256_set1_ps(1.0f), iscale);
    __m256 best_error = zero;
    for (int i = 0; i < 32; i++) {
        Lb[i] = clamp8(nearest8(_mm256_mul_ps(iscale, _mm256_sub_ps(X[i], min))), 0, nmax);
        __m256 diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(scale, _mm256_cvtepi32_ps(Lb[i])), min), X[i]);
        best_error = _mm256_add_ps(best_error, _mm256_mul_ps(W[i], _mm256_mul_ps(diff, diff)));
    }
    for (int is = 0; is <= nstep; ++is) {
        const float num = rmin + rdelta * is + nmax;
        iscale = _mm256_div_ps(_mm256_set1_ps(num), _mm256_sub_ps(max, min));
        __m256 sum_l = zero, sum_l2 = zero, sum_xl = zero;
        for (int i = 0; i < 32; i++) {
            La[i] = clamp8(nearest8(_mm256_mul_ps(iscale, _mm256_sub_ps(X[i], min))), 0, nmax);
            const __m256 l = _mm256_cvtepi32_ps(La[i]);
            const __m256 wl = _mm256_mul_ps(W[i], l);
            sum_l = _mm256_add_ps(sum_l, wl);
            sum_l2 = _mm256_add_ps(sum_l2, _mm256_mul_ps(wl, l));
            sum_xl = _mm256_add_ps(sum_xl, _mm256_mul_ps(wl, X[i]));
        }
        const __m256 D = _mm256_sub_ps(_mm256_mul_ps(sum_w, sum_l2), _mm256_mul_ps(sum_l, sum_l));
        const __m256 dpos = _mm256_cmp_ps(D, zero, _CMP_GT_OQ);
        if (!_mm256_movemask_ps(dpos))
            continue;
        __m256 this_scale = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_w, sum_xl), _mm256_mul_ps(sum_x, sum_l)), D);
        __m256 this_min = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_l2, sum_x), _mm256_mul_ps(sum_l, sum_xl)), D);
        const __m256 mpos = _mm256_cmp_ps(this_min, zero, _CMP_GT_OQ);
        this_min = _mm256_blendv_ps(this_min, zero, mpos);
        this_scale = _mm256_blendv_ps(this_scale, _mm256_div_ps(sum_xl, sum_l2), mpos);
        __m256 cur_error = zero;
        for (int i = 0; i < 32; i++) {
            __m256 diff = _mm256_sub_ps(
                _mm256_add_ps(_mm256_mul_ps(this_scale, _mm256_cvtepi32_ps(La[i])), this_min), X[i]);
            cur_error = _mm256_add_ps(cur_error, _mm256_mul_ps(W[i], _mm256_mul_ps(diff, diff)));
        }
        const __m256 better = _mm256_and_ps(dpos, _mm256_cmp_ps(cur_error, best_error, _CMP_LT_OQ));
        if (!_mm256_movemask_ps(better))
            continue;
        const __m256i bi = _mm256_castps_si256(better);
        for (int i = 0; i < 32; i++)
            Lb[i] = _mm256_blendv_epi8(Lb[i], La[i], bi);
        best_error = _mm256_blendv_ps(best_error, cur_error, better);
        scale = _mm256_blendv_ps(scale, this_scale, better);
        min = _mm256_blendv_ps(min, this_min, better);
    }
    /* max == min: all levels 0, scale 0, the_min = −min */
    const __m256i di = _mm256_castps_si256(degenerate);
    for (int i = 0; i < 32; i++)
        Lb[i] = _mm256_andnot_si256(di, Lb[i]);
    scale = _mm256_andnot_ps(degenerate, scale);
    min = _mm256_blendv_ps(min, min0, degenerate);
    _mm256_storeu_ps(scales, scale);
    _mm256_storeu_ps(mins, _mm256_xor_ps(min, _mm256_set1_ps(-0.0f)));   /* −min, sign of zero included */
    transpose_out(L, Lb, 32, 32);
}

/* Requantization with the stored scales (k4_requant of the reference, 8
 * weights at a time: elementwise, so the same values). */
static void k4_requant8(const float *x, const uint8_t *sc12, uint16_t dh, uint16_t dminh, uint8_t *L, int nmax)
{
    for (int j = 0; j < QP_QK_K / 32; ++j) {
        uint8_t sc, m;
        qp_get_scale_min_k4(j, sc12, &sc, &m);
        const float d = QP_FP32(dh) * sc;
        if (!d)
            continue;
        const float dm = QP_FP32(dminh) * m;
        const __m256 vd = _mm256_set1_ps(d), vdm = _mm256_set1_ps(dm);
        for (int k = 0; k < 4; k++) {
            const __m256 v = _mm256_loadu_ps(x + 32 * j + 8 * k);
            const __m256i l = clamp8(nearest8(_mm256_div_ps(_mm256_add_ps(v, vdm), vd)), 0, nmax);
            int32_t t[8];
            _mm256_storeu_si256((__m256i *)(void *)t, l);
            for (int e = 0; e < 8; e++)
                L[32 * j + 8 * k + e] = (uint8_t)t[e];
        }
    }
}

void qp_q4_K_fast(const float *x, void *vy, int64_t n)
{
    qp_block_q4_K *y = vy;
    uint8_t L[QP_QK_K];
    float scales[8], mins[8];
    for (int64_t i = 0; i < n / QP_QK_K; i++, x += QP_QK_K) {
        qkx2_lanes(x, 15, -1.f, 0.1f, 20, L, scales, mins);
        qp_k4_ref_scales(y[i].scales, &y[i].d, &y[i].dmin, scales, mins);
        k4_requant8(x, y[i].scales, y[i].d, y[i].dmin, L, 15);
        qp_q4_K_pack(&y[i], L);
    }
}

void qp_q5_K_fast(const float *x, void *vy, int64_t n)
{
    qp_block_q5_K *y = vy;
    uint8_t L[QP_QK_K];
    float scales[8], mins[8];
    for (int64_t i = 0; i < n / QP_QK_K; i++, x += QP_QK_K) {
        qkx2_lanes(x, 31, -0.5f, 0.1f, 15, L, scales, mins);
        qp_k4_ref_scales(y[i].scales, &y[i].d, &y[i].dmin, scales, mins);
        k4_requant8(x, y[i].scales, y[i].d, y[i].dmin, L, 31);
        qp_q5_K_pack(&y[i], L);
    }
}

/* ---- Q6_K: make_qx_quants(16, 32, x, L, weights x²) on 8 sub-blocks ---- */

static void qx32_lanes(const float *x, int8_t *L, float *scales)
{
    const int nmax = 32;
    __m256 X[16], W[16];
    __m256i Lb[16], La[16];
    transpose_in(X, x, 16, 16);
    const __m256 zero = _mm256_setzero_ps();
    __m256 amax = zero, max = zero;
    for (int i = 0; i < 16; i++) {
        const __m256 ax = abs8(X[i]);
        const __m256 gt = _mm256_cmp_ps(ax, amax, _CMP_GT_OQ);   /* first strict maximum */
        amax = _mm256_blendv_ps(amax, ax, gt);
        max = _mm256_blendv_ps(max, X[i], gt);
        W[i] = _mm256_mul_ps(X[i], X[i]);
    }
    const __m256 tiny = _mm256_cmp_ps(amax, _mm256_set1_ps(QP_GROUP_MAX_EPS), _CMP_LT_OQ);

    __m256 iscale = _mm256_div_ps(_mm256_set1_ps((float)-nmax), max);
    __m256 sumlx = zero, suml2 = zero;
    for (int i = 0; i < 16; i++) {
        __m256i l = clamp8(nearest8(_mm256_mul_ps(iscale, X[i])), -nmax, nmax - 1);
        Lb[i] = _mm256_add_epi32(l, _mm256_set1_epi32(nmax));
        const __m256 fl = _mm256_cvtepi32_ps(l);
        sumlx = _mm256_add_ps(sumlx, _mm256_mul_ps(_mm256_mul_ps(W[i], X[i]), fl));
        suml2 = _mm256_add_ps(suml2, _mm256_mul_ps(_mm256_mul_ps(W[i], fl), fl));
    }
    /* suml2 ? sumlx/suml2 : 0 */
    __m256 scale = _mm256_and_ps(_mm256_cmp_ps(suml2, zero, _CMP_NEQ_UQ), _mm256_div_ps(sumlx, suml2));
    __m256 best = _mm256_mul_ps(scale, sumlx);
    for (int is = -9; is <= 9; ++is) {
        if (is == 0)
            continue;
        const float num = nmax + 0.1f * is;
        iscale = _mm256_div_ps(_mm256_set1_ps(-num), max);
        sumlx = suml2 = zero;
        for (int i = 0; i < 16; i++) {
            __m256i l = clamp8(nearest8(_mm256_mul_ps(iscale, X[i])), -nmax, nmax - 1);
            La[i] = l;
            const __m256 fl = _mm256_cvtepi32_ps(l);
            sumlx = _mm256_add_ps(sumlx, _mm256_mul_ps(_mm256_mul_ps(W[i], X[i]), fl));
            suml2 = _mm256_add_ps(suml2, _mm256_mul_ps(_mm256_mul_ps(W[i], fl), fl));
        }
        const __m256 better = _mm256_and_ps(_mm256_cmp_ps(suml2, zero, _CMP_GT_OQ),
                                            _mm256_cmp_ps(_mm256_mul_ps(sumlx, sumlx), _mm256_mul_ps(best, suml2),
                                                          _CMP_GT_OQ));
        if (!_mm256_movemask_ps(better))
            continue;
        const __m256i bi = _mm256_castps_si256(better);
        for (int i = 0; i < 16; i++)
            Lb[i] = _mm256_blendv_epi8(Lb[i], _mm256_add_epi32(La[i], _mm256_set1_epi32(nmax)), bi);
        const __m256 s = _mm256_div_ps(sumlx, suml2);
        scale = _mm256_blendv_ps(scale, s, better);
        best = _mm256_blendv_ps(best, _mm256_mul_ps(s, sumlx), better);
    }
    /* amax < eps: levels 0, scale 0 */
    const __m256i ti = _mm256_castps_si256(tiny);
    for (int i = 0; i < 16; i++)
        Lb[i] = _mm256_andnot_si256(ti, Lb[i]);
    _mm256_storeu_ps(scales, _mm256_andnot_ps(tiny, scale));
    transpose_out((uint8_t *)L, Lb, 16, 16);
}

void qp_q6_K_fast(const float *x, void *vy, int64_t n)
{
    qp_block_q6_K *y = vy;
    int8_t L[QP_QK_K];
    float scales[16];
    for (int64_t i = 0; i < n / QP_QK_K; i++, x += QP_QK_K) {
        qx32_lanes(x, L, scales);
        qx32_lanes(x + 128, L + 128, scales + 8);
        if (!qp_q6_K_set_scales(&y[i], scales))
            continue;
        /* requantization with the stored scales, 8 weights at a time */
        const float d0 = QP_FP32(y[i].d);
        for (int j = 0; j < QP_QK_K / 16; ++j) {
            const float d = d0 * y[i].scales[j];
            if (!d)
                continue;
            const __m256 vd = _mm256_set1_ps(d);
            for (int k = 0; k < 2; k++) {
                const __m256 v = _mm256_loadu_ps(x + 16 * j + 8 * k);
                const __m256i l = _mm256_add_epi32(clamp8(nearest8(_mm256_div_ps(v, vd)), -32, 31),
                                                   _mm256_set1_epi32(32));
                int32_t t[8];
                _mm256_storeu_si256((__m256i *)(void *)t, l);
                for (int e = 0; e < 8; e++)
                    L[16 * j + 8 * k + e] = (int8_t)t[e];
            }
        }
        qp_q6_K_pack(&y[i], L);
    }
}

#else /* portable */

void qp_q4_K_fast(const float *x, void *y, int64_t n) { qp_q4_K_ref(x, y, n); }
void qp_q5_K_fast(const float *x, void *y, int64_t n) { qp_q5_K_ref(x, y, n); }
void qp_q6_K_fast(const float *x, void *y, int64_t n) { qp_q6_K_ref(x, y, n); }

#endif
