#include "stages/model_card.h"
#include "stages/qmethod.h"
#include "common/buf.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/numerics.h"
#include "common/version.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void human(char *buf, size_t n, double b)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024 && i < 4) {
        b /= 1024;
        i++;
    }
    snprintf(buf, n, i ? "%.2f %s" : "%.0f %s", b, u[i]);
}

/* A select stage's row of the candidate it chose, or NULL (not a select,
 * or nothing chosen). */
static const json_t *selected_row(const json_t *select_meta)
{
    const char *sel = json_string_value(json_object_get(select_meta, "selected"));
    size_t i;
    json_t *row;
    json_array_foreach(json_object_get(select_meta, "candidates"), i, row)
        if (sel && !strcmp(sel, json_string_value(json_object_get(row, "candidate"))))
            return row;
    return NULL;
}

static void print_checks(qp_buf *f, const json_t *checks)
{
    size_t k;
    json_t *c;
    qp_buf_printf(f, "| check | value | limit | margin |\n|---|---|---|---|\n");
    json_array_foreach(checks, k, c)
        qp_buf_printf(f, "| %s | %.6g | %s %.6g | %.6g |\n", json_string_value(json_object_get(c, "check")),
                json_number_value(json_object_get(c, "value")), json_string_value(json_object_get(c, "op")),
                json_number_value(json_object_get(c, "limit")), json_number_value(json_object_get(c, "margin")));
    qp_buf_printf(f, "\n");
}

/* select: the policy, every candidate with its size and verdict, then the
 * chosen candidate's gate checks. */
static void print_selection(qp_buf *f, const char *id, const json_t *meta)
{
    const json_t *row = selected_row(meta);
    qp_buf_printf(f, "Selection `%s` (policy `%s`): **%s** among %zu candidates\n\n| candidate | bytes | gate | verdict |\n"
               "|---|---|---|---|\n", id, json_string_value(json_object_get(meta, "policy")),
            row ? json_string_value(json_object_get(row, "candidate")) : "none",
            json_array_size(json_object_get(meta, "candidates")));
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(meta, "candidates"), i, r)
        qp_buf_printf(f, "| %s%s%s | %.0f | %s | %s |\n", r == row ? "**" : "", json_string_value(json_object_get(r, "candidate")),
                r == row ? "**" : "", json_number_value(json_object_get(r, "bytes")),
                json_string_value(json_object_get(r, "gate")),
                json_is_true(json_object_get(r, "passed")) ? "pass" : "fail");
    qp_buf_printf(f, "\n");
    if (row) {
        qp_buf_printf(f, "Gate `%s`: **pass**\n\n", json_string_value(json_object_get(row, "gate")));
        print_checks(f, json_object_get(row, "checks"));
    }
}

/* Every metric judged by the package's inputs: evaluate outputs directly,
 * and those a gate carried in its verdict. */
static json_t *collect_metrics(const qp_stage_ctx *ctx)
{
    json_t *all = json_object();
    for (size_t i = 0; i < ctx->n_inputs; i++) {
        const qp_artifact *a = ctx->inputs[i];
        if (qp_artifact_type_of(a) == QP_ART_METRICS)
            json_object_set(all, ctx->input_ids[i], (json_t *)qp_artifact_metrics_c(a));
        if (qp_artifact_type_of(a) == QP_ART_VERDICT) {
            const json_t *meta = qp_artifact_meta_c(a), *row = selected_row(meta);
            const char *k;
            json_t *v;
            json_object_foreach(json_object_get(row ? row : meta, "inputs"), k, v)
                json_object_set(all, k, v);
        }
    }
    return all;
}

static int write_text(const char *dir, const char *name, const char *text)
{
    char *path = qp_path_join(dir, name);
    int rc = qp_write_file_atomic(path, text, strlen(text), NULL);
    free(path);
    return rc;
}

