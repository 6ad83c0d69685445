/* ggml's k-quants Q2_K … Q6_K: 256-weight super-blocks whose sub-block
 * scales (and mins) are themselves quantized.  Reference row quantizers
 * (quantize_row_*_K_ref) and the importance-weighted quantize_*_K paths of
 * llama.cpp c392e50.
 *
 * Shapes: x[n] f32 with n % 256 == 0  ->  n/256 super-blocks. */
#include "quant/ggml_impl.h"

#include <math.h>

/* ---------------- shared packing ---------------- */

/* 2-bit levels L[256] -> qs[64]: byte l of each 128-half holds L[l], L[l+32],
 * L[l+64], L[l+96] in bits 0-1, 2-3, 4-5, 6-7. */
static void pack_2bit(const uint8_t *L, uint8_t *qs)
{
    for (int j = 0; j < QP_QK_K; j += 128)
        for (int l = 0; l < 32; ++l)
            qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}

/* Six-bit scale ls and min lm of sub-block j (of 8) into the 12-byte K4/K5
 * scales field: j < 4 plain, j >= 4 split into low nibbles and top 2 bits. */
static void put_scale_min_k4(uint8_t *scales, int j, uint8_t ls, uint8_t lm)
{
    if (j < 4) {
        scales[j] = ls;
        scales[j + 4] = lm;
    } else {
        scales[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
        scales[j - 4] |= (uint8_t)((ls >> 4) << 6);
        scales[j - 0] |= (uint8_t)((lm >> 4) << 6);
    }
}

/* Q3_K's 16 six-bit scales (already offset by 32) into 12 bytes. */
static void put_scales_q3(uint8_t scales[12], int j, int l)
{
    if (j < 8)
        scales[j] = (uint8_t)(l & 0xF);
    else
        scales[j - 8] |= (uint8_t)((l & 0xF) << 4);
    l >>= 4;
    scales[j % 4 + 8] |= (uint8_t)(l << (2 * (j / 4)));
}

/* ---------------- Q2_K ---------------- */

static void q2_K_finish(const float *x, qp_block_q2_K *y, uint8_t *L, float dm, float mm)
{
    for (int j = 0; j < QP_QK_K / 16; ++j) {
        const float d = dm * (y->scales[j] & 0xF);
        if (!d)
            continue;
        const float m = mm * (y->scales[j] >> 4);
        for (int ii = 0; ii < 16; ++ii) {
            int l = qp_nearest_int((x[16 * j + ii] + m) / d);
            L[16 * j + ii] = (uint8_t)QP_MAX(0, QP_MIN(3, l));
        }
    }
    pack_2bit(L, y->qs);
}

void qp_q2_K_ref(const float *x, void *vy, int64_t n)
{
    qp_block_q2_K *y = vy;
    const int64_t nb = n / QP_QK_K;
    uint8_t L[QP_QK_K], Laux[16];
    float weights[16], mins[QP_QK_K / 16], scales[QP_QK_K / 16];
    const float q4scale = 15.f;
    for (int64_t i = 0; i < nb; i++, x += QP_QK_K) {
        float max_scale = 0, max_min = 0;   /* mins are subtracted: both >= 0 */
        for (int j = 0; j < QP_QK_K / 16; ++j) {
            for (int l = 0; l < 16; ++l)
                weights[l] = fabsf(x[16 * j + l]);
            scales[j] = qp_make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux,
                                            -0.5f, 0.1f, 15, true);
            if (scales[j] > max_scale)
                max_scale = scales[j];
            if (mins[j] > max_min)
                max_min = mins[j];
        }
        if (max_scale > 0) {
            float iscale = q4scale / max_scale;
            for (int j = 0; j < QP_QK_K / 16; ++j)
                y[i].scales[j] = (uint8_t)qp_nearest_int(iscale * scales[j]);
            y[i].d = QP_FP16(max_scale / q4scale);
        } else {
            for (int j = 0; j < QP_QK_K / 16; ++j)
                y[i].scales[j] = 0;
            y[i].d = QP_FP16(0.f);
        }
        if (max_min > 0) {
            float iscale = q4scale / max_min;
            for (int j = 0; j < QP_QK_K / 16; ++j) {
                int l = qp_nearest_int(iscale * mins[j]);
                y[i].scales[j] |= (uint8_t)(l << 4);
            }
            y[i].dmin = QP_FP16(max_min / q4scale);
        } else {
            y[i].dmin = QP_FP16(0.f);
        }
        q2_K_finish(x, &y[i], L, QP_FP32(y[i].d), QP_FP32(y[i].dmin));
    }
}

