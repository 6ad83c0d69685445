#include "common/fsutil.h"
#include "common/buf.h"
#include "common/alloc.h"
#include "common/error.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

char *qp_strdup(const char *s)
{
    return s ? qp_xstrdup(s) : NULL;
}

char *qp_strfmt(const char *fmt, ...)
{
    qp_buf b = QP_BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    qp_buf_vprintf(&b, fmt, ap);   /* an encoding error appends nothing: "" */
    va_end(ap);
    return qp_buf_detach(&b, NULL);
}

int qp_mkdir_p(const char *path, mode_t mode)
{
    char *p = qp_strdup(path);
    int rc = 0;
    for (char *s = p + 1; ; s++) {
        if (*s == '/' || *s == '\0') {
            char c = *s;
            *s = '\0';
            if (mkdir(p, mode) != 0 && errno != EEXIST) {
                rc = qp_error_errno(QP_ERROR, "%s: cannot create directory", p);
                break;
            }
            *s = c;
            if (c == '\0')
                break;
        }
    }
    if (rc == 0 && !qp_is_dir(path))
        rc = qp_error_set(QP_ERROR, "%s: exists and is not a directory", path);
    free(p);
    return rc;
}

int qp_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return qp_error_errno(QP_ERROR, "%s: cannot open directory", dir);
    /* EINVAL: a filesystem that cannot sync directories (nothing to wait for) */
    int rc = fsync(fd) != 0 && errno != EINVAL ? qp_error_errno(QP_ERROR, "%s: cannot sync directory", dir) : 0;
    close(fd);
    return rc;
}

int qp_mkstemp_in(const char *dir, const char *prefix, char **out_path, int *out_fd)
{
    char *tmpl = qp_strfmt("%s/%s.XXXXXX", dir, prefix);
    int fd = mkostemp(tmpl, O_CLOEXEC);
    if (fd < 0) {
        int rc = qp_error_errno(QP_ERROR, "%s: cannot create a temporary file", dir);
        free(tmpl);
        return rc;
    }
    *out_path = tmpl;
    *out_fd = fd;
    return 0;
}

int qp_write_all(int fd, const void *data, size_t n)
{
    const char *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int qp_tmp_publish(int fd, char *tmp, const char *path, mode_t mode)
{
    int rc = 0;
    if (fsync(fd) != 0)
        rc = qp_error_errno(QP_ERROR, "%s: cannot write", tmp);
    else
        fchmod(fd, mode);
    if (close(fd) != 0 && rc == 0)
        rc = qp_error_errno(QP_ERROR, "%s: cannot write", tmp);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = qp_error_errno(QP_ERROR, "%s: cannot rename into place", path);
    if (rc != 0) {
        qp_tmp_discard(-1, tmp);
        return rc;
    }
    free(tmp);
    char *dir = qp_path_dirname(path);
    qp_fsync_dir(dir);
    free(dir);
    return 0;
}

void qp_tmp_discard(int fd, char *tmp)
{
    if (fd >= 0)
        close(fd);
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
}

int qp_write_file_atomic(const char *path, const void *data, size_t n, const char *tmp_dir)
{
    int rc, fd = -1;
    char *tmp = NULL;
    char *dir = tmp_dir ? NULL : qp_path_dirname(path);
    rc = qp_mkstemp_in(tmp_dir ? tmp_dir : dir, ".tmp", &tmp, &fd);
    free(dir);
    if (rc != 0)
        return rc;
    if (qp_write_all(fd, data, n) != 0) {
        rc = qp_error_errno(QP_ERROR, "%s: cannot write", tmp);
        qp_tmp_discard(fd, tmp);
        return rc;
    }
    return qp_tmp_publish(fd, tmp, path, 0644);
}

int qp_map_file(const char *path, unsigned char **map, size_t *size)
{
    int rc = 0;
    struct stat st;
    *map = NULL;
    *size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return qp_error_errno(errno == ENOENT ? QP_ENOTFOUND : QP_ERROR, "%s: cannot open", path);
    if (fstat(fd, &st) != 0) {
        rc = qp_error_errno(QP_ERROR, "%s: cannot stat", path);
    } else if (!S_ISREG(st.st_mode)) {
        rc = qp_error_set(QP_ERROR, "%s: not a regular file", path);
    } else if (st.st_size > 0) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            rc = qp_error_errno(QP_ERROR, "%s: cannot mmap %zu bytes", path, (size_t)st.st_size);
        } else {
            *map = p;
            *size = (size_t)st.st_size;
        }
    }
    close(fd);
    return rc;
}

