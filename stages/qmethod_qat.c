/* method qat: block-wise quantization-aware training (train/qat.h) through
 * the sequential driver (stages/quant_seq.h): for each decoder layer, the
 * layer's input windows come from the already-quantized layers before it;
 * the layer's seven linears start from RTN (or GPTQ, init: gptq) and their
 * rounding offsets, scales and zero points are trained by sign-SGD to make
 * the quantized block's output match the unquantized block's on those
 * windows.  The result is the linear (GPTQ-grid) format, so every export
 * of GPTQ applies.  Each stored tensor records bits, group_size, sym,
 * steps and the block's loss before and after training; the artifact's
 * report lists each layer's losses. */
#include "stages/qmethods.h"
#include "common/alloc.h"
#include "common/error.h"
#include "model/hf_names.h"
#include "model/llama_kernels.h"
#include "quant/gptq.h"
#include "quant/linear.h"
#include "stages/calib_stats.h"
#include "stages/qtensor.h"
#include "stages/quant_seq.h"
#include "train/e2e.h"
#include "train/qat.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int qat_parse(void *opts, const json_t *params, const char *where)
{
    qp_qm_qat_opts *o = opts;
    qp_qm_linear_parse(&o->lin, params);
    o->steps = (int)qp_param_int(params, "steps");
    o->lr = qp_param_num(params, "lr");
    if (o->lr == 0)
        o->lr = o->steps > 0 ? 1.0 / o->steps : 0;   /* AutoRound's default: 1/iters */
    o->batch = (int)qp_param_int(params, "batch");
    o->seed = (uint64_t)qp_param_int(params, "seed");
    o->init_gptq = strcmp(qp_param_str(params, "init"), "gptq") == 0;
    o->damp_percent = qp_param_num(params, "damp_percent");
    o->e2e_steps = (int)qp_param_int(params, "e2e_steps");
    o->e2e_lr = qp_param_num(params, "e2e_lr");
    if (qp_param_bool(params, "act_order") || qp_param_bool(params, "static_groups"))
        return qp_error_set(QP_EUSAGE, "%s: act_order and static_groups do not apply to method qat (its groups are "
                                       "consecutive columns, also with init: gptq); remove them", where);
    return 0;
}

static const char *const lin_suffix[QP_TL_COUNT] = {
    QP_HF_Q_PROJ, QP_HF_K_PROJ, QP_HF_V_PROJ, QP_HF_O_PROJ, QP_HF_GATE_PROJ, QP_HF_UP_PROJ, QP_HF_DOWN_PROJ,
};

/* The site whose input each linear reads. */
static qp_llama_site site_of(int i)
{
    return i <= QP_TL_V ? QP_SITE_QKV : i == QP_TL_O ? QP_SITE_O : i == QP_TL_DOWN ? QP_SITE_DOWN : QP_SITE_GATE_UP;
}

/* The forward pass's RoPE tables for positions 0..T-1 (malloc'ed [T, hd/2]). */
static void rope_tables(const qp_llama_hparams *hp, size_t T, float **cos_t, float **sin_t)
{
    const size_t half = (size_t)hp->head_dim / 2;
    float *inv = qp_xmalloc(half * sizeof(float));
    *cos_t = qp_xmalloc(T * half * sizeof(float));
    *sin_t = qp_xmalloc(T * half * sizeof(float));
    qp_llama_rope_inv_freq(hp, inv);
    qp_kern_rope_tables(*cos_t, *sin_t, T, hp->head_dim, inv);
    free(inv);
}

typedef struct {
    const qp_quant_seq *sq;
} input_ud;

static int read_input(void *ud, size_t s, float *dst)
{
    const qp_quant_seq *sq = ((input_ud *)ud)->sq;
    float *xs = NULL;
    int rc = qp_act_store_get(sq->acts, s, dst, &xs);
    if (rc == 0 && xs != dst)
        memcpy(dst, xs, sq->T * sq->D * sizeof(float));
    return rc;
}

