/* Recipe loading: YAML text -> checked top level and stages -> DAG.
 * Parameter checks live in recipe_params.c, the graph in recipe_dag.c. */
#include "pipeline/recipe.h"
#include "common/alloc.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"
#include "common/fsutil.h"
#include "common/hash.h"
#include "pipeline/interp.h"
#include "pipeline/recipe_int.h"
#include "pipeline/yaml_tree.h"

struct qp_recipe {
    char *path;
    char *dir;
    char *name;
    char digest[QP_HEX_LEN];
    json_t *vars;
    qp_stage_decl *stages;  /* topological order */
    size_t n;
};

static const char *const top_keys[] = {"qpipe", "name", "vars", "stages"};
static const char *const stage_keys[] = {"uses", "needs", "with", "doc", "matrix", "candidates", "exclude",
                                          "resources"};
#define NKEYS(a) (sizeof(a) / sizeof((a)[0]))

void qp_recipe_free(qp_recipe *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++)
        qp_stage_decl_clear(&r->stages[i]);
    free(r->stages);
    json_decref(r->vars);
    free(r->path);
    free(r->dir);
    free(r->name);
    free(r);
}

/* Every key of a mapping must be one of `known`. */
static int check_keys(const qp_ynode *map, const char *const *known, size_t n, const char *what, const char *in,
                      const char *path)
{
    for (size_t i = 0; i < map->n; i++) {
        const char *k = map->keys[i]->text;
        int ok = 0;
        for (size_t j = 0; j < n && !ok; j++)
            ok = strcmp(k, known[j]) == 0;
        if (ok)
            continue;
        const char *s = qp_suggest(k, known, n);
        if (s)
            return qp_recipe_fail(path, map->keys[i]->mark, "unknown %s '%s'%s (did you mean '%s'?)", what, k, in, s);
        char list[200] = "";
        for (size_t j = 0; j < n; j++) {
            strcat(list, j ? ", " : "");
            strcat(list, known[j]);
        }
        return qp_recipe_fail(path, map->keys[i]->mark, "unknown %s '%s'%s (expected %s)", what, k, in, list);
    }
    return 0;
}

static int check_version(const qp_ynode *root, const char *path)
{
    const qp_ynode *v = qp_ynode_get(root, "qpipe", NULL);
    if (!v)
        return qp_recipe_fail(path, root->mark, "missing 'qpipe: 1' (the recipe format version)");
    json_t *empty = json_object(), *j = NULL;
    int rc = v->kind == QP_YN_SCALAR ? qp_ynode_json(&j, v, empty, path) : 0;
    if (rc == 0 && json_is_integer(j) && json_integer_value(j) != 1)
        rc = qp_recipe_fail(path, v->mark, "unsupported recipe format 'qpipe: %lld' (this qpipe reads version 1)",
                            (long long)json_integer_value(j));
    else if (rc == 0 && !json_is_integer(j))
        rc = qp_recipe_fail(path, v->mark, "'qpipe' must be the integer 1 (the recipe format version)");
    json_decref(j);
    json_decref(empty);
    return rc;
}

/* vars: in file order, each may use the ones before it.  `text` keeps the
 * expanded text that ${vars.x} substitutes inside other text; r->vars the
 * typed values, which a whole-value "${vars.x}" gives (the scope's
 * "vars_typed"). */
