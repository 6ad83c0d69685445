/* artifact/artifact.c, the uncached entries: a workspace file recorded by
 * digest only (a package's GGUF) is in the manifest, survives a store and
 * a parse, is left out of the refs an action entry keeps alive, and is
 * refused by qp_artifact_read with a message saying why; an entry of a
 * manifest written before the field existed counts as cached. */
#include "tests/support/testutil.h"

#include "artifact/artifact.h"
#include "common/error.h"
#include "common/fsutil.h"

#include <stdlib.h>
#include <string.h>

static const char *const FAKE = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

static void test_uncached_entries(void **state)
{
    qp_cache *c = NULL;
    char *dir = qp_path_join(*state, "cache");
    assert_int_equal(qp_cache_open(&c, dir), 0);
    qp_artifact *a = NULL;
    assert_int_equal(qp_artifact_new(&a, QP_ART_FILES), 0);
    assert_int_equal(qp_artifact_add_bytes(a, c, "files/dist/card.md", "card", 4, NULL), 0);
    assert_int_equal(qp_artifact_add_uncached(a, "files/dist/m.gguf", FAKE, 123456, json_pack("{s:s}", "kind", "file")),
                     0);
    assert_int_equal(qp_artifact_entry_cached(qp_artifact_find(a, "files/dist/card.md")), 1);
    assert_int_equal(qp_artifact_entry_cached(qp_artifact_find(a, "files/dist/m.gguf")), 0);

    char digest[QP_HEX_LEN], **refs = NULL;
    size_t n_refs = 0;
    assert_int_equal(qp_artifact_store(a, c, digest, &refs, &n_refs), 0);
    assert_int_equal(n_refs, 2);   /* the manifest and the card, not the GGUF */
    assert_string_equal(refs[0], digest);
    for (size_t i = 0; i < n_refs; i++)
        assert_string_not_equal(refs[i], FAKE);
    qp_artifact_refs_free(refs, n_refs);

    void *bytes = NULL;
    size_t len = 0;
    assert_int_equal(qp_artifact_read(a, c, "files/dist/m.gguf", &bytes, &len), QP_ENOTFOUND);
    assert_non_null(strstr(qp_error_last(), "not kept in the cache"));
    assert_int_equal(qp_artifact_read(a, c, "files/dist/card.md", &bytes, &len), 0);
    assert_memory_equal(bytes, "card", 4);
    free(bytes);

    /* stored and loaded back: the same entries, the flag kept */
    qp_artifact *b = NULL;
    assert_int_equal(qp_artifact_load(&b, c, digest), 0);
    const json_t *e = qp_artifact_find(b, "files/dist/m.gguf");
    assert_non_null(e);
    assert_int_equal(qp_artifact_entry_cached(e), 0);
    assert_string_equal(qp_artifact_entry_digest(e), FAKE);
    assert_int_equal(json_integer_value(json_object_get(e, "size")), 123456);
    qp_artifact_free(b);
    qp_artifact_free(a);

    /* a manifest from before the field: every entry is cached */
    char *old = qp_strfmt("{\"qpipe_artifact\": 1, \"type\": \"files\", \"metrics\": {}, \"meta\": {}, "
                          "\"entries\": [{\"name\": \"files/x\", \"digest\": \"%s\", \"size\": 1}]}", FAKE);
    assert_int_equal(qp_artifact_parse(&b, old, "old manifest"), 0);
    assert_int_equal(qp_artifact_entry_cached(qp_artifact_find(b, "files/x")), 1);
    qp_artifact_free(b);
    free(old);
    qp_cache_free(c);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_uncached_entries, qp_test_setup_tmpdir, qp_test_teardown_tmpdir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
