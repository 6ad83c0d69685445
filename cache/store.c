/* Opening the cache, its directory layout and the write/rename helpers that
 * every other part of the store goes through. */
#include "cache/cache_internal.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

int qp_cache_open(qp_cache **out, const char *dir)
{
    int rc = QP_ERROR;
    char *lock_path = NULL;
    qp_cache *c = qp_xcalloc(1, sizeof(*c));
    c->store_lock_fd = -1;
    qp_cache_pending_init(c);
    c->dir = qp_strdup(dir);
    c->objects = qp_path_join(dir, "objects");
    c->actions = qp_path_join(dir, "actions");
    c->locks = qp_path_join(dir, "locks");
    c->files = qp_path_join(dir, "files");
    c->meta = qp_path_join(dir, "meta");
    c->tmp = qp_path_join(dir, "tmp");
    const char *subdirs[] = {c->objects, c->actions, c->locks, c->files, c->meta, c->tmp};
    for (size_t i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
        struct stat st;
        if ((rc = qp_mkdir_p(subdirs[i], 0755)) != 0) {
            qp_error_prefix("cache %s", dir);
            goto done;
        }
        /* the cache never follows a link out of itself (the cache
         * directory as given may be one; what is inside it may not) */
        if (lstat(subdirs[i], &st) != 0 || !S_ISDIR(st.st_mode)) {
            rc = qp_error_set(QP_ERROR, "cache %s: %s is not a directory of the cache (a symbolic link?); remove it",
                              dir, subdirs[i]);
            goto done;
        }
    }
    lock_path = qp_path_join(c->locks, "store.lock");
    c->store_lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (c->store_lock_fd < 0 && (errno == EROFS || errno == EACCES)) {
        /* a read-only cache (a CI cache mounted read-only) serves hits: a
         * shared lock needs no write access, and without a lock file no
         * gc can run on it either; a write fails where it happens */
        c->read_only = 1;
        c->store_lock_fd = open(lock_path, O_RDONLY | O_CLOEXEC);
        if (c->store_lock_fd < 0 && errno == ENOENT) {
            *out = c;
            c = NULL;
            rc = 0;
            goto done;
        }
    }
    if (c->store_lock_fd < 0) {
        rc = qp_error_errno(QP_ERROR, "%s: cannot open the cache lock", lock_path);
        goto done;
    }
    while (flock(c->store_lock_fd, LOCK_SH) != 0) {
        if (errno != EINTR) {
            rc = qp_error_errno(QP_ERROR, "%s: cannot lock", lock_path);
            goto done;
        }
    }
    *out = c;
    c = NULL;
    rc = 0;
done:
    free(lock_path);
    qp_cache_free(c);
    return rc;
}

void qp_cache_free(qp_cache *c)
{
    if (!c)
        return;
    if (c->store_lock_fd >= 0)
        close(c->store_lock_fd);
    qp_cache_pending_free(c);
    free(c->dir);
    free(c->objects);
    free(c->actions);
    free(c->locks);
    free(c->files);
    free(c->meta);
    free(c->tmp);
    free(c);
}

const char *qp_cache_dir(const qp_cache *c) { return c->dir; }

char *qp_cache_fanout_path(const char *base, const char *hex)
{
    /* objects/ab must be the cache's own directory: a symbolic link there
     * would take reads, renames and unlinks of "objects/ab/…" anywhere */
    char *d = qp_strfmt("%s/%.2s", base, hex);
    struct stat st;
    if (lstat(d, &st) == 0 && !S_ISDIR(st.st_mode)) {
        qp_rm_rf(d);
        qp_error_clear();
    }
    free(d);
    return qp_strfmt("%s/%.2s/%s", base, hex, hex + 2);
}

int qp_cache_remove_irregular(const char *path, const char *digest)
{
    struct stat st;
    const char *what = lstat(path, &st) != 0 ? "gone" : S_ISLNK(st.st_mode) ? "a symbolic link"
                       : S_ISDIR(st.st_mode) ? "a directory" : "not a regular file";
    qp_rm_rf(path);   /* lstat-based: a link is unlinked, never followed */
    return qp_error_set(QP_ECORRUPT, "cache object %s: %s in its place; removed, rerun to recompute", digest, what);
}

