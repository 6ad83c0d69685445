/* The decoder block's forward and backward (train/block.h), written once
 * for a real type.  Included by train/block_f32.c and train/block_f64.c
 * with:
 *   REAL      float or double
 *   SFX       f32 or f64 (the public names' suffix)
 *   GEMM      qp_sgemm or qp_dgemm (common/gemm.h: one FMA chain per element)
 *   EXPR(x)   e^x in REAL (f32: the forward pass's own exp, model/llama_kernels.h)
 *
 * Determinism: every product is cut into tiles of TILE_M × TILE_N elements
 * of its result (constants, never the thread count), each tile one GEMM
 * call on one thread; row-wise kernels work on whole rows; column sums run
 * over rows in order; attention runs one task per (window, kv head) and
 * accumulates dk/dv over that kv head's query heads in head order.  So the
 * result bits do not depend on the number of threads. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/gemm.h"
#include "model/llama_pool.h"
#include "train/block.h"

#define CAT2_(a, b) a##_##b
#define CAT_(a, b) CAT2_(a, b)
#define BLK CAT_(qp_tblock, SFX)
#define WTS CAT_(qp_tblock_weights, SFX)
#define GRD CAT_(qp_tblock_grads, SFX)
#define PUB(name) CAT_(BLK, name)

#define TILE_M 128
#define TILE_N 128
#define ROW_CHUNK 32

struct BLK {
    qp_tblock_shape sh;
    size_t max_windows, T, S;
    size_t D, F, QD, KD;     /* D, F, H·hd, KV·hd */
    REAL scale;              /* 1/√hd */
    REAL *cos_t, *sin_t;     /* [T, hd/2] */
    qp_pool *pool;
    int n_threads;
    /* saved by forward (N = S·T rows) */
    REAL *x, *inv1, *h1, *q, *k, *v, *att, *x2, *inv2, *h2, *gt, *up, *m;
    /* backward's */
    REAL *dm, *dgt, *dup, *dh, *dx2, *datt, *dq, *dk, *dv;
    REAL *scratch;           /* [n_threads][2·T·T] */
};

/* ---- tiled products ---------------------------------------------------- */

typedef struct {
    qp_trans ta, tb;
    size_t M, N, K;
    REAL alpha;
    const REAL *A;
    size_t lda;
    const REAL *B;
    size_t ldb;
    REAL beta;
    REAL *C;
    size_t ldc;
    size_t ncb;
} gemm_job;

static void gemm_task(void *arg, size_t task, int thread)
{
    const gemm_job *j = arg;
    (void)thread;
    size_t i0 = (task / j->ncb) * TILE_M, j0 = (task % j->ncb) * TILE_N;
    size_t m = j->M - i0 < TILE_M ? j->M - i0 : TILE_M;
    size_t n = j->N - j0 < TILE_N ? j->N - j0 : TILE_N;
    const REAL *a = j->ta == QP_NOTRANS ? j->A + i0 * j->lda : j->A + i0;
    const REAL *b = j->tb == QP_NOTRANS ? j->B + j0 : j->B + j0 * j->ldb;
    GEMM(j->ta, j->tb, m, n, j->K, j->alpha, a, j->lda, b, j->ldb, j->beta, j->C + i0 * j->ldc + j0, j->ldc);
}

/* C[M, N] = alpha·op(A)·op(B) + beta·C, tiled over the pool */
static void par_gemm(BLK *b, qp_trans ta, qp_trans tb, size_t M, size_t N, size_t K, REAL alpha, const REAL *A,
                     size_t lda, const REAL *B, size_t ldb, REAL beta, REAL *C, size_t ldc)
{
    if (M == 0 || N == 0)
        return;
    gemm_job j = {ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, (N + TILE_N - 1) / TILE_N};
    size_t nrb = (M + TILE_M - 1) / TILE_M;
    qp_pool_run(b->pool, nrb * j.ncb, gemm_task, &j);
}

/* Y[N, out] = X[N, in]·W[out, in]ᵀ (+ beta·Y) */
static void linear_fwd(BLK *b, const REAL *X, size_t in, const REAL *W, size_t out, REAL beta, REAL *Y, size_t N)
{
    par_gemm(b, QP_NOTRANS, QP_TRANS, N, out, in, 1, X, in, W, in, beta, Y, out);
}

