/* bitsandbytes NF4 (quant/nf4.h): levels, bnb's decision tree and dynamic
 * 8-bit map, the reference block quantizer, an AVX2 + threaded fast path
 * with the same bytes, double quantization, dequantization and the
 * serialised form.
 *
 * Shapes: x f32 [n] (a [rows, cols] weight flattened); codes u8 [(n+1)/2];
 * absmax f32 [n_blocks]; qabsmax u8 [n_blocks]; absmax2 f32 [n_blocks2]. */
#include "quant/nf4.h"

#include "common/alloc.h"
#include "common/error.h"
#include "quant/linear_impl.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#define NF4_ZERO_CODE 7     /* NF4 level 0.0 */
#define DYN_ZERO_CODE 127   /* dynamic-map entry 0.0 */
#define DQ_BLOCK 256        /* bnb quantizes the absmax in blocks of 256 */

struct qp_nf4 {
    int64_t rows, cols, n, n_blocks, n_blocks2;
    int blocksize, dq;
    uint8_t *codes;      /* [(n+1)/2] */
    float *absmax;       /* [n_blocks] what dequantization uses: raw, or recovered under dq */
    uint8_t *qabsmax;    /* [n_blocks] dq only */
    float *absmax2;      /* [n_blocks2] dq only */
    float offset;
};

static const float NF4_LEVELS[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
};

/* bnb's tree thresholds (midpoints of adjacent levels, as its f32 literals), ascending. */
static const float NF4_THRESH[15] = {
    -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
    -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
    0.1202552504837513f, 0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f,
    0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f,
};

const float *qp_nf4_levels(void)
{
    return NF4_LEVELS;
}

/* bnb's dQuantizeNF4, node for node (strict >: a tie takes the lower code). */
uint8_t qp_nf4_code(float x)
{
    const float *t = NF4_THRESH;
    if (x > t[7]) {
        if (x > t[11]) {
            if (x > t[13])
                return x > t[14] ? 15 : 14;
            return x > t[12] ? 13 : 12;
        }
        if (x > t[9])
            return x > t[10] ? 11 : 10;
        return x > t[8] ? 9 : 8;
    }
    if (x > t[3]) {
        if (x > t[5])
            return x > t[6] ? 7 : 6;
        return x > t[4] ? 5 : 4;
    }
    if (x > t[1])
        return x > t[2] ? 3 : 2;
    return x > t[0] ? 1 : 0;
}

/* ---- bnb's signed dynamic map -------------------------------------------- */

static float dyn_map[256];
static pthread_once_t dyn_once = PTHREAD_ONCE_INIT;

/* create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): for
 * exponent i = 0..6, 2^i + 1 boundaries linspace(0.1, 1) in f32 — computed
 * like torch's kernel as start + step·k for the first half and
 * end − step·(n−1−k) for the rest, each a fused multiply-add (that is what
 * reproduces bnb's stored map bit for bit) — their pairwise means (b + b')/2,
 * times 10^(i−6) as an f32 factor, with both signs; then 0 and 1; sorted. */
static void dyn_build(void)
{
    float d[256];
    int k = 0;
    for (int i = 0; i < 7; i++) {
        const int n = (1 << i) + 1, half = n / 2;
        const float start = 0.1f, end = 1.0f, step = (end - start) / (float)(n - 1);
        const float scale = (float)pow(10.0, (double)(i - 6));
        float b[65];
        for (int t = 0; t < n; t++)
            b[t] = t < half ? fmaf(step, (float)t, start) : fmaf(-step, (float)(n - 1 - t), end);
        for (int t = 0; t < n - 1; t++) {
            float m = (b[t] + b[t + 1]) / 2.0f;
            d[k++] = scale * m;
            d[k++] = -(scale * m);
        }
    }
    d[k++] = 0.0f;
    d[k++] = 1.0f;
    /* insertion sort: 256 values, once */
    for (int a = 1; a < 256; a++) {
        float v = d[a];
        int j = a - 1;
        while (j >= 0 && d[j] > v) {
            d[j + 1] = d[j];
            j--;
        }
        d[j + 1] = v;
    }
    memcpy(dyn_map, d, sizeof d);
}

