/* What the quantize stage does to each tensor: keep it, or which format,
 * type or bit-width.
 *   method gguf: llama-quantize's choice (quant/ggml_mix.h) for `type` —
 *     a file type such as Q4_K_M, or a block type with `pure: true` — incl.
 *     which tensors stay unquantized and the k-quant fallbacks;
 *   rtn / gptq / awq: linear (integer codes, fp16 group scales) at `bits`;
 *   nf4 / int8: their formats;
 *   mixed: every 2-D weight gets one of the `ladder:` types, chosen by the
 *     sensitivity-driven allocator (stages/quant_mixed.h), 1-D stay F32;
 * for rtn/gptq/awq/nf4/int8 the token embedding and lm_head stay at source
 * precision (as the GPTQ/AWQ anchors do).  `skip:` globs keep tensors;
 * `override:` entries (first match wins) set `type` (a llama.cpp block
 * type) or `bits` for matching tensors.  Globs match Hugging Face names. */
#ifndef QP_STAGES_QUANT_PLAN_H
#define QP_STAGES_QUANT_PLAN_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "model/config.h"
#include "quant/ggml_mix.h"
#include "quant/qtypes.h"

typedef enum { QP_TP_DENSE, QP_TP_GGML, QP_TP_LINEAR, QP_TP_NF4, QP_TP_INT8 } qp_tp_kind;

typedef struct {
    qp_tp_kind kind;
    qp_ggml_type qtype;        /* QP_TP_GGML; QP_GGML_F16/F32 for a dense conversion */
    int bits;              /* QP_TP_LINEAR */
    char reason[240];      /* why not the recipe's default, "" when it is */
    int mixed;             /* method mixed: the allocator picks its type (qtype = the ladder's lowest) */
} qp_tensor_plan;

/* One `override:` entry; type NULL and bits 0 when not given. */
typedef struct {
    char *match;
    char *type;
    int bits;
} qp_quant_override;

/* The options every method shares (`skip:`, `override:`, `imatrix:`). */
typedef struct {
    char **skip;
    size_t n_skip;
    qp_quant_override *overrides;
    size_t n_overrides;
    char *imatrix;   /* path as written; "" = none */
} qp_quant_common;

/* Parses and checks them; errors QP_EUSAGE "WHERE: override N: …".  Free
 * with qp_quant_common_free (also after an error). */
int qp_quant_common_parse(qp_quant_common *c, const json_t *params, const char *where);
void qp_quant_common_free(qp_quant_common *c);

typedef struct qp_quant_method qp_quant_method;   /* stages/qmethod.h */

typedef struct {
    const qp_quant_method *method;
    const void *opts;              /* the method's options */
    const qp_quant_common *common;
    int ftype;                     /* method gguf: the llama.cpp file type; -1 otherwise */
    qp_ggml_mix_ctx mix;
    json_t *assign;                /* method mixed: {hf_name: type} from the allocator (the plan's
                                      owner frees it); NULL before it ran */
} qp_quant_plan;

void qp_quant_plan_init(qp_quant_plan *p, const qp_quant_method *m, const void *opts, const qp_quant_common *c,
                        const qp_llama_config *cfg, int has_imatrix);
/* Decides one tensor (HF name, PyTorch shape: rows = shape[0], cols = the
 * rest; 1-D tensors have ndim 1).  QP_EUSAGE naming the tensor when the
 * request cannot be met. */
int qp_quant_plan_tensor(qp_tensor_plan *out, const qp_quant_plan *p, const char *hf_name, int ndim, int64_t rows,
                         int64_t cols);
/* A llama.cpp block type for a tensor with llama.cpp's fallbacks: `forced`
 * (a type name) when given, else the file type's per-tensor rules.  Writes
 * out->reason only when there is a fallback to tell, so a reason the caller
 * set (an override's) otherwise stays. */
int qp_quant_plan_ggml(qp_tensor_plan *out, const qp_quant_plan *p, const char *hf_name, int ndim, int64_t rows,
                       int64_t cols, const char *forced);
/* rtn / gptq / awq / nf4 / int8: 1 (out: kept at source precision) for
 * the token embedding and lm_head, as the GPTQ/AWQ anchors keep them; else 0. */
int qp_quant_plan_anchor(qp_tensor_plan *out, const char *hf_name);
/* 1 for a tensor the quantized model does not have: lm_head.weight of a
 * tied model (tie_word_embeddings true) that a checkpoint ships anyway —
 * the model runs embed_tokens, as transformers ties it; else 0. */
int qp_quant_plan_drops(const qp_quant_plan *p, const char *hf_name);
/* nf4 / int8: the anchors kept, anything else `kind`; returns 0. */
int qp_quant_plan_format(qp_tensor_plan *out, const char *hf_name, qp_tp_kind kind);

#endif
