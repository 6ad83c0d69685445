/* quant/imatrix.h: llama.cpp's legacy imatrix.dat — the oracle file read,
 * written back byte for byte, the importance llama-quantize derives from it,
 * building one from sums, and one-line errors for every kind of damage. */
#include "tests/support/testutil.h"

#include "common/error.h"
#include "common/fsutil.h"
#include "quant/imatrix.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_read_oracle(void **state)
{
    (void)state;
    char *path = qp_test_shared_path("vectors/house-llama/imatrix.dat");
    qp_imatrix *m;
    assert_int_equal(qp_imatrix_read(&m, path), 0);
    assert_int_equal(qp_imatrix_count(m), 42);   /* 6 layers × 7 matrices; no output / token_embd */
    const qp_imatrix_entry *e = qp_imatrix_at(m, 0);
    assert_string_equal(e->name, "blk.5.attn_output.weight");
    assert_int_equal(e->ncall, 100);
    assert_int_equal(e->nval, 256);
    assert_true(e->values[0] == 2.9989078044891357f);
    assert_true(e->values[1] == 5.3152008056640625f);
    e = qp_imatrix_find(m, "blk.4.ffn_down.weight");
    assert_non_null(e);
    assert_int_equal(e->nval, 768);
    assert_true(e->values[0] == 0.8176072239875793f);
    assert_null(qp_imatrix_find(m, "output.weight"));
    assert_null(qp_imatrix_at(m, 42));
    assert_int_equal(qp_imatrix_last_call(m), 100);
    assert_string_equal(qp_imatrix_dataset(m), "/work/steering/shared/data/shakespeare/train.txt");
    for (size_t i = 0; i < qp_imatrix_count(m); i++)
        assert_int_equal(qp_imatrix_at(m, i)->ncall, 100);

    /* llama-quantize: values / ncall */
    float w[768];
    assert_int_equal(qp_imatrix_weights(m, "blk.5.attn_output.weight", 256, w), 0);
    assert_true(w[0] == 2.9989078044891357f / 100);
    assert_true(w[1] == 5.3152008056640625f / 100);
    assert_int_equal(qp_imatrix_weights(m, "output.weight", 256, w), QP_ENOTFOUND);
    assert_string_equal(qp_error_last(), "imatrix has no entry for 'output.weight'");
    assert_int_equal(qp_imatrix_weights(m, "blk.4.ffn_down.weight", 256, w), QP_EUSAGE);
    assert_string_equal(qp_error_last(), "imatrix entry 'blk.4.ffn_down.weight' has 768 values, the tensor has rows of 256");
    qp_imatrix_free(m);
    free(path);
}

static void test_write_round_trip(void **state)
{
    (void)state;
    char *path = qp_test_shared_path("vectors/house-llama/imatrix.dat");
    char *dir = qp_test_tmpdir(), *out = qp_path_join(dir, "im.dat");
    qp_imatrix *m;
    assert_int_equal(qp_imatrix_read(&m, path), 0);
    assert_int_equal(qp_imatrix_write(m, out), 0);
    char *a, *b;
    size_t na, nb;
    assert_int_equal(qp_read_file(path, &a, &na), 0);
    assert_int_equal(qp_read_file(out, &b, &nb), 0);
    assert_int_equal(na, 56712);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na);
    free(a);
    free(b);
    qp_imatrix_free(m);
    qp_test_rmtree(dir);
    free(dir);
    free(out);
    free(path);
}

