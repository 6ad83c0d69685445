/* Objects: zstd frames named by the SHA-256 of their uncompressed bytes.
 *
 * Two encodings, both plain zstd that `zstd -d` reads:
 *   compressed  one frame from libzstd (level QP_ZSTD_LEVEL);
 *   stored      a skippable frame marking it (STORED_MARKER), then one frame
 *               of raw blocks only, written and read here without libzstd.
 * Stored is for bytes that barely compress (quantized weights, bf16, the
 * packages): zstd costs 3-4 s per GB there to save under a third.
 *
 * Checks on read.  A compressed object is decoded and its bytes re-hashed
 * with SHA-256 (zstd's own frame checksum also runs).  A stored object
 * ends with a check frame written with it: the SHA-256 name it was stored
 * under and the XXH64 of its content.  A read checks that name against the
 * one asked for (a file renamed or copied to another object's path) and the
 * XXH64 against the bytes (a flipped bit, a truncation, an overwrite) at
 * ~10 GB/s instead of SHA-256's ~2 GB/s: reading the inputs of a quantize
 * or package stage was a third of its CPU time.  What XXH64 does not catch
 * is a deliberate forgery, which needs write access to the cache, where
 * one could as well write a consistent object and entry; `qpipe cache
 * verify` (qp_cache_object_check) re-hashes every object with SHA-256.
 * Stored objects written before the check frame existed ("QPSTORE1") are
 * re-hashed with SHA-256 on every read, as they always were.
 *
 * Writers stream into tmp/ (constant memory) and rename into
 * objects/ab/cdef… without replacing an existing copy, so a reader only ever
 * sees complete frames; the fsyncs come in one batch before the action
 * entry that names the objects (durable.c).  Readers re-hash everything they decode and remove
 * an object that fails any check, so wrong bytes are never returned. */
#include "cache/cache_internal.h"
#include "common/alloc.h"
#include "common/buf.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/xxh64.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <zstd.h>
#include <zstd_errors.h>

#define QP_ZSTD_LEVEL 3
#define IO_CHUNK ((size_t)1 << 20)     /* read size for files and objects (>= N_SAMPLES * SAMPLE_BYTES) */
#define ZOUT_CHUNK ((size_t)256 << 10) /* compressed/decompressed output */
#define FRAME_HEADER_MAX 18            /* ZSTD_FRAMEHEADERSIZE_MAX (static-only API) */

/* ---- stored objects (RFC 8878) ----
 * A skippable frame (magic 0x184D2A5E, 8 bytes "QPSTORE2") says what follows
 * is qpipe's stored encoding, then a zstd frame header: magic, descriptor
 * 0xC0 (8-byte content size, windowed, no dictionary, no zstd checksum),
 * window 128 KiB (0x38), the size; then blocks of at most 128 KiB, each a
 * 3-byte header (last flag, type 0 = raw, size) and the bytes themselves;
 * then the check frame, another skippable frame: magic 0x184D2A5E, size 48,
 * "QPCHECK1", the 32-byte SHA-256 name, the content's XXH64 (little-endian).
 * "QPSTORE1" objects are the same without the check frame. */
#define STORED_MARKER_LEN 16
#define STORED_HEADER_LEN (STORED_MARKER_LEN + 14)
#define STORED_BLOCK ((size_t)128 << 10)
#define STORED_IOV_BLOCKS 500            /* blocks per writev (2 iovecs each, IOV_MAX 1024) */
static const unsigned char stored_marker[STORED_MARKER_LEN] = {0x5E, 0x2A, 0x4D, 0x18, 8,   0,   0,   0,
                                                               'Q',  'P',  'S',  'T',  'O', 'R', 'E', '2'};
#define CHECK_FRAME_LEN 56
static const unsigned char check_frame_head[16] = {0x5E, 0x2A, 0x4D, 0x18, 48,  0,   0,   0,
                                                   'Q',  'P',  'C',  'H',  'E', 'C', 'K', '1'};
static const unsigned char zstd_magic[4] = {0x28, 0xB5, 0x2F, 0xFD};

/* Store rather than compress when zstd keeps more than this fraction of
 * most samples: bf16 weights keep 0.7-0.8, quantized blocks 0.95 or more,
 * text, JSON and f32 widened from bf16 under 0.5. */
