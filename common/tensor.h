/* Element types and the shape/dtype description shared by every tensor file
 * format (safetensors, GGUF) and by the forward pass.
 * Shapes are written PyTorch-style: shape[0] is the OUTERMOST dimension
 * (a linear weight is [out_features, in_features], rows contiguous). */
#ifndef QP_COMMON_TENSOR_H
#define QP_COMMON_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#define QP_MAX_DIMS 8

typedef enum {
    QP_DT_INVALID = 0,
    QP_DT_F64, QP_DT_F32, QP_DT_F16, QP_DT_BF16,
    QP_DT_I64, QP_DT_I32, QP_DT_I16, QP_DT_I8, QP_DT_U8, QP_DT_BOOL,
    QP_DT_F8_E4M3, QP_DT_F8_E5M2,
} qp_dtype;

/* "F32", "BF16", … as safetensors spells them; NULL for INVALID. */
const char *qp_dtype_name(qp_dtype t);
/* Parses a safetensors dtype name; QP_DT_INVALID when unknown. */
qp_dtype qp_dtype_parse(const char *name);
/* Bytes per element (0 for INVALID). */
size_t qp_dtype_size(qp_dtype t);

typedef struct {
    const char *name;          /* borrowed from the file object */
    qp_dtype dtype;
    int ndim;
    uint64_t shape[QP_MAX_DIMS];
    uint64_t nelem;
    const void *data;          /* points into the mmap */
    uint64_t nbytes;
} qp_tensor_view;

/* Element conversions (exact for bf16/f16 -> f32). */
float qp_bf16_to_f32(uint16_t h);
uint16_t qp_f32_to_bf16(float f);   /* round to nearest even, NaN kept */
float qp_f16_to_f32(uint16_t h);
uint16_t qp_f32_to_f16(float f);    /* round to nearest even, as ggml does */

/* Converts n elements of a float tensor (F32/F16/BF16/F64) to f32.
 * Returns 0, or QP_EFORMAT for a non-float dtype. */
int qp_convert_to_f32(float *dst, const void *src, qp_dtype t, size_t n);

#endif
