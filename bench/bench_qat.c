/* The training block (train/block.h, f32: what QAT runs) forward and
 * backward, in GFLOP/s and as a fraction of OpenBLAS's cblas_sgemm in the
 * same process, both on ONE thread (the block with n_threads = 1, OpenBLAS
 * set to one thread, as bench_gemm).
 *
 *   house   D=256  H=8  KV=4  hd=32  F=768    T=256 S=4   (the house model's block)
 *   7B      D=4096 H=32 KV=32 hd=128 F=11008  T=256 S=1   (a Llama-2-7B-shaped block)
 *
 * FLOPs are qp_tblock_f32_flops (2 per multiply-add of every product as
 * computed, attention's recomputation in backward included); backward
 * computes dx and dL/dW of all seven linears (no biases).  The baseline is
 * cblas_sgemm of the block's largest linear, Y[S·T, F] = X[S·T, D]·W_upᵀ,
 * best of >= 3 runs; ratio = block GFLOP/s / that GFLOP/s (1.0: the whole
 * block runs at OpenBLAS's speed on its biggest product).
 *
 * Random weights.  The 7B block's seven weights (~0.8 GB) are real; its
 * seven dW share one buffer of the largest size (they are written one after
 * the other, never read back, so the work is the same): ~1.1 GB in all.  The
 * house shape is timed as the best of >= 3 runs and >= 1 s; the 7B shape as
 * the best of 2 (about 10-20 s on one core). */
#include "bench/bench_util.h"
#include "common/rng.h"
#include "train/block.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static qp_rng rng;

static float *falloc(size_t n)
{
    float *p = malloc(n * sizeof(float));
    if (!p) {
        fprintf(stderr, "bench_qat: out of memory (%zu floats)\n", n);
        exit(1);
    }
    return p;
}

/* uniform in [-a, a) */
static void fill(float *x, size_t n, float a)
{
    for (size_t i = 0; i < n; i++)
        x[i] = a * ((float)((double)(qp_rng_next(&rng) >> 40) / (double)(1 << 23)) - 1.0f);
}

typedef struct {
    int m, n, k;
    const float *a, *b;
    float *c;
} sgemm_job;

static int run_blas(void *p)
{
    sgemm_job *j = p;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->m, j->n, j->k, 1.0f, j->a, j->k, j->b, j->k, 0.0f, j->c,
                j->n);
    return 0;
}

