/* Shared HTTP remote cache in the Bazel HTTP remote-cache layout:
 *   {URL}/cas/<sha256>   an object's bytes
 *   {URL}/ac/<key hex>   an action entry, JSON {"artifact": digest, "refs": [digest…],
 *                        "key": key hex, "sizes": {digest: raw bytes, …}}
 * ("key" and "sizes" came later: an entry without them is still read, with
 * the bounds of an object of unknown size).
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
 * ignored (the action is then a miss and the stage runs locally; its
 * upload replaces the bad remote copy); only the first such object of a
 * process warns, the rest are counted in the stats.  An action entry whose
 * objects are not all on the remote is a miss; so is one recorded for
 * another key, or whose artifact the caller's expectation refuses.
 *
 * Cost: a server decides how many bytes it sends and how fast, so each
 * transfer is bounded: a body is capped at the object's recorded size (else
 * limits.max_object; an ac/ reply at REMOTE_AC_MAX) and aborted the moment
 * it goes over, and each transfer has a total deadline of a floor plus its
 * size at limits.min_rate.
 *
 * Failure: the remote never fails a run.  The first transport failure
 * (connection refused, a timeout, a deadline), a refused login (401/403) or
 * a server error that persists over a short retry prints one warning and
 * turns the remote off for the rest of the process.  Only what is likely to
 * pass a moment later is retried (HTTP 5xx/429, a connection reset); a
 * timeout is not, it would only repeat its wait. */
#include "cache/cache_internal.h"
#include "cache/digest_map.h"
#include "common/alloc.h"
#include "common/buf.h"
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

#define REMOTE_TRIES 3             /* attempts per request (5xx, 429, connection reset) */
#define REMOTE_BACKOFF_MS 100      /* first retry delay, doubled each time */
/* an entry is small JSON (a model of a few hundred tensors: tens of KB);
 * readers refuse a larger one, so writers do not upload it */
#define REMOTE_AC_MAX ((uint64_t)16 << 20)
#define REMOTE_REPLY_MAX ((uint64_t)1 << 16)   /* what a HEAD or PUT reply's body may be */
#define REMOTE_PARALLEL 4          /* concurrent object transfers per action */
#define SIZE_UNKNOWN UINT64_MAX

static const qp_remote_limits default_limits = {
    .max_object = (uint64_t)16 << 30,
    .min_rate = (uint64_t)1 << 20,
    .deadline_floor_ms = 30000,
    .low_speed_s = 30,
    .connect_timeout_ms = 5000,
    .progress_min = (uint64_t)64 << 20,
};