int qp_cache_is_read_only(const qp_cache *c)
{
    return c->read_only;
}

void qp_cache_set_recheck(qp_cache *c, int on)
{
    c->recheck_existing = on;
}

int qp_cache_fanout_mkdir(const char *base, const char *hex)
{
    char *d = qp_strfmt("%s/%.2s", base, hex);
    int rc = 0;
    if (mkdir(d, 0755) != 0 && errno != EEXIST)
        rc = qp_error_errno(QP_ERROR, "%s: cannot create directory", d);
    free(d);
    return rc;
}

void qp_cache_key_hex(char out[QP_HEX_LEN], const char *key)
{
    if (qp_is_hex_digest(key))
        memcpy(out, key, QP_HEX_LEN);
    else
        qp_sha256_buf(out, key, strlen(key));
}

int qp_cache_tmp_open(qp_cache *c, const char *prefix, char **out_path, int *out_fd)
{
    int rc = qp_mkstemp_in(c->tmp, prefix, out_path, out_fd);
    if (rc != 0 && errno == ENOENT) {
        /* someone removed tmp/ (e.g. rm -rf of a cache subdir): recreate */
        if (qp_mkdir_p(c->tmp, 0755) == 0)
            rc = qp_mkstemp_in(c->tmp, prefix, out_path, out_fd);
    }
    return rc;
}

/* rename without replacing: renameat2(RENAME_NOREPLACE) where the
 * filesystem supports it, else link+unlink (same effect, two steps). */
static int rename_noreplace(const char *from, const char *to)
{
#ifdef RENAME_NOREPLACE
    if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
        return -1;
#endif
    if (link(from, to) != 0)
        return -1;
    unlink(from);
    return 0;
}

static int commit(int fd, char *tmp, const char *final, int no_replace, int *out_existed, int sync)
{
    int rc = QP_ERROR, existed = 0;
    char *dir = NULL;
    if (!sync) {
#ifdef SYNC_FILE_RANGE_WRITE
        /* start writeback now; qp_cache_sync waits for it */
        (void)sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
#endif
    } else if (fsync(fd) != 0) {
        qp_error_errno(QP_ERROR, "%s: cannot sync", tmp);
        close(fd);
        goto done;
    }
    if (close(fd) != 0) {
        qp_error_errno(QP_ERROR, "%s: cannot write", tmp);
        goto done;
    }
    int r = no_replace ? rename_noreplace(tmp, final) : rename(tmp, final);
    if (r != 0) {
        if (no_replace && errno == EEXIST) {
            existed = 1;
        } else {
            qp_error_errno(QP_ERROR, "%s: cannot rename into place", final);
            goto done;
        }
    }
    if (!existed) {
        free(tmp);
        tmp = NULL;
        dir = qp_path_dirname(final);
        if (sync)
            qp_fsync_dir(dir);
    }
    if (out_existed)
        *out_existed = existed;
    rc = 0;
done:
    qp_tmp_discard(-1, tmp);
    free(dir);
    return rc;
}

int qp_cache_commit(int fd, char *tmp, const char *final, int no_replace, int *out_existed)
{
    return commit(fd, tmp, final, no_replace, out_existed, 1);
}

int qp_cache_commit_object(qp_cache *c, int fd, char *tmp, const char *final)
{
    /* an existing copy (another writer's) is synced like this one */
    int rc = commit(fd, tmp, final, 1, NULL, 0);
    if (rc == 0)
        qp_cache_pending_add(c, final);
    return rc;
}

void qp_cache_unlink_if_same(const char *path, const struct stat *st)
{
    struct stat now;
    if (stat(path, &now) == 0 && now.st_ino == st->st_ino && now.st_dev == st->st_dev)
        unlink(path);
}

