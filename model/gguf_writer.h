/* GGUF v3 writer, laid out byte for byte as ggml's gguf.cpp and gguf-py's
 * GGUFWriter lay a file out:
 *   "GGUF", u32 3, u64 n_tensors, u64 n_kv,
 *   n_kv × (string key, u32 value type, value)          -- insertion order
 *   n_tensors × (string name, u32 n_dims, u64 ne[n_dims], u32 type, u64 offset)
 *   zero padding to general.alignment (default 32)
 *   each tensor's data followed by zero padding to the alignment
 * where offset(t0) = 0 and offset(ti+1) = offset(ti) + pad(nbytes(ti)).
 *
 * Metadata and tensor infos are kept in memory; tensor DATA is either a
 * borrowed pointer or produced by a callback when finish() reaches that
 * tensor, so a large model never has to be resident twice.  finish()
 * streams: header and tensor infos first (offsets follow from types and
 * shapes), then each tensor as it is produced, at most one tensor's bytes
 * in memory (plus three 8 MiB staging buffers: common/seqout.h, O_DIRECT
 * where the filesystem allows it), and one fsync ends the file.  The output goes
 * to a temp file created by _new() beside the destination and is fsynced
 * and renamed over the destination by _finish(); any failure (or _abort())
 * removes the temp file, so a half-written GGUF never appears at `path`
 * (a killed process leaves only a hidden .qpipe-gguf* temp file). */
#ifndef QP_MODEL_GGUF_WRITER_H
#define QP_MODEL_GGUF_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/hash.h"
#include "model/gguf.h"

typedef struct qp_gguf_writer qp_gguf_writer;

/* Creates the temp file in path's directory (error: "DIR: cannot create a
 * temporary file: ..."). */
int qp_gguf_writer_new(qp_gguf_writer **out, const char *path);
/* Frees the writer and removes its temp file; NULL is a no-op. */
void qp_gguf_writer_abort(qp_gguf_writer *w);
/* Writes everything, fsyncs, renames into place, fsyncs the directory and
 * frees the writer (also on failure, which removes the temp file). */
int qp_gguf_writer_finish(qp_gguf_writer *w);

/* ---- metadata (kept in insertion order) ----
 * Errors (QP_EUSAGE, nothing added): "PATH: key 'K': already added",
 * "PATH: key 'K': empty key", and for general.alignment
 * "PATH: key 'general.alignment': must be a u32 power of two, got V". */
int qp_gguf_writer_add_u8(qp_gguf_writer *w, const char *key, uint8_t v);
int qp_gguf_writer_add_i8(qp_gguf_writer *w, const char *key, int8_t v);
int qp_gguf_writer_add_u16(qp_gguf_writer *w, const char *key, uint16_t v);
int qp_gguf_writer_add_i16(qp_gguf_writer *w, const char *key, int16_t v);
int qp_gguf_writer_add_u32(qp_gguf_writer *w, const char *key, uint32_t v);
int qp_gguf_writer_add_i32(qp_gguf_writer *w, const char *key, int32_t v);
int qp_gguf_writer_add_u64(qp_gguf_writer *w, const char *key, uint64_t v);
int qp_gguf_writer_add_i64(qp_gguf_writer *w, const char *key, int64_t v);
int qp_gguf_writer_add_f32(qp_gguf_writer *w, const char *key, float v);
int qp_gguf_writer_add_f64(qp_gguf_writer *w, const char *key, double v);
int qp_gguf_writer_add_bool(qp_gguf_writer *w, const char *key, bool v);
/* NUL-terminated string. */
int qp_gguf_writer_add_str(qp_gguf_writer *w, const char *key, const char *s);
/* len exact bytes (may contain NULs). */
int qp_gguf_writer_add_string(qp_gguf_writer *w, const char *key, const char *s, size_t len);

/* An array value, possibly nested.  Scalars are in host layout (bool: one
 * byte 0/1 each, as GGUF stores it). */
