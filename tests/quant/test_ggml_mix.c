/* llama-quantize's per-tensor type rules: every tensor of every mix and
 * --pure oracle file of the house model, hand-derived tables for larger
 * models (use_more_bits layers, n_gqa, 70B, experts), the k-quant fallback
 * and its message, overrides, and the refusals. */
#include "tests/support/testutil.h"

#include "common/error.h"
#include "model/gguf.h"
#include "quant/ggml_mix.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static qp_gguf *open_shared(const char *rel)
{
    char *p = qp_test_shared_path(rel);
    qp_gguf *g = NULL;
    int rc = qp_gguf_open(&g, p);
    if (rc != 0)
        fprintf(stderr, "%s\n", qp_error_last());
    assert_int_equal(rc, 0);
    free(p);
    return g;
}

/* Every tensor's type in an oracle file == the rule's type, visiting the
 * tensors in file order and again in reverse (the rules are order-free). */
static int check_file_im(const char *rel, int pure, int has_imatrix)
{
    qp_gguf *g = open_shared(rel);
    int64_t n_layer, n_head, n_head_kv, ftype;
    int checked = 0;
    assert_int_equal(qp_gguf_get_int(g, "llama.block_count", &n_layer), 0);
    assert_int_equal(qp_gguf_get_int(g, "llama.attention.head_count", &n_head), 0);
    assert_int_equal(qp_gguf_get_int(g, "llama.attention.head_count_kv", &n_head_kv), 0);
    assert_int_equal(qp_gguf_get_int(g, "general.file_type", &ftype), 0);
    qp_ggml_mix_ctx ctx;
    qp_ggml_mix_ctx_init(&ctx, (int)n_layer, (int)n_head, (int)n_head_kv,
                         qp_gguf_find_tensor(g, "output.weight") == NULL);
    ctx.pure = pure;
    ctx.has_imatrix = has_imatrix;
    size_t n = qp_gguf_tensor_count(g);
    for (size_t k = 0; k < 2 * n; k++) {
        const qp_gguf_tensor *t = qp_gguf_tensor_at(g, k < n ? k : 2 * n - 1 - k);
        int64_t ne[QP_GGUF_MAX_DIMS];
        for (int d = 0; d < QP_GGUF_MAX_DIMS; d++)
            ne[d] = (int64_t)t->ne[d];
        qp_ggml_mix_choice ch;
        int rc = qp_ggml_mix_tensor_type(&ch, (qp_llama_ftype)ftype, t->name, t->n_dims, ne, &ctx);
        if (rc != 0)
            fprintf(stderr, "%s\n", qp_error_last());
        assert_int_equal(rc, 0);
        if ((uint32_t)ch.type != t->type)
            fprintf(stderr, "%s: %s: rule %s, file %s\n", rel, t->name, qp_qtype_get(ch.type)->name,
                    qp_ggml_type_name(t->type));
        assert_int_equal((uint32_t)ch.type, t->type);
        assert_int_equal(ch.quantized, t->type != QP_GGML_F32);
        assert_int_equal(ch.fallback, 0);
        assert_string_equal(ch.note, "");
        checked++;
    }
    qp_gguf_free(g);
    return checked;
}

static int check_file(const char *rel, int pure)
{
    return check_file_im(rel, pure, 0);
}

static void test_mix_oracles(void **state)
{
    (void)state;
    assert_int_equal(check_file("vectors/house-llama/mix-Q2_K.gguf", 0), 2 * 57);
    assert_int_equal(check_file("vectors/house-llama/mix-Q3_K_M.gguf", 0), 2 * 57);
    assert_int_equal(check_file("vectors/house-llama/mix-Q4_K_M.gguf", 0), 2 * 57);
    assert_int_equal(check_file("vectors/house-llama/mix-Q5_K_M.gguf", 0), 2 * 57);
    assert_int_equal(check_file("vectors/house-llama/mix-Q6_K.gguf", 0), 2 * 57);
}

static void test_pure_oracles(void **state)
{
    (void)state;
    static const char *const files[] = {
        "Q2_K", "Q3_K", "Q4_0", "Q4_1", "Q4_K", "Q5_0", "Q5_1", "Q5_K", "Q6_K", "Q8_0",
        "Q4_0-imatrix", "Q5_0-imatrix", "Q4_K-imatrix",
    };
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char rel[96];
        snprintf(rel, sizeof(rel), "vectors/house-llama/%s.gguf", files[i]);
        assert_int_equal(check_file(rel, 1), 2 * 57);
    }
}

/* iq/: llama-quantize --imatrix, pure and the IQ4_XS mix (output Q6_K,
 * the rest IQ4_XS: n_gqa = 2, and the imatrix spares ffn_down its bump). */
static void test_iq_oracles(void **state)
{
    (void)state;
    static const char *const files[] = { "IQ4_NL-imatrix", "IQ4_XS-imatrix", "IQ3_S-imatrix", "TQ1_0-imatrix",
                                         "TQ2_0-imatrix" };
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char rel[96];
        snprintf(rel, sizeof(rel), "vectors/house-llama/iq/%s.gguf", files[i]);
        assert_int_equal(check_file_im(rel, 1, 1), 2 * 57);
    }
    assert_int_equal(check_file_im("vectors/house-llama/iq/mix-IQ4_XS.gguf", 0, 1), 2 * 57);
    /* output Q5_K, token_embd Q2_K, attn_v Q2_K (n_gqa = 2), the rest IQ2_*
     * (6 layers: the first eighth of ffn_down, 6 / 8 = 0 layers, is empty) */
    assert_int_equal(check_file_im("vectors/house-llama/iq/mix-IQ2_XXS.gguf", 0, 1), 2 * 57);
    assert_int_equal(check_file_im("vectors/house-llama/iq/mix-IQ2_XS.gguf", 0, 1), 2 * 57);
    /* IQ3_XS: attn_q/k and the middle layers' ffn_gate/up IQ3_XXS; IQ3_M:
     * attn_v and attn_output Q4_K; IQ3_S: all IQ3_S; output Q6_K */
    assert_int_equal(check_file_im("vectors/house-llama/iq/mix-IQ3_XS.gguf", 0, 1), 2 * 57);
    assert_int_equal(check_file_im("vectors/house-llama/iq/mix-IQ3_S.gguf", 0, 1), 2 * 57);
    assert_int_equal(check_file_im("vectors/house-llama/iq/mix-IQ3_M.gguf", 0, 1), 2 * 57);
    /* IQ3_XXS: attn_q/k IQ2_S, attn_output and token_embd IQ3_S, output Q5_K */
    assert_int_equal(check_file_im("vectors/house-llama/iq/mix-IQ3_XXS.gguf", 0, 1), 2 * 57);
    /* IQ2_S / IQ2_M: output Q5_K, token_embd, attn_v and attn_output IQ3_S,
     * the rest IQ2_XS (the IQ2_S file type) or IQ2_S (IQ2_M) */
    assert_int_equal(check_file_im("vectors/house-llama/iq/mix-IQ2_S.gguf", 0, 1), 2 * 57);
    assert_int_equal(check_file_im("vectors/house-llama/iq/mix-IQ2_M.gguf", 0, 1), 2 * 57);
}

