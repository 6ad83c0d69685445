/* Small helpers shared by the tests/pipeline/test_recipe*.c tests
 * (header-only so every test binary stays a single .c file as the Makefile
 * expects): loading a recipe from text, comparing JSON, and the table of
 * malformed recipes each rejected with one exact line. */
#ifndef QP_TESTS_PIPELINE_RECIPE_HELPERS_H
#define QP_TESTS_PIPELINE_RECIPE_HELPERS_H

#include "tests/support/testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "pipeline/recipe.h"

/* The start of a recipe and its usual first stage. */
#define HDR "qpipe: 1\nname: t\nstages:\n"
#define MODEL "  model: {uses: fetch, with: {source: m}}\n"

/* Loads text as "r.yaml"; fails the test (printing why) when it is rejected. */
static inline qp_recipe *load_ok(const char *text)
{
    qp_recipe *r = NULL;
    int rc = qp_recipe_load_string(&r, "r.yaml", text);
    if (rc != 0)
        fprintf(stderr, "unexpected error: %s\n", qp_error_last());
    assert_int_equal(rc, 0);
    assert_non_null(r);
    return r;
}

/* The stage with this id; fails the test when there is none. */
static inline const qp_stage_decl *stage_of(const qp_recipe *r, const char *id)
{
    long i = qp_recipe_find(r, id);
    if (i < 0)
        fprintf(stderr, "no stage '%s'\n", id);
    assert_true(i >= 0);
    return qp_recipe_stage(r, (size_t)i);
}

/* Compares a JSON value with the JSON text it must equal. */
static inline void assert_json(const json_t *got, const char *want_text)
{
    json_error_t e;
    json_t *want = json_loads(want_text, JSON_DECODE_ANY, &e);
    assert_non_null(want);
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY);
        fprintf(stderr, "got  %s\nwant %s\n", g, want_text);
        free(g);
    }
    assert_true(json_equal(got, want));
    json_decref(want);
}

/* A malformed recipe and the one line it must be rejected with. */
typedef struct {
    const char *name;
    const char *text;
    const char *msg;
} bad_case;

/* cmocka test: *state is a bad_case; QP_EUSAGE, no recipe, exactly msg. */
static inline void run_bad_case(void **state)
{
    const bad_case *c = *state;
    qp_recipe *r = (qp_recipe *)0x1;
    qp_error_clear();
    int rc = qp_recipe_load_string(&r, "r.yaml", c->text);
    if (rc != QP_EUSAGE)
        fprintf(stderr, "case %s: rc %d, message '%s'\n", c->name, rc, qp_error_last());
    assert_int_equal(rc, QP_EUSAGE);
    assert_null(r);
    assert_string_equal(qp_error_last(), c->msg);
    assert_null(strchr(qp_error_last(), '\n'));
}

/* Runs fixed[0..nf) and then one test per cases[0..nc) as group `name`;
 * returns the number that failed. */
static inline int run_recipe_tests(const char *name, const struct CMUnitTest *fixed, size_t nf,
                                   const bad_case *cases, size_t nc)
{
    struct CMUnitTest *tests = calloc(nf + nc, sizeof(*tests));
    if (!tests)
        abort();
    if (nf)
        memcpy(tests, fixed, nf * sizeof(*tests));
    for (size_t i = 0; i < nc; i++) {
        tests[nf + i].name = cases[i].name;
        tests[nf + i].test_func = run_bad_case;
        tests[nf + i].initial_state = (void *)&cases[i];
    }
    int failed = _cmocka_run_group_tests(name, tests, nf + nc, NULL, NULL);
    free(tests);
    return failed;
}

#endif
