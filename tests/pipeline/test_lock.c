/* RECIPE.lock as YAML: exact text for a known document, exact round trips
 * (load(write(x)) == x) for every value type a lock holds, old JSON locks,
 * and one exact "FILE:LINE:COL: …" line for each kind of malformed lock. */
#include "tests/support/testutil.h"

#include <float.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/fsutil.h"
#include "pipeline/lock.h"

#define HEX_A "3fa9c0d1e2b3a4958677685940312a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f"
#define DIGITS "1234567890123456789012345678901234567890123456789012345678901234"

/* A lock skeleton around `params` (borrowed). */
static json_t *lock_with(json_t *params)
{
    json_t *stage = json_pack("{s:s, s:s, s:s, s:O}", "kind", "run", "key", HEX_A, "output", DIGITS, "params", params);
    return json_pack("{s:i, s:s, s:o}", "qpipe_lock", 1, "recipe", "r.yaml", "stages",
                     json_pack("{s:o}", "s", stage));
}

/* format -> parse must give back an equal value, and formatting that again
 * the same bytes. */
static void assert_round_trip(const json_t *doc)
{
    char *text = NULL, *again = NULL;
    json_t *back = NULL;
    assert_int_equal(qp_lock_format(&text, doc), 0);
    int rc = qp_lock_parse(&back, "r.yaml.lock", text, strlen(text));
    if (rc != 0 || !json_equal(back, doc)) {
        char *want = json_dumps(doc, JSON_SORT_KEYS), *got = back ? json_dumps(back, JSON_SORT_KEYS) : NULL;
        fail_msg("round trip failed (%s)\n--- text\n%s--- want %s\n--- got  %s", qp_error_last(), text, want,
                 got ? got : "(none)");
    }
    assert_int_equal(qp_lock_format(&again, back), 0);
    assert_string_equal(again, text);
    free(again);
    free(text);
    json_decref(back);
}

static const char *const tricky[] = {
    /* numbers of YAML 1.2 and 1.1 */
    "123", "0123", "-1", "+1", "1.5", "1.", ".5", "1e5", "1E+5", "12e45", "0x1F", "0o17", "0b101", "017", "1_000",
    "1:30", "190:20:30.15", "0.3.0", ".inf", "-.Inf", "+.INF", ".NaN", ".nan", DIGITS,
    /* booleans and null, YAML 1.1 spellings too */
    "true", "True", "TRUE", "false", "FALSE", "yes", "No", "on", "OFF", "y", "N", "null", "Null", "NULL", "~", "",
    /* indicators, comments, spaces */
    " lead", "trail ", "a: b", "a:", "a:b", "a #c", "#c", "a#b", "- x", "-", "-1x", "?", "? x", ":", ":x", "[x]",
    "{x}", "a, b", "*a", "&a", "!t", "!!str", "|", ">", "'q'", "\"dq\"", "it's", "%p", "@a", "`b", "<<", "=",
    "...", "---", "--- x", "... x",
    /* dates */
    "2024-01-31", "2024-1-1T10:00:00Z", "2024-01-31 x",
    /* escapes and non-ASCII */
    "line1\nline2", "\n", "tab\there", "cr\r", "\x01" "ctl", "\x7f", "back\\slash", "quote\"s", "\"",
    "\xc3\xa9 \xc3\xbc \xe4\xb8\xad\xe6\x96\x87", "\xc2\x85nel", "\xc2\x9f", "\xe2\x80\xa8ls", "\xe2\x80\xa9",
    "\xef\xbb\xbf" "bom", "\xef\xbf\xbf", "\xc2\xa0nbsp", "\xf0\x9f\x98\x80", "x\xe2\x80\xa8",
    /* ordinary strings that stay plain */
    HEX_A, "words.txt", "data/shakespeare/valid.txt", "Q4_K_M", "echo '{\"w\": 1}' > m.json", "a b",
};

static void test_round_trip_strings(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(tricky) / sizeof(tricky[0]); i++) {
        /* each as a value, as a key, and as a list item */
        json_t *p = json_pack("{s:s, s:i, s:[s]}", "v", tricky[i], tricky[i], 1, "l", tricky[i]);
        assert_non_null(p);
        json_t *doc = lock_with(p);
        assert_round_trip(doc);
        json_decref(doc);
        json_decref(p);
    }
}

