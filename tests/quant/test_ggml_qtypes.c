/* quant/qtypes.h: the type table (checked against model/gguf.h's), row
 * sizes, llama.cpp's k-quant fallback rule, argument errors, the plain
 * F32/F16/BF16 "quantizers", fp16 rounding = ggml's, and IQ4_NL on a block
 * that lies exactly on its grid. */
#include "tests/support/testutil.h"

#include "common/error.h"
#include "model/gguf.h"
#include "common/tensor.h"
#include "quant/qtypes.h"

#include <math.h>
#include <string.h>

static void test_table_matches_gguf(void **state)
{
    (void)state;
    static const char *names[] = { "F32", "F16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
                                   "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS",
                                   "IQ3_XXS", "IQ2_XXS", "IQ2_XS", "IQ3_S", "IQ2_S", "IQ1_S", "IQ1_M", "TQ1_0",
                                   "TQ2_0", "BF16" };
    assert_int_equal(qp_qtype_count(), 24);
    for (size_t i = 0; i < 24; i++) {
        const qp_qtype_info *a = qp_qtype_at(i);
        assert_string_equal(a->name, names[i]);
        assert_ptr_equal(qp_qtype_get(a->type), a);
        assert_ptr_equal(qp_qtype_by_name(a->name), a);
        assert_int_equal(qp_ggml_type_parse(a->name), (int)a->type);
        assert_int_equal(qp_ggml_block_size(a->type), (uint32_t)a->block);
        assert_int_equal(qp_ggml_type_size(a->type), (uint32_t)a->type_size);
        assert_int_equal(a->is_quantized, a->block > 1);
        assert_true(a->bits_per_weight == 8.0 * (double)a->type_size / a->block);
    }
    assert_null(qp_qtype_at(24));
    /* ggml.h: GGML_TYPE_IQ1_S = 19, IQ1_M = 29 (50 and 56 bytes per 256);
     * IQ1_S only with an imatrix, IQ1_M without one too */
    assert_int_equal(qp_qtype_by_name("iq1_s")->type, 19);
    assert_int_equal(qp_qtype_by_name("iq1_m")->type, 29);
    assert_true(qp_qtype_get(QP_GGML_IQ1_S)->bits_per_weight == 1.5625);
    assert_true(qp_qtype_get(QP_GGML_IQ1_M)->bits_per_weight == 1.75);
    assert_true(qp_qtype_get(QP_GGML_IQ1_S)->needs_imatrix);
    assert_false(qp_qtype_get(QP_GGML_IQ1_M)->needs_imatrix);
    assert_true(qp_qtype_get(QP_GGML_IQ1_M)->uses_imatrix);
    /* ggml.h: GGML_TYPE_IQ2_XXS = 16, IQ2_XS = 17 (66 and 74 bytes per 256) */
    assert_int_equal(qp_qtype_by_name("iq2_xxs")->type, 16);
    assert_int_equal(qp_qtype_by_name("iq2_xs")->type, 17);
    assert_true(qp_qtype_get(QP_GGML_IQ2_XXS)->bits_per_weight == 2.0625);
    assert_true(qp_qtype_get(QP_GGML_IQ2_XS)->bits_per_weight == 2.3125);
    assert_true(qp_qtype_get(QP_GGML_IQ2_XXS)->needs_imatrix && qp_qtype_get(QP_GGML_IQ2_XS)->needs_imatrix);
    assert_false(qp_qtype_get(QP_GGML_IQ3_XXS)->needs_imatrix);
    assert_int_equal(qp_qtype_by_name("iq3_xxs")->type, 18);   /* GGML_TYPE_IQ3_XXS */
    assert_true(qp_qtype_get(QP_GGML_IQ3_XXS)->bits_per_weight == 3.0625);
    assert_true(qp_qtype_get(QP_GGML_IQ3_XXS)->uses_imatrix);
    assert_int_equal(qp_qtype_by_name("iq3_s")->type, 21);   /* GGML_TYPE_IQ3_S */
    assert_true(qp_qtype_get(QP_GGML_IQ3_S)->bits_per_weight == 3.4375);
    assert_true(qp_qtype_get(QP_GGML_IQ3_S)->uses_imatrix);
    assert_int_equal(qp_qtype_by_name("iq2_s")->type, 22);   /* GGML_TYPE_IQ2_S */
    assert_true(qp_qtype_get(QP_GGML_IQ2_S)->bits_per_weight == 2.5625);
    /* ggml.h: GGML_TYPE_IQ4_XS = 23, TQ1_0 = 34, TQ2_0 = 35; block structs of ggml-common.h */
    assert_int_equal(qp_qtype_by_name("iq4_xs")->type, 23);
    assert_int_equal(qp_qtype_by_name("tq1_0")->type, 34);
    assert_int_equal(qp_qtype_by_name("tq2_0")->type, 35);
    assert_true(qp_qtype_get(QP_GGML_IQ4_XS)->bits_per_weight == 4.25);
    assert_true(qp_qtype_get(QP_GGML_TQ1_0)->bits_per_weight == 1.6875);
    assert_true(qp_qtype_get(QP_GGML_TQ2_0)->bits_per_weight == 2.0625);
    assert_int_equal(qp_qtype_get(QP_GGML_Q4_K)->type, 12);
    assert_true(qp_qtype_get(QP_GGML_Q4_K)->bits_per_weight == 4.5);
    assert_true(qp_qtype_get(QP_GGML_Q6_K)->bits_per_weight == 6.5625);
    assert_ptr_equal(qp_qtype_by_name("q4_k"), qp_qtype_get(QP_GGML_Q4_K));
    assert_ptr_equal(qp_qtype_by_name("iq4_nl"), qp_qtype_get(QP_GGML_IQ4_NL));
    assert_null(qp_qtype_by_name("Q4_K_M"));
    assert_null(qp_qtype_by_name("Q8_1"));
    assert_null(qp_qtype_by_name(NULL));
    assert_null(qp_qtype_get((qp_ggml_type)9));
    /* which types the imatrix changes */
    assert_false(qp_qtype_get(QP_GGML_Q8_0)->uses_imatrix);
    assert_false(qp_qtype_get(QP_GGML_F16)->uses_imatrix);
    assert_true(qp_qtype_get(QP_GGML_Q4_0)->uses_imatrix);
    assert_true(qp_qtype_get(QP_GGML_Q6_K)->uses_imatrix);
    assert_true(qp_qtype_get(QP_GGML_IQ4_XS)->uses_imatrix);
    assert_false(qp_qtype_get(QP_GGML_TQ1_0)->uses_imatrix);   /* quantize_tq1_0 ignores quant_weights */
    assert_false(qp_qtype_get(QP_GGML_TQ2_0)->uses_imatrix);
}

