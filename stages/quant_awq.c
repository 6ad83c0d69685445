#include "stages/quant_awq.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/gemm.h"
#include "quant/awq.h"
#include "quant/linear.h"
#include "stages/calib_stats.h"
#include "model/llama_kernels.h"


#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Windows of the layer's input used for the loss and the statistics: the
 * search runs the layer ~80 times, so a bounded subset keeps it fast. */
#define AWQ_WINDOWS 32
#define AWQ_SAMPLE_TOKENS 8192  /* inputs kept per site: MLP losses and the clip search (which subsamples to 512-1023) */

enum { W_Q, W_K, W_V, W_O, W_GATE, W_UP, W_DOWN, N_W, N_INPUT_NORM = N_W, N_POST_NORM, N_ALL };

static const char *suffix[N_ALL] = {
    "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
    "mlp.gate_proj.weight",    "mlp.up_proj.weight",      "mlp.down_proj.weight",    "input_layernorm.weight",
    "post_attention_layernorm.weight",
};

typedef struct {
    qp_stage_ctx *ctx;
    qp_loaded_model *lm;
    qp_llama *m;
    int layer;
    char names[N_ALL][160];
    float *w[N_ALL];          /* current (scaled) f32 weights */
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
    float *g = malloc((size_t)(n * F) * sizeof(float)), *u = malloc((size_t)(n * F) * sizeof(float));
    if (!g || !u) {
        free(g);
        free(u);
        return qp_error_set(QP_ERROR, "out of memory");
    }
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

/* s folded: W[:, c] *= s[c] for the group; the previous op divides. */
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
static int quantize_weights(awq_layer *a, const qp_quant_plan *plan, const qp_awq_params *ap, int clip, json_t *out)
{
    int rc = 0;
    float *w = NULL, *back = NULL, *max_val = NULL;
    void *packed = NULL;
    qp_linear *q = NULL;
    for (int i = 0; i < N_W && rc == 0; i++) {
        qp_tensor_plan tp;
        if ((rc = qp_quant_plan_tensor(&tp, plan, a->names[i], 2, a->rows[i], a->cols[i])) != 0)
            break;
        if (tp.kind != QP_TP_LINEAR)
            continue;   /* skipped or overridden: the main loop handles it (from the unscaled weights) */
        size_t n = (size_t)(a->rows[i] * a->cols[i]);
        float *nw = realloc(w, n * sizeof(float)), *nb = nw ? realloc(back, n * sizeof(float)) : NULL;
        if (nw)
            w = nw;
        if (nb)
            back = nb;
        if (!nw || !nb) {
            rc = qp_error_set(QP_ERROR, "out of memory");
            break;
        }
        memcpy(w, a->w[i], n * sizeof(float));
        qp_llama_site site = i <= W_V ? QP_SITE_QKV : i == W_O ? QP_SITE_O : i == W_DOWN ? QP_SITE_DOWN
                                                                                         : QP_SITE_GATE_UP;
        if (clip && i != W_Q && i != W_K) {
            int64_t ng = ap->group_size > 0 ? a->cols[i] / ap->group_size : 1;
            float *mv = realloc(max_val, (size_t)(a->rows[i] * ng) * sizeof(float));
            if (!mv) {
                rc = qp_error_set(QP_ERROR, "out of memory");
                break;
            }
            max_val = mv;
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
        json_object_set_new(out, a->names[i],
                            json_pack("{s:s, s:s, s:I, s:f, s:i, s:i, s:b}", "format", "linear", "digest", digest,
                                      "size", (json_int_t)plen, "bpw", qp_linear_bits_per_weight(q), "bits", tp.bits,
                                      "group_size", ap->group_size, "sym", !ap->zero_point));
    }
    qp_linear_free(q);
    free(packed);
    free(w);
    free(back);
    free(max_val);
    return rc;
}

int qp_quant_awq_layer(qp_stage_ctx *ctx, qp_loaded_model *lm, const qp_artifact *model, const qp_quant_plan *plan,
                       int layer, const float *x, size_t S, size_t T, json_t *res)
{
    awq_layer a;
    memset(&a, 0, sizeof(a));
    a.ctx = ctx;
    a.lm = lm;
    a.m = qp_loaded_model_llama(lm);
    a.layer = layer;
    const qp_llama_hparams *hp = qp_llama_get_hparams(a.m);
    a.D = (size_t)hp->hidden;
    a.T = T;
    a.S = S < AWQ_WINDOWS ? S : AWQ_WINDOWS;
    a.x = x;
    /* statistics and samples come from every calibration window (as
     * AutoAWQ's input features do); the loss windows are the first a.S */
    a.sample_stride = (S * T + AWQ_SAMPLE_TOKENS - 1) / AWQ_SAMPLE_TOKENS;
    if (a.sample_stride == 0)
        a.sample_stride = 1;
    int rc = 0;
    float *s = NULL;
    for (int i = 0; i < N_ALL && rc == 0; i++) {
        snprintf(a.names[i], sizeof(a.names[i]), "model.layers.%d.%s", layer, suffix[i]);
        /* norms come back as one row of D */
        rc = qp_model_artifact_tensor_f32(&a.w[i], &a.rows[i], &a.cols[i], model, ctx->cache, a.names[i], ctx->id);
    }
    a.y_ref = malloc(a.S * T * a.D * sizeof(float));
    a.buf = malloc(T * a.D * sizeof(float));
    if (rc == 0 && (!a.y_ref || !a.buf))
        rc = qp_error_set(QP_ERROR, "out of memory");
    static const size_t dims_site[4] = {0, 1, 0, 2}; /* D, H·hd, D, F */
    size_t dims[3] = {a.D, (size_t)(hp->n_heads * hp->head_dim), (size_t)hp->intermediate};
    for (int k = 0; k < 4 && rc == 0; k++) {
        size_t dim = dims[dims_site[k]];
        if ((rc = qp_site_stats_init(&a.st[k], dim, 0)) == 0 &&
            !(a.sample[k] = malloc((size_t)AWQ_SAMPLE_TOKENS * dim * sizeof(float))))
            rc = qp_error_set(QP_ERROR, "out of memory");
    }
    /* 1. unquantized output and input statistics (weights as stored) */
    for (int i = 0; i < N_ALL && rc == 0; i++)
        rc = install(&a, i, a.w[i]);
    if (rc == 0)
        rc = qp_llama_reload_layer(a.m, layer);
    for (size_t w = 0; w < S && rc == 0; w++) {
        float *y = w < a.S ? a.y_ref + w * T * a.D : a.buf;
        memcpy(y, x + w * T * a.D, T * a.D * sizeof(float));
        rc = qp_llama_layer(a.m, layer, y, T, observe, &a);
    }
    qp_awq_params ap;
    qp_awq_params_default(&ap);
    ap.bits = (int)json_integer_value(json_object_get(ctx->params, "bits"));
    ap.group_size = (int)qp_param_int(ctx->params, "group_size");
    ap.zero_point = !qp_param_bool(ctx->params, "sym");
    const char *duo = qp_param_str(ctx->params, "duo_scaling");
    ap.duo_scaling = !strcmp(duo, "auto") ? -1 : !strcmp(duo, "true") ? 1 : 0;
    json_t *layer_info = json_array();
    /* 2-3. scale groups: members, the previous op, whether it is a row-scaled product */
    static const int g_qkv[] = {W_Q, W_K, W_V}, g_o[] = {W_O}, g_gu[] = {W_GATE, W_UP}, g_down[] = {W_DOWN};
    const struct { const int *w; size_t n; int prev, prev_rows; qp_llama_site site; } groups[4] = {
        {g_qkv, 3, N_INPUT_NORM, 0, QP_SITE_QKV},
        {g_o, 1, W_V, 1, QP_SITE_O},
        {g_gu, 2, N_POST_NORM, 0, QP_SITE_GATE_UP},
        {g_down, 1, W_UP, 1, QP_SITE_DOWN},
    };
    for (int g = 0; g < 4 && rc == 0; g++) {
        /* v_proj -> o_proj only when one v row feeds one o column (no GQA) */
        if (groups[g].site == QP_SITE_O && a.rows[W_V] != a.cols[W_O])
            continue;
        int64_t cols = a.cols[groups[g].w[0]];
        float *xm = malloc((size_t)cols * sizeof(float));
        s = realloc(s, (size_t)cols * sizeof(float));
        if (!xm || !s) {
            free(xm);
            rc = qp_error_set(QP_ERROR, "out of memory");
            break;
        }
        const qp_site_stats *st = &a.st[groups[g].site];
        for (int64_t c = 0; c < cols; c++)
            xm[c] = (float)(st->abs_sum[c] / (double)st->n);
        const float *ws[3];
        int64_t rows[3];
        const char *names[3];
        for (size_t j = 0; j < groups[g].n; j++) {
            ws[j] = a.w[groups[g].w[j]];
            rows[j] = a.rows[groups[g].w[j]];
            names[j] = a.names[groups[g].w[j]];
        }
        qp_awq_group grp = {groups[g].n, ws, rows, cols, xm, names};
        qp_awq_scale_stats ss;
        a.group = groups[g].w;
        a.n_group = groups[g].n;
        a.module_ref = a.module_buf = NULL;
        if (groups[g].site == QP_SITE_GATE_UP || groups[g].site == QP_SITE_DOWN) {
            size_t n_out = (size_t)a.n_sample[groups[g].site] * a.D;
            a.module_ref = malloc(n_out * sizeof(float));
            a.module_buf = malloc(n_out * sizeof(float));
            if (!a.module_ref || !a.module_buf)
                rc = qp_error_set(QP_ERROR, "out of memory");
            else
                rc = module_out(&a, groups[g].site, a.w[W_GATE], a.w[W_UP], a.w[W_DOWN], a.module_ref);
        }
        if (rc == 0)
            rc = qp_awq_search_scale(s, &ss, &grp, &ap, loss_cb, &a, ctx->threads);
        free(a.module_ref);
        free(a.module_buf);
        a.module_ref = a.module_buf = NULL;
        free(xm);
        if (rc) {
            qp_error_prefix("stage '%s': layer %d", ctx->id, layer);
            break;
        }
        fold_scales(&a, groups[g].w, groups[g].n, groups[g].prev, groups[g].prev_rows, s, groups[g].site);
        /* searched groups go back to their (scaled) fp weights for the next search */
        for (int i = 0; i < N_ALL && rc == 0; i++)
            rc = install(&a, i, a.w[i]);
        json_array_append_new(layer_info, json_pack("{s:s, s:f, s:b, s:f, s:f}", "group", qp_site_name(groups[g].site),
                                                    "alpha", ss.alpha, "duo", ss.duo, "loss", ss.loss, "rtn_loss",
                                                    isfinite(ss.rtn_loss) ? ss.rtn_loss : -1.0));
        qp_progress_update(ctx->progress, (uint64_t)(layer * 4 + g + 1), (uint64_t)(hp->n_layers * 4), "groups");
    }
    /* 4. clip search (not q/k: their products go through softmax), then
     * RTN; the clipped layer is kept only when the layer's output error is
     * lower than without clipping (both are measured, so clip can never
     * make a layer worse on the calibration windows) */
    int clip = qp_param_bool(ctx->params, "clip");
    json_t *plain = json_object(), *clipped = NULL;
    double loss_plain = 0, loss_clip = INFINITY;
    if (rc == 0 && (rc = quantize_weights(&a, plan, &ap, 0, plain)) == 0)
        rc = layer_mse(&a, &loss_plain);
    if (rc == 0 && clip) {
        clipped = json_object();
        if ((rc = quantize_weights(&a, plan, &ap, 1, clipped)) == 0)
            rc = layer_mse(&a, &loss_clip);
    }
    int use_clip = rc == 0 && clip && loss_clip < loss_plain;
    if (rc == 0 && clip && !use_clip)
        rc = quantize_weights(&a, plan, &ap, 0, plain);   /* reinstall the unclipped weights */
    if (rc == 0)
        json_object_update(res, use_clip ? clipped : plain);
    json_array_append_new(layer_info, json_pack("{s:s, s:f, s:f, s:b}", "group", "clip", "loss_plain", loss_plain,
                                                "loss_clipped", isfinite(loss_clip) ? loss_clip : -1.0, "kept",
                                                use_clip));
    json_decref(plain);
    json_decref(clipped);
    /* the scaled norms are part of the quantized model */
    for (int i = N_W; i < N_ALL && rc == 0; i++) {
        char digest[QP_HEX_LEN];
        size_t bytes = (size_t)a.cols[i] * sizeof(float);
        if ((rc = install(&a, i, a.w[i])) == 0 && (rc = qp_cache_put(ctx->cache, a.w[i], bytes, digest)) == 0)
            json_object_set_new(res, a.names[i], json_pack("{s:s, s:s, s:s, s:I, s:f}", "format", "dense", "dtype",
                                                           "F32", "digest", digest, "size", (json_int_t)bytes, "bpw",
                                                           32.0));
    }
    if (rc == 0)
        rc = qp_llama_reload_layer(a.m, layer);
    if (rc == 0) {
        json_t *all = json_object_get(res, "_awq");
        if (!all) {
            json_object_set_new(res, "_awq", json_array());
            all = json_object_get(res, "_awq");
        }
        json_array_append(all, layer_info);
    }
    json_decref(layer_info);
    for (int i = 0; i < N_ALL; i++)
        free(a.w[i]);
    for (int k = 0; k < 4; k++) {
        qp_site_stats_free(&a.st[k]);
        free(a.sample[k]);
    }
    free(a.y_ref);
    free(a.buf);
    free(s);
    return rc;
}
