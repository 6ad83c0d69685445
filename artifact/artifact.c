/* Artifact manifests: entries + metrics + meta, serialised canonically. */
#include "artifact/artifact.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QP_ARTIFACT_FORMAT 1

struct qp_artifact {
    qp_artifact_type type;
    json_t *entries;  /* object name -> entry (sorted on serialisation) */
    json_t *metrics;
    json_t *meta;
    json_t *sorted;   /* array of the entries in name order; NULL when stale */
};

static const struct { qp_artifact_type t; const char *name; } type_names[] = {
    {QP_ART_FILES, "files"},         {QP_ART_MODEL, "model"},
    {QP_ART_CALIB, "calibration"},   {QP_ART_QMODEL, "quantized-model"},
    {QP_ART_METRICS, "metrics"},     {QP_ART_VERDICT, "verdict"},
};

const char *qp_artifact_type_name(qp_artifact_type t)
{
    for (size_t i = 0; i < sizeof(type_names) / sizeof(type_names[0]); i++)
        if (type_names[i].t == t)
            return type_names[i].name;
    return "unknown";
}

qp_artifact_type qp_artifact_type_parse(const char *name)
{
    for (size_t i = 0; i < sizeof(type_names) / sizeof(type_names[0]); i++)
        if (strcmp(type_names[i].name, name) == 0)
            return type_names[i].t;
    return 0;
}

int qp_artifact_new(qp_artifact **out, qp_artifact_type type)
{
    qp_artifact *a = qp_xcalloc(1, sizeof(*a));
    a->type = type;
    a->entries = json_object();
    a->metrics = json_object();
    a->meta = json_object();
    *out = a;
    return 0;
}

void qp_artifact_free(qp_artifact *a)
{
    if (!a)
        return;
    json_decref(a->entries);
    json_decref(a->metrics);
    json_decref(a->meta);
    json_decref(a->sorted);
    free(a);
}

qp_artifact_type qp_artifact_type_of(const qp_artifact *a) { return a->type; }
void qp_artifact_set_type(qp_artifact *a, qp_artifact_type type) { a->type = type; }

int qp_artifact_add(qp_artifact *a, const char *name, const char *digest, uint64_t size, json_t *extra)
{
    if (json_object_get(a->entries, name)) {
        json_decref(extra);
        return qp_error_set(QP_ERROR, "artifact entry '%s' added twice", name);
    }
    json_t *e = extra ? extra : json_object();
    json_object_set_new(e, "name", json_string(name));
    json_object_set_new(e, "digest", json_string(digest));
    json_object_set_new(e, "size", json_integer((json_int_t)size));
    json_object_set_new(a->entries, name, e);
    json_decref(a->sorted);
    a->sorted = NULL;
    return 0;
}

int qp_artifact_add_bytes(qp_artifact *a, qp_cache *c, const char *name, const void *data, size_t n, json_t *extra)
{
    char digest[QP_HEX_LEN];
    int rc = qp_cache_put(c, data, n, digest);
    if (rc) {
        json_decref(extra);
        return rc;
    }
    return qp_artifact_add(a, name, digest, n, extra);
}

int qp_artifact_add_file(qp_artifact *a, qp_cache *c, const char *name, const char *path, json_t *extra)
{
    char digest[QP_HEX_LEN];
    uint64_t size = 0;
    int rc = qp_cache_put_file(c, path, digest);
    if (rc == 0)
        rc = qp_cache_object_size(c, digest, &size);
    if (rc) {
        json_decref(extra);
        return rc;
    }
    return qp_artifact_add(a, name, digest, size, extra);
}

int qp_artifact_add_uncached(qp_artifact *a, const char *name, const char *digest, uint64_t size, json_t *extra)
{
    json_t *e = extra ? extra : json_object();
    json_object_set_new(e, "cached", json_false());
    return qp_artifact_add(a, name, digest, size, e);
}

int qp_artifact_entry_cached(const json_t *entry)
{
    return !json_is_false(json_object_get(entry, "cached"));
}

