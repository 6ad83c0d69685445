/* Qwen2-style models (q/k/v biases, tied embeddings) through the linear
 * methods and their Hugging Face exports, on a small synthetic Qwen2
 * checkpoint written here: 2 layers, 4 heads and 4 key/value heads (no GQA,
 * so AWQ also searches the v_proj -> o_proj group) and the house-llama
 * SentencePiece tokenizer (which the pipeline reads today).  The v_proj
 * biases are large and differ per channel, so o_proj's input channels
 * differ in magnitude and AWQ's o group scales them by s != 1.
 *
 *   - every bias passes through GPTQ and RTN as the very source object; AWQ
 *     keeps q/k biases and stores v_proj's bias divided by the o group's
 *     scales (F32), with the layer's function kept: 8-bit AWQ is as close
 *     to the unquantized model as 8-bit RTN (a v bias left unscaled while
 *     v's rows are divided by s would shift o_proj's input by b·(s − 1));
 *   - tied embeddings: no lm_head anywhere, the embedding kept as the
 *     source object by GPTQ/AWQ/RTN; mixed measures and types it as one
 *     weight (its KLD covers both uses: qp_llama's head IS the embedding);
 *     mixed keeps every bias as its source object;
 *   - the GPTQ and AWQ exports, decoded by this file's own readers (layouts
 *     in stages/package_hf.h), give back bit for bit the weights evaluate
 *     used (qp_qtensor_to_f32 of the artifact), after the fp16 rounding the
 *     formats imply for dense tensors; every bias is there (F16), lm_head is
 *     not, and the tokenizer files are copied unchanged. */
#include "tests/stages/stage_test_helpers.h"
#include "tests/support/hf_packed.h"

#include "artifact/artifact.h"
#include "common/tensor.h"
#include "model/safetensors.h"
#include "stages/qtensor.h"

#include <jansson.h>
#include <math.h>
#include <string.h>

enum { V = 1024, D = 64, H = 4, HD = 16, F = 128, L = 2 };

static char *model_dir;

/* dims [d0] or [d0, d1] of BF16 from f32 */
static void add_bf16(qp_st_writer *w, const char *name, const float *x, uint64_t d0, uint64_t d1)
{
    uint64_t n = d0 * (d1 ? d1 : 1), shape[2] = {d0, d1};
    uint16_t *h = malloc(n * 2);
    for (uint64_t k = 0; k < n; k++)
        h[k] = qp_f32_to_bf16(x[k]);
    assert_int_equal(qp_st_writer_add(w, name, QP_DT_BF16, d1 ? 2 : 1, shape, h, n * 2), 0);
    free(h);
}

static void gauss_fill(float *x, uint64_t n, float scale)
{
    for (uint64_t k = 0; k < n; k++)
        x[k] = qp_test_gauss() * scale;
}

static void copy_shared(const char *rel, const char *name)
{
    char *src = qp_test_shared_path(rel), *text = NULL, *dst = qp_path_join(model_dir, name);
    size_t n = 0;
    assert_int_equal(qp_read_file(src, &text, &n), 0);
    qp_test_write(dst, text, n);
    free(text);
    free(src);
    free(dst);
}

