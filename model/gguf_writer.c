/* GGUF v3 writer (see gguf_writer.h for the layout).  Metadata values are
 * serialised when added (u32 value type + little-endian value), so the
 * writer owns no caller memory except borrowed tensor data. */
#include "model/gguf_writer.h"

#include "common/alloc.h"
#include "common/buf.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/seqout.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#define GGUF_DEFAULT_ALIGNMENT 32u
#define GGUF_MAX_NAME 64          /* ggml's GGML_MAX_NAME, NUL included */
#define ALIGN_KEY "general.alignment"

typedef struct {
    char *key;
    uint8_t *val;      /* u32 type + value, little-endian */
    size_t len;
} wkv;

typedef struct {
    char *name;
    uint32_t type;
    int n_dims;
    uint64_t ne[QP_GGUF_MAX_DIMS];
    uint64_t nbytes;
    const void *data;
    qp_gguf_fill_fn fill;
    qp_gguf_view_fn view;
    void *ud;
} wtensor;

struct qp_gguf_writer {
    char *path;
    char *tmp;         /* temp file beside path */
    int fd;
    wkv *kv;
    size_t n_kv, cap_kv;
    wtensor *t;
    size_t n_t, cap_t;
    void (*on_free)(void *);
    void *on_free_ud;
    char *digest;   /* where finish() puts the file's SHA-256, NULL: not wanted */
};

/* ---- little-endian serialisation into a qp_buf ---- */

static void bb_le(qp_buf *b, uint64_t v, int nbytes)
{
    uint8_t tmp[8];
    for (int i = 0; i < nbytes; i++)
        tmp[i] = (uint8_t)(v >> (8 * i));
    qp_buf_append(b, tmp, (size_t)nbytes);
}

static void bb_str(qp_buf *b, const char *s, size_t len)
{
    bb_le(b, len, 8);
    qp_buf_append(b, s, len);
}

/* One host-layout scalar -> little-endian bytes. */
static void bb_scalar(qp_buf *b, qp_gguf_type t, const void *src)
{
    size_t sz = qp_gguf_type_size(t);
    uint64_t v = 0;
    if (t == QP_GGUF_BOOL) {
        v = *(const uint8_t *)src ? 1 : 0;
    } else if (sz == 1) {
        v = *(const uint8_t *)src;
    } else if (sz == 2) {
        uint16_t x;
        memcpy(&x, src, 2);
        v = x;
    } else if (sz == 4) {
        uint32_t x;
        memcpy(&x, src, 4);
        v = x;
    } else {
        memcpy(&v, src, 8);
    }
    bb_le(b, v, (int)sz);
}

/* Array body (elem type, count, elements); 0 or QP_EUSAGE with message. */
static int bb_array(qp_buf *b, const qp_gguf_array *a, const char *path, const char *key)
{
    if (!qp_gguf_type_known((uint32_t)a->type))
        return qp_error_set(QP_EUSAGE, "%s: key '%s': array of unknown type %d", path, key, (int)a->type);
    bb_le(b, (uint32_t)a->type, 4);
    bb_le(b, a->n, 8);
    if (a->n == 0)
        return 0;
    if (a->type == QP_GGUF_STRING) {
        if (!a->strs)
            return qp_error_set(QP_EUSAGE, "%s: key '%s': NULL array data", path, key);
        for (size_t i = 0; i < a->n; i++) {
            const char *s = a->strs[i] ? a->strs[i] : "";
            bb_str(b, s, a->lens ? a->lens[i] : strlen(s));
        }
    } else if (a->type == QP_GGUF_ARRAY) {
        if (!a->arrays)
            return qp_error_set(QP_EUSAGE, "%s: key '%s': NULL array data", path, key);
        for (size_t i = 0; i < a->n; i++) {
            int rc = bb_array(b, &a->arrays[i], path, key);
            if (rc != 0)
                return rc;
        }
    } else {
        size_t sz = qp_gguf_type_size(a->type);
        if (!a->data)
            return qp_error_set(QP_EUSAGE, "%s: key '%s': NULL array data", path, key);
        for (size_t i = 0; i < a->n; i++)
            bb_scalar(b, a->type, (const uint8_t *)a->data + i * sz);
    }
    return 0;
}

/* ---- writer ---- */

