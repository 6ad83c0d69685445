/* The calibrate stage's per-layer checkpoints (stages/layer_ckpt.h): after
 * layer l, the activations, every finished layer's sums (n, calls, Σ|x|,
 * Σx² per site, kept for the importance matrix) and the artifact entries
 * already stored for it (act_absmean, act_sqmean, hessian).  A resumed run
 * takes the sums and the entries back and goes on at layer l+1. */
#ifndef QP_STAGES_CALIB_CKPT_H
#define QP_STAGES_CALIB_CKPT_H

#include <stddef.h>

#include "stages/act_store.h"
#include "stages/calib_stats.h"
#include "stages/stage.h"

typedef struct qp_calib_ckpt qp_calib_ckpt;

/* cs: the stage's statistics (every site's sums allocated). */
qp_calib_ckpt *qp_calib_ckpt_new(qp_stage_ctx *ctx, qp_calib_stats *cs, const qp_llama_hparams *hp);
void qp_calib_ckpt_free(qp_calib_ckpt *cc);
/* *next = the first layer to run; acts (S windows of w floats) and cs and
 * ctx->output take a checkpoint's contents when there is one. */
int qp_calib_ckpt_resume(qp_calib_ckpt *cc, qp_act_store *acts, size_t S, size_t w, int *next);
/* Layer l is done (its entries added to ctx->output): saves the checkpoint. */
int qp_calib_ckpt_save(qp_calib_ckpt *cc, int l, qp_act_store *acts, size_t S, size_t w);
/* The stage finished: its checkpoints go. */
void qp_calib_ckpt_finish(qp_calib_ckpt *cc);

#endif
