/* LLaMA forward pass tests: the house model against PyTorch's reference
 * logits, bit-identical logits for 1/2/3 threads and cached vs streamed
 * weights, GGUF's interleaved RoPE layout vs HF's rotate-half, tiny random
 * models (tied head, q/k/v bias, GQA/MQA, block edges) against a naive
 * double-precision implementation written here, the NLL helpers, and the
 * error messages. */
#include "tests/support/testutil.h"
#include "common/gemm.h"

#include "common/error.h"
#include "common/fsutil.h"
#include "model/config.h"
#include "model/llama.h"
#include "model/llama_kernels.h"
#include "model/llama_pool.h"
#include "model/safetensors.h"
#include "model/tokenizer.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- the house model ---- */

static qp_checkpoint *house_ck;
static qp_llama_hparams house_hp;
static qp_safetensors *ref_st;
static const int32_t *ref_tokens;   /* [256] */
static const float *ref_logits;     /* [256, 1024] */
static size_t ref_n;

/* Hyper-parameters from config.json through model/config.h. */
static int house_hparams(qp_llama_hparams *hp)
{
    char *path = qp_test_shared_path("models/house-llama/config.json");
    qp_llama_config cfg;
    int rc = qp_llama_config_load(&cfg, path);
    free(path);
    if (rc == 0)
        qp_llama_hparams_from_config(hp, &cfg);
    return rc;
}

static int setup_house(void **state)
{
    (void)state;
    char *dir = qp_test_shared_path("models/house-llama");
    char *refp = qp_test_shared_path("models/house-llama/reference/logits.safetensors");
    int rc = qp_checkpoint_open(&house_ck, dir);
    if (rc == 0)
        rc = qp_safetensors_open(&ref_st, refp);
    if (rc == 0)
        rc = house_hparams(&house_hp);
    free(dir);
    free(refp);
    if (rc != 0) {
        fprintf(stderr, "setup: %s\n", qp_error_last());
        return -1;
    }
    const qp_tensor_view *t = qp_safetensors_find(ref_st, "tokens");
    const qp_tensor_view *l = qp_safetensors_find(ref_st, "logits");
    if (!t || !l || t->dtype != QP_DT_I32 || l->dtype != QP_DT_F32 || l->shape[0] != t->nelem ||
        l->shape[1] != (uint64_t)house_hp.vocab)
        return -1;
    ref_tokens = t->data;
    ref_logits = l->data;
    ref_n = (size_t)t->nelem;
    return 0;
}

static int teardown_house(void **state)
{
    (void)state;
    qp_checkpoint_free(house_ck);
    qp_safetensors_free(ref_st);
    house_ck = NULL;
    ref_st = NULL;
    return 0;
}

static size_t house_head_chunk;   /* qp_llama_opts.head_chunk_bytes of new_house */

static qp_llama *new_house(int threads, size_t cache_bytes, const qp_weight_source *src)
{
    qp_weight_source ck_src;
    qp_weight_source_checkpoint(&ck_src, house_ck);
    qp_llama_opts o;
    qp_llama_opts_init(&o);
    o.n_threads = threads;
    o.weight_cache_bytes = cache_bytes;
    o.head_chunk_bytes = house_head_chunk;
    if (cache_bytes == 0)
        o.head_resident_bytes = 0;   /* streamed: the lm_head in chunks from the source, too */
    qp_llama *m = NULL;
    int rc = qp_llama_new(&m, &house_hp, src ? src : &ck_src, &o);
    if (rc)
        fprintf(stderr, "qp_llama_new: %s\n", qp_error_last());
    assert_int_equal(rc, 0);
    return m;
}

static float *house_logits(qp_llama *m)
{
    float *lg = malloc(ref_n * (size_t)house_hp.vocab * sizeof(float));
    assert_non_null(lg);
    int rc = qp_llama_forward(m, ref_tokens, ref_n, lg);
    if (rc)
        fprintf(stderr, "forward: %s\n", qp_error_last());
    assert_int_equal(rc, 0);
    return lg;
}

static void test_reference_logits(void **state)
{
    (void)state;
    qp_llama *m = new_house(2, QP_LLAMA_CACHE_DEFAULT, NULL);
    assert_true(qp_llama_weights_cached(m));
    double t0 = qp_now();
    float *lg = house_logits(m);
    double dt = qp_now() - t0;
    size_t N = ref_n * (size_t)house_hp.vocab;
    double maxdiff = 0, maxref = 0;
    for (size_t i = 0; i < N; i++) {
        double d = fabs((double)lg[i] - (double)ref_logits[i]);
        maxdiff = d > maxdiff ? d : maxdiff;
        maxref = fabs(ref_logits[i]) > maxref ? fabs(ref_logits[i]) : maxref;
    }
    printf("house-llama reference logits: max |dlogit| = %.3g, max |logit| = %.3g, ratio = %.3g "
           "(%zu tokens in %.1f ms, gemm %s)\n",
           maxdiff, maxref, maxdiff / maxref, ref_n, dt * 1e3, qp_gemm_path_name(qp_gemm_path_active()));
    assert_true(maxref > 1.0);
    assert_true(maxdiff <= 1e-3 * maxref);
    free(lg);
    qp_llama_free(m);
}

/* 1 and 2 threads, cached and streamed weights: the same bits. */
static void test_house_deterministic(void **state)
{
    (void)state;
    qp_llama *m1 = new_house(1, QP_LLAMA_CACHE_DEFAULT, NULL);
    qp_llama *m2 = new_house(2, QP_LLAMA_CACHE_DEFAULT, NULL);
    qp_llama *ms = new_house(2, 0, NULL);
    assert_int_equal(qp_llama_threads(m1), 1);
    assert_int_equal(qp_llama_threads(m2), 2);
    assert_false(qp_llama_weights_cached(ms));
    float *a = house_logits(m1), *b = house_logits(m2), *c = house_logits(ms);
    size_t bytes = ref_n * (size_t)house_hp.vocab * sizeof(float);
    assert_memory_equal(a, b, bytes);
    assert_memory_equal(a, c, bytes);
    /* a second window through the same (streaming) model: same bits again */
    float *d = house_logits(ms);
    assert_memory_equal(a, d, bytes);
    free(a); free(b); free(c); free(d);
    qp_llama_free(m1);
    qp_llama_free(m2);
    qp_llama_free(ms);
}

