/* qp_quantize (AVX2 kernels + threads) == qp_quantize_ref, byte for byte, on
 * inputs built to hit the order-dependent corners of the reference code:
 * ±0, ties between +a and −a for the largest magnitude, constant and
 * all-zero blocks (degenerate searches), tiny (< 1e-15) and subnormal
 * groups, wide dynamic ranges, a few exact halfway values — with and
 * without an imatrix (zeros included), at 1, 2, 3 and 7 threads. */
#include "tests/support/testutil.h"

#include "common/error.h"
#include "quant/qtypes.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>


/* Fills rows × n with a mix of patterns, chosen per 32-weight group. */
static void fill(float *x, int64_t rows, int64_t n)
{
    for (int64_t g = 0; g < rows * n; g += 32) {
        float *p = x + g;
        int kind = (int)(qp_test_next_u64() % 12);
        float s = powf(10.0f, -3.0f + 4.0f * qp_test_uniform());
        for (int j = 0; j < 32; j++) {
            switch (kind) {
            case 0: p[j] = 0.0f; break;
            case 1: p[j] = (j & 1) ? -0.0f : 0.0f; break;
            case 2: p[j] = s; break;                                  /* constant > 0 */
            case 3: p[j] = -s; break;                                 /* constant < 0: max == min */
            case 4: p[j] = (j % 5 == 0) ? ((j & 2) ? s : -s) : s * 0.25f * qp_test_gauss(); break;   /* ±max ties */
            case 5: p[j] = 1e-20f * qp_test_gauss(); break;                   /* below GROUP_MAX_EPS */
            case 6: p[j] = 0x1p-140f * (float)(int)(qp_test_next_u64() % 7 - 3); break;   /* subnormal */
            case 7: p[j] = s * (float)((int)(qp_test_next_u64() % 17) - 8) * 0.5f; break; /* exact halves */
            case 8: p[j] = s * qp_test_gauss() * (j == 7 ? 100.0f : 1.0f); break;       /* one outlier */
            case 9: p[j] = fabsf(s * qp_test_gauss()); break;                 /* one-signed */
            case 10: p[j] = -fabsf(s * qp_test_gauss()); break;
            default: p[j] = s * qp_test_gauss(); break;
            }
        }
    }
}

static void check_type(const qp_qtype_info *info, int64_t rows, int64_t n, int with_imatrix)
{
    float *x = malloc((size_t)(rows * n) * sizeof *x);
    float *im = malloc((size_t)n * sizeof *im);
    fill(x, rows, n);
    for (int64_t c = 0; c < n; c++)
        im[c] = (c % 13 == 0) ? 0.0f : powf(10.0f, -2.0f + 4.0f * qp_test_uniform());
    const size_t bytes = qp_qtype_row_size(info->type, n) * (size_t)rows;
    unsigned char *ref = malloc(bytes), *fast = malloc(bytes);
    const float *imat = with_imatrix ? im : NULL;
    int rc = qp_quantize_ref(info->type, x, ref, rows, n, imat);
    if (rc)
        fail_msg("%s: %s", info->name, qp_error_last());
    static const int threads[] = { 1, 2, 3, 7 };
    for (size_t k = 0; k < sizeof threads / sizeof threads[0]; k++) {
        memset(fast, 0x5A, bytes);
        assert_int_equal(qp_quantize(info->type, x, fast, rows, n, imat, threads[k]), 0);
        if (memcmp(ref, fast, bytes) != 0) {
            size_t b = 0;
            while (ref[b] == fast[b])
                b++;
            fail_msg("%s %lldx%lld imatrix=%d threads=%d: first differing byte %zu (row %zu)", info->name,
                     (long long)rows, (long long)n, with_imatrix, threads[k], b,
                     b / qp_qtype_row_size(info->type, n));
        }
    }
    free(x);
    free(im);
    free(ref);
    free(fast);
}

static void test_fast_equals_ref_all_types(void **state)
{
    (void)state;
    for (uint64_t seed = 42; seed < 46; seed++) {
        qp_test_seed(seed);
        for (size_t i = 0; i < qp_qtype_count(); i++) {
            const qp_qtype_info *info = qp_qtype_at(i);
            const int64_t n = info->block == 256 ? 768 : 160;
            for (int im = info->needs_imatrix; im <= 1; im++)
                check_type(info, 37, n, im);
        }
    }
}

/* Longer random runs for the types that have their own SIMD kernels. */
static void test_fast_kernels_many_blocks(void **state)
{
    (void)state;
    qp_test_seed(7);
    static const qp_ggml_type kinds[] = { QP_GGML_Q8_0, QP_GGML_Q4_0, QP_GGML_Q4_1, QP_GGML_Q5_0, QP_GGML_Q5_1,
                                      QP_GGML_Q4_K, QP_GGML_Q5_K, QP_GGML_Q6_K, QP_GGML_IQ4_XS,
                                      QP_GGML_IQ3_XXS, QP_GGML_IQ3_S, QP_GGML_IQ2_S, QP_GGML_IQ1_M, QP_GGML_TQ1_0,
                                      QP_GGML_TQ2_0 };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        check_type(qp_qtype_get(kinds[i]), 64, 2048, 0);
    /* IQ4_XS's and IQ3_XXS's kernels also take the imatrix; IQ2_XXS's and
     * IQ2_XS's only exist with one */
    check_type(qp_qtype_get(QP_GGML_IQ4_XS), 64, 2048, 1);
    check_type(qp_qtype_get(QP_GGML_IQ3_XXS), 64, 2048, 1);
    check_type(qp_qtype_get(QP_GGML_IQ2_XXS), 64, 2048, 1);
    check_type(qp_qtype_get(QP_GGML_IQ2_XS), 64, 2048, 1);
    check_type(qp_qtype_get(QP_GGML_IQ3_S), 64, 2048, 1);
    check_type(qp_qtype_get(QP_GGML_IQ2_S), 64, 2048, 1);
    check_type(qp_qtype_get(QP_GGML_IQ1_M), 64, 2048, 1);
}

