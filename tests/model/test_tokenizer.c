/* Tokenizer tests: the house model's SentencePiece reference ids, the
 * valid.txt token count of reference/perplexity.json, round trips, byte
 * fallback, invalid UTF-8, and malformed tokenizer.model files. */
#include "tests/support/testutil.h"

#include "common/error.h"
#include "common/fsutil.h"
#include "model/tokenizer.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static qp_tokenizer *house;

static int load_house(void **state)
{
    (void)state;
    char *path = qp_test_shared_path("models/house-llama/tokenizer.model");
    int rc = qp_tokenizer_load_spm(&house, path);
    if (rc)
        fprintf(stderr, "load: %s\n", qp_error_last());
    free(path);
    return rc;
}

static int free_house(void **state)
{
    (void)state;
    qp_tokenizer_free(house);
    house = NULL;
    return 0;
}

/* Encodes text (no BOS) and checks the ids, then decodes back. */
static void check_ids(const qp_tokenizer *t, const char *text, size_t len, const int *want, size_t nwant)
{
    int *ids = NULL;
    size_t n = 0;
    assert_int_equal(qp_tokenizer_encode(t, text, len, 0, &ids, &n), 0);
    assert_non_null(ids);
    assert_int_equal(n, nwant);
    for (size_t i = 0; i < n; i++) {
        if (ids[i] != want[i])
            fprintf(stderr, "token %zu: got %d want %d\n", i, ids[i], want[i]);
        assert_int_equal(ids[i], want[i]);
    }
    char *back = NULL;
    size_t blen = 0;
    assert_int_equal(qp_tokenizer_decode(t, ids, n, QP_TOK_DECODE_STRIP_PREFIX, &back, &blen), 0);
    assert_int_equal(blen, len);
    assert_memory_equal(back, text, len);
    free(back);
    free(ids);
}

static void test_house_metadata(void **state)
{
    (void)state;
    assert_int_equal(qp_tokenizer_n_vocab(house), 1024);
    assert_int_equal(qp_tokenizer_unk(house), 0);
    assert_int_equal(qp_tokenizer_bos(house), 1);
    assert_int_equal(qp_tokenizer_eos(house), 2);
    assert_int_equal(qp_tokenizer_pad(house), -1);
    assert_int_equal(qp_tokenizer_has_byte_fallback(house), 1);
    assert_int_equal(qp_tokenizer_add_dummy_prefix(house), 1);
    assert_string_equal(qp_tokenizer_piece(house, 0), "<unk>");
    assert_string_equal(qp_tokenizer_piece(house, 13), "<0x0A>");
    assert_int_equal(qp_tokenizer_type(house, 13), QP_TOK_BYTE);
    assert_int_equal(qp_tokenizer_type(house, 1), QP_TOK_CONTROL);
    assert_string_equal(qp_tokenizer_piece(house, 960), "\xE2\x96\x81");
    assert_true(qp_tokenizer_score(house, 960) == -701.0f);
    assert_int_equal(qp_tokenizer_find(house, "\xE2\x96\x81", 3), 960);
    assert_int_equal(qp_tokenizer_find(house, "zzzz", 4), -1);
    assert_null(qp_tokenizer_piece(house, 1024));
    assert_null(qp_tokenizer_piece(house, -1));
}

static void test_reference_cases(void **state)
{
    (void)state;
    char *path = qp_test_shared_path("models/house-llama/reference/tokenizer_cases.json");
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    assert_non_null(root);
    assert_false(json_is_true(json_object_get(root, "add_bos")));
    json_t *cases = json_object_get(root, "cases");
    assert_true(json_array_size(cases) >= 10);
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c) {
        const char *text = json_string_value(json_object_get(c, "text"));
        size_t len = json_string_length(json_object_get(c, "text"));
        json_t *jids = json_object_get(c, "ids");
        size_t n = json_array_size(jids);
        int *want = malloc((n + 1) * sizeof(*want));
        for (size_t k = 0; k < n; k++)
            want[k] = (int)json_integer_value(json_array_get(jids, k));
        check_ids(house, text, len, want, n);
        free(want);
    }
    json_decref(root);
    free(path);
}

