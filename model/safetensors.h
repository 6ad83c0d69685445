/* Hugging Face safetensors: reader (mmap + full validation) and writer.
 * Format: u64 LE header length N, N bytes of JSON
 *   {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}
 * offsets relative to the first byte after the header. */
#ifndef QP_MODEL_SAFETENSORS_H
#define QP_MODEL_SAFETENSORS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/tensor.h"

typedef struct qp_safetensors qp_safetensors;

/* mmaps and validates: header length bound, JSON, dtype names, shapes,
 * byte size = nelem × dtype size, offsets in range and non-overlapping,
 * unique names.  Errors: one line "PATH: tensor 'NAME': what is wrong". */
int qp_safetensors_open(qp_safetensors **out, const char *path);
void qp_safetensors_free(qp_safetensors *st);
const char *qp_safetensors_path(const qp_safetensors *st);
size_t qp_safetensors_count(const qp_safetensors *st);
/* Tensor i in file order (sorted by data offset). */
const qp_tensor_view *qp_safetensors_tensor(const qp_safetensors *st, size_t i);
/* By name; NULL if absent. */
const qp_tensor_view *qp_safetensors_find(const qp_safetensors *st, const char *name);
/* "__metadata__" object (borrowed; may be NULL). */
const json_t *qp_safetensors_metadata(const qp_safetensors *st);

/* A checkpoint: one file, or several through model.safetensors.index.json. */
typedef struct qp_checkpoint qp_checkpoint;
/* dir holds model.safetensors or model.safetensors.index.json (+ shards). */
int qp_checkpoint_open(qp_checkpoint **out, const char *dir);
void qp_checkpoint_free(qp_checkpoint *ck);
size_t qp_checkpoint_count(const qp_checkpoint *ck);
const qp_tensor_view *qp_checkpoint_tensor(const qp_checkpoint *ck, size_t i);
const qp_tensor_view *qp_checkpoint_find(const qp_checkpoint *ck, const char *name);

/* Writer: tensors are appended in call order; finish() writes the header,
 * data and renames the temp file into place (nothing half-written). */
typedef struct qp_st_writer qp_st_writer;
int qp_st_writer_new(qp_st_writer **out, const char *path);
int qp_st_writer_add(qp_st_writer *w, const char *name, qp_dtype dtype,
                     int ndim, const uint64_t *shape, const void *data, size_t nbytes);
int qp_st_writer_set_metadata(qp_st_writer *w, const char *key, const char *value);
int qp_st_writer_finish(qp_st_writer *w);   /* also frees */
void qp_st_writer_abort(qp_st_writer *w);   /* frees, removes the temp file */

#endif
