/* package: writes a deployable model into `out:` atomically — built in a
 * temp directory beside it, then swapped in — with a README.md (the Hub's
 * model card) and a provenance.json.  Refuses to run when any gate it needs rejected the
 * artifact.  The small files are cached like `run` outs and restored on a
 * cached run; the model file (the GGUF, model.safetensors) is not kept a
 * second time: the manifest records its digest, and a cached run whose copy
 * in out: is gone or changed packages again — from the cached quantized
 * tensors, the same bytes read and written as a restore would take, where
 * a cache copy would double every release's disk writes and space.
 * Everything written is derived from the stage's inputs and params
 * only (no clock, no HEAD), so `qpipe verify` can rebuild it bit for bit;
 * the run record on qpipe/provenance ties the output digest to the recipe
 * digest and source commit. */
#include "stages/kinds.h"
#include "stages/model_card.h"
#include "stages/package_gguf.h"
#include "stages/package_hf.h"
#include "stages/package_st.h"
#include "stages/qmethod.h"
#include "stages/qtensor.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/hash.h"
#include "common/numerics.h"
#include "common/version.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const qp_param_spec params[] = {
    {"format", QP_P_STRING, NULL, "gguf|gptq|awq|bitsandbytes|safetensors", 0, -1, QP_PF_REQUIRED,
     "output format (safetensors: the dequantized weights as a plain checkpoint)"},
    {"out", QP_P_PATH, NULL, NULL, 0, -1, QP_PF_REQUIRED, "output directory (replaced atomically)"},
    {"name", QP_P_STRING, "", NULL, 0, -1, 0, "artifact base name (default: source model and quantization)"},
    {"dtype", QP_P_STRING, "auto", "auto|f32|f16|bf16", 0, -1, 0,
     "safetensors: the float type written (auto: the source config.json's torch_dtype)"},
    {"max_shard_size", QP_P_STRING, "5GB", NULL, 0, -1, 0,
     "safetensors: shard past this size (5GB, 500MB, 2GiB, or a byte count as a string), with model.safetensors.index.json"},
    {"base_model", QP_P_STRING, "", NULL, 0, -1, 0,
     "model card: the Hub id of the source (default: the hf:// repository it was fetched from)"},
    {"license", QP_P_STRING, "", NULL, 0, -1, 0,
     "model card: the Hub license id (default: the source README.md's license:, with license_name/license_link for other)"},
    {NULL, 0, NULL, NULL, 0, 0, 0, NULL},
};

#define QP_OUT_MAX 1024       /* bytes of out: (PATH_MAX is 4096 with the recipe's directory before it) */
#define QP_OUT_WORD_MAX 200   /* bytes of one directory name of it: NAME_MAX 255 less a temporary suffix */

/* A name or path with a control character (qp_first_control_char):
 * refused before anything runs, as is a path the kernel would refuse only
 * after the stages ran (the limits). */
static int check_no_control(const char *s, const char *field, const char *where)
{
    const char *c = qp_first_control_char(s);
    if (c)
        return qp_error_set(QP_EUSAGE, "%s: %s: holds a control character (byte 0x%02x at %zu); give a plain name",
                            where, field, (unsigned char)*c, (size_t)(c - s));
    return 0;
}

/* out: by its words alone (the runner resolves '..' and checks what is on
 * disk before anything runs): a package replaces `out` whole and prunes
 * what it did not write, so "." would empty the recipe's directory, ".git"
 * replace the repository and ".qpipe" the cache. */
