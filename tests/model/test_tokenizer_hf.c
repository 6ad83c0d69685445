/* Hugging Face tokenizer.json tests: house-qwen's reference ids (tokenizers'
 * own output, NFC included), round trips, the reference logits' token
 * streams, valid.txt's token count, metadata and accessors. */
#include "tests/support/testutil.h"

#include "common/error.h"
#include "common/fsutil.h"
#include "model/safetensors.h"
#include "model/tokenizer.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

static qp_tokenizer *qwen;

static int load_qwen(void **state)
{
    (void)state;
    char *dir = qp_test_shared_path("models/house-qwen");
    int rc = qp_tokenizer_load_dir(&qwen, dir);
    if (rc)
        fprintf(stderr, "load: %s\n", qp_error_last());
    free(dir);
    return rc;
}

static int free_qwen(void **state)
{
    (void)state;
    qp_tokenizer_free(qwen);
    qwen = NULL;
    return 0;
}

static int *json_ids(const json_t *arr, size_t *n)
{
    *n = json_array_size(arr);
    int *v = malloc((*n + 1) * sizeof(*v));
    for (size_t k = 0; k < *n; k++)
        v[k] = (int)json_integer_value(json_array_get(arr, k));
    return v;
}

static void assert_ids(const int *got, size_t ngot, const int *want, size_t nwant, const char *what)
{
    if (ngot != nwant)
        fprintf(stderr, "%s: %zu ids, want %zu\n", what, ngot, nwant);
    assert_int_equal(ngot, nwant);
    for (size_t i = 0; i < ngot; i++) {
        if (got[i] != want[i])
            fprintf(stderr, "%s: id %zu: got %d want %d\n", what, i, got[i], want[i]);
        assert_int_equal(got[i], want[i]);
    }
}

static void test_metadata(void **state)
{
    (void)state;
    assert_int_equal(qp_tokenizer_model(qwen), QP_TOK_MODEL_BPE);
    assert_int_equal(qp_tokenizer_n_vocab(qwen), 2048);
    assert_string_equal(qp_tokenizer_pre(qwen), "qwen2");
    assert_int_equal(qp_tokenizer_bos(qwen), -1);
    assert_int_equal(qp_tokenizer_eos(qwen), 2045);
    assert_int_equal(qp_tokenizer_pad(qwen), 2045);
    assert_int_equal(qp_tokenizer_unk(qwen), -1);
    assert_int_equal(qp_tokenizer_wants_bos(qwen), 0);
    assert_int_equal(qp_tokenizer_wants_eos(qwen), 0);
    assert_int_equal(qp_tokenizer_has_byte_fallback(qwen), 0);
    assert_string_equal(qp_tokenizer_piece(qwen, 0), "!");
    assert_string_equal(qp_tokenizer_piece(qwen, 198), "\xC4\x8A");   /* Ċ */
    assert_string_equal(qp_tokenizer_piece(qwen, 220), "\xC4\xA0");   /* Ġ */
    assert_string_equal(qp_tokenizer_piece(qwen, 2045), "<|endoftext|>");
    assert_string_equal(qp_tokenizer_piece(qwen, 2047), "<|im_end|>");
    for (int id = 0; id < 2045; id++)
        assert_int_equal(qp_tokenizer_type(qwen, id), QP_TOK_NORMAL);
    for (int id = 2045; id < 2048; id++)
        assert_int_equal(qp_tokenizer_type(qwen, id), QP_TOK_CONTROL);

    /* merges and chat template as the files hold them */
    char *tpath = qp_test_shared_path("models/house-qwen/tokenizer.json");
    char *cpath = qp_test_shared_path("models/house-qwen/tokenizer_config.json");
    json_t *tj = json_load_file(tpath, 0, NULL), *cj = json_load_file(cpath, 0, NULL);
    assert_non_null(tj);
    assert_non_null(cj);
    json_t *merges = json_object_get(json_object_get(tj, "model"), "merges");
    assert_int_equal(qp_tokenizer_n_merges(qwen), json_array_size(merges));
    assert_int_equal(qp_tokenizer_n_merges(qwen), 1789);
    for (size_t i = 0; i < json_array_size(merges); i++)
        assert_string_equal(qp_tokenizer_merge(qwen, i), json_string_value(json_array_get(merges, i)));
    assert_null(qp_tokenizer_merge(qwen, 1789));
    assert_string_equal(qp_tokenizer_chat_template(qwen), json_string_value(json_object_get(cj, "chat_template")));
    json_decref(tj);
    json_decref(cj);
    free(tpath);
    free(cpath);
}

