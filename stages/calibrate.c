/* calibrate: runs the unquantized model over seeded samples of a dataset and
 * collects, for the input of every linear layer, the Hessian H = 2/n Σ xxᵀ,
 * mean |x| (AWQ) and mean x² (the importance matrix).  The exact token
 * windows are part of the artifact, so sequential GPTQ/AWQ can replay them
 * and a rerun is bit-identical.  The importance matrix is also written as
 * llama.cpp's imatrix.dat (GGUF tensor names), usable by llama-quantize. */
#include "stages/kinds.h"
#include "stages/act_store.h"
#include "stages/calib_ckpt.h"
#include "stages/calib_stats.h"
#include "stages/dataset.h"
#include "stages/model_load.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/rng.h"
#include "quant/imatrix.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const qp_param_spec params[] = {
    {"dataset", QP_P_PATH_LIST, NULL, NULL, 0, -1, QP_PF_REQUIRED | QP_PF_CONTENT,
     "text or JSONL file(s) the samples are drawn from (concatenated)"},
    {"field", QP_P_STRING, "text", NULL, 0, -1, 0, "JSONL field holding the text"},
    {"samples", QP_P_INT, "128", NULL, 1, 1000000, 0, "number of sequences"},
    {"seq_len", QP_P_INT, "0", NULL, 0, 1048576, 0, "tokens per sequence, BOS included when the model has one (0 = model context)"},
    {"seed", QP_P_INT, "0", NULL, 0, 4294967295.0, 0, "seed of the sample generator (SplitMix64)"},
    {"hessians", QP_P_BOOL, "true", NULL, 0, -1, 0,
     "store the per-layer Hessians (needed by non-sequential GPTQ; large for big models)"},
    {NULL, 0, NULL, NULL, 0, 0, 0, NULL},
};

/* Tokens of all dataset files, concatenated (no BOS: samples get their own). */
static int load_stream(qp_stage_ctx *ctx, const qp_tokenizer *tok, int **out, size_t *n_out)
{
    int *all = NULL;
    size_t n = 0;
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(ctx->params, "dataset"), i, v) {
        char *path = qp_stage_path(ctx, json_string_value(v)), *text = NULL;
        size_t len = 0, m = 0;
        int *ids = NULL;
        int rc = qp_dataset_read(&text, &len, path, qp_param_str(ctx->params, "field"));
        if (rc == 0)
            rc = qp_tokenizer_encode(tok, text, len, 0, &ids, &m);
        free(text);
        free(path);
        if (rc == 0) {
            all = qp_xrealloc_array(all, n + m + 1, sizeof(int));
            memcpy(all + n, ids, m * sizeof(int));
            n += m;
        }
        free(ids);
        if (rc) {
            qp_error_prefix("stage '%s': dataset %s", ctx->id, json_string_value(v));
            free(all);
            return rc;
        }
    }
    *out = all;
    *n_out = n;
    return 0;
}

static int add_f32(qp_stage_ctx *ctx, const char *name, const float *data, size_t n, json_t *shape)
{
    return qp_artifact_add_bytes(ctx->output, ctx->cache, name, data, n * sizeof(float),
                                 json_pack("{s:s, s:s, s:s, s:o}", "kind", "tensor", "format", "dense", "dtype",
                                           "F32", "shape", shape));
}

/* Layer l's statistics, in the entry order the stage has always written
 * (site by site: act_absmean, act_sqmean, hessian), then its Hessian
 * accumulators are freed: one layer's Hessians are held at a time. */
