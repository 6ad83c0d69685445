/* The estimator's inputs that are not the machine: the coefficient table,
 * a model's shapes (config.json and safetensors headers, never the
 * weights), and the counts every stage's prediction is made of. */
#include "stages/estimate.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/ggml_types.h"
#include "common/tensor.h"
#include "model/hf_names.h"
#include "model/llama.h"
#include "model/safetensors.h"
#include "model/tokenizer.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The coefficients no first principle gives, each set from how the stage's
 * code works today.  First fitted at main a219119 on 1.1B runs on the
 * 2-core machine of issue #13; the memory formulas were re-derived from the
 * code at main c9a1541 (fetch releasing each tensor's pages, evaluate's
 * batched windows over resident stored bytes, the streaming GGUF package,
 * layer-by-layer calibrate and GPTQ) and checked against the TinyLlama-1.1B
 * measurements taken on a quiet machine at c9a1541, 2 threads: peak RSS of
 * fetch (143 MB), quantize Q4_K_M (191 MB), evaluate Q4_K_M and bf16 ctx 256
 * x 16 windows (1.45 / 2.94 GB) and package GGUF Q4_K_M (67 MB) within 3 %;
 * evaluate's time within ~6 % at a quiet GEMM rate of ~200 GFLOP/s.
 * Re-fitted at the threaded Hessian inverse and the XXH64-checked cache
 * (2026-12-04, quiet machine, 2 threads): fetch, quantize Q4_K_M,
 * evaluate, package, calibrate and GPTQ within 0.96-1.11 of the measured
 * time, peak RSS within 0.88-1.00.
 * After a stage changes, re-measure with bench/estimate/check.sh
 * (bench/estimate/estimate-1b.yaml) and re-fit here; REPLAY=1 re-predicts
 * the last measurements without running anything. */
const qp_est_coef qp_est_coef_default = {
    .base_rss = 10e6,           /* ./qpipe with libgit2, OpenSSL and the recipe (a gate stage: 9 MB) */
    .bytes_per_token = 3.6,     /* llama2 SentencePiece on English prose (Shakespeare: ~3.5) */
    .fetch_resident = 1.0,      /* every page of the tensor being stored is touched, then released */
    /* the key's file digest, then each tensor object's name: 2 passes, the
     * second over mapped pages as they fault in, so slower than the probe's
     * in-cache buffer (1.1B fetch, perf: 3.4 s of SHA-256 against 2.5 s for
     * two passes at the probe's rate) */
    .fetch_sha_passes = 2.7,
    /* forward pass: its products outrun the calibration's GEMM probe (evaluate Q4_K_M at 1.1B: 179
     * vs 152 GFLOP/s), which pays for attention, norms and RoPE around them */
    .gemm_eff = 1.0,
    .weight_cache = 2147483648.0, /* QP_LLAMA_CACHE_DEFAULT (layers + untied lm_head, model/llama.c) */
    /* GPTQ, re-fitted 2026-12-05 on the 1.1B run timed phase by phase
     * (per layer, two runs: Hessian inverse 2.2-2.75 s, updates 1.0-1.8 s,
     * inputs and Hessians 2.5-3.1 s) at a GEMM probe of 290-340 GFLOP/s */
    .gptq_eff = 0.62,           /* the updates are qp_sgemm on column blocks, threaded over rows */
    .hinv_eff = 0.35,           /* f64 (half the f32 rate), threaded, memory-bound at d = 5632 */
    .gptq_inv_flops = 4.0 / 3,  /* Cholesky d³/3 + triangular inverse d³/3 multiply-adds (quant/gptq_hinv.c) */
    .gptq_keeps_q = 1.0,        /* fraction of one layer's f32 quantized weights held (freed per layer) */
    .hessian_eff = 0.33,        /* Σ x xᵀ: an f32 product per window, then added into doubles (memory-bound), and
                                 * H's symmetric copy per site */
    .linear_mbs_per_q4k = 1.0,  /* rtn/gptq code packing is as fast as Q4_K's (both row-wise scans) */
    /* fitted on six 1.1B stages of main run beside other helpers (load 4.8-8.1 on 2 CPUs): evaluate
     * (GEMM) was not slowed at load 5, quantize/package (hashing, zstd) ~2.6-3x at load 7-8 */
    .load_free = 4.0,
};

