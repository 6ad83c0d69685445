/* Evaluation throughput of the LLaMA forward pass, as the evaluate stage
 * runs it (qp_eval_stream: batches of windows, logits per window, NLL
 * scored), on a Hugging Face checkpoint's own weights (bf16/f16/f32) and on
 * the same weights quantized in-process to a llama.cpp file type (Q4_K_M by
 * default: the per-tensor mix of quant/ggml_mix.h, the quantize stage's and
 * llama-quantize's), kept as ggml blocks and dequantized by rows per batch.
 *
 * For each type it reports tokens/s and GFLOP/s (qp_llama_window_flops per
 * window) over `windows` windows of `ctx` pseudo-random tokens (content
 * does not change the work), the windows per pass chosen as the evaluate
 * stage chooses them (qp_eval_batch_windows), and the ratio of that rate to
 * a same-process cblas_sgemm at the same thread count (OpenBLAS; best of
 * >= 3 runs) of the model's largest layer matrix (gate/up, [F, D]) with as
 * many rows as one batch
 * (goal >= 0.75).  With the house model it also times the tokenizer.
 * Ends with peak RSS.
 *
 * Usage:
 *   bench_eval [MODEL_DIR [WINDOWS [THREADS]]] [--type T] [--ctx N] [--batch S]
 *     MODEL_DIR   HF checkpoint directory (config.json + *.safetensors);
 *                 default $QPIPE_SHARED/models/house-llama
 *     WINDOWS     windows to evaluate (default 16)
 *     THREADS     threads of the forward pass and of OpenBLAS (default: online CPUs)
 *     --type T    "base" (the checkpoint's own dtype), a llama.cpp file type
 *                 ("Q4_K_M", "Q8_0", ...), or "all" = base and Q4_K_M (default)
 *     --ctx N     tokens per window (default 256, at most max_position_embeddings)
 *     --batch S   windows per forward pass (default 0: the evaluate stage's choice)
 *     --stream    never keep f32 layers resident (as a model over 2 GiB of f32
 *                 weights runs; a small model otherwise keeps them)
 * Each type prints one line for scripts (bench/scale/run.sh):
 *   result type=T tok_s=X gflops=X peak_gflops=X ratio=X batch=S windows=W ctx=N threads=N secs=X
 * then "peak_rss_mib=X" at the end. */
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/gemm.h"
#include "model/config.h"
#include "model/eval.h"
#include "model/gguf_llama.h"
#include "model/llama.h"
#include "model/llama_pool.h"
#include "model/safetensors.h"
#include "model/tokenizer.h"
#include "quant/ggml_mix.h"
#include "quant/qtypes.h"

#include <cblas.h>
#include <stdint.h>
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
    if (rc < 0)
        return rc;
    qp_llama_hparams_from_config(hp, &cfg);
    return 0;
}

/* ---- the checkpoint quantized in-process: ggml blocks by tensor ---- */

typedef struct {
    char *name;
    int quantized;        /* 0: served by the checkpoint (norms) */
    qp_ggml_type type;
    void *blocks;         /* rows × row_bytes */
    int64_t rows, cols;
    size_t row_bytes;
} qtensor;

typedef struct {
    const qp_checkpoint *ck;
    qp_weight_source inner;   /* the checkpoint's own source */
    qtensor *t;
    size_t n;
    size_t bytes;             /* all blocks */
} qsource;

static int qs_open(void *ud, const char *name, int ndim, const uint64_t *shape, void **h)
{
    qsource *q = ud;
    for (size_t i = 0; i < q->n; i++)
        if (strcmp(q->t[i].name, name) == 0 && q->t[i].quantized) {
            if (ndim != 2 || shape[0] != (uint64_t)q->t[i].rows || shape[1] != (uint64_t)q->t[i].cols)
                return qp_error_set(QP_EFORMAT, "bench: tensor '%s' has another shape", name);
            *h = &q->t[i];
            return 0;
        }
    void *ih = NULL;   /* kept as stored: tag the inner handle's pointer */
    int rc = q->inner.open(q->inner.ud, name, ndim, shape, &ih);
    *h = rc == 0 ? (void *)((uintptr_t)ih | 1u) : NULL;
    return rc;
}

