/* The estimator's deterministic parts on house-llama's shapes: the shapes
 * read from the checkpoint (headers only), the FLOP and byte counts, the
 * quantize plan's output bytes (equal to what the Q4_K_M stage stores), the
 * window count, and the memory check with an injected limit (which stage,
 * predicted vs available, what to change; cached stages never refused). */
#include "tests/support/testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "model/eval.h"
#include "pipeline/estimate.h"
#include "pipeline/recipe.h"
#include "stages/estimate.h"
#include "stages/stage.h"
#include "artifact/artifact.h"

static char *recipe_text(void)
{
    const char *shared = qp_test_shared_dir();
    size_t cap = 4096;
    char *t = malloc(cap);
    snprintf(t, cap,
             "qpipe: 1\nname: est\nstages:\n"
             "  model: {uses: fetch, with: {source: \"%s/models/house-llama\"}}\n"
             "  q4km: {uses: quantize, needs: [model], with: {method: gguf, type: Q4_K_M}}\n"
             "  calib: {uses: calibrate, needs: [model], with: {dataset: \"%s/data/shakespeare/train.txt\", "
             "samples: 8, seq_len: 128, hessians: true}}\n"
             "  gptq: {uses: quantize, needs: [model, calib], with: {method: gptq, bits: 4, group_size: 128}}\n"
             "  ev: {uses: evaluate, needs: [q4km], with: {dataset: \"%s/data/shakespeare/valid.txt\", ctx: 256, "
             "max_chunks: 16}}\n"
             "  pkg: {uses: package, needs: [q4km], with: {format: gguf, out: dist}}\n",
             shared, shared, shared);
    return t;
}

static qp_recipe *load(void)
{
    char *text = recipe_text();
    qp_recipe *r = NULL;
    int rc = qp_recipe_load_string(&r, "est.yaml", text);
    free(text);
    if (rc)
        fail_msg("%s", qp_error_last());
    return r;
}

static void test_shapes_from_checkpoint(void **state)
{
    (void)state;
    char *dir = qp_test_shared_path("models/house-llama");
    qp_est_art a;
    assert_int_equal(qp_est_art_from_dir(&a, dir), 0);
    assert_int_equal(a.cfg.hidden, 256);
    assert_int_equal(a.cfg.n_layers, 6);
    assert_int_equal(a.n, 57);   /* embed, norm, lm_head + 6 layers x 9 */
    assert_int_equal(qp_est_art_tensor_bytes(&a), 10492416);   /* the safetensors data, bf16 */
    assert_true(a.bytes > qp_est_art_tensor_bytes(&a));      /* + config, tokenizer */
    /* the tensors qp_llama reads, made from config.json alone, are the same */
    qp_est_art b;
    qp_est_art_from_config(&b, &a.cfg, QP_GGML_BF16);
    assert_int_equal(b.n, a.n);
    assert_int_equal(qp_est_art_tensor_bytes(&b), qp_est_art_tensor_bytes(&a));
    /* a directory without config.json is no model */
    qp_est_art c;
    char *data = qp_test_shared_path("data/shakespeare");
    assert_int_equal(qp_est_art_from_dir(&c, data), QP_ENOTFOUND);
    qp_error_clear();
    qp_est_art_free(&a);
    qp_est_art_free(&b);
    free(dir);
    free(data);
}