void qp_q2_K_imat(const float *x, void *vy, int64_t n, const float *quant_weights)
{
    qp_block_q2_K *y = vy;
    const int64_t nb = n / QP_QK_K;
    uint8_t L[QP_QK_K], Laux[16], Ls[QP_QK_K / 16], Lm[QP_QK_K / 16];
    float mins[QP_QK_K / 16], scales[QP_QK_K / 16], sw[QP_QK_K / 16], weight[16];
    for (int64_t i = 0; i < nb; i++, x += QP_QK_K) {
        memset(sw, 0, sizeof sw);
        float sumx2 = 0;
        for (int j = 0; j < QP_QK_K; ++j)
            sumx2 += x[j] * x[j];
        float sigma2 = sumx2 / QP_QK_K;
        for (int j = 0; j < QP_QK_K / 16; ++j) {
            const float *qw = quant_weights + QP_QK_K * i + 16 * j;
            for (int l = 0; l < 16; ++l)
                weight[l] = qw[l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
            for (int l = 0; l < 16; ++l)
                sw[j] += weight[l];
            scales[j] = qp_make_qkx3_quants(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], Laux,
                                            -0.9f, 0.05f, 36, false);
        }
        float dm = qp_make_qp_quants(QP_QK_K / 16, 15, scales, Ls, sw);
        float mm = qp_make_qp_quants(QP_QK_K / 16, 15, mins, Lm, sw);
        y[i].d = QP_FP16(dm);
        y[i].dmin = QP_FP16(mm);
        for (int j = 0; j < QP_QK_K / 16; ++j)
            y[i].scales[j] = (uint8_t)(Ls[j] | (Lm[j] << 4));
        q2_K_finish(x, &y[i], L, QP_FP32(y[i].d), QP_FP32(y[i].dmin));
    }
}

/* ---------------- Q3_K ---------------- */

/* Requantizes with the stored (fp16 d, 6-bit) scales, splits the high bit
 * into hmask (bit k of byte m for element 32k + m), packs the low 2 bits. */
