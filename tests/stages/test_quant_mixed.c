/* method mixed (stages/quant_mixed.c) on the house model, through the
 * stages: the budget of llama.cpp's Q4_K_M is met and filled, every weight
 * gets a ladder type and the artifact holds exactly the reported types, the
 * report adds up (lowest bytes + bytes added = stored bytes), a KLD target is
 * met as measured, results do not depend on the thread count, and the
 * recipe mistakes are refused with one line. */
#include "tests/stages/stage_test_helpers.h"

#include "quant/qtypes.h"
#include "stages/qtensor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* fetch + a small calibration (4 windows of 128 tokens) + `stages` */
static char *recipe(const char *stages)
{
    char *model = qp_test_shared_path("models/house-llama");
    char *train = qp_test_shared_path("data/shakespeare/train.txt");
    char *text = qp_strfmt("qpipe: 1\nname: mixed\nstages:\n"
                           "  model: {uses: fetch, with: {source: \"%s\"}}\n"
                           "  calib: {uses: calibrate, needs: [model], with: {dataset: \"%s\", samples: 4, "
                           "seq_len: 128, seed: 0}}\n%s",
                           model, train, stages);
    free(model);
    free(train);
    return text;
}

static void test_budget_of_q4_k_m(void **state)
{
    (void)state;
    char *text = recipe("  q4km: {uses: quantize, needs: [model, calib], with: {method: gguf, type: Q4_K_M}}\n"
                        "  mix: {uses: quantize, needs: [model, calib], with: {method: mixed, bpw_of: Q4_K_M, "
                        "windows: 2}}\n");
    assert_int_equal(run_recipe_threads(text, 2), 0);
    qp_artifact *q4 = load_output("q4km"), *mix = load_output("mix");
    double budget = metric(q4, "bpw"), bpw = metric(mix, "bpw");
    const json_t *rep = json_object_get(qp_artifact_meta_c(mix), "mixed");
    assert_non_null(rep);
    assert_true(bpw <= budget);
    assert_float_equal(json_number_value(json_object_get(rep, "max_bpw")), budget, 1e-12);
    assert_float_equal(json_number_value(json_object_get(rep, "bpw")), bpw, 1e-12);

    /* the artifact holds what the report chose; bytes add up */
    const json_t *sens = json_object_get(rep, "sensitivity");
    assert_int_equal(json_array_size(sens), 44);   /* 6 layers × 7 + embedding + lm_head */
    double lowest = 0, added = 0, stored = 0, kl_low = 0, kl_high = 0;
    size_t i;
    json_t *s;
    json_array_foreach(sens, i, s) {
        const char *name = json_string_value(json_object_get(s, "tensor"));
        char *entry = qp_strfmt("tensors/%s", name);
        const json_t *e = qp_artifact_find(mix, entry);
        free(entry);
        assert_non_null(e);
        assert_string_equal(json_string_value(json_object_get(e, "qtype")),
                            json_string_value(json_object_get(s, "chosen")));
        lowest += (double)json_integer_value(json_array_get(json_object_get(s, "bytes"), 0));
        stored += (double)json_integer_value(json_object_get(e, "size"));
        kl_low += json_number_value(json_array_get(json_object_get(s, "kld"), 0));
        kl_high += json_number_value(json_array_get(json_object_get(s, "kld"), 2));
    }
    json_t *r;
    json_array_foreach(json_object_get(rep, "raised"), i, r)
        added += json_number_value(json_object_get(r, "bytes_added"));
    assert_true(json_array_size(json_object_get(rep, "raised")) > 0);
    assert_float_equal(lowest + added, stored, 0.5);
    print_message("sum of per-weight KLD: Q4_K %.4g, Q6_K %.4g; kld lowest %.4g, mix %.4g, %zu raised\n", kl_low,
                  kl_high, json_number_value(json_object_get(rep, "kld_lowest")),
                  json_number_value(json_object_get(rep, "kld_mix")), json_array_size(json_object_get(rep, "raised")));
    /* Q6_K moves the outputs less than Q4_K, and the mix less than all-Q4_K */
    assert_true(kl_high < kl_low / 4);
    assert_true(json_number_value(json_object_get(rep, "kld_mix")) <
                json_number_value(json_object_get(rep, "kld_lowest")));
    /* the budget is filled: no ladder step left fits */
    double weights = bpw > 0 ? 8.0 * metric(mix, "bytes") / bpw : 0, slack = (budget - bpw) * weights / 8.0;
    json_array_foreach(sens, i, s) {
        const json_t *types = json_object_get(s, "types"), *bytes = json_object_get(s, "bytes");
        const char *chosen = json_string_value(json_object_get(s, "chosen"));
        size_t k = 0;
        while (k < json_array_size(types) && strcmp(json_string_value(json_array_get(types, k)), chosen))
            k++;
        for (size_t k2 = k + 1; k2 < json_array_size(types); k2++) {
            double cost = (double)(json_integer_value(json_array_get(bytes, k2)) -
                                   json_integer_value(json_array_get(bytes, k)));
            double gain = json_number_value(json_array_get(json_object_get(s, "kld"), k)) -
                          json_number_value(json_array_get(json_object_get(s, "kld"), k2));
            if (gain > 0)
                assert_true(cost > slack);
        }
    }
    qp_artifact_free(q4);
    qp_artifact_free(mix);
    free(text);
}

