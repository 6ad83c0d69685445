/* Malformed recipes: each must be rejected with exactly one line
 * "r.yaml:LINE:COL: message" and QP_EUSAGE. */
#include "tests/pipeline/recipe_test_helpers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "pipeline/recipe.h"

#include <sys/stat.h>

static const bad_case cases[] = {
    {"yaml_syntax_unclosed_flow", HDR "  a: {uses: fetch, with: {source: x}\n",
     "r.yaml:5:1: did not find expected ',' or '}' (while parsing a flow mapping at line 4)"},
    {"yaml_syntax_bad_mapping", "qpipe: 1\nname: a: b\n",
     "r.yaml:2:8: mapping values are not allowed in this context"},
    {"tab_indentation", HDR "\tmodel: {uses: fetch, with: {source: m}}\n",
     "r.yaml:4:1: tab character in indentation (indent with spaces)"},
    {"duplicate_top_key", "qpipe: 1\nname: t\nname: u\nstages:\n" MODEL,
     "r.yaml:3:1: duplicate key 'name' (first given at line 2)"},
    {"duplicate_stage_id", HDR MODEL "  model: {uses: fetch, with: {source: n}}\n",
     "r.yaml:5:3: duplicate key 'model' (first given at line 4)"},
    {"duplicate_stage_key", HDR "  model:\n    uses: fetch\n    with: {source: m}\n    uses: run\n",
     "r.yaml:7:5: duplicate key 'uses' (first given at line 5)"},
    {"duplicate_param", HDR "  model:\n    uses: fetch\n    with:\n      source: m\n      source: n\n",
     "r.yaml:8:7: duplicate key 'source' (first given at line 7)"},
    {"unknown_top_key", "qpipe: 1\nname: t\nstage:\n" MODEL,
     "r.yaml:3:1: unknown top-level key 'stage' (did you mean 'stages'?)"},
    {"unknown_top_key_no_hint", "qpipe: 1\nname: t\nauthor: me\nstages:\n" MODEL,
     "r.yaml:3:1: unknown top-level key 'author' (expected qpipe, name, vars, stages)"},
    {"unknown_stage_key", HDR MODEL "  c:\n    uses: calibrate\n    need: [model]\n    with: {dataset: d.txt}\n",
     "r.yaml:7:5: unknown key 'need' in stage 'c' (did you mean 'needs'?)"},
    {"unknown_param_with_hint", HDR MODEL "  q4: {uses: quantize, needs: model, with: {method: rtn, bitz: 4}}\n",
     "r.yaml:5:58: unknown parameter 'bitz' for quantize (did you mean 'bits'?)"},
    {"unknown_param_lists_known", HDR MODEL "  p: {uses: package, needs: model, with: {format: gguf, out: d, colour: red}}\n",
     "r.yaml:5:65: unknown parameter 'colour' for package (known: format, out, name, dtype, max_shard_size, base_model, license)"},
    {"int_param_given_string", HDR MODEL "  c: {uses: calibrate, needs: model, with: {dataset: d.txt, samples: many}}\n",
     "r.yaml:5:70: parameter 'samples' for calibrate must be an integer, got string 'many'"},
    {"int_param_given_float", HDR MODEL "  c: {uses: calibrate, needs: model, with: {dataset: d.txt, samples: 1.5}}\n",
     "r.yaml:5:70: parameter 'samples' for calibrate must be an integer, got number 1.5"},
    {"int_param_given_quoted", HDR MODEL "  c: {uses: calibrate, needs: model, with: {dataset: d.txt, samples: \"64\"}}\n",
     "r.yaml:5:70: parameter 'samples' for calibrate must be an integer, got string '64'"},
    {"bool_param_given_string", HDR MODEL "  q: {uses: quantize, needs: model, with: {method: rtn, sym: yes}}\n",
     "r.yaml:5:62: parameter 'sym' for quantize must be true or false, got string 'yes'"},
    {"string_param_given_int", HDR MODEL "  c: {uses: calibrate, needs: model, with: {dataset: d.txt, field: 5}}\n",
     "r.yaml:5:68: parameter 'field' for calibrate must be a string, got integer 5 (quote it to make it a string)"},
    {"number_out_of_range", HDR MODEL "  q: {uses: quantize, needs: model, with: {method: rtn, bits: 9}}\n",
     "r.yaml:5:63: parameter 'bits' for quantize must be between 2 and 8, got 9"},
    {"real_out_of_range", HDR MODEL "  q: {uses: quantize, needs: model, with: {method: gptq, damp_percent: 1.5}}\n",
     "r.yaml:5:72: parameter 'damp_percent' for quantize must be between 0 and 1, got 1.5"},
    {"string_not_allowed", HDR MODEL "  p: {uses: select, needs: model, with: {policy: smalest}}\n",
     "r.yaml:5:50: parameter 'policy' for select must be one of smallest, first, got 'smalest' "
     "(did you mean 'smallest'?)"},
    {"int_not_allowed", HDR MODEL "  q: {uses: quantize, needs: model, with: {method: rtn, group_size: 100}}\n",
     "r.yaml:5:69: parameter 'group_size' for quantize must be one of -1, 32, 64, 128, 256, got 100"},
    {"list_item_wrong_type", HDR MODEL "  c: {uses: calibrate, needs: model, with: {dataset: [a.txt, [b]]}}\n",
     "r.yaml:5:62: parameter 'dataset' for calibrate must be a path or a list of paths, got a list"},
    {"map_param_given_list", HDR "  model: {uses: fetch, with: {source: m, sha256: [x]}}\n",
     "r.yaml:4:50: parameter 'sha256' for fetch must be a mapping, got a list"},
    {"missing_required_param", HDR MODEL "  q:\n    uses: quantize\n    needs: model\n    with: {bits: 4}\n",
     "r.yaml:5:3: stage 'q': missing required parameter 'method' for quantize"},
    {"with_not_mapping", HDR "  model: {uses: fetch, with: [source]}\n",
     "r.yaml:4:30: 'with' of stage 'model' must be a mapping of parameters, not a list"},
    {"kind_validate_gets_where", HDR MODEL "  g: {uses: gate, needs: model}\n",
     "r.yaml:5:3: gate has no checks (add max_METRIC or min_METRIC keys under with:)"},
    {"unknown_uses", HDR MODEL "  q: {uses: quantise, needs: model, with: {method: rtn}}\n",
     "r.yaml:5:13: unknown stage kind 'quantise' (did you mean 'quantize'?)"},
    {"unknown_uses_lists_kinds", HDR "  x: {uses: train}\n",
     "r.yaml:4:13: unknown stage kind 'train' (known: fetch, calibrate, quantize, evaluate, gate, package, run, select)"},
    {"missing_uses", HDR "  x: {with: {cmd: ls}}\n", "r.yaml:4:3: stage 'x' has no 'uses:' (the stage kind to run)"},
    {"stage_not_mapping", HDR "  x: fetch\n", "r.yaml:4:6: stage 'x' must be a mapping with 'uses:', not a string"},
    {"needs_missing_stage", HDR MODEL
     "  calib: {uses: calibrate, needs: model, with: {dataset: d.txt}}\n"
     "  q4: {uses: quantize, needs: [model, calbi], with: {method: gptq}}\n",
     "r.yaml:6:39: needs 'calbi': no such stage (did you mean 'calib'?)"},
    {"needs_missing_no_hint", HDR "  c: {uses: calibrate, needs: [zzz], with: {dataset: d.txt}}\n",
     "r.yaml:4:32: needs 'zzz': no such stage"},
    {"self_need", HDR "  g: {uses: gate, needs: [g], with: {max_x: 1}}\n", "r.yaml:4:27: stage 'g' needs itself"},
    {"duplicate_need", HDR MODEL "  q: {uses: quantize, needs: [model, model], with: {method: rtn}}\n",
     "r.yaml:5:38: needs 'model' more than once"},
    {"needs_not_ids", HDR MODEL "  q: {uses: quantize, needs: [model, {a: b}], with: {method: rtn}}\n",
     "r.yaml:5:38: 'needs' of stage 'q' must list stage ids"},
    {"cycle_of_three", HDR
     "  a: {uses: gate, needs: [c], with: {max_x: 1}}\n"
     "  b: {uses: gate, needs: [a], with: {max_x: 1}}\n"
     "  c: {uses: gate, needs: [b], with: {max_x: 1}}\n",
     "r.yaml:4:3: cycle: a -> c -> b -> a"},
    {"cycle_starts_at_first_in_file", HDR
     "  ok: {uses: gate, needs: [y], with: {max_x: 1}}\n"
     "  x: {uses: gate, needs: [y], with: {max_x: 1}}\n"
     "  y: {uses: gate, needs: [z], with: {max_x: 1}}\n"
     "  z: {uses: gate, needs: [x], with: {max_x: 1}}\n",
     "r.yaml:5:3: cycle: x -> y -> z -> x"},
    {"cycle_through_reference", HDR MODEL
     "  a: {uses: evaluate, needs: model, with: {dataset: d.txt, reference: b}}\n"
     "  b: {uses: evaluate, needs: model, with: {dataset: d.txt, reference: a}}\n",
     "r.yaml:5:3: cycle: a -> b -> a"},
    {"reference_missing_stage", HDR MODEL
     "  base: {uses: evaluate, needs: model, with: {dataset: d.txt}}\n"
     "  e: {uses: evaluate, needs: model, with: {dataset: d.txt, reference: basee}}\n",
     "r.yaml:6:71: parameter 'reference' for evaluate: no such stage 'basee' (did you mean 'base'?)"},
    {"reference_self", HDR MODEL "  e: {uses: evaluate, needs: model, with: {dataset: d.txt, reference: e}}\n",
     "r.yaml:5:71: parameter 'reference' for evaluate names its own stage 'e'"},
    {"reference_wrong_output_type", HDR MODEL "  e: {uses: evaluate, needs: model, with: {dataset: d.txt, reference: model}}\n",
     "r.yaml:5:71: parameter 'reference' for evaluate: stage 'model' makes a files or model artifact; name a stage "
     "that makes metrics"},
    {"input_wrong_artifact_type", HDR MODEL
     "  base: {uses: evaluate, needs: model, with: {dataset: d.txt}}\n"
     "  q4: {uses: quantize, needs: [model, base], with: {method: gptq}}\n",
     "r.yaml:6:39: stage 'q4': input 'base' is a metrics artifact, but quantize accepts model, calibration"},
    {"input_multi_type_producer", HDR "  f: {uses: fetch, with: {source: m}}\n  r: {uses: run, with: {cmd: ls}}\n"
     "  c: {uses: calibrate, needs: r, with: {dataset: d.txt}}\n",
     "r.yaml:6:31: stage 'c': input 'r' is a files artifact, but calibrate accepts model"},
    {"too_many_inputs", HDR MODEL "  m2: {uses: fetch, with: {source: n}}\n"
     "  c: {uses: calibrate, needs: [model, m2], with: {dataset: d.txt}}\n",
     "r.yaml:6:24: stage 'c': calibrate takes exactly 1 input, got 2"},
    {"too_few_inputs", HDR "  q:\n    uses: quantize\n    with: {method: rtn}\n",
     "r.yaml:4:3: stage 'q': quantize takes 1 to 2 inputs, got 0"},
    {"inputs_for_source_stage", HDR MODEL "  m2: {uses: fetch, needs: model, with: {source: n}}\n",
     "r.yaml:5:21: stage 'm2': fetch takes no inputs, got 1"},
    {"undefined_var", HDR "  model: {uses: fetch, with: {source: \"${vars.dir}/m\"}}\n",
     "r.yaml:4:39: undefined variable 'dir' in '${vars.dir}'"},
    {"var_used_before_defined", "qpipe: 1\nname: t\nvars:\n  a: ${vars.b}\n  b: x\nstages:\n" MODEL,
     "r.yaml:4:6: undefined variable 'b' in '${vars.b}'"},
    {"unset_env_without_default", HDR "  model: {uses: fetch, with: {source: \"${env.QPIPE_TEST_SURELY_UNSET}\"}}\n",
     "r.yaml:4:39: environment variable 'QPIPE_TEST_SURELY_UNSET' is not set (write "
     "${env.QPIPE_TEST_SURELY_UNSET:-DEFAULT} to give a default)"},
    {"unterminated_interpolation", HDR "  model: {uses: fetch, with: {source: \"${vars.x\"}}\n",
     "r.yaml:4:39: unterminated '${' (write $$ for a literal '$')"},
    {"bad_interpolation", HDR "  model: {uses: fetch, with: {source: \"${HOME}\"}}\n",
     "r.yaml:4:39: cannot interpolate '${HOME}' (use ${vars.NAME}, ${env.NAME} or ${env.NAME:-DEFAULT}; $$ is a "
     "literal '$')"},
    {"bad_qpipe_version", "qpipe: 2\nname: t\nstages:\n" MODEL,
     "r.yaml:1:8: unsupported recipe format 'qpipe: 2' (this qpipe reads version 1)"},
    {"qpipe_version_not_int", "qpipe: \"1\"\nname: t\nstages:\n" MODEL,
     "r.yaml:1:8: 'qpipe' must be the integer 1 (the recipe format version)"},
    {"missing_qpipe", "name: t\nstages:\n" MODEL, "r.yaml:1:1: missing 'qpipe: 1' (the recipe format version)"},
    {"missing_name", "qpipe: 1\nstages:\n" MODEL, "r.yaml:1:1: missing required key 'name'"},
    {"name_with_slash", "qpipe: 1\nname: a/b\nstages:\n" MODEL,
     "r.yaml:2:7: 'name' must not contain '/' or control characters"},
    {"missing_stages", "qpipe: 1\nname: t\n", "r.yaml:1:1: missing required key 'stages'"},
    {"empty_stages", "qpipe: 1\nname: t\nstages: {}\n",
     "r.yaml:3:1: 'stages' is empty (a recipe needs at least one stage)"},
    {"null_stages", "qpipe: 1\nname: t\nstages:\n",
     "r.yaml:3:1: 'stages' is empty (a recipe needs at least one stage)"},
    {"stages_is_list", "qpipe: 1\nname: t\nstages:\n  - model\n",
     "r.yaml:4:3: 'stages' must be a mapping of stage id to stage, not a list"},
    {"bad_stage_id", HDR "  1st: {uses: fetch, with: {source: m}}\n",
     "r.yaml:4:3: invalid stage id '1st' (use letters, digits, '_' and '-', starting with a letter or '_')"},
    {"bad_stage_id_space", HDR "  \"q 4\": {uses: fetch, with: {source: m}}\n",
     "r.yaml:4:3: invalid stage id 'q 4' (use letters, digits, '_' and '-', starting with a letter or '_')"},
    {"empty_recipe", "", "r.yaml:1:1: recipe is empty (expected qpipe: 1, name: and stages:)"},
    {"recipe_not_mapping", "- a\n- b\n", "r.yaml:1:1: a recipe must be a mapping with the keys qpipe, name and stages"},
    {"two_documents", "qpipe: 1\n---\nname: t\n", "r.yaml:2:1: a recipe must be a single YAML document"},
    {"alias_bomb",
     "x:\n"
     "  a: &a [l, l, l, l, l, l, l, l, l, l]\n"
     "  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     "  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
     "  d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
     "  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
     "  f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
     "  g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n"
     "  h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n"
     "  i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]\n",
     "r.yaml:6:38: document has more than 100000 nodes (after expanding aliases)"},
    {"recursive_alias", "qpipe: 1\nname: t\nx: &a [1, *a]\n",
     "r.yaml:3:11: alias '*a' refers to a node that contains it"},
    {"undefined_alias", "qpipe: 1\nname: *nope\n", "r.yaml:2:7: alias '*nope' has no anchor '&nope' before it"},
    {"unsupported_tag", "qpipe: 1\nname: !shout t\nstages:\n" MODEL,
     "r.yaml:2:7: unsupported tag '!shout' (only standard tags like !!str, !!int, !!float, !!bool, !!null)"},
    {"tag_mismatch", HDR MODEL "  c: {uses: calibrate, needs: model, with: {dataset: d.txt, samples: !!int many}}\n",
     "r.yaml:5:70: 'many' is not an integer (tagged !!int)"},
    {"infinity_rejected", HDR MODEL "  g: {uses: gate, needs: model, with: {max_x: .inf}}\n",
     "r.yaml:5:47: '.inf': infinities and NaN are not allowed in a recipe"},
    {"integer_overflow", HDR MODEL "  c: {uses: calibrate, needs: model, with: {dataset: d.txt, seed: 99999999999999999999}}\n",
     "r.yaml:5:67: integer '99999999999999999999' is out of range"},
    {"bad_merge", HDR "  model: {<<: x, uses: fetch, with: {source: m}}\n",
     "r.yaml:4:15: the value of a '<<' merge key must be a mapping or a list of mappings"},
    /* A whole "${vars.X}" keeps X's type; the checks then apply to it at
     * the value's position. */
    {"typed_var_string_for_number", "qpipe: 1\nname: t\nvars: {threshold: \"1.0\"}\nstages:\n" MODEL
     "  g: {uses: gate, needs: model, with: {max_ppl_delta: \"${vars.threshold}\"}}\n",
     "r.yaml:6:55: parameter 'max_ppl_delta' for gate must be a number, got string '1.0'"},
    {"typed_var_bool_for_int", "qpipe: 1\nname: t\nvars: {strict: true}\nstages:\n" MODEL
     "  q: {uses: quantize, needs: model, with: {method: rtn, bits: \"${vars.strict}\"}}\n",
     "r.yaml:6:63: parameter 'bits' for quantize must be an integer, got boolean true"},
    {"typed_var_real_for_int", "qpipe: 1\nname: t\nvars: {b: 4.0}\nstages:\n" MODEL
     "  q: {uses: quantize, needs: model, with: {method: rtn, bits: '${vars.b}'}}\n",
     "r.yaml:6:63: parameter 'bits' for quantize must be an integer, got number 4"},
    {"typed_var_out_of_range", "qpipe: 1\nname: t\nvars: {b: 9}\nstages:\n" MODEL
     "  q: {uses: quantize, needs: model, with: {method: rtn, bits: \"${vars.b}\"}}\n",
     "r.yaml:6:63: parameter 'bits' for quantize must be between 2 and 8, got 9"},
    {"typed_var_not_allowed", "qpipe: 1\nname: t\nvars: {g: 100}\nstages:\n" MODEL
     "  q: {uses: quantize, needs: model, with: {method: rtn, group_size: \"${vars.g}\"}}\n",
     "r.yaml:6:69: parameter 'group_size' for quantize must be one of -1, 32, 64, 128, 256, got 100"},
    {"typed_var_int_for_string", "qpipe: 1\nname: t\nvars: {n: 5}\nstages:\n" MODEL
     "  c: {uses: calibrate, needs: model, with: {dataset: d.txt, field: \"${vars.n}\"}}\n",
     "r.yaml:6:68: parameter 'field' for calibrate must be a string, got integer 5 (${vars.n} keeps its type; "
     "write !!str \"${vars.n}\" to make it a string)"},
    {"typed_var_null_for_string", "qpipe: 1\nname: t\nvars: {none: ~}\nstages:\n" MODEL
     "  c: {uses: calibrate, needs: model, with: {dataset: \"${vars.none}\"}}\n",
     "r.yaml:6:54: parameter 'dataset' for calibrate must be a path or a list of paths, got null (no value)"},
    {"typed_var_in_list", "qpipe: 1\nname: t\nvars: {n: 5}\nstages:\n" MODEL
     "  c: {uses: calibrate, needs: model, with: {dataset: [a.txt, \"${vars.n}\"]}}\n",
     "r.yaml:6:62: parameter 'dataset' for calibrate must be a path or a list of paths, got integer 5 (${vars.n} "
     "keeps its type; write !!str \"${vars.n}\" to make it a string)"},
    {"typed_var_tagged_int", "qpipe: 1\nname: t\nvars: {t: 1.0}\nstages:\n" MODEL
     "  c: {uses: calibrate, needs: model, with: {dataset: d.txt, samples: !!int \"${vars.t}\"}}\n",
     "r.yaml:6:70: '1.0' is not an integer (tagged !!int)"},
    {"typed_var_name_not_string", "qpipe: 1\nname: \"${vars.v}\"\nvars: {v: 2}\nstages:\n" MODEL,
     "r.yaml:2:7: 'name' must be a non-empty string"},
    {"typed_var_undefined", "qpipe: 1\nname: t\nvars: {n: 5}\nstages:\n" MODEL
     "  c: {uses: calibrate, needs: model, with: {dataset: d.txt, samples: \"${vars.m}\"}}\n",
     "r.yaml:6:70: undefined variable 'm' in '${vars.m}'"},
    {"vars_not_scalar", "qpipe: 1\nname: t\nvars: {a: [1]}\nstages:\n" MODEL,
     "r.yaml:3:11: variable 'a' must be a string or a number, not a list"},
    {"bad_utf8", "qpipe: 1\nname: \xff\n", "r.yaml:2:7: invalid leading UTF-8 octet"},
    /* #14 item 1: the '<<' key carried the anchor and was freed by its
     * merge; the alias then copied freed memory */
    {"alias_of_merge_key", HDR "  model:\n    uses: fetch\n    with: {&k <<: {source: x}, sha256: {}}\n"
     "  m2: {uses: fetch, with: {source: *k}}\n",
     "r.yaml:7:36: alias '*k' refers to a '<<' merge key (anchor the merged mapping instead)"},
};

