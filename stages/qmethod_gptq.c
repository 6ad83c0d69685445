/* method gptq: GPTQ (quant/gptq.h) of the linear layers, block by block
 * through the sequential driver (stages/quant_seq.h): for each decoder
 * layer, in true-sequential order (q,k,v → o → gate,up → down), run the
 * layer with the weights quantized so far, collect H of the group's input,
 * quantize the group, serve its dequantized weights.  With sequential:
 * false the calibrate stage's Hessians (unquantized model) are used
 * directly.  Each stored tensor records bits, group_size, sym, act_order,
 * damp and gptq_loss. */
#include "stages/qmethods.h"
#include "common/alloc.h"
#include "common/error.h"
#include "model/hf_names.h"
#include "quant/gptq.h"
#include "quant/linear.h"
#include "stages/bg_put.h"
#include "stages/calib_stats.h"
#include "stages/qtensor.h"
#include "stages/quant_seq.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int gptq_parse(void *opts, const json_t *params, const char *where)
{
    qp_qm_gptq_opts *o = opts;
    qp_qm_linear_parse(&o->lin, params);
    o->damp_percent = qp_param_num(params, "damp_percent");
    o->act_order = qp_param_bool(params, "act_order");
    o->static_groups = qp_param_bool(params, "static_groups");
    o->sequential = qp_param_bool(params, "sequential");
    o->true_sequential = qp_param_bool(params, "true_sequential");
    return 0;
}

/* A weight's packed bytes being stored by a helper thread (stages/bg_put.h)
 * while the next weight is quantized: on the 1.1B preset the stores took
 * 0.42 s of a layer's ~7 s on one core while the other idled (GPTQ's
 * inverse and column loop have serial parts too).  Its entry is added once
 * the put is collected, before the next starts, so entries keep the order
 * of an all-serial run. */
typedef struct {
    qp_bg_put *put;
    char *name;       /* the entry in flight, NULL when none */
    json_t *fields;
    size_t len;
    double bpw;
} pending_put;

static int collect_put(qp_quant_job *job, pending_put *pp)
{
    if (!pp->name)
        return 0;
    char digest[QP_HEX_LEN];
    int rc = qp_bg_put_wait(pp->put, digest);
    if (rc == 0)
        qp_quant_results_put(job->results, pp->name, digest, pp->len, pp->bpw, pp->fields);
    else
        json_decref(pp->fields);
    free(pp->name);
    pp->name = NULL;
    pp->fields = NULL;
    return rc;
}

/* GPTQ of one weight with H; stores the result (through pp) and serves Ŵ
 * to the model.  *prep is H's prepared inverse, made by the first weight
 * that needs it and shared by the others of its group (q, k, v; gate, up). */
