/* The real LLaMA 1/2 vocabulary through qpipe's SentencePiece loader:
 * models/llama2-tokenizer/tokenizer.model (32000 pieces, the one the
 * synthetic scale checkpoints ship) encodes every text of llama.cpp's
 * ggml-vocab-llama-spm vectors exactly, and its pieces, scores, types and
 * special ids equal the GGUF's tokenizer.ggml.* arrays, which llama.cpp
 * converted from the same file. */
#include "tests/support/testutil.h"
#include "tests/support/vocab_cases.h"

#include "common/error.h"
#include "common/fsutil.h"
#include "model/gguf.h"
#include "model/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SPM_MODEL "models/llama2-tokenizer/tokenizer.model"
#define SPM_GGUF "vectors/tokenizers/ggml-vocab-llama-spm.gguf"

static qp_tokenizer *load_spm(void)
{
    char *path = qp_test_shared_path(SPM_MODEL);
    qp_tokenizer *t = NULL;
    int rc = qp_tokenizer_load_spm(&t, path);
    if (rc)
        fprintf(stderr, "%s\n", qp_error_last());
    assert_int_equal(rc, 0);
    free(path);
    return t;
}

static qp_tokenizer *load_gguf(qp_gguf **g)
{
    char *path = qp_test_shared_path(SPM_GGUF);
    qp_tokenizer *t = NULL;
    assert_int_equal(qp_gguf_open(g, path), 0);
    assert_int_equal(qp_tokenizer_load_gguf(&t, *g, NULL), 0);
    free(path);
    return t;
}

/* llama.cpp's test-tokenizer-0 writes the .out without BOS (add_special
 * false); the leading "▁" comes from the vocabulary itself
 * (add_dummy_prefix in tokenizer.model's normalizer spec,
 * tokenizer.ggml.add_space_prefix in the GGUF).  Texts in .inp are
 * separated by "\n__ggml_vocab_test__\n" (the file ends with one).  Each
 * text is also encoded with ADD_BOS: <s> (id 1) then the same ids. */
static int check_case(void *ud, int index, const char *text, size_t len, const char *want, size_t want_len)
{
    const qp_tokenizer *t = ud;
    int *ids = NULL, *bids = NULL;
    size_t n = 0, bn = 0;
    assert_int_equal(qp_tokenizer_encode(t, text, len, 0, &ids, &n), 0);
    assert_int_equal(qp_tokenizer_encode(t, text, len, QP_TOK_ADD_BOS, &bids, &bn), 0);
    int same = qp_test_ids_match(SPM_MODEL, index, text, len, ids, n, want, want_len);
    assert_int_equal(bn, n + 1);
    assert_int_equal(bids[0], 1);
    assert_memory_equal(bids + 1, ids, n * sizeof(*ids));
    free(ids);
    free(bids);
    return same;
}

static void test_llama_spm_vectors(void **state)
{
    (void)state;
    qp_tokenizer *t = load_spm();
    char *base = qp_test_shared_path(SPM_GGUF);
    int total = 0, ok = qp_test_vocab_cases(base, check_case, t, &total);
    fprintf(stderr, "%s: %d of %d texts exact\n", SPM_MODEL, ok, total);
    assert_int_equal(total, 46);
    assert_int_equal(ok, total);
    free(base);
    qp_tokenizer_free(t);
}

/* Every piece, score and type, the special ids and the options, against
 * the GGUF's vocabulary arrays. */
static void test_vocab_matches_gguf(void **state)
{
    (void)state;
    qp_gguf *g = NULL;
    qp_tokenizer *s = load_spm(), *t = load_gguf(&g);
    assert_int_equal(qp_tokenizer_model(s), QP_TOK_MODEL_SPM);
    assert_int_equal(qp_tokenizer_n_vocab(s), 32000);
    assert_int_equal(qp_tokenizer_n_vocab(t), 32000);
    int diffs = 0, bytes = 0, controls = 0;
    for (int id = 0; id < 32000; id++) {
        const char *a = qp_tokenizer_piece(s, id), *b = qp_tokenizer_piece(t, id);
        int same = a && b && strcmp(a, b) == 0 && qp_tokenizer_score(s, id) == qp_tokenizer_score(t, id) &&
                   qp_tokenizer_type(s, id) == qp_tokenizer_type(t, id);
        if (!same && diffs++ < 5)
            fprintf(stderr, "id %d: spm '%s' %g type %d, gguf '%s' %g type %d\n", id, a ? a : "(null)",
                    (double)qp_tokenizer_score(s, id), qp_tokenizer_type(s, id), b ? b : "(null)",
                    (double)qp_tokenizer_score(t, id), qp_tokenizer_type(t, id));
        bytes += qp_tokenizer_type(s, id) == QP_TOK_BYTE;
        controls += qp_tokenizer_type(s, id) == QP_TOK_CONTROL;
    }
    assert_int_equal(diffs, 0);
    /* LLaMA's layout: <unk> 0, <s> 1, </s> 2, then 256 byte pieces */
    assert_int_equal(bytes, 256);
    assert_int_equal(controls, 2);
    assert_string_equal(qp_tokenizer_piece(s, 3), "<0x00>");
    assert_int_equal(qp_tokenizer_unk(s), 0);
    assert_int_equal(qp_tokenizer_bos(s), 1);
    assert_int_equal(qp_tokenizer_eos(s), 2);
    assert_int_equal(qp_tokenizer_unk(t), qp_tokenizer_unk(s));
    assert_int_equal(qp_tokenizer_bos(t), qp_tokenizer_bos(s));
    assert_int_equal(qp_tokenizer_eos(t), qp_tokenizer_eos(s));
    assert_true(qp_tokenizer_has_byte_fallback(s));
    assert_true(qp_tokenizer_has_byte_fallback(t));
    assert_int_equal(qp_tokenizer_add_dummy_prefix(s), qp_tokenizer_add_dummy_prefix(t));
    assert_true(qp_tokenizer_add_dummy_prefix(s));
    qp_tokenizer_free(s);
    qp_tokenizer_free(t);
    qp_gguf_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama_spm_vectors),
        cmocka_unit_test(test_vocab_matches_gguf),
    };
    return cmocka_run_group_tests_name("LLaMA 1/2 tokenizer.model as llama.cpp", tests, NULL, NULL);
}
