/* The registry of stage kinds: the one list `uses:` is resolved against. */
#include "stages/stage.h"
#include "stages/kinds.h"

#include <stdio.h>
#include <string.h>

static const qp_stage_kind *const kinds[] = {
    &qp_stage_fetch,
    &qp_stage_calibrate,
    &qp_stage_quantize,
    &qp_stage_evaluate,
    &qp_stage_gate,
    &qp_stage_package,
    &qp_stage_run,
    &qp_stage_select,
};

const qp_stage_kind *const *qp_stage_kinds(size_t *n)
{
    *n = sizeof(kinds) / sizeof(kinds[0]);
    return kinds;
}

const qp_stage_kind *qp_stage_kind_find(const char *name)
{
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        if (strcmp(kinds[i]->name, name) == 0)
            return kinds[i];
    return NULL;
}

const qp_param_spec *qp_stage_param_spec(const qp_stage_kind *k, const char *name)
{
    for (const qp_param_spec *p = k->params; p && p->name; p++) {
        if (p->flags & QP_PF_PATTERN) {
            size_t n = strlen(p->name) - 1; /* without the trailing '*' */
            if (strncmp(p->name, name, n) == 0 && name[n] != '\0')
                return p;
        } else if (strcmp(p->name, name) == 0) {
            return p;
        }
    }
    return NULL;
}

unsigned qp_stage_output_types(const qp_stage_kind *k, const json_t *params)
{
    return k->output_for ? k->output_for(params) : k->output;
}

const char *qp_artifact_mask_names(unsigned mask)
{
    static _Thread_local char buf[160];
    buf[0] = '\0';
    for (unsigned bit = 1; bit <= QP_ART_VERDICT; bit <<= 1) {
        if (!(mask & bit))
            continue;
        if (buf[0])
            strcat(buf, ", ");
        strcat(buf, qp_artifact_type_name((qp_artifact_type)bit));
    }
    return buf;
}

unsigned qp_param_stage_outputs(const qp_param_spec *s)
{
    unsigned all = (QP_ART_VERDICT << 1) - 1, mask = 0;
    if (!s->allowed)
        return all;
    for (const char *p = s->allowed; *p;) {
        size_t n = strcspn(p, "|");
        char name[32];
        snprintf(name, sizeof(name), "%.*s", (int)n, p);
        mask |= (unsigned)qp_artifact_type_parse(name);
        p += n + (p[n] == '|');
    }
    return mask;
}
