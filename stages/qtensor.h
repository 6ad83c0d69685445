/* Tensors inside model artifacts, dense or quantized.
 *
 * Every entry "tensors/NAME" of a model or quantized-model artifact carries
 * its shape (PyTorch order) and a "format":
 *   dense  — raw elements of "dtype" (F32/F16/BF16), as in the checkpoint
 *   ggml   — rows of llama.cpp blocks of "qtype" (Q4_0 … Q6_K, IQ4_NL, IQ4_XS, TQ1_0, TQ2_0),
 *            rows in Hugging Face order (GGUF export permutes q/k rows)
 *   linear — integer codes + fp16 group scales + zero points (+ g_idx):
 *            RTN, GPTQ, AWQ (quant/linear.h serialisation)
 *   nf4    — bitsandbytes NF4 blocks (quant/nf4.h serialisation)
 *   int8   — per-output-channel absmax int8 (quant/int8.h serialisation)
 * (entries without "format" are dense: fetch writes plain checkpoints).
 * This module turns any of them back into f32 for the forward pass, so
 * evaluating a quantized artifact is evaluating exactly its stored bytes. */
#ifndef QP_STAGES_QTENSOR_H
#define QP_STAGES_QTENSOR_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Element count from the entry's shape; 0 when malformed. */
uint64_t qp_qtensor_nelem(const json_t *entry);
/* Rows = shape[0], cols = product of the rest (1-D: 1 row). */
void qp_qtensor_rows_cols(const json_t *entry, int64_t *rows, int64_t *cols);
/* Dequantizes bytes of `entry` into dst[nelem]; `what` names the tensor in
 * errors ("stage 'x': tensor 'y'"). */
int qp_qtensor_to_f32(const json_t *entry, const void *bytes, size_t len, float *dst, uint64_t nelem,
                      const char *what);
/* Row access to stored bytes without decoding the whole tensor (the
 * forward pass converts one batch's embedding rows, or the lm_head chunk
 * by chunk): dense and ggml tensors are addressable by rows; linear, nf4
 * and int8 (group scales, g_idx) are decoded whole. */
typedef struct {
    int ggml;              /* 1: rows of ggml blocks of qtype; 0: dense dtype */
    int qtype;             /* qp_ggml_type when ggml */
    int dtype;             /* qp_dtype when dense */
    int64_t rows, cols;    /* qp_qtensor_rows_cols */
    size_t row_bytes;
} qp_qtensor_layout;
/* 1 and *out filled when `entry` is row-addressable and len bytes fit its
 * shape; 0 for the formats decoded whole; a negative qp_err (QP_ECORRUPT,
 * naming `what`) when the bytes do not fit. */
int qp_qtensor_layout_of(qp_qtensor_layout *out, const json_t *entry, size_t len, const char *what);
/* dst [nrows, cols] = rows [row0, row0 + nrows) of bytes (in range: the
 * caller checks); safe to call from several threads at once. */
int qp_qtensor_layout_rows(const qp_qtensor_layout *l, const void *bytes, int64_t row0, int64_t nrows, float *dst);
/* A checkpoint weight about to be quantized, w[rows, cols]: QP_EFORMAT
 * "WHAT: row R, column C is NaN|infinite; fix the checkpoint" at the first
 * non-finite element.  The quantizers refuse one too, but as a usage error
 * (exit 2) and without naming the tensor. */
int qp_qtensor_check_finite(const float *w, int64_t rows, int64_t cols, const char *what);
/* Bits per weight as exported: the entry's "bpw" when recorded, else
 * 8·bytes / elements. */
double qp_qtensor_bits(const json_t *entry, size_t len);

#endif
