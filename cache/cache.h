/* Content-addressed store (knows bytes and digests, nothing about models).
 *
 * Layout under the cache directory (default .qpipe/cache):
 *   objects/ab/cdef…   zstd frame of the object's bytes, compressed or stored
 *                      (raw blocks, see object.c); the name is the SHA-256
 *                      of the UNCOMPRESSED bytes, re-checked on read
 *   actions/ab/cdef…   action entry: stage key -> JSON {"artifact": digest,
 *                      "refs": [digest…]} (refs = every object it needs)
 *   locks/ab/cdef…     flock(2) files, one per action key
 *   files/ab/cdef…     memo of file digests keyed by (path,size,mtime_ns,inode)
 *   meta/NS/NAME       small named blobs (e.g. last stage key descriptions)
 *   tmp/               temp files; everything is written here and renamed
 *                      into place, so SIGKILL never leaves a partial object
 *                      or entry where a reader can see it; an entry is
 *                      fsync'ed, and the objects it names before it
 *                      (qp_cache_sync).
 * All functions are safe to call from several threads and processes. */
#ifndef QP_CACHE_CACHE_H
#define QP_CACHE_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/hash.h"

typedef struct qp_cache qp_cache;

/* Opens (creating if needed) the cache rooted at dir. */
int qp_cache_open(qp_cache **out, const char *dir);
void qp_cache_free(qp_cache *c);
const char *qp_cache_dir(const qp_cache *c);

/* ---- objects ---- */
/* An object of 1 MB or more is stored (raw blocks) rather than compressed
 * when zstd keeps more than this fraction of most of its samples; plan
 * --estimate models the same rule. */
#define QP_CACHE_STORED_ABOVE 0.66
#define QP_CACHE_STORED_MIN_SIZE ((size_t)1 << 20)

/* Stores bytes; writes the digest of the uncompressed bytes. Existing
 * objects are not rewritten (dedup). */
int qp_cache_put(qp_cache *c, const void *data, size_t n, char digest[QP_HEX_LEN]);
/* on: a put whose object is already stored checks that copy first and
 * replaces it when damaged (the runner sets it for --force). */
void qp_cache_set_recheck(qp_cache *c, int on);
/* 1 when the cache was opened without write access (a read-only mount, or
 * a lock file the user may not write): hits are served, puts fail. */
int qp_cache_is_read_only(const qp_cache *c);
/* Streams a file into the store (constant memory). */
int qp_cache_put_file(qp_cache *c, const char *path, char digest[QP_HEX_LEN]);
/* Waits until every object this handle wrote is on disk (their writes and
 * renames); every action and checkpoint entry does this first.  Objects are
 * not synced one by one: a stage's tensors reach the disk while it works. */
int qp_cache_sync(qp_cache *c);
/* 1 if the object file exists, 0 if not (no verification). */
int qp_cache_has(qp_cache *c, const char *digest);
/* Reads and checks an object into a malloc'ed buffer, followed by a NUL
 * that out_len does not count (text objects read as C strings).  A corrupt object
 * (bad zstd frame, wrong length, wrong digest; for a stored object, a check
 * frame naming another object or a content XXH64 that differs: see
 * cache/object.c) is removed from the store and
 * QP_ECORRUPT is returned with a message naming the object; QP_ENOTFOUND
 * when absent.  Never returns wrong bytes. */
int qp_cache_get(qp_cache *c, const char *digest, void **out, size_t *out_len);
/* Like get, into b (its bytes replaced, its allocation kept and grown as
 * needed: a caller reading many objects in turn reuses the same pages
 * instead of faulting in fresh ones for each).  On error b->len is 0. */
int qp_cache_get_into(qp_cache *c, const char *digest, qp_buf *b);
/* Like get, streaming into `path` atomically (temp file + rename). */
int qp_cache_get_to_file(qp_cache *c, const char *digest, const char *path);
/* Uncompressed size recorded in the zstd frame header (no full read). */
int qp_cache_object_size(qp_cache *c, const char *digest, uint64_t *out);