/* dX[N, in] (+)= dY[N, out]·W[out, in] */
static void linear_dx(BLK *b, const REAL *dY, size_t out, const REAL *W, size_t in, REAL beta, REAL *dX, size_t N)
{
    par_gemm(b, QP_NOTRANS, QP_NOTRANS, N, in, out, 1, dY, out, W, in, beta, dX, in);
}

/* dW[out, in] = dY[N, out]ᵀ·X[N, in] */
static void linear_dw(BLK *b, const REAL *dY, size_t out, const REAL *X, size_t in, REAL *dW, size_t N)
{
    par_gemm(b, QP_TRANS, QP_NOTRANS, out, in, N, 1, dY, out, X, in, 0, dW, in);
}

/* ---- row kernels --------------------------------------------------------- */

typedef void (*row_fn)(BLK *b, size_t row, void *arg);
typedef struct {
    BLK *b;
    size_t n;
    row_fn fn;
    void *arg;
} rows_job;

static void rows_task(void *arg, size_t task, int thread)
{
    const rows_job *j = arg;
    (void)thread;
    size_t r1 = (task + 1) * ROW_CHUNK < j->n ? (task + 1) * ROW_CHUNK : j->n;
    for (size_t r = task * ROW_CHUNK; r < r1; r++)
        j->fn(j->b, r, j->arg);
}

static void par_rows(BLK *b, size_t n, row_fn fn, void *arg)
{
    rows_job j = {b, n, fn, arg};
    qp_pool_run(b->pool, (n + ROW_CHUNK - 1) / ROW_CHUNK, rows_task, &j);
}

/* h = x / sqrt(mean(x²) + eps) · g; inv = that 1/sqrt(…) */
static void rmsnorm_row(const REAL *x, const REAL *g, size_t d, double eps, REAL *h, REAL *inv)
{
    double ss = 0;
    for (size_t i = 0; i < d; i++)
        ss += (double)x[i] * (double)x[i];
    REAL r = (REAL)(1.0 / sqrt(ss / (double)d + eps));
    *inv = r;
    for (size_t i = 0; i < d; i++)
        h[i] = x[i] * r * g[i];
}

/* dx (+)= r·(dh·g − x̂·mean(dh·g·x̂)), x̂ = x·r */
static void rmsnorm_row_bwd(const REAL *x, REAL r, const REAL *g, const REAL *dh, size_t d, REAL *dx, int add)
{
    double dot = 0;
    for (size_t i = 0; i < d; i++)
        dot += (double)(dh[i] * g[i]) * (double)(x[i] * r);
    REAL mean = (REAL)(dot / (double)d);
    for (size_t i = 0; i < d; i++) {
        REAL v = r * (dh[i] * g[i] - x[i] * r * mean);
        dx[i] = add ? dx[i] + v : v;
    }
}

/* rotate-half RoPE of one row of nh heads at position pos (inverse: the transpose) */
static void rope_row(const BLK *b, REAL *x, int nh, size_t pos, int inverse)
{
    const size_t hd = (size_t)b->sh.head_dim, half = hd / 2;
    const REAL *c = b->cos_t + pos * half, *s = b->sin_t + pos * half;
    for (int h = 0; h < nh; h++) {
        REAL *xh = x + (size_t)h * hd;
        for (size_t i = 0; i < half; i++) {
            REAL a = xh[i], e = xh[i + half];
            if (!inverse) {
                xh[i] = a * c[i] - e * s[i];
                xh[i + half] = e * c[i] + a * s[i];
            } else {
                xh[i] = a * c[i] + e * s[i];
                xh[i + half] = e * c[i] - a * s[i];
            }
        }
    }
}


static void fwd_norm1_row(BLK *b, size_t r, void *arg)
{
    const WTS *w = arg;
    rmsnorm_row(b->x + r * b->D, w->norm_attn, b->D, b->sh.rms_eps, b->h1 + r * b->D, b->inv1 + r);
}

