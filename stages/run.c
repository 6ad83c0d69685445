/* run: an arbitrary command with declared deps, outs and metrics (DVC's
 * cmd/deps/outs/metrics) — the escape hatch to external tools.
 *
 * The command runs through /bin/sh in the recipe's directory.  deps are
 * hashed by content into the key; outs are removed before the command
 * runs, must exist afterwards, and are stored in the cache (and restored
 * from it on a cached run); a `metrics:` JSON file's numeric fields (nested
 * objects flattened with '.') become the stage's metrics.  Upstream
 * artifacts are materialised under $QPIPE_INPUT_<ID> (a directory). */
#include "stages/kinds.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/hash.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static const qp_param_spec params[] = {
    {"cmd", QP_P_STRING, NULL, NULL, 0, -1, QP_PF_REQUIRED, "shell command, run in the recipe's directory"},
    {"deps", QP_P_PATH_LIST, "[]", NULL, 0, -1, QP_PF_CONTENT, "files/directories the command reads"},
    {"outs", QP_P_PATH_LIST, "[]", NULL, 0, -1, 0, "files/directories the command writes (cached)"},
    {"metrics", QP_P_PATH, "", NULL, 0, -1, 0, "JSON file the command writes; numbers become metrics"},
    {NULL, 0, NULL, NULL, 0, 0, 0, NULL},
};

static int run_validate(const json_t *p, const char *where)
{
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(p, "outs"), i, v) {
        const char *o = json_string_value(v);
        /* outs are restored from the cache relative to the recipe: an
         * absolute path would make the cache machine-specific */
        if (o[0] == '/' || o[0] == '\0')
            return qp_error_set(QP_EUSAGE, "%s: outs: '%s' must be a relative path (relative to the recipe)", where, o);
    }
    return 0;
}

typedef struct {
    qp_stage_ctx *ctx;
    const char *out;     /* the declared out, as written */
} out_walk;

static int add_out_file(void *ud, const char *abs, const char *rel)
{
    out_walk *w = ud;
    char *name = rel ? qp_strfmt("files/%s/%s", w->out, rel) : qp_strfmt("files/%s", w->out);
    int rc = qp_artifact_add_file(w->ctx->output, w->ctx->cache, name, abs, json_pack("{s:s}", "kind", "file"));
    free(name);
    return rc;
}

/* Stores a declared out (a file, or every file under a directory) as
 * "files/<out>[/<rel>]". */
static int store_out(qp_stage_ctx *ctx, const char *abs, const char *out)
{
    struct stat st;
    out_walk w = {ctx, out};
    if (stat(abs, &st) != 0)
        return qp_error_set(QP_ERROR, "stage '%s': declared out '%s' was not created by the command", ctx->id, out);
    if (S_ISREG(st.st_mode))
        return add_out_file(&w, abs, NULL);
    if (!S_ISDIR(st.st_mode))
        return qp_error_set(QP_ERROR, "stage '%s': out '%s' is neither a file nor a directory", ctx->id, out);
    return qp_walk_files(abs, add_out_file, &w);
}

static void flatten_metrics(qp_artifact *out, const json_t *obj, const char *prefix)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v) {
        char *name = prefix ? qp_strfmt("%s.%s", prefix, k) : qp_strdup(k);
        if (json_is_number(v) && isfinite(json_number_value(v)))
            qp_artifact_set_metric(out, name, json_number_value(v));
        else if (json_is_boolean(v))
            json_object_set_new(qp_artifact_metrics(out), name, json_boolean(json_is_true(v)));
        else if (json_is_object(v))
            flatten_metrics(out, v, name);
        free(name);
    }
}

/* A workspace file the cache does not keep (a package's model file) copied
 * from where its stage left it, hashed on the way: a file changed since
 * that stage ran is an error, never silently passed on.  Only a regular
 * file, and never more than the recorded size is read (a FIFO or a link to
 * /dev/zero put in its place cannot hang or fill the disk).  The copy is a
 * scratch input of this one command: renamed into place, not fsync'ed. */
