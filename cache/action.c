/* Action entries: actions/ab/cdef… maps a stage key to the artifact it
 * produced, as JSON {"artifact": digest, "refs": [digest…], "time": unix s};
 * a checkpoint's entry adds "checkpoint_of": the hex name of the action it
 * is a partial result of.
 * Entries are replaced atomically; a hit bumps the file's mtime, which is
 * the recency gc's LRU eviction sorts by. */
#include "cache/cache_internal.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void qp_action_entry_clear(qp_action_entry *e)
{
    free(e->refs);
    memset(e, 0, sizeof(*e));
}

int qp_action_entry_uses(const qp_action_entry *e, const char *digest)
{
    if (strcmp(e->artifact, digest) == 0)
        return 1;
    for (size_t i = 0; i < e->n_refs; i++)
        if (strcmp(e->refs[i], digest) == 0)
            return 1;
    return 0;
}

int qp_action_entry_read(const char *path, qp_action_entry *e, char *reason, size_t reason_len)
{
    int rc = QP_EFORMAT;
    char *text = NULL;
    json_t *j = NULL;
    memset(e, 0, sizeof(*e));
    /* no link followed, no FIFO waited on, no entry larger than an entry
     * can be (its refs: a few hundred thousand digests at most) */
    int r = qp_read_file_nofollow(path, QP_CACHE_SMALL_FILE_MAX, &text, NULL);
    if (r == QP_ECORRUPT || r == QP_EFORMAT) {   /* a link, a FIFO, a giant: not an entry */
        snprintf(reason, reason_len, "%s", qp_error_last());
        qp_error_clear();
        return QP_EFORMAT;
    }
    if (r != 0)
        return r;
    json_error_t jerr;
    j = json_loads(text, 0, &jerr);
    if (!j) {
        snprintf(reason, reason_len, "not JSON: %s", jerr.text);
        goto done;
    }
    json_t *ja = json_object_get(j, "artifact"), *jr = json_object_get(j, "refs"),
           *jt = json_object_get(j, "time"), *jo = json_object_get(j, "checkpoint_of");
    if (!json_is_string(ja) || !qp_is_hex_digest(json_string_value(ja))) {
        snprintf(reason, reason_len, "missing or invalid \"artifact\"");
        goto done;
    }
    if (!json_is_array(jr)) {
        snprintf(reason, reason_len, "missing or invalid \"refs\"");
        goto done;
    }
    if (jo && (!json_is_string(jo) || !qp_is_hex_digest(json_string_value(jo)))) {
        snprintf(reason, reason_len, "invalid \"checkpoint_of\"");
        goto done;
    }
    if (jo)
        memcpy(e->of, json_string_value(jo), QP_HEX_LEN);
    memcpy(e->artifact, json_string_value(ja), QP_HEX_LEN);
    e->time = json_is_integer(jt) ? (int64_t)json_integer_value(jt) : 0;
    e->n_refs = json_array_size(jr);
    e->refs = qp_xcalloc(e->n_refs ? e->n_refs : 1, sizeof(*e->refs));
    for (size_t i = 0; i < e->n_refs; i++) {
        json_t *x = json_array_get(jr, i);
        if (!json_is_string(x) || !qp_is_hex_digest(json_string_value(x))) {
            snprintf(reason, reason_len, "ref %zu is not a digest", i);
            goto done;
        }
        memcpy(e->refs[i], json_string_value(x), QP_HEX_LEN);
    }
    rc = 0;
done:
    if (rc == QP_EFORMAT) {
        qp_action_entry_clear(e);
        qp_error_set(QP_EFORMAT, "%s: malformed action entry (%s)", path, reason);
    } else if (rc != 0) {
        qp_action_entry_clear(e);
    }
    json_decref(j);
    free(text);
    return rc;
}

static char *action_path(qp_cache *c, const char *key, char hex[QP_HEX_LEN])
{
    qp_cache_key_hex(hex, key);
    return qp_cache_fanout_path(c->actions, hex);
}

