#include "stages/model_load.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/buf.h"
#include "common/fsutil.h"
#include "common/hash.h"
#include "model/config.h"
#include "model/hf_names.h"
#include "stages/qtensor.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    char *name;
    float *w;
    uint64_t nelem;
} weight_override;

typedef struct resident_tensor resident_tensor;

struct qp_loaded_model {
    weight_override *overrides;   /* served instead of the artifact's tensors */
    size_t n_overrides;
    const qp_artifact *artifact;
    qp_cache *cache;
    char *what;
    qp_llama_config config;
    qp_tokenizer *tok;
    char tok_digest[QP_HEX_LEN];
    const char *tok_file;         /* "tokenizer.json" or "tokenizer.model", for messages */
    qp_llama *llama;
    resident_tensor *resident;    /* stored bytes kept after first use */
    size_t n_resident, resident_bytes, resident_cap;   /* cap 0: no layer tensor kept */
    int keep_globals;             /* keep the non-layer tensors' bytes whatever the cap */
};

/* Stored bytes kept in memory after their first use (evaluation: read once
 * from the cache, not per batch), up to resident_cap bytes in all; the
 * tensors outside the layers (embedding, lm_head, final norm) always. */
struct resident_tensor {
    char *name;
    void *bytes;
    size_t len;
};

/* An open tensor: an override / whole-decoded f32 copy, or stored bytes
 * addressed by rows. */
typedef struct {
    const float *f32;
    float *own_f32;
    const void *bytes;
    void *own_bytes;
    qp_qtensor_layout lay;
    uint64_t rows, cols;
} tensor_handle;