const float *qp_nf4_dynamic_map(void)
{
    pthread_once(&dyn_once, dyn_build);
    return dyn_map;
}

/* bnb's dQuantize<0> (kernels.cu): a 7-step bisection from the middle of the
 * map, then the nearer of the last two pivots by a midpoint test. */
uint8_t qp_nf4_dynamic_code(float x)
{
    const float *code = qp_nf4_dynamic_map();
    int pivot = 127, upper_pivot = 255, lower_pivot = 0;
    float lower = -1.0f, upper = 1.0f;
    float val = code[pivot];
    for (int i = 64; i > 0; i >>= 1) {
        if (x > val) {
            lower_pivot = pivot;
            lower = val;
            pivot += i;
        } else {
            upper_pivot = pivot;
            upper = val;
            pivot -= i;
        }
        val = code[pivot];
    }
    if (upper_pivot == 255)
        upper = code[upper_pivot];
    if (lower_pivot == 0)
        lower = code[lower_pivot];
    if (x > val) {
        float midpoint = (upper + val) * 0.5f;
        return (uint8_t)(x > midpoint ? upper_pivot : pivot);
    }
    float midpoint = (lower + val) * 0.5f;
    return (uint8_t)(x < midpoint ? lower_pivot : pivot);
}

/* ---- object ---------------------------------------------------------------- */

static int valid_blocksize(int b)
{
    return b == 64 || b == 128 || b == 256 || b == 512 || b == 1024 || b == 2048 || b == 4096;
}

int qp_nf4_new(qp_nf4 **out, int64_t rows, int64_t cols, const qp_nf4_params *p)
{
    *out = NULL;
    int bs = p && p->blocksize ? p->blocksize : 64;
    if (!valid_blocksize(bs))
        return qp_error_set(QP_EUSAGE, "nf4: blocksize %d is not supported (use 64, 128, 256, 512, 1024, 2048 or 4096)", bs);
    if (rows < 1 || cols < 1 || rows > INT64_MAX / 2 / cols)
        return qp_error_set(QP_EUSAGE, "weight [%lld x %lld]: nf4 needs at least one row and one column",
                            (long long)rows, (long long)cols);
    qp_nf4 *q = qp_xcalloc(1, sizeof *q);
    q->rows = rows;
    q->cols = cols;
    q->n = rows * cols;
    q->blocksize = bs;
    q->dq = p && p->double_quant;
    q->n_blocks = qp_lin_nchunks(q->n, bs);
    q->n_blocks2 = q->dq ? qp_lin_nchunks(q->n_blocks, DQ_BLOCK) : 0;
    q->codes = qp_xcalloc((size_t)((q->n + 1) / 2), 1);
    q->absmax = qp_xcalloc((size_t)q->n_blocks, sizeof *q->absmax);
    if (q->dq) {
        q->qabsmax = qp_xcalloc((size_t)q->n_blocks, 1);
        q->absmax2 = qp_xcalloc((size_t)q->n_blocks2, sizeof *q->absmax2);
    }
    *out = q;
    return 0;
}

void qp_nf4_free(qp_nf4 *q)
{
    if (!q)
        return;
    free(q->codes);
    free(q->absmax);
    free(q->qabsmax);
    free(q->absmax2);
    free(q);
}

void qp_nf4_view_of(const qp_nf4 *q, qp_nf4_view *v)
{
    *v = (qp_nf4_view){
        .rows = q->rows, .cols = q->cols, .n = q->n, .blocksize = q->blocksize, .double_quant = q->dq,
        .n_blocks = q->n_blocks, .n_blocks2 = q->n_blocks2, .codes = q->codes,
        .absmax = q->dq ? NULL : q->absmax, .qabsmax = q->qabsmax, .absmax2 = q->absmax2,
        .offset = q->offset,
    };
}

