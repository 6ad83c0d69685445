#include "stages/quant_seq.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"

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

int qp_quant_sequential(qp_quant_job *job, int sequential, qp_quant_layer_fn layer_fn)
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
    sq.x = qp_xmalloc(sq.S * sq.T * sq.D * sizeof(float));
    sq.scratch = qp_xmalloc(sq.T * sq.D * sizeof(float));
    for (size_t s = 0; s < sq.S && rc == 0; s++)
        rc = qp_llama_embed(sq.m, samples + s * sq.T, sq.T, sq.x + s * sq.T * sq.D);
    for (int l = 0; l < sq.hp->n_layers && rc == 0; l++) {
        rc = layer_fn(&sq, l);
        /* the next layer sees this layer's quantized output */
        if (rc == 0 && sequential)
            rc = qp_quant_seq_run_layer(&sq, l, 1, NULL, NULL);
    }
done:
    free(sq.x);
    free(sq.scratch);
    free(samples);
    free(what);
    qp_loaded_model_free(sq.lm);
    return rc;
}
