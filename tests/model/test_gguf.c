/* GGUF reader: every llama.cpp oracle file in shared/vectors, synthetic
 * files for every value type, and malformed files with exact messages. */
#include "tests/support/testutil.h"

#include "common/error.h"
#include "common/fsutil.h"
#include "model/gguf.h"
#include "model/safetensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------- oracle files ---------- */

static const struct {
    const char *file;
    uint32_t file_type, embd_type, down_type, n_kv;
} house[] = {
    { "F32.gguf", 0, QP_GGML_F32, QP_GGML_F32, 25 },
    { "Q2_K.gguf", 10, QP_GGML_Q2_K, QP_GGML_Q2_K, 25 },
    { "Q2_K-imatrix.gguf", 10, QP_GGML_Q2_K, QP_GGML_Q2_K, 29 },
    { "Q3_K.gguf", 12, QP_GGML_Q3_K, QP_GGML_Q3_K, 25 },
    { "Q3_K-imatrix.gguf", 12, QP_GGML_Q3_K, QP_GGML_Q3_K, 29 },
    { "Q4_0.gguf", 2, QP_GGML_Q4_0, QP_GGML_Q4_0, 25 },
    { "Q4_0-imatrix.gguf", 2, QP_GGML_Q4_0, QP_GGML_Q4_0, 29 },
    { "Q4_1.gguf", 3, QP_GGML_Q4_1, QP_GGML_Q4_1, 25 },
    { "Q4_1-imatrix.gguf", 3, QP_GGML_Q4_1, QP_GGML_Q4_1, 29 },
    { "Q4_K.gguf", 15, QP_GGML_Q4_K, QP_GGML_Q4_K, 25 },
    { "Q4_K-imatrix.gguf", 15, QP_GGML_Q4_K, QP_GGML_Q4_K, 29 },
    { "Q5_0.gguf", 8, QP_GGML_Q5_0, QP_GGML_Q5_0, 25 },
    { "Q5_0-imatrix.gguf", 8, QP_GGML_Q5_0, QP_GGML_Q5_0, 29 },
    { "Q5_1.gguf", 9, QP_GGML_Q5_1, QP_GGML_Q5_1, 25 },
    { "Q5_1-imatrix.gguf", 9, QP_GGML_Q5_1, QP_GGML_Q5_1, 29 },
    { "Q5_K.gguf", 17, QP_GGML_Q5_K, QP_GGML_Q5_K, 25 },
    { "Q5_K-imatrix.gguf", 17, QP_GGML_Q5_K, QP_GGML_Q5_K, 29 },
    { "Q6_K.gguf", 18, QP_GGML_Q6_K, QP_GGML_Q6_K, 25 },
    { "Q6_K-imatrix.gguf", 18, QP_GGML_Q6_K, QP_GGML_Q6_K, 29 },
    { "Q8_0.gguf", 7, QP_GGML_Q8_0, QP_GGML_Q8_0, 25 },
    { "mix-Q2_K.gguf", 10, QP_GGML_Q2_K, QP_GGML_Q3_K, 25 },
    { "mix-Q3_K_M.gguf", 12, QP_GGML_Q3_K, QP_GGML_Q4_K, 25 },
    { "mix-Q4_K_M.gguf", 15, QP_GGML_Q4_K, QP_GGML_Q4_K, 25 },
    { "mix-Q5_K_M.gguf", 17, QP_GGML_Q5_K, QP_GGML_Q5_K, 25 },
    { "mix-Q6_K.gguf", 18, QP_GGML_Q6_K, QP_GGML_Q6_K, 25 },
};

static qp_gguf *open_shared(const char *rel)
{
    char *p = qp_test_shared_path(rel);
    qp_gguf *g = NULL;
    int rc = qp_gguf_open(&g, p);
    if (rc != 0)
        fprintf(stderr, "%s\n", qp_error_last());
    assert_int_equal(rc, 0);
    free(p);
    return g;
}

