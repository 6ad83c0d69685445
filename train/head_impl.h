/* train/head.h written once for a real type (REAL, SFX, GEMM, EXPR as in
 * train/block_impl.h).  Rows go in chunks of HEAD_CHUNK (a constant): each
 * chunk's logits [chunk, V] are computed, turned into their gradient in
 * place, and multiplied back by W, so memory is O(HEAD_CHUNK·V). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/gemm.h"
#include "train/head.h"

#define HCAT2_(a, b) a##_##b
#define HCAT_(a, b) HCAT2_(a, b)
#define HEAD_LOSS HCAT_(HCAT_(qp_thead, SFX), loss)

#define HEAD_CHUNK 256
#define HEAD_TILE 128

typedef struct {
    qp_trans tb;
    size_t M, N, K;
    const REAL *A;
    size_t lda;
    const REAL *B;
    size_t ldb;
    REAL *C;
    size_t ldc, ncb;
} head_mm;

static void head_mm_task(void *arg, size_t task, int thread)
{
    const head_mm *j = arg;
    (void)thread;
    size_t i0 = (task / j->ncb) * HEAD_TILE, j0 = (task % j->ncb) * HEAD_TILE;
    size_t m = j->M - i0 < HEAD_TILE ? j->M - i0 : HEAD_TILE, n = j->N - j0 < HEAD_TILE ? j->N - j0 : HEAD_TILE;
    const REAL *b = j->tb == QP_NOTRANS ? j->B + j0 : j->B + j0 * j->ldb;
    GEMM(QP_NOTRANS, j->tb, m, n, j->K, 1, j->A + i0 * j->lda, j->lda, b, j->ldb, 0, j->C + i0 * j->ldc + j0, j->ldc);
}

/* C[M, N] = A[M, K]·op(B) */
static void head_gemm(qp_pool *pool, qp_trans tb, size_t M, size_t N, size_t K, const REAL *A, size_t lda,
                      const REAL *B, size_t ldb, REAL *C, size_t ldc)
{
    head_mm j = {tb, M, N, K, A, lda, B, ldb, C, ldc, (N + HEAD_TILE - 1) / HEAD_TILE};
    qp_pool_run(pool, ((M + HEAD_TILE - 1) / HEAD_TILE) * j.ncb, head_mm_task, &j);
}

typedef struct {
    REAL *logits;
    size_t V, r0;
    const int32_t *target;
    REAL scale;
    int grad;
    double *nll;   /* [chunk] */
} head_rows;

/* one row: its nll, and (grad) logits := scale·(softmax − onehot) */
static void head_row_task(void *arg, size_t r, int thread)
{
    const head_rows *j = arg;
    (void)thread;
    REAL *row = j->logits + r * j->V;
    const int32_t t = j->target[j->r0 + r];
    if (t < 0) {
        j->nll[r] = 0;
        if (j->grad)
            memset(row, 0, j->V * sizeof(REAL));
        return;
    }
    REAL mx = row[0];
    for (size_t v = 1; v < j->V; v++)
        mx = row[v] > mx ? row[v] : mx;
    /* e^(l − max) by the block's exp (f32: qpipe's own, model/llama_kernels.h),
     * so the gradient does not depend on libm; log only in the loss value */
    const REAL lt = row[t];
    double sum = 0;
    for (size_t v = 0; v < j->V; v++) {
        row[v] = EXPR(row[v] - mx);
        sum += (double)row[v];
    }
    j->nll[r] = log(sum) + (double)mx - (double)lt;
    if (!j->grad)
        return;
    const REAL inv = (REAL)(1.0 / sum);
    for (size_t v = 0; v < j->V; v++)
        row[v] = row[v] * inv * j->scale;
    row[t] -= j->scale;
}

double HEAD_LOSS(qp_pool *pool, const REAL *x, size_t N, size_t D, const REAL *g, double eps, const REAL *W, size_t V,
                 const int32_t *target, REAL scale, REAL *dx)
{
    REAL *h = qp_xmalloc(HEAD_CHUNK * D * sizeof(REAL)), *inv = qp_xmalloc(HEAD_CHUNK * sizeof(REAL));
    REAL *logits = qp_xmalloc(HEAD_CHUNK * V * sizeof(REAL)), *dh = qp_xmalloc(HEAD_CHUNK * D * sizeof(REAL));
    double *nll = qp_xmalloc(HEAD_CHUNK * sizeof(double));
    double total = 0;
    for (size_t r0 = 0; r0 < N; r0 += HEAD_CHUNK) {
        const size_t n = N - r0 < HEAD_CHUNK ? N - r0 : HEAD_CHUNK;
        for (size_t r = 0; r < n; r++) {
            const REAL *xr = x + (r0 + r) * D;
            double ss = 0;
            for (size_t i = 0; i < D; i++)
                ss += (double)xr[i] * (double)xr[i];
            inv[r] = (REAL)(1.0 / sqrt(ss / (double)D + eps));
            for (size_t i = 0; i < D; i++)
                h[r * D + i] = xr[i] * inv[r] * g[i];
        }
        head_gemm(pool, QP_TRANS, n, V, D, h, D, W, D, logits, V);
        head_rows hr = {logits, V, r0, target, scale, dx != NULL, nll};
        qp_pool_run(pool, n, head_row_task, &hr);
        for (size_t r = 0; r < n; r++)
            total += nll[r];
        if (!dx)
            continue;
        head_gemm(pool, QP_NOTRANS, n, D, V, logits, V, W, D, dh, D);
        for (size_t r = 0; r < n; r++) {
            const REAL *xr = x + (r0 + r) * D, *d = dh + r * D;
            REAL *o = dx + (r0 + r) * D;
            double dot = 0;
            for (size_t i = 0; i < D; i++)
                dot += (double)(d[i] * g[i]) * (double)(xr[i] * inv[r]);
            REAL mean = (REAL)(dot / (double)D);
            for (size_t i = 0; i < D; i++)
                o[i] = inv[r] * (d[i] * g[i] - xr[i] * inv[r] * mean);
        }
    }
    free(h);
    free(inv);
    free(logits);
    free(dh);
    free(nll);
    return total;
}