static int load_vars(qp_recipe *r, json_t *text, const json_t *scope, const qp_ynode *root)
{
    const qp_ynode *key, *v = qp_ynode_get(root, "vars", &key);
    if (!v || qp_ynode_is_null(v))
        return 0;
    if (v->kind != QP_YN_MAP)
        return qp_recipe_fail(r->path, v->mark, "'vars' must be a mapping of name: value, not a %s",
                              qp_ynode_kind_name(v));
    for (size_t i = 0; i < v->n; i++) {
        const qp_ynode *k = v->keys[i], *val = v->items[i];
        if (!qp_recipe_is_id(k->text))
            return qp_recipe_fail(r->path, k->mark,
                                  "invalid variable name '%s' (use letters, digits, '_' and '-', starting with a letter or '_')",
                                  k->text);
        if (val->kind != QP_YN_SCALAR)
            return qp_recipe_fail(r->path, val->mark, "variable '%s' must be a string or a number, not a %s",
                                  k->text, qp_ynode_kind_name(val));
        char *s = NULL;
        json_t *typed = NULL;
        int rc = qp_scalar_eval(&typed, &s, val, scope, r->path);
        if (rc == 0) {
            json_object_set_new(text, k->text, json_string(s));
            json_object_set_new(r->vars, k->text, typed);
        }
        free(s);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int load_name(qp_recipe *r, const json_t *scope, const qp_ynode *root)
{
    const qp_ynode *v = qp_ynode_get(root, "name", NULL);
    if (!v)
        return qp_recipe_fail(r->path, root->mark, "missing required key 'name'");
    json_t *j = NULL;
    int rc = v->kind == QP_YN_SCALAR ? qp_ynode_json(&j, v, scope, r->path) : 0;
    if (rc < 0)
        return rc;
    const char *s = json_string_value(j);
    if (!s || !*s) {
        rc = qp_recipe_fail(r->path, v->mark, "'name' must be a non-empty string");
    } else if (strchr(s, '/') || qp_first_control_char(s)) {
        rc = qp_recipe_fail(r->path, v->mark, "'name' must not contain '/' or control characters");
    }
    if (rc == 0)
        r->name = qp_strdup(s);
    json_decref(j);
    return rc;
}

static int load_needs(qp_stage_tmpl *t, const qp_ynode *needs, const json_t *scope, const char *path)
{
    if (!needs || qp_ynode_is_null(needs))
        return 0;
    size_t n = needs->kind == QP_YN_SEQ ? needs->n : 1;
    if (needs->kind == QP_YN_MAP)
        return qp_recipe_fail(path, needs->mark, "'needs' of stage '%s' must be a stage id or a list of stage ids",
                              t->id);
    t->needs = qp_xcalloc(n + 1, sizeof(char *));
    t->need_nodes = qp_xcalloc(n + 1, sizeof(qp_ynode *));
    for (size_t i = 0; i < n; i++) {
        const qp_ynode *item = needs->kind == QP_YN_SEQ ? needs->items[i] : needs;
        json_t *j = NULL;
        int rc = item->kind == QP_YN_SCALAR ? qp_ynode_json(&j, item, scope, path) : 0;
        if (rc < 0)
            return rc;
        if (!json_is_string(j)) {
            json_decref(j);
            return qp_recipe_fail(path, item->mark, "'needs' of stage '%s' must list stage ids", t->id);
        }
        t->needs[t->n_needs] = qp_strdup(json_string_value(j));
        t->need_nodes[t->n_needs++] = item;
        json_decref(j);
    }
    return 0;
}

static int unknown_kind(const qp_ynode *at, const char *name, const char *path)
{
    size_t n;
    const qp_stage_kind *const *kinds = qp_stage_kinds(&n);
    const char *names[64];
    char list[600] = "";
    size_t len = 0;
    for (size_t i = 0; i < n && i < 64; i++) {
        names[i] = kinds[i]->name;
        len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s", i ? ", " : "", kinds[i]->name);
        if (len >= sizeof(list))
            len = sizeof(list) - 1;
    }
    const char *s = qp_suggest(name, names, n < 64 ? n : 64);
    if (s)
        return qp_recipe_fail(path, at->mark, "unknown stage kind '%s' (did you mean '%s'?)", name, s);
    return qp_recipe_fail(path, at->mark, "unknown stage kind '%s' (known: %s)", name, list);
}

/* A stage as written: everything but its parameters, which are checked
 * per instance once the stages are expanded. */
static int load_stage(qp_stage_tmpl *t, const qp_ynode *key, const qp_ynode *v, const json_t *scope,
                      const char *path)
{
    t->key = key;
    if (!qp_recipe_is_id(key->text))
        return qp_recipe_fail(path, key->mark,
                              "invalid stage id '%s' (use letters, digits, '_' and '-', starting with a letter or '_')",
                              key->text);
    t->id = qp_strdup(key->text);
    if (v->kind != QP_YN_MAP)
        return qp_recipe_fail(path, v->mark, "stage '%s' must be a mapping with 'uses:', not a %s", t->id,
                              qp_ynode_kind_name(v));
    char in[300];
    snprintf(in, sizeof(in), " in stage '%s'", t->id);
    int rc = check_keys(v, stage_keys, NKEYS(stage_keys), "key", in, path);
    if (rc < 0)
        return rc;
    const qp_ynode *uses = qp_ynode_get(v, "uses", NULL);
    if (!uses)
        return qp_recipe_fail(path, key->mark, "stage '%s' has no 'uses:' (the stage kind to run)", t->id);
    json_t *j = NULL;
    rc = uses->kind == QP_YN_SCALAR ? qp_ynode_json(&j, uses, scope, path) : 0;
    if (rc < 0)
        return rc;
    if (!json_is_string(j)) {
        json_decref(j);
        return qp_recipe_fail(path, uses->mark, "'uses' of stage '%s' must be the name of a stage kind", t->id);
    }
    t->kind = qp_stage_kind_find(json_string_value(j));
    rc = t->kind ? 0 : unknown_kind(uses, json_string_value(j), path);
    json_decref(j);
    if (rc < 0)
        return rc;
    const qp_ynode *doc = qp_ynode_get(v, "doc", NULL);
    if (doc && doc->kind != QP_YN_SCALAR)
        return qp_recipe_fail(path, doc->mark, "'doc' of stage '%s' must be a string", t->id);
    t->with = qp_ynode_get(v, "with", NULL);
    t->resources = qp_ynode_get(v, "resources", NULL);
    const qp_ynode *needs = qp_ynode_get(v, "needs", &t->needs_key);
    if ((rc = load_needs(t, needs, scope, path)) < 0)
        return rc;
    return qp_recipe_instances(t, v, scope, path);
}

static int load_stages(qp_recipe *r, const json_t *scope, const qp_ynode *root)
{
    const qp_ynode *key, *v = qp_ynode_get(root, "stages", &key);
    if (!v)
        return qp_recipe_fail(r->path, root->mark, "missing required key 'stages'");
    if (qp_ynode_is_null(v) || (v->kind == QP_YN_MAP && v->n == 0))
        return qp_recipe_fail(r->path, key->mark, "'stages' is empty (a recipe needs at least one stage)");
    if (v->kind != QP_YN_MAP)
        return qp_recipe_fail(r->path, v->mark, "'stages' must be a mapping of stage id to stage, not a %s",
                              qp_ynode_kind_name(v));
    size_t nt = v->n, n = 0;
    qp_stage_tmpl *t = qp_xcalloc(nt, sizeof(*t));
    qp_stage_build *b = NULL;
    size_t *order = NULL, *pos = NULL;
    int rc = 0;
    for (size_t i = 0; i < nt && rc == 0; i++)
        rc = load_stage(&t[i], v->keys[i], v->items[i], scope, r->path);
    if (rc == 0)
        rc = qp_recipe_expand(&b, &n, t, nt, scope, r->path);
    if (rc == 0) {
        order = qp_xcalloc(n + 1, sizeof(size_t));
        pos = qp_xcalloc(n + 1, sizeof(size_t));
        rc = qp_recipe_dag(b, n, r->path, order);
    }
    if (rc == 0) {
        r->stages = qp_xcalloc(n, sizeof(*r->stages));
        for (size_t k = 0; k < n; k++)
            pos[order[k]] = k;
        for (size_t k = 0; k < n; k++) {
            r->stages[k] = b[order[k]].decl;
            memset(&b[order[k]].decl, 0, sizeof(qp_stage_decl));
            for (size_t j = 0; j < r->stages[k].n_needs; j++)
                r->stages[k].need_index[j] = pos[r->stages[k].need_index[j]];
            for (size_t j = 0; j < r->stages[k].n_links; j++)
                r->stages[k].links[j].index = pos[r->stages[k].links[j].index];
        }
        r->n = n;
    }
    qp_stage_builds_free(b, n);
    for (size_t i = 0; i < nt; i++)
        qp_stage_tmpl_clear(&t[i]);
    free(t);
    free(order);
    free(pos);
    return rc;
}

/* The recipe's directory as an absolute path (realpath when it exists; a
 * string-only recipe may name a directory that does not). */
static char *abs_dir(const char *path)
{
    char *d = qp_path_dirname(path);
    char *a = realpath(d, NULL);
    if (!a) {
        char cwd[PATH_MAX];
        if (d[0] == '/' || !getcwd(cwd, sizeof(cwd)))
            a = qp_strdup(d);
        else
            a = strcmp(d, ".") == 0 ? qp_strdup(cwd) : qp_strfmt("%s/%s", cwd, d);
    }
    free(d);
    return a;
}

static int load_text(qp_recipe **out, const char *path, const char *text, size_t len)
{
    *out = NULL;
    qp_recipe *r = qp_xcalloc(1, sizeof(*r));
    r->path = qp_strdup(path);
    r->dir = abs_dir(path);
    r->vars = json_object();
    qp_sha256_buf(r->digest, text, len);
    /* ${vars.NAME} reads the text and the typed value, which load_vars
     * fills in as it goes. */
    json_t *vars_text = json_object(),
           *scope = json_pack("{s:O, s:O, s:I}", "vars", vars_text, "vars_typed", r->vars, "interp_budget",
                              (json_int_t)QP_INTERP_MAX_TOTAL);
    qp_ynode *root = NULL;
    int rc = qp_ytree_parse(&root, path, text, len);
    if (rc < 0)
        goto done;
    if (!root || qp_ynode_is_null(root)) {
        rc = qp_error_set(QP_EUSAGE, "%s:1:1: recipe is empty (expected qpipe: 1, name: and stages:)", path);
        goto done;
    }
    if (root->kind != QP_YN_MAP) {
        rc = qp_recipe_fail(path, root->mark, "a recipe must be a mapping with the keys qpipe, name and stages");
        goto done;
    }
    if ((rc = check_version(root, path)) < 0 ||
        (rc = check_keys(root, top_keys, NKEYS(top_keys), "top-level key", "", path)) < 0 ||
        (rc = load_vars(r, vars_text, scope, root)) < 0 || (rc = load_name(r, scope, root)) < 0 ||
        (rc = load_stages(r, scope, root)) < 0)
        goto done;
    *out = r;
    r = NULL;
done:
    qp_ynode_free(root);
    json_decref(vars_text);
    json_decref(scope);
    qp_recipe_free(r);
    return rc;
}

int qp_recipe_load_string(qp_recipe **out, const char *path, const char *text)
{
    return load_text(out, path, text, strlen(text));
}

int qp_recipe_load(qp_recipe **out, const char *path)
{
    *out = NULL;
    char *text = NULL;
    size_t len = 0;
    int rc = qp_read_file_max(path, QP_YAML_MAX_BYTES, &text, &len);
    if (rc)   /* a recipe that cannot be read is a usage error (exit 2) */
        return qp_error_recode(QP_EUSAGE);
    rc = load_text(out, path, text, len);
    free(text);
    return rc;
}

const char *qp_recipe_path(const qp_recipe *r) { return r->path; }
const char *qp_recipe_dir(const qp_recipe *r) { return r->dir; }

char *qp_recipe_abs_path(const qp_recipe *r)
{
    const char *path = qp_recipe_path(r), *base = strrchr(path, '/');
    return qp_path_join(qp_recipe_dir(r), base ? base + 1 : path);
}

const char *qp_recipe_name(const qp_recipe *r) { return r->name; }
const char *qp_recipe_digest(const qp_recipe *r) { return r->digest; }
const json_t *qp_recipe_vars(const qp_recipe *r) { return r->vars; }
size_t qp_recipe_stage_count(const qp_recipe *r) { return r->n; }

const qp_stage_decl *qp_recipe_stage(const qp_recipe *r, size_t i)
{
    return i < r->n ? &r->stages[i] : NULL;
}

long qp_recipe_find(const qp_recipe *r, const char *id)
{
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->stages[i].id, id) == 0)
            return (long)i;
    return -1;
}
