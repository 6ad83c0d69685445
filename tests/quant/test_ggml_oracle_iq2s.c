/* IQ2_S byte identity with llama-quantize (llama.cpp c392e50): llama.cpp
 * refuses --pure IQ2_S here (imatrix.dat has no entry for output.weight),
 * so the oracle tensors are the IQ2_S ones of its file-type mixes
 * (vectors/house-llama/iq/mix-IQ2_M.gguf: every layer's attn_q, attn_k,
 * ffn_gate, ffn_up, ffn_down; mix-IQ3_XXS.gguf: attn_q, attn_k), all
 * quantized with the imatrix.  Each is re-quantized from F32.gguf by
 * qp_quantize_ref and by qp_quantize at 1 and 2 threads. */
#include "tests/quant/quant_oracle.h"

/* compares the IQ2_S tensors of iq/<file>; returns how many there were */
static size_t check_iq2_s_tensors(const char *file, int mode)
{
    char rel[160];
    snprintf(rel, sizeof rel, "vectors/house-llama/iq/%s", file);
    char *qpath = qp_test_shared_path(rel);
    char *fpath = qp_test_shared_path("vectors/house-llama/F32.gguf");
    char *ipath = qp_test_shared_path("vectors/house-llama/imatrix.dat");
    qp_gguf *qg = NULL, *fg = NULL;
    qp_imatrix *im = NULL;
    assert_int_equal(qp_gguf_open(&qg, qpath), 0);
    assert_int_equal(qp_gguf_open(&fg, fpath), 0);
    assert_int_equal(qp_imatrix_read(&im, ipath), 0);
    size_t n = 0, mismatched = 0;
    for (size_t i = 0; i < qp_gguf_tensor_count(qg); i++) {
        const qp_gguf_tensor *qt = qp_gguf_tensor_at(qg, i);
        if (qt->type != QP_GGML_IQ2_S)
            continue;
        const qp_gguf_tensor *ft = qp_gguf_find_tensor(fg, qt->name);
        assert_non_null(ft);
        const int64_t n_per_row = (int64_t)ft->ne[0], nrows = (int64_t)(ft->nelem / ft->ne[0]);
        assert_int_equal(qp_qtype_row_size(QP_GGML_IQ2_S, n_per_row) * (size_t)nrows, qt->nbytes);
        float *imat = malloc((size_t)n_per_row * sizeof *imat);
        assert_int_equal(qp_imatrix_weights(im, qt->name, n_per_row, imat), 0);
        unsigned char *out = malloc(qt->nbytes);
        memset(out, 0xA5, qt->nbytes);
        const int rc = mode == 0 ? qp_quantize_ref(QP_GGML_IQ2_S, ft->data, out, nrows, n_per_row, imat)
                                 : qp_quantize(QP_GGML_IQ2_S, ft->data, out, nrows, n_per_row, imat, mode);
        if (rc)
            fail_msg("%s: %s", qt->name, qp_error_last());
        size_t diff = 0;
        for (size_t b = 0; b < qt->nbytes; b++)
            diff += out[b] != ((const unsigned char *)qt->data)[b];
        if (diff) {
            print_message("%s mode %d: tensor %s: %zu of %llu bytes differ\n", file, mode, qt->name, diff,
                          (unsigned long long)qt->nbytes);
            mismatched++;
        }
        n++;
        free(out);
        free(imat);
    }
    print_message("%-17s mode %d: %zu IQ2_S tensors, %zu differ\n", file, mode, n, mismatched);
    assert_int_equal(mismatched, 0);
    qp_imatrix_free(im);
    qp_gguf_free(qg);
    qp_gguf_free(fg);
    free(qpath);
    free(fpath);
    free(ipath);
    return n;
}

static void test_iq2_s(void **state)
{
    (void)state;
    for (int mode = 0; mode <= 2; mode++) {
        assert_int_equal(check_iq2_s_tensors("mix-IQ2_M.gguf", mode), 30);
        assert_int_equal(check_iq2_s_tensors("mix-IQ3_XXS.gguf", mode), 12);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_iq2_s),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
