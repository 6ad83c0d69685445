/* Several processes and threads writing the same store at once, and
 * processes SIGKILLed in the middle of writes: the store must stay
 * consistent (verify reports 0 problems; temp files are not problems). */
#include "tests/cache/cache_test_helpers.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>

#define N_OBJECTS 24
#define N_WORKERS 4

static size_t object_len(int i) { return (size_t)(i % 6) * 300000 + (size_t)i * 17; }

static void *object_bytes(int i)
{
    size_t n = object_len(i);
    void *b = malloc(n + 1);
    if (i % 2)
        fill_random(b, n, (uint64_t)i);
    else
        fill_text(b, n, (uint64_t)i);
    return b;
}

static void key_for(char out[QP_HEX_LEN], int i)
{
    char k[32];
    snprintf(k, sizeof(k), "key-%d", i);
    qp_sha256_buf(out, k, strlen(k));
}

/* The shared workload: every object, every action, the file, the meta
 * blobs, read back and checked.  Returns 0 or a line number (failure). */
static int workload(qp_cache *c, int who, const char *shared_file)
{
    char digests[N_OBJECTS][QP_HEX_LEN];
    for (int step = 0; step < N_OBJECTS; step++) {
        int i = (step + who * 7) % N_OBJECTS;  /* each worker in its own order */
        void *b = object_bytes(i);
        size_t n = object_len(i);
        char want[QP_HEX_LEN];
        qp_sha256_buf(want, b, n);
        if (qp_cache_put(c, b, n, digests[i]) != 0 || strcmp(digests[i], want) != 0)
            return __LINE__;
        void *got = NULL;
        size_t gn = 0;
        if (qp_cache_get(c, digests[i], &got, &gn) != 0 || gn != n || memcmp(got, b, n) != 0)
            return __LINE__;
        free(got);
        free(b);
    }
    char fd_[QP_HEX_LEN], fd2[QP_HEX_LEN];
    if (qp_cache_put_file(c, shared_file, fd_) != 0 || qp_cache_file_digest(c, shared_file, fd2) != 0 ||
        strcmp(fd_, fd2) != 0)
        return __LINE__;
    for (int i = 0; i < N_OBJECTS; i++) {
        char key[QP_HEX_LEN], got[QP_HEX_LEN];
        key_for(key, i);
        const char *refs[] = {digests[i], digests[(i + 1) % N_OBJECTS], fd_};
        qp_cache_lock *l = NULL;
        if (qp_cache_lock_acquire(c, key, &l) != 0)
            return __LINE__;
        int rc = qp_cache_action_put(c, key, digests[i], refs, 3);
        qp_cache_lock_release(l);
        if (rc != 0 || qp_cache_action_get(c, key, got) != 0 || strcmp(got, digests[i]) != 0)
            return __LINE__;
        char name[32];
        snprintf(name, sizeof(name), "stage %d", i);
        if (qp_cache_meta_put(c, "keys", name, digests[i]) != 0)
            return __LINE__;
    }
    return 0;
}

static char *make_shared_file(const char *dir)
{
    char *path = qp_path_join(dir, "shared.bin");
    size_t n = 6u << 20;
    char *b = malloc(n);
    fill_text(b, n, 77);
    qp_test_write(path, b, n);
    set_mtime(path, time(NULL) - 60);
    free(b);
    return path;
}

static void expect_clean(qp_cache *c)
{
    size_t problems = 99;
    assert_int_equal(qp_cache_verify(c, NULL, NULL, &problems), 0);
    assert_int_equal(problems, 0);
}

