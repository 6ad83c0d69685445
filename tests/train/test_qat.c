/* train/fakequant.h and train/qat.h / train/e2e.h:
 *   - the fake quantizer's straight-through gradients (v, γ, zf) are the
 *     exact gradients of its surrogate (every rounding removed): central
 *     finite differences in double, relative error <= 1e-4, asym and sym,
 *     with clamped weights and integer offsets;
 *   - its forward at the init (v = 0, γ = 1, zf = RTN's zero) is RTN's
 *     dequantized weight bit for bit;
 *   - block-wise QAT with 0 steps returns the init exactly (RTN's bytes, or
 *     a given solution's codes: the integer offsets), with training it
 *     never ends above the init's loss (the algorithm's guarantee), and
 *     dequantize(result) is what the last loss evaluation used;
 *   - QAT and the end-to-end phase give the same bytes at 1 and 3 threads. */
#include "tests/support/testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/tensor.h"
#include "quant/linear.h"
#include "train/e2e.h"
#include "train/fakequant.h"
#include "train/qat.h"

#define TOL 1e-4

static double rel_err(double a, double n, double scale)
{
    double d = fabs(a) > fabs(n) ? fabs(a) : fabs(n);
    if (d < 1e-6 * scale)
        d = 1e-6 * scale;
    return fabs(a - n) / d;
}

/* L = Σ Ŵ ⊙ R */
static double fq_loss(const qp_fq_f64 *f, const double *R, double *what)
{
    qp_fq_f64_forward(f, what);
    double L = 0;
    for (size_t i = 0; i < f->rows * f->cols; i++)
        L += what[i] * R[i];
    return L;
}

static double fd(const qp_fq_f64 *f, const double *R, double *what, double *p, double h)
{
    double keep = *p, l[4];
    const double off[4] = {h, -h, 2 * h, -2 * h};
    for (int k = 0; k < 4; k++) {
        *p = keep + off[k];
        l[k] = fq_loss(f, R, what);
    }
    *p = keep;
    return (8 * (l[0] - l[1]) - (l[2] - l[3])) / (12 * h);
}

static void check_fq_grad(int sym, int with_off)
{
    const size_t rows = 5, cols = 16, gs = 8, ng = cols / gs, n = rows * cols;
    const int maxq = 7;
    double *w = calloc(n, sizeof(double)), *v = calloc(n, sizeof(double)), *R = calloc(n, sizeof(double));
    double *what = calloc(n, sizeof(double)), *dv = calloc(n, sizeof(double));
    double s0[10], gamma[10], zf[10], dg[10], dz[10];
    int16_t *off = calloc(n, sizeof(int16_t));
    qp_test_seed(17 + (uint64_t)sym * 2 + (uint64_t)with_off);
    for (size_t i = 0; i < n; i++) {
        w[i] = 0.3 * qp_test_gauss();
        v[i] = qp_test_uniform() - 0.5;
        R[i] = qp_test_gauss();
        off[i] = with_off ? (int16_t)((int)qp_test_below(3) - 1) : 0;
    }
    for (size_t k = 0; k < rows * ng; k++) {
        s0[k] = 0.05 + 0.05 * qp_test_uniform();   /* small: some weights land outside the grid (clamped) */
        gamma[k] = 0.8 + 0.4 * qp_test_uniform();
        zf[k] = 3.0 + qp_test_uniform();
    }
    qp_fq_f64 f = {.rows = rows, .cols = cols, .group_size = gs, .maxq = maxq, .sym = sym, .surrogate = 1, .w = w,
                   .off = with_off ? off : NULL, .s0 = s0, .v = v, .gamma = gamma, .zf = zf};
    qp_fq_f64_backward(&f, R, dv, dg, dz);
    const double h = 1e-6;
    int clamped = 0;
    double worst = 0;
    for (size_t r = 0; r < rows; r++)
        for (size_t g = 0; g < ng; g++) {
            double s, z;
            qp_fq_f64_group(&f, r, g, &s, &z);
            int near_kink = 0;
            for (size_t c = g * gs; c < (g + 1) * gs; c++) {
                size_t i = r * cols + c;
                double qi = w[i] / s + off[i] * with_off + v[i] + z;
                /* the surrogate is not differentiable at the clamp edges: stay 1e-3 away */
                if (fabs(qi) < 1e-3 || fabs(qi - maxq) < 1e-3)
                    near_kink = 1;
                clamped += qi < 0 || qi > maxq;
                if (near_kink)
                    continue;
                double e = rel_err(dv[i], fd(&f, R, what, &v[i], h), 1.0);
                worst = e > worst ? e : worst;
                assert_true(e <= TOL);
            }
            if (near_kink)
                continue;
            size_t k = r * ng + g;
            double e = rel_err(dg[k], fd(&f, R, what, &gamma[k], h), 1.0);
            worst = e > worst ? e : worst;
            assert_true(e <= TOL);
            if (!sym) {
                e = rel_err(dz[k], fd(&f, R, what, &zf[k], h), 1.0);
                worst = e > worst ? e : worst;
                assert_true(e <= TOL);
            } else
                assert_true(dz[k] == 0.0);
        }
    assert_true(clamped > 0);   /* the clamped branch was exercised */
    printf("fake quantizer sym=%d off=%d: max rel err %.2e (%d clamped)\n", sym, with_off, worst, clamped);
    /* the check can fail: dv off by 0.1% is rejected */
    for (size_t i = 0; i < n; i++) {
        double s, z;
        qp_fq_f64_group(&f, i / cols, (i % cols) / gs, &s, &z);
        double qi = w[i] / s + off[i] * with_off + v[i] + z;
        if (qi > 0.01 && qi < maxq - 0.01) {
            assert_true(rel_err(dv[i] * 1.001, fd(&f, R, what, &v[i], h), 1.0) > TOL);
            break;
        }
    }
    free(w);
    free(v);
    free(R);
    free(what);
    free(dv);
    free(off);
}

