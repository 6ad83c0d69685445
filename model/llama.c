#include "model/llama.h"

#include "common/alloc.h"
#include "common/error.h"
#include "common/gemm.h"
#include "model/hf_names.h"
#include "model/llama_kernels.h"
#include "model/llama_pool.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Rows per task of the row-wise passes and query rows per attention task:
 * fixed constants, so the work split never depends on the thread count. */
#define ROWS_PER_TASK 16
#define ATT_QBLOCK 64
/* Weight rows converted per task (row access sources). */
#define FETCH_ROWS 64
/* The streamed lm_head is applied in chunks of at most this many f32 bytes
 * (a multiple of QP_MM_BLOCK rows). */
#define HEAD_CHUNK_BYTES ((size_t)32 << 20)

/* The matrices of one layer, in one allocation (resident layers only). */
typedef struct {
    float *mem;
    float *wq;   /* [H·hd, D] */
    float *wk;   /* [KV·hd, D] */
    float *wv;   /* [KV·hd, D] */
    float *wo;   /* [D, H·hd] */
    float *wg;   /* [F, D] */
    float *wu;   /* [F, D] */
    float *wd;   /* [D, F] */
    float *bq;   /* [H·hd] or NULL */
    float *bk;   /* [KV·hd] or NULL */
    float *bv;   /* [KV·hd] or NULL */
} layer_w;

struct qp_llama {
    qp_llama_hparams hp;
    qp_weight_source src;
    int row_access;            /* src has open/rows/close */
    qp_pool *pool;
    size_t D, F, V, qd, kvd;   /* hidden, intermediate, vocab, H·hd, KV·hd */
    int cached;                /* all layers resident in layers[0..L-1] */
    layer_w *layers;           /* L slots when cached, else NULL */
    float *wbuf;               /* streamed: [wbuf_floats] the matrices of one product group */
    size_t wbuf_floats;
    float *bbuf;               /* streamed, qkv_bias: [H·hd + 2·KV·hd] */
    float *embed;              /* [V, D] resident, or NULL: rows fetched on demand */
    float *norms;              /* [2L + 1, D]: input_layernorm, post_attention_layernorm per layer, final */
    float *lm_head;            /* [V, D] resident (= embed when tied), or NULL: chunks fetched per use */
    float *lm_head_own;        /* owned lm_head buffer (untied, resident) */
    float *head_chunk;         /* streamed lm_head: [head_rows, D] */
    size_t head_rows;
    float *rope_cos, *rope_sin;   /* [max_pos, hd/2] */
    /* activations for cap_rows rows of windows of at most cap_n tokens */
    size_t cap_rows, cap_n;
    size_t batch_S, batch_n;   /* shape of the last forward_batch (0: none valid) */
    float *x;      /* [rows, D] residual stream */
    float *xb;     /* [rows, D] normed input of the next product */
    float *tmp;    /* [rows, D] product output before the residual add */
    float *q;      /* [rows, H·hd] */
    float *k;      /* [rows, KV·hd] */
    float *v;      /* [rows, KV·hd] */
    float *att;    /* [rows, H·hd] attention output */
    float *hg;     /* [rows, F] gate, then silu(gate)·up */
    float *hu;     /* [rows, F] up */
    float *scores; /* [threads, ATT_QBLOCK, cap_n] */
    float *logits; /* [cap_n, V] for qp_llama_nll (allocated on first use) */
    size_t logits_n;
    double *row_nll; /* [cap_n] */
};
/* ---- hyper-parameters ---- */

int qp_llama_hparams_check(const qp_llama_hparams *hp)
{
    /* Bounds keep every size product far from overflow. */
    const struct { const char *name; int v; int max; } f[] = {
        {"vocab", hp->vocab, 1 << 22}, {"hidden", hp->hidden, 1 << 16},
        {"n_layers", hp->n_layers, 1 << 10}, {"n_heads", hp->n_heads, 1 << 10},
        {"n_kv_heads", hp->n_kv_heads, 1 << 10}, {"head_dim", hp->head_dim, 1 << 12},
        {"intermediate", hp->intermediate, 1 << 18}, {"max_pos", hp->max_pos, 1 << 20},
    };
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
        if (f[i].v < 1 || f[i].v > f[i].max)
            return qp_error_set(QP_EFORMAT, "llama hparams: %s = %d is outside 1..%d", f[i].name,
                                f[i].v, f[i].max);
    if (hp->n_heads % hp->n_kv_heads != 0)
        return qp_error_set(QP_EFORMAT, "llama hparams: n_heads (%d) is not a multiple of n_kv_heads (%d)",
                            hp->n_heads, hp->n_kv_heads);
    if (hp->head_dim % 2 != 0)
        return qp_error_set(QP_EFORMAT, "llama hparams: head_dim = %d must be even for RoPE", hp->head_dim);
    if (!(hp->rms_eps > 0.0f) || !isfinite(hp->rms_eps))
        return qp_error_set(QP_EFORMAT, "llama hparams: rms_eps = %g must be positive", (double)hp->rms_eps);
    if (!(hp->rope_theta > 1.0f) || !isfinite(hp->rope_theta))
        return qp_error_set(QP_EFORMAT, "llama hparams: rope_theta = %g must be > 1", (double)hp->rope_theta);
    const qp_rope_scaling *rs = &hp->rope_scaling;
    if (rs->kind != QP_ROPE_PLAIN && rs->kind != QP_ROPE_LLAMA3)
        return qp_error_set(QP_EFORMAT, "llama hparams: unknown rope scaling kind %d", (int)rs->kind);
    if (rs->kind == QP_ROPE_LLAMA3 &&
        (!(rs->factor > 0.0) || !isfinite(rs->factor) || !(rs->low_freq_factor > 0.0) ||
         !(rs->high_freq_factor > rs->low_freq_factor) || !isfinite(rs->high_freq_factor) ||
         rs->original_max_pos < 1))
        return qp_error_set(QP_EFORMAT, "llama hparams: llama3 rope scaling needs factor > 0, 0 < low_freq_factor < "
                            "high_freq_factor and original_max_pos >= 1 (got %g, %g, %g, %d)", rs->factor,
                            rs->low_freq_factor, rs->high_freq_factor, rs->original_max_pos);
    return 0;
}

