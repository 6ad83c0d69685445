/* `qpipe log [RECIPE]`: run records from the provenance branch, newest first. */
#include "common/error.h"
#include "common/fsutil.h"
#include "cli/cli.h"
#include "pipeline/provenance.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    int json;
    size_t count;
} log_state;

static int print_record(void *ud, const char *commit, long long when, const json_t *rec)
{
    log_state *st = ud;
    st->count++;
    if (st->json) {
        json_t *ev = json_pack("{s:s, s:I, s:O}", "commit", commit, "time", (json_int_t)when, "record", rec);
        char *s = json_dumps(ev, JSON_COMPACT | JSON_SORT_KEYS);
        printf("%s\n", s);
        free(s);
        json_decref(ev);
        return 0;
    }
    char date[32];
    time_t t = (time_t)when;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(date, sizeof(date), "%Y-%m-%d %H:%M", &tm);
    size_t ran = 0, cached = 0;
    const char *id;
    json_t *s;
    char metrics[256] = "";
    json_object_foreach(json_object_get(rec, "stages"), id, s) {
        const char *status = json_string_value(json_object_get(s, "status"));
        ran += status && !strcmp(status, "ran");
        cached += status && !strcmp(status, "cached");
        const char *k;
        json_t *v;
        json_object_foreach(json_object_get(s, "metrics"), k, v) {
            size_t len = strlen(metrics);
            if (json_is_number(v) && len + strlen(id) + strlen(k) + 20 < sizeof(metrics))
                snprintf(metrics + len, sizeof(metrics) - len, "%s%s.%s=%.5g", len ? " " : "", id, k,
                         json_number_value(v));
        }
    }
    printf("%.12s  %s  %-20s %-8s %zu ran, %zu cached  %s\n", commit, date,
           json_string_value(json_object_get(rec, "name")), json_string_value(json_object_get(rec, "verdict")), ran,
           cached, metrics);
    return 0;
}

int qp_cli_log(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'J'}, {"branch", required_argument, NULL, 'b'}, {NULL, 0, NULL, 0}};
    log_state st = {0};
    const char *branch = NULL;
    long limit = 0;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "n:", opts, NULL)) != -1) {
        if (c == 'n') {
            char *end = NULL;
            errno = 0;
            limit = strtol(optarg, &end, 10);
            if (errno || end == optarg || *end || limit < 0) {
                fprintf(stderr, "qpipe: -n %s: expected a number of records (0 for all) (see 'qpipe help')\n", optarg);
                return 2;
            }
        }
        else if (c == 'J')
            st.json = 1;
        else if (c == 'b')
            branch = optarg;
        else
            return 2;
    }
    const char *recipe = optind < argc ? argv[optind] : NULL;
    if (recipe && !qp_path_exists(recipe)) {
        fprintf(stderr, "qpipe: %s: no such recipe file\n", recipe);
        return 2;
    }
    int rc = qp_provenance_log(recipe ? recipe : ".", branch, recipe, limit > 0 ? (size_t)limit : 0, print_record, &st);
    if (rc) {
        fprintf(stderr, "qpipe: %s\n", qp_error_last());
        return qp_exit_status(rc);
    }
    if (st.count == 0 && !st.json)
        printf("no run records%s%s\n", recipe ? " for " : "", recipe ? recipe : "");
    return 0;
}
