/* A stage's instances: `matrix:` (cross product, minus `exclude:`) or
 * `candidates:` (an explicit list).  Only reading and naming happens here;
 * the values are checked as parameters when each instance's `with:` is
 * validated (recipe_expand.c), so those messages point at these nodes. */
#include "pipeline/recipe_int.h"
#include "common/alloc.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/fsutil.h"
#include "pipeline/interp.h"

void qp_stage_tmpl_clear(qp_stage_tmpl *t)
{
    free(t->id);
    for (size_t i = 0; i < t->n_needs; i++)
        free(t->needs[i]);
    free(t->needs);
    free(t->need_nodes);
    for (size_t i = 0; i < t->n_inst; i++) {
        qp_instance *in = &t->inst[i];
        free(in->name);
        json_decref(in->values);
        json_decref(in->text);
        free(in->keys);
        free(in->vals);
    }
    free(t->inst);
    memset(t, 0, sizeof(*t));
}

/* Instance names become part of stage ids, which end up in file names,
 * environment variable names and shell-grepped output: keep them plain. */
static void sanitise(char *s)
{
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_' || *s == '.' || *s == '-'))
            *s = '_';
}

/* t->inst must have room (allocated for all instances up front). */
static qp_instance *inst_push(qp_stage_tmpl *t, size_t cap)
{
    qp_instance *in = &t->inst[t->n_inst++];
    in->values = json_object();
    in->text = json_object();
    in->keys = qp_xcalloc(cap + 1, sizeof(*in->keys));
    in->vals = qp_xcalloc(cap + 1, sizeof(*in->vals));
    return in;
}

/* ---------- matrix: ---------- */

typedef struct {
    const qp_ynode *key;
    const qp_ynode *list;
    char **text;     /* per value: expanded text (sanitised copy in name) */
    char **name;
    json_t **typed;
} mkey;

static void mkeys_free(mkey *k, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; k[i].list && j < k[i].list->n; j++) {
            if (k[i].text)
                free(k[i].text[j]);
            if (k[i].name)
                free(k[i].name[j]);
            if (k[i].typed)
                json_decref(k[i].typed[j]);
        }
        free(k[i].text);
        free(k[i].name);
        free(k[i].typed);
    }
    free(k);
}

static int read_matrix_key(mkey *k, const qp_ynode *key, const qp_ynode *list, const char *stage,
                           const json_t *scope, const char *path)
{
    k->key = key;
    if (strcmp(key->text, "name") == 0)
        return qp_recipe_fail(path, key->mark,
                              "matrix key 'name' of stage '%s' is reserved (instance names are made from the values)",
                              stage);
    if (list->kind != QP_YN_SEQ || list->n == 0)
        return qp_recipe_fail(path, list->mark, "matrix '%s' of stage '%s' must be a non-empty list of values",
                              key->text, stage);
    k->list = list;
    k->text = qp_xcalloc(list->n, sizeof(char *));
    k->name = qp_xcalloc(list->n, sizeof(char *));
    k->typed = qp_xcalloc(list->n, sizeof(json_t *));
    for (size_t j = 0; j < list->n; j++) {
        const qp_ynode *v = list->items[j];
        if (v->kind != QP_YN_SCALAR)
            return qp_recipe_fail(path, v->mark, "matrix '%s' of stage '%s': a value must be a scalar, not a %s",
                                  key->text, stage, qp_ynode_kind_name(v));
        int rc = qp_scalar_eval(&k->typed[j], &k->text[j], v, scope, path);
        if (rc < 0)
            return rc;
        k->name[j] = qp_strdup(k->text[j]);
        sanitise(k->name[j]);
        for (size_t m = 0; m < j; m++)
            if (strcmp(k->name[m], k->name[j]) == 0)
                return qp_recipe_fail(path, v->mark, "matrix '%s' of stage '%s' lists '%s' twice", key->text, stage,
                                      k->name[j]);
    }
    return 0;
}

