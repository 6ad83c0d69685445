/* GGUF reader: mmap, parse and validate every field before anything uses it. */
#include "model/gguf_internal.h"

#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Values are read with memcpy in host order. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the GGUF reader assumes a little-endian host");

#define GGUF_HEADER 24u          /* magic, version, tensor count, kv count */
#define GGUF_MAX_DEPTH 8         /* array nesting levels; deeper is hostile */
#define GGUF_DEFAULT_ALIGN 32u

struct qp_gguf_chunk {
    qp_gguf_chunk *next;
    size_t used, cap;
    char data[];
};

/* NUL-terminated copy of n bytes; chunks of 1 MB keep 100k-token
 * vocabularies to a handful of allocations. */
static const char *arena_copy(qp_gguf *g, const unsigned char *s, uint64_t n)
{
    qp_gguf_chunk *c = g->arena;
    if (!c || c->cap - c->used < n + 1) {
        size_t cap = n + 1 > (1u << 20) ? (size_t)n + 1 : (1u << 20);
        c = qp_xmalloc(sizeof(*c) + cap);
        c->used = 0;
        c->cap = cap;
        c->next = g->arena;
        g->arena = c;
    }
    char *d = c->data + c->used;
    memcpy(d, s, (size_t)n);
    d[n] = '\0';
    c->used += (size_t)n + 1;
    return d;
}

typedef struct {
    qp_gguf *g;
    uint64_t pos;
    const char *key;   /* key being parsed, for messages */
    uint64_t str_len;  /* length field of the last read_str, for messages */
} reader;

static uint64_t left(const reader *r)
{
    return (uint64_t)r->g->size - r->pos;
}

static int rd(reader *r, void *out, size_t n)
{
    if (left(r) < n)
        return -1;
    memcpy(out, r->g->map + r->pos, n);
    r->pos += n;
    return 0;
}

/* -1: the length field itself is cut off; -2: the bytes run past EOF.
 * r->pos is left at the string on failure. */
static int read_str(reader *r, const char **s, uint64_t *len)
{
    uint64_t at = r->pos, n;
    if (rd(r, &n, 8) != 0)
        return -1;
    r->str_len = n;
    if (n > left(r)) {
        r->pos = at;
        return -2;
    }
    *s = arena_copy(r->g, r->g->map + r->pos, n);
    *len = n;
    r->pos += n;
    return 0;
}

static int bool_check(reader *r, const unsigned char *p, uint64_t n, uint64_t at)
{
    for (uint64_t i = 0; i < n; i++)
        if (p[i] > 1)
            return qp_error_set(QP_EFORMAT, "%s: key '%s': bool value %u at offset %" PRIu64 " is neither 0 nor 1",
                                r->g->path, r->key, p[i], at + i);
    return 0;
}

static int parse_value(reader *r, qp_gguf_value *v, uint32_t type, int depth)
{
    qp_gguf *g = r->g;
    uint64_t at = r->pos;
    v->g = g;
    v->key = r->key;
    v->type = (qp_gguf_type)type;
    if (type == QP_GGUF_STRING) {
        int s = read_str(r, &v->str, &v->n);
        if (s == -1)
            return qp_error_set(QP_EFORMAT, "%s: key '%s': value truncated at offset %" PRIu64 " (file is %zu bytes)",
                                g->path, r->key, at, g->size);
        if (s == -2)
            return qp_error_set(QP_EFORMAT, "%s: key '%s': string length %" PRIu64 " at offset %" PRIu64
                                " runs past the end of the file (%zu bytes)", g->path, r->key, r->str_len, at,
                                g->size);
        return 0;
    }
    if (type == QP_GGUF_ARRAY) {
        uint32_t et;
        uint64_t count;
        if (depth >= GGUF_MAX_DEPTH)
            return qp_error_set(QP_EFORMAT, "%s: key '%s': arrays nested deeper than %d levels at offset %" PRIu64,
                                g->path, r->key, GGUF_MAX_DEPTH, at);
        if (rd(r, &et, 4) != 0 || rd(r, &count, 8) != 0)
            return qp_error_set(QP_EFORMAT, "%s: key '%s': value truncated at offset %" PRIu64 " (file is %zu bytes)",
                                g->path, r->key, at, g->size);
        if (!qp_gguf_type_known(et))
            return qp_error_set(QP_EFORMAT, "%s: key '%s': unknown array element type %" PRIu32 " at offset %" PRIu64,
                                g->path, r->key, et, at);
        v->elem = (qp_gguf_type)et;
        v->n = count;
        /* smallest encoding of one element bounds the count before any allocation */
        uint64_t min = et == QP_GGUF_STRING ? 8 : et == QP_GGUF_ARRAY ? 12 : qp_gguf_type_size(et);
        if (count > left(r) / min)
            return qp_error_set(QP_EFORMAT, "%s: key '%s': array count %" PRIu64 " at offset %" PRIu64
                                " cannot fit in the remaining %" PRIu64 " bytes", g->path, r->key, count, at + 4,
                                left(r));
        if (min == qp_gguf_type_size(et) && et != QP_GGUF_STRING) {
            v->raw = g->map + r->pos;
            r->pos += count * min;
            return et == QP_GGUF_BOOL ? bool_check(r, v->raw, count, r->pos - count) : 0;
        }
        v->items = qp_xcalloc(count ? count : 1, sizeof(*v->items));
        for (uint64_t i = 0; i < count; i++) {
            int rc = parse_value(r, &v->items[i], et, depth + 1);
            if (rc != 0)
                return rc;
        }
        return 0;
    }
    size_t sz = qp_gguf_type_size(type);
    if (sz == 0)
        return qp_error_set(QP_EFORMAT, "%s: key '%s': unknown value type %" PRIu32 " at offset %" PRIu64,
                            g->path, r->key, type, at - 4);
    if (left(r) < sz)
        return qp_error_set(QP_EFORMAT, "%s: key '%s': value truncated at offset %" PRIu64 " (file is %zu bytes)",
                            g->path, r->key, at, g->size);
    v->raw = g->map + r->pos;
    r->pos += sz;
    return type == QP_GGUF_BOOL ? bool_check(r, v->raw, 1, at) : 0;
}

