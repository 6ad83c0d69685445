#include "pipeline/runner.h"
#include "common/alloc.h"
#include "common/buf.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "pipeline/key.h"
#include "artifact/progress_impl.h"
#include "pipeline/provenance.h"
#include "pipeline/run_record.h"

#include <dirent.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef enum {
    ST_PENDING, ST_RUNNING, ST_CACHED, ST_RAN, ST_WILL_RUN, ST_FAILED, ST_BLOCKED, ST_SKIPPED
} stage_status;

static const char *status_name[] = {"pending", "running", "cached", "ran", "will run", "failed", "blocked", "skipped"};

typedef struct {
    const qp_stage_decl *decl;
    stage_status status;
    int selected;            /* part of this invocation (--stage) */
    size_t *deps;            /* needs, then the stages its parameters name (links) */
    size_t n_deps;
    char key[QP_HEX_LEN];
    char output[QP_HEX_LEN];
    qp_artifact *artifact;
    json_t *desc;
    double seconds;
    char *message;           /* error, block reason, plan reason, verify detail */
    int rejected;            /* a gate whose verdict is fail */
    int mismatch;            /* verify: output differs from the cached one */
    int code;                /* the error code of a failed stage */
    json_t *record;          /* what the stage added for the run record (ctx.record) */
    /* What process() found, written without the lock by the worker that
     * owns the stage; settle() publishes it into status and rejected
     * under R->mu, which the other workers read to pick what to run. */
    stage_status result;
    int result_rejected;
    int forced;              /* --force applies to it */
    int submit;              /* Slurm: not cached, its job is to be submitted */
} stage_state;

typedef struct {
    const qp_recipe *r;
    qp_cache *cache;
    const qp_run_options *opt;
    stage_state *st;
    size_t n;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_mutex_t out_mu;
    int stop;                /* a stage failed: start nothing new */
    int tty;
    int corrupt_seen;        /* a stage met a corrupt object: rerun once */
} runner;

/* ---------- output ---------- */

static void emit_json(runner *R, json_t *ev)
{
    char *s = json_dumps(ev, JSON_COMPACT | JSON_REAL_PRECISION(10));
    pthread_mutex_lock(&R->out_mu);
    fprintf(R->opt->out, "%s\n", s);
    fflush(R->opt->out);
    pthread_mutex_unlock(&R->out_mu);
    free(s);
    json_decref(ev);
}

/* key, output, metrics and a gate's checks, those a stage has, into e
 * (a --json event or a run record entry). */
static void add_outcome(json_t *e, const stage_state *s)
{
    if (s->key[0])
        json_object_set_new(e, "key", json_string(s->key));
    if (s->output[0])
        json_object_set_new(e, "output", json_string(s->output));
    if (s->artifact) {
        json_object_set(e, "metrics", (json_t *)qp_artifact_metrics_c(s->artifact));
        const json_t *checks = json_object_get(qp_artifact_meta_c(s->artifact), "checks");
        if (checks)
            json_object_set(e, "checks", (json_t *)checks);
    }
}

static void report_stage(runner *R, stage_state *s)
{
    const qp_stage_decl *d = s->decl;
    if (R->opt->on_stage) {
        pthread_mutex_lock(&R->out_mu);
        R->opt->on_stage(R->opt->on_stage_ud, d->id, s->key, s->output, s->desc, status_name[s->status]);
        pthread_mutex_unlock(&R->out_mu);
    }
    if (R->opt->json) {
        json_t *ev = json_pack("{s:s, s:s, s:s, s:s, s:f}", "event", "stage", "stage", d->id, "kind", d->kind->name,
                               "status", status_name[s->status], "seconds", s->seconds);
        add_outcome(ev, s);
        if (s->rejected)
            json_object_set_new(ev, "rejected", json_true());
        if (s->mismatch)
            json_object_set_new(ev, "mismatch", json_true());
        if (s->record && json_object_get(s->record, "slurm"))
            json_object_set(ev, "slurm", json_object_get(s->record, "slurm"));
        if (s->message)
            json_object_set_new(ev, s->status == ST_FAILED ? "error" : "reason", json_string(s->message));
        emit_json(R, ev);
        return;
    }
    pthread_mutex_lock(&R->out_mu);
    FILE *o = R->opt->out;
    if (R->tty)
        fprintf(o, "\r\033[K");
    const char *label = status_name[s->status];
    if (s->rejected)
        label = "REJECTED";
    else if (s->status == ST_FAILED)
        label = "FAILED";
    else if (s->mismatch)
        label = "DIFFERS";
    fprintf(o, "  %-9s %-14s %-10s %7.2fs", label, d->id, d->kind->name, s->seconds);
    if (s->message)
        fprintf(o, "  %s", s->message);
    fprintf(o, "\n");
    if (s->artifact && d->kind->report)
        d->kind->report(o, s->artifact);
    fflush(o);
    pthread_mutex_unlock(&R->out_mu);
}

/* ---------- one stage ---------- */

static char *last_desc_name(runner *R, const qp_stage_decl *d)
{
    char *path = qp_recipe_abs_path(R->r), *name = qp_strfmt("%s#%s", path, d->id);
    free(path);
    return name;
}

/* A package's `out` directory (meta "out", recipe-relative) holds exactly
 * the package's files: a fresh package replaces the whole directory, so a
 * cached one removes what another package left there (say B.gguf beside
 * A.gguf after a recipe went from A to B and back). */
static int prune_package_dir(runner *R, const qp_artifact *a)
{
    const char *out = json_string_value(json_object_get(qp_artifact_meta_c(a), "out"));
    if (!out || !out[0])
        return 0;
    char *dir = qp_path_join(qp_recipe_dir(R->r), out);
    DIR *d = opendir(dir);
    int rc = 0;
    for (struct dirent *de; d && rc == 0 && (de = readdir(d)) != NULL;) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char *entry = qp_strfmt("files/%s/%s", out, de->d_name);
        if (!qp_artifact_find(a, entry)) {
            char *path = qp_path_join(dir, de->d_name);
            rc = qp_rm_rf(path);
            free(path);
        }
        free(entry);
    }
    if (d)
        closedir(d);
    free(dir);
    return rc;
}

/* *changed = 1 when a workspace file the cache does not keep (a package's
 * model file) is missing or differs from its entry: by its digest for a
 * run (a file that cannot be read is an error), by its size alone for
 * plan, which reads no bytes. */
static int uncached_changed(runner *R, const qp_artifact *a, int by_digest, int *changed)
{
    *changed = 0;
    for (size_t i = 0; i < qp_artifact_count(a) && !*changed; i++) {
        const json_t *e = qp_artifact_entry(a, i);
        const char *name = qp_artifact_entry_name(e);
        if (strncmp(name, "files/", 6) != 0 || qp_artifact_entry_cached(e))
            continue;
        char *path = qp_path_join(qp_recipe_dir(R->r), name + 6);
        char have[QP_HEX_LEN] = "";
        struct stat st;
        int rc = 0;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) ||
            (json_int_t)st.st_size != json_integer_value(json_object_get(e, "size")))
            *changed = 1;
        else if (by_digest && (rc = qp_cache_file_digest(R->cache, path, have)) == 0)
            *changed = strcmp(have, qp_artifact_entry_digest(e)) != 0;
        free(path);
        if (rc)
            return rc;
    }
    return 0;
}

