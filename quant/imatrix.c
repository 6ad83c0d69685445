/* imatrix.dat reader/writer (format in imatrix.h). */
#include "quant/imatrix.h"

#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/hash.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NAME_MAX_LEN (1 << 16)   /* tensor names are short; bounds a corrupt length */
/* A model has a few hundred weight matrices (a few thousand for the largest
 * mixtures of experts); more entries than this is not an importance matrix. */
#define MAX_ENTRIES (1 << 16)

typedef struct {
    qp_imatrix_entry pub;
    char *name;
    float *values;
} entry;

struct qp_imatrix {
    entry *e;
    size_t n, cap;
    /* name -> 1 + index into e, open addressing: a lookup per entry read
     * and per tensor quantized made a 100k-entry file take 37 s */
    size_t *slot;
    size_t n_slots;
    int32_t last_call;
    char *dataset;
};

int qp_imatrix_new(qp_imatrix **out)
{
    qp_imatrix *m = qp_xcalloc(1, sizeof *m);
    m->dataset = qp_xcalloc(1, 1);
    *out = m;
    return 0;
}

void qp_imatrix_free(qp_imatrix *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n; i++) {
        free(m->e[i].name);
        free(m->e[i].values);
    }
    free(m->e);
    free(m->slot);
    free(m->dataset);
    free(m);
}

size_t qp_imatrix_count(const qp_imatrix *m)
{
    return m->n;
}

const qp_imatrix_entry *qp_imatrix_at(const qp_imatrix *m, size_t i)
{
    return i < m->n ? &m->e[i].pub : NULL;
}

/* The slot holding name's entry, or the empty slot where it would go. */
static size_t slot_of(const qp_imatrix *m, const char *name)
{
    size_t i = (size_t)qp_str_hash(name) & (m->n_slots - 1);
    while (m->slot[i] && strcmp(m->e[m->slot[i] - 1].name, name) != 0)
        i = (i + 1) & (m->n_slots - 1);
    return i;
}

static entry *find(const qp_imatrix *m, const char *name)
{
    if (!m->n_slots)
        return NULL;
    size_t s = m->slot[slot_of(m, name)];
    return s ? &m->e[s - 1] : NULL;
}

/* Indexes e[i] (its name not indexed yet), growing the table at half full. */
static void index_add(qp_imatrix *m, size_t i)
{
    if (2 * (m->n + 1) > m->n_slots) {
        free(m->slot);
        m->n_slots = m->n_slots ? 2 * m->n_slots : 64;
        m->slot = qp_xcalloc(m->n_slots, sizeof *m->slot);
        for (size_t k = 0; k < i; k++)
            m->slot[slot_of(m, m->e[k].name)] = k + 1;
    }
    m->slot[slot_of(m, m->e[i].name)] = i + 1;
}

const qp_imatrix_entry *qp_imatrix_find(const qp_imatrix *m, const char *name)
{
    entry *e = find(m, name);
    return e ? &e->pub : NULL;
}

int32_t qp_imatrix_last_call(const qp_imatrix *m)
{
    return m->last_call;
}

const char *qp_imatrix_dataset(const qp_imatrix *m)
{
    return m->dataset;
}

void qp_imatrix_set_last_call(qp_imatrix *m, int32_t last_call)
{
    m->last_call = last_call;
}

int qp_imatrix_set_dataset(qp_imatrix *m, const char *dataset)
{
    char *d = qp_strdup(dataset ? dataset : "");
    free(m->dataset);
    m->dataset = d;
    return 0;
}

/* Takes ownership of name and values on success. */
static int put(qp_imatrix *m, char *name, int32_t ncall, float *values, int32_t nval)
{
    entry *slot = find(m, name);
    if (slot) {
        free(slot->name);
        free(slot->values);
    } else {
        if (m->n >= MAX_ENTRIES)
            return qp_error_set(QP_EUSAGE, "imatrix: more than %d entries", MAX_ENTRIES);
        if (m->n == m->cap) {
            m->cap = m->cap ? 2 * m->cap : 16;
            m->e = qp_xrealloc_array(m->e, m->cap, sizeof *m->e);
        }
        slot = &m->e[m->n];
        slot->name = name;
        index_add(m, m->n);
        m->n++;
    }
    slot->name = name;
    slot->values = values;
    slot->pub = (qp_imatrix_entry){ name, ncall, nval, values };
    return 0;
}

