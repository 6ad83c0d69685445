/* HF Llama 3.2-style -> GGUF export (model/gguf_llama.c, gguf_llama_rope.c):
 * a synthetic checkpoint written here (LlamaForCausalLM, rope_scaling
 * llama3 factor 32 / low 1 / high 4 / original 8192, θ 500000, head_dim 64,
 * tied embeddings, byte-level BPE tokenizer.json with Llama 3's
 * pre-tokenizer regex and <|begin_of_text|> as BOS) exported in
 * convert_hf_to_gguf's and llama-quantize's layouts.  rope_freqs.weight is
 * checked against convert's script re-derived here operation by operation;
 * keys, tensor order and types, and the read-back through model/gguf.c and
 * the GGUF tokenizer.  Also Mistral (GGUF "llama") and the helpers' errors. */
#include "tests/support/gguf_src.h"
#include "tests/support/testutil.h"

#include "common/error.h"
#include "common/fsutil.h"
#include "common/rng.h"
#include "model/config.h"
#include "model/gguf.h"
#include "model/gguf_llama.h"
#include "model/gguf_writer.h"
#include "model/safetensors.h"
#include "model/tokenizer.h"
#include "quant/ggml_mix.h"
#include "quant/qtypes.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------- convert's rope_freqs, re-derived ---------- */

/* PyTorch's float32 tensor ⊙ Python number: the number becomes float32
 * (it does not promote the tensor) and the operation rounds once in float32.
 * A number divided BY a tensor is Tensor.__rtruediv__: reciprocal, then
 * multiply. */
static float t_mul_num(float t, double n) { return t * (float)n; }
static float t_div_num(float t, double n) { return t / (float)n; }
static float t_sub_num(float t, double n) { return t - (float)n; }
static float num_sub_t(double n, float t) { return (float)n - t; }
static float num_div_t(double n, float t) { return t_mul_num(1.0f / t, n); }
/* number ** tensor: torch.pow(float32(number), t); the correctly rounded
 * float32 power (see gguf_llama_rope.c on powf / SLEEF) */
static float num_pow_t(double n, float t) { return (float)pow((double)(float)n, (double)t); }

/* LlamaModel.generate_extra_tensors with Python values base (rope_theta),
 * dim (head_dim), factor, low_freq_factor, high_freq_factor,
 * old_context_len. */
static void convert_rope_freqs(float *out, double base, int dim, double factor, double low_freq_factor,
                               double high_freq_factor, double old_context_len)
{
    int n = dim / 2;
    float *freqs = malloc((size_t)n * sizeof(float));
    for (int k = 0; k < n; k++) {
        float ar = (float)(2 * k);                           /* torch.arange(0, dim, 2, dtype=float32) */
        freqs[k] = num_div_t(1.0, num_pow_t(base, t_div_num(ar, dim)));
    }
    double low_freq_wavelen = old_context_len / low_freq_factor;    /* Python floats */
    double high_freq_wavelen = old_context_len / high_freq_factor;
    for (int k = 0; k < n; k++) {
        float wavelen = num_div_t(2 * M_PI, freqs[k]);
        if (wavelen < (float)high_freq_wavelen) {
            out[k] = (float)1;
        } else if (wavelen > (float)low_freq_wavelen) {
            out[k] = (float)factor;
        } else {
            float smooth = t_div_num(t_sub_num(num_div_t(old_context_len, wavelen), low_freq_factor),
                                     high_freq_factor - low_freq_factor);
            out[k] = num_div_t(1, t_div_num(num_sub_t(1, smooth), factor) + smooth);
        }
    }
    free(freqs);
}

static void check_factors(int head_dim, float theta, double factor, double low, double high, double old)
{
    qp_rope_scaling s = {.kind = QP_ROPE_LLAMA3, .factor = factor, .low_freq_factor = low,
                         .high_freq_factor = high, .original_max_pos = 8192};
    int n = head_dim / 2, n_one = 0, n_factor = 0, n_mid = 0;
    float *got = malloc((size_t)n * sizeof(float)), *want = malloc((size_t)n * sizeof(float));
    assert_int_equal(qp_gguf_llama_rope_factors(got, head_dim, theta, &s, old), 0);
    convert_rope_freqs(want, theta, head_dim, factor, low, high, old);
    for (int i = 0; i < n; i++) {
        if (memcmp(&got[i], &want[i], sizeof(float)) != 0)
            fprintf(stderr, "head_dim %d: factor %d: %.9g, convert %.9g\n", head_dim, i, got[i], want[i]);
        assert_memory_equal(&got[i], &want[i], sizeof(float));
        /* 1 for the fast dimensions, factor for the slow ones, between in the band, non-decreasing */
        n_one += got[i] == 1.0f;
        n_factor += got[i] == (float)factor;
        n_mid += got[i] > 1.0f && got[i] < (float)factor;
        assert_true(got[i] >= 1.0f && got[i] <= (float)factor);
        if (i > 0)
            assert_true(got[i] >= got[i - 1]);
    }
    assert_true(n_one > 0 && n_factor > 0 && n_mid > 0);
    free(got);
    free(want);
}