int qp_gguf_writer_new(qp_gguf_writer **out, const char *path)
{
    int rc;
    char *dir = NULL;
    qp_gguf_writer *w = qp_xcalloc(1, sizeof(*w));
    *out = NULL;
    w->fd = -1;
    w->path = qp_xstrdup(path);
    dir = qp_path_dirname(path);
    if ((rc = qp_mkstemp_in(dir, ".qpipe-gguf", &w->tmp, &w->fd)) != 0) {
        qp_gguf_writer_abort(w);
        goto done;
    }
    *out = w;
done:
    free(dir);
    return rc;
}

void qp_gguf_writer_abort(qp_gguf_writer *w)
{
    if (!w)
        return;
    if (w->on_free)
        w->on_free(w->on_free_ud);
    qp_tmp_discard(w->fd, w->tmp);
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].val);
    }
    free(w->kv);
    for (size_t i = 0; i < w->n_t; i++)
        free(w->t[i].name);
    free(w->t);
    free(w->path);
    free(w);
}

static ssize_t find_kv(const qp_gguf_writer *w, const char *key)
{
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kv[i].key, key) == 0)
            return (ssize_t)i;
    return -1;
}

static int check_key(qp_gguf_writer *w, const char *key)
{
    if (!key || !*key)
        return qp_error_set(QP_EUSAGE, "%s: key '': empty key", w->path);
    if (find_kv(w, key) >= 0)
        return qp_error_set(QP_EUSAGE, "%s: key '%s': already added", w->path, key);
    return 0;
}

/* Takes ownership of b's bytes. */
static void push_kv(qp_gguf_writer *w, const char *key, qp_buf *b)
{
    if (w->n_kv == w->cap_kv) {
        w->cap_kv = w->cap_kv ? 2 * w->cap_kv : 32;
        w->kv = qp_xrealloc_array(w->kv, w->cap_kv, sizeof(*w->kv));
    }
    w->kv[w->n_kv].key = qp_xstrdup(key);
    w->kv[w->n_kv].val = (uint8_t *)qp_buf_detach(b, &w->kv[w->n_kv].len);
    w->n_kv++;
}

static int add_scalar(qp_gguf_writer *w, const char *key, qp_gguf_type t, const void *v)
{
    qp_buf b = QP_BUF_INIT;
    int rc = check_key(w, key);
    if (rc != 0)
        return rc;
    if (strcmp(key, ALIGN_KEY) == 0) {
        uint32_t a = 0;
        if (t == QP_GGUF_U32)
            memcpy(&a, v, 4);
        if (t != QP_GGUF_U32 || a == 0 || (a & (a - 1)) != 0)
            return qp_error_set(QP_EUSAGE, "%s: key '%s': must be a u32 power of two, got %s%u", w->path,
                                key, t == QP_GGUF_U32 ? "" : "type ", t == QP_GGUF_U32 ? a : (unsigned)t);
    }
    bb_le(&b, (uint32_t)t, 4);
    bb_scalar(&b, t, v);
    push_kv(w, key, &b);
    return 0;
}

int qp_gguf_writer_add_u8(qp_gguf_writer *w, const char *key, uint8_t v) { return add_scalar(w, key, QP_GGUF_U8, &v); }
int qp_gguf_writer_add_i8(qp_gguf_writer *w, const char *key, int8_t v) { return add_scalar(w, key, QP_GGUF_I8, &v); }
int qp_gguf_writer_add_u16(qp_gguf_writer *w, const char *key, uint16_t v) { return add_scalar(w, key, QP_GGUF_U16, &v); }
int qp_gguf_writer_add_i16(qp_gguf_writer *w, const char *key, int16_t v) { return add_scalar(w, key, QP_GGUF_I16, &v); }
int qp_gguf_writer_add_u32(qp_gguf_writer *w, const char *key, uint32_t v) { return add_scalar(w, key, QP_GGUF_U32, &v); }
int qp_gguf_writer_add_i32(qp_gguf_writer *w, const char *key, int32_t v) { return add_scalar(w, key, QP_GGUF_I32, &v); }
int qp_gguf_writer_add_u64(qp_gguf_writer *w, const char *key, uint64_t v) { return add_scalar(w, key, QP_GGUF_U64, &v); }
int qp_gguf_writer_add_i64(qp_gguf_writer *w, const char *key, int64_t v) { return add_scalar(w, key, QP_GGUF_I64, &v); }
int qp_gguf_writer_add_f32(qp_gguf_writer *w, const char *key, float v) { return add_scalar(w, key, QP_GGUF_F32, &v); }
int qp_gguf_writer_add_f64(qp_gguf_writer *w, const char *key, double v) { return add_scalar(w, key, QP_GGUF_F64, &v); }