static void fwd_qk_row(BLK *b, size_t r, void *arg)
{
    const WTS *w = arg;
    REAL *q = b->q + r * b->QD, *k = b->k + r * b->KD, *v = b->v + r * b->KD;
    if (w->bias[0])
        for (size_t i = 0; i < b->QD; i++)
            q[i] += w->bias[0][i];
    if (w->bias[1])
        for (size_t i = 0; i < b->KD; i++)
            k[i] += w->bias[1][i];
    if (w->bias[2])
        for (size_t i = 0; i < b->KD; i++)
            v[i] += w->bias[2][i];
    rope_row(b, q, b->sh.n_heads, r % b->T, 0);
    rope_row(b, k, b->sh.n_kv_heads, r % b->T, 0);
}

static void fwd_norm2_row(BLK *b, size_t r, void *arg)
{
    const WTS *w = arg;
    rmsnorm_row(b->x2 + r * b->D, w->norm_ffn, b->D, b->sh.rms_eps, b->h2 + r * b->D, b->inv2 + r);
}

static REAL sigmoid(REAL g) { return (REAL)1 / ((REAL)1 + EXPR(-g)); }

static void fwd_swiglu_row(BLK *b, size_t r, void *arg)
{
    (void)arg;
    const REAL *g = b->gt + r * b->F, *u = b->up + r * b->F;
    REAL *m = b->m + r * b->F;
    for (size_t i = 0; i < b->F; i++)
        m[i] = g[i] * sigmoid(g[i]) * u[i];
}

/* ---- attention -------------------------------------------------------------- */

/* P [T, T] = causal softmax(Q·Kᵀ·scale) of query head h in window s */
static void attn_probs(const BLK *b, size_t s, int h, REAL *P)
{
    const size_t T = b->T, hd = (size_t)b->sh.head_dim;
    const int group = b->sh.n_heads / b->sh.n_kv_heads;
    const REAL *Q = b->q + s * T * b->QD + (size_t)h * hd;
    const REAL *K = b->k + s * T * b->KD + (size_t)(h / group) * hd;
    GEMM(QP_NOTRANS, QP_TRANS, T, T, hd, b->scale, Q, b->QD, K, b->KD, 0, P, T);
    for (size_t t = 0; t < T; t++) {
        REAL *row = P + t * T;
        REAL mx = row[0];
        for (size_t u = 1; u <= t; u++)
            mx = row[u] > mx ? row[u] : mx;
        double sum = 0;
        for (size_t u = 0; u <= t; u++) {
            row[u] = EXPR(row[u] - mx);
            sum += (double)row[u];
        }
        REAL inv = (REAL)(1.0 / sum);
        for (size_t u = 0; u <= t; u++)
            row[u] *= inv;
        for (size_t u = t + 1; u < T; u++)
            row[u] = 0;
    }
}

static void attn_fwd_task(void *arg, size_t task, int thread)
{
    BLK *b = arg;
    const size_t T = b->T, hd = (size_t)b->sh.head_dim;
    const size_t H = (size_t)b->sh.n_heads, s = task / H;
    const int h = (int)(task % H), group = b->sh.n_heads / b->sh.n_kv_heads;
    REAL *P = b->scratch + (size_t)thread * 2 * T * T;
    attn_probs(b, s, h, P);
    const REAL *V = b->v + s * T * b->KD + (size_t)(h / group) * hd;
    GEMM(QP_NOTRANS, QP_NOTRANS, T, hd, T, 1, P, T, V, b->KD, 0, b->att + s * T * b->QD + (size_t)h * hd, b->QD);
}

