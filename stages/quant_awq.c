#include "stages/quant_awq.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/gemm.h"
#include "model/hf_names.h"
#include "model/llama_kernels.h"
#include "quant/awq.h"
#include "quant/linear.h"
#include "stages/calib_stats.h"
#include "stages/qmethods.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Windows of the layer's input used for the loss and the statistics: the
 * search runs the layer ~80 times, so a bounded subset keeps it fast. */
#define AWQ_WINDOWS 32
#define AWQ_SAMPLE_TOKENS 8192  /* inputs kept per site: MLP losses and the clip search (which subsamples to 512-1023) */

/* The linear weights, the two norms and v_proj's bias (Qwen2-style models
 * only; absent, its slot stays NULL): everything a scale fold can change. */
enum { W_Q, W_K, W_V, W_O, W_GATE, W_UP, W_DOWN, N_W, N_INPUT_NORM = N_W, N_POST_NORM, B_V, N_ALL };

static const char *suffix[N_ALL] = {
    QP_HF_Q_PROJ ".weight",    QP_HF_K_PROJ ".weight", QP_HF_V_PROJ ".weight",    QP_HF_O_PROJ ".weight",
    QP_HF_GATE_PROJ ".weight", QP_HF_UP_PROJ ".weight", QP_HF_DOWN_PROJ ".weight", QP_HF_ATTN_NORM ".weight",
    QP_HF_FFN_NORM ".weight",  QP_HF_V_PROJ ".bias",
};

typedef struct {
    qp_stage_ctx *ctx;
    const qp_quant_plan *plan;
    qp_loaded_model *lm;
    qp_llama *m;
    int layer;
    char names[N_ALL][160];
    float *w[N_ALL];          /* current (scaled) f32 weights; w[B_V] NULL without q/k/v biases */
    int bias_scaled;          /* the o_proj group divided v_proj's bias by its scales */
    int64_t rows[N_ALL], cols[N_ALL];
    const float *x;           /* [S, T, D] inputs */
    size_t S, T, D;
    float *y_ref;             /* [S, T, D] unquantized outputs */
    float *buf;               /* [T, D] */
    const int *group;         /* weight indices of the group being searched */
    size_t n_group;
    /* statistics of the four sites: mean |x| and a token sample */
    qp_site_stats st[4];
    float *sample[4];         /* [n_sample, dim] */
    int64_t n_sample[4];
    size_t sample_stride;
    float *module_ref;        /* [n_sample, D] unquantized module output (MLP groups), else NULL */
    float *module_buf;
} awq_layer;

static int install(awq_layer *a, int i, const float *w)
{
    if (!w)
        return 0;   /* a bias the model does not have */
    return qp_loaded_model_override(a->lm, a->names[i], w, (uint64_t)(a->rows[i] * a->cols[i]));
}

/* Output MSE of the whole layer against the unquantized output. */
static int layer_mse(awq_layer *a, double *mse)
{
    int rc = qp_llama_reload_layer(a->m, a->layer);
    double se = 0;
    for (size_t s = 0; rc == 0 && s < a->S; s++) {
        memcpy(a->buf, a->x + s * a->T * a->D, a->T * a->D * sizeof(float));
        if ((rc = qp_llama_layer(a->m, a->layer, a->buf, a->T, NULL, NULL)) != 0)
            break;
        const float *y = a->y_ref + s * a->T * a->D;
        for (size_t i = 0; i < a->T * a->D; i++) {
            double d = (double)a->buf[i] - (double)y[i];
            se += d * d;
        }
    }
    *mse = se / (double)(a->S * a->T * a->D);
    return rc;
}

/* out [n, rows] = x [n, cols] · wᵀ */
static void linear_out(float *out, const float *x, int64_t n, const float *w, int64_t rows, int64_t cols)
{
    qp_sgemm(QP_NOTRANS, QP_TRANS, (size_t)n, (size_t)rows, (size_t)cols, 1.0f, x, (size_t)cols, w, (size_t)cols, 0.0f,
             out, (size_t)rows);
}

/* The inspected module's output on the sampled inputs, as AutoAWQ's
 * module2inspect: down_proj alone, or the whole MLP for gate/up.
 * wg/wu/wd: the weights to use (candidates or originals). */