/* ---- actions ---- */
/* Looks up an action; QP_ENOTFOUND on miss.  Entries whose artifact or refs
 * are missing from objects/ are treated as a miss and removed. */
int qp_cache_action_get(qp_cache *c, const char *key, char artifact[QP_HEX_LEN]);
/* What the caller knows about the artifact a key must name (the cache knows
 * bytes, not what they mean): fn gets an entry's artifact digest, its
 * objects already in the store, and returns 0 when it fits, else nonzero
 * with a reason in why.  Only an entry from the remote is checked (one
 * that does not fit is a miss, never recorded locally): a local entry was
 * recorded by this cache's own runs. */
typedef int (*qp_cache_expect_fn)(void *ud, qp_cache *c, const char *artifact, char *why, size_t why_len);
typedef struct {
    qp_cache_expect_fn fn;
    void *ud;
} qp_cache_expect;
/* qp_cache_action_get with an expectation (NULL: none). */
int qp_cache_action_get_expect(qp_cache *c, const char *key, const qp_cache_expect *expect,
                               char artifact[QP_HEX_LEN]);
/* Records key -> artifact; refs lists every object digest the artifact
 * needs (including the artifact's own manifest object). */
int qp_cache_action_put(qp_cache *c, const char *key, const char *artifact,
                        const char *const *refs, size_t n_refs);
int qp_cache_action_remove(qp_cache *c, const char *key);
/* Removes every action whose refs include `digest` (used when an object was
 * found corrupt so the stages that produced it run again). Returns count. */
int qp_cache_action_drop_referencing(qp_cache *c, const char *digest, size_t *n_dropped);

/* ---- checkpoints ---- */
/* An action entry holding a partial result of the action `of` (a long
 * stage's per-layer checkpoint): read back with qp_cache_action_get, kept
 * (with its refs) like any action, and recorded with "checkpoint_of": the
 * hex of `of`, so gc removes it once `of` has an entry of its own (the
 * stage finished and a leftover checkpoint can never be used). */
int qp_cache_checkpoint_put(qp_cache *c, const char *key, const char *of, const char *artifact,
                            const char *const *refs, size_t n_refs);
/* Deletes one object now (a superseded checkpoint's own bytes) unless an
 * action still names it: objects are shared by content, so a checkpoint of
 * another key (the same model's first layers under other parameters) may
 * hold the very same activations.  Absent is no error.  Costs one walk of
 * the actions. */
int qp_cache_remove(qp_cache *c, const char *digest);

/* ---- locks ---- */
typedef struct qp_cache_lock qp_cache_lock;
/* Blocks until this process holds the exclusive lock for key.  The lock
 * lives in an fd: a process killed while holding it releases it.  A fork()ed
 * child shares the parent's hold until it calls qp_cache_lock_release on its
 * copy (which releases only that copy), so release it early in the child. */
int qp_cache_lock_acquire(qp_cache *c, const char *key, qp_cache_lock **out);
void qp_cache_lock_release(qp_cache_lock *l);

/* ---- file digests ---- */
/* SHA-256 of a file's content, memoised by (realpath, size, mtime_ns,
 * inode) so an unchanged file is never re-read. */
int qp_cache_file_digest(qp_cache *c, const char *path, char digest[QP_HEX_LEN]);

/* ---- named metadata blobs ---- */
int qp_cache_meta_get(qp_cache *c, const char *ns, const char *name, char **out);
int qp_cache_meta_put(qp_cache *c, const char *ns, const char *name, const char *text);

/* ---- maintenance ---- */
typedef struct {
    uint64_t objects, object_disk_bytes, object_raw_bytes;
    uint64_t actions, tmp_files, memo_entries;
} qp_cache_stats;
int qp_cache_stats_get(qp_cache *c, qp_cache_stats *out);

/* Checks every object (decompress + hash) and every action (artifact and
 * refs present).  Corrupt objects and dangling actions are removed; stale
 * temp files older than a minute are removed and not counted as problems.
 * cb (may be NULL) gets one line per problem. */
typedef void (*qp_cache_problem_cb)(void *ud, const char *line);
int qp_cache_verify(qp_cache *c, qp_cache_problem_cb cb, void *ud, size_t *n_problems);

