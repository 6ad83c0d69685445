/* End-to-end scale training (train/e2e.h). */
#include "train/e2e.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/tensor.h"
#include "model/llama_pool.h"
#include "train/batch_order.h"
#include "train/head.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    qp_linear *lin;
    qp_linear_view v;
    size_t gs;
    float *s0, *gamma, *gamma0, *m1, *m2, *dgamma;
} e2e_lin;

typedef struct {
    const qp_e2e_model *m;
    const qp_e2e_params *p;
    qp_pool *pool;
    qp_tblock_f32 *tb;
    e2e_lin *lins;                 /* [n_layers · QP_TL_COUNT], lin NULL when fp */
    float *what[QP_TL_COUNT], *dwhat[QP_TL_COUNT];
    size_t B, N, D, V;
    float **xs;                    /* [n_layers + 1][N·D] */
    float *dx, *dx2, *ytmp;
    int32_t *target;               /* [N]: the next token, −1 on each window's last row */
} e2e;

/* ---- scales ---- */

static float lin_scale(const e2e_lin *l, size_t k)
{
    return qp_f16_to_f32(qp_linear_scale_f16(l->s0[k] * l->gamma[k]));
}

static void lin_dequant(const e2e_lin *l, float *w)
{
    const qp_linear_view *v = &l->v;
    for (int64_t r = 0; r < v->rows; r++)
        for (int64_t g = 0; g < v->n_groups; g++) {
            float s = lin_scale(l, (size_t)(r * v->n_groups + g));
            int z = v->zeros[r * v->n_groups + g];
            for (int64_t c = g * (int64_t)l->gs; c < (g + 1) * (int64_t)l->gs; c++)
                w[r * v->cols + c] = qp_linear_value(v->codes[r * v->cols + c], s, z);
        }
}

static void lin_grad(e2e_lin *l, const float *dw)
{
    const qp_linear_view *v = &l->v;
    for (int64_t r = 0; r < v->rows; r++)
        for (int64_t g = 0; g < v->n_groups; g++) {
            int z = v->zeros[r * v->n_groups + g];
            double acc = 0;
            for (int64_t c = g * (int64_t)l->gs; c < (g + 1) * (int64_t)l->gs; c++)
                acc += (double)(dw[r * v->cols + c] * (float)(v->codes[r * v->cols + c] - z));
            size_t k = (size_t)(r * v->n_groups + g);
            l->dgamma[k] = (float)(acc * (double)l->s0[k]);
        }
}

/* b1t, b2t: β1^t and β2^t as running products (no libm pow in what reaches the bytes) */
static void lin_adam(e2e_lin *l, float lr, float b1t, float b2t)
{
    const float b1 = 0.9f, b2 = 0.999f;
    const float c1 = 1.0f - b1t, c2 = 1.0f - b2t;
    size_t n = (size_t)(l->v.rows * l->v.n_groups);
    for (size_t k = 0; k < n; k++) {
        float g = l->dgamma[k];
        l->m1[k] = b1 * l->m1[k] + (1.0f - b1) * g;
        l->m2[k] = b2 * l->m2[k] + (1.0f - b2) * g * g;
        float mh = l->m1[k] / c1, vh = l->m2[k] / c2;
        l->gamma[k] -= lr * mh / (sqrtf(vh) + 1e-8f);
        l->gamma[k] = l->gamma[k] < 0.25f ? 0.25f : l->gamma[k] > 4.0f ? 4.0f : l->gamma[k];
    }
}

/* ---- model pieces ---- */

static void layer_weights(e2e *e, int l, qp_tblock_weights_f32 *w)
{
    *w = e->m->layers[l].fp;
    for (int i = 0; i < QP_TL_COUNT; i++) {
        e2e_lin *li = &e->lins[(size_t)l * QP_TL_COUNT + (size_t)i];
        if (li->lin) {
            lin_dequant(li, e->what[i]);
            w->w[i] = e->what[i];
        }
    }
}

