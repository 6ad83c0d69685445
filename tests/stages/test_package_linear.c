/* Linear (RTN/GPTQ/AWQ) weights with llama.cpp's block geometry exported as
 * GGUF: read back with qpipe's GGUF reader, every quantized tensor
 * dequantizes (llama.cpp's arithmetic) to exactly the weights `evaluate`
 * scores — bit for bit for Q4_0 and Q8_0 — and other geometries are refused. */
#include "tests/stages/stage_test_helpers.h"

#include "model/gguf.h"
#include "model/gguf_llama.h"
#include "quant/qtypes.h"
#include "stages/qtensor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The package's provenance.json: it names its input artifacts by stage id
 * (each recipe here calls the quantize stage "q"). */
static json_t *package_provenance(const char *out)
{
    char *p = qp_strfmt("%s/%s/provenance.json", dir, out);
    json_error_t e;
    json_t *j = json_load_file(p, 0, &e);
    free(p);
    assert_non_null(j);
    return j;
}

static void check_export(const char *out, const char *file, uint32_t want_type, int exact)
{
    json_t *prov = package_provenance(out);
    const char *qdigest = json_string_value(json_object_get(json_object_get(prov, "inputs"), "q"));
    assert_non_null(qdigest);
    qp_artifact *qa = NULL;
    assert_int_equal(qp_artifact_load(&qa, cache, qdigest), 0);
    char *path = qp_strfmt("%s/%s/%s", dir, out, file);
    qp_gguf *g = NULL;
    assert_int_equal(qp_gguf_open(&g, path), 0);
    size_t checked = 0;
    double worst = 0;
    for (size_t i = 0; i < qp_artifact_count(qa); i++) {
        const json_t *e = qp_artifact_entry(qa, i);
        const char *fmt = json_string_value(json_object_get(e, "format"));
        if (!fmt || strcmp(fmt, "linear") != 0)
            continue;
        const char *hf = qp_artifact_entry_name(e) + 8;
        char gname[128];
        assert_int_equal(qp_gguf_llama_name(gname, sizeof(gname), hf), 0);
        const qp_gguf_tensor *t = qp_gguf_find_tensor(g, gname);
        assert_non_null(t);
        assert_int_equal(t->type, want_type);
        int64_t rows, cols;
        qp_qtensor_rows_cols(e, &rows, &cols);
        size_t n = (size_t)(rows * cols);
        float *want = malloc(n * sizeof(float)), *got = malloc(n * sizeof(float)), *unperm = malloc(n * sizeof(float));
        void *buf = NULL;
        size_t len = 0;
        assert_int_equal(qp_cache_get(cache, qp_artifact_entry_digest(e), &buf, &len), 0);
        assert_int_equal(qp_qtensor_to_f32(e, buf, len, want, n, hf), 0);
        size_t row_size = qp_qtype_row_size((qp_ggml_type)t->type, cols);
        for (int64_t r = 0; r < rows; r++)
            assert_int_equal(qp_dequantize_row((qp_ggml_type)t->type, (const char *)t->data + r * row_size, got + r * cols,
                                               cols), 0);
        /* GGUF holds q/k rows permuted for llama.cpp's RoPE */
        const float *cmp = got;
        if (strstr(hf, "q_proj") || strstr(hf, "k_proj")) {
            int heads = strstr(hf, "q_proj") ? 8 : 4;
            assert_int_equal(qp_gguf_llama_permute_rows(unperm, got, rows, (size_t)cols * sizeof(float), heads, 0), 0);
            cmp = unperm;
        }
        if (exact) {
            assert_memory_equal(cmp, want, n * sizeof(float));
        } else {
            for (size_t k = 0; k < n; k++) {
                double d = fabs((double)cmp[k] - (double)want[k]);
                if (d > worst)
                    worst = d;
            }
        }
        checked++;
        free(buf);
        free(want);
        free(got);
        free(unperm);
    }
    assert_int_equal(checked, 42);
    if (!exact) {
        /* only m = fp16(−s·z) is rounded: half an fp16 ulp of |m| < 2^-11·|m| */
        print_message("%s: largest |Q4_1 − linear| = %.3g\n", file, worst);
        assert_true(worst < 1e-4);
    }
    qp_gguf_free(g);
    free(path);
    qp_artifact_free(qa);
    json_decref(prov);
}

static void test_gguf_blocks(void **state)
{
    (void)state;
    char *model = qp_test_shared_path("models/house-llama");
    char *text = qp_strfmt("qpipe: 1\nname: lin\nstages:\n"
                           "  model: {uses: fetch, with: {source: \"%s\"}}\n"
                           "  q: {uses: quantize, needs: [model], with: {method: rtn, bits: 4, group_size: 32, sym: true}}\n"
                           "  p: {uses: package, needs: [q], with: {format: gguf, out: o40, name: m}}\n",
                           model);
    assert_int_equal(run_recipe(text), 0);
    check_export("o40", "m.gguf", QP_GGML_Q4_0, 1);
    free(text);
    text = qp_strfmt("qpipe: 1\nname: lin8\nstages:\n"
                     "  model: {uses: fetch, with: {source: \"%s\"}}\n"
                     "  q: {uses: quantize, needs: [model], with: {method: rtn, bits: 8, group_size: 32, sym: true}}\n"
                     "  p: {uses: package, needs: [q], with: {format: gguf, out: o8, name: m}}\n", model);
    assert_int_equal(run_recipe(text), 0);
    check_export("o8", "m.gguf", QP_GGML_Q8_0, 1);
    free(text);
    text = qp_strfmt("qpipe: 1\nname: lin41\nstages:\n"
                     "  model: {uses: fetch, with: {source: \"%s\"}}\n"
                     "  q: {uses: quantize, needs: [model], with: {method: rtn, bits: 4, group_size: 32}}\n"
                     "  p: {uses: package, needs: [q], with: {format: gguf, out: o41b, name: m}}\n", model);
    assert_int_equal(run_recipe(text), 0);
    check_export("o41b", "m.gguf", QP_GGML_Q4_1, 0);
    free(text);
    /* group 128 has no llama.cpp block: refused, nothing written */
    text = qp_strfmt("qpipe: 1\nname: lin128\nstages:\n"
                     "  model: {uses: fetch, with: {source: \"%s\"}}\n"
                     "  q: {uses: quantize, needs: [model], with: {method: rtn, bits: 4, group_size: 128}}\n"
                     "  p: {uses: package, needs: [q], with: {format: gguf, out: o128, name: m}}\n", model);
    assert_int_equal(run_recipe(text), QP_EUSAGE);  /* a recipe that asks for the impossible: exit 2 */
    assert_non_null(strstr(qp_error_last(), "4-bit group-128 weights have no exact llama.cpp block type"));
    char *o128 = qp_path_join(dir, "o128");
    assert_false(qp_path_exists(o128));
    free(o128);
    free(text);
    free(model);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_gguf_blocks)};
    return cmocka_run_group_tests(tests, setup, teardown);
}
