/* qp_qtensor_ggml_encode: the blocks of qp_quantize on the whole tensor,
 * sums that do not depend on the thread count, the first non-finite weight
 * named whatever chunk holds it. */
#include "tests/support/testutil.h"

#include "common/error.h"
#include "common/tensor.h"
#include "quant/qtypes.h"
#include "stages/qtensor_ggml.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* rows x cols of N(0, 0.02) stored as dt; f32 copy of what is stored in w */
static void *make_src(qp_dtype dt, int64_t rows, int64_t cols, float *w, uint64_t seed)
{
    size_t n = (size_t)(rows * cols);
    unsigned char *s = malloc(n * qp_dtype_size(dt));
    qp_test_seed(seed);
    for (size_t i = 0; i < n; i++) {
        float x = 0.02f * qp_test_gauss();
        if (dt == QP_DT_BF16) {
            uint16_t h = qp_f32_to_bf16(x);
            memcpy(s + 2 * i, &h, 2);
        } else if (dt == QP_DT_F16) {
            uint16_t h = qp_f32_to_f16(x);
            memcpy(s + 2 * i, &h, 2);
        } else {
            memcpy(s + 4 * i, &x, 4);
        }
    }
    assert_int_equal(qp_convert_to_f32(w, s, dt, n), 0);
    return s;
}

static void check_one(qp_ggml_type t, qp_dtype dt, int64_t rows, int64_t cols, int with_imatrix)
{
    size_t n = (size_t)(rows * cols), rb = qp_qtype_row_size(t, cols);
    float *w = malloc(n * sizeof(float)), *back = malloc((size_t)cols * sizeof(float)), *im = NULL;
    void *src = make_src(dt, rows, cols, w, (uint64_t)(t * 1000 + dt));
    if (with_imatrix) {
        im = malloc((size_t)cols * sizeof(float));
        for (int64_t c = 0; c < cols; c++)
            im[c] = 0.5f + qp_test_uniform();
    }
    unsigned char *want = malloc(rows * rb), *got = malloc(rows * rb);
    assert_int_equal(qp_quantize(t, w, want, rows, cols, im, 1), 0);
    /* the naive sums, in element order */
    double e_naive = 0, r_naive = 0;
    for (int64_t r = 0; r < rows; r++) {
        assert_int_equal(qp_dequantize_row(t, want + r * rb, back, cols), 0);
        for (int64_t c = 0; c < cols; c++) {
            double d = (double)w[r * cols + c] - (double)back[c];
            e_naive += d * d;
            r_naive += (double)w[r * cols + c] * (double)w[r * cols + c];
        }
    }
    double e1 = 0, r1 = 0;
    for (int threads = 1; threads <= 3; threads++) {
        double e2 = -1, r2 = -1;
        memset(got, 0xA5, rows * rb);
        assert_int_equal(qp_qtensor_ggml_encode(t, src, dt, rows, cols, im, threads, got, &e2, &r2, "w"), 0);
        assert_memory_equal(got, want, rows * rb);
        if (threads == 1) {
            e1 = e2;
            r1 = r2;
        }
        /* the same bits at any thread count */
        assert_memory_equal(&e2, &e1, sizeof(double));
        assert_memory_equal(&r2, &r1, sizeof(double));
    }
    assert_true(e_naive > 0 && r_naive > 0);
    assert_true(fabs(e1 - e_naive) <= 1e-9 * e_naive);
    assert_true(fabs(r1 - r_naive) <= 1e-9 * r_naive);
    free(w);
    free(back);
    free(im);
    free(src);
    free(want);
    free(got);
}

static void test_blocks_and_sums(void **state)
{
    (void)state;
    /* several chunks (65536 elements each), a last partial one, rows wider than a chunk */
    check_one(QP_GGML_Q8_0, QP_DT_BF16, 300, 512, 0);
    check_one(QP_GGML_Q4_K, QP_DT_BF16, 97, 1024, 0);
    check_one(QP_GGML_Q4_K, QP_DT_F16, 97, 1024, 1);
    check_one(QP_GGML_Q6_K, QP_DT_F32, 5, 70144, 0);
    check_one(QP_GGML_Q4_0, QP_DT_F32, 1, 96, 0);
    check_one(QP_GGML_Q3_K, QP_DT_BF16, 130, 768, 1);
    check_one(QP_GGML_IQ4_XS, QP_DT_BF16, 130, 768, 1);
    check_one(QP_GGML_IQ4_XS, QP_DT_F32, 3, 70144, 0);
    check_one(QP_GGML_TQ1_0, QP_DT_F16, 97, 1024, 1);
    check_one(QP_GGML_TQ2_0, QP_DT_BF16, 300, 512, 0);
}

/* The first non-finite in row order is named, though later chunks hold
 * others and run first on another thread. */
static void test_nonfinite(void **state)
{
    (void)state;
    int64_t rows = 400, cols = 512;
    float *w = malloc((size_t)(rows * cols) * sizeof(float));
    uint16_t *src = make_src(QP_DT_BF16, rows, cols, w, 7);
    src[350 * cols + 3] = 0x7f80;        /* +inf, chunk 2 */
    src[200 * cols + 511] = 0x7fc1;      /* NaN, chunk 1 */
    unsigned char *dst = malloc(rows * qp_qtype_row_size(QP_GGML_Q8_0, cols));
    double e2, r2;
    for (int threads = 1; threads <= 3; threads++) {
        assert_int_equal(qp_qtensor_ggml_encode(QP_GGML_Q8_0, src, QP_DT_BF16, rows, cols, NULL, threads, dst, &e2,
                                                &r2, "stage 'q': tensor 'x'"),
                         QP_EFORMAT);
        assert_string_equal(qp_error_last(), "stage 'q': tensor 'x': row 200, column 511 is NaN; fix the checkpoint "
                                             "(quantization needs finite weights)");
    }
    src[200 * cols + 511] = 0;
    assert_int_equal(qp_qtensor_ggml_encode(QP_GGML_Q8_0, src, QP_DT_BF16, rows, cols, NULL, 2, dst, &e2, &r2, "t"),
                     QP_EFORMAT);
    assert_string_equal(qp_error_last(),
                        "t: row 350, column 3 is infinite; fix the checkpoint (quantization needs finite weights)");
    free(w);
    free(src);
    free(dst);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blocks_and_sums),
        cmocka_unit_test(test_nonfinite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
