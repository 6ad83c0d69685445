/* Shared by the tests/stages package oracle tests: a GGUF that qpipe
 * packaged, with its qpipe.* keys dropped, must be byte-identical to the
 * file llama.cpp wrote. */
#ifndef QP_TESTS_STAGES_PACKAGE_ORACLE_H
#define QP_TESTS_STAGES_PACKAGE_ORACLE_H

#include "tests/support/testutil.h"

#include "common/error.h"
#include "common/fsutil.h"
#include "model/gguf.h"
#include "model/gguf_writer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* dir/out/NAME/NAME.gguf (stripped) == vectors/house-llama/SUB NAME.gguf,
 * and the package has its card */
static inline void package_oracle_check(const char *dir, const char *name, const char *sub)
{
    char rel[160];
    snprintf(rel, sizeof(rel), "out/%s/%s.gguf", name, name);
    char *ours = qp_path_join(dir, rel);
    snprintf(rel, sizeof(rel), "stripped-%s.gguf", name);
    char *stripped = qp_path_join(dir, rel);
    snprintf(rel, sizeof(rel), "vectors/house-llama/%s%s.gguf", sub, name);
    char *oracle = qp_test_shared_path(rel);
    strip_qpipe_keys(ours, stripped, oracle);
    assert_same_file(stripped, oracle);
    snprintf(rel, sizeof(rel), "out/%s/README.md", name);
    char *card = qp_path_join(dir, rel);
    assert_true(qp_path_exists(card));
    free(card);
    free(ours);
    free(stripped);
    free(oracle);
}

#endif
