/* Type table, row sizes, fallback rule, argument checks and the per-row
 * dispatch behind qp_quantize_ref / qp_quantize (see qtypes.h). */
#include "quant/qtypes.h"

#include "common/error.h"
#include "quant/ggml_impl.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

typedef void (*row_ref_fn)(const float *x, void *y, int64_t n);
typedef void (*row_imat_fn)(const float *x, void *y, int64_t n, const float *qw);

typedef struct {
    qp_qtype_info info;
    row_ref_fn ref;      /* no imatrix; NULL: the type needs one (info.needs_imatrix) */
    row_imat_fn imat;    /* with imatrix; NULL: the imatrix is ignored */
    row_ref_fn fast;     /* same bytes as ref; NULL: ref is used */
    row_imat_fn fast_imat;   /* same bytes as imat; NULL: imat is used */
} qtype_entry;

static void row_f32(const float *x, void *y, int64_t n)
{
    memcpy(y, x, (size_t)n * sizeof(float));
}

static void row_f16(const float *x, void *vy, int64_t n)
{
    uint8_t *y = vy;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h = qp_f32_to_f16(x[i]);
        memcpy(y + 2 * i, &h, 2);
    }
}

static void row_bf16(const float *x, void *vy, int64_t n)
{
    uint8_t *y = vy;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h = qp_f32_to_bf16(x[i]);
        memcpy(y + 2 * i, &h, 2);
    }
}

static void row_iq4_nl(const float *x, void *y, int64_t n)
{
    qp_iq4_nl_row(x, y, n, NULL);
}

static void row_iq4_xs(const float *x, void *y, int64_t n)
{
    qp_iq4_xs_row(x, y, n, NULL);
}

static void row_iq4_xs_fast(const float *x, void *y, int64_t n)
{
    qp_iq4_xs_fast(x, y, n, NULL);
}

static void row_iq3_xxs(const float *x, void *y, int64_t n)
{
    qp_iq3_xxs_row(x, y, n, NULL);
}

static void row_iq3_xxs_fast(const float *x, void *y, int64_t n)
{
    qp_iq3_xxs_fast(x, y, n, NULL);
}

static void row_iq3_s(const float *x, void *y, int64_t n)
{
    qp_iq3_s_row(x, y, n, NULL);
}

static void row_iq3_s_fast(const float *x, void *y, int64_t n)
{
    qp_iq3_s_fast(x, y, n, NULL);
}

static void row_iq2_s(const float *x, void *y, int64_t n)
{
    qp_iq2_s_row(x, y, n, NULL);
}

static void row_iq2_s_fast(const float *x, void *y, int64_t n)
{
    qp_iq2_s_fast(x, y, n, NULL);
}

static void row_iq1_m(const float *x, void *y, int64_t n)
{
    qp_iq1_m_row(x, y, n, NULL);
}

static void row_iq1_m_fast(const float *x, void *y, int64_t n)
{
    qp_iq1_m_fast(x, y, n, NULL);
}

/* Which ggml types qpipe can write, and how.  Names, block sizes and bytes
 * per block come from the one ggml type table (common/ggml_types.h), copied
 * into `info` once, so the two can never disagree. */