typedef struct {
    const qp_ynode *node;
    json_t *want;    /* KEY -> typed value; an instance matching all is dropped */
    int used;
} xentry;

static int read_exclude(xentry **out, size_t *n_out, const qp_ynode *ex, const mkey *keys, size_t nk,
                        const char *stage, const json_t *scope, const char *path)
{
    *out = NULL;
    *n_out = 0;
    if (qp_ynode_is_null(ex))
        return 0;
    if (ex->kind != QP_YN_SEQ)
        return qp_recipe_fail(path, ex->mark, "'exclude' of stage '%s' must be a list of mappings, not a %s", stage,
                              qp_ynode_kind_name(ex));
    xentry *x = qp_xcalloc(ex->n + 1, sizeof(*x));
    *out = x;
    for (size_t i = 0; i < ex->n; i++) {
        const qp_ynode *e = ex->items[i];
        x[i].node = e;
        x[i].want = json_object();
        *n_out = i + 1;
        if (e->kind != QP_YN_MAP)
            return qp_recipe_fail(path, e->mark, "'exclude' of stage '%s' must list mappings, not a %s", stage,
                                  qp_ynode_kind_name(e));
        for (size_t j = 0; j < e->n; j++) {
            const qp_ynode *k = e->keys[j], *v = e->items[j];
            int known = 0;
            for (size_t m = 0; m < nk && !known; m++)
                known = strcmp(keys[m].key->text, k->text) == 0;
            if (!known) {
                const char *names[64];
                size_t nn = 0;
                for (size_t m = 0; m < nk && nn < 64; m++)
                    names[nn++] = keys[m].key->text;
                return qp_recipe_fail(path, k->mark, "exclude key '%s' of stage '%s' is not a matrix key%s", k->text,
                                      stage, qp_suggest_hint(k->text, names, nn));
            }
            if (v->kind != QP_YN_SCALAR)
                return qp_recipe_fail(path, v->mark, "exclude '%s' of stage '%s' must be a scalar, not a %s", k->text,
                                      stage, qp_ynode_kind_name(v));
            char *text = NULL;
            json_t *typed = NULL;
            int rc = qp_scalar_eval(&typed, &text, v, scope, path);
            free(text);
            if (rc < 0)
                return rc;
            json_object_set_new(x[i].want, k->text, typed);
        }
    }
    return 0;
}

static void xentries_free(xentry *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        json_decref(x[i].want);
    free(x);
}

static int excluded(xentry *x, size_t nx, const mkey *keys, size_t nk, const size_t *at)
{
    int hit = 0;
    for (size_t i = 0; i < nx; i++) {
        int all = 1;
        for (size_t k = 0; k < nk && all; k++) {
            const json_t *w = json_object_get(x[i].want, keys[k].key->text);
            all = !w || json_equal(w, keys[k].typed[at[k]]);
        }
        if (all) {
            x[i].used = 1;  /* every matching entry counts as used */
            hit = 1;
        }
    }
    return hit;
}

