/* HF LLaMA / Qwen2 -> GGUF (see gguf_llama.h): tensor names and order, the
 * q/k row permutation (llama only), <arch>.* hyper-parameters in the order
 * convert_hf_to_gguf.py (c392e50) writes them; the tokenizer.* keys are
 * gguf_llama_vocab.c's. */
#include "model/gguf_llama.h"

#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "model/gguf_llama_vocab.h"
#include "model/hf_names.h"
#include "model/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- names ---- */

/* A layer's tensors (qp_gguf_llama_tensors lists their shapes in the same
 * order; the file order comes from sorting). */
static const struct {
    const char *hf, *gguf;
} layer_names[] = {
    { QP_HF_ATTN_NORM ".weight", "attn_norm.weight" },
    { QP_HF_Q_PROJ ".weight", "attn_q.weight" },
    { QP_HF_K_PROJ ".weight", "attn_k.weight" },
    { QP_HF_V_PROJ ".weight", "attn_v.weight" },
    { QP_HF_O_PROJ ".weight", "attn_output.weight" },
    { QP_HF_FFN_NORM ".weight", "ffn_norm.weight" },
    { QP_HF_GATE_PROJ ".weight", "ffn_gate.weight" },
    { QP_HF_UP_PROJ ".weight", "ffn_up.weight" },
    { QP_HF_DOWN_PROJ ".weight", "ffn_down.weight" },
    { QP_HF_Q_PROJ ".bias", "attn_q.bias" },     /* Qwen2 only, after the 9 weights */
    { QP_HF_K_PROJ ".bias", "attn_k.bias" },
    { QP_HF_V_PROJ ".bias", "attn_v.bias" },
};
#define N_LAYER_NAMES (sizeof(layer_names) / sizeof(layer_names[0]))
#define N_WEIGHT_NAMES 9   /* layer_names without the biases */

int qp_gguf_llama_name(char *out, size_t cap, const char *hf)
{
    const char *g = NULL, *rest;
    if (strcmp(hf, QP_HF_EMBED) == 0)
        g = "token_embd.weight";
    else if (strcmp(hf, QP_HF_FINAL_NORM) == 0)
        g = "output_norm.weight";
    else if (strcmp(hf, QP_HF_LM_HEAD) == 0)
        g = "output.weight";
    if (g) {
        snprintf(out, cap, "%s", g);
        return 0;
    }
    int layer = qp_hf_layer_of(hf, &rest);
    if (layer >= 0) {
        for (size_t i = 0; i < N_LAYER_NAMES; i++)
            if (strcmp(rest, layer_names[i].hf) == 0) {
                snprintf(out, cap, "blk.%d.%s", layer, layer_names[i].gguf);
                return 0;
            }
    }
    if (cap)
        out[0] = '\0';
    return qp_error_set(QP_ENOTFOUND, "tensor '%s': no GGUF name for this LLaMA tensor", hf);
}

/* ---- tensor list and order ---- */

static void set_tensor(qp_gguf_llama_tensor *t, const char *hf, int n_dims, uint64_t ne0, uint64_t ne1,
                       int rope_heads)
{
    memset(t, 0, sizeof(*t));
    snprintf(t->hf_name, sizeof(t->hf_name), "%s", hf);
    qp_gguf_llama_name(t->gguf_name, sizeof(t->gguf_name), hf);
    t->n_dims = n_dims;
    t->ne[0] = ne0;
    t->ne[1] = n_dims > 1 ? ne1 : 1;
    t->rope_heads = rope_heads;
}

/* convert_hf_to_gguf: generated tensors (rope_freqs) first — prepare_tensors
 * iterates chain(generate_extra_tensors(), get_tensors()) — then shards in
 * order, safetensors' sorted keys within one */
static int cmp_convert(const void *a, const void *b)
{
    const qp_gguf_llama_tensor *x = a, *y = b;
    if (x->generated != y->generated)
        return x->generated ? -1 : 1;
    if (x->part != y->part)
        return x->part < y->part ? -1 : 1;
    return strcmp(x->hf_name, y->hf_name);
}

/* llama-model-loader's weight_name_comparer: layer ("blk.%d.", -1 for
 * none) first, then the name */
static int cmp_quantize(const void *a, const void *b)
{
    const qp_gguf_llama_tensor *x = a, *y = b;
    int lx = -1, ly = -1;
    sscanf(x->gguf_name, "blk.%d.", &lx);
    sscanf(y->gguf_name, "blk.%d.", &ly);
    if (lx != ly)
        return lx < ly ? -1 : 1;
    return strcmp(x->gguf_name, y->gguf_name);
}

