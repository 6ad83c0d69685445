/* method gguf: llama-quantize's choice for a file type (`type:`, or one
 * block type for every tensor with `pure: true`), and the encoder of ggml
 * block types that every method's `override: type` uses. */
#include "stages/qmethods.h"
#include "common/alloc.h"
#include "common/error.h"
#include "model/gguf_llama.h"

#include <stdio.h>
#include <stdlib.h>

static int gguf_parse(void *opts, const json_t *params, const char *where)
{
    qp_qm_gguf_opts *o = opts;
    const char *type = qp_param_str(params, "type") ? qp_param_str(params, "type") : "";
    o->ftype = qp_llama_ftype_parse(type);
    o->pure = qp_param_bool(params, "pure");
    if (o->ftype < 0)
        return qp_error_set(QP_EUSAGE, "%s: type %s is not a llama.cpp file type", where, type);
    return 0;
}

static void gguf_plan_setup(qp_quant_plan *p)
{
    const qp_qm_gguf_opts *o = p->opts;
    p->ftype = o->ftype;
    p->mix.pure = o->pure;
}

static int gguf_plan(qp_tensor_plan *out, const qp_quant_plan *p, const char *name, int ndim, int64_t rows,
                     int64_t cols, const qp_quant_override *ov)
{
    /* an override without a type keeps its reason unless llama.cpp's rules give one */
    return qp_quant_plan_ggml(out, p, name, ndim, rows, cols, NULL);
}

int qp_quant_encode_ggml(const qp_quant_job *job, const qp_tensor_plan *plan, const float *w, int64_t rows,
                         int64_t cols, const float *imat, void **packed, size_t *plen, json_t *extra, double *bpw)
{
    uint64_t nelem = (uint64_t)rows * (uint64_t)cols;
    *plen = qp_qtype_row_size(plan->qtype, cols) * (size_t)rows;
    *packed = qp_xmalloc(*plen ? *plen : 1);
    int rc = qp_quantize(plan->qtype, w, *packed, rows, cols, imat, job->ctx->threads);
    json_object_set_new(extra, "format", json_string("ggml"));
    json_object_set_new(extra, "qtype", json_string(qp_qtype_get(plan->qtype)->name));
    json_object_set_new(extra, "imatrix", json_boolean(imat != NULL));
    *bpw = 8.0 * (double)*plen / (double)nelem;
    return rc;
}

/* "house-llama-Q4_K_M" */
static void gguf_package_name(char *buf, size_t cap, const char *base, const qp_quant_method *m,
                              const json_t *params, const json_t *metrics)
{
    snprintf(buf, cap, "%s-%s", base, json_string_value(json_object_get(params, "type")));
}

static unsigned gguf_file_type(const qp_artifact *model)
{
    const json_t *params = json_object_get(qp_artifact_meta_c(model), "params");
    int ft = qp_llama_ftype_parse(json_string_value(json_object_get(params, "type")));
    return ft > 0 ? (unsigned)ft : 0;
}

static const char *const card_keys[] = {"type", "pure", NULL};

const qp_quant_method qp_qm_gguf = {
    .name = "gguf", .flags = QP_QM_IMATRIX,
    .doc = "llama.cpp block types, chosen per tensor as llama-quantize does for `type:`",
    .opts_size = sizeof(qp_qm_gguf_opts), .parse = gguf_parse, .plan_setup = gguf_plan_setup, .plan = gguf_plan,
    .hints = {card_keys, gguf_package_name, gguf_file_type},
};
