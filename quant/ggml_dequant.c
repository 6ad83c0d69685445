/* Dequantization of ggml block types, with ggml's expressions (same
 * association, so the f32 values equal ggml's dequantize_row_* bit for bit).
 *
 * Shapes: blocks covering n weights -> y[n] f32. */
#include "quant/ggml_impl.h"

static void dq_q4_0(const qp_block_q4_0 *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += QP_QK) {
        const float d = QP_FP32(x[i].d);
        for (int j = 0; j < QP_QK / 2; ++j) {
            const int x0 = (x[i].qs[j] & 0x0F) - 8;
            const int x1 = (x[i].qs[j] >> 4) - 8;
            y[j] = x0 * d;
            y[j + QP_QK / 2] = x1 * d;
        }
    }
}

static void dq_q4_1(const qp_block_q4_1 *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += QP_QK) {
        const float d = QP_FP32(x[i].d), m = QP_FP32(x[i].m);
        for (int j = 0; j < QP_QK / 2; ++j) {
            const int x0 = x[i].qs[j] & 0x0F;
            const int x1 = x[i].qs[j] >> 4;
            y[j] = x0 * d + m;
            y[j + QP_QK / 2] = x1 * d + m;
        }
    }
}

static uint32_t load_qh(const uint8_t qh[4])
{
    uint32_t v;
    memcpy(&v, qh, 4);
    return v;
}

static void dq_q5_0(const qp_block_q5_0 *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += QP_QK) {
        const float d = QP_FP32(x[i].d);
        const uint32_t qh = load_qh(x[i].qh);
        for (int j = 0; j < QP_QK / 2; ++j) {
            const uint8_t xh_0 = (uint8_t)(((qh >> (j + 0)) << 4) & 0x10);
            const uint8_t xh_1 = (uint8_t)(((qh >> (j + 12))) & 0x10);
            const int32_t x0 = ((x[i].qs[j] & 0x0F) | xh_0) - 16;
            const int32_t x1 = ((x[i].qs[j] >> 4) | xh_1) - 16;
            y[j] = x0 * d;
            y[j + QP_QK / 2] = x1 * d;
        }
    }
}

static void dq_q5_1(const qp_block_q5_1 *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += QP_QK) {
        const float d = QP_FP32(x[i].d), m = QP_FP32(x[i].m);
        const uint32_t qh = load_qh(x[i].qh);
        for (int j = 0; j < QP_QK / 2; ++j) {
            const uint8_t xh_0 = (uint8_t)(((qh >> (j + 0)) << 4) & 0x10);
            const uint8_t xh_1 = (uint8_t)(((qh >> (j + 12))) & 0x10);
            const int x0 = (x[i].qs[j] & 0x0F) | xh_0;
            const int x1 = (x[i].qs[j] >> 4) | xh_1;
            y[j] = x0 * d + m;
            y[j + QP_QK / 2] = x1 * d + m;
        }
    }
}

/* Eight weights at a time (GCC vector extensions: the -O2 vectoriser left
 * this loop scalar, and quantize's error metric dequantizes every Q8_0
 * row): int8 -> f32 is exact and each product is the one multiply of the
 * scalar expression, so the values are the same bits. */
typedef int8_t dq_i8x8 __attribute__((vector_size(8)));
typedef int32_t dq_i32x8 __attribute__((vector_size(32)));
typedef float dq_f32x8 __attribute__((vector_size(32)));

static void dq_q8_0(const qp_block_q8_0 *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += QP_QK) {
        const float d = QP_FP32(x[i].d);
        const dq_f32x8 dv = {d, d, d, d, d, d, d, d};
        for (int j = 0; j < QP_QK; j += 8) {
            dq_i8x8 q;
            memcpy(&q, x[i].qs + j, sizeof q);
            /* widened first: GCC 12 converts int8 -> f32 one lane at a time */
            dq_f32x8 v = __builtin_convertvector(__builtin_convertvector(q, dq_i32x8), dq_f32x8) * dv;
            memcpy(y + j, &v, sizeof v);
        }
    }
}

