/* Recipe loading: interpolation, typing, defaults, order, paths, digest. */
#include "tests/pipeline/recipe_test_helpers.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"
#include "common/fsutil.h"
#include "common/hash.h"
#include "pipeline/key.h"
#include "pipeline/recipe.h"

static const char *house =
    "qpipe: 1\n"
    "name: house-llama-w4\n"
    "vars: {model_dir: \"${env.QPIPE_TEST_MODELS:-../shared/models}/house-llama\"}\n"
    "stages:\n"
    "  model:  {uses: fetch,    with: {source: \"${vars.model_dir}\"}}\n"
    "  calib:  {uses: calibrate, needs: [model], with: {dataset: data/calib.txt, samples: 128, seq_len: 256, seed: 0}}\n"
    "  q4:     {uses: quantize, needs: [model, calib], with: {method: gptq, bits: 4, group_size: 128}}\n"
    "  base:   {uses: evaluate, needs: [model], with: {dataset: data/eval.txt}}\n"
    "  q4eval: {uses: evaluate, needs: [q4], with: {dataset: data/eval.txt, reference: base}}\n"
    "  gate:   {uses: gate, needs: [base, q4eval], with: {max_ppl_delta: 0.5}}\n"
    "  pkg:    {uses: package, needs: [q4, gate], with: {format: gguf, out: dist/}}\n";

static const json_t *params_of(const qp_recipe *r, const char *id)
{
    return stage_of(r, id)->params;
}

static void full_recipe(void **state)
{
    (void)state;
    unsetenv("QPIPE_TEST_MODELS");
    qp_recipe *r = load_ok(house);
    assert_string_equal(qp_recipe_name(r), "house-llama-w4");
    assert_string_equal(qp_recipe_path(r), "r.yaml");
    assert_int_equal(qp_recipe_stage_count(r), 7);
    const char *order[] = {"model", "calib", "q4", "base", "q4eval", "gate", "pkg"};
    for (size_t i = 0; i < 7; i++)
        assert_string_equal(qp_recipe_stage(r, i)->id, order[i]);
    assert_null(qp_recipe_stage(r, 7));
    assert_int_equal(qp_recipe_find(r, "gate"), 5);
    assert_int_equal(qp_recipe_find(r, "nope"), -1);

    const qp_stage_decl *q4 = qp_recipe_stage(r, 2);
    assert_string_equal(q4->kind->name, "quantize");
    assert_int_equal(q4->n_needs, 2);
    assert_string_equal(q4->needs[0], "model");
    assert_string_equal(q4->needs[1], "calib");
    assert_int_equal(q4->need_index[0], 0);
    assert_int_equal(q4->need_index[1], 1);
    assert_int_equal(q4->mark.line, 7);
    assert_int_equal(q4->mark.col, 3);
    assert_json(q4->param_marks, "{\"method\": \"7:66\", \"bits\": \"7:78\", \"group_size\": \"7:93\"}");

    assert_json(params_of(r, "model"),
                "{\"source\": \"../shared/models/house-llama\", \"rev\": \"\", \"path\": \"\", \"type\": \"auto\", "
                "\"sha256\": {}, \"allow\": [], \"ignore\": []}");
    assert_json(params_of(r, "calib"),
                "{\"dataset\": [\"data/calib.txt\"], \"field\": \"text\", \"samples\": 128, \"seq_len\": 256, "
                "\"seed\": 0, \"hessians\": true}");
    /* defaults filled with their proper JSON types, every parameter of the
     * table in the table's order (quantize's table grows; its length is
     * not this test's business) */
    const json_t *qp = params_of(r, "q4");
    assert_string_equal(json_string_value(json_object_get(qp, "method")), "gptq");
    assert_int_equal(json_integer_value(json_object_get(qp, "bits")), 4);
    assert_int_equal(json_integer_value(json_object_get(qp, "group_size")), 128);
    assert_true(json_is_false(json_object_get(qp, "sym")));
    assert_string_equal(json_string_value(json_object_get(qp, "type")), "Q4_K_M");
    assert_true(json_is_real(json_object_get(qp, "damp_percent")));
    assert_true(json_real_value(json_object_get(qp, "damp_percent")) == 0.01);
    assert_json(json_object_get(qp, "override"), "[]");
    void *it = json_object_iter((json_t *)qp);
    for (const qp_param_spec *p = q4->kind->params; p && p->name; p++, it = json_object_iter_next((json_t *)qp, it)) {
        assert_non_null(it);
        assert_string_equal(json_object_iter_key(it), p->name);
    }
    assert_null(it);
    assert_true(json_is_real(json_object_get(params_of(r, "gate"), "max_ppl_delta")));
    assert_json(params_of(r, "q4eval"),
                "{\"dataset\": [\"data/eval.txt\"], \"field\": \"text\", \"protocol\": \"windows\", \"ctx\": 0, "
                "\"max_tokens\": 0, \"max_chunks\": 0, \"mc\": \"\", \"reference\": \"base\"}");
    assert_json(params_of(r, "pkg"), "{\"format\": \"gguf\", \"out\": \"dist/\", \"name\": \"\", \"dtype\": \"auto\", \"max_shard_size\": \"5GB\", \"base_model\": \"\", \"license\": \"\"}");
    assert_json(qp_recipe_vars(r), "{\"model_dir\": \"../shared/models/house-llama\"}");

    char digest[QP_HEX_LEN];
    qp_sha256_buf(digest, house, strlen(house));
    assert_string_equal(qp_recipe_digest(r), digest);
    qp_recipe_free(r);
}

