/* The Slurm executor: stages that must run become batch jobs.
 *
 * Each job runs `qpipe run RECIPE --stage ID` against the same cache (a
 * directory every node mounts, or the remote cache), so the stage's key,
 * output and stored bytes are exactly those of a local run; the runner
 * (pipeline/runner.c) keeps deciding what is cached, submits what is not
 * as soon as its needs have finished, and reads each job's result back
 * from the cache.  The instances of one matrix stage that are ready
 * together go in as one job array.
 *
 * Jobs are submitted with sbatch and followed with `scontrol show job`
 * (works without slurmdbd; sacct would need it); Ctrl-C or SIGTERM cancels
 * every job still queued or running (scancel). */
#ifndef QP_PIPELINE_SLURM_H
#define QP_PIPELINE_SLURM_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "cache/cache.h"
#include "pipeline/recipe.h"

typedef struct qp_slurm qp_slurm;

typedef struct {
    const char *qpipe;            /* absolute path of the program every job runs */
    const char *workdir;          /* the jobs' working directory (the submitter's, so paths resolve alike) */
    const char *log_dir;          /* job scripts and logs (created); on a filesystem the nodes share */
    const char *partition;        /* --partition; NULL: the cluster's default (a stage's resources win) */
    const char *const *run_args;  /* options every job's `qpipe run` gets (--cache-dir, --remote-cache …),
                                     NULL-terminated; --stage, --threads, --no-provenance are added */
    int default_cpus;             /* cpus of a compute stage without resources: cpus (the run's --threads
                                     when given); 0: min(8, the largest node's CPUs per sinfo) */
    double poll_seconds;          /* between polls of scontrol */
    /* The remote cache the jobs' results come back through when they do
     * not share the run's cache directory (--job-cache-dir); NULL when they
     * do.  Nothing is submitted once it has been turned off. */
    qp_remote *results_via;
} qp_slurm_options;

/* What one job (or each task of an array) asks for; 0 / "": not asked
 * (the partition's default). */
typedef struct {
    int cpus;
    uint64_t mem_mb;
    long time_min;
    int gpus;
    char partition[136];
} qp_slurm_request;

/* A stage to submit. */
typedef struct {
    const qp_stage_decl *decl;   /* its id, kind and resources: */
    const char *key;             /* the key this run computed: its job refuses to run another (the recipe
                                    changed after submission) */
    int force;                   /* --force applies to it */
} qp_slurm_stage;

/* How one stage's job ended. */
typedef struct {
    char job[64];       /* "1234" or, in an array, "1234_2" */
    char state[32];     /* COMPLETED, FAILED, TIMEOUT, CANCELLED, OUT_OF_MEMORY, NODE_FAIL, …;
                           "" when Slurm had forgotten the job before it was seen ending */
    int exit_code;      /* the job's exit status (from its log when state is ""), -1 unknown */
    int signal;         /* the signal that ended it, 0 none */
    char reason[64];    /* Slurm's Reason= while it waits ("Resources", "JobHeldAdmin", …) */
    int warned;         /* a held job was reported */
    char *log;          /* absolute path of its log: qpipe's stage lines and summary (malloc'ed) */
    char *err;          /* of its stderr: the stage's warnings, qpipe's error, Slurm's own notes */
    qp_slurm_request req;   /* what its job asked for */
} qp_slurm_task;

/* Checks that sbatch, scontrol and scancel run and creates log_dir; the
 * estimate of r gives each stage's default memory and time limit.
 * Installs the SIGINT/SIGTERM handler that cancels jobs (restored by _free). */
int qp_slurm_new(qp_slurm **out, const qp_recipe *r, const qp_slurm_options *o);
void qp_slurm_free(qp_slurm *s);

/* Submits stages st[0..n) (n ≥ 1; n > 1 makes a job array, task i runs
 * st[i]) and waits until every task has ended.  Each job asks for the most
 * any of the stages needs: its `resources:`, else the estimate (peak RSS +
 * 25% + 256 MiB, 4x its time + 5 minutes, at least 10), else the
 * executor's defaults.  on_submit (may be NULL) is told the job id once it
 * is known.  tasks[i] gets how st[i]'s job ended (free with
 * qp_slurm_tasks_clear).  Returns 0 once all ended, whatever their states;
 * QP_ERROR with sbatch's own message when the submission failed; QP_ERROR
 * "interrupted" when Ctrl-C came (its jobs are cancelled first). */
int qp_slurm_run(qp_slurm *s, const qp_slurm_stage *st, size_t n, void (*on_submit)(void *ud, const char *job),
                 void *ud, qp_slurm_task *tasks);
void qp_slurm_tasks_clear(qp_slurm_task *tasks, size_t n);

/* 1 when the task ended so that the stage's result is in the cache:
 * COMPLETED, or the exit status 3 of a rejecting gate. */
int qp_slurm_task_ok(const qp_slurm_task *t);

/* The run record's account of a task: {job, log, err, state, exit, cpus,
 * and mem_mb, time_min, gpus, partition when asked}. */
json_t *qp_slurm_task_json(const qp_slurm_task *t);

/* The last lines of a log (the stderr file: where a failure says why), at
 * most max_lines lines and max_chars bytes, joined with " | " into one line
 * (malloc'ed; "(no log at PATH)" when unreadable). */
char *qp_slurm_log_tail(const char *path, int max_lines, size_t max_chars);

/* 1 once Ctrl-C or SIGTERM arrived while the executor was in use. */
int qp_slurm_interrupted(void);
/* After an interruption: how many jobs were cancelled, and the ids of
 * those scancel failed on (space-separated, "" when none; borrowed). */
size_t qp_slurm_cancelled(qp_slurm *s);
const char *qp_slurm_uncancelled(qp_slurm *s);

/* Parses `scontrol -o show job` output: for each record (one per line)
 * whose ArrayTaskId covers task i (or, for a plain job, i == 0), fills
 * tasks[i].state, exit_code, signal and job.  Exposed for tests. */
void qp_slurm_parse_scontrol(const char *text, const char *job_id, qp_slurm_task *tasks, size_t n);

#endif
