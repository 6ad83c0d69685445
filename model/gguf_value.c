/* Typed access to GGUF metadata values (see gguf.h).  Values were fully
 * validated by qp_gguf_open, so raw bytes are in bounds here. */
#include "model/gguf_internal.h"

#include "common/error.h"

#include <inttypes.h>
#include <string.h>

const char *qp_gguf_type_name(qp_gguf_type t)
{
    static const char *names[] = { "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool",
                                   "string", "array", "u64", "i64", "f64" };
    return (unsigned)t < sizeof(names) / sizeof(names[0]) ? names[t] : "?";
}

int qp_gguf_type_known(uint32_t t)
{
    return t <= QP_GGUF_F64;
}

size_t qp_gguf_type_size(uint32_t t)
{
    switch (t) {
    case QP_GGUF_U8: case QP_GGUF_I8: case QP_GGUF_BOOL: return 1;
    case QP_GGUF_U16: case QP_GGUF_I16: return 2;
    case QP_GGUF_U32: case QP_GGUF_I32: case QP_GGUF_F32: return 4;
    case QP_GGUF_U64: case QP_GGUF_I64: case QP_GGUF_F64: return 8;
    default: return 0;
    }
}

qp_gguf_type qp_gguf_value_type(const qp_gguf_value *v) { return v->type; }

/* The value under key with exactly type t (or any type when t < 0). */
static int lookup(const qp_gguf *g, const char *key, int t, const qp_gguf_value **out)
{
    const qp_gguf_value *v = qp_gguf_find(g, key);
    if (!v)
        return qp_error_set(QP_ENOTFOUND, "%s: key '%s': missing", g->path, key);
    if (t >= 0 && v->type != (qp_gguf_type)t)
        return qp_error_set(QP_EFORMAT, "%s: key '%s': is %s, expected %s", g->path, key,
                            qp_gguf_type_name(v->type), qp_gguf_type_name((qp_gguf_type)t));
    *out = v;
    return 0;
}

#define SCALAR_GETTER(fn, ctype, gtype)                               \
    int fn(const qp_gguf *g, const char *key, ctype *out)             \
    {                                                                 \
        const qp_gguf_value *v = NULL;                                \
        int rc = lookup(g, key, gtype, &v);                           \
        if (rc == 0)                                                  \
            memcpy(out, v->raw, sizeof(ctype));                       \
        return rc;                                                    \
    }

SCALAR_GETTER(qp_gguf_get_u8, uint8_t, QP_GGUF_U8)
SCALAR_GETTER(qp_gguf_get_i8, int8_t, QP_GGUF_I8)
SCALAR_GETTER(qp_gguf_get_u16, uint16_t, QP_GGUF_U16)
SCALAR_GETTER(qp_gguf_get_i16, int16_t, QP_GGUF_I16)
SCALAR_GETTER(qp_gguf_get_u32, uint32_t, QP_GGUF_U32)
SCALAR_GETTER(qp_gguf_get_i32, int32_t, QP_GGUF_I32)
SCALAR_GETTER(qp_gguf_get_u64, uint64_t, QP_GGUF_U64)
SCALAR_GETTER(qp_gguf_get_i64, int64_t, QP_GGUF_I64)
SCALAR_GETTER(qp_gguf_get_f32, float, QP_GGUF_F32)
SCALAR_GETTER(qp_gguf_get_f64, double, QP_GGUF_F64)

int qp_gguf_get_bool(const qp_gguf *g, const char *key, bool *out)
{
    const qp_gguf_value *v = NULL;
    int rc = lookup(g, key, QP_GGUF_BOOL, &v);
    if (rc == 0)
        *out = v->raw[0] != 0;
    return rc;
}

int qp_gguf_get_string(const qp_gguf *g, const char *key, const char **s, uint64_t *len)
{
    const qp_gguf_value *v = NULL;
    int rc = lookup(g, key, QP_GGUF_STRING, &v);
    if (rc == 0) {
        *s = v->str;
        if (len)
            *len = v->n;
    }
    return rc;
}

/* Integer of any width at p, as int64; -1 when a u64 exceeds INT64_MAX,
 * -2 when t is not an integer type. */
