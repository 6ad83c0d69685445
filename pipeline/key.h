/* Stage keys: SHA-256 over a canonical description of everything a stage's
 * output depends on — kind, implementation version, every keyed parameter
 * (defaults filled, after interpolation), the digests of its inputs and of
 * the stages its parameters name, and the content digests of every file it
 * reads.  Reordering YAML keys or editing
 * comments cannot change it (the description is JSON with sorted keys). */
#ifndef QP_PIPELINE_KEY_H
#define QP_PIPELINE_KEY_H

#include <jansson.h>

#include "cache/cache.h"
#include "pipeline/recipe.h"

#define QP_KEY_SCHEMA "qpipe-stage-key/1"

/* Builds the description; input_digests in `needs` order, link_digests the
 * outputs of the stages s->links name (in that order; NULL when none).
 * Errors (a missing dataset file …) name the recipe position. */
int qp_key_describe(json_t **out, const qp_recipe *r, const qp_stage_decl *s, qp_cache *cache,
                    const char *const *input_digests, const char *const *link_digests);
/* key = SHA-256 of the canonical serialisation of desc. */
void qp_key_hash(char key[QP_HEX_LEN], const json_t *desc);
/* Human-readable reasons desc differs from old (NULL old: "never run").
 * Returns a malloc'ed "; "-separated string. */
char *qp_key_explain(const json_t *old_desc, const json_t *desc);
/* Canonical JSON text of a description (malloc'ed). */
char *qp_key_canonical(const json_t *desc);

#endif
