#include "stages/quant_seq.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "quant/gptq.h"
#include "quant/linear.h"
#include "stages/calib_stats.h"
#include "stages/model_load.h"
#include "stages/quant_awq.h"
#include "stages/qtensor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Collects the inputs of layer `layer` into st[site] where st[site].dim > 0. */
typedef struct {
    int layer;
    qp_site_stats *st;   /* [4] */
} site_filter;

static void observe_sites(void *ud, int layer, qp_llama_site site, const float *x, size_t n, size_t dim)
{
    site_filter *f = ud;
    (void)dim;
    if (layer == f->layer && f->st[site].dim > 0)
        qp_site_stats_add(&f->st[site], x, n);
}

/* GPTQ of one weight with H; stores the result and serves Ŵ to the model. */
static int gptq_one(qp_stage_ctx *ctx, qp_loaded_model *lm, const qp_artifact *model, const qp_quant_plan *plan,
                    const char *hf, const double *H, int64_t nsamples, json_t *out)
{
    qp_tensor_plan tp;
    float *w = NULL, *back = NULL;
    int64_t rows = 0, cols = 0;
    qp_linear *q = NULL;
    void *packed = NULL;
    size_t plen = 0;
    int rc = qp_model_artifact_tensor_f32(&w, &rows, &cols, model, ctx->cache, hf, ctx->id);
    if (rc)
        goto done;
    if ((rc = qp_quant_plan_tensor(&tp, plan, hf, 2, rows, cols)) != 0)
        goto done;
    if (tp.kind != QP_TP_LINEAR)
        goto done;   /* skipped or overridden to another format: the main loop handles it */
    const json_t *p = ctx->params;
    qp_gptq_params gp;
    qp_gptq_params_default(&gp);
    gp.bits = tp.bits;
    gp.group_size = (int)qp_param_int(p, "group_size");
    gp.sym = qp_param_bool(p, "sym");
    gp.mse = qp_param_bool(p, "mse");
    gp.damp_percent = qp_param_num(p, "damp_percent");
    gp.act_order = qp_param_bool(p, "act_order");
    gp.static_groups = qp_param_bool(p, "static_groups");
    gp.nsamples = nsamples;
    qp_gptq_stats gs;
    if ((rc = qp_gptq_quantize(&q, w, H, rows, cols, &gp, &gs, ctx->threads)) != 0) {
        qp_error_prefix("stage '%s': tensor '%s'", ctx->id, hf);
        goto done;
    }
    back = malloc((size_t)(rows * cols) * sizeof(float));
    if (!back) {
        rc = qp_error_set(QP_ERROR, "out of memory");
        goto done;
    }
    if ((rc = qp_linear_dequantize(q, back)) != 0 ||
        (rc = qp_loaded_model_override(lm, hf, back, (uint64_t)(rows * cols))) != 0 ||
        (rc = qp_linear_serialize(q, &packed, &plen)) != 0)
        goto done;
    char digest[QP_HEX_LEN];
    if ((rc = qp_cache_put(ctx->cache, packed, plen, digest)) != 0)
        goto done;
    json_object_set_new(out, hf, json_pack("{s:s, s:I, s:f, s:i, s:i, s:b, s:b, s:f, s:f}", "digest", digest, "size",
                                           (json_int_t)plen, "bpw", qp_linear_bits_per_weight(q), "bits", gp.bits,
                                           "group_size", gp.group_size, "sym", gp.sym, "act_order", gp.act_order,
                                           "damp", gs.damp_percent, "gptq_loss", gs.loss));
done:
    qp_linear_free(q);
    free(packed);
    free(back);
    free(w);
    return rc;
}

/* Runs layer l over every window of x [S, T, D] (in place when advance). */
static int run_layer(qp_llama *m, int l, float *x, float *scratch, size_t S, size_t T, size_t D, int advance,
                     site_filter *f)
{
    for (size_t s = 0; s < S; s++) {
        float *xs = x + s * T * D;
        float *buf = advance ? xs : scratch;
        if (!advance)
            memcpy(buf, xs, T * D * sizeof(float));
        int rc = qp_llama_layer(m, l, buf, T, f ? observe_sites : NULL, f);
        if (rc)
            return rc;
    }
    return 0;
}