const char *qp_gguf_llama_arch(const qp_llama_config *cfg)
{
    switch (cfg->arch) {
    case QP_ARCH_LLAMA:
    case QP_ARCH_MISTRAL: return "llama";   /* convert registers MistralForCausalLM as LlamaModel */
    case QP_ARCH_QWEN2: return "qwen2";
    default: return NULL;
    }
}

static int check_cfg(const qp_llama_config *cfg)
{
    if (!qp_gguf_llama_arch(cfg))
        return qp_error_set(QP_EUSAGE, "config: architecture '%s' cannot be exported to GGUF (only llama / mistral "
                            "/ qwen2)", qp_arch_name(cfg->arch));
    if (cfg->qkv_bias && cfg->arch != QP_ARCH_QWEN2)
        return qp_error_set(QP_EUSAGE, "config: q/k/v biases cannot be exported to a GGUF 'llama' model");
    /* convert's Qwen2Model writes no rope_freqs: llama.cpp would run the
     * model without the scaling */
    if (cfg->arch == QP_ARCH_QWEN2 && cfg->rope_scaling.kind == QP_ROPE_LLAMA3)
        return qp_error_set(QP_EUSAGE, "config: rope_scaling llama3 cannot be exported to a GGUF 'qwen2' model "
                            "(llama.cpp reads its rope_freqs only for 'llama')");
    if (cfg->vocab <= 0 || cfg->hidden <= 0 || cfg->n_layers <= 0 || cfg->n_heads <= 0 || cfg->n_kv_heads <= 0 ||
        cfg->head_dim <= 0 || cfg->head_dim % 2 || cfg->intermediate <= 0 || cfg->n_heads % cfg->n_kv_heads)
        return qp_error_set(QP_EUSAGE, "config: invalid hyper-parameters for a GGUF export");
    return 0;
}

int qp_gguf_llama_tensors(qp_gguf_llama_tensor **out, size_t *n, const qp_llama_config *cfg,
                          qp_gguf_llama_layout layout, int (*part_of)(void *ud, const char *hf_name),
                          void *part_ud)
{
    int rc;
    *out = NULL;
    *n = 0;
    if ((rc = check_cfg(cfg)) != 0)
        return rc;
    const uint64_t D = (uint64_t)cfg->hidden, V = (uint64_t)cfg->vocab, F = (uint64_t)cfg->intermediate;
    const uint64_t QD = (uint64_t)cfg->n_heads * (uint64_t)cfg->head_dim;
    const uint64_t KVD = (uint64_t)cfg->n_kv_heads * (uint64_t)cfg->head_dim;
    /* LlamaModel permutes q/k rows for ggml's adjacent-pair RoPE; Qwen2Model
     * does not (llama.cpp runs qwen2 with NEOX RoPE, HF's rotate-half) */
    const int permute = cfg->arch != QP_ARCH_QWEN2;
    size_t cap = 4 + N_LAYER_NAMES * (size_t)cfg->n_layers, k = 0;
    qp_gguf_llama_tensor *t = qp_xcalloc(cap, sizeof(*t));
    char hf[96];
    /* shapes in ggml order [in, out] */
    set_tensor(&t[k++], QP_HF_EMBED, 2, D, V, 0);        /* [V, D] */
    set_tensor(&t[k++], QP_HF_FINAL_NORM, 1, D, 1, 0);   /* [D] */
    if (!cfg->tied_embeddings)
        set_tensor(&t[k++], QP_HF_LM_HEAD, 2, D, V, 0);  /* [V, D] */
    for (int l = 0; l < cfg->n_layers; l++) {
        const uint64_t ne[N_LAYER_NAMES][3] = {   /* n_dims, ne0, ne1 of layer_names[j] */
            { 1, D, 1 },                          /* input_layernorm [D] */
            { 2, D, QD },                         /* q_proj [H·hd, D] */
            { 2, D, KVD },                        /* k_proj [KV·hd, D] */
            { 2, D, KVD },                        /* v_proj [KV·hd, D] */
            { 2, QD, D },                         /* o_proj [D, H·hd] */
            { 1, D, 1 },                          /* post_attention_layernorm [D] */
            { 2, D, F },                          /* gate_proj [F, D] */
            { 2, D, F },                          /* up_proj [F, D] */
            { 2, F, D },                          /* down_proj [D, F] */
            { 1, QD, 1 },                         /* q_proj.bias [H·hd] */
            { 1, KVD, 1 },                        /* k_proj.bias [KV·hd] */
            { 1, KVD, 1 },                        /* v_proj.bias [KV·hd] */
        };
        for (int j = 0; j < (int)N_LAYER_NAMES; j++) {
            if (j >= N_WEIGHT_NAMES && !cfg->qkv_bias)
                break;
            qp_hf_layer_name(hf, sizeof(hf), l, layer_names[j].hf);
            int heads = !permute ? 0 : j == 1 ? cfg->n_heads : j == 2 ? cfg->n_kv_heads : 0;
            set_tensor(&t[k++], hf, (int)ne[j][0], ne[j][1], ne[j][2], heads);
        }
    }
    for (size_t i = 0; i < k; i++)
        t[i].part = part_of ? part_of(part_ud, t[i].hf_name) : 0;
    /* LlamaModel.generate_extra_tensors (Qwen2Model has none): Llama 3's
     * per-dimension RoPE divisors [head_dim/2], 1-D so F32 in every file */
    if (permute && cfg->rope_scaling.kind == QP_ROPE_LLAMA3) {
        qp_gguf_llama_tensor *r = &t[k++];
        memset(r, 0, sizeof(*r));
        snprintf(r->gguf_name, sizeof(r->gguf_name), "rope_freqs.weight");
        r->n_dims = 1;
        r->ne[0] = (uint64_t)cfg->head_dim / 2;
        r->ne[1] = 1;
        r->generated = 1;
    }
    qsort(t, k, sizeof(*t), layout == QP_GGUF_LAYOUT_QUANTIZE ? cmp_quantize : cmp_convert);
    *out = t;
    *n = k;
    return 0;
}

