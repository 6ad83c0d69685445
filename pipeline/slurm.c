#include "pipeline/slurm.h"
#include "common/alloc.h"
#include "common/buf.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/spawn.h"
#include "pipeline/estimate.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* How long scontrol may keep failing (the controller restarting, say)
 * before a wait gives up. */
#define CONTROLLER_PATIENCE_S 600.0
/* One scontrol or scancel call: longer means the controller is wedged.
 * (sbatch is never cut short: killed half-way, it may have submitted a
 * job whose id nobody would learn.) */
#define SLURM_CMD_TIMEOUT_S 60

struct qp_slurm {
    char *qpipe, *workdir, *log_dir, *partition;   /* owned copies of the options */
    char **run_args;
    int default_cpus;
    double poll_seconds;
    qp_remote *results_via;
    qp_recipe_estimate *est;
    pthread_mutex_t mu;
    unsigned serial;                  /* job scripts written so far */
    size_t cancelled;                 /* jobs scancel'ed after an interruption */
    qp_buf uncancelled;               /* ids scancel failed on */
    struct sigaction old_int, old_term;
};
/* set by the handler, read by every worker thread: a lock-free atomic is
 * both async-signal-safe and free of a data race */
static atomic_int interrupted;

/* The first Ctrl-C asks the workers to cancel their jobs (they notice at
 * their next poll); a second one, for a user who will not wait, ends the
 * process the default way at once. */
static void on_signal(int sig)
{
    if (atomic_exchange(&interrupted, 1)) {
        signal(sig, SIG_DFL);
        raise(sig);
    }
}

int qp_slurm_interrupted(void)
{
    return atomic_load(&interrupted) != 0;
}

/* The first line of b, trimmed, into out (a one-line message). */
static void first_line(const qp_buf *b, char *out, size_t cap)
{
    const char *t = qp_buf_cstr(b);
    t += strspn(t, " \n");
    size_t n = strcspn(t, "\n");
    snprintf(out, cap, "%.*s", (int)(n < cap ? n : cap - 1), t);
}

/* ---------- a job's script ---------- */

/* s in single quotes for /bin/sh ('\'' for a quote inside) */
static void sh_quote(qp_buf *b, const char *s)
{
    qp_buf_putc(b, '\'');
    for (; *s; s++) {
        if (*s == '\'')
            qp_buf_puts(b, "'\\''");
        else
            qp_buf_putc(b, *s);
    }
    qp_buf_putc(b, '\'');
}

/* One task per stage: SLURM_ARRAY_TASK_ID picks the stage (0 for a job
 * that is no array).  The script does not exec qpipe: it prints the exit
 * status last, which is how an ending is still known after Slurm has
 * forgotten the job (MinJobAge). */
static char *job_script(const qp_slurm *s, const qp_slurm_stage *st, size_t n, int threads)
{
    qp_buf b = QP_BUF_INIT;
    qp_buf_puts(&b, "#!/bin/sh\n# written by qpipe: one recipe stage per task\n");
    qp_buf_puts(&b, "force=\ncase \"${SLURM_ARRAY_TASK_ID:-0}\" in\n");
    for (size_t i = 0; i < n; i++) {
        qp_buf_printf(&b, "%zu) stage=", i);
        sh_quote(&b, st[i].decl->id);
        qp_buf_puts(&b, "; key=");
        sh_quote(&b, st[i].key);
        if (st[i].force) {
            qp_buf_puts(&b, "; force=--force=");
            sh_quote(&b, st[i].decl->id);   /* --force='q@a': one word */
        }
        qp_buf_puts(&b, " ;;\n");
    }
    qp_buf_puts(&b, "*) echo \"qpipe: array task $SLURM_ARRAY_TASK_ID has no stage\" >&2; exit 1 ;;\nesac\n");
    sh_quote(&b, s->qpipe);
    qp_buf_puts(&b, " run --stage \"$stage\" --expect-key \"$key\" ${force:+\"$force\"} --no-provenance -j 1");
    qp_buf_printf(&b, " --threads %d", threads > 0 ? threads : 1);
    for (char **a = s->run_args; *a; a++) {
        qp_buf_putc(&b, ' ');
        sh_quote(&b, *a);
    }
    qp_buf_puts(&b, "\nrc=$?\necho \"qpipe-slurm-exit: $rc\"\nexit $rc\n");
    return qp_buf_detach(&b, NULL);
}