static void test_valid_txt_count(void **state)
{
    (void)state;
    char *ppath = qp_test_shared_path("models/house-llama/reference/perplexity.json");
    json_t *pj = json_load_file(ppath, 0, NULL);
    assert_non_null(pj);
    json_int_t want = json_integer_value(json_object_get(json_object_get(pj, "valid.txt"), "tokens_with_bos"));
    assert_int_equal(want, 52109);

    char *path = qp_test_shared_path("data/shakespeare/valid.txt");
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(qp_read_file(path, &text, &len), 0);
    int *ids = NULL;
    size_t n = 0;
    double t0 = qp_now();
    assert_int_equal(qp_tokenizer_encode(house, text, len, QP_TOK_ADD_BOS, &ids, &n), 0);
    double dt = qp_now() - t0;
    fprintf(stderr, "valid.txt: %zu bytes -> %zu tokens in %.1f ms\n", len, n, dt * 1e3);
    assert_int_equal(n, (size_t)want);
    assert_int_equal(ids[0], 1);
    /* Generous bound (shared 2-core machine, sanitizer builds); the
     * optimised build takes a few ms. */
    assert_true(dt < 2.0);

    /* The reference logits were computed on BOS + the first 255 tokens. */
    /* Round trip of the whole file. */
    char *back = NULL;
    size_t blen = 0;
    assert_int_equal(qp_tokenizer_decode(house, ids, n, QP_TOK_DECODE_STRIP_PREFIX, &back, &blen), 0);
    assert_int_equal(blen, len);
    assert_memory_equal(back, text, len);
    free(back);
    free(ids);
    free(text);
    free(path);
    json_decref(pj);
    free(ppath);
}

/* Id of <0xNN> in the house vocabulary (pieces 3..258). */
static int byte_tok(unsigned b)
{
    char name[8];
    snprintf(name, sizeof(name), "<0x%02X>", b);
    int id = qp_tokenizer_find(house, name, 6);
    assert_int_equal(id, (int)b + 3);
    return id;
}

static void test_byte_fallback(void **state)
{
    (void)state;
    /* "▁" is a piece, "▁東" and "東" are not: 東 = E6 9D B1 goes to bytes. */
    int want1[] = { 960, byte_tok(0xE6), byte_tok(0x9D), byte_tok(0xB1) };
    check_ids(house, "\xE6\x9D\xB1", 3, want1, 4);
    /* 🙂 = F0 9F 99 82 after a word: "▁the" + "▁" + 4 bytes. */
    int the = qp_tokenizer_find(house, "\xE2\x96\x81the", 6);
    assert_true(the >= 0);
    int want2[] = { the, 960, byte_tok(0xF0), byte_tok(0x9F), byte_tok(0x99), byte_tok(0x82) };
    check_ids(house, "the \xF0\x9F\x99\x82", 8, want2, 6);
    /* Newline is not a piece: <0x0A>. */
    int want3[] = { 960, 13 };
    check_ids(house, "\n", 1, want3, 2);
}

