/* AWQ (Lin et al. 2023, "AWQ: Activation-aware Weight Quantization for LLM
 * Compression and Acceleration"), the two searches of AutoAWQ's
 * `AwqQuantizer` (awq/quantize/quantizer.py: _search_best_scale /
 * _compute_best_scale, _search_best_clip / _compute_best_clip, and
 * apply_clip of awq/quantize/scale.py), model-agnostic: the pipeline stage
 * owns the model and evaluates candidate weights through a callback.
 *
 *   W_j   f32 [rows_j, cols]  the linear weights that share one input X
 *                             (a "scale group": q,k,v; gate,up; o; down)
 *   x̄     f32 [cols]          mean |x| per input channel over the
 *                             calibration tokens (AutoAWQ's x_mean)
 *   s     f32 [cols]          per-input-channel scale; the model computes
 *                             (X·diag(s)⁻¹)·(W·diag(s))ᵀ = X·Wᵀ, so the
 *                             caller folds s⁻¹ into the previous op (RMSNorm
 *                             weight, or the rows of v_proj / up_proj) and
 *                             quantizes W·diag(s).
 *
 * Quantizer used inside both searches ("pseudo-quantize"): the grid of
 * quant/linear.h (qp_linear_fit_group + qp_linear_code/value, mse off,
 * sym = !zero_point), i.e. the grid the final quantization uses, NOT
 * AutoAWQ's own pseudo_quantize_tensor (which has no forced 0 inside the
 * range, an unrounded f32 scale and, for sym, a [-2^(b-1), 2^(b-1)-1] grid).
 * So the searches optimise exactly what is exported.
 *
 * Scale search (qp_awq_search_scale), for each form and i = 0 … n_grid−1,
 * α = i / n_grid (f32):
 *   w̄[c]  = mean over the rows of ALL W_j of |W[r][c]| / (max_{group} |W[r]| + 1e-6)
 *           (AutoAWQ's w_mean; the max is over the quantization group of
 *           (r, c); group_size −1: the whole row).  Accumulated in double,
 *           rows in order, rounded to f32 once.
 *   x form:   s[c] = max(x̄[c]^α, 1e-4)
 *   duo form: s[c] = max(x̄[c]^α / (w̄[c]^(1−α) + 1e-4), 1e-4)
 *   s /= sqrt(max(s)·min(s))  (the product and sqrt in double, the divide in
 *                              f32); a non-finite s[c] becomes 1.
 *   candidate_j = Q(W_j·diag(s))·diag(s)⁻¹    (f32, per element:
 *                 (w·s) → code on the group's fitted grid → value / s)
 *   loss = callback(candidates)
 * The winner is the smallest loss, the FIRST on equality, in evaluation
 * order: x form α = 0 … then duo form α = 0 … (duo_scaling −1), or the one
 * form asked for.  The x form's α = 0 candidate has s = 1 exactly, so its
 * candidate IS plain RTN of W (bit for bit qp_rtn_quantize + dequantize)
 * and the x form / auto search never loses to RTN on the caller's loss.
 * The duo form alone (AutoAWQ's default duo_scaling=True) has no identity
 * candidate and can: use −1 (auto, the default here) to keep both.
 *
 * Clip search (qp_awq_search_clip), AutoAWQ's _compute_best_clip on one
 * (already scaled) weight and its (already divided by s) input sample:
 *   tokens: step = max(1, n_tokens / n_sample_token); tokens 0, step, 2·step …
 *           (AutoAWQ's `input_feat[:, ::step]`, so 512 … 1023 of them).
 *   for each row r and group g (w_g = the group's weights, x_g,t = token t's
 *   inputs of the group):
 *     m0 = max |w_g|
 *     for i = 0 … int(max_shrink · n_grid) − 1 (f32 m = m0·(float)(1 − i/n_grid)):
 *       q_g = Q(clamp(w_g, −m, m))
 *       err = (1/T) Σ_t (Σ_k (q_g[k] − w_g[k]) · x_g,t[k])²
 *     max_val[r][g] = the m with the smallest err, the FIRST on equality.
 *   i = 0 is "no clipping" (the clamp is the identity), so the chosen err
 *   is never above the unclipped one.  err uses the difference q − w
 *   rather than AutoAWQ's q·x − w·x (same quantity, no cancellation): the
 *   inner sum is in f32, k ascending; the sum over tokens in double, t
 *   ascending.
 *
 * Groups: group_size −1 or 0 = one group per row; otherwise any positive
 * size that divides cols (the final quantization, quant/linear.h, accepts
 * 32, 64, 128, 256).
 *
 * Determinism: every candidate row, w̄ and every clip row depend on their
 * own inputs only; the threads run fixed chunks of rows
 * (QP_AWQ_ROW_CHUNK), the callback is called on the calling thread in the
 * order above, so all outputs are the same bytes for any n_threads.
 * n_threads <= 0: one per online CPU.
 *
 * Errors: QP_EUSAGE (QP_ERROR for out of memory) with one line; the caller
 * prefixes the layer with qp_error_prefix.  A callback's nonzero return is
 * passed through, its message prefixed with the candidate
 * ("awq: scale candidate alpha 0.35 (duo): ..."). */
#ifndef QP_QUANT_AWQ_H
#define QP_QUANT_AWQ_H

#include <stddef.h>
#include <stdint.h>

#define QP_AWQ_MAX_GRID 100
/* Rows per chunk of the threaded loops (fixed: results do not depend on threads). */
#define QP_AWQ_ROW_CHUNK 16

