/* GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for
 * Generative Pre-trained Transformers"), following GPTQModel's
 * `GPTQ.quantize` (gptqmodel/quantization/gptq.py) step by step, into the
 * linear representation of quant/linear.h (same grid as RTN, bit for bit).
 *
 *   W     f32 [rows = out_features, cols = in_features], row-major
 *   H     f64 [cols, cols]  the caller's Hessian H = 2/n Σ_t x_t x_tᵀ over the
 *         n calibration rows x_t [cols]; only the lower triangle (diagonal
 *         included) is read, H itself is never written.
 *
 * The algorithm, in GPTQModel's order:
 *  1. group_size −1: every row's (scale, zero) is fitted on the ORIGINAL row
 *     (before step 2, as GPTQModel's first `find_params(W)`).
 *  2. dead columns: H[i][i] == 0 → H[i][i] = 1 and W[:, i] = 0.
 *  3. static_groups (group_size > 0 only; ignored for −1): every group
 *     c / group_size is fitted now, on the W of step 2, in ORIGINAL column
 *     order; the GPTQ updates below never refit them.
 *  4. act_order (GPTQ desc_act): perm = columns by diag(H) descending; ties
 *     (equal diagonals, e.g. dead columns) by ascending column index, so the
 *     order is a total, deterministic one (torch.argsort is not stable).
 *     W's columns and H's rows/columns are permuted.
 *  5. damping: mean = mean(diag H) (after step 2); damp = damp_percent;
 *     while 0 < damp < 1: try the Cholesky of H + damp·mean·I; on failure
 *     (a pivot <= 0 or not finite: not positive definite) damp +=
 *     damp_auto_increment (GPTQModel's auto-damp) or, when that is 0, fail.
 *     damp >= 1 fails too.  Then Hinv = the UPPER Cholesky factor of
 *     (H + damp·mean·I)⁻¹, all in double, rounded to f32 once.
 *  6. lazy batches of block_size columns [i1, i2): column by column,
 *       non-static groups: at a column c with c % group_size == 0, fit the
 *         group on W[:, c : c + group_size] of the LAZILY updated W (updated
 *         by the previous blocks, not by this block's own column updates:
 *         GPTQModel fits on `W`, not on the block copy `W1`);
 *       q = dequant(code(w)), err = (w − q) / Hinv[c][c],
 *       loss += (w − q)² / Hinv[c][c]²,  W1[:, c+1 : i2] −= err ⊗ Hinv[c, c+1 : i2];
 *     then W[:, i2:] −= Err[:, i1:i2] · Hinv[i1:i2, i2:] (one qp_sgemm).
 *  7. codes go back to the original column order; with act_order and no
 *     static groups the groups are formed in permuted order:
 *     g_idx[perm[i]] = i / group_size (set with qp_linear_set_g_idx);
 *     otherwise g_idx is the default c / group_size.
 * All of step 6 is in f32 like GPTQModel's (f32 weights, f32 Hinv).
 *
 * Determinism: every output row depends on that row of W and on Hinv only.
 * Rows are processed in fixed chunks of QP_GPTQ_ROW_CHUNK rows, each with
 * single-threaded qp_sgemm calls, whatever n_threads is, so the bytes
 * (codes, scales, zeros, g_idx, loss) are the same for any thread count,
 * and every product has the bits of common/gemm.h's contract on any CPU.
 * The Hessian inverse (quant/gptq_hinv.c) is split across threads by
 * blocks of its products, each computed whole by one thread, so it too has
 * the same bits for any thread count. */
#ifndef QP_QUANT_GPTQ_H
#define QP_QUANT_GPTQ_H

#include <stdint.h>

#include "quant/linear.h"

/* Rows per chunk of the parallel, deterministic part (step 6). */
#define QP_GPTQ_ROW_CHUNK 64

typedef struct {
    int bits;                   /* 2 … 8 */
    int group_size;             /* -1 (or 0): one group per row; 32, 64, 128, 256 */
    int sym;                    /* GPTQ sym (zero = 2^(bits-1)) */
    int mse;                    /* GPTQ mse clipping search (quant/linear.h) */
    double damp_percent;        /* (0, 1); GPTQModel default 0.01 */
    double damp_auto_increment; /* [0, 1); GPTQModel default 0.0025; 0 = no retry */
    int act_order;              /* desc_act */
    int static_groups;          /* fit groups once on the un-updated W */
    int block_size;             /* lazy-batch width, >= 1; default 128 */
    int64_t nsamples;           /* rows H was accumulated over; only for avg_loss */
} qp_gptq_params;

/* bits 4, group_size 128, sym, no mse, damp 0.01 (+0.0025 per retry),
 * no act_order, no static groups, block_size 128, nsamples 0. */
