/* safetensors reader: mmap + validation as strict as the safetensors
 * library's own (contiguous data, no holes, no trailing bytes). */
#include "model/safetensors.h"

#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* The safetensors library refuses headers above 100 MB: a larger value is a
 * corrupt length, and we must not hand it to the JSON parser. */
#define ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)

struct qp_safetensors {
    char *path;
    unsigned char *map;
    size_t map_len;
    json_t *root;            /* the header; tensor names are borrowed from it */
    const json_t *meta;
    size_t n;
    qp_tensor_view *tensors; /* sorted by data offset */
    qp_tensor_view **by_name;
};

static int cmp_view_name(const void *a, const void *b)
{
    const qp_tensor_view *x = *(const qp_tensor_view *const *)a;
    const qp_tensor_view *y = *(const qp_tensor_view *const *)b;
    return strcmp(x->name, y->name);
}

static const qp_tensor_view *find_by_name(qp_tensor_view *const *by_name, size_t n, const char *name)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(by_name[mid]->name, name);
        if (c == 0)
            return by_name[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* Parse-time record: data offsets are kept until the contiguity check. */
typedef struct {
    uint64_t begin, end;
    size_t idx;
} span;

static int cmp_span(const void *a, const void *b)
{
    const span *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return x->idx < y->idx ? -1 : (x->idx > y->idx);
}

/* "[768, 256]" into buf, for messages. */
static const char *shape_str(char *buf, size_t cap, const uint64_t *shape, int ndim)
{
    size_t off = 0;
    off += (size_t)snprintf(buf + off, cap - off, "[");
    for (int i = 0; i < ndim && off < cap; i++)
        off += (size_t)snprintf(buf + off, cap - off, "%s%" PRIu64, i ? ", " : "", shape[i]);
    if (off < cap)
        snprintf(buf + off, cap - off, "]");
    return buf;
}

/* Non-negative JSON integer (jansson keeps integers as long long). */
static int json_u64(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

/* Names the offending key when jansson rejects a duplicate: its message
 * reads "duplicate object key near '"NAME"'". */
static void duplicate_key_name(const json_error_t *err, char *buf, size_t cap)
{
    const char *p = strstr(err->text, "near '\"");
    buf[0] = '\0';
    if (!p)
        return;
    p += 7;
    size_t n = strlen(p);
    if (n >= 2 && p[n - 1] == '\'' && p[n - 2] == '"')
        n -= 2;
    if (n >= cap)
        n = cap - 1;
    memcpy(buf, p, n);
    buf[n] = '\0';
}

static int parse_header(qp_safetensors *st, const char *hdr, size_t hlen)
{
    const char *path = st->path;
    json_error_t err;
    st->root = json_loadb(hdr, hlen, JSON_REJECT_DUPLICATES, &err);
    if (!st->root) {
        switch (json_error_code(&err)) {
        case json_error_invalid_utf8:
            return qp_error_set(QP_EFORMAT, "%s: header: invalid UTF-8 at header byte %d "
                                "(tensor names must be valid UTF-8)", path, err.position);
        case json_error_duplicate_key: {
            char key[256];
            duplicate_key_name(&err, key, sizeof(key));
            /* top level = a tensor name; deeper = a field inside an entry */
            json_t *loose = json_loadb(hdr, hlen, 0, NULL);
            int top = loose && json_is_object(loose) && json_object_get(loose, key);
            json_decref(loose);
            if (top)
                return qp_error_set(QP_EFORMAT, "%s: tensor '%s': duplicate tensor name in the header",
                                    path, key);
            return qp_error_set(QP_EFORMAT, "%s: header: duplicate key '%s' at header byte %d",
                                path, key, err.position);
        }
        default:
            return qp_error_set(QP_EFORMAT, "%s: header: invalid JSON at header byte %d: %s",
                                path, err.position, err.text);
        }
    }
    if (!json_is_object(st->root))
        return qp_error_set(QP_EFORMAT, "%s: header: not a JSON object", path);
    return 0;
}

static int check_metadata(const char *path, const json_t *meta)
{
    const char *k;
    const json_t *v;
    if (!json_is_object(meta))
        return qp_error_set(QP_EFORMAT, "%s: header: __metadata__ is not an object of strings", path);
    json_object_foreach((json_t *)meta, k, v) {
        if (!json_is_string(v))
            return qp_error_set(QP_EFORMAT, "%s: header: __metadata__ key '%s' is not a string", path, k);
    }
    return 0;
}

/* Validates one header entry into *t (data pointer set later). */
static int parse_entry(const char *path, const char *name, const json_t *e, qp_tensor_view *t, span *sp)
{
    char sbuf[256];
    if (!json_is_object(e))
        return qp_error_set(QP_EFORMAT, "%s: tensor '%s': entry is not a JSON object", path, name);
    const json_t *jd = json_object_get(e, "dtype");
    if (!json_is_string(jd))
        return qp_error_set(QP_EFORMAT, "%s: tensor '%s': dtype missing or not a string", path, name);
    t->dtype = qp_dtype_parse(json_string_value(jd));
    if (t->dtype == QP_DT_INVALID)
        return qp_error_set(QP_EFORMAT, "%s: tensor '%s': unknown dtype '%s'", path, name,
                            json_string_value(jd));
    const json_t *js = json_object_get(e, "shape");
    if (!json_is_array(js))
        return qp_error_set(QP_EFORMAT, "%s: tensor '%s': shape missing or not an array", path, name);
    size_t nd = json_array_size(js);
    if (nd > QP_MAX_DIMS)
        return qp_error_set(QP_EFORMAT, "%s: tensor '%s': shape has %zu dimensions, at most %d supported",
                            path, name, nd, QP_MAX_DIMS);
    t->ndim = (int)nd;
    int zero = 0, overflow = 0;
    for (size_t i = 0; i < nd; i++) {
        if (json_u64(json_array_get(js, i), &t->shape[i]) != 0)
            return qp_error_set(QP_EFORMAT, "%s: tensor '%s': shape element %zu is not a non-negative integer",
                                path, name, i);
        zero |= t->shape[i] == 0;
    }
    t->nelem = 1;
    for (size_t i = 0; i < nd && !zero; i++) {
        if (t->nelem > UINT64_MAX / t->shape[i])
            overflow = 1;
        t->nelem *= t->shape[i];
    }
    if (zero)
        t->nelem = 0;
    size_t esz = qp_dtype_size(t->dtype);
    if (overflow || t->nelem > UINT64_MAX / esz)
        return qp_error_set(QP_EFORMAT, "%s: tensor '%s': shape %s overflows a 64-bit byte count",
                            path, name, shape_str(sbuf, sizeof(sbuf), t->shape, t->ndim));
    const json_t *jo = json_object_get(e, "data_offsets");
    if (!json_is_array(jo) || json_array_size(jo) != 2 || json_u64(json_array_get(jo, 0), &sp->begin) != 0 ||
        json_u64(json_array_get(jo, 1), &sp->end) != 0)
        return qp_error_set(QP_EFORMAT, "%s: tensor '%s': data_offsets must be [begin, end], two non-negative integers",
                            path, name);
    if (sp->begin > sp->end)
        return qp_error_set(QP_EFORMAT, "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "]: begin is after end",
                            path, name, sp->begin, sp->end);
    t->nbytes = t->nelem * esz;
    if (sp->end - sp->begin != t->nbytes)
        return qp_error_set(QP_EFORMAT, "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] hold %" PRIu64
                            " bytes but %s %s needs %" PRIu64, path, name, sp->begin, sp->end,
                            sp->end - sp->begin, qp_dtype_name(t->dtype),
                            shape_str(sbuf, sizeof(sbuf), t->shape, t->ndim), t->nbytes);
    return 0;
}

static int build_index(qp_safetensors *st, size_t hlen)
{
    const char *path = st->path, *name;
    json_t *e;
    int rc = 0;
    uint64_t data_len = (uint64_t)st->map_len - 8 - hlen;
    const unsigned char *data = st->map + 8 + hlen;
    size_t cap = json_object_size(st->root);
    span *spans = NULL;
    st->tensors = qp_xcalloc(cap ? cap : 1, sizeof(*st->tensors));
    st->by_name = qp_xcalloc(cap ? cap : 1, sizeof(*st->by_name));
    spans = qp_xcalloc(cap ? cap : 1, sizeof(*spans));
    json_object_foreach(st->root, name, e) {
        if (strcmp(name, "__metadata__") == 0) {
            if ((rc = check_metadata(path, e)) != 0)
                goto done;
            st->meta = e;
            continue;
        }
        qp_tensor_view *t = &st->tensors[st->n];
        span *sp = &spans[st->n];
        t->name = name;
        if ((rc = parse_entry(path, name, e, t, sp)) != 0)
            goto done;
        if (sp->end > data_len) {
            rc = qp_error_set(QP_EFORMAT, "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                              "] run past the end of the data (%" PRIu64 " bytes): file truncated?",
                              path, name, sp->begin, sp->end, data_len);
            goto done;
        }
        t->data = data + sp->begin;
        sp->idx = st->n++;
    }
    /* Contiguity, as the safetensors library demands: sorted by offset,
     * each tensor starts where the previous ended, the last ends at EOF. */
    qsort(spans, st->n, sizeof(*spans), cmp_span);
    uint64_t pos = 0;
    const char *prev = NULL;
    for (size_t i = 0; i < st->n; i++) {
        const char *nm = st->tensors[spans[i].idx].name;
        if (spans[i].begin < pos) {
            rc = qp_error_set(QP_EFORMAT, "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                              "] overlap tensor '%s' (which ends at %" PRIu64 ")",
                              path, nm, spans[i].begin, spans[i].end, prev, pos);
            goto done;
        }
        if (spans[i].begin > pos) {
            rc = qp_error_set(QP_EFORMAT, "%s: tensor '%s': hole of %" PRIu64 " bytes before its data "
                              "(data must be contiguous; previous data ends at %" PRIu64 ")",
                              path, nm, spans[i].begin - pos, pos);
            goto done;
        }
        pos = spans[i].end;
        prev = nm;
    }
    if (pos != data_len) {
        rc = qp_error_set(QP_EFORMAT, "%s: header: %" PRIu64 " trailing bytes after the last tensor's data",
                          path, data_len - pos);
        goto done;
    }
    /* reorder the views by offset */
    qp_tensor_view *sorted = qp_xcalloc(st->n ? st->n : 1, sizeof(*sorted));
    for (size_t i = 0; i < st->n; i++)
        sorted[i] = st->tensors[spans[i].idx];
    free(st->tensors);
    st->tensors = sorted;
    for (size_t i = 0; i < st->n; i++)
        st->by_name[i] = &st->tensors[i];
    qsort(st->by_name, st->n, sizeof(*st->by_name), cmp_view_name);
