/* GPTQ step 5 (quant/gptq.h): the damped Hessian's inverse as an upper
 * Cholesky factor, in double.
 *
 * torch computes it as L = cholesky(H); Hinv = cholesky(cholesky_inverse(L),
 * upper=True).  The same factor comes cheaper from ONE Cholesky of the
 * index-reversed matrix: with J the reversal permutation and
 * J·H·J = L̃·L̃ᵀ (lower L̃),
 *   H⁻¹ = J·L̃⁻ᵀ·L̃⁻¹·J = Uᵀ·U  with  U = J·L̃⁻¹·J,
 * and U is upper triangular with a positive diagonal, so by uniqueness it IS
 * the upper Cholesky factor of H⁻¹ (n³/3 for the factorisation plus n³/3 for
 * the triangular inverse, instead of ~4n³/3).  tests/quant/test_gptq.c checks
 * it against the explicit three-step route.
 *
 * Both steps are blocked (NB columns): the bulk of the work is qp_dgemm
 * (common/gemm.h), whose bits are the same on every CPU, and the small
 * diagonal blocks are plain loops in a fixed order, so the factor is the
 * same on every run and every machine.  An off-diagonal block is solved by
 * multiplying with the explicit inverse of the diagonal block (LAPACK's
 * trtri/trmm route) instead of by substitution: the same operation count,
 * all of it in products. */
#include "quant/gptq.h"

#include "common/alloc.h"
#include "common/error.h"
#include "common/gemm.h"
#include "quant/linear_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NB 64

/* Unblocked lower Cholesky of the kb × kb diagonal block at a (row stride
 * lda), whose trailing updates from earlier blocks are already applied.
 * Returns -1 when a pivot is not > 0 (or not finite): not positive definite. */
static int potf2_lower(double *a, int64_t lda, int64_t kb)
{
    for (int64_t j = 0; j < kb; j++) {
        double *rj = a + j * lda;
        double d = rj[j];
        for (int64_t p = 0; p < j; p++)
            d -= rj[p] * rj[p];
        if (!(d > 0.0) || !isfinite(d))
            return -1;
        d = sqrt(d);
        rj[j] = d;
        for (int64_t i = j + 1; i < kb; i++) {
            double *ri = a + i * lda;
            double s = ri[j];
            for (int64_t p = 0; p < j; p++)
                s -= ri[p] * rj[p];
            ri[j] = s / d;
        }
    }
    return 0;
}

/* t [kb, kb] (row stride NB, zero above the diagonal) = L⁻¹ of the lower
 * kb × kb block at l (row stride ldl), column by column by substitution. */
static void tri_inv_lower(double *t, const double *l, int64_t ldl, int64_t kb)
{
    for (int64_t i = 0; i < kb; i++)
        memset(t + i * NB, 0, (size_t)kb * sizeof *t);
    for (int64_t j = 0; j < kb; j++) {
        t[j * NB + j] = 1.0 / l[j * ldl + j];
        for (int64_t i = j + 1; i < kb; i++) {
            double s = 0.0;
            for (int64_t p = j; p < i; p++)
                s += l[i * ldl + p] * t[p * NB + j];
            t[i * NB + j] = -s / l[i * ldl + i];
        }
    }
}

/* Work split across threads (quant/linear_impl.h's fixed-chunk
 * parallel-for).  Every element of a product is computed whole by one
 * qp_dgemm call on one thread, and the calls are those of a one-thread run
 * (or cover more of the never-read strict upper triangle), so the factor
 * has the same bits for any thread count. */
#define UPD_ROWS (4 * NB)   /* trailing-update rows per call: B is packed once per UPD_ROWS rows, not per NB */
#define SB (4 * NB)         /* Cholesky super-panel: the far trailing matrix is updated once per SB columns */