/* ---------- scontrol ---------- */

static const char *const ended_states[] = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
                                           "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT", NULL};

static int state_ended(const char *st)
{
    for (const char *const *e = ended_states; *e; e++)
        if (!strcmp(st, *e))
            return 1;
    return 0;
}

/* Where the value of " KEY=" in a one-line record is (*v, *vn bytes, up
 * to the next space); 0 when absent. */
static int field_ref(const char *line, size_t len, const char *key, const char **v, size_t *vn)
{
    size_t kl = strlen(key);
    for (size_t i = 0; i + kl + 1 <= len; i++) {
        if ((i == 0 || line[i - 1] == ' ') && !strncmp(line + i, key, kl) && line[i + kl] == '=') {
            const char *p = line + i + kl + 1, *end = line + len;
            size_t n = 0;
            while (p + n < end && p[n] != ' ' && p[n] != '\n')
                n++;
            *v = p;
            *vn = n;
            return 1;
        }
    }
    return 0;
}

/* The same into out (cap bytes, cut to fit: for short values). */
static int field(const char *line, size_t len, const char *key, char *out, size_t cap)
{
    const char *v;
    size_t n;
    if (!field_ref(line, len, key, &v, &n))
        return 0;
    if (n >= cap)
        n = cap - 1;
    memcpy(out, v, n);
    out[n] = 0;
    return 1;
}

/* The decimal number at p (below end), at most 9 digits; -1 when none. */
static long number_at(const char **p, const char *end)
{
    long v = 0;
    int n = 0;
    for (; *p < end && isdigit((unsigned char)**p) && n < 10; (*p)++, n++)
        v = v * 10 + (**p - '0');
    return n == 0 || n > 9 ? -1 : v;
}

/* Does an ArrayTaskId value ("3", "1-4", "0,2-3%2", "1-9:2") of n bytes
 * cover task i?  Read in place: a scattered list of many tasks is long. */
static int covers(const char *spec, size_t n, size_t i)
{
    const char *p = spec, *end = spec + n;
    const char *pct = memchr(spec, '%', n);
    if (pct)
        end = pct;
    while (p < end) {
        long lo = number_at(&p, end), hi = lo, step = 1;
        if (p < end && *p == '-') {
            p++;
            hi = number_at(&p, end);
        }
        if (p < end && *p == ':') {
            p++;
            step = number_at(&p, end);
        }
        if (lo >= 0 && hi >= lo && step > 0 && (long)i >= lo && (long)i <= hi && ((long)i - lo) % step == 0)
            return 1;
        while (p < end && *p != ',')   /* whatever else, up to the next item */
            p++;
        if (p < end)
            p++;
    }
    return 0;
}

void qp_slurm_parse_scontrol(const char *text, const char *job_id, qp_slurm_task *tasks, size_t n)
{
    for (const char *line = text; line && *line;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        char state[32] = "", exit_code[32] = "", reason[64] = "";
        const char *task_id = NULL;
        size_t task_len = 0;
        if (field(line, len, "JobState", state, sizeof(state))) {
            field(line, len, "Reason", reason, sizeof(reason));
            field(line, len, "ExitCode", exit_code, sizeof(exit_code));
            int in_array = field_ref(line, len, "ArrayTaskId", &task_id, &task_len);
            for (size_t i = 0; i < n; i++) {
                if (in_array ? !covers(task_id, task_len, i) : i != 0)
                    continue;
                snprintf(tasks[i].state, sizeof(tasks[i].state), "%s", state);
                snprintf(tasks[i].reason, sizeof(tasks[i].reason), "%s", reason);
                int code = -1, sig = 0;
                if (sscanf(exit_code, "%d:%d", &code, &sig) >= 1) {
                    tasks[i].exit_code = code;
                    tasks[i].signal = sig;
                }
                if (in_array && n > 1)
                    snprintf(tasks[i].job, sizeof(tasks[i].job), "%.32s_%zu", job_id, i);
                else
                    snprintf(tasks[i].job, sizeof(tasks[i].job), "%.32s", job_id);
            }
        }
        line = nl ? nl + 1 : NULL;
    }
}