static void missing_file(void **state)
{
    (void)state;
    qp_recipe *r = NULL;
    assert_int_equal(qp_recipe_load(&r, "tests/pipeline/recipes/no-such-recipe.yaml"), QP_EUSAGE);
    assert_null(r);
    assert_string_equal(qp_error_last(), "tests/pipeline/recipes/no-such-recipe.yaml: cannot open: No such file or directory");
}

static void directory_instead_of_file(void **state)
{
    (void)state;
    char *dir = qp_test_tmpdir();
    qp_recipe *r = NULL;
    assert_int_equal(qp_recipe_load(&r, dir), QP_EUSAGE);
    char *want = qp_strfmt("%s: cannot read: Is a directory", dir);
    assert_string_equal(qp_error_last(), want);
    free(want);
    qp_test_rmtree(dir);
    free(dir);
}

/* Errors from a file carry the path exactly as given. */
static void error_from_file_names_path(void **state)
{
    (void)state;
    char *dir = qp_test_tmpdir();
    char *path = qp_strfmt("%s/bad.yaml", dir);
    qp_test_write_str(path, "qpipe: 1\nname: t\nstages:\n  q: {uses: quantize}\n");
    qp_recipe *r = NULL;
    assert_int_equal(qp_recipe_load(&r, path), QP_EUSAGE);
    char *want = qp_strfmt("%s:4:3: stage 'q': missing required parameter 'method' for quantize", path);
    assert_string_equal(qp_error_last(), want);
    free(want);
    free(path);
    qp_test_rmtree(dir);
    free(dir);
}