static void test_rope_factors(void **state)
{
    (void)state;
    check_factors(64, 500000.0f, 32.0, 1.0, 4.0, 8192.0);    /* Llama 3.2 1B / 3B */
    check_factors(128, 500000.0f, 8.0, 1.0, 4.0, 8192.0);    /* Llama 3.1 8B / 70B / 405B */
    check_factors(16, 500000.0f, 32.0, 1.0, 4.0, 8192.0);
    check_factors(96, 10000.0f, 4.0, 1.0, 2.5, 2048.0);      /* unusual numbers: float32 conversions matter */

    /* the band: Llama 3.2's head_dim 64 has dimensions 15..17 in it */
    qp_rope_scaling s = {.kind = QP_ROPE_LLAMA3, .factor = 32, .low_freq_factor = 1, .high_freq_factor = 4,
                         .original_max_pos = 8192};
    float f[32];
    assert_int_equal(qp_gguf_llama_rope_factors(f, 64, 500000.0f, &s, 8192), 0);
    assert_true(f[14] == 1.0f);
    assert_true(f[15] > 1.0f && f[17] < 32.0f);
    assert_true(f[18] == 32.0f);

    /* errors */
    assert_int_equal(qp_gguf_llama_rope_factors(f, 63, 500000.0f, &s, 8192), QP_EUSAGE);
    s.kind = QP_ROPE_PLAIN;
    assert_int_equal(qp_gguf_llama_rope_factors(f, 64, 500000.0f, &s, 8192), QP_EUSAGE);
}

/* ---------- a synthetic Llama 3.2-style checkpoint ---------- */

enum { D = 256, L = 2, H = 4, KV = 2, HD = 64, F = 512, V = 2049, BOS = 2048, EOT = 2045 };

static const char *const LLAMA3_REGEX =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static void dump_json(json_t *j, const char *dir, const char *file)
{
    char *path = qp_path_join(dir, file);
    assert_int_equal(json_dump_file(j, path, JSON_INDENT(1)), 0);
    free(path);
}

/* tokenizer.json / tokenizer_config.json: house-qwen's byte-level BPE with
 * Llama 3's shape (no normalizer, Llama 3's split regex, ignore_merges) and
 * <|begin_of_text|> added as id 2048, the BOS, with add_bos_token true. */
