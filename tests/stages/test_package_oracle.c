/* quantize + package end to end against llama.cpp's own files: the house
 * model exported at F32, every block type with and without the importance
 * matrix (--pure), and the mixes, each re-read with qpipe's GGUF reader and,
 * with qpipe's own qpipe.* keys dropped, byte-identical to the file
 * llama.cpp wrote — header, metadata, tensor infos, data. */
#include "tests/support/testutil.h"
#include "tests/support/run_recipe.h"
#include "tests/stages/package_oracle.h"

#include "cache/cache.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "model/gguf.h"
#include "model/gguf_writer.h"
#include "pipeline/recipe.h"
#include "pipeline/runner.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *pure_types[] = {"Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"};
static const char *mixes[] = {"Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K"};

static char *dir;

static int setup(void **state)
{
    (void)state;
    dir = qp_test_tmpdir();
    char *models = qp_test_shared_path("models/house-llama");
    char *imatrix = qp_test_shared_path("vectors/house-llama/imatrix.dat");
    char *recipe = qp_path_join(dir, "r.yaml");
    FILE *f = fopen(recipe, "w");
    fprintf(f, "qpipe: 1\nname: oracle\nstages:\n  model: {uses: fetch, with: {source: \"%s\"}}\n", models);
    fprintf(f, "  pf32: {uses: package, needs: [model], with: {format: gguf, out: out/F32, name: F32}}\n");
    for (size_t i = 0; i < sizeof(pure_types) / sizeof(pure_types[0]); i++)
        for (int im = 0; im < 2; im++) {
            if (im && !strcmp(pure_types[i], "Q8_0"))
                continue;  /* llama.cpp wrote no Q8_0-imatrix: Q8_0 ignores it */
            const char *t = pure_types[i];
            fprintf(f, "  q_%s%s: {uses: quantize, needs: [model], with: {method: gguf, type: %s, pure: true%s%s%s}}\n",
                    t, im ? "_i" : "", t, im ? ", imatrix: \"" : "", im ? imatrix : "", im ? "\"" : "");
            fprintf(f, "  p_%s%s: {uses: package, needs: [q_%s%s], with: {format: gguf, out: out/%s%s, name: %s%s}}\n",
                    t, im ? "_i" : "", t, im ? "_i" : "", t, im ? "-imatrix" : "", t, im ? "-imatrix" : "");
        }
    for (size_t i = 0; i < sizeof(mixes) / sizeof(mixes[0]); i++) {
        fprintf(f, "  m_%s: {uses: quantize, needs: [model], with: {method: gguf, type: %s}}\n", mixes[i], mixes[i]);
        fprintf(f, "  pm_%s: {uses: package, needs: [m_%s], with: {format: gguf, out: out/mix-%s, name: mix-%s}}\n",
                mixes[i], mixes[i], mixes[i], mixes[i]);
    }
    fclose(f);
    char *cache_dir = qp_path_join(dir, "cache");
    int rc = qp_test_run_recipe(recipe, cache_dir);
    free(cache_dir);
    free(recipe);
    free(models);
    free(imatrix);
    return rc ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    qp_test_rmtree(dir);
    free(dir);
    return 0;
}

static void check_one(const char *name)
{
    package_oracle_check(dir, name, "");
}

static void test_f32(void **state)
{
    (void)state;
    check_one("F32");
}

static void test_pure_types(void **state)
{
    (void)state;
    char name[64];
    for (size_t i = 0; i < sizeof(pure_types) / sizeof(pure_types[0]); i++) {
        check_one(pure_types[i]);
        if (strcmp(pure_types[i], "Q8_0") != 0) {
            snprintf(name, sizeof(name), "%s-imatrix", pure_types[i]);
            check_one(name);
        }
    }
}

static void test_mixes(void **state)
{
    (void)state;
    char name[64];
    for (size_t i = 0; i < sizeof(mixes) / sizeof(mixes[0]); i++) {
        snprintf(name, sizeof(name), "mix-%s", mixes[i]);
        check_one(name);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f32),
        cmocka_unit_test(test_pure_types),
        cmocka_unit_test(test_mixes),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
