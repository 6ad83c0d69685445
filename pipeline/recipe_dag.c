/* The stage graph: needs and the parameters that name stages resolved,
 * input checks, cycles and a stable topological order. */
#include "pipeline/recipe_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/error.h"

typedef struct {
    qp_stage_build *s;
    size_t n;
    const char *path;
    qp_id_ix *by_id;      /* stages sorted by id, for lookups */
    const char **ids;     /* ids in file order, for suggestions */
    size_t **deps;        /* deps[i]: needs, then linked stages not among them */
    size_t *n_deps;
} graph;

static long find(const graph *g, const char *id)
{
    return qp_id_find(g->by_id, g->n, id);
}

/* "takes exactly 1 input" etc. */
static void describe_inputs(char *buf, size_t n, const qp_stage_kind *k)
{
    int lo = k->min_inputs, hi = k->max_inputs;
    if (hi == 0)
        snprintf(buf, n, "no inputs");
    else if (lo == hi)
        snprintf(buf, n, "exactly %d input%s", lo, lo == 1 ? "" : "s");
    else if (hi < 0)
        snprintf(buf, n, "at least %d input%s", lo, lo == 1 ? "" : "s");
    else
        snprintf(buf, n, "%d to %d inputs", lo, hi);
}

/* "metrics" or "model or files" for a producer's possible output types. */
static void type_names(char *buf, size_t n, unsigned mask)
{
    size_t len = 0;
    buf[0] = '\0';
    for (unsigned bit = 1; bit && bit <= QP_ART_VERDICT; bit <<= 1)
        if (mask & bit) {
            len += (size_t)snprintf(buf + len, n - len, "%s%s", len ? " or " : "",
                                    qp_artifact_type_name((qp_artifact_type)bit));
            if (len >= n)
                len = n - 1;
        }
}

/* "n" when the article before `word` is "an" (after "a"), else "". */
static const char *article(const char *word)
{
    return word[0] && strchr("aeiou", word[0]) ? "n" : "";
}

static int check_needs(graph *g, size_t i)
{
    qp_stage_build *b = &g->s[i];
    qp_stage_decl *d = &b->decl;
    const qp_stage_kind *k = d->kind;
    for (size_t j = 0; j < d->n_needs; j++) {
        const qp_ynode *nn = b->need_nodes[j];
        long idx = find(g, d->needs[j]);
        if (idx < 0)
            return qp_recipe_fail(g->path, nn->mark, "needs '%s': no such stage%s", d->needs[j],
                                  qp_suggest_hint(d->needs[j], g->ids, g->n));
        if ((size_t)idx == i)
            return qp_recipe_fail(g->path, nn->mark, "stage '%s' needs itself", d->id);
        for (size_t m = 0; m < j; m++)
            if (d->need_index[m] == (size_t)idx)
                return qp_recipe_fail(g->path, nn->mark, "needs '%s' more than once", d->needs[j]);
        d->need_index[j] = (size_t)idx;
        g->deps[i][g->n_deps[i]++] = (size_t)idx;
    }
    int n_in = (int)d->n_needs;
    if (n_in < k->min_inputs || (k->max_inputs >= 0 && n_in > k->max_inputs)) {
        char want[64];
        describe_inputs(want, sizeof(want), k);
        qp_mark m = b->needs_key ? b->needs_key->mark : b->key->mark;
        return qp_recipe_fail(g->path, m, "stage '%s': %s takes %s, got %d", d->id, k->name, want, n_in);
    }
    for (size_t j = 0; j < d->n_needs; j++) {
        const qp_stage_decl *p = &g->s[d->need_index[j]].decl;
        unsigned produced = qp_stage_output_types(p->kind, p->params);
        if (produced & k->accepts)
            continue;
        char got[128];
        type_names(got, sizeof(got), produced);
        return qp_recipe_fail(g->path, b->need_nodes[j]->mark, "stage '%s': input '%s' is a%s %s artifact, but %s accepts %s",
                              d->id, p->id, article(got), got, k->name, qp_artifact_mask_names(k->accepts));
    }
    return 0;
}

/* A parameter naming a stage (QP_PF_STAGE): that stage must exist, be
 * another one and produce what the parameter reads.  It becomes a link and
 * an extra edge: the named stage runs first, though it is no input. */
static int check_link(graph *g, size_t i, const qp_param_spec *spec)
{
    qp_stage_build *b = &g->s[i];
    qp_stage_decl *d = &b->decl;
    const char *name = qp_stage_link_id(d->params, spec), *kind = d->kind->name;
    if (!name)
        return 0;
    qp_mark at = qp_param_mark(b, spec->name);
    long idx = find(g, name);
    if (idx < 0)
        return qp_recipe_fail(g->path, at, "parameter '%s' for %s: no such stage '%s'%s", spec->name, kind, name,
                              qp_suggest_hint(name, g->ids, g->n));
    if ((size_t)idx == i)
        return qp_recipe_fail(g->path, at, "parameter '%s' for %s names its own stage '%s'", spec->name, kind, name);
    const qp_stage_decl *p = &g->s[idx].decl;
    unsigned produced = qp_stage_output_types(p->kind, p->params), want = qp_param_stage_outputs(spec);
    if (!(produced & want)) {
        char got[128], need[128];
        type_names(got, sizeof(got), produced);
        type_names(need, sizeof(need), want);
        return qp_recipe_fail(g->path, at, "parameter '%s' for %s: stage '%s' makes a%s %s artifact; name a stage "
                              "that makes %s", spec->name, kind, name, article(got), got, need);
    }
    d->links[d->n_links++] = (qp_stage_link){.param = spec->name, .id = qp_xstrdup(name), .index = (size_t)idx};
    for (size_t m = 0; m < g->n_deps[i]; m++)
        if (g->deps[i][m] == (size_t)idx)
            return 0;
    g->deps[i][g->n_deps[i]++] = (size_t)idx;
    return 0;
}

