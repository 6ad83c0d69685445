/* qpipe's fixed-order GEMM (common/gemm.h) against OpenBLAS on one thread,
 * at the shapes qpipe runs, in the same process: GFLOP/s of each path and
 * the ratio to cblas_sgemm / cblas_dgemm of the same shape.
 *
 *   llama block   Y[n, 128] = X[n, D] · W[128, D]ᵀ  (one column block of a
 *                 linear layer, as model/llama_pool.c cuts them), D = 4096
 *   attention     S[64, 512] = Q[64, 128] · K[512, 128]ᵀ, then P · V
 *   Hessian       Xᵀ·X over a 256-token window, dim 1024 (calibration)
 *   GPTQ update   W[64, 4096−128] += (−Err)ᵀ[64, 128] · Hinv[128, 4096−128]
 *   Cholesky      A22[512, 512] −= L21 · L21ᵀ, f64, K = 64
 *
 * Usage: bench_gemm   (OpenBLAS set to one thread; OPENBLAS_CORETYPE as the
 * environment has it: the baseline names its core). */
#include "bench/bench_util.h"
#include "common/gemm.h"
#include "common/rng.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct {
    qp_trans ta, tb;
    size_t m, n, k;
    float alpha, beta;
    const float *a, *b;
    size_t lda, ldb;
    float *c;
    size_t ldc;
    const double *da, *db;
    double *dc;
    qp_gemm_path path;
    int dbl;
} job;

static int run_qp(void *p)
{
    job *j = p;
    if (j->dbl)
        return qp_dgemm_with(j->path, j->ta, j->tb, j->m, j->n, j->k, j->alpha, j->da, j->lda, j->db, j->ldb, j->beta,
                             j->dc, j->ldc);
    return qp_sgemm_with(j->path, j->ta, j->tb, j->m, j->n, j->k, j->alpha, j->a, j->lda, j->b, j->ldb, j->beta, j->c,
                         j->ldc);
}

static int run_blas(void *p)
{
    job *j = p;
    CBLAS_TRANSPOSE ta = j->ta ? CblasTrans : CblasNoTrans, tb = j->tb ? CblasTrans : CblasNoTrans;
    if (j->dbl)
        cblas_dgemm(CblasRowMajor, ta, tb, (int)j->m, (int)j->n, (int)j->k, j->alpha, j->da, (int)j->lda, j->db,
                    (int)j->ldb, j->beta, j->dc, (int)j->ldc);
    else
        cblas_sgemm(CblasRowMajor, ta, tb, (int)j->m, (int)j->n, (int)j->k, j->alpha, j->a, (int)j->lda, j->b,
                    (int)j->ldb, j->beta, j->c, (int)j->ldc);
    return 0;
}

static qp_rng rng;

/* Uniform in [-1, 1): the values do not change the work. */
static float draw(void) { return (float)((double)(qp_rng_next(&rng) >> 40) / (double)(1 << 23)) - 1.0f; }

static void shape(const char *name, qp_trans ta, qp_trans tb, size_t m, size_t n, size_t k, float alpha, float beta,
                  int dbl)
{
    job j = {.ta = ta, .tb = tb, .m = m, .n = n, .k = k, .alpha = alpha, .beta = beta, .dbl = dbl};
    j.lda = ta ? m : k;
    j.ldb = tb ? k : n;
    j.ldc = n;
    size_t na = m * k, nb = k * n, nc = m * n;
    float *a = malloc(na * sizeof *a), *b = malloc(nb * sizeof *b), *c = malloc(nc * sizeof *c);
    double *da = malloc(na * sizeof *da), *db = malloc(nb * sizeof *db), *dc = malloc(nc * sizeof *dc);
    if (!a || !b || !c || !da || !db || !dc) {
        fprintf(stderr, "bench_gemm: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < na; i++)
        da[i] = a[i] = draw();
    for (size_t i = 0; i < nb; i++)
        db[i] = b[i] = draw();
    for (size_t i = 0; i < nc; i++)
        dc[i] = c[i] = draw();
    j.a = a, j.b = b, j.c = c, j.da = da, j.db = db, j.dc = dc;
    double flop = 2.0 * (double)m * (double)n * (double)k;
    double t_blas = bench_best_time(run_blas, &j, 0.3, 200);
    printf("%-12s %-4s %5zu %5zu %5zu  %8.1f", name, dbl ? "f64" : "f32", m, n, k, flop / t_blas * 1e-9);
    static const qp_gemm_path paths[] = {QP_GEMM_AVX512, QP_GEMM_AVX2};
    for (size_t p = 0; p < 2; p++) {
        j.path = paths[p];
        if (!qp_gemm_path_supported(j.path)) {
            printf("  %8s %6s", "-", "-");
            continue;
        }
        double t = bench_best_time(run_qp, &j, 0.3, 200);
        printf("  %8.1f %5.2fx", flop / t * 1e-9, t_blas / t);
    }
    printf("\n");
    free(a), free(b), free(c), free(da), free(db), free(dc);
}

int main(void)
{
    openblas_set_num_threads(1);
    qp_rng_seed(&rng, 1);
    printf("qp_gemm (fixed-order FMA chains) vs OpenBLAS %s, one thread, GFLOP/s (best of >= 3 runs)\n",
           openblas_get_corename());
    printf("%-12s %-4s %5s %5s %5s  %8s  %8s %6s  %8s %6s\n", "shape", "type", "M", "N", "K", "OpenBLAS", "avx512",
           "ratio", "avx2", "ratio");
    shape("llama block", QP_NOTRANS, QP_TRANS, 256, 128, 4096, 1.0f, 0.0f, 0);
    shape("llama block", QP_NOTRANS, QP_TRANS, 512, 128, 4096, 1.0f, 0.0f, 0);
    shape("house block", QP_NOTRANS, QP_TRANS, 256, 128, 256, 1.0f, 0.0f, 0);
    shape("attn scores", QP_NOTRANS, QP_TRANS, 64, 512, 128, 0.0884f, 0.0f, 0);
    shape("attn values", QP_NOTRANS, QP_NOTRANS, 64, 128, 512, 1.0f, 0.0f, 0);
    shape("Hessian", QP_TRANS, QP_NOTRANS, 1024, 1024, 256, 1.0f, 0.0f, 0);
    shape("GPTQ update", QP_TRANS, QP_NOTRANS, 64, 3968, 128, -1.0f, 1.0f, 0);
    shape("Cholesky", QP_NOTRANS, QP_TRANS, 512, 512, 64, -1.0f, 1.0f, 1);
    shape("trtri", QP_NOTRANS, QP_NOTRANS, 64, 64, 1024, 1.0f, 0.0f, 1);
    printf("(ratio > 1: qpipe's path is faster than OpenBLAS on this shape)\n");
    return 0;
}