static int cmp_entry_name(const void *x, const void *y)
{
    const json_t *const *a = x, *const *b = y;
    return strcmp(qp_artifact_entry_name(*a), qp_artifact_entry_name(*b));
}

/* Entries in name order: the order they are serialised and indexed in, so
 * the digest does not depend on the order a stage added them. */
static json_t *sorted_entries(const qp_artifact *ca)
{
    qp_artifact *a = (qp_artifact *)ca;  /* the sorted view is a cache */
    if (a->sorted)
        return a->sorted;
    size_t n = json_object_size(a->entries), i = 0;
    json_t **v = qp_xmalloc((n ? n : 1) * sizeof(*v));
    const char *key;
    json_t *e;
    json_object_foreach(a->entries, key, e)
        v[i++] = e;
    qsort(v, n, sizeof(*v), cmp_entry_name);
    a->sorted = json_array();
    for (i = 0; i < n; i++)
        json_array_append(a->sorted, v[i]);
    free(v);
    return a->sorted;
}

size_t qp_artifact_count(const qp_artifact *a) { return json_object_size(a->entries); }

const json_t *qp_artifact_entry(const qp_artifact *a, size_t i)
{
    return json_array_get(sorted_entries(a), i);
}

const json_t *qp_artifact_find(const qp_artifact *a, const char *name)
{
    return json_object_get(a->entries, name);
}

const char *qp_artifact_entry_name(const json_t *e) { return json_string_value(json_object_get(e, "name")); }
const char *qp_artifact_entry_digest(const json_t *e) { return json_string_value(json_object_get(e, "digest")); }

int qp_artifact_read(const qp_artifact *a, qp_cache *c, const char *name, void **out, size_t *len)
{
    const json_t *e = qp_artifact_find(a, name);
    if (!e)
        return qp_error_set(QP_ENOTFOUND, "artifact has no entry '%s'", name);
    if (!qp_artifact_entry_cached(e))
        return qp_error_set(QP_ENOTFOUND, "artifact entry '%s' is a workspace file, not kept in the cache", name);
    return qp_cache_get(c, qp_artifact_entry_digest(e), out, len);
}

void qp_artifact_set_metric(qp_artifact *a, const char *name, double value)
{
    json_object_set_new(a->metrics, name, json_real(value));
}

json_t *qp_artifact_metrics(qp_artifact *a) { return a->metrics; }
const json_t *qp_artifact_metrics_c(const qp_artifact *a) { return a->metrics; }
json_t *qp_artifact_meta(qp_artifact *a) { return a->meta; }
const json_t *qp_artifact_meta_c(const qp_artifact *a) { return a->meta; }

/* j as a load from the cache gives it back: written as the manifest is
 * (sorted keys, doubles exact) and read again. */
static json_t *as_stored(json_t *j)
{
    char *text = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT | JSON_REAL_PRECISION(17) | JSON_ENCODE_ANY);
    json_t *back = text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
    free(text);
    if (!back)   /* jansson's own allocation: what it wrote it reads */
        qp_out_of_memory(0, __FILE__, __LINE__);
    return back;
}

void qp_artifact_sort_keys(qp_artifact *a)
{
    json_t *m = as_stored(a->metrics), *meta = as_stored(a->meta);
    json_decref(a->metrics);
    json_decref(a->meta);
    a->metrics = m;
    a->meta = meta;
}

int qp_artifact_serialize(const qp_artifact *a, char **out_json)
{
    json_t *root = json_object();
    json_object_set_new(root, "qpipe_artifact", json_integer(QP_ARTIFACT_FORMAT));
    json_object_set_new(root, "type", json_string(qp_artifact_type_name(a->type)));
    json_object_set(root, "entries", sorted_entries(a));
    json_object_set(root, "metrics", a->metrics);
    json_object_set(root, "meta", a->meta);
    /* JSON_REAL_PRECISION(17): a double survives the round trip exactly. */
    char *s = json_dumps(root, JSON_SORT_KEYS | JSON_COMPACT | JSON_REAL_PRECISION(17));
    json_decref(root);
    if (!s)  /* jansson's own allocation: a manifest is always serialisable */
        qp_out_of_memory(0, __FILE__, __LINE__);
    *out_json = s;
    return 0;
}

