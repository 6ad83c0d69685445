/* Benchmark: wall time of a fully cached (no-op) `qpipe run` of a 7-stage
 * recipe, fetching the house model (goal ≤ 50 ms).  The first run fills a
 * fresh cache; then 10 reruns are timed and the median reported. */
#include "common/fsutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(void)
{
    const char *qpipe = getenv("QPIPE") ? getenv("QPIPE") : "./qpipe";
    const char *shared = getenv("QPIPE_SHARED") ? getenv("QPIPE_SHARED") : "../shared";
    char shared_abs[4096];
    if (!realpath(shared, shared_abs)) {
        fprintf(stderr, "bench_noop: shared directory %s not found (set QPIPE_SHARED)\n", shared);
        return 1;
    }
    char tmpl[] = "/tmp/qpipe-bench-noop.XXXXXX";
    if (!mkdtemp(tmpl))
        return 1;
    char *recipe = qp_strfmt("%s/r.yaml", tmpl);
    FILE *f = fopen(recipe, "w");
    fprintf(f,
            "qpipe: 1\nname: noop7\nstages:\n"
            "  model: {uses: fetch, with: {source: \"%s/models/house-llama\"}}\n"
            "  text: {uses: fetch, with: {source: \"%s/data/shakespeare/valid.txt\"}}\n"
            "  words: {uses: run, needs: [text], with: {cmd: \"echo '{\\\"w\\\": 1}' > w.json\", metrics: w.json}}\n"
            "  lines: {uses: run, needs: [text], with: {cmd: \"echo '{\\\"l\\\": 2}' > l.json\", metrics: l.json}}\n"
            "  both: {uses: run, needs: [words, lines, model], with: {cmd: \"true\"}}\n"
            "  gate_w: {uses: gate, needs: [words], with: {max_w: 5}}\n"
            "  gate_l: {uses: gate, needs: [lines], with: {max_l: 5}}\n",
            shared_abs, shared_abs);
    fclose(f);
    char *cmd = qp_strfmt("cd %s && QPIPE_CACHE=%s/cache %s run r.yaml --no-provenance >/dev/null", tmpl, tmpl, qpipe);
    if (system(cmd) != 0) {
        fprintf(stderr, "bench_noop: first run failed: %s\n", cmd);
        return 1;
    }
    double t[10];
    for (int i = 0; i < 10; i++) {
        double t0 = qp_now();
        if (system(cmd) != 0)
            return 1;
        t[i] = (qp_now() - t0) * 1e3;
    }
    qsort(t, 10, sizeof(t[0]), cmp_double);
    printf("no-op rerun of a 7-stage recipe: median %.1f ms, best %.1f ms (goal <= 50 ms; includes sh -c startup)\n",
           (t[4] + t[5]) / 2, t[0]);
    qp_rm_rf(tmpl);
    free(cmd);
    free(recipe);
    return 0;
}