static void test_fq_grad_asym(void **state)
{
    (void)state;
    check_fq_grad(0, 0);
    check_fq_grad(0, 1);
}

static void test_fq_grad_sym(void **state)
{
    (void)state;
    check_fq_grad(1, 0);
    check_fq_grad(1, 1);
}

/* v = 0, γ = 1, zf = RTN's zero: Ŵ is RTN's dequantized weight, bit for bit */
static void test_fq_init_is_rtn(void **state)
{
    (void)state;
    for (int sym = 0; sym <= 1; sym++) {
        const size_t rows = 7, cols = 64, n = rows * cols;
        float *w = malloc(n * sizeof(float)), *v = calloc(n, sizeof(float)), *a = malloc(n * sizeof(float)),
              *b = malloc(n * sizeof(float));
        qp_test_seed(5);
        for (size_t i = 0; i < n; i++)
            w[i] = 0.02f * qp_test_gauss();
        qp_linear_params lp = {.bits = 3, .group_size = 32, .sym = sym};
        qp_linear *q = NULL;
        assert_int_equal(qp_linear_new(&q, (int64_t)rows, (int64_t)cols, &lp), 0);
        assert_int_equal(qp_rtn_quantize_ref(q, w), 0);
        assert_int_equal(qp_linear_dequantize(q, a), 0);
        qp_linear_view view;
        qp_linear_view_of(q, &view);
        float s0[14], gamma[14], zf[14];
        for (size_t k = 0; k < rows * 2; k++) {
            s0[k] = qp_f16_to_f32(view.scales[k]);
            gamma[k] = 1.0f;
            zf[k] = (float)view.zeros[k];
        }
        qp_fq_f32 f = {.rows = rows, .cols = cols, .group_size = 32, .maxq = 7, .sym = sym, .w = w, .s0 = s0,
                       .v = v, .gamma = gamma, .zf = zf};
        qp_fq_f32_forward(&f, b);
        assert_memory_equal(a, b, n * sizeof(float));
        qp_linear_free(q);
        free(w);
        free(v);
        free(a);
        free(b);
    }
}

/* ---- block-wise QAT on a small random block ---- */

typedef struct {
    float *x;   /* [S, T, D] */
    size_t TD;
} inputs;

static int read_x(void *ud, size_t s, float *dst)
{
    inputs *in = ud;
    memcpy(dst, in->x + s * in->TD, in->TD * sizeof(float));
    return 0;
}

typedef struct {
    qp_tblock_shape sh;
    size_t S, T;
    float *w[QP_TL_COUNT], *na, *nf, *cos_t, *sin_t;
    inputs in;
} toy;