static void test_round_trip_values(void **state)
{
    (void)state;
    const double reals[] = {0.1, 5.0, -0.0, 0.0, 1e20, 1e21, 1e-300, 5e-324, DBL_MAX, -DBL_MAX, 1.0 / 3.0, -2.5,
                            123456789012345678.0, 2.5e-5, 0.1 + 0.2, 100.0};
    json_t *reals_j = json_array();
    for (size_t i = 0; i < sizeof(reals) / sizeof(reals[0]); i++)
        json_array_append_new(reals_j, json_real(reals[i]));
    char long_key[1500];
    memset(long_key, 'k', sizeof(long_key) - 1);
    long_key[sizeof(long_key) - 1] = '\0';
    json_t *p = json_pack("{s:[I,I,I,i,i], s:o, s:b, s:b, s:n, s:{}, s:[], s:[{}, [], [[]], [i, [i, {s:s}]]],"
                          " s:{s:{s:{s:[]}}}, s:{s:i, s:{s:s}}, s:[{s:i, s:[s]}], s:[{}]}",
                          "ints", (json_int_t)LLONG_MAX, (json_int_t)LLONG_MIN, (json_int_t)0, -1, 1,
                          "reals", reals_j, "t", 1, "f", 0, "nothing",
                          "empty_map", "empty_list", "nested", 1, 2, "a", "b",
                          "deep", "x", "y", "z", "long", long_key, 7, "inner", long_key, "v",
                          "seq_of_maps", long_key, 1, "l", "x", "seq_of_empty");
    assert_non_null(p);
    json_t *doc = lock_with(p);
    assert_round_trip(doc);
    /* the types themselves survive: 5.0 stays a real, "123" a string */
    char *text = NULL;
    json_t *back = NULL;
    assert_int_equal(qp_lock_format(&text, doc), 0);
    assert_int_equal(qp_lock_parse(&back, "r.yaml.lock", text, strlen(text)), 0);
    const json_t *bp = json_object_get(json_object_get(json_object_get(back, "stages"), "s"), "params");
    assert_true(json_is_real(json_array_get(json_object_get(bp, "reals"), 1)));
    assert_true(json_is_integer(json_array_get(json_object_get(bp, "ints"), 0)));
    assert_true(json_integer_value(json_array_get(json_object_get(bp, "ints"), 1)) == LLONG_MIN);
    free(text);
    json_decref(back);
    json_decref(doc);
    json_decref(p);
    /* an empty document object */
    json_t *empty = json_object();
    assert_int_equal(qp_lock_format(&text, empty), 0);
    assert_string_equal(text, "# qpipe lock: generated by `qpipe lock`, do not edit\n{}\n");
    free(text);
    json_decref(empty);
}

/* The exact text: key order as given, 2-space block style, quotes only
 * where needed. */
static void test_format_exact(void **state)
{
    (void)state;
    json_t *doc = json_pack(
        "{s:i, s:s, s:s, s:{s:{s:s, s:s, s:s, s:[{s:s, s:s}], s:{}, s:{s:{s:s}}, s:{s:f, s:i, s:b, s:n, s:s,"
        " s:s, s:[s, s], s:[[i, i], {}], s:f, s:f, s:s}}}}",
        "qpipe_lock", 1, "qpipe_version", "0.1.0", "recipe", "recipes/r.yaml", "stages", "src", "kind", "fetch",
        "key", HEX_A, "output", DIGITS, "inputs", "digest", HEX_A, "id", "model", "files", "reads", "files",
        "words.txt", HEX_A, "params", "max", 5.0, "n", 3, "on", 1, "none", "cmd", "echo 'x' > m.json # note",
        "type", "Q4_K_M", "outs", "yes", "a: b", "matrix", 1, 2, "small", 2.5e-5, "big", 1e21, "date", "2024-01-31");
    assert_non_null(doc);
    char *text = NULL;
    assert_int_equal(qp_lock_format(&text, doc), 0);
    assert_string_equal(text,
                        "# qpipe lock: generated by `qpipe lock`, do not edit\n"
                        "qpipe_lock: 1\n"
                        "qpipe_version: \"0.1.0\"\n"
                        "recipe: recipes/r.yaml\n"
                        "stages:\n"
                        "  src:\n"
                        "    kind: fetch\n"
                        "    key: " HEX_A "\n"
                        "    output: \"" DIGITS "\"\n"
                        "    inputs:\n"
                        "      - digest: " HEX_A "\n"
                        "        id: model\n"
                        "    files: {}\n"
                        "    reads:\n"
                        "      files:\n"
                        "        words.txt: " HEX_A "\n"
                        "    params:\n"
                        "      max: 5.0\n"
                        "      \"n\": 3\n"
                        "      \"on\": true\n"
                        "      none: null\n"
                        "      cmd: \"echo 'x' > m.json # note\"\n"
                        "      type: Q4_K_M\n"
                        "      outs:\n"
                        "        - \"yes\"\n"
                        "        - \"a: b\"\n"
                        "      matrix:\n"
                        "        -\n"
                        "          - 1\n"
                        "          - 2\n"
                        "        - {}\n"
                        "      small: 2.5e-05\n"
                        "      big: 1.0e+21\n"
                        "      date: \"2024-01-31\"\n");
    free(text);
    json_decref(doc);
}

