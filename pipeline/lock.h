/* RECIPE.lock: every resolved input of a recipe's stages (content digests of
 * the files they read, pinned git commits, upstream outputs, parameters),
 * their keys and output digests — what `qpipe run --frozen` holds a CI
 * rebuild to, and what `qpipe verify` compares fresh outputs with.  Written
 * as JSON, which YAML readers accept too. */
#ifndef QP_PIPELINE_LOCK_H
#define QP_PIPELINE_LOCK_H

#include <jansson.h>

#include "cache/cache.h"
#include "pipeline/recipe.h"

/* malloc'ed "<recipe path>.lock" */
char *qp_lock_path(const char *recipe_path);
/* Writes the lock of a recipe whose stages are all cached (QP_ERROR naming
 * the first stage that is not: run it first). */
int qp_lock_write(const qp_recipe *r, qp_cache *cache, int threads, const char *path);
/* QP_ENOTFOUND when there is no lock file; QP_EUSAGE when it is malformed. */
int qp_lock_load(json_t **out, const char *path);

#endif