static int load_int(qp_gguf_type t, const unsigned char *p, int64_t *out)
{
    switch (t) {
    case QP_GGUF_U8: *out = p[0]; return 0;
    case QP_GGUF_I8: { int8_t x; memcpy(&x, p, 1); *out = x; return 0; }
    case QP_GGUF_U16: { uint16_t x; memcpy(&x, p, 2); *out = x; return 0; }
    case QP_GGUF_I16: { int16_t x; memcpy(&x, p, 2); *out = x; return 0; }
    case QP_GGUF_U32: { uint32_t x; memcpy(&x, p, 4); *out = x; return 0; }
    case QP_GGUF_I32: { int32_t x; memcpy(&x, p, 4); *out = x; return 0; }
    case QP_GGUF_I64: memcpy(out, p, 8); return 0;
    case QP_GGUF_U64: {
        uint64_t x;
        memcpy(&x, p, 8);
        if (x > INT64_MAX)
            return -1;
        *out = (int64_t)x;
        return 0;
    }
    default: return -2;
    }
}

static int load_float(qp_gguf_type t, const unsigned char *p, double *out)
{
    if (t == QP_GGUF_F32) {
        float f;
        memcpy(&f, p, 4);
        *out = f;
        return 0;
    }
    if (t == QP_GGUF_F64) {
        memcpy(out, p, 8);
        return 0;
    }
    return -1;
}

int qp_gguf_get_int(const qp_gguf *g, const char *key, int64_t *out)
{
    const qp_gguf_value *v = NULL;
    int rc = lookup(g, key, -1, &v);
    if (rc != 0)
        return rc;
    int s = load_int(v->type, v->raw, out);
    if (s == -1)
        return qp_error_set(QP_EFORMAT, "%s: key '%s': u64 value does not fit in int64", g->path, key);
    if (s == -2)
        return qp_error_set(QP_EFORMAT, "%s: key '%s': is %s, expected an integer", g->path, key,
                            qp_gguf_type_name(v->type));
    return 0;
}

int qp_gguf_get_float(const qp_gguf *g, const char *key, double *out)
{
    const qp_gguf_value *v = NULL;
    int rc = lookup(g, key, -1, &v);
    if (rc != 0)
        return rc;
    if (load_float(v->type, v->raw, out) != 0)
        return qp_error_set(QP_EFORMAT, "%s: key '%s': is %s, expected f32 or f64", g->path, key,
                            qp_gguf_type_name(v->type));
    return 0;
}

int qp_gguf_get_array(const qp_gguf *g, const char *key, int elem_type, const qp_gguf_value **out)
{
    const qp_gguf_value *v = NULL;
    int rc = lookup(g, key, QP_GGUF_ARRAY, &v);
    if (rc != 0)
        return rc;
    if (elem_type >= 0 && v->elem != (qp_gguf_type)elem_type)
        return qp_error_set(QP_EFORMAT, "%s: key '%s': array of %s, expected %s", g->path, key,
                            qp_gguf_type_name(v->elem), qp_gguf_type_name((qp_gguf_type)elem_type));
    *out = v;
    return 0;
}

qp_gguf_type qp_gguf_array_type(const qp_gguf_value *a) { return a->elem; }
uint64_t qp_gguf_array_len(const qp_gguf_value *a) { return a->type == QP_GGUF_ARRAY ? a->n : 0; }

const void *qp_gguf_array_data(const qp_gguf_value *a)
{
    return a->type == QP_GGUF_ARRAY ? a->raw : NULL;
}

static size_t elem_size(qp_gguf_type t)
{
    switch (t) {
    case QP_GGUF_U8: case QP_GGUF_I8: case QP_GGUF_BOOL: return 1;
    case QP_GGUF_U16: case QP_GGUF_I16: return 2;
    case QP_GGUF_U32: case QP_GGUF_I32: case QP_GGUF_F32: return 4;
    default: return 8;
    }
}

