/* LLaMA forward pass for evaluation: a whole window of tokens at once
 * (prefill at positions 0..n-1), f32 activations, OpenBLAS sgemm.
 *
 *   x = embed[tokens]                                   [n, D]
 *   per layer:  h = rmsnorm(x)·w_in
 *               q,k,v = h·Wqᵀ(+bq), h·Wkᵀ(+bk), h·Wvᵀ(+bv)  [n, H·hd], [n, KV·hd]
 *               rope(q), rope(k)                         (HF rotate-half; per-dimension
 *                                                         inverse frequencies, Llama 3 scaling)
 *               a = softmax(q·kᵀ/√hd, causal)·v           (GQA: head h uses kv head h/(H/KV))
 *               x += a·Woᵀ
 *               h = rmsnorm(x)·w_post
 *               x += (silu(h·Wgᵀ) ⊙ h·Wuᵀ)·Wdᵀ
 *   logits = rmsnorm(x)·w_final · lm_headᵀ              [n, V]  (lm_head = embed when tied)
 *
 * The forward pass does not care where weights come from: it asks a
 * qp_weight_source for each tensor by its Hugging Face name, as f32.
 *
 * Threads and determinism: the model owns a thread pool; every product is
 * cut into column blocks of a fixed size (independent of the thread count)
 * and each block is a single-threaded sgemm, so logits are bit-identical for
 * any thread count.  Creating a model sets OpenBLAS to one thread
 * (process-wide; see model/llama_pool.h for why).
 *
 * Memory: the f32 weights of all layers (and the embedding and lm_head) stay
 * resident when they fit opts.weight_cache_bytes.  Otherwise nothing f32 is
 * kept: each product's matrices are converted from the source, once per
 * forward pass (one batch of windows), into one reused buffer of the largest
 * group (q+k+v, o, gate, up or down; at 7B shapes 192 MiB); the embedding
 * rows of the batch's tokens are converted one by one, and the lm_head is
 * applied in chunks of rows (at most 32 MiB of f32) unless it is small
 * enough to keep (opts.head_resident_bytes).  A source with row
 * access (open/rows/close) lets the pool's threads convert in parallel and
 * lets the stored form (bf16, ggml blocks ...) stay the only copy.
 *
 * Batches: qp_llama_forward_batch runs S windows of n tokens as one S·n-row
 * pass (every GEMM over all rows; RoPE positions and causal attention per
 * window), then qp_llama_batch_logits gives one window's logits at a time.
 * Every element of every product is the same fixed FMA chain whatever S,
 * the other windows of the batch or the thread count (common/gemm.h), so
 * the logits of a window are the same bits in any batch. */
#ifndef QP_MODEL_LLAMA_H
#define QP_MODEL_LLAMA_H

#include <stddef.h>
#include <stdint.h>

#include "model/config.h"
#include "model/safetensors.h"

/* Hyper-parameters (what config.json / GGUF llama.* keys give). */
typedef struct {
    int vocab;            /* V */
    int hidden;           /* D */
    int n_layers;         /* L */
    int n_heads;          /* H query heads */
    int n_kv_heads;       /* KV heads; divides H */
    int head_dim;         /* hd, even */
    int intermediate;     /* F (SwiGLU width) */
    float rms_eps;
    float rope_theta;
    qp_rope_scaling rope_scaling;   /* PLAIN (zero) or LLAMA3; model/config.h */
    int max_pos;          /* longest window accepted */
    int tied_embeddings;  /* lm_head = embed_tokens */
    int qkv_bias;         /* q/k/v projections have biases (Qwen2-style) */
} qp_llama_hparams;

/* Checks ranges and divisibility; QP_EFORMAT with one line naming the field. */
int qp_llama_hparams_check(const qp_llama_hparams *hp);
/* The forward pass's subset of a loaded config.json / GGUF configuration. */
void qp_llama_hparams_from_config(qp_llama_hparams *out, const qp_llama_config *cfg);

/* Where weights come from.  Tensor names are Hugging Face's:
 *   model.embed_tokens.weight [V, D], model.norm.weight [D], lm_head.weight [V, D],
 *   model.layers.N.input_layernorm.weight [D], model.layers.N.post_attention_layernorm.weight [D],
 *   model.layers.N.self_attn.{q,k,v,o}_proj.weight  [H·hd, D], [KV·hd, D], [KV·hd, D], [D, H·hd],
 *   model.layers.N.self_attn.{q,k,v}_proj.bias      [H·hd], [KV·hd], [KV·hd]  (qkv_bias only),
 *   model.layers.N.mlp.{gate,up,down}_proj.weight    [F, D], [F, D], [D, F].
 * A source over another format (GGUF, dequantized formats) maps the names. */
