#include "stages/qtensor.h"
#include "common/error.h"
#include "common/tensor.h"
#include "quant/int8.h"
#include "quant/linear.h"
#include "quant/nf4.h"
#include "quant/qtypes.h"

#include <math.h>
#include <string.h>

uint64_t qp_qtensor_nelem(const json_t *entry)
{
    const json_t *shape = json_object_get(entry, "shape");
    if (!json_is_array(shape))
        return 0;
    uint64_t n = 1;
    size_t i;
    json_t *d;
    json_array_foreach(shape, i, d) {
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return 0;
        n *= (uint64_t)json_integer_value(d);
    }
    return n;
}

void qp_qtensor_rows_cols(const json_t *entry, int64_t *rows, int64_t *cols)
{
    const json_t *shape = json_object_get(entry, "shape");
    size_t nd = json_array_size(shape);
    int64_t r = nd >= 2 ? (int64_t)json_integer_value(json_array_get(shape, 0)) : 1, c = 1;
    for (size_t i = nd >= 2 ? 1 : 0; i < nd; i++)
        c *= (int64_t)json_integer_value(json_array_get(shape, i));
    *rows = r;
    *cols = c;
}

static const char *format_of(const json_t *entry)
{
    const char *f = json_string_value(json_object_get(entry, "format"));
    return f ? f : "dense";
}

/* Every packed format: deserialise (validated), check the shape against the
 * manifest, dequantize. */
static int shape_mismatch(const char *what, int64_t r, int64_t c, int64_t rows, int64_t cols)
{
    return qp_error_set(QP_ECORRUPT, "%s: packed weight is %lld x %lld, the manifest says %lld x %lld", what,
                        (long long)r, (long long)c, (long long)rows, (long long)cols);
}

#define PACKED_DECODER(fn, type, prefix)                                                                       \
    static int fn(const void *bytes, size_t len, float *dst, int64_t rows, int64_t cols, const char *what)    \
    {                                                                                                          \
        type *q = NULL;                                                                                        \
        int rc = prefix##_deserialize(&q, bytes, len, what);                                                   \
        if (rc)                                                                                                \
            return rc;                                                                                         \
        prefix##_view v;                                                                                       \
        prefix##_view_of(q, &v);                                                                               \
        rc = v.rows != rows || v.cols != cols ? shape_mismatch(what, v.rows, v.cols, rows, cols)               \
                                              : prefix##_dequantize(q, dst);                                   \
        prefix##_free(q);                                                                                      \
        return rc;                                                                                             \
    }

PACKED_DECODER(decode_linear, qp_linear, qp_linear)
PACKED_DECODER(decode_nf4, qp_nf4, qp_nf4)
PACKED_DECODER(decode_int8, qp_int8, qp_int8)

static const struct {
    const char *name;
    int (*decode)(const void *, size_t, float *, int64_t, int64_t, const char *);
} packed_formats[] = {
    {"linear", decode_linear},
    {"nf4", decode_nf4},
    {"int8", decode_int8},
};

int qp_qtensor_to_f32(const json_t *entry, const void *bytes, size_t len, float *dst, uint64_t nelem,
                      const char *what)
{
    const char *fmt = format_of(entry);
    if (qp_qtensor_nelem(entry) != nelem)
        return qp_error_set(QP_EFORMAT, "%s: manifest shape holds %llu elements, expected %llu", what,
                            (unsigned long long)qp_qtensor_nelem(entry), (unsigned long long)nelem);
    if (strcmp(fmt, "dense") == 0) {
        qp_dtype dt = qp_dtype_parse(json_string_value(json_object_get(entry, "dtype")));
        if (dt == QP_DT_INVALID || len != nelem * qp_dtype_size(dt))
            return qp_error_set(QP_ECORRUPT, "%s: %zu bytes do not hold %llu %s elements", what, len,
                                (unsigned long long)nelem, qp_dtype_name(dt) ? qp_dtype_name(dt) : "?");
        if (qp_convert_to_f32(dst, bytes, dt, (size_t)nelem) != 0)
            return qp_error_set(QP_EFORMAT, "%s: dtype %s is not a float type", what, qp_dtype_name(dt));
        return 0;
    }
    if (strcmp(fmt, "ggml") == 0) {
        const qp_qtype_info *qi = qp_qtype_by_name(json_string_value(json_object_get(entry, "qtype")));
        int64_t rows, cols;
        qp_qtensor_rows_cols(entry, &rows, &cols);
        size_t row_size = qi ? qp_qtype_row_size(qi->type, cols) : 0;
        if (!qi || row_size == 0 || len != (size_t)rows * row_size)
            return qp_error_set(QP_ECORRUPT, "%s: %zu bytes are not %lld rows of %s", what, len, (long long)rows,
                                qi ? qi->name : "an unknown ggml type");
        for (int64_t r = 0; r < rows; r++) {
            int rc = qp_dequantize_row(qi->type, (const char *)bytes + (size_t)r * row_size, dst + r * cols, cols);
            if (rc)
                return rc;
        }
        return 0;
    }
    int64_t rows, cols;
    qp_qtensor_rows_cols(entry, &rows, &cols);
    for (size_t k = 0; k < sizeof(packed_formats) / sizeof(packed_formats[0]); k++)
        if (strcmp(fmt, packed_formats[k].name) == 0)
            return packed_formats[k].decode(bytes, len, dst, rows, cols, what);
    return qp_error_set(QP_EFORMAT, "%s: unknown tensor format '%s' (written by a newer qpipe?)", what, fmt);
}