static int check_out_words(const char *out, const char *where)
{
    if (!out[0] || out[0] == '/')
        return qp_error_set(QP_EUSAGE, "%s: out: must be a relative directory (relative to the recipe)", where);
    int rc = check_no_control(out, "out", where);
    if (rc)
        return rc;
    size_t len = strlen(out);
    if (len > QP_OUT_MAX)
        return qp_error_set(QP_EUSAGE, "%s: out: is %zu bytes long; give a path of at most %d", where, len,
                            QP_OUT_MAX);
    size_t words = 0;
    for (const char *w = out; *w;) {
        size_t n = strcspn(w, "/");
        if (n > QP_OUT_WORD_MAX)
            return qp_error_set(QP_EUSAGE, "%s: out: has a directory name of %zu bytes; give names of at most %d "
                                "(NAME_MAX less the package's temporary suffix)", where, n, QP_OUT_WORD_MAX);
        if (n == 2 && strncmp(w, "..", 2) == 0 && words > 0)   /* "a/..", "x/../.qpipe": checked as written */
            return qp_error_set(QP_EUSAGE, "%s: out: '%s': '..' may only lead the path (../dist/x)", where, out);
        if (n == 1 && w[0] == '.' && w != out)   /* "dist/." renames "dist/." at the end: refused now */
            return qp_error_set(QP_EUSAGE, "%s: out: '%s': write it without '.' after the first word", where, out);
        if (n == 4 && strncmp(w, ".git", 4) == 0)
            return qp_error_set(QP_EUSAGE, "%s: out: '%s' is inside .git; give another directory", where, out);
        if (words == 0 && n == 6 && strncmp(w, ".qpipe", 6) == 0)
            return qp_error_set(QP_EUSAGE, "%s: out: '%s' is inside .qpipe, where the cache lives; give another "
                                "directory", where, out);
        words += n > 0 && !(n == 1 && w[0] == '.') && !(n == 2 && strncmp(w, "..", 2) == 0);
        w += n + (w[n] == '/');
    }
    if (words == 0)
        return qp_error_set(QP_EUSAGE, "%s: out: '%s' names no subdirectory (the recipe's directory or one above "
                            "it); give a subdirectory such as dist", where, out);
    return 0;
}

static int package_validate(const json_t *p, const char *where)
{
    const char *out = qp_param_str(p, "out");
    int rc = check_out_words(out, where);
    if (rc)
        return rc;
    const char *name = qp_param_str(p, "name");
    if (strchr(name, '/'))
        return qp_error_set(QP_EUSAGE, "%s: name: must be a file name, not a path", where);
    if ((rc = check_no_control(name, "name", where)) != 0)
        return rc;
    size_t len = strlen(name);
    if (len > QP_OUT_WORD_MAX)
        return qp_error_set(QP_EUSAGE, "%s: name: is %zu bytes long; give at most %d", where, len, QP_OUT_WORD_MAX);
    int st = !strcmp(qp_param_str(p, "format"), "safetensors");
    if (!st && strcmp(qp_param_str(p, "dtype"), "auto") != 0)
        return qp_error_set(QP_EUSAGE, "%s: dtype: applies to format safetensors only (the other formats fix "
                            "their dense dtype); remove it", where);
    if (!st && strcmp(qp_param_str(p, "max_shard_size"), "5GB") != 0)
        return qp_error_set(QP_EUSAGE, "%s: max_shard_size: applies to format safetensors only; remove it", where);
    uint64_t shard;
    if (st && (rc = qp_package_parse_size(&shard, qp_param_str(p, "max_shard_size"), where)) != 0)
        return rc;
    if (!qp_hub_id_ok(qp_param_str(p, "base_model"), 1))
        return qp_error_set(QP_EUSAGE, "%s: base_model: '%s' is not a Hub model id (ORG/NAME of letters, digits, "
                            "'-', '_', '.')", where, qp_param_str(p, "base_model"));
    if (!qp_hub_id_ok(qp_param_str(p, "license"), 0))
        return qp_error_set(QP_EUSAGE, "%s: license: '%s' is not a Hub license id (such as apache-2.0, mit, "
                            "llama3.2, other)", where, qp_param_str(p, "license"));
    return 0;
}

/* The method that made a quantized artifact (its hints), NULL for a plain model. */
static const qp_quant_method *method_of(const qp_artifact *model)
{
    return qp_quant_method_find(json_string_value(json_object_get(qp_artifact_meta_c(model), "method")));
}

/* "house-llama-Q4_K_M" from the source directory and the quantization. */
static void default_name(char *buf, size_t cap, const qp_artifact *model)
{
    const json_t *meta = qp_artifact_meta_c(model);
    const char *src = json_string_value(json_object_get(meta, "source"));
    const char *base = src ? strrchr(src, '/') : NULL;
    base = base ? base + 1 : src ? src : "model";
    const qp_quant_method *m = method_of(model);
    if (!m)
        snprintf(buf, cap, "%s-F32", base);
    else
        m->hints.package_name(buf, cap, base, m, json_object_get(meta, "params"), qp_artifact_metrics_c(model));
}

