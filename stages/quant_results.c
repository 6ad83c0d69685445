/* qp_quant_results (stages/qmethod.h): the tensors a method's run already
 * quantized and stored, by HF name, for the quantize loop to take. */
#include "stages/qmethod.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/hash.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct qp_quant_results {
    json_t *index;          /* name -> position in items */
    qp_quant_stored *items;
    size_t n, cap;
};

qp_quant_results *qp_quant_results_new(void)
{
    qp_quant_results *r = qp_xcalloc(1, sizeof(*r));
    r->index = json_object();
    return r;
}

void qp_quant_results_free(qp_quant_results *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++)
        json_decref(r->items[i].fields);
    free(r->items);
    json_decref(r->index);
    free(r);
}

void qp_quant_results_put(qp_quant_results *r, const char *name, const char *digest, uint64_t size, double bpw,
                          json_t *fields)
{
    const json_t *at = json_object_get(r->index, name);
    qp_quant_stored *s;
    if (at) {
        s = &r->items[json_integer_value(at)];
        json_decref(s->fields);
    } else {
        if (r->n == r->cap) {   /* doubling: a model has hundreds of tensors */
            r->cap = r->cap ? 2 * r->cap : 64;
            r->items = qp_xrealloc_array(r->items, r->cap, sizeof(*r->items));
        }
        json_object_set_new(r->index, name, json_integer((json_int_t)r->n));
        s = &r->items[r->n++];
    }
    memset(s, 0, sizeof(*s));
    snprintf(s->digest, sizeof(s->digest), "%s", digest);
    s->size = size;
    s->bpw = bpw;
    s->fields = fields;
}

void qp_quant_results_merge(qp_quant_results *r, const qp_quant_results *src)
{
    const char *name;
    json_t *at;
    json_object_foreach(src->index, name, at) {
        const qp_quant_stored *s = &src->items[json_integer_value(at)];
        qp_quant_results_put(r, name, s->digest, s->size, s->bpw, json_incref(s->fields));
    }
}

const qp_quant_stored *qp_quant_results_get(const qp_quant_results *r, const char *name)
{
    const json_t *at = r ? json_object_get(r->index, name) : NULL;
    return at ? &r->items[json_integer_value(at)] : NULL;
}

json_t *qp_quant_results_json(const qp_quant_results *r)
{
    json_t *out = json_object();
    const char *name;
    json_t *at;
    json_object_foreach(r->index, name, at) {
        const qp_quant_stored *s = &r->items[json_integer_value(at)];
        char bpw[64];
        snprintf(bpw, sizeof(bpw), "%a", s->bpw);
        json_object_set_new(out, name, json_pack("{s:s, s:I, s:s, s:O}", "digest", s->digest, "size",
                                                 (json_int_t)s->size, "bpw", bpw, "fields", s->fields));
    }
    return out;
}

int qp_quant_results_add_json(qp_quant_results *r, const json_t *j, const char *what)
{
    const char *name;
    json_t *e;
    if (!json_is_object(j))
        return qp_error_set(QP_EFORMAT, "%s: the stored tensors are not a JSON object", what);
    json_object_foreach((json_t *)j, name, e) {
        const char *digest = json_string_value(json_object_get(e, "digest"));
        const char *bpw = json_string_value(json_object_get(e, "bpw"));
        json_t *size = json_object_get(e, "size"), *fields = json_object_get(e, "fields");
        char *end = NULL;
        double v = bpw ? strtod(bpw, &end) : 0;
        if (!digest || !qp_is_hex_digest(digest) || !json_is_integer(size) || json_integer_value(size) < 0 ||
            !bpw || end == bpw || *end || !json_is_object(fields))
            return qp_error_set(QP_EFORMAT, "%s: stored tensor '%s' is malformed", what, name);
        qp_quant_results_put(r, name, digest, (uint64_t)json_integer_value(size), v, json_incref(fields));
    }
    return 0;
}
