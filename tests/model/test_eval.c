/* model/eval: KLD / top-1 / RMS dp statistics against a naive computation,
 * the two perplexity protocols' window accounting, and multiple choice. */
#include "tests/support/testutil.h"

#include "common/error.h"
#include "common/fsutil.h"
#include "model/config.h"
#include "model/eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    qp_checkpoint *ck;
    const char *scaled;   /* tensor multiplied by `factor` */
    float factor;
} perturbed;

static int perturbed_get(void *ud, const char *name, int ndim, const uint64_t *shape, float *dst)
{
    perturbed *p = ud;
    qp_weight_source base;
    qp_weight_source_checkpoint(&base, p->ck);
    int rc = base.get_f32(base.ud, name, ndim, shape, dst);
    if (rc == 0 && p->scaled && strcmp(name, p->scaled) == 0) {
        uint64_t n = 1;
        for (int i = 0; i < ndim; i++)
            n *= shape[i];
        for (uint64_t i = 0; i < n; i++)
            dst[i] *= p->factor;
    }
    return rc;
}

static qp_checkpoint *ck;
static qp_llama_hparams hp;
static qp_tokenizer *tok;
static int32_t *tokens;
static size_t n_tokens;

static int setup(void **state)
{
    (void)state;
    char *dir = qp_test_shared_path("models/house-llama");
    char *cfg = qp_path_join(dir, "config.json"), *tm = qp_path_join(dir, "tokenizer.model");
    char *valid = qp_test_shared_path("data/shakespeare/valid.txt");
    qp_llama_config c;
    char *text = NULL;
    size_t len = 0;
    int *ids = NULL;
    if (qp_checkpoint_open(&ck, dir) || qp_llama_config_load(&c, cfg) || qp_tokenizer_load_spm(&tok, tm) ||
        qp_read_file(valid, &text, &len) || qp_tokenizer_encode(tok, text, len, QP_TOK_ADD_BOS, &ids, &n_tokens))
        return -1;
    qp_llama_hparams_from_config(&hp, &c);
    tokens = (int32_t *)ids;
    free(text);
    free(dir);
    free(cfg);
    free(tm);
    free(valid);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    qp_checkpoint_free(ck);
    qp_tokenizer_free(tok);
    free(tokens);
    return 0;
}

static qp_llama *open_model(perturbed *p, int threads)
{
    qp_weight_source src = {.ud = p, .get_f32 = perturbed_get, .rope_interleaved = 0};
    qp_llama_opts o;
    qp_llama_opts_init(&o);
    o.n_threads = threads;
    qp_llama *m = NULL;
    assert_int_equal(qp_llama_new(&m, &hp, &src, &o), 0);
    return m;
}