static int action_get_local(qp_cache *c, const char *key, char artifact[QP_HEX_LEN])
{
    int rc;
    char hex[QP_HEX_LEN], reason[200];
    char *path = action_path(c, key, hex);
    qp_action_entry e;
    struct stat st;
    if (stat(path, &st) != 0) {
        rc = qp_error_set(QP_ENOTFOUND, "action %s: not in the cache", key);
        goto done;
    }
    rc = qp_action_entry_read(path, &e, reason, sizeof(reason));
    if (rc == QP_ENOTFOUND) {
        rc = qp_error_set(QP_ENOTFOUND, "action %s: not in the cache", key);
        goto done;
    }
    if (rc == QP_EFORMAT) {
        /* entries are written atomically, so this is outside damage: the
         * stage simply runs again and rewrites it */
        qp_cache_unlink_if_same(path, &st);
        rc = qp_error_set(QP_ENOTFOUND, "action %s: entry was malformed (%s); removed", key, reason);
        goto done;
    }
    if (rc != 0)
        goto done;
    const char *missing = qp_cache_has(c, e.artifact) ? NULL : e.artifact;
    for (size_t i = 0; !missing && i < e.n_refs; i++)
        if (!qp_cache_has(c, e.refs[i]))
            missing = e.refs[i];
    if (missing) {
        qp_cache_unlink_if_same(path, &st);
        rc = qp_error_set(QP_ENOTFOUND, "action %s: object %s is missing; entry removed", key, missing);
    } else {
        utimensat(AT_FDCWD, path, NULL, 0);  /* recency for gc's LRU */
        memcpy(artifact, e.artifact, QP_HEX_LEN);
        rc = 0;
        if (qp_remote_push_hits(c)) {   /* qpipe cache push: a hit goes up too */
            const char **refs = qp_xcalloc(e.n_refs ? e.n_refs : 1, sizeof(*refs));
            for (size_t i = 0; i < e.n_refs; i++)
                refs[i] = e.refs[i];
            qp_remote_push_action(c, key, e.artifact, refs, e.n_refs);
            free(refs);
        }
    }
    qp_action_entry_clear(&e);
done:
    free(path);
    return rc;
}

int qp_cache_action_get_expect(qp_cache *c, const char *key, const qp_cache_expect *expect,
                               char artifact[QP_HEX_LEN])
{
    int rc = action_get_local(c, key, artifact);
    /* read-through: a local miss asks the remote, which records the entry
     * (and its verified objects) locally on a hit that fits the
     * expectation; the second local read then serves it like any entry
     * (and restores the miss's message) */
    if (rc == QP_ENOTFOUND && c->remote) {
        qp_remote_fetch_action(c, key, expect);
        rc = action_get_local(c, key, artifact);
    }
    return rc;
}

int qp_cache_action_get(qp_cache *c, const char *key, char artifact[QP_HEX_LEN])
{
    return qp_cache_action_get_expect(c, key, NULL, artifact);
}

/* of: the checkpoint's action key, or NULL for a plain entry */
static int entry_put(qp_cache *c, const char *key, const char *of, const char *artifact,
                     const char *const *refs, size_t n_refs)
{
    int rc = QP_ERROR;
    char hex[QP_HEX_LEN], *path = NULL, *text = NULL;
    json_t *j = NULL, *jr = NULL;
    if (!key || !*key)
        return qp_error_set(QP_ERROR, "cache action: empty key");
    if (!qp_is_hex_digest(artifact))
        return qp_error_set(QP_ERROR, "action %s: invalid artifact digest '%.80s'", key,
                            artifact ? artifact : "(null)");
    for (size_t i = 0; i < n_refs; i++)
        if (!qp_is_hex_digest(refs[i]))
            return qp_error_set(QP_ERROR, "action %s: ref %zu is not a digest: '%.80s'", key, i,
                                refs[i] ? refs[i] : "(null)");
    jr = json_array();
    for (size_t i = 0; jr && i < n_refs; i++)
        json_array_append_new(jr, json_string(refs[i]));
    j = json_pack("{s:s, s:O, s:I}", "artifact", artifact, "refs", jr, "time", (json_int_t)time(NULL));
    if (j && of) {
        char of_hex[QP_HEX_LEN];
        qp_cache_key_hex(of_hex, of);
        json_object_set_new(j, "checkpoint_of", json_string(of_hex));
    }
    if (!j || !(text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS)))   /* jansson ran out */
        qp_out_of_memory(0, __FILE__, __LINE__);
    path = action_path(c, key, hex);
    if (c->read_only) {
        /* a stage run again over a read-only cache (a package whose out:
         * was missing) records what is already recorded: that is a hit */
        qp_action_entry e;
        char reason[200];
        int same = qp_action_entry_read(path, &e, reason, sizeof(reason)) == 0 &&
                   strcmp(e.artifact, artifact) == 0 && e.n_refs == n_refs;
        for (size_t i = 0; same && i < n_refs; i++)
            same = strcmp(e.refs[i], refs[i]) == 0;
        qp_action_entry_clear(&e);   /* read zeroes it first: safe on any outcome */
        qp_error_clear();
        rc = same ? 0 : qp_error_set(QP_ERROR, "cache %s is read-only: cannot record action %s", c->dir, key);
        goto done;
    }
    /* the objects it names reach the disk before the entry does */
    if ((rc = qp_cache_sync(c)) != 0 || (rc = qp_cache_fanout_mkdir(c->actions, hex)) != 0)
        goto done;
    rc = qp_write_file_atomic(path, text, strlen(text), c->tmp);
