/* Helpers shared by the tests/stages/ tests that run recipes through the
 * runner (header-only so every test binary stays a single .c file as the
 * Makefile expects): a temp directory with a cache per test group, and a
 * recipe runner that records each stage's output digest. */
#ifndef QP_TESTS_STAGES_HELPERS_H
#define QP_TESTS_STAGES_HELPERS_H

#include "tests/support/testutil.h"

#include "cache/cache.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "pipeline/recipe.h"
#include "pipeline/runner.h"

#include <stdio.h>
#include <stdlib.h>

static char *dir;          /* the group's temp directory */
static qp_cache *cache;    /* dir/cache */
static json_t *outputs;    /* {stage id: output digest} of the last run */

static void record_output(void *ud, const char *id, const char *key, const char *output, const json_t *desc,
                          const char *status)
{
    (void)ud;
    (void)key;
    (void)desc;
    (void)status;
    json_object_set_new(outputs, id, json_string(output));
}

/* Writes text to dir/r.yaml and runs it with `threads` compute threads;
 * the runner's return code. */
static inline int run_recipe_threads(const char *text, int threads)
{
    char *path = qp_path_join(dir, "r.yaml");
    qp_test_write_str(path, text);
    qp_recipe *r = NULL;
    FILE *sink = fopen("/dev/null", "w");
    qp_run_options o = {.mode = QP_RUN_NORMAL, .jobs = 1, .threads = threads, .out = sink,
                        .on_stage = record_output};
    json_object_clear(outputs);
    int rc = qp_recipe_load(&r, path);
    if (rc == 0)
        rc = qp_runner_run(r, cache, &o);
    fclose(sink);
    qp_recipe_free(r);
    free(path);
    return rc;
}

static inline int run_recipe(const char *text)
{
    return run_recipe_threads(text, 2);
}

static inline int setup(void **state)
{
    (void)state;
    dir = qp_test_tmpdir();
    outputs = json_object();
    char *c = qp_path_join(dir, "cache");
    int rc = qp_cache_open(&cache, c);
    free(c);
    return rc;
}

static inline int teardown(void **state)
{
    (void)state;
    qp_cache_free(cache);
    json_decref(outputs);
    qp_test_rmtree(dir);
    free(dir);
    return 0;
}

#endif
