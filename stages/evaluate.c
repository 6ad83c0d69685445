/* evaluate: perplexity (two protocols), KL divergence / top-1 / Δp against
 * a reference stage's model run in lockstep (no logits on disk), and
 * multiple-choice accuracy.  Output: a metrics artifact the gate reads. */
#include "stages/kinds.h"
#include "stages/dataset.h"
#include "stages/model_load.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "model/eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const qp_param_spec params[] = {
    {"dataset", QP_P_PATH_LIST, NULL, NULL, 0, -1, QP_PF_REQUIRED | QP_PF_CONTENT,
     "text or JSONL file(s) scored for perplexity (each file its own stream)"},
    {"field", QP_P_STRING, "text", NULL, 0, -1, 0, "JSONL field holding the text"},
    {"protocol", QP_P_STRING, "windows", "windows|llama.cpp", 0, -1, 0, "perplexity protocol"},
    {"ctx", QP_P_INT, "0", NULL, 0, 1048576, 0, "window length in tokens (0 = model context)"},
    {"max_tokens", QP_P_INT, "0", NULL, 0, 1e15, 0, "use at most this many tokens per file (0 = all)"},
    {"max_chunks", QP_P_INT, "0", NULL, 0, 1e15, 0, "score at most this many windows in all (0 = all)"},
    {"mc", QP_P_PATH, "", NULL, 0, -1, QP_PF_CONTENT,
     "multiple-choice JSONL {ctx, endings, label} for acc / acc_norm"},
    {"reference", QP_P_STRING, "", "metrics", 0, -1, QP_PF_STAGE,
     "evaluate stage of the unquantized model: adds KLD, top-1, RMS dp, ppl delta/ratio"},
    {NULL, 0, NULL, NULL, 0, 0, 0, NULL},
};

static void on_tokens(void *ud, uint64_t done, uint64_t total)
{
    qp_progress_update(ud, done, total, "tokens");
}

static void on_items(void *ud, uint64_t done, uint64_t total)
{
    qp_progress_update(ud, done, total, "mc items");
}

static int load_mc(const char *path, qp_mc_item **items_out, size_t *n_out, json_t **keep)
{
    char *raw = NULL;
    size_t n = 0, count = 0, cap = 0, line_no = 0;
    int rc = qp_read_file(path, &raw, &n);
    if (rc)
        return rc;
    json_t *all = json_array();
    qp_mc_item *items = NULL;
    char *save = NULL;
    for (char *line = strtok_r(raw, "\n", &save); line && rc == 0; line = strtok_r(NULL, "\n", &save)) {
        line_no++;
        if (!line[0])
            continue;
        json_error_t jerr;
        json_t *rec = json_loads(line, 0, &jerr);
        json_t *endings = json_object_get(rec, "endings");
        json_t *label = json_object_get(rec, "label");
        if (!json_is_string(json_object_get(rec, "ctx")) || !json_is_array(endings) ||
            json_array_size(endings) < 2 || !json_is_integer(label) || json_integer_value(label) < 0 ||
            (size_t)json_integer_value(label) >= json_array_size(endings)) {
            rc = qp_error_set(QP_EFORMAT, "%s:%zu: %s", path, line_no,
                              rec ? "expected {\"ctx\": str, \"endings\": [str, str, …], \"label\": index}" : jerr.text);
            json_decref(rec);
            break;
        }
        if (count == cap) {
            cap = cap ? cap * 2 : 256;
            items = qp_xrealloc_array(items, cap, sizeof(*items));
        }
        qp_mc_item *it = &items[count++];
        it->ctx = json_string_value(json_object_get(rec, "ctx"));
        it->n_endings = json_array_size(endings);
        const char **e = qp_xcalloc(it->n_endings, sizeof(*e));
        for (size_t k = 0; k < it->n_endings; k++) {
            e[k] = json_string_value(json_array_get(endings, k));
            if (!e[k]) {
                rc = qp_error_set(QP_EFORMAT, "%s:%zu: ending %zu is not a string", path, line_no, k);
                break;
            }
        }
        it->endings = e;
        it->label = (int)json_integer_value(label);
        json_array_append_new(all, rec);
    }
    free(raw);
    if (rc == 0 && count == 0)
        rc = qp_error_set(QP_EFORMAT, "%s: no multiple-choice items", path);
    if (rc) {
        for (size_t i = 0; i < count; i++)
            free((void *)items[i].endings);
        free(items);
        json_decref(all);
        return rc;
    }
    *items_out = items;
    *n_out = count;
    *keep = all;
    return 0;
}

static void set_metric(qp_stage_ctx *ctx, const char *name, double v)
{
    qp_artifact_set_metric(ctx->output, name, v);
}

