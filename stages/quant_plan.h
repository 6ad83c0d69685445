/* What the quantize stage does to each tensor: keep it, or which format,
 * type or bit-width — from the method, `pure`, the llama.cpp mix rules,
 * `skip:` globs and `override:` entries (the first matching override wins). */
#ifndef QP_STAGES_QUANT_PLAN_H
#define QP_STAGES_QUANT_PLAN_H

#include <jansson.h>
#include <stdint.h>

#include "quant/qtypes.h"

typedef enum { QP_TP_DENSE, QP_TP_GGML } qp_tp_kind;

typedef struct {
    qp_tp_kind kind;
    qp_qtype qtype;        /* QP_TP_GGML */
    char reason[160];      /* why not the recipe's default: "skip: *.norm", "override 1", "k-quant fallback …" */
} qp_tensor_plan;

/* Decides the plan for one tensor.  hf_name: the checkpoint's name;
 * shape [rows, cols] (1-D tensors: rows = 1).  QP_EUSAGE with a message
 * naming the tensor when the request cannot be met (e.g. rows that fit no
 * block size). */
int qp_quant_plan_tensor(qp_tensor_plan *out, const json_t *params, const char *hf_name, int ndim, int64_t rows,
                         int64_t cols);

/* The GGUF name llama.cpp gives a Hugging Face LLaMA tensor (imatrix files
 * are keyed by it); writes "" when the tensor has none. */
void qp_quant_gguf_name(char *out, size_t cap, const char *hf_name);

#endif