done:
    free(spans);
    return rc;
}

int qp_safetensors_open(qp_safetensors **out, const char *path)
{
    int rc;
    qp_safetensors *st = qp_xcalloc(1, sizeof(*st));
    *out = NULL;
    st->path = qp_strdup(path);
    if ((rc = qp_map_file(path, &st->map, &st->map_len)) != 0)
        goto done;
    if (st->map_len < 8) {
        rc = qp_error_set(QP_EFORMAT, "%s: header: file is %zu bytes, too short for the 8-byte header length "
                          "(truncated?)", path, st->map_len);
        goto done;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | st->map[i];
    if (hlen > ST_MAX_HEADER) {
        rc = qp_error_set(QP_EFORMAT, "%s: header: length %" PRIu64 " exceeds the 100 MB limit "
                          "(corrupt file or not safetensors)", path, hlen);
        goto done;
    }
    if (hlen > st->map_len - 8) {
        rc = qp_error_set(QP_EFORMAT, "%s: header: length %" PRIu64 " exceeds the %zu bytes after the length "
                          "field (truncated file?)", path, hlen, st->map_len - 8);
        goto done;
    }
    if ((rc = parse_header(st, (const char *)st->map + 8, (size_t)hlen)) != 0)
        goto done;
    if ((rc = build_index(st, (size_t)hlen)) != 0)
        goto done;
    *out = st;
    st = NULL;
    rc = 0;
done:
    qp_safetensors_free(st);
    return rc;
}

void qp_safetensors_free(qp_safetensors *st)
{
    if (!st)
        return;
    if (st->map)
        munmap(st->map, st->map_len);
    json_decref(st->root);
    free(st->tensors);
    free(st->by_name);
    free(st->path);
    free(st);
}

const char *qp_safetensors_path(const qp_safetensors *st) { return st->path; }
size_t qp_safetensors_count(const qp_safetensors *st) { return st->n; }
const json_t *qp_safetensors_metadata(const qp_safetensors *st) { return st->meta; }

const qp_tensor_view *qp_safetensors_tensor(const qp_safetensors *st, size_t i)
{
    return i < st->n ? &st->tensors[i] : NULL;
}

const qp_tensor_view *qp_safetensors_find(const qp_safetensors *st, const char *name)
{
    return find_by_name(st->by_name, st->n, name);
}