static void test_row_size(void **state)
{
    (void)state;
    assert_int_equal(qp_qtype_row_size(QP_GGML_Q4_K, 768), 3 * 144);
    assert_int_equal(qp_qtype_row_size(QP_GGML_Q6_K, 256), 210);
    assert_int_equal(qp_qtype_row_size(QP_GGML_Q8_0, 96), 3 * 34);
    assert_int_equal(qp_qtype_row_size(QP_GGML_F16, 7), 14);
    assert_int_equal(qp_qtype_row_size(QP_GGML_F32, 3), 12);
    assert_int_equal(qp_qtype_row_size(QP_GGML_Q4_K, 288), 0);
    assert_int_equal(qp_qtype_row_size(QP_GGML_Q4_0, 33), 0);
    assert_int_equal(qp_qtype_row_size(QP_GGML_Q4_0, 0), 0);
    assert_int_equal(qp_qtype_row_size(QP_GGML_Q4_0, -32), 0);
    assert_int_equal(qp_qtype_row_size((qp_ggml_type)99, 256), 0);
}

/* llama.cpp c392e50 llama_tensor_get_type: ne[0] % 256 != 0. */
static void test_fallback(void **state)
{
    (void)state;
    qp_ggml_type t = QP_GGML_F32;
    assert_int_equal(qp_qtype_fallback(&t, QP_GGML_Q4_K, 768), 0);
    assert_int_equal(t, QP_GGML_Q4_K);
    struct {
        qp_ggml_type in;
        int64_t n;
        qp_ggml_type out;
    } cases[] = {
        { QP_GGML_Q2_K, 288, QP_GGML_IQ4_NL }, { QP_GGML_Q3_K, 96, QP_GGML_IQ4_NL }, { QP_GGML_Q4_K, 288, QP_GGML_Q5_0 },
        { QP_GGML_Q5_K, 4160, QP_GGML_Q5_1 },  { QP_GGML_Q6_K, 32, QP_GGML_Q8_0 },   { QP_GGML_Q6_K, 100, QP_GGML_F16 },
        { QP_GGML_Q2_K, 33, QP_GGML_F16 },     { QP_GGML_Q4_0, 64, QP_GGML_Q4_0 },   { QP_GGML_F16, 7, QP_GGML_F16 },
        { QP_GGML_IQ4_XS, 288, QP_GGML_IQ4_NL }, { QP_GGML_IQ4_XS, 100, QP_GGML_F16 },
        { QP_GGML_TQ1_0, 96, QP_GGML_Q4_0 },   { QP_GGML_TQ2_0, 4128, QP_GGML_Q4_0 }, { QP_GGML_TQ2_0, 48, QP_GGML_F16 },
        { QP_GGML_IQ4_XS, 512, QP_GGML_IQ4_XS }, { QP_GGML_IQ3_XXS, 96, QP_GGML_IQ4_NL },
        { QP_GGML_IQ3_S, 288, QP_GGML_IQ4_NL }, { QP_GGML_IQ2_S, 4128, QP_GGML_IQ4_NL },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(qp_qtype_fallback(&t, cases[i].in, cases[i].n), 0);
        assert_int_equal(t, cases[i].out);
    }
    assert_int_equal(qp_qtype_fallback(&t, QP_GGML_Q4_0, 48), QP_EUSAGE);
    assert_string_equal(qp_error_last(), "tensor rows of 48 weights cannot be quantized to Q4_0 (blocks of 32)");
    assert_int_equal(qp_qtype_fallback(&t, QP_GGML_IQ4_NL, 20), QP_EUSAGE);
    assert_string_equal(qp_error_last(), "tensor rows of 20 weights cannot be quantized to IQ4_NL (blocks of 32)");
    assert_int_equal(qp_qtype_fallback(&t, (qp_ggml_type)9, 256), QP_EUSAGE);
    assert_string_equal(qp_error_last(), "quantization type id 9 is not supported");
}

