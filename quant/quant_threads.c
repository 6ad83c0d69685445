/* qp_quantize: the rows of a tensor split into n_threads contiguous ranges
 * (range k = rows [k·nrows/T, (k+1)·nrows/T)).  Each row's bytes depend on
 * that row alone, so any partition gives the bytes of qp_quantize_ref.
 * Two parallel rounds: every range is scanned for non-finite weights, then,
 * only when no range has one, quantized; an error leaves dst untouched and
 * names the FIRST bad element whatever the thread count. */
#include "quant/qtypes.h"

#include "common/alloc.h"
#include "common/error.h"
#include "quant/ggml_impl.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct {
    qp_ggml_type t;
    const float *src;
    void *dst;
    int64_t nrows, n_per_row;
    const float *imatrix;
    int n_threads;
    int64_t *bad_row, *bad_col;   /* per range; -1 when clean */
} job;

typedef struct {
    job *j;
    int k;
    int phase;   /* 0: scan, 1: quantize */
} worker_arg;

static void *worker(void *p)
{
    worker_arg *a = p;
    job *j = a->j;
    const int64_t r0 = j->nrows * a->k / j->n_threads;
    const int64_t r1 = j->nrows * (a->k + 1) / j->n_threads;
    if (a->phase == 0) {
        if (!qp_quant_find_nonfinite(j->src, r0, r1, j->n_per_row, &j->bad_row[a->k], &j->bad_col[a->k]))
            j->bad_row[a->k] = -1;
    } else {
        qp_quant_rows(j->t, j->src, j->dst, r0, r1, j->n_per_row, j->imatrix, 1);
    }
    return NULL;
}

/* Runs every range of one phase: ranges 1.. on new threads, range 0 on the
 * caller's; a range whose thread cannot be created runs here too. */
static void run_phase(job *j, worker_arg *args, pthread_t *tids, char *started, int phase)
{
    for (int k = 0; k < j->n_threads; k++)
        args[k] = (worker_arg){ j, k, phase };
    for (int k = 1; k < j->n_threads; k++)
        started[k] = pthread_create(&tids[k], NULL, worker, &args[k]) == 0;
    worker(&args[0]);
    for (int k = 1; k < j->n_threads; k++) {
        if (started[k])
            pthread_join(tids[k], NULL);
        else
            worker(&args[k]);
    }
}

int qp_quantize(qp_ggml_type t, const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                const float *imatrix, int n_threads)
{
    int rc = qp_quant_check(t, src, dst, nrows, n_per_row, imatrix);
    if (rc || nrows == 0)
        return rc;
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    if (n_threads > nrows)
        n_threads = (int)nrows;

    job j = { .t = t, .src = src, .dst = dst, .nrows = nrows, .n_per_row = n_per_row,
              .imatrix = imatrix, .n_threads = n_threads };
    int64_t *bad = qp_xmalloc(2 * (size_t)n_threads * sizeof *bad);
    worker_arg *args = qp_xmalloc((size_t)n_threads * sizeof *args);
    pthread_t *tids = qp_xmalloc((size_t)n_threads * sizeof *tids);
    char *started = qp_xmalloc((size_t)n_threads);
    j.bad_row = bad;
    j.bad_col = bad + n_threads;
    run_phase(&j, args, tids, started, 0);
    for (int k = 0; k < n_threads; k++) {
        if (j.bad_row[k] >= 0) {   /* ranges are in row order: the first hit is the first bad element */
            rc = qp_quant_nonfinite_error(t, src, j.bad_row[k], j.bad_col[k], n_per_row);
            goto done;
        }
    }
    run_phase(&j, args, tids, started, 1);
done:
    free(bad);
    free(args);
    free(tids);
    free(started);
    return rc;
}
