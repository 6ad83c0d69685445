/* Filesystem helpers: atomic writes, directory creation, path joining. */
#ifndef QP_COMMON_FSUTIL_H
#define QP_COMMON_FSUTIL_H

#include <stddef.h>
#include <sys/types.h>

/* mkdir -p; error names the path. */
int qp_mkdir_p(const char *path, mode_t mode);

/* Writes data to path atomically: a temp file in tmp_dir (or path's own
 * directory when tmp_dir is NULL; must be on the same filesystem), fsync,
 * rename over path, fsync of the directory.  A crash at any point leaves
 * either the old file or the new one, never a partial one. */
int qp_write_file_atomic(const char *path, const void *data, size_t n, const char *tmp_dir);

/* Maps a regular file whole, read-only and private: *map (NULL for an
 * empty file; munmap(*map, *size) when not) and *size.  QP_ENOTFOUND when
 * it does not exist; messages name path. */
int qp_map_file(const char *path, unsigned char **map, size_t *size);

/* Reads a whole file into a NUL-terminated malloc'ed buffer. */
int qp_read_file(const char *path, char **out, size_t *out_len);
/* The same for a regular file of at most max bytes: anything else (a
 * device, a FIFO, a larger file) is refused without reading it. */
int qp_read_file_max(const char *path, size_t max, char **out, size_t *out_len);
/* qp_read_file_max that does not follow a symbolic link (QP_ECORRUPT when
 * path is one): the cache's own small files. */
int qp_read_file_nofollow(const char *path, size_t max, char **out, size_t *out_len);
/* The last (at most) max bytes of a file, NUL-terminated (*out malloc'ed):
 * the end of a log, whatever its size. */
int qp_read_file_tail(const char *path, size_t max, char **out, size_t *out_len);

/* Makes a unique temp file (O_EXCL) in dir with the given prefix; returns
 * the fd and writes the path (malloc'ed) to *out_path. */
int qp_mkstemp_in(const char *dir, const char *prefix, char **out_path, int *out_fd);

/* Publishes a finished temp file (from qp_mkstemp_in, on path's
 * filesystem): fsync, chmod to mode, close, rename over path, fsync of
 * path's directory.  Takes fd and tmp either way: tmp is freed, and
 * unlinked when anything fails (error names the file). */
int qp_tmp_publish(int fd, char *tmp, const char *path, mode_t mode);

/* Gives up a temp file: closes fd (when >= 0), unlinks and frees tmp (when
 * not NULL).  For cleanup paths; never fails. */
void qp_tmp_discard(int fd, char *tmp);

/* write(2) until all n bytes are out (EINTR retried); -1 with errno set. */
int qp_write_all(int fd, const void *data, size_t n);

/* fsyncs a directory so a rename inside it is durable. */
int qp_fsync_dir(const char *dir);

/* Calls fn(ud, abs_path, rel_path) for every regular file under `root` (a
 * directory; symlinks followed), skipping .git and .qpipe; rel_path is
 * relative to root with '/' separators.  Order is readdir's: callers that
 * need an order sort.  A non-zero return from fn stops the walk. */
int qp_walk_files(const char *root, int (*fn)(void *ud, const char *abs, const char *rel), void *ud);

/* rm -rf; missing path is not an error. */
int qp_rm_rf(const char *path);

/* malloc'ed "a/b" (b returned as-is when absolute). */
char *qp_path_join(const char *a, const char *b);
/* malloc'ed directory part of path ("." when none). */
char *qp_path_dirname(const char *path);
/* The first control character (a byte below 0x20, or 0x7f) of a name or
 * path a user gives, NULL when it has none: a newline or an escape in a
 * file name splits or rewrites every log line and listing that shows it. */
const char *qp_first_control_char(const char *s);
/* 1 if path exists (any type). */
int qp_path_exists(const char *path);
int qp_is_dir(const char *path);

/* printf into a malloc'ed string.  Both follow common/alloc.h (never NULL
 * from an allocation); qp_strdup(NULL) is NULL. */
char *qp_strfmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *qp_strdup(const char *s);

/* Monotonic seconds. */
double qp_now(void);

#endif