static void test_house_ggufs(void **state)
{
    (void)state;
    for (size_t f = 0; f < sizeof(house) / sizeof(house[0]); f++) {
        char rel[128];
        snprintf(rel, sizeof(rel), "vectors/house-llama/%s", house[f].file);
        qp_gguf *g = open_shared(rel);
        assert_int_equal(qp_gguf_version(g), 3);
        assert_int_equal(qp_gguf_alignment(g), 32);
        assert_int_equal(qp_gguf_tensor_count(g), 57);
        assert_int_equal(qp_gguf_kv_count(g), house[f].n_kv);
        /* tensor infos end at 25698 (25975 with the imatrix keys) */
        assert_int_equal(qp_gguf_data_offset(g), house[f].n_kv == 25 ? 25728 : 25984);

        const char *s;
        uint64_t len;
        uint32_t u;
        float x;
        assert_int_equal(qp_gguf_get_string(g, "general.architecture", &s, &len), 0);
        assert_string_equal(s, "llama");
        assert_int_equal(len, 5);
        assert_int_equal(qp_gguf_get_string(g, "general.name", &s, NULL), 0);
        assert_string_equal(s, "House Llama");
        assert_int_equal(qp_gguf_get_u32(g, "general.file_type", &u), 0);
        assert_int_equal(u, house[f].file_type);
        assert_int_equal(qp_gguf_get_u32(g, "llama.block_count", &u), 0);
        assert_int_equal(u, 6);
        assert_int_equal(qp_gguf_get_u32(g, "llama.attention.head_count_kv", &u), 0);
        assert_int_equal(u, 4);
        assert_int_equal(qp_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &x), 0);
        assert_true(x == 1e-5f);
        assert_int_equal(qp_gguf_get_f32(g, "llama.rope.freq_base", &x), 0);
        assert_true(x == 10000.0f);

        const qp_gguf_tensor *e = qp_gguf_find_tensor(g, "token_embd.weight");
        assert_non_null(e);
        assert_int_equal(e->type, house[f].embd_type);
        assert_int_equal(e->n_dims, 2);
        assert_int_equal(e->ne[0], 256);
        assert_int_equal(e->ne[1], 1024);
        assert_int_equal(e->shape[0], 1024);
        assert_int_equal(e->shape[1], 256);
        assert_int_equal(e->nelem, 256 * 1024);
        assert_int_equal(e->nbytes, (uint64_t)1024 * 256 / qp_ggml_block_size(e->type) * qp_ggml_type_size(e->type));
        const qp_gguf_tensor *d = qp_gguf_find_tensor(g, "blk.0.ffn_down.weight");
        assert_int_equal(d->type, house[f].down_type);
        assert_int_equal(d->shape[0], 256);
        assert_int_equal(d->shape[1], 768);
        const qp_gguf_tensor *n = qp_gguf_find_tensor(g, "output_norm.weight");
        assert_int_equal(n->type, QP_GGML_F32);
        assert_int_equal(n->n_dims, 1);
        assert_int_equal(n->ne[1], 1);
        assert_null(qp_gguf_find_tensor(g, "blk.6.ffn_down.weight"));
        /* data pointers: aligned, inside the data section */
        for (size_t i = 0; i < 57; i++) {
            const qp_gguf_tensor *t = qp_gguf_tensor_at(g, i);
            assert_ptr_equal(qp_gguf_find_tensor(g, t->name), t);
            assert_int_equal(t->offset % 32, 0);
            assert_int_equal((uintptr_t)t->data % 32, 0);
        }
        assert_null(qp_gguf_tensor_at(g, 57));
        qp_gguf_free(g);
    }
}

/* F32.gguf holds the house weights upcast from bf16: compare with safetensors. */
static void test_f32_gguf_matches_safetensors(void **state)
{
    (void)state;
    qp_gguf *g = open_shared("vectors/house-llama/F32.gguf");
    char *sp = qp_test_shared_path("models/house-llama/model.safetensors");
    qp_safetensors *st = NULL;
    assert_int_equal(qp_safetensors_open(&st, sp), 0);
    static const char *pairs[][2] = {
        { "token_embd.weight", "model.embed_tokens.weight" },
        { "output.weight", "lm_head.weight" },
        { "blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj.weight" },
        { "blk.3.attn_v.weight", "model.layers.3.self_attn.v_proj.weight" },
        { "output_norm.weight", "model.norm.weight" },
    };
    for (size_t i = 0; i < 5; i++) {
        qp_tensor_view v;
        const qp_gguf_tensor *t = qp_gguf_find_tensor(g, pairs[i][0]);
        const qp_tensor_view *ref = qp_safetensors_find(st, pairs[i][1]);
        assert_int_equal(qp_gguf_tensor_view(g, t, &v), 0);
        assert_int_equal(v.dtype, QP_DT_F32);
        assert_int_equal(v.ndim, ref->ndim);
        assert_memory_equal(v.shape, ref->shape, sizeof(v.shape));
        float *a = malloc(ref->nelem * 4);
        assert_int_equal(qp_convert_to_f32(a, ref->data, ref->dtype, ref->nelem), 0);
        assert_memory_equal(a, v.data, ref->nelem * 4);
        free(a);
    }
    qp_safetensors_free(st);
    free(sp);
    qp_gguf_free(g);

    g = open_shared("vectors/house-llama/Q4_K.gguf");
    qp_tensor_view v;
    assert_int_equal(qp_gguf_tensor_view(g, qp_gguf_find_tensor(g, "token_embd.weight"), &v), QP_EFORMAT);
    char *want = qp_strfmt("%s: tensor 'token_embd.weight': type Q4_K has no plain dtype (dequantize it first)",
                           qp_gguf_path(g));
    assert_string_equal(qp_error_last(), want);
    free(want);
    qp_gguf_free(g);
}