/* Files of a workspace artifact (run outs, a package) are restored when
 * missing or changed, so a cached `run` or `package` leaves the same files
 * as a fresh one.  *rebuild = 1, and nothing is restored, when a file the
 * cache does not keep is missing or changed: the stage runs again, which
 * reads and writes what a restore would. */
static int checkout_workspace(runner *R, const qp_artifact *a, int *rebuild)
{
    *rebuild = 0;
    if (!json_is_true(json_object_get(qp_artifact_meta_c(a), "workspace")))
        return 0;
    int rc = uncached_changed(R, a, 1, rebuild);
    if (rc || *rebuild)
        return rc;
    for (size_t i = 0; i < qp_artifact_count(a); i++) {
        const json_t *e = qp_artifact_entry(a, i);
        const char *name = qp_artifact_entry_name(e);
        if (strncmp(name, "files/", 6) != 0 || !qp_artifact_entry_cached(e))
            continue;
        char *path = qp_path_join(qp_recipe_dir(R->r), name + 6);
        char have[QP_HEX_LEN] = "";
        if (!qp_path_exists(path) || qp_cache_file_digest(R->cache, path, have) != 0 ||
            strcmp(have, qp_artifact_entry_digest(e)) != 0) {
            char *parent = qp_path_dirname(path);
            rc = qp_mkdir_p(parent, 0755);
            if (rc == 0)
                rc = qp_cache_get_to_file(R->cache, qp_artifact_entry_digest(e), path);
            free(parent);
        }
        free(path);
        if (rc)
            return rc;
    }
    return prune_package_dir(R, a);
}

static char *diff_artifacts(const qp_artifact *old, const qp_artifact *fresh)
{
    char *acc = NULL;
    size_t shown = 0;
    for (size_t i = 0; i < qp_artifact_count(fresh); i++) {
        const json_t *e = qp_artifact_entry(fresh, i);
        const json_t *o = qp_artifact_find(old, qp_artifact_entry_name(e));
        if (o && strcmp(qp_artifact_entry_digest(o), qp_artifact_entry_digest(e)) == 0)
            continue;
        if (shown++ < 8) {
            char *n = qp_strfmt("%s%s%s", acc ? acc : "", acc ? ", " : "", qp_artifact_entry_name(e));
            free(acc);
            acc = n;
        }
    }
    for (size_t i = 0; i < qp_artifact_count(old); i++)
        if (!qp_artifact_find(fresh, qp_artifact_entry_name(qp_artifact_entry(old, i))) && shown++ < 8) {
            char *n = qp_strfmt("%s%s%s (gone)", acc ? acc : "", acc ? ", " : "",
                                qp_artifact_entry_name(qp_artifact_entry(old, i)));
            free(acc);
            acc = n;
        }
    if (!acc)
        acc = qp_strdup(json_equal(qp_artifact_metrics_c(old), qp_artifact_metrics_c(fresh)) ? "manifest metadata"
                                                                                            : "metrics");
    char *msg = qp_strfmt("differs from the cached output: %s%s", acc, shown > 8 ? ", …" : "");
    free(acc);
    return msg;
}

static unsigned lowest_bit(unsigned m)
{
    return m & (~m + 1u);
}

/* What the stage sees of the stages its parameters name: their outputs and
 * the artifacts they consumed (all finished: they are dependencies). */
static qp_named_stage *named_stages(runner *R, const qp_stage_decl *d)
{
    qp_named_stage *named = qp_xcalloc(d->n_links + 1, sizeof(*named));
    for (size_t i = 0; i < d->n_links; i++) {
        const stage_state *ls = &R->st[d->links[i].index];
        const qp_artifact **in = qp_xcalloc(ls->decl->n_needs + 1, sizeof(*in));
        for (size_t j = 0; j < ls->decl->n_needs; j++)
            in[j] = R->st[ls->decl->need_index[j]].artifact;
        named[i] = (qp_named_stage){.param = d->links[i].param, .id = d->links[i].id, .output = ls->artifact,
                                    .n_inputs = ls->decl->n_needs, .inputs = in};
    }
    return named;
}

static void free_named_stages(qp_named_stage *named, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free((void *)named[i].inputs);
    free(named);
}

/* What a stage's cached output must be: an artifact of a type the stage
 * can produce.  Checked on entries from the remote cache, which a server
 * can point at any valid objects (two keys' entries swapped, a tensor named
 * as the artifact); a local entry was written by a run of this stage. */
static int expect_output(void *ud, qp_cache *c, const char *digest, char *why, size_t why_len)
{
    const qp_stage_decl *d = ud;
    unsigned mask = qp_stage_output_types(d->kind, d->params);
    qp_artifact *a = NULL;
    if (qp_artifact_load(&a, c, digest) != 0) {
        snprintf(why, why_len, "its artifact %.12s is not an artifact: %s", digest, qp_error_last());
        qp_error_clear();
        return -1;
    }
    qp_artifact_type t = qp_artifact_type_of(a);
    qp_artifact_free(a);
    if (t & mask)
        return 0;
    snprintf(why, why_len, "stage '%s' produces %s, the entry names a %s artifact", d->id,
             qp_artifact_mask_names(mask), qp_artifact_type_name(t));
    return -1;
}

/* The stage's action entry, local or (checked) from the remote cache. */
static int cached_output(runner *R, const stage_state *s, char cached[QP_HEX_LEN])
{
    qp_cache_expect ex = {expect_output, (void *)s->decl};
    return qp_cache_action_get_expect(R->cache, s->key, &ex, cached);
}