int qp_gguf_writer_add_bool(qp_gguf_writer *w, const char *key, bool v)
{
    uint8_t b = v ? 1 : 0;
    return add_scalar(w, key, QP_GGUF_BOOL, &b);
}

int qp_gguf_writer_add_string(qp_gguf_writer *w, const char *key, const char *s, size_t len)
{
    qp_buf b = QP_BUF_INIT;
    int rc = check_key(w, key);
    if (rc != 0)
        return rc;
    if (!s && len)
        return qp_error_set(QP_EUSAGE, "%s: key '%s': NULL string", w->path, key);
    bb_le(&b, QP_GGUF_STRING, 4);
    bb_str(&b, s ? s : "", len);
    push_kv(w, key, &b);
    return 0;
}

int qp_gguf_writer_add_str(qp_gguf_writer *w, const char *key, const char *s)
{
    return qp_gguf_writer_add_string(w, key, s, s ? strlen(s) : 0);
}

int qp_gguf_writer_add_array(qp_gguf_writer *w, const char *key, const qp_gguf_array *a)
{
    qp_buf b = QP_BUF_INIT;
    int rc = check_key(w, key);
    if (rc != 0)
        return rc;
    if (strcmp(key, ALIGN_KEY) == 0)
        return qp_error_set(QP_EUSAGE, "%s: key '%s': must be a u32 power of two, got an array", w->path, key);
    bb_le(&b, QP_GGUF_ARRAY, 4);
    if ((rc = bb_array(&b, a, w->path, key)) != 0) {
        qp_buf_free(&b);
        return rc;
    }
    push_kv(w, key, &b);
    return 0;
}

int qp_gguf_writer_add_scalar_array(qp_gguf_writer *w, const char *key, qp_gguf_type type,
                                    const void *data, size_t n)
{
    qp_gguf_array a = { .type = type, .n = n, .data = data };
    if (type == QP_GGUF_STRING || type == QP_GGUF_ARRAY)
        return qp_error_set(QP_EUSAGE, "%s: key '%s': %s is not a scalar element type", w->path,
                            key ? key : "", qp_gguf_type_name(type));
    return qp_gguf_writer_add_array(w, key, &a);
}

int qp_gguf_writer_add_string_array(qp_gguf_writer *w, const char *key, const char *const *strs,
                                    const size_t *lens, size_t n)
{
    qp_gguf_array a = { .type = QP_GGUF_STRING, .n = n, .strs = strs, .lens = lens };
    return qp_gguf_writer_add_array(w, key, &a);
}

/* ---- copying from a reader ---- */

static int copy_array(qp_buf *b, const qp_gguf_value *a)
{
    qp_gguf_type et = qp_gguf_array_type(a);
    uint64_t n = qp_gguf_array_len(a);
    int rc;
    bb_le(b, (uint32_t)et, 4);
    bb_le(b, n, 8);
    if (et == QP_GGUF_STRING) {
        for (uint64_t i = 0; i < n; i++) {
            const char *s;
            uint64_t len;
            if ((rc = qp_gguf_array_get_string(a, i, &s, &len)) != 0)
                return rc;
            bb_str(b, s, len);
        }
    } else if (et == QP_GGUF_ARRAY) {
        for (uint64_t i = 0; i < n; i++) {
            const qp_gguf_value *sub;
            if ((rc = qp_gguf_array_get_array(a, i, &sub)) != 0 || (rc = copy_array(b, sub)) != 0)
                return rc;
        }
    } else {
        /* the reader's raw elements are already little-endian */
        qp_buf_append(b, qp_gguf_array_data(a), n * qp_gguf_type_size(et));
    }
    return 0;
}

