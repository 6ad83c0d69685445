/* Byte identity with llama-quantize --imatrix imatrix.dat for IQ1_S and
 * IQ1_M (llama.cpp c392e50).  IQ1_M has a --pure oracle
 * (vectors/house-llama/iq/IQ1_M-imatrix.gguf: every tensor IQ1_M); IQ1_S
 * has none (llama-quantize refuses --pure IQ1_S: no imatrix entry for
 * output.weight), so its oracle is the IQ1_S tensors of the file-type mix
 * mix-IQ1_S.gguf — and with them every other tensor of that file and of
 * mix-IQ1_M.gguf: re-quantized from F32.gguf by qp_quantize_ref and by
 * qp_quantize at 1 and 2 threads. */
#include "tests/quant/quant_oracle.h"

#include <math.h>

static void check_mix(const char *mix, qp_ggml_type main_type)
{
    for (int mode = 0; mode <= 2; mode++) {
        oracle_stats st;
        size_t missing, by_type[64];
        oracle_compare_mix(mix, mode, &st, &missing, by_type, 64);
        print_message("%s mode %d: %zu tensors (%zu %s, %zu with imatrix), %zu bytes compared, %zu not in qpipe, "
                      "%zu tensors / %zu bytes differ\n", mix, mode, st.tensors, by_type[main_type],
                      qp_qtype_get(main_type)->name, st.with_imatrix, st.bytes, missing, st.mismatched_tensors,
                      st.mismatched_bytes);
        if (mode == 0)
            for (size_t t = 0; t < 64; t++)
                if (by_type[t])
                    print_message("  %-8s %zu tensors\n", qp_qtype_get((qp_ggml_type)t)->name, by_type[t]);
        assert_int_equal(missing, 0);
        assert_int_equal(st.tensors, 44);
        assert_int_equal(by_type[main_type], 30);
        assert_int_equal(st.mismatched_bytes, 0);
    }
}

static void test_mix_iq1_s(void **s) { (void)s; check_mix("mix-IQ1_S", QP_GGML_IQ1_S); }
static void test_pure_iq1_m(void **s) { (void)s; oracle_check_iq("IQ1_M"); }
static void test_mix_iq1_m(void **s) { (void)s; check_mix("mix-IQ1_M", QP_GGML_IQ1_M); }

/* without an imatrix there is no IQ1_S quantizer (ggml asserts); IQ1_M
 * takes weights x² */
static void test_needs_imatrix(void **s)
{
    (void)s;
    float x[256];
    unsigned char out[56];
    for (int i = 0; i < 256; i++)
        x[i] = (float)(i % 7) - 3;
    const qp_qtype_info *info = qp_qtype_get(QP_GGML_IQ1_S);
    assert_non_null(info);
    assert_true(info->needs_imatrix);
    assert_int_equal(qp_quantize_ref(QP_GGML_IQ1_S, x, out, 1, 256, NULL), QP_EUSAGE);
    assert_non_null(strstr(qp_error_last(), "needs an importance matrix"));
    assert_int_equal(qp_quantize(QP_GGML_IQ1_S, x, out, 1, 256, NULL, 2), QP_EUSAGE);
    info = qp_qtype_get(QP_GGML_IQ1_M);
    assert_non_null(info);
    assert_false(info->needs_imatrix);
    assert_int_equal(qp_quantize_ref(QP_GGML_IQ1_M, x, out, 1, 256, NULL), 0);
}

/* Importance 0 over whole sub-blocks, tiny and constant blocks: every path
 * of the search runs, the fast quantizer gives the reference's bytes at 1
 * and 3 threads, and every row decodes to finite values. */
static void test_degenerate(void **s)
{
    (void)s;
    enum { R = 6, N = 1024 };
    static float x[R * N], im[N], y[N];
    static unsigned char ref[R * 56 * 4], fast[R * 56 * 4];
    uint64_t st = 7;
    for (int i = 0; i < R * N; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((int)(st >> 40) % 2001 - 1000) / 1000.0f;
        if (i / N == 1)
            x[i] = 1e-20f;   /* below GROUP_MAX_EPS */
        if (i / N == 2)
            x[i] = 0.5f;     /* constant */
        if (i / N == 3 && (i / 32) % 2)
            x[i] = 0.0f;     /* every other sub-block empty */
    }
    for (int c = 0; c < N; c++)
        im[c] = (c / 32) % 3 == 1 ? 0.0f : 1.0f + (float)(c % 7);
    const qp_ggml_type types[] = { QP_GGML_IQ1_S, QP_GGML_IQ1_M };
    for (size_t k = 0; k < 2; k++) {
        for (int use_im = k ? 0 : 1; use_im <= 1; use_im++) {
            const float *w = use_im ? im : NULL;
            const size_t bytes = qp_qtype_row_size(types[k], N) * R;
            assert_int_equal(qp_quantize_ref(types[k], x, ref, R, N, w), 0);
            for (int th = 1; th <= 3; th += 2) {
                memset(fast, 0x5A, bytes);
                assert_int_equal(qp_quantize(types[k], x, fast, R, N, w, th), 0);
                assert_memory_equal(ref, fast, bytes);
            }
            for (int r = 0; r < R; r++) {
                assert_int_equal(qp_dequantize_row(types[k], ref + (size_t)r * (bytes / R), y, N), 0);
                for (int c = 0; c < N; c++)
                    assert_true(isfinite(y[c]));
            }
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mix_iq1_s),
        cmocka_unit_test(test_pure_iq1_m),
        cmocka_unit_test(test_mix_iq1_m),
        cmocka_unit_test(test_needs_imatrix),
        cmocka_unit_test(test_degenerate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
