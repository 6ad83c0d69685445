/* GPTQ v1 / AWQ GEMM export (stages/package_hf.h).  The checkpoints are read
 * back with the safetensors reader and decoded by this file's OWN readers,
 * written from the layout descriptions below (not from package_hf_pack.c):
 *
 *   GPTQ v1: qweight i32 [in·bits/32, out]: column o is a little-endian bit
 *     stream, code of input i at bits [i·bits, i·bits + bits) of the stream
 *     (a code may straddle two words: 3-bit).  qzeros i32 [G, out·bits/32]:
 *     row g the same stream over outputs, holding (z − 1) mod 2^bits, so
 *     z = (stored + 1) & maxq.  scales f16 [G, out], g_idx i32 [in].
 *     w[o][i] = scales[g][o] · (q − z), g = g_idx[i].
 *   AWQ GEMM: qweight i32 [in, out/8]: nibble j of word c of row i holds
 *     output 8c + {0,2,4,6,1,3,5,7}[j]; qzeros i32 [G, out/8] the raw zero
 *     with the same interleave; scales f16 [G, out]; g = i / group_size.
 *
 * Each decoded layer must equal qp_linear_dequantize of the object that was
 * packed, bit for bit. */
#include "tests/support/hf_packed.h"
#include "tests/support/testutil.h"

#include "cache/cache.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "model/safetensors.h"
#include "common/tensor.h"
#include "artifact/artifact.h"
#include "quant/linear.h"
#include "stages/package_hf.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WHAT "stage 'pkg': input 'q'"

static const char *config_text =
    "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"model_type\": \"llama\",\n  \"hidden_size\": 128,\n"
    "  \"rms_norm_eps\": 1e-05,\n  \"rope_theta\": 10000.0,\n  \"torch_dtype\": \"bfloat16\",\n"
    "  \"tie_word_embeddings\": false\n}\n";

typedef struct {
    char *dir;       /* temp root */
    char *out;       /* package directory */
    qp_cache *cache;
    qp_artifact *a;
    qp_linear *lin[8];
    char *lin_name[8];
    int n_lin;
} fixture;

static uint64_t rng_state;

static float rnd(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rng_state >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    f->dir = qp_test_tmpdir();
    char *cdir = qp_path_join(f->dir, "cache");
    assert_int_equal(qp_cache_open(&f->cache, cdir), 0);
    free(cdir);
    f->out = qp_path_join(f->dir, "out");
    assert_int_equal(qp_mkdir_p(f->out, 0755), 0);
    assert_int_equal(qp_artifact_new(&f->a, QP_ART_QMODEL), 0);
    rng_state = 12345;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    for (int i = 0; i < f->n_lin; i++) {
        qp_linear_free(f->lin[i]);
        free(f->lin_name[i]);
    }
    qp_artifact_free(f->a);
    qp_cache_free(f->cache);
    qp_test_rmtree(f->dir);
    free(f->out);
    free(f->dir);
    free(f);
    return 0;
}

/* config.json, tokenizer files, a stale index that must not be copied */
static void add_files(fixture *f)
{
    assert_int_equal(qp_artifact_add_bytes(f->a, f->cache, "files/config.json", config_text, strlen(config_text),
                                           NULL), 0);
    char *tok = qp_test_shared_path("models/house-llama/tokenizer.model");
    assert_int_equal(qp_artifact_add_file(f->a, f->cache, "files/tokenizer.model", tok, NULL), 0);
    free(tok);
    const char *gen = "{\"bos_token_id\": 1}\n";
    assert_int_equal(qp_artifact_add_bytes(f->a, f->cache, "files/generation_config.json", gen, strlen(gen), NULL), 0);
    const char *idx = "{\"weight_map\": {}}\n";
    assert_int_equal(qp_artifact_add_bytes(f->a, f->cache, "files/model.safetensors.index.json", idx, strlen(idx),
                                           NULL), 0);
    assert_int_equal(qp_artifact_add_bytes(f->a, f->cache, "files/sub/readme.txt", "x", 1, NULL), 0);
}

static void set_meta(fixture *f, const char *method, int act_order)
{
    json_object_set_new(qp_artifact_meta(f->a), "method", json_string(method));
    json_object_set_new(qp_artifact_meta(f->a), "params",
                        json_pack("{s:s, s:f, s:b, s:b, s:b}", "method", method, "damp_percent", 0.05, "act_order",
                                  act_order, "static_groups", 0, "true_sequential", 1));
}

/* A linear tensor quantized by RTN; g_idx: NULL (default) or custom.
 * positive_row: row 1's weights are all >= 0, so an asym grid has zero 0. */
