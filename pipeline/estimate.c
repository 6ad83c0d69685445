/* The estimate of a recipe: each stage predicted in topological order with
 * the shapes its inputs' predictions describe (stages/estimate.h), the
 * table `qpipe plan --estimate` prints, and the memory check `qpipe run`
 * makes before the first stage starts. */
#include "pipeline/estimate.h"
#include "common/alloc.h"
#include "common/error.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const qp_stage_decl *decl;
    int shown;             /* part of this run */
    int runs;              /* will run (else cached: costs 0) */
    qp_est_result res;     /* the stage's own prediction (whether or not it runs) */
    qp_est_art out;
} est_stage;

struct qp_recipe_estimate {
    size_t n;
    est_stage *st;
    qp_est_machine mach;
    const qp_est_coef *coef;
    int threads;
};

const char *qp_fmt_bytes(char *buf, size_t cap, double b)
{
    if (b >= 1e9)
        snprintf(buf, cap, "%.2f GB", b / 1e9);
    else if (b >= 1e6)
        snprintf(buf, cap, "%.1f MB", b / 1e6);
    else if (b >= 1e3)
        snprintf(buf, cap, "%.1f kB", b / 1e3);
    else
        snprintf(buf, cap, "%.0f B", b);
    return buf;
}

qp_recipe_estimate *qp_recipe_estimate_new(const qp_recipe *r, const json_t *status, const qp_est_machine *m,
                                           const qp_est_coef *c, int threads)
{
    qp_recipe_estimate *e = qp_xcalloc(1, sizeof(*e));
    e->n = qp_recipe_stage_count(r);
    e->st = qp_xcalloc(e->n ? e->n : 1, sizeof(*e->st));
    e->mach = *m;
    e->coef = c;
    e->threads = threads;
    for (size_t i = 0; i < e->n; i++) {
        est_stage *s = &e->st[i];
        const qp_stage_decl *d = qp_recipe_stage(r, i);
        s->decl = d;
        const json_t *st = status ? json_object_get(status, d->id) : NULL;
        s->shown = !status || st != NULL;
        s->runs = !status || (json_is_string(st) && strcmp(json_string_value(st), "will run") == 0);
        const qp_est_art **inputs = qp_xcalloc(d->n_needs + 1, sizeof(*inputs));
        for (size_t k = 0; k < d->n_needs; k++)
            inputs[k] = &e->st[d->need_index[k]].out;
        const qp_est_art *ref = NULL;
        for (size_t k = 0; k < d->n_links; k++) {
            const qp_stage_decl *rd = e->st[d->links[k].index].decl;
            if (strcmp(d->links[k].param, "reference") == 0 && rd->n_needs > 0)
                ref = &e->st[rd->need_index[0]].out;
        }
        qp_est_input in = {
            .id = d->id, .kind = d->kind, .params = d->params, .recipe_dir = qp_recipe_dir(r),
            .n_inputs = d->n_needs, .inputs = inputs, .reference = ref, .mach = &e->mach, .coef = c,
            .threads = threads,
        };
        qp_estimate_stage(&in, &s->res, &s->out);
        free(inputs);
    }
    return e;
}

void qp_recipe_estimate_free(qp_recipe_estimate *e)
{
    if (!e)
        return;
    for (size_t i = 0; i < e->n; i++)
        qp_est_art_free(&e->st[i].out);
    free(e->st);
    free(e);
}

int qp_recipe_estimate_stage(const qp_recipe_estimate *e, const char *id, qp_est_result *out)
{
    for (size_t i = 0; i < e->n; i++)
        if (strcmp(e->st[i].decl->id, id) == 0) {
            *out = e->st[i].res;
            if (!e->st[i].runs) {
                out->seconds = 0;
                out->peak_rss = 0;
            }
            return 0;
        }
    return -1;
}

const qp_est_art *qp_recipe_estimate_output(const qp_recipe_estimate *e, const char *id)
{
    for (size_t i = 0; i < e->n; i++)
        if (strcmp(e->st[i].decl->id, id) == 0)
            return &e->st[i].out;
    return NULL;
}

