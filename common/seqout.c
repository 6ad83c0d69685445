#include "common/seqout.h"

#include "common/alloc.h"
#include "common/error.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SEQ_ALIGN ((size_t)4096)            /* O_DIRECT alignment of offset, length and buffer */
#define SEQ_BUF QP_SEQOUT_BUF              /* each staging buffer: [SEQ_BUF], SEQ_ALIGN-aligned */
#define WRITEBACK_STEP ((uint64_t)64 << 20) /* buffered fallback: start writeback this often */

#define NBUF QP_SEQOUT_NBUF   /* the caller fills one, the hasher reads one, the writer writes one */

/* A staging buffer's turn: the caller fills it, then (with a digest) the
 * hasher reads it, then the writer writes it. */
enum { B_FREE, B_HASH, B_WRITE };

struct qp_seqout {
    int fd;
    const char *path;
    int direct;             /* O_DIRECT is set on fd */
    qp_sha256 *hash;        /* NULL: no digest wanted */
    unsigned char *buf[NBUF];
    int state[NBUF];        /* B_*, under mu */
    int cur;                /* the buffer the caller fills */
    size_t n;               /* bytes staged in buf[cur] */
    uint64_t accepted;      /* bytes given to _write */
    uint64_t written;       /* bytes on fd (writer-owned while it runs) */
    uint64_t synced;        /* buffered fallback: writeback started up to here */
    uint64_t base;          /* the file offset the stream started at */
    /* the helpers: each takes the buffers in ring order */
    pthread_t hasher, writer;
    int threads;            /* both helpers run (else everything runs on the caller) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    int rc;                     /* first failure of the writer, with qp_error set on its thread */
    char err[QP_ERROR_MAX];     /* that failure's message, re-raised on the caller's thread */
};

/* Back to the page cache; the flag stays set when fcntl fails, so a write
 * it refuses is retried (EINVAL) rather than lost. */
static void drop_direct(qp_seqout *s)
{
    int fl = fcntl(s->fd, F_GETFL);
    if (fl >= 0 && fcntl(s->fd, F_SETFL, fl & ~O_DIRECT) == 0)
        s->direct = 0;
}

/* Writes p[0..len) at the file's end: O_DIRECT while every piece stays
 * aligned (a short write that leaves the length or offset unaligned turns
 * it off for the rest of the file); a refusal (EINVAL: a filesystem that
 * takes the flag but not the write) turns it off too, and the write is
 * retried through the page cache. */
static int put(qp_seqout *s, const unsigned char *p, size_t len)
{
    while (len > 0) {
        if (s->direct && (len % SEQ_ALIGN != 0 || s->written % SEQ_ALIGN != 0)) {
            drop_direct(s);
            if (s->direct)
                return qp_error_errno(QP_ERROR, "%s: cannot leave O_DIRECT for an unaligned write", s->path);
        }
        ssize_t w = write(s->fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EINVAL && s->direct) {
            drop_direct(s);
            if (!s->direct)
                continue;
            errno = EINVAL;
        }
        if (w == 0)
            errno = EIO;   /* no progress: never loop on it */
        if (w <= 0)
            return qp_error_errno(QP_ERROR, "%s: cannot write", s->path);
        p += w;
        len -= (size_t)w;
        s->written += (uint64_t)w;
    }
    if (!s->direct && s->written - s->synced >= WRITEBACK_STEP) {
#ifdef SYNC_FILE_RANGE_WRITE
        /* advisory: the caller's fsync finds most of the file on disk already */
        (void)sync_file_range(s->fd, (off_t)(s->base + s->synced), (off_t)(s->written - s->synced),
                              SYNC_FILE_RANGE_WRITE);
#endif
        s->synced = s->written;
    }
    return 0;
}

static int hash_and_put(qp_seqout *s, const unsigned char *p, size_t len)
{
    if (s->hash)
        qp_sha256_update(s->hash, p, len);
    return put(s, p, len);
}

/* Waits for buffer i to reach state `want` (or stop); 0 when stopped. */
static int await_state(qp_seqout *s, int i, int want)
{
    while (s->state[i] != want && !s->stop)
        pthread_cond_wait(&s->cv, &s->mu);
    return s->state[i] == want;
}

/* The hasher: SHA-256 of each full buffer, in order, then it is the
 * writer's.  Hashing and writing on two threads overlap the digest (one
 * core, ~1.7 GB/s here) with the disk's DMA, which takes no CPU. */
