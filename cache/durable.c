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
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int qp_cache_sync(qp_cache *c)
{
    pthread_mutex_lock(&c->pending_mu);
    char **list = c->pending;
    size_t n = c->n_pending;
    c->pending = NULL;
    c->n_pending = c->cap_pending = 0;
    pthread_mutex_unlock(&c->pending_mu);
    if (n == 0)
        return 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
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
    /* each fan-out directory once: the renames */
    for (size_t i = 0; i < n; i++) {
        char *slash = strrchr(list[i], '/');
        if (slash)
            *slash = '\0';
    }
    qsort(list, n, sizeof(*list), cmp_str);
    for (size_t i = 0; i < n && rc == 0; i++)
        if (i == 0 || strcmp(list[i], list[i - 1]) != 0)
            qp_fsync_dir(list[i]);
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
    return rc;
}