static int bench_shape(const char *name, qp_tblock_shape sh, size_t T, size_t S, int reps, double min_seconds)
{
    const size_t D = (size_t)sh.hidden, F = (size_t)sh.intermediate, N = S * T, half = (size_t)sh.head_dim / 2;
    float *ct = falloc(T * half), *st = falloc(T * half);
    for (size_t p = 0; p < T; p++)
        for (size_t i = 0; i < half; i++) {
            double a = (double)p * pow(10000.0, -2.0 * (double)i / (double)sh.head_dim);
            ct[p * half + i] = (float)cos(a);
            st[p * half + i] = (float)sin(a);
        }
    float *w[QP_TL_COUNT];
    size_t maxw = 0;
    for (int i = 0; i < QP_TL_COUNT; i++) {
        size_t rows, cols;
        qp_tblock_linear_dims(&sh, i, &rows, &cols);
        w[i] = falloc(rows * cols);
        fill(w[i], rows * cols, 1.7f / sqrtf((float)cols));
        maxw = rows * cols > maxw ? rows * cols : maxw;
    }
    float *dw = falloc(maxw), *na = falloc(D), *nf = falloc(D);
    float *x = falloc(N * D), *y = falloc(N * D), *dy = falloc(N * D), *dx = falloc(N * D);
    for (size_t i = 0; i < D; i++)
        na[i] = nf[i] = 1.0f;
    fill(x, N * D, 1.0f);
    fill(dy, N * D, 1.0f);
    qp_tblock_weights_f32 wt = {.norm_attn = na, .norm_ffn = nf};
    qp_tblock_grads_f32 g = {.bias = {NULL, NULL, NULL}};
    for (int i = 0; i < QP_TL_COUNT; i++)
        wt.w[i] = w[i], g.w[i] = dw;
    qp_tblock_f32 *b = NULL;
    if (qp_tblock_f32_new(&b, &sh, S, T, ct, st, 1)) {
        fprintf(stderr, "bench_qat: qp_tblock_f32_new failed\n");
        return 1;
    }

    /* baseline: the up projection through OpenBLAS */
    float *c = falloc(N * F);
    sgemm_job j = {(int)N, (int)F, (int)D, x, w[QP_TL_UP], c};
    double t_blas = bench_best_time(run_blas, &j, min_seconds < 0.3 ? min_seconds : 0.3, 50);
    double blas = 2.0 * (double)N * (double)F * (double)D / t_blas * 1e-9;
    free(c);

    double best_f = 1e30, best_b = 1e30, best_t = 1e30, spent = 0;
    for (int r = 0; r < reps || (spent < min_seconds && r < 50); r++) {
        double t0 = qp_now();
        qp_tblock_f32_forward(b, &wt, x, S, y);
        double t1 = qp_now();
        qp_tblock_f32_backward(b, &wt, dy, dx, &g);
        double t2 = qp_now();
        best_f = t1 - t0 < best_f ? t1 - t0 : best_f;
        best_b = t2 - t1 < best_b ? t2 - t1 : best_b;
        best_t = t2 - t0 < best_t ? t2 - t0 : best_t;
        spent += t2 - t0;
    }
    int bad = 0;
    for (size_t i = 0; i < N * D; i++)
        bad |= !isfinite(y[i]) || !isfinite(dx[i]);
    for (size_t i = 0; i < maxw; i += 4097)
        bad |= !isfinite(dw[i]);
    double ff = qp_tblock_f32_flops(b, S, 1), fb = qp_tblock_f32_flops(b, S, 0);
    double gf = ff / best_f * 1e-9, gb = fb / best_b * 1e-9, gt = (ff + fb) / best_t * 1e-9;
    printf("%-6s D=%-4d H=%-2d KV=%-2d hd=%-3d F=%-5d T=%zu S=%zu  (%.1f + %.1f GFLOP)\n", name, sh.hidden, sh.n_heads,
           sh.n_kv_heads, sh.head_dim, sh.intermediate, T, S, ff * 1e-9, fb * 1e-9);
    printf("  OpenBLAS sgemm [%zu x %zu x %zu]  %7.1f GFLOP/s\n", N, F, D, blas);
    printf("  forward   %8.3f s  %7.1f GFLOP/s  %5.2fx\n", best_f, gf, gf / blas);
    printf("  backward  %8.3f s  %7.1f GFLOP/s  %5.2fx\n", best_b, gb, gb / blas);
    printf("  total     %8.3f s  %7.1f GFLOP/s  %5.2fx\n", best_t, gt, gt / blas);
    qp_tblock_f32_free(b);
    for (int i = 0; i < QP_TL_COUNT; i++)
        free(w[i]);
    free(dw), free(na), free(nf), free(x), free(y), free(dy), free(dx), free(ct), free(st);
    if (bad) {
        fprintf(stderr, "bench_qat: %s: non-finite output\n", name);
        return 1;
    }
    return 0;
}

int main(void)
{
    openblas_set_num_threads(1);
    qp_rng_seed(&rng, 1);
    printf("train block f32 forward/backward (one thread) vs OpenBLAS %s cblas_sgemm (one thread), best times\n",
           openblas_get_corename());
    const qp_tblock_shape house = {.hidden = 256, .n_heads = 8, .n_kv_heads = 4, .head_dim = 32, .intermediate = 768,
                                   .rms_eps = 1e-5};
    const qp_tblock_shape l7b = {.hidden = 4096, .n_heads = 32, .n_kv_heads = 32, .head_dim = 128,
                                 .intermediate = 11008, .rms_eps = 1e-5};
    if (bench_shape("house", house, 256, 4, 3, 1.0))
        return 1;
    if (bench_shape("7B", l7b, 256, 1, 2, 0.0))
        return 1;
    printf("(ratio: block GFLOP/s over OpenBLAS's on the block's largest linear; 1.00 = that speed)\n");
    return 0;
}