int qp_gguf_llama_permute_rows(void *dst, const void *src, int64_t n_rows, size_t row_bytes, int n_head,
                               int to_gguf)
{
    if (n_head <= 0 || n_rows <= 0 || n_rows % (2 * (int64_t)n_head) != 0)
        return qp_error_set(QP_EUSAGE, "q/k permutation: %lld rows do not split into %d heads of even size",
                            (long long)n_rows, n_head);
    const int64_t half = n_rows / n_head / 2;
    uint8_t *d = dst;
    const uint8_t *s = src;
    /* HF row (h, p, j) of [n_head, 2, half] <-> GGUF row (h, j, p) of [n_head, half, 2] */
    for (int64_t h = 0; h < n_head; h++)
        for (int64_t p = 0; p < 2; p++)
            for (int64_t j = 0; j < half; j++) {
                int64_t hf = (h * 2 + p) * half + j, gg = (h * half + j) * 2 + p;
                int64_t from = to_gguf ? hf : gg, to = to_gguf ? gg : hf;
                memcpy(d + (size_t)to * row_bytes, s + (size_t)from * row_bytes, row_bytes);
            }
    return 0;
}

/* ---- export ---- */

typedef struct export_ctx export_ctx;

typedef struct {
    export_ctx *x;
    qp_gguf_llama_tensor t;
    uint32_t type;
} export_tensor;

struct export_ctx {
    const qp_gguf_llama_source *src;
    float *rope_freqs;        /* [head_dim/2] when the file has rope_freqs.weight */
    size_t n_rope_freqs;
    export_tensor *tensors;
    size_t n;
    void *scratch;
    size_t scratch_cap;
};

static void export_free(void *ud)
{
    export_ctx *x = ud;
    free(x->tensors);
    free(x->scratch);
    free(x->rope_freqs);
    free(x);
}

/* The tensor's bytes in GGUF row order: the source's own (q/k rows
 * permuted into dst), never copied when the source can lend them. */
static int export_view(void *ud, const char *name, void *dst, size_t nbytes, const void **data)
{
    export_tensor *et = ud;
    export_ctx *x = et->x;
    int rc;
    if (et->t.generated) {
        if (nbytes != x->n_rope_freqs * sizeof(float))
            return qp_error_set(QP_EUSAGE, "tensor 'rope_freqs.weight': %zu bytes asked, %zu computed", nbytes,
                                x->n_rope_freqs * sizeof(float));
        *data = x->rope_freqs;
        return 0;
    }
    /* q/k: rows arrive in HF order and are permuted from a scratch copy */
    void *into = dst;
    if (et->t.rope_heads) {
        if (nbytes > x->scratch_cap) {
            x->scratch = qp_xrealloc(x->scratch, nbytes);
            x->scratch_cap = nbytes;
        }
        into = x->scratch;
    }
    const void *p = NULL;
    if (x->src->tensor_view) {
        rc = x->src->tensor_view(x->src->ud, &et->t, et->type, into, nbytes, &p);
    } else {
        memset(into, 0, nbytes);   /* a short fill must not leak old bytes */
        rc = x->src->tensor_data(x->src->ud, &et->t, et->type, into, nbytes);
        p = into;
    }
    if (rc)
        return rc;
    if (!et->t.rope_heads) {
        *data = p;
        return 0;
    }
    *data = dst;
    return qp_gguf_llama_permute_rows(dst, p, (int64_t)et->t.ne[1], nbytes / et->t.ne[1], et->t.rope_heads, 1);
}

