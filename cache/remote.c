/* Shared HTTP remote cache in the Bazel HTTP remote-cache layout:
 *   {URL}/cas/<sha256>   an object's bytes
 *   {URL}/ac/<key hex>   an action entry, JSON {"artifact": digest, "refs": [digest…]}
 *
 * Wire format of cas/: the RAW (uncompressed) bytes of the object, not the
 * local zstd file.  The local file's name is the SHA-256 of the uncompressed
 * bytes, and Bazel's CAS (and every server or proxy that checks it, e.g.
 * bazel-remote) expects cas/<h> to hold bytes whose SHA-256 is h: raw bytes
 * keep that layout honest and let any reader verify an object with nothing
 * but sha256sum.  A compressed variant would need another path (Bazel uses
 * cas/zstd/… for that); it may come later as an opt-in.
 *
 * Trust: nothing downloaded is trusted.  An object is streamed into a temp
 * file while it is hashed and enters the local store only when its SHA-256
 * is the digest it was asked for; a corrupt or partial object is reported
 * once and ignored (the action is then a miss and the stage runs locally;
 * its upload replaces the bad remote copy).  An action entry whose objects
 * are not all on the remote is a miss.
 *
 * Failure: the remote never fails a run.  The first transport failure, a
 * refused login (401/403) or a server error after the retries prints one
 * warning and turns the remote off for the rest of the process. */
#include "cache/cache_internal.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#define REMOTE_TRIES 3             /* attempts per request (transport errors, 5xx, 429) */
#define REMOTE_BACKOFF_MS 200      /* first retry delay, doubled each time */
#define REMOTE_CONNECT_TIMEOUT_S 5L
#define REMOTE_LOW_SPEED_S 30L     /* abort a transfer slower than 1 KB/s for this long */
#define REMOTE_AC_MAX ((size_t)64 << 20)
#define REMOTE_REPLY_MAX ((size_t)1 << 16)   /* what a HEAD or PUT reply's body may be */
#define REMOTE_PARALLEL 4          /* concurrent object transfers per action */

struct qp_remote {
    char *url;                     /* without a trailing slash */
    int mode, push_hits;
    char *auth_header;             /* "Authorization: Bearer …": never printed */
    char *userpwd;                 /* "user:password": never printed */
    qp_remote_warn_cb warn;
    void *warn_ud;
    pthread_mutex_t mu;            /* guards what follows */
    int disabled;
    char **missed, **corrupt;      /* keys that missed, objects found corrupt, this process */
    size_t n_missed, n_corrupt;
    qp_remote_stats st;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

static void default_warn(void *ud, const char *line)
{
    (void)ud;
    fprintf(stderr, "qpipe: warning: %s\n", line);
}

static void warn(qp_remote *r, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    r->warn(r->warn_ud, line);
}

/* Turns the remote off with one warning (only the first caller warns). */
static void give_up(qp_remote *r, const char *fmt, ...)
{
    char why[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&r->mu);
    int first = !r->disabled;
    r->disabled = 1;
    pthread_mutex_unlock(&r->mu);
    if (first)
        warn(r, "remote cache %s: %s; continuing with the local cache only", r->url, why);
}

static int is_disabled(qp_remote *r)
{
    pthread_mutex_lock(&r->mu);
    int d = r->disabled;
    pthread_mutex_unlock(&r->mu);
    return d;
}

static int in_set(qp_remote *r, char **set, size_t n, const char *s)
{
    int found = 0;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < n && !found; i++)
        found = strcmp(set[i], s) == 0;
    pthread_mutex_unlock(&r->mu);
    return found;
}

/* adds s; returns 1 when it was new */
static int add_set(qp_remote *r, char ***set, size_t *n, const char *s)
{
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < *n; i++)
        if (strcmp((*set)[i], s) == 0) {
            pthread_mutex_unlock(&r->mu);
            return 0;
        }
    *set = qp_xrealloc(*set, (*n + 1) * sizeof(**set));
    (*set)[(*n)++] = qp_xstrdup(s);
    pthread_mutex_unlock(&r->mu);
    return 1;
}

