/* HF Qwen2 -> GGUF export: house-qwen (bf16 safetensors, byte-level BPE
 * tokenizer.json, q/k/v biases, tied embeddings) written at F32 is
 * byte-identical to llama.cpp's convert_hf_to_gguf F32.gguf, and with
 * llama-quantize's layout and the project's quantizers to the --pure Q8_0,
 * Q4_0, Q4_K, Q6_K files and the Q4_K_M mix; the tensor list, the absent q/k
 * permutation, the qwen2 mix context, and the errors of the BPE path. */
#include "tests/support/gguf_src.h"
#include "tests/support/testutil.h"

#include "common/error.h"
#include "common/fsutil.h"
#include "model/config.h"
#include "model/gguf.h"
#include "model/gguf_llama.h"
#include "model/gguf_writer.h"
#include "model/safetensors.h"
#include "model/tokenizer.h"
#include "quant/ggml_mix.h"
#include "quant/qtypes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------- a source over the house-qwen checkpoint ---------- */

typedef struct {
    qp_llama_config cfg;
    char *model_dir, *tok_name;
    qp_tokenizer *tok;
    qp_test_gguf_src s;
    qp_gguf_llama_source src;
} qwen;

static void qwen_open(qwen *h)
{
    memset(h, 0, sizeof(*h));
    h->model_dir = qp_test_shared_path("models/house-qwen");
    h->tok_name = qp_path_join(h->model_dir, "tokenizer.json");
    char *cfg = qp_path_join(h->model_dir, "config.json");
    assert_int_equal(qp_llama_config_load(&h->cfg, cfg), 0);
    free(cfg);
    int rc = qp_tokenizer_load_dir(&h->tok, h->model_dir);
    if (rc)
        fprintf(stderr, "%s\n", qp_error_last());
    assert_int_equal(rc, 0);
    assert_int_equal(qp_tokenizer_model(h->tok), QP_TOK_MODEL_BPE);
    qp_test_gguf_src_open(&h->s, &h->src, h->model_dir, &h->cfg);
}

static void qwen_close(qwen *h)
{
    qp_test_gguf_src_close(&h->s);
    qp_tokenizer_free(h->tok);
    free(h->model_dir);
    free(h->tok_name);
}

/* Exports house-qwen in a layout with the source's types and compares. */
static void export_and_compare(qwen *h, const char *want_rel, qp_gguf_llama_layout layout, int ftype, int pure,
                               const char *keep_as)
{
    qp_gguf_llama_opts o;
    qp_gguf_writer *w;
    char *dir = qp_test_tmpdir();
    char *path = qp_path_join(dir, "q.gguf");
    h->s.ftype = ftype;
    h->s.mix.pure = pure;
    h->s.data_calls = 0;
    assert_int_equal(qp_gguf_llama_opts_from_hf_dir(&o, &h->cfg, h->model_dir), 0);
    o.layout = layout;
    o.file_type = ftype < 0 ? 0 : (uint32_t)ftype;
    int rc = qp_gguf_llama_export_tok_new(&w, path, &h->cfg, h->tok, h->tok_name, &h->src, &o);
    if (rc)
        fprintf(stderr, "%s\n", qp_error_last());
    assert_int_equal(rc, 0);
    assert_int_equal(h->s.data_calls, 0);
    assert_int_equal(qp_gguf_writer_finish(w), 0);
    assert_int_equal(h->s.data_calls, 74);
    qp_test_assert_same_gguf(path, want_rel);
    if (keep_as)
        assert_int_equal(rename(path, keep_as), 0);
    qp_gguf_llama_opts_free(&o);
    qp_test_rmtree(dir);
    free(path);
    free(dir);
}

/* ---------- house-qwen against llama.cpp's files ---------- */