#define STORED_ABOVE_RATIO QP_CACHE_STORED_ABOVE
#define N_SAMPLES 7
#define SAMPLE_BYTES ((size_t)64 << 10)
#define STORED_MIN_SIZE QP_CACHE_STORED_MIN_SIZE  /* smaller objects are always compressed */

/* 2 for a stored object with a check frame, 1 for one without (QPSTORE1),
 * 0 for anything else. */
static int is_stored_header(const unsigned char *p, size_t n)
{
    if (n < STORED_HEADER_LEN || memcmp(p, stored_marker, STORED_MARKER_LEN - 1) != 0)
        return 0;
    return p[STORED_MARKER_LEN - 1] == '2' ? 2 : p[STORED_MARKER_LEN - 1] == '1' ? 1 : 0;
}

/* digest (64 lowercase hex) as 32 bytes */
static void digest_bytes(unsigned char out[QP_DIGEST_LEN], const char *hex)
{
    for (int i = 0; i < QP_DIGEST_LEN; i++) {
        int hi = hex[2 * i], lo = hex[2 * i + 1];
        hi = hi <= '9' ? hi - '0' : hi - 'a' + 10;
        lo = lo <= '9' ? lo - '0' : lo - 'a' + 10;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
}

/* the content size of a stored object's header, or -1 when the frame header
 * is not the one written here */
static int stored_content_size(const unsigned char *p, uint64_t *size)
{
    const unsigned char *f = p + STORED_MARKER_LEN;
    if (memcmp(f, zstd_magic, 4) != 0 || f[4] != 0xC0 || f[5] != 0x38)
        return -1;
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | f[6 + i];
    *size = v;
    return 0;
}

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
    qp_sha256 *h;                   /* of the decoded bytes, when sha */
    int sha;                        /* SHA-256 them (all but stored objects with a check frame, unless full) */
    int full;                       /* SHA-256 whatever the encoding (qp_cache_object_check) */
    qp_xxh64 xh;                    /* stored with a check frame: XXH64 of the content */
    unsigned char check[CHECK_FRAME_LEN];
    size_t check_have;
    unsigned char *obuf;            /* [ZOUT_CHUNK] */
    const decode_sink *sink;        /* may be NULL: check only */
    uint64_t expected, total;       /* frame header's size (UINT64_MAX: none), bytes so far */
    int frame_done;
    int stored;                     /* a stored object: blocks parsed here, not by zstd; 2 with a check frame */
    unsigned char bhdr[3];          /* stored: the block header being read */
    int bhdr_have, last_block;
    size_t block_left;              /* stored: bytes of the current block still to come */
} decoder;

/* The first read (got bytes of ibuf): a zstd frame header, whose recorded
 * size goes to the sink's hint. */
static int decode_header(decoder *d, const unsigned char *ibuf, size_t got)
{
    if (got == 0)
        return corrupt(d->path, d->st, d->digest, "empty file");
    int version = is_stored_header(ibuf, got);
    if (version) {
        uint64_t n;
        if (stored_content_size(ibuf, &n) != 0)
            return corrupt(d->path, d->st, d->digest, "stored object with a foreign frame header");
        /* every content byte is in the file, so the size is bounded by it */
        if (n > (uint64_t)d->st->st_size)
            return corrupt(d->path, d->st, d->digest, "truncated");
        d->stored = version;
        d->sha = version == 1 || d->full;
        d->expected = n;
        if (d->sink && d->sink->hint)
            d->sink->hint(d->sink->ud, d->expected);
        return 0;
    }
    unsigned long long fcs = ZSTD_getFrameContentSize(ibuf, got);
    if (fcs == ZSTD_CONTENTSIZE_ERROR)
        return corrupt(d->path, d->st, d->digest, "not a zstd frame");
    if (fcs != ZSTD_CONTENTSIZE_UNKNOWN)
        d->expected = fcs;
    if (d->sink && d->sink->hint)
        d->sink->hint(d->sink->ud, d->expected);
    return 0;
}

/* A stored object's blocks in got bytes of ibuf: the raw bytes go to the
 * hash and the sink straight from ibuf. */
