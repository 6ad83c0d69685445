/* quantize `type: F16|BF16` + package against convert_hf_to_gguf.py
 * --outtype f16|bf16 (llama.cpp c392e50).  There is no f16/bf16 oracle
 * file, so the expected file is derived here, independently of the
 * writer, from llama.cpp's own --outtype f32 file (F32.gguf, whose values
 * are the bf16 checkpoint's, exactly):
 *   - metadata: every key record byte for byte in the same order, with
 *     general.file_type 1 (f16) / 32 (bf16) instead of 0; qpipe.* keys are
 *     ours and skipped;
 *   - tensors in the same order and shapes; type F32 for 1-D tensors,
 *     *_norm.weight and anything not named *.weight (prepare_tensors), else
 *     F16 / BF16; offsets the running sum of sizes padded to 32;
 *   - bytes: F32 as is; F16 = numpy astype(float16), round to nearest even
 *     (implemented below in double arithmetic, not with qpipe's converter);
 *     BF16 = gguf-py quants.BF16 (quiet NaN, then +0x7fff+lsb, >> 16).
 * The GGUF is parsed here with a small reader of its own, so neither
 * qpipe's GGUF reader nor writer judges its own output.  Both house models
 * (llama: permuted q/k; qwen2: biases) are bf16 checkpoints, so BF16 must
 * also be their bf16 bits exactly and F16 one rounding of the bf16 value. */
#include "tests/support/testutil.h"
#include "tests/support/run_recipe.h"

#include "cache/cache.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "model/safetensors.h"
#include "pipeline/recipe.h"
#include "pipeline/runner.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *dir;
static const char *models[] = {"house-llama", "house-qwen"};

/* ---------- a minimal GGUF v3 reader (byte offsets only) ---------- */

typedef struct {
    size_t start, end;       /* the whole record: key, value type, value */
    char key[128];
    uint32_t vtype;
    size_t val;              /* offset of the value */
} raw_kv;

typedef struct {
    char name[64];
    uint32_t n_dims, type;
    uint64_t ne[4], offset;
} raw_tensor;

typedef struct {
    unsigned char *b;
    size_t len;
    uint64_t n_kv, n_t;
    raw_kv *kv;
    raw_tensor *t;
    size_t data;             /* start of the data section */
} raw_gguf;

static uint64_t le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static size_t skip_value(const raw_gguf *g, size_t p, uint32_t type)
{
    static const int sz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    assert_true(type <= 12);
    if (type == 8)
        return p + 8 + le(g->b + p, 8);
    if (type == 9) {
        uint32_t et = (uint32_t)le(g->b + p, 4);
        uint64_t n = le(g->b + p + 4, 8);
        p += 12;
        for (uint64_t i = 0; i < n; i++)
            p = skip_value(g, p, et);
        return p;
    }
    return p + (size_t)sz[type];
}

static void raw_open(raw_gguf *g, const char *path)
{
    char *buf = NULL;
    memset(g, 0, sizeof(*g));
    assert_int_equal(qp_read_file(path, &buf, &g->len), 0);
    g->b = (unsigned char *)buf;
    assert_memory_equal(g->b, "GGUF", 4);
    assert_int_equal(le(g->b + 4, 4), 3);
    g->n_t = le(g->b + 8, 8);
    g->n_kv = le(g->b + 16, 8);
    g->kv = calloc(g->n_kv, sizeof(*g->kv));
    g->t = calloc(g->n_t, sizeof(*g->t));
    size_t p = 24;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        raw_kv *k = &g->kv[i];
        uint64_t kl = le(g->b + p, 8);
        assert_true(kl < sizeof(k->key));
        k->start = p;
        memcpy(k->key, g->b + p + 8, kl);
        p += 8 + kl;
        k->vtype = (uint32_t)le(g->b + p, 4);
        k->val = p + 4;
        p = k->end = skip_value(g, p + 4, k->vtype);
        assert_true(p <= g->len);
        assert_string_not_equal(k->key, "general.alignment");   /* 32 below */
    }
    for (uint64_t i = 0; i < g->n_t; i++) {
        raw_tensor *t = &g->t[i];
        uint64_t nl = le(g->b + p, 8);
        assert_true(nl < sizeof(t->name));
        memcpy(t->name, g->b + p + 8, nl);
        p += 8 + nl;
        t->n_dims = (uint32_t)le(g->b + p, 4);
        assert_true(t->n_dims >= 1 && t->n_dims <= 4);
        p += 4;
        for (uint32_t d = 0; d < 4; d++)
            t->ne[d] = d < t->n_dims ? le(g->b + p + 8 * d, 8) : 1;
        p += 8 * t->n_dims;
        t->type = (uint32_t)le(g->b + p, 4);
        t->offset = le(g->b + p + 4, 8);
        p += 12;
    }
    g->data = (p + 31) / 32 * 32;
    for (size_t i = p; i < g->data; i++)
        assert_int_equal(g->b[i], 0);
}

