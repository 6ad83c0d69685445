/* HF LLaMA -> GGUF (see gguf_llama.h): tensor names and order, the q/k row
 * permutation, llama.* hyper-parameters and tokenizer.ggml.* metadata in the
 * order convert_hf_to_gguf.py (c392e50) writes them. */
#include "model/gguf_llama.h"

#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "model/hf_names.h"
#include "model/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- names ---- */

/* A layer's tensors in convert_hf_to_gguf's order (qp_gguf_llama_tensors
 * lists their shapes in the same order). */
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
};
#define N_LAYER_NAMES (sizeof(layer_names) / sizeof(layer_names[0]))

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

/* convert_hf_to_gguf: shards in order, safetensors' sorted keys within one */
static int cmp_convert(const void *a, const void *b)
{
    const qp_gguf_llama_tensor *x = a, *y = b;
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

static int check_cfg(const qp_llama_config *cfg)
{
    if (cfg->arch != QP_ARCH_LLAMA && cfg->arch != QP_ARCH_MISTRAL)
        return qp_error_set(QP_EUSAGE, "config: architecture '%s' cannot be exported to GGUF (only llama / mistral)",
                            qp_arch_name(cfg->arch));
    if (cfg->qkv_bias)
        return qp_error_set(QP_EUSAGE, "config: q/k/v biases cannot be exported to a GGUF 'llama' model");
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
    size_t cap = 3 + N_LAYER_NAMES * (size_t)cfg->n_layers, k = 0;
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
        };
        for (int j = 0; j < (int)N_LAYER_NAMES; j++) {
            qp_hf_layer_name(hf, sizeof(hf), l, layer_names[j].hf);
            int heads = j == 1 ? cfg->n_heads : j == 2 ? cfg->n_kv_heads : 0;
            set_tensor(&t[k++], hf, (int)ne[j][0], ne[j][1], ne[j][2], heads);
        }
    }
    for (size_t i = 0; i < k; i++)
        t[i].part = part_of ? part_of(part_ud, t[i].hf_name) : 0;
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

/* ---- vocabulary (convert's _create_vocab_sentencepiece) ---- */

typedef struct {
    size_t n;
    char **tokens;
    float *scores;
    int32_t *types;
} vocab;

static void vocab_free(vocab *v)
{
    if (v->tokens)
        for (size_t i = 0; i < v->n; i++)
            free(v->tokens[i]);
    free(v->tokens);
    free(v->scores);
    free(v->types);
}

/* SentencePiece's own numbering: IsUnknown / IsControl / IsUnused / IsByte
 * are tested, everything else (user-defined pieces too) is NORMAL. */
static int32_t convert_type(int t)
{
    switch (t) {
    case QP_TOK_UNKNOWN: return 2;
    case QP_TOK_CONTROL: return 3;
    case QP_TOK_UNUSED: return 5;
    case QP_TOK_BYTE: return 6;
    default: return 1;
    }
}

/* Model.does_token_look_special */
static int looks_special(const char *s)
{
    size_t n = strlen(s);
    if (strcmp(s, "<pad>") == 0 || strcmp(s, "<mask>") == 0 || strcmp(s, "<2mass>") == 0 ||
        strcmp(s, "[@BOS@]") == 0)
        return 1;
    if (n >= 4 && strncmp(s, "<|", 2) == 0 && strcmp(s + n - 2, "|>") == 0)
        return 1;
    /* "<｜" ... "｜>" (U+FF5C, deepseek-coder) */
    if (n >= 8 && strncmp(s, "<\xef\xbd\x9c", 4) == 0 && strcmp(s + n - 4, "\xef\xbd\x9c>") == 0)
        return 1;
    return n >= 8 && strncmp(s, "<unused", 7) == 0 && s[n - 1] == '>';
}

/* "▁" -> " " (pre-normalised user-defined spaces) */
static char *unspace(const char *s)
{
    char *r = qp_strdup(s), *o = r;
    for (const char *p = s; *p;) {
        if (strncmp(p, "\xe2\x96\x81", 3) == 0) {
            *o++ = ' ';
            p += 3;
        } else {
            *o++ = *p++;
        }
    }
    *o = '\0';
    return r;
}