static void test_qwen_f32_identical(void **state)
{
    (void)state;
    qwen h;
    qwen_open(&h);
    char *dir = qp_test_tmpdir();
    char *path = qp_path_join(dir, "F32.gguf");
    export_and_compare(&h, "vectors/house-qwen/F32.gguf", QP_GGUF_LAYOUT_CONVERT, -1, 0, path);

    /* read back: qwen2 hyper-parameters, tied, biases; no q/k permutation:
     * GGUF row r of attn_q / attn_k is HF row r */
    qp_gguf *g;
    assert_int_equal(qp_gguf_open(&g, path), 0);
    qp_llama_config back;
    assert_int_equal(qp_llama_config_from_gguf(&back, g), 0);
    assert_int_equal(back.arch, QP_ARCH_QWEN2);
    assert_int_equal(back.n_layers, 6);
    assert_int_equal(back.n_heads, 8);
    assert_int_equal(back.n_kv_heads, 2);
    assert_int_equal(back.head_dim, 32);
    assert_int_equal(back.tied_embeddings, 1);
    assert_int_equal(back.qkv_bias, 1);
    assert_true(back.rope_theta == 1e6f);
    assert_null(qp_gguf_find_tensor(g, "output.weight"));
    assert_null(qp_gguf_find(g, "qwen2.vocab_size"));
    assert_null(qp_gguf_find(g, "tokenizer.ggml.scores"));
    const char *s;
    assert_int_equal(qp_gguf_get_string(g, "tokenizer.ggml.model", &s, NULL), 0);
    assert_string_equal(s, "gpt2");
    assert_int_equal(qp_gguf_get_string(g, "tokenizer.ggml.pre", &s, NULL), 0);
    assert_string_equal(s, "qwen2");
    const qp_gguf_value *merges, *types;
    assert_int_equal(qp_gguf_get_array(g, "tokenizer.ggml.merges", QP_GGUF_STRING, &merges), 0);
    assert_int_equal(qp_gguf_array_len(merges), qp_tokenizer_n_merges(h.tok));
    assert_int_equal(qp_gguf_get_array(g, "tokenizer.ggml.token_type", QP_GGUF_I32, &types), 0);
    int64_t ty;
    assert_int_equal(qp_gguf_array_get_int(types, 2047, &ty), 0);
    assert_int_equal(ty, 3);   /* <|im_end|>: CONTROL */
    assert_int_equal(qp_gguf_array_get_int(types, 2044, &ty), 0);
    assert_int_equal(ty, 1);
    static const char *const pairs[][2] = {
        { "model.layers.3.self_attn.q_proj.weight", "blk.3.attn_q.weight" },
        { "model.layers.3.self_attn.k_proj.weight", "blk.3.attn_k.weight" },
        { "model.layers.3.self_attn.k_proj.bias", "blk.3.attn_k.bias" },
    };
    for (size_t k = 0; k < sizeof(pairs) / sizeof(pairs[0]); k++) {
        const qp_tensor_view *v = qp_checkpoint_find(h.s.ck, pairs[k][0]);
        const qp_gguf_tensor *t = qp_gguf_find_tensor(g, pairs[k][1]);
        assert_non_null(v);
        assert_non_null(t);
        assert_int_equal(t->type, QP_GGML_F32);
        assert_int_equal(t->nbytes, v->nelem * sizeof(float));
        float *f = malloc(v->nelem * sizeof(float));
        assert_int_equal(qp_convert_to_f32(f, v->data, v->dtype, v->nelem), 0);
        assert_memory_equal(f, t->data, t->nbytes);
        free(f);
    }
    qp_gguf_free(g);
    qwen_close(&h);
    qp_test_rmtree(dir);
    free(path);
    free(dir);
}

/* llama-quantize --pure <TYPE>: every 2-D tensor (token_embd included) in
 * the type, norms and biases F32; general.file_type 7 / 2 / 15 / 18. */
static void test_qwen_pure_identical(void **state)
{
    (void)state;
    static const struct { const char *file; int ftype; } cases[] = {
        { "vectors/house-qwen/Q8_0.gguf", QP_FTYPE_MOSTLY_Q8_0 },
        { "vectors/house-qwen/Q4_0.gguf", QP_FTYPE_MOSTLY_Q4_0 },
        { "vectors/house-qwen/Q4_K.gguf", QP_FTYPE_MOSTLY_Q4_K_M },   /* "Q4_K" is Q4_K_M's name */
        { "vectors/house-qwen/Q6_K.gguf", QP_FTYPE_MOSTLY_Q6_K },
    };
    qwen h;
    qwen_open(&h);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        export_and_compare(&h, cases[i].file, QP_GGUF_LAYOUT_QUANTIZE, cases[i].ftype, 1, NULL);
    qwen_close(&h);
}