/* The exit status the job script printed last ("qpipe-slurm-exit: N",
 * its very last line: only the log's end is read), -1 none. */
static int exit_from_log(const char *path)
{
    char *text = NULL;
    size_t len = 0;
    if (qp_read_file_tail(path, 4096, &text, &len) != 0) {
        qp_error_clear();
        return -1;
    }
    int code = -1;
    for (const char *p = text; (p = strstr(p, "qpipe-slurm-exit: ")) != NULL; p++)
        code = atoi(p + 18);
    free(text);
    return code;
}

char *qp_slurm_log_tail(const char *path, int max_lines, size_t max_chars)
{
    char *buf = NULL;
    size_t n = 0;
    if (qp_read_file_tail(path, 16384, &buf, &n) != 0) {
        qp_error_clear();
        return qp_strfmt("(no log at %s)", path);
    }
    /* the last max_lines non-empty lines, without the exit marker */
    const char *lines[64];
    size_t lens[64];
    int count = 0;
    if (max_lines > 64)
        max_lines = 64;
    for (size_t end = n; end > 0 && count < max_lines;) {
        size_t start = end;
        while (start > 0 && buf[start - 1] != '\n')
            start--;
        size_t l = end - start;
        while (l > 0 && (buf[start + l - 1] == '\n' || buf[start + l - 1] == '\r' || buf[start + l - 1] == ' '))
            l--;
        if (l > 0 && strncmp(buf + start, "qpipe-slurm-exit: ", 18) != 0) {
            lines[count] = buf + start;
            lens[count++] = l;
        }
        end = start > 0 ? start - 1 : 0;
    }
    qp_buf b = QP_BUF_INIT;
    for (int i = count - 1; i >= 0; i--) {
        if (b.len)
            qp_buf_puts(&b, " | ");
        for (size_t k = 0; k < lens[i]; k++)   /* one line: control bytes (a progress bar's \r) become spaces */
            qp_buf_putc(&b, (unsigned char)lines[i][k] < 0x20 ? ' ' : lines[i][k]);
    }
    free(buf);
    if (!b.len)
        qp_buf_puts(&b, "(empty log)");
    if (b.len > max_chars && max_chars > 3) {
        /* keep the end: the error is last */
        char *t = qp_strfmt("...%s", b.data + b.len - (max_chars - 3));
        qp_buf_free(&b);
        return t;
    }
    return qp_buf_detach(&b, NULL);
}

/* ---------- the executor ---------- */

/* A compute stage's CPUs when neither resources: nor --threads say: 8,
 * or fewer when no node has that many (sinfo), so that a small cluster
 * does not refuse every job. */
static int default_cpus(void)
{
    const char *argv[] = {"sinfo", "-h", "-o", "%c", NULL};
    qp_buf out = QP_BUF_INIT;
    int code = 0, most = 0;
    if (qp_spawn_capture(argv, &out, NULL, &code) == 0 && code == 0)
        for (const char *p = qp_buf_cstr(&out); *p; p++)
            if (isdigit((unsigned char)*p) && (p == out.data || !isdigit((unsigned char)p[-1]))) {
                int c = atoi(p);
                most = c > most ? c : most;
            }
    qp_error_clear();
    qp_buf_free(&out);
    return most <= 0 ? 1 : most < 8 ? most : 8;
}

