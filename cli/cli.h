/* Sub-commands other than run/plan/verify (which go through the runner). */
#ifndef QP_CLI_CLI_H
#define QP_CLI_CLI_H

/* Each returns the process exit status; argv[0] is the sub-command name. */
int qp_cli_graph(int argc, char **argv);
int qp_cli_stages(int argc, char **argv);
int qp_cli_log(int argc, char **argv);
int qp_cli_diff(int argc, char **argv);
int qp_cli_tokenize(int argc, char **argv);
int qp_cli_cache(int argc, char **argv, const char *default_cache_dir);

/* `plan --estimate` and the memory check of `run` (cli/cli_estimate.c). */
#include <stdint.h>

#include "cache/cache.h"
#include "pipeline/recipe.h"
#include "pipeline/runner.h"

typedef struct {
    int estimate, recalibrate, ignore_memory;
    uint64_t memory;   /* --memory; 0 = what the machine says */
} qp_cli_est_opts;

/* The plan as usual, then the estimate table (or one "estimate" JSON event). */
int qp_cli_plan_estimate(const qp_recipe *r, qp_cache *cache, const qp_run_options *o, const qp_cli_est_opts *eo);
/* 0, or QP_ERROR (one line) when a stage that will run is predicted to exceed
 * the memory available; nothing has run then. */
int qp_cli_memory_check(const qp_recipe *r, qp_cache *cache, const qp_run_options *o, const qp_cli_est_opts *eo);

/* Process exit status for a qp_err code: 0 ok, 1 error, 2 usage/recipe,
 * 3 gate rejected, 4 verify mismatch (README: exit codes). */
int qp_exit_status(int code);

#endif