int qp_imatrix_set(qp_imatrix *m, const char *name, int32_t ncall, const float *values, int32_t nval)
{
    if (!name || !*name)
        return qp_error_set(QP_EUSAGE, "imatrix: entry name is empty");
    if (nval <= 0 || ncall < 0 || !values)
        return qp_error_set(QP_EUSAGE, "imatrix entry '%s': bad size (nval %d, ncall %d)", name, (int)nval,
                            (int)ncall);
    for (int32_t i = 0; i < nval; i++)
        if (!isfinite(values[i]) || values[i] < 0)
            return qp_error_set(QP_EUSAGE, "imatrix entry '%s': value %d is %g: must be finite and >= 0", name,
                                (int)i, (double)values[i]);
    char *n = qp_strdup(name);
    float *v = qp_xmalloc((size_t)nval * sizeof *v);
    memcpy(v, values, (size_t)nval * sizeof *v);
    int rc = put(m, n, ncall, v, nval);
    if (rc) {
        free(n);
        free(v);
    }
    return rc;
}

int qp_imatrix_set_sums(qp_imatrix *m, const char *name, int32_t ncall, const float *sum_x2,
                        const int64_t *count, int32_t nval)
{
    if (nval <= 0 || !sum_x2 || !count)
        return qp_error_set(QP_EUSAGE, "imatrix entry '%s': bad size (nval %d)", name ? name : "", (int)nval);
    float *v = qp_xmalloc((size_t)nval * sizeof *v);
    for (int32_t i = 0; i < nval; i++)
        v[i] = count[i] ? (sum_x2[i] / (float)count[i]) * (float)ncall : 0.0f;
    int rc = qp_imatrix_set(m, name, ncall, v, nval);
    free(v);
    return rc;
}

int qp_imatrix_weights(const qp_imatrix *m, const char *name, int64_t n_per_row, float *dst)
{
    const qp_imatrix_entry *e = qp_imatrix_find(m, name);
    if (!e)
        return qp_error_set(QP_ENOTFOUND, "imatrix has no entry for '%s'", name);
    if (e->nval != n_per_row)
        return qp_error_set(QP_EUSAGE, "imatrix entry '%s' has %d values, the tensor has rows of %lld", name,
                            (int)e->nval, (long long)n_per_row);
    for (int32_t i = 0; i < e->nval; i++)
        dst[i] = e->ncall > 0 ? e->values[i] / e->ncall : e->values[i];
    return 0;
}

/* ---- reading ---- */

typedef struct {
    const char *path;
    const unsigned char *p;
    size_t len, off;
} cursor;

static int rd_i32(cursor *c, int32_t *v, const char *what, long entry_i, const char *ename)
{
    if (c->len - c->off < 4) {
        if (entry_i < 0)
            return qp_error_set(QP_EFORMAT, "%s: offset %zu: truncated %s", c->path, c->off, what);
        return qp_error_set(QP_EFORMAT, "%s: offset %zu: entry %ld%s%s%s: truncated %s", c->path, c->off, entry_i,
                            ename ? " '" : "", ename ? ename : "", ename ? "'" : "", what);
    }
    memcpy(v, c->p + c->off, 4);
    c->off += 4;
    return 0;
}