void qp_llama_hparams_from_config(qp_llama_hparams *out, const qp_llama_config *cfg)
{
    memset(out, 0, sizeof(*out));
    out->vocab = cfg->vocab;
    out->hidden = cfg->hidden;
    out->n_layers = cfg->n_layers;
    out->n_heads = cfg->n_heads;
    out->n_kv_heads = cfg->n_kv_heads;
    out->head_dim = cfg->head_dim;
    out->intermediate = cfg->intermediate;
    out->rms_eps = cfg->rms_eps;
    out->rope_theta = cfg->rope_theta;
    out->rope_scaling = cfg->rope_scaling;
    /* Within a sliding window, sliding-window attention is full causal
     * attention: longer inputs are refused rather than run wrongly. */
    out->max_pos = cfg->sliding_window > 0 && cfg->sliding_window < cfg->max_pos ? cfg->sliding_window
                                                                                  : cfg->max_pos;
    out->tied_embeddings = cfg->tied_embeddings;
    out->qkv_bias = cfg->qkv_bias;
}

uint64_t qp_llama_matmul_params(const qp_llama_hparams *hp)
{
    uint64_t D = (uint64_t)hp->hidden, F = (uint64_t)hp->intermediate;
    uint64_t qd = (uint64_t)hp->n_heads * (uint64_t)hp->head_dim;
    uint64_t kvd = (uint64_t)hp->n_kv_heads * (uint64_t)hp->head_dim;
    uint64_t layer = D * qd + 2 * D * kvd + qd * D + 3 * D * F;
    return (uint64_t)hp->n_layers * layer + (uint64_t)hp->vocab * D;
}

double qp_llama_window_flops(const qp_llama_hparams *hp, size_t n)
{
    double nn = (double)n;
    /* q·kᵀ and p·v: 2·hd FLOPs each per (head, query t, key j <= t) */
    double att = 4.0 * hp->n_heads * hp->head_dim * (nn * (nn + 1.0) / 2.0) * hp->n_layers;
    return 2.0 * (double)qp_llama_matmul_params(hp) * nn + att;
}

void qp_llama_rope_inv_freq(const qp_llama_hparams *hp, float *inv_freq)
{
    qp_kern_rope_inv_freq(inv_freq, hp->head_dim, hp->rope_theta, &hp->rope_scaling);
}

void qp_llama_rope_permute(float *dst, const float *src, int n_head, int head_dim,
                           size_t cols, int to_interleaved)
{
    qp_kern_rope_permute(dst, src, n_head, head_dim, cols, to_interleaved);
}

double qp_logits_nll(const float *row, size_t vocab, int32_t target)
{
    return qp_kern_row_nll(row, vocab, target);
}

void qp_llama_opts_init(qp_llama_opts *o)
{
    o->n_threads = 0;
    o->weight_cache_bytes = QP_LLAMA_CACHE_DEFAULT;
    o->head_chunk_bytes = 0;
    o->head_resident_bytes = QP_LLAMA_HEAD_RESIDENT;
}

/* ---- weight loading ---- */

static size_t layer_floats(const qp_llama *m)
{
    size_t n = m->qd * m->D + 2 * m->kvd * m->D + m->D * m->qd + 3 * m->F * m->D;
    if (m->hp.qkv_bias)
        n += m->qd + 2 * m->kvd;
    return n;
}

static void layer_alloc(qp_llama *m, layer_w *w)
{
    float *p = qp_xmalloc(layer_floats(m) * sizeof(float));
    w->mem = p;
    w->wq = p; p += m->qd * m->D;
    w->wk = p; p += m->kvd * m->D;
    w->wv = p; p += m->kvd * m->D;
    w->wo = p; p += m->D * m->qd;
    w->wg = p; p += m->F * m->D;
    w->wu = p; p += m->F * m->D;
    w->wd = p; p += m->D * m->F;
    w->bq = w->bk = w->bv = NULL;
    if (m->hp.qkv_bias) {
        w->bq = p; p += m->qd;
        w->bk = p; p += m->kvd;
        w->bv = p;
    }
}

/* Rows of one tensor converted by the pool's threads through the source's
 * row access: dst row i = tensor row (ids ? ids[i] : row0 + i), i < n.
 * The first error (thread-local in the worker) is carried back. */
typedef struct {
    qp_llama *m;
    void *h;
    float *dst;
    size_t cols, row0, n;
    const int32_t *ids;
    pthread_mutex_t mu;
    int rc;
    char msg[1024];
} fetch_ctx;

static void fetch_task(void *varg, size_t task, int thread)
{
    (void)thread;
    fetch_ctx *c = varg;
    size_t i0 = task * FETCH_ROWS, i1 = i0 + FETCH_ROWS < c->n ? i0 + FETCH_ROWS : c->n;
    int rc = 0;
    if (c->ids) {
        for (size_t i = i0; i < i1 && rc == 0; i++)
            rc = c->m->src.rows(c->m->src.ud, c->h, (uint64_t)c->ids[i], 1, c->dst + i * c->cols);
    } else {
        rc = c->m->src.rows(c->m->src.ud, c->h, c->row0 + i0, i1 - i0, c->dst + i0 * c->cols);
    }
    if (rc < 0) {
        pthread_mutex_lock(&c->mu);
        if (c->rc == 0) {
            c->rc = rc;
            snprintf(c->msg, sizeof(c->msg), "%s", qp_error_last());
        }
        pthread_mutex_unlock(&c->mu);
    }
}

/* Runs fetch tasks for n rows of the open handle h. */
static int fetch_rows_run(qp_llama *m, void *h, float *dst, size_t cols, size_t row0, size_t n, const int32_t *ids)
{
    fetch_ctx c = {.m = m, .h = h, .dst = dst, .cols = cols, .row0 = row0, .n = n, .ids = ids, .rc = 0};
    pthread_mutex_init(&c.mu, NULL);
    qp_pool_run(m->pool, (n + FETCH_ROWS - 1) / FETCH_ROWS, fetch_task, &c);
    pthread_mutex_destroy(&c.mu);
    return c.rc < 0 ? qp_error_set(c.rc, "%s", c.msg) : 0;
}

/* A whole tensor as f32, through row access when the source has it. */
static int fetch_plain(qp_llama *m, float *dst, const char *name, int ndim, const uint64_t *shape)
{
    if (!m->row_access)
        return m->src.get_f32(m->src.ud, name, ndim, shape, dst);
    void *h = NULL;
    int rc = m->src.open(m->src.ud, name, ndim, shape, &h);
    if (rc < 0)
        return rc;
    size_t rows = ndim == 2 ? (size_t)shape[0] : 1, cols = ndim == 2 ? (size_t)shape[1] : (size_t)shape[0];
    rc = fetch_rows_run(m, h, dst, cols, 0, rows, NULL);
    m->src.close(m->src.ud, h);
    return rc;
}

/* Fetches one tensor; q/k rows of an interleaved source are permuted back to
 * rotate-half (n_rope_heads > 0 marks such a tensor). */
