/* Internal to quant/: ggml's block layouts and the building blocks of its
 * reference quantizers (llama.cpp commit c392e50, ggml/src/ggml-quants.c).
 *
 * Byte identity with llama.cpp depends on doing the SAME float operations in
 * the SAME order as ggml's C code: every accumulation below is sequential
 * over the elements, products are written with ggml's association
 * ((w*x)*l, not w*(x*l)), and the build uses -ffp-contract=off so that no
 * multiply-add is fused.  Do not "simplify" an expression here without
 * re-running tests/quant: a one-ulp change flips quantized values. */
#ifndef QP_QUANT_GGML_IMPL_H
#define QP_QUANT_GGML_IMPL_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/tensor.h"
#include "quant/qtypes.h"

#define QP_QK 32          /* legacy block: Q4_0 … Q8_0, IQ4_NL */
#define QP_QK_K 256       /* k-quant super-block */
#define QP_GROUP_MAX_EPS 1e-15f

#define QP_MIN(a, b) ((a) < (b) ? (a) : (b))
#define QP_MAX(a, b) ((a) > (b) ? (a) : (b))

/* ---- block layouts (little-endian, no padding; fp16 fields are raw bits) ---- */
typedef struct { uint16_t d; uint8_t qs[16]; } qp_block_q4_0;                       /* 18 B */
typedef struct { uint16_t d, m; uint8_t qs[16]; } qp_block_q4_1;                    /* 20 B */
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } qp_block_q5_0;        /* 22 B */
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; } qp_block_q5_1;     /* 24 B */
typedef struct { uint16_t d; int8_t qs[32]; } qp_block_q8_0;                        /* 34 B */
typedef struct { uint16_t d; uint8_t qs[16]; } qp_block_iq4_nl;                     /* 18 B */
/* x = d·(sc&15)·q − dmin·(sc>>4), q 2-bit; scales[16] per 16 weights */
typedef struct { uint8_t scales[16]; uint8_t qs[64]; uint16_t d, dmin; } qp_block_q2_K;   /* 84 B */
/* 3-bit: low 2 bits in qs, high bit in hmask; 16 six-bit scales in 12 bytes */
typedef struct { uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; uint16_t d; } qp_block_q3_K; /* 110 B */
/* 8 sub-blocks of 32: six-bit scale and min each, packed in 12 bytes */
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; } qp_block_q4_K; /* 144 B */
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; } qp_block_q5_K; /* 176 B */
/* 16 sub-blocks of 16, int8 scales, 6-bit quants (4 low in ql, 2 high in qh) */
typedef struct { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; } qp_block_q6_K; /* 210 B */
/* IQ4_NL's table over 8 sub-blocks of 32, each with a 6-bit signed scale
 * (stored +32): low 4 bits in scales_l (two per byte), high 2 in scales_h */
typedef struct { uint16_t d; uint16_t scales_h; uint8_t scales_l[4]; uint8_t qs[128]; } qp_block_iq4_xs; /* 136 B */
/* ternary {-1,0,1}·d: 240 trits five per byte in qs (base 3, scaled to
 * 0..255 so that a trit is read back by a multiply), 16 trits four per byte in qh */
typedef struct { uint8_t qs[48]; uint8_t qh[4]; uint16_t d; } qp_block_tq1_0;        /* 54 B */
/* ternary {-1,0,1}·d as 2-bit fields (value + 1), four per byte */
typedef struct { uint8_t qs[64]; uint16_t d; } qp_block_tq2_0;                       /* 66 B */
/* 8 sub-blocks of 32: qs[0..64) grid indices (4 weights each), then 8 u32
 * of 4×7 sign bits + a 4-bit scale (ggml_iq3xxs.c) */
typedef struct { uint16_t d; uint8_t qs[96]; } qp_block_iq3_xxs;                     /* 98 B */
/* 8 sub-blocks of 32: two u32 each (4 grid indices; 4×7 sign bits + a
 * 4-bit scale) (ggml_iq2xs.c) */
