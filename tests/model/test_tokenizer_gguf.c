/* GGUF vocabularies tokenized as llama.cpp tokenizes them: every .inp/.out
 * pair of llama.cpp's test vocabularies (vectors/tokenizers), house-qwen's
 * tokenize.jsonl through its F32 GGUF, the GGUF vocabulary against the
 * tokenizer.json it was converted from, and refusals (bert, unknown pre). */
#include "tests/support/testutil.h"
#include "tests/support/vocab_cases.h"

#include "common/error.h"
#include "common/fsutil.h"
#include "model/gguf.h"
#include "model/gguf_writer.h"
#include "model/tokenizer.h"

#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int load(const char *rel, qp_gguf **g, qp_tokenizer **t)
{
    char *path = qp_test_shared_path(rel);
    int rc = qp_gguf_open(g, path);
    if (!rc)
        rc = qp_tokenizer_load_gguf(t, *g, NULL);
    if (rc)
        fprintf(stderr, "%s: %s\n", rel, qp_error_last());
    free(path);
    return rc;
}

/* One vocabulary's pairs: the .inp texts are separated by
 * "\n__ggml_vocab_test__\n" (the file ends with one), the .out has one line
 * of space-prefixed ids per text.  Returns the number of exact matches and
 * sets *total. */
typedef struct {
    const qp_tokenizer *t;
    const char *path;
} vocab_case_ctx;

/* llama.cpp's test-tokenizer-0: no BOS/EOS; special tokens parsed or not
 * gives the same ids on these texts (checked both ways) */
static int check_case(void *ud, int index, const char *text, size_t len, const char *want, size_t want_len)
{
    const vocab_case_ctx *c = ud;
    int *ids = NULL, *ids2 = NULL;
    size_t n = 0, n2 = 0;
    assert_int_equal(qp_tokenizer_encode(c->t, text, len, 0, &ids, &n), 0);
    assert_int_equal(qp_tokenizer_encode(c->t, text, len, QP_TOK_PARSE_SPECIAL, &ids2, &n2), 0);
    int same = qp_test_ids_match(c->path, index, text, len, ids, n, want, want_len) && n2 == n &&
               memcmp(ids, ids2, n * sizeof(*ids)) == 0;
    free(ids);
    free(ids2);
    return same;
}

static int run_vectors(const qp_tokenizer *t, const char *gguf_path, int *total)
{
    vocab_case_ctx c = {t, gguf_path};
    return qp_test_vocab_cases(gguf_path, check_case, &c, total);
}

static void test_llama_vectors(void **state)
{
    (void)state;
    char *dir = qp_test_shared_path("vectors/tokenizers");
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    int vocabs = 0, all_ok = 0, all = 0;
    while ((de = readdir(d))) {
        size_t nl = strlen(de->d_name);
        if (nl < 5 || strcmp(de->d_name + nl - 5, ".gguf") != 0)
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        qp_gguf *g = NULL;
        qp_tokenizer *t = NULL;
        assert_int_equal(qp_gguf_open(&g, path), 0);
        int rc = qp_tokenizer_load_gguf(&t, g, NULL);
        if (strstr(de->d_name, "bert-bge")) {
            /* WordPiece is refused, naming the key and value */
            assert_int_equal(rc, QP_EFORMAT);
            assert_non_null(strstr(qp_error_last(), "key 'tokenizer.ggml.model': is 'bert' (WordPiece)"));
            fprintf(stderr, "%s: refused: %s\n", de->d_name, qp_error_last());
            qp_gguf_free(g);
            continue;
        }
        if (rc)
            fprintf(stderr, "%s\n", qp_error_last());
        assert_int_equal(rc, 0);
        int total = 0, ok = run_vectors(t, path, &total);
        fprintf(stderr, "%s: %d of %d exact (pre %s)\n", de->d_name, ok, total,
                qp_tokenizer_pre(t) ? qp_tokenizer_pre(t) : "-");
        assert_int_equal(total, 46);
        assert_int_equal(ok, total);
        vocabs++;
        all_ok += ok;
        all += total;
        qp_tokenizer_free(t);
        qp_gguf_free(g);
    }
    closedir(d);
    free(dir);
    fprintf(stderr, "vectors/tokenizers: %d vocabularies, %d of %d texts exact\n", vocabs, all_ok, all);
    assert_int_equal(vocabs, 9);
}

/* tokenize.jsonl: llama-tokenize's ids (specials parsed, no BOS, no NFC)
 * for every tokenizer case, through F32.gguf's vocabulary. */
static void test_house_qwen_jsonl(void **state)
{
    (void)state;
    qp_gguf *g = NULL;
    qp_tokenizer *t = NULL;
    assert_int_equal(load("vectors/house-qwen/F32.gguf", &g, &t), 0);
    char *path = qp_test_shared_path("vectors/house-qwen/tokenize.jsonl");
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(qp_read_file(path, &text, &len), 0);
    int lines = 0, ok = 0;
    for (char *line = text; line < text + len;) {
        char *nl = memchr(line, '\n', (size_t)(text + len - line));
        size_t ll = nl ? (size_t)(nl - line) : (size_t)(text + len - line);
        json_error_t je;
        json_t *o = json_loadb(line, ll, JSON_ALLOW_NUL, &je);
        assert_non_null(o);
        json_t *jt = json_object_get(o, "text"), *jids = json_object_get(o, "ids");
        int *ids = NULL;
        size_t n = 0;
        assert_int_equal(qp_tokenizer_encode(t, json_string_value(jt), json_string_length(jt),
                                             QP_TOK_PARSE_SPECIAL, &ids, &n), 0);
        int same = n == json_array_size(jids);
        for (size_t i = 0; same && i < n; i++)
            same = ids[i] == json_integer_value(json_array_get(jids, i));
        if (!same)
            fprintf(stderr, "tokenize.jsonl line %d differs\n", lines);
        ok += same;
        lines++;
        free(ids);
        json_decref(o);
        line = nl ? nl + 1 : text + len;
    }
    fprintf(stderr, "house-qwen tokenize.jsonl: %d of %d exact\n", ok, lines);
    assert_int_equal(lines, 104);
    assert_int_equal(ok, lines);
    free(text);
    free(path);
    qp_tokenizer_free(t);
    qp_gguf_free(g);
}

