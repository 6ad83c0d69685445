/* Byte identity with llama-quantize --imatrix imatrix.dat for IQ2_XXS and
 * IQ2_XS (llama.cpp c392e50).  There is no --pure oracle for them (the
 * imatrix has no entry for output.weight and llama-quantize refuses), so
 * the IQ2_XXS / IQ2_XS tensors of the file-type mixes
 * vectors/house-llama/iq/mix-IQ2_XXS.gguf and mix-IQ2_XS.gguf are the
 * oracle — and with them every other tensor of those files (Q2_K, Q4_K,
 * Q5_K …): re-quantized from F32.gguf by qp_quantize_ref and by
 * qp_quantize at 1 and 2 threads. */
#include "tests/quant/quant_oracle.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mix_iq2_xxs),
        cmocka_unit_test(test_mix_iq2_xs),
        cmocka_unit_test(test_needs_imatrix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
