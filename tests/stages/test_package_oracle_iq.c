/* quantize + package end to end for the i-quant and ternary types against
 * llama.cpp's files in vectors/house-llama/iq/: --pure IQ4_NL, IQ4_XS, IQ3_XXS,
 * IQ3_S, TQ1_0 and TQ2_0 with the importance matrix, and the IQ4_XS,
 * IQ3_XXS, IQ3_XS, IQ3_S and IQ3_M file-type mixes (llama-quantize --imatrix … FTYPE:
 * llama_tensor_get_type's rules), each
 * written by a recipe (`imatrix:` → `method: gguf, type: …`) and, with
 * qpipe's own qpipe.* keys dropped, byte-identical to llama.cpp's file;
 * and `override: type` with these types and IQ3_XXS. */
#include "tests/support/testutil.h"
#include "tests/support/run_recipe.h"
#include "tests/stages/package_oracle.h"

#include "common/fsutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *pure_types[] = {"IQ4_NL", "IQ4_XS", "IQ3_XXS", "IQ3_S", "TQ1_0", "TQ2_0"};
static const char *mix_types[] = {"IQ4_XS", "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M"};

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
    for (size_t i = 0; i < sizeof(mix_types) / sizeof(mix_types[0]); i++) {
        const char *t = mix_types[i];
        fprintf(f, "  m_%s: {uses: quantize, needs: [model], with: {method: gguf, type: %s, imatrix: \"%s\"}}\n", t,
                t, imatrix);
        fprintf(f, "  pm_%s: {uses: package, needs: [m_%s], with: {format: gguf, out: out/mix-%s, name: mix-%s}}\n",
                t, t, t, t);
    }
    /* override: block types per tensor on top of a K-quant mix */
    fprintf(f, "  ov: {uses: quantize, needs: [model], with: {method: gguf, type: Q4_K_M, imatrix: \"%s\", override: "
               "[{match: \"*layers.0.mlp.*\", type: IQ4_XS}, {match: \"*layers.1.self_attn.*\", type: TQ2_0}, "
               "{match: \"*layers.2.*\", type: TQ1_0}, {match: \"*layers.3.self_attn.[qk]_proj*\", type: IQ3_XXS}, "
               "{match: \"*layers.3.mlp.down_proj*\", type: IQ3_S}]}}\n",
            imatrix);
    fprintf(f, "  pov: {uses: package, needs: [ov], with: {format: gguf, out: out/ov, name: ov}}\n");
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

static void test_mixes(void **state)
{
    (void)state;
    char name[64];
    for (size_t i = 0; i < sizeof(mix_types) / sizeof(mix_types[0]); i++) {
        snprintf(name, sizeof(name), "mix-%s", mix_types[i]);
        package_oracle_check(dir, name, "iq/");
    }
}

/* out/ov: each overridden tensor holds the bytes of the pure oracle of its
 * type (same weights, same imatrix), the others stay Q4_K_M's */
static void test_override(void **state)
{
    (void)state;
    static const struct { const char *prefix, *type; size_t want; } groups[] = {
        {"blk.0.ffn_", "IQ4_XS", 3}, {"blk.1.attn_", "TQ2_0", 4}, {"blk.2.", "TQ1_0", 7},
        {"blk.3.attn_q", "IQ3_XXS", 1}, {"blk.3.attn_k", "IQ3_XXS", 1}, {"blk.3.ffn_down", "IQ3_S", 1},
    };
    char *ours = qp_path_join(dir, "out/ov/ov.gguf");
    qp_gguf *g = NULL;
    assert_int_equal(qp_gguf_open(&g, ours), 0);
    for (size_t k = 0; k < sizeof(groups) / sizeof(groups[0]); k++) {
        char rel[96];
        snprintf(rel, sizeof(rel), "vectors/house-llama/iq/%s-imatrix.gguf", groups[k].type);
        char *opath = qp_test_shared_path(rel);
        qp_gguf *o = NULL;
        assert_int_equal(qp_gguf_open(&o, opath), 0);
        size_t seen = 0;
        for (size_t i = 0; i < qp_gguf_tensor_count(g); i++) {
            const qp_gguf_tensor *t = qp_gguf_tensor_at(g, i);
            if (strncmp(t->name, groups[k].prefix, strlen(groups[k].prefix)) != 0 || t->n_dims < 2)
                continue;
            const qp_gguf_tensor *ot = qp_gguf_find_tensor(o, t->name);
            assert_non_null(ot);
            assert_int_equal(t->type, ot->type);
            assert_int_equal(t->nbytes, ot->nbytes);
            assert_memory_equal(t->data, ot->data, t->nbytes);
            seen++;
        }
        assert_int_equal(seen, groups[k].want);
        qp_gguf_free(o);
        free(opath);
    }
    const qp_gguf_tensor *q = qp_gguf_find_tensor(g, "blk.3.attn_output.weight");
    assert_non_null(q);
    assert_int_equal(q->type, QP_GGML_Q4_K);
    qp_gguf_free(g);
    free(ours);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pure_imatrix),
        cmocka_unit_test(test_mixes),
        cmocka_unit_test(test_override),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