static void interpolation(void **state)
{
    (void)state;
    setenv("QPIPE_TEST_SET", "data", 1);
    setenv("QPIPE_TEST_EMPTY", "", 1);
    unsetenv("QPIPE_TEST_UNSET");
    qp_recipe *r = load_ok("qpipe: 1\n"
                           "name: ${vars.empty}run-${env.QPIPE_TEST_SET:-x}\n"
                           "vars:\n"
                           "  root: ${env.QPIPE_TEST_UNSET:-/srv}\n"
                           "  base: ${vars.root}/m\n"          /* nested var */
                           "  empty: ${env.QPIPE_TEST_UNSET:-}\n" /* empty default */
                           "  blank: ${env.QPIPE_TEST_EMPTY:-fallback}\n"
                           "  kept: \"${env.QPIPE_TEST_EMPTY}\"\n"
                           "  price: cost $$5 and $ alone\n"
                           "  deep: ${env.QPIPE_TEST_UNSET:-${vars.root}/d}\n"
                           "  n: 64\n"
                           "stages:\n"
                           "  model:\n"
                           "    uses: fetch\n"
                           "    with:\n"
                           "      source: ${vars.base}/${vars.n}\n"
                           "  c:\n"
                           "    uses: calibrate\n"
                           "    needs: model\n"
                           "    with:\n"
                           "      dataset: ${vars.deep}/x.txt\n"
                           "      samples: ${vars.n}\n"
                           "      field: \"$${vars.n}\"\n");
    assert_json(qp_recipe_vars(r),
                "{\"root\": \"/srv\", \"base\": \"/srv/m\", \"empty\": null, \"blank\": \"fallback\", \"kept\": \"\", "
                "\"price\": \"cost $5 and $ alone\", \"deep\": \"/srv/d\", \"n\": 64}");
    assert_string_equal(qp_recipe_name(r), "run-data");
    assert_string_equal(json_string_value(json_object_get(params_of(r, "model"), "source")), "/srv/m/64");
    const json_t *c = params_of(r, "c");
    assert_json(json_object_get(c, "dataset"), "[\"/srv/d/x.txt\"]");
    /* typed after interpolation: a plain ${vars.n} is the integer 64 */
    assert_true(json_is_integer(json_object_get(c, "samples")));
    assert_int_equal(json_integer_value(json_object_get(c, "samples")), 64);
    assert_string_equal(json_string_value(json_object_get(c, "field")), "${vars.n}");
    qp_recipe_free(r);
    unsetenv("QPIPE_TEST_SET");
    unsetenv("QPIPE_TEST_EMPTY");
}

