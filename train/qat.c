/* Block-wise QAT (train/qat.h). */
#include "train/qat.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/tensor.h"
#include "train/batch_order.h"
#include "train/fakequant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int on;
    size_t rows, cols, ng;
    qp_fq_f32 fq;
    float *s0, *v, *v0, *gamma, *zf, *zf0;   /* v0: v at the init (NULL: all 0) */
    int16_t *off;
    float *what, *dwhat, *dv, *dgamma, *dzf;
} lin_state;

static void lin_free(lin_state *ls)
{
    void *p[] = {ls->s0, ls->v, ls->v0, ls->gamma, ls->zf, ls->zf0, ls->off, ls->what, ls->dwhat, ls->dv, ls->dgamma, ls->dzf};
    for (size_t i = 0; i < sizeof(p) / sizeof(p[0]); i++)
        free(p[i]);
}

static int lin_init(lin_state *ls, const qp_qat_block *blk, const qp_qat_params *p, int i)
{
    qp_tblock_linear_dims(&blk->shape, i, &ls->rows, &ls->cols);
    const size_t n = ls->rows * ls->cols;
    const float *w = blk->fp.w[i];
    qp_linear_params lp = {.bits = blk->bits[i], .group_size = p->group_size, .sym = p->sym, .mse = p->mse};
    qp_linear *q = NULL;
    int rc = qp_linear_new(&q, (int64_t)ls->rows, (int64_t)ls->cols, &lp);
    if (rc)
        return rc;
    qp_linear_view view;
    qp_linear_view_of(q, &view);
    ls->ng = (size_t)view.n_groups;
    const qp_linear *init = blk->init[i];
    if (init) {
        qp_linear_view iv;
        qp_linear_view_of(init, &iv);
        int custom = 0;
        for (int64_t c = 0; c < iv.cols && !custom; c++)
            custom = iv.g_idx[c] != (int32_t)(c / iv.group_size);
        if (iv.rows != view.rows || iv.cols != view.cols || iv.n_groups != view.n_groups || iv.bits != view.bits ||
            iv.sym != view.sym || custom) {
            qp_linear_free(q);
            return qp_error_set(QP_EUSAGE, "the initial solution has another grid (shape, bits, groups, sym or "
                                           "act-order) than the training");
        }
        qp_linear_free(q);
        q = NULL;
        view = iv;
    } else if ((rc = qp_rtn_quantize(q, w, p->n_threads)) != 0) {
        qp_linear_free(q);
        return rc;
    }
    ls->on = 1;
    ls->s0 = qp_xmalloc(ls->rows * ls->ng * sizeof(float));
    ls->gamma = qp_xmalloc(ls->rows * ls->ng * sizeof(float));
    ls->zf = qp_xmalloc(ls->rows * ls->ng * sizeof(float));
    ls->zf0 = qp_xmalloc(ls->rows * ls->ng * sizeof(float));
    ls->dgamma = qp_xmalloc(ls->rows * ls->ng * sizeof(float));
    ls->dzf = qp_xmalloc(ls->rows * ls->ng * sizeof(float));
    for (size_t k = 0; k < ls->rows * ls->ng; k++) {
        ls->s0[k] = qp_f16_to_f32(view.scales[k]);
        ls->gamma[k] = 1.0f;
        ls->zf[k] = ls->zf0[k] = (float)view.zeros[k];
    }
    ls->v = qp_xcalloc(n, sizeof(float));
    ls->what = qp_xmalloc(n * sizeof(float));
    ls->dwhat = qp_xmalloc(n * sizeof(float));
    ls->dv = qp_xmalloc(n * sizeof(float));
    if (init) {
        /* integer offsets that make v = 0 give init's codes at init's scale:
         * off = code − z − round(w/s); where the fake quantizer's own f32
         * arithmetic (w/s + off, then round half to even) still lands on
         * another integer (a tie, or the sum's rounding), v starts at the
         * distance to the code instead of 0, so init's codes come back */
        ls->off = qp_xmalloc(n * sizeof(int16_t));
        const size_t gs = ls->cols / ls->ng;
        for (size_t r = 0; r < ls->rows; r++)
            for (size_t c = 0; c < ls->cols; c++) {
                const size_t k = r * ls->cols + c, g = c / gs;
                const float s = ls->s0[r * ls->ng + g];
                const float want = (float)view.codes[k] - (float)view.zeros[r * ls->ng + g];
                double o = (double)want - rint((double)(w[k] / s));
                ls->off[k] = (int16_t)(o < -32767 ? -32767 : o > 32767 ? 32767 : o);
                float u = w[k] / s + (float)ls->off[k];
                if (rintf(u) != want) {
                    float d = want - u;
                    ls->v[k] = d < -0.5f ? -0.5f : d > 0.5f ? 0.5f : d;
                }
            }
        ls->v0 = qp_xmalloc(n * sizeof(float));
        memcpy(ls->v0, ls->v, n * sizeof(float));
    }
    qp_linear_free(q);
    ls->fq = (qp_fq_f32){.rows = ls->rows, .cols = ls->cols, .group_size = ls->cols / ls->ng,
                         .maxq = (1 << blk->bits[i]) - 1, .sym = p->sym, .w = w, .off = ls->off, .s0 = ls->s0,
                         .v = ls->v, .gamma = ls->gamma, .zf = ls->zf};
    return 0;
}

