/* method rtn: round-to-nearest onto the linear grid (quant/linear.h), and
 * what the linear-format methods (rtn, gptq, awq) share: their options,
 * their plan and their package hints. */
#include "stages/qmethods.h"
#include "common/error.h"
#include "model/gguf_llama.h"
#include "quant/ggml_mix.h"
#include "quant/linear.h"

#include <stdio.h>
#include <stdlib.h>

void qp_qm_linear_parse(qp_qm_linear_opts *o, const json_t *params)
{
    o->bits = (int)qp_param_int(params, "bits");
    o->group_size = (int)qp_param_int(params, "group_size");
    o->sym = qp_param_bool(params, "sym");
    o->mse = qp_param_bool(params, "mse");
}

static int rtn_parse(void *opts, const json_t *params, const char *where)
{
    qp_qm_linear_parse(opts, params);
    return 0;
}

int qp_qm_linear_plan(qp_tensor_plan *out, const qp_quant_plan *p, const char *name, int ndim, int64_t rows,
                      int64_t cols, const qp_quant_override *ov)
{
    if (qp_quant_plan_anchor(out, name))
        return 0;
    const qp_qm_linear_opts *o = p->opts;
    out->kind = QP_TP_LINEAR;
    out->bits = ov && ov->bits ? ov->bits : o->bits;
    return 0;
}

static int rtn_encode(const qp_quant_job *job, const qp_tensor_plan *plan, const float *w, int64_t rows,
                      int64_t cols, void **packed, size_t *plen, json_t *extra, double *bpw)
{
    const qp_qm_linear_opts *o = job->opts;
    qp_linear_params lp = {.bits = plan->bits, .group_size = o->group_size, .sym = o->sym, .mse = o->mse};
    qp_linear *q = NULL;
    int rc;
    if ((rc = qp_linear_new(&q, rows, cols, &lp)) == 0 && (rc = qp_rtn_quantize(q, w, job->ctx->threads)) == 0 &&
        (rc = qp_linear_serialize(q, packed, plen)) == 0) {
        json_object_set_new(extra, "format", json_string("linear"));
        json_object_set_new(extra, "bits", json_integer(plan->bits));
        json_object_set_new(extra, "group_size", json_integer(lp.group_size));
        json_object_set_new(extra, "sym", json_boolean(lp.sym));
        *bpw = qp_linear_bits_per_weight(q);
    }
    qp_linear_free(q);
    return rc;
}

/* "house-llama-gptq-w4g128" */
void qp_qm_linear_package_name(char *buf, size_t cap, const char *base, const qp_quant_method *m,
                               const json_t *params, const json_t *metrics)
{
    snprintf(buf, cap, "%s-%s-w%lldg%lld", base, m->name,
             (long long)json_integer_value(json_object_get(params, "bits")),
             (long long)json_integer_value(json_object_get(params, "group_size")));
}

/* GPTQ/AWQ blocks: Q4_0 / Q4_1 / Q8_0 */
unsigned qp_qm_linear_gguf_file_type(const qp_artifact *model)
{
    const json_t *p = json_object_get(qp_artifact_meta_c(model), "params");
    int bits = (int)json_integer_value(json_object_get(p, "bits"));
    int sym = json_is_true(json_object_get(p, "sym"));
    return bits == 8 ? QP_FTYPE_MOSTLY_Q8_0 : sym ? QP_FTYPE_MOSTLY_Q4_0 : QP_FTYPE_MOSTLY_Q4_1;
}

static const char *const card_keys[] = {"bits", "group_size", "sym", NULL};

const qp_quant_method qp_qm_rtn = {
    .name = "rtn", .doc = "round-to-nearest integer codes with fp16 group scales (GPTQ's grid)",
    .opts_size = sizeof(qp_qm_linear_opts), .parse = rtn_parse, .plan = qp_qm_linear_plan, .encode = rtn_encode,
    .hints = {card_keys, qp_qm_linear_package_name, qp_qm_linear_gguf_file_type},
};