/* llama_tensor_get_type for the IQ2_XXS and IQ2_XS file types on a
 * 32-layer model with GQA (n_gqa = 4) and without; and the table of
 * llama-quantize's "very low-bit" refusal. */
static void test_iq2_file_type_rules(void **state)
{
    (void)state;
    qp_ggml_mix_ctx gqa, mha;
    qp_ggml_mix_choice ch;
    char name[64];
    const int64_t ne_v[2] = { 4096, 1024 }, ne_d[2] = { 14336, 4096 }, ne_o[2] = { 4096, 4096 };
    const int64_t ne_e[2] = { 4096, 32000 }, ne_odd[2] = { 4160, 64 };
    qp_ggml_mix_ctx_init(&gqa, 32, 32, 8, 0);
    qp_ggml_mix_ctx_init(&mha, 32, 32, 32, 0);
    gqa.has_imatrix = mha.has_imatrix = 1;
    static const qp_llama_ftype fts[] = { QP_FTYPE_MOSTLY_IQ2_XXS, QP_FTYPE_MOSTLY_IQ2_XS };
    static const qp_ggml_type ts[] = { QP_GGML_IQ2_XXS, QP_GGML_IQ2_XS };
    for (size_t k = 0; k < 2; k++) {
        assert_int_equal(qp_llama_ftype_default_type(fts[k]), (int)ts[k]);
        for (int i = 0; i < 32; i++) {
            snprintf(name, sizeof(name), "blk.%d.attn_v.weight", i);
            assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts[k], name, 2, ne_v, &gqa), 0);
            assert_int_equal(ch.type, QP_GGML_Q4_K);
            assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts[k], name, 2, ne_v, &mha), 0);
            assert_int_equal(ch.type, QP_GGML_Q2_K);
            snprintf(name, sizeof(name), "blk.%d.ffn_down.weight", i);
            assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts[k], name, 2, ne_d, &gqa), 0);
            assert_int_equal(ch.type, i < 4 ? QP_GGML_Q2_K : ts[k]);
            snprintf(name, sizeof(name), "blk.%d.attn_output.weight", i);
            assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts[k], name, 2, ne_o, &gqa), 0);
            assert_int_equal(ch.type, ts[k]);
            snprintf(name, sizeof(name), "blk.%d.attn_k.weight", i);
            assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts[k], name, 2, ne_v, &gqa), 0);
            assert_int_equal(ch.type, ts[k]);
        }
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts[k], "output.weight", 2, ne_e, &gqa), 0);
        assert_int_equal(ch.type, QP_GGML_Q5_K);
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts[k], "token_embd.weight", 2, ne_e, &gqa), 0);
        assert_int_equal(ch.type, QP_GGML_Q2_K);
        /* experts: attn_v Q4_K from 4 experts, attn_k Q4_K and attn_output Q5_K at 8 */
        mha.n_expert = 8;
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts[k], "blk.9.attn_v.weight", 2, ne_v, &mha), 0);
        assert_int_equal(ch.type, QP_GGML_Q4_K);
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts[k], "blk.9.attn_k.weight", 2, ne_v, &mha), 0);
        assert_int_equal(ch.type, QP_GGML_Q4_K);
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts[k], "blk.9.attn_output.weight", 2, ne_o, &mha), 0);
        assert_int_equal(ch.type, QP_GGML_Q5_K);
        mha.n_expert = 0;
        /* fallback IQ4_NL */
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts[k], "blk.3.attn_q.weight", 2, ne_odd, &gqa), 0);
        assert_int_equal(ch.type, QP_GGML_IQ4_NL);
        assert_int_equal(ch.fallback, 1);
        /* the refusal table: these types need an imatrix entry for every tensor */
        assert_true(qp_ggml_needs_imatrix(ts[k], fts[k], "output.weight"));
        assert_true(qp_ggml_needs_imatrix(ts[k], QP_FTYPE_MOSTLY_Q4_K_M, "token_embd.weight"));
        assert_false(qp_ggml_needs_imatrix(QP_GGML_Q2_K, fts[k], "blk.0.ffn_down.weight"));
        assert_false(qp_ggml_needs_imatrix(QP_GGML_Q5_K, fts[k], "output.weight"));
    }
    /* IQ2_S (default type IQ2_XS) and IQ2_M (default type IQ2_S): IQ3_S
     * where IQ2_XXS / IQ2_XS give Q2_K, and IQ3_S for attn_output */
    static const qp_llama_ftype fts_sm[] = { QP_FTYPE_MOSTLY_IQ2_S, QP_FTYPE_MOSTLY_IQ2_M };
    static const qp_ggml_type ts_sm[] = { QP_GGML_IQ2_XS, QP_GGML_IQ2_S };
    for (size_t k = 0; k < 2; k++) {
        assert_int_equal(qp_llama_ftype_default_type(fts_sm[k]), (int)ts_sm[k]);
        for (int i = 0; i < 32; i++) {
            snprintf(name, sizeof(name), "blk.%d.attn_v.weight", i);
            assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts_sm[k], name, 2, ne_v, &gqa), 0);
            assert_int_equal(ch.type, QP_GGML_Q4_K);
            assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts_sm[k], name, 2, ne_v, &mha), 0);
            assert_int_equal(ch.type, QP_GGML_IQ3_S);
            snprintf(name, sizeof(name), "blk.%d.ffn_down.weight", i);
            assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts_sm[k], name, 2, ne_d, &gqa), 0);
            assert_int_equal(ch.type, i < 4 ? QP_GGML_IQ3_S : ts_sm[k]);
            snprintf(name, sizeof(name), "blk.%d.attn_output.weight", i);
            assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts_sm[k], name, 2, ne_o, &gqa), 0);
            assert_int_equal(ch.type, QP_GGML_IQ3_S);
            snprintf(name, sizeof(name), "blk.%d.attn_k.weight", i);
            assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts_sm[k], name, 2, ne_v, &gqa), 0);
            assert_int_equal(ch.type, ts_sm[k]);
            snprintf(name, sizeof(name), "blk.%d.ffn_gate.weight", i);
            assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts_sm[k], name, 2, ne_d, &gqa), 0);
            assert_int_equal(ch.type, ts_sm[k]);
        }
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts_sm[k], "output.weight", 2, ne_e, &gqa), 0);
        assert_int_equal(ch.type, QP_GGML_Q5_K);
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts_sm[k], "token_embd.weight", 2, ne_e, &gqa), 0);
        assert_int_equal(ch.type, QP_GGML_IQ3_S);
        /* tied: token_embd is the output (Q5_K) */
        qp_ggml_mix_ctx tied;
        qp_ggml_mix_ctx_init(&tied, 32, 32, 8, 1);
        tied.has_imatrix = 1;
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts_sm[k], "token_embd.weight", 2, ne_e, &tied), 0);
        assert_int_equal(ch.type, QP_GGML_Q5_K);
        /* experts: attn_v Q4_K from 4 experts, attn_k Q4_K and attn_output Q5_K at 8 */
        mha.n_expert = 4;
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts_sm[k], "blk.9.attn_v.weight", 2, ne_v, &mha), 0);
        assert_int_equal(ch.type, QP_GGML_Q4_K);
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts_sm[k], "blk.9.attn_output.weight", 2, ne_o, &mha), 0);
        assert_int_equal(ch.type, QP_GGML_IQ3_S);
        mha.n_expert = 8;
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts_sm[k], "blk.9.attn_k.weight", 2, ne_v, &mha), 0);
        assert_int_equal(ch.type, QP_GGML_Q4_K);
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts_sm[k], "blk.9.attn_output.weight", 2, ne_o, &mha), 0);
        assert_int_equal(ch.type, QP_GGML_Q5_K);
        mha.n_expert = 0;
        /* fallback IQ4_NL (IQ2_XS / IQ2_S and IQ3_S alike) */
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts_sm[k], "blk.3.attn_q.weight", 2, ne_odd, &gqa), 0);
        assert_int_equal(ch.type, QP_GGML_IQ4_NL);
        assert_int_equal(ch.fallback, 1);
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts_sm[k], "blk.3.attn_output.weight", 2, ne_odd, &gqa), 0);
        assert_int_equal(ch.type, QP_GGML_IQ4_NL);
        assert_true(qp_ggml_needs_imatrix(ts_sm[k], fts_sm[k], "blk.3.attn_q.weight"));
        assert_false(qp_ggml_needs_imatrix(QP_GGML_IQ3_S, fts_sm[k], "token_embd.weight"));
    }
    /* IQ2_M without an imatrix: its IQ2_S tensors are refused by the rules
     * themselves (IQ2_S's IQ2_XS ones by the stage's check, which has the
     * imatrix's entries) */
    qp_ggml_mix_ctx noim;
    qp_ggml_mix_ctx_init(&noim, 32, 32, 8, 0);
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_IQ2_M, "blk.7.attn_q.weight", 2, ne_o, &noim),
                     QP_EUSAGE);
    assert_string_equal(qp_error_last(), "tensor 'blk.7.attn_q.weight': Missing importance matrix for tensor "
                                         "blk.7.attn_q.weight in a very low-bit quantization");
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_IQ2_M, "token_embd.weight", 2, ne_e, &noim), 0);
    assert_int_equal(ch.type, QP_GGML_IQ3_S);
    /* the rest of llama-quant.cpp's list, for the types still to come */
    assert_true(qp_ggml_needs_imatrix(QP_GGML_IQ2_S, QP_FTYPE_MOSTLY_Q4_K_M, "blk.0.attn_q.weight"));
    assert_true(qp_ggml_needs_imatrix(QP_GGML_IQ1_S, QP_FTYPE_MOSTLY_Q4_K_M, "output.weight"));
    assert_true(qp_ggml_needs_imatrix(QP_GGML_IQ1_M, QP_FTYPE_MOSTLY_Q4_K_M, "blk.0.attn_q.weight"));
    assert_false(qp_ggml_needs_imatrix(QP_GGML_IQ1_M, QP_FTYPE_MOSTLY_Q4_K_M, "output.weight"));
    assert_false(qp_ggml_needs_imatrix(QP_GGML_IQ1_M, QP_FTYPE_MOSTLY_Q4_K_M, "token_embd.weight"));
    assert_true(qp_ggml_needs_imatrix(QP_GGML_Q2_K, QP_FTYPE_MOSTLY_Q2_K_S, "output.weight"));
    assert_false(qp_ggml_needs_imatrix(QP_GGML_Q2_K, QP_FTYPE_MOSTLY_Q2_K_S, "token_embd.weight"));
    assert_false(qp_ggml_needs_imatrix(QP_GGML_Q2_K, QP_FTYPE_MOSTLY_Q2_K, "blk.0.attn_q.weight"));
    assert_false(qp_ggml_needs_imatrix(QP_GGML_IQ3_XXS, QP_FTYPE_MOSTLY_Q4_K_M, "output.weight"));
}

