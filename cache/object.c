/* Objects: zstd frames named by the SHA-256 of their uncompressed bytes.
 *
 * Writers stream into tmp/ (constant memory), fsync and rename into
 * objects/ab/cdef… without replacing an existing copy, so a reader only ever
 * sees complete frames.  Readers re-hash everything they decode and remove
 * an object that fails any check, so wrong bytes are never returned. */
#include "cache/cache_internal.h"
#include "common/alloc.h"
#include "common/buf.h"
#include "common/error.h"
#include "common/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>
#include <zstd_errors.h>

#define QP_ZSTD_LEVEL 3
#define IO_CHUNK ((size_t)1 << 20)     /* read size for files and objects */
#define ZOUT_CHUNK ((size_t)256 << 10) /* compressed/decompressed output */
#define FRAME_HEADER_MAX 18            /* ZSTD_FRAMEHEADERSIZE_MAX (static-only API) */

/* ---- decoding ---- */

/* Where decoded bytes go: hint() gets the frame's recorded size before the
 * first write (UINT64_MAX when unknown); write() returns 0 or an error code
 * (already set), which aborts the decode without blaming the object. */
typedef struct {
    void (*hint)(void *ud, uint64_t expected);
    int (*write)(void *ud, const void *p, size_t n);
    void *ud;
} decode_sink;

static int bad_digest_arg(const char *digest)
{
    return qp_error_set(QP_ERROR, "invalid object digest '%.80s': expected 64 lowercase hex characters",
                        digest ? digest : "(null)");
}

static int corrupt(const char *path, const struct stat *st, const char *digest, const char *reason)
{
    qp_cache_unlink_if_same(path, st);
    return qp_error_set(QP_ECORRUPT, "cache object %s: corrupt (%s); removed, rerun to recompute",
                        digest, reason);
}

