/* Fast row quantizers for the 32-weight formats, byte-identical to the
 * reference ones in ggml_legacy.c.  AVX2: one block = 4 vectors of 8.
 * Identity holds because every f32 operation is elementwise and done in the
 * reference's order (x·id then + 8.5, both rounded, no FMA); the reductions
 * are max/min, which are exact in any order, and the one order-dependent
 * choice — WHICH element of largest magnitude (or the min/max when ±0 tie)
 * the reference keeps — is recovered as "the first index that attains it".
 * Without AVX2 these are the reference functions.
 *
 * Shapes: x[n] f32, n % 32 == 0 -> n/32 blocks. */
#include "quant/ggml_impl.h"

#if defined(__AVX2__)
#include <immintrin.h>

static inline __m256 abs8(__m256 v)
{
    return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
}

static inline float hmax8(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

static inline float hmin8(__m256 v)
{
    __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    m = _mm_min_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* Index of the first of 32 lanes where v[k] == target (it exists). */
static inline int first_eq(const __m256 v[4], float target)
{
    const __m256 t = _mm256_set1_ps(target);
    uint32_t mask = 0;
    for (int k = 0; k < 4; k++)
        mask |= (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(v[k], t, _CMP_EQ_OQ)) << (8 * k);
    return __builtin_ctz(mask);
}

/* The reference's "first element of largest magnitude" (0.0 when all are
 * zero: its running max starts at +0 and only a strictly larger |x| moves it). */
static inline float signed_absmax(const float *xb, const __m256 v[4])
{
    __m256 a[4];
    for (int k = 0; k < 4; k++)
        a[k] = abs8(v[k]);
    const float amax = hmax8(_mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3])));
    if (amax == 0.0f)
        return 0.0f;
    return xb[first_eq(a, amax)];
}

/* min and max as the reference's strict-compare scans leave them: the value
 * of the first element attaining each (decides the sign of a zero). */
static inline void first_minmax(const float *xb, const __m256 v[4], float *mn, float *mx)
{
    const float lo = hmin8(_mm256_min_ps(_mm256_min_ps(v[0], v[1]), _mm256_min_ps(v[2], v[3])));
    const float hi = hmax8(_mm256_max_ps(_mm256_max_ps(v[0], v[1]), _mm256_max_ps(v[2], v[3])));
    *mn = xb[first_eq(v, lo)];
    *mx = xb[first_eq(v, hi)];
}

static inline void load4(__m256 v[4], const float *xb)
{
    for (int k = 0; k < 4; k++)
        v[k] = _mm256_loadu_ps(xb + 8 * k);
}

/* 16 bytes lo[j] | hi[j] << 4 from two 16-lane int32 halves (q[0..1] = lanes
 * 0-15 = low nibbles, q[2..3] = lanes 16-31 = high nibbles). */
static inline void pack_nibbles(uint8_t out[16], const __m256i q[4])
{
    const __m256i m = _mm256_set1_epi32(0x0F);
    __m256i c0 = _mm256_or_si256(_mm256_and_si256(q[0], m), _mm256_slli_epi32(_mm256_and_si256(q[2], m), 4));
    __m256i c1 = _mm256_or_si256(_mm256_and_si256(q[1], m), _mm256_slli_epi32(_mm256_and_si256(q[3], m), 4));
    __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(c0, c1), 0xD8);
    __m128i b = _mm_packus_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
    _mm_storeu_si128((__m128i *)(void *)out, b);
}

/* qh bit j = bit 4 of level j. */
static inline void pack_qh(uint8_t out[4], const __m256i q[4])
{
    uint32_t qh = 0;
    for (int k = 0; k < 4; k++)
        qh |= (uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_slli_epi32(q[k], 27))) << (8 * k);
    memcpy(out, &qh, 4);
}

/* (int8_t)(x·id + bias) then min(cap): truncation toward zero like the C
 * cast (the operand is >= 0 here). */
static inline void levels_sym(__m256i q[4], const __m256 v[4], float id, float bias, int cap)
{
    const __m256 vid = _mm256_set1_ps(id), vb = _mm256_set1_ps(bias);
    for (int k = 0; k < 4; k++) {
        __m256i l = _mm256_cvttps_epi32(_mm256_add_ps(_mm256_mul_ps(v[k], vid), vb));
        q[k] = _mm256_min_epi32(l, _mm256_set1_epi32(cap));
    }
}

/* (x − min)·id + 0.5 truncated, optionally capped. */
static inline void levels_asym(__m256i q[4], const __m256 v[4], float min, float id, int cap)
{
    const __m256 vmin = _mm256_set1_ps(min), vid = _mm256_set1_ps(id), half = _mm256_set1_ps(0.5f);
    for (int k = 0; k < 4; k++) {
        __m256i l = _mm256_cvttps_epi32(_mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(v[k], vmin), vid), half));
        q[k] = cap > 0 ? _mm256_min_epi32(l, _mm256_set1_epi32(cap)) : l;
    }
}