static void q3_K_finish(const float *x, qp_block_q3_K *y, int8_t *L)
{
    for (int j = 0; j < QP_QK_K / 16; ++j) {
        int8_t sc = (int8_t)(j < 8 ? y->scales[j] & 0xF : y->scales[j - 8] >> 4);
        sc = (int8_t)((sc | (((y->scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32);
        float d = QP_FP32(y->d) * sc;
        if (!d)
            continue;
        for (int ii = 0; ii < 16; ++ii) {
            int l = qp_nearest_int(x[16 * j + ii] / d);
            l = QP_MAX(-4, QP_MIN(3, l));
            L[16 * j + ii] = (int8_t)(l + 4);
        }
    }
    memset(y->hmask, 0, QP_QK_K / 8);
    int m = 0;
    uint8_t hm = 1;
    for (int j = 0; j < QP_QK_K; ++j) {
        if (L[j] > 3) {
            y->hmask[m] |= hm;
            L[j] = (int8_t)(L[j] - 4);
        }
        if (++m == QP_QK_K / 8) {
            m = 0;
            hm = (uint8_t)(hm << 1);
        }
    }
    pack_2bit((const uint8_t *)L, y->qs);
}

void qp_q3_K_ref(const float *x, void *vy, int64_t n)
{
    qp_block_q3_K *y = vy;
    const int64_t nb = n / QP_QK_K;
    int8_t L[QP_QK_K];
    float scales[QP_QK_K / 16];
    for (int64_t i = 0; i < nb; i++, x += QP_QK_K) {
        float max_scale = 0, amax = 0;
        for (int j = 0; j < QP_QK_K / 16; ++j) {
            scales[j] = qp_make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
            float scale = fabsf(scales[j]);
            if (scale > amax) {
                amax = scale;
                max_scale = scales[j];
            }
        }
        memset(y[i].scales, 0, 12);
        if (max_scale) {
            float iscale = -32.f / max_scale;
            for (int j = 0; j < QP_QK_K / 16; ++j) {
                int8_t l = (int8_t)qp_nearest_int(iscale * scales[j]);
                l = (int8_t)(QP_MAX(-32, QP_MIN(31, l)) + 32);
                put_scales_q3(y[i].scales, j, l);
            }
            y[i].d = QP_FP16(1 / iscale);
        } else {
            y[i].d = QP_FP16(0.f);
        }
        q3_K_finish(x, &y[i], L);
    }
}

void qp_q3_K_imat(const float *x, void *vy, int64_t n, const float *quant_weights)
{
    qp_block_q3_K *y = vy;
    const int64_t nb = n / QP_QK_K;
    int8_t L[QP_QK_K], Ls[QP_QK_K / 16];
    float scales[QP_QK_K / 16], weight[16], sw[QP_QK_K / 16];
    for (int64_t i = 0; i < nb; i++, x += QP_QK_K) {
        float sumx2 = 0;
        for (int j = 0; j < QP_QK_K; ++j)
            sumx2 += x[j] * x[j];
        float sigma2 = 2 * sumx2 / QP_QK_K;
        for (int j = 0; j < QP_QK_K / 16; ++j) {
            const float *qw = quant_weights + QP_QK_K * i + 16 * j;
            for (int l = 0; l < 16; ++l)
                weight[l] = qw[l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
            float sumw = 0;
            for (int l = 0; l < 16; ++l)
                sumw += weight[l];
            sw[j] = sumw;
            scales[j] = qp_make_qx_quants(16, 4, x + 16 * j, L + 16 * j, weight);
        }
        memset(y[i].scales, 0, 12);
        float d_block = qp_make_qx_quants(QP_QK_K / 16, 32, scales, Ls, sw);
        for (int j = 0; j < QP_QK_K / 16; ++j)
            put_scales_q3(y[i].scales, j, Ls[j]);
        y[i].d = QP_FP16(d_block);
        q3_K_finish(x, &y[i], L);
    }
}

/* ---------------- Q4_K / Q5_K ---------------- */

/* Requantize every sub-block with its stored scale/min (fp16 d·6-bit). */
static void k4_requant(const float *x, const uint8_t *scales, uint16_t dh, uint16_t dminh, uint8_t *L, int nmax)
{
    for (int j = 0; j < QP_QK_K / 32; ++j) {
        uint8_t sc, m;
        qp_get_scale_min_k4(j, scales, &sc, &m);
        const float d = QP_FP32(dh) * sc;
        if (!d)
            continue;
        const float dm = QP_FP32(dminh) * m;
        for (int ii = 0; ii < 32; ++ii) {
            int l = qp_nearest_int((x[32 * j + ii] + dm) / d);
            L[32 * j + ii] = (uint8_t)QP_MAX(0, QP_MIN(nmax, l));
        }
    }
}

void qp_q4_K_pack(qp_block_q4_K *y, const uint8_t *L)
{
    uint8_t *q = y->qs;
    for (int j = 0; j < QP_QK_K; j += 64, q += 32)
        for (int l = 0; l < 32; ++l)
            q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
}

void qp_q5_K_pack(qp_block_q5_K *y, const uint8_t *L)
{
    uint8_t *qh = y->qh, *ql = y->qs;
    memset(qh, 0, QP_QK_K / 8);
    uint8_t m1 = 1, m2 = 2;
    for (int n = 0; n < QP_QK_K; n += 64, ql += 32) {
        for (int j = 0; j < 32; ++j) {
            int l1 = L[n + j];
            if (l1 > 15) {
                l1 -= 16;
                qh[j] |= m1;
            }
            int l2 = L[n + j + 32];
            if (l2 > 15) {
                l2 -= 16;
                qh[j] |= m2;
            }
            ql[j] = (uint8_t)(l1 | (l2 << 4));
        }
        m1 = (uint8_t)(m1 << 2);
        m2 = (uint8_t)(m2 << 2);
    }
}

void qp_q4_K_finish(const float *x, qp_block_q4_K *y, uint8_t *L)
{
    k4_requant(x, y->scales, y->d, y->dmin, L, 15);
    qp_q4_K_pack(y, L);
}

void qp_q5_K_finish(const float *x, qp_block_q5_K *y, uint8_t *L)
{
    k4_requant(x, y->scales, y->d, y->dmin, L, 31);
    qp_q5_K_pack(y, L);
}

/* Reference K4/K5 scale step: 6-bit scales/mins relative to the largest. */
void qp_k4_ref_scales(uint8_t *sc12, uint16_t *dh, uint16_t *dminh, const float *scales, const float *mins)
{
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < QP_QK_K / 32; ++j) {
        if (scales[j] > max_scale)
            max_scale = scales[j];
        if (mins[j] > max_min)
            max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < QP_QK_K / 32; ++j) {
        uint8_t ls = (uint8_t)qp_nearest_int(inv_scale * scales[j]);
        uint8_t lm = (uint8_t)qp_nearest_int(inv_min * mins[j]);
        ls = QP_MIN(63, ls);
        lm = QP_MIN(63, lm);
        put_scale_min_k4(sc12, j, ls, lm);
    }
    *dh = QP_FP16(max_scale / 63.f);
    *dminh = QP_FP16(max_min / 63.f);
}

/* Weights av_x + |x| with av_x the sub-block's RMS. */
static void k4_ref_search(const float *x, uint8_t *L, float *scales, float *mins, int nmax,
                          float rmin, float rdelta, int nstep)
{
    uint8_t Laux[32];
    float weights[32];
    for (int j = 0; j < QP_QK_K / 32; ++j) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; ++l)
            sum_x2 += x[32 * j + l] * x[32 * j + l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; ++l)
            weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = qp_make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux,
                                        rmin, rdelta, nstep, false);
    }
}

void qp_q4_K_ref(const float *x, void *vy, int64_t n)
{
    qp_block_q4_K *y = vy;
    const int64_t nb = n / QP_QK_K;
    uint8_t L[QP_QK_K];
    float mins[QP_QK_K / 32], scales[QP_QK_K / 32];
    for (int64_t i = 0; i < nb; i++, x += QP_QK_K) {
        k4_ref_search(x, L, scales, mins, 15, -1.f, 0.1f, 20);
        qp_k4_ref_scales(y[i].scales, &y[i].d, &y[i].dmin, scales, mins);
        qp_q4_K_finish(x, &y[i], L);
    }
}

void qp_q5_K_ref(const float *x, void *vy, int64_t n)
{
    qp_block_q5_K *y = vy;
    const int64_t nb = n / QP_QK_K;
    uint8_t L[QP_QK_K];
    float mins[QP_QK_K / 32], scales[QP_QK_K / 32];
    for (int64_t i = 0; i < nb; i++, x += QP_QK_K) {
        k4_ref_search(x, L, scales, mins, 31, -0.5f, 0.1f, 15);
        qp_k4_ref_scales(y[i].scales, &y[i].d, &y[i].dmin, scales, mins);
        qp_q5_K_finish(x, &y[i], L);
    }
}

/* Weighted K4/K5: qkx3 search per sub-block with weights
 * qw·sqrt(σ² + x²) (σ² = 2·mean square of the super-block), then the scales
 * and mins quantized by make_qp_quants weighted by each sub-block's Σweight. */
static void k4_imat(const float *x, uint8_t *sc12, uint16_t *dh, uint16_t *dminh, uint8_t *L,
                    const float *qwb, int nmax, bool clamp63)
{
    uint8_t Laux[32], Ls[QP_QK_K / 32], Lm[QP_QK_K / 32];
    float weights[32], sw[QP_QK_K / 32], mins[QP_QK_K / 32], scales[QP_QK_K / 32];
    float sum_x2 = 0;
    for (int l = 0; l < QP_QK_K; ++l)
        sum_x2 += x[l] * x[l];
    float sigma2 = 2 * sum_x2 / QP_QK_K;
    for (int j = 0; j < QP_QK_K / 32; ++j) {
        const float *qw = qwb + 32 * j;
        for (int l = 0; l < 32; ++l)
            weights[l] = qw[l] * sqrtf(sigma2 + x[32 * j + l] * x[32 * j + l]);
        float sumw = 0;
        for (int l = 0; l < 32; ++l)
            sumw += weights[l];
        sw[j] = sumw;
        scales[j] = qp_make_qkx3_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux,
                                        -0.9f, 0.05f, 36, false);
    }
    float d_block = qp_make_qp_quants(QP_QK_K / 32, 63, scales, Ls, sw);
    float m_block = qp_make_qp_quants(QP_QK_K / 32, 63, mins, Lm, sw);
    /* ggml clamps to 63 for Q5_K only; make_qp_quants already bounds the
     * levels by 63 unless a negative scale wrapped around, and then the two
     * differ: keep both behaviours. */
    for (int j = 0; j < QP_QK_K / 32; ++j)
        put_scale_min_k4(sc12, j, clamp63 ? QP_MIN(63, Ls[j]) : Ls[j], clamp63 ? QP_MIN(63, Lm[j]) : Lm[j]);
    *dh = QP_FP16(d_block);
    *dminh = QP_FP16(m_block);
}

