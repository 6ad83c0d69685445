/* safetensors reader/writer/checkpoint: the house model, round trips,
 * sharding, and malformed files with their exact one-line messages. */
#include "tests/support/testutil.h"

#include "common/error.h"
#include "common/fsutil.h"
#include "model/safetensors.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HOUSE_HDR 6120u   /* header length of the house model file */

static char *house_file(void)
{
    return qp_test_shared_path("models/house-llama/model.safetensors");
}

/* The whole house file, read with stdio (not through the reader under test). */
static unsigned char *slurp(const char *path, size_t *n)
{
    char *buf = NULL;
    assert_int_equal(qp_read_file(path, &buf, n), 0);
    return (unsigned char *)buf;
}

static void test_house_model(void **state)
{
    (void)state;
    char *path = house_file();
    size_t fsize;
    unsigned char *raw = slurp(path, &fsize);
    qp_safetensors *st = NULL;
    assert_int_equal(qp_safetensors_open(&st, path), 0);
    assert_string_equal(qp_safetensors_path(st), path);
    assert_int_equal(qp_safetensors_count(st), 57);

    const qp_tensor_view *t = qp_safetensors_find(st, "model.layers.0.mlp.up_proj.weight");
    assert_non_null(t);
    assert_string_equal(t->name, "model.layers.0.mlp.up_proj.weight");
    assert_int_equal(t->dtype, QP_DT_BF16);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 768);
    assert_int_equal(t->shape[1], 256);
    assert_int_equal(t->nelem, 768 * 256);
    assert_int_equal(t->nbytes, 768 * 256 * 2);
    /* data_offsets [1835520, 2228736] in the header */
    assert_memory_equal(t->data, raw + 8 + HOUSE_HDR + 1835520, t->nbytes);

    const qp_tensor_view *n = qp_safetensors_find(st, "model.norm.weight");
    assert_non_null(n);
    assert_int_equal(n->ndim, 1);
    assert_int_equal(n->shape[0], 256);
    assert_null(qp_safetensors_find(st, "model.layers.6.mlp.up_proj.weight"));
    assert_null(qp_safetensors_find(st, "__metadata__"));

    /* file order = data order, contiguous to the end of the file */
    assert_string_equal(qp_safetensors_tensor(st, 0)->name, "lm_head.weight");
    assert_string_equal(qp_safetensors_tensor(st, 1)->name, "model.embed_tokens.weight");
    assert_null(qp_safetensors_tensor(st, 57));
    uint64_t total = 0;
    for (size_t i = 0; i < 57; i++) {
        const qp_tensor_view *v = qp_safetensors_tensor(st, i);
        assert_ptr_equal(v->data, (const unsigned char *)qp_safetensors_tensor(st, 0)->data + total);
        assert_ptr_equal(qp_safetensors_find(st, v->name), v);
        assert_int_equal(v->dtype, QP_DT_BF16);
        total += v->nbytes;
    }
    assert_int_equal(total, fsize - 8 - HOUSE_HDR);

    const json_t *meta = qp_safetensors_metadata(st);
    assert_non_null(meta);
    assert_string_equal(json_string_value(json_object_get(meta, "format")), "pt");
    qp_safetensors_free(st);
    free(raw);
    free(path);
}

static void test_checkpoint_single(void **state)
{
    (void)state;
    char *dir = qp_test_shared_path("models/house-llama");
    qp_checkpoint *ck = NULL;
    assert_int_equal(qp_checkpoint_open(&ck, dir), 0);
    assert_int_equal(qp_checkpoint_count(ck), 57);
    const qp_tensor_view *t = qp_checkpoint_find(ck, "model.layers.5.self_attn.k_proj.weight");
    assert_non_null(t);
    assert_int_equal(t->shape[0], 128);   /* 4 kv heads × head dim 32 */
    assert_int_equal(t->shape[1], 256);
    assert_string_equal(qp_checkpoint_tensor(ck, 0)->name, "lm_head.weight");
    assert_null(qp_checkpoint_tensor(ck, 57));
    assert_null(qp_checkpoint_find(ck, "nope"));
    qp_checkpoint_free(ck);
    free(dir);
}