typedef struct {
    double *a;              /* [n, n] */
    int64_t n;
    int64_t k0, kb, m;      /* the current block column (potrf) */
    int64_t w;              /* potrf: columns of A22 inside the super-panel */
    int64_t s0, sb;         /* potrf: the super-panel's first column and width */
    int64_t i0, ib;         /* the current block row (trtri) */
    const double *t11;      /* [kb, kb] row stride NB: L11⁻¹ (potrf); Tinv of block row i0 (trtri) */
    double *tmp;            /* [n, NB] */
} hinv_par;

/* potrf, rows [b, e) of L21 = A21 · L11⁻ᵀ through tmp (rows of tmp are
 * rows of A21, row stride kb). */
static int l21_rows(void *ctx, int64_t b, int64_t e, int64_t c)
{
    hinv_par *p = ctx;
    (void)c;
    const int64_t n = p->n, kb = p->kb;
    double *a21 = p->a + (p->k0 + kb) * n + p->k0;
    qp_dgemm(QP_NOTRANS, QP_TRANS, (size_t)(e - b), (size_t)kb, (size_t)kb, 1.0, a21 + b * n, (size_t)n, p->t11, NB,
             0.0, p->tmp + b * kb, (size_t)kb);
    for (int64_t i = b; i < e; i++)
        memcpy(a21 + i * n, p->tmp + i * kb, (size_t)kb * sizeof *p->tmp);
    return 0;
}

/* potrf, rows [b, e) of A22 −= L21 · L21ᵀ in the super-panel's columns
 * (the first w of A22), up to row e (the lower triangle and a strip of
 * the never-read upper one). */
static int a22_rows(void *ctx, int64_t b, int64_t e, int64_t c)
{
    hinv_par *p = ctx;
    (void)c;
    const int64_t n = p->n, kb = p->kb, cols = e < p->w ? e : p->w;
    double *a21 = p->a + (p->k0 + kb) * n + p->k0; /* [m, kb] */
    double *a22 = a21 + kb;                        /* [m, m] */
    qp_dgemm(QP_NOTRANS, QP_TRANS, (size_t)(e - b), (size_t)cols, (size_t)kb, -1.0, a21 + b * n, (size_t)n, a21,
             (size_t)n, 1.0, a22 + b * n, (size_t)n);
    return 0;
}

/* potrf, rows [b, e) of the matrix past the super-panel (row and column
 * s0 + sb on): −= L[:, s0:s0+sb] · L[:, s0:s0+sb]ᵀ, up to row e.  One
 * product of depth sb instead of sb / NB of depth NB: each element's chain
 * is the same fma sequence (an f64 accumulator stored and reloaded between
 * products is exact), and the trailing matrix streams through memory once
 * per super-panel, not once per panel (it is 970 MB at 11008 columns, and
 * that stream was the Cholesky's bound). */
static int far_rows(void *ctx, int64_t b, int64_t e, int64_t c)
{
    hinv_par *p = ctx;
    (void)c;
    const int64_t n = p->n, f0 = p->s0 + p->sb;
    double *l = p->a + f0 * n + p->s0;   /* [n - f0, sb] */
    double *a = p->a + f0 * n + f0;      /* [n - f0, n - f0] */
    qp_dgemm(QP_NOTRANS, QP_TRANS, (size_t)(e - b), (size_t)e, (size_t)p->sb, -1.0, l + b * n, (size_t)n, l,
             (size_t)n, 1.0, a + b * n, (size_t)n);
    return 0;
}

/* In-place lower Cholesky of a [n, n] (row-major; the lower triangle is the
 * matrix, the strict upper triangle must be finite and is overwritten).
 * Right-looking, NB-blocked, with the updates of the columns past each
 * SB-wide super-panel deferred to one product per super-panel (far_rows:
 * the same bits).  tinv [ceil(n/NB)][NB, NB] receives the inverse of every
 * diagonal block of L; tmp holds at least n·NB doubles. */