static void test_counts(void **state)
{
    (void)state;
    char *dir = qp_test_shared_path("models/house-llama");
    qp_est_art a;
    assert_int_equal(qp_est_art_from_dir(&a, dir), 0);
    qp_llama_hparams hp;
    qp_est_hparams(&hp, &a.cfg);
    /* 6 x (q 256² + k,v 2·256·128 + o 256² + gate/up/down 3·256·768) + lm_head 1024·256 */
    assert_int_equal(qp_llama_matmul_params(&hp), 4980736);
    /* every layer's f32 weights fit the 2 GiB cache: 4 bytes each, + embedding, lm_head, norms */
    assert_int_equal(qp_est_llama_resident(&hp, &qp_est_coef_default), 18874368 + 1048576 + 1048576 + 1024 + 12288);
    assert_true(qp_est_llama_cached(&hp, &qp_est_coef_default));
    /* cached: the stored bytes are dropped once the f32 copies are made (stages/model_load.c) */
    assert_int_equal(qp_est_stored_resident(&a, &hp, &qp_est_coef_default, 0, NULL), 0);
    /* with no room for them, streamed (model/llama.c): one product group's f32 tile (gate/up/down 768·256),
     * lm_head f32 (<= QP_LLAMA_HEAD_RESIDENT), the norms */
    qp_est_coef small = qp_est_coef_default;
    small.weight_cache = 0;
    assert_false(qp_est_llama_cached(&hp, &small));
    assert_int_equal(qp_est_llama_resident(&hp, &small), 768 * 256 * 4 + 1048576 + 13 * 256 * 4);
    /* and the stored bytes kept: embedding, lm_head and final norm always; the layers under the cap;
     * a layer tensor not kept is read per use (the largest: gate/up/down, 768·256 bf16) */
    uint64_t per_use = 0;
    assert_int_equal(qp_est_stored_resident(&a, &hp, &small, 0, &per_use), 2 * 1024 * 256 * 2 + 256 * 2);
    assert_int_equal(per_use, 768 * 256 * 2);
    assert_int_equal(qp_est_stored_resident(&a, &hp, &small, (uint64_t)1 << 40, &per_use), 10492416);
    assert_int_equal(per_use, 0);
    /* GPTQ on down_proj [256, 768]: c·768³ (inverse) + 2·256·768² (updates) */
    qp_est_coef c2 = qp_est_coef_default;
    c2.gptq_inv_flops = 2;
    assert_true(qp_est_gptq_flops(256, 768, &c2) == 2.0 * 768 * 768 * 768 + 2.0 * 256 * 768 * 768);
    /* windows: 1000 tokens of ctx 256 are 3 full + a last of 232 */
    assert_int_equal(qp_est_eval_windows(1000, 256, 0, 0), 4);
    assert_int_equal(qp_est_eval_windows(1000, 256, 0, 2), 2);
    assert_int_equal(qp_est_eval_windows(1000, 256, 513, 0), 2);   /* a last window of one token scores nothing */
    assert_int_equal(qp_est_eval_windows(1000, 256, 514, 0), 3);
    assert_int_equal(qp_est_eval_windows(1000, 0, 0, 0), 0);
    qp_est_art_free(&a);
    free(dir);
}

/* TinyLlama-1.1B's shapes (bf16, untied lm_head): what evaluate, calibrate and
 * GPTQ hold since they stream the layers (measured RSS, Q4_K_M evaluate:
 * 667 MB stored + 262 MB f32 lm_head + ~0.5 GB batch = 1.45 GB) */
static void test_counts_1b(void **state)
{
    (void)state;
    qp_llama_config cfg = {.arch = QP_ARCH_LLAMA, .vocab = 32000, .hidden = 2048, .n_layers = 22, .n_heads = 32,
                           .n_kv_heads = 4, .head_dim = 64, .intermediate = 5632, .rms_eps = 1e-5f,
                           .rope_theta = 10000, .max_pos = 2048, .bos_id = 1, .eos_id = 2};
    qp_est_art a;
    qp_est_art_from_config(&a, &cfg, QP_GGML_BF16);
    qp_llama_hparams hp;
    qp_est_hparams(&hp, &cfg);
    /* 3.9 GB of f32 layers: over the 2 GiB cache, streamed */
    assert_false(qp_est_llama_cached(&hp, &qp_est_coef_default));
    /* the gate/up/down tile (5632·2048 f32), lm_head f32 (250 MiB <= QP_LLAMA_HEAD_RESIDENT), 45 norms */
    assert_int_equal(qp_est_llama_resident(&hp, &qp_est_coef_default),
                     5632u * 2048 * 4 + 32000u * 2048 * 4 + 45u * 2048 * 4);
    uint64_t per_use = 0;
    /* calibrate / GPTQ (no cap): the embedding's and lm_head's bf16 bytes, one 5632·2048 bf16 tensor per use */
    assert_int_equal(qp_est_stored_resident(&a, &hp, &qp_est_coef_default, 0, &per_use),
                     2u * 32000 * 2048 * 2 + 2048 * 2);
    assert_int_equal(per_use, 5632u * 2048 * 2);
    /* evaluate (a third of RAM): all of it */
    assert_int_equal(qp_est_stored_resident(&a, &hp, &qp_est_coef_default, (uint64_t)1 << 40, &per_use),
                     qp_est_art_tensor_bytes(&a));
    /* model/eval.h: 16 windows of 256 a pass in QP_EVAL_BATCH_BYTES, about half beside a reference
     * (the packed-X rounding depends on the GEMM kernel) */
    assert_int_equal(qp_eval_batch_windows_hp(&hp, NULL, 2, 256, QP_EVAL_BATCH_BYTES), 16);
    size_t with_ref = qp_eval_batch_windows_hp(&hp, &hp, 2, 256, QP_EVAL_BATCH_BYTES);
    assert_true(with_ref >= 7 && with_ref <= 8);
    double act = qp_llama_batch_bytes_hp(&hp, 2, 16, 256);
    assert_true(act > 16.0 * 256 * 22016 * 4 && act < 512.0 * 1048576);
    qp_est_art_free(&a);
}