void qp_gptq_params_default(qp_gptq_params *p);

typedef struct {
    double damp_percent;   /* the damp that was used (after retries) */
    int damp_retries;      /* failed Cholesky attempts before it */
    int64_t dead_columns;  /* columns with H[i][i] == 0 */
    double loss;           /* Σ (w − q)² / Hinv[c][c]² / 2, GPTQ's error sum */
    double avg_loss;       /* loss / nsamples (GPTQModel's avg_loss); NAN if nsamples == 0 */
    double loss_per_weight;/* loss / (rows · cols) */
    /* wall-clock seconds, informational (the only fields that vary between
     * runs): steps 1–4 and setup, step 5, step 6 (+ step 7); weights that
     * share a prepared Hessian each report its one step 5 */
    double seconds_prepare, seconds_hinv, seconds_update;
} qp_gptq_stats;

/* Quantizes W with H into a new object (*out, free with qp_linear_free).
 * stats may be NULL.  n_threads <= 0: one per online CPU.
 * Errors (QP_EUSAGE, one line; *out stays NULL):
 *   bad parameters ("gptq: damp_percent 1.5 is outside (0, 1)", …), those of
 *   qp_linear_new (shape / group size), a non-finite weight
 *   ("gptq: weight [R x C]: row r, column c: weight is nan; fix the
 *   checkpoint"), a non-finite H entry ("gptq: H [C x C]: row i, column j is
 *   nan; the calibration produced a non-finite Hessian"), an H that stays
 *   non-positive-definite ("gptq: H [C x C] is not positive definite even
 *   with damp_percent D after N tries; check the calibration data or raise
 *   damp_percent"), updates that blow the weights up, or an fp16 overflow of
 *   a scale (row, group named). */
int qp_gptq_quantize(qp_linear **out, const float *W, const double *H, int64_t rows, int64_t cols,
                     const qp_gptq_params *p, qp_gptq_stats *stats, int n_threads);

/* Steps 2, 4 and 5 depend on H and on damp_percent, damp_auto_increment
 * and act_order only, so weights that read the same input (q, k and v;
 * gate and up) share them: qp_gptq_prepare does them once, and
 * qp_gptq_quantize_prepared runs steps 1, 3, 6 and 7 for one weight.  The
 * result has the bytes qp_gptq_quantize gives (which is these two calls).
 * The prepared object holds H⁻¹'s factor (cols² f32) and is read-only
 * while in use.  Errors: those of qp_gptq_quantize about the parameters
 * and H (prepare), about the weight (quantize_prepared), and QP_EUSAGE when
 * a weight's column count or its damp / act_order parameters differ from
 * the prepared ones. */
typedef struct qp_gptq_prepared qp_gptq_prepared;
int qp_gptq_prepare(qp_gptq_prepared **out, const double *H, int64_t cols, const qp_gptq_params *p, int n_threads);
void qp_gptq_prepared_free(qp_gptq_prepared *h);
int qp_gptq_quantize_prepared(qp_linear **out, const float *W, const qp_gptq_prepared *h, int64_t rows,
                              int64_t cols, const qp_gptq_params *p, qp_gptq_stats *stats, int n_threads);

/* Step 4's order: perm[i] = the column at position i, diag [n] descending,
 * ties by ascending index (pass the diagonal after step 2, dead columns 1;
 * no NaN).  Returns 0 (allocation follows common/alloc.h). */
int qp_gptq_act_order_perm(int32_t *perm, const double *diag, int64_t n);

/* 0, or QP_EUSAGE naming the first non-finite entry of H's lower triangle
 * ([n, n] row-major). */
int qp_gptq_check_hessian(const double *H, int64_t n);

/* Step 5 alone: U f32 [n, n] row-major gets the upper Cholesky factor of
 * (A + damp·mean(diag A)·I)⁻¹ (strict lower triangle set to 0).  A f64
 * [n, n], lower triangle read, not modified.  *damp_used and *retries as in
 * qp_gptq_stats.  U64 (may be NULL) receives the same factor in double.
 * n_threads <= 0: one per online CPU; the bits do not depend on it.
 * Errors as qp_gptq_quantize ("gptq: H [n x n] is not positive definite …"). */
int qp_gptq_hinv(float *U, double *U64, const double *A, int64_t n, double damp_percent,
                 double damp_auto_increment, double *damp_used, int *retries, int n_threads);
/* The same for A = H[perm][:, perm] (lower triangle of H read; the diagonal
 * from diag[original column] instead of H's), without forming A: memory is
 * U plus one n² double work matrix. */
int qp_gptq_hinv_perm(float *U, const double *H, const int32_t *perm, const double *diag, int64_t n,
                      double damp_percent, double damp_auto_increment, double *damp_used, int *retries,
                      int n_threads);

#endif