static void test_processes_write_same_objects(void **state)
{
    fixture *f = *state;
    char *shared = make_shared_file(f->dir);
    int go[2];
    assert_int_equal(pipe(go), 0);
    pid_t pids[N_WORKERS];
    for (int w = 0; w < N_WORKERS; w++) {
        pids[w] = fork();
        assert_true(pids[w] >= 0);
        if (pids[w] == 0) {
            alarm(60);
            close(go[1]);
            char ch;
            if (read(go[0], &ch, 1) != 1)  /* start together */
                _exit(100);
            qp_cache *c = NULL;
            if (qp_cache_open(&c, qp_cache_dir(f->c)) != 0)
                _exit(101);
            int line = workload(c, w, shared);
            if (line)
                fprintf(stderr, "worker %d failed at line %d: %s\n", w, line, qp_error_last());
            qp_cache_free(c);
            _exit(line ? 1 : 0);
        }
    }
    close(go[0]);
    assert_int_equal(write(go[1], "gggg", N_WORKERS), N_WORKERS);
    close(go[1]);
    for (int w = 0; w < N_WORKERS; w++) {
        int status = 0;
        assert_int_equal(waitpid(pids[w], &status, 0), pids[w]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    expect_clean(f->c);
    qp_cache_stats s;
    assert_int_equal(qp_cache_stats_get(f->c, &s), 0);
    assert_int_equal(s.objects, N_OBJECTS + 1);
    assert_int_equal(s.actions, N_OBJECTS);
    assert_int_equal(s.tmp_files, 0);
    assert_int_equal(s.memo_entries, 1);
    free(shared);
}

typedef struct {
    qp_cache *c;
    int who;
    const char *shared;
    int line;
} thread_arg;

static void *thread_main(void *p)
{
    thread_arg *a = p;
    a->line = workload(a->c, a->who, a->shared);
    return NULL;
}

/* One handle used by several threads at once (parallel stages). */
static void test_threads_share_handle(void **state)
{
    fixture *f = *state;
    char *shared = make_shared_file(f->dir);
    pthread_t t[N_WORKERS];
    thread_arg args[N_WORKERS];
    for (int w = 0; w < N_WORKERS; w++) {
        args[w] = (thread_arg){f->c, w, shared, -1};
        assert_int_equal(pthread_create(&t[w], NULL, thread_main, &args[w]), 0);
    }
    for (int w = 0; w < N_WORKERS; w++) {
        assert_int_equal(pthread_join(t[w], NULL), 0);
        if (args[w].line)
            fail_msg("thread %d failed at line %d", w, args[w].line);
    }
    expect_clean(f->c);
    qp_cache_stats s;
    assert_int_equal(qp_cache_stats_get(f->c, &s), 0);
    assert_int_equal(s.objects, N_OBJECTS + 1);
    assert_int_equal(s.actions, N_OBJECTS);
    free(shared);
}

/* The victim: an endless stream of big puts, streamed files, actions,
 * memos and meta writes; it reports each put on the pipe so the parent can
 * kill it while a write is under way. */
static void victim(const char *cdir, const char *dir, int round, int report)
{
    qp_cache *c = NULL;
    if (qp_cache_open(&c, cdir) != 0)
        _exit(1);
    size_t n = 3u << 20;
    char *buf = malloc(n);
    char *file = qp_strfmt("%s/victim-%d.bin", dir, round);
    for (uint64_t i = 0;; i++) {
        uint64_t seed = (uint64_t)round * 1000 + i;
        fill_random(buf, n, seed);
        char d[QP_HEX_LEN], fd_[QP_HEX_LEN], key[QP_HEX_LEN];
        if (write(report, "p", 1) != 1)
            _exit(2);
        if (qp_cache_put(c, buf, n, d) != 0)
            _exit(3);
        fill_text(buf, n, seed);
        FILE *fp = fopen(file, "wb");
        if (!fp || fwrite(buf, 1, n, fp) != n || fclose(fp) != 0)
            _exit(4);
        if (write(report, "f", 1) != 1)
            _exit(2);
        if (qp_cache_put_file(c, file, fd_) != 0)
            _exit(5);
        qp_sha256_buf(key, &seed, sizeof(seed));
        const char *refs[] = {d, fd_};
        if (qp_cache_action_put(c, key, d, refs, 2) != 0 || qp_cache_meta_put(c, "victim", key, d) != 0)
            _exit(6);
    }
}

static void test_sigkill_during_writes(void **state)
{
    fixture *f = *state;
    /* delays after the k-th write started, in ms: some kills land inside
     * the compressor, some in fsync/rename, some between operations */
    static const int delay_ms[] = {0, 3, 7, 1, 12, 5, 20, 2};
    static const int after_writes[] = {1, 2, 3, 4, 1, 5, 2, 3};
    for (int round = 0; round < 8; round++) {
        int rep[2];
        assert_int_equal(pipe(rep), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            alarm(60);
            close(rep[0]);
            victim(qp_cache_dir(f->c), f->dir, round, rep[1]);
            _exit(0);
        }
        close(rep[1]);
        for (int k = 0; k < after_writes[round]; k++) {
            char ch;
            struct pollfd p = {rep[0], POLLIN, 0};
            assert_int_equal(poll(&p, 1, 20000), 1);
            assert_int_equal(read(rep[0], &ch, 1), 1);
        }
        if (delay_ms[round])
            usleep((useconds_t)delay_ms[round] * 1000);
        assert_int_equal(kill(pid, SIGKILL), 0);
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status));
        assert_int_equal(WTERMSIG(status), SIGKILL);
        close(rep[0]);
    }
    qp_cache_stats before;
    assert_int_equal(qp_cache_stats_get(f->c, &before), 0);
    /* some kills landed mid-write (temp files left behind), and objects
     * were completed before others */
    assert_true(before.tmp_files >= 1);
    assert_true(before.objects >= 1);
    /* every object that is visible decodes and hashes right; no action
     * points at a missing object; leftover temps are not problems */
    expect_clean(f->c);
    qp_cache_stats after;
    assert_int_equal(qp_cache_stats_get(f->c, &after), 0);
    assert_int_equal(after.objects, before.objects);
    assert_int_equal(after.actions, before.actions);
    assert_int_equal(after.tmp_files, before.tmp_files);  /* fresh: kept */
    /* the store is still fully usable */
    char d[QP_HEX_LEN];
    assert_int_equal(qp_cache_put(f->c, "after", 5, d), 0);
    void *out = NULL;
    size_t n = 0;
    assert_int_equal(qp_cache_get(f->c, d, &out, &n), 0);
    assert_int_equal(n, 5);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_processes_write_same_objects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads_share_handle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigkill_during_writes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
