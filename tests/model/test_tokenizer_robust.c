/* Hostile input for the BPE tokenizers: truncated, byte-mutated and
 * structurally mutated tokenizer.json files must load or fail with one
 * QP_EFORMAT line, never crash; random bytes (invalid UTF-8 included)
 * encode and decode; valid text round-trips (NFC for tokenizer.json, as is
 * for the GGUF vocabulary); encoding valid.txt takes well under a second.
 * Deterministic: one seed (tests/support's SplitMix64). */
#include "tests/support/testutil.h"

#include "common/buf.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "model/gguf.h"
#include "model/tokenizer.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

static char *qwen_json;
static size_t qwen_len;

static int setup(void **state)
{
    (void)state;
    char *path = qp_test_shared_path("models/house-qwen/tokenizer.json");
    int rc = qp_read_file(path, &qwen_json, &qwen_len);
    free(path);
    qp_test_seed(20260412);
    return rc;
}

static int teardown(void **state)
{
    (void)state;
    free(qwen_json);
    return 0;
}

/* Random bytes: mostly ASCII, some multi-byte characters, some invalid
 * (the last three pieces; none when valid). */
static size_t random_text_of(char *buf, size_t cap, int valid)
{
    static const char *const pieces[] = {
        " ", "  ", "\n", "\r\n", "\t", "a", "Z", "7", "'s", "'LL", "!", "...", "\xC3\xA9", "e\xCC\x81",
        "\xE4\xB8\xAD", "\xF0\x9F\xA6\x99", "<|im_end|>", "<|endoftext|>", "<s>",
        "\xE2\x80\x8B", "\xC2\x85", "\xE3\x80\x80", "\xD9\xA3", "\0", "\xFF", "\xC3", "\xED\xA0\x80",
    };
    size_t npieces = sizeof(pieces) / sizeof(pieces[0]) - (valid ? 3 : 0);
    size_t n = 0, want = (size_t)qp_test_below(cap / 4);
    while (n < want) {
        const char *p = pieces[qp_test_below(npieces)];
        size_t l = p[0] ? strlen(p) : 1;
        if (n + l > cap)
            break;
        memcpy(buf + n, p, l);
        n += l;
    }
    return n;
}

static size_t random_text(char *buf, size_t cap)
{
    return random_text_of(buf, cap, 0);
}

/* Encodes and decodes a few random texts (must not crash; ids in range). */
static void exercise(const qp_tokenizer *t)
{
    char text[512];
    for (int k = 0; k < 4; k++) {
        size_t n = random_text(text, sizeof(text));
        for (unsigned flags = 0; flags <= QP_TOK_PARSE_SPECIAL; flags += QP_TOK_PARSE_SPECIAL) {
            int *ids = NULL;
            size_t ni = 0;
            assert_int_equal(qp_tokenizer_encode(t, text, n, flags | QP_TOK_ADD_BOS | QP_TOK_ADD_EOS, &ids, &ni), 0);
            for (size_t i = 0; i < ni; i++)
                assert_true(ids[i] >= 0 && (size_t)ids[i] < qp_tokenizer_n_vocab(t));
            char *back = NULL;
            size_t bl = 0;
            assert_int_equal(qp_tokenizer_decode(t, ids, ni, 0, &back, &bl), 0);
            free(back);
            free(ids);
        }
    }
}

/* Loads bytes as a tokenizer.json: 0 (then exercised) or one QP_EFORMAT
 * line naming the file. */
static int try_load(const char *json, size_t len)
{
    qp_tokenizer *t = NULL;
    int rc = qp_tokenizer_load_hf(&t, json, len, NULL, 0, "fuzz/tokenizer.json");
    if (rc == 0) {
        assert_non_null(t);
        exercise(t);
        qp_tokenizer_free(t);
        return 0;
    }
    assert_int_equal(rc, QP_EFORMAT);
    assert_null(t);
    const char *msg = qp_error_last();
    assert_true(strncmp(msg, "fuzz/tokenizer.json: ", 21) == 0);
    assert_null(strchr(msg, '\n'));
    return rc;
}