static void test_kld_matches_naive(void **state)
{
    (void)state;
    perturbed pa = {ck, NULL, 1}, pb = {ck, "model.layers.2.mlp.down_proj.weight", 1.3f};
    qp_llama *ref = open_model(&pa, 2), *q = open_model(&pb, 2);
    const size_t ctx = 64, windows = 3, V = (size_t)hp.vocab;
    qp_eval_acc *acc = NULL;
    assert_int_equal(qp_eval_acc_new(&acc, 1), 0);
    assert_int_equal(qp_eval_stream(acc, q, ref, tokens, ctx * windows, 1, QP_PPL_WINDOWS, ctx, 0, NULL, NULL), 0);
    qp_eval_result r;
    assert_int_equal(qp_eval_finish(acc, &r), 0);

    /* naive: probabilities by direct exponentiation, KL = Σ p log(p/q) */
    float *lq = malloc(ctx * V * sizeof(float)), *lp = malloc(ctx * V * sizeof(float));
    double kl_sum = 0, dp2 = 0, nll_q = 0, nll_p = 0;
    size_t same = 0, n = 0;
    double *all = malloc(windows * ctx * sizeof(double));
    for (size_t w = 0; w < windows; w++) {
        const int32_t *t = tokens + w * ctx;
        assert_int_equal(qp_llama_forward(q, t, ctx, lq), 0);
        assert_int_equal(qp_llama_forward(ref, t, ctx, lp), 0);
        for (size_t i = 1; i < ctx; i++) {
            const float *a = lp + (i - 1) * V, *b = lq + (i - 1) * V;
            double za = 0, zb = 0;
            size_t ba = 0, bb = 0;
            for (size_t v = 0; v < V; v++) {
                za += exp((double)a[v]);
                zb += exp((double)b[v]);
                if (a[v] > a[ba]) ba = v;
                if (b[v] > b[bb]) bb = v;
            }
            double kl = 0;
            for (size_t v = 0; v < V; v++) {
                double pv = exp((double)a[v]) / za, qv = exp((double)b[v]) / zb;
                kl += pv * log(pv / qv);
            }
            double pt = exp((double)a[t[i]]) / za, qt = exp((double)b[t[i]]) / zb;
            dp2 += (qt - pt) * (qt - pt);
            nll_p -= log(pt);
            nll_q -= log(qt);
            same += ba == bb;
            all[n++] = kl;
            kl_sum += kl;
        }
    }
    assert_int_equal(r.scored, n);
    assert_true(r.kld_mean > 1e-4);  /* the perturbation is visible */
    assert_true(fabs(r.kld_mean - kl_sum / (double)n) < 1e-9 * (1 + kl_sum / (double)n) + 1e-12);
    assert_true(fabs(r.rms_dp - sqrt(dp2 / (double)n)) < 1e-9);
    assert_true(fabs(r.ppl - exp(nll_q / (double)n)) < 1e-9 * r.ppl);
    assert_true(fabs(r.ppl_ref - exp(nll_p / (double)n)) < 1e-9 * r.ppl_ref);
    assert_true(fabs(r.top1 - (double)same / (double)n) < 1e-12);
    assert_true(r.top1 < 1.0);
    /* p99 lies between the 98th and 100th smallest of the values */
    size_t below = 0;
    for (size_t i = 0; i < n; i++)
        below += all[i] <= r.kld_p99 + 1e-15;
    assert_true(below >= (size_t)(0.99 * (double)(n - 1)) && below <= n);
    free(all);
    free(lq);
    free(lp);
    qp_eval_acc_free(acc);
    qp_llama_free(ref);
    qp_llama_free(q);
}

/* Windows per pass (1, 4, automatic) and threads (1, 2) leave every
 * metric bit-identical, with and without a reference, in both protocols
 * (the stream's last window is shorter in the windows protocol). */
static void test_batch_invariant(void **state)
{
    (void)state;
    perturbed pa = {ck, NULL, 1}, pb = {ck, "model.layers.1.self_attn.v_proj.weight", 0.7f};
    const size_t ctx = 48, n = 48 * 9 + 17;
    assert_true(n_tokens >= n);
    qp_eval_result want[2][2];
    const size_t batches[] = {1, 4, 0};
    for (int threads = 1; threads <= 2; threads++) {
        qp_llama *ref = open_model(&pa, threads), *q = open_model(&pb, threads);
        for (size_t b = 0; b < sizeof(batches) / sizeof(batches[0]); b++)
            for (int with_ref = 0; with_ref <= 1; with_ref++)
                for (int proto = 0; proto <= 1; proto++) {
                    qp_eval_acc *acc = NULL;
                    qp_eval_result r;
                    assert_int_equal(qp_eval_acc_new(&acc, with_ref), 0);
                    qp_eval_acc_set_batch(acc, batches[b]);
                    assert_int_equal(qp_eval_stream(acc, q, with_ref ? ref : NULL, tokens, n, 1,
                                                    proto ? QP_PPL_LLAMACPP : QP_PPL_WINDOWS, ctx, 0, NULL, NULL),
                                     0);
                    assert_int_equal(qp_eval_finish(acc, &r), 0);
                    assert_int_equal(r.windows, proto ? 9 : 10);
                    if (threads == 1 && b == 0)
                        want[with_ref][proto] = r;
                    else
                        assert_memory_equal(&r, &want[with_ref][proto], sizeof(r));
                    qp_eval_acc_free(acc);
                }
        qp_llama_free(ref);
        qp_llama_free(q);
    }
    assert_true(want[1][0].kld_mean > 0);
    /* the automatic batch grows with the budget and is at least 1 */
    qp_llama *m = open_model(&pa, 1);
    assert_int_equal(qp_eval_batch_windows(m, NULL, 256, 1), 1);
    assert_int_equal(qp_eval_batch_windows(m, NULL, 256, (size_t)1 << 40), QP_EVAL_MAX_BATCH);
    assert_true(qp_eval_batch_windows(m, m, 256, QP_EVAL_BATCH_BYTES) <=
                qp_eval_batch_windows(m, NULL, 256, QP_EVAL_BATCH_BYTES));
    qp_llama_free(m);
}