static void write_tokenizer(const char *dir)
{
    char *qwen = qp_test_shared_path("models/house-qwen");
    char *p = qp_path_join(qwen, "tokenizer.json");
    json_error_t err;
    json_t *tok = json_load_file(p, 0, &err);
    assert_non_null(tok);
    free(p);
    json_object_set_new(tok, "normalizer", json_null());
    json_t *split = json_array_get(json_object_get(json_object_get(tok, "pre_tokenizer"), "pretokenizers"), 0);
    assert_non_null(split);
    json_object_set_new(json_object_get(split, "pattern"), "Regex", json_string(LLAMA3_REGEX));
    json_object_set_new(json_object_get(tok, "model"), "ignore_merges", json_true());
    json_array_append_new(json_object_get(tok, "added_tokens"),
                          json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", BOS, "content", "<|begin_of_text|>",
                                    "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0, "special", 1));
    dump_json(tok, dir, "tokenizer.json");
    json_decref(tok);

    p = qp_path_join(qwen, "tokenizer_config.json");
    json_t *tc = json_load_file(p, 0, &err);
    assert_non_null(tc);
    free(p);
    json_object_set_new(tc, "bos_token", json_string("<|begin_of_text|>"));
    json_object_set_new(tc, "add_bos_token", json_true());
    json_object_set_new(json_object_get(tc, "added_tokens_decoder"), "2048",
                        json_pack("{s:s, s:b, s:b, s:b, s:b, s:b}", "content", "<|begin_of_text|>", "lstrip", 0,
                                  "normalized", 0, "rstrip", 0, "single_word", 0, "special", 1));
    json_object_set_new(tc, "tokenizer_class", json_string("PreTrainedTokenizerFast"));
    dump_json(tc, dir, "tokenizer_config.json");
    json_decref(tc);
    free(qwen);
}

static float rnd(qp_rng *r)
{
    return ((float)(qp_rng_next(r) >> 40) / 16777216.0f - 0.5f) * 0.25f;   /* [-0.125, 0.125) */
}

static void add_tensor(qp_st_writer *w, qp_rng *r, const char *name, uint64_t rows, uint64_t cols, int norm)
{
    uint64_t shape[2] = { rows, cols };
    size_t n = (size_t)(rows * cols);
    float *f = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        f[i] = norm ? 1.0f + rnd(r) : rnd(r);
    assert_int_equal(qp_st_writer_add(w, name, QP_DT_F32, cols > 1 ? 2 : 1, shape, f, n * sizeof(float)), 0);
    free(f);
}

/* arch: "LlamaForCausalLM" (with llama3 rope_scaling and tied embeddings) or
 * "MistralForCausalLM" (plain RoPE, lm_head); extra_top: a top-level
 * original_max_position_embeddings when > 0. */
static char *write_model(const char *parent, const char *name, const char *arch, int extra_top)
{
    char *dir = qp_path_join(parent, name);
    assert_int_equal(qp_mkdir_p(dir, 0755), 0);
    int llama3 = strcmp(arch, "LlamaForCausalLM") == 0;
    json_t *c = json_pack("{s:[s], s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:i, s:b, s:i, s:i, s:s, "
                          "s:b, s:b, s:s}",
                          "architectures", arch, "model_type", llama3 ? "llama" : "mistral", "hidden_size", D,
                          "intermediate_size", F, "num_attention_heads", H, "num_key_value_heads", KV,
                          "head_dim", HD, "num_hidden_layers", L, "vocab_size", V, "rms_norm_eps", 1e-5,
                          "rope_theta", llama3 ? 500000.0 : 1000000.0, "max_position_embeddings",
                          llama3 ? 131072 : 32768, "tie_word_embeddings", llama3, "bos_token_id", BOS,
                          "eos_token_id", EOT, "hidden_act", "silu", "attention_bias", 0, "mlp_bias", 0,
                          "torch_dtype", "float32");
    if (llama3)
        json_object_set_new(c, "rope_scaling",
                            json_pack("{s:f, s:f, s:f, s:i, s:s}", "factor", 32.0, "low_freq_factor", 1.0,
                                      "high_freq_factor", 4.0, "original_max_position_embeddings", 8192,
                                      "rope_type", "llama3"));
    else
        json_object_set_new(c, "sliding_window", json_null());
    if (extra_top > 0)
        json_object_set_new(c, "original_max_position_embeddings", json_integer(extra_top));
    dump_json(c, dir, "config.json");
    json_decref(c);
    write_tokenizer(dir);

    qp_rng r;
    qp_rng_seed(&r, llama3 ? 0x11a3a3ULL : 0x3157ULL);
    qp_st_writer *w;
    char *st = qp_path_join(dir, "model.safetensors");
    assert_int_equal(qp_st_writer_new(&w, st), 0);
    add_tensor(w, &r, "model.embed_tokens.weight", V, D, 0);
    if (!llama3)
        add_tensor(w, &r, "lm_head.weight", V, D, 0);
    add_tensor(w, &r, "model.norm.weight", D, 1, 1);
    for (int l = 0; l < L; l++) {
        static const struct { const char *n; uint64_t rows, cols; int norm; } t[] = {
            { "input_layernorm.weight", D, 1, 1 },
            { "self_attn.q_proj.weight", H * HD, D, 0 },
            { "self_attn.k_proj.weight", KV * HD, D, 0 },
            { "self_attn.v_proj.weight", KV * HD, D, 0 },
            { "self_attn.o_proj.weight", D, H * HD, 0 },
            { "post_attention_layernorm.weight", D, 1, 1 },
            { "mlp.gate_proj.weight", F, D, 0 },
            { "mlp.up_proj.weight", F, D, 0 },
            { "mlp.down_proj.weight", D, F, 0 },
        };
        for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
            char nm[96];
            snprintf(nm, sizeof(nm), "model.layers.%d.%s", l, t[i].n);
            add_tensor(w, &r, nm, t[i].rows, t[i].cols, t[i].norm);
        }
    }
    assert_int_equal(qp_st_writer_finish(w), 0);
    free(st);
    return dir;
}

/* ---------- export ---------- */

typedef struct {
    char *tmp, *dir;
    qp_llama_config cfg;
    qp_tokenizer *tok;
    char *tok_name;
    qp_test_gguf_src s;
    qp_gguf_llama_source src;   /* over s */
} model;

static void model_open(model *m, const char *arch, int extra_top)
{
    memset(m, 0, sizeof(*m));
    m->tmp = qp_test_tmpdir();
    m->dir = write_model(m->tmp, "tiny-llama", arch, extra_top);
    char *cfg = qp_path_join(m->dir, "config.json");
    int rc = qp_llama_config_load(&m->cfg, cfg);
    if (rc)
        fprintf(stderr, "%s\n", qp_error_last());
    assert_int_equal(rc, 0);
    free(cfg);
    rc = qp_tokenizer_load_dir(&m->tok, m->dir);
    if (rc)
        fprintf(stderr, "%s\n", qp_error_last());
    assert_int_equal(rc, 0);
    m->tok_name = qp_path_join(m->dir, "tokenizer.json");
    qp_test_gguf_src_open(&m->s, &m->src, m->dir, &m->cfg);
}

static void model_close(model *m)
{
    qp_test_gguf_src_close(&m->s);
    qp_tokenizer_free(m->tok);
    free(m->tok_name);
    qp_test_rmtree(m->tmp);
    free(m->dir);
    free(m->tmp);
}

