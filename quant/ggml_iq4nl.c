/* IQ4_NL: 32-weight blocks of 4-bit indices into a fixed non-linear table
 * (qp_kvalues_iq4nl), one fp16 scale.  This is what llama-quantize writes
 * (quantize_iq4_nl → quantize_row_iq4_nl_impl(32, 32, …, ntry = 7) as of
 * llama.cpp c392e50), with or without an imatrix; it matters to qpipe as the
 * fallback for Q2_K/Q3_K rows whose length is not a multiple of 256.
 *
 * Shapes: x[n] f32, n % 32 == 0  ->  n/32 blocks of 18 bytes. */
#include "quant/ggml_impl.h"

#include <math.h>

#define IQ4_NTRY 7

float qp_iq4_block_scale(const float *x, const float *weight, float max)
{
    const int8_t *values = qp_kvalues_iq4nl;
    /* start from the scale that maps max onto the table's end −127 (the
     * indices this pass picks are not kept: every caller re-picks them) */
    float d = -max / values[0];
    float id = 1 / d;
    float sumqx = 0, sumq2 = 0;
    for (int j = 0; j < QP_QK; ++j) {
        float al = id * x[j];
        int l = qp_best_index_int8(16, values, al);
        float q = values[l];
        float w = weight[j];
        sumqx += w * q * x[j];
        sumq2 += w * q * q;
    }
    d = sumqx / sumq2;   /* unguarded, as in ggml: all-zero weights give NaN */
    float best = d * sumqx;
    for (int itry = -IQ4_NTRY; itry <= IQ4_NTRY; ++itry) {
        id = (itry + values[0]) / max;
        sumqx = sumq2 = 0;
        for (int j = 0; j < QP_QK; ++j) {
            float al = id * x[j];
            int l = qp_best_index_int8(16, values, al);
            float q = values[l];
            float w = weight[j];
            sumqx += w * q * x[j];
            sumq2 += w * q * q;
        }
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    return d;
}

static void iq4_nl_block(const float *x, qp_block_iq4_nl *y, const float *qw, uint8_t *L)
{
    const int8_t *values = qp_kvalues_iq4nl;
    float weight[QP_QK];

    float sigma2 = 0;
    for (int j = 0; j < QP_QK; ++j)
        sigma2 += x[j] * x[j];
    sigma2 *= 2.f / QP_QK;

    memset(y->qs, 0, sizeof y->qs);
    y->d = QP_FP16(0.f);

    if (qw) {
        for (int j = 0; j < QP_QK; ++j)
            weight[j] = qw[j] * sqrtf(sigma2 + x[j] * x[j]);
    } else {
        for (int j = 0; j < QP_QK; ++j)
            weight[j] = x[j] * x[j];
    }
    float amax;
    const float max = qp_first_absmax(x, QP_QK, &amax);
    const float scale = amax >= QP_GROUP_MAX_EPS ? qp_iq4_block_scale(x, weight, max) : 0;
    /* one block per super-block: the scale is stored as is and every weight
     * re-picked with it (ntry > 0) */
    y->d = QP_FP16(scale);
    float id = scale ? 1 / scale : 0;
    for (int j = 0; j < QP_QK; ++j)
        L[j] = (uint8_t)qp_best_index_int8(16, values, id * x[j]);
    for (int j = 0; j < 16; ++j)
        y->qs[j] = (uint8_t)(L[j] | (L[16 + j] << 4));
}

void qp_iq4_nl_row(const float *x, void *vy, int64_t n, const float *qw)
{
    qp_block_iq4_nl *y = vy;
    uint8_t L[QP_QK];
    const int64_t nb = n / QP_QK;
    for (int64_t ib = 0; ib < nb; ++ib)
        iq4_nl_block(x + QP_QK * ib, &y[ib], qw ? qw + QP_QK * ib : NULL, L);
}