static qp_linear *add_linear(fixture *f, const char *name, int64_t rows, int64_t cols, int bits, int group, int sym,
                             const int32_t *g_idx, int positive_row)
{
    qp_linear_params p = {.bits = bits, .group_size = group, .sym = sym, .mse = 0};
    qp_linear *q = NULL;
    assert_int_equal(qp_linear_new(&q, rows, cols, &p), 0);
    if (g_idx)
        assert_int_equal(qp_linear_set_g_idx(q, g_idx), 0);
    float *w = malloc((size_t)(rows * cols) * sizeof(float));
    for (int64_t k = 0; k < rows * cols; k++)
        w[k] = rnd() * 0.05f;
    if (positive_row && rows > 1)
        for (int64_t c = 0; c < cols; c++)
            w[cols + c] = fabsf(w[cols + c]) + 0.001f;
    assert_int_equal(qp_rtn_quantize(q, w, 1), 0);
    free(w);
    void *buf = NULL;
    size_t len = 0;
    assert_int_equal(qp_linear_serialize(q, &buf, &len), 0);
    char *entry = qp_strfmt("tensors/%s", name);
    assert_int_equal(qp_artifact_add_bytes(f->a, f->cache, entry, buf, len,
                                           json_pack("{s:s, s:[I, I], s:i, s:i, s:b}", "format", "linear", "shape",
                                                     (json_int_t)rows, (json_int_t)cols, "bits", bits,
                                                     "group_size", group, "sym", sym)), 0);
    free(entry);
    free(buf);
    f->lin[f->n_lin] = q;
    f->lin_name[f->n_lin++] = qp_strdup(name);
    return q;
}

static void add_dense(fixture *f, const char *name, const char *dtype, int64_t n, const void *data, size_t bytes)
{
    char *entry = qp_strfmt("tensors/%s", name);
    assert_int_equal(qp_artifact_add_bytes(f->a, f->cache, entry, data, bytes,
                                           json_pack("{s:s, s:s, s:[I]}", "format", "dense", "dtype", dtype, "shape",
                                                     (json_int_t)n)), 0);
    free(entry);
}

/* ---- the test's own readers ---- */

static const qp_tensor_view *need(const qp_safetensors *st, const char *base, const char *suffix, qp_dtype dt,
                                  int ndim, uint64_t d0, uint64_t d1)
{
    char name[256];
    snprintf(name, sizeof(name), "%s.%s", base, suffix);
    const qp_tensor_view *t = qp_safetensors_find(st, name);
    if (!t)
        fail_msg("%s missing", name);
    assert_int_equal(t->dtype, dt);
    assert_int_equal(t->ndim, ndim);
    assert_int_equal(t->shape[0], d0);
    if (ndim > 1)
        assert_int_equal(t->shape[1], d1);
    return t;
}

static void base_of(char *base, size_t cap, const char *name)
{
    snprintf(base, cap, "%s", name);
    base[strlen(base) - 7] = '\0';   /* ".weight" */
}

static void check_gptq_layer(const qp_safetensors *st, const char *name, const qp_linear *ref)
{
    qp_linear_view v;
    qp_linear_view_of(ref, &v);
    char base[256];
    base_of(base, sizeof(base), name);
    assert_null(qp_safetensors_find(st, name));
    uint64_t R = (uint64_t)v.rows, C = (uint64_t)v.cols, G = (uint64_t)v.n_groups;
    int bits = v.bits;
    unsigned maxq = (1u << bits) - 1;
    const qp_tensor_view *qw = need(st, base, "qweight", QP_DT_I32, 2, C * bits / 32, R);
    const qp_tensor_view *qz = need(st, base, "qzeros", QP_DT_I32, 2, G, R * bits / 32);
    const qp_tensor_view *sc = need(st, base, "scales", QP_DT_F16, 2, G, R);
    const qp_tensor_view *gi = need(st, base, "g_idx", QP_DT_I32, 1, C, 0);
    float *got = malloc(R * C * sizeof(float)), *want = malloc(R * C * sizeof(float));
    assert_int_equal(qp_linear_dequantize(ref, want), 0);
    for (uint64_t i = 0; i < C; i++)
        assert_int_equal((int32_t)qp_test_word_at(gi, i), v.g_idx[i]);
    for (uint64_t o = 0; o < R; o++)
        for (uint64_t i = 0; i < C; i++) {
            uint32_t g = qp_test_word_at(gi, i);
            unsigned q = qp_test_stream_field(qw, o, R, i, bits);
            unsigned z = (qp_test_stream_field(qz, g * (R * bits / 32), 1, o, bits) + 1) & maxq;
            assert_int_equal(q, v.codes[o * C + i]);
            assert_int_equal(z, v.zeros[o * G + g]);
            got[o * C + i] = qp_test_f16_at(sc, g * R + o) * (float)((int)q - (int)z);
        }
    assert_memory_equal(got, want, R * C * sizeof(float));
    free(got);
    free(want);
}

static const int awq_order[8] = {0, 2, 4, 6, 1, 3, 5, 7};

static unsigned awq_field(const qp_tensor_view *t, uint64_t row, uint64_t words, uint64_t o)
{
    int j = 0;
    while (awq_order[j] != (int)(o % 8))
        j++;
    return (qp_test_word_at(t, row * words + o / 8) >> (4 * j)) & 15u;
}

