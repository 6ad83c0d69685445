#include "tests/support/testutil.h"

#include "common/rng.h"
#include "model/safetensors.h"
#include "common/tensor.h"

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

int qp_test_setup_tmpdir(void **state)
{
    *state = qp_test_tmpdir();
    return 0;
}

int qp_test_teardown_tmpdir(void **state)
{
    qp_test_rmtree(*state);
    free(*state);
    return 0;
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

double qp_test_linears_rel_error(struct qp_safetensors *st, int layers, qp_test_roundtrip_fn fn, void *ud)
{
    static const char *const linears[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                           "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
    double num = 0, den = 0;
    for (int l = 0; l < layers; l++) {
        for (int k = 0; k < 7; k++) {
            char name[128];
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, linears[k]);
            const qp_tensor_view *t = qp_safetensors_find(st, name);
            assert_non_null(t);
            float *w = malloc(t->nelem * sizeof *w), *d = malloc(t->nelem * sizeof *d);
            assert_true(w && d);
            assert_int_equal(qp_convert_to_f32(w, t->data, t->dtype, t->nelem), 0);
            fn(ud, w, (int64_t)t->shape[0], (int64_t)t->shape[1], d);
            for (uint64_t i = 0; i < t->nelem; i++) {
                double e = (double)w[i] - (double)d[i];
                num += e * e;
                den += (double)w[i] * (double)w[i];
            }
            free(w);
            free(d);
        }
    }
    return sqrt(num / den);
}
