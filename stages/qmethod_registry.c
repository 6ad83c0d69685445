/* The registry of quantization methods (stages/qmethod.h): the only place a
 * method name is compared.  Also the store of the tensors a method's run
 * quantized (qp_quant_results). */
#include "stages/qmethod.h"
#include "stages/qmethods.h"
#include "common/alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const qp_quant_method *const methods[] = {
    &qp_qm_rtn, &qp_qm_gguf, &qp_qm_nf4, &qp_qm_int8, &qp_qm_gptq, &qp_qm_awq, &qp_qm_mixed,
};

const qp_quant_method *qp_quant_method_find(const char *name)
{
    for (size_t i = 0; name && i < sizeof(methods) / sizeof(methods[0]); i++)
        if (strcmp(methods[i]->name, name) == 0)
            return methods[i];
    return NULL;
}

const qp_quant_method *const *qp_quant_methods(size_t *n)
{
    *n = sizeof(methods) / sizeof(methods[0]);
    return methods;
}

int qp_quant_opts_parse(void **opts, const qp_quant_method *m, const json_t *params, const char *where)
{
    *opts = qp_xcalloc(1, m->opts_size ? m->opts_size : 1);
    return m->parse ? m->parse(*opts, params, where) : 0;
}

void qp_quant_opts_free(const qp_quant_method *m, void *opts)
{
    if (opts && m && m->free_opts)
        m->free_opts(opts);
    free(opts);
}

struct qp_quant_results {
    json_t *index;          /* name -> position in items */
    qp_quant_stored *items;
    size_t n;
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
        r->items = qp_xrealloc_array(r->items, r->n + 1, sizeof(*r->items));
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