void qp_est_art_free(qp_est_art *a)
{
    free(a->t);
    a->t = NULL;
    a->n = 0;
}

uint64_t qp_est_art_tensor_bytes(const qp_est_art *a)
{
    uint64_t s = 0;
    for (size_t i = 0; i < a->n; i++)
        s += a->t[i].bytes;
    return s;
}

void qp_est_hparams(qp_llama_hparams *hp, const qp_llama_config *cfg)
{
    qp_llama_hparams_from_config(hp, cfg);
}

static int dense_type_of(qp_dtype d)
{
    switch (d) {
    case QP_DT_F16: return QP_GGML_F16;
    case QP_DT_BF16: return QP_GGML_BF16;
    default: return QP_GGML_F32;
    }
}

static qp_est_tensor *push(qp_est_art *a, size_t *cap)
{
    if (a->n == *cap) {
        *cap = *cap ? *cap * 2 : 64;
        a->t = qp_xrealloc_array(a->t, *cap, sizeof(*a->t));
    }
    qp_est_tensor *t = &a->t[a->n++];
    memset(t, 0, sizeof(*t));
    return t;
}

static void add_dense(qp_est_art *a, size_t *cap, const char *name, int64_t rows, int64_t cols, int ndim, int type)
{
    qp_est_tensor *t = push(a, cap);
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->rows = rows;
    t->cols = cols;
    t->ndim = ndim;
    t->fmt = QP_EST_DENSE;
    t->type = type;
    t->bytes = (uint64_t)(rows * cols) * qp_ggml_type_size((uint32_t)type);
}

void qp_est_art_from_config(qp_est_art *out, const qp_llama_config *cfg, int dtype)
{
    memset(out, 0, sizeof(*out));
    out->type = QP_ART_MODEL;
    out->known = 1;
    out->cfg = *cfg;
    size_t cap = 0;
    int64_t D = cfg->hidden, F = cfg->intermediate, qd = (int64_t)cfg->n_heads * cfg->head_dim;
    int64_t kvd = (int64_t)cfg->n_kv_heads * cfg->head_dim;
    add_dense(out, &cap, QP_HF_EMBED, cfg->vocab, D, 2, dtype);
    for (int l = 0; l < cfg->n_layers; l++) {
        char name[112];
        static const struct { const char *mod; int kind; } mods[] = {
            {QP_HF_ATTN_NORM ".weight", 0}, {QP_HF_Q_PROJ ".weight", 1}, {QP_HF_K_PROJ ".weight", 2},
            {QP_HF_V_PROJ ".weight", 2},    {QP_HF_O_PROJ ".weight", 3}, {QP_HF_FFN_NORM ".weight", 0},
            {QP_HF_GATE_PROJ ".weight", 4}, {QP_HF_UP_PROJ ".weight", 4}, {QP_HF_DOWN_PROJ ".weight", 5},
        };
        for (size_t k = 0; k < sizeof(mods) / sizeof(mods[0]); k++) {
            qp_hf_layer_name(name, sizeof(name), l, mods[k].mod);
            switch (mods[k].kind) {
            case 0: add_dense(out, &cap, name, D, 1, 1, dtype); break;
            case 1: add_dense(out, &cap, name, qd, D, 2, dtype); break;
            case 2: add_dense(out, &cap, name, kvd, D, 2, dtype); break;
            case 3: add_dense(out, &cap, name, D, qd, 2, dtype); break;
            case 4: add_dense(out, &cap, name, F, D, 2, dtype); break;
            default: add_dense(out, &cap, name, D, F, 2, dtype); break;
            }
        }
    }
    add_dense(out, &cap, QP_HF_FINAL_NORM, D, 1, 1, dtype);
    if (!cfg->tied_embeddings)
        add_dense(out, &cap, QP_HF_LM_HEAD, cfg->vocab, D, 2, dtype);
    out->bytes = qp_est_art_tensor_bytes(out);
    out->largest_file = out->bytes;
}

static int is_top_safetensors(const char *name)
{
    size_t n = strlen(name);
    return n > 12 && strcmp(name + n - 12, ".safetensors") == 0;
}

