/* Per-layer checkpoints: see stages/layer_ckpt.h. */
#include "stages/layer_ckpt.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CKPT_FORMAT "qpipe-layer-checkpoint/1"

struct qp_layer_ckpt {
    qp_stage_ctx *ctx;
    char *name;
    int n_layers;
    int enabled;
    /* x of the newest checkpoint saved or resumed from ("" when none): a
     * dropped older checkpoint never deletes activations still named here */
    char last_x[QP_HEX_LEN];
};

qp_layer_ckpt *qp_layer_ckpt_new(qp_stage_ctx *ctx, const char *name, int n_layers)
{
    qp_layer_ckpt *ck = qp_xcalloc(1, sizeof(*ck));
    ck->ctx = ctx;
    ck->name = qp_xstrdup(name);
    ck->n_layers = n_layers;
    ck->enabled = ctx && ctx->cache && ctx->stage_key && ctx->stage_key[0];
    return ck;
}

void qp_layer_ckpt_free(qp_layer_ckpt *ck)
{
    if (!ck)
        return;
    free(ck->name);
    free(ck);
}

/* The checkpoint entry's key: format, stage key, name and layer. */
static char *entry_key(const qp_layer_ckpt *ck, int layer)
{
    return qp_strfmt(CKPT_FORMAT " %s %s %d", ck->ctx->stage_key, ck->name, layer);
}

/* The manifest of layer `layer`: QP_ENOTFOUND (nothing to warn about) when
 * there is no entry, QP_ECORRUPT/QP_EFORMAT when it is unusable. */
static int read_manifest(qp_layer_ckpt *ck, int layer, json_t **out, char digest[QP_HEX_LEN])
{
    char *key = entry_key(ck, layer), *text = NULL;
    size_t len = 0;
    json_t *j = NULL;
    int rc = qp_cache_action_get(ck->ctx->cache, key, digest);
    if (rc)
        goto done;
    if ((rc = qp_cache_get(ck->ctx->cache, digest, (void **)&text, &len)) != 0)
        goto done;
    json_error_t jerr;
    j = json_loadb(text, len, 0, &jerr);
    const char *fmt = json_string_value(json_object_get(j, "format"));
    const char *sk = json_string_value(json_object_get(j, "stage_key"));
    const char *nm = json_string_value(json_object_get(j, "name"));
    json_t *jl = json_object_get(j, "layer"), *jn = json_object_get(j, "n_layers");
    if (!j || !fmt || strcmp(fmt, CKPT_FORMAT) || !sk || strcmp(sk, ck->ctx->stage_key) || !nm ||
        strcmp(nm, ck->name) || !json_is_integer(jl) || json_integer_value(jl) != layer || !json_is_integer(jn) ||
        json_integer_value(jn) != ck->n_layers) {
        rc = qp_error_set(QP_EFORMAT, "manifest %.12s does not describe layer %d of this stage", digest, layer);
        goto done;
    }
    *out = j;
    j = NULL;
done:
    json_decref(j);
    free(text);
    free(key);
    return rc;
}

/* Removes layer `layer`'s entry and its activations unless a kept
 * checkpoint names the same object (keep1/keep2: digests or ""). */
static void drop(qp_layer_ckpt *ck, int layer, const char *keep1, const char *keep2)
{
    json_t *man = NULL;
    char md[QP_HEX_LEN] = "";
    if (layer < 0)
        return;
    int rc = read_manifest(ck, layer, &man, md);
    char *key = entry_key(ck, layer);
    qp_cache_action_remove(ck->ctx->cache, key);
    if (rc == 0)
        qp_cache_remove(ck->ctx->cache, md);
    const char *x = rc == 0 ? json_string_value(json_object_get(man, "x")) : NULL;
    if (x && strcmp(x, keep1) != 0 && strcmp(x, keep2) != 0)
        qp_cache_remove(ck->ctx->cache, x);
    json_decref(man);
    free(key);
}

static void warn_discard(qp_layer_ckpt *ck, int layer)
{
    fprintf(stderr, "qpipe: warning: stage '%s': %s: checkpoint of layer %d/%d is unusable (%s); discarded\n",
            ck->ctx->id, ck->name, layer, ck->n_layers, qp_error_last());
}

/* A temp file in the cache's tmp/ (path malloc'ed, fd open). */
static int tmp_file(qp_layer_ckpt *ck, char **path, int *fd)
{
    char *dir = qp_path_join(qp_cache_dir(ck->ctx->cache), "tmp");
    int rc = qp_mkdir_p(dir, 0755);
    if (rc == 0)
        rc = qp_mkstemp_in(dir, "layer-ckpt", path, fd);
    free(dir);
    return rc;
}