static int build_vocab(vocab *v, const char *path, int n_vocab, const qp_gguf_llama_opts *o)
{
    qp_tokenizer *tok = NULL;
    int rc;
    memset(v, 0, sizeof(*v));
    if ((rc = qp_tokenizer_load_spm(&tok, path)) != 0)
        return rc;
    size_t n_spm = qp_tokenizer_n_vocab(tok);
    if (n_spm > (size_t)n_vocab) {
        rc = qp_error_set(QP_EFORMAT, "%s: %zu pieces, more than the config's vocab_size %d", path, n_spm,
                          n_vocab);
        goto done;
    }
    v->n = (size_t)n_vocab;
    v->tokens = qp_xcalloc(v->n, sizeof(*v->tokens));
    v->scores = qp_xmalloc(v->n * sizeof(*v->scores));
    v->types = qp_xmalloc(v->n * sizeof(*v->types));
    for (size_t i = 0; i < v->n; i++) {
        if (i < n_spm) {
            v->tokens[i] = qp_strdup(qp_tokenizer_piece(tok, (int)i));
            v->scores[i] = qp_tokenizer_score(tok, (int)i);
            v->types[i] = convert_type(qp_tokenizer_type(tok, (int)i));
        } else {
            /* ids the tokenizer does not have */
            v->tokens[i] = qp_strfmt("[PAD%zu]", i);
            v->scores[i] = -10000.0f;
            v->types[i] = 5;
        }
    }
    for (size_t i = 0; i < o->n_added_json; i++) {
        const qp_gguf_added_token *a = &o->added_json[i];
        if (a->id < 0 || (size_t)a->id >= v->n)
            continue;   /* convert warns and ignores it */
        free(v->tokens[a->id]);
        v->tokens[a->id] = qp_strdup(a->content);
        v->scores[a->id] = -1000.0f;
        v->types[a->id] = 4;
    }
    for (size_t i = 0; i < o->n_added_decoder; i++) {
        const qp_gguf_added_token *a = &o->added_decoder[i];
        if (a->id < 0 || (size_t)a->id >= v->n) {
            rc = qp_error_set(QP_EFORMAT, "added token %d ('%s') is outside the vocabulary of %zu", a->id,
                              a->content, v->n);
            goto done;
        }
        free(v->tokens[a->id]);
        if (a->special || looks_special(a->content)) {
            v->tokens[a->id] = qp_strdup(a->content);
            v->types[a->id] = 3;
        } else {
            v->tokens[a->id] = unspace(a->content);
            v->types[a->id] = 4;
        }
        v->scores[a->id] = -1000.0f;
    }
    rc = 0;
done:
    qp_tokenizer_free(tok);
    if (rc != 0)
        vocab_free(v);
    return rc;
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
    free(x);
}

static int export_fill(void *ud, const char *name, void *dst, size_t nbytes)
{
    export_tensor *et = ud;
    export_ctx *x = et->x;
    int rc;
    if (!et->t.rope_heads)
        return x->src->tensor_data(x->src->ud, &et->t, et->type, dst, nbytes);
    /* q/k: rows arrive in HF order, are stored in GGUF's */
    if (nbytes > x->scratch_cap) {
        x->scratch = qp_xrealloc(x->scratch, nbytes);
        x->scratch_cap = nbytes;
    }
    memset(x->scratch, 0, nbytes);
    if ((rc = x->src->tensor_data(x->src->ud, &et->t, et->type, x->scratch, nbytes)) != 0)
        return rc;
    return qp_gguf_llama_permute_rows(dst, x->scratch, (int64_t)et->t.ne[1], nbytes / et->t.ne[1],
                                      et->t.rope_heads, 1);
}

static int add_params(qp_gguf_writer *w, const qp_llama_config *cfg, const qp_gguf_llama_opts *o,
                      uint64_t n_params)
{
    int rc = 0;
    char label[64];
    /* Model.prepare_metadata / Metadata.set_gguf_meta_model */
    rc |= qp_gguf_writer_add_str(w, "general.architecture", "llama");
    rc |= qp_gguf_writer_add_str(w, "general.type", "model");
    if (o->name && *o->name)
        rc |= qp_gguf_writer_add_str(w, "general.name", o->name);
    if (o->size_label)
        snprintf(label, sizeof(label), "%s", o->size_label);
    else
        qp_gguf_llama_size_label(label, sizeof(label), n_params);
    if (*label)
        rc |= qp_gguf_writer_add_str(w, "general.size_label", label);
    /* Model.set_gguf_parameters, then LlamaModel's */
    rc |= qp_gguf_writer_add_u32(w, "llama.block_count", (uint32_t)cfg->n_layers);
    rc |= qp_gguf_writer_add_u32(w, "llama.context_length", (uint32_t)cfg->max_pos);
    rc |= qp_gguf_writer_add_u32(w, "llama.embedding_length", (uint32_t)cfg->hidden);
    rc |= qp_gguf_writer_add_u32(w, "llama.feed_forward_length", (uint32_t)cfg->intermediate);
    rc |= qp_gguf_writer_add_u32(w, "llama.attention.head_count", (uint32_t)cfg->n_heads);
    rc |= qp_gguf_writer_add_u32(w, "llama.attention.head_count_kv", (uint32_t)cfg->n_kv_heads);
    rc |= qp_gguf_writer_add_f32(w, "llama.rope.freq_base", cfg->rope_theta);
    rc |= qp_gguf_writer_add_f32(w, "llama.attention.layer_norm_rms_epsilon", cfg->rms_eps);
    if (o->head_dim_keys) {
        rc |= qp_gguf_writer_add_u32(w, "llama.attention.key_length", (uint32_t)cfg->head_dim);
        rc |= qp_gguf_writer_add_u32(w, "llama.attention.value_length", (uint32_t)cfg->head_dim);
    }
    if (o->layout == QP_GGUF_LAYOUT_CONVERT)
        rc |= qp_gguf_writer_add_u32(w, "general.file_type", o->file_type);
    rc |= qp_gguf_writer_add_u32(w, "llama.vocab_size", (uint32_t)cfg->vocab);
    rc |= qp_gguf_writer_add_u32(w, "llama.rope.dimension_count", (uint32_t)cfg->head_dim);
    return rc ? QP_ERROR : 0;
}