/* Exports to path with the layout and ftype (-1: F32, CONVERT). */
static void export(model *m, const char *path, int ftype, int pure)
{
    qp_gguf_llama_opts o;
    qp_gguf_writer *w;
    m->s.ftype = ftype;
    m->s.mix.pure = pure;
    m->s.data_calls = 0;
    assert_int_equal(qp_gguf_llama_opts_from_hf_dir(&o, &m->cfg, m->dir), 0);
    o.layout = ftype < 0 ? QP_GGUF_LAYOUT_CONVERT : QP_GGUF_LAYOUT_QUANTIZE;
    o.file_type = ftype < 0 ? 0 : (uint32_t)ftype;
    int rc = qp_gguf_llama_export_tok_new(&w, path, &m->cfg, m->tok, m->tok_name, &m->src, &o);
    if (rc)
        fprintf(stderr, "%s\n", qp_error_last());
    assert_int_equal(rc, 0);
    rc = qp_gguf_writer_finish(w);
    if (rc)
        fprintf(stderr, "%s\n", qp_error_last());
    assert_int_equal(rc, 0);
    qp_gguf_llama_opts_free(&o);
}

static void assert_keys(const qp_gguf *g, const char *const *want, size_t n)
{
    for (size_t i = 0; i < n && i < qp_gguf_kv_count(g); i++) {
        if (strcmp(qp_gguf_kv_key(g, i), want[i]) != 0)
            fprintf(stderr, "kv %zu: %s, convert writes %s\n", i, qp_gguf_kv_key(g, i), want[i]);
        assert_string_equal(qp_gguf_kv_key(g, i), want[i]);
    }
    assert_int_equal(qp_gguf_kv_count(g), n);
}

/* convert_hf_to_gguf's key order for LlamaModel with a BPE tokenizer.json:
 * metadata, Model.set_gguf_parameters (head_dim -> key/value_length,
 * file_type), LlamaModel's vocab_size / rope dims, _set_vocab_gpt2 with
 * SpecialVocab (merges, bos, eos, pad, add_bos, chat template), then
 * LlamaModel.set_vocab's add_space_prefix, quantization version. */
static const char *const llama_keys[] = {
    "general.architecture", "general.type", "general.name", "general.size_label",
    "llama.block_count", "llama.context_length", "llama.embedding_length", "llama.feed_forward_length",
    "llama.attention.head_count", "llama.attention.head_count_kv", "llama.rope.freq_base",
    "llama.attention.layer_norm_rms_epsilon", "llama.attention.key_length", "llama.attention.value_length",
    "general.file_type", "llama.vocab_size", "llama.rope.dimension_count",
    "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token", "tokenizer.chat_template",
    "tokenizer.ggml.add_space_prefix", "general.quantization_version",
};
#define N_LLAMA_KEYS (sizeof(llama_keys) / sizeof(llama_keys[0]))

static uint64_t n_params_of(const qp_gguf *g)
{
    uint64_t n = 0;
    for (size_t i = 0; i < qp_gguf_tensor_count(g); i++) {
        const qp_gguf_tensor *t = qp_gguf_tensor_at(g, i);
        uint64_t e = 1;
        for (uint32_t d = 0; d < (uint32_t)t->n_dims; d++)
            e *= t->ne[d];
        n += e;
    }
    return n;
}

/* convert's keys of the tiny Llama 3.2: gpt2 vocabulary with llama-bpe, BOS
 * added, no rope scaling keys, the size label counting rope_freqs */
static void check_convert_keys(const qp_gguf *g)
{
    const char *s;
    uint32_t u;
    bool b;
    assert_int_equal(qp_gguf_get_string(g, "general.architecture", &s, NULL), 0);
    assert_string_equal(s, "llama");
    assert_int_equal(qp_gguf_get_string(g, "general.name", &s, NULL), 0);
    assert_string_equal(s, "Tiny Llama");
    assert_int_equal(qp_gguf_get_string(g, "tokenizer.ggml.model", &s, NULL), 0);
    assert_string_equal(s, "gpt2");
    assert_int_equal(qp_gguf_get_string(g, "tokenizer.ggml.pre", &s, NULL), 0);
    assert_string_equal(s, "llama-bpe");
    assert_int_equal(qp_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &u), 0);
    assert_int_equal(u, BOS);
    assert_int_equal(qp_gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &u), 0);
    assert_int_equal(u, EOT);
    assert_int_equal(qp_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b), 0);
    assert_true(b);
    assert_int_equal(qp_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &b), 0);
    assert_false(b);
    assert_int_equal(qp_gguf_get_u32(g, "llama.rope.dimension_count", &u), 0);
    assert_int_equal(u, HD);
    assert_int_equal(qp_gguf_get_u32(g, "llama.attention.key_length", &u), 0);
    assert_int_equal(u, HD);
    assert_int_equal(qp_gguf_get_u32(g, "llama.context_length", &u), 0);
    assert_int_equal(u, 131072);
    float fb;
    assert_int_equal(qp_gguf_get_f32(g, "llama.rope.freq_base", &fb), 0);
    assert_true(fb == 500000.0f);
    /* no rope scaling keys: convert writes rope.scaling.* only for "linear" */
    assert_null(qp_gguf_find(g, "llama.rope.scaling.type"));
    assert_null(qp_gguf_find(g, "llama.rope.scaling.factor"));
    /* the size label counts rope_freqs too */
    char label[32];
    qp_gguf_llama_size_label(label, sizeof(label), n_params_of(g));
    assert_int_equal(qp_gguf_get_string(g, "general.size_label", &s, NULL), 0);
    assert_string_equal(s, label);
}