static void test_quantize_errors(void **state)
{
    (void)state;
    float x[512] = { 0 }, im[256];
    unsigned char out[1024];
    for (int i = 0; i < 256; i++)
        im[i] = 1.0f;
    assert_int_equal(qp_quantize_ref((qp_ggml_type)5, x, out, 1, 256, NULL), QP_EUSAGE);
    assert_string_equal(qp_error_last(), "quantize: type id 5 is not supported");
    assert_int_equal(qp_quantize_ref(QP_GGML_Q4_K, x, out, 1, 288, NULL), QP_EUSAGE);
    assert_string_equal(qp_error_last(), "quantize Q4_K: row length 288 is not a multiple of 256 (use qp_qtype_fallback)");
    assert_int_equal(qp_quantize(QP_GGML_Q8_0, x, out, -1, 32, NULL, 2), QP_EUSAGE);
    assert_string_equal(qp_error_last(), "quantize Q8_0: bad shape -1 x 32");
    assert_int_equal(qp_quantize(QP_GGML_Q8_0, NULL, out, 1, 32, NULL, 2), QP_EUSAGE);
    assert_string_equal(qp_error_last(), "quantize Q8_0: NULL buffer");
    im[3] = -1.0f;
    assert_int_equal(qp_quantize_ref(QP_GGML_Q4_0, x, out, 1, 256, im), QP_EUSAGE);
    assert_string_equal(qp_error_last(), "quantize Q4_0: imatrix column 3 is -1: importance must be finite and >= 0");
    im[3] = NAN;
    assert_int_equal(qp_quantize(QP_GGML_Q6_K, x, out, 1, 256, im, 1), QP_EUSAGE);
    assert_string_equal(qp_error_last(), "quantize Q6_K: imatrix column 3 is nan: importance must be finite and >= 0");
    /* types that ignore the imatrix do not look at it */
    assert_int_equal(qp_quantize_ref(QP_GGML_Q8_0, x, out, 1, 256, im), 0);
    assert_int_equal(qp_quantize_ref(QP_GGML_Q8_0, x, out, 0, 256, NULL), 0);
    x[300] = -INFINITY;
    assert_int_equal(qp_quantize_ref(QP_GGML_Q2_K, x, out, 2, 256, NULL), QP_EUSAGE);
    assert_string_equal(qp_error_last(), "quantize Q2_K: row 1, column 44 is infinite: weights must be finite");
    assert_int_equal(qp_dequantize_row(QP_GGML_Q4_K, out, x, 100), QP_EUSAGE);
    assert_string_equal(qp_error_last(), "dequantize Q4_K: 100 weights is not a whole number of blocks of 256");
    assert_int_equal(qp_dequantize_row((qp_ggml_type)4, out, x, 32), QP_EUSAGE);
    assert_string_equal(qp_error_last(), "dequantize: type id 4 is not supported");
}

/* F32 copies, F16/BF16 round to nearest even (ggml_fp32_to_fp16_row /
 * ggml_fp32_to_bf16_row), and back. */
