/* method int8: per-output-channel absmax int8 (quant/int8.h). */
#include "stages/qmethods.h"
#include "quant/int8.h"

/* the embedding and lm_head stay; every other 2-D weight is int8 */
static int int8_plan(qp_tensor_plan *out, const qp_quant_plan *p, const char *name, int ndim, int64_t rows,
                     int64_t cols, const qp_quant_override *ov)
{
    return qp_quant_plan_format(out, name, QP_TP_INT8);
}

static int int8_encode(const qp_quant_job *job, const qp_tensor_plan *plan, const float *w, int64_t rows,
                       int64_t cols, void **packed, size_t *plen, json_t *extra, double *bpw)
{
    qp_int8 *q = NULL;
    int rc;
    if ((rc = qp_int8_new(&q, rows, cols)) == 0 && (rc = qp_int8_quantize(q, w, job->ctx->threads)) == 0 &&
        (rc = qp_int8_serialize(q, packed, plen)) == 0) {
        json_object_set_new(extra, "format", json_string("int8"));
        *bpw = qp_int8_bits_per_weight(q);
    }
    qp_int8_free(q);
    return rc;
}

static const char *const card_keys[] = {NULL};

/* "house-llama-int8": per-row absmax, no groups to name */
static void int8_package_name(char *buf, size_t cap, const char *base, const qp_quant_method *m,
                              const json_t *params, const json_t *metrics)
{
    snprintf(buf, cap, "%s-int8", base);
}

const qp_quant_method qp_qm_int8 = {
    .name = "int8", .doc = "per-output-channel absmax int8", .plan = int8_plan, .encode = int8_encode,
    .hints = {card_keys, int8_package_name, qp_qm_linear_gguf_file_type},
};