/* llama-quantize Q4_K_M: token_embd is the output (tied) -> Q6_K; attn_v and
 * ffn_down Q6_K in layers 2 and 5 (use_more_bits of 6 layers). */
static void test_qwen_mix_identical(void **state)
{
    (void)state;
    qwen h;
    qwen_open(&h);
    export_and_compare(&h, "vectors/house-qwen/mix-Q4_K_M.gguf", QP_GGUF_LAYOUT_QUANTIZE, QP_FTYPE_MOSTLY_Q4_K_M, 0,
                       NULL);
    /* the same choice tensor by tensor */
    static const struct { const char *name; int n_dims; int64_t ne0, ne1; qp_ggml_type want; } t[] = {
        { "token_embd.weight", 2, 256, 2048, QP_GGML_Q6_K },
        { "blk.2.attn_v.weight", 2, 256, 64, QP_GGML_Q6_K },
        { "blk.3.attn_v.weight", 2, 256, 64, QP_GGML_Q4_K },
        { "blk.5.ffn_down.weight", 2, 768, 256, QP_GGML_Q6_K },
        { "blk.0.ffn_down.weight", 2, 768, 256, QP_GGML_Q4_K },
        { "blk.0.attn_q.bias", 1, 256, 1, QP_GGML_F32 },
    };
    h.s.mix.pure = 0;
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        qp_ggml_mix_choice ch;
        const int64_t ne[2] = { t[i].ne0, t[i].ne1 };
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q4_K_M, t[i].name, t[i].n_dims, ne, &h.s.mix), 0);
        assert_int_equal(ch.type, t[i].want);
    }
    qwen_close(&h);
}

/* ---------- tensors, mix context, errors ---------- */

static void test_qwen_tensors(void **state)
{
    (void)state;
    qp_llama_config cfg = {
        .arch = QP_ARCH_QWEN2, .vocab = 64, .hidden = 32, .n_layers = 12, .n_heads = 4, .n_kv_heads = 2,
        .head_dim = 8, .intermediate = 64, .rms_eps = 1e-6f, .rope_theta = 1e6f, .max_pos = 128,
        .tied_embeddings = 1, .qkv_bias = 1,
    };
    assert_string_equal(qp_gguf_llama_arch(&cfg), "qwen2");
    qp_gguf_llama_tensor *t;
    size_t n;
    assert_int_equal(qp_gguf_llama_tensors(&t, &n, &cfg, QP_GGUF_LAYOUT_CONVERT, NULL, NULL), 0);
    assert_int_equal(n, 2 + 12 * 12);
    /* convert: sorted HF names, "model.layers.10." before "model.layers.2." */
    assert_string_equal(t[0].gguf_name, "token_embd.weight");
    assert_string_equal(t[1].gguf_name, "blk.0.attn_norm.weight");
    assert_string_equal(t[6].gguf_name, "blk.0.attn_k.bias");
    assert_string_equal(t[7].gguf_name, "blk.0.attn_k.weight");
    assert_string_equal(t[1 + 2 * 12].gguf_name, "blk.10.attn_norm.weight");
    assert_string_equal(t[n - 1].gguf_name, "output_norm.weight");
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(t[i].rope_heads, 0);   /* qwen2: rows stay in HF order */
        if (strcmp(t[i].gguf_name, "blk.4.attn_q.bias") == 0) {
            assert_string_equal(t[i].hf_name, "model.layers.4.self_attn.q_proj.bias");
            assert_int_equal(t[i].n_dims, 1);
            assert_int_equal(t[i].ne[0], 32);
        }
        if (strcmp(t[i].gguf_name, "blk.4.attn_v.bias") == 0)
            assert_int_equal(t[i].ne[0], 16);
    }
    free(t);
    assert_int_equal(qp_gguf_llama_tensors(&t, &n, &cfg, QP_GGUF_LAYOUT_QUANTIZE, NULL, NULL), 0);
    assert_string_equal(t[0].gguf_name, "output_norm.weight");
    assert_string_equal(t[1].gguf_name, "token_embd.weight");
    assert_string_equal(t[2].gguf_name, "blk.0.attn_k.bias");
    assert_string_equal(t[n - 1].gguf_name, "blk.11.ffn_up.weight");
    free(t);

    char out[64];
    assert_int_equal(qp_gguf_llama_name(out, sizeof(out), "model.layers.7.self_attn.v_proj.bias"), 0);
    assert_string_equal(out, "blk.7.attn_v.bias");
    assert_int_equal(qp_gguf_llama_name(out, sizeof(out), "model.layers.7.self_attn.o_proj.bias"), QP_ENOTFOUND);

    /* biases in a llama config: refused (its config loader refuses them too) */
    cfg.arch = QP_ARCH_LLAMA;
    assert_string_equal(qp_gguf_llama_arch(&cfg), "llama");
    assert_int_equal(qp_gguf_llama_tensors(&t, &n, &cfg, QP_GGUF_LAYOUT_CONVERT, NULL, NULL), QP_EUSAGE);
    assert_string_equal(qp_error_last(), "config: q/k/v biases cannot be exported to a GGUF 'llama' model");
    assert_null(t);
    /* a llama without biases keeps its permuted q/k */
    cfg.qkv_bias = 0;
    assert_int_equal(qp_gguf_llama_tensors(&t, &n, &cfg, QP_GGUF_LAYOUT_CONVERT, NULL, NULL), 0);
    assert_int_equal(n, 2 + 12 * 9);
    for (size_t i = 0; i < n; i++)
        if (strcmp(t[i].gguf_name, "blk.0.attn_k.weight") == 0)
            assert_int_equal(t[i].rope_heads, 2);
    free(t);
}

