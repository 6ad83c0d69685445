/* GGUF writer: exact bytes of a tiny file, every value type read back by the
 * project's reader, byte-identical rewrites of llama.cpp's oracle files
 * (gguf-py and gguf.cpp layouts), alignment, errors, and atomicity. */
#include "tests/support/testutil.h"

#include "common/error.h"
#include "common/fsutil.h"
#include "model/gguf.h"
#include "model/gguf_writer.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *read_all(const char *path, size_t *n)
{
    char *buf = NULL;
    assert_int_equal(qp_read_file(path, &buf, n), 0);
    return buf;
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

/* ---------- exact bytes ---------- */

static void test_exact_bytes(void **state)
{
    (void)state;
    char *dir = qp_test_tmpdir();
    char *path = qp_path_join(dir, "t.gguf");
    qp_gguf_writer *w;
    const float data[2] = { 1.0f, -2.0f };
    const uint64_t ne[1] = { 2 };
    assert_int_equal(qp_gguf_writer_new(&w, path), 0);
    assert_int_equal(dir_entries(dir), 1);   /* the temp file */
    assert_int_equal(qp_gguf_writer_add_u32(w, "a", 7), 0);
    assert_int_equal(qp_gguf_writer_add_str(w, "bc", "xy"), 0);
    assert_int_equal(qp_gguf_writer_add_tensor(w, "t", QP_GGML_F32, 1, ne, data, sizeof(data)), 0);
    assert_int_equal(qp_gguf_writer_finish(w), 0);
    assert_int_equal(dir_entries(dir), 1);   /* only t.gguf */

    static const uint8_t want[] = {
        'G', 'G', 'U', 'F', 3, 0, 0, 0,
        1, 0, 0, 0, 0, 0, 0, 0,                   /* 1 tensor */
        2, 0, 0, 0, 0, 0, 0, 0,                   /* 2 kv */
        1, 0, 0, 0, 0, 0, 0, 0, 'a', 4, 0, 0, 0, 7, 0, 0, 0,
        2, 0, 0, 0, 0, 0, 0, 0, 'b', 'c', 8, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 'x', 'y',
        1, 0, 0, 0, 0, 0, 0, 0, 't', 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,       /* type F32, offset 0 */
        /* 98 bytes so far -> padded to 128 */
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,   /* data padded to 32 */
        0, 0, 0, 0, 0, 0, 0, 0,
    };
    size_t n;
    char *got = read_all(path, &n);
    assert_int_equal(n, sizeof(want));
    assert_memory_equal(got, want, sizeof(want));
    free(got);
    qp_test_rmtree(dir);
    free(path);
    free(dir);
}

/* ---------- every value type, read back ---------- */

typedef struct {
    int calls;
    int fail;
} fill_state;

static int fill_ramp(void *ud, const char *name, void *dst, size_t nbytes)
{
    fill_state *s = ud;
    s->calls++;
    if (s->fail)
        return qp_error_set(QP_EFORMAT, "source: tensor '%s': cannot be produced", name);
    float *f = dst;
    for (size_t i = 0; i < nbytes / 4; i++)
        f[i] = (float)i * 0.5f;
    return 0;
}

static void test_roundtrip_all_types(void **state)
{
    (void)state;
    char *dir = qp_test_tmpdir();
    char *path = qp_path_join(dir, "all.gguf");
    qp_gguf_writer *w;
    assert_int_equal(qp_gguf_writer_new(&w, path), 0);
    assert_int_equal(qp_gguf_writer_add_u32(w, "general.alignment", 64), 0);
    assert_int_equal(qp_gguf_writer_add_u8(w, "u8", 250), 0);
    assert_int_equal(qp_gguf_writer_add_i8(w, "i8", -100), 0);
    assert_int_equal(qp_gguf_writer_add_u16(w, "u16", 65000), 0);
    assert_int_equal(qp_gguf_writer_add_i16(w, "i16", -32000), 0);
    assert_int_equal(qp_gguf_writer_add_u32(w, "u32", 4000000000u), 0);
    assert_int_equal(qp_gguf_writer_add_i32(w, "i32", -2000000000), 0);
    assert_int_equal(qp_gguf_writer_add_u64(w, "u64", UINT64_MAX - 5), 0);
    assert_int_equal(qp_gguf_writer_add_i64(w, "i64", INT64_MIN + 3), 0);
    assert_int_equal(qp_gguf_writer_add_f32(w, "f32", 1e-5f), 0);
    assert_int_equal(qp_gguf_writer_add_f64(w, "f64", -0.125e300), 0);
    assert_int_equal(qp_gguf_writer_add_bool(w, "bool", true), 0);
    assert_int_equal(qp_gguf_writer_add_string(w, "str", "a\0b", 3), 0);
    assert_int_equal(qp_gguf_writer_add_str(w, "empty", ""), 0);

    const int16_t i16s[3] = { -1, 2, -3 };
    const float f32s[2] = { 0.5f, -1.5f };
    const double f64s[2] = { 3.25, -7.0 };
    const bool bools[3] = { true, false, true };
    const uint64_t u64s[2] = { 1, UINT64_MAX };
    const char *strs[3] = { "▁the", "", "<0x0A>" };
    assert_int_equal(qp_gguf_writer_add_scalar_array(w, "a.i16", QP_GGUF_I16, i16s, 3), 0);
    assert_int_equal(qp_gguf_writer_add_scalar_array(w, "a.f32", QP_GGUF_F32, f32s, 2), 0);
    assert_int_equal(qp_gguf_writer_add_scalar_array(w, "a.f64", QP_GGUF_F64, f64s, 2), 0);
    assert_int_equal(qp_gguf_writer_add_scalar_array(w, "a.bool", QP_GGUF_BOOL, bools, 3), 0);
    assert_int_equal(qp_gguf_writer_add_scalar_array(w, "a.u64", QP_GGUF_U64, u64s, 2), 0);
    assert_int_equal(qp_gguf_writer_add_scalar_array(w, "a.empty", QP_GGUF_U8, NULL, 0), 0);
    assert_int_equal(qp_gguf_writer_add_string_array(w, "a.str", strs, NULL, 3), 0);
    const uint32_t row0[2] = { 1, 2 }, row1[1] = { 3 };
    const char *srow[2] = { "x", "yz" };
    qp_gguf_array inner[3] = {
        { .type = QP_GGUF_U32, .n = 2, .data = row0 },
        { .type = QP_GGUF_U32, .n = 1, .data = row1 },
        { .type = QP_GGUF_STRING, .n = 2, .strs = srow },
    };
    qp_gguf_array nested = { .type = QP_GGUF_ARRAY, .n = 3, .arrays = inner };
    assert_int_equal(qp_gguf_writer_add_array(w, "a.nested", &nested), 0);

    /* tensors: borrowed 2-D F32, Q8_0 bytes, and a callback tensor */
    float m[3 * 2] = { 1, 2, 3, 4, 5, 6 };
    const uint64_t ne_m[2] = { 3, 2 };
    uint8_t q8[2 * 34];
    for (size_t i = 0; i < sizeof(q8); i++)
        q8[i] = (uint8_t)(i * 7);
    const uint64_t ne_q[2] = { 32, 2 };
    const uint64_t ne_c[1] = { 40 };
    fill_state fs = { 0, 0 };
    assert_int_equal(qp_gguf_writer_add_tensor(w, "m", QP_GGML_F32, 2, ne_m, m, sizeof(m)), 0);
    assert_int_equal(qp_gguf_writer_add_tensor(w, "q", QP_GGML_Q8_0, 2, ne_q, q8, sizeof(q8)), 0);
    assert_int_equal(qp_gguf_writer_add_tensor_cb(w, "c", QP_GGML_F32, 1, ne_c, fill_ramp, &fs), 0);
    assert_int_equal(qp_gguf_writer_tensor_count(w), 3);
    assert_int_equal(qp_gguf_writer_kv_count(w), 22);
    assert_int_equal(fs.calls, 0);
    assert_int_equal(qp_gguf_writer_finish(w), 0);
    assert_int_equal(fs.calls, 1);

    qp_gguf *g;
    int rc = qp_gguf_open(&g, path);
    if (rc)
        fprintf(stderr, "%s\n", qp_error_last());
    assert_int_equal(rc, 0);
    assert_int_equal(qp_gguf_version(g), 3);
    assert_int_equal(qp_gguf_alignment(g), 64);
    assert_int_equal(qp_gguf_data_offset(g) % 64, 0);
    assert_int_equal(qp_gguf_kv_count(g), 22);
    assert_string_equal(qp_gguf_kv_key(g, 0), "general.alignment");
    assert_string_equal(qp_gguf_kv_key(g, 21), "a.nested");
    uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32;
    uint64_t u64; int64_t i64; float f32; double f64; bool b;
    assert_int_equal(qp_gguf_get_u8(g, "u8", &u8), 0);   assert_int_equal(u8, 250);
    assert_int_equal(qp_gguf_get_i8(g, "i8", &i8), 0);   assert_int_equal(i8, -100);
    assert_int_equal(qp_gguf_get_u16(g, "u16", &u16), 0); assert_int_equal(u16, 65000);
    assert_int_equal(qp_gguf_get_i16(g, "i16", &i16), 0); assert_int_equal(i16, -32000);
    assert_int_equal(qp_gguf_get_u32(g, "u32", &u32), 0); assert_true(u32 == 4000000000u);
    assert_int_equal(qp_gguf_get_i32(g, "i32", &i32), 0); assert_int_equal(i32, -2000000000);
    assert_int_equal(qp_gguf_get_u64(g, "u64", &u64), 0); assert_true(u64 == UINT64_MAX - 5);
    assert_int_equal(qp_gguf_get_i64(g, "i64", &i64), 0); assert_true(i64 == INT64_MIN + 3);
    assert_int_equal(qp_gguf_get_f32(g, "f32", &f32), 0); assert_true(f32 == 1e-5f);
    assert_int_equal(qp_gguf_get_f64(g, "f64", &f64), 0); assert_true(f64 == -0.125e300);
    assert_int_equal(qp_gguf_get_bool(g, "bool", &b), 0); assert_true(b);
    const char *s;
    uint64_t len;
    assert_int_equal(qp_gguf_get_string(g, "str", &s, &len), 0);
    assert_int_equal(len, 3);
    assert_memory_equal(s, "a\0b", 3);
    assert_int_equal(qp_gguf_get_string(g, "empty", &s, &len), 0);
    assert_int_equal(len, 0);

    const qp_gguf_value *a;
    int64_t iv;
    double dv;
    assert_int_equal(qp_gguf_get_array(g, "a.i16", QP_GGUF_I16, &a), 0);
    assert_int_equal(qp_gguf_array_len(a), 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(qp_gguf_array_get_int(a, i, &iv), 0);
        assert_int_equal(iv, i16s[i]);
    }
    assert_int_equal(qp_gguf_get_array(g, "a.f32", QP_GGUF_F32, &a), 0);
    assert_int_equal(qp_gguf_array_get_float(a, 1, &dv), 0);
    assert_true(dv == -1.5);
    assert_int_equal(qp_gguf_get_array(g, "a.f64", QP_GGUF_F64, &a), 0);
    assert_int_equal(qp_gguf_array_get_float(a, 0, &dv), 0);
    assert_true(dv == 3.25);
    assert_int_equal(qp_gguf_get_array(g, "a.bool", QP_GGUF_BOOL, &a), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(qp_gguf_array_get_bool(a, i, &b), 0);
        assert_int_equal(b, bools[i]);
    }
    assert_int_equal(qp_gguf_get_array(g, "a.u64", QP_GGUF_U64, &a), 0);
    assert_memory_equal(qp_gguf_array_data(a), u64s, sizeof(u64s));
    assert_int_equal(qp_gguf_get_array(g, "a.empty", QP_GGUF_U8, &a), 0);
    assert_int_equal(qp_gguf_array_len(a), 0);
    assert_int_equal(qp_gguf_get_array(g, "a.str", QP_GGUF_STRING, &a), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(qp_gguf_array_get_string(a, i, &s, &len), 0);
        assert_string_equal(s, strs[i]);
    }
    assert_int_equal(qp_gguf_get_array(g, "a.nested", QP_GGUF_ARRAY, &a), 0);
    assert_int_equal(qp_gguf_array_len(a), 3);
    const qp_gguf_value *sub;
    assert_int_equal(qp_gguf_array_get_array(a, 0, &sub), 0);
    assert_int_equal(qp_gguf_array_type(sub), QP_GGUF_U32);
    assert_int_equal(qp_gguf_array_len(sub), 2);
    assert_int_equal(qp_gguf_array_get_int(sub, 1, &iv), 0);
    assert_int_equal(iv, 2);
    assert_int_equal(qp_gguf_array_get_array(a, 2, &sub), 0);
    assert_int_equal(qp_gguf_array_get_string(sub, 1, &s, &len), 0);
    assert_string_equal(s, "yz");

    assert_int_equal(qp_gguf_tensor_count(g), 3);
    const qp_gguf_tensor *t = qp_gguf_tensor_at(g, 0);
    assert_string_equal(t->name, "m");
    assert_int_equal(t->n_dims, 2);
    assert_int_equal(t->ne[0], 3);
    assert_int_equal(t->ne[1], 2);
    assert_int_equal(t->offset, 0);
    assert_memory_equal(t->data, m, sizeof(m));
    t = qp_gguf_tensor_at(g, 1);
    assert_string_equal(t->name, "q");
    assert_int_equal(t->type, QP_GGML_Q8_0);
    assert_int_equal(t->offset, 64);        /* 24 bytes padded to 64 */
    assert_memory_equal(t->data, q8, sizeof(q8));
    t = qp_gguf_tensor_at(g, 2);
    assert_string_equal(t->name, "c");
    assert_int_equal(t->offset, 64 + 128);  /* 68 bytes padded to 128 */
    for (int i = 0; i < 40; i++) {
        float x;
        memcpy(&x, (const char *)t->data + 4 * i, 4);
        assert_true(x == (float)i * 0.5f);
    }
    /* file ends with the last tensor's padding, all zero */
    size_t n;
    char *bytes = read_all(path, &n);
    assert_int_equal(n, qp_gguf_data_offset(g) + 64 + 128 + 192);
    for (size_t i = qp_gguf_data_offset(g) + 192 + 160; i < n; i++)
        assert_int_equal(bytes[i], 0);
    free(bytes);
    qp_gguf_free(g);
    qp_test_rmtree(dir);
    free(path);
    free(dir);
}

/* ---------- llama.cpp oracle files rewritten byte for byte ---------- */

static void rewrite_identical(const char *rel)
{
    char *src = qp_test_shared_path(rel);
    char *dir = qp_test_tmpdir();
    char *path = qp_path_join(dir, "copy.gguf");
    qp_gguf *g;
    qp_gguf_writer *w;
    assert_int_equal(qp_gguf_open(&g, src), 0);
    assert_int_equal(qp_gguf_writer_new(&w, path), 0);
    for (size_t i = 0; i < qp_gguf_kv_count(g); i++)
        assert_int_equal(qp_gguf_writer_copy_kv(w, g, i), 0);
    for (size_t i = 0; i < qp_gguf_tensor_count(g); i++) {
        const qp_gguf_tensor *t = qp_gguf_tensor_at(g, i);
        assert_int_equal(qp_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data,
                                                   (size_t)t->nbytes), 0);
    }
    assert_int_equal(qp_gguf_writer_finish(w), 0);
    size_t na, nb;
    char *a = read_all(src, &na), *b = read_all(path, &nb);
    assert_int_equal(na, nb);
    assert_true(memcmp(a, b, na) == 0);
    free(a);
    free(b);
    qp_gguf_free(g);
    qp_test_rmtree(dir);
    free(path);
    free(dir);
    free(src);
}

