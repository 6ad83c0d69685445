/* `with:` validation against a stage kind's parameter table. */
#include "pipeline/recipe_int.h"
#include "common/alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "pipeline/interp.h"

/* What a parameter must be, for "must be …" messages. */
static const char *type_want(qp_param_type t)
{
    switch (t) {
    case QP_P_STRING: return "a string";
    case QP_P_INT: return "an integer";
    case QP_P_NUMBER: return "a number";
    case QP_P_BOOL: return "true or false";
    case QP_P_PATH: return "a path (string)";
    case QP_P_STRING_LIST: return "a string or a list of strings";
    case QP_P_PATH_LIST: return "a path or a list of paths";
    case QP_P_INT_LIST: return "an integer or a list of integers";
    case QP_P_MAP_LIST: return "a mapping or a list of mappings";
    case QP_P_MAP: return "a mapping";
    }
    return "?";
}

/* "string 'abc'", "integer 5", … for "got …". */
static void describe(char *buf, size_t n, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_STRING: snprintf(buf, n, "string '%.100s'", json_string_value(v)); break;
    case JSON_INTEGER: snprintf(buf, n, "integer %lld", (long long)json_integer_value(v)); break;
    case JSON_REAL: snprintf(buf, n, "number %.17g", json_real_value(v)); break;
    case JSON_TRUE: snprintf(buf, n, "boolean true"); break;
    case JSON_FALSE: snprintf(buf, n, "boolean false"); break;
    case JSON_NULL: snprintf(buf, n, "null (no value)"); break;
    case JSON_ARRAY: snprintf(buf, n, "a list"); break;
    case JSON_OBJECT: snprintf(buf, n, "a mapping"); break;
    }
}

typedef struct {
    const char *path;
    const char *kind;
    const char *name;       /* parameter name as written */
    const qp_param_spec *s;
} pctx;

static int type_error(const pctx *c, const qp_ynode *node, const json_t *v, const char *want)
{
    char got[160];
    describe(got, sizeof(got), v);
    int scalar_for_string = (json_is_number(v) || json_is_boolean(v)) &&
                            (c->s->type == QP_P_STRING || c->s->type == QP_P_PATH ||
                             c->s->type == QP_P_STRING_LIST || c->s->type == QP_P_PATH_LIST);
    /* A quoted "${vars.n}" keeps n's type, so quoting is not the cure. */
    char hint[600] = "";
    if (scalar_for_string && qp_scalar_is_typed_ref(node))
        snprintf(hint, sizeof(hint), " (%.250s keeps its type; write !!str \"%.250s\" to make it a string)", node->text,
                 node->text);
    else if (scalar_for_string)
        snprintf(hint, sizeof(hint), " (quote it to make it a string)");
    return qp_recipe_fail(c->path, node->mark, "parameter '%s' for %s must be %s, got %s%s", c->name, c->kind,
                          want, got, hint);
}

/* Splits "a|b|c" and checks `text` against it. */
static int check_allowed(const pctx *c, const qp_ynode *node, const char *text, int quote)
{
    const char *allowed = c->s->allowed;
    if (!allowed || (c->s->flags & QP_PF_STAGE))
        return 0;  /* a stage name's `allowed` are output types, checked with the graph */
    const char *cands[64];
    char buf[1024], list[1024];
    snprintf(buf, sizeof(buf), "%s", allowed);
    size_t n = 0, len = 0;
    list[0] = '\0';
    for (char *save = NULL, *t = strtok_r(buf, "|", &save); t && n < 64; t = strtok_r(NULL, "|", &save)) {
        if (strcmp(t, text) == 0)
            return 0;
        cands[n++] = t;
        len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s", len ? ", " : "", t);
        if (len >= sizeof(list))
            len = sizeof(list) - 1;
    }
    return qp_recipe_fail(c->path, node->mark, "parameter '%s' for %s must be one of %s, got %s%.100s%s%s", c->name,
                          c->kind, list, quote ? "'" : "", text, quote ? "'" : "",
                          quote ? qp_suggest_hint(text, cands, n) : "");
}

static int check_range(const pctx *c, const qp_ynode *node, double x, const char *text)
{
    if (c->s->min > c->s->max || (x >= c->s->min && x <= c->s->max))
        return 0;
    return qp_recipe_fail(c->path, node->mark, "parameter '%s' for %s must be between %.15g and %.15g, got %s",
                          c->name, c->kind, c->s->min, c->s->max, text);
}