static void check_awq_layer(const qp_safetensors *st, const char *name, const qp_linear *ref)
{
    qp_linear_view v;
    qp_linear_view_of(ref, &v);
    char base[256];
    base_of(base, sizeof(base), name);
    uint64_t R = (uint64_t)v.rows, C = (uint64_t)v.cols, G = (uint64_t)v.n_groups;
    const qp_tensor_view *qw = need(st, base, "qweight", QP_DT_I32, 2, C, R / 8);
    const qp_tensor_view *qz = need(st, base, "qzeros", QP_DT_I32, 2, G, R / 8);
    const qp_tensor_view *sc = need(st, base, "scales", QP_DT_F16, 2, G, R);
    char gname[300];
    snprintf(gname, sizeof(gname), "%s.g_idx", base);
    assert_null(qp_safetensors_find(st, gname));
    float *got = malloc(R * C * sizeof(float)), *want = malloc(R * C * sizeof(float));
    assert_int_equal(qp_linear_dequantize(ref, want), 0);
    uint64_t gs = C / G;
    for (uint64_t i = 0; i < C; i++)
        for (uint64_t o = 0; o < R; o++) {
            uint64_t g = i / gs;
            unsigned q = awq_field(qw, i, R / 8, o), z = awq_field(qz, g, R / 8, o);
            got[o * C + i] = qp_test_f16_at(sc, g * R + o) * (float)((int)q - (int)z);
        }
    assert_memory_equal(got, want, R * C * sizeof(float));
    free(got);
    free(want);
}

static qp_safetensors *open_out(fixture *f)
{
    char *p = qp_path_join(f->out, "model.safetensors");
    qp_safetensors *st = NULL;
    if (qp_safetensors_open(&st, p) != 0)
        fail_msg("%s", qp_error_last());
    free(p);
    return st;
}

static json_t *load_json(fixture *f, const char *name)
{
    char *p = qp_path_join(f->out, name);
    json_error_t err;
    json_t *j = json_load_file(p, 0, &err);
    if (!j)
        fail_msg("%s: %s", p, err.text);
    free(p);
    return j;
}

static void assert_keys(const json_t *o, const char *const *keys)
{
    size_t n = 0;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)o, k, v) {
        if (!keys[n])
            fail_msg("unexpected key %s", k);
        assert_string_equal(k, keys[n]);
        n++;
    }
    assert_null(keys[n]);
}

/* "gptq" or "awq", as the package stage's format: */
static qp_hf_format hf_format(const char *format)
{
    return strcmp(format, "awq") == 0 ? QP_HF_AWQ : QP_HF_GPTQ;
}

static void package_ok(fixture *f, const char *format)
{
    if (qp_package_hf(f->out, f->a, f->cache, hf_format(format), WHAT) != 0)
        fail_msg("%s", qp_error_last());
}

static void assert_package_fails(fixture *f, const char *format, int code, const char *msg)
{
    assert_int_equal(qp_package_hf(f->out, f->a, f->cache, hf_format(format), WHAT), code);
    assert_string_equal(qp_error_last(), msg);
    char *p = qp_path_join(f->out, "model.safetensors");
    assert_false(qp_path_exists(p));
    free(p);
}

/* ---- tests ---- */

static const char *lin_names[] = {
    "model.layers.0.mlp.down_proj.weight", "model.layers.0.self_attn.k_proj.weight",
    "model.layers.0.self_attn.q_proj.weight",
};