static void test_rewrite_convert_file(void **state)
{
    (void)state;
    rewrite_identical("vectors/house-llama/F32.gguf");       /* gguf-py (convert_hf_to_gguf) */
}

static void test_rewrite_quantize_files(void **state)
{
    (void)state;
    rewrite_identical("vectors/house-llama/Q8_0.gguf");      /* gguf.cpp (llama-quantize) */
    rewrite_identical("vectors/house-llama/mix-Q4_K_M.gguf");
    rewrite_identical("vectors/house-llama/Q2_K-imatrix.gguf");
}

/* ---------- key order ---------- */

static void test_remove_key_moves_to_end(void **state)
{
    (void)state;
    char *dir = qp_test_tmpdir();
    char *path = qp_path_join(dir, "k.gguf");
    qp_gguf_writer *w;
    assert_int_equal(qp_gguf_writer_new(&w, path), 0);
    assert_int_equal(qp_gguf_writer_add_u32(w, "general.file_type", 0), 0);
    assert_int_equal(qp_gguf_writer_add_str(w, "b", "x"), 0);
    qp_gguf_writer_remove_key(w, "general.file_type");
    qp_gguf_writer_remove_key(w, "absent");
    assert_int_equal(qp_gguf_writer_add_u32(w, "general.file_type", 15), 0);
    assert_int_equal(qp_gguf_writer_kv_count(w), 2);
    assert_string_equal(qp_gguf_writer_kv_key(w, 0), "b");
    assert_string_equal(qp_gguf_writer_kv_key(w, 1), "general.file_type");
    assert_null(qp_gguf_writer_kv_key(w, 2));
    assert_int_equal(qp_gguf_writer_finish(w), 0);
    qp_gguf *g;
    uint32_t ft;
    assert_int_equal(qp_gguf_open(&g, path), 0);
    assert_string_equal(qp_gguf_kv_key(g, 1), "general.file_type");
    assert_int_equal(qp_gguf_get_u32(g, "general.file_type", &ft), 0);
    assert_int_equal(ft, 15);
    assert_int_equal(qp_gguf_tensor_count(g), 0);
    qp_gguf_free(g);
    qp_test_rmtree(dir);
    free(path);
    free(dir);
}

