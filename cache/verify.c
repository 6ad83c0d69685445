/* qp_cache_verify: decodes and re-hashes every object, checks that every
 * action's objects exist and every memo parses.  Whatever fails is removed
 * (the stage that made it just runs again) and reported as one line.
 * Objects are checked before actions, so an action left dangling by a
 * corrupt object removed here is caught in the same pass. */
#include "cache/cache_internal.h"
#include "common/error.h"
#include "common/fsutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct {
    qp_cache *c;
    qp_cache_problem_cb cb;
    void *ud;
    size_t problems;
} verify_ctx;

static void problem(verify_ctx *v, const char *line)
{
    v->problems++;
    if (v->cb)
        v->cb(v->ud, line);
}

static int stray(verify_ctx *v, const char *path)
{
    char *line = qp_strfmt("%s: not a cache entry name; removed", path);
    unlink(path);
    problem(v, line);
    free(line);
    return 0;
}

/* A link, directory, FIFO … where the cache keeps only its own
 * directories and regular files: removed without following it. */
static int irregular(void *ud, const char *hex, const char *path, const struct stat *st)
{
    verify_ctx *v = ud;
    const char *what = S_ISLNK(st->st_mode) ? "a symbolic link" : S_ISDIR(st->st_mode) ? "a directory"
                       : "not a regular file";
    char *line = qp_strfmt("%s: %s, not a cache entry; removed", path, what);
    qp_rm_rf(path);
    qp_error_clear();
    problem(v, line);
    free(line);
    return 0;
}

static int verify_object(void *ud, const char *hex, const char *path, const struct stat *st)
{
    verify_ctx *v = ud;
    if (!hex)
        return stray(v, path);
    int rc = qp_cache_object_check(v->c, hex, NULL);
    if (rc == QP_ECORRUPT) {
        problem(v, qp_error_last());  /* names the object; it is removed */
        return 0;
    }
    if (rc == QP_ENOTFOUND)  /* removed meanwhile (gc, another verify) */
        return 0;
    return rc;
}

static int verify_action(void *ud, const char *hex, const char *path, const struct stat *st)
{
    verify_ctx *v = ud;
    if (!hex)
        return stray(v, path);
    qp_action_entry e;
    char reason[200], *line = NULL;
    int rc = qp_action_entry_read(path, &e, reason, sizeof(reason));
    if (rc == QP_ENOTFOUND)
        return 0;
    if (rc == QP_EFORMAT) {
        line = qp_strfmt("action %s: malformed (%s); removed", hex, reason);
    } else if (rc != 0) {
        return rc;
    } else {
        const char *missing = qp_cache_has(v->c, e.artifact) ? NULL : e.artifact;
        for (size_t i = 0; !missing && i < e.n_refs; i++)
            if (!qp_cache_has(v->c, e.refs[i]))
                missing = e.refs[i];
        if (missing)
            line = qp_strfmt("action %s: references missing object %s; removed, the stage will rerun",
                             hex, missing);
        qp_action_entry_clear(&e);
    }
    if (line) {
        qp_cache_unlink_if_same(path, st);
        problem(v, line);
        free(line);
    }
    return 0;
}

static int verify_memo(void *ud, const char *hex, const char *path, const struct stat *st)
{
    verify_ctx *v = ud;
    if (!hex)
        return stray(v, path);
    int rc = qp_memo_check(path, NULL);
    if (rc == QP_EFORMAT) {
        char *line = qp_strfmt("file digest memo %s: malformed; removed", path);
        qp_cache_unlink_if_same(path, st);
        problem(v, line);
        free(line);
        return 0;
    }
    return rc == QP_ENOTFOUND ? 0 : rc;
}

int qp_cache_verify(qp_cache *c, qp_cache_problem_cb cb, void *ud, size_t *n_problems)
{
    verify_ctx v = {c, cb, ud, 0};
    int rc;
    if ((rc = qp_cache_walk_irregular(c->objects, irregular, &v)) != 0 ||
        (rc = qp_cache_walk_irregular(c->actions, irregular, &v)) != 0 ||
        (rc = qp_cache_walk_irregular(c->files, irregular, &v)) != 0 ||
        (rc = qp_cache_walk(c->objects, verify_object, &v)) != 0 ||
        (rc = qp_cache_walk(c->actions, verify_action, &v)) != 0 ||
        (rc = qp_cache_walk(c->files, verify_memo, &v)) != 0 ||
        (rc = qp_cache_tmp_sweep(c, 1, NULL, NULL)) != 0)
        return rc;
    if (n_problems)
        *n_problems = v.problems;
    return 0;
}