static void *hasher(void *arg)
{
    qp_seqout *s = arg;
    pthread_mutex_lock(&s->mu);
    for (int i = 0;; i = (i + 1) % NBUF) {
        if (!await_state(s, i, B_HASH))
            break;
        pthread_mutex_unlock(&s->mu);
        qp_sha256_update(s->hash, s->buf[i], SEQ_BUF);
        pthread_mutex_lock(&s->mu);
        s->state[i] = B_WRITE;
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* The writer: each hashed buffer, in order; after a failure the rest are
 * only released (the caller sees the failure at its next hand-off). */
static void *writer(void *arg)
{
    qp_seqout *s = arg;
    pthread_mutex_lock(&s->mu);
    for (int i = 0;; i = (i + 1) % NBUF) {
        if (!await_state(s, i, B_WRITE))
            break;
        int failed = s->rc != 0;
        pthread_mutex_unlock(&s->mu);
        int rc = failed ? 0 : put(s, s->buf[i], SEQ_BUF);
        pthread_mutex_lock(&s->mu);
        if (rc && !s->rc) {
            s->rc = rc;
            snprintf(s->err, sizeof(s->err), "%s", qp_error_last());
        }
        s->state[i] = B_FREE;
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* Waits until buffer i is free (every buffer, when i < 0); the writer's
 * failure, if any, as the caller's. */
static int wait_free(qp_seqout *s, int i)
{
    if (!s->threads)
        return 0;
    pthread_mutex_lock(&s->mu);
    for (int k = 0; k < NBUF; k++)
        if (i < 0 || k == i)
            while (s->state[k] != B_FREE)
                pthread_cond_wait(&s->cv, &s->mu);
    int rc = s->rc;
    pthread_mutex_unlock(&s->mu);
    if (rc)
        qp_error_set(rc, "%s", s->err);
    return rc;
}

/* Hands buf[cur] (full) to the helpers and moves to the next buffer once
 * it is free. */
static int hand_off(qp_seqout *s)
{
    int rc = 0;
    if (!s->threads) {
        rc = hash_and_put(s, s->buf[s->cur], SEQ_BUF);
    } else {
        pthread_mutex_lock(&s->mu);
        s->state[s->cur] = s->hash ? B_HASH : B_WRITE;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
    s->cur = (s->cur + 1) % NBUF;
    s->n = 0;
    return rc ? rc : wait_free(s, s->cur);
}

/* Stops and joins the helpers (after what they hold). */
static void stop_helpers(qp_seqout *s, int hasher_up, int writer_up)
{
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (hasher_up)
        pthread_join(s->hasher, NULL);
    if (writer_up)
        pthread_join(s->writer, NULL);
}

int qp_seqout_new(qp_seqout **out, int fd, const char *path, int want_digest)
{
    qp_seqout *s = qp_xcalloc(1, sizeof(*s));
    int rc = 0;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->fd = fd;
    s->path = path;
    for (int i = 0; i < NBUF && rc == 0; i++) {
        void *b = NULL;
        if (posix_memalign(&b, SEQ_ALIGN, SEQ_BUF) != 0)
            rc = qp_error_set(QP_ERROR, "%s: cannot allocate a %zu-byte write buffer", path, SEQ_BUF);
        s->buf[i] = b;
    }
    if (rc == 0 && want_digest)
        rc = qp_sha256_new(&s->hash);
    if (rc) {
        qp_seqout_free(s);
        return rc;
    }
    /* O_DIRECT only from offset 0 (a fresh file): every block then starts
     * aligned; anywhere else the page cache */
    off_t at = lseek(fd, 0, SEEK_CUR);
    int fl = fcntl(fd, F_GETFL);
    s->base = at > 0 ? (uint64_t)at : 0;
    s->direct = fl >= 0 && at == 0 && fcntl(fd, F_SETFL, fl | O_DIRECT) == 0;
    /* without both helpers the same work runs on the caller's thread */
    int h = pthread_create(&s->hasher, NULL, hasher, s) == 0;
    int w = h && pthread_create(&s->writer, NULL, writer, s) == 0;
    s->threads = h && w;
    if (!s->threads) {
        stop_helpers(s, h, w);
        s->stop = 0;
    }
    *out = s;
    return 0;
}

int qp_seqout_write(qp_seqout *s, const void *data, size_t n)
{
    const unsigned char *p = data;
    s->accepted += n;
    while (n > 0) {
        size_t k = SEQ_BUF - s->n < n ? SEQ_BUF - s->n : n;
        memcpy(s->buf[s->cur] + s->n, p, k);
        s->n += k;
        p += k;
        n -= k;
        if (s->n == SEQ_BUF) {
            int rc = hand_off(s);
            if (rc)
                return rc;
        }
    }
    return 0;
}

int qp_seqout_finish(qp_seqout *s, char digest[QP_HEX_LEN])
{
    int rc = wait_free(s, -1);
    if (rc)
        return rc;
    const unsigned char *b = s->buf[s->cur];
    size_t whole = s->n / SEQ_ALIGN * SEQ_ALIGN;
    rc = hash_and_put(s, b, whole);
    if (rc == 0 && s->direct)
        drop_direct(s);
    if (rc == 0)
        rc = hash_and_put(s, b + whole, s->n - whole);
    if (rc == 0) {
        s->n = 0;
        if (s->hash && digest)
            qp_sha256_final_hex(s->hash, digest);
    }
    return rc;
}

int qp_seqout_is_direct(const qp_seqout *s)
{
    return s->direct;
}

uint64_t qp_seqout_bytes(const qp_seqout *s)
{
    return s->accepted;
}

void qp_seqout_free(qp_seqout *s)
{
    if (!s)
        return;
    if (s->threads) {
        /* what the helpers hold is finished (or dropped after a failure) first */
        pthread_mutex_lock(&s->mu);
        for (int k = 0; k < NBUF; k++)
            while (s->state[k] != B_FREE)
                pthread_cond_wait(&s->cv, &s->mu);
        pthread_mutex_unlock(&s->mu);
        stop_helpers(s, 1, 1);
    }
    if (s->direct)
        drop_direct(s);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    qp_sha256_free(s->hash);
    for (int i = 0; i < NBUF; i++)
        free(s->buf[i]);
    free(s);
}
