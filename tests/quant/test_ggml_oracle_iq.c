/* Byte identity with llama-quantize --pure --imatrix imatrix.dat for the
 * i-quant and ternary types (vectors/house-llama/iq/<TYPE>-imatrix.gguf,
 * llama.cpp c392e50): every quantized tensor re-quantized from F32.gguf by
 * qp_quantize_ref and by qp_quantize at 1 and 2 threads.  TQ1_0 and TQ2_0
 * ignore the imatrix, as quantize_tq1_0 / quantize_tq2_0 do: their oracles
 * were written with one all the same.  IQ4_NL-imatrix.gguf pins the block
 * search IQ4_XS shares with IQ4_NL (qp_iq4_block_scale). */
#include "tests/quant/quant_oracle.h"

static void test_iq4_nl(void **s) { (void)s; oracle_check_iq("IQ4_NL"); }
static void test_iq4_xs(void **s) { (void)s; oracle_check_iq("IQ4_XS"); }
static void test_iq3_xxs(void **s) { (void)s; oracle_check_iq("IQ3_XXS"); }
static void test_iq3_s(void **s) { (void)s; oracle_check_iq("IQ3_S"); }
static void test_tq1_0(void **s) { (void)s; oracle_check_iq("TQ1_0"); }
static void test_tq2_0(void **s) { (void)s; oracle_check_iq("TQ2_0"); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_iq4_nl), cmocka_unit_test(test_iq4_xs), cmocka_unit_test(test_iq3_xxs), cmocka_unit_test(test_iq3_s), cmocka_unit_test(test_tq1_0), cmocka_unit_test(test_tq2_0),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
