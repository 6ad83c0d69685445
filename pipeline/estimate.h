/* The estimate of a whole recipe (`qpipe plan --estimate`) and the memory
 * check before `qpipe run` starts anything: every stage predicted in
 * topological order (stages/estimate.h), each stage's output shapes handed
 * to the stages that need it; cached stages cost nothing. */
#ifndef QP_PIPELINE_ESTIMATE_H
#define QP_PIPELINE_ESTIMATE_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

#include "pipeline/recipe.h"
#include "stages/estimate.h"

typedef struct qp_recipe_estimate qp_recipe_estimate;

/* Predicts every stage of r.  status: {stage id: "cached" | "will run" | …}
 * from a plan (NULL: every stage runs); a stage that is in `status` with
 * any other value than "will run" costs 0, and one absent from a non-NULL
 * `status` is not part of this run (--stage) and is not shown. */
qp_recipe_estimate *qp_recipe_estimate_new(const qp_recipe *r, const json_t *status, const qp_est_machine *m,
                                           const qp_est_coef *c, int threads);
void qp_recipe_estimate_free(qp_recipe_estimate *e);

/* The table: one line per stage (time, peak RSS, output bytes, the term
 * that dominates), then the totals and the machine's rates. */
void qp_recipe_estimate_print(FILE *out, const qp_recipe_estimate *e);
/* The same as JSON {stages: {id: {...}}, machine: {...}, coefficients}. */
json_t *qp_recipe_estimate_json(const qp_recipe_estimate *e);

/* The predicted peak RSS of stage id (0 when it does not run or is not
 * predicted); -1 when there is no such stage. */
int qp_recipe_estimate_stage(const qp_recipe_estimate *e, const char *id, qp_est_result *out);

/* The shapes the estimate gives stage id's output (NULL: no such stage). */
const qp_est_art *qp_recipe_estimate_output(const qp_recipe_estimate *e, const char *id);

/* 0 when every stage that runs is predicted to fit in `available` bytes;
 * else QP_ERROR with one line naming the first stage that does not, its
 * prediction, the memory available (`source`: where that figure came
 * from) and what to change. */
int qp_recipe_estimate_check(const qp_recipe_estimate *e, uint64_t available, const char *source);

/* The memory this process may use: /proc/meminfo MemAvailable, lowered to
 * the cgroup's limit minus its usage when one is set (cgroup v2
 * memory.max, v1 memory.limit_in_bytes).  *source says which ("MemAvailable",
 * "cgroup memory.max").  Returns 0 when nothing could be read. */
uint64_t qp_mem_available(const char **source);

/* "1.23 GB" (decimal units) into buf. */
const char *qp_fmt_bytes(char *buf, size_t cap, double bytes);

#endif
