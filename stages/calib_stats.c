#include "stages/calib_stats.h"
#include "common/alloc.h"
#include "common/error.h"
#include "model/hf_names.h"
#include "common/gemm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Rows of xᵀx per product (any value gives the same bits; this one keeps
 * the skipped lower triangle small and the products large). */
#define HESSIAN_ROW_BLOCK 96

size_t qp_site_dim(const qp_llama_hparams *hp, qp_llama_site site)
{
    switch (site) {
    case QP_SITE_O: return (size_t)hp->n_heads * (size_t)hp->head_dim;
    case QP_SITE_DOWN: return (size_t)hp->intermediate;
    default: return (size_t)hp->hidden;
    }
}

void qp_site_stats_init(qp_site_stats *st, size_t dim, int hessian)
{
    memset(st, 0, sizeof(*st));
    st->dim = dim;
    st->abs_sum = qp_xcalloc(dim, sizeof(double));
    st->sq_sum = qp_xcalloc(dim, sizeof(double));
    if (hessian) {
        st->xxt = qp_xcalloc(dim * dim, sizeof(double));
        st->scratch = qp_xmalloc(dim * dim * sizeof(float));
    }
}

void qp_site_stats_free(qp_site_stats *st)
{
    free(st->xxt);
    free(st->abs_sum);
    free(st->sq_sum);
    free(st->scratch);
    memset(st, 0, sizeof(*st));
}

void qp_calib_stats_init(qp_calib_stats *s, const qp_llama_hparams *hp, int want_hessian)
{
    memset(s, 0, sizeof(*s));
    s->n_layers = hp->n_layers;
    s->want_hessian = want_hessian;
    s->sites = qp_xcalloc((size_t)hp->n_layers * 4, sizeof(*s->sites));
    for (int l = 0; l < hp->n_layers; l++)
        for (int k = 0; k < 4; k++)
            qp_site_stats_init(&s->sites[l * 4 + k], qp_site_dim(hp, (qp_llama_site)k), want_hessian);
}

void qp_calib_stats_free(qp_calib_stats *s)
{
    if (!s->sites)
        return;
    for (int i = 0; i < s->n_layers * 4; i++)
        qp_site_stats_free(&s->sites[i]);
    free(s->sites);
    s->sites = NULL;
}

/* One window x [n, dim]: Σ x xᵀ (f32 over the window by qp_sgemm, added
 * into double), Σ|x| and Σx² per column in double, rows in order. */
void qp_calib_stats_observe(void *ud, int layer, qp_llama_site site, const float *x, size_t n, size_t dim)
{
    qp_calib_stats *s = ud;
    (void)dim;
    qp_site_stats_add(&s->sites[layer * 4 + (int)site], x, n);
}

void qp_site_filter_observe(void *ud, int layer, qp_llama_site site, const float *x, size_t n, size_t dim)
{
    qp_site_filter *f = ud;
    (void)dim;
    if (layer == f->layer && f->st[site].dim > 0)
        qp_site_stats_add(&f->st[site], x, n);
}

void qp_site_stats_add(qp_site_stats *st, const float *x, size_t n)
{
    size_t dim = st->dim;
    for (size_t t = 0; t < n; t++) {
        const float *row = x + t * dim;
        for (size_t i = 0; i < dim; i++) {
            double v = row[i];
            st->abs_sum[i] += fabs(v);
            st->sq_sum[i] += v * v;
        }
    }
    if (st->xxt) {
        /* scratch[dim, dim] (upper) = xᵀ x, by row blocks: block [i0, i0+ib)
         * computes columns i0.. only, so about half the products of the
         * full square (the lower part of each diagonal block is unused) */
        for (size_t i0 = 0; i0 < dim; i0 += HESSIAN_ROW_BLOCK) {
            size_t ib = dim - i0 < HESSIAN_ROW_BLOCK ? dim - i0 : HESSIAN_ROW_BLOCK;
            qp_sgemm(QP_TRANS, QP_NOTRANS, ib, dim - i0, n, 1.0f, x + i0, dim, x + i0, dim, 0.0f,
                     st->scratch + i0 * dim + i0, dim);
        }
        for (size_t i = 0; i < dim; i++)
            for (size_t j = i; j < dim; j++)
                st->xxt[i * dim + j] += st->scratch[i * dim + j];
    }
    st->n += n;
    st->calls++;
}

double *qp_site_hessian(const qp_site_stats *st)
{
    size_t d = st->dim;
    if (!st->xxt)
        return NULL;
    double *h = qp_xmalloc(d * d * sizeof(double));
    double f = st->n ? 2.0 / (double)st->n : 0.0;
    for (size_t i = 0; i < d; i++)
        for (size_t j = i; j < d; j++)
            h[i * d + j] = h[j * d + i] = f * st->xxt[i * d + j];
    return h;
}

int qp_site_hessian_f32(const qp_site_stats *st, float *h)
{
    size_t d = st->dim;
    if (!st->xxt)
        return -1;
    double f = st->n ? 2.0 / (double)st->n : 0.0;
    for (size_t i = 0; i < d; i++)
        for (size_t j = i; j < d; j++)
            h[i * d + j] = h[j * d + i] = (float)(f * st->xxt[i * d + j]);
    return 0;
}

void qp_site_stats_hessian(qp_site_stats *st, int on)
{
    free(st->xxt);
    free(st->scratch);
    st->xxt = NULL;
    st->scratch = NULL;
    if (on) {
        st->xxt = qp_xcalloc(st->dim * st->dim, sizeof(double));
        st->scratch = qp_xmalloc(st->dim * st->dim * sizeof(float));
    }
}

const char *qp_site_name(qp_llama_site site)
{
    static const char *names[] = {"attn_in", "attn_out", "mlp_in", "mlp_down"};
    return names[site];
}

size_t qp_site_weights(qp_llama_site site, const char *out[3])
{
    switch (site) {
    case QP_SITE_QKV:
        out[0] = QP_HF_Q_PROJ, out[1] = QP_HF_K_PROJ, out[2] = QP_HF_V_PROJ;
        return 3;
    case QP_SITE_O: out[0] = QP_HF_O_PROJ; return 1;
    case QP_SITE_GATE_UP: out[0] = QP_HF_GATE_PROJ, out[1] = QP_HF_UP_PROJ; return 2;
    case QP_SITE_DOWN: out[0] = QP_HF_DOWN_PROJ; return 1;
    }
    return 0;
}

size_t qp_site_gguf_weights(qp_llama_site site, const char *out[3])
{
    switch (site) {
    case QP_SITE_QKV: out[0] = "attn_q", out[1] = "attn_k", out[2] = "attn_v"; return 3;
    case QP_SITE_O: out[0] = "attn_output"; return 1;
    case QP_SITE_GATE_UP: out[0] = "ffn_gate", out[1] = "ffn_up"; return 2;
    case QP_SITE_DOWN: out[0] = "ffn_down"; return 1;
    }
    return 0;
}
