#include "tests/support/run_recipe.h"

#include "cache/cache.h"
#include "common/error.h"
#include "pipeline/recipe.h"
#include "pipeline/runner.h"

#include <stdio.h>

int qp_test_run_recipe(const char *recipe_path, const char *cache_dir)
{
    qp_recipe *r = NULL;
    qp_cache *c = NULL;
    FILE *sink = fopen("/dev/null", "w");
    qp_run_options o = {.mode = QP_RUN_NORMAL, .jobs = 2, .threads = 2, .out = sink};
    int rc = qp_recipe_load(&r, recipe_path);
    if (rc == 0)
        rc = qp_cache_open(&c, cache_dir);
    if (rc == 0)
        rc = qp_runner_run(r, c, &o);
    if (rc)
        fprintf(stderr, "setup: %s\n", qp_error_last());
    if (sink)
        fclose(sink);
    qp_cache_free(c);
    qp_recipe_free(r);
    return rc;
}