typedef struct { uint16_t d; uint16_t qs[32]; } qp_block_iq2_xxs;                    /* 66 B */
/* 16 sub-blocks of 16: u16 per 8 weights (9-bit grid index, 7 sign bits),
 * 4-bit scales two per byte (ggml_iq2xs.c) */
typedef struct { uint16_t d; uint16_t qs[32]; uint8_t scales[8]; } qp_block_iq2_xs;  /* 74 B */
/* 8 sub-blocks of 32: 9-bit grid indices (qs low bytes, qh high bits), 256
 * sign bits, 4-bit scales two per byte (ggml_iq3s.c) */
typedef struct { uint16_t d; uint8_t qs[64]; uint8_t qh[8]; uint8_t signs[32]; uint8_t scales[4]; } qp_block_iq3_s; /* 110 B */
/* 32 groups of 8: qs[0..32) low bytes of 10-bit grid indices, qs[32..64)
 * signs, qh[8] high bits, 16 4-bit scales (ggml_iq2s.c) */
typedef struct { uint16_t d; uint8_t qs[64]; uint8_t qh[8]; uint8_t scales[8]; } qp_block_iq2_s;   /* 82 B */
/* 8 sub-blocks of 32: qs low bytes of 11-bit grid indices; qh u16 per
 * sub-block: 4×3 high bits, 3-bit scale, shift sign (ggml_iq1s.c) */
typedef struct { uint16_t d; uint8_t qs[32]; uint16_t qh[8]; } qp_block_iq1_s;      /* 50 B */
/* 16 sub-blocks of 16: qs low bytes; qh per 16: 2×(3 high bits, shift
 * sign); scales u16[4]: 3-bit scales and the fp16 super-scale's nibbles
 * in bits 12..15 (ggml_iq1s.c) */
typedef struct { uint8_t qs[32]; uint8_t qh[16]; uint8_t scales[8]; } qp_block_iq1_m; /* 56 B */

_Static_assert(sizeof(qp_block_q4_0) == 18, "q4_0 layout");
_Static_assert(sizeof(qp_block_q4_1) == 20, "q4_1 layout");
_Static_assert(sizeof(qp_block_q5_0) == 22, "q5_0 layout");
_Static_assert(sizeof(qp_block_q5_1) == 24, "q5_1 layout");
_Static_assert(sizeof(qp_block_q8_0) == 34, "q8_0 layout");
_Static_assert(sizeof(qp_block_iq4_nl) == 18, "iq4_nl layout");
_Static_assert(sizeof(qp_block_q2_K) == 84, "q2_K layout");
_Static_assert(sizeof(qp_block_q3_K) == 110, "q3_K layout");
_Static_assert(sizeof(qp_block_q4_K) == 144, "q4_K layout");
_Static_assert(sizeof(qp_block_q5_K) == 176, "q5_K layout");
_Static_assert(sizeof(qp_block_q6_K) == 210, "q6_K layout");
_Static_assert(sizeof(qp_block_iq4_xs) == 136, "iq4_xs layout");
_Static_assert(sizeof(qp_block_tq1_0) == 54, "tq1_0 layout");
_Static_assert(sizeof(qp_block_tq2_0) == 66, "tq2_0 layout");
_Static_assert(sizeof(qp_block_iq3_xxs) == 98, "iq3_xxs layout");
_Static_assert(sizeof(qp_block_iq2_xxs) == 66, "iq2_xxs layout");
_Static_assert(sizeof(qp_block_iq2_xs) == 74, "iq2_xs layout");
_Static_assert(sizeof(qp_block_iq3_s) == 110, "iq3_s layout");
_Static_assert(sizeof(qp_block_iq2_s) == 82, "iq2_s layout");
_Static_assert(sizeof(qp_block_iq1_s) == 50, "iq1_s layout");
_Static_assert(sizeof(qp_block_iq1_m) == 56, "iq1_m layout");

#define QP_FP16(x) qp_f32_to_f16(x)      /* = GGML_FP32_TO_FP16 (round to nearest even) */
#define QP_FP32(h) qp_f16_to_f32(h)

