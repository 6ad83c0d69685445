/* Per-layer checkpoints of calibrate: see stages/calib_ckpt.h. */
#include "stages/calib_ckpt.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "stages/layer_ckpt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct qp_calib_ckpt {
    qp_stage_ctx *ctx;
    qp_calib_stats *cs;
    const qp_llama_hparams *hp;
    qp_layer_ckpt *ck;
    json_t *layers;   /* per finished layer {"sums": digest, "entries": {name: entry}} */
};

qp_calib_ckpt *qp_calib_ckpt_new(qp_stage_ctx *ctx, qp_calib_stats *cs, const qp_llama_hparams *hp)
{
    qp_calib_ckpt *cc = qp_xcalloc(1, sizeof(*cc));
    cc->ctx = ctx;
    cc->cs = cs;
    cc->hp = hp;
    cc->ck = qp_layer_ckpt_new(ctx, "calibrate", hp->n_layers);
    cc->layers = json_array();
    return cc;
}

void qp_calib_ckpt_free(qp_calib_ckpt *cc)
{
    if (!cc)
        return;
    qp_layer_ckpt_free(cc->ck);
    json_decref(cc->layers);
    free(cc);
}

/* A layer's sums as bytes: per site n, calls (u64), abs_sum, sq_sum (dim
 * doubles each), host byte order (the cache is this machine's): exact. */
static size_t sums_bytes(const qp_llama_hparams *hp)
{
    size_t n = 0;
    for (int k = 0; k < 4; k++)
        n += 2 * sizeof(uint64_t) + 2 * qp_site_dim(hp, (qp_llama_site)k) * sizeof(double);
    return n;
}

static void sums_pack(const qp_calib_stats *cs, int l, unsigned char *p)
{
    for (int k = 0; k < 4; k++) {
        const qp_site_stats *st = &cs->sites[l * 4 + k];
        memcpy(p, &st->n, sizeof(uint64_t));
        memcpy(p + 8, &st->calls, sizeof(uint64_t));
        p += 16;
        memcpy(p, st->abs_sum, st->dim * sizeof(double));
        p += st->dim * sizeof(double);
        memcpy(p, st->sq_sum, st->dim * sizeof(double));
        p += st->dim * sizeof(double);
    }
}

static void sums_unpack(qp_calib_stats *cs, int l, const unsigned char *p)
{
    for (int k = 0; k < 4; k++) {
        qp_site_stats *st = &cs->sites[l * 4 + k];
        memcpy(&st->n, p, sizeof(uint64_t));
        memcpy(&st->calls, p + 8, sizeof(uint64_t));
        p += 16;
        memcpy(st->abs_sum, p, st->dim * sizeof(double));
        p += st->dim * sizeof(double);
        memcpy(st->sq_sum, p, st->dim * sizeof(double));
        p += st->dim * sizeof(double);
    }
}

/* The names calibrate gives layer l's entries (those it has). */
static const char *const kinds[] = {"act_absmean", "act_sqmean", "hessian"};

int qp_calib_ckpt_save(qp_calib_ckpt *cc, int l, qp_act_store *acts, size_t S, size_t w)
{
    size_t nb = sums_bytes(cc->hp);
    unsigned char *b = qp_xmalloc(nb);
    char d[QP_HEX_LEN];
    sums_pack(cc->cs, l, b);
    int rc = qp_cache_put(cc->ctx->cache, b, nb, d);
    free(b);
    if (rc)
        return rc;
    json_t *entries = json_object();
    for (int k = 0; k < 4; k++)
        for (size_t i = 0; i < 3; i++) {
            char name[96];
            snprintf(name, sizeof(name), "%s/layers.%d.%s", kinds[i], l, qp_site_name((qp_llama_site)k));
            const json_t *e = qp_artifact_find(cc->ctx->output, name);
            if (e)
                json_object_set_new(entries, name, json_deep_copy(e));
        }
    json_array_append_new(cc->layers, json_pack("{s:s, s:o}", "sums", d, "entries", entries));
    /* refs: every layer's sums and entries */
    size_t n = 0, cap = 16;
    const char **refs = qp_xmalloc(cap * sizeof(*refs));
    size_t i;
    json_t *lay;
    json_array_foreach(cc->layers, i, lay) {
        const char *name;
        json_t *e;
        if (n + 14 > cap) {
            cap = 2 * cap + 14;
            refs = qp_xrealloc_array(refs, cap, sizeof(*refs));
        }
        refs[n++] = json_string_value(json_object_get(lay, "sums"));
        json_object_foreach(json_object_get(lay, "entries"), name, e)
            refs[n++] = json_string_value(json_object_get(e, "digest"));
    }
    json_t *state = json_pack("{s:O}", "layers", cc->layers);
    rc = qp_layer_ckpt_save(cc->ck, l, state, acts, S, w, refs, n);
    json_decref(state);
    free(refs);
    return rc;
}