static float sgnf(float x) { return x > 0 ? 1.0f : x < 0 ? -1.0f : 0.0f; }

static float clampf(float x, float lo, float hi) { return x < lo ? lo : x > hi ? hi : x; }

static void lin_step(lin_state *ls, float lr)
{
    qp_fq_f32_backward(&ls->fq, ls->dwhat, ls->dv, ls->dgamma, ls->dzf);
    const size_t n = ls->rows * ls->cols, m = ls->rows * ls->ng;
    for (size_t k = 0; k < n; k++)
        ls->v[k] = clampf(ls->v[k] - lr * sgnf(ls->dv[k]), -0.5f, 0.5f);
    for (size_t k = 0; k < m; k++) {
        ls->gamma[k] = clampf(ls->gamma[k] - lr * sgnf(ls->dgamma[k]), 0.5f, 1.5f);
        if (!ls->fq.sym)
            ls->zf[k] = clampf(ls->zf[k] - lr * sgnf(ls->dzf[k]), 0.0f, (float)ls->fq.maxq);
    }
}

typedef struct {
    const qp_qat_block *blk;
    qp_tblock_f32 *tb;
    lin_state ls[QP_TL_COUNT];
    qp_tblock_weights_f32 wq;   /* the block as trained: Ŵ where on */
    size_t B, TD;               /* windows per batch, T·D */
    float *xb, *yb, *dy, *targets;
} trainer;

static void refresh_weights(trainer *tr)
{
    for (int i = 0; i < QP_TL_COUNT; i++)
        if (tr->ls[i].on)
            qp_fq_f32_forward(&tr->ls[i].fq, tr->ls[i].what);
}

/* Σ (y − target)² over windows idx[0..n-1], with x read from the input */
static int batch_sq_error(trainer *tr, const size_t *idx, size_t n, double *sum, int want_grad)
{
    for (size_t b = 0; b < n; b++) {
        int rc = tr->blk->input(tr->blk->input_ud, idx[b], tr->xb + b * tr->TD);
        if (rc)
            return rc;
    }
    qp_tblock_f32_forward(tr->tb, &tr->wq, tr->xb, n, tr->yb);
    double acc = 0;
    const float scale = 2.0f / (float)(n * tr->TD);
    for (size_t b = 0; b < n; b++) {
        const float *t = tr->targets + idx[b] * tr->TD, *y = tr->yb + b * tr->TD;
        float *d = tr->dy + b * tr->TD;
        for (size_t e = 0; e < tr->TD; e++) {
            float diff = y[e] - t[e];
            acc += (double)diff * (double)diff;
            if (want_grad)
                d[e] = scale * diff;
        }
    }
    *sum = acc;
    return 0;
}

