/* qpipe — the command-line front end.  Parses arguments, loads the recipe,
 * opens the cache and hands over to the runner; maps errors to exit codes:
 * 0 ok, 1 error, 2 bad recipe or usage, 3 gate rejected, 4 verify found a
 * difference. */
#include "artifact/progress_impl.h"
#include "cache/cache.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/gemm.h"
#include "common/numerics.h"
#include "common/version.h"
#include "cli/cli.h"
#include "pipeline/recipe.h"
#include "pipeline/lock.h"
#include "pipeline/runner.h"
#include "model/llama_pool.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage_text[] =
    "usage: qpipe COMMAND [options]\n"
    "\n"
    "commands:\n"
    "  run RECIPE [--stage ID] [-j N] [--threads N] [--force[=ID]] [--cache-dir D] [--json] [--no-provenance]\n"
    "             [--frozen] [--memory SIZE] [--ignore-memory] [--offline] [--refresh]\n"
    "             [--executor local|slurm [--partition P] [--slurm-log-dir D] [--job-cache-dir D]]\n"
    "                         run the recipe's stages (cached ones are reused); with --executor slurm\n"
    "                         each stage that must run is a Slurm job (a matrix's instances a job array)\n"
    "                         running 'qpipe run RECIPE --stage ID' on the same cache, which every node\n"
    "                         must share: the same directory, or --remote-cache with --job-cache-dir\n"
    "                         (a node-local directory each job uses); job logs in --slurm-log-dir\n"
    "                         (default .qpipe/slurm, on a filesystem the nodes share); a job runs\n"
    "                         'qpipe run RECIPE --stage ID --expect-key KEY': its key must be KEY\n"
    "  plan RECIPE [--estimate [--recalibrate]]\n"
    "                         show which stages are cached or will run, and why; --estimate predicts\n"
    "                         each stage's time, peak RSS and output bytes (machine rates measured once\n"
    "                         and cached; --recalibrate measures them again)\n"
    "  verify RECIPE          rebuild every stage ignoring the cache; exit 4 if any output differs\n"
    "                         from the cache or from RECIPE.lock\n"
    "  lock RECIPE            write RECIPE.lock: every resolved input, stage key and output digest\n"
    "                         (run --frozen then fails, exit 2, when an input differs from the lock)\n"
    "  graph RECIPE           print the DAG as Graphviz DOT\n"
    "  stages [--markdown]    list stage kinds and their parameters\n"
    "  log [RECIPE] [-n N] [--json]  list run records from the provenance branch\n"
    "  diff RUN_A RUN_B [--all]  params, inputs and metrics of two run records side by side\n"
    "  cache stats|verify|gc [--max-size SIZE]  inspect or clean the cache\n"
    "  cache push|pull RECIPE --remote-cache URL  upload the recipe's cached results to the remote\n"
    "                         cache, or download them from it (verified) into the local cache\n"
    "  tokenize PATH [-f FILE | TEXT] [--no-special] [--no-bos] [--pieces]\n"
    "                         print a model's token ids for TEXT as a JSON array (PATH: model\n"
    "                         directory or .gguf)\n"
    "  version                print the version\n"
    "\n"
    "run refuses to start (exit 1) when a stage is predicted to need more memory than is available\n"
    "  (MemAvailable or the cgroup limit; --memory SIZE sets it, --ignore-memory runs anyway)\n"
    "cache directory: --cache-dir, else $QPIPE_CACHE, else .qpipe/cache\n"
    "--offline: no network for hf:// sources (the same as HF_HUB_OFFLINE=1): served from the cache or an error\n"
    "--refresh: ask the Hub again which commit an hf:// branch or tag is (else the commit the cache recorded\n"
    "  when it was first resolved is kept; the same as QPIPE_HF_REFRESH=1)\n"
    "--remote-cache URL (or $QPIPE_REMOTE_CACHE): a shared HTTP cache in the Bazel layout (cas/, ac/):\n"
    "  a local miss asks it (everything downloaded is verified), every stage run uploads its results;\n"
    "  --remote-cache-mode read|write|readwrite (default readwrite); auth from $QPIPE_REMOTE_CACHE_TOKEN\n"
    "  (bearer) or $QPIPE_REMOTE_CACHE_USER/$QPIPE_REMOTE_CACHE_PASSWORD (basic); a failing remote\n"
    "  gives one warning and the run goes on with the local cache; an object whose size no entry\n"
    "  records is at most $QPIPE_REMOTE_CACHE_MAX_OBJECT bytes (default 16G)\n"
    "exit codes: 0 ok, 1 error, 2 bad recipe or usage, 3 gate rejected, 4 verify mismatch,\n"
    "  130 interrupted with --executor slurm (its queued and running jobs were cancelled)\n";

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "qpipe: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see 'qpipe help')\n");
    return 2;
}

