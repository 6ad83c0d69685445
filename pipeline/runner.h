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
#include "pipeline/slurm.h"

/* QP_RUN_LOCK is handled by the CLI (pipeline/lock.c runs a plan). */
typedef enum { QP_RUN_NORMAL, QP_RUN_PLAN, QP_RUN_VERIFY, QP_RUN_LOCK } qp_run_mode;

typedef struct {
    qp_run_mode mode;
    int jobs;                 /* parallel stages (≥1) */
    int threads;              /* compute threads per stage (≥1) */
    const char *only_stage;   /* run only this stage and its ancestors; NULL = all */
    const char *expect_key;   /* with only_stage: its key must be this one (a Slurm job: the key the
                                 submitting run computed), else QP_EUSAGE before anything runs */
    int force_all;            /* ignore the cache for every stage */
    const char *force_stage;  /* ignore the cache for this stage only */
    int json;                 /* NDJSON events instead of text */
    int provenance;           /* commit a run record (qpipe/provenance) */
    const char *branch;       /* provenance branch; NULL = default */
    FILE *out;                /* where lines/events go (stdout) */
    /* A lock (pipeline/lock.h) to hold the run to: with `frozen`, any stage
     * whose input digests (files read, upstream outputs, params) differ from
     * the lock fails the run (QP_EUSAGE, naming the input); in verify mode
     * fresh outputs are compared with the lock's as well. */
    const json_t *lock;
    int frozen;
    /* Where stages run: NULL in this process; else each stage that must
     * run is a Slurm job (pipeline/slurm.h) whose result is read back from
     * the cache — `jobs` is then how many jobs may be in flight at once. */
    qp_slurm *slurm;
    /* Called once per finished stage (may be NULL): id, key, output digest
     * ("" when none), key description, status ("cached", "ran", …). */
    void (*on_stage)(void *ud, const char *id, const char *key, const char *output, const json_t *desc,
                     const char *status);
    void *on_stage_ud;
    /* The program's exit status for a result code, reported in the JSON
     * summary event as "exit" (the CLI owns the mapping); NULL: omitted. */
    int (*exit_status)(int code);
} qp_run_options;

/* Runs (or plans / verifies) the recipe.  Returns 0, or the negative code
 * that decides the exit status: QP_ERROR (a stage failed), QP_EGATE (a gate
 * rejected), QP_EVERIFY (verify found a difference), QP_EUSAGE. */
int qp_runner_run(const qp_recipe *r, qp_cache *cache, const qp_run_options *opt);

#endif