int qp_remote_new(qp_remote **out, const qp_remote_options *o)
{
    *out = NULL;
    if (!o->url || (strncmp(o->url, "http://", 7) != 0 && strncmp(o->url, "https://", 8) != 0))
        return qp_error_set(QP_EUSAGE, "--remote-cache %s: expected an http:// or https:// URL",
                            o->url ? o->url : "(null)");
    const char *host = strstr(o->url, "//") + 2;
    const char *at = strchr(host, '@'), *slash = strchr(host, '/');
    if (at && (!slash || at < slash))   /* user:password@host would reach warnings and logs */
        return qp_error_set(QP_EUSAGE, "--remote-cache: credentials in the URL are refused (they would be printed); "
                                       "set QPIPE_REMOTE_CACHE_TOKEN, or QPIPE_REMOTE_CACHE_USER and "
                                       "QPIPE_REMOTE_CACHE_PASSWORD");
    if (o->mode < QP_REMOTE_READ || o->mode > QP_REMOTE_READWRITE)
        return qp_error_set(QP_EUSAGE, "remote cache mode %d: expected read, write or readwrite", o->mode);
    pthread_once(&curl_once, curl_init_once);
    qp_remote *r = qp_xcalloc(1, sizeof(*r));
    r->url = qp_xstrdup(o->url);
    size_t n = strlen(r->url);
    while (n > 0 && r->url[n - 1] == '/')
        r->url[--n] = '\0';
    r->mode = o->mode;
    r->push_hits = o->push_hits;
    r->warn = o->warn ? o->warn : default_warn;
    r->warn_ud = o->warn_ud;
    if (o->token && *o->token)
        r->auth_header = qp_strfmt("Authorization: Bearer %s", o->token);
    else if (o->user && *o->user)
        r->userpwd = qp_strfmt("%s:%s", o->user, o->password ? o->password : "");
    pthread_mutex_init(&r->mu, NULL);
    *out = r;
    return 0;
}

static void scrub_free(char *s)
{
    if (s) {
        memset(s, 0, strlen(s));
        free(s);
    }
}

void qp_remote_free(qp_remote *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_missed; i++)
        free(r->missed[i]);
    for (size_t i = 0; i < r->n_corrupt; i++)
        free(r->corrupt[i]);
    free(r->missed);
    free(r->corrupt);
    scrub_free(r->auth_header);
    scrub_free(r->userpwd);
    free(r->url);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

void qp_remote_stats_get(qp_remote *r, qp_remote_stats *out)
{
    pthread_mutex_lock(&r->mu);
    *out = r->st;
    out->disabled = r->disabled;
    pthread_mutex_unlock(&r->mu);
}

/* ---- one HTTP request, with retries ---- */

typedef struct {
    /* response sink: a file (hashed as it arrives) or memory */
    int fd;
    qp_sha256 *sha;
    char *mem;
    size_t mem_len, mem_max;
    int sink_failed;
    /* request body: a FILE or memory */
    FILE *src;
    const char *body;
    size_t body_len, body_pos;
    uint64_t bytes;
} req;

static size_t on_write(char *p, size_t size, size_t nmemb, void *ud)
{
    req *q = ud;
    size_t n = size * nmemb;
    if (q->fd >= 0) {
        if (qp_write_all(q->fd, p, n) != 0) {
            qp_error_clear();
            q->sink_failed = 1;
            return 0;
        }
        if (q->sha)
            qp_sha256_update(q->sha, p, n);
    } else {
        if (q->mem_len + n > q->mem_max) {
            q->sink_failed = 1;
            return 0;
        }
        q->mem = qp_xrealloc(q->mem, q->mem_len + n + 1);
        memcpy(q->mem + q->mem_len, p, n);
        q->mem_len += n;
        q->mem[q->mem_len] = '\0';
    }
    q->bytes += n;
    return n;
}

