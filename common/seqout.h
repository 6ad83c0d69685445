/* Sequential output of a large new file: page-cache bypass, and hashing
 * and writing on a second thread.
 *
 * A release file (a package's GGUF) is written once and not read back by
 * this process, so copying it into page-cache pages — fresh ones for every
 * byte, zeroed first, then flushed by the final fsync — cost more than the
 * disk: on the 2-core benchmark VM, 640 MiB written buffered and fsynced
 * took 0.7-1.9 s, with O_DIRECT 0.33-0.41 s.  Bytes are gathered into
 * aligned 8 MiB buffers, three in a ring: while the caller fills one, a
 * hasher thread hashes the one before (SHA-256, when asked) and a writer
 * thread writes the one before that, so the digest and the disk overlap
 * each other and the caller's own work (reading and verifying its inputs).
 * Writes are whole aligned blocks with O_DIRECT where the filesystem
 * allows it; the last partial block, a stream that does not
 * start at offset 0, and everything on a filesystem that refuses O_DIRECT
 * go through the page cache.
 * The caller still fsyncs (qp_tmp_publish): O_DIRECT bypasses the cache,
 * not the disk's own write cache or the metadata. */
#ifndef QP_COMMON_SEQOUT_H
#define QP_COMMON_SEQOUT_H

#include <stddef.h>
#include <stdint.h>

#include "common/hash.h"

/* The staging ring: QP_SEQOUT_NBUF buffers of QP_SEQOUT_BUF bytes each,
 * allocated by _new (what a stream adds to RSS; the helpers hold all but
 * the one the caller fills). */
#define QP_SEQOUT_BUF ((size_t)8 << 20)
#define QP_SEQOUT_NBUF 3

typedef struct qp_seqout qp_seqout;

/* fd: a file open for writing, written from its current offset on (a new
 * one at offset 0 for O_DIRECT; the stream owns it until _finish or
 * _free); path names it in errors.  want_digest: hash
 * every byte (qp_seqout_finish hands out the hex digest). */
int qp_seqout_new(qp_seqout **out, int fd, const char *path, int want_digest);
int qp_seqout_write(qp_seqout *s, const void *p, size_t n);
/* Writes what is left (the tail through the page cache), waits for the
 * helper, and leaves fd a plain descriptor at the end of the file (not
 * fsynced); digest (may be NULL) gets the SHA-256 of every byte when
 * want_digest was set. */
int qp_seqout_finish(qp_seqout *s, char digest[QP_HEX_LEN]);
/* 1 while the stream writes past the page cache (for tests). */
int qp_seqout_is_direct(const qp_seqout *s);
/* Bytes accepted so far. */
uint64_t qp_seqout_bytes(const qp_seqout *s);
/* Stops the helper (after its current block) and frees; fd stays open. */
void qp_seqout_free(qp_seqout *s);

#endif
