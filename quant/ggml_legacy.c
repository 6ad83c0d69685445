/* ggml's 32-weight block formats Q4_0, Q4_1, Q5_0, Q5_1, Q8_0: the reference
 * row quantizers (quantize_row_*_ref) and the importance-weighted paths of
 * quantize_q4_0 … quantize_q5_1 (llama.cpp c392e50).  Q8_0 has no weighted
 * path: ggml ignores the imatrix for it.
 *
 * Shapes: x[n] f32 with n % 32 == 0  ->  n/32 blocks. */
#include "quant/ggml_impl.h"

#include <float.h>
#include <math.h>

static void block_minmax(const float *xb, float *min_out, float *max_out)
{
    float min = FLT_MAX, max = -FLT_MAX;
    for (int j = 0; j < QP_QK; j++) {
        min = xb[j] < min ? xb[j] : min;
        max = xb[j] > max ? xb[j] : max;
    }
    *min_out = min;
    *max_out = max;
}

/* Q4_0: d = m/−8 for the first element m of largest magnitude, so m maps to
 * level 0 exactly; q = min(15, trunc(x/d + 8.5)). */
void qp_q4_0_ref(const float *x, void *vy, int64_t n)
{
    qp_block_q4_0 *y = vy;
    const int64_t nb = n / QP_QK;
    for (int64_t i = 0; i < nb; i++) {
        const float *xb = x + i * QP_QK;
        float amax;
        const float max = qp_first_absmax(xb, QP_QK, &amax);
        const float d = max / -8;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = QP_FP16(d);
        for (int j = 0; j < QP_QK / 2; ++j) {
            const float x0 = xb[j] * id;
            const float x1 = xb[QP_QK / 2 + j] * id;
            const uint8_t xi0 = (uint8_t)QP_MIN(15, (int8_t)qp_trunc_i32(x0 + 8.5f));
            const uint8_t xi1 = (uint8_t)QP_MIN(15, (int8_t)qp_trunc_i32(x1 + 8.5f));
            y[i].qs[j] = (uint8_t)(xi0 | (xi1 << 4));
        }
    }
}