#define INFO(t, q, im) { .type = t, .is_quantized = q, .uses_imatrix = im }
#define INFO_NEEDS_IMATRIX(t) { .type = t, .is_quantized = 1, .uses_imatrix = 1, .needs_imatrix = 1 }
static qtype_entry table[] = {
    { INFO(QP_GGML_F32, 0, 0), row_f32, NULL, NULL, NULL },
    { INFO(QP_GGML_F16, 0, 0), row_f16, NULL, NULL, NULL },
    { INFO(QP_GGML_Q4_0, 1, 1), qp_q4_0_ref, qp_q4_0_imat, qp_q4_0_fast, NULL },
    { INFO(QP_GGML_Q4_1, 1, 1), qp_q4_1_ref, qp_q4_1_imat, qp_q4_1_fast, NULL },
    { INFO(QP_GGML_Q5_0, 1, 1), qp_q5_0_ref, qp_q5_0_imat, qp_q5_0_fast, NULL },
    { INFO(QP_GGML_Q5_1, 1, 1), qp_q5_1_ref, qp_q5_1_imat, qp_q5_1_fast, NULL },
    { INFO(QP_GGML_Q8_0, 1, 0), qp_q8_0_ref, NULL, qp_q8_0_fast, NULL },
    { INFO(QP_GGML_Q2_K, 1, 1), qp_q2_K_ref, qp_q2_K_imat, NULL, NULL },
    { INFO(QP_GGML_Q3_K, 1, 1), qp_q3_K_ref, qp_q3_K_imat, NULL, NULL },
    { INFO(QP_GGML_Q4_K, 1, 1), qp_q4_K_ref, qp_q4_K_imat, qp_q4_K_fast, NULL },
    { INFO(QP_GGML_Q5_K, 1, 1), qp_q5_K_ref, qp_q5_K_imat, qp_q5_K_fast, NULL },
    { INFO(QP_GGML_Q6_K, 1, 1), qp_q6_K_ref, qp_q6_K_imat, qp_q6_K_fast, NULL },
    { INFO(QP_GGML_IQ4_NL, 1, 1), row_iq4_nl, qp_iq4_nl_row, NULL, NULL },
    { INFO(QP_GGML_IQ4_XS, 1, 1), row_iq4_xs, qp_iq4_xs_row, row_iq4_xs_fast, qp_iq4_xs_fast },
    { INFO(QP_GGML_IQ3_XXS, 1, 1), row_iq3_xxs, qp_iq3_xxs_row, row_iq3_xxs_fast, qp_iq3_xxs_fast },
    { INFO_NEEDS_IMATRIX(QP_GGML_IQ2_XXS), NULL, qp_iq2_xxs_row, NULL, qp_iq2_xxs_fast },
    { INFO_NEEDS_IMATRIX(QP_GGML_IQ2_XS), NULL, qp_iq2_xs_row, NULL, qp_iq2_xs_fast },
    { INFO(QP_GGML_IQ3_S, 1, 1), row_iq3_s, qp_iq3_s_row, row_iq3_s_fast, qp_iq3_s_fast },
    { INFO(QP_GGML_IQ2_S, 1, 1), row_iq2_s, qp_iq2_s_row, row_iq2_s_fast, qp_iq2_s_fast },
    { INFO_NEEDS_IMATRIX(QP_GGML_IQ1_S), NULL, qp_iq1_s_row, NULL, qp_iq1_s_fast },
    { INFO(QP_GGML_IQ1_M, 1, 1), row_iq1_m, qp_iq1_m_row, row_iq1_m_fast, qp_iq1_m_fast },
    { INFO(QP_GGML_TQ1_0, 1, 0), qp_tq1_0_ref, NULL, qp_tq1_0_fast, NULL },
    { INFO(QP_GGML_TQ2_0, 1, 0), qp_tq2_0_ref, NULL, qp_tq2_0_fast, NULL },
    { INFO(QP_GGML_BF16, 0, 0), row_bf16, NULL, NULL, NULL },
};
#define N_TYPES (sizeof(table) / sizeof(table[0]))

static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void table_fill(void)
{
    for (size_t i = 0; i < N_TYPES; i++) {
        qp_qtype_info *in = &table[i].info;
        in->name = qp_ggml_type_name(in->type);
        in->block = (int)qp_ggml_block_size(in->type);
        in->type_size = qp_ggml_type_size(in->type);
        in->bits_per_weight = 8.0 * (double)in->type_size / in->block;
    }
}

static const qtype_entry *table_ready(void)
{
    pthread_once(&table_once, table_fill);
    return table;
}

static const qtype_entry *entry(qp_ggml_type t)
{
    const qtype_entry *tb = table_ready();
    for (size_t i = 0; i < N_TYPES; i++)
        if (tb[i].info.type == t)
            return &tb[i];
    return NULL;
}

const qp_qtype_info *qp_qtype_get(qp_ggml_type t)
{
    const qtype_entry *e = entry(t);
    return e ? &e->info : NULL;
}

const qp_qtype_info *qp_qtype_by_name(const char *name)
{
    if (!name)
        return NULL;
    const int t = qp_ggml_type_parse(name);
    return t < 0 ? NULL : qp_qtype_get((qp_ggml_type)t);
}

