/* bitsandbytes export (stages/package_bnb.h), on synthetic artifacts: the
 * tensor names, dtypes and shapes, the quant_state JSON, the config, the
 * refusals — and each NF4 / int8 weight decoded by this file's own reader
 * (bnb's dequantize_4bit / int8_vectorwise_dequant as docs/bitsandbytes.md
 * states them) equal to qp_nf4_dequantize / qp_int8_dequantize bit for bit.
 *
 * Also a tool for tests/cli/test_package_bnb.sh:
 *   test_package_bnb --dump CACHE_DIR ARTIFACT_DIGEST
 * prints "NAME SHA256" of every nf4/int8 tensor of the artifact as qpipe
 * dequantizes it for evaluate (qp_qtensor_to_f32), little-endian f32 bytes,
 * in artifact (name) order. */
#include "tests/support/testutil.h"

#include "artifact/artifact.h"
#include "cache/cache.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/hash.h"
#include "common/tensor.h"
#include "model/safetensors.h"
#include "quant/int8.h"
#include "quant/nf4.h"
#include "stages/package_bnb.h"
#include "stages/qtensor.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WHAT "stage 'pkg': input 'q'"

typedef struct {
    char *dir, *out;
    qp_cache *cache;
    qp_artifact *a;
} fixture;

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
    qp_test_seed(99);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    qp_artifact_free(f->a);
    qp_cache_free(f->cache);
    qp_test_rmtree(f->dir);
    free(f->out);
    free(f->dir);
    free(f);
    return 0;
}

static void add_config(fixture *f, const char *method, int tied)
{
    char *cfg = qp_strfmt("{\"model_type\": \"llama\", \"torch_dtype\": \"bfloat16\", \"tie_word_embeddings\": %s}",
                          tied ? "true" : "false");
    assert_int_equal(qp_artifact_add_bytes(f->a, f->cache, "files/config.json", cfg, strlen(cfg), NULL), 0);
    free(cfg);
    assert_int_equal(qp_artifact_add_bytes(f->a, f->cache, "files/tokenizer_config.json", "{}", 2, NULL), 0);
    if (method)
        json_object_set_new(qp_artifact_meta(f->a), "method", json_string(method));
}

/* w f32 [rows, cols]: gaussian, with one all-zero 64-block to exercise code 7 */
static float *weights(int64_t rows, int64_t cols)
{
    float *w = malloc((size_t)(rows * cols) * sizeof(float));
    for (int64_t k = 0; k < rows * cols; k++)
        w[k] = qp_test_gauss() * 0.02f;
    if (rows * cols >= 128)
        memset(w + 64, 0, 64 * sizeof(float));
    return w;
}

static qp_nf4 *add_nf4(fixture *f, const char *name, int64_t rows, int64_t cols, int dq)
{
    qp_nf4_params p = {.blocksize = 64, .double_quant = dq};
    qp_nf4 *q = NULL;
    assert_int_equal(qp_nf4_new(&q, rows, cols, &p), 0);
    float *w = weights(rows, cols);
    assert_int_equal(qp_nf4_quantize(q, w, 2), 0);
    free(w);
    void *buf = NULL;
    size_t len = 0;
    assert_int_equal(qp_nf4_serialize(q, &buf, &len), 0);
    char *entry = qp_strfmt("tensors/%s", name);
    assert_int_equal(qp_artifact_add_bytes(f->a, f->cache, entry, buf, len,
                                           json_pack("{s:s, s:[I, I]}", "format", "nf4", "shape", (json_int_t)rows,
                                                     (json_int_t)cols)), 0);
    free(entry);
    free(buf);
    return q;
}

static qp_int8 *add_int8(fixture *f, const char *name, int64_t rows, int64_t cols)
{
    qp_int8 *q = NULL;
    assert_int_equal(qp_int8_new(&q, rows, cols), 0);
    float *w = weights(rows, cols);
    assert_int_equal(qp_int8_quantize(q, w, 2), 0);
    free(w);
    void *buf = NULL;
    size_t len = 0;
    assert_int_equal(qp_int8_serialize(q, &buf, &len), 0);
    char *entry = qp_strfmt("tensors/%s", name);
    assert_int_equal(qp_artifact_add_bytes(f->a, f->cache, entry, buf, len,
                                           json_pack("{s:s, s:[I, I]}", "format", "int8", "shape", (json_int_t)rows,
                                                     (json_int_t)cols)), 0);
    free(entry);
    free(buf);
    return q;
}

