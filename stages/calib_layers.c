/* Layer-by-layer calibration with per-layer checkpoints: see stages/calib_layers.h. */
#include "stages/calib_layers.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "stages/layer_ckpt.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    qp_stage_ctx *ctx;
    qp_calib_stats *cs;
    const qp_llama_hparams *hp;
    int hessians;
    char (*hess)[QP_HEX_LEN];   /* [L * 4] */
    char (*stats)[QP_HEX_LEN];  /* [L] each finished layer's sums (checkpoints only) */
    float *x;                   /* [S, T, D] */
    size_t S, T, D;
} calib_run;

/* A layer's sums as bytes: per site n, calls (u64), abs_sum, sq_sum
 * (dim doubles each), host byte order (the cache is this machine's). */
static size_t sums_bytes(const calib_run *r)
{
    size_t n = 0;
    for (int k = 0; k < 4; k++)
        n += 2 * sizeof(uint64_t) + 2 * qp_site_dim(r->hp, (qp_llama_site)k) * sizeof(double);
    return n;
}

static void sums_pack(const calib_run *r, int l, unsigned char *p)
{
    for (int k = 0; k < 4; k++) {
        const qp_site_stats *st = &r->cs->sites[l * 4 + k];
        memcpy(p, &st->n, sizeof(uint64_t));
        memcpy(p + 8, &st->calls, sizeof(uint64_t));
        p += 16;
        memcpy(p, st->abs_sum, st->dim * sizeof(double));
        p += st->dim * sizeof(double);
        memcpy(p, st->sq_sum, st->dim * sizeof(double));
        p += st->dim * sizeof(double);
    }
}

/* Layer l is done: its Hessians to the cache (then their accumulators go)
 * and its sums as one object for the checkpoint. */
static int finish_layer(calib_run *r, int l)
{
    int rc = 0;
    for (int k = 0; k < 4 && rc == 0 && r->hessians; k++) {
        qp_site_stats *st = &r->cs->sites[l * 4 + k];
        size_t d = st->dim;
        double *h = qp_site_hessian(st);
        if (!h)
            return qp_error_set(QP_ERROR, "internal: %s has no Hessian accumulated", qp_site_name((qp_llama_site)k));
        float *v = qp_xmalloc(d * d * sizeof(float));
        for (size_t i = 0; i < d * d; i++)
            v[i] = (float)h[i];
        free(h);
        rc = qp_cache_put(r->ctx->cache, v, d * d * sizeof(float), r->hess[l * 4 + k]);
        free(v);
        free(st->xxt);
        free(st->scratch);
        st->xxt = NULL;
        st->scratch = NULL;
    }
    if (rc == 0) {
        size_t n = sums_bytes(r);
        unsigned char *b = qp_xmalloc(n);
        sums_pack(r, l, b);
        rc = qp_cache_put(r->ctx->cache, b, n, r->stats[l]);
        free(b);
    }
    return rc;
}

/* {"layers": [{"sums": digest, "hessians": [4 digests]}…]} up to layer l. */
static int save(calib_run *r, qp_layer_ckpt *ck, int l)
{
    json_t *layers = json_array();
    const char **refs = qp_xcalloc((size_t)(l + 1) * 5, sizeof(*refs));
    size_t n = 0;
    for (int i = 0; i <= l; i++) {
        json_t *e = json_pack("{s:s}", "sums", r->stats[i]);
        refs[n++] = r->stats[i];
        if (r->hessians) {
            json_t *h = json_array();
            for (int k = 0; k < 4; k++) {
                json_array_append_new(h, json_string(r->hess[i * 4 + k]));
                refs[n++] = r->hess[i * 4 + k];
            }
            json_object_set_new(e, "hessians", h);
        }
        json_array_append_new(layers, e);
    }
    json_t *state = json_pack("{s:o}", "layers", layers);
    int rc = qp_layer_ckpt_save(ck, l, state, r->x, r->S * r->T * r->D * sizeof(float), refs, n);
    json_decref(state);
    free(refs);
    return rc;
}

/* Takes a checkpoint of `layer` only when every layer's sums and Hessian
 * digests in it are sound; nothing changes otherwise. */
