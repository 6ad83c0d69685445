/* Calibrated quantization of the linear layers, block by block (GPTQ now,
 * AWQ through the same driver):
 *   x = embedding of the calibration windows (the calibrate artifact's
 *       "samples"), kept as [samples, seq_len, D] — one layer's activations;
 *   for each decoder layer, in true-sequential order (q,k,v → o → gate,up →
 *   down): run the layer with the weights quantized so far, collect H of
 *   the group's input, quantize the group, serve its dequantized weights;
 *   then x = the quantized layer's output (sequential: block i sees the
 *   already-quantized blocks before it).
 * With sequential: false the calibrate stage's Hessians (unquantized model)
 * are used directly.  Results: every quantized tensor's serialised
 * qp_linear, stored in the cache, in `out` as
 * {hf_name: {"digest", "size", "bpw", "bits", "group_size", "sym", "act_order", "damp"}}. */
#ifndef QP_STAGES_QUANT_SEQ_H
#define QP_STAGES_QUANT_SEQ_H

#include <jansson.h>

#include "stages/quant_plan.h"
#include "stages/stage.h"

int qp_quant_sequential(json_t **out, qp_stage_ctx *ctx, const qp_artifact *model, const qp_artifact *calib,
                        const qp_quant_plan *plan);

#endif
