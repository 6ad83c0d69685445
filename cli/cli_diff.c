/* `qpipe diff RUN_A RUN_B`: two run records from the provenance branch side
 * by side — parameters, inputs and metrics that differ, with the change of
 * every numeric metric (like `dvc metrics diff`). */
#include "common/error.h"
#include "common/alloc.h"
#include "cli/cli.h"
#include "pipeline/provenance.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *show(const json_t *v)
{
    if (!v)
        return qp_xstrdup("-");
    if (json_is_string(v))
        return qp_xstrdup(json_string_value(v));
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(8));
    return s ? s : qp_xstrdup("?");
}

static int same(const json_t *a, const json_t *b)
{
    return (!a && !b) || json_equal(a, b);
}

/* The keys of a ∪ b, in the order a then b meets them (a new object). */
static json_t *key_union(const json_t *a, const json_t *b)
{
    json_t *keys = json_object();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)a, k, v)
        json_object_set_new(keys, k, json_true());
    json_object_foreach((json_t *)b, k, v)
        json_object_set_new(keys, k, json_true());
    return keys;
}

/* Rows of one section (params / inputs / metrics) for every stage of a ∪ b. */
static size_t diff_section(const json_t *sa, const json_t *sb, const char *section, int all)
{
    size_t rows = 0;
    json_t *ids = key_union(sa, sb);
    const char *id;
    json_t *v;
    json_object_foreach(ids, id, v) {
        const json_t *xa = json_object_get(json_object_get(sa, id), section);
        const json_t *xb = json_object_get(json_object_get(sb, id), section);
        json_t *keys = key_union(xa, xb);
        const char *k;
        json_t *kv;
        json_object_foreach(keys, k, kv) {
            const json_t *va = json_object_get(xa, k), *vb = json_object_get(xb, k);
            if (same(va, vb) && !all)
                continue;
            char *a = show(va), *b = show(vb), change[48] = "";
            if (json_is_number(va) && json_is_number(vb)) {
                double d = json_number_value(vb) - json_number_value(va);
                snprintf(change, sizeof(change), "%+.6g", d);
                if (json_number_value(va) != 0)
                    snprintf(change + strlen(change), sizeof(change) - strlen(change), " (%+.2f%%)",
                             100.0 * d / fabs(json_number_value(va)));
            }
            printf("  %-8s %-14s %-22s %-24.24s %-24.24s %s\n", section, id, k, a, b, change);
            free(a);
            free(b);
            rows++;
        }
        json_decref(keys);
    }
    json_decref(ids);
    return rows;
}

int qp_cli_diff(int argc, char **argv)
{
    static const struct option opts[] = {
        {"all", no_argument, NULL, 'a'}, {"branch", required_argument, NULL, 'b'}, {NULL, 0, NULL, 0}};
    int all = 0, c;
    const char *branch = NULL;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'a')
            all = 1;
        else if (c == 'b')
            branch = optarg;
        else
            return 2;
    }
    if (argc - optind != 2) {
        fprintf(stderr, "qpipe: diff needs two run records (commit ids from 'qpipe log', or qpipe/provenance~N)\n");
        return 2;
    }
    json_t *ra = NULL, *rb = NULL;
    int rc = qp_provenance_read(&ra, ".", branch, argv[optind]);
    if (rc == 0)
        rc = qp_provenance_read(&rb, ".", branch, argv[optind + 1]);
    if (rc) {
        fprintf(stderr, "qpipe: %s\n", qp_error_last());
        json_decref(ra);
        return qp_exit_status(rc);
    }
    printf("  %-8s %-14s %-22s %-24s %-24s %s\n", "section", "stage", "name", argv[optind], argv[optind + 1], "change");
    const json_t *sa = json_object_get(ra, "stages"), *sb = json_object_get(rb, "stages");
    size_t n = 0;
    n += diff_section(sa, sb, "params", all);
    n += diff_section(sa, sb, "inputs", all);
    n += diff_section(sa, sb, "metrics", all);
    char *va = show(json_object_get(ra, "verdict")), *vb = show(json_object_get(rb, "verdict"));
    printf("  verdict: %s -> %s; recipe %.12s -> %.12s; %zu difference%s\n", va, vb,
           json_string_value(json_object_get(ra, "recipe_digest")), json_string_value(json_object_get(rb, "recipe_digest")),
           n, n == 1 ? "" : "s");
    free(va);
    free(vb);
    json_decref(ra);
    json_decref(rb);
    return 0;
}