static int qs_rows(void *ud, void *h, uint64_t row0, uint64_t nrows, float *dst)
{
    qsource *q = ud;
    if ((uintptr_t)h & 1u)
        return q->inner.rows(q->inner.ud, (void *)((uintptr_t)h & ~(uintptr_t)1u), row0, nrows, dst);
    const qtensor *t = h;
    for (uint64_t r = 0; r < nrows; r++) {
        int rc = qp_dequantize_row(t->type, (const char *)t->blocks + (size_t)(row0 + r) * t->row_bytes,
                                   dst + r * (uint64_t)t->cols, t->cols);
        if (rc)
            return rc;
    }
    return 0;
}

static void qs_close(void *ud, void *h)
{
    qsource *q = ud;
    if ((uintptr_t)h & 1u)
        q->inner.close(q->inner.ud, (void *)((uintptr_t)h & ~(uintptr_t)1u));
}

/* Quantizes every 2-D tensor of the checkpoint that llama-quantize would
 * (the mix rules by GGUF name), from its f32 conversion. */
static int qsource_build(qsource *q, const qp_checkpoint *ck, const qp_llama_hparams *hp, qp_llama_ftype ftype,
                         int threads)
{
    memset(q, 0, sizeof(*q));
    q->ck = ck;
    qp_weight_source_checkpoint(&q->inner, ck);
    qp_ggml_mix_ctx mix;
    qp_ggml_mix_ctx_init(&mix, hp->n_layers, hp->n_heads, hp->n_kv_heads, hp->tied_embeddings);
    size_t n_names = qp_checkpoint_count(ck);
    q->t = qp_xcalloc(n_names ? n_names : 1, sizeof(*q->t));
    float *f = NULL;
    size_t fcap = 0;
    int rc = 0;
    for (size_t i = 0; i < n_names && rc == 0; i++) {
        const qp_tensor_view *v = qp_checkpoint_tensor(ck, i);
        const char *name = v->name;
        char gname[160];
        qtensor *t = &q->t[q->n++];
        t->name = qp_xstrdup(name);
        if (!v || v->ndim != 2 || qp_gguf_llama_name(gname, sizeof(gname), name) != 0)
            continue;
        int64_t ne[2] = {(int64_t)v->shape[1], (int64_t)v->shape[0]};
        qp_ggml_mix_choice ch;
        if ((rc = qp_ggml_mix_tensor_type(&ch, ftype, gname, 2, ne, &mix)) != 0 || !ch.quantized)
            continue;
        t->quantized = 1;
        t->type = ch.type;
        t->rows = ne[1];
        t->cols = ne[0];
        t->row_bytes = qp_qtype_row_size(t->type, t->cols);
        t->blocks = qp_xmalloc((size_t)t->rows * t->row_bytes);
        size_t nel = (size_t)(t->rows * t->cols);
        if (nel > fcap) {
            free(f);
            f = qp_xmalloc(nel * sizeof(float));
            fcap = nel;
        }
        uint64_t shape[2] = {v->shape[0], v->shape[1]};
        if ((rc = q->inner.get_f32(q->inner.ud, name, 2, shape, f)) == 0)
            rc = qp_quantize(t->type, f, t->blocks, t->rows, t->cols, NULL, threads);
        q->bytes += (size_t)t->rows * t->row_bytes;
    }
    free(f);
    return rc;
}

static void qsource_free(qsource *q)
{
    for (size_t i = 0; i < q->n; i++) {
        free(q->t[i].name);
        free(q->t[i].blocks);
    }
    free(q->t);
}

/* ---- the OpenBLAS baseline ---- */

/* Best GFLOP/s of C[M, rows] = A[M, cols] · B[rows, cols]ᵀ with OpenBLAS on
 * `threads` threads (>= 3 runs, ~10 GFLOP in all). */
static double sgemm_peak(size_t M, size_t rows, size_t cols, int threads)
{
    float *A = qp_xmalloc(M * cols * sizeof(float)), *B = qp_xmalloc(rows * cols * sizeof(float));
    float *C = qp_xmalloc(M * rows * sizeof(float));
    for (size_t i = 0; i < M * cols; i++)
        A[i] = (float)((i * 37) % 101) / 101.0f - 0.5f;
    for (size_t i = 0; i < rows * cols; i++)
        B[i] = (float)((i * 53) % 97) / 97.0f - 0.5f;
    openblas_set_num_threads(threads);
    double flops = 2.0 * (double)M * (double)rows * (double)cols, best = 1e30;
    int reps = (int)(1e10 / flops) + 1;
    reps = reps < 3 ? 3 : reps;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)rows, (int)cols, 1.0f, A, (int)cols, B,
                (int)cols, 0.0f, C, (int)rows);
    for (int r = 0; r < reps; r++) {
        double t0 = qp_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)rows, (int)cols, 1.0f, A, (int)cols, B,
                    (int)cols, 0.0f, C, (int)rows);
        double t = qp_now() - t0;
        best = t < best ? t : best;
    }
    openblas_set_num_threads(1);
    free(A);
    free(B);
    free(C);
    return flops / best;
}