static int find_override(const qp_loaded_model *m, const char *name)
{
    for (size_t i = 0; i < m->n_overrides; i++)
        if (strcmp(m->overrides[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* The stored bytes of entry e (tensor `name`): the resident copy, or read
 * from the cache (kept when the model is resident and under its cap). */
static int stored_bytes(qp_loaded_model *m, const char *name, const json_t *e, const void **bytes, size_t *len,
                        void **own)
{
    *own = NULL;
    for (size_t i = 0; i < m->n_resident; i++)
        if (strcmp(m->resident[i].name, name) == 0) {
            *bytes = m->resident[i].bytes;
            *len = m->resident[i].len;
            return 0;
        }
    void *buf = NULL;
    int rc = qp_cache_get(m->cache, qp_artifact_entry_digest(e), &buf, len);
    if (rc)
        return rc;
    *bytes = buf;
    /* the embedding and lm_head are read for every batch (calibration and
     * mixed precision call qp_llama_embed per sample): their stored bytes
     * stay even when layers are read per use */
    int global = m->keep_globals && strncmp(name, QP_HF_LAYERS, strlen(QP_HF_LAYERS)) != 0;
    if ((m->resident_cap && m->resident_bytes + *len <= m->resident_cap) || global) {
        m->resident = qp_xrealloc_array(m->resident, m->n_resident + 1, sizeof(*m->resident));
        m->resident[m->n_resident++] = (resident_tensor){qp_xstrdup(name), buf, *len};
        m->resident_bytes += *len;
    } else {
        *own = buf;
    }
    return 0;
}

/* Finds tensor `name`, checks its shape against the config and makes it
 * readable by rows.  Called from the forward pass's thread. */
static int artifact_open(void *ud, const char *name, int ndim, const uint64_t *shape, void **out)
{
    qp_loaded_model *m = ud;
    tensor_handle *h = qp_xcalloc(1, sizeof(*h));
    uint64_t nelem = 1;
    for (int d = 0; d < ndim; d++)
        nelem *= shape[d];
    h->rows = ndim == 2 ? shape[0] : 1;
    h->cols = h->rows ? nelem / h->rows : 0;
    char *entry_name = NULL, *what = NULL;
    size_t len = 0;
    int rc = 0, oi = find_override(m, name);
    if (oi >= 0) {
        if (nelem != m->overrides[oi].nelem)
            rc = qp_error_set(QP_ERROR, "%s: replacement for tensor '%s' has the wrong size", m->what, name);
        h->f32 = m->overrides[oi].w;
        goto done;
    }
    entry_name = qp_strfmt("tensors/%s", name);
    const json_t *e = qp_artifact_find(m->artifact, entry_name);
    if (!e) {
        rc = qp_error_set(QP_EFORMAT, "%s: tensor '%s' is missing (needed by the LLaMA forward pass)", m->what, name);
        goto done;
    }
    const json_t *jshape = json_object_get(e, "shape");
    int same = (int)json_array_size(jshape) == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = (uint64_t)json_integer_value(json_array_get(jshape, (size_t)i)) == shape[i];
    if (!same) {
        char *got = json_dumps(jshape, JSON_COMPACT | JSON_ENCODE_ANY);
        rc = qp_error_set(QP_EFORMAT, "%s: tensor '%s' has shape %s, which does not fit the config", m->what, name,
                          got ? got : "?");
        free(got);
        goto done;
    }
    if ((rc = stored_bytes(m, name, e, &h->bytes, &len, &h->own_bytes)) != 0)
        goto done;
    what = qp_strfmt("%s: tensor '%s'", m->what, name);
    rc = qp_qtensor_layout_of(&h->lay, e, len, what);
    if (rc == 0) {   /* decoded whole: linear, nf4, int8 */
        h->own_f32 = qp_xmalloc((nelem ? nelem : 1) * sizeof(float));
        rc = qp_qtensor_to_f32(e, h->bytes, len, h->own_f32, nelem, what);
        h->f32 = h->own_f32;
        free(h->own_bytes);
        h->own_bytes = NULL;
        h->bytes = NULL;
    }
    rc = rc < 0 ? rc : 0;
done:
    free(entry_name);
    free(what);
    if (rc) {
        free(h->own_f32);
        free(h->own_bytes);
        free(h);
        h = NULL;
    }
    *out = h;
    return rc;
}

/* Rows [row0, row0 + nrows) as f32; pure, so the pool's threads share it. */
static int artifact_rows(void *ud, void *vh, uint64_t row0, uint64_t nrows, float *dst)
{
    const qp_loaded_model *m = ud;
    const tensor_handle *h = vh;
    if (row0 > h->rows || nrows > h->rows - row0)
        return qp_error_set(QP_EUSAGE, "%s: rows %llu..%llu of a tensor of %llu rows", m->what,
                            (unsigned long long)row0, (unsigned long long)(row0 + nrows), (unsigned long long)h->rows);
    if (h->f32) {
        memcpy(dst, h->f32 + row0 * h->cols, (size_t)(nrows * h->cols) * sizeof(float));
        return 0;
    }
    return qp_qtensor_layout_rows(&h->lay, h->bytes, (int64_t)row0, (int64_t)nrows, dst);
}

static void artifact_close(void *ud, void *vh)
{
    (void)ud;
    tensor_handle *h = vh;
    if (!h)
        return;
    free(h->own_f32);
    free(h->own_bytes);
    free(h);
}

/* The whole tensor as f32 (the source's plain interface). */
static int artifact_get_f32(void *ud, const char *name, int ndim, const uint64_t *shape, float *dst)
{
    void *h = NULL;
    int rc = artifact_open(ud, name, ndim, shape, &h);
    if (rc == 0) {
        const tensor_handle *th = h;
        rc = artifact_rows(ud, h, 0, th->rows, dst);
    }
    artifact_close(ud, h);
    return rc;
}

static int read_entry(qp_loaded_model *m, const char *name, void **out, size_t *len)
{
    int rc = qp_artifact_read(m->artifact, m->cache, name, out, len);
    if (rc == QP_ENOTFOUND)
        qp_error_set(QP_EFORMAT, "%s: the model has no %s (a Hugging Face checkpoint directory is expected)",
                     m->what, name + 6);
    return rc;
}

/* The SentencePiece parser reads files: materialise the cached bytes.  The
 * tokenizer digest is tokenizer.model's own object digest (unchanged since
 * before tokenizer.json support: nothing about these models changes). */
static int load_tokenizer_spm(qp_loaded_model *m)
{
    const json_t *e = qp_artifact_find(m->artifact, "files/tokenizer.model");
    void *buf = NULL;
    size_t len = 0;
    char *tmp = NULL, *dir = qp_path_join(qp_cache_dir(m->cache), "tmp");
    int fd = -1;
    int rc = read_entry(m, "files/tokenizer.model", &buf, &len);
    if (rc)
        goto done;
    memcpy(m->tok_digest, qp_artifact_entry_digest(e), QP_HEX_LEN);
    if ((rc = qp_mkdir_p(dir, 0755)) != 0 || (rc = qp_mkstemp_in(dir, "tokenizer", &tmp, &fd)) != 0)
        goto done;
    if (write(fd, buf, len) != (ssize_t)len) {
        rc = qp_error_errno(QP_ERROR, "%s: cannot write", tmp);
        goto done;
    }
    close(fd);
    fd = -1;
    if ((rc = qp_tokenizer_load_spm(&m->tok, tmp)) != 0)
        qp_error_prefix("%s: tokenizer.model", m->what);
done:
    if (fd >= 0)
        close(fd);
    if (tmp)
        unlink(tmp);
    free(tmp);
    free(dir);
    free(buf);
    return rc;
}

/* A Hugging Face tokenizer.json, with the tokenizer_config.json beside it
 * when the artifact has one (it decides BOS/EOS and the chat template).
 * The digest covers both files: sha256 of "NAME DIGEST\n" per file used. */
static int load_tokenizer_hf(qp_loaded_model *m)
{
    static const char *const files[2] = {"files/tokenizer.json", "files/tokenizer_config.json"};
    void *buf[2] = {NULL, NULL};
    size_t len[2] = {0, 0};
    qp_buf ids = QP_BUF_INIT;
    char *name = qp_strfmt("%s: tokenizer.json", m->what);
    int rc = 0;
    for (int i = 0; i < 2 && rc == 0; i++) {
        const json_t *e = qp_artifact_find(m->artifact, files[i]);
        if (!e)
            continue;   /* tokenizer.json is there: the caller looked */
        qp_buf_printf(&ids, "%s %s\n", files[i] + 6, qp_artifact_entry_digest(e));
        rc = qp_artifact_read(m->artifact, m->cache, files[i], &buf[i], &len[i]);
    }
    if (rc == 0) {
        qp_sha256_buf(m->tok_digest, ids.data, ids.len);
        rc = qp_tokenizer_load_hf(&m->tok, buf[0], len[0], buf[1], len[1], name);   /* errors name the file */
    }
    free(name);
    free(buf[0]);
    free(buf[1]);
    qp_buf_free(&ids);
    return rc;
}

/* tokenizer.model (SentencePiece) when the model ships one, else
 * tokenizer.json (byte-level BPE: Llama 3, Qwen2 ...): the order
 * convert_hf_to_gguf tries them in, so a model that ships both (LLaMA 2,
 * Mistral) is evaluated with the tokenizer its GGUF package carries
 * (stages/package_gguf.c) and that `qpipe tokenize DIR` shows
 * (qp_tokenizer_load_dir). */
static int load_tokenizer(qp_loaded_model *m)
{
    if (!qp_artifact_find(m->artifact, "files/tokenizer.model") &&
        qp_artifact_find(m->artifact, "files/tokenizer.json")) {
        m->tok_file = "tokenizer.json";
        return load_tokenizer_hf(m);
    }
    m->tok_file = "tokenizer.model";
    if (!qp_artifact_find(m->artifact, "files/tokenizer.model"))
        return qp_error_set(QP_EFORMAT, "%s: the model has neither tokenizer.json nor tokenizer.model; copy the "
                                        "checkpoint's tokenizer files beside config.json", m->what);
    return load_tokenizer_spm(m);
}

int qp_model_artifact_config(qp_llama_config *out, const qp_artifact *a, qp_cache *cache, const char *what)
{
    void *cfg = NULL;
    size_t len = 0;
    int rc = qp_artifact_read(a, cache, "files/config.json", &cfg, &len);
    if (rc == QP_ENOTFOUND)
        return qp_error_set(QP_EFORMAT, "%s: the model has no config.json (a Hugging Face checkpoint directory is "
                                        "expected)", what);
    if (rc)
        return rc;
    char *name = qp_strfmt("%s: config.json", what);
    rc = qp_llama_config_parse(out, cfg, len, name);
    free(name);
    free(cfg);
    return rc;
}

/* A layer tensor the config does not know: a checkpoint with more layers
 * than num_hidden_layers ran on the first ones without a word (missing and
 * mis-shaped tensors are refused as the forward pass opens them). */
static int check_layer_count(const qp_artifact *a, const qp_llama_config *cfg, const char *what)
{
    for (size_t i = 0; i < qp_artifact_count(a); i++) {
        const char *name = qp_artifact_entry_name(qp_artifact_entry(a, i));
        if (strncmp(name, "tensors/", 8) != 0)
            continue;
        int layer = qp_hf_layer_of(name + 8, NULL);
        if (layer >= cfg->n_layers)
            return qp_error_set(QP_EFORMAT, "%s: tensor '%s' is in layer %d, but config.json's num_hidden_layers is "
                                "%d; the checkpoint and its config do not match", what, name + 8, layer,
                                cfg->n_layers);
    }
    return 0;
}

static void drop_resident(qp_loaded_model *m)
{
    for (size_t i = 0; i < m->n_resident; i++) {
        free(m->resident[i].name);
        free(m->resident[i].bytes);
    }
    free(m->resident);
    m->resident = NULL;
    m->n_resident = m->resident_bytes = m->resident_cap = 0;
    m->keep_globals = 0;
}

/* Stored bytes kept resident at most: a third of physical memory (a Q4_K_M
 * 7B is ~3.9 GB; a bf16 7B's 13.5 GB is then partly re-read per batch). */
size_t qp_loaded_model_resident_cap(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || psize <= 0)
        return (size_t)4 << 30;
    return (size_t)((double)pages * (double)psize / 3.0);
}

static int open_model(qp_loaded_model **out, const qp_artifact *a, qp_cache *cache, int threads, const char *what,
                      int resident)
{
    qp_loaded_model *m = qp_xcalloc(1, sizeof(*m));
    m->resident_cap = resident ? qp_loaded_model_resident_cap() : 0;
    m->keep_globals = 1;
    int rc;
    m->artifact = a;
    m->cache = cache;
    m->what = qp_xstrdup(what);
    if (!(qp_artifact_type_of(a) & (QP_ART_MODEL | QP_ART_QMODEL))) {
        rc = qp_error_set(QP_EUSAGE, "%s: a %s artifact is not a model", what,
                          qp_artifact_type_name(qp_artifact_type_of(a)));
        goto done;
    }
    if ((rc = qp_model_artifact_config(&m->config, a, cache, what)) != 0 ||
        (rc = check_layer_count(a, &m->config, what)) != 0)
        goto done;
    if ((rc = load_tokenizer(m)) != 0)
        goto done;
    if (qp_tokenizer_n_vocab(m->tok) > (size_t)m->config.vocab) {
        rc = qp_error_set(QP_EFORMAT, "%s: %s has %zu pieces but config.json's vocab_size is %d", what, m->tok_file,
                          qp_tokenizer_n_vocab(m->tok), m->config.vocab);
        goto done;
    }
    qp_llama_hparams hp;
    qp_llama_hparams_from_config(&hp, &m->config);
    qp_weight_source src = {.ud = m, .get_f32 = artifact_get_f32, .rope_interleaved = 0, .open = artifact_open,
                            .rows = artifact_rows, .close = artifact_close};
    qp_llama_opts opts;
    qp_llama_opts_init(&opts);
    opts.n_threads = threads;
    rc = qp_llama_new(&m->llama, &hp, &src, &opts);
    if (rc == 0 && qp_llama_weights_cached(m->llama))
        drop_resident(m);   /* everything is f32 in the model now: the stored copy would be a second one */
done:
    if (rc) {
        qp_loaded_model_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

int qp_loaded_model_open(qp_loaded_model **out, const qp_artifact *a, qp_cache *cache, int threads,
                         const char *what)
{
    return open_model(out, a, cache, threads, what, 0);
}

int qp_loaded_model_open_resident(qp_loaded_model **out, const qp_artifact *a, qp_cache *cache, int threads,
                                  const char *what)
{
    return open_model(out, a, cache, threads, what, 1);
}

void qp_loaded_model_free(qp_loaded_model *m)
{
    if (!m)
        return;
    qp_llama_free(m->llama);
    drop_resident(m);
    qp_tokenizer_free(m->tok);
    for (size_t i = 0; i < m->n_overrides; i++) {
        free(m->overrides[i].name);
        free(m->overrides[i].w);
    }
    free(m->overrides);
    free(m->what);
    free(m);
}

qp_llama *qp_loaded_model_llama(qp_loaded_model *m) { return m->llama; }
const qp_tokenizer *qp_loaded_model_tokenizer(const qp_loaded_model *m) { return m->tok; }
const char *qp_loaded_model_tokenizer_digest(const qp_loaded_model *m) { return m->tok_digest; }

/* The override slot of name: the existing one, or a new one with no weights. */
static weight_override *override_slot(qp_loaded_model *m, const char *name)
{
    for (size_t i = 0; i < m->n_overrides; i++)
        if (strcmp(m->overrides[i].name, name) == 0)
            return &m->overrides[i];
    m->overrides = qp_xrealloc_array(m->overrides, m->n_overrides + 1, sizeof(*m->overrides));
    weight_override *o = &m->overrides[m->n_overrides++];
    o->name = qp_xstrdup(name);
    o->w = NULL;
    o->nelem = 0;
    return o;
}

int qp_loaded_model_override(qp_loaded_model *m, const char *name, const float *w, uint64_t nelem)
{
    weight_override *o = override_slot(m, name);
    o->w = qp_xrealloc_array(o->w, nelem, sizeof(float));
    memcpy(o->w, w, nelem * sizeof(float));
    o->nelem = nelem;
    return 0;
}

int qp_loaded_model_override_take(qp_loaded_model *m, const char *name, float **w, uint64_t nelem)
{
    weight_override *o = override_slot(m, name);
    free(o->w);
    o->w = *w;
    o->nelem = nelem;
    *w = NULL;
    return 0;
}

void qp_loaded_model_restore(qp_loaded_model *m, const char *name)
{
    for (size_t i = 0; i < m->n_overrides; i++)
        if (strcmp(m->overrides[i].name, name) == 0) {
            free(m->overrides[i].name);
            free(m->overrides[i].w);
            m->overrides[i] = m->overrides[--m->n_overrides];
            return;
        }
}

int qp_model_artifact_tensor_f32(float **out, int64_t *rows, int64_t *cols, const qp_artifact *a, qp_cache *cache,
                                 const char *hf_name, const char *what)
{
    char *name = qp_strfmt("tensors/%s", hf_name);
    const json_t *e = qp_artifact_find(a, name);
    void *buf = NULL;
    size_t len = 0;
    float *w = NULL;
    int rc;
    if (!e) {
        rc = qp_error_set(QP_EFORMAT, "%s: the model has no tensor '%s'", what, hf_name);
        goto done;
    }
    qp_qtensor_rows_cols(e, rows, cols);
    uint64_t n = qp_qtensor_nelem(e);
    w = qp_xmalloc((n ? n : 1) * sizeof(float));
    char *msg = qp_strfmt("%s: tensor '%s'", what, hf_name);
    if ((rc = qp_cache_get(cache, qp_artifact_entry_digest(e), &buf, &len)) == 0)
        rc = qp_qtensor_to_f32(e, buf, len, w, n, msg);
    if (rc == 0)   /* every caller quantizes it (GPTQ, AWQ, mixed) */
        rc = qp_qtensor_check_finite(w, *rows, *cols, msg);
    free(msg);
done:
    if (rc)
        free(w);
    else
        *out = w;
    free(buf);
    free(name);
    return rc;
}

int qp_calib_samples_load(int32_t **out, int64_t *S, int64_t *T, const qp_stage_ctx *ctx, const qp_artifact *calib,
                          int64_t max_pos, int64_t min_len)
{
    size_t len = 0;
    *out = NULL;
    const json_t *se = qp_artifact_find(calib, "samples");
    if (!se)
        return qp_error_set(QP_EFORMAT, "stage '%s': calibration input '%s' has no samples", ctx->id,
                            ctx->input_ids[1]);
    qp_qtensor_rows_cols(se, S, T);
    int rc = qp_cache_get(ctx->cache, qp_artifact_entry_digest(se), (void **)out, &len);
    if (rc)
        return rc;
    if (len != (size_t)(*S * *T) * sizeof(int32_t) || *T > max_pos || *T < min_len) {
        free(*out);
        *out = NULL;
        return qp_error_set(QP_ECORRUPT, "stage '%s': calibration samples do not fit the model", ctx->id);
    }
    return 0;
}
