/* bitsandbytes NF4: the 16 levels, the decision tree's thresholds and tie
 * rule, the reciprocal-multiply normalisation, packing order (even element
 * in the high nibble, odd n padded with 7), zero blocks, bnb's dynamic map
 * (against values of the map bnb stores with its checkpoints) and its
 * 8-bit search, double quantization by hand, fast == ref at 1-3 threads,
 * serialisation and damage, and the error on the house model. */
#include "tests/support/testutil.h"

#include "common/error.h"
#include "model/safetensors.h"
#include "common/tensor.h"
#include "quant/nf4.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static qp_nf4 *make(int64_t rows, int64_t cols, int bs, int dq)
{
    qp_nf4_params p = { .blocksize = bs, .double_quant = dq };
    qp_nf4 *q = NULL;
    assert_int_equal(qp_nf4_new(&q, rows, cols, &p), 0);
    return q;
}

static const double LEVELS[16] = {
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
};

static const double THRESH[15] = {
    -0.8480964004993439, -0.6106329262256622, -0.4599952697753906, -0.33967943489551544,
    -0.23460740596055984, -0.13791173323988914, -0.045525018125772476, 0.03979014977812767,
    0.1202552504837513, 0.2035212516784668, 0.2920137718319893, 0.3893125355243683,
    0.5016634166240692, 0.6427869200706482, 0.8614784181118011,
};

/* bnb's f32 literals: decimal -> f32 directly.  Each threshold is the exact
 * midpoint of two f32 levels, often a tie between two floats, so going
 * through double (ties to even) gives a different float for four of them. */
static const float THRESH_F[15] = {
    -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
    -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
    0.1202552504837513f, 0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f,
    0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f,
};

static void test_levels_and_tree(void **state)
{
    (void)state;
    const float *lv = qp_nf4_levels();
    for (int i = 0; i < 16; i++) {
        assert_true(lv[i] == (float)LEVELS[i]);
        assert_int_equal(qp_nf4_code(lv[i]), i);
    }
    for (int k = 0; k < 15; k++) {
        float t = THRESH_F[k];
        /* strictly above a threshold -> the upper code; on it -> the lower */
        assert_int_equal(qp_nf4_code(t), k);
        assert_int_equal(qp_nf4_code(nextafterf(t, 2.0f)), k + 1);
        assert_int_equal(qp_nf4_code(nextafterf(t, -2.0f)), k);
        /* each threshold is the midpoint of its two levels (to f32 precision) */
        assert_true(fabs(THRESH[k] - (LEVELS[k] + LEVELS[k + 1]) / 2) < 1e-7);
    }
    assert_int_equal(qp_nf4_code(-1.5f), 0);
    assert_int_equal(qp_nf4_code(1.0000001f), 15);
    assert_int_equal(qp_nf4_code(-0.0f), 7);
}

static void test_packing_by_hand(void **state)
{
    (void)state;
    /* absmax 1: codes 15, 0, 7, 12, 4, 8 -> bytes F0 7C 48 */
    const float x[6] = { 1.0f, -1.0f, 0.0f, 0.5f, -0.3f, 0.08f };
    qp_nf4 *q = make(1, 6, 64, 0);
    assert_int_equal(qp_nf4_quantize_ref(q, x), 0);
    qp_nf4_view v;
    qp_nf4_view_of(q, &v);
    assert_int_equal(v.n_blocks, 1);
    const uint8_t expect[3] = { 0xF0, 0x7C, 0x48 };
    assert_memory_equal(v.codes, expect, 3);
    assert_true(v.absmax[0] == 1.0f);
    float d[6];
    assert_int_equal(qp_nf4_dequantize(q, d), 0);
    const float dexp[6] = { 1.0f, -1.0f, 0.0f, 0.44070982933044434f, -0.28444138169288635f,
                            0.07958029955625534f };
    assert_memory_equal(d, dexp, sizeof d);
    qp_nf4_free(q);

    /* odd n (1 x 5), absmax 2, fast path: the last low nibble is 7 */
    const float y[5] = { 2.0f, -2.0f, 0.0f, 1.0f, -0.6f };
    q = make(1, 5, 64, 0);
    uint8_t got[3];
    assert_int_equal(qp_nf4_quantize(q, y, 2), 0);
    qp_nf4_view_of(q, &v);
    memcpy(got, v.codes, 3);
    const uint8_t e2[3] = { 0xF0, 0x7C, 0x47 };
    assert_memory_equal(got, e2, 3);
    assert_true(v.absmax[0] == 2.0f);
    qp_nf4_free(q);

    /* a block of zeros: code 7 everywhere, exact zeros back */
    float z[64] = { 0 };
    z[3] = -0.0f;
    q = make(1, 64, 64, 0);
    assert_int_equal(qp_nf4_quantize_ref(q, z), 0);
    qp_nf4_view_of(q, &v);
    for (int i = 0; i < 32; i++)
        assert_int_equal(v.codes[i], 0x77);
    assert_true(v.absmax[0] == 0.0f);
    float dz[64];
    assert_int_equal(qp_nf4_dequantize(q, dz), 0);
    for (int i = 0; i < 64; i++)
        assert_true(dz[i] == 0.0f);
    qp_nf4_free(q);
}