typedef struct {
    int bits;               /* 2 … 8 */
    int group_size;         /* −1 or 0: one group per row; else divides cols */
    int zero_point;         /* 1: asym (AutoAWQ default); 0: linear.h sym grid */
    int n_grid;             /* scale grid, 1 … QP_AWQ_MAX_GRID; AutoAWQ 20 */
    int duo_scaling;        /* −1 auto (both forms, keep the better), 0 x form, 1 duo form */
    int clip_n_grid;        /* clip grid, >= 1; AutoAWQ 20 */
    double clip_max_shrink; /* [0, 1); AutoAWQ 0.5 → shrinks 0 … 0.45 */
    int64_t clip_n_sample_token; /* >= 1; AutoAWQ 512 */
} qp_awq_params;

/* bits 4, group_size 128, zero_point 1, n_grid 20, duo_scaling −1,
 * clip_n_grid 20, clip_max_shrink 0.5, clip_n_sample_token 512. */
void qp_awq_params_default(qp_awq_params *p);

/* One scale group. */
typedef struct {
    size_t n_weights;            /* >= 1 */
    const float *const *ws;      /* ws[j]: f32 [rows[j], cols] */
    const int64_t *rows;         /* [n_weights], each >= 1 */
    int64_t cols;                /* input dimension shared by all */
    const float *x_absmean;      /* [cols], finite, >= 0 */
    const char *const *names;    /* [n_weights] for messages; NULL: "weight J" */
} qp_awq_group;

/* The caller installs candidates[j] (f32 [rows[j], cols], in ws order,
 * valid during the call only) into its model, runs the inspected module on
 * the calibration inputs and stores the loss (AutoAWQ: mean over all
 * output elements of (out_fp − out_q)²).  Returns 0, or a negative qp_err
 * after qp_error_set (the search stops and returns it). */
typedef int (*qp_awq_loss_fn)(void *ud, const float *const *candidates, double *loss);

typedef struct {
    double loss;                      /* the winner's loss */
    double alpha;                     /* its α = i / n_grid */
    int grid_index;                   /* its i */
    int duo;                          /* 1: the duo form won */
    double rtn_loss;                  /* x form α = 0 (= plain RTN); NAN if the x form was not run */
    int n_evals;                      /* callback calls */
    double loss_x[QP_AWQ_MAX_GRID];   /* per i; NAN where not run */
    double loss_duo[QP_AWQ_MAX_GRID];
} qp_awq_scale_stats;

/* best_s f32 [cols]: the winner's s.  stats may be NULL.
 * Errors: bad parameters ("awq: bits 9 is not supported (use 2 to 8)", …),
 * shapes ("awq: gate_proj [768 x 250]: 250 input columns are not a multiple
 * of group_size 128 (choose a group size that divides 250, or -1 for one
 * group per row)"), a non-finite weight ("awq: up_proj [768 x 256]: row 3,
 * column 7 is nan; fix the checkpoint"), a bad statistic ("awq: x_absmean[5]
 * is nan; the calibration produced a non-finite activation statistic"), an
 * fp16 overflow of a group scale, a callback failure or a non-finite loss
 * ("awq: scale candidate alpha 0.35 (duo): the loss callback returned nan"). */
int qp_awq_search_scale(float *best_s, qp_awq_scale_stats *stats, const qp_awq_group *g,
                        const qp_awq_params *p, qp_awq_loss_fn loss, void *ud, int n_threads);

/* The pieces of the scale search, public for the stage and the tests. */

/* w_mean f32 [cols]: w̄ above over all weights of the group. */
int qp_awq_w_absmean(float *w_mean, const qp_awq_group *g, const qp_awq_params *p);

/* s f32 [cols] for one α of one form (w_mean unused for the x form, may be NULL). */
void qp_awq_candidate_scales(float *s, const float *x_absmean, const float *w_mean, int64_t cols,
                             float alpha, int duo);

/* out f32 [rows, cols] = Q(W·diag(s))·diag(s)⁻¹ (s NULL: all ones = RTN,
 * bit for bit qp_rtn_quantize + qp_linear_dequantize).  out may be w (in
 * place).  s: finite and > 0 ("awq: scale s[c] is 0; ...").  Errors: shape/parameters, non-finite weight
 * ("awq: weight [R x C]: row r, column c is nan; fix the checkpoint"),
 * fp16 overflow ("awq: weight [R x C]: row r, group g: ..."). */
int qp_awq_fake_quantize(float *out, const float *w, int64_t rows, int64_t cols, const float *s,
                         const qp_awq_params *p, int n_threads);

/* Clip search on w f32 [rows, cols] (already W·diag(s)) with inputs
 * x f32 [n_tokens, cols] (already X·diag(s)⁻¹).  AutoAWQ runs it on every
 * linear except q/k ("due to qk bmm, it is hard to clip precisely"): that
 * choice is the caller's.  Cost: rows · cols · T · int(max_shrink·n_grid)
 * multiply-adds (AVX, threaded).
 * max_val f32 [rows, n_groups]; err and err_noclip (may be NULL) f64
 * [rows, n_groups]: the chosen candidate's err and the i = 0 one's.
 * Errors: parameters/shape as above, n_tokens < 1, a non-finite weight,
 * a non-finite sampled input ("awq clip: x [T x C]: token t, column c is
 * inf; ..."), fp16 overflow. */
int qp_awq_search_clip(float *max_val, double *err, double *err_noclip, const float *w, int64_t rows,
                       int64_t cols, const float *x, int64_t n_tokens, const qp_awq_params *p,
                       int n_threads);

/* w f32 [rows, cols] in place: clamp(w, −max_val[r][g], max_val[r][g])
 * (AutoAWQ apply_clip).  group_size as in qp_awq_params.  Errors: shape,
 * a negative or NaN max_val ("awq apply clip: max_val[r][g] is -1; ..."). */
int qp_awq_apply_clip(float *w, int64_t rows, int64_t cols, const float *max_val, int group_size);

#endif