/* The scored rows alone (qp_llama_batch_logits_from) are the very bits of
 * those rows of the whole head, whatever row they start at and whether
 * the count is a multiple of the kernels' row blocks; rows before it are
 * left untouched. */
static void test_logits_from_rows(void **state)
{
    (void)state;
    perturbed pa = {ck, NULL, 1};
    const size_t n = 45, S = 2, V = (size_t)hp.vocab;
    for (int threads = 1; threads <= 2; threads++) {
        qp_llama *m = open_model(&pa, threads);
        assert_int_equal(qp_llama_forward_batch(m, tokens, S, n), 0);
        float *full = malloc(n * V * sizeof(float)), *part = malloc(n * V * sizeof(float));
        const size_t starts[] = {0, 1, 7, 8, 23, 44, 45, 60};
        for (size_t s = 0; s < S; s++) {
            assert_int_equal(qp_llama_batch_logits(m, s, full), 0);
            for (size_t k = 0; k < sizeof(starts) / sizeof(starts[0]); k++) {
                size_t r0 = starts[k];
                memset(part, 0x7f, n * V * sizeof(float));
                assert_int_equal(qp_llama_batch_logits_from(m, s, r0, part), 0);
                if (r0 < n)
                    assert_memory_equal(part + r0 * V, full + r0 * V, (n - r0) * V * sizeof(float));
                for (size_t i = 0; i < (r0 < n ? r0 : n) * V; i++)
                    assert_true(((unsigned char *)part)[4 * i] == 0x7f);
            }
        }
        free(full);
        free(part);
        qp_llama_free(m);
    }
}

static void test_protocol_accounting(void **state)
{
    (void)state;
    perturbed pa = {ck, NULL, 1};
    qp_llama *m = open_model(&pa, 1);
    qp_eval_acc *a = NULL;
    qp_eval_result r;
    /* windows: 600 tokens, ctx 256 -> 256, 256, 88 -> 255 + 255 + 87 scored */
    assert_int_equal(qp_eval_acc_new(&a, 0), 0);
    assert_int_equal(qp_eval_stream(a, m, NULL, tokens, 600, 1, QP_PPL_WINDOWS, 256, 0, NULL, NULL), 0);
    assert_int_equal(qp_eval_finish(a, &r), 0);
    assert_int_equal(r.windows, 3);
    assert_int_equal(r.scored, 255 + 255 + 87);
    qp_eval_acc_free(a);
    /* a trailing window of one token scores nothing and is not counted */
    assert_int_equal(qp_eval_acc_new(&a, 0), 0);
    assert_int_equal(qp_eval_stream(a, m, NULL, tokens, 513, 1, QP_PPL_WINDOWS, 256, 0, NULL, NULL), 0);
    assert_int_equal(qp_eval_finish(a, &r), 0);
    assert_int_equal(r.windows, 2);
    assert_int_equal(r.scored, 510);
    qp_eval_acc_free(a);
    /* llama.cpp: floor(600/256) = 2 chunks, positions 129..255 each */
    assert_int_equal(qp_eval_acc_new(&a, 0), 0);
    assert_int_equal(qp_eval_stream(a, m, NULL, tokens, 600, 1, QP_PPL_LLAMACPP, 256, 0, NULL, NULL), 0);
    assert_int_equal(qp_eval_finish(a, &r), 0);
    assert_int_equal(r.windows, 2);
    assert_int_equal(r.scored, 2 * 127);
    qp_eval_acc_free(a);
    /* max_chunks counts across streams */
    assert_int_equal(qp_eval_acc_new(&a, 0), 0);
    assert_int_equal(qp_eval_stream(a, m, NULL, tokens, 1024, 1, QP_PPL_WINDOWS, 128, 5, NULL, NULL), 0);
    assert_int_equal(qp_eval_stream(a, m, NULL, tokens, 1024, 1, QP_PPL_WINDOWS, 128, 5, NULL, NULL), 0);
    assert_int_equal(qp_eval_finish(a, &r), 0);
    assert_int_equal(r.windows, 5);
    qp_eval_acc_free(a);
    /* errors */
    assert_int_equal(qp_eval_acc_new(&a, 0), 0);
    assert_int_equal(qp_eval_stream(a, m, NULL, tokens, 600, 1, QP_PPL_WINDOWS, 512, 0, NULL, NULL), QP_EUSAGE);
    assert_string_equal(qp_error_last(), "evaluation context 512 exceeds the model's 256 positions; lower ctx:");
    assert_int_equal(qp_eval_finish(a, &r), QP_EUSAGE);
    qp_eval_acc_free(a);
    qp_llama_free(m);
}

