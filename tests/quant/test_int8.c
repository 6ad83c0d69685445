/* INT8 per-channel absmax (LLM.int8 weight format): a hand-computed row,
 * round-half-even, rows of zeros, the dequantization constant, fast == ref
 * at 1-3 threads, errors, serialisation and damage, house-model error. */
#include "tests/support/testutil.h"

#include "common/error.h"
#include "model/safetensors.h"
#include "common/tensor.h"
#include "quant/int8.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static qp_int8 *make(int64_t rows, int64_t cols)
{
    qp_int8 *q = NULL;
    assert_int_equal(qp_int8_new(&q, rows, cols), 0);
    return q;
}

static void test_by_hand(void **state)
{
    (void)state;
    /* row 0: absmax 254 -> factor 127/254 = 0.5 exactly: x/2 rounded half to even;
     * row 1: zeros; row 2: absmax 1 -> factor 127 */
    const float w[3 * 8] = {
        254.0f, -254.0f, 1.0f, 3.0f, 5.0f, -1.0f, -3.0f, 100.0f,
        0.0f, -0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f,
        1.0f, 0.5f, -0.25f, 0.1f, -1.0f, 0.0f, 0.004f, 0.0039370079f,
    };
    const int8_t expect[3 * 8] = {
        127, -127, 0, 2, 2, -0, -2, 50,
        0, 0, 0, 0, 0, 0, 0, 0,
        127, 64, -32, 13, -127, 0, 1, 0,
    };
    qp_int8 *q = make(3, 8);
    assert_int_equal(qp_int8_quantize_ref(q, w), 0);
    qp_int8_view v;
    qp_int8_view_of(q, &v);
    assert_memory_equal(v.codes, expect, sizeof expect);
    assert_true(v.absmax[0] == 254.0f && v.absmax[1] == 0.0f && v.absmax[2] == 1.0f);
    /* 127·0.5 = 63.5 -> 64 (even); 127·0.004 = 0.508 -> 1; 127·0.0039370079 rounds to 0.5 in f32 -> 0 (even) */
    float d[3 * 8];
    assert_int_equal(qp_int8_dequantize(q, d), 0);
    const float inv127 = 7.874015718698502e-3f;
    assert_true(inv127 == (float)(1.0 / 127.0));
    for (int i = 0; i < 24; i++)
        assert_true(d[i] == ((float)expect[i] * v.absmax[i / 8]) * inv127);
    assert_true(d[0] == 254.0f);          /* 127·254 = 32258 exactly, ·(1/127) rounds back */
    for (int i = 8; i < 16; i++)
        assert_true(d[i] == 0.0f);
    assert_true(qp_int8_bits_per_weight(q) == 12.0);
    /* fast, same bytes */
    memset(v.codes, 0x55, 24);
    assert_int_equal(qp_int8_quantize(q, w, 2), 0);
    assert_memory_equal(v.codes, expect, sizeof expect);
    qp_int8_free(q);

    /* a subnormal row: 127/absmax overflows f32, the 2^64 pre-scale keeps
     * round(127·x/absmax) */
    const float sub[5] = { 0x1p-140f * 4, 0x1p-140f * 2, -0x1p-140f, 0.0f, 0x1p-140f * 3 };
    const int8_t esub[5] = { 127, 64, -32, 0, 95 };   /* 63.5 -> 64, -31.75 -> -32, 95.25 -> 95 */
    assert_true(isinf(127.0f / sub[0]));
    q = make(1, 5);
    assert_int_equal(qp_int8_quantize_ref(q, sub), 0);
    qp_int8_view_of(q, &v);
    assert_memory_equal(v.codes, esub, 5);
    assert_int_equal(qp_int8_quantize(q, sub, 1), 0);
    assert_memory_equal(v.codes, esub, 5);
    qp_int8_free(q);
}

