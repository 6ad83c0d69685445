/* HF LLaMA -> GGUF export: the house model (bf16 safetensors) written at F32
 * is byte-identical to llama.cpp's convert_hf_to_gguf F32.gguf, and with
 * llama-quantize's layout and the project's quantizers to Q8_0.gguf and the
 * k-quant mixes; names, the q/k row permutation on packed rows, metadata
 * from an HF directory, qpipe keys after llama.cpp's, and errors. */
#include "tests/support/gguf_src.h"
#include "tests/support/testutil.h"

#include "common/error.h"
#include "common/fsutil.h"
#include "model/config.h"
#include "model/gguf.h"
#include "model/gguf_llama.h"
#include "model/gguf_writer.h"
#include "model/llama.h"
#include "model/safetensors.h"
#include "quant/ggml_mix.h"
#include "quant/qtypes.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------- a source over the house checkpoint ---------- */

typedef struct {
    qp_llama_config cfg;
    char *model_dir, *tok_path;
    qp_test_gguf_src s;
    qp_gguf_llama_source src;
} house;

static void house_open(house *h)
{
    memset(h, 0, sizeof(*h));
    h->model_dir = qp_test_shared_path("models/house-llama");
    h->tok_path = qp_path_join(h->model_dir, "tokenizer.model");
    char *cfg = qp_path_join(h->model_dir, "config.json");
    assert_int_equal(qp_llama_config_load(&h->cfg, cfg), 0);
    free(cfg);
    qp_test_gguf_src_open(&h->s, &h->src, h->model_dir, &h->cfg);
}

static void house_close(house *h)
{
    qp_test_gguf_src_close(&h->s);
    free(h->model_dir);
    free(h->tok_path);
}

