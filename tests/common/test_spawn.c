/* Running a program (common/spawn.h): its output and exit status, a
 * missing program, a program over its time limit (killed with what it
 * started), output beyond the cap drained, not kept. */
#include "tests/support/testutil.h"

#include <string.h>
#include <time.h>

#include "common/error.h"
#include "common/fsutil.h"
#include "common/spawn.h"

static void output_and_status(void **state)
{
    (void)state;
    const char *argv[] = {"sh", "-c", "echo out; echo err >&2; exit 3", NULL};
    qp_buf out = QP_BUF_INIT, err = QP_BUF_INIT;
    int code = -1;
    assert_int_equal(qp_spawn_capture(argv, &out, &err, &code), 0);
    assert_int_equal(code, 3);
    assert_string_equal(qp_buf_cstr(&out), "out\n");
    assert_string_equal(qp_buf_cstr(&err), "err\n");
    qp_buf_free(&out);
    qp_buf_free(&err);
    /* a signal: 128 + its number */
    const char *killed[] = {"sh", "-c", "kill -9 $$", NULL};
    assert_int_equal(qp_spawn_capture(killed, NULL, NULL, &code), 0);
    assert_int_equal(code, 128 + 9);
}

static void missing_program(void **state)
{
    (void)state;
    const char *argv[] = {"qpipe-no-such-program", NULL};
    int code = 0;
    assert_int_equal(qp_spawn_capture(argv, NULL, NULL, &code), QP_ENOTFOUND);
    assert_non_null(strstr(qp_error_last(), "qpipe-no-such-program: cannot run it"));
}

static void time_limit(void **state)
{
    (void)state;
    /* the shell's child keeps the pipe open: only killing the group ends it */
    const char *argv[] = {"sh", "-c", "sleep 30 & sleep 30; wait", NULL};
    int code = 0;
    double t0 = qp_now();
    assert_int_equal(qp_spawn_capture_timed(argv, NULL, NULL, &code, 1), QP_ERROR);
    assert_true(qp_now() - t0 < 10.0);
    assert_non_null(strstr(qp_error_last(), "sh: no answer in 1 s; stopped it"));
}

static void output_capped(void **state)
{
    (void)state;
    const char *argv[] = {"sh", "-c", "head -c 3000000 /dev/zero", NULL};
    qp_buf out = QP_BUF_INIT;
    int code = -1;
    assert_int_equal(qp_spawn_capture(argv, &out, NULL, &code), 0);
    assert_int_equal(code, 0);
    assert_int_equal(out.len, QP_SPAWN_MAX_OUTPUT);
    qp_buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(output_and_status),
        cmocka_unit_test(missing_program),
        cmocka_unit_test(time_limit),
        cmocka_unit_test(output_capped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