static int matrix_instances(qp_stage_tmpl *t, const qp_ynode *mkey_node, const qp_ynode *m, const qp_ynode *ex,
                            const json_t *scope, const char *path)
{
    if (m->kind != QP_YN_MAP || m->n == 0)
        return qp_recipe_fail(path, qp_ynode_is_null(m) ? mkey_node->mark : m->mark,
                              "'matrix' of stage '%s' must be a non-empty mapping of parameter: [values]", t->id);
    size_t nk = m->n, total = 1;
    mkey *keys = qp_xcalloc(nk, sizeof(*keys));
    size_t *at = qp_xcalloc(nk, sizeof(size_t));
    xentry *x = NULL;
    size_t nx = 0;
    int rc = 0;
    for (size_t i = 0; i < nk && rc == 0; i++)
        rc = read_matrix_key(&keys[i], m->keys[i], m->items[i], t->id, scope, path);
    for (size_t i = 0; i < nk && rc == 0; i++) {
        total *= keys[i].list->n;
        if (total > QP_MAX_INSTANCES)
            rc = qp_recipe_fail(path, mkey_node->mark, "matrix of stage '%s' has more than %d instances", t->id,
                                QP_MAX_INSTANCES);
    }
    if (rc == 0 && ex)
        rc = read_exclude(&x, &nx, ex, keys, nk, t->id, scope, path);
    if (rc == 0) {
        t->inst = qp_xcalloc(total + 1, sizeof(*t->inst));
    }
    /* Odometer over the keys, the last one varying fastest. */
    for (size_t c = 0; c < total && rc == 0; c++) {
        if (!excluded(x, nx, keys, nk, at)) {
            qp_instance *in = inst_push(t, nk);
            size_t len = 0;
            for (size_t k = 0; k < nk; k++)
                len += strlen(keys[k].name[at[k]]) + 1;
            in->name = qp_xcalloc(len + 1, 1);
            for (size_t k = 0; k < nk; k++) {
                const char *key = keys[k].key->text;
                if (k)
                    strcat(in->name, "-");
                strcat(in->name, keys[k].name[at[k]]);
                json_object_set(in->values, key, keys[k].typed[at[k]]);
                json_object_set_new(in->text, key, json_string(keys[k].text[at[k]]));
                in->keys[in->n] = keys[k].key;
                in->vals[in->n++] = keys[k].list->items[at[k]];
            }
            json_object_set_new(in->text, "name", json_string(in->name));
        }
        for (size_t k = nk; k-- > 0;) {
            if (++at[k] < keys[k].list->n)
                break;
            at[k] = 0;
        }
    }
    for (size_t i = 0; i < nx && rc == 0; i++)
        if (!x[i].used)
            rc = qp_recipe_fail(path, x[i].node->mark, "exclude entry of stage '%s' matches no instance of its matrix",
                                t->id);
    if (rc == 0 && t->n_inst == 0)
        rc = qp_recipe_fail(path, mkey_node->mark, "exclude removes every instance of stage '%s'", t->id);
    /* Distinct values per key can still join to one name ("a-b" + "c" and
     * "a" + "b-c"). */
    for (size_t i = 0; i < t->n_inst && rc == 0; i++)
        for (size_t j = 0; j < i && rc == 0; j++)
            if (strcmp(t->inst[i].name, t->inst[j].name) == 0)
                rc = qp_recipe_fail(path, mkey_node->mark, "matrix of stage '%s' makes two instances named '%s@%s'",
                                    t->id, t->id, t->inst[i].name);
    mkeys_free(keys, nk);
    xentries_free(x, nx);
    free(at);
    return rc;
}

/* ---------- candidates: ---------- */