/* The synthetic Qwen2 checkpoint in model_dir. */
static void make_model(void)
{
    model_dir = qp_path_join(dir, "qwen-tiny");
    char *p = qp_path_join(model_dir, "config.json");
    qp_test_write_str(p, "{\"architectures\": [\"Qwen2ForCausalLM\"], \"model_type\": \"qwen2\", \"vocab_size\": 1024,"
                         " \"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2,"
                         " \"num_attention_heads\": 4, \"num_key_value_heads\": 4, \"max_position_embeddings\": 128,"
                         " \"rms_norm_eps\": 1e-06, \"rope_theta\": 10000.0, \"tie_word_embeddings\": true,"
                         " \"use_sliding_window\": false, \"sliding_window\": 128, \"hidden_act\": \"silu\","
                         " \"bos_token_id\": 1, \"eos_token_id\": 2, \"torch_dtype\": \"bfloat16\"}\n");
    free(p);
    copy_shared("models/house-llama/tokenizer.model", "tokenizer.model");
    copy_shared("models/house-llama/tokenizer_config.json", "tokenizer_config.json");
    copy_shared("models/house-llama/generation_config.json", "generation_config.json");
    p = qp_path_join(model_dir, "special_tokens_map.json");
    qp_test_write_str(p, "{\"bos_token\": \"<s>\", \"eos_token\": \"</s>\"}\n");
    free(p);

    qp_test_seed(20261203);
    p = qp_path_join(model_dir, "model.safetensors");
    qp_st_writer *w = NULL;
    assert_int_equal(qp_st_writer_new(&w, p), 0);
    free(p);
    float *x = malloc((size_t)V * D * sizeof(float));
    gauss_fill(x, (uint64_t)V * D, 0.5f);
    add_bf16(w, "model.embed_tokens.weight", x, V, D);
    for (int k = 0; k < D; k++)
        x[k] = 1.0f + 0.1f * qp_test_gauss();
    add_bf16(w, "model.norm.weight", x, D, 0);
    char name[160];
    for (int l = 0; l < L; l++) {
        static const struct { const char *suffix; uint64_t rows, cols; } mats[] = {
            {"self_attn.q_proj.weight", H * HD, D}, {"self_attn.k_proj.weight", H * HD, D},
            {"self_attn.v_proj.weight", H * HD, D}, {"self_attn.o_proj.weight", D, H * HD},
            {"mlp.gate_proj.weight", F, D},         {"mlp.up_proj.weight", F, D},
            {"mlp.down_proj.weight", D, F},
        };
        for (size_t i = 0; i < sizeof(mats) / sizeof(mats[0]); i++) {
            gauss_fill(x, mats[i].rows * mats[i].cols, 1.0f / sqrtf((float)mats[i].cols));
            snprintf(name, sizeof(name), "model.layers.%d.%s", l, mats[i].suffix);
            add_bf16(w, name, x, mats[i].rows, mats[i].cols);
        }
        static const char *norms[] = {"input_layernorm.weight", "post_attention_layernorm.weight"};
        for (int i = 0; i < 2; i++) {
            for (int k = 0; k < D; k++)
                x[k] = 1.0f + 0.1f * qp_test_gauss();
            snprintf(name, sizeof(name), "model.layers.%d.%s", l, norms[i]);
            add_bf16(w, name, x, D, 0);
        }
        static const char *biases[] = {"q_proj", "k_proj", "v_proj"};
        for (int i = 0; i < 3; i++) {
            for (int k = 0; k < H * HD; k++) {
                /* v: |b| from 0.25 to 4, both signs; q/k: small */
                float u = qp_test_uniform();
                x[k] = i == 2 ? (k % 2 ? -1.0f : 1.0f) * 0.25f * powf(16.0f, u) : 0.2f * qp_test_gauss();
            }
            snprintf(name, sizeof(name), "model.layers.%d.self_attn.%s.bias", l, biases[i]);
            add_bf16(w, name, x, H * HD, 0);
        }
    }
    free(x);
    assert_int_equal(qp_st_writer_set_metadata(w, "format", "pt"), 0);
    assert_int_equal(qp_st_writer_finish(w), 0);
}

static const char *digest_of(const qp_artifact *a, const char *tensor)
{
    char entry[200];
    snprintf(entry, sizeof(entry), "tensors/%s", tensor);
    const json_t *e = qp_artifact_find(a, entry);
    if (!e)
        fail_msg("no %s", entry);
    return qp_artifact_entry_digest(e);
}

static int is_bias(const char *name)
{
    size_t n = strlen(name);
    return n > 5 && strcmp(name + n - 5, ".bias") == 0;
}

static int is_v_bias(const char *name)
{
    return strstr(name, "v_proj.bias") != NULL;
}

/* ---- the exports, decoded from the layouts (stages/package_hf.h) ---- */

