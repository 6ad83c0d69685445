#include "stages/hf_http.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/version.h"

#include <curl/curl.h>
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

struct qp_http {
    CURL *curl;
    struct curl_slist *headers;   /* holds the Authorization line: freed with the client, never printed */
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;

static void global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

qp_http *qp_http_new(const char *token)
{
    pthread_once(&global_once, global_init);
    qp_http *h = qp_xcalloc(1, sizeof(*h));
    h->curl = curl_easy_init();
    if (!h->curl)
        qp_out_of_memory(0, __FILE__, __LINE__);
    if (token && *token) {
        char *line = qp_strfmt("Authorization: Bearer %s", token);
        h->headers = curl_slist_append(NULL, line);
        memset(line, 0, strlen(line));
        free(line);
        if (!h->headers)
            qp_out_of_memory(0, __FILE__, __LINE__);
    }
    return h;
}

void qp_http_free(qp_http *h)
{
    if (!h)
        return;
    curl_slist_free_all(h->headers);
    curl_easy_cleanup(h->curl);
    free(h);
}

typedef struct {
    qp_http_result *res;
    long cur_status;          /* status of the response whose headers/body are arriving */
    /* memory sink */
    qp_buf *body;
    size_t max;
    /* file sink */
    int fd;
    uint64_t *offset;
    uint64_t file_max;
    int restarted;            /* this response was checked against the range we asked for */
    int write_failed;
    int write_errno;
    qp_http_bytes_cb cb;
    void *ud;
} xfer;

/* value of "Name: value\r\n" when the line is that header, else NULL */
static const char *header_value(const char *line, size_t n, const char *name, size_t *vlen)
{
    size_t k = strlen(name);
    if (n <= k || strncasecmp(line, name, k) != 0 || line[k] != ':')
        return NULL;
    const char *v = line + k + 1, *end = line + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    *vlen = (size_t)(end - v);
    return v;
}

/* Copies an ETag-like value without W/ and quotes, once (the first wins). */
static void keep_tag(char *dst, size_t cap, const char *v, size_t n)
{
    if (dst[0])
        return;
    if (n >= 2 && v[0] == 'W' && v[1] == '/') {
        v += 2;
        n -= 2;
    }
    if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
        v++;
        n -= 2;
    }
    if (n >= cap)   /* not a digest we could use: leave it absent */
        return;
    memcpy(dst, v, n);
    dst[n] = '\0';
}

static size_t on_header(char *line, size_t size, size_t nitems, void *ud)
{
    xfer *x = ud;
    size_t n = size * nitems, vn;
    const char *v;
    if (n > 5 && strncmp(line, "HTTP/", 5) == 0) {
        const char *sp = memchr(line, ' ', n);
        x->cur_status = sp ? strtol(sp + 1, NULL, 10) : 0;
        x->res->status = x->cur_status;
        x->restarted = 0;
        return n;
    }
    if ((v = header_value(line, n, "ETag", &vn)))
        keep_tag(x->res->etag, sizeof(x->res->etag), v, vn);
    else if ((v = header_value(line, n, "X-Linked-Etag", &vn)))
        keep_tag(x->res->linked_etag, sizeof(x->res->linked_etag), v, vn);
    else if ((v = header_value(line, n, "X-Repo-Commit", &vn)))
        keep_tag(x->res->repo_commit, sizeof(x->res->repo_commit), v, vn);
    else if ((v = header_value(line, n, "X-Error-Code", &vn)))
        keep_tag(x->res->error_code, sizeof(x->res->error_code), v, vn);
    else if ((v = header_value(line, n, "X-Linked-Size", &vn)) && x->res->linked_size < 0 && vn > 0 && vn < 20 &&
             isdigit((unsigned char)v[0]))
        x->res->linked_size = strtoll(v, NULL, 10);
    else if ((v = header_value(line, n, "Retry-After", &vn)) && vn > 0 && vn < 10 && isdigit((unsigned char)v[0]))
        x->res->retry_after_s = strtol(v, NULL, 10);
    return n;
}

static size_t on_body_mem(char *p, size_t size, size_t nmemb, void *ud)
{
    xfer *x = ud;
    size_t n = size * nmemb;
    if (x->cur_status >= 300 && x->cur_status < 400)
        return n;   /* a redirect's own body */
    if (x->body->len + n > x->max) {
        x->res->too_large = 1;
        return 0;   /* aborts the transfer */
    }
    qp_buf_append(x->body, p, n);
    return n;
}