/* llama_tensor_get_type for the IQ3_XS, IQ3_S and IQ3_M file types on a
 * 32-layer model, GQA (n_gqa = 4) and not (n_gqa = 1), and with 8 experts. */
static void test_iq3_file_type_rules(void **state)
{
    (void)state;
    qp_ggml_mix_ctx ctx;
    qp_ggml_mix_choice ch;
    char name[64];
    const int64_t ne[2] = { 4096, 4096 }, ne_e[2] = { 4096, 32000 };
    static const qp_llama_ftype fts[] = { QP_FTYPE_MOSTLY_IQ3_XS, QP_FTYPE_MOSTLY_IQ3_S, QP_FTYPE_MOSTLY_IQ3_M };
    for (int gqa = 0; gqa < 2; gqa++) {
        qp_ggml_mix_ctx_init(&ctx, 32, 32, gqa ? 8 : 32, 0);
        ctx.has_imatrix = 1;
        for (size_t k = 0; k < 3; k++) {
            const qp_llama_ftype ft = fts[k];
            assert_int_equal(qp_llama_ftype_default_type(ft), QP_GGML_IQ3_S);
            for (int i = 0; i < 32; i++) {
                const int mid = i >= 4 && i < 28;
#define TYPE_OF(kind) (snprintf(name, sizeof(name), "blk.%d." kind ".weight", i), \
                       assert_int_equal(qp_ggml_mix_tensor_type(&ch, ft, name, 2, ne, &ctx), 0), ch.type)
                assert_int_equal(TYPE_OF("attn_v"),
                                 ft == QP_FTYPE_MOSTLY_IQ3_M || gqa ? QP_GGML_Q4_K : QP_GGML_IQ3_S);
                assert_int_equal(TYPE_OF("attn_q"), ft == QP_FTYPE_MOSTLY_IQ3_XS ? QP_GGML_IQ3_XXS : QP_GGML_IQ3_S);
                assert_int_equal(TYPE_OF("attn_k"), ft == QP_FTYPE_MOSTLY_IQ3_XS ? QP_GGML_IQ3_XXS : QP_GGML_IQ3_S);
                assert_int_equal(TYPE_OF("attn_output"), ft == QP_FTYPE_MOSTLY_IQ3_M ? QP_GGML_Q4_K : QP_GGML_IQ3_S);
                assert_int_equal(TYPE_OF("attn_qkv"), ft == QP_FTYPE_MOSTLY_IQ3_M ? QP_GGML_Q4_K : QP_GGML_IQ3_S);
                assert_int_equal(TYPE_OF("ffn_down"),
                                 ft == QP_FTYPE_MOSTLY_IQ3_M && i < 4 ? QP_GGML_Q4_K : QP_GGML_IQ3_S);
                assert_int_equal(TYPE_OF("ffn_gate"),
                                 ft == QP_FTYPE_MOSTLY_IQ3_XS && mid ? QP_GGML_IQ3_XXS : QP_GGML_IQ3_S);
                assert_int_equal(TYPE_OF("ffn_up"),
                                 ft == QP_FTYPE_MOSTLY_IQ3_XS && mid ? QP_GGML_IQ3_XXS : QP_GGML_IQ3_S);
#undef TYPE_OF
            }
            assert_int_equal(qp_ggml_mix_tensor_type(&ch, ft, "output.weight", 2, ne_e, &ctx), 0);
            assert_int_equal(ch.type, QP_GGML_Q6_K);
            assert_int_equal(qp_ggml_mix_tensor_type(&ch, ft, "token_embd.weight", 2, ne_e, &ctx), 0);
            assert_int_equal(ch.type, QP_GGML_IQ3_S);
        }
    }
    /* 8 experts: attn_v Q8_0, attn_k Q8_0, attn_output Q5_K; IQ3_M's ffn_down Q4_K where use_more_bits */
    qp_ggml_mix_ctx_init(&ctx, 32, 32, 8, 0);
    ctx.n_expert = 8;
    for (size_t k = 0; k < 3; k++) {
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts[k], "blk.5.attn_v.weight", 2, ne, &ctx), 0);
        assert_int_equal(ch.type, QP_GGML_Q8_0);
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts[k], "blk.5.attn_k.weight", 2, ne, &ctx), 0);
        assert_int_equal(ch.type, QP_GGML_Q8_0);
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts[k], "blk.5.attn_output.weight", 2, ne, &ctx), 0);
        assert_int_equal(ch.type, QP_GGML_Q5_K);
    }
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_IQ3_M, "blk.6.ffn_down.weight", 2, ne, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_Q4_K);   /* (6 - 4) % 3 == 2 */
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_IQ3_M, "blk.5.ffn_down.weight", 2, ne, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_IQ3_S);
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_IQ3_XXS, "blk.5.attn_output.weight", 2, ne, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_Q5_K);
}

