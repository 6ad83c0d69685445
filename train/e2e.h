/* The end-to-end phase of QAT (EfficientQAT's E2E-QP, arXiv 2407.11062):
 * with every layer's integer codes and zero points frozen, train only the
 * quantization scales of all layers together on the next-token loss over
 * the calibration windows.
 *
 *   Ŵ = fp16(s0·γ)·(q − z)       per group; γ learned (init 1), Adam
 *   loss = mean over positions t = 0..T−2 of every window of
 *          −log softmax(lm_head·rmsnorm(x_L[t]))[token t+1]
 *   backward: the head, then the layers in reverse (each layer's forward
 *   recomputed from its saved input, train/block.h), dL/dγ = s0·Σ dŴ·(q − z)
 *
 * Adam (β1 0.9, β2 0.999, ε 1e-8, bias-corrected, no weight decay) on γ
 * with a learning rate decayed linearly to 0; batches from a seeded
 * permutation as in block-wise training.  The cross-entropy over all
 * windows is measured before and after; when training did not lower it the
 * scales are left as they were.  Deterministic as train/qat.h. */
#ifndef QP_TRAIN_E2E_H
#define QP_TRAIN_E2E_H

#include <stddef.h>
#include <stdint.h>

#include "quant/linear.h"
#include "train/block.h"

typedef struct {
    qp_tblock_weights_f32 fp;        /* norms and biases; w[i] for linears that are not quantized */
    qp_linear *lin[QP_TL_COUNT];     /* quantized linears (scales updated in place), NULL: fp.w[i] */
} qp_e2e_layer;

typedef struct {
    qp_tblock_shape shape;
    int n_layers, vocab;
    qp_e2e_layer *layers;            /* [n_layers] */
    const float *embed;              /* [V, D] */
    const float *final_norm;         /* [D] */
    const float *lm_head;            /* [V, D] (the embedding when tied) */
    const int32_t *tokens;           /* [S, T] */
    size_t S, T;
    const float *cos_t, *sin_t;      /* [T, hd/2] */
    void (*progress)(void *ud, int step, int steps, double loss);
    void *progress_ud;
} qp_e2e_model;

typedef struct {
    int steps, batch, n_threads;
    double lr;
    uint64_t seed;
} qp_e2e_params;

typedef struct {
    double loss_init, loss_final;    /* mean next-token cross-entropy over all windows */
    int kept_init;
} qp_e2e_stats;

int qp_e2e_run(qp_e2e_stats *st, const qp_e2e_model *m, const qp_e2e_params *p);

#endif