/* bnb normalises by x·(1/absmax), not x/absmax: find a value where the two
 * straddle a threshold and check the code follows the product. */
static void test_reciprocal_rule(void **state)
{
    (void)state;
    int found = 0;
    const float amax = 3.0f, inv = 1.0f / amax;
    for (int k = 0; k < 15 && !found; k++) {
        float x = THRESH_F[k] * amax;
        for (int s = 0; s < 32; s++)
            x = nextafterf(x, -10.0f);
        for (int s = 0; s < 64 && !found; s++, x = nextafterf(x, 10.0f)) {
            float a = x * inv, b = x / amax;
            if ((a > THRESH_F[k]) == (b > THRESH_F[k]))
                continue;
            float blk[2] = { amax, x };
            qp_nf4 *q = make(1, 2, 64, 0);
            assert_int_equal(qp_nf4_quantize_ref(q, blk), 0);
            qp_nf4_view v;
            qp_nf4_view_of(q, &v);
            assert_int_equal(v.codes[0] >> 4, 15);
            assert_int_equal(v.codes[0] & 0x0F, a > THRESH_F[k] ? k + 1 : k);
            qp_nf4_free(q);
            found = 1;
        }
    }
    assert_true(found);
}

static void test_dynamic_map(void **state)
{
    (void)state;
    const float *m = qp_nf4_dynamic_map();
    /* entries of the map bnb writes into checkpoints as nested_quant_map */
    assert_true(m[0] == -0.992968738079071f);
    assert_true(m[127] == 0.0f);
    assert_true(m[128] == 5.500000384017767e-07f);
    assert_true(m[143] == 0.001281249918974936f);
    assert_true(m[189] == 0.09578125923871994f);
    assert_true(m[190] == 0.09859374910593033f);
    assert_true(m[191] == 0.10703125596046448f);
    assert_true(m[220] == 0.5148437023162842f);
    assert_true(m[234] == 0.7117187976837158f);
    assert_true(m[254] == 0.992968738079071f);
    assert_true(m[255] == 1.0f);
    for (int k = 0; k < 127; k++)
        assert_true(m[126 - k] == -m[128 + k]);
    for (int i = 1; i < 256; i++)
        assert_true(m[i - 1] < m[i]);
    /* bnb's search returns every entry's own index, and rounds to the nearer one */
    for (int i = 0; i < 256; i++)
        assert_int_equal(qp_nf4_dynamic_code(m[i]), i);
    for (int i = 1; i < 256; i++) {
        float lo = m[i - 1] + (m[i] - m[i - 1]) * 0.25f, hi = m[i - 1] + (m[i] - m[i - 1]) * 0.75f;
        assert_int_equal(qp_nf4_dynamic_code(lo), i - 1);
        assert_int_equal(qp_nf4_dynamic_code(hi), i);
    }
    assert_int_equal(qp_nf4_dynamic_code(-1.0f), 0);
}

