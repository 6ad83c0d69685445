/* Action entries, drop_referencing, per-key locks across processes, and the
 * file digest memo. */
#include "tests/cache/cache_test_helpers.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>

static void put_str(qp_cache *c, const char *s, char d[QP_HEX_LEN])
{
    assert_int_equal(qp_cache_put(c, s, strlen(s), d), 0);
}

static void test_action_roundtrip(void **state)
{
    fixture *f = *state;
    char a[QP_HEX_LEN], r1[QP_HEX_LEN], r2[QP_HEX_LEN], got[QP_HEX_LEN];
    put_str(f->c, "{\"manifest\":1}", a);
    put_str(f->c, "tensor one", r1);
    put_str(f->c, "tensor two", r2);
    char *key = digest_str(1);
    const char *refs[] = {a, r1, r2};
    assert_int_equal(qp_cache_action_put(f->c, key, a, refs, 3), 0);
    assert_int_equal(qp_cache_action_get(f->c, key, got), 0);
    assert_string_equal(got, a);

    /* stored JSON has exactly the documented fields */
    char *p = action_path(f->c, key), *text = NULL;
    assert_int_equal(qp_read_file(p, &text, NULL), 0);
    char *prefix = qp_strfmt("{\"artifact\":\"%s\",\"refs\":[\"%s\",\"%s\",\"%s\"],\"time\":", a, a, r1, r2);
    assert_memory_equal(text, prefix, strlen(prefix));
    long long t = atoll(text + strlen(prefix));
    assert_true(llabs(t - (long long)time(NULL)) < 60);
    free(prefix);
    free(text);

    /* a hit bumps the entry's mtime (LRU for gc) */
    set_mtime(p, 1000000000);
    assert_int_equal(qp_cache_action_get(f->c, key, got), 0);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_true(st.st_mtime > time(NULL) - 60);

    /* overwrite */
    const char *refs2[] = {r1};
    assert_int_equal(qp_cache_action_put(f->c, key, r1, refs2, 1), 0);
    assert_int_equal(qp_cache_action_get(f->c, key, got), 0);
    assert_string_equal(got, r1);

    assert_int_equal(qp_cache_action_remove(f->c, key), 0);
    assert_int_equal(qp_cache_action_get(f->c, key, got), QP_ENOTFOUND);
    assert_int_equal(qp_cache_action_remove(f->c, key), 0);  /* idempotent */
    free(p);
    free(key);
}

static void test_action_miss_and_invalid(void **state)
{
    fixture *f = *state;
    char got[QP_HEX_LEN], a[QP_HEX_LEN];
    char *key = digest_str(2);
    assert_int_equal(qp_cache_action_get(f->c, key, got), QP_ENOTFOUND);
    char *want = qp_strfmt("action %s: not in the cache", key);
    assert_string_equal(qp_error_last(), want);
    free(want);
    put_str(f->c, "x", a);
    const char *bad[] = {"zz"};
    assert_int_equal(qp_cache_action_put(f->c, key, a, bad, 1), QP_ERROR);
    want = qp_strfmt("action %s: ref 0 is not a digest: 'zz'", key);
    assert_string_equal(qp_error_last(), want);
    free(want);
    assert_int_equal(qp_cache_action_put(f->c, key, "short", NULL, 0), QP_ERROR);
    /* a non-hex key works too (hashed to a file name) */
    assert_int_equal(qp_cache_action_put(f->c, "calibrate:layer/3", a, NULL, 0), 0);
    assert_int_equal(qp_cache_action_get(f->c, "calibrate:layer/3", got), 0);
    assert_string_equal(got, a);
    free(key);
}

