/* Timing shared by the benchmarks. */
#ifndef QP_BENCH_UTIL_H
#define QP_BENCH_UTIL_H

#include "common/fsutil.h"

#include <string.h>

typedef int (*run_fn)(void *ctx);

/* Fastest wall time of fn over at least 3 runs and about min_seconds in
 * all (at most max_runs); -1 when fn fails. */
static inline double bench_best_time(run_fn fn, void *ctx, double min_seconds, int max_runs)
{
    double best = 1e30, spent = 0;
    for (int i = 0; i < 3 || (spent < min_seconds && i < max_runs); i++) {
        double t0 = qp_now();
        if (fn(ctx))
            return -1;
        double t = qp_now() - t0;
        spent += t;
        best = t < best ? t : best;
    }
    return best;
}

/* The memcpy baseline the quantizers' MB/s are compared with. */
typedef struct {
    void *dst;
    const void *src;
    size_t n;
} bench_copy;

static inline int bench_run_memcpy(void *p)
{
    bench_copy *c = p;
    memcpy(c->dst, c->src, c->n);
    /* keep the copy observable */
    return ((volatile unsigned char *)c->dst)[c->n / 2] == 0x5A && ((unsigned char *)c->dst)[0] == 0x5B;
}

#endif
