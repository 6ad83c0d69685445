/* RECIPE.lock: every resolved input of a recipe's stages (content digests of
 * the files they read, pinned git commits, upstream outputs, parameters),
 * their keys and output digests — what `qpipe run --frozen` holds a CI
 * rebuild to, and what `qpipe verify` compares fresh outputs with.
 *
 * Written as block-style YAML for review in pull requests: a header comment,
 * top-level keys in a fixed order (qpipe_lock, qpipe_version, recipe,
 * recipe_digest, stages), stages in the recipe's order, per stage kind, key,
 * output, inputs, files, reads, params, everything below sorted by key.
 * Strings are plain unless a YAML 1.1 or 1.2 reader would take them for
 * something else (numbers, booleans, null, dates, indicators), then
 * double-quoted with escapes; reals keep a '.' and their shortest exact
 * digits, so a lock reads back to exactly the values written.  Read with
 * libyaml (YAML 1.2 core schema), which also reads the JSON locks of earlier
 * versions.
 *
 * Format 2 (qpipe_lock: 2) ends with the line "# end of lock: sha256 HEX",
 * HEX the SHA-256 of every byte before that line: a lock without it, or
 * whose text does not match it, is "truncated" (or edited), never read as a
 * lock whose stages changed.  Format 1 (no end line) is still read. */
#ifndef QP_PIPELINE_LOCK_H
#define QP_PIPELINE_LOCK_H

#define QP_LOCK_FORMAT 2

#include <jansson.h>
#include <stddef.h>

#include "cache/cache.h"
#include "pipeline/recipe.h"

/* malloc'ed "<recipe path>.lock" */
char *qp_lock_path(const char *recipe_path);
/* Writes the lock of a recipe whose stages are all cached (QP_ERROR naming
 * the first stage that is not: run it first).  Atomic; nothing is written
 * unless the text reads back to the same values. */
int qp_lock_write(const qp_recipe *r, qp_cache *cache, int threads, const char *path);
/* QP_ENOTFOUND when there is no lock file; QP_EUSAGE when it is malformed:
 * "PATH:LINE:COL: problem; regenerate it with 'qpipe lock RECIPE'". */
int qp_lock_load(json_t **out, const char *path);

/* The YAML text (malloc'ed *out) of a lock document, or of any JSON object:
 * the header comment, then block style in the object's own key order. */
int qp_lock_format(char **out, const json_t *doc);
/* qp_lock_load on text already read; `path` names it in messages and
 * (without ".lock") in the hint. */
int qp_lock_parse(json_t **out, const char *path, const char *text, size_t len);

#endif
