#include "stages/qtensor_ggml.h"

#include "common/alloc.h"
#include "common/error.h"
#include "model/llama_pool.h"
#include "quant/qtypes.h"
#include "stages/qtensor.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* f32 elements per chunk: 256 KB, with the packed rows and one dequantized
 * row well inside a core's L2 */
#define CHUNK_ELEMS ((int64_t)1 << 16)

typedef struct {
    qp_ggml_type t;
    const unsigned char *src;
    qp_dtype dt;
    size_t src_row_bytes, dst_row_bytes;
    int64_t rows, cols, chunk_rows;
    const float *imatrix;
    unsigned char *dst;
    float **scratch;          /* per thread: [chunk_rows * cols + cols] */
    double *err2, *ref2;      /* per chunk */
    int64_t *bad;             /* per chunk: first non-finite element (row-major index in the tensor), -1 none */
    int *failed;              /* per chunk: qp_quantize's own refusal (cannot happen once checked) */
} encode_job;

/* one row's squared error and norm: lane j % 4, then lanes 0+1+2+3.  The
 * four lanes are one vector (GCC vector extensions): each lane adds the
 * same values in the same order as the scalar loop did, and with
 * -ffp-contract=off nothing is fused, so the sums are the same bits on
 * every machine and vector width. */
typedef double f64x4 __attribute__((vector_size(32)));
typedef float f32x4 __attribute__((vector_size(16)));

static void row_sums(const float *w, const float *q, int64_t n, double *e2, double *r2)
{
    f64x4 ev = {0, 0, 0, 0}, rv = {0, 0, 0, 0};
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
        f32x4 wf, qf;
        memcpy(&wf, w + j, sizeof wf);
        memcpy(&qf, q + j, sizeof qf);
        f64x4 wd = __builtin_convertvector(wf, f64x4), qd = __builtin_convertvector(qf, f64x4);
        f64x4 d = wd - qd;
        ev += d * d;
        rv += wd * wd;
    }
    double e[4] = {ev[0], ev[1], ev[2], ev[3]}, r[4] = {rv[0], rv[1], rv[2], rv[3]};
    for (int l = 0; j < n; j++, l++) {
        double d = (double)w[j] - (double)q[j];
        e[l] += d * d;
        r[l] += (double)w[j] * (double)w[j];
    }
    *e2 = ((e[0] + e[1]) + e[2]) + e[3];
    *r2 = ((r[0] + r[1]) + r[2]) + r[3];
}

static void encode_chunk(void *arg, size_t task, int thread)
{
    encode_job *j = arg;
    const int64_t r0 = (int64_t)task * j->chunk_rows;
    const int64_t nr = r0 + j->chunk_rows <= j->rows ? j->chunk_rows : j->rows - r0;
    const int64_t n = nr * j->cols;
    float *w = j->scratch[thread], *back = w + j->chunk_rows * j->cols;
    unsigned char *dst = j->dst + (size_t)r0 * j->dst_row_bytes;
    j->bad[task] = -1;
    j->failed[task] = 0;
    j->err2[task] = j->ref2[task] = 0;
    qp_convert_to_f32(w, j->src + (size_t)r0 * j->src_row_bytes, j->dt, (size_t)n);
    int64_t b = qp_first_nonfinite(w, n);
    if (b >= 0) {
        j->bad[task] = r0 * j->cols + b;
        return;
    }
    if (qp_quantize_prechecked(j->t, w, dst, nr, j->cols, j->imatrix) != 0) {
        j->failed[task] = 1;
        return;
    }
    double e2 = 0, r2 = 0;
    for (int64_t r = 0; r < nr; r++) {
        double re, rr;
        qp_dequantize_row(j->t, dst + (size_t)r * j->dst_row_bytes, back, j->cols);
        row_sums(w + r * j->cols, back, j->cols, &re, &rr);
        e2 += re;
        r2 += rr;
    }
    j->err2[task] = e2;
    j->ref2[task] = r2;
}

int qp_qtensor_ggml_encode(qp_ggml_type t, const void *src, qp_dtype dt, int64_t rows, int64_t cols,
                           const float *imatrix, int n_threads, void *dst, double *err2, double *ref2,
                           const char *what)
{
    int rc = 0;
    qp_pool *pool = NULL;
    *err2 = *ref2 = 0;
    if (rows <= 0 || cols <= 0)
        return 0;
    encode_job j = {.t = t, .src = src, .dt = dt, .src_row_bytes = (size_t)cols * qp_dtype_size(dt),
                    .dst_row_bytes = qp_qtype_row_size(t, cols), .rows = rows, .cols = cols,
                    .imatrix = imatrix, .dst = dst};
    j.chunk_rows = CHUNK_ELEMS / cols > 0 ? CHUNK_ELEMS / cols : 1;
    if (j.chunk_rows > rows)
        j.chunk_rows = rows;
    size_t n_chunks = (size_t)((rows + j.chunk_rows - 1) / j.chunk_rows);
    if (n_threads < 1)
        n_threads = qp_pool_default_threads();
    if ((size_t)n_threads > n_chunks)
        n_threads = (int)n_chunks;
    if ((rc = qp_pool_new(&pool, n_threads)) != 0)
        return rc;
    j.scratch = qp_xcalloc((size_t)n_threads, sizeof(*j.scratch));
    for (int k = 0; k < n_threads; k++)
        j.scratch[k] = qp_xmalloc((size_t)(j.chunk_rows + 1) * (size_t)cols * sizeof(float));
    j.err2 = qp_xmalloc(n_chunks * sizeof(double));
    j.ref2 = qp_xmalloc(n_chunks * sizeof(double));
    j.bad = qp_xmalloc(n_chunks * sizeof(int64_t));
    j.failed = qp_xmalloc(n_chunks * sizeof(int));
    qp_pool_run(pool, n_chunks, encode_chunk, &j);
    for (size_t c = 0; c < n_chunks && rc == 0; c++) {
        if (j.bad[c] >= 0) {
            int64_t i = j.bad[c];
            float v;
            qp_convert_to_f32(&v, j.src + (size_t)i * qp_dtype_size(dt), dt, 1);
            rc = qp_error_set(QP_EFORMAT,
                              "%s: row %lld, column %lld is %s; fix the checkpoint (quantization needs finite "
                              "weights)",
                              what, (long long)(i / cols), (long long)(i % cols), isnan(v) ? "NaN" : "infinite");
        } else if (j.failed[c]) {
            /* the refusal again on this thread, for its message */
            int64_t r0 = (int64_t)c * j.chunk_rows, nr = r0 + j.chunk_rows <= rows ? j.chunk_rows : rows - r0;
            float *w = j.scratch[0];
            qp_convert_to_f32(w, j.src + (size_t)r0 * j.src_row_bytes, dt, (size_t)(nr * cols));
            rc = qp_quantize(t, w, j.dst + (size_t)r0 * j.dst_row_bytes, nr, cols, imatrix, 1);
            if (rc == 0)
                rc = qp_error_set(QP_ERROR, "%s: quantizing rows %lld.. failed on a worker thread", what,
                                  (long long)r0);
            else
                qp_error_prefix("%s", what);
        } else {
            *err2 += j.err2[c];
            *ref2 += j.ref2[c];
        }
    }
    for (int k = 0; k < n_threads; k++)
        free(j.scratch[k]);
    free(j.scratch);
    free(j.err2);
    free(j.ref2);
    free(j.bad);
    free(j.failed);
    qp_pool_free(pool);
    return rc;
}