/* One element of a string/path/int list, or a whole scalar parameter. */
static int check_scalar(const pctx *c, qp_param_type t, const qp_ynode *node, json_t **v, const char *want)
{
    char text[64];
    switch (t) {
    case QP_P_STRING:
    case QP_P_PATH:
        if (!json_is_string(*v))
            return type_error(c, node, *v, want);
        return check_allowed(c, node, json_string_value(*v), 1);
    case QP_P_INT:
        if (!json_is_integer(*v))
            return type_error(c, node, *v, want);
        snprintf(text, sizeof(text), "%lld", (long long)json_integer_value(*v));
        if (check_range(c, node, (double)json_integer_value(*v), text) < 0)
            return QP_EUSAGE;
        return check_allowed(c, node, text, 0);
    case QP_P_NUMBER:
        if (!json_is_number(*v))
            return type_error(c, node, *v, want);
        snprintf(text, sizeof(text), "%.17g", json_number_value(*v));
        if (check_range(c, node, json_number_value(*v), text) < 0)
            return QP_EUSAGE;
        if (json_is_integer(*v)) {  /* one JSON type per parameter: the key must not care */
            json_t *r = json_real((double)json_integer_value(*v));
            json_decref(*v);
            *v = r;
        }
        return 0;
    case QP_P_BOOL:
        return json_is_boolean(*v) ? 0 : type_error(c, node, *v, want);
    case QP_P_MAP:
        return json_is_object(*v) ? 0 : type_error(c, node, *v, want);
    default:
        return type_error(c, node, *v, want);
    }
}