static int load(void *ud, int layer, const json_t *state, void **x)
{
    calib_run *r = ud;
    const json_t *layers = json_object_get(state, "layers");
    size_t nl = (size_t)layer + 1, nb = sums_bytes(r);
    if (!json_is_array(layers) || json_array_size(layers) != nl)
        return qp_error_set(QP_EFORMAT, "its state does not list %zu layers", nl);
    unsigned char **sums = qp_xcalloc(nl, sizeof(*sums));
    int rc = 0;
    for (size_t i = 0; i < nl && rc == 0; i++) {
        const json_t *e = json_array_get(layers, i), *h = json_object_get(e, "hessians");
        const char *d = json_string_value(json_object_get(e, "sums"));
        size_t len = 0;
        if (!d || !qp_is_hex_digest(d) || (r->hessians && (!json_is_array(h) || json_array_size(h) != 4))) {
            rc = qp_error_set(QP_EFORMAT, "layer %zu's entry is malformed", i);
            break;
        }
        for (size_t k = 0; r->hessians && k < 4 && rc == 0; k++) {
            const char *hd = json_string_value(json_array_get(h, k));
            if (!hd || !qp_is_hex_digest(hd) || !qp_cache_has(r->ctx->cache, hd))
                rc = qp_error_set(QP_EFORMAT, "layer %zu's Hessian %zu is missing", i, k);
        }
        if (rc == 0 && (rc = qp_cache_get(r->ctx->cache, d, (void **)&sums[i], &len)) == 0 && len != nb)
            rc = qp_error_set(QP_ECORRUPT, "layer %zu's sums hold %zu bytes, not %zu", i, len, nb);
    }
    for (size_t i = 0; i < nl && rc == 0; i++) {
        const json_t *h = json_object_get(json_array_get(layers, i), "hessians");
        const unsigned char *p = sums[i];
        for (int k = 0; k < 4; k++) {
            qp_site_stats *st = &r->cs->sites[i * 4 + (size_t)k];
            qp_site_stats_init(st, qp_site_dim(r->hp, (qp_llama_site)k), 0);
            memcpy(&st->n, p, sizeof(uint64_t));
            memcpy(&st->calls, p + 8, sizeof(uint64_t));
            p += 16;
            memcpy(st->abs_sum, p, st->dim * sizeof(double));
            p += st->dim * sizeof(double);
            memcpy(st->sq_sum, p, st->dim * sizeof(double));
            p += st->dim * sizeof(double);
            if (r->hessians)
                memcpy(r->hess[i * 4 + (size_t)k], json_string_value(json_array_get(h, (size_t)k)), QP_HEX_LEN);
        }
        memcpy(r->stats[i], json_string_value(json_object_get(json_array_get(layers, i), "sums")), QP_HEX_LEN);
    }
    if (rc == 0) {
        free(r->x);
        r->x = *x;
        *x = NULL;
    }
    for (size_t i = 0; i < nl; i++)
        free(sums[i]);
    free(sums);
    return rc;
}

int qp_calib_collect_layers(qp_stage_ctx *ctx, qp_llama *m, const int32_t *windows, size_t S, size_t T,
                            int hessians, qp_calib_stats *cs, char (**hess)[QP_HEX_LEN])
{
    const qp_llama_hparams *hp = qp_llama_get_hparams(m);
    const int L = hp->n_layers;
    calib_run r = {.ctx = ctx, .cs = cs, .hp = hp, .hessians = hessians, .S = S, .T = T, .D = (size_t)hp->hidden};
    memset(cs, 0, sizeof(*cs));
    cs->n_layers = L;
    cs->want_hessian = hessians;
    cs->sites = qp_xcalloc((size_t)L * 4, sizeof(*cs->sites));
    r.hess = hessians ? qp_xcalloc((size_t)L * 4, sizeof(*r.hess)) : NULL;
    r.stats = qp_xcalloc((size_t)L, sizeof(*r.stats));
    r.x = qp_xmalloc(S * T * r.D * sizeof(float));
    qp_layer_ckpt *ck = qp_layer_ckpt_new(ctx, "calibrate", L);
    int rc = 0, start = 0;
    for (size_t s = 0; s < S && rc == 0; s++)
        rc = qp_llama_embed(m, windows + s * T, T, r.x + s * T * r.D);
    if (rc == 0)
        rc = qp_layer_ckpt_resume(ck, S * T * r.D * sizeof(float), load, &r, &start);
    for (int l = start; l < L && rc == 0; l++) {
        for (int k = 0; k < 4; k++)
            qp_site_stats_init(&cs->sites[l * 4 + k], qp_site_dim(hp, (qp_llama_site)k), hessians);
        for (size_t s = 0; s < S && rc == 0; s++)
            rc = qp_llama_layer(m, l, r.x + s * T * r.D, T, qp_calib_stats_observe, cs);
        if (rc == 0 && (rc = finish_layer(&r, l)) == 0)
            rc = save(&r, ck, l);
        qp_progress_update(ctx->progress, (uint64_t)(l + 1), (uint64_t)L, "layers");
    }
    if (rc == 0)
        qp_layer_ckpt_finish(ck);
    qp_layer_ckpt_free(ck);
    free(r.x);
    free(r.stats);
    if (rc == 0 && hess)
        *hess = r.hess;
    else
        free(r.hess);
    return rc;
}