static void test_gptq_4bit_act_order(void **state)
{
    fixture *f = *state;
    add_files(f);
    set_meta(f, "gptq", 1);
    int32_t g_idx[128];
    for (int c = 0; c < 128; c++)
        g_idx[c] = (c * 3 + c / 32) % 4;   /* 32 columns in each of 4 groups, interleaved */
    add_linear(f, lin_names[0], 64, 128, 4, 32, 0, NULL, 1);
    add_linear(f, lin_names[1], 32, 128, 4, 32, 0, g_idx, 0);
    add_linear(f, lin_names[2], 128, 128, 4, 32, 0, NULL, 0);
    uint16_t norm_bf16[128];
    float awq_norm[128];
    for (int i = 0; i < 128; i++) {
        norm_bf16[i] = qp_f32_to_bf16(1.0f + (float)i / 64.0f);
        awq_norm[i] = 0.5f + (float)i * 0.001f;
    }
    add_dense(f, "model.norm.weight", "BF16", 128, norm_bf16, sizeof(norm_bf16));
    add_dense(f, "model.layers.0.input_layernorm.weight", "F32", 128, awq_norm, sizeof(awq_norm));
    package_ok(f, "gptq");

    qp_safetensors *st = open_out(f);
    for (int i = 0; i < 3; i++)
        check_gptq_layer(st, f->lin_name[i], f->lin[i]);
    /* row 1 of down_proj is all positive: asym zero 0, stored as maxq */
    qp_linear_view v;
    qp_linear_view_of(f->lin[0], &v);
    assert_int_equal(v.zeros[1 * v.n_groups], 0);
    const qp_tensor_view *qz = qp_safetensors_find(st, "model.layers.0.mlp.down_proj.qzeros");
    assert_int_equal((qp_test_word_at(qz, 0) >> 4) & 15u, 15);
    /* dense tensors as F16 */
    const qp_tensor_view *n = qp_safetensors_find(st, "model.norm.weight");
    assert_non_null(n);
    assert_int_equal(n->dtype, QP_DT_F16);
    assert_int_equal(n->shape[0], 128);
    for (int i = 0; i < 128; i++)
        assert_true(qp_test_f16_at(n, (uint64_t)i) == 1.0f + (float)i / 64.0f);
    const qp_tensor_view *ln = qp_safetensors_find(st, "model.layers.0.input_layernorm.weight");
    assert_int_equal(ln->dtype, QP_DT_F16);
    for (int i = 0; i < 128; i++)   /* fp16 has 11 significant bits */
        assert_true(fabsf(qp_test_f16_at(ln, (uint64_t)i) - awq_norm[i]) <= awq_norm[i] / 2048.0f);
    assert_int_equal(qp_safetensors_count(st), 3 * 4 + 2);
    assert_string_equal(json_string_value(json_object_get(qp_safetensors_metadata(st), "format")), "pt");
    qp_safetensors_free(st);

    /* config.json: the source keys, torch_dtype float16, quantization_config */
    json_t *cfg = load_json(f, "config.json");
    static const char *cfg_keys[] = {"architectures", "model_type", "hidden_size", "rms_norm_eps", "rope_theta",
                                     "torch_dtype", "tie_word_embeddings", "quantization_config", NULL};
    assert_keys(cfg, cfg_keys);
    assert_string_equal(json_string_value(json_object_get(cfg, "torch_dtype")), "float16");
    assert_true(json_real_value(json_object_get(cfg, "rms_norm_eps")) == 1e-05);
    json_t *qc = json_object_get(cfg, "quantization_config");
    static const char *qc_keys[] = {"bits", "group_size", "desc_act", "sym", "lm_head", "damp_percent",
                                    "static_groups", "true_sequential", "quant_method", "checkpoint_format",
                                    "pack_dtype", "meta", NULL};
    assert_keys(qc, qc_keys);
    assert_int_equal(json_integer_value(json_object_get(qc, "bits")), 4);
    assert_int_equal(json_integer_value(json_object_get(qc, "group_size")), 32);
    assert_true(json_is_true(json_object_get(qc, "desc_act")));
    assert_true(json_is_false(json_object_get(qc, "sym")));
    assert_true(json_is_false(json_object_get(qc, "lm_head")));
    assert_true(json_real_value(json_object_get(qc, "damp_percent")) == 0.05);
    assert_true(json_is_false(json_object_get(qc, "static_groups")));
    assert_true(json_is_true(json_object_get(qc, "true_sequential")));
    assert_string_equal(json_string_value(json_object_get(qc, "quant_method")), "gptq");
    assert_string_equal(json_string_value(json_object_get(qc, "checkpoint_format")), "gptq");
    assert_string_equal(json_string_value(json_object_get(qc, "pack_dtype")), "int32");
    json_t *meta = json_object_get(qc, "meta");
    static const char *meta_keys[] = {"quantizer", "damp_percent", "static_groups", "true_sequential", "mse",
                                      "qpipe_method", NULL};
    assert_keys(meta, meta_keys);
    assert_string_equal(json_string_value(json_array_get(json_object_get(meta, "quantizer"), 0)), "qpipe:0.1.0");
    assert_string_equal(json_string_value(json_object_get(meta, "qpipe_method")), "gptq");
    /* quantize_config.json: the same object */
    json_t *qcf = load_json(f, "quantize_config.json");
    assert_true(json_equal(qcf, qc));
    json_decref(qcf);
    json_decref(cfg);
    /* the numbers keep their shortest form */
    char *text = NULL;
    size_t len = 0;
    char *p = qp_path_join(f->out, "config.json");
    assert_int_equal(qp_read_file(p, &text, &len), 0);
    assert_non_null(strstr(text, "\"rms_norm_eps\": 1e-5,"));
    assert_non_null(strstr(text, "\"rope_theta\": 10000.0,"));
    assert_non_null(strstr(text, "\"damp_percent\": 0.05,"));
    free(text);
    free(p);

    /* tokenizer / generation files copied byte for byte; no stale index, no sub/ */
    char *tok_src = qp_test_shared_path("models/house-llama/tokenizer.model");
    char *tok_dst = qp_path_join(f->out, "tokenizer.model");
    char *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    assert_int_equal(qp_read_file(tok_src, &a, &na), 0);
    assert_int_equal(qp_read_file(tok_dst, &b, &nb), 0);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na);
    free(a);
    free(b);
    free(tok_src);
    free(tok_dst);
    p = qp_path_join(f->out, "generation_config.json");
    assert_true(qp_path_exists(p));
    free(p);
    p = qp_path_join(f->out, "model.safetensors.index.json");
    assert_false(qp_path_exists(p));
    free(p);
    p = qp_path_join(f->out, "sub");
    assert_false(qp_path_exists(p));
    free(p);
}