static int dir_entries(const char *dir)
{
    int n = 0;
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

/* A small file checked byte for byte: compact JSON, __metadata__ first,
 * tensors in call order, space padding to a multiple of 8. */
static void test_writer_exact_bytes(void **state)
{
    (void)state;
    char *dir = qp_test_tmpdir();
    char *path = qp_path_join(dir, "w.safetensors");
    qp_st_writer *w = NULL;
    float a[2] = { 1.0f, -2.0f };
    uint16_t b[3] = { 0x3f80, 0x4000, 0xc040 };
    uint64_t sa[1] = { 2 }, sb[2] = { 1, 3 };
    assert_int_equal(qp_st_writer_new(&w, path), 0);
    assert_int_equal(qp_st_writer_add(w, "b", QP_DT_BF16, 2, sb, b, sizeof(b)), 0);
    assert_int_equal(qp_st_writer_add(w, "a", QP_DT_F32, 1, sa, a, sizeof(a)), 0);
    assert_int_equal(qp_st_writer_set_metadata(w, "format", "pt"), 0);
    assert_int_equal(qp_st_writer_finish(w), 0);

    const char *hdr = "{\"__metadata__\":{\"format\":\"pt\"},"
                      "\"b\":{\"dtype\":\"BF16\",\"shape\":[1,3],\"data_offsets\":[0,6]},"
                      "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[6,14]}}";
    size_t hl = strlen(hdr), padded = (hl + 7) / 8 * 8;
    size_t n;
    unsigned char *got = slurp(path, &n);
    assert_int_equal(n, 8 + padded + 14);
    assert_int_equal(got[0], padded & 0xff);
    assert_int_equal(got[1], padded >> 8);
    for (int i = 2; i < 8; i++)
        assert_int_equal(got[i], 0);
    assert_memory_equal(got + 8, hdr, hl);
    for (size_t i = hl; i < padded; i++)
        assert_int_equal(got[8 + i], ' ');
    assert_memory_equal(got + 8 + padded, b, 6);
    assert_memory_equal(got + 8 + padded + 6, a, 8);
    free(got);

    qp_safetensors *st = NULL;
    assert_int_equal(qp_safetensors_open(&st, path), 0);
    assert_int_equal(qp_safetensors_count(st), 2);
    assert_string_equal(qp_safetensors_tensor(st, 0)->name, "b");
    assert_string_equal(qp_safetensors_tensor(st, 1)->name, "a");
    qp_safetensors_free(st);
    assert_int_equal(dir_entries(dir), 1);   /* no temp or spool file left */
    qp_test_rmtree(dir);
    free(path);
    free(dir);
}

/* Rewrites every house tensor, reads it back: same names, dtypes, shapes, bytes. */
static void test_writer_round_trip_house(void **state)
{
    (void)state;
    char *src = house_file();
    char *dir = qp_test_tmpdir();
    char *path = qp_path_join(dir, "model.safetensors");
    qp_safetensors *a = NULL, *b = NULL;
    qp_st_writer *w = NULL;
    assert_int_equal(qp_safetensors_open(&a, src), 0);
    assert_int_equal(qp_st_writer_new(&w, path), 0);
    for (size_t i = 0; i < qp_safetensors_count(a); i++) {
        const qp_tensor_view *t = qp_safetensors_tensor(a, i);
        assert_int_equal(qp_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, t->nbytes), 0);
    }
    assert_int_equal(qp_st_writer_set_metadata(w, "format", "pt"), 0);
    assert_int_equal(qp_st_writer_finish(w), 0);
    assert_int_equal(qp_safetensors_open(&b, path), 0);
    assert_int_equal(qp_safetensors_count(b), qp_safetensors_count(a));
    for (size_t i = 0; i < qp_safetensors_count(a); i++) {
        const qp_tensor_view *x = qp_safetensors_tensor(a, i), *y = qp_safetensors_tensor(b, i);
        assert_string_equal(x->name, y->name);
        assert_int_equal(x->dtype, y->dtype);
        assert_int_equal(x->ndim, y->ndim);
        assert_memory_equal(x->shape, y->shape, sizeof(x->shape));
        assert_int_equal(x->nbytes, y->nbytes);
        assert_memory_equal(x->data, y->data, x->nbytes);
        assert_int_equal((uintptr_t)y->data % 8, 0);   /* padding aligns the data */
    }
    assert_string_equal(json_string_value(json_object_get(qp_safetensors_metadata(b), "format")), "pt");
    qp_safetensors_free(a);
    qp_safetensors_free(b);
    /* the same data byte for byte: the data section of both files */
    size_t na, nb;
    unsigned char *ra = slurp(src, &na), *rb = slurp(path, &nb);
    uint64_t hb = 0;
    for (int i = 7; i >= 0; i--)
        hb = hb << 8 | rb[i];
    assert_int_equal(na - 8 - HOUSE_HDR, nb - 8 - hb);
    assert_memory_equal(ra + 8 + HOUSE_HDR, rb + 8 + hb, na - 8 - HOUSE_HDR);
    free(ra);
    free(rb);
    qp_test_rmtree(dir);
    free(path);
    free(dir);
    free(src);
}

