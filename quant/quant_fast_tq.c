/* Fast TQ1_0 / TQ2_0, byte-identical to qp_tq1_0_ref / qp_tq2_0_ref
 * (ggml_tquants.c).  The reference calls lroundf once per weight; here
 * the trits of a super-block come from two compares on x·id instead:
 * |x·id| <= 1 + 2^-23 whenever 1/d is finite (|x| <= d), and on that range
 * lroundf(v) = (v >= 0.5) − (v <= −0.5) exactly, halves included (away
 * from zero).  The largest magnitude is a max, exact in any order.  A
 * super-block whose 1/d overflows (d subnormal) goes to the reference, the
 * only place its degenerate lroundf(±inf / NaN) results are defined.
 * Packing works on the trit bytes: TQ2_0 with shifts and ors in AVX2,
 * TQ1_0 with a table of ceil(q·256/243) for the base-3 numbers.
 *
 * Shapes: x[n] f32, n % 256 == 0 -> n/256 blocks of 54 / 66 bytes. */
#include "quant/ggml_impl.h"

#include <math.h>
#include <pthread.h>

#if defined(__AVX2__)
#include <immintrin.h>

/* the block's largest magnitude and its 256 trits t = round(x/d) + 1 ∈ {0,1,2};
 * 0 when 1/d is not finite (nothing written) */
static int block_trits(const float *x, uint8_t t[QP_QK_K], float *dout)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_setzero_ps();
    for (int j = 0; j < QP_QK_K; j += 8)
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    const float d = _mm_cvtss_f32(h);
    const float id = d ? 1.0f / d : 0.0f;
    *dout = d;
    if (!isfinite(id))
        return 0;
    const __m256 vid = _mm256_set1_ps(id), half = _mm256_set1_ps(0.5f), mhalf = _mm256_set1_ps(-0.5f);
    const __m256i one = _mm256_set1_epi32(1);
    /* 32 weights -> 32 trit bytes in order */
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int j = 0; j < QP_QK_K; j += 32) {
        __m256i q[4];
        for (int k = 0; k < 4; k++) {
            const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + j + 8 * k), vid);
            const __m256i up = _mm256_castps_si256(_mm256_cmp_ps(v, half, _CMP_GE_OQ));
            const __m256i dn = _mm256_castps_si256(_mm256_cmp_ps(v, mhalf, _CMP_LE_OQ));
            q[k] = _mm256_add_epi32(_mm256_sub_epi32(one, up), dn);   /* masks are −1 */
        }
        const __m256i w01 = _mm256_packs_epi32(q[0], q[1]), w23 = _mm256_packs_epi32(q[2], q[3]);
        const __m256i b = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(w01, w23), order);
        _mm256_storeu_si256((__m256i *)(t + j), b);
    }
    return 1;
}

void qp_tq2_0_fast(const float *x, void *vy, int64_t n)
{
    qp_block_tq2_0 *y = vy;
    uint8_t t[QP_QK_K];
    for (int64_t i = 0; i < n / QP_QK_K; i++, x += QP_QK_K) {
        float d;
        if (!block_trits(x, t, &d)) {
            qp_tq2_0_ref(x, &y[i], QP_QK_K);
            continue;
        }
        y[i].d = QP_FP16(d);
        /* byte m of group g: trits 128g + m + 32k at bits 2k (trits <= 2: no carry) */
        for (int g = 0; g < 2; g++) {
            const uint8_t *tg = t + 128 * g;
            __m256i acc = _mm256_loadu_si256((const __m256i *)tg);
            for (int k = 1; k < 4; k++)
                acc = _mm256_or_si256(acc, _mm256_slli_epi16(_mm256_loadu_si256((const __m256i *)(tg + 32 * k)), 2 * k));
            _mm256_storeu_si256((__m256i *)(y[i].qs + 32 * g), acc);
        }
    }
}

#else

/* portable: the same trits with scalar compares */
static int block_trits(const float *x, uint8_t t[QP_QK_K], float *dout)
{
    float d = 0.0f;
    for (int j = 0; j < QP_QK_K; j++)
        d = QP_MAX(d, fabsf(x[j]));
    const float id = d ? 1.0f / d : 0.0f;
    *dout = d;
    if (!isfinite(id))
        return 0;
    for (int j = 0; j < QP_QK_K; j++) {
        const float v = x[j] * id;
        t[j] = (uint8_t)(1 + (v >= 0.5f) - (v <= -0.5f));
    }
    return 1;
}

void qp_tq2_0_fast(const float *x, void *vy, int64_t n)
{
    qp_block_tq2_0 *y = vy;
    uint8_t t[QP_QK_K];
    for (int64_t i = 0; i < n / QP_QK_K; i++, x += QP_QK_K) {
        float d;
        if (!block_trits(x, t, &d)) {
            qp_tq2_0_ref(x, &y[i], QP_QK_K);
            continue;
        }
        y[i].d = QP_FP16(d);
        for (int g = 0; g < 2; g++)
            for (int m = 0; m < 32; m++) {
                const uint8_t *tg = t + 128 * g + m;
                y[i].qs[32 * g + m] = (uint8_t)(tg[0] | tg[32] << 2 | tg[64] << 4 | tg[96] << 6);
            }
    }
}

#endif

/* ceil(q·256/243) for the base-3 numbers q = 0..242 */
static uint8_t tq1_byte[243];

static void tq1_table_init(void)
{
    for (int q = 0; q < 243; q++)
        tq1_byte[q] = (uint8_t)((q * 256 + 242) / 243);
}

/* five trits t[0], t[s], …, t[4s], the first most significant */
static inline int base3_5(const uint8_t *t, int s)
{
    return (((t[0] * 3 + t[s]) * 3 + t[2 * s]) * 3 + t[3 * s]) * 3 + t[4 * s];
}

void qp_tq1_0_fast(const float *x, void *vy, int64_t n)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, tq1_table_init);
    qp_block_tq1_0 *y = vy;
    uint8_t t[QP_QK_K];
    for (int64_t i = 0; i < n / QP_QK_K; i++, x += QP_QK_K) {
        float d;
        if (!block_trits(x, t, &d)) {
            qp_tq1_0_ref(x, &y[i], QP_QK_K);
            continue;
        }
        y[i].d = QP_FP16(d);
        for (int m = 0; m < 32; m++)
            y[i].qs[m] = tq1_byte[base3_5(t + m, 32)];
        for (int m = 0; m < 16; m++)
            y[i].qs[32 + m] = tq1_byte[base3_5(t + 160 + m, 16)];
        for (int j = 0; j < 4; j++) {
            const uint8_t *tj = t + 240 + j;
            y[i].qh[j] = tq1_byte[(((tj[0] * 3 + tj[4]) * 3 + tj[8]) * 3 + tj[12]) * 3];
        }
    }
}
