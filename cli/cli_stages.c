/* `qpipe stages`: every stage kind with its parameter table. */
#include "cli/cli.h"
#include "stages/stage.h"

#include <stdio.h>
#include <string.h>

static const char *type_name(qp_param_type t)
{
    switch (t) {
    case QP_P_STRING: return "string";
    case QP_P_INT: return "int";
    case QP_P_NUMBER: return "number";
    case QP_P_BOOL: return "bool";
    case QP_P_PATH: return "path";
    case QP_P_STRING_LIST: return "[string]";
    case QP_P_PATH_LIST: return "[path]";
    case QP_P_INT_LIST: return "[int]";
    case QP_P_MAP_LIST: return "[map]";
    case QP_P_MAP: return "map";
    }
    return "?";
}

static void describe_values(char *buf, size_t n, const qp_param_spec *p)
{
    if (p->flags & QP_PF_STAGE)  /* allowed: the output types of the stage it names */
        snprintf(buf, n, "a stage making %s", p->allowed ? p->allowed : "anything");
    else if (p->allowed)
        snprintf(buf, n, "%s", p->allowed);
    else if ((p->type == QP_P_INT || p->type == QP_P_INT_LIST) && p->min <= p->max)
        snprintf(buf, n, "%.0f..%.0f", p->min, p->max);
    else if (p->type == QP_P_NUMBER && p->min <= p->max)
        snprintf(buf, n, "%g..%g", p->min, p->max);
    else
        snprintf(buf, n, "-");
}

int qp_cli_stages(int argc, char **argv)
{
    int markdown = argc > 1 && strcmp(argv[1], "--markdown") == 0;
    size_t n;
    const qp_stage_kind *const *kinds = qp_stage_kinds(&n);
    for (size_t i = 0; i < n; i++) {
        const qp_stage_kind *k = kinds[i];
        char in[160], out[160];
        snprintf(in, sizeof(in), "%s", k->max_inputs == 0 ? "none" : qp_artifact_mask_names(k->accepts));
        snprintf(out, sizeof(out), "%s", qp_artifact_mask_names(k->output));
        if (markdown) {
            printf("### `%s` — %s\n\ninputs: %s; output: %s\n\n", k->name, k->doc, in, out);
            printf("| parameter | type | default | allowed | description |\n|---|---|---|---|---|\n");
        } else {
            printf("%s (v%d) — %s\n  inputs: %s; output: %s\n", k->name, k->version, k->doc, in, out);
        }
        for (const qp_param_spec *p = k->params; p->name; p++) {
            char vals[512];
            describe_values(vals, sizeof(vals), p);
            const char *def = (p->flags & QP_PF_REQUIRED) ? "required" : p->def ? (p->def[0] ? p->def : "\"\"") : "-";
            if (markdown) {
                /* a '|' inside a cell would end it */
                char esc[1024];
                size_t m = 0;
                for (const char *c = vals; *c && m + 2 < sizeof(esc); c++) {
                    if (*c == '|')
                        esc[m++] = '\\';
                    esc[m++] = *c;
                }
                esc[m] = '\0';
                printf("| `%s` | %s | %s | %s | %s |\n", p->name, type_name(p->type), def, esc, p->doc);
            }
            else
                printf("  %-16s %-9s %-10s %-24s %s\n", p->name, type_name(p->type), def, vals, p->doc);
        }
        printf("\n");
    }
    return 0;
}
