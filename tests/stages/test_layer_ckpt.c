/* stages/layer_ckpt: the newest usable checkpoint is found and applied,
 * only the two newest are kept, a corrupt or refused one falls back to the
 * one before, another stage key or name sees none, finish removes them. */
#include "tests/support/testutil.h"

#include "cache/cache.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "stages/layer_ckpt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XN 1000   /* floats of activations */

typedef struct {
    char *dir;
    qp_cache *c;
    qp_stage_ctx ctx;
} fixture;

static const char key_a[] = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
static const char key_b[] = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    f->dir = qp_test_tmpdir();
    char *cdir = qp_path_join(f->dir, "cache");
    assert_int_equal(qp_cache_open(&f->c, cdir), 0);
    free(cdir);
    f->ctx.id = "q";
    f->ctx.cache = f->c;
    f->ctx.stage_key = key_a;
    f->ctx.record = json_object();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    json_decref(f->ctx.record);
    qp_cache_free(f->c);
    qp_test_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

/* activations of layer l: XN floats l*XN + i */
static void fill_x(float *x, int l)
{
    for (int i = 0; i < XN; i++)
        x[i] = (float)(l * XN + i);
}

/* An activation store of XN floats as 4 windows, in memory or spilled. */
static qp_act_store *store(fixture *f, int spilled)
{
    qp_act_store *a = NULL;
    setenv("QPIPE_ACT_MEM", spilled ? "0" : "1M", 1);
    assert_int_equal(qp_act_store_new(&a, f->c, 4, XN / 4, 1, "test"), 0);
    assert_int_equal(qp_act_store_spilled(a), spilled);
    unsetenv("QPIPE_ACT_MEM");
    return a;
}

static void store_x(qp_act_store *a, const float *x)
{
    for (size_t s = 0; s < 4; s++)
        assert_int_equal(qp_act_store_put(a, s, x + s * (XN / 4)), 0);
}

static void read_x(qp_act_store *a, float *x)
{
    float buf[XN / 4], *p = NULL;
    for (size_t s = 0; s < 4; s++) {
        assert_int_equal(qp_act_store_get(a, s, buf, &p), 0);
        memcpy(x + s * (XN / 4), p, sizeof(buf));
    }
}

/* saves layers 0..last, each with state {"layer": l} and its activations
 * (through a spilled store when spilled) */
static void save_upto_in(fixture *f, qp_layer_ckpt *ck, int last, int spilled)
{
    float x[XN];
    qp_act_store *a = store(f, spilled);
    for (int l = 0; l <= last; l++) {
        fill_x(x, l);
        store_x(a, x);
        json_t *st = json_pack("{s:i}", "layer", l);
        assert_int_equal(qp_layer_ckpt_save(ck, l, st, a, 4, XN / 4, NULL, 0), 0);
        json_decref(st);
    }
    qp_act_store_free(a);
}

typedef struct {
    int refuse_above;   /* refuses checkpoints of layers above this */
    int layer;          /* the applied one, -1 none */
    float x[XN];        /* the store's contents after the resume */
} applied;

static int load(void *ud, int layer, const json_t *state)
{
    applied *a = ud;
    if (layer > a->refuse_above)
        return qp_error_set(QP_EFORMAT, "refused by the test");
    assert_int_equal(json_integer_value(json_object_get(state, "layer")), layer);
    a->layer = layer;
    return 0;
}

static int resume_in(fixture *f, const char *name, int refuse_above, applied *a, int spilled)
{
    qp_layer_ckpt *ck = qp_layer_ckpt_new(&f->ctx, name, 8);
    qp_act_store *st = store(f, spilled);
    float zero[XN] = {0};
    store_x(st, zero);
    int next = -1;
    a->refuse_above = refuse_above;
    a->layer = -1;
    assert_int_equal(qp_layer_ckpt_resume(ck, st, 4, XN / 4, load, a, &next), 0);
    read_x(st, a->x);
    if (next == 0)
        assert_memory_equal(a->x, zero, sizeof(zero));   /* untouched */
    qp_act_store_free(st);
    qp_layer_ckpt_free(ck);
    return next;
}

#define save_upto(ck, last) save_upto_in(f, ck, last, 0)
#define resume(f, name, refuse, a) resume_in(f, name, refuse, a, 0)

static void test_resume_newest(void **state)
{
    fixture *f = *state;
    qp_layer_ckpt *ck = qp_layer_ckpt_new(&f->ctx, "gptq", 8);
    applied a;
    assert_int_equal(resume(f, "gptq", 99, &a), 0);
    save_upto(ck, 4);
    qp_layer_ckpt_free(ck);
    assert_int_equal(resume(f, "gptq", 99, &a), 5);
    float want[XN];
    fill_x(want, 4);
    assert_memory_equal(a.x, want, sizeof(want));
    json_t *r = json_object_get(f->ctx.record, "resumed");
    assert_int_equal(json_integer_value(json_object_get(r, "layer")), 5);
    assert_int_equal(json_integer_value(json_object_get(r, "layers")), 8);
    assert_string_equal(json_string_value(json_object_get(r, "what")), "gptq");
    /* only layers 3 and 4 are kept: refusing both leaves nothing */
    assert_int_equal(resume(f, "gptq", 2, &a), 0);
    assert_int_equal(a.layer, -1);
}

