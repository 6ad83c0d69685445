/* Block-wise quantization-aware training of one decoder block
 * (AutoRound's sign-SGD, arXiv 2309.05516, over train/fakequant.h's
 * rounding offsets, scales and zero points):
 *
 *   targets  Y_s = block_fp(X_s) for every calibration window s (X: the
 *            block's input, from the already-quantized blocks before it)
 *   step t   a batch of windows (a seeded permutation, epoch by epoch);
 *            L = mean((block_q(X) − Y)²) over the batch's elements;
 *            every learned value moves by −lr_t·sign(∂L/∂value),
 *            lr_t = lr·(1 − t/steps) (linear decay to 0, as AutoRound);
 *            v is clamped to [−0.5, 0.5], γ to [0.5, 1.5], zf to [0, maxq]
 *   result   the codes, fp16 scales and zero points of the final values
 *            (quant/linear.h objects: Ŵ = dequantize(result), bit for
 *            bit what the last loss evaluation used).  The loss over all
 *            windows is measured before and after; when training did not
 *            lower it, the initial solution is returned (never worse than
 *            the init on the objective it optimises).
 *
 * init: each linear starts from RTN on the GPTQ grid (with `mse`: the
 * clipping search), or from a given solution (init[i], e.g. GPTQ's): its
 * scales and zero points, and integer offsets so that v = 0 gives its codes.
 *
 * Determinism: every product is train/block.h's (the same bits at any
 * thread count), sign-SGD has no floating-point state beyond the values,
 * and batches come from a SplitMix64 seed: the same inputs give the same
 * codes on every machine (numerics profile seqfma-1). */
#ifndef QP_TRAIN_QAT_H
#define QP_TRAIN_QAT_H

#include <stddef.h>
#include <stdint.h>

#include "quant/linear.h"
#include "train/block.h"

typedef struct {
    int group_size;     /* -1: one group per row */
    int sym, mse;       /* the grid (quant/linear.h) */
    int steps;          /* >= 0; 0: the init, unchanged */
    double lr;          /* > 0 */
    int batch;          /* windows per step */
    uint64_t seed;
    int n_threads;      /* >= 1 */
} qp_qat_params;

/* Reads window s's block input x [T, D] into dst; 0 or a negative qp_err. */
typedef int (*qp_qat_input_fn)(void *ud, size_t s, float *dst);
/* step of steps done, with the loss of its batch. */
typedef void (*qp_qat_progress_fn)(void *ud, int step, int steps, double loss);

typedef struct {
    qp_tblock_shape shape;
    size_t S, T;                       /* calibration windows of T tokens */
    const float *cos_t, *sin_t;        /* RoPE tables [T, head_dim/2] */
    qp_qat_input_fn input;
    void *input_ud;
    qp_tblock_weights_f32 fp;          /* the unquantized block */
    int bits[QP_TL_COUNT];             /* 0: this linear stays unquantized */
    const qp_linear *init[QP_TL_COUNT];/* NULL: RTN */
    qp_qat_progress_fn progress;
    void *progress_ud;
} qp_qat_block;

typedef struct {
    double loss_init;    /* mean squared error over all windows, the init */
    double loss_final;   /* the same for the result */
    int kept_init;       /* 1 when training did not lower it */
    int bad_linear;      /* on error: the linear (QP_TL_*) it concerns, else -1 */
} qp_qat_stats;

/* Trains the block; out[i] (bits[i] > 0) receives a new object.  QP_EUSAGE
 * for a weight the grid refuses (a shape, a NaN, an fp16 overflow, an init of
 * another grid): st->bad_linear names the linear, so the caller can prefix
 * the tensor's name.  A block with no linear to quantize returns at once. */
int qp_qat_block_run(qp_linear *out[QP_TL_COUNT], qp_qat_stats *st, const qp_qat_block *blk,
                     const qp_qat_params *p);

#endif