/* Entries of a directory other than . and .. */
static int dir_entries(const char *dir)
{
    int n = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    assert_non_null(d);
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

/* ---------- the house model against llama.cpp's files ---------- */

static void test_house_f32_identical(void **state)
{
    (void)state;
    house h;
    qp_gguf_llama_opts o;
    qp_gguf_writer *w;
    char *dir = qp_test_tmpdir();
    char *path = qp_path_join(dir, "F32.gguf");
    house_open(&h);
    assert_int_equal(qp_gguf_llama_opts_from_hf_dir(&o, &h.cfg, h.model_dir), 0);
    assert_string_equal(o.name, "House Llama");
    int rc = qp_gguf_llama_export_new(&w, path, &h.cfg, h.tok_path, &h.src, &o);
    if (rc)
        fprintf(stderr, "%s\n", qp_error_last());
    assert_int_equal(rc, 0);
    assert_int_equal(h.s.data_calls, 0);
    assert_int_equal(qp_gguf_writer_finish(w), 0);
    assert_int_equal(h.s.data_calls, 57);
    qp_test_assert_same_gguf(path, "vectors/house-llama/F32.gguf");

    /* read back: the tokenizer arrays and hyper-parameters explicitly */
    qp_gguf *g, *ref;
    char *ref_path = qp_test_shared_path("vectors/house-llama/F32.gguf");
    assert_int_equal(qp_gguf_open(&g, path), 0);
    assert_int_equal(qp_gguf_open(&ref, ref_path), 0);
    static const char *const arrays[] = { "tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type" };
    for (int k = 0; k < 3; k++) {
        const qp_gguf_value *x, *y;
        assert_int_equal(qp_gguf_get_array(g, arrays[k], -1, &x), 0);
        assert_int_equal(qp_gguf_get_array(ref, arrays[k], -1, &y), 0);
        assert_int_equal(qp_gguf_array_len(x), 1024);
        assert_int_equal(qp_gguf_array_len(y), 1024);
        for (uint64_t i = 0; i < 1024; i++) {
            if (k == 0) {
                const char *s, *t;
                uint64_t ls, lt;
                assert_int_equal(qp_gguf_array_get_string(x, i, &s, &ls), 0);
                assert_int_equal(qp_gguf_array_get_string(y, i, &t, &lt), 0);
                assert_int_equal(ls, lt);
                assert_memory_equal(s, t, ls);
            } else if (k == 1) {
                double s, t;
                assert_int_equal(qp_gguf_array_get_float(x, i, &s), 0);
                assert_int_equal(qp_gguf_array_get_float(y, i, &t), 0);
                assert_true(s == t);
            } else {
                int64_t s, t;
                assert_int_equal(qp_gguf_array_get_int(x, i, &s), 0);
                assert_int_equal(qp_gguf_array_get_int(y, i, &t), 0);
                assert_int_equal(s, t);
            }
        }
    }
    qp_llama_config back;
    assert_int_equal(qp_llama_config_from_gguf(&back, g), 0);
    assert_int_equal(back.n_layers, 6);
    assert_int_equal(back.n_kv_heads, 4);
    assert_int_equal(back.head_dim, 32);
    assert_int_equal(back.tied_embeddings, 0);
    assert_true(back.rms_eps == 1e-5f);
    qp_gguf_free(g);
    qp_gguf_free(ref);
    free(ref_path);
    qp_gguf_llama_opts_free(&o);
    house_close(&h);
    qp_test_rmtree(dir);
    free(path);
    free(dir);
}

/* llama-quantize's layout + Q8_0 on every 2-D tensor (quantized in HF row
 * order, packed rows permuted) = Q8_0.gguf, byte for byte. */
static void export_quantized(const char *want_rel, int ftype, int pure)
{
    house h;
    qp_gguf_llama_opts o;
    qp_gguf_writer *w;
    char *dir = qp_test_tmpdir();
    char *path = qp_path_join(dir, "q.gguf");
    house_open(&h);
    h.s.ftype = ftype;
    h.s.mix.pure = pure;
    assert_int_equal(qp_gguf_llama_opts_from_hf_dir(&o, &h.cfg, h.model_dir), 0);
    o.layout = QP_GGUF_LAYOUT_QUANTIZE;
    o.file_type = (uint32_t)ftype;
    int rc = qp_gguf_llama_export_new(&w, path, &h.cfg, h.tok_path, &h.src, &o);
    if (rc)
        fprintf(stderr, "%s\n", qp_error_last());
    assert_int_equal(rc, 0);
    assert_int_equal(qp_gguf_writer_finish(w), 0);
    qp_test_assert_same_gguf(path, want_rel);
    qp_gguf_llama_opts_free(&o);
    house_close(&h);
    qp_test_rmtree(dir);
    free(path);
    free(dir);
}

static void test_house_q8_0_identical(void **state)
{
    (void)state;
    export_quantized("vectors/house-llama/Q8_0.gguf", QP_FTYPE_MOSTLY_Q8_0, 1);
}

static void test_house_mixes_identical(void **state)
{
    (void)state;
    export_quantized("vectors/house-llama/mix-Q4_K_M.gguf", QP_FTYPE_MOSTLY_Q4_K_M, 0);
    export_quantized("vectors/house-llama/mix-Q3_K_M.gguf", QP_FTYPE_MOSTLY_Q3_K_M, 0);
}

/* qpipe's own keys go after llama.cpp's; a failing source leaves no file. */
static void test_extra_keys_and_failure(void **state)
{
    (void)state;
    house h;
    qp_gguf_llama_opts o;
    qp_gguf_writer *w;
    char *dir = qp_test_tmpdir();
    char *path = qp_path_join(dir, "x.gguf");
    house_open(&h);
    assert_int_equal(qp_gguf_llama_opts_from_hf_dir(&o, &h.cfg, h.model_dir), 0);
    assert_int_equal(qp_gguf_llama_export_new(&w, path, &h.cfg, h.tok_path, &h.src, &o), 0);
    assert_int_equal(qp_gguf_writer_add_str(w, "qpipe.version", "0.1.0"), 0);
    assert_int_equal(qp_gguf_writer_add_str(w, "qpipe.recipe_digest", "ab12"), 0);
    const char *digests[2] = { "model.safetensors:0123", "tokenizer.model:4567" };
    assert_int_equal(qp_gguf_writer_add_string_array(w, "qpipe.source_digests", digests, NULL, 2), 0);
    assert_int_equal(qp_gguf_writer_add_str(w, "general.name", "again"), QP_EUSAGE);
    assert_int_equal(qp_gguf_writer_finish(w), 0);
    qp_gguf *g, *ref;
    char *ref_path = qp_test_shared_path("vectors/house-llama/F32.gguf");
    assert_int_equal(qp_gguf_open(&g, path), 0);
    assert_int_equal(qp_gguf_open(&ref, ref_path), 0);
    assert_int_equal(qp_gguf_kv_count(g), qp_gguf_kv_count(ref) + 3);
    for (size_t i = 0; i < qp_gguf_kv_count(ref); i++)
        assert_string_equal(qp_gguf_kv_key(g, i), qp_gguf_kv_key(ref, i));
    assert_string_equal(qp_gguf_kv_key(g, qp_gguf_kv_count(ref)), "qpipe.version");
    const char *s;
    assert_int_equal(qp_gguf_get_string(g, "qpipe.recipe_digest", &s, NULL), 0);
    assert_string_equal(s, "ab12");
    for (size_t i = 0; i < qp_gguf_tensor_count(ref); i++) {
        const qp_gguf_tensor *x = qp_gguf_tensor_at(g, i), *y = qp_gguf_tensor_at(ref, i);
        assert_string_equal(x->name, y->name);
        assert_true(memcmp(x->data, y->data, y->nbytes) == 0);
    }
    qp_gguf_free(g);
    qp_gguf_free(ref);
    free(ref_path);

    /* the 5th tensor cannot be read: finish fails with the source's message,
     * the previous file stays, no temp file is left */
    h.s.data_calls = 0;
    h.s.fail_on = 5;
    assert_int_equal(qp_gguf_llama_export_new(&w, path, &h.cfg, h.tok_path, &h.src, &o), 0);
    assert_int_equal(qp_gguf_writer_finish(w), QP_EFORMAT);
    assert_string_equal(qp_error_last(), "test source: tensor 'model.layers.0.mlp.gate_proj.weight': unreadable");
    assert_int_equal(qp_gguf_open(&g, path), 0);
    assert_int_equal(qp_gguf_kv_count(g), 28);
    qp_gguf_free(g);
    /* aborting an export frees everything and leaves no temp file */
    assert_int_equal(qp_gguf_llama_export_new(&w, path, &h.cfg, h.tok_path, &h.src, &o), 0);
    qp_gguf_writer_abort(w);
    assert_int_equal(dir_entries(dir), 1);
    qp_gguf_llama_opts_free(&o);
    house_close(&h);
    qp_test_rmtree(dir);
    free(path);
    free(dir);
}

/* ---------- names, order, permutation ---------- */

static void test_names(void **state)
{
    (void)state;
    static const char *const pairs[][2] = {
        { "model.embed_tokens.weight", "token_embd.weight" },
        { "model.norm.weight", "output_norm.weight" },
        { "lm_head.weight", "output.weight" },
        { "model.layers.0.input_layernorm.weight", "blk.0.attn_norm.weight" },
        { "model.layers.12.self_attn.q_proj.weight", "blk.12.attn_q.weight" },
        { "model.layers.3.self_attn.k_proj.weight", "blk.3.attn_k.weight" },
        { "model.layers.3.self_attn.v_proj.weight", "blk.3.attn_v.weight" },
        { "model.layers.3.self_attn.o_proj.weight", "blk.3.attn_output.weight" },
        { "model.layers.3.post_attention_layernorm.weight", "blk.3.ffn_norm.weight" },
        { "model.layers.3.mlp.gate_proj.weight", "blk.3.ffn_gate.weight" },
        { "model.layers.3.mlp.up_proj.weight", "blk.3.ffn_up.weight" },
        { "model.layers.3.mlp.down_proj.weight", "blk.3.ffn_down.weight" },
    };
    char out[64];
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        assert_int_equal(qp_gguf_llama_name(out, sizeof(out), pairs[i][0]), 0);
        assert_string_equal(out, pairs[i][1]);
    }
    assert_int_equal(qp_gguf_llama_name(out, sizeof(out), "model.layers.0.self_attn.rotary_emb.inv_freq"),
                     QP_ENOTFOUND);
    assert_string_equal(qp_error_last(),
                        "tensor 'model.layers.0.self_attn.rotary_emb.inv_freq': no GGUF name for this LLaMA tensor");
    assert_int_equal(qp_gguf_llama_name(out, sizeof(out), "model.layers.-1.mlp.up_proj.weight"), QP_ENOTFOUND);
    assert_string_equal(out, "");
}