static ssize_t read_some(int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* One object being decoded and checked. */
typedef struct {
    const char *path, *digest;
    const struct stat *st;          /* of the file opened, for corrupt() */
    ZSTD_DCtx *dctx;
    qp_sha256 *h;                   /* of the decoded bytes */
    unsigned char *obuf;            /* [ZOUT_CHUNK] */
    const decode_sink *sink;        /* may be NULL: check only */
    uint64_t expected, total;       /* frame header's size (UINT64_MAX: none), bytes so far */
    int frame_done;
} decoder;

/* The first read (got bytes of ibuf): a zstd frame header, whose recorded
 * size goes to the sink's hint. */
static int decode_header(decoder *d, const unsigned char *ibuf, size_t got)
{
    if (got == 0)
        return corrupt(d->path, d->st, d->digest, "empty file");
    unsigned long long fcs = ZSTD_getFrameContentSize(ibuf, got);
    if (fcs == ZSTD_CONTENTSIZE_ERROR)
        return corrupt(d->path, d->st, d->digest, "not a zstd frame");
    if (fcs != ZSTD_CONTENTSIZE_UNKNOWN)
        d->expected = fcs;
    if (d->sink && d->sink->hint)
        d->sink->hint(d->sink->ud, d->expected);
    return 0;
}

/* Decompresses got bytes of ibuf, hashing and passing on what comes out. */
static int decode_input(decoder *d, const unsigned char *ibuf, size_t got)
{
    char reason[160];
    int rc;
    ZSTD_inBuffer in = {ibuf, got, 0};
    while (in.pos < in.size) {
        if (d->frame_done)
            return corrupt(d->path, d->st, d->digest, "trailing bytes after the zstd frame");
        ZSTD_outBuffer out = {d->obuf, ZOUT_CHUNK, 0};
        size_t ret = ZSTD_decompressStream(d->dctx, &out, &in);
        if (ZSTD_isError(ret)) {
            snprintf(reason, sizeof(reason), "zstd: %s", ZSTD_getErrorName(ret));
            return corrupt(d->path, d->st, d->digest, reason);
        }
        if (out.pos > 0) {
            d->total += out.pos;
            if (d->total > d->expected)
                return corrupt(d->path, d->st, d->digest, "longer than its frame header says");
            qp_sha256_update(d->h, d->obuf, out.pos);
            if (d->sink && (rc = d->sink->write(d->sink->ud, d->obuf, out.pos)) != 0)
                return rc;
        }
        if (ret == 0)
            d->frame_done = 1;
    }
    return 0;
}

/* At EOF: a whole frame of the recorded size whose bytes hash to the
 * object's name. */
static int decode_finish(decoder *d)
{
    /* zstd does not consume a frame's last byte before it has flushed all
     * of its data, so "frame not done" at EOF means the file is short. */
    if (!d->frame_done)
        return corrupt(d->path, d->st, d->digest, "truncated");
    if (d->expected != UINT64_MAX && d->total != d->expected)
        return corrupt(d->path, d->st, d->digest, "size differs from its frame header");
    char actual[QP_HEX_LEN];
    qp_sha256_final_hex(d->h, actual);
    if (strcmp(actual, d->digest) != 0)
        return corrupt(d->path, d->st, d->digest, "digest mismatch");
    return 0;
}

static int decode(qp_cache *c, const char *digest, const decode_sink *sink, uint64_t *out_size)
{
    int rc = QP_ERROR, fd = -1;
    char *path = NULL;
    unsigned char *ibuf = NULL;
    struct stat st;
    decoder d = {.digest = digest, .st = &st, .sink = sink, .expected = UINT64_MAX};
    if (!qp_is_hex_digest(digest))
        return bad_digest_arg(digest);
    d.path = path = qp_cache_fanout_path(c->objects, digest);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            rc = qp_error_set(QP_ENOTFOUND, "cache object %s: not in the cache", digest);
        else
            rc = qp_error_errno(QP_ERROR, "%s: cannot open cache object", path);
        goto done;
    }
    if (fstat(fd, &st) != 0) {
        rc = qp_error_errno(QP_ERROR, "%s: cannot stat", path);
        goto done;
    }
    ibuf = qp_xmalloc(IO_CHUNK);
    d.obuf = qp_xmalloc(ZOUT_CHUNK);
    if (!(d.dctx = ZSTD_createDCtx())) {
        rc = qp_error_set(QP_ERROR, "cache object %s: zstd cannot create a decompression context", digest);
        goto done;
    }
    if ((rc = qp_sha256_new(&d.h)) != 0)
        goto done;
    for (int first = 1;; first = 0) {
        ssize_t got = read_some(fd, ibuf, IO_CHUNK);
        if (got < 0) {
            rc = qp_error_errno(QP_ERROR, "%s: cannot read cache object", path);
            goto done;
        }
        if (first && (rc = decode_header(&d, ibuf, (size_t)got)) != 0)
            goto done;
        if (got == 0)
            break;
        if ((rc = decode_input(&d, ibuf, (size_t)got)) != 0)
            goto done;
    }
    if ((rc = decode_finish(&d)) != 0)
        goto done;
    if (out_size)
        *out_size = d.total;
    rc = 0;
done:
    if (fd >= 0)
        close(fd);
    qp_sha256_free(d.h);
    ZSTD_freeDCtx(d.dctx);
    free(ibuf);
    free(d.obuf);
    free(path);
    return rc;
}

int qp_cache_object_check(qp_cache *c, const char *digest, uint64_t *out_size)
{
    return decode(c, digest, NULL, out_size);
}

/* ---- get into memory ---- */

static void mem_hint(void *ud, uint64_t expected)
{
    /* The header is not trusted yet (a flipped bit could claim petabytes):
     * preallocate it only when plausible, otherwise grow as bytes arrive. */
    qp_buf_reserve(ud, expected <= ((uint64_t)1 << 30) ? (size_t)expected : ((size_t)1 << 20));
}

static int mem_write(void *ud, const void *p, size_t n)
{
    qp_buf_append(ud, p, n);
    return 0;
}

