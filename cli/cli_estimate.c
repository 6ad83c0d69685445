/* `qpipe plan --estimate` (the plan, then each stage's predicted time, peak
 * RSS and output bytes: pipeline/estimate.h) and the memory check `qpipe
 * run` makes before its first stage. */
#include "cli/cli.h"
#include "common/error.h"
#include "pipeline/estimate.h"

#include <stdio.h>
#include <stdlib.h>

/* plan's statuses, {stage id: status}, collected from the runner */
static void collect_status(void *ud, const char *id, const char *key, const char *output, const json_t *desc,
                           const char *status)
{
    (void)key, (void)output, (void)desc;
    json_object_set_new((json_t *)ud, id, json_string(status));
}

/* The statuses a plan of this run gives (nothing printed). */
static int plan_statuses(const qp_recipe *r, qp_cache *cache, const qp_run_options *o, json_t *status)
{
    qp_run_options p = *o;
    p.mode = QP_RUN_PLAN;
    p.json = 0;
    p.provenance = 0;
    p.on_stage = collect_status;
    p.on_stage_ud = status;
    p.out = fopen("/dev/null", "w");
    if (!p.out)
        return qp_error_errno(QP_ERROR, "/dev/null");
    int rc = qp_runner_run(r, cache, &p);
    fclose(p.out);
    return rc;
}

static uint64_t memory_available(const qp_cli_est_opts *eo, const char **source)
{
    if (eo->memory) {
        *source = "--memory";
        return eo->memory;
    }
    return qp_mem_available(source);
}

/* qpipe run: refuse before the first stage when one that will run is
 * predicted to exceed the memory available.  Only shapes are needed, so
 * no machine calibration is made; the plan (which stages are cached) is
 * asked only when some stage is over. */
int qp_cli_memory_check(const qp_recipe *r, qp_cache *cache, const qp_run_options *o, const qp_cli_est_opts *eo)
{
    if (eo->ignore_memory)
        return 0;
    const char *source = NULL;
    uint64_t avail = memory_available(eo, &source);
    qp_est_machine m;
    qp_est_machine_defaults(&m, o->threads);
    qp_recipe_estimate *e = qp_recipe_estimate_new(r, NULL, &m, &qp_est_coef_default, o->threads);
    int rc = qp_recipe_estimate_check(e, avail, source);
    qp_recipe_estimate_free(e);
    if (rc == 0)
        return 0;
    qp_error_clear();
    json_t *status = json_object();
    if ((rc = plan_statuses(r, cache, o, status)) == 0) {
        e = qp_recipe_estimate_new(r, status, &m, &qp_est_coef_default, o->threads);
        rc = qp_recipe_estimate_check(e, avail, source);
        qp_recipe_estimate_free(e);
    }
    json_decref(status);
    return rc;
}

/* qpipe plan --estimate: the plan as usual, then the table. */
int qp_cli_plan_estimate(const qp_recipe *r, qp_cache *cache, const qp_run_options *o, const qp_cli_est_opts *eo)
{
    json_t *status = json_object();
    qp_run_options p = *o;
    p.on_stage = collect_status;
    p.on_stage_ud = status;
    int rc = qp_runner_run(r, cache, &p);
    qp_est_machine m;
    int fresh = 0;
    if (rc == 0 && (rc = qp_est_machine_get(&m, cache, o->threads, eo->recalibrate, &fresh)) == 0) {
        qp_est_machine_load_now(&m);
        if (fresh && !o->json)
            printf("machine calibration: measured in %.1fs, cached in %s/meta/estimate\n", m.seconds,
                   qp_cache_dir(cache));
        qp_recipe_estimate *e = qp_recipe_estimate_new(r, status, &m, &qp_est_coef_default, o->threads);
        const char *source = NULL;
        uint64_t avail = memory_available(eo, &source);
        int over = qp_recipe_estimate_check(e, avail, source);
        if (o->json) {
            json_t *ev = qp_recipe_estimate_json(e);
            json_object_set_new(ev, "event", json_string("estimate"));
            json_object_set_new(ev, "memory_available", json_integer((json_int_t)avail));
            if (over)
                json_object_set_new(ev, "refuse", json_string(qp_error_last()));
            char *text = json_dumps(ev, JSON_COMPACT | JSON_SORT_KEYS);
            printf("%s\n", text);
            free(text);
            json_decref(ev);
        } else {
            qp_recipe_estimate_print(stdout, e);
            char b[32];
            if (over)
                printf("run would refuse: %s\n", qp_error_last());
            else if (avail)
                printf("memory available: %s (%s): every stage fits\n", qp_fmt_bytes(b, sizeof(b), (double)avail),
                       source);
        }
        qp_error_clear();
        qp_recipe_estimate_free(e);
    }
    json_decref(status);
    return rc;
}