static void toy_init(toy *t)
{
    t->sh = (qp_tblock_shape){64, 4, 2, 16, 96, 1e-5};
    t->S = 6;
    t->T = 24;
    qp_test_seed(99);
    for (int i = 0; i < QP_TL_COUNT; i++) {
        size_t r, c;
        qp_tblock_linear_dims(&t->sh, i, &r, &c);
        t->w[i] = malloc(r * c * sizeof(float));
        for (size_t k = 0; k < r * c; k++)
            t->w[i][k] = 0.08f * qp_test_gauss();
    }
    t->na = malloc(64 * sizeof(float));
    t->nf = malloc(64 * sizeof(float));
    for (int k = 0; k < 64; k++) {
        t->na[k] = 1.0f + 0.1f * qp_test_gauss();
        t->nf[k] = 1.0f + 0.1f * qp_test_gauss();
    }
    const size_t half = 8;
    t->cos_t = malloc(t->T * half * sizeof(float));
    t->sin_t = malloc(t->T * half * sizeof(float));
    for (size_t p = 0; p < t->T; p++)
        for (size_t i = 0; i < half; i++) {
            double ang = (double)p * pow(10000.0, -2.0 * (double)i / 16.0);
            t->cos_t[p * half + i] = (float)cos(ang);
            t->sin_t[p * half + i] = (float)sin(ang);
        }
    t->in.TD = t->T * 64;
    t->in.x = malloc(t->S * t->in.TD * sizeof(float));
    for (size_t k = 0; k < t->S * t->in.TD; k++)
        t->in.x[k] = qp_test_gauss();
}

static void toy_free(toy *t)
{
    for (int i = 0; i < QP_TL_COUNT; i++)
        free(t->w[i]);
    free(t->na);
    free(t->nf);
    free(t->cos_t);
    free(t->sin_t);
    free(t->in.x);
}

static void toy_block(const toy *t, qp_qat_block *b, int bits)
{
    memset(b, 0, sizeof(*b));
    b->shape = t->sh;
    b->S = t->S;
    b->T = t->T;
    b->cos_t = t->cos_t;
    b->sin_t = t->sin_t;
    b->input = read_x;
    b->input_ud = (void *)&t->in;
    for (int i = 0; i < QP_TL_COUNT; i++) {
        b->fp.w[i] = t->w[i];
        b->bits[i] = i == QP_TL_V ? 0 : bits;   /* one linear left unquantized */
    }
    b->fp.norm_attn = t->na;
    b->fp.norm_ffn = t->nf;
}

static void serialize_all(qp_linear *out[QP_TL_COUNT], void **buf, size_t *len)
{
    size_t total = 0;
    void *parts[QP_TL_COUNT] = {0};
    size_t lens[QP_TL_COUNT] = {0};
    for (int i = 0; i < QP_TL_COUNT; i++)
        if (out[i]) {
            assert_int_equal(qp_linear_serialize(out[i], &parts[i], &lens[i]), 0);
            total += lens[i];
        }
    char *all = malloc(total ? total : 1);
    size_t o = 0;
    for (int i = 0; i < QP_TL_COUNT; i++) {
        if (!parts[i])
            continue;
        memcpy(all + o, parts[i], lens[i]);
        o += lens[i];
        free(parts[i]);
    }
    *buf = all;
    *len = total;
}

static void test_qat_zero_steps_is_rtn(void **state)
{
    (void)state;
    toy t;
    toy_init(&t);
    qp_qat_block b;
    toy_block(&t, &b, 3);
    qp_qat_params p = {.group_size = 32, .sym = 0, .steps = 0, .lr = 0.01, .batch = 2, .seed = 1, .n_threads = 2};
    qp_linear *out[QP_TL_COUNT];
    qp_qat_stats st;
    assert_int_equal(qp_qat_block_run(out, &st, &b, &p), 0);
    assert_null(out[QP_TL_V]);
    assert_true(st.loss_init > 0);
    assert_true(st.loss_final == st.loss_init);
    for (int i = 0; i < QP_TL_COUNT; i++) {
        if (!out[i])
            continue;
        size_t r, c;
        qp_tblock_linear_dims(&t.sh, i, &r, &c);
        qp_linear_params lp = {.bits = 3, .group_size = 32};
        qp_linear *q = NULL;
        assert_int_equal(qp_linear_new(&q, (int64_t)r, (int64_t)c, &lp), 0);
        assert_int_equal(qp_rtn_quantize_ref(q, t.w[i]), 0);
        void *a, *bb;
        size_t la, lb;
        assert_int_equal(qp_linear_serialize(q, &a, &la), 0);
        assert_int_equal(qp_linear_serialize(out[i], &bb, &lb), 0);
        assert_int_equal(la, lb);
        assert_memory_equal(a, bb, la);
        free(a);
        free(bb);
        qp_linear_free(q);
        qp_linear_free(out[i]);
    }
    toy_free(&t);
}

