/* train/block.h: the decoder block's backward against central finite
 * differences in double, op by op and for the whole block.
 *
 * Loss L = Σ y ⊙ R with a fixed random R, so dL/dy = R.  The numerical
 * derivative is the 4-point central stencil
 *     (8·(L(p+h) − L(p−h)) − (L(p+2h) − L(p−2h))) / 12h,   h = 1e-3
 * (truncation O(h⁴), rounding ~1e-12), and every checked component must
 * satisfy |a − n| / max(|a|, |n|, 1e-6·scale) <= 1e-4, scale the largest
 * |a| of that tensor.  test_checker_fails shows that a gradient off by 1e-3
 * in one component fails that check.
 *
 * The ops alone: this file instantiates train/block_impl.h a third time
 * (REAL double, suffix t64) to reach its static row kernels and attention
 * tasks.  The ops the block composes are then isolated through the block by
 * the parameters that feed only them (dWd: down; dWg/dWu: SwiGLU + ffn
 * norm; dWo: attention output; dWv/bv: the value path; dWq/dWk/bq/bk:
 * RoPE + softmax; dx: everything, through the attention norm).
 *
 * Also: the f32 block agrees with the f64 one, and the f32 block gives the
 * same bits at 1, 2 and 3 threads on a shape of several tiles.  The LM head
 * and its cross-entropy (train/head.h, the end-to-end phase of QAT): dx by
 * the same finite differences, the loss by hand, f32 against f64 and 1
 * against 3 threads. */
#include "tests/support/testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/llama_pool.h"
#include "train/block.h"
#include "train/head.h"

/* The third instantiation (its public names qp_tblock_t64_*). */
QP_TBLOCK_DECLARE(double, t64)
#define REAL double
#define SFX t64
#define GEMM qp_dgemm
#define EXPR(x) exp(x)
#include "train/block_impl.h"

#define TOL 1e-4
#define FD_H 1e-3

/* ---- helpers ------------------------------------------------------------- */

static void fill(double *x, size_t n, double sd)
{
    for (size_t i = 0; i < n; i++)
        x[i] = sd * (double)qp_test_gauss();
}

static double *dalloc(size_t n)
{
    double *p = calloc(n ? n : 1, sizeof(double));
    assert_non_null(p);
    return p;
}

typedef double (*loss_fn)(void *ctx);

/* dL/dp by the 4-point central stencil; p is restored */
static double numeric(loss_fn f, void *ctx, double *p)
{
    const double p0 = *p;
    *p = p0 + FD_H;
    double l1 = f(ctx);
    *p = p0 - FD_H;
    double m1 = f(ctx);
    *p = p0 + 2 * FD_H;
    double l2 = f(ctx);
    *p = p0 - 2 * FD_H;
    double m2 = f(ctx);
    *p = p0;
    return (8.0 * (l1 - m1) - (l2 - m2)) / (12.0 * FD_H);
}

static double max_abs(const double *a, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        m = fabs(a[i]) > m ? fabs(a[i]) : m;
    return m;
}

static double rel_err(double a, double n, double scale)
{
    double den = fabs(a) > fabs(n) ? fabs(a) : fabs(n);
    den = den > 1e-6 * scale ? den : 1e-6 * scale;
    return den > 0 ? fabs(a - n) / den : 0;
}

/* max relative error of analytic a[n] against the numerical derivative
 * w.r.t. p[n] (every component) */
static double grad_err(loss_fn f, void *ctx, double *p, const double *a, size_t n)
{
    double scale = max_abs(a, n), worst = 0;
    assert_true(scale > 0);   /* a zero gradient checks nothing */
    for (size_t i = 0; i < n; i++) {
        double e = rel_err(a[i], numeric(f, ctx, p + i), scale);
        worst = e > worst ? e : worst;
    }
    return worst;
}

static void report(const char *op, const char *what, double err)
{
    printf("  %-28s %-10s max rel err %.3e\n", op, what, err);
    if (!(err <= TOL))
        fail_msg("%s %s: max relative error %.3e > %.0e", op, what, err, TOL);
}