/* Locks written by earlier versions are JSON; they still load. */
static void test_old_json_lock(void **state)
{
    (void)state;
    json_t *p = json_pack("{s:f, s:s, s:s, s:[], s:{}, s:n, s:b, s:I}", "max", 5.0, "digits", DIGITS, "esc",
                          "a/b\"\\\n\t\xc3\xa9", "outs", "sha256", "x", "sym", 0, "big", (json_int_t)LLONG_MAX);
    json_t *doc = lock_with(p);
    char *text = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
    json_t *back = NULL;
    assert_int_equal(qp_lock_parse(&back, "r.yaml.lock", text, strlen(text)), 0);
    assert_true(json_equal(back, doc));
    json_decref(back);
    free(text);
    /* compact, escaped slashes */
    const char *compact = "{\"qpipe_lock\":1,\"stages\":{\"s\":{\"key\":\"k\",\"output\":\"o\\/p\","
                          "\"params\":{\"r\":1e+20,\"u\":\"\\u00e9\"}}}}";
    assert_int_equal(qp_lock_parse(&back, "r.yaml.lock", compact, strlen(compact)), 0);
    const json_t *s = json_object_get(json_object_get(back, "stages"), "s");
    assert_string_equal(json_string_value(json_object_get(s, "output")), "o/p");
    assert_true(json_is_real(json_object_get(json_object_get(s, "params"), "r")));
    assert_true(json_real_value(json_object_get(json_object_get(s, "params"), "r")) == 1e20);
    assert_string_equal(json_string_value(json_object_get(json_object_get(s, "params"), "u")), "\xc3\xa9");
    json_decref(back);
    json_decref(doc);
    json_decref(p);
}

typedef struct {
    const char *name, *path, *text, *msg;
} bad_case;

#define TOP "qpipe_lock: 1\nstages:\n"
#define STAGE "  s:\n    key: k\n    output: o\n"
#define HINT "; regenerate it with 'qpipe lock r.yaml'"