struct qp_remote {
    char *url;                     /* without a trailing slash */
    int mode, push_hits;
    char *auth_header;             /* "Authorization: Bearer …": never printed */
    char *userpwd;                 /* "user:password": never printed */
    qp_remote_warn_cb warn;
    void *warn_ud;
    qp_remote_progress_cb progress;
    void *progress_ud;
    qp_remote_limits lim;
    pthread_mutex_t mu;            /* guards what follows */
    uint64_t prog_done, prog_total;   /* the large transfers in flight, together */
    int prog_active;
    int disabled;
    qp_digest_map missed;          /* keys that missed this process (value 1; 0: forgotten) */
    qp_digest_map corrupt;         /* objects found corrupt */
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

/* Sets of digests (stage keys, object names) shared by the transfer
 * threads: a hash map under r->mu, the value 1 for a member. */
static int in_set(qp_remote *r, const qp_digest_map *set, const char *hex)
{
    pthread_mutex_lock(&r->mu);
    const uint64_t *v = qp_digest_map_find(set, hex);
    int found = v && *v;
    pthread_mutex_unlock(&r->mu);
    return found;
}

/* adds hex; returns 1 when it was new */
static int add_set(qp_remote *r, qp_digest_map *set, const char *hex)
{
    pthread_mutex_lock(&r->mu);
    uint64_t *v = qp_digest_map_slot(set, hex);
    int added = !*v;
    *v = 1;
    pthread_mutex_unlock(&r->mu);
    return added;
}

static int hexval(char ch)
{
    return ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
         : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
}

/* 1 when the path word p[0..n) is "." or "..", also percent-encoded
 * ("%2e%2E"): a server or proxy that normalises it would store cas/ and ac/
 * outside the prefix the URL names */
static int is_dot_word(const char *p, size_t n)
{
    size_t dots = 0;
    for (size_t i = 0; i < n; dots++) {
        if (p[i] == '.')
            i++;
        else if (p[i] == '%' && i + 2 < n && hexval(p[i + 1]) == 2 && (p[i + 2] == 'e' || p[i + 2] == 'E'))
            i += 3;
        else
            return 0;
    }
    return dots == 1 || dots == 2;
}

/* The URL is a prefix the cache appends "/cas/<digest>" and "/ac/<key>"
 * to: anything that would make those requests go elsewhere than intended
 * (a query or fragment swallowing the path, a dot word, an encoded NUL, a
 * missing host) is refused up front rather than discovered as odd 404s. */
static int check_url(const char *url)
{
    const char *fix = "give the cache's base URL, http(s)://host[:port][/prefix]";
    if (!url || (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0))
        return qp_error_set(QP_EUSAGE, "--remote-cache %s: expected an http:// or https:// URL",
                            url ? url : "(null)");
    const char *host = strstr(url, "//") + 2;
    size_t host_len = strcspn(host, "/?#");
    const char *at = memchr(host, '@', host_len);
    if (at)   /* user:password@host would reach warnings and logs */
        return qp_error_set(QP_EUSAGE, "--remote-cache: credentials in the URL are refused (they would be printed); "
                                       "set QPIPE_REMOTE_CACHE_TOKEN, or QPIPE_REMOTE_CACHE_USER and "
                                       "QPIPE_REMOTE_CACHE_PASSWORD");
    for (const char *p = url; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return qp_error_set(QP_EUSAGE, "--remote-cache '%s': a space or control character at offset %zu; "
                                "percent-encode it (%%20) or remove it", url, (size_t)(p - url));
    if (host_len == 0 || host[0] == ':')
        return qp_error_set(QP_EUSAGE, "--remote-cache %s: the host is empty; %s", url, fix);
    if (strchr(url, '?'))
        return qp_error_set(QP_EUSAGE, "--remote-cache %s: a query string (?%s) is refused (cas/ and ac/ paths "
                            "are appended to the URL); %s", url, strchr(url, '?') + 1, fix);
    if (strchr(url, '#'))
        return qp_error_set(QP_EUSAGE, "--remote-cache %s: a fragment (#%s) is refused (cas/ and ac/ paths are "
                            "appended to the URL); %s", url, strchr(url, '#') + 1, fix);
    for (const char *p = host + host_len; *p;) {
        if (*p == '%' && (hexval(p[1]) < 0 || hexval(p[2]) < 0))
            return qp_error_set(QP_EUSAGE, "--remote-cache %s: '%.3s' is not a percent-encoded byte; write %%25 "
                                "for a literal '%%'", url, p);
        if (*p == '%' && hexval(p[1]) == 0 && hexval(p[2]) == 0)
            return qp_error_set(QP_EUSAGE, "--remote-cache %s: an encoded NUL (%%00) in the path is refused; "
                                "remove it", url);
        p++;
    }
    for (const char *w = host + host_len; *w == '/';) {
        size_t n = strcspn(w + 1, "/");
        if (is_dot_word(w + 1, n))
            return qp_error_set(QP_EUSAGE, "--remote-cache %s: the path word '%.*s' is refused (a server may "
                                "resolve it outside the prefix); write the prefix without it", url, (int)n, w + 1);
        w += 1 + n;
    }
    return 0;
}

int qp_remote_new(qp_remote **out, const qp_remote_options *o)
{
    *out = NULL;
    if (check_url(o->url) != 0)
        return QP_EUSAGE;
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
    r->progress = o->progress;
    r->progress_ud = o->progress_ud;
    r->lim = o->limits;
#define LIMIT_DEFAULT(f) if (r->lim.f <= 0) r->lim.f = default_limits.f
    LIMIT_DEFAULT(max_object);
    LIMIT_DEFAULT(min_rate);
    LIMIT_DEFAULT(deadline_floor_ms);
    LIMIT_DEFAULT(low_speed_s);
    LIMIT_DEFAULT(connect_timeout_ms);
    LIMIT_DEFAULT(progress_min);
#undef LIMIT_DEFAULT
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
    qp_digest_map_free(&r->missed);
    qp_digest_map_free(&r->corrupt);
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
    qp_remote *r;
    /* response sink: a file (hashed as it arrives) or memory */
    int fd;
    qp_sha256 *sha;
    qp_buf mem;
    uint64_t max;          /* the most body bytes accepted (the object's size, or a cap) */
    int sink_failed, too_big, too_slow;
    /* request body: a FILE or memory */
    FILE *src;
    const char *body;
    size_t body_len, body_pos;
    uint64_t bytes;
    /* deadline and progress of the attempt in flight */
    double start, deadline_s;
    uint64_t total;        /* its size once known (0: not yet) */
    uint64_t reported;     /* bytes of it added to r->prog_done */
    int large;             /* counted in r->prog_* */
} req;

static size_t on_write(char *p, size_t size, size_t nmemb, void *ud)
{
    req *q = ud;
    size_t n = size * nmemb;
    /* checked before anything is kept: a body over its cap is never
     * written out, and curl aborts the transfer at once */
    if (q->bytes + n > q->max) {
        q->too_big = 1;
        return 0;
    }
    if (q->fd >= 0) {
        if (qp_write_all(q->fd, p, n) != 0) {
            qp_error_clear();
            q->sink_failed = 1;
            return 0;
        }
        if (q->sha)
            qp_sha256_update(q->sha, p, n);
    } else {
        qp_buf_append(&q->mem, p, n);   /* geometric growth: many small chunks cost O(n) */
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

/* seconds a transfer of `bytes` may take in all */
static double deadline_for(const qp_remote *r, uint64_t bytes)
{
    return (double)r->lim.deadline_floor_ms / 1000.0 + (double)bytes / (double)r->lim.min_rate;
}

/* Ends a large transfer's share of the progress line; the last one
 * in flight erases it. */
static void progress_end(req *q)
{
    qp_remote *r = q->r;
    if (!q->large)
        return;
    pthread_mutex_lock(&r->mu);
    r->prog_done += q->total - q->reported;   /* a failed one counts as done: it no longer moves */
    if (--r->prog_active == 0) {
        r->prog_done = r->prog_total = 0;
        r->progress(r->progress_ud, 0, 0);
    }
    pthread_mutex_unlock(&r->mu);
    q->large = 0;
}

/* curl calls this about once a second and on every chunk: the deadline
 * once the size is known (a Content-Length under the cap tightens the
 * cap's deadline), and the progress of a large transfer */
static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    req *q = ud;
    qp_remote *r = q->r;
    uint64_t total = (uint64_t)(ultotal > 0 ? ultotal : dltotal > 0 ? dltotal : 0);
    uint64_t now_bytes = (uint64_t)(ultotal > 0 ? ulnow : dlnow);
    if (total && !q->total) {
        q->total = total;
        if (deadline_for(r, total) < q->deadline_s)
            q->deadline_s = deadline_for(r, total);
    }
    if (qp_now() - q->start > q->deadline_s) {
        q->too_slow = 1;
        return 1;
    }
    if (!r->progress || !q->total || q->total < r->lim.progress_min)
        return 0;
    pthread_mutex_lock(&r->mu);
    int moved = !q->large;
    if (!q->large) {
        q->large = 1;
        r->prog_active++;
        r->prog_total += q->total;
    }
    if (now_bytes > q->reported && now_bytes <= q->total) {
        r->prog_done += now_bytes - q->reported;
        q->reported = now_bytes;
        moved = 1;
    }
    if (moved)   /* curl also calls while idle: the line is redrawn only when it changes */
        r->progress(r->progress_ud, r->prog_done, r->prog_total);
    pthread_mutex_unlock(&r->mu);
    return 0;
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
    q->sink_failed = q->too_big = q->too_slow = 0;
    q->bytes = q->total = q->reported = 0;
    qp_buf_truncate(&q->mem, 0);
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

/* What may pass if asked again a moment later: a server error or a dropped
 * connection.  Not a timeout (it would wait as long again, and the docs
 * promise a failing remote turns off at once), nor a refused connection. */
static int transient(CURLcode cc, long st)
{
    if (cc == CURLE_OK)
        return st >= 500 || st == 429;
    return cc == CURLE_SEND_ERROR || cc == CURLE_RECV_ERROR || cc == CURLE_GOT_NOTHING;
}

enum { HTTP_TOO_BIG = 1 };

/* method GET, HEAD or PUT on {url}/{path}; q->max bounds the reply body.
 * 0 with *status set when the server answered (whatever the status);
 * HTTP_TOO_BIG when the body (or its Content-Length) went over q->max;
 * QP_ERROR when the request failed (after the retries of a transient
 * failure), with a reason in `why`. */
static int http(qp_remote *r, CURL *h, const char *method, const char *path, req *q, uint64_t put_len,
                long *status, char *why, size_t why_len)
{
    char *url = qp_strfmt("%s/%s", r->url, path);
    struct curl_slist *hdr = NULL;
    if (r->auth_header)
        hdr = curl_slist_append(hdr, r->auth_header);
    if (!strcmp(method, "PUT"))
        hdr = curl_slist_append(hdr, "Content-Type: application/octet-stream");
    q->r = r;
    int rc = QP_ERROR;
    for (int attempt = 0; attempt < REMOTE_TRIES; attempt++) {
        if (attempt > 0)
            sleep_ms(REMOTE_BACKOFF_MS << (attempt - 1));
        if (rewind_req(q) != 0) {
            snprintf(why, why_len, "cannot reset a temp file: %s", strerror(errno));
            break;
        }
        /* the body cannot be longer than its cap, so the cap bounds the
         * deadline until a Content-Length tightens it (on_progress) */
        uint64_t size = !strcmp(method, "PUT") ? put_len : !strcmp(method, "HEAD") ? 0 : q->max;
        q->deadline_s = deadline_for(r, size);
        q->start = qp_now();
        curl_easy_reset(h);
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, r->lim.connect_timeout_ms);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1024L);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, r->lim.low_speed_s);
        /* curl's own clock as a backstop of on_progress's (+1 s: ours speaks first) */
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(q->deadline_s * 1000.0) + 1000L);
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
            /* no body: its Content-Length is the object's, not a size to
             * cap, time or show; curl's clock alone bounds it */
            curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
        } else {
            /* a Content-Length over the cap is refused before any byte of the body */
            curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)q->max);
            curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
            curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
            curl_easy_setopt(h, CURLOPT_XFERINFODATA, q);
        }
        if (!strcmp(method, "PUT")) {
            curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
            curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
            curl_easy_setopt(h, CURLOPT_READDATA, q);
            curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)put_len);
        }
        CURLcode cc = curl_easy_perform(h);
        progress_end(q);
        long st = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &st);
        if (cc == CURLE_FILESIZE_EXCEEDED || (cc == CURLE_WRITE_ERROR && q->too_big)) {
            snprintf(why, why_len, "%s %s: the reply is larger than %llu bytes", method, path,
                     (unsigned long long)q->max);
            rc = HTTP_TOO_BIG;
            break;
        }
        if (cc == CURLE_WRITE_ERROR && q->sink_failed) {
            snprintf(why, why_len, "%s %s: cannot write the reply locally", method, path);
            break;
        }
        if (q->too_slow || cc == CURLE_OPERATION_TIMEDOUT) {
            if (q->too_slow)
                snprintf(why, why_len, "%s %s: not done within its deadline of %.0f s (%llu of %llu bytes)",
                         method, path, q->deadline_s, (unsigned long long)q->bytes,
                         (unsigned long long)q->total);
            else
                snprintf(why, why_len, "%s %s: %s after %.0f s", method, path, curl_easy_strerror(cc),
                         qp_now() - q->start);
            break;
        }
        if (cc != CURLE_OK || st >= 500 || st == 429) {
            if (cc != CURLE_OK)
                snprintf(why, why_len, "%s %s: %s", method, path, curl_easy_strerror(cc));
            else
                snprintf(why, why_len, "%s %s: HTTP %ld", method, path, st);
            if (transient(cc, st))
                continue;
            break;
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

/* A remote object that is not what its digest says: only the first of a
 * process warns (a bad server makes every object bad, and one line says
 * so); the rest are counted for the summary. */
static void report_corrupt(qp_remote *r, const char *digest, const char *fmt, ...)
{
    char what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (!add_set(r, &r->corrupt, digest))
        return;
    pthread_mutex_lock(&r->mu);
    int first = r->st.corrupt++ == 0;
    pthread_mutex_unlock(&r->mu);
    if (first)
        warn(r, "remote cache %s: object %s is %s; ignored, not cached (any more such objects are counted in "
                "the remote cache summary)", r->url, digest, what);
}

/* 0: the object is in the local store (already, or downloaded and
 * verified); QP_ENOTFOUND: not on the remote; QP_ECORRUPT: the remote copy
 * is not the digest (reported once); QP_ERROR: the remote is off. */
static int fetch_object(qp_cache *c, qp_remote *r, CURL *h, const char *digest, uint64_t size)
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
    /* an entry records its objects' sizes: not a byte more is taken */
    req q = {.fd = fd, .max = size != SIZE_UNKNOWN ? size : r->lim.max_object};
    long st = 0;
    int hr = 0;
    if (qp_sha256_new(&q.sha) != 0) {
        give_up(r, "%s", qp_error_last());
        qp_error_clear();
        rc = QP_ERROR;
    } else if ((hr = http(r, h, "GET", path, &q, 0, &st, why, sizeof(why))) == HTTP_TOO_BIG) {
        if (size != SIZE_UNKNOWN)
            report_corrupt(r, digest, "larger than its recorded %llu bytes", (unsigned long long)q.max);
        else
            report_corrupt(r, digest, "larger than the %llu bytes an object whose entry records no size may be",
                           (unsigned long long)q.max);
        rc = QP_ECORRUPT;
    } else if (hr != 0) {
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
            report_corrupt(r, digest, "corrupt or partial (%llu bytes with SHA-256 %s)",
                           (unsigned long long)q.bytes, got);
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
    req q = {.fd = -1, .max = REMOTE_REPLY_MAX};   /* a server may answer a PUT with a body */
    /* HEAD first: an object someone uploaded is not sent again, except one
     * this process found corrupt there (the upload repairs it) */
    if (!in_set(r, &r->corrupt, digest)) {
        if (http(r, h, "HEAD", path, &q, 0, &st, why, sizeof(why)) != 0) {
            give_up(r, "%s", why);
            qp_buf_free(&q.mem);
            return QP_ERROR;
        }
        qp_buf_free(&q.mem);
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
    qp_buf_free(&q.mem);
    unlink(tmp);
    free(tmp);
    return rc;
}

/* ---- parallel transfers over a list of objects ---- */

typedef struct {
    const char *digest;
    uint64_t size;        /* raw bytes, SIZE_UNKNOWN when no entry records it */
} xfer_item;

typedef struct {
    qp_cache *c;
    qp_remote *r;
    const xfer_item *items;
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
        const xfer_item *it = &b->items[i];
        int rc = b->push ? push_object(b->c, b->r, h, it->digest) : fetch_object(b->c, b->r, h, it->digest, it->size);
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

static int cmp_item(const void *x, const void *y)
{
    return strcmp(((const xfer_item *)x)->digest, ((const xfer_item *)y)->digest);
}

/* Transfers every distinct digest once (an entry's refs repeat its
 * artifact), REMOTE_PARALLEL at a time; the first failure stops the rest. */
static int run_batch(qp_cache *c, qp_remote *r, xfer_item *items, size_t n_list, int push)
{
    qsort(items, n_list, sizeof(*items), cmp_item);
    size_t n = 0;
    for (size_t i = 0; i < n_list; i++)
        if (n == 0 || strcmp(items[n - 1].digest, items[i].digest) != 0)
            items[n++] = items[i];
    batch b = {.c = c, .r = r, .items = items, .n = n, .push = push};
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
    return b.rc;
}

/* ---- actions ---- */

/* An entry that is well formed but not this key's: a miss, never recorded
 * locally, with one warning per key (each key is asked once a process). */
static void report_mismatch(qp_remote *r, const char *path, const char *why)
{
    pthread_mutex_lock(&r->mu);
    r->st.mismatched++;
    pthread_mutex_unlock(&r->mu);
    warn(r, "remote cache %s: %s does not fit the key it was asked for (%s); ignored, not cached", r->url, path,
         why);
}

/* the raw size an entry records for digest, else SIZE_UNKNOWN */
static uint64_t recorded_size(json_t *sizes, const char *digest)
{
    json_t *v = json_object_get(sizes, digest);
    return json_is_integer(v) && json_integer_value(v) >= 0 ? (uint64_t)json_integer_value(v) : SIZE_UNKNOWN;
}

int qp_remote_fetch_action(qp_cache *c, const char *key, const qp_cache_expect *expect)
{
    qp_remote *r = c->remote;
    char hex[QP_HEX_LEN], path[80], why[600] = "";
    qp_cache_key_hex(hex, key);   /* the key's name on the remote, and in the set of misses */
    if (!r || !(r->mode & QP_REMOTE_READ) || is_disabled(r) || in_set(r, &r->missed, hex))
        return QP_ENOTFOUND;
    snprintf(path, sizeof(path), "ac/%s", hex);
    CURL *h = curl_easy_init();
    if (!h)
        qp_out_of_memory(0, __FILE__, __LINE__);
    req q = {.fd = -1, .max = REMOTE_AC_MAX};
    long st = 0;
    int rc = QP_ENOTFOUND, hr;
    json_t *j = NULL;
    xfer_item *items = NULL;
    const char **refs = NULL;
    size_t n = 0;
    if ((hr = http(r, h, "GET", path, &q, 0, &st, why, sizeof(why))) == HTTP_TOO_BIG) {
        warn(r, "remote cache %s: %s is larger than an action entry can be (%llu bytes); ignored", r->url, path,
             (unsigned long long)REMOTE_AC_MAX);
        goto miss;
    }
    if (hr != 0) {
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
    j = q.mem.len ? json_loadb(q.mem.data, q.mem.len, 0, &jerr) : NULL;
    json_t *ja = json_object_get(j, "artifact"), *jr = json_object_get(j, "refs"), *jk = json_object_get(j, "key");
    json_t *js = json_object_get(j, "sizes");
    if (!json_is_string(ja) || !qp_is_hex_digest(json_string_value(ja)) || !json_is_array(jr)) {
        warn(r, "remote cache %s: %s is not an action entry; ignored", r->url, path);
        goto miss;
    }
    /* an entry names the key it was written for: one copied or swapped
     * under another key's path is caught before anything is downloaded */
    if (jk && (!json_is_string(jk) || strcmp(json_string_value(jk), hex) != 0)) {
        snprintf(why, sizeof(why), "it records key %.64s", json_is_string(jk) ? json_string_value(jk) : "(not a string)");
        report_mismatch(r, path, why);
        goto miss;
    }
    n = json_array_size(jr) + 1;
    items = qp_xcalloc(n, sizeof(*items));
    refs = qp_xcalloc(n, sizeof(*refs));
    for (size_t i = 0; i < n; i++) {
        json_t *x = i == 0 ? ja : json_array_get(jr, i - 1);
        if (!json_is_string(x) || !qp_is_hex_digest(json_string_value(x))) {
            warn(r, "remote cache %s: %s names a ref that is not a digest; ignored", r->url, path);
            goto miss;
        }
        refs[i] = items[i].digest = json_string_value(x);
        items[i].size = recorded_size(js, refs[i]);
    }
    /* every object the entry names must come down verified, else a miss */
    if (run_batch(c, r, items, n, 0) != 0)
        goto miss;
    /* the objects are in the store (content-addressed, so harmless if the
     * entry is refused: gc takes them); the entry is recorded only if the
     * caller's expectation of its artifact holds */
    why[0] = '\0';
    if (expect && expect->fn && expect->fn(expect->ud, c, refs[0], why, sizeof(why)) != 0) {
        qp_error_clear();
        report_mismatch(r, path, why[0] ? why : "its artifact is not what the caller expects");
        goto miss;
    }
    if (qp_cache_action_put_local(c, key, refs[0], refs + 1, n - 1) != 0) {
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
    add_set(r, &r->missed, hex);
done:
    json_decref(j);
    free(items);
    free(refs);
    qp_buf_free(&q.mem);
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
    xfer_item *items = qp_xcalloc(n, sizeof(*items));
    for (size_t i = 0; i < n; i++)
        items[i] = (xfer_item){i == 0 ? artifact : refs[i - 1], SIZE_UNKNOWN};
    /* objects first, the entry last: a reader that sees the entry finds
     * its objects (and treats the entry as a miss while they are not) */
    int rc = run_batch(c, r, items, n, 1);
    free(items);
    if (rc != 0)
        return 0;
    char hex[QP_HEX_LEN], path[80], why[600] = "";
    qp_cache_key_hex(hex, key);
    /* the key, so a reader can tell an entry copied under another key's
     * path; the sizes, so a reader caps each download at its size */
    json_t *jr = json_array(), *js = json_object();
    for (size_t i = 0; i < n; i++) {
        const char *d = i == 0 ? artifact : refs[i - 1];
        uint64_t size;
        if (i > 0)
            json_array_append_new(jr, json_string(d));
        if (qp_cache_object_size(c, d, &size) == 0)
            json_object_set_new(js, d, json_integer((json_int_t)size));
        qp_error_clear();   /* no size recorded: the reader falls back on its maximum */
    }
    json_t *j = json_pack("{s:s, s:o, s:s, s:o}", "artifact", artifact, "refs", jr, "key", hex, "sizes", js);
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    if (!text)
        qp_out_of_memory(0, __FILE__, __LINE__);
    snprintf(path, sizeof(path), "ac/%s", hex);
    CURL *h = NULL;
    req q = {.fd = -1, .max = REMOTE_REPLY_MAX, .body = text, .body_len = strlen(text)};
    long st = 0;
    if (q.body_len > REMOTE_AC_MAX) {
        warn(r, "remote cache: action %s is not uploaded: its entry (%zu bytes) is larger than readers accept "
                "(%llu)", key, q.body_len, (unsigned long long)REMOTE_AC_MAX);
        goto done;
    }
    if (!(h = curl_easy_init()))
        qp_out_of_memory(0, __FILE__, __LINE__);
    if (http(r, h, "PUT", path, &q, q.body_len, &st, why, sizeof(why)) != 0)
        give_up(r, "%s", why);
    else if (st != 200 && st != 201 && st != 204)
        bad_status(r, "PUT", path, st);
    else {
        pthread_mutex_lock(&r->mu);
        r->st.actions_up++;
        pthread_mutex_unlock(&r->mu);
    }
done:
    qp_buf_free(&q.mem);
    curl_easy_cleanup(h);
    free(text);
    json_decref(j);
    return 0;
}

int qp_remote_push_hits(const qp_cache *c)
{
    return c->remote && c->remote->push_hits && (c->remote->mode & QP_REMOTE_WRITE);
}

const char *qp_remote_url(const qp_remote *r)
{
    return r->url;
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
    char hex[QP_HEX_LEN];
    qp_cache_key_hex(hex, key);
    pthread_mutex_lock(&r->mu);
    uint64_t *v = qp_digest_map_find(&r->missed, hex);
    if (v)
        *v = 0;
    pthread_mutex_unlock(&r->mu);
}