static void test_action_dangling(void **state)
{
    fixture *f = *state;
    char a[QP_HEX_LEN], r[QP_HEX_LEN], got[QP_HEX_LEN];
    put_str(f->c, "manifest", a);
    put_str(f->c, "weights", r);
    char *key = digest_str(3);
    const char *refs[] = {a, r};
    assert_int_equal(qp_cache_action_put(f->c, key, a, refs, 2), 0);
    char *op = object_path(f->c, r);
    assert_int_equal(unlink(op), 0);
    assert_int_equal(qp_cache_action_get(f->c, key, got), QP_ENOTFOUND);
    char *want = qp_strfmt("action %s: object %s is missing; entry removed", key, r);
    assert_string_equal(qp_error_last(), want);
    char *ap = action_path(f->c, key);
    assert_false(qp_path_exists(ap));  /* the entry is gone */

    /* missing artifact object */
    put_str(f->c, "weights", r);
    const char *refs2[] = {r};
    char fake[QP_HEX_LEN];
    qp_sha256_buf(fake, "never stored", 12);
    assert_int_equal(qp_cache_action_put(f->c, key, fake, refs2, 1), 0);
    assert_int_equal(qp_cache_action_get(f->c, key, got), QP_ENOTFOUND);
    assert_false(qp_path_exists(ap));

    /* malformed entry: a miss, removed */
    qp_test_write_str(ap, "{\"artifact\": 5}");
    assert_int_equal(qp_cache_action_get(f->c, key, got), QP_ENOTFOUND);
    free(want);
    want = qp_strfmt("action %s: entry was malformed (missing or invalid \"artifact\"); removed", key);
    assert_string_equal(qp_error_last(), want);
    assert_false(qp_path_exists(ap));
    free(want);
    free(ap);
    free(op);
    free(key);
}

static void test_drop_referencing(void **state)
{
    fixture *f = *state;
    char x[QP_HEX_LEN], y[QP_HEX_LEN], z[QP_HEX_LEN], got[QP_HEX_LEN];
    put_str(f->c, "x", x);
    put_str(f->c, "y", y);
    put_str(f->c, "z", z);
    char *k1 = digest_str(10), *k2 = digest_str(11), *k3 = digest_str(12), *k4 = digest_str(13);
    const char *r1[] = {y, x}, *r2[] = {z}, *r3[] = {y, z};
    assert_int_equal(qp_cache_action_put(f->c, k1, y, r1, 2), 0);  /* refs x */
    assert_int_equal(qp_cache_action_put(f->c, k2, x, r2, 1), 0);  /* artifact x */
    assert_int_equal(qp_cache_action_put(f->c, k3, y, r3, 2), 0);  /* no x */
    assert_int_equal(qp_cache_action_put(f->c, k4, z, NULL, 0), 0);
    size_t n = 99;
    assert_int_equal(qp_cache_action_drop_referencing(f->c, x, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(qp_cache_action_get(f->c, k1, got), QP_ENOTFOUND);
    assert_int_equal(qp_cache_action_get(f->c, k2, got), QP_ENOTFOUND);
    assert_int_equal(qp_cache_action_get(f->c, k3, got), 0);
    assert_string_equal(got, y);
    assert_int_equal(qp_cache_action_get(f->c, k4, got), 0);
    assert_int_equal(qp_cache_action_drop_referencing(f->c, x, &n), 0);
    assert_int_equal(n, 0);
    free(k1);
    free(k2);
    free(k3);
    free(k4);
}

/* 1 when fd becomes readable within ms milliseconds. */
static int readable_within(int fd, int ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, ms) == 1;
}

static void test_lock_exclusion(void **state)
{
    fixture *f = *state;
    char *key = digest_str(20);
    qp_cache_lock *l = NULL;
    assert_int_equal(qp_cache_lock_acquire(f->c, key, &l), 0);
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(20);  /* never outlive a failed parent */
        /* the fork duplicated the parent's lock fd, which would keep the
         * lock held after the parent releases it: drop our copy */
        qp_cache_lock_release(l);
        close(pipefd[0]);
        qp_cache *cc = NULL;
        qp_cache_lock *other = NULL, *mine = NULL;
        if (qp_cache_open(&cc, qp_cache_dir(f->c)) != 0)
            _exit(2);
        /* a different key is not blocked */
        char *k2 = digest_str(21);
        if (qp_cache_lock_acquire(cc, k2, &other) != 0)
            _exit(3);
        if (write(pipefd[1], "o", 1) != 1)
            _exit(4);
        if (qp_cache_lock_acquire(cc, key, &mine) != 0)  /* blocks */
            _exit(5);
        if (write(pipefd[1], "a", 1) != 1)
            _exit(6);
        qp_cache_lock_release(mine);
        qp_cache_lock_release(other);
        qp_cache_free(cc);
        _exit(0);
    }
    close(pipefd[1]);
    char ch = 0;
    assert_true(readable_within(pipefd[0], 5000));
    assert_int_equal(read(pipefd[0], &ch, 1), 1);
    assert_int_equal(ch, 'o');
    /* the child stays blocked while we hold the lock */
    assert_false(readable_within(pipefd[0], 400));
    qp_cache_lock_release(l);
    assert_true(readable_within(pipefd[0], 5000));
    assert_int_equal(read(pipefd[0], &ch, 1), 1);
    assert_int_equal(ch, 'a');
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    close(pipefd[0]);
    free(key);
}

