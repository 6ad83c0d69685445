#include "pipeline/interp.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/error.h"
#include "pipeline/yaml_scalar.h"

/* ${…} references nest only through defaults; this bounds the recursion. */
#define INTERP_MAX_DEPTH 16

/* Appends n bytes unless the value would pass QP_INTERP_MAX_LEN: forty
 * vars that each double the one before reach terabytes, and this stops
 * them at the first value too long. */
static int append(qp_buf *out, const char *p, size_t n, const char *where)
{
    if (n > QP_INTERP_MAX_LEN || out->len > QP_INTERP_MAX_LEN - n)
        return qp_error_set(QP_EUSAGE, "%s: the interpolated value is longer than %d MiB (a ${…} expands to too much)",
                            where, QP_INTERP_MAX_LEN >> 20);
    qp_buf_append(out, p, n);
    return 0;
}

static size_t name_len(const char *s, size_t n, int allow_dash)
{
    size_t i = 0;
    if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
        return 0;
    while (i < n && (isalnum((unsigned char)s[i]) || s[i] == '_' || (allow_dash && s[i] == '-')))
        i++;
    return i;
}

/* Length of the body of a reference starting right after "${", up to (not
 * including) its matching '}'; -1 when unterminated. */
static long body_len(const char *s, size_t n)
{
    int depth = 1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '$' && i + 1 < n && (s[i + 1] == '$' || s[i + 1] == '{')) {
            depth += s[i + 1] == '{';
            i++;
        } else if (s[i] == '}' && --depth == 0) {
            return (long)i;
        }
    }
    return -1;
}

static int expand(qp_buf *out, const char *s, size_t n, const json_t *scope, const char *where, int depth);

/* ${matrix.KEY}: the instance's value, or an error that says where matrix
 * values exist at all (matrix is NULL outside an expanded stage's with:). */
static int expand_matrix(qp_buf *out, const char *body, size_t n, const json_t *matrix, const char *where)
{
    if (!matrix)
        return qp_error_set(QP_EUSAGE,
                            "%s: '${%.*s}' is defined only in the with: of a stage with matrix: or candidates: (or "
                            "one that fans out from it)", where, (int)n, body);
    char key[256];
    snprintf(key, sizeof(key), "%.*s", (int)(n - 7), body + 7);
    const json_t *v = json_object_get(matrix, key);
    if (v)
        return append(out, json_string_value(v), json_string_length(v), where);
    char keys[300] = "";
    size_t len = 0;
    const char *k;
    json_t *x;
    json_object_foreach((json_t *)matrix, k, x) {
        len += (size_t)snprintf(keys + len, sizeof(keys) - len, "%s%s", len ? ", " : "", k);
        if (len >= sizeof(keys))
            len = sizeof(keys) - 1;
    }
    return qp_error_set(QP_EUSAGE, "%s: undefined matrix value '%s' in '${%.*s}' (this instance has: %s)", where, key,
                        (int)n, body, keys);
}

/* One reference: body is what lies between "${" and its '}'. */
static int expand_ref(qp_buf *out, const char *body, size_t n, const json_t *scope, const char *where, int depth)
{
    if (n > 5 && strncmp(body, "vars.", 5) == 0) {
        size_t k = name_len(body + 5, n - 5, 1);
        if (k > 0 && k == n - 5) {
            char name[256];
            snprintf(name, sizeof(name), "%.*s", (int)k, body + 5);
            const json_t *v = json_object_get(json_object_get(scope, "vars"), name);
            if (!v)
                return qp_error_set(QP_EUSAGE, "%s: undefined variable '%s' in '${%.*s}'", where, name,
                                    (int)n, body);
            return append(out, json_string_value(v), json_string_length(v), where);
        }
    } else if (n > 7 && strncmp(body, "matrix.", 7) == 0) {
        size_t k = name_len(body + 7, n - 7, 1);
        if (k > 0 && k == n - 7)
            return expand_matrix(out, body, n, json_object_get(scope, "matrix"), where);
    } else if (n > 4 && strncmp(body, "env.", 4) == 0) {
        size_t k = name_len(body + 4, n - 4, 0);
        int has_def = k > 0 && n - 4 - k >= 2 && body[4 + k] == ':' && body[5 + k] == '-';
        if (k > 0 && (k == n - 4 || has_def)) {
            char name[256];
            snprintf(name, sizeof(name), "%.*s", (int)k, body + 4);
            const char *v = getenv(name);
            if (v && (*v || !has_def))
                return append(out, v, strlen(v), where);
            if (has_def)
                return expand(out, body + 6 + k, n - 6 - k, scope, where, depth + 1);
            return qp_error_set(QP_EUSAGE,
                                "%s: environment variable '%s' is not set (write ${env.%s:-DEFAULT} to give a default)",
                                where, name, name);
        }
    }
    return qp_error_set(QP_EUSAGE,
                        "%s: cannot interpolate '${%.*s}' (use ${vars.NAME}, ${env.NAME} or ${env.NAME:-DEFAULT}; $$ is a literal '$')",
                        where, (int)(n > 100 ? 100 : n), body);
}