/* Calls the stage and stores its output; caller holds the key lock. */
static int execute(runner *R, stage_state *s, qp_artifact *const *inputs, const char *const *input_ids,
                   const char *const *input_digests)
{
    const qp_stage_decl *d = s->decl;
    unsigned mask = qp_stage_output_types(d->kind, d->params);
    qp_artifact *out = NULL;
    char **refs = NULL;
    size_t n_refs = 0;
    int rc = qp_artifact_new(&out, (qp_artifact_type)lowest_bit(mask));
    if (rc)
        return rc;
    qp_progress prog;
    qp_progress_init(&prog, d->id, R->opt->out, &R->out_mu, R->tty, R->opt->json);
    qp_stage_ctx ctx = {
        .id = d->id, .kind = d->kind, .params = d->params, .recipe_dir = qp_recipe_dir(R->r),
        .cache = R->cache, .n_inputs = d->n_needs, .input_ids = input_ids, .inputs = inputs,
        .input_digests = input_digests, .output = out, .threads = R->opt->threads > 0 ? R->opt->threads : 1,
        .progress = &prog, .stage_key = s->key,
    };
    qp_named_stage *named = named_stages(R, d);
    ctx.n_named = d->n_links;
    ctx.named = named;
    json_decref(s->record);
    ctx.record = s->record = json_object();
    qp_error_clear();
    rc = d->kind->run(&ctx);
    pthread_mutex_lock(&R->out_mu);
    qp_progress_clear(&prog);
    pthread_mutex_unlock(&R->out_mu);
    if (rc) {
        if (!qp_error_last()[0])
            qp_error_set(rc, "stage '%s' failed without a message", d->id);
        goto done;
    }
    if (!(qp_artifact_type_of(out) & mask)) {
        rc = qp_error_set(QP_ERROR, "stage '%s': produced a %s artifact, expected %s", d->id,
                          qp_artifact_type_name(qp_artifact_type_of(out)), qp_artifact_mask_names(mask));
        goto done;
    }
    char digest[QP_HEX_LEN];
    if ((rc = qp_artifact_store(out, R->cache, digest, &refs, &n_refs)) != 0)
        goto done;
    if (R->opt->mode == QP_RUN_VERIFY && R->opt->lock) {
        const char *locked = json_string_value(
            json_object_get(json_object_get(json_object_get(R->opt->lock, "stages"), d->id), "output"));
        const char *locked_key = json_string_value(
            json_object_get(json_object_get(json_object_get(R->opt->lock, "stages"), d->id), "key"));
        if (locked && locked_key && !strcmp(locked_key, s->key) && strcmp(locked, digest) != 0) {
            s->mismatch = 1;
            s->message = qp_strfmt("differs from the lock: output %.12s, locked %.12s", digest, locked);
            goto stored;
        }
    }
    if (R->opt->mode == QP_RUN_VERIFY) {
        char cached[QP_HEX_LEN];
        if (cached_output(R, s, cached) == 0 && strcmp(cached, digest) != 0) {
            qp_artifact *old = NULL;
            s->mismatch = 1;
            if (qp_artifact_load(&old, R->cache, cached) == 0) {
                s->message = diff_artifacts(old, out);
                qp_artifact_free(old);
            } else {
                s->message = qp_strfmt("differs from the cached output %.12s", cached);
            }
            goto stored;  /* keep the cached action: verify only reports */
        }
    }
    if ((rc = qp_cache_action_put(R->cache, s->key, digest, (const char *const *)refs, n_refs)) != 0)
        goto done;
stored:
    memcpy(s->output, digest, QP_HEX_LEN);
    qp_artifact_sort_keys(out);   /* what follows sees it as a cached run would */
    s->artifact = out;
    out = NULL;
done:
    free_named_stages(named, d->n_links);
    qp_artifact_refs_free(refs, n_refs);
    qp_artifact_free(out);
    return rc;
}

/* --frozen: this stage's inputs must be those the lock recorded. */
static int check_frozen(runner *R, stage_state *s)
{
    const qp_stage_decl *d = s->decl;
    const json_t *ls = json_object_get(json_object_get(R->opt->lock, "stages"), d->id);
    const char *where = qp_recipe_path(R->r);
    if (!ls)
        return qp_error_set(QP_EUSAGE, "%s: --frozen: stage '%s' is not in the lock; run 'qpipe lock %s'", where,
                            d->id, where);
    static const char *parts[] = {"files", "reads", "inputs", "params"};
    for (size_t i = 0; i < 4; i++) {
        const json_t *now = json_object_get(s->desc, parts[i]), *then = json_object_get(ls, parts[i]);
        if ((!now && !then) || json_equal(now, then))
            continue;
        /* name the first differing entry */
        const char *k = NULL;
        json_t *v;
        if (json_is_object(now))
            json_object_foreach((json_t *)now, k, v)
                if (!json_equal(v, json_object_get(then, k)))
                    break;
        return qp_error_set(QP_EUSAGE,
                            "%s: --frozen: stage '%s': %s%s%s differs from the lock (%s); rerun 'qpipe lock %s' "
                            "if the change is intended",
                            where, d->id, parts[i], k ? " " : "", k ? k : "",
                            i == 0 ? "a file it reads changed" : i == 1 ? "its source changed"
                            : i == 2 ? "an upstream output changed" : "a parameter changed", where);
    }
    if (strcmp(json_string_value(json_object_get(ls, "key")) ? json_string_value(json_object_get(ls, "key")) : "",
               s->key) != 0)
        return qp_error_set(QP_EUSAGE, "%s: --frozen: stage '%s': its key differs from the lock (qpipe version "
                                       "or stage implementation changed); rerun 'qpipe lock %s'", where, d->id, where);
    return 0;
}

/* A gate's artifact whose verdict is not "pass" rejects (made visible to
 * the other workers by settle()). */
static void mark_rejected(stage_state *s)
{
    const char *verdict = s->artifact ? json_string_value(json_object_get(qp_artifact_meta_c(s->artifact), "verdict"))
                                      : NULL;
    s->result_rejected = verdict && strcmp(verdict, "pass") != 0;
}

