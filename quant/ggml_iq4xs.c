/* IQ4_XS: IQ4_NL's non-linear 4-bit table over 256-weight super-blocks,
 * with one 6-bit scale per 32 weights relative to an fp16 super-scale
 * (4.25 bits per weight instead of IQ4_NL's 4.5).  These are the bytes of
 * llama-quantize (llama.cpp c392e50: quantize_iq4_xs ->
 * quantize_row_iq4_nl_impl(QK_K, 32, …, ntry = 7)), with or without an
 * imatrix; quantize_row_iq4_xs_ref is the same call without weights.
 *
 * Shapes: x[n] f32, n % 256 == 0  ->  n/256 blocks of 136 bytes;
 * qw[n] (the imatrix, one per column) or NULL. */
#include "quant/ggml_impl.h"

#include <math.h>

#define IQ4_XS_NSUB (QP_QK_K / QP_QK)   /* 8 sub-blocks of 32 */

static void iq4_xs_block(const float *x, qp_block_iq4_xs *y, const float *qw)
{
    const int8_t *values = qp_kvalues_iq4nl;
    float weight[QP_QK], scales[IQ4_XS_NSUB];
    uint8_t L[QP_QK_K];

    /* the imatrix weight is qw·sqrt(σ² + x²), σ² over the whole super-block */
    float sigma2 = 0;
    for (int j = 0; j < QP_QK_K; ++j)
        sigma2 += x[j] * x[j];
    sigma2 *= 2.f / QP_QK_K;

    float max_scale = 0, amax_scale = 0;
    for (int ib = 0; ib < IQ4_XS_NSUB; ++ib) {
        const float *xb = x + QP_QK * ib;
        if (qw) {
            const float *q = qw + QP_QK * ib;
            for (int j = 0; j < QP_QK; ++j)
                weight[j] = q[j] * sqrtf(sigma2 + xb[j] * xb[j]);
        } else {
            for (int j = 0; j < QP_QK; ++j)
                weight[j] = xb[j] * xb[j];
        }
        float amax;
        const float max = qp_first_absmax(xb, QP_QK, &amax);
        if (amax < QP_GROUP_MAX_EPS) {
            scales[ib] = 0;
            continue;
        }
        const float d = qp_iq4_block_scale(xb, weight, max);
        scales[ib] = d;
        if (fabsf(d) > amax_scale) {   /* the first scale of largest magnitude, with its sign */
            amax_scale = fabsf(d);
            max_scale = d;
        }
    }

    /* 6-bit scales relative to d = −max_scale/32 (an all-zero super-block
     * gives d = −0, stored as such), then every weight re-picked with its
     * sub-block's rounded scale */
    const float d = -max_scale / 32;
    y->d = QP_FP16(d);
    y->scales_h = 0;
    const float id = d ? 1 / d : 0.f;
    for (int ib = 0; ib < IQ4_XS_NSUB; ++ib) {
        int l = qp_nearest_int(id * scales[ib]);
        l = QP_MAX(-32, QP_MIN(31, l));
        const float dl = d * l;
        const float idl = dl ? 1 / dl : 0.f;
        const float *xb = x + QP_QK * ib;
        for (int j = 0; j < QP_QK; ++j)
            L[QP_QK * ib + j] = (uint8_t)qp_best_index_int8(16, values, idl * xb[j]);
        l += 32;
        const uint8_t l_l = (uint8_t)(l & 0xf), l_h = (uint8_t)(l >> 4);
        if (ib % 2 == 0)
            y->scales_l[ib / 2] = l_l;
        else
            y->scales_l[ib / 2] |= (uint8_t)(l_l << 4);
        y->scales_h |= (uint16_t)(l_h << 2 * ib);
    }
    for (int i = 0; i < IQ4_XS_NSUB; ++i)
        for (int j = 0; j < 16; ++j)
            y->qs[16 * i + j] = (uint8_t)(L[32 * i + j] | (L[32 * i + 16 + j] << 4));
}

void qp_iq4_xs_row(const float *x, void *vy, int64_t n, const float *qw)
{
    qp_block_iq4_xs *y = vy;
    const int64_t nb = n / QP_QK_K;
    for (int64_t ib = 0; ib < nb; ++ib)
        iq4_xs_block(x + QP_QK_K * ib, &y[ib], qw ? qw + QP_QK_K * ib : NULL);
}
