/* The allocation wrappers of alloc.h: one report, then the process ends. */
#include "common/alloc.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Large blocks ask for transparent huge pages (where the kernel's THP mode
 * is "madvise"; "always" gives them anyway, "never" refuses).  A fresh
 * block's pages are faulted in one 4 KiB page at a time, and on a VM each
 * fault is a trip through the hypervisor: GPTQ on the 1.1B preset, which
 * allocates its d x d Hessians, inverses and f32 weight copies afresh per
 * layer, took 10M minor faults and 63 s of system time in a 254 s run,
 * 20 % of its samples in the fault path.  With 2 MiB pages a layer took
 * 6.4 s instead of 10.1 s (fewer faults, and fewer TLB misses in the
 * products over those matrices).  Only the 2 MiB-aligned interior of a
 * block can be huge, so blocks under HUGE_MIN are left alone. */
#define HUGE_PAGE ((uintptr_t)2 << 20)
#define HUGE_MIN ((size_t)4 << 20)

static void advise_huge(void *p, size_t n)
{
#ifdef MADV_HUGEPAGE
    if (n < HUGE_MIN)
        return;
    const uintptr_t b = ((uintptr_t)p + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
    const uintptr_t e = ((uintptr_t)p + n) & ~(HUGE_PAGE - 1);
    if (e > b)
        (void)madvise((void *)b, e - b, MADV_HUGEPAGE);   /* advice: refused or not, the block is the same */
#else
    (void)p;
    (void)n;
#endif
}

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
    advise_huge(p, n);
    return p;
}

void *qp_xcalloc_at(size_t count, size_t size, const char *file, int line)
{
    if (size && count > SIZE_MAX / size)
        qp_out_of_memory(SIZE_MAX, file, line);
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        qp_out_of_memory(count * size, file, line);
    advise_huge(p, count * size);
    return p;
}

void *qp_xrealloc_at(void *p, size_t n, const char *file, int line)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        qp_out_of_memory(n, file, line);
    advise_huge(q, n);
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
    advise_huge(p, rounded);
    return p;
}
