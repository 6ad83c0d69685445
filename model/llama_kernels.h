/* Row kernels of the LLaMA forward pass (all f32, one token row at a time).
 * Each works on whole rows and depends on nothing but its inputs, so the
 * caller may spread rows over threads freely: results are the same bits. */
#ifndef QP_MODEL_LLAMA_KERNELS_H
#define QP_MODEL_LLAMA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "model/config.h"

/* y[d] = x[d] / sqrt(mean(x²) + eps) · w[d]   (HF LlamaRMSNorm; y may be x) */
void qp_kern_rmsnorm(float *y, const float *x, const float *w, size_t d, float eps);

/* RoPE inverse frequencies inv[head_dim/2], in transformers' float32
 * arithmetic, operation for operation (modeling_rope_utils.py):
 *   default:  e_i = f32(2i) / f32(d);  inv_i = 1 / θ^e_i  (θ as f32)
 *   llama3 (_compute_llama3_parameters; F = factor, lo/hi = low/high_freq_factor,
 *   O = original_max_position_embeddings, all cast to f32 where PyTorch does):
 *     wavelen = recip(inv)·f32(2π)            (Python's `2π / tensor` is
 *                                               reciprocal-then-multiply)
 *     lw = f32(O / lo), hw = f32(O / hi)      (Python doubles, then f32)
 *     inv' = wavelen > lw ? inv / F : inv
 *     smooth = (recip(wavelen)·f32(O) − lo) / f32(hi − lo)
 *     medium (neither wavelen < hw nor wavelen > lw): inv' = (1 − smooth)·inv' / F + smooth·inv'
 * Every step is one f32 operation rounded to nearest (the build has
 * -ffp-contract=off); θ^e is the correctly rounded f32 power (pow in
 * double, rounded once).  PyTorch 1.13 (CPU, AVX2) gives the same bits for
 * the Llama 3.1 case (θ 500000, d 128, F 8, lo 1, hi 4, O 8192) and the
 * house models, but its vectorised pow (SLEEF, 1 ulp) is not always
 * correctly rounded: e.g. θ 1e6, d 128, i 37 it is 1 ulp low in a
 * vectorised lane and exact in its scalar tail, so no fixed formula matches
 * PyTorch everywhere; the correctly rounded power is the one definition. */
void qp_kern_rope_inv_freq(float *inv, int head_dim, float theta, const qp_rope_scaling *s);

/* RoPE tables for positions 0..n_pos-1: cos_t, sin_t [n_pos, head_dim/2],
 * angle(p, i) = f32(p)·inv[i] in f32 (as HF's inv_freq ⊗ positions), then
 * cos/sin in double rounded to f32. */
void qp_kern_rope_tables(float *cos_t, float *sin_t, size_t n_pos, int head_dim, const float *inv);

/* Rotate-half RoPE (HF layout) in place on one token row x [n_heads, head_dim]
 * at position pos: for i < h = head_dim/2,
 *   x'[i]   = x[i]·cos − x[i+h]·sin,   x'[i+h] = x[i+h]·cos + x[i]·sin. */
void qp_kern_rope_half(float *x, int n_heads, int head_dim, size_t pos,
                       const float *cos_t, const float *sin_t);

/* e^x in f32 (max rel. error 8e-8; clamped to e^-87..e^88; NaN kept):
 * the vectorisable exp of softmax and SwiGLU. */
float qp_kern_exp(float x);

/* g[n] = silu(g) · u = g / (1 + e^(−g)) · u   (SwiGLU) */
void qp_kern_swiglu(float *g, const float *u, size_t n);

/* Causal softmax of one attention row s[len]: entries 0..valid-1 become
 * probabilities, valid..len-1 become exact zeros. */
void qp_kern_softmax_causal(float *s, size_t valid, size_t len);

/* log Σ exp(row[j]) [n], shifted by the maximum, summed in double. */
double qp_kern_logsumexp(const float *row, size_t n);
/* −log softmax(row)[target], log-sum-exp in double. */
double qp_kern_row_nll(const float *row, size_t vocab, int32_t target);

/* Row permutation between HF rotate-half q/k rows and GGUF's interleaved
 * pairs (formats.md): rows of a [n_head·head_dim, cols] weight viewed as
 * [n_head, 2, head_dim/2, cols], axes 1 and 2 swapped.  to_interleaved = 1
 * maps HF -> GGUF, 0 maps GGUF -> HF.  cols = 1 permutes a bias.
 * dst and src must not overlap. */
void qp_kern_rope_permute(float *dst, const float *src, int n_head, int head_dim,
                          size_t cols, int to_interleaved);

#endif
