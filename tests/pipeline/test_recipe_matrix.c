/* matrix: and candidates: expansion: exact ids, params, needs order,
 * fan-out, zip, fan-in, and every expansion error message. */
#include "tests/pipeline/recipe_test_helpers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/fsutil.h"
#include "pipeline/recipe.h"

#define CALIB "  calib: {uses: calibrate, needs: model, with: {dataset: d.txt}}\n"

/* "a b c": the ids of all stages in order, space-separated. */
static void assert_order(const qp_recipe *r, const char *want)
{
    char got[4096] = "";
    for (size_t i = 0; i < qp_recipe_stage_count(r); i++) {
        strcat(got, i ? " " : "");
        strcat(got, qp_recipe_stage(r, i)->id);
    }
    assert_string_equal(got, want);
}

/* "a b": the needs of one stage; also checks need_index agrees. */
static void assert_needs(const qp_recipe *r, const char *id, const char *want)
{
    const qp_stage_decl *d = stage_of(r, id);
    char got[4096] = "";
    for (size_t j = 0; j < d->n_needs; j++) {
        strcat(got, j ? " " : "");
        strcat(got, d->needs[j]);
        assert_string_equal(qp_recipe_stage(r, d->need_index[j])->id, d->needs[j]);
    }
    assert_string_equal(got, want);
}

static const char *pstr(const qp_recipe *r, const char *id, const char *param)
{
    const char *s = json_string_value(json_object_get(stage_of(r, id)->params, param));
    assert_non_null(s);
    return s;
}

static long long pint(const qp_recipe *r, const char *id, const char *param)
{
    const json_t *v = json_object_get(stage_of(r, id)->params, param);
    assert_true(json_is_integer(v));
    return json_integer_value(v);
}

static const char *candidates_recipe =
    HDR MODEL CALIB
    "  base: {uses: evaluate, needs: [model], with: {dataset: e.txt}}\n"
    "  q:\n"
    "    uses: quantize\n"
    "    needs: [model, calib]\n"
    "    with: {method: rtn, bits: 8}\n"
    "    candidates:\n"
    "      - {name: q4_k_m, method: gguf, type: Q4_K_M}\n"
    "      - {name: gptq_q4_0, method: gptq, bits: 4, group_size: 32, sym: true}\n"
    "      - {name: q8_0, method: gguf, type: Q8_0}\n"
    "  eval:\n"
    "    uses: evaluate\n"
    "    needs: [q]\n"
    "    with: {dataset: e.txt, reference: base}\n"
    "  gate:\n"
    "    uses: gate\n"
    "    needs: [eval, q]\n"
    "    with: {max_ppl_delta: 0.1}\n"
    "  pick: {uses: select, needs: [\"gate@*\"]}\n"
    "  package:\n"
    "    uses: package\n"
    "    needs: [pick, \"q@*\"]\n"
    "    with: {format: gguf, out: \"../dist/x\"}\n";

