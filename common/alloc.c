/* The allocation wrappers of alloc.h: one report, then the process ends. */
#include "common/alloc.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

_Noreturn void qp_out_of_memory(size_t n, const char *file, int line)
{
    /* no malloc from here on: format into a stack buffer, one write() */
    char msg[256], size[48] = "";
    if (n)
        snprintf(size, sizeof(size), "cannot allocate %zu bytes ", n);
    int len = snprintf(msg, sizeof(msg),
                       "qpipe: out of memory: %s(%s:%d); free memory, lower -j or --threads, or use a machine "
                       "with more RAM\n",
                       size, file, line);
    if (len > 0)
        (void)!write(STDERR_FILENO, msg, (size_t)len < sizeof(msg) ? (size_t)len : sizeof(msg) - 1);
    _exit(1);
}

void *qp_xmalloc_at(size_t n, const char *file, int line)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        qp_out_of_memory(n, file, line);
    return p;
}

void *qp_xcalloc_at(size_t count, size_t size, const char *file, int line)
{
    if (size && count > SIZE_MAX / size)
        qp_out_of_memory(SIZE_MAX, file, line);
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        qp_out_of_memory(count * size, file, line);
    return p;
}

void *qp_xrealloc_at(void *p, size_t n, const char *file, int line)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        qp_out_of_memory(n, file, line);
    return q;
}

void *qp_xrealloc_array_at(void *p, size_t count, size_t size, const char *file, int line)
{
    if (size && count > SIZE_MAX / size)
        qp_out_of_memory(SIZE_MAX, file, line);
    return qp_xrealloc_at(p, count * size, file, line);
}

char *qp_xstrdup_at(const char *s, const char *file, int line)
{
    const size_t n = strlen(s) + 1;
    char *p = qp_xmalloc_at(n, file, line);
    memcpy(p, s, n);
    return p;
}

char *qp_xstrndup_at(const char *s, size_t n, const char *file, int line)
{
    const size_t len = strnlen(s, n);
    char *p = qp_xmalloc_at(len + 1, file, line);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

void *qp_xaligned_alloc_at(size_t align, size_t n, const char *file, int line)
{
    if (n > SIZE_MAX - align)
        qp_out_of_memory(SIZE_MAX, file, line);
    const size_t rounded = (n + align - 1) / align * align;
    void *p = aligned_alloc(align, rounded ? rounded : align);
    if (!p)
        qp_out_of_memory(n, file, line);
    return p;
}
