/* The calibrate stage's collection, layer by layer: every window's
 * embedding x [S, T, D] goes through layer 0, then layer 1, …, collecting
 * the statistics of each layer's sites on the way (the same sums, in the
 * same order, as one forward pass per window).  A layer's Hessians are
 * stored in the cache (f32, as the artifact keeps them) as soon as the layer
 * is done and its double accumulators freed, so one layer's Σ x xᵀ is in
 * memory at a time; after each layer a checkpoint (stages/layer_ckpt.h)
 * keeps x and the statistics so far, and a killed run resumes there. */
#ifndef QP_STAGES_CALIB_LAYERS_H
#define QP_STAGES_CALIB_LAYERS_H

#include <stddef.h>
#include <stdint.h>

#include "common/hash.h"
#include "model/llama.h"
#include "stages/calib_stats.h"
#include "stages/stage.h"

/* windows [S, T] token ids.  Fills cs (initialised here; free with
 * qp_calib_stats_free) with n, calls, abs_sum and sq_sum of every site and,
 * with hessians, (*hess)[layer * 4 + site] = the digest of that site's
 * H = 2/n Σ x xᵀ as f32 [dim, dim] (malloc'ed; NULL without hessians). */
int qp_calib_collect_layers(qp_stage_ctx *ctx, qp_llama *m, const int32_t *windows, size_t S, size_t T,
                            int hessians, qp_calib_stats *cs, char (**hess)[QP_HEX_LEN]);

#endif