static const qp_tensor_view *need(const qp_safetensors *st, const char *base, const char *suffix, qp_dtype dt)
{
    char name[200];
    snprintf(name, sizeof(name), "%s.%s", base, suffix);
    const qp_tensor_view *t = qp_safetensors_find(st, name);
    if (!t)
        fail_msg("export lacks %s", name);
    assert_int_equal(t->dtype, dt);
    return t;
}

/* GPTQ v1: w[o][i] = scales[g][o]·(q − ((qzeros + 1) & maxq)), g = g_idx[i]. */
static void decode_gptq(const qp_safetensors *st, const char *base, int bits, int64_t out, int64_t in, float *w)
{
    const qp_tensor_view *qw = need(st, base, "qweight", QP_DT_I32), *qz = need(st, base, "qzeros", QP_DT_I32);
    const qp_tensor_view *sc = need(st, base, "scales", QP_DT_F16), *gi = need(st, base, "g_idx", QP_DT_I32);
    const unsigned maxq = (1u << bits) - 1;
    assert_int_equal(qw->shape[0], (uint64_t)in * (uint64_t)bits / 32);
    assert_int_equal(qw->shape[1], (uint64_t)out);
    for (int64_t o = 0; o < out; o++)
        for (int64_t i = 0; i < in; i++) {
            int32_t g = (int32_t)qp_test_word_at(gi, (uint64_t)i);
            unsigned q = qp_test_stream_field(qw, (uint64_t)o, (uint64_t)out, (uint64_t)i, bits);
            unsigned z = (qp_test_stream_field(qz, (uint64_t)g * qz->shape[1], 1, (uint64_t)o, bits) + 1) & maxq;
            w[o * in + i] = qp_test_f16_at(sc, (uint64_t)g * (uint64_t)out + (uint64_t)o) * (float)((int)q - (int)z);
        }
}

/* AutoAWQ GEMM: nibble j of word c holds output 8c + {0,2,4,6,1,3,5,7}[j]; g = i / group. */
static void decode_awq(const qp_safetensors *st, const char *base, int group, int64_t out, int64_t in, float *w)
{
    static const int order[8] = {0, 2, 4, 6, 1, 3, 5, 7};
    const qp_tensor_view *qw = need(st, base, "qweight", QP_DT_I32), *qz = need(st, base, "qzeros", QP_DT_I32);
    const qp_tensor_view *sc = need(st, base, "scales", QP_DT_F16);
    char g_idx[240];
    snprintf(g_idx, sizeof(g_idx), "%s.g_idx", base);
    assert_null(qp_safetensors_find(st, g_idx));   /* AWQ has no act-order */
    const uint64_t words = (uint64_t)out / 8;
    assert_int_equal(qw->shape[0], (uint64_t)in);
    assert_int_equal(qw->shape[1], words);
    for (int64_t i = 0; i < in; i++)
        for (uint64_t c = 0; c < words; c++)
            for (int j = 0; j < 8; j++) {
                int64_t o = (int64_t)(8 * c) + order[j];
                uint64_t g = (uint64_t)(i / group);
                unsigned q = (qp_test_word_at(qw, (uint64_t)i * words + c) >> (4 * j)) & 15u;
                unsigned z = (qp_test_word_at(qz, g * words + c) >> (4 * j)) & 15u;
                w[o * in + i] = qp_test_f16_at(sc, g * (uint64_t)out + (uint64_t)o) * (float)((int)q - (int)z);
            }
}

/* Every tensor of artifact `a` against the export in dir/<out>: linear ones
 * decoded bit for bit, dense ones (biases included) as fp16 of the f32 the
 * forward pass reads; nothing else in the file; the tokenizer files copied. */