/* Every case of reference/tokenizer_cases.json: exactly the ids, and
 * decode(encode(x)) == NFC(x). */
static void test_reference_cases(void **state)
{
    (void)state;
    char *path = qp_test_shared_path("models/house-qwen/reference/tokenizer_cases.json");
    json_t *root = json_load_file(path, JSON_ALLOW_NUL, NULL);
    assert_non_null(root);
    assert_false(json_is_true(json_object_get(root, "add_bos")));
    assert_true(json_is_true(json_object_get(root, "parse_special")));
    json_t *cases = json_object_get(root, "cases");
    assert_int_equal(json_array_size(cases), 104);
    size_t i, passed = 0;
    json_t *c;
    json_array_foreach(cases, i, c) {
        json_t *jt = json_object_get(c, "text");
        const char *text = json_string_value(jt);
        size_t len = json_string_length(jt);
        size_t nwant;
        int *want = json_ids(json_object_get(c, "ids"), &nwant);
        int *ids = NULL;
        size_t n = 0;
        assert_int_equal(qp_tokenizer_encode(qwen, text, len, QP_TOK_PARSE_SPECIAL, &ids, &n), 0);
        char what[64];
        snprintf(what, sizeof(what), "case %zu", i);
        assert_ids(ids, n, want, nwant, what);

        char *back = NULL;
        size_t blen = 0;
        assert_int_equal(qp_tokenizer_decode(qwen, ids, n, 0, &back, &blen), 0);
        utf8proc_uint8_t *nfc = NULL;
        utf8proc_ssize_t nl = len ? utf8proc_map((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)len, &nfc,
                                                 UTF8PROC_STABLE | UTF8PROC_COMPOSE) : 0;
        assert_true(nl >= 0);
        assert_int_equal(blen, (size_t)nl);
        if (nl)
            assert_memory_equal(back, nfc, (size_t)nl);
        free(nfc);
        free(back);
        free(ids);
        free(want);
        passed++;
    }
    fprintf(stderr, "house-qwen tokenizer_cases.json: %zu of 104 exact\n", passed);
    json_decref(root);
    free(path);
}

/* The reference logits' token streams: valid.txt's first 256 tokens, the
 * ChatML prompt (special tokens parsed) and valid.txt tokens 20000..20099. */
