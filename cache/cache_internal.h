/* Private helpers shared by the cache/ translation units (not a public API).
 *
 * The qp_cache handle holds paths and one fd, all fixed at open time, and
 * the list of objects waiting for qp_cache_sync behind its own mutex, so
 * several threads may use it at once: every operation works on its own file
 * descriptors and buffers. */
#ifndef QP_CACHE_INTERNAL_H
#define QP_CACHE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <sys/stat.h>

#include "cache/cache.h"

struct qp_cache {
    char *dir;
    char *objects, *actions, *locks, *files, *meta, *tmp;
    /* Shared flock on locks/store.lock held while the handle is open: gc
     * takes it exclusively (non-blocking) to learn whether another process
     * may be between writing objects and recording the action for them. */
    int store_lock_fd;
    /* set by qp_cache_set_recheck: a put that finds its object already
     * stored checks that copy (a forced rebuild replaces a damaged one) */
    int recheck_existing;
    int read_only;   /* the store lock could not be opened for writing (EROFS/EACCES) */
    /* Objects renamed into place whose data and directory entries are not
     * known to be on disk yet (durable.c); the one mutable part, guarded
     * by its mutex. */
    pthread_mutex_t pending_mu;
    pthread_mutex_t sync_mu;   /* one qp_cache_sync at a time: a second waits for the first's fsyncs */
    char **pending;
    size_t n_pending, cap_pending;
    qp_remote *remote;   /* qp_cache_set_remote; NULL: local only */
};

/* remote.c: on a local miss, downloads and verifies the remote entry and
 * its objects and records the entry locally (0), else QP_ENOTFOUND with no
 * error set. */
int qp_remote_fetch_action(qp_cache *c, const char *key, const qp_cache_expect *expect);
/* uploads the objects (HEAD first) then the entry; always 0 */
int qp_remote_push_action(qp_cache *c, const char *key, const char *artifact, const char *const *refs,
                          size_t n_refs);
int qp_remote_push_hits(const qp_cache *c);
/* action.c: records an entry in the local store only */
int qp_cache_action_put_local(qp_cache *c, const char *key, const char *artifact,
                              const char *const *refs, size_t n_refs);

/* Temp files older than this are leftovers of a killed process. */
#define QP_CACHE_STALE_TMP_S 60

/* malloc'ed "base/ab/cdef…" for a 64-hex name. */
/* base/ab/cdef…; a non-directory at base/ab (a planted link) is removed first. */
char *qp_cache_fanout_path(const char *base, const char *hex);
/* Removes what stands at path in place of object digest (a link, a
 * directory …) without following it; QP_ECORRUPT naming it. */
int qp_cache_remove_irregular(const char *path, const char *digest);
/* mkdir of "base/ab" (races with other processes are fine). */
int qp_cache_fanout_mkdir(const char *base, const char *hex);
/* The hex name an action/lock key maps to: the key itself when it already
 * is a 64-hex digest, else the SHA-256 of the key string. */
void qp_cache_key_hex(char out[QP_HEX_LEN], const char *key);

/* Temp file in the cache's tmp/ (O_EXCL, O_CLOEXEC). */
int qp_cache_tmp_open(qp_cache *c, const char *prefix, char **out_path, int *out_fd);
/* fsync + close fd, then renames tmp onto final and fsyncs final's
 * directory.  With no_replace an existing final is kept (and tmp removed);
 * *out_existed tells which happened (may be NULL).  tmp is always consumed
 * (renamed or unlinked) and freed; fd is always closed. */
int qp_cache_commit(int fd, char *tmp, const char *final, int no_replace, int *out_existed);
/* An object's commit: writeback started but not waited for, renamed
 * without replacing, and listed for the next qp_cache_sync (which every
 * action entry waits for), so a stage's objects reach the disk while it
 * computes instead of one fsync after another.  Crash safety is unchanged
 * where it matters: no action names an object before it is durable, and a
 * torn object from a power cut fails its digest check and is recomputed. */