static void test_build_and_replace(void **state)
{
    (void)state;
    char *dir = qp_test_tmpdir(), *out = qp_path_join(dir, "x.dat");
    qp_imatrix *m;
    assert_int_equal(qp_imatrix_new(&m), 0);
    const float v1[3] = { 1, 2, 3 }, v2[3] = { 4, 5, 6 };
    assert_int_equal(qp_imatrix_set(m, "a.weight", 10, v1, 3), 0);
    assert_int_equal(qp_imatrix_set(m, "b.weight", 0, v1, 2), 0);
    assert_int_equal(qp_imatrix_set(m, "a.weight", 20, v2, 3), 0);   /* replaces, keeps position */
    assert_int_equal(qp_imatrix_count(m), 2);
    assert_string_equal(qp_imatrix_at(m, 0)->name, "a.weight");
    assert_int_equal(qp_imatrix_at(m, 0)->ncall, 20);
    assert_true(qp_imatrix_at(m, 0)->values[2] == 6.0f);
    /* ncall 0: values as stored */
    float w[3];
    assert_int_equal(qp_imatrix_weights(m, "b.weight", 2, w), 0);
    assert_true(w[0] == 1.0f && w[1] == 2.0f);
    /* llama-imatrix's save: sum/count·ncall */
    const float sums[3] = { 3.0f, 0.0f, 1.0f };
    const int64_t counts[3] = { 4, 0, 3 };
    assert_int_equal(qp_imatrix_set_sums(m, "c.weight", 7, sums, counts, 3), 0);
    const qp_imatrix_entry *c = qp_imatrix_find(m, "c.weight");
    assert_true(c->values[0] == (3.0f / 4.0f) * 7.0f);
    assert_true(c->values[1] == 0.0f);
    assert_true(c->values[2] == (1.0f / 3.0f) * 7.0f);
    qp_imatrix_set_last_call(m, 7);
    assert_int_equal(qp_imatrix_set_dataset(m, "calib.txt"), 0);
    assert_int_equal(qp_imatrix_write(m, out), 0);
    qp_imatrix_free(m);

    assert_int_equal(qp_imatrix_read(&m, out), 0);
    assert_int_equal(qp_imatrix_count(m), 3);
    assert_string_equal(qp_imatrix_at(m, 2)->name, "c.weight");
    assert_int_equal(qp_imatrix_at(m, 2)->ncall, 7);
    assert_int_equal(qp_imatrix_last_call(m), 7);
    assert_string_equal(qp_imatrix_dataset(m), "calib.txt");

    /* refusals */
    const float bad[2] = { 1.0f, -0.5f };
    assert_int_equal(qp_imatrix_set(m, "d", 1, bad, 2), QP_EUSAGE);
    assert_string_equal(qp_error_last(), "imatrix entry 'd': value 1 is -0.5: must be finite and >= 0");
    assert_int_equal(qp_imatrix_set(m, "", 1, v1, 2), QP_EUSAGE);
    assert_string_equal(qp_error_last(), "imatrix: entry name is empty");
    assert_int_equal(qp_imatrix_set(m, "d", -1, v1, 2), QP_EUSAGE);
    assert_string_equal(qp_error_last(), "imatrix entry 'd': bad size (nval 2, ncall -1)");
    assert_int_equal(qp_imatrix_count(m), 3);
    qp_imatrix_free(m);
    qp_test_rmtree(dir);
    free(dir);
    free(out);
}