static int two_parts(void *ud, const char *hf)
{
    (void)ud;
    /* shard 1 holds layers >= 10 and the final norm/head */
    int l;
    if (sscanf(hf, "model.layers.%d.", &l) == 1)
        return l >= 10;
    return strcmp(hf, "model.embed_tokens.weight") != 0;
}

static void test_order(void **state)
{
    (void)state;
    qp_llama_config cfg = {
        .arch = QP_ARCH_LLAMA, .vocab = 64, .hidden = 32, .n_layers = 12, .n_heads = 4, .n_kv_heads = 2,
        .head_dim = 8, .intermediate = 64, .rms_eps = 1e-6f, .rope_theta = 10000, .max_pos = 128,
    };
    qp_gguf_llama_tensor *t;
    size_t n;
    assert_int_equal(qp_gguf_llama_tensors(&t, &n, &cfg, QP_GGUF_LAYOUT_CONVERT, NULL, NULL), 0);
    assert_int_equal(n, 3 + 12 * 9);
    /* python's sorted keys: "model.layers.10." < "model.layers.2." */
    assert_string_equal(t[0].gguf_name, "output.weight");
    assert_string_equal(t[1].gguf_name, "token_embd.weight");
    assert_string_equal(t[2].gguf_name, "blk.0.attn_norm.weight");
    assert_string_equal(t[11].gguf_name, "blk.1.attn_norm.weight");
    assert_string_equal(t[20].gguf_name, "blk.10.attn_norm.weight");
    assert_string_equal(t[n - 1].gguf_name, "output_norm.weight");
    /* shapes and the permuted heads */
    for (size_t i = 0; i < n; i++) {
        if (strcmp(t[i].gguf_name, "blk.1.attn_k.weight") == 0) {
            assert_int_equal(t[i].ne[0], 32);
            assert_int_equal(t[i].ne[1], 16);
            assert_int_equal(t[i].rope_heads, 2);
        }
        if (strcmp(t[i].gguf_name, "blk.1.attn_q.weight") == 0)
            assert_int_equal(t[i].rope_heads, 4);
        if (strcmp(t[i].gguf_name, "blk.1.attn_v.weight") == 0)
            assert_int_equal(t[i].rope_heads, 0);
        if (strcmp(t[i].gguf_name, "blk.1.ffn_down.weight") == 0) {
            assert_int_equal(t[i].ne[0], 64);
            assert_int_equal(t[i].ne[1], 32);
        }
        if (strcmp(t[i].gguf_name, "output_norm.weight") == 0) {
            assert_int_equal(t[i].n_dims, 1);
            assert_int_equal(t[i].ne[1], 1);
        }
    }
    free(t);
    assert_int_equal(qp_gguf_llama_tensors(&t, &n, &cfg, QP_GGUF_LAYOUT_CONVERT, two_parts, NULL), 0);
    assert_string_equal(t[0].gguf_name, "token_embd.weight");
    assert_string_equal(t[1].gguf_name, "blk.0.attn_norm.weight");
    assert_string_equal(t[1 + 10 * 9].gguf_name, "output.weight");
    assert_string_equal(t[2 + 10 * 9].gguf_name, "blk.10.attn_norm.weight");
    assert_string_equal(t[n - 1].gguf_name, "output_norm.weight");
    free(t);
    /* llama-quantize: non-layer tensors, then layers numerically */
    cfg.tied_embeddings = 1;
    assert_int_equal(qp_gguf_llama_tensors(&t, &n, &cfg, QP_GGUF_LAYOUT_QUANTIZE, NULL, NULL), 0);
    assert_int_equal(n, 2 + 12 * 9);
    assert_string_equal(t[0].gguf_name, "output_norm.weight");
    assert_string_equal(t[1].gguf_name, "token_embd.weight");
    assert_string_equal(t[2].gguf_name, "blk.0.attn_k.weight");
    assert_string_equal(t[2 + 2 * 9].gguf_name, "blk.2.attn_k.weight");
    assert_string_equal(t[n - 1].gguf_name, "blk.11.ffn_up.weight");
    free(t);
    /* qwen2 (tests/model/test_gguf_export_qwen.c): q/k rows stay in HF order */
    cfg.arch = QP_ARCH_QWEN2;
    assert_int_equal(qp_gguf_llama_tensors(&t, &n, &cfg, QP_GGUF_LAYOUT_QUANTIZE, NULL, NULL), 0);
    assert_int_equal(n, 2 + 12 * 9);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(t[i].rope_heads, 0);
    free(t);
    cfg.arch = (qp_arch)0;
    assert_int_equal(qp_gguf_llama_tensors(&t, &n, &cfg, QP_GGUF_LAYOUT_QUANTIZE, NULL, NULL), QP_EUSAGE);
    assert_string_equal(qp_error_last(), "config: architecture '?' cannot be exported to GGUF (only llama / "
                                         "mistral / qwen2)");
    assert_null(t);
}