static int fail(int rc)
{
    const char *msg = qp_error_last();
    fflush(stdout);  /* the error comes after the summary, not inside it */
    fprintf(stderr, "qpipe: %s\n", msg[0] ? msg : "unknown error");
    return qp_exit_status(rc);
}

/* The cache directory, made absolute: stages run commands in the recipe's
 * directory and must still find the cache. */
static const char *cache_dir_from(const char *opt)
{
    static char *abs;
    const char *env = getenv("QPIPE_CACHE");
    const char *dir = opt ? opt : env && *env ? env : ".qpipe/cache";
    if (dir[0] == '/')
        return dir;
    char cwd[4096];
    if (!getcwd(cwd, sizeof(cwd)))
        return dir;
    free(abs);
    abs = qp_path_join(cwd, dir);
    return abs;
}

/* A whole decimal number in [lo, hi]: atoi wrapped 4294967297 round to 1
 * and read "2x" as 2. */
static int parse_count(const char *s, long lo, long hi, int *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

/* $QPIPE_THREADS, else the online CPUs; -1 (with the message printed) when
 * the variable is set to something that is not a thread count */
static int default_threads(void)
{
    const char *env = getenv("QPIPE_THREADS");
    int n = 0;
    if (env && *env && strcmp(env, "0") != 0) {   /* 0 or empty: every CPU, as before */
        if (parse_count(env, 1, 1024, &n) == 0)
            return n;
        usage_error("QPIPE_THREADS=%s: expected a number between 1 and 1024", env);
        return -1;
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    return cpus > 0 ? (int)(cpus > 1024 ? 1024 : cpus) : 1;
}

enum { OPT_CACHE = 256, OPT_JSON, OPT_NOPROV, OPT_FORCE, OPT_THREADS, OPT_MAXSIZE, OPT_MD, OPT_BRANCH, OPT_FROZEN,
       OPT_ESTIMATE, OPT_RECAL, OPT_IGNMEM, OPT_MEMORY, OPT_OFFLINE, OPT_REFRESH, OPT_REMOTE,
       OPT_REMOTE_MODE, OPT_EXECUTOR, OPT_PARTITION, OPT_SLURM_LOGS, OPT_JOB_CACHE,
       OPT_EXPECT_KEY };

/* qpipe cache push|pull RECIPE: a plan whose lookups go through the remote
 * (pull: read-through brings every reachable entry and its objects down;
 * push: every local hit is uploaded) */
enum { XFER_NONE, XFER_PUSH, XFER_PULL };
static int cache_xfer = XFER_NONE;

/* The remote cache of --remote-cache / $QPIPE_REMOTE_CACHE, attached to
 * cache; *out stays NULL when none is asked for.  Credentials come from the
 * environment only, so they never reach a command line, a log or a run
 * record. */
/* The remote's progress line for large transfers: the stages' progress
 * bar (artifact/progress.c) on stderr.  The remote calls this from one
 * transfer thread at a time. */
static pthread_mutex_t remote_prog_mu = PTHREAD_MUTEX_INITIALIZER;
static qp_progress remote_prog;
static int remote_prog_on;

static void remote_progress(void *ud, uint64_t done, uint64_t total)
{
    (void)ud;
    if (!total) {   /* the last large transfer ended: nothing of the line stays */
        pthread_mutex_lock(&remote_prog_mu);
        qp_progress_clear(&remote_prog);
        pthread_mutex_unlock(&remote_prog_mu);
        remote_prog_on = 0;
        return;
    }
    if (!remote_prog_on) {
        qp_progress_init(&remote_prog, "remote cache", stderr, &remote_prog_mu, 1, 0);
        remote_prog_on = 1;
    }
    qp_progress_update(&remote_prog, done, total, "bytes");
}

/* show_progress: stderr is a terminal and stdout is not --json NDJSON */
static int remote_open(qp_cache *cache, const char *url_opt, const char *mode_opt, int show_progress,
                       qp_remote **out)
{
    *out = NULL;
    const char *env = getenv("QPIPE_REMOTE_CACHE");
    const char *url = url_opt ? url_opt : env && *env ? env : NULL;
    if (!url) {
        if (cache_xfer != XFER_NONE)
            return qp_error_set(QP_EUSAGE, "cache %s needs --remote-cache URL (or QPIPE_REMOTE_CACHE)",
                                cache_xfer == XFER_PUSH ? "push" : "pull");
        return 0;
    }
    qp_remote_options ro = {.url = url, .mode = QP_REMOTE_READWRITE};
    if (mode_opt && !strcmp(mode_opt, "read"))
        ro.mode = QP_REMOTE_READ;
    else if (mode_opt && !strcmp(mode_opt, "write"))
        ro.mode = QP_REMOTE_WRITE;
    else if (mode_opt && strcmp(mode_opt, "readwrite") != 0)
        return qp_error_set(QP_EUSAGE, "--remote-cache-mode %s: expected read, write or readwrite", mode_opt);
    if (cache_xfer == XFER_PUSH) {
        ro.mode = QP_REMOTE_WRITE;
        ro.push_hits = 1;
    } else if (cache_xfer == XFER_PULL) {
        ro.mode = QP_REMOTE_READ;
    }
    ro.token = getenv("QPIPE_REMOTE_CACHE_TOKEN");
    ro.user = getenv("QPIPE_REMOTE_CACHE_USER");
    ro.password = getenv("QPIPE_REMOTE_CACHE_PASSWORD");
    const char *max = getenv("QPIPE_REMOTE_CACHE_MAX_OBJECT");
    if (max && *max && (qp_parse_size(max, &ro.limits.max_object) != 0 || ro.limits.max_object == 0)) {
        qp_error_clear();
        return qp_error_set(QP_EUSAGE, "QPIPE_REMOTE_CACHE_MAX_OBJECT=%s: expected a size such as 16G or 512M", max);
    }
    if (show_progress)
        ro.progress = remote_progress;
    int rc = qp_remote_new(out, &ro);
    if (rc == 0)
        qp_cache_set_remote(cache, *out);
    return rc;
}

static void remote_report(qp_remote *r)
{
    if (!r)
        return;
    qp_remote_stats st;
    qp_remote_stats_get(r, &st);
    fprintf(stderr,
            "qpipe: remote cache: %llu action(s) and %llu object(s) (%llu bytes) down, %llu action(s) and "
            "%llu object(s) (%llu bytes) up",
            (unsigned long long)st.actions_down, (unsigned long long)st.objects_down,
            (unsigned long long)st.bytes_down, (unsigned long long)st.actions_up,
            (unsigned long long)st.objects_up, (unsigned long long)st.bytes_up);
    /* what was refused: only the first corrupt object warned */
    if (st.corrupt)
        fprintf(stderr, "; %llu corrupt remote object(s) ignored", (unsigned long long)st.corrupt);
    if (st.mismatched)
        fprintf(stderr, "; %llu remote entr%s that did not fit their key ignored", (unsigned long long)st.mismatched,
                st.mismatched == 1 ? "y" : "ies");
    fprintf(stderr, "%s\n", st.disabled ? " (then turned off after a failure)" : "");
}

/* What every Slurm job's `qpipe run` is told besides its stage: the same
 * recipe, cache and remote cache as this run, and the same strictness. */
typedef struct {
    const char *cache_dir, *remote_url, *remote_mode, *memory;
    int frozen, ignore_memory;
    qp_remote *results_via;   /* --job-cache-dir: the results come back through it */
} job_args;

/* --executor slurm: the executor, told how to start this same program on
 * a node (exit 2 when Slurm's commands are missing). */
static int slurm_open(qp_slurm **out, const qp_recipe *r, const char *recipe_arg, const job_args *ja,
                      const char *partition, const char *log_dir_opt, int cpus)
{
    *out = NULL;
    char *self = realpath("/proc/self/exe", NULL), *recipe = realpath(recipe_arg, NULL), *cwd = getcwd(NULL, 0);
    const char *env_logs = getenv("QPIPE_SLURM_LOG_DIR");
    const char *logs = log_dir_opt ? log_dir_opt : env_logs && *env_logs ? env_logs : ".qpipe/slurm";
    char *log_dir = logs[0] == '/' || !cwd ? qp_strdup(logs) : qp_path_join(cwd, logs);
    const char *args[16];
    int n = 0, rc = 0;
    args[n++] = "--cache-dir";
    args[n++] = ja->cache_dir;
    if (ja->remote_url) {
        args[n++] = "--remote-cache";
        args[n++] = ja->remote_url;
        args[n++] = "--remote-cache-mode";
        args[n++] = ja->remote_mode ? ja->remote_mode : "readwrite";
    }
    if (ja->frozen)
        args[n++] = "--frozen";
    if (ja->ignore_memory)
        args[n++] = "--ignore-memory";
    if (ja->memory) {
        args[n++] = "--memory";
        args[n++] = ja->memory;
    }
    args[n++] = recipe;
    args[n] = NULL;
    double poll = 2.0;
    const char *env_poll = getenv("QPIPE_SLURM_POLL");   /* seconds between polls (tests use less) */
    if (env_poll && *env_poll && atof(env_poll) > 0 && atof(env_poll) <= 60)
        poll = atof(env_poll);
    if (!self || !recipe || !cwd)
        rc = qp_error_errno(QP_ERROR, "--executor slurm: cannot resolve this program, %s or the working directory",
                            recipe_arg);
    else {
        qp_slurm_options so = {.qpipe = self, .workdir = cwd, .log_dir = log_dir, .partition = partition,
                               .run_args = args, .default_cpus = cpus, .poll_seconds = poll,
                               .results_via = ja->results_via};
        rc = qp_slurm_new(out, r, &so);
    }
    free(self);
    free(recipe);
    free(cwd);
    free(log_dir);
    return rc;
}

static int cmd_run(int argc, char **argv, qp_run_mode mode)
{
    static const struct option opts[] = {
        {"stage", required_argument, NULL, 's'},   {"jobs", required_argument, NULL, 'j'},
        {"threads", required_argument, NULL, OPT_THREADS}, {"force", optional_argument, NULL, OPT_FORCE},
        {"cache-dir", required_argument, NULL, OPT_CACHE}, {"json", no_argument, NULL, OPT_JSON},
        {"no-provenance", no_argument, NULL, OPT_NOPROV}, {"branch", required_argument, NULL, OPT_BRANCH},
        {"frozen", no_argument, NULL, OPT_FROZEN}, {"estimate", no_argument, NULL, OPT_ESTIMATE},
        {"recalibrate", no_argument, NULL, OPT_RECAL}, {"ignore-memory", no_argument, NULL, OPT_IGNMEM},
        {"memory", required_argument, NULL, OPT_MEMORY}, {"offline", no_argument, NULL, OPT_OFFLINE},
        {"refresh", no_argument, NULL, OPT_REFRESH},
        {"remote-cache", required_argument, NULL, OPT_REMOTE},
        {"remote-cache-mode", required_argument, NULL, OPT_REMOTE_MODE},
        {"executor", required_argument, NULL, OPT_EXECUTOR}, {"partition", required_argument, NULL, OPT_PARTITION},
        {"slurm-log-dir", required_argument, NULL, OPT_SLURM_LOGS},
        {"job-cache-dir", required_argument, NULL, OPT_JOB_CACHE},
        {"expect-key", required_argument, NULL, OPT_EXPECT_KEY},
        {NULL, 0, NULL, 0},
    };
    qp_cli_est_opts eo = {0};
    qp_run_options o = {.mode = mode, .jobs = 1, .threads = 1, .provenance = 1, .out = stdout,
                        .exit_status = qp_exit_status};
    const char *cache_opt = NULL, *remote_opt = NULL, *remote_mode = NULL;
    qp_remote *remote = NULL;
    qp_slurm *slurm = NULL;
    const char *partition = NULL, *slurm_logs = NULL, *memory_opt = NULL, *job_cache = NULL;
    int c, threads_given = 0, jobs_given = 0, use_slurm = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "s:j:", opts, NULL)) != -1) {
        switch (c) {
        case 's': o.only_stage = optarg; break;
        case 'j':
            if (parse_count(optarg, 1, 256, &o.jobs) != 0)
                return usage_error("-j %s: expected a number of parallel stages between 1 and 256", optarg);
            jobs_given = 1;
            break;
        case OPT_THREADS:
            if (parse_count(optarg, 1, 1024, &o.threads) != 0)
                return usage_error("--threads %s: expected a number between 1 and 1024", optarg);
            threads_given = 1;
            break;
        case OPT_FORCE:
            if (optarg && !*optarg)
                return usage_error("--force=: expected a stage ID (or --force alone for every stage)%s", "");
            if (optarg)
                o.force_stage = optarg;
            else
                o.force_all = 1;
            break;
        case OPT_CACHE:
            if (!*optarg)
                return usage_error("--cache-dir '': expected a directory (default .qpipe/cache)%s", "");
            cache_opt = optarg;
            break;
        case OPT_REMOTE:
            if (!*optarg)
                return usage_error("--remote-cache '': expected an http(s):// URL%s", "");
            remote_opt = optarg;
            break;
        case OPT_REMOTE_MODE: remote_mode = optarg; break;
        case OPT_EXECUTOR:
            if (!strcmp(optarg, "slurm") || !strcmp(optarg, "local"))
                use_slurm = !strcmp(optarg, "slurm");   /* the last one given wins */
            else
                return usage_error("--executor %s: expected local or slurm", optarg);
            break;
        case OPT_PARTITION:
            if (!qp_recipe_partition_ok(optarg))
                return usage_error("--partition '%s': expected a Slurm partition name", optarg);
            partition = optarg;
            break;
        case OPT_EXPECT_KEY:
            if (strlen(optarg) != 64 || strspn(optarg, "0123456789abcdef") != 64)
                return usage_error("--expect-key %s: expected a stage key (64 hex digits)", optarg);
            o.expect_key = optarg;
            break;
        case OPT_JOB_CACHE:
            if (optarg[0] != '/')
                return usage_error("--job-cache-dir %s: expected an absolute directory on each node", optarg);
            job_cache = optarg;
            break;
        case OPT_SLURM_LOGS:
            if (!*optarg)
                return usage_error("--slurm-log-dir '': expected a directory the nodes share%s", "");
            slurm_logs = optarg;
            break;
        case OPT_JSON: o.json = 1; break;
        case OPT_NOPROV: o.provenance = 0; break;
        case OPT_BRANCH: o.branch = optarg; break;
        case OPT_FROZEN: o.frozen = 1; break;
        case OPT_ESTIMATE: eo.estimate = 1; break;
        case OPT_RECAL: eo.recalibrate = 1; break;
        case OPT_IGNMEM: eo.ignore_memory = 1; break;
        /* the fetch stage reads the same switch huggingface_hub does, so
         * the flag and the environment cannot disagree */
        case OPT_OFFLINE: setenv("HF_HUB_OFFLINE", "1", 1); break;
        case OPT_REFRESH: setenv("QPIPE_HF_REFRESH", "1", 1); break;
        case OPT_MEMORY:
            if (qp_parse_size(optarg, &eo.memory) != 0 || eo.memory == 0) {
                qp_error_clear();
                return usage_error("--memory %s: expected a size such as 16G or 512M", optarg);
            }
            memory_opt = optarg;
            break;
        default: return 2;
        }
    }
    if (optind != argc - 1)
        return usage_error("%s needs exactly one RECIPE argument", argv[0]);
    if (!threads_given && (o.threads = default_threads()) < 0)
        return 2;
    if ((eo.estimate || eo.recalibrate) && mode != QP_RUN_PLAN)
        return usage_error("--estimate and --recalibrate go with %s", "'qpipe plan'");
    if (eo.recalibrate && !eo.estimate)
        return usage_error("--recalibrate goes with %s", "--estimate");
    if ((use_slurm || partition || slurm_logs || job_cache || o.expect_key) &&
        (mode != QP_RUN_NORMAL || cache_xfer != XFER_NONE))
        return usage_error("--executor, --partition, --slurm-log-dir, --job-cache-dir and --expect-key go with %s",
                           "'qpipe run'");
    if (o.expect_key && !o.only_stage)
        return usage_error("--expect-key goes with %s", "--stage ID");
    if ((partition || slurm_logs || job_cache) && !use_slurm)
        return usage_error("--partition, --slurm-log-dir and --job-cache-dir go with %s", "--executor slurm");
    if (mode != QP_RUN_NORMAL)
        o.provenance = 0;
    qp_recipe *r = NULL;
    qp_cache *cache = NULL;
    json_t *lock = NULL;
    char *lock_path = qp_lock_path(argv[optind]);
    int rc = qp_recipe_load(&r, argv[optind]);
    if (rc == 0 && (o.frozen || mode == QP_RUN_VERIFY)) {
        rc = qp_lock_load(&lock, lock_path);
        if (rc == QP_ENOTFOUND && !o.frozen)
            rc = 0;   /* verify without a lock compares with the cache only */
        else if (rc == QP_ENOTFOUND)
            rc = qp_error_set(QP_EUSAGE, "%s: --frozen needs %s; create it with 'qpipe lock %s'", argv[optind],
                              lock_path, argv[optind]);
        o.lock = lock;
    }
    if (rc == 0)
        rc = qp_cache_open(&cache, cache_dir_from(cache_opt));
    if (rc == 0 && (mode == QP_RUN_NORMAL || cache_xfer != XFER_NONE))
        rc = remote_open(cache, remote_opt, remote_mode, !o.json && isatty(STDERR_FILENO), &remote);
    if (rc == 0 && use_slurm && job_cache && (!remote || (remote_mode && strcmp(remote_mode, "readwrite") != 0)))
        rc = qp_error_set(QP_EUSAGE, "--job-cache-dir %s: the jobs' results can only come back through a remote cache "
                          "they write to; add --remote-cache URL (mode readwrite), or leave --job-cache-dir out to "
                          "share %s", job_cache, qp_cache_dir(cache));
    /* a Slurm run mostly waits: every stage that is ready may be a job in
     * flight unless -j says otherwise */
    if (rc == 0 && use_slurm && !jobs_given)
        o.jobs = qp_recipe_stage_count(r) < 256 ? (int)qp_recipe_stage_count(r) + 1 : 256;
    if (rc == 0 && use_slurm) {
        job_args ja = {.cache_dir = job_cache ? job_cache : qp_cache_dir(cache),
                       .remote_url = remote ? qp_remote_url(remote) : NULL, .results_via = job_cache ? remote : NULL,
                       .remote_mode = remote_mode, .memory = memory_opt, .frozen = o.frozen,
                       .ignore_memory = eo.ignore_memory};
        if ((rc = slurm_open(&slurm, r, argv[optind], &ja, partition, slurm_logs, threads_given ? o.threads : 0)) == 0)
            o.slurm = slurm;
    }
    if (rc == 0 && qp_cache_is_read_only(cache) && mode != QP_RUN_PLAN)
        fprintf(stderr, "qpipe: note: cache %s cannot be written (read-only or not yours): cached results are "
                "served, anything new fails when it is stored\n", qp_cache_dir(cache));
    if (rc == 0 && mode == QP_RUN_LOCK)
        rc = qp_lock_write(r, cache, o.threads, lock_path);
    else if (rc == 0 && mode == QP_RUN_PLAN && eo.estimate)
        rc = qp_cli_plan_estimate(r, cache, &o, &eo);
    else if (rc == 0 && mode == QP_RUN_NORMAL && !use_slurm && (rc = qp_cli_memory_check(r, cache, &o, &eo)) != 0)
        ;   /* refused before anything ran (on Slurm each job checks its own node) */
    else if (rc == 0)
        rc = qp_runner_run(r, cache, &o);
    if (rc == 0 && mode == QP_RUN_LOCK)
        printf("wrote %s\n", lock_path);
    json_decref(lock);
    free(lock_path);
    int status = rc ? fail(rc) : 0;
    if (slurm && qp_slurm_interrupted()) {
        if (qp_slurm_uncancelled(slurm)[0])
            fprintf(stderr, "qpipe: interrupted: %zu Slurm job(s) cancelled; scancel failed on %s, which may still "
                    "run\n", qp_slurm_cancelled(slurm), qp_slurm_uncancelled(slurm));
        else
            fprintf(stderr, "qpipe: interrupted: %zu Slurm job(s) cancelled\n", qp_slurm_cancelled(slurm));
        status = 130;
    }
    qp_slurm_free(slurm);
    remote_report(remote);
    qp_cache_free(cache);
    qp_remote_free(remote);
    qp_recipe_free(r);
    return status;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage_text, stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("qpipe %s\nnumerics %s (matrix products: %s kernels on this CPU)\n", QP_VERSION,
               QP_NUMERICS_PROFILE, qp_gemm_path_name(qp_gemm_path_active()));
        return 0;
    }
    if (!strcmp(cmd, "run"))
        return cmd_run(argc - 1, argv + 1, QP_RUN_NORMAL);
    if (!strcmp(cmd, "plan"))
        return cmd_run(argc - 1, argv + 1, QP_RUN_PLAN);
    if (!strcmp(cmd, "verify"))
        return cmd_run(argc - 1, argv + 1, QP_RUN_VERIFY);
    if (!strcmp(cmd, "lock"))
        return cmd_run(argc - 1, argv + 1, QP_RUN_LOCK);
    if (!strcmp(cmd, "graph"))
        return qp_cli_graph(argc - 1, argv + 1);
    if (!strcmp(cmd, "stages"))
        return qp_cli_stages(argc - 1, argv + 1);
    if (!strcmp(cmd, "log"))
        return qp_cli_log(argc - 1, argv + 1);
    if (!strcmp(cmd, "diff"))
        return qp_cli_diff(argc - 1, argv + 1);
    if (!strcmp(cmd, "tokenize"))
        return qp_cli_tokenize(argc - 1, argv + 1);
    if (!strcmp(cmd, "cache") && argc >= 3 && (!strcmp(argv[2], "push") || !strcmp(argv[2], "pull"))) {
        cache_xfer = !strcmp(argv[2], "push") ? XFER_PUSH : XFER_PULL;
        return cmd_run(argc - 2, argv + 2, QP_RUN_PLAN);
    }
    if (!strcmp(cmd, "cache"))
        return qp_cli_cache(argc - 1, argv + 1, cache_dir_from(NULL));
    return usage_error("unknown command '%s'", cmd);
}
