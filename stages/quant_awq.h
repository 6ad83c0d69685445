/* AWQ for one decoder layer, inside the calibrated driver (quant_seq.c):
 *   1. the layer's unquantized output y on calibration windows, and its
 *      product inputs (mean |x| per channel, a token sample for clipping);
 *   2. per scale group — q,k,v (after input_layernorm), o (after v_proj,
 *      only when no GQA makes the shapes differ), gate,up (after
 *      post_attention_layernorm), down (after up_proj) — the scale search
 *      of quant/awq.h with the loss = MSE of the WHOLE layer's output
 *      against y, the candidate weights installed in the model;
 *   3. the scales folded: W·diag(s), and the previous op divided by s
 *      (a norm's weight, or a product's rows — and v_proj's bias with its
 *      rows in Qwen2-style models; the q/k/v biases after a norm are left
 *      as they are, since (W·diag(s))·(x/s) + b = W·x + b);
 *   4. clip search (not for q/k), then RTN on the linear grid.
 * A group is searched only when its members and its previous product are
 * all quantized here (plan linear): one that `skip:` or `override:` hands to
 * the quantize loop is written from its unscaled source, so the group keeps
 * s = 1.
 * Results go to job->results like GPTQ's; the scaled norms (and a scaled
 * v_proj bias) are stored as dense F32 tensors, every other bias keeps its
 * source object; each layer's search numbers are appended to job->report
 * (the artifact's "awq" metadata). */
#ifndef QP_STAGES_QUANT_AWQ_H
#define QP_STAGES_QUANT_AWQ_H

#include "stages/quant_seq.h"

/* One layer step of the sequential driver; sq->x: the layer's input windows (unchanged). */
int qp_quant_awq_layer(qp_quant_seq *sq, int layer);

#endif
