/* method mixed: sensitivity-driven llama.cpp block types per weight (the
 * search is stages/quant_mixed.c), so the result packages as an ordinary
 * GGUF. */
#include "stages/qmethods.h"
#include "common/error.h"
#include "model/gguf_llama.h"
#include "quant/ggml_mix.h"
#include "stages/qtensor.h"
#include "stages/quant_mixed.h"

#include <stdio.h>
#include <string.h>

/* A ladder of block types in increasing size, and a budget or a target. */
static int mixed_parse(void *opts, const json_t *p, const char *where)
{
    qp_qm_mixed_opts *o = opts;
    const json_t *ladder = json_object_get(p, "ladder");
    size_t i;
    json_t *v;
    double prev = 0;
    if (json_array_size(ladder) < 2 || json_array_size(ladder) > QP_QM_MAX_LADDER)
        return qp_error_set(QP_EUSAGE, "%s: ladder: needs 2 to 8 llama.cpp block types, fewest bits first "
                                       "(e.g. [Q4_K, Q5_K, Q6_K])", where);
    json_array_foreach(ladder, i, v) {
        const qp_qtype_info *ti = qp_qtype_by_name(json_string_value(v));
        if (!ti || !ti->is_quantized)
            return qp_error_set(QP_EUSAGE, "%s: ladder: '%s' is not a llama.cpp block type such as Q4_K", where,
                                json_string_value(v));
        double bpw = ti->bits_per_weight;
        if (bpw <= prev)
            return qp_error_set(QP_EUSAGE, "%s: ladder: %s does not have more bits than the type before it; list "
                                           "the types fewest bits first", where, ti->name);
        prev = bpw;
        snprintf(o->ladder[o->n_ladder++], sizeof(o->ladder[0]), "%s", json_string_value(v));
    }
    const char *of = qp_param_str(p, "bpw_of") ? qp_param_str(p, "bpw_of") : "";
    o->max_bpw = qp_param_num(p, "max_bpw");
    o->max_kld = qp_param_num(p, "max_kld");
    o->max_ppl_delta = qp_param_num(p, "max_ppl_delta");
    o->max_ppl_ratio = qp_param_num(p, "max_ppl_ratio");
    o->windows = (int)qp_param_int(p, "windows");
    if (of[0] && qp_llama_ftype_parse(of) < 0)
        return qp_error_set(QP_EUSAGE, "%s: bpw_of: %s is not a llama.cpp file type such as Q4_K_M", where, of);
    snprintf(o->bpw_of, sizeof(o->bpw_of), "%s", of);
    if (of[0] && o->max_bpw > 0)
        return qp_error_set(QP_EUSAGE, "%s: give max_bpw or bpw_of, not both", where);
    if (!of[0] && o->max_bpw <= 0 && o->max_kld <= 0 && o->max_ppl_delta <= 0 && o->max_ppl_ratio <= 0)
        return qp_error_set(QP_EUSAGE, "%s: method mixed needs a budget (max_bpw or bpw_of) or a target (max_kld, "
                                       "max_ppl_delta or max_ppl_ratio)", where);
    json_array_foreach(json_object_get(p, "override"), i, v)
        if (json_object_get(v, "bits"))
            return qp_error_set(QP_EUSAGE, "%s: override %zu: method mixed takes type:, not bits:", where, i + 1);
    return 0;
}

/* The allocator's type once it ran; before, the ladder's lowest (marked mixed). */
static int mixed_plan(qp_tensor_plan *out, const qp_quant_plan *p, const char *name, int ndim, int64_t rows,
                      int64_t cols, const qp_quant_override *ov)
{
    const qp_qm_mixed_opts *o = p->opts;
    const char *assigned = p->assign ? json_string_value(json_object_get(p->assign, name)) : NULL;
    if (assigned)
        return qp_quant_plan_ggml(out, p, name, ndim, rows, cols, assigned);
    int rc = qp_quant_plan_ggml(out, p, name, ndim, rows, cols, o->ladder[0]);
    out->mixed = rc == 0;
    return rc;
}

static void mixed_describe(const qp_quant_job *job, qp_artifact *out)
{
    if (!job->report)
        return;
    json_object_set(qp_artifact_meta(out), "mixed", job->report);
    qp_artifact_set_metric(out, "kld_calibration", json_number_value(json_object_get(job->report, "kld_mix")));
    qp_artifact_set_metric(out, "tensors_raised", (double)json_array_size(json_object_get(job->report, "raised")));
}