typedef struct qp_weight_source {
    void *ud;
    /* Writes tensor `name`, of PyTorch shape shape[0..ndim-1] (row-major),
     * as f32 into dst.  Returns 0, or a negative qp_err after qp_error_set()
     * (missing tensor, wrong shape, unsupported dtype).  Called from the
     * thread that calls qp_llama_new / qp_llama_forward only. */
    int (*get_f32)(void *ud, const char *name, int ndim, const uint64_t *shape, float *dst);
    /* 1 when q_proj/k_proj rows (and biases) are stored in GGUF's permuted,
     * interleaved-pair RoPE layout; they are permuted back on load, so both
     * layouts give bit-identical logits. */
    int rope_interleaved;
    /* Optional row access (all three or none).  open (from the calling
     * thread) finds and checks tensor `name` of shape shape[0..ndim-1] and
     * returns a handle; rows writes rows [row0, row0 + nrows) (rows =
     * shape[0] and a row shape[1] of a 2-D tensor; a 1-D tensor is one row)
     * as f32 into dst, and may be
     * called from several threads at once on one handle; close releases it.
     * Without them, every tensor is fetched whole through get_f32 and the
     * embedding (and lm_head) stay resident in f32. */
    int (*open)(void *ud, const char *name, int ndim, const uint64_t *shape, void **handle);
    int (*rows)(void *ud, void *handle, uint64_t row0, uint64_t nrows, float *dst);
    void (*close)(void *ud, void *handle);
} qp_weight_source;

/* A source over a safetensors checkpoint (HF names, rotate-half layout,
 * F32/F16/BF16/F64 tensors).  The checkpoint must outlive every model built
 * from the source. */
void qp_weight_source_checkpoint(qp_weight_source *out, const qp_checkpoint *ck);

#define QP_LLAMA_CACHE_DEFAULT ((size_t)2 << 30)   /* 2 GiB of f32 weights */
#define QP_LLAMA_HEAD_RESIDENT ((size_t)256 << 20)   /* 256 MiB f32 lm_head */

typedef struct {
    int n_threads;              /* 0: online CPUs */
    /* Keep all layers' f32 weights resident when they total at most this
     * many bytes.  Converting bf16 -> f32 for every window costs 3-30% of a
     * 256-token window on the house model (bench/bench_eval.c, noisy shared
     * machine), and evaluation runs hundreds of windows, so caching is the
     * default up to 2 GiB (~0.5 B parameters); 0 always streams. */
    size_t weight_cache_bytes;
    /* A streamed model still keeps an f32 lm_head (or tied embedding) of at
     * most this many bytes: converting it again for every window costs
     * ~10% of a TinyLlama-1.1B Q4_K_M pass (250 MiB there); at Llama-2-7B
     * shapes (500 MiB) it is applied from the source in chunks.  Default
     * QP_LLAMA_HEAD_RESIDENT; 0: always chunks. */
    size_t head_resident_bytes;
    /* A streamed lm_head is applied in chunks of at most this many f32
     * bytes (whole multiples of 128 rows, at least 128 rows); 0: 32 MiB. */
    size_t head_chunk_bytes;
} qp_llama_opts;

void qp_llama_opts_init(qp_llama_opts *o);

typedef struct qp_llama qp_llama;

/* Builds a model: checks hp, loads the embedding and final norm (and, when
 * caching, every layer, so a missing or misshapen tensor fails here).  The
 * source (and what it points to) must outlive the model.  opts may be NULL. */
int qp_llama_new(qp_llama **out, const qp_llama_hparams *hp, const qp_weight_source *src,
                 const qp_llama_opts *opts);
void qp_llama_free(qp_llama *m);

const qp_llama_hparams *qp_llama_get_hparams(const qp_llama *m);
int qp_llama_threads(const qp_llama *m);
/* Runs fn(arg, task, thread) for every task in [0, n_tasks) on the model's
 * threads (thread < qp_llama_threads(m), for per-thread scratch) and
 * returns when all are done; tasks write disjoint outputs (evaluation
 * scores a window's positions this way).  Not while a forward call runs. */
void qp_llama_run_tasks(qp_llama *m, size_t n_tasks, void (*fn)(void *arg, size_t task, int thread), void *arg);
/* 1 when the f32 weights of all layers are resident. */
int qp_llama_weights_cached(const qp_llama *m);

/* logits[n, V] for tokens[n] at positions 0..n-1 (causal).  1 <= n <=
 * max_pos, every token in [0, V).  One call at a time per model. */
int qp_llama_forward(qp_llama *m, const int32_t *tokens, size_t n, float *logits);

/* S windows of n tokens each, tokens[S·n] (window s at tokens + s·n, its
 * positions 0..n-1), through every layer and the final norm; then
 * qp_llama_batch_logits(m, s, logits[n, V]) computes window s's logits
 * (s < S; valid until the next forward call on m).  The logits of a window
 * are bit-identical to qp_llama_forward's on that window alone. */
int qp_llama_forward_batch(qp_llama *m, const int32_t *tokens, size_t S, size_t n);
int qp_llama_batch_logits(qp_llama *m, size_t s, float *logits);
/* Only rows row0..n-1 of window s's logits (the rest of logits[n, V] is
 * left as it is): what a perplexity that scores the second half of each
 * window reads, at half the lm_head's cost.  The same bits as those rows
 * of qp_llama_batch_logits. */