/* "<arch>.<name>" */
static int add_arch_u32(qp_gguf_writer *w, const char *arch, const char *name, uint32_t v)
{
    char key[96];
    snprintf(key, sizeof(key), "%s.%s", arch, name);
    return qp_gguf_writer_add_u32(w, key, v);
}

static int add_arch_f32(qp_gguf_writer *w, const char *arch, const char *name, float v)
{
    char key[96];
    snprintf(key, sizeof(key), "%s.%s", arch, name);
    return qp_gguf_writer_add_f32(w, key, v);
}

static int add_params(qp_gguf_writer *w, const qp_llama_config *cfg, const qp_gguf_llama_opts *o,
                      uint64_t n_params)
{
    int rc = 0;
    char label[64];
    const char *arch = qp_gguf_llama_arch(cfg);
    /* Model.prepare_metadata / Metadata.set_gguf_meta_model */
    rc |= qp_gguf_writer_add_str(w, "general.architecture", arch);
    rc |= qp_gguf_writer_add_str(w, "general.type", "model");
    if (o->name && *o->name)
        rc |= qp_gguf_writer_add_str(w, "general.name", o->name);
    if (o->size_label)
        snprintf(label, sizeof(label), "%s", o->size_label);
    else
        qp_gguf_llama_size_label(label, sizeof(label), n_params);
    if (*label)
        rc |= qp_gguf_writer_add_str(w, "general.size_label", label);
    /* Model.set_gguf_parameters (Qwen2Model adds nothing for a config
     * without rope_scaling), then LlamaModel's vocab_size and rope dims */
    rc |= add_arch_u32(w, arch, "block_count", (uint32_t)cfg->n_layers);
    rc |= add_arch_u32(w, arch, "context_length", (uint32_t)cfg->max_pos);
    rc |= add_arch_u32(w, arch, "embedding_length", (uint32_t)cfg->hidden);
    rc |= add_arch_u32(w, arch, "feed_forward_length", (uint32_t)cfg->intermediate);
    rc |= add_arch_u32(w, arch, "attention.head_count", (uint32_t)cfg->n_heads);
    rc |= add_arch_u32(w, arch, "attention.head_count_kv", (uint32_t)cfg->n_kv_heads);
    rc |= add_arch_f32(w, arch, "rope.freq_base", cfg->rope_theta);
    rc |= add_arch_f32(w, arch, "attention.layer_norm_rms_epsilon", cfg->rms_eps);
    if (o->head_dim_keys) {
        rc |= add_arch_u32(w, arch, "attention.key_length", (uint32_t)cfg->head_dim);
        rc |= add_arch_u32(w, arch, "attention.value_length", (uint32_t)cfg->head_dim);
    }
    if (o->layout == QP_GGUF_LAYOUT_CONVERT)
        rc |= qp_gguf_writer_add_u32(w, "general.file_type", o->file_type);
    if (cfg->arch != QP_ARCH_QWEN2) {
        rc |= add_arch_u32(w, arch, "vocab_size", (uint32_t)cfg->vocab);
        rc |= add_arch_u32(w, arch, "rope.dimension_count", (uint32_t)cfg->head_dim);
    }
    return rc ? QP_ERROR : 0;
}

/* LlamaModel.set_vocab's keys after the vocabulary ("llama" only; Qwen2Model
 * has its own set_vocab): tokenizer_config.json's add_prefix_space as
 * tokenizer.ggml.add_space_prefix, and add_bos_token false for a vocabulary
 * of 49152 ("granite small models", which SmolLM's LlamaForCausalLM shares;
 * convert fails on a duplicated key when tokenizer_config.json already set
 * add_bos_token, so that case is refused). */
static int add_llama_vocab_extras(qp_gguf_writer *w, const qp_llama_config *cfg, const qp_gguf_llama_opts *o,
                                  const char *path)
{
    int rc = 0;
    if (cfg->arch == QP_ARCH_QWEN2)
        return 0;
    if (o->add_space_prefix >= 0)
        rc |= qp_gguf_writer_add_bool(w, "tokenizer.ggml.add_space_prefix", o->add_space_prefix != 0);
    if (cfg->vocab == 49152) {
        if (o->add_bos >= 0)
            return qp_error_set(QP_EUSAGE, "%s: a llama vocabulary of 49152 with tokenizer_config.json "
                                "add_bos_token: convert_hf_to_gguf.py writes tokenizer.ggml.add_bos_token twice "
                                "and fails; remove add_bos_token", path);
        rc |= qp_gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", 0);
    }
    return rc ? QP_ERROR : 0;
}

