/* Objects are made durable in a batch, before the action entry that names
 * them: qp_cache_commit_object lists each object it renames into place,
 * qp_cache_sync fsyncs the listed files and then their directories, once
 * each.  A stage writing hundreds of tensors used to wait for the disk
 * after every one of them. */
#include "cache/cache_internal.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void qp_cache_pending_init(qp_cache *c)
{
    pthread_mutex_init(&c->pending_mu, NULL);
    pthread_mutex_init(&c->sync_mu, NULL);
}

void qp_cache_pending_add(qp_cache *c, const char *path)
{
    pthread_mutex_lock(&c->pending_mu);
    if (c->n_pending == c->cap_pending) {
        c->cap_pending = c->cap_pending ? 2 * c->cap_pending : 64;
        c->pending = qp_xrealloc_array(c->pending, c->cap_pending, sizeof(*c->pending));
    }
    c->pending[c->n_pending++] = qp_strdup(path);
    pthread_mutex_unlock(&c->pending_mu);
}

void qp_cache_pending_free(qp_cache *c)
{
    for (size_t i = 0; i < c->n_pending; i++)
        free(c->pending[i]);
    free(c->pending);
    c->pending = NULL;
    c->n_pending = c->cap_pending = 0;
    pthread_mutex_destroy(&c->pending_mu);
    pthread_mutex_destroy(&c->sync_mu);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Puts list[from..n) back on the pending list (a failed sync: the next
 * entry must not find it empty). */
static void requeue(qp_cache *c, char **list, size_t from, size_t n)
{
    for (size_t i = from; i < n; i++) {
        qp_cache_pending_add(c, list[i]);
        free(list[i]);
        list[i] = NULL;
    }
}

int qp_cache_sync(qp_cache *c)
{
    /* held throughout: a caller that finds the list empty because another
     * thread took it must still wait until those files are on disk */
    pthread_mutex_lock(&c->sync_mu);
    pthread_mutex_lock(&c->pending_mu);
    char **list = c->pending;
    size_t n = c->n_pending;
    c->pending = NULL;
    c->n_pending = c->cap_pending = 0;
    pthread_mutex_unlock(&c->pending_mu);
    int rc = 0;
    size_t i = 0;
    for (; i < n && rc == 0; i++) {
        int fd = open(list[i], O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            if (errno != ENOENT)   /* removed since (gc, a corrupt copy): nothing to keep */
                rc = qp_error_errno(QP_ERROR, "%s: cannot open to sync", list[i]);
            continue;
        }
        if (fsync(fd) != 0)
            rc = qp_error_errno(QP_ERROR, "%s: cannot sync", list[i]);
        close(fd);
    }
    if (rc) {
        requeue(c, list, i - 1, n);   /* the failed one and the rest */
        goto done;
    }
    /* each fan-out directory once: the renames */
    char **dirs = qp_xmalloc((n ? n : 1) * sizeof(*dirs));
    for (i = 0; i < n; i++) {
        char *slash = strrchr(list[i], '/');
        dirs[i] = slash ? qp_xstrndup(list[i], (size_t)(slash - list[i])) : qp_strdup(".");
    }
    if (n)
        qsort(dirs, n, sizeof(*dirs), cmp_str);
    for (i = 0; i < n && rc == 0; i++)
        if (i == 0 || strcmp(dirs[i], dirs[i - 1]) != 0)
            rc = qp_fsync_dir(dirs[i]);
    if (rc)
        requeue(c, list, 0, n);   /* files synced again cost nothing; their renames are the point */
    for (i = 0; i < n; i++)
        free(dirs[i]);
    free(dirs);
done:
    for (i = 0; i < n; i++)
        free(list[i]);
    free(list);
    pthread_mutex_unlock(&c->sync_mu);
    return rc;
}