/* one kv head j of window s: dq of its query heads, dk and dv summed over them in head order */
static void attn_bwd_task(void *arg, size_t task, int thread)
{
    BLK *b = arg;
    const size_t T = b->T, hd = (size_t)b->sh.head_dim;
    const size_t KV = (size_t)b->sh.n_kv_heads, s = task / KV, j = task % KV;
    const int group = b->sh.n_heads / b->sh.n_kv_heads;
    REAL *P = b->scratch + (size_t)thread * 2 * T * T, *dP = P + T * T;
    const REAL *K = b->k + s * T * b->KD + j * hd, *V = b->v + s * T * b->KD + j * hd;
    REAL *dK = b->dk + s * T * b->KD + j * hd, *dV = b->dv + s * T * b->KD + j * hd;
    for (int g = 0; g < group; g++) {
        const int h = (int)j * group + g;
        const REAL *Q = b->q + s * T * b->QD + (size_t)h * hd;
        const REAL *dO = b->datt + s * T * b->QD + (size_t)h * hd;
        attn_probs(b, s, h, P);
        GEMM(QP_NOTRANS, QP_TRANS, T, T, hd, 1, dO, b->QD, V, b->KD, 0, dP, T);
        for (size_t t = 0; t < T; t++) {
            const REAL *p = P + t * T;
            REAL *d = dP + t * T;
            double dot = 0;
            for (size_t u = 0; u <= t; u++)
                dot += (double)(p[u] * d[u]);
            REAL rd = (REAL)dot;
            for (size_t u = 0; u <= t; u++)
                d[u] = p[u] * (d[u] - rd);
            for (size_t u = t + 1; u < T; u++)
                d[u] = 0;
        }
        REAL beta = g == 0 ? 0 : 1;
        GEMM(QP_NOTRANS, QP_NOTRANS, T, hd, T, b->scale, dP, T, K, b->KD, 0, b->dq + s * T * b->QD + (size_t)h * hd,
             b->QD);
        GEMM(QP_TRANS, QP_NOTRANS, T, hd, T, b->scale, dP, T, Q, b->QD, beta, dK, b->KD);
        GEMM(QP_TRANS, QP_NOTRANS, T, hd, T, 1, P, T, dO, b->QD, beta, dV, b->KD);
    }
}

/* ---- backward row kernels ------------------------------------------------------ */

static void bwd_swiglu_row(BLK *b, size_t r, void *arg)
{
    (void)arg;
    const REAL *g = b->gt + r * b->F, *u = b->up + r * b->F, *dm = b->dm + r * b->F;
    REAL *dg = b->dgt + r * b->F, *du = b->dup + r * b->F;
    for (size_t i = 0; i < b->F; i++) {
        REAL sg = sigmoid(g[i]);
        du[i] = dm[i] * (g[i] * sg);
        dg[i] = dm[i] * u[i] * (sg * ((REAL)1 + g[i] * ((REAL)1 - sg)));
    }
}

typedef struct {
    const WTS *w;
    const REAL *dy;
    REAL *dx;
} norm_bwd_arg;

/* dx2 = dy + rmsnorm'(x2)·dh */
static void bwd_norm2_row(BLK *b, size_t r, void *arg)
{
    const norm_bwd_arg *a = arg;
    REAL *dx2 = b->dx2 + r * b->D;
    memcpy(dx2, a->dy + r * b->D, b->D * sizeof(REAL));
    rmsnorm_row_bwd(b->x2 + r * b->D, b->inv2[r], a->w->norm_ffn, b->dh + r * b->D, b->D, dx2, 1);
}

static void bwd_rope_row(BLK *b, size_t r, void *arg)
{
    (void)arg;
    rope_row(b, b->dq + r * b->QD, b->sh.n_heads, r % b->T, 1);
    rope_row(b, b->dk + r * b->KD, b->sh.n_kv_heads, r % b->T, 1);
}

/* dx = dx2 + rmsnorm'(x)·dh */
static void bwd_norm1_row(BLK *b, size_t r, void *arg)
{
    const norm_bwd_arg *a = arg;
    REAL *dx = a->dx + r * b->D;
    memcpy(dx, b->dx2 + r * b->D, b->D * sizeof(REAL));
    rmsnorm_row_bwd(b->x + r * b->D, b->inv1[r], a->w->norm_attn, b->dh + r * b->D, b->D, dx, 1);
}

typedef struct {
    BLK *b;
    const REAL *src;
    size_t rows, cols;
    REAL *dst;
} colsum_job;

static void colsum_task(void *arg, size_t task, int thread)
{
    const colsum_job *j = arg;
    (void)thread;
    size_t c1 = (task + 1) * TILE_N < j->cols ? (task + 1) * TILE_N : j->cols;
    for (size_t c = task * TILE_N; c < c1; c++) {
        REAL acc = 0;
        for (size_t r = 0; r < j->rows; r++)
            acc += j->src[r * j->cols + c];
        j->dst[c] = acc;
    }
}