static void test_recipe_estimate(void **state)
{
    (void)state;
    qp_recipe *r = load();
    qp_est_machine m;
    qp_est_machine_defaults(&m, 2);
    qp_recipe_estimate *e = qp_recipe_estimate_new(r, NULL, &m, &qp_est_coef_default, 2);
    /* the plan of Q4_K_M gives the bytes the stage stores (its "bytes" metric on house-llama) */
    const qp_est_art *q = qp_recipe_estimate_output(e, "q4km");
    assert_non_null(q);
    assert_int_equal(qp_est_art_tensor_bytes(q), 3141632);
    qp_est_result res;
    /* fetch drops each tensor's pages once stored: base + the largest tensor (the bf16 embedding) */
    assert_int_equal(qp_recipe_estimate_stage(e, "model", &res), 0);
    assert_int_equal(res.peak_rss, (uint64_t)qp_est_coef_default.base_rss + 1024 * 256 * 2);
    assert_string_equal(res.rss_part, "largest tensor");
    /* package GGUF: house-llama's embedding in f32 (1 MiB) and the header outweigh a layer tensor, and
     * either sits beside seqout's three 8 MiB staging buffers */
    assert_int_equal(qp_recipe_estimate_stage(e, "pkg", &res), 0);
    assert_string_equal(res.rss_part, "a global tensor, the header and the write buffers");
    assert_true(res.peak_rss > (uint64_t)qp_est_coef_default.base_rss + (24u << 20) &&
                res.peak_rss < (uint64_t)qp_est_coef_default.base_rss + (26u << 20));
    assert_int_equal(qp_recipe_estimate_stage(e, "q4km", &res), 0);
    assert_true(res.known);
    assert_true(res.seconds > 0);
    int has_quantize = 0;
    for (size_t i = 0; i < res.n_terms; i++)
        has_quantize |= strcmp(res.terms[i].name, "quantize") == 0 && res.terms[i].seconds > 0;
    assert_true(has_quantize);
    /* evaluate: 16 windows of 256 tokens, each 2·params·256 + attention FLOPs, at the GEMM rate */
    assert_int_equal(qp_recipe_estimate_stage(e, "ev", &res), 0);
    assert_true(res.known);
    assert_non_null(strstr(res.note, "16 windows of 256, 16 a pass"));
    assert_string_equal(res.rss_part, "f32 weights");   /* house-llama's layers fit the f32 cache */
    assert_string_equal(qp_est_dominant(&res, NULL), "gemm");
    /* calibrate with Hessians holds one layer's at a time (stages/calibrate.c): (3·256² + 768²) x 12 bytes at least */
    assert_int_equal(qp_recipe_estimate_stage(e, "calib", &res), 0);
    assert_true(res.peak_rss > (3u * 256 * 256 + 768u * 768) * 12);   /* one layer's Hessians at least */
    assert_string_equal(res.rss_part, "one layer's Hessians");
    assert_int_equal(qp_recipe_estimate_stage(e, "nope", &res), -1);
    qp_recipe_estimate_free(e);
    qp_recipe_free(r);
}

/* package GGUF: seqout reads, hashes and writes on three threads, so the
 * stage takes as long as its slowest side, not the sum of them. */
