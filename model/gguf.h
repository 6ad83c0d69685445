/* GGUF v2/v3 reader (llama.cpp's model format): mmap + full validation.
 * Layout (little-endian): "GGUF", u32 version, u64 tensor_count, u64 kv_count,
 * kv_count × (string key, u32 value type, value), tensor_count × tensor info
 * (string name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset), then
 * the data section at the next multiple of general.alignment (default 32).
 * Strings are u64 length + bytes.  Tensor offsets are relative to the data
 * section.  Dequantization lives elsewhere: this only locates bytes. */
#ifndef QP_MODEL_GGUF_H
#define QP_MODEL_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/ggml_types.h"
#include "common/tensor.h"

/* ---- metadata values ---- */
typedef enum {
    QP_GGUF_U8 = 0, QP_GGUF_I8 = 1, QP_GGUF_U16 = 2, QP_GGUF_I16 = 3,
    QP_GGUF_U32 = 4, QP_GGUF_I32 = 5, QP_GGUF_F32 = 6, QP_GGUF_BOOL = 7,
    QP_GGUF_STRING = 8, QP_GGUF_ARRAY = 9, QP_GGUF_U64 = 10, QP_GGUF_I64 = 11,
    QP_GGUF_F64 = 12,
} qp_gguf_type;

/* "u32", "string", "array", …; "?" when unknown. */
const char *qp_gguf_type_name(qp_gguf_type t);
/* 1 for a value type the format defines (u8 … f64, string and array included). */
int qp_gguf_type_known(uint32_t t);
/* Bytes of one fixed-size value; 0 for string, array and unknown types. */
size_t qp_gguf_type_size(uint32_t t);

/* A metadata value or array (owned by its qp_gguf). */
typedef struct qp_gguf_value qp_gguf_value;

/* ---- tensors ---- */
#define QP_GGUF_MAX_DIMS 4

typedef struct {
    const char *name;        /* NUL-terminated copy owned by the qp_gguf */
    int n_dims;
    uint64_t ne[QP_GGUF_MAX_DIMS];     /* ggml order: ne[0] innermost; unused = 1 */
    uint64_t shape[QP_GGUF_MAX_DIMS];  /* PyTorch order: shape[i] = ne[n_dims-1-i] */
    uint32_t type;           /* ggml type id (qp_ggml_type) */
    uint64_t offset;         /* relative to the data section */
    uint64_t nelem;
    uint64_t nbytes;         /* nelem / block size × bytes per block */
    const void *data;        /* into the mmap (alignment-aligned) */
} qp_gguf_tensor;

typedef struct qp_gguf qp_gguf;

/* mmaps and validates the whole header.  Errors are one line:
 * "PATH: key 'K': …", "PATH: tensor 'T': …" or "PATH: offset N: …"
 * (N = file offset of the offending field). */
int qp_gguf_open(qp_gguf **out, const char *path);
void qp_gguf_free(qp_gguf *g);
const char *qp_gguf_path(const qp_gguf *g);
uint32_t qp_gguf_version(const qp_gguf *g);
uint32_t qp_gguf_alignment(const qp_gguf *g);
uint64_t qp_gguf_data_offset(const qp_gguf *g);   /* file offset of the data section */

/* Metadata in file order. */
size_t qp_gguf_kv_count(const qp_gguf *g);
const char *qp_gguf_kv_key(const qp_gguf *g, size_t i);
const qp_gguf_value *qp_gguf_kv_value(const qp_gguf *g, size_t i);
/* NULL when absent (no error set). */
const qp_gguf_value *qp_gguf_find(const qp_gguf *g, const char *key);
qp_gguf_type qp_gguf_value_type(const qp_gguf_value *v);

/* Typed getters: 0; QP_ENOTFOUND "PATH: key 'K': missing";
 * QP_EFORMAT "PATH: key 'K': is T, expected U".  Exact type required. */