typedef struct {
    qp_progress *progress;
    int layer, layers;
} progress_ud;

static void on_step(void *ud, int step, int steps, double loss)
{
    progress_ud *p = ud;
    qp_progress_update(p->progress, (uint64_t)p->layer * (uint64_t)steps + (uint64_t)step,
                       (uint64_t)p->layers * (uint64_t)steps, "steps");
    if (step == 1 || step % 10 == 0 || step == steps)
        qp_progress_note(p->progress, "layer %d/%d: step %d/%d, loss %.4g", p->layer + 1, p->layers, step, steps,
                         loss);
}

/* init: gptq — GPTQ of each linear from the Hessians of the layer's inputs
 * (the unquantized layer on the quantized layers' output: GPTQ with
 * true_sequential: false), the starting point of the training. */
static int gptq_init(qp_linear *init[QP_TL_COUNT], const qp_quant_seq *sq, int l, const qp_qat_block *blk,
                     const qp_qm_qat_opts *o)
{
    qp_stage_ctx *ctx = sq->job->ctx;
    qp_site_stats st[4];
    memset(st, 0, sizeof(st));
    for (int k = 0; k < 4; k++)
        qp_site_stats_init(&st[k], qp_site_dim(sq->hp, (qp_llama_site)k), 1);
    qp_site_filter f = {l, st};
    int rc = qp_quant_seq_observe_layer(sq, l, QP_SITE_DOWN, qp_site_filter_observe, &f);
    for (int k = 0; k < 4 && rc == 0; k++) {
        double *H = qp_site_hessian(&st[k]);
        qp_gptq_prepared *prep = NULL;
        for (int i = 0; i < QP_TL_COUNT && rc == 0; i++) {
            if (site_of(i) != (qp_llama_site)k || blk->bits[i] == 0)
                continue;
            size_t rows, cols;
            qp_tblock_linear_dims(&blk->shape, i, &rows, &cols);
            qp_gptq_params gp;
            qp_gptq_params_default(&gp);
            gp.bits = blk->bits[i];
            gp.group_size = o->lin.group_size;
            gp.sym = o->lin.sym;
            gp.mse = o->lin.mse;
            gp.damp_percent = o->damp_percent;
            gp.nsamples = (int64_t)(sq->S * sq->T);
            qp_gptq_stats gs;
            if (!prep)
                rc = qp_gptq_prepare(&prep, H, (int64_t)cols, &gp, ctx->threads);
            if (rc == 0)
                rc = qp_gptq_quantize_prepared(&init[i], blk->fp.w[i], prep, (int64_t)rows, (int64_t)cols, &gp, &gs,
                                               ctx->threads);
            if (rc) {
                char hf[160], mod[64];
                snprintf(mod, sizeof(mod), "%s.weight", lin_suffix[i]);
                qp_error_prefix("stage '%s': tensor '%s': init: gptq", ctx->id,
                                qp_hf_layer_name(hf, sizeof(hf), l, mod));
            }
        }
        qp_gptq_prepared_free(prep);
        free(H);
    }
    for (int k = 0; k < 4; k++)
        qp_site_stats_free(&st[k]);
    return rc;
}

static int store_result(qp_quant_job *job, const char *hf, qp_linear *q, const qp_qm_qat_opts *o,
                        const qp_qat_stats *qs)
{
    void *packed = NULL;
    size_t plen = 0;
    char digest[QP_HEX_LEN];
    int rc = qp_linear_serialize(q, &packed, &plen);
    if (rc == 0)
        rc = qp_cache_put(job->ctx->cache, packed, plen, digest);
    free(packed);
    if (rc)
        return rc;
    qp_linear_view v;
    qp_linear_view_of(q, &v);
    json_t *fields = json_pack("{s:i, s:i, s:b, s:i, s:f, s:f}", "bits", v.bits, "group_size", v.group_size_given,
                               "sym", v.sym, "qat_steps", o->steps, "qat_loss_init", qs->loss_init, "qat_loss",
                               qs->loss_final);
    qp_quant_results_put(job->results, hf, digest, plen, qp_linear_bits_per_weight(q), fields);
    return 0;
}

