/* The registry of quantization methods (stages/qmethod.h): the only place a
 * method name is compared. */
#include "stages/qmethod.h"
#include "stages/qmethods.h"
#include "common/alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const qp_quant_method *const methods[] = {
    &qp_qm_rtn, &qp_qm_gguf, &qp_qm_nf4, &qp_qm_int8, &qp_qm_gptq, &qp_qm_awq, &qp_qm_mixed, &qp_qm_qat,
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