/* max: the most bytes accepted, and then only a regular file (a device,
 * a FIFO or /dev/zero would be read without end) */
static int read_file(const char *path, size_t max, int nofollow, char **out, size_t *out_len)
{
    int rc = QP_ERROR;
    qp_buf b = QP_BUF_INIT;
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC | (max != SIZE_MAX ? O_NONBLOCK : 0) | (nofollow ? O_NOFOLLOW : 0));
    if (fd < 0 && errno == ELOOP && nofollow)
        return qp_error_set(QP_ECORRUPT, "%s: a symbolic link, not a file", path);
    if (fd < 0)
        return qp_error_errno(errno == ENOENT ? QP_ENOTFOUND : QP_ERROR, "%s: cannot open", path);
    if (fstat(fd, &st) != 0) {
        qp_error_errno(QP_ERROR, "%s: cannot read", path);
        goto done;
    }
    if (S_ISDIR(st.st_mode)) {
        qp_error_set(QP_ERROR, "%s: cannot read: Is a directory", path);
        goto done;
    }
    if (max != SIZE_MAX && !S_ISREG(st.st_mode)) {
        qp_error_set(QP_EFORMAT, "%s: not a regular file (give the path of a file)", path);
        goto done;
    }
    if (max != SIZE_MAX && (uint64_t)st.st_size > max) {
        qp_error_set(QP_EFORMAT, "%s: %llu bytes, more than the %zu MiB this file may have", path,
                     (unsigned long long)st.st_size, max >> 20);
        goto done;
    }
    /* one spare byte: a read that fills it means the file grew (or is a
     * pipe), and the buffer grows; otherwise the size was right */
    qp_buf_reserve(&b, (size_t)st.st_size + 1);
    for (;;) {
        if (b.cap - b.len - 1 == 0)
            qp_buf_reserve(&b, 4096);
        ssize_t r = read(fd, b.data + b.len, b.cap - b.len - 1);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            qp_error_errno(QP_ERROR, "%s: cannot read", path);
            goto done;
        }
        if (r == 0)
            break;
        b.len += (size_t)r;
        if (b.len > max) {   /* grew while being read */
            qp_error_set(QP_EFORMAT, "%s: more than the %zu MiB this file may have", path, max >> 20);
            goto done;
        }
    }
    *out = qp_buf_detach(&b, out_len);
    rc = 0;
done:
    qp_buf_free(&b);
    close(fd);
    return rc;
}

int qp_read_file(const char *path, char **out, size_t *out_len)
{
    return read_file(path, SIZE_MAX, 0, out, out_len);
}

int qp_read_file_max(const char *path, size_t max, char **out, size_t *out_len)
{
    return read_file(path, max, 0, out, out_len);
}

int qp_read_file_nofollow(const char *path, size_t max, char **out, size_t *out_len)
{
    return read_file(path, max, 1, out, out_len);
}

int qp_read_file_tail(const char *path, size_t max, char **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);   /* a FIFO is not waited on */
    if (fd < 0)
        return qp_error_errno(errno == ENOENT ? QP_ENOTFOUND : QP_ERROR, "%s: cannot read", path);
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return qp_error_set(QP_ERROR, "%s: not a regular file", path);
    }
    off_t from = st.st_size > (off_t)max ? st.st_size - (off_t)max : 0;
    char *buf = qp_xmalloc((size_t)(st.st_size - from) + 1);
    ssize_t n = pread(fd, buf, (size_t)(st.st_size - from), from);
    close(fd);
    if (n < 0) {
        free(buf);
        return qp_error_errno(QP_ERROR, "%s: cannot read", path);
    }
    buf[n] = 0;
    *out = buf;
    *out_len = (size_t)n;
    return 0;
}

