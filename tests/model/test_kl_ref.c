/* qp_kl_ref (model/eval.h): KL(p‖q) from stored reference distributions
 * equals a naive double-precision computation (two softmaxes), is 0 for
 * identical logits and invariant to a constant shift of the logits. */
#include "tests/support/testutil.h"

#include "common/error.h"
#include "common/rng.h"
#include "model/eval.h"

#include <math.h>
#include <stdlib.h>

static double naive_kl(const float *zp, const float *zq, size_t V)
{
    double mp = zp[0], mq = zq[0], sp = 0, sq = 0, kl = 0;
    for (size_t v = 1; v < V; v++) {
        mp = zp[v] > mp ? zp[v] : mp;
        mq = zq[v] > mq ? zq[v] : mq;
    }
    for (size_t v = 0; v < V; v++) {
        sp += exp(zp[v] - mp);
        sq += exp(zq[v] - mq);
    }
    for (size_t v = 0; v < V; v++) {
        double lp = zp[v] - mp - log(sp), lq = zq[v] - mq - log(sq);
        kl += exp(lp) * (lp - lq);
    }
    return kl;
}

static void test_against_naive(void **state)
{
    (void)state;
    enum { ROWS = 7, V = 1000 };
    float *ref = malloc(ROWS * V * sizeof(float)), *q = malloc(ROWS * V * sizeof(float));
    qp_rng rng;
    qp_rng_seed(&rng, 42);
    for (size_t i = 0; i < ROWS * V; i++) {
        ref[i] = (float)(8.0 * ((double)qp_rng_below(&rng, 1u << 20) / (1u << 20) - 0.5));
        q[i] = ref[i] + (float)(0.5 * ((double)qp_rng_below(&rng, 1u << 20) / (1u << 20) - 0.5));
    }
    qp_kl_ref *r = NULL;
    assert_int_equal(qp_kl_ref_new(&r, ROWS, V), 0);
    assert_int_equal(qp_kl_ref_set(r, 0, ref, 3), 0);
    assert_int_equal(qp_kl_ref_set(r, 3, ref + 3 * V, ROWS - 3), 0);
    double want = 0;
    for (size_t t = 0; t < ROWS; t++)
        want += naive_kl(ref + t * V, q + t * V, V);
    double got = qp_kl_ref_sum(r, 0, q, ROWS);
    assert_true(want > 0.01);
    assert_float_equal(got, want, 1e-6 * want);
    /* a sub-range of rows */
    double want2 = naive_kl(ref + 4 * V, q + 4 * V, V) + naive_kl(ref + 5 * V, q + 5 * V, V);
    assert_float_equal(qp_kl_ref_sum(r, 4, q + 4 * V, 2), want2, 1e-6 * want2);
    /* identical logits: 0 (up to float storage of p), shifted logits: the same KL */
    assert_true(qp_kl_ref_sum(r, 0, ref, ROWS) < 1e-6);
    for (size_t i = 0; i < ROWS * V; i++)
        q[i] += 3.0f;
    assert_float_equal(qp_kl_ref_sum(r, 0, q, ROWS), got, 1e-5 * want);
    /* rows past the reference are refused */
    assert_int_equal(qp_kl_ref_set(r, ROWS - 1, ref, 2), QP_ERROR);
    qp_kl_ref_free(r);
    free(ref);
    free(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_naive),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