static void test_permute_rows(void **state)
{
    (void)state;
    enum { H = 3, HD = 8, ROWS = H * HD, COLS = 5 };
    float src[ROWS * COLS], a[ROWS * COLS], b[ROWS * COLS], back[ROWS * COLS];
    for (int i = 0; i < ROWS * COLS; i++)
        src[i] = (float)i;
    /* f32 rows: the same as the forward pass's permutation */
    qp_llama_rope_permute(a, src, H, HD, COLS, 1);
    assert_int_equal(qp_gguf_llama_permute_rows(b, src, ROWS, COLS * sizeof(float), H, 1), 0);
    assert_memory_equal(a, b, sizeof(a));
    /* GGUF row 1 of head 0 is HF row head_dim/2 (its rotate-half partner) */
    assert_true(b[1 * COLS] == src[(HD / 2) * COLS]);
    assert_true(b[2 * COLS] == src[1 * COLS]);
    assert_int_equal(qp_gguf_llama_permute_rows(back, b, ROWS, COLS * sizeof(float), H, 0), 0);
    assert_memory_equal(back, src, sizeof(src));

    /* packed rows commute with row-wise quantization: quantize then permute
     * == permute then quantize */
    enum { R = 4 * 16, C = 64 };
    float *w = malloc(R * C * sizeof(float)), *wp = malloc(R * C * sizeof(float));
    for (int i = 0; i < R * C; i++)
        w[i] = sinf((float)i * 0.37f) * (1.0f + (float)(i % 7));
    size_t rs = qp_qtype_row_size(QP_GGML_Q4_K, C);
    assert_int_equal(rs, 0);   /* 64 is not a Q4_K row */
    rs = qp_qtype_row_size(QP_GGML_Q5_1, C);
    uint8_t *q1 = malloc(R * rs), *q2 = malloc(R * rs), *q3 = malloc(R * rs);
    assert_int_equal(qp_quantize(QP_GGML_Q5_1, w, q1, R, C, NULL, 1), 0);
    assert_int_equal(qp_gguf_llama_permute_rows(q2, q1, R, rs, 4, 1), 0);
    assert_int_equal(qp_gguf_llama_permute_rows(wp, w, R, C * sizeof(float), 4, 1), 0);
    assert_int_equal(qp_quantize(QP_GGML_Q5_1, wp, q3, R, C, NULL, 1), 0);
    assert_memory_equal(q2, q3, R * rs);
    free(w);
    free(wp);
    free(q1);
    free(q2);
    free(q3);

    assert_int_equal(qp_gguf_llama_permute_rows(b, src, 10, 4, 3, 1), QP_EUSAGE);
    assert_string_equal(qp_error_last(), "q/k permutation: 10 rows do not split into 3 heads of even size");
}