/* Batches: S windows in one pass give each window the bits of that window
 * alone, whatever S, the other windows, the thread count, and cached or
 * streamed weights (embedding rows and lm_head chunks from the source). */
static void test_house_batch(void **state)
{
    (void)state;
    const size_t n = 64, S = 4, V = (size_t)house_hp.vocab;
    assert_true(ref_n >= S * n);
    qp_llama *alone = new_house(1, QP_LLAMA_CACHE_DEFAULT, NULL);
    float *want = malloc(S * n * V * sizeof(float)), *got = malloc(n * V * sizeof(float));
    assert_non_null(want);
    assert_non_null(got);
    for (size_t s = 0; s < S; s++)
        assert_int_equal(qp_llama_forward(alone, ref_tokens + s * n, n, want + s * n * V), 0);
    /* batch_logits needs a batch: none yet, and a plain forward ends one */
    assert_int_equal(qp_llama_batch_logits(alone, 0, got), QP_EUSAGE);
    /* streamed: the lm_head whole, or in chunks of 128 rows or 384 (the last one 256) */
    const struct { int threads; size_t cache, chunk; } cfg[] = {
        {1, QP_LLAMA_CACHE_DEFAULT, 0}, {2, QP_LLAMA_CACHE_DEFAULT, 0}, {1, 0, 0}, {2, 0, 0},
        {2, 0, 128 * (size_t)house_hp.hidden * sizeof(float)}, {1, 0, 400 * (size_t)house_hp.hidden * sizeof(float)}};
    int32_t *mixed = malloc(2 * n * sizeof(int32_t));
    assert_non_null(mixed);
    memcpy(mixed, ref_tokens + 3 * n, n * sizeof(int32_t));   /* windows 3, 0 */
    memcpy(mixed + n, ref_tokens, n * sizeof(int32_t));
    for (size_t c = 0; c < sizeof(cfg) / sizeof(cfg[0]); c++) {
        house_head_chunk = cfg[c].chunk;
        qp_llama *m = new_house(cfg[c].threads, cfg[c].cache, NULL);
        house_head_chunk = 0;
        assert_int_equal(qp_llama_weights_cached(m), cfg[c].cache != 0);
        assert_int_equal(qp_llama_forward_batch(m, ref_tokens, S, n), 0);
        for (size_t s = 0; s < S; s++) {
            assert_int_equal(qp_llama_batch_logits(m, s, got), 0);
            assert_memory_equal(got, want + s * n * V, n * V * sizeof(float));
        }
        assert_int_equal(qp_llama_batch_logits(m, S, got), QP_EUSAGE);
        assert_int_equal(qp_llama_forward_batch(m, mixed, 2, n), 0);
        assert_int_equal(qp_llama_batch_logits(m, 1, got), 0);
        assert_memory_equal(got, want, n * V * sizeof(float));
        assert_int_equal(qp_llama_batch_logits(m, 0, got), 0);
        assert_memory_equal(got, want + 3 * n * V, n * V * sizeof(float));
        assert_true(qp_llama_batch_bytes(m, 4, n) > 2 * qp_llama_batch_bytes(m, 1, n));
        qp_llama_free(m);
    }
    /* a bad token in the second window is named; no batch is left behind */
    mixed[n + 5] = house_hp.vocab;
    qp_llama *m = new_house(2, 0, NULL);
    assert_int_equal(qp_llama_forward_batch(m, mixed, 2, n), QP_EUSAGE);
    assert_non_null(strstr(qp_error_last(), "window 1 of the batch"));
    assert_int_equal(qp_llama_batch_logits(m, 0, got), QP_EUSAGE);
    assert_int_equal(qp_llama_forward_batch(m, mixed, 0, n), QP_EUSAGE);
    qp_llama_free(m);
    free(mixed);
    free(want);
    free(got);
    qp_llama_free(alone);
}

/* A source that hands out q/k rows in GGUF's interleaved layout, permuted
 * here from an inner rotate-half source as formats.md describes. */
typedef struct {
    qp_weight_source inner;
    int n_heads, n_kv_heads, head_dim;
} permuting_src;

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static int permuting_get(void *ud, const char *name, int ndim, const uint64_t *shape, float *dst)
{
    permuting_src *p = ud;
    int heads = 0;
    if (ends_with(name, "q_proj.weight") || ends_with(name, "q_proj.bias"))
        heads = p->n_heads;
    if (ends_with(name, "k_proj.weight") || ends_with(name, "k_proj.bias"))
        heads = p->n_kv_heads;
    if (!heads)
        return p->inner.get_f32(p->inner.ud, name, ndim, shape, dst);
    size_t cols = ndim == 2 ? (size_t)shape[1] : 1;
    float *hf = malloc((size_t)shape[0] * cols * sizeof(float));
    assert_non_null(hf);
    int rc = p->inner.get_f32(p->inner.ud, name, ndim, shape, hf);
    if (rc == 0)
        qp_llama_rope_permute(dst, hf, heads, p->head_dim, cols, 1);
    free(hf);
    return rc;
}

static void test_house_rope_interleaved(void **state)
{
    (void)state;
    permuting_src p;
    qp_weight_source_checkpoint(&p.inner, house_ck);
    p.n_heads = house_hp.n_heads;
    p.n_kv_heads = house_hp.n_kv_heads;
    p.head_dim = house_hp.head_dim;
    qp_weight_source src = {.ud = &p, .get_f32 = permuting_get, .rope_interleaved = 1};
    qp_llama *hf = new_house(2, QP_LLAMA_CACHE_DEFAULT, NULL);
    qp_llama *gg = new_house(2, QP_LLAMA_CACHE_DEFAULT, &src);
    float *a = house_logits(hf), *b = house_logits(gg);
    assert_memory_equal(a, b, ref_n * (size_t)house_hp.vocab * sizeof(float));
    /* The same permuted weights read as rotate-half are a different model:
     * the test would pass vacuously if the flag were ignored. */
    src.rope_interleaved = 0;
    qp_llama *wrong = new_house(2, QP_LLAMA_CACHE_DEFAULT, &src);
    float *c = house_logits(wrong);
    assert_memory_not_equal(a, c, ref_n * (size_t)house_hp.vocab * sizeof(float));
    free(a); free(b); free(c);
    qp_llama_free(hf);
    qp_llama_free(gg);
    qp_llama_free(wrong);
}