/* IQ3_XXS on a 32-layer model: without an imatrix attn_v IQ3_S (n_gqa < 4)
 * and ffn_down Q4_K / Q3_K; with one attn_v IQ3_XXS and ffn_down IQ3_XXS;
 * n_gqa >= 4: attn_v Q4_K, and a 70B's Q5_K. */
static void test_iq3_xxs_file_type_rules(void **state)
{
    (void)state;
    qp_ggml_mix_ctx ctx;
    qp_ggml_mix_choice ch;
    char name[64];
    const int64_t ne[2] = { 4096, 4096 }, ne_e[2] = { 4096, 32000 };
    const qp_llama_ftype ft = QP_FTYPE_MOSTLY_IQ3_XXS;
    assert_int_equal(qp_llama_ftype_default_type(ft), QP_GGML_IQ3_XXS);
    for (int im = 0; im < 2; im++) {
        qp_ggml_mix_ctx_init(&ctx, 32, 32, 32, 0);
        ctx.has_imatrix = im;
        for (int i = 0; i < 32; i++) {
#define TYPE_OF(kind) (snprintf(name, sizeof(name), "blk.%d." kind ".weight", i), \
                       assert_int_equal(qp_ggml_mix_tensor_type(&ch, ft, name, 2, ne, &ctx), 0), ch.type)
            assert_int_equal(TYPE_OF("attn_v"), im ? QP_GGML_IQ3_XXS : QP_GGML_IQ3_S);
            if (im) {
                assert_int_equal(TYPE_OF("attn_q"), QP_GGML_IQ2_S);
                assert_int_equal(TYPE_OF("attn_k"), QP_GGML_IQ2_S);
            }
            assert_int_equal(TYPE_OF("attn_output"), QP_GGML_IQ3_S);
            assert_int_equal(TYPE_OF("ffn_down"), im ? QP_GGML_IQ3_XXS : i < 4 ? QP_GGML_Q4_K : QP_GGML_Q3_K);
            assert_int_equal(TYPE_OF("ffn_gate"), QP_GGML_IQ3_XXS);
            assert_int_equal(TYPE_OF("ffn_up"), QP_GGML_IQ3_XXS);
#undef TYPE_OF
        }
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, ft, "output.weight", 2, ne_e, &ctx), 0);
        assert_int_equal(ch.type, QP_GGML_Q5_K);
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, ft, "token_embd.weight", 2, ne_e, &ctx), 0);
        assert_int_equal(ch.type, QP_GGML_IQ3_S);
    }
    qp_ggml_mix_ctx_init(&ctx, 32, 32, 8, 0);
    ctx.has_imatrix = 1;
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, ft, "blk.3.attn_v.weight", 2, ne, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_Q4_K);
    qp_ggml_mix_ctx_init(&ctx, 80, 64, 8, 0);   /* 70B */
    ctx.has_imatrix = 1;
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, ft, "blk.3.attn_v.weight", 2, ne, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_Q5_K);
    /* tied: token_embd is the output, Q5_K */
    qp_ggml_mix_ctx_init(&ctx, 32, 32, 8, 1);
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, ft, "token_embd.weight", 2, ne_e, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_Q5_K);
}

/* llama_tensor_get_type for the IQ4_XS, TQ1_0 and TQ2_0 file types on a
 * 32-layer GQA model (n_gqa = 4), without and with an imatrix. */
