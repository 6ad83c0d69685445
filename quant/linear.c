/* The linear representation (quant/linear.h): object, GPTQ grid fits, the
 * reference RTN quantizer that defines the bytes, dequantization and
 * validation.  The fast path (linear_fast.c) and serialisation
 * (linear_io.c) reuse the fits and the row function below. */
#include "quant/linear.h"

#include "common/alloc.h"
#include "common/error.h"
#include "common/tensor.h"
#include "quant/linear_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define FP16_ONE 0x3c00u

int qp_linear_group_size_ok(int gs)
{
    if (gs == 0)
        return 1;
    /* the sizes of QP_LINEAR_GROUP_SIZES, read from the text itself */
    const char *t = QP_LINEAR_GROUP_SIZES;
    while (*t) {
        char *end;
        long v = strtol(t, &end, 10);
        if (v == gs)
            return 1;
        t = *end == '|' ? end + 1 : end;
    }
    return 0;
}

static int check_params(const qp_linear_params *p, int64_t rows, int64_t cols)
{
    if (!p)
        return qp_error_set(QP_EUSAGE, "linear quantization: no parameters given");
    if (p->bits < 2 || p->bits > 8)
        return qp_error_set(QP_EUSAGE, "linear quantization: bits %d is not supported (use 2 to 8)", p->bits);
    int gs = p->group_size;
    if (!qp_linear_group_size_ok(gs))
        return qp_error_set(QP_EUSAGE,
                            "linear quantization: group_size %d is not supported (use 32, 64, 128, 256, or -1 for one group per row)",
                            gs);
    if (rows < 1 || cols < 1)
        return qp_error_set(QP_EUSAGE, "weight [%lld x %lld]: a linear weight needs at least one row and one column",
                            (long long)rows, (long long)cols);
    if (rows > INT64_MAX / cols)
        return qp_error_set(QP_EUSAGE, "weight [%lld x %lld]: too many elements", (long long)rows, (long long)cols);
    if (gs > 0 && cols % gs != 0)
        return qp_error_set(QP_EUSAGE,
                            "weight [%lld x %lld]: %lld input columns are not a multiple of group_size %d (choose a group size that divides %lld, or -1 for one group per row)",
                            (long long)rows, (long long)cols, (long long)cols, gs, (long long)cols);
    return 0;
}

int qp_linear_new(qp_linear **out, int64_t rows, int64_t cols, const qp_linear_params *p)
{
    *out = NULL;
    int rc = check_params(p, rows, cols);
    if (rc)
        return rc;
    qp_linear *q = qp_xcalloc(1, sizeof *q);
    q->rows = rows;
    q->cols = cols;
    q->bits = p->bits;
    q->maxq = (1 << p->bits) - 1;
    q->group_size_param = p->group_size <= 0 ? -1 : p->group_size;
    q->group_size = p->group_size <= 0 ? (int)(cols > INT32_MAX ? INT32_MAX : cols) : p->group_size;
    if (p->group_size <= 0 && cols > INT32_MAX) {
        free(q);
        return qp_error_set(QP_EUSAGE, "weight [%lld x %lld]: rows longer than 2^31 columns are not supported",
                            (long long)rows, (long long)cols);
    }
    q->n_groups = cols / q->group_size;
    q->sym = p->sym != 0;
    q->mse = p->mse != 0;
    const size_t ng = (size_t)rows * (size_t)q->n_groups;
    q->codes = qp_xcalloc((size_t)rows * (size_t)cols, 1);
    q->scales = qp_xmalloc(ng * sizeof *q->scales);
    q->zeros = qp_xcalloc(ng, 1);
    q->g_idx = qp_xmalloc((size_t)cols * sizeof *q->g_idx);
    q->order = qp_xmalloc((size_t)cols * sizeof *q->order);
    for (size_t i = 0; i < ng; i++)
        q->scales[i] = FP16_ONE;
    for (int64_t c = 0; c < cols; c++) {
        q->g_idx[c] = (int32_t)(c / q->group_size);
        q->order[c] = (int32_t)c;
    }
    *out = q;
    return 0;
}

void qp_linear_free(qp_linear *q)
{
    if (!q)
        return;
    free(q->codes);
    free(q->scales);
    free(q->zeros);
    free(q->g_idx);
    free(q->order);
    free(q);
}

void qp_linear_view_of(const qp_linear *q, qp_linear_view *v)
{
    *v = (qp_linear_view){
        .rows = q->rows, .cols = q->cols, .n_groups = q->n_groups, .bits = q->bits, .maxq = q->maxq,
        .group_size = q->group_size, .group_size_given = q->group_size_param, .sym = q->sym, .mse = q->mse,
        .codes = q->codes, .scales = q->scales, .zeros = q->zeros, .g_idx = q->g_idx,
    };
}