static void test_truncated(void **state)
{
    (void)state;
    int refused = 0, tried = 0;
    /* every prefix near both ends, and 300 spread over the file */
    for (size_t cut = 0; cut < qwen_len; cut++) {
        int near = cut < 400 || qwen_len - cut < 400;
        if (!near && qp_test_below(qwen_len / 300) != 0)
            continue;
        tried++;
        refused += try_load(qwen_json, cut) != 0;
    }
    fprintf(stderr, "truncated tokenizer.json: %d prefixes, %d refused\n", tried, refused);
    assert_int_equal(refused, tried);   /* no prefix is a whole JSON object */
}

static void test_byte_mutations(void **state)
{
    (void)state;
    static const char alphabet[] = "\"{}[],:0123456789-.eE\\ ntfaulr\x01\xFF\xC3";
    char *buf = malloc(qwen_len);
    int loaded = 0;
    for (int k = 0; k < 300; k++) {
        memcpy(buf, qwen_json, qwen_len);
        int edits = 1 + (int)qp_test_below(6);
        for (int e = 0; e < edits; e++) {
            /* half the edits hit the small head (added tokens, normalizer,
             * pre-tokenizer, decoder), the rest anywhere */
            size_t at = qp_test_below(2) ? qp_test_below(2500) : qp_test_below(qwen_len);
            buf[at] = alphabet[qp_test_below(sizeof(alphabet) - 1)];
        }
        loaded += try_load(buf, qwen_len) == 0;
    }
    fprintf(stderr, "byte-mutated tokenizer.json: 300 variants, %d still load\n", loaded);
    free(buf);
}

/* A random JSON value of any type. */
static json_t *random_value(void)
{
    switch (qp_test_below(10)) {
    case 0: return json_null();
    case 1: return json_integer(-1);
    case 2: return json_integer((json_int_t)1 << 40);
    case 3: return json_string("");
    case 4: return json_string("(unclosed");
    case 5: return json_array();
    case 6: return json_object();
    case 7: return json_true();
    case 8: return json_real(0.5);
    default: return json_string("\xE2\x96\x81");
    }
}

/* Replaces or deletes one random member / element somewhere in v. */
static void mutate(json_t *v, int depth)
{
    if (json_is_object(v) && json_object_size(v) > 0) {
        size_t pick = qp_test_below(json_object_size(v)), i = 0;
        const char *key;
        json_t *child;
        json_object_foreach(v, key, child) {
            if (i++ != pick)
                continue;
            if (depth < 6 && (json_is_object(child) || json_is_array(child)) && qp_test_below(3))
                mutate(child, depth + 1);
            else if (qp_test_below(3) == 0)
                json_object_del(v, key);
            else
                json_object_set_new(v, key, random_value());
            return;
        }
    } else if (json_is_array(v) && json_array_size(v) > 0) {
        size_t i = qp_test_below(json_array_size(v));
        json_t *child = json_array_get(v, i);
        if (depth < 6 && (json_is_object(child) || json_is_array(child)) && qp_test_below(3))
            mutate(child, depth + 1);
        else if (qp_test_below(3) == 0)
            json_array_remove(v, i);
        else
            json_array_set_new(v, i, random_value());
    }
}

/* A small file using every pipeline part. */
static const char *small_json =
    "{\"added_tokens\":[{\"id\":9,\"content\":\"<s>\",\"special\":true,\"lstrip\":true},"
    "{\"id\":10,\"content\":\"xy\",\"single_word\":true,\"rstrip\":true,\"normalized\":true}],"
    "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFC\"},{\"type\":\"Prepend\","
    "\"prepend\":\"\xE2\x96\x81\"},{\"type\":\"Replace\",\"pattern\":{\"Regex\":\" +\"},\"content\":\" \"}]},"
    "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
    "\"\\\\p{L}+|\\\\s+\"},\"behavior\":\"MergedWithNext\",\"invert\":false},{\"type\":\"Digits\","
    "\"individual_digits\":true},{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\",\"prepend_scheme\":"
    "\"first\",\"split\":true},{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"use_regex\":true}]},"
    "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"ByteLevel\"},{\"type\":\"Replace\",\"pattern\":"
    "{\"String\":\"a\"},\"content\":\"b\"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\","
    "\"content\":\" \",\"start\":1,\"stop\":1},{\"type\":\"Metaspace\"}]},"
    "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"fuse_unk\":true,\"byte_fallback\":false,"
    "\"ignore_merges\":true,\"vocab\":{\"<unk>\":0,\"a\":1,\"b\":2,\"ab\":3,\"\xC4\xA0\":4,\"\xC4\xA0" "a\":5,"
    "\"1\":6,\"\xE2\x96\x81\":7,\"\xC4\xA0\xC4\xA0\":8},\"merges\":[[\"a\",\"b\"],[\"\xC4\xA0\",\"a\"],[\"\xC4\xA0\",\"\xC4\xA0\"]]}}";