static double dot(const double *a, const double *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* RoPE tables [T, hd/2]: cos/sin of pos·theta^(−2i/hd) */
static void rope_tables(size_t T, int hd, double theta, double *c, double *s)
{
    const size_t half = (size_t)hd / 2;
    for (size_t p = 0; p < T; p++)
        for (size_t i = 0; i < half; i++) {
            double inv = pow(theta, -2.0 * (double)i / (double)hd);
            c[p * half + i] = cos((double)p * inv);
            s[p * half + i] = sin((double)p * inv);
        }
}

/* ---- the checker itself can fail ------------------------------------------- */

typedef struct {
    const double *r;
    double *x;
    size_t n;
} quad_ctx;

static double quad_loss(void *p)
{
    quad_ctx *c = p;
    double s = 0;
    for (size_t i = 0; i < c->n; i++)
        s += c->r[i] * c->x[i] * c->x[i] * c->x[i];
    return s;
}

static void test_checker_fails(void **state)
{
    (void)state;
    qp_test_seed(1);
    enum { n = 8 };
    double r[n], x[n], g[n];
    fill(r, n, 1);
    fill(x, n, 1);
    quad_ctx c = {r, x, n};
    for (size_t i = 0; i < n; i++)
        g[i] = 3 * r[i] * x[i] * x[i];
    double ok = grad_err(quad_loss, &c, x, g, n);
    g[3] *= 1.001;
    double bad = grad_err(quad_loss, &c, x, g, n);
    printf("  checker: exact %.3e, one component off by 1e-3: %.3e\n", ok, bad);
    assert_true(ok <= TOL);
    assert_true(bad > TOL);
}

/* ---- ops alone ----------------------------------------------------------------- */

enum { OD = 16 };

typedef struct {
    double *x, *g, *r;
    size_t d;
} norm_ctx;

static double norm_loss(void *p)
{
    norm_ctx *c = p;
    double h[OD], inv;
    rmsnorm_row(c->x, c->g, c->d, 1e-6, h, &inv);
    return dot(h, c->r, c->d);
}

static void test_op_rmsnorm(void **state)
{
    (void)state;
    qp_test_seed(2);
    double x[OD], g[OD], r[OD], h[OD], dx[OD], inv;
    fill(x, OD, 1);
    fill(g, OD, 0.3);
    for (int i = 0; i < OD; i++)
        g[i] += 1;
    fill(r, OD, 1);
    norm_ctx c = {x, g, r, OD};
    rmsnorm_row(x, g, OD, 1e-6, h, &inv);
    rmsnorm_row_bwd(x, inv, g, r, OD, dx, 0);
    report("rmsnorm", "dx", grad_err(norm_loss, &c, x, dx, OD));
    /* add = 1 accumulates onto what is there */
    double acc[OD];
    for (int i = 0; i < OD; i++)
        acc[i] = (double)i;
    rmsnorm_row_bwd(x, inv, g, r, OD, acc, 1);
    for (int i = 0; i < OD; i++)
        assert_true(fabs(acc[i] - ((double)i + dx[i])) <= 1e-12 * (1 + fabs(acc[i])));
    /* a tiny row (x ≈ 0): the eps keeps it finite and still a derivative */
    for (int i = 0; i < OD; i++)
        x[i] *= 1e-2;
    rmsnorm_row(x, g, OD, 1e-6, h, &inv);
    rmsnorm_row_bwd(x, inv, g, r, OD, dx, 0);
    report("rmsnorm (small row)", "dx", grad_err(norm_loss, &c, x, dx, OD));
}

enum { RT = 6, RHD = 8, RNH = 3 };

typedef struct {
    qp_tblock_t64 *b;
    double *x, *r;
    size_t pos;
} rope_ctx;

static double rope_loss(void *p)
{
    rope_ctx *c = p;
    double y[RNH * RHD];
    memcpy(y, c->x, sizeof y);
    rope_row(c->b, y, RNH, c->pos, 0);
    return dot(y, c->r, RNH * RHD);
}

static void test_op_rope(void **state)
{
    (void)state;
    qp_test_seed(3);
    double ct[RT * RHD / 2], st[RT * RHD / 2];
    rope_tables(RT, RHD, 10000.0, ct, st);
    qp_tblock_t64 b;
    memset(&b, 0, sizeof b);
    b.sh.head_dim = RHD;
    b.cos_t = ct;
    b.sin_t = st;
    double x[RNH * RHD], r[RNH * RHD], dx[RNH * RHD], y[RNH * RHD];
    double worst = 0;
    for (size_t pos = 0; pos < RT; pos++) {
        fill(x, RNH * RHD, 1);
        fill(r, RNH * RHD, 1);
        /* backward: the inverse rotation of dL/dy */
        memcpy(dx, r, sizeof dx);
        rope_row(&b, dx, RNH, pos, 1);
        rope_ctx c = {&b, x, r, pos};
        double e = grad_err(rope_loss, &c, x, dx, RNH * RHD);
        worst = e > worst ? e : worst;
        /* inverse ∘ forward = identity (a rotation) */
        memcpy(y, x, sizeof y);
        rope_row(&b, y, RNH, pos, 0);
        if (pos > 0)
            assert_true(fabs(y[1] - x[1]) > 1e-6);   /* it does rotate */
        rope_row(&b, y, RNH, pos, 1);
        for (int i = 0; i < RNH * RHD; i++)
            assert_true(fabs(y[i] - x[i]) <= 1e-12);
    }
    report("rope (forward/inverse)", "dx", worst);
}

enum { SF = 40 };

typedef struct {
    qp_tblock_t64 *b;
    const double *r;
} swiglu_ctx;

static double swiglu_loss(void *p)
{
    swiglu_ctx *c = p;
    fwd_swiglu_row(c->b, 0, NULL);
    return dot(c->b->m, c->r, SF);
}

static void test_op_swiglu(void **state)
{
    (void)state;
    qp_test_seed(4);
    double gt[SF], up[SF], m[SF], dm[SF], dg[SF], du[SF];
    fill(gt, SF, 3);   /* both tails of the sigmoid */
    fill(up, SF, 1);
    fill(dm, SF, 1);
    qp_tblock_t64 b;
    memset(&b, 0, sizeof b);
    b.F = SF;
    b.gt = gt, b.up = up, b.m = m, b.dm = dm, b.dgt = dg, b.dup = du;
    bwd_swiglu_row(&b, 0, NULL);
    swiglu_ctx c = {&b, dm};
    report("swiglu (silu(g)*u)", "dgate", grad_err(swiglu_loss, &c, gt, dg, SF));
    report("swiglu (silu(g)*u)", "dup", grad_err(swiglu_loss, &c, up, du, SF));
    /* sigmoid itself */
    for (double g = -30; g <= 30; g += 0.7)
        assert_true(fabs(sigmoid(g) - 1 / (1 + exp(-g))) <= 1e-15);
}

/* attention alone: a struct configured by hand, the forward and backward tasks */
enum { AS = 2, AT = 5, AH = 4, AKV = 2, AHD = 4 };
#define AQD (AH * AHD)
#define AKD (AKV * AHD)
#define AN (AS * AT)

typedef struct {
    qp_tblock_t64 *b;
    const double *r;
} attn_ctx;

static void attn_forward(qp_tblock_t64 *b)
{
    for (size_t t = 0; t < AS * AH; t++)
        attn_fwd_task(b, t, 0);
}

static double attn_loss(void *p)
{
    attn_ctx *c = p;
    attn_forward(c->b);
    return dot(c->b->att, c->r, AN * AQD);
}

static void test_op_attention(void **state)
{
    (void)state;
    qp_test_seed(5);
    double q[AN * AQD], k[AN * AKD], v[AN * AKD], att[AN * AQD], datt[AN * AQD];
    double dq[AN * AQD], dk[AN * AKD], dv[AN * AKD], scratch[2 * AT * AT];
    qp_tblock_t64 b;
    memset(&b, 0, sizeof b);
    b.sh.n_heads = AH, b.sh.n_kv_heads = AKV, b.sh.head_dim = AHD;
    b.T = AT, b.S = AS, b.QD = AQD, b.KD = AKD;
    b.scale = 1.0 / sqrt((double)AHD);
    b.q = q, b.k = k, b.v = v, b.att = att, b.datt = datt, b.dq = dq, b.dk = dk, b.dv = dv;
    b.scratch = scratch;
    fill(q, AN * AQD, 1.5);
    fill(k, AN * AKD, 1.5);
    fill(v, AN * AKD, 1);
    fill(datt, AN * AQD, 1);
    memset(dq, 0xff, sizeof dq);   /* NaN: every element must be written */
    memset(dk, 0xff, sizeof dk);
    memset(dv, 0xff, sizeof dv);
    attn_forward(&b);
    for (size_t t = 0; t < AS * AKV; t++)
        attn_bwd_task(&b, t, 0);
    attn_ctx c = {&b, datt};
    report("attention (causal, GQA)", "dq", grad_err(attn_loss, &c, q, dq, AN * AQD));
    report("attention (causal, GQA)", "dk", grad_err(attn_loss, &c, k, dk, AN * AKD));
    report("attention (causal, GQA)", "dv", grad_err(attn_loss, &c, v, dv, AN * AKD));
    /* causality: the first token of each window reads only its own value */
    attn_forward(&b);
    for (size_t s = 0; s < AS; s++)
        for (int h = 0; h < AH; h++)
            for (int i = 0; i < AHD; i++)
                assert_true(fabs(att[s * AT * AQD + (size_t)(h * AHD + i)] -
                                 v[s * AT * AKD + (size_t)((h / (AH / AKV)) * AHD + i)]) <= 1e-14);
}

/* the tiled products over a pool: linear forward, dX, dW */
typedef struct {
    qp_tblock_t64 *b;
    double *x, *w, *r, *y;
    size_t n, in, out;
} lin_ctx;

static double lin_loss(void *p)
{
    lin_ctx *c = p;
    linear_fwd(c->b, c->x, c->in, c->w, c->out, 0, c->y, c->n);
    return dot(c->y, c->r, c->n * c->out);
}

static void test_op_linear(void **state)
{
    (void)state;
    qp_test_seed(6);
    const size_t n = 7, in = 9, out = 5;
    double x[7 * 9], w[5 * 9], r[7 * 5], y[7 * 5], dx[7 * 9], dw[5 * 9];
    fill(x, n * in, 1);
    fill(w, out * in, 1);
    fill(r, n * out, 1);
    qp_tblock_t64 b;
    memset(&b, 0, sizeof b);
    assert_int_equal(qp_pool_new(&b.pool, 2), 0);
    linear_dx(&b, r, out, w, in, 0, dx, n);
    linear_dw(&b, r, out, x, in, dw, n);
    lin_ctx c = {&b, x, w, r, y, n, in, out};
    report("linear", "dx", grad_err(lin_loss, &c, x, dx, n * in));
    report("linear", "dW", grad_err(lin_loss, &c, w, dw, out * in));
    qp_pool_free(b.pool);
}

/* past one 128×128 tile: the tiles give the untiled product's bits (each
 * element is the same FMA chain), and the bias column sums are plain sums */
static void test_op_linear_tiles(void **state)
{
    (void)state;
    qp_test_seed(11);
    const size_t n = 131, in = 140, out = 260;
    double *x = dalloc(n * in), *w = dalloc(out * in), *r = dalloc(n * out);
    double *y = dalloc(n * out), *yr = dalloc(n * out), *dx = dalloc(n * in), *dxr = dalloc(n * in);
    double *dw = dalloc(out * in), *dwr = dalloc(out * in), *cs = dalloc(out);
    fill(x, n * in, 1);
    fill(w, out * in, 1);
    fill(r, n * out, 1);
    qp_tblock_t64 b;
    memset(&b, 0, sizeof b);
    assert_int_equal(qp_pool_new(&b.pool, 3), 0);
    linear_fwd(&b, x, in, w, out, 0, y, n);
    qp_dgemm_ref(QP_NOTRANS, QP_TRANS, n, out, in, 1, x, in, w, in, 0, yr, out);
    assert_memory_equal(y, yr, n * out * sizeof(double));
    memcpy(yr, r, n * out * sizeof(double));   /* beta = 1 accumulates */
    memcpy(y, r, n * out * sizeof(double));
    linear_fwd(&b, x, in, w, out, 1, y, n);
    qp_dgemm_ref(QP_NOTRANS, QP_TRANS, n, out, in, 1, x, in, w, in, 1, yr, out);
    assert_memory_equal(y, yr, n * out * sizeof(double));
    linear_dx(&b, r, out, w, in, 0, dx, n);
    qp_dgemm_ref(QP_NOTRANS, QP_NOTRANS, n, in, out, 1, r, out, w, in, 0, dxr, in);
    assert_memory_equal(dx, dxr, n * in * sizeof(double));
    linear_dw(&b, r, out, x, in, dw, n);
    qp_dgemm_ref(QP_TRANS, QP_NOTRANS, out, in, n, 1, r, out, x, in, 0, dwr, in);
    assert_memory_equal(dw, dwr, out * in * sizeof(double));
    par_colsum(&b, r, n, out, cs);
    for (size_t j = 0; j < out; j++) {
        double s = 0;
        for (size_t i = 0; i < n; i++)
            s += r[i * out + j];
        assert_true(cs[j] == s);
    }
    printf("  linear / colsum over tiles  same bits as the untiled product\n");
    qp_pool_free(b.pool);
    free(x), free(w), free(r), free(y), free(yr), free(dx), free(dxr), free(dw), free(dwr), free(cs);
}

/* ---- the whole block ------------------------------------------------------------- */

typedef struct {
    qp_tblock_shape sh;
    size_t S, T, N;
    double *w[QP_TL_COUNT], *bias[3], *na, *nf, *x, *r, *y, *ct, *st;
    size_t wn[QP_TL_COUNT], bn[3];
    qp_tblock_f64 *blk;
} block_case;

static void case_new(block_case *c, qp_tblock_shape sh, size_t S, size_t T, int biases, int threads)
{
    memset(c, 0, sizeof *c);
    c->sh = sh;
    c->S = S, c->T = T, c->N = S * T;
    const size_t D = (size_t)sh.hidden, half = (size_t)sh.head_dim / 2;
    for (int i = 0; i < QP_TL_COUNT; i++) {
        size_t rows, cols;
        qp_tblock_linear_dims(&sh, i, &rows, &cols);
        c->wn[i] = rows * cols;
        c->w[i] = dalloc(rows * cols);
        fill(c->w[i], rows * cols, 1.2 / sqrt((double)cols));
    }
    c->bn[0] = (size_t)(sh.n_heads * sh.head_dim);
    c->bn[1] = c->bn[2] = (size_t)(sh.n_kv_heads * sh.head_dim);
    for (int i = 0; i < 3 && biases; i++) {
        c->bias[i] = dalloc(c->bn[i]);
        fill(c->bias[i], c->bn[i], 0.3);
    }
    c->na = dalloc(D);
    c->nf = dalloc(D);
    fill(c->na, D, 0.2);
    fill(c->nf, D, 0.2);
    for (size_t i = 0; i < D; i++)
        c->na[i] += 1, c->nf[i] += 1;
    c->x = dalloc(c->N * D);
    c->r = dalloc(c->N * D);
    c->y = dalloc(c->N * D);
    fill(c->x, c->N * D, 1);
    fill(c->r, c->N * D, 1);
    c->ct = dalloc(T * half);
    c->st = dalloc(T * half);
    rope_tables(T, sh.head_dim, 10000.0, c->ct, c->st);
    if (threads > 0)
        assert_int_equal(qp_tblock_f64_new(&c->blk, &sh, S, T, c->ct, c->st, threads), 0);
}

static void case_free(block_case *c)
{
    qp_tblock_f64_free(c->blk);
    for (int i = 0; i < QP_TL_COUNT; i++)
        free(c->w[i]);
    for (int i = 0; i < 3; i++)
        free(c->bias[i]);
    free(c->na), free(c->nf), free(c->x), free(c->r), free(c->y), free(c->ct), free(c->st);
}

static qp_tblock_weights_f64 case_weights(const block_case *c)
{
    qp_tblock_weights_f64 w;
    for (int i = 0; i < QP_TL_COUNT; i++)
        w.w[i] = c->w[i];
    for (int i = 0; i < 3; i++)
        w.bias[i] = c->bias[i];
    w.norm_attn = c->na;
    w.norm_ffn = c->nf;
    return w;
}

static double block_loss(void *p)
{
    block_case *c = p;
    qp_tblock_weights_f64 w = case_weights(c);
    qp_tblock_f64_forward(c->blk, &w, c->x, c->S, c->y);
    return dot(c->y, c->r, c->N * (size_t)c->sh.hidden);
}

static const char *const lin_op[QP_TL_COUNT] = {
    "rope+softmax (q proj)", "rope+softmax (k proj)", "value path (v proj)", "attention output (o proj)",
    "swiglu gate+ffn norm", "swiglu up+ffn norm", "down proj",
};
static const char *const lin_name[QP_TL_COUNT] = {"dWq", "dWk", "dWv", "dWo", "dWgate", "dWup", "dWdown"};
static const char *const bias_op[3] = {"rope+softmax (q bias)", "rope+softmax (k bias)", "value path (v bias)"};
static const char *const bias_name[3] = {"dbq", "dbk", "dbv"};

static void check_block(int biases)
{
    qp_test_seed(biases ? 8 : 7);
    const qp_tblock_shape sh = {.hidden = 16, .n_heads = 4, .n_kv_heads = 2, .head_dim = 4, .intermediate = 24,
                                .rms_eps = 1e-6};
    block_case c;
    case_new(&c, sh, 2, 5, biases, 1);
    const size_t D = 16;
    qp_tblock_weights_f64 w = case_weights(&c);
    qp_tblock_grads_f64 g;
    double *dw[QP_TL_COUNT], *db[3] = {NULL, NULL, NULL};
    for (int i = 0; i < QP_TL_COUNT; i++) {
        dw[i] = dalloc(c.wn[i]);
        memset(dw[i], 0xff, c.wn[i] * sizeof(double));   /* NaN: written, not accumulated */
        g.w[i] = dw[i];
    }
    for (int i = 0; i < 3; i++) {
        if (biases) {
            db[i] = dalloc(c.bn[i]);
            memset(db[i], 0xff, c.bn[i] * sizeof(double));
        }
        g.bias[i] = db[i];
    }
    double *dx = dalloc(c.N * D);
    qp_tblock_f64_forward(c.blk, &w, c.x, c.S, c.y);
    qp_tblock_f64_backward(c.blk, &w, c.r, dx, &g);
    printf(" block D=16 H=4 KV=2 hd=4 F=24 T=5 S=2, %s biases:\n", biases ? "with" : "without");
    for (int i = 0; i < QP_TL_COUNT; i++)
        report(lin_op[i], lin_name[i], grad_err(block_loss, &c, c.w[i], dw[i], c.wn[i]));
    for (int i = 0; i < 3 && biases; i++)
        report(bias_op[i], bias_name[i], grad_err(block_loss, &c, c.bias[i], db[i], c.bn[i]));
    report("whole block (norms, all)", "dx", grad_err(block_loss, &c, c.x, dx, c.N * D));
    /* dx NULL and grads NULL: the others unchanged */
    double *dw2 = dalloc(c.wn[QP_TL_V]);
    qp_tblock_grads_f64 g2;
    memset(&g2, 0, sizeof g2);
    g2.w[QP_TL_V] = dw2;
    qp_tblock_f64_forward(c.blk, &w, c.x, c.S, c.y);
    qp_tblock_f64_backward(c.blk, &w, c.r, NULL, &g2);
    assert_memory_equal(dw2, dw[QP_TL_V], c.wn[QP_TL_V] * sizeof(double));
    /* a workspace for more windows than run: the same bits */
    qp_tblock_f64 *big = NULL;
    assert_int_equal(qp_tblock_f64_new(&big, &sh, c.S + 2, c.T, c.ct, c.st, 2), 0);
    double *y2 = dalloc(c.N * D), *dx2 = dalloc(c.N * D);
    qp_tblock_f64_forward(big, &w, c.x, c.S, y2);
    qp_tblock_f64_backward(big, &w, c.r, dx2, &g2);
    assert_memory_equal(y2, c.y, c.N * D * sizeof(double));
    assert_memory_equal(dx2, dx, c.N * D * sizeof(double));
    assert_memory_equal(dw2, dw[QP_TL_V], c.wn[QP_TL_V] * sizeof(double));
    qp_tblock_f64_free(big);
    free(y2), free(dx2);
    free(dw2);
    for (int i = 0; i < QP_TL_COUNT; i++)
        free(dw[i]);
    for (int i = 0; i < 3; i++)
        free(db[i]);
    free(dx);
    case_free(&c);
}

static void test_block_grads_no_bias(void **state)
{
    (void)state;
    check_block(0);
}

static void test_block_grads_bias(void **state)
{
    (void)state;
    check_block(1);
}

/* ---- f32 ---------------------------------------------------------------------------- */

typedef struct {
    float *w[QP_TL_COUNT], *bias[3], *na, *nf, *x, *r, *y, *dx, *dw[QP_TL_COUNT], *db[3], *ct, *st;
} f32_bufs;

static float *f32_of(const double *d, size_t n)
{
    if (!d)
        return NULL;
    float *f = malloc((n ? n : 1) * sizeof(float));
    assert_non_null(f);
    for (size_t i = 0; i < n; i++)
        f[i] = (float)d[i];
    return f;
}

static void f32_new(f32_bufs *f, const block_case *c)
{
    const size_t D = (size_t)c->sh.hidden, ND = c->N * D, half = (size_t)c->sh.head_dim / 2;
    for (int i = 0; i < QP_TL_COUNT; i++) {
        f->w[i] = f32_of(c->w[i], c->wn[i]);
        f->dw[i] = malloc(c->wn[i] * sizeof(float));
        assert_non_null(f->dw[i]);
    }
    for (int i = 0; i < 3; i++) {
        f->bias[i] = f32_of(c->bias[i], c->bn[i]);
        f->db[i] = c->bias[i] ? malloc(c->bn[i] * sizeof(float)) : NULL;
    }
    f->na = f32_of(c->na, D), f->nf = f32_of(c->nf, D);
    f->x = f32_of(c->x, ND), f->r = f32_of(c->r, ND);
    f->y = malloc(ND * sizeof(float)), f->dx = malloc(ND * sizeof(float));
    f->ct = f32_of(c->ct, c->T * half), f->st = f32_of(c->st, c->T * half);
    assert_non_null(f->y);
    assert_non_null(f->dx);
}

static void f32_free(f32_bufs *f)
{
    for (int i = 0; i < QP_TL_COUNT; i++)
        free(f->w[i]), free(f->dw[i]);
    for (int i = 0; i < 3; i++)
        free(f->bias[i]), free(f->db[i]);
    free(f->na), free(f->nf), free(f->x), free(f->r), free(f->y), free(f->dx), free(f->ct), free(f->st);
}

static void f32_run(f32_bufs *f, const block_case *c, int threads)
{
    qp_tblock_f32 *b = NULL;
    assert_int_equal(qp_tblock_f32_new(&b, &c->sh, c->S, c->T, f->ct, f->st, threads), 0);
    qp_tblock_weights_f32 w;
    qp_tblock_grads_f32 g;
    for (int i = 0; i < QP_TL_COUNT; i++)
        w.w[i] = f->w[i], g.w[i] = f->dw[i];
    for (int i = 0; i < 3; i++)
        w.bias[i] = f->bias[i], g.bias[i] = f->db[i];
    w.norm_attn = f->na, w.norm_ffn = f->nf;
    qp_tblock_f32_forward(b, &w, f->x, c->S, f->y);
    qp_tblock_f32_backward(b, &w, f->r, f->dx, &g);
    qp_tblock_f32_free(b);
}

static double norm_rel(const float *a, const double *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

static void test_f32_matches_f64(void **state)
{
    (void)state;
    qp_test_seed(9);
    const qp_tblock_shape sh = {.hidden = 48, .n_heads = 6, .n_kv_heads = 2, .head_dim = 8, .intermediate = 80,
                                .rms_eps = 1e-6};
    block_case c;
    case_new(&c, sh, 2, 9, 1, 2);
    /* the f32 inputs are the f64 ones rounded, and the f64 run uses those
     * same rounded values, so only the arithmetic differs */
    const size_t D = 48, ND = c.N * D;
    f32_bufs f;
    f32_new(&f, &c);
    for (int i = 0; i < QP_TL_COUNT; i++)
        for (size_t j = 0; j < c.wn[i]; j++)
            c.w[i][j] = (double)f.w[i][j];
    for (int i = 0; i < 3; i++)
        for (size_t j = 0; j < c.bn[i]; j++)
            c.bias[i][j] = (double)f.bias[i][j];
    for (size_t j = 0; j < D; j++)
        c.na[j] = (double)f.na[j], c.nf[j] = (double)f.nf[j];
    for (size_t j = 0; j < ND; j++)
        c.x[j] = (double)f.x[j], c.r[j] = (double)f.r[j];
    for (size_t j = 0; j < c.T * 4; j++)
        c.ct[j] = (double)f.ct[j], c.st[j] = (double)f.st[j];
    qp_tblock_f64_free(c.blk);
    assert_int_equal(qp_tblock_f64_new(&c.blk, &sh, c.S, c.T, c.ct, c.st, 2), 0);
    qp_tblock_weights_f64 w = case_weights(&c);
    qp_tblock_grads_f64 g;
    double *dw[QP_TL_COUNT], *db[3], *dx = dalloc(ND);
    for (int i = 0; i < QP_TL_COUNT; i++)
        g.w[i] = dw[i] = dalloc(c.wn[i]);
    for (int i = 0; i < 3; i++)
        g.bias[i] = db[i] = dalloc(c.bn[i]);
    qp_tblock_f64_forward(c.blk, &w, c.x, c.S, c.y);
    qp_tblock_f64_backward(c.blk, &w, c.r, dx, &g);
    f32_run(&f, &c, 2);
    const double tol = 1e-4;
    double e, worst = 0;
    printf(" f32 vs f64, D=48 H=6 KV=2 hd=8 F=80 T=9 S=2 (relative error of the norm):\n");
#define CMP(name, a, ref, n)                                                                                          \
    do {                                                                                                              \
        e = norm_rel(a, ref, n);                                                                                      \
        printf("  %-8s %.3e\n", name, e);                                                                             \
        worst = e > worst ? e : worst;                                                                                \
    } while (0)
    CMP("y", f.y, c.y, ND);
    CMP("dx", f.dx, dx, ND);
    for (int i = 0; i < QP_TL_COUNT; i++)
        CMP(lin_name[i], f.dw[i], dw[i], c.wn[i]);
    for (int i = 0; i < 3; i++)
        CMP(bias_name[i], f.db[i], db[i], c.bn[i]);
#undef CMP
    assert_true(worst <= tol);
    for (int i = 0; i < QP_TL_COUNT; i++)
        free(dw[i]);
    for (int i = 0; i < 3; i++)
        free(db[i]);
    free(dx);
    f32_free(&f);
    case_free(&c);
}

static void test_f32_threads_bit_identical(void **state)
{
    (void)state;
    qp_test_seed(10);
    /* N = 210 rows, outputs 160/288/160: several 128×128 tiles everywhere */
    const qp_tblock_shape sh = {.hidden = 160, .n_heads = 5, .n_kv_heads = 1, .head_dim = 32, .intermediate = 288,
                                .rms_eps = 1e-5};
    block_case c;
    case_new(&c, sh, 3, 70, 1, 0);
    const size_t ND = c.N * 160;
    f32_bufs ref, f;
    f32_new(&ref, &c);
    f32_new(&f, &c);
    f32_run(&ref, &c, 1);
    for (int threads = 2; threads <= 3; threads++) {
        memset(f.y, 0, ND * sizeof(float));
        memset(f.dx, 0, ND * sizeof(float));
        f32_run(&f, &c, threads);
        assert_memory_equal(f.y, ref.y, ND * sizeof(float));
        assert_memory_equal(f.dx, ref.dx, ND * sizeof(float));
        for (int i = 0; i < QP_TL_COUNT; i++)
            assert_memory_equal(f.dw[i], ref.dw[i], c.wn[i] * sizeof(float));
        for (int i = 0; i < 3; i++)
            assert_memory_equal(f.db[i], ref.db[i], c.bn[i] * sizeof(float));
    }
    /* and finite, non-trivial */
    for (size_t i = 0; i < ND; i++)
        assert_true(isfinite(ref.dx[i]));
    assert_true(ref.dw[QP_TL_Q][0] != 0.0f);
    printf(" f32 block D=160 F=288 T=70 S=3 H=5 KV=1 hd=32: same bits at 1, 2, 3 threads\n");
    f32_free(&ref);
    f32_free(&f);
    case_free(&c);
}

/* ---- the LM head and its cross-entropy (train/head.h, the end-to-end phase) ---- */

enum { HN = 7, HD = 8, HV = 11 };

typedef struct {
    qp_pool *pool;
    double *x, *g, *w;
    int32_t *target;
} head_ctx;

static double head_loss(void *p)
{
    head_ctx *c = p;
    return qp_thead_f64_loss(c->pool, c->x, HN, HD, c->g, 1e-6, c->w, HV, c->target, 1.0, NULL);
}

static void test_op_lm_head(void **state)
{
    (void)state;
    qp_test_seed(41);
    double x[HN * HD], g[HD], w[HV * HD], dx[HN * HD];
    int32_t target[HN];
    fill(x, HN * HD, 1);
    fill(g, HD, 0.3);
    for (int i = 0; i < HD; i++)
        g[i] += 1;
    fill(w, HV * HD, 0.7);
    for (int r = 0; r < HN; r++)
        target[r] = r == 3 ? -1 : (int32_t)qp_test_below(HV);   /* row 3 is not scored */
    qp_pool *pool = NULL;
    assert_int_equal(qp_pool_new(&pool, 2), 0);
    head_ctx c = {pool, x, g, w, target};
    double loss = qp_thead_f64_loss(pool, x, HN, HD, g, 1e-6, w, HV, target, 1.0, dx);
    /* the loss by hand: Σ over scored rows of logsumexp − logit[target] */
    double want = 0;
    for (int r = 0; r < HN; r++) {
        if (target[r] < 0)
            continue;
        double ss = 0, h[HD], lse = 0, lt = 0;
        for (int i = 0; i < HD; i++)
            ss += x[r * HD + i] * x[r * HD + i];
        for (int i = 0; i < HD; i++)
            h[i] = x[r * HD + i] / sqrt(ss / HD + 1e-6) * g[i];
        for (int v = 0; v < HV; v++) {
            double l = dot(h, w + v * HD, HD);
            lse += exp(l);
            if (v == target[r])
                lt = l;
        }
        want += log(lse) - lt;
    }
    assert_true(fabs(loss - want) <= 1e-12 * fabs(want));
    for (int i = 0; i < HD; i++)
        assert_true(dx[3 * HD + i] == 0.0 || fabs(dx[3 * HD + i]) < 1e-300);   /* unscored row: no gradient */
    report("lm head + cross-entropy", "dx", grad_err(head_loss, &c, x, dx, HN * HD));
    /* f32 and f64 agree; the f32 one gives the same bits at 1 and 3 threads */
    float xf[HN * HD], gf[HD], wf[HV * HD], d1[HN * HD], d3[HN * HD];
    for (int i = 0; i < HN * HD; i++)
        xf[i] = (float)x[i];
    for (int i = 0; i < HD; i++)
        gf[i] = (float)g[i];
    for (int i = 0; i < HV * HD; i++)
        wf[i] = (float)w[i];
    qp_pool *p1 = NULL, *p3 = NULL;
    assert_int_equal(qp_pool_new(&p1, 1), 0);
    assert_int_equal(qp_pool_new(&p3, 3), 0);
    double l1 = qp_thead_f32_loss(p1, xf, HN, HD, gf, 1e-6, wf, HV, target, 1.0f, d1);
    double l3 = qp_thead_f32_loss(p3, xf, HN, HD, gf, 1e-6, wf, HV, target, 1.0f, d3);
    assert_true(memcmp(&l1, &l3, sizeof l1) == 0);
    assert_memory_equal(d1, d3, sizeof d1);
    assert_true(fabs(l1 - loss) <= 1e-5 * fabs(loss));
    for (int i = 0; i < HN * HD; i++)
        assert_true(fabs(d1[i] - dx[i]) <= 1e-4 * max_abs(dx, HN * HD));
    qp_pool_free(p1);
    qp_pool_free(p3);
    qp_pool_free(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checker_fails),
        cmocka_unit_test(test_op_rmsnorm),
        cmocka_unit_test(test_op_rope),
        cmocka_unit_test(test_op_swiglu),
        cmocka_unit_test(test_op_attention),
        cmocka_unit_test(test_op_linear),
        cmocka_unit_test(test_op_linear_tiles),
        cmocka_unit_test(test_block_grads_no_bias),
        cmocka_unit_test(test_block_grads_bias),
        cmocka_unit_test(test_f32_matches_f64),
        cmocka_unit_test(test_f32_threads_bit_identical),
        cmocka_unit_test(test_op_lm_head),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