static int expand(qp_buf *out, const char *s, size_t n, const json_t *scope, const char *where, int depth)
{
    if (depth > INTERP_MAX_DEPTH)
        return qp_error_set(QP_EUSAGE, "%s: ${…} defaults nested deeper than %d levels", where,
                            INTERP_MAX_DEPTH);
    size_t i = 0, lit = 0;
    while (i < n) {
        if (s[i] != '$' || i + 1 >= n || (s[i + 1] != '$' && s[i + 1] != '{')) {
            i++;
            continue;
        }
        if (append(out, s + lit, i - lit, where) < 0)
            return QP_EUSAGE;
        if (s[i + 1] == '$') {
            if (append(out, "$", 1, where) < 0)
                return QP_EUSAGE;
            i += 2;
        } else {
            long bl = body_len(s + i + 2, n - i - 2);
            if (bl < 0)
                return qp_error_set(QP_EUSAGE, "%s: unterminated '${' (write $$ for a literal '$')", where);
            int rc = expand_ref(out, s + i + 2, (size_t)bl, scope, where, depth);
            if (rc < 0)
                return rc;
            i += 2 + (size_t)bl + 1;
        }
        lit = i;
    }
    return append(out, s + lit, n - lit, where);
}

int qp_interp(char **out, const char *text, const json_t *scope, const char *where)
{
    *out = NULL;
    qp_buf b = QP_BUF_INIT;
    int rc = expand(&b, text, strlen(text), scope, where, 0);
    if (rc < 0) {
        qp_buf_free(&b);
        return rc;
    }
    /* the recipe's total: many vars of up to 1 MiB each would still add
     * up without bound; the counter is one json integer that every
     * (shallow) copy of the scope shares */
    json_t *budget = json_object_get(scope, "interp_budget");
    if (budget) {
        json_int_t left = json_integer_value(budget);
        if ((json_int_t)b.len > left) {
            qp_buf_free(&b);
            return qp_error_set(QP_EUSAGE, "%s: the recipe's interpolated values add up to more than %d MiB "
                                "(${…} references expand to too much)", where, QP_INTERP_MAX_TOTAL >> 20);
        }
        json_integer_set(budget, left - (json_int_t)b.len);
    }
    *out = qp_buf_detach(&b, NULL);
    return 0;
}

/* 1 when `text` is exactly one ${vars.NAME} or ${matrix.KEY} and nothing
 * else; *member gets the scope member holding typed values ("vars_typed"
 * or "matrix_typed") and name[0..cap) the NAME or KEY. */
static int whole_ref(const char *text, const char **member, char *name, size_t cap)
{
    size_t n = strlen(text);
    if (n < 4 || text[0] != '$' || text[1] != '{' || body_len(text + 2, n - 2) != (long)(n - 3))
        return 0;
    const char *body = text + 2;
    size_t bn = n - 3, pre;
    if (bn > 5 && strncmp(body, "vars.", 5) == 0) {
        pre = 5;
        *member = "vars_typed";
    } else if (bn > 7 && strncmp(body, "matrix.", 7) == 0) {
        pre = 7;
        *member = "matrix_typed";
    } else {
        return 0;
    }
    if (name_len(body + pre, bn - pre, 1) != bn - pre)
        return 0;
    snprintf(name, cap, "%.*s", (int)(bn - pre), body + pre);
    return 1;
}

int qp_scalar_is_typed_ref(const qp_ynode *n)
{
    const char *member;
    char name[256];
    return n->kind == QP_YN_SCALAR && n->tag == QP_YT_NONE && whole_ref(n->text, &member, name, sizeof(name));
}

int qp_scalar_eval(json_t **out, char **text, const qp_ynode *n, const json_t *scope, const char *path)
{
    *out = NULL;
    if (text)
        *text = NULL;
    char where[4096], name[256], *t = NULL;
    const char *member;
    snprintf(where, sizeof(where), "%s:%d:%d", path, n->mark.line, n->mark.col);
    /* Expanding first reports an undefined name the same way in every form. */
    int rc = qp_interp(&t, n->text, scope, where);
    if (rc < 0)
        return rc;
    if (n->tag == QP_YT_NONE && whole_ref(n->text, &member, name, sizeof(name))) {
        /* The referenced value's own type; a name with no typed value (an
         * instance's NAME) is text. */
        const json_t *v = json_object_get(json_object_get(scope, member), name);
        if (v && !json_is_object(v) && !json_is_array(v))
            *out = json_copy((json_t *)v);
        else
            rc = qp_yscalar_json(out, t, 0, QP_YT_STR, QP_YS_RECIPE, where);
    } else {
        rc = qp_yscalar_json(out, t, n->plain, n->tag, QP_YS_RECIPE, where);
    }
    if (rc == 0 && text)
        *text = t;
    else
        free(t);
    return rc;
}

int qp_ynode_json(json_t **out, const qp_ynode *n, const json_t *scope, const char *path)
{
    *out = NULL;
    if (n->kind == QP_YN_SCALAR)
        return qp_scalar_eval(out, NULL, n, scope, path);
    json_t *c = n->kind == QP_YN_MAP ? json_object() : json_array();
    if (!c)  /* jansson's own allocation: only memory can fail */
        qp_out_of_memory(0, __FILE__, __LINE__);
    for (size_t i = 0; i < n->n; i++) {
        json_t *v = NULL;
        int rc = qp_ynode_json(&v, n->items[i], scope, path);
        if (rc < 0) {
            json_decref(c);
            return rc;
        }
        if (n->kind == QP_YN_MAP)
            json_object_set_new(c, n->keys[i]->text, v);
        else
            json_array_append_new(c, v);
    }
    *out = c;
    return 0;
}
