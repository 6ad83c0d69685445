#include "stages/quant_seq.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "stages/layer_ckpt.h"

#include <stdlib.h>
#include <string.h>

int qp_quant_seq_run_layer(const qp_quant_seq *sq, int l, int advance, qp_llama_observe_fn obs, void *ud)
{
    for (size_t s = 0; s < sq->S; s++) {
        float *xs = sq->x + s * sq->T * sq->D;
        float *buf = advance ? xs : sq->scratch;
        if (!advance)
            memcpy(buf, xs, sq->T * sq->D * sizeof(float));
        int rc = qp_llama_layer(sq->m, l, buf, sq->T, obs, ud);
        if (rc)
            return rc;
    }
    return 0;
}

/* What the loop carries past layer l besides x: the tensors stored so far
 * and the method's report (AWQ's per-layer lines). */
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
    /* without `sequential` x stays the embedding: nothing to carry */
    size_t x_len = sequential ? sq->S * sq->T * sq->D * sizeof(float) : 0;
    int rc = qp_layer_ckpt_save(ck, l, state, sequential ? sq->x : NULL, x_len, refs, n);
    free(refs);
    json_decref(state);
    return rc;
}

typedef struct {
    qp_quant_seq *sq;
    int sequential;
} resume_ud;

/* A checkpoint's tensors, report and activations, taken only when all parse. */
static int load_layer(void *ud, int layer, const json_t *state, void **x)
{
    resume_ud *r = ud;
    (void)layer;
    qp_quant_job *job = r->sq->job;
    qp_quant_results *tmp = qp_quant_results_new();
    int rc = qp_quant_results_add_json(tmp, json_object_get(state, "tensors"), "its stored tensors");
    json_t *report = json_object_get(state, "report");
    if (rc == 0 && report && !json_is_array(report))
        rc = qp_error_set(QP_EFORMAT, "its report is not an array");
    if (rc == 0) {
        qp_quant_results_merge(job->results, tmp);
        json_decref(job->report);
        job->report = report ? json_deep_copy(report) : NULL;
        if (r->sequential) {
            free(r->sq->x);
            r->sq->x = *x;
            *x = NULL;
        }
    }
    qp_quant_results_free(tmp);
    return rc;
}

int qp_quant_sequential(qp_quant_job *job, int sequential, qp_quant_layer_fn layer_fn)
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
    sq.x = qp_xmalloc(sq.S * sq.T * sq.D * sizeof(float));
    sq.scratch = qp_xmalloc(sq.T * sq.D * sizeof(float));
    for (size_t s = 0; s < sq.S && rc == 0; s++)
        rc = qp_llama_embed(sq.m, samples + s * sq.T, sq.T, sq.x + s * sq.T * sq.D);
    ck = qp_layer_ckpt_new(ctx, job->method->name, sq.hp->n_layers);
    int start = 0;
    resume_ud ru = {&sq, sequential};
    if (rc == 0)
        rc = qp_layer_ckpt_resume(ck, sequential ? sq.S * sq.T * sq.D * sizeof(float) : 0, load_layer, &ru, &start);
    for (int l = start; l < sq.hp->n_layers && rc == 0; l++) {
        rc = layer_fn(&sq, l);
        /* the next layer sees this layer's quantized output */
        if (rc == 0 && sequential)
            rc = qp_quant_seq_run_layer(&sq, l, 1, NULL, NULL);
        if (rc == 0)
            rc = save_layer(ck, &sq, l, sequential);
    }
    if (rc == 0)
        qp_layer_ckpt_finish(ck);
done:
    qp_layer_ckpt_free(ck);
    free(sq.x);
    free(sq.scratch);
    free(samples);
    free(what);
    qp_loaded_model_free(sq.lm);
    return rc;
}