int qp_gguf_llama_export_tok_new(qp_gguf_writer **out, const char *path, const qp_llama_config *cfg,
                                 const qp_tokenizer *tok, const char *tok_name, const qp_gguf_llama_source *src,
                                 const qp_gguf_llama_opts *opts)
{
    qp_gguf_writer *w = NULL;
    qp_gguf_llama_tensor *list = NULL;
    size_t n = 0;
    export_ctx *x = NULL;
    int rc;
    *out = NULL;

    if (!src || !src->tensor_data)
        return qp_error_set(QP_EUSAGE, "%s: GGUF export needs a tensor_data callback", path);
    if (!tok)
        return qp_error_set(QP_EUSAGE, "%s: GGUF export needs the model's tokenizer", path);
    if ((rc = qp_gguf_llama_tensors(&list, &n, cfg, opts->layout, src->part_of, src->ud)) != 0) {
        qp_error_prefix("%s", path);
        return rc;
    }
    if ((rc = qp_gguf_writer_new(&w, path)) != 0)
        goto done;
    x = qp_xcalloc(1, sizeof(*x));
    x->tensors = qp_xcalloc(n, sizeof(*x->tensors));
    x->src = src;
    x->n = n;
    qp_gguf_writer_on_free(w, export_free, x);

    /* gguf-py's parameter count (the size label) counts every tensor of the
     * file, rope_freqs included */
    uint64_t n_params = 0;
    for (size_t i = 0; i < n; i++) {
        n_params += list[i].ne[0] * list[i].ne[1];
        if (list[i].generated) {
            x->n_rope_freqs = (size_t)list[i].ne[0];
            x->rope_freqs = qp_xmalloc(x->n_rope_freqs * sizeof(float));
            if ((rc = qp_gguf_llama_rope_factors(x->rope_freqs, cfg->head_dim, cfg->rope_theta, &cfg->rope_scaling,
                                                 opts->rope_orig_ctx > 0 ? opts->rope_orig_ctx : 8192.0)) != 0) {
                qp_error_prefix("%s", path);
                goto done;
            }
        }
    }
    if ((rc = add_params(w, cfg, opts, n_params)) != 0 ||
        (rc = qp_gguf_llama_add_vocab(w, tok, tok_name ? tok_name : "tokenizer", cfg->vocab, opts)) != 0 ||
        (rc = add_llama_vocab_extras(w, cfg, opts, path)) != 0)
        goto done;
    if ((rc = qp_gguf_writer_add_u32(w, "general.quantization_version", 2)) != 0)
        goto done;
    if (opts->layout == QP_GGUF_LAYOUT_QUANTIZE &&
        (rc = qp_gguf_writer_add_u32(w, "general.file_type", opts->file_type)) != 0)
        goto done;

    for (size_t i = 0; i < n; i++) {
        export_tensor *et = &x->tensors[i];
        et->x = x;
        et->t = list[i];
        et->type = QP_GGML_F32;
        if (!et->t.generated && src->tensor_type && (rc = src->tensor_type(src->ud, &et->t, &et->type)) != 0)
            goto done;
        if ((rc = qp_gguf_writer_add_tensor_view(w, et->t.gguf_name, et->type, et->t.n_dims, et->t.ne,
                                                 export_view, et)) != 0)
            goto done;
    }
    *out = w;
    w = NULL;
    rc = 0;
done:
    qp_gguf_writer_abort(w);
    free(list);
    return rc;
}

int qp_gguf_llama_export_new(qp_gguf_writer **out, const char *path, const qp_llama_config *cfg,
                             const char *tokenizer_model, const qp_gguf_llama_source *src,
                             const qp_gguf_llama_opts *opts)
{
    qp_tokenizer *tok = NULL;
    int rc;
    *out = NULL;
    if (!src || !src->tensor_data)
        return qp_error_set(QP_EUSAGE, "%s: GGUF export needs a tensor_data callback", path);
    if ((rc = qp_tokenizer_load_spm(&tok, tokenizer_model)) != 0)
        return rc;
    rc = qp_gguf_llama_export_tok_new(out, path, cfg, tok, tokenizer_model, src, opts);
    qp_tokenizer_free(tok);
    return rc;
}