static void candidates_fan_out_zip_fan_in(void **state)
{
    (void)state;
    qp_recipe *r = load_ok(candidates_recipe);
    assert_order(r, "model calib base q@q4_k_m q@gptq_q4_0 q@q8_0 eval@q4_k_m eval@gptq_q4_0 eval@q8_0 "
                    "gate@q4_k_m gate@gptq_q4_0 gate@q8_0 pick package");
    /* each candidate merged over with: (candidate wins, the rest stays) */
    assert_string_equal(pstr(r, "q@q4_k_m", "method"), "gguf");
    assert_string_equal(pstr(r, "q@q4_k_m", "type"), "Q4_K_M");
    assert_int_equal(pint(r, "q@q4_k_m", "bits"), 8);
    assert_string_equal(pstr(r, "q@gptq_q4_0", "method"), "gptq");
    assert_int_equal(pint(r, "q@gptq_q4_0", "bits"), 4);
    assert_int_equal(pint(r, "q@gptq_q4_0", "group_size"), 32);
    assert_true(json_is_true(json_object_get(stage_of(r, "q@gptq_q4_0")->params, "sym")));
    assert_string_equal(pstr(r, "q@q8_0", "type"), "Q8_0");
    /* marks: the candidate's values, the with: values it did not replace */
    assert_json(stage_of(r, "q@gptq_q4_0")->param_marks,
                "{\"method\": \"13:35\", \"bits\": \"13:47\", \"group_size\": \"13:62\", \"sym\": \"13:71\"}");
    assert_json(stage_of(r, "q@q8_0")->param_marks, "{\"method\": \"14:30\", \"bits\": \"10:31\", \"type\": \"14:42\"}");
    /* the written key's position for every instance */
    assert_int_equal(stage_of(r, "q@q8_0")->mark.line, 7);
    assert_int_equal(stage_of(r, "eval@q8_0")->mark.line, 15);

    assert_needs(r, "q@q8_0", "model calib");
    assert_needs(r, "eval@gptq_q4_0", "q@gptq_q4_0");
    assert_needs(r, "gate@q8_0", "eval@q8_0 q@q8_0");
    assert_needs(r, "pick", "gate@q4_k_m gate@gptq_q4_0 gate@q8_0");
    assert_needs(r, "package", "pick q@q4_k_m q@gptq_q4_0 q@q8_0");
    /* a reference to a stage that is not expanded stays as written */
    assert_string_equal(pstr(r, "eval@q8_0", "reference"), "base");

    const qp_stage_decl *g = stage_of(r, "gate@gptq_q4_0"), *q = stage_of(r, "q@q8_0"), *m = stage_of(r, "model");
    assert_string_equal(g->base, "gate");
    assert_string_equal(g->instance, "gptq_q4_0");
    assert_string_equal(g->origin, "q");
    assert_json(g->matrix, "{\"method\": \"gptq\", \"bits\": 4, \"group_size\": 32, \"sym\": true}");
    assert_string_equal(q->base, "q");
    assert_string_equal(q->origin, "q");
    assert_json(q->matrix, "{\"method\": \"gguf\", \"type\": \"Q8_0\"}");
    assert_string_equal(m->base, "model");
    assert_null(m->instance);
    assert_null(m->origin);
    assert_null(m->matrix);
    qp_recipe_free(r);
}

/* Cross product in written order (first key slowest), minus exclude;
 * ${matrix.KEY} in the stage's own with: and in stages fanning out. */
static void matrix_cross_product(void **state)
{
    (void)state;
    qp_recipe *r = load_ok(HDR MODEL
                           "  q:\n"
                           "    uses: quantize\n"
                           "    needs: model\n"
                           "    with: {method: rtn}\n"
                           "    matrix: {method: [gptq, rtn, awq], bits: [3, 4]}\n"
                           "    exclude: [{method: rtn, bits: 3}, {method: awq}]\n"
                           "  rep:\n"
                           "    uses: run\n"
                           "    needs: q\n"
                           "    with: {cmd: \"echo ${matrix.name}: ${matrix.method} at ${matrix.bits} bits\"}\n"
                           "  all: {uses: run, needs: [\"q@*\", \"rep@gptq-4\"], with: {cmd: \"true\"}}\n"
                           "  pkg: {uses: package, needs: q, with: {format: gguf, out: \"d/${matrix.method}${matrix.bits}\"}}\n");
    assert_order(r, "model q@gptq-3 q@gptq-4 q@rtn-4 rep@gptq-3 rep@gptq-4 rep@rtn-4 all pkg@gptq-3 pkg@gptq-4 "
                    "pkg@rtn-4");
    assert_string_equal(pstr(r, "pkg@gptq-4", "out"), "d/gptq4");
    assert_string_equal(pstr(r, "q@gptq-3", "method"), "gptq");
    assert_int_equal(pint(r, "q@gptq-3", "bits"), 3);
    assert_int_equal(pint(r, "q@rtn-4", "bits"), 4);
    assert_string_equal(pstr(r, "rep@gptq-3", "cmd"), "echo gptq-3: gptq at 3 bits");
    assert_json(stage_of(r, "rep@rtn-4")->matrix, "{\"method\": \"rtn\", \"bits\": 4}");
    assert_needs(r, "rep@rtn-4", "q@rtn-4");
    assert_needs(r, "all", "q@gptq-3 q@gptq-4 q@rtn-4 rep@gptq-4");
    /* matrix values are checked as parameters: marks point at them */
    assert_json(stage_of(r, "q@gptq-4")->param_marks,
                "{\"method\": \"9:23\", \"bits\": \"9:50\"}");
    qp_recipe_free(r);
}

