/* Every quantization method, defined one per file (stages/qmethod_*.c) and
 * registered in stages/qmethod_registry.c; the typed options of each. */
#ifndef QP_STAGES_QMETHODS_H
#define QP_STAGES_QMETHODS_H

#include <jansson.h>

#include "quant/qtypes.h"
#include "stages/qmethod.h"

extern const qp_quant_method qp_qm_rtn;
extern const qp_quant_method qp_qm_gguf;
extern const qp_quant_method qp_qm_nf4;
extern const qp_quant_method qp_qm_int8;
extern const qp_quant_method qp_qm_gptq;
extern const qp_quant_method qp_qm_awq;
extern const qp_quant_method qp_qm_mixed;
extern const qp_quant_method qp_qm_qat;

/* rtn, and the first member of gptq's and awq's options */
typedef struct {
    int bits, group_size, sym, mse;
} qp_qm_linear_opts;

typedef struct {
    qp_qm_linear_opts lin;
    double damp_percent;
    int act_order, static_groups, sequential, true_sequential;
} qp_qm_gptq_opts;

typedef struct {
    qp_qm_linear_opts lin;
    int sequential, clip;
    int duo_scaling;   /* -1 auto, 0, 1 (quant/awq.h) */
} qp_qm_awq_opts;

typedef struct {
    int double_quant;
} qp_qm_nf4_opts;

typedef struct {
    qp_qm_linear_opts lin;
    int steps;           /* sign-SGD steps per block */
    double lr;           /* 0 in the recipe: 1/steps */
    int batch;           /* windows per step */
    uint64_t seed;       /* batch order; layer l uses seed + l */
    int init_gptq;       /* init: gptq (else rtn) */
    double damp_percent; /* GPTQ's, for init: gptq */
    int e2e_steps;       /* end-to-end scale training steps (0: none) */
    double e2e_lr;
} qp_qm_qat_opts;

typedef struct {
    int ftype;   /* qp_llama_ftype */
    int pure;
} qp_qm_gguf_opts;

#define QP_QM_MAX_LADDER 8

typedef struct {
    size_t n_ladder;
    char ladder[QP_QM_MAX_LADDER][16];   /* block type names as written, fewest bits first */
    double max_bpw;
    char bpw_of[16];                     /* a llama.cpp file type, "" = none */
    double max_kld, max_ppl_delta, max_ppl_ratio;
    int windows;
} qp_qm_mixed_opts;

/* Shared pieces of the linear-format methods (stages/qmethod_rtn.c). */
void qp_qm_linear_parse(qp_qm_linear_opts *o, const json_t *params);
int qp_qm_linear_plan(qp_tensor_plan *out, const qp_quant_plan *p, const char *name, int ndim, int64_t rows,
                      int64_t cols, const qp_quant_override *ov);
void qp_qm_linear_package_name(char *buf, size_t cap, const char *base, const qp_quant_method *m,
                               const json_t *params, const json_t *metrics);
unsigned qp_qm_linear_gguf_file_type(const qp_artifact *model);

#endif
