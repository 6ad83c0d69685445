/* Fast IQ1_S and IQ1_M: byte-identical to qp_iq1_s_row / qp_iq1_m_row
 * (ggml_iq1s.c).  IQ1_S is the reference (its split search is already
 * prefix sums), threaded by qp_quantize.  IQ1_M's time is its split search
 * (for each of the 153 splits, four pairs of sums over 16 weights): here
 * each weight's eight terms are computed once per sub-block (the same
 * products as the reference's), and for each i1 the running sums over
 * j < i2 are carried from one i2 to the next — every sum is still
 * accumulated in sorted order from zero, term by term, so each is
 * bit-identical to the reference's; only the suffix j >= i2 is added per
 * split.  The four sums of a split are one 4-lane vector (lane k: pair k). */
#include "quant/ggml_iq1s_impl.h"

#include <float.h>

#define DELTA 0.125f

typedef float v4 __attribute__((vector_size(16)));

static void split_fast(const float *xb, const float *weight, const int *idx, float *scale_io, int *bi1, int *bi2,
                       int *bk)
{
    const float x_p[3] = { -1 + DELTA, DELTA, 1 + DELTA };
    const float x_m[3] = { -1 - DELTA, -DELTA, 1 - DELTA };
    /* tx[g][j] / tq[g][j]: lane k's term of the sorted weight j at level g */
    v4 tx[3][16], tq[3][16];
    for (int j = 0; j < 16; ++j) {
        const int i = idx[j];
        for (int g = 0; g < 3; ++g) {
            const float wp = weight[i] * x_p[g], wm = weight[i] * x_m[g];
            const float ap = wp * xb[i], am = wm * xb[i];
            const float bp = wp * x_p[g], bm = wm * x_m[g];
            if (i < 8) {
                tx[g][j] = (v4){ ap, ap, am, am };
                tq[g][j] = (v4){ bp, bp, bm, bm };
            } else {
                tx[g][j] = (v4){ ap, am, ap, am };
                tq[g][j] = (v4){ bp, bm, bp, bm };
            }
        }
    }
    float best_score = -FLT_MIN, scale = *scale_io;
    int besti1 = -1, besti2 = -1, best_k = -1;
    v4 px = { 0, 0, 0, 0 }, pq = { 0, 0, 0, 0 };   /* sums over j < i1 at level 0 */
    for (int i1 = 0; i1 <= 16; ++i1) {
        v4 qx = px, qq = pq;   /* then j in [i1, i2) at level 1 */
        for (int i2 = i1; i2 <= 16; ++i2) {
            v4 sx = qx, sq = qq;
            for (int j = i2; j < 16; ++j) {
                sx += tx[2][j];
                sq += tq[2][j];
            }
            for (int k = 0; k < 4; ++k) {
                if (sq[k] > 0 && sx[k] * sx[k] > best_score * sq[k]) {
                    scale = sx[k] / sq[k];
                    best_score = scale * sx[k];
                    besti1 = i1;
                    besti2 = i2;
                    best_k = k;
                }
            }
            if (i2 < 16) {
                qx += tx[1][i2];
                qq += tq[1][i2];
            }
        }
        if (i1 < 16) {
            px += tx[0][i1];
            pq += tq[0][i1];
        }
    }
    *scale_io = scale;
    *bi1 = besti1;
    *bi2 = besti2;
    *bk = best_k;
}

void qp_iq1_s_fast(const float *x, void *y, int64_t n, const float *qw)
{
    qp_iq1_s_row(x, y, n, qw);
}

void qp_iq1_m_fast(const float *x, void *y, int64_t n, const float *qw)
{
    qp_iq1_m_row_search(x, y, n, qw, split_fast);
}