/* ggml's nearest_int: round half to even via the 1.5·2^23 trick (exact for
 * |f| <= 2^22; larger inputs give the same garbage ggml gets). */
/* The first element of largest magnitude of x[n], with its sign (ggml's
 * symmetric scales map it to the lowest level exactly); *amax = |it|. */
static inline float qp_first_absmax(const float *x, int n, float *amax)
{
    float max = 0, a = 0;
    for (int i = 0; i < n; ++i) {
        if (fabsf(x[i]) > a) {
            a = fabsf(x[i]);
            max = x[i];
        }
    }
    *amax = a;
    return max;
}

static inline int qp_nearest_int(float f)
{
    float v = f + 12582912.f;
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

/* float -> int32 as x86's cvttss2si, which is what ggml's C casts
 * (int8_t)(float) compile to: truncation toward zero, INT32_MIN for NaN and
 * out-of-range values.  Keeps the reference well-defined C in the one case
 * where ggml's cast is undefined — a block so small that 1/d overflows to
 * inf — and gives there the bytes llama.cpp gives on x86 (the low byte of
 * INT32_MIN, 0). */
static inline int32_t qp_trunc_i32(float v)
{
    if (v >= -2147483648.0f && v < 2147483648.0f)
        return (int32_t)v;
    return INT32_MIN;
}

/* Six-bit scale and min of sub-block j (of 8) from the 12-byte Q4_K/Q5_K
 * scales field (get_scale_min_k4). */
static inline void qp_get_scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m)
{
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
    }
}

/* The four IQ4_NL levels tables share (kvalues_iq4nl). */
extern const int8_t qp_kvalues_iq4nl[16];

/* ---- scale searches (ggml_search.c); names and arguments follow ggml ---- */
/* make_qx_quants with rmse_type 1: symmetric levels L = l + nmax in
 * [0, 2·nmax), weights qw or x² when qw is NULL; returns the scale. */
float qp_make_qx_quants(int n, int nmax, const float *x, int8_t *L, const float *qw);
/* make_q3_quants(…, do_rmse = true): weights x², coordinate-descent refinement. */
float qp_make_q3_quants(int n, int nmax, const float *x, int8_t *L);
/* make_qkx2_quants: asymmetric levels [0, nmax] with a min; *the_min = −min. */
float qp_make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                          float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep, bool use_mad);
/* make_qkx3_quants: same search, weights x² when NULL. */
float qp_make_qkx3_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                          float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep, bool use_mad);
/* make_qp_quants: positive values to [0, nmax] (scales of scales). */
float qp_make_qp_quants(int n, int nmax, const float *x, uint8_t *L, const float *quant_weights);
/* best_index_int8 as of c392e50 (binary search; ties go up). */
int qp_best_index_int8(int n, const int8_t *val, float x);

/* ---- row quantizers: x[n] -> blocks; n is a multiple of the block ----
 * _ref = quantize_row_<t>_ref; _imat = the quantize_<t> path with quant
 * weights (qw = imatrix, n floats; never NULL). */
void qp_q4_0_ref(const float *x, void *y, int64_t n);
void qp_q4_1_ref(const float *x, void *y, int64_t n);
void qp_q5_0_ref(const float *x, void *y, int64_t n);
void qp_q5_1_ref(const float *x, void *y, int64_t n);
void qp_q8_0_ref(const float *x, void *y, int64_t n);
void qp_q4_0_imat(const float *x, void *y, int64_t n, const float *qw);
void qp_q4_1_imat(const float *x, void *y, int64_t n, const float *qw);
void qp_q5_0_imat(const float *x, void *y, int64_t n, const float *qw);
void qp_q5_1_imat(const float *x, void *y, int64_t n, const float *qw);

