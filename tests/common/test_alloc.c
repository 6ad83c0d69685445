/* common/alloc.h: the allocation policy.  A request that cannot be met ends
 * the process with status 1 and ONE line on stderr naming the size and the
 * place; a request whose count x size overflows is refused the same way
 * (it never reaches calloc); successful requests behave like the C library's. */
#include "tests/support/testutil.h"

#include "common/alloc.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1   /* ASan aborts on a huge malloc itself (allocator_may_return_null=0) */
#else
#define UNDER_ASAN 0
#endif

typedef void (*alloc_fn)(void);

/* Runs fn in a child; returns its exit status and its stderr in err[cap]. */
static int run_child(alloc_fn fn, char *err, size_t cap)
{
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(pipefd[1], STDERR_FILENO);
        close(pipefd[0]);
        fn();
        _exit(0);   /* fn returned: the allocation succeeded */
    }
    close(pipefd[1]);
    size_t len = 0;
    ssize_t r;
    while (len + 1 < cap && (r = read(pipefd[0], err + len, cap - 1 - len)) > 0)
        len += (size_t)r;
    err[len] = '\0';
    close(pipefd[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static void calloc_overflow(void)
{
    void *p = qp_xcalloc(SIZE_MAX / 2, 4);
    free(p);
}

static void realloc_array_overflow(void)
{
    void *p = qp_xrealloc_array(NULL, SIZE_MAX / 8 + 1, 16);
    free(p);
}

static void malloc_huge(void)
{
    void *p = qp_xmalloc(SIZE_MAX - 4096);
    free(p);
}

static void malloc_small(void)
{
    char *p = qp_xmalloc(16);
    memset(p, 1, 16);
    free(p);
}

static void expect_oom(alloc_fn fn)
{
    char err[512];
    assert_int_equal(run_child(fn, err, sizeof(err)), 1);
    /* one line, naming the size and this file */
    assert_non_null(strstr(err, "qpipe: out of memory: cannot allocate "));
    assert_non_null(strstr(err, "tests/common/test_alloc.c:"));
    assert_non_null(strchr(err, '\n'));
    assert_true(strchr(err, '\n') == err + strlen(err) - 1);
}

static void test_overflow_is_refused(void **state)
{
    (void)state;
    expect_oom(calloc_overflow);
    expect_oom(realloc_array_overflow);
}

static void test_huge_request_ends_the_process(void **state)
{
    (void)state;
    if (UNDER_ASAN)
        skip();
    expect_oom(malloc_huge);
}

static void test_ordinary_requests(void **state)
{
    (void)state;
    char err[64];
    assert_int_equal(run_child(malloc_small, err, sizeof(err)), 0);
    assert_string_equal(err, "");
    /* zero-size requests give a usable, freeable pointer */
    void *z = qp_xmalloc(0), *c = qp_xcalloc(0, 8);
    assert_non_null(z);
    assert_non_null(c);
    free(z);
    free(c);
    char *s = qp_xstrndup("abcdef", 3);
    assert_string_equal(s, "abc");
    free(s);
    int *a = qp_xcalloc(4, sizeof(int));
    for (int i = 0; i < 4; i++)
        assert_int_equal(a[i], 0);
    a = qp_xrealloc_array(a, 1024, sizeof(int));
    a[1023] = 7;
    free(a);
    void *al = qp_xaligned_alloc(64, 100);   /* 100 is no multiple of 64: rounded up */
    assert_int_equal((uintptr_t)al % 64, 0);
    free(al);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_overflow_is_refused),
        cmocka_unit_test(test_huge_request_ends_the_process),
        cmocka_unit_test(test_ordinary_requests),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