/* llama-model.cpp's size tables: an 80-layer qwen2 is 70B whatever its
 * heads (attn_v Q4_K -> Q5_K outside use_more_bits' layers), an 80-layer
 * llama only with GQA. */
static void test_qwen_mix_ctx(void **state)
{
    (void)state;
    qp_ggml_mix_ctx q, l;
    assert_int_equal(qp_ggml_mix_ctx_init_arch(&q, "qwen2", 80, 64, 64, 0), 0);
    assert_int_equal(qp_ggml_mix_ctx_init_arch(&l, "llama", 80, 64, 64, 0), 0);
    assert_int_equal(q.is_70b, 1);
    assert_int_equal(l.is_70b, 0);
    const int64_t ne[2] = { 8192, 8192 };
    qp_ggml_mix_choice a, b;
    assert_int_equal(qp_ggml_mix_tensor_type(&a, QP_FTYPE_MOSTLY_Q4_K_M, "blk.11.attn_v.weight", 2, ne, &q), 0);
    assert_int_equal(qp_ggml_mix_tensor_type(&b, QP_FTYPE_MOSTLY_Q4_K_M, "blk.11.attn_v.weight", 2, ne, &l), 0);
    assert_int_equal(a.type, QP_GGML_Q5_K);
    assert_int_equal(b.type, QP_GGML_Q4_K);
    assert_int_equal(qp_ggml_mix_ctx_init_arch(&q, "qwen2", 24, 14, 2, 1), 0);
    assert_int_equal(q.is_70b, 0);
    assert_int_equal(q.has_output, 0);
    assert_int_equal(qp_ggml_mix_ctx_init_arch(&q, "gpt2", 24, 14, 2, 1), -1);
}

/* A BPE tokenizer whose pre-tokenizer llama.cpp has no name for cannot be
 * exported (convert_hf_to_gguf stops there too); the model's tokenizer
 * must have no more tokens than vocab_size, ids beyond it are [PADi]. */