/* ---------- metadata helpers ---------- */

static void test_title_and_size_label(void **state)
{
    (void)state;
    char out[64];
    static const char *const titles[][2] = {
        { "house-llama", "House Llama" },
        { "Llama-2-7b-hf", "Llama 2 7b Hf" },
        { "mistral-v0.1", "Mistral v0.1" },
        { "gpt2-xl", "Gpt2 Xl" },
        { "tinyllama_v1.1", "Tinyllama_V1.1" },
        { "TinyLlama-1.1B", "TinyLlama 1.1B" },
        { "--a--b", "A B" },
    };
    for (size_t i = 0; i < sizeof(titles) / sizeof(titles[0]); i++) {
        qp_gguf_llama_title(out, sizeof(out), titles[i][0]);
        assert_string_equal(out, titles[i][1]);
    }
    static const struct { uint64_t n; const char *label; } labels[] = {
        { 5246208, "5.2M" }, { 7241732096ull, "7.2B" }, { 124439808, "124M" }, { 999, "1.0K" },
        { 1500, "1.5K" }, { 70553706496ull, "71B" }, { 1100048384, "1.1B" }, { 2500000000000ull, "2.5T" },
        { 400, "0.40K" },
    };
    for (size_t i = 0; i < sizeof(labels) / sizeof(labels[0]); i++) {
        qp_gguf_llama_size_label(out, sizeof(out), labels[i].n);
        assert_string_equal(out, labels[i].label);
    }
}

