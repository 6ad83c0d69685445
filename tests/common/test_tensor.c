/* dtype table and the exact float conversions of model/tensor.c. */
#include "tests/support/testutil.h"

#include "common/error.h"
#include "common/tensor.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static void test_dtype_table(void **state)
{
    (void)state;
    static const char *names[] = { "F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL",
                                   "F8_E4M3", "F8_E5M2" };
    static const size_t sizes[] = { 8, 4, 2, 2, 8, 4, 2, 1, 1, 1, 1, 1 };
    for (int i = 0; i < 12; i++) {
        qp_dtype t = qp_dtype_parse(names[i]);
        assert_int_equal(t, QP_DT_F64 + i);
        assert_string_equal(qp_dtype_name(t), names[i]);
        assert_int_equal(qp_dtype_size(t), sizes[i]);
    }
    assert_int_equal(qp_dtype_parse("bf16"), QP_DT_INVALID);
    assert_int_equal(qp_dtype_parse("F8"), QP_DT_INVALID);
    assert_int_equal(qp_dtype_parse(NULL), QP_DT_INVALID);
    assert_null(qp_dtype_name(QP_DT_INVALID));
    assert_int_equal(qp_dtype_size(QP_DT_INVALID), 0);
}

static void test_f16_to_f32_values(void **state)
{
    (void)state;
    assert_true(qp_f16_to_f32(0x3c00) == 1.0f);
    assert_true(qp_f16_to_f32(0xc000) == -2.0f);
    assert_true(qp_f16_to_f32(0x7bff) == 65504.0f);
    assert_true(qp_f16_to_f32(0x0001) == 0x1p-24f);          /* smallest subnormal */
    assert_true(qp_f16_to_f32(0x03ff) == 1023 * 0x1p-24f);   /* largest subnormal */
    assert_true(qp_f16_to_f32(0x0400) == 0x1p-14f);          /* smallest normal */
    assert_true(qp_f16_to_f32(0x3555) == 0x1.554p-2f);
    assert_int_equal(bits(qp_f16_to_f32(0x8000)), 0x80000000u);
    assert_true(isinf(qp_f16_to_f32(0x7c00)) && qp_f16_to_f32(0x7c00) > 0);
    assert_true(isinf(qp_f16_to_f32(0xfc00)) && qp_f16_to_f32(0xfc00) < 0);
    assert_true(isnan(qp_f16_to_f32(0x7e00)));
    assert_true(isnan(qp_f16_to_f32(0x7c01)));
}

/* Every finite half round-trips, and f32 -> f16 rounds to nearest even:
 * the exact midpoint between neighbours goes to the even one, the floats
 * just either side go to the nearer one. */
static void test_f32_to_f16_round_to_nearest_even(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff))
            continue;                            /* NaN */
        assert_int_equal(qp_f32_to_f16(qp_f16_to_f32((uint16_t)h)), h);
    }
    for (uint32_t h = 0; h < 0x7c00; h++) {      /* neighbours h, h+1 (0x7c00 = inf) */
        for (int s = 0; s < 2; s++) {
            uint16_t sg = s ? 0x8000 : 0;
            double a = qp_f16_to_f32((uint16_t)h);
            double b = h + 1 == 0x7c00 ? 65536.0 : qp_f16_to_f32((uint16_t)(h + 1));
            float mid = (float)((a + b) / 2);    /* exact: 12 significant bits */
            if (s)
                mid = -mid;
            uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
            assert_int_equal(qp_f32_to_f16(mid), even | sg);
            assert_int_equal(qp_f32_to_f16(nextafterf(mid, s ? -INFINITY : INFINITY)), (h + 1) | sg);
            assert_int_equal(qp_f32_to_f16(nextafterf(mid, 0.0f)), h | sg);
        }
    }
    assert_int_equal(qp_f32_to_f16(65519.99f), 0x7bff);
    assert_int_equal(qp_f32_to_f16(65520.0f), 0x7c00);
    assert_int_equal(qp_f32_to_f16(1e30f), 0x7c00);
    assert_int_equal(qp_f32_to_f16(-INFINITY), 0xfc00);
    assert_int_equal(qp_f32_to_f16(0x1p-25f), 0x0000);           /* tie with 0 -> even 0 */
    assert_int_equal(qp_f32_to_f16(0x1.000002p-25f), 0x0001);
    assert_int_equal(qp_f32_to_f16(-1e-30f), 0x8000);
    assert_int_equal(qp_f32_to_f16(NAN), 0x7e00);
    assert_int_equal(qp_f32_to_f16(-NAN), 0xfe00);
}

static void test_bf16(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = qp_bf16_to_f32((uint16_t)h);
        assert_int_equal(bits(f), h << 16);
        if (!isnan(f))
            assert_int_equal(qp_f32_to_bf16(f), h);
    }
    /* ties to even, and either side of a tie */
    assert_int_equal(qp_f32_to_bf16(0x1.01p0f), 0x3f80);     /* 1 + 2^-8: tie, 0x3f80 is even */
    assert_int_equal(qp_f32_to_bf16(0x1.03p0f), 0x3f82);     /* 1 + 3·2^-8: tie, rounds up to even */
    assert_int_equal(qp_f32_to_bf16(0x1.010002p0f), 0x3f81);
    assert_int_equal(qp_f32_to_bf16(0x1.00fffep0f), 0x3f80);
    assert_int_equal(qp_f32_to_bf16(3.4028235e38f), 0x7f80);  /* max float rounds to inf */
    uint16_t n = qp_f32_to_bf16(NAN);
    assert_true(isnan(qp_bf16_to_f32(n)));
    assert_int_equal(qp_f32_to_bf16(-NAN) & 0x8000, 0x8000);
    /* a NaN whose payload sits only in the dropped bits stays NaN */
    uint32_t u = 0x7f800001u;
    float sn;
    memcpy(&sn, &u, 4);
    assert_true(isnan(qp_bf16_to_f32(qp_f32_to_bf16(sn))));
}