int qp_cache_get(qp_cache *c, const char *digest, void **out, size_t *out_len)
{
    qp_buf m = QP_BUF_INIT;
    decode_sink s = {mem_hint, mem_write, &m};
    int rc = decode(c, digest, &s, NULL);
    if (rc != 0) {
        qp_buf_free(&m);
        return rc;
    }
    /* NUL-terminated: a convenience for text objects, not counted */
    *out = qp_buf_detach(&m, out_len);
    return 0;
}

/* ---- get into a file ---- */

typedef struct {
    int fd;
    const char *path;
} fd_sink;

static int fd_write(void *ud, const void *p, size_t n)
{
    fd_sink *f = ud;
    if (qp_write_all(f->fd, p, n) != 0)
        return qp_error_errno(QP_ERROR, "%s: cannot write", f->path);
    return 0;
}

int qp_cache_get_to_file(qp_cache *c, const char *digest, const char *path)
{
    int rc, fd = -1;
    char *tmp = NULL, *dir = qp_path_dirname(path);
    if ((rc = qp_mkdir_p(dir, 0755)) != 0)
        goto done;
    if ((rc = qp_mkstemp_in(dir, ".qpipe-tmp", &tmp, &fd)) != 0)
        goto done;
    fd_sink f = {fd, path};
    decode_sink s = {NULL, fd_write, &f};
    if ((rc = decode(c, digest, &s, NULL)) != 0)
        goto done;
    fchmod(fd, 0644);
    rc = qp_cache_commit(fd, tmp, path, 0, NULL);
    fd = -1;
    tmp = NULL;
done:
    qp_tmp_discard(fd, tmp);
    free(dir);
    return rc;
}

/* ---- sizes and presence ---- */

int qp_cache_object_header_size(const char *path, uint64_t *out)
{
    unsigned char hdr[FRAME_HEADER_MAX];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return qp_error_errno(errno == ENOENT ? QP_ENOTFOUND : QP_ERROR, "%s: cannot open cache object",
                              path);
    ssize_t got = read_some(fd, hdr, sizeof(hdr));
    close(fd);
    if (got < 0)
        return qp_error_errno(QP_ERROR, "%s: cannot read", path);
    unsigned long long fcs = ZSTD_getFrameContentSize(hdr, (size_t)got);
    if (fcs == ZSTD_CONTENTSIZE_ERROR)
        return QP_ECORRUPT;
    if (fcs == ZSTD_CONTENTSIZE_UNKNOWN)
        return 1;
    *out = fcs;
    return 0;
}

int qp_cache_object_size(qp_cache *c, const char *digest, uint64_t *out)
{
    if (!qp_is_hex_digest(digest))
        return bad_digest_arg(digest);
    char *path = qp_cache_fanout_path(c->objects, digest);
    int rc = qp_cache_object_header_size(path, out);
    free(path);
    if (rc == QP_ENOTFOUND)
        return qp_error_set(QP_ENOTFOUND, "cache object %s: not in the cache", digest);
    if (rc == QP_ECORRUPT || rc == 1)
        /* unreadable header: the full check removes it and says why; a
         * frame without a recorded size is measured by decoding it */
        return qp_cache_object_check(c, digest, out);
    return rc;
}

int qp_cache_has(qp_cache *c, const char *digest)
{
    if (!qp_is_hex_digest(digest))
        return 0;
    char *path = qp_cache_fanout_path(c->objects, digest);
    struct stat st;
    int ok = stat(path, &st) == 0 && S_ISREG(st.st_mode);
    free(path);
    return ok;
}

int qp_cache_remove(qp_cache *c, const char *digest)
{
    if (!qp_is_hex_digest(digest))
        return qp_error_set(QP_ERROR, "invalid object digest '%.80s': expected 64 lowercase hex characters",
                            digest ? digest : "(null)");
    int used = 0;
    int rc = qp_cache_action_referenced(c, digest, &used);
    if (rc != 0 || used)
        return rc;
    char *path = qp_cache_fanout_path(c->objects, digest);
    if (unlink(path) != 0 && errno != ENOENT)
        rc = qp_error_errno(QP_ERROR, "%s: cannot remove cache object", path);
    free(path);
    return rc;
}