/* embedding and layers for windows idx[0..n-1]: xs[n_layers] and the targets */
static void forward_layers(e2e *e, const size_t *idx, size_t n)
{
    const qp_e2e_model *m = e->m;
    const size_t T = m->T, D = e->D;
    for (size_t b = 0; b < n; b++)
        for (size_t t = 0; t < T; t++) {
            const int32_t *w = m->tokens + idx[b] * T;
            e->target[b * T + t] = t + 1 < T ? w[t + 1] : -1;
            memcpy(e->xs[0] + (b * T + t) * D, m->embed + (size_t)w[t] * D, D * sizeof(float));
        }
    for (int l = 0; l < m->n_layers; l++) {
        qp_tblock_weights_f32 w;
        layer_weights(e, l, &w);
        qp_tblock_f32_forward(e->tb, &w, e->xs[l], n, e->xs[l + 1]);
    }
}

static int full_loss(e2e *e, double *loss)
{
    const qp_e2e_model *m = e->m;
    size_t idx[4096];
    double total = 0;
    for (size_t s0 = 0; s0 < m->S; s0 += e->B) {
        size_t n = m->S - s0 < e->B ? m->S - s0 : e->B;
        for (size_t b = 0; b < n; b++)
            idx[b] = s0 + b;
        forward_layers(e, idx, n);
        total += qp_thead_f32_loss(e->pool, e->xs[m->n_layers], n * m->T, e->D, m->final_norm, m->shape.rms_eps,
                                   m->lm_head, e->V, e->target, 0.0f, NULL);
    }
    *loss = total / (double)(m->S * (m->T - 1));
    return 0;
}

/* one step on windows idx: forward, head and layer backward, dγ of every quantized linear */
static double step_grad(e2e *e, const size_t *idx, size_t n)
{
    const qp_e2e_model *m = e->m;
    const double count = (double)(n * (m->T - 1));
    forward_layers(e, idx, n);
    double nll = qp_thead_f32_loss(e->pool, e->xs[m->n_layers], n * m->T, e->D, m->final_norm, m->shape.rms_eps,
                                   m->lm_head, e->V, e->target, (float)(1.0 / count), e->dx);
    for (int l = m->n_layers - 1; l >= 0; l--) {
        qp_tblock_weights_f32 w;
        layer_weights(e, l, &w);
        qp_tblock_f32_forward(e->tb, &w, e->xs[l], n, e->ytmp);
        qp_tblock_grads_f32 g;
        memset(&g, 0, sizeof(g));
        for (int i = 0; i < QP_TL_COUNT; i++)
            g.w[i] = e->lins[(size_t)l * QP_TL_COUNT + (size_t)i].lin ? e->dwhat[i] : NULL;
        qp_tblock_f32_backward(e->tb, &w, e->dx, l > 0 ? e->dx2 : NULL, &g);
        for (int i = 0; i < QP_TL_COUNT; i++)
            if (g.w[i])
                lin_grad(&e->lins[(size_t)l * QP_TL_COUNT + (size_t)i], e->dwhat[i]);
        float *tmp = e->dx;
        e->dx = e->dx2;
        e->dx2 = tmp;
    }
    return nll / count;
}

static void set_scales(e2e *e)
{
    for (size_t k = 0; k < (size_t)e->m->n_layers * QP_TL_COUNT; k++) {
        e2e_lin *l = &e->lins[k];
        if (!l->lin)
            continue;
        for (int64_t j = 0; j < l->v.rows * l->v.n_groups; j++)
            l->v.scales[j] = qp_linear_scale_f16(l->s0[j] * l->gamma[j]);
    }
}