static void test_invalid_utf8(void **state)
{
    (void)state;
    int a = qp_tokenizer_find(house, "\xE2\x96\x81" "a", 4);
    int b = qp_tokenizer_find(house, "b", 1);
    assert_true(a >= 0 && b >= 0);
    /* Each invalid byte is its own symbol and falls back to its byte piece:
     * a stray continuation byte, a lone lead byte at the end. */
    int want1[] = { a, byte_tok(0xFF), b, byte_tok(0x80), byte_tok(0xC3) };
    check_ids(house, "a\xFF" "b\x80\xC3", 5, want1, 5);
    /* A truncated 3-byte sequence before ASCII, an overlong '/', a surrogate. */
    int want2[] = { 960, byte_tok(0xE6), byte_tok(0x9D), b,
                    byte_tok(0xC0), byte_tok(0xAF), byte_tok(0xED), byte_tok(0xA0), byte_tok(0x80) };
    check_ids(house, "\xE6\x9D" "b\xC0\xAF\xED\xA0\x80", 8, want2, 9);
    /* A NUL byte in the middle is just a byte. */
    int want3[] = { a, byte_tok(0x00), b };
    check_ids(house, "a\0b", 3, want3, 3);
}

static void test_empty_and_flags(void **state)
{
    (void)state;
    int *ids = NULL;
    size_t n = 99;
    assert_int_equal(qp_tokenizer_encode(house, "", 0, 0, &ids, &n), 0);
    assert_non_null(ids);
    assert_int_equal(n, 0);
    free(ids);
    assert_int_equal(qp_tokenizer_encode(house, NULL, 0, QP_TOK_ADD_BOS | QP_TOK_ADD_EOS, &ids, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[1], 2);
    free(ids);
    assert_int_equal(qp_tokenizer_encode(house, "Hello world", 11, QP_TOK_ADD_BOS, &ids, &n), 0);
    int want[] = { 1, 329, 435, 963, 893 };
    assert_int_equal(n, 5);
    assert_memory_equal(ids, want, sizeof(want));

    /* Decode drops bos/eos, keeps the prefix space unless asked. */
    int with_ctrl[] = { 1, 329, 435, 963, 893, 2 };
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(qp_tokenizer_decode(house, with_ctrl, 6, QP_TOK_DECODE_STRIP_PREFIX, &text, &len), 0);
    assert_string_equal(text, "Hello world");
    free(text);
    assert_int_equal(qp_tokenizer_decode(house, with_ctrl, 6, 0, &text, &len), 0);
    assert_string_equal(text, " Hello world");
    assert_int_equal(len, 12);
    free(text);
    assert_int_equal(qp_tokenizer_decode(house, NULL, 0, 0, &text, &len), 0);
    assert_string_equal(text, "");
    assert_int_equal(len, 0);
    free(text);
    /* unk decodes to sentencepiece's " ⁇ ". */
    int unk[] = { 0 };
    assert_int_equal(qp_tokenizer_decode(house, unk, 1, QP_TOK_DECODE_STRIP_PREFIX, &text, &len), 0);
    assert_string_equal(text, "\xE2\x81\x87 ");
    free(text);
    assert_int_equal(qp_tokenizer_decode(house, unk, 1, 0, &text, &len), 0);
    assert_string_equal(text, " \xE2\x81\x87 ");
    free(text);
    int bad[] = { 329, 1024 };
    assert_int_equal(qp_tokenizer_decode(house, bad, 2, 0, &text, &len), QP_EUSAGE);
    assert_null(text);
    assert_string_equal(qp_error_last(),
                        "tokenizer: token id 1024 at position 1 is out of range (vocabulary of 1024 pieces)");
    free(ids);
}

/* ---- a vocabulary built from arrays ---------------------------------- */

static void test_from_vocab(void **state)
{
    (void)state;
    /* Ties between equal scores go to the leftmost pair: "aaa" -> "aa" "a". */
    const char *pieces[] = { "<unk>", "<s>", "</s>", "a", "aa", "b", "ab", "ba", "\xE2\x96\x81" };
    float scores[] = { 0, 0, 0, -5, -1, -5, -2, -1, -3 };
    int types[] = { 2, 3, 3, 1, 1, 1, 1, 1, 1 };
    qp_tokenizer *t = NULL;
    assert_int_equal(qp_tokenizer_from_vocab(&t, 9, pieces, scores, types, 1, 2, 0, 0), 0);
    assert_int_equal(qp_tokenizer_has_byte_fallback(t), 0);
    int w1[] = { 4, 3 };
    check_ids(t, "aaa", 3, w1, 2);
    /* "aba": ab (-2) vs ba (-1): ba wins -> a ba. */
    int w2[] = { 3, 7 };
    check_ids(t, "aba", 3, w2, 2);
    /* Unknown characters without byte pieces: one unk per run of them. */
    int *ids = NULL;
    size_t n = 0;
    assert_int_equal(qp_tokenizer_encode(t, "axyz b", 6, 0, &ids, &n), 0);
    int w3[] = { 3, 0, 8, 5 };
    assert_int_equal(n, 4);
    assert_memory_equal(ids, w3, sizeof(w3));
    free(ids);
    qp_tokenizer_free(t);

    /* Errors name the array index. */
    const char *dup[] = { "<unk>", "a", "a" };
    assert_int_equal(qp_tokenizer_from_vocab(&t, 3, dup, NULL, NULL, -1, -1, 0, 1), QP_EFORMAT);
    assert_null(t);
    assert_string_equal(qp_error_last(), "tokenizer vocabulary: piece 2 'a' duplicates piece 1");
    assert_int_equal(qp_tokenizer_from_vocab(&t, 3, pieces, NULL, NULL, 1, 2, 0, 1), 0);
    qp_tokenizer_free(t);
    assert_int_equal(qp_tokenizer_from_vocab(&t, 3, pieces, NULL, NULL, 1, 3, 0, 1), QP_EFORMAT);
    assert_string_equal(qp_error_last(), "tokenizer vocabulary: eos id 3 is out of range (3 pieces)");
}

/* UNUSED pieces take part in merges and are then split back, and
 * USER_DEFINED pieces are matched whole before merging. */
static void test_unused_and_user_defined(void **state)
{
    (void)state;
    const char *pieces[] = { "<unk>", "a", "b", "c", "ab", "abc", "<sep>", "<", "s", "e", "p", ">" };
    float scores[] = { 0, -10, -10, -10, -1, -2, 0, -10, -10, -10, -10, -10 };
    int types[] = { 2, 1, 1, 1, 1, 5, 4, 1, 1, 1, 1, 1 };
    qp_tokenizer *t = NULL;
    assert_int_equal(qp_tokenizer_from_vocab(&t, 12, pieces, scores, types, -1, -1, 0, 0), 0);
    /* abc merges ab + c into the UNUSED "abc", which resegments to ab c. */
    int w1[] = { 4, 3 };
    check_ids(t, "abc", 3, w1, 2);
    int w2[] = { 1, 6, 2 };
    check_ids(t, "a<sep>b", 7, w2, 3);
    qp_tokenizer_free(t);
}

/* ---- malformed tokenizer.model files --------------------------------- */

typedef struct {
    unsigned char b[4096];
    size_t n;
} pbuf;

static void put(pbuf *p, const void *d, size_t n)
{
    assert_true(p->n + n <= sizeof(p->b));
    memcpy(p->b + p->n, d, n);
    p->n += n;
}

static void put_varint(pbuf *p, unsigned long long v)
{
    do {
        unsigned char c = (unsigned char)(v & 0x7F);
        v >>= 7;
        if (v)
            c |= 0x80;
        put(p, &c, 1);
    } while (v);
}

static void put_tag(pbuf *p, unsigned field, unsigned wire)
{
    put_varint(p, (unsigned long long)field << 3 | wire);
}

static void put_bytes(pbuf *p, unsigned field, const void *d, size_t n)
{
    put_tag(p, field, 2);
    put_varint(p, n);
    put(p, d, n);
}

/* One SentencePiece message as ModelProto field 1. */
static void put_piece(pbuf *p, const char *piece, float score, int type)
{
    pbuf m = { .n = 0 };
    put_bytes(&m, 1, piece, strlen(piece));
    put_tag(&m, 2, 5);
    put(&m, &score, 4);
    if (type != 1) {
        put_tag(&m, 3, 0);
        put_varint(&m, (unsigned)type);
    }
    put_bytes(p, 1, m.b, m.n);
}

/* trainer_spec {model_type: BPE} and normalizer_spec {add_dummy_prefix: 0}. */
static void put_specs(pbuf *p)
{
    unsigned char trainer[] = { 0x18, 0x02 };
    unsigned char norm[] = { 0x18, 0x00 };
    put_bytes(p, 2, trainer, sizeof(trainer));
    put_bytes(p, 3, norm, sizeof(norm));
}

/* The three special pieces, 16 + 14 + 15 bytes: offsets 0, 16, 30; ends at 45. */
static void put_specials(pbuf *p)
{
    put_piece(p, "<unk>", 0, 2);
    put_piece(p, "<s>", 0, 3);
    put_piece(p, "</s>", 0, 3);
}

static char *tmp;

static int make_tmp(void **state)
{
    (void)state;
    tmp = qp_test_tmpdir();
    return 0;
}

static int rm_tmp(void **state)
{
    (void)state;
    qp_test_rmtree(tmp);
    free(tmp);
    return 0;
}

/* Writes p as a model file and expects loading to fail with exactly
 * "PATH: " + want. */
static void expect_error(const pbuf *p, const char *want)
{
    char *path = qp_path_join(tmp, "tokenizer.model");
    qp_test_write(path, p->b, p->n);
    qp_tokenizer *t = (qp_tokenizer *)1;
    int rc = qp_tokenizer_load_spm(&t, path);
    assert_int_equal(rc, QP_EFORMAT);
    assert_null(t);
    char *full = qp_strfmt("%s: %s", path, want);
    assert_string_equal(qp_error_last(), full);
    free(full);
    free(path);
}

static qp_tokenizer *load_ok(const pbuf *p)
{
    char *path = qp_path_join(tmp, "tokenizer.model");
    qp_test_write(path, p->b, p->n);
    qp_tokenizer *t = NULL;
    int rc = qp_tokenizer_load_spm(&t, path);
    if (rc)
        fprintf(stderr, "%s\n", qp_error_last());
    assert_int_equal(rc, 0);
    free(path);
    return t;
}

static void base_model(pbuf *p)
{
    p->n = 0;
    put_specials(p);
    put_piece(p, "a", -1, 1);   /* offset 45, 10 bytes */
    put_piece(p, "b", -2, 1);   /* offset 55 */
    put_piece(p, "ab", -0.5f, 1);  /* offset 65, 11 bytes */
    put_specs(p);               /* offset 76, 8 bytes: size 84 */
}

static void test_spm_minimal_ok(void **state)
{
    (void)state;
    pbuf p;
    base_model(&p);
    assert_int_equal(p.n, 84);
    qp_tokenizer *t = load_ok(&p);
    assert_int_equal(qp_tokenizer_n_vocab(t), 6);
    assert_int_equal(qp_tokenizer_add_dummy_prefix(t), 0);
    assert_int_equal(qp_tokenizer_has_byte_fallback(t), 0);
    int w[] = { 5, 3 };
    check_ids(t, "aba", 3, w, 2);
    qp_tokenizer_free(t);
}

static void test_spm_skips_unknown_fields(void **state)
{
    (void)state;
    pbuf p;
    base_model(&p);
    /* ModelProto field 9 of every wire type, and a group holding fields. */
    put_tag(&p, 9, 0);
    put_varint(&p, 0xFFFFFFFFFFFFFFFFull);
    put_tag(&p, 9, 1);
    put(&p, "12345678", 8);
    put_bytes(&p, 9, "xyz", 3);
    put_tag(&p, 9, 5);
    put(&p, "1234", 4);
    put_tag(&p, 9, 3);          /* group 9 { 10: 5, group 11 { 12: "q" }, } */
    put_tag(&p, 10, 0);
    put_varint(&p, 5);
    put_tag(&p, 11, 3);
    put_bytes(&p, 12, "q", 1);
    put_tag(&p, 11, 4);
    put_tag(&p, 9, 4);
    /* Unknown fields inside a piece and inside trainer_spec (pad_id -1 as
     * a 10-byte varint, like real files). */
    pbuf m = { .n = 0 };
    put_bytes(&m, 1, "ba", 2);
    put_tag(&m, 7, 0);
    put_varint(&m, 300);
    put_tag(&m, 2, 5);
    float s = -0.25f;
    put(&m, &s, 4);
    put_bytes(&p, 1, m.b, m.n);
    pbuf tr = { .n = 0 };
    put_tag(&tr, 43, 0);
    put_varint(&tr, 0xFFFFFFFFFFFFFFFFull);
    put_bytes(&tr, 1, "/some/input.txt", 15);
    put_bytes(&p, 2, tr.b, tr.n);
    qp_tokenizer *t = load_ok(&p);
    assert_int_equal(qp_tokenizer_n_vocab(t), 7);
    assert_int_equal(qp_tokenizer_pad(t), -1);
    assert_int_equal(qp_tokenizer_find(t, "ba", 2), 6);
    /* "aba": ab (-0.5) is now beaten by ba (-0.25). */
    int w[] = { 3, 6 };
    check_ids(t, "aba", 3, w, 2);
    qp_tokenizer_free(t);
}

static void test_spm_truncated_varint(void **state)
{
    (void)state;
    pbuf p;
    base_model(&p);
    put_tag(&p, 7, 0);          /* offset 84 */
    put(&p, "\xFF\xFF", 2);     /* offset 85: never terminates */
    expect_error(&p, "offset 85: truncated varint");
    /* A truncated tag. */
    base_model(&p);
    put(&p, "\x80", 1);
    expect_error(&p, "offset 84: truncated varint");
    /* Ten bytes whose last one carries bits past 64. */
    base_model(&p);
    put_tag(&p, 7, 0);
    put(&p, "\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\x7F", 10);
    expect_error(&p, "offset 85: varint longer than 64 bits");
}

static void test_spm_length_past_end(void **state)
{
    (void)state;
    pbuf p;
    base_model(&p);
    put_tag(&p, 1, 2);
    put_varint(&p, 100);        /* offset 85 */
    put(&p, "ab", 2);
    expect_error(&p, "offset 85: length 100 runs past the end of the enclosing message (2 bytes left)");
    /* Inside a piece: the string is longer than the piece message. */
    p.n = 0;
    put_specials(&p);
    unsigned char bad[] = { 0x0A, 0x04, 0x0A, 0x05, 'a', 'b', 'c', 'd', 'e', 'f', 'g' };
    put(&p, bad, sizeof(bad));  /* piece at 45, inner length at 48 */
    expect_error(&p, "offset 48: length 5 runs past the end of the enclosing message (2 bytes left)");
    /* A truncated fixed32 score. */
    p.n = 0;
    put_specials(&p);
    unsigned char trunc[] = { 0x0A, 0x05, 0x0A, 0x01, 'a', 0x15, 0x00 };
    put(&p, trunc, sizeof(trunc));
    expect_error(&p, "offset 51: truncated 4-byte fixed field (only 1 left)");
}

static void test_spm_wrong_wire_type(void **state)
{
    (void)state;
    pbuf p;
    p.n = 0;
    put_specials(&p);
    put_tag(&p, 1, 0);
    put_varint(&p, 1);
    expect_error(&p, "offset 45: field 1 (ModelProto.pieces) has wire type 0, expected 2");
    /* score as a varint inside a piece. */
    p.n = 0;
    put_specials(&p);
    unsigned char bad[] = { 0x0A, 0x05, 0x0A, 0x01, 'a', 0x10, 0x01 };
    put(&p, bad, sizeof(bad));
    expect_error(&p, "offset 50: field 2 (SentencePiece.score) has wire type 0, expected 5");
    /* byte_fallback as a string inside trainer_spec. */
    base_model(&p);
    unsigned char tr[] = { 0x9A, 0x02, 0x01, 'x' };   /* field 35, wire 2 */
    put_bytes(&p, 2, tr, sizeof(tr));
    expect_error(&p, "offset 86: field 35 (TrainerSpec.byte_fallback) has wire type 2, expected 0");
    /* Wire types 6 and 7 do not exist; end-group without a group. */
    base_model(&p);
    put_tag(&p, 12, 7);
    expect_error(&p, "offset 84: field 12 has invalid wire type 7");
    base_model(&p);
    put_tag(&p, 12, 4);
    expect_error(&p, "offset 84: end-group tag for field 12 without a group");
    base_model(&p);
    put_tag(&p, 12, 3);
    put_tag(&p, 13, 0);
    put_varint(&p, 1);
    put_tag(&p, 14, 4);
    expect_error(&p, "offset 87: end-group tag for field 14 closes the group of field 12");
    base_model(&p);
    put_tag(&p, 0, 0);
    expect_error(&p, "offset 84: invalid field number 0");
}

static void test_spm_zero_pieces(void **state)
{
    (void)state;
    pbuf p = { .n = 0 };
    put_specs(&p);
    expect_error(&p, "offset 8: the vocabulary has no pieces");
    p.n = 0;
    expect_error(&p, "offset 0: the vocabulary has no pieces");
}

static void test_spm_invalid_utf8_piece(void **state)
{
    (void)state;
    pbuf p;
    p.n = 0;
    put_specials(&p);
    put_piece(&p, "a", -1, 1);
    put_piece(&p, "b\xC3(", -2, 1);  /* offset 55 */
    put_specs(&p);
    expect_error(&p, "offset 55: piece 4 'b\\xC3(' is not valid UTF-8");
}

static void test_spm_duplicate_piece(void **state)
{
    (void)state;
    pbuf p;
    base_model(&p);
    p.n = 76;                   /* drop the specs */
    put_piece(&p, "a", -3, 1);   /* offset 76 */
    put_specs(&p);
    expect_error(&p, "offset 76: piece 6 'a' duplicates piece 3");
}

static void test_spm_missing_unk(void **state)
{
    (void)state;
    pbuf p = { .n = 0 };
    put_piece(&p, "<unk>", 0, 1);   /* NORMAL, not UNKNOWN */
    put_piece(&p, "<s>", 0, 3);
    put_piece(&p, "</s>", 0, 3);
    put_piece(&p, "a", -1, 1);
    put_specs(&p);
    assert_int_equal(p.n, 61);
    expect_error(&p, "offset 61: no piece has type UNKNOWN (exactly one is required)");
    /* unk_id pointing at a different piece. */
    p.n = 0;
    put_specials(&p);
    put_piece(&p, "a", -1, 1);
    put_specs(&p);
    unsigned char tr[] = { 0xC0, 0x02, 0x03 };   /* unk_id = 3 */
    put_bytes(&p, 2, tr, sizeof(tr));
    expect_error(&p, "offset 68: unk id 3 is piece 'a' of type NORMAL, but the UNKNOWN piece is 0");
    /* A second UNKNOWN piece. */
    p.n = 0;
    put_specials(&p);
    put_piece(&p, "<unk2>", 0, 2);   /* offset 45 */
    put_specs(&p);
    expect_error(&p, "offset 45: piece 3 '<unk2>' is a second UNKNOWN piece (the first is piece 0)");
}

static void test_spm_bad_byte_piece(void **state)
{
    (void)state;
    pbuf p;
    p.n = 0;
    put_specials(&p);
    put_piece(&p, "<0x41>", 0, 6);   /* offset 45, 17 bytes */
    put_piece(&p, "<0xzz>", 0, 6);   /* offset 62 */
    put_specs(&p);
    expect_error(&p, "offset 62: BYTE piece 4 '<0xzz>' is not named <0xNN> (two uppercase hex digits)");
    /* byte_fallback without all 256 byte pieces. */
    p.n = 0;
    put_specials(&p);
    put_piece(&p, "<0x00>", 0, 6);
    unsigned char tr[] = { 0x18, 0x02, 0x98, 0x02, 0x01 };   /* model_type BPE, byte_fallback */
    put_bytes(&p, 2, tr, sizeof(tr));                        /* trainer at 62, field 35 at 66 */
    expect_error(&p, "offset 66: byte_fallback is set but there is no BYTE piece <0x01>");
}

static void test_spm_other_errors(void **state)
{
    (void)state;
    pbuf p;
    /* Without trainer_spec the model type is the proto default, UNIGRAM. */
    p.n = 0;
    put_specials(&p);
    expect_error(&p, "offset 45: model_type 1 (UNIGRAM) is not supported; only BPE (2) is");
    p.n = 0;
    put_specials(&p);
    unsigned char uni[] = { 0x18, 0x01 };
    put_bytes(&p, 2, uni, sizeof(uni));
    expect_error(&p, "offset 47: model_type 1 (UNIGRAM) is not supported; only BPE (2) is");
    /* An unknown piece type and an empty piece. */
    p.n = 0;
    put_specials(&p);
    put_piece(&p, "a", 0, 9);
    put_specs(&p);
    expect_error(&p, "offset 45: piece 3 'a' has unknown type 9 (expected 1..6)");
    p.n = 0;
    put_specials(&p);
    put_piece(&p, "", 0, 1);
    put_specs(&p);
    expect_error(&p, "offset 45: piece 3 is empty");

    char *missing = qp_path_join(tmp, "nope.model");
    qp_tokenizer *t = NULL;
    assert_int_equal(qp_tokenizer_load_spm(&t, missing), QP_ENOTFOUND);
    char *want = qp_strfmt("%s: cannot open: No such file or directory", missing);
    assert_string_equal(qp_error_last(), want);
    free(want);
    free(missing);
}

int main(void)
{
    const struct CMUnitTest house_tests[] = {
        cmocka_unit_test(test_house_metadata),
        cmocka_unit_test(test_reference_cases),
        cmocka_unit_test(test_valid_txt_count),
        cmocka_unit_test(test_byte_fallback),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_empty_and_flags),
    };
    const struct CMUnitTest vocab_tests[] = {
        cmocka_unit_test(test_from_vocab),
        cmocka_unit_test(test_unused_and_user_defined),
    };
    const struct CMUnitTest spm_tests[] = {
        cmocka_unit_test(test_spm_minimal_ok),
        cmocka_unit_test(test_spm_skips_unknown_fields),
        cmocka_unit_test(test_spm_truncated_varint),
        cmocka_unit_test(test_spm_length_past_end),
        cmocka_unit_test(test_spm_wrong_wire_type),
        cmocka_unit_test(test_spm_zero_pieces),
        cmocka_unit_test(test_spm_invalid_utf8_piece),
        cmocka_unit_test(test_spm_duplicate_piece),
        cmocka_unit_test(test_spm_missing_unk),
        cmocka_unit_test(test_spm_bad_byte_piece),
        cmocka_unit_test(test_spm_other_errors),
    };
    int failed = cmocka_run_group_tests_name("house tokenizer", house_tests, load_house, free_house);
    failed += cmocka_run_group_tests_name("vocabulary", vocab_tests, NULL, NULL);
    failed += cmocka_run_group_tests_name("tokenizer.model parsing", spm_tests, make_tmp, rm_tmp);
    return failed != 0;
}
