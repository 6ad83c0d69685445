/* qp_cache_gc: deletes unreferenced objects and stale temp files, then —
 * when max_bytes > 0 — evicts least recently used actions (oldest mtime
 * first; a hit bumps it) and the objects only they referenced until the
 * objects' disk bytes fit.
 *
 * A writer stores objects first and records the action that references
 * them afterwards, so an object can be legitimately unreferenced for a
 * while.  gc therefore tries to take the store lock exclusively: if no
 * other handle is open (no other process using the cache) everything
 * unreferenced goes; otherwise unreferenced objects touched within the last
 * hour are kept.
 *
 * A checkpoint entry (qp_cache_checkpoint_put) whose parent action exists
 * is removed first: the stage finished, so nothing will resume from it,
 * and its objects (a layer's activations) become unreferenced. */
#include "cache/cache_internal.h"
#include "cache/digest_map.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#define GC_GRACE_S 3600

typedef struct {
    char *path;
    struct stat st;
    char (*digests)[QP_HEX_LEN];  /* artifact + refs, without duplicates */
    size_t n;
} gc_action;

typedef struct {
    char hex[QP_HEX_LEN];
    char *path;
    struct stat st;
    int removed;
} gc_object;

typedef struct {
    qp_cache *c;
    gc_action *acts;
    size_t n_acts, cap_acts;
    gc_object *objs;
    size_t n_objs, cap_objs;
    qp_digest_map refcount;  /* digest -> number of actions using it */
    qp_cache_gc_result res;
} gc_ctx;

static int collect_action(void *ud, const char *hex, const char *path, const struct stat *st)
{
    gc_ctx *g = ud;
    qp_action_entry e;
    char reason[200];
    if (!hex)
        return 0;
    int rc = qp_action_entry_read(path, &e, reason, sizeof(reason));
    if (rc == QP_ENOTFOUND)
        return 0;
    if (rc == QP_EFORMAT) {  /* useless to anyone: a lookup would drop it too */
        qp_cache_unlink_if_same(path, st);
        g->res.removed_actions++;
        return 0;
    }
    if (rc != 0)
        return rc;
    if (e.of[0]) {
        char *parent = qp_cache_fanout_path(g->c->actions, e.of);
        struct stat pst;
        int finished = stat(parent, &pst) == 0;
        free(parent);
        if (finished) {
            qp_cache_unlink_if_same(path, st);
            g->res.removed_actions++;
            qp_action_entry_clear(&e);
            return 0;
        }
    }
    if (g->n_acts == g->cap_acts) {
        g->cap_acts = g->cap_acts ? g->cap_acts * 2 : 64;
        g->acts = qp_xrealloc_array(g->acts, g->cap_acts, sizeof(*g->acts));
    }
    gc_action *a = &g->acts[g->n_acts];
    a->digests = qp_xrealloc_array(NULL, e.n_refs + 1, sizeof(*a->digests));
    a->path = qp_strdup(path);
    a->st = *st;
    a->n = 0;
    g->n_acts++;
    for (size_t i = 0; i <= e.n_refs; i++) {
        const char *d = i == 0 ? e.artifact : e.refs[i - 1];
        int dup = 0;
        for (size_t k = 0; k < a->n && !dup; k++)
            dup = strcmp(a->digests[k], d) == 0;
        if (dup)
            continue;
        memcpy(a->digests[a->n++], d, QP_HEX_LEN);
        (*qp_digest_map_slot(&g->refcount, d))++;
    }
    qp_action_entry_clear(&e);
    return 0;
}

static int collect_object(void *ud, const char *hex, const char *path, const struct stat *st)
{
    gc_ctx *g = ud;
    if (!hex)
        return 0;  /* stray names are verify's business */
    if (g->n_objs == g->cap_objs) {
        g->cap_objs = g->cap_objs ? g->cap_objs * 2 : 256;
        g->objs = qp_xrealloc_array(g->objs, g->cap_objs, sizeof(*g->objs));
    }
    gc_object *o = &g->objs[g->n_objs++];
    memcpy(o->hex, hex, QP_HEX_LEN);
    o->path = qp_strdup(path);
    o->st = *st;
    o->removed = 0;
    return 0;
}