/* ---------- errors ---------- */

static void test_errors(void **state)
{
    (void)state;
    char *dir = qp_test_tmpdir();
    char *path = qp_path_join(dir, "e.gguf");
    char *msg;
    qp_gguf_writer *w;
    float f[64] = { 0 };
    assert_int_equal(qp_gguf_writer_new(&w, path), 0);

    assert_int_equal(qp_gguf_writer_add_u32(w, "k", 1), 0);
    assert_int_equal(qp_gguf_writer_add_f32(w, "k", 1), QP_EUSAGE);
    msg = qp_strfmt("%s: key 'k': already added", path);
    assert_string_equal(qp_error_last(), msg);
    free(msg);
    assert_int_equal(qp_gguf_writer_add_u32(w, "", 1), QP_EUSAGE);
    msg = qp_strfmt("%s: key '': empty key", path);
    assert_string_equal(qp_error_last(), msg);
    free(msg);
    assert_int_equal(qp_gguf_writer_add_u32(w, "general.alignment", 48), QP_EUSAGE);
    msg = qp_strfmt("%s: key 'general.alignment': must be a u32 power of two, got 48", path);
    assert_string_equal(qp_error_last(), msg);
    free(msg);
    assert_int_equal(qp_gguf_writer_add_u64(w, "general.alignment", 64), QP_EUSAGE);
    msg = qp_strfmt("%s: key 'general.alignment': must be a u32 power of two, got type 10", path);
    assert_string_equal(qp_error_last(), msg);
    free(msg);
    qp_gguf_array bad = { .type = (qp_gguf_type)13, .n = 1 };
    assert_int_equal(qp_gguf_writer_add_array(w, "arr", &bad), QP_EUSAGE);
    msg = qp_strfmt("%s: key 'arr': array of unknown type 13", path);
    assert_string_equal(qp_error_last(), msg);
    free(msg);
    assert_int_equal(qp_gguf_writer_add_scalar_array(w, "arr", QP_GGUF_U32, NULL, 2), QP_EUSAGE);
    msg = qp_strfmt("%s: key 'arr': NULL array data", path);
    assert_string_equal(qp_error_last(), msg);
    free(msg);
    assert_int_equal(qp_gguf_writer_kv_count(w), 1);

    const uint64_t ne1[1] = { 4 }, ne_q[2] = { 48, 1 }, ne_big[2] = { 32, 2 };
    assert_int_equal(qp_gguf_writer_add_tensor(w, "t", QP_GGML_F32, 1, ne1, f, 16), 0);
    assert_int_equal(qp_gguf_writer_add_tensor(w, "t", QP_GGML_F32, 1, ne1, f, 16), QP_EUSAGE);
    msg = qp_strfmt("%s: tensor 't': already added", path);
    assert_string_equal(qp_error_last(), msg);
    free(msg);
    const char *longname = "blk.0.this_name_is_far_too_long_for_ggml_which_allows_63_bytes.w";
    assert_int_equal(qp_gguf_writer_add_tensor(w, longname, QP_GGML_F32, 1, ne1, f, 16), QP_EUSAGE);
    msg = qp_strfmt("%s: tensor '%s': name longer than 63 bytes", path, longname);
    assert_string_equal(qp_error_last(), msg);
    free(msg);
    assert_int_equal(qp_gguf_writer_add_tensor(w, "u", 5, 1, ne1, f, 16), QP_EUSAGE);
    msg = qp_strfmt("%s: tensor 'u': unknown ggml type 5", path);
    assert_string_equal(qp_error_last(), msg);
    free(msg);
    assert_int_equal(qp_gguf_writer_add_tensor(w, "u", QP_GGML_F32, 5, ne1, f, 16), QP_EUSAGE);
    msg = qp_strfmt("%s: tensor 'u': 5 dimensions, expected 1 to 4", path);
    assert_string_equal(qp_error_last(), msg);
    free(msg);
    assert_int_equal(qp_gguf_writer_add_tensor(w, "u", QP_GGML_Q4_K, 2, ne_q, f, 16), QP_EUSAGE);
    msg = qp_strfmt("%s: tensor 'u': rows of 48 elements are not a multiple of the Q4_K block (256)", path);
    assert_string_equal(qp_error_last(), msg);
    free(msg);
    assert_int_equal(qp_gguf_writer_add_tensor(w, "u", QP_GGML_Q8_0, 2, ne_big, f, 64), QP_EUSAGE);
    msg = qp_strfmt("%s: tensor 'u': 64 bytes given, its type and shape need 68 bytes", path);
    assert_string_equal(qp_error_last(), msg);
    free(msg);
    assert_int_equal(qp_gguf_writer_tensor_count(w), 1);
    qp_gguf_writer_abort(w);
    assert_int_equal(dir_entries(dir), 0);   /* abort removed the temp file */

    /* a failing fill callback: its message, no file, no temp file */
    fill_state fs = { 0, 1 };
    assert_int_equal(qp_gguf_writer_new(&w, path), 0);
    assert_int_equal(qp_gguf_writer_add_tensor_cb(w, "c", QP_GGML_F32, 1, ne1, fill_ramp, &fs), 0);
    assert_int_equal(qp_gguf_writer_finish(w), QP_EFORMAT);
    assert_string_equal(qp_error_last(), "source: tensor 'c': cannot be produced");
    assert_int_equal(dir_entries(dir), 0);

    /* an existing file is replaced only by a complete one */
    qp_test_write_str(path, "old");
    assert_int_equal(qp_gguf_writer_new(&w, path), 0);
    assert_int_equal(qp_gguf_writer_add_tensor_cb(w, "c", QP_GGML_F32, 1, ne1, fill_ramp, &fs), 0);
    assert_int_equal(qp_gguf_writer_finish(w), QP_EFORMAT);
    size_t n;
    char *old = read_all(path, &n);
    assert_string_equal(old, "old");
    free(old);
    assert_int_equal(dir_entries(dir), 1);

    /* a directory that does not exist */
    char *nodir = qp_path_join(dir, "missing/x.gguf");
    char *missing = qp_path_join(dir, "missing");
    assert_int_equal(qp_gguf_writer_new(&w, nodir), QP_ERROR);
    assert_null(w);
    msg = qp_strfmt("%s: cannot create a temporary file: No such file or directory", missing);
    assert_string_equal(qp_error_last(), msg);
    free(msg);
    free(missing);
    free(nodir);
    qp_test_rmtree(dir);
    free(path);
    free(dir);
}