static double pkg_seconds(int cpus, double sha_mbs, double disk_wd_mbs, double *out_bytes, const char **dominant)
{
    qp_recipe *r = load();
    qp_est_machine m;
    qp_est_machine_defaults(&m, 2);
    m.cpus = cpus;
    m.sha_mbs = sha_mbs;
    m.disk_wd_mbs = disk_wd_mbs;
    m.disk_wd_fixed_ms = 100;
    qp_recipe_estimate *e = qp_recipe_estimate_new(r, NULL, &m, &qp_est_coef_default, 2);
    qp_est_result res;
    assert_int_equal(qp_recipe_estimate_stage(e, "pkg", &res), 0);
    *out_bytes = (double)res.out_bytes;
    *dominant = qp_est_dominant(&res, NULL);
    double s = res.seconds;
    qp_recipe_estimate_free(e);
    qp_recipe_free(r);
    return s;
}

static void test_package_pipeline(void **state)
{
    (void)state;
    double bytes;
    const char *dom;
    /* a slow disk: the write side alone, plus the stream's fixed 0.1 s (the
     * reader and the hasher hide behind it) */
    double fsyncs = 3 * 5e-3;   /* qp_est_machine_defaults: fsync_ms 5 */
    double slow = pkg_seconds(2, 1000, 1, &bytes, &dom);
    assert_true(bytes > 3e6);   /* house-llama: no tensor outgrows seqout's ring, nothing serial */
    assert_true(fabs(slow - (bytes / 1e6 / 1 + 0.1 + fsyncs)) < 1e-9);
    assert_string_equal(dom, "write");
    /* a slow hash: its side alone (+ the fixed cost), whatever the disk */
    double h1 = pkg_seconds(2, 0.5, 1000, &bytes, &dom), h2 = pkg_seconds(2, 0.5, 100000, &bytes, &dom);
    assert_true(fabs(h1 - (bytes / 1e6 / 0.5 + 0.1 + fsyncs)) < 1e-9);
    assert_true(fabs(h1 - h2) < 1e-9);
    assert_string_equal(dom, "sha256");
    /* one CPU: the reader and the hasher take turns, so the reader's time
     * comes on top of the hash even with a fast disk */
    double one = pkg_seconds(1, 0.5, 100000, &bytes, &dom);
    assert_true(one > h1 + 1e-6);
    assert_string_equal(dom, "sha256");
}

/* A tensor larger than seqout's ring is read whole before its bytes go
 * out, so its hashing and writing beyond the ring do not overlap the read:
 * one 1 GB Q8_0 tensor takes its read, then its write. */
static void test_package_large_tensor(void **state)
{
    (void)state;
    qp_est_tensor t = {.name = "model.layers.0.mlp.down_proj.weight", .ndim = 2, .rows = 1 << 15, .cols = 1 << 15,
                       .fmt = QP_EST_GGML, .type = QP_GGML_Q8_0, .bytes = 1000000000};
    qp_est_art a = {.type = QP_ART_QMODEL, .known = 1, .t = &t, .n = 1};
    const qp_est_art *inputs[] = {&a};
    qp_est_machine m;
    qp_est_machine_defaults(&m, 2);
    m.cpus = 2;
    m.sha_mbs = 1e6;   /* the disk alone drains: 10 s for 1 GB */
    m.disk_wd_mbs = 100;
    m.disk_wd_fixed_ms = 100;
    json_t *params = json_pack("{s:s}", "format", "gguf");
    qp_est_input in = {.id = "pkg", .kind = qp_stage_kind_find("package"), .params = params, .n_inputs = 1,
                       .inputs = inputs, .mach = &m, .coef = &qp_est_coef_default, .threads = 2};
    assert_non_null(in.kind);
    qp_est_result res;
    qp_est_art out;
    qp_estimate_stage(&in, &res, &out);
    assert_true(res.known);
    double wr = (double)res.out_bytes / 1e6 / 100, ring = 16.0 * 1048576 / 1e6 / 100;
    double read = 1000.0 / m.disk_r_mbs;   /* its read alone, at least */
    assert_true(res.seconds >= wr - ring + read + 0.1);
    assert_true(res.seconds < wr + read * 5 + 0.2);
    assert_string_equal(qp_est_dominant(&res, NULL), "write");
    qp_est_art_free(&out);
    json_decref(params);
}