/* Deletes objects no action references, stale temp files, and — when
 * max_bytes > 0 — least recently used actions until objects fit. */
typedef struct { uint64_t removed_objects, removed_bytes, removed_actions; } qp_cache_gc_result;
int qp_cache_gc(qp_cache *c, uint64_t max_bytes, qp_cache_gc_result *out);

/* ---- remote cache (cache/remote.c) ----
 * A shared HTTP cache in the Bazel HTTP remote-cache layout: {url}/cas/<sha256
 * of the raw bytes> holds an object's uncompressed bytes, {url}/ac/<key hex>
 * an action entry (JSON {"artifact", "refs", "key", "sizes"}).  Attached to a handle with
 * qp_cache_set_remote: qp_cache_action_get asks the remote on a local miss
 * (every object downloaded is verified against its digest before it enters
 * the store; an entry whose objects are not all on the remote is a miss) and
 * qp_cache_action_put uploads the objects (HEAD first) and then the entry.
 * Every transfer is bounded in bytes and time (qp_remote_limits).  The
 * remote never makes a call fail: its first failure prints one warning
 * and turns it off for the rest of the process. */
typedef struct qp_remote qp_remote;
enum { QP_REMOTE_READ = 1, QP_REMOTE_WRITE = 2, QP_REMOTE_READWRITE = 3 };
typedef void (*qp_remote_warn_cb)(void *ud, const char *line);
/* Aggregate bytes of the large transfers in flight (see progress_min);
 * (0, 0) when the last of them ended: erase the line. */
typedef void (*qp_remote_progress_cb)(void *ud, uint64_t done, uint64_t total);
/* Bounds on what a server can make a transfer cost; 0 = the default. */
typedef struct {
    uint64_t max_object;             /* an object whose size no entry records: at most this (16 GiB) */
    uint64_t min_rate;               /* bytes/s: each transfer's deadline is floor + size / min_rate (1 MiB/s) */
    long deadline_floor_ms;          /* (30 s) */
    long low_speed_s;                /* under 1 KB/s for this long aborts a transfer (30 s) */
    long connect_timeout_ms;         /* (5 s) */
    uint64_t progress_min;           /* transfers of at least this many bytes report progress (64 MiB) */
} qp_remote_limits;
typedef struct {
    const char *url;                 /* http(s)://host[:port][/prefix] */
    int mode;                        /* QP_REMOTE_READ / WRITE / READWRITE */
    const char *token;               /* bearer token, or NULL */
    const char *user, *password;     /* basic auth when no token, or NULL */
    int push_hits;                   /* a local hit is uploaded too (qpipe cache push) */
    qp_remote_warn_cb warn;          /* NULL: "qpipe: warning: …" on stderr */
    void *warn_ud;
    qp_remote_progress_cb progress;  /* NULL: no progress */
    void *progress_ud;
    qp_remote_limits limits;
} qp_remote_options;
typedef struct {
    uint64_t objects_down, bytes_down, actions_down;
    uint64_t objects_up, bytes_up, actions_up;
    uint64_t corrupt;                /* remote objects found corrupt, partial or oversized (only the first warns) */
    uint64_t mismatched;             /* remote entries refused: another key's, or not what the caller expects */
    int disabled;                    /* the remote was turned off after a failure */
} qp_remote_stats;
int qp_remote_new(qp_remote **out, const qp_remote_options *o);
void qp_remote_free(qp_remote *r);
void qp_remote_stats_get(qp_remote *r, qp_remote_stats *out);
/* The URL it speaks to (without a trailing slash; borrowed). */
const char *qp_remote_url(const qp_remote *r);
/* The handle does not own r: free r after the cache. NULL detaches. */
void qp_cache_set_remote(qp_cache *c, qp_remote *r);
/* The remote is asked again for key even though it missed before in this
 * process (another machine has stored it since: a Slurm job). */
void qp_cache_forget_remote_miss(qp_cache *c, const char *key);

/* Parses "10G", "512M", "1.5GiB", "1000" into bytes. */
int qp_parse_size(const char *s, uint64_t *out);

#endif
