/* stages/bg_put.c: the object a helper stored is the one a plain put would
 * store (same digest, same bytes back); the stored buffer is handed back
 * once collected, never while in flight; nothing in flight answers 1; a
 * second start before the first is collected is refused; a failed put
 * reports its own message on the waiting thread. */
#include "tests/support/testutil.h"

#include "cache/cache.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/hash.h"
#include "stages/bg_put.h"

#include <stdlib.h>
#include <string.h>

static void test_put_and_wait(void **state)
{
    qp_cache *c = NULL;
    char *dir = qp_path_join(*state, "cache");
    assert_int_equal(qp_cache_open(&c, dir), 0);
    qp_bg_put *p = NULL;
    assert_int_equal(qp_bg_put_new(&p, c), 0);
    char d[QP_HEX_LEN], want[QP_HEX_LEN];
    assert_int_equal(qp_bg_put_wait(p, d), 1);
    qp_test_seed(7);
    for (int round = 0; round < 3; round++) {
        size_t n = (size_t)(round + 1) << 20;
        unsigned char *data = malloc(n), *copy = malloc(n);
        for (size_t i = 0; i < n; i++)
            data[i] = (unsigned char)qp_test_next_u64();
        memcpy(copy, data, n);
        qp_sha256_buf(want, copy, n);
        assert_int_equal(qp_bg_put_start(p, data, n), 0);   /* takes data */
        unsigned char *more = malloc(16);
        assert_int_equal(qp_bg_put_start(p, more, 16), QP_ERROR);   /* one in flight */
        if (round == 0)
            assert_null(qp_bg_put_take_spare(p));   /* nothing collected yet */
        assert_int_equal(qp_bg_put_wait(p, d), 0);
        assert_string_equal(d, want);
        if (round == 2) {
            /* the stored bytes come back to be filled again, also while
             * the next put runs (round 1's were not taken: freed here) */
            unsigned char *zeros = calloc(1, 64);
            char zd[QP_HEX_LEN];
            qp_sha256_buf(zd, zeros, 64);
            assert_int_equal(qp_bg_put_start(p, zeros, 64), 0);
            unsigned char *spare = qp_bg_put_take_spare(p);
            assert_ptr_equal(spare, data);
            assert_null(qp_bg_put_take_spare(p));
            free(spare);
            char d2[QP_HEX_LEN];
            assert_int_equal(qp_bg_put_wait(p, d2), 0);
            assert_string_equal(d2, zd);
        }   /* round 0's and 1's: left, freed by the next collect */
        void *back = NULL;
        size_t got = 0;
        assert_int_equal(qp_cache_get(c, d, &back, &got), 0);
        assert_true(got == n);
        assert_memory_equal(back, copy, n);
        free(back);
        free(copy);
    }
    assert_int_equal(qp_bg_put_wait(p, d), 1);
    qp_bg_put_free(p);

    /* a put that fails: objects/ is a file, so no fan-out directory can be made */
    char *objects = qp_path_join(dir, "objects");
    assert_int_equal(qp_rm_rf(objects), 0);
    qp_test_write(objects, "x", 1);
    assert_int_equal(qp_bg_put_new(&p, c), 0);
    unsigned char *data = calloc(1, 4096);
    assert_int_equal(qp_bg_put_start(p, data, 4096), 0);
    assert_true(qp_bg_put_wait(p, d) < 0);
    assert_non_null(strstr(qp_error_last(), "objects"));
    /* freed with a put in flight: joined, nothing leaks */
    assert_int_equal(qp_bg_put_start(p, calloc(1, 64), 64), 0);
    qp_bg_put_free(p);
    free(objects);
    qp_cache_free(c);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_put_and_wait, qp_test_setup_tmpdir, qp_test_teardown_tmpdir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
