/* The one interface every stage kind implements.
 *
 * A kind declares its parameters in one table (name, type, default, allowed
 * values, range, one-line doc): the recipe loader validates `with:` against
 * it and fills defaults, `qpipe stages` prints it, and the key covers every
 * parameter after interpolation.  Paths flagged QP_PF_CONTENT are hashed by
 * content (their literal string is not in the key), so moving a dataset
 * does not rerun anything but editing one byte does. */
#ifndef QP_STAGES_STAGE_H
#define QP_STAGES_STAGE_H

#include <jansson.h>
#include <stddef.h>

#include "cache/cache.h"
#include <stdio.h>

#include "artifact/artifact.h"
#include "artifact/progress.h"

typedef enum {
    QP_P_STRING,       /* a string; `allowed` lists choices as "a|b|c" */
    QP_P_INT,          /* an integer within [min, max] */
    QP_P_NUMBER,       /* a real number within [min, max] */
    QP_P_BOOL,
    QP_P_PATH,         /* a path, resolved against the recipe's directory */
    QP_P_STRING_LIST,  /* a list of strings */
    QP_P_PATH_LIST,    /* a list of paths */
    QP_P_INT_LIST,     /* a list of integers, each within [min, max] */
    QP_P_MAP_LIST,     /* a list of mappings, checked by the kind's validate() */
    QP_P_MAP,          /* a mapping, checked by the kind's validate() */
} qp_param_type;

enum {
    QP_PF_REQUIRED = 1 << 0,  /* must be given */
    QP_PF_CONTENT  = 1 << 1,  /* path(s): the content digest goes in the key, not the string */
    QP_PF_PATTERN  = 1 << 2,  /* name ends with '*': matches every key with that prefix */
    QP_PF_UNKEYED  = 1 << 3,  /* not part of the stage key (e.g. an output location) */
    /* A string naming another stage of the recipe ("" = none).  The named
     * stage is no input, but an edge of the graph: it runs first, a loop
     * through it is a cycle, an expanded stage named by its plain name is
     * zipped like a need, and its output digest goes in the key as
     * "PARAM_digest" (unless it is also an input).  `allowed` is then not a
     * list of choices but the output types the named stage must produce
     * ("metrics"; NULL = any).  The stage reads it with qp_stage_named().
     * Not combined with QP_PF_PATTERN. */
    QP_PF_STAGE    = 1 << 4,
};

typedef struct {
    const char *name;
    qp_param_type type;
    const char *def;      /* default as YAML scalar text; NULL = no default */
    const char *allowed;  /* "a|b|c" for strings and int choices; NULL = any */
    double min, max;      /* inclusive numeric range; min > max = unbounded */
    unsigned flags;
    const char *doc;      /* one line */
} qp_param_spec;

typedef struct qp_stage_ctx qp_stage_ctx;

/* A stage that a QP_PF_STAGE parameter names, as the running stage sees it. */
typedef struct {
    const char *param;                 /* the parameter that names it */
    const char *id;                    /* its id in the recipe */
    const qp_artifact *output;         /* its output */
    size_t n_inputs;
    const qp_artifact *const *inputs;  /* what it consumed, in its `needs` order */
} qp_named_stage;