static int process(runner *R, stage_state *s)
{
    const qp_stage_decl *d = s->decl;
    size_t n = d->n_needs;
    qp_artifact **inputs = qp_xcalloc(n + 1, sizeof(*inputs));
    const char **ids = qp_xcalloc(n + 1, sizeof(*ids)), **digests = qp_xcalloc(n + 1, sizeof(*digests));
    const char **link_digests = qp_xcalloc(d->n_links + 1, sizeof(*link_digests));
    qp_cache_lock *lock = NULL;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        stage_state *up = &R->st[d->need_index[i]];
        inputs[i] = up->artifact;
        ids[i] = up->decl->id;
        digests[i] = up->output;
        qp_artifact_type t = qp_artifact_type_of(up->artifact);
        if (!(t & d->kind->accepts)) {
            rc = qp_error_set(QP_EUSAGE, "%s:%d:%d: stage '%s': input '%s' is a %s artifact, but %s accepts %s",
                              qp_recipe_path(R->r), d->mark.line, d->mark.col, d->id, ids[i],
                              qp_artifact_type_name(t), d->kind->name, qp_artifact_mask_names(d->kind->accepts));
            goto done;
        }
    }
    for (size_t i = 0; i < d->n_links; i++)
        link_digests[i] = R->st[d->links[i].index].output;
    if ((rc = qp_key_describe(&s->desc, R->r, d, R->cache, digests, link_digests)) != 0)
        goto done;
    qp_key_hash(s->key, s->desc);
    if (R->opt->frozen && (rc = check_frozen(R, s)) != 0)
        goto done;
    if (R->opt->expect_key && R->opt->only_stage && !strcmp(d->id, R->opt->only_stage) &&
        strcmp(s->key, R->opt->expect_key) != 0) {
        rc = qp_error_set(QP_EUSAGE, "%s: stage '%s': its key here is %.12s, the run that submitted this job computed "
                          "%.12s: the recipe or a file it reads changed after submission (or this node sees other "
                          "files); run it again", qp_recipe_path(R->r), d->id, s->key, R->opt->expect_key);
        goto done;
    }

    char *desc_name = last_desc_name(R, d);
    int forced = R->opt->force_all || (R->opt->force_stage && strcmp(R->opt->force_stage, d->id) == 0);
    char cached[QP_HEX_LEN];

    if (R->opt->mode == QP_RUN_PLAN) {
        if (cached_output(R, s, cached) == 0 && !forced &&
            qp_artifact_load(&s->artifact, R->cache, cached) == 0) {
            memcpy(s->output, cached, QP_HEX_LEN);
            s->result = ST_CACHED;
            /* still cached for what follows (its output is known: the
             * rebuild gives the same bytes), but the run will redo it */
            int gone = 0;
            if (json_is_true(json_object_get(qp_artifact_meta_c(s->artifact), "workspace")) &&
                uncached_changed(R, s->artifact, 0, &gone) == 0 && gone)
                s->message = qp_strdup("its out: files are missing or changed; they will be rebuilt");
        } else {
            char *old_text = NULL;
            json_t *old = NULL;
            if (qp_cache_meta_get(R->cache, "stages", desc_name, &old_text) == 0)
                old = json_loads(old_text, 0, NULL);
            s->message = forced ? qp_strdup("forced") : qp_key_explain(old, s->desc);
            json_decref(old);
            free(old_text);
            s->result = ST_WILL_RUN;
        }
        qp_error_clear();
        free(desc_name);
        goto done;
    }

    if (R->opt->mode == QP_RUN_NORMAL && !forced && cached_output(R, s, cached) == 0) {
        int rebuild = 0;
        rc = qp_artifact_load(&s->artifact, R->cache, cached);
        if (rc == 0 && (rc = checkout_workspace(R, s->artifact, &rebuild)) == 0 && !rebuild) {
            memcpy(s->output, cached, QP_HEX_LEN);
            s->result = ST_CACHED;
            free(desc_name);
            goto done;
        }
        if (rc != QP_ECORRUPT && rc != 0) {
            free(desc_name);
            goto done;
        }
        /* the object was removed by the cache, or a workspace file the
         * cache does not keep is gone: recompute below */
        qp_artifact_free(s->artifact);
        s->artifact = NULL;
        if (rc == QP_ECORRUPT)
            qp_cache_action_remove(R->cache, s->key);
        else
            s->message = qp_strdup("its out: files were missing or changed; rebuilt");
        rc = 0;
    }

    if (R->opt->slurm && R->opt->mode == QP_RUN_NORMAL) {
        /* its job takes the key's lock itself, on whichever node it runs */
        s->submit = 1;
        s->forced = forced;
        free(desc_name);
        goto done;
    }
    if ((rc = qp_cache_lock_acquire(R->cache, s->key, &lock)) != 0) {
        free(desc_name);
        goto done;
    }
    /* another process may have finished this stage while we waited */
    int rebuild = 0;
    if (R->opt->mode == QP_RUN_NORMAL && !forced && cached_output(R, s, cached) == 0 &&
        qp_artifact_load(&s->artifact, R->cache, cached) == 0 && checkout_workspace(R, s->artifact, &rebuild) == 0 &&
        !rebuild) {
        memcpy(s->output, cached, QP_HEX_LEN);
        s->result = ST_CACHED;
    } else {
        qp_artifact_free(s->artifact);
        s->artifact = NULL;
        double t0 = qp_now();
        rc = execute(R, s, inputs, ids, digests);
        s->seconds = qp_now() - t0;
        if (rc == 0) {
            s->result = ST_RAN;
            char *text = qp_key_canonical(s->desc);
            qp_cache_meta_put(R->cache, "stages", desc_name, text);
            free(text);
        }
    }
    qp_cache_lock_release(lock);
    free(desc_name);
done:
    if (rc == 0)
        mark_rejected(s);
    free(inputs);
    free(ids);
    free(digests);
    free(link_digests);
    return rc;
}

/* ---------- scheduling ---------- */

static int dep_state(runner *R, stage_state *s, size_t *bad)
{
    /* 1 ready, 0 waiting, -1 blocked (bad = the dependency that blocks) */
    int ready = 1;
    for (size_t i = 0; i < s->n_deps; i++) {
        stage_state *u = &R->st[s->deps[i]];
        int rejected = u->rejected && !s->decl->kind->consumes_rejections;
        if (u->status == ST_FAILED || u->status == ST_BLOCKED || u->status == ST_SKIPPED || rejected) {
            *bad = s->deps[i];
            return -1;
        }
        if (u->status == ST_WILL_RUN) {
            *bad = s->deps[i];
            return -2;
        }
        if (u->status != ST_CACHED && u->status != ST_RAN)
            ready = 0;
    }
    return ready;
}

/* A finished stage's outcome (caller holds mu): a failure, with its own
 * message, stops new starts. */
static void settle(runner *R, stage_state *s, int rc, const char *message)
{
    if (!rc) {
        s->status = s->result;
        s->rejected = s->result_rejected;
        return;
    }
    s->status = ST_FAILED;
    s->code = rc;
    free(s->message);
    s->message = qp_strdup(message);
    if (rc == QP_ECORRUPT)
        R->corrupt_seen = 1;
    R->stop = 1;
}

/* ---------- Slurm ---------- */

/* An array runs in one partition: instances whose resources name
 * different ones (${matrix.…}) go in separately. */
static int same_partition(const qp_stage_decl *a, const qp_stage_decl *b)
{
    const char *pa = json_string_value(json_object_get(a->resources, "partition"));
    const char *pb = json_string_value(json_object_get(b->resources, "partition"));
    return (!pa && !pb) || (pa && pb && !strcmp(pa, pb));
}

/* pick and the other instances of its matrix stage that are ready now,
 * marked running: one job array (caller holds mu). */
static size_t gather_group(runner *R, stage_state *pick, stage_state **group)
{
    size_t n = 0;
    group[n++] = pick;
    if (!pick->decl->instance)
        return n;
    for (size_t i = 0; i < R->n; i++) {
        stage_state *s = &R->st[i];
        size_t bad = 0;
        if (s == pick || !s->selected || s->status != ST_PENDING || !s->decl->instance ||
            s->decl->kind != pick->decl->kind || strcmp(s->decl->base, pick->decl->base) != 0 ||
            !same_partition(s->decl, pick->decl) || dep_state(R, s, &bad) != 1)
            continue;
        s->status = ST_RUNNING;
        group[n++] = s;
    }
    return n;
}

typedef struct {
    runner *R;
    stage_state **stages;
    size_t n;
} submit_note;

/* The job id, as soon as sbatch gives it: the user sees what to squeue. */
static void on_submit(void *ud, const char *job)
{
    submit_note *sn = ud;
    runner *R = sn->R;
    if (R->opt->json) {
        json_t *ids = json_array();
        for (size_t i = 0; i < sn->n; i++)
            json_array_append_new(ids, json_string(sn->stages[i]->decl->id));
        emit_json(R, json_pack("{s:s, s:s, s:o}", "event", "submitted", "job", job, "stages", ids));
        return;
    }
    pthread_mutex_lock(&R->out_mu);
    FILE *o = R->opt->out;
    if (R->tty)
        fprintf(o, "\r\033[K");
    fprintf(o, "  %-9s ", "submitted");
    for (size_t i = 0; i < sn->n; i++)
        fprintf(o, "%s%s", i ? " " : "", sn->stages[i]->decl->id);
    fprintf(o, "  as Slurm job %s%s%s\n", sn->n > 1 ? "array " : "", job, sn->n > 1 ? "_[...]" : "");
    fflush(o);
    pthread_mutex_unlock(&R->out_mu);
}