int qp_gguf_writer_copy_kv(qp_gguf_writer *w, const qp_gguf *g, size_t i)
{
    const char *key = qp_gguf_kv_key(g, i);
    const qp_gguf_value *v = qp_gguf_kv_value(g, i);
    qp_gguf_type t = qp_gguf_value_type(v);
    int rc = check_key(w, key);
    qp_buf b = QP_BUF_INIT;
    if (rc != 0)
        return rc;
    bb_le(&b, (uint32_t)t, 4);
    switch (t) {
    case QP_GGUF_STRING: {
        const char *s;
        uint64_t len;
        rc = qp_gguf_get_string(g, key, &s, &len);
        if (rc == 0)
            bb_str(&b, s, len);
        break;
    }
    case QP_GGUF_ARRAY:
        rc = copy_array(&b, v);
        break;
    case QP_GGUF_BOOL: {
        bool x;
        rc = qp_gguf_get_bool(g, key, &x);
        bb_le(&b, x ? 1 : 0, 1);
        break;
    }
    case QP_GGUF_F32: {
        float x;
        rc = qp_gguf_get_f32(g, key, &x);
        bb_scalar(&b, t, &x);
        break;
    }
    case QP_GGUF_F64: {
        double x;
        rc = qp_gguf_get_f64(g, key, &x);
        bb_scalar(&b, t, &x);
        break;
    }
    default: {
        /* every integer type fits int64 except large u64: read it exactly */
        if (t == QP_GGUF_U64) {
            uint64_t x;
            rc = qp_gguf_get_u64(g, key, &x);
            bb_le(&b, x, 8);
        } else {
            int64_t x;
            rc = qp_gguf_get_int(g, key, &x);
            bb_le(&b, (uint64_t)x, (int)qp_gguf_type_size(t));
        }
        break;
    }
    }
    if (rc != 0) {
        qp_buf_free(&b);
        return rc;
    }
    if (strcmp(key, ALIGN_KEY) == 0) {
        uint32_t a = 0;
        if (t == QP_GGUF_U32)
            memcpy(&a, b.data + 4, 4);
        if (t != QP_GGUF_U32 || a == 0 || (a & (a - 1)) != 0) {
            qp_buf_free(&b);
            return qp_error_set(QP_EUSAGE, "%s: key '%s': must be a u32 power of two, got %s%u", w->path,
                                key, t == QP_GGUF_U32 ? "" : "type ", t == QP_GGUF_U32 ? a : (unsigned)t);
        }
    }
    push_kv(w, key, &b);
    return 0;
}

void qp_gguf_writer_remove_key(qp_gguf_writer *w, const char *key)
{
    ssize_t i = find_kv(w, key);
    if (i < 0)
        return;
    free(w->kv[i].key);
    free(w->kv[i].val);
    memmove(&w->kv[i], &w->kv[i + 1], (w->n_kv - (size_t)i - 1) * sizeof(w->kv[0]));
    w->n_kv--;
}

size_t qp_gguf_writer_kv_count(const qp_gguf_writer *w)
{
    return w->n_kv;
}

const char *qp_gguf_writer_kv_key(const qp_gguf_writer *w, size_t i)
{
    return i < w->n_kv ? w->kv[i].key : NULL;
}

/* ---- tensors ---- */

uint64_t qp_gguf_tensor_nbytes(uint32_t type, int n_dims, const uint64_t *ne)
{
    uint64_t blk = qp_ggml_block_size(type), tsz = qp_ggml_type_size(type);
    if (blk == 0 || tsz == 0 || n_dims < 1 || n_dims > QP_GGUF_MAX_DIMS || ne[0] % blk != 0)
        return 0;
    uint64_t n = ne[0] / blk * tsz;
    for (int i = 1; i < n_dims; i++) {
        if (ne[i] != 0 && n > UINT64_MAX / ne[i])
            return 0;
        n *= ne[i];
    }
    return n;
}

