/* Per-action locks: flock(2) on locks/ab/cdef….  flock locks belong to the
 * open file description, so the kernel drops them when the holder closes
 * the fd or dies (SIGKILL included): no stale lock files to clean up.  Lock
 * files themselves are never deleted — unlinking a file another process is
 * about to lock would let two holders lock different inodes. */
#include "cache/cache_internal.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/file.h>
#include <unistd.h>

struct qp_cache_lock {
    int fd;
};

int qp_cache_lock_acquire(qp_cache *c, const char *key, qp_cache_lock **out)
{
    int rc = QP_ERROR, fd = -1;
    char hex[QP_HEX_LEN];
    qp_cache_key_hex(hex, key);
    char *path = qp_cache_fanout_path(c->locks, hex);
    qp_cache_lock *l = NULL;
    if (c->read_only) {
        /* a read-only cache: the lock file when it exists (flock needs no
         * write access), else none — no one writes this cache through a
         * read-only mount, and a stage that must write fails at its write */
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 && errno != ENOENT) {
            rc = qp_error_errno(QP_ERROR, "%s: cannot open lock file", path);
            goto done;
        }
        if (fd < 0) {
            l = qp_xmalloc(sizeof(*l));
            l->fd = -1;
            *out = l;
            rc = 0;
            goto done;
        }
    } else if ((rc = qp_cache_fanout_mkdir(c->locks, hex)) != 0) {
        goto done;
    } else {
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    }
    if (fd < 0) {
        rc = qp_error_errno(QP_ERROR, "%s: cannot open lock file", path);
        goto done;
    }
    while (flock(fd, LOCK_EX) != 0) {
        if (errno != EINTR) {
            rc = qp_error_errno(QP_ERROR, "%s: cannot lock", path);
            goto done;
        }
    }
    l = qp_xmalloc(sizeof(*l));
    l->fd = fd;
    fd = -1;
    *out = l;
    rc = 0;
done:
    if (fd >= 0)
        close(fd);
    free(path);
    return rc;
}

void qp_cache_lock_release(qp_cache_lock *l)
{
    if (!l)
        return;
    if (l->fd >= 0)
        close(l->fd);  /* releases the flock */
    free(l);
}