/* A holder killed with SIGKILL releases its lock. */
static void test_lock_released_on_kill(void **state)
{
    fixture *f = *state;
    char *key = digest_str(22);
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(20);
        close(pipefd[0]);
        qp_cache *cc = NULL;
        qp_cache_lock *l = NULL;
        if (qp_cache_open(&cc, qp_cache_dir(f->c)) != 0 || qp_cache_lock_acquire(cc, key, &l) != 0)
            _exit(2);
        if (write(pipefd[1], "h", 1) != 1)
            _exit(3);
        for (;;)
            pause();
    }
    close(pipefd[1]);
    char ch;
    assert_true(readable_within(pipefd[0], 5000));
    assert_int_equal(read(pipefd[0], &ch, 1), 1);
    kill(pid, SIGKILL);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    alarm(10);  /* a leaked lock would hang here: fail instead */
    qp_cache_lock *l = NULL;
    assert_int_equal(qp_cache_lock_acquire(f->c, key, &l), 0);
    alarm(0);
    qp_cache_lock_release(l);
    close(pipefd[0]);
    free(key);
}

static char *memo_file(qp_cache *c, const char *path)
{
    char *rp = realpath(path, NULL);
    char k[QP_HEX_LEN];
    qp_sha256_buf(k, rp, strlen(rp));
    free(rp);
    return qp_strfmt("%s/files/%.2s/%s", qp_cache_dir(c), k, k + 2);
}

