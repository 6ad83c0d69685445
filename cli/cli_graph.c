/* `qpipe graph RECIPE`: the DAG as Graphviz DOT. */
#include "common/error.h"
#include "cli/cli.h"
#include "pipeline/recipe.h"

#include <stdio.h>
#include <string.h>

static void dot_id(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            putchar('\\');
        putchar(*s);
    }
    putchar('"');
}

int qp_cli_graph(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "qpipe: graph needs exactly one RECIPE argument (see 'qpipe help')\n");
        return 2;
    }
    qp_recipe *r = NULL;
    int rc = qp_recipe_load(&r, argv[1]);
    if (rc) {
        fprintf(stderr, "qpipe: %s\n", qp_error_last());
        return qp_exit_status(rc);
    }
    printf("digraph ");
    dot_id(qp_recipe_name(r));
    printf(" {\n  rankdir=LR;\n  node [shape=box, fontname=\"Helvetica\"];\n");
    for (size_t i = 0; i < qp_recipe_stage_count(r); i++) {
        const qp_stage_decl *d = qp_recipe_stage(r, i);
        printf("  ");
        dot_id(d->id);
        printf(" [label=\"%s\\n(%s)\"", d->id, d->kind->name);
        if (d->kind->graph_shape)
            printf(", shape=%s", d->kind->graph_shape);
        printf("];\n");
    }
    for (size_t i = 0; i < qp_recipe_stage_count(r); i++) {
        const qp_stage_decl *d = qp_recipe_stage(r, i);
        for (size_t k = 0; k < d->n_needs; k++) {
            printf("  ");
            dot_id(d->needs[k]);
            printf(" -> ");
            dot_id(d->id);
            printf(";\n");
        }
        /* a stage a parameter names: ordered first, but no input */
        for (size_t k = 0; k < d->n_links; k++) {
            printf("  ");
            dot_id(d->links[k].id);
            printf(" -> ");
            dot_id(d->id);
            printf(" [style=dashed, label=\"%s\"];\n", d->links[k].param);
        }
    }
    printf("}\n");
    qp_recipe_free(r);
    return 0;
}
