/* Opens a model artifact from the cache for inference: hyper-parameters
 * from its config.json, its tokenizer (files/tokenizer.json with
 * files/tokenizer_config.json when present, else files/tokenizer.model),
 * and a weight source that reads each
 * tensor object on demand (verified; converted to f32 by rows, one product
 * group or lm_head chunk at a time: stages/qtensor.h). */
#ifndef QP_STAGES_MODEL_LOAD_H
#define QP_STAGES_MODEL_LOAD_H

#include "cache/cache.h"
#include "model/config.h"
#include "model/llama.h"
#include "model/tokenizer.h"
#include "artifact/artifact.h"
#include "stages/stage.h"

typedef struct qp_loaded_model qp_loaded_model;

/* Stored bytes a resident model (qp_loaded_model_open_resident) keeps in
 * memory at most, the tensors outside the layers aside: a third of
 * physical memory.  Exposed for qpipe plan --estimate. */
size_t qp_loaded_model_resident_cap(void);

/* what: the stage/input name for messages ("stage 'base': input 'model'"). */
int qp_loaded_model_open(qp_loaded_model **out, const qp_artifact *a, qp_cache *cache, int threads,
                         const char *what);
/* The same, keeping every tensor's stored bytes (bf16, ggml blocks, packed
 * codes) in memory after its first read, up to a third of physical memory
 * in all: evaluation reads each from the cache once, not once per batch
 * (dropped when the model keeps all its weights in f32 anyway).
 * Without it (calibration, GPTQ, AWQ: each layer is used once or twice)
 * every use of a layer's tensor reads the cache again; only the embedding's
 * and lm_head's stored bytes stay (read per sample otherwise). */
int qp_loaded_model_open_resident(qp_loaded_model **out, const qp_artifact *a, qp_cache *cache, int threads,
                                  const char *what);
void qp_loaded_model_free(qp_loaded_model *m);
/* Serves w [nelem] for tensor `name` from now on (sequential GPTQ/AWQ: the
 * already-quantized weights); call qp_llama_reload_layer afterwards. */
int qp_loaded_model_override(qp_loaded_model *m, const char *name, const float *w, uint64_t nelem);
/* The same, taking *w (malloc'd, nelem floats) instead of copying it; *w is
 * NULL after.  A 1.1B layer's gate/up copies were 0.09 s each of fresh
 * pages and memcpy. */
int qp_loaded_model_override_take(qp_loaded_model *m, const char *name, float **w, uint64_t nelem);
/* Serves the artifact's own tensor `name` again (drops an override). */
void qp_loaded_model_restore(qp_loaded_model *m, const char *name);
/* An f32 copy (malloc'ed) of tensor `hf_name` of a model artifact, any
 * stored format; rows/cols as qp_qtensor_rows_cols. */
int qp_model_artifact_tensor_f32(float **out, int64_t *rows, int64_t *cols, const qp_artifact *a, qp_cache *cache,
                                 const char *hf_name, const char *what);
/* Only the hyper-parameters of a model artifact (its config.json). */
int qp_model_artifact_config(qp_llama_config *out, const qp_artifact *a, qp_cache *cache, const char *what);
/* The calibration windows of a calibrate artifact ("samples": int32 token
 * ids [*S, *T], malloc'ed into *out): QP_EFORMAT when it has none,
 * QP_ECORRUPT when they do not fit a model of max_pos positions or are
 * shorter than min_len tokens.  The calibrate artifact is ctx's input 1. */
int qp_calib_samples_load(int32_t **out, int64_t *S, int64_t *T, const qp_stage_ctx *ctx, const qp_artifact *calib,
                          int64_t max_pos, int64_t min_len);
qp_llama *qp_loaded_model_llama(qp_loaded_model *m);
const qp_tokenizer *qp_loaded_model_tokenizer(const qp_loaded_model *m);
/* Digest of the tokenizer files used (tokenizer.model's object digest; for
 * tokenizer.json, a digest over it and tokenizer_config.json): two models
 * must share it to be compared. */
const char *qp_loaded_model_tokenizer_digest(const qp_loaded_model *m);

#endif