static void raw_close(raw_gguf *g)
{
    free(g->b);
    free(g->kv);
    free(g->t);
}

static int ends_with(const char *s, const char *suf)
{
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && !strcmp(s + n - k, suf);
}

/* ---------- the two roundings, written from their definitions ---------- */

/* numpy float32 -> float16: round to nearest, ties to even, overflow to
 * inf (|x| >= 65520), subnormals below 2^-14.  x = m · 2^(e-10) with the
 * exponent e clamped to -14; nearbyint in double is exact here. */
static uint16_t f16_of(float x)
{
    uint16_t sign = signbit(x) ? 0x8000 : 0;
    double a = fabs((double)x);
    assert_false(isnan(x));   /* a house checkpoint has none */
    if (a >= 65520.0)
        return sign | 0x7c00;
    if (a == 0)
        return sign;
    int e;
    frexp(a, &e);             /* a = f · 2^e, f in [0.5, 1): leading bit 2^(e-1) */
    e -= 1;
    if (e < -14)
        e = -14;
    double m = nearbyint(ldexp(a, 10 - e));   /* 0 .. 2048 */
    if (m >= 2048) {
        m /= 2;
        e++;
    }
    if (m < 1024)             /* subnormal (e == -14) */
        return sign | (uint16_t)m;
    return sign | (uint16_t)((e + 15) << 10) | (uint16_t)((uint32_t)m - 1024);
}

/* gguf-py quants.BF16.quantize_blocks, operation by operation. */
static uint16_t bf16_of(uint32_t n)
{
    if ((n & 0x7fffffffu) > 0x7f800000u)
        n = (n & 0xffff0000u) | (64u << 16);
    uint64_t r = ((uint64_t)n + (0x7fffu + ((n >> 16) & 1u))) >> 16;
    return (uint16_t)r;
}

static float f32_of_f16(uint16_t h)
{
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e ? ldexp(1024 + m, e - 25) : ldexp(m, -24);
    assert_int_not_equal(e, 31);
    return (float)((h & 0x8000) ? -v : v);
}

/* house-llama with its weights stored F16 (one rounding from bf16), in a
 * directory of the same name so general.name stays "House Llama" */
static char *make_f16_llama(void)
{
    char *src = qp_test_shared_path("models/house-llama"), *top = qp_path_join(dir, "f16");
    char *out = qp_path_join(top, "house-llama");
    assert_int_equal(qp_mkdir_p(out, 0755), 0);
    const char *files[] = {"config.json", "tokenizer.model", "tokenizer_config.json", "generation_config.json"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char *a = qp_path_join(src, files[i]), *b = qp_path_join(out, files[i]), *buf = NULL;
        size_t n = 0;
        assert_int_equal(qp_read_file(a, &buf, &n), 0);
        qp_test_write(b, buf, n);
        free(buf);
        free(a);
        free(b);
    }
    char *st_in = qp_path_join(src, "model.safetensors"), *st_out = qp_path_join(out, "model.safetensors");
    qp_safetensors *st = NULL;
    qp_st_writer *w = NULL;
    assert_int_equal(qp_safetensors_open(&st, st_in), 0);
    assert_int_equal(qp_st_writer_new(&w, st_out), 0);
    for (size_t i = 0; i < qp_safetensors_count(st); i++) {
        const qp_tensor_view *v = qp_safetensors_tensor(st, i);
        uint16_t *h = malloc(v->nelem * 2 + 2);
        for (uint64_t k = 0; k < v->nelem; k++) {
            uint32_t u = (uint32_t)le((const unsigned char *)v->data + 2 * k, 2) << 16;
            float x;
            memcpy(&x, &u, 4);
            h[k] = f16_of(x);
        }
        assert_int_equal(qp_st_writer_add(w, v->name, QP_DT_F16, v->ndim, v->shape, h, v->nelem * 2), 0);
        free(h);
    }
    assert_int_equal(qp_st_writer_finish(w), 0);
    qp_safetensors_free(st);
    free(st_in);
    free(st_out);
    free(src);
    free(out);
    return top;
}