int qp_artifact_store(const qp_artifact *a, qp_cache *c, char digest[QP_HEX_LEN],
                      char ***refs, size_t *n_refs)
{
    char *json = NULL;
    int rc = qp_artifact_serialize(a, &json);
    if (rc)
        return rc;
    rc = qp_cache_put(c, json, strlen(json), digest);
    free(json);
    if (rc)
        return rc;
    if (refs) {
        size_t n = qp_artifact_count(a);
        char **r = qp_xmalloc((n + 1) * sizeof(*r));
        size_t k = 0;
        r[k++] = qp_strdup(digest);
        for (size_t i = 0; i < n; i++)
            if (qp_artifact_entry_cached(qp_artifact_entry(a, i)))
                r[k++] = qp_strdup(qp_artifact_entry_digest(qp_artifact_entry(a, i)));
        *refs = r;
        *n_refs = k;
    }
    return 0;
}

void qp_artifact_refs_free(char **refs, size_t n)
{
    for (size_t i = 0; refs && i < n; i++)
        free(refs[i]);
    free(refs);
}

int qp_artifact_parse(qp_artifact **out, const char *text, const char *what)
{
    json_error_t jerr;
    qp_artifact *a = NULL;
    int rc = QP_ECORRUPT;
    json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        qp_error_set(QP_ECORRUPT, "%s: artifact manifest is not valid JSON (%s)", what, jerr.text);
        goto done;
    }
    json_t *fmt = json_object_get(root, "qpipe_artifact");
    json_t *type = json_object_get(root, "type");
    json_t *entries = json_object_get(root, "entries");
    json_t *metrics = json_object_get(root, "metrics");
    json_t *meta = json_object_get(root, "meta");
    if (json_integer_value(fmt) != QP_ARTIFACT_FORMAT || !json_is_string(type) ||
        !json_is_array(entries) || !json_is_object(metrics) || !json_is_object(meta)) {
        qp_error_set(QP_ECORRUPT, "%s: not a qpipe artifact manifest (format %d expected)", what,
                     QP_ARTIFACT_FORMAT);
        goto done;
    }
    qp_artifact_type t = qp_artifact_type_parse(json_string_value(type));
    if (!t) {
        qp_error_set(QP_ECORRUPT, "%s: unknown artifact type '%s'", what, json_string_value(type));
        goto done;
    }
    if ((rc = qp_artifact_new(&a, t)) != 0)
        goto done;
    rc = QP_ECORRUPT;
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e) {
        const char *name = qp_artifact_entry_name(e);
        const char *digest = qp_artifact_entry_digest(e);
        if (!name || !qp_is_hex_digest(digest) || !json_is_integer(json_object_get(e, "size"))) {
            qp_error_set(QP_ECORRUPT, "%s: entry %zu is malformed", what, i);
            goto done;
        }
        if (json_object_get(a->entries, name)) {
            qp_error_set(QP_ECORRUPT, "%s: entry '%s' appears twice", what, name);
            goto done;
        }
        json_object_set_new(a->entries, name, json_deep_copy(e));
    }
    json_object_update(a->metrics, metrics);
    json_object_update(a->meta, meta);
    *out = a;
    a = NULL;
    rc = 0;
done:
    qp_artifact_free(a);
    json_decref(root);
    return rc;
}

int qp_artifact_load(qp_artifact **out, qp_cache *c, const char *digest)
{
    void *buf = NULL;
    size_t len = 0;
    int rc = qp_cache_get(c, digest, &buf, &len);
    if (rc)
        return rc;
    char *text = buf;   /* qp_cache_get NUL-terminates */
    char what[96];
    snprintf(what, sizeof(what), "cache object %.12s", digest);
    rc = qp_artifact_parse(out, text, what);
    free(text);
    return rc;
}
