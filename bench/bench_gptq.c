/* GPTQ throughput (quant/gptq.h).
 *  1. Per house-model shape: the Hessian inverse alone, the whole
 *     qp_gptq_quantize at 1 and 2 threads, and the rate of its block-update
 *     part (step 6: in-block rank-1 updates + the lazy-batch sgemm, timed
 *     by qp_gptq_stats) as a ratio to a same-process single-threaded sgemm
 *     of the same shapes ([rows x 128] · [128 x cols]).
 *  2. All 42 linear tensors of the house model (6 layers × q, k, v, o, gate,
 *     up, down; the real bf16 weights when ../shared has them) with
 *     synthetic correlated Hessians, 4-bit, group 128: total seconds, to
 *     compare with the ~55 s the PyTorch reference needs on this 2-core
 *     machine for the whole model (calibration included).
 * Timings are the fastest of several runs (the machine may be shared);
 * outputs at 1 and 2 threads are checked to be identical.
 * Usage: bench_gptq */
#include "bench/bench_util.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/gemm.h"
#include "model/llama_pool.h"
#include "model/safetensors.h"
#include "common/tensor.h"
#include "quant/gptq.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x5eed;

static double gauss(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    double u = ((double)(rng >> 11) + 0.5) * 0x1p-53;
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    double v = (double)(rng >> 11) * 0x1p-53;
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* H f64 [d, d] = 2/n XᵀX for X [n = 2048, d]: 32 latent factors plus noise,
 * per-column scales spread like activations. */
static double *make_h(int64_t d)
{
    const int64_t n = 2048, k = 32;
    double *f = malloc((size_t)(n * k) * sizeof *f), *l = malloc((size_t)(k * d) * sizeof *l);
    double *x = malloc((size_t)(n * d) * sizeof *x), *h = calloc((size_t)(d * d), sizeof *h);
    double *sc = malloc((size_t)d * sizeof *sc);
    if (!f || !l || !x || !h || !sc) {
        fprintf(stderr, "bench_gptq: out of memory\n");
        exit(1);
    }
    for (int64_t i = 0; i < n * k; i++)
        f[i] = gauss();
    for (int64_t i = 0; i < k * d; i++)
        l[i] = gauss() / sqrt((double)k);
    for (int64_t j = 0; j < d; j++)
        sc[j] = exp(0.7 * gauss());
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)d, (int)k, 1.0, f, (int)k, l, (int)d, 0.0,
                x, (int)d);
    for (int64_t t = 0; t < n; t++)
        for (int64_t j = 0; j < d; j++)
            x[t * d + j] = sc[j] * (x[t * d + j] + 0.3 * gauss());
    cblas_dsyrk(CblasRowMajor, CblasLower, CblasTrans, (int)d, (int)n, 2.0 / (double)n, x, (int)d, 0.0, h, (int)d);
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j < i; j++)
            h[j * d + i] = h[i * d + j];
    free(f);
    free(l);
    free(x);
    free(sc);
    return h;
}

static float *make_w(int64_t rows, int64_t cols)
{
    float *w = malloc((size_t)(rows * cols) * sizeof *w);
    if (!w) {
        fprintf(stderr, "bench_gptq: out of memory\n");
        exit(1);
    }
    for (int64_t i = 0; i < rows * cols; i++)
        w[i] = (float)(0.05 * gauss());
    return w;
}

static double best_time(run_fn fn, void *ctx)
{
    return bench_best_time(fn, ctx, 0.3, 100);
}

typedef struct {
    const float *w;
    const double *h;
    int64_t rows, cols;
    qp_gptq_params p;
    int threads;
    qp_linear *keep;   /* last result */
    double t_update;   /* fastest step 6 seen */
    float *u;          /* hinv output */
    float *a, *b, *c;  /* sgemm operands */
} job;

static int run_gptq(void *p)
{
    job *j = p;
    qp_linear_free(j->keep);
    j->keep = NULL;
    qp_gptq_stats st;
    int rc = qp_gptq_quantize(&j->keep, j->w, j->h, j->rows, j->cols, &j->p, &st, j->threads);
    if (rc == 0 && st.seconds_update < j->t_update)
        j->t_update = st.seconds_update;
    return rc;
}

