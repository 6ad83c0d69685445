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

/* ---- malformed files ------------------------------------------------------ */

#define BASE_MODEL "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a b\"]}"

/* Loads json as DIR/tokenizer.json (written to a temp dir, loaded through
 * qp_tokenizer_load_dir) and expects QP_EFORMAT with a message holding
 * the file's path and each of the fragments. */
static void expect_error(const char *json, const char *config, const char *file, const char *frag1,
                         const char *frag2)
{
    char *dir = qp_test_tmpdir();
    char path[4096];
    snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
    qp_test_write_str(path, json);
    if (config) {
        snprintf(path, sizeof(path), "%s/tokenizer_config.json", dir);
        qp_test_write_str(path, config);
    }
    qp_tokenizer *t = NULL;
    int rc = qp_tokenizer_load_dir(&t, dir);
    const char *msg = qp_error_last();
    fprintf(stderr, "  %s\n", msg);
    assert_int_equal(rc, QP_EFORMAT);
    assert_null(t);
    snprintf(path, sizeof(path), "%s/%s: ", dir, file);
    assert_non_null(strstr(msg, path));
    assert_non_null(strstr(msg, frag1));
    if (frag2)
        assert_non_null(strstr(msg, frag2));
    assert_null(strchr(msg, '\n'));
    qp_test_rmtree(dir);
    free(dir);
}

static void test_malformed(void **state)
{
    (void)state;
    /* the base is valid */
    qp_tokenizer *t = NULL;
    const char *ok = "{" BASE_MODEL "}";
    assert_int_equal(qp_tokenizer_load_hf(&t, ok, strlen(ok), NULL, 0, "base"), 0);
    qp_tokenizer_free(t);

    expect_error("{\"version\":\"1.0\"}", NULL, "tokenizer.json", "no \"model\" object", NULL);
    expect_error("{" BASE_MODEL ",\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Frobnicate\"}]}}",
                 NULL, "tokenizer.json", "pre_tokenizer.pretokenizers[0]", "unknown pre-tokenizer type 'Frobnicate'");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a b\",\"ab q\"]}}",
                 NULL, "tokenizer.json", "model.merges[1]", "'q' is not a token of the vocabulary");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[[\"a\",\"zz\"]]}}",
                 NULL, "tokenizer.json", "model.merges[0]", "'zz' is not a token");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"ab\"]}}",
                 NULL, "tokenizer.json", "model.merges[0] 'ab' is not two pieces", NULL);
    expect_error("{" BASE_MODEL ",\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\s+(a|b\"},"
                 "\"behavior\":\"Isolated\"}}",
                 NULL, "tokenizer.json", "pre_tokenizer.pattern.Regex: bad regex: missing closing parenthesis",
                 "at offset 7");
    /* truncated JSON: jansson's line and column */
    expect_error("{\n" BASE_MODEL ",\n\"added_tokens\": [", NULL, "tokenizer.json", "line 3 column", NULL);
    expect_error("", NULL, "tokenizer.json", "line 1 column 0", NULL);
    expect_error("{" BASE_MODEL ",\"normalizer\":{\"type\":\"BertNormalizer\"}}", NULL, "tokenizer.json",
                 "normalizer: unknown normalizer type 'BertNormalizer'", NULL);
    expect_error("{" BASE_MODEL ",\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"WordPiece\"}]}}",
                 NULL, "tokenizer.json", "decoder.decoders[0]: unknown decoder type 'WordPiece'", NULL);
    expect_error("{\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"a\":0}}}", NULL, "tokenizer.json",
                 "model type 'WordPiece' is not supported; only BPE", NULL);
    expect_error("{\"model\":{\"type\":\"Unigram\",\"vocab\":[[\"a\",0.0]]}}", NULL, "tokenizer.json",
                 "model type 'Unigram' is not supported", NULL);
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":0},\"merges\":[]}}", NULL,
                 "tokenizer.json", "gives id 0 to both", NULL);
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":99999999},\"merges\":[]}}", NULL,
                 "tokenizer.json", "model.vocab['a'] is not an id", NULL);
    expect_error("{" BASE_MODEL ",\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},"
                 "\"behavior\":\"Sideways\"}}", NULL, "tokenizer.json", "pre_tokenizer.behavior 'Sideways' is unknown", NULL);
    expect_error("{" BASE_MODEL ",\"added_tokens\":[{\"id\":7}]}", NULL, "tokenizer.json",
                 "added_tokens[0] needs an \"id\" and a non-empty \"content\"", NULL);
    expect_error("{" BASE_MODEL ",\"added_tokens\":[{\"id\":3,\"content\":\"<x>\"},{\"id\":3,\"content\":\"<y>\"}]}",
                 NULL, "tokenizer.json", "added_tokens[0] and added_tokens[1] both have id 3", NULL);
    /* 4294967296 cast to int is 0, a real piece */
    expect_error("{" BASE_MODEL ",\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":"
                 "{\"id\":\"<s>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"special_tokens\":"
                 "{\"<s>\":{\"id\":\"<s>\",\"ids\":[4294967296],\"tokens\":[\"<s>\"]}}}}", NULL, "tokenizer.json",
                 "post_processor: special token '<s>' has id 4294967296, outside the vocabulary (0..2)", NULL);
    /* the config beside it */
    expect_error("{" BASE_MODEL "}", "{\"add_bos_token\": tru", "tokenizer_config.json", "line 1 column", NULL);
    expect_error("{" BASE_MODEL "}", "{\"bos_token\": 5}", "tokenizer_config.json",
                 "bos_token is neither a string nor an object", NULL);
    expect_error("{" BASE_MODEL "}", "{\"add_eos_token\": \"yes\"}", "tokenizer_config.json",
                 "add_eos_token is not true or false", NULL);
    /* a BOS / EOS asked for that the vocabulary cannot give */
    expect_error("{" BASE_MODEL "}", "{\"add_bos_token\": true, \"bos_token\": \"<|nope|>\"}",
                 "tokenizer_config.json", "add_bos_token is true but bos_token '<|nope|>' is not a token", NULL);
    expect_error("{" BASE_MODEL "}", "{\"add_bos_token\": true, \"bos_token\": null}", "tokenizer_config.json",
                 "add_bos_token is true but there is no bos_token", NULL);
    expect_error("{" BASE_MODEL "}", "{\"add_eos_token\": true, \"eos_token\": {\"content\": \"</x>\"}}",
                 "tokenizer_config.json", "add_eos_token is true but eos_token '</x>' is not a token", NULL);
}

int main(void)
{
    const struct CMUnitTest qwen_tests[] = {
        cmocka_unit_test(test_metadata),
        cmocka_unit_test(test_reference_cases),
        cmocka_unit_test(test_reference_streams),
        cmocka_unit_test(test_special_flags),
    };
    const struct CMUnitTest file_tests[] = {
        cmocka_unit_test(test_malformed),
    };
    int rc = cmocka_run_group_tests_name("house-qwen tokenizer.json", qwen_tests, load_qwen, free_qwen);
    return rc | cmocka_run_group_tests_name("malformed tokenizer.json", file_tests, NULL, NULL);
}