static int store_layer_stats(qp_stage_ctx *ctx, qp_calib_stats *cs, int l, int hessians)
{
    int rc = 0;
    for (int k = 0; k < 4 && rc == 0; k++) {
        qp_site_stats *st = &cs->sites[l * 4 + k];
        size_t d = st->dim;
        free(st->scratch);   /* the per-window product is done: not held beside v */
        st->scratch = NULL;
        float *v = qp_xmalloc((hessians ? d * d : d) * sizeof(float));
        char name[96];
        for (size_t i = 0; i < d; i++)
            v[i] = (float)(st->abs_sum[i] / (double)st->n);
        snprintf(name, sizeof(name), "act_absmean/layers.%d.%s", l, qp_site_name((qp_llama_site)k));
        rc = add_f32(ctx, name, v, d, json_pack("[I]", (json_int_t)d));
        for (size_t i = 0; rc == 0 && i < d; i++)
            v[i] = (float)(st->sq_sum[i] / (double)st->n);
        snprintf(name, sizeof(name), "act_sqmean/layers.%d.%s", l, qp_site_name((qp_llama_site)k));
        if (rc == 0)
            rc = add_f32(ctx, name, v, d, json_pack("[I]", (json_int_t)d));
        if (rc == 0 && hessians) {
            if (qp_site_hessian_f32(st, v) != 0)
                rc = qp_error_set(QP_ERROR, "internal: %s has no Hessian accumulated",
                                  qp_site_name((qp_llama_site)k));
            snprintf(name, sizeof(name), "hessian/layers.%d.%s", l, qp_site_name((qp_llama_site)k));
            if (rc == 0)
                rc = add_f32(ctx, name, v, d * d, json_pack("[I,I]", (json_int_t)d, (json_int_t)d));
        }
        free(v);
        qp_site_stats_hessian(st, 0);
    }
    return rc;
}

/* llama.cpp's imatrix.dat: one entry per weight, GGUF names, values =
 * Σx²/count · ncall (what llama-imatrix saves); ncall = windows. */
static int store_imatrix(qp_stage_ctx *ctx, const qp_calib_stats *cs, const char *dataset_name)
{
    qp_imatrix *im = NULL;
    int rc = qp_imatrix_new(&im);
    char *dir = qp_path_join(qp_cache_dir(ctx->cache), "tmp"), *tmp = NULL;
    int fd = -1;
    for (int l = 0; l < cs->n_layers && rc == 0; l++)
        for (int k = 0; k < 4 && rc == 0; k++) {
            const qp_site_stats *st = &cs->sites[l * 4 + k];
            const char *names[3];
            size_t nw = qp_site_gguf_weights((qp_llama_site)k, names);
            float *values = qp_xmalloc(st->dim * sizeof(float));
            for (size_t i = 0; i < st->dim; i++)
                values[i] = (float)(st->sq_sum[i] / (double)st->n) * (float)st->calls;
            for (size_t w = 0; w < nw && rc == 0; w++) {
                char name[96];
                snprintf(name, sizeof(name), "blk.%d.%s.weight", l, names[w]);
                rc = qp_imatrix_set(im, name, (int32_t)st->calls, values, (int32_t)st->dim);
            }
            free(values);
        }
    if (rc == 0) {
        qp_imatrix_set_last_call(im, (int32_t)cs->sites[0].calls);
        rc = qp_imatrix_set_dataset(im, dataset_name);
    }
    if (rc == 0 && (rc = qp_mkdir_p(dir, 0755)) == 0 && (rc = qp_mkstemp_in(dir, "imatrix", &tmp, &fd)) == 0) {
        close(fd);
        if ((rc = qp_imatrix_write(im, tmp)) == 0)
            rc = qp_artifact_add_file(ctx->output, ctx->cache, "files/imatrix.dat", tmp,
                                      json_pack("{s:s}", "kind", "file"));
        unlink(tmp);
    }
    free(tmp);
    free(dir);
    qp_imatrix_free(im);
    return rc;
}

/* The first site of layer l whose statistics are not finite, as the stage's error: a
 * NaN/inf weight poisons every activation after it, and the imatrix check
 * downstream would otherwise blame the calibration data (and exit 2). */