/* dense tensor of n elements (1-D) or [n/cols, cols] */
static void add_dense(fixture *f, const char *name, const char *dtype, int64_t n, int64_t cols)
{
    qp_dtype dt = qp_dtype_parse(dtype);
    size_t es = qp_dtype_size(dt);
    uint8_t *b = malloc((size_t)n * es);
    for (int64_t k = 0; k < n; k++) {
        float v = qp_test_gauss();
        if (dt == QP_DT_F32)
            memcpy(b + k * 4, &v, 4);
        else {
            uint16_t h = dt == QP_DT_BF16 ? qp_f32_to_bf16(v) : qp_f32_to_f16(v);
            memcpy(b + k * 2, &h, 2);
        }
    }
    char *entry = qp_strfmt("tensors/%s", name);
    json_t *shape = cols ? json_pack("[I, I]", (json_int_t)(n / cols), (json_int_t)cols)
                         : json_pack("[I]", (json_int_t)n);
    assert_int_equal(qp_artifact_add_bytes(f->a, f->cache, entry, b, (size_t)n * es,
                                           json_pack("{s:s, s:s, s:o}", "format", "dense", "dtype", dtype, "shape",
                                                     shape)), 0);
    free(entry);
    free(b);
}

static qp_safetensors *package(fixture *f)
{
    if (qp_package_bnb(f->out, f->a, f->cache, WHAT) != 0)
        fail_msg("%s", qp_error_last());
    char *p = qp_path_join(f->out, "model.safetensors");
    qp_safetensors *st = NULL;
    if (qp_safetensors_open(&st, p) != 0)
        fail_msg("%s", qp_error_last());
    free(p);
    return st;
}

static const qp_tensor_view *need(const qp_safetensors *st, const char *name, qp_dtype dt, int ndim, uint64_t d0,
                                  uint64_t d1)
{
    const qp_tensor_view *t = qp_safetensors_find(st, name);
    if (!t)
        fail_msg("tensor %s missing", name);
    assert_int_equal(t->dtype, dt);
    assert_int_equal(t->ndim, ndim);
    if (ndim > 0)
        assert_int_equal(t->shape[0], d0);
    if (ndim > 1)
        assert_int_equal(t->shape[1], d1);
    return t;
}

static float f32_at(const qp_tensor_view *t, uint64_t i)
{
    float v;
    memcpy(&v, (const uint8_t *)t->data + 4 * i, 4);
    return v;
}

/* bnb's dequantize_4bit from the checkpoint's tensors alone, compared with
 * qp_nf4_dequantize bit for bit. */