/* How a stage's job ended, into the run record, and its result read back
 * from the cache the job stored it in. */
static int finish_job(runner *R, stage_state *s, const qp_slurm_task *t)
{
    const char *id = s->decl->id;
    if (!s->record)
        s->record = json_object();
    json_object_set_new(s->record, "slurm", qp_slurm_task_json(t));
    if (!qp_slurm_task_ok(t)) {
        char *tail = qp_slurm_log_tail(t->err, 6, 700);
        char how[48] = "";
        snprintf(how, sizeof(how), t->signal ? "exit %d, signal %d" : "exit %d", t->exit_code, t->signal);
        /* the tail before the path: a long message is cut at its end */
        int rc = qp_error_set(QP_ERROR, "stage '%s': Slurm job %s %s (%s): %s (stderr: %s)", id, t->job,
                              t->state[0] ? t->state : "ended", how, tail, t->err);
        free(tail);
        return rc;
    }
    char cached[QP_HEX_LEN];
    qp_cache_forget_remote_miss(R->cache, s->key);   /* the lookup before the job missed */
    int rc = cached_output(R, s, cached);
    if (rc == QP_ENOTFOUND)
        return qp_error_set(QP_ERROR, "stage '%s': Slurm job %s ended (%s) but its result (key %.12s) is not in the "
                            "cache %s: the nodes must share this cache directory, or (--job-cache-dir) the job must "
                            "have uploaded it to the remote cache; see its log %s", id, t->job,
                            t->state[0] ? t->state : "exit 0", s->key, qp_cache_dir(R->cache), t->log);
    if (rc == 0)
        rc = qp_artifact_load(&s->artifact, R->cache, cached);
    if (rc != 0) {   /* a damaged result keeps its own code (QP_ECORRUPT: recomputed) */
        qp_error_prefix("stage '%s': reading back what Slurm job %s stored", id, t->job);
        return rc;
    }
    memcpy(s->output, cached, QP_HEX_LEN);
    s->result = ST_RAN;
    free(s->message);
    s->message = qp_strfmt("Slurm job %s", t->job);
    mark_rejected(s);
    return 0;
}

/* Publishes the outcomes of stages v[0..n) (rcs, msgs: their codes and
 * failure messages, freed here), prints them, and wakes the workers that
 * wait for them. */
static void finish_stages(runner *R, stage_state **v, const int *rcs, char **msgs, size_t n)
{
    pthread_mutex_lock(&R->mu);
    for (size_t i = 0; i < n; i++)
        settle(R, v[i], rcs[i], msgs[i]);
    pthread_mutex_unlock(&R->mu);
    for (size_t i = 0; i < n; i++) {
        report_stage(R, v[i]);
        free(msgs[i]);
        msgs[i] = NULL;
    }
    pthread_mutex_lock(&R->mu);
    pthread_cond_broadcast(&R->cv);
    pthread_mutex_unlock(&R->mu);
}

/* The stages of one group: each one's key and cache lookup here, and
 * those cached (or failed) published at once so that what needs them
 * goes on; the rest as one job (array), waited for, then published. */
static void run_group(runner *R, stage_state **group, size_t n)
{
    stage_state **todo = qp_xcalloc(n, sizeof(*todo)), **done = qp_xcalloc(n, sizeof(*done));
    qp_slurm_stage *st = qp_xcalloc(n, sizeof(*st));
    int *rcs = qp_xcalloc(n, sizeof(*rcs));
    char **msgs = qp_xcalloc(n, sizeof(*msgs));
    qp_slurm_task *tasks = qp_xcalloc(n, sizeof(*tasks));
    size_t m = 0, k = 0;
    for (size_t i = 0; i < n; i++) {
        stage_state *s = group[i];
        s->submit = 0;
        int rc = process(R, s);
        if (rc != 0 || !s->submit) {
            rcs[k] = rc;
            msgs[k] = rc ? qp_strdup(qp_error_last()) : NULL;
            done[k++] = s;
            continue;
        }
        st[m] = (qp_slurm_stage){.decl = s->decl, .key = s->key, .force = s->forced};
        todo[m++] = s;
    }
    if (k > 0)
        finish_stages(R, done, rcs, msgs, k);
    pthread_mutex_lock(&R->mu);
    int stop = R->stop;   /* a stage failed meanwhile: start nothing new */
    pthread_mutex_unlock(&R->mu);
    if (m > 0 && stop) {
        for (size_t j = 0; j < m; j++) {
            todo[j]->result = ST_SKIPPED;
            free(todo[j]->message);
            todo[j]->message = qp_strdup("not started: an earlier stage failed");
            rcs[j] = 0;
            msgs[j] = NULL;
        }
        finish_stages(R, todo, rcs, msgs, m);
    } else if (m > 0) {
        submit_note sn = {R, todo, m};
        double t0 = qp_now();
        int rc = qp_slurm_run(R->opt->slurm, st, m, on_submit, &sn, tasks);
        char *msg = rc ? qp_strdup(qp_error_last()) : NULL;
        for (size_t j = 0; j < m; j++) {
            todo[j]->seconds = qp_now() - t0;
            rcs[j] = rc ? rc : finish_job(R, todo[j], &tasks[j]);
            msgs[j] = rcs[j] ? qp_strdup(rc ? msg : qp_error_last()) : NULL;
        }
        free(msg);
        qp_slurm_tasks_clear(tasks, m);
        finish_stages(R, todo, rcs, msgs, m);
    }
    free(todo);
    free(done);
    free(st);
    free(rcs);
    free(msgs);
    free(tasks);
}