/* The GGUF vocabulary convert_hf_to_gguf wrote equals the tokenizer.json
 * reading: pieces, types, merges, pre, chat template, special ids. */
static void test_house_qwen_gguf_matches_json(void **state)
{
    (void)state;
    qp_gguf *g = NULL;
    qp_tokenizer *t = NULL, *h = NULL;
    assert_int_equal(load("vectors/house-qwen/F32.gguf", &g, &t), 0);
    char *dir = qp_test_shared_path("models/house-qwen");
    assert_int_equal(qp_tokenizer_load_dir(&h, dir), 0);
    assert_int_equal(qp_tokenizer_model(t), QP_TOK_MODEL_BPE);
    assert_string_equal(qp_tokenizer_pre(t), "qwen2");
    assert_string_equal(qp_tokenizer_pre(h), "qwen2");
    assert_int_equal(qp_tokenizer_n_vocab(t), qp_tokenizer_n_vocab(h));
    for (int id = 0; id < (int)qp_tokenizer_n_vocab(t); id++) {
        assert_string_equal(qp_tokenizer_piece(t, id), qp_tokenizer_piece(h, id));
        assert_int_equal(qp_tokenizer_type(t, id), qp_tokenizer_type(h, id));
    }
    assert_int_equal(qp_tokenizer_n_merges(t), qp_tokenizer_n_merges(h));
    for (size_t i = 0; i < qp_tokenizer_n_merges(t); i++)
        assert_string_equal(qp_tokenizer_merge(t, i), qp_tokenizer_merge(h, i));
    assert_string_equal(qp_tokenizer_chat_template(t), qp_tokenizer_chat_template(h));
    assert_int_equal(qp_tokenizer_eos(t), 2045);
    assert_int_equal(qp_tokenizer_eos(h), 2045);
    assert_int_equal(qp_tokenizer_pad(t), qp_tokenizer_pad(h));
    assert_int_equal(qp_tokenizer_wants_bos(t), 0);
    assert_int_equal(qp_tokenizer_wants_eos(t), 0);
    free(dir);
    qp_tokenizer_free(h);
    qp_tokenizer_free(t);
    qp_gguf_free(g);
}

/* A copy of F32.gguf's metadata with tokenizer.ggml.pre = pre (NULL:
 * dropped); loads its vocabulary into *t. */
static int load_with_pre(const char *pre, qp_tokenizer **t, char **tmpdir)
{
    qp_gguf *src = NULL;
    char *path = qp_test_shared_path("vectors/house-qwen/F32.gguf");
    assert_int_equal(qp_gguf_open(&src, path), 0);
    *tmpdir = qp_test_tmpdir();
    char out[4096];
    snprintf(out, sizeof(out), "%s/v.gguf", *tmpdir);
    qp_gguf_writer *w = NULL;
    assert_int_equal(qp_gguf_writer_new(&w, out), 0);
    for (size_t i = 0; i < qp_gguf_kv_count(src); i++) {
        const char *k = qp_gguf_kv_key(src, i);
        if (strcmp(k, "tokenizer.ggml.pre") == 0) {
            if (pre)
                assert_int_equal(qp_gguf_writer_add_str(w, k, pre), 0);
        } else if (strncmp(k, "tokenizer.", 10) == 0) {
            assert_int_equal(qp_gguf_writer_copy_kv(w, src, i), 0);
        }
    }
    assert_int_equal(qp_gguf_writer_finish(w), 0);
    qp_gguf *g = NULL;
    assert_int_equal(qp_gguf_open(&g, out), 0);
    int rc = qp_tokenizer_load_gguf(t, g, NULL);
    qp_gguf_free(g);
    qp_gguf_free(src);
    free(path);
    return rc;
}

static void test_pre_types(void **state)
{
    (void)state;
    char *tmp = NULL;
    qp_tokenizer *t = NULL;
    assert_int_equal(load_with_pre("frobnicate", &t, &tmp), QP_EFORMAT);
    fprintf(stderr, "  %s\n", qp_error_last());
    assert_non_null(strstr(qp_error_last(), "/v.gguf: key 'tokenizer.ggml.pre': pre-tokenizer type 'frobnicate' "
                                            "is unknown"));
    qp_test_rmtree(tmp);
    free(tmp);

    /* absent: llama.cpp's "default" */
    assert_int_equal(load_with_pre(NULL, &t, &tmp), 0);
    assert_string_equal(qp_tokenizer_pre(t), "default");
    qp_tokenizer_free(t);
    qp_test_rmtree(tmp);
    free(tmp);

    /* llama-bpe: ignore_merges, BOS added by default (bos id from the file) */
    assert_int_equal(load_with_pre("llama-bpe", &t, &tmp), 0);
    assert_string_equal(qp_tokenizer_pre(t), "llama-bpe");
    qp_tokenizer_free(t);
    qp_test_rmtree(tmp);
    free(tmp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama_vectors),
        cmocka_unit_test(test_house_qwen_jsonl),
        cmocka_unit_test(test_house_qwen_gguf_matches_json),
        cmocka_unit_test(test_pre_types),
    };
    return cmocka_run_group_tests_name("GGUF vocabularies as llama.cpp", tests, NULL, NULL);
}