static void dq_iq4_nl(const qp_block_iq4_nl *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += QP_QK) {
        const float d = QP_FP32(x[i].d);
        for (int j = 0; j < QP_QK / 2; ++j) {
            y[j] = d * qp_kvalues_iq4nl[x[i].qs[j] & 0xf];
            y[j + QP_QK / 2] = d * qp_kvalues_iq4nl[x[i].qs[j] >> 4];
        }
    }
}

/* IQ4_XS: sub-block scale dl = d·(6-bit scale − 32), then IQ4_NL's table */
static void dq_iq4_xs(const qp_block_iq4_xs *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        const float d = QP_FP32(x[i].d);
        const uint8_t *qs = x[i].qs;
        for (int ib = 0; ib < QP_QK_K / 32; ++ib, y += 32, qs += 16) {
            const int ls = ((x[i].scales_l[ib / 2] >> 4 * (ib % 2)) & 0xf) | (((x[i].scales_h >> 2 * ib) & 3) << 4);
            const float dl = d * (ls - 32);
            for (int j = 0; j < 16; ++j) {
                y[j] = dl * qp_kvalues_iq4nl[qs[j] & 0xf];
                y[j + 16] = dl * qp_kvalues_iq4nl[qs[j] >> 4];
            }
        }
    }
}

/* IQ3_XXS: sub-block scale db = d·(0.5 + l)·0.5; four grid bytes per index;
 * the sign byte is 7 stored bits plus their parity (ksigns_iq2xs) */
static void dq_iq3_xxs(const qp_block_iq3_xxs *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        const float d = QP_FP32(x[i].d);
        const uint8_t *qs = x[i].qs;
        for (int ib = 0; ib < 8; ++ib, qs += 8) {
            uint32_t aux32;
            memcpy(&aux32, x[i].qs + 64 + 4 * ib, 4);
            const float db = d * (0.5f + (aux32 >> 28)) * 0.5f;
            for (int l = 0; l < 4; ++l, y += 8) {
                const unsigned s7 = (aux32 >> 7 * l) & 127;
                const unsigned signs = s7 | (unsigned)(__builtin_popcount(s7) & 1) << 7;
                for (int j = 0; j < 4; ++j) {
                    const uint8_t g1 = (uint8_t)(qp_iq3xxs_grid[qs[2 * l + 0]] >> 8 * j);
                    const uint8_t g2 = (uint8_t)(qp_iq3xxs_grid[qs[2 * l + 1]] >> 8 * j);
                    y[j + 0] = db * g1 * (signs & (1u << j) ? -1.f : 1.f);
                    y[j + 4] = db * g2 * (signs & (1u << (j + 4)) ? -1.f : 1.f);
                }
            }
        }
    }
}

/* IQ3_S: sub-block scale db = d·(1 + 2l); 9-bit grid indices (bit 8 from
 * qh), four grid bytes per index; one stored sign bit per weight */
static void dq_iq3_s(const qp_block_iq3_s *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        const float d = QP_FP32(x[i].d);
        for (int ib = 0; ib < 8; ++ib) {
            const float db = d * (float)(1 + 2 * ((x[i].scales[ib / 2] >> 4 * (ib % 2)) & 0xf));
            const uint8_t *qs = x[i].qs + 8 * ib, *signs = x[i].signs + 4 * ib;
            for (int l = 0; l < 4; ++l, y += 8) {
                const uint32_t g1 = qp_iq3s_grid[qs[2 * l + 0] | ((x[i].qh[ib] << (8 - 2 * l)) & 256)];
                const uint32_t g2 = qp_iq3s_grid[qs[2 * l + 1] | ((x[i].qh[ib] << (7 - 2 * l)) & 256)];
                for (int j = 0; j < 4; ++j) {
                    y[j + 0] = db * (uint8_t)(g1 >> 8 * j) * (signs[l] & (1u << j) ? -1.f : 1.f);
                    y[j + 4] = db * (uint8_t)(g2 >> 8 * j) * (signs[l] & (1u << (j + 4)) ? -1.f : 1.f);
                }
            }
        }
    }
}