static void *worker(void *arg)
{
    runner *R = arg;
    stage_state **group = qp_xcalloc(R->n + 1, sizeof(*group));
    pthread_mutex_lock(&R->mu);
    for (;;) {
        stage_state *pick = NULL;
        int pending = 0;
        for (size_t i = 0; i < R->n; i++) {
            stage_state *s = &R->st[i];
            if (!s->selected || s->status != ST_PENDING)
                continue;
            size_t bad = 0;
            int ds = dep_state(R, s, &bad);
            if (ds == -1 || (ds != -2 && R->stop)) {
                s->status = R->stop && ds != -1 ? ST_SKIPPED : ST_BLOCKED;
                stage_state *b = &R->st[bad];
                if (s->status == ST_SKIPPED)
                    s->message = qp_strdup("not started: an earlier stage failed");
                else
                    s->message = qp_strfmt("blocked: '%s' %s", b->decl->id,
                                           b->rejected ? "rejected the artifact" : status_name[b->status]);
                pthread_mutex_unlock(&R->mu);
                report_stage(R, s);
                pthread_mutex_lock(&R->mu);
                pthread_cond_broadcast(&R->cv);
                i = (size_t)-1;  /* statuses changed: rescan */
                continue;
            }
            if (ds == -2) {
                s->status = ST_WILL_RUN;
                s->message = qp_strfmt("upstream '%s' will run", R->st[bad].decl->id);
                pthread_mutex_unlock(&R->mu);
                report_stage(R, s);
                pthread_mutex_lock(&R->mu);
                i = (size_t)-1;
                continue;
            }
            pending++;
            if (ds == 1 && !pick)
                pick = s;
        }
        if (!pick) {
            int running = 0;
            for (size_t i = 0; i < R->n; i++)
                running += R->st[i].status == ST_RUNNING;
            if (pending == 0 || (running == 0))
                break;
            pthread_cond_wait(&R->cv, &R->mu);
            continue;
        }
        pick->status = ST_RUNNING;
        int on_slurm = R->opt->slurm && R->opt->mode == QP_RUN_NORMAL;
        size_t ng = on_slurm ? gather_group(R, pick, group) : 1;
        pthread_mutex_unlock(&R->mu);
        if (on_slurm) {
            run_group(R, group, ng);
        } else {
            int rc = process(R, pick);
            char *msg = rc ? qp_strdup(qp_error_last()) : NULL;
            finish_stages(R, &pick, &rc, &msg, 1);
        }
        pthread_mutex_lock(&R->mu);
    }
    pthread_cond_broadcast(&R->cv);
    pthread_mutex_unlock(&R->mu);
    free(group);
    return NULL;
}

static void select_stages(runner *R, size_t i)
{
    if (R->st[i].selected)
        return;
    R->st[i].selected = 1;
    for (size_t k = 0; k < R->st[i].n_deps; k++)
        select_stages(R, R->st[i].deps[k]);
}

static int rejection_absorbed(runner *R, size_t i);

/* Stages of this run by status (only selected stages ever leave ST_PENDING). */
static void count_statuses(const runner *R, size_t count[8])
{
    memset(count, 0, 8 * sizeof(*count));
    for (size_t i = 0; i < R->n; i++)
        if (R->st[i].selected)
            count[R->st[i].status]++;
}

static const char *verdict_name(int rc)
{
    return rc == 0 ? "pass" : rc == QP_EGATE ? "rejected" : "error";
}

static void print_summary(runner *R, const size_t *count, double elapsed, int rc)
{
    size_t rejected = 0, mismatched = 0, selected = 0;
    for (size_t i = 0; i < R->n; i++) {
        if (!R->st[i].selected)
            continue;
        selected++;
        rejected += R->st[i].rejected && !rejection_absorbed(R, i);
        mismatched += R->st[i].mismatch;
    }
    if (R->opt->json)
        return;
    FILE *o = R->opt->out;
    if (R->opt->mode == QP_RUN_NORMAL || R->opt->mode == QP_RUN_VERIFY) {
        fprintf(o, "\n  %-14s %-10s %-9s %8s  %s\n", "stage", "kind", "status", "time", "metrics");
        for (size_t i = 0; i < R->n; i++) {
            stage_state *s = &R->st[i];
            if (!s->selected)
                continue;
            char metrics[512] = "";   /* every metric an evaluation reports (kld, ppl, top-k …) */
            if (s->artifact) {
                const char *k;
                json_t *v;
                json_object_foreach((json_t *)qp_artifact_metrics_c(s->artifact), k, v) {
                    size_t len = strlen(metrics);
                    if (json_is_number(v) && len + strlen(k) + 16 < sizeof(metrics))
                        snprintf(metrics + len, sizeof(metrics) - len, "%s%s=%.5g", len ? " " : "", k,
                                 json_number_value(v));
                }
            }
            fprintf(o, "  %-14s %-10s %-9s %7.2fs  %s\n", s->decl->id, s->decl->kind->name,
                    s->rejected ? "rejected" : s->mismatch ? "differs" : status_name[s->status], s->seconds, metrics);
        }
    }
    if (R->opt->mode == QP_RUN_PLAN)
        fprintf(o, "%zu stages: %zu cached, %zu will run\n", selected, count[ST_CACHED], count[ST_WILL_RUN]);
    else
        fprintf(o, "\n%zu stages: %zu ran, %zu cached, %zu failed, %zu blocked%s%s in %.2fs\n", selected,
                count[ST_RAN], count[ST_CACHED], count[ST_FAILED], count[ST_BLOCKED] + count[ST_SKIPPED],
                rejected ? ", gate REJECTED" : "", mismatched ? ", outputs DIFFER" : "", elapsed);
    (void)rc;
}

/* A candidate's rejected gate does not fail the run when a stage that
 * chooses among candidates (select) consumed it and completed. */
static int rejection_absorbed(runner *R, size_t i)
{
    for (size_t t = 0; t < R->n; t++) {
        stage_state *s = &R->st[t];
        if (!s->selected || !s->decl->kind->consumes_rejections || (s->status != ST_RAN && s->status != ST_CACHED))
            continue;
        for (size_t k = 0; k < s->n_deps; k++)
            if (s->deps[k] == i)
                return 1;
    }
    return 0;
}

static int run_once(runner *R, double *elapsed)
{
    double t0 = qp_now();
    int jobs = R->opt->jobs > 0 ? R->opt->jobs : 1;
    if (R->opt->mode == QP_RUN_PLAN)
        jobs = 1;
    pthread_t *th = qp_xcalloc((size_t)jobs, sizeof(*th));
    for (int i = 0; i < jobs; i++)
        pthread_create(&th[i], NULL, worker, R);
    for (int i = 0; i < jobs; i++)
        pthread_join(th[i], NULL);
    free(th);
    *elapsed = qp_now() - t0;
    int rc = 0;
    for (size_t i = 0; i < R->n; i++) {
        stage_state *s = &R->st[i];
        if (!s->selected)
            continue;
        /* a recipe/lock problem keeps its exit status 2; anything else is 1 */
        if (s->status == ST_FAILED && rc == 0)
            rc = qp_error_set(s->code == QP_EUSAGE ? QP_EUSAGE : QP_ERROR, "%s", s->message);
    }
    if (rc == 0)
        for (size_t i = 0; i < R->n; i++)
            if (R->st[i].selected && R->st[i].rejected && !rejection_absorbed(R, i)) {
                rc = qp_error_set(QP_EGATE, "gate '%s' rejected the artifact", R->st[i].decl->id);
                break;
            }
    if (rc == 0)
        for (size_t i = 0; i < R->n; i++)
            if (R->st[i].selected && R->st[i].mismatch) {
                rc = qp_error_set(QP_EVERIFY, "stage '%s': %s", R->st[i].decl->id, R->st[i].message);
                break;
            }
    return rc;
}

static void reset_states(runner *R)
{
    for (size_t i = 0; i < R->n; i++) {
        stage_state *s = &R->st[i];
        qp_artifact_free(s->artifact);
        json_decref(s->desc);
        json_decref(s->record);
        free(s->message);
        s->artifact = NULL;
        s->desc = NULL;
        s->record = NULL;
        s->message = NULL;
        s->status = s->result = ST_PENDING;
        s->key[0] = s->output[0] = '\0';
        s->seconds = 0;
        s->rejected = s->result_rejected = s->mismatch = 0;
    }
    R->stop = 0;
    R->corrupt_seen = 0;
}