static int candidate(qp_stage_tmpl *t, size_t ci, const qp_ynode *c, const json_t *scope, const char *path)
{
    if (c->kind != QP_YN_MAP)
        return qp_recipe_fail(path, c->mark, "candidate %zu of stage '%s' must be a mapping of parameters, not a %s",
                              ci + 1, t->id, qp_ynode_kind_name(c));
    qp_instance *in = inst_push(t, c->n);
    const qp_ynode *name_node = NULL;
    char *joined = qp_strdup(""), *name = NULL;
    int rc = 0;
    for (size_t j = 0; j < c->n && rc == 0; j++) {
        const qp_ynode *k = c->keys[j], *v = c->items[j];
        if (strcmp(k->text, "name") == 0) {
            name_node = v;
            if (v->kind != QP_YN_SCALAR) {
                rc = qp_recipe_fail(path, v->mark, "'name' of candidate %zu of stage '%s' must be a string, not a %s",
                                    ci + 1, t->id, qp_ynode_kind_name(v));
                break;
            }
            char *text = NULL;
            json_t *typed = NULL;
            rc = qp_scalar_eval(&typed, &text, v, scope, path);
            json_decref(typed);
            name = text;
            continue;
        }
        in->keys[in->n] = k;
        in->vals[in->n++] = v;
        json_t *typed = NULL;
        if (v->kind == QP_YN_SCALAR) {
            char *text = NULL;
            rc = qp_scalar_eval(&typed, &text, v, scope, path);
            if (rc < 0)
                break;
            json_object_set_new(in->text, k->text, json_string(text));
            char *j2 = qp_strfmt("%s%s%s", joined, joined[0] ? "-" : "", text);
            free(joined);
            joined = j2;
            free(text);
        } else {
            rc = qp_ynode_json(&typed, v, scope, path);
            if (rc < 0)
                break;
            if (!qp_ynode_get(c, "name", NULL)) {
                json_decref(typed);
                rc = qp_recipe_fail(path, v->mark,
                                    "candidate %zu of stage '%s' has a %s for '%s', which cannot name it; give it a "
                                    "'name:'", ci + 1, t->id, qp_ynode_kind_name(v), k->text);
                break;
            }
        }
        json_object_set_new(in->values, k->text, typed);
    }
    if (rc == 0) {
        in->name = name ? name : joined;
        if (name)
            free(joined);
        name = joined = NULL;
        sanitise(in->name);
        if (!in->name[0])
            rc = qp_recipe_fail(path, name_node ? name_node->mark : c->mark,
                                "candidate %zu of stage '%s' has an empty name; give it a non-empty 'name:'", ci + 1,
                                t->id);
        else
            json_object_set_new(in->text, "name", json_string(in->name));
    }
    for (size_t j = 0; j + 1 < t->n_inst && rc == 0; j++)
        if (strcmp(t->inst[j].name, in->name) == 0)
            rc = qp_recipe_fail(path, name_node ? name_node->mark : c->mark,
                                "candidates %zu and %zu of stage '%s' are both named '%s@%s' (give them distinct "
                                "'name:' values)", j + 1, ci + 1, t->id, t->id, in->name);
    free(name);
    free(joined);
    return rc;
}

static int candidate_instances(qp_stage_tmpl *t, const qp_ynode *ckey, const qp_ynode *c, const json_t *scope,
                               const char *path)
{
    if (c->kind != QP_YN_SEQ || c->n == 0)
        return qp_recipe_fail(path, qp_ynode_is_null(c) ? ckey->mark : c->mark,
                              "'candidates' of stage '%s' must be a non-empty list of mappings", t->id);
    if (c->n > QP_MAX_INSTANCES)
        return qp_recipe_fail(path, ckey->mark, "'candidates' of stage '%s' lists more than %d instances", t->id,
                              QP_MAX_INSTANCES);
    t->inst = qp_xcalloc(c->n + 1, sizeof(*t->inst));
    int rc = 0;
    for (size_t i = 0; i < c->n && rc == 0; i++)
        rc = candidate(t, i, c->items[i], scope, path);
    return rc;
}

int qp_recipe_instances(qp_stage_tmpl *t, const qp_ynode *stage, const json_t *scope, const char *path)
{
    const qp_ynode *mk, *ck, *ek;
    const qp_ynode *m = qp_ynode_get(stage, "matrix", &mk);
    const qp_ynode *c = qp_ynode_get(stage, "candidates", &ck);
    const qp_ynode *e = qp_ynode_get(stage, "exclude", &ek);
    if (m && c) {
        const qp_ynode *later = mk->mark.line > ck->mark.line ||
                                        (mk->mark.line == ck->mark.line && mk->mark.col > ck->mark.col)
                                    ? mk
                                    : ck;
        return qp_recipe_fail(path, later->mark, "stage '%s' has both 'matrix' and 'candidates' (use one)", t->id);
    }
    if (e && !m)
        return qp_recipe_fail(path, ek->mark, "'exclude' of stage '%s' needs a 'matrix' (it drops combinations of one)",
                              t->id);
    if (m) {
        t->expand_key = mk;
        return matrix_instances(t, mk, m, e, scope, path);
    }
    if (c) {
        t->expand_key = ck;
        return candidate_instances(t, ck, c, scope, path);
    }
    return 0;
}