float qp_nf4_block_absmax(const qp_nf4 *q, int64_t b)
{
    return q->absmax[b];
}

double qp_nf4_bits_per_weight(const qp_nf4 *q)
{
    double bits = 4.0 * (double)q->n;
    if (q->dq)
        bits += 8.0 * (double)q->n_blocks + 32.0 * (double)q->n_blocks2 + 32.0;
    else
        bits += 32.0 * (double)q->n_blocks;
    return bits / (double)q->n;
}

/* ---- quantization ------------------------------------------------------------ */

static int report_nonfinite(const qp_nf4 *q, int64_t i)
{
    return qp_error_set(QP_EUSAGE, "weight [%lld x %lld]: row %lld, column %lld: weight is not finite; fix the checkpoint",
                        (long long)q->rows, (long long)q->cols, (long long)(i / q->cols), (long long)(i % q->cols));
}

/* Block b of the reference: absmax, then codes by bnb's tree. */
static void block_ref(qp_nf4 *q, const float *x, int64_t b)
{
    const int64_t i0 = b * q->blocksize;
    const int64_t i1 = i0 + q->blocksize < q->n ? i0 + q->blocksize : q->n;
    float amax = 0.0f;
    for (int64_t i = i0; i < i1; i++)
        amax = fmaxf(amax, fabsf(x[i]));
    q->absmax[b] = amax;
    const float inv = 1.0f / amax;
    for (int64_t i = i0; i < i1; i += 2) {
        int hi = amax == 0.0f ? NF4_ZERO_CODE : qp_nf4_code(x[i] * inv);
        int lo = i + 1 >= i1 ? NF4_ZERO_CODE : amax == 0.0f ? NF4_ZERO_CODE : qp_nf4_code(x[i + 1] * inv);
        q->codes[i / 2] = (uint8_t)(hi << 4 | lo);
    }
}

/* Offset, 8-bit codes of the centred absmax, absmax2; then absmax[] holds
 * the recovered values that dequantization uses. */
static void double_quant(qp_nf4 *q)
{
    double sum = 0.0;
    for (int64_t b = 0; b < q->n_blocks; b++)
        sum += (double)q->absmax[b];
    const float offset = (float)(sum / (double)q->n_blocks);
    const float *map = qp_nf4_dynamic_map();
    q->offset = offset;
    for (int64_t k = 0; k < q->n_blocks2; k++) {
        const int64_t b0 = k * DQ_BLOCK;
        const int64_t b1 = b0 + DQ_BLOCK < q->n_blocks ? b0 + DQ_BLOCK : q->n_blocks;
        float amax = 0.0f;
        for (int64_t b = b0; b < b1; b++)
            amax = fmaxf(amax, fabsf(q->absmax[b] - offset));
        q->absmax2[k] = amax;
        const float inv = 1.0f / amax;
        for (int64_t b = b0; b < b1; b++) {
            const float c = q->absmax[b] - offset;
            q->qabsmax[b] = amax == 0.0f ? DYN_ZERO_CODE : qp_nf4_dynamic_code(c * inv);
        }
        for (int64_t b = b0; b < b1; b++)
            q->absmax[b] = map[q->qabsmax[b]] * amax + offset;
    }
}

int qp_nf4_quantize_ref(qp_nf4 *q, const float *w)
{
    if (!q || !w)
        return qp_error_set(QP_EUSAGE, "nf4: no weight given");
    for (int64_t i = 0; i < q->n; i++)
        if (!isfinite(w[i]))
            return report_nonfinite(q, i);
    for (int64_t b = 0; b < q->n_blocks; b++)
        block_ref(q, w, b);
    if (q->dq)
        double_quant(q);
    return 0;
}