int qp_llama_batch_logits_from(qp_llama *m, size_t s, size_t row0, float *logits);
/* Activation bytes of an S × n batch (what qp_llama_forward_batch
 * allocates on top of the weights), for choosing S under a memory budget. */
double qp_llama_batch_bytes(const qp_llama *m, size_t S, size_t n);
/* The same for a model of these hyper-parameters on `threads` threads,
 * before it is built (qpipe plan --estimate). */
double qp_llama_batch_bytes_hp(const qp_llama_hparams *hp, int threads, size_t S, size_t n);

/* The inputs of the linear products, for calibration (Hessians, activation
 * statistics, importance matrices):
 *   QKV      x [n, D]     rmsnorm(x)·input_layernorm   -> q_proj, k_proj, v_proj
 *   O        x [n, H·hd]  attention output             -> o_proj
 *   GATE_UP  x [n, D]     rmsnorm(x)·post_attn_norm    -> gate_proj, up_proj
 *   DOWN     x [n, F]     silu(gate)·up                -> down_proj */
typedef enum { QP_SITE_QKV, QP_SITE_O, QP_SITE_GATE_UP, QP_SITE_DOWN } qp_llama_site;
typedef void (*qp_llama_observe_fn)(void *ud, int layer, qp_llama_site site, const float *x, size_t n,
                                    size_t dim);

/* As qp_llama_forward, calling obs (may be NULL) with every product input;
 * logits may be NULL (stop after the last layer). */
int qp_llama_forward_observed(qp_llama *m, const int32_t *tokens, size_t n, float *logits,
                              qp_llama_observe_fn obs, void *ud);

/* Layer by layer, for sequential calibration (GPTQ/AWQ: the inputs of block
 * i come from the already-quantized blocks before it):
 *   embed:  x [n, D] = embedding rows of tokens
 *   layer:  x [n, D] (the residual stream at positions 0..n-1) through
 *           decoder layer l, in place; obs as above
 *   head:   logits [n, V] from x
 *   reload: re-read layer l's weights and norms from the source (after the
 *           caller changed what the source serves, e.g. quantized weights or
 *           AWQ-scaled norms). */
int qp_llama_embed(qp_llama *m, const int32_t *tokens, size_t n, float *x);
int qp_llama_layer(qp_llama *m, int l, float *x, size_t n, qp_llama_observe_fn obs, void *ud);
/* Layer l on x [n, D] (not modified) only as far as site `last`'s
 * observation: obs sees exactly what qp_llama_layer shows it for the sites
 * up to `last`, and the rest of the layer is not computed (collecting the
 * input of q/k/v costs one RMSNorm, not the layer). */
int qp_llama_layer_observe(qp_llama *m, int l, const float *x, size_t n, qp_llama_site last,
                           qp_llama_observe_fn obs, void *ud);
int qp_llama_head(qp_llama *m, const float *x, size_t n, float *logits);
int qp_llama_reload_layer(qp_llama *m, int l);
/* Re-reads what is not in a layer: the embedding, the final norm and an
 * untied lm_head (mixed precision measures their quantization too). */
int qp_llama_reload_globals(qp_llama *m);
/* Re-reads one tensor by its Hugging Face name (a layer's weight alone, or
 * what reload_layer / reload_globals would re-read for the others). */
int qp_llama_reload_weight(qp_llama *m, const char *name);

/* Scores one window: runs the forward pass over tokens[n] and adds
 * −log p(tokens[t] | tokens[0..t−1]) for t = first..n−1 to *nll_sum and
 * (n − first) to *count (so loops over windows accumulate).  1 <= first;
 * first >= n scores nothing but still validates the tokens.
 * "windows" protocol: first = 1; llama.cpp's: first = ctx/2 + 1. */
int qp_llama_nll(qp_llama *m, const int32_t *tokens, size_t n, size_t first,
                 double *nll_sum, size_t *count);

/* −log softmax(row[V])[target] in double. */
double qp_logits_nll(const float *row, size_t vocab, int32_t target);

/* Parameter count of the matrices used per token (layers + lm_head; the
 * embedding lookup is not a product) and the forward FLOPs of an n-token
 * window: 2·that·n plus causal attention 4·H·hd·Σ(t+1) per layer. */
uint64_t qp_llama_matmul_params(const qp_llama_hparams *hp);
double qp_llama_window_flops(const qp_llama_hparams *hp, size_t n);

/* The RoPE inverse frequencies the forward pass uses, inv_freq[head_dim/2]
 * (qp_kern_rope_inv_freq of hp's head_dim, rope_theta and rope_scaling). */
void qp_llama_rope_inv_freq(const qp_llama_hparams *hp, float *inv_freq);

/* HF rotate-half <-> GGUF interleaved row permutation of a q/k weight
 * [n_head·head_dim, cols] (cols = 1 for a bias); to_interleaved = 1 gives
 * GGUF's layout.  dst and src must not overlap. */
void qp_llama_rope_permute(float *dst, const float *src, int n_head, int head_dim,
                           size_t cols, int to_interleaved);

#endif
