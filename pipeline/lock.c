#include "pipeline/lock.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/version.h"
#include "pipeline/runner.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *qp_lock_path(const char *recipe_path)
{
    return qp_strfmt("%s.lock", recipe_path);
}

typedef struct {
    json_t *stages;
    char *not_cached;
} lock_acc;

static void collect(void *ud, const char *id, const char *key, const char *output, const json_t *desc,
                    const char *status)
{
    lock_acc *a = ud;
    if (strcmp(status, "cached") != 0) {
        if (!a->not_cached)
            a->not_cached = qp_strdup(id);
        return;
    }
    json_t *e = json_pack("{s:s, s:s}", "key", key, "output", output);
    static const char *parts[] = {"kind", "files", "reads", "inputs", "params"};
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        const json_t *v = json_object_get(desc, parts[i]);
        if (v)
            json_object_set(e, parts[i], (json_t *)v);
    }
    json_object_set_new(a->stages, id, e);
}

int qp_lock_write(const qp_recipe *r, qp_cache *cache, int threads, const char *path)
{
    lock_acc acc = {json_object(), NULL};
    FILE *sink = fopen("/dev/null", "w");
    qp_run_options o = {.mode = QP_RUN_PLAN, .jobs = 1, .threads = threads, .out = sink, .on_stage = collect,
                        .on_stage_ud = &acc};
    int rc = qp_runner_run(r, cache, &o);
    if (sink)
        fclose(sink);
    if (rc == 0 && acc.not_cached)
        rc = qp_error_set(QP_ERROR, "%s: stage '%s' is not cached, so its output is unknown; run 'qpipe run %s' "
                                    "first, then lock", qp_recipe_path(r), acc.not_cached, qp_recipe_path(r));
    if (rc == 0) {
        json_t *lock = json_pack("{s:i, s:s, s:s, s:s, s:O}", "qpipe_lock", 1, "qpipe_version", QP_VERSION, "recipe",
                                 qp_recipe_path(r), "recipe_digest", qp_recipe_digest(r), "stages", acc.stages);
        char *text = json_dumps(lock, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
        char *with_nl = qp_strfmt("%s\n", text);
        rc = qp_write_file_atomic(path, with_nl, strlen(with_nl), NULL);
        free(with_nl);
        free(text);
        json_decref(lock);
    }
    json_decref(acc.stages);
    free(acc.not_cached);
    return rc;
}

int qp_lock_load(json_t **out, const char *path)
{
    if (!qp_path_exists(path))
        return qp_error_set(QP_ENOTFOUND, "%s: no lock file; create it with 'qpipe lock'", path);
    json_error_t e;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &e);
    if (!j)
        return qp_error_set(QP_EUSAGE, "%s:%d:%d: %s", path, e.line, e.column, e.text);
    if (json_integer_value(json_object_get(j, "qpipe_lock")) != 1 || !json_is_object(json_object_get(j, "stages"))) {
        json_decref(j);
        return qp_error_set(QP_EUSAGE, "%s: not a qpipe lock (format 1 expected); recreate it with 'qpipe lock'",
                            path);
    }
    *out = j;
    return 0;
}
