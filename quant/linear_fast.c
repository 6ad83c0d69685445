/* qp_rtn_quantize: the reference RTN (linear.c) vectorised and threaded.
 *
 * Threads take fixed chunks of rows (the chunk length depends on cols only)
 * and every row's bytes depend on that row alone, so any thread count gives
 * the bytes of qp_rtn_quantize_ref.  The AVX2 row kernel (default g_idx,
 * no mse) does the same f32 operations as the reference, elementwise:
 * min/max (exact in any order), then per element w / s (IEEE division),
 * round-half-even, + z, clamp to [0, maxq] and the integer conversion; the
 * (s, z) fit itself is the shared scalar qp_lin_fit_minmax.  Custom g_idx
 * and the mse search (dominated by powf) use the reference row function.
 *
 * Shapes: w f32 [rows, cols]; codes u8 [rows, cols]; scales/zeros [rows, n_groups]. */
#include "quant/linear.h"

#include "common/alloc.h"
#include "common/error.h"
#include "common/tensor.h"
#include "quant/linear_impl.h"

#include <math.h>
#include <stdlib.h>

#if defined(__AVX2__)
#include <immintrin.h>

/* Index of the first non-finite value of x[n], or -1. */
static int64_t first_nonfinite(const float *x, int64_t n)
{
    const __m256 inf = _mm256_set1_ps(INFINITY);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 a = _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i));
        /* |x| < inf is false for inf and NaN */
        if (_mm256_movemask_ps(_mm256_cmp_ps(a, inf, _CMP_LT_OQ)) != 0xFF)
            break;
    }
    for (; i < n; i++)
        if (!isfinite(x[i]))
            return i;
    return -1;
}

static inline float hmin8(__m256 v)
{
    __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    m = _mm_min_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

static inline float hmax8(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* min and max of x[n] (finite).  A ±0 tie may come back with either sign,
 * which the grid fit does not see (it compares with 0 and negates). */
static void minmax(const float *x, int64_t n, float *mn, float *mx)
{
    int64_t i = 0;
    float lo = x[0], hi = x[0];
    if (n >= 8) {
        __m256 vlo = _mm256_loadu_ps(x), vhi = vlo;
        for (i = 8; i + 8 <= n; i += 8) {
            __m256 v = _mm256_loadu_ps(x + i);
            vlo = _mm256_min_ps(vlo, v);
            vhi = _mm256_max_ps(vhi, v);
        }
        lo = hmin8(vlo);
        hi = hmax8(vhi);
    }
    for (; i < n; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    *mn = lo;
    *mx = hi;
}

/* codes[k] = clamp(round(x[k] / s) + z, 0, maxq) for k < n. */
static void codes_row(uint8_t *codes, const float *x, int64_t n, float s, int z, int maxq)
{
    const __m256 vs = _mm256_set1_ps(s), vz = _mm256_set1_ps((float)z);
    const __m256 v0 = _mm256_setzero_ps(), vmax = _mm256_set1_ps((float)maxq);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    int64_t k = 0;
    for (; k + 32 <= n; k += 32) {
        __m256i qi[4];
        for (int j = 0; j < 4; j++) {
            __m256 q = _mm256_div_ps(_mm256_loadu_ps(x + k + 8 * j), vs);
            q = _mm256_round_ps(q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            q = _mm256_add_ps(q, vz);
            q = _mm256_min_ps(_mm256_max_ps(q, v0), vmax);
            qi[j] = _mm256_cvtps_epi32(q);   /* exact: q is an integer in [0, 255] */
        }
        /* 32 int32 -> 32 u8: the in-lane packs interleave 128-bit halves,
         * the permute restores element order. */
        __m256i p16a = _mm256_packus_epi32(qi[0], qi[1]);
        __m256i p16b = _mm256_packus_epi32(qi[2], qi[3]);
        __m256i p8 = _mm256_packus_epi16(p16a, p16b);
        _mm256_storeu_si256((__m256i *)(codes + k), _mm256_permutevar8x32_epi32(p8, perm));
    }
    for (; k < n; k++)
        codes[k] = qp_linear_code(x[k], s, z, maxq);
}

/* The reference row function for default g_idx without mse, vectorised. */
static int rtn_row_avx2(qp_linear *q, const float *w, int64_t r, qp_lin_fail *f)
{
    int64_t bad = first_nonfinite(w, q->cols);
    if (bad >= 0) {
        *f = (qp_lin_fail){ .kind = QP_LIN_NONFINITE, .row = r, .col = bad };
        return QP_LIN_NONFINITE;
    }
    const int gs = q->group_size;
    for (int64_t g = 0; g < q->n_groups; g++) {
        const float *x = w + g * gs;
        float mn, mx, xmin, xmax;
        uint16_t h;
        uint8_t z;
        minmax(x, gs, &mn, &mx);
        int st = qp_lin_fit_minmax(q->bits, q->sym, mn, mx, &h, &z, &xmin, &xmax);
        if (st) {
            *f = (qp_lin_fail){ .kind = st, .row = r, .group = g, .xmin = xmin, .xmax = xmax };
            return st;
        }
        codes_row(q->codes + r * q->cols + g * gs, x, gs, qp_f16_to_f32(h), z, q->maxq);
        q->scales[r * q->n_groups + g] = h;
        q->zeros[r * q->n_groups + g] = z;
    }
    return QP_LIN_OK;
}
#endif

typedef struct {
    qp_linear *q;
    const float *w;
    qp_lin_fail *fail;   /* [n_chunks] */
} rtn_job;

static int rtn_chunk(void *ctx, int64_t r0, int64_t r1, int64_t c)
{
    rtn_job *j = ctx;
    qp_linear *q = j->q;
#if defined(__AVX2__)
    if (!q->mse && !q->custom_g_idx) {
        for (int64_t r = r0; r < r1; r++)
            if (rtn_row_avx2(q, j->w + r * q->cols, r, &j->fail[c]))
                return 1;
        return 0;
    }
#endif
    float *scratch = qp_xmalloc((size_t)q->group_size * sizeof *scratch);
    int st = 0;
    for (int64_t r = r0; r < r1 && !st; r++)
        st = qp_lin_rtn_row(q, j->w + r * q->cols, r, scratch, &j->fail[c]);
    free(scratch);
    return st != 0;
}

int qp_rtn_quantize(qp_linear *q, const float *w, int n_threads)
{
    if (!q || !w)
        return qp_error_set(QP_EUSAGE, "rtn: no weight given");
    /* ~64K weights per chunk: enough work per chunk, many chunks per thread */
    const int64_t chunk = q->cols >= 65536 ? 1 : 65536 / q->cols;
    const int64_t nch = qp_lin_nchunks(q->rows, chunk);
    rtn_job j = { .q = q, .w = w, .fail = qp_xcalloc((size_t)nch, sizeof *j.fail) };
    int rc = 0;
    int64_t first = qp_lin_parallel(q->rows, chunk, n_threads, rtn_chunk, &j);
    if (first >= 0)
        rc = qp_lin_report(q, &j.fail[first]);
    free(j.fail);
    return rc;
}