/* #14 item 3: each var doubles the one before; the expansion stops at the
 * first value over 1 MiB (v17: 16 bytes doubled 17 times) */
static void interpolation_doubling(void **state)
{
    (void)state;
    qp_buf b = QP_BUF_INIT;
    qp_buf_printf(&b, "qpipe: 1\nname: t\nvars:\n  v0: \"0123456789abcdef\"\n");
    for (int i = 1; i <= 40; i++)
        qp_buf_printf(&b, "  v%d: \"${vars.v%d}${vars.v%d}\"\n", i, i - 1, i - 1);
    qp_buf_printf(&b, "stages:\n" MODEL);
    qp_recipe *r = NULL;
    assert_int_equal(qp_recipe_load_string(&r, "r.yaml", b.data), QP_EUSAGE);
    assert_null(r);
    assert_string_equal(qp_error_last(),
                        "r.yaml:21:8: the interpolated value is longer than 1 MiB (a ${…} expands to too much)");
    qp_buf_free(&b);
}

/* ... and many vars just under 1 MiB each stop at the recipe's 64 MiB */
static void interpolation_total(void **state)
{
    (void)state;
    qp_buf b = QP_BUF_INIT;
    qp_buf_printf(&b, "qpipe: 1\nname: t\nvars:\n  v0: \"0123456789abcdef\"\n");
    for (int i = 1; i <= 16; i++)
        qp_buf_printf(&b, "  v%d: \"${vars.v%d}${vars.v%d}\"\n", i, i - 1, i - 1);   /* v16: 1 MiB */
    for (int i = 0; i < 100; i++)
        qp_buf_printf(&b, "  w%d: \"${vars.v16}\"\n", i);
    qp_buf_printf(&b, "stages:\n" MODEL);
    qp_recipe *r = NULL;
    assert_int_equal(qp_recipe_load_string(&r, "r.yaml", b.data), QP_EUSAGE);
    assert_null(r);
    assert_non_null(strstr(qp_error_last(), ": the recipe's interpolated values add up to more than 64 MiB"));
    qp_buf_free(&b);
}