/* a given solution (here: RTN with codes moved by one step where they can
 * be, a stand-in for GPTQ's moved codes) is reproduced exactly at 0 steps,
 * ties of w/s included */
static void test_qat_init_solution_kept(void **state)
{
    (void)state;
    toy t;
    toy_init(&t);
    qp_qat_block b;
    toy_block(&t, &b, 4);
    qp_linear *init[QP_TL_COUNT] = {0};
    for (int i = 0; i < QP_TL_COUNT; i++) {
        if (!b.bits[i])
            continue;
        size_t r, c;
        qp_tblock_linear_dims(&t.sh, i, &r, &c);
        qp_linear_params lp = {.bits = 4, .group_size = 32};
        assert_int_equal(qp_linear_new(&init[i], (int64_t)r, (int64_t)c, &lp), 0);
        assert_int_equal(qp_rtn_quantize_ref(init[i], t.w[i]), 0);
        qp_linear_view v;
        qp_linear_view_of(init[i], &v);
        for (size_t k = 0; k < r * c; k++)
            v.codes[k] = (uint8_t)(k % 3 == 0 && v.codes[k] < 15 ? v.codes[k] + 1 : k % 3 == 1 && v.codes[k] > 0
                                                                                         ? v.codes[k] - 1
                                                                                         : v.codes[k]);
        /* every 5th weight exactly halfway between two grid points (w/s = k + 0.5):
         * round half to even of w/s + off lands on the wrong code for odd
         * offsets unless the init's v says otherwise */
        for (size_t k = 0; k < r * c; k += 5) {
            float s = qp_f16_to_f32(v.scales[(k / c) * (size_t)v.n_groups + (k % c) / 32]);
            t.w[i][k] = s * (floorf(t.w[i][k] / s) + 0.5f);
        }
        b.init[i] = init[i];
    }
    qp_qat_params p = {.group_size = 32, .steps = 0, .lr = 0.01, .batch = 3, .seed = 1, .n_threads = 1};
    qp_linear *out[QP_TL_COUNT];
    qp_qat_stats st;
    assert_int_equal(qp_qat_block_run(out, &st, &b, &p), 0);
    for (int i = 0; i < QP_TL_COUNT; i++) {
        if (!init[i])
            continue;
        qp_linear_view a, c;
        qp_linear_view_of(init[i], &a);
        qp_linear_view_of(out[i], &c);
        assert_memory_equal(a.codes, c.codes, (size_t)(a.rows * a.cols));
        assert_memory_equal(a.scales, c.scales, (size_t)(a.rows * a.n_groups) * 2);
        assert_memory_equal(a.zeros, c.zeros, (size_t)(a.rows * a.n_groups));
        qp_linear_free(init[i]);
        qp_linear_free(out[i]);
    }
    toy_free(&t);
}

static void run_qat(const toy *t, int threads, int bits, void **buf, size_t *len, qp_qat_stats *st)
{
    qp_qat_block b;
    toy_block(t, &b, bits);
    qp_qat_params p = {.group_size = 32, .steps = 12, .lr = 0.05, .batch = 4, .seed = 7, .n_threads = threads};
    qp_linear *out[QP_TL_COUNT];
    assert_int_equal(qp_qat_block_run(out, st, &b, &p), 0);
    serialize_all(out, buf, len);
    for (int i = 0; i < QP_TL_COUNT; i++)
        qp_linear_free(out[i]);
}