static void test_reference_streams(void **state)
{
    (void)state;
    char *vpath = qp_test_shared_path("data/shakespeare/valid.txt");
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(qp_read_file(vpath, &text, &len), 0);
    int *ids = NULL;
    size_t n = 0;
    clock_t t0 = clock();
    assert_int_equal(qp_tokenizer_encode(qwen, text, len, 0, &ids, &n), 0);
    double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
    fprintf(stderr, "valid.txt: %zu bytes -> %zu tokens in %.3f s\n", len, n, secs);
    assert_int_equal(n, 39708);

    char *lpath = qp_test_shared_path("models/house-qwen/reference/logits.safetensors");
    qp_safetensors *st = NULL;
    assert_int_equal(qp_safetensors_open(&st, lpath), 0);
    const qp_tensor_view *t0v = qp_safetensors_find(st, "tokens");
    const qp_tensor_view *t2v = qp_safetensors_find(st, "tokens_2");
    const qp_tensor_view *t1v = qp_safetensors_find(st, "tokens_1");
    assert_non_null(t0v);
    assert_non_null(t1v);
    assert_non_null(t2v);
    assert_int_equal(t0v->nelem, 256);
    assert_int_equal(t2v->nelem, 100);
    const int32_t *r0 = (const int32_t *)t0v->data, *r2 = (const int32_t *)t2v->data;
    for (size_t i = 0; i < 256; i++)
        assert_int_equal(ids[i], r0[i]);
    for (size_t i = 0; i < 100; i++)
        assert_int_equal(ids[20000 + i], r2[i]);

    const char *chat = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                       "Who art thou, and whence com'st thou?<|im_end|>\n<|im_start|>assistant\n";
    int *cids = NULL;
    size_t cn = 0;
    assert_int_equal(qp_tokenizer_encode(qwen, chat, strlen(chat), QP_TOK_PARSE_SPECIAL, &cids, &cn), 0);
    assert_int_equal(cn, t1v->nelem);
    assert_int_equal(cn, 40);
    assert_ids(cids, cn, (const int32_t *)t1v->data, t1v->nelem, "chat prompt");
    free(cids);

    /* Round trip of the whole file. */
    char *back = NULL;
    size_t blen = 0;
    assert_int_equal(qp_tokenizer_decode(qwen, ids, n, 0, &back, &blen), 0);
    assert_int_equal(blen, len);
    assert_memory_equal(back, text, len);
    free(back);
    qp_safetensors_free(st);
    free(lpath);
    free(ids);
    free(text);
    free(vpath);
}

/* Special tokens are text without QP_TOK_PARSE_SPECIAL; BOS/EOS flags add
 * only what the model has. */
static void test_special_flags(void **state)
{
    (void)state;
    const char *s = "<|im_end|>";
    int *ids = NULL;
    size_t n = 0;
    assert_int_equal(qp_tokenizer_encode(qwen, s, strlen(s), QP_TOK_PARSE_SPECIAL, &ids, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], 2047);
    free(ids);
    assert_int_equal(qp_tokenizer_encode(qwen, s, strlen(s), 0, &ids, &n), 0);
    assert_true(n > 1);
    for (size_t i = 0; i < n; i++)
        assert_true(ids[i] < 2045);
    char *back = NULL;
    size_t blen = 0;
    assert_int_equal(qp_tokenizer_decode(qwen, ids, n, 0, &back, &blen), 0);
    assert_string_equal(back, s);
    free(back);
    free(ids);
    /* no BOS in this model; EOS is <|endoftext|> */
    assert_int_equal(qp_tokenizer_encode(qwen, "a", 1, QP_TOK_ADD_BOS | QP_TOK_ADD_EOS, &ids, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(ids[1], 2045);
    free(ids);
    /* invalid UTF-8 reads as U+FFFD, as llama.cpp reads it */
    const char bad[] = "a\xFF" "b";
    int *ref = NULL;
    size_t nref = 0;
    assert_int_equal(qp_tokenizer_encode(qwen, bad, 3, 0, &ids, &n), 0);
    assert_int_equal(qp_tokenizer_encode(qwen, "a\xEF\xBF\xBD" "b", 5, 0, &ref, &nref), 0);
    assert_ids(ids, n, ref, nref, "invalid UTF-8");
    free(ids);
    free(ref);
    int bad_id = 5000;
    assert_int_equal(qp_tokenizer_decode(qwen, &bad_id, 1, 0, &back, &blen), QP_EUSAGE);
}

int main(void)
{
    const struct CMUnitTest qwen_tests[] = {
        cmocka_unit_test(test_metadata),
        cmocka_unit_test(test_reference_cases),
        cmocka_unit_test(test_reference_streams),
        cmocka_unit_test(test_special_flags),
    };
    return cmocka_run_group_tests_name("house-qwen tokenizer.json", qwen_tests, load_qwen, free_qwen);
}