static void test_structural_mutations(void **state)
{
    (void)state;
    /* the base loads and works */
    int rc = try_load(small_json, strlen(small_json));
    if (rc)
        fprintf(stderr, "%s\n", qp_error_last());
    assert_int_equal(rc, 0);
    json_t *base = json_loads(small_json, 0, NULL);
    assert_non_null(base);
    json_t *qbase = json_loadb(qwen_json, qwen_len, 0, NULL);
    assert_non_null(qbase);
    int loaded = 0;
    for (int k = 0; k < 400; k++) {
        json_t *v = json_deep_copy(k % 4 == 3 ? qbase : base);
        int edits = 1 + (int)qp_test_below(3);
        for (int e = 0; e < edits; e++)
            mutate(v, 0);
        char *s = json_dumps(v, JSON_COMPACT);
        assert_non_null(s);
        loaded += try_load(s, strlen(s)) == 0;
        free(s);
        json_decref(v);
    }
    fprintf(stderr, "structurally mutated tokenizer.json: 400 variants, %d still load\n", loaded);
    json_decref(base);
    json_decref(qbase);
}

/* Random valid text round-trips: NFC(x) through tokenizer.json, x through
 * the GGUF vocabulary; random bytes at least encode and decode. */
static void test_random_texts(void **state)
{
    (void)state;
    qp_tokenizer *h = NULL, *g = NULL;
    qp_gguf *gg = NULL;
    char *dir = qp_test_shared_path("models/house-qwen");
    char *gpath = qp_test_shared_path("vectors/house-qwen/F32.gguf");
    assert_int_equal(qp_tokenizer_load_dir(&h, dir), 0);
    assert_int_equal(qp_gguf_open(&gg, gpath), 0);
    assert_int_equal(qp_tokenizer_load_gguf(&g, gg, NULL), 0);
    char text[2048];
    int valid = 0;
    for (int k = 0; k < 500; k++) {
        size_t n = random_text_of(text, sizeof(text), k % 5 != 0);
        exercise(h);
        exercise(g);
        utf8proc_uint8_t *nfc = NULL;
        utf8proc_ssize_t nl = utf8proc_map((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)n, &nfc,
                                           UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        if (nl < 0 || n == 0) {   /* not valid UTF-8, or empty */
            free(nfc);
            continue;
        }
        valid++;
        for (int which = 0; which < 2; which++) {
            const qp_tokenizer *t = which ? g : h;
            int *ids = NULL;
            size_t ni = 0;
            assert_int_equal(qp_tokenizer_encode(t, text, n, QP_TOK_PARSE_SPECIAL, &ids, &ni), 0);
            char *back = NULL;
            size_t bl = 0;
            assert_int_equal(qp_tokenizer_decode(t, ids, ni, 0, &back, &bl), 0);
            const char *want = which ? text : (const char *)nfc;
            size_t wl = which ? n : (size_t)nl;
            assert_int_equal(bl, wl);
            assert_memory_equal(back, want, wl);
            free(back);
            free(ids);
        }
        free(nfc);
    }
    fprintf(stderr, "random texts: 500, %d valid UTF-8 round-tripped through both vocabularies\n", valid);
    qp_tokenizer_free(h);
    qp_tokenizer_free(g);
    qp_gguf_free(gg);
    free(dir);
    free(gpath);
}

/* valid.txt (~110 KB) encodes in well under a second (CPU time). */
static void test_speed(void **state)
{
    (void)state;
    qp_tokenizer *h = NULL;
    char *dir = qp_test_shared_path("models/house-qwen");
    char *vpath = qp_test_shared_path("data/shakespeare/valid.txt");
    assert_int_equal(qp_tokenizer_load_dir(&h, dir), 0);
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(qp_read_file(vpath, &text, &len), 0);
    clock_t c0 = clock();
    int *ids = NULL;
    size_t n = 0;
    for (int r = 0; r < 5; r++) {
        free(ids);
        assert_int_equal(qp_tokenizer_encode(h, text, len, 0, &ids, &n), 0);
    }
    double secs = (double)(clock() - c0) / CLOCKS_PER_SEC / 5;
    fprintf(stderr, "valid.txt: %zu bytes -> %zu tokens, %.4f s CPU per encode\n", len, n, secs);
    assert_true(secs < 0.5);
    free(ids);
    free(text);
    free(vpath);
    free(dir);
    qp_tokenizer_free(h);
}

/* 256 added tokens sharing a long prefix (as Llama 3's reserved specials
 * do) and 4 MiB of that prefix repeated: finding the specials stays
 * linear (a byte trie, one step per byte of the longest content). */
static void test_many_specials(void **state)
{
    (void)state;
    qp_buf j = QP_BUF_INIT;
    qp_buf_puts(&j, "{\"added_tokens\":[");
    for (int i = 0; i < 256; i++)
        qp_buf_printf(&j, "%s{\"id\":%d,\"content\":\"<|reserved_special_token_%d|>\",\"special\":true,"
                      "\"normalized\":false}", i ? "," : "", 100 + i, i);
    qp_buf_puts(&j, "],\"model\":{\"type\":\"BPE\",\"vocab\":{");
    const char *alpha = "<|>_abcdefghijklmnopqrstuvwxyz0123456789";
    for (size_t i = 0; alpha[i]; i++)
        qp_buf_printf(&j, "%s\"%c\":%zu", i ? "," : "", alpha[i], i);
    qp_buf_puts(&j, "},\"merges\":[]}}");
    qp_tokenizer *t = NULL;
    assert_int_equal(qp_tokenizer_load_hf(&t, j.data, j.len, NULL, 0, "many/tokenizer.json"), 0);
    qp_buf text = QP_BUF_INIT;
    while (text.len < ((size_t)4 << 20))
        qp_buf_puts(&text, "<|reserved_special_token_");
    qp_buf_puts(&text, "<|reserved_special_token_255|>");
    clock_t c0 = clock();
    int *ids = NULL;
    size_t n = 0;
    assert_int_equal(qp_tokenizer_encode(t, text.data, text.len, QP_TOK_PARSE_SPECIAL, &ids, &n), 0);
    double secs = (double)(clock() - c0) / CLOCKS_PER_SEC;
    fprintf(stderr, "4 MiB of a special's prefix: %zu ids in %.3f s CPU\n", n, secs);
    assert_int_equal(n, text.len - 30 + 1);
    assert_int_equal(ids[n - 1], 355);
    assert_true(secs < 2.0);
    free(ids);
    qp_buf_free(&text);
    qp_buf_free(&j);
    qp_tokenizer_free(t);
}

/* Found by make fuzz (tests/fuzz/regress/hf_tokenizer/): a 70 KB file whose
 * vocabulary names id 12.7 M built a 12.7 M-piece vocabulary of padding.
 * Gaps up to 65536 ids are padded as convert_hf_to_gguf.py pads them;
 * more is refused with one line. */
static void test_sparse_ids(void **state)
{
    (void)state;
    static const long top[] = {10 + 65536 - 1, 10 + 65536};
    for (int k = 0; k < 2; k++) {
        qp_buf j = QP_BUF_INIT;
        qp_buf_printf(&j, "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"c\":2,\"d\":3,\"e\":4,"
                      "\"f\":5,\"g\":6,\"h\":7,\"i\":8,\"j\":%ld},\"merges\":[]}}", top[k]);
        qp_tokenizer *t = NULL;
        int rc = qp_tokenizer_load_hf(&t, j.data, j.len, NULL, 0, "sparse/tokenizer.json");
        if (k == 0) {
            assert_int_equal(rc, 0);
            assert_int_equal(qp_tokenizer_n_vocab(t), (size_t)top[k] + 1);
        } else {
            assert_int_equal(rc, QP_EFORMAT);
            assert_string_equal(qp_error_last(), "sparse/tokenizer.json: ids reach 65546 but only 10 are named: more "
                                "than 65536 ids would have no piece (model.vocab and added_tokens must number the "
                                "vocabulary densely)");
        }
        qp_tokenizer_free(t);
        qp_buf_free(&j);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_byte_mutations),
        cmocka_unit_test(test_structural_mutations),
        cmocka_unit_test(test_random_texts),
        cmocka_unit_test(test_speed),
        cmocka_unit_test(test_many_specials),
        cmocka_unit_test(test_sparse_ids),
    };
    return cmocka_run_group_tests_name("tokenizer robustness", tests, setup, teardown);
}
