/* `qpipe cache stats | verify | gc [--max-size SIZE]`. */
#include "cache/cache.h"
#include "common/error.h"
#include "cli/cli.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static void print_problem(void *ud, const char *line)
{
    (void)ud;
    printf("  problem: %s\n", line);
}

static const char *human(uint64_t b, char *buf, size_t n)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)b;
    int i = 0;
    while (v >= 1024 && i < 4) {
        v /= 1024;
        i++;
    }
    snprintf(buf, n, i ? "%.1f %s" : "%.0f %s", v, u[i]);
    return buf;
}

int qp_cli_cache(int argc, char **argv, const char *default_dir)
{
    static const struct option opts[] = {{"cache-dir", required_argument, NULL, 'c'},
                                         {"max-size", required_argument, NULL, 'm'},
                                         {NULL, 0, NULL, 0}};
    const char *dir = default_dir, *max_size = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'c')
            dir = optarg;
        else if (c == 'm')
            max_size = optarg;
        else
            return 2;
    }
    if (optind != argc - 1) {
        fprintf(stderr, "qpipe: cache needs one of: stats, verify, gc (see 'qpipe help')\n");
        return 2;
    }
    const char *sub = argv[optind];
    if (strcmp(sub, "stats") && strcmp(sub, "verify") && strcmp(sub, "gc")) {
        fprintf(stderr, "qpipe: cache %s: unknown sub-command; use stats, verify or gc\n", sub);
        return 2;
    }
    uint64_t max_bytes = 0;
    if (max_size && qp_parse_size(max_size, &max_bytes) != 0) {
        fprintf(stderr, "qpipe: %s\n", qp_error_last());
        return 2;
    }
    qp_cache *cache = NULL;
    int rc = qp_cache_open(&cache, dir);
    char a[32], b[32];
    if (rc == 0 && !strcmp(sub, "stats")) {
        qp_cache_stats st;
        if ((rc = qp_cache_stats_get(cache, &st)) == 0)
            printf("cache %s\n  objects: %llu (%s on disk, %s uncompressed)\n  actions: %llu\n"
                   "  file digests memoised: %llu\n  temp files: %llu\n",
                   dir, (unsigned long long)st.objects, human(st.object_disk_bytes, a, sizeof(a)),
                   human(st.object_raw_bytes, b, sizeof(b)), (unsigned long long)st.actions,
                   (unsigned long long)st.memo_entries, (unsigned long long)st.tmp_files);
    } else if (rc == 0 && !strcmp(sub, "verify")) {
        size_t problems = 0;
        if ((rc = qp_cache_verify(cache, print_problem, NULL, &problems)) == 0) {
            printf("cache %s: %zu problem%s\n", dir, problems, problems == 1 ? "" : "s");
            if (problems)
                rc = qp_error_set(QP_ECORRUPT, "cache %s: %zu problems found and removed; rerun to recompute", dir,
                                  problems);
        }
    } else if (rc == 0) {
        qp_cache_gc_result res = {0};
        if ((rc = qp_cache_gc(cache, max_bytes, &res)) == 0)
            printf("cache %s: removed %llu objects (%s), %llu actions\n", dir,
                   (unsigned long long)res.removed_objects, human(res.removed_bytes, a, sizeof(a)),
                   (unsigned long long)res.removed_actions);
    }
    qp_cache_free(cache);
    if (rc) {
        fflush(stdout);
        fprintf(stderr, "qpipe: %s\n", qp_error_last());
        return qp_exit_status(rc);
    }
    return 0;
}
