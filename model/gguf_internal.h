/* Private layout shared by gguf.c (parsing) and gguf_value.c (getters). */
#ifndef QP_MODEL_GGUF_INTERNAL_H
#define QP_MODEL_GGUF_INTERNAL_H

#include "model/gguf.h"

struct qp_gguf_value {
    const qp_gguf *g;
    const char *key;              /* the top-level key, for messages */
    qp_gguf_type type;
    qp_gguf_type elem;            /* arrays: element type */
    uint64_t n;                   /* arrays: count; strings: bytes */
    const unsigned char *raw;     /* scalars and fixed-size-element arrays: bytes in the mmap */
    const char *str;              /* strings: NUL-terminated copy */
    qp_gguf_value *items;         /* arrays of strings or arrays: n parsed items */
};

typedef struct qp_gguf_chunk qp_gguf_chunk;

struct qp_gguf {
    char *path;
    unsigned char *map;
    size_t size;
    uint32_t version;
    uint32_t alignment;
    uint64_t data_off;
    size_t n_kv;
    char **keys;
    qp_gguf_value *vals;
    size_t *kv_sorted;            /* indices sorted by key */
    size_t n_t;
    qp_gguf_tensor *tensors;
    size_t *t_sorted;             /* indices sorted by name */
    qp_gguf_chunk *arena;         /* string copies */
};

#endif