/* ---------- the recipe: both house models at F16 and BF16 ---------- */

static int setup(void **state)
{
    (void)state;
    dir = qp_test_tmpdir();
    char *recipe = qp_path_join(dir, "r.yaml");
    FILE *f = fopen(recipe, "w");
    fprintf(f, "qpipe: 1\nname: float\nstages:\n");
    for (int m = 0; m < 2; m++) {
        char *src = qp_strfmt("models/%s", models[m]);
        char *path = qp_test_shared_path(src);
        fprintf(f, "  m%d: {uses: fetch, with: {source: \"%s\"}}\n", m, path);
        for (int b = 0; b < 2; b++) {
            const char *t = b ? "BF16" : "F16";
            fprintf(f, "  q%d%s: {uses: quantize, needs: [m%d], with: {method: gguf, type: %s}}\n", m, t, m, t);
            fprintf(f, "  p%d%s: {uses: package, needs: [q%d%s], with: {format: gguf, out: out/%s-%s, name: %s}}\n",
                    m, t, m, t, models[m], t, t);
        }
        free(src);
        free(path);
    }
    /* an F16 checkpoint packaged as BF16: convert rounds its f16 values */
    char *f16 = make_f16_llama();
    fprintf(f, "  m16: {uses: fetch, with: {source: \"%s/house-llama\"}}\n", f16);
    fprintf(f, "  q16: {uses: quantize, needs: [m16], with: {method: gguf, type: BF16}}\n");
    fprintf(f, "  p16: {uses: package, needs: [q16], with: {format: gguf, out: out/f16-BF16, name: BF16}}\n");
    free(f16);
    fclose(f);
    char *cache_dir = qp_path_join(dir, "cache");
    int rc = qp_test_run_recipe(recipe, cache_dir);
    free(cache_dir);
    free(recipe);
    return rc ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    qp_test_rmtree(dir);
    free(dir);
    return 0;
}

/* The tensor's expected bytes from the oracle's F32 values. */
static void expected_bytes(unsigned char *dst, const unsigned char *f32, uint64_t nelem, uint32_t type, int via_f16)
{
    for (uint64_t i = 0; i < nelem; i++) {
        uint32_t u = (uint32_t)le(f32 + 4 * i, 4);
        float x;
        memcpy(&x, &u, 4);
        if (via_f16) {   /* the checkpoint held f16(x) */
            x = f32_of_f16(f16_of(x));
            memcpy(&u, &x, 4);
        }
        if (type == 0) {
            for (int b = 0; b < 4; b++)
                dst[4 * i + (uint64_t)b] = (unsigned char)(u >> (8 * b));
        } else {
            uint16_t h = type == 1 ? f16_of(x) : bf16_of(u);
            dst[2 * i] = (unsigned char)h;
            dst[2 * i + 1] = (unsigned char)(h >> 8);
        }
    }
}

/* ours (model m at F16 / BF16; via_f16: house-llama's F16 copy) against
 * the file derived from F32.gguf */
