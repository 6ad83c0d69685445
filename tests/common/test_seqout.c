/* common/seqout.c: whatever the sizes of the pieces and of the whole, the
 * file holds exactly the bytes written, in order, and the digest is their
 * SHA-256 — through O_DIRECT where the filesystem takes it (the test
 * directory; tmpfs too on kernels from 6.6) and through the page cache (a
 * stream that starts past offset 0), with a tail that is not a whole
 * block, and across the two staging buffers. */
#include "tests/support/testutil.h"

#include "common/error.h"
#include "common/fsutil.h"
#include "common/hash.h"
#include "common/seqout.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Writes total bytes in pieces of varied sizes (1 byte to 9 MiB) into a
 * new file in dir and checks the file and the digest. */
static void roundtrip(const char *dir, size_t total, uint64_t seed)
{
    unsigned char *data = malloc(total ? total : 1);
    qp_test_seed(seed);
    for (size_t i = 0; i < total; i++)
        data[i] = (unsigned char)qp_test_next_u64();
    char *path = qp_path_join(dir, "out.bin");
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    qp_seqout *s = NULL;
    assert_int_equal(qp_seqout_new(&s, fd, path, 1), 0);
    static const size_t pieces[] = {1, 4095, 4096, 100000, (size_t)9 << 20, 7, 65536, 3 << 20};
    size_t off = 0;
    for (size_t k = 0; off < total; k++) {
        size_t n = pieces[k % (sizeof(pieces) / sizeof(pieces[0]))];
        if (n > total - off)
            n = total - off;
        assert_int_equal(qp_seqout_write(s, data + off, n), 0);
        off += n;
    }
    assert_true(qp_seqout_bytes(s) == total);
    char digest[QP_HEX_LEN], want[QP_HEX_LEN];
    assert_int_equal(qp_seqout_finish(s, digest), 0);
    qp_seqout_free(s);
    /* the descriptor is a plain one again, at the end of the file */
    assert_true(lseek(fd, 0, SEEK_CUR) == (off_t)total);
    assert_int_equal(fcntl(fd, F_GETFL) & O_DIRECT, 0);
    close(fd);
    qp_sha256_buf(want, data, total);
    assert_string_equal(digest, want);
    unsigned char *map = NULL;
    size_t size = 0;
    if (total) {
        assert_int_equal(qp_map_file(path, &map, &size), 0);
        assert_true(size == total);
        assert_memory_equal(map, data, total);
        munmap(map, size);
    } else {
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_size, 0);
    }
    free(path);
    free(data);
}

static const size_t sizes[] = {0, 1, 4095, 4096, 4097, ((size_t)8 << 20) - 1, (size_t)8 << 20, ((size_t)8 << 20) + 1,
                               ((size_t)16 << 20) + 4096, ((size_t)37 << 20) + 12345};

static void test_disk(void **state)
{
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        roundtrip(*state, sizes[i], 100 + i);
}

/* tmpfs: O_DIRECT or the page cache, whichever this kernel gives */
static void test_tmpfs(void **state)
{
    (void)state;
    char dir[] = "/dev/shm/qpipe-seqout-XXXXXX";
    if (!mkdtemp(dir))
        skip();
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        roundtrip(dir, sizes[i], 200 + i);
    qp_test_rmtree(dir);
}

/* a stream that starts past offset 0 (after a header of 1 byte) writes
 * through the page cache, after what is there */
static void test_not_at_zero(void **state)
{
    char *path = qp_path_join(*state, "off.bin");
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "H", 1), 1);
    qp_seqout *s = NULL;
    assert_int_equal(qp_seqout_new(&s, fd, path, 1), 0);
    assert_int_equal(qp_seqout_is_direct(s), 0);
    size_t n = ((size_t)9 << 20) + 3;
    unsigned char *data = malloc(n);
    qp_test_seed(300);
    for (size_t i = 0; i < n; i++)
        data[i] = (unsigned char)qp_test_next_u64();
    assert_int_equal(qp_seqout_write(s, data, n), 0);
    char digest[QP_HEX_LEN], want[QP_HEX_LEN];
    assert_int_equal(qp_seqout_finish(s, digest), 0);
    qp_seqout_free(s);
    close(fd);
    qp_sha256_buf(want, data, n);
    assert_string_equal(digest, want);   /* of what the stream wrote */
    unsigned char *map = NULL;
    size_t size = 0;
    assert_int_equal(qp_map_file(path, &map, &size), 0);
    assert_true(size == n + 1);
    assert_int_equal(map[0], 'H');
    assert_memory_equal(map + 1, data, n);
    munmap(map, size);
    free(data);
    free(path);
}

/* a write that fails (the file descriptor is read-only) is reported, by
 * the helper thread or the caller, with the file's name */
static void test_write_error(void **state)
{
    char *path = qp_path_join(*state, "ro.bin");
    qp_test_write(path, "", 0);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    qp_seqout *s = NULL;
    assert_int_equal(qp_seqout_new(&s, fd, path, 1), 0);
    size_t n = (size_t)20 << 20;
    unsigned char *data = calloc(1, n);
    int rc = qp_seqout_write(s, data, n);
    if (rc == 0)
        rc = qp_seqout_finish(s, NULL);
    assert_int_equal(rc, QP_ERROR);
    assert_non_null(strstr(qp_error_last(), "ro.bin: cannot write"));
    qp_seqout_free(s);
    close(fd);
    free(data);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_disk, qp_test_setup_tmpdir, qp_test_teardown_tmpdir),
        cmocka_unit_test(test_tmpfs),
        cmocka_unit_test_setup_teardown(test_not_at_zero, qp_test_setup_tmpdir, qp_test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_write_error, qp_test_setup_tmpdir, qp_test_teardown_tmpdir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