/* Stores the S windows of acts as one object: straight from memory, or
 * (spilled) window by window through a temp file, in constant memory. */
static int put_acts(qp_layer_ckpt *ck, qp_act_store *acts, size_t S, size_t w, char digest[QP_HEX_LEN])
{
    const float *mem = qp_act_store_data(acts);
    if (mem)
        return qp_cache_put(ck->ctx->cache, mem, S * w * sizeof(float), digest);
    char *path = NULL;
    int fd = -1;
    float *buf = qp_xmalloc(w * sizeof(float)), *xs = NULL;
    int rc = tmp_file(ck, &path, &fd);
    for (size_t s = 0; s < S && rc == 0; s++)
        if ((rc = qp_act_store_get(acts, s, buf, &xs)) == 0 && qp_write_all(fd, xs, w * sizeof(float)) != 0)
            rc = qp_error_errno(QP_ERROR, "%s: cannot write the checkpoint's activations", path);
    if (fd >= 0)
        close(fd);
    if (rc == 0)
        rc = qp_cache_put_file(ck->ctx->cache, path, digest);
    if (path)
        unlink(path);
    free(path);
    free(buf);
    return rc;
}

/* The object's S windows into acts, through a temp file (constant memory);
 * the object is verified whole before the first window is written. */
static int fetch_acts(qp_layer_ckpt *ck, const char *digest, size_t bytes, char **out_path)
{
    char *path = NULL;
    int fd = -1;
    int rc = tmp_file(ck, &path, &fd);
    if (fd >= 0)
        close(fd);
    struct stat st;
    if (rc == 0 && (rc = qp_cache_get_to_file(ck->ctx->cache, digest, path)) == 0 &&
        (stat(path, &st) != 0 || (uint64_t)st.st_size != (uint64_t)bytes))
        rc = qp_error_set(QP_ECORRUPT, "activations %.12s are not %zu bytes", digest, bytes);
    if (rc && path) {
        unlink(path);
        free(path);
        path = NULL;
    }
    *out_path = path;
    return rc;
}

static int install_acts(const char *path, qp_act_store *acts, size_t S, size_t w)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return qp_error_errno(QP_ERROR, "%s: cannot read the checkpoint's activations", path);
    float *buf = qp_xmalloc(w * sizeof(float));
    int rc = 0;
    for (size_t s = 0; s < S && rc == 0; s++) {
        float *slot = qp_act_store_slot(acts, s, buf);
        size_t n = w * sizeof(float), got = 0;
        while (got < n && rc == 0) {
            ssize_t r = read(fd, (char *)slot + got, n - got);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                rc = qp_error_errno(QP_ERROR, "%s: short read of the checkpoint's activations", path);
            else
                got += (size_t)r;
        }
        if (rc == 0)
            rc = qp_act_store_put(acts, s, slot);
    }
    close(fd);
    free(buf);
    return rc;
}

int qp_layer_ckpt_resume(qp_layer_ckpt *ck, qp_act_store *acts, size_t S, size_t w, qp_layer_ckpt_load_fn load,
                          void *ud, int *next)
{
    const size_t x_len = acts ? S * w * sizeof(float) : 0;
    *next = 0;
    if (!ck->enabled)
        return 0;
    for (int l = ck->n_layers - 1; l >= 0; l--) {
        json_t *man = NULL;
        char *xpath = NULL;
        char md[QP_HEX_LEN];
        int rc = read_manifest(ck, l, &man, md);
        /* no entry is no news; an entry whose objects went missing was
         * just removed by the lookup, and is worth the warning */
        if (rc == QP_ENOTFOUND && !strstr(qp_error_last(), "is missing"))
            continue;
        const char *xd = rc == 0 ? json_string_value(json_object_get(man, "x")) : NULL;
        json_t *xb = rc == 0 ? json_object_get(man, "x_bytes") : NULL;
        json_t *st = rc == 0 ? json_object_get(man, "state") : NULL;
        if (rc == 0 && (!json_is_integer(xb) || (json_int_t)x_len != json_integer_value(xb) ||
                        (acts != NULL) != (xd != NULL) || !json_is_object(st)))
            rc = qp_error_set(QP_EFORMAT, "its activations are not the %zu bytes this run carries", x_len);
        if (rc == 0 && xd)
            rc = fetch_acts(ck, xd, x_len, &xpath);
        if (rc == 0)
            rc = load(ud, l, st);
        if (rc) {
            warn_discard(ck, l);
            if (xpath)
                unlink(xpath);
            free(xpath);
            json_decref(man);
            char *key = entry_key(ck, l);
            qp_cache_action_remove(ck->ctx->cache, key);
            free(key);
            continue;
        }
        if (xpath) {
            /* the stage took the state: the activations must follow */
            rc = install_acts(xpath, acts, S, w);
            unlink(xpath);
            free(xpath);
        }
        if (rc) {
            json_decref(man);
            return rc;
        }
        *next = l + 1;
        snprintf(ck->last_x, sizeof(ck->last_x), "%s", xd ? xd : "");
        json_decref(man);
        fprintf(stderr, "qpipe: stage '%s': %s: resuming at layer %d/%d from checkpoint\n", ck->ctx->id, ck->name,
                l + 1, ck->n_layers);
        qp_progress_note(ck->ctx->progress, "%s: resuming at layer %d/%d from checkpoint", ck->name, l + 1,
                         ck->n_layers);
        if (ck->ctx->record)
            json_object_set_new(ck->ctx->record, "resumed",
                                json_pack("{s:s, s:i, s:i}", "what", ck->name, "layer", l + 1, "layers",
                                          ck->n_layers));
        return 0;
    }
    qp_error_clear();
    return 0;
}