static void check_nf4(const qp_safetensors *st, const char *base, const qp_nf4 *q, int dq, const char *dtype)
{
    qp_nf4_view v;
    qp_nf4_view_of(q, &v);
    const uint64_t n = (uint64_t)v.n, B = (uint64_t)v.n_blocks, B2 = (uint64_t)v.n_blocks2;
    char name[256];
    snprintf(name, sizeof(name), "%s.weight", base);
    const qp_tensor_view *codes = need(st, name, QP_DT_U8, 2, (n + 1) / 2, 1);
    snprintf(name, sizeof(name), "%s.weight.quant_map", base);
    const qp_tensor_view *qmap = need(st, name, QP_DT_F32, 1, 16, 0);
    snprintf(name, sizeof(name), "%s.weight.absmax", base);
    const qp_tensor_view *absmax = need(st, name, dq ? QP_DT_U8 : QP_DT_F32, 1, B, 0);
    float *am = malloc(B * sizeof(float));
    char *state = NULL;
    if (dq) {
        snprintf(name, sizeof(name), "%s.weight.nested_absmax", base);
        const qp_tensor_view *na = need(st, name, QP_DT_F32, 1, B2, 0);
        snprintf(name, sizeof(name), "%s.weight.nested_quant_map", base);
        const qp_tensor_view *nm = need(st, name, QP_DT_F32, 1, 256, 0);
        char off[48];
        qp_bnb_py_float(off, sizeof(off), (double)v.offset);
        const float offset = (float)strtod(off, NULL);
        assert_true(offset == v.offset);
        for (uint64_t b = 0; b < B; b++) {
            const float p = f32_at(nm, ((const uint8_t *)absmax->data)[b]) * f32_at(na, b / 256);
            am[b] = p + offset;
        }
        state = qp_strfmt("{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"%s\", \"shape\": [%lld, %lld], "
                          "\"nested_blocksize\": 256, \"nested_dtype\": \"float32\", \"nested_offset\": %s}",
                          dtype, (long long)v.rows, (long long)v.cols, off);
    } else {
        for (uint64_t b = 0; b < B; b++)
            am[b] = f32_at(absmax, b);
        state = qp_strfmt("{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"%s\", \"shape\": [%lld, %lld]}",
                          dtype, (long long)v.rows, (long long)v.cols);
    }
    snprintf(name, sizeof(name), "%s.weight.quant_state.bitsandbytes__nf4", base);
    const qp_tensor_view *qs = need(st, name, QP_DT_U8, 1, strlen(state), 0);
    assert_memory_equal(qs->data, state, strlen(state));
    float *mine = malloc(n * sizeof(float)), *ref = malloc(n * sizeof(float));
    const uint8_t *c = codes->data;
    for (uint64_t i = 0; i < n; i++) {
        const int code = i % 2 ? c[i / 2] & 0x0F : c[i / 2] >> 4;
        mine[i] = f32_at(qmap, (uint64_t)code) * am[i / 64];
    }
    assert_int_equal(qp_nf4_dequantize(q, ref), 0);
    assert_memory_equal(mine, ref, n * sizeof(float));
    free(mine);
    free(ref);
    free(am);
    free(state);
}

static void check_int8(const qp_safetensors *st, const char *base, const qp_int8 *q)
{
    qp_int8_view v;
    qp_int8_view_of(q, &v);
    const uint64_t R = (uint64_t)v.rows, C = (uint64_t)v.cols;
    char name[256];
    snprintf(name, sizeof(name), "%s.weight", base);
    const qp_tensor_view *w = need(st, name, QP_DT_I8, 2, R, C);
    snprintf(name, sizeof(name), "%s.SCB", base);
    const qp_tensor_view *scb = need(st, name, QP_DT_F32, 1, R, 0);
    snprintf(name, sizeof(name), "%s.weight_format", base);
    const qp_tensor_view *fmt = need(st, name, QP_DT_U8, 0, 0, 0);
    assert_int_equal(((const uint8_t *)fmt->data)[0], 0);
    float *mine = malloc(R * C * sizeof(float)), *ref = malloc(R * C * sizeof(float));
    const float inv127 = (float)(1.0 / 127.0);
    for (uint64_t i = 0; i < R * C; i++) {
        const float p = (float)((const int8_t *)w->data)[i] * f32_at(scb, i / C);
        mine[i] = p * inv127;
    }
    assert_int_equal(qp_int8_dequantize(q, ref), 0);
    assert_memory_equal(mine, ref, R * C * sizeof(float));
    free(mine);
    free(ref);
}

static json_t *quant_config(fixture *f)
{
    char *p = qp_path_join(f->out, "config.json");
    json_error_t err;
    json_t *cfg = json_load_file(p, 0, &err);
    free(p);
    if (!cfg)
        fail_msg("config.json: %s", err.text);
    return cfg;
}

/* ---- tests ---- */

static void test_py_float(void **state)
{
    /* each expected text is CPython 3 repr() of the same double */
    static const struct { double v; const char *s; } cases[] = {
        {0.0, "0.0"}, {6.0, "6.0"}, {1e-05, "1e-05"}, {0.0001, "0.0001"}, {1.234e-05, "1.234e-05"},
        {1234.5, "1234.5"}, {1e16, "1e+16"}, {123456789012345678.0, "1.2345678901234568e+17"},
        {(double)0.1f, "0.10000000149011612"}, {-0.0123, "-0.0123"}, {1e15, "1000000000000000.0"},
        {(double)0.01234f, "0.01233999989926815"},
    };
    char buf[48];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        qp_bnb_py_float(buf, sizeof(buf), cases[i].v);
        assert_string_equal(buf, cases[i].s);
    }
}

