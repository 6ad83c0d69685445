/* INT8 per-output-channel absmax quantization: the weight format of
 * LLM.int8() (bitsandbytes `int8_vectorwise_quant`, threshold 0, i.e.
 * without the outlier decomposition), as bnb's kernel computes it:
 *
 *   W      f32 [rows = out_features, cols = in_features], row-major
 *   absmax f32 [rows]        max |W[r][·]|  (bnb's SCB / row_stats)
 *   codes  i8  [rows, cols]  q = round_half_even(W · (127 / absmax)),
 *                            clamped to [−127, 127]; 0 for a row of zeros
 *   Ŵ      = (q · absmax) · (1/127)      all f32, the last factor being the
 *            f32 constant 7.874015718698502e-3 — bnb's int8_vectorwise_dequant
 * So the per-row scale is absmax/127; it is stored as the absmax itself, the
 * value a bnb checkpoint carries (SCB).  127/absmax is one f32 division per
 * row, then an f32 product per weight.  A row whose absmax is so small that
 * 127/absmax overflows f32 (a subnormal row) is pre-scaled by 2^64 (exact),
 * where bnb would produce NaN codes.
 *
 * Determinism: rows are independent; qp_int8_quantize (AVX2, threads over
 * fixed chunks of rows) is byte-identical to qp_int8_quantize_ref. */
#ifndef QP_QUANT_INT8_H
#define QP_QUANT_INT8_H

#include <stddef.h>
#include <stdint.h>

typedef struct qp_int8 qp_int8;

typedef struct {
    int64_t rows, cols;
    int8_t *codes;   /* [rows, cols] */
    float *absmax;   /* [rows] */
} qp_int8_view;

/* QP_EUSAGE for rows/cols < 1. */
int qp_int8_new(qp_int8 **out, int64_t rows, int64_t cols);
void qp_int8_free(qp_int8 *q);
void qp_int8_view_of(const qp_int8 *q, qp_int8_view *v);

/* w f32 [rows, cols].  QP_EUSAGE for a NaN/inf weight ("weight [R x C]: row
 * r, column c: weight is not finite; fix the checkpoint", the first in
 * row-major order whatever the thread count).  n_threads <= 0: one per CPU. */
int qp_int8_quantize_ref(qp_int8 *q, const float *w);
int qp_int8_quantize(qp_int8 *q, const float *w, int n_threads);

/* Ŵ f32 [rows, cols]. */
int qp_int8_dequantize(const qp_int8 *q, float *w);

/* 8 + 32/cols. */
double qp_int8_bits_per_weight(const qp_int8 *q);

/* Serialised form (little-endian), version 1:
 *   0 8 magic "QPINT8RW"   8 4 u32 version (1)   12 4 u32 0
 *  16 8 i64 rows           24 8 i64 cols          32 8 u64 payload bytes
 *  40 8 u64 payload checksum
 *  48   payload: codes i8[rows·cols], absmax f32[rows]
 * deserialize validates (codes != −128, absmax finite and >= 0, a zero row
 * has zero codes): QP_ECORRUPT, one line "WHAT: …". */
int qp_int8_serialize(const qp_int8 *q, void **out, size_t *len);
int qp_int8_deserialize(qp_int8 **out, const void *buf, size_t len, const char *what);

#endif