static void test_double_quant_by_hand(void **state)
{
    (void)state;
    qp_test_seed(21);
    /* 300 blocks of 64 -> 2 blocks of absmax (256 + 44) */
    const int64_t rows = 300, cols = 64;
    float *w = malloc(rows * cols * sizeof *w);
    for (int64_t r = 0; r < rows; r++) {
        float s = 0.01f + 0.05f * qp_test_uniform();
        for (int64_t c = 0; c < cols; c++)
            w[r * cols + c] = s * qp_test_gauss();
    }
    qp_nf4 *plain = make(rows, cols, 64, 0), *dq = make(rows, cols, 64, 1);
    assert_int_equal(qp_nf4_quantize_ref(plain, w), 0);
    assert_int_equal(qp_nf4_quantize_ref(dq, w), 0);
    qp_nf4_view vp, vd;
    qp_nf4_view_of(plain, &vp);
    qp_nf4_view_of(dq, &vd);
    assert_int_equal(vd.n_blocks2, 2);
    assert_null(vd.absmax);
    /* the 4-bit codes do not depend on how absmax is stored */
    assert_memory_equal(vp.codes, vd.codes, (size_t)(rows * cols / 2));
    double sum = 0;
    for (int b = 0; b < 300; b++)
        sum += vp.absmax[b];
    const float offset = (float)(sum / 300);
    assert_true(vd.offset == offset);
    const float *m = qp_nf4_dynamic_map();
    for (int k = 0; k < 2; k++) {
        float a2 = 0;
        int b0 = 256 * k, b1 = k ? 300 : 256;
        for (int b = b0; b < b1; b++)
            a2 = fmaxf(a2, fabsf(vp.absmax[b] - offset));
        assert_true(vd.absmax2[k] == a2);
        for (int b = b0; b < b1; b++) {
            assert_int_equal(vd.qabsmax[b], qp_nf4_dynamic_code((vp.absmax[b] - offset) * (1.0f / a2)));
            float rec = m[vd.qabsmax[b]] * a2 + offset;
            assert_true(qp_nf4_block_absmax(dq, b) == rec);
            /* 8-bit dynamic codes of a centred absmax: within a few % of the block's absmax */
            assert_true(fabsf(rec - vp.absmax[b]) < 0.02f * a2 + 1e-7f);
        }
    }
    float *d = malloc(rows * cols * sizeof *d);
    assert_int_equal(qp_nf4_dequantize(dq, d), 0);
    const float *lv = qp_nf4_levels();
    for (int64_t i = 0; i < rows * cols; i++) {
        int code = (i & 1) ? (vd.codes[i / 2] & 15) : (vd.codes[i / 2] >> 4);
        assert_true(d[i] == lv[code] * qp_nf4_block_absmax(dq, i / 64));
    }
    /* bits per weight */
    assert_true(qp_nf4_bits_per_weight(plain) == 4.5);
    assert_true(fabs(qp_nf4_bits_per_weight(dq) - (4.0 + (8.0 * 300 + 64 + 32) / 19200.0)) < 1e-12);
    qp_nf4 *big = make(1024, 1024, 64, 1);
    assert_true(fabs(qp_nf4_bits_per_weight(big) - 4.126983642578125) < 1e-12);
    qp_nf4_free(big);
    qp_nf4_free(plain);
    qp_nf4_free(dq);
    free(w);
    free(d);
}

static void fill(float *x, int64_t n)
{
    for (int64_t i0 = 0; i0 < n; i0 += 64) {
        int kind = (int)(qp_test_next_u64() % 8);
        float s = powf(10.0f, -6.0f + 8.0f * qp_test_uniform());
        for (int64_t i = i0; i < i0 + 64 && i < n; i++) {
            switch (kind) {
            case 0: x[i] = 0.0f; break;
            case 1: x[i] = (i & 1) ? -0.0f : 0.0f; break;
            case 2: x[i] = s; break;
            case 3: x[i] = -s * THRESH_F[i % 15]; break;
            case 4: x[i] = 0x1p-140f * (float)((int)(qp_test_next_u64() % 7) - 3); break;
            default: x[i] = s * qp_test_gauss(); break;
            }
        }
    }
}