static void test_iq_file_type_rules(void **state)
{
    (void)state;
    qp_ggml_mix_ctx ctx;
    qp_ggml_mix_choice ch;
    char name[64];
    const int64_t ne_v[2] = { 4096, 1024 }, ne_d[2] = { 14336, 4096 }, ne_o[2] = { 4096, 4096 };
    const int64_t ne_e[2] = { 4096, 32000 }, ne_odd[2] = { 4160, 64 };
    qp_ggml_mix_ctx_init(&ctx, 32, 32, 8, 0);
    for (int im = 0; im < 2; im++) {
        ctx.has_imatrix = im;
        for (int i = 0; i < 32; i++) {
            snprintf(name, sizeof(name), "blk.%d.attn_v.weight", i);
            assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_IQ4_XS, name, 2, ne_v, &ctx), 0);
            assert_int_equal(ch.type, QP_GGML_Q5_K);   /* n_gqa >= 4 */
            assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_TQ1_0, name, 2, ne_v, &ctx), 0);
            assert_int_equal(ch.type, QP_GGML_TQ1_0);
            snprintf(name, sizeof(name), "blk.%d.ffn_down.weight", i);
            assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_IQ4_XS, name, 2, ne_d, &ctx), 0);
            assert_int_equal(ch.type, i < 4 && !im ? QP_GGML_Q5_K : QP_GGML_IQ4_XS);
            assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_TQ2_0, name, 2, ne_d, &ctx), 0);
            assert_int_equal(ch.type, QP_GGML_TQ2_0);
            snprintf(name, sizeof(name), "blk.%d.attn_output.weight", i);
            assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_IQ4_XS, name, 2, ne_o, &ctx), 0);
            assert_int_equal(ch.type, QP_GGML_IQ4_XS);
        }
    }
    /* output Q6_K; the untied embedding stays IQ4_XS but goes Q4_K for the ternary types */
    static const qp_llama_ftype fts[] = { QP_FTYPE_MOSTLY_IQ4_XS, QP_FTYPE_MOSTLY_TQ1_0, QP_FTYPE_MOSTLY_TQ2_0 };
    for (size_t k = 0; k < 3; k++) {
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts[k], "output.weight", 2, ne_e, &ctx), 0);
        assert_int_equal(ch.type, QP_GGML_Q6_K);
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts[k], "token_embd.weight", 2, ne_e, &ctx), 0);
        assert_int_equal(ch.type, k == 0 ? QP_GGML_IQ4_XS : QP_GGML_Q4_K);
    }
    /* tied: token_embd is the output */
    qp_ggml_mix_ctx tied;
    qp_ggml_mix_ctx_init(&tied, 32, 32, 8, 1);
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_TQ1_0, "token_embd.weight", 2, ne_e, &tied), 0);
    assert_int_equal(ch.type, QP_GGML_Q6_K);
    /* experts: attn_output Q5_K for IQ4_XS */
    ctx.n_expert = 8;
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_IQ4_XS, "blk.3.attn_output.weight", 2, ne_o, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_Q5_K);
    ctx.n_expert = 0;
    /* fallbacks: rows of 4160 (a multiple of 32, not of 256) */
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_IQ4_XS, "blk.3.attn_q.weight", 2, ne_odd, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_IQ4_NL);
    assert_string_equal(ch.note, "blk.3.attn_q.weight: tensor cols 4160 x 64 are not divisible by 256, required "
                                 "for iq4_xs - using fallback quantization iq4_nl");
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_TQ1_0, "blk.3.attn_q.weight", 2, ne_odd, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_Q4_0);
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_TQ2_0, "blk.3.ffn_up.weight", 2, ne_odd, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_Q4_0);
    assert_int_equal(ch.fallback, 1);
    /* --pure keeps the block type and refuses the row instead */
    ctx.pure = 1;
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_TQ2_0, "blk.3.ffn_up.weight", 2, ne_odd, &ctx),
                     QP_EUSAGE);
    assert_string_equal(qp_error_last(), "tensor 'blk.3.ffn_up.weight': tensor rows of 4160 weights cannot be "
                                         "quantized to TQ2_0 (blocks of 256)");
}

/* The house mixes differ from the defaults where llama.cpp says so. */
static void test_house_mix_shape(void **state)
{
    (void)state;
    qp_ggml_mix_ctx ctx;
    qp_ggml_mix_choice ch;
    const int64_t ne_v[2] = { 256, 128 }, ne_o[2] = { 256, 1024 };
    qp_ggml_mix_ctx_init(&ctx, 6, 8, 4, 0);
    /* Q3_K_M: attn_v of the first two layers Q5_K, later Q4_K */
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q3_K_M, "blk.1.attn_v.weight", 2, ne_v, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_Q5_K);
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q3_K_M, "blk.2.attn_v.weight", 2, ne_v, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_Q4_K);
    /* output Q6_K, except for Q8_0 which keeps Q8_0 */
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q4_0, "output.weight", 2, ne_o, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_Q6_K);
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q8_0, "output.weight", 2, ne_o, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_Q8_0);
    /* tied embeddings: token_embd is treated as the output */
    qp_ggml_mix_ctx_init(&ctx, 6, 8, 4, 1);
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q4_K_M, "token_embd.weight", 2, ne_o, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_Q6_K);
    qp_ggml_mix_ctx_init(&ctx, 6, 8, 4, 0);
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q4_K_M, "token_embd.weight", 2, ne_o, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_Q4_K);
    /* F32/F16 file types: 2-D weights converted, norms kept */
    const int64_t ne_n[1] = { 256 };
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_F16, "output.weight", 2, ne_o, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_F16);
    assert_int_equal(ch.quantized, 1);
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_F16, "blk.0.ffn_norm.weight", 1, ne_n, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_F32);
    assert_int_equal(ch.quantized, 0);
    /* a [256, 1] norm stored with n_dims 2 is still 1-D for ggml */
    const int64_t ne_n2[2] = { 256, 1 };
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q4_K_M, "blk.0.attn_norm.weight", 2, ne_n2, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_F32);
    /* --leave-output-tensor */
    ctx.keep_output = 1;
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q4_K_M, "output.weight", 2, ne_o, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_F32);
}