/* The model under test (the input) and, with `reference:`, the model the
 * reference stage evaluated (its input), run in lockstep. */
static int open_models(qp_stage_ctx *ctx, const qp_named_stage *rs, qp_loaded_model **model, qp_loaded_model **ref)
{
    char *what = qp_strfmt("stage '%s': input '%s'", ctx->id, ctx->input_ids[0]);
    int rc = qp_loaded_model_open_resident(model, ctx->inputs[0], ctx->cache, ctx->threads, what);
    free(what);
    if (rc || !rs)
        return rc;
    const qp_artifact *ref_model = rs->n_inputs ? rs->inputs[0] : NULL;
    if (!ref_model || !(qp_artifact_type_of(ref_model) & (QP_ART_MODEL | QP_ART_QMODEL)))
        return qp_error_set(QP_EUSAGE, "stage '%s': reference '%s' must be an evaluate stage of a model", ctx->id,
                            rs->id);
    what = qp_strfmt("stage '%s': reference '%s'", ctx->id, rs->id);
    rc = qp_loaded_model_open_resident(ref, ref_model, ctx->cache, ctx->threads, what);
    free(what);
    if (rc == 0 && strcmp(qp_loaded_model_tokenizer_digest(*model), qp_loaded_model_tokenizer_digest(*ref)) != 0)
        rc = qp_error_set(QP_EUSAGE, "stage '%s': the model and reference '%s' have different tokenizers; "
                                     "KL divergence needs the same vocabulary", ctx->id, rs->id);
    return rc;
}

/* Scores every `dataset` file as its own stream into acc (the whole file
 * tokenized, BOS first when the model has one); *tokens_run counts the
 * tokens fed. */
static int score_datasets(qp_stage_ctx *ctx, qp_loaded_model *model, qp_loaded_model *ref, qp_eval_acc *acc,
                          uint64_t *tokens_run)
{
    qp_llama *m = qp_loaded_model_llama(model);
    const qp_tokenizer *tok = qp_loaded_model_tokenizer(model);
    size_t ctx_len = (size_t)qp_param_int(ctx->params, "ctx");
    if (ctx_len == 0)
        ctx_len = (size_t)qp_llama_get_hparams(m)->max_pos;
    qp_ppl_protocol proto = strcmp(qp_param_str(ctx->params, "protocol"), "llama.cpp") == 0 ? QP_PPL_LLAMACPP
                                                                                           : QP_PPL_WINDOWS;
    size_t max_tokens = (size_t)qp_param_int(ctx->params, "max_tokens");
    size_t max_chunks = (size_t)qp_param_int(ctx->params, "max_chunks");
    /* BOS first exactly when the tokenizer adds one by default (SentencePiece
     * LLaMA: yes; Qwen2: none); model/eval.h says which tokens are scored */
    int bos = qp_tokenizer_wants_bos(tok) ? qp_tokenizer_bos(tok) : -1;
    int rc = 0;
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(ctx->params, "dataset"), i, v) {
        char *path = qp_stage_path(ctx, json_string_value(v)), *text = NULL;
        size_t len = 0, n = 0;
        int *ids = NULL;
        rc = qp_dataset_read(&text, &len, path, qp_param_str(ctx->params, "field"));
        if (rc == 0)
            rc = qp_tokenizer_encode(tok, text, len, bos >= 0 ? QP_TOK_ADD_BOS : 0u, &ids, &n);
        if (rc == 0) {
            if (max_tokens && n > max_tokens)
                n = max_tokens;
            *tokens_run += n;
            rc = qp_eval_stream(acc, m, ref ? qp_loaded_model_llama(ref) : NULL, (const int32_t *)ids, n, bos,
                                proto, ctx_len, max_chunks, on_tokens, ctx->progress);
        }
        if (rc)
            qp_error_prefix("stage '%s': dataset %s", ctx->id, json_string_value(v));
        free(ids);
        free(text);
        free(path);
        if (rc)
            break;
    }
    return rc;
}

static void set_ppl_metrics(qp_stage_ctx *ctx, const qp_eval_result *r, int with_ref)
{
    set_metric(ctx, "ppl", r->ppl);
    set_metric(ctx, "nll", r->nll_mean);
    set_metric(ctx, "tokens_scored", (double)r->scored);
    set_metric(ctx, "windows", (double)r->windows);
    if (!with_ref)
        return;
    set_metric(ctx, "ppl_ref", r->ppl_ref);
    set_metric(ctx, "ppl_delta", r->ppl_delta);
    set_metric(ctx, "ppl_ratio", r->ppl_ratio);
    set_metric(ctx, "kld_mean", r->kld_mean);
    set_metric(ctx, "kld_p99", r->kld_p99);
    set_metric(ctx, "kld_median", r->kld_median);
    set_metric(ctx, "top1", r->top1);
    set_metric(ctx, "rms_dp", r->rms_dp);
}