/* NF4 without and with double quantization: odd n (a padding nibble), more
 * than 256 blocks (two nested blocks), a zero block; dense tensors that mix
 * BF16 and F32 are all written F32 (exact). */
static void nf4_case(void **state, int dq)
{
    fixture *f = *state;
    add_config(f, "nf4", 0);
    add_dense(f, "lm_head.weight", "BF16", 64 * 16, 16);
    add_dense(f, "model.embed_tokens.weight", "BF16", 64 * 16, 16);
    qp_nf4 *a = add_nf4(f, "model.layers.0.mlp.down_proj.weight", 131, 129, dq);   /* n = 16899: odd, 265 blocks */
    qp_nf4 *b = add_nf4(f, "model.layers.0.self_attn.q_proj.weight", 16, 64, dq);
    add_dense(f, "model.norm.weight", "F32", 16, 0);
    qp_safetensors *st = package(f);
    check_nf4(st, "model.layers.0.mlp.down_proj", a, dq, "float32");
    check_nf4(st, "model.layers.0.self_attn.q_proj", b, dq, "float32");
    need(st, "lm_head.weight", QP_DT_F32, 2, 64, 16);
    need(st, "model.embed_tokens.weight", QP_DT_F32, 2, 64, 16);
    need(st, "model.norm.weight", QP_DT_F32, 1, 16, 0);
    assert_int_equal(qp_safetensors_count(st), 3 + 2 * (dq ? 6 : 4));
    json_t *cfg = quant_config(f);
    char *got = json_dumps(json_object_get(cfg, "quantization_config"), JSON_COMPACT);
    char *want = qp_strfmt("{\"_load_in_4bit\":true,\"_load_in_8bit\":false,\"bnb_4bit_compute_dtype\":\"float32\","
                           "\"bnb_4bit_quant_storage\":\"uint8\",\"bnb_4bit_quant_type\":\"nf4\","
                           "\"bnb_4bit_use_double_quant\":%s,\"llm_int8_enable_fp32_cpu_offload\":false,"
                           "\"llm_int8_has_fp16_weight\":false,\"llm_int8_skip_modules\":[\"lm_head\"],"
                           "\"llm_int8_threshold\":6.0,\"load_in_4bit\":true,\"load_in_8bit\":false,"
                           "\"quant_method\":\"bitsandbytes\"}", dq ? "true" : "false");
    assert_string_equal(got, want);
    assert_string_equal(json_string_value(json_object_get(cfg, "torch_dtype")), "float32");
    char *tok = qp_path_join(f->out, "tokenizer_config.json");
    assert_true(qp_path_exists(tok));
    free(tok);
    free(got);
    free(want);
    json_decref(cfg);
    qp_safetensors_free(st);
    qp_nf4_free(a);
    qp_nf4_free(b);
}

static void test_nf4(void **state) { nf4_case(state, 0); }
static void test_nf4_double_quant(void **state) { nf4_case(state, 1); }

/* int8 with BF16 dense tensors kept BF16; a tied lm_head is skipped by name */
static void test_int8(void **state)
{
    fixture *f = *state;
    add_config(f, "int8", 1);
    add_dense(f, "model.embed_tokens.weight", "BF16", 64 * 16, 16);
    qp_int8 *a = add_int8(f, "model.layers.0.mlp.up_proj.weight", 48, 40);
    add_dense(f, "model.norm.weight", "BF16", 16, 0);
    qp_safetensors *st = package(f);
    check_int8(st, "model.layers.0.mlp.up_proj", a);
    need(st, "model.embed_tokens.weight", QP_DT_BF16, 2, 64, 16);
    json_t *cfg = quant_config(f);
    const json_t *qc = json_object_get(cfg, "quantization_config");
    assert_true(json_is_true(json_object_get(qc, "load_in_8bit")));
    assert_true(json_is_false(json_object_get(qc, "load_in_4bit")));
    assert_string_equal(json_string_value(json_object_get(qc, "bnb_4bit_quant_type")), "fp4");
    assert_string_equal(json_string_value(json_array_get(json_object_get(qc, "llm_int8_skip_modules"), 0)),
                        "lm_head");
    assert_string_equal(json_string_value(json_object_get(cfg, "torch_dtype")), "bfloat16");
    json_decref(cfg);
    qp_safetensors_free(st);
    qp_int8_free(a);
}