static void check_export(const qp_artifact *a, const char *out, int awq, int bits, int group, int layers,
                         const char *src_dir, const char *const *files)
{
    char *pkg = qp_path_join(dir, out), *path = qp_path_join(pkg, "model.safetensors");
    qp_safetensors *st = NULL;
    assert_int_equal(qp_safetensors_open(&st, path), 0);
    size_t n_expected = 0, n_bias = 0, n_linear = 0;
    for (size_t i = 0; i < qp_artifact_count(a); i++) {
        const json_t *e = qp_artifact_entry(a, i);
        const char *ename = qp_artifact_entry_name(e);
        if (strncmp(ename, "tensors/", 8) != 0)
            continue;
        const char *tname = ename + 8;
        uint64_t nelem = qp_qtensor_nelem(e);
        float *want = malloc(nelem * sizeof(float)), *got = malloc(nelem * sizeof(float));
        void *buf = NULL;
        size_t len = 0;
        assert_int_equal(qp_cache_get(cache, qp_artifact_entry_digest(e), &buf, &len), 0);
        assert_int_equal(qp_qtensor_to_f32(e, buf, len, want, nelem, tname), 0);
        free(buf);
        const char *fmt = json_string_value(json_object_get(e, "format"));
        if (fmt && !strcmp(fmt, "linear")) {
            int64_t rows, cols;
            qp_qtensor_rows_cols(e, &rows, &cols);
            char base[200];
            snprintf(base, sizeof(base), "%.*s", (int)(strlen(tname) - 7), tname);
            if (awq)
                decode_awq(st, base, group, rows, cols, got);
            else
                decode_gptq(st, base, bits, rows, cols, got);
            assert_memory_equal(got, want, nelem * sizeof(float));
            n_expected += awq ? 3 : 4;
            n_linear++;
        } else {
            const qp_tensor_view *t = qp_safetensors_find(st, tname);
            if (!t)
                fail_msg("export lacks %s", tname);
            assert_int_equal(t->dtype, QP_DT_F16);
            assert_int_equal(t->nelem, nelem);
            for (uint64_t k = 0; k < nelem; k++)
                if (qp_test_f16_at(t, k) != qp_f16_to_f32(qp_f32_to_f16(want[k])))
                    fail_msg("%s[%llu]: export %g, evaluated %g", tname, (unsigned long long)k, (double)qp_test_f16_at(t, k),
                             (double)want[k]);
            n_expected++;
            n_bias += is_bias(tname);
        }
        free(want);
        free(got);
    }
    assert_int_equal(n_linear, 7 * layers);
    assert_int_equal(n_bias, 3 * layers);
    assert_null(qp_safetensors_find(st, "lm_head.weight"));
    assert_int_equal(qp_safetensors_count(st), n_expected);
    qp_safetensors_free(st);
    for (size_t i = 0; files[i]; i++) {
        char *mine = qp_path_join(pkg, files[i]), *src = qp_path_join(src_dir, files[i]);
        char *x = NULL, *y = NULL;
        size_t nx = 0, ny = 0;
        assert_int_equal(qp_read_file(mine, &x, &nx), 0);
        assert_int_equal(qp_read_file(src, &y, &ny), 0);
        assert_int_equal(nx, ny);
        assert_memory_equal(x, y, nx);
        free(x);
        free(y);
        free(mine);
        free(src);
    }
    free(path);
    free(pkg);
}

static char *recipe(const char *stages)
{
    char *train = qp_test_shared_path("data/shakespeare/train.txt");
    char *valid = qp_test_shared_path("data/shakespeare/valid.txt");
    char *text = qp_strfmt("qpipe: 1\nname: qwen\nvars: {valid: \"%s\"}\nstages:\n"
                           "  model: {uses: fetch, with: {source: \"%s\"}}\n"
                           "  calib: {uses: calibrate, needs: [model], with: {dataset: \"%s\", samples: 8, "
                           "seq_len: 64, seed: 0}}\n"
                           "  base: {uses: evaluate, needs: [model], with: {dataset: \"${vars.valid}\", ctx: 64, "
                           "max_chunks: 24}}\n%s",
                           valid, model_dir, train, stages);
    free(train);
    free(valid);
    return text;
}

#define EVAL(id, q) "  " id ": {uses: evaluate, needs: [" q "], with: {dataset: \"${vars.valid}\", ctx: 64, " \
                    "max_chunks: 24, reference: base}}\n"