static void check(int m, int bf16, int via_f16)
{
    const char *t = bf16 ? "BF16" : "F16";
    const uint32_t file_type = bf16 ? 32 : 1, wtype = bf16 ? 30 : 1;   /* GGML_TYPE_BF16 / F16 */
    char *rel = via_f16 ? qp_strfmt("out/f16-%s/%s.gguf", t, t) : qp_strfmt("out/%s-%s/%s.gguf", models[m], t, t);
    char *ours_path = qp_path_join(dir, rel);
    char *orel = qp_strfmt("vectors/%s/F32.gguf", models[m]);
    char *oracle_path = qp_test_shared_path(orel);
    raw_gguf o, g;
    raw_open(&o, oracle_path);
    raw_open(&g, ours_path);

    /* metadata: the oracle's records in its order, byte for byte; ours add
     * qpipe.* only */
    uint64_t j = 0, n_qpipe = 0;
    int saw_ftype = 0;
    for (uint64_t i = 0; i < g.n_kv; i++) {
        const raw_kv *k = &g.kv[i];
        if (!strncmp(k->key, "qpipe.", 6)) {
            n_qpipe++;
            continue;
        }
        assert_true(j < o.n_kv);
        const raw_kv *ok = &o.kv[j++];
        assert_string_equal(k->key, ok->key);
        if (!strcmp(k->key, "general.file_type")) {
            assert_int_equal(k->vtype, 4);
            assert_int_equal(ok->vtype, 4);
            assert_int_equal(le(o.b + ok->val, 4), 0);
            assert_int_equal(le(g.b + k->val, 4), file_type);
            saw_ftype = 1;
            continue;
        }
        if (k->end - k->start != ok->end - ok->start || memcmp(g.b + k->start, o.b + ok->start, k->end - k->start))
            fail_msg("%s: key %s differs from llama.cpp's", rel, k->key);
    }
    assert_true(saw_ftype);
    assert_int_equal(j, o.n_kv);
    assert_true(n_qpipe >= 3);

    /* tensors: order, shape, type, offset, bytes */
    assert_int_equal(g.n_t, o.n_t);
    uint64_t off = 0, n_wide = 0, n_f32 = 0;
    for (uint64_t i = 0; i < g.n_t; i++) {
        const raw_tensor *a = &g.t[i], *b = &o.t[i];
        assert_string_equal(a->name, b->name);
        assert_int_equal(a->n_dims, b->n_dims);
        assert_memory_equal(a->ne, b->ne, sizeof(a->ne));
        assert_int_equal(b->type, 0);
        int keep = a->n_dims <= 1 || ends_with(a->name, "_norm.weight") || !ends_with(a->name, ".weight");
        uint32_t type = keep ? 0 : wtype;
        if (a->type != type)
            fail_msg("%s: tensor %s has type %u, convert writes %u", rel, a->name, a->type, type);
        n_wide += !keep;
        n_f32 += keep;
        uint64_t nelem = a->ne[0] * a->ne[1] * a->ne[2] * a->ne[3];
        uint64_t nbytes = nelem * (type ? 2 : 4);
        assert_int_equal(a->offset, off);
        assert_true(g.data + off + nbytes <= g.len);
        assert_true(o.data + b->offset + nelem * 4 <= o.len);
        unsigned char *want = malloc(nbytes ? nbytes : 1);
        expected_bytes(want, o.b + o.data + b->offset, nelem, type, via_f16);
        if (memcmp(want, g.b + g.data + off, nbytes) != 0) {
            uint64_t e = 0;
            while (want[e] == g.b[g.data + off + e])
                e++;
            fail_msg("%s: tensor %s differs at byte %llu", rel, a->name, (unsigned long long)e);
        }
        free(want);
        uint64_t padded = (nbytes + 31) / 32 * 32;
        for (uint64_t p = nbytes; p < padded; p++)
            assert_int_equal(g.b[g.data + off + p], 0);
        off += padded;
    }
    assert_int_equal(g.len, g.data + off);
    assert_true(n_wide > 0 && n_f32 > 0);
    raw_close(&o);
    raw_close(&g);
    free(rel);
    free(ours_path);
    free(orel);
    free(oracle_path);
}

static void test_llama_f16(void **state)
{
    (void)state;
    check(0, 0, 0);
}

static void test_llama_bf16(void **state)
{
    (void)state;
    check(0, 1, 0);
}

static void test_qwen_f16(void **state)
{
    (void)state;
    check(1, 0, 0);
}

static void test_qwen_bf16(void **state)
{
    (void)state;
    check(1, 1, 0);
}

/* an F16 checkpoint at BF16: weights rounded from their f16 values, norms
 * their f16 values widened */
static void test_f16_source_bf16(void **state)
{
    (void)state;
    check(0, 1, 1);
}

/* BF16 of a bf16 checkpoint is its bits, F16 one rounding of its values:
 * straight from the safetensors file for tensors whose rows are not
 * permuted (embedding, down projection). */