static void par_colsum(BLK *b, const REAL *src, size_t rows, size_t cols, REAL *dst)
{
    colsum_job j = {b, src, rows, cols, dst};
    qp_pool_run(b->pool, (cols + TILE_N - 1) / TILE_N, colsum_task, &j);
}

/* ---- public --------------------------------------------------------------------- */

int PUB(new)(BLK **out, const qp_tblock_shape *sh, size_t max_windows, size_t T, const REAL *cos_t,
             const REAL *sin_t, int n_threads)
{
    *out = NULL;
    BLK *b = qp_xcalloc(1, sizeof(*b));
    b->sh = *sh;
    b->max_windows = max_windows;
    b->T = T;
    b->D = (size_t)sh->hidden;
    b->F = (size_t)sh->intermediate;
    b->QD = (size_t)sh->n_heads * (size_t)sh->head_dim;
    b->KD = (size_t)sh->n_kv_heads * (size_t)sh->head_dim;
    b->scale = (REAL)(1.0 / sqrt((double)sh->head_dim));
    b->n_threads = n_threads < 1 ? 1 : n_threads;
    const size_t half = (size_t)sh->head_dim / 2, N = max_windows * T;
    b->cos_t = qp_xmalloc(T * half * sizeof(REAL));
    b->sin_t = qp_xmalloc(T * half * sizeof(REAL));
    memcpy(b->cos_t, cos_t, T * half * sizeof(REAL));
    memcpy(b->sin_t, sin_t, T * half * sizeof(REAL));
    int rc = qp_pool_new(&b->pool, b->n_threads);
    if (rc) {
        PUB(free)(b);
        return rc;
    }
#define ALLOC_(p, n) (b->p = qp_xmalloc((n) * sizeof(REAL)))
    ALLOC_(x, N * b->D);
    ALLOC_(inv1, N);
    ALLOC_(h1, N * b->D);
    ALLOC_(q, N * b->QD);
    ALLOC_(k, N * b->KD);
    ALLOC_(v, N * b->KD);
    ALLOC_(att, N * b->QD);
    ALLOC_(x2, N * b->D);
    ALLOC_(inv2, N);
    ALLOC_(h2, N * b->D);
    ALLOC_(gt, N * b->F);
    ALLOC_(up, N * b->F);
    ALLOC_(m, N * b->F);
    ALLOC_(dm, N * b->F);
    ALLOC_(dgt, N * b->F);
    ALLOC_(dup, N * b->F);
    ALLOC_(dh, N * b->D);
    ALLOC_(dx2, N * b->D);
    ALLOC_(datt, N * b->QD);
    ALLOC_(dq, N * b->QD);
    ALLOC_(dk, N * b->KD);
    ALLOC_(dv, N * b->KD);
    ALLOC_(scratch, (size_t)b->n_threads * 2 * T * T);
#undef ALLOC_
    *out = b;
    return 0;
}

void PUB(free)(BLK *b)
{
    if (!b)
        return;
    REAL *bufs[] = {b->cos_t, b->sin_t, b->x,   b->inv1, b->h1,  b->q,   b->k,    b->v,  b->att,
                    b->x2,    b->inv2,  b->h2,  b->gt,   b->up,  b->m,   b->dm,   b->dgt, b->dup,
                    b->dh,    b->dx2,   b->datt, b->dq,  b->dk,  b->dv,  b->scratch};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
        free(bufs[i]);
    qp_pool_free(b->pool);
    free(b);
}

