/* format safetensors (stages/package_st.h): the size parser and the shard
 * plan, against what transformers / huggingface_hub do with the same
 * inputs.  The files themselves are checked end to end by
 * tests/cli/test_package_safetensors.sh. */
#include "tests/support/testutil.h"

#include "common/error.h"
#include "stages/package_st.h"

#include <stdint.h>
#include <string.h>

static void test_parse_size(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        uint64_t want;
    } good[] = {
        {"5GB", 5000000000ull}, {"500MB", 500000000ull}, {"2GiB", 2ull << 30}, {"3MiB", 3ull << 20},
        {"10kb", 10000ull},     {"1048576", 1048576ull}, {"7 GB", 7000000000ull}, {"1TiB", 1ull << 40},
        {"12B", 12ull},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        uint64_t v = 0;
        assert_int_equal(qp_package_parse_size(&v, good[i].s, "t"), 0);
        assert_true(v == good[i].want);
    }
    static const char *bad[] = {"", "0", "0GB", "GB", "1.5GB", "-1", "5XB", "5GBs", "99999999999999999",
                                "999999999999999TiB", "5 G B"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t v = 0;
        assert_int_equal(qp_package_parse_size(&v, bad[i], "t"), QP_EUSAGE);
        assert_non_null(strstr(qp_error_last(), "give a positive size"));
    }
}

static void check_plan(const uint64_t *bytes, size_t n, uint64_t max, size_t want_n, const size_t *want)
{
    size_t shard_of[16];
    assert_int_equal(qp_package_st_plan_shards(bytes, n, max, shard_of), want_n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(shard_of[i], want[i]);
}

/* huggingface_hub: for each tensor, one larger than the limit is appended
 * as its own shard at once; one that would overflow the current shard
 * closes it first; the last open shard is appended at the end. */
static void test_plan_shards(void **state)
{
    (void)state;
    const uint64_t fits[] = {1, 2, 1};
    check_plan(fits, 3, 5, 1, (const size_t[]){0, 0, 0});
    const uint64_t fill[] = {2, 2, 2, 3, 2};
    check_plan(fill, 5, 5, 3, (const size_t[]){0, 0, 1, 1, 2});
    const uint64_t exact[] = {5, 5};   /* exactly the limit fits */
    check_plan(exact, 2, 5, 2, (const size_t[]){0, 1});
    const uint64_t big[] = {2, 10, 2, 4};   /* 10 closes first, before the {2, 2} being filled */
    check_plan(big, 4, 5, 3, (const size_t[]){1, 0, 1, 2});
    const uint64_t all_big[] = {6, 7};
    check_plan(all_big, 2, 5, 2, (const size_t[]){0, 1});
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_plan_shards),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
