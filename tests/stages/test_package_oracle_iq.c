/* quantize + package end to end for the i-quant and ternary types against
 * llama.cpp's files in vectors/house-llama/iq/: --pure IQ4_NL, IQ4_XS,
 * TQ1_0 and TQ2_0 with the importance matrix, and the IQ4_XS file-type mix
 * (llama-quantize --imatrix … IQ4_XS: llama_tensor_get_type's rules), each
 * written by a recipe (`imatrix:` → `method: gguf, type: …`) and, with
 * qpipe's own qpipe.* keys dropped, byte-identical to llama.cpp's file. */
#include "tests/support/testutil.h"
#include "tests/support/run_recipe.h"
#include "tests/stages/package_oracle.h"

#include "common/fsutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *pure_types[] = {"IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0"};

static char *dir;

static int setup(void **state)
{
    (void)state;
    dir = qp_test_tmpdir();
    char *models = qp_test_shared_path("models/house-llama");
    char *imatrix = qp_test_shared_path("vectors/house-llama/imatrix.dat");
    char *recipe = qp_path_join(dir, "r.yaml");
    FILE *f = fopen(recipe, "w");
    fprintf(f, "qpipe: 1\nname: oracle-iq\nstages:\n  model: {uses: fetch, with: {source: \"%s\"}}\n", models);
    for (size_t i = 0; i < sizeof(pure_types) / sizeof(pure_types[0]); i++) {
        const char *t = pure_types[i];
        fprintf(f, "  q_%s: {uses: quantize, needs: [model], with: {method: gguf, type: %s, pure: true, imatrix: \"%s\"}}\n",
                t, t, imatrix);
        fprintf(f, "  p_%s: {uses: package, needs: [q_%s], with: {format: gguf, out: out/%s-imatrix, name: %s-imatrix}}\n",
                t, t, t, t);
    }
    fprintf(f, "  m_IQ4_XS: {uses: quantize, needs: [model], with: {method: gguf, type: IQ4_XS, imatrix: \"%s\"}}\n",
            imatrix);
    fprintf(f, "  pm_IQ4_XS: {uses: package, needs: [m_IQ4_XS], with: {format: gguf, out: out/mix-IQ4_XS, "
               "name: mix-IQ4_XS}}\n");
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

static void test_pure_imatrix(void **state)
{
    (void)state;
    char name[64];
    for (size_t i = 0; i < sizeof(pure_types) / sizeof(pure_types[0]); i++) {
        snprintf(name, sizeof(name), "%s-imatrix", pure_types[i]);
        package_oracle_check(dir, name, "iq/");
    }
}

static void test_mix_iq4_xs(void **state)
{
    (void)state;
    package_oracle_check(dir, "mix-IQ4_XS", "iq/");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pure_imatrix),
        cmocka_unit_test(test_mix_iq4_xs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