static void test_writer_errors_and_abort(void **state)
{
    (void)state;
    char *dir = qp_test_tmpdir();
    char *path = qp_path_join(dir, "x.safetensors");
    qp_st_writer *w = NULL;
    float v[4] = { 0 };
    uint64_t s4[1] = { 4 }, s3[1] = { 3 };
    char *want;
    assert_int_equal(qp_st_writer_new(&w, path), 0);
    assert_int_equal(qp_st_writer_add(w, "t", QP_DT_F32, 1, s4, v, 16), 0);
    assert_int_equal(qp_st_writer_add(w, "t", QP_DT_F32, 1, s4, v, 16), QP_EUSAGE);
    want = qp_strfmt("%s: tensor 't': added twice", path);
    assert_string_equal(qp_error_last(), want);
    free(want);
    assert_int_equal(qp_st_writer_add(w, "u", QP_DT_F32, 1, s3, v, 16), QP_EUSAGE);
    want = qp_strfmt("%s: tensor 'u': 16 bytes given, shape and F32 need 12", path);
    assert_string_equal(qp_error_last(), want);
    free(want);
    assert_int_equal(qp_st_writer_add(w, "__metadata__", QP_DT_F32, 1, s4, v, 16), QP_EUSAGE);
    want = qp_strfmt("%s: tensor '__metadata__': reserved or missing tensor name", path);
    assert_string_equal(qp_error_last(), want);
    free(want);
    assert_int_equal(qp_st_writer_add(w, "bad\xff", QP_DT_F32, 1, s4, v, 16), QP_EUSAGE);
    want = qp_strfmt("%s: tensor name is not valid UTF-8", path);
    assert_string_equal(qp_error_last(), want);
    free(want);
    assert_int_equal(dir_entries(dir), 0);   /* the spool is invisible */
    qp_st_writer_abort(w);
    assert_int_equal(dir_entries(dir), 0);
    assert_false(qp_path_exists(path));
    qp_test_rmtree(dir);
    free(path);
    free(dir);
}

/* Splits the house model into two shards + index; the checkpoint must read
 * exactly what the single file holds. */
static void write_shards(const char *dir, const qp_safetensors *src, size_t split)
{
    const char *names[2] = { "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors" };
    json_t *wm = json_object();
    for (int s = 0; s < 2; s++) {
        char *p = qp_path_join(dir, names[s]);
        qp_st_writer *w = NULL;
        assert_int_equal(qp_st_writer_new(&w, p), 0);
        size_t lo = s ? split : 0, hi = s ? qp_safetensors_count(src) : split;
        for (size_t i = lo; i < hi; i++) {
            const qp_tensor_view *t = qp_safetensors_tensor(src, i);
            assert_int_equal(qp_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, t->nbytes), 0);
            json_object_set_new(wm, t->name, json_string(names[s]));
        }
        assert_int_equal(qp_st_writer_finish(w), 0);
        free(p);
    }
    json_t *root = json_pack("{s:{s:i}, s:o}", "metadata", "total_size", 10492416, "weight_map", wm);
    char *text = json_dumps(root, JSON_INDENT(2));
    char *ip = qp_path_join(dir, "model.safetensors.index.json");
    qp_test_write_str(ip, text);
    free(ip);
    free(text);
    json_decref(root);
}