/* Each stage's state, with its dependencies: needs, then the stages its
 * parameters name (links) that are not among them. */
static void init_states(runner *R)
{
    for (size_t i = 0; i < R->n; i++) {
        const qp_stage_decl *d = qp_recipe_stage(R->r, i);
        stage_state *s = &R->st[i];
        s->decl = d;
        s->deps = qp_xcalloc(d->n_needs + d->n_links + 1, sizeof(size_t));
        for (size_t k = 0; k < d->n_needs; k++)
            s->deps[s->n_deps++] = d->need_index[k];
        for (size_t k = 0; k < d->n_links; k++) {
            int dup = 0;
            for (size_t j = 0; j < s->n_deps; j++)
                dup |= s->deps[j] == d->links[k].index;
            if (!dup)
                s->deps[s->n_deps++] = d->links[k].index;
        }
    }
}

/* One stage's entry in the run record. */
static json_t *record_stage(const stage_state *s)
{
    json_t *e = json_pack("{s:s, s:s, s:f, s:O}", "kind", s->decl->kind->name, "status", status_name[s->status],
                          "seconds", s->seconds, "params", s->decl->params);
    if (s->rejected)
        json_object_set_new(e, "rejected", json_true());
    add_outcome(e, s);  /* the record is written with sorted keys */
    if (s->desc) {
        json_object_set(e, "inputs", json_object_get(s->desc, "inputs"));
        json_object_set(e, "files", json_object_get(s->desc, "files"));
        if (json_object_get(s->desc, "reads"))
            json_object_set(e, "reads", json_object_get(s->desc, "reads"));
    }
    if (s->message)
        json_object_set_new(e, "message", json_string(s->message));
    if (s->record)
        json_object_update_missing(e, s->record);
    return e;
}

/* Commits the run record (provenance) when a stage ran; commit[0] stays
 * '\0' when none is made.  A failure to record is a warning: the run's
 * own error (rc's message) is kept. */
static void record_run(runner *R, const size_t *count, int rc, double started_wall, double elapsed, char commit[41])
{
    const qp_run_options *opt = R->opt;
    if (count[ST_RAN] == 0 || !opt->provenance)
        return;
    char *saved = qp_strdup(qp_error_last());
    int saved_code = qp_error_last_code();
    json_t *stages = json_object();
    for (size_t i = 0; i < R->n; i++)
        if (R->st[i].selected)
            json_object_set_new(stages, R->st[i].decl->id, record_stage(&R->st[i]));
    if (qp_run_record_commit(commit, R->r, stages, verdict_name(rc), started_wall, elapsed, opt->branch) != 0) {
        fprintf(stderr, "qpipe: warning: %s\n", qp_error_last());
        commit[0] = '\0';
    } else if (!opt->json) {
        fprintf(opt->out, "provenance: %.12s on %s\n", commit, opt->branch ? opt->branch : "qpipe/provenance");
    }
    json_decref(stages);
    qp_error_set(saved_code, "%s", saved);
    free(saved);
}

/* --json: the closing "summary" event. */
static void emit_summary(runner *R, const size_t *c, int rc, double elapsed, const char *commit)
{
    json_t *ev = json_pack("{s:s, s:i, s:i, s:i, s:i, s:f, s:s}", "event", "summary", "ran", (int)c[ST_RAN],
                           "cached", (int)c[ST_CACHED], "failed", (int)c[ST_FAILED], "blocked",
                           (int)(c[ST_BLOCKED] + c[ST_SKIPPED]), "seconds", elapsed, "verdict", verdict_name(rc));
    if (R->opt->exit_status)
        json_object_set_new(ev, "exit", json_integer(R->opt->exit_status(rc)));
    if (commit[0])
        json_object_set_new(ev, "provenance", json_string(commit));
    if (rc)
        json_object_set_new(ev, "error", json_string(qp_error_last()));
    emit_json(R, ev);
}

/* 1 when path is dir or lies below it (both absolute, without "." or ".."
 * words, no trailing '/'). */
static int path_within(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    return strncmp(path, dir, n) == 0 && (path[n] == 0 || path[n] == '/' || (n == 1 && dir[0] == '/'));
}

/* The work tree a recipe lives in: the nearest directory at or above dir
 * holding .git (a directory, or a worktree's file); outside git, the
 * current directory when dir is inside it (qpipe run recipes/r.yaml from
 * an unpacked tarball), else dir itself. */
static char *workspace_root(const char *dir)
{
    char *cur = qp_strdup(dir);
    for (;;) {
        char *git = qp_path_join(cur, ".git");
        int found = qp_path_exists(git);
        free(git);
        if (found)
            return cur;
        char *up = qp_path_dirname(cur);
        if (strcmp(up, cur) == 0) {
            free(up);
            free(cur);
            break;
        }
        free(cur);
        cur = up;
    }
    char *cwd = realpath(".", NULL);
    if (cwd && path_within(dir, cwd))
        return cwd;
    free(cwd);
    return qp_strdup(dir);
}

/* A package's out: as it is on disk, before any stage runs (the words were
 * checked when the recipe was loaded).  Resolved from the recipe's
 * directory, '..' included, it must stay in the recipe's work tree (the git
 * repository holding it, else its directory) — the shipped recipes write
 * ../dist/NAME beside recipes/ — and must not be the recipe's directory or
 * hold it, nor lie inside a .git, nor pass a symbolic link (it could lead
 * anywhere), nor be an existing file (the recipe itself), nor be inside the
 * cache or hold it. */
static int check_package_out(runner *R, const qp_stage_decl *d, const char *cache_real, char **out_abs)
{
    const char *out = json_string_value(json_object_get(d->params, "out"));
    if (!out)
        return 0;
    const char *base = qp_recipe_dir(R->r), *rp = qp_recipe_path(R->r);
    char *root = workspace_root(base);
    qp_buf abs = QP_BUF_INIT;
    qp_buf_printf(&abs, "%s", base);
    int rc = 0;
    for (const char *w = out; *w && rc == 0;) {
        size_t n = strcspn(w, "/");
        if (n == 2 && strncmp(w, "..", 2) == 0) {
            /* up one, to "/" at most ("/tmp/.." is "/", which no work tree holds) */
            char *slash = strrchr(abs.data, '/');
            if (slash) {
                abs.len = slash == abs.data ? 1 : (size_t)(slash - abs.data);
                abs.data[abs.len] = 0;
            }
        } else if (n > 0 && !(n == 1 && w[0] == '.')) {
            qp_buf_printf(&abs, "/%.*s", (int)n, w);
            struct stat st;
            if (n == 4 && strncmp(w, ".git", 4) == 0)
                rc = qp_error_set(QP_EUSAGE, "%s: stage '%s': out: %s is inside .git; give another directory", rp,
                                  d->id, abs.data);
            else if (lstat(abs.data, &st) == 0 && S_ISLNK(st.st_mode))
                rc = qp_error_set(QP_EUSAGE, "%s: stage '%s': out: %s is a symbolic link; give a real directory "
                                  "inside the recipe's work tree", rp, d->id, abs.data);
            else if (lstat(abs.data, &st) == 0 && !S_ISDIR(st.st_mode))
                rc = qp_error_set(QP_EUSAGE, "%s: stage '%s': out: %s exists and is not a directory", rp, d->id,
                                  abs.data);
        }
        w += n + (w[n] == '/');
    }
    if (rc == 0 && !path_within(abs.data, root))
        rc = qp_error_set(QP_EUSAGE, "%s: stage '%s': out: '%s' leads to %s, outside the recipe's work tree %s; give "
                          "a directory inside it", rp, d->id, out, abs.data, root);
    if (rc == 0 && path_within(base, abs.data))
        rc = qp_error_set(QP_EUSAGE, "%s: stage '%s': out: '%s' is the recipe's own directory or holds it; give a "
                          "subdirectory such as dist", rp, d->id, out);
    if (rc == 0 && cache_real && (path_within(abs.data, cache_real) || path_within(cache_real, abs.data)))
        rc = qp_error_set(QP_EUSAGE, "%s: stage '%s': out: %s %s the cache %s; give another directory", rp, d->id,
                          abs.data, path_within(abs.data, cache_real) ? "is inside" : "holds", cache_real);
    if (rc == 0 && out_abs)
        *out_abs = qp_buf_detach(&abs, NULL);
    qp_buf_free(&abs);
    free(root);
    return rc;
}

