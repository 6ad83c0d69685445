/* INT8 per-channel absmax (quant/int8.h): reference, AVX2 + threaded fast
 * path with the same bytes, dequantization, serialised form.
 *
 * Shapes: w f32 [rows, cols]; codes i8 [rows, cols]; absmax f32 [rows]. */
#include "quant/int8.h"

#include "common/alloc.h"
#include "common/error.h"
#include "quant/linear_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

struct qp_int8 {
    int64_t rows, cols;
    int8_t *codes;
    float *absmax;
};

/* bnb's 7.874015718698502e-3, the f32 nearest 1/127 */
#define INV127 ((float)(1.0 / 127.0))

int qp_int8_new(qp_int8 **out, int64_t rows, int64_t cols)
{
    *out = NULL;
    if (rows < 1 || cols < 1 || rows > INT64_MAX / cols)
        return qp_error_set(QP_EUSAGE, "weight [%lld x %lld]: int8 needs at least one row and one column",
                            (long long)rows, (long long)cols);
    qp_int8 *q = qp_xcalloc(1, sizeof *q);
    q->rows = rows;
    q->cols = cols;
    q->codes = qp_xcalloc((size_t)(rows * cols), 1);
    q->absmax = qp_xcalloc((size_t)rows, sizeof *q->absmax);
    *out = q;
    return 0;
}

void qp_int8_free(qp_int8 *q)
{
    if (!q)
        return;
    free(q->codes);
    free(q->absmax);
    free(q);
}

void qp_int8_view_of(const qp_int8 *q, qp_int8_view *v)
{
    *v = (qp_int8_view){ .rows = q->rows, .cols = q->cols, .codes = q->codes, .absmax = q->absmax };
}

double qp_int8_bits_per_weight(const qp_int8 *q)
{
    return 8.0 + 32.0 / (double)q->cols;
}

static int report_nonfinite(const qp_int8 *q, int64_t r, int64_t c)
{
    return qp_error_set(QP_EUSAGE, "weight [%lld x %lld]: row %lld, column %lld: weight is not finite; fix the checkpoint",
                        (long long)q->rows, (long long)q->cols, (long long)r, (long long)c);
}

/* 127/absmax, and a power-of-two pre-scale of the row for an absmax so
 * small (below ~2^-121) that 127/absmax overflows f32: x·2^64 and
 * absmax·2^64 are exact, and the codes stay round(127·x/absmax). */
static inline float row_factor(float amax, float *pre)
{
    float f = 127.0f / amax;
    *pre = 1.0f;
    if (isinf(f)) {
        *pre = 0x1p64f;
        f = 127.0f / (amax * 0x1p64f);
    }
    return f;
}

static inline int8_t code_of(float x, float pre, float f)
{
    float v = rintf((x * pre) * f);
    v = v < -127.0f ? -127.0f : v;
    v = v > 127.0f ? 127.0f : v;
    return (int8_t)v;
}

/* Row r of the reference (finite input). */
static void row_ref(qp_int8 *q, const float *x, int64_t r)
{
    float amax = 0.0f;
    for (int64_t c = 0; c < q->cols; c++)
        amax = fmaxf(amax, fabsf(x[c]));
    q->absmax[r] = amax;
    int8_t *out = q->codes + r * q->cols;
    if (amax == 0.0f) {
        memset(out, 0, (size_t)q->cols);
        return;
    }
    float pre;
    const float f = row_factor(amax, &pre);
    for (int64_t c = 0; c < q->cols; c++)
        out[c] = code_of(x[c], pre, f);
}

int qp_int8_quantize_ref(qp_int8 *q, const float *w)
{
    if (!q || !w)
        return qp_error_set(QP_EUSAGE, "int8: no weight given");
    for (int64_t i = 0; i < q->rows * q->cols; i++)
        if (!isfinite(w[i]))
            return report_nonfinite(q, i / q->cols, i % q->cols);
    for (int64_t r = 0; r < q->rows; r++)
        row_ref(q, w + r * q->cols, r);
    return 0;
}

#if defined(__AVX2__)
/* The reference row with 32 lanes per step: max|x| (exact in any order),
 * x · f, round half even, clamp, narrow to i8 in element order. */
static void row_avx2(qp_int8 *q, const float *x, int64_t r)
{
    const int64_t n = q->cols;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_setzero_ps();
    int64_t c = 0;
    for (; c + 8 <= n; c += 8)
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + c)));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    float amax = _mm_cvtss_f32(h);
    for (; c < n; c++)
        amax = fmaxf(amax, fabsf(x[c]));
    q->absmax[r] = amax;
    int8_t *out = q->codes + r * n;
    if (amax == 0.0f) {
        memset(out, 0, (size_t)n);
        return;
    }
    float pre;
    const float f = row_factor(amax, &pre);
    const __m256 vpre = _mm256_set1_ps(pre);
    const __m256 vf = _mm256_set1_ps(f), lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    c = 0;
    for (; c + 32 <= n; c += 32) {
        __m256i v[4];
        for (int j = 0; j < 4; j++) {
            __m256 y = _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + c + 8 * j), vpre), vf);
            y = _mm256_round_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            y = _mm256_min_ps(_mm256_max_ps(y, lo), hi);
            v[j] = _mm256_cvtps_epi32(y);
        }
        __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
        _mm256_storeu_si256((__m256i *)(out + c), _mm256_permutevar8x32_epi32(b, perm));
    }
    for (; c < n; c++)
        out[c] = code_of(x[c], pre, f);
}
#endif