int qp_est_art_from_dir(qp_est_art *out, const char *dir)
{
    memset(out, 0, sizeof(*out));
    char *cfg_path = qp_path_join(dir, "config.json");
    qp_llama_config cfg;
    int rc = qp_llama_config_load(&cfg, cfg_path);
    free(cfg_path);
    if (rc)
        return rc;
    out->type = QP_ART_MODEL;
    out->known = 1;
    out->cfg = cfg;
    DIR *d = opendir(dir);
    if (!d)
        return qp_error_errno(QP_ERROR, "%s: cannot list", dir);
    size_t cap = 0;
    uint64_t other = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char *path = qp_path_join(dir, e->d_name);
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
            free(path);
            continue;
        }
        if (!is_top_safetensors(e->d_name)) {
            other += (uint64_t)st.st_size;
            free(path);
            continue;
        }
        if ((uint64_t)st.st_size > out->largest_file)
            out->largest_file = (uint64_t)st.st_size;
        qp_safetensors *sf = NULL;
        if ((rc = qp_safetensors_open(&sf, path)) == 0) {
            for (size_t i = 0; i < qp_safetensors_count(sf); i++) {
                const qp_tensor_view *v = qp_safetensors_tensor(sf, i);
                uint64_t rest = 1;
                for (int k = 1; k < v->ndim; k++)
                    rest *= v->shape[k];
                qp_est_tensor *t = push(out, &cap);
                snprintf(t->name, sizeof(t->name), "%s", v->name);
                t->ndim = v->ndim;
                t->rows = v->ndim ? (int64_t)v->shape[0] : 1;
                t->cols = (int64_t)rest;
                t->fmt = QP_EST_DENSE;
                t->type = dense_type_of(v->dtype);
                t->bytes = v->nbytes;
            }
        }
        qp_safetensors_free(sf);
        free(path);
    }
    closedir(d);
    if (rc) {
        qp_est_art_free(out);
        return rc;
    }
    if (out->n == 0) {   /* config.json alone: the tensors qp_llama reads, in bf16 */
        qp_est_art_from_config(out, &cfg, QP_GGML_BF16);
        out->largest_file = 0;
    }
    out->bytes = qp_est_art_tensor_bytes(out) + other;
    snprintf(out->dir, sizeof(out->dir), "%s", dir);
    return 0;
}

double qp_est_bytes_per_token(const char *dir, const char *text_path, double *mbs)
{
    if (mbs)
        *mbs = 0;
    size_t n = strlen(text_path);
    if (!dir[0] || (n > 6 && strcmp(text_path + n - 6, ".jsonl") == 0))
        return 0;   /* JSONL: the field's text is not the file's bytes */
    FILE *f = fopen(text_path, "rb");
    if (!f)
        return 0;
    char *buf = qp_xmalloc(65536);
    size_t len = fread(buf, 1, 65536, f);
    fclose(f);
    while (len > 0 && (buf[len - 1] & 0xC0) == 0x80)   /* not inside a UTF-8 sequence */
        len--;
    if (len > 0 && (unsigned char)buf[len - 1] >= 0xC0)
        len--;
    qp_tokenizer *tok = NULL;
    int *ids = NULL;
    size_t m = 0;
    double bpt = 0, t0 = 0;
    if (len >= 1024 && qp_tokenizer_load_dir(&tok, dir) == 0 && (t0 = qp_now()) > 0 &&
        qp_tokenizer_encode(tok, buf, len, 0, &ids, &m) == 0 && m > 0) {
        bpt = (double)len / (double)m;
        double dt = qp_now() - t0;
        if (mbs && dt > 0)
            *mbs = (double)len / 1e6 / dt;
    }
    qp_error_clear();
    free(ids);
    qp_tokenizer_free(tok);
    free(buf);
    return bpt;
}

/* ---- counts ---- */
/* model/llama.c's cache decision: every layer's f32 weights plus an untied
 * lm_head within opts.weight_cache_bytes (QP_LLAMA_CACHE_DEFAULT), or
 * nothing cached. */
int qp_est_llama_cached(const qp_llama_hparams *hp, const qp_est_coef *c)
{
    uint64_t mm = qp_llama_matmul_params(hp), VD = (uint64_t)hp->vocab * (uint64_t)hp->hidden;
    uint64_t layers = mm - VD;   /* matmul params counts lm_head (tied or not) once */
    double bytes = (double)layers * 4 + (hp->tied_embeddings ? 0 : (double)VD * 4);
    return bytes <= c->weight_cache;
}