static void test_house_tokenizer_arrays(void **state)
{
    (void)state;
    qp_gguf *g = open_shared("vectors/house-llama/F32.gguf");
    const qp_gguf_value *tok, *sc, *tt;
    const char *s;
    uint64_t len;
    assert_int_equal(qp_gguf_get_array(g, "tokenizer.ggml.tokens", QP_GGUF_STRING, &tok), 0);
    assert_int_equal(qp_gguf_array_len(tok), 1024);
    assert_null(qp_gguf_array_data(tok));
    assert_int_equal(qp_gguf_array_get_string(tok, 1, &s, &len), 0);
    assert_string_equal(s, "<s>");
    assert_int_equal(qp_gguf_array_get_string(tok, 100, &s, &len), 0);
    assert_string_equal(s, "<0x61>");
    assert_int_equal(qp_gguf_array_get_string(tok, 259, &s, &len), 0);
    assert_string_equal(s, "\xe2\x96\x81t");
    assert_int_equal(len, 4);
    assert_int_equal(qp_gguf_array_get_string(tok, 1023, &s, &len), 0);
    assert_string_equal(s, "$");
    assert_int_equal(qp_gguf_array_get_string(tok, 1024, &s, &len), QP_EFORMAT);
    char *want = qp_strfmt("%s: key 'tokenizer.ggml.tokens': index 1024 out of range (length 1024)", qp_gguf_path(g));
    assert_string_equal(qp_error_last(), want);
    free(want);

    assert_int_equal(qp_gguf_get_array(g, "tokenizer.ggml.scores", QP_GGUF_F32, &sc), 0);
    float *scores = malloc(1024 * sizeof(float));
    assert_int_equal(qp_gguf_array_copy_f32(sc, scores), 0);
    assert_true(scores[0] == 0.0f && scores[300] == -41.0f && scores[304] == -45.0f);
    double dv;
    assert_int_equal(qp_gguf_array_get_float(sc, 301, &dv), 0);
    assert_true(dv == -42.0);
    free(scores);

    assert_int_equal(qp_gguf_get_array(g, "tokenizer.ggml.token_type", -1, &tt), 0);
    assert_int_equal(qp_gguf_array_type(tt), QP_GGUF_I32);
    int32_t *types = malloc(1024 * sizeof(int32_t));
    assert_int_equal(qp_gguf_array_copy_i32(tt, types), 0);
    assert_int_equal(types[0], 2);
    assert_int_equal(types[1], 3);
    assert_int_equal(types[3], 6);
    assert_int_equal(types[259], 1);
    free(types);
    int64_t iv;
    assert_int_equal(qp_gguf_array_get_int(tt, 0, &iv), 0);
    assert_int_equal(iv, 2);
    assert_int_equal(qp_gguf_array_get_string(tt, 0, &s, &len), QP_EFORMAT);
    want = qp_strfmt("%s: key 'tokenizer.ggml.token_type': array of i32, expected string", qp_gguf_path(g));
    assert_string_equal(qp_error_last(), want);
    free(want);

    /* typed getters: exact type, or the lenient int/float forms */
    bool b;
    assert_int_equal(qp_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b), 0);
    assert_true(b);
    assert_int_equal(qp_gguf_get_int(g, "tokenizer.ggml.eos_token_id", &iv), 0);
    assert_int_equal(iv, 2);
    assert_int_equal(qp_gguf_get_float(g, "llama.rope.freq_base", &dv), 0);
    assert_true(dv == 10000.0);
    int32_t i32;
    assert_int_equal(qp_gguf_get_i32(g, "llama.block_count", &i32), QP_EFORMAT);
    want = qp_strfmt("%s: key 'llama.block_count': is u32, expected i32", qp_gguf_path(g));
    assert_string_equal(qp_error_last(), want);
    free(want);
    assert_int_equal(qp_gguf_get_int(g, "general.name", &iv), QP_EFORMAT);
    want = qp_strfmt("%s: key 'general.name': is string, expected an integer", qp_gguf_path(g));
    assert_string_equal(qp_error_last(), want);
    free(want);
    assert_int_equal(qp_gguf_get_u32(g, "llama.nope", (uint32_t *)&i32), QP_ENOTFOUND);
    want = qp_strfmt("%s: key 'llama.nope': missing", qp_gguf_path(g));
    assert_string_equal(qp_error_last(), want);
    free(want);
    assert_null(qp_gguf_find(g, "llama.nope"));
    assert_string_equal(qp_gguf_kv_key(g, 0), "general.architecture");
    assert_int_equal(qp_gguf_value_type(qp_gguf_kv_value(g, 0)), QP_GGUF_STRING);
    assert_null(qp_gguf_kv_key(g, 25));
    qp_gguf_free(g);
}

static void test_tokenizer_vocabs(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        uint64_t n_tokens;
    } vocabs[] = {
        { "bert-bge", 30522 }, { "deepseek-coder", 32256 }, { "deepseek-llm", 102400 },
        { "falcon", 65024 }, { "gpt-2", 50257 }, { "llama-spm", 32000 }, { "mpt", 50432 },
        { "phi-3", 32064 }, { "refact", 49216 }, { "starcoder", 49152 },
    };
    for (size_t i = 0; i < sizeof(vocabs) / sizeof(vocabs[0]); i++) {
        char rel[128];
        snprintf(rel, sizeof(rel), "vectors/tokenizers/ggml-vocab-%s.gguf", vocabs[i].name);
        qp_gguf *g = open_shared(rel);
        const qp_gguf_value *tok;
        assert_int_equal(qp_gguf_tensor_count(g), 0);
        assert_int_equal(qp_gguf_get_array(g, "tokenizer.ggml.tokens", QP_GGUF_STRING, &tok), 0);
        assert_int_equal(qp_gguf_array_len(tok), vocabs[i].n_tokens);
        qp_gguf_free(g);
    }
    qp_gguf *g = open_shared("vectors/tokenizers/ggml-vocab-gpt-2.gguf");
    const qp_gguf_value *m;
    const char *s;
    assert_int_equal(qp_gguf_get_array(g, "tokenizer.ggml.merges", QP_GGUF_STRING, &m), 0);
    assert_int_equal(qp_gguf_array_len(m), 50000);
    assert_int_equal(qp_gguf_array_get_string(m, 0, &s, NULL), 0);
    assert_string_equal(s, "\xc4\xa0 t");
    assert_int_equal(qp_gguf_array_get_string(m, 2, &s, NULL), 0);
    assert_string_equal(s, "h e");
    qp_gguf_free(g);
}