typedef struct {
    qp_int8 *q;
    const float *w;
    int64_t *bad;   /* [n_chunks]: first non-finite index */
} int8_job;

static int int8_chunk(void *ctx, int64_t r0, int64_t r1, int64_t c)
{
    int8_job *j = ctx;
    qp_int8 *q = j->q;
    const float *x = j->w + r0 * q->cols;
    for (int64_t i = 0; i < (r1 - r0) * q->cols; i++) {
        if (!isfinite(x[i])) {
            j->bad[c] = r0 * q->cols + i;
            return 1;
        }
    }
    for (int64_t r = r0; r < r1; r++) {
#if defined(__AVX2__)
        row_avx2(q, j->w + r * q->cols, r);
#else
        row_ref(q, j->w + r * q->cols, r);
#endif
    }
    return 0;
}

int qp_int8_quantize(qp_int8 *q, const float *w, int n_threads)
{
    if (!q || !w)
        return qp_error_set(QP_EUSAGE, "int8: no weight given");
    const int64_t chunk = q->cols >= 65536 ? 1 : 65536 / q->cols;
    int8_job j = { .q = q, .w = w, .bad = qp_xcalloc((size_t)qp_lin_nchunks(q->rows, chunk), sizeof *j.bad) };
    int64_t first = qp_lin_parallel(q->rows, chunk, n_threads, int8_chunk, &j);
    int rc = first >= 0 ? report_nonfinite(q, j.bad[first] / q->cols, j.bad[first] % q->cols) : 0;
    free(j.bad);
    return rc;
}

int qp_int8_dequantize(const qp_int8 *q, float *w)
{
    if (!q || !w)
        return qp_error_set(QP_EUSAGE, "int8: no buffer given");
    for (int64_t r = 0; r < q->rows; r++) {
        const float a = q->absmax[r];
        const int8_t *c = q->codes + r * q->cols;
        float *out = w + r * q->cols;
        for (int64_t k = 0; k < q->cols; k++)
            out[k] = ((float)c[k] * a) * INV127;
    }
    return 0;
}

/* ---- serialisation ---------------------------------------------------------- */

#define INT8_MAGIC "QPINT8RW"
#define INT8_VERSION 1u
#define INT8_HEADER 48u

int qp_int8_serialize(const qp_int8 *q, void **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    const size_t n = (size_t)(q->rows * q->cols), payload = n + 4 * (size_t)q->rows;
    uint8_t *b = qp_xmalloc(INT8_HEADER + payload);
    memset(b, 0, INT8_HEADER);
    memcpy(b, INT8_MAGIC, 8);
    qp_lin_put_u32(b + 8, INT8_VERSION);
    qp_lin_put_u64(b + 16, (uint64_t)q->rows);
    qp_lin_put_u64(b + 24, (uint64_t)q->cols);
    qp_lin_put_u64(b + 32, (uint64_t)payload);
    memcpy(b + INT8_HEADER, q->codes, n);
    qp_lin_put_f32s(b + INT8_HEADER + n, q->absmax, (size_t)q->rows);
    qp_lin_put_u64(b + 40, qp_lin_checksum(b + INT8_HEADER, payload));
    *out = b;
    *len = INT8_HEADER + payload;
    return 0;
}

int qp_int8_deserialize(qp_int8 **out, const void *buf, size_t len, const char *what)
{
    *out = NULL;
    const uint8_t *b = buf;
    qp_int8 *q = NULL;
    int rc = qp_lin_check_head(b, len, what, INT8_MAGIC, INT8_VERSION, INT8_HEADER, "int8 weight");
    if (rc)
        return rc;
    const int64_t rows = (int64_t)qp_lin_get_u64(b + 16), cols = (int64_t)qp_lin_get_u64(b + 24);
    const uint64_t payload = qp_lin_get_u64(b + 32), checksum = qp_lin_get_u64(b + 40);
    uint64_t n;
    if (qp_lin_get_u32(b + 12) != 0 || rows < 1 || cols < 1 || qp_lin_mul_ok(&n, (uint64_t)rows, (uint64_t)cols) ||
        n > UINT64_MAX / 2 || payload != n + 4 * (uint64_t)rows)
        return qp_error_set(QP_ECORRUPT, "%s: inconsistent int8 header ([%lld x %lld], %llu payload bytes)", what,
                            (long long)rows, (long long)cols, (unsigned long long)payload);
    rc = qp_lin_check_payload(b, len, what, INT8_HEADER, payload, checksum);
    if (rc)
        return rc;
    rc = qp_int8_new(&q, rows, cols);
    if (rc)
        return rc;
    memcpy(q->codes, b + INT8_HEADER, (size_t)n);
    qp_lin_get_f32s(q->absmax, b + INT8_HEADER + n, (size_t)rows);
    for (int64_t r = 0; r < rows && !rc; r++) {
        const float a = q->absmax[r];
        const int8_t *c = q->codes + r * cols;
        if (!(a >= 0.0f) || !isfinite(a)) {
            rc = qp_error_set(QP_ECORRUPT, "%s: row %lld: absmax %g is not a finite value >= 0", what, (long long)r,
                              (double)a);
            break;
        }
        for (int64_t k = 0; k < cols; k++) {
            if (c[k] == -128 || (a == 0.0f && c[k] != 0)) {
                rc = qp_error_set(QP_ECORRUPT, "%s: row %lld, column %lld: code %d is impossible%s", what,
                                  (long long)r, (long long)k, c[k], a == 0.0f ? " in a row of zeros" : " (range -127..127)");
                break;
            }
        }
    }
    if (rc)
        qp_int8_free(q);
    else
        *out = q;
    return rc;
}