/* Source and quantization: what the packaged artifact was made from, and how. */
static void print_quantization(qp_buf *f, const qp_stage_ctx *ctx, const qp_artifact *model, size_t model_index)
{
    const json_t *meta = qp_artifact_meta_c(model);
    const json_t *qparams = json_object_get(meta, "params");
    const json_t *qmetrics = qp_artifact_metrics_c(model);
    const char *method = json_string_value(json_object_get(meta, "method"));
    const char *source = json_string_value(json_object_get(meta, "source"));
    const char *src_digest = json_string_value(json_object_get(meta, "source_model"));
    const char *calib = json_string_value(json_object_get(meta, "calibration"));
    qp_buf_printf(f, "## Source\n\n| | |\n|---|---|\n");
    qp_buf_printf(f, "| source model | %s |\n", source ? source : "(unknown)");
    qp_buf_printf(f, "| source artifact | `%s` |\n", src_digest ? src_digest : ctx->input_digests[model_index]);
    qp_buf_printf(f, "| packaged artifact | `%s` |\n", ctx->input_digests[model_index]);
    qp_buf_printf(f, "\n## Quantization\n\n| | |\n|---|---|\n");
    qp_buf_printf(f, "| method | %s |\n", method ? method : "none (F32 export)");
    /* the parameters that matter for this method (its hints) */
    const qp_quant_method *qm = qp_quant_method_find(method);
    for (size_t i = 0; qparams && qm && qm->hints.card_keys[i]; i++) {
        const char *key = qm->hints.card_keys[i];
        const json_t *v = json_object_get(qparams, key);
        if (!v)
            continue;
        char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        qp_buf_printf(f, "| %s | %s |\n", key, s);
        free(s);
    }
    qp_buf_printf(f, "| importance matrix | %s |\n", json_is_true(json_object_get(meta, "imatrix")) ? "yes" : "no");
    qp_buf_printf(f, "| calibration | %s%s%s |\n", calib ? "artifact `" : "none", calib ? calib : "",
                  calib ? "`" : "");
    if (json_is_number(json_object_get(qmetrics, "bpw")))
        qp_buf_printf(f, "| bits per weight | %.4f (quantized tensors %.4f) |\n",
                      json_number_value(json_object_get(qmetrics, "bpw")),
                      json_number_value(json_object_get(qmetrics, "bpw_quantized")));
    if (json_is_number(json_object_get(qmetrics, "rel_error")))
        qp_buf_printf(f, "| relative weight error ‖W−Ŵ‖/‖W‖ | %.5f |\n",
                      json_number_value(json_object_get(qmetrics, "rel_error")));
}

/* which weights got more bits, and what each bought on the calibration windows */
static void print_mixed(qp_buf *f, const json_t *mixed)
{
    qp_buf_printf(f, "\nMixed precision: every weight starts at %s; measured alone on %lld calibration windows, "
                     "each raise below bought the most KL divergence per added byte.  KLD on those windows: "
                     "%.5f with every weight at %s, %.5f for this mix.\n\n| # | tensor | from | to | KLD gain | "
                     "bytes added |\n|---|---|---|---|---|---|\n",
                  json_string_value(json_array_get(json_object_get(mixed, "ladder"), 0)),
                  (long long)json_integer_value(json_object_get(mixed, "windows")),
                  json_number_value(json_object_get(mixed, "kld_lowest")),
                  json_string_value(json_array_get(json_object_get(mixed, "ladder"), 0)),
                  json_number_value(json_object_get(mixed, "kld_mix")));
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(mixed, "raised"), i, r)
        qp_buf_printf(f, "| %zu | %s | %s | %s | %.3g | %.0f |\n", i + 1,
                      json_string_value(json_object_get(r, "tensor")), json_string_value(json_object_get(r, "from")),
                      json_string_value(json_object_get(r, "to")), json_number_value(json_object_get(r, "kld_gain")),
                      json_number_value(json_object_get(r, "bytes_added")));
}

static void print_evaluation(qp_buf *f, const json_t *metrics)
{
    qp_buf_printf(f, "\n## Evaluation\n\n");
    if (json_object_size(metrics) == 0) {
        qp_buf_printf(f, "No evaluation was given to this package stage.\n");
        return;
    }
    qp_buf_printf(f, "| stage | metric | value |\n|---|---|---|\n");
    const char *stage;
    json_t *m;
    json_object_foreach((json_t *)metrics, stage, m) {
        const char *k;
        json_t *v;
        json_object_foreach(m, k, v)
            if (json_is_number(v))
                qp_buf_printf(f, "| %s | %s | %.6g |\n", stage, k, json_number_value(v));
    }
}

