/* The allocation-failure policy, for the whole program: qpipe does not try
 * to go on after the C library cannot give it memory.
 *
 * Every allocation goes through these wrappers.  On failure they print ONE
 * line to stderr — "qpipe: out of memory: cannot allocate N bytes
 * (file:line); ..." — and end the process with exit status 1 (README: exit
 * codes) without running atexit handlers, exactly as if it had been killed.
 * Why not return an error: on Linux with overcommit a too-large request
 * is answered by the OOM killer, not by NULL, so an error path would be
 * dead code in practice; and the cache is already built to survive a process
 * that dies at any instruction (objects are written to a temporary name and
 * renamed, a stage's lock dies with its process), so nothing half-written is
 * published and nothing cached is lost.  A request whose size overflows
 * (count × size) is reported the same way.
 *
 * Sizes a user controls (tensor shapes, sequence lengths, sample counts) are
 * checked against their limits BEFORE allocating, with a message naming the
 * file or tensor: that is an input error, not an allocation failure. */
#ifndef QP_COMMON_ALLOC_H
#define QP_COMMON_ALLOC_H

#include <stddef.h>

void *qp_xmalloc_at(size_t n, const char *file, int line);
void *qp_xcalloc_at(size_t count, size_t size, const char *file, int line);
void *qp_xrealloc_at(void *p, size_t n, const char *file, int line);
void *qp_xrealloc_array_at(void *p, size_t count, size_t size, const char *file, int line);
char *qp_xstrdup_at(const char *s, const char *file, int line);
char *qp_xstrndup_at(const char *s, size_t n, const char *file, int line);
/* aligned_alloc without its size rule: n is rounded up to a multiple of align. */
void *qp_xaligned_alloc_at(size_t align, size_t n, const char *file, int line);
/* The one report: prints the line and ends the process (status 1).  n = 0:
 * the size is not known — a library qpipe calls (jansson, libyaml, OpenSSL,
 * zstd) reported that it ran out; such failures follow the same policy. */
_Noreturn void qp_out_of_memory(size_t n, const char *file, int line);

/* Never return NULL (a request for 0 bytes returns a unique pointer). */
#define qp_xmalloc(n) qp_xmalloc_at((n), __FILE__, __LINE__)
#define qp_xcalloc(count, size) qp_xcalloc_at((count), (size), __FILE__, __LINE__)
#define qp_xrealloc(p, n) qp_xrealloc_at((p), (n), __FILE__, __LINE__)
#define qp_xrealloc_array(p, count, size) qp_xrealloc_array_at((p), (count), (size), __FILE__, __LINE__)
#define qp_xstrdup(s) qp_xstrdup_at((s), __FILE__, __LINE__)
#define qp_xstrndup(s, n) qp_xstrndup_at((s), (n), __FILE__, __LINE__)
#define qp_xaligned_alloc(align, n) qp_xaligned_alloc_at((align), (n), __FILE__, __LINE__)

#endif
