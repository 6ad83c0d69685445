#include "pipeline/key.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/numerics.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
    qp_cache *cache;
    json_t *acc;
} dir_digests;

static int add_digest(void *ud, const char *abs, const char *rel)
{
    dir_digests *d = ud;
    char hex[QP_HEX_LEN];
    int rc = qp_cache_file_digest(d->cache, abs, hex);
    if (rc == 0)
        json_object_set_new(d->acc, rel, json_string(hex));
    return rc;
}

/* Content digest of a file, or {rel: digest} of every file under a
 * directory (sorted by the canonical serialisation). */
static int digest_path(json_t **out, qp_cache *cache, const char *abs)
{
    struct stat st;
    if (stat(abs, &st) != 0)
        return qp_error_errno(QP_ERROR, "%s", abs);
    if (S_ISREG(st.st_mode)) {
        char d[QP_HEX_LEN];
        int rc = qp_cache_file_digest(cache, abs, d);
        if (rc == 0)
            *out = json_string(d);
        return rc;
    }
    if (!S_ISDIR(st.st_mode))
        return qp_error_set(QP_ERROR, "%s: not a file or directory", abs);
    dir_digests d = {cache, json_object()};
    int rc = qp_walk_files(abs, add_digest, &d);
    if (rc)
        json_decref(d.acc);
    else
        *out = d.acc;
    return rc;
}

static int content_digest(json_t **out, const qp_recipe *r, const qp_stage_decl *s, const char *param,
                          const char *path, qp_cache *cache)
{
    char *abs = qp_path_join(qp_recipe_dir(r), path);
    int rc = digest_path(out, cache, abs);
    free(abs);
    if (rc) {
        const char *mark = json_string_value(json_object_get(s->param_marks, param));
        char *msg = qp_strdup(qp_error_last());
        rc = qp_error_set(QP_ERROR, "%s:%s: stage '%s': %s: %s", qp_recipe_path(r), mark ? mark : "1:1", s->id,
                          param, msg);
        free(msg);
    }
    return rc;
}

/* A stage that a parameter names (QP_PF_STAGE) is read by the stage
 * without being an input: its output goes in the key as "PARAM_digest". */
static void add_link_digests(json_t *params, const qp_stage_decl *s, const char *const *link_digests)
{
    for (size_t i = 0; i < s->n_links; i++) {
        int is_need = 0;
        for (size_t j = 0; j < s->n_needs; j++)
            is_need |= s->need_index[j] == s->links[i].index;
        if (is_need)
            continue;
        char *name = qp_strfmt("%s_digest", s->links[i].param);
        json_object_set_new(params, name, json_string(link_digests[i]));
        free(name);
    }
}

int qp_key_describe(json_t **out, const qp_recipe *r, const qp_stage_decl *s, qp_cache *cache,
                    const char *const *input_digests, const char *const *link_digests)
{
    int rc = 0;
    json_t *desc = json_object(), *params = json_object(), *files = json_object(), *inputs = json_array();
    json_object_set_new(desc, "schema", json_string(QP_KEY_SCHEMA));
    json_object_set_new(desc, "kind", json_string(s->kind->name));
    json_object_set_new(desc, "version", json_integer(s->kind->version));
    if (s->kind->float_numerics)
        json_object_set_new(desc, "numerics", json_string(QP_NUMERICS_PROFILE));
    const char *name;
    json_t *v;
    json_object_foreach(s->params, name, v) {
        const qp_param_spec *spec = qp_stage_param_spec(s->kind, name);
        unsigned flags = spec ? spec->flags : 0;
        if (flags & QP_PF_UNKEYED)
            continue;
        if (!(flags & QP_PF_CONTENT)) {
            json_object_set(params, name, v);
            continue;
        }
        /* content params: digests only, so moving a file reruns nothing */
        json_t *d = NULL;
        if (json_is_string(v)) {
            if (json_string_value(v)[0] == '\0')
                d = json_null();
            else if ((rc = content_digest(&d, r, s, name, json_string_value(v), cache)) != 0)
                goto done;
        } else if (json_is_array(v)) {
            d = json_array();
            size_t i;
            json_t *p;
            json_array_foreach(v, i, p) {
                json_t *one = NULL;
                if ((rc = content_digest(&one, r, s, name, json_string_value(p), cache)) != 0) {
                    json_decref(d);
                    goto done;
                }
                json_array_append_new(d, one);
            }
        }
        json_object_set_new(files, name, d ? d : json_null());
    }
    add_link_digests(params, s, link_digests);
    for (size_t i = 0; i < s->n_needs; i++)
        json_array_append_new(inputs, json_pack("{s:s, s:s}", "id", s->needs[i], "digest", input_digests[i]));
    if (s->kind->key_extra) {
        json_t *extra = json_object();
        if ((rc = s->kind->key_extra(s->params, qp_recipe_dir(r), cache, extra)) != 0) {
            char *msg = qp_strdup(qp_error_last());
            rc = qp_error_set(rc, "%s:%d:%d: stage '%s': %s", qp_recipe_path(r), s->mark.line, s->mark.col, s->id,
                              msg);
            free(msg);
            json_decref(extra);
            goto done;
        }
        json_object_set_new(desc, "reads", extra);
    }
done:
    json_object_set_new(desc, "params", params);
    json_object_set_new(desc, "files", files);
    json_object_set_new(desc, "inputs", inputs);
    if (rc)
        json_decref(desc);
    else
        *out = desc;
    return rc;
}