/* 2, 3 and 8 bits, sym and asym, one group per row */
static void gptq_bits_case(void **state, int bits, int group, int sym)
{
    fixture *f = *state;
    add_files(f);
    set_meta(f, "rtn", 0);
    add_linear(f, lin_names[0], 64, 256, bits, group, sym, NULL, 1);
    add_linear(f, lin_names[1], 96, 256, bits, group, sym, NULL, 0);
    package_ok(f, "gptq");
    qp_safetensors *st = open_out(f);
    for (int i = 0; i < f->n_lin; i++)
        check_gptq_layer(st, f->lin_name[i], f->lin[i]);
    qp_safetensors_free(st);
    json_t *qcf = load_json(f, "quantize_config.json");
    assert_int_equal(json_integer_value(json_object_get(qcf, "bits")), bits);
    assert_int_equal(json_integer_value(json_object_get(qcf, "group_size")), group);
    assert_int_equal(json_is_true(json_object_get(qcf, "sym")), sym);
    assert_true(json_is_false(json_object_get(qcf, "desc_act")));
    assert_true(json_real_value(json_object_get(qcf, "damp_percent")) == 0.05);
    json_decref(qcf);
}

static void test_gptq_3bit(void **state) { gptq_bits_case(state, 3, 64, 0); }
static void test_gptq_2bit(void **state) { gptq_bits_case(state, 2, 32, 1); }
static void test_gptq_8bit(void **state) { gptq_bits_case(state, 8, 128, 0); }
static void test_gptq_per_row(void **state) { gptq_bits_case(state, 4, -1, 1); }

/* Known words, computed by hand from the layout. */
static void test_handmade_words(void **state)
{
    fixture *f = *state;
    add_files(f);
    qp_linear *q = add_linear(f, lin_names[0], 32, 32, 4, 32, 0, NULL, 0);
    qp_linear_view v;
    qp_linear_view_of(q, &v);
    for (int r = 0; r < 32; r++) {
        for (int c = 0; c < 32; c++)
            v.codes[r * 32 + c] = (uint8_t)((r + c) % 16);
        v.zeros[r] = (uint8_t)(r % 16);
    }
    /* replace the stored object by the hand-made codes */
    void *buf = NULL;
    size_t len = 0;
    assert_int_equal(qp_linear_serialize(q, &buf, &len), 0);
    qp_artifact_free(f->a);
    assert_int_equal(qp_artifact_new(&f->a, QP_ART_QMODEL), 0);
    add_files(f);
    assert_int_equal(qp_artifact_add_bytes(f->a, f->cache, "tensors/model.layers.0.mlp.down_proj.weight", buf, len,
                                           json_pack("{s:s, s:[i, i]}", "format", "linear", "shape", 32, 32)), 0);
    free(buf);
    package_ok(f, "gptq");
    qp_safetensors *st = open_out(f);
    const qp_tensor_view *qw = qp_safetensors_find(st, "model.layers.0.mlp.down_proj.qweight");
    const qp_tensor_view *qz = qp_safetensors_find(st, "model.layers.0.mlp.down_proj.qzeros");
    assert_int_equal(qp_test_word_at(qw, 0), 0x76543210u);           /* [0][0]: output 0, inputs 0..7 */
    assert_int_equal(qp_test_word_at(qw, 1), 0x87654321u);           /* [0][1]: output 1 */
    assert_int_equal(qp_test_word_at(qw, 32 + 0), 0xfedcba98u);      /* [1][0]: output 0, inputs 8..15 */
    assert_int_equal(qp_test_word_at(qz, 0), 0x6543210fu);           /* zeros 0..7 minus 1, zero 0 -> 15 */
    assert_int_equal(qp_test_word_at(qz, 1), 0xedcba987u);
    qp_safetensors_free(st);

    char *mf = qp_path_join(f->out, "model.safetensors");
    unlink(mf);
    free(mf);
    package_ok(f, "awq");
    st = open_out(f);
    qw = qp_safetensors_find(st, "model.layers.0.mlp.down_proj.qweight");
    qz = qp_safetensors_find(st, "model.layers.0.mlp.down_proj.qzeros");
    assert_int_equal(qw->shape[0], 32);
    assert_int_equal(qw->shape[1], 4);
    /* row (input) 0, word 0: outputs 0,2,4,6,1,3,5,7 -> nibbles 0..7 */
    assert_int_equal(qp_test_word_at(qw, 0), 0x75316420u);
    assert_int_equal(qp_test_word_at(qw, 4), 0x86427531u);           /* input 1 */
    assert_int_equal(qp_test_word_at(qz, 0), 0x75316420u);
    assert_int_equal(qp_test_word_at(qz, 1), 0xfdb9eca8u);           /* outputs 8..15 */
    qp_safetensors_free(st);
}