static int copy_workspace_entry(qp_stage_ctx *ctx, const json_t *e, const char *dst)
{
    const char *name = qp_artifact_entry_name(e);
    if (strncmp(name, "files/", 6) != 0)
        return qp_error_set(QP_ERROR, "stage '%s': input entry '%s' is not a workspace file", ctx->id, name);
    const uint64_t want_size = (uint64_t)json_integer_value(json_object_get(e, "size"));
    char *src = qp_path_join(ctx->recipe_dir, name + 6);
    char *tmp = NULL, *buf = qp_xmalloc(1 << 20), *dir = qp_path_dirname(dst);
    qp_sha256 *h = NULL;
    int in = -1, out = -1, rc = qp_sha256_new(&h);
    uint64_t got = 0;
    struct stat st;
    if (rc)
        goto done;
    if ((in = open(src, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) < 0 || fstat(in, &st) != 0) {
        rc = qp_error_errno(QP_ERROR, "%s: cannot read the file for stage '%s' (rerun its stage to rebuild it)",
                            src, ctx->id);
        goto done;
    }
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != want_size) {
        rc = qp_error_set(QP_ERROR, "%s: not the file its stage wrote (%s); rerun that stage with --force to "
                                    "rebuild it", src, S_ISREG(st.st_mode) ? "another size" : "not a regular file");
        goto done;
    }
    if ((rc = qp_mkstemp_in(dir, ".in-", &tmp, &out)) != 0)
        goto done;
    for (;;) {
        ssize_t n = read(in, buf, 1 << 20);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = qp_error_errno(QP_ERROR, "%s: read failed", src);
            goto done;
        }
        if (n == 0)
            break;
        got += (uint64_t)n;
        if (got > want_size) {
            rc = qp_error_set(QP_ERROR, "%s: grew while it was being read; rerun", src);
            goto done;
        }
        qp_sha256_update(h, buf, (size_t)n);
        if (qp_write_all(out, buf, (size_t)n) != 0) {
            rc = qp_error_errno(QP_ERROR, "%s: write failed", tmp);
            goto done;
        }
    }
    char have[QP_HEX_LEN];
    qp_sha256_final_hex(h, have);
    if (strcmp(have, qp_artifact_entry_digest(e)) != 0) {
        rc = qp_error_set(QP_ERROR, "%s: changed since its stage wrote it (sha256 %.12s, recorded %.12s); rerun "
                                    "that stage with --force to rebuild it", src, have, qp_artifact_entry_digest(e));
        goto done;
    }
    if (close(out) != 0 || rename(tmp, dst) != 0) {
        out = -1;
        rc = qp_error_errno(QP_ERROR, "%s: cannot write", dst);
        goto done;
    }
    out = -1;
    free(tmp);
    tmp = NULL;
done:
    qp_tmp_discard(out, tmp);
    if (in >= 0)
        close(in);
    qp_sha256_free(h);
    free(dir);
    free(buf);
    free(src);
    return rc;
}

/* Writes each input artifact's entries under dir/<id>/ for the command. */
static int materialise_inputs(qp_stage_ctx *ctx, const char *dir, char ***env, size_t *n_env)
{
    for (size_t i = 0; i < ctx->n_inputs; i++) {
        char *in_dir = qp_strfmt("%s/%s", dir, ctx->input_ids[i]);
        int rc = qp_mkdir_p(in_dir, 0755);
        const qp_artifact *a = ctx->inputs[i];
        for (size_t j = 0; rc == 0 && j < qp_artifact_count(a); j++) {
            const json_t *e = qp_artifact_entry(a, j);
            const char *name = qp_artifact_entry_name(e);
            char *path = qp_path_join(in_dir, name);
            char *parent = qp_path_dirname(path);
            rc = qp_mkdir_p(parent, 0755);
            if (rc == 0)
                rc = qp_artifact_entry_cached(e) ? qp_cache_get_to_file(ctx->cache, qp_artifact_entry_digest(e), path)
                                                 : copy_workspace_entry(ctx, e, path);
            free(parent);
            free(path);
        }
        if (rc == 0) {
            char *mjson = json_dumps(qp_artifact_metrics_c(a), JSON_SORT_KEYS | JSON_INDENT(2));
            char *mpath = qp_path_join(in_dir, "metrics.json");
            rc = qp_write_file_atomic(mpath, mjson, strlen(mjson), NULL);
            free(mpath);
            free(mjson);
        }
        char *var = qp_strfmt("QPIPE_INPUT_%s=%s", ctx->input_ids[i], in_dir);
        for (char *p = var + 12; *p != '='; p++)
            *p = isalnum((unsigned char)*p) ? (char)toupper((unsigned char)*p) : '_';
        (*env)[(*n_env)++] = var;
        free(in_dir);
        if (rc)
            return rc;
    }
    return 0;
}

static void print_log_tail(const char *log_path)
{
    char *text = NULL;
    size_t len = 0;
    if (qp_read_file_tail(log_path, 1u << 20, &text, &len) != 0) {   /* a chatty command's log is not read whole */
        qp_error_clear();
        return;
    }
    /* the last 20 lines tell why the command failed */
    size_t lines = 0, start = len;
    while (start > 0 && lines <= 20)
        if (text[--start] == '\n')
            lines++;
    fprintf(stderr, "%s", text + (start ? start + 1 : 0));
    free(text);
}