static const bad_case bad[] = {
    {"json_unclosed", "r.yaml.lock", "{\"qpipe_lock\": 1\n",
     "r.yaml.lock:2:1: did not find expected ',' or '}' (while parsing a flow mapping at line 1)" HINT},
    {"block_syntax", "r.yaml.lock", TOP "  s: a: b\n",
     "r.yaml.lock:3:7: mapping values are not allowed in this context" HINT},
    {"tab_indent", "r.yaml.lock", TOP "\ts:\n", "r.yaml.lock:3:1: tab character in indentation (indent with spaces)"
     HINT},
    {"duplicate_stage", "r.yaml.lock", TOP STAGE STAGE,
     "r.yaml.lock:6:3: duplicate key 's' (first given at line 3)" HINT},
    {"empty", "r.yaml.lock", "# nothing\n",
     "r.yaml.lock:1:1: not a qpipe lock: a mapping with 'qpipe_lock: 2' expected, found an empty file" HINT},
    {"list", "r.yaml.lock", "- a\n",
     "r.yaml.lock:1:1: not a qpipe lock: a mapping with 'qpipe_lock: 2' expected, found a list" HINT},
    {"no_version", "r.yaml.lock", "stages: {}\n", "r.yaml.lock:1:1: not a qpipe lock: no 'qpipe_lock' key" HINT},
    {"version_3", "r.yaml.lock", "qpipe_lock: 3\nstages: {}\n",
     "r.yaml.lock:1:13: lock format 3 is not supported (this qpipe reads formats 1 and 2)" HINT},
    /* #14 item 14: format 2 ends with its digest line; without it the lock
     * was cut short (it used to read as "files … differs from the lock") */
    {"v2_no_end_line", "r.yaml.lock", "qpipe_lock: 2\nstages: {}\n",
     "r.yaml.lock: truncated: the lock does not end with its '# end of lock: sha256…' line" HINT},
    {"v2_spaced_no_end_line", "r.yaml.lock", "qpipe_lock:  2  # two\nstages: {}\n",
     "r.yaml.lock: truncated: the lock does not end with its '# end of lock: sha256…' line" HINT},
    {"v2_json_no_end_line", "r.yaml.lock", "{\"qpipe_lock\": 2, \"stages\": {}}\n",
     "r.yaml.lock: truncated: the lock does not end with its '# end of lock: sha256…' line" HINT},
    {"v2_end_line_mismatch", "r.yaml.lock",
     "qpipe_lock: 2\nstages: {}\n# end of lock: sha256 0000000000000000000000000000000000000000000000000000000000000000\n",
     "r.yaml.lock: truncated or edited: its end line's digest does not match its text" HINT},
    {"version_string", "r.yaml.lock", "qpipe_lock: \"1\"\nstages: {}\n",
     "r.yaml.lock:1:13: 'qpipe_lock' must be an integer (1 or 2), not '1'" HINT},
    {"no_stages", "r.yaml.lock", "qpipe_lock: 1\n", "r.yaml.lock:1:1: not a qpipe lock: no 'stages' mapping" HINT},
    {"stages_list", "r.yaml.lock", TOP "  - s\n",
     "r.yaml.lock:3:3: 'stages' must be a mapping of stage ids, not a list" HINT},
    {"stages_empty", "r.yaml.lock", TOP, "r.yaml.lock:2:8: 'stages' must be a mapping of stage ids, not an empty value"
     HINT},
    {"stage_scalar", "r.yaml.lock", TOP "  s: x\n", "r.yaml.lock:3:6: stage 's' must be a mapping, not 'x'"
     HINT},
    {"no_output", "r.yaml.lock", TOP "  s:\n    key: k\n", "r.yaml.lock:4:5: stage 's' has no 'output' digest" HINT},
    {"digit_digest_unquoted", "r.yaml.lock", TOP "  s:\n    key: k\n    output: " DIGITS "\n",
     "r.yaml.lock:5:13: integer '" DIGITS "' is out of range" HINT},
    {"short_digit_digest_unquoted", "r.yaml.lock", TOP "  s:\n    key: 0123\n    output: o\n",
     "r.yaml.lock:4:10: stage 's': 'key' must be a string digest, not an integer (quote an all-digit digest)"
     HINT},
    {"digest_bool", "r.yaml.lock", TOP "  s:\n    key: k\n    output: true\n",
     "r.yaml.lock:5:13: stage 's': 'output' must be a string digest, not 'true'" HINT},
    {"digest_real", "r.yaml.lock", TOP "  s:\n    key: k\n    output: 1e5\n",
     "r.yaml.lock:5:13: stage 's': 'output' must be a string digest, not a number (quote it)" HINT},
    {"digest_list", "r.yaml.lock", TOP "  s:\n    key: [k]\n    output: o\n",
     "r.yaml.lock:4:10: stage 's': 'key' must be a string digest, not a list" HINT},
    {"infinity", "r.yaml.lock", TOP STAGE "    params: {x: -.inf}\n",
     "r.yaml.lock:6:17: '-.inf': a lock cannot hold infinities or NaN" HINT},
    {"float_overflow", "r.yaml.lock", TOP STAGE "    params: {x: 1e999}\n",
     "r.yaml.lock:6:17: number '1e999' is out of range" HINT},
    {"bad_int_tag", "r.yaml.lock", TOP STAGE "    params: {x: !!int 1.5}\n",
     "r.yaml.lock:6:17: '1.5' is not an integer (tagged !!int)" HINT},
    {"custom_tag", "r.yaml.lock", TOP STAGE "    params: {x: !digest abc}\n",
     "r.yaml.lock:6:17: unsupported tag '!digest' (only standard tags like !!str, !!int, !!float, !!bool, !!null)"
     HINT},
    {"undefined_alias", "r.yaml.lock", TOP STAGE "    params: {x: *a}\n",
     "r.yaml.lock:6:17: alias '*a' has no anchor '&a' before it" HINT},
    {"not_named_lock", "lockfile", "qpipe_lock: 1\n",
     "lockfile:1:1: not a qpipe lock: no 'stages' mapping; regenerate it with 'qpipe lock RECIPE'"},
};