static void test_refused_falls_back(void **state)
{
    fixture *f = *state;
    qp_layer_ckpt *ck = qp_layer_ckpt_new(&f->ctx, "awq", 8);
    save_upto(ck, 5);
    qp_layer_ckpt_free(ck);
    applied a;
    assert_int_equal(resume(f, "awq", 4, &a), 5);   /* 5 refused (and discarded), 4 taken */
    float want[XN];
    fill_x(want, 4);
    assert_memory_equal(a.x, want, sizeof(want));
    assert_int_equal(resume(f, "awq", 99, &a), 5);  /* 5 is gone for good */
}

static void test_other_key_or_name(void **state)
{
    fixture *f = *state;
    qp_layer_ckpt *ck = qp_layer_ckpt_new(&f->ctx, "gptq", 8);
    save_upto(ck, 2);
    qp_layer_ckpt_free(ck);
    applied a;
    assert_int_equal(resume(f, "awq", 99, &a), 0);
    f->ctx.stage_key = key_b;
    assert_int_equal(resume(f, "gptq", 99, &a), 0);
    f->ctx.stage_key = key_a;
    assert_int_equal(resume(f, "gptq", 99, &a), 3);
    /* different activations (another calibration) are not taken, and
     * none where the checkpoint has some */
    qp_layer_ckpt *ck2 = qp_layer_ckpt_new(&f->ctx, "gptq", 8);
    qp_act_store *big = NULL;
    assert_int_equal(qp_act_store_new(&big, f->c, 8, XN / 4, 0, "test"), 0);
    int next = -1;
    assert_int_equal(qp_layer_ckpt_resume(ck2, big, 8, XN / 4, load, &a, &next), 0);
    assert_int_equal(next, 0);
    qp_act_store_free(big);
    save_upto(ck2, 2);
    assert_int_equal(qp_layer_ckpt_resume(ck2, NULL, 0, 0, load, &a, &next), 0);
    assert_int_equal(next, 0);
    qp_layer_ckpt_free(ck2);
}

/* overwrites bytes inside the object holding layer `layer`'s activations */
static void corrupt_x(fixture *f, int layer)
{
    float x[XN];
    fill_x(x, layer);
    char d[QP_HEX_LEN];
    assert_int_equal(qp_cache_put(f->c, x, sizeof(x), d), 0);   /* already there: the digest */
    char *path = qp_strfmt("%s/cache/objects/%.2s/%s", f->dir, d, d + 2);
    FILE *fp = fopen(path, "r+b");
    assert_non_null(fp);
    fseek(fp, 12, SEEK_SET);
    fputs("garbage", fp);
    fclose(fp);
    free(path);
}

static void test_corrupt_falls_back(void **state)
{
    fixture *f = *state;
    qp_layer_ckpt *ck = qp_layer_ckpt_new(&f->ctx, "mixed", 8);
    save_upto(ck, 6);
    qp_layer_ckpt_free(ck);
    corrupt_x(f, 6);
    applied a;
    assert_int_equal(resume(f, "mixed", 99, &a), 6);
    float want[XN];
    fill_x(want, 5);
    assert_memory_equal(a.x, want, sizeof(want));
}

/* a spilled store saves and resumes through temp files, with the same bytes
 * as one in memory (the same object), and leaves no temp file */
static void test_spilled(void **state)
{
    fixture *f = *state;
    qp_layer_ckpt *ck = qp_layer_ckpt_new(&f->ctx, "gptq", 8);
    save_upto_in(f, ck, 3, 1);
    qp_layer_ckpt_free(ck);
    applied a;
    assert_int_equal(resume_in(f, "gptq", 99, &a, 1), 4);
    float want[XN];
    fill_x(want, 3);
    assert_memory_equal(a.x, want, sizeof(want));
    assert_int_equal(resume_in(f, "gptq", 99, &a, 0), 4);
    assert_memory_equal(a.x, want, sizeof(want));
    qp_cache_stats s;
    assert_int_equal(qp_cache_stats_get(f->c, &s), 0);
    assert_int_equal(s.tmp_files, 0);
}

static void test_finish_removes(void **state)
{
    fixture *f = *state;
    qp_layer_ckpt *ck = qp_layer_ckpt_new(&f->ctx, "calibrate", 8);
    save_upto(ck, 7);
    qp_layer_ckpt_finish(ck);
    qp_layer_ckpt_free(ck);
    applied a;
    assert_int_equal(resume(f, "calibrate", 99, &a), 0);
    float x[XN];
    char d[QP_HEX_LEN];
    for (int l = 0; l < 8; l++) {   /* every layer's activations are gone */
        fill_x(x, l);
        qp_sha256_buf(d, x, sizeof(x));
        assert_int_equal(qp_cache_has(f->c, d), 0);
    }
    qp_cache_stats s;
    assert_int_equal(qp_cache_stats_get(f->c, &s), 0);
    assert_int_equal(s.actions, 0);
}

/* without a stage key (a stage run outside the runner) nothing is kept */
static void test_no_key_disabled(void **state)
{
    fixture *f = *state;
    f->ctx.stage_key = NULL;
    qp_layer_ckpt *ck = qp_layer_ckpt_new(&f->ctx, "gptq", 8);
    save_upto(ck, 3);
    qp_layer_ckpt_free(ck);
    applied a;
    assert_int_equal(resume(f, "gptq", 99, &a), 0);
    qp_cache_stats s;
    assert_int_equal(qp_cache_stats_get(f->c, &s), 0);
    assert_int_equal(s.objects, 0);
    f->ctx.stage_key = key_a;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_resume_newest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_falls_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_key_or_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_falls_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spilled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_finish_removes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_key_disabled, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
