/* Byte identity with llama-quantize --imatrix imatrix.dat for IQ2_XXS and
 * IQ2_XS (llama.cpp c392e50).  There is no --pure oracle for them (the
 * imatrix has no entry for output.weight and llama-quantize refuses), so
 * the IQ2_XXS / IQ2_XS tensors of the file-type mixes
 * vectors/house-llama/iq/mix-IQ2_XXS.gguf and mix-IQ2_XS.gguf are the
 * oracle — and with them every other tensor of those files (Q2_K, Q4_K,
 * Q5_K …): re-quantized from F32.gguf by qp_quantize_ref and by
 * qp_quantize at 1 and 2 threads. */
#include "tests/quant/quant_oracle.h"

#include <math.h>

static void check_mix(const char *mix, qp_ggml_type main_type, size_t n_main)
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
        assert_int_equal(by_type[main_type], n_main);
        assert_int_equal(st.mismatched_bytes, 0);
    }
}

static void test_mix_iq2_xxs(void **s) { (void)s; check_mix("mix-IQ2_XXS", QP_GGML_IQ2_XXS, 36); }
static void test_mix_iq2_xs(void **s) { (void)s; check_mix("mix-IQ2_XS", QP_GGML_IQ2_XS, 36); }

/* without an imatrix there is no IQ2_XXS / IQ2_XS quantizer (ggml asserts) */
static void test_needs_imatrix(void **s)
{
    (void)s;
    const qp_ggml_type types[] = { QP_GGML_IQ2_XXS, QP_GGML_IQ2_XS };
    float x[256];
    unsigned char out[74];
    for (int i = 0; i < 256; i++)
        x[i] = (float)(i % 7) - 3;
    for (size_t k = 0; k < 2; k++) {
        const qp_qtype_info *info = qp_qtype_get(types[k]);
        assert_non_null(info);
        assert_true(info->needs_imatrix);
        assert_true(info->uses_imatrix);
        assert_int_equal(qp_quantize_ref(types[k], x, out, 1, 256, NULL), QP_EUSAGE);
        assert_non_null(strstr(qp_error_last(), "needs an importance matrix"));
        assert_int_equal(qp_quantize(types[k], x, out, 1, 256, NULL, 2), QP_EUSAGE);
    }
}

/* Importance 0 over whole sub-blocks (ggml: make_qp_quants' 0/0 scale for
 * IQ2_XXS; no trial accepted and the previous sub-block's levels kept for
 * IQ2_XS), tiny and constant blocks: every path of the search runs, the
 * fast quantizer gives the reference's bytes at 1 and 3 threads, and a
 * sub-block with no importance decodes to finite values. */
static void test_degenerate(void **s)
{
    (void)s;
    enum { R = 6, N = 1024 };
    static float x[R * N], im[N], y[N];
    static unsigned char ref[R * 74 * 4], fast[R * 74 * 4];
    uint64_t st = 7;
    for (int i = 0; i < R * N; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((int)(st >> 40) % 2001 - 1000) / 1000.0f;
        if (i / N == 1)
            x[i] = 1e-20f;   /* below GROUP_MAX_EPS */
        if (i / N == 2)
            x[i] = 0.5f;     /* constant */
    }
    for (int c = 0; c < N; c++)
        im[c] = (c / 32) % 3 == 1 ? 0.0f : 1.0f + (float)(c % 7);   /* every third 32 columns: none */
    const qp_ggml_type types[] = { QP_GGML_IQ2_XXS, QP_GGML_IQ2_XS };
    for (size_t k = 0; k < 2; k++) {
        const size_t bytes = qp_qtype_row_size(types[k], N) * R;
        assert_int_equal(qp_quantize_ref(types[k], x, ref, R, N, im), 0);
        for (int th = 1; th <= 3; th += 2) {
            memset(fast, 0x5A, bytes);
            assert_int_equal(qp_quantize(types[k], x, fast, R, N, im, th), 0);
            assert_memory_equal(ref, fast, bytes);
        }
        for (int r = 0; r < R; r++) {
            assert_int_equal(qp_dequantize_row(types[k], ref + (size_t)r * (bytes / R), y, N), 0);
            for (int c = 0; c < N; c++)
                assert_true(isfinite(y[c]));
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mix_iq2_xxs),
        cmocka_unit_test(test_mix_iq2_xs),
        cmocka_unit_test(test_needs_imatrix),
        cmocka_unit_test(test_degenerate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