/* ---- putting ---- */

/* 1 when the object exists.  Its mtime is bumped so gc's grace period for
 * unreferenced objects also covers a dedup hit whose action is not written
 * yet. */
static int touch_existing(const char *path)
{
    if (utimensat(AT_FDCWD, path, NULL, 0) == 0)
        return 1;
    if (errno == ENOENT)
        return 0;
    struct stat st;  /* read-only cache: still a hit */
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Compresses [in] to fd, flushing every output buffer; mode is
 * ZSTD_e_continue or ZSTD_e_end (then loops until the frame is complete). */
static int compress_to_fd(ZSTD_CCtx *cctx, ZSTD_inBuffer *in, ZSTD_EndDirective mode,
                          unsigned char *obuf, int fd, const char *tmp, const char *what)
{
    for (;;) {
        ZSTD_outBuffer out = {obuf, ZOUT_CHUNK, 0};
        size_t ret = ZSTD_compressStream2(cctx, &out, in, mode);
        if (ZSTD_isError(ret)) {
            if (ZSTD_getErrorCode(ret) == ZSTD_error_srcSize_wrong)
                return qp_error_set(QP_ERROR, "%s: file changed size while it was being stored; retry", what);
            return qp_error_set(QP_ERROR, "%s: zstd compression failed: %s", what, ZSTD_getErrorName(ret));
        }
        if (out.pos > 0 && qp_write_all(fd, obuf, out.pos) != 0)
            return qp_error_errno(QP_ERROR, "%s: cannot write", tmp);
        if (mode == ZSTD_e_end ? ret == 0 : in->pos == in->size)
            return 0;
    }
}

static ZSTD_CCtx *new_cctx(uint64_t pledged)
{
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    if (!cctx)
        return NULL;
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, QP_ZSTD_LEVEL);
    /* the XXH64 frame checksum lets a corrupt object fail early and say so */
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1);
    if (pledged != UINT64_MAX)
        ZSTD_CCtx_setPledgedSrcSize(cctx, pledged);
    return cctx;
}

/* Moves a finished temp file into objects/ unless the object appeared
 * meanwhile (same content by construction, so either copy is fine). */
static int install_object(qp_cache *c, int fd, char *tmp, const char *digest)
{
    int rc;
    char *path = qp_cache_fanout_path(c->objects, digest);
    if (touch_existing(path)) {
        qp_tmp_discard(fd, tmp);
        rc = 0;
        goto done;
    }
    if ((rc = qp_cache_fanout_mkdir(c->objects, digest)) != 0) {
        qp_tmp_discard(fd, tmp);
        goto done;
    }
    fchmod(fd, 0444);  /* objects are immutable */
    rc = qp_cache_commit(fd, tmp, path, 1, NULL);
done:
    free(path);
    return rc;
}

int qp_cache_put(qp_cache *c, const void *data, size_t n, char digest[QP_HEX_LEN])
{
    int rc = QP_ERROR, fd = -1;
    char hex[QP_HEX_LEN], *path = NULL, *tmp = NULL;
    unsigned char *obuf = NULL;
    ZSTD_CCtx *cctx = NULL;
    qp_sha256_buf(hex, data, n);
    path = qp_cache_fanout_path(c->objects, hex);
    if (touch_existing(path)) {
        memcpy(digest, hex, QP_HEX_LEN);
        rc = 0;
        goto done;
    }
    obuf = qp_xmalloc(ZOUT_CHUNK);
    if (!(cctx = new_cctx(n))) {
        rc = qp_error_set(QP_ERROR, "cache object: zstd cannot create a compression context");
        goto done;
    }
    if ((rc = qp_cache_tmp_open(c, "obj", &tmp, &fd)) != 0)
        goto done;
    ZSTD_inBuffer in = {data, n, 0};
    if ((rc = compress_to_fd(cctx, &in, ZSTD_e_end, obuf, fd, tmp, "cache object")) != 0)
        goto done;
    rc = install_object(c, fd, tmp, hex);
    fd = -1;
    tmp = NULL;
    if (rc == 0)
        memcpy(digest, hex, QP_HEX_LEN);
done:
    qp_tmp_discard(fd, tmp);
    ZSTD_freeCCtx(cctx);
    free(obuf);
    free(path);
    return rc;
}

