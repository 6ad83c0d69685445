/* Private to the recipe loader: the pieces recipe.c, recipe_params.c and
 * recipe_dag.c share while a recipe is being checked. */
#ifndef QP_PIPELINE_RECIPE_INT_H
#define QP_PIPELINE_RECIPE_INT_H

#include <jansson.h>
#include <stddef.h>

#include "pipeline/recipe.h"
#include "pipeline/yaml_tree.h"

/* A stage while loading: the public declaration plus the nodes that later
 * checks point their messages at (the tree outlives this struct). */
typedef struct {
    qp_stage_decl decl;
    const qp_ynode *key;          /* the stage id */
    const qp_ynode *needs_key;    /* NULL when `needs` is absent */
    const qp_ynode **need_nodes;  /* one per need */
    const qp_ynode *ref_node;     /* value of a `reference` param, or NULL */
} qp_stage_build;

/* QP_EUSAGE "PATH:LINE:COL: message". */
int qp_recipe_fail(const char *path, qp_mark m, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The candidate closest to `name` by edit distance when that distance is at
 * most 2 (and smaller than the name itself); NULL otherwise.  Ties go to
 * the earlier candidate. */
const char *qp_suggest(const char *name, const char *const *cands, size_t n);
/* " (did you mean 'x'?)" or "" — a static buffer per thread. */
const char *qp_suggest_hint(const char *name, const char *const *cands, size_t n);

/* Validates a stage's `with:` (NULL when absent) against the kind's table:
 * *params gets the typed values with defaults filled (table order, pattern
 * keys sorted), *marks {"param": "line:col"} of the values given, and
 * *ref_node the node of a non-empty `reference` param. */
int qp_recipe_params(json_t **params, json_t **marks, const qp_ynode **ref_node, const qp_stage_kind *k,
                     const qp_ynode *with, const qp_ynode *stage_key, const json_t *vars, const char *path);

/* Resolves needs and references, checks input counts and artifact types,
 * rejects cycles (printing the path) and writes a topological order (ties
 * by file order) to order[0..n). */
int qp_recipe_dag(qp_stage_build *s, size_t n, const char *path, size_t *order);

/* 1 for an untagged plain null scalar (`key:` with nothing, ~, null). */
int qp_ynode_is_null(const qp_ynode *n);

/* 1 when s matches [A-Za-z_][A-Za-z0-9_-]*. */
int qp_recipe_is_id(const char *s);

#endif
