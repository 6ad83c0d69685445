/* quantize + package end to end against llama.cpp's own files: the house
 * model exported at F32, every block type with and without the importance
 * matrix (--pure), and the mixes, each re-read with qpipe's GGUF reader and,
 * with qpipe's own qpipe.* keys dropped, byte-identical to the file
 * llama.cpp wrote — header, metadata, tensor infos, data. */
#include "tests/support/testutil.h"
#include "tests/support/run_recipe.h"

#include "cache/cache.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "model/gguf.h"
#include "model/gguf_writer.h"
#include "pipeline/recipe.h"
#include "pipeline/runner.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *pure_types[] = {"Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"};
static const char *mixes[] = {"Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K"};

static char *dir;

/* Rewrites `ours` without its qpipe.* keys into `path`.  The one value that
 * cannot match is quantize.imatrix.file: llama-quantize records the path it
 * was given on the machine that made the oracle; it is taken from the
 * oracle (the key's position and the other three are still compared). */
static void strip_qpipe_keys(const char *ours, const char *path, const char *oracle)
{
    qp_gguf *g = NULL, *o = NULL;
    qp_gguf_writer *w = NULL;
    assert_int_equal(qp_gguf_open(&g, ours), 0);
    assert_int_equal(qp_gguf_open(&o, oracle), 0);
    assert_int_equal(qp_gguf_writer_new(&w, path), 0);
    size_t kept = 0;
    for (size_t i = 0; i < qp_gguf_kv_count(g); i++) {
        const char *k = qp_gguf_kv_key(g, i);
        if (strncmp(k, "qpipe.", 6) == 0)
            continue;
        if (strcmp(k, "quantize.imatrix.file") == 0) {
            const char *s = NULL;
            uint64_t n = 0;
            assert_int_equal(qp_gguf_get_string(o, k, &s, &n), 0);
            assert_int_equal(qp_gguf_writer_add_string(w, k, s, (size_t)n), 0);
        } else {
            assert_int_equal(qp_gguf_writer_copy_kv(w, g, i), 0);
        }
        kept++;
    }
    qp_gguf_free(o);
    assert_true(kept + 3 <= qp_gguf_kv_count(g));  /* qpipe.version, stage_key, source_artifact … */
    for (size_t i = 0; i < qp_gguf_tensor_count(g); i++) {
        const qp_gguf_tensor *t = qp_gguf_tensor_at(g, i);
        assert_int_equal(qp_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, t->nbytes), 0);
    }
    assert_int_equal(qp_gguf_writer_finish(w), 0);
    qp_gguf_free(g);
}

static void assert_same_file(const char *a, const char *b)
{
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    assert_int_equal(qp_read_file(a, &x, &nx), 0);
    assert_int_equal(qp_read_file(b, &y, &ny), 0);
    if (nx != ny || memcmp(x, y, nx) != 0) {
        size_t i = 0;
        while (i < nx && i < ny && x[i] == y[i])
            i++;
        fail_msg("%s differs from %s (sizes %zu / %zu, first difference at byte %zu)", a, b, nx, ny, i);
    }
    free(x);
    free(y);
}

static int setup(void **state)
{
    (void)state;
    dir = qp_test_tmpdir();
    char *models = qp_test_shared_path("models/house-llama");
    char *imatrix = qp_test_shared_path("vectors/house-llama/imatrix.dat");
    char *recipe = qp_path_join(dir, "r.yaml");
    FILE *f = fopen(recipe, "w");
    fprintf(f, "qpipe: 1\nname: oracle\nstages:\n  model: {uses: fetch, with: {source: \"%s\"}}\n", models);
    fprintf(f, "  pf32: {uses: package, needs: [model], with: {format: gguf, out: out/F32, name: F32}}\n");
    for (size_t i = 0; i < sizeof(pure_types) / sizeof(pure_types[0]); i++)
        for (int im = 0; im < 2; im++) {
            if (im && !strcmp(pure_types[i], "Q8_0"))
                continue;  /* llama.cpp wrote no Q8_0-imatrix: Q8_0 ignores it */
            const char *t = pure_types[i];
            fprintf(f, "  q_%s%s: {uses: quantize, needs: [model], with: {method: gguf, type: %s, pure: true%s%s%s}}\n",
                    t, im ? "_i" : "", t, im ? ", imatrix: \"" : "", im ? imatrix : "", im ? "\"" : "");
            fprintf(f, "  p_%s%s: {uses: package, needs: [q_%s%s], with: {format: gguf, out: out/%s%s, name: %s%s}}\n",
                    t, im ? "_i" : "", t, im ? "_i" : "", t, im ? "-imatrix" : "", t, im ? "-imatrix" : "");
        }
    for (size_t i = 0; i < sizeof(mixes) / sizeof(mixes[0]); i++) {
        fprintf(f, "  m_%s: {uses: quantize, needs: [model], with: {method: gguf, type: %s}}\n", mixes[i], mixes[i]);
        fprintf(f, "  pm_%s: {uses: package, needs: [m_%s], with: {format: gguf, out: out/mix-%s, name: mix-%s}}\n",
                mixes[i], mixes[i], mixes[i], mixes[i]);
    }
    fclose(f);
    char *cache_dir = qp_path_join(dir, "cache");
    int rc = qp_test_run_recipe(recipe, cache_dir);
    free(cache_dir);
    free(recipe);
    free(models);
    free(imatrix);
    return rc ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    qp_test_rmtree(dir);
    free(dir);
    return 0;
}

static void check_one(const char *name)
{
    char rel[128];
    snprintf(rel, sizeof(rel), "out/%s/%s.gguf", name, name);
    char *ours = qp_path_join(dir, rel);
    snprintf(rel, sizeof(rel), "stripped-%s.gguf", name);
    char *stripped = qp_path_join(dir, rel);
    snprintf(rel, sizeof(rel), "vectors/house-llama/%s.gguf", name);
    char *oracle = qp_test_shared_path(rel);
    strip_qpipe_keys(ours, stripped, oracle);
    assert_same_file(stripped, oracle);
    /* the package carries its card and provenance */
    snprintf(rel, sizeof(rel), "out/%s/README.md", name);
    char *card = qp_path_join(dir, rel);
    assert_true(qp_path_exists(card));
    free(card);
    free(ours);
    free(stripped);
    free(oracle);
}

static void test_f32(void **state)
{
    (void)state;
    check_one("F32");
}

static void test_pure_types(void **state)
{
    (void)state;
    char name[64];
    for (size_t i = 0; i < sizeof(pure_types) / sizeof(pure_types[0]); i++) {
        check_one(pure_types[i]);
        if (strcmp(pure_types[i], "Q8_0") != 0) {
            snprintf(name, sizeof(name), "%s-imatrix", pure_types[i]);
            check_one(name);
        }
    }
}

static void test_mixes(void **state)
{
    (void)state;
    char name[64];
    for (size_t i = 0; i < sizeof(mixes) / sizeof(mixes[0]); i++) {
        snprintf(name, sizeof(name), "mix-%s", mixes[i]);
        check_one(name);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f32),
        cmocka_unit_test(test_pure_types),
        cmocka_unit_test(test_mixes),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