static size_t on_read(char *p, size_t size, size_t nmemb, void *ud)
{
    req *q = ud;
    size_t n = size * nmemb;
    if (q->src)
        return fread(p, 1, n, q->src);
    if (n > q->body_len - q->body_pos)
        n = q->body_len - q->body_pos;
    memcpy(p, q->body + q->body_pos, n);
    q->body_pos += n;
    return n;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Resets a request's sink and source before an attempt. */
static int rewind_req(req *q)
{
    q->sink_failed = 0;
    q->bytes = 0;
    q->mem_len = 0;
    q->body_pos = 0;
    if (q->fd >= 0 && (ftruncate(q->fd, 0) != 0 || lseek(q->fd, 0, SEEK_SET) != 0))
        return -1;
    if (q->sha) {
        qp_sha256_free(q->sha);
        q->sha = NULL;
        if (qp_sha256_new(&q->sha) != 0)
            return -1;
    }
    if (q->src)
        rewind(q->src);
    return 0;
}

/* method GET, HEAD or PUT on {url}/{path}.  0 with *status set when the
 * server answered (whatever the status); QP_ERROR after the last try failed
 * (transport error, or 5xx/429), with a reason in `why`. */
static int http(qp_remote *r, CURL *h, const char *method, const char *path, req *q, uint64_t put_len,
                long *status, char *why, size_t why_len)
{
    char *url = qp_strfmt("%s/%s", r->url, path);
    struct curl_slist *hdr = NULL;
    if (r->auth_header)
        hdr = curl_slist_append(hdr, r->auth_header);
    if (!strcmp(method, "PUT"))
        hdr = curl_slist_append(hdr, "Content-Type: application/octet-stream");
    int rc = QP_ERROR;
    for (int attempt = 0; attempt < REMOTE_TRIES; attempt++) {
        if (attempt > 0)
            sleep_ms(REMOTE_BACKOFF_MS << (attempt - 1));
        if (rewind_req(q) != 0) {
            snprintf(why, why_len, "cannot reset a temp file: %s", strerror(errno));
            break;
        }
        curl_easy_reset(h);
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, REMOTE_CONNECT_TIMEOUT_S);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1024L);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, REMOTE_LOW_SPEED_S);
        curl_easy_setopt(h, CURLOPT_USERAGENT, "qpipe-remote-cache");
        if (hdr)
            curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
        if (r->userpwd) {
            curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
            curl_easy_setopt(h, CURLOPT_USERPWD, r->userpwd);
        }
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, q);
        if (!strcmp(method, "HEAD")) {
            curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
        } else if (!strcmp(method, "PUT")) {
            curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
            curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
            curl_easy_setopt(h, CURLOPT_READDATA, q);
            curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)put_len);
        }
        CURLcode cc = curl_easy_perform(h);
        long st = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &st);
        if (cc == CURLE_WRITE_ERROR && q->sink_failed) {
            snprintf(why, why_len, "%s %s: response too large or local write failed", method, path);
            break;   /* retrying does not help */
        }
        if (cc != CURLE_OK) {
            snprintf(why, why_len, "%s %s: %s", method, path, curl_easy_strerror(cc));
            continue;
        }
        if (st >= 500 || st == 429) {
            snprintf(why, why_len, "%s %s: HTTP %ld", method, path, st);
            continue;
        }
        *status = st;
        rc = 0;
        break;
    }
    curl_slist_free_all(hdr);
    free(url);
    return rc;
}

/* A status the remote cannot be used with: warn once, turn it off. */
static int bad_status(qp_remote *r, const char *method, const char *path, long st)
{
    if (st == 401 || st == 403)
        give_up(r, "%s %s: HTTP %ld (credentials missing or refused: set QPIPE_REMOTE_CACHE_TOKEN, or "
                   "QPIPE_REMOTE_CACHE_USER and QPIPE_REMOTE_CACHE_PASSWORD)", method, path, st);
    else
        give_up(r, "%s %s: unexpected HTTP %ld", method, path, st);
    return QP_ERROR;
}

/* ---- objects ---- */

/* 0: the object is in the local store (already, or downloaded and
 * verified); QP_ENOTFOUND: not on the remote; QP_ECORRUPT: the remote copy
 * is not the digest (reported once); QP_ERROR: the remote is off. */