static int parse(qp_imatrix *m, cursor *c)
{
    int32_t n_entries = 0;
    int rc = rd_i32(c, &n_entries, "entry count", -1, NULL);
    if (rc)
        return rc;
    if (n_entries < 0)
        return qp_error_set(QP_EFORMAT, "%s: offset 0: negative entry count %d", c->path, (int)n_entries);
    if (n_entries > MAX_ENTRIES)
        return qp_error_set(QP_EFORMAT, "%s: offset 0: %d entries, more than the %d an importance matrix may have",
                            c->path, (int)n_entries, MAX_ENTRIES);
    for (int32_t i = 0; i < n_entries; i++) {
        int32_t name_len = 0, ncall = 0, nval = 0;
        size_t at = c->off;
        if ((rc = rd_i32(c, &name_len, "name length", i, NULL)))
            return rc;
        if (name_len <= 0 || name_len > NAME_MAX_LEN)
            return qp_error_set(QP_EFORMAT, "%s: offset %zu: entry %d: bad name length %d", c->path, at, (int)i,
                                (int)name_len);
        if (c->len - c->off < (size_t)name_len)
            return qp_error_set(QP_EFORMAT, "%s: offset %zu: entry %d: truncated name (want %d bytes, %zu left)",
                                c->path, c->off, (int)i, (int)name_len, c->len - c->off);
        char *name = qp_xmalloc((size_t)name_len + 1);
        memcpy(name, c->p + c->off, (size_t)name_len);
        name[name_len] = 0;
        c->off += (size_t)name_len;
        if (strlen(name) != (size_t)name_len) {
            rc = qp_error_set(QP_EFORMAT, "%s: offset %zu: entry %d: name contains a NUL byte", c->path,
                              c->off - (size_t)name_len, (int)i);
            free(name);
            return rc;
        }
        if ((rc = rd_i32(c, &ncall, "ncall", i, name)) || (rc = rd_i32(c, &nval, "value count", i, name))) {
            free(name);
            return rc;
        }
        if (ncall < 0 || nval <= 0) {
            rc = qp_error_set(QP_EFORMAT, "%s: offset %zu: entry %d '%s': bad ncall %d / value count %d", c->path,
                              c->off - 8, (int)i, name, (int)ncall, (int)nval);
            free(name);
            return rc;
        }
        size_t want = (size_t)nval * 4;
        if (c->len - c->off < want) {
            rc = qp_error_set(QP_EFORMAT, "%s: offset %zu: entry %d '%s': truncated values (want %zu bytes, %zu left)",
                              c->path, c->off, (int)i, name, want, c->len - c->off);
            free(name);
            return rc;
        }
        if (qp_imatrix_find(m, name)) {
            rc = qp_error_set(QP_EFORMAT, "%s: offset %zu: entry %d '%s': duplicate name", c->path, at, (int)i, name);
            free(name);
            return rc;
        }
        float *values = qp_xmalloc(want);
        memcpy(values, c->p + c->off, want);
        for (int32_t k = 0; k < nval; k++)
            if (!isfinite(values[k]) || values[k] < 0) {
                /* a quantizer weighting by it would fail far from here,
                 * naming neither this file nor the entry */
                rc = qp_error_set(QP_EFORMAT, "%s: offset %zu: entry %d '%s': value %d is %g (an importance must be "
                                  "finite and >= 0); recompute the importance matrix", c->path,
                                  c->off + 4 * (size_t)k, (int)i, name, (int)k, (double)values[k]);
                free(values);
                free(name);
                return rc;
            }
        c->off += want;
        if ((rc = put(m, name, ncall, values, nval))) {
            free(name);
            free(values);
            return rc;
        }
    }
    if (c->off == c->len)
        return 0;   /* old files stop here */
    int32_t last_call = 0, ds_len = 0;
    if ((rc = rd_i32(c, &last_call, "last_call", -1, NULL)) || (rc = rd_i32(c, &ds_len, "dataset name length", -1, NULL)))
        return rc;
    if (ds_len < 0 || (size_t)ds_len != c->len - c->off)
        return qp_error_set(QP_EFORMAT, "%s: offset %zu: dataset name length %d but %zu bytes left", c->path,
                            c->off - 4, (int)ds_len, c->len - c->off);
    char *ds = qp_xmalloc((size_t)ds_len + 1);
    memcpy(ds, c->p + c->off, (size_t)ds_len);
    ds[ds_len] = 0;
    c->off += (size_t)ds_len;
    free(m->dataset);
    m->dataset = ds;
    m->last_call = last_call;
    return 0;
}

int qp_imatrix_read(qp_imatrix **out, const char *path)
{
    char *buf = NULL;
    size_t len = 0;
    qp_imatrix *m = NULL;
    int rc = qp_read_file(path, &buf, &len);
    if (rc)
        return rc;
    if ((rc = qp_imatrix_new(&m)))
        goto done;
    cursor c = { path, (const unsigned char *)buf, len, 0 };
    if ((rc = parse(m, &c)))
        goto done;
    *out = m;
    m = NULL;
done:
    qp_imatrix_free(m);
    free(buf);
    return rc;
}

/* ---- writing ---- */

static void put_bytes(unsigned char **w, const void *p, size_t n)
{
    memcpy(*w, p, n);
    *w += n;
}

static void put_i32(unsigned char **w, int32_t v)
{
    put_bytes(w, &v, 4);
}

int qp_imatrix_write(const qp_imatrix *m, const char *path)
{
    size_t size = 4 + 8 + strlen(m->dataset);
    for (size_t i = 0; i < m->n; i++)
        size += 12 + strlen(m->e[i].name) + 4 * (size_t)m->e[i].pub.nval;
    unsigned char *buf = qp_xmalloc(size), *w = buf;
    put_i32(&w, (int32_t)m->n);
    for (size_t i = 0; i < m->n; i++) {
        const qp_imatrix_entry *e = &m->e[i].pub;
        put_i32(&w, (int32_t)strlen(e->name));
        put_bytes(&w, e->name, strlen(e->name));
        put_i32(&w, e->ncall);
        put_i32(&w, e->nval);
        put_bytes(&w, e->values, 4 * (size_t)e->nval);
    }
    put_i32(&w, m->last_call);
    put_i32(&w, (int32_t)strlen(m->dataset));
    put_bytes(&w, m->dataset, strlen(m->dataset));
    int rc = qp_write_file_atomic(path, buf, size, NULL);
    free(buf);
    return rc;
}