static int check_stage(graph *g, size_t i)
{
    qp_stage_decl *d = &g->s[i].decl;
    size_t n_links = 0;
    for (const qp_param_spec *s = d->kind->params; s && s->name; s++)
        n_links += (s->flags & QP_PF_STAGE) != 0;
    g->deps[i] = qp_xmalloc((d->n_needs + n_links + 1) * sizeof(size_t));
    d->need_index = qp_xmalloc((d->n_needs + 1) * sizeof(size_t));
    d->links = qp_xcalloc(n_links + 1, sizeof(qp_stage_link));
    int rc = check_needs(g, i);
    for (const qp_param_spec *s = d->kind->params; s && s->name && rc == 0; s++)
        if (s->flags & QP_PF_STAGE)
            rc = check_link(g, i, s);
    return rc;
}

/* Stage ix's id and key mark, for the cycle message (ud: the graph). */
static const char *build_id(const void *ud, size_t ix)
{
    return ((const graph *)ud)->s[ix].decl.id;
}

static qp_mark build_mark(const void *ud, size_t ix)
{
    return ((const graph *)ud)->s[ix].key->mark;
}

static int dep_edge(void *ud, size_t u, size_t j, long *v)
{
    const graph *g = ud;
    if (j == g->n_deps[u])
        return 0;
    *v = (long)g->deps[u][j];
    return 1;
}

/* On a back edge, prints the cycle starting at its first stage in file
 * order. */
static int find_cycle(graph *g)
{
    qp_dfs_graph d = {.n = g->n, .ud = g, .edge = dep_edge, .id_of = build_id, .mark_of = build_mark,
                      .path = g->path};
    return qp_recipe_dfs(&d);
}

/* Min-heap of stage indices: Kahn's algorithm taking the earliest stage in
 * the file among the ready ones, so the order is stable. */
static void heap_push(size_t *h, size_t *n, size_t v)
{
    size_t i = (*n)++;
    h[i] = v;
    while (i > 0 && h[(i - 1) / 2] > h[i]) {
        size_t p = (i - 1) / 2, t = h[p];
        h[p] = h[i];
        h[i] = t;
        i = p;
    }
}

static size_t heap_pop(size_t *h, size_t *n)
{
    size_t top = h[0], i = 0;
    h[0] = h[--(*n)];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < *n && h[l] < h[m])
            m = l;
        if (r < *n && h[r] < h[m])
            m = r;
        if (m == i)
            break;
        size_t t = h[m];
        h[m] = h[i];
        h[i] = t;
        i = m;
    }
    return top;
}

static void topo_order(const graph *g, size_t *order)
{
    size_t n = g->n, total = 0;
    size_t *indeg = qp_xcalloc(n + 1, sizeof(size_t)), *start = qp_xcalloc(n + 1, sizeof(size_t));
    for (size_t i = 0; i < n; i++) {
        indeg[i] = g->n_deps[i];
        total += g->n_deps[i];
        for (size_t j = 0; j < g->n_deps[i]; j++)
            start[g->deps[i][j] + 1]++;
    }
    for (size_t i = 0; i < n; i++)
        start[i + 1] += start[i];
    size_t *users = qp_xmalloc((total + 1) * sizeof(size_t)), *fill = qp_xmalloc((n + 1) * sizeof(size_t));
    size_t *heap = qp_xmalloc((n + 1) * sizeof(size_t)), hn = 0, k = 0;
    memcpy(fill, start, n * sizeof(size_t));
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < g->n_deps[i]; j++)
            users[fill[g->deps[i][j]]++] = i;
    for (size_t i = 0; i < n; i++)
        if (indeg[i] == 0)
            heap_push(heap, &hn, i);
    while (hn > 0) {
        size_t u = heap_pop(heap, &hn);
        order[k++] = u;
        for (size_t j = start[u]; j < start[u + 1]; j++)
            if (--indeg[users[j]] == 0)
                heap_push(heap, &hn, users[j]);
    }
    free(indeg);
    free(start);
    free(users);
    free(fill);
    free(heap);
}

int qp_recipe_dag(qp_stage_build *s, size_t n, const char *path, size_t *order)
{
    int rc = 0;
    graph g = {.s = s, .n = n, .path = path};
    g.ids = qp_xcalloc(n + 1, sizeof(char *));
    g.deps = qp_xcalloc(n + 1, sizeof(size_t *));
    g.n_deps = qp_xcalloc(n + 1, sizeof(size_t));
    for (size_t i = 0; i < n; i++)
        g.ids[i] = s[i].decl.id;
    g.by_id = qp_id_index(g.ids, n);
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = check_stage(&g, i);
    if (rc == 0)
        rc = find_cycle(&g);
    if (rc == 0)
        topo_order(&g, order);
    for (size_t i = 0; i < n; i++)
        free(g.deps[i]);
    free(g.deps);
    free(g.n_deps);
    free(g.by_id);
    free(g.ids);
    return rc;
}
