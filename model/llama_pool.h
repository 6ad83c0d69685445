/* A small persistent thread pool and the deterministic matrix product the
 * forward pass is built on.
 *
 * Determinism: OpenBLAS 0.3.x splits a threaded sgemm's K loop differently
 * from its single-threaded driver (level3_thread.c vs level3.c), so its
 * results change with its thread count (0.3.21, SkylakeX kernels: identical
 * for K = 256 or 768, but 70% of the outputs differ in their last bits for
 * K = 700, 1000, 1500 or 5000 at 1 vs 2 threads).  qpipe therefore keeps OpenBLAS
 * at ONE thread and parallelises itself: a product is cut into column blocks
 * whose size depends only on the matrix shape (never on the thread count),
 * and each block is one single-threaded sgemm.  Whichever thread computes a
 * block, it computes the same bits. */
#ifndef QP_MODEL_LLAMA_POOL_H
#define QP_MODEL_LLAMA_POOL_H

#include <stddef.h>

typedef struct qp_pool qp_pool;

/* One task: `task` in [0, n_tasks), `thread` in [0, n_threads) names the
 * executing thread (for per-thread scratch). */
typedef void (*qp_pool_fn)(void *arg, size_t task, int thread);

/* n_threads >= 1 (the caller's thread counts as one).  Also sets OpenBLAS
 * to one thread (see above; process-wide). */
int qp_pool_new(qp_pool **out, int n_threads);
void qp_pool_free(qp_pool *p);
int qp_pool_threads(const qp_pool *p);
/* Runs fn for every task and returns when all are done.  Tasks must write
 * disjoint outputs; not reentrant (one run at a time per pool). */
void qp_pool_run(qp_pool *p, size_t n_tasks, qp_pool_fn fn, void *arg);

/* Online CPUs (>= 1). */
int qp_pool_default_threads(void);

/* Column block of the partitioned products: a function of nothing but this
 * constant, so results never depend on the thread count. */
#define QP_MM_BLOCK 128

/* One product Y[n, out] = X[n, in] · W[out, in]ᵀ (+ bias[out]) with row
 * strides ldx >= in and ldy >= out.  bias may be NULL. */
typedef struct {
    float *y;
    size_t ldy;
    const float *w;     /* [out, in], row-major (PyTorch Linear layout) */
    const float *bias;  /* [out] or NULL */
    size_t out;
} qp_mm_job;

/* Runs several products sharing the same input X[n, in] (e.g. q, k, v) in
 * one pool dispatch. */
void qp_mm_batch(qp_pool *p, const float *x, size_t ldx, size_t n, size_t in,
                 const qp_mm_job *jobs, size_t n_jobs);

/* OpenBLAS core in use ("SkylakeX", "Haswell", ...). */
const char *qp_blas_corename(void);
/* OpenBLAS 0.3.21's dynamic-arch detection does not know recent Xeons
 * (family 6 model 0xCF) and falls back to the SSE3 "Prescott" kernels, 4x
 * slower.  The core can only be chosen before the library initialises, so:
 * when OPENBLAS_CORETYPE is unset, the core is a generic fallback and the CPU
 * has AVX-512 (or AVX2), re-executes /proc/self/exe with argv and
 * OPENBLAS_CORETYPE=SkylakeX (or Haswell).  Returns only when it did not
 * re-execute.  Call first thing in main(). */
void qp_blas_reexec_if_generic(char **argv);

#endif