/* mean squared error over every window, in batches of B in window order */
static int full_loss(trainer *tr, double *loss)
{
    const size_t S = tr->blk->S;
    size_t idx[4096];
    double total = 0;
    for (size_t s0 = 0; s0 < S; s0 += tr->B) {
        size_t n = S - s0 < tr->B ? S - s0 : tr->B;
        for (size_t b = 0; b < n; b++)
            idx[b] = s0 + b;
        double part = 0;
        int rc = batch_sq_error(tr, idx, n, &part, 0);
        if (rc)
            return rc;
        total += part;
    }
    *loss = total / (double)(S * tr->TD);
    return 0;
}

static int make_targets(trainer *tr)
{
    const qp_qat_block *blk = tr->blk;
    for (size_t s0 = 0; s0 < blk->S; s0 += tr->B) {
        size_t n = blk->S - s0 < tr->B ? blk->S - s0 : tr->B;
        for (size_t b = 0; b < n; b++) {
            int rc = blk->input(blk->input_ud, s0 + b, tr->xb + b * tr->TD);
            if (rc)
                return rc;
        }
        qp_tblock_f32_forward(tr->tb, &blk->fp, tr->xb, n, tr->targets + s0 * tr->TD);
    }
    return 0;
}

static int to_linear(qp_linear **out, const lin_state *ls, const qp_qat_params *p, int bits)
{
    qp_linear_params lp = {.bits = bits, .group_size = p->group_size, .sym = p->sym, .mse = p->mse};
    int rc = qp_linear_new(out, (int64_t)ls->rows, (int64_t)ls->cols, &lp);
    if (rc)
        return rc;
    qp_linear_view v;
    qp_linear_view_of(*out, &v);
    const size_t gs = ls->cols / ls->ng;
    for (size_t r = 0; r < ls->rows; r++)
        for (size_t g = 0; g < ls->ng; g++) {
            float s, z;
            qp_fq_f32_group(&ls->fq, r, g, &s, &z);
            v.scales[r * ls->ng + g] = qp_f32_to_f16(s);
            v.zeros[r * ls->ng + g] = (uint8_t)z;
            for (size_t c = g * gs; c < (g + 1) * gs; c++) {
                size_t i = r * ls->cols + c;
                float u = ls->fq.w[i] / s + (ls->off ? (float)ls->off[i] : 0.0f) + ls->v[i];
                float q = rintf(u) + z;
                v.codes[i] = (uint8_t)(q < 0 ? 0 : q > (float)ls->fq.maxq ? (float)ls->fq.maxq : q);
            }
        }
    rc = qp_linear_validate(*out, "qat result");
    if (rc) {
        qp_linear_free(*out);
        *out = NULL;
    }
    return rc;
}