/* mixed: the tied embedding is one weight (measured through both its
 * uses, the head included) and gets a ladder type; no lm_head */
static void check_mixed_tied(const qp_artifact *mixed)
{
    assert_null(qp_artifact_find(mixed, "tensors/lm_head.weight"));
    const json_t *sens = json_object_get(json_object_get(qp_artifact_meta_c(mixed), "mixed"), "sensitivity"), *se;
    size_t si, n_embed = 0;
    json_array_foreach(sens, si, se) {
        const char *t = json_string_value(json_object_get(se, "tensor"));
        assert_string_not_equal(t, "lm_head.weight");
        if (strcmp(t, "model.embed_tokens.weight") != 0)
            continue;
        n_embed++;
        const json_t *e = qp_artifact_find(mixed, "tensors/model.embed_tokens.weight");
        assert_string_equal(json_string_value(json_object_get(e, "format")), "ggml");
        assert_string_equal(json_string_value(json_object_get(e, "qtype")),
                            json_string_value(json_object_get(se, "chosen")));
    }
    assert_int_equal(n_embed, 1);
    assert_int_equal(json_array_size(sens), 7 * L + 1);
}

/* biases: the source objects, but AWQ's v_proj bias, divided by the o
 * group's scales (dense F32); mixed keeps them all */
static void check_biases(const qp_artifact *src, const qp_artifact *const *quantized, const qp_artifact *mixed,
                         const qp_artifact *awq8, const qp_artifact *awq4)
{
    size_t n_bias = 0;
    for (size_t i = 0; i < qp_artifact_count(src); i++) {
        const char *name = qp_artifact_entry_name(qp_artifact_entry(src, i)) + 8;
        if (!is_bias(name))
            continue;
        n_bias++;
        assert_string_equal(digest_of(mixed, name), digest_of(src, name));
        for (size_t q = 0; q < 4; q++) {
            int awq = quantized[q] == awq8 || quantized[q] == awq4;
            if (awq && is_v_bias(name)) {
                assert_string_not_equal(digest_of(quantized[q], name), digest_of(src, name));
                char entry[200];
                snprintf(entry, sizeof(entry), "tensors/%s", name);
                const json_t *e = qp_artifact_find(quantized[q], entry);
                assert_string_equal(json_string_value(json_object_get(e, "format")), "dense");
                assert_string_equal(json_string_value(json_object_get(e, "dtype")), "F32");
            } else {
                assert_string_equal(digest_of(quantized[q], name), digest_of(src, name));
            }
        }
    }
    assert_int_equal(n_bias, 3 * L);
}

/* the o group was searched in every layer, and scaled (alpha > 0) */
static void check_o_group_scaled(const qp_artifact *awq8)
{
    const json_t *layers = json_object_get(qp_artifact_meta_c(awq8), "awq");
    assert_int_equal(json_array_size(layers), L);
    for (size_t l = 0; l < L; l++) {
        const json_t *groups = json_array_get(layers, l), *g;
        size_t i, n_o = 0;
        json_array_foreach(groups, i, g) {
            if (strcmp(json_string_value(json_object_get(g, "group")), "attn_out") != 0)
                continue;
            n_o++;
            assert_true(json_number_value(json_object_get(g, "alpha")) > 0);
        }
        assert_int_equal(n_o, 1);
    }
}

/* v_proj skipped: no o group searched, v_proj's weight and bias the source objects */
static void check_v_skipped(const qp_artifact *src, const qp_artifact *awq8s)
{
    const json_t *layers = json_object_get(qp_artifact_meta_c(awq8s), "awq");
    for (size_t l = 0; l < L; l++) {
        const json_t *groups = json_array_get(layers, l), *g;
        size_t i;
        json_array_foreach(groups, i, g)
            assert_string_not_equal(json_string_value(json_object_get(g, "group")), "attn_out");
        char name[160];
        snprintf(name, sizeof(name), "model.layers.%zu.self_attn.v_proj.weight", l);
        assert_string_equal(digest_of(awq8s, name), digest_of(src, name));
        snprintf(name, sizeof(name), "model.layers.%zu.self_attn.v_proj.bias", l);
        assert_string_equal(digest_of(awq8s, name), digest_of(src, name));
    }
}