static void test_nbytes(void **state)
{
    (void)state;
    const uint64_t ne[2] = { 256, 3 }, ne_bad[2] = { 100, 3 };
    assert_int_equal(qp_gguf_tensor_nbytes(QP_GGML_Q4_K, 2, ne), 3 * 144);
    assert_int_equal(qp_gguf_tensor_nbytes(QP_GGML_Q8_0, 2, ne), 3 * 8 * 34);
    assert_int_equal(qp_gguf_tensor_nbytes(QP_GGML_F16, 1, ne), 512);
    assert_int_equal(qp_gguf_tensor_nbytes(QP_GGML_Q4_K, 2, ne_bad), 0);
    assert_int_equal(qp_gguf_tensor_nbytes(4, 2, ne), 0);
}

/* ---------- zero-copy views and large tensors ---------- */

typedef struct {
    float *own;     /* lent by the view (NULL: it fills dst) */
    int calls;
} view_state;

static int view_cb(void *ud, const char *name, void *dst, size_t nbytes, const void **data)
{
    view_state *v = ud;
    v->calls++;
    if (v->own) {
        *data = v->own;
        return 0;
    }
    float *f = dst;
    for (size_t i = 0; i < nbytes / 4; i++)
        f[i] = (float)i * 0.5f + (name[0] == 'b' ? 1000.0f : 0.0f);
    *data = dst;
    return 0;
}