void qp_q8_0_fast(const float *x, void *vy, int64_t n)
{
    qp_block_q8_0 *y = vy;
    const int64_t nb = n / QP_QK;
    const __m256 sign = _mm256_set1_ps(-0.0f), half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
    for (int64_t i = 0; i < nb; i++) {
        const float *xb = x + i * QP_QK;
        __m256 v[4];
        load4(v, xb);
        __m256 m = _mm256_max_ps(_mm256_max_ps(abs8(v[0]), abs8(v[1])), _mm256_max_ps(abs8(v[2]), abs8(v[3])));
        const float amax = hmax8(m);
        const float d = amax / ((1 << 7) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = QP_FP16(d);
        const __m256 vid = _mm256_set1_ps(id);
        __m256i q[4];
        for (int k = 0; k < 4; k++) {
            /* roundf: truncate, then step away from zero when the (exact)
             * fractional part is >= 0.5 */
            const __m256 s = _mm256_mul_ps(v[k], vid);
            const __m256 t = _mm256_round_ps(s, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            const __m256 frac = abs8(_mm256_sub_ps(s, t));
            const __m256 step = _mm256_and_ps(_mm256_cmp_ps(frac, half, _CMP_GE_OQ),
                                              _mm256_or_ps(one, _mm256_and_ps(s, sign)));
            q[k] = _mm256_cvtps_epi32(_mm256_add_ps(t, step));
        }
        /* keep the low byte (the C conversion of the reference), not a
         * saturated one: they differ only for INT32_MIN (see qp_trunc_i32) */
        const __m256i lo = _mm256_set1_epi32(0xFF);
        __m256i p01 = _mm256_packus_epi32(_mm256_and_si256(q[0], lo), _mm256_and_si256(q[1], lo));
        __m256i p23 = _mm256_packus_epi32(_mm256_and_si256(q[2], lo), _mm256_and_si256(q[3], lo));
        __m256i b = _mm256_packus_epi16(p01, p23);
        /* packs work per 128-bit lane: restore element order */
        b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(void *)y[i].qs, b);
    }
}

/* Q4_0 / Q5_0 levels of block xb[32]: d = m / −nmax for its first element m
 * of largest magnitude, q = min(top, trunc(x/d + nmax + 0.5)); returns d. */
static float sym_block(__m256i q[4], const float *xb, int nmax, int top)
{
    __m256 v[4];
    load4(v, xb);
    const float d = signed_absmax(xb, v) / (float)-nmax;
    const float id = d ? 1.0f / d : 0.0f;
    levels_sym(q, v, id, (float)nmax + 0.5f, top);
    return d;
}

/* Q4_1 / Q5_1 levels of block xb[32]: d = (max − min)/steps, *min_out = min,
 * q = trunc((x − min)/d + 0.5) capped at top (0: no cap); returns d. */
static float asym_block(__m256i q[4], float *min_out, const float *xb, int steps, int top)
{
    __m256 v[4];
    load4(v, xb);
    float min, max;
    first_minmax(xb, v, &min, &max);
    const float d = (max - min) / (float)steps;
    const float id = d ? 1.0f / d : 0.0f;
    levels_asym(q, v, min, id, top);
    *min_out = min;
    return d;
}

void qp_q4_0_fast(const float *x, void *vy, int64_t n)
{
    qp_block_q4_0 *y = vy;
    const int64_t nb = n / QP_QK;
    for (int64_t i = 0; i < nb; i++) {
        __m256i q[4];
        y[i].d = QP_FP16(sym_block(q, x + i * QP_QK, 8, 15));
        pack_nibbles(y[i].qs, q);
    }
}

void qp_q5_0_fast(const float *x, void *vy, int64_t n)
{
    qp_block_q5_0 *y = vy;
    const int64_t nb = n / QP_QK;
    for (int64_t i = 0; i < nb; i++) {
        __m256i q[4];
        y[i].d = QP_FP16(sym_block(q, x + i * QP_QK, 16, 31));
        pack_nibbles(y[i].qs, q);
        pack_qh(y[i].qh, q);
    }
}

void qp_q4_1_fast(const float *x, void *vy, int64_t n)
{
    qp_block_q4_1 *y = vy;
    const int64_t nb = n / QP_QK;
    for (int64_t i = 0; i < nb; i++) {
        __m256i q[4];
        float min;
        y[i].d = QP_FP16(asym_block(q, &min, x + i * QP_QK, 15, 15));
        y[i].m = QP_FP16(min);
        pack_nibbles(y[i].qs, q);
    }
}

void qp_q5_1_fast(const float *x, void *vy, int64_t n)
{
    qp_block_q5_1 *y = vy;
    const int64_t nb = n / QP_QK;
    for (int64_t i = 0; i < nb; i++) {
        __m256i q[4];
        float min;
        /* the reference casts to uint8_t without a cap: levels are <= 31
         * anyway, keep the low 8 bits like the cast would */
        y[i].d = QP_FP16(asym_block(q, &min, x + i * QP_QK, 31, 0));
        y[i].m = QP_FP16(min);
        for (int k = 0; k < 4; k++)
            q[k] = _mm256_and_si256(q[k], _mm256_set1_epi32(0xFF));
        pack_nibbles(y[i].qs, q);
        pack_qh(y[i].qh, q);
    }
}

#else /* portable: the reference kernels are already plain C loops */

void qp_q8_0_fast(const float *x, void *y, int64_t n) { qp_q8_0_ref(x, y, n); }
void qp_q4_0_fast(const float *x, void *y, int64_t n) { qp_q4_0_ref(x, y, n); }
void qp_q4_1_fast(const float *x, void *y, int64_t n) { qp_q4_1_ref(x, y, n); }
void qp_q5_0_fast(const float *x, void *y, int64_t n) { qp_q5_0_ref(x, y, n); }
void qp_q5_1_fast(const float *x, void *y, int64_t n) { qp_q5_1_ref(x, y, n); }

#endif