typedef struct qp_stage_kind {
    const char *name;        /* the `uses:` value */
    int version;             /* implementation version; bump when outputs change */
    const char *doc;         /* one line */
    const qp_param_spec *params;  /* terminated by an entry with name == NULL */
    unsigned accepts;        /* bitmask of qp_artifact_type accepted from `needs` */
    int min_inputs, max_inputs;   /* max_inputs < 0: unbounded */
    unsigned output;         /* bitmask of the artifact types it may produce */
    /* The types it produces for these params (e.g. fetch: model or files);
     * NULL = `output`. Used by the recipe checker; the runner checks the
     * actual type of every input again before a stage runs. */
    unsigned (*output_for)(const json_t *params);
    /* 1 when the output depends on floating-point arithmetic (forward
     * passes, quantizer searches, metrics): the numerics profile
     * (common/numerics.h) goes into the key, so a cache never mixes the
     * results of two profiles. */
    int float_numerics;
    /* 1 when run() spreads its work over ctx->threads (forward passes,
     * quantizers): a batch scheduler gives it several CPUs, the others one. */
    int uses_threads;
    /* 1 when a rejected gate among the inputs is information, not a block
     * (select chooses among candidates, some of which fail their gates). */
    int consumes_rejections;
    /* Extra validation after the table checks (cross-parameter rules, map
     * contents).  Return QP_EUSAGE with qp_error_set("%s: …", where, …)
     * where `where` is "file:line:col" of the stage. May be NULL. */
    int (*validate)(const json_t *params, const char *where);
    /* Adds to `key` (a JSON object) what the stage reads besides its inputs
     * and QP_PF_CONTENT params — e.g. fetch's file digests or pinned git
     * commit.  May be NULL. */
    int (*key_extra)(const json_t *params, const char *recipe_dir, qp_cache *cache, json_t *key);
    /* Does the work: reads ctx->inputs, fills ctx->output. */
    int (*run)(qp_stage_ctx *ctx);
    /* Prints the lines the text report shows under the stage's own line
     * (a gate's checks, select's candidates), each starting with 6 spaces.
     * May be NULL. */
    void (*report)(FILE *out, const qp_artifact *output);
    /* Graphviz node shape in `qpipe graph` (a gate is a "diamond"); NULL = box. */
    const char *graph_shape;
} qp_stage_kind;

struct qp_stage_ctx {
    const char *id;                 /* stage id in the recipe */
    const qp_stage_kind *kind;
    const json_t *params;           /* validated, interpolated, defaults filled;
                                       paths still as written */
    const char *recipe_dir;         /* relative paths resolve here */
    qp_cache *cache;
    size_t n_inputs;
    const char *const *input_ids;   /* `needs` order */
    qp_artifact *const *inputs;
    const char *const *input_digests;
    qp_artifact *output;            /* created by the runner with kind->output */
    int threads;
    qp_progress *progress;          /* may be NULL */
    const char *stage_key;          /* this stage's key (hex) */
    /* The stages its QP_PF_STAGE parameters name (those not ""); read
     * them with qp_stage_named(). */
    size_t n_named;
    const qp_named_stage *named;
    /* Facts the run record keeps in this stage's entry besides the
     * runner's own (a resume from a checkpoint: "resumed"); may be NULL. */
    json_t *record;
};

/* The registry of stage kinds. */
const qp_stage_kind *qp_stage_kind_find(const char *name);
const qp_stage_kind *const *qp_stage_kinds(size_t *n);
/* Bitmask of types a declared stage produces (output_for or output). */
unsigned qp_stage_output_types(const qp_stage_kind *k, const json_t *params);
/* "model, calibration" for a mask (static buffer per thread). */
const char *qp_artifact_mask_names(unsigned mask);
/* The output types the stage a QP_PF_STAGE parameter names must produce:
 * its `allowed` ("metrics|model") as a mask; every type when NULL. */
unsigned qp_param_stage_outputs(const qp_param_spec *s);
/* Spec for a parameter name (pattern specs match by prefix); NULL if none. */
const qp_param_spec *qp_stage_param_spec(const qp_stage_kind *k, const char *name);

/* The stage that QP_PF_STAGE parameter `param` names; NULL when it is
 * "" (names none). */
const qp_named_stage *qp_stage_named(const qp_stage_ctx *ctx, const char *param);

/* Resolves a path parameter against the recipe directory (malloc'ed). */
char *qp_stage_path(const qp_stage_ctx *ctx, const char *path);
/* Convenience accessors for validated params (defaults are filled, so a
 * missing key here is a programming error and aborts). */
const char *qp_param_str(const json_t *params, const char *name);
long long qp_param_int(const json_t *params, const char *name);
double qp_param_num(const json_t *params, const char *name);
int qp_param_bool(const json_t *params, const char *name);

#endif