/* A 32-layer GQA-8 LLaMA (Llama-3-8B shape), rules applied by hand. */
static void test_32_layers(void **state)
{
    (void)state;
    qp_ggml_mix_ctx ctx;
    qp_ggml_mix_choice ch;
    char name[64];
    const int64_t ne_v[2] = { 4096, 1024 }, ne_d[2] = { 14336, 4096 }, ne_o[2] = { 4096, 4096 };
    qp_ggml_mix_ctx_init(&ctx, 32, 32, 8, 0);
    /* use_more_bits(i, 32): i < 4, i >= 28, (i - 4) % 3 == 2 */
    static const int more[32] = {
        1, 1, 1, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1,
        0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 1, 1, 1, 1,
    };
    for (int i = 0; i < 32; i++) {
        snprintf(name, sizeof(name), "blk.%d.attn_v.weight", i);
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q4_K_M, name, 2, ne_v, &ctx), 0);
        assert_int_equal(ch.type, more[i] ? QP_GGML_Q6_K : QP_GGML_Q4_K);
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q5_K_M, name, 2, ne_v, &ctx), 0);
        assert_int_equal(ch.type, more[i] ? QP_GGML_Q6_K : QP_GGML_Q5_K);
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q4_K_S, name, 2, ne_v, &ctx), 0);
        assert_int_equal(ch.type, i < 4 ? QP_GGML_Q5_K : QP_GGML_Q4_K);
        /* n_gqa = 4 >= 4 */
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q2_K, name, 2, ne_v, &ctx), 0);
        assert_int_equal(ch.type, QP_GGML_Q4_K);
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_IQ4_NL, name, 2, ne_v, &ctx), 0);
        assert_int_equal(ch.type, QP_GGML_Q5_K);

        snprintf(name, sizeof(name), "blk.%d.ffn_down.weight", i);
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q4_K_M, name, 2, ne_d, &ctx), 0);
        assert_int_equal(ch.type, more[i] ? QP_GGML_Q6_K : QP_GGML_Q4_K);
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q3_K_M, name, 2, ne_d, &ctx), 0);
        assert_int_equal(ch.type, i < 2 ? QP_GGML_Q5_K : QP_GGML_Q4_K);
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q3_K_S, name, 2, ne_d, &ctx), 0);
        assert_int_equal(ch.type, QP_GGML_Q3_K);
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q4_K_S, name, 2, ne_d, &ctx), 0);
        assert_int_equal(ch.type, i < 4 ? QP_GGML_Q5_K : QP_GGML_Q4_K);
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_IQ4_NL, name, 2, ne_d, &ctx), 0);
        assert_int_equal(ch.type, i < 4 ? QP_GGML_Q5_K : QP_GGML_IQ4_NL);
        /* Q4_0 / Q5_0: first eighth guarded only with an imatrix */
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q4_0, name, 2, ne_d, &ctx), 0);
        assert_int_equal(ch.type, QP_GGML_Q4_0);
        ctx.has_imatrix = 1;
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q4_0, name, 2, ne_d, &ctx), 0);
        assert_int_equal(ch.type, i < 4 ? QP_GGML_Q4_1 : QP_GGML_Q4_0);
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q5_0, name, 2, ne_d, &ctx), 0);
        assert_int_equal(ch.type, i < 4 ? QP_GGML_Q5_1 : QP_GGML_Q5_0);
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q2_K_S, name, 2, ne_d, &ctx), 0);
        assert_int_equal(ch.type, i < 4 ? QP_GGML_Q4_K : QP_GGML_Q2_K);
        /* IQ4_NL's first-eighth bump is for imatrix-less runs only */
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_IQ4_NL, name, 2, ne_d, &ctx), 0);
        assert_int_equal(ch.type, QP_GGML_IQ4_NL);
        ctx.has_imatrix = 0;

        snprintf(name, sizeof(name), "blk.%d.attn_output.weight", i);
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q3_K_L, name, 2, ne_o, &ctx), 0);
        assert_int_equal(ch.type, QP_GGML_Q5_K);
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q3_K_S, name, 2, ne_o, &ctx), 0);
        assert_int_equal(ch.type, QP_GGML_Q3_K);
        snprintf(name, sizeof(name), "blk.%d.ffn_gate.weight", i);
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q3_K_L, name, 2, ne_o, &ctx), 0);
        assert_int_equal(ch.type, QP_GGML_Q3_K);
    }
    /* Q3_K_L's attn_v, fused qkv */
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q3_K_L, "blk.9.attn_v.weight", 2, ne_v, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_Q5_K);
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q5_K_M, "blk.9.attn_qkv.weight", 2, ne_o, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_Q6_K);
    /* Q2_K with n_gqa 2 */
    qp_ggml_mix_ctx_init(&ctx, 32, 32, 16, 0);
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q2_K, "blk.0.attn_v.weight", 2, ne_v, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_Q3_K);
    ctx.has_imatrix = 1;
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q2_K_S, "blk.0.attn_v.weight", 2, ne_v, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_Q2_K);
}

static void test_70b_and_experts(void **state)
{
    (void)state;
    qp_ggml_mix_ctx ctx;
    qp_ggml_mix_choice ch;
    const int64_t ne_v[2] = { 8192, 1024 }, ne_o[2] = { 8192, 8192 };
    qp_ggml_mix_ctx_init(&ctx, 80, 64, 8, 0);
    assert_int_equal(ctx.is_70b, 1);
    /* Q4_K attn_v -> Q5_K on 70B (layer 40 is not a use_more_bits layer) */
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q4_K_M, "blk.40.attn_v.weight", 2, ne_v, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_Q5_K);
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q4_K_M, "blk.41.attn_v.weight", 2, ne_v, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_Q5_K);   /* (41 - 10) % 3 == 1 */
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q4_K_M, "blk.42.attn_v.weight", 2, ne_v, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_Q6_K);   /* (42 - 10) % 3 == 2 */
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q3_K_S, "blk.42.attn_v.weight", 2, ne_v, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_Q5_K);   /* Q3_K -> Q5_K */
    /* 80 layers without GQA is llama.cpp's 65B: no bump */
    qp_ggml_mix_ctx_init(&ctx, 80, 64, 64, 0);
    assert_int_equal(ctx.is_70b, 0);
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q3_K_S, "blk.42.attn_v.weight", 2, ne_v, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_Q3_K);
    /* 8 experts: attn_v / attn_k Q8_0, attn_output Q5_K */
    qp_ggml_mix_ctx_init(&ctx, 32, 32, 8, 0);
    ctx.n_expert = 8;
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q4_K_M, "blk.5.attn_v.weight", 2, ne_v, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_Q8_0);
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q4_K_M, "blk.5.attn_k.weight", 2, ne_v, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_Q8_0);
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q4_K_M, "blk.5.attn_output.weight", 2, ne_o, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_Q5_K);
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q5_K_M, "blk.5.attn_output.weight", 2, ne_o, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_Q5_K);
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q6_K, "blk.5.attn_output.weight", 2, ne_o, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_Q6_K);
}

