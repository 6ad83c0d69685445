/* Recipe loading: YAML file -> typed, validated DAG of stages.
 *
 * Every rejection is one line "FILE:LINE:COL: message" (QP_EUSAGE):
 * YAML syntax, duplicate keys, unknown keys, wrong types, out-of-range
 * values, unknown `uses`, `needs` naming a missing stage, cycles (with the
 * cycle path), an input artifact of the wrong type, undefined variables,
 * matrices and candidates that cannot be expanded. */
#ifndef QP_PIPELINE_RECIPE_H
#define QP_PIPELINE_RECIPE_H

#include <jansson.h>
#include <stddef.h>

#include "stages/stage.h"

typedef struct {
    int line, col;  /* 1-based */
} qp_mark;

/* A parameter that names another stage (QP_PF_STAGE in the kind's table):
 * an edge of the graph that orders but is no input. */
typedef struct {
    const char *param;   /* the parameter (its name in the kind's table) */
    char *id;            /* the stage it names */
    size_t index;        /* that stage's index in the recipe's stage array */
} qp_stage_link;

typedef struct {
    char *id;
    const qp_stage_kind *kind;
    json_t *params;      /* validated, interpolated, defaults filled */
    char **needs;        /* ids, in the order written */
    size_t n_needs;
    size_t *need_index;  /* index of each need in the recipe's stage array */
    qp_stage_link *links;  /* its QP_PF_STAGE parameters that are not "", in table order */
    size_t n_links;
    qp_mark mark;        /* position of the stage's key */
    json_t *param_marks; /* {"param": "line:col"} for later messages */
    /* Matrix expansion (docs/recipes.md, "Matrices and candidates"): a
     * stage written once as `q` with matrix:/candidates: (or fanning out
     * from one) becomes the stages "q@NAME".  For a stage that is not
     * expanded: base == id, instance, origin and matrix are NULL. */
    char *base;          /* the stage's name as written: "eval" for "eval@q4" */
    char *instance;      /* "q4" for "eval@q4" */
    char *origin;        /* the stage whose matrix:/candidates: made the instance ("q") */
    json_t *matrix;      /* the instance's values, {"method": "gptq", "bits": 4} (name excluded) */
    /* `resources:` for a batch scheduler, validated and normalised (NULL
     * when absent): {"cpus": n, "mem": bytes, "time": minutes, "gpus": n,
     * "partition": "name"}, each only when given.  Not part of the key. */
    json_t *resources;
} qp_stage_decl;

typedef struct qp_recipe qp_recipe;

/* Loads and validates; QP_EUSAGE with "file:line:col: …" on any problem. */
int qp_recipe_load(qp_recipe **out, const char *path);
/* Same, from a string (tests); `path` is used for messages and base dir. */
int qp_recipe_load_string(qp_recipe **out, const char *path, const char *text);
void qp_recipe_free(qp_recipe *r);

const char *qp_recipe_path(const qp_recipe *r);    /* as given */
const char *qp_recipe_dir(const qp_recipe *r);     /* absolute directory */
/* Absolute path of the recipe file (malloc'ed): the same whatever the cwd. */
char *qp_recipe_abs_path(const qp_recipe *r);
const char *qp_recipe_name(const qp_recipe *r);
/* SHA-256 of the recipe file's bytes. */
const char *qp_recipe_digest(const qp_recipe *r);
/* Resolved `vars:` (after interpolation), borrowed. */
const json_t *qp_recipe_vars(const qp_recipe *r);

/* Stages in a topological order (ties broken by order in the file). */
size_t qp_recipe_stage_count(const qp_recipe *r);
const qp_stage_decl *qp_recipe_stage(const qp_recipe *r, size_t i);
/* Index of a stage id, or -1. */
long qp_recipe_find(const qp_recipe *r, const char *id);

/* A Slurm partition name (or several joined by ','): letters, digits, '_',
 * '.', '-', at most 128 bytes; what resources: and --partition accept. */
int qp_recipe_partition_ok(const char *s);

#endif
