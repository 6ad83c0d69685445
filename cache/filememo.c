/* File digest memo: files/ab/cdef… (name = SHA-256 of the file's real path)
 * holds {"path", "size", "mtime_ns", "inode", "digest"}.  When size, mtime
 * and inode all still match, the file is not read again — this is what
 * keeps an unchanged multi-gigabyte checkpoint from being re-hashed on every
 * run. */
#include "cache/cache_internal.h"
#include "common/error.h"
#include "common/fsutil.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A file whose mtime is this close to "now" may still be rewritten within
 * the same timestamp tick (same size, same mtime): do not memoise it yet. */
#define RACY_WINDOW_NS 2000000000LL

static int64_t mtime_ns(const struct stat *st)
{
    return (int64_t)st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec;
}

int qp_memo_same_file(const struct stat *a, const struct stat *b)
{
    return a->st_size == b->st_size && mtime_ns(a) == mtime_ns(b) && a->st_ino == b->st_ino;
}

static char *memo_path(qp_cache *c, const char *realpath_)
{
    char key[QP_HEX_LEN];
    qp_sha256_buf(key, realpath_, strlen(realpath_));
    return qp_cache_fanout_path(c->files, key);
}

/* Parses a memo file into its fields; 0 ok, QP_ENOTFOUND, QP_EFORMAT. */
static int memo_parse(const char *path, char **out_path, int64_t *size, int64_t *mtime,
                      int64_t *inode, char digest[QP_HEX_LEN])
{
    char *text = NULL;
    int rc = qp_read_file_nofollow(path, QP_CACHE_SMALL_FILE_MAX, &text, NULL);
    if (rc != 0)
        return rc;   /* QP_ENOTFOUND "PATH: cannot open: ..." when there is none */
    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    free(text);
    json_t *jp = json_object_get(j, "path"), *js = json_object_get(j, "size"),
           *jm = json_object_get(j, "mtime_ns"), *ji = json_object_get(j, "inode"),
           *jd = json_object_get(j, "digest");
    if (!json_is_string(jp) || !json_is_integer(js) || !json_is_integer(jm) || !json_is_integer(ji) ||
        !json_is_string(jd) || !qp_is_hex_digest(json_string_value(jd))) {
        json_decref(j);
        return qp_error_set(QP_EFORMAT, "%s: malformed file digest memo", path);
    }
    if (out_path)
        *out_path = qp_strdup(json_string_value(jp));
    *size = json_integer_value(js);
    *mtime = json_integer_value(jm);
    *inode = json_integer_value(ji);
    memcpy(digest, json_string_value(jd), QP_HEX_LEN);
    json_decref(j);
    return 0;
}

int qp_memo_check(const char *path, char **out_path)
{
    int64_t s, m, i;
    char d[QP_HEX_LEN];
    return memo_parse(path, out_path, &s, &m, &i, d);
}

int qp_memo_lookup(qp_cache *c, const char *realpath_, const struct stat *st, char digest[QP_HEX_LEN])
{
    char *path = memo_path(c, realpath_), *recorded = NULL, d[QP_HEX_LEN];
    int64_t size, mtime, inode;
    int hit = 0;
    if (memo_parse(path, &recorded, &size, &mtime, &inode, d) == 0 &&
        strcmp(recorded, realpath_) == 0 && size == (int64_t)st->st_size &&
        mtime == mtime_ns(st) && inode == (int64_t)st->st_ino) {
        memcpy(digest, d, QP_HEX_LEN);
        hit = 1;
    }
    free(recorded);
    free(path);
    return hit;
}

void qp_memo_store(qp_cache *c, const char *realpath_, const struct stat *st, const char *digest)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t now_ns = (int64_t)now.tv_sec * 1000000000LL + now.tv_nsec;
    if (mtime_ns(st) > now_ns - RACY_WINDOW_NS)
        return;
    char key[QP_HEX_LEN];
    qp_sha256_buf(key, realpath_, strlen(realpath_));
    char *path = qp_cache_fanout_path(c->files, key);
    json_t *j = json_pack("{s:s, s:I, s:I, s:I, s:s}", "path", realpath_,
                          "size", (json_int_t)st->st_size, "mtime_ns", (json_int_t)mtime_ns(st),
                          "inode", (json_int_t)st->st_ino, "digest", digest);
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    if (text && qp_cache_fanout_mkdir(c->files, key) == 0)
        qp_write_file_atomic(path, text, strlen(text), c->tmp);
    free(text);
    json_decref(j);
    free(path);
}

int qp_cache_file_digest(qp_cache *c, const char *path, char digest[QP_HEX_LEN])
{
    int rc;
    struct stat st, st2;
    char *rp = realpath(path, NULL);
    if (!rp)
        return qp_error_errno(errno == ENOENT ? QP_ENOTFOUND : QP_ERROR, "%s: cannot open", path);
    if (stat(rp, &st) != 0) {
        rc = qp_error_errno(errno == ENOENT ? QP_ENOTFOUND : QP_ERROR, "%s: cannot stat", path);
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = qp_error_set(QP_ERROR, "%s: not a regular file, cannot take its digest", path);
        goto done;
    }
    if (qp_memo_lookup(c, rp, &st, digest)) {
        rc = 0;
        goto done;
    }
    char hex[QP_HEX_LEN];
    if ((rc = qp_sha256_file(hex, rp)) != 0)
        goto done;
    /* only memoise when nothing changed while we were reading */
    if (stat(rp, &st2) == 0 && qp_memo_same_file(&st, &st2))
        qp_memo_store(c, rp, &st, hex);
    memcpy(digest, hex, QP_HEX_LEN);
done:
    free(rp);
    return rc;
}