#if defined(__AVX2__)
/* 64 values -> 32 packed bytes: x · inv, code = #{thresholds < y}. */
static inline void block64_avx2(uint8_t *out, const float *x, __m256 inv)
{
    __m256i c[8];
    for (int j = 0; j < 8; j++) {
        __m256 y = _mm256_mul_ps(_mm256_loadu_ps(x + 8 * j), inv);
        __m256i cnt = _mm256_setzero_si256();
        for (int t = 0; t < 15; t++) {
            __m256 gt = _mm256_cmp_ps(y, _mm256_set1_ps(NF4_THRESH[t]), _CMP_GT_OQ);
            cnt = _mm256_sub_epi32(cnt, _mm256_castps_si256(gt));
        }
        c[j] = cnt;
    }
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const __m256i lo8 = _mm256_set1_epi16(0x00FF);
    __m256i nib[2];
    for (int h = 0; h < 2; h++) {
        /* 32 int32 codes -> 32 bytes in element order */
        __m256i b = _mm256_packus_epi16(_mm256_packus_epi32(c[4 * h], c[4 * h + 1]),
                                        _mm256_packus_epi32(c[4 * h + 2], c[4 * h + 3]));
        b = _mm256_permutevar8x32_epi32(b, perm);
        /* 16-bit lane k holds (code 2k) | (code 2k+1) << 8 -> (code 2k) << 4 | code 2k+1 */
        nib[h] = _mm256_or_si256(_mm256_slli_epi16(_mm256_and_si256(b, lo8), 4), _mm256_srli_epi16(b, 8));
    }
    __m256i packed = _mm256_packus_epi16(nib[0], nib[1]);
    packed = _mm256_permute4x64_epi64(packed, 0xD8);
    _mm256_storeu_si256((__m256i *)out, packed);
}
#endif

typedef struct {
    qp_nf4 *q;
    const float *w;
    int64_t *bad;   /* [n_chunks]: first non-finite index */
} nf4_job;

/* Blocks [b0, b1): a chunk first checks its values, then quantizes. */
static int nf4_chunk(void *ctx, int64_t b0, int64_t b1, int64_t c)
{
    nf4_job *j = ctx;
    qp_nf4 *q = j->q;
    const float *x = j->w;
    const int64_t bs = q->blocksize;
    const int64_t i0 = b0 * bs, i1 = b1 * bs < q->n ? b1 * bs : q->n;
    for (int64_t i = i0; i < i1; i++) {
        if (!isfinite(x[i])) {
            j->bad[c] = i;
            return 1;
        }
    }
    for (int64_t b = b0; b < b1; b++) {
#if defined(__AVX2__)
        const int64_t s = b * bs;
        if (s + bs <= q->n) {
            const __m256 sign = _mm256_set1_ps(-0.0f);
            __m256 m = _mm256_setzero_ps();
            for (int64_t i = s; i < s + bs; i += 8)
                m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
            __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            h = _mm_max_ps(h, _mm_movehl_ps(h, h));
            h = _mm_max_ss(h, _mm_movehdup_ps(h));
            const float amax = _mm_cvtss_f32(h);
            q->absmax[b] = amax;
            if (amax == 0.0f) {
                memset(q->codes + s / 2, NF4_ZERO_CODE << 4 | NF4_ZERO_CODE, (size_t)bs / 2);
                continue;
            }
            const __m256 inv = _mm256_set1_ps(1.0f / amax);
            for (int64_t i = s; i < s + bs; i += 64)
                block64_avx2(q->codes + i / 2, x + i, inv);
            continue;
        }
#endif
        block_ref(q, x, b);
    }
    return 0;
}

int qp_nf4_quantize(qp_nf4 *q, const float *w, int n_threads)
{
    if (!q || !w)
        return qp_error_set(QP_EUSAGE, "nf4: no weight given");
    /* ~64K values per chunk, whatever the thread count */
    const int64_t chunk = 65536 / q->blocksize > 0 ? 65536 / q->blocksize : 1;
    nf4_job j = { .q = q, .w = w, .bad = qp_xcalloc((size_t)qp_lin_nchunks(q->n_blocks, chunk), sizeof *j.bad) };
    int64_t first = qp_lin_parallel(q->n_blocks, chunk, n_threads, nf4_chunk, &j);
    int rc = 0;
    if (first >= 0)
        rc = report_nonfinite(q, j.bad[first]);
    else if (q->dq)
        double_quant(q);
    free(j.bad);
    return rc;
}