static void test_plain_types(void **state)
{
    (void)state;
    const float x[4] = { 1.0f, -0.333333343f, 65519.0f, 1.00048828125f /* 1 + 2^-11: tie */ };
    uint16_t h[4];
    assert_int_equal(qp_quantize(QP_GGML_F16, x, h, 1, 4, NULL, 2), 0);
    assert_int_equal(h[0], 0x3c00);
    assert_int_equal(h[1], 0xb555);
    assert_int_equal(h[2], 0x7bff);
    assert_int_equal(h[3], 0x3c00);   /* tie to even */
    assert_int_equal(qp_quantize_ref(QP_GGML_BF16, x, h, 2, 2, NULL), 0);
    assert_int_equal(h[0], 0x3f80);
    assert_int_equal(h[1], 0xbeab);
    float y[4], z[4];
    assert_int_equal(qp_quantize_ref(QP_GGML_F32, x, y, 1, 4, NULL), 0);
    assert_memory_equal(x, y, sizeof x);
    assert_int_equal(qp_quantize_ref(QP_GGML_F16, x, h, 1, 4, NULL), 0);
    assert_int_equal(qp_dequantize_row(QP_GGML_F16, h, z, 4), 0);
    assert_true(z[0] == 1.0f && z[2] == 65504.0f && z[3] == 1.0f);
    assert_int_equal(qp_dequantize_row(QP_GGML_F32, y, z, 4), 0);
    assert_memory_equal(x, z, sizeof x);
}

/* ggml's portable GGML_FP32_TO_FP16 (the bit trick of ggml-impl.h),
 * re-derived here as an independent check of qp_f32_to_f16, which all the
 * block scales go through.  (An exhaustive 2^32 run also matched F16C.) */
static float fbits(uint32_t w)
{
    float f;
    memcpy(&f, &w, 4);
    return f;
}

static uint16_t ggml_fp16(float f)
{
    float base = (fabsf(f) * fbits(0x77800000u)) * fbits(0x08800000u);
    uint32_t w;
    memcpy(&w, &f, 4);
    const uint32_t shl1_w = w + w, sign = w & 0x80000000u;
    uint32_t bias = shl1_w & 0xFF000000u;
    if (bias < 0x71000000u)
        bias = 0x71000000u;
    base = fbits((bias >> 1) + 0x07800000u) + base;
    uint32_t bits;
    memcpy(&bits, &base, 4);
    const uint32_t nonsign = ((bits >> 13) & 0x00007C00u) + (bits & 0x00000FFFu);
    return (uint16_t)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

static void test_fp16_matches_ggml(void **state)
{
    (void)state;
    uint64_t mismatches = 0;
    for (uint64_t u = 0; u <= 0xffffffffull; u += 251)
        mismatches += qp_f32_to_f16(fbits((uint32_t)u)) != ggml_fp16(fbits((uint32_t)u));
    /* every half-way point between consecutive halves, and its neighbours */
    for (uint32_t h = 0; h < 0x7c00; h++) {
        float lo = qp_f16_to_f32((uint16_t)h), hi = qp_f16_to_f32((uint16_t)(h + 1));
        float mid = lo + (hi - lo) / 2;   /* exact in f32 */
        mismatches += qp_f32_to_f16(mid) != ggml_fp16(mid);
        mismatches += qp_f32_to_f16(nextafterf(mid, 0)) != ggml_fp16(nextafterf(mid, 0));
        mismatches += qp_f32_to_f16(nextafterf(mid, 1e9f)) != ggml_fp16(nextafterf(mid, 1e9f));
        mismatches += qp_f32_to_f16(-mid) != ggml_fp16(-mid);
    }
    assert_int_equal(mismatches, 0);
}

/* A block on the IQ4_NL grid with an fp16-exact scale comes back exactly:
 * the ±7 trial scales of quantize_iq4_nl include 1/d. */
static void test_iq4_nl_on_grid(void **state)
{
    (void)state;
    static const int8_t kv[16] = { -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113 };
    float x[64], y[64];
    for (int j = 0; j < 64; j++)
        x[j] = 0.5f * kv[(j * 7 + j / 32) % 16];
    unsigned char q[36], q2[36];
    assert_int_equal(qp_quantize_ref(QP_GGML_IQ4_NL, x, q, 2, 32, NULL), 0);
    assert_int_equal(q[0] | q[1] << 8, 0x3800);   /* d = 0.5 */
    assert_int_equal(qp_dequantize_row(QP_GGML_IQ4_NL, q, y, 64), 0);
    assert_memory_equal(x, y, sizeof x);
    assert_int_equal(qp_quantize(QP_GGML_IQ4_NL, x, q2, 2, 32, NULL, 2), 0);
    assert_memory_equal(q, q2, sizeof q);
    /* all-zero block: d = 0, every index = the level nearest 0 (1 -> index 8) */
    memset(x, 0, sizeof x);
    assert_int_equal(qp_quantize_ref(QP_GGML_IQ4_NL, x, q, 1, 32, NULL), 0);
    assert_int_equal(q[0] | q[1] << 8, 0);
    for (int j = 2; j < 18; j++)
        assert_int_equal(q[j], 0x88);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_matches_gguf), cmocka_unit_test(test_row_size),
        cmocka_unit_test(test_fallback),           cmocka_unit_test(test_quantize_errors),
        cmocka_unit_test(test_plain_types),        cmocka_unit_test(test_fp16_matches_ggml),
        cmocka_unit_test(test_iq4_nl_on_grid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