static int add_tensor(qp_gguf_writer *w, const char *name, uint32_t type, int n_dims, const uint64_t *ne,
                      const void *data, size_t nbytes, int check_nbytes, qp_gguf_fill_fn fill,
                      qp_gguf_view_fn view, void *ud)
{
    const char *nm = name ? name : "";
    if (!name || !*name)
        return qp_error_set(QP_EUSAGE, "%s: tensor '': empty name", w->path);
    if (strlen(name) >= GGUF_MAX_NAME)
        return qp_error_set(QP_EUSAGE, "%s: tensor '%s': name longer than %d bytes", w->path, nm,
                            GGUF_MAX_NAME - 1);
    for (size_t i = 0; i < w->n_t; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return qp_error_set(QP_EUSAGE, "%s: tensor '%s': already added", w->path, nm);
    if (qp_ggml_type_size(type) == 0)
        return qp_error_set(QP_EUSAGE, "%s: tensor '%s': unknown ggml type %u", w->path, nm, type);
    if (n_dims < 1 || n_dims > QP_GGUF_MAX_DIMS)
        return qp_error_set(QP_EUSAGE, "%s: tensor '%s': %d dimensions, expected 1 to %d", w->path, nm,
                            n_dims, QP_GGUF_MAX_DIMS);
    if (ne[0] % qp_ggml_block_size(type) != 0)
        return qp_error_set(QP_EUSAGE, "%s: tensor '%s': rows of %llu elements are not a multiple of the %s block (%u)",
                            w->path, nm, (unsigned long long)ne[0], qp_ggml_type_name(type),
                            qp_ggml_block_size(type));
    uint64_t want = qp_gguf_tensor_nbytes(type, n_dims, ne);
    int empty = 0;
    for (int i = 0; i < n_dims; i++)
        empty |= ne[i] == 0;
    if (want == 0 && !empty)   /* a zero count only from an overflowing product */
        return qp_error_set(QP_EUSAGE, "%s: tensor '%s': size overflows", w->path, nm);
    if (check_nbytes && (uint64_t)nbytes != want)
        return qp_error_set(QP_EUSAGE, "%s: tensor '%s': %zu bytes given, %s %llu bytes", w->path, nm,
                            nbytes, "its type and shape need", (unsigned long long)want);
    if (check_nbytes && !data && want)
        return qp_error_set(QP_EUSAGE, "%s: tensor '%s': NULL data", w->path, nm);
    if (w->n_t == w->cap_t) {
        w->cap_t = w->cap_t ? 2 * w->cap_t : 64;
        w->t = qp_xrealloc_array(w->t, w->cap_t, sizeof(*w->t));
    }
    wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof(*t));
    t->name = qp_xstrdup(name);
    t->type = type;
    t->n_dims = n_dims;
    for (int i = 0; i < QP_GGUF_MAX_DIMS; i++)
        t->ne[i] = i < n_dims ? ne[i] : 1;
    t->nbytes = want;
    t->data = data;
    t->fill = fill;
    t->view = view;
    t->ud = ud;
    w->n_t++;
    return 0;
}

int qp_gguf_writer_add_tensor(qp_gguf_writer *w, const char *name, uint32_t type, int n_dims,
                              const uint64_t *ne, const void *data, size_t nbytes)
{
    return add_tensor(w, name, type, n_dims, ne, data, nbytes, 1, NULL, NULL, NULL);
}

int qp_gguf_writer_add_tensor_cb(qp_gguf_writer *w, const char *name, uint32_t type, int n_dims,
                                 const uint64_t *ne, qp_gguf_fill_fn fill, void *ud)
{
    if (!fill)
        return qp_error_set(QP_EUSAGE, "%s: tensor '%s': NULL fill callback", w->path, name ? name : "");
    return add_tensor(w, name, type, n_dims, ne, NULL, 0, 0, fill, NULL, ud);
}

int qp_gguf_writer_add_tensor_view(qp_gguf_writer *w, const char *name, uint32_t type, int n_dims,
                                   const uint64_t *ne, qp_gguf_view_fn view, void *ud)
{
    if (!view)
        return qp_error_set(QP_EUSAGE, "%s: tensor '%s': NULL view callback", w->path, name ? name : "");
    return add_tensor(w, name, type, n_dims, ne, NULL, 0, 0, NULL, view, ud);
}

size_t qp_gguf_writer_tensor_count(const qp_gguf_writer *w)
{
    return w->n_t;
}

void qp_gguf_writer_on_free(qp_gguf_writer *w, void (*fn)(void *ud), void *ud)
{
    w->on_free = fn;
    w->on_free_ud = ud;
}

void qp_gguf_writer_want_digest(qp_gguf_writer *w, char digest[QP_HEX_LEN])
{
    w->digest = digest;
}

/* ---- output ---- */

static uint64_t pad_to(uint64_t x, uint64_t a)
{
    return (x + a - 1) / a * a;
}

