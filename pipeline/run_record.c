#include "pipeline/run_record.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/numerics.h"
#include "common/version.h"
#include "pipeline/provenance.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int qp_run_record_commit(char out_commit[41], const qp_recipe *r, const json_t *stages, const char *verdict,
                         double started_unix, double seconds, const char *branch)
{
    char src_commit[41] = "";
    int dirty = 0;
    char *workdir = NULL;
    char *recipe_abs = qp_recipe_abs_path(r);
    int rc = qp_provenance_source(recipe_abs, src_commit, &dirty, &workdir);
    if (rc) {
        if (rc == QP_ENOTFOUND)
            qp_error_set(QP_ENOTFOUND, "%s is not inside a git repository: no provenance recorded",
                         qp_recipe_path(r));
        free(recipe_abs);
        return rc;
    }
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    char when[32];
    time_t t = (time_t)started_unix;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    char *rel = qp_provenance_relpath(workdir, recipe_abs);
    json_t *record = json_pack("{s:i, s:s, s:s, s:s, s:{s:s, s:b}, s:s, s:s, s:s, s:f, s:s, s:O, s:O, s:s}",
                               "record_format", 1, "name", qp_recipe_name(r), "recipe", rel ? rel : qp_recipe_path(r),
                               "recipe_digest", qp_recipe_digest(r), "source", "commit", src_commit, "dirty", dirty,
                               "qpipe_version", QP_VERSION, "numerics", QP_NUMERICS_PROFILE, "started", when, "seconds",
                               seconds, "host", host, "vars", qp_recipe_vars(r), "stages", stages, "verdict", verdict);
    size_t ran = 0, cached = 0;
    const char *id;
    json_t *st;
    json_object_foreach((json_t *)stages, id, st) {
        const char *status = json_string_value(json_object_get(st, "status"));
        ran += status && strcmp(status, "ran") == 0;
        cached += status && strcmp(status, "cached") == 0;
    }
    char *summary = qp_strfmt("%zu ran, %zu cached; recipe %.12s; source %.12s%s", ran, cached, qp_recipe_digest(r),
                              src_commit[0] ? src_commit : "(no commit)", dirty ? " (dirty)" : "");
    rc = qp_provenance_commit(out_commit, recipe_abs, branch, record, summary);
    free(summary);
    json_decref(record);
    free(rel);
    free(workdir);
    free(recipe_abs);
    return rc;
}