static void test_biases_and_tied_embeddings(void **state)
{
    (void)state;
    make_model();
    char *text = recipe("  rtn8: {uses: quantize, needs: [model], with: {method: rtn, bits: 8, group_size: 32}}\n"
                        "  awq8: {uses: quantize, needs: [model, calib], with: {method: awq, bits: 8, "
                        "group_size: 32, clip: false}}\n"
                        "  gptq4: {uses: quantize, needs: [model, calib], with: {method: gptq, bits: 4, "
                        "group_size: 32, act_order: true}}\n"
                        "  awq4: {uses: quantize, needs: [model, calib], with: {method: awq, bits: 4, "
                        "group_size: 32}}\n"
                        "  awq8s: {uses: quantize, needs: [model, calib], with: {method: awq, bits: 8, "
                        "group_size: 32, clip: false, skip: [\"*.v_proj.weight\"]}}\n"
                        "  mixed: {uses: quantize, needs: [model, calib], with: {method: mixed, ladder: [Q4_0, "
                        "Q8_0], max_bpw: 6, windows: 2}}\n"
                        EVAL("e_rtn8", "rtn8") EVAL("e_awq8", "awq8") EVAL("e_awq8s", "awq8s")
                        "  pg: {uses: package, needs: [gptq4], with: {format: gptq, out: pkg-gptq}}\n"
                        "  pa: {uses: package, needs: [awq4], with: {format: awq, out: pkg-awq}}\n");
    if (run_recipe(text) != 0)
        fail_msg("%s", qp_error_last());
    free(text);
    qp_artifact *src = load_output("model"), *rtn8 = load_output("rtn8"), *awq8 = load_output("awq8");
    qp_artifact *gptq4 = load_output("gptq4"), *awq4 = load_output("awq4"), *mixed = load_output("mixed");
    const qp_artifact *quantized[] = {rtn8, awq8, gptq4, awq4};

    check_mixed_tied(mixed);
    /* tied: no lm_head in any artifact, the embedding kept as it was */
    for (size_t q = 0; q < 4; q++) {
        assert_null(qp_artifact_find(quantized[q], "tensors/lm_head.weight"));
        assert_string_equal(digest_of(quantized[q], "model.embed_tokens.weight"),
                            digest_of(src, "model.embed_tokens.weight"));
    }
    check_biases(src, quantized, mixed, awq8, awq4);
    check_o_group_scaled(awq8);
    /* the function kept: 8-bit AWQ about as far from the model as 8-bit RTN
     * (measured: kld_mean rtn 2.25e-4, awq 2.7e-4; with v_proj's bias left
     * unscaled, awq 0.31) */
    qp_artifact *e_rtn = load_output("e_rtn8"), *e_awq = load_output("e_awq8");
    double kr = metric(e_rtn, "kld_mean"), ka = metric(e_awq, "kld_mean");
    print_message("8-bit kld_mean: rtn %.3g, awq %.3g; ppl delta rtn %.4g, awq %.4g\n", kr, ka,
                  metric(e_rtn, "ppl_delta"), metric(e_awq, "ppl_delta"));
    assert_true(ka <= 2.0 * kr);
    /* v_proj skipped (kept as its source object): the o group, whose scales
     * v_proj's rows would absorb, is not searched, and the layer still
     * computes what it did (measured kld_mean 2.5e-4; scaling o_proj
     * against the unscaled v_proj gave 0.51) */
    qp_artifact *awq8s = load_output("awq8s"), *e_awqs = load_output("e_awq8s");
    check_v_skipped(src, awq8s);
    print_message("8-bit awq, v_proj skipped: kld_mean %.3g\n", metric(e_awqs, "kld_mean"));
    assert_true(metric(e_awqs, "kld_mean") <= 2.0 * kr);
    qp_artifact_free(awq8s);
    qp_artifact_free(e_awqs);

    /* the exports decode to the evaluated weights */
    static const char *files[] = {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                                  "generation_config.json", NULL};
    check_export(gptq4, "pkg-gptq", 0, 4, 32, L, model_dir, files);
    check_export(awq4, "pkg-awq", 1, 4, 32, L, model_dir, files);

    qp_artifact_free(e_rtn);
    qp_artifact_free(e_awq);
    qp_artifact_free(src);
    qp_artifact_free(rtn8);
    qp_artifact_free(awq8);
    qp_artifact_free(gptq4);
    qp_artifact_free(awq4);
    qp_artifact_free(mixed);
    free(model_dir);
}