static void print_gates(qp_buf *f, const qp_stage_ctx *ctx)
{
    qp_buf_printf(f, "\n## Gates\n\n");
    int any_gate = 0;
    for (size_t i = 0; i < ctx->n_inputs; i++) {
        if (qp_artifact_type_of(ctx->inputs[i]) != QP_ART_VERDICT)
            continue;
        any_gate = 1;
        const json_t *vmeta = qp_artifact_meta_c(ctx->inputs[i]);
        if (json_object_get(vmeta, "candidates")) {
            print_selection(f, ctx->input_ids[i], vmeta);
            continue;
        }
        qp_buf_printf(f, "Gate `%s`: **%s**\n\n", ctx->input_ids[i],
                      json_string_value(json_object_get(vmeta, "verdict")));
        print_checks(f, json_object_get(vmeta, "checks"));
    }
    if (!any_gate)
        qp_buf_printf(f, "This package was not gated.\n\n");
}

static void print_file(qp_buf *f, const char *file_name, uint64_t file_size, const char *runtimes)
{
    char size_s[32], mem_s[32];
    human(size_s, sizeof(size_s), (double)file_size);
    /* weights plus an fp16 KV cache for the full context */
    human(mem_s, sizeof(mem_s), (double)file_size * 1.05 + 64.0 * 1024 * 1024);
    qp_buf_printf(f, "## File\n\n| | |\n|---|---|\n| file | `%s` |\n| size | %s (%llu bytes) |\n", file_name, size_s,
                  (unsigned long long)file_size);
    qp_buf_printf(f, "| memory estimate | about %s (weights + compute buffers; add the KV cache for your context) "
                     "|\n", mem_s);
    qp_buf_printf(f, "| compatible runtimes | %s |\n", runtimes);
    qp_buf_printf(f, "\nThe run record on branch `qpipe/provenance` (`qpipe log`) links this package's output "
                     "digest to the recipe digest and source commit.\n");
}

/* provenance.json: the stage, its inputs and params, the metrics and the file. */
static int write_provenance(const char *dir, const qp_stage_ctx *ctx, const json_t *qparams, json_t *metrics,
                            const char *file_name, uint64_t file_size)
{
    json_t *inputs = json_object();
    for (size_t i = 0; i < ctx->n_inputs; i++)
        json_object_set_new(inputs, ctx->input_ids[i], json_string(ctx->input_digests[i]));
    json_t *prov = json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:O, s:O, s:{s:s, s:I}}", "qpipe_version", QP_VERSION,
                             "numerics", QP_NUMERICS_PROFILE, "stage", ctx->id, "stage_key", ctx->stage_key, "kind",
                             "package", "inputs", inputs, "params", ctx->params, "metrics", metrics, "file", "name",
                             file_name, "size", (json_int_t)file_size);
    if (qparams)
        json_object_set(prov, "quantization", (json_t *)qparams);
    char *text = json_dumps(prov, JSON_SORT_KEYS | JSON_INDENT(2) | JSON_REAL_PRECISION(17));
    char *with_nl = qp_strfmt("%s\n", text);
    int rc = write_text(dir, "provenance.json", with_nl);
    free(with_nl);
    free(text);
    json_decref(prov);
    return rc;
}

int qp_model_card_write(const char *dir, const qp_stage_ctx *ctx, const qp_artifact *model, size_t model_index,
                        const char *file_name, uint64_t file_size, const char *runtimes)
{
    const json_t *meta = qp_artifact_meta_c(model);
    json_t *metrics = collect_metrics(ctx);
    qp_buf f = QP_BUF_INIT;
    qp_buf_printf(&f, "# %s\n\n", file_name);
    qp_buf_printf(&f, "Packaged by qpipe %s (stage `%s`, key `%s`), numerics profile `%s`.\n\n", QP_VERSION, ctx->id,
                  ctx->stage_key, QP_NUMERICS_PROFILE);
    print_quantization(&f, ctx, model, model_index);
    if (json_object_get(meta, "mixed"))
        print_mixed(&f, json_object_get(meta, "mixed"));
    print_evaluation(&f, metrics);
    print_gates(&f, ctx);
    print_file(&f, file_name, file_size, runtimes);
    int rc = write_text(dir, "MODEL_CARD.md", qp_buf_cstr(&f));
    qp_buf_free(&f);
    if (rc == 0)
        rc = write_provenance(dir, ctx, json_object_get(meta, "params"), metrics, file_name, file_size);
    json_decref(metrics);
    return rc;
}