static void scalar_types(void **state)
{
    (void)state;
    qp_recipe *r = load_ok("qpipe: 1\nname: t\nstages:\n"
                           "  m: {uses: fetch, with: {source: !!str 123}}\n"
                           "  q:\n"
                           "    uses: quantize\n"
                           "    needs: m\n"
                           "    with:\n"
                           "      method: rtn\n"
                           "      bits: 0x8\n"
                           "      group_size: -1\n"
                           "      sym: True\n"
                           "      damp_percent: 1e-2\n"
                           "      skip: lm_head\n"
                           "      override: {match: \"*.down_proj*\", bits: 8}\n"
                           "  c: {uses: calibrate, needs: m, with: {dataset: d, seed: 4_294_967_295, samples: +7}}\n");
    assert_json(json_object_get(params_of(r, "m"), "source"), "\"123\"");
    const json_t *q = params_of(r, "q");
    assert_int_equal(json_integer_value(json_object_get(q, "bits")), 8);
    assert_int_equal(json_integer_value(json_object_get(q, "group_size")), -1);
    assert_true(json_is_true(json_object_get(q, "sym")));
    assert_true(json_real_value(json_object_get(q, "damp_percent")) == 0.01);
    assert_json(json_object_get(q, "skip"), "[\"lm_head\"]");
    assert_json(json_object_get(q, "override"), "[{\"match\": \"*.down_proj*\", \"bits\": 8}]");
    assert_int_equal(json_integer_value(json_object_get(params_of(r, "c"), "seed")), 4294967295LL);
    assert_int_equal(json_integer_value(json_object_get(params_of(r, "c"), "samples")), 7);
    qp_recipe_free(r);
}

/* Same recipe, keys and stages reordered, comments and flow/block style
 * changed: the params must be equal JSON and the order the same. */
static void key_order_independence(void **state)
{
    (void)state;
    qp_recipe *a = load_ok(house);
    qp_recipe *b = load_ok(
        "# reordered\n"
        "stages:\n"
        "  pkg:    {with: {out: dist/, format: gguf}, needs: [q4, gate], uses: package}\n"
        "  gate:   {needs: [base, q4eval], uses: gate, with: {max_ppl_delta: 0.5}}  # threshold\n"
        "  q4eval: {with: {reference: base, dataset: data/eval.txt}, uses: evaluate, needs: [q4]}\n"
        "  base:   {with: {dataset: [data/eval.txt]}, needs: model, uses: evaluate}\n"
        "  q4:\n"
        "    # GPTQ at 4 bits\n"
        "    with:\n"
        "      group_size: 128\n"
        "      bits: 4\n"
        "      method: gptq\n"
        "    needs: [model, calib]\n"
        "    uses: quantize\n"
        "  calib:  {with: {seed: 0, seq_len: 256, samples: 128, dataset: data/calib.txt}, uses: calibrate, needs: model}\n"
        "  model:  {with: {source: ../shared/models/house-llama}, uses: fetch}\n"
        "name: house-llama-w4\n"
        "qpipe: 1\n");
    assert_int_equal(qp_recipe_stage_count(a), qp_recipe_stage_count(b));
    for (size_t i = 0; i < qp_recipe_stage_count(a); i++) {
        const qp_stage_decl *sa = qp_recipe_stage(a, i);
        const qp_stage_decl *sb = qp_recipe_stage(b, (size_t)qp_recipe_find(b, sa->id));
        assert_true(json_equal(sa->params, sb->params));
        /* even the key order of params is the table's, not the file's */
        char *ja = json_dumps(sa->params, JSON_COMPACT), *jb = json_dumps(sb->params, JSON_COMPACT);
        assert_string_equal(ja, jb);
        free(ja);
        free(jb);
    }
    assert_string_not_equal(qp_recipe_digest(a), qp_recipe_digest(b));
    /* the reversed file still runs producers first; among ready stages the
     * earlier in this file (base before calib) goes first */
    const char *order[] = {"model", "base", "calib", "q4", "q4eval", "gate", "pkg"};
    for (size_t i = 0; i < 7; i++)
        assert_string_equal(qp_recipe_stage(b, i)->id, order[i]);
    qp_recipe_free(a);
    qp_recipe_free(b);
}