char *qp_key_canonical(const json_t *desc)
{
    char *s = json_dumps(desc, JSON_SORT_KEYS | JSON_COMPACT | JSON_REAL_PRECISION(17));
    if (!s)  /* a description is always serialisable: only memory can fail */
        qp_out_of_memory(0, __FILE__, __LINE__);
    return s;
}

void qp_key_hash(char key[QP_HEX_LEN], const json_t *desc)
{
    char *s = qp_key_canonical(desc);
    qp_sha256_buf(key, s, strlen(s));
    free(s);
}

static void append(char **acc, const char *fmt, const char *a, const char *b, const char *c)
{
    char *item = qp_strfmt(fmt, a, b, c);
    char *next = *acc ? qp_strfmt("%s; %s", *acc, item) : qp_strdup(item);
    free(item);
    free(*acc);
    *acc = next;
}

static char *short_json(const json_t *v)
{
    if (!v)
        return qp_strdup("(unset)");
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_SORT_KEYS);
    if (s && strlen(s) > 40) {
        s[37] = '.';
        s[38] = '.';
        s[39] = '.';
        s[40] = '\0';
    }
    return s ? s : qp_strdup("?");
}

/* json_equal() is false when both are NULL; absent == absent here. */
static int same(const json_t *a, const json_t *b)
{
    return (!a && !b) || json_equal(a, b);
}

char *qp_key_explain(const json_t *old, const json_t *desc)
{
    if (!old)
        return qp_strdup("never run");
    char *acc = NULL;
    if (!same(json_object_get(old, "version"), json_object_get(desc, "version")) ||
        !same(json_object_get(old, "kind"), json_object_get(desc, "kind")))
        append(&acc, "%s%s%s", "stage implementation changed", "", "");
    if (!same(json_object_get(old, "numerics"), json_object_get(desc, "numerics")))
        append(&acc, "numerics profile changed%s%s%s", "", "", "");
    const json_t *op = json_object_get(old, "params"), *np = json_object_get(desc, "params");
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)np, k, v) {
        const json_t *ov = json_object_get(op, k);
        if (!same(ov, v)) {
            char *a = short_json(ov), *b = short_json(v);
            append(&acc, "param %s: %s -> %s", k, a, b);
            free(a);
            free(b);
        }
    }
    json_object_foreach((json_t *)op, k, v)
        if (!json_object_get(np, k))
            append(&acc, "param %s removed%s%s", k, "", "");
    const json_t *of = json_object_get(old, "files"), *nf = json_object_get(desc, "files");
    json_object_foreach((json_t *)nf, k, v)
        if (!same(json_object_get(of, k), v))
            append(&acc, "%s: file content changed%s%s", k, "", "");
    if (!same(json_object_get(old, "reads"), json_object_get(desc, "reads")))
        append(&acc, "source content changed%s%s%s", "", "", "");
    const json_t *oi = json_object_get(old, "inputs"), *ni = json_object_get(desc, "inputs");
    size_t i;
    json_array_foreach((json_t *)ni, i, v) {
        const char *id = json_string_value(json_object_get(v, "id"));
        int same = 0;
        size_t j;
        json_t *w;
        json_array_foreach((json_t *)oi, j, w)
            if (json_equal(v, w))
                same = 1;
        if (!same)
            append(&acc, "input '%s' changed%s%s", id, "", "");
    }
    if (!acc)
        acc = qp_strdup("output missing from the cache");
    return acc;
}