/* ---- dequantization ------------------------------------------------------------ */

int qp_nf4_dequantize(const qp_nf4 *q, float *w)
{
    if (!q || !w)
        return qp_error_set(QP_EUSAGE, "nf4: no buffer given");
    for (int64_t b = 0; b < q->n_blocks; b++) {
        const float a = q->absmax[b];
        const int64_t i0 = b * q->blocksize;
        const int64_t i1 = i0 + q->blocksize < q->n ? i0 + q->blocksize : q->n;
        for (int64_t i = i0; i < i1; i += 2) {
            const uint8_t byte = q->codes[i / 2];
            w[i] = NF4_LEVELS[byte >> 4] * a;
            if (i + 1 < i1)
                w[i + 1] = NF4_LEVELS[byte & 0x0F] * a;
        }
    }
    return 0;
}

/* ---- serialisation ---------------------------------------------------------------- */

#define NF4_MAGIC "QPNF4BNB"
#define NF4_VERSION 1u
#define NF4_HEADER 56u

static uint64_t payload_size(const qp_nf4 *q)
{
    uint64_t p = (uint64_t)(q->n + 1) / 2;
    if (q->dq)
        p += (uint64_t)q->n_blocks + 4u * (uint64_t)q->n_blocks2;
    else
        p += 4u * (uint64_t)q->n_blocks;
    return p;
}

int qp_nf4_serialize(const qp_nf4 *q, void **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    const uint64_t payload = payload_size(q);
    uint8_t *b = qp_xmalloc(NF4_HEADER + (size_t)payload);
    memset(b, 0, NF4_HEADER);
    memcpy(b, NF4_MAGIC, 8);
    qp_lin_put_u32(b + 8, NF4_VERSION);
    qp_lin_put_u32(b + 12, (uint32_t)q->blocksize);
    qp_lin_put_u64(b + 16, (uint64_t)q->rows);
    qp_lin_put_u64(b + 24, (uint64_t)q->cols);
    qp_lin_put_u32(b + 32, q->dq ? 1u : 0u);
    qp_lin_put_f32s(b + 36, &q->offset, 1);
    qp_lin_put_u64(b + 40, payload);
    uint8_t *p = b + NF4_HEADER;
    const size_t nc = (size_t)(q->n + 1) / 2;
    memcpy(p, q->codes, nc);
    p += nc;
    if (q->dq) {
        memcpy(p, q->qabsmax, (size_t)q->n_blocks);
        p += q->n_blocks;
        qp_lin_put_f32s(p, q->absmax2, (size_t)q->n_blocks2);
    } else {
        qp_lin_put_f32s(p, q->absmax, (size_t)q->n_blocks);
    }
    qp_lin_put_u64(b + 48, qp_lin_checksum(b + NF4_HEADER, (size_t)payload));
    *out = b;
    *len = NF4_HEADER + (size_t)payload;
    return 0;
}

static int nonneg_finite(const float *v, int64_t n, int64_t *bad)
{
    for (int64_t i = 0; i < n; i++) {
        if (!(v[i] >= 0.0f) || !isfinite(v[i])) {
            *bad = i;
            return 0;
        }
    }
    return 1;
}