static int qat_layer(qp_quant_seq *sq, int l)
{
    qp_quant_job *job = sq->job;
    qp_stage_ctx *ctx = job->ctx;
    const qp_qm_qat_opts *o = job->opts;
    const qp_llama_hparams *hp = sq->hp;
    float *w[QP_TL_COUNT] = {0}, *bias[3] = {0}, *norm[2] = {0};
    qp_linear *init[QP_TL_COUNT] = {0}, *out[QP_TL_COUNT] = {0};
    float *cos_t = NULL, *sin_t = NULL;
    char hf[160], mod[64];
    int rc = 0;
    qp_qat_block blk;
    memset(&blk, 0, sizeof(blk));
    blk.shape = (qp_tblock_shape){hp->hidden, hp->n_heads, hp->n_kv_heads, hp->head_dim, hp->intermediate,
                                  (double)hp->rms_eps};
    for (int i = 0; i < QP_TL_COUNT && rc == 0; i++) {
        int64_t rows, cols;
        snprintf(mod, sizeof(mod), "%s.weight", lin_suffix[i]);
        qp_hf_layer_name(hf, sizeof(hf), l, mod);
        if ((rc = qp_model_artifact_tensor_f32(&w[i], &rows, &cols, job->model, ctx->cache, hf, ctx->id)) != 0)
            break;
        size_t er, ec;
        qp_tblock_linear_dims(&blk.shape, i, &er, &ec);
        if ((size_t)rows != er || (size_t)cols != ec) {
            rc = qp_error_set(QP_EFORMAT, "stage '%s': tensor '%s' is [%lld x %lld], config.json makes it [%zu x %zu]",
                              ctx->id, hf, (long long)rows, (long long)cols, er, ec);
            break;
        }
        qp_tensor_plan tp;
        if ((rc = qp_quant_plan_tensor(&tp, &job->plan, hf, 2, rows, cols)) != 0) {
            qp_error_prefix("stage '%s'", ctx->id);
            break;
        }
        blk.bits[i] = tp.kind == QP_TP_LINEAR ? tp.bits : 0;   /* others: the main loop encodes them */
        blk.fp.w[i] = w[i];
    }
    for (int i = 0; i < 3 && rc == 0 && hp->qkv_bias; i++) {
        int64_t rows, cols;
        snprintf(mod, sizeof(mod), "%s.bias", lin_suffix[i]);
        rc = qp_model_artifact_tensor_f32(&bias[i], &rows, &cols, job->model, ctx->cache,
                                          qp_hf_layer_name(hf, sizeof(hf), l, mod), ctx->id);
        blk.fp.bias[i] = bias[i];
    }
    const char *norms[2] = {QP_HF_ATTN_NORM ".weight", QP_HF_FFN_NORM ".weight"};
    for (int i = 0; i < 2 && rc == 0; i++) {
        int64_t rows, cols;
        rc = qp_model_artifact_tensor_f32(&norm[i], &rows, &cols, job->model, ctx->cache,
                                          qp_hf_layer_name(hf, sizeof(hf), l, norms[i]), ctx->id);
    }
    if (rc)
        goto done;
    blk.fp.norm_attn = norm[0];
    blk.fp.norm_ffn = norm[1];
    rope_tables(hp, sq->T, &cos_t, &sin_t);
    input_ud iud = {sq};
    progress_ud pud = {ctx->progress, l, hp->n_layers};
    blk.S = sq->S;
    blk.T = sq->T;
    blk.cos_t = cos_t;
    blk.sin_t = sin_t;
    blk.input = read_input;
    blk.input_ud = &iud;
    blk.progress = on_step;
    blk.progress_ud = &pud;
    if (o->init_gptq) {
        if ((rc = gptq_init(init, sq, l, &blk, o)) != 0)
            goto done;
        for (int i = 0; i < QP_TL_COUNT; i++)
            blk.init[i] = init[i];
    }
    qp_qat_params qpp = {.group_size = o->lin.group_size, .sym = o->lin.sym, .mse = o->lin.mse, .steps = o->steps,
                         .lr = o->lr, .batch = o->batch, .seed = o->seed + (uint64_t)l, .n_threads = ctx->threads};
    qp_qat_stats qs;
    if ((rc = qp_qat_block_run(out, &qs, &blk, &qpp)) != 0) {
        if (qs.bad_linear >= 0) {
            snprintf(mod, sizeof(mod), "%s.weight", lin_suffix[qs.bad_linear]);
            qp_error_prefix("stage '%s': tensor '%s'", ctx->id, qp_hf_layer_name(hf, sizeof(hf), l, mod));
        } else
            qp_error_prefix("stage '%s': layer %d", ctx->id, l);
        goto done;
    }
    for (int i = 0; i < QP_TL_COUNT && rc == 0; i++) {
        if (!out[i])
            continue;
        snprintf(mod, sizeof(mod), "%s.weight", lin_suffix[i]);
        qp_hf_layer_name(hf, sizeof(hf), l, mod);
        qp_linear_view v;
        qp_linear_view_of(out[i], &v);
        if ((rc = store_result(job, hf, out[i], o, &qs)) != 0 || (rc = qp_linear_dequantize(out[i], w[i])) != 0 ||
            (rc = qp_loaded_model_override_take(sq->lm, hf, &w[i], (uint64_t)(v.rows * v.cols))) != 0)
            break;
    }
    if (rc == 0) {
        if (!job->report)
            job->report = json_array();
        json_array_append_new(job->report, json_pack("{s:i, s:f, s:f, s:b}", "layer", l, "loss_init", qs.loss_init,
                                                     "loss", qs.loss_final, "kept_init", qs.kept_init));
        qp_progress_note(ctx->progress, "layer %d/%d: block MSE %.4g -> %.4g%s", l + 1, hp->n_layers, qs.loss_init,
                         qs.loss_final, qs.kept_init ? " (kept the init)" : "");
        /* the next layer's input comes from the quantized weights */
        rc = qp_llama_reload_layer(sq->m, l);
    }
done:
    for (int i = 0; i < QP_TL_COUNT; i++) {
        free(w[i]);
        qp_linear_free(init[i]);
        qp_linear_free(out[i]);
    }
    for (int i = 0; i < 3; i++)
        free(bias[i]);
    free(norm[0]);
    free(norm[1]);
    free(cos_t);
    free(sin_t);
    return rc;
}