void qp_q4_K_imat(const float *x, void *vy, int64_t n, const float *quant_weights)
{
    qp_block_q4_K *y = vy;
    const int64_t nb = n / QP_QK_K;
    uint8_t L[QP_QK_K];
    for (int64_t i = 0; i < nb; i++, x += QP_QK_K) {
        k4_imat(x, y[i].scales, &y[i].d, &y[i].dmin, L, quant_weights + QP_QK_K * i, 15, false);
        qp_q4_K_finish(x, &y[i], L);
    }
}

void qp_q5_K_imat(const float *x, void *vy, int64_t n, const float *quant_weights)
{
    qp_block_q5_K *y = vy;
    const int64_t nb = n / QP_QK_K;
    uint8_t L[QP_QK_K];
    for (int64_t i = 0; i < nb; i++, x += QP_QK_K) {
        k4_imat(x, y[i].scales, &y[i].d, &y[i].dmin, L, quant_weights + QP_QK_K * i, 31, true);
        qp_q5_K_finish(x, &y[i], L);
    }
}

/* ---------------- Q6_K ---------------- */

/* int8 scales relative to the sub-block scale of largest magnitude. */
int qp_q6_K_set_scales(qp_block_q6_K *y, const float *scales)
{
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < QP_QK_K / 16; ++ib) {
        const float abs_scale = fabsf(scales[ib]);
        if (abs_scale > max_abs_scale) {
            max_abs_scale = abs_scale;
            max_scale = scales[ib];
        }
    }
    if (max_abs_scale < QP_GROUP_MAX_EPS) {
        memset(y, 0, sizeof *y);
        y->d = QP_FP16(0.f);
        return 0;
    }
    float iscale = -128.f / max_scale;
    y->d = QP_FP16(1 / iscale);
    for (int ib = 0; ib < QP_QK_K / 16; ++ib)
        y->scales[ib] = (int8_t)QP_MIN(127, qp_nearest_int(iscale * scales[ib]));
    return 1;
}