int qp_nf4_deserialize(qp_nf4 **out, const void *buf, size_t len, const char *what)
{
    *out = NULL;
    const uint8_t *b = buf;
    qp_nf4 *q = NULL;
    int rc = qp_lin_check_head(b, len, what, NF4_MAGIC, NF4_VERSION, NF4_HEADER, "nf4 weight");
    if (rc)
        return rc;
    const uint32_t bs = qp_lin_get_u32(b + 12);
    const int64_t rows = (int64_t)qp_lin_get_u64(b + 16), cols = (int64_t)qp_lin_get_u64(b + 24);
    const uint32_t flags = qp_lin_get_u32(b + 32);
    float offset;
    qp_lin_get_f32s(&offset, b + 36, 1);
    const uint64_t payload = qp_lin_get_u64(b + 40), checksum = qp_lin_get_u64(b + 48);
    uint64_t n;
    if (!valid_blocksize((int)(bs > 4096 ? 0 : bs)) || flags > 1 || rows < 1 || cols < 1 ||
        qp_lin_mul_ok(&n, (uint64_t)rows, (uint64_t)cols) || n > (uint64_t)INT64_MAX / 2 ||
        !isfinite(offset) || (!(flags & 1) && offset != 0.0f))
        return qp_error_set(QP_ECORRUPT, "%s: inconsistent nf4 header (blocksize %u, [%lld x %lld], flags 0x%x)",
                            what, bs, (long long)rows, (long long)cols, flags);
    qp_nf4_params p = { .blocksize = (int)bs, .double_quant = (int)(flags & 1) };
    /* the expected payload from the shape alone, before allocating anything */
    const uint64_t nb = (n + bs - 1) / bs, nb2 = (nb + DQ_BLOCK - 1) / DQ_BLOCK;
    const uint64_t expect = (n + 1) / 2 + ((flags & 1) ? nb + 4 * nb2 : 4 * nb);
    if (payload != expect)
        return qp_error_set(QP_ECORRUPT, "%s: inconsistent nf4 header: [%lld x %lld] at blocksize %u needs %llu payload bytes, the header says %llu",
                            what, (long long)rows, (long long)cols, bs, (unsigned long long)expect,
                            (unsigned long long)payload);
    rc = qp_lin_check_payload(b, len, what, NF4_HEADER, payload, checksum);
    if (rc)
        return rc;
    rc = qp_nf4_new(&q, rows, cols, &p);
    if (rc)
        return rc;
    const uint8_t *s = b + NF4_HEADER;
    const size_t nc = (size_t)(n + 1) / 2;
    memcpy(q->codes, s, nc);
    s += nc;
    int64_t bad;
    if ((n & 1) && (q->codes[nc - 1] & 0x0F) != NF4_ZERO_CODE) {
        rc = qp_error_set(QP_ECORRUPT, "%s: the padding nibble of the last byte is %d, not 7 (nf4 0.0)", what,
                          q->codes[nc - 1] & 0x0F);
        goto done;
    }
    if (q->dq) {
        memcpy(q->qabsmax, s, (size_t)q->n_blocks);
        s += q->n_blocks;
        qp_lin_get_f32s(q->absmax2, s, (size_t)q->n_blocks2);
        if (!nonneg_finite(q->absmax2, q->n_blocks2, &bad)) {
            rc = qp_error_set(QP_ECORRUPT, "%s: absmax2[%lld] = %g is not a finite value >= 0", what, (long long)bad,
                              (double)q->absmax2[bad]);
            goto done;
        }
        q->offset = offset;
        const float *map = qp_nf4_dynamic_map();
        for (int64_t k = 0; k < q->n_blocks; k++)
            q->absmax[k] = map[q->qabsmax[k]] * q->absmax2[k / DQ_BLOCK] + offset;
        /* a recovered absmax may be slightly negative (a block far below the
         * mean, e.g. all zeros): bnb dequantizes with it as it is */
        for (int64_t k = 0; k < q->n_blocks; k++) {
            if (!isfinite(q->absmax[k])) {
                rc = qp_error_set(QP_ECORRUPT, "%s: block %lld: the recovered absmax is not finite", what,
                                  (long long)k);
                goto done;
            }
        }
    } else {
        qp_lin_get_f32s(q->absmax, s, (size_t)q->n_blocks);
        if (!nonneg_finite(q->absmax, q->n_blocks, &bad)) {
            rc = qp_error_set(QP_ECORRUPT, "%s: absmax[%lld] = %g is not a finite value >= 0", what, (long long)bad,
                              (double)q->absmax[bad]);
            goto done;
        }
    }
done:
    if (rc)
        qp_nf4_free(q);
    else
        *out = q;
    return rc;
}
