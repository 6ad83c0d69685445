/* Per-layer checkpoints of the long layer-by-layer stages (GPTQ, AWQ,
 * mixed's sensitivities, calibrate), so a run that was killed resumes at
 * the first unfinished layer and ends with the bytes of an uninterrupted run.
 *
 * A checkpoint of layer l is everything the stage's loop carries from layer
 * l to l+1, in the cache:
 *   - the activations x after layer l ([windows, tokens, hidden] f32), one
 *     cache object (zstd, written atomically like every object);
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

#include "stages/stage.h"

typedef struct qp_layer_ckpt qp_layer_ckpt;

/* name: the stage as messages call it ("gptq"); n_layers: the loop's
 * length.  Without a stage key (a stage called outside the runner) nothing
 * is saved or found. */
qp_layer_ckpt *qp_layer_ckpt_new(qp_stage_ctx *ctx, const char *name, int n_layers);
void qp_layer_ckpt_free(qp_layer_ckpt *ck);

/* Applies the checkpoint of `layer` (the last one it finished): the state
 * (the JSON the stage saved) and activations
 * (*x: malloc'ed, x_len bytes, NULL when x_len is 0; set *x = NULL to keep
 * them).  Returns 0, or an error (after qp_error_set) when the state is
 * unusable — then nothing may have changed: the next older checkpoint is
 * tried with the stage as it was. */
typedef int (*qp_layer_ckpt_load_fn)(void *ud, int layer, const json_t *state, void **x);

/* Finds the newest usable checkpoint and hands it to load; *next = the
 * first layer not done (0 when there is none: load was not called with a
 * checkpoint it accepted).  A checkpoint that cannot be used (an object
 * missing or corrupt, a manifest that does not fit, load refusing it) is
 * discarded with one warning line on stderr and the one before it is
 * tried.  Resuming prints "NAME: resuming at layer N/L from checkpoint"
 * (stderr and the stage's progress) and records {"resumed": {"what",
 * "layer", "layers"}} in ctx->record for the run record. */
int qp_layer_ckpt_resume(qp_layer_ckpt *ck, size_t x_len, qp_layer_ckpt_load_fn load, void *ud, int *next);

/* Layer `layer` is finished: saves x (x_len bytes; NULL and 0 when the
 * stage carries none), state (borrowed) and refs (objects state names,
 * kept from gc), then drops the checkpoint of layer-2. */
int qp_layer_ckpt_save(qp_layer_ckpt *ck, int layer, const json_t *state, const void *x, size_t x_len,
                       const char *const *refs, size_t n_refs);

/* The stage finished: removes its checkpoints and their activations (best
 * effort: what is left is an entry gc removes). */
void qp_layer_ckpt_finish(qp_layer_ckpt *ck);

#endif
