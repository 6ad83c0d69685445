/* llama.cpp's legacy importance-matrix file, imatrix.dat (what llama-imatrix
 * writes and every llama-quantize reads), little-endian:
 *   i32 n_entries
 *   n_entries × { i32 name_len, name bytes (GGUF tensor name, no NUL),
 *                 i32 ncall, i32 nval, f32 values[nval] }
 *   i32 last_call, i32 dataset_len, dataset bytes     (optional trailer)
 * values[i] = (Σ over calibration tokens of x_i²) / count_i · ncall, x_i the
 * i-th input column of that weight (nval = ne[0], or ne[0]·n_expert).
 * llama-quantize uses values[i] / ncall (f32 division) as the per-column
 * importance: qp_imatrix_weights() returns exactly that, ready for
 * qp_quantize(…, imatrix, …).
 *
 * Entries keep file / insertion order; the writer reproduces a file it read
 * byte for byte. */
#ifndef QP_QUANT_IMATRIX_H
#define QP_QUANT_IMATRIX_H

#include <stddef.h>
#include <stdint.h>

typedef struct qp_imatrix qp_imatrix;

typedef struct {
    const char *name;       /* NUL-terminated, owned by the qp_imatrix */
    int32_t ncall;          /* number of calibration chunks it saw */
    int32_t nval;
    const float *values;    /* nval stored values (see above) */
} qp_imatrix_entry;

/* An empty matrix: last_call 0, dataset "". */
int qp_imatrix_new(qp_imatrix **out);
void qp_imatrix_free(qp_imatrix *m);

/* Reads imatrix.dat.  One-line QP_EFORMAT errors name the path, the byte
 * offset and the entry ("PATH: offset 52: entry 3 'blk.0.attn_q.weight':
 * truncated values (want 1024 bytes, 12 left)"); a missing file is QP_ERROR
 * with strerror.  A file without the trailer reads as last_call 0, dataset "". */
int qp_imatrix_read(qp_imatrix **out, const char *path);
/* Writes it atomically (temp file + fsync + rename). */
int qp_imatrix_write(const qp_imatrix *m, const char *path);

size_t qp_imatrix_count(const qp_imatrix *m);
/* Entry i (0 <= i < count), NULL otherwise. */
const qp_imatrix_entry *qp_imatrix_at(const qp_imatrix *m, size_t i);
/* NULL when absent. */
const qp_imatrix_entry *qp_imatrix_find(const qp_imatrix *m, const char *name);

int32_t qp_imatrix_last_call(const qp_imatrix *m);
const char *qp_imatrix_dataset(const qp_imatrix *m);
void qp_imatrix_set_last_call(qp_imatrix *m, int32_t last_call);
int qp_imatrix_set_dataset(qp_imatrix *m, const char *dataset);

/* Adds (or replaces, keeping its position) the entry `name` with the given
 * stored values.  QP_EUSAGE for an empty name, nval <= 0, ncall < 0 or a
 * NaN/inf/negative value. */
int qp_imatrix_set(qp_imatrix *m, const char *name, int32_t ncall, const float *values, int32_t nval);
/* The same from raw statistics, as llama-imatrix saves them:
 * values[i] = (sum_x2[i] / (float)count[i]) · (float)ncall, 0 where count is 0. */
int qp_imatrix_set_sums(qp_imatrix *m, const char *name, int32_t ncall, const float *sum_x2,
                        const int64_t *count, int32_t nval);

/* The importance llama-quantize gives the quantizer for tensor `name` whose
 * rows hold n_per_row weights: values[i] / ncall (values as stored when
 * ncall is 0) into dst[n_per_row].  QP_ENOTFOUND "imatrix has no entry for
 * 'NAME'" (llama-quantize then quantizes without); QP_EUSAGE "imatrix entry
 * 'NAME' has N values, the tensor has rows of M" on a size mismatch. */
int qp_imatrix_weights(const qp_imatrix *m, const char *name, int64_t n_per_row, float *dst);

#endif
