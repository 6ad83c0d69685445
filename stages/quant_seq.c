#include "stages/quant_seq.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "model/hf_names.h"
#include "stages/layer_ckpt.h"

#include <stdlib.h>
#include <string.h>

int qp_quant_seq_run_layer(const qp_quant_seq *sq, int l, int advance, qp_llama_observe_fn obs, void *ud)
{
    for (size_t s = 0; s < sq->S; s++) {
        float *xs = NULL;
        int rc = qp_act_store_get(sq->acts, s, sq->scratch, &xs);
        if (rc)
            return rc;
        float *buf = advance ? xs : sq->scratch;
        if (buf != xs)
            memcpy(buf, xs, sq->T * sq->D * sizeof(float));
        if ((rc = qp_llama_layer(sq->m, l, buf, sq->T, obs, ud)) != 0)
            return rc;
        if (advance && (rc = qp_act_store_put(sq->acts, s, buf)) != 0)
            return rc;
    }
    return 0;
}

int qp_quant_seq_observe_layer(const qp_quant_seq *sq, int l, qp_llama_site last, qp_llama_observe_fn obs, void *ud)
{
    for (size_t s = 0; s < sq->S; s++) {
        float *xs = NULL;
        int rc = qp_act_store_get(sq->acts, s, sq->scratch, &xs);
        if (rc == 0)
            rc = qp_llama_layer_observe(sq->m, l, xs, sq->T, last, obs, ud);
        if (rc)
            return rc;
    }
    return 0;
}

/* Every tensor of a layer a method may serve changed (GPTQ: the quantized
 * linears; AWQ: also the scaled norms and v_proj's bias). */
static const char *const layer_suffix[] = {
    QP_HF_Q_PROJ ".weight",    QP_HF_K_PROJ ".weight",   QP_HF_V_PROJ ".weight",    QP_HF_O_PROJ ".weight",
    QP_HF_GATE_PROJ ".weight", QP_HF_UP_PROJ ".weight",  QP_HF_DOWN_PROJ ".weight", QP_HF_ATTN_NORM ".weight",
    QP_HF_FFN_NORM ".weight",  QP_HF_Q_PROJ ".bias",     QP_HF_K_PROJ ".bias",      QP_HF_V_PROJ ".bias",
};

/* Layer l is done: nothing reads its weights again (later layers start
 * from x), so the f32 copies served for it are freed.  Kept, they added up
 * to the whole model in f32 (27 GB for a 7B model); now one layer's. */
static void drop_layer_overrides(qp_quant_seq *sq, int l)
{
    char name[160];
    for (size_t i = 0; i < sizeof(layer_suffix) / sizeof(layer_suffix[0]); i++)
        qp_loaded_model_restore(sq->lm, qp_hf_layer_name(name, sizeof(name), l, layer_suffix[i]));
}

/* What the loop carries past layer l besides x: the tensors stored so far
 * and the method's report (AWQ's per-layer lines).  Without `sequential`
 * x stays the embedding: no activations are saved. */
static int save_layer(qp_layer_ckpt *ck, const qp_quant_seq *sq, int l, int sequential)
{
    const qp_quant_job *job = sq->job;
    json_t *tensors = qp_quant_results_json(job->results);
    json_t *state = json_pack("{s:o}", "tensors", tensors);
    if (job->report)
        json_object_set(state, "report", job->report);
    size_t n = json_object_size(tensors), i = 0;
    const char **refs = qp_xcalloc(n ? n : 1, sizeof(*refs));
    const char *name;
    json_t *e;
    json_object_foreach(tensors, name, e)
        refs[i++] = json_string_value(json_object_get(e, "digest"));
    int rc = qp_layer_ckpt_save(ck, l, state, sequential ? sq->acts : NULL, sq->S, sq->T * sq->D, refs, n);
    free(refs);
    json_decref(state);
    return rc;
}