static int run_hinv(void *p)
{
    job *j = p;
    double damp;
    int retries;
    return qp_gptq_hinv(j->u, NULL, j->h, j->cols, 0.01, 0.0025, &damp, &retries, 1);
}

static int run_sgemm(void *p)
{
    job *j = p;
    /* C [rows, cols] −= A [rows, 128] · B [128, cols] */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)j->rows, (int)j->cols, 128, -1.0f, j->a, 128,
                j->b, (int)j->cols, 1.0f, j->c, (int)j->cols);
    return 0;
}

/* FLOPs of step 6 for block size bs: the lazy-batch products
 * 2·rows·count·(cols − i2) and the in-block rank-1 updates
 * 2·rows·Σ_i (count − 1 − i). */
static double update_flops(int64_t rows, int64_t cols, int64_t bs)
{
    double f = 0.0;
    for (int64_t i1 = 0; i1 < cols; i1 += bs) {
        int64_t i2 = i1 + bs < cols ? i1 + bs : cols, count = i2 - i1;
        f += 2.0 * (double)rows * (double)count * (double)(cols - i2);
        f += (double)rows * (double)count * (double)(count - 1);
    }
    return f;
}

static int same(const qp_linear *x, const qp_linear *y)
{
    void *a = NULL, *b = NULL;
    size_t la = 0, lb = 0;
    int ok = qp_linear_serialize(x, &a, &la) == 0 && qp_linear_serialize(y, &b, &lb) == 0 && la == lb &&
             memcmp(a, b, la) == 0;
    free(a);
    free(b);
    return ok;
}

static int shapes_bench(void)
{
    static const int64_t shapes[][2] = { { 256, 256 }, { 128, 256 }, { 768, 256 }, { 256, 768 } };
    printf("%-11s %8s %8s %8s %8s %8s %9s %9s %7s %7s\n", "shape", "hinv ms", "gptq@1", "gptq@2", "upd@1", "upd@2",
           "upd GF/s", "sgemm", "ratio", "upd2/1");
    for (size_t k = 0; k < 4; k++) {
        job j = { .rows = shapes[k][0], .cols = shapes[k][1] };
        float *w = make_w(j.rows, j.cols);
        double *h = make_h(j.cols);
        j.w = w;
        j.h = h;
        qp_gptq_params_default(&j.p);
        j.u = malloc((size_t)(j.cols * j.cols) * sizeof *j.u);
        j.a = make_w(j.rows, 128);
        j.b = make_w(128, j.cols);
        j.c = make_w(j.rows, j.cols);
        double t_hinv = best_time(run_hinv, &j);
        j.threads = 1;
        j.t_update = 1e30;
        double t1 = best_time(run_gptq, &j);
        double u1 = j.t_update;
        qp_linear *r1 = j.keep;
        j.keep = NULL;
        j.threads = 2;
        j.t_update = 1e30;
        double t2 = best_time(run_gptq, &j);
        double u2 = j.t_update;
        openblas_set_num_threads(1);
        double t_mm = best_time(run_sgemm, &j);
        if (t_hinv < 0 || t1 < 0 || t2 < 0) {
            fprintf(stderr, "bench_gptq: %s\n", qp_error_last());
            return 1;
        }
        if (!same(r1, j.keep)) {
            fprintf(stderr, "bench_gptq: [%lld x %lld]: 1- and 2-thread outputs differ\n", (long long)j.rows,
                    (long long)j.cols);
            return 1;
        }
        double upd = update_flops(j.rows, j.cols, j.p.block_size) / u1 * 1e-9;
        double peak = 2.0 * (double)j.rows * 128.0 * (double)j.cols / t_mm * 1e-9;
        char name[32];
        snprintf(name, sizeof name, "%lldx%lld", (long long)j.rows, (long long)j.cols);
        printf("%-11s %8.2f %8.2f %8.2f %8.2f %8.2f %9.2f %9.2f %6.2fx %6.2fx\n", name, 1e3 * t_hinv, 1e3 * t1,
               1e3 * t2, 1e3 * u1, 1e3 * u2, upd, peak, upd / peak, u1 / u2);
        qp_linear_free(r1);
        qp_linear_free(j.keep);
        free(w);
        free(h);
        free(j.u);
        free(j.a);
        free(j.b);
        free(j.c);
    }
    printf("(ms per tensor; upd = step 6 alone (qp_gptq_stats.seconds_update); upd GF/s = its FLOPs / upd@1;\n"
           " sgemm = one 1-thread [rows x 128]·[128 x cols] product; ratio = upd GF/s / sgemm)\n");
    return 0;
}