/* QPIPE_TEST_KILL_AFTER_LAYER=[NAME:]N: tests only (see the header). */
static void test_kill(const qp_layer_ckpt *ck, int layer)
{
    const char *v = getenv("QPIPE_TEST_KILL_AFTER_LAYER");
    if (!v || !*v)
        return;
    const char *colon = strchr(v, ':');
    if (colon && (strlen(ck->name) != (size_t)(colon - v) || strncmp(v, ck->name, (size_t)(colon - v)) != 0))
        return;
    char *end = NULL;
    long n = strtol(colon ? colon + 1 : v, &end, 10);
    if (end && *end == '\0' && n == layer)
        raise(SIGKILL);
}

int qp_layer_ckpt_save(qp_layer_ckpt *ck, int layer, const json_t *state, qp_act_store *acts, size_t S, size_t w,
                       const char *const *refs, size_t n_refs)
{
    const size_t x_len = acts ? S * w * sizeof(float) : 0;
    if (!ck->enabled)
        return 0;
    qp_cache *c = ck->ctx->cache;
    char xd[QP_HEX_LEN] = "", md[QP_HEX_LEN];
    char *text = NULL, *key = NULL;
    const char **all = NULL;
    json_t *man = NULL;
    int rc = 0;
    if (acts && (rc = put_acts(ck, acts, S, w, xd)) != 0)
        goto done;
    man = json_pack("{s:s, s:s, s:s, s:i, s:i, s:I, s:O}", "format", CKPT_FORMAT, "stage_key", ck->ctx->stage_key,
                    "name", ck->name, "layer", layer, "n_layers", ck->n_layers, "x_bytes", (json_int_t)x_len,
                    "state", (json_t *)state);
    if (!man)
        qp_out_of_memory(0, __FILE__, __LINE__);
    if (acts)
        json_object_set_new(man, "x", json_string(xd));
    if (!(text = json_dumps(man, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17))))
        qp_out_of_memory(0, __FILE__, __LINE__);
    if ((rc = qp_cache_put(c, text, strlen(text), md)) != 0)
        goto done;
    all = qp_xcalloc(n_refs + 2, sizeof(*all));
    size_t n = 0;
    all[n++] = md;
    if (acts)
        all[n++] = xd;
    for (size_t i = 0; i < n_refs; i++)
        all[n++] = refs[i];
    key = entry_key(ck, layer);
    if ((rc = qp_cache_checkpoint_put(c, key, ck->ctx->stage_key, md, all, n)) != 0)
        goto done;
    /* the previous checkpoint stays as the fallback; the one before goes */
    drop(ck, layer - 2, xd, ck->last_x);
    snprintf(ck->last_x, sizeof(ck->last_x), "%s", xd);
    test_kill(ck, layer);
done:
    free(all);
    free(key);
    free(text);
    json_decref(man);
    return rc;
}

void qp_layer_ckpt_finish(qp_layer_ckpt *ck)
{
    if (!ck->enabled)
        return;
    for (int l = ck->n_layers - 1; l >= 0; l--)
        drop(ck, l, "", "");
    ck->last_x[0] = '\0';
    qp_error_clear();
}