static int module_out(awq_layer *a, qp_llama_site site, const float *wg, const float *wu, const float *wd,
                      float *out)
{
    const float *x = a->sample[site];
    int64_t n = a->n_sample[site];
    if (site == QP_SITE_DOWN) {
        linear_out(out, x, n, wd, a->rows[W_DOWN], a->cols[W_DOWN]);
        return 0;
    }
    int64_t F = a->rows[W_GATE];
    float *g = qp_xmalloc((size_t)(n * F) * sizeof(float)), *u = qp_xmalloc((size_t)(n * F) * sizeof(float));
    linear_out(g, x, n, wg, F, a->cols[W_GATE]);
    linear_out(u, x, n, wu, F, a->cols[W_UP]);
    qp_kern_swiglu(g, u, (size_t)(n * F));
    linear_out(out, g, n, wd, a->rows[W_DOWN], F);
    free(g);
    free(u);
    return 0;
}

static int loss_cb(void *ud, const float *const *candidates, double *loss)
{
    awq_layer *a = ud;
    if (a->module_ref) {
        /* MLP groups: the module's output, not the whole layer (cheap) */
        qp_llama_site site = a->group[0] == W_DOWN ? QP_SITE_DOWN : QP_SITE_GATE_UP;
        const float *wg = site == QP_SITE_GATE_UP ? candidates[0] : a->w[W_GATE];
        const float *wu = site == QP_SITE_GATE_UP ? candidates[1] : a->w[W_UP];
        const float *wd = site == QP_SITE_DOWN ? candidates[0] : a->w[W_DOWN];
        int rc = module_out(a, site, wg, wu, wd, a->module_buf);
        if (rc)
            return rc;
        size_t n = (size_t)a->n_sample[site] * (size_t)a->rows[W_DOWN];
        double se = 0;
        for (size_t i = 0; i < n; i++) {
            double d = (double)a->module_buf[i] - (double)a->module_ref[i];
            se += d * d;
        }
        *loss = se / (double)n;
        return 0;
    }
    for (size_t j = 0; j < a->n_group; j++) {
        int rc = install(a, a->group[j], candidates[j]);
        if (rc)
            return rc;
    }
    return layer_mse(a, loss);
}

static void observe(void *ud, int layer, qp_llama_site site, const float *x, size_t n, size_t dim)
{
    awq_layer *a = ud;
    if (layer != a->layer)
        return;
    qp_site_stats_add(&a->st[site], x, n);
    for (size_t t = 0; t < n; t += a->sample_stride)
        if (a->n_sample[site] < AWQ_SAMPLE_TOKENS)
            memcpy(a->sample[site] + (size_t)a->n_sample[site]++ * dim, x + t * dim, dim * sizeof(float));
}

/* s folded: W[:, c] *= s[c] for the group; the previous op divides.  When
 * the previous op is a product with a bias (v_proj in Qwen2-style models),
 * its output channel c is W[c]·x + b[c], so b[c] is divided with the row
 * (AutoAWQ's scale_fc_fc); a norm before q/k/v leaves their biases alone:
 * (W·diag(s))·(x/s) + b = W·x + b. */
static void fold_scales(awq_layer *a, const int *grp, size_t n, int prev, int prev_is_rows, const float *s,
                        qp_llama_site site)
{
    int64_t cols = a->cols[grp[0]];
    for (size_t j = 0; j < n; j++)
        for (int64_t r = 0; r < a->rows[grp[j]]; r++)
            for (int64_t c = 0; c < cols; c++)
                a->w[grp[j]][r * cols + c] *= s[c];
    if (prev_is_rows) {
        /* row c of the previous product feeds input channel c */
        for (int64_t c = 0; c < cols; c++)
            for (int64_t k = 0; k < a->cols[prev]; k++)
                a->w[prev][c * a->cols[prev] + k] /= s[c];
        if (prev == W_V && a->w[B_V]) {
            for (int64_t c = 0; c < cols; c++)
                a->w[B_V][c] /= s[c];
            a->bias_scaled = 1;
        }
    } else {
        for (int64_t c = 0; c < cols; c++)
            a->w[prev][c] /= s[c];
    }
    /* the clip search sees the inputs the scaled weights will see */
    size_t dim = (size_t)cols;
    for (int64_t t = 0; t < a->n_sample[site]; t++)
        for (size_t c = 0; c < dim; c++)
            a->sample[site][(size_t)t * dim + c] /= s[c];
}

/* Clip (when asked; never q/k) and RTN every linear weight of the layer
 * from its scaled f32 copy; installs the dequantized weights and records
 * each stored object in `out`. */
