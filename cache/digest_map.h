/* Private: an open-addressing hash map from 64-hex digests to a uint64
 * value (reference counts and indexes for gc).  Not thread-safe; each gc run
 * owns its own maps. */
#ifndef QP_CACHE_DIGEST_MAP_H
#define QP_CACHE_DIGEST_MAP_H

#include <stddef.h>
#include <stdint.h>

#include "common/hash.h"

typedef struct {
    char (*keys)[QP_HEX_LEN];  /* "" = empty slot */
    uint64_t *vals;
    size_t cap, n;             /* cap is a power of two */
} qp_digest_map;

void qp_digest_map_init(qp_digest_map *m);
void qp_digest_map_free(qp_digest_map *m);
/* Pointer to the value for hex, inserting 0 when absent; never NULL. */
uint64_t *qp_digest_map_slot(qp_digest_map *m, const char *hex);
/* Pointer to the value for hex, NULL when absent. */
uint64_t *qp_digest_map_find(const qp_digest_map *m, const char *hex);

#endif