static int potrf_lower(double *a, int64_t n, double *tinv, double *tmp, int n_threads)
{
    for (int64_t s0 = 0; s0 < n; s0 += SB) {
        const int64_t sb = n - s0 < SB ? n - s0 : SB;
        for (int64_t k0 = s0; k0 < s0 + sb; k0 += NB) {
            int64_t kb = n - k0 < NB ? n - k0 : NB;
            double *a11 = a + k0 * n + k0;      /* [kb, kb] */
            if (potf2_lower(a11, n, kb))
                return -1;
            double *t11 = tinv + (k0 / NB) * NB * NB;
            tri_inv_lower(t11, a11, n, kb);
            int64_t m = n - k0 - kb;
            if (m == 0)
                break;
            hinv_par p = {.a = a, .n = n, .k0 = k0, .kb = kb, .m = m, .w = s0 + sb - (k0 + kb), .t11 = t11,
                          .tmp = tmp};
            /* L21 [m, kb] = A21 · L11⁻ᵀ */
            qp_lin_parallel(m, UPD_ROWS, n_threads, l21_rows, &p);
            /* A22 −= L21 · L21ᵀ inside the super-panel, up to the diagonal */
            if (p.w > 0)
                qp_lin_parallel(m, UPD_ROWS, n_threads, a22_rows, &p);
        }
        if (s0 + sb < n) {
            hinv_par p = {.a = a, .n = n, .s0 = s0, .sb = sb};
            qp_lin_parallel(n - s0 - sb, UPD_ROWS, n_threads, far_rows, &p);
        }
    }
    return 0;
}

/* trtri works on groups of SB rows (g0 .. g0 + gh): first the part of
 * every product that reads rows above the group, for all of the group's
 * rows at once (group_products), then block row by block row the rest
 * (row_products) and the row itself (trtri_scale).  The products of a
 * group sit in tmp [gh, n] (row stride n, row r = block row g0 + r). */

/* tmp[:, j0] = L[g0:g0+gh, j0:g0] · X[j0:g0, j0] for the blocks j0 in
 * [b, e) (below g0): each X column block is read once per group instead
 * of once per block row (X above row g0 is up to 970 MB at 11008 columns). */
static int group_products(void *ctx, int64_t b, int64_t e, int64_t c)
{
    hinv_par *p = ctx;
    (void)c;
    const int64_t n = p->n, g0 = p->s0;
    for (int64_t j0 = b; j0 < e; j0 += NB)
        qp_dgemm(QP_NOTRANS, QP_NOTRANS, (size_t)p->sb, NB, (size_t)(g0 - j0), 1.0, p->a + g0 * n + j0, (size_t)n,
                 p->a + j0 * n + j0, (size_t)n, 0.0, p->tmp + j0, (size_t)n);
    return 0;
}

/* Block row i0 of the group, blocks j0 in [b, e) (below i0): the product
 * L[i0, j0:i0] · X[j0:i0, j0] into tmp's rows for i0.  For j0 below g0 it
 * continues group_products' chain over k = g0 .. i0 (beta 1: the f64
 * accumulator resumes exactly), so each element is the one chain of
 * k = j0 .. i0 it always was. */
static int row_products(void *ctx, int64_t b, int64_t e, int64_t c)
{
    hinv_par *p = ctx;
    (void)c;
    const int64_t n = p->n, i0 = p->i0, g0 = p->s0;
    double *t = p->tmp + (i0 - g0) * n;
    for (int64_t j0 = b; j0 < e; j0 += NB) {
        const int64_t from = j0 < g0 ? g0 : j0;
        if (i0 > from)
            qp_dgemm(QP_NOTRANS, QP_NOTRANS, (size_t)p->ib, NB, (size_t)(i0 - from), 1.0, p->a + i0 * n + from,
                     (size_t)n, p->a + from * n + j0, (size_t)n, j0 < g0 ? 1.0 : 0.0, t + j0, (size_t)n);
    }
    return 0;
}