/* convert's tensors: rope_freqs first, then the checkpoint's, F32 as stored */
static void check_convert_tensors(const qp_gguf *g, const model *m)
{
    /* tensors: rope_freqs first (generated before the checkpoint's), then
     * the safetensors' sorted names; tied: no output.weight */
    assert_int_equal(qp_gguf_tensor_count(g), 1 + 2 + 9 * L);
    const qp_gguf_tensor *t0 = qp_gguf_tensor_at(g, 0);
    assert_string_equal(t0->name, "rope_freqs.weight");
    assert_string_equal(qp_gguf_tensor_at(g, 1)->name, "token_embd.weight");
    assert_string_equal(qp_gguf_tensor_at(g, 2)->name, "blk.0.attn_norm.weight");
    assert_string_equal(qp_gguf_tensor_at(g, qp_gguf_tensor_count(g) - 1)->name, "output_norm.weight");
    assert_null(qp_gguf_find_tensor(g, "output.weight"));
    assert_int_equal(t0->type, QP_GGML_F32);
    assert_int_equal(t0->n_dims, 1);
    assert_int_equal(t0->ne[0], HD / 2);
    float want[HD / 2];
    convert_rope_freqs(want, 500000.0, HD, 32.0, 1.0, 4.0, 8192.0);
    assert_int_equal(t0->nbytes, sizeof(want));
    assert_memory_equal(t0->data, want, sizeof(want));
    /* weights as stored (F32): token_embd is the checkpoint's */
    const qp_gguf_tensor *te = qp_gguf_find_tensor(g, "token_embd.weight");
    const qp_tensor_view *v = qp_checkpoint_find(m->s.ck, "model.embed_tokens.weight");
    assert_int_equal(te->nbytes, v->nelem * sizeof(float));
    assert_memory_equal(te->data, v->data, te->nbytes);
}

/* the tokenizer library on Llama 3's tokenizer.json */
static void check_llama3_tokenizer(const model *m)
{
    /* the tokenizer library: BOS first, special tokens parsed */
    static const char *const texts[] = {
        "Hello world, it's 12345 apples!", "<|im_start|>user\nhi<|im_end|>",
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        int *a;
        size_t na;
        unsigned fl = QP_TOK_ADD_BOS | QP_TOK_PARSE_SPECIAL;
        assert_int_equal(qp_tokenizer_encode(m->tok, texts[i], strlen(texts[i]), fl, &a, &na), 0);
        assert_true(na > 2);
        assert_int_equal(a[0], BOS);
        if (i == 1)
            assert_int_equal(a[1], 2046);   /* <|im_start|> */
        free(a);
    }
    /* Llama 3's \p{N}{1,3}: "12345" is two pieces' worth at most 3 digits each */
    int *ids;
    size_t n;
    assert_int_equal(qp_tokenizer_encode(m->tok, "12345", 5, 0, &ids, &n), 0);
    size_t digits = 0;
    for (size_t i = 0; i < n; i++)
        digits += strlen(qp_tokenizer_piece(m->tok, ids[i]));
    assert_int_equal(digits, 5);
    assert_true(n >= 2);
    free(ids);
}

static void test_llama3_convert_layout(void **state)
{
    (void)state;
    model m;
    model_open(&m, "LlamaForCausalLM", 0);
    assert_int_equal(m.cfg.rope_scaling.kind, QP_ROPE_LLAMA3);
    assert_int_equal(m.cfg.tied_embeddings, 1);
    /* the tokenizer library: <|begin_of_text|> is the BOS, added by default */
    assert_int_equal(qp_tokenizer_bos(m.tok), BOS);
    assert_true(qp_tokenizer_wants_bos(m.tok));
    assert_string_equal(qp_tokenizer_pre(m.tok), "llama-bpe");

    char *path = qp_path_join(m.tmp, "F32.gguf");
    export(&m, path, -1, 0);
    assert_int_equal(m.s.data_calls, 2 + 9 * L);   /* rope_freqs never asked of the source */

    qp_gguf *g;
    assert_int_equal(qp_gguf_open(&g, path), 0);
    assert_keys(g, llama_keys, N_LLAMA_KEYS);
    check_convert_keys(g);
    check_convert_tensors(g, &m);
    check_llama3_tokenizer(&m);

    /* qpipe's model reader refuses the file by name (rope_freqs is convert's
     * encoding of the scaling; config.c says so) rather than running it
     * without the scaling */
    qp_llama_config back;
    assert_true(qp_llama_config_from_gguf(&back, g) < 0);
    assert_non_null(strstr(qp_error_last(), "rope_freqs.weight"));
    qp_gguf_free(g);
    free(path);
    model_close(&m);
}