static size_t on_body_file(char *p, size_t size, size_t nmemb, void *ud)
{
    xfer *x = ud;
    size_t n = size * nmemb;
    if (x->cur_status != 200 && x->cur_status != 206)
        return n;   /* an error page or a redirect: not the file */
    if (!x->restarted) {
        x->restarted = 1;
        /* 200 to a Range request: the server sends the whole file again */
        if (x->cur_status == 200 && *x->offset > 0) {
            if (ftruncate(x->fd, 0) != 0) {
                x->write_failed = 1;
                x->write_errno = errno;
                return 0;
            }
            *x->offset = 0;
        }
    }
    if (*x->offset + n > x->file_max) {
        x->res->too_large = 1;
        return 0;
    }
    size_t done = 0;
    while (done < n) {
        ssize_t w = pwrite(x->fd, p + done, n - done, (off_t)(*x->offset + done));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            x->write_failed = 1;
            x->write_errno = w < 0 ? errno : EIO;
            return 0;
        }
        done += (size_t)w;
    }
    *x->offset += n;
    if (x->cb)
        x->cb(x->ud, n);
    return n;
}

static void setup(qp_http *h, const char *url, xfer *x, qp_http_result *res)
{
    memset(res, 0, sizeof(*res));
    res->linked_size = -1;
    res->retry_after_s = -1;
    CURL *c = h->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);   /* the Hub sends LFS files to a CDN with 302 */
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_USERAGENT, "qpipe/" QP_VERSION);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
    /* a stalled connection is a dropped one: under 1 byte/s for 60 s */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
    /* curl sends a custom Authorization header to the first host only, so a
     * redirect to a CDN on another host does not carry the token */
    if (h->headers)
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h->headers);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, x);
    x->res = res;
}

static void finish(qp_http *h, xfer *x, CURLcode cc)
{
    qp_http_result *res = x->res;
    long code = 0;
    if (curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK && code > 0)
        res->status = code;
    if (cc != CURLE_OK && !res->too_large && !x->write_failed) {
        res->transport_error = 1;
        /* what a later attempt may not meet again; not e.g. a redirect loop
         * or a redirect to another protocol */
        res->retryable = cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST ||
                         cc == CURLE_OPERATION_TIMEDOUT || cc == CURLE_PARTIAL_FILE || cc == CURLE_RECV_ERROR ||
                         cc == CURLE_SEND_ERROR || cc == CURLE_GOT_NOTHING || cc == CURLE_SSL_CONNECT_ERROR ||
                         cc == CURLE_HTTP2 || cc == CURLE_HTTP2_STREAM;
        snprintf(res->transport_msg, sizeof(res->transport_msg), "%s", curl_easy_strerror(cc));
    }
}

void qp_http_get_mem(qp_http *h, const char *url, size_t max, qp_buf *body, qp_http_result *res)
{
    xfer x = {0};
    x.body = body;
    x.max = max;
    qp_buf_truncate(body, 0);
    setup(h, url, &x, res);
    curl_easy_setopt(h->curl, CURLOPT_WRITEFUNCTION, on_body_mem);
    finish(h, &x, curl_easy_perform(h->curl));
}

int qp_http_get_file(qp_http *h, const char *url, int fd, uint64_t *offset, uint64_t max, qp_http_bytes_cb cb,
                     void *ud, qp_http_result *res)
{
    xfer x = {0};
    x.fd = fd;
    x.offset = offset;
    x.file_max = max;
    x.cb = cb;
    x.ud = ud;
    setup(h, url, &x, res);
    curl_easy_setopt(h->curl, CURLOPT_WRITEFUNCTION, on_body_file);
    char range[48];
    if (*offset > 0) {
        snprintf(range, sizeof(range), "%llu-", (unsigned long long)*offset);
        curl_easy_setopt(h->curl, CURLOPT_RANGE, range);
    }
    curl_easy_setopt(h->curl, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)max);
    finish(h, &x, curl_easy_perform(h->curl));
    if (x.write_failed) {
        errno = x.write_errno;
        return qp_error_errno(QP_ERROR, "cannot write the download of %s", url);
    }
    return 0;
}

char *qp_http_escape(const char *s, int keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *out = qp_xmalloc(n * 3 + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (isalnum(ch) || ch == '.' || ch == '_' || ch == '~' || ch == '-' || (keep_slash && ch == '/')) {
            *o++ = (char)ch;
        } else {
            *o++ = '%';
            *o++ = hex[ch >> 4];
            *o++ = hex[ch & 15];
        }
    }
    *o = '\0';
    return out;
}