int qp_slurm_new(qp_slurm **out, const qp_recipe *r, const qp_slurm_options *o)
{
    *out = NULL;
    static const char *const tools[] = {"sbatch", "scontrol", "scancel"};
    for (size_t i = 0; i < 3; i++) {
        const char *argv[] = {tools[i], "--version", NULL};
        qp_buf err = QP_BUF_INIT;
        int code = 0, rc = qp_spawn_capture(argv, NULL, &err, &code);
        char why[300];
        first_line(&err, why, sizeof(why));
        qp_buf_free(&err);
        if (rc == QP_ENOTFOUND)
            return qp_error_set(QP_EUSAGE, "--executor slurm: %s is not installed; install the Slurm client "
                                "(Debian: slurm-client) or run without --executor slurm", tools[i]);
        if (rc != 0)
            return rc;
        /* installed but not working: most often no configuration (SLURM_CONF) */
        if (code != 0)
            return qp_error_set(QP_ERROR, "--executor slurm: '%s --version' failed (exit %d): %s; check the Slurm "
                                "client's configuration (/etc/slurm/slurm.conf or $SLURM_CONF)", tools[i], code,
                                why[0] ? why : "(no message)");
    }
    /* Slurm reads a backslash in --output as "expand no %j": the logs
     * would not be where the run looks for them */
    if (strchr(o->log_dir, '\\'))
        return qp_error_set(QP_EUSAGE, "--executor slurm: the job log directory %s has a backslash, which stops "
                            "Slurm from naming logs by job id; give another with --slurm-log-dir", o->log_dir);
    if (qp_mkdir_p(o->log_dir, 0755) != 0) {
        qp_error_prefix("--executor slurm: cannot create the job log directory (give another with --slurm-log-dir)");
        return QP_ERROR;
    }
    qp_slurm *s = qp_xcalloc(1, sizeof(*s));
    s->qpipe = qp_strdup(o->qpipe);
    s->workdir = qp_strdup(o->workdir);
    s->log_dir = qp_strdup(o->log_dir);
    s->partition = qp_strdup(o->partition);
    size_t na = 0;
    while (o->run_args && o->run_args[na])
        na++;
    s->run_args = qp_xcalloc(na + 1, sizeof(char *));
    for (size_t i = 0; i < na; i++)
        s->run_args[i] = qp_strdup(o->run_args[i]);
    s->poll_seconds = o->poll_seconds < 0.05 ? 0.05 : o->poll_seconds > 60 ? 60 : o->poll_seconds;
    s->results_via = o->results_via;
    s->default_cpus = o->default_cpus > 0 ? o->default_cpus : default_cpus();
    /* the shapes-only estimate (no machine calibration): the same the
     * memory check uses; its times are those of the default machine */
    qp_est_machine m;
    qp_est_machine_defaults(&m, s->default_cpus);
    s->est = qp_recipe_estimate_new(r, NULL, &m, &qp_est_coef_default, s->default_cpus);
    qp_error_clear();
    pthread_mutex_init(&s->mu, NULL);
    atomic_store(&interrupted, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;   /* no SA_RESTART: a poll's sleep ends at once */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &s->old_int);
    sigaction(SIGTERM, &sa, &s->old_term);
    *out = s;
    return 0;
}

