/* Where fetch reads from: a local file/directory, a git tree at a pinned
 * commit or a Hugging Face Hub repository at a commit (stages/fetch_hf.h).
 * All are presented as a sorted list of (relative path, bytes). */
#ifndef QP_STAGES_FETCH_SOURCE_H
#define QP_STAGES_FETCH_SOURCE_H

#include <jansson.h>

#include "cache/cache.h"
#include "artifact/artifact.h"
#include "artifact/progress.h"

typedef struct qp_fetch_source qp_fetch_source;

int qp_fetch_is_commit_id(const char *s);
/* Opens the source described by fetch's params (source, rev, path, allow,
 * ignore); an hf:// source resolves its revision here (stages/fetch_hf.h). */
int qp_fetch_source_open(qp_fetch_source **out, const json_t *params, const char *recipe_dir, qp_cache *cache);
void qp_fetch_source_free(qp_fetch_source *s);
/* Adds what identifies the content to the stage key: per-file digests
 * (local), URL + commit + path (git) or repo + commit + files + allow/ignore
 * (hf). */
int qp_fetch_source_key(qp_fetch_source *s, const json_t *params, json_t *key);
/* Imports every file into the cache as entries of `out`; safetensors
 * weights are split into per-tensor objects when the result is a model.
 * type: "auto" | "model" | "files".  pins: {relpath: sha256}. */
int qp_fetch_source_import(qp_fetch_source *s, qp_artifact *out, const char *type, const json_t *pins,
                           qp_progress *progress);

#endif
