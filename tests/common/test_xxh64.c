/* XXH64 against zstd: a zstd frame's Content_Checksum is the low 32 bits
 * of XXH64 (seed 0) of its content, so `zstd --check` is an independent
 * oracle (the values below were read from frames zstd 1.5.4 wrote), plus
 * the two full 64-bit values the specification's users quote; and the
 * streaming interface gives the one-shot hash for any split. */
#include "tests/support/testutil.h"

#include "common/xxh64.h"

#include <stdlib.h>
#include <string.h>

static unsigned char *pattern(size_t n)
{
    unsigned char *p = malloc(n ? n : 1);
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)((i * 7 + 3) & 0xff);
    return p;
}

static void test_against_zstd(void **state)
{
    (void)state;
    assert_true(qp_xxh64_buf("", 0) == 0xEF46DB3751D8E999ULL);
    assert_true(qp_xxh64_buf("abc", 3) == 0x44BC2CF5AD770999ULL);
    static const struct {
        size_t n;
        uint32_t low;
    } cases[] = {
        {1, 0xbc1f4bb6},  {3, 0x52e564c9},  {4, 0x66ee9fda},   {7, 0x59ce60d8},    {8, 0xc6f90092},
        {31, 0xcc4a6119}, {32, 0xf790fd97}, {33, 0xba588784},  {63, 0x31c7493c},   {64, 0xf6eeb01f},
        {100, 0x170fe531}, {1000, 0x33f1a3fb}, {1u << 20, 0x899d661b},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        unsigned char *p = pattern(cases[i].n);
        assert_int_equal((uint32_t)qp_xxh64_buf(p, cases[i].n), cases[i].low);
        free(p);
    }
}

static void test_streaming_splits(void **state)
{
    (void)state;
    const size_t n = 5000;
    unsigned char *p = pattern(n);
    const uint64_t whole = qp_xxh64_buf(p, n);
    static const size_t steps[] = {1, 5, 31, 32, 33, 100, 4096};
    for (size_t k = 0; k < sizeof(steps) / sizeof(steps[0]); k++) {
        qp_xxh64 s;
        qp_xxh64_init(&s);
        for (size_t at = 0; at < n; at += steps[k])
            qp_xxh64_update(&s, p + at, n - at < steps[k] ? n - at : steps[k]);
        assert_true(qp_xxh64_digest(&s) == whole);
        /* digest leaves the state usable */
        qp_xxh64_update(&s, "x", 1);
        unsigned char *q = pattern(n + 1);
        q[n] = 'x';
        assert_true(qp_xxh64_digest(&s) == qp_xxh64_buf(q, n + 1));
        free(q);
    }
    free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_zstd),
        cmocka_unit_test(test_streaming_splits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
