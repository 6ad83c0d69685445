/* The shapes of a block's linear layers (train/block.h). */
#include "train/block.h"

void qp_tblock_linear_dims(const qp_tblock_shape *sh, int which, size_t *rows, size_t *cols)
{
    const size_t D = (size_t)sh->hidden, F = (size_t)sh->intermediate;
    const size_t QD = (size_t)sh->n_heads * (size_t)sh->head_dim, KD = (size_t)sh->n_kv_heads * (size_t)sh->head_dim;
    switch (which) {
    case QP_TL_Q: *rows = QD; *cols = D; break;
    case QP_TL_K:
    case QP_TL_V: *rows = KD; *cols = D; break;
    case QP_TL_O: *rows = D; *cols = QD; break;
    case QP_TL_GATE:
    case QP_TL_UP: *rows = F; *cols = D; break;
    default: *rows = D; *cols = F; break;
    }
}