static void fmt_time(char *buf, size_t cap, double s)
{
    if (s >= 3600)
        snprintf(buf, cap, "%.1fh", s / 3600);
    else if (s >= 120)
        snprintf(buf, cap, "%.1fm", s / 60);
    else
        snprintf(buf, cap, "%.1fs", s);
}

void qp_recipe_estimate_print(FILE *o, const qp_recipe_estimate *e)
{
    fprintf(o, "\nestimate (%d threads):\n  %-14s %-9s %-9s %9s %10s %10s  %s\n", e->threads, "stage", "kind", "status",
            "time", "peak RSS", "output", "dominant term");
    double total = 0, peak = 0;
    for (size_t i = 0; i < e->n; i++) {
        const est_stage *s = &e->st[i];
        if (!s->shown)
            continue;
        char t[32], rss[32], ob[32], dom[96] = "";
        double share = 0;
        const char *dn = qp_est_dominant(&s->res, &share);
        if (!s->res.known) {
            fprintf(o, "  %-14s %-9s %-9s %9s %10s %10s  %s\n", s->decl->id, s->decl->kind->name,
                    s->runs ? "will run" : "cached", "?", "?", "?", s->res.note);
            continue;
        }
        if (dn[0])
            snprintf(dom, sizeof(dom), "%s %.0f%%", dn, share * 100);
        if (s->res.rss_part && s->res.rss_part[0])
            snprintf(dom + strlen(dom), sizeof(dom) - strlen(dom), "%sRSS: %s", dom[0] ? "; " : "",
                     s->res.rss_part);
        fmt_time(t, sizeof(t), s->runs ? s->res.seconds : 0);
        qp_fmt_bytes(rss, sizeof(rss), s->runs ? (double)s->res.peak_rss : 0);
        qp_fmt_bytes(ob, sizeof(ob), (double)s->res.out_bytes);
        fprintf(o, "  %-14s %-9s %-9s %9s %10s %10s  %s\n", s->decl->id, s->decl->kind->name,
                s->runs ? "will run" : "cached", t, s->runs ? rss : "-", ob, s->runs ? dom : "(cached: 0)");
        if (s->runs && s->res.note[0])
            fprintf(o, "  %-14s %s\n", "", s->res.note);
        if (s->runs) {
            total += s->res.seconds;
            if ((double)s->res.peak_rss > peak)
                peak = (double)s->res.peak_rss;
        }
    }
    char t[32], p[32];
    fmt_time(t, sizeof(t), total);
    fprintf(o, "  total %s, largest peak RSS %s\n", t, qp_fmt_bytes(p, sizeof(p), peak));
    const qp_est_machine *m = &e->mach;
    fprintf(o, "machine%s: %s, %d threads: GEMM %.1f GFLOP/s; quantize Q4_K %.0f MB/s; dequantize Q4_K %.0f MB/s; "
               "bf16->f32 %.0f MB/s; SHA-256 %.0f MB/s; zstd %.0f/%.0f MB/s; disk read %.0f, write %.0f MB/s, "
               "past the page cache %.0f MB/s + %.0f ms\n",
            m->measured ? "" : " (defaults, not measured)", m->cpu, m->threads, m->gemm_gflops,
            m->quant_mbs[QP_EST_Q4K], m->deq_mbs[QP_EST_Q4K], m->convert_mbs, m->sha_mbs, m->zstd_c_mbs,
            m->zstd_d_mbs, m->disk_r_mbs, m->disk_w_mbs, m->disk_wd_mbs, m->disk_wd_fixed_ms);
    double slow = qp_est_slowdown(m, e->coef);
    if (slow > 1)
        fprintf(o, "the machine is shared: load %.2f on %d CPUs, times x %.2f (max(1, (load + 1 - %.1f) / cpus))\n",
                m->load, m->cpus, slow, e->coef->load_free);
}

