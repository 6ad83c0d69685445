/* The quantization-method interface (stages/qmethod.h): the registry, the
 * options parsed once, and the plan each method gives a tensor. */
#include "tests/support/testutil.h"

#include "common/error.h"
#include "stages/qmethods.h"

#include <stdlib.h>
#include <string.h>

static void test_registry(void **state)
{
    (void)state;
    size_t n;
    const qp_quant_method *const *all = qp_quant_methods(&n);
    assert_int_equal(n, 8);
    for (size_t i = 0; i < n; i++) {
        assert_ptr_equal(qp_quant_method_find(all[i]->name), all[i]);
        assert_non_null(all[i]->plan);
        assert_non_null(all[i]->hints.card_keys);
        /* every method either quantizes in its run or encodes per tensor (gguf: the ggml encoder) */
        assert_true(all[i]->run || all[i]->encode || all[i] == &qp_qm_gguf);
        assert_true(!(all[i]->flags & QP_QM_NEEDS_CALIB) || all[i]->needs_calib);
    }
    assert_null(qp_quant_method_find("bogus"));
    assert_null(qp_quant_method_find(NULL));
    assert_true(qp_qm_gguf.flags & QP_QM_IMATRIX);
    assert_true(qp_qm_mixed.flags & QP_QM_IMATRIX);
    assert_false(qp_qm_rtn.flags & QP_QM_IMATRIX);
    /* qat trains on the calibration windows and writes the linear format */
    assert_ptr_equal(qp_quant_method_find("qat"), &qp_qm_qat);
    assert_true(qp_qm_qat.flags & QP_QM_NEEDS_CALIB);
    assert_false(qp_qm_qat.flags & QP_QM_IMATRIX);
    assert_ptr_equal(qp_qm_qat.plan, qp_qm_linear_plan);
}

static json_t *params(const char *extra)
{
    json_error_t e;
    json_t *p = json_loads("{\"method\": \"rtn\", \"bits\": 4, \"group_size\": 128, \"sym\": false, \"mse\": false, "
                           "\"type\": \"Q4_K_M\", \"pure\": false, \"skip\": [], \"override\": [], \"imatrix\": \"\", "
                           "\"ladder\": [\"Q4_K\", \"Q6_K\"], \"max_bpw\": 5, \"bpw_of\": \"\", \"max_kld\": 0, "
                           "\"max_ppl_delta\": 0, \"max_ppl_ratio\": 0, \"windows\": 4, \"damp_percent\": 0.01, "
                           "\"act_order\": false, \"static_groups\": false, \"sequential\": true, "
                           "\"true_sequential\": true, \"duo_scaling\": \"auto\", \"clip\": true, "
                           "\"double_quant\": false, \"steps\": 200, \"lr\": 0, \"batch\": 8, \"seed\": 0, "
                           "\"init\": \"rtn\", \"e2e_steps\": 0, \"e2e_lr\": 0.001}", 0, &e);
    json_t *x = json_loads(extra, 0, &e);
    json_object_update(p, x);
    json_decref(x);
    return p;
}

static void plan_of(qp_tensor_plan *tp, const char *method, const char *extra, const char *name)
{
    json_t *p = params(extra);
    const qp_quant_method *m = qp_quant_method_find(method);
    qp_quant_common c;
    void *opts = NULL;
    assert_int_equal(qp_quant_common_parse(&c, p, "t"), 0);
    assert_int_equal(qp_quant_opts_parse(&opts, m, p, "t"), 0);
    qp_llama_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.n_layers = 2;
    cfg.n_heads = 4;
    cfg.n_kv_heads = 4;
    qp_quant_plan plan;
    qp_quant_plan_init(&plan, m, opts, &c, &cfg, 0);
    assert_int_equal(qp_quant_plan_tensor(tp, &plan, name, 2, 256, 256), 0);
    qp_quant_opts_free(m, opts);
    qp_quant_common_free(&c);
    json_decref(p);
}

static void test_plans(void **state)
{
    (void)state;
    qp_tensor_plan tp;
    plan_of(&tp, "rtn", "{}", "model.layers.0.mlp.up_proj.weight");
    assert_int_equal(tp.kind, QP_TP_LINEAR);
    assert_int_equal(tp.bits, 4);
    plan_of(&tp, "gptq", "{\"override\": [{\"match\": \"*.up_proj.*\", \"bits\": 8}]}",
            "model.layers.0.mlp.up_proj.weight");
    assert_int_equal(tp.kind, QP_TP_LINEAR);
    assert_int_equal(tp.bits, 8);
    assert_string_equal(tp.reason, "override 1 (*.up_proj.*)");
    plan_of(&tp, "awq", "{}", "lm_head.weight");
    assert_int_equal(tp.kind, QP_TP_DENSE);
    assert_int_equal(tp.qtype, QP_GGML_BF16);
    plan_of(&tp, "nf4", "{}", "model.layers.1.self_attn.q_proj.weight");
    assert_int_equal(tp.kind, QP_TP_NF4);
    plan_of(&tp, "int8", "{\"skip\": [\"*.q_proj.*\"]}", "model.layers.1.self_attn.q_proj.weight");
    assert_int_equal(tp.kind, QP_TP_DENSE);
    assert_string_equal(tp.reason, "skip: *.q_proj.*");
    plan_of(&tp, "rtn", "{\"override\": [{\"match\": \"*.down_proj.*\", \"type\": \"Q6_K\"}]}",
            "model.layers.0.mlp.down_proj.weight");
    assert_int_equal(tp.kind, QP_TP_GGML);
    assert_int_equal(tp.qtype, QP_GGML_Q6_K);
    plan_of(&tp, "mixed", "{\"method\": \"mixed\"}", "model.layers.0.mlp.gate_proj.weight");
    assert_int_equal(tp.kind, QP_TP_GGML);
    assert_int_equal(tp.qtype, QP_GGML_Q4_K);
    assert_true(tp.mixed);
}

static void test_options_checked(void **state)
{
    (void)state;
    void *opts = NULL;
    json_t *p = params("{\"ladder\": [\"Q6_K\", \"Q4_K\"]}");
    assert_int_equal(qp_quant_opts_parse(&opts, &qp_qm_mixed, p, "r.yaml:3:5"), QP_EUSAGE);
    assert_string_equal(qp_error_last(), "r.yaml:3:5: ladder: Q4_K does not have more bits than the type before "
                                         "it; list the types fewest bits first");
    qp_quant_opts_free(&qp_qm_mixed, opts);
    json_decref(p);
    qp_quant_common c;
    p = params("{\"override\": [{\"match\": \"x\", \"colour\": 1}]}");
    assert_int_equal(qp_quant_common_parse(&c, p, "r.yaml:3:5"), QP_EUSAGE);
    assert_string_equal(qp_error_last(), "r.yaml:3:5: override 1: unknown key 'colour' (match, type, bits)");
    qp_quant_common_free(&c);
    json_decref(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_registry), cmocka_unit_test(test_plans),
                                       cmocka_unit_test(test_options_checked)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