/* A file cut at every length, and specific corruptions: one-line errors. */
static void test_damaged_files(void **state)
{
    (void)state;
    char *dir = qp_test_tmpdir(), *p = qp_path_join(dir, "bad.dat");
    /* 1 entry "ab", ncall 2, nval 2, {1, 2}, last_call 2, dataset "d" */
    unsigned char f[64];
    size_t n = 0;
    int32_t v;
#define I32(x) (v = (x), memcpy(f + n, &v, 4), n += 4)
    I32(1);
    I32(2);
    f[n++] = 'a';
    f[n++] = 'b';
    I32(2);
    I32(2);
    float one = 1, two = 2;
    memcpy(f + n, &one, 4);
    n += 4;
    memcpy(f + n, &two, 4);
    n += 4;
    I32(2);
    I32(1);
    f[n++] = 'd';
    qp_imatrix *m;
    qp_test_write(p, f, n);
    assert_int_equal(qp_imatrix_read(&m, p), 0);
    qp_imatrix_free(m);

    static const char *want[] = {
        "offset 0: truncated entry count",
        "offset 4: entry 0: truncated name length",
        "offset 8: entry 0: truncated name (want 2 bytes, 1 left)",
        "offset 10: entry 0 'ab': truncated ncall",
        "offset 14: entry 0 'ab': truncated value count",
        "offset 18: entry 0 'ab': truncated values (want 8 bytes, 4 left)",
        "offset 26: truncated last_call",
        "offset 30: truncated dataset name length",
        "offset 30: dataset name length 1 but 0 bytes left",
    };
    static const size_t cut[] = { 2, 6, 9, 12, 16, 22, 28, 32, 34 };
    for (size_t i = 0; i < sizeof cut / sizeof cut[0]; i++) {
        qp_test_write(p, f, cut[i]);
        m = (qp_imatrix *)0x1;
        assert_int_equal(qp_imatrix_read(&m, p), QP_EFORMAT);
        assert_ptr_equal(m, (qp_imatrix *)0x1);
        char *msg = qp_strfmt("%s: %s", p, want[i]);
        assert_string_equal(qp_error_last(), msg);
        free(msg);
    }
    /* the trailer is optional (old files) */
    qp_test_write(p, f, 26);
    assert_int_equal(qp_imatrix_read(&m, p), 0);
    assert_int_equal(qp_imatrix_last_call(m), 0);
    assert_string_equal(qp_imatrix_dataset(m), "");
    qp_imatrix_free(m);
    /* trailing garbage */
    f[n] = 'x';
    qp_test_write(p, f, n + 1);
    assert_int_equal(qp_imatrix_read(&m, p), QP_EFORMAT);
    char *msg = qp_strfmt("%s: offset 30: dataset name length 1 but 2 bytes left", p);
    assert_string_equal(qp_error_last(), msg);
    free(msg);
    /* negative count, absurd name length, duplicate names */
    unsigned char g[64];
    memcpy(g, f, n);
    v = -3;
    memcpy(g, &v, 4);
    qp_test_write(p, g, n);
    assert_int_equal(qp_imatrix_read(&m, p), QP_EFORMAT);
    msg = qp_strfmt("%s: offset 0: negative entry count -3", p);
    assert_string_equal(qp_error_last(), msg);
    free(msg);
    memcpy(g, f, n);
    v = 1 << 20;
    memcpy(g + 4, &v, 4);
    qp_test_write(p, g, n);
    assert_int_equal(qp_imatrix_read(&m, p), QP_EFORMAT);
    msg = qp_strfmt("%s: offset 4: entry 0: bad name length 1048576", p);
    assert_string_equal(qp_error_last(), msg);
    free(msg);
    memcpy(g, f, 26);   /* the entry twice, count 2 */
    memcpy(g + 26, f + 4, 22);
    v = 2;
    memcpy(g, &v, 4);
    qp_test_write(p, g, 48);
    assert_int_equal(qp_imatrix_read(&m, p), QP_EFORMAT);
    msg = qp_strfmt("%s: offset 26: entry 1 'ab': duplicate name", p);
    assert_string_equal(qp_error_last(), msg);
    free(msg);
    /* missing file */
    char *missing = qp_path_join(dir, "nope.dat");
    assert_int_not_equal(qp_imatrix_read(&m, missing), 0);
    assert_non_null(strstr(qp_error_last(), "nope.dat"));
    free(missing);
    qp_test_rmtree(dir);
    free(dir);
    free(p);
#undef I32
}

/* An imatrix.dat of n entries "blk.I.w" (1 value each), plus the entry
 * count field set to count. */
static char *many_entries_file(const char *dir, int32_t count, int32_t n, int dup_last)
{
    size_t cap = 4 + (size_t)n * 40, len = 0;
    unsigned char *b = malloc(cap);
    assert_non_null(b);
    memcpy(b, &count, 4);
    len = 4;
    for (int32_t i = 0; i < n; i++) {
        char name[32];
        int32_t nl = snprintf(name, sizeof name, "blk.%d.w", dup_last && i == n - 1 ? 0 : i), ncall = 1, nval = 1;
        float v = (float)i;
        memcpy(b + len, &nl, 4);
        memcpy(b + len + 4, name, (size_t)nl);
        len += 4 + (size_t)nl;
        memcpy(b + len, &ncall, 4);
        memcpy(b + len + 4, &nval, 4);
        memcpy(b + len + 8, &v, 4);
        len += 12;
    }
    char *p = qp_strfmt("%s/many.dat", dir);
    qp_test_write(p, b, len);
    free(b);
    return p;
}