void qp_q2_K_ref(const float *x, void *y, int64_t n);
void qp_q3_K_ref(const float *x, void *y, int64_t n);
void qp_q4_K_ref(const float *x, void *y, int64_t n);
void qp_q5_K_ref(const float *x, void *y, int64_t n);
void qp_q6_K_ref(const float *x, void *y, int64_t n);
void qp_q2_K_imat(const float *x, void *y, int64_t n, const float *qw);
void qp_q3_K_imat(const float *x, void *y, int64_t n, const float *qw);
void qp_q4_K_imat(const float *x, void *y, int64_t n, const float *qw);
void qp_q5_K_imat(const float *x, void *y, int64_t n, const float *qw);
void qp_q6_K_imat(const float *x, void *y, int64_t n, const float *qw);

/* IQ4_NL as llama-quantize produces it (quantize_iq4_nl: ntry 7); qw may be NULL. */
void qp_iq4_nl_row(const float *x, void *y, int64_t n, const float *qw);
/* The scale quantize_row_iq4_nl_impl picks for one 32-weight block (ntry 7):
 * a start at -max/values[0], then 15 trial scales (itry-127)/max, keeping
 * the best weighted fit; max = the block's first element of largest
 * magnitude (|max| >= GROUP_MAX_EPS), weight[32] the error weights. */
float qp_iq4_block_scale(const float *xb, const float *weight, float max);
/* IQ4_XS as llama-quantize produces it (quantize_iq4_xs = quantize_row_iq4_nl_impl
 * with super-block 256, blocks of 32, ntry 7); qw (n floats) may be NULL. */
void qp_iq4_xs_row(const float *x, void *y, int64_t n, const float *qw);
/* IQ3_XXS as llama-quantize produces it (quantize_iq3_xxs); qw may be NULL.
 * qp_iq3xxs_grid: ggml-common.h's iq3xxs_grid (dequantization values). */
void qp_iq3_xxs_row(const float *x, void *y, int64_t n, const float *qw);
void qp_iq3_xxs_fast(const float *x, void *y, int64_t n, const float *qw);   /* same bytes */
extern const uint32_t qp_iq3xxs_grid[256];
/* IQ2_XXS / IQ2_XS as llama-quantize produces them (quantize_iq2_xxs /
 * quantize_iq2_xs); qw (n floats) must not be NULL: these types exist only
 * with an importance matrix.  The grids: ggml-common.h's iq2xxs_grid /
 * iq2xs_grid (dequantization values). */
void qp_iq2_xxs_row(const float *x, void *y, int64_t n, const float *qw);
void qp_iq2_xs_row(const float *x, void *y, int64_t n, const float *qw);
void qp_iq2_xxs_fast(const float *x, void *y, int64_t n, const float *qw);   /* same bytes */
void qp_iq2_xs_fast(const float *x, void *y, int64_t n, const float *qw);    /* same bytes */
extern const uint64_t qp_iq2xxs_grid[256];
extern const uint64_t qp_iq2xs_grid[512];
/* IQ3_S as llama-quantize produces it (quantize_iq3_s); qw may be NULL.
 * qp_iq3s_grid: ggml-common.h's iq3s_grid (dequantization values). */
void qp_iq3_s_row(const float *x, void *y, int64_t n, const float *qw);
void qp_iq3_s_fast(const float *x, void *y, int64_t n, const float *qw);   /* same bytes */
extern const uint32_t qp_iq3s_grid[512];
/* IQ2_S as llama-quantize produces it (quantize_iq2_s); qw may be NULL.
 * qp_iq2s_grid: ggml-common.h's iq2s_grid (dequantization values). */
void qp_iq2_s_row(const float *x, void *y, int64_t n, const float *qw);
void qp_iq2_s_fast(const float *x, void *y, int64_t n, const float *qw);   /* same bytes */
extern const uint64_t qp_iq2s_grid[1024];
/* IQ1_S / IQ1_M as llama-quantize produces them (quantize_iq1_s /
 * quantize_iq1_m); IQ1_S needs qw (n floats, not NULL), IQ1_M takes NULL.
 * qp_iq1s_grid: ggml-common.h's iq1s_grid (coordinates -1, 0, 1). */
