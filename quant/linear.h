/* The "linear" integer representation of a weight matrix, shared by RTN
 * (here) and GPTQ / AWQ (which fill the same object): GPTQModel/AutoGPTQ's
 * grid, with the scales stored the way the exported checkpoints store them.
 *
 *   W      f32 [rows = out_features, cols = in_features], row-major
 *   codes  u8  [rows, cols]      one code per byte, 0 … maxq = 2^bits − 1
 *   scales u16 [rows, n_groups]  IEEE fp16 bits (GPTQ `scales`, AWQ `scales`)
 *   zeros  u8  [rows, n_groups]  0 … maxq (the raw zero point; GPTQ v1
 *                                 checkpoints store zero − 1)
 *   g_idx  i32 [cols]            group of each input column; default
 *                                 c / group_size, GPTQ act-order permutes it
 *
 *   Ŵ[r][c] = (float)s · (float)(q − z),  s = fp16→f32(scales[r][g]),
 *             z = zeros[r][g], q = codes[r][c], g = g_idx[c]
 * computed in f32 — exactly what a consumer of the exported fp16 scales
 * computes, so dequantize(export) == what qpipe evaluates, bit for bit.
 *
 * Grid (GPTQ `Quantizer.find_params`, torch.round = round half to even):
 *   xmin = min(min w, 0), xmax = max(max w, 0)           (0 is on the grid)
 *   sym:  xmax = max(|xmin|, xmax); xmin = −xmax if xmin < 0
 *   xmin == xmax == 0 (all-zero group): xmin = −1, xmax = +1
 *   s  = fp16((xmax − xmin) / maxq)    rounded to nearest even; the code
 *        below uses this ROUNDED scale.  A scale that rounds to 0 becomes
 *        the smallest fp16 subnormal (2^-24); one that overflows fp16 is an
 *        error (|w| in the hundreds of thousands).
 *   z  = sym ? (maxq + 1) / 2 : clamp(round(−xmin / s), 0, maxq)
 *   q  = clamp(round(w / s) + z, 0, maxq)
 * As in GPTQ, sym with a group of non-negative weights keeps xmin = 0, so
 * s = xmax / maxq and codes above z + maxq/2 are clamped (GPTQ's own quirk).
 *
 * mse (GPTQ's `mse` option; grid 100, maxshrink 0.8, norm 2.4): for
 * i = 0 … 79, p = 1 − i/100, the range [p·xmin, p·xmax] gives a candidate
 * (s, z) as above (sym keeps z); the candidate with the smallest
 * Σ |Ŵ − w|^2.4 wins, the first on ties.  i = 0 is the min–max fit, so the
 * result is never worse than min–max on that norm.  Σ is accumulated in
 * double over the group's columns in increasing column order, each term
 * powf(|e|, 2.4f) of the f32 error e.
 *
 * Groups: group_size −1 (or 0) = one group per row (per output channel,
 * n_groups 1); otherwise 32, 64, 128 or 256 consecutive input columns,
 * cols % group_size == 0.  With a custom g_idx, group g is the columns c
 * with g_idx[c] == g (each group must have exactly group_size columns).
 *
 * Determinism: every group's result depends on that group's weights only;
 * qp_rtn_quantize (AVX2 where available, threads over fixed chunks of rows)
 * is byte-identical to qp_rtn_quantize_ref for any thread count. */
#ifndef QP_QUANT_LINEAR_H
#define QP_QUANT_LINEAR_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* The group sizes the linear format takes (-1: one group per row; 0 is
 * accepted as -1), as a parameter table's "allowed" text: THE rule, used by
 * qp_linear_group_size_ok and the quantize stage's `group_size:`. */
#define QP_LINEAR_GROUP_SIZES "-1|32|64|128|256"

/* 1 when group_size is one of QP_LINEAR_GROUP_SIZES (or 0). */
int qp_linear_group_size_ok(int group_size);

typedef struct {
    int bits;         /* 2 … 8 */
    int group_size;   /* -1 or 0: one group per row; else 32, 64, 128, 256 */
    int sym;          /* GPTQ sym: z = 2^(bits-1) */
    int mse;          /* GPTQ mse clipping search */
} qp_linear_params;

typedef struct qp_linear qp_linear;

/* Direct access to the arrays, owned by the object; GPTQ/AWQ write codes,
 * scales and zeros in place (then qp_linear_validate). */
typedef struct {
    int64_t rows, cols;
    int64_t n_groups;
    int bits, maxq;
    int group_size;         /* columns per group (= cols for one group per row) */
    int group_size_given;   /* as given to qp_linear_new: -1 for one group per row (what checkpoints
                               record), which group_size cannot tell from one group of `cols` columns */
    int sym, mse;
    uint8_t *codes;         /* [rows, cols] */
    uint16_t *scales;       /* [rows, n_groups] fp16 bits */
    uint8_t *zeros;         /* [rows, n_groups] */
    int32_t *g_idx;         /* [cols] read-only: change it with qp_linear_set_g_idx */
} qp_linear_view;