static int gptq_one(qp_quant_seq *sq, const char *hf, const double *H, qp_gptq_prepared **prep, pending_put *pp)
{
    qp_quant_job *job = sq->job;
    qp_stage_ctx *ctx = job->ctx;
    const qp_qm_gptq_opts *o = job->opts;
    qp_tensor_plan tp;
    float *w = NULL;
    int64_t rows = 0, cols = 0;
    qp_linear *q = NULL;
    void *packed = NULL;
    size_t plen = 0;
    int rc = qp_model_artifact_tensor_f32(&w, &rows, &cols, job->model, ctx->cache, hf, ctx->id);
    if (rc)
        goto done;
    if ((rc = qp_quant_plan_tensor(&tp, &job->plan, hf, 2, rows, cols)) != 0)
        goto done;
    if (tp.kind != QP_TP_LINEAR)
        goto done;   /* skipped or overridden to another format: the main loop handles it */
    qp_gptq_params gp;
    qp_gptq_params_default(&gp);
    gp.bits = tp.bits;
    gp.group_size = o->lin.group_size;
    gp.sym = o->lin.sym;
    gp.mse = o->lin.mse;
    gp.damp_percent = o->damp_percent;
    gp.act_order = o->act_order;
    gp.static_groups = o->static_groups;
    gp.nsamples = (int64_t)(sq->S * sq->T);
    qp_gptq_stats gs;
    if (!*prep && (rc = qp_gptq_prepare(prep, H, cols, &gp, ctx->threads)) != 0) {
        qp_error_prefix("stage '%s': tensor '%s'", ctx->id, hf);
        goto done;
    }
    if ((rc = qp_gptq_quantize_prepared(&q, w, *prep, rows, cols, &gp, &gs, ctx->threads)) != 0) {
        qp_error_prefix("stage '%s': tensor '%s'", ctx->id, hf);
        goto done;
    }
    /* the source is not read again: Ŵ is written over it and handed over */
    if ((rc = qp_linear_dequantize(q, w)) != 0 ||
        (rc = qp_loaded_model_override_take(sq->lm, hf, &w, (uint64_t)(rows * cols))) != 0 ||
        (rc = qp_linear_serialize(q, &packed, &plen)) != 0 || (rc = collect_put(job, pp)) != 0)
        goto done;
    pp->name = qp_xstrdup(hf);
    pp->len = plen;
    pp->bpw = qp_linear_bits_per_weight(q);
    pp->fields = json_pack("{s:i, s:i, s:b, s:b, s:f, s:f}", "bits", gp.bits, "group_size", gp.group_size, "sym",
                           gp.sym, "act_order", gp.act_order, "damp", gs.damp_percent, "gptq_loss", gs.loss);
    rc = qp_bg_put_start(pp->put, packed, plen);   /* takes packed */
    packed = NULL;
done:
    qp_linear_free(q);
    free(packed);
    free(w);
    return rc;
}

/* The calibrate stage's H of one site of layer l (sequential: false),
 * checked against the model: a calibration of another model, or a damaged
 * entry, is an error, not an out-of-bounds read. */
static int stored_hessian(double **H, const qp_quant_seq *sq, int l, qp_llama_site site)
{
    qp_stage_ctx *ctx = sq->job->ctx;
    char name[96];
    snprintf(name, sizeof(name), "hessian/layers.%d.%s", l, qp_site_name(site));
    const json_t *he = qp_artifact_find(sq->job->calib, name);
    void *buf = NULL;
    size_t len = 0;
    if (!he)
        return qp_error_set(QP_EFORMAT, "stage '%s': calibration has no %s (calibrate with hessians: true, or use "
                                        "sequential: true)", ctx->id, name);
    int64_t d, d2;
    qp_qtensor_rows_cols(he, &d, &d2);
    const int64_t want = (int64_t)qp_site_dim(sq->hp, site);
    if (d != want || d2 != want)
        return qp_error_set(QP_EFORMAT, "stage '%s': calibration %s is [%lld x %lld], the model's inputs there are %lld "
                                        "wide; calibrate this model again", ctx->id, name, (long long)d,
                            (long long)d2, (long long)want);
    int rc = qp_cache_get(ctx->cache, qp_artifact_entry_digest(he), &buf, &len);
    if (rc)
        return rc;
    if (len != (size_t)(d * d) * sizeof(float)) {
        free(buf);
        return qp_error_set(QP_ECORRUPT, "stage '%s': calibration %s holds %zu bytes, not the %lld x %lld f32 its "
                                         "entry says; calibrate again (qpipe run --force=STAGE)",
                            ctx->id, name, len, (long long)d, (long long)d);
    }
    *H = qp_xmalloc((size_t)(d * d) * sizeof(double));
    for (int64_t i = 0; i < d * d; i++)
        (*H)[i] = ((const float *)buf)[i];
    free(buf);
    return 0;
}

/* true-sequential groups; without it, one group per layer */
static const qp_llama_site order[4] = {QP_SITE_QKV, QP_SITE_O, QP_SITE_GATE_UP, QP_SITE_DOWN};