/* Checks g_idx against (cols, n_groups, group_size); QP_EUSAGE, one line. */
static int check_g_idx(const qp_linear *q, const int32_t *g_idx, const char *what, int code)
{
    int64_t *count = qp_xcalloc((size_t)q->n_groups, sizeof *count);
    int rc = 0;
    for (int64_t c = 0; c < q->cols; c++) {
        if (g_idx[c] < 0 || g_idx[c] >= q->n_groups) {
            rc = qp_error_set(code, "%s: g_idx[%lld] = %d is outside [0, %lld) for %lld groups", what,
                              (long long)c, g_idx[c], (long long)q->n_groups, (long long)q->n_groups);
            goto done;
        }
        count[g_idx[c]]++;
    }
    for (int64_t g = 0; g < q->n_groups; g++) {
        if (count[g] != q->group_size) {
            rc = qp_error_set(code, "%s: g_idx puts %lld columns in group %lld, every group needs exactly %d",
                              what, (long long)count[g], (long long)g, q->group_size);
            goto done;
        }
    }
done:
    free(count);
    return rc;
}

/* order[] = columns sorted by group, ascending inside a group (counting sort). */
static void build_order(qp_linear *q)
{
    int64_t next = 0;
    int custom = 0;
    for (int64_t g = 0; g < q->n_groups; g++) {
        for (int64_t c = 0; c < q->cols; c++)
            if (q->g_idx[c] == g)
                q->order[next++] = (int32_t)c;
    }
    for (int64_t c = 0; c < q->cols; c++)
        custom |= q->g_idx[c] != (int32_t)(c / q->group_size);
    q->custom_g_idx = custom;
}

int qp_linear_set_g_idx(qp_linear *q, const int32_t *g_idx)
{
    int rc = check_g_idx(q, g_idx, "g_idx", QP_EUSAGE);
    if (rc)
        return rc;
    memcpy(q->g_idx, g_idx, (size_t)q->cols * sizeof *g_idx);
    if (q->n_groups == 1) {
        for (int64_t c = 0; c < q->cols; c++)
            q->order[c] = (int32_t)c;
        q->custom_g_idx = 0;
    } else {
        build_order(q);
    }
    return 0;
}

/* ---- grid fits ---------------------------------------------------------- */

uint16_t qp_linear_scale_f16(float s)
{
    uint16_t h = qp_f32_to_f16(s);
    return h == 0 ? 1 : h;   /* 2^-24: the scale must stay positive for w / s */
}

/* (s, z) for the range [xmin, xmax] (xmin <= 0 <= xmax, not both 0). */
static int grid_from_range(int maxq, int sym, float xmin, float xmax, uint16_t *s16, uint8_t *z)
{
    float s32 = (xmax - xmin) / (float)maxq;
    uint16_t h = qp_linear_scale_f16(s32);
    if ((h & 0x7c00u) == 0x7c00u)
        return QP_LIN_OVERFLOW;
    int zz;
    if (sym) {
        zz = (maxq + 1) / 2;
    } else {
        float zf = rintf(-xmin / qp_f16_to_f32(h));
        zf = zf < 0.0f ? 0.0f : zf;
        zf = zf > (float)maxq ? (float)maxq : zf;
        zz = (int)zf;
    }
    *s16 = h;
    *z = (uint8_t)zz;
    return QP_LIN_OK;
}

/* GPTQ's range from the raw min/max: 0 inside, sym mirroring, all-zero → ±1. */
static void gptq_range(int sym, float wmin, float wmax, float *xmin, float *xmax)
{
    float lo = wmin < 0.0f ? wmin : 0.0f;
    float hi = wmax > 0.0f ? wmax : 0.0f;
    if (sym) {
        hi = -lo > hi ? -lo : hi;
        if (lo < 0.0f)
            lo = -hi;
    }
    if (lo == 0.0f && hi == 0.0f) {
        lo = -1.0f;
        hi = 1.0f;
    }
    *xmin = lo;
    *xmax = hi;
}

int qp_lin_fit_minmax(int bits, int sym, float wmin, float wmax, uint16_t *s16, uint8_t *z,
                      float *xmin, float *xmax)
{
    gptq_range(sym, wmin, wmax, xmin, xmax);
    return grid_from_range((1 << bits) - 1, sym, *xmin, *xmax, s16, z);
}