/* ---- the end-to-end phase (train/e2e.h) over the block-wise result ---- */

typedef struct {
    qp_e2e_model m;
    qp_e2e_layer *layers;
    float **owned;        /* every f32 tensor loaded */
    size_t n_owned;
    int32_t *samples;
    float *cos_t, *sin_t;
} e2e_inputs;

static int load_f32(e2e_inputs *in, const qp_quant_job *job, const char *hf, const float **out)
{
    int64_t rows, cols;
    float *w = NULL;
    int rc = qp_model_artifact_tensor_f32(&w, &rows, &cols, job->model, job->ctx->cache, hf, job->ctx->id);
    if (rc)
        return rc;
    in->owned = qp_xrealloc(in->owned, (in->n_owned + 1) * sizeof(*in->owned));
    in->owned[in->n_owned++] = w;
    *out = w;
    return 0;
}

static void e2e_inputs_free(e2e_inputs *in)
{
    for (size_t i = 0; i < in->n_owned; i++)
        free(in->owned[i]);
    free(in->owned);
    for (int l = 0; in->layers && l < in->m.n_layers; l++)
        for (int i = 0; i < QP_TL_COUNT; i++)
            qp_linear_free(in->layers[l].lin[i]);
    free(in->layers);
    free(in->samples);
    free(in->cos_t);
    free(in->sin_t);
}