/* a lent tensor, a filled one and a 20 MiB one (past the 16 MiB write
 * buffer) read back exactly, each produced once, at the right offsets */
static void test_views(void **state)
{
    (void)state;
    char *dir = qp_test_tmpdir(), *path = qp_path_join(dir, "v.gguf");
    const uint64_t n_small = 1000, n_big = 5u << 20;
    const uint64_t ne_s[1] = { n_small }, ne_b[1] = { n_big };
    float *own = malloc(n_small * 4), *big = malloc(n_big * 4);
    for (uint64_t i = 0; i < n_small; i++)
        own[i] = -(float)i;
    for (uint64_t i = 0; i < n_big; i++)
        big[i] = (float)(i % 4099);
    view_state lent = { own, 0 }, filled = { NULL, 0 }, lent_big = { big, 0 };
    qp_gguf_writer *w;
    assert_int_equal(qp_gguf_writer_new(&w, path), 0);
    assert_int_equal(qp_gguf_writer_add_tensor_view(w, "a", QP_GGML_F32, 1, ne_s, view_cb, &lent), 0);
    assert_int_equal(qp_gguf_writer_add_tensor_view(w, "b", QP_GGML_F32, 1, ne_s, view_cb, &filled), 0);
    assert_int_equal(qp_gguf_writer_add_tensor_view(w, "c", QP_GGML_F32, 1, ne_b, view_cb, &lent_big), 0);
    assert_int_equal(qp_gguf_writer_add_tensor_view(w, "d", QP_GGML_F32, 1, ne_s, NULL, NULL), QP_EUSAGE);
    assert_int_equal(qp_gguf_writer_finish(w), 0);
    assert_int_equal(lent.calls + filled.calls + lent_big.calls, 3);
    qp_gguf *g = NULL;
    assert_int_equal(qp_gguf_open(&g, path), 0);
    assert_int_equal(qp_gguf_tensor_count(g), 3);
    const qp_gguf_tensor *a = qp_gguf_tensor_at(g, 0), *b = qp_gguf_tensor_at(g, 1), *c = qp_gguf_tensor_at(g, 2);
    assert_memory_equal(a->data, own, n_small * 4);
    for (uint64_t i = 0; i < n_small; i++)
        assert_true(((const float *)b->data)[i] == (float)i * 0.5f + 1000.0f);
    assert_memory_equal(c->data, big, n_big * 4);
    qp_gguf_free(g);
    free(own);
    free(big);
    qp_test_rmtree(dir);
    free(path);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_bytes),
        cmocka_unit_test(test_roundtrip_all_types),
        cmocka_unit_test(test_rewrite_convert_file),
        cmocka_unit_test(test_rewrite_quantize_files),
        cmocka_unit_test(test_remove_key_moves_to_end),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_nbytes),
        cmocka_unit_test(test_views),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