static int run_run(qp_stage_ctx *ctx)
{
    int rc = 0;
    char *work = NULL, *log_path = NULL;
    size_t n_env = 0;
    char **env = qp_xcalloc(ctx->n_inputs + 2, sizeof(*env)), **envp = NULL;
    const json_t *outs = json_object_get(ctx->params, "outs");
    size_t i;
    json_t *v;

    char *tmp_root = qp_path_join(qp_cache_dir(ctx->cache), "tmp");
    work = qp_strfmt("%s/run-%s-XXXXXX", tmp_root, ctx->stage_key ? ctx->stage_key : "x");
    free(tmp_root);
    if (!mkdtemp(work)) {
        rc = qp_error_errno(QP_ERROR, "stage '%s': cannot create a work directory", ctx->id);
        goto done;
    }
    if ((rc = materialise_inputs(ctx, work, &env, &n_env)) != 0)
        goto done;
    /* stale outs would make a failed command look successful */
    json_array_foreach(outs, i, v) {
        char *abs = qp_path_join(ctx->recipe_dir, json_string_value(v));
        qp_rm_rf(abs);
        free(abs);
    }
    log_path = qp_strfmt("%s/log", work);
    env[n_env++] = qp_strfmt("QPIPE_STAGE=%s", ctx->id);
    /* Everything the child needs is built before fork(): other threads may
     * hold the malloc lock, so the child must not allocate. */
    size_t n_environ = 0;
    while (environ[n_environ])
        n_environ++;
    envp = qp_xcalloc(n_environ + n_env + 1, sizeof(*envp));
    for (size_t k = 0; k < n_environ; k++)
        envp[k] = environ[k];
    for (size_t k = 0; k < n_env; k++)
        envp[n_environ + k] = env[k];
    char *argv[] = {"sh", "-c", (char *)qp_param_str(ctx->params, "cmd"), NULL};
    pid_t pid = fork();
    if (pid < 0) {
        rc = qp_error_errno(QP_ERROR, "stage '%s': cannot fork", ctx->id);
        goto done;
    }
    if (pid == 0) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (chdir(ctx->recipe_dir) != 0 || fd < 0)
            _exit(127);
        dup2(fd, 1);
        dup2(fd, 2);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, 0);
        execve("/bin/sh", argv, envp);
        _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        ;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        print_log_tail(log_path);
        if (WIFEXITED(status))
            rc = qp_error_set(QP_ERROR, "stage '%s': command exited with status %d (output above)", ctx->id,
                              WEXITSTATUS(status));
        else
            rc = qp_error_set(QP_ERROR, "stage '%s': command killed by signal %d", ctx->id, WTERMSIG(status));
        goto done;
    }
    json_array_foreach(outs, i, v) {
        char *abs = qp_path_join(ctx->recipe_dir, json_string_value(v));
        rc = store_out(ctx, abs, json_string_value(v));
        free(abs);
        if (rc)
            goto done;
    }
    const char *mpath = qp_param_str(ctx->params, "metrics");
    if (mpath && mpath[0]) {
        char *abs = qp_path_join(ctx->recipe_dir, mpath);
        json_error_t jerr;
        json_t *m = json_load_file(abs, JSON_REJECT_DUPLICATES, &jerr);
        if (!m || !json_is_object(m)) {
            rc = qp_error_set(QP_ERROR, "stage '%s': metrics file %s: %s", ctx->id, mpath,
                              m ? "not a JSON object" : jerr.text);
        } else {
            flatten_metrics(ctx->output, m, NULL);
            char *name = qp_strfmt("files/%s", mpath);
            if (!qp_artifact_find(ctx->output, name))
                rc = qp_artifact_add_file(ctx->output, ctx->cache, name, abs, json_pack("{s:s}", "kind", "file"));
            free(name);
        }
        json_decref(m);
        free(abs);
        if (rc)
            goto done;
    }
    /* entries are recipe-relative workspace files: restored on cached runs */
    json_object_set_new(qp_artifact_meta(ctx->output), "workspace", json_true());
done:
    for (size_t k = 0; k < n_env; k++)
        free(env[k]);
    free(env);
    free(envp);
    if (work)
        qp_rm_rf(work);
    free(work);
    free(log_path);
    return rc;
}

const qp_stage_kind qp_stage_run = {
    .name = "run", .version = 1,
    .doc = "run a shell command with declared deps, outs and metrics",
    .params = params,
    .accepts = QP_ART_FILES | QP_ART_MODEL | QP_ART_CALIB | QP_ART_QMODEL | QP_ART_METRICS | QP_ART_VERDICT,
    .min_inputs = 0, .max_inputs = -1,
    .output = QP_ART_FILES,
    .validate = run_validate,
    .run = run_run,
};