/* A KLD target, on layer 0 + embedding + lm_head only (the other layers
 * skipped, to keep the test short). */
static char *target_recipe(double max_kld)
{
    char *stage = qp_strfmt("  mix: {uses: quantize, needs: [model, calib], with: {method: mixed, max_kld: %.17g, "
                            "windows: 2, skip: [\"model.layers.[1-5].*\"]}}\n", max_kld);
    char *text = recipe(stage);
    free(stage);
    return text;
}

static void test_kld_target_and_threads(void **state)
{
    (void)state;
    /* unreachable: every weight ends at the top of the ladder, reported as not reached */
    char *text = target_recipe(1e-12);
    assert_int_equal(run_recipe_threads(text, 2), 0);
    free(text);
    qp_artifact *mix = load_output("mix");
    const json_t *rep = json_object_get(qp_artifact_meta_c(mix), "mixed");
    double lowest = json_number_value(json_object_get(rep, "kld_lowest"));
    double top = json_number_value(json_object_get(rep, "kld_mix"));
    assert_false(json_is_true(json_object_get(rep, "target_reached")));
    assert_int_equal(json_array_size(json_object_get(rep, "sensitivity")), 9);
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(rep, "sensitivity"), i, s)
        assert_string_equal(json_string_value(json_object_get(s, "chosen")), "Q6_K");
    print_message("kld all Q4_K %.4g, all Q6_K %.4g\n", lowest, top);
    assert_true(top < lowest / 4);
    qp_artifact_free(mix);

    /* met by the lowest type already: nothing measured one by one, nothing raised */
    text = target_recipe(lowest * 2);
    assert_int_equal(run_recipe_threads(text, 2), 0);
    free(text);
    mix = load_output("mix");
    rep = json_object_get(qp_artifact_meta_c(mix), "mixed");
    assert_false(json_is_true(json_object_get(rep, "sensitivity_measured")));
    assert_int_equal(json_array_size(json_object_get(rep, "raised")), 0);
    assert_float_equal(json_number_value(json_object_get(rep, "kld_mix")), lowest, 0);
    json_array_foreach(json_object_get(rep, "sensitivity"), i, s)
        assert_string_equal(json_string_value(json_object_get(s, "chosen")), "Q4_K");
    qp_artifact_free(mix);

    /* halfway: met as measured, by fewer raises */
    double target = (lowest + top) / 2;
    text = target_recipe(target);
    assert_int_equal(run_recipe_threads(text, 2), 0);
    mix = load_output("mix");
    rep = json_object_get(qp_artifact_meta_c(mix), "mixed");
    double got = json_number_value(json_object_get(rep, "kld_mix"));
    assert_true(got <= target);
    assert_true(json_is_true(json_object_get(rep, "target_reached")));
    size_t n_raised = json_array_size(json_object_get(rep, "raised"));
    print_message("target %.4g: kld %.4g after %zu raises\n", target, got, n_raised);
    assert_true(n_raised > 0 && n_raised < 18);
    const json_t *checks = json_object_get(rep, "checks");
    const json_t *last = json_array_get(checks, json_array_size(checks) - 1);
    assert_int_equal(json_integer_value(json_object_get(last, "raised")), (json_int_t)n_raised);
    assert_float_equal(json_number_value(json_object_get(last, "kld")), got, 0);
    assert_float_equal(metric(mix, "kld_calibration"), got, 0);
    /* the shortest measured prefix: one raise fewer was measured and missed */
    int missed_one_fewer = 0;
    json_array_foreach(checks, i, s)
        if ((size_t)json_integer_value(json_object_get(s, "raised")) == n_raised - 1)
            missed_one_fewer = json_number_value(json_object_get(s, "kld")) > target;
    assert_true(missed_one_fewer);
    char *digest2 = qp_strdup(json_string_value(json_object_get(outputs, "mix")));
    qp_artifact_free(mix);

    /* one thread, fresh cache: the same bytes */
    qp_cache_free(cache);
    char *c = qp_path_join(dir, "cache1");
    assert_int_equal(qp_cache_open(&cache, c), 0);
    free(c);
    assert_int_equal(run_recipe_threads(text, 1), 0);
    assert_string_equal(json_string_value(json_object_get(outputs, "mix")), digest2);
    free(digest2);
    free(text);
}