int qp_gguf_get_u8(const qp_gguf *g, const char *key, uint8_t *out);
int qp_gguf_get_i8(const qp_gguf *g, const char *key, int8_t *out);
int qp_gguf_get_u16(const qp_gguf *g, const char *key, uint16_t *out);
int qp_gguf_get_i16(const qp_gguf *g, const char *key, int16_t *out);
int qp_gguf_get_u32(const qp_gguf *g, const char *key, uint32_t *out);
int qp_gguf_get_i32(const qp_gguf *g, const char *key, int32_t *out);
int qp_gguf_get_u64(const qp_gguf *g, const char *key, uint64_t *out);
int qp_gguf_get_i64(const qp_gguf *g, const char *key, int64_t *out);
int qp_gguf_get_f32(const qp_gguf *g, const char *key, float *out);
int qp_gguf_get_f64(const qp_gguf *g, const char *key, double *out);
int qp_gguf_get_bool(const qp_gguf *g, const char *key, bool *out);
/* s: NUL-terminated copy (GGUF strings may hold NULs: len is exact). len may be NULL. */
int qp_gguf_get_string(const qp_gguf *g, const char *key, const char **s, uint64_t *len);
/* Any integer type that fits in int64 / any of f32 f64 (writers differ
 * between u32 and i32 for the same key). */
int qp_gguf_get_int(const qp_gguf *g, const char *key, int64_t *out);
int qp_gguf_get_float(const qp_gguf *g, const char *key, double *out);
/* An array; elem_type -1 accepts any element type, else it must match. */
int qp_gguf_get_array(const qp_gguf *g, const char *key, int elem_type, const qp_gguf_value **out);

/* Arrays (v must be an array value). */
qp_gguf_type qp_gguf_array_type(const qp_gguf_value *a);
uint64_t qp_gguf_array_len(const qp_gguf_value *a);
/* Raw little-endian elements of a fixed-size element type, in the mmap and
 * possibly unaligned: read with memcpy.  NULL for string/array elements. */
const void *qp_gguf_array_data(const qp_gguf_value *a);
/* Element i: 0; QP_EFORMAT "PATH: key 'K': index I out of range (length N)"
 * or "PATH: key 'K': array of T, expected U". */
int qp_gguf_array_get_int(const qp_gguf_value *a, uint64_t i, int64_t *out);     /* any integer type */
int qp_gguf_array_get_float(const qp_gguf_value *a, uint64_t i, double *out);   /* f32 or f64 */
int qp_gguf_array_get_bool(const qp_gguf_value *a, uint64_t i, bool *out);
int qp_gguf_array_get_string(const qp_gguf_value *a, uint64_t i, const char **s, uint64_t *len);
/* Element i of an array of arrays. */
int qp_gguf_array_get_array(const qp_gguf_value *a, uint64_t i, const qp_gguf_value **out);
/* Whole-array copies with conversion (e.g. tokenizer scores / token types):
 * dst has qp_gguf_array_len() elements. */
int qp_gguf_array_copy_f32(const qp_gguf_value *a, float *dst);    /* f32/f64 elements */
int qp_gguf_array_copy_i32(const qp_gguf_value *a, int32_t *dst);  /* integer elements in i32 range */

/* Tensors in file (tensor-info) order. */
size_t qp_gguf_tensor_count(const qp_gguf *g);
const qp_gguf_tensor *qp_gguf_tensor_at(const qp_gguf *g, size_t i);
/* NULL when absent. */
const qp_gguf_tensor *qp_gguf_find_tensor(const qp_gguf *g, const char *name);
/* A qp_tensor_view (PyTorch-order shape) for F32/F16/BF16/F64/I8…I64
 * tensors; QP_EFORMAT "PATH: tensor 'T': type Q4_K has no plain dtype" otherwise. */
int qp_gguf_tensor_view(const qp_gguf *g, const qp_gguf_tensor *t, qp_tensor_view *out);

#endif