void qp_iq1_s_row(const float *x, void *y, int64_t n, const float *qw);
void qp_iq1_m_row(const float *x, void *y, int64_t n, const float *qw);
void qp_iq1_s_fast(const float *x, void *y, int64_t n, const float *qw);   /* same bytes */
void qp_iq1_m_fast(const float *x, void *y, int64_t n, const float *qw);   /* same bytes */
extern const uint64_t qp_iq1s_grid[2048];
/* TQ1_0 / TQ2_0: quantize_row_tq*_ref (llama-quantize ignores the imatrix). */
void qp_tq1_0_ref(const float *x, void *y, int64_t n);
void qp_tq2_0_ref(const float *x, void *y, int64_t n);

/* Q4_K / Q5_K / Q6_K steps shared by the reference and the fast kernels
 * (ggml_kquants.c).  _finish = requantize with the stored scales + pack. */
void qp_q4_K_finish(const float *x, qp_block_q4_K *y, uint8_t *L);
void qp_q5_K_finish(const float *x, qp_block_q5_K *y, uint8_t *L);
void qp_q4_K_pack(qp_block_q4_K *y, const uint8_t *L);
void qp_q5_K_pack(qp_block_q5_K *y, const uint8_t *L);
/* K4/K5 reference scale step: 6-bit scales/mins relative to the largest. */
void qp_k4_ref_scales(uint8_t *sc12, uint16_t *dh, uint16_t *dminh, const float *scales, const float *mins);
/* Q6_K: int8 sub-block scales and d from the 16 search scales; 0 when the
 * block is all-zero (then fully written), 1 when requant + pack must follow. */
int qp_q6_K_set_scales(qp_block_q6_K *y, const float *scales);
void qp_q6_K_pack(qp_block_q6_K *y, const int8_t *L);
void qp_q6_K_finish(const float *x, qp_block_q6_K *y, int8_t *L, const float *scales);

/* ---- fast kernels (quant_fast*.c): same bytes as the _ref row functions ---- */
void qp_q8_0_fast(const float *x, void *y, int64_t n);
void qp_q4_0_fast(const float *x, void *y, int64_t n);
void qp_q4_1_fast(const float *x, void *y, int64_t n);
void qp_q5_0_fast(const float *x, void *y, int64_t n);
void qp_q5_1_fast(const float *x, void *y, int64_t n);
void qp_q4_K_fast(const float *x, void *y, int64_t n);
void qp_q5_K_fast(const float *x, void *y, int64_t n);
void qp_q6_K_fast(const float *x, void *y, int64_t n);
void qp_iq4_xs_fast(const float *x, void *y, int64_t n, const float *qw);   /* qw may be NULL */
void qp_tq1_0_fast(const float *x, void *y, int64_t n);
void qp_tq2_0_fast(const float *x, void *y, int64_t n);

/* ---- qtypes.c: argument checks and the per-row dispatch ---- */
/* qp_quantize*'s argument checks except the weights' finiteness (one-line
 * QP_EUSAGE messages). */
int qp_quant_check(qp_ggml_type t, const float *src, const void *dst, int64_t nrows, int64_t n_per_row,
                   const float *imatrix);
/* Checks weights of rows [row0, row1) only: 0 or the first bad (row, col). */
int qp_quant_find_nonfinite(const float *src, int64_t row0, int64_t row1, int64_t n_per_row,
                            int64_t *bad_row, int64_t *bad_col);
int qp_quant_nonfinite_error(qp_ggml_type t, const float *src, int64_t row, int64_t col, int64_t n_per_row);
/* Quantizes rows [row0, row1) (already checked): imatrix path when the type
 * uses one, else the fast kernel when fast != 0 and there is one, else ref. */
void qp_quant_rows(qp_ggml_type t, const float *src, void *dst, int64_t row0, int64_t row1, int64_t n_per_row,
                   const float *imatrix, int fast);

/* Blocks (or plain elements) of type t covering n weights -> dst[n];
 * t and n already validated by the caller. */
void qp_ggml_dequantize_blocks(qp_ggml_type t, const void *src, float *dst, int64_t n);

#endif