static int is_hex_char(char ch) { return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'); }

int qp_cache_walk_irregular(const char *base, qp_cache_walk_cb cb, void *ud)
{
    int rc = 0;
    DIR *top = opendir(base);
    if (!top)
        return errno == ENOENT ? 0 : qp_error_errno(QP_ERROR, "%s: cannot list", base);
    struct dirent *d;
    while (rc == 0 && (d = readdir(top)) != NULL) {
        if (d->d_name[0] == '.' && (!d->d_name[1] || (d->d_name[1] == '.' && !d->d_name[2])))
            continue;
        char *sub = qp_path_join(base, d->d_name);
        struct stat st;
        if (lstat(sub, &st) != 0) {
            free(sub);
            continue;   /* removed meanwhile */
        }
        if (!S_ISDIR(st.st_mode)) {
            rc = cb(ud, NULL, sub, &st);
            free(sub);
            continue;
        }
        DIR *sd = opendir(sub);
        struct dirent *e;
        while (sd && rc == 0 && (e = readdir(sd)) != NULL) {
            if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2])))
                continue;
            char *path = qp_path_join(sub, e->d_name);
            if (lstat(path, &st) == 0 && !S_ISREG(st.st_mode))
                rc = cb(ud, NULL, path, &st);
            free(path);
        }
        if (sd)
            closedir(sd);
        free(sub);
    }
    closedir(top);
    return rc;
}

int qp_cache_walk(const char *base, qp_cache_walk_cb cb, void *ud)
{
    int rc = 0;
    DIR *top = opendir(base);
    if (!top) {
        if (errno == ENOENT)
            return 0;
        return qp_error_errno(QP_ERROR, "%s: cannot list", base);
    }
    struct dirent *d;
    while (rc == 0 && (d = readdir(top)) != NULL) {
        if (strlen(d->d_name) != 2 || !is_hex_char(d->d_name[0]) || !is_hex_char(d->d_name[1]))
            continue;
        char *sub = qp_path_join(base, d->d_name);
        struct stat sst;
        DIR *sd = lstat(sub, &sst) == 0 && S_ISDIR(sst.st_mode) ? opendir(sub) : NULL;
        if (!sd) {
            free(sub);
            continue;  /* removed meanwhile, or not a directory (never a link followed) */
        }
        struct dirent *e;
        while (rc == 0 && (e = readdir(sd)) != NULL) {
            if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2])))
                continue;
            char *path = qp_path_join(sub, e->d_name);
            struct stat st;
            if (lstat(path, &st) == 0 && S_ISREG(st.st_mode)) {
                char hex[QP_HEX_LEN] = "";
                if (strlen(e->d_name) == QP_HEX_LEN - 3) {
                    memcpy(hex, d->d_name, 2);
                    memcpy(hex + 2, e->d_name, QP_HEX_LEN - 2);
                }
                rc = cb(ud, qp_is_hex_digest(hex) ? hex : NULL, path, &st);
            }
            free(path);
        }
        closedir(sd);
        free(sub);
    }
    closedir(top);
    return rc;
}

int qp_cache_tmp_sweep(qp_cache *c, int remove_stale, uint64_t *n_files, uint64_t *n_removed)
{
    uint64_t files = 0, removed = 0;
    DIR *d = opendir(c->tmp);
    if (!d) {
        if (errno != ENOENT)
            return qp_error_errno(QP_ERROR, "%s: cannot list", c->tmp);
    } else {
        time_t now = time(NULL);
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char *path = qp_path_join(c->tmp, e->d_name);
            struct stat st;
            if (lstat(path, &st) == 0 && S_ISREG(st.st_mode)) {
                if (remove_stale && now - st.st_mtime > QP_CACHE_STALE_TMP_S && unlink(path) == 0)
                    removed++;
                else
                    files++;
            }
            free(path);
        }
        closedir(d);
    }
    if (n_files)
        *n_files = files;
    if (n_removed)
        *n_removed = removed;
    return 0;
}