/* The inputs of group g under the weights quantized so far (true_sequential),
 * or of all four groups from the layer as it was before any of its weights
 * were quantized (collected at g = 0). */
static int collect_inputs(const qp_quant_seq *sq, int l, int g, int true_seq, qp_site_stats *st)
{
    if (!true_seq && g > 0)
        return 0;
    for (int k = 0; k < 4; k++)
        if (!true_seq || order[k] == order[g])
            qp_site_stats_init(&st[order[k]], qp_site_dim(sq->hp, order[k]), 1);
    int rc = qp_llama_reload_layer(sq->m, l);
    if (rc == 0) {
        qp_site_filter f = {l, st};
        /* nothing past the last site collected is needed */
        rc = qp_quant_seq_observe_layer(sq, l, true_seq ? order[g] : QP_SITE_DOWN, qp_site_filter_observe, &f);
    }
    return rc;
}

static int gptq_layer(qp_quant_seq *sq, int l)
{
    const qp_qm_gptq_opts *o = sq->job->opts;
    qp_site_stats st[4];
    memset(st, 0, sizeof(st));
    pending_put pp = {0};
    int rc = qp_bg_put_new(&pp.put, sq->job->ctx->cache);
    for (int g = 0; g < 4 && rc == 0; g++) {
        qp_llama_site site = order[g];
        double *H = NULL;
        if (!o->sequential) {
            if ((rc = stored_hessian(&H, sq, l, site)) != 0)
                break;
        } else {
            if ((rc = collect_inputs(sq, l, g, o->true_sequential, st)) != 0)
                break;
            free(st[site].scratch);   /* the per-window product: not held beside H's copy */
            st[site].scratch = NULL;
            H = qp_site_hessian(&st[site]);
            if (o->true_sequential)
                qp_site_stats_free(&st[site]);
        }
        if (!H) {
            rc = qp_error_set(QP_ERROR, "internal: layer %d: no Hessian was collected for %s", l, qp_site_name(site));
            break;
        }
        const char *suffix[3];
        size_t nw = qp_site_weights(site, suffix);
        qp_gptq_prepared *prep = NULL;
        for (size_t k = 0; k < nw && rc == 0; k++) {
            char hf[160], mod[64];
            snprintf(mod, sizeof(mod), "%s.weight", suffix[k]);
            rc = gptq_one(sq, qp_hf_layer_name(hf, sizeof(hf), l, mod), H, &prep, &pp);
        }
        qp_gptq_prepared_free(prep);
        free(H);
        qp_progress_update(sq->job->ctx->progress, (uint64_t)(l * 4 + g + 1), (uint64_t)(sq->hp->n_layers * 4),
                           "groups");
    }
    /* the layer's last object stored before the layer counts as done (its
     * checkpoint lists every entry) */
    int prc = collect_put(sq->job, &pp);
    if (rc == 0)
        rc = prc;
    qp_bg_put_free(pp.put);
    for (int k = 0; k < 4; k++)
        qp_site_stats_free(&st[k]);
    if (rc == 0 && o->sequential)
        rc = qp_llama_reload_layer(sq->m, l);
    return rc;
}

static int gptq_run(qp_quant_job *job)
{
    const qp_qm_gptq_opts *o = job->opts;
    return qp_quant_sequential(job, o->sequential, 1, gptq_layer);
}

static const char *const card_keys[] = {"bits", "group_size", "sym", "act_order", "damp_percent", NULL};

const qp_quant_method qp_qm_gptq = {
    .name = "gptq", .doc = "GPTQ: Hessian-aware rounding, layer by layer on calibration windows",
    .flags = QP_QM_NEEDS_CALIB, .needs_calib = "needs a calibrate stage in needs:",
    .opts_size = sizeof(qp_qm_gptq_opts), .parse = gptq_parse, .plan = qp_qm_linear_plan, .run = gptq_run,
    .hints = {card_keys, qp_qm_linear_package_name, qp_qm_linear_gguf_file_type},
};
