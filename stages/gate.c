/* gate: thresholds over the metrics of upstream stages.
 *
 * `max_NAME: L` passes when metric NAME ≤ L, `min_NAME: L` when NAME ≥ L.
 * NAME is looked up in every input's metrics; when more than one input has
 * it, the recipe must qualify it as `max_STAGE.NAME`.  The verdict artifact
 * lists every check with value, limit and margin; a failed verdict makes the
 * runner exit 3 and block every stage that needs the gate. */
#include "stages/kinds.h"
#include "common/error.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const qp_param_spec params[] = {
    {"max_*", QP_P_NUMBER, NULL, NULL, 0, -1, QP_PF_PATTERN,
     "upper limit for a metric: max_ppl_delta, max_kld_mean, max_STAGE.METRIC …"},
    {"min_*", QP_P_NUMBER, NULL, NULL, 0, -1, QP_PF_PATTERN,
     "lower limit for a metric: min_top1, min_acc, min_STAGE.METRIC …"},
    /* a quantize stage among the inputs brings bytes / bpw (max_bytes, max_bpw) */
    {NULL, 0, NULL, NULL, 0, 0, 0, NULL},
};

static int gate_validate(const json_t *p, const char *where)
{
    if (json_object_size(p) == 0)
        return qp_error_set(QP_EUSAGE, "%s: gate has no checks (add max_METRIC or min_METRIC keys under with:)",
                            where);
    return 0;
}

/* Finds metric `name` (optionally "stage.metric") among the inputs. */
static int find_metric(qp_stage_ctx *ctx, const char *param, const char *name, double *value,
                       const char **source)
{
    const char *dot = strchr(name, '.');
    int found = 0;
    for (size_t i = 0; i < ctx->n_inputs; i++) {
        const char *metric = name;
        if (dot) {
            size_t n = (size_t)(dot - name);
            if (strlen(ctx->input_ids[i]) != n || strncmp(ctx->input_ids[i], name, n) != 0)
                continue;
            metric = dot + 1;
        }
        const json_t *v = json_object_get(qp_artifact_metrics_c(ctx->inputs[i]), metric);
        if (!v)
            continue;
        if (!json_is_number(v) && !json_is_boolean(v))
            return qp_error_set(QP_ERROR, "gate '%s': %s: metric '%s' of stage '%s' is not a number",
                                ctx->id, param, metric, ctx->input_ids[i]);
        if (found++)
            return qp_error_set(QP_ERROR,
                                "gate '%s': %s: metric '%s' is reported by both '%s' and '%s'; "
                                "qualify it as %.4s%s.%s",
                                ctx->id, param, name, *source, ctx->input_ids[i], param, *source, name);
        *value = json_is_boolean(v) ? (json_is_true(v) ? 1.0 : 0.0) : json_number_value(v);
        *source = ctx->input_ids[i];
    }
    if (!found) {
        char avail[512] = "";
        for (size_t i = 0; i < ctx->n_inputs; i++) {
            const char *k;
            json_t *v;
            json_object_foreach((json_t *)qp_artifact_metrics_c(ctx->inputs[i]), k, v) {
                size_t len = strlen(avail);
                if (len + strlen(k) + strlen(ctx->input_ids[i]) + 4 < sizeof(avail))
                    snprintf(avail + len, sizeof(avail) - len, "%s%s.%s", len ? ", " : "", ctx->input_ids[i], k);
            }
        }
        return qp_error_set(QP_ERROR, "gate '%s': %s: no input reports metric '%s' (available: %s)", ctx->id,
                            param, name, avail[0] ? avail : "none");
    }
    return 0;
}