/* name in the directory parent; path is its whole path, for messages.  Each
 * directory is entered with O_NOFOLLOW through the descriptor of its
 * parent, so a directory swapped for a symbolic link while the removal
 * runs is unlinked as a link, never followed out of the tree. */
static int rm_at(int parent, const char *name, const char *path, int depth)
{
    struct stat st;
    if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return errno == ENOENT ? 0 : qp_error_errno(QP_ERROR, "%s: cannot stat", path);
    if (!S_ISDIR(st.st_mode)) {
        if (unlinkat(parent, name, 0) != 0 && errno != ENOENT)
            return qp_error_errno(QP_ERROR, "%s: cannot remove", path);
        return 0;
    }
    if (depth > 256)
        return qp_error_set(QP_ERROR, "%s: directories nested too deep to remove", path);
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ELOOP || errno == ENOTDIR)   /* swapped for a link or file since the stat */
            return unlinkat(parent, name, 0) == 0 || errno == ENOENT ? 0
                   : qp_error_errno(QP_ERROR, "%s: cannot remove", path);
        return qp_error_errno(QP_ERROR, "%s: cannot open directory", path);
    }
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return qp_error_errno(QP_ERROR, "%s: cannot open directory", path);
    }
    int rc = 0;
    for (struct dirent *e; rc == 0 && (e = readdir(d)) != NULL;) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char *child = qp_path_join(path, e->d_name);
        rc = rm_at(dirfd(d), e->d_name, child, depth + 1);
        free(child);
    }
    closedir(d);
    if (rc)
        return rc;
    if (unlinkat(parent, name, AT_REMOVEDIR) != 0 && errno != ENOENT)
        return qp_error_errno(QP_ERROR, "%s: cannot remove directory", path);
    return 0;
}

int qp_rm_rf(const char *path)
{
    return rm_at(AT_FDCWD, path, path, 0);
}

char *qp_path_join(const char *a, const char *b)
{
    if (!a || !*a || b[0] == '/')
        return qp_strdup(b);
    size_t la = strlen(a);
    if (a[la - 1] == '/')
        return qp_strfmt("%s%s", a, b);
    return qp_strfmt("%s/%s", a, b);
}

char *qp_path_dirname(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return qp_strdup(".");
    if (slash == path)
        return qp_strdup("/");
    return qp_xstrndup(path, (size_t)(slash - path));
}

const char *qp_first_control_char(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return s;
    return NULL;
}

int qp_path_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

int qp_is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

double qp_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int walk(const char *abs, const char *rel, int (*fn)(void *, const char *, const char *), void *ud)
{
    DIR *d = opendir(abs);
    if (!d)
        return qp_error_errno(QP_ERROR, "%s: cannot read directory", abs);
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || !strcmp(e->d_name, ".git") ||
            !strcmp(e->d_name, ".qpipe"))
            continue;
        char *child_abs = qp_path_join(abs, e->d_name);
        char *child_rel = rel[0] ? qp_strfmt("%s/%s", rel, e->d_name) : qp_strdup(e->d_name);
        struct stat st;
        if (stat(child_abs, &st) != 0)
            rc = qp_error_errno(QP_ERROR, "%s: cannot stat", child_abs);
        else if (S_ISDIR(st.st_mode))
            rc = walk(child_abs, child_rel, fn, ud);
        else if (S_ISREG(st.st_mode))
            rc = fn(ud, child_abs, child_rel);
        free(child_abs);
        free(child_rel);
    }
    closedir(d);
    return rc;
}

int qp_walk_files(const char *root, int (*fn)(void *ud, const char *abs, const char *rel), void *ud)
{
    return walk(root, "", fn, ud);
}