static int decode_stored(decoder *d, const unsigned char *ibuf, size_t got)
{
    int rc;
    for (size_t pos = 0; pos < got;) {
        if (d->frame_done) {
            size_t take = got - pos;
            if (d->stored != 2 || take > CHECK_FRAME_LEN - d->check_have)
                return corrupt(d->path, d->st, d->digest, "trailing bytes after the stored frame");
            memcpy(d->check + d->check_have, ibuf + pos, take);
            d->check_have += take;
            return 0;
        }
        if (d->block_left == 0) {
            d->bhdr[d->bhdr_have++] = ibuf[pos++];
            if (d->bhdr_have < 3)
                continue;
            d->bhdr_have = 0;
            uint32_t v = (uint32_t)d->bhdr[0] | (uint32_t)d->bhdr[1] << 8 | (uint32_t)d->bhdr[2] << 16;
            if (((v >> 1) & 3) != 0)
                return corrupt(d->path, d->st, d->digest, "stored object with a compressed block");
            if ((v >> 3) > STORED_BLOCK)
                return corrupt(d->path, d->st, d->digest, "stored block larger than 128 KiB");
            d->last_block = (int)(v & 1);
            d->block_left = v >> 3;
        } else {
            size_t take = got - pos < d->block_left ? got - pos : d->block_left;
            d->total += take;
            if (d->total > d->expected)
                return corrupt(d->path, d->st, d->digest, "longer than its frame header says");
            if (d->sha)
                qp_sha256_update(d->h, ibuf + pos, take);
            if (d->stored == 2)
                qp_xxh64_update(&d->xh, ibuf + pos, take);
            if (d->sink && (rc = d->sink->write(d->sink->ud, ibuf + pos, take)) != 0)
                return rc;
            d->block_left -= take;
            pos += take;
        }
        if (d->block_left == 0 && d->bhdr_have == 0 && d->last_block)
            d->frame_done = 1;
    }
    return 0;
}

