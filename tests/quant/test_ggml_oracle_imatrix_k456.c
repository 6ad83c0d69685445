/* Byte identity with llama-quantize --pure --imatrix imatrix.dat for Q4_K,
 * Q5_K and Q6_K (see test_ggml_oracle_imatrix.c for the method). */
#include "tests/quant/quant_oracle.h"

static void test_q4_K(void **s) { (void)s; oracle_check_type("Q4_K", 1); }
static void test_q5_K(void **s) { (void)s; oracle_check_type("Q5_K", 1); }
static void test_q6_K(void **s) { (void)s; oracle_check_type("Q6_K", 1); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_q4_K),
        cmocka_unit_test(test_q5_K),
        cmocka_unit_test(test_q6_K),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
