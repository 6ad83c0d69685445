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
 * Results go to job->results like GPTQ's; the scaled norms are stored as
 * dense F32 tensors; each layer's search numbers are appended to job->report
 * (the artifact's "awq" metadata). */
#ifndef QP_STAGES_QUANT_AWQ_H
#define QP_STAGES_QUANT_AWQ_H

#include "stages/quant_seq.h"

/* One layer step of the sequential driver; sq->x: the layer's input windows (unchanged). */
int qp_quant_awq_layer(qp_quant_seq *sq, int layer);

#endif