/* A checkpoint's tensors and report, taken only when all parse. */
static int load_layer(void *ud, int layer, const json_t *state)
{
    qp_quant_job *job = ud;
    (void)layer;
    qp_quant_results *tmp = qp_quant_results_new();
    int rc = qp_quant_results_add_json(tmp, json_object_get(state, "tensors"), "its stored tensors");
    json_t *report = json_object_get(state, "report");
    if (rc == 0 && report && !json_is_array(report))
        rc = qp_error_set(QP_EFORMAT, "its report is not an array");
    if (rc == 0) {
        qp_quant_results_merge(job->results, tmp);
        json_decref(job->report);
        job->report = report ? json_deep_copy(report) : NULL;
    }
    qp_quant_results_free(tmp);
    return rc;
}

int qp_quant_sequential(qp_quant_job *job, int sequential, int may_spill, qp_quant_layer_fn layer_fn)
{
    return qp_quant_sequential_then(job, sequential, may_spill, layer_fn, NULL);
}

int qp_quant_sequential_then(qp_quant_job *job, int sequential, int may_spill, qp_quant_layer_fn layer_fn,
                             int (*then)(qp_quant_job *job))
{
    qp_stage_ctx *ctx = job->ctx;
    qp_quant_seq sq = {.job = job};
    qp_layer_ckpt *ck = NULL;
    int32_t *samples = NULL;
    char *what = qp_strfmt("stage '%s': input '%s'", ctx->id, ctx->input_ids[0]);
    int rc = qp_loaded_model_open(&sq.lm, job->model, ctx->cache, ctx->threads, what);
    if (rc)
        goto done;
    sq.m = qp_loaded_model_llama(sq.lm);
    sq.hp = qp_llama_get_hparams(sq.m);
    int64_t S, T;
    if ((rc = qp_calib_samples_load(&samples, &S, &T, ctx, job->calib, sq.hp->max_pos, 1)) != 0)
        goto done;
    sq.S = (size_t)S;
    sq.T = (size_t)T;
    sq.D = (size_t)sq.hp->hidden;
    sq.scratch = qp_xmalloc(sq.T * sq.D * sizeof(float));
    if ((rc = qp_act_store_new(&sq.acts, ctx->cache, sq.S, sq.T * sq.D, may_spill, what)) != 0)
        goto done;
    sq.x = qp_act_store_data(sq.acts);
    if (qp_act_store_spilled(sq.acts))
        qp_progress_note(ctx->progress, "activations spilled to disk: %zu x %zu x %zu f32 exceed QPIPE_ACT_MEM", sq.S,
                         sq.T, sq.D);
    for (size_t s = 0; s < sq.S && rc == 0; s++) {
        float *xs = qp_act_store_slot(sq.acts, s, sq.scratch);
        if ((rc = qp_llama_embed(sq.m, samples + s * sq.T, sq.T, xs)) == 0)
            rc = qp_act_store_put(sq.acts, s, xs);
    }
    /* a killed run's checkpoint: its tensors, report and x (stages/layer_ckpt.h) */
    ck = qp_layer_ckpt_new(ctx, job->method->name, sq.hp->n_layers);
    int start = 0;
    if (rc == 0)
        rc = qp_layer_ckpt_resume(ck, sequential ? sq.acts : NULL, sq.S, sq.T * sq.D, load_layer, job, &start);
    for (int l = start; l < sq.hp->n_layers && rc == 0; l++) {
        rc = layer_fn(&sq, l);
        /* the next layer sees this layer's quantized output */
        if (rc == 0 && sequential)
            rc = qp_quant_seq_run_layer(&sq, l, 1, NULL, NULL);
        if (rc == 0)
            drop_layer_overrides(&sq, l);
        if (rc == 0)
            rc = save_layer(ck, &sq, l, sequential);
    }
    /* after the last layer's checkpoint, before it is dropped: a run killed
     * here resumes with every layer done and runs only `then` again */
    if (rc == 0 && then)
        rc = then(job);
    if (rc == 0)
        qp_layer_ckpt_finish(ck);
done:
    qp_layer_ckpt_free(ck);
    qp_act_store_free(sq.acts);
    free(sq.scratch);
    free(samples);
    free(what);
    qp_loaded_model_free(sq.lm);
    return rc;
}