/* Decompresses got bytes of ibuf, hashing and passing on what comes out. */
static int decode_input(decoder *d, const unsigned char *ibuf, size_t got)
{
    char reason[160];
    int rc;
    if (d->stored)
        return decode_stored(d, ibuf, got);
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

/* A stored object's check frame: the name it was stored under is the one
 * asked for, and its content has the recorded XXH64. */
static int check_frame_ok(decoder *d)
{
    if (d->check_have < CHECK_FRAME_LEN)
        return corrupt(d->path, d->st, d->digest, "truncated");
    if (memcmp(d->check, check_frame_head, sizeof(check_frame_head)) != 0)
        return corrupt(d->path, d->st, d->digest, "stored object with a foreign check frame");
    unsigned char want[QP_DIGEST_LEN];
    digest_bytes(want, d->digest);
    if (memcmp(d->check + 16, want, QP_DIGEST_LEN) != 0)
        return corrupt(d->path, d->st, d->digest, "the file holds another object");
    uint64_t x = 0;
    for (int i = 7; i >= 0; i--)
        x = x << 8 | d->check[16 + QP_DIGEST_LEN + i];
    if (x != qp_xxh64_digest(&d->xh))
        return corrupt(d->path, d->st, d->digest, "content checksum mismatch");
    return 0;
}

/* At EOF: a whole frame of the recorded size whose bytes hash to the
 * object's name (or, stored with a check frame, check as it says). */
static int decode_finish(decoder *d)
{
    /* zstd does not consume a frame's last byte before it has flushed all
     * of its data, so "frame not done" at EOF means the file is short. */
    if (!d->frame_done)
        return corrupt(d->path, d->st, d->digest, "truncated");
    if (d->expected != UINT64_MAX && d->total != d->expected)
        return corrupt(d->path, d->st, d->digest, "size differs from its frame header");
    int rc;
    if (d->stored == 2 && (rc = check_frame_ok(d)) != 0)
        return rc;
    if (!d->sha)
        return 0;
    char actual[QP_HEX_LEN];
    qp_sha256_final_hex(d->h, actual);
    if (strcmp(actual, d->digest) != 0)
        return corrupt(d->path, d->st, d->digest, "digest mismatch");
    return 0;
}

/* full: SHA-256 the content whatever the encoding (see the top). */
static int decode(qp_cache *c, const char *digest, const decode_sink *sink, uint64_t *out_size, int full)
{
    int rc = QP_ERROR, fd = -1;
    char *path = NULL;
    unsigned char *ibuf = NULL;
    struct stat st;
    decoder d = {.digest = digest, .st = &st, .sink = sink, .expected = UINT64_MAX, .sha = 1, .full = full};
    qp_xxh64_init(&d.xh);
    if (!qp_is_hex_digest(digest))
        return bad_digest_arg(digest);
    d.path = path = qp_cache_fanout_path(c->objects, digest);
    /* O_NOFOLLOW: a symbolic link planted in objects/ is not followed out
     * of the cache; it is removed like any other damage */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ENOENT)
            rc = qp_error_set(QP_ENOTFOUND, "cache object %s: not in the cache", digest);
        else if (errno == ELOOP)
            rc = qp_cache_remove_irregular(path, digest);
        else
            rc = qp_error_errno(QP_ERROR, "%s: cannot open cache object", path);
        goto done;
    }
    if (fstat(fd, &st) != 0) {
        rc = qp_error_errno(QP_ERROR, "%s: cannot stat", path);
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {   /* a directory, a FIFO … in its place */
        rc = qp_cache_remove_irregular(path, digest);
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
        size_t skip = first && d.stored ? STORED_HEADER_LEN : 0;
        if ((rc = decode_input(&d, ibuf + skip, (size_t)got - skip)) != 0)
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
    return decode(c, digest, NULL, out_size, 1);
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

int qp_cache_get_into(qp_cache *c, const char *digest, qp_buf *b)
{
    b->len = 0;
    decode_sink s = {mem_hint, mem_write, b};
    int rc = decode(c, digest, &s, NULL, 0);
    if (rc != 0) {
        b->len = 0;
        return rc;
    }
    /* NUL-terminated: a convenience for text objects, not counted.  A
     * qp_buf always has room for it (cap > len); reserve(b, 0) only
     * allocates an empty object's buffer.  reserve(b, 1) asked for a byte
     * more than the hint had sized, so every object read was reallocated
     * to twice its size and copied: 26 % of a 1.1B calibrate's samples. */
    qp_buf_reserve(b, 0);
    b->data[b->len] = '\0';
    return 0;
}

int qp_cache_get(qp_cache *c, const char *digest, void **out, size_t *out_len)
{
    qp_buf m = QP_BUF_INIT;
    int rc = qp_cache_get_into(c, digest, &m);
    if (rc != 0) {
        qp_buf_free(&m);
        return rc;
    }
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
    if ((rc = decode(c, digest, &s, NULL, 0)) != 0)
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
    unsigned char hdr[STORED_HEADER_LEN > FRAME_HEADER_MAX ? STORED_HEADER_LEN : FRAME_HEADER_MAX];
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0)
        return qp_error_errno(errno == ENOENT ? QP_ENOTFOUND : QP_ERROR, "%s: cannot open cache object",
                              path);
    struct stat st;
    ssize_t got = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? read_some(fd, hdr, sizeof(hdr)) : -1;
    close(fd);
    if (got < 0)
        return qp_error_errno(QP_ERROR, "%s: cannot read", path);
    if (is_stored_header(hdr, (size_t)got)) {
        /* the reader's bound: every content byte is in the file */
        if (stored_content_size(hdr, out) != 0 || *out > (uint64_t)st.st_size)
            return QP_ECORRUPT;
        return 0;
    }
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
    int ok = lstat(path, &st) == 0 && S_ISREG(st.st_mode);
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
    struct stat st;
    if (lstat(path, &st) != 0)
        return 0;
    if (!S_ISREG(st.st_mode)) {
        /* a link or directory in the object's place: removed (never
         * followed, never touched through) and the object written anew */
        qp_rm_rf(path);
        qp_error_clear();
        return 0;
    }
    /* AT_SYMLINK_NOFOLLOW: a link swapped in since the lstat has its own
     * time set, not its target's; a read-only cache is still a hit */
    (void)utimensat(AT_FDCWD, path, NULL, AT_SYMLINK_NOFOLLOW);
    return 1;
}

/* touch_existing for a writer about to name the object: a copy another
 * process or handle wrote may not be on disk yet, so it is synced with
 * this handle's own before an entry names it. */
static int have_object(qp_cache *c, const char *path, const char *digest)
{
    if (!touch_existing(path))
        return 0;
    /* a forced rebuild does not trust the copy it finds: a damaged one is
     * removed by the check and written again from the bytes in hand */
    if (c->recheck_existing && decode(c, digest, NULL, NULL, 0) != 0) {
        qp_error_clear();
        if (!qp_path_exists(path))
            return 0;   /* damaged and removed: written again */
        /* not damage (an I/O error): the copy stays, synced as before */
    }
    qp_cache_pending_add(c, path);
    return 1;
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

/* ---- writing stored objects ---- */

typedef struct {
    int fd;
    const char *tmp, *what;
    uint64_t left;   /* content bytes still to come */
    uint64_t written, synced;   /* bytes written; writeback started up to synced */
    qp_xxh64 xh;     /* of the content, for the check frame */
} stored_writer;

#define WRITEBACK_STEP ((uint64_t)64 << 20)

static int writev_all(int fd, struct iovec *iov, int n)
{
    while (n > 0) {
        ssize_t w = writev(fd, iov, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (w == 0) {
            errno = EIO;   /* no progress: never loop on it */
            return -1;
        }
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

/* Bytes of the content, cut into blocks; the one that ends the content is
 * marked last.  More than announced is an error (a file that grew). */
static int stored_write(stored_writer *w, const unsigned char *p, size_t n)
{
    struct iovec iov[2 * STORED_IOV_BLOCKS];
    unsigned char hdr[STORED_IOV_BLOCKS][3];
    if ((uint64_t)n > w->left)
        return qp_error_set(QP_ERROR, "%s: file changed size while it was being stored; retry", w->what);
    while (n > 0) {
        int k = 0;
        for (; k < STORED_IOV_BLOCKS && n > 0; k++) {
            size_t b = n < STORED_BLOCK ? n : STORED_BLOCK;
            w->left -= b;
            uint32_t v = (uint32_t)b << 3 | (w->left == 0 ? 1u : 0u);
            hdr[k][0] = (unsigned char)v;
            hdr[k][1] = (unsigned char)(v >> 8);
            hdr[k][2] = (unsigned char)(v >> 16);
            iov[2 * k] = (struct iovec){hdr[k], 3};
            iov[2 * k + 1] = (struct iovec){(void *)p, b};
            qp_xxh64_update(&w->xh, p, b);
            p += b;
            n -= b;
        }
        if (writev_all(w->fd, iov, 2 * k) != 0)
            return qp_error_errno(QP_ERROR, "%s: cannot write", w->tmp);
        for (int i = 0; i < 2 * k; i++)
            w->written += iov[i].iov_len;
        /* start writing back what is written (no wait) every 64 MB, so
         * the fsync that makes the object durable finds most of it on disk */
        if (w->written - w->synced >= WRITEBACK_STEP) {
#ifdef SYNC_FILE_RANGE_WRITE
            (void)sync_file_range(w->fd, (off_t)w->synced, (off_t)(w->written - w->synced), SYNC_FILE_RANGE_WRITE);
#endif
            w->synced = w->written;
        }
    }
    return 0;
}

/* The marker and frame header for n content bytes (n == 0: also the one
 * empty last block a frame needs). */
static int stored_begin(stored_writer *w, int fd, const char *tmp, const char *what, uint64_t n)
{
    unsigned char h[STORED_HEADER_LEN + 3];
    memcpy(h, stored_marker, STORED_MARKER_LEN);
    memcpy(h + STORED_MARKER_LEN, zstd_magic, 4);
    h[STORED_MARKER_LEN + 4] = 0xC0;
    h[STORED_MARKER_LEN + 5] = 0x38;
    for (int i = 0; i < 8; i++)
        h[STORED_MARKER_LEN + 6 + i] = (unsigned char)(n >> (8 * i));
    size_t len = STORED_HEADER_LEN;
    if (n == 0) {
        h[len++] = 1;   /* last, raw, size 0 */
        h[len++] = 0;
        h[len++] = 0;
    }
    *w = (stored_writer){fd, tmp, what, n, 0, 0, {{0}, 0, {0}, 0}};
    qp_xxh64_init(&w->xh);
    if (qp_write_all(fd, h, len) != 0)
        return qp_error_errno(QP_ERROR, "%s: cannot write", tmp);
    return 0;
}

/* The check frame, once the content is written and its name known. */
static int stored_end(stored_writer *w, const char *digest)
{
    unsigned char f[CHECK_FRAME_LEN];
    memcpy(f, check_frame_head, sizeof(check_frame_head));
    digest_bytes(f + 16, digest);
    uint64_t x = qp_xxh64_digest(&w->xh);
    for (int i = 0; i < 8; i++)
        f[16 + QP_DIGEST_LEN + i] = (unsigned char)(x >> (8 * i));
    if (qp_write_all(w->fd, f, sizeof(f)) != 0)
        return qp_error_errno(QP_ERROR, "%s: cannot write", w->tmp);
    return 0;
}

/* 1 when zstd (level 1) keeps more than STORED_ABOVE_RATIO of more than
 * half of N_SAMPLES samples of SAMPLE_BYTES, spread evenly from the start
 * to the end: store the object instead.  A majority, not the sum: a GGUF
 * opens with its vocabulary and ends with norm weights, text and ones that
 * compress well, around gigabytes of weights that do not. */
static int samples_barely_compress(const unsigned char *const sample[N_SAMPLES])
{
    size_t cap = ZSTD_compressBound(SAMPLE_BYTES);
    unsigned char *out = qp_xmalloc(cap);
    ZSTD_CCtx *cctx = ZSTD_createCCtx();   /* objects of 1 MB and more only: its setup is noise */
    int ok = cctx != NULL, barely = 0;
    for (int i = 0; ok && i < N_SAMPLES; i++) {
        size_t z = ZSTD_compressCCtx(cctx, out, cap, sample[i], SAMPLE_BYTES, 1);
        ok = !ZSTD_isError(z);
        barely += ok && (double)z > STORED_ABOVE_RATIO * (double)SAMPLE_BYTES;
    }
    ZSTD_freeCCtx(cctx);
    free(out);
    return ok && 2 * barely > N_SAMPLES;
}

_Static_assert(N_SAMPLES * SAMPLE_BYTES <= IO_CHUNK, "file samples are read into the I/O buffer");

static uint64_t sample_at(uint64_t n, int i)
{
    return (n - SAMPLE_BYTES) / (N_SAMPLES - 1) * (uint64_t)i;
}

static int barely_compresses(const unsigned char *p, size_t n)
{
    if (n < STORED_MIN_SIZE)
        return 0;
    const unsigned char *sample[N_SAMPLES];
    for (int i = 0; i < N_SAMPLES; i++)
        sample[i] = p + sample_at(n, i);
    return samples_barely_compress(sample);
}

/* the same for a regular file of size n, read into buf [N_SAMPLES * SAMPLE_BYTES] */
static int file_barely_compresses(int fd, uint64_t n, unsigned char *buf)
{
    if (n < STORED_MIN_SIZE)
        return 0;
    const unsigned char *sample[N_SAMPLES];
    for (int i = 0; i < N_SAMPLES; i++) {
        unsigned char *b = buf + (size_t)i * SAMPLE_BYTES;
        sample[i] = b;
        if (pread(fd, b, SAMPLE_BYTES, (off_t)sample_at(n, i)) != (ssize_t)SAMPLE_BYTES)
            return 0;   /* changed under us: the copy below will say so */
    }
    return samples_barely_compress(sample);
}

/* Moves a finished temp file into objects/ unless the object appeared
 * meanwhile (same content by construction, so either copy is fine). */
static int install_object(qp_cache *c, int fd, char *tmp, const char *digest)
{
    int rc;
    char *path = qp_cache_fanout_path(c->objects, digest);
    if (have_object(c, path, digest)) {
        qp_tmp_discard(fd, tmp);
        rc = 0;
        goto done;
    }
    if ((rc = qp_cache_fanout_mkdir(c->objects, digest)) != 0) {
        qp_tmp_discard(fd, tmp);
        goto done;
    }
    fchmod(fd, 0444);  /* objects are immutable */
    rc = qp_cache_commit_object(c, fd, tmp, path);
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
    if (have_object(c, path, hex)) {
        memcpy(digest, hex, QP_HEX_LEN);
        rc = 0;
        goto done;
    }
    if (barely_compresses(data, n)) {
        stored_writer w;
        if ((rc = qp_cache_tmp_open(c, "obj", &tmp, &fd)) != 0 ||
            (rc = stored_begin(&w, fd, tmp, "cache object", n)) != 0 || (rc = stored_write(&w, data, n)) != 0 ||
            (rc = stored_end(&w, hex)) != 0)
            goto done;
    } else {
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
    }
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

/* The next chunk of a file being stored, added to its hash; *got 0 at the end. */
static int read_hashed(int fd, unsigned char *ibuf, qp_sha256 *h, const char *path, size_t *got)
{
    ssize_t n = read_some(fd, ibuf, IO_CHUNK);
    if (n < 0)
        return qp_error_errno(QP_ERROR, "%s: read failed", path);
    *got = (size_t)n;
    qp_sha256_update(h, ibuf, *got);
    return 0;
}

static int put_file(qp_cache *c, const char *path, char digest[QP_HEX_LEN])
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
        if (have_object(c, opath, hex)) {
            memcpy(digest, hex, QP_HEX_LEN);
            rc = 0;
            goto done;
        }
    }
    ibuf = qp_xmalloc(IO_CHUNK);
    if (c->read_only) {
        /* nothing can be written: hash it, and it is a hit or an error */
        if ((rc = qp_sha256_new(&h)) != 0)
            goto done;
        for (size_t got = 1; got > 0;)
            if ((rc = read_hashed(fd, ibuf, h, path, &got)) != 0)
                goto done;
        qp_sha256_final_hex(h, hex);
        free(opath);
        opath = qp_cache_fanout_path(c->objects, hex);
        if (!have_object(c, opath, hex)) {
            rc = qp_error_set(QP_ERROR, "cache %s is read-only: cannot store %s (object %.12s)", c->dir, path, hex);
            goto done;
        }
        memcpy(digest, hex, QP_HEX_LEN);
        rc = 0;
        goto done;
    }
    int stored = regular && file_barely_compresses(fd, (uint64_t)st.st_size, ibuf);
    stored_writer w;
    if ((rc = qp_sha256_new(&h)) != 0 || (rc = qp_cache_tmp_open(c, "obj", &tmp, &tfd)) != 0)
        goto done;
    if (stored) {
        if ((rc = stored_begin(&w, tfd, tmp, path, (uint64_t)st.st_size)) != 0)
            goto done;
    } else {
        obuf = qp_xmalloc(ZOUT_CHUNK);
        if (!(cctx = new_cctx(regular ? (uint64_t)st.st_size : UINT64_MAX))) {
            rc = qp_error_set(QP_ERROR, "%s: zstd cannot create a compression context", path);
            goto done;
        }
    }
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    for (;;) {
        size_t got = 0;
        if ((rc = read_hashed(fd, ibuf, h, path, &got)) != 0)
            goto done;
        if (got == 0)
            break;
        if (stored) {
            if ((rc = stored_write(&w, ibuf, (size_t)got)) != 0)
                goto done;
            continue;
        }
        ZSTD_inBuffer in = {ibuf, (size_t)got, 0};
        if ((rc = compress_to_fd(cctx, &in, ZSTD_e_continue, obuf, tfd, tmp, path)) != 0)
            goto done;
    }
    if (stored && w.left != 0) {
        rc = qp_error_set(QP_ERROR, "%s: file changed size while it was being stored; retry", path);
        goto done;
    }
    ZSTD_inBuffer end = {NULL, 0, 0};
    if (!stored && (rc = compress_to_fd(cctx, &end, ZSTD_e_end, obuf, tfd, tmp, path)) != 0)
        goto done;
    qp_sha256_final_hex(h, hex);
    if (stored && (rc = stored_end(&w, hex)) != 0)
        goto done;
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

int qp_cache_put_file(qp_cache *c, const char *path, char digest[QP_HEX_LEN])
{
    return put_file(c, path, digest);
}

