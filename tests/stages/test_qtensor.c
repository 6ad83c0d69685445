/* Row access to stored tensors (stages/qtensor.h): any row range of a dense
 * (bf16) or ggml (Q4_K) tensor decodes to the same floats as the whole
 * tensor; lengths that do not fit the manifest are refused; the packed
 * formats (linear, nf4, int8) say they are decoded whole. */
#include "tests/support/testutil.h"

#include "common/error.h"
#include "common/tensor.h"
#include "quant/qtypes.h"
#include "stages/qtensor.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static json_t *entry(const char *format, const char *key, const char *val, int64_t rows, int64_t cols)
{
    json_t *e = json_pack("{s:s, s:s, s:[I,I]}", "format", format, key, val, "shape", (json_int_t)rows,
                          (json_int_t)cols);
    assert_non_null(e);
    return e;
}

/* rows [r0, r0+n) through the layout equal the whole decode's */
static void check_ranges(const json_t *e, const void *bytes, size_t len, int64_t rows, int64_t cols)
{
    float *whole = malloc((size_t)(rows * cols) * sizeof(float)), *part = malloc((size_t)(rows * cols) * sizeof(float));
    assert_int_equal(qp_qtensor_to_f32(e, bytes, len, whole, (uint64_t)(rows * cols), "t"), 0);
    qp_qtensor_layout lay;
    assert_int_equal(qp_qtensor_layout_of(&lay, e, len, "t"), 1);
    assert_int_equal(lay.rows, rows);
    assert_int_equal(lay.cols, cols);
    const int64_t ranges[][2] = {{0, rows}, {0, 1}, {rows - 1, 1}, {3, 5}};
    for (size_t i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++) {
        memset(part, 0xff, (size_t)(rows * cols) * sizeof(float));
        assert_int_equal(qp_qtensor_layout_rows(&lay, bytes, ranges[i][0], ranges[i][1], part), 0);
        assert_memory_equal(part, whole + ranges[i][0] * cols, (size_t)(ranges[i][1] * cols) * sizeof(float));
    }
    free(whole);
    free(part);
}

static void test_dense_rows(void **state)
{
    (void)state;
    const int64_t rows = 9, cols = 40;
    uint16_t *b = malloc((size_t)(rows * cols) * sizeof(uint16_t));
    for (int64_t i = 0; i < rows * cols; i++)
        b[i] = qp_f32_to_bf16((float)(i % 17) * 0.37f - 2.0f);
    json_t *e = entry("dense", "dtype", "BF16", rows, cols);
    check_ranges(e, b, (size_t)(rows * cols) * 2, rows, cols);
    qp_qtensor_layout lay;
    assert_int_equal(qp_qtensor_layout_of(&lay, e, (size_t)(rows * cols) * 2 - 2, "stage 's': tensor 'w'"),
                     QP_ECORRUPT);
    assert_non_null(strstr(qp_error_last(), "tensor 'w'"));
    json_decref(e);
    e = entry("dense", "dtype", "I32", rows, cols);
    assert_int_equal(qp_qtensor_layout_of(&lay, e, (size_t)(rows * cols) * 4, "t"), QP_EFORMAT);
    json_decref(e);
    free(b);
}

static void test_ggml_rows(void **state)
{
    (void)state;
    const int64_t rows = 10, cols = 512;
    float *w = malloc((size_t)(rows * cols) * sizeof(float));
    for (int64_t i = 0; i < rows * cols; i++)
        w[i] = (float)((i * 7919) % 1000) / 500.0f - 1.0f;
    size_t rb = qp_qtype_row_size(QP_GGML_Q4_K, cols);
    void *q = malloc((size_t)rows * rb);
    assert_int_equal(qp_quantize(QP_GGML_Q4_K, w, q, rows, cols, NULL, 1), 0);
    json_t *e = entry("ggml", "qtype", "Q4_K", rows, cols);
    check_ranges(e, q, (size_t)rows * rb, rows, cols);
    qp_qtensor_layout lay;
    assert_int_equal(qp_qtensor_layout_of(&lay, e, (size_t)rows * rb + 1, "t"), QP_ECORRUPT);
    json_decref(e);
    e = entry("ggml", "qtype", "Q99", rows, cols);
    assert_int_equal(qp_qtensor_layout_of(&lay, e, (size_t)rows * rb, "t"), QP_ECORRUPT);
    json_decref(e);
    /* packed formats are decoded whole (no layout, no error) */
    e = entry("linear", "dtype", "I32", rows, cols);
    assert_int_equal(qp_qtensor_layout_of(&lay, e, 123, "t"), 0);
    json_decref(e);
    free(w);
    free(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense_rows),
        cmocka_unit_test(test_ggml_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
