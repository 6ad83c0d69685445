/* Per-layer checkpoints of the long layer-by-layer stages (GPTQ, AWQ,
 * mixed's sensitivities, calibrate), so a run that was killed resumes at
 * the first unfinished layer and ends with the bytes of an uninterrupted run.
 *
 * A checkpoint of layer l is everything the stage's loop carries from layer
 * l to l+1, in the cache:
 *   - the activations x after layer l ([windows, tokens, hidden] f32, the
 *     stage's qp_act_store), one cache object (zstd, written atomically like
 *     every object; a spilled store goes through a temp file window by
 *     window, so memory stays one window);
 *   - a manifest object (JSON): the stage key, the stage's name, l, the
 *     layer count, x's digest and size, and the stage's own state (the
 *     tensors stored so far, accumulated statistics, report lines);
 *   - a checkpoint entry (qp_cache_checkpoint_put) keyed by (format, stage
 *     key, name, l) naming the manifest, x and every object the state
 *     names, so gc keeps them while the checkpoint exists.
 * A checkpoint is found only through its own stage key: another key (other
 * params, inputs, version or numerics) never sees it.  Only the two newest
 * are kept: saving layer l drops layer l-2's entry and activations, so a
 * corrupt newest checkpoint falls back to the one before it.  When the stage
 * finishes it removes its checkpoints (qp_layer_ckpt_finish); entries left by
 * a stage that finished anyway are removed by `qpipe cache gc`.
 *
 * Test-only: QPIPE_TEST_KILL_AFTER_LAYER=N (or NAME:N, e.g. gptq:3) makes
 * the process raise SIGKILL right after saving layer N's checkpoint (of the
 * stage called NAME), so tests can kill a run at a known point. */
#ifndef QP_STAGES_LAYER_CKPT_H
#define QP_STAGES_LAYER_CKPT_H

#include <jansson.h>
#include <stddef.h>

#include "stages/act_store.h"
#include "stages/stage.h"

typedef struct qp_layer_ckpt qp_layer_ckpt;

/* name: the stage as messages call it ("gptq"); n_layers: the loop's
 * length.  Without a stage key (a stage called outside the runner) nothing
 * is saved or found. */
qp_layer_ckpt *qp_layer_ckpt_new(qp_stage_ctx *ctx, const char *name, int n_layers);
void qp_layer_ckpt_free(qp_layer_ckpt *ck);

/* Applies the checkpoint of `layer` (the last one it finished): the state
 * is the JSON the stage saved.  Returns 0, or an error (after qp_error_set)
 * when the state is unusable — then nothing may have changed: the next
 * older checkpoint is tried with the stage as it was. */
typedef int (*qp_layer_ckpt_load_fn)(void *ud, int layer, const json_t *state);

/* Finds the newest usable checkpoint, hands its state to load and, once
 * load took it, writes its activations into acts (S windows of w floats;
 * acts NULL: the stage carries none).  *next = the first layer not done (0
 * when there is none).  A checkpoint that cannot be used (an object missing
 * or corrupt, a manifest or activations that do not fit, load refusing it)
 * is discarded with one warning line on stderr and the one before it is
 * tried.  Resuming prints "NAME: resuming at layer N/L from checkpoint"
 * (stderr and the stage's progress) and records {"resumed": {"what",
 * "layer", "layers"}} in ctx->record for the run record. */
int qp_layer_ckpt_resume(qp_layer_ckpt *ck, qp_act_store *acts, size_t S, size_t w, qp_layer_ckpt_load_fn load,
                         void *ud, int *next);

/* Layer `layer` is finished: saves acts (S windows of w floats; NULL when
 * the stage carries none), state (borrowed) and refs (objects state names,
 * kept from gc), then drops the checkpoint of layer-2. */
int qp_layer_ckpt_save(qp_layer_ckpt *ck, int layer, const json_t *state, qp_act_store *acts, size_t S, size_t w,
                       const char *const *refs, size_t n_refs);

/* The stage finished: removes its checkpoints and their activations (best
 * effort: what is left is an entry gc removes). */
void qp_layer_ckpt_finish(qp_layer_ckpt *ck);

#endif