static int quantize_weights(awq_layer *a, const qp_awq_params *ap, int clip, qp_quant_results *out)
{
    int rc = 0;
    float *w = NULL, *back = NULL, *max_val = NULL;
    void *packed = NULL;
    qp_linear *q = NULL;
    for (int i = 0; i < N_W && rc == 0; i++) {
        qp_tensor_plan tp;
        if ((rc = qp_quant_plan_tensor(&tp, a->plan, a->names[i], 2, a->rows[i], a->cols[i])) != 0)
            break;
        if (tp.kind != QP_TP_LINEAR)
            continue;   /* skipped or overridden: the main loop handles it (from the unscaled weights) */
        size_t n = (size_t)(a->rows[i] * a->cols[i]);
        w = qp_xrealloc(w, n * sizeof(float));
        back = qp_xrealloc(back, n * sizeof(float));
        memcpy(w, a->w[i], n * sizeof(float));
        qp_llama_site site = i <= W_V ? QP_SITE_QKV : i == W_O ? QP_SITE_O : i == W_DOWN ? QP_SITE_DOWN
                                                                                         : QP_SITE_GATE_UP;
        if (clip && i != W_Q && i != W_K) {
            int64_t ng = ap->group_size > 0 ? a->cols[i] / ap->group_size : 1;
            max_val = qp_xrealloc(max_val, (size_t)(a->rows[i] * ng) * sizeof(float));
            qp_awq_params cp = *ap;
            cp.bits = tp.bits;
            if ((rc = qp_awq_search_clip(max_val, NULL, NULL, w, a->rows[i], a->cols[i], a->sample[site],
                                         a->n_sample[site], &cp, a->ctx->threads)) != 0 ||
                (rc = qp_awq_apply_clip(w, a->rows[i], a->cols[i], max_val, ap->group_size)) != 0)
                break;
        }
        qp_linear_params lp = {.bits = tp.bits, .group_size = ap->group_size, .sym = !ap->zero_point, .mse = 0};
        qp_linear_free(q);
        q = NULL;
        free(packed);
        packed = NULL;
        size_t plen = 0;
        char digest[QP_HEX_LEN];
        if ((rc = qp_linear_new(&q, a->rows[i], a->cols[i], &lp)) != 0 ||
            (rc = qp_rtn_quantize(q, w, a->ctx->threads)) != 0 || (rc = qp_linear_dequantize(q, back)) != 0 ||
            (rc = install(a, i, back)) != 0 || (rc = qp_linear_serialize(q, &packed, &plen)) != 0 ||
            (rc = qp_cache_put(a->ctx->cache, packed, plen, digest)) != 0)
            break;
        qp_quant_results_put(out, a->names[i], digest, plen, qp_linear_bits_per_weight(q),
                             json_pack("{s:s, s:i, s:i, s:b}", "format", "linear", "bits", tp.bits, "group_size",
                                       ap->group_size, "sym", !ap->zero_point));
    }
    qp_linear_free(q);
    free(packed);
    free(w);
    free(back);
    free(max_val);
    return rc;
}

/* The layer's weights, buffers and step 1: its unquantized output and the
 * input statistics of its four sites (weights as stored). */
static int awq_open(awq_layer *a, qp_quant_seq *sq, int layer)
{
    qp_stage_ctx *ctx = sq->job->ctx;
    a->ctx = ctx;
    a->plan = &sq->job->plan;
    a->lm = sq->lm;
    a->m = sq->m;
    a->layer = layer;
    const qp_llama_hparams *hp = sq->hp;
    a->D = sq->D;
    a->T = sq->T;
    a->S = sq->S < AWQ_WINDOWS ? sq->S : AWQ_WINDOWS;
    a->x = sq->x;
    /* statistics and samples come from every calibration window (as
     * AutoAWQ's input features do); the loss windows are the first a->S */
    a->sample_stride = (sq->S * sq->T + AWQ_SAMPLE_TOKENS - 1) / AWQ_SAMPLE_TOKENS;
    if (a->sample_stride == 0)
        a->sample_stride = 1;
    int rc = 0;
    for (int i = 0; i < N_ALL && rc == 0; i++) {
        qp_hf_layer_name(a->names[i], sizeof(a->names[i]), layer, suffix[i]);
        if (i == B_V && !hp->qkv_bias)
            continue;
        /* norms and the bias come back as one row */
        rc = qp_model_artifact_tensor_f32(&a->w[i], &a->rows[i], &a->cols[i], sq->job->model, ctx->cache,
                                          a->names[i], ctx->id);
    }
    a->y_ref = qp_xmalloc(a->S * a->T * a->D * sizeof(float));
    a->buf = qp_xmalloc(a->T * a->D * sizeof(float));
    for (int k = 0; k < 4 && rc == 0; k++) {
        size_t dim = qp_site_dim(hp, (qp_llama_site)k);
        qp_site_stats_init(&a->st[k], dim, 0);
        a->sample[k] = qp_xmalloc((size_t)AWQ_SAMPLE_TOKENS * dim * sizeof(float));
    }
    for (int i = 0; i < N_ALL && rc == 0; i++)
        rc = install(a, i, a->w[i]);
    if (rc == 0)
        rc = qp_llama_reload_layer(a->m, layer);
    for (size_t w = 0; w < sq->S && rc == 0; w++) {
        float *y = w < a->S ? a->y_ref + w * a->T * a->D : a->buf;
        memcpy(y, a->x + w * a->T * a->D, a->T * a->D * sizeof(float));
        rc = qp_llama_layer(a->m, layer, y, a->T, observe, a);
    }
    return rc;
}

