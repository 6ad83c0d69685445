/* One growable byte buffer for the whole program (text being assembled,
 * a file being serialised, bytes read from a stream).
 *
 * A small value type: `qp_buf b = QP_BUF_INIT;` … `qp_buf_free(&b);`.
 * The bytes are always followed by a NUL (not counted in len), so text can
 * be read with qp_buf_cstr().  Growth doubles the capacity (amortised O(1)
 * appends) unless more is asked for, then it is exactly that; running out of
 * memory follows common/alloc.h. */
#ifndef QP_COMMON_BUF_H
#define QP_COMMON_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct {
    char *data;   /* NULL until the first append */
    size_t len;   /* bytes in use */
    size_t cap;   /* bytes allocated (len + 1 <= cap once data != NULL) */
} qp_buf;

#define QP_BUF_INIT {NULL, 0, 0}

/* Makes room for `extra` more bytes (and the NUL) without changing len. */
void qp_buf_reserve(qp_buf *b, size_t extra);
void qp_buf_append(qp_buf *b, const void *p, size_t n);
void qp_buf_putc(qp_buf *b, char c);
void qp_buf_puts(qp_buf *b, const char *s);
void qp_buf_printf(qp_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void qp_buf_vprintf(qp_buf *b, const char *fmt, va_list ap);
/* Shortens to len bytes (len <= b->len). */
void qp_buf_truncate(qp_buf *b, size_t len);
/* The bytes as a C string: "" for an empty buffer, never NULL. */
const char *qp_buf_cstr(const qp_buf *b);
/* Hands the allocation to the caller (NUL-terminated; free() it) and leaves
 * b empty; an empty buffer gives an allocated "". */
char *qp_buf_detach(qp_buf *b, size_t *len);
void qp_buf_free(qp_buf *b);

#endif