static int check_finite_stats(const qp_stage_ctx *ctx, const qp_calib_stats *cs, int l)
{
    for (int k = 0; k < 4; k++) {
        const qp_site_stats *st = &cs->sites[l * 4 + k];
        for (size_t i = 0; i < st->dim; i++)
            if (!isfinite(st->sq_sum[i]))
                return qp_error_set(QP_EFORMAT, "stage '%s': input '%s': the activations entering layer %d's "
                                                "%s (column %zu) are not finite: check the checkpoint for NaN "
                                                "or infinite weights",
                                    ctx->id, ctx->input_ids[0], l, qp_site_name((qp_llama_site)k), i);
    }
    return 0;
}

static int calibrate_run(qp_stage_ctx *ctx)
{
    qp_loaded_model *model = NULL;
    qp_calib_stats cs = {0};
    qp_act_store *acts = NULL;
    int *stream = NULL;
    int32_t *windows = NULL;
    size_t n_stream = 0;
    int rc;
    char *what = qp_strfmt("stage '%s': input '%s'", ctx->id, ctx->input_ids[0]);
    if ((rc = qp_loaded_model_open(&model, ctx->inputs[0], ctx->cache, ctx->threads, what)) != 0)
        goto done;
    qp_llama *m = qp_loaded_model_llama(model);
    const qp_tokenizer *tok = qp_loaded_model_tokenizer(model);
    const qp_llama_hparams *hp = qp_llama_get_hparams(m);
    size_t samples = (size_t)qp_param_int(ctx->params, "samples");
    size_t seq_len = (size_t)qp_param_int(ctx->params, "seq_len");
    if (seq_len == 0)
        seq_len = (size_t)hp->max_pos;
    if (seq_len < 2 || seq_len > (size_t)hp->max_pos) {
        rc = qp_error_set(QP_EUSAGE, "stage '%s': seq_len %zu must be 2..%d (the model context)", ctx->id, seq_len,
                          hp->max_pos);
        goto done;
    }
    /* BOS first exactly when the tokenizer adds one (as evaluate does);
     * without one, every position of a window is text */
    int bos = qp_tokenizer_wants_bos(tok) ? qp_tokenizer_bos(tok) : -1;
    if ((rc = load_stream(ctx, tok, &stream, &n_stream)) != 0)
        goto done;
    size_t body = bos >= 0 ? seq_len - 1 : seq_len;
    if (n_stream < body) {
        rc = qp_error_set(QP_EUSAGE, "stage '%s': the datasets hold %zu tokens, fewer than one sample of %zu",
                          ctx->id, n_stream, seq_len);
        goto done;
    }
    /* sample windows: [BOS] + `body` consecutive tokens at seeded offsets */
    windows = qp_xmalloc(samples * seq_len * sizeof(int32_t));
    json_t *offsets = json_array();
    qp_rng rng;
    qp_rng_seed(&rng, (uint64_t)qp_param_int(ctx->params, "seed"));
    for (size_t s = 0; s < samples; s++) {
        size_t off = (size_t)qp_rng_below(&rng, (uint64_t)(n_stream - body + 1));
        int32_t *w = windows + s * seq_len;
        size_t k = 0;
        if (bos >= 0)
            w[k++] = bos;
        memcpy(w + k, stream + off, body * sizeof(int32_t));
        json_array_append_new(offsets, json_integer((json_int_t)off));
    }
    int hessians = qp_param_bool(ctx->params, "hessians");
    qp_calib_stats_init(&cs, hp, 0);
    rc = qp_artifact_add_bytes(ctx->output, ctx->cache, "samples", windows, samples * seq_len * sizeof(int32_t),
                               json_pack("{s:s, s:s, s:s, s:[I,I]}", "kind", "tensor", "format", "dense", "dtype",
                                         "I32", "shape", (json_int_t)samples, (json_int_t)seq_len));
    /* Layer by layer over all windows (the statistics of each site see the
     * windows in the same order as a whole forward pass per window, so the
     * bytes are the same): one layer's activations [samples, seq_len, D]
     * (spilled to disk beyond the budget, stages/act_store.h) and one
     * layer's Hessians are held, then stored. */
    const size_t wf = seq_len * (size_t)hp->hidden;
    float *buf = qp_xmalloc(wf * sizeof(float)), *xs = NULL;
    if (rc == 0)
        rc = qp_act_store_new(&acts, ctx->cache, samples, wf, 1, what);
    for (size_t s = 0; s < samples && rc == 0; s++) {
        xs = qp_act_store_slot(acts, s, buf);
        if ((rc = qp_llama_embed(m, windows + s * seq_len, seq_len, xs)) == 0)
            rc = qp_act_store_put(acts, s, xs);
    }
    if (rc == 0 && qp_act_store_spilled(acts))
        qp_progress_note(ctx->progress, "activations spilled to disk: %zu x %zu x %d f32 exceed QPIPE_ACT_MEM",
                         samples, seq_len, hp->hidden);
    double t0 = qp_now();
    /* a killed run's checkpoint: x, the sums and entries of its layers */
    qp_calib_ckpt *cc = qp_calib_ckpt_new(ctx, &cs, hp);
    int start = 0;
    if (rc == 0)
        rc = qp_calib_ckpt_resume(cc, acts, samples, wf, &start);
    for (int l = start; l < hp->n_layers && rc == 0; l++) {
        for (int k = 0; k < 4; k++)
            qp_site_stats_hessian(&cs.sites[l * 4 + k], hessians);
        for (size_t s = 0; s < samples && rc == 0; s++)
            if ((rc = qp_act_store_get(acts, s, buf, &xs)) == 0 &&
                (rc = qp_llama_layer(m, l, xs, seq_len, qp_calib_stats_observe, &cs)) == 0)
                rc = qp_act_store_put(acts, s, xs);
        if (rc == 0)
            rc = check_finite_stats(ctx, &cs, l);
        if (rc == 0)
            rc = store_layer_stats(ctx, &cs, l, hessians);
        if (rc == 0)
            rc = qp_calib_ckpt_save(cc, l, acts, samples, wf);
        qp_progress_update(ctx->progress, (uint64_t)(l + 1) * samples * seq_len,
                           (uint64_t)hp->n_layers * samples * seq_len, "layer-tokens");
    }
    if (rc == 0)
        qp_calib_ckpt_finish(cc);
    qp_calib_ckpt_free(cc);
    double secs = qp_now() - t0;
    free(buf);
    if (rc) {
        json_decref(offsets);
        goto done;
    }
    {
        const char *first = json_string_value(json_array_get(json_object_get(ctx->params, "dataset"), 0));
        const char *base = strrchr(first, '/');
        rc = store_imatrix(ctx, &cs, base ? base + 1 : first);
    }
    json_t *meta = qp_artifact_meta(ctx->output);
    json_object_set_new(meta, "offsets", offsets);
    json_object_set_new(meta, "samples", json_integer((json_int_t)samples));
    json_object_set_new(meta, "seq_len", json_integer((json_int_t)seq_len));
    json_object_set_new(meta, "stream_tokens", json_integer((json_int_t)n_stream));
    json_object_set_new(meta, "model", json_string(ctx->input_digests[0]));
    qp_artifact_set_metric(ctx->output, "tokens", (double)(samples * seq_len));
    qp_artifact_set_metric(ctx->output, "samples", (double)samples);
    qp_progress_note(ctx->progress, "%.0f tokens/s", secs > 0 ? (double)(samples * seq_len) / secs : 0.0);
done:
    qp_act_store_free(acts);
    qp_calib_stats_free(&cs);
    free(windows);
    free(stream);
    free(what);
    qp_loaded_model_free(model);
    return rc;
}

const qp_stage_kind qp_stage_calibrate = {
    .name = "calibrate", .version = 1,
    .doc = "collect Hessians, activation statistics and the importance matrix",
    .params = params,
    .accepts = QP_ART_MODEL, .min_inputs = 1, .max_inputs = 1,
    .output = QP_ART_CALIB,
    .float_numerics = 1,
    .uses_threads = 1,
    .run = calibrate_run,
};