static void test_qwen_vocab_errors(void **state)
{
    (void)state;
    qwen h;
    qwen_open(&h);
    qp_gguf_llama_opts o;
    qp_gguf_writer *w;
    char *dir = qp_test_tmpdir();
    char *path = qp_path_join(dir, "x.gguf");
    assert_int_equal(qp_gguf_llama_opts_from_hf_dir(&o, &h.cfg, h.model_dir), 0);

    /* more tokens than ids */
    qp_llama_config small = h.cfg;
    small.vocab = 2000;
    assert_int_equal(qp_gguf_llama_export_tok_new(&w, path, &small, h.tok, h.tok_name, &h.src, &o), QP_EFORMAT);
    char *msg = qp_strfmt("%s: 2048 tokens, more than the config's vocab_size 2000", h.tok_name);
    assert_string_equal(qp_error_last(), msg);
    free(msg);
    assert_false(qp_path_exists(path));

    /* vocab_size beyond the tokenizer: [PADi] UNUSED ids */
    small.vocab = 2050;
    qp_gguf_llama_source zeros = { .tensor_data = qp_test_gguf_zero_data };
    assert_int_equal(qp_gguf_llama_export_tok_new(&w, path, &small, h.tok, h.tok_name, &zeros, &o), 0);
    assert_int_equal(qp_gguf_writer_finish(w), 0);
    qp_gguf *g;
    const qp_gguf_value *tokens, *types;
    const char *s;
    int64_t ty;
    assert_int_equal(qp_gguf_open(&g, path), 0);
    assert_int_equal(qp_gguf_get_array(g, "tokenizer.ggml.tokens", QP_GGUF_STRING, &tokens), 0);
    assert_int_equal(qp_gguf_get_array(g, "tokenizer.ggml.token_type", QP_GGUF_I32, &types), 0);
    assert_int_equal(qp_gguf_array_len(tokens), 2050);
    assert_int_equal(qp_gguf_array_get_string(tokens, 2049, &s, NULL), 0);
    assert_string_equal(s, "[PAD2049]");
    assert_int_equal(qp_gguf_array_get_int(types, 2049, &ty), 0);
    assert_int_equal(ty, 5);
    assert_int_equal(qp_gguf_array_get_string(tokens, 2046, &s, NULL), 0);
    assert_string_equal(s, "<|im_start|>");
    qp_gguf_free(g);
    assert_int_equal(remove(path), 0);

    /* no tokenizer */
    assert_int_equal(qp_gguf_llama_export_tok_new(&w, path, &h.cfg, NULL, NULL, &h.src, &o), QP_EUSAGE);

    /* a pre-tokenizer that is not Qwen2's regex: no tokenizer.ggml.pre */
    char *src_json = qp_path_join(h.model_dir, "tokenizer.json");
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(qp_read_file(src_json, &json, &len), 0);
    const char *needle = "\"pre_tokenizer\"";
    char *at = strstr(json, needle);
    assert_non_null(at);
    /* the same tokenizer split on whitespace runs only */
    char *end = strstr(at, "\"post_processor\"");
    assert_non_null(end);
    char *odd = qp_strfmt("%.*s\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", "
                          "\"pattern\": {\"Regex\": \"\\\\s+\"}, \"behavior\": \"Isolated\", \"invert\": false}, "
                          "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": false, "
                          "\"use_regex\": false}]},\n  %s",
                          (int)(at - json), json, end);
    qp_tokenizer *tok = NULL;
    int rc = qp_tokenizer_load_hf(&tok, odd, strlen(odd), NULL, 0, "odd/tokenizer.json");
    if (rc)
        fprintf(stderr, "%s\n", qp_error_last());
    assert_int_equal(rc, 0);
    assert_null(qp_tokenizer_pre(tok));
    assert_int_equal(qp_gguf_llama_export_tok_new(&w, path, &h.cfg, tok, "odd/tokenizer.json", &h.src, &o),
                     QP_EUSAGE);
    assert_string_equal(qp_error_last(), "odd/tokenizer.json: the BPE pre-tokenizer is not one llama.cpp knows "
                                         "(tokenizer.ggml.pre); GGUF export needs a recognised one such as qwen2 or "
                                         "llama-bpe");
    assert_false(qp_path_exists(path));
    qp_tokenizer_free(tok);
    free(odd);
    free(json);
    free(src_json);
    qp_gguf_llama_opts_free(&o);
    qwen_close(&h);
    qp_test_rmtree(dir);
    free(path);
    free(dir);
}