/* Σ |Ŵ − w|^2.4 of n values on the grid (s16, z), in the given order. */
static double grid_error(const float *w, int64_t n, uint16_t s16, int z, int maxq)
{
    const float s = qp_f16_to_f32(s16);
    double err = 0.0;
    for (int64_t k = 0; k < n; k++) {
        float e = qp_linear_value(qp_linear_code(w[k], s, z, maxq), s, z) - w[k];
        err += (double)powf(fabsf(e), 2.4f);
    }
    return err;
}

int qp_lin_fit_mse(int bits, int sym, const float *w, int64_t n, float wmin, float wmax,
                   uint16_t *s16, uint8_t *z, float *xmin, float *xmax)
{
    const int maxq = (1 << bits) - 1;
    gptq_range(sym, wmin, wmax, xmin, xmax);
    /* GPTQ: grid 100, maxshrink 0.8 -> int(0.8 * 100) = 80 candidates, p = 1 - i/100
     * (a Python double, applied to the f32 range as an f32 factor). */
    double best = INFINITY;
    int found = 0;
    for (int i = 0; i < 80; i++) {
        float p = (float)(1.0 - (double)i / 100.0);
        uint16_t h;
        uint8_t zz;
        if (grid_from_range(maxq, sym, p * *xmin, p * *xmax, &h, &zz)) {
            if (i == 0)
                return QP_LIN_OVERFLOW;
            continue;
        }
        double err = grid_error(w, n, h, zz, maxq);
        if (!found || err < best) {
            best = err;
            *s16 = h;
            *z = zz;
            found = 1;
        }
    }
    return QP_LIN_OK;
}

int qp_linear_fit_group(const qp_linear_params *p, const float *w, int64_t n, int64_t stride,
                        uint16_t *scale_f16, uint8_t *zero)
{
    if (!p || p->bits < 2 || p->bits > 8)
        return qp_error_set(QP_EUSAGE, "fit group: bits %d is not supported (use 2 to 8)", p ? p->bits : 0);
    if (n < 1 || !w)
        return qp_error_set(QP_EUSAGE, "fit group: a group needs at least one value (got %lld)", (long long)n);
    float *tmp = p->mse ? qp_xmalloc((size_t)n * sizeof *tmp) : NULL;
    int rc = 0;
    float mn = w[0], mx = w[0];
    for (int64_t k = 0; k < n; k++) {
        float v = w[k * stride];
        if (!isfinite(v)) {
            rc = qp_error_set(QP_EUSAGE, "fit group: value %lld of %lld is %s", (long long)k, (long long)n,
                              isnan(v) ? "nan" : "inf");
            goto done;
        }
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
        if (tmp)
            tmp[k] = v;
    }
    float xmin, xmax;
    int st = p->mse ? qp_lin_fit_mse(p->bits, p->sym, tmp, n, mn, mx, scale_f16, zero, &xmin, &xmax)
                    : qp_lin_fit_minmax(p->bits, p->sym, mn, mx, scale_f16, zero, &xmin, &xmax);
    if (st)
        rc = qp_error_set(QP_EUSAGE,
                          "fit group: values span [%g, %g]; the scale %g overflows fp16 (max 65504) at %d bits",
                          (double)xmin, (double)xmax, (double)((xmax - xmin) / (float)((1 << p->bits) - 1)),
                          p->bits);
done:
    free(tmp);
    return rc;
}

/* ---- reference RTN ------------------------------------------------------ */

int qp_lin_report(const qp_linear *q, const qp_lin_fail *f)
{
    if (f->kind == QP_LIN_NONFINITE)
        return qp_error_set(QP_EUSAGE, "weight [%lld x %lld]: row %lld, column %lld: weight is not finite; fix the checkpoint",
                            (long long)q->rows, (long long)q->cols, (long long)f->row, (long long)f->col);
    return qp_error_set(QP_EUSAGE,
                        "weight [%lld x %lld]: row %lld, group %lld: weights span [%g, %g]; the scale %g overflows fp16 (max 65504) at %d bits",
                        (long long)q->rows, (long long)q->cols, (long long)f->row, (long long)f->group,
                        (double)f->xmin, (double)f->xmax,
                        (double)((f->xmax - f->xmin) / (float)q->maxq), q->bits);
}