static void test_opts_from_hf_dir(void **state)
{
    (void)state;
    char *dir = qp_test_tmpdir();
    char *md = qp_path_join(dir, "Org-Model-v2");
    char *p;
    qp_llama_config cfg = { .arch = QP_ARCH_LLAMA, .vocab = 100 };
    p = qp_path_join(md, "config.json");
    qp_test_write_str(p, "{\"bos_token_id\": 1, \"eos_token_id\": [2, 3], \"pad_token_id\": 0, "
                         "\"unk_token_id\": 500, \"head_dim\": 64}");
    free(p);
    p = qp_path_join(md, "tokenizer.json");
    qp_test_write_str(p, "{\"added_tokens\": [{\"id\": 0, \"content\": \"<unk>\"}, {\"id\": 2, \"content\": \"</s>\"},"
                         " {\"id\": 1, \"content\": \"<s>\"}]}");
    free(p);
    p = qp_path_join(md, "tokenizer_config.json");
    qp_test_write_str(p, "{\"add_bos_token\": false, \"add_eos_token\": true, \"chat_template\": \"{{x}}\","
                         " \"unk_token\": {\"content\": \"<unk>\"}, \"eos_token\": \"</s>\", \"sep_token\": \"<none>\","
                         " \"added_tokens_decoder\": {\"7\": {\"content\": \"<|im_end|>\", \"special\": false},"
                         " \"8\": {\"content\": \"\\u2581hello\\u2581x\", \"special\": false},"
                         " \"9\": {\"content\": \"<tool>\", \"special\": true}}}");
    free(p);
    p = qp_path_join(md, "added_tokens.json");
    qp_test_write_str(p, "{\"<extra>\": 10, \"<far>\": 1000}");
    free(p);
    qp_gguf_llama_opts o;
    assert_int_equal(qp_gguf_llama_opts_from_hf_dir(&o, &cfg, md), 0);
    assert_string_equal(o.name, "Org Model v2");
    assert_int_equal(o.head_dim_keys, 1);
    assert_int_equal(o.add_bos, 0);
    assert_int_equal(o.add_eos, 1);
    assert_string_equal(o.chat_template, "{{x}}");
    /* tokenizer.json matches first (eos, unk in type order), then config.json
     * (bos, pad; its eos list and out-of-range unk are ignored) */
    assert_int_equal(o.n_special, 4);
    assert_int_equal(o.special[0].typ, QP_SPECIAL_EOS);
    assert_int_equal(o.special[0].id, 2);
    assert_int_equal(o.special[1].typ, QP_SPECIAL_UNK);
    assert_int_equal(o.special[1].id, 0);
    assert_int_equal(o.special[2].typ, QP_SPECIAL_BOS);
    assert_int_equal(o.special[2].id, 1);
    assert_int_equal(o.special[3].typ, QP_SPECIAL_PAD);
    assert_int_equal(o.special[3].id, 0);
    assert_int_equal(o.n_added_decoder, 3);
    assert_int_equal(o.added_decoder[2].id, 9);
    assert_int_equal(o.added_decoder[2].special, 1);
    assert_int_equal(o.n_added_json, 2);
    qp_gguf_llama_opts_free(&o);

    /* an export needs a tensor_data callback */
    char *tokp = qp_test_shared_path("models/house-llama/tokenizer.model");
    qp_llama_config small = {
        .arch = QP_ARCH_LLAMA, .vocab = 1030, .hidden = 32, .n_layers = 1, .n_heads = 2, .n_kv_heads = 2,
        .head_dim = 16, .intermediate = 64, .rms_eps = 1e-6f, .rope_theta = 500000, .max_pos = 64,
        .tied_embeddings = 1, .bos_id = 1, .eos_id = 2,
    };
    p = qp_path_join(md, "added_tokens.json");
    qp_test_write_str(p, "{\"<extra>\": 1025, \"<far>\": 5000}");
    free(p);
    assert_int_equal(qp_gguf_llama_opts_from_hf_dir(&o, &small, md), 0);
    qp_gguf_llama_source src = { .tensor_data = NULL };
    qp_gguf_writer *w;
    char *out = qp_path_join(dir, "small.gguf");
    assert_int_equal(qp_gguf_llama_export_new(&w, out, &small, tokp, &src, &o), QP_EUSAGE);
    free(out);
    qp_gguf_llama_opts_free(&o);
    free(tokp);
    qp_test_rmtree(dir);
    free(md);
    free(dir);
}