static void test_fallback(void **state)
{
    (void)state;
    qp_ggml_mix_ctx ctx;
    qp_ggml_mix_choice ch;
    const int64_t ne96[2] = { 96, 64 }, ne100[2] = { 100, 64 };
    qp_ggml_mix_ctx_init(&ctx, 4, 4, 4, 0);
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q4_K_M, "blk.1.attn_q.weight", 2, ne96, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_Q5_0);
    assert_int_equal(ch.fallback, 1);
    assert_string_equal(ch.note, "blk.1.attn_q.weight: tensor cols 96 x 64 are not divisible by 256, required "
                                 "for q4_K - using fallback quantization q5_0");
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q4_K_M, "blk.3.ffn_down.weight", 2, ne96, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_Q8_0);   /* Q6_K (use_more_bits(3, 4): 3 >= 7*4/8) -> Q8_0 */
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q3_K_M, "blk.2.attn_q.weight", 2, ne96, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_IQ4_NL);
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q5_K_S, "blk.2.attn_q.weight", 2, ne96, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_Q5_1);
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q2_K, "blk.2.attn_q.weight", 2, ne96, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_IQ4_NL);
    /* no 32-block fits 100: F16 */
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q4_K_M, "blk.2.attn_q.weight", 2, ne100, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_F16);
    assert_string_equal(ch.note, "blk.2.attn_q.weight: tensor cols 100 x 64 are not divisible by 256, required "
                                 "for q4_K - using fallback quantization f16");
    /* output: rows not a multiple of 256 -> Q8_0 by the output rule, no fallback */
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q4_K_M, "output.weight", 2, ne96, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_Q8_0);
    assert_int_equal(ch.fallback, 0);
    /* ... and no rule fits 100 at all: llama.cpp's "Unsupported tensor size" */
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q4_K_M, "output.weight", 2, ne100, &ctx),
                     QP_EUSAGE);
    assert_string_equal(qp_error_last(), "tensor 'output.weight': tensor rows of 100 weights cannot be quantized "
                                         "to Q8_0 (blocks of 32)");
    /* legacy types have no fallback */
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q4_0, "blk.0.attn_q.weight", 2, ne100, &ctx),
                     QP_EUSAGE);
    assert_string_equal(qp_error_last(), "tensor 'blk.0.attn_q.weight': tensor rows of 100 weights cannot be "
                                         "quantized to Q4_0 (blocks of 32)");
    /* --pure k-quants get no fallback either */
    ctx.pure = 1;
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q4_K_M, "blk.0.attn_q.weight", 2, ne96, &ctx),
                     QP_EUSAGE);
    assert_string_equal(qp_error_last(), "tensor 'blk.0.attn_q.weight': tensor rows of 96 weights cannot be "
                                         "quantized to Q4_K (blocks of 256)");
}

static void test_overrides_and_refusals(void **state)
{
    (void)state;
    qp_ggml_mix_ctx ctx;
    qp_ggml_mix_choice ch;
    const int64_t ne[2] = { 256, 1024 };
    qp_ggml_mix_ctx_init(&ctx, 6, 8, 4, 0);
    ctx.output_type = QP_GGML_Q8_0;
    ctx.token_embd_type = QP_GGML_Q4_0;
    ctx.pure = 1;
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q4_K_M, "output.weight", 2, ne, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_Q8_0);
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q4_K_M, "token_embd.weight", 2, ne, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_Q4_0);
    ctx.output_type = 9;   /* Q8_1: not a qpipe type */
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q4_K_M, "output.weight", 2, ne, &ctx), QP_EUSAGE);
    assert_string_equal(qp_error_last(), "tensor 'output.weight': override type 9 is not supported");

    qp_ggml_mix_ctx_init(&ctx, 6, 8, 4, 0);
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, 99, "blk.0.attn_q.weight", 2, ne, &ctx), QP_EUSAGE);
    assert_string_equal(qp_error_last(), "tensor 'blk.0.attn_q.weight': file type 99 is not supported");
    /* IQ3_XXS's attn_q / attn_k are IQ2_S: llama.cpp refuses them without an imatrix */
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_IQ3_XXS, "blk.0.attn_k.weight", 2, ne, &ctx),
                     QP_EUSAGE);
    assert_string_equal(qp_error_last(), "tensor 'blk.0.attn_k.weight': Missing importance matrix for tensor "
                                         "blk.0.attn_k.weight in a very low-bit quantization");
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q4_K_M, "blk.6.attn_v.weight", 2, ne, &ctx),
                     QP_EUSAGE);
    assert_string_equal(qp_error_last(), "tensor 'blk.6.attn_v.weight': layer 6 out of range (block_count 6)");
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q2_K_S, "blk.0.attn_q.weight", 2, ne, &ctx),
                     QP_EUSAGE);
    assert_string_equal(qp_error_last(), "tensor 'blk.0.attn_q.weight': Missing importance matrix for tensor "
                                         "blk.0.attn_q.weight in a very low-bit quantization");
    /* token_embd is exempt from that check */
    assert_int_equal(qp_ggml_mix_tensor_type(&ch, QP_FTYPE_MOSTLY_Q2_K_S, "token_embd.weight", 2, ne, &ctx), 0);
    assert_int_equal(ch.type, QP_GGML_Q2_K);
}

static void test_names(void **state)
{
    (void)state;
    assert_int_equal(qp_llama_ftype_parse("Q4_K_M"), 15);
    assert_int_equal(qp_llama_ftype_parse("q4_k"), 15);
    assert_int_equal(qp_llama_ftype_parse("Q3_K"), 12);
    assert_int_equal(qp_llama_ftype_parse("Q5_K"), 17);
    assert_int_equal(qp_llama_ftype_parse("Q2_K"), 10);
    assert_int_equal(qp_llama_ftype_parse("Q2_K_S"), 21);
    assert_int_equal(qp_llama_ftype_parse("bf16"), 32);
    assert_int_equal(qp_llama_ftype_parse("IQ3_XXS"), 23);
    /* LLAMA_FTYPE_MOSTLY_IQ2_S = 28, IQ2_M = 29 */
    assert_int_equal(qp_llama_ftype_parse("IQ2_S"), 28);
    assert_int_equal(qp_llama_ftype_parse("iq2_m"), 29);
    assert_string_equal(qp_llama_ftype_name(QP_FTYPE_MOSTLY_IQ2_M), "IQ2_M");
    assert_int_equal(qp_llama_ftype_default_type(QP_FTYPE_MOSTLY_IQ2_S), QP_GGML_IQ2_XS);
    assert_int_equal(qp_llama_ftype_default_type(QP_FTYPE_MOSTLY_IQ2_M), QP_GGML_IQ2_S);
    /* llama.h: LLAMA_FTYPE_MOSTLY_IQ3_XS = 22, IQ3_S = 26, IQ3_M = 27 */
    assert_int_equal(qp_llama_ftype_parse("IQ3_XS"), 22);
    assert_int_equal(qp_llama_ftype_parse("iq3_s"), 26);
    assert_int_equal(qp_llama_ftype_parse("IQ3_M"), 27);
    assert_string_equal(qp_llama_ftype_name(QP_FTYPE_MOSTLY_IQ3_M), "IQ3_M");
    /* llama.h: LLAMA_FTYPE_MOSTLY_IQ4_XS = 30, TQ1_0 = 36, TQ2_0 = 37 */
    assert_int_equal(qp_llama_ftype_parse("IQ4_XS"), 30);
    /* LLAMA_FTYPE_MOSTLY_IQ2_XXS = 19, IQ2_XS = 20 */
    assert_int_equal(qp_llama_ftype_parse("IQ2_XXS"), 19);
    assert_int_equal(qp_llama_ftype_parse("iq2_xs"), 20);
    assert_string_equal(qp_llama_ftype_name(QP_FTYPE_MOSTLY_IQ2_XS), "IQ2_XS");
    assert_int_equal(qp_llama_ftype_parse("tq1_0"), 36);
    assert_int_equal(qp_llama_ftype_parse("TQ2_0"), 37);
    assert_string_equal(qp_llama_ftype_name(QP_FTYPE_MOSTLY_TQ1_0), "TQ1_0");
    assert_int_equal(qp_llama_ftype_default_type(QP_FTYPE_MOSTLY_IQ4_XS), QP_GGML_IQ4_XS);
    assert_int_equal(qp_llama_ftype_parse(NULL), -1);
    assert_string_equal(qp_llama_ftype_name(QP_FTYPE_MOSTLY_Q6_K), "Q6_K");
    /* llama.h: LLAMA_FTYPE_MOSTLY_IQ1_S = 24, IQ1_M = 31 */
    assert_int_equal(qp_llama_ftype_parse("IQ1_S"), 24);
    assert_int_equal(qp_llama_ftype_parse("iq1_m"), 31);
    assert_string_equal(qp_llama_ftype_name((qp_llama_ftype)24), "IQ1_S");
    assert_string_equal(qp_llama_ftype_name((qp_llama_ftype)31), "IQ1_M");
    assert_int_equal(qp_llama_ftype_default_type(QP_FTYPE_MOSTLY_IQ1_S), QP_GGML_IQ1_S);
    assert_int_equal(qp_llama_ftype_default_type(QP_FTYPE_MOSTLY_IQ1_M), QP_GGML_IQ1_M);
    assert_null(qp_llama_ftype_name((qp_llama_ftype)33));
    assert_int_equal(qp_llama_ftype_default_type(QP_FTYPE_MOSTLY_Q3_K_L), QP_GGML_Q3_K);
    assert_int_equal(qp_llama_ftype_default_type((qp_llama_ftype)99), -1);
    assert_string_equal(qp_ggml_type_log_name(QP_GGML_Q6_K), "q6_K");
    assert_string_equal(qp_ggml_type_log_name(QP_GGML_IQ4_NL), "iq4_nl");
}