/* A value that is exactly one ${vars.X} keeps X's type, quoted or plain;
 * mixed text, ${env.…} and tagged values are typed from their text. */
static void typed_references(void **state)
{
    (void)state;
    setenv("QPIPE_TEST_NUM", "7", 1);
    qp_recipe *r = load_ok("qpipe: 1\n"
                           "name: \"${vars.label}\"\n"
                           "vars:\n"
                           "  threshold: 1.0\n"
                           "  bits: 4\n"
                           "  strict: true\n"
                           "  v: \"4\"\n"
                           "  label: house\n"
                           "  none: ~\n"
                           "  alias: \"${vars.threshold}\"\n"
                           "  text: !!str \"${vars.threshold}\"\n"
                           "  mixed: \"${vars.bits}${vars.bits}\"\n"
                           "  env: \"${env.QPIPE_TEST_NUM}\"\n"
                           "  gs: \"128\"\n"
                           "stages:\n"
                           "  m: {uses: fetch, with: {source: \"${vars.label}\"}}\n"
                           "  q:\n"
                           "    uses: quantize\n"
                           "    needs: m\n"
                           "    with:\n"
                           "      method: rtn\n"
                           "      bits: \"${vars.bits}\"\n"
                           "      sym: ${vars.strict}\n"
                           "      damp_percent: '${vars.threshold}'\n"
                           "      group_size: !!int \"${vars.gs}\"\n"
                           "  c:\n"
                           "    uses: calibrate\n"
                           "    needs: m\n"
                           "    with:\n"
                           "      dataset: \"${vars.label}\"\n"
                           "      field: ${vars.v}\n"
                           "      samples: ${vars.bits}${vars.bits}\n"
                           "      seed: ${env.QPIPE_TEST_NUM}\n"
                           "  c2:\n"
                           "    uses: calibrate\n"
                           "    needs: m\n"
                           "    with: {dataset: [\"${vars.v}\", \"${vars.env}\"], field: !!str \"${vars.threshold}\"}\n"
                           "  e: {uses: evaluate, needs: q, with: {dataset: d}}\n"
                           "  g:\n"
                           "    uses: gate\n"
                           "    needs: e\n"
                           "    with:\n"
                           "      max_ppl_delta: \"${vars.threshold}\"\n"
                           "      max_kld_mean: \"${vars.alias}\"\n"
                           "      min_top1: !!float \"${vars.bits}\"\n");
    assert_json(qp_recipe_vars(r),
                "{\"threshold\": 1.0, \"bits\": 4, \"strict\": true, \"v\": \"4\", \"label\": \"house\", "
                "\"none\": null, \"alias\": 1.0, \"text\": \"1.0\", \"mixed\": \"44\", \"env\": \"7\", \"gs\": \"128\"}");
    assert_true(json_is_real(json_object_get(qp_recipe_vars(r), "alias")));
    assert_true(json_is_integer(json_object_get(qp_recipe_vars(r), "bits")));
    assert_string_equal(qp_recipe_name(r), "house");
    const json_t *q = params_of(r, "q");
    assert_true(json_is_integer(json_object_get(q, "bits")));
    assert_int_equal(json_integer_value(json_object_get(q, "bits")), 4);
    assert_true(json_is_true(json_object_get(q, "sym")));
    assert_true(json_is_real(json_object_get(q, "damp_percent")));
    assert_true(json_real_value(json_object_get(q, "damp_percent")) == 1.0);
    assert_int_equal(json_integer_value(json_object_get(q, "group_size")), 128); /* the tag types the text */
    const json_t *c = params_of(r, "c");
    assert_json(json_object_get(c, "field"), "\"4\"");             /* a string var stays a string */
    assert_int_equal(json_integer_value(json_object_get(c, "samples")), 44); /* plain text "44" */
    assert_int_equal(json_integer_value(json_object_get(c, "seed")), 7);     /* plain text "7" */
    assert_json(json_object_get(params_of(r, "c2"), "dataset"), "[\"4\", \"7\"]");
    assert_json(json_object_get(params_of(r, "c2"), "field"), "\"1.0\"");
    char *g = json_dumps(params_of(r, "g"), JSON_COMPACT | JSON_REAL_PRECISION(17));
    assert_string_equal(g, "{\"max_kld_mean\":1.0,\"max_ppl_delta\":1.0,\"min_top1\":4.0}");
    free(g);
    qp_recipe_free(r);
    unsetenv("QPIPE_TEST_NUM");
}