json_t *qp_recipe_estimate_json(const qp_recipe_estimate *e)
{
    json_t *stages = json_object();
    for (size_t i = 0; i < e->n; i++) {
        const est_stage *s = &e->st[i];
        if (!s->shown)
            continue;
        json_t *terms = json_object();
        for (size_t k = 0; k < s->res.n_terms; k++)
            json_object_set_new(terms, s->res.terms[k].name, json_real(s->res.terms[k].seconds));
        json_object_set_new(stages, s->decl->id,
                            json_pack("{s:s, s:b, s:b, s:f, s:I, s:I, s:s, s:o, s:s, s:s}", "kind",
                                      s->decl->kind->name, "known", s->res.known, "runs", s->runs, "seconds",
                                      s->runs ? s->res.seconds : 0.0, "peak_rss",
                                      (json_int_t)(s->runs ? s->res.peak_rss : 0), "output_bytes",
                                      (json_int_t)s->res.out_bytes, "dominant", qp_est_dominant(&s->res, NULL),
                                      "terms", terms, "rss_part", s->res.rss_part ? s->res.rss_part : "", "note",
                                      s->res.note));
    }
    json_t *mj = qp_est_machine_to_json(&e->mach);
    json_object_set_new(mj, "load", json_real(e->mach.load));
    json_object_set_new(mj, "slowdown", json_real(qp_est_slowdown(&e->mach, e->coef)));
    return json_pack("{s:o, s:o}", "stages", stages, "machine", mj);
}

int qp_recipe_estimate_check(const qp_recipe_estimate *e, uint64_t available, const char *source)
{
    if (available == 0)
        return 0;   /* nothing known about the machine: no refusal */
    for (size_t i = 0; i < e->n; i++) {
        const est_stage *s = &e->st[i];
        if (!s->shown || !s->runs || !s->res.known || s->res.peak_rss <= available)
            continue;
        char need[32], have[32];
        return qp_error_set(QP_ERROR,
                            "stage '%s' (%s) is predicted to need %s of memory at its peak (%s), but %s is "
                            "available (%s); %s, or pass --ignore-memory to run it anyway",
                            s->decl->id, s->decl->kind->name, qp_fmt_bytes(need, sizeof(need), (double)s->res.peak_rss),
                            s->res.rss_part && s->res.rss_part[0] ? s->res.rss_part : "its working set",
                            qp_fmt_bytes(have, sizeof(have), (double)available), source ? source : "?",
                            s->res.advice[0] ? s->res.advice : "use a smaller model or a machine with more memory");
    }
    return 0;
}

static uint64_t read_u64_file(const char *path, int *ok)
{
    *ok = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char buf[64];
    uint64_t v = 0;
    if (fgets(buf, sizeof(buf), f) && strncmp(buf, "max", 3) != 0) {
        char *end;
        v = strtoull(buf, &end, 10);
        *ok = end != buf;
    }
    fclose(f);
    return v;
}

uint64_t qp_mem_available(const char **source)
{
    uint64_t avail = 0;
    const char *src = "MemAvailable";
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof(line), f)) {
            unsigned long long kb;
            if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
                avail = (uint64_t)kb * 1024;
                break;
            }
        }
        fclose(f);
    }
    static const struct { const char *max, *cur, *name; } cg[] = {
        {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current", "cgroup memory.max"},
        {"/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes",
         "cgroup memory.limit_in_bytes"},
    };
    for (size_t i = 0; i < 2; i++) {
        int ok_max, ok_cur;
        uint64_t max = read_u64_file(cg[i].max, &ok_max), cur = read_u64_file(cg[i].cur, &ok_cur);
        if (!ok_max || max >= (UINT64_C(1) << 60))
            continue;   /* no limit */
        uint64_t left = ok_cur && cur < max ? max - cur : max;
        if (avail == 0 || left < avail) {
            avail = left;
            src = cg[i].name;
        }
        break;
    }
    if (source)
        *source = src;
    return avail;
}
