/* Private to the recipe loader: the pieces recipe.c, recipe_params.c,
 * recipe_matrix.c, recipe_expand.c and recipe_dag.c share while a recipe is
 * being checked.
 *
 * Loading goes: stages as written (qp_stage_tmpl, with their matrix or
 * candidate instances) -> expansion into the stages that run
 * (qp_stage_build, params validated per instance) -> the DAG checks. */
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
} qp_stage_build;

/* At most this many instances per matrix:/candidates: stage. */
#define QP_MAX_INSTANCES 256

/* One instance of a stage with matrix: or candidates:. */
typedef struct {
    char *name;              /* sanitised to [A-Za-z0-9_.-]+: the id is "STAGE@name" */
    json_t *values;          /* KEY -> typed value, as written (no "name") */
    json_t *text;            /* KEY -> text that ${matrix.KEY} gives (scalars), and "name" */
    const qp_ynode **keys;   /* the key and value nodes merged over `with:`; */
    const qp_ynode **vals;   /* messages about a value point at these */
    size_t n;
} qp_instance;

/* A stage as written in the file, before expansion. */
typedef struct {
    char *id;
    const qp_stage_kind *kind;
    const qp_ynode *key;          /* the stage id */
    const qp_ynode *with;         /* NULL when absent */
    const qp_ynode *needs_key;    /* NULL when `needs` is absent */
    char **needs;                 /* as written (after ${…}): "x", "x@*", "x@NAME" */
    const qp_ynode **need_nodes;  /* one per need */
    size_t n_needs;
    const qp_ynode *expand_key;   /* the `matrix` or `candidates` key; NULL when neither */
    const qp_ynode *resources;    /* `resources:` as written; NULL when absent */
    qp_instance *inst;            /* its instances, in expansion order */
    size_t n_inst;
} qp_stage_tmpl;

void qp_stage_tmpl_clear(qp_stage_tmpl *t);
void qp_stage_decl_clear(qp_stage_decl *d);

/* Reads a stage's matrix:/candidates:/exclude: (stage is its mapping) into
 * t->expand_key and t->inst; nothing when it has neither.  `scope` as in
 * interp.h (no "matrix"). */
int qp_recipe_instances(qp_stage_tmpl *t, const qp_ynode *stage, const json_t *scope, const char *path);

/* Expands the stages as written into *out (n_out of them, in file order,
 * the instances of one stage in expansion order): fan-out, zip, fan-in
 * (NAME@*, NAME@INST), params validated per instance, parameters naming an
 * expanded stage (QP_PF_STAGE) zipped.  On error *out is NULL. */
int qp_recipe_expand(qp_stage_build **out, size_t *n_out, const qp_stage_tmpl *t, size_t n, const json_t *scope,
                     const char *path);
void qp_stage_builds_free(qp_stage_build *b, size_t n);

/* A stage's `resources:` (node may be NULL: *out stays NULL) validated and
 * normalised as qp_stage_decl.resources describes; scope as in interp.h. */
int qp_recipe_resources(json_t **out, const qp_ynode *node, const json_t *scope, const char *path, const char *stage);
/* A time limit in whole minutes (seconds round up) from minutes, Slurm's
 * forms ("1:30:00", "2-12") or "90m", "2h", "1d"; -1 when it is none. */
long qp_recipe_parse_minutes(const char *s);

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
 * keys sorted), *marks {"param": "line:col"} of the values given. */
int qp_recipe_params(json_t **params, json_t **marks, const qp_stage_kind *k, const qp_ynode *with,
                     const qp_ynode *stage_key, const json_t *scope, const char *path);

/* Where parameter `param` of stage b was written (its value), for
 * messages; the stage's key when it was not written (a default). */
qp_mark qp_param_mark(const qp_stage_build *b, const char *param);

/* The stage id QP_PF_STAGE parameter `spec` names in params, or NULL when
 * it is "" (names none). */
const char *qp_stage_link_id(const json_t *params, const qp_param_spec *spec);

/* Resolves needs and parameters that name stages (d->links), checks input counts and artifact types,
 * rejects cycles (printing the path) and writes a topological order (ties
 * by file order) to order[0..n). */
int qp_recipe_dag(qp_stage_build *s, size_t n, const char *path, size_t *order);

/* The cycle a depth-first search found: seg[0..len) are the stage indices
 * on its stack from the stage reached again (each needs the next, the last
 * the first).  Writes "a -> b -> a" into buf[0..cap) (cap >= 5), ids from
 * id_of(ud, index), starting at the smallest index (the earliest stage in
 * the file) so the message does not depend on where the search entered the
 * cycle; a long cycle ends in " ...".  Returns that smallest index. */
size_t qp_cycle_text(char *buf, size_t cap, const size_t *seg, size_t len,
                     const char *(*id_of)(const void *ud, size_t ix), const void *ud);

/* A graph for qp_recipe_dfs: n nodes, edges given by a callback so that
 * each caller keeps its own representation. */
typedef struct {
    size_t n;
    void *ud;
    /* The j-th edge out of u: 0 when u has no more, 1 with *v the node it
     * leads to (-1: pass over this edge), a negative qp_err (message set)
     * to stop the search. */
    int (*edge)(void *ud, size_t u, size_t j, long *v);
    /* Called when u is finished (post-order: everything it leads to is
     * finished first); NULL for none; non-zero stops the search. */
    int (*finish)(void *ud, size_t u);
    /* For the cycle message: a node's id and the mark it points at. */
    const char *(*id_of)(const void *ud, size_t ix);
    qp_mark (*mark_of)(const void *ud, size_t ix);
    const char *path;
} qp_dfs_graph;

/* Depth-first search from every node in index order, iterative so that a
 * long chain cannot overflow the C stack.  Reaching a node that is on the
 * stack again fails with "PATH:LINE:COL: cycle: a -> b -> a" (see
 * qp_cycle_text; the mark is its first node's).  0, or the first error. */
int qp_recipe_dfs(const qp_dfs_graph *g);

/* 1 for an untagged plain null scalar (`key:` with nothing, ~, null). */
int qp_ynode_is_null(const qp_ynode *n);

/* 1 when s matches [A-Za-z_][A-Za-z0-9_-]*. */
int qp_recipe_is_id(const char *s);

/* Sorted (id, index) pairs for lookups among n ids. */
typedef struct {
    const char *id;
    size_t ix;
} qp_id_ix;
/* Sorts ids[0..n) into a malloc'ed table. */
qp_id_ix *qp_id_index(const char *const *ids, size_t n);
/* Index of id, or -1. */
long qp_id_find(const qp_id_ix *tab, size_t n, const char *id);

#endif