/* Q4_1: d = (max − min)/15, m = min; q = min(15, trunc((x − min)/d + 0.5)). */
void qp_q4_1_ref(const float *x, void *vy, int64_t n)
{
    qp_block_q4_1 *y = vy;
    const int64_t nb = n / QP_QK;
    for (int64_t i = 0; i < nb; i++) {
        const float *xb = x + i * QP_QK;
        float min, max;
        block_minmax(xb, &min, &max);
        const float d = (max - min) / ((1 << 4) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = QP_FP16(d);
        y[i].m = QP_FP16(min);
        for (int j = 0; j < QP_QK / 2; ++j) {
            const float x0 = (xb[j] - min) * id;
            const float x1 = (xb[QP_QK / 2 + j] - min) * id;
            const uint8_t xi0 = (uint8_t)QP_MIN(15, (int8_t)qp_trunc_i32(x0 + 0.5f));
            const uint8_t xi1 = (uint8_t)QP_MIN(15, (int8_t)qp_trunc_i32(x1 + 0.5f));
            y[i].qs[j] = (uint8_t)(xi0 | (xi1 << 4));
        }
    }
}

/* Packs 32 five-bit levels: low nibbles in qs (x[j] low, x[j+16] high), the
 * fifth bits in the u32 qh (bit j for x[j]). */
static void pack_q5(const uint8_t *L, uint8_t qs[16], uint8_t qh_out[4])
{
    uint32_t qh = 0;
    for (int j = 0; j < QP_QK / 2; ++j) {
        const uint8_t xi0 = L[j], xi1 = L[j + QP_QK / 2];
        qs[j] = (uint8_t)((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
        qh |= ((xi0 & 0x10u) >> 4) << (j + 0);
        qh |= ((xi1 & 0x10u) >> 4) << (j + QP_QK / 2);
    }
    memcpy(qh_out, &qh, 4);
}

void qp_q5_0_ref(const float *x, void *vy, int64_t n)
{
    qp_block_q5_0 *y = vy;
    const int64_t nb = n / QP_QK;
    uint8_t L[QP_QK];
    for (int64_t i = 0; i < nb; i++) {
        const float *xb = x + i * QP_QK;
        float amax;
        const float max = qp_first_absmax(xb, QP_QK, &amax);
        const float d = max / -16;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = QP_FP16(d);
        for (int j = 0; j < QP_QK; ++j)
            L[j] = (uint8_t)QP_MIN(31, (int8_t)qp_trunc_i32(xb[j] * id + 16.5f));
        pack_q5(L, y[i].qs, y[i].qh);
    }
}

void qp_q5_1_ref(const float *x, void *vy, int64_t n)
{
    qp_block_q5_1 *y = vy;
    const int64_t nb = n / QP_QK;
    uint8_t L[QP_QK];
    for (int64_t i = 0; i < nb; i++) {
        const float *xb = x + i * QP_QK;
        float min, max;
        block_minmax(xb, &min, &max);
        const float d = (max - min) / ((1 << 5) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = QP_FP16(d);
        y[i].m = QP_FP16(min);
        /* no clamp to 31 here, as in ggml: (x − min)/d <= 31 up to rounding */
        for (int j = 0; j < QP_QK; ++j)
            L[j] = (uint8_t)qp_trunc_i32((xb[j] - min) * id + 0.5f);
        pack_q5(L, y[i].qs, y[i].qh);
    }
}

/* Q8_0: d = amax/127, q = roundf(x/d) (half away from zero). */
void qp_q8_0_ref(const float *x, void *vy, int64_t n)
{
    qp_block_q8_0 *y = vy;
    const int64_t nb = n / QP_QK;
    for (int64_t i = 0; i < nb; i++) {
        const float *xb = x + i * QP_QK;
        float amax = 0.0f;
        for (int j = 0; j < QP_QK; j++)
            amax = QP_MAX(amax, fabsf(xb[j]));
        const float d = amax / ((1 << 7) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = QP_FP16(d);
        for (int j = 0; j < QP_QK; ++j)
            y[i].qs[j] = (int8_t)qp_trunc_i32(roundf(xb[j] * id));
    }
}

/* ---- importance-weighted paths: weight_j = qw_j·sqrt(σ² + x_j²), σ² the
 * row's mean square (over the whole row, not the block). ---- */

static float row_sigma2(const float *x, int64_t n)
{
    float sum_x2 = 0;
    for (int64_t j = 0; j < n; ++j)
        sum_x2 += x[j] * x[j];
    return sum_x2 / n;
}

static void block_weights(float *weight, const float *xb, const float *qw, float sigma2)
{
    for (int j = 0; j < QP_QK; ++j)
        weight[j] = qw[j] * sqrtf(sigma2 + xb[j] * xb[j]);
}

void qp_q4_0_imat(const float *x, void *vy, int64_t n, const float *qw)
{
    qp_block_q4_0 *y = vy;
    float weight[QP_QK];
    int8_t L[QP_QK];
    const float sigma2 = row_sigma2(x, n);
    const int64_t nb = n / QP_QK;
    for (int64_t ib = 0; ib < nb; ++ib) {
        const float *xb = x + QP_QK * ib;
        block_weights(weight, xb, qw + QP_QK * ib, sigma2);
        float d = qp_make_qx_quants(QP_QK, 8, xb, L, weight);
        y[ib].d = QP_FP16(d);
        for (int j = 0; j < 16; ++j)
            y[ib].qs[j] = (uint8_t)(L[j] | (L[j + 16] << 4));
    }
}

void qp_q4_1_imat(const float *x, void *vy, int64_t n, const float *qw)
{
    qp_block_q4_1 *y = vy;
    float weight[QP_QK];
    uint8_t L[QP_QK], Laux[QP_QK];
    const float sigma2 = row_sigma2(x, n);
    const int64_t nb = n / QP_QK;
    for (int64_t ib = 0; ib < nb; ++ib) {
        const float *xb = x + QP_QK * ib;
        block_weights(weight, xb, qw + QP_QK * ib, sigma2);
        float min;
        float d = qp_make_qkx3_quants(QP_QK, 15, xb, weight, L, &min, Laux, -0.9f, 0.05f, 36, false);
        y[ib].d = QP_FP16(d);
        y[ib].m = QP_FP16(-min);
        for (int j = 0; j < 16; ++j)
            y[ib].qs[j] = (uint8_t)(L[j] | (L[j + 16] << 4));
    }
}

void qp_q5_0_imat(const float *x, void *vy, int64_t n, const float *qw)
{
    qp_block_q5_0 *y = vy;
    float weight[QP_QK];
    int8_t L[QP_QK];
    const float sigma2 = row_sigma2(x, n);
    const int64_t nb = n / QP_QK;
    for (int64_t ib = 0; ib < nb; ++ib) {
        const float *xb = x + QP_QK * ib;
        block_weights(weight, xb, qw + QP_QK * ib, sigma2);
        float d = qp_make_qx_quants(QP_QK, 16, xb, L, weight);
        y[ib].d = QP_FP16(d);
        pack_q5((const uint8_t *)L, y[ib].qs, y[ib].qh);
    }
}

void qp_q5_1_imat(const float *x, void *vy, int64_t n, const float *qw)
{
    qp_block_q5_1 *y = vy;
    float weight[QP_QK];
    uint8_t L[QP_QK], Laux[QP_QK];
    const float sigma2 = row_sigma2(x, n);
    const int64_t nb = n / QP_QK;
    for (int64_t ib = 0; ib < nb; ++ib) {
        const float *xb = x + QP_QK * ib;
        block_weights(weight, xb, qw + QP_QK * ib, sigma2);
        float min;
        float d = qp_make_qkx3_quants(QP_QK, 31, xb, weight, L, &min, Laux, -0.9f, 0.05f, 36, false);
        y[ib].d = QP_FP16(d);
        y[ib].m = QP_FP16(-min);
        pack_q5(L, y[ib].qs, y[ib].qh);
    }
}