int qp_qtensor_layout_of(qp_qtensor_layout *out, const json_t *entry, size_t len, const char *what)
{
    const char *fmt = format_of(entry);
    memset(out, 0, sizeof(*out));
    qp_qtensor_rows_cols(entry, &out->rows, &out->cols);
    uint64_t nelem = qp_qtensor_nelem(entry);
    if (strcmp(fmt, "dense") == 0) {
        qp_dtype dt = qp_dtype_parse(json_string_value(json_object_get(entry, "dtype")));
        float probe;
        if (dt == QP_DT_INVALID || len != nelem * qp_dtype_size(dt))
            return qp_error_set(QP_ECORRUPT, "%s: %zu bytes do not hold %llu %s elements", what, len,
                                (unsigned long long)nelem, qp_dtype_name(dt) ? qp_dtype_name(dt) : "?");
        if (qp_convert_to_f32(&probe, "\0\0\0\0\0\0\0\0", dt, 1) != 0)
            return qp_error_set(QP_EFORMAT, "%s: dtype %s is not a float type", what, qp_dtype_name(dt));
        out->dtype = (int)dt;
        out->row_bytes = (size_t)out->cols * qp_dtype_size(dt);
        return 1;
    }
    if (strcmp(fmt, "ggml") == 0) {
        const qp_qtype_info *qi = qp_qtype_by_name(json_string_value(json_object_get(entry, "qtype")));
        size_t row_size = qi ? qp_qtype_row_size(qi->type, out->cols) : 0;
        if (!qi || row_size == 0 || len != (size_t)out->rows * row_size)
            return qp_error_set(QP_ECORRUPT, "%s: %zu bytes are not %lld rows of %s", what, len,
                                (long long)out->rows, qi ? qi->name : "an unknown ggml type");
        out->ggml = 1;
        out->qtype = (int)qi->type;
        out->row_bytes = row_size;
        return 1;
    }
    return 0;
}

int qp_qtensor_layout_rows(const qp_qtensor_layout *l, const void *bytes, int64_t row0, int64_t nrows, float *dst)
{
    const char *p = (const char *)bytes + (size_t)row0 * l->row_bytes;
    if (!l->ggml)
        return qp_convert_to_f32(dst, p, (qp_dtype)l->dtype, (size_t)(nrows * l->cols)) != 0
                   ? qp_error_set(QP_EFORMAT, "tensor: dtype %d is not a float type", l->dtype)
                   : 0;
    for (int64_t r = 0; r < nrows; r++) {
        int rc = qp_dequantize_row((qp_ggml_type)l->qtype, p + (size_t)r * l->row_bytes, dst + r * l->cols, l->cols);
        if (rc)
            return rc;
    }
    return 0;
}

double qp_qtensor_bits(const json_t *entry, size_t len)
{
    const json_t *bpw = json_object_get(entry, "bpw");
    if (json_is_number(bpw))
        return json_number_value(bpw);
    uint64_t n = qp_qtensor_nelem(entry);
    return n ? 8.0 * (double)len / (double)n : 0.0;
}

int qp_qtensor_check_finite(const float *w, int64_t rows, int64_t cols, const char *what)
{
    const int64_t b = qp_first_nonfinite(w, rows * cols);
    if (b < 0)
        return 0;
    const uint64_t i = (uint64_t)b;
    return qp_error_set(QP_EFORMAT, "%s: row %lld, column %lld is %s; fix the checkpoint (quantization needs finite "
                                    "weights)", what, (long long)(i / (uint64_t)cols), (long long)(i % (uint64_t)cols),
                        isnan(w[i]) ? "NaN" : "infinite");
}