/* The permutation itself, on row indices: GGUF row 2j+s of a head is HF row
 * s·hd/2 + j. */
static void test_rope_permute_rows(void **state)
{
    (void)state;
    enum { NH = 2, HD = 6, R = NH * HD };
    float src[R], gg[R], back[R];
    for (int i = 0; i < R; i++)
        src[i] = (float)i;
    qp_llama_rope_permute(gg, src, NH, HD, 1, 1);
    const float want[R] = {0, 3, 1, 4, 2, 5, 6, 9, 7, 10, 8, 11};
    assert_memory_equal(gg, want, sizeof(want));
    qp_llama_rope_permute(back, gg, NH, HD, 1, 0);
    assert_memory_equal(back, src, sizeof(src));
}

/* NLL helpers: qp_llama_nll equals the sum over rows of qp_logits_nll on
 * the forward logits, accumulates, and the log-softmax is the textbook one. */
static void test_house_nll(void **state)
{
    (void)state;
    qp_llama *m = new_house(2, QP_LLAMA_CACHE_DEFAULT, NULL);
    float *lg = house_logits(m);
    size_t V = (size_t)house_hp.vocab;
    double want = 0;
    for (size_t t = 1; t < ref_n; t++)
        want += qp_logits_nll(lg + (t - 1) * V, V, ref_tokens[t]);
    double sum = 0.5;
    size_t count = 3;
    assert_int_equal(qp_llama_nll(m, ref_tokens, ref_n, 1, &sum, &count), 0);
    assert_int_equal(count, 3 + ref_n - 1);
    assert_true(sum - 0.5 == want);
    /* second half only (llama.cpp's protocol): first = n/2 + 1 */
    double half = 0;
    size_t hc = 0;
    assert_int_equal(qp_llama_nll(m, ref_tokens, ref_n, ref_n / 2 + 1, &half, &hc), 0);
    assert_int_equal(hc, ref_n - ref_n / 2 - 1);
    double want_half = 0;
    for (size_t t = ref_n / 2 + 1; t < ref_n; t++)
        want_half += qp_logits_nll(lg + (t - 1) * V, V, ref_tokens[t]);
    assert_true(half == want_half);
    /* first >= n: nothing scored */
    hc = 0;
    half = 0;
    assert_int_equal(qp_llama_nll(m, ref_tokens, 5, 5, &half, &hc), 0);
    assert_int_equal(hc, 0);
    assert_true(half == 0.0);
    free(lg);
    qp_llama_free(m);

    /* log-softmax of [0, ln 3] at 1: −log(3/4) */
    const float row[2] = {0.0f, (float)log(3.0)};
    assert_true(fabs(qp_logits_nll(row, 2, 1) - (-log(3.0 / 4.0))) < 1e-7);
    /* large logits do not overflow */
    const float big[3] = {1000.0f, 1000.0f, 1000.0f};
    assert_true(fabs(qp_logits_nll(big, 3, 2) - log(3.0)) < 1e-12);
}

/* Perplexity of valid.txt, protocol "windows" (reference/perplexity.json). */
static void test_house_perplexity_windows(void **state)
{
    (void)state;
    char *pj = qp_test_shared_path("models/house-llama/reference/perplexity.json");
    char *tokp = qp_test_shared_path("models/house-llama/tokenizer.model");
    char *validp = qp_test_shared_path("data/shakespeare/valid.txt");
    json_error_t jerr;
    json_t *ref = json_load_file(pj, 0, &jerr);
    assert_non_null(ref);
    const json_t *w = json_object_get(ref, "valid.txt");
    assert_string_equal(json_string_value(json_object_get(w, "protocol_name")), "windows");
    size_t ctx = (size_t)json_integer_value(json_object_get(w, "ctx"));
    double want_ppl = json_number_value(json_object_get(w, "ppl"));

    qp_tokenizer *tok = NULL;
    assert_int_equal(qp_tokenizer_load_spm(&tok, tokp), 0);
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(qp_read_file(validp, &text, &len), 0);
    int *ids = NULL;
    size_t n = 0;
    assert_int_equal(qp_tokenizer_encode(tok, text, len, QP_TOK_ADD_BOS, &ids, &n), 0);
    assert_int_equal(n, (size_t)json_integer_value(json_object_get(w, "tokens_with_bos")));
    int32_t *toks = malloc(n * sizeof(int32_t));
    assert_non_null(toks);
    for (size_t i = 0; i < n; i++)
        toks[i] = ids[i];

    qp_llama *m = new_house(0, QP_LLAMA_CACHE_DEFAULT, NULL);
    double nll = 0;
    size_t count = 0;
    double t0 = qp_now();
    for (size_t s = 0; s < n; s += ctx) {
        size_t wn = n - s < ctx ? n - s : ctx;
        assert_int_equal(qp_llama_nll(m, toks + s, wn, 1, &nll, &count), 0);
    }
    double dt = qp_now() - t0;
    double ppl = exp(nll / (double)count);
    printf("valid.txt windows ppl = %.6f (reference %.6f, rel diff %.2g), %zu scored, %.0f tokens/s\n", ppl,
           want_ppl, fabs(ppl / want_ppl - 1.0), count, (double)n / dt);
    assert_int_equal(count, (size_t)json_integer_value(json_object_get(w, "scored")));
    assert_true(fabs(ppl / want_ppl - 1.0) <= 5e-4);
    qp_llama_free(m);
    free(toks);
    free(ids);
    free(text);
    qp_tokenizer_free(tok);
    json_decref(ref);
    free(pj);
    free(tokp);
    free(validp);
}

/* ---- tiny random models against a naive implementation ---- */

typedef struct {
    char name[96];
    int ndim;
    uint64_t shape[2];
    float *data;
} mem_tensor;

typedef struct {
    mem_tensor t[128];
    int n;
} mem_model;

static int mem_get(void *ud, const char *name, int ndim, const uint64_t *shape, float *dst)
{
    mem_model *mm = ud;
    for (int i = 0; i < mm->n; i++) {
        mem_tensor *t = &mm->t[i];
        if (strcmp(t->name, name) != 0)
            continue;
        if (t->ndim != ndim || t->shape[0] != shape[0] || (ndim == 2 && t->shape[1] != shape[1]))
            return qp_error_set(QP_EFORMAT, "mem: tensor '%s': wrong shape", name);
        memcpy(dst, t->data, (size_t)(shape[0] * (ndim == 2 ? shape[1] : 1)) * sizeof(float));
        return 0;
    }
    return qp_error_set(QP_EFORMAT, "mem: tensor '%s' is missing", name);
}

