/* fetch: brings a model or data into the cache — a local file or directory,
 * a directory of a git repository at a pinned commit (libgit2), or a
 * Hugging Face Hub repository at a revision (hf://ORG/NAME[@REV], libcurl).
 *
 * Key: the content digests of every file (local; memoised, so an unchanged
 * 10 GB checkpoint is not re-read), the URL, commit and path (git), or the
 * repository, resolved commit, file list and allow/ignore globs (hf) — not
 * the local path string, so moving a model directory reruns nothing, and
 * not the Hub endpoint, so a mirror serves the same key.
 * Output: a model artifact when the directory holds config.json and
 * safetensors weights (each tensor its own object, so unchanged tensors are
 * stored once across stages and recipes), a files artifact otherwise. */
#include "stages/kinds.h"
#include "stages/fetch_source.h"
#include "stages/fetch_hf.h"
#include "common/error.h"
#include "common/fsutil.h"

#include <stdlib.h>
#include <string.h>

static const qp_param_spec params[] = {
    {"source", QP_P_STRING, NULL, NULL, 0, -1, QP_PF_REQUIRED | QP_PF_UNKEYED,
     "local file/directory (relative to the recipe), git:URL of a repository, or hf://ORG/NAME[@REVISION] "
     "(Hugging Face Hub; revision: branch, tag or commit, default main)"},
    {"rev", QP_P_STRING, "", NULL, 0, -1, 0, "git: the pinned commit (40 hex digits)"},
    {"path", QP_P_STRING, "", NULL, 0, -1, 0, "git: directory or file inside the repository"},
    {"type", QP_P_STRING, "auto", "auto|model|files", 0, -1, 0,
     "artifact type (auto: model when config.json and *.safetensors are present)"},
    {"sha256", QP_P_MAP, "{}", NULL, 0, -1, 0, "pins {relative file: sha256}; a mismatch is an error"},
    /* keyed through key_extra (hf sources only), so local and git keys are unchanged */
    {"allow", QP_P_STRING_LIST, "[]", NULL, 0, -1, QP_PF_UNKEYED,
     "hf: fetch only files matching one of these globs (fnmatch; default: every file)"},
    {"ignore", QP_P_STRING_LIST, "[]", NULL, 0, -1, QP_PF_UNKEYED, "hf: skip files matching one of these globs"},
    {NULL, 0, NULL, NULL, 0, 0, 0, NULL},
};

static int fetch_validate(const json_t *p, const char *where)
{
    const char *source = qp_param_str(p, "source");
    const char *rev = qp_param_str(p, "rev");
    int is_git = strncmp(source, "git:", 4) == 0, is_hf = qp_hf_is_source(source);
    if (is_hf) {
        if (rev[0] || qp_param_str(p, "path")[0])
            return qp_error_set(QP_EUSAGE, "%s: rev: and path: only apply to git: sources (hf:// takes "
                                "@REVISION in the source)", where);
        if (qp_hf_check_source(source, where) != 0)
            return QP_EUSAGE;
    } else if (json_array_size(json_object_get(p, "allow")) || json_array_size(json_object_get(p, "ignore"))) {
        return qp_error_set(QP_EUSAGE, "%s: allow: and ignore: only apply to hf:// sources", where);
    }
    if (is_git && !qp_fetch_is_commit_id(rev))
        return qp_error_set(QP_EUSAGE,
                            "%s: fetch from %s needs rev: set to a full 40-digit commit id (a branch or tag "
                            "is not reproducible)", where, source);
    if (!is_git && !is_hf && (rev[0] || qp_param_str(p, "path")[0]))
        return qp_error_set(QP_EUSAGE, "%s: rev: and path: only apply to git: sources", where);
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)json_object_get(p, "sha256"), k, v) {
        const char *d = json_string_value(v);
        if (!d || !qp_is_hex_digest(d))
            return qp_error_set(QP_EUSAGE, "%s: sha256: pin for '%s' must be 64 lowercase hex digits", where, k);
    }
    return 0;
}

static unsigned fetch_output_for(const json_t *p)
{
    const char *t = qp_param_str(p, "type");
    if (t && strcmp(t, "model") == 0)
        return QP_ART_MODEL;
    if (t && strcmp(t, "files") == 0)
        return QP_ART_FILES;
    return QP_ART_MODEL | QP_ART_FILES;
}

static int fetch_key_extra(const json_t *p, const char *recipe_dir, qp_cache *cache, json_t *key)
{
    qp_fetch_source *src = NULL;
    int rc = qp_fetch_source_open(&src, p, recipe_dir, cache);
    if (rc == 0)
        rc = qp_fetch_source_key(src, p, key);
    qp_fetch_source_free(src);
    return rc;
}

static int fetch_run(qp_stage_ctx *ctx)
{
    qp_fetch_source *src = NULL;
    int rc = qp_fetch_source_open(&src, ctx->params, ctx->recipe_dir, ctx->cache);
    if (rc == 0)
        rc = qp_fetch_source_import(src, ctx->output, qp_param_str(ctx->params, "type"),
                                    json_object_get(ctx->params, "sha256"), ctx->progress);
    if (rc)
        qp_error_prefix("stage '%s'", ctx->id);
    qp_fetch_source_free(src);
    return rc;
}

const qp_stage_kind qp_stage_fetch = {
    .name = "fetch", .version = 3,
    .doc = "import a local, git-pinned or Hugging Face Hub model/data into the cache",
    .params = params,
    .accepts = 0, .min_inputs = 0, .max_inputs = 0,
    .output = QP_ART_MODEL | QP_ART_FILES,
    .output_for = fetch_output_for,
    .validate = fetch_validate,
    .key_extra = fetch_key_extra,
    .run = fetch_run,
};
