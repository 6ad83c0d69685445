/* Evaluation throughput of the LLaMA forward pass on the house model.
 *
 * Runs windows of ctx (256) pseudo-random tokens through qp_llama_forward
 * (content does not change the work) and reports tokens/s, the achieved
 * FLOP rate (qp_llama_window_flops: 2·params per token for the products
 * plus causal attention), and its ratio to a same-process cblas_sgemm of the
 * model's largest matrix at M = ctx with OpenBLAS on the same number of
 * threads (goal >= 0.5; both measured as the fastest run), for cached f32 weights and for weights streamed
 * from bf16 per window.  Also the tokenizer: the fastest of 5 encodes of
 * data/shakespeare/valid.txt with MODEL_DIR/tokenizer.model (skipped when
 * either is missing).  Also peak RSS.  Usage:
 *   bench_eval [MODEL_DIR [WINDOWS [THREADS]]]   (defaults: house-llama, 16, all CPUs) */
#include "common/error.h"
#include "common/fsutil.h"
#include "common/gemm.h"
#include "model/config.h"
#include "model/llama.h"
#include "model/llama_pool.h"
#include "model/safetensors.h"
#include "model/tokenizer.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static int load_hparams(qp_llama_hparams *hp, const char *dir)
{
    char *path = qp_path_join(dir, "config.json");
    qp_llama_config cfg;
    int rc = qp_llama_config_load(&cfg, path);
    free(path);
    if (rc < 0) {
        fprintf(stderr, "bench_eval: %s\n", qp_error_last());
        return rc;
    }
    qp_llama_hparams_from_config(hp, &cfg);
    return 0;
}

/* The machine may be shared: besides the mean rate over all windows, the
 * fastest single window (and fastest single baseline sgemm) estimate the
 * undisturbed speed, and the FLOP-rate ratio compares those two. */
typedef struct {
    double mean, best;   /* seconds per window */
} timing;

static int time_windows(timing *out, qp_llama *m, const int32_t *tok, size_t ctx, int windows,
                        float *logits)
{
    if (qp_llama_forward(m, tok, ctx, logits) < 0)   /* warm-up */
        return -1;
    double total = 0, best = 1e30;
    for (int w = 0; w < windows; w++) {
        double t0 = qp_now();
        if (qp_llama_forward(m, tok + (size_t)w * ctx, ctx, logits) < 0)
            return -1;
        double t = qp_now() - t0;
        total += t;
        best = t < best ? t : best;
    }
    out->mean = total / windows;
    out->best = best;
    return 0;
}

/* Prints the tokenizer figure; 0 also when skipped, -1 on an error. */
static int bench_tokenizer(const char *dir, const char *shared)
{
    char *tpath = qp_path_join(dir, "tokenizer.model");
    char *vpath = qp_path_join(shared, "data/shakespeare/valid.txt");
    qp_tokenizer *tok = NULL;
    char *text = NULL;
    size_t len = 0, n = 0;
    int rc = 0;
    if (!qp_path_exists(tpath) || !qp_path_exists(vpath)) {
        printf("  tokenizer: skipped (no %s or %s)\n", tpath, vpath);
        goto done;
    }
    if ((rc = qp_tokenizer_load_spm(&tok, tpath)) < 0 || (rc = qp_read_file(vpath, &text, &len)) < 0)
        goto done;
    double best = 1e30;
    for (int r = 0; r < 5 && rc == 0; r++) {
        int *ids = NULL;
        double t0 = qp_now();
        rc = qp_tokenizer_encode(tok, text, len, QP_TOK_ADD_BOS, &ids, &n);
        double t = qp_now() - t0;
        best = t < best ? t : best;
        free(ids);
    }
    if (rc == 0)
        printf("  tokenizer: valid.txt, %zu bytes -> %zu tokens in %.2f ms best (%.1f MB/s, %.2f M tokens/s)\n", len,
               n, best * 1e3, (double)len / best / 1e6, (double)n / best / 1e6);
done:
    if (rc < 0)
        fprintf(stderr, "bench_eval: tokenizer: %s\n", qp_error_last());
    qp_tokenizer_free(tok);
    free(text);
    free(tpath);
    free(vpath);
    return rc < 0 ? -1 : 0;
}