/* 3-bit words: codes straddle word boundaries (fields 10 and 21 of 32) */
static void test_handmade_3bit(void **state)
{
    (void)state;
    uint8_t codes[32];
    for (int i = 0; i < 32; i++)
        codes[i] = (uint8_t)(i % 8);
    uint32_t w[3];
    qp_hf_pack_gptq_qweight(w, codes, 1, 32, 3);
    /* expected: bit b of code i at bit 3i + b of the 96-bit stream */
    uint32_t want[3] = {0, 0, 0};
    for (int i = 0; i < 32; i++)
        for (int b = 0; b < 3; b++)
            if ((codes[i] >> b) & 1)
                want[(3 * i + b) / 32] |= 1u << ((3 * i + b) % 32);
    /* 0,1,…,7 = 0o76543210 = 0xfac688 in 24 bits, then 0, 1 and the low bits of 2 */
    assert_int_equal(w[0], 0x88fac688u);
    assert_int_equal(w[0], want[0]);
    assert_int_equal(w[1], want[1]);
    assert_int_equal(w[2], want[2]);
    /* code 10 straddles words 0 and 1, code 21 words 1 and 2 */
    assert_int_equal(((w[0] >> 30) | (w[1] << 2)) & 7u, 2);
    assert_int_equal(((w[1] >> 31) | (w[2] << 1)) & 7u, 5);
}

static void test_awq(void **state)
{
    fixture *f = *state;
    add_files(f);
    set_meta(f, "awq", 0);
    add_linear(f, lin_names[0], 64, 128, 4, 64, 0, NULL, 1);
    add_linear(f, lin_names[1], 32, 128, 4, 64, 0, NULL, 0);
    add_linear(f, lin_names[2], 128, 128, 4, 64, 0, NULL, 0);
    float norm[128];
    for (int i = 0; i < 128; i++)
        norm[i] = 1.0f + (float)i / 128.0f;
    add_dense(f, "model.norm.weight", "F32", 128, norm, sizeof(norm));
    package_ok(f, "awq");
    qp_safetensors *st = open_out(f);
    for (int i = 0; i < 3; i++)
        check_awq_layer(st, f->lin_name[i], f->lin[i]);
    assert_int_equal(qp_safetensors_count(st), 3 * 3 + 1);
    qp_safetensors_free(st);
    json_t *cfg = load_json(f, "config.json");
    json_t *qc = json_object_get(cfg, "quantization_config");
    static const char *keys[] = {"quant_method", "zero_point", "group_size", "bits", "version",
                                 "modules_to_not_convert", NULL};
    assert_keys(qc, keys);
    assert_string_equal(json_string_value(json_object_get(qc, "quant_method")), "awq");
    assert_true(json_is_true(json_object_get(qc, "zero_point")));
    assert_int_equal(json_integer_value(json_object_get(qc, "group_size")), 64);
    assert_int_equal(json_integer_value(json_object_get(qc, "bits")), 4);
    assert_string_equal(json_string_value(json_object_get(qc, "version")), "gemm");
    assert_true(json_is_null(json_object_get(qc, "modules_to_not_convert")));
    assert_string_equal(json_string_value(json_object_get(cfg, "torch_dtype")), "float16");
    json_decref(cfg);
    char *p = qp_path_join(f->out, "quantize_config.json");
    assert_false(qp_path_exists(p));
    free(p);
}

static void test_awq_sym(void **state)
{
    fixture *f = *state;
    add_files(f);
    add_linear(f, lin_names[0], 64, 128, 4, 128, 1, NULL, 0);
    package_ok(f, "awq");
    qp_safetensors *st = open_out(f);
    check_awq_layer(st, f->lin_name[0], f->lin[0]);
    const qp_tensor_view *qz = qp_safetensors_find(st, "model.layers.0.mlp.down_proj.qzeros");
    assert_int_equal(qp_test_word_at(qz, 0), 0x88888888u);   /* sym: the zero 8 is still written */
    qp_safetensors_free(st);
    json_t *cfg = load_json(f, "config.json");
    assert_true(json_is_false(json_object_get(json_object_get(cfg, "quantization_config"), "zero_point")));
    json_decref(cfg);
}

static void test_refuse_awq_3bit(void **state)
{
    fixture *f = *state;
    add_files(f);
    add_linear(f, lin_names[0], 64, 128, 3, 32, 0, NULL, 0);
    assert_package_fails(f, "awq", QP_EUSAGE,
                         WHAT ": tensor 'model.layers.0.mlp.down_proj.weight' has 3-bit codes; AWQ GEMM checkpoints "
                              "are 4-bit only (quantize with bits: 4, or package as gptq)");
}

static void test_refuse_awq_act_order(void **state)
{
    fixture *f = *state;
    add_files(f);
    int32_t g_idx[128];
    for (int c = 0; c < 128; c++)
        g_idx[c] = c % 4;
    add_linear(f, lin_names[0], 64, 128, 4, 32, 0, g_idx, 0);
    assert_package_fails(f, "awq", QP_EUSAGE,
                         WHAT ": tensor 'model.layers.0.mlp.down_proj.weight' has an act-order g_idx; AWQ GEMM "
                              "checkpoints have no g_idx (quantize without act_order, or package as gptq)");
}

