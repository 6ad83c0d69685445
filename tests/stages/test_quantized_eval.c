/* Evaluating a quantized artifact is evaluating its dequantized weights:
 * a quantized artifact (Q4_K_M; the IQ4_XS mix with IQ3_XXS overrides;
 * TQ1_0; TQ2_0 overrides; the IQ3_M mix) and a plain f32 checkpoint written from its
 * dequantized tensors give bit-identical metrics. */
#include "tests/support/testutil.h"

#include "cache/cache.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "model/safetensors.h"
#include "pipeline/recipe.h"
#include "pipeline/runner.h"
#include "stages/qtensor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *dir;
static qp_cache *cache;

/* Runs a recipe; returns the output digest of `stage` from the NDJSON. */
static void run(const char *name, const char *text, const char *stage, char digest[QP_HEX_LEN])
{
    char *path = qp_strfmt("%s/%s.yaml", dir, name), *log = qp_strfmt("%s/%s.log", dir, name);
    qp_test_write_str(path, text);
    qp_recipe *r = NULL;
    FILE *out = fopen(log, "w");
    qp_run_options o = {.mode = QP_RUN_NORMAL, .jobs = 1, .threads = 2, .json = 1, .out = out};
    assert_int_equal(qp_recipe_load(&r, path), 0);
    int rc = qp_runner_run(r, cache, &o);
    fclose(out);
    if (rc)
        fail_msg("%s", qp_error_last());
    char *text_log = NULL;
    assert_int_equal(qp_read_file(log, &text_log, NULL), 0);
    char *key = qp_strfmt("{\"event\":\"stage\",\"stage\":\"%s\"", stage);
    char *line = strstr(text_log, key);
    assert_non_null(line);
    char *o_at = strstr(line, "\"output\":\"");
    assert_non_null(o_at);
    memcpy(digest, o_at + 10, 64);
    digest[64] = '\0';
    free(key);
    free(text_log);
    qp_recipe_free(r);
    free(path);
    free(log);
}

static void check_quantized(const char *with)
{
    dir = qp_test_tmpdir();
    char *cdir = qp_path_join(dir, "cache");
    assert_int_equal(qp_cache_open(&cache, cdir), 0);
    char *model = qp_test_shared_path("models/house-llama");
    char *valid = qp_test_shared_path("data/shakespeare/valid.txt");
    char *text = qp_strfmt("qpipe: 1\nname: q\nstages:\n"
                           "  model: {uses: fetch, with: {source: \"%s\"}}\n"
                           "  q: {uses: quantize, needs: [model], with: %s}\n"
                           "  e: {uses: evaluate, needs: [q], with: {dataset: \"%s\", max_chunks: 12}}\n",
                           model, with, valid);
    char qd[QP_HEX_LEN], e1[QP_HEX_LEN], e2[QP_HEX_LEN];
    run("quantized", text, "q", qd);
    run("quantized", text, "e", e1);
    free(text);

    /* write the dequantized weights as an ordinary f32 checkpoint */
    qp_artifact *qa = NULL;
    assert_int_equal(qp_artifact_load(&qa, cache, qd), 0);
    char *deq = qp_path_join(dir, "dequantized");
    assert_int_equal(qp_mkdir_p(deq, 0755), 0);
    char *st_path = qp_path_join(deq, "model.safetensors");
    qp_st_writer *w = NULL;
    assert_int_equal(qp_st_writer_new(&w, st_path), 0);
    size_t ggml = 0;
    for (size_t i = 0; i < qp_artifact_count(qa); i++) {
        const json_t *e = qp_artifact_entry(qa, i);
        const char *name = qp_artifact_entry_name(e);
        void *buf = NULL;
        size_t len = 0;
        assert_int_equal(qp_cache_get(cache, qp_artifact_entry_digest(e), &buf, &len), 0);
        if (strncmp(name, "files/", 6) == 0) {
            char *p = qp_path_join(deq, name + 6);
            qp_test_write(p, buf, len);
            free(p);
        } else {
            uint64_t n = qp_qtensor_nelem(e);
            float *f = malloc(n * sizeof(float));
            assert_int_equal(qp_qtensor_to_f32(e, buf, len, f, n, name), 0);
            const json_t *shape = json_object_get(e, "shape");
            uint64_t dims[8];
            for (size_t d = 0; d < json_array_size(shape); d++)
                dims[d] = (uint64_t)json_integer_value(json_array_get(shape, d));
            assert_int_equal(qp_st_writer_add(w, name + 8, QP_DT_F32, (int)json_array_size(shape), dims, f,
                                              n * sizeof(float)), 0);
            ggml += json_string_value(json_object_get(e, "format")) &&
                    !strcmp(json_string_value(json_object_get(e, "format")), "ggml");
            free(f);
        }
        free(buf);
    }
    assert_int_equal(qp_st_writer_finish(w), 0);
    assert_int_equal(ggml, 44);
    text = qp_strfmt("qpipe: 1\nname: d\nstages:\n"
                     "  model: {uses: fetch, with: {source: \"%s\"}}\n"
                     "  e: {uses: evaluate, needs: [model], with: {dataset: \"%s\", max_chunks: 12}}\n",
                     deq, valid);
    run("dequantized", text, "e", e2);
    /* same metrics artifact: same digest */
    assert_string_equal(e1, e2);
    qp_artifact_free(qa);
    free(text);
    free(st_path);
    free(deq);
    free(model);
    free(valid);
    free(cdir);
    qp_cache_free(cache);
    qp_test_rmtree(dir);
    free(dir);
}

static void test_dequantized_equals_quantized(void **state)
{
    (void)state;
    check_quantized("{method: gguf, type: Q4_K_M}");
}

static void test_iquants_and_ternary(void **state)
{
    (void)state;
    check_quantized("{method: gguf, type: IQ4_XS, override: [{match: \"*layers.1.*\", type: IQ3_XXS}]}");
    check_quantized("{method: gguf, type: TQ1_0, override: [{match: \"*layers.2.mlp.*\", type: TQ2_0}]}");
    check_quantized("{method: gguf, type: IQ3_M}");   /* IQ3_S with Q4_K attn_v / attn_output */
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_dequantized_equals_quantized),
                                       cmocka_unit_test(test_iquants_and_ternary)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
