/* Epoch-by-epoch shuffled window order (train/batch_order.h). */
#include "train/batch_order.h"
#include "common/alloc.h"

#include <stdlib.h>

void qp_batch_order_init(qp_batch_order *b, size_t n, uint64_t seed)
{
    qp_rng_seed(&b->rng, seed);
    b->perm = qp_xmalloc((n ? n : 1) * sizeof(size_t));
    b->n = n;
    b->pos = n;
}

void qp_batch_order_free(qp_batch_order *b)
{
    free(b->perm);
    b->perm = NULL;
}

void qp_batch_order_next(qp_batch_order *b, size_t *idx, size_t count)
{
    for (size_t k = 0; k < count; k++) {
        if (b->pos == b->n) {
            for (size_t s = 0; s < b->n; s++)
                b->perm[s] = s;
            for (size_t s = b->n; s > 1; s--) {   /* Fisher-Yates */
                size_t j = (size_t)qp_rng_below(&b->rng, s), tmp = b->perm[s - 1];
                b->perm[s - 1] = b->perm[j];
                b->perm[j] = tmp;
            }
            b->pos = 0;
        }
        idx[k] = b->perm[b->pos++];
    }
}
