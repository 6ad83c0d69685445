#include "cache/digest_map.h"

#include "common/alloc.h"
#include <stdlib.h>
#include <string.h>

void qp_digest_map_init(qp_digest_map *m) { memset(m, 0, sizeof(*m)); }

void qp_digest_map_free(qp_digest_map *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof(*m));
}

/* The digest is already uniformly distributed: its first 16 hex digits are
 * a good hash. */
static uint64_t hash_hex(const char *hex)
{
    uint64_t h = 0;
    for (int i = 0; i < 16; i++) {
        char ch = hex[i];
        h = (h << 4) | (uint64_t)(ch <= '9' ? ch - '0' : ch - 'a' + 10);
    }
    return h;
}

static size_t probe(const qp_digest_map *m, const char *hex)
{
    size_t i = (size_t)hash_hex(hex) & (m->cap - 1);
    while (m->keys[i][0] && strcmp(m->keys[i], hex) != 0)
        i = (i + 1) & (m->cap - 1);
    return i;
}

static void grow(qp_digest_map *m)
{
    size_t cap = m->cap ? m->cap * 2 : 64;
    qp_digest_map nm = {qp_xcalloc(cap, sizeof(*m->keys)), qp_xcalloc(cap, sizeof(*m->vals)), cap, 0};
    for (size_t i = 0; i < m->cap; i++)
        if (m->keys[i][0]) {
            size_t j = probe(&nm, m->keys[i]);
            memcpy(nm.keys[j], m->keys[i], QP_HEX_LEN);
            nm.vals[j] = m->vals[i];
            nm.n++;
        }
    qp_digest_map_free(m);
    *m = nm;
}

uint64_t *qp_digest_map_slot(qp_digest_map *m, const char *hex)
{
    if ((m->n + 1) * 2 > m->cap)
        grow(m);
    size_t i = probe(m, hex);
    if (!m->keys[i][0]) {
        memcpy(m->keys[i], hex, QP_HEX_LEN);
        m->vals[i] = 0;
        m->n++;
    }
    return &m->vals[i];
}

uint64_t *qp_digest_map_find(const qp_digest_map *m, const char *hex)
{
    if (!m->cap)
        return NULL;
    size_t i = probe(m, hex);
    return m->keys[i][0] ? &m->vals[i] : NULL;
}