void qp_slurm_free(qp_slurm *s)
{
    if (!s)
        return;
    sigaction(SIGINT, &s->old_int, NULL);
    sigaction(SIGTERM, &s->old_term, NULL);
    for (char **a = s->run_args; *a; a++)
        free(*a);
    free(s->run_args);
    free(s->qpipe);
    free(s->workdir);
    free(s->log_dir);
    free(s->partition);
    qp_recipe_estimate_free(s->est);
    qp_buf_free(&s->uncancelled);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* One stage's request: its resources:, else the estimate, else the
 * executor's defaults (one CPU for a stage that does not compute). */
static void request_for(const qp_slurm *s, const qp_stage_decl *d, qp_slurm_request *out)
{
    memset(out, 0, sizeof(*out));
    const json_t *res = d->resources;
    qp_est_result e;
    memset(&e, 0, sizeof(e));
    int have_est = s->est && qp_recipe_estimate_stage(s->est, d->id, &e) == 0 && e.known;
    const json_t *cpus = json_object_get(res, "cpus");
    out->cpus = cpus ? (int)json_integer_value(cpus) : d->kind->uses_threads ? s->default_cpus : 1;
    if (json_object_get(res, "mem"))
        out->mem_mb = ((uint64_t)json_integer_value(json_object_get(res, "mem")) + (1u << 20) - 1) >> 20;
    else if (have_est && e.peak_rss > 0)
        /* 25% over the prediction and 256 MiB for the shell and the loader */
        out->mem_mb = (uint64_t)((double)e.peak_rss * 1.25 / 1048576.0) + 256;
    if (json_object_get(res, "time"))
        out->time_min = (long)json_integer_value(json_object_get(res, "time"));
    else if (have_est && e.seconds > 0) {
        double min = e.seconds * 4.0 / 60.0 + 5.0;
        out->time_min = min < 10 ? 10 : (long)min + 1;
    }
    out->gpus = (int)json_integer_value(json_object_get(res, "gpus"));
    const char *part = json_string_value(json_object_get(res, "partition"));
    snprintf(out->partition, sizeof(out->partition), "%s", part ? part : s->partition ? s->partition : "");
    qp_error_clear();
}

/* What a job of stages st[0..n) asks for: the most any of them needs
 * (they share one partition: the runner groups them so). */
static void request_for_all(const qp_slurm *s, const qp_slurm_stage *st, size_t n, qp_slurm_request *out)
{
    request_for(s, st[0].decl, out);
    for (size_t i = 1; i < n; i++) {
        qp_slurm_request r1;
        request_for(s, st[i].decl, &r1);
        out->cpus = r1.cpus > out->cpus ? r1.cpus : out->cpus;
        out->mem_mb = r1.mem_mb > out->mem_mb ? r1.mem_mb : out->mem_mb;
        out->time_min = r1.time_min > out->time_min ? r1.time_min : out->time_min;
        out->gpus = r1.gpus > out->gpus ? r1.gpus : out->gpus;
    }
}

int qp_slurm_task_ok(const qp_slurm_task *t)
{
    if (!strcmp(t->state, "COMPLETED"))
        return 1;
    if (!strcmp(t->state, "FAILED") && t->exit_code == 3 && t->signal == 0)
        return 1;
    return t->state[0] == 0 && (t->exit_code == 0 || t->exit_code == 3);
}

json_t *qp_slurm_task_json(const qp_slurm_task *t)
{
    const qp_slurm_request *req = &t->req;
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:i, s:i}", "job", t->job, "log", t->log ? t->log : "", "err",
                          t->err ? t->err : "", "state", t->state[0] ? t->state : "forgotten", "exit", t->exit_code,
                          "cpus", req->cpus);
    if (req->mem_mb)
        json_object_set_new(j, "mem_mb", json_integer((json_int_t)req->mem_mb));
    if (req->time_min)
        json_object_set_new(j, "time_min", json_integer(req->time_min));
    if (req->gpus)
        json_object_set_new(j, "gpus", json_integer(req->gpus));
    if (req->partition[0])
        json_object_set_new(j, "partition", json_string(req->partition));
    return j;
}

void qp_slurm_tasks_clear(qp_slurm_task *tasks, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(tasks[i].log);
        free(tasks[i].err);
        tasks[i].log = tasks[i].err = NULL;
    }
}

/* scancel, counted; on failure the message of the stage says so (the
 * job may still run) and the id is kept for the run's last line.  `what`
 * says why it is cancelled ("interrupted"). */
static int cancel(qp_slurm *s, const char *job, const char *what)
{
    const char *argv[] = {"scancel", job, NULL};
    qp_buf err = QP_BUF_INIT;
    int code = 0, rc = qp_spawn_capture_timed(argv, NULL, &err, &code, SLURM_CMD_TIMEOUT_S);
    char why[300];
    if (rc != 0)
        snprintf(why, sizeof(why), "%s", qp_error_last());
    else
        first_line(&err, why, sizeof(why));
    qp_buf_free(&err);
    pthread_mutex_lock(&s->mu);
    if (rc == 0 && code == 0)
        s->cancelled++;
    else
        qp_buf_printf(&s->uncancelled, "%s%s", s->uncancelled.len ? " " : "", job);
    pthread_mutex_unlock(&s->mu);
    if (rc == 0 && code == 0)
        return qp_error_set(QP_ERROR, "%s: cancelled Slurm job %s", what, job);
    return qp_error_set(QP_ERROR, "%s: Slurm job %s could not be cancelled (scancel: %s); it may still run: "
                        "'scancel %s'", what, job, why[0] ? why : "failed", job);
}

size_t qp_slurm_cancelled(qp_slurm *s)
{
    pthread_mutex_lock(&s->mu);
    size_t n = s->cancelled;
    pthread_mutex_unlock(&s->mu);
    return n;
}

const char *qp_slurm_uncancelled(qp_slurm *s)
{
    return qp_buf_cstr(&s->uncancelled);
}

/* A job held (by an admin, or after a failed launch) waits for a person,
 * not for resources: say so once instead of waiting in silence. */