/* 6-bit levels: low 4 bits in ql (weights l and l+64 share a byte, per
 * 128-half), high 2 bits in qh (4 weights per byte). */
void qp_q6_K_pack(qp_block_q6_K *y, const int8_t *L)
{
    uint8_t *ql = y->ql, *qh = y->qh;
    for (int j = 0; j < QP_QK_K; j += 128, ql += 64, qh += 32) {
        for (int l = 0; l < 32; ++l) {
            const uint8_t q1 = L[j + l + 0] & 0xF;
            const uint8_t q2 = L[j + l + 32] & 0xF;
            const uint8_t q3 = L[j + l + 64] & 0xF;
            const uint8_t q4 = L[j + l + 96] & 0xF;
            ql[l + 0] = (uint8_t)(q1 | (q3 << 4));
            ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
            qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                              ((L[j + l + 96] >> 4) << 6));
        }
    }
}

/* From the 16 sub-block scales (levels already in L): scales, requantize
 * with the stored ones, pack. */
void qp_q6_K_finish(const float *x, qp_block_q6_K *y, int8_t *L, const float *scales)
{
    if (!qp_q6_K_set_scales(y, scales))
        return;
    for (int j = 0; j < QP_QK_K / 16; ++j) {
        float d = QP_FP32(y->d) * y->scales[j];
        if (!d)
            continue;
        for (int ii = 0; ii < 16; ++ii) {
            int l = qp_nearest_int(x[16 * j + ii] / d);
            l = QP_MAX(-32, QP_MIN(31, l));
            L[16 * j + ii] = (int8_t)(l + 32);
        }
    }
    qp_q6_K_pack(y, L);
}

static void q6_K_rows(const float *x, void *vy, int64_t n, const float *quant_weights)
{
    qp_block_q6_K *y = vy;
    const int64_t nb = n / QP_QK_K;
    int8_t L[QP_QK_K];
    float scales[QP_QK_K / 16];
    for (int64_t i = 0; i < nb; i++, x += QP_QK_K) {
        for (int ib = 0; ib < QP_QK_K / 16; ++ib) {
            const float *qw = quant_weights ? quant_weights + QP_QK_K * i + 16 * ib : NULL;
            scales[ib] = qp_make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, qw);
        }
        qp_q6_K_finish(x, &y[i], L, scales);
    }
}

void qp_q6_K_ref(const float *x, void *vy, int64_t n)
{
    q6_K_rows(x, vy, n, NULL);
}

/* The weighted path uses the raw imatrix as the weights (no σ² term). */
void qp_q6_K_imat(const float *x, void *vy, int64_t n, const float *quant_weights)
{
    q6_K_rows(x, vy, n, quant_weights);
}