size_t qp_qtype_count(void)
{
    return N_TYPES;
}

const qp_qtype_info *qp_qtype_at(size_t i)
{
    return i < N_TYPES ? &table_ready()[i].info : NULL;
}

size_t qp_qtype_row_size(qp_ggml_type t, int64_t n_per_row)
{
    const qtype_entry *e = entry(t);
    if (!e || n_per_row <= 0 || n_per_row % e->info.block)
        return 0;
    return (size_t)(n_per_row / e->info.block) * e->info.type_size;
}

int qp_qtype_fallback(qp_ggml_type *out, qp_ggml_type t, int64_t n_per_row)
{
    const qtype_entry *e = entry(t);
    if (!e)
        return qp_error_set(QP_EUSAGE, "quantization type id %d is not supported", (int)t);
    if (n_per_row <= 0)
        return qp_error_set(QP_EUSAGE, "tensor rows of %lld weights cannot be quantized", (long long)n_per_row);
    if (n_per_row % e->info.block == 0) {
        *out = t;
        return 0;
    }
    qp_ggml_type fb;
    switch (t) {
    case QP_GGML_Q2_K:
    case QP_GGML_Q3_K:
    case QP_GGML_IQ2_XXS:
    case QP_GGML_IQ2_XS:
    case QP_GGML_IQ3_XXS:
    case QP_GGML_IQ3_S:
    case QP_GGML_IQ2_S:
    case QP_GGML_IQ1_S:
    case QP_GGML_IQ1_M:
    case QP_GGML_IQ4_XS: fb = QP_GGML_IQ4_NL; break;
    case QP_GGML_TQ1_0:
    case QP_GGML_TQ2_0: fb = QP_GGML_Q4_0; break;   /* llama.cpp's "TODO: use a symmetric type instead" */
    case QP_GGML_Q4_K: fb = QP_GGML_Q5_0; break;
    case QP_GGML_Q5_K: fb = QP_GGML_Q5_1; break;
    case QP_GGML_Q6_K: fb = QP_GGML_Q8_0; break;
    default:
        return qp_error_set(QP_EUSAGE, "tensor rows of %lld weights cannot be quantized to %s (blocks of %d)",
                            (long long)n_per_row, e->info.name, e->info.block);
    }
    *out = n_per_row % QP_QK ? QP_GGML_F16 : fb;
    return 0;
}

/* ---- shared by qp_quantize_ref and qp_quantize ---- */

int qp_quant_check(qp_ggml_type t, const float *src, const void *dst, int64_t nrows, int64_t n_per_row,
                   const float *imatrix)
{
    const qtype_entry *e = entry(t);
    if (!e)
        return qp_error_set(QP_EUSAGE, "quantize: type id %d is not supported", (int)t);
    const char *name = e->info.name;
    if (nrows < 0 || n_per_row <= 0)
        return qp_error_set(QP_EUSAGE, "quantize %s: bad shape %lld x %lld", name, (long long)nrows,
                            (long long)n_per_row);
    if (n_per_row % e->info.block)
        return qp_error_set(QP_EUSAGE,
                            "quantize %s: row length %lld is not a multiple of %d (use qp_qtype_fallback)",
                            name, (long long)n_per_row, e->info.block);
    if (nrows > 0 && (!src || !dst))
        return qp_error_set(QP_EUSAGE, "quantize %s: NULL buffer", name);
    if (!imatrix && e->info.needs_imatrix)
        return qp_error_set(QP_EUSAGE, "quantize %s: this type needs an importance matrix (llama.cpp has no %s "
                            "quantizer without one)", name, name);
    if (imatrix && e->imat) {
        for (int64_t c = 0; c < n_per_row; c++)
            if (!isfinite(imatrix[c]) || imatrix[c] < 0)
                return qp_error_set(QP_EUSAGE,
                                    "quantize %s: imatrix column %lld is %g: importance must be finite and >= 0",
                                    name, (long long)c, (double)imatrix[c]);
    }
    return 0;
}

