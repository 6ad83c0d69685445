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
 * Both steps are blocked (NB columns) around single-threaded OpenBLAS
 * dtrsm/dsyrk calls, so the result is the same on every run. */
#include "quant/gptq.h"

#include "common/error.h"

#include <cblas.h>
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

/* In-place lower Cholesky of a [n, n] (row-major, lower triangle used; the
 * strict upper triangle is left as it was).  Right-looking, NB-blocked. */
static int potrf_lower(double *a, int64_t n)
{
    for (int64_t k0 = 0; k0 < n; k0 += NB) {
        int64_t kb = n - k0 < NB ? n - k0 : NB;
        double *a11 = a + k0 * n + k0;      /* [kb, kb] */
        if (potf2_lower(a11, n, kb))
            return -1;
        int64_t m = n - k0 - kb;
        if (m == 0)
            break;
        double *a21 = a + (k0 + kb) * n + k0; /* [m, kb] */
        double *a22 = a21 + kb;               /* [m, m] */
        /* L21 = A21 · L11⁻ᵀ */
        cblas_dtrsm(CblasRowMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit, (int)m, (int)kb, 1.0,
                    a11, (int)n, a21, (int)n);
        /* A22 −= L21 · L21ᵀ (lower triangle) */
        cblas_dsyrk(CblasRowMajor, CblasLower, CblasNoTrans, (int)m, (int)kb, -1.0, a21, (int)n, 1.0, a22,
                    (int)n);
    }
    return 0;
}

/* x [n, n] = L⁻¹ for the lower L [n, n]; column block j0 of L⁻¹ is zero
 * above row j0, so each block solves only the trailing triangle. */
static void trtri_lower(double *x, const double *l, int64_t n)
{
    memset(x, 0, (size_t)n * (size_t)n * sizeof *x);
    for (int64_t j0 = 0; j0 < n; j0 += NB) {
        int64_t jb = n - j0 < NB ? n - j0 : NB;
        for (int64_t k = 0; k < jb; k++)
            x[(j0 + k) * n + j0 + k] = 1.0;
        cblas_dtrsm(CblasRowMajor, CblasLeft, CblasLower, CblasNoTrans, CblasNonUnit, (int)(n - j0), (int)jb,
                    1.0, l + j0 * n + j0, (int)n, x + j0 * n + j0, (int)n);
    }
}

int qp_gptq_hinv(float *U, double *U64, const double *A, int64_t n, double damp_percent,
                 double damp_auto_increment, double *damp_used, int *retries)
{
    double *r = NULL, *x = NULL;
    int rc = 0, tries = 0;
    double damp = damp_percent;
    if (n < 1 || n > 46340) /* n² must fit an int for the BLAS calls */
        return qp_error_set(QP_EUSAGE, "gptq: H [%lld x %lld]: unsupported size", (long long)n, (long long)n);
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j <= i; j++) {
            double v = A[i * n + j];
            if (!isfinite(v))
                return qp_error_set(QP_EUSAGE,
                                    "gptq: H [%lld x %lld]: row %lld, column %lld is %s; the calibration produced a non-finite Hessian",
                                    (long long)n, (long long)n, (long long)i, (long long)j, isnan(v) ? "nan" : "inf");
        }
    }
    double mean = 0.0;
    for (int64_t i = 0; i < n; i++)
        mean += A[i * n + i];
    mean /= (double)n;

    openblas_set_num_threads(1);
    r = malloc((size_t)n * (size_t)n * sizeof *r);
    x = malloc((size_t)n * (size_t)n * sizeof *x);
    if (!r || !x) {
        rc = qp_error_set(QP_ERROR, "gptq: H [%lld x %lld]: out of memory for its inverse", (long long)n,
                          (long long)n);
        goto done;
    }
    int ok = 0;
    while (damp > 0.0 && damp < 1.0) {
        /* r = J·(A + damp·mean·I)·J, lower triangle: r[i][j] = A[n-1-j][n-1-i] */
        for (int64_t i = 0; i < n; i++) {
            for (int64_t j = 0; j <= i; j++)
                r[i * n + j] = A[(n - 1 - j) * n + (n - 1 - i)];
            r[i * n + i] += damp * mean;
        }
        if (potrf_lower(r, n) == 0) {
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
    trtri_lower(x, r, n);
    /* U = J·L̃⁻¹·J: U[i][j] = x[n-1-i][n-1-j], upper */
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < n; j++) {
            double v = j >= i ? x[(n - 1 - i) * n + (n - 1 - j)] : 0.0;
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
    free(x);
    return rc;
}