static void test_from_source_bits(void **state)
{
    (void)state;
    static const char *pairs[][2] = {
        {"model.embed_tokens.weight", "token_embd.weight"},
        {"model.layers.1.mlp.down_proj.weight", "blk.1.ffn_down.weight"},
    };
    for (int m = 0; m < 2; m++) {
        char *srel = qp_strfmt("models/%s/model.safetensors", models[m]);
        char *spath = qp_test_shared_path(srel);
        qp_safetensors *st = NULL;
        assert_int_equal(qp_safetensors_open(&st, spath), 0);
        for (int b = 0; b < 2; b++) {
            const char *t = b ? "BF16" : "F16";
            char *rel = qp_strfmt("out/%s-%s/%s.gguf", models[m], t, t);
            char *path = qp_path_join(dir, rel);
            raw_gguf g;
            raw_open(&g, path);
            for (size_t p = 0; p < 2; p++) {
                const qp_tensor_view *v = qp_safetensors_find(st, pairs[p][0]);
                assert_non_null(v);
                assert_int_equal(v->dtype, QP_DT_BF16);
                const raw_tensor *gt = NULL;
                for (uint64_t i = 0; i < g.n_t; i++)
                    if (!strcmp(g.t[i].name, pairs[p][1]))
                        gt = &g.t[i];
                assert_non_null(gt);
                assert_int_equal(gt->type, b ? 30 : 1);
                const unsigned char *src = v->data, *ours = g.b + g.data + gt->offset;
                for (uint64_t i = 0; i < v->nelem; i++) {
                    uint16_t s = (uint16_t)le(src + 2 * i, 2), h = (uint16_t)le(ours + 2 * i, 2);
                    uint32_t u = (uint32_t)s << 16;
                    float x;
                    memcpy(&x, &u, 4);
                    if (h != (b ? s : f16_of(x)))
                        fail_msg("%s: %s element %llu: 0x%04x from bf16 0x%04x", rel, pairs[p][1],
                                 (unsigned long long)i, h, s);
                }
            }
            raw_close(&g);
            free(rel);
            free(path);
        }
        qp_safetensors_free(st);
        free(srel);
        free(spath);
    }
}

/* the rounding helpers themselves, on values whose answers are known */
static void test_roundings(void **state)
{
    (void)state;
    assert_int_equal(f16_of(1.0f), 0x3c00);
    assert_int_equal(f16_of(-2.0f), 0xc000);
    assert_int_equal(f16_of(65504.0f), 0x7bff);
    assert_int_equal(f16_of(65519.99f), 0x7bff);
    assert_int_equal(f16_of(65520.0f), 0x7c00);
    assert_int_equal(f16_of(ldexpf(1, -24)), 0x0001);            /* smallest subnormal */
    assert_int_equal(f16_of(ldexpf(1, -25)), 0x0000);            /* tie to even: 0 */
    assert_int_equal(f16_of(ldexpf(3, -26)), 0x0001);            /* 0.75 ulp: up */
    assert_int_equal(f16_of(ldexpf(3, -25)), 0x0002);            /* 1.5 ulp: tie to even 2 */
    assert_int_equal(f16_of(1.0f + ldexpf(1, -11)), 0x3c00);     /* tie to even */
    assert_int_equal(f16_of(1.0f + ldexpf(3, -11)), 0x3c02);     /* tie to even (up) */
    assert_int_equal(f16_of(ldexpf(1023, -24) + ldexpf(1, -25)), 0x0400);   /* into the normals */
    assert_int_equal(bf16_of(0x3f800000u), 0x3f80);
    assert_int_equal(bf16_of(0x3f808000u), 0x3f80);              /* tie to even */
    assert_int_equal(bf16_of(0x3f818000u), 0x3f82);
    assert_int_equal(bf16_of(0x7f7fffffu), 0x7f80);              /* overflow to inf */
    assert_int_equal(bf16_of(0x7f800001u), 0x7fc0);              /* signalling NaN quieted */
    assert_int_equal(bf16_of(0xffc12345u), 0xffc1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundings),
        cmocka_unit_test(test_llama_f16),
        cmocka_unit_test(test_llama_bf16),
        cmocka_unit_test(test_qwen_f16),
        cmocka_unit_test(test_qwen_bf16),
        cmocka_unit_test(test_from_source_bits),
        cmocka_unit_test(test_f16_source_bf16),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