/* ---- the whole house model ------------------------------------------------ */

typedef struct {
    const char *name;
    int64_t rows, cols;
    int h;   /* which Hessian: 0 attention input, 1 o input, 2 mlp input, 3 down input */
} lin_shape;

static const lin_shape LINEARS[7] = {
    { "self_attn.q_proj", 256, 256, 0 }, { "self_attn.k_proj", 128, 256, 0 }, { "self_attn.v_proj", 128, 256, 0 },
    { "self_attn.o_proj", 256, 256, 1 }, { "mlp.gate_proj", 768, 256, 2 },    { "mlp.up_proj", 768, 256, 2 },
    { "mlp.down_proj", 256, 768, 3 },
};

static int model_bench(void)
{
    const char *dir = getenv("QPIPE_SHARED") ? getenv("QPIPE_SHARED") : "../shared";
    char path[4096];
    snprintf(path, sizeof path, "%s/models/house-llama/model.safetensors", dir);
    qp_safetensors *st = NULL;
    int real = qp_safetensors_open(&st, path) == 0;
    float *w[42];
    for (int l = 0; l < 6; l++) {
        for (int k = 0; k < 7; k++) {
            const lin_shape *s = &LINEARS[k];
            float **dst = &w[l * 7 + k];
            *dst = make_w(s->rows, s->cols);
            if (real) {
                char name[128];
                snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, s->name);
                const qp_tensor_view *t = qp_safetensors_find(st, name);
                if (!t || t->nelem != (uint64_t)(s->rows * s->cols) ||
                    qp_convert_to_f32(*dst, t->data, t->dtype, t->nelem)) {
                    fprintf(stderr, "bench_gptq: %s: tensor '%s' missing or not [%lld x %lld]\n", path, name,
                            (long long)s->rows, (long long)s->cols);
                    return 1;
                }
            }
        }
    }
    qp_safetensors_free(st);
    double *h[4] = { make_h(256), make_h(256), make_h(256), make_h(768) };
    static const int cfg[][2] = { { 0, 1 }, { 0, 2 }, { 1, 2 } }; /* act_order, threads */
    printf("\nwhole model: 42 linear tensors (%s weights), 4-bit, group 128, synthetic H\n",
           real ? "house-llama bf16" : "random");
    for (size_t c = 0; c < 3; c++) {
        qp_gptq_params p;
        qp_gptq_params_default(&p);
        p.act_order = cfg[c][0];
        double best = 1e30;
        for (int rep = 0; rep < 3; rep++) {
            double t0 = qp_now();
            for (int i = 0; i < 42; i++) {
                const lin_shape *s = &LINEARS[i % 7];
                qp_linear *q = NULL;
                if (qp_gptq_quantize(&q, w[i], h[s->h], s->rows, s->cols, &p, NULL, cfg[c][1])) {
                    fprintf(stderr, "bench_gptq: layer %d %s: %s\n", i / 7, s->name, qp_error_last());
                    return 1;
                }
                qp_linear_free(q);
            }
            double t = qp_now() - t0;
            best = t < best ? t : best;
        }
        printf("  act_order %d, %d thread%s: %7.3f s  (%.2f%% of the 55 s PyTorch reference run)\n", cfg[c][0],
               cfg[c][1], cfg[c][1] > 1 ? "s" : " ", best, 100.0 * best / 55.0);
    }
    for (int i = 0; i < 42; i++)
        free(w[i]);
    for (int i = 0; i < 4; i++)
        free(h[i]);
    return 0;
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    printf("qp_gemm %s; baseline sgemm: OpenBLAS %s\n", qp_gemm_path_name(qp_gemm_path_active()),
           openblas_get_corename());
    if (shapes_bench())
        return 1;
    return model_bench();
}