done:
    free(text);
    free(path);
    json_decref(j);
    json_decref(jr);
    return rc;
}

int qp_cache_action_put_local(qp_cache *c, const char *key, const char *artifact,
                              const char *const *refs, size_t n_refs)
{
    return entry_put(c, key, NULL, artifact, refs, n_refs);
}

int qp_cache_action_put(qp_cache *c, const char *key, const char *artifact,
                        const char *const *refs, size_t n_refs)
{
    int rc = entry_put(c, key, NULL, artifact, refs, n_refs);
    /* write-back: the objects, then the entry (never an error: see remote.c) */
    if (rc == 0 && c->remote)
        qp_remote_push_action(c, key, artifact, refs, n_refs);
    return rc;
}

int qp_cache_checkpoint_put(qp_cache *c, const char *key, const char *of, const char *artifact,
                            const char *const *refs, size_t n_refs)
{
    if (!of || !*of)
        return qp_error_set(QP_ERROR, "checkpoint %s: empty parent key", key ? key : "(null)");
    return entry_put(c, key, of, artifact, refs, n_refs);
}

int qp_cache_action_remove(qp_cache *c, const char *key)
{
    char hex[QP_HEX_LEN];
    char *path = action_path(c, key, hex);
    int rc = 0;
    if (unlink(path) != 0 && errno != ENOENT)
        rc = qp_error_errno(QP_ERROR, "%s: cannot remove action entry", path);
    free(path);
    return rc;
}

/* One walk over the action entries for both questions about a digest:
 * does any entry name it (stop at the first), and drop every one that does. */
typedef struct {
    const char *digest;
    int drop;      /* 1: unlink each entry that names digest; 0: stop at the first */
    size_t users;  /* entries found naming it */
} users_ctx;

static int visit_user(void *ud, const char *hex, const char *path, const struct stat *st)
{
    users_ctx *u = ud;
    qp_action_entry e;
    char reason[200];
    if ((!u->drop && u->users) || !hex || qp_action_entry_read(path, &e, reason, sizeof(reason)) != 0)
        return 0;  /* malformed entries are verify's business */
    if (qp_action_entry_uses(&e, u->digest)) {
        if (u->drop)
            qp_cache_unlink_if_same(path, st);
        u->users++;
    }
    qp_action_entry_clear(&e);
    return 0;
}

int qp_cache_action_referenced(qp_cache *c, const char *digest, int *out)
{
    users_ctx u = {digest, 0, 0};
    int rc = qp_cache_walk(c->actions, visit_user, &u);
    *out = u.users > 0;
    return rc;
}

int qp_cache_action_drop_referencing(qp_cache *c, const char *digest, size_t *n_dropped)
{
    if (!qp_is_hex_digest(digest))
        return qp_error_set(QP_ERROR, "invalid object digest '%.80s': expected 64 lowercase hex characters",
                            digest ? digest : "(null)");
    users_ctx u = {digest, 1, 0};
    int rc = qp_cache_walk(c->actions, visit_user, &u);
    if (n_dropped)
        *n_dropped = u.users;
    return rc;
}