static int gate_run(qp_stage_ctx *ctx)
{
    json_t *checks = json_array();
    int passed_all = 1, rc = 0;
    const char *param;
    json_t *limit_v;
    /* jansson iterates in insertion order; sort by key for a stable report */
    size_t n = json_object_size(ctx->params), i = 0;
    const char *keys[256];
    if (n > 256)
        return qp_error_set(QP_EUSAGE, "gate '%s': more than 256 checks", ctx->id);
    json_object_foreach((json_t *)ctx->params, param, limit_v)
        keys[i++] = param;
    for (size_t a = 1; a < n; a++)
        for (size_t b = a; b > 0 && strcmp(keys[b - 1], keys[b]) > 0; b--) {
            const char *t = keys[b];
            keys[b] = keys[b - 1];
            keys[b - 1] = t;
        }
    for (i = 0; i < n; i++) {
        param = keys[i];
        int is_max = strncmp(param, "max_", 4) == 0;
        const char *metric = param + 4;
        double limit = json_number_value(json_object_get(ctx->params, param)), value = 0;
        const char *source = NULL;
        if ((rc = find_metric(ctx, param, metric, &value, &source)) != 0)
            goto done;
        double margin = is_max ? limit - value : value - limit;
        int ok = !isnan(value) && margin >= 0;
        passed_all &= ok;
        const char *dot = strchr(metric, '.');
        json_t *c = json_pack("{s:s, s:s, s:s, s:s, s:f, s:b}", "check", param, "metric", dot ? dot + 1 : metric,
                              "stage", source, "op", is_max ? "<=" : ">=", "limit", limit, "passed", ok);
        /* JSON has no NaN/inf: a non-finite value is recorded as null and fails */
        json_object_set_new(c, "value", isfinite(value) ? json_real(value) : json_null());
        json_object_set_new(c, "margin", isfinite(margin) ? json_real(margin) : json_null());
        json_array_append_new(checks, c);
        if (isfinite(value))
            qp_artifact_set_metric(ctx->output, param, value);
    }
    json_object_set_new(qp_artifact_meta(ctx->output), "checks", checks);
    /* the judged metrics travel with the verdict (model cards, run records) */
    json_t *judged = json_object();
    for (size_t k = 0; k < ctx->n_inputs; k++)
        json_object_set(judged, ctx->input_ids[k], (json_t *)qp_artifact_metrics_c(ctx->inputs[k]));
    json_object_set_new(qp_artifact_meta(ctx->output), "inputs", judged);
    checks = NULL;
    json_object_set_new(qp_artifact_meta(ctx->output), "verdict", json_string(passed_all ? "pass" : "fail"));
    json_object_set_new(qp_artifact_metrics(ctx->output), "gate_passed", json_boolean(passed_all));
done:
    json_decref(checks);
    return rc;
}

/* The text report's lines under the gate: one per check. */
static void gate_report(FILE *o, const qp_artifact *out)
{
    const json_t *checks = json_object_get(qp_artifact_meta_c(out), "checks");
    size_t i;
    json_t *c;
    json_array_foreach(checks, i, c) {
        const json_t *val = json_object_get(c, "value"), *margin = json_object_get(c, "margin");
        char vbuf[32] = "n/a", mbuf[32] = "n/a";
        if (json_is_number(val))
            snprintf(vbuf, sizeof(vbuf), "%.6g", json_number_value(val));
        if (json_is_number(margin))
            snprintf(mbuf, sizeof(mbuf), "%+.6g", json_number_value(margin));
        fprintf(o, "      %-4s %s.%s = %s %s %.6g  (margin %s)\n",
                json_is_true(json_object_get(c, "passed")) ? "ok" : "FAIL",
                json_string_value(json_object_get(c, "stage")), json_string_value(json_object_get(c, "metric")),
                vbuf, json_string_value(json_object_get(c, "op")),
                json_number_value(json_object_get(c, "limit")), mbuf);
    }
}

const qp_stage_kind qp_stage_gate = {
    .name = "gate", .version = 2,
    .doc = "pass or reject on thresholds over upstream metrics (exit 3 on reject)",
    .params = params,
    .accepts = QP_ART_METRICS | QP_ART_VERDICT | QP_ART_FILES | QP_ART_QMODEL, .min_inputs = 1, .max_inputs = -1,
    .output = QP_ART_VERDICT,
    .validate = gate_validate,
    .run = gate_run,
    .report = gate_report,
    .graph_shape = "diamond",
};
