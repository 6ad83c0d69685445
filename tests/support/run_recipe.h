/* Runs a whole recipe in-process, for tests whose setup is "build these
 * artifacts the way a user's `qpipe run` would". */
#ifndef QP_TESTS_RUN_RECIPE_H
#define QP_TESTS_RUN_RECIPE_H

/* Runs the recipe at recipe_path with the cache at cache_dir (created when
 * missing), 2 jobs and 2 threads, progress discarded.  Returns 0, or the
 * error code after printing "setup: MESSAGE" to stderr. */
int qp_test_run_recipe(const char *recipe_path, const char *cache_dir);

#endif