int qp_lin_rtn_row(qp_linear *q, const float *w, int64_t r, float *scratch, qp_lin_fail *f)
{
    for (int64_t c = 0; c < q->cols; c++) {
        if (!isfinite(w[c])) {
            *f = (qp_lin_fail){ .kind = QP_LIN_NONFINITE, .row = r, .col = c };
            return QP_LIN_NONFINITE;
        }
    }
    const int gs = q->group_size;
    uint8_t *codes = q->codes + r * q->cols;
    for (int64_t g = 0; g < q->n_groups; g++) {
        const int32_t *cols = q->order + g * gs;
        float mn = w[cols[0]], mx = mn;
        for (int k = 0; k < gs; k++) {
            float v = w[cols[k]];
            scratch[k] = v;
            mn = v < mn ? v : mn;
            mx = v > mx ? v : mx;
        }
        uint16_t h;
        uint8_t z;
        float xmin, xmax;
        int st = q->mse ? qp_lin_fit_mse(q->bits, q->sym, scratch, gs, mn, mx, &h, &z, &xmin, &xmax)
                        : qp_lin_fit_minmax(q->bits, q->sym, mn, mx, &h, &z, &xmin, &xmax);
        if (st) {
            *f = (qp_lin_fail){ .kind = st, .row = r, .group = g, .xmin = xmin, .xmax = xmax };
            return st;
        }
        const float s = qp_f16_to_f32(h);
        for (int k = 0; k < gs; k++)
            codes[cols[k]] = qp_linear_code(scratch[k], s, z, q->maxq);
        q->scales[r * q->n_groups + g] = h;
        q->zeros[r * q->n_groups + g] = z;
    }
    return QP_LIN_OK;
}

int qp_rtn_quantize_ref(qp_linear *q, const float *w)
{
    if (!q || !w)
        return qp_error_set(QP_EUSAGE, "rtn: no weight given");
    float *scratch = qp_xmalloc((size_t)q->group_size * sizeof *scratch);
    int rc = 0;
    for (int64_t r = 0; r < q->rows; r++) {
        qp_lin_fail f;
        if (qp_lin_rtn_row(q, w + r * q->cols, r, scratch, &f)) {
            rc = qp_lin_report(q, &f);
            break;
        }
    }
    free(scratch);
    return rc;
}

/* ---- dequantization, validation, size ----------------------------------- */

int qp_linear_dequantize(const qp_linear *q, float *w)
{
    if (!q || !w)
        return qp_error_set(QP_EUSAGE, "dequantize: no buffer given");
    const int64_t cols = q->cols, ng = q->n_groups;
    for (int64_t r = 0; r < q->rows; r++) {
        const uint8_t *codes = q->codes + r * cols;
        float *out = w + r * cols;
        if (!q->custom_g_idx) {
            /* contiguous groups: constant (s, z) along each run of columns */
            for (int64_t g = 0; g < ng; g++) {
                const float s = qp_f16_to_f32(q->scales[r * ng + g]);
                const int z = q->zeros[r * ng + g];
                const int64_t c0 = g * q->group_size;
                for (int64_t c = c0; c < c0 + q->group_size; c++)
                    out[c] = s * (float)((int)codes[c] - z);
            }
        } else {
            for (int64_t c = 0; c < cols; c++) {
                const int64_t g = q->g_idx[c];
                out[c] = qp_linear_value(codes[c], qp_f16_to_f32(q->scales[r * ng + g]), q->zeros[r * ng + g]);
            }
        }
    }
    return 0;
}

int qp_linear_validate(const qp_linear *q, const char *what)
{
    const int64_t ng = q->n_groups;
    for (int64_t r = 0; r < q->rows; r++) {
        const uint8_t *codes = q->codes + r * q->cols;
        for (int64_t c = 0; c < q->cols; c++) {
            if (codes[c] > q->maxq)
                return qp_error_set(QP_ECORRUPT, "%s: row %lld, column %lld: code %d > maxq %d for %d bits",
                                    what, (long long)r, (long long)c, codes[c], q->maxq, q->bits);
        }
        for (int64_t g = 0; g < ng; g++) {
            uint16_t h = q->scales[r * ng + g];
            if ((h & 0x8000u) || (h & 0x7c00u) == 0x7c00u || h == 0)
                return qp_error_set(QP_ECORRUPT, "%s: row %lld, group %lld: scale 0x%04x is not a positive finite fp16",
                                    what, (long long)r, (long long)g, h);
            if (q->zeros[r * ng + g] > q->maxq)
                return qp_error_set(QP_ECORRUPT, "%s: row %lld, group %lld: zero %d > maxq %d for %d bits",
                                    what, (long long)r, (long long)g, q->zeros[r * ng + g], q->maxq, q->bits);
        }
    }
    return check_g_idx(q, q->g_idx, what, QP_ECORRUPT);
}

double qp_linear_bits_per_weight(const qp_linear *q)
{
    const double n = (double)q->rows * (double)q->cols;
    const double groups = (double)q->rows * (double)q->n_groups;
    return (n * q->bits + groups * (16.0 + q->bits)) / n;
}

void qp_lin_after_g_idx(qp_linear *q)
{
    build_order(q);
}
