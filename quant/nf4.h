/* bitsandbytes NF4 (QLoRA's 4-bit NormalFloat), as bitsandbytes'
 * `quantize_4bit(quant_type="nf4")` CUDA kernel (kQuantizeBlockwise) does it:
 *
 *   x      f32 [rows, cols] flattened row-major: n = rows·cols values
 *   blocks of `blocksize` (default 64) consecutive values (the last may be short)
 *   absmax f32 [n_blocks]         max |x| of the block
 *   codes  u8  [(n + 1) / 2]      two 4-bit codes per byte, the EVEN element in
 *                                 the HIGH nibble; an odd n pads the last low
 *                                 nibble with the code of 0.0 (7), as bnb's
 *                                 zero-filled load does
 *   code   = dQuantizeNF4(x · (1/absmax))   — the reciprocal, then a product,
 *            both f32, then bnb's decision tree: code = the number of its 15
 *            thresholds t with x > t (a value exactly on a threshold takes
 *            the LOWER code; a NaN, which cannot occur here, would give 0)
 *   x̂      = NF4[code] · absmax   (f32)
 *
 * NF4 levels (bnb's get_4bit_type("nf4")), index = code:
 *   −1, −0.6961928009986877, −0.5250730514526367, −0.39491748809814453,
 *   −0.28444138169288635, −0.18477343022823334, −0.09105003625154495, 0,
 *   0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
 *   0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
 *   0.7229568362236023, 1
 *
 * One deliberate difference: a block whose absmax is 0 (all zeros) gets code
 * 7 (0.0) everywhere.  bnb computes 0·(1/0) = NaN there, which falls through
 * its tree to code 0 (−1.0): harmless with a plain absmax of 0 but, under
 * double quantization, it dequantizes to −(the recovered absmax), which is
 * not 0.  Code 7 gives exactly 0 either way and is still a valid bnb encoding.
 *
 * As in bnb, a block whose absmax is below 2^-128 has 1/absmax = inf: its
 * codes are 15/0 for positive/negative values and 0 for zeros (0·inf = NaN),
 * all within that absmax (< 3e-39) of the weights.
 *
 * Double quantization (bnb `compress_statistics=True`):
 *   offset  = mean(absmax) as f32 (summed in double, in block order; torch's
 *             f32 reduction may differ in the last bit)
 *   c[b]    = absmax[b] − offset                             (f32)
 *   blocks of 256 c values: absmax2[k] = max |c|, qabsmax[b] = the 8-bit
 *   code of c[b] · (1/absmax2[k]) in bnb's signed dynamic map
 *   (create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8),
 *   built here the way bnb's linspace produces it, FMA included) by bnb's
 *   dQuantize<0> search; an all-zero 256-block takes the code of 0.0 (127).
 *   Recovered: absmax[b] = map[qabsmax[b]] · absmax2[b/256] + offset (f32).
 * bits per weight: 4 + 32/blocksize plain; 4 + 8/blocksize + 32/(256·blocksize)
 * (+ 32/n for the offset) with double quantization (≈ 4.127 at 64).
 *
 * Determinism: blocks are quantized independently (threads take fixed
 * chunks of blocks); the offset and the 8-bit pass are sequential.
 * qp_nf4_quantize is byte-identical to qp_nf4_quantize_ref for any thread count. */
#ifndef QP_QUANT_NF4_H
#define QP_QUANT_NF4_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int blocksize;      /* 0 -> 64; else 64, 128, 256, 512, 1024, 2048 or 4096 (bnb's sizes) */
    int double_quant;   /* bnb compress_statistics */
} qp_nf4_params;

typedef struct qp_nf4 qp_nf4;

typedef struct {
    int64_t rows, cols, n;     /* n = rows·cols */
    int blocksize, double_quant;
    int64_t n_blocks;          /* ceil(n / blocksize) */
    int64_t n_blocks2;         /* ceil(n_blocks / 256), double quantization only (else 0) */
    uint8_t *codes;            /* [(n + 1) / 2] packed */
    float *absmax;             /* [n_blocks] plain; NULL with double quantization */
    uint8_t *qabsmax;          /* [n_blocks] double quantization; else NULL */
    float *absmax2;            /* [n_blocks2] double quantization; else NULL */
    float offset;              /* double quantization; else 0 */
} qp_nf4_view;

/* QP_EUSAGE: rows/cols < 1, a blocksize bnb does not have. */
int qp_nf4_new(qp_nf4 **out, int64_t rows, int64_t cols, const qp_nf4_params *p);
void qp_nf4_free(qp_nf4 *q);
void qp_nf4_view_of(const qp_nf4 *q, qp_nf4_view *v);

/* The 16 levels above (f32), and bnb's dQuantizeNF4 of one normalised value. */
const float *qp_nf4_levels(void);
uint8_t qp_nf4_code(float x);
/* bnb's signed dynamic 8-bit map (256 sorted f32 values, map[127] = 0, map[255] = 1). */
const float *qp_nf4_dynamic_map(void);
/* bnb's dQuantize<0> of one value in [-1, 1] on that map. */
uint8_t qp_nf4_dynamic_code(float x);

/* w f32 [rows, cols].  QP_EUSAGE for a NaN/inf weight: "weight [R x C]: row r,
 * column c: weight is not finite; fix the checkpoint" (the first in
 * row-major order, whatever the thread count).  n_threads <= 0: one per CPU. */
int qp_nf4_quantize_ref(qp_nf4 *q, const float *w);
int qp_nf4_quantize(qp_nf4 *q, const float *w, int n_threads);

/* x̂ f32 [rows, cols]. */
int qp_nf4_dequantize(const qp_nf4 *q, float *w);
/* The absmax of block b that dequantization uses (recovered under double quantization). */
float qp_nf4_block_absmax(const qp_nf4 *q, int64_t b);

double qp_nf4_bits_per_weight(const qp_nf4 *q);

/* Serialised form (little-endian), version 1:
 *   0  8 magic "QPNF4BNB"      8 4 u32 version (1)   12 4 u32 blocksize
 *  16  8 i64 rows             24 8 i64 cols          32 4 u32 flags (bit 0 double quant)
 *  36  4 f32 offset           40 8 u64 payload bytes 48 8 u64 payload checksum
 *  56    payload: codes u8[(n+1)/2], then absmax f32[n_blocks] (plain) or
 *        qabsmax u8[n_blocks] + absmax2 f32[n_blocks2] (double quantization)
 * deserialize validates (absmax finite and >= 0, padding nibble 7, …):
 * QP_ECORRUPT, one line "WHAT: …". */
int qp_nf4_serialize(const qp_nf4 *q, void **out, size_t *len);
int qp_nf4_deserialize(qp_nf4 **out, const void *buf, size_t len, const char *what);

#endif