/* IQ1_S and IQ1_M: llama_tensor_get_type's IQ2 branch as for IQ2_XXS
 * (token_embd and MHA attn_v and the first eighth of ffn_down Q2_K, output
 * Q5_K), but attn_output IQ2_XXS (Q5_K with 8 experts); the refusal table
 * spares IQ1_M's token_embd and output, not IQ1_S's */
static void test_iq1_file_type_rules(void **state)
{
    (void)state;
    qp_ggml_mix_ctx gqa, mha;
    qp_ggml_mix_choice ch;
    char name[64];
    const int64_t ne_v[2] = { 4096, 1024 }, ne_d[2] = { 14336, 4096 }, ne_o[2] = { 4096, 4096 };
    const int64_t ne_e[2] = { 4096, 32000 }, ne_odd[2] = { 4160, 64 };
    qp_ggml_mix_ctx_init(&gqa, 32, 32, 8, 0);
    qp_ggml_mix_ctx_init(&mha, 32, 32, 32, 0);
    gqa.has_imatrix = mha.has_imatrix = 1;
    static const qp_llama_ftype fts[] = { QP_FTYPE_MOSTLY_IQ1_S, QP_FTYPE_MOSTLY_IQ1_M };
    static const qp_ggml_type ts[] = { QP_GGML_IQ1_S, QP_GGML_IQ1_M };
    for (size_t k = 0; k < 2; k++) {
        assert_int_equal(qp_llama_ftype_default_type(fts[k]), (int)ts[k]);
        for (int i = 0; i < 32; i++) {
            snprintf(name, sizeof(name), "blk.%d.attn_v.weight", i);
            assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts[k], name, 2, ne_v, &gqa), 0);
            assert_int_equal(ch.type, QP_GGML_Q4_K);
            assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts[k], name, 2, ne_v, &mha), 0);
            assert_int_equal(ch.type, QP_GGML_Q2_K);
            snprintf(name, sizeof(name), "blk.%d.ffn_down.weight", i);
            assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts[k], name, 2, ne_d, &gqa), 0);
            assert_int_equal(ch.type, i < 4 ? QP_GGML_Q2_K : ts[k]);
            snprintf(name, sizeof(name), "blk.%d.attn_output.weight", i);
            assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts[k], name, 2, ne_o, &gqa), 0);
            assert_int_equal(ch.type, QP_GGML_IQ2_XXS);
            snprintf(name, sizeof(name), "blk.%d.attn_k.weight", i);
            assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts[k], name, 2, ne_v, &gqa), 0);
            assert_int_equal(ch.type, ts[k]);
        }
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts[k], "output.weight", 2, ne_e, &gqa), 0);
        assert_int_equal(ch.type, QP_GGML_Q5_K);
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts[k], "token_embd.weight", 2, ne_e, &gqa), 0);
        assert_int_equal(ch.type, QP_GGML_Q2_K);
        mha.n_expert = 8;
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts[k], "blk.9.attn_k.weight", 2, ne_v, &mha), 0);
        assert_int_equal(ch.type, QP_GGML_Q4_K);
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts[k], "blk.9.attn_output.weight", 2, ne_o, &mha), 0);
        assert_int_equal(ch.type, QP_GGML_Q5_K);
        mha.n_expert = 0;
        assert_int_equal(qp_ggml_mix_tensor_type(&ch, fts[k], "blk.3.attn_q.weight", 2, ne_odd, &gqa), 0);
        assert_int_equal(ch.type, QP_GGML_IQ4_NL);
        assert_int_equal(ch.fallback, 1);
        assert_true(qp_ggml_needs_imatrix(ts[k], fts[k], "blk.3.attn_q.weight"));
        assert_int_equal(qp_ggml_needs_imatrix(ts[k], fts[k], "output.weight"), k == 0);
        assert_int_equal(qp_ggml_needs_imatrix(ts[k], fts[k], "token_embd.weight"), k == 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mix_oracles),
        cmocka_unit_test(test_pure_oracles),
        cmocka_unit_test(test_iq_oracles),
        cmocka_unit_test(test_iq_file_type_rules),
        cmocka_unit_test(test_iq3_file_type_rules),
        cmocka_unit_test(test_iq3_xxs_file_type_rules),
        cmocka_unit_test(test_house_mix_shape),
        cmocka_unit_test(test_32_layers),
        cmocka_unit_test(test_70b_and_experts),
        cmocka_unit_test(test_fallback),
        cmocka_unit_test(test_overrides_and_refusals),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_iq2_file_type_rules),
        cmocka_unit_test(test_iq1_file_type_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