typedef struct qp_gguf_array {
    qp_gguf_type type;                    /* element type */
    size_t n;                             /* number of elements */
    const void *data;                     /* scalar elements */
    const char *const *strs;              /* QP_GGUF_STRING elements */
    const size_t *lens;                   /* their lengths; NULL: strlen */
    const struct qp_gguf_array *arrays;   /* QP_GGUF_ARRAY elements */
} qp_gguf_array;
/* Errors: "PATH: key 'K': array of unknown type N", "...: NULL array data". */
int qp_gguf_writer_add_array(qp_gguf_writer *w, const char *key, const qp_gguf_array *a);
/* Shorthands for one level of scalars / strings. */
int qp_gguf_writer_add_scalar_array(qp_gguf_writer *w, const char *key, qp_gguf_type type,
                                    const void *data, size_t n);
int qp_gguf_writer_add_string_array(qp_gguf_writer *w, const char *key, const char *const *strs,
                                    const size_t *lens, size_t n);

/* Copies metadata entry i of an open GGUF (same key, type and value). */
int qp_gguf_writer_copy_kv(qp_gguf_writer *w, const qp_gguf *g, size_t i);
/* Removes a key (no-op when absent), as gguf_remove_key does: a later add
 * of the same key then goes to the END, which is how llama-quantize's
 * gguf_set_val_u32(general.file_type) moves that key last. */
void qp_gguf_writer_remove_key(qp_gguf_writer *w, const char *key);
size_t qp_gguf_writer_kv_count(const qp_gguf_writer *w);
const char *qp_gguf_writer_kv_key(const qp_gguf_writer *w, size_t i);

/* ---- tensors (file order = insertion order) ---- */

/* Produces a tensor's nbytes bytes into dst when finish() reaches it.
 * Returns 0 or a negative qp_err after qp_error_set(). */
typedef int (*qp_gguf_fill_fn)(void *ud, const char *name, void *dst, size_t nbytes);

/* ne[0..n_dims-1] in ggml order (ne[0] innermost), 1 <= n_dims <= 4.
 * nbytes must equal ne[0]/block × type size × ne[1]·…·ne[n_dims-1].
 * data is borrowed until finish().  Errors (QP_EUSAGE), one line
 * "PATH: tensor 'T': ...": already added, name longer than 63 bytes,
 * unknown ggml type N, n_dims out of range, row of ne[0] not a multiple
 * of the type's block, nbytes does not match. */
int qp_gguf_writer_add_tensor(qp_gguf_writer *w, const char *name, uint32_t type, int n_dims,
                              const uint64_t *ne, const void *data, size_t nbytes);
/* The same with data produced by fill(ud, name, dst, nbytes) at finish(). */
int qp_gguf_writer_add_tensor_cb(qp_gguf_writer *w, const char *name, uint32_t type, int n_dims,
                                 const uint64_t *ne, qp_gguf_fill_fn fill, void *ud);
/* Zero-copy variant: view(ud, name, dst, nbytes, &data) either points
 * *data at nbytes bytes it holds (valid until its next call or the
 * writer's end; written from there without a copy) or writes ALL nbytes of
 * dst (not cleared beforehand) and sets *data = dst. */
typedef int (*qp_gguf_view_fn)(void *ud, const char *name, void *dst, size_t nbytes, const void **data);
int qp_gguf_writer_add_tensor_view(qp_gguf_writer *w, const char *name, uint32_t type, int n_dims,
                                   const uint64_t *ne, qp_gguf_view_fn view, void *ud);
size_t qp_gguf_writer_tensor_count(const qp_gguf_writer *w);

/* fn(ud) runs when the writer is freed (by finish or abort): releases what
 * fill callbacks used.  One hook per writer; a second call replaces it. */
void qp_gguf_writer_on_free(qp_gguf_writer *w, void (*fn)(void *ud), void *ud);

/* finish() writes the SHA-256 of the whole file (hex) to digest, taken as
 * the bytes go out (on the writer's second thread): no second read. */
void qp_gguf_writer_want_digest(qp_gguf_writer *w, char digest[QP_HEX_LEN]);

/* Bytes of a tensor of this type/shape; 0 when the type is unknown or
 * ne[0] is not a multiple of its block. */
uint64_t qp_gguf_tensor_nbytes(uint32_t type, int n_dims, const uint64_t *ne);

#endif