static int cmp_key_idx(const void *a, const void *b, void *ctx)
{
    const qp_gguf *g = ctx;
    return strcmp(g->keys[*(const size_t *)a], g->keys[*(const size_t *)b]);
}

static int cmp_tensor_name_idx(const void *a, const void *b, void *ctx)
{
    const qp_gguf *g = ctx;
    return strcmp(g->tensors[*(const size_t *)a].name, g->tensors[*(const size_t *)b].name);
}

static int cmp_tensor_off_idx(const void *a, const void *b, void *ctx)
{
    const qp_gguf *g = ctx;
    const qp_gguf_tensor *x = &g->tensors[*(const size_t *)a], *y = &g->tensors[*(const size_t *)b];
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    if (x->nbytes != y->nbytes)
        return x->nbytes < y->nbytes ? -1 : 1;
    return *(const size_t *)a < *(const size_t *)b ? -1 : 1;
}

/* idx = 0..n-1 sorted by cmp (glibc qsort_r: comparator gets g). */
static void sort_idx(qp_gguf *g, size_t *idx, size_t n, int (*cmp)(const void *, const void *, void *))
{
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    qsort_r(idx, n, sizeof(*idx), cmp, g);
}

static int parse_kvs(qp_gguf *g, reader *r)
{
    for (size_t i = 0; i < g->n_kv; i++) {
        uint64_t at = r->pos, klen;
        const char *key;
        uint32_t type;
        int s = read_str(r, &key, &klen);
        if (s == -1)
            return qp_error_set(QP_EFORMAT, "%s: offset %" PRIu64 ": metadata entry %zu truncated (file is %zu bytes)",
                                g->path, at, i, g->size);
        if (s == -2)
            return qp_error_set(QP_EFORMAT, "%s: offset %" PRIu64 ": key length %" PRIu64
                                " runs past the end of the file (%zu bytes)", g->path, at, r->str_len, g->size);
        if (strlen(key) != klen || klen == 0)
            return qp_error_set(QP_EFORMAT, "%s: offset %" PRIu64 ": key is empty or contains a NUL byte", g->path, at);
        g->keys[i] = (char *)key;
        r->key = key;
        if (rd(r, &type, 4) != 0)
            return qp_error_set(QP_EFORMAT, "%s: key '%s': value truncated at offset %" PRIu64 " (file is %zu bytes)",
                                g->path, key, r->pos, g->size);
        int rc = parse_value(r, &g->vals[i], type, 0);
        if (rc != 0)
            return rc;
    }
    sort_idx(g, g->kv_sorted, g->n_kv, cmp_key_idx);
    for (size_t i = 1; i < g->n_kv; i++)
        if (strcmp(g->keys[g->kv_sorted[i]], g->keys[g->kv_sorted[i - 1]]) == 0)
            return qp_error_set(QP_EFORMAT, "%s: key '%s': duplicate key", g->path, g->keys[g->kv_sorted[i]]);
    const qp_gguf_value *al = qp_gguf_find(g, "general.alignment");
    g->alignment = GGUF_DEFAULT_ALIGN;
    if (al) {
        uint32_t a;
        if (al->type != QP_GGUF_U32)
            return qp_error_set(QP_EFORMAT, "%s: key 'general.alignment': is %s, expected u32", g->path,
                                qp_gguf_type_name(al->type));
        memcpy(&a, al->raw, 4);
        if (a == 0 || (a & (a - 1)) != 0)
            return qp_error_set(QP_EFORMAT, "%s: key 'general.alignment': %" PRIu32 " is not a power of two",
                                g->path, a);
        g->alignment = a;
    }
    return 0;
}

