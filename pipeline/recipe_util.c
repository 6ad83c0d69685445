/* Small helpers of the recipe loader: messages with marks, "did you mean",
 * cycle paths and the depth-first search that finds them. */
#include "pipeline/recipe_int.h"
#include "common/alloc.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "pipeline/yaml_scalar.h"

int qp_recipe_fail(const char *path, qp_mark m, const char *fmt, ...)
{
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return qp_error_set(QP_EUSAGE, "%s:%d:%d: %s", path, m.line, m.col, msg);
}

qp_mark qp_param_mark(const qp_stage_build *b, const char *param)
{
    qp_mark m = b->key->mark;
    const char *at = json_string_value(json_object_get(b->decl.param_marks, param));
    if (at && sscanf(at, "%d:%d", &m.line, &m.col) != 2)
        m = b->key->mark;
    return m;
}

const char *qp_stage_link_id(const json_t *params, const qp_param_spec *spec)
{
    const char *id = json_string_value(json_object_get(params, spec->name));
    return id && id[0] ? id : NULL;
}

/* Optimal-string-alignment distance (Levenshtein plus adjacent swaps, the
 * commonest typo: "gtpq" for "gptq"), capped at 3 since only <= 2 matters. */
static size_t distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64)
        return 3;
    if ((la > lb ? la - lb : lb - la) > 2)
        return 3;
    size_t d[65][65];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] != b[j - 1];
            size_t v = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < v)
                v = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < v)
                v = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < v)
                v = d[i - 2][j - 2] + 1;
            d[i][j] = v;
        }
    return d[la][lb] > 3 ? 3 : d[la][lb];
}

const char *qp_suggest(const char *name, const char *const *cands, size_t n)
{
    const char *best = NULL;
    size_t best_d = 3, len = strlen(name);
    for (size_t i = 0; i < n; i++) {
        size_t d = distance(name, cands[i]);
        if (d < best_d && d < len) {
            best = cands[i];
            best_d = d;
        }
    }
    return best;
}

const char *qp_suggest_hint(const char *name, const char *const *cands, size_t n)
{
    static _Thread_local char buf[200];
    const char *s = qp_suggest(name, cands, n);
    if (!s)
        return "";
    snprintf(buf, sizeof(buf), " (did you mean '%.150s'?)", s);
    return buf;
}

int qp_recipe_is_id(const char *s)
{
    if (!(isalpha((unsigned char)*s) || *s == '_'))
        return 0;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_' || *s == '-'))
            return 0;
    return 1;
}

size_t qp_cycle_text(char *buf, size_t cap, const size_t *seg, size_t len,
                     const char *(*id_of)(const void *ud, size_t ix), const void *ud)
{
    size_t start = 0, pl = 0;
    for (size_t k = 1; k < len; k++)
        if (seg[k] < seg[start])
            start = k;
    for (size_t k = 0; k <= len && pl < cap; k++)
        pl += (size_t)snprintf(buf + pl, cap - pl, "%s%s", k ? " -> " : "", id_of(ud, seg[(start + k) % len]));
    if (pl >= cap - 1)  /* a long cycle: keep the line bounded */
        memcpy(buf + cap - 5, " ...", 5);
    return seg[start];
}

int qp_ynode_is_null(const qp_ynode *n)
{
    if (!n || n->kind != QP_YN_SCALAR || !n->plain || n->tag != QP_YT_NONE)
        return 0;
    return qp_yscalar_is_null(n->text);
}

static int cmp_id_ix(const void *a, const void *b)
{
    return strcmp(((const qp_id_ix *)a)->id, ((const qp_id_ix *)b)->id);
}

qp_id_ix *qp_id_index(const char *const *ids, size_t n)
{
    qp_id_ix *tab = qp_xmalloc((n + 1) * sizeof(*tab));
    for (size_t i = 0; i < n; i++) {
        tab[i].id = ids[i];
        tab[i].ix = i;
    }
    qsort(tab, n, sizeof(*tab), cmp_id_ix);
    return tab;
}

long qp_id_find(const qp_id_ix *tab, size_t n, const char *id)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(tab[mid].id, id);
        if (c == 0)
            return (long)tab[mid].ix;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

void qp_stage_decl_clear(qp_stage_decl *d)
{
    free(d->id);
    json_decref(d->params);
    json_decref(d->param_marks);
    for (size_t i = 0; i < d->n_needs; i++)
        free(d->needs[i]);
    free(d->needs);
    free(d->need_index);
    for (size_t i = 0; i < d->n_links; i++)
        free(d->links[i].id);
    free(d->links);
    free(d->base);
    free(d->instance);
    free(d->origin);
    json_decref(d->matrix);
    json_decref(d->resources);
    memset(d, 0, sizeof(*d));
}

int qp_recipe_dfs(const qp_dfs_graph *g)
{
    size_t n = g->n;
    int rc = 0;
    /* 0 unvisited, 1 on the stack, 2 finished; pos[u]: u's next edge;
     * at[u]: u's place on the stack, where a cycle through it starts */
    unsigned char *color = qp_xcalloc(n + 1, 1);
    size_t *stack = qp_xmalloc((n + 1) * sizeof(size_t)), *pos = qp_xcalloc(n + 1, sizeof(size_t));
    size_t *at = qp_xmalloc((n + 1) * sizeof(size_t));
    for (size_t root = 0; root < n && rc == 0; root++) {
        if (color[root])
            continue;
        size_t sp = 0;
        stack[sp] = root;
        at[root] = sp++;
        color[root] = 1;
        while (sp > 0 && rc == 0) {
            size_t u = stack[sp - 1];
            long v = -1;
            int e = g->edge(g->ud, u, pos[u]++, &v);
            if (e < 0) {
                rc = e;
            } else if (e == 0) {
                if (g->finish)
                    rc = g->finish(g->ud, u);
                color[u] = 2;
                sp--;
            } else if (v < 0) {
                continue;
            } else if (color[v] == 0) {
                color[v] = 1;
                at[v] = sp;
                stack[sp++] = (size_t)v;
            } else if (color[v] == 1) {
                char cyc[700];
                size_t s0 = qp_cycle_text(cyc, sizeof(cyc), stack + at[v], sp - at[v], g->id_of, g->ud);
                rc = qp_recipe_fail(g->path, g->mark_of(g->ud, s0), "cycle: %s", cyc);
            }
        }
    }
    free(color);
    free(stack);
    free(pos);
    free(at);
    return rc;
}