static int add_tokenizer(qp_gguf_writer *w, const vocab *v, const qp_gguf_llama_opts *o)
{
    static const char *const id_keys[QP_SPECIAL_COUNT] = {
        "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.seperator_token_id", "tokenizer.ggml.padding_token_id", "tokenizer.ggml.cls_token_id",
        "tokenizer.ggml.mask_token_id",
    };
    int rc = 0;
    rc |= qp_gguf_writer_add_str(w, "tokenizer.ggml.model", "llama");
    rc |= qp_gguf_writer_add_str(w, "tokenizer.ggml.pre", "default");
    rc |= qp_gguf_writer_add_string_array(w, "tokenizer.ggml.tokens", (const char *const *)v->tokens, NULL, v->n);
    rc |= qp_gguf_writer_add_scalar_array(w, "tokenizer.ggml.scores", QP_GGUF_F32, v->scores, v->n);
    rc |= qp_gguf_writer_add_scalar_array(w, "tokenizer.ggml.token_type", QP_GGUF_I32, v->types, v->n);
    /* SpecialVocab.add_to_gguf */
    for (int i = 0; i < o->n_special; i++)
        rc |= qp_gguf_writer_add_u32(w, id_keys[o->special[i].typ], (uint32_t)o->special[i].id);
    if (o->add_bos >= 0)
        rc |= qp_gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", o->add_bos != 0);
    if (o->add_eos >= 0)
        rc |= qp_gguf_writer_add_bool(w, "tokenizer.ggml.add_eos_token", o->add_eos != 0);
    if (o->chat_template)
        rc |= qp_gguf_writer_add_str(w, "tokenizer.chat_template", o->chat_template);
    return rc ? QP_ERROR : 0;
}

int qp_gguf_llama_export_new(qp_gguf_writer **out, const char *path, const qp_llama_config *cfg,
                             const char *tokenizer_model, const qp_gguf_llama_source *src,
                             const qp_gguf_llama_opts *opts)
{
    qp_gguf_writer *w = NULL;
    qp_gguf_llama_tensor *list = NULL;
    size_t n = 0;
    vocab v = { 0 };
    export_ctx *x = NULL;
    int rc;
    *out = NULL;

    if (!src || !src->tensor_data)
        return qp_error_set(QP_EUSAGE, "%s: GGUF export needs a tensor_data callback", path);
    if ((rc = qp_gguf_llama_tensors(&list, &n, cfg, opts->layout, src->part_of, src->ud)) != 0) {
        qp_error_prefix("%s", path);
        return rc;
    }
    if ((rc = build_vocab(&v, tokenizer_model, cfg->vocab, opts)) != 0)
        goto done;
    if ((rc = qp_gguf_writer_new(&w, path)) != 0)
        goto done;
    x = qp_xcalloc(1, sizeof(*x));
    x->tensors = qp_xcalloc(n, sizeof(*x->tensors));
    x->src = src;
    x->n = n;
    qp_gguf_writer_on_free(w, export_free, x);

    uint64_t n_params = 0;
    for (size_t i = 0; i < n; i++)
        n_params += list[i].ne[0] * list[i].ne[1];
    if ((rc = add_params(w, cfg, opts, n_params)) != 0 || (rc = add_tokenizer(w, &v, opts)) != 0)
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
        if (src->tensor_type && (rc = src->tensor_type(src->ud, &et->t, &et->type)) != 0)
            goto done;
        if ((rc = qp_gguf_writer_add_tensor_cb(w, et->t.gguf_name, et->type, et->t.n_dims, et->t.ne, export_fill,
                                               et)) != 0)
            goto done;
    }
    *out = w;
    w = NULL;
    rc = 0;
done:
    qp_gguf_writer_abort(w);
    vocab_free(&v);
    free(list);
    return rc;
}