/* ---- one evaluation ---- */

typedef struct {
    const char *dir;
    qp_llama_hparams hp;
    const int32_t *tokens;
    size_t windows, ctx, batch;
    int threads, stream;
} bench_cfg;

/* Evaluates cfg's windows on the model of src; prints the result line. */
static int bench_type(const bench_cfg *c, const char *type, const qp_weight_source *src, double extra_secs)
{
    qp_llama_opts o;
    qp_llama_opts_init(&o);
    o.n_threads = c->threads;
    if (c->stream)
        o.weight_cache_bytes = 0;
    qp_llama *m = NULL;
    qp_eval_acc *acc = NULL;
    int rc = qp_llama_new(&m, &c->hp, src, &o);
    if (rc == 0)
        rc = qp_eval_acc_new(&acc, 0);
    if (rc)
        goto done;
    size_t S = c->batch ? c->batch : qp_eval_batch_windows(m, NULL, c->ctx, QP_EVAL_BATCH_BYTES);
    S = S < c->windows ? S : c->windows;
    qp_eval_acc_set_batch(acc, S);
    double t0 = qp_now();
    rc = qp_eval_stream(acc, m, NULL, c->tokens, c->windows * c->ctx, -1, QP_PPL_WINDOWS, c->ctx, 0, NULL, NULL);
    double secs = qp_now() - t0;
    if (rc)
        goto done;
    qp_eval_result r;
    if ((rc = qp_eval_finish(acc, &r)) != 0)
        goto done;
    /* the baseline: the largest layer matrix (gate/up [F, D]) over a batch's rows */
    const size_t D = (size_t)c->hp.hidden, F = (size_t)c->hp.intermediate;
    const size_t qd = (size_t)c->hp.n_heads * (size_t)c->hp.head_dim;
    size_t rows = F > qd ? F : qd;
    double peak = sgemm_peak(S * c->ctx, rows, D, c->threads);
    double flops = qp_llama_window_flops(&c->hp, c->ctx) * (double)c->windows;
    double tok_s = (double)(c->windows * c->ctx) / secs, gflops = flops / secs / 1e9;
    printf("  %-8s %s weights, %zu windows of %zu in passes of %zu: %.1f s, %.1f tokens/s, %.1f GFLOP/s "
           "(ppl %.2f)%s\n",
           type, qp_llama_weights_cached(m) ? "cached f32" : "streamed", c->windows, c->ctx, S, secs, tok_s,
           gflops, r.ppl, extra_secs > 0 ? "" : "");
    printf("  baseline sgemm %zux%zux%zu (M,N,K), OpenBLAS %s on %d threads: %.1f GFLOP/s best; ratio %.2f (goal "
           ">= 0.75: %s)\n",
           S * c->ctx, rows, D, openblas_get_corename(), c->threads, peak / 1e9, gflops * 1e9 / peak,
           gflops * 1e9 / peak >= 0.75 ? "met" : "NOT met");
    if (extra_secs > 0)
        printf("  (quantized in-process to %s in %.1f s before timing)\n", type, extra_secs);
    printf("result type=%s tok_s=%.2f gflops=%.2f peak_gflops=%.2f ratio=%.3f batch=%zu windows=%zu ctx=%zu "
           "threads=%d secs=%.2f\n",
           type, tok_s, gflops, peak / 1e9, gflops * 1e9 / peak, S, c->windows, c->ctx, c->threads, secs);
    fflush(stdout);
done:
    if (rc)
        fprintf(stderr, "bench_eval: %s: %s\n", type, qp_error_last());
    qp_eval_acc_free(acc);
    qp_llama_free(m);
    return rc;
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

static int usage(void)
{
    fprintf(stderr, "usage: bench_eval [MODEL_DIR [WINDOWS [THREADS]]] [--type base|all|Q4_K_M|...] [--ctx N] "
                    "[--batch S] [--stream]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *shared = getenv("QPIPE_SHARED");
    if (!shared || !*shared)
        shared = "../shared";
    char *dflt = qp_path_join(shared, "models/house-llama");
    const char *pos[3] = {dflt, "16", NULL}, *type = "all";
    long ctx_arg = 256, batch = 0;
    int npos = 0, stream = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--type") == 0 && i + 1 < argc)
            type = argv[++i];
        else if (strcmp(argv[i], "--ctx") == 0 && i + 1 < argc)
            ctx_arg = atol(argv[++i]);
        else if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc)
            batch = atol(argv[++i]);
        else if (strcmp(argv[i], "--stream") == 0)
            stream = 1;
        else if (argv[i][0] != '-' && npos < 3)
            pos[npos++] = argv[i];
        else
            return usage();
    }
    bench_cfg c;
    memset(&c, 0, sizeof(c));
    c.dir = pos[0];
    long windows = atol(pos[1]);
    c.threads = pos[2] ? atoi(pos[2]) : qp_pool_default_threads();
    int ftype = strcmp(type, "all") == 0 ? QP_FTYPE_MOSTLY_Q4_K_M
                : strcmp(type, "base") == 0 ? -2 : qp_llama_ftype_parse(type);
    if (windows < 1 || windows > 100000 || c.threads < 1 || ctx_arg < 2 || batch < 0 || ftype == -1)
        return usage();
    c.windows = (size_t)windows;
    c.batch = (size_t)batch;
    c.stream = stream;
    int status = 1;
    qp_checkpoint *ck = NULL;
    int32_t *tok = NULL;
    qsource qs;
    memset(&qs, 0, sizeof(qs));
    if (load_hparams(&c.hp, c.dir) < 0 || qp_checkpoint_open(&ck, c.dir) < 0) {
        fprintf(stderr, "bench_eval: %s\n", qp_error_last());
        goto done;
    }
    c.ctx = (size_t)ctx_arg < (size_t)c.hp.max_pos ? (size_t)ctx_arg : (size_t)c.hp.max_pos;
    tok = qp_xmalloc(c.windows * c.ctx * sizeof(int32_t));
    uint64_t s = 12345;
    for (size_t i = 0; i < c.windows * c.ctx; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = (int32_t)((s >> 33) % (uint64_t)c.hp.vocab);
    }
    c.tokens = tok;
    printf("bench_eval: %s, %d threads, qp_gemm %s (baseline: OpenBLAS %s), %zu windows of %zu tokens\n", c.dir,
           c.threads, qp_gemm_path_name(qp_gemm_path_active()), openblas_get_corename(), c.windows, c.ctx);
    printf("  model: %llu matmul params, %.3f GFLOP per window\n", (unsigned long long)qp_llama_matmul_params(&c.hp),
           qp_llama_window_flops(&c.hp, c.ctx) / 1e9);
    fflush(stdout);
    if (strcmp(type, "all") == 0 || ftype == -2) {
        qp_weight_source src;
        qp_weight_source_checkpoint(&src, ck);
        if (bench_type(&c, "base", &src, 0) != 0)
            goto done;
    }
    if (ftype >= 0) {
        double t0 = qp_now();
        if (qsource_build(&qs, ck, &c.hp, (qp_llama_ftype)ftype, c.threads) != 0) {
            fprintf(stderr, "bench_eval: quantize: %s\n", qp_error_last());
            goto done;
        }
        double tq = qp_now() - t0;
        qp_weight_source src = {.ud = &qs, .open = qs_open, .rows = qs_rows, .close = qs_close};
        printf("  %s blocks: %.1f MiB\n", qp_llama_ftype_name((qp_llama_ftype)ftype), (double)qs.bytes / 1048576.0);
        if (bench_type(&c, qp_llama_ftype_name((qp_llama_ftype)ftype), &src, tq) != 0)
            goto done;
    }
    if (strcmp(c.dir, dflt) == 0 && bench_tokenizer(c.dir, shared) < 0)
        goto done;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("  peak RSS %.1f MiB\npeak_rss_mib=%.1f\n", (double)ru.ru_maxrss / 1024.0, (double)ru.ru_maxrss / 1024.0);
    status = 0;
done:
    qsource_free(&qs);
    qp_checkpoint_free(ck);
    free(tok);
    free(dflt);
    return status;
}