static void awq_close(awq_layer *a)
{
    for (int i = 0; i < N_ALL; i++)
        free(a->w[i]);
    for (int k = 0; k < 4; k++) {
        qp_site_stats_free(&a->st[k]);
        free(a->sample[k]);
    }
    free(a->y_ref);
    free(a->buf);
}

/* 2-3. scale groups: members, the previous op, whether it is a row-scaled product */
typedef struct {
    const int *w;
    size_t n;
    int prev, prev_rows;
    qp_llama_site site;
} scale_group;

static const int g_qkv[] = {W_Q, W_K, W_V}, g_o[] = {W_O}, g_gu[] = {W_GATE, W_UP}, g_down[] = {W_DOWN};
static const scale_group groups[4] = {
    {g_qkv, 3, N_INPUT_NORM, 0, QP_SITE_QKV},
    {g_o, 1, W_V, 1, QP_SITE_O},
    {g_gu, 2, N_POST_NORM, 0, QP_SITE_GATE_UP},
    {g_down, 1, W_UP, 1, QP_SITE_DOWN},
};

/* *scalable = 1 when every weight the group's scales change is quantized
 * here (plan linear): a member or a previous product that is skipped or
 * overridden is written by the quantize loop from its UNSCALED source, so
 * scaling the group would break the layer's function; such a group keeps
 * s = 1.  Returns 0 or the plan's error. */
static int group_scalable(const awq_layer *a, const scale_group *sg, int *scalable)
{
    *scalable = 1;
    for (size_t j = 0; j <= sg->n && *scalable; j++) {
        int i = j < sg->n ? sg->w[j] : sg->prev;
        if (i >= N_W)
            continue;   /* a norm: always stored scaled (dense) */
        qp_tensor_plan tp;
        int rc = qp_quant_plan_tensor(&tp, a->plan, a->names[i], 2, a->rows[i], a->cols[i]);
        if (rc)
            return rc;
        *scalable = tp.kind == QP_TP_LINEAR;
    }
    return 0;
}

/* The scale search of one group, folded into the weights; its numbers appended to layer_info. */
static int search_group(awq_layer *a, const scale_group *sg, const qp_awq_params *ap, json_t *layer_info)
{
    int64_t cols = a->cols[sg->w[0]];
    float *xm = qp_xmalloc((size_t)cols * sizeof(float)), *s = qp_xmalloc((size_t)cols * sizeof(float));
    const qp_site_stats *st = &a->st[sg->site];
    for (int64_t c = 0; c < cols; c++)
        xm[c] = (float)(st->abs_sum[c] / (double)st->n);
    const float *ws[3];
    int64_t rows[3];
    const char *names[3];
    for (size_t j = 0; j < sg->n; j++) {
        ws[j] = a->w[sg->w[j]];
        rows[j] = a->rows[sg->w[j]];
        names[j] = a->names[sg->w[j]];
    }
    qp_awq_group grp = {sg->n, ws, rows, cols, xm, names};
    qp_awq_scale_stats ss;
    a->group = sg->w;
    a->n_group = sg->n;
    a->module_ref = a->module_buf = NULL;
    int rc = 0;
    if (sg->site == QP_SITE_GATE_UP || sg->site == QP_SITE_DOWN) {
        size_t n_out = (size_t)a->n_sample[sg->site] * a->D;
        a->module_ref = qp_xmalloc(n_out * sizeof(float));
        a->module_buf = qp_xmalloc(n_out * sizeof(float));
        rc = module_out(a, sg->site, a->w[W_GATE], a->w[W_UP], a->w[W_DOWN], a->module_ref);
    }
    if (rc == 0)
        rc = qp_awq_search_scale(s, &ss, &grp, ap, loss_cb, a, a->ctx->threads);
    free(a->module_ref);
    free(a->module_buf);
    a->module_ref = a->module_buf = NULL;
    free(xm);
    if (rc) {
        qp_error_prefix("stage '%s': layer %d", a->ctx->id, a->layer);
        free(s);
        return rc;
    }
    fold_scales(a, sg->w, sg->n, sg->prev, sg->prev_rows, s, sg->site);
    free(s);
    /* searched groups go back to their (scaled) fp weights for the next search */
    for (int i = 0; i < N_ALL && rc == 0; i++)
        rc = install(a, i, a->w[i]);
    json_array_append_new(layer_info, json_pack("{s:s, s:f, s:b, s:f, s:f}", "group", qp_site_name(sg->site),
                                                "alpha", ss.alpha, "duo", ss.duo, "loss", ss.loss, "rtn_loss",
                                                isfinite(ss.rtn_loss) ? ss.rtn_loss : -1.0));
    return rc;
}