static void test_malformed(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *out = (json_t *)1;
        int rc = qp_lock_parse(&out, bad[i].path, bad[i].text, strlen(bad[i].text));
        if (rc != QP_EUSAGE || strcmp(qp_error_last(), bad[i].msg) != 0)
            fail_msg("%s: rc %d, message\n  got:  %s\n  want: %s", bad[i].name, rc, qp_error_last(), bad[i].msg);
        assert_null(out);
    }
}

/* Tagged and hand-written values read with the YAML 1.2 core rules. */
static void test_typing(void **state)
{
    (void)state;
    const char *text = TOP STAGE "    params:\n      a: !!str 123\n      b: !!float 2\n      c: 0x1F\n"
                       "      d: 0o17\n      e: ~\n      f: 'true'\n      g: |\n        two\n        lines\n"
                       "      h: 1_000\n      i: yes\n      j: -0\n      k: \"\\u00e9\\t\"\n      l:\n";
    json_t *back = NULL;
    assert_int_equal(qp_lock_parse(&back, "r.yaml.lock", text, strlen(text)), 0);
    json_t *want = json_pack("{s:s, s:f, s:i, s:i, s:n, s:s, s:s, s:s, s:s, s:i, s:s, s:n}", "a", "123", "b", 2.0,
                             "c", 31, "d", 15, "e", "f", "true", "g", "two\nlines\n", "h", "1_000", "i", "yes", "j",
                             0, "k", "\xc3\xa9\t", "l");
    const json_t *got = json_object_get(json_object_get(json_object_get(back, "stages"), "s"), "params");
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_SORT_KEYS);
        fail_msg("typed params: %s", g);
    }
    json_decref(want);
    json_decref(back);
}

static void test_load_file(void **state)
{
    (void)state;
    char *dir = qp_test_tmpdir();
    char *path = qp_path_join(dir, "r.yaml.lock");
    json_t *lock = NULL;
    assert_int_equal(qp_lock_load(&lock, path), QP_ENOTFOUND);
    char *want = qp_strfmt("%s: no lock file; create it with 'qpipe lock'", path);
    assert_string_equal(qp_error_last(), want);
    free(want);
    json_t *p = json_pack("{s:s}", "v", "0"), *doc = lock_with(p);
    json_decref(p);
    char *text = NULL;
    assert_int_equal(qp_lock_format(&text, doc), 0);
    qp_test_write_str(path, text);
    assert_int_equal(qp_lock_load(&lock, path), 0);
    assert_true(json_equal(lock, doc));
    json_decref(lock);
    qp_test_write_str(path, "qpipe_lock: 1\nstages: [\n");
    assert_int_equal(qp_lock_load(&lock, path), QP_EUSAGE);
    want = qp_strfmt("%s:3:1: did not find expected node content (while parsing a flow node at line 3); "
                     "regenerate it with 'qpipe lock %s/r.yaml'", path, dir);
    assert_string_equal(qp_error_last(), want);
    free(want);
    free(text);
    json_decref(doc);
    free(path);
    qp_test_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_strings), cmocka_unit_test(test_round_trip_values),
        cmocka_unit_test(test_format_exact),       cmocka_unit_test(test_old_json_lock),
        cmocka_unit_test(test_malformed),          cmocka_unit_test(test_typing),
        cmocka_unit_test(test_load_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