/* Stage key of stage `id` (fixed input digests: only params differ). */
static void key_of(char key[QP_HEX_LEN], char **canon, const qp_recipe *r, const char *id, qp_cache *cache)
{
    const qp_stage_decl *s = qp_recipe_stage(r, (size_t)qp_recipe_find(r, id));
    const char *digests[8];
    for (size_t i = 0; i < 8; i++)
        digests[i] = "0000000000000000000000000000000000000000000000000000000000000000";
    json_t *desc = NULL;
    int rc = qp_key_describe(&desc, r, s, cache, digests, digests);
    if (rc)
        fprintf(stderr, "%s\n", qp_error_last());
    assert_int_equal(rc, 0);
    qp_key_hash(key, desc);
    *canon = qp_key_canonical(desc);
    json_decref(desc);
}

/* Moving a literal into a var must not change a stage key (nothing
 * reruns), while changing the var's value must. */
static void typed_var_keeps_the_key(void **state)
{
    (void)state;
    const char *stages_fmt = "qpipe: 1\nname: t\n%s"
                             "stages:\n"
                             "  m: {uses: fetch, with: {source: m}}\n"
                             "  q: {uses: quantize, needs: m, with: {method: rtn, bits: %s, sym: %s}}\n"
                             "  e: {uses: evaluate, needs: q, with: {dataset: d}}\n"
                             "  g: {uses: gate, needs: e, with: {max_ppl_delta: %s, max_kld_mean: %s}}\n";
    char *lit = qp_strfmt(stages_fmt, "", "4", "true", "1.0", "1");
    char *via = qp_strfmt(stages_fmt, "vars: {threshold: 1.0, bits: 4, strict: true, one: 1.0}\n",
                          "\"${vars.bits}\"", "\"${vars.strict}\"", "\"${vars.threshold}\"", "'${vars.one}'");
    char *other = qp_strfmt(stages_fmt, "vars: {threshold: 1.5}\n", "4", "true", "\"${vars.threshold}\"", "1");
    char *dir = qp_test_tmpdir(), *cdir = qp_strfmt("%s/cache", dir);
    qp_cache *cache = NULL;
    assert_int_equal(qp_cache_open(&cache, cdir), 0);
    qp_recipe *a = load_ok(lit), *b = load_ok(via), *c = load_ok(other);
    const char *ids[] = {"q", "g"};
    for (size_t i = 0; i < 2; i++) {
        char ka[QP_HEX_LEN], kb[QP_HEX_LEN], kc[QP_HEX_LEN], *ca, *cb, *cc;
        key_of(ka, &ca, a, ids[i], cache);
        key_of(kb, &cb, b, ids[i], cache);
        key_of(kc, &cc, c, ids[i], cache);
        assert_string_equal(cb, ca);
        assert_string_equal(kb, ka);
        if (i == 1)
            assert_string_not_equal(kc, ka);
        else
            assert_string_equal(kc, ka);
        free(ca);
        free(cb);
        free(cc);
    }
    const char *gp = "{\"max_kld_mean\":1.0,\"max_ppl_delta\":1.0}";
    char *g = json_dumps(params_of(b, "g"), JSON_COMPACT | JSON_REAL_PRECISION(17));
    assert_string_equal(g, gp);
    free(g);
    qp_recipe_free(a);
    qp_recipe_free(b);
    qp_recipe_free(c);
    qp_cache_free(cache);
    qp_test_rmtree(dir);
    free(dir);
    free(cdir);
    free(lit);
    free(via);
    free(other);
}