/* IQ1_S: per 32, dl = d·(2l+1) and a shift ±IQ1S_DELTA; 11-bit indices */
static void dq_iq1_s(const qp_block_iq1_s *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        const float d = QP_FP32(x[i].d);
        for (int ib = 0; ib < 8; ++ib) {
            const unsigned qh = x[i].qh[ib];
            const float dl = d * (2 * ((qh >> 12) & 7) + 1);
            const float delta = qh & 0x8000 ? -0.125f : 0.125f;
            for (int l = 0; l < 4; ++l, y += 8) {
                const uint64_t g = qp_iq1s_grid[x[i].qs[4 * ib + l] | (((qh >> 3 * l) & 7) << 8)];
                for (int j = 0; j < 8; ++j)
                    y[j] = dl * ((int8_t)(uint8_t)(g >> 8 * j) + delta);
            }
        }
    }
}

/* IQ1_M: per 16, dl = d·(2l+1); a shift per 8; d from the scales' top nibbles */
static void dq_iq1_m(const qp_block_iq1_m *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        uint16_t sc[4];
        memcpy(sc, x[i].scales, 8);
        const uint16_t s = (uint16_t)((sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000));
        const float d = QP_FP32(s);
        for (int ib = 0; ib < 16; ++ib) {
            const float dl = d * (2 * ((sc[ib / 4] >> 3 * (ib % 4)) & 7) + 1);
            const unsigned qh = x[i].qh[ib];
            for (int l = 0; l < 2; ++l, y += 8) {
                const uint64_t g = qp_iq1s_grid[x[i].qs[2 * ib + l] | ((qh << (8 - 4 * l)) & 0x700)];
                const float delta = qh & (l ? 0x80 : 0x08) ? -0.125f : 0.125f;
                for (int j = 0; j < 8; ++j)
                    y[j] = dl * ((int8_t)(uint8_t)(g >> 8 * j) + delta);
            }
        }
    }
}

/* IQ2_S: scales db = d·(0.5 + l)·0.25 per 16 weights; 10-bit grid indices
 * (bits 8, 9 from qh), eight grid bytes per index; one sign bit per weight */
static void dq_iq2_s(const qp_block_iq2_s *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        const float d = QP_FP32(x[i].d);
        for (int ib32 = 0; ib32 < 8; ++ib32) {
            const float db[2] = { d * (0.5f + (x[i].scales[ib32] & 0xf)) * 0.25f,
                                  d * (0.5f + (x[i].scales[ib32] >> 4)) * 0.25f };
            for (int l = 0; l < 4; ++l, y += 8) {
                const int g = 4 * ib32 + l;
                const uint64_t grid = qp_iq2s_grid[x[i].qs[g] | ((x[i].qh[ib32] << (8 - 2 * l)) & 0x300)];
                const uint8_t signs = x[i].qs[32 + g];
                for (int j = 0; j < 8; ++j)
                    y[j] = db[l / 2] * (uint8_t)(grid >> 8 * j) * (signs & (1u << j) ? -1.f : 1.f);
            }
        }
    }
}

/* IQ2_XXS / IQ2_XS: db = d·(0.5 + l)·0.25; eight grid bytes per index; the
 * sign byte is 7 stored bits plus their parity (ksigns_iq2xs) */
static inline void iq2_group(float *y, float db, uint64_t g, unsigned s7)
{
    const unsigned signs = s7 | (unsigned)(__builtin_popcount(s7) & 1) << 7;
    for (int j = 0; j < 8; ++j)
        y[j] = db * (uint8_t)(g >> 8 * j) * (signs & (1u << j) ? -1.f : 1.f);
}

static void dq_iq2_xxs(const qp_block_iq2_xxs *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        const float d = QP_FP32(x[i].d);
        for (int ib = 0; ib < 8; ++ib) {
            uint32_t aux[2];
            memcpy(aux, x[i].qs + 4 * ib, 8);
            const float db = d * (0.5f + (aux[1] >> 28)) * 0.25f;
            for (int l = 0; l < 4; ++l, y += 8)
                iq2_group(y, db, qp_iq2xxs_grid[(aux[0] >> 8 * l) & 255], (aux[1] >> 7 * l) & 127);
        }
    }
}

static void dq_iq2_xs(const qp_block_iq2_xs *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        const float d = QP_FP32(x[i].d);
        for (int ib = 0; ib < 8; ++ib) {
            const float db0 = d * (0.5f + (x[i].scales[ib] & 0xf)) * 0.25f;
            const float db1 = d * (0.5f + (x[i].scales[ib] >> 4)) * 0.25f;
            for (int l = 0; l < 4; ++l, y += 8) {
                const uint16_t q = x[i].qs[4 * ib + l];
                iq2_group(y, l < 2 ? db0 : db1, qp_iq2xs_grid[q & 511], q >> 9);
            }
        }
    }
}

