/* Expansion: the stages as written -> the stages that run.
 *
 * Each stage has an origin: itself when it has matrix:/candidates:, the
 * common origin of the expanded stages it needs by plain name (fan-out,
 * zipped by instance), else none.  A stage with an origin becomes one stage
 * "ID@NAME" per instance of the origin; `X@*` needs all instances of X
 * (fan-in), `X@NAME` one.  After this, nothing downstream knows about
 * matrices: keys, cache, runner and lock see ordinary stages. */
#include "pipeline/recipe_int.h"
#include "common/alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/fsutil.h"

typedef struct {
    const qp_stage_tmpl *t;
    size_t n;
    const char *path;
    const json_t *scope;
    qp_id_ix *by_id;
    const char **ids;   /* file order, for suggestions */
    long *origin;       /* per stage: index of its origin, or -1 */
} xctx;

/* Splits "x@sel" into the stage index (-1 when unknown) and the selector
 * (NULL for a plain name). */
static long split_need(const xctx *x, const char *need, const char **sel)
{
    const char *at = strchr(need, '@');
    *sel = at ? at + 1 : NULL;
    if (!at)
        return qp_id_find(x->by_id, x->n, need);
    char base[512];
    snprintf(base, sizeof(base), "%.*s", (int)(at - need), need);
    return qp_id_find(x->by_id, x->n, base);
}

static long find_instance(const qp_stage_tmpl *o, const char *name)
{
    for (size_t i = 0; i < o->n_inst; i++)
        if (strcmp(o->inst[i].name, name) == 0)
            return (long)i;
    return -1;
}

/* A need with a selector: the stage must exist and be expanded, and a NAME
 * must be one of its instances. */
static int check_selector(const xctx *x, const qp_stage_tmpl *t, size_t j, long b, const char *sel)
{
    const char *need = t->needs[j];
    const qp_ynode *at = t->need_nodes[j];
    if (b < 0) {
        char base[512];
        snprintf(base, sizeof(base), "%.*s", (int)(sel - 1 - need), need);
        return qp_recipe_fail(x->path, at->mark, "needs '%s': no such stage '%s'%s", need, base,
                              qp_suggest_hint(base, x->ids, x->n));
    }
    const char *bid = x->t[b].id;
    if (x->origin[b] < 0)
        return qp_recipe_fail(x->path, at->mark,
                              "needs '%s': stage '%s' is not expanded (it has no matrix: or candidates: and needs no "
                              "expanded stage); write '%s'", need, bid, bid);
    if (!*sel)
        return qp_recipe_fail(x->path, at->mark, "needs '%s': write '%s@*' for all instances or '%s@NAME' for one",
                              need, bid, bid);
    if (strcmp(sel, "*") == 0)
        return 0;
    const qp_stage_tmpl *o = &x->t[x->origin[b]];
    if (find_instance(o, sel) >= 0)
        return 0;
    const char *names[QP_MAX_INSTANCES];
    char list[400] = "";
    size_t len = 0;
    for (size_t i = 0; i < o->n_inst; i++) {
        names[i] = o->inst[i].name;
        if (len < sizeof(list))
            len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s", i ? ", " : "", o->inst[i].name);
    }
    if (len >= sizeof(list))
        memcpy(list + sizeof(list) - 5, " ...", 5);
    const char *s = qp_suggest(sel, names, o->n_inst);
    if (s)
        return qp_recipe_fail(x->path, at->mark, "needs '%s': stage '%s' has no instance '%s' (did you mean '%s@%s'?)",
                              need, bid, sel, bid, s);
    return qp_recipe_fail(x->path, at->mark, "needs '%s': stage '%s' has no instance '%s' (instances: %s)", need, bid,
                          sel, list);
}

/* Once every stage u needs has its origin: u's own. */
static int settle_origin(xctx *x, size_t u)
{
    const qp_stage_tmpl *t = &x->t[u];
    long origin = t->expand_key ? (long)u : -1;
    size_t via = 0;
    for (size_t j = 0; j < t->n_needs; j++) {
        const char *sel;
        long b = split_need(x, t->needs[j], &sel);
        if (sel) {
            int rc = check_selector(x, t, j, b, sel);
            if (rc < 0)
                return rc;
            continue;
        }
        if (b < 0 || x->origin[b] < 0)
            continue;  /* unknown ids are the DAG check's to report */
        const char *bid = x->t[b].id;
        if (t->expand_key)
            return qp_recipe_fail(x->path, t->need_nodes[j]->mark,
                                  "stage '%s' has its own %s: but needs '%s', which is expanded; write '%s@*' for all "
                                  "of its instances or '%s@NAME' for one", t->id, t->expand_key->text, bid, bid, bid);
        if (origin < 0) {
            origin = x->origin[b];
            via = j;
        } else if (origin != x->origin[b]) {
            return qp_recipe_fail(x->path, t->need_nodes[j]->mark,
                                  "stage '%s' needs '%s' and '%s', which are expanded from different stages ('%s' and "
                                  "'%s'); write '%s@*' to take all instances of '%s' as inputs", t->id, t->needs[via],
                                  bid, x->t[origin].id, x->t[x->origin[b]].id, bid, bid);
        }
    }
    x->origin[u] = origin;
    return 0;
}