static int fetch(qp_llama *m, float *dst, const char *name, int ndim, uint64_t d0, uint64_t d1,
                 int n_rope_heads)
{
    uint64_t shape[2] = {d0, d1};
    if (!(n_rope_heads > 0 && m->src.rope_interleaved))
        return fetch_plain(m, dst, name, ndim, shape);
    size_t cols = ndim == 2 ? (size_t)d1 : 1;
    float *raw = qp_xmalloc((size_t)d0 * cols * sizeof(float));
    int rc = fetch_plain(m, raw, name, ndim, shape);
    if (rc == 0)
        qp_kern_rope_permute(dst, raw, n_rope_heads, m->hp.head_dim, cols, 0);
    free(raw);
    return rc;
}

/* The product groups of a layer: a streamed model converts one group at a
 * time into its one weight buffer. */
enum { G_ALL = -1, G_QKV, G_O, G_GATE, G_UP, G_DOWN };

/* Loads layer l's weights of group `group` (G_ALL: every one) into w, or
 * only the one whose name ends in `only` (a suffix such as
 * QP_HF_DOWN_PROJ ".weight"). */
static int load_layer_some(qp_llama *m, int l, const layer_w *w, int group, const char *only)
{
    char name[160];
    const int H = m->hp.n_heads, KV = m->hp.n_kv_heads;
    const struct { const char *suffix; float *dst; size_t rows, cols; int rope_heads, group; } t[] = {
        {QP_HF_Q_PROJ ".weight", w->wq, m->qd, m->D, H, G_QKV},
        {QP_HF_K_PROJ ".weight", w->wk, m->kvd, m->D, KV, G_QKV},
        {QP_HF_V_PROJ ".weight", w->wv, m->kvd, m->D, 0, G_QKV},
        {QP_HF_O_PROJ ".weight", w->wo, m->D, m->qd, 0, G_O},
        {QP_HF_GATE_PROJ ".weight", w->wg, m->F, m->D, 0, G_GATE},
        {QP_HF_UP_PROJ ".weight", w->wu, m->F, m->D, 0, G_UP},
        {QP_HF_DOWN_PROJ ".weight", w->wd, m->D, m->F, 0, G_DOWN},
        {QP_HF_Q_PROJ ".bias", w->bq, m->qd, 0, H, G_QKV},
        {QP_HF_K_PROJ ".bias", w->bk, m->kvd, 0, KV, G_QKV},
        {QP_HF_V_PROJ ".bias", w->bv, m->kvd, 0, 0, G_QKV},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        if (!t[i].dst || (only && strcmp(only, t[i].suffix) != 0) || (group != G_ALL && group != t[i].group))
            continue;   /* no biases, not in the group, or not asked for */
        qp_hf_layer_name(name, sizeof(name), l, t[i].suffix);
        int rc = fetch(m, t[i].dst, name, t[i].cols ? 2 : 1, t[i].rows, t[i].cols, t[i].rope_heads);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Layer l's weights of one group: the resident ones, or (streamed) the
 * group converted into wbuf (pointers of other groups NULL). */
static int layer_group(qp_llama *m, size_t l, int group, layer_w *w)
{
    if (m->cached) {
        *w = m->layers[l];
        return 0;
    }
    memset(w, 0, sizeof(*w));
    switch (group) {
    case G_QKV:
        w->wq = m->wbuf;
        w->wk = w->wq + m->qd * m->D;
        w->wv = w->wk + m->kvd * m->D;
        if (m->hp.qkv_bias) {
            w->bq = m->bbuf;
            w->bk = w->bq + m->qd;
            w->bv = w->bk + m->kvd;
        }
        break;
    case G_O: w->wo = m->wbuf; break;
    case G_GATE: w->wg = m->wbuf; break;
    case G_UP: w->wu = m->wbuf; break;
    default: w->wd = m->wbuf; break;
    }
    return load_layer_some(m, (int)l, w, group, NULL);
}

/* Layer l's two RMSNorm weights (they stay resident: rows 2l and 2l+1 of
 * m->norms). */
static int load_layer_norms(qp_llama *m, int l)
{
    char name[160];
    int rc = fetch(m, m->norms + (2 * (size_t)l) * m->D,
                   qp_hf_layer_name(name, sizeof(name), l, QP_HF_ATTN_NORM ".weight"), 1, m->D, 0, 0);
    if (rc < 0)
        return rc;
    return fetch(m, m->norms + (2 * (size_t)l + 1) * m->D,
                 qp_hf_layer_name(name, sizeof(name), l, QP_HF_FFN_NORM ".weight"), 1, m->D, 0, 0);
}

static int load_lm_head(qp_llama *m)
{
    return fetch(m, m->lm_head_own, m->hp.tied_embeddings ? QP_HF_EMBED : QP_HF_LM_HEAD, 2, m->V, m->D, 0);
}

int qp_llama_new(qp_llama **out, const qp_llama_hparams *hp, const qp_weight_source *src,
                 const qp_llama_opts *opts)
{
    *out = NULL;
    int rc = qp_llama_hparams_check(hp);
    if (rc < 0)
        return rc;
    int row_access = src && src->open && src->rows && src->close;
    if (!src || !(src->get_f32 || row_access))
        return qp_error_set(QP_EUSAGE, "llama: no weight source given");
    qp_llama_opts o;
    if (opts)
        o = *opts;
    else
        qp_llama_opts_init(&o);
    if (o.n_threads < 0)
        return qp_error_set(QP_EUSAGE, "llama: n_threads = %d must be >= 0 (0: all CPUs)", o.n_threads);

    qp_llama *m = qp_xcalloc(1, sizeof(*m));
    m->hp = *hp;
    m->src = *src;
    m->row_access = row_access;
    m->D = (size_t)hp->hidden;
    m->F = (size_t)hp->intermediate;
    m->V = (size_t)hp->vocab;
    m->qd = (size_t)hp->n_heads * (size_t)hp->head_dim;
    m->kvd = (size_t)hp->n_kv_heads * (size_t)hp->head_dim;
    const size_t L = (size_t)hp->n_layers, hh = (size_t)hp->head_dim / 2;

    rc = qp_pool_new(&m->pool, o.n_threads ? o.n_threads : qp_pool_default_threads());
    if (rc < 0)
        goto fail;

    m->norms = qp_xmalloc((2 * L + 1) * m->D * sizeof(float));
    m->rope_cos = qp_xmalloc((size_t)hp->max_pos * hh * sizeof(float));
    m->rope_sin = qp_xmalloc((size_t)hp->max_pos * hh * sizeof(float));
    float *inv_freq = qp_xmalloc(hh * sizeof(float));
    qp_kern_rope_inv_freq(inv_freq, hp->head_dim, hp->rope_theta, &hp->rope_scaling);
    qp_kern_rope_tables(m->rope_cos, m->rope_sin, (size_t)hp->max_pos, hp->head_dim, inv_freq);
    free(inv_freq);

    /* Cache decision: all layers plus an untied lm_head, or nothing. */
    double cache_bytes = (double)layer_floats(m) * (double)L * sizeof(float);
    if (!hp->tied_embeddings)
        cache_bytes += (double)m->V * (double)m->D * sizeof(float);
    m->cached = cache_bytes <= (double)o.weight_cache_bytes;
    /* The embedding and lm_head stay f32 with cached layers, or when the
     * source cannot give rows; else they are read from the source per use. */
    int resident_globals = m->cached || !row_access;
    if (resident_globals) {
        m->embed = qp_xmalloc(m->V * m->D * sizeof(float));
        if ((rc = fetch(m, m->embed, QP_HF_EMBED, 2, m->V, m->D, 0)) < 0)
            goto fail;
    }
    for (size_t l = 0; l < L; l++)
        if ((rc = load_layer_norms(m, (int)l)) < 0)
            goto fail;
    if ((rc = fetch(m, m->norms + 2 * L * m->D, QP_HF_FINAL_NORM, 1, m->D, 0, 0)) < 0)
        goto fail;

    if (m->cached) {
        m->layers = qp_xcalloc(L, sizeof(layer_w));
        for (size_t l = 0; l < L; l++)
            layer_alloc(m, &m->layers[l]);
    } else {
        /* the largest product group: q+k+v, or one of gate/up/down/o */
        size_t qkv = (m->qd + 2 * m->kvd) * m->D, fd = m->F * m->D, od = m->D * m->qd;
        m->wbuf_floats = qkv > fd ? qkv : fd;
        m->wbuf_floats = od > m->wbuf_floats ? od : m->wbuf_floats;
        m->wbuf = qp_xmalloc(m->wbuf_floats * sizeof(float));
        if (hp->qkv_bias)
            m->bbuf = qp_xmalloc((m->qd + 2 * m->kvd) * sizeof(float));
    }
    double head_bytes = (double)m->V * (double)m->D * sizeof(float);
    if (hp->tied_embeddings && !m->embed && head_bytes <= (double)o.head_resident_bytes) {
        m->lm_head_own = qp_xmalloc(m->V * m->D * sizeof(float));   /* the embedding, as the head */
        m->lm_head = m->lm_head_own;
        if ((rc = load_lm_head(m)) < 0)
            goto fail;
    } else if (hp->tied_embeddings) {
        m->lm_head = m->embed;
    } else if (resident_globals || head_bytes <= (double)o.head_resident_bytes) {
        m->lm_head_own = qp_xmalloc(m->V * m->D * sizeof(float));
        m->lm_head = m->lm_head_own;
        if ((rc = load_lm_head(m)) < 0)
            goto fail;
    }
    if (!m->lm_head) {
        size_t r = (o.head_chunk_bytes ? o.head_chunk_bytes : HEAD_CHUNK_BYTES) / (m->D * sizeof(float)) /
                   QP_MM_BLOCK * QP_MM_BLOCK;
        r = r < QP_MM_BLOCK ? QP_MM_BLOCK : r;
        m->head_rows = r < m->V ? r : m->V;
        m->head_chunk = qp_xmalloc(m->head_rows * m->D * sizeof(float));
    }
    if (m->cached)
        for (size_t l = 0; l < L; l++)
            if ((rc = load_layer_some(m, (int)l, &m->layers[l], G_ALL, NULL)) < 0)
                goto fail;
    *out = m;
    return 0;
fail:
    qp_llama_free(m);
    return rc;
}

static void free_activations(qp_llama *m)
{
    float **bufs[] = {&m->x, &m->xb, &m->tmp, &m->q, &m->k, &m->v, &m->att, &m->hg, &m->hu, &m->scores};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) {
        free(*bufs[i]);
        *bufs[i] = NULL;
    }
    free(m->row_nll);
    m->row_nll = NULL;
    m->cap_rows = m->cap_n = 0;
    m->batch_S = 0;
}

void qp_llama_free(qp_llama *m)
{
    if (!m)
        return;
    if (m->layers)
        for (size_t l = 0; l < (size_t)m->hp.n_layers; l++)
            free(m->layers[l].mem);
    free(m->layers);
    free(m->wbuf);
    free(m->bbuf);
    free(m->embed);
    free(m->norms);
    free(m->lm_head_own);
    free(m->head_chunk);
    free(m->rope_cos);
    free(m->rope_sin);
    free_activations(m);
    free(m->logits);
    qp_pool_free(m->pool);
    free(m);
}

const qp_llama_hparams *qp_llama_get_hparams(const qp_llama *m) { return &m->hp; }
int qp_llama_threads(const qp_llama *m) { return qp_pool_threads(m->pool); }
int qp_llama_weights_cached(const qp_llama *m) { return m->cached; }

void qp_llama_run_tasks(qp_llama *m, size_t n_tasks, void (*fn)(void *arg, size_t task, int thread), void *arg)
{
    qp_pool_run(m->pool, n_tasks, fn, arg);
}

/* Floats per activation row, and the per-thread attention scores. */
static size_t row_floats_hp(const qp_llama_hparams *hp)
{
    size_t D = (size_t)hp->hidden, F = (size_t)hp->intermediate, qd = (size_t)hp->n_heads * (size_t)hp->head_dim;
    size_t kvd = (size_t)hp->n_kv_heads * (size_t)hp->head_dim;
    return 3 * D + 2 * qd + 2 * kvd + 2 * F;
}

double qp_llama_batch_bytes_hp(const qp_llama_hparams *hp, int threads, size_t S, size_t n)
{
    size_t rows = S * n, D = (size_t)hp->hidden, F = (size_t)hp->intermediate;
    size_t qd = (size_t)hp->n_heads * (size_t)hp->head_dim, in = F > D ? F : D;
    in = qd > in ? qd : in;
    double f = (double)rows * (double)row_floats_hp(hp) + (double)threads * ATT_QBLOCK * (double)n +
               (double)qp_sgemm_packed_size(qp_gemm_path_active(), rows, in);   /* the pool's packed X */
    return f * sizeof(float) + (double)n * sizeof(double);
}

double qp_llama_batch_bytes(const qp_llama *m, size_t S, size_t n)
{
    return qp_llama_batch_bytes_hp(&m->hp, qp_pool_threads(m->pool), S, n);
}

/* Grows the activation buffers to `rows` rows of windows of up to n tokens
 * (only ever grows). */
static void ensure_capacity(qp_llama *m, size_t rows, size_t n)
{
    if (rows <= m->cap_rows && n <= m->cap_n)
        return;
    rows = rows > m->cap_rows ? rows : m->cap_rows;
    n = n > m->cap_n ? n : m->cap_n;
    free_activations(m);
    size_t T = (size_t)qp_pool_threads(m->pool);
    m->x = qp_xmalloc(rows * m->D * sizeof(float));
    m->xb = qp_xmalloc(rows * m->D * sizeof(float));
    m->tmp = qp_xmalloc(rows * m->D * sizeof(float));
    m->q = qp_xmalloc(rows * m->qd * sizeof(float));
    m->k = qp_xmalloc(rows * m->kvd * sizeof(float));
    m->v = qp_xmalloc(rows * m->kvd * sizeof(float));
    m->att = qp_xmalloc(rows * m->qd * sizeof(float));
    m->hg = qp_xmalloc(rows * m->F * sizeof(float));
    m->hu = qp_xmalloc(rows * m->F * sizeof(float));
    m->scores = qp_xmalloc(T * ATT_QBLOCK * n * sizeof(float));
    m->row_nll = qp_xmalloc(n * sizeof(double));
    m->cap_rows = rows;
    m->cap_n = n;
}

/* ---- forward pass ---- */

typedef struct {
    qp_llama *m;
    size_t n;
    const float *add;    /* [n, D] added into x first, or NULL */
    const float *norm;   /* [D] weight of the rmsnorm x -> xb */
} resnorm_ctx;

/* x += add; xb = rmsnorm(x)·norm, for ROWS_PER_TASK rows. */
static void resnorm_task(void *varg, size_t task, int thread)
{
    (void)thread;
    const resnorm_ctx *c = varg;
    qp_llama *m = c->m;
    size_t r0 = task * ROWS_PER_TASK, r1 = r0 + ROWS_PER_TASK < c->n ? r0 + ROWS_PER_TASK : c->n;
    for (size_t r = r0; r < r1; r++) {
        float *x = m->x + r * m->D;
        if (c->add) {
            const float *a = c->add + r * m->D;
            for (size_t i = 0; i < m->D; i++)
                x[i] += a[i];
        }
        qp_kern_rmsnorm(m->xb + r * m->D, x, c->norm, m->D, m->hp.rms_eps);
    }
}

static void resnorm(qp_llama *m, size_t n, const float *add, const float *norm)
{
    resnorm_ctx c = {m, n, add, norm};
    qp_pool_run(m->pool, (n + ROWS_PER_TASK - 1) / ROWS_PER_TASK, resnorm_task, &c);
}

/* A batch: rows = S·n, windows of n tokens. */
typedef struct {
    qp_llama *m;
    size_t rows, n;
} rows_ctx;

/* RoPE on q [rows, H·hd] and k [rows, KV·hd], position = row index within its window. */
static void rope_task(void *varg, size_t task, int thread)
{
    (void)thread;
    const rows_ctx *c = varg;
    qp_llama *m = c->m;
    size_t r0 = task * ROWS_PER_TASK, r1 = r0 + ROWS_PER_TASK < c->rows ? r0 + ROWS_PER_TASK : c->rows;
    for (size_t r = r0; r < r1; r++) {
        size_t pos = r % c->n;
        qp_kern_rope_half(m->q + r * m->qd, m->hp.n_heads, m->hp.head_dim, pos, m->rope_cos, m->rope_sin);
        qp_kern_rope_half(m->k + r * m->kvd, m->hp.n_kv_heads, m->hp.head_dim, pos, m->rope_cos,
                          m->rope_sin);
    }
}

/* One (window s, query head h, block of ATT_QBLOCK query rows): causal
 * attention within the window (rows s·n .. s·n+n−1).
 *   S [rows, r1] = Q_h[r0:r1] · K_g[0:r1]ᵀ / √hd,   g = h / (H/KV)
 *   P = causal softmax(S) (zeros right of the diagonal)
 *   att_h[r0:r1] [rows, hd] = P · V_g[0:r1] */
static void attn_task(void *varg, size_t task, int thread)
{
    const rows_ctx *c = varg;
    qp_llama *m = c->m;
    size_t n = c->n, nblk = (n + ATT_QBLOCK - 1) / ATT_QBLOCK, H = (size_t)m->hp.n_heads;
    size_t s = task / (H * nblk), rem = task % (H * nblk);
    size_t h = rem / nblk, b = rem % nblk;
    size_t r0 = b * ATT_QBLOCK, r1 = r0 + ATT_QBLOCK < n ? r0 + ATT_QBLOCK : n;
    size_t rows = r1 - r0, hd = (size_t)m->hp.head_dim;
    size_t g = h / (size_t)(m->hp.n_heads / m->hp.n_kv_heads), base = s * n;
    float *S = m->scores + (size_t)thread * ATT_QBLOCK * m->cap_n;
    float scale = (float)(1.0 / sqrt((double)hd));
    qp_sgemm(QP_NOTRANS, QP_TRANS, rows, r1, hd, scale, m->q + (base + r0) * m->qd + h * hd, m->qd,
             m->k + base * m->kvd + g * hd, m->kvd, 0.0f, S, r1);
    for (size_t i = 0; i < rows; i++)
        qp_kern_softmax_causal(S + i * r1, r0 + i + 1, r1);
    qp_sgemm(QP_NOTRANS, QP_NOTRANS, rows, hd, r1, 1.0f, S, r1, m->v + base * m->kvd + g * hd, m->kvd, 0.0f,
             m->att + (base + r0) * m->qd + h * hd, m->qd);
}

/* hg = silu(hg)·hu over ROWS_PER_TASK rows. */
static void swiglu_task(void *varg, size_t task, int thread)
{
    (void)thread;
    const rows_ctx *c = varg;
    qp_llama *m = c->m;
    size_t r0 = task * ROWS_PER_TASK, r1 = r0 + ROWS_PER_TASK < c->rows ? r0 + ROWS_PER_TASK : c->rows;
    for (size_t r = r0; r < r1; r++)
        qp_kern_swiglu(m->hg + r * m->F, m->hu + r * m->F, m->F);
}

static int check_tokens(const qp_llama *m, const int32_t *tokens, size_t n)
{
    if (n < 1 || n > (size_t)m->hp.max_pos)
        return qp_error_set(QP_EUSAGE, "llama forward: window of %zu tokens, must be 1..%d (max_pos)", n,
                            m->hp.max_pos);
    for (size_t t = 0; t < n; t++)
        if (tokens[t] < 0 || tokens[t] >= m->hp.vocab)
            return qp_error_set(QP_EUSAGE,
                                "llama forward: token %ld at position %zu is outside the vocabulary [0, %d)",
                                (long)tokens[t], t, m->hp.vocab);
    return 0;
}

/* x[0:n] += add[0:n] (rows of D), in fixed row blocks. */
typedef struct {
    qp_llama *m;
    size_t n;
    const float *add;
} add_ctx;

static void add_task(void *varg, size_t task, int thread)
{
    (void)thread;
    const add_ctx *c = varg;
    size_t D = c->m->D, r0 = task * ROWS_PER_TASK, r1 = r0 + ROWS_PER_TASK < c->n ? r0 + ROWS_PER_TASK : c->n;
    for (size_t i = r0 * D; i < r1 * D; i++)
        c->m->x[i] += c->add[i];
}

/* x [n, D] = embedding rows of tokens[n] (checked). */
static int embed_rows(qp_llama *m, const int32_t *tokens, size_t n, float *x)
{
    if (m->embed) {
        for (size_t t = 0; t < n; t++)
            memcpy(x + t * m->D, m->embed + (size_t)tokens[t] * m->D, m->D * sizeof(float));
        return 0;
    }
    uint64_t shape[2] = {m->V, m->D};
    void *h = NULL;
    int rc = m->src.open(m->src.ud, QP_HF_EMBED, 2, shape, &h);
    if (rc < 0)
        return rc;
    rc = fetch_rows_run(m, h, x, m->D, 0, n, tokens);
    m->src.close(m->src.ud, h);
    return rc;
}

/* One decoder layer on the residual stream m->x [S·n, D] (S windows of n
 * tokens, positions 0..n-1 each):
 *   xb = rmsnorm(x)·attn_norm;  q,k,v = xb·Wqᵀ,…;  rope;  att = attention
 *   x += att·Woᵀ;  xb = rmsnorm(x)·ffn_norm;  hg = silu(xb·Wgᵀ)·(xb·Wuᵀ)
 *   x += hg·Wdᵀ
 * obs (may be NULL) sees the input of every linear product. */
/* stop: -1 runs the whole layer; a site stops it right after that site's
 * observation (m->x is then not the layer's output). */
static int layer_core(qp_llama *m, size_t l, size_t S, size_t n, qp_llama_observe_fn obs, void *ud, int stop)
{
    const size_t D = m->D, rows = S * n, row_tasks = (rows + ROWS_PER_TASK - 1) / ROWS_PER_TASK;
    int rc;
    layer_w w;
    rows_ctx rc_rows = {m, rows, n};
    resnorm(m, rows, NULL, m->norms + (2 * l) * D);
    if (obs)
        obs(ud, (int)l, QP_SITE_QKV, m->xb, rows, D);
    if (stop == QP_SITE_QKV)
        return 0;
    if ((rc = layer_group(m, l, G_QKV, &w)) < 0)
        return rc;
    qp_mm_job qkv[3] = {
        {m->q, m->qd, w.wq, w.bq, m->qd},
        {m->k, m->kvd, w.wk, w.bk, m->kvd},
        {m->v, m->kvd, w.wv, w.bv, m->kvd},
    };
    qp_mm_batch(m->pool, m->xb, D, rows, D, qkv, 3);
    qp_pool_run(m->pool, row_tasks, rope_task, &rc_rows);
    size_t nblk = (n + ATT_QBLOCK - 1) / ATT_QBLOCK;
    qp_pool_run(m->pool, S * (size_t)m->hp.n_heads * nblk, attn_task, &rc_rows);
    if (obs)
        obs(ud, (int)l, QP_SITE_O, m->att, rows, m->qd);
    if (stop == QP_SITE_O)
        return 0;
    if ((rc = layer_group(m, l, G_O, &w)) < 0)
        return rc;
    qp_mm_job o = {m->tmp, D, w.wo, NULL, D};
    qp_mm_batch(m->pool, m->att, m->qd, rows, m->qd, &o, 1);
    resnorm(m, rows, m->tmp, m->norms + (2 * l + 1) * D);
    if (obs)
        obs(ud, (int)l, QP_SITE_GATE_UP, m->xb, rows, D);
    if (stop == QP_SITE_GATE_UP)
        return 0;
    if (m->cached) {
        w = m->layers[l];
        qp_mm_job gu[2] = {{m->hg, m->F, w.wg, NULL, m->F}, {m->hu, m->F, w.wu, NULL, m->F}};
        qp_mm_batch(m->pool, m->xb, D, rows, D, gu, 2);
    } else {
        if ((rc = layer_group(m, l, G_GATE, &w)) < 0)
            return rc;
        qp_mm_job g = {m->hg, m->F, w.wg, NULL, m->F};
        qp_mm_batch(m->pool, m->xb, D, rows, D, &g, 1);
        if ((rc = layer_group(m, l, G_UP, &w)) < 0)
            return rc;
        qp_mm_job u = {m->hu, m->F, w.wu, NULL, m->F};
        qp_mm_batch(m->pool, m->xb, D, rows, D, &u, 1);
    }
    qp_pool_run(m->pool, row_tasks, swiglu_task, &rc_rows);
    if (obs)
        obs(ud, (int)l, QP_SITE_DOWN, m->hg, rows, m->F);
    if (stop == QP_SITE_DOWN)
        return 0;
    if ((rc = layer_group(m, l, G_DOWN, &w)) < 0)
        return rc;
    qp_mm_job down = {m->tmp, D, w.wd, NULL, D};
    qp_mm_batch(m->pool, m->hg, m->F, rows, m->F, &down, 1);
    add_ctx ac = {m, rows, m->tmp};
    qp_pool_run(m->pool, row_tasks, add_task, &ac);
    return 0;
}

/* logits [n, V] = xb [n, D] · lm_headᵀ, from the resident lm_head or in
 * chunks of head_rows rows converted from the source. */
static int head_apply(qp_llama *m, const float *xb, size_t n, float *logits)
{
    if (m->lm_head) {
        qp_mm_job head = {logits, m->V, m->lm_head, NULL, m->V};
        qp_mm_batch(m->pool, xb, m->D, n, m->D, &head, 1);
        return 0;
    }
    uint64_t shape[2] = {m->V, m->D};
    void *h = NULL;
    int rc = m->src.open(m->src.ud, m->hp.tied_embeddings ? QP_HF_EMBED : QP_HF_LM_HEAD, 2, shape, &h);
    if (rc < 0)
        return rc;
    for (size_t v0 = 0; v0 < m->V && rc == 0; v0 += m->head_rows) {
        size_t c = m->V - v0 < m->head_rows ? m->V - v0 : m->head_rows;
        if ((rc = fetch_rows_run(m, h, m->head_chunk, m->D, v0, c, NULL)) < 0)
            break;
        /* logits[:, v0:v0+c] = xb · chunkᵀ: each element the same chain as whole */
        qp_mm_job head = {logits + v0, m->V, m->head_chunk, NULL, c};
        qp_mm_batch(m->pool, xb, m->D, n, m->D, &head, 1);
    }
    m->src.close(m->src.ud, h);
    return rc;
}

/* logits [n, V] = rmsnorm(x)·final_norm · lm_headᵀ */
static int head_core(qp_llama *m, size_t n, float *logits)
{
    resnorm(m, n, NULL, m->norms + 2 * (size_t)m->hp.n_layers * m->D);
    return head_apply(m, m->xb, n, logits);
}

static int prepare(qp_llama *m, size_t S, size_t n)
{
    if (n < 1 || n > (size_t)m->hp.max_pos)
        return qp_error_set(QP_EUSAGE, "llama forward: window of %zu tokens, must be 1..%d (max_pos)", n,
                            m->hp.max_pos);
    if (S < 1 || S > ((size_t)1 << 24) / n)
        return qp_error_set(QP_EUSAGE, "llama forward: a batch of %zu windows of %zu tokens is outside 1..%zu "
                            "windows", S, n, ((size_t)1 << 24) / n);
    ensure_capacity(m, S * n, n);
    m->batch_S = 0;   /* whatever runs now overwrites the last batch */
    return 0;
}

int qp_llama_forward_observed(qp_llama *m, const int32_t *tokens, size_t n, float *logits,
                              qp_llama_observe_fn obs, void *ud)
{
    int rc = check_tokens(m, tokens, n);
    if (rc < 0 || (rc = prepare(m, 1, n)) < 0)
        return rc;
    const size_t L = (size_t)m->hp.n_layers;
    if ((rc = embed_rows(m, tokens, n, m->x)) < 0)
        return rc;
    for (size_t l = 0; l < L; l++)
        if ((rc = layer_core(m, l, 1, n, obs, ud, -1)) < 0)
            return rc;
    return logits ? head_core(m, n, logits) : 0;
}

int qp_llama_forward(qp_llama *m, const int32_t *tokens, size_t n, float *logits)
{
    return qp_llama_forward_observed(m, tokens, n, logits, NULL, NULL);
}

int qp_llama_forward_batch(qp_llama *m, const int32_t *tokens, size_t S, size_t n)
{
    int rc = prepare(m, S, n);
    if (rc < 0)
        return rc;
    for (size_t s = 0; s < S; s++)
        if ((rc = check_tokens(m, tokens + s * n, n)) < 0) {
            qp_error_prefix("window %zu of the batch", s);
            return rc;
        }
    if ((rc = embed_rows(m, tokens, S * n, m->x)) < 0)
        return rc;
    for (size_t l = 0; l < (size_t)m->hp.n_layers; l++)
        if ((rc = layer_core(m, l, S, n, NULL, NULL, -1)) < 0)
            return rc;
    resnorm(m, S * n, NULL, m->norms + 2 * (size_t)m->hp.n_layers * m->D);
    m->batch_S = S;
    m->batch_n = n;
    return 0;
}

int qp_llama_batch_logits(qp_llama *m, size_t s, float *logits)
{
    return qp_llama_batch_logits_from(m, s, 0, logits);
}

int qp_llama_batch_logits_from(qp_llama *m, size_t s, size_t row0, float *logits)
{
    if (s >= m->batch_S)
        return qp_error_set(QP_EUSAGE, "llama: window %zu of a batch of %zu (run qp_llama_forward_batch first)", s,
                            m->batch_S);
    if (row0 >= m->batch_n)
        return 0;
    /* each logit is its own dot product in a fixed order: the rows computed
     * are the bits a full head would give them */
    return head_apply(m, m->xb + (s * m->batch_n + row0) * m->D, m->batch_n - row0, logits + row0 * m->V);
}

int qp_llama_embed(qp_llama *m, const int32_t *tokens, size_t n, float *x)
{
    int rc = check_tokens(m, tokens, n);
    if (rc < 0)
        return rc;
    return embed_rows(m, tokens, n, x);
}

int qp_llama_layer(qp_llama *m, int l, float *x, size_t n, qp_llama_observe_fn obs, void *ud)
{
    if (l < 0 || l >= m->hp.n_layers)
        return qp_error_set(QP_EUSAGE, "llama: layer %d out of range [0, %d)", l, m->hp.n_layers);
    int rc = prepare(m, 1, n);
    if (rc < 0)
        return rc;
    memcpy(m->x, x, n * m->D * sizeof(float));
    if ((rc = layer_core(m, (size_t)l, 1, n, obs, ud, -1)) < 0)
        return rc;
    memcpy(x, m->x, n * m->D * sizeof(float));
    return 0;
}

int qp_llama_layer_observe(qp_llama *m, int l, const float *x, size_t n, qp_llama_site last,
                           qp_llama_observe_fn obs, void *ud)
{
    if (l < 0 || l >= m->hp.n_layers)
        return qp_error_set(QP_EUSAGE, "llama: layer %d out of range [0, %d)", l, m->hp.n_layers);
    if ((int)last < QP_SITE_QKV || (int)last > QP_SITE_DOWN)
        return qp_error_set(QP_EUSAGE, "llama: site %d out of range", (int)last);
    int rc = prepare(m, 1, n);
    if (rc < 0)
        return rc;
    memcpy(m->x, x, n * m->D * sizeof(float));
    rc = layer_core(m, (size_t)l, 1, n, obs, ud, (int)last);
    return rc < 0 ? rc : 0;
}

int qp_llama_head(qp_llama *m, const float *x, size_t n, float *logits)
{
    int rc = prepare(m, 1, n);
    if (rc < 0)
        return rc;
    memcpy(m->x, x, n * m->D * sizeof(float));
    return head_core(m, n, logits);
}

int qp_llama_reload_layer(qp_llama *m, int l)
{
    if (l < 0 || l >= m->hp.n_layers)
        return qp_error_set(QP_EUSAGE, "llama: layer %d out of range [0, %d)", l, m->hp.n_layers);
    /* the layer's norms too: AWQ folds its scales into them */
    int rc = load_layer_norms(m, l);
    if (rc < 0)
        return rc;
    /* streamed models re-read every layer on use anyway */
    return m->cached ? load_layer_some(m, l, &m->layers[l], G_ALL, NULL) : 0;
}

int qp_llama_reload_weight(qp_llama *m, const char *name)
{
    const char *rest;
    const int l = qp_hf_layer_of(name, &rest);
    if (strncmp(name, QP_HF_LAYERS, strlen(QP_HF_LAYERS)) == 0) {
        if (l < 0 || l >= m->hp.n_layers)
            return qp_error_set(QP_EUSAGE, "llama: '%s': layer out of range [0, %d)", name, m->hp.n_layers);
        if (strcmp(rest, QP_HF_ATTN_NORM ".weight") == 0 || strcmp(rest, QP_HF_FFN_NORM ".weight") == 0)
            return qp_llama_reload_layer(m, l);
        return m->cached ? load_layer_some(m, l, &m->layers[l], G_ALL, rest) : 0;
    }
    return qp_llama_reload_globals(m);
}

int qp_llama_reload_globals(qp_llama *m)
{
    /* what is not resident is read from the source on every use anyway */
    int rc = m->embed ? fetch(m, m->embed, QP_HF_EMBED, 2, m->V, m->D, 0) : 0;
    if (rc < 0)
        return rc;
    if ((rc = fetch(m, m->norms + 2 * (size_t)m->hp.n_layers * m->D, QP_HF_FINAL_NORM, 1, m->D, 0, 0)) < 0)
        return rc;
    return m->lm_head_own ? load_lm_head(m) : 0;
}

typedef struct {
    qp_llama *m;
    const int32_t *tokens;
    size_t n, first;
} nll_ctx;

/* row_nll[t] for targets t in [first, n): −log p(tokens[t]) from logits row t−1. */
static void nll_task(void *varg, size_t task, int thread)
{
    (void)thread;
    const nll_ctx *c = varg;
    size_t t0 = c->first + task * ROWS_PER_TASK;
    size_t t1 = t0 + ROWS_PER_TASK < c->n ? t0 + ROWS_PER_TASK : c->n;
    for (size_t t = t0; t < t1; t++)
        c->m->row_nll[t] = qp_kern_row_nll(c->m->logits + (t - 1) * c->m->V, c->m->V, c->tokens[t]);
}

int qp_llama_nll(qp_llama *m, const int32_t *tokens, size_t n, size_t first,
                 double *nll_sum, size_t *count)
{
    if (first < 1)
        return qp_error_set(QP_EUSAGE, "llama nll: first scored position must be >= 1 (position 0 has no context)");
    int rc = check_tokens(m, tokens, n);
    if (rc < 0)
        return rc;
    if (first >= n)
        return 0;
    if (n > m->logits_n) {
        free(m->logits);
        m->logits = qp_xmalloc(n * m->V * sizeof(float));
        m->logits_n = n;
    }
    if ((rc = qp_llama_forward(m, tokens, n, m->logits)) < 0)
        return rc;
    nll_ctx c = {m, tokens, n, first};
    qp_pool_run(m->pool, (n - first + ROWS_PER_TASK - 1) / ROWS_PER_TASK, nll_task, &c);
    /* summed in position order: the same double whatever the thread count */
    double s = 0.0;
    for (size_t t = first; t < n; t++)
        s += m->row_nll[t];
    *nll_sum += s;
    *count += n - first;
    return 0;
}
/* ---- the safetensors checkpoint source ---- */

static void shape_str(char *buf, size_t cap, int ndim, const uint64_t *shape)
{
    size_t off = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && off < cap; i++)
        off += (size_t)snprintf(buf + off, cap - off, "%s%llu", i ? ", " : "",
                                (unsigned long long)shape[i]);
    if (off < cap)
        snprintf(buf + off, cap - off, "]");
}