static void test_refusals(void **state)
{
    (void)state;
    static const struct { const char *with; const char *msg; } cases[] = {
        {"{method: mixed, ladder: [Q6_K, Q4_K], bpw_of: Q4_K_M}",
         "ladder: Q4_K does not have more bits than the type before it; list the types fewest bits first"},
        {"{method: mixed, ladder: [Q4_K], bpw_of: Q4_K_M}",
         "ladder: needs 2 to 8 llama.cpp block types, fewest bits first (e.g. [Q4_K, Q5_K, Q6_K])"},
        {"{method: mixed, ladder: [Q4_K, F16], bpw_of: Q4_K_M}",
         "ladder: 'F16' is not a llama.cpp block type such as Q4_K"},
        {"{method: mixed}", "method mixed needs a budget (max_bpw or bpw_of) or a target (max_kld, max_ppl_delta or max_ppl_ratio)"},
        {"{method: mixed, bpw_of: Q4_K_Z}", "bpw_of: Q4_K_Z is not a llama.cpp file type such as Q4_K_M"},
        {"{method: mixed, bpw_of: Q4_K_M, max_bpw: 5}", "give max_bpw or bpw_of, not both"},
        {"{method: mixed, max_kld: 0.01, override: [{match: '*', bits: 8}]}",
         "override 1: method mixed takes type:, not bits:"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *stage = qp_strfmt("  mix: {uses: quantize, needs: [model, calib], with: %s}\n", cases[i].with);
        char *text = recipe(stage);
        assert_int_equal(run_recipe_threads(text, 2), QP_EUSAGE);
        if (!strstr(qp_error_last(), cases[i].msg))
            fail_msg("case %zu: %s", i, qp_error_last());
        free(text);
        free(stage);
    }
    /* without calibration windows there is nothing to measure on */
    char *model = qp_test_shared_path("models/house-llama");
    char *text = qp_strfmt("qpipe: 1\nname: m\nstages:\n  model: {uses: fetch, with: {source: \"%s\"}}\n"
                           "  mix: {uses: quantize, needs: [model], with: {method: mixed, max_kld: 0.01}}\n", model);
    assert_int_equal(run_recipe_threads(text, 2), QP_EUSAGE);
    assert_string_equal(qp_error_last(), "stage 'mix': method mixed measures sensitivities on calibration windows; "
                                         "add a calibrate stage to needs:");
    free(text);
    /* a budget below the lowest type */
    char *stage = qp_strdup("  mix: {uses: quantize, needs: [model, calib], with: {method: mixed, max_bpw: 3}}\n");
    text = recipe(stage);
    assert_int_equal(run_recipe_threads(text, 2), QP_EUSAGE);
    assert_non_null(strstr(qp_error_last(), "3.0000 bits per weight is below what the lowest ladder type needs"));
    free(text);
    free(stage);
    free(model);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_budget_of_q4_k_m),
        cmocka_unit_test(test_kld_target_and_threads),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
