/* Progress display for a running stage: a bar with rate and ETA on a TTY,
 * NDJSON "progress" events with --json, nothing otherwise. */
#include "artifact/progress_impl.h"
#include "common/fsutil.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void qp_progress_init(qp_progress *p, const char *stage, FILE *out, pthread_mutex_t *out_mu, int tty, int json)
{
    memset(p, 0, sizeof(*p));
    p->stage = stage;
    p->out = out;
    p->out_mu = out_mu;
    p->tty = tty;
    p->json = json;
    p->start = qp_now();
}

static void fmt_eta(char *buf, size_t n, double s)
{
    if (s < 0 || s > 1e7)
        snprintf(buf, n, "--");
    else if (s < 60)
        snprintf(buf, n, "%.0fs", s);
    else if (s < 3600)
        snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else
        snprintf(buf, n, "%.1fh", s / 3600);
}

void qp_progress_update(qp_progress *p, uint64_t done, uint64_t total, const char *unit)
{
    if (!p || (!p->tty && !p->json))
        return;
    double now = qp_now();
    int final = total && done >= total;
    /* rate limit: 10 redraws/s on a terminal, 1 event/s in NDJSON */
    if (!final && now - p->last < (p->json ? 1.0 : 0.1))
        return;
    /* short stages never show a bar */
    if (p->tty && !p->shown && now - p->start < 0.5)
        return;
    p->last = now;
    double elapsed = now - p->start, rate = elapsed > 0 ? (double)done / elapsed : 0;
    double eta = (rate > 0 && total >= done) ? (double)(total - done) / rate : -1;
    pthread_mutex_lock(p->out_mu);
    if (p->json) {
        fprintf(p->out,
                "{\"event\":\"progress\",\"stage\":\"%s\",\"done\":%llu,\"total\":%llu,\"unit\":\"%s\","
                "\"rate\":%.3f,\"eta_s\":%.1f}\n",
                p->stage, (unsigned long long)done, (unsigned long long)total, unit, rate, eta);
    } else {
        char bar[31], etas[32];
        int filled = total ? (int)(30.0 * (double)done / (double)total) : 0;
        if (filled > 30)
            filled = 30;
        for (int i = 0; i < 30; i++)
            bar[i] = i < filled ? '#' : '.';
        bar[30] = '\0';
        fmt_eta(etas, sizeof(etas), eta);
        double shown_rate = rate;
        const char *u = unit;
        if (strcmp(unit, "bytes") == 0) {
            shown_rate /= 1e6;
            u = "MB";
        }
        fprintf(p->out, "\r  %-12s [%s] %3.0f%%  %.1f %s/s  ETA %s   ", p->stage, bar,
                total ? 100.0 * (double)done / (double)total : 0.0, shown_rate, u, etas);
        p->shown = 1;
    }
    fflush(p->out);
    pthread_mutex_unlock(p->out_mu);
}

void qp_progress_note(qp_progress *p, const char *fmt, ...)
{
    if (!p || (!p->tty && !p->json))
        return;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(p->out_mu);
    if (p->json) {
        json_t *e = json_pack("{s:s, s:s, s:s}", "event", "note", "stage", p->stage, "message", msg);
        char *s = json_dumps(e, JSON_COMPACT);
        fprintf(p->out, "%s\n", s);
        free(s);
        json_decref(e);
    } else {
        fprintf(p->out, "\r  %-12s %s\033[K", p->stage, msg);
        p->shown = 1;
    }
    fflush(p->out);
    pthread_mutex_unlock(p->out_mu);
}

void qp_progress_clear(qp_progress *p)
{
    if (p && p->tty && p->shown) {
        fprintf(p->out, "\r\033[K");
        p->shown = 0;
    }
}
