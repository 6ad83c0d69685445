/* fetch's hf:// source without a network: the source syntax (hostile repo
 * and revision names), and qp_hf_open in offline mode resolving from the
 * cache's records (meta hf-refs / hf-tree) — listing validation, allow /
 * ignore filtering and ordering.  The HTTP side is covered by
 * tests/cli/test_fetch_hf.sh against tests/support/hub_emulator.py. */
#include "tests/support/testutil.h"

#include "cache/cache.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "stages/fetch_hf.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define COMMIT "0123456789abcdef0123456789abcdef01234567"

static void test_source_syntax(void **state)
{
    static const char *good[] = {"hf://house/llama", "hf://house/llama@main", "hf://Org-1/Name_2.x@v1.0",
                                 "hf://a/b@refs/pr/1", "hf://a/b@" COMMIT};
    static const char *bad[] = {"hf://", "hf://llama", "hf://a/b/c", "hf://../x", "hf://a/..", "hf://a/.",
                                "hf:///b", "hf://a/", "hf://a b/c", "hf://a/b@", "hf://a/b@a..b", "hf://a/b@/x",
                                "hf://a/b@x y", "hf://a/b@x\\y", "hf://a/b%2f"};
    for (size_t i = 0; i < sizeof(good) / sizeof(*good); i++) {
        if (qp_hf_check_source(good[i], "r.yaml:1:1") != 0)
            fail_msg("refused %s: %s", good[i], qp_error_last());
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        if (qp_hf_check_source(bad[i], "r.yaml:1:1") != QP_EUSAGE)
            fail_msg("accepted %s", bad[i]);
        assert_non_null(strstr(qp_error_last(), "r.yaml:1:1: "));
    }
}

static qp_cache *cache_with(const char *dir, const char *listing)
{
    qp_cache *c = NULL;
    char *cdir = qp_path_join(dir, "cache");
    assert_int_equal(qp_cache_open(&c, cdir), 0);
    free(cdir);
    assert_int_equal(qp_cache_meta_put(c, "hf-refs", "house/llama@main", COMMIT), 0);
    assert_int_equal(qp_cache_meta_put(c, "hf-tree", "house/llama@" COMMIT, listing), 0);
    return c;
}

static int open_offline(qp_hf_source **s, qp_cache *c, const char *source, const char *allow, const char *ignore)
{
    json_t *a = allow ? json_loads(allow, 0, NULL) : NULL, *i = ignore ? json_loads(ignore, 0, NULL) : NULL;
    setenv("HF_HUB_OFFLINE", "1", 1);
    int rc = qp_hf_open(s, source, a, i, c);
    unsetenv("HF_HUB_OFFLINE");
    json_decref(a);
    json_decref(i);
    return rc;
}

static void test_offline_resolution_and_filters(void **state)
{
    qp_cache *c = cache_with(*state, "{\"sha\": \"" COMMIT "\", \"siblings\": [{\"rfilename\": \"z.json\"}, "
                                     "{\"rfilename\": \"model.safetensors\", \"size\": 10}, "
                                     "{\"rfilename\": \"sub/a.json\"}, {\"rfilename\": \"README.md\"}]}");
    qp_hf_source *s = NULL;
    assert_int_equal(open_offline(&s, c, "hf://house/llama@main", NULL, NULL), 0);
    assert_string_equal(qp_hf_commit(s), COMMIT);
    assert_string_equal(qp_hf_revision(s), "main");
    assert_int_equal(qp_hf_count(s), 4);
    assert_string_equal(qp_hf_file(s, 0), "README.md");   /* sorted */
    assert_string_equal(qp_hf_file(s, 3), "z.json");
    qp_hf_free(s);
    /* allow then ignore; '*' matches across '/' as in huggingface_hub */
    assert_int_equal(open_offline(&s, c, "hf://house/llama@" COMMIT, "[\"*.json\"]", "[\"z.*\"]"), 0);
    assert_int_equal(qp_hf_count(s), 1);
    assert_string_equal(qp_hf_file(s, 0), "sub/a.json");
    qp_hf_free(s);
    /* nothing left */
    assert_int_equal(open_offline(&s, c, "hf://house/llama", "[\"*.bin\"]", NULL), QP_ERROR);
    assert_non_null(strstr(qp_error_last(), "allow:/ignore:"));
    /* a revision never resolved: offline says so in one line */
    assert_int_equal(open_offline(&s, c, "hf://house/llama@dev", NULL, NULL), QP_ERROR);
    assert_non_null(strstr(qp_error_last(), "revision 'dev' is not in the cache and offline mode is on "
                                            "(HF_HUB_OFFLINE=1)"));
    qp_cache_free(c);
}

static void test_hostile_listings(void **state)
{
    static const char *names[] = {"../x", "/etc/passwd", "a/../b", "a//b", "./a", "a/", "a\\\\b", "a\\u0001b",
                                  ""};
    for (size_t i = 0; i < sizeof(names) / sizeof(*names); i++) {
        char *dir = qp_strfmt("%s/%zu", (const char *)*state, i);
        char *listing = qp_strfmt("{\"sha\": \"" COMMIT "\", \"siblings\": [{\"rfilename\": \"ok.json\"}, "
                                  "{\"rfilename\": \"%s\"}]}", names[i]);
        qp_cache *c = cache_with(dir, listing);
        qp_hf_source *s = NULL;
        if (open_offline(&s, c, "hf://house/llama@main", NULL, NULL) != QP_EFORMAT)
            fail_msg("accepted the file name %s", names[i]);
        assert_non_null(strstr(qp_error_last(), "unsafe or malformed file name"));
        qp_cache_free(c);
        free(listing);
        free(dir);
    }
    /* a listing that is not what it claims: another commit, no siblings, duplicates */
    static const char *broken[] = {
        "{\"sha\": \"1111111111111111111111111111111111111111\", \"siblings\": []}",
        "{\"sha\": \"" COMMIT "\"}",
        "not json",
        "{\"sha\": \"" COMMIT "\", \"siblings\": [{\"rfilename\": \"a\"}, {\"rfilename\": \"a\"}]}",
    };
    for (size_t i = 0; i < sizeof(broken) / sizeof(*broken); i++) {
        char *dir = qp_strfmt("%s/b%zu", (const char *)*state, i);
        qp_cache *c = cache_with(dir, broken[i]);
        qp_hf_source *s = NULL;
        if (open_offline(&s, c, "hf://house/llama@main", NULL, NULL) == 0)
            fail_msg("accepted listing %s", broken[i]);
        qp_cache_free(c);
        free(dir);
    }
}

static void test_token_with_control_bytes(void **state)
{
    qp_cache *c = cache_with(*state, "{\"sha\": \"" COMMIT "\", \"siblings\": [{\"rfilename\": \"a\"}]}");
    qp_hf_source *s = NULL;
    setenv("HF_TOKEN", "hf_abc\r\nX-Injected: 1", 1);
    assert_int_equal(open_offline(&s, c, "hf://house/llama@main", NULL, NULL), QP_EUSAGE);
    assert_null(strstr(qp_error_last(), "hf_abc"));   /* never echoed */
    unsetenv("HF_TOKEN");
    qp_cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_source_syntax),
        cmocka_unit_test_setup_teardown(test_offline_resolution_and_filters, qp_test_setup_tmpdir,
                                        qp_test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_hostile_listings, qp_test_setup_tmpdir, qp_test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_token_with_control_bytes, qp_test_setup_tmpdir,
                                        qp_test_teardown_tmpdir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