/* Names: candidate values joined by '-' when no name:, everything outside
 * [A-Za-z0-9_.-] becomes '_'; values are typed after ${vars.…}. */
static void instance_names(void **state)
{
    (void)state;
    qp_recipe *r = load_ok("qpipe: 1\nname: t\nvars: {b: 3}\nstages:\n" MODEL
                           "  q:\n"
                           "    uses: quantize\n"
                           "    needs: model\n"
                           "    candidates:\n"
                           "      - {method: gguf, type: Q8_0}\n"
                           "      - {name: \"Q4 K/M\", method: gguf, type: Q4_K_M}\n"
                           "      - method: rtn\n"
                           "        bits: ${vars.b}\n"
                           "      - {name: x.y, method: rtn, skip: [lm_head]}\n"
                           "  r:\n"
                           "    uses: run\n"
                           "    with: {metrics: \"m/${matrix.name}.json\"}\n"
                           "    matrix:\n"
                           "      cmd: [\"echo a b\", \"true\"]\n");
    assert_order(r, "model q@gguf-Q8_0 q@Q4_K_M q@rtn-3 q@x.y r@echo_a_b r@true");
    assert_string_equal(pstr(r, "r@echo_a_b", "cmd"), "echo a b");
    assert_string_equal(pstr(r, "r@echo_a_b", "metrics"), "m/echo_a_b.json");
    assert_int_equal(pint(r, "q@rtn-3", "bits"), 3);
    assert_json(json_object_get(stage_of(r, "q@x.y")->params, "skip"), "[\"lm_head\"]");
    assert_json(stage_of(r, "q@x.y")->matrix, "{\"method\": \"rtn\", \"skip\": [\"lm_head\"]}");
    assert_string_equal(stage_of(r, "q@Q4_K_M")->instance, "Q4_K_M");
    assert_string_equal(pstr(r, "r@true", "cmd"), "true");
    qp_recipe_free(r);
}

static const char *typed_recipe =
    "qpipe: 1\nname: t\nvars: {bits: 4, on: true, cmd: \"8\"}\nstages:\n" MODEL
    "  q: {uses: quantize, needs: model, with: {method: rtn},\n"
    "      matrix: {bits: [\"${vars.bits}\", 8], sym: [\"${vars.on}\", false]},\n"
    "      exclude: [{bits: \"${vars.bits}\", sym: false}]}\n"
    "  e: {uses: evaluate, needs: q, with: {dataset: d}}\n"
    "  g: {uses: gate, needs: [e, q], with: {max_ppl_delta: \"${matrix.bits}\"}}\n"
    "  rep: {uses: run, needs: q, with: {cmd: \"${matrix.name}\", metrics: \"${matrix.bits}.json\"}}\n"
    "  c: {uses: quantize, needs: model,\n"
    "      candidates: [{method: rtn, bits: \"${vars.bits}\", sym: \"${vars.on}\"}]}\n"
    "  rc: {uses: run, needs: c, with: {cmd: \"${vars.cmd}\", metrics: !!str '${matrix.bits}'}}\n";

/* A matrix/candidate value that is exactly "${vars.X}" keeps X's type (so
 * exclude matches it and it checks as an integer), and a whole
 * "${matrix.KEY}" keeps the value's type; ${matrix.name} is text. */