/* Ties go to file order; a reference is an edge that orders but is no input. */
static void topological_order(void **state)
{
    (void)state;
    qp_recipe *r = load_ok("qpipe: 1\nname: t\nstages:\n"
                           "  report: {uses: gate, needs: [ev2, ev1], with: {min_acc: 0.1}}\n"
                           "  ev2: {uses: evaluate, needs: m2, with: {dataset: d, reference: ev1}}\n"
                           "  m2: {uses: fetch, with: {source: b}}\n"
                           "  ev1: {uses: evaluate, needs: m1, with: {dataset: d}}\n"
                           "  m1: {uses: fetch, with: {source: a}}\n"
                           "  lone: {uses: run, with: {cmd: \"true\"}}\n");
    /* m2 is ready first in file order, but ev2 waits for its reference ev1 */
    const char *order[] = {"m2", "m1", "ev1", "ev2", "report", "lone"};
    for (size_t i = 0; i < 6; i++)
        assert_string_equal(qp_recipe_stage(r, i)->id, order[i]);
    const qp_stage_decl *ev2 = qp_recipe_stage(r, 3);
    assert_int_equal(ev2->n_needs, 1);
    assert_int_equal(ev2->need_index[0], 0);
    /* the reference is a link (QP_PF_STAGE), indexed in the sorted order */
    assert_int_equal(ev2->n_links, 1);
    assert_string_equal(ev2->links[0].param, "reference");
    assert_string_equal(ev2->links[0].id, "ev1");
    assert_int_equal(ev2->links[0].index, 2);
    assert_int_equal(qp_recipe_stage(r, 2)->n_links, 0);
    const qp_stage_decl *rep = qp_recipe_stage(r, 4);
    assert_string_equal(rep->needs[0], "ev2");
    assert_int_equal(rep->need_index[0], 3);
    assert_int_equal(rep->need_index[1], 2);
    for (size_t i = 0; i < qp_recipe_stage_count(r); i++) {
        const qp_stage_decl *d = qp_recipe_stage(r, i);
        for (size_t j = 0; j < d->n_needs; j++)
            assert_true(d->need_index[j] < i);
    }
    qp_recipe_free(r);
}

static void anchors_and_merge_keys(void **state)
{
    (void)state;
    qp_recipe *r = load_ok("qpipe: 1\nname: t\n"
                           "stages:\n"
                           "  m: {uses: fetch, with: {source: m}}\n"
                           "  q3:\n"
                           "    uses: quantize\n"
                           "    needs: m\n"
                           "    with: &common {method: gptq, bits: 4, act_order: true}\n"
                           "  q2:\n"
                           "    uses: quantize\n"
                           "    needs: m\n"
                           "    with: {<<: *common, bits: 2}\n"
                           "  q4: {uses: quantize, needs: m, with: *common}\n");
    const json_t *q2 = params_of(r, "q2"), *q4 = params_of(r, "q4");
    assert_int_equal(json_integer_value(json_object_get(q2, "bits")), 2);
    assert_true(json_is_true(json_object_get(q2, "act_order")));
    assert_string_equal(json_string_value(json_object_get(q2, "method")), "gptq");
    assert_true(json_equal(q4, params_of(r, "q3")));
    qp_recipe_free(r);
}