/* general.file_type of the GGUF export */
static unsigned file_type_of(const qp_artifact *model)
{
    const qp_quant_method *m = method_of(model);
    return m ? m->hints.gguf_file_type(model) : 0;
}

/* Adds a model file as "files/<rel_prefix>/<name>" by its digest only
 * (not kept in the cache: see the top of this file). */
static int add_model_file(qp_stage_ctx *ctx, const char *rel_prefix, const char *name, const char *digest,
                          uint64_t size)
{
    char *entry = qp_strfmt("files/%s/%s", rel_prefix, name);
    int rc = qp_artifact_add_uncached(ctx->output, entry, digest, size, json_pack("{s:s}", "kind", "file"));
    free(entry);
    return rc;
}

/* 1 for the files of a package that are its weights: kept in out: only
 * (by digest), not a second time in the cache. */
static int is_weights_file(const char *name)
{
    size_t n = strlen(name);
    return (n > 12 && !strcmp(name + n - 12, ".safetensors")) || (n > 5 && !strcmp(name + n - 5, ".gguf"));
}

/* Adds every file of dir as "files/<rel_prefix>/<name>": the weights
 * (is_weights_file) by digest only, the others stored in the cache. */
static int store_dir(qp_stage_ctx *ctx, const char *dir, const char *rel_prefix, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char *path = qp_path_join(dir, names[i]);
        int rc;
        if (is_weights_file(names[i])) {
            char digest[QP_HEX_LEN];
            struct stat st;
            rc = qp_sha256_file(digest, path);
            if (rc == 0 && stat(path, &st) != 0)
                rc = qp_error_errno(QP_ERROR, "%s: cannot stat the file just written", path);
            if (rc == 0)
                rc = add_model_file(ctx, rel_prefix, names[i], digest, (uint64_t)st.st_size);
            free(path);
            if (rc)
                return rc;
            continue;
        }
        char *entry = qp_strfmt("files/%s/%s", rel_prefix, names[i]);
        rc = qp_artifact_add_file(ctx->output, ctx->cache, entry, path, json_pack("{s:s}", "kind", "file"));
        free(entry);
        free(path);
        if (rc)
            return rc;
    }
    return 0;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every file of dir, MODEL card included, stored in name order. */