/* 16 lanes of the exponent test at a time (GCC vector extensions: AVX-512,
 * AVX2 or SSE, whatever -march gives; the answer is a boolean, so how it
 * is vectorised cannot change a result) */
typedef uint32_t u32x16 __attribute__((vector_size(64)));

int64_t qp_first_nonfinite(const float *x, int64_t n)
{
    const uint32_t exp_mask = 0x7f800000u;
    u32x16 any = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        u32x16 u;
        memcpy(&u, x + i, sizeof u);
        any |= (u32x16)((u & exp_mask) == exp_mask);
    }
    uint32_t bad = 0;
    for (int l = 0; l < 16; l++)
        bad |= any[l];
    for (; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        bad |= (u & exp_mask) == exp_mask;
    }
    if (!bad)
        return -1;
    for (i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return i;
    return -1;
}

int qp_quant_find_nonfinite(const float *src, int64_t row0, int64_t row1, int64_t n_per_row,
                            int64_t *bad_row, int64_t *bad_col)
{
    int64_t i = qp_first_nonfinite(src + row0 * n_per_row, (row1 - row0) * n_per_row);
    if (i < 0)
        return 0;
    *bad_row = row0 + i / n_per_row;
    *bad_col = i % n_per_row;
    return 1;
}

int qp_quantize_prechecked(qp_ggml_type t, const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                           const float *imatrix)
{
    int rc = qp_quant_check(t, src, dst, nrows, n_per_row, imatrix);
    if (rc || nrows == 0)
        return rc;
    qp_quant_rows(t, src, dst, 0, nrows, n_per_row, imatrix, 1);
    return 0;
}

int qp_quant_nonfinite_error(qp_ggml_type t, const float *src, int64_t row, int64_t col, int64_t n_per_row)
{
    const float v = src[row * n_per_row + col];
    return qp_error_set(QP_EUSAGE, "quantize %s: row %lld, column %lld is %s: weights must be finite",
                        qp_qtype_get(t)->name, (long long)row, (long long)col, isnan(v) ? "NaN" : "infinite");
}

void qp_quant_rows(qp_ggml_type t, const float *src, void *dst, int64_t row0, int64_t row1, int64_t n_per_row,
                   const float *imatrix, int fast)
{
    const qtype_entry *e = entry(t);
    const size_t row_size = qp_qtype_row_size(t, n_per_row);
    for (int64_t r = row0; r < row1; r++) {
        const float *x = src + r * n_per_row;
        void *y = (uint8_t *)dst + (size_t)r * row_size;
        if (imatrix && e->imat && fast && e->fast_imat)
            e->fast_imat(x, y, n_per_row, imatrix);
        else if (imatrix && e->imat)
            e->imat(x, y, n_per_row, imatrix);
        else if (fast && e->fast)
            e->fast(x, y, n_per_row);
        else
            e->ref(x, y, n_per_row);
    }
}

int qp_quantize_ref(qp_ggml_type t, const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                    const float *imatrix)
{
    int rc = qp_quant_check(t, src, dst, nrows, n_per_row, imatrix);
    if (rc || nrows == 0)
        return rc;
    int64_t bad_row, bad_col;
    if (qp_quant_find_nonfinite(src, 0, nrows, n_per_row, &bad_row, &bad_col))
        return qp_quant_nonfinite_error(t, src, bad_row, bad_col, n_per_row);
    qp_quant_rows(t, src, dst, 0, nrows, n_per_row, imatrix, 0);
    return 0;
}

int qp_dequantize_row(qp_ggml_type t, const void *src, float *dst, int64_t n)
{
    const qtype_entry *e = entry(t);
    if (!e)
        return qp_error_set(QP_EUSAGE, "dequantize: type id %d is not supported", (int)t);
    if (n < 0 || n % e->info.block)
        return qp_error_set(QP_EUSAGE, "dequantize %s: %lld weights is not a whole number of blocks of %d",
                            e->info.name, (long long)n, e->info.block);
    if (n > 0 && (!src || !dst))
        return qp_error_set(QP_EUSAGE, "dequantize %s: NULL buffer", e->info.name);
    qp_ggml_dequantize_blocks(t, src, dst, n);
    return 0;
}
