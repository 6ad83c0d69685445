/* llama.cpp/ggml tensor formats: the type table, row sizes, the k-quant
 * fallback rule, and quantizers that are BYTE-IDENTICAL to llama.cpp's
 * (commit c392e50, ggml/src/ggml-quants.c), as llama-quantize calls them.
 *
 * A quantized row is a sequence of blocks; a tensor of nrows × n_per_row
 * weights (ggml ne[1] × ne[0], i.e. PyTorch [out, in]) is nrows rows of
 * qp_qtype_row_size(t, n_per_row) bytes each, back to back.
 *
 * The imatrix (importance matrix) is one non-negative float per COLUMN
 * (n_per_row floats, the mean of x_i² over calibration tokens = the
 * legacy imatrix.dat values divided by ncall, see quant/imatrix.h) and is
 * the same for every row.  As in llama.cpp it changes the bytes of Q4_0,
 * Q4_1, Q5_0, Q5_1, Q2_K … Q6_K, IQ4_NL, IQ4_XS and IQ3_XXS, and IQ2_XXS and IQ2_XS
 * cannot be quantized without one (QP_EUSAGE); it is ignored for F32,
 * F16, BF16, Q8_0, TQ1_0 and TQ2_0.  Without an imatrix every quantized
 * type uses its reference quantizer (quantize_row_<t>_ref) — except IQ4_NL
 * and IQ4_XS, which use llama-quantize's quantize_iq4_nl / quantize_iq4_xs
 * search (ntry 7), as llama-quantize does (IQ3_XXS's reference is its
 * search without weights).
 *
 * Byte identity needs the project's -ffp-contract=off (no fused multiply-add
 * in the float searches). */
#ifndef QP_QUANT_QTYPES_H
#define QP_QUANT_QTYPES_H

#include <stddef.h>
#include <stdint.h>

#include "common/ggml_types.h"

/* A type qpipe can quantize to (a subset of common/ggml_types.h). */
typedef struct {
    qp_ggml_type type;
    const char *name;        /* ggml spelling: "F32", "Q4_K", "IQ4_NL", … */
    int block;               /* weights per block (1 for F32/F16/BF16) */
    size_t type_size;        /* bytes per block */
    int is_quantized;        /* block-quantized (not F32/F16/BF16) */
    int uses_imatrix;        /* the imatrix changes the bytes */
    int needs_imatrix;       /* no quantizer without one (IQ2_XXS, IQ2_XS: llama.cpp's "very low-bit" types) */
    double bits_per_weight;  /* 8·type_size/block */
} qp_qtype_info;

/* NULL for an id that is not in the table (no error set). */
const qp_qtype_info *qp_qtype_get(qp_ggml_type t);
/* Case-insensitive ggml name ("q4_k" works); NULL when unknown. */
const qp_qtype_info *qp_qtype_by_name(const char *name);
/* Number of types in the table and the i-th one (for listings/tests). */
size_t qp_qtype_count(void);
const qp_qtype_info *qp_qtype_at(size_t i);

/* Bytes of one row of n_per_row weights; 0 when t is unknown, n_per_row <= 0
 * or n_per_row is not a multiple of the block. */
size_t qp_qtype_row_size(qp_ggml_type t, int64_t n_per_row);

/* The type llama-quantize (c392e50, without --pure) actually uses for a
 * tensor whose rows are n_per_row long when t needs a longer block:
 * t itself when n_per_row % block == 0; otherwise Q2_K, Q3_K, IQ2_XXS, IQ2_XS, IQ3_XXS, IQ4_XS -> IQ4_NL,
 * Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, TQ1_0, TQ2_0 -> Q4_0, and F16 when even that block
 * (32) does not divide n_per_row.  The legacy 32-blocks have no fallback:
 * QP_EUSAGE "tensor rows of N weights cannot be quantized to Q4_0 (blocks of 32)". */
int qp_qtype_fallback(qp_ggml_type *out, qp_ggml_type t, int64_t n_per_row);

/* Reference quantizer: defines the bytes.  src is nrows × n_per_row f32
 * (row-major), dst receives nrows × qp_qtype_row_size() bytes.  imatrix
 * (n_per_row floats) may be NULL.  Errors (QP_EUSAGE, one line, dst left
 * untouched): unknown type, n_per_row not a multiple of the block, negative
 * sizes, NULL buffers, no imatrix for a type that needs_imatrix, a NaN/inf weight ("row R, column C") or a NaN/inf/
 * negative imatrix value ("imatrix column C"). */
int qp_quantize_ref(qp_ggml_type t, const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                    const float *imatrix);

/* Fast quantizer: AVX2 kernels where they help (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
 * Q4_K, Q5_K, Q6_K without imatrix, IQ4_XS and IQ3_XXS with or without one, IQ2_XXS and IQ2_XS,
 * TQ1_0 and TQ2_0; portable C otherwise) and threads over
 * rows (n_threads <= 0: one per online CPU).  Rows are split into contiguous
 * ranges, and every row's bytes depend on that row only, so the output is
 * byte-identical to qp_quantize_ref whatever the thread count. Same errors. */
int qp_quantize(qp_ggml_type t, const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                const float *imatrix, int n_threads);

/* Index of the first NaN or infinity in x[0..n), -1 when every value is
 * finite (a vectorised scan, then a search only when there is one). */
int64_t qp_first_nonfinite(const float *x, int64_t n);
/* qp_quantize on the calling thread, for a caller that has just checked
 * with qp_first_nonfinite that src is finite: the same bytes without a
 * second scan.  The other errors as qp_quantize. */
int qp_quantize_prechecked(qp_ggml_type t, const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                           const float *imatrix);

/* One row of n weights (n a multiple of the block) of type t -> dst[n],
 * with ggml's dequantize_row_* arithmetic (bit-identical values).
 * QP_EUSAGE for an unknown type or a bad n. */
int qp_dequantize_row(qp_ggml_type t, const void *src, float *dst, int64_t n);

#endif