static int e2e_load(e2e_inputs *in, qp_quant_job *job, const qp_llama_hparams *hp)
{
    qp_stage_ctx *ctx = job->ctx;
    int64_t S, T;
    int rc = qp_calib_samples_load(&in->samples, &S, &T, ctx, job->calib, hp->max_pos, 2);
    if (rc)
        return rc;
    qp_e2e_model *m = &in->m;
    m->shape = (qp_tblock_shape){hp->hidden, hp->n_heads, hp->n_kv_heads, hp->head_dim, hp->intermediate,
                                 (double)hp->rms_eps};
    m->n_layers = hp->n_layers;
    m->vocab = hp->vocab;
    m->tokens = in->samples;
    m->S = (size_t)S;
    m->T = (size_t)T;
    rope_tables(hp, m->T, &in->cos_t, &in->sin_t);
    m->cos_t = in->cos_t;
    m->sin_t = in->sin_t;
    for (int32_t k = 0; k < (int32_t)(S * T); k++)
        if (in->samples[k] < 0 || in->samples[k] >= hp->vocab)
            return qp_error_set(QP_ECORRUPT, "stage '%s': calibration token %d is outside the vocabulary of %d",
                                ctx->id, in->samples[k], hp->vocab);
    if ((rc = load_f32(in, job, QP_HF_EMBED, &m->embed)) != 0 ||
        (rc = load_f32(in, job, QP_HF_FINAL_NORM, &m->final_norm)) != 0)
        return rc;
    if (hp->tied_embeddings)
        m->lm_head = m->embed;
    else if ((rc = load_f32(in, job, QP_HF_LM_HEAD, &m->lm_head)) != 0)
        return rc;
    in->layers = qp_xcalloc((size_t)hp->n_layers, sizeof(*in->layers));
    m->layers = in->layers;
    char hf[160], mod[64];
    for (int l = 0; l < hp->n_layers && rc == 0; l++) {
        qp_e2e_layer *L = &in->layers[l];
        if ((rc = load_f32(in, job, qp_hf_layer_name(hf, sizeof(hf), l, QP_HF_ATTN_NORM ".weight"),
                           &L->fp.norm_attn)) != 0 ||
            (rc = load_f32(in, job, qp_hf_layer_name(hf, sizeof(hf), l, QP_HF_FFN_NORM ".weight"),
                           &L->fp.norm_ffn)) != 0)
            break;
        for (int i = 0; i < 3 && rc == 0 && hp->qkv_bias; i++) {
            snprintf(mod, sizeof(mod), "%s.bias", lin_suffix[i]);
            rc = load_f32(in, job, qp_hf_layer_name(hf, sizeof(hf), l, mod), &L->fp.bias[i]);
        }
        for (int i = 0; i < QP_TL_COUNT && rc == 0; i++) {
            snprintf(mod, sizeof(mod), "%s.weight", lin_suffix[i]);
            qp_hf_layer_name(hf, sizeof(hf), l, mod);
            const qp_quant_stored *qs = qp_quant_results_get(job->results, hf);
            if (!qs) {
                rc = load_f32(in, job, hf, &L->fp.w[i]);
                continue;
            }
            void *buf = NULL;
            size_t len = 0;
            if ((rc = qp_cache_get(ctx->cache, qs->digest, &buf, &len)) == 0)
                rc = qp_linear_deserialize(&L->lin[i], buf, len, hf);
            free(buf);
        }
    }
    return rc;
}

static void on_e2e_step(void *ud, int step, int steps, double loss)
{
    qp_progress *p = ud;
    qp_progress_update(p, (uint64_t)step, (uint64_t)steps, "e2e steps");
    if (step == 1 || step % 10 == 0 || step == steps)
        qp_progress_note(p, "end-to-end: step %d/%d, loss %.4f", step, steps, loss);
}