/* Multiple-choice accuracy over `mc` (a no-op when it is ""); with a
 * reference, acc_drop against the accuracy it measured. */
static int score_mc(qp_stage_ctx *ctx, qp_loaded_model *model, const qp_named_stage *rs)
{
    const char *mc = qp_param_str(ctx->params, "mc");
    if (!mc || !mc[0])
        return 0;
    char *path = qp_stage_path(ctx, mc);
    qp_mc_item *items = NULL;
    size_t n_items = 0;
    json_t *keep = NULL;
    int rc = load_mc(path, &items, &n_items, &keep);
    qp_mc_result mr;
    if (rc == 0)
        rc = qp_eval_mc(&mr, qp_loaded_model_llama(model), qp_loaded_model_tokenizer(model), items, n_items, on_items,
                        ctx->progress);
    if (rc == 0) {
        set_metric(ctx, "acc", mr.acc);
        set_metric(ctx, "acc_norm", mr.acc_norm);
        set_metric(ctx, "mc_items", (double)mr.items);
        const json_t *ra = rs ? json_object_get(qp_artifact_metrics_c(rs->output), "acc") : NULL;
        if (json_is_number(ra))
            set_metric(ctx, "acc_drop", json_number_value(ra) - mr.acc);
    } else {
        qp_error_prefix("stage '%s': mc", ctx->id);
    }
    for (size_t k = 0; k < n_items; k++)
        free((void *)items[k].endings);
    free(items);
    json_decref(keep);
    free(path);
    return rc;
}

/* A NaN/inf weight makes the logits non-finite: jansson cannot store such a
 * metric, so without this check the stage "succeeded" with ppl and nll
 * silently missing from a cached artifact. */
static int check_finite_result(const qp_stage_ctx *ctx, const qp_eval_result *r, int with_ref, const char *ref_id)
{
    /* fabs: a NaN's sign depends on which FMA operand carried it (common/gemm.h leaves it open) */
    if (!isfinite(r->nll_mean))
        return qp_error_set(QP_EFORMAT, "stage '%s': input '%s': the mean NLL is %g: the model's logits are not "
                                        "finite; check the checkpoint for NaN or infinite weights",
                            ctx->id, ctx->input_ids[0], fabs(r->nll_mean));
    if (with_ref && !(isfinite(r->ppl_ref) && isfinite(r->kld_mean)))
        return qp_error_set(QP_EFORMAT, "stage '%s': reference '%s': its logits are not finite (KL divergence %g); "
                                        "check that model's checkpoint for NaN or infinite weights",
                            ctx->id, ref_id, r->kld_mean);
    return 0;
}

static int evaluate_run(qp_stage_ctx *ctx)
{
    const qp_named_stage *rs = qp_stage_named(ctx, "reference");
    qp_loaded_model *model = NULL, *ref = NULL;
    qp_eval_acc *acc = NULL;
    uint64_t tokens_run = 0;
    double t0 = 0;
    qp_eval_result r;
    int rc = open_models(ctx, rs, &model, &ref);
    if (rc == 0)
        rc = qp_eval_acc_new(&acc, ref != NULL);
    t0 = qp_now();
    if (rc == 0)
        rc = score_datasets(ctx, model, ref, acc, &tokens_run);
    if (rc == 0 && (rc = qp_eval_finish(acc, &r)) != 0)
        qp_error_prefix("stage '%s'", ctx->id);
    if (rc == 0)
        rc = check_finite_result(ctx, &r, ref != NULL, rs ? rs->id : "");
    if (rc == 0) {
        double secs = qp_now() - t0;
        set_ppl_metrics(ctx, &r, ref != NULL);
        /* timings are reported, not stored: the artifact must be deterministic */
        qp_progress_note(ctx->progress, "%.0f tokens/s", secs > 0 ? (double)tokens_run / secs : 0.0);
        rc = score_mc(ctx, model, rs);
    }
    qp_eval_acc_free(acc);
    qp_loaded_model_free(ref);
    qp_loaded_model_free(model);
    return rc;
}

const qp_stage_kind qp_stage_evaluate = {
    .name = "evaluate", .version = 1,
    .doc = "perplexity, KL divergence vs a reference, multiple-choice accuracy",
    .params = params,
    .accepts = QP_ART_MODEL | QP_ART_QMODEL, .min_inputs = 1, .max_inputs = 1,
    .output = QP_ART_METRICS,
    .float_numerics = 1,
    .uses_threads = 1,
    .run = evaluate_run,
};