/* trtri, columns [b, e) of block row i0: X[i0, b:e] = −Tinv[i0] · tmp[i0's rows, b:e]. */
static int trtri_scale(void *ctx, int64_t b, int64_t e, int64_t c)
{
    hinv_par *p = ctx;
    (void)c;
    const int64_t n = p->n;
    qp_dgemm(QP_NOTRANS, QP_NOTRANS, (size_t)p->ib, (size_t)(e - b), (size_t)p->ib, -1.0, p->t11, NB,
             p->tmp + (p->i0 - p->s0) * n + b, (size_t)n, 0.0, p->a + p->i0 * n + b, (size_t)n);
    return 0;
}

/* In place: the lower L [n, n] in a becomes X = L⁻¹ (lower; the strict
 * upper triangle outside the diagonal blocks is left as it is, inside them
 * it becomes 0), given tinv, the inverses of L's diagonal blocks.  Block
 * column j0 of L⁻¹ is zero above row j0; below it, block row i0 is
 *   X[i0, j0] = −Tinv[i0] · (L[i0, j0:i0] · X[j0:i0, j0]).
 * Block rows go in order: when row i0 starts, every row above already
 * holds X and row i0 still holds L, which is all its products read.  They
 * all go to tmp first and only then overwrite row i0, so X replaces L with
 * the very operands a separate output would see: one n² buffer instead of
 * two (970 MB for a 7B model's down_proj), and within a row the blocks j0
 * are independent, so threads share them.  L's diagonal blocks are never
 * read (Tinv stands for them), so X's are written first.  Rows go in
 * groups of SB (see group_products).  tmp holds n·SB doubles. */
static void trtri_lower_inplace(double *a, int64_t n, const double *tinv, double *tmp, int n_threads)
{
    for (int64_t j0 = 0; j0 < n; j0 += NB) {
        int64_t jb = n - j0 < NB ? n - j0 : NB;
        const double *tj = tinv + (j0 / NB) * NB * NB;
        for (int64_t i = 0; i < jb; i++)
            memcpy(a + (j0 + i) * n + j0, tj + i * NB, (size_t)jb * sizeof *a);
    }
    for (int64_t g0 = 0; g0 < n; g0 += SB) {
        const int64_t gh = n - g0 < SB ? n - g0 : SB;
        hinv_par g = {.a = a, .n = n, .s0 = g0, .sb = gh, .tmp = tmp};
        if (g0 > 0)
            qp_lin_parallel(g0, NB, n_threads, group_products, &g);
        for (int64_t i0 = g0 == 0 ? NB : g0; i0 < g0 + gh; i0 += NB) {
            hinv_par p = {.a = a, .n = n, .i0 = i0, .ib = n - i0 < NB ? n - i0 : NB, .s0 = g0,
                          .t11 = tinv + (i0 / NB) * NB * NB, .tmp = tmp};
            qp_lin_parallel(i0, NB, n_threads, row_products, &p);
            qp_lin_parallel(i0, NB, n_threads, trtri_scale, &p);
        }
    }
}

int qp_gptq_check_hessian(const double *H, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j <= i; j++) {
            double v = H[i * n + j];
            if (!isfinite(v))
                return qp_error_set(QP_EUSAGE,
                                    "gptq: H [%lld x %lld]: row %lld, column %lld is %s; the calibration produced a non-finite Hessian",
                                    (long long)n, (long long)n, (long long)i, (long long)j, isnan(v) ? "nan" : "inf");
        }
    }
    return 0;
}

/* A's lower triangle, element by element: a dense matrix, or (GPTQ with
 * act order) H[perm][:, perm] read through the permutation, so the permuted
 * copy of H (another n² doubles) is never formed. */
typedef struct {
    const double *A;        /* [n, n] */
    const int32_t *perm;    /* NULL: A itself */
    const double *diag;     /* [n] the diagonal by original column (with perm) */
    int64_t n;
} lower_src;

static inline double lower_at(const lower_src *s, int64_t i, int64_t j)   /* i >= j */
{
    if (!s->perm)
        return s->A[i * s->n + j];
    if (i == j)
        return s->diag[s->perm[i]];
    const int64_t a = s->perm[i], b = s->perm[j];
    return a >= b ? s->A[a * s->n + b] : s->A[b * s->n + a];
}