/* "house-llama-mixed-4.85bpw" */
static void mixed_package_name(char *buf, size_t cap, const char *base, const qp_quant_method *m,
                               const json_t *params, const json_t *metrics)
{
    snprintf(buf, cap, "%s-mixed-%.2fbpw", base, json_number_value(json_object_get(metrics, "bpw")));
}

/* general.file_type: the file type llama.cpp names after the block type
 * that holds the most weights (informational, as for any llama-quantize
 * output with --tensor-type overrides; llama-model-loader's guess from the
 * commonest type: IQ2_S blocks name the IQ2_S file type). */
static unsigned mixed_file_type(const qp_artifact *model)
{
    static const struct { qp_ggml_type type; qp_llama_ftype ft; } names[] = {
        {QP_GGML_Q4_0, QP_FTYPE_MOSTLY_Q4_0}, {QP_GGML_Q4_1, QP_FTYPE_MOSTLY_Q4_1},
        {QP_GGML_Q5_0, QP_FTYPE_MOSTLY_Q5_0}, {QP_GGML_Q5_1, QP_FTYPE_MOSTLY_Q5_1},
        {QP_GGML_Q8_0, QP_FTYPE_MOSTLY_Q8_0}, {QP_GGML_Q2_K, QP_FTYPE_MOSTLY_Q2_K},
        {QP_GGML_Q3_K, QP_FTYPE_MOSTLY_Q3_K_M}, {QP_GGML_Q4_K, QP_FTYPE_MOSTLY_Q4_K_M},
        {QP_GGML_Q5_K, QP_FTYPE_MOSTLY_Q5_K_M}, {QP_GGML_Q6_K, QP_FTYPE_MOSTLY_Q6_K},
        {QP_GGML_IQ4_NL, QP_FTYPE_MOSTLY_IQ4_NL}, {QP_GGML_IQ4_XS, QP_FTYPE_MOSTLY_IQ4_XS},
        {QP_GGML_IQ3_S, QP_FTYPE_MOSTLY_IQ3_S}, {QP_GGML_IQ3_XXS, QP_FTYPE_MOSTLY_IQ3_XXS},
        {QP_GGML_IQ2_XXS, QP_FTYPE_MOSTLY_IQ2_XXS}, {QP_GGML_IQ2_XS, QP_FTYPE_MOSTLY_IQ2_XS},
        {QP_GGML_IQ2_S, QP_FTYPE_MOSTLY_IQ2_S}, {QP_GGML_IQ1_S, QP_FTYPE_MOSTLY_IQ1_S},
        {QP_GGML_IQ1_M, QP_FTYPE_MOSTLY_IQ1_M},
        {QP_GGML_TQ1_0, QP_FTYPE_MOSTLY_TQ1_0}, {QP_GGML_TQ2_0, QP_FTYPE_MOSTLY_TQ2_0},
    };
    const size_t n = sizeof(names) / sizeof(names[0]);
    double count[sizeof(names) / sizeof(names[0])] = {0};
    for (size_t i = 0; i < qp_artifact_count(model); i++) {
        const json_t *e = qp_artifact_entry(model, i);
        const qp_qtype_info *ti = qp_qtype_by_name(json_string_value(json_object_get(e, "qtype")));
        for (size_t k = 0; ti && k < n; k++)
            if (ti->type == names[k].type)
                count[k] += (double)qp_qtensor_nelem(e);
    }
    size_t best = 0;
    for (size_t k = 1; k < n; k++)
        if (count[k] > count[best])
            best = k;
    return (unsigned)names[best].ft;
}

static const char *const card_keys[] = {"ladder", "bpw_of", "max_bpw", "max_kld", "windows", NULL};

const qp_quant_method qp_qm_mixed = {
    .name = "mixed", .flags = QP_QM_NEEDS_CALIB | QP_QM_IMATRIX,
    .doc = "sensitivity-driven llama.cpp types per tensor within a size budget or up to a quality target",
    .needs_calib = "measures sensitivities on calibration windows; add a calibrate stage to needs:",
    .opts_size = sizeof(qp_qm_mixed_opts), .parse = mixed_parse, .plan = mixed_plan,
    .run = qp_quant_mixed_assign, .describe = mixed_describe, .hints = {card_keys, mixed_package_name, mixed_file_type},
};
