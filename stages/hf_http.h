/* One HTTP attempt at a time for fetch's Hugging Face Hub source (libcurl).
 *
 * A qp_http is one client (a curl easy handle) for one thread.  Each call is
 * ONE attempt: it follows redirects, records the Hub's headers from every
 * response of the chain, and reports what happened in a qp_http_result —
 * retry policy lives with the caller (stages/fetch_hf.c), which knows what
 * is worth retrying.  The bearer token is handed to curl as a header and is
 * never copied into a result, a message or a log. */
#ifndef QP_STAGES_HF_HTTP_H
#define QP_STAGES_HF_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

typedef struct qp_http qp_http;

typedef struct {
    long status;              /* status of the last response (0: none arrived) */
    int transport_error;      /* 1 when no complete answer arrived (curl failed) */
    int retryable;            /* of those: the connection failed, stalled or dropped */
    char transport_msg[160];  /* curl's reason, for messages */
    int too_large;            /* the body passed the caller's bound */
    /* Hub headers, the first value seen along the redirect chain (the Hub's
     * own answer comes before the CDN's), quotes and W/ stripped; "" if absent */
    char etag[80];
    char linked_etag[80];     /* X-Linked-Etag: the LFS file's sha256 */
    char repo_commit[48];     /* X-Repo-Commit */
    char error_code[48];      /* X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound) */
    int64_t linked_size;      /* X-Linked-Size, -1 if absent */
    long retry_after_s;       /* Retry-After (seconds form), -1 if absent */
} qp_http_result;

/* token: NULL or "" for anonymous requests. */
qp_http *qp_http_new(const char *token);
void qp_http_free(qp_http *h);

/* GET url into body (cleared first), at most max bytes (then too_large). */
void qp_http_get_mem(qp_http *h, const char *url, size_t max, qp_buf *body, qp_http_result *res);

/* Called with the number of body bytes just written (progress). */
typedef void (*qp_http_bytes_cb)(void *ud, uint64_t n);

/* GET url into fd at *offset (a Range request when *offset > 0); a server
 * that ignores the range restarts the file at 0.  *offset is the file's
 * length afterwards, whatever happened, so the caller resumes from it.
 * max bounds the file's length.  Returns 0, or QP_ERROR when the local file
 * cannot be written (that is not retried). */
int qp_http_get_file(qp_http *h, const char *url, int fd, uint64_t *offset, uint64_t max, qp_http_bytes_cb cb,
                     void *ud, qp_http_result *res);

/* malloc'ed URL-escaped copy of s (every byte but [A-Za-z0-9._~-] as %XX;
 * keep_slash leaves '/' alone, for a file path). */
char *qp_http_escape(const char *s, int keep_slash);

#endif
