/* The runner: executes a recipe's DAG against the cache.
 *
 * For each stage in topological order (independent stages in parallel up to
 * `jobs`): load its inputs' artifacts, compute its key, and either reuse the
 * cached action (restoring workspace files) or — holding the key's lock so
 * two processes never run the same stage — call the stage and record its
 * output.  A failed gate blocks every stage downstream of it. */
#ifndef QP_PIPELINE_RUNNER_H
#define QP_PIPELINE_RUNNER_H

#include <stdio.h>

#include "cache/cache.h"
#include "pipeline/recipe.h"

typedef enum { QP_RUN_NORMAL, QP_RUN_PLAN, QP_RUN_VERIFY } qp_run_mode;

typedef struct {
    qp_run_mode mode;
    int jobs;                 /* parallel stages (≥1) */
    int threads;              /* compute threads per stage (≥1) */
    const char *only_stage;   /* run only this stage and its ancestors; NULL = all */
    int force_all;            /* ignore the cache for every stage */
    const char *force_stage;  /* ignore the cache for this stage only */
    int json;                 /* NDJSON events instead of text */
    int provenance;           /* commit a run record (qpipe/provenance) */
    const char *branch;       /* provenance branch; NULL = default */
    FILE *out;                /* where lines/events go (stdout) */
} qp_run_options;

/* Runs (or plans / verifies) the recipe.  Returns 0, or the negative code
 * that decides the exit status: QP_ERROR (a stage failed), QP_EGATE (a gate
 * rejected), QP_EVERIFY (verify found a difference), QP_EUSAGE. */
int qp_runner_run(const qp_recipe *r, qp_cache *cache, const qp_run_options *opt);

#endif