static void assert_refused(fixture *f, int code, const char *msg)
{
    assert_int_equal(qp_package_bnb(f->out, f->a, f->cache, WHAT), code);
    assert_string_equal(qp_error_last(), msg);
    char *p = qp_path_join(f->out, "model.safetensors");
    assert_false(qp_path_exists(p));
    free(p);
}

static void test_refuse_methods(void **state)
{
    fixture *f = *state;
    add_config(f, "gptq", 0);
    assert_refused(f, QP_EUSAGE, WHAT ": method gptq has no bitsandbytes form; format bitsandbytes takes method nf4 "
                                      "or int8 (package this model as gptq, awq or gguf, or quantize with method nf4 "
                                      "or int8)");
    json_object_set_new(qp_artifact_meta(f->a), "method", json_string("gguf"));
    assert_refused(f, QP_EUSAGE, WHAT ": method gguf has no bitsandbytes form; format bitsandbytes takes method nf4 "
                                      "or int8 (package this model as gguf, or quantize with method nf4 or int8)");
    json_object_del(qp_artifact_meta(f->a), "method");
    assert_refused(f, QP_EUSAGE, WHAT ": the model is not quantized; format bitsandbytes takes a model quantized "
                                      "with method nf4 or int8 (quantize it first, or package it as gguf)");
}

static void test_refuse_mixed(void **state)
{
    fixture *f = *state;
    add_config(f, "nf4", 0);
    qp_nf4 *a = add_nf4(f, "model.layers.0.mlp.down_proj.weight", 16, 64, 1);
    qp_nf4 *b = add_nf4(f, "model.layers.0.mlp.up_proj.weight", 16, 64, 0);
    assert_refused(f, QP_EUSAGE, WHAT ": tensor 'model.layers.0.mlp.up_proj.weight': blocksize 64, double_quant false "
                                      "but 'model.layers.0.mlp.down_proj.weight' has blocksize 64, double_quant true; "
                                      "a bitsandbytes checkpoint has one quantization config (quantize without "
                                      "per-tensor overrides)");
    qp_nf4_free(a);
    qp_nf4_free(b);
}

/* ---- the dump tool ---- */

static int dump(const char *cache_dir, const char *digest)
{
    qp_cache *c = NULL;
    qp_artifact *a = NULL;
    int rc = qp_cache_open(&c, cache_dir);
    if (rc == 0)
        rc = qp_artifact_load(&a, c, digest);
    for (size_t i = 0; rc == 0 && i < qp_artifact_count(a); i++) {
        const json_t *e = qp_artifact_entry(a, i);
        const char *name = qp_artifact_entry_name(e);
        const char *fmt = json_string_value(json_object_get(e, "format"));
        if (strncmp(name, "tensors/", 8) != 0 || !fmt || (strcmp(fmt, "nf4") && strcmp(fmt, "int8")))
            continue;
        void *buf = NULL;
        size_t len = 0;
        uint64_t n = qp_qtensor_nelem(e);
        float *w = malloc(n * sizeof(float) + 4);
        rc = qp_cache_get(c, qp_artifact_entry_digest(e), &buf, &len);
        if (rc == 0)
            rc = qp_qtensor_to_f32(e, buf, len, w, n, name);
        if (rc == 0) {
            char hex[QP_HEX_LEN];
            qp_sha256_buf(hex, w, n * sizeof(float));   /* f32 little-endian: the host's order on x86-64 / aarch64 */
            printf("%s %s\n", name + 8, hex);
        }
        free(w);
        free(buf);
    }
    if (rc)
        fprintf(stderr, "dump: %s\n", qp_error_last());
    qp_artifact_free(a);
    qp_cache_free(c);
    return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "--dump") == 0)
        return dump(argv[2], argv[3]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_py_float),
        cmocka_unit_test_setup_teardown(test_nf4, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nf4_double_quant, setup, teardown),
        cmocka_unit_test_setup_teardown(test_int8, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuse_methods, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuse_mixed, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