static uint32_t alignment_of(const qp_gguf_writer *w)
{
    ssize_t i = find_kv(w, ALIGN_KEY);
    uint32_t a;
    if (i < 0)
        return GGUF_DEFAULT_ALIGNMENT;
    memcpy(&a, w->kv[i].val + 4, 4);   /* validated u32 when added */
    return a;
}

/* The file goes out through qp_seqout (common/seqout.h): large aligned
 * writes past the page cache where the filesystem allows it, hashed and
 * written on a second thread; the one fsync at the end (qp_tmp_publish)
 * makes it durable. */
static int out_zeros(qp_seqout *o, uint64_t n)
{
    static const uint8_t zeros[256];
    while (n > 0) {
        size_t k = n > sizeof(zeros) ? sizeof(zeros) : (size_t)n;
        int rc = qp_seqout_write(o, zeros, k);
        if (rc)
            return rc;
        n -= k;
    }
    return 0;
}

/* Streams the file: header and tensor infos (every offset follows from the
 * types and shapes added), then each tensor as it is produced — one
 * tensor's bytes in memory at a time (the fill buffer is reused). */
static int write_file(qp_gguf_writer *w)
{
    uint32_t align = alignment_of(w);
    qp_buf h = QP_BUF_INIT;
    int rc = QP_ERROR;
    uint8_t *buf = NULL;
    size_t buf_cap = 0;
    qp_seqout *o = NULL;

    if ((rc = qp_seqout_new(&o, w->fd, w->tmp, w->digest != NULL)) != 0)
        return rc;
    qp_buf_append(&h, "GGUF", 4);
    bb_le(&h, 3, 4);
    bb_le(&h, w->n_t, 8);
    bb_le(&h, w->n_kv, 8);
    for (size_t i = 0; i < w->n_kv; i++) {
        bb_str(&h, w->kv[i].key, strlen(w->kv[i].key));
        qp_buf_append(&h, w->kv[i].val, w->kv[i].len);
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        bb_str(&h, t->name, strlen(t->name));
        bb_le(&h, (uint32_t)t->n_dims, 4);
        for (int d = 0; d < t->n_dims; d++)
            bb_le(&h, t->ne[d], 8);
        bb_le(&h, t->type, 4);
        bb_le(&h, off, 8);
        off += pad_to(t->nbytes, align);
    }
    uint64_t hpad = pad_to(h.len, align) - h.len;
    for (uint64_t i = 0; i < hpad; i++)
        qp_buf_putc(&h, 0);
    if ((rc = qp_seqout_write(o, h.data, h.len)) != 0)
        goto done;
    qp_buf_free(&h);
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        const void *src = t->data;
        if (t->fill || t->view) {
            if (t->nbytes > buf_cap) {
                free(buf);
                buf_cap = (size_t)t->nbytes;
                buf = qp_xmalloc(buf_cap);
            }
            /* a fill that skipped a byte must not leak the previous
             * tensor's into the file: output stays deterministic */
            if (t->view) {
                /* the callback's own bytes, or all of buf (its contract) */
                src = NULL;
                if ((rc = t->view(t->ud, t->name, buf, (size_t)t->nbytes, &src)) != 0)
                    goto done;
                if (!src) {
                    rc = qp_error_set(QP_ERROR, "%s: tensor '%s': no data produced", w->tmp, t->name);
                    goto done;
                }
            } else {
                memset(buf, 0, (size_t)t->nbytes);
                if ((rc = t->fill(t->ud, t->name, buf, (size_t)t->nbytes)) != 0)
                    goto done;
                src = buf;
            }
        }
        if ((rc = qp_seqout_write(o, src, (size_t)t->nbytes)) != 0 ||
            (rc = out_zeros(o, pad_to(t->nbytes, align) - t->nbytes)) != 0)
            goto done;
    }
    rc = qp_seqout_finish(o, w->digest);
done:
    qp_seqout_free(o);
    free(buf);
    qp_buf_free(&h);
    return rc;
}

int qp_gguf_writer_finish(qp_gguf_writer *w)
{
    if (!w)
        return qp_error_set(QP_EUSAGE, "qp_gguf_writer_finish: NULL writer");
    int rc = write_file(w);
    if (rc == 0) {
        rc = qp_tmp_publish(w->fd, w->tmp, w->path, 0644);
        w->fd = -1;
        w->tmp = NULL;
    }
    qp_gguf_writer_abort(w);
    return rc;
}
