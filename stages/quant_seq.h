/* The layer-by-layer driver of the calibrated methods (GPTQ, AWQ):
 *   x = embedding of the calibration windows (the calibrate artifact's
 *       "samples"), kept as [samples, seq_len, D] — one layer's activations;
 *   for each decoder layer, the method's layer step quantizes the layer's
 *   weights (storing them in job->results and serving the dequantized
 *   weights to the model); then, with `sequential`, x = the quantized
 *   layer's output (block i sees the already-quantized blocks before it).
 * The GPTQ step is in stages/qmethod_gptq.c, AWQ's in stages/quant_awq.c. */
#ifndef QP_STAGES_QUANT_SEQ_H
#define QP_STAGES_QUANT_SEQ_H

#include <stddef.h>

#include "model/llama.h"
#include "stages/act_store.h"
#include "stages/model_load.h"
#include "stages/qmethod.h"

typedef struct {
    qp_quant_job *job;
    qp_loaded_model *lm;
    qp_llama *m;
    const qp_llama_hparams *hp;
    float *x;          /* [S, T, D] the current layer's input windows; NULL when spilled */
    qp_act_store *acts;   /* where x lives (stages/act_store.h) */
    float *scratch;    /* [T, D] */
    size_t S, T, D;
} qp_quant_seq;

/* Quantizes decoder layer `layer`; leaves the model serving its quantized weights. */
typedef int (*qp_quant_layer_fn)(qp_quant_seq *sq, int layer);

/* may_spill: the layer step reads windows only through
 * qp_quant_seq_run_layer, so x may live on disk (GPTQ); 0 keeps x in memory
 * (AWQ reads sq->x directly). */
int qp_quant_sequential(qp_quant_job *job, int sequential, int may_spill, qp_quant_layer_fn layer_fn);
/* The same, then `then` (may be NULL) once every layer is done and
 * checkpointed, before the checkpoints are dropped (QAT's end-to-end phase:
 * a run killed there resumes past the last layer). */
int qp_quant_sequential_then(qp_quant_job *job, int sequential, int may_spill, qp_quant_layer_fn layer_fn,
                             int (*then)(qp_quant_job *job));

/* Runs layer l over every window of sq->x: in place when advance, else on a
 * copy (scratch) for the observer only. */
int qp_quant_seq_run_layer(const qp_quant_seq *sq, int l, int advance, qp_llama_observe_fn obs, void *ud);

/* Runs layer l over every window of sq->x as far as site `last`
 * (qp_llama_layer_observe), for the observer only; x is not changed. */
int qp_quant_seq_observe_layer(const qp_quant_seq *sq, int l, qp_llama_site last, qp_llama_observe_fn obs, void *ud);

#endif