static int store_all(qp_stage_ctx *ctx, const char *dir, const char *rel_prefix)
{
    char **names = NULL;
    size_t n = 0;
    int rc = 0;
    DIR *d = opendir(dir);
    if (!d)
        rc = qp_error_errno(QP_ERROR, "%s: cannot list the package", dir);
    for (struct dirent *de; d && (de = readdir(d)) != NULL;) {
        if (de->d_name[0] == '.')
            continue;
        names = qp_xrealloc_array(names, n + 1, sizeof(*names));
        names[n++] = qp_xstrdup(de->d_name);
    }
    if (d)
        closedir(d);
    if (rc == 0) {
        qsort(names, n, sizeof(*names), cmp_name);
        rc = store_dir(ctx, dir, rel_prefix, (const char *const *)names, n);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

/* GPTQ / AWQ: the checkpoint directory (model.safetensors, config.json,
 * quantize_config.json, tokenizer files) written by qp_package_hf into dir,
 * then README.md and provenance.json. */
static int package_hf_dir(qp_stage_ctx *ctx, const char *dir, const char *rel_prefix, const qp_artifact *model,
                          size_t model_i, qp_hf_format format, const qp_card_file *card)
{
    char *what = qp_strfmt("stage '%s': input '%s'", ctx->id, ctx->input_ids[model_i]);
    int rc = qp_package_hf(dir, model, ctx->cache, format, what);
    free(what);
    if (rc == 0) {
        struct stat st;
        char *st_path = qp_path_join(dir, "model.safetensors");
        qp_card_file cf = *card;
        cf.file_name = "model.safetensors";
        cf.file_size = stat(st_path, &st) == 0 ? (uint64_t)st.st_size : 0;
        free(st_path);
        rc = qp_model_card_write(dir, ctx, model, model_i, &cf);
    }
    if (rc == 0)
        rc = store_all(ctx, dir, rel_prefix);
    return rc;
}

/* safetensors: the dequantized checkpoint (stages/package_st.h), then
 * README.md and provenance.json. */
static int package_st_dir(qp_stage_ctx *ctx, const char *dir, const char *rel_prefix, const qp_artifact *model,
                          size_t model_i, const qp_card_file *card)
{
    char *what = qp_strfmt("stage '%s': input '%s'", ctx->id, ctx->input_ids[model_i]);
    qp_dtype dtype = QP_DT_F32;
    uint64_t max_shard = 0;
    qp_card_file cf = *card;
    double t0 = qp_now();
    int rc = qp_package_st_dtype(&dtype, model, ctx->cache, qp_param_str(ctx->params, "dtype"), what);
    if (rc == 0)
        rc = qp_package_parse_size(&max_shard, qp_param_str(ctx->params, "max_shard_size"), what);
    if (rc == 0)
        rc = qp_package_st(dir, model, ctx->cache, dtype, max_shard, &cf.file_name, &cf.file_size, what);
    double t1 = qp_now();
    free(what);
    if (rc == 0) {
        cf.dtype = qp_dtype_name(dtype);
        rc = qp_model_card_write(dir, ctx, model, model_i, &cf);
    }
    if (rc == 0)
        rc = store_all(ctx, dir, rel_prefix);
    if (rc == 0)
        qp_progress_note(ctx->progress, "%s: %.1f MB of %s written in %.1f s (%.0f MB/s)", cf.file_name,
                         (double)cf.file_size / 1e6, qp_dtype_name(dtype), t1 - t0,
                         t1 > t0 ? (double)cf.file_size / 1e6 / (t1 - t0) : 0.0);
    return rc;
}

/* Replaces out_dir by tmp_dir: out -> out.old, tmp -> out, rm out.old. */
static int swap_in(const char *tmp_dir, const char *out_dir)
{
    char *old = NULL;
    int rc = 0;
    if (qp_path_exists(out_dir)) {
        old = qp_strfmt("%s.old-%d", out_dir, (int)getpid());
        qp_rm_rf(old);
        if (rename(out_dir, old) != 0) {
            rc = qp_error_errno(QP_ERROR, "%s: cannot move the previous package aside", out_dir);
            goto done;
        }
    }
    if (rename(tmp_dir, out_dir) != 0) {
        rc = qp_error_errno(QP_ERROR, "%s: cannot move the new package into place", out_dir);
        if (old)
            rename(old, out_dir);
        goto done;
    }
    char *parent = qp_path_dirname(out_dir);
    qp_fsync_dir(parent);
    free(parent);
    if (old)
        qp_rm_rf(old);
done:
    free(old);
    return rc;
}

/* The GGUF file (llama-quantize's record of the importance matrix, then
 * qpipe's keys), README.md and provenance.json, stored in that order. */
static int package_gguf_dir(qp_stage_ctx *ctx, const char *tmp, const char *rel, const char *name,
                            const qp_artifact *model, size_t model_i, const qp_card_file *card)
{
    char *work = qp_strfmt("%s/.work", tmp), *gguf_name = qp_strfmt("%s.gguf", name);
    char *gguf = qp_path_join(tmp, gguf_name);
    const json_t *meta = qp_artifact_meta_c(model);
    json_t *keys = json_object();
    const json_t *im = json_object_get(meta, "imatrix_info");
    if (im) {
        json_object_set(keys, "quantize.imatrix.file", json_object_get(im, "file"));
        json_object_set(keys, "quantize.imatrix.dataset", json_object_get(im, "dataset"));
        json_object_set(keys, "quantize.imatrix.entries_count", json_object_get(im, "entries_count"));
        json_object_set(keys, "quantize.imatrix.chunks_count", json_object_get(im, "chunks_count"));
    }
    json_object_set_new(keys, "qpipe.version", json_string(QP_VERSION));
    json_object_set_new(keys, "qpipe.numerics", json_string(QP_NUMERICS_PROFILE));
    json_object_set_new(keys, "qpipe.stage_key", json_string(ctx->stage_key));
    json_object_set_new(keys, "qpipe.source_artifact", json_string(ctx->input_digests[model_i]));
    const char *src_model = json_string_value(json_object_get(meta, "source_model"));
    if (src_model)
        json_object_set_new(keys, "qpipe.source_model", json_string(src_model));
    char *what = qp_strfmt("stage '%s': input '%s'", ctx->id, ctx->input_ids[model_i]);
    const char *src = json_string_value(json_object_get(meta, "source"));
    const char *model_dir_name = src && strrchr(src, '/') ? strrchr(src, '/') + 1 : name;
    double t0 = qp_now();
    char gguf_digest[QP_HEX_LEN];
    int rc = qp_package_gguf(gguf, model, ctx->cache, model_dir_name, file_type_of(model), keys, work, what,
                             gguf_digest);
    double t1 = qp_now();
    free(what);
    json_decref(keys);
    qp_rm_rf(work);
    uint64_t size = 0;
    if (rc == 0) {
        struct stat st;
        if (stat(gguf, &st) != 0)
            rc = qp_error_errno(QP_ERROR, "%s: cannot stat the GGUF just written", gguf);
        size = rc == 0 ? (uint64_t)st.st_size : 0;
    }
    qp_card_file cf = *card;
    cf.file_name = gguf_name;
    cf.file_size = size;
    if (rc == 0)
        rc = qp_model_card_write(tmp, ctx, model, model_i, &cf);
    const char *files[2] = {QP_MODEL_CARD_FILE, "provenance.json"};
    if (rc == 0)
        rc = add_model_file(ctx, rel, gguf_name, gguf_digest, size);
    if (rc == 0)
        rc = store_dir(ctx, tmp, rel, files, 2);
    /* where a package's time goes: reading and converting the tensors,
     * writing and hashing the GGUF in one pass, one fsync */
    if (rc == 0)
        qp_progress_note(ctx->progress, "%s: %.1f MB written in %.1f s (%.0f MB/s)", gguf_name,
                         (double)size / 1e6, t1 - t0, t1 > t0 ? (double)size / 1e6 / (t1 - t0) : 0.0);
    free(work);
    free(gguf);
    free(gguf_name);
    return rc;
}

/* The one model input (the one a select stage chose, when there is one),
 * after every gate among the inputs passed. */
static int package_input(const qp_artifact **model, size_t *model_i, qp_stage_ctx *ctx)
{
    /* a select stage among the inputs names which candidate to package */
    const char *selected = NULL;
    *model = NULL;
    for (size_t i = 0; i < ctx->n_inputs; i++)
        if (qp_artifact_type_of(ctx->inputs[i]) == QP_ART_VERDICT) {
            const char *sel = json_string_value(json_object_get(qp_artifact_meta_c(ctx->inputs[i]), "selected"));
            if (sel)
                selected = sel;
        }
    for (size_t i = 0; i < ctx->n_inputs; i++) {
        qp_artifact_type t = qp_artifact_type_of(ctx->inputs[i]);
        if (t == QP_ART_VERDICT) {
            const char *v = json_string_value(json_object_get(qp_artifact_meta_c(ctx->inputs[i]), "verdict"));
            if (!v || strcmp(v, "pass") != 0)
                return qp_error_set(QP_EGATE, "stage '%s': gate '%s' rejected the artifact; nothing packaged",
                                    ctx->id, ctx->input_ids[i]);
        }
        if ((t == QP_ART_MODEL || t == QP_ART_QMODEL) && (!selected || !strcmp(selected, ctx->input_ids[i]))) {
            if (*model)
                return qp_error_set(QP_EUSAGE, "stage '%s': needs exactly one model input, got '%s' and '%s'",
                                    ctx->id, ctx->input_ids[*model_i], ctx->input_ids[i]);
            *model = ctx->inputs[i];
            *model_i = i;
        }
    }
    if (!*model && selected)
        return qp_error_set(QP_EUSAGE, "stage '%s': select chose '%s', which is not among this stage's needs",
                            ctx->id, selected);
    if (!*model)
        return qp_error_set(QP_EUSAGE, "stage '%s': needs a model or quantized-model input", ctx->id);
    /* a quantized model names its method; one this build does not know
     * (a foreign or future cache entry) cannot be named or typed */
    const char *method = json_string_value(json_object_get(qp_artifact_meta_c(*model), "method"));
    if (method && !method_of(*model))
        return qp_error_set(QP_EFORMAT,
                            "stage '%s': input '%s' was quantized with method '%s', which this qpipe does not know; "
                            "rerun its quantize stage with this qpipe (--force=%s)",
                            ctx->id, ctx->input_ids[*model_i], method, ctx->input_ids[*model_i]);
    return 0;
}

/* ---- the package formats: how each writes its directory, and what the
 * model card says of it ---- */

typedef struct package_format {
    const char *name;   /* the `format:` value */
    int (*write)(const struct package_format *pf, qp_stage_ctx *ctx, const char *tmp, const char *rel,
                 const char *name, const qp_artifact *model, size_t model_i);
    qp_hf_format hf;    /* for the GPTQ / AWQ formats */
    qp_card_file card;  /* format, library, runtimes (the file is filled in by write) */
} package_format;

static int write_gguf(const package_format *pf, qp_stage_ctx *ctx, const char *tmp, const char *rel,
                      const char *name, const qp_artifact *model, size_t model_i)
{
    qp_card_file card = pf->card;
    card.title = name;
    return package_gguf_dir(ctx, tmp, rel, name, model, model_i, &card);
}

static int write_hf(const package_format *pf, qp_stage_ctx *ctx, const char *tmp, const char *rel, const char *name,
                    const qp_artifact *model, size_t model_i)
{
    qp_card_file card = pf->card;
    card.title = name;
    return package_hf_dir(ctx, tmp, rel, model, model_i, pf->hf, &card);
}

static int write_st(const package_format *pf, qp_stage_ctx *ctx, const char *tmp, const char *rel, const char *name,
                    const qp_artifact *model, size_t model_i)
{
    qp_card_file card = pf->card;
    card.title = name;
    return package_st_dir(ctx, tmp, rel, model, model_i, &card);
}

static const package_format formats[] = {
    {"gguf", write_gguf, 0, {.format = QP_CARD_GGUF,
     .runtimes = "llama.cpp (llama-cli, llama-server, llama-perplexity), Ollama, LM Studio and other GGUF v3 readers"}},
    {"gptq", write_hf, QP_HF_GPTQ, {.format = QP_CARD_GPTQ,
     .runtimes = "transformers (optimum / GPTQModel kernels), vLLM, GPTQModel, text-generation-inference"}},
    {"awq", write_hf, QP_HF_AWQ, {.format = QP_CARD_AWQ,
     .runtimes = "transformers (AutoAWQ GEMM kernels), vLLM, AutoAWQ, text-generation-inference"}},
    {"safetensors", write_st, 0, {.format = QP_CARD_SAFETENSORS,
     .runtimes = "anything that loads a float Hugging Face checkpoint: transformers, vLLM, text-generation-inference, "
                 "llama.cpp through convert_hf_to_gguf.py"}},
    {"bitsandbytes", write_hf, QP_HF_BNB, {.format = QP_CARD_BITSANDBYTES,
     .runtimes = "transformers + bitsandbytes (from_pretrained), vLLM"}},
};

/* The parameter table allows exactly these names, so a miss is a bug. */
static const package_format *format_find(const char *name)
{
    for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++)
        if (strcmp(formats[i].name, name) == 0)
            return &formats[i];
    return NULL;
}

/* path without trailing slashes (they would make the temp directory a child of out) */
static char *strip_slashes(char *path)
{
    for (size_t n = strlen(path); n > 1 && path[n - 1] == '/'; n--)
        path[n - 1] = '\0';
    return path;
}

/* A package killed mid-write (Ctrl-C, SIGKILL) leaves OUT.tmp-PID-XXXXXX
 * (or OUT.old-PID) beside OUT: a half-written copy of a model, never
 * reused.  Those of processes that no longer exist are removed; a live
 * one's (another run writing the same out:) is left alone. */
static void sweep_stale(const char *out_dir)
{
    char *parent = qp_path_dirname(out_dir);
    const char *base = strrchr(out_dir, '/');
    base = base ? base + 1 : out_dir;
    size_t nb = strlen(base);
    DIR *d = opendir(parent);
    for (struct dirent *de; d && (de = readdir(d)) != NULL;) {
        const char *n = de->d_name;
        if (strncmp(n, base, nb) != 0 || (strncmp(n + nb, ".tmp-", 5) != 0 && strncmp(n + nb, ".old-", 5) != 0))
            continue;
        char *end = NULL;
        long pid = strtol(n + nb + 5, &end, 10);
        if (pid <= 0 || pid == (long)getpid() || end == n + nb + 5 || (*end != '\0' && *end != '-'))
            continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        char *path = qp_path_join(parent, n);
        qp_rm_rf(path);
        free(path);
    }
    if (d)
        closedir(d);
    free(parent);
}

static int package_run(qp_stage_ctx *ctx)
{
    const qp_artifact *model = NULL;
    size_t model_i = 0;
    int rc = package_input(&model, &model_i, ctx);
    if (rc)
        return rc;
    const char *format = qp_param_str(ctx->params, "format");
    const package_format *pf = format_find(format);
    if (!pf)
        return qp_error_set(QP_EUSAGE, "stage '%s': format %s is not a package format (gguf, gptq, awq, "
                            "bitsandbytes or safetensors)", ctx->id, format);
    char name[200];
    if (qp_param_str(ctx->params, "name")[0])
        snprintf(name, sizeof(name), "%s", qp_param_str(ctx->params, "name"));
    else
        default_name(name, sizeof(name), model);
    /* a plain model's float export is named after the dtype written, not F32 */
    qp_dtype plain_dt;
    size_t nl = strlen(name);
    if (!qp_param_str(ctx->params, "name")[0] && !method_of(model) && !strcmp(format, "safetensors") && nl > 4 &&
        !strcmp(name + nl - 4, "-F32") &&
        qp_package_st_dtype(&plain_dt, model, ctx->cache, qp_param_str(ctx->params, "dtype"), ctx->id) == 0)
        snprintf(name + nl - 3, sizeof(name) - (nl - 3), "%s", qp_dtype_name(plain_dt));
    qp_error_clear();
    const char *out_rel = qp_param_str(ctx->params, "out");
    char *out_dir = strip_slashes(qp_stage_path(ctx, out_rel)), *rel = strip_slashes(qp_xstrdup(out_rel));
    char *parent = qp_path_dirname(out_dir);
    char *tmp = qp_strfmt("%s.tmp-%d-XXXXXX", out_dir, (int)getpid());
    rc = qp_mkdir_p(parent, 0755);
    if (rc == 0)
        sweep_stale(out_dir);
    if (rc == 0 && !mkdtemp(tmp))
        rc = qp_error_errno(QP_ERROR, "%s: cannot create a temporary directory", parent);
    if (rc)
        goto done;
    rc = pf->write(pf, ctx, tmp, rel, name, model, model_i);
    if (rc == 0)
        rc = swap_in(tmp, out_dir);
    if (rc == 0) {
        json_object_set_new(qp_artifact_meta(ctx->output), "workspace", json_true());
        json_object_set_new(qp_artifact_meta(ctx->output), "format", json_string(format));
        json_object_set_new(qp_artifact_meta(ctx->output), "out", json_string(rel));
    }
done:
    if (rc)
        qp_rm_rf(tmp);
    free(tmp);
    free(parent);
    free(rel);
    free(out_dir);
    return rc;
}

const qp_stage_kind qp_stage_package = {
    .name = "package", .version = 4,
    .doc = "write GGUF / GPTQ / AWQ / bitsandbytes / safetensors files, a Hub model card and provenance into out:",
    .params = params,
    .accepts = QP_ART_MODEL | QP_ART_QMODEL | QP_ART_VERDICT | QP_ART_METRICS | QP_ART_CALIB,
    .min_inputs = 1, .max_inputs = -1,
    .output = QP_ART_FILES,
    .float_numerics = 1,
    .validate = package_validate,
    .run = package_run,
};