static int parse_tensor_info(qp_gguf *g, reader *r, qp_gguf_tensor *t)
{
    uint64_t at = r->pos, len;
    uint32_t nd;
    int s = read_str(r, &t->name, &len);
    if (s == -1)
        return qp_error_set(QP_EFORMAT, "%s: offset %" PRIu64 ": tensor info truncated (file is %zu bytes)",
                            g->path, at, g->size);
    if (s == -2)
        return qp_error_set(QP_EFORMAT, "%s: offset %" PRIu64 ": tensor name length %" PRIu64
                            " runs past the end of the file (%zu bytes)", g->path, at, r->str_len, g->size);
    if (strlen(t->name) != len)
        return qp_error_set(QP_EFORMAT, "%s: offset %" PRIu64 ": tensor name contains a NUL byte", g->path, at);
    if (rd(r, &nd, 4) != 0)
        goto truncated;
    if (nd < 1 || nd > QP_GGUF_MAX_DIMS)
        return qp_error_set(QP_EFORMAT, "%s: tensor '%s': %" PRIu32 " dimensions, expected 1 to %d", g->path,
                            t->name, nd, QP_GGUF_MAX_DIMS);
    t->n_dims = (int)nd;
    for (int d = 0; d < QP_GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    for (int d = 0; d < t->n_dims; d++) {
        if (rd(r, &t->ne[d], 8) != 0)
            goto truncated;
        if (t->ne[d] > INT64_MAX)   /* ggml dimensions are int64 */
            return qp_error_set(QP_EFORMAT, "%s: tensor '%s': ne[%d] = %" PRIu64 " exceeds INT64_MAX", g->path,
                                t->name, d, t->ne[d]);
    }
    if (rd(r, &t->type, 4) != 0 || rd(r, &t->offset, 8) != 0)
        goto truncated;
    for (int d = 0; d < t->n_dims; d++)
        t->shape[d] = t->ne[t->n_dims - 1 - d];
    for (int d = t->n_dims; d < QP_GGUF_MAX_DIMS; d++)
        t->shape[d] = 1;

    uint32_t block = qp_ggml_block_size(t->type), bytes = qp_ggml_type_size(t->type);
    if (block == 0)
        return qp_error_set(QP_EFORMAT, "%s: tensor '%s': unknown ggml type %" PRIu32, g->path, t->name, t->type);
    if (t->ne[0] % block != 0)
        return qp_error_set(QP_EFORMAT, "%s: tensor '%s': ne[0] = %" PRIu64 " is not a multiple of the %s block size %"
                            PRIu32, g->path, t->name, t->ne[0], qp_ggml_type_name(t->type), block);
    /* nelem must fit int64 (ggml), nbytes uint64 */
    uint64_t nelem = 1, nbytes = t->ne[0] / block * bytes;
    int zero = 0, overflow = 0;
    for (int d = 0; d < t->n_dims; d++)
        zero |= t->ne[d] == 0;
    for (int d = 0; d < t->n_dims && !zero; d++) {
        if (nelem > (uint64_t)INT64_MAX / t->ne[d])
            overflow = 1;
        nelem *= t->ne[d];
        if (d > 0) {
            if (nbytes > UINT64_MAX / t->ne[d])
                overflow = 1;
            nbytes *= t->ne[d];
        }
    }
    if (overflow)
        return qp_error_set(QP_EFORMAT, "%s: tensor '%s': element or byte count overflows 64 bits", g->path, t->name);
    t->nelem = zero ? 0 : nelem;
    t->nbytes = zero ? 0 : nbytes;
    if (t->offset % g->alignment != 0)
        return qp_error_set(QP_EFORMAT, "%s: tensor '%s': offset %" PRIu64 " is not a multiple of the alignment %"
                            PRIu32, g->path, t->name, t->offset, g->alignment);
    return 0;
truncated:
    return qp_error_set(QP_EFORMAT, "%s: tensor '%s': tensor info truncated at offset %" PRIu64 " (file is %zu bytes)",
                        g->path, t->name, r->pos, g->size);
}

static int parse_tensors(qp_gguf *g, reader *r)
{
    for (size_t i = 0; i < g->n_t; i++) {
        int rc = parse_tensor_info(g, r, &g->tensors[i]);
        if (rc != 0)
            return rc;
    }
    sort_idx(g, g->t_sorted, g->n_t, cmp_tensor_name_idx);
    for (size_t i = 1; i < g->n_t; i++)
        if (strcmp(g->tensors[g->t_sorted[i]].name, g->tensors[g->t_sorted[i - 1]].name) == 0)
            return qp_error_set(QP_EFORMAT, "%s: tensor '%s': duplicate tensor name", g->path,
                                g->tensors[g->t_sorted[i]].name);
    /* the data section starts at the next multiple of the alignment */
    uint64_t a = g->alignment;
    g->data_off = (r->pos + a - 1) / a * a;
    uint64_t data_size = g->data_off < g->size ? g->size - g->data_off : 0;
    for (size_t i = 0; i < g->n_t; i++) {
        qp_gguf_tensor *t = &g->tensors[i];
        if (t->offset > data_size || t->nbytes > data_size - t->offset)
            return qp_error_set(QP_EFORMAT, "%s: tensor '%s': data [%" PRIu64 ", +%" PRIu64 ") runs past the end of "
                                "the data section (%" PRIu64 " bytes): file truncated?", g->path, t->name,
                                t->offset, t->nbytes, data_size);
        t->data = t->nbytes ? g->map + g->data_off + t->offset : NULL;
    }
    size_t *by_off = qp_xmalloc((g->n_t ? g->n_t : 1) * sizeof(*by_off));
    sort_idx(g, by_off, g->n_t, cmp_tensor_off_idx);
    int rc = 0;
    for (size_t i = 1; i < g->n_t; i++) {
        const qp_gguf_tensor *p = &g->tensors[by_off[i - 1]], *t = &g->tensors[by_off[i]];
        if (t->offset < p->offset + p->nbytes) {
            rc = qp_error_set(QP_EFORMAT, "%s: tensor '%s': data at offset %" PRIu64 " overlaps tensor '%s' [%" PRIu64
                              ", +%" PRIu64 ")", g->path, t->name, t->offset, p->name, p->offset, p->nbytes);
            break;
        }
    }
    free(by_off);
    return rc;
}

static int parse_header(qp_gguf *g)
{
    reader r = { .g = g };
    unsigned char magic[4];
    uint64_t nt, nkv;
    if (g->size < 4 || memcmp(g->map, "GGUF", 4) != 0) {
        if (g->size < 4)
            return qp_error_set(QP_EFORMAT, "%s: offset 0: file is %zu bytes, too short for a GGUF header",
                                g->path, g->size);
        memcpy(magic, g->map, 4);
        return qp_error_set(QP_EFORMAT, "%s: offset 0: bad magic %02x %02x %02x %02x, not a GGUF file", g->path,
                            magic[0], magic[1], magic[2], magic[3]);
    }
    if (g->size < GGUF_HEADER)
        return qp_error_set(QP_EFORMAT, "%s: offset 0: file is %zu bytes, too short for a GGUF header",
                            g->path, g->size);
    r.pos = 4;
    rd(&r, &g->version, 4);
    if (g->version != 2 && g->version != 3) {
        uint32_t sw = __builtin_bswap32(g->version);
        return qp_error_set(QP_EFORMAT, "%s: offset 4: unsupported GGUF version %" PRIu32 " (2 and 3 are read%s)",
                            g->path, g->version, sw == 2 || sw == 3 ? "; this looks like a big-endian file" : "");
    }
    rd(&r, &nt, 8);
    rd(&r, &nkv, 8);
    /* each tensor info takes >= 32 bytes, each kv >= 13: bound before allocating */
    if (nt > (g->size - GGUF_HEADER) / 32)
        return qp_error_set(QP_EFORMAT, "%s: offset 8: tensor count %" PRIu64 " cannot fit in a %zu-byte file "
                            "(corrupt count or truncated file)",
                            g->path, nt, g->size);
    if (nkv > (g->size - GGUF_HEADER) / 13)
        return qp_error_set(QP_EFORMAT, "%s: offset 16: metadata count %" PRIu64 " cannot fit in a %zu-byte file "
                            "(corrupt count or truncated file)",
                            g->path, nkv, g->size);
    g->n_kv = (size_t)nkv;
    g->n_t = (size_t)nt;
    g->keys = qp_xcalloc(g->n_kv + 1, sizeof(*g->keys));
    g->vals = qp_xcalloc(g->n_kv + 1, sizeof(*g->vals));
    g->kv_sorted = qp_xcalloc(g->n_kv + 1, sizeof(*g->kv_sorted));
    g->tensors = qp_xcalloc(g->n_t + 1, sizeof(*g->tensors));
    g->t_sorted = qp_xcalloc(g->n_t + 1, sizeof(*g->t_sorted));
    int rc = parse_kvs(g, &r);
    if (rc == 0)
        rc = parse_tensors(g, &r);
    return rc;
}

int qp_gguf_open(qp_gguf **out, const char *path)
{
    qp_gguf *g = qp_xcalloc(1, sizeof(*g));
    *out = NULL;
    g->path = qp_strdup(path);
    int rc = qp_map_file(path, &g->map, &g->size);
    if (rc == 0)
        rc = parse_header(g);
    if (rc != 0) {
        qp_gguf_free(g);
        return rc;
    }
    *out = g;
    return 0;
}

static void free_value(qp_gguf_value *v)
{
    if (!v->items)
        return;
    for (uint64_t i = 0; i < v->n; i++)
        free_value(&v->items[i]);
    free(v->items);
}

void qp_gguf_free(qp_gguf *g)
{
    if (!g)
        return;
    if (g->vals)
        for (size_t i = 0; i < g->n_kv; i++)
            free_value(&g->vals[i]);
    while (g->arena) {
        qp_gguf_chunk *n = g->arena->next;
        free(g->arena);
        g->arena = n;
    }
    if (g->map)
        munmap(g->map, g->size);
    free(g->keys);
    free(g->vals);
    free(g->kv_sorted);
    free(g->tensors);
    free(g->t_sorted);
    free(g->path);
    free(g);
}

const char *qp_gguf_path(const qp_gguf *g) { return g->path; }
uint32_t qp_gguf_version(const qp_gguf *g) { return g->version; }
uint32_t qp_gguf_alignment(const qp_gguf *g) { return g->alignment; }
uint64_t qp_gguf_data_offset(const qp_gguf *g) { return g->data_off; }
size_t qp_gguf_kv_count(const qp_gguf *g) { return g->n_kv; }
size_t qp_gguf_tensor_count(const qp_gguf *g) { return g->n_t; }

const char *qp_gguf_kv_key(const qp_gguf *g, size_t i)
{
    return i < g->n_kv ? g->keys[i] : NULL;
}

const qp_gguf_value *qp_gguf_kv_value(const qp_gguf *g, size_t i)
{
    return i < g->n_kv ? &g->vals[i] : NULL;
}

const qp_gguf_value *qp_gguf_find(const qp_gguf *g, const char *key)
{
    size_t lo = 0, hi = g->n_kv;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(g->keys[g->kv_sorted[mid]], key);
        if (c == 0)
            return &g->vals[g->kv_sorted[mid]];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const qp_gguf_tensor *qp_gguf_tensor_at(const qp_gguf *g, size_t i)
{
    return i < g->n_t ? &g->tensors[i] : NULL;
}

const qp_gguf_tensor *qp_gguf_find_tensor(const qp_gguf *g, const char *name)
{
    size_t lo = 0, hi = g->n_t;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(g->tensors[g->t_sorted[mid]].name, name);
        if (c == 0)
            return &g->tensors[g->t_sorted[mid]];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int qp_gguf_tensor_view(const qp_gguf *g, const qp_gguf_tensor *t, qp_tensor_view *out)
{
    qp_dtype dt;
    switch (t->type) {
    case QP_GGML_F32: dt = QP_DT_F32; break;
    case QP_GGML_F16: dt = QP_DT_F16; break;
    case QP_GGML_BF16: dt = QP_DT_BF16; break;
    case QP_GGML_F64: dt = QP_DT_F64; break;
    case QP_GGML_I8: dt = QP_DT_I8; break;
    case QP_GGML_I16: dt = QP_DT_I16; break;
    case QP_GGML_I32: dt = QP_DT_I32; break;
    case QP_GGML_I64: dt = QP_DT_I64; break;
    default:
        return qp_error_set(QP_EFORMAT, "%s: tensor '%s': type %s has no plain dtype (dequantize it first)",
                            g->path, t->name, qp_ggml_type_name(t->type));
    }
    memset(out, 0, sizeof(*out));
    out->name = t->name;
    out->dtype = dt;
    out->ndim = t->n_dims;
    for (int d = 0; d < t->n_dims; d++)
        out->shape[d] = t->shape[d];
    out->nelem = t->nelem;
    out->data = t->data;
    out->nbytes = t->nbytes;
    return 0;
}