static void test_sharded_checkpoint(void **state)
{
    (void)state;
    char *src_path = house_file();
    char *dir = qp_test_tmpdir();
    qp_safetensors *src = NULL;
    qp_checkpoint *ck = NULL;
    assert_int_equal(qp_safetensors_open(&src, src_path), 0);
    write_shards(dir, src, 29);
    assert_int_equal(qp_checkpoint_open(&ck, dir), 0);
    assert_int_equal(qp_checkpoint_count(ck), 57);
    for (size_t i = 0; i < 57; i++) {
        const qp_tensor_view *x = qp_safetensors_tensor(src, i);
        const qp_tensor_view *y = qp_checkpoint_find(ck, x->name);
        assert_non_null(y);
        assert_ptr_equal(qp_checkpoint_tensor(ck, i), y);   /* shard 1 then shard 2, data order */
        assert_int_equal(x->dtype, y->dtype);
        assert_memory_equal(x->shape, y->shape, sizeof(x->shape));
        assert_int_equal(x->nbytes, y->nbytes);
        assert_memory_equal(x->data, y->data, x->nbytes);
    }
    qp_checkpoint_free(ck);
    qp_safetensors_free(src);
    qp_test_rmtree(dir);
    free(dir);
    free(src_path);
}

/* Writes a shard "s1.safetensors" holding the F32 [1] tensors in names. */
static void tiny_shard(const char *dir, const char *file, const char *const *names, int n)
{
    char *p = qp_path_join(dir, file);
    qp_st_writer *w = NULL;
    float v = 1.0f;
    uint64_t s1[1] = { 1 };
    assert_int_equal(qp_st_writer_new(&w, p), 0);
    for (int i = 0; i < n; i++)
        assert_int_equal(qp_st_writer_add(w, names[i], QP_DT_F32, 1, s1, &v, 4), 0);
    assert_int_equal(qp_st_writer_finish(w), 0);
    free(p);
}

static void expect_index_error(const char *index_json, const char *want_tail)
{
    char *dir = qp_test_tmpdir();
    const char *ab[2] = { "a", "b" }, *bc[2] = { "b", "c" };
    tiny_shard(dir, "s1.safetensors", ab, 2);
    tiny_shard(dir, "s2.safetensors", bc, 2);
    char *ip = qp_path_join(dir, "model.safetensors.index.json");
    qp_test_write_str(ip, index_json);
    qp_checkpoint *ck = NULL;
    assert_int_equal(qp_checkpoint_open(&ck, dir), QP_EFORMAT);
    assert_null(ck);
    char *want = qp_strfmt("%s: %s", ip, want_tail);
    assert_string_equal(qp_error_last(), want);
    free(want);
    free(ip);
    qp_test_rmtree(dir);
    free(dir);
}

static void test_sharded_errors(void **state)
{
    (void)state;
    /* b is in both shards */
    expect_index_error("{\"weight_map\": {\"a\": \"s1.safetensors\", \"b\": \"s1.safetensors\", "
                       "\"c\": \"s2.safetensors\"}}",
                       "tensor 'b': appears in two shards, 's1.safetensors' and 's2.safetensors'");
    /* listed in the wrong shard */
    expect_index_error("{\"weight_map\": {\"a\": \"s2.safetensors\", \"b\": \"s1.safetensors\", "
                       "\"c\": \"s2.safetensors\"}}",
                       "tensor 'a': not found in its shard 's2.safetensors'");
    expect_index_error("{\"weight_map\": {\"a\": \"s1.safetensors\"}}",
                       "tensor 'b': in shard 's1.safetensors' but not listed in weight_map");
    expect_index_error("{\"weight_map\": {\"a\": \"../s1.safetensors\"}}",
                       "tensor 'a': shard must be a file name in the same directory");
    expect_index_error("{\"weight_map\": {\"a\": \"s1.safetensors\", \"a\": \"s2.safetensors\"}}",
                       "line 1: key \"a\" listed twice");
    expect_index_error("{\"metadata\": {}}", "weight_map missing, empty or not an object");
    expect_index_error("{\"weight_map\": {", "line 1 column 16: invalid JSON: string or '}' expected near end of file");

    char *dir = qp_test_tmpdir();
    qp_checkpoint *ck = NULL;
    assert_int_equal(qp_checkpoint_open(&ck, dir), QP_ENOTFOUND);
    char *want = qp_strfmt("%s: no model.safetensors or model.safetensors.index.json: not a safetensors "
                           "checkpoint directory", dir);
    assert_string_equal(qp_error_last(), want);
    free(want);
    /* a missing shard: the shard's own open error */
    char *ip = qp_path_join(dir, "model.safetensors.index.json");
    qp_test_write_str(ip, "{\"weight_map\": {\"a\": \"gone.safetensors\"}}");
    assert_int_equal(qp_checkpoint_open(&ck, dir), QP_ENOTFOUND);
    want = qp_strfmt("%s/gone.safetensors: cannot open: No such file or directory", dir);
    assert_string_equal(qp_error_last(), want);
    free(want);
    free(ip);
    qp_test_rmtree(dir);
    free(dir);
}