/* ---------- synthetic files ---------- */

typedef struct {
    unsigned char *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void put_u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(buf *b, const char *s)
{
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}

static void kv_u32(buf *b, const char *k, uint32_t v)
{
    put_str(b, k);
    put_u32(b, 4);
    put_u32(b, v);
}

static void kv_str(buf *b, const char *k, const char *v)
{
    put_str(b, k);
    put_u32(b, 8);
    put_str(b, v);
}

typedef struct {
    const char *name;
    uint32_t n_dims;
    uint64_t ne[5];
    uint32_t type;
    uint64_t offset;
} tspec;

static char *g_dir;
static int g_seq;

static int setup(void **state)
{
    (void)state;
    g_dir = qp_test_tmpdir();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    qp_test_rmtree(g_dir);
    free(g_dir);
    return 0;
}

/* header + kv bytes + tensor infos + padding to 32 + data_len bytes. */
static char *write_gguf(uint32_t version, const buf *kv, uint64_t n_kv, const tspec *ts, uint64_t nt,
                        size_t data_len)
{
    buf b = { 0 };
    put(&b, "GGUF", 4);
    put_u32(&b, version);
    put_u64(&b, nt);
    put_u64(&b, n_kv);
    if (kv)
        put(&b, kv->p, kv->n);
    for (uint64_t i = 0; ts && i < nt; i++) {
        put_str(&b, ts[i].name);
        put_u32(&b, ts[i].n_dims);
        for (uint32_t d = 0; d < ts[i].n_dims; d++)
            put_u64(&b, ts[i].ne[d]);
        put_u32(&b, ts[i].type);
        put_u64(&b, ts[i].offset);
    }
    static const unsigned char zeros[64];
    if (data_len) {
        put(&b, zeros, (32 - b.n % 32) % 32);
        for (size_t i = 0; i < data_len; i++) {
            unsigned char c = (unsigned char)i;
            put(&b, &c, 1);
        }
    }
    char *path = qp_strfmt("%s/t%d.gguf", g_dir, g_seq++);
    qp_test_write(path, b.p, b.n);
    free(b.p);
    return path;
}

static char *write_raw(const void *data, size_t n)
{
    char *path = qp_strfmt("%s/t%d.gguf", g_dir, g_seq++);
    qp_test_write(path, data, n);
    return path;
}

static void expect_error(const char *path, const char *want_tail)
{
    qp_gguf *g = (qp_gguf *)1;
    assert_int_equal(qp_gguf_open(&g, path), QP_EFORMAT);
    assert_null(g);
    char *want = qp_strfmt("%s: %s", path, want_tail);
    assert_string_equal(qp_error_last(), want);
    assert_null(strchr(qp_error_last(), '\n'));
    free(want);
}

static void expect_kv_error(const buf *kv, uint64_t n_kv, const char *want_tail)
{
    char *p = write_gguf(3, kv, n_kv, NULL, 0, 0);
    expect_error(p, want_tail);
    free(p);
}

static void expect_tensor_error(const tspec *ts, uint64_t nt, size_t data_len, const char *want_tail)
{
    char *p = write_gguf(3, NULL, 0, ts, nt, data_len);
    expect_error(p, want_tail);
    free(p);
}

/* One key of every value type, nested arrays, a v2 file, and tensors. */
static void test_synthetic_all_types(void **state)
{
    (void)state;
    buf kv = { 0 };
    uint8_t u8 = 200;
    int8_t i8 = -100;
    uint16_t u16 = 60000;
    int16_t i16 = -30000;
    int32_t i32 = -2000000000;
    float f32 = 1.5f;
    uint64_t u64 = 0xfedcba9876543210ull;
    int64_t i64 = -5;
    double f64 = -0.125;
    struct { const char *k; uint32_t t; const void *v; size_t n; } sc[] = {
        { "t.u8", 0, &u8, 1 }, { "t.i8", 1, &i8, 1 }, { "t.u16", 2, &u16, 2 }, { "t.i16", 3, &i16, 2 },
        { "t.i32", 5, &i32, 4 }, { "t.f32", 6, &f32, 4 }, { "t.u64", 10, &u64, 8 }, { "t.i64", 11, &i64, 8 },
        { "t.f64", 12, &f64, 8 },
    };
    for (size_t i = 0; i < sizeof(sc) / sizeof(sc[0]); i++) {
        put_str(&kv, sc[i].k);
        put_u32(&kv, sc[i].t);
        put(&kv, sc[i].v, sc[i].n);
    }
    kv_u32(&kv, "t.u32", 4000000000u);
    put_str(&kv, "t.bool");
    put_u32(&kv, 7);
    put(&kv, "\x01", 1);
    kv_str(&kv, "t.str", "h\xc3\xa9llo");
    /* [[1, 2], [], [3]] as u16 arrays */
    put_str(&kv, "t.nested");
    put_u32(&kv, 9);
    put_u32(&kv, 9);
    put_u64(&kv, 3);
    uint16_t e[3] = { 1, 2, 3 };
    put_u32(&kv, 2); put_u64(&kv, 2); put(&kv, e, 4);
    put_u32(&kv, 2); put_u64(&kv, 0);
    put_u32(&kv, 2); put_u64(&kv, 1); put(&kv, e + 2, 2);
    put_str(&kv, "t.bools");
    put_u32(&kv, 9);
    put_u32(&kv, 7);
    put_u64(&kv, 3);
    put(&kv, "\x01\x00\x01", 3);
    kv_u32(&kv, "general.alignment", 64);
    tspec ts[3] = {
        { "w", 2, { 64, 3 }, QP_GGML_Q8_0, 0 },          /* 3 rows × 2 blocks × 34 = 204 bytes */
        { "v", 1, { 5 }, QP_GGML_F16, 256 },             /* 10 bytes */
        { "e", 3, { 0, 2, 2 }, QP_GGML_F32, 320 },       /* empty */
    };
    buf b = { 0 };
    put(&b, "GGUF", 4);
    put_u32(&b, 2);
    put_u64(&b, 3);
    put_u64(&b, 15);
    put(&b, kv.p, kv.n);
    for (int i = 0; i < 3; i++) {
        put_str(&b, ts[i].name);
        put_u32(&b, ts[i].n_dims);
        for (uint32_t d = 0; d < ts[i].n_dims; d++)
            put_u64(&b, ts[i].ne[d]);
        put_u32(&b, ts[i].type);
        put_u64(&b, ts[i].offset);
    }
    size_t data_off = (b.n + 63) / 64 * 64;
    unsigned char *file = calloc(1, data_off + 320);
    memcpy(file, b.p, b.n);
    for (int i = 0; i < 320; i++)
        file[data_off + i] = (unsigned char)(i * 7);
    char *path = write_raw(file, data_off + 320);

    qp_gguf *g = NULL;
    assert_int_equal(qp_gguf_open(&g, path), 0);
    assert_int_equal(qp_gguf_version(g), 2);
    assert_int_equal(qp_gguf_alignment(g), 64);
    assert_int_equal(qp_gguf_data_offset(g), data_off);
    uint8_t a8; int8_t b8; uint16_t a16; int16_t b16; uint32_t a32; int32_t b32; float c32;
    uint64_t a64; int64_t b64; double c64; bool bo; const char *s; uint64_t len;
    assert_int_equal(qp_gguf_get_u8(g, "t.u8", &a8), 0);
    assert_int_equal(a8, 200);
    assert_int_equal(qp_gguf_get_i8(g, "t.i8", &b8), 0);
    assert_int_equal(b8, -100);
    assert_int_equal(qp_gguf_get_u16(g, "t.u16", &a16), 0);
    assert_int_equal(a16, 60000);
    assert_int_equal(qp_gguf_get_i16(g, "t.i16", &b16), 0);
    assert_int_equal(b16, -30000);
    assert_int_equal(qp_gguf_get_u32(g, "t.u32", &a32), 0);
    assert_int_equal(a32, 4000000000u);
    assert_int_equal(qp_gguf_get_i32(g, "t.i32", &b32), 0);
    assert_int_equal(b32, -2000000000);
    assert_int_equal(qp_gguf_get_f32(g, "t.f32", &c32), 0);
    assert_true(c32 == 1.5f);
    assert_int_equal(qp_gguf_get_u64(g, "t.u64", &a64), 0);
    assert_true(a64 == 0xfedcba9876543210ull);
    assert_int_equal(qp_gguf_get_i64(g, "t.i64", &b64), 0);
    assert_int_equal(b64, -5);
    assert_int_equal(qp_gguf_get_f64(g, "t.f64", &c64), 0);
    assert_true(c64 == -0.125);
    assert_int_equal(qp_gguf_get_bool(g, "t.bool", &bo), 0);
    assert_true(bo);
    assert_int_equal(qp_gguf_get_string(g, "t.str", &s, &len), 0);
    assert_string_equal(s, "h\xc3\xa9llo");
    assert_int_equal(len, 6);
    /* lenient forms */
    assert_int_equal(qp_gguf_get_int(g, "t.i8", &b64), 0);
    assert_int_equal(b64, -100);
    assert_int_equal(qp_gguf_get_int(g, "t.u32", &b64), 0);
    assert_int_equal(b64, 4000000000ll);
    assert_int_equal(qp_gguf_get_int(g, "t.u64", &b64), QP_EFORMAT);
    char *want = qp_strfmt("%s: key 't.u64': u64 value does not fit in int64", path);
    assert_string_equal(qp_error_last(), want);
    free(want);
    assert_int_equal(qp_gguf_get_float(g, "t.f64", &c64), 0);
    assert_true(c64 == -0.125);
    assert_int_equal(qp_gguf_get_float(g, "t.i8", &c64), QP_EFORMAT);
    want = qp_strfmt("%s: key 't.i8': is i8, expected f32 or f64", path);
    assert_string_equal(qp_error_last(), want);
    free(want);

    const qp_gguf_value *n, *inner;
    int64_t x;
    assert_int_equal(qp_gguf_get_array(g, "t.nested", QP_GGUF_ARRAY, &n), 0);
    assert_int_equal(qp_gguf_array_len(n), 3);
    assert_int_equal(qp_gguf_array_get_array(n, 0, &inner), 0);
    assert_int_equal(qp_gguf_array_type(inner), QP_GGUF_U16);
    assert_int_equal(qp_gguf_array_len(inner), 2);
    assert_int_equal(qp_gguf_array_get_int(inner, 1, &x), 0);
    assert_int_equal(x, 2);
    assert_int_equal(qp_gguf_array_get_array(n, 1, &inner), 0);
    assert_int_equal(qp_gguf_array_len(inner), 0);
    assert_int_equal(qp_gguf_array_get_array(n, 2, &inner), 0);
    assert_int_equal(qp_gguf_array_get_int(inner, 0, &x), 0);
    assert_int_equal(x, 3);
    assert_int_equal(qp_gguf_array_get_int(n, 0, &x), QP_EFORMAT);
    want = qp_strfmt("%s: key 't.nested': array of array, expected integers", path);
    assert_string_equal(qp_error_last(), want);
    free(want);
    assert_int_equal(qp_gguf_get_array(g, "t.nested", QP_GGUF_STRING, &n), QP_EFORMAT);
    want = qp_strfmt("%s: key 't.nested': array of array, expected string", path);
    assert_string_equal(qp_error_last(), want);
    free(want);
    const qp_gguf_value *bs;
    assert_int_equal(qp_gguf_get_array(g, "t.bools", QP_GGUF_BOOL, &bs), 0);
    assert_int_equal(qp_gguf_array_get_bool(bs, 1, &bo), 0);
    assert_false(bo);
    assert_int_equal(qp_gguf_array_get_bool(bs, 2, &bo), 0);
    assert_true(bo);

    const qp_gguf_tensor *w = qp_gguf_find_tensor(g, "w");
    assert_int_equal(w->nbytes, 204);
    assert_int_equal(w->nelem, 192);
    assert_int_equal(w->shape[0], 3);
    assert_int_equal(w->shape[1], 64);
    assert_ptr_equal(w->data, (const unsigned char *)qp_gguf_tensor_at(g, 0)->data);
    assert_memory_equal(w->data, file + data_off, 204);
    const qp_gguf_tensor *v = qp_gguf_find_tensor(g, "v");
    assert_int_equal(v->nbytes, 10);
    assert_memory_equal(v->data, file + data_off + 256, 10);
    qp_tensor_view tv;
    assert_int_equal(qp_gguf_tensor_view(g, v, &tv), 0);
    assert_int_equal(tv.dtype, QP_DT_F16);
    assert_int_equal(tv.shape[0], 5);
    const qp_gguf_tensor *em = qp_gguf_find_tensor(g, "e");
    assert_int_equal(em->nbytes, 0);
    assert_int_equal(em->shape[0], 2);
    assert_int_equal(em->shape[2], 0);
    qp_gguf_free(g);
    free(file);
    free(path);
    free(b.p);
    free(kv.p);
}

static void test_type_table(void **state)
{
    (void)state;
    assert_string_equal(qp_ggml_type_name(QP_GGML_Q4_K), "Q4_K");
    assert_int_equal(qp_ggml_block_size(QP_GGML_Q4_K), 256);
    assert_int_equal(qp_ggml_type_size(QP_GGML_Q4_K), 144);
    assert_int_equal(qp_ggml_type_size(QP_GGML_Q6_K), 210);
    assert_int_equal(qp_ggml_type_size(QP_GGML_Q5_1), 24);
    assert_int_equal(qp_ggml_type_size(QP_GGML_IQ4_NL), 18);
    assert_int_equal(qp_ggml_block_size(QP_GGML_BF16), 1);
    assert_null(qp_ggml_type_name(4));     /* removed Q4_2 */
    assert_null(qp_ggml_type_name(31));
    assert_null(qp_ggml_type_name(1000));
    assert_int_equal(qp_ggml_block_size(4), 0);
    assert_int_equal(qp_ggml_type_parse("Q8_0"), 8);
    assert_int_equal(qp_ggml_type_parse("Q9"), -1);
    assert_string_equal(qp_gguf_type_name(QP_GGUF_F64), "f64");
    assert_string_equal(qp_gguf_type_name((qp_gguf_type)13), "?");
}

/* ---------- malformed files ---------- */

static void test_bad_header(void **state)
{
    (void)state;
    char *p = write_raw("GGU", 3);
    expect_error(p, "offset 0: file is 3 bytes, too short for a GGUF header");
    free(p);
    p = write_raw("PK\x03\x04 this is a zip file", 24);
    expect_error(p, "offset 0: bad magic 50 4b 03 04, not a GGUF file");
    free(p);
    p = write_raw("GGUF\x03\x00\x00\x00\x00\x00", 10);
    expect_error(p, "offset 0: file is 10 bytes, too short for a GGUF header");
    free(p);
    p = write_gguf(1, NULL, 0, NULL, 0, 0);
    expect_error(p, "offset 4: unsupported GGUF version 1 (2 and 3 are read)");
    free(p);
    p = write_gguf(0x03000000, NULL, 0, NULL, 0, 0);
    expect_error(p, "offset 4: unsupported GGUF version 50331648 (2 and 3 are read; this looks like a big-endian file)");
    free(p);
    /* counts that cannot fit: refused before any allocation */
    p = write_gguf(3, NULL, 0, NULL, 1ull << 60, 0);
    expect_error(p, "offset 8: tensor count 1152921504606846976 cannot fit in a 24-byte file (corrupt count or "
                 "truncated file)");
    free(p);
    p = write_gguf(3, NULL, 0xffffffffffffffffull, NULL, 0, 0);
    expect_error(p, "offset 16: metadata count 18446744073709551615 cannot fit in a 24-byte file (corrupt count "
                 "or truncated file)");
    free(p);
    qp_gguf *g = NULL;
    assert_int_equal(qp_gguf_open(&g, "/nonexistent.gguf"), QP_ENOTFOUND);
    assert_string_equal(qp_error_last(), "/nonexistent.gguf: cannot open: No such file or directory");
}

static void test_bad_kvs(void **state)
{
    (void)state;
    buf kv = { 0 };
    /* key string whose length runs past the end */
    put_u64(&kv, 1000);
    put(&kv, "general.name", 12);
    expect_kv_error(&kv, 1, "offset 24: key length 1000 runs past the end of the file (44 bytes)");
    kv.n = 0;
    /* a string value cut short */
    put_str(&kv, "general.name");
    put_u32(&kv, 8);
    put_u64(&kv, 50);
    put(&kv, "House", 5);
    expect_kv_error(&kv, 1, "key 'general.name': string length 50 at offset 48 runs past the end of the file (61 bytes)");
    kv.n = 0;
    /* a u32 value cut short */
    put_str(&kv, "a.b");
    put_u32(&kv, 4);
    put(&kv, "\x01\x02", 2);
    expect_kv_error(&kv, 1, "key 'a.b': value truncated at offset 39 (file is 41 bytes)");
    kv.n = 0;
    put_str(&kv, "a.b");
    put_u32(&kv, 13);
    put_u32(&kv, 0);
    expect_kv_error(&kv, 1, "key 'a.b': unknown value type 13 at offset 35");
    kv.n = 0;
    put_str(&kv, "a.arr");
    put_u32(&kv, 9);
    put_u32(&kv, 42);
    put_u64(&kv, 1);
    put_u32(&kv, 0);
    expect_kv_error(&kv, 1, "key 'a.arr': unknown array element type 42 at offset 41");
    kv.n = 0;
    /* huge array count */
    put_str(&kv, "tokenizer.ggml.tokens");
    put_u32(&kv, 9);
    put_u32(&kv, 8);
    put_u64(&kv, 1ull << 62);
    put_str(&kv, "a");
    expect_kv_error(&kv, 1, "key 'tokenizer.ggml.tokens': array count 4611686018427387904 at offset 61 cannot fit in "
                    "the remaining 9 bytes");
    kv.n = 0;
    put_str(&kv, "a.f");
    put_u32(&kv, 9);
    put_u32(&kv, 12);
    put_u64(&kv, 3);
    put_u64(&kv, 0);
    put_u64(&kv, 0);
    expect_kv_error(&kv, 1, "key 'a.f': array count 3 at offset 43 cannot fit in the remaining 16 bytes");
    kv.n = 0;
    /* nine nested levels of arrays */
    put_str(&kv, "deep");
    put_u32(&kv, 9);
    for (int i = 0; i < 9; i++) {
        put_u32(&kv, 9);
        put_u64(&kv, 1);
    }
    put_u32(&kv, 0);
    put_u64(&kv, 0);
    expect_kv_error(&kv, 1, "key 'deep': arrays nested deeper than 8 levels at offset 136");
    kv.n = 0;
    put_str(&kv, "a.bool");
    put_u32(&kv, 7);
    put(&kv, "\x02", 1);
    expect_kv_error(&kv, 1, "key 'a.bool': bool value 2 at offset 42 is neither 0 nor 1");
    kv.n = 0;
    kv_u32(&kv, "llama.block_count", 6);
    kv_str(&kv, "general.name", "x");
    kv_u32(&kv, "llama.block_count", 7);
    expect_kv_error(&kv, 3, "key 'llama.block_count': duplicate key");
    kv.n = 0;
    put_u64(&kv, 3);
    put(&kv, "a\0b", 3);
    put_u32(&kv, 4);
    put_u32(&kv, 1);
    expect_kv_error(&kv, 1, "offset 24: key is empty or contains a NUL byte");
    kv.n = 0;
    kv_u32(&kv, "general.alignment", 48);
    expect_kv_error(&kv, 1, "key 'general.alignment': 48 is not a power of two");
    kv.n = 0;
    kv_str(&kv, "general.alignment", "32");
    expect_kv_error(&kv, 1, "key 'general.alignment': is string, expected u32");
    kv.n = 0;
    /* the kv count promises more entries than the file can hold (2 × 13 bytes minimum) */
    kv_u32(&kv, "a.b", 1);
    put_u32(&kv, 0);
    expect_kv_error(&kv, 2, "offset 16: metadata count 2 cannot fit in a 47-byte file (corrupt count or "
                    "truncated file)");
    free(kv.p);
}

static void test_bad_tensors(void **state)
{
    (void)state;
    tspec ok = { "w", 2, { 32, 2 }, QP_GGML_Q8_0, 0 };   /* 68 bytes */
    tspec t[2] = { ok, ok };

    t[0].n_dims = 5;
    t[0].ne[2] = t[0].ne[3] = t[0].ne[4] = 1;
    expect_tensor_error(t, 1, 68, "tensor 'w': 5 dimensions, expected 1 to 4");
    t[0] = ok;
    t[0].type = 99;
    expect_tensor_error(t, 1, 68, "tensor 'w': unknown ggml type 99");
    t[0].type = 4;
    expect_tensor_error(t, 1, 68, "tensor 'w': unknown ggml type 4");
    t[0] = ok;
    t[0].ne[0] = 48;
    expect_tensor_error(t, 1, 68, "tensor 'w': ne[0] = 48 is not a multiple of the Q8_0 block size 32");
    t[0] = ok;
    t[0].type = QP_GGML_Q4_K;
    t[0].ne[0] = 128;
    expect_tensor_error(t, 1, 68, "tensor 'w': ne[0] = 128 is not a multiple of the Q4_K block size 256");
    t[0] = ok;
    t[0].offset = 16;
    expect_tensor_error(t, 1, 100, "tensor 'w': offset 16 is not a multiple of the alignment 32");
    t[0] = ok;
    t[0].ne[1] = 0x8000000000000000ull;
    expect_tensor_error(t, 1, 68, "tensor 'w': ne[1] = 9223372036854775808 exceeds INT64_MAX");
    t[0].ne[0] = 0x4000000000000000ull;
    t[0].ne[1] = 4;
    t[0].type = QP_GGML_F32;
    expect_tensor_error(t, 1, 68, "tensor 'w': element or byte count overflows 64 bits");
    t[0] = ok;
    expect_tensor_error(t, 1, 67, "tensor 'w': data [0, +68) runs past the end of the data section (67 bytes): "
                        "file truncated?");
    /* data section missing entirely */
    expect_tensor_error(t, 1, 0, "tensor 'w': data [0, +68) runs past the end of the data section (0 bytes): "
                        "file truncated?");
    t[1].name = "v";
    t[1].offset = 64;   /* w covers [0, 68) */
    expect_tensor_error(t, 2, 200, "tensor 'v': data at offset 64 overlaps tensor 'w' [0, +68)");
    t[1].offset = 96;
    t[1].name = "w";
    expect_tensor_error(t, 2, 200, "tensor 'w': duplicate tensor name");
    /* 2 tensors announced, 1 info written: 24 + 41 bytes cannot hold two 32-byte infos */
    t[1].name = "v";
    char *p = write_gguf(3, NULL, 0, t, 1, 0);
    char *raw = NULL;
    size_t n;
    assert_int_equal(qp_read_file(p, &raw, &n), 0);
    raw[8] = 2;
    free(p);
    p = write_raw(raw, n);
    expect_error(p, "offset 8: tensor count 2 cannot fit in a 65-byte file (corrupt count or truncated file)");
    free(p);
    free(raw);
    /* a valid pair, for contrast */
    p = write_gguf(3, NULL, 0, t, 2, 164);
    qp_gguf *g = NULL;
    assert_int_equal(qp_gguf_open(&g, p), 0);
    assert_int_equal(qp_gguf_tensor_count(g), 2);
    qp_gguf_free(g);
    free(p);
}

/* F32.gguf cut at several points: header, key, value, string array, tensor infos, data. */
static void test_truncated_real_file(void **state)
{
    (void)state;
    char *src = qp_test_shared_path("vectors/house-llama/F32.gguf");
    char *raw = NULL;
    size_t n;
    assert_int_equal(qp_read_file(src, &raw, &n), 0);
    static const struct {
        size_t len;
        const char *msg;
    } cuts[] = {
        { 10, "offset 0: file is 10 bytes, too short for a GGUF header" },
        { 1000, "offset 8: tensor count 57 cannot fit in a 1000-byte file (corrupt count or truncated file)" },
        { 5000, "key 'tokenizer.ggml.tokens': array count 1024 at offset 750 cannot fit in the remaining 4242 bytes" },
        { 13000, "key 'tokenizer.ggml.tokens': value truncated at offset 12995 (file is 13000 bytes)" },
        { 13004, "key 'tokenizer.ggml.tokens': string length 3 at offset 12995 runs past the end of the file "
                 "(13004 bytes)" },
        { 15000, "key 'tokenizer.ggml.scores': array count 1024 at offset 13903 cannot fit in the remaining 1089 bytes" },
        { 22200, "offset 22195: metadata entry 21 truncated (file is 22200 bytes)" },
        { 22210, "offset 22195: key length 27 runs past the end of the file (22210 bytes)" },
        { 22236, "key 'tokenizer.ggml.eos_token_id': value truncated at offset 22234 (file is 22236 bytes)" },
        { 22370, "offset 22364: tensor info truncated (file is 22370 bytes)" },
        { 22400, "tensor 'output.weight': tensor info truncated at offset 22397 (file is 22400 bytes)" },
        { 30000, "tensor 'output.weight': data [0, +1048576) runs past the end of the data section (4272 bytes): "
                 "file truncated?" },
        { 21010559, "tensor 'output_norm.weight': data [20983808, +1024) runs past the end of the data section "
                    "(20984831 bytes): file truncated?" },
    };
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        char *p = write_raw(raw, cuts[i].len);
        expect_error(p, cuts[i].msg);
        unlink(p);
        free(p);
    }
    free(raw);
    free(src);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_house_ggufs),
        cmocka_unit_test(test_f32_gguf_matches_safetensors),
        cmocka_unit_test(test_house_tokenizer_arrays),
        cmocka_unit_test(test_tokenizer_vocabs),
        cmocka_unit_test(test_type_table),
        cmocka_unit_test_setup_teardown(test_synthetic_all_types, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_header, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_kvs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_tensors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_real_file, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