static int fetch_object(qp_cache *c, qp_remote *r, CURL *h, const char *digest)
{
    if (qp_cache_has(c, digest))
        return 0;
    if (is_disabled(r))
        return QP_ERROR;
    char *tmp = NULL, why[600] = "", path[80];
    int fd = -1, rc;
    if (qp_cache_tmp_open(c, "remote-", &tmp, &fd) != 0) {
        give_up(r, "%s", qp_error_last());
        qp_error_clear();
        return QP_ERROR;
    }
    snprintf(path, sizeof(path), "cas/%s", digest);
    req q = {.fd = fd};
    long st = 0;
    if (qp_sha256_new(&q.sha) != 0) {
        give_up(r, "%s", qp_error_last());
        qp_error_clear();
        rc = QP_ERROR;
    } else if (http(r, h, "GET", path, &q, 0, &st, why, sizeof(why)) != 0) {
        give_up(r, "%s", why);
        rc = QP_ERROR;
    } else if (st == 404) {
        rc = QP_ENOTFOUND;
    } else if (st != 200) {
        rc = bad_status(r, "GET", path, st);
    } else {
        char got[QP_HEX_LEN];
        qp_sha256_final_hex(q.sha, got);
        if (strcmp(got, digest) != 0) {
            if (add_set(r, &r->corrupt, &r->n_corrupt, digest))
                warn(r, "remote cache %s: object %s is corrupt or partial (%llu bytes with SHA-256 %s); "
                        "ignored, not cached", r->url, digest, (unsigned long long)q.bytes, got);
            rc = QP_ECORRUPT;
        } else {
            char stored[QP_HEX_LEN];
            close(fd);
            fd = -1;
            rc = qp_cache_put_file(c, tmp, stored);
            if (rc == 0 && strcmp(stored, digest) != 0)   /* the file changed under us */
                rc = qp_error_set(QP_ECORRUPT, "remote object %s changed while stored", digest);
            if (rc != 0) {
                give_up(r, "cannot store a downloaded object: %s", qp_error_last());
                qp_error_clear();
                rc = QP_ERROR;
            } else {
                pthread_mutex_lock(&r->mu);
                r->st.objects_down++;
                r->st.bytes_down += q.bytes;
                pthread_mutex_unlock(&r->mu);
            }
        }
    }
    if (q.sha)
        qp_sha256_free(q.sha);
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    free(tmp);
    return rc;
}

/* 0: the remote has the object (already, or uploaded now); QP_ERROR: off. */
static int push_object(qp_cache *c, qp_remote *r, CURL *h, const char *digest)
{
    if (is_disabled(r))
        return QP_ERROR;
    char why[600] = "", path[80];
    snprintf(path, sizeof(path), "cas/%s", digest);
    long st = 0;
    req q = {.fd = -1, .mem_max = REMOTE_REPLY_MAX};   /* a server may answer a PUT with a body */
    /* HEAD first: an object someone uploaded is not sent again, except one
     * this process found corrupt there (the upload repairs it) */
    if (!in_set(r, r->corrupt, r->n_corrupt, digest)) {
        if (http(r, h, "HEAD", path, &q, 0, &st, why, sizeof(why)) != 0) {
            give_up(r, "%s", why);
            free(q.mem);
            return QP_ERROR;
        }
        free(q.mem);
        q.mem = NULL;
        if (st == 200)
            return 0;
        if (st != 404)
            return bad_status(r, "HEAD", path, st);
    }
    char *tmp = NULL;
    int fd = -1, rc;
    if (qp_cache_tmp_open(c, "push-", &tmp, &fd) != 0 || (close(fd), 0) ||
        qp_cache_get_to_file(c, digest, tmp) != 0) {
        /* a local object that cannot be read is the local cache's business */
        warn(r, "remote cache: cannot upload object %s: %s", digest, qp_error_last());
        qp_error_clear();
        if (tmp)
            unlink(tmp);
        free(tmp);
        return QP_ENOTFOUND;
    }
    FILE *f = fopen(tmp, "rb");
    struct stat sb;
    if (!f || fstat(fileno(f), &sb) != 0) {
        give_up(r, "%s: %s", tmp, strerror(errno));
        rc = QP_ERROR;
    } else {
        q.src = f;
        if (http(r, h, "PUT", path, &q, (uint64_t)sb.st_size, &st, why, sizeof(why)) != 0) {
            give_up(r, "%s", why);
            rc = QP_ERROR;
        } else if (st != 200 && st != 201 && st != 204) {
            rc = bad_status(r, "PUT", path, st);
        } else {
            rc = 0;
            pthread_mutex_lock(&r->mu);
            r->st.objects_up++;
            r->st.bytes_up += (uint64_t)sb.st_size;
            pthread_mutex_unlock(&r->mu);
        }
    }
    if (f)
        fclose(f);
    free(q.mem);
    unlink(tmp);
    free(tmp);
    return rc;
}