static void typed_matrix_references(void **state)
{
    (void)state;
    qp_recipe *r = load_ok(typed_recipe);
    assert_order(r, "model q@4-true q@8-true q@8-false e@4-true e@8-true e@8-false g@4-true g@8-true g@8-false "
                    "rep@4-true rep@8-true rep@8-false c@rtn-4-true rc@rtn-4-true");
    assert_json(stage_of(r, "q@4-true")->matrix, "{\"bits\": 4, \"sym\": true}");
    assert_int_equal(pint(r, "q@4-true", "bits"), 4);
    assert_true(json_is_true(json_object_get(stage_of(r, "q@4-true")->params, "sym")));
    const json_t *d = json_object_get(stage_of(r, "g@4-true")->params, "max_ppl_delta");
    assert_true(json_is_real(d) && json_real_value(d) == 4.0);
    assert_string_equal(pstr(r, "rep@8-false", "cmd"), "8-false");
    assert_string_equal(pstr(r, "rep@8-false", "metrics"), "8.json");
    assert_json(stage_of(r, "c@rtn-4-true")->matrix, "{\"method\": \"rtn\", \"bits\": 4, \"sym\": true}");
    assert_string_equal(pstr(r, "rc@rtn-4-true", "cmd"), "8");
    assert_string_equal(pstr(r, "rc@rtn-4-true", "metrics"), "4");
    qp_recipe_free(r);
}

/* NAME@INST needs one instance; a reference to a stage fanning out from
 * the same origin is zipped like a need; fan-out goes through chains. */
static void single_instance_and_reference(void **state)
{
    (void)state;
    qp_recipe *r = load_ok(HDR MODEL
                           "  q: {uses: quantize, needs: model, candidates: [{method: rtn}, {method: gguf}]}\n"
                           "  e0: {uses: evaluate, needs: q, with: {dataset: d}}\n"
                           "  e1: {uses: evaluate, needs: q, with: {dataset: d, reference: e0}}\n"
                           "  g: {uses: gate, needs: [e1], with: {max_kld_mean: 0.1}}\n"
                           "  only: {uses: gate, needs: [\"e1@gguf\"], with: {max_kld_mean: 0.1}}\n"
                           "  pinned: {uses: evaluate, needs: q@rtn, with: {dataset: d, reference: e0@gguf}}\n");
    assert_order(r, "model q@rtn q@gguf e0@rtn e0@gguf e1@rtn e1@gguf g@rtn g@gguf only pinned");
    assert_string_equal(pstr(r, "e1@gguf", "reference"), "e0@gguf");
    assert_string_equal(pstr(r, "e1@rtn", "reference"), "e0@rtn");
    assert_string_equal(pstr(r, "pinned", "reference"), "e0@gguf");
    assert_needs(r, "g@gguf", "e1@gguf");
    assert_needs(r, "only", "e1@gguf");
    assert_needs(r, "pinned", "q@rtn");
    qp_recipe_free(r);
}

/* Adding a candidate leaves every other stage's params (what keys are made
 * of) exactly as they were, so only the new chain and the fan-in rerun. */
static void adding_a_candidate_keeps_the_others(void **state)
{
    (void)state;
    const char *two = HDR MODEL
        "  q: {uses: quantize, needs: model, candidates: [{name: a, method: rtn}, {name: b, method: gguf}]}\n"
        "  e: {uses: evaluate, needs: q, with: {dataset: d}}\n"
        "  g: {uses: gate, needs: [e, q], with: {max_ppl_delta: 1}}\n"
        "  pick: {uses: select, needs: g@*}\n";
    const char *three = HDR MODEL
        "  q: {uses: quantize, needs: model, candidates: [{name: a, method: rtn}, {name: c, method: int8},\n"
        "                                                  {name: b, method: gguf}]}\n"
        "  e: {uses: evaluate, needs: q, with: {dataset: d}}\n"
        "  g: {uses: gate, needs: [e, q], with: {max_ppl_delta: 1}}\n"
        "  pick: {uses: select, needs: g@*}\n";
    qp_recipe *a = load_ok(two), *b = load_ok(three);
    assert_order(a, "model q@a q@b e@a e@b g@a g@b pick");
    assert_order(b, "model q@a q@c q@b e@a e@c e@b g@a g@c g@b pick");
    for (size_t i = 0; i < qp_recipe_stage_count(a); i++) {
        const qp_stage_decl *da = qp_recipe_stage(a, i), *db = stage_of(b, da->id);
        assert_true(json_equal(da->params, db->params));
        if (strcmp(da->id, "pick") != 0)
            for (size_t j = 0; j < da->n_needs; j++)
                assert_string_equal(da->needs[j], db->needs[j]);
    }
    assert_needs(b, "pick", "g@a g@c g@b");
    qp_recipe_free(a);
    qp_recipe_free(b);
}