int main(int argc, char **argv)
{
    (void)argv;
    const char *shared = getenv("QPIPE_SHARED");
    if (!shared || !*shared)
        shared = "../shared";
    char *dflt = qp_path_join(shared, "models/house-llama");
    const char *dir = argc > 1 ? argv[1] : dflt;
    int windows = argc > 2 ? atoi(argv[2]) : 16;
    int threads = argc > 3 ? atoi(argv[3]) : qp_pool_default_threads();
    if (windows < 1 || threads < 1) {
        fprintf(stderr, "usage: bench_eval [MODEL_DIR [WINDOWS [THREADS]]]\n");
        return 2;
    }
    int status = 1;
    qp_checkpoint *ck = NULL;
    qp_llama *m = NULL;
    int32_t *tok = NULL;
    float *logits = NULL, *A = NULL, *B = NULL, *C = NULL;
    qp_llama_hparams hp;
    if (load_hparams(&hp, dir) < 0)
        goto done;
    if (qp_checkpoint_open(&ck, dir) < 0) {
        fprintf(stderr, "bench_eval: %s\n", qp_error_last());
        goto done;
    }
    size_t ctx = hp.max_pos < 256 ? (size_t)hp.max_pos : 256;
    tok = malloc((size_t)windows * ctx * sizeof(int32_t));
    logits = malloc(ctx * (size_t)hp.vocab * sizeof(float));
    if (!tok || !logits)
        goto done;
    uint64_t s = 12345;
    for (size_t i = 0; i < (size_t)windows * ctx; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = (int32_t)((s >> 33) % (uint64_t)hp.vocab);
    }
    qp_weight_source src;
    qp_weight_source_checkpoint(&src, ck);
    qp_llama_opts o;
    qp_llama_opts_init(&o);
    o.n_threads = threads;

    double flops = qp_llama_window_flops(&hp, ctx);
    timing t_cached, t_stream;
    for (int stream = 0; stream <= 1; stream++) {
        o.weight_cache_bytes = stream ? 0 : QP_LLAMA_CACHE_DEFAULT;
        if (qp_llama_new(&m, &hp, &src, &o) < 0 ||
            time_windows(stream ? &t_stream : &t_cached, m, tok, ctx, windows, logits) < 0) {
            fprintf(stderr, "bench_eval: %s\n", qp_error_last());
            goto done;
        }
        qp_llama_free(m);
        m = NULL;
    }

    /* Baseline: the largest matrix of the model, [rows, cols], at M = ctx,
     * one cblas_sgemm with OpenBLAS's own threading on as many threads. */
    size_t D = (size_t)hp.hidden, F = (size_t)hp.intermediate, V = (size_t)hp.vocab;
    size_t rows = V, cols = D;
    if (F * D > rows * cols) {
        rows = F;
        cols = D;
    }
    A = malloc(ctx * cols * sizeof(float));
    B = malloc(rows * cols * sizeof(float));
    C = malloc(ctx * rows * sizeof(float));
    if (!A || !B || !C)
        goto done;
    for (size_t i = 0; i < ctx * cols; i++)
        A[i] = (float)((i * 37) % 101) / 101.0f - 0.5f;
    for (size_t i = 0; i < rows * cols; i++)
        B[i] = (float)((i * 53) % 97) / 97.0f - 0.5f;
    openblas_set_num_threads(threads);
    double gemm_flops = 2.0 * (double)ctx * (double)rows * (double)cols;
    int reps = (int)(1e10 / gemm_flops) + 1;   /* ~10 GFLOP in all */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)ctx, (int)rows, (int)cols, 1.0f, A, (int)cols,
                B, (int)cols, 0.0f, C, (int)rows);
    double t_gemm = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = qp_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)ctx, (int)rows, (int)cols, 1.0f, A,
                    (int)cols, B, (int)cols, 0.0f, C, (int)rows);
        double t = qp_now() - t0;
        t_gemm = t < t_gemm ? t : t_gemm;
    }
    openblas_set_num_threads(1);

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double base = gemm_flops / t_gemm;
    printf("bench_eval: %s, %d threads, qp_gemm %s (baseline: OpenBLAS %s), %d windows of %zu tokens\n", dir,
           threads, qp_gemm_path_name(qp_gemm_path_active()), openblas_get_corename(), windows, ctx);
    printf("  model: %llu matmul params, %.3f GFLOP per window\n",
           (unsigned long long)qp_llama_matmul_params(&hp), flops / 1e9);
    const struct { const char *what; timing t; } rows_out[] = {
        {"cached f32 weights", t_cached}, {"streamed from bf16", t_stream}};
    for (int i = 0; i < 2; i++)
        printf("  %s: %6.0f tokens/s mean, %6.0f best window  (%5.1f GFLOP/s best, ratio %.2f)\n",
               rows_out[i].what, (double)ctx / rows_out[i].t.mean, (double)ctx / rows_out[i].t.best,
               flops / rows_out[i].t.best / 1e9, flops / rows_out[i].t.best / base);
    printf("  streaming costs %.0f%% per window (best vs best)\n", (t_stream.best / t_cached.best - 1.0) * 100.0);
    printf("  baseline sgemm %zux%zux%zu (M,N,K), OpenBLAS on %d threads: %.1f GFLOP/s best\n", ctx, rows, cols,
           threads, base / 1e9);
    double ratio = flops / t_cached.best / base;
    printf("  FLOP-rate ratio %.2f (goal >= 0.5: %s)\n", ratio, ratio >= 0.5 ? "met" : "NOT met");
    if (bench_tokenizer(dir, shared) < 0)
        goto done;
    getrusage(RUSAGE_SELF, &ru);
    printf("  peak RSS %.1f MiB\n", (double)ru.ru_maxrss / 1024.0);
    status = 0;
done:
    qp_llama_free(m);
    qp_checkpoint_free(ck);
    free(tok);
    free(logits);
    free(A);
    free(B);
    free(C);
    free(dflt);
    return status;
}