static void warn_held(qp_slurm_task *tasks, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!tasks[i].warned && !strcmp(tasks[i].state, "PENDING") &&
            (strstr(tasks[i].reason, "Held") || strstr(tasks[i].reason, "held"))) {
            tasks[i].warned = 1;
            fprintf(stderr, "qpipe: warning: Slurm job %s is held (Reason=%s): 'scontrol release %s' lets it run, "
                    "Ctrl-C cancels the run\n", tasks[i].job, tasks[i].reason, tasks[i].job);
        }
}

/* Sleeps about `seconds`; returns early (1) when a signal came. */
static int nap(double seconds)
{
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    return nanosleep(&ts, NULL) != 0 && errno == EINTR;
}

/* A vector of sbatch's arguments, each one word (no shell between). */
typedef struct {
    char *v[24];
    int n;
} args;

static void arg(args *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void arg(args *a, const char *fmt, ...)
{
    qp_buf b = QP_BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    qp_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    a->v[a->n++] = qp_buf_detach(&b, NULL);
}

/* sbatch's --output/--error for the log directory, where '%' starts a
 * pattern ("%j"): a literal one is written "%%" */
static void log_arg(args *a, const qp_slurm *s, const char *opt, const char *tail)
{
    qp_buf b = QP_BUF_INIT;
    qp_buf_printf(&b, "--%s=", opt);
    for (const char *p = s->log_dir; *p; p++)
        qp_buf_puts(&b, *p == '%' ? "%%" : (char[2]){*p, 0});
    qp_buf_printf(&b, "/%s", tail);
    a->v[a->n++] = qp_buf_detach(&b, NULL);
}

/* Writes the job script and submits it: job gets sbatch's job id. */
static int submit(qp_slurm *s, const qp_slurm_stage *st, size_t n, const qp_slurm_request *req, char job[32])
{
    pthread_mutex_lock(&s->mu);
    unsigned serial = ++s->serial;
    pthread_mutex_unlock(&s->mu);
    char *script_path = qp_strfmt("%s/job-%ld-%u.sh", s->log_dir, (long)getpid(), serial);
    char *script = job_script(s, st, n, req->cpus);
    args a = {.n = 0};
    qp_buf out = QP_BUF_INIT, err = QP_BUF_INIT;
    int code = 0, rc = qp_write_file_atomic(script_path, script, strlen(script), NULL);
    if (rc != 0) {
        qp_error_prefix("--executor slurm");
        goto done;
    }
    arg(&a, "sbatch");
    arg(&a, "--parsable");
    arg(&a, "--job-name=qpipe:%s", st[0].decl->base);
    arg(&a, "--chdir=%s", s->workdir);
    arg(&a, "--export=ALL");
    /* stdout and stderr apart, as Slurm users expect: a failure's tail
     * comes from the .err, without qpipe's summary table */
    log_arg(&a, s, "output", n > 1 ? "%A_%a.out" : "%j.out");
    log_arg(&a, s, "error", n > 1 ? "%A_%a.err" : "%j.err");
    arg(&a, "--cpus-per-task=%d", req->cpus > 0 ? req->cpus : 1);
    if (req->mem_mb)
        arg(&a, "--mem=%lluM", (unsigned long long)req->mem_mb);
    if (req->time_min)
        arg(&a, "--time=%ld", req->time_min);
    if (req->gpus)
        arg(&a, "--gres=gpu:%d", req->gpus);
    if (req->partition[0])
        arg(&a, "--partition=%s", req->partition);
    if (n > 1)
        arg(&a, "--array=0-%zu", n - 1);
    arg(&a, "%s", script_path);
    a.v[a.n] = NULL;
    if ((rc = qp_spawn_capture((const char *const *)a.v, &out, &err, &code)) != 0) {
        qp_error_prefix("stage '%s': cannot submit", st[0].decl->id);
        goto done;
    }
    const char *txt = qp_buf_cstr(&out);
    size_t digits = strspn(txt, "0123456789");
    if (code != 0 || digits == 0 || digits >= 32) {
        char why[600];
        first_line(err.len ? &err : &out, why, sizeof(why));
        rc = qp_error_set(QP_ERROR, "stage '%s': sbatch refused the job (exit %d): %s", st[0].decl->id, code,
                          why[0] ? why : "(no message)");
        goto done;
    }
    memcpy(job, txt, digits);
    job[digits] = 0;
done:
    /* sbatch hands the script to the controller, which keeps its own copy */
    unlink(script_path);
    for (int i = 0; i < a.n; i++)
        free(a.v[i]);
    qp_buf_free(&out);
    qp_buf_free(&err);
    free(script);
    free(script_path);
    return rc;
}

/* Polls job until each of its n tasks has ended; Ctrl-C cancels it. */
static int wait_ended(qp_slurm *s, const char *job, qp_slurm_task *tasks, size_t n)
{
    qp_buf out = QP_BUF_INIT, err = QP_BUF_INIT;
    double failing_since = 0;
    int rc = 0;
    for (;;) {
        int all_ended = 1;
        for (size_t i = 0; i < n; i++)
            all_ended &= state_ended(tasks[i].state);
        if (all_ended)
            break;
        if (nap(s->poll_seconds) || atomic_load(&interrupted)) {
            rc = cancel(s, job, "interrupted");
            break;
        }
        const char *sc[] = {"scontrol", "-o", "show", "job", job, NULL};
        int code = -1;
        qp_buf_truncate(&out, 0);
        qp_buf_truncate(&err, 0);
        if (qp_spawn_capture_timed(sc, &out, &err, &code, SLURM_CMD_TIMEOUT_S) != 0) {
            qp_buf_puts(&err, qp_error_last());
            qp_error_clear();
            code = -1;
        }
        if (code == 0) {
            failing_since = 0;
            qp_slurm_parse_scontrol(qp_buf_cstr(&out), job, tasks, n);
            warn_held(tasks, n);
        } else if (strstr(qp_buf_cstr(&err), "Invalid job id")) {
            /* forgotten (MinJobAge passed while we were not looking): what
             * the script printed last says how each task ended */
            for (size_t i = 0; i < n; i++)
                if (!state_ended(tasks[i].state)) {
                    tasks[i].state[0] = 0;
                    tasks[i].exit_code = exit_from_log(tasks[i].log);
                }
            break;
        } else if (failing_since == 0) {
            failing_since = qp_now();
        } else if (qp_now() - failing_since > CONTROLLER_PATIENCE_S) {
            char why[200], reason[300];
            first_line(&err, why, sizeof(why));
            snprintf(reason, sizeof(reason), "scontrol has failed for %.0f s (%s)", CONTROLLER_PATIENCE_S, why);
            rc = cancel(s, job, reason);
            break;
        }
    }
    qp_buf_free(&out);
    qp_buf_free(&err);
    return rc;
}

int qp_slurm_run(qp_slurm *s, const qp_slurm_stage *st, size_t n, void (*on_submit)(void *ud, const char *job),
                 void *ud, qp_slurm_task *tasks)
{
    qp_slurm_request req;
    request_for_all(s, st, n, &req);
    for (size_t i = 0; i < n; i++) {
        memset(&tasks[i], 0, sizeof(tasks[i]));
        tasks[i].exit_code = -1;
        tasks[i].req = req;
    }
    if (atomic_load(&interrupted))
        return qp_error_set(QP_ERROR, "interrupted: stage '%s' was not submitted", st[0].decl->id);
    qp_remote_stats rs;
    if (s->results_via && (qp_remote_stats_get(s->results_via, &rs), rs.disabled))
        return qp_error_set(QP_ERROR, "stage '%s': not submitted: the remote cache %s was turned off (see the warning "
                            "above) and a job's result could come back only through it (--job-cache-dir)",
                            st[0].decl->id, qp_remote_url(s->results_via));
    char job[32];
    int rc = submit(s, st, n, &req, job);
    if (rc != 0)
        return rc;
    if (on_submit)
        on_submit(ud, job);
    for (size_t i = 0; i < n; i++) {
        if (n > 1)
            snprintf(tasks[i].job, sizeof(tasks[i].job), "%s_%zu", job, i);
        else
            snprintf(tasks[i].job, sizeof(tasks[i].job), "%s", job);
        tasks[i].log = qp_strfmt("%s/%s.out", s->log_dir, tasks[i].job);
        tasks[i].err = qp_strfmt("%s/%s.err", s->log_dir, tasks[i].job);
    }
    return wait_ended(s, job, tasks, n);
}
