/* quantize + package end to end for llama.cpp's IQ2_XXS, IQ2_XS, IQ2_S
 * and IQ2_M file types (llama-quantize --imatrix imatrix.dat F32.gguf
 * IQ2_XXS|IQ2_XS|IQ2_S|IQ2_M: llama_tensor_get_type's rules — output Q5_K,
 * token_embd Q2_K (IQ3_S for IQ2_S/M), attn_v Q4_K or Q2_K (IQ3_S) by
 * n_gqa, the first eighth of ffn_down Q2_K (IQ3_S), attn_output IQ3_S for
 * IQ2_S/M, the rest IQ2_XXS, IQ2_XS, IQ2_XS (the IQ2_S file type's default)
 * or IQ2_S (IQ2_M's)), written by a recipe (`imatrix:` → `method: gguf,
 * type: …`) and, with qpipe's own qpipe.* keys dropped, byte-identical to
 * vectors/house-llama/iq/mix-IQ2_XXS.gguf, mix-IQ2_XS.gguf, mix-IQ2_S.gguf
 * and mix-IQ2_M.gguf.
 *
 * And the refusals where llama-quantize refuses ("Missing importance
 * matrix for tensor %s in a very low-bit quantization"): `pure: true`
 * IQ2_XXS / IQ2_XS / IQ2_S / IQ2_M with this imatrix (no entry for
 * output.weight) or with none, the IQ2 mixes with none, overrides that give lm_head IQ2_XS or
 * IQ2_S, and IQ2_S on a layer without an imatrix — each before any tensor
 * is quantized (no quantized artifact, nothing stored). */
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
    fprintf(f, "qpipe: 1\nname: oracle-iq2\nstages:\n  model: {uses: fetch, with: {source: \"%s\"}}\n", models);
    static const char *mixes[] = {"IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M"};
    for (size_t i = 0; i < sizeof(mixes) / sizeof(mixes[0]); i++) {
        fprintf(f, "  m_%s: {uses: quantize, needs: [model], with: {method: gguf, type: %s, imatrix: \"%s\"}}\n",
                mixes[i], mixes[i], imatrix);
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

static void test_mix_iq2_xxs(void **state)
{
    (void)state;
    package_oracle_check(dir, "mix-IQ2_XXS", "iq/");
}

static void test_mix_iq2_xs(void **state)
{
    (void)state;
    package_oracle_check(dir, "mix-IQ2_XS", "iq/");
}

static void test_mix_iq2_s(void **state)
{
    (void)state;
    package_oracle_check(dir, "mix-IQ2_S", "iq/");
}

static void test_mix_iq2_m(void **state)
{
    (void)state;
    package_oracle_check(dir, "mix-IQ2_M", "iq/");
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
    /* file type, and the block type its --pure gives (IQ2_S: IQ2_XS, IQ2_M: IQ2_S) */
    static const char *types[][2] = {{"IQ2_XXS", "IQ2_XXS"}, {"IQ2_XS", "IQ2_XS"}, {"IQ2_S", "IQ2_XS"},
                                     {"IQ2_M", "IQ2_S"}};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        char want[320], name[32];
        snprintf(want, sizeof(want), "stage 'q': Missing importance matrix for tensor output.weight in a very "
                 "low-bit quantization (%s; llama-quantize refuses it too): use an imatrix: computed with an "
                 "entry for it, or give 'lm_head.weight' another type with override:", types[i][1]);
        snprintf(with, sizeof(with), "method: gguf, type: %s, pure: true, imatrix: \"%s\"", types[i][0], imatrix);
        snprintf(name, sizeof(name), "pure-%s", types[i][0]);
        expect_refusal(name, with, want);
        /* no imatrix at all: the first tensor that would get the type */
        snprintf(with, sizeof(with), "method: gguf, type: %s, pure: true", types[i][0]);
        snprintf(name, sizeof(name), "pure-%s-noim", types[i][0]);
        expect_refusal(name, with, "in a very low-bit quantization");
        snprintf(with, sizeof(with), "method: gguf, type: %s", types[i][0]);
        snprintf(name, sizeof(name), "mix-%s-noim", types[i][0]);
        /* IQ2_M (IQ2_S blocks): the per-tensor rules refuse IQ2_S without an
         * imatrix themselves, in llama.cpp's words, before the stage's check */
        expect_refusal(name, with, strcmp(types[i][0], "IQ2_M") != 0
                                       ? "set imatrix: to an importance matrix that covers it"
                                       : "stage 'q': tensor 'blk.0.ffn_down.weight': Missing importance matrix for "
                                         "tensor blk.0.ffn_down.weight in a very low-bit quantization");
    }
    /* the IQ2_S block type given by override: llama-quantize refuses it
     * without an imatrix entry too, although ggml's IQ2_S quantizer takes
     * none */
    snprintf(with, sizeof(with), "method: gguf, type: Q4_K_M, imatrix: \"%s\", override: [{match: lm_head.weight, "
             "type: IQ2_S}]", imatrix);
    expect_refusal("override-IQ2_S", with, "stage 'q': Missing importance matrix for tensor output.weight in a very "
                   "low-bit quantization (IQ2_S; llama-quantize refuses it too)");
    expect_refusal("override-IQ2_S-noim", "method: gguf, type: Q4_K_M, override: [{match: '*layers.1.mlp.up_proj*', "
                   "type: IQ2_S}]", "tensor blk.1.ffn_up.weight in a very low-bit quantization (IQ2_S;");
    /* an override that gives the output an IQ2 type */
    snprintf(with, sizeof(with), "method: gguf, type: Q4_K_M, imatrix: \"%s\", override: [{match: lm_head.weight, "
             "type: IQ2_XS}]", imatrix);
    expect_refusal("override-lm-head", with, "Missing importance matrix for tensor output.weight");
    free(imatrix);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mix_iq2_xxs),
        cmocka_unit_test(test_mix_iq2_xs),
        cmocka_unit_test(test_mix_iq2_s),
        cmocka_unit_test(test_mix_iq2_m),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