static uint64_t rng_state;
static float frand(void)   /* uniform in [-1, 1) */
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rng_state >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
}

static float *mem_add(mem_model *mm, const char *name, uint64_t rows, uint64_t cols, float scale,
                      float offset)
{
    mem_tensor *t = &mm->t[mm->n++];
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->ndim = cols ? 2 : 1;
    t->shape[0] = rows;
    t->shape[1] = cols;
    size_t n = (size_t)(rows * (cols ? cols : 1));
    t->data = malloc(n * sizeof(float));
    assert_non_null(t->data);
    for (size_t i = 0; i < n; i++)
        t->data[i] = offset + scale * frand();
    return t->data;
}

static void mem_free(mem_model *mm)
{
    for (int i = 0; i < mm->n; i++)
        free(mm->t[i].data);
    mm->n = 0;
}

static const float *mem_find(const mem_model *mm, const char *fmt, int l)
{
    char name[96];
    snprintf(name, sizeof(name), fmt, l);
    for (int i = 0; i < mm->n; i++)
        if (strcmp(mm->t[i].name, name) == 0)
            return mm->t[i].data;
    return NULL;
}

static void build_random(mem_model *mm, const qp_llama_hparams *hp, uint64_t seed)
{
    rng_state = seed;
    mm->n = 0;
    uint64_t D = (uint64_t)hp->hidden, F = (uint64_t)hp->intermediate, V = (uint64_t)hp->vocab;
    uint64_t qd = (uint64_t)(hp->n_heads * hp->head_dim), kvd = (uint64_t)(hp->n_kv_heads * hp->head_dim);
    char name[96];
    mem_add(mm, "model.embed_tokens.weight", V, D, 1.0f, 0.0f);
    mem_add(mm, "model.norm.weight", D, 0, 0.2f, 1.0f);
    if (!hp->tied_embeddings)
        mem_add(mm, "lm_head.weight", V, D, 0.3f, 0.0f);
    for (int l = 0; l < hp->n_layers; l++) {
        const struct { const char *s; uint64_t r, c; float scale, off; } t[] = {
            {"input_layernorm.weight", D, 0, 0.2f, 1.0f},
            {"post_attention_layernorm.weight", D, 0, 0.2f, 1.0f},
            {"self_attn.q_proj.weight", qd, D, 0.5f, 0.0f},
            {"self_attn.k_proj.weight", kvd, D, 0.5f, 0.0f},
            {"self_attn.v_proj.weight", kvd, D, 0.5f, 0.0f},
            {"self_attn.o_proj.weight", D, qd, 0.3f, 0.0f},
            {"mlp.gate_proj.weight", F, D, 0.3f, 0.0f},
            {"mlp.up_proj.weight", F, D, 0.3f, 0.0f},
            {"mlp.down_proj.weight", D, F, 0.1f, 0.0f},
        };
        for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
            snprintf(name, sizeof(name), "model.layers.%d.%s", l, t[i].s);
            mem_add(mm, name, t[i].r, t[i].c, t[i].scale, t[i].off);
        }
        if (hp->qkv_bias) {
            snprintf(name, sizeof(name), "model.layers.%d.self_attn.q_proj.bias", l);
            mem_add(mm, name, qd, 0, 0.5f, 0.0f);
            snprintf(name, sizeof(name), "model.layers.%d.self_attn.k_proj.bias", l);
            mem_add(mm, name, kvd, 0, 0.5f, 0.0f);
            snprintf(name, sizeof(name), "model.layers.%d.self_attn.v_proj.bias", l);
            mem_add(mm, name, kvd, 0, 0.5f, 0.0f);
        }
    }
}

/* y[rows] = W[rows, cols] · x[cols] (+ b) in double */
static void naive_linear(double *y, const float *W, const float *b, const double *x, size_t rows, size_t cols)
{
    for (size_t r = 0; r < rows; r++) {
        double s = b ? b[r] : 0.0;
        for (size_t c = 0; c < cols; c++)
            s += (double)W[r * cols + c] * x[c];
        y[r] = s;
    }
}

static void naive_rmsnorm(double *y, const double *x, const float *w, size_t d, double eps)
{
    double ss = 0;
    for (size_t i = 0; i < d; i++)
        ss += x[i] * x[i];
    double r = 1.0 / sqrt(ss / (double)d + eps);
    for (size_t i = 0; i < d; i++)
        y[i] = x[i] * r * w[i];
}

/* Inverse frequency i in double: θ^(−2i/hd), with Llama 3 scaling as
 * transformers' _compute_llama3_parameters states it. */
static double naive_inv_freq(const qp_llama_hparams *hp, int i)
{
    double inv = pow(hp->rope_theta, -2.0 * i / hp->head_dim);
    const qp_rope_scaling *s = &hp->rope_scaling;
    if (s->kind != QP_ROPE_LLAMA3)
        return inv;
    double wavelen = 2.0 * M_PI / inv, old = s->original_max_pos;
    if (wavelen < old / s->high_freq_factor)
        return inv;
    if (wavelen > old / s->low_freq_factor)
        return inv / s->factor;
    double smooth = (old / wavelen - s->low_freq_factor) / (s->high_freq_factor - s->low_freq_factor);
    return (1.0 - smooth) * inv / s->factor + smooth * inv;
}

/* Rotate-half RoPE of one head vector v[hd] at position p. */
static void naive_rope(double *v, const qp_llama_hparams *hp, size_t p)
{
    int hd = hp->head_dim, h = hd / 2;
    for (int i = 0; i < h; i++) {
        double ang = (double)p * naive_inv_freq(hp, i);
        double a = v[i], b = v[i + h];
        v[i] = a * cos(ang) - b * sin(ang);
        v[i + h] = b * cos(ang) + a * sin(ang);
    }
}