/* Checks (and normalises) a converted value; *v may be replaced. */
static int check_value(const pctx *c, const qp_ynode *node, json_t **v)
{
    qp_param_type t = c->s->type, elem;
    switch (t) {
    case QP_P_STRING_LIST: elem = QP_P_STRING; break;
    case QP_P_PATH_LIST: elem = QP_P_PATH; break;
    case QP_P_INT_LIST: elem = QP_P_INT; break;
    case QP_P_MAP_LIST: elem = QP_P_MAP; break;
    default: return check_scalar(c, t, node, v, type_want(t));
    }
    /* A single element stands for a one-element list: `dataset: a.txt`. */
    if (!json_is_array(*v)) {
        if (json_is_null(*v) || (elem != QP_P_MAP && json_is_object(*v)))
            return type_error(c, node, *v, type_want(t));
        int rc = check_scalar(c, elem, node, v, type_want(t));
        if (rc < 0)
            return rc;
        json_t *a = json_array();
        json_array_append_new(a, *v);
        *v = a;
        return 0;
    }
    for (size_t i = 0; i < json_array_size(*v); i++) {
        json_t *item = json_incref(json_array_get(*v, i));
        const qp_ynode *in = node->kind == QP_YN_SEQ && i < node->n ? node->items[i] : node;
        int rc = check_scalar(c, elem, in, &item, type_want(t));
        if (rc == 0)
            json_array_set(*v, i, item);
        json_decref(item);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* A default is YAML text in the kind's table; strings and paths are taken
 * literally (so "" and "dist/" need no quoting there). */
static int default_value(json_t **out, const pctx *c)
{
    *out = NULL;
    const qp_param_spec *s = c->s;
    int rc = 0;
    if (s->type == QP_P_STRING || s->type == QP_P_PATH) {
        *out = json_string(s->def);
        return 0;
    }
    char what[200];
    snprintf(what, sizeof(what), "default of %s.%s", c->kind, s->name);
    qp_ynode *tree = NULL;
    json_t *empty = json_object();
    rc = qp_ytree_parse(&tree, what, s->def, strlen(s->def));
    if (rc == 0 && !tree)
        rc = qp_error_set(QP_EUSAGE, "%s: empty", what);
    if (rc == 0)
        rc = qp_ynode_json(out, tree, empty, what);
    if (rc == 0)
        rc = check_value(c, tree, out);
    if (rc < 0) {
        /* The table is wrong, not the recipe. */
        json_decref(*out);
        *out = NULL;
        rc = qp_error_set(QP_ERROR, "internal error: stage kind %s: bad default '%s' for parameter '%s': %s",
                          c->kind, s->def, s->name, qp_error_last());
    }
    json_decref(empty);
    qp_ynode_free(tree);
    return rc;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Unknown key: suggest among the fixed names; list them all when no close
 * one exists so the user sees what is possible. */
static int unknown_param(const qp_stage_kind *k, const qp_ynode *key, const char *path)
{
    const char *names[128];
    size_t n = 0;
    char list[900];
    size_t len = 0;
    list[0] = '\0';
    for (const qp_param_spec *p = k->params; p && p->name && n < 128; p++) {
        if (!(p->flags & QP_PF_PATTERN))
            names[n++] = p->name;
        len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s", len ? ", " : "", p->name);
        if (len >= sizeof(list))
            len = sizeof(list) - 1;
    }
    const char *s = qp_suggest(key->text, names, n);
    if (s)
        return qp_recipe_fail(path, key->mark, "unknown parameter '%s' for %s (did you mean '%s'?)", key->text,
                              k->name, s);
    return qp_recipe_fail(path, key->mark, "unknown parameter '%s' for %s (known: %s)", key->text, k->name,
                          len ? list : "none");
}

int qp_recipe_params(json_t **params, json_t **marks, const qp_stage_kind *k, const qp_ynode *with,
                     const qp_ynode *stage_key, const json_t *scope, const char *path)
{
    *params = NULL;
    *marks = NULL;
    int rc = 0;
    json_t *given = json_object(), *out = json_object(), *mk = json_object();
    const char **pattern_keys = NULL;
    if (qp_ynode_is_null(with))
        with = NULL;  /* `with:` with nothing after it */
    if (with && with->kind != QP_YN_MAP) {
        rc = qp_recipe_fail(path, with->mark, "'with' of stage '%s' must be a mapping of parameters, not a %s",
                            stage_key->text, qp_ynode_kind_name(with));
        goto done;
    }
    /* Given keys, in file order, so the first problem in the file is the
     * one reported. */
    for (size_t i = 0; with && i < with->n; i++) {
        const qp_ynode *key = with->keys[i], *val = with->items[i];
        const qp_param_spec *s = qp_stage_param_spec(k, key->text);
        if (!s) {
            rc = unknown_param(k, key, path);
            goto done;
        }
        pctx c = {path, k->name, key->text, s};
        json_t *v = NULL;
        rc = qp_ynode_json(&v, val, scope, path);
        if (rc == 0)
            rc = check_value(&c, val, &v);
        if (rc < 0) {
            json_decref(v);
            goto done;
        }
        json_object_set_new(given, key->text, v);
        json_object_set_new(mk, key->text, json_sprintf("%d:%d", val->mark.line, val->mark.col));
    }
    /* Output in table order (pattern matches sorted), so neither key order
     * nor comments in the file change the params object. */
    pattern_keys = qp_xcalloc(json_object_size(given) + 1, sizeof(*pattern_keys));
    for (const qp_param_spec *s = k->params; s && s->name; s++) {
        pctx c = {path, k->name, s->name, s};
        if (s->flags & QP_PF_PATTERN) {
            size_t n = 0;
            const char *name;
            json_t *v;
            json_object_foreach(given, name, v)
                if (qp_stage_param_spec(k, name) == s)
                    pattern_keys[n++] = name;
            qsort(pattern_keys, n, sizeof(*pattern_keys), by_name);
            for (size_t i = 0; i < n; i++)
                json_object_set(out, pattern_keys[i], json_object_get(given, pattern_keys[i]));
            if (n == 0 && (s->flags & QP_PF_REQUIRED)) {
                rc = qp_recipe_fail(path, stage_key->mark, "stage '%s': %s needs at least one '%s' parameter",
                                    stage_key->text, k->name, s->name);
                goto done;
            }
            continue;
        }
        json_t *v = json_object_get(given, s->name);
        if (v) {
            json_object_set(out, s->name, v);
        } else if (s->flags & QP_PF_REQUIRED) {
            rc = qp_recipe_fail(path, stage_key->mark, "stage '%s': missing required parameter '%s' for %s",
                                stage_key->text, s->name, k->name);
            goto done;
        } else if (s->def) {
            json_t *d = NULL;
            rc = default_value(&d, &c);
            if (rc < 0)
                goto done;
            json_object_set_new(out, s->name, d);
        }
    }
    if (k->validate) {
        char where[4096];
        snprintf(where, sizeof(where), "%s:%d:%d", path, stage_key->mark.line, stage_key->mark.col);
        rc = k->validate(out, where);
        if (rc < 0)
            goto done;
    }
    *params = out;
    *marks = mk;
    out = mk = NULL;
done:
    free(pattern_keys);
    json_decref(given);
    json_decref(out);
    json_decref(mk);
    return rc;
}