void PUB(forward)(BLK *b, const WTS *w, const REAL *x, size_t S, REAL *y)
{
    const size_t N = S * b->T, D = b->D, F = b->F;
    b->S = S;
    memcpy(b->x, x, N * D * sizeof(REAL));
    par_rows(b, N, fwd_norm1_row, (void *)w);
    linear_fwd(b, b->h1, D, w->w[QP_TL_Q], b->QD, 0, b->q, N);
    linear_fwd(b, b->h1, D, w->w[QP_TL_K], b->KD, 0, b->k, N);
    linear_fwd(b, b->h1, D, w->w[QP_TL_V], b->KD, 0, b->v, N);
    par_rows(b, N, fwd_qk_row, (void *)w);
    qp_pool_run(b->pool, S * (size_t)b->sh.n_heads, attn_fwd_task, b);
    memcpy(b->x2, x, N * D * sizeof(REAL));
    linear_fwd(b, b->att, b->QD, w->w[QP_TL_O], D, 1, b->x2, N);
    par_rows(b, N, fwd_norm2_row, (void *)w);
    linear_fwd(b, b->h2, D, w->w[QP_TL_GATE], F, 0, b->gt, N);
    linear_fwd(b, b->h2, D, w->w[QP_TL_UP], F, 0, b->up, N);
    par_rows(b, N, fwd_swiglu_row, NULL);
    memcpy(y, b->x2, N * D * sizeof(REAL));
    linear_fwd(b, b->m, F, w->w[QP_TL_DOWN], D, 1, y, N);
}

void PUB(backward)(BLK *b, const WTS *w, const REAL *dy, REAL *dx, const GRD *g)
{
    const size_t N = b->S * b->T, D = b->D, F = b->F, QD = b->QD, KD = b->KD;
    /* MLP */
    if (g->w[QP_TL_DOWN])
        linear_dw(b, dy, D, b->m, F, g->w[QP_TL_DOWN], N);
    linear_dx(b, dy, D, w->w[QP_TL_DOWN], F, 0, b->dm, N);
    par_rows(b, N, bwd_swiglu_row, NULL);
    if (g->w[QP_TL_GATE])
        linear_dw(b, b->dgt, F, b->h2, D, g->w[QP_TL_GATE], N);
    if (g->w[QP_TL_UP])
        linear_dw(b, b->dup, F, b->h2, D, g->w[QP_TL_UP], N);
    linear_dx(b, b->dgt, F, w->w[QP_TL_GATE], D, 0, b->dh, N);
    linear_dx(b, b->dup, F, w->w[QP_TL_UP], D, 1, b->dh, N);
    norm_bwd_arg na = {w, dy, dx};
    par_rows(b, N, bwd_norm2_row, &na);
    /* attention */
    if (g->w[QP_TL_O])
        linear_dw(b, b->dx2, D, b->att, QD, g->w[QP_TL_O], N);
    linear_dx(b, b->dx2, D, w->w[QP_TL_O], QD, 0, b->datt, N);
    qp_pool_run(b->pool, b->S * (size_t)b->sh.n_kv_heads, attn_bwd_task, b);
    par_rows(b, N, bwd_rope_row, NULL);
    if (g->bias[0])
        par_colsum(b, b->dq, N, QD, g->bias[0]);
    if (g->bias[1])
        par_colsum(b, b->dk, N, KD, g->bias[1]);
    if (g->bias[2])
        par_colsum(b, b->dv, N, KD, g->bias[2]);
    if (g->w[QP_TL_Q])
        linear_dw(b, b->dq, QD, b->h1, D, g->w[QP_TL_Q], N);
    if (g->w[QP_TL_K])
        linear_dw(b, b->dk, KD, b->h1, D, g->w[QP_TL_K], N);
    if (g->w[QP_TL_V])
        linear_dw(b, b->dv, KD, b->h1, D, g->w[QP_TL_V], N);
    if (dx) {
        linear_dx(b, b->dq, QD, w->w[QP_TL_Q], D, 0, b->dh, N);
        linear_dx(b, b->dk, KD, w->w[QP_TL_K], D, 1, b->dh, N);
        linear_dx(b, b->dv, KD, w->w[QP_TL_V], D, 1, b->dh, N);
        par_rows(b, N, bwd_norm1_row, &na);
    }
}

double PUB(flops)(const BLK *b, size_t S, int fwd)
{
    const double N = (double)(S * b->T), D = (double)b->D, F = (double)b->F;
    const double T = (double)b->T, hd = (double)b->sh.head_dim, H = (double)b->sh.n_heads;
    const double lin = 2.0 * N * (D * (double)b->QD + 2.0 * D * (double)b->KD + (double)b->QD * D + 3.0 * D * F);
    const double att = 2.0 * (double)S * H * T * T * hd;   /* one T×T×hd product per (window, head) */
    return fwd ? lin + 2.0 * att : 2.0 * lin + 5.0 * att;
}
