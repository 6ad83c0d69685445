/* The layer-by-layer API (embed / layer / head) and the product-input
 * observer give exactly what the whole forward pass gives. */
#include "tests/support/testutil.h"

#include "common/fsutil.h"
#include "model/config.h"
#include "common/error.h"
#include "model/llama.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    size_t calls[4];
    size_t dims[4];
    double sum[4];
} obs_log;

static void observe(void *ud, int layer, qp_llama_site site, const float *x, size_t n, size_t dim)
{
    obs_log *o = ud;
    (void)layer;
    o->calls[site]++;
    o->dims[site] = dim;
    for (size_t i = 0; i < n * dim; i++)
        o->sum[site] += x[i];
}

static void test_layers_equal_forward(void **state)
{
    (void)state;
    char *dir = qp_test_shared_path("models/house-llama");
    char *cfg = qp_path_join(dir, "config.json");
    qp_checkpoint *ck = NULL;
    qp_llama_config c;
    qp_llama_hparams hp;
    assert_int_equal(qp_checkpoint_open(&ck, dir), 0);
    assert_int_equal(qp_llama_config_load(&c, cfg), 0);
    qp_llama_hparams_from_config(&hp, &c);
    qp_weight_source src;
    qp_weight_source_checkpoint(&src, ck);
    qp_llama *m = NULL;
    assert_int_equal(qp_llama_new(&m, &hp, &src, NULL), 0);
    const size_t n = 100, V = (size_t)hp.vocab, D = (size_t)hp.hidden;
    int32_t tokens[100];
    for (size_t i = 0; i < n; i++)
        tokens[i] = (int32_t)((i * 37 + 1) % V);
    float *a = malloc(n * V * sizeof(float)), *b = malloc(n * V * sizeof(float)), *x = malloc(n * D * sizeof(float));
    obs_log o1, o2;
    memset(&o1, 0, sizeof(o1));
    memset(&o2, 0, sizeof(o2));
    assert_int_equal(qp_llama_forward_observed(m, tokens, n, a, observe, &o1), 0);
    assert_int_equal(qp_llama_embed(m, tokens, n, x), 0);
    for (int l = 0; l < hp.n_layers; l++)
        assert_int_equal(qp_llama_layer(m, l, x, n, observe, &o2), 0);
    assert_int_equal(qp_llama_head(m, x, n, b), 0);
    assert_memory_equal(a, b, n * V * sizeof(float));
    float *c3 = malloc(n * V * sizeof(float));
    assert_int_equal(qp_llama_forward(m, tokens, n, c3), 0);
    assert_memory_equal(a, c3, n * V * sizeof(float));
    for (int s = 0; s < 4; s++) {
        assert_int_equal(o1.calls[s], (size_t)hp.n_layers);
        assert_true(o1.sum[s] == o2.sum[s]);
    }
    assert_int_equal(o1.dims[QP_SITE_QKV], D);
    assert_int_equal(o1.dims[QP_SITE_O], (size_t)(hp.n_heads * hp.head_dim));
    assert_int_equal(o1.dims[QP_SITE_GATE_UP], D);
    assert_int_equal(o1.dims[QP_SITE_DOWN], (size_t)hp.intermediate);
    assert_int_equal(qp_llama_layer(m, hp.n_layers, x, n, NULL, NULL), QP_EUSAGE);

    /* layer_observe: up to site `last`, exactly what the whole layer shows
     * the observer; nothing after it; x untouched */
    const int lo = hp.n_layers - 1;
    float *x0 = malloc(n * D * sizeof(float)), *xc = malloc(n * D * sizeof(float));
    assert_int_equal(qp_llama_embed(m, tokens, n, x0), 0);
    memcpy(xc, x0, n * D * sizeof(float));
    obs_log full;
    memset(&full, 0, sizeof(full));
    assert_int_equal(qp_llama_layer(m, lo, xc, n, observe, &full), 0);
    for (int last = QP_SITE_QKV; last <= QP_SITE_DOWN; last++) {
        obs_log part;
        memset(&part, 0, sizeof(part));
        memcpy(xc, x0, n * D * sizeof(float));
        assert_int_equal(qp_llama_layer_observe(m, lo, xc, n, (qp_llama_site)last, observe, &part), 0);
        assert_memory_equal(xc, x0, n * D * sizeof(float));
        for (int s = 0; s < 4; s++) {
            assert_int_equal(part.calls[s], s <= last ? 1 : 0);
            if (s <= last)
                assert_true(part.sum[s] == full.sum[s]);
        }
    }
    assert_int_equal(qp_llama_layer_observe(m, hp.n_layers, x0, n, QP_SITE_O, observe, &o2), QP_EUSAGE);
    free(x0);
    free(xc);
    assert_int_equal(qp_llama_reload_layer(m, 0), 0);
    assert_int_equal(qp_llama_forward(m, tokens, n, c3), 0);
    assert_memory_equal(a, c3, n * V * sizeof(float));
    free(a);
    free(b);
    free(c3);
    free(x);
    qp_llama_free(m);
    qp_checkpoint_free(ck);
    free(cfg);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_layers_equal_forward)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