/* One TQ1_0 trit: byte q holds ceil(base-3 number·256/243); multiplying by
 * 3^k (mod 256) brings trit k to the top, ·3 >> 8 reads it. */
static inline float tq1_value(uint8_t byte, uint8_t pow3, float d)
{
    const uint8_t q = (uint8_t)(byte * pow3);
    const int16_t xi = (int16_t)(((uint16_t)q * 3) >> 8);
    return (float)(xi - 1) * d;
}

static void dq_tq1_0(const qp_block_tq1_0 *x, float *y, int64_t nb)
{
    static const uint8_t pow3[5] = { 1, 3, 9, 27, 81 };
    for (int64_t i = 0; i < nb; i++) {
        const float d = QP_FP32(x[i].d);
        for (int n = 0; n < 5; ++n)
            for (int m = 0; m < 32; ++m)
                *y++ = tq1_value(x[i].qs[m], pow3[n], d);
        for (int n = 0; n < 5; ++n)
            for (int m = 0; m < 16; ++m)
                *y++ = tq1_value(x[i].qs[32 + m], pow3[n], d);
        for (int n = 0; n < 4; ++n)
            for (int j = 0; j < 4; ++j)
                *y++ = tq1_value(x[i].qh[j], pow3[n], d);
    }
}

static void dq_tq2_0(const qp_block_tq2_0 *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        const float d = QP_FP32(x[i].d);
        for (int j = 0; j < 64; j += 32)
            for (int l = 0; l < 4; ++l)
                for (int m = 0; m < 32; ++m)
                    *y++ = (float)(((x[i].qs[j + m] >> (l * 2)) & 3) - 1) * d;
    }
}

static void dq_q2_K(const qp_block_q2_K *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        const float d = QP_FP32(x[i].d), min = QP_FP32(x[i].dmin);
        const uint8_t *q = x[i].qs;
        int is = 0;
        for (int n = 0; n < QP_QK_K; n += 128, q += 32) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int half = 0; half < 2; half++) {
                    const uint8_t sc = x[i].scales[is++];
                    const float dl = d * (sc & 0xF), ml = min * (sc >> 4);
                    for (int l = 0; l < 16; ++l)
                        *y++ = dl * ((int8_t)((q[l + 16 * half] >> shift) & 3)) - ml;
                }
            }
        }
    }
}

static void dq_q3_K(const qp_block_q3_K *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        const float d_all = QP_FP32(x[i].d);
        const uint8_t *q = x[i].qs, *hm = x[i].hmask;
        /* unpack the 16 six-bit scales */
        int8_t scales[16];
        for (int j = 0; j < 16; j++) {
            int lo = j < 8 ? x[i].scales[j] & 0xF : x[i].scales[j - 8] >> 4;
            int hi = (x[i].scales[8 + j % 4] >> (2 * (j / 4))) & 3;
            scales[j] = (int8_t)(lo | (hi << 4));
        }
        uint8_t m = 1;
        int is = 0;
        for (int n = 0; n < QP_QK_K; n += 128, q += 32) {
            for (int shift = 0; shift < 8; shift += 2, m = (uint8_t)(m << 1)) {
                for (int half = 0; half < 2; half++) {
                    const float dl = d_all * (scales[is++] - 32);
                    for (int l = 0; l < 16; ++l) {
                        const int k = l + 16 * half;
                        *y++ = dl * ((int8_t)((q[k] >> shift) & 3) - ((hm[k] & m) ? 0 : 4));
                    }
                }
            }
        }
    }
}

static void dq_q4_K(const qp_block_q4_K *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *q = x[i].qs;
        const float d = QP_FP32(x[i].d), min = QP_FP32(x[i].dmin);
        int is = 0;
        for (int j = 0; j < QP_QK_K; j += 64, q += 32, is += 2) {
            uint8_t sc, m;
            qp_get_scale_min_k4(is + 0, x[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            qp_get_scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; ++l)
                *y++ = d1 * (q[l] & 0xF) - m1;
            for (int l = 0; l < 32; ++l)
                *y++ = d2 * (q[l] >> 4) - m2;
        }
    }
}