/* The whole model, token by token, in double. logits [n, V]. */
static void naive_forward(const mem_model *mm, const qp_llama_hparams *hp, const int32_t *tok, size_t n,
                          double *logits)
{
    size_t D = (size_t)hp->hidden, F = (size_t)hp->intermediate, V = (size_t)hp->vocab;
    size_t hd = (size_t)hp->head_dim, H = (size_t)hp->n_heads, KV = (size_t)hp->n_kv_heads;
    size_t qd = H * hd, kvd = KV * hd;
    double *x = calloc(n * D, sizeof(double)), *xn = calloc(D, sizeof(double));
    double *q = calloc(n * qd, sizeof(double)), *k = calloc(n * kvd, sizeof(double));
    double *v = calloc(n * kvd, sizeof(double)), *att = calloc(qd, sizeof(double));
    double *tmp = calloc(D > F ? D : F, sizeof(double)), *g = calloc(F, sizeof(double));
    double *u = calloc(F, sizeof(double)), *p = calloc(n, sizeof(double));
    double *attn_all = calloc(n * qd, sizeof(double));
    const float *emb = mem_find(mm, "model.embed_tokens.weight", 0);
    for (size_t t = 0; t < n; t++)
        for (size_t i = 0; i < D; i++)
            x[t * D + i] = emb[(size_t)tok[t] * D + i];
    for (int l = 0; l < hp->n_layers; l++) {
        const float *wq = mem_find(mm, "model.layers.%d.self_attn.q_proj.weight", l);
        const float *wk = mem_find(mm, "model.layers.%d.self_attn.k_proj.weight", l);
        const float *wv = mem_find(mm, "model.layers.%d.self_attn.v_proj.weight", l);
        const float *wo = mem_find(mm, "model.layers.%d.self_attn.o_proj.weight", l);
        const float *bq = mem_find(mm, "model.layers.%d.self_attn.q_proj.bias", l);
        const float *bk = mem_find(mm, "model.layers.%d.self_attn.k_proj.bias", l);
        const float *bv = mem_find(mm, "model.layers.%d.self_attn.v_proj.bias", l);
        const float *n1 = mem_find(mm, "model.layers.%d.input_layernorm.weight", l);
        const float *n2 = mem_find(mm, "model.layers.%d.post_attention_layernorm.weight", l);
        const float *wg = mem_find(mm, "model.layers.%d.mlp.gate_proj.weight", l);
        const float *wu = mem_find(mm, "model.layers.%d.mlp.up_proj.weight", l);
        const float *wd = mem_find(mm, "model.layers.%d.mlp.down_proj.weight", l);
        for (size_t t = 0; t < n; t++) {
            naive_rmsnorm(xn, x + t * D, n1, D, hp->rms_eps);
            naive_linear(q + t * qd, wq, bq, xn, qd, D);
            naive_linear(k + t * kvd, wk, bk, xn, kvd, D);
            naive_linear(v + t * kvd, wv, bv, xn, kvd, D);
            for (size_t h = 0; h < H; h++)
                naive_rope(q + t * qd + h * hd, hp, t);
            for (size_t h = 0; h < KV; h++)
                naive_rope(k + t * kvd + h * hd, hp, t);
        }
        for (size_t t = 0; t < n; t++) {
            for (size_t h = 0; h < H; h++) {
                size_t gidx = h / (H / KV);
                double mx = -INFINITY, sum = 0;
                for (size_t j = 0; j <= t; j++) {
                    double s = 0;
                    for (size_t i = 0; i < hd; i++)
                        s += q[t * qd + h * hd + i] * k[j * kvd + gidx * hd + i];
                    p[j] = s / sqrt((double)hd);
                    mx = p[j] > mx ? p[j] : mx;
                }
                for (size_t j = 0; j <= t; j++)
                    sum += (p[j] = exp(p[j] - mx));
                for (size_t i = 0; i < hd; i++) {
                    double s = 0;
                    for (size_t j = 0; j <= t; j++)
                        s += p[j] / sum * v[j * kvd + gidx * hd + i];
                    attn_all[t * qd + h * hd + i] = s;
                }
            }
        }
        for (size_t t = 0; t < n; t++) {
            memcpy(att, attn_all + t * qd, qd * sizeof(double));
            naive_linear(tmp, wo, NULL, att, D, qd);
            for (size_t i = 0; i < D; i++)
                x[t * D + i] += tmp[i];
            naive_rmsnorm(xn, x + t * D, n2, D, hp->rms_eps);
            naive_linear(g, wg, NULL, xn, F, D);
            naive_linear(u, wu, NULL, xn, F, D);
            for (size_t i = 0; i < F; i++)
                g[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
            naive_linear(tmp, wd, NULL, g, D, F);
            for (size_t i = 0; i < D; i++)
                x[t * D + i] += tmp[i];
        }
    }
    const float *fn = mem_find(mm, "model.norm.weight", 0);
    const float *head = hp->tied_embeddings ? emb : mem_find(mm, "lm_head.weight", 0);
    for (size_t t = 0; t < n; t++) {
        naive_rmsnorm(xn, x + t * D, fn, D, hp->rms_eps);
        naive_linear(logits + t * V, head, NULL, xn, V, D);
    }
    free(x); free(xn); free(q); free(k); free(v); free(att); free(tmp);
    free(g); free(u); free(p); free(attn_all);
}

static void check_tiny(const qp_llama_hparams *hp, size_t n, uint64_t seed)
{
    mem_model *mm = calloc(1, sizeof(*mm));
    assert_non_null(mm);
    build_random(mm, hp, seed);
    int32_t *tok = malloc(n * sizeof(int32_t));
    for (size_t t = 0; t < n; t++)
        tok[t] = (int32_t)((t * 7919u + seed) % (uint64_t)hp->vocab);
    size_t V = (size_t)hp->vocab;
    double *want = malloc(n * V * sizeof(double));
    naive_forward(mm, hp, tok, n, want);

    qp_weight_source src = {.ud = mm, .get_f32 = mem_get, .rope_interleaved = 0};
    float *first = NULL;
    for (int threads = 1; threads <= 3; threads++) {
        for (int stream = 0; stream <= 1; stream++) {
            qp_llama_opts o;
            qp_llama_opts_init(&o);
            o.n_threads = threads;
            o.weight_cache_bytes = stream ? 0 : QP_LLAMA_CACHE_DEFAULT;
            qp_llama *m = NULL;
            int rc = qp_llama_new(&m, hp, &src, &o);
            if (rc)
                fprintf(stderr, "%s\n", qp_error_last());
            assert_int_equal(rc, 0);
            assert_int_equal(qp_llama_weights_cached(m), !stream);
            float *lg = malloc(n * V * sizeof(float));
            assert_int_equal(qp_llama_forward(m, tok, n, lg), 0);
            if (!first) {
                first = lg;
                double maxdiff = 0, maxref = 0;
                for (size_t i = 0; i < n * V; i++) {
                    double d = fabs((double)lg[i] - want[i]);
                    maxdiff = d > maxdiff ? d : maxdiff;
                    maxref = fabs(want[i]) > maxref ? fabs(want[i]) : maxref;
                }
                printf("tiny model V=%d D=%d H=%d KV=%d hd=%d F=%d tied=%d bias=%d n=%zu: "
                       "max |d| = %.3g, max |logit| = %.3g\n",
                       hp->vocab, hp->hidden, hp->n_heads, hp->n_kv_heads, hp->head_dim, hp->intermediate,
                       hp->tied_embeddings, hp->qkv_bias, n, maxdiff, maxref);
                assert_true(maxref > 0.5);
                assert_true(maxdiff <= 2e-5 * maxref);
            } else {
                assert_memory_equal(first, lg, n * V * sizeof(float));
                free(lg);
            }
            qp_llama_free(m);
        }
    }
    /* The interleaved layout of the same weights gives the same bits. */
    if (hp->qkv_bias) {
        permuting_src p = {src, hp->n_heads, hp->n_kv_heads, hp->head_dim};
        qp_weight_source psrc = {.ud = &p, .get_f32 = permuting_get, .rope_interleaved = 1};
        qp_llama *m = NULL;
        assert_int_equal(qp_llama_new(&m, hp, &psrc, NULL), 0);
        float *lg = malloc(n * V * sizeof(float));
        assert_int_equal(qp_llama_forward(m, tok, n, lg), 0);
        assert_memory_equal(first, lg, n * V * sizeof(float));
        free(lg);
        qp_llama_free(m);
    }
    free(first);
    free(want);
    free(tok);
    mem_free(mm);
    free(mm);
}

/* Tied head, q/k/v bias, GQA (2 query heads per kv head), H·hd != D. */
static void test_tiny_tied_bias_gqa(void **state)
{
    (void)state;
    qp_llama_hparams hp = {.vocab = 37, .hidden = 16, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2,
                           .head_dim = 6, .intermediate = 20, .rms_eps = 1e-5f, .rope_theta = 10000.0f,
                           .max_pos = 32, .tied_embeddings = 1, .qkv_bias = 1};
    check_tiny(&hp, 13, 42);
}

/* Untied head, MQA (one kv head), several column blocks with a remainder
 * (F = 300 = 2·128 + 44, V = 260), two attention query blocks (n = 70). */
static void test_tiny_blocks_mqa(void **state)
{
    (void)state;
    qp_llama_hparams hp = {.vocab = 260, .hidden = 40, .n_layers = 2, .n_heads = 4, .n_kv_heads = 1,
                           .head_dim = 10, .intermediate = 300, .rms_eps = 1e-6f, .rope_theta = 500.0f,
                           .max_pos = 80, .tied_embeddings = 0, .qkv_bias = 0};
    check_tiny(&hp, 70, 7);
}

/* Llama 3.2 style: llama3 rope scaling, tied head.  original_max_pos 64
 * puts head dims in all three bands (wavelengths 6.3, 33, 168, ...: high,
 * medium, low); the window reaches position 59. */
static void test_tiny_llama3(void **state)
{
    (void)state;
    qp_llama_hparams hp = {.vocab = 50, .hidden = 32, .n_layers = 2, .n_heads = 2, .n_kv_heads = 1,
                           .head_dim = 16, .intermediate = 40, .rms_eps = 1e-5f, .rope_theta = 500000.0f,
                           .rope_scaling = {.kind = QP_ROPE_LLAMA3, .factor = 8.0, .low_freq_factor = 1.0,
                                            .high_freq_factor = 4.0, .original_max_pos = 64},
                           .max_pos = 64, .tied_embeddings = 1, .qkv_bias = 0};
    check_tiny(&hp, 60, 11);
    /* and the scaling matters: the same weights without it give other logits */
    qp_llama_hparams plain = hp;
    plain.rope_scaling.kind = QP_ROPE_PLAIN;
    mem_model *mm = calloc(1, sizeof(*mm));
    assert_non_null(mm);
    build_random(mm, &hp, 11);
    qp_weight_source src = {.ud = mm, .get_f32 = mem_get, .rope_interleaved = 0};
    int32_t tok[60];
    for (int t = 0; t < 60; t++)
        tok[t] = (int32_t)((t * 7919u + 11) % 50);
    float *a = malloc(60 * 50 * sizeof(float)), *b = malloc(60 * 50 * sizeof(float));
    qp_llama *m1 = NULL, *m2 = NULL;
    assert_int_equal(qp_llama_new(&m1, &hp, &src, NULL), 0);
    assert_int_equal(qp_llama_new(&m2, &plain, &src, NULL), 0);
    assert_int_equal(qp_llama_forward(m1, tok, 60, a), 0);
    assert_int_equal(qp_llama_forward(m2, tok, 60, b), 0);
    double maxd = 0;
    for (size_t i = 0; i < 60 * 50; i++)
        maxd = fmax(maxd, fabs((double)a[i] - (double)b[i]));
    printf("tiny llama3 model: max |logit(llama3) - logit(plain)| = %.3g\n", maxd);
    assert_true(maxd > 1e-2);
    /* position 0 has angle 0 in every band: the first row is identical */
    assert_memory_equal(a, b, 50 * sizeof(float));
    qp_llama_free(m1);
    qp_llama_free(m2);
    free(a);
    free(b);
    mem_free(mm);
    free(mm);
}

/* ---- building blocks ---- */

/* OpenBLAS 0.3.21 gives different bits at 1 and 2 threads for K = 700
 * (its threaded driver splits K differently); qp_mm_batch must not. */
static void test_mm_deterministic(void **state)
{
    (void)state;
    enum { N = 70, IN = 700, OUT = 300, OUT2 = 129 };
    float *x = malloc(sizeof(float) * N * IN), *w = malloc(sizeof(float) * OUT * IN);
    float *w2 = malloc(sizeof(float) * OUT2 * IN), *b = malloc(sizeof(float) * OUT);
    float *y[3], *y2[3];
    rng_state = 99;
    for (size_t i = 0; i < (size_t)N * IN; i++)
        x[i] = frand();
    for (size_t i = 0; i < (size_t)OUT * IN; i++)
        w[i] = frand();
    for (size_t i = 0; i < (size_t)OUT2 * IN; i++)
        w2[i] = frand();
    for (size_t i = 0; i < OUT; i++)
        b[i] = frand();
    for (int t = 0; t < 3; t++) {
        qp_pool *p = NULL;
        assert_int_equal(qp_pool_new(&p, t + 1), 0);
        y[t] = malloc(sizeof(float) * N * OUT);
        y2[t] = malloc(sizeof(float) * N * (OUT2 + 3));
        /* the second output has a row stride wider than its width */
        qp_mm_job jobs[2] = {{y[t], OUT, w, b, OUT}, {y2[t], OUT2 + 3, w2, NULL, OUT2}};
        for (size_t i = 0; i < (size_t)N * (OUT2 + 3); i++)
            y2[t][i] = -7.0f;
        qp_mm_batch(p, x, IN, N, IN, jobs, 2);
        qp_pool_free(p);
        if (t > 0) {
            assert_memory_equal(y[0], y[t], sizeof(float) * N * OUT);
            assert_memory_equal(y2[0], y2[t], sizeof(float) * N * (OUT2 + 3));
        }
    }
    double maxd = 0;
    for (size_t r = 0; r < N; r++) {
        for (size_t c = 0; c < OUT; c++) {
            double s = b[c];
            for (size_t k = 0; k < IN; k++)
                s += (double)x[r * IN + k] * w[c * IN + k];
            maxd = fmax(maxd, fabs(s - y[0][r * OUT + c]));
        }
        for (size_t c = 0; c < OUT2; c++) {
            double s = 0;
            for (size_t k = 0; k < IN; k++)
                s += (double)x[r * IN + k] * w2[c * IN + k];
            maxd = fmax(maxd, fabs(s - y2[0][r * (OUT2 + 3) + c]));
        }
        for (size_t c = OUT2; c < OUT2 + 3; c++)
            assert_true(y2[0][r * (OUT2 + 3) + c] == -7.0f);   /* padding untouched */
    }
    assert_true(maxd < 1e-3);
    for (int t = 0; t < 3; t++) {
        free(y[t]);
        free(y2[t]);
    }
    free(x); free(w); free(w2); free(b);
}

typedef struct {
    int *hits;      /* [n_tasks] */
    int *thread_of; /* [n_tasks] */
} pool_ctx;

static void pool_task(void *arg, size_t task, int thread)
{
    pool_ctx *c = arg;
    c->hits[task]++;
    c->thread_of[task] = thread;
}

/* Many dispatches, some after a pause long enough for the workers to fall
 * asleep: every task runs exactly once per dispatch, on a valid thread. */
static void test_pool_dispatches(void **state)
{
    (void)state;
    enum { TASKS = 37, ROUNDS = 400 };
    int hits[TASKS] = {0}, thread_of[TASKS] = {0};
    pool_ctx c = {hits, thread_of};
    for (int threads = 1; threads <= 3; threads++) {
        qp_pool *p = NULL;
        assert_int_equal(qp_pool_new(&p, threads), 0);
        assert_int_equal(qp_pool_threads(p), threads);
        memset(hits, 0, sizeof(hits));
        for (int r = 0; r < ROUNDS; r++) {
            if (r % 100 == 99)
                usleep(5000);
            qp_pool_run(p, r % 5 == 0 ? 1 : TASKS, pool_task, &c);
            qp_pool_run(p, 0, pool_task, &c);   /* no tasks: no-op */
            for (int t = 0; t < TASKS; t++)
                assert_true(thread_of[t] >= 0 && thread_of[t] < threads);
        }
        assert_int_equal(hits[0], ROUNDS);
        for (int t = 1; t < TASKS; t++)
            assert_int_equal(hits[t], ROUNDS - ROUNDS / 5);
        qp_pool_free(p);
    }
    qp_pool *p = NULL;
    assert_int_equal(qp_pool_new(&p, 0), QP_EUSAGE);
    assert_string_equal(qp_error_last(), "thread pool: 0 threads requested, need at least 1");
    assert_null(p);
}

/* The vectorisable exp against libm's double exp. */
static void test_exp(void **state)
{
    (void)state;
    double worst = 0;
    for (float x = -87.0f; x < 88.0f; x += 0.00731f) {
        double e = exp((double)x);
        worst = fmax(worst, fabs((double)qp_kern_exp(x) - e) / e);
    }
    assert_true(worst < 1.2e-7);
    assert_true(qp_kern_exp(0.0f) == 1.0f);
    assert_true(qp_kern_exp(-1000.0f) >= 0.0f && qp_kern_exp(-1000.0f) < 1e-37f);
    assert_true(isfinite(qp_kern_exp(1000.0f)) && qp_kern_exp(1000.0f) > 1e38f);
    assert_true(isnan(qp_kern_exp(NAN)));
    /* softmax: probabilities sum to 1, masked tail exactly 0 */
    float s[40];
    for (int i = 0; i < 40; i++)
        s[i] = (float)(i % 7) - 3.0f;
    qp_kern_softmax_causal(s, 33, 40);
    double sum = 0;
    for (int i = 0; i < 33; i++)
        sum += s[i];
    assert_true(fabs(sum - 1.0) < 1e-6);
    for (int i = 33; i < 40; i++)
        assert_true(s[i] == 0.0f);
}

/* ---- errors ---- */

static void test_errors(void **state)
{
    (void)state;
    qp_llama_hparams hp = {.vocab = 37, .hidden = 16, .n_layers = 1, .n_heads = 4, .n_kv_heads = 2,
                           .head_dim = 6, .intermediate = 20, .rms_eps = 1e-5f, .rope_theta = 10000.0f,
                           .max_pos = 8, .tied_embeddings = 1, .qkv_bias = 0};
    mem_model *mm = calloc(1, sizeof(*mm));
    build_random(mm, &hp, 1);
    qp_weight_source src = {.ud = mm, .get_f32 = mem_get, .rope_interleaved = 0};
    qp_llama *m = NULL;

    qp_llama_hparams bad = hp;
    bad.n_kv_heads = 3;
    assert_int_equal(qp_llama_new(&m, &bad, &src, NULL), QP_EFORMAT);
    assert_string_equal(qp_error_last(), "llama hparams: n_heads (4) is not a multiple of n_kv_heads (3)");
    assert_null(m);
    bad = hp;
    bad.head_dim = 5;
    assert_int_equal(qp_llama_new(&m, &bad, &src, NULL), QP_EFORMAT);
    assert_string_equal(qp_error_last(), "llama hparams: head_dim = 5 must be even for RoPE");
    bad = hp;
    bad.vocab = 0;
    assert_int_equal(qp_llama_new(&m, &bad, &src, NULL), QP_EFORMAT);
    assert_string_equal(qp_error_last(), "llama hparams: vocab = 0 is outside 1..4194304");

    /* a config that does not match the weights */
    bad = hp;
    bad.intermediate = 24;
    assert_int_equal(qp_llama_new(&m, &bad, &src, NULL), QP_EFORMAT);
    assert_string_equal(qp_error_last(), "mem: tensor 'model.layers.0.mlp.gate_proj.weight': wrong shape");
    bad = hp;
    bad.qkv_bias = 1;
    assert_int_equal(qp_llama_new(&m, &bad, &src, NULL), QP_EFORMAT);
    assert_string_equal(qp_error_last(), "mem: tensor 'model.layers.0.self_attn.q_proj.bias' is missing");
    assert_null(m);

    assert_int_equal(qp_llama_new(&m, &hp, &src, NULL), 0);
    float lg[9 * 37];
    const int32_t ok[3] = {1, 2, 36};
    const int32_t oov[3] = {1, 37, 2};
    const int32_t neg[2] = {-1, 2};
    const int32_t nine[9] = {0};
    assert_int_equal(qp_llama_forward(m, ok, 3, lg), 0);
    assert_int_equal(qp_llama_forward(m, oov, 3, lg), QP_EUSAGE);
    assert_string_equal(qp_error_last(),
                        "llama forward: token 37 at position 1 is outside the vocabulary [0, 37)");
    assert_int_equal(qp_llama_forward(m, neg, 2, lg), QP_EUSAGE);
    assert_string_equal(qp_error_last(),
                        "llama forward: token -1 at position 0 is outside the vocabulary [0, 37)");
    assert_int_equal(qp_llama_forward(m, nine, 9, lg), QP_EUSAGE);
    assert_string_equal(qp_error_last(), "llama forward: window of 9 tokens, must be 1..8 (max_pos)");
    assert_int_equal(qp_llama_forward(m, ok, 0, lg), QP_EUSAGE);
    double s = 0;
    size_t c = 0;
    assert_int_equal(qp_llama_nll(m, ok, 3, 0, &s, &c), QP_EUSAGE);
    assert_string_equal(qp_error_last(),
                        "llama nll: first scored position must be >= 1 (position 0 has no context)");
    assert_int_equal(qp_llama_nll(m, oov, 3, 5, &s, &c), QP_EUSAGE);
    assert_int_equal(c, 0);
    qp_llama_free(m);

    /* streaming: a tensor that goes missing shows up at forward time */
    qp_llama_opts o;
    qp_llama_opts_init(&o);
    o.weight_cache_bytes = 0;
    assert_int_equal(qp_llama_new(&m, &hp, &src, &o), 0);
    snprintf(mm->t[5].name, sizeof(mm->t[5].name), "renamed");   /* a layer matrix */
    assert_int_equal(qp_llama_forward(m, ok, 3, lg), QP_EFORMAT);
    assert_true(strstr(qp_error_last(), "is missing") != NULL);
    qp_llama_free(m);

    qp_weight_source none = {.ud = NULL, .get_f32 = NULL, .rope_interleaved = 0};
    assert_int_equal(qp_llama_new(&m, &hp, &none, NULL), QP_EUSAGE);
    assert_string_equal(qp_error_last(), "llama: no weight source given");
    mem_free(mm);
    free(mm);
}

/* The checkpoint source's messages: a missing tensor, a shape mismatch. */
static void test_checkpoint_source_errors(void **state)
{
    (void)state;
    qp_weight_source src;
    qp_weight_source_checkpoint(&src, house_ck);
    float buf[4];
    uint64_t shape[2] = {4, 0};
    assert_int_equal(src.get_f32(src.ud, "model.layers.99.mlp.up_proj.weight", 1, shape, buf), QP_EFORMAT);
    assert_string_equal(qp_error_last(), "checkpoint: tensor 'model.layers.99.mlp.up_proj.weight' is missing "
                                         "(needed by the LLaMA forward pass)");
    assert_int_equal(src.get_f32(src.ud, "model.norm.weight", 1, shape, buf), QP_EFORMAT);
    assert_string_equal(qp_error_last(),
                        "checkpoint: tensor 'model.norm.weight' has shape [256], the config implies [4]");
    qp_llama_hparams hp = house_hp;
    hp.intermediate = 512;
    qp_llama *m = NULL;
    assert_int_equal(qp_llama_new(&m, &hp, &src, NULL), QP_EFORMAT);
    assert_string_equal(qp_error_last(), "checkpoint: tensor 'model.layers.0.mlp.gate_proj.weight' has shape "
                                         "[768, 256], the config implies [512, 256]");
    assert_null(m);
}

static void test_flops(void **state)
{
    (void)state;
    /* house: 6·(256·256 + 2·256·128 + 256·256 + 3·256·768) + 1024·256 */
    assert_int_equal(qp_llama_matmul_params(&house_hp), 6u * (65536 + 65536 + 65536 + 589824) + 262144);
    double f = qp_llama_window_flops(&house_hp, 4);
    assert_true(f == 2.0 * 4980736.0 * 4 + 4.0 * 8 * 32 * 10 * 6);
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rope_permute_rows),
        cmocka_unit_test(test_exp),
        cmocka_unit_test(test_pool_dispatches),
        cmocka_unit_test(test_mm_deterministic),
        cmocka_unit_test(test_tiny_tied_bias_gqa),
        cmocka_unit_test(test_tiny_blocks_mqa),
        cmocka_unit_test(test_tiny_llama3),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_reference_logits),
        cmocka_unit_test(test_house_deterministic),
        cmocka_unit_test(test_house_batch),
        cmocka_unit_test(test_house_rope_interleaved),
        cmocka_unit_test(test_house_nll),
        cmocka_unit_test(test_checkpoint_source_errors),
        cmocka_unit_test(test_flops),
        cmocka_unit_test(test_house_perplexity_windows),
    };
    return cmocka_run_group_tests(tests, setup_house, teardown_house);
}
