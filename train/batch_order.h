/* The order in which training visits the calibration windows, shared by
 * block-wise QAT (train/qat.c) and the end-to-end phase (train/e2e.c):
 * epoch after epoch, a fresh Fisher-Yates permutation of 0..n-1 from a
 * SplitMix64 seed (common/rng.h), so the same seed gives the same batches
 * on every machine. */
#ifndef QP_TRAIN_BATCH_ORDER_H
#define QP_TRAIN_BATCH_ORDER_H

#include <stddef.h>
#include <stdint.h>

#include "common/rng.h"

typedef struct {
    qp_rng rng;
    size_t *perm;   /* [n] */
    size_t n, pos;  /* pos == n: reshuffle before the next window */
} qp_batch_order;

void qp_batch_order_init(qp_batch_order *b, size_t n, uint64_t seed);
void qp_batch_order_free(qp_batch_order *b);
/* The next `count` windows into idx[count]. */
void qp_batch_order_next(qp_batch_order *b, size_t *idx, size_t count);

#endif