static void test_refuse_ggml(void **state)
{
    fixture *f = *state;
    add_files(f);
    add_linear(f, lin_names[0], 64, 128, 4, 32, 0, NULL, 0);
    unsigned char blocks[18 * 4] = {0};
    assert_int_equal(qp_artifact_add_bytes(f->a, f->cache, "tensors/model.layers.0.self_attn.q_proj.weight", blocks,
                                           sizeof(blocks),
                                           json_pack("{s:s, s:s, s:[i, i]}", "format", "ggml", "qtype", "Q4_0",
                                                     "shape", 1, 128)), 0);
    assert_package_fails(f, "gptq", QP_EUSAGE,
                         WHAT ": tensor 'model.layers.0.self_attn.q_proj.weight' is ggml-quantized; GPTQ checkpoints "
                              "hold linear (RTN, GPTQ, AWQ, QAT) tensors only (quantize with method rtn, gptq, awq or "
                              "qat, or package as gguf)");
}

static void test_refuse_other(void **state)
{
    fixture *f = *state;
    add_files(f);
    add_linear(f, lin_names[0], 64, 128, 5, 32, 0, NULL, 0);
    assert_package_fails(f, "gptq", QP_EUSAGE,
                         WHAT ": tensor 'model.layers.0.mlp.down_proj.weight' has 5-bit codes; GPTQ checkpoints hold "
                              "2, 3, 4 or 8 bits (quantize with one of those, or package as gguf)");
}

static void test_refuse_mixed(void **state)
{
    fixture *f = *state;
    add_files(f);
    add_linear(f, lin_names[0], 64, 128, 4, 32, 0, NULL, 0);
    add_linear(f, lin_names[1], 64, 128, 8, 32, 0, NULL, 0);
    assert_package_fails(f, "gptq", QP_EUSAGE,
                         WHAT ": tensor 'model.layers.0.self_attn.k_proj.weight' is 8-bit, group_size 32, asym but "
                              "'model.layers.0.mlp.down_proj.weight' is 4-bit, group_size 32, asym; a GPTQ checkpoint "
                              "has one quantization config (quantize without per-tensor overrides, or package as "
                              "gguf)");
}

static void test_refuse_shape(void **state)
{
    fixture *f = *state;
    add_files(f);
    add_linear(f, lin_names[0], 60, 128, 4, 32, 0, NULL, 0);
    assert_package_fails(f, "awq", QP_EUSAGE,
                         WHAT ": tensor 'model.layers.0.mlp.down_proj.weight' [60 x 128]: AWQ GEMM packs 4-bit codes "
                              "into 32-bit words, which needs out_features a multiple of 8 (package as gguf)");
    assert_package_fails(f, "gptq", QP_EUSAGE,
                         WHAT ": tensor 'model.layers.0.mlp.down_proj.weight' [60 x 128]: GPTQ packs 4-bit codes "
                              "into 32-bit words, which needs in_features and out_features a multiple of 8 (package "
                              "as gguf)");
}

static void test_refuse_overflow_and_config(void **state)
{
    fixture *f = *state;
    add_linear(f, lin_names[0], 64, 128, 4, 32, 0, NULL, 0);
    assert_package_fails(f, "gptq", QP_EFORMAT,
                         WHAT ": the model has no config.json; a Hugging Face checkpoint needs one");
    add_files(f);
    float big[2] = {1.0f, 70000.0f};
    add_dense(f, "model.norm.weight", "F32", 2, big, sizeof(big));
    assert_package_fails(f, "gptq", QP_EUSAGE,
                         WHAT ": tensor 'model.norm.weight': element 1 = 70000 is beyond float16's range, which "
                              "GPTQ/AWQ checkpoints use (package as gguf)");
}

static void test_refuse_no_linear(void **state)
{
    fixture *f = *state;
    add_files(f);
    float x[2] = {1.0f, 2.0f};
    add_dense(f, "model.norm.weight", "F32", 2, x, sizeof(x));
    assert_package_fails(f, "awq", QP_EUSAGE,
                         WHAT ": the model has no linear-quantized tensor; AWQ GEMM export needs a model quantized "
                              "with method rtn, gptq, awq or qat");
}

/* The house model: every linear weight RTN 4-bit g128, embeddings and
 * norms kept BF16; both formats reread and compared. */