/* Without matrices, nothing changes: ids as written, no instance data. */
static void plain_recipe_unchanged(void **state)
{
    (void)state;
    qp_recipe *r = load_ok(HDR MODEL "  e: {uses: evaluate, needs: model, with: {dataset: d}}\n");
    assert_order(r, "model e");
    assert_string_equal(stage_of(r, "e")->base, "e");
    assert_null(stage_of(r, "e")->instance);
    qp_recipe_free(r);
}

#define Q "  q:\n    uses: quantize\n    needs: model\n"

static const bad_case cases[] = {
    {"matrix_and_candidates", HDR MODEL Q "    matrix: {bits: [4]}\n    candidates: [{bits: 4}]\n",
     "r.yaml:9:5: stage 'q' has both 'matrix' and 'candidates' (use one)"},
    {"exclude_without_matrix", HDR MODEL Q "    candidates: [{method: rtn}]\n    exclude: [{method: rtn}]\n",
     "r.yaml:9:5: 'exclude' of stage 'q' needs a 'matrix' (it drops combinations of one)"},
    {"matrix_not_mapping", HDR MODEL Q "    matrix: [bits, 4]\n",
     "r.yaml:8:13: 'matrix' of stage 'q' must be a non-empty mapping of parameter: [values]"},
    {"matrix_empty", HDR MODEL Q "    matrix:\n",
     "r.yaml:8:5: 'matrix' of stage 'q' must be a non-empty mapping of parameter: [values]"},
    {"matrix_name_reserved", HDR MODEL Q "    matrix: {name: [a, b]}\n",
     "r.yaml:8:14: matrix key 'name' of stage 'q' is reserved (instance names are made from the values)"},
    {"matrix_value_not_list", HDR MODEL Q "    matrix: {bits: 4}\n",
     "r.yaml:8:20: matrix 'bits' of stage 'q' must be a non-empty list of values"},
    {"matrix_value_empty_list", HDR MODEL Q "    matrix: {method: [rtn], bits: []}\n",
     "r.yaml:8:35: matrix 'bits' of stage 'q' must be a non-empty list of values"},
    {"matrix_value_not_scalar", HDR MODEL Q "    matrix: {bits: [4, [5]]}\n",
     "r.yaml:8:24: matrix 'bits' of stage 'q': a value must be a scalar, not a list"},
    {"matrix_value_twice", HDR MODEL Q "    matrix: {method: [rtn, gguf, rtn]}\n",
     "r.yaml:8:34: matrix 'method' of stage 'q' lists 'rtn' twice"},
    {"matrix_too_big", HDR MODEL Q
     "    matrix: {bits: [2, 3, 4, 5, 6, 7, 8], group_size: [-1, 32, 64, 128, 256], sym: [true, false],\n"
     "             type: [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0]}\n",
     "r.yaml:8:5: matrix of stage 'q' has more than 256 instances"},
    {"matrix_value_bad_param", HDR MODEL Q "    with: {method: rtn}\n    matrix: {bits: [4, 9]}\n",
     "r.yaml:9:24: parameter 'bits' for quantize must be between 2 and 8, got 9"},
    {"matrix_key_unknown_param", HDR MODEL Q "    with: {method: rtn}\n    matrix: {bitz: [4]}\n",
     "r.yaml:9:14: unknown parameter 'bitz' for quantize (did you mean 'bits'?)"},
    {"matrix_join_collision", HDR "  r:\n    uses: run\n    matrix: {cmd: [a-b, a], metrics: [c, b-c]}\n",
     "r.yaml:6:5: matrix of stage 'r' makes two instances named 'r@a-b-c'"},
    {"typed_matrix_int_for_string", HDR MODEL Q "    with: {method: rtn}\n    matrix: {bits: [4]}\n"
     "  r: {uses: run, needs: q, with: {cmd: \"${matrix.bits}\"}}\n",
     "r.yaml:10:40: parameter 'cmd' for run must be a string, got integer 4 (${matrix.bits} keeps its type; write "
     "!!str \"${matrix.bits}\" to make it a string)"},
    {"typed_matrix_var_out_of_range", "qpipe: 1\nname: t\nvars: {b: 9}\nstages:\n" MODEL Q
     "    with: {method: rtn}\n    matrix: {bits: [4, \"${vars.b}\"]}\n",
     "r.yaml:10:24: parameter 'bits' for quantize must be between 2 and 8, got 9"},
    {"typed_exclude_string_var", "qpipe: 1\nname: t\nvars: {b: \"4\"}\nstages:\n" MODEL Q
     "    with: {method: rtn}\n    matrix: {bits: [3, 4]}\n    exclude: [{bits: \"${vars.b}\"}]\n",
     "r.yaml:11:15: exclude entry of stage 'q' matches no instance of its matrix"},
    {"exclude_not_list", HDR MODEL Q "    with: {method: rtn}\n    matrix: {bits: [4]}\n    exclude: {bits: 4}\n",
     "r.yaml:10:14: 'exclude' of stage 'q' must be a list of mappings, not a mapping"},
    {"exclude_entry_not_mapping", HDR MODEL Q "    with: {method: rtn}\n    matrix: {bits: [4]}\n    exclude: [4]\n",
     "r.yaml:10:15: 'exclude' of stage 'q' must list mappings, not a string"},
    {"exclude_unknown_key", HDR MODEL Q
     "    with: {method: rtn}\n    matrix: {bits: [3, 4]}\n    exclude: [{bit: 4}]\n",
     "r.yaml:10:16: exclude key 'bit' of stage 'q' is not a matrix key (did you mean 'bits'?)"},
    {"exclude_matches_nothing", HDR MODEL Q
     "    with: {method: rtn}\n    matrix: {bits: [3, 4]}\n    exclude: [{bits: 3}, {bits: \"4\"}]\n",
     "r.yaml:10:26: exclude entry of stage 'q' matches no instance of its matrix"},
    {"exclude_everything", HDR MODEL Q "    with: {method: rtn}\n    matrix: {bits: [3, 4]}\n    exclude: [{}]\n",
     "r.yaml:9:5: exclude removes every instance of stage 'q'"},
    {"candidates_not_list", HDR MODEL Q "    candidates: {method: rtn}\n",
     "r.yaml:8:17: 'candidates' of stage 'q' must be a non-empty list of mappings"},
    {"candidates_empty", HDR MODEL Q "    candidates: []\n",
     "r.yaml:8:17: 'candidates' of stage 'q' must be a non-empty list of mappings"},
    {"candidate_not_mapping", HDR MODEL Q "    candidates: [{method: rtn}, gguf]\n",
     "r.yaml:8:33: candidate 2 of stage 'q' must be a mapping of parameters, not a string"},
    {"candidate_name_not_string", HDR MODEL Q "    candidates: [{name: [a], method: rtn}]\n",
     "r.yaml:8:25: 'name' of candidate 1 of stage 'q' must be a string, not a list"},
    {"candidate_name_empty", HDR MODEL Q "    candidates: [{name: \"\", method: rtn}]\n",
     "r.yaml:8:25: candidate 1 of stage 'q' has an empty name; give it a non-empty 'name:'"},
    {"candidate_names_repeat", HDR MODEL Q "    candidates: [{name: a, method: rtn}, {method: gguf}, {name: a, method: nf4}]\n",
     "r.yaml:8:65: candidates 1 and 3 of stage 'q' are both named 'q@a' (give them distinct 'name:' values)"},
    {"candidate_names_repeat_after_sanitising", HDR MODEL Q
     "    candidates: [{name: \"a b\", method: rtn}, {name: a_b, method: gguf}]\n",
     "r.yaml:8:53: candidates 1 and 2 of stage 'q' are both named 'q@a_b' (give them distinct 'name:' values)"},
    {"candidate_list_value_needs_name", HDR MODEL Q "    candidates: [{method: rtn, skip: [lm_head]}]\n",
     "r.yaml:8:38: candidate 1 of stage 'q' has a list for 'skip', which cannot name it; give it a 'name:'"},
    {"candidate_value_bad_param", HDR MODEL Q "    candidates: [{method: rtn}, {method: rtn, sym: yes}]\n",
     "r.yaml:8:52: parameter 'sym' for quantize must be true or false, got string 'yes'"},
    {"instance_missing_required", HDR MODEL Q "    candidates: [{method: rtn}, {bits: 4}]\n",
     "r.yaml:5:3: stage 'q@4': missing required parameter 'method' for quantize"},
    {"matrix_ref_outside", HDR MODEL Q "    with: {method: rtn, imatrix: \"${matrix.bits}\"}\n",
     "r.yaml:8:34: '${matrix.bits}' is defined only in the with: of a stage with matrix: or candidates: (or one "
     "that fans out from it)"},
    {"matrix_ref_undefined", HDR MODEL Q "    with: {method: rtn, imatrix: \"${matrix.bit}\"}\n    matrix: {bits: [4]}\n",
     "r.yaml:8:34: undefined matrix value 'bit' in '${matrix.bit}' (this instance has: bits, name)"},
    {"matrix_ref_in_needs", HDR MODEL Q "    matrix: {method: [rtn]}\n"
     "  e: {uses: evaluate, needs: \"q@${matrix.name}\", with: {dataset: d}}\n",
     "r.yaml:9:30: '${matrix.name}' is defined only in the with: of a stage with matrix: or candidates: (or one "
     "that fans out from it)"},
    {"fan_out_from_two_origins", HDR MODEL
     "  a: {uses: quantize, needs: model, matrix: {method: [rtn, gguf]}}\n"
     "  b: {uses: quantize, needs: model, candidates: [{method: rtn}]}\n"
     "  ea: {uses: evaluate, needs: a, with: {dataset: d}}\n"
     "  g: {uses: gate, needs: [ea, b], with: {max_x: 1}}\n",
     "r.yaml:8:31: stage 'g' needs 'ea' and 'b', which are expanded from different stages ('a' and 'b'); write "
     "'b@*' to take all instances of 'b' as inputs"},
    {"own_matrix_and_expanded_need", HDR MODEL
     "  a: {uses: quantize, needs: model, matrix: {method: [rtn, gguf]}}\n"
     "  e: {uses: evaluate, needs: a, matrix: {dataset: [d1, d2]}}\n",
     "r.yaml:6:30: stage 'e' has its own matrix: but needs 'a', which is expanded; write 'a@*' for all of its "
     "instances or 'a@NAME' for one"},
    {"fan_in_of_plain_stage", HDR MODEL "  g: {uses: gate, needs: [\"model@*\"], with: {max_x: 1}}\n",
     "r.yaml:5:27: needs 'model@*': stage 'model' is not expanded (it has no matrix: or candidates: and needs no "
     "expanded stage); write 'model'"},
    {"unknown_instance_hint", HDR MODEL
     "  q: {uses: quantize, needs: model, matrix: {method: [rtn, gguf]}}\n"
     "  g: {uses: gate, needs: [q@gguff], with: {max_x: 1}}\n",
     "r.yaml:6:27: needs 'q@gguff': stage 'q' has no instance 'gguff' (did you mean 'q@gguf'?)"},
    {"unknown_instance_list", HDR MODEL
     "  q: {uses: quantize, needs: model, matrix: {method: [rtn, gguf]}}\n"
     "  g: {uses: gate, needs: [q@awq4], with: {max_x: 1}}\n",
     "r.yaml:6:27: needs 'q@awq4': stage 'q' has no instance 'awq4' (instances: rtn, gguf)"},
    {"unknown_stage_with_selector", HDR MODEL
     "  q: {uses: quantize, needs: model, matrix: {method: [rtn, gguf]}}\n"
     "  g: {uses: gate, needs: [qq@*], with: {max_x: 1}}\n",
     "r.yaml:6:27: needs 'qq@*': no such stage 'qq' (did you mean 'q'?)"},
    {"empty_selector", HDR MODEL
     "  q: {uses: quantize, needs: model, matrix: {method: [rtn, gguf]}}\n"
     "  g: {uses: gate, needs: [q@], with: {max_x: 1}}\n",
     "r.yaml:6:27: needs 'q@': write 'q@*' for all instances or 'q@NAME' for one"},
    {"reference_to_expanded_from_plain", HDR MODEL
     "  q: {uses: quantize, needs: model, matrix: {method: [rtn, gguf]}}\n"
     "  e: {uses: evaluate, needs: q, with: {dataset: d}}\n"
     "  b: {uses: evaluate, needs: model, with: {dataset: d, reference: e}}\n",
     "r.yaml:7:67: parameter 'reference' for evaluate: stage 'e' is expanded; name one of its instances as 'e@NAME'"},
    {"unknown_plain_need_in_matrix_recipe", HDR MODEL
     "  q: {uses: quantize, needs: [modle], matrix: {method: [rtn]}}\n",
     "r.yaml:5:31: needs 'modle': no such stage (did you mean 'model'?)"},
    {"cycle_through_expanded", HDR MODEL
     "  q: {uses: quantize, needs: [model, c], matrix: {method: [rtn]}}\n"
     "  c: {uses: calibrate, needs: q@rtn, with: {dataset: d}}\n",
     "r.yaml:5:3: cycle: q -> c -> q"},
    {"self_fan_in", HDR MODEL "  q: {uses: quantize, needs: [model, q@*], matrix: {method: [rtn]}}\n",
     "r.yaml:5:38: stage 'q' needs itself"},
    {"fan_in_input_count", HDR MODEL
     "  q: {uses: quantize, needs: model, matrix: {method: [rtn, gguf]}}\n"
     "  c: {uses: calibrate, needs: q@*, with: {dataset: d}}\n",
     "r.yaml:6:24: stage 'c': calibrate takes exactly 1 input, got 2"},
};

