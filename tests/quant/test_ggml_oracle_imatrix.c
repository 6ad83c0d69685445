/* Byte identity with llama-quantize --pure --imatrix imatrix.dat: every
 * quantized tensor of vectors/house-llama/<TYPE>-imatrix.gguf is re-quantized
 * from F32.gguf with the importance qp_imatrix_weights() gives (stored value
 * / ncall per column; output and token_embd have no entry and go without), by
 * qp_quantize_ref and by qp_quantize at 1 and 2 threads.  The 32-weight
 * formats here, the k-quants in test_ggml_oracle_imatrix_k23.c and _k456.c (Q8_0 ignores an
 * imatrix: there is no Q8_0-imatrix oracle). */
#include "tests/quant/quant_oracle.h"

static void test_q4_0(void **s) { (void)s; oracle_check_type("Q4_0", 1); }
static void test_q4_1(void **s) { (void)s; oracle_check_type("Q4_1", 1); }
static void test_q5_0(void **s) { (void)s; oracle_check_type("Q5_0", 1); }
static void test_q5_1(void **s) { (void)s; oracle_check_type("Q5_1", 1); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_q4_0), cmocka_unit_test(test_q4_1), cmocka_unit_test(test_q5_0),
        cmocka_unit_test(test_q5_1),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