static void test_mc(void **state)
{
    (void)state;
    perturbed pa = {ck, NULL, 1};
    qp_llama *m = open_model(&pa, 2);
    const char *e1[] = {" my lord, and so I will.", " lord my so, I will and."};
    const char *e2[] = {" zq xk qqz vv", " thee, and I am glad of it."};
    qp_mc_item items[] = {
        {"\nFirst Citizen:\nI will speak to you,", e1, 2, 0},
        {"\nROMEO:\nI thank", e2, 2, 1},
    };
    qp_mc_result r;
    assert_int_equal(qp_eval_mc(&r, m, tok, items, 2, NULL, NULL), 0);
    assert_int_equal(r.items, 2);
    assert_true(r.acc == 1.0);
    assert_true(r.acc_norm == 1.0);
    qp_llama_free(m);
}

/* Models without BOS (Qwen2): llama.cpp's protocol leaves each chunk as it
 * is (no first token replaced), the windows protocol is the same cut, and
 * multiple choice conditions an empty ctx on EOS (or refuses with neither). */
static void test_no_bos(void **state)
{
    (void)state;
    perturbed pa = {ck, NULL, 1};
    qp_llama *m = open_model(&pa, 2);
    const int32_t *text = tokens + 1;   /* valid.txt without its BOS */
    qp_eval_acc *a = NULL;
    qp_eval_result r, rb;
    assert_int_equal(qp_eval_acc_new(&a, 0), 0);
    assert_int_equal(qp_eval_stream(a, m, NULL, text, 600, -1, QP_PPL_LLAMACPP, 256, 0, NULL, NULL), 0);
    assert_int_equal(qp_eval_finish(a, &r), 0);
    qp_eval_acc_free(a);
    double nll = 0;
    size_t count = 0;
    for (size_t c = 0; c < 2; c++)
        assert_int_equal(qp_llama_nll(m, text + c * 256, 256, 129, &nll, &count), 0);
    assert_int_equal(r.scored, count);
    assert_int_equal(r.scored, 2 * 127);
    assert_true(fabs(r.nll_mean - nll / (double)count) < 1e-9 * nll / (double)count);
    /* with a BOS the first token of each chunk is replaced: other figures */
    assert_int_equal(qp_eval_acc_new(&a, 0), 0);
    assert_int_equal(qp_eval_stream(a, m, NULL, text, 600, 1, QP_PPL_LLAMACPP, 256, 0, NULL, NULL), 0);
    assert_int_equal(qp_eval_finish(a, &rb), 0);
    qp_eval_acc_free(a);
    assert_true(rb.nll_mean != r.nll_mean);
    /* windows: bos plays no part in the cut */
    assert_int_equal(qp_eval_acc_new(&a, 0), 0);
    assert_int_equal(qp_eval_stream(a, m, NULL, text, 600, -1, QP_PPL_WINDOWS, 256, 0, NULL, NULL), 0);
    assert_int_equal(qp_eval_finish(a, &r), 0);
    qp_eval_acc_free(a);
    nll = 0;
    count = 0;
    for (size_t s0 = 0; s0 < 600; s0 += 256)
        assert_int_equal(qp_llama_nll(m, text + s0, 600 - s0 < 256 ? 600 - s0 : 256, 1, &nll, &count), 0);
    assert_int_equal(r.scored, count);
    assert_int_equal(r.windows, 3);
    assert_true(fabs(r.nll_mean - nll / (double)count) < 1e-9 * nll / (double)count);

    /* the same vocabulary without BOS (and then without EOS either) */
    size_t nv = qp_tokenizer_n_vocab(tok);
    const char **pieces = malloc(nv * sizeof(*pieces));
    float *scores = malloc(nv * sizeof(float));
    int *types = malloc(nv * sizeof(int));
    for (size_t i = 0; i < nv; i++) {
        pieces[i] = qp_tokenizer_piece(tok, (int)i);
        scores[i] = qp_tokenizer_score(tok, (int)i);
        types[i] = qp_tokenizer_type(tok, (int)i);
    }
    qp_tokenizer *nobos = NULL, *none = NULL;
    assert_int_equal(qp_tokenizer_from_vocab(&nobos, nv, pieces, scores, types, -1, qp_tokenizer_eos(tok),
                                             qp_tokenizer_unk(tok), qp_tokenizer_add_dummy_prefix(tok)), 0);
    assert_int_equal(qp_tokenizer_from_vocab(&none, nv, pieces, scores, types, -1, -1, qp_tokenizer_unk(tok),
                                             qp_tokenizer_add_dummy_prefix(tok)), 0);
    assert_int_equal(qp_tokenizer_wants_bos(nobos), 0);
    const char *e1[] = {"First Citizen:", "zq xk qqz vv"};
    const char *e2[] = {" zq xk qqz vv", " thee, and I am glad of it."};
    qp_mc_item items[] = {{"", e1, 2, 0}, {"\nROMEO:\nI thank", e2, 2, 1}};
    qp_mc_result mr;
    assert_int_equal(qp_eval_mc(&mr, m, nobos, items, 2, NULL, NULL), 0);
    assert_true(mr.acc == 1.0);
    /* item 1 by hand: [EOS] + the ending's tokens, every ending token scored;
     * the hand-made log-likelihoods order the endings as qp_eval_mc did */
    double lp[2];
    for (int e = 0; e < 2; e++) {
        int *ids = NULL;
        size_t n = 0;
        assert_int_equal(qp_tokenizer_encode(nobos, e1[e], strlen(e1[e]), QP_TOK_ADD_BOS, &ids, &n), 0);
        assert_true(n >= 2 && ids[0] != 1);   /* ADD_BOS is ignored without a BOS */
        int32_t *seq = malloc((n + 1) * sizeof(int32_t));
        seq[0] = qp_tokenizer_eos(tok);
        for (size_t i = 0; i < n; i++)
            seq[i + 1] = ids[i];
        nll = 0;
        count = 0;
        assert_int_equal(qp_llama_nll(m, seq, n + 1, 1, &nll, &count), 0);
        assert_int_equal(count, n);
        lp[e] = -nll;
        free(seq);
        free(ids);
    }
    qp_mc_result one;
    qp_mc_item flipped = items[0];
    flipped.label = lp[0] > lp[1] ? 1 : 0;   /* the ending the hand computation ranks second */
    assert_int_equal(qp_eval_mc(&one, m, nobos, &flipped, 1, NULL, NULL), 0);
    assert_true(one.acc == 0.0);
    flipped.label = 1 - flipped.label;
    assert_int_equal(qp_eval_mc(&one, m, nobos, &flipped, 1, NULL, NULL), 0);
    assert_true(one.acc == 1.0);
    assert_int_equal(qp_eval_mc(&one, m, none, items, 1, NULL, NULL), QP_EUSAGE);
    assert_string_equal(qp_error_last(), "multiple-choice item 1, ending 0: the context has no tokens and the model "
                                         "has neither BOS nor EOS to condition the ending on");
    qp_tokenizer_free(nobos);
    qp_tokenizer_free(none);
    free(pieces);
    free(scores);
    free(types);
    qp_llama_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kld_matches_naive),
        cmocka_unit_test(test_batch_invariant),
        cmocka_unit_test(test_logits_from_rows),
        cmocka_unit_test(test_protocol_accounting),
        cmocka_unit_test(test_mc),
        cmocka_unit_test(test_no_bos),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