int qp_e2e_run(qp_e2e_stats *st, const qp_e2e_model *m, const qp_e2e_params *p)
{
    e2e e;
    memset(&e, 0, sizeof(e));
    memset(st, 0, sizeof(*st));
    e.m = m;
    e.p = p;
    e.B = (size_t)(p->batch < 1 ? 1 : p->batch);
    e.B = e.B > m->S ? m->S : e.B > 4096 ? 4096 : e.B;
    e.D = (size_t)m->shape.hidden;
    e.V = (size_t)m->vocab;
    e.N = e.B * m->T;
    qp_batch_order order = {0};
    const size_t nl = (size_t)m->n_layers * QP_TL_COUNT;
    int rc = qp_pool_new(&e.pool, p->n_threads < 1 ? 1 : p->n_threads);
    if (rc == 0)
        rc = qp_tblock_f32_new(&e.tb, &m->shape, e.B, m->T, m->cos_t, m->sin_t, p->n_threads < 1 ? 1 : p->n_threads);
    if (rc)
        goto done;
    int any = 0;
    for (size_t k = 0; k < nl; k++)
        any |= m->layers[k / QP_TL_COUNT].lin[k % QP_TL_COUNT] != NULL;
    if (!any) {
        st->kept_init = 1;   /* no scale to train */
        goto done;
    }
    e.lins = qp_xcalloc(nl, sizeof(*e.lins));
    for (size_t k = 0; k < nl; k++) {
        e2e_lin *l = &e.lins[k];
        l->lin = m->layers[k / QP_TL_COUNT].lin[k % QP_TL_COUNT];
        if (!l->lin)
            continue;
        qp_linear_view_of(l->lin, &l->v);
        l->gs = (size_t)(l->v.cols / l->v.n_groups);
        size_t ng = (size_t)(l->v.rows * l->v.n_groups);
        l->s0 = qp_xmalloc(ng * sizeof(float));
        l->gamma = qp_xmalloc(ng * sizeof(float));
        l->gamma0 = qp_xmalloc(ng * sizeof(float));
        l->m1 = qp_xcalloc(ng, sizeof(float));
        l->m2 = qp_xcalloc(ng, sizeof(float));
        l->dgamma = qp_xcalloc(ng, sizeof(float));
        for (size_t j = 0; j < ng; j++) {
            l->s0[j] = qp_f16_to_f32(l->v.scales[j]);
            l->gamma[j] = l->gamma0[j] = 1.0f;
        }
    }
    for (int i = 0; i < QP_TL_COUNT; i++) {
        size_t r, c;
        qp_tblock_linear_dims(&m->shape, i, &r, &c);
        e.what[i] = qp_xmalloc(r * c * sizeof(float));
        e.dwhat[i] = qp_xmalloc(r * c * sizeof(float));
    }
    e.xs = qp_xcalloc((size_t)m->n_layers + 1, sizeof(float *));
    for (int l = 0; l <= m->n_layers; l++)
        e.xs[l] = qp_xmalloc(e.N * e.D * sizeof(float));
    e.dx = qp_xmalloc(e.N * e.D * sizeof(float));
    e.dx2 = qp_xmalloc(e.N * e.D * sizeof(float));
    e.ytmp = qp_xmalloc(e.N * e.D * sizeof(float));
    e.target = qp_xmalloc(e.N * sizeof(int32_t));
    if ((rc = full_loss(&e, &st->loss_init)) != 0)
        goto done;
    qp_batch_order_init(&order, m->S, p->seed);
    size_t idx[4096];
    float b1t = 1.0f, b2t = 1.0f;
    for (int t = 0; t < p->steps; t++) {
        qp_batch_order_next(&order, idx, e.B);
        double loss = step_grad(&e, idx, e.B);
        const float lr = (float)(p->lr * (1.0 - (double)t / (double)p->steps));
        b1t *= 0.9f;
        b2t *= 0.999f;
        for (size_t k = 0; k < nl; k++)
            if (e.lins[k].lin)
                lin_adam(&e.lins[k], lr, b1t, b2t);
        if (m->progress)
            m->progress(m->progress_ud, t + 1, p->steps, loss);
    }
    if ((rc = full_loss(&e, &st->loss_final)) != 0)
        goto done;
    if (!(st->loss_final < st->loss_init)) {
        st->kept_init = 1;
        st->loss_final = st->loss_init;
    } else
        set_scales(&e);
done:
    for (size_t k = 0; e.lins && k < nl; k++) {
        e2e_lin *l = &e.lins[k];
        free(l->s0);
        free(l->gamma);
        free(l->gamma0);
        free(l->m1);
        free(l->m2);
        free(l->dgamma);
    }
    free(e.lins);
    for (int i = 0; i < QP_TL_COUNT; i++) {
        free(e.what[i]);
        free(e.dwhat[i]);
    }
    for (int l = 0; e.xs && l <= m->n_layers; l++)
        free(e.xs[l]);
    free(e.xs);
    free(e.dx);
    free(e.dx2);
    free(e.ytmp);
    free(e.target);
    qp_batch_order_free(&order);
    qp_tblock_f32_free(e.tb);
    qp_pool_free(e.pool);
    return rc;
}
