/* quantize + package end to end for llama.cpp's IQ1_S and IQ1_M file types
 * (llama-quantize --imatrix imatrix.dat F32.gguf IQ1_S|IQ1_M, llama.h 24
 * and 31: llama_tensor_get_type's IQ2 branch — output Q5_K, token_embd
 * Q2_K, attn_v Q4_K or Q2_K by n_gqa, the first eighth of ffn_down Q2_K —
 * with attn_output IQ2_XXS and the rest IQ1_S / IQ1_M), written by a recipe
 * (`imatrix:` -> `method: gguf, type: ...`) and, with qpipe's own qpipe.*
 * keys dropped, byte-identical to vectors/house-llama/iq/mix-IQ1_S.gguf and
 * mix-IQ1_M.gguf; `pure: true` IQ1_M to IQ1_M-imatrix.gguf (llama-quantize
 * spares IQ1_M's token_embd and output the imatrix check).
 *
 * And the refusals where llama-quantize refuses ("Missing importance
 * matrix for tensor %s in a very low-bit quantization"): `pure: true` IQ1_S
 * with this imatrix (no entry for output.weight) or with none, both mixes
 * with none — each before any tensor is quantized. */
#include "tests/support/testutil.h"
#include "tests/support/run_recipe.h"
#include "tests/stages/package_oracle.h"

#include "common/error.h"
#include "common/fsutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *dir;

static int setup(void **state)
{
    (void)state;
    dir = qp_test_tmpdir();
    char *models = qp_test_shared_path("models/house-llama");
    char *imatrix = qp_test_shared_path("vectors/house-llama/imatrix.dat");
    char *recipe = qp_path_join(dir, "r.yaml");
    FILE *f = fopen(recipe, "w");
    fprintf(f, "qpipe: 1\nname: oracle-iq1\nstages:\n  model: {uses: fetch, with: {source: \"%s\"}}\n", models);
    static const char *mixes[] = {"IQ1_S", "IQ1_M"};
    for (size_t i = 0; i < sizeof(mixes) / sizeof(mixes[0]); i++) {
        fprintf(f, "  m_%s: {uses: quantize, needs: [model], with: {method: gguf, type: %s, imatrix: \"%s\"}}\n",
                mixes[i], mixes[i], imatrix);
        fprintf(f, "  pm_%s: {uses: package, needs: [m_%s], with: {format: gguf, out: out/mix-%s, name: mix-%s}}\n",
                mixes[i], mixes[i], mixes[i], mixes[i]);
    }
    fprintf(f, "  p_IQ1_M: {uses: quantize, needs: [model], with: {method: gguf, type: IQ1_M, pure: true, "
               "imatrix: \"%s\"}}\n", imatrix);
    fprintf(f, "  pp_IQ1_M: {uses: package, needs: [p_IQ1_M], with: {format: gguf, out: out/IQ1_M-imatrix, "
               "name: IQ1_M-imatrix}}\n");
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

static void test_mix_iq1_s(void **state)
{
    (void)state;
    package_oracle_check(dir, "mix-IQ1_S", "iq/");
}

static void test_mix_iq1_m(void **state)
{
    (void)state;
    package_oracle_check(dir, "mix-IQ1_M", "iq/");
}

static void test_pure_iq1_m(void **state)
{
    (void)state;
    package_oracle_check(dir, "IQ1_M-imatrix", "iq/");
}

/* A recipe of one quantize stage `with` these parameters, run in a cache
 * of its own: it must fail with `want` in the message and store nothing
 * quantized. */
static void expect_refusal(const char *name, const char *with, const char *want)
{
    char *models = qp_test_shared_path("models/house-llama");
    char rel[64];
    snprintf(rel, sizeof(rel), "%s.yaml", name);
    char *recipe = qp_path_join(dir, rel);
    snprintf(rel, sizeof(rel), "cache-%s", name);
    char *cache_dir = qp_path_join(dir, rel);
    FILE *f = fopen(recipe, "w");
    fprintf(f, "qpipe: 1\nname: %s\nstages:\n  model: {uses: fetch, with: {source: \"%s\"}}\n"
               "  q: {uses: quantize, needs: [model], with: {%s}}\n", name, models, with);
    fclose(f);
    assert_int_equal(qp_test_run_recipe(recipe, cache_dir), QP_EUSAGE);
    const char *msg = qp_error_last();
    print_message("%s: %s\n", name, msg);
    assert_non_null(strstr(msg, want));
    assert_null(strchr(msg, '\n'));
    free(cache_dir);
    free(recipe);
    free(models);
}

static void test_refusals(void **state)
{
    (void)state;
    char *imatrix = qp_test_shared_path("vectors/house-llama/imatrix.dat");
    char with[512];
    /* pure IQ1_S: output.weight has no imatrix entry */
    snprintf(with, sizeof(with), "method: gguf, type: IQ1_S, pure: true, imatrix: \"%s\"", imatrix);
    expect_refusal("pure-IQ1_S", with, "stage 'q': Missing importance matrix for tensor output.weight in a very "
                   "low-bit quantization (IQ1_S; llama-quantize refuses it too): use an imatrix: computed with an "
                   "entry for it, or give 'lm_head.weight' another type with override:");
    expect_refusal("pure-IQ1_S-noim", "method: gguf, type: IQ1_S, pure: true", "in a very low-bit quantization");
    expect_refusal("pure-IQ1_M-noim", "method: gguf, type: IQ1_M, pure: true", "in a very low-bit quantization");
    expect_refusal("mix-IQ1_S-noim", "method: gguf, type: IQ1_S", "set imatrix: to an importance matrix that covers it");
    expect_refusal("mix-IQ1_M-noim", "method: gguf, type: IQ1_M", "set imatrix: to an importance matrix that covers it");
    free(imatrix);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mix_iq1_s),
        cmocka_unit_test(test_mix_iq1_m),
        cmocka_unit_test(test_pure_iq1_m),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