/* ---- malformed single files ---- */

static char *g_dir;

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

/* [u64 len][hdr][data_len zero bytes] */
static char *make_st(const char *hdr, size_t data_len)
{
    static int seq;
    char *path = qp_strfmt("%s/m%d.safetensors", g_dir, seq++);
    size_t hl = strlen(hdr);
    unsigned char *buf = calloc(1, 8 + hl + data_len + 1);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, hdr, hl);
    qp_test_write(path, buf, 8 + hl + data_len);
    free(buf);
    return path;
}

static void expect_open_error(const char *path, int code, const char *want_tail)
{
    qp_safetensors *st = (qp_safetensors *)1;
    assert_int_equal(qp_safetensors_open(&st, path), code);
    assert_null(st);
    char *want = qp_strfmt("%s: %s", path, want_tail);
    assert_string_equal(qp_error_last(), want);
    assert_null(strchr(qp_error_last(), '\n'));
    free(want);
}

static void expect_hdr_error(const char *hdr, size_t data_len, const char *want_tail)
{
    char *p = make_st(hdr, data_len);
    expect_open_error(p, QP_EFORMAT, want_tail);
    free(p);
}

#define T1 "\"dtype\":\"F32\",\"shape\":[1]"

static void test_truncated_house(void **state)
{
    (void)state;
    char *src = house_file();
    size_t n;
    unsigned char *raw = slurp(src, &n);
    char *p = qp_path_join(g_dir, "trunc.safetensors");

    qp_test_write(p, raw, 0);
    expect_open_error(p, QP_EFORMAT, "header: file is 0 bytes, too short for the 8-byte header length (truncated?)");
    qp_test_write(p, raw, 5);
    expect_open_error(p, QP_EFORMAT, "header: file is 5 bytes, too short for the 8-byte header length (truncated?)");
    qp_test_write(p, raw, 1000);
    expect_open_error(p, QP_EFORMAT, "header: length 6120 exceeds the 992 bytes after the length field "
                      "(truncated file?)");
    /* cut inside the data: the last tensor runs past the end */
    qp_test_write(p, raw, n - 1);
    expect_open_error(p, QP_EFORMAT, "tensor 'model.norm.weight': data_offsets [10491904, 10492416] run past "
                      "the end of the data (10492415 bytes): file truncated?");
    qp_test_write(p, raw, 8 + HOUSE_HDR + 1000);
    expect_open_error(p, QP_EFORMAT, "tensor 'lm_head.weight': data_offsets [0, 524288] run past the end of "
                      "the data (1000 bytes): file truncated?");
    /* one byte appended */
    unsigned char *more = malloc(n + 1);
    memcpy(more, raw, n);
    more[n] = 0;
    qp_test_write(p, more, n + 1);
    expect_open_error(p, QP_EFORMAT, "header: 1 trailing bytes after the last tensor's data");
    free(more);
    free(p);
    free(raw);
    free(src);
}

static void test_header_length_huge(void **state)
{
    (void)state;
    char *p = qp_path_join(g_dir, "huge.safetensors");
    unsigned char buf[16] = { 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, '{', '}' };
    qp_test_write(p, buf, 16);
    expect_open_error(p, QP_EFORMAT, "header: length 4294967296 exceeds the 100 MB limit (corrupt file or not "
                      "safetensors)");
    free(p);
    qp_safetensors *st = NULL;
    assert_int_equal(qp_safetensors_open(&st, "/nonexistent/x.safetensors"), QP_ENOTFOUND);
    assert_string_equal(qp_error_last(), "/nonexistent/x.safetensors: cannot open: No such file or directory");
}