static void test_house_model(void **state)
{
    fixture *f = *state;
    char *mdir = qp_test_shared_path("models/house-llama");
    char *mpath = qp_path_join(mdir, "model.safetensors");
    qp_safetensors *src = NULL;
    assert_int_equal(qp_safetensors_open(&src, mpath), 0);
    const char *names[] = {"config.json", "tokenizer.model", "tokenizer_config.json", "generation_config.json"};
    for (int i = 0; i < 4; i++) {
        char *p = qp_path_join(mdir, names[i]);
        char *e = qp_strfmt("files/%s", names[i]);
        assert_int_equal(qp_artifact_add_file(f->a, f->cache, e, p, NULL), 0);
        free(e);
        free(p);
    }
    set_meta(f, "rtn", 0);
    size_t n = qp_safetensors_count(src), n_lin = 0;
    qp_linear **lins = calloc(n, sizeof(*lins));
    for (size_t i = 0; i < n; i++) {
        const qp_tensor_view *t = qp_safetensors_tensor(src, i);
        char *entry = qp_strfmt("tensors/%s", t->name);
        int linear = t->ndim == 2 && strcmp(t->name, "model.embed_tokens.weight") && strcmp(t->name, "lm_head.weight");
        if (!linear) {
            json_t *shape = json_array();
            for (int d = 0; d < t->ndim; d++)
                json_array_append_new(shape, json_integer((json_int_t)t->shape[d]));
            assert_int_equal(qp_artifact_add_bytes(f->a, f->cache, entry, t->data, t->nbytes,
                                                   json_pack("{s:s, s:o}", "dtype", qp_dtype_name(t->dtype), "shape",
                                                             shape)), 0);
        } else {
            float *w = malloc(t->nelem * sizeof(float));
            assert_int_equal(qp_convert_to_f32(w, t->data, t->dtype, t->nelem), 0);
            qp_linear_params p = {.bits = 4, .group_size = 128, .sym = 0, .mse = 0};
            assert_int_equal(qp_linear_new(&lins[i], (int64_t)t->shape[0], (int64_t)t->shape[1], &p), 0);
            assert_int_equal(qp_rtn_quantize(lins[i], w, 2), 0);
            void *buf = NULL;
            size_t len = 0;
            assert_int_equal(qp_linear_serialize(lins[i], &buf, &len), 0);
            assert_int_equal(qp_artifact_add_bytes(f->a, f->cache, entry, buf, len,
                                                   json_pack("{s:s, s:[I, I]}", "format", "linear", "shape",
                                                             (json_int_t)t->shape[0], (json_int_t)t->shape[1])), 0);
            free(buf);
            free(w);
            n_lin++;
        }
        free(entry);
    }
    assert_int_equal(n_lin, 42);
    for (int fmt = 0; fmt < 2; fmt++) {
        package_ok(f, fmt ? "awq" : "gptq");
        qp_safetensors *st = open_out(f);
        for (size_t i = 0; i < n; i++) {
            const qp_tensor_view *t = qp_safetensors_tensor(src, i);
            if (lins[i]) {
                if (fmt)
                    check_awq_layer(st, t->name, lins[i]);
                else
                    check_gptq_layer(st, t->name, lins[i]);
                continue;
            }
            const qp_tensor_view *o = qp_safetensors_find(st, t->name);
            assert_non_null(o);
            assert_int_equal(o->dtype, QP_DT_F16);
            float *x = malloc(t->nelem * sizeof(float));
            assert_int_equal(qp_convert_to_f32(x, t->data, t->dtype, t->nelem), 0);
            for (uint64_t k = 0; k < t->nelem; k++) {
                float y = qp_test_f16_at(o, k);
                /* BF16 -> F16 is exact in fp16's normal range, half a subnormal step below it */
                if (fabsf(x[k]) >= 0x1p-14f)
                    assert_true(y == x[k]);
                else
                    assert_true(fabsf(y - x[k]) <= 0x1p-25f);
            }
            free(x);
        }
        assert_int_equal(qp_safetensors_count(st), (fmt ? 3 : 4) * 42 + (n - 42));
        qp_safetensors_free(st);
        json_t *cfg = load_json(f, "config.json");
        assert_int_equal(json_integer_value(json_object_get(cfg, "num_hidden_layers")), 6);
        assert_int_equal(json_integer_value(json_object_get(json_object_get(cfg, "quantization_config"), "group_size")),
                         128);
        json_decref(cfg);
        char *p = qp_path_join(f->out, "tokenizer_config.json");
        assert_true(qp_path_exists(p));
        free(p);
        qp_rm_rf(f->out);
        assert_int_equal(qp_mkdir_p(f->out, 0755), 0);
    }
    for (size_t i = 0; i < n; i++)
        qp_linear_free(lins[i]);
    free(lins);
    qp_safetensors_free(src);
    free(mpath);
    free(mdir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_gptq_4bit_act_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gptq_3bit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gptq_2bit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gptq_8bit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gptq_per_row, setup, teardown),
        cmocka_unit_test_setup_teardown(test_handmade_words, setup, teardown),
        cmocka_unit_test(test_handmade_3bit),
        cmocka_unit_test_setup_teardown(test_awq, setup, teardown),
        cmocka_unit_test_setup_teardown(test_awq_sym, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuse_awq_3bit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuse_awq_act_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuse_ggml, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuse_other, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuse_mixed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuse_shape, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuse_overflow_and_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuse_no_linear, setup, teardown),
        cmocka_unit_test_setup_teardown(test_house_model, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