/* house-qwen itself (6 layers, GQA: AWQ has no o group there) at the
 * recipes' 4-bit g128 on a small calibration: both exports decode to the
 * evaluated weights, carry every bias and the tokenizer files. */
static void test_house_qwen_exports(void **state)
{
    (void)state;
    model_dir = qp_test_shared_path("models/house-qwen");
    char *train = qp_test_shared_path("data/shakespeare/train.txt");
    char *text = qp_strfmt("qpipe: 1\nname: house-qwen\nstages:\n"
                           "  model: {uses: fetch, with: {source: \"%s\"}}\n"
                           "  calib: {uses: calibrate, needs: [model], with: {dataset: \"%s\", samples: 8, "
                           "seq_len: 64, seed: 0}}\n"
                           "  gptq: {uses: quantize, needs: [model, calib], with: {method: gptq, bits: 4, "
                           "group_size: 128, act_order: true}}\n"
                           "  awq: {uses: quantize, needs: [model, calib], with: {method: awq, bits: 4, "
                           "group_size: 128, clip: false}}\n"
                           "  pg: {uses: package, needs: [gptq], with: {format: gptq, out: pkg-gptq}}\n"
                           "  pa: {uses: package, needs: [awq], with: {format: awq, out: pkg-awq}}\n",
                           model_dir, train);
    if (run_recipe(text) != 0)
        fail_msg("%s", qp_error_last());
    free(text);
    free(train);
    qp_artifact *src = load_output("model"), *gptq = load_output("gptq"), *awq = load_output("awq");
    assert_non_null(qp_artifact_find(src, "files/tokenizer.json"));
    assert_null(qp_artifact_find(src, "tensors/lm_head.weight"));
    for (int q = 0; q < 2; q++) {
        const qp_artifact *a = q ? awq : gptq;
        assert_null(qp_artifact_find(a, "tensors/lm_head.weight"));
        assert_string_equal(digest_of(a, "model.embed_tokens.weight"), digest_of(src, "model.embed_tokens.weight"));
        /* every bias unchanged: GQA leaves AWQ no o group to fold into v_proj */
        for (size_t i = 0; i < qp_artifact_count(src); i++) {
            const char *name = qp_artifact_entry_name(qp_artifact_entry(src, i)) + 8;
            if (is_bias(name))
                assert_string_equal(digest_of(a, name), digest_of(src, name));
        }
    }
    static const char *files[] = {"tokenizer.json", "tokenizer_config.json", "generation_config.json", NULL};
    check_export(gptq, "pkg-gptq", 0, 4, 128, 6, model_dir, files);
    check_export(awq, "pkg-awq", 1, 4, 128, 6, model_dir, files);
    /* house-qwen's README.md describes the bf16 model: the package's
     * README.md is its own card, never the source's */
    for (int q = 0; q < 2; q++) {
        char *card = qp_strfmt("%s/%s/README.md", dir, q ? "pkg-awq" : "pkg-gptq");
        char *card_text = NULL;
        size_t card_len = 0;
        assert_int_equal(qp_read_file(card, &card_text, &card_len), 0);
        assert_non_null(strstr(card_text, "Packaged by qpipe"));
        free(card_text);
        free(card);
    }
    qp_artifact_free(src);
    qp_artifact_free(gptq);
    qp_artifact_free(awq);
    free(model_dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_biases_and_tied_embeddings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_house_qwen_exports, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