static int qat_e2e(qp_quant_job *job)
{
    const qp_qm_qat_opts *o = job->opts;
    qp_stage_ctx *ctx = job->ctx;
    qp_llama_hparams hp;
    qp_llama_hparams_from_config(&hp, &job->cfg);
    e2e_inputs in;
    memset(&in, 0, sizeof(in));
    int rc = e2e_load(&in, job, &hp);
    if (rc)
        goto done;
    in.m.progress = on_e2e_step;
    in.m.progress_ud = ctx->progress;
    qp_e2e_params p = {.steps = o->e2e_steps, .batch = o->batch, .n_threads = ctx->threads, .lr = o->e2e_lr,
                       .seed = o->seed};
    qp_e2e_stats es;
    if ((rc = qp_e2e_run(&es, &in.m, &p)) != 0) {
        qp_error_prefix("stage '%s': end-to-end phase", ctx->id);
        goto done;
    }
    qp_progress_note(ctx->progress, "end-to-end: next-token loss %.5f -> %.5f%s", es.loss_init, es.loss_final,
                     es.kept_init ? " (kept the block-wise scales)" : "");
    if (!job->report)
        job->report = json_array();
    json_array_append_new(job->report, json_pack("{s:s, s:i, s:f, s:f, s:b}", "phase", "e2e", "steps", o->e2e_steps,
                                                 "loss_init", es.loss_init, "loss", es.loss_final, "kept_init",
                                                 es.kept_init));
    char hf[160], mod[64];
    for (int l = 0; l < hp.n_layers && rc == 0 && !es.kept_init; l++)
        for (int i = 0; i < QP_TL_COUNT && rc == 0; i++) {
            qp_linear *q = in.layers[l].lin[i];
            if (!q)
                continue;
            snprintf(mod, sizeof(mod), "%s.weight", lin_suffix[i]);
            qp_hf_layer_name(hf, sizeof(hf), l, mod);
            const qp_quant_stored *old = qp_quant_results_get(job->results, hf);
            json_t *fields = json_deep_copy(old->fields);
            void *packed = NULL;
            size_t plen = 0;
            char digest[QP_HEX_LEN];
            if ((rc = qp_linear_validate(q, hf)) == 0 && (rc = qp_linear_serialize(q, &packed, &plen)) == 0)
                rc = qp_cache_put(ctx->cache, packed, plen, digest);
            free(packed);
            if (rc) {
                json_decref(fields);
                break;
            }
            json_object_set_new(fields, "qat_e2e_steps", json_integer(o->e2e_steps));
            qp_quant_results_put(job->results, hf, digest, plen, qp_linear_bits_per_weight(q), fields);
        }
done:
    e2e_inputs_free(&in);
    return rc;
}

static int qat_run(qp_quant_job *job)
{
    const qp_qm_qat_opts *o = job->opts;
    /* the end-to-end loss needs two tokens a window: calibrate's seq_len is
     * at least 2, and e2e_load asks for that again */
    return qp_quant_sequential_then(job, 1, 1, qat_layer, o->e2e_steps > 0 ? qat_e2e : NULL);
}

/* the per-block losses and the end-to-end phase's cross-entropy */
static void qat_describe(const qp_quant_job *job, qp_artifact *out)
{
    if (job->report)
        json_object_set(qp_artifact_meta(out), "qat", job->report);
}

static const char *const card_keys[] = {"bits", "group_size", "sym", "steps", "lr", "batch", "init", "e2e_steps",
                                        NULL};

const qp_quant_method qp_qm_qat = {
    .name = "qat",
    .doc = "quantization-aware training: block-wise sign-SGD of rounding, scales and zero points (AutoRound-style)",
    .flags = QP_QM_NEEDS_CALIB, .needs_calib = "needs a calibrate stage in needs:",
    .opts_size = sizeof(qp_qm_qat_opts), .parse = qat_parse, .plan = qp_qm_linear_plan, .run = qat_run,
    .describe = qat_describe, .hints = {card_keys, qp_qm_linear_package_name, qp_qm_linear_gguf_file_type},
};
