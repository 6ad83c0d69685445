/* common/buf.c (the growable buffer) and the temp-file and mapping helpers
 * of common/fsutil.c. */
#include "tests/support/testutil.h"

#include "common/buf.h"
#include "common/error.h"
#include "common/fsutil.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static void test_buf_append_and_detach(void **state)
{
    (void)state;
    qp_buf b = QP_BUF_INIT;
    assert_string_equal(qp_buf_cstr(&b), "");
    qp_buf_puts(&b, "ab");
    qp_buf_putc(&b, 'c');
    qp_buf_printf(&b, "-%d-", 42);
    qp_buf_append(&b, "\0z", 2);   /* bytes, NUL included */
    assert_int_equal(b.len, 9);
    assert_memory_equal(b.data, "abc-42-\0z", 9);
    assert_int_equal(b.data[b.len], '\0');
    qp_buf_truncate(&b, 3);
    assert_string_equal(qp_buf_cstr(&b), "abc");
    size_t n = 99;
    char *s = qp_buf_detach(&b, &n);
    assert_int_equal(n, 3);
    assert_string_equal(s, "abc");
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    free(s);
    s = qp_buf_detach(&b, &n);   /* an empty buffer gives an allocated "" */
    assert_int_equal(n, 0);
    assert_string_equal(s, "");
    free(s);
}

static void test_buf_growth(void **state)
{
    (void)state;
    qp_buf b = QP_BUF_INIT;
    /* a large reservation is taken as asked, not rounded up to 2^k */
    qp_buf_reserve(&b, 1000000);
    assert_int_equal(b.cap, 1000001);
    assert_int_equal(b.len, 0);
    qp_buf_free(&b);
    /* small appends double */
    for (int i = 0; i < 1000; i++)
        qp_buf_putc(&b, (char)('a' + i % 26));
    assert_int_equal(b.len, 1000);
    assert_true(b.cap >= 1001 && b.cap <= 2048);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(b.data[i], 'a' + i % 26);
    /* long formatted text goes past the stack buffer of qp_buf_vprintf */
    char big[600];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    qp_buf_truncate(&b, 0);
    qp_buf_printf(&b, "<%s>", big);
    assert_int_equal(b.len, sizeof(big) + 1);
    assert_int_equal(b.data[0], '<');
    assert_int_equal(b.data[b.len - 1], '>');
    qp_buf_free(&b);
}

/* A fresh temp directory per file test, in *state (qp_test_setup_tmpdir). */
static void test_tmp_publish_and_discard(void **state)
{
    const char *dir = *state;
    char *path = qp_path_join(dir, "out.bin"), *tmp = NULL;
    int fd = -1;
    assert_int_equal(qp_mkstemp_in(dir, ".t", &tmp, &fd), 0);
    assert_int_equal(qp_write_all(fd, "hello", 5), 0);
    assert_int_equal(qp_tmp_publish(fd, tmp, path, 0644), 0);   /* takes fd and tmp */
    char *text = NULL;
    size_t n = 0;
    assert_int_equal(qp_read_file(path, &text, &n), 0);
    assert_int_equal(n, 5);
    assert_string_equal(text, "hello");
    free(text);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);

    /* a failed rename (the target is a directory) unlinks the temp file */
    char *sub = qp_path_join(dir, "sub");
    assert_int_equal(qp_mkdir_p(sub, 0755), 0);
    char *keep = qp_path_join(sub, "keep");
    qp_test_write_str(keep, "x");
    assert_int_equal(qp_mkstemp_in(dir, ".t", &tmp, &fd), 0);
    char *tmp_copy = qp_strdup(tmp);
    assert_int_not_equal(qp_tmp_publish(fd, tmp, sub, 0644), 0);
    assert_non_null(strstr(qp_error_last(), "cannot rename into place"));
    assert_false(qp_path_exists(tmp_copy));
    free(tmp_copy);

    assert_int_equal(qp_mkstemp_in(dir, ".t", &tmp, &fd), 0);
    tmp_copy = qp_strdup(tmp);
    qp_tmp_discard(fd, tmp);
    assert_false(qp_path_exists(tmp_copy));
    qp_tmp_discard(-1, NULL);   /* nothing to do */
    free(tmp_copy);
    free(keep);
    free(sub);
    free(path);
}

static void test_map_file(void **state)
{
    const char *dir = *state;
    unsigned char *map = (unsigned char *)"not set";
    size_t n = 1;
    char *missing = qp_path_join(dir, "m");
    assert_int_equal(qp_map_file(missing, &map, &n), QP_ENOTFOUND);
    assert_non_null(strstr(qp_error_last(), missing));
    free(missing);
    assert_int_equal(qp_map_file(dir, &map, &n), QP_ERROR);
    assert_non_null(strstr(qp_error_last(), "not a regular file"));

    char *path = qp_path_join(dir, "f");
    qp_test_write_str(path, "");
    assert_int_equal(qp_map_file(path, &map, &n), 0);
    assert_null(map);   /* empty: nothing mapped */
    assert_int_equal(n, 0);
    qp_test_write_str(path, "abc");
    assert_int_equal(qp_map_file(path, &map, &n), 0);
    free(path);
    assert_int_equal(n, 3);
    assert_memory_equal(map, "abc", 3);
    munmap(map, n);
}

/* The end of a log whatever its size; a missing file, a directory refused. */
static void test_read_file_tail(void **state)
{
    const char *dir = *state;
    char *path = qp_path_join(dir, "log"), *text = NULL;
    size_t n = 0;
    assert_int_equal(qp_read_file_tail(path, 4, &text, &n), QP_ENOTFOUND);
    qp_test_write_str(path, "first\nlast\n");
    assert_int_equal(qp_read_file_tail(path, 5, &text, &n), 0);
    assert_int_equal(n, 5);
    assert_string_equal(text, "last\n");
    free(text);
    assert_int_equal(qp_read_file_tail(path, 1000, &text, &n), 0);   /* shorter than max: whole */
    assert_string_equal(text, "first\nlast\n");
    free(text);
    assert_int_equal(qp_read_file_tail(dir, 10, &text, &n), QP_ERROR);
    assert_non_null(strstr(qp_error_last(), "not a regular file"));
    assert_null(text);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* common/buf.h */
        cmocka_unit_test(test_buf_append_and_detach),
        cmocka_unit_test(test_buf_growth),
        /* common/fsutil.h */
        cmocka_unit_test_setup_teardown(test_tmp_publish_and_discard, qp_test_setup_tmpdir, qp_test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_map_file, qp_test_setup_tmpdir, qp_test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_read_file_tail, qp_test_setup_tmpdir, qp_test_teardown_tmpdir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