static void test_small_tied_padded(void **state)
{
    (void)state;
    char *dir = qp_test_tmpdir();
    char *md = qp_path_join(dir, "tiny");
    char *p = qp_path_join(md, "tokenizer_config.json");
    qp_test_write_str(p, "{\"added_tokens_decoder\": {\"1026\": {\"content\": \"\\u2581hi\", \"special\": false},"
                         " \"1027\": {\"content\": \"<|end|>\"}}}");
    free(p);
    p = qp_path_join(md, "added_tokens.json");
    qp_test_write_str(p, "{\"<extra>\": 1025, \"<far>\": 5000}");
    free(p);
    char *tokp = qp_test_shared_path("models/house-llama/tokenizer.model");
    qp_llama_config small = {
        .arch = QP_ARCH_MISTRAL, .vocab = 1030, .hidden = 32, .n_layers = 1, .n_heads = 2, .n_kv_heads = 2,
        .head_dim = 16, .intermediate = 64, .rms_eps = 1e-6f, .rope_theta = 500000, .max_pos = 64,
        .tied_embeddings = 1, .bos_id = 1, .eos_id = 2,
    };
    qp_gguf_llama_opts o;
    assert_int_equal(qp_gguf_llama_opts_from_hf_dir(&o, &small, md), 0);
    assert_int_equal(o.n_special, 0);   /* no config.json here */
    qp_gguf_llama_source src = { .tensor_data = qp_test_gguf_zero_data };
    qp_gguf_writer *w;
    char *out = qp_path_join(dir, "small.gguf");
    assert_int_equal(qp_gguf_llama_export_new(&w, out, &small, tokp, &src, &o), 0);
    assert_int_equal(qp_gguf_writer_finish(w), 0);
    qp_gguf *g;
    assert_int_equal(qp_gguf_open(&g, out), 0);
    assert_null(qp_gguf_find_tensor(g, "output.weight"));
    assert_int_equal(qp_gguf_tensor_count(g), 2 + 9);
    const char *s;
    assert_int_equal(qp_gguf_get_string(g, "general.architecture", &s, NULL), 0);
    assert_string_equal(s, "llama");
    assert_int_equal(qp_gguf_get_string(g, "general.name", &s, NULL), 0);
    assert_string_equal(s, "Tiny");
    assert_int_equal(qp_gguf_get_string(g, "general.size_label", &s, NULL), 0);
    assert_string_equal(s, "43K");   /* 1030·32 + 32 + layer 0's 10 304 = 43 296 */
    float theta;
    assert_int_equal(qp_gguf_get_f32(g, "llama.rope.freq_base", &theta), 0);
    assert_true(theta == 500000.0f);
    assert_null(qp_gguf_find(g, "tokenizer.ggml.bos_token_id"));
    assert_null(qp_gguf_find(g, "tokenizer.ggml.add_bos_token"));
    const qp_gguf_value *tokens, *scores, *types;
    assert_int_equal(qp_gguf_get_array(g, "tokenizer.ggml.tokens", QP_GGUF_STRING, &tokens), 0);
    assert_int_equal(qp_gguf_get_array(g, "tokenizer.ggml.scores", QP_GGUF_F32, &scores), 0);
    assert_int_equal(qp_gguf_get_array(g, "tokenizer.ggml.token_type", QP_GGUF_I32, &types), 0);
    assert_int_equal(qp_gguf_array_len(tokens), 1030);
    static const struct { int id; const char *tok; double score; int type; } want[] = {
        { 1024, "[PAD1024]", -10000.0, 5 },
        { 1025, "<extra>", -1000.0, 4 },
        { 1026, " hi", -1000.0, 4 },
        { 1027, "<|end|>", -1000.0, 3 },
        { 1029, "[PAD1029]", -10000.0, 5 },
        { 0, "<unk>", 0.0, 2 },
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        double sc;
        int64_t ty;
        assert_int_equal(qp_gguf_array_get_string(tokens, want[i].id, &s, NULL), 0);
        assert_string_equal(s, want[i].tok);
        assert_int_equal(qp_gguf_array_get_float(scores, want[i].id, &sc), 0);
        assert_true(sc == want[i].score);
        assert_int_equal(qp_gguf_array_get_int(types, want[i].id, &ty), 0);
        assert_int_equal(ty, want[i].type);
    }
    qp_gguf_free(g);

    /* fewer ids in the config than pieces in tokenizer.model */
    small.vocab = 1000;
    assert_int_equal(qp_gguf_llama_export_new(&w, out, &small, tokp, &src, &o), QP_EFORMAT);
    char *msg = qp_strfmt("%s: 1024 pieces, more than the config's vocab_size 1000", tokp);
    assert_string_equal(qp_error_last(), msg);
    free(msg);
    /* a missing tokenizer.model */
    small.vocab = 1030;
    char *missing = qp_path_join(dir, "nope.model");
    assert_int_equal(qp_gguf_llama_export_new(&w, out, &small, missing, &src, &o) < 0, 1);
    assert_non_null(strstr(qp_error_last(), "nope.model"));
    free(missing);
    qp_gguf_llama_opts_free(&o);
    free(out);
    free(tokp);
    qp_test_rmtree(dir);
    free(md);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_house_f32_identical),
        cmocka_unit_test(test_house_q8_0_identical),
        cmocka_unit_test(test_house_mixes_identical),
        cmocka_unit_test(test_extra_keys_and_failure),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_order),
        cmocka_unit_test(test_permute_rows),
        cmocka_unit_test(test_title_and_size_label),
        cmocka_unit_test(test_opts_from_hf_dir),
        cmocka_unit_test(test_small_tied_padded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
