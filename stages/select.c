/* select: picks one release among candidates.  Its inputs are the gate
 * stages of the candidates (each gate reading its candidate's quantize
 * stage, which brings `bytes`, and its evaluation); select chooses, among
 * the candidates whose gate passed, the smallest artifact in bytes (ties:
 * the first listed), and reports the whole table.  A package stage that
 * needs select and the candidates' quantize stages packages the winner.
 * When no candidate passes, select rejects (exit 3) and blocks what
 * depends on it.  Candidates are separate stages, so adding one reruns
 * only it (and select). */
#include "stages/kinds.h"
#include "common/error.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const qp_param_spec params[] = {
    {"policy", QP_P_STRING, "smallest", "smallest|first", 0, -1, 0,
     "smallest: fewest bytes among passing candidates; first: the first passing in `needs` order"},
    {NULL, 0, NULL, NULL, 0, 0, 0, NULL},
};

/* The quantize stage a gate judged: the input whose metrics carry bytes. */
static const char *candidate_of(const json_t *gate_inputs, double *bytes)
{
    const char *id;
    json_t *m;
    json_object_foreach((json_t *)gate_inputs, id, m) {
        const json_t *b = json_object_get(m, "bytes");
        if (json_is_number(b) && json_object_get(m, "bpw")) {
            *bytes = json_number_value(b);
            return id;
        }
    }
    return NULL;
}

static int select_run(qp_stage_ctx *ctx)
{
    const char *policy = qp_param_str(ctx->params, "policy");
    json_t *table = json_array();
    int best = -1;
    double best_bytes = INFINITY;
    for (size_t i = 0; i < ctx->n_inputs; i++) {
        const json_t *meta = qp_artifact_meta_c(ctx->inputs[i]);
        const char *verdict = json_string_value(json_object_get(meta, "verdict"));
        if (!verdict) {
            json_decref(table);
            return qp_error_set(QP_EUSAGE, "stage '%s': input '%s' is not a gate", ctx->id, ctx->input_ids[i]);
        }
        double bytes = NAN;
        const char *cand = candidate_of(json_object_get(meta, "inputs"), &bytes);
        if (!cand) {
            json_decref(table);
            return qp_error_set(QP_EUSAGE,
                                "stage '%s': gate '%s' does not read a quantize stage; add the candidate's quantize "
                                "stage to the gate's needs so select knows its size", ctx->id, ctx->input_ids[i]);
        }
        int pass = !strcmp(verdict, "pass");
        json_t *row = json_pack("{s:s, s:s, s:f, s:b}", "gate", ctx->input_ids[i], "candidate", cand, "bytes", bytes,
                                "passed", pass);
        json_object_set(row, "checks", json_object_get(meta, "checks"));
        /* what the gate judged (the evaluation's and the candidate's metrics), for the model card */
        json_object_set(row, "inputs", json_object_get(meta, "inputs"));
        json_array_append_new(table, row);
        if (pass && (best < 0 || (!strcmp(policy, "smallest") && bytes < best_bytes))) {
            best = (int)i;
            best_bytes = bytes;
        }
    }
    json_t *meta = qp_artifact_meta(ctx->output);
    json_object_set_new(meta, "candidates", table);
    if (best < 0) {
        json_object_set_new(meta, "verdict", json_string("fail"));
        json_object_set_new(meta, "checks", json_array());
        qp_progress_note(ctx->progress, "no candidate passed its gate");
        return 0;
    }
    const json_t *row = json_array_get(table, (size_t)best);
    json_object_set_new(meta, "verdict", json_string("pass"));
    json_object_set(meta, "selected", json_object_get(row, "candidate"));
    json_object_set(meta, "selected_gate", json_object_get(row, "gate"));
    json_object_set_new(meta, "policy", json_string(policy));
    json_object_set_new(meta, "checks", json_array());
    qp_artifact_set_metric(ctx->output, "selected_bytes", best_bytes);
    qp_artifact_set_metric(ctx->output, "candidates", (double)ctx->n_inputs);
    qp_progress_note(ctx->progress, "selected %s", json_string_value(json_object_get(row, "candidate")));
    return 0;
}

/* The text report's lines under select: the candidates, the chosen one marked. */
static void select_report(FILE *o, const qp_artifact *out)
{
    const json_t *meta = qp_artifact_meta_c(out);
    const char *sel = json_string_value(json_object_get(meta, "selected"));
    size_t i;
    json_t *row;
    json_array_foreach(json_object_get(meta, "candidates"), i, row) {
        const char *cand = json_string_value(json_object_get(row, "candidate"));
        fprintf(o, "      %-8s %-16s %12.0f bytes  gate %-12s %s\n", sel && !strcmp(sel, cand) ? "SELECTED" : "",
                cand, json_number_value(json_object_get(row, "bytes")),
                json_string_value(json_object_get(row, "gate")),
                json_is_true(json_object_get(row, "passed")) ? "pass" : "fail");
    }
}

const qp_stage_kind qp_stage_select = {
    .name = "select", .version = 2,
    .doc = "pick the smallest candidate whose gate passed (exit 3 when none did)",
    .params = params,
    .accepts = QP_ART_VERDICT, .min_inputs = 1, .max_inputs = -1,
    .output = QP_ART_VERDICT,
    .consumes_rejections = 1,
    .run = select_run,
    .report = select_report,
};