static void test_file_digest_memo(void **state)
{
    fixture *f = *state;
    char *path = qp_path_join(f->dir, "ckpt.bin");
    char buf[65536];
    fill_random(buf, sizeof(buf), 5);
    qp_test_write(path, buf, sizeof(buf));
    time_t old = time(NULL) - 3600;
    set_mtime(path, old);
    char want[QP_HEX_LEN], d[QP_HEX_LEN];
    qp_sha256_buf(want, buf, sizeof(buf));
    char *memo = memo_file(f->c, path);
    assert_false(qp_path_exists(memo));
    assert_int_equal(qp_cache_file_digest(f->c, path, d), 0);
    assert_string_equal(d, want);
    assert_true(qp_path_exists(memo));
    char *text = NULL;
    assert_int_equal(qp_read_file(memo, &text, NULL), 0);
    assert_non_null(strstr(text, want));
    assert_non_null(strstr(text, "\"size\":65536"));
    free(text);

    /* Proof the memo is used and the file not read: change the bytes in
     * place but restore size, mtime and inode — the memo answers. */
    struct stat st0, st1;
    assert_int_equal(stat(path, &st0), 0);
    buf[100] ^= 1;
    int fd = open(path, O_WRONLY);
    assert_int_equal(pwrite(fd, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
    close(fd);
    struct timespec ts[2] = {st0.st_atim, st0.st_mtim};
    assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
    assert_int_equal(stat(path, &st1), 0);
    assert_int_equal(st1.st_ino, st0.st_ino);
    assert_int_equal(qp_cache_file_digest(f->c, path, d), 0);
    assert_string_equal(d, want);  /* stale on purpose: nothing was read */

    /* same size, new mtime: recomputed */
    char want2[QP_HEX_LEN];
    qp_sha256_buf(want2, buf, sizeof(buf));
    set_mtime(path, old + 10);
    assert_int_equal(qp_cache_file_digest(f->c, path, d), 0);
    assert_string_equal(d, want2);
    assert_string_not_equal(want2, want);

    /* a relative path or a symlink maps to the same memo */
    char *link = qp_path_join(f->dir, "link.bin");
    assert_int_equal(symlink(path, link), 0);
    assert_int_equal(qp_cache_file_digest(f->c, link, d), 0);
    assert_string_equal(d, want2);
    qp_cache_stats s;
    assert_int_equal(qp_cache_stats_get(f->c, &s), 0);
    assert_int_equal(s.memo_entries, 1);

    /* a corrupt memo is ignored (recomputed and rewritten) */
    qp_test_write_str(memo, "garbage");
    assert_int_equal(qp_cache_file_digest(f->c, path, d), 0);
    assert_string_equal(d, want2);
    assert_int_equal(qp_read_file(memo, &text, NULL), 0);
    assert_non_null(strstr(text, want2));
    free(text);

    char *missing = qp_path_join(f->dir, "missing.bin");
    assert_int_equal(qp_cache_file_digest(f->c, missing, d), QP_ENOTFOUND);
    char *msg = qp_strfmt("%s: cannot open: No such file or directory", missing);
    assert_string_equal(qp_error_last(), msg);
    free(msg);
    free(missing);
    free(link);
    free(memo);
    free(path);
}

/* A file modified just now may still change within the same timestamp
 * tick: it is hashed but not memoised. */
static void test_memo_skips_racy_files(void **state)
{
    fixture *f = *state;
    char *path = qp_path_join(f->dir, "fresh.txt");
    qp_test_write_str(path, "fresh content");
    char d[QP_HEX_LEN], want[QP_HEX_LEN];
    qp_sha256_buf(want, "fresh content", 13);
    assert_int_equal(qp_cache_file_digest(f->c, path, d), 0);
    assert_string_equal(d, want);
    char *memo = memo_file(f->c, path);
    assert_false(qp_path_exists(memo));
    free(memo);
    free(path);
}

static void test_put_file_uses_memo(void **state)
{
    fixture *f = *state;
    char *path = qp_path_join(f->dir, "weights.bin");
    char buf[300000];
    fill_text(buf, sizeof(buf), 6);
    qp_test_write(path, buf, sizeof(buf));
    set_mtime(path, time(NULL) - 100);
    char d1[QP_HEX_LEN], d2[QP_HEX_LEN], want[QP_HEX_LEN];
    qp_sha256_buf(want, buf, sizeof(buf));
    assert_int_equal(qp_cache_put_file(f->c, path, d1), 0);
    assert_string_equal(d1, want);
    char *memo = memo_file(f->c, path);
    assert_true(qp_path_exists(memo));
    /* in-place change with size/mtime/inode restored: memo hit, not read */
    struct stat st0;
    assert_int_equal(stat(path, &st0), 0);
    buf[0] ^= 1;
    int fd = open(path, O_WRONLY);
    assert_int_equal(pwrite(fd, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
    close(fd);
    struct timespec ts[2] = {st0.st_atim, st0.st_mtim};
    assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
    assert_int_equal(qp_cache_put_file(f->c, path, d2), 0);
    assert_string_equal(d2, d1);
    /* the memo only short-cuts when the object is present */
    char *op = object_path(f->c, d1);
    assert_int_equal(unlink(op), 0);
    assert_int_equal(qp_cache_put_file(f->c, path, d2), 0);
    qp_sha256_buf(want, buf, sizeof(buf));
    assert_string_equal(d2, want);
    free(op);
    free(memo);
    free(path);
}

/* Objects wait for qp_cache_sync (run by every action entry): an object
 * removed meanwhile (gc, a corrupt copy) is no error, and the entry is
 * written after. */
static void test_sync_before_entry(void **state)
{
    fixture *f = *state;
    char a[QP_HEX_LEN], b[QP_HEX_LEN];
    assert_int_equal(qp_cache_put(f->c, "object a", 8, a), 0);
    assert_int_equal(qp_cache_put(f->c, "object b", 8, b), 0);
    char *pb = object_path(f->c, b);
    chmod(pb, 0644);
    assert_int_equal(unlink(pb), 0);
    assert_int_equal(qp_cache_sync(f->c), 0);
    assert_int_equal(qp_cache_sync(f->c), 0);   /* nothing left to wait for */
    assert_int_equal(qp_cache_put(f->c, "object b", 8, b), 0);
    const char *refs[] = {a, b};
    assert_int_equal(qp_cache_action_put(f->c, "key", a, refs, 2), 0);
    char got[QP_HEX_LEN];
    assert_int_equal(qp_cache_action_get(f->c, "key", got), 0);
    assert_string_equal(got, a);
    free(pb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_action_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_action_miss_and_invalid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_action_dangling, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drop_referencing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock_exclusion, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock_released_on_kill, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_digest_memo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_memo_skips_racy_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_file_uses_memo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_before_entry, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