/* A llama-architecture model with a byte-level BPE tokenizer (Llama 3's
 * case: LlamaModel.set_vocab falls back to _set_vocab_gpt2): llama.* keys
 * with vocab_size and rope dims, the gpt2 vocabulary, permuted q/k. */
static void test_llama_with_bpe(void **state)
{
    (void)state;
    qwen h;
    qwen_open(&h);
    qp_llama_config cfg = h.cfg;
    cfg.arch = QP_ARCH_LLAMA;
    cfg.qkv_bias = 0;
    cfg.tied_embeddings = 0;
    qp_gguf_llama_opts o;
    qp_gguf_writer *w;
    char *dir = qp_test_tmpdir();
    char *path = qp_path_join(dir, "l.gguf");
    assert_int_equal(qp_gguf_llama_opts_from_hf_dir(&o, &cfg, h.model_dir), 0);
    qp_gguf_llama_source zeros = { .tensor_data = qp_test_gguf_zero_data };
    assert_int_equal(qp_gguf_llama_export_tok_new(&w, path, &cfg, h.tok, h.tok_name, &zeros, &o), 0);
    assert_int_equal(qp_gguf_writer_finish(w), 0);
    qp_gguf *g, *ref;
    char *ref_path = qp_test_shared_path("vectors/house-qwen/F32.gguf");
    assert_int_equal(qp_gguf_open(&g, path), 0);
    assert_int_equal(qp_gguf_open(&ref, ref_path), 0);
    const char *s;
    assert_int_equal(qp_gguf_get_string(g, "general.architecture", &s, NULL), 0);
    assert_string_equal(s, "llama");
    uint32_t u;
    assert_int_equal(qp_gguf_get_u32(g, "llama.vocab_size", &u), 0);
    assert_int_equal(u, 2048);
    assert_int_equal(qp_gguf_get_u32(g, "llama.rope.dimension_count", &u), 0);
    assert_int_equal(u, 32);
    assert_non_null(qp_gguf_find_tensor(g, "output.weight"));
    assert_null(qp_gguf_find_tensor(g, "blk.0.attn_q.bias"));
    /* the tokenizer.* keys are the qwen2 file's, in the same order */
    size_t k = 0;
    for (size_t i = 0; i < qp_gguf_kv_count(ref); i++) {
        const char *key = qp_gguf_kv_key(ref, i);
        if (strncmp(key, "tokenizer.", 10) != 0)
            continue;
        while (k < qp_gguf_kv_count(g) && strncmp(qp_gguf_kv_key(g, k), "tokenizer.", 10) != 0)
            k++;
        assert_true(k < qp_gguf_kv_count(g));
        assert_string_equal(qp_gguf_kv_key(g, k), key);
        k++;
    }
    /* then LlamaModel.set_vocab's own: tokenizer_config's add_prefix_space
     * (false in house-qwen's), which Qwen2Model does not write */
    assert_true(k < qp_gguf_kv_count(g));
    assert_string_equal(qp_gguf_kv_key(g, k), "tokenizer.ggml.add_space_prefix");
    bool b = true;
    assert_int_equal(qp_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &b), 0);
    assert_false(b);
    assert_null(qp_gguf_find(ref, "tokenizer.ggml.add_space_prefix"));
    for (k++; k < qp_gguf_kv_count(g); k++)
        assert_true(strncmp(qp_gguf_kv_key(g, k), "tokenizer.", 10) != 0);
    qp_gguf_free(g);
    qp_gguf_free(ref);
    free(ref_path);
    qp_gguf_llama_opts_free(&o);
    qwen_close(&h);
    qp_test_rmtree(dir);
    free(path);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qwen_f32_identical),
        cmocka_unit_test(test_qwen_pure_identical),
        cmocka_unit_test(test_qwen_mix_identical),
        cmocka_unit_test(test_qwen_tensors),
        cmocka_unit_test(test_qwen_mix_ctx),
        cmocka_unit_test(test_qwen_vocab_errors),
        cmocka_unit_test(test_llama_with_bpe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