static void dq_q5_K(const qp_block_q5_K *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *ql = x[i].qs, *qh = x[i].qh;
        const float d = QP_FP32(x[i].d), min = QP_FP32(x[i].dmin);
        int is = 0;
        uint8_t u1 = 1, u2 = 2;
        for (int j = 0; j < QP_QK_K; j += 64, ql += 32, is += 2) {
            uint8_t sc, m;
            qp_get_scale_min_k4(is + 0, x[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            qp_get_scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; ++l)
                *y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; ++l)
                *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
            u1 = (uint8_t)(u1 << 2);
            u2 = (uint8_t)(u2 << 2);
        }
    }
}

static void dq_q6_K(const qp_block_q6_K *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        const float d = QP_FP32(x[i].d);
        const uint8_t *ql = x[i].ql, *qh = x[i].qh;
        const int8_t *sc = x[i].scales;
        for (int n = 0; n < QP_QK_K; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; ++l) {
                int is = l / 16;
                const int8_t q1 = (int8_t)(((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
                const int8_t q2 = (int8_t)(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
                const int8_t q3 = (int8_t)(((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
                const int8_t q4 = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
                y[l + 0] = d * sc[is + 0] * q1;
                y[l + 32] = d * sc[is + 2] * q2;
                y[l + 64] = d * sc[is + 4] * q3;
                y[l + 96] = d * sc[is + 6] * q4;
            }
        }
    }
}

void qp_ggml_dequantize_blocks(qp_ggml_type t, const void *src, float *dst, int64_t n)
{
    switch (t) {
    case QP_GGML_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        break;
    case QP_GGML_F16: {
        const uint8_t *s = src;
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            dst[i] = qp_f16_to_f32(h);
        }
        break;
    }
    case QP_GGML_BF16: {
        const uint8_t *s = src;
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            dst[i] = qp_bf16_to_f32(h);
        }
        break;
    }
    case QP_GGML_Q4_0: dq_q4_0(src, dst, n / QP_QK); break;
    case QP_GGML_Q4_1: dq_q4_1(src, dst, n / QP_QK); break;
    case QP_GGML_Q5_0: dq_q5_0(src, dst, n / QP_QK); break;
    case QP_GGML_Q5_1: dq_q5_1(src, dst, n / QP_QK); break;
    case QP_GGML_Q8_0: dq_q8_0(src, dst, n / QP_QK); break;
    case QP_GGML_IQ4_NL: dq_iq4_nl(src, dst, n / QP_QK); break;
    case QP_GGML_Q2_K: dq_q2_K(src, dst, n / QP_QK_K); break;
    case QP_GGML_Q3_K: dq_q3_K(src, dst, n / QP_QK_K); break;
    case QP_GGML_Q4_K: dq_q4_K(src, dst, n / QP_QK_K); break;
    case QP_GGML_Q5_K: dq_q5_K(src, dst, n / QP_QK_K); break;
    case QP_GGML_Q6_K: dq_q6_K(src, dst, n / QP_QK_K); break;
    case QP_GGML_IQ4_XS: dq_iq4_xs(src, dst, n / QP_QK_K); break;
    case QP_GGML_IQ3_XXS: dq_iq3_xxs(src, dst, n / QP_QK_K); break;
    case QP_GGML_IQ2_XXS: dq_iq2_xxs(src, dst, n / QP_QK_K); break;
    case QP_GGML_IQ2_XS: dq_iq2_xs(src, dst, n / QP_QK_K); break;
    case QP_GGML_IQ3_S: dq_iq3_s(src, dst, n / QP_QK_K); break;
    case QP_GGML_IQ2_S: dq_iq2_s(src, dst, n / QP_QK_K); break;
    case QP_GGML_IQ1_S: dq_iq1_s(src, dst, n / QP_QK_K); break;
    case QP_GGML_IQ1_M: dq_iq1_m(src, dst, n / QP_QK_K); break;
    case QP_GGML_TQ1_0: dq_tq1_0(src, dst, n / QP_QK_K); break;
    case QP_GGML_TQ2_0: dq_tq2_0(src, dst, n / QP_QK_K); break;
    default: break;   /* not in quant/qtypes.c's table: callers check qp_qtype_get() first */
    }
}