/* The checkpoint's tensor `name`, checked against the shape and for a float dtype. */
static int checkpoint_find(const qp_checkpoint *ck, const char *name, int ndim, const uint64_t *shape,
                           const qp_tensor_view **out)
{
    const qp_tensor_view *v = qp_checkpoint_find(ck, name);
    if (!v)
        return qp_error_set(QP_EFORMAT, "checkpoint: tensor '%s' is missing (needed by the LLaMA forward pass)",
                            name);
    int same = v->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = v->shape[i] == shape[i];
    if (!same) {
        char got[128], want[128];
        shape_str(got, sizeof(got), v->ndim, v->shape);
        shape_str(want, sizeof(want), ndim, shape);
        return qp_error_set(QP_EFORMAT, "checkpoint: tensor '%s' has shape %s, the config implies %s", name,
                            got, want);
    }
    float probe;
    if (v->nelem > 0 && qp_convert_to_f32(&probe, v->data, v->dtype, 1) < 0)
        return qp_error_set(QP_EFORMAT, "checkpoint: tensor '%s' has dtype %s, expected a float type", name,
                            qp_dtype_name(v->dtype) ? qp_dtype_name(v->dtype) : "?");
    *out = v;
    return 0;
}

static int checkpoint_get_f32(void *ud, const char *name, int ndim, const uint64_t *shape, float *dst)
{
    const qp_tensor_view *v = NULL;
    int rc = checkpoint_find(ud, name, ndim, shape, &v);
    if (rc < 0)
        return rc;
    qp_convert_to_f32(dst, v->data, v->dtype, (size_t)v->nelem);
    return 0;
}

