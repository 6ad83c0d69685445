/* The Slurm executor's pure parts: resources: in a recipe (validated,
 * normalised, per instance), time limits, how `scontrol -o show job`
 * records map onto a job array's tasks, and the log tail a failure shows.
 * The executor against a real cluster: tests/cli/test_slurm.sh. */
#include "tests/pipeline/recipe_test_helpers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/fsutil.h"
#include "pipeline/recipe_int.h"
#include "pipeline/slurm.h"

static void resources_normalised(void **state)
{
    (void)state;
    qp_recipe *r = load_ok("qpipe: 1\nname: t\nvars: {m: 16G}\nstages:\n" MODEL
                           "  q:\n    uses: quantize\n    needs: [model]\n"
                           "    candidates: [{name: a, method: rtn, bits: 4}, {name: b, method: rtn, bits: 3}]\n"
                           "    resources: {cpus: 8, mem: \"${vars.m}\", time: \"1-02:30\", gpus: 1, partition: gpu}\n"
                           "  e: {uses: evaluate, needs: [q], with: {dataset: d.txt}, resources: {time: 90m}}\n");
    const char *want = "{\"cpus\": 8, \"mem\": 17179869184, \"time\": 1590, \"gpus\": 1, \"partition\": \"gpu\"}";
    assert_json(stage_of(r, "q@a")->resources, want);
    assert_json(stage_of(r, "q@b")->resources, want);
    assert_json(stage_of(r, "e@a")->resources, "{\"time\": 90}");
    assert_null(stage_of(r, "model")->resources);
    qp_recipe_free(r);
}