/* A directory the user keeps (the fetch source, say) is not replaced:
 * out: must be new, empty, or a package qpipe wrote (provenance.json). */
static int check_out_contents(runner *R, const qp_stage_decl *d, const char *abs)
{
    DIR *dir = opendir(abs);
    if (!dir)
        return 0;
    int others = 0, ours = 0;
    for (struct dirent *e; (e = readdir(dir)) != NULL;) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        others++;
        ours |= strcmp(e->d_name, "provenance.json") == 0;
    }
    closedir(dir);
    if (others && !ours)
        return qp_error_set(QP_EUSAGE, "%s: stage '%s': out: %s already holds files that are not a qpipe package "
                            "(no provenance.json), and a package replaces it whole; give a new or empty directory",
                            qp_recipe_path(R->r), d->id, abs);
    return 0;
}

static int check_outputs(runner *R)
{
    char *cache_real = realpath(qp_cache_dir(R->cache), NULL);
    char **outs = qp_xcalloc(R->n ? R->n : 1, sizeof(*outs));
    size_t n = 0;
    int rc = 0;
    for (size_t i = 0; i < R->n && rc == 0; i++) {
        const qp_stage_decl *d = qp_recipe_stage(R->r, i);
        if (strcmp(d->kind->name, "package") != 0 || (rc = check_package_out(R, d, cache_real, &outs[n])) != 0)
            continue;
        /* one package inside another's out: would be pruned by it */
        for (size_t k = 0; outs[n] && k < n && rc == 0; k++)
            if (path_within(outs[n], outs[k]) || path_within(outs[k], outs[n]))
                rc = qp_error_set(QP_EUSAGE, "%s: stage '%s': out: %s and another package's out: %s overlap (a "
                                  "package replaces its directory whole); give them separate directories",
                                  qp_recipe_path(R->r), d->id, outs[n], outs[k]);
        n += outs[n] != NULL;
    }
    for (size_t i = 0, k = 0; i < R->n && rc == 0 && k < n; i++) {
        const qp_stage_decl *d = qp_recipe_stage(R->r, i);
        if (strcmp(d->kind->name, "package") == 0)
            rc = check_out_contents(R, d, outs[k++]);
    }
    for (size_t k = 0; k < n; k++)
        free(outs[k]);
    free(outs);
    free(cache_real);
    return rc;
}

/* --stage: that stage and what it depends on; otherwise every stage. */
static int select_all(runner *R)
{
    if (R->opt->force_stage && qp_recipe_find(R->r, R->opt->force_stage) < 0)
        return qp_error_set(QP_EUSAGE, "%s: --force=%s: no such stage", qp_recipe_path(R->r), R->opt->force_stage);
    if (!R->opt->only_stage) {
        for (size_t i = 0; i < R->n; i++)
            R->st[i].selected = 1;
        return 0;
    }
    long i = qp_recipe_find(R->r, R->opt->only_stage);
    if (i < 0)
        return qp_error_set(QP_EUSAGE, "%s: --stage %s: no such stage", qp_recipe_path(R->r), R->opt->only_stage);
    select_stages(R, (size_t)i);
    return 0;
}

int qp_runner_run(const qp_recipe *r, qp_cache *cache, const qp_run_options *opt)
{
    runner R = {.r = r, .cache = cache, .opt = opt};
    R.n = qp_recipe_stage_count(r);
    R.st = qp_xcalloc(R.n ? R.n : 1, sizeof(*R.st));
    R.tty = !opt->json && isatty(fileno(opt->out));
    pthread_mutex_init(&R.mu, NULL);
    pthread_mutex_init(&R.out_mu, NULL);
    pthread_cond_init(&R.cv, NULL);
    init_states(&R);
    int rc = select_all(&R);
    if (rc == 0)
        rc = check_outputs(&R);
    if (rc == 0 && opt->provenance && opt->mode == QP_RUN_NORMAL) {
        char *recipe_abs = qp_recipe_abs_path(r);
        rc = qp_provenance_check_branch(recipe_abs, opt->branch);
        free(recipe_abs);
        if (rc != 0 && rc != QP_EUSAGE) {
            /* the repository cannot be read (ownership, damage): recording
             * will warn at the end as it always did; nothing to refuse */
            qp_error_clear();
            rc = 0;
        }
    }
    if (opt->force_all || opt->force_stage)
        qp_cache_set_recheck(cache, 1);   /* a forced stage replaces a damaged stored copy */
    if (rc)
        goto done;
    double elapsed = 0;
    double started_wall = (double)time(NULL);
    for (int attempt = 0;; attempt++) {
        rc = run_once(&R, &elapsed);
        if (!R.corrupt_seen || attempt >= 2 || opt->mode != QP_RUN_NORMAL)
            break;
        /* corrupt objects were removed: their producers run again */
        if (!opt->json)
            fprintf(opt->out, "  cache: corrupt objects were removed; recomputing the affected stages\n");
        reset_states(&R);
    }
    size_t count[8];
    count_statuses(&R, count);
    print_summary(&R, count, elapsed, rc);
    if (opt->mode == QP_RUN_NORMAL) {
        char commit[41] = "";
        record_run(&R, count, rc, started_wall, elapsed, commit);
        if (opt->json)
            emit_summary(&R, count, rc, elapsed, commit);
    }
done:
    for (size_t i = 0; i < R.n; i++) {
        qp_artifact_free(R.st[i].artifact);
        json_decref(R.st[i].desc);
        json_decref(R.st[i].record);
        free(R.st[i].message);
        free(R.st[i].deps);
    }
    free(R.st);
    pthread_mutex_destroy(&R.mu);
    pthread_mutex_destroy(&R.out_mu);
    pthread_cond_destroy(&R.cv);
    return rc;
}