/* ---- parallel transfers over a list of digests ---- */

typedef struct {
    qp_cache *c;
    qp_remote *r;
    const char *const *digests;
    size_t n, next;
    int push;
    int rc;               /* first failure */
    pthread_mutex_t mu;
} batch;

static void *batch_worker(void *arg)
{
    batch *b = arg;
    CURL *h = curl_easy_init();
    if (!h)
        qp_out_of_memory(0, __FILE__, __LINE__);
    for (;;) {
        pthread_mutex_lock(&b->mu);
        size_t i = b->next++;
        int stop = b->rc != 0;
        pthread_mutex_unlock(&b->mu);
        if (stop || i >= b->n)
            break;
        int rc = b->push ? push_object(b->c, b->r, h, b->digests[i]) : fetch_object(b->c, b->r, h, b->digests[i]);
        if (rc != 0) {
            pthread_mutex_lock(&b->mu);
            if (!b->rc)
                b->rc = rc;
            pthread_mutex_unlock(&b->mu);
        }
    }
    curl_easy_cleanup(h);
    return NULL;
}

static int cmp_str(const void *x, const void *y)
{
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

/* Transfers every distinct digest once (an entry's refs repeat its
 * artifact), REMOTE_PARALLEL at a time; the first failure stops the rest. */
static int run_batch(qp_cache *c, qp_remote *r, const char *const *list, size_t n_list, int push)
{
    const char **digests = qp_xcalloc(n_list ? n_list : 1, sizeof(*digests));
    memcpy(digests, list, n_list * sizeof(*digests));
    qsort(digests, n_list, sizeof(*digests), cmp_str);
    size_t n = 0;
    for (size_t i = 0; i < n_list; i++)
        if (n == 0 || strcmp(digests[n - 1], digests[i]) != 0)
            digests[n++] = digests[i];
    batch b = {.c = c, .r = r, .digests = digests, .n = n, .push = push};
    pthread_mutex_init(&b.mu, NULL);
    size_t nt = n < REMOTE_PARALLEL ? n : REMOTE_PARALLEL;
    pthread_t th[REMOTE_PARALLEL];
    size_t started = 0;
    for (size_t i = 1; i < nt; i++)
        if (pthread_create(&th[started], NULL, batch_worker, &b) == 0)
            started++;
    batch_worker(&b);   /* this thread works too */
    for (size_t i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    pthread_mutex_destroy(&b.mu);
    free(digests);
    return b.rc;
}

/* ---- actions ---- */

int qp_remote_fetch_action(qp_cache *c, const char *key)
{
    qp_remote *r = c->remote;
    if (!r || !(r->mode & QP_REMOTE_READ) || is_disabled(r) || in_set(r, r->missed, r->n_missed, key))
        return QP_ENOTFOUND;
    char hex[QP_HEX_LEN], path[80], why[600] = "";
    qp_cache_key_hex(hex, key);
    snprintf(path, sizeof(path), "ac/%s", hex);
    CURL *h = curl_easy_init();
    if (!h)
        qp_out_of_memory(0, __FILE__, __LINE__);
    req q = {.fd = -1, .mem_max = REMOTE_AC_MAX};
    long st = 0;
    int rc = QP_ENOTFOUND;
    json_t *j = NULL;
    const char **digests = NULL;
    size_t n = 0;
    if (http(r, h, "GET", path, &q, 0, &st, why, sizeof(why)) != 0) {
        give_up(r, "%s", why);
        goto done;
    }
    if (st == 404)
        goto miss;
    if (st != 200) {
        bad_status(r, "GET", path, st);
        goto done;
    }
    json_error_t jerr;
    j = q.mem ? json_loadb(q.mem, q.mem_len, 0, &jerr) : NULL;
    json_t *ja = json_object_get(j, "artifact"), *jr = json_object_get(j, "refs");
    if (!json_is_string(ja) || !qp_is_hex_digest(json_string_value(ja)) || !json_is_array(jr)) {
        warn(r, "remote cache %s: %s is not an action entry; ignored", r->url, path);
        goto miss;
    }
    n = json_array_size(jr) + 1;
    digests = qp_xcalloc(n, sizeof(*digests));
    digests[0] = json_string_value(ja);
    for (size_t i = 1; i < n; i++) {
        json_t *x = json_array_get(jr, i - 1);
        if (!json_is_string(x) || !qp_is_hex_digest(json_string_value(x))) {
            warn(r, "remote cache %s: %s names a ref that is not a digest; ignored", r->url, path);
            goto miss;
        }
        digests[i] = json_string_value(x);
    }
    /* every object the entry names must come down verified, else a miss */
    if (run_batch(c, r, digests, n, 0) != 0)
        goto miss;
    if (qp_cache_action_put_local(c, key, digests[0], digests + 1, n - 1) != 0) {
        warn(r, "remote cache: cannot record action %s locally: %s", key, qp_error_last());
        qp_error_clear();
        goto miss;
    }
    pthread_mutex_lock(&r->mu);
    r->st.actions_down++;
    pthread_mutex_unlock(&r->mu);
    rc = 0;
    goto done;
miss:
    add_set(r, &r->missed, &r->n_missed, key);
done:
    json_decref(j);
    free(digests);
    free(q.mem);
    curl_easy_cleanup(h);
    return rc;
}

int qp_remote_push_action(qp_cache *c, const char *key, const char *artifact, const char *const *refs,
                          size_t n_refs)
{
    qp_remote *r = c->remote;
    if (!r || !(r->mode & QP_REMOTE_WRITE) || is_disabled(r))
        return 0;
    size_t n = n_refs + 1;
    const char **digests = qp_xcalloc(n, sizeof(*digests));
    digests[0] = artifact;
    for (size_t i = 0; i < n_refs; i++)
        digests[i + 1] = refs[i];
    /* objects first, the entry last: a reader that sees the entry finds
     * its objects (and treats the entry as a miss while they are not) */
    int rc = run_batch(c, r, digests, n, 1);
    free(digests);
    if (rc != 0)
        return 0;
    json_t *jr = json_array();
    for (size_t i = 0; i < n_refs; i++)
        json_array_append_new(jr, json_string(refs[i]));
    json_t *j = json_pack("{s:s, s:o}", "artifact", artifact, "refs", jr);
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    if (!text)
        qp_out_of_memory(0, __FILE__, __LINE__);
    char hex[QP_HEX_LEN], path[80], why[600] = "";
    qp_cache_key_hex(hex, key);
    snprintf(path, sizeof(path), "ac/%s", hex);
    CURL *h = curl_easy_init();
    if (!h)
        qp_out_of_memory(0, __FILE__, __LINE__);
    req q = {.fd = -1, .mem_max = REMOTE_REPLY_MAX, .body = text, .body_len = strlen(text)};
    long st = 0;
    if (http(r, h, "PUT", path, &q, q.body_len, &st, why, sizeof(why)) != 0)
        give_up(r, "%s", why);
    else if (st != 200 && st != 201 && st != 204)
        bad_status(r, "PUT", path, st);
    else {
        pthread_mutex_lock(&r->mu);
        r->st.actions_up++;
        pthread_mutex_unlock(&r->mu);
    }
    free(q.mem);
    curl_easy_cleanup(h);
    free(text);
    json_decref(j);
    return 0;
}

int qp_remote_push_hits(const qp_cache *c)
{
    return c->remote && c->remote->push_hits && (c->remote->mode & QP_REMOTE_WRITE);
}

void qp_cache_set_remote(qp_cache *c, qp_remote *r)
{
    c->remote = r;
}

/* An action that missed is asked again: a Slurm job elsewhere has just
 * uploaded it (the miss was remembered so that a run asks once). */
void qp_cache_forget_remote_miss(qp_cache *c, const char *key)
{
    qp_remote *r = c->remote;
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n_missed; i++)
        if (strcmp(r->missed[i], key) == 0) {
            free(r->missed[i]);
            r->missed[i] = r->missed[--r->n_missed];
            break;
        }
    pthread_mutex_unlock(&r->mu);
}
