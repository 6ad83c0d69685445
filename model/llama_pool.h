/* A small persistent thread pool and the deterministic matrix product the
 * forward pass is built on.
 *
 * Determinism: every product is qp_sgemm (common/gemm.h), whose bits are
 * fixed by its contract on any CPU.  The pool parallelises by cutting a
 * product into column blocks whose size depends only on the matrix shape
 * (never on the thread count); each block is one single-threaded qp_sgemm,
 * so whichever thread computes a block, it computes the same bits. */
#ifndef QP_MODEL_LLAMA_POOL_H
#define QP_MODEL_LLAMA_POOL_H

#include <stddef.h>

#include "common/gemm.h"

typedef struct qp_pool qp_pool;

/* One task: `task` in [0, n_tasks), `thread` in [0, n_threads) names the
 * executing thread (for per-thread scratch). */
typedef void (*qp_pool_fn)(void *arg, size_t task, int thread);

/* n_threads >= 1 (the caller's thread counts as one). */
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

/* X[n, in] packed once (qp_sgemm_pack_a) for several column blocks, its K
 * slices packed in parallel by the pool, into a buffer the pool keeps and
 * reuses (valid until the next qp_mm_pack on the same pool).  Returns -1
 * (out->ap NULL) when there is nothing to pack (n or in is 0): qp_mm_block
 * then works from X itself, with the same bits. */
typedef struct {
    const float *ap;
    qp_gemm_path path;   /* the layout ap was packed for */
} qp_mm_packed;
int qp_mm_pack(qp_pool *p, qp_mm_packed *out, const float *x, size_t ldx, size_t n, size_t in);
/* One column block Y[n, nc] = X[n, in] · W[nc, in]ᵀ, from pk when it holds
 * a packed X (pk may be NULL). */
void qp_mm_block(const qp_mm_packed *pk, const float *x, size_t ldx, size_t n, size_t in, const float *w, size_t nc,
                 float *y, size_t ldy);

/* Runs several products sharing the same input X[n, in] (e.g. q, k, v) in
 * one pool dispatch (X is packed once for all their blocks). */
void qp_mm_batch(qp_pool *p, const float *x, size_t ldx, size_t n, size_t in,
                 const qp_mm_job *jobs, size_t n_jobs);

#endif
