#include "tests/support/testutil.h"

#include "common/rng.h"

#include <math.h>

#include "common/fsutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Absolute, so recipes written into temp directories can name it. */
const char *qp_test_shared_dir(void)
{
    static char resolved[4096];
    const char *s = getenv("QPIPE_SHARED");
    s = (s && *s) ? s : "../shared";
    if (!resolved[0] && !realpath(s, resolved))
        return s;
    return resolved;
}

char *qp_test_shared_path(const char *rel)
{
    return qp_path_join(qp_test_shared_dir(), rel);
}

char *qp_test_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char *tmpl = qp_strfmt("%s/qpipe-test.XXXXXX", (base && *base) ? base : "/tmp");
    if (!mkdtemp(tmpl)) {
        fprintf(stderr, "mkdtemp failed\n");
        abort();
    }
    return tmpl;
}

void qp_test_rmtree(const char *dir)
{
    if (dir)
        qp_rm_rf(dir);
}

void qp_test_write(const char *path, const void *data, size_t n)
{
    char *dir = qp_path_dirname(path);
    assert_int_equal(qp_mkdir_p(dir, 0755), 0);
    free(dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

void qp_test_write_str(const char *path, const char *text)
{
    qp_test_write(path, text, strlen(text));
}

static qp_rng test_rng;

void qp_test_seed(uint64_t seed)
{
    qp_rng_seed(&test_rng, seed);
}

uint64_t qp_test_next_u64(void)
{
    return qp_rng_next(&test_rng);
}

uint64_t qp_test_below(uint64_t n)
{
    return qp_rng_below(&test_rng, n);
}

float qp_test_uniform(void)
{
    return (float)(qp_rng_next(&test_rng) >> 40) * 0x1p-24f;
}

float qp_test_gauss(void)
{
    float u = qp_test_uniform() + 0x1p-25f, v = qp_test_uniform();
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}
