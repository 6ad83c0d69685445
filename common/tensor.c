/* Element types and exact float conversions (see tensor.h). */
#include "common/tensor.h"

#include "common/error.h"

#include <math.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
} dtype_table[] = {
    [QP_DT_INVALID] = { NULL, 0 },
    [QP_DT_F64] = { "F64", 8 },
    [QP_DT_F32] = { "F32", 4 },
    [QP_DT_F16] = { "F16", 2 },
    [QP_DT_BF16] = { "BF16", 2 },
    [QP_DT_I64] = { "I64", 8 },
    [QP_DT_I32] = { "I32", 4 },
    [QP_DT_I16] = { "I16", 2 },
    [QP_DT_I8] = { "I8", 1 },
    [QP_DT_U8] = { "U8", 1 },
    [QP_DT_BOOL] = { "BOOL", 1 },
    [QP_DT_F8_E4M3] = { "F8_E4M3", 1 },
    [QP_DT_F8_E5M2] = { "F8_E5M2", 1 },
};
#define N_DTYPES (sizeof(dtype_table) / sizeof(dtype_table[0]))

const char *qp_dtype_name(qp_dtype t)
{
    return (unsigned)t < N_DTYPES ? dtype_table[t].name : NULL;
}

qp_dtype qp_dtype_parse(const char *name)
{
    if (!name)
        return QP_DT_INVALID;
    for (size_t i = 1; i < N_DTYPES; i++)
        if (strcmp(dtype_table[i].name, name) == 0)
            return (qp_dtype)i;
    return QP_DT_INVALID;
}

size_t qp_dtype_size(qp_dtype t)
{
    return (unsigned)t < N_DTYPES ? dtype_table[t].size : 0;
}

static inline uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float qp_bf16_to_f32(uint16_t h)
{
    return bits_f32((uint32_t)h << 16);
}

uint16_t qp_f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x0040);      /* NaN: keep sign/payload, force quiet */
    /* Round to nearest even: add 0x7fff plus the lowest kept bit, then truncate.
     * Overflow past the largest finite value carries into the exponent = inf. */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* Branch-free (mask selects) so that qp_convert_to_f32's loop vectorises:
 * exp 0 = zero/subnormal (mant · 2^-24, exact in f32), exp 31 = inf/NaN. */
static inline float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t normal = ((exp + 112u) << 23) | (mant << 13);
    uint32_t special = 0x7f800000u | (mant << 13);
    uint32_t sub = f32_bits((float)mant * 0x1p-24f);
    uint32_t z = 0u - (uint32_t)(exp == 0), m = 0u - (uint32_t)(exp == 31);
    uint32_t mag = (sub & z) | (((special & m) | (normal & ~m)) & ~z);
    return bits_f32(sign | mag);
}

float qp_f16_to_f32(uint16_t h)
{
    return f16_to_f32(h);
}

/* Round-to-nearest-even f32 -> f16 with the results of ggml's reference
 * GGML_FP32_TO_FP16: subnormal halves produced with correct rounding,
 * values >= 65520 become inf, any NaN becomes the quiet NaN 0x7e00 (sign kept). */
uint16_t qp_f32_to_f16(float f)
{
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return sign | 0x7e00u;
    if (a >= 0x477ff000u)                 /* >= 65520: rounds to inf (includes inf) */
        return sign | 0x7c00u;
    if (a >= 0x38800000u) {               /* >= 2^-14: normal half */
        /* rebias the exponent (127 -> 15) and round 13 dropped mantissa bits;
         * a carry out of the mantissa correctly bumps the exponent. */
        uint32_t r = a - (112u << 23);
        r += 0x0fffu + ((r >> 13) & 1u);
        return sign | (uint16_t)(r >> 13);
    }
    if (a < 0x33000000u)                  /* < 2^-25: rounds to zero (2^-25 ties to even 0) */
        return sign;
    /* Subnormal half: value = m · 2^-24 with m < 1024.  The f32 value is
     * s · 2^(e-150) (s with its implicit bit), so m = s · 2^(e-126). */
    uint32_t e = a >> 23;                 /* 102..112 */
    uint32_t s = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - e;            /* 14..24: s >> shift = m */
    uint32_t m = s >> shift;
    uint32_t rem = s & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (m & 1u)))
        m++;                              /* m == 1024 is the smallest normal: still right */
    return sign | (uint16_t)m;
}

/* E4M3 "fn" flavour (no infinities; S.1111.111 is NaN), bias 7. */
static inline float f8e4m3_to_f32(uint8_t b)
{
    uint32_t sign = (uint32_t)(b & 0x80u) << 24;
    uint32_t exp = (b >> 3) & 0xfu;
    uint32_t mant = b & 0x7u;
    uint32_t normal = ((exp + 120u) << 23) | (mant << 20);
    uint32_t sub = f32_bits((float)mant * 0x1p-9f);
    uint32_t z = 0u - (uint32_t)(exp == 0), nan = 0u - (uint32_t)((b & 0x7fu) == 0x7fu);
    uint32_t mag = (sub & z) | (normal & ~z);
    mag = (0x7fc00000u & nan) | (mag & ~nan);
    return bits_f32(sign | mag);
}

/* Conversions run in blocks of 16 elements copied to a local array (the
 * source may be unaligned): GCC's -O2 "very cheap" vectoriser takes such a
 * fixed-count loop, and the remainder goes through the scalar path. */
#define CONV_BLOCK 16
#define CONVERT_LOOP(T, EXPR)                                                \
    do {                                                                     \
        size_t i = 0;                                                        \
        for (; i + CONV_BLOCK <= n; i += CONV_BLOCK) {                       \
            T tmp[CONV_BLOCK];                                               \
            memcpy(tmp, s + sizeof(T) * i, sizeof(tmp));                     \
            for (size_t j = 0; j < CONV_BLOCK; j++) {                        \
                T x = tmp[j];                                                \
                dst[i + j] = (EXPR);                                         \
            }                                                                \
        }                                                                    \
        for (; i < n; i++) {                                                 \
            T x;                                                             \
            memcpy(&x, s + sizeof(T) * i, sizeof(T));                        \
            dst[i] = (EXPR);                                                 \
        }                                                                    \
    } while (0)

int qp_convert_to_f32(float *dst_, const void *src, qp_dtype t, size_t n)
{
    /* restrict: without it the vectoriser must version the loop for aliasing */
    const unsigned char *restrict s = src;
    float *restrict dst = dst_;
    switch (t) {
    case QP_DT_F32:
        memmove(dst, src, n * 4);
        return 0;
    case QP_DT_F64:
        CONVERT_LOOP(double, (float)x);
        return 0;
    case QP_DT_BF16:
        CONVERT_LOOP(uint16_t, bits_f32((uint32_t)x << 16));
        return 0;
    case QP_DT_F16:
        CONVERT_LOOP(uint16_t, f16_to_f32(x));
        return 0;
    case QP_DT_F8_E5M2:
        /* E5M2 is the top byte of an IEEE half. */
        CONVERT_LOOP(uint8_t, f16_to_f32((uint16_t)(x << 8)));
        return 0;
    case QP_DT_F8_E4M3:
        CONVERT_LOOP(uint8_t, f8e4m3_to_f32(x));
        return 0;
    default:
        return qp_error_set(QP_EFORMAT, "cannot convert a %s tensor to f32: not a floating-point dtype",
                            qp_dtype_name(t) ? qp_dtype_name(t) : "invalid");
    }
}
