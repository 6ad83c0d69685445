/* Dequantization of IQ4_XS, IQ3_XXS, IQ2_XXS, IQ2_XS, TQ1_0 and TQ2_0: hand-built blocks pin the
 * layouts; then every block of the llama-quantize oracles
 * (vectors/house-llama/iq/) is decoded here from ggml-common.h's block
 * structs, independently of quant/ (TQ1_0 by base-3 digits: byte =
 * ceil(q·256/243) gives q = floor(byte·243/256), rather than ggml's
 * multiply-and-shift), and qp_dequantize_row must give the same floats bit
 * for bit — with d·(trit − 1), dl·kvalues and db·grid·sign, ggml's
 * dequantize_row_* products.  The error against F32.gguf is bounded as for the other types.
 * IQ2_XXS / IQ2_XS have no --pure oracle (llama-quantize refuses them
 * without an imatrix entry for output.weight): their blocks are those of
 * the file-type mixes mix-IQ2_XXS.gguf / mix-IQ2_XS.gguf. */
#include "tests/support/testutil.h"

#include "common/error.h"
#include "common/tensor.h"
#include "model/gguf.h"
#include "quant/qtypes.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const int8_t kvalues[16] = { -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113 };

static uint16_t get16(const unsigned char *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static void put16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

/* IQ4_XS block (d, scales_h, scales_l[4], qs[128]) -> y[256] */
static void decode_iq4_xs(const unsigned char *b, float *y)
{
    const float d = qp_f16_to_f32(get16(b));
    const uint16_t sh = get16(b + 2);
    for (int ib = 0; ib < 8; ib++) {
        const int lo = (b[4 + ib / 2] >> (ib % 2 ? 4 : 0)) & 15, hi = (sh >> (2 * ib)) & 3;
        const float dl = d * (float)((lo | hi << 4) - 32);
        for (int j = 0; j < 32; j++) {
            const unsigned char q = b[8 + 16 * ib + (j % 16)];
            y[32 * ib + j] = dl * (float)kvalues[j < 16 ? q & 15 : q >> 4];
        }
    }
}

/* the k-th of five base-3 digits of the byte, most significant first */
static int digit5(unsigned char byte, int k)
{
    int q = byte * 243 / 256;
    for (int i = 4; i > k; i--)
        q /= 3;
    return q % 3;
}

/* TQ1_0 block (qs[48], qh[4], d) -> y[256] */
static void decode_tq1_0(const unsigned char *b, float *y)
{
    const float d = qp_f16_to_f32(get16(b + 52));
    for (int k = 0; k < 5; k++)
        for (int m = 0; m < 32; m++)
            y[32 * k + m] = (float)(digit5(b[m], k) - 1) * d;
    for (int k = 0; k < 5; k++)
        for (int m = 0; m < 16; m++)
            y[160 + 16 * k + m] = (float)(digit5(b[32 + m], k) - 1) * d;
    for (int k = 0; k < 4; k++)
        for (int j = 0; j < 4; j++)
            y[240 + 4 * k + j] = (float)(digit5(b[48 + j], k) - 1) * d;
}

/* IQ3_XXS block (d, qs[64] grid indices, 8 × u32 signs + scale) -> y[256],
 * with ggml-common.h's iq3xxs_grid (quant/ exports the same table: its
 * bytes are checked by the oracle quantization test) */
extern const uint32_t qp_iq3xxs_grid[256];

static void decode_iq3_xxs(const unsigned char *b, float *y)
{
    const float d = qp_f16_to_f32(get16(b));
    for (int ib = 0; ib < 8; ib++) {
        const unsigned char *g = b + 66 + 4 * ib;
        const uint32_t aux = (uint32_t)g[0] | (uint32_t)g[1] << 8 | (uint32_t)g[2] << 16 | (uint32_t)g[3] << 24;
        const float db = d * (0.5f + (float)(aux >> 28)) * 0.5f;
        for (int l = 0; l < 4; l++) {
            int s = (int)((aux >> (7 * l)) & 127), parity = 0;
            for (int k = 0; k < 7; k++)
                parity ^= (s >> k) & 1;
            s |= parity << 7;   /* the eighth sign makes the count of negatives even */
            for (int j = 0; j < 8; j++) {
                const uint32_t grid = qp_iq3xxs_grid[b[2 + 8 * ib + 2 * l + j / 4]];
                const float q = (float)((grid >> (8 * (j % 4))) & 0xff);
                y[32 * ib + 8 * l + j] = db * q * ((s >> j) & 1 ? -1.f : 1.f);
            }
        }
    }
}

/* IQ2_XXS (d, 8 × two u32: 4 index bytes; 4×7 signs + scale) and IQ2_XS
 * (d, 32 × u16: 9-bit index + 7 signs, scales[8]) -> y[256], with
 * ggml-common.h's iq2xxs_grid / iq2xs_grid (quant/ exports the tables) */
extern const uint64_t qp_iq2xxs_grid[256];
extern const uint64_t qp_iq2xs_grid[512];

static void put_group(float *y, float db, uint64_t grid, int s7)
{
    int parity = 0;
    for (int k = 0; k < 7; k++)
        parity ^= (s7 >> k) & 1;
    const int s = s7 | parity << 7;
    for (int j = 0; j < 8; j++)
        y[j] = db * (float)((grid >> (8 * j)) & 0xff) * ((s >> j) & 1 ? -1.f : 1.f);
}

static void decode_iq2_xxs(const unsigned char *b, float *y)
{
    const float d = qp_f16_to_f32(get16(b));
    for (int ib = 0; ib < 8; ib++) {
        const unsigned char *g = b + 2 + 8 * ib;
        const uint32_t aux = (uint32_t)g[4] | (uint32_t)g[5] << 8 | (uint32_t)g[6] << 16 | (uint32_t)g[7] << 24;
        const float db = d * (0.5f + (float)(aux >> 28)) * 0.25f;
        for (int l = 0; l < 4; l++)
            put_group(y + 32 * ib + 8 * l, db, qp_iq2xxs_grid[g[l]], (int)((aux >> (7 * l)) & 127));
    }
}

static void decode_iq2_xs(const unsigned char *b, float *y)
{
    const float d = qp_f16_to_f32(get16(b));
    for (int g = 0; g < 32; g++) {
        const uint16_t q = get16(b + 2 + 2 * g);
        const int sc = (b[66 + g / 4] >> (4 * ((g / 2) % 2))) & 15;   /* 16-weight sub-block g/2 */
        put_group(y + 8 * g, d * (0.5f + (float)sc) * 0.25f, qp_iq2xs_grid[q & 511], q >> 9);
    }
}

/* IQ3_S block (d, qs[64], qh[8], signs[32], scales[4]) -> y[256], with
 * ggml-common.h's iq3s_grid (quant/'s copy; its bytes are checked by the
 * oracle quantization test) */
extern const uint32_t qp_iq3s_grid[512];

static void decode_iq3_s(const unsigned char *b, float *y)
{
    const float d = qp_f16_to_f32(get16(b));
    for (int ib = 0; ib < 8; ib++) {
        const int l = (b[106 + ib / 2] >> (ib % 2 ? 4 : 0)) & 15;
        const float db = d * (float)(1 + 2 * l);
        for (int k = 0; k < 8; k++) {   /* group k: weights 4k..4k+3 */
            const int index = b[2 + 8 * ib + k] | ((b[66 + ib] >> k) & 1) << 8;
            for (int j = 0; j < 4; j++) {
                const int w = 4 * k + j;
                const float q = (float)((qp_iq3s_grid[index] >> (8 * j)) & 0xff);
                const int neg = (b[74 + 4 * ib + w / 8] >> (w % 8)) & 1;
                y[32 * ib + w] = db * q * (neg ? -1.f : 1.f);
            }
        }
    }
}

/* IQ2_S block (d, qs[32] index low bytes, qs[32] signs, qh[8], scales[8])
 * -> y[256], with ggml-common.h's iq2s_grid (quant/'s copy) */
extern const uint64_t qp_iq2s_grid[1024];

static void decode_iq2_s(const unsigned char *b, float *y)
{
    const float d = qp_f16_to_f32(get16(b));
    for (int g = 0; g < 32; g++) {   /* group g: weights 8g..8g+7, sub-block g/2 of 16 */
        const int l = (b[74 + g / 4] >> (g / 2 % 2 ? 4 : 0)) & 15;
        const float db = d * (0.5f + (float)l) * 0.25f;
        const int index = b[2 + g] | ((b[66 + g / 4] >> (2 * (g % 4))) & 3) << 8;
        for (int j = 0; j < 8; j++) {
            const float q = (float)((qp_iq2s_grid[index] >> (8 * j)) & 0xff);
            y[8 * g + j] = db * q * ((b[2 + 32 + g] >> j) & 1 ? -1.f : 1.f);
        }
    }
}

/* IQ1_S block (d, qs[32] index low bytes, qh u16[8]: per 32 weights four
 * 3-bit index highs, scale l in bits 12..14, shift sign bit 15) -> y[256]:
 * d·(2l+1)·(g ± 0.125), g in -1/0/1 from ggml-common.h's iq1s_grid */
extern const uint64_t qp_iq1s_grid[2048];

static void decode_iq1_s(const unsigned char *b, float *y)
{
    const float d = qp_f16_to_f32(get16(b));
    for (int g = 0; g < 32; g++) {   /* group g: weights 8g..8g+7, sub-block g/4 */
        const unsigned qh = get16(b + 34 + 2 * (g / 4));
        const float dl = d * (float)(2 * ((qh >> 12) & 7) + 1);
        const float delta = qh & 0x8000 ? -0.125f : 0.125f;
        const int index = b[2 + g] | (int)((qh >> (3 * (g % 4))) & 7) << 8;
        for (int j = 0; j < 8; j++)
            y[8 * g + j] = dl * ((float)(int8_t)((qp_iq1s_grid[index] >> (8 * j)) & 0xff) + delta);
    }
}

/* IQ1_M block (qs[32], qh[16]: per 16 weights two (3-bit index high, shift
 * sign) nibbles, scales u16[4]: 3-bit scales, fp16 d in the top nibbles) */
static void decode_iq1_m(const unsigned char *b, float *y)
{
    uint16_t sc[4];
    for (int i = 0; i < 4; i++)
        sc[i] = get16(b + 48 + 2 * i);
    const uint16_t dh = (uint16_t)((sc[0] >> 12) | (sc[1] >> 12) << 4 | (sc[2] >> 12) << 8 | (sc[3] >> 12) << 12);
    const float d = qp_f16_to_f32(dh);
    for (int g = 0; g < 32; g++) {   /* group g: sub-block g/2 of 16 */
        const int ib = g / 2;
        const float dl = d * (float)(2 * ((sc[ib / 4] >> (3 * (ib % 4))) & 7) + 1);
        const int nib = (b[32 + ib] >> (4 * (g % 2))) & 15;
        const float delta = nib & 8 ? -0.125f : 0.125f;
        const int index = b[g] | (nib & 7) << 8;
        for (int j = 0; j < 8; j++)
            y[8 * g + j] = dl * ((float)(int8_t)((qp_iq1s_grid[index] >> (8 * j)) & 0xff) + delta);
    }
}

/* TQ2_0 block (qs[64], d) -> y[256] */
static void decode_tq2_0(const unsigned char *b, float *y)
{
    const float d = qp_f16_to_f32(get16(b + 64));
    for (int i = 0; i < 256; i++) {
        const int g = i / 128, k = (i % 128) / 32, m = i % 32;
        y[i] = (float)(((b[32 * g + m] >> (2 * k)) & 3) - 1) * d;
    }
}

static void test_layouts(void **state)
{
    (void)state;
    unsigned char b[136];
    float y[256];
    /* IQ4_XS: sub-block 1's scale = low nibble of scales_l[0] high half |
     * bits 2..3 of scales_h << 4 */
    memset(b, 0, sizeof b);
    put16(b, 0x3800);      /* d = 0.5 */
    b[4] = 0x10 | 0x1;     /* sub-block 0 low 1, sub-block 1 low 1 */
    put16(b + 2, 2 << 0 | 3 << 2);   /* sub-block 0: 1 | 32 = 33 -> 1; sub-block 1: 1 | 48 = 49 -> 17 */
    b[8] = 0xF0;           /* weight 0 -> kvalues[0], weight 16 -> kvalues[15] */
    b[8 + 16] = 0x08;      /* weight 32 -> kvalues[8] */
    assert_int_equal(qp_dequantize_row(QP_GGML_IQ4_XS, b, y, 256), 0);
    assert_true(y[0] == 0.5f * 1 * -127);
    assert_true(y[16] == 0.5f * 1 * 113);
    assert_true(y[32] == 0.5f * 17 * 1);
    assert_true(y[64] == 0.5f * -32 * -127);   /* scale 0 − 32 */

    /* IQ3_XXS: d = 1, sub-block 0 scale l = 1 -> db = (0.5 + 1)·0.5; index 5
     * = 0x04040c3e (first weight 62); sign bits 1 (+ parity bit 7) */
    memset(b, 0, 98);
    put16(b, 0x3c00);
    b[2] = 5;
    b[2 + 1] = 0;
    b[66] = 0x01;
    b[66 + 3] = 0x10;      /* scale nibble (bits 28..31) = 1 */
    assert_int_equal(qp_dequantize_row(QP_GGML_IQ3_XXS, b, y, 256), 0);
    assert_true(y[0] == -0.75f * 62 && y[1] == 0.75f * 12 && y[2] == 0.75f * 4);
    assert_true(y[4] == 0.75f * 4 && y[7] == -0.75f * 4);   /* bit 7: parity of one negative */
    assert_true(y[8] == 0.75f * 4 && y[32] == 0.25f * 4);    /* sub-block 1: l = 0 -> 0.25 */

    /* IQ2_XXS: d = 1, sub-block 0: indices 1 (0x080808080808082b: 43 first)
     * and 0, sign bit 0 of group 0 (+ parity bit 7), scale l = 2 -> db =
     * 2.5·0.25; sub-block 1: l = 0 -> 0.125 */
    memset(b, 0, 66);
    put16(b, 0x3c00);
    b[2] = 1;
    b[6] = 0x01;
    b[9] = 0x20;
    assert_int_equal(qp_dequantize_row(QP_GGML_IQ2_XXS, b, y, 256), 0);
    assert_true(y[0] == -0.625f * 43 && y[1] == 0.625f * 8 && y[7] == -0.625f * 8);
    assert_true(y[8] == 0.625f * 8 && y[32] == 0.125f * 8);

    /* IQ2_XS: d = 2, qs[0] = index 511 (0x2b2b2b2b2b2b2b2b) | sign 1 << 9,
     * qs[2] (sub-block 1) = index 2 (0x0808080808081919); scales[0] = 0x31:
     * sub-block 0 l = 1 -> db = 2·1.5·0.25, sub-block 1 l = 3 -> 2·3.5·0.25 */
    memset(b, 0, 74);
    put16(b, 0x4000);
    put16(b + 2, 511 | 1 << 9);
    put16(b + 6, 2);
    b[66] = 0x31;
    assert_int_equal(qp_dequantize_row(QP_GGML_IQ2_XS, b, y, 256), 0);
    assert_true(y[0] == -0.75f * 43 && y[1] == 0.75f * 43 && y[7] == -0.75f * 43);
    assert_true(y[8] == 0.75f * 8);
    assert_true(y[16] == 1.75f * 25 && y[17] == 1.75f * 25 && y[18] == 1.75f * 8);
    /* IQ3_S: d = 1; sub-block 0 scale l = 1 -> db = 3, sub-block 1 l = 2 ->
     * 5; index 0x100 | 1 = iq3s_grid[257] = 0x05090705 via qh bit 0; sign
     * bit 0; sub-block 1's group 0 = index 0 (all 1) */
    memset(b, 0, 110);
    put16(b, 0x3c00);
    b[2] = 1;
    b[66] = 0x01;
    b[74] = 0x01;
    b[106] = 0x21;
    assert_int_equal(qp_dequantize_row(QP_GGML_IQ3_S, b, y, 256), 0);
    assert_true(y[0] == -3.f * 5 && y[1] == 3.f * 7 && y[2] == 3.f * 9 && y[3] == 3.f * 5);
    assert_true(y[4] == 3.f * 1 && y[32] == 5.f * 1);

    /* IQ2_S: d = 1; group 0 index 0x100 | 2 via qh bits 0..1 = 1;
     * sub-block 0 scale 1 -> db = 1.5·0.25; sign of weight 0; group 2
     * (sub-block 1, high nibble 2 -> 2.5·0.25) index 0 = all 8 */
    memset(b, 0, 82);
    put16(b, 0x3c00);
    b[2] = 2;
    b[66] = 0x01;
    b[2 + 32] = 0x01;
    b[74] = 0x21;
    assert_int_equal(qp_dequantize_row(QP_GGML_IQ2_S, b, y, 256), 0);
    for (int j = 0; j < 8; j++) {
        const float q = (float)((qp_iq2s_grid[258] >> (8 * j)) & 0xff);
        assert_true(y[j] == 0.375f * q * (j == 0 ? -1.f : 1.f));
        assert_true(y[16 + j] == 0.625f * 8);
    }

    /* TQ2_0: byte m of group g holds weights 128g + m + 32k at bits 2k */
    memset(b, 0, 66);
    put16(b + 64, 0x4000);   /* d = 2 */
    b[0] = 2 | 0 << 2 | 1 << 4 | 2 << 6;
    b[32 + 5] = 2 << 6;
    assert_int_equal(qp_dequantize_row(QP_GGML_TQ2_0, b, y, 256), 0);
    assert_true(y[0] == 2.0f && y[32] == -2.0f && y[64] == 0.0f && y[96] == 2.0f);
    assert_true(y[128 + 96 + 5] == 2.0f && y[128 + 5] == -2.0f);

    /* TQ1_0: 2·81 + 1·27 + 0 + 2·3 + 1 = 196 -> ceil(196·256/243) = 207 */
    memset(b, 0, 54);
    put16(b + 52, 0x3c00);
    b[0] = 207;
    b[48 + 1] = (unsigned char)((((2 * 3 + 0) * 3 + 1) * 3 + 2) * 3 * 256 / 243 + 1);   /* 177·256/243 -> 187 */
    /* IQ1_S: d = 1; sub-block 0: index 0x100 | 2 (qh bits 0..2 = 1), scale
     * l = 1 (x3), shift -0.125 (bit 15); group 4 (sub-block 1) index 0,
     * l = 0, +0.125 */
    unsigned char b1[56];
    memset(b1, 0, sizeof b1);
    put16(b1, 0x3c00);
    b1[2] = 2;
    put16(b1 + 34, 0x9001);
    assert_int_equal(qp_dequantize_row(QP_GGML_IQ1_S, b1, y, 256), 0);
    for (int j = 0; j < 8; j++) {
        const float g = (float)(int8_t)((qp_iq1s_grid[258] >> (8 * j)) & 0xff);
        assert_true(y[j] == 3.f * (g - 0.125f));
        assert_true(y[32 + j] == (float)(int8_t)(qp_iq1s_grid[0] >> (8 * j) & 0xff) + 0.125f);
    }
    /* IQ1_M: d = 1 (0x3c00 in the scales' top nibbles: sc[2] = 0xc000,
     * sc[3] = 0x3000); sub-block 0 scale 2 (x5); group 1 index 0x300 | 7
     * (qh[0] high nibble 0xb: high bits 3, sign -) */
    memset(b1, 0, sizeof b1);
    b1[1] = 7;
    b1[32] = 0xb0;
    put16(b1 + 48, 0x0002);
    put16(b1 + 52, 0xc000);
    put16(b1 + 54, 0x3000);
    assert_int_equal(qp_dequantize_row(QP_GGML_IQ1_M, b1, y, 256), 0);
    for (int j = 0; j < 8; j++) {
        const float g = (float)(int8_t)((qp_iq1s_grid[0x307] >> (8 * j)) & 0xff);
        assert_true(y[8 + j] == 5.f * (g - 0.125f));
        assert_true(y[j] == 5.f * ((float)(int8_t)(qp_iq1s_grid[0] >> (8 * j) & 0xff) + 0.125f));
    }

    assert_int_equal(qp_dequantize_row(QP_GGML_TQ1_0, b, y, 256), 0);
    assert_true(y[0] == 1.0f && y[32] == 0.0f && y[64] == -1.0f && y[96] == 1.0f && y[128] == 0.0f);
    assert_true(y[241] == 1.0f && y[245] == -1.0f && y[249] == 0.0f && y[253] == 1.0f);
    assert_true(y[1] == -1.0f);   /* qs[1] = 0: five trits 0 -> −1 */
}

/* IQ1 oracle figures, measured once: the IQ1_S mix's blocks and errors */
#define IQ1S_BLOCKS 16128
#define IQ1S_ERR 0.48717
#define IQ1M_ERR 0.47669

typedef void (*decode_fn)(const unsigned char *b, float *y);

/* every block of the oracle's tensors of type t: decode == qp_dequantize_row
 * bit for bit; returns the relative RMS error against F32.gguf */
static double check_oracle(const char *file, qp_ggml_type t, decode_fn decode, size_t *blocks)
{
    char rel[128];
    snprintf(rel, sizeof rel, "vectors/house-llama/iq/%s", file);
    char *qpath = qp_test_shared_path(rel), *fpath = qp_test_shared_path("vectors/house-llama/F32.gguf");
    qp_gguf *qg, *fg;
    assert_int_equal(qp_gguf_open(&qg, qpath), 0);
    assert_int_equal(qp_gguf_open(&fg, fpath), 0);
    const size_t bs = qp_qtype_get(t)->type_size;
    double err = 0, ref = 0;
    *blocks = 0;
    for (size_t i = 0; i < qp_gguf_tensor_count(qg); i++) {
        const qp_gguf_tensor *qt = qp_gguf_tensor_at(qg, i);
        if (qt->type != (uint32_t)t)
            continue;
        const qp_gguf_tensor *ft = qp_gguf_find_tensor(fg, qt->name);
        const float *x = ft->data;
        const int64_t n = (int64_t)ft->nelem;
        float *y = malloc((size_t)n * sizeof *y);
        assert_int_equal(qp_dequantize_row(t, qt->data, y, n), 0);
        float want[256];
        for (int64_t b = 0; b < n / 256; b++) {
            decode((const unsigned char *)qt->data + (size_t)b * bs, want);
            if (memcmp(want, y + 256 * b, sizeof want) != 0)
                fail_msg("%s: tensor %s block %lld decodes differently", file, qt->name, (long long)b);
            (*blocks)++;
        }
        for (int64_t c = 0; c < n; c++) {
            const double d = (double)y[c] - x[c];
            err += d * d;
            ref += (double)x[c] * x[c];
        }
        free(y);
    }
    qp_gguf_free(qg);
    qp_gguf_free(fg);
    free(qpath);
    free(fpath);
    return sqrt(err / ref);
}

static void test_oracle_decode(void **state)
{
    (void)state;
    static const struct {
        const char *file;
        qp_ggml_type t;
        decode_fn decode;
        double measured;
        size_t blocks;
    } cases[] = {
        /* measured once on the oracle files; ±15 % accepted.  The ternary
         * types are for ternary-trained models: on this ordinary one most
         * weights round to 0 (d = the block's largest magnitude).  TQ1_0 and
         * TQ2_0 hold the same trits, so their errors agree. */
        { "IQ4_XS-imatrix.gguf", QP_GGML_IQ4_XS, decode_iq4_xs, 0.07304, 20480 },
        { "IQ3_XXS-imatrix.gguf", QP_GGML_IQ3_XXS, decode_iq3_xxs, 0.19342, 20480 },
        /* the mixes' IQ2 tensors only, 36 of 44 (token_embd and the 6 attn_v
         * Q2_K, output Q5_K are not counted) */
        { "mix-IQ2_XXS.gguf", QP_GGML_IQ2_XXS, decode_iq2_xxs, 0.34473, 17664 },
        { "mix-IQ2_XS.gguf", QP_GGML_IQ2_XS, decode_iq2_xs, 0.30088, 17664 },
        { "IQ3_S-imatrix.gguf", QP_GGML_IQ3_S, decode_iq3_s, 0.14044, 20480 },
        { "TQ1_0-imatrix.gguf", QP_GGML_TQ1_0, decode_tq1_0, 0.77377, 20480 },
        { "TQ2_0-imatrix.gguf", QP_GGML_TQ2_0, decode_tq2_0, 0.77377, 20480 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t blocks;
        const double e = check_oracle(cases[i].file, cases[i].t, cases[i].decode, &blocks);
        print_message("%-20s %zu blocks decoded identically, relative RMS error %.5f (measured %.5f)\n",
                      cases[i].file, blocks, e, cases[i].measured);
        assert_true(blocks == cases[i].blocks);   /* --pure: 5.2M weights, all of them in these types */
        assert_true(e > 0.85 * cases[i].measured && e < 1.15 * cases[i].measured);
    }
    /* IQ2_S: no --pure file (llama.cpp refuses it here); the IQ2_M mix's
     * IQ2_S tensors (attn_q, attn_k and the ffn of all 6 layers) */
    size_t blocks;
    const double e = check_oracle("mix-IQ2_M.gguf", QP_GGML_IQ2_S, decode_iq2_s, &blocks);
    print_message("mix-IQ2_M.gguf IQ2_S %zu blocks decoded identically, relative RMS error %.5f\n", blocks, e);
    assert_true(blocks == 16128);
    assert_true(e > 0.85 * 0.24952 && e < 1.15 * 0.24952);   /* measured once */
    /* IQ1_S: no --pure file either; the IQ1_S mix's 30 IQ1_S tensors */
    const double e1 = check_oracle("mix-IQ1_S.gguf", QP_GGML_IQ1_S, decode_iq1_s, &blocks);
    print_message("mix-IQ1_S.gguf IQ1_S %zu blocks decoded identically, relative RMS error %.5f\n", blocks, e1);
    assert_true(blocks == IQ1S_BLOCKS);
    assert_true(e1 > 0.85 * IQ1S_ERR && e1 < 1.15 * IQ1S_ERR);   /* measured once */
    const double e2 = check_oracle("IQ1_M-imatrix.gguf", QP_GGML_IQ1_M, decode_iq1_m, &blocks);
    print_message("IQ1_M-imatrix.gguf %zu blocks decoded identically, relative RMS error %.5f\n", blocks, e2);
    assert_true(blocks == 20480);
    assert_true(e2 > 0.85 * IQ1M_ERR && e2 < 1.15 * IQ1M_ERR);   /* measured once */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layouts),
        cmocka_unit_test(test_oracle_decode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