/* llama-quantize keeps rope_freqs F32 (1-D) and sorts it among the
 * non-layer tensors; with tied embeddings token_embd gets the output rule. */
static void test_llama3_quantize_layout(void **state)
{
    (void)state;
    model m;
    model_open(&m, "LlamaForCausalLM", 0);
    static const struct { int ftype, pure; qp_ggml_type embd, attn_q; } cases[] = {
        { QP_FTYPE_MOSTLY_Q8_0, 1, QP_GGML_Q8_0, QP_GGML_Q8_0 },
        { QP_FTYPE_MOSTLY_Q8_0, 0, QP_GGML_Q8_0, QP_GGML_Q8_0 },
        { QP_FTYPE_MOSTLY_Q4_K_M, 0, QP_GGML_Q6_K, QP_GGML_Q4_K },   /* tied: token_embd is the output */
        { QP_FTYPE_MOSTLY_Q4_0, 0, QP_GGML_Q6_K, QP_GGML_Q4_0 },
    };
    float want[HD / 2];
    convert_rope_freqs(want, 500000.0, HD, 32.0, 1.0, 4.0, 8192.0);
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        char *path = qp_path_join(m.tmp, "Q.gguf");
        export(&m, path, cases[c].ftype, cases[c].pure);
        qp_gguf *g;
        assert_int_equal(qp_gguf_open(&g, path), 0);
        /* the same keys, general.file_type moved after quantization_version */
        const char *keys[N_LLAMA_KEYS];
        size_t k = 0;
        for (size_t i = 0; i < N_LLAMA_KEYS; i++)
            if (strcmp(llama_keys[i], "general.file_type") != 0)
                keys[k++] = llama_keys[i];
        keys[k++] = "general.file_type";
        assert_keys(g, keys, k);
        uint32_t u;
        assert_int_equal(qp_gguf_get_u32(g, "general.file_type", &u), 0);
        assert_int_equal(u, (uint32_t)cases[c].ftype);
        assert_string_equal(qp_gguf_tensor_at(g, 0)->name, "output_norm.weight");
        assert_string_equal(qp_gguf_tensor_at(g, 1)->name, "rope_freqs.weight");
        assert_string_equal(qp_gguf_tensor_at(g, 2)->name, "token_embd.weight");
        assert_string_equal(qp_gguf_tensor_at(g, 3)->name, "blk.0.attn_k.weight");
        const qp_gguf_tensor *r = qp_gguf_tensor_at(g, 1);
        assert_int_equal(r->type, QP_GGML_F32);
        assert_memory_equal(r->data, want, sizeof(want));
        assert_int_equal(qp_gguf_tensor_at(g, 2)->type, cases[c].embd);
        assert_int_equal(qp_gguf_find_tensor(g, "blk.1.attn_q.weight")->type, cases[c].attn_q);
        assert_int_equal(qp_gguf_find_tensor(g, "blk.1.ffn_norm.weight")->type, QP_GGML_F32);
        assert_null(qp_gguf_find_tensor(g, "output.weight"));
        qp_gguf_free(g);
        free(path);
    }
    model_close(&m);
}

/* convert reads the TOP-LEVEL original_max_position_embeddings (8192 when
 * absent), not rope_scaling's: a top-level 4096 changes the factors. */
static void test_llama3_top_level_original_ctx(void **state)
{
    (void)state;
    model m;
    model_open(&m, "LlamaForCausalLM", 4096);
    qp_gguf_llama_opts o;
    assert_int_equal(qp_gguf_llama_opts_from_hf_dir(&o, &m.cfg, m.dir), 0);
    assert_true(o.rope_orig_ctx == 4096.0);
    qp_gguf_llama_opts_free(&o);
    char *path = qp_path_join(m.tmp, "F32.gguf");
    export(&m, path, -1, 0);
    qp_gguf *g;
    assert_int_equal(qp_gguf_open(&g, path), 0);
    float want[HD / 2], other[HD / 2];
    convert_rope_freqs(want, 500000.0, HD, 32.0, 1.0, 4.0, 4096.0);
    convert_rope_freqs(other, 500000.0, HD, 32.0, 1.0, 4.0, 8192.0);
    assert_true(memcmp(want, other, sizeof(want)) != 0);
    assert_memory_equal(qp_gguf_find_tensor(g, "rope_freqs.weight")->data, want, sizeof(want));
    qp_gguf_free(g);
    free(path);
    model_close(&m);
}