/* A bad weight anywhere: one-line error naming the first one, whatever the
 * thread count, and dst untouched. */
static void test_fast_nonfinite_rejected(void **state)
{
    (void)state;
    enum { R = 8, N = 64 };
    float x[R * N];
    for (int i = 0; i < R * N; i++)
        x[i] = (float)(i % 17) - 8.0f;
    x[5 * N + 9] = NAN;
    x[6 * N + 1] = INFINITY;
    unsigned char out[R * 36];
    for (int t = 1; t <= 4; t++) {
        memset(out, 0x77, sizeof out);
        assert_int_equal(qp_quantize(QP_GGML_Q8_0, x, out, R, N, NULL, t), QP_EUSAGE);
        assert_string_equal(qp_error_last(), "quantize Q8_0: row 5, column 9 is NaN: weights must be finite");
        for (size_t b = 0; b < sizeof out; b++)
            assert_int_equal(out[b], 0x77);
    }
    x[5 * N + 9] = 1.0f;
    assert_int_equal(qp_quantize(QP_GGML_Q8_0, x, out, R, N, NULL, 3), QP_EUSAGE);
    assert_string_equal(qp_error_last(), "quantize Q8_0: row 6, column 1 is infinite: weights must be finite");
    assert_int_equal(qp_quantize_ref(QP_GGML_Q8_0, x, out, R, N, NULL), QP_EUSAGE);
    assert_string_equal(qp_error_last(), "quantize Q8_0: row 6, column 1 is infinite: weights must be finite");
}

/* Zero rows and more threads than rows are fine. */
static void test_fast_edge_sizes(void **state)
{
    (void)state;
    float x[256];
    for (int i = 0; i < 256; i++)
        x[i] = sinf((float)i);
    unsigned char a[210], b[210];
    assert_int_equal(qp_quantize(QP_GGML_Q6_K, x, a, 0, 256, NULL, 4), 0);
    assert_int_equal(qp_quantize(QP_GGML_Q6_K, x, a, 1, 256, NULL, 16), 0);
    assert_int_equal(qp_quantize_ref(QP_GGML_Q6_K, x, b, 1, 256, NULL), 0);
    assert_memory_equal(a, b, sizeof a);
    assert_int_equal(qp_quantize(QP_GGML_Q6_K, x, a, 1, 256, NULL, 0), 0);   /* 0: one per CPU */
    assert_memory_equal(a, b, sizeof a);
}

/* IQ3_S: ggml skips an all-zero sub-block without advancing its qs and
 * signs cursors, so the next sub-block's grid indices and signs land in its
 * place (qh is indexed by sub-block) and the last slots stay 0.  Without an
 * imatrix a sub-block's indices and signs depend on its own weights only:
 * compare with the same row whose sub-block 2 is not zero. */
static void test_iq3_s_zero_subblock(void **state)
{
    (void)state;
    float x[512];
    unsigned char a[220], b[220], f[220];
    qp_test_seed(11);
    for (int i = 0; i < 256; i++)
        x[i] = 0.02f * qp_test_gauss();
    memcpy(x + 256, x, 256 * sizeof *x);
    for (int i = 64; i < 96; i++) {
        x[i] = 0;                        /* row 0: sub-block 2 all zero */
        x[256 + i] = 1e-3f * x[i + 32];  /* row 1: a small copy of sub-block 3 */
    }
    assert_int_equal(qp_quantize_ref(QP_GGML_IQ3_S, x, a, 2, 256, NULL), 0);
    assert_int_equal(qp_quantize(QP_GGML_IQ3_S, x, f, 2, 256, NULL, 2), 0);
    assert_memory_equal(a, f, 220);
    memcpy(b, a + 110, 110);
    assert_memory_equal(a + 2 + 16, b + 2 + 24, 8 * 5);     /* sub-blocks 3..7's indices, one slot earlier */
    assert_memory_equal(a + 74 + 8, b + 74 + 12, 4 * 5);    /* and their signs */
    for (int i = 0; i < 8; i++)
        assert_int_equal(a[2 + 56 + i], 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(a[74 + 28 + i], 0);
    assert_int_equal(a[66 + 2], 0);                          /* qh by sub-block: 2's bits 0 */
    assert_memory_equal(a + 66 + 3, b + 66 + 3, 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fast_equals_ref_all_types),
        cmocka_unit_test(test_fast_kernels_many_blocks),
        cmocka_unit_test(test_fast_nonfinite_rejected),
        cmocka_unit_test(test_fast_edge_sizes),
        cmocka_unit_test(test_iq3_s_zero_subblock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