int qp_quant_sequential(json_t **out, qp_stage_ctx *ctx, const qp_artifact *model, const qp_artifact *calib,
                        const qp_quant_plan *plan)
{
    qp_loaded_model *lm = NULL;
    float *x = NULL, *scratch = NULL;
    int32_t *samples = NULL;
    size_t slen = 0;
    json_t *res = json_object();
    char *what = qp_strfmt("stage '%s': input '%s'", ctx->id, ctx->input_ids[0]);
    int rc = qp_loaded_model_open(&lm, model, ctx->cache, ctx->threads, what);
    if (rc)
        goto done;
    qp_llama *m = qp_loaded_model_llama(lm);
    const qp_llama_hparams *hp = qp_llama_get_hparams(m);
    const json_t *se = qp_artifact_find(calib, "samples");
    if (!se) {
        rc = qp_error_set(QP_EFORMAT, "stage '%s': calibration input '%s' has no samples", ctx->id, ctx->input_ids[1]);
        goto done;
    }
    int64_t S, T;
    qp_qtensor_rows_cols(se, &S, &T);
    if ((rc = qp_cache_get(ctx->cache, qp_artifact_entry_digest(se), (void **)&samples, &slen)) != 0)
        goto done;
    if (slen != (size_t)(S * T) * sizeof(int32_t) || T > hp->max_pos) {
        rc = qp_error_set(QP_ECORRUPT, "stage '%s': calibration samples do not fit the model", ctx->id);
        goto done;
    }
    size_t D = (size_t)hp->hidden;
    int sequential = qp_param_bool(ctx->params, "sequential");
    int true_seq = qp_param_bool(ctx->params, "true_sequential");
    x = malloc((size_t)(S * T) * D * sizeof(float));
    scratch = malloc((size_t)T * D * sizeof(float));
    if (!x || !scratch) {
        rc = qp_error_set(QP_ERROR, "stage '%s': out of memory for the activations of %lld x %lld tokens", ctx->id,
                          (long long)S, (long long)T);
        goto done;
    }
    for (int64_t s = 0; s < S && rc == 0; s++)
        rc = qp_llama_embed(m, samples + s * T, (size_t)T, x + (size_t)(s * T) * D);
    /* true-sequential groups; without it, one group per layer */
    static const qp_llama_site order[4] = {QP_SITE_QKV, QP_SITE_O, QP_SITE_GATE_UP, QP_SITE_DOWN};
    int awq = strcmp(qp_param_str(ctx->params, "method"), "awq") == 0;
    for (int l = 0; l < hp->n_layers && rc == 0; l++) {
        if (awq) {
            rc = qp_quant_awq_layer(ctx, lm, model, plan, l, x, (size_t)S, (size_t)T, res);
            if (rc == 0 && sequential)
                rc = run_layer(m, l, x, scratch, (size_t)S, (size_t)T, D, 1, NULL);
            continue;
        }
        qp_site_stats st[4];
        memset(st, 0, sizeof(st));
        for (int g = 0; g < 4 && rc == 0; g++) {
            qp_llama_site site = order[g];
            double *H = NULL;
            if (!sequential) {
                char name[96];
                snprintf(name, sizeof(name), "hessian/layers.%d.%s", l, qp_site_name(site));
                const json_t *he = qp_artifact_find(calib, name);
                void *buf = NULL;
                size_t len = 0;
                if (!he) {
                    rc = qp_error_set(QP_EFORMAT, "stage '%s': calibration has no %s (calibrate with hessians: "
                                                  "true, or use sequential: true)", ctx->id, name);
                    break;
                }
                int64_t d, d2;
                qp_qtensor_rows_cols(he, &d, &d2);
                if ((rc = qp_cache_get(ctx->cache, qp_artifact_entry_digest(he), &buf, &len)) != 0)
                    break;
                H = malloc((size_t)(d * d) * sizeof(double));
                for (int64_t i = 0; H && i < d * d; i++)
                    H[i] = ((const float *)buf)[i];
                free(buf);
            } else {
                /* the group's inputs under the weights quantized so far
                 * (true_sequential), or all four from the layer as it was
                 * before any of its weights were quantized */
                if (true_seq || g == 0) {
                    for (int k = 0; k < 4 && rc == 0; k++) {
                        if (!(true_seq ? order[k] == site : 1))
                            continue;
                        size_t dim = order[k] == QP_SITE_O ? (size_t)(hp->n_heads * hp->head_dim)
                                     : order[k] == QP_SITE_DOWN ? (size_t)hp->intermediate : D;
                        rc = qp_site_stats_init(&st[order[k]], dim, 1);
                    }
                    if (rc == 0 && (rc = qp_llama_reload_layer(m, l)) == 0) {
                        site_filter f = {l, st};
                        rc = run_layer(m, l, x, scratch, (size_t)S, (size_t)T, D, 0, &f);
                    }
                    if (rc)
                        break;
                }
                H = qp_site_hessian(&st[site]);
                if (true_seq)
                    qp_site_stats_free(&st[site]);
            }
            if (!H) {
                rc = qp_error_set(QP_ERROR, "out of memory for a Hessian");
                break;
            }
            const char *suffix[3];
            size_t nw = qp_site_weights(site, suffix);
            for (size_t k = 0; k < nw && rc == 0; k++) {
                char hf[160];
                snprintf(hf, sizeof(hf), "model.layers.%d.%s.weight", l, suffix[k]);
                rc = gptq_one(ctx, lm, model, plan, hf, H, (int64_t)(S * T), res);
            }
            free(H);
            qp_progress_update(ctx->progress, (uint64_t)(l * 4 + g + 1), (uint64_t)(hp->n_layers * 4), "groups");
        }
        for (int k = 0; k < 4; k++)
            qp_site_stats_free(&st[k]);
        /* the next layer sees this layer's quantized output */
        if (rc == 0 && sequential && (rc = qp_llama_reload_layer(m, l)) == 0)
            rc = run_layer(m, l, x, scratch, (size_t)S, (size_t)T, D, 1, NULL);
    }
done:
    if (rc)
        json_decref(res);
    else
        *out = res;
    free(x);
    free(scratch);
    free(samples);
    free(what);
    qp_loaded_model_free(lm);
    return rc;
}
