#include "stages/quant_seq.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "model/hf_names.h"

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

int qp_quant_sequential(qp_quant_job *job, int sequential, int may_spill, qp_quant_layer_fn layer_fn)
{
    qp_stage_ctx *ctx = job->ctx;
    qp_quant_seq sq = {.job = job};
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
    for (int l = 0; l < sq.hp->n_layers && rc == 0; l++) {
        rc = layer_fn(&sq, l);
        /* the next layer sees this layer's quantized output */
        if (rc == 0 && sequential)
            rc = qp_quant_seq_run_layer(&sq, l, 1, NULL, NULL);
        if (rc == 0)
            drop_layer_overrides(&sq, l);
    }
done:
    qp_act_store_free(sq.acts);
    free(sq.scratch);
    free(samples);
    free(what);
    qp_loaded_model_free(sq.lm);
    return rc;
}