/* 4. clip search (not q/k: their products go through softmax), then RTN;
 * the clipped layer is kept only when the layer's output error is lower
 * than without clipping (both are measured, so clip can never make a layer
 * worse on the calibration windows). */
static int clip_and_store(awq_layer *a, const qp_awq_params *ap, int clip, qp_quant_results *res,
                          json_t *layer_info)
{
    qp_quant_results *plain = qp_quant_results_new(), *clipped = NULL;
    double loss_plain = 0, loss_clip = INFINITY;
    int rc = quantize_weights(a, ap, 0, plain);
    if (rc == 0)
        rc = layer_mse(a, &loss_plain);
    if (rc == 0 && clip) {
        clipped = qp_quant_results_new();
        if ((rc = quantize_weights(a, ap, 1, clipped)) == 0)
            rc = layer_mse(a, &loss_clip);
    }
    int use_clip = rc == 0 && clip && loss_clip < loss_plain;
    if (rc == 0 && clip && !use_clip)
        rc = quantize_weights(a, ap, 0, plain);   /* reinstall the unclipped weights */
    if (rc == 0)
        qp_quant_results_merge(res, use_clip ? clipped : plain);
    json_array_append_new(layer_info, json_pack("{s:s, s:f, s:f, s:b}", "group", "clip", "loss_plain", loss_plain,
                                                "loss_clipped", isfinite(loss_clip) ? loss_clip : -1.0, "kept",
                                                use_clip));
    qp_quant_results_free(plain);
    qp_quant_results_free(clipped);
    /* the scaled norms (and a scaled v_proj bias) are part of the quantized
     * model; an unscaled bias keeps its source object */
    for (int i = N_W; i < N_ALL && rc == 0; i++) {
        if (!a->w[i] || (i == B_V && !a->bias_scaled))
            continue;
        char digest[QP_HEX_LEN];
        size_t bytes = (size_t)a->cols[i] * sizeof(float);
        if ((rc = install(a, i, a->w[i])) == 0 && (rc = qp_cache_put(a->ctx->cache, a->w[i], bytes, digest)) == 0)
            qp_quant_results_put(res, a->names[i], digest, bytes, 32.0,
                                 json_pack("{s:s, s:s}", "format", "dense", "dtype", "F32"));
    }
    return rc;
}

int qp_quant_awq_layer(qp_quant_seq *sq, int layer)
{
    qp_quant_job *job = sq->job;
    const qp_qm_awq_opts *o = job->opts;
    awq_layer a;
    memset(&a, 0, sizeof(a));
    int rc = awq_open(&a, sq, layer);
    qp_awq_params ap;
    qp_awq_params_default(&ap);
    ap.bits = o->lin.bits;
    ap.group_size = o->lin.group_size;
    ap.zero_point = !o->lin.sym;
    ap.duo_scaling = o->duo_scaling;
    json_t *layer_info = json_array();
    for (int g = 0; g < 4 && rc == 0; g++) {
        /* v_proj -> o_proj only when one v row feeds one o column (no GQA) */
        if (groups[g].site == QP_SITE_O && a.rows[W_V] != a.cols[W_O])
            continue;
        int scalable = 0;
        if ((rc = group_scalable(&a, &groups[g], &scalable)) != 0 || !scalable)
            continue;
        rc = search_group(&a, &groups[g], &ap, layer_info);
        if (rc == 0)
            qp_progress_update(job->ctx->progress, (uint64_t)(layer * 4 + g + 1), (uint64_t)(sq->hp->n_layers * 4),
                               "groups");
    }
    if (rc == 0)
        rc = clip_and_store(&a, &ap, o->clip, job->results, layer_info);
    if (rc == 0)
        rc = qp_llama_reload_layer(a.m, layer);
    if (rc == 0) {
        if (!job->report)
            job->report = json_array();
        json_array_append(job->report, layer_info);
    }
    json_decref(layer_info);
    awq_close(&a);
    return rc;
}