static void test_convert(void **state)
{
    (void)state;
    float out[4];
    /* offset by one byte: sources in mmaps need not be aligned */
    unsigned char buf[1 + 32];
    uint16_t h[4] = { 0x3c00, 0xc000, 0x0001, 0x7bff };
    memcpy(buf + 1, h, 8);
    assert_int_equal(qp_convert_to_f32(out, buf + 1, QP_DT_F16, 4), 0);
    assert_true(out[0] == 1.0f && out[1] == -2.0f && out[2] == 0x1p-24f && out[3] == 65504.0f);

    uint16_t b[4] = { 0x3f80, 0xc040, 0x0000, 0x4049 };
    memcpy(buf + 1, b, 8);
    assert_int_equal(qp_convert_to_f32(out, buf + 1, QP_DT_BF16, 4), 0);
    assert_true(out[0] == 1.0f && out[1] == -3.0f && out[2] == 0.0f && out[3] == 3.140625f);

    double d[4] = { 1.5, -0.25, 1e300, 0.1 };
    memcpy(buf + 1, d, 32);
    assert_int_equal(qp_convert_to_f32(out, buf + 1, QP_DT_F64, 4), 0);
    assert_true(out[0] == 1.5f && out[1] == -0.25f && isinf(out[2]) && out[3] == 0.1f);

    float f[4] = { 1.0f, -0.0f, 7.5f, 1e-40f };
    memcpy(buf + 1, f, 16);
    assert_int_equal(qp_convert_to_f32(out, buf + 1, QP_DT_F32, 4), 0);
    assert_memory_equal(out, f, 16);

    unsigned char e4[4] = { 0x38, 0x7e, 0x01, 0xff };    /* 1, 448, 2^-9, NaN */
    assert_int_equal(qp_convert_to_f32(out, e4, QP_DT_F8_E4M3, 4), 0);
    assert_true(out[0] == 1.0f && out[1] == 448.0f && out[2] == 0x1p-9f && isnan(out[3]));
    unsigned char e5[4] = { 0x3c, 0xc0, 0x01, 0x7c };    /* 1, -2, 2^-16, inf */
    assert_int_equal(qp_convert_to_f32(out, e5, QP_DT_F8_E5M2, 4), 0);
    assert_true(out[0] == 1.0f && out[1] == -2.0f && out[2] == 0x1p-16f && isinf(out[3]));

    assert_int_equal(qp_convert_to_f32(out, buf, QP_DT_I32, 1), QP_EFORMAT);
    assert_string_equal(qp_error_last(), "cannot convert a I32 tensor to f32: not a floating-point dtype");
}

/* The blocked (vectorised) loops agree bit for bit with the scalar
 * conversions for every 16-bit and 8-bit pattern, from an odd address. */
static void test_convert_all_patterns(void **state)
{
    (void)state;
    size_t n = 65536 + 5;   /* not a multiple of the block: tail too */
    unsigned char *src = malloc(2 * n + 1);
    float *out = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        uint16_t h = (uint16_t)i;
        memcpy(src + 1 + 2 * i, &h, 2);
    }
    assert_int_equal(qp_convert_to_f32(out, src + 1, QP_DT_F16, n), 0);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(bits(out[i]), bits(qp_f16_to_f32((uint16_t)i)));
    assert_int_equal(qp_convert_to_f32(out, src + 1, QP_DT_BF16, n), 0);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(bits(out[i]), bits(qp_bf16_to_f32((uint16_t)i)));
    for (size_t i = 0; i < 256 + 7; i++)
        src[1 + i] = (unsigned char)i;
    assert_int_equal(qp_convert_to_f32(out, src + 1, QP_DT_F8_E5M2, 256 + 7), 0);
    for (size_t i = 0; i < 256 + 7; i++)
        assert_int_equal(bits(out[i]), bits(qp_f16_to_f32((uint16_t)((i & 0xff) << 8))));
    assert_int_equal(qp_convert_to_f32(out, src + 1, QP_DT_F8_E4M3, 256 + 7), 0);
    for (size_t i = 0; i < 256; i++) {
        unsigned e = (i >> 3) & 15, m = i & 7;
        float want = e ? ldexpf(1.0f + (float)m / 8.0f, (int)e - 7) : ldexpf((float)m, -9);
        if (i & 0x80)
            want = -want;
        if ((i & 0x7f) == 0x7f)
            assert_true(isnan(out[i]));
        else
            assert_int_equal(bits(out[i]), bits(want));
    }
    free(out);
    free(src);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dtype_table),
        cmocka_unit_test(test_f16_to_f32_values),
        cmocka_unit_test(test_f32_to_f16_round_to_nearest_even),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_convert),
        cmocka_unit_test(test_convert_all_patterns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