static void gate_patterns_sorted(void **state)
{
    (void)state;
    qp_recipe *r = load_ok("qpipe: 1\nname: t\nstages:\n"
                           "  m: {uses: fetch, with: {source: m}}\n"
                           "  e: {uses: evaluate, needs: m, with: {dataset: d}}\n"
                           "  g: {uses: gate, needs: e, with: {min_top1: 0.9, max_ppl_delta: 1, max_kld_mean: 0.05}}\n");
    char *s = json_dumps(params_of(r, "g"), JSON_COMPACT | JSON_REAL_PRECISION(6));
    assert_string_equal(s, "{\"max_kld_mean\":0.05,\"max_ppl_delta\":1.0,\"min_top1\":0.9}");
    free(s);
    qp_recipe_free(r);
}

/* qp_recipe_dir is absolute; path params stay exactly as written. */
static void relative_paths(void **state)
{
    (void)state;
    char *dir = qp_test_tmpdir();
    char *sub = qp_strfmt("%s/recipes/house", dir);
    char *path = qp_strfmt("%s/r.yaml", sub);
    const char *text = "qpipe: 1\nname: t\nstages:\n"
                       "  model: {uses: fetch, with: {source: ../models/m}}\n"
                       "  c: {uses: calibrate, needs: model, with: {dataset: [data/a.txt, /abs/b.txt]}}\n";
    qp_test_write_str(path, text);
    qp_recipe *r = NULL;
    assert_int_equal(qp_recipe_load(&r, path), 0);
    char *real = realpath(sub, NULL);
    assert_non_null(real);
    assert_string_equal(qp_recipe_dir(r), real);
    assert_string_equal(qp_recipe_path(r), path);
    assert_json(json_object_get(params_of(r, "c"), "dataset"), "[\"data/a.txt\", \"/abs/b.txt\"]");
    assert_string_equal(json_string_value(json_object_get(params_of(r, "model"), "source")), "../models/m");
    char digest[QP_HEX_LEN];
    assert_int_equal(qp_sha256_file(digest, path), 0);
    assert_string_equal(qp_recipe_digest(r), digest);
    qp_recipe_free(r);

    /* From a string with a relative path: the directory is made absolute. */
    char cwd[PATH_MAX];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(qp_recipe_load_string(&r, "not/here/r.yaml", text), 0);
    char *want = qp_strfmt("%s/not/here", cwd);
    assert_string_equal(qp_recipe_dir(r), want);
    qp_recipe_free(r);
    assert_int_equal(qp_recipe_load_string(&r, "r.yaml", text), 0);
    assert_string_equal(qp_recipe_dir(r), cwd);
    qp_recipe_free(r);
    free(want);
    free(real);
    free(path);
    free(sub);
    qp_test_rmtree(dir);
    free(dir);
}

/* The example recipes shipped as fixtures load. */
static void fixtures_load(void **state)
{
    (void)state;
    qp_recipe *r = NULL;
    int rc = qp_recipe_load(&r, "tests/pipeline/recipes/house-llama-w4.yaml");
    if (rc)
        fprintf(stderr, "%s\n", qp_error_last());
    assert_int_equal(rc, 0);
    assert_int_equal(qp_recipe_stage_count(r), 7);
    assert_string_equal(qp_recipe_name(r), "house-llama-w4");
    qp_recipe_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(full_recipe),
        cmocka_unit_test(interpolation),
        cmocka_unit_test(scalar_types),
        cmocka_unit_test(typed_references),
        cmocka_unit_test(typed_var_keeps_the_key),
        cmocka_unit_test(key_order_independence),
        cmocka_unit_test(topological_order),
        cmocka_unit_test(anchors_and_merge_keys),
        cmocka_unit_test(gate_patterns_sorted),
        cmocka_unit_test(relative_paths),
        cmocka_unit_test(fixtures_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