/* Stage ix's id and key mark, for the cycle message (ud: the xctx). */
static const char *tmpl_id(const void *ud, size_t ix)
{
    return ((const xctx *)ud)->t[ix].id;
}

static qp_mark tmpl_mark(const void *ud, size_t ix)
{
    return ((const xctx *)ud)->t[ix].key->mark;
}

/* Edge j out of stage u: its j-th need (an unknown one is reported later,
 * by the DAG checks); a stage needing itself is reported here. */
static int need_edge(void *ud, size_t u, size_t j, long *v)
{
    const xctx *x = ud;
    const qp_stage_tmpl *t = &x->t[u];
    if (j == t->n_needs)
        return 0;
    const char *sel;
    *v = split_need(x, t->needs[j], &sel);
    if (*v == (long)u)
        return qp_recipe_fail(x->path, t->need_nodes[j]->mark, "stage '%s' needs itself", t->id);
    return 1;
}

static int settle_done(void *ud, size_t u)
{
    return settle_origin(ud, u);
}

/* Depth-first over needs, settling origins in post-order.  A cycle is
 * reported here, with the stage ids as written, since expansion needs an
 * order. */
static int settle_origins(xctx *x)
{
    qp_dfs_graph g = {.n = x->n, .ud = x, .edge = need_edge, .finish = settle_done, .id_of = tmpl_id,
                      .mark_of = tmpl_mark, .path = x->path};
    return qp_recipe_dfs(&g);
}

void qp_stage_builds_free(qp_stage_build *b, size_t n)
{
    for (size_t i = 0; b && i < n; i++) {
        qp_stage_decl_clear(&b[i].decl);
        free(b[i].need_nodes);
    }
    free(b);
}

static void add_need(qp_stage_build *b, char *id, const qp_ynode *node, size_t *cap)
{
    qp_stage_decl *d = &b->decl;
    if (d->n_needs == *cap) {
        *cap = *cap ? 2 * *cap : 4;
        d->needs = qp_xrealloc_array(d->needs, *cap, sizeof(char *));
        b->need_nodes = qp_xrealloc_array(b->need_nodes, *cap, sizeof(qp_ynode *));
    }
    d->needs[d->n_needs] = id;
    b->need_nodes[d->n_needs++] = node;
}

/* The needs of stage u's instance `inst` (-1: u is not expanded). */
static void expand_needs(const xctx *x, qp_stage_build *b, size_t u, long inst)
{
    const qp_stage_tmpl *t = &x->t[u];
    size_t cap = 0;
    for (size_t j = 0; j < t->n_needs; j++) {
        const char *sel, *need = t->needs[j];
        const qp_ynode *node = t->need_nodes[j];
        long nb = split_need(x, need, &sel);
        if (sel && strcmp(sel, "*") == 0) {
            const qp_stage_tmpl *o = &x->t[x->origin[nb]];
            for (size_t i = 0; i < o->n_inst; i++)
                add_need(b, qp_strfmt("%s@%s", x->t[nb].id, o->inst[i].name), node, &cap);
        } else if (!sel && nb >= 0 && x->origin[nb] >= 0) {
            add_need(b, qp_strfmt("%s@%s", need, x->t[x->origin[u]].inst[inst].name), node, &cap);
        } else {
            add_need(b, qp_strdup(need), node, &cap);
        }
    }
}

/* with: with the instance's keys merged over it (instance wins, in place;
 * new keys after the written ones): a borrowed view, free only the arrays. */
static void merged_with(qp_ynode *m, const qp_ynode *with, const qp_instance *in)
{
    size_t cap = (with ? with->n : 0) + in->n + 1;
    memset(m, 0, sizeof(*m));
    m->kind = QP_YN_MAP;
    m->mark = with ? with->mark : (in->n ? in->vals[0]->mark : (qp_mark){1, 1});
    m->keys = qp_xcalloc(cap, sizeof(qp_ynode *));
    m->items = qp_xcalloc(cap, sizeof(qp_ynode *));
    for (size_t i = 0; with && i < with->n; i++) {
        m->keys[m->n] = with->keys[i];
        m->items[m->n++] = with->items[i];
    }
    for (size_t k = 0; k < in->n; k++) {
        size_t i = 0;
        while (i < m->n && strcmp(m->keys[i]->text, in->keys[k]->text) != 0)
            i++;
        m->keys[i] = (qp_ynode *)in->keys[k];
        m->items[i] = (qp_ynode *)in->vals[k];
        if (i == m->n)
            m->n++;
    }
}

/* A parameter naming an expanded stage (QP_PF_STAGE) by its plain name is
 * zipped like a need: it must share the stage's origin. */