static void test_fast_equals_ref(void **state)
{
    (void)state;
    qp_test_seed(22);
    const int bss[4] = { 64, 128, 256, 4096 };
    const int64_t shapes[4][2] = { { 97, 64 }, { 33, 333 }, { 1, 129 }, { 40, 1024 } };
    for (int bi = 0; bi < 4; bi++) {
        for (int si = 0; si < 4; si++) {
            for (int dq = 0; dq < 2; dq++) {
                const int64_t rows = shapes[si][0], cols = shapes[si][1], n = rows * cols;
                float *w = malloc(n * sizeof *w);
                fill(w, n);
                qp_nf4 *ref = make(rows, cols, bss[bi], dq);
                assert_int_equal(qp_nf4_quantize_ref(ref, w), 0);
                qp_nf4_view vr;
                qp_nf4_view_of(ref, &vr);
                for (int t = 1; t <= 3; t++) {
                    qp_nf4 *f = make(rows, cols, bss[bi], dq);
                    assert_int_equal(qp_nf4_quantize(f, w, t), 0);
                    qp_nf4_view vf;
                    qp_nf4_view_of(f, &vf);
                    assert_memory_equal(vr.codes, vf.codes, (size_t)(n + 1) / 2);
                    for (int64_t b = 0; b < vr.n_blocks; b++)
                        assert_true(qp_nf4_block_absmax(ref, b) == qp_nf4_block_absmax(f, b));
                    if (dq) {
                        assert_memory_equal(vr.qabsmax, vf.qabsmax, (size_t)vr.n_blocks);
                        assert_memory_equal(vr.absmax2, vf.absmax2, (size_t)vr.n_blocks2 * 4);
                        assert_true(vr.offset == vf.offset);
                    }
                    qp_nf4_free(f);
                }
                qp_nf4_free(ref);
                free(w);
            }
        }
    }
}

static void test_errors(void **state)
{
    (void)state;
    qp_nf4 *q = NULL;
    qp_nf4_params p = { .blocksize = 32 };
    assert_int_equal(qp_nf4_new(&q, 4, 64, &p), QP_EUSAGE);
    assert_string_equal(qp_error_last(), "nf4: blocksize 32 is not supported (use 64, 128, 256, 512, 1024, 2048 or 4096)");
    float w[3 * 100];
    for (int i = 0; i < 300; i++)
        w[i] = 0.1f * (float)(i % 7);
    w[2 * 100 + 17] = NAN;
    w[2 * 100 + 90] = INFINITY;
    q = make(3, 100, 64, 1);
    const char *msg = "weight [3 x 100]: row 2, column 17: weight is not finite; fix the checkpoint";
    assert_int_equal(qp_nf4_quantize_ref(q, w), QP_EUSAGE);
    assert_string_equal(qp_error_last(), msg);
    for (int t = 1; t <= 3; t++) {
        qp_error_clear();
        assert_int_equal(qp_nf4_quantize(q, w, t), QP_EUSAGE);
        assert_string_equal(qp_error_last(), msg);
    }
    qp_nf4_free(q);
}