static void remove_object(gc_ctx *g, gc_object *o, uint64_t *total)
{
    qp_cache_unlink_if_same(o->path, &o->st);
    o->removed = 1;
    g->res.removed_objects++;
    g->res.removed_bytes += (uint64_t)o->st.st_size;
    *total -= (uint64_t)o->st.st_size;
}

/* oldest first; path breaks ties so the order is deterministic */
static int by_mtime(const void *pa, const void *pb)
{
    const gc_action *a = pa, *b = pb;
    if (a->st.st_mtim.tv_sec != b->st.st_mtim.tv_sec)
        return a->st.st_mtim.tv_sec < b->st.st_mtim.tv_sec ? -1 : 1;
    if (a->st.st_mtim.tv_nsec != b->st.st_mtim.tv_nsec)
        return a->st.st_mtim.tv_nsec < b->st.st_mtim.tv_nsec ? -1 : 1;
    return strcmp(a->path, b->path);
}

static void evict(gc_ctx *g, uint64_t max_bytes, uint64_t *total)
{
    qp_digest_map index;  /* digest -> position in objs */
    qp_digest_map_init(&index);
    for (size_t i = 0; i < g->n_objs; i++)
        *qp_digest_map_slot(&index, g->objs[i].hex) = i;
    qsort(g->acts, g->n_acts, sizeof(*g->acts), by_mtime);
    for (size_t i = 0; i < g->n_acts && *total > max_bytes; i++) {
        gc_action *a = &g->acts[i];
        qp_cache_unlink_if_same(a->path, &a->st);
        g->res.removed_actions++;
        for (size_t k = 0; k < a->n; k++) {
            uint64_t *cnt = qp_digest_map_find(&g->refcount, a->digests[k]);
            if (!cnt || --*cnt > 0)
                continue;
            uint64_t *pos = qp_digest_map_find(&index, a->digests[k]);
            if (pos && !g->objs[*pos].removed)
                remove_object(g, &g->objs[*pos], total);
        }
    }
    qp_digest_map_free(&index);
}

/* Forgets memos of files that no longer exist (they can never hit). */
static int sweep_memo(void *ud, const char *hex, const char *path, const struct stat *st)
{
    char *recorded = NULL;
    if (hex && qp_memo_check(path, &recorded) == 0 && !qp_path_exists(recorded))
        qp_cache_unlink_if_same(path, st);
    free(recorded);
    return 0;
}

int qp_cache_gc(qp_cache *c, uint64_t max_bytes, qp_cache_gc_result *out)
{
    int rc;
    gc_ctx g;
    memset(&g, 0, sizeof(g));
    g.c = c;
    qp_digest_map_init(&g.refcount);
    /* Converting our shared lock may drop it even when it fails; it is
     * taken back (shared) at the end either way. */
    int alone = flock(c->store_lock_fd, LOCK_EX | LOCK_NB) == 0;
    time_t cutoff = alone ? (time_t)-1 : time(NULL) - GC_GRACE_S;

    if ((rc = qp_cache_walk(c->actions, collect_action, &g)) != 0 ||
        (rc = qp_cache_walk(c->objects, collect_object, &g)) != 0)
        goto done;
    uint64_t total = 0;
    for (size_t i = 0; i < g.n_objs; i++)
        total += (uint64_t)g.objs[i].st.st_size;
    for (size_t i = 0; i < g.n_objs; i++) {
        gc_object *o = &g.objs[i];
        if (!qp_digest_map_find(&g.refcount, o->hex) && (alone || o->st.st_mtime < cutoff))
            remove_object(&g, o, &total);
    }
    if (max_bytes > 0 && total > max_bytes)
        evict(&g, max_bytes, &total);
    if ((rc = qp_cache_tmp_sweep(c, 1, NULL, NULL)) != 0 ||
        (rc = qp_cache_walk(c->files, sweep_memo, &g)) != 0)
        goto done;
    if (out)
        *out = g.res;
done:
    while (flock(c->store_lock_fd, LOCK_SH) != 0 && errno == EINTR)
        ;
    for (size_t i = 0; i < g.n_acts; i++) {
        free(g.acts[i].path);
        free(g.acts[i].digests);
    }
    for (size_t i = 0; i < g.n_objs; i++)
        free(g.objs[i].path);
    free(g.acts);
    free(g.objs);
    qp_digest_map_free(&g.refcount);
    return rc;
}