static int zip_link(const xctx *x, qp_stage_build *b, size_t u, long inst, const qp_param_spec *spec)
{
    const char *ref = qp_stage_link_id(b->decl.params, spec);
    if (!ref || strchr(ref, '@'))
        return 0;
    long r = qp_id_find(x->by_id, x->n, ref);
    if (r < 0 || x->origin[r] < 0)
        return 0;
    if (inst < 0 || x->origin[r] != x->origin[u])
        return qp_recipe_fail(x->path, qp_param_mark(b, spec->name),
                              "parameter '%s' for %s: stage '%s' is expanded; name one of its instances as "
                              "'%s@NAME'", spec->name, b->decl.kind->name, ref, ref);
    json_object_set_new(b->decl.params, spec->name,
                        json_sprintf("%s@%s", ref, x->t[x->origin[u]].inst[inst].name));
    return 0;
}

static int zip_links(const xctx *x, qp_stage_build *b, size_t u, long inst)
{
    int rc = 0;
    for (const qp_param_spec *s = b->decl.kind->params; s && s->name && rc == 0; s++)
        if (s->flags & QP_PF_STAGE)
            rc = zip_link(x, b, u, inst, s);
    return rc;
}

/* One stage to run: stage u as written, instance `inst` of its origin
 * (-1: not expanded). */
static int build_one(const xctx *x, qp_stage_build *b, size_t u, long inst)
{
    const qp_stage_tmpl *t = &x->t[u];
    qp_stage_decl *d = &b->decl;
    const qp_instance *in = inst >= 0 ? &x->t[x->origin[u]].inst[inst] : NULL;
    d->kind = t->kind;
    d->mark = t->key->mark;
    d->base = qp_strdup(t->id);
    if (in) {
        d->id = qp_strfmt("%s@%s", t->id, in->name);
        d->instance = qp_strdup(in->name);
        d->origin = qp_strdup(x->t[x->origin[u]].id);
        d->matrix = json_incref(in->values);
    } else {
        d->id = qp_strdup(t->id);
    }
    b->key = t->key;
    b->needs_key = t->needs_key;
    expand_needs(x, b, u, inst);
    /* Messages name the stage that runs ("q@gptq-4") at the written key. */
    qp_ynode key = {.kind = QP_YN_SCALAR, .mark = t->key->mark, .text = d->id, .plain = 1};
    json_t *scope = json_copy((json_t *)x->scope);
    if (in) {
        json_object_set(scope, "matrix", in->text);
        json_object_set(scope, "matrix_typed", in->values);
    }
    qp_ynode merged;
    const qp_ynode *with = t->with;
    int own = in && (size_t)x->origin[u] == u;
    if (own && (!with || with->kind == QP_YN_MAP || qp_ynode_is_null(with))) {
        merged_with(&merged, qp_ynode_is_null(with) ? NULL : with, in);
        with = &merged;
    }
    int rc = qp_recipe_params(&d->params, &d->param_marks, d->kind, with, &key, scope, x->path);
    if (rc == 0)
        rc = qp_recipe_resources(&d->resources, t->resources, scope, x->path, d->id);
    if (with == &merged) {
        free(merged.keys);
        free(merged.items);
    }
    json_decref(scope);
    if (rc == 0)
        rc = zip_links(x, b, u, inst);
    return rc;
}

int qp_recipe_expand(qp_stage_build **out, size_t *n_out, const qp_stage_tmpl *t, size_t n, const json_t *scope,
                     const char *path)
{
    *out = NULL;
    *n_out = 0;
    xctx x = {.t = t, .n = n, .path = path, .scope = scope};
    x.ids = qp_xcalloc(n + 1, sizeof(char *));
    x.origin = qp_xmalloc((n + 1) * sizeof(long));
    int any = 0;
    for (size_t i = 0; i < n; i++) {
        x.ids[i] = t[i].id;
        x.origin[i] = -1;
        any |= t[i].expand_key != NULL;
        for (size_t j = 0; j < t[i].n_needs; j++)
            any |= strchr(t[i].needs[j], '@') != NULL;
    }
    x.by_id = qp_id_index(x.ids, n);
    /* Without matrices and '@' needs every origin is none: the stages are
     * the ones written, and the DAG check reports what is wrong with them. */
    int rc = any ? settle_origins(&x) : 0;
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += x.origin[i] >= 0 ? t[x.origin[i]].n_inst : 1;
    qp_stage_build *b = rc == 0 ? qp_xcalloc(total + 1, sizeof(*b)) : NULL;
    size_t k = 0;
    for (size_t u = 0; u < n && rc == 0; u++) {
        if (x.origin[u] < 0) {
            rc = build_one(&x, &b[k++], u, -1);
            continue;
        }
        for (size_t i = 0; i < t[x.origin[u]].n_inst && rc == 0; i++)
            rc = build_one(&x, &b[k++], u, (long)i);
    }
    if (rc < 0) {
        qp_stage_builds_free(b, total);
    } else {
        *out = b;
        *n_out = total;
    }
    free(x.ids);
    free(x.origin);
    free(x.by_id);
    return rc;
}