/* 256 candidates are fine, 257 are not. */
static void candidate_limit(void **state)
{
    (void)state;
    for (int n = 256; n <= 257; n++) {
        char *text = qp_strdup(HDR MODEL "  q: {uses: quantize, needs: model, candidates: [");
        for (int i = 0; i < n; i++) {
            char *t2 = qp_strfmt("%s%s{name: c%d, method: rtn}", text, i ? ", " : "", i);
            free(text);
            text = t2;
        }
        char *t2 = qp_strfmt("%s]}\n", text);
        free(text);
        text = t2;
        qp_recipe *r = NULL;
        int rc = qp_recipe_load_string(&r, "r.yaml", text);
        if (n == 256) {
            assert_int_equal(rc, 0);
            assert_int_equal(qp_recipe_stage_count(r), 257);
            assert_string_equal(qp_recipe_stage(r, 256)->id, "q@c255");
            qp_recipe_free(r);
        } else {
            assert_int_equal(rc, QP_EUSAGE);
            assert_string_equal(qp_error_last(), "r.yaml:5:37: 'candidates' of stage 'q' lists more than 256 instances");
        }
        free(text);
    }
}

int main(void)
{
    const struct CMUnitTest fixed[] = {
        cmocka_unit_test(candidates_fan_out_zip_fan_in),
        cmocka_unit_test(matrix_cross_product),
        cmocka_unit_test(instance_names),
        cmocka_unit_test(typed_matrix_references),
        cmocka_unit_test(single_instance_and_reference),
        cmocka_unit_test(adding_a_candidate_keeps_the_others),
        cmocka_unit_test(plain_recipe_unchanged),
        cmocka_unit_test(candidate_limit),
    };
    return run_recipe_tests("recipe_matrix", fixed, sizeof(fixed) / sizeof(fixed[0]), cases,
                            sizeof(cases) / sizeof(cases[0]));
}
