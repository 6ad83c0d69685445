/* AWQ for one decoder layer, inside the calibrated driver (quant_seq.c):
 *   1. the layer's unquantized output y on calibration windows, and its
 *      product inputs (mean |x| per channel, a token sample for clipping);
 *   2. per scale group — q,k,v (after input_layernorm), o (after v_proj,
 *      only when no GQA makes the shapes differ), gate,up (after
 *      post_attention_layernorm), down (after up_proj) — the scale search
 *      of quant/awq.h with the loss = MSE of the WHOLE layer's output
 *      against y, the candidate weights installed in the model;
 *   3. the scales folded: W·diag(s), and the previous op divided by s;
 *   4. clip search (not for q/k), then RTN on the linear grid.
 * Results go to `res` like GPTQ's; the scaled norms are returned as dense
 * F32 tensors. */
#ifndef QP_STAGES_QUANT_AWQ_H
#define QP_STAGES_QUANT_AWQ_H

#include <jansson.h>
#include <stddef.h>

#include "stages/model_load.h"
#include "stages/quant_plan.h"
#include "stages/stage.h"

/* x: the layer's input windows [S, T, D] (unchanged). */
int qp_quant_awq_layer(qp_stage_ctx *ctx, qp_loaded_model *lm, const qp_artifact *model, const qp_quant_plan *plan,
                       int layer, const float *x, size_t S, size_t T, json_t *res);

#endif
