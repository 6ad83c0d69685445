/* Helpers shared by the tests/stages/ tests that run recipes through the
 * runner (header-only so every test binary stays a single .c file as the
 * Makefile expects): a temp directory with a cache per test group, and a
 * recipe runner that records each stage's output digest, and readers of
 * those outputs. */
#ifndef QP_TESTS_STAGES_HELPERS_H
#define QP_TESTS_STAGES_HELPERS_H

#include "tests/support/testutil.h"

#include "artifact/artifact.h"
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

/* The output artifact of stage `id` in the last run. */
static inline qp_artifact *load_output(const char *id)
{
    qp_artifact *a = NULL;
    const char *digest = json_string_value(json_object_get(outputs, id));
    assert_non_null(digest);
    assert_int_equal(qp_artifact_load(&a, cache, digest), 0);
    return a;
}

/* A numeric metric of an artifact (it must be there). */
static inline double metric(const qp_artifact *a, const char *name)
{
    const json_t *v = json_object_get(qp_artifact_metrics_c(a), name);
    assert_true(json_is_number(v));
    return json_number_value(v);
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