/* MistralForCausalLM: GGUF "llama" exactly as LlamaModel writes it — no
 * rope_freqs (no llama3 scaling), output.weight (untied), q/k permuted. */
static void test_mistral(void **state)
{
    (void)state;
    model m;
    model_open(&m, "MistralForCausalLM", 0);
    assert_int_equal(m.cfg.arch, QP_ARCH_MISTRAL);
    assert_string_equal(qp_gguf_llama_arch(&m.cfg), "llama");
    char *path = qp_path_join(m.tmp, "F32.gguf");
    export(&m, path, -1, 0);
    assert_int_equal(m.s.data_calls, 3 + 9 * L);
    qp_gguf *g;
    assert_int_equal(qp_gguf_open(&g, path), 0);
    assert_keys(g, llama_keys, N_LLAMA_KEYS);
    const char *s;
    assert_int_equal(qp_gguf_get_string(g, "general.architecture", &s, NULL), 0);
    assert_string_equal(s, "llama");
    assert_null(qp_gguf_find_tensor(g, "rope_freqs.weight"));
    assert_int_equal(qp_gguf_tensor_count(g), 3 + 9 * L);
    assert_string_equal(qp_gguf_tensor_at(g, 0)->name, "output.weight");   /* "lm_head" sorts first */
    /* q rows in GGUF's adjacent-pair order: GGUF row 1 of head 0 is HF row HD/2 */
    const qp_gguf_tensor *q = qp_gguf_find_tensor(g, "blk.0.attn_q.weight");
    const qp_tensor_view *v = qp_checkpoint_find(m.s.ck, "model.layers.0.self_attn.q_proj.weight");
    assert_memory_equal((const float *)q->data + D, (const float *)v->data + (size_t)(HD / 2) * D,
                        D * sizeof(float));
    qp_llama_config back;
    assert_int_equal(qp_llama_config_from_gguf(&back, g), 0);
    assert_int_equal(back.arch, QP_ARCH_LLAMA);
    assert_int_equal(back.tied_embeddings, 0);
    assert_int_equal(back.head_dim, HD);
    qp_gguf_free(g);
    free(path);
    model_close(&m);
}

/* LlamaModel.set_vocab for a vocabulary of 49152 (granite small models;
 * SmolLM's LlamaForCausalLM too): add_bos_token false after
 * add_space_prefix; convert fails on the duplicated key when
 * tokenizer_config.json already set add_bos_token, and so does qpipe. */
static void test_vocab_49152(void **state)
{
    (void)state;
    model m;
    model_open(&m, "LlamaForCausalLM", 0);
    qp_llama_config cfg = m.cfg;
    cfg.vocab = 49152;
    cfg.hidden = 32;
    cfg.n_layers = 1;
    cfg.n_heads = 4;
    cfg.n_kv_heads = 2;
    cfg.head_dim = 8;
    cfg.intermediate = 64;
    qp_gguf_llama_opts o;
    qp_gguf_writer *w = NULL;
    char *path = qp_path_join(m.tmp, "g.gguf");
    qp_gguf_llama_source zeros = {.tensor_data = qp_test_gguf_zero_data};
    assert_int_equal(qp_gguf_llama_opts_from_hf_dir(&o, &cfg, m.dir), 0);
    assert_int_equal(o.add_bos, 1);   /* tokenizer_config.json's add_bos_token */
    assert_int_equal(qp_gguf_llama_export_tok_new(&w, path, &cfg, m.tok, m.tok_name, &zeros, &o), QP_EUSAGE);
    assert_null(w);
    assert_non_null(strstr(qp_error_last(), "49152"));
    assert_non_null(strstr(qp_error_last(), "add_bos_token"));
    o.add_bos = -1;
    assert_int_equal(qp_gguf_llama_export_tok_new(&w, path, &cfg, m.tok, m.tok_name, &zeros, &o), 0);
    assert_int_equal(qp_gguf_writer_finish(w), 0);
    qp_gguf *g;
    assert_int_equal(qp_gguf_open(&g, path), 0);
    size_t n = qp_gguf_kv_count(g);
    assert_string_equal(qp_gguf_kv_key(g, n - 3), "tokenizer.ggml.add_space_prefix");
    assert_string_equal(qp_gguf_kv_key(g, n - 2), "tokenizer.ggml.add_bos_token");
    assert_string_equal(qp_gguf_kv_key(g, n - 1), "general.quantization_version");
    bool b = true;
    assert_int_equal(qp_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b), 0);
    assert_false(b);
    qp_gguf_free(g);
    /* qwen2 (Qwen2Model.set_vocab) writes neither */
    cfg.arch = QP_ARCH_QWEN2;
    cfg.rope_scaling.kind = QP_ROPE_PLAIN;
    o.add_bos = 1;
    assert_int_equal(qp_gguf_llama_export_tok_new(&w, path, &cfg, m.tok, m.tok_name, &zeros, &o), 0);
    assert_int_equal(qp_gguf_writer_finish(w), 0);
    assert_int_equal(qp_gguf_open(&g, path), 0);
    assert_null(qp_gguf_find(g, "tokenizer.ggml.add_space_prefix"));
    assert_int_equal(qp_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b), 0);
    assert_true(b);
    qp_gguf_free(g);
    qp_gguf_llama_opts_free(&o);
    free(path);
    model_close(&m);
}

