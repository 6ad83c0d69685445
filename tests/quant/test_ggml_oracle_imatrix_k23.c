/* Byte identity with llama-quantize --pure --imatrix imatrix.dat for Q2_K
 * and Q3_K (see test_ggml_oracle_imatrix.c for the method; the other
 * k-quants are in test_ggml_oracle_imatrix_k456.c). */
#include "tests/quant/quant_oracle.h"

static void test_q2_K(void **s) { (void)s; oracle_check_type("Q2_K", 1); }
static void test_q3_K(void **s) { (void)s; oracle_check_type("Q3_K", 1); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_q2_K),
        cmocka_unit_test(test_q3_K),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
