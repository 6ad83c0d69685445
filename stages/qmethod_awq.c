/* method awq: activation-aware scaling, then RTN on the linear grid, layer
 * by layer through the sequential driver (stages/quant_seq.h); the layer
 * step is stages/quant_awq.c. */
#include "stages/qmethods.h"
#include "common/error.h"
#include "stages/quant_awq.h"

#include <string.h>

static int awq_parse(void *opts, const json_t *params, const char *where)
{
    qp_qm_awq_opts *o = opts;
    qp_qm_linear_parse(&o->lin, params);
    o->sequential = qp_param_bool(params, "sequential");
    o->clip = qp_param_bool(params, "clip");
    const char *duo = qp_param_str(params, "duo_scaling");
    o->duo_scaling = !duo || !strcmp(duo, "auto") ? -1 : !strcmp(duo, "true") ? 1 : 0;
    return 0;
}

static int awq_run(qp_quant_job *job)
{
    const qp_qm_awq_opts *o = job->opts;
    return qp_quant_sequential(job, o->sequential, 0, qp_quant_awq_layer);   /* AWQ reads sq->x */
}

/* the scale and clip search of every layer */
static void awq_describe(const qp_quant_job *job, qp_artifact *out)
{
    if (job->report)
        json_object_set(qp_artifact_meta(out), "awq", job->report);
}

static const char *const card_keys[] = {"bits", "group_size", "sym", NULL};

const qp_quant_method qp_qm_awq = {
    .name = "awq", .flags = QP_QM_NEEDS_CALIB, .needs_calib = "needs a calibrate stage in needs:",
    .doc = "AWQ: activation-aware per-channel scales and clipping, then RTN, layer by layer",
    .opts_size = sizeof(qp_qm_awq_opts), .parse = awq_parse, .plan = qp_qm_linear_plan,
    .run = awq_run, .describe = awq_describe,
    .hints = {card_keys, qp_qm_linear_package_name, qp_qm_linear_gguf_file_type},
};