/* Checks that a is an array and i in range. */
static int check_index(const qp_gguf_value *a, uint64_t i)
{
    if (a->type != QP_GGUF_ARRAY)
        return qp_error_set(QP_EFORMAT, "%s: key '%s': is %s, expected an array", a->g->path, a->key,
                            qp_gguf_type_name(a->type));
    if (i >= a->n)
        return qp_error_set(QP_EFORMAT, "%s: key '%s': index %" PRIu64 " out of range (length %" PRIu64 ")",
                            a->g->path, a->key, i, a->n);
    return 0;
}

static int wrong_elem(const qp_gguf_value *a, const char *want)
{
    return qp_error_set(QP_EFORMAT, "%s: key '%s': array of %s, expected %s", a->g->path, a->key,
                        qp_gguf_type_name(a->elem), want);
}

int qp_gguf_array_get_int(const qp_gguf_value *a, uint64_t i, int64_t *out)
{
    int rc = check_index(a, i);
    if (rc != 0)
        return rc;
    if (!a->raw)
        return wrong_elem(a, "integers");
    int s = load_int(a->elem, a->raw + i * elem_size(a->elem), out);
    if (s == -1)
        return qp_error_set(QP_EFORMAT, "%s: key '%s': element %" PRIu64 " does not fit in int64", a->g->path,
                            a->key, i);
    return s == -2 ? wrong_elem(a, "integers") : 0;
}

int qp_gguf_array_get_float(const qp_gguf_value *a, uint64_t i, double *out)
{
    int rc = check_index(a, i);
    if (rc != 0)
        return rc;
    if (!a->raw || load_float(a->elem, a->raw + i * elem_size(a->elem), out) != 0)
        return wrong_elem(a, "f32 or f64");
    return 0;
}

int qp_gguf_array_get_bool(const qp_gguf_value *a, uint64_t i, bool *out)
{
    int rc = check_index(a, i);
    if (rc != 0)
        return rc;
    if (a->elem != QP_GGUF_BOOL)
        return wrong_elem(a, "bool");
    *out = a->raw[i] != 0;
    return 0;
}

int qp_gguf_array_get_string(const qp_gguf_value *a, uint64_t i, const char **s, uint64_t *len)
{
    int rc = check_index(a, i);
    if (rc != 0)
        return rc;
    if (a->elem != QP_GGUF_STRING)
        return wrong_elem(a, "string");
    *s = a->items[i].str;
    if (len)
        *len = a->items[i].n;
    return 0;
}

int qp_gguf_array_get_array(const qp_gguf_value *a, uint64_t i, const qp_gguf_value **out)
{
    int rc = check_index(a, i);
    if (rc != 0)
        return rc;
    if (a->elem != QP_GGUF_ARRAY)
        return wrong_elem(a, "array");
    *out = &a->items[i];
    return 0;
}

int qp_gguf_array_copy_f32(const qp_gguf_value *a, float *dst)
{
    if (a->type != QP_GGUF_ARRAY || (a->elem != QP_GGUF_F32 && a->elem != QP_GGUF_F64))
        return a->type != QP_GGUF_ARRAY ? check_index(a, 0) : wrong_elem(a, "f32 or f64");
    if (a->elem == QP_GGUF_F32) {
        memcpy(dst, a->raw, (size_t)a->n * 4);
        return 0;
    }
    for (uint64_t i = 0; i < a->n; i++) {
        double d;
        memcpy(&d, a->raw + 8 * i, 8);
        dst[i] = (float)d;
    }
    return 0;
}

int qp_gguf_array_copy_i32(const qp_gguf_value *a, int32_t *dst)
{
    if (a->type != QP_GGUF_ARRAY)
        return check_index(a, 0);
    if (!a->raw || a->elem == QP_GGUF_F32 || a->elem == QP_GGUF_F64 || a->elem == QP_GGUF_BOOL)
        return wrong_elem(a, "integers");
    size_t es = elem_size(a->elem);
    for (uint64_t i = 0; i < a->n; i++) {
        int64_t x;
        if (load_int(a->elem, a->raw + i * es, &x) != 0 || x < INT32_MIN || x > INT32_MAX)
            return qp_error_set(QP_EFORMAT, "%s: key '%s': element %" PRIu64 " does not fit in int32", a->g->path,
                                a->key, i);
        dst[i] = (int32_t)x;
    }
    return 0;
}