int qp_cache_commit_object(qp_cache *c, int fd, char *tmp, const char *final);
/* durable.c: the pending list (add copies path; free drops the list). */
void qp_cache_pending_init(qp_cache *c);
void qp_cache_pending_add(qp_cache *c, const char *path);
void qp_cache_pending_free(qp_cache *c);
/* Unlinks path only if it still is the file described by st (same dev and
 * inode), so a fresh copy renamed in by another process survives. */
void qp_cache_unlink_if_same(const char *path, const struct stat *st);
/* write(2) loop; -1 with errno on failure. */

/* Walks base/XX/NAME (the fan-out layout) calling cb for every regular
 * file; hex is the 64-hex name or NULL when the name is not one.  A nonzero
 * return from cb stops the walk and is returned. */
typedef int (*qp_cache_walk_cb)(void *ud, const char *hex, const char *path, const struct stat *st);
int qp_cache_walk(const char *base, qp_cache_walk_cb cb, void *ud);
/* The same for what qp_cache_walk skips: anything under base that is not a
 * fan-out directory, and anything in one that is not a regular file (hex
 * NULL, st from lstat). */
int qp_cache_walk_irregular(const char *base, qp_cache_walk_cb cb, void *ud);
/* *out = 1 when some action entry names digest (cache/action.c). */
int qp_cache_action_referenced(qp_cache *c, const char *digest, int *out);

/* Counts the files in tmp/ and, with remove_stale, deletes those not
 * modified for QP_CACHE_STALE_TMP_S seconds (left by killed processes; a
 * live writer keeps its file's mtime fresh).  Either out may be NULL. */
int qp_cache_tmp_sweep(qp_cache *c, int remove_stale, uint64_t *n_files, uint64_t *n_removed);

/* ---- objects (object.c) ---- */
/* Decodes and verifies the object without keeping the bytes.  On
 * corruption removes it and returns QP_ECORRUPT (message names it);
 * *out_size gets the uncompressed size on success (may be NULL). */
int qp_cache_object_check(qp_cache *c, const char *digest, uint64_t *out_size);
/* Uncompressed size from the frame header only; QP_ECORRUPT (without
 * removing anything) when the header is unreadable, 1 when the header does
 * not record it. */
int qp_cache_object_header_size(const char *path, uint64_t *out);

/* The most a cache action entry, memo or meta file may hold (64 MiB). */
#define QP_CACHE_SMALL_FILE_MAX ((size_t)64 << 20)

/* ---- actions (action.c) ---- */
typedef struct {
    char artifact[QP_HEX_LEN];
    char (*refs)[QP_HEX_LEN];
    size_t n_refs;
    int64_t time;
    char of[QP_HEX_LEN];   /* a checkpoint's "checkpoint_of" (hex action name), else "" */
} qp_action_entry;
/* Reads and parses an action file.  QP_ENOTFOUND when absent; QP_EFORMAT
 * with `reason` filled when it is not a valid entry. */
int qp_action_entry_read(const char *path, qp_action_entry *e, char *reason, size_t reason_len);
void qp_action_entry_clear(qp_action_entry *e);
/* 1 when digest is the artifact or one of the refs. */
int qp_action_entry_uses(const qp_action_entry *e, const char *digest);

/* ---- file digest memo (filememo.c) ---- */
/* 1 and digest filled when the memo for realpath matches st; 0 otherwise. */
int qp_memo_lookup(qp_cache *c, const char *realpath_, const struct stat *st, char digest[QP_HEX_LEN]);
/* Records digest for (realpath, st); best effort (a failure only costs a
 * re-read later).  Files modified within the last seconds are not recorded:
 * a same-size rewrite inside the filesystem's timestamp granularity would
 * otherwise keep the old mtime and make the memo lie. */
void qp_memo_store(qp_cache *c, const char *realpath_, const struct stat *st, const char *digest);
/* 1 when two stats describe the same unchanged file content. */
int qp_memo_same_file(const struct stat *a, const struct stat *b);
/* Validates one memo file; 0 ok, QP_EFORMAT when malformed. Writes the
 * recorded path (malloc'ed) to *out_path when not NULL. */
int qp_memo_check(const char *memo_path, char **out_path);

#endif
