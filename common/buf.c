/* qp_buf (see buf.h). */
#include "common/buf.h"

#include "common/alloc.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void qp_buf_reserve(qp_buf *b, size_t extra)
{
    if (extra > SIZE_MAX - 1 - b->len)
        qp_out_of_memory(SIZE_MAX, __FILE__, __LINE__);
    const size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return;
    /* double, or take exactly what is asked when that is more: a buffer
     * reserved once for a known size is not rounded up to twice it */
    size_t cap = b->cap == 0 ? 64 : b->cap > SIZE_MAX / 2 ? need : 2 * b->cap;
    if (cap < need)
        cap = need;
    b->data = qp_xrealloc(b->data, cap);
    b->cap = cap;
}

void qp_buf_append(qp_buf *b, const void *p, size_t n)
{
    qp_buf_reserve(b, n);
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void qp_buf_putc(qp_buf *b, char c)
{
    qp_buf_append(b, &c, 1);
}

void qp_buf_puts(qp_buf *b, const char *s)
{
    qp_buf_append(b, s, strlen(s));
}

void qp_buf_vprintf(qp_buf *b, const char *fmt, va_list ap)
{
    va_list again;
    va_copy(again, ap);
    char small[256];
    const int n = vsnprintf(small, sizeof(small), fmt, ap);
    if (n < 0) {
        va_end(again);
        return;   /* an encoding error in fmt: nothing is appended */
    }
    if ((size_t)n < sizeof(small)) {
        qp_buf_append(b, small, (size_t)n);
    } else {
        qp_buf_reserve(b, (size_t)n);
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, again);
        b->len += (size_t)n;
    }
    va_end(again);
}

void qp_buf_printf(qp_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    qp_buf_vprintf(b, fmt, ap);
    va_end(ap);
}

void qp_buf_truncate(qp_buf *b, size_t len)
{
    if (len < b->len) {
        b->len = len;
        b->data[len] = '\0';
    }
}

const char *qp_buf_cstr(const qp_buf *b)
{
    return b->data ? b->data : "";
}

char *qp_buf_detach(qp_buf *b, size_t *len)
{
    qp_buf_reserve(b, 0);
    char *p = b->data;
    p[b->len] = '\0';
    if (len)
        *len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}

void qp_buf_free(qp_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