/* #14 item 4: a recipe is a regular file of at most 16 MiB; /dev/zero and
 * a FIFO are refused without reading (or waiting on) them */
static void not_a_regular_file(void **state)
{
    (void)state;
    qp_recipe *r = NULL;
    assert_int_equal(qp_recipe_load(&r, "/dev/zero"), QP_EUSAGE);
    assert_string_equal(qp_error_last(), "/dev/zero: not a regular file (give the path of a file)");
    char *dir = qp_test_tmpdir();
    char *fifo = qp_strfmt("%s/r.yaml", dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_int_equal(qp_recipe_load(&r, fifo), QP_EUSAGE);
    char *want = qp_strfmt("%s: not a regular file (give the path of a file)", fifo);
    assert_string_equal(qp_error_last(), want);
    free(want);
    free(fifo);
    qp_test_rmtree(dir);
    free(dir);
}

static void too_large(void **state)
{
    (void)state;
    char *dir = qp_test_tmpdir();
    char *path = qp_strfmt("%s/big.yaml", dir);
    size_t n = (16u << 20) + 1;
    char *text = malloc(n + 1);
    assert_non_null(text);
    memset(text, '#', n);
    memcpy(text, "qpipe: 1\n", 9);
    text[n] = 0;
    qp_test_write(path, text, n);
    qp_recipe *r = NULL;
    assert_int_equal(qp_recipe_load(&r, path), QP_EUSAGE);
    char *want = qp_strfmt("%s: 16777217 bytes, more than the 16 MiB this file may have", path);
    assert_string_equal(qp_error_last(), want);
    free(want);
    assert_int_equal(qp_recipe_load_string(&r, "r.yaml", text), QP_EUSAGE);
    assert_string_equal(qp_error_last(), "r.yaml: 16777217 bytes, more than the 16 MiB a recipe or lock may have");
    free(text);
    free(path);
    qp_test_rmtree(dir);
    free(dir);
}

/* #14 item 2: each key was compared with every key before it (49k keys
 * with a 1000-character common prefix took 221 s).  15k such keys (15 MB)
 * and 45k short ones: a duplicate of the second key, given last, is found
 * and named with its first line. */
static void many_keys(void **state)
{
    (void)state;
    static const int counts[] = {15000, 45000};   /* under the 100k-node bound */
    for (int pass = 0; pass < 2; pass++) {
        char prefix[1001];
        memset(prefix, 'k', 1000);
        prefix[pass == 0 ? 1000 : 1] = 0;
        qp_buf b = QP_BUF_INIT;
        qp_buf_printf(&b, "qpipe: 1\nname: t\nx:\n");
        for (int i = 0; i < counts[pass]; i++)
            qp_buf_printf(&b, "  %s%d: 1\n", prefix, i);
        qp_buf_printf(&b, "  %s1: 2\n", prefix);
        qp_recipe *r = NULL;
        assert_int_equal(qp_recipe_load_string(&r, "r.yaml", b.data), QP_EUSAGE);
        char *want = qp_strfmt("r.yaml:%d:3: duplicate key '%.100s' (first given at line 5)", counts[pass] + 4,
                               pass == 0 ? prefix : "k1");
        assert_string_equal(qp_error_last(), want);
        free(want);
        qp_buf_free(&b);
    }
}

/* Anchors are looked up by name too: 20k anchors, each aliased once, and
 * a redefined anchor name means its latest node. */
static void many_anchors(void **state)
{
    (void)state;
    qp_buf b = QP_BUF_INIT;
    /* (m: an anchored plain '<<' value, not a merge key, aliases as text) */
    qp_buf_printf(&b, "qpipe: 1\nname: t\nvars:\n  a: &n first\n  b: &n second\n  c: *n\n  l: &m <<\n  m: *m\n");
    for (int i = 0; i < 20000; i++)
        qp_buf_printf(&b, "  a%d: &a%d %d\n", i, i, i);
    for (int i = 0; i < 20000; i++)
        qp_buf_printf(&b, "  b%d: *a%d\n", i, i);
    qp_buf_printf(&b, "stages:\n" MODEL);
    qp_recipe *r = load_ok(b.data);
    const json_t *vars = qp_recipe_vars(r);
    assert_string_equal(json_string_value(json_object_get(vars, "c")), "second");
    assert_string_equal(json_string_value(json_object_get(vars, "m")), "<<");
    assert_int_equal(json_integer_value(json_object_get(vars, "b19999")), 19999);
    qp_recipe_free(r);
    qp_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest fixed[] = {
        cmocka_unit_test(missing_file),
        cmocka_unit_test(directory_instead_of_file),
        cmocka_unit_test(error_from_file_names_path),
        cmocka_unit_test(interpolation_doubling),
        cmocka_unit_test(interpolation_total),
        cmocka_unit_test(not_a_regular_file),
        cmocka_unit_test(too_large),
        cmocka_unit_test(many_keys),
        cmocka_unit_test(many_anchors),
    };
    return run_recipe_tests("recipe_errors", fixed, sizeof(fixed) / sizeof(fixed[0]), cases,
                            sizeof(cases) / sizeof(cases[0]));
}
