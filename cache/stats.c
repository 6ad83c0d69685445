/* qp_cache_stats_get: counts and sizes, from directory listings and frame
 * headers only (no object is decompressed). */
#include "cache/cache_internal.h"
#include "common/error.h"

#include <string.h>

static int count_object(void *ud, const char *hex, const char *path, const struct stat *st)
{
    qp_cache_stats *s = ud;
    if (!hex)
        return 0;
    uint64_t raw;
    s->objects++;
    s->object_disk_bytes += (uint64_t)st->st_size;
    if (qp_cache_object_header_size(path, &raw) == 0)
        s->object_raw_bytes += raw;
    return 0;
}

static int count_file(void *ud, const char *hex, const char *path, const struct stat *st)
{
    uint64_t *n = ud;
    if (hex)
        (*n)++;
    return 0;
}

int qp_cache_stats_get(qp_cache *c, qp_cache_stats *out)
{
    int rc;
    qp_cache_stats s;
    memset(&s, 0, sizeof(s));
    if ((rc = qp_cache_walk(c->objects, count_object, &s)) != 0 ||
        (rc = qp_cache_walk(c->actions, count_file, &s.actions)) != 0 ||
        (rc = qp_cache_walk(c->files, count_file, &s.memo_entries)) != 0 ||
        (rc = qp_cache_tmp_sweep(c, 0, &s.tmp_files, NULL)) != 0)
        return rc;
    *out = s;
    return 0;
}