static int checkpoint_open(void *ud, const char *name, int ndim, const uint64_t *shape, void **h)
{
    const qp_tensor_view *v = NULL;
    int rc = checkpoint_find(ud, name, ndim, shape, &v);
    *h = (void *)v;
    return rc;
}

/* rows [row0, row0 + nrows) of a 2-D tensor (a 1-D tensor is one row) */
static int checkpoint_rows(void *ud, void *h, uint64_t row0, uint64_t nrows, float *dst)
{
    (void)ud;
    const qp_tensor_view *v = h;
    uint64_t rows = v->ndim == 2 ? v->shape[0] : 1, cols = rows ? v->nelem / rows : 0;
    if (row0 > rows || nrows > rows - row0)
        return qp_error_set(QP_EUSAGE, "checkpoint: rows %llu..%llu of a tensor of %llu rows",
                            (unsigned long long)row0, (unsigned long long)(row0 + nrows), (unsigned long long)rows);
    const char *src = (const char *)v->data + (size_t)(row0 * cols) * qp_dtype_size(v->dtype);
    qp_convert_to_f32(dst, src, v->dtype, (size_t)(nrows * cols));
    return 0;
}

static void checkpoint_close(void *ud, void *h)
{
    (void)ud;
    (void)h;
}

void qp_weight_source_checkpoint(qp_weight_source *out, const qp_checkpoint *ck)
{
    memset(out, 0, sizeof(*out));
    out->ud = (void *)ck;
    out->get_f32 = checkpoint_get_f32;
    out->rope_interleaved = 0;
    out->open = checkpoint_open;
    out->rows = checkpoint_rows;
    out->close = checkpoint_close;
}
