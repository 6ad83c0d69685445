/* method nf4: bitsandbytes NF4 blocks of 64 (quant/nf4.h). */
#include "stages/qmethods.h"
#include "quant/nf4.h"

static int nf4_parse(void *opts, const json_t *params, const char *where)
{
    ((qp_qm_nf4_opts *)opts)->double_quant = qp_param_bool(params, "double_quant");
    return 0;
}

static int nf4_plan(qp_tensor_plan *out, const qp_quant_plan *p, const char *name, int ndim, int64_t rows,
                    int64_t cols, const qp_quant_override *ov)
{
    return qp_quant_plan_format(out, name, QP_TP_NF4);
}

static int nf4_encode(const qp_quant_job *job, const qp_tensor_plan *plan, const float *w, int64_t rows,
                      int64_t cols, void **packed, size_t *plen, json_t *extra, double *bpw)
{
    const qp_qm_nf4_opts *o = job->opts;
    qp_nf4_params np = {.blocksize = 64, .double_quant = o->double_quant};
    qp_nf4 *q = NULL;
    int rc;
    if ((rc = qp_nf4_new(&q, rows, cols, &np)) == 0 && (rc = qp_nf4_quantize(q, w, job->ctx->threads)) == 0 &&
        (rc = qp_nf4_serialize(q, packed, plen)) == 0) {
        json_object_set_new(extra, "format", json_string("nf4"));
        json_object_set_new(extra, "double_quant", json_boolean(np.double_quant));
        *bpw = qp_nf4_bits_per_weight(q);
    }
    qp_nf4_free(q);
    return rc;
}

static const char *const card_keys[] = {"double_quant", NULL};

/* "house-llama-nf4" / "-nf4-dq": NF4's blocks are 64 weights whatever the
 * recipe's group_size says, so the linear methods' -w4g128 would be wrong */
static void nf4_package_name(char *buf, size_t cap, const char *base, const qp_quant_method *m,
                             const json_t *params, const json_t *metrics)
{
    snprintf(buf, cap, "%s-nf4%s", base, json_is_true(json_object_get(params, "double_quant")) ? "-dq" : "");
}

const qp_quant_method qp_qm_nf4 = {
    .name = "nf4", .opts_size = sizeof(qp_qm_nf4_opts), .parse = nf4_parse, .plan = nf4_plan, .encode = nf4_encode,
    .doc = "bitsandbytes NF4 (4-bit normal-float blocks of 64, optional double quantization)",
    .hints = {card_keys, nf4_package_name, qp_qm_linear_gguf_file_type},
};