static void test_bad_json(void **state)
{
    (void)state;
    expect_hdr_error("{\"a\": {" T1 ",", 0,
                     "header: invalid JSON at header byte 33: string or '}' expected near end of file");
    expect_hdr_error("[1, 2]", 0, "header: not a JSON object");
    expect_hdr_error("{\"w\xc3\x28\": {" T1 ", \"data_offsets\":[0,4]}}", 4,
                     "header: invalid UTF-8 at header byte 3 (tensor names must be valid UTF-8)");
    expect_hdr_error("{\"a\": {" T1 ", \"data_offsets\":[0,4]}, \"a\": {" T1 ", \"data_offsets\":[4,8]}}", 8,
                     "tensor 'a': duplicate tensor name in the header");
    expect_hdr_error("{\"a\": {" T1 ", \"dtype\":\"F32\", \"data_offsets\":[0,4]}}", 4,
                     "header: duplicate key 'dtype' at header byte 41");
    expect_hdr_error("{\"a\\u0000b\": {" T1 ", \"data_offsets\":[0,4]}}", 4,
                     "header: invalid JSON at header byte 11: NUL byte in object key not supported "
                     "near '\"a\\u0000b\"'");
}

static void test_bad_entries(void **state)
{
    (void)state;
    expect_hdr_error("{\"a\": 5}", 0, "tensor 'a': entry is not a JSON object");
    expect_hdr_error("{\"a\": {\"shape\":[1], \"data_offsets\":[0,4]}}", 4, "tensor 'a': dtype missing or not a string");
    expect_hdr_error("{\"a\": {\"dtype\":\"F128\", \"shape\":[1], \"data_offsets\":[0,16]}}", 16,
                     "tensor 'a': unknown dtype 'F128'");
    expect_hdr_error("{\"a\": {\"dtype\":\"F32\", \"shape\":3, \"data_offsets\":[0,12]}}", 12,
                     "tensor 'a': shape missing or not an array");
    expect_hdr_error("{\"a\": {\"dtype\":\"F32\", \"shape\":[2,-1], \"data_offsets\":[0,0]}}", 0,
                     "tensor 'a': shape element 1 is not a non-negative integer");
    expect_hdr_error("{\"a\": {\"dtype\":\"F32\", \"shape\":[2.0], \"data_offsets\":[0,8]}}", 8,
                     "tensor 'a': shape element 0 is not a non-negative integer");
    expect_hdr_error("{\"a\": {\"dtype\":\"F32\", \"shape\":[1,1,1,1,1,1,1,1,1], \"data_offsets\":[0,4]}}", 4,
                     "tensor 'a': shape has 9 dimensions, at most 8 supported");
    expect_hdr_error("{\"a\": {\"dtype\":\"F32\", \"shape\":[4294967296,4294967296,2], \"data_offsets\":[0,4]}}", 4,
                     "tensor 'a': shape [4294967296, 4294967296, 2] overflows a 64-bit byte count");
    expect_hdr_error("{\"a\": {\"dtype\":\"F32\", \"shape\":[4294967296,1073741824], \"data_offsets\":[0,4]}}", 4,
                     "tensor 'a': shape [4294967296, 1073741824] overflows a 64-bit byte count");
    expect_hdr_error("{\"a\": {" T1 "}}", 4,
                     "tensor 'a': data_offsets must be [begin, end], two non-negative integers");
    expect_hdr_error("{\"a\": {" T1 ", \"data_offsets\":[0,4,8]}}", 4,
                     "tensor 'a': data_offsets must be [begin, end], two non-negative integers");
    expect_hdr_error("{\"a\": {" T1 ", \"data_offsets\":[8,4]}}", 8,
                     "tensor 'a': data_offsets [8, 4]: begin is after end");
    expect_hdr_error("{\"a\": {\"dtype\":\"BF16\", \"shape\":[3,2], \"data_offsets\":[0,24]}}", 24,
                     "tensor 'a': data_offsets [0, 24] hold 24 bytes but BF16 [3, 2] needs 12");
    expect_hdr_error("{\"a\": {" T1 ", \"data_offsets\":[4,8]}}", 6,
                     "tensor 'a': data_offsets [4, 8] run past the end of the data (6 bytes): file truncated?");
}

