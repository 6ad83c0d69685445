/* One LLaMA / Qwen2 decoder block, forward and backward, for training
 * (quantization-aware training: train/qat.h).  The same block as the
 * evaluation forward pass (model/llama.h), written for gradients:
 *
 *   x  [N, D]   N = S·T rows: S windows of T tokens, positions 0..T-1 each
 *   h1 = rmsnorm(x)·g_attn                                  [N, D]
 *   q  = rope(h1·Wqᵀ + bq)   k = rope(h1·Wkᵀ + bk)          [N, H·hd], [N, KV·hd]
 *   v  = h1·Wvᵀ + bv                                        [N, KV·hd]
 *   a  = softmax(q·kᵀ/√hd, causal within the window)·v      [N, H·hd]  (head h reads kv head h/(H/KV))
 *   x2 = x + a·Woᵀ                                          [N, D]
 *   h2 = rmsnorm(x2)·g_ffn                                  [N, D]
 *   m  = silu(h2·Wgᵀ) ⊙ (h2·Wuᵀ)                             [N, F]
 *   y  = x2 + m·Wdᵀ                                         [N, D]
 *
 * backward takes dL/dy [N, D] and gives dL/dx [N, D] and dL/dW of the seven
 * linear weights (and the q/k/v biases); the norm weights are not trained.
 *
 * Two instantiations of one source (train/block_impl.h): _f32, what QAT
 * runs (the project's deterministic products common/gemm.h, threads over
 * fixed tiles: the same bits at any thread count), and _f64, what the
 * gradient checks (tests/train/test_grad.c) compare with finite
 * differences.  Attention probabilities are recomputed in backward from the
 * saved q and k, one (window, kv head) at a time, so memory is O(N·(D+F))
 * plus O(T²) per thread, never O(S·H·T²). */
#ifndef QP_TRAIN_BLOCK_H
#define QP_TRAIN_BLOCK_H

#include <stddef.h>

/* The linear layers, in true-sequential order. */
enum { QP_TL_Q, QP_TL_K, QP_TL_V, QP_TL_O, QP_TL_GATE, QP_TL_UP, QP_TL_DOWN, QP_TL_COUNT };

typedef struct {
    int hidden;        /* D */
    int n_heads;       /* H */
    int n_kv_heads;    /* KV, divides H */
    int head_dim;      /* hd, even */
    int intermediate;  /* F */
    double rms_eps;
} qp_tblock_shape;

/* rows [out] × cols [in] of linear `which` (PyTorch Linear layout [out, in]). */
void qp_tblock_linear_dims(const qp_tblock_shape *sh, int which, size_t *rows, size_t *cols);

#define QP_TBLOCK_DECLARE(RT, SFX)                                                                              \
    typedef struct {                                                                                           \
        const RT *w[QP_TL_COUNT];  /* [out, in] each */                                                         \
        const RT *bias[3];         /* q, k, v biases [H·hd], [KV·hd], [KV·hd], or NULL (LLaMA) */               \
        const RT *norm_attn;       /* [D] */                                                                    \
        const RT *norm_ffn;        /* [D] */                                                                    \
    } qp_tblock_weights_##SFX;                                                                                 \
    typedef struct {                                                                                           \
        RT *w[QP_TL_COUNT];        /* dL/dW [out, in], or NULL: not computed */                                 \
        RT *bias[3];               /* dL/db, or NULL */                                                         \
    } qp_tblock_grads_##SFX;                                                                                   \
    typedef struct qp_tblock_##SFX qp_tblock_##SFX;                                                            \
    /* A workspace for up to max_windows windows of T tokens; cos_t/sin_t                                     \
     * [T, hd/2] are the RoPE tables (copied).  n_threads >= 1. */                                             \
    int qp_tblock_##SFX##_new(qp_tblock_##SFX **out, const qp_tblock_shape *sh, size_t max_windows, size_t T, \
                              const RT *cos_t, const RT *sin_t, int n_threads);                                  \
    void qp_tblock_##SFX##_free(qp_tblock_##SFX *b);                                                           \
    /* y [S·T, D] = block(x [S·T, D]), S <= max_windows; keeps what backward                                 \
     * needs (x is copied).  y must not overlap x. */                                                          \
    void qp_tblock_##SFX##_forward(qp_tblock_##SFX *b, const qp_tblock_weights_##SFX *w, const RT *x, size_t S, \
                                   RT *y);                                                                      \
    /* After forward with the same weights: dx [S·T, D] (NULL: not computed)                                  \
     * and the gradients g asks for (written, not accumulated). */                                             \
    void qp_tblock_##SFX##_backward(qp_tblock_##SFX *b, const qp_tblock_weights_##SFX *w, const RT *dy, RT *dx,  \
                                    const qp_tblock_grads_##SFX *g);                                           \
    /* FLOPs of one forward (fwd = 1) or backward (fwd = 0) over S windows,                                   \
     * counting the products (2 per multiply-add) as computed. */                                              \
    double qp_tblock_##SFX##_flops(const qp_tblock_##SFX *b, size_t S, int fwd);

QP_TBLOCK_DECLARE(float, f32)
QP_TBLOCK_DECLARE(double, f64)

#endif