static void test_qat_threads_and_guarantee(void **state)
{
    (void)state;
    toy t;
    toy_init(&t);
    void *a, *b;
    size_t la, lb;
    qp_qat_stats s1, s3;
    run_qat(&t, 1, 2, &a, &la, &s1);
    run_qat(&t, 3, 2, &b, &lb, &s3);
    assert_int_equal(la, lb);
    assert_memory_equal(a, b, la);
    assert_true(memcmp(&s1.loss_final, &s3.loss_final, sizeof(double)) == 0);
    assert_true(s1.loss_final <= s1.loss_init);
    printf("toy block, 2 bits, 12 steps: MSE %.5g -> %.5g%s\n", s1.loss_init, s1.loss_final,
           s1.kept_init ? " (kept init)" : "");
    free(a);
    free(b);
    toy_free(&t);
}

/* ---- the end-to-end phase: thread independence of the trained scales ---- */

static void run_e2e(const toy *t, int threads, uint16_t **scales, size_t *n, qp_e2e_stats *st)
{
    const int L = 2, V = 40;
    qp_e2e_layer layers[2];
    memset(layers, 0, sizeof(layers));
    float *embed = malloc((size_t)V * 64 * sizeof(float)), *fnorm = malloc(64 * sizeof(float));
    qp_test_seed(3);
    for (int k = 0; k < V * 64; k++)
        embed[k] = qp_test_gauss();
    for (int k = 0; k < 64; k++)
        fnorm[k] = 1.0f;
    int32_t *tok = malloc(t->S * t->T * sizeof(int32_t));
    for (size_t k = 0; k < t->S * t->T; k++)
        tok[k] = (int32_t)qp_test_below((uint64_t)V);
    size_t total = 0;
    for (int l = 0; l < L; l++) {
        layers[l].fp.norm_attn = t->na;
        layers[l].fp.norm_ffn = t->nf;
        for (int i = 0; i < QP_TL_COUNT; i++) {
            size_t r, c;
            qp_tblock_linear_dims(&t->sh, i, &r, &c);
            qp_linear_params lp = {.bits = 3, .group_size = 32};
            assert_int_equal(qp_linear_new(&layers[l].lin[i], (int64_t)r, (int64_t)c, &lp), 0);
            assert_int_equal(qp_rtn_quantize_ref(layers[l].lin[i], t->w[i]), 0);
            total += r * c / 32;
        }
    }
    qp_e2e_model m = {.shape = t->sh, .n_layers = L, .vocab = V, .layers = layers, .embed = embed,
                      .final_norm = fnorm, .lm_head = embed, .tokens = tok, .S = t->S, .T = t->T,
                      .cos_t = t->cos_t, .sin_t = t->sin_t};
    qp_e2e_params p = {.steps = 4, .batch = 3, .n_threads = threads, .lr = 0.01, .seed = 2};
    assert_int_equal(qp_e2e_run(st, &m, &p), 0);
    assert_true(st->loss_final <= st->loss_init);
    *scales = malloc(total * sizeof(uint16_t));
    *n = 0;
    for (int l = 0; l < L; l++)
        for (int i = 0; i < QP_TL_COUNT; i++) {
            qp_linear_view v;
            qp_linear_view_of(layers[l].lin[i], &v);
            memcpy(*scales + *n, v.scales, (size_t)(v.rows * v.n_groups) * sizeof(uint16_t));
            *n += (size_t)(v.rows * v.n_groups);
            qp_linear_free(layers[l].lin[i]);
        }
    free(embed);
    free(fnorm);
    free(tok);
}

static void test_e2e_threads(void **state)
{
    (void)state;
    toy t;
    toy_init(&t);
    uint16_t *a, *b;
    size_t na, nb;
    qp_e2e_stats s1, s3;
    run_e2e(&t, 1, &a, &na, &s1);
    run_e2e(&t, 3, &b, &nb, &s3);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na * sizeof(uint16_t));
    assert_true(memcmp(&s1.loss_final, &s3.loss_final, sizeof(double)) == 0);
    printf("toy e2e, 4 steps: CE %.5f -> %.5f%s\n", s1.loss_init, s1.loss_final, s1.kept_init ? " (kept)" : "");
    free(a);
    free(b);
    toy_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fq_grad_asym),
        cmocka_unit_test(test_fq_grad_sym),
        cmocka_unit_test(test_fq_init_is_rtn),
        cmocka_unit_test(test_qat_zero_steps_is_rtn),
        cmocka_unit_test(test_qat_init_solution_kept),
        cmocka_unit_test(test_qat_threads_and_guarantee),
        cmocka_unit_test(test_e2e_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