static int hinv_core(float *U, double *U64, const lower_src *src, int64_t n, double damp_percent,
                     double damp_auto_increment, double *damp_used, int *retries, int n_threads)
{
    double *r = NULL, *tinv = NULL, *tmp = NULL;
    int rc = 0, tries = 0;
    double damp = damp_percent;
    double mean = 0.0;
    for (int64_t i = 0; i < n; i++)
        mean += lower_at(src, i, i);
    mean /= (double)n;

    r = qp_xmalloc((size_t)n * (size_t)n * sizeof *r);
    tinv = qp_xmalloc((size_t)((n + NB - 1) / NB) * NB * NB * sizeof *tinv);
    tmp = qp_xmalloc((size_t)n * SB * sizeof *tmp);
    int ok = 0;
    while (damp > 0.0 && damp < 1.0) {
        /* r = J·(A + damp·mean·I)·J, lower triangle: r[i][j] = A[n-1-j][n-1-i]
         * (the upper triangle zero: the blocked updates touch it) */
        for (int64_t i = 0; i < n; i++) {
            for (int64_t j = 0; j <= i; j++)
                r[i * n + j] = lower_at(src, n - 1 - j, n - 1 - i);
            r[i * n + i] += damp * mean;
            memset(r + i * n + i + 1, 0, (size_t)(n - 1 - i) * sizeof *r);
        }
        if (potrf_lower(r, n, tinv, tmp, n_threads) == 0) {
            ok = 1;
            break;
        }
        tries++;
        if (damp_auto_increment == 0.0)
            break;
        damp += damp_auto_increment;
    }
    if (!ok) {
        rc = qp_error_set(QP_EUSAGE,
                          "gptq: H [%lld x %lld] is not positive definite even with damp_percent %g after %d tries; check the calibration data or raise damp_percent / damp_auto_increment",
                          (long long)n, (long long)n, damp >= 1.0 ? damp - damp_auto_increment : damp, tries);
        goto done;
    }
    trtri_lower_inplace(r, n, tinv, tmp, n_threads);
    /* U = J·L̃⁻¹·J: U[i][j] = x[n-1-i][n-1-j], upper (x = L̃⁻¹, now in r) */
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < n; j++) {
            double v = j >= i ? r[(n - 1 - i) * n + (n - 1 - j)] : 0.0;
            U[i * n + j] = (float)v;
            if (U64)
                U64[i * n + j] = v;
        }
    }
    if (damp_used)
        *damp_used = damp;
    if (retries)
        *retries = tries;
done:
    free(r);
    free(tinv);
    free(tmp);
    return rc;
}

int qp_gptq_hinv(float *U, double *U64, const double *A, int64_t n, double damp_percent,
                 double damp_auto_increment, double *damp_used, int *retries, int n_threads)
{
    if (n < 1 || n > 46340) /* as qp_gptq_quantize: n² stays well inside size_t on any platform */
        return qp_error_set(QP_EUSAGE, "gptq: H [%lld x %lld]: unsupported size", (long long)n, (long long)n);
    int rc = qp_gptq_check_hessian(A, n);
    if (rc)
        return rc;
    lower_src src = {A, NULL, NULL, n};
    return hinv_core(U, U64, &src, n, damp_percent, damp_auto_increment, damp_used, retries, n_threads);
}

int qp_gptq_hinv_perm(float *U, const double *H, const int32_t *perm, const double *diag, int64_t n,
                      double damp_percent, double damp_auto_increment, double *damp_used, int *retries,
                      int n_threads)
{
    if (n < 1 || n > 46340)
        return qp_error_set(QP_EUSAGE, "gptq: H [%lld x %lld]: unsupported size", (long long)n, (long long)n);
    /* H's lower triangle was checked by the caller (qp_gptq_quantize), and
     * diag holds H's diagonal or 1 */
    lower_src src = {H, perm, diag, n};
    return hinv_core(U, NULL, &src, n, damp_percent, damp_auto_increment, damp_used, retries, n_threads);
}