int qp_qat_block_run(qp_linear *out[QP_TL_COUNT], qp_qat_stats *st, const qp_qat_block *blk, const qp_qat_params *p)
{
    trainer tr;
    memset(&tr, 0, sizeof(tr));
    memset(st, 0, sizeof(*st));
    st->bad_linear = -1;
    int any = 0;
    for (int i = 0; i < QP_TL_COUNT; i++) {
        out[i] = NULL;
        any |= blk->bits[i] > 0;
    }
    if (!any)
        return 0;   /* nothing of this block is quantized (skip:, or other types by override) */
    tr.blk = blk;
    tr.B = (size_t)(p->batch < 1 ? 1 : p->batch);
    if (tr.B > blk->S)
        tr.B = blk->S;
    if (tr.B > 4096)
        tr.B = 4096;
    tr.TD = blk->T * (size_t)blk->shape.hidden;
    qp_batch_order order = {0};
    int rc = qp_tblock_f32_new(&tr.tb, &blk->shape, tr.B, blk->T, blk->cos_t, blk->sin_t, p->n_threads);
    if (rc)
        goto done;
    tr.wq = blk->fp;
    for (int i = 0; i < QP_TL_COUNT && rc == 0; i++)
        if (blk->bits[i] > 0) {
            if ((rc = lin_init(&tr.ls[i], blk, p, i)) != 0)
                st->bad_linear = i;
            tr.wq.w[i] = tr.ls[i].what;
        }
    if (rc)
        goto done;
    tr.xb = qp_xmalloc(tr.B * tr.TD * sizeof(float));
    tr.yb = qp_xmalloc(tr.B * tr.TD * sizeof(float));
    tr.dy = qp_xmalloc(tr.B * tr.TD * sizeof(float));
    tr.targets = qp_xmalloc(blk->S * tr.TD * sizeof(float));
    if ((rc = make_targets(&tr)) != 0)
        goto done;
    refresh_weights(&tr);
    if ((rc = full_loss(&tr, &st->loss_init)) != 0)
        goto done;

    qp_tblock_grads_f32 g;
    memset(&g, 0, sizeof(g));
    for (int i = 0; i < QP_TL_COUNT; i++)
        g.w[i] = tr.ls[i].on ? tr.ls[i].dwhat : NULL;
    qp_batch_order_init(&order, blk->S, p->seed);
    size_t idx[4096];
    for (int t = 0; t < p->steps && rc == 0; t++) {
        qp_batch_order_next(&order, idx, tr.B);
        double sum = 0;
        if ((rc = batch_sq_error(&tr, idx, tr.B, &sum, 1)) != 0)
            break;
        qp_tblock_f32_backward(tr.tb, &tr.wq, tr.dy, NULL, &g);
        const float lr = (float)(p->lr * (1.0 - (double)t / (double)p->steps));
        for (int i = 0; i < QP_TL_COUNT; i++)
            if (tr.ls[i].on)
                lin_step(&tr.ls[i], lr);
        refresh_weights(&tr);
        if (blk->progress)
            blk->progress(blk->progress_ud, t + 1, p->steps, sum / (double)(tr.B * tr.TD));
    }
    if (rc)
        goto done;
    if (p->steps == 0)
        st->loss_final = st->loss_init;   /* the init, as it is */
    else if ((rc = full_loss(&tr, &st->loss_final)) != 0)
        goto done;
    if (p->steps > 0 && !(st->loss_final < st->loss_init)) {
        /* back to the init: v as it started, γ = 1, zf as fitted */
        st->kept_init = 1;
        for (int i = 0; i < QP_TL_COUNT; i++) {
            lin_state *ls = &tr.ls[i];
            if (!ls->on)
                continue;
            if (ls->v0)
                memcpy(ls->v, ls->v0, ls->rows * ls->cols * sizeof(float));
            else
                memset(ls->v, 0, ls->rows * ls->cols * sizeof(float));
            for (size_t k = 0; k < ls->rows * ls->ng; k++) {
                ls->gamma[k] = 1.0f;
                ls->zf[k] = ls->zf0[k];
            }
        }
        st->loss_final = st->loss_init;
    }
    for (int i = 0; i < QP_TL_COUNT && rc == 0; i++)
        if (tr.ls[i].on && (rc = to_linear(&out[i], &tr.ls[i], p, blk->bits[i])) != 0)
            st->bad_linear = i;
done:
    if (rc)
        for (int i = 0; i < QP_TL_COUNT; i++) {
            qp_linear_free(out[i]);
            out[i] = NULL;
        }
    for (int i = 0; i < QP_TL_COUNT; i++)
        lin_free(&tr.ls[i]);
    qp_batch_order_free(&order);
    free(tr.xb);
    free(tr.yb);
    free(tr.dy);
    free(tr.targets);
    qp_tblock_f32_free(tr.tb);
    return rc;
}
