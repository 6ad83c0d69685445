/* qp_quant_results (stages/qmethod.h): the tensors a method's run already
 * quantized and stored, by HF name, for the quantize loop to take. */
#include "stages/qmethod.h"
#include "common/alloc.h"

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
