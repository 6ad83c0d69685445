/* Evaluation over a model: perplexity by protocol, KL divergence and top-1
 * agreement against a reference model run in lockstep, and multiple-choice
 * accuracy.  Knows tokens and logits, nothing about recipes or the cache. */
#ifndef QP_MODEL_EVAL_H
#define QP_MODEL_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "model/llama.h"
#include "model/tokenizer.h"

/* Which tokens are scored.  The stream is the whole file tokenized, with
 * BOS first when the model has one (the tokenizer adds it), without when it
 * has none (Qwen2); a window never gets a BOS of its own.
 *   WINDOWS:  the stream cut into consecutive non-overlapping windows of ctx
 *             tokens (the last one shorter; a last window of 1 token is
 *             dropped); in each, tokens 1..len-1 are predicted from the
 *             tokens before them in that window (position 0 is unscored).
 *   LLAMACPP: llama-perplexity: floor(n/ctx) chunks of ctx tokens; with a
 *             BOS, each chunk's first token is replaced by BOS, without one
 *             the chunk is left as it is; the logits at positions
 *             ctx/2 .. ctx-2 are scored against tokens ctx/2+1 .. ctx-1. */
typedef enum {
    QP_PPL_WINDOWS,
    QP_PPL_LLAMACPP,
} qp_ppl_protocol;

/* Reports progress: tokens for perplexity, items for multiple choice; may be NULL. */
typedef void (*qp_eval_progress_fn)(void *ud, uint64_t done, uint64_t total);

typedef struct qp_eval_acc qp_eval_acc;

/* An accumulator over one or more token streams (one per dataset file). */
int qp_eval_acc_new(qp_eval_acc **out, int with_reference);
void qp_eval_acc_free(qp_eval_acc *a);

/* Windows per forward pass (qp_llama_forward_batch): 0 (the default)
 * chooses the most that fit QP_EVAL_BATCH_BYTES; results are the same bits
 * for any value (tests set 1 and 4). */
void qp_eval_acc_set_batch(qp_eval_acc *a, size_t windows);

/* The automatic batch: the largest S <= QP_EVAL_MAX_BATCH whose
 * activations (qp_llama_batch_bytes of m, and of ref when given) plus one
 * window's logits (and the reference's) fit `budget` bytes; at least 1.
 * 512 MiB at ctx 256 gives 16 windows on house-llama and on TinyLlama-1.1B
 * shapes (27 MiB of activations per window, 31 MiB of logits), 7 with a
 * reference; 7 on Llama-2-7B shapes (60 MiB per window), 3 with a
 * reference.  The weights are converted once per pass, so the windows of a
 * pass share that cost (ggml k-quant blocks convert at a few ns a weight). */
#define QP_EVAL_BATCH_BYTES ((size_t)512 << 20)
#define QP_EVAL_MAX_BATCH 16
size_t qp_eval_batch_windows(const qp_llama *m, const qp_llama *ref, size_t ctx, size_t budget);
/* The same from hyper-parameters (ref NULL: none) on `threads` threads,
 * before any model is built (qpipe plan --estimate). */
size_t qp_eval_batch_windows_hp(const qp_llama_hparams *hp, const qp_llama_hparams *ref, int threads, size_t ctx,
                                size_t budget);

/* Scores one stream.  bos: the model's BOS id, tokens[0] already being it;
 * -1 for a model without BOS (nothing is inserted or replaced).
 * ref may be NULL; when given, both models see the same windows and the
 * KLD / top-1 / Δp statistics are accumulated.  max_chunks (0 = all) counts
 * windows across calls. */
int qp_eval_stream(qp_eval_acc *a, qp_llama *m, qp_llama *ref, const int32_t *tokens, size_t n, int bos,
                   qp_ppl_protocol proto, size_t ctx, size_t max_chunks, qp_eval_progress_fn progress, void *ud);

typedef struct {
    double ppl, nll_mean;
    uint64_t scored, windows;
    /* only with a reference */
    double ppl_ref, ppl_delta, ppl_ratio;
    double kld_mean, kld_p99, kld_median, top1, rms_dp;
} qp_eval_result;

/* Final statistics (deterministic: sums in double in a fixed order). */
int qp_eval_finish(const qp_eval_acc *a, qp_eval_result *out);

/* Multiple choice (HellaSwag-style): each ending is scored by the sum of its
 * tokens' log-probabilities given ctx (ctx + ending tokenized together, BOS
 * first when the tokenizer adds one; the ending's tokens are those after
 * ctx's own tokens).  When the tokenizer adds no BOS and ctx has no tokens,
 * one token is put first to condition on: the vocabulary's BOS, else its EOS
 * (lm-evaluation-harness's prefix_token_id); with neither it is an error.  acc_norm divides by the
 * ending's length in bytes, as lm-evaluation-harness does. */
typedef struct {
    const char *ctx;
    const char *const *endings;
    size_t n_endings;
    int label;
} qp_mc_item;

typedef struct {
    double acc, acc_norm;
    uint64_t items;
} qp_mc_result;

int qp_eval_mc(qp_mc_result *out, qp_llama *m, const qp_tokenizer *tok, const qp_mc_item *items, size_t n,
               qp_eval_progress_fn progress, void *ud);

/* Reference distributions for repeated KL measurements against one
 * unquantized model on fixed tokens (mixed-precision sensitivity):
 *   p [rows, V] = softmax(reference logits), negent [rows] = Σ_v p log p.
 * KL(p‖q) of a row with logits z is negent − Σ_v p_v z_v + logsumexp(z),
 * one pass over z, no second softmax.  Sums run in double, in row order. */
typedef struct qp_kl_ref qp_kl_ref;

int qp_kl_ref_new(qp_kl_ref **out, size_t rows, size_t vocab);
void qp_kl_ref_free(qp_kl_ref *r);
/* Stores rows [row0, row0+n) from reference logits [n, V]. */
int qp_kl_ref_set(qp_kl_ref *r, size_t row0, const float *logits, size_t n);
/* Σ over rows [row0, row0+n) of KL(p‖softmax(logits)), logits [n, V]. */
double qp_kl_ref_sum(const qp_kl_ref *r, size_t row0, const float *logits, size_t n);

#endif
