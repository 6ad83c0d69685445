/* Byte identity with llama-quantize --pure (no imatrix): every quantized
 * tensor of vectors/house-llama/<TYPE>.gguf is re-quantized from F32.gguf by
 * qp_quantize_ref and by qp_quantize at 1 and 2 threads. */
#include "tests/quant/quant_oracle.h"

static void test_q4_0(void **s) { (void)s; oracle_check_type("Q4_0", 0); }
static void test_q4_1(void **s) { (void)s; oracle_check_type("Q4_1", 0); }
static void test_q5_0(void **s) { (void)s; oracle_check_type("Q5_0", 0); }
static void test_q5_1(void **s) { (void)s; oracle_check_type("Q5_1", 0); }
static void test_q8_0(void **s) { (void)s; oracle_check_type("Q8_0", 0); }
static void test_q2_K(void **s) { (void)s; oracle_check_type("Q2_K", 0); }
static void test_q3_K(void **s) { (void)s; oracle_check_type("Q3_K", 0); }
static void test_q4_K(void **s) { (void)s; oracle_check_type("Q4_K", 0); }
static void test_q5_K(void **s) { (void)s; oracle_check_type("Q5_K", 0); }
static void test_q6_K(void **s) { (void)s; oracle_check_type("Q6_K", 0); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_q4_0), cmocka_unit_test(test_q4_1), cmocka_unit_test(test_q5_0),
        cmocka_unit_test(test_q5_1), cmocka_unit_test(test_q8_0), cmocka_unit_test(test_q2_K),
        cmocka_unit_test(test_q3_K), cmocka_unit_test(test_q4_K), cmocka_unit_test(test_q5_K),
        cmocka_unit_test(test_q6_K),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