static void time_forms(void **state)
{
    (void)state;
    static const struct { const char *text; long minutes; } cases[] = {
        {"90", 90}, {"1:30", 2}, {"0:00:30", 1}, {"1:30:00", 90}, {"2-0", 2880}, {"1-02", 1560},
        {"1-02:30", 1590}, {"1-02:30:01", 1591}, {"45s", 1}, {"90m", 90}, {"2h", 120}, {"1d", 1440},
        {"", -1}, {"abc", -1}, {"1:60", -1}, {"1:2:3:4", -1}, {"0", -1}, {"-5", -1}, {"5x", -1},
        {"400d", -1}, {"1-", -1}, {"9999999999", -1}, {"1:30:00 ", -1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        long got = qp_recipe_parse_minutes(cases[i].text);
        if (got != cases[i].minutes)
            fprintf(stderr, "'%s': %ld, want %ld\n", cases[i].text, got, cases[i].minutes);
        assert_int_equal(got, cases[i].minutes);
    }
}

#define RUN_STAGE "  s:\n    uses: run\n    with: {cmd: \"true\"}\n"
static const bad_case bad[] = {
    {"cpus_zero", HDR RUN_STAGE "    resources: {cpus: 0}\n",
     "r.yaml:7:23: resources 'cpus' of stage 's' must be a whole number from 1 to 1024"},
    {"cpus_text", HDR RUN_STAGE "    resources: {cpus: many}\n",
     "r.yaml:7:23: resources 'cpus' of stage 's' must be a whole number from 1 to 1024"},
    {"mem_no_unit", HDR RUN_STAGE "    resources: {mem: 16}\n",
     "r.yaml:7:22: resources 'mem' of stage 's' must be a size with its unit, from 1M to 1024T, such as 16G or 512M"},
    {"mem_tiny", HDR RUN_STAGE "    resources: {mem: 10k}\n",
     "r.yaml:7:22: resources 'mem' of stage 's' must be a size with its unit, from 1M to 1024T, such as 16G or 512M"},
    {"mem_bare_count", HDR RUN_STAGE "    resources: {mem: \"1048576\"}\n",
     "r.yaml:7:22: resources 'mem' of stage 's' must be a size with its unit, from 1M to 1024T, such as 16G or 512M"},
    {"partition_option", HDR RUN_STAGE "    resources: {partition: \"-x\"}\n",
     "r.yaml:7:28: resources 'partition' of stage 's' must be a Slurm partition name (letters, digits, '_', '.', "
     "'-'; several joined by ',')"},
    {"partition_empty_name", HDR RUN_STAGE "    resources: {partition: \"a,,b\"}\n",
     "r.yaml:7:28: resources 'partition' of stage 's' must be a Slurm partition name (letters, digits, '_', '.', "
     "'-'; several joined by ',')"},
    {"time_words", HDR RUN_STAGE "    resources: {time: soon}\n",
     "r.yaml:7:23: resources 'time' of stage 's' must be minutes (90), a Slurm time (\"1:30:00\", \"2-00\") or "
     "\"90m\", \"2h\", \"1d\", at most 366 days"},
    {"gpus_negative", HDR RUN_STAGE "    resources: {gpus: -1}\n",
     "r.yaml:7:23: resources 'gpus' of stage 's' must be a whole number from 0 to 64"},
    {"partition_space", HDR RUN_STAGE "    resources: {partition: \"a b\"}\n",
     "r.yaml:7:28: resources 'partition' of stage 's' must be a Slurm partition name (letters, digits, '_', '.', "
     "'-'; several joined by ',')"},
    {"unknown_key", HDR RUN_STAGE "    resources: {gpu: 1}\n",
     "r.yaml:7:17: unknown resources key 'gpu' in stage 's' (expected cpus, mem, time, gpus or partition)"},
    {"not_a_map", HDR RUN_STAGE "    resources: 8\n",
     "r.yaml:7:16: 'resources' of stage 's' must be a mapping such as {cpus: 8, mem: 32G, time: 2h}, not a string"},
};

/* Records as `scontrol -o show job 41` prints them for a 4-task array: two
 * tasks split off and ended, two still pending under the array's record. */
static void scontrol_array(void **state)
{
    (void)state;
    const char *text =
        "JobId=41 ArrayJobId=41 ArrayTaskId=2-3 JobName=qpipe:q UserId=u(1) JobState=PENDING Reason=Resources "
        "ExitCode=0:0 RunTime=00:00:00\n"
        "JobId=43 ArrayJobId=41 ArrayTaskId=1 JobName=qpipe:q JobState=FAILED Reason=NonZeroExitCode ExitCode=3:0\n"
        "JobId=42 ArrayJobId=41 ArrayTaskId=0 JobName=qpipe:q JobState=COMPLETED Reason=None ExitCode=0:0\n";
    qp_slurm_task t[4];
    memset(t, 0, sizeof(t));
    qp_slurm_parse_scontrol(text, "41", t, 4);
    assert_string_equal(t[0].state, "COMPLETED");
    assert_string_equal(t[0].job, "41_0");
    assert_string_equal(t[1].state, "FAILED");
    assert_int_equal(t[1].exit_code, 3);
    assert_string_equal(t[2].state, "PENDING");
    assert_string_equal(t[2].reason, "Resources");
    assert_string_equal(t[3].state, "PENDING");
    assert_string_equal(t[3].job, "41_3");
    assert_true(qp_slurm_task_ok(&t[0]));
    assert_true(qp_slurm_task_ok(&t[1]));   /* a gate's rejection: its result is stored */
    /* a throttled range and a stepped one */
    memset(t, 0, sizeof(t));
    qp_slurm_parse_scontrol("JobId=7 ArrayJobId=7 ArrayTaskId=0,2-3%2 JobState=PENDING ExitCode=0:0\n"
                            "JobId=8 ArrayJobId=7 ArrayTaskId=1 JobState=TIMEOUT ExitCode=0:15\n", "7", t, 4);
    assert_string_equal(t[0].state, "PENDING");
    assert_string_equal(t[1].state, "TIMEOUT");
    assert_int_equal(t[1].signal, 15);
    assert_string_equal(t[2].state, "PENDING");
    assert_string_equal(t[3].state, "PENDING");
    assert_false(qp_slurm_task_ok(&t[1]));
}

/* The pending remainder of a big array can be a long scattered list: it
 * is read whole (a cut "12" for "124" would mark a finished task pending). */
static void scontrol_long_list(void **state)
{
    (void)state;
    enum { N = 300 };
    qp_buf b = QP_BUF_INIT;
    qp_buf_puts(&b, "JobId=9 ArrayJobId=9 ArrayTaskId=");
    for (int i = 0; i < N; i += 2)
        qp_buf_printf(&b, "%s%d", i ? "," : "", i);
    qp_buf_puts(&b, " JobState=PENDING Reason=Priority ExitCode=0:0\n");
    qp_buf_puts(&b, "JobId=20 ArrayJobId=9 ArrayTaskId=299 JobState=COMPLETED ExitCode=0:0\n");
    qp_buf_puts(&b, "JobId=21 ArrayJobId=9 ArrayTaskId=1-297:2 JobState=RUNNING ExitCode=0:0\n");
    assert_true(b.len > 600);
    qp_slurm_task *t = calloc(N, sizeof(*t));
    assert_non_null(t);
    qp_slurm_parse_scontrol(qp_buf_cstr(&b), "9", t, N);
    for (int i = 0; i < N; i++) {
        const char *want = i == 299 ? "COMPLETED" : i % 2 ? "RUNNING" : "PENDING";
        if (strcmp(t[i].state, want) != 0)
            fprintf(stderr, "task %d: %s, want %s\n", i, t[i].state, want);
        assert_string_equal(t[i].state, want);
    }
    free(t);
    qp_buf_free(&b);
}

static void scontrol_single(void **state)
{
    (void)state;
    qp_slurm_task t;
    memset(&t, 0, sizeof(t));
    qp_slurm_parse_scontrol("JobId=5 JobName=qpipe:model UserId=u(1) JobState=CANCELLED Reason=None "
                            "ExitCode=0:9 StdOut=/x/5.out\n", "5", &t, 1);
    assert_string_equal(t.state, "CANCELLED");
    assert_string_equal(t.job, "5");
    assert_int_equal(t.signal, 9);
    assert_false(qp_slurm_task_ok(&t));
    /* "OUT_OF_MEMORY" and a failure with exit 1 are failures; a job Slurm
     * forgot counts by the exit status its script printed */
    qp_slurm_task f = {.exit_code = 1};
    snprintf(f.state, sizeof(f.state), "FAILED");
    assert_false(qp_slurm_task_ok(&f));
    snprintf(f.state, sizeof(f.state), "OUT_OF_MEMORY");
    f.exit_code = 0;
    assert_false(qp_slurm_task_ok(&f));
    qp_slurm_task gone = {.exit_code = 0};
    assert_true(qp_slurm_task_ok(&gone));
    gone.exit_code = -1;
    assert_false(qp_slurm_task_ok(&gone));
    /* garbage and empty output change nothing */
    memset(&t, 0, sizeof(t));
    qp_slurm_parse_scontrol("slurm_load_jobs error: Invalid job id specified\n\n=== JobState\n", "5", &t, 1);
    assert_string_equal(t.state, "");
}

static void log_tail(void **state)
{
    (void)state;
    char path[] = "/tmp/qpipe-slurm-tail-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "warming up\nstep 1\r\n\nwarning: w\x1b[K\nqpipe: stage 'x': it broke\nqpipe-slurm-exit: 1\n";
    assert_int_equal(write(fd, text, strlen(text)), (long)strlen(text));
    close(fd);
    char *t = qp_slurm_log_tail(path, 3, 200);
    assert_string_equal(t, "step 1 | warning: w [K | qpipe: stage 'x': it broke");
    free(t);
    t = qp_slurm_log_tail(path, 10, 20);   /* too long: the end is kept */
    assert_string_equal(t, "...age 'x': it broke");
    free(t);
    unlink(path);
    t = qp_slurm_log_tail(path, 3, 200);
    assert_non_null(strstr(t, "(no log at /tmp/qpipe-slurm-tail-"));
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(resources_normalised), cmocka_unit_test(time_forms), cmocka_unit_test(scontrol_array),
        cmocka_unit_test(scontrol_single),      cmocka_unit_test(log_tail),
        cmocka_unit_test(scontrol_long_list),
    };
    return run_recipe_tests("slurm", tests, sizeof(tests) / sizeof(tests[0]), bad, sizeof(bad) / sizeof(bad[0]));
}
