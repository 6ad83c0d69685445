/* Throughput of the non-llama.cpp quantizers, in MB/s of f32 input:
 * RTN-4/g128 (asym, GPTQ grid), NF4 (blocksize 64, with and without double
 * quantization) and INT8 per-channel — the reference (_ref, one thread) and
 * the fast path at 1 and 2 threads, the ratio fast/ref and the ratio of the
 * fast path's time at 2 threads to a same-process memcpy of the same bytes.
 * Input: ROWS × 4096 Gaussian weights (default 1024 rows = 16 MiB), per-row
 * scales over two decades.  Each timing is the fastest of >= 3 runs and
 * ~0.4 s (the machine may be shared).  The fast outputs are checked against
 * the reference bytes (serialised forms compared).  Usage: bench_quant_linear [ROWS] */
#include "bench/bench_util.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "quant/int8.h"
#include "quant/linear.h"
#include "quant/nf4.h"

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

enum { K_RTN, K_NF4, K_NF4DQ, K_INT8 };

typedef struct {
    int kind;
    int threads;   /* 0: reference */
    const float *x;
    int64_t rows;
    void *obj;     /* qp_linear / qp_nf4 / qp_int8 */
} qctx;

static int run_quant(void *p)
{
    qctx *c = p;
    int rc;
    switch (c->kind) {
    case K_RTN:
        rc = c->threads ? qp_rtn_quantize(c->obj, c->x, c->threads) : qp_rtn_quantize_ref(c->obj, c->x);
        break;
    case K_NF4:
    case K_NF4DQ:
        rc = c->threads ? qp_nf4_quantize(c->obj, c->x, c->threads) : qp_nf4_quantize_ref(c->obj, c->x);
        break;
    default:
        rc = c->threads ? qp_int8_quantize(c->obj, c->x, c->threads) : qp_int8_quantize_ref(c->obj, c->x);
        break;
    }
    if (rc)
        fprintf(stderr, "bench_quant_linear: %s\n", qp_error_last());
    return rc;
}

static int make_obj(void **out, int kind, int64_t rows)
{
    if (kind == K_RTN) {
        qp_linear_params p = { .bits = 4, .group_size = 128 };
        return qp_linear_new((qp_linear **)out, rows, COLS, &p);
    }
    if (kind == K_NF4 || kind == K_NF4DQ) {
        qp_nf4_params p = { .blocksize = 64, .double_quant = kind == K_NF4DQ };
        return qp_nf4_new((qp_nf4 **)out, rows, COLS, &p);
    }
    return qp_int8_new((qp_int8 **)out, rows, COLS);
}

static void free_obj(void *o, int kind)
{
    if (kind == K_RTN)
        qp_linear_free(o);
    else if (kind == K_INT8)
        qp_int8_free(o);
    else
        qp_nf4_free(o);
}

static int serialize_obj(void *o, int kind, void **buf, size_t *len)
{
    if (kind == K_RTN)
        return qp_linear_serialize(o, buf, len);
    if (kind == K_INT8)
        return qp_int8_serialize(o, buf, len);
    return qp_nf4_serialize(o, buf, len);
}

static double best_time(run_fn fn, void *ctx)
{
    return bench_best_time(fn, ctx, 0.4, 200);
}

/* Same serialised bytes? */
static int same(void *a, void *b, int kind, const char *name, int threads)
{
    void *ba = NULL, *bb = NULL;
    size_t la = 0, lb = 0;
    int ok = serialize_obj(a, kind, &ba, &la) == 0 && serialize_obj(b, kind, &bb, &lb) == 0 && la == lb &&
             memcmp(ba, bb, la) == 0;
    if (!ok)
        fprintf(stderr, "bench_quant_linear: %s fast output at %d thread(s) differs from the reference\n", name,
                threads);
    free(ba);
    free(bb);
    return ok;
}

int main(int argc, char **argv)
{
    const int64_t rows = argc > 1 ? atoll(argv[1]) : 1024;
    if (rows <= 0) {
        fprintf(stderr, "usage: bench_quant_linear [ROWS]\n");
        return 2;
    }
    const size_t n = (size_t)rows * COLS, bytes = n * sizeof(float);
    float *x = malloc(bytes), *copy = malloc(bytes);
    if (!x || !copy)
        return 1;
    for (int64_t r = 0; r < rows; r++) {
        float s = powf(10.0f, -2.0f + 2.0f * (float)r / (float)rows);
        for (int c = 0; c < COLS; c++)
            x[r * COLS + c] = s * gauss();
    }
    memset(copy, 0, bytes);
    bench_copy mc = { copy, x, bytes };
    const double t_copy = best_time(bench_run_memcpy, &mc);
    const double mb = (double)bytes / 1e6;
    printf("input %lld x %d f32 (%.1f MB); memcpy %.0f MB/s\n", (long long)rows, COLS, mb, mb / t_copy);
    printf("%-12s %10s %10s %10s %9s %9s %12s\n", "method", "ref MB/s", "fast@1", "fast@2", "fast1/ref",
           "fast2/ref", "fast2/memcpy");

    static const struct {
        int kind;
        const char *name;
    } methods[] = { { K_RTN, "RTN-4/g128" }, { K_NF4, "NF4/64" }, { K_NF4DQ, "NF4/64+dq" }, { K_INT8, "INT8/chan" } };
    int status = 0;
    for (size_t i = 0; i < sizeof methods / sizeof methods[0] && !status; i++) {
        const int kind = methods[i].kind;
        void *ref = NULL, *fast = NULL;
        if (make_obj(&ref, kind, rows) || make_obj(&fast, kind, rows)) {
            fprintf(stderr, "bench_quant_linear: %s\n", qp_error_last());
            return 1;
        }
        qctx c = { kind, 0, x, rows, ref };
        const double t_ref = best_time(run_quant, &c);
        c.obj = fast;
        c.threads = 1;
        const double t_f1 = best_time(run_quant, &c);
        if (t_ref < 0 || t_f1 < 0 || !same(ref, fast, kind, methods[i].name, 1))
            status = 1;
        c.threads = 2;
        const double t_f2 = status ? -1 : best_time(run_quant, &c);
        if (!status && (t_f2 < 0 || !same(ref, fast, kind, methods[i].name, 2)))
            status = 1;
        if (!status)
            printf("%-12s %10.0f %10.0f %10.0f %8.2fx %8.2fx %11.3fx\n", methods[i].name, mb / t_ref, mb / t_f1,
                   mb / t_f2, t_ref / t_f1, t_ref / t_f2, t_copy / t_f2);
        free_obj(ref, kind);
        free_obj(fast, kind);
    }
    free(x);
    free(copy);
    return status;
}
