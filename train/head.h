/* The language-model head and its loss, forward and backward, for the
 * end-to-end phase of QAT (train/e2e.h):
 *
 *   h      = rmsnorm(x)·g                 x [N, D], g [D]
 *   logits = h·Wᵀ                         W [V, D] (lm_head, or the tied embedding)
 *   loss   = Σ over scored rows r of −log softmax(logits[r])[target[r]]
 *            (rows with target < 0 are not scored)
 *   dx     = ∂(loss·scale)/∂x             (scale: e.g. 1/number of scored rows)
 *
 * Two instantiations of one source (train/head_impl.h), as train/block.h:
 * _f32 for training, _f64 for the finite-difference check
 * (tests/train/test_grad.c).  The products are tiled over the pool with
 * fixed tiles and the row kernels work on whole rows: the same bits at any
 * thread count.  Memory: logits of `chunk` rows at a time, never [N, V]. */
#ifndef QP_TRAIN_HEAD_H
#define QP_TRAIN_HEAD_H

#include <stddef.h>
#include <stdint.h>

#include "model/llama_pool.h"

#define QP_THEAD_DECLARE(RT, SFX)                                                                              \
    /* Returns Σ nll over scored rows (in double); dx [N, D] may be NULL (loss only).                         \
     * pool: the threads (qp_pool_new); scratch is allocated inside. */                                        \
    double qp_thead_##SFX##_loss(qp_pool *pool, const RT *x, size_t N, size_t D, const RT *g, double eps,    \
                                 const RT *W, size_t V, const int32_t *target, RT scale, RT *dx);

QP_THEAD_DECLARE(float, f32)
QP_THEAD_DECLARE(double, f64)

#endif
