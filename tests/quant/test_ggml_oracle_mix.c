/* The k-quant mixes (llama-quantize without --pure: mix-<FTYPE>.gguf, no
 * imatrix): whatever type llama.cpp chose for a tensor, re-quantizing its
 * F32 weights to that type gives the oracle's bytes (qp_quantize_ref and
 * qp_quantize at 2 threads).  The choice of types itself (the mix rules) is
 * the quantize stage's business, not tested here. */
#include "tests/support/testutil.h"

#include "common/error.h"
#include "model/gguf.h"
#include "quant/qtypes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void check_mix(const char *name, size_t want_tensors, size_t want_types)
{
    char rel[128];
    snprintf(rel, sizeof rel, "vectors/house-llama/%s.gguf", name);
    char *qpath = qp_test_shared_path(rel), *fpath = qp_test_shared_path("vectors/house-llama/F32.gguf");
    qp_gguf *qg, *fg;
    assert_int_equal(qp_gguf_open(&qg, qpath), 0);
    assert_int_equal(qp_gguf_open(&fg, fpath), 0);
    size_t tensors = 0, bytes = 0, types_seen = 0;
    unsigned seen[32] = { 0 };
    for (size_t i = 0; i < qp_gguf_tensor_count(qg); i++) {
        const qp_gguf_tensor *qt = qp_gguf_tensor_at(qg, i);
        if (qt->type == QP_GGML_F32)
            continue;
        const qp_qtype_info *info = qp_qtype_get((qp_ggml_type)qt->type);
        assert_non_null(info);
        if (!seen[qt->type]++)
            types_seen++;
        const qp_gguf_tensor *ft = qp_gguf_find_tensor(fg, qt->name);
        const int64_t n = (int64_t)ft->ne[0], rows = (int64_t)(ft->nelem / ft->ne[0]);
        unsigned char *a = malloc(qt->nbytes), *b = malloc(qt->nbytes);
        assert_int_equal(qp_quantize_ref(info->type, ft->data, a, rows, n, NULL), 0);
        assert_int_equal(qp_quantize(info->type, ft->data, b, rows, n, NULL, 2), 0);
        if (memcmp(a, qt->data, qt->nbytes) || memcmp(b, qt->data, qt->nbytes))
            fail_msg("%s: tensor %s (%s) differs from the oracle", name, qt->name, info->name);
        tensors++;
        bytes += qt->nbytes;
        free(a);
        free(b);
    }
    print_message("%-10s: %zu tensors of %zu types, %zu bytes identical\n", name, tensors, types_seen, bytes);
    assert_int_equal(tensors, want_tensors);
    assert_int_equal(types_seen, want_types);
    qp_gguf_free(qg);
    qp_gguf_free(fg);
    free(qpath);
    free(fpath);
}

static void test_mix_q2_k(void **s) { (void)s; check_mix("mix-Q2_K", 44, 3); }
static void test_mix_q3_k_m(void **s) { (void)s; check_mix("mix-Q3_K_M", 44, 4); }
static void test_mix_q4_k_m(void **s) { (void)s; check_mix("mix-Q4_K_M", 44, 2); }
static void test_mix_q5_k_m(void **s) { (void)s; check_mix("mix-Q5_K_M", 44, 2); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mix_q2_k), cmocka_unit_test(test_mix_q3_k_m),
        cmocka_unit_test(test_mix_q4_k_m), cmocka_unit_test(test_mix_q5_k_m),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