static void test_memory_check(void **state)
{
    (void)state;
    qp_recipe *r = load();
    qp_est_machine m;
    qp_est_machine_defaults(&m, 2);
    qp_recipe_estimate *e = qp_recipe_estimate_new(r, NULL, &m, &qp_est_coef_default, 2);
    qp_est_result cal;
    assert_int_equal(qp_recipe_estimate_stage(e, "calib", &cal), 0);
    uint64_t peak = 0;
    const char *ids[] = {"model", "q4km", "calib", "gptq", "ev", "pkg"};
    for (size_t i = 0; i < 6; i++) {
        qp_est_result s;
        assert_int_equal(qp_recipe_estimate_stage(e, ids[i], &s), 0);
        if (s.peak_rss > peak)
            peak = s.peak_rss;
    }
    /* enough memory, or none known: no refusal */
    assert_int_equal(qp_recipe_estimate_check(e, peak, "test"), 0);
    assert_int_equal(qp_recipe_estimate_check(e, 0, "test"), 0);
    /* one byte less than the largest: the first stage over it is named, with both figures and advice */
    assert_int_equal(qp_recipe_estimate_check(e, peak - 1, "injected"), QP_ERROR);
    const char *msg = qp_error_last();
    assert_non_null(strstr(msg, "is predicted to need"));
    assert_non_null(strstr(msg, "available (injected)"));
    assert_non_null(strstr(msg, "--ignore-memory"));
    assert_null(strchr(msg, '\n'));
    /* the calibration with Hessians over a limit below its peak: named, and told to drop the Hessians */
    assert_int_equal(qp_recipe_estimate_check(e, cal.peak_rss - 1, "injected"), QP_ERROR);
    msg = qp_error_last();
    assert_non_null(strstr(msg, "stage 'calib' (calibrate)"));
    assert_non_null(strstr(msg, "hessians: false"));
    qp_recipe_estimate_free(e);
    /* cached stages cost nothing and are never refused; stages not in the run are not checked */
    json_t *status = json_pack("{s:s, s:s, s:s}", "model", "cached", "calib", "cached", "q4km", "will run");
    e = qp_recipe_estimate_new(r, status, &m, &qp_est_coef_default, 2);
    qp_est_result s;
    assert_int_equal(qp_recipe_estimate_stage(e, "calib", &s), 0);
    assert_int_equal(s.peak_rss, 0);
    assert_true(s.seconds == 0);
    qp_est_result q;
    assert_int_equal(qp_recipe_estimate_stage(e, "q4km", &q), 0);
    assert_true(q.peak_rss > 0 && q.peak_rss < cal.peak_rss);
    assert_int_equal(qp_recipe_estimate_check(e, q.peak_rss, "injected"), 0);
    assert_int_equal(qp_recipe_estimate_check(e, q.peak_rss - 1, "injected"), QP_ERROR);
    assert_non_null(strstr(qp_error_last(), "stage 'q4km'"));
    qp_error_clear();
    json_decref(status);
    qp_recipe_estimate_free(e);
    qp_recipe_free(r);
}

static void test_machine_json(void **state)
{
    (void)state;
    qp_est_machine m, back;
    qp_est_machine_defaults(&m, 3);
    m.gemm_gflops = 123.5;
    m.seconds = 2.5;
    m.quant_mbs[QP_EST_Q6K] = 77;
    json_t *j = qp_est_machine_to_json(&m);
    assert_int_equal(qp_est_machine_from_json(&back, j), 0);
    assert_int_equal(back.threads, 3);
    assert_true(back.gemm_gflops == 123.5);
    assert_true(back.quant_mbs[QP_EST_Q6K] == 77);
    assert_true(back.measured);
    /* a damaged calibration is refused by name */
    json_object_set_new(j, "sha_mbs", json_integer(-1));
    assert_int_equal(qp_est_machine_from_json(&back, j), QP_EFORMAT);
    assert_non_null(strstr(qp_error_last(), "'sha_mbs'"));
    qp_error_clear();
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shapes_from_checkpoint),
        cmocka_unit_test(test_counts),
        cmocka_unit_test(test_counts_1b),
        cmocka_unit_test(test_recipe_estimate),
        cmocka_unit_test(test_package_pipeline),
        cmocka_unit_test(test_package_large_tensor),
        cmocka_unit_test(test_memory_check),
        cmocka_unit_test(test_machine_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