uint64_t qp_est_llama_resident(const qp_llama_hparams *hp, const qp_est_coef *c)
{
    uint64_t mm = qp_llama_matmul_params(hp), VD = (uint64_t)hp->vocab * (uint64_t)hp->hidden;
    uint64_t D = (uint64_t)hp->hidden, F = (uint64_t)hp->intermediate;
    uint64_t qd = (uint64_t)hp->n_heads * (uint64_t)hp->head_dim, kvd = (uint64_t)hp->n_kv_heads * hp->head_dim;
    uint64_t layers = mm - VD;
    uint64_t norms = ((uint64_t)hp->n_layers * 2 + 1) * D * 4;
    if (qp_est_llama_cached(hp, c))   /* every layer, the embedding and an untied lm_head in f32 */
        return layers * 4 + VD * 4 + (hp->tied_embeddings ? 0 : VD * 4) + norms;
    /* streamed (qp_llama_new): one product group's f32 tile (q+k+v, or the
     * largest of gate/up/down/o), reused by every layer; lm_head (or the
     * tied embedding's copy) in f32 when it is at most
     * QP_LLAMA_HEAD_RESIDENT, else a HEAD_CHUNK_BYTES (32 MiB) chunk */
    uint64_t tile = (qd + 2 * kvd) * D;
    tile = F * D > tile ? F * D : tile;
    tile = D * qd > tile ? D * qd : tile;
    uint64_t head = VD * 4 <= QP_LLAMA_HEAD_RESIDENT ? VD * 4 : (VD * 4 < (32u << 20) ? VD * 4 : (32u << 20));
    return tile * 4 + head + norms;
}

/* stages/model_load.c: the stored bytes (ggml blocks, bf16, ...) a loaded
 * model keeps after their first use.  Nothing once qp_llama cached every
 * layer in f32 (drop_resident); else the tensors outside the layers
 * (embedding, lm_head, final norm: keep_globals) always, and the layer
 * tensors while the total stays under `cap` (0: none, as calibrate and the
 * quantize methods open it; a third of RAM for evaluate). */
uint64_t qp_est_stored_resident(const qp_est_art *a, const qp_llama_hparams *hp, const qp_est_coef *c,
                                uint64_t cap, uint64_t *per_use)
{
    uint64_t kept = 0, largest = 0;
    if (per_use)
        *per_use = 0;
    if (qp_est_llama_cached(hp, c))
        return 0;
    for (size_t i = 0; i < a->n; i++)
        if (qp_hf_layer_of(a->t[i].name, NULL) < 0)
            kept += a->t[i].bytes;
    for (size_t i = 0; i < a->n; i++) {
        if (qp_hf_layer_of(a->t[i].name, NULL) < 0)
            continue;
        if (cap && kept + a->t[i].bytes <= cap)
            kept += a->t[i].bytes;
        else if (a->t[i].bytes > largest)
            largest = a->t[i].bytes;   /* read from the cache per use, freed after */
    }
    if (per_use)
        *per_use = largest;
    return kept;
}

double qp_est_gptq_flops(int64_t rows, int64_t cols, const qp_est_coef *c)
{
    double r = (double)rows, d = (double)cols;
    return c->gptq_inv_flops * d * d * d + 2.0 * r * d * d;
}

uint64_t qp_est_eval_windows(uint64_t tokens, uint64_t ctx, uint64_t max_tokens, uint64_t max_chunks)
{
    if (max_tokens && tokens > max_tokens)
        tokens = max_tokens;
    if (ctx == 0)
        return 0;
    /* consecutive windows of ctx tokens, a shorter last one (one of a single token scores nothing) */
    uint64_t w = tokens / ctx + (tokens % ctx > 1);
    if (max_chunks && w > max_chunks)
        w = max_chunks;
    return w;
}

const char *qp_est_dominant(const qp_est_result *r, double *share)
{
    size_t best = 0;
    double total = 0;
    for (size_t i = 0; i < r->n_terms; i++) {
        total += r->terms[i].seconds;
        if (r->terms[i].seconds > r->terms[best].seconds)
            best = i;
    }
    if (share)
        *share = total > 0 && r->n_terms ? r->terms[best].seconds / total : 0;
    return r->n_terms ? r->terms[best].name : "";
}