/* tokenizer_config.json's add_prefix_space as gguf-py packs it (Python
 * truth: null is false); config.json's top-level
 * original_max_position_embeddings must be a positive number. */
static void test_opts_from_dir(void **state)
{
    (void)state;
    static const struct { const char *json; int want; } cases[] = {
        { "{\"add_prefix_space\": true}", 1 }, { "{\"add_prefix_space\": false}", 0 },
        { "{\"add_prefix_space\": null}", 0 }, { "{\"add_prefix_space\": 1}", 1 }, { "{}", -1 },
    };
    qp_llama_config cfg = {.arch = QP_ARCH_LLAMA, .vocab = 16};
    char *dir = qp_test_tmpdir();
    char *tc = qp_path_join(dir, "tokenizer_config.json"), *cj = qp_path_join(dir, "config.json");
    qp_gguf_llama_opts o;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        qp_test_write_str(tc, cases[i].json);
        assert_int_equal(qp_gguf_llama_opts_from_hf_dir(&o, &cfg, dir), 0);
        assert_int_equal(o.add_space_prefix, cases[i].want);
        assert_true(o.rope_orig_ctx == 8192.0);
        qp_gguf_llama_opts_free(&o);
    }
    qp_test_write_str(cj, "{\"original_max_position_embeddings\": \"8k\"}");
    assert_int_equal(qp_gguf_llama_opts_from_hf_dir(&o, &cfg, dir), QP_EFORMAT);
    assert_non_null(strstr(qp_error_last(), "original_max_position_embeddings"));
    assert_non_null(strstr(qp_error_last(), "config.json"));
    qp_test_write_str(cj, "{\"original_max_position_embeddings\": 2048}");
    assert_int_equal(qp_gguf_llama_opts_from_hf_dir(&o, &cfg, dir), 0);
    assert_true(o.rope_orig_ctx == 2048.0);
    qp_gguf_llama_opts_free(&o);
    qp_test_rmtree(dir);
    free(tc);
    free(cj);
    free(dir);
}

/* the tensor list: rope_freqs only for "llama" with llama3 scaling */
static void test_tensor_list(void **state)
{
    (void)state;
    qp_llama_config cfg = {
        .arch = QP_ARCH_LLAMA, .vocab = 64, .hidden = 32, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2,
        .head_dim = 8, .intermediate = 64, .rms_eps = 1e-5f, .rope_theta = 5e5f, .max_pos = 128,
        .tied_embeddings = 1,
        .rope_scaling = {.kind = QP_ROPE_LLAMA3, .factor = 8, .low_freq_factor = 1, .high_freq_factor = 4,
                         .original_max_pos = 8192},
    };
    qp_gguf_llama_tensor *t;
    size_t n;
    assert_int_equal(qp_gguf_llama_tensors(&t, &n, &cfg, QP_GGUF_LAYOUT_CONVERT, NULL, NULL), 0);
    assert_int_equal(n, 1 + 2 + 9 * 2);
    assert_string_equal(t[0].gguf_name, "rope_freqs.weight");
    assert_string_equal(t[0].hf_name, "");
    assert_int_equal(t[0].generated, 1);
    assert_int_equal(t[0].ne[0], 4);
    for (size_t i = 1; i < n; i++)
        assert_int_equal(t[i].generated, 0);
    free(t);
    cfg.rope_scaling.kind = QP_ROPE_PLAIN;
    assert_int_equal(qp_gguf_llama_tensors(&t, &n, &cfg, QP_GGUF_LAYOUT_CONVERT, NULL, NULL), 0);
    assert_int_equal(n, 2 + 9 * 2);
    free(t);
    /* Qwen2Model has no generate_extra_tensors: a qwen2 GGUF cannot carry the scaling */
    cfg.rope_scaling.kind = QP_ROPE_LLAMA3;
    cfg.arch = QP_ARCH_QWEN2;
    assert_int_equal(qp_gguf_llama_tensors(&t, &n, &cfg, QP_GGUF_LAYOUT_QUANTIZE, NULL, NULL), QP_EUSAGE);
    assert_non_null(strstr(qp_error_last(), "rope_scaling llama3"));
    assert_null(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rope_factors),
        cmocka_unit_test(test_tensor_list),
        cmocka_unit_test(test_llama3_convert_layout),
        cmocka_unit_test(test_llama3_quantize_layout),
        cmocka_unit_test(test_llama3_top_level_original_ctx),
        cmocka_unit_test(test_mistral),
        cmocka_unit_test(test_vocab_49152),
        cmocka_unit_test(test_opts_from_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