/* #14 item 6: a lookup per entry was a scan of every entry before it (a
 * 100k-entry file took 37 s); names are hashed now, duplicates are still
 * found, and an entry count no model has is refused before reading on. */
static void test_many_entries(void **state)
{
    (void)state;
    char *dir = qp_test_tmpdir();
    const int32_t n = 60000;
    char *p = many_entries_file(dir, n, n, 0);
    qp_imatrix *m = NULL;
    assert_int_equal(qp_imatrix_read(&m, p), 0);
    assert_int_equal(qp_imatrix_count(m), (size_t)n);
    for (int32_t i = 0; i < n; i += 997) {
        char name[32];
        snprintf(name, sizeof name, "blk.%d.w", i);
        const qp_imatrix_entry *e = qp_imatrix_find(m, name);
        assert_non_null(e);
        assert_true(e->values[0] == (float)i);
    }
    assert_null(qp_imatrix_find(m, "blk.60000.w"));
    /* replacing keeps the position and the index */
    float v = 7;
    assert_int_equal(qp_imatrix_set(m, "blk.5.w", 2, &v, 1), 0);
    assert_true(qp_imatrix_find(m, "blk.5.w")->values[0] == 7.0f);
    assert_string_equal(qp_imatrix_at(m, 5)->name, "blk.5.w");
    assert_int_equal(qp_imatrix_count(m), (size_t)n);
    qp_imatrix_free(m);
    free(p);

    p = many_entries_file(dir, 2000, 2000, 1);
    m = NULL;
    assert_int_equal(qp_imatrix_read(&m, p), QP_EFORMAT);
    assert_null(m);
    assert_non_null(strstr(qp_error_last(), ": entry 1999 'blk.0.w': duplicate name"));
    free(p);

    p = many_entries_file(dir, 100000, 1, 0);
    assert_int_equal(qp_imatrix_read(&m, p), QP_EFORMAT);
    char *want = qp_strfmt("%s: offset 0: 100000 entries, more than the 65536 an importance matrix may have", p);
    assert_string_equal(qp_error_last(), want);
    free(want);
    free(p);
    qp_test_rmtree(dir);
    free(dir);
}

/* #14 item 11: a NaN, infinite or negative importance is refused where it
 * is read, naming the file, the entry and the value */
static void test_nonfinite_value(void **state)
{
    (void)state;
    char *dir = qp_test_tmpdir();
    const float bad[] = {NAN, INFINITY, -1.0f};
    const char *shown[] = {"nan", "inf", "-1"};
    for (int b = 0; b < 3; b++) {
        unsigned char buf[64];
        size_t len = 0;
        int32_t count = 1, nl = 7, ncall = 1, nval = 2;
        float v[2] = {1.0f, bad[b]};
        memcpy(buf + len, &count, 4), len += 4;
        memcpy(buf + len, &nl, 4), len += 4;
        memcpy(buf + len, "blk.0.w", 7), len += 7;
        memcpy(buf + len, &ncall, 4), len += 4;
        memcpy(buf + len, &nval, 4), len += 4;
        memcpy(buf + len, v, 8), len += 8;
        char *p = qp_strfmt("%s/bad%d.dat", dir, b);
        qp_test_write(p, buf, len);
        qp_imatrix *m = NULL;
        assert_int_equal(qp_imatrix_read(&m, p), QP_EFORMAT);
        assert_null(m);
        char *want = qp_strfmt("%s: offset 27: entry 0 'blk.0.w': value 1 is %s (an importance must be finite and >= "
                               "0); recompute the importance matrix", p, shown[b]);
        assert_string_equal(qp_error_last(), want);
        free(want);
        free(p);
    }
    qp_test_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_oracle),
        cmocka_unit_test(test_write_round_trip),
        cmocka_unit_test(test_build_and_replace),
        cmocka_unit_test(test_damaged_files),
        cmocka_unit_test(test_many_entries),
        cmocka_unit_test(test_nonfinite_value),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
