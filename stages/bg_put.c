#include "stages/bg_put.h"

#include "common/alloc.h"
#include "common/error.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct qp_bg_put {
    qp_cache *c;
    pthread_t tid;
    int in_flight;     /* a put was started and not collected */
    int threaded;      /* ... on tid (else it ran in _start) */
    void *bytes;
    size_t n;
    void *spare;       /* the last collected put's bytes: the caller's to take until the next collect */
    int rc;
    char digest[QP_HEX_LEN];
    char err[QP_ERROR_MAX];   /* the put's message, raised again on the waiting thread */
};

static void put_now(qp_bg_put *p)
{
    p->rc = qp_cache_put(p->c, p->bytes, p->n, p->digest);
    if (p->rc)
        snprintf(p->err, sizeof(p->err), "%s", qp_error_last());
}

static void *put_thread(void *arg)
{
    put_now(arg);
    return NULL;
}

int qp_bg_put_new(qp_bg_put **out, qp_cache *c)
{
    qp_bg_put *p = qp_xcalloc(1, sizeof(*p));
    p->c = c;
    *out = p;
    return 0;
}

int qp_bg_put_start(qp_bg_put *p, void *bytes, size_t n)
{
    if (p->in_flight) {
        free(bytes);
        return qp_error_set(QP_ERROR, "qp_bg_put_start: the previous put was not collected");
    }
    p->bytes = bytes;
    p->n = n;
    p->rc = 0;
    p->in_flight = 1;
    /* no thread to be had: the same put, here and now */
    p->threaded = pthread_create(&p->tid, NULL, put_thread, p) == 0;
    if (!p->threaded)
        put_now(p);
    return 0;
}

int qp_bg_put_wait(qp_bg_put *p, char digest[QP_HEX_LEN])
{
    if (!p->in_flight)
        return 1;
    if (p->threaded)
        pthread_join(p->tid, NULL);
    p->in_flight = p->threaded = 0;
    free(p->spare);   /* the older one, not taken */
    p->spare = p->bytes;
    p->bytes = NULL;
    if (p->rc)
        return qp_error_set(p->rc, "%s", p->err);
    memcpy(digest, p->digest, QP_HEX_LEN);
    return 0;
}

void qp_bg_put_free(qp_bg_put *p)
{
    if (!p)
        return;
    if (p->in_flight && p->threaded)
        pthread_join(p->tid, NULL);
    free(p->bytes);
    free(p->spare);
    free(p);
}

void *qp_bg_put_take_spare(qp_bg_put *p)
{
    void *b = p->spare;
    p->spare = NULL;
    return b;
}