int qp_cache_put_file(qp_cache *c, const char *path, char digest[QP_HEX_LEN])
{
    int rc = QP_ERROR, fd = -1, tfd = -1;
    char hex[QP_HEX_LEN], *tmp = NULL, *rp = NULL, *opath = NULL;
    unsigned char *ibuf = NULL, *obuf = NULL;
    ZSTD_CCtx *cctx = NULL;
    qp_sha256 *h = NULL;
    struct stat st, st2;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = qp_error_errno(errno == ENOENT ? QP_ENOTFOUND : QP_ERROR, "%s: cannot open", path);
        goto done;
    }
    if (fstat(fd, &st) != 0) {
        rc = qp_error_errno(QP_ERROR, "%s: cannot stat", path);
        goto done;
    }
    if (S_ISDIR(st.st_mode)) {
        rc = qp_error_set(QP_ERROR, "%s: is a directory, expected a file", path);
        goto done;
    }
    int regular = S_ISREG(st.st_mode);
    if (regular && (rp = realpath(path, NULL)) != NULL && qp_memo_lookup(c, rp, &st, hex)) {
        /* unchanged since it was last hashed: no need to read it again */
        opath = qp_cache_fanout_path(c->objects, hex);
        if (touch_existing(opath)) {
            memcpy(digest, hex, QP_HEX_LEN);
            rc = 0;
            goto done;
        }
    }
    ibuf = qp_xmalloc(IO_CHUNK);
    obuf = qp_xmalloc(ZOUT_CHUNK);
    if (!(cctx = new_cctx(regular ? (uint64_t)st.st_size : UINT64_MAX))) {
        rc = qp_error_set(QP_ERROR, "%s: zstd cannot create a compression context", path);
        goto done;
    }
    if ((rc = qp_sha256_new(&h)) != 0 || (rc = qp_cache_tmp_open(c, "obj", &tmp, &tfd)) != 0)
        goto done;
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    for (;;) {
        ssize_t got = read_some(fd, ibuf, IO_CHUNK);
        if (got < 0) {
            rc = qp_error_errno(QP_ERROR, "%s: read failed", path);
            goto done;
        }
        if (got == 0)
            break;
        qp_sha256_update(h, ibuf, (size_t)got);
        ZSTD_inBuffer in = {ibuf, (size_t)got, 0};
        if ((rc = compress_to_fd(cctx, &in, ZSTD_e_continue, obuf, tfd, tmp, path)) != 0)
            goto done;
    }
    ZSTD_inBuffer end = {NULL, 0, 0};
    if ((rc = compress_to_fd(cctx, &end, ZSTD_e_end, obuf, tfd, tmp, path)) != 0)
        goto done;
    qp_sha256_final_hex(h, hex);
    rc = install_object(c, tfd, tmp, hex);
    tfd = -1;
    tmp = NULL;
    if (rc != 0)
        goto done;
    if (rp && fstat(fd, &st2) == 0 && qp_memo_same_file(&st, &st2))
        qp_memo_store(c, rp, &st, hex);
    memcpy(digest, hex, QP_HEX_LEN);
done:
    if (fd >= 0)
        close(fd);
    qp_tmp_discard(tfd, tmp);
    qp_sha256_free(h);
    ZSTD_freeCCtx(cctx);
    free(ibuf);
    free(obuf);
    free(rp);
    free(opath);
    return rc;
}
