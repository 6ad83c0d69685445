/* Timing shared by the benchmarks. */
#ifndef QP_BENCH_UTIL_H
#define QP_BENCH_UTIL_H

#include "common/fsutil.h"

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

#endif