/* Allocates a rows × cols object (codes/zeros 0, scales fp16 1.0, default
 * g_idx).  QP_EUSAGE, one line, e.g. "weight [768 x 250]: 250 input columns
 * are not a multiple of group_size 128 (...)"; callers prefix the tensor
 * name with qp_error_prefix. */
int qp_linear_new(qp_linear **out, int64_t rows, int64_t cols, const qp_linear_params *p);
void qp_linear_free(qp_linear *q);
void qp_linear_view_of(const qp_linear *q, qp_linear_view *v);

/* Replaces g_idx (GPTQ act-order).  Every value in [0, n_groups) and every
 * group with exactly group_size columns, else QP_EUSAGE naming the column
 * or the group. */
int qp_linear_set_g_idx(qp_linear *q, const int32_t *g_idx);

/* Fits (scale, zero) for one group of n values w[0], w[stride], … with the
 * grid above (p->group_size is ignored).  QP_EUSAGE for n < 1, a NaN/inf
 * value ("value K of the group is nan") or an fp16 overflow of the scale. */
int qp_linear_fit_group(const qp_linear_params *p, const float *w, int64_t n, int64_t stride,
                        uint16_t *scale_f16, uint8_t *zero);

/* The fp16 bits of a scale as the grid stores it: round to nearest even; a
 * scale that rounds to 0 becomes the smallest subnormal (2^-24), so w / s
 * stays finite (an overflow comes back as fp16 infinity, 0x7c00). */
uint16_t qp_linear_scale_f16(float s);

/* The code of one value on a fitted grid (s = fp16→f32 of the scale) and
 * the value of a code: the two halves of the formulas above. */
static inline uint8_t qp_linear_code(float w, float s, int zero, int maxq)
{
    float q = rintf(w / s) + (float)zero;
    q = q < 0.0f ? 0.0f : q;
    q = q > (float)maxq ? (float)maxq : q;
    return (uint8_t)q;
}

static inline float qp_linear_value(int code, float s, int zero)
{
    return s * (float)(code - zero);
}

/* RTN.  w is f32 [rows, cols].  _ref is scalar and defines the result;
 * qp_rtn_quantize (n_threads <= 0: one per online CPU) gives the same
 * bytes.  QP_EUSAGE for a NaN/inf weight ("row R, column C: weight is nan")
 * or an fp16 overflow ("row R, group G: ..."); the FIRST such problem in
 * row-major order is reported whatever the thread count.  On error the
 * arrays' contents are unspecified (free the object). */
int qp_rtn_quantize_ref(qp_linear *q, const float *w);
int qp_rtn_quantize(qp_linear *q, const float *w, int n_threads);

/* Ŵ f32 [rows, cols] by the formula above. */
int qp_linear_dequantize(const qp_linear *q, float *w);

/* Checks an object filled by someone else (GPTQ/AWQ, deserialisation):
 * codes and zeros <= maxq, scales finite and > 0, g_idx consistent.
 * QP_ECORRUPT "WHAT: row R, column C: code 17 > maxq 15" style. */
int qp_linear_validate(const qp_linear *q, const char *what);

/* Bits per weight as exported: codes at `bits`, one fp16 scale and one
 * zero at `bits` per group (g_idx not counted). */
double qp_linear_bits_per_weight(const qp_linear *q);

/* Serialised form (all integers little-endian), version 1:
 *   off size
 *     0   8  magic "QPLINEAR"
 *     8   4  u32 version (1)
 *    12   4  u32 bits
 *    16   8  i64 rows
 *    24   8  i64 cols
 *    32   4  i32 group_size as given (-1 = one group per row)
 *    36   4  u32 flags: bit 0 sym, bit 1 mse, bit 2 custom g_idx
 *    40   8  i64 n_groups
 *    48   8  u64 payload bytes
 *    56   8  u64 checksum of the payload (quant/linear_impl.h)
 *    64      payload: codes u8[rows·cols], scales u16[rows·n_groups],
 *            zeros u8[rows·n_groups], g_idx i32[cols]
 * serialize: *out malloc'ed, *len its size.  deserialize: full validation;
 * QP_ECORRUPT with one line "WHAT: …" (truncated, bad magic/version,
 * inconsistent header, checksum, out-of-range code/zero/scale/g_idx). */
int qp_linear_serialize(const qp_linear *q, void **out, size_t *len);
int qp_linear_deserialize(qp_linear **out, const void *buf, size_t len, const char *what);

#endif