static void test_layout_errors(void **state)
{
    (void)state;
    /* overlap: b starts inside a */
    expect_hdr_error("{\"a\": {\"dtype\":\"F32\",\"shape\":[2], \"data_offsets\":[0,8]}, "
                     "\"b\": {\"dtype\":\"F32\",\"shape\":[2], \"data_offsets\":[4,12]}}", 12,
                     "tensor 'b': data_offsets [4, 12] overlap tensor 'a' (which ends at 8)");
    /* a zero-sized tensor inside another one also overlaps */
    expect_hdr_error("{\"a\": {\"dtype\":\"F32\",\"shape\":[2], \"data_offsets\":[0,8]}, "
                     "\"z\": {\"dtype\":\"F32\",\"shape\":[0], \"data_offsets\":[4,4]}}", 8,
                     "tensor 'z': data_offsets [4, 4] overlap tensor 'a' (which ends at 8)");
    expect_hdr_error("{\"a\": {" T1 ", \"data_offsets\":[0,4]}, \"b\": {" T1 ", \"data_offsets\":[8,12]}}", 12,
                     "tensor 'b': hole of 4 bytes before its data (data must be contiguous; previous data ends at 4)");
    expect_hdr_error("{\"b\": {" T1 ", \"data_offsets\":[4,8]}}", 8,
                     "tensor 'b': hole of 4 bytes before its data (data must be contiguous; previous data ends at 0)");
    expect_hdr_error("{\"a\": {" T1 ", \"data_offsets\":[0,4]}}", 8,
                     "header: 4 trailing bytes after the last tensor's data");
    expect_hdr_error("{}", 3, "header: 3 trailing bytes after the last tensor's data");
    expect_hdr_error("{\"__metadata__\": {\"k\": 1}}", 0, "header: __metadata__ key 'k' is not a string");
    expect_hdr_error("{\"__metadata__\": [\"k\"]}", 0, "header: __metadata__ is not an object of strings");
}

static void test_valid_edge_cases(void **state)
{
    (void)state;
    qp_safetensors *st = NULL;
    /* empty file (no tensors) with trailing padding spaces in the header */
    char *p = make_st("{}      ", 0);
    assert_int_equal(qp_safetensors_open(&st, p), 0);
    assert_int_equal(qp_safetensors_count(st), 0);
    assert_null(qp_safetensors_metadata(st));
    qp_safetensors_free(st);
    free(p);
    /* zero-sized and scalar tensors; data order differs from header order */
    p = make_st("{\"s\": {\"dtype\":\"I64\",\"shape\":[], \"data_offsets\":[4,12]}, "
                "\"z\": {\"dtype\":\"BOOL\",\"shape\":[0,5], \"data_offsets\":[4,4]}, "
                "\"u\": {\"dtype\":\"U8\",\"shape\":[4], \"data_offsets\":[0,4]}}", 12);
    assert_int_equal(qp_safetensors_open(&st, p), 0);
    assert_int_equal(qp_safetensors_count(st), 3);
    assert_string_equal(qp_safetensors_tensor(st, 0)->name, "u");
    assert_string_equal(qp_safetensors_tensor(st, 1)->name, "z");
    assert_string_equal(qp_safetensors_tensor(st, 2)->name, "s");
    const qp_tensor_view *s = qp_safetensors_find(st, "s");
    assert_int_equal(s->ndim, 0);
    assert_int_equal(s->nelem, 1);
    assert_int_equal(s->nbytes, 8);
    assert_int_equal(qp_safetensors_find(st, "z")->nelem, 0);
    qp_safetensors_free(st);
    free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_house_model),
        cmocka_unit_test(test_checkpoint_single),
        cmocka_unit_test(test_writer_exact_bytes),
        cmocka_unit_test(test_writer_round_trip_house),
        cmocka_unit_test(test_writer_errors_and_abort),
        cmocka_unit_test(test_sharded_checkpoint),
        cmocka_unit_test(test_sharded_errors),
        cmocka_unit_test_setup_teardown(test_truncated_house, setup, teardown),
        cmocka_unit_test_setup_teardown(test_header_length_huge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_entries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_layout_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_valid_edge_cases, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