static void test_fast_equals_ref(void **state)
{
    (void)state;
    qp_test_seed(31);
    const int64_t shapes[5][2] = { { 64, 256 }, { 7, 33 }, { 3, 1 }, { 130, 768 }, { 1, 4099 } };
    for (int si = 0; si < 5; si++) {
        const int64_t rows = shapes[si][0], cols = shapes[si][1];
        float *w = malloc(rows * cols * sizeof *w);
        for (int64_t r = 0; r < rows; r++) {
            int kind = (int)(qp_test_next_u64() % 6);
            float s = powf(10.0f, -30.0f + 50.0f * qp_test_uniform());
            for (int64_t c = 0; c < cols; c++) {
                float *x = &w[r * cols + c];
                switch (kind) {
                case 0: *x = (c & 1) ? -0.0f : 0.0f; break;
                case 1: *x = s; break;                                             /* all at the absmax */
                case 2: *x = s * (float)((int)(qp_test_next_u64() % 255) - 127) / 127.0f; break;   /* near-exact codes */
                case 3: *x = 0x1p-140f * (float)((int)(qp_test_next_u64() % 7) - 3); break; /* subnormal */
                default: *x = s * qp_test_gauss(); break;
                }
            }
        }
        qp_int8 *ref = make(rows, cols);
        assert_int_equal(qp_int8_quantize_ref(ref, w), 0);
        qp_int8_view vr;
        qp_int8_view_of(ref, &vr);
        for (int t = 1; t <= 3; t++) {
            qp_int8 *f = make(rows, cols);
            assert_int_equal(qp_int8_quantize(f, w, t), 0);
            qp_int8_view vf;
            qp_int8_view_of(f, &vf);
            assert_memory_equal(vr.codes, vf.codes, (size_t)(rows * cols));
            assert_memory_equal(vr.absmax, vf.absmax, (size_t)rows * 4);
            qp_int8_free(f);
        }
        for (int64_t i = 0; i < rows * cols; i++)
            assert_true(vr.codes[i] >= -127);
        qp_int8_free(ref);
        free(w);
    }
}

static void test_errors(void **state)
{
    (void)state;
    qp_int8 *q = NULL;
    assert_int_equal(qp_int8_new(&q, 0, 5), QP_EUSAGE);
    assert_string_equal(qp_error_last(), "weight [0 x 5]: int8 needs at least one row and one column");
    float w[4 * 40];
    for (int i = 0; i < 160; i++)
        w[i] = 0.5f;
    w[2 * 40 + 39] = -INFINITY;
    w[3 * 40 + 1] = NAN;
    q = make(4, 40);
    const char *msg = "weight [4 x 40]: row 2, column 39: weight is not finite; fix the checkpoint";
    assert_int_equal(qp_int8_quantize_ref(q, w), QP_EUSAGE);
    assert_string_equal(qp_error_last(), msg);
    for (int t = 1; t <= 4; t++) {
        qp_error_clear();
        assert_int_equal(qp_int8_quantize(q, w, t), QP_EUSAGE);
        assert_string_equal(qp_error_last(), msg);
    }
    qp_int8_free(q);
}