static void test_serialize(void **state)
{
    (void)state;
    qp_test_seed(23);
    for (int dq = 0; dq < 2; dq++) {
        const int64_t rows = 7, cols = 301;   /* odd n: a padding nibble */
        float w[7 * 301], d1[7 * 301], d2[7 * 301];
        fill(w, rows * cols);
        qp_nf4 *q = make(rows, cols, 128, dq);
        assert_int_equal(qp_nf4_quantize(q, w, 2), 0);
        uint8_t *buf;
        size_t len;
        assert_int_equal(qp_nf4_serialize(q, (void **)&buf, &len), 0);
        const size_t nb = (7 * 301 + 127) / 128;
        assert_int_equal(len, 56 + (7 * 301 + 1) / 2 + (dq ? nb + 4 : 4 * nb));
        qp_nf4 *r = NULL;
        assert_int_equal(qp_nf4_deserialize(&r, buf, len, "nf4obj"), 0);
        assert_int_equal(qp_nf4_dequantize(q, d1), 0);
        assert_int_equal(qp_nf4_dequantize(r, d2), 0);
        assert_memory_equal(d1, d2, sizeof d1);
        uint8_t *buf2;
        size_t len2;
        assert_int_equal(qp_nf4_serialize(r, (void **)&buf2, &len2), 0);
        assert_int_equal(len2, len);
        assert_memory_equal(buf, buf2, len);
        free(buf2);
        qp_nf4_free(r);

        for (size_t cut = 0; cut < len; cut += (cut < 80 ? 1 : 97)) {
            assert_int_equal(qp_nf4_deserialize(&r, buf, cut, "nf4obj"), QP_ECORRUPT);
            assert_null(r);
            assert_non_null(strstr(qp_error_last(), "nf4obj: "));
        }
        uint8_t *d = malloc(len);
        memcpy(d, buf, len);
        d[56 + 5] ^= 0x10;
        assert_int_equal(qp_nf4_deserialize(&r, d, len, "nf4obj"), QP_ECORRUPT);
        assert_non_null(strstr(qp_error_last(), "nf4obj: payload checksum mismatch"));
        memcpy(d, buf, len);
        d[12] = 65;   /* blocksize 65 */
        assert_int_equal(qp_nf4_deserialize(&r, d, len, "nf4obj"), QP_ECORRUPT);
        char expect[128];
        snprintf(expect, sizeof expect, "nf4obj: inconsistent nf4 header (blocksize 65, [7 x 301], flags 0x%d)", dq);
        assert_string_equal(qp_error_last(), expect);
        free(d);
        qp_nf4_free(q);
        free(buf);
    }

    /* a bad padding nibble and a negative absmax, with a checksum that matches */
    float w[3] = { 0.5f, -0.25f, 1.0f };
    qp_nf4 *q = make(1, 3, 64, 0);
    assert_int_equal(qp_nf4_quantize_ref(q, w), 0);
    qp_nf4_view v;
    qp_nf4_view_of(q, &v);
    v.codes[1] = (uint8_t)((v.codes[1] & 0xF0) | 3);
    uint8_t *buf;
    size_t len;
    assert_int_equal(qp_nf4_serialize(q, (void **)&buf, &len), 0);
    qp_nf4 *r = NULL;
    assert_int_equal(qp_nf4_deserialize(&r, buf, len, "w"), QP_ECORRUPT);
    assert_string_equal(qp_error_last(), "w: the padding nibble of the last byte is 3, not 7 (nf4 0.0)");
    free(buf);
    v.codes[1] = (uint8_t)((v.codes[1] & 0xF0) | 7);
    v.absmax[0] = -1.0f;
    assert_int_equal(qp_nf4_serialize(q, (void **)&buf, &len), 0);
    assert_int_equal(qp_nf4_deserialize(&r, buf, len, "w"), QP_ECORRUPT);
    assert_string_equal(qp_error_last(), "w: absmax[0] = -1 is not a finite value >= 0");
    free(buf);
    qp_nf4_free(q);
}

typedef struct {
    int bs, dq;
} nf4_cfg;

static void nf4_roundtrip(void *ud, const float *w, int64_t rows, int64_t cols, float *d)
{
    const nf4_cfg *c = ud;
    qp_nf4 *q = make(rows, cols, c->bs, c->dq);
    assert_int_equal(qp_nf4_quantize(q, w, 2), 0);
    assert_int_equal(qp_nf4_dequantize(q, d), 0);
    qp_nf4_free(q);
}

static double house_error(qp_safetensors *st, int bs, int dq)
{
    nf4_cfg c = {bs, dq};
    return qp_test_linears_rel_error(st, 6, nf4_roundtrip, &c);
}

static void test_house_reconstruction(void **state)
{
    (void)state;
    char *path = qp_test_shared_path("models/house-llama/model.safetensors");
    qp_safetensors *st = NULL;
    assert_int_equal(qp_safetensors_open(&st, path), 0);
    double e64 = house_error(st, 64, 0), e64dq = house_error(st, 64, 1), e256 = house_error(st, 256, 0);
    print_message("house NF4: blocksize 64 %.5f, 64 + double quant %.5f, 256 %.5f\n", e64, e64dq, e256);
    /* 16 normal-quantile levels per 64 weights: about RTN-4 g128 (0.100) or better */
    assert_true(e64 > 0.06 && e64 < 0.11);
    assert_true(e64dq >= e64 * 0.999 && e64dq < e64 * 1.01);
    assert_true(e256 > e64);
    qp_safetensors_free(st);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_levels_and_tree),
        cmocka_unit_test(test_packing_by_hand),
        cmocka_unit_test(test_reciprocal_rule),
        cmocka_unit_test(test_dynamic_map),
        cmocka_unit_test(test_double_quant_by_hand),
        cmocka_unit_test(test_fast_equals_ref),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_serialize),
        cmocka_unit_test(test_house_reconstruction),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