/* Takes a checkpoint of `layer` only when every layer's sums and entries in
 * it are sound; nothing changes otherwise. */
static int load(void *ud, int layer, const json_t *state)
{
    qp_calib_ckpt *cc = ud;
    const json_t *layers = json_object_get(state, "layers");
    size_t nl = (size_t)layer + 1, nb = sums_bytes(cc->hp);
    if (!json_is_array(layers) || json_array_size(layers) != nl)
        return qp_error_set(QP_EFORMAT, "its state does not list %zu layers", nl);
    unsigned char **sums = qp_xcalloc(nl, sizeof(*sums));
    int rc = 0;
    for (size_t i = 0; i < nl && rc == 0; i++) {
        const json_t *lay = json_array_get(layers, i), *entries = json_object_get(lay, "entries");
        const char *d = json_string_value(json_object_get(lay, "sums"));
        size_t len = 0;
        if (!d || !qp_is_hex_digest(d) || !json_is_object(entries)) {
            rc = qp_error_set(QP_EFORMAT, "layer %zu's entry is malformed", i);
            break;
        }
        const char *name;
        json_t *e;
        json_object_foreach((json_t *)entries, name, e) {
            const char *ed = json_string_value(json_object_get(e, "digest"));
            json_t *sz = json_object_get(e, "size");
            if (!ed || !qp_is_hex_digest(ed) || !json_is_integer(sz) || json_integer_value(sz) < 0 ||
                !qp_cache_has(cc->ctx->cache, ed)) {
                rc = qp_error_set(QP_EFORMAT, "layer %zu's entry %s is malformed or missing", i, name);
                break;
            }
        }
        if (rc == 0 && (rc = qp_cache_get(cc->ctx->cache, d, (void **)&sums[i], &len)) == 0 && len != nb)
            rc = qp_error_set(QP_ECORRUPT, "layer %zu's sums hold %zu bytes, not %zu", i, len, nb);
    }
    for (size_t i = 0; i < nl && rc == 0; i++) {
        const char *name;
        json_t *e;
        sums_unpack(cc->cs, (int)i, sums[i]);
        json_object_foreach(json_object_get(json_array_get(layers, i), "entries"), name, e) {
            const char *ed = json_string_value(json_object_get(e, "digest"));
            rc = qp_artifact_add(cc->ctx->output, name, ed, (uint64_t)json_integer_value(json_object_get(e, "size")),
                                 json_deep_copy(e));
            if (rc)
                break;
        }
    }
    if (rc == 0) {
        json_decref(cc->layers);
        cc->layers = json_deep_copy(layers);
    }
    for (size_t i = 0; i < nl; i++)
        free(sums[i]);
    free(sums);
    return rc;
}

int qp_calib_ckpt_resume(qp_calib_ckpt *cc, qp_act_store *acts, size_t S, size_t w, int *next)
{
    return qp_layer_ckpt_resume(cc->ck, acts, S, w, load, cc, next);
}

void qp_calib_ckpt_finish(qp_calib_ckpt *cc)
{
    qp_layer_ckpt_finish(cc->ck);
}