static void test_serialize(void **state)
{
    (void)state;
    qp_test_seed(32);
    const int64_t rows = 5, cols = 37;
    float w[5 * 37], d1[5 * 37], d2[5 * 37];
    for (int i = 0; i < 5 * 37; i++)
        w[i] = i < 37 ? 0.0f : qp_test_gauss();
    qp_int8 *q = make(rows, cols);
    assert_int_equal(qp_int8_quantize(q, w, 2), 0);
    uint8_t *buf;
    size_t len;
    assert_int_equal(qp_int8_serialize(q, (void **)&buf, &len), 0);
    assert_int_equal(len, 48 + 5 * 37 + 4 * 5);
    qp_int8 *r = NULL;
    assert_int_equal(qp_int8_deserialize(&r, buf, len, "i8"), 0);
    assert_int_equal(qp_int8_dequantize(q, d1), 0);
    assert_int_equal(qp_int8_dequantize(r, d2), 0);
    assert_memory_equal(d1, d2, sizeof d1);
    qp_int8_free(r);

    for (size_t cut = 0; cut < len; cut++) {
        assert_int_equal(qp_int8_deserialize(&r, buf, cut, "i8"), QP_ECORRUPT);
        assert_null(r);
    }
    assert_int_equal(qp_int8_deserialize(&r, buf, len - 3, "i8"), QP_ECORRUPT);
    assert_string_equal(qp_error_last(), "i8: truncated: the header announces 205 payload bytes, only 202 follow");
    uint8_t *d = malloc(len);
    memcpy(d, buf, len);
    d[100] ^= 0x80;
    assert_int_equal(qp_int8_deserialize(&r, d, len, "i8"), QP_ECORRUPT);
    assert_non_null(strstr(qp_error_last(), "i8: payload checksum mismatch"));
    memcpy(d, buf, len);
    d[4] = 'x';
    assert_int_equal(qp_int8_deserialize(&r, d, len, "i8"), QP_ECORRUPT);
    assert_string_equal(qp_error_last(), "i8: bad magic: not a serialised int8 weight; the cache object is damaged or of another kind");
    free(d);
    free(buf);

    /* impossible values with a matching checksum */
    qp_int8_view v;
    qp_int8_view_of(q, &v);
    v.codes[3] = 5;   /* row 0 is all zeros */
    assert_int_equal(qp_int8_serialize(q, (void **)&buf, &len), 0);
    assert_int_equal(qp_int8_deserialize(&r, buf, len, "i8"), QP_ECORRUPT);
    assert_string_equal(qp_error_last(), "i8: row 0, column 3: code 5 is impossible in a row of zeros");
    free(buf);
    v.codes[3] = 0;
    v.codes[40] = -128;
    assert_int_equal(qp_int8_serialize(q, (void **)&buf, &len), 0);
    assert_int_equal(qp_int8_deserialize(&r, buf, len, "i8"), QP_ECORRUPT);
    assert_string_equal(qp_error_last(), "i8: row 1, column 3: code -128 is impossible (range -127..127)");
    free(buf);
    v.codes[40] = 0;
    v.absmax[4] = NAN;
    assert_int_equal(qp_int8_serialize(q, (void **)&buf, &len), 0);
    assert_int_equal(qp_int8_deserialize(&r, buf, len, "i8"), QP_ECORRUPT);
    assert_string_equal(qp_error_last(), "i8: row 4: absmax nan is not a finite value >= 0");
    free(buf);
    qp_int8_free(q);
}

/* the round trip, and the worst |error| in half-steps (absmax/254 of its row) */
static void int8_roundtrip(void *ud, const float *w, int64_t rows, int64_t cols, float *d)
{
    double *worst = ud;
    qp_int8 *q = make(rows, cols);
    assert_int_equal(qp_int8_quantize(q, w, 2), 0);
    assert_int_equal(qp_int8_dequantize(q, d), 0);
    qp_int8_view v;
    qp_int8_view_of(q, &v);
    for (int64_t i = 0; i < rows * cols; i++) {
        /* |error| <= half a step (absmax/254) plus rounding of the f32 products */
        double rel = fabs((double)w[i] - (double)d[i]) / (v.absmax[i / cols] / 254.0);
        *worst = rel > *worst ? rel : *worst;
    }
    qp_int8_free(q);
}

static void test_house_reconstruction(void **state)
{
    (void)state;
    char *path = qp_test_shared_path("models/house-llama/model.safetensors");
    qp_safetensors *st = NULL;
    assert_int_equal(qp_safetensors_open(&st, path), 0);
    double worst = 0;
    double rel = qp_test_linears_rel_error(st, 6, int8_roundtrip, &worst);
    print_message("house INT8 per-channel: %.5f (worst |error| = %.6f half-steps)\n", rel, worst);
    assert_true(rel > 0.003 && rel < 0.012);
    assert_true(worst <= 1.0001);
    qp_safetensors_free(st);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_by_hand),
        cmocka_unit_test(test_fast_equals_ref),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_serialize),
        cmocka_unit_test(test_house_reconstruction),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
