/* Quantization throughput: MB/s of f32 input for Q8_0, Q4_0, Q4_K, Q6_K,
 * IQ4_XS (without and with an imatrix, "IQ4_XS+im"), IQ3_XXS+im, IQ3_S
 * (without and with), IQ2_S+im, IQ2_XXS+im, IQ2_XS+im, IQ1_S+im (these three
 * exist only with an imatrix), IQ1_M+im, TQ1_0 and TQ2_0 with
 * the fast path (qp_quantize) at 1 and 2 threads, the reference quantizer
 * (qp_quantize_ref, one thread), and a same-process memcpy of the same
 * bytes.  Input: 1024 rows × 4096 Gaussian weights (16 MiB), per-row scales
 * spread over two decades.  Every timing is the fastest of several runs (the
 * machine may be shared); the fast output is checked against the reference
 * bytes.  Usage: bench_quant [ROWS] */
#include "bench/bench_util.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "quant/qtypes.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COLS 4096

static uint64_t rng = 12345;

static float gauss(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    float u = ((float)(rng >> 40) + 0.5f) * 0x1p-24f;
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    float v = (float)(rng >> 40) * 0x1p-24f;
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}

static double best_time(run_fn fn, void *ctx)
{
    return bench_best_time(fn, ctx, 0.4, 200);
}

typedef struct {
    qp_ggml_type t;
    const float *x;
    void *y;
    int64_t rows;
    int threads;   /* 0: reference */
    const float *imatrix;   /* COLS floats or NULL */
} qctx;

static int run_quant(void *p)
{
    qctx *c = p;
    int rc = c->threads ? qp_quantize(c->t, c->x, c->y, c->rows, COLS, c->imatrix, c->threads)
                        : qp_quantize_ref(c->t, c->x, c->y, c->rows, COLS, c->imatrix);
    if (rc)
        fprintf(stderr, "bench_quant: %s\n", qp_error_last());
    return rc;
}

int main(int argc, char **argv)
{
    const int64_t rows = argc > 1 ? atoll(argv[1]) : 1024;
    if (rows <= 0) {
        fprintf(stderr, "usage: bench_quant [ROWS]\n");
        return 2;
    }
    const size_t n = (size_t)rows * COLS, bytes = n * sizeof(float);
    float *x = malloc(bytes), *copy = malloc(bytes);
    unsigned char *ref = malloc(2 * n), *fast = malloc(2 * n);   /* 2 bytes/weight >= any quantized row */
    if (!x || !copy || !ref || !fast)
        return 1;
    for (int64_t r = 0; r < rows; r++) {
        float s = powf(10.0f, -2.0f + 2.0f * (float)r / (float)rows);
        for (int c = 0; c < COLS; c++)
            x[r * COLS + c] = s * gauss();
    }
    memset(copy, 0, bytes);
    memset(ref, 0, 2 * n);
    memset(fast, 0, 2 * n);

    bench_copy mc = { copy, x, bytes };
    const double t_copy = best_time(bench_run_memcpy, &mc);
    const double mb = (double)bytes / 1e6;
    printf("input %lld x %d f32 (%.1f MB); memcpy %.0f MB/s\n", (long long)rows, COLS, mb, mb / t_copy);
    printf("%-9s %10s %10s %10s %9s %9s %12s\n", "type", "ref MB/s", "fast@1", "fast@2", "fast1/ref", "fast2/ref",
           "fast2/memcpy");

    /* an imatrix-like importance: positive, spread over three decades */
    static float imatrix[COLS];
    for (int c = 0; c < COLS; c++)
        imatrix[c] = powf(10.0f, -1.5f + 3.0f * (float)((c * 2654435761u) % 1000) / 1000.0f);
    static const struct { qp_ggml_type t; int im; } types[] = {
        { QP_GGML_Q8_0, 0 }, { QP_GGML_Q4_0, 0 }, { QP_GGML_Q4_K, 0 }, { QP_GGML_Q6_K, 0 },
        { QP_GGML_IQ4_XS, 0 }, { QP_GGML_IQ4_XS, 1 }, { QP_GGML_IQ3_XXS, 1 }, { QP_GGML_IQ3_S, 0 },
        { QP_GGML_IQ3_S, 1 }, { QP_GGML_IQ2_S, 1 }, { QP_GGML_IQ2_XXS, 1 }, { QP_GGML_IQ2_XS, 1 },
        { QP_GGML_IQ1_S, 1 }, { QP_GGML_IQ1_M, 1 }, { QP_GGML_TQ1_0, 0 }, { QP_GGML_TQ2_0, 0 },
    };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        const qp_ggml_type t = types[i].t;
        char label[16];
        snprintf(label, sizeof label, "%s%s", qp_qtype_get(t)->name, types[i].im ? "+im" : "");
        const size_t out = qp_qtype_row_size(t, COLS) * (size_t)rows;
        qctx c = { t, x, ref, rows, 0, types[i].im ? imatrix : NULL };
        const double t_ref = best_time(run_quant, &c);
        c.y = fast;
        c.threads = 1;
        const double t_f1 = best_time(run_quant, &c);
        if (t_ref < 0 || t_f1 < 0)
            return 1;
        if (memcmp(ref, fast, out) != 0) {
            size_t b = 0;
            while (ref[b] == fast[b])
                b++;
            fprintf(stderr, "bench_quant: %s fast output differs from the reference at byte %zu of %zu (%d vs %d)\n",
                    qp_qtype_get(t)->name, b, out, ref[b], fast[b]);
            return 1;
        }
        c.threads = 2;
        memset(fast, 0, out);
        const double t_f2 = best_time(run_quant, &c);
        if (t_f2 < 0 || memcmp(ref, fast, out) != 0) {
            fprintf(stderr, "bench_quant: %s 2-thread output differs from the reference\n", qp_qtype_get(t)->name);
            return 1;
        }
        printf("%-9s %10.0f %10.0f %10.0f %8.2fx %8.2fx %11.3fx\n", label, mb / t_ref, mb / t_f1,
               mb / t_f2, t_ref / t_f1, t_ref / t_f2, t_copy / t_f2);
    }
    free(x);
    free(copy);
    free(ref);
    free(fast);
    return 0;
}
