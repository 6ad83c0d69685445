/* Tokenizer tests: the house model's SentencePiece reference ids, the
 * valid.txt token count of reference/perplexity.json, round trips, byte
 * fallback, invalid UTF-8, and malformed tokenizer.model files. */
#include "tests/support/testutil.h"

#include "common/error.h"
#include "common/fsutil.h"
#include "model/gguf.h"
#include "model/safetensors.h"
#include "model/tokenizer.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static qp_tokenizer *house;
static char *tmp;   /* temp dir of the file-parsing group */

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
    /* its speed is a figure of `make bench` (bench_eval), not a test */
    assert_int_equal(qp_tokenizer_encode(house, text, len, QP_TOK_ADD_BOS, &ids, &n), 0);
    fprintf(stderr, "valid.txt: %zu bytes -> %zu tokens\n", len, n);
    assert_int_equal(n, (size_t)want);
    assert_int_equal(ids[0], 1);

    /* The reference logits were computed on BOS + the first 255 tokens. */
    char *lpath = qp_test_shared_path("models/house-llama/reference/logits.safetensors");
    qp_safetensors *st = NULL;
    assert_int_equal(qp_safetensors_open(&st, lpath), 0);
    const qp_tensor_view *tv = qp_safetensors_find(st, "tokens");
    assert_non_null(tv);
    assert_int_equal(tv->dtype, QP_DT_I32);
    assert_int_equal(tv->nelem, 256);
    int32_t ref[256];
    memcpy(ref, tv->data, sizeof(ref));
    for (size_t i = 0; i < 256; i++)
        assert_int_equal(ids[i], ref[i]);
    qp_safetensors_free(st);
    free(lpath);

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

/* QP_TOK_PARSE_SPECIAL: control pieces written in the text become their
 * ids and each stretch between them is encoded on its own (llama.cpp's
 * partition: every stretch gets the dummy prefix); without the flag they
 * are text. */
static void test_parse_special(void **state)
{
    (void)state;
    const char *text = "Hello<s>world</s>";
    int *ids = NULL, *a = NULL, *b = NULL;
    size_t n = 0, na = 0, nb = 0;
    assert_int_equal(qp_tokenizer_encode(house, text, strlen(text), QP_TOK_PARSE_SPECIAL | QP_TOK_ADD_BOS, &ids, &n),
                     0);
    assert_int_equal(qp_tokenizer_encode(house, "Hello", 5, 0, &a, &na), 0);
    assert_int_equal(qp_tokenizer_encode(house, "world", 5, 0, &b, &nb), 0);
    assert_int_equal(n, 1 + na + 1 + nb + 1);
    assert_int_equal(ids[0], 1);
    assert_memory_equal(ids + 1, a, na * sizeof(int));
    assert_int_equal(ids[1 + na], 1);
    assert_memory_equal(ids + 2 + na, b, nb * sizeof(int));
    assert_int_equal(ids[n - 1], 2);
    free(ids);
    assert_int_equal(qp_tokenizer_encode(house, text, strlen(text), 0, &ids, &n), 0);
    for (size_t i = 0; i < n; i++)
        assert_true(qp_tokenizer_type(house, ids[i]) != QP_TOK_CONTROL);
    free(ids);
    free(a);
    free(b);
    /* only specials, and an empty text */
    assert_int_equal(qp_tokenizer_encode(house, "<unk></s>", 9, QP_TOK_PARSE_SPECIAL, &ids, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], 0);
    assert_int_equal(ids[1], 2);
    free(ids);
    assert_int_equal(qp_tokenizer_encode(house, "", 0, QP_TOK_PARSE_SPECIAL, &ids, &n), 0);
    assert_int_equal(n, 0);
    free(ids);
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

/* ---- differential check against a naive quadratic BPE ----------------- */

/* Strict UTF-8 character length, 0 for a byte that starts no character
 * (written independently of the library's). */
static size_t ref_char_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t need = c < 0x80 ? 1 : (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3
                : (c >= 0xF0 && c <= 0xF4) ? 4 : 0;
    if (need == 0 || need > n)
        return 0;
    for (size_t i = 1; i < need; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    unsigned long cp = need == 1 ? c : need == 2 ? c & 0x1F : need == 3 ? c & 0x0F : c & 0x07;
    for (size_t i = 1; i < need; i++)
        cp = cp << 6 | (s[i] & 0x3F);
    static const unsigned long min[5] = { 0, 0, 0x80, 0x800, 0x10000 };
    if (cp < min[need] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return need;
}

/* The textbook loop: rescan every adjacent pair for the best merge
 * (highest score, leftmost), merge, repeat; then ids with byte fallback.
 * Assumes dummy prefix, escaped spaces, byte fallback, no UNUSED or
 * USER_DEFINED pieces (true of both vocabularies it runs on). */
static size_t naive_encode(const qp_tokenizer *t, const char *text, size_t len, int *ids)
{
    char *norm = malloc(3 * len + 4);
    size_t n = 0;
    if (len) {
        memcpy(norm, "\xE2\x96\x81", 3);
        n = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(norm + n, "\xE2\x96\x81", 3);
            n += 3;
        } else {
            norm[n++] = text[i];
        }
    }
    size_t *start = malloc((n + 1) * sizeof(*start)), *slen = malloc((n + 1) * sizeof(*slen));
    size_t ns = 0;
    for (size_t i = 0; i < n;) {
        size_t l = ref_char_len((const unsigned char *)norm + i, n - i);
        if (!l)
            l = 1;
        start[ns] = i;
        slen[ns++] = l;
        i += l;
    }
    for (;;) {
        long best = -1;
        float best_score = 0;
        for (size_t i = 0; i + 1 < ns; i++) {
            int id = qp_tokenizer_find(t, norm + start[i], slen[i] + slen[i + 1]);
            if (id < 0 || qp_tokenizer_type(t, id) != QP_TOK_NORMAL)
                continue;
            if (best < 0 || qp_tokenizer_score(t, id) > best_score) {
                best = (long)i;
                best_score = qp_tokenizer_score(t, id);
            }
        }
        if (best < 0)
            break;
        slen[best] += slen[best + 1];
        memmove(start + best + 1, start + best + 2, (ns - best - 2) * sizeof(*start));
        memmove(slen + best + 1, slen + best + 2, (ns - best - 2) * sizeof(*slen));
        ns--;
    }
    size_t m = 0;
    for (size_t i = 0; i < ns; i++) {
        int id = qp_tokenizer_find(t, norm + start[i], slen[i]);
        if (id >= 0) {
            ids[m++] = id;
            continue;
        }
        for (size_t k = 0; k < slen[i]; k++) {
            char name[8];
            snprintf(name, sizeof(name), "<0x%02X>", (unsigned char)norm[start[i] + k]);
            ids[m++] = qp_tokenizer_find(t, name, 6);
        }
    }
    free(start);
    free(slen);
    free(norm);
    return m;
}

static void compare_with_naive(const qp_tokenizer *t, const char *text, size_t len)
{
    int *want = malloc((3 * len + 4) * sizeof(*want));
    size_t nwant = naive_encode(t, text, len, want);
    check_ids(t, text, len, want, nwant);
    free(want);
}

static void test_matches_naive_bpe(void **state)
{
    (void)state;
    /* Random strings over letters, spaces, newlines, punctuation, accented
     * and CJK characters, an emoji and loose bytes (invalid UTF-8). */
    static const char *atoms[] = {
        "a", "e", "t", "h", "s", "o", "n", "r", "T", "H", "I", " ", " ", " ", "\n", "\t", ",", ".",
        "'", ":", "0", "7", "\xC3\xA9", "\xC3\xAF", "\xE6\x9D\xB1", "\xF0\x9F\x99\x82",
        "\xFF", "\x80", "\xC3", "\xE6\x9D", "\xED\xA0\x80", "the", "and", "ing", "  ",
    };
    const size_t natoms = sizeof(atoms) / sizeof(atoms[0]);
    unsigned long long rng = 0x9E3779B97F4A7C15ull;
    char buf[512];
    for (int iter = 0; iter < 1500; iter++) {
        size_t n = 0;
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        size_t natom = (size_t)(rng >> 33) % 60;
        for (size_t k = 0; k < natom; k++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            const char *a = atoms[(rng >> 33) % natoms];
            size_t l = strlen(a);
            memcpy(buf + n, a, l);
            n += l;
        }
        compare_with_naive(house, buf, n);
    }
    /* Slices of an out-of-domain text (WikiText-2 test). */
    char *path = qp_test_shared_path("data/wikitext-2-raw/wiki.test.raw");
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(qp_read_file(path, &text, &len), 0);
    assert_true(len > 200000);
    for (size_t off = 0; off + 400 <= 200000; off += 5000)
        compare_with_naive(house, text + off, 400);
    free(text);
    free(path);
}

/* ---- GGUF vocabularies ------------------------------------------------ */

static qp_gguf *llama_gguf;
static qp_tokenizer *llama_spm;

static int load_llama_spm(void **state)
{
    (void)state;
    char *path = qp_test_shared_path("vectors/tokenizers/ggml-vocab-llama-spm.gguf");
    int rc = qp_gguf_open(&llama_gguf, path);
    if (!rc)
        rc = qp_tokenizer_load_gguf(&llama_spm, llama_gguf, NULL);
    if (rc)
        fprintf(stderr, "load: %s\n", qp_error_last());
    free(path);
    return rc;
}

static int free_llama_spm(void **state)
{
    (void)state;
    qp_tokenizer_free(llama_spm);
    qp_gguf_free(llama_gguf);
    return 0;
}

static void test_llama_spm_metadata(void **state)
{
    (void)state;
    assert_int_equal(qp_tokenizer_n_vocab(llama_spm), 32000);
    assert_int_equal(qp_tokenizer_bos(llama_spm), 1);
    assert_int_equal(qp_tokenizer_eos(llama_spm), 2);
    assert_int_equal(qp_tokenizer_unk(llama_spm), 0);
    assert_int_equal(qp_tokenizer_pad(llama_spm), -1);
    assert_int_equal(qp_tokenizer_wants_bos(llama_spm), 1);
    assert_int_equal(qp_tokenizer_wants_eos(llama_spm), 0);
    assert_int_equal(qp_tokenizer_has_byte_fallback(llama_spm), 1);
    assert_int_equal(qp_tokenizer_add_dummy_prefix(llama_spm), 1);
    assert_string_equal(qp_tokenizer_piece(llama_spm, 29871), "\xE2\x96\x81");
    assert_int_equal(qp_tokenizer_type(llama_spm, 3), QP_TOK_BYTE);
}

/* llama.cpp's test-tokenizer-0 vectors: inputs end at each
 * "\n__ggml_vocab_test__\n" (text after the last one is ignored); each
 * .out line holds the ids (no BOS), each preceded by a space. */
static void test_llama_spm_vectors(void **state)
{
    (void)state;
    char *ipath = qp_test_shared_path("vectors/tokenizers/ggml-vocab-llama-spm.gguf.inp");
    char *opath = qp_test_shared_path("vectors/tokenizers/ggml-vocab-llama-spm.gguf.out");
    char *inp = NULL, *out = NULL;
    size_t ilen = 0, olen = 0;
    assert_int_equal(qp_read_file(ipath, &inp, &ilen), 0);
    assert_int_equal(qp_read_file(opath, &out, &olen), 0);
    static const char sep[] = "\n__ggml_vocab_test__\n";
    char *pos = inp, *line = out;
    int cases = 0;
    for (;;) {
        char *next = strstr(pos, sep);
        if (!next)
            break;
        char *eol = strchr(line, '\n');
        assert_non_null(eol);
        *eol = '\0';
        int want[1024];
        size_t nwant = 0;
        for (char *p = line, *end; *p; p = end) {
            long v = strtol(p, &end, 10);
            assert_true(end != p);
            assert_true(nwant < 1024);
            want[nwant++] = (int)v;
            while (*end == ' ')
                end++;
        }
        check_ids(llama_spm, pos, (size_t)(next - pos), want, nwant);
        cases++;
        line = eol + 1;
        pos = next + strlen(sep);
    }
    assert_int_equal(cases, 46);
    assert_int_equal(*line, '\0');   /* one output line per input */
    free(inp);
    free(out);
    free(ipath);
    free(opath);
}

static void test_llama_spm_matches_naive(void **state)
{
    (void)state;
    static const char *atoms[] = {
        "a", "e", "t", "h", "s", "o", "n", "r", "T", "I", " ", " ", "\n", "\t", ",", ".", "'", "3",
        "\xC3\xA9", "\xE6\x9D\xB1", "\xE4\xBA\xAC", "\xF0\x9F\x99\x82", "\xD0\xBF", "\xFF", "\xC3",
        "the", "ing", "tion", "  ",
    };
    const size_t natoms = sizeof(atoms) / sizeof(atoms[0]);
    unsigned long long rng = 12345;
    char buf[512];
    for (int iter = 0; iter < 400; iter++) {
        size_t n = 0;
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        size_t natom = (size_t)(rng >> 33) % 50;
        for (size_t k = 0; k < natom; k++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            const char *a = atoms[(rng >> 33) % natoms];
            size_t l = strlen(a);
            memcpy(buf + n, a, l);
            n += l;
        }
        compare_with_naive(llama_spm, buf, n);
    }
}

/* The house model's GGUF (converted by llama.cpp) carries the same
 * vocabulary: both loaders must tokenize valid.txt identically. */
static void test_house_gguf_matches_spm(void **state)
{
    (void)state;
    char *spath = qp_test_shared_path("models/house-llama/tokenizer.model");
    char *gpath = qp_test_shared_path("vectors/house-llama/F32.gguf");
    char *tpath = qp_test_shared_path("data/shakespeare/valid.txt");
    qp_tokenizer *a = NULL, *b = NULL;
    qp_gguf *g = NULL;
    assert_int_equal(qp_tokenizer_load_spm(&a, spath), 0);
    assert_int_equal(qp_gguf_open(&g, gpath), 0);
    assert_int_equal(qp_tokenizer_load_gguf(&b, g, NULL), 0);
    assert_int_equal(qp_tokenizer_n_vocab(b), 1024);
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(qp_read_file(tpath, &text, &len), 0);
    int *ia = NULL, *ib = NULL;
    size_t na = 0, nb = 0;
    assert_int_equal(qp_tokenizer_encode(a, text, len, QP_TOK_ADD_BOS, &ia, &na), 0);
    assert_int_equal(qp_tokenizer_encode(b, text, len, QP_TOK_ADD_BOS, &ib, &nb), 0);
    assert_int_equal(na, 52109);
    assert_int_equal(nb, na);
    assert_memory_equal(ia, ib, na * sizeof(*ia));
    free(ia);
    free(ib);
    free(text);
    qp_tokenizer_free(a);
    qp_tokenizer_free(b);
    qp_gguf_free(g);
    free(spath);
    free(gpath);
    free(tpath);
}

static void test_gguf_not_llama(void **state)
{
    (void)state;
    /* "gpt2" is read since issue #12 (test_tokenizer_gguf.c); WordPiece
     * is still refused */
    char *path = qp_test_shared_path("vectors/tokenizers/ggml-vocab-bert-bge.gguf");
    qp_gguf *g = NULL;
    assert_int_equal(qp_gguf_open(&g, path), 0);
    qp_tokenizer *t = (qp_tokenizer *)1;
    assert_int_equal(qp_tokenizer_load_gguf(&t, g, "bert.gguf"), QP_EFORMAT);
    assert_null(t);
    assert_string_equal(qp_error_last(), "bert.gguf: key 'tokenizer.ggml.model': is 'bert' (WordPiece), which "
                                         "qpipe does not tokenize; only 'llama' (SentencePiece) and 'gpt2' "
                                         "(byte-level BPE) are supported");
    qp_gguf_free(g);
    free(path);
}

/* A GGUF v3 file with no tensors and the given tokenizer metadata. */
typedef struct {
    unsigned char b[4096];
    size_t n;
    unsigned nkv;
} gbuf;

static void g_put(gbuf *g, const void *d, size_t n)
{
    assert_true(g->n + n <= sizeof(g->b));
    memcpy(g->b + g->n, d, n);
    g->n += n;
}

static void g_u32(gbuf *g, uint32_t v) { g_put(g, &v, 4); }
static void g_u64(gbuf *g, uint64_t v) { g_put(g, &v, 8); }
static void g_str(gbuf *g, const char *s) { g_u64(g, strlen(s)); g_put(g, s, strlen(s)); }

static void g_key(gbuf *g, const char *key, uint32_t type)
{
    g_str(g, key);
    g_u32(g, type);
    g->nkv++;
}

static void g_tokens(gbuf *g, size_t n, const char *const *tok)
{
    g_key(g, "tokenizer.ggml.tokens", QP_GGUF_ARRAY);
    g_u32(g, QP_GGUF_STRING);
    g_u64(g, n);
    for (size_t i = 0; i < n; i++)
        g_str(g, tok[i]);
}

static void g_i32s(gbuf *g, const char *key, size_t n, const int32_t *v)
{
    g_key(g, key, QP_GGUF_ARRAY);
    g_u32(g, QP_GGUF_I32);
    g_u64(g, n);
    g_put(g, v, n * 4);
}

/* Writes "GGUF" v3 + the kvs and loads the tokenizer from it. */
static int load_gguf_kvs(const gbuf *kv, qp_tokenizer **t, char **path_out)
{
    gbuf f = { .n = 0 };
    g_put(&f, "GGUF", 4);
    g_u32(&f, 3);
    g_u64(&f, 0);
    g_u64(&f, kv->nkv);
    g_put(&f, kv->b, kv->n);
    char *path = qp_path_join(tmp, "vocab.gguf");
    qp_test_write(path, f.b, f.n);
    qp_gguf *g = NULL;
    int rc = qp_gguf_open(&g, path);
    if (rc)
        fprintf(stderr, "%s\n", qp_error_last());
    assert_int_equal(rc, 0);
    rc = qp_tokenizer_load_gguf(t, g, NULL);
    qp_gguf_free(g);
    *path_out = path;
    return rc;
}

static void expect_gguf_error(const gbuf *kv, const char *want)
{
    qp_tokenizer *t = (qp_tokenizer *)1;
    char *path = NULL;
    int rc = load_gguf_kvs(kv, &t, &path);
    assert_true(rc < 0);
    assert_null(t);
    char *full = qp_strfmt("%s: %s", path, want);
    assert_string_equal(qp_error_last(), full);
    free(full);
    free(path);
}

static void test_gguf_small_vocabularies(void **state)
{
    (void)state;
    static const char *const tok[] = { "<unk>", "<s>", "</s>", "a", "b", "ab", "\xE2\x96\x81" };
    static const int32_t types[] = { 2, 3, 3, 1, 1, 1, 1 };
    gbuf kv = { .n = 0 };
    /* Defaults for every optional key: bos 1, eos 2, unk 0, dummy prefix,
     * all scores 0 (ties go to the leftmost pair). */
    g_key(&kv, "tokenizer.ggml.model", QP_GGUF_STRING);
    g_str(&kv, "llama");
    g_tokens(&kv, 7, tok);
    g_i32s(&kv, "tokenizer.ggml.token_type", 7, types);
    qp_tokenizer *t = NULL;
    char *path = NULL;
    assert_int_equal(load_gguf_kvs(&kv, &t, &path), 0);
    free(path);
    assert_int_equal(qp_tokenizer_bos(t), 1);
    assert_int_equal(qp_tokenizer_eos(t), 2);
    assert_int_equal(qp_tokenizer_wants_bos(t), 1);
    assert_int_equal(qp_tokenizer_add_dummy_prefix(t), 1);
    int w1[] = { 6, 5, 3 };
    check_ids(t, "aba", 3, w1, 3);
    qp_tokenizer_free(t);

    /* add_space_prefix false, add_bos false, bos absent (u32 0xFFFFFFFF). */
    gbuf kv2 = kv;
    g_key(&kv2, "tokenizer.ggml.add_space_prefix", QP_GGUF_BOOL);
    g_put(&kv2, "\0", 1);
    g_key(&kv2, "tokenizer.ggml.bos_token_id", QP_GGUF_U32);
    g_u32(&kv2, 0xFFFFFFFFu);
    assert_int_equal(load_gguf_kvs(&kv2, &t, &path), 0);
    free(path);
    assert_int_equal(qp_tokenizer_bos(t), -1);
    assert_int_equal(qp_tokenizer_wants_bos(t), 0);
    int w2[] = { 5, 3 };
    check_ids(t, "aba", 3, w2, 2);
    qp_tokenizer_free(t);

    /* Scores array of the wrong length. */
    gbuf kv3 = kv;
    g_key(&kv3, "tokenizer.ggml.scores", QP_GGUF_ARRAY);
    g_u32(&kv3, QP_GGUF_F32);
    g_u64(&kv3, 2);
    g_put(&kv3, "\0\0\0\0\0\0\0\0", 8);
    expect_gguf_error(&kv3, "key 'tokenizer.ggml.scores': has 2 entries but tokenizer.ggml.tokens has 7");

    /* Duplicate token; bad byte token; no tokens at all. */
    static const char *const dup[] = { "<unk>", "a", "a" };
    gbuf kv4 = { .n = 0 };
    g_key(&kv4, "tokenizer.ggml.model", QP_GGUF_STRING);
    g_str(&kv4, "llama");
    gbuf kv5 = kv4, kv6 = kv4;
    g_tokens(&kv4, 3, dup);
    expect_gguf_error(&kv4, "tokenizer.ggml.tokens[2]: piece 2 'a' duplicates piece 1");
    static const char *const bytes[] = { "<unk>", "<0x0g>" };
    static const int32_t btypes[] = { 2, 6 };
    g_tokens(&kv5, 2, bytes);
    g_i32s(&kv5, "tokenizer.ggml.token_type", 2, btypes);
    expect_gguf_error(&kv5, "tokenizer.ggml.tokens[1]: BYTE piece 1 '<0x0g>' is not named <0xNN> "
                            "(two uppercase hex digits)");
    expect_gguf_error(&kv6, "key 'tokenizer.ggml.tokens': missing");
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

/* normalizer_spec present but empty: the proto defaults add the dummy
 * prefix and squeeze/trim spaces. */
static void test_spm_normalizer_defaults(void **state)
{
    (void)state;
    pbuf p = { .n = 0 };
    put_specials(&p);
    put_piece(&p, "a", -1, 1);
    put_piece(&p, "b", -2, 1);
    put_piece(&p, "\xE2\x96\x81", -3, 1);
    put_piece(&p, "\xE2\x96\x81" "a", -0.5f, 1);
    unsigned char trainer[] = { 0x18, 0x02 };
    put_bytes(&p, 2, trainer, sizeof(trainer));
    put_bytes(&p, 3, "", 0);
    qp_tokenizer *t = load_ok(&p);
    assert_int_equal(qp_tokenizer_add_dummy_prefix(t), 1);
    int *ids = NULL;
    size_t n = 0;
    assert_int_equal(qp_tokenizer_encode(t, "  a   b ", 8, 0, &ids, &n), 0);
    int want[] = { 6, 5, 4 };   /* "▁a" "▁" "b" */
    assert_int_equal(n, 3);
    assert_memory_equal(ids, want, sizeof(want));
    free(ids);
    assert_int_equal(qp_tokenizer_encode(t, "   ", 3, 0, &ids, &n), 0);
    assert_int_equal(n, 0);
    free(ids);
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

/* Every truncation and many single-byte corruptions of the real model
 * either load or fail with one "PATH: offset N: ..." line; never crash. */
static void test_spm_corruptions(void **state)
{
    (void)state;
    char *src = qp_test_shared_path("models/house-llama/tokenizer.model");
    char *orig = NULL;
    size_t len = 0;
    assert_int_equal(qp_read_file(src, &orig, &len), 0);
    char *path = qp_path_join(tmp, "corrupt.model");
    char *prefix = qp_strfmt("%s: offset ", path);
    char *buf = malloc(len);
    unsigned long long rng = 42;
    int loaded = 0, failed = 0;
    for (size_t i = 0; i < 1200; i++) {
        size_t n = len;
        memcpy(buf, orig, len);
        if (i < 600) {
            n = (i * 7919) % len;            /* truncation */
        } else {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            size_t at = (size_t)(rng >> 33) % len;
            buf[at] = (char)(rng >> 25);     /* one byte replaced */
        }
        qp_test_write(path, buf, n);
        qp_tokenizer *t = NULL;
        int rc = qp_tokenizer_load_spm(&t, path);
        if (rc == 0) {
            loaded++;
            int *ids = NULL;
            size_t nids = 0;
            assert_int_equal(qp_tokenizer_encode(t, "Hello world", 11, 0, &ids, &nids), 0);
            free(ids);
            qp_tokenizer_free(t);
            continue;
        }
        failed++;
        assert_int_equal(rc, QP_EFORMAT);
        assert_null(t);
        const char *msg = qp_error_last();
        assert_memory_equal(msg, prefix, strlen(prefix));
        assert_null(strchr(msg, '\n'));
    }
    assert_true(failed > 600);
    assert_true(loaded > 0);
    free(buf);
    free(prefix);
    free(path);
    free(orig);
    free(src);
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
        cmocka_unit_test(test_parse_special),
        cmocka_unit_test(test_matches_naive_bpe),
    };
    const struct CMUnitTest gguf_tests[] = {
        cmocka_unit_test(test_llama_spm_metadata),
        cmocka_unit_test(test_llama_spm_vectors),
        cmocka_unit_test(test_llama_spm_matches_naive),
        cmocka_unit_test(test_house_gguf_matches_spm),
        cmocka_unit_test(test_gguf_not_llama),
    };
    const struct CMUnitTest vocab_tests[] = {
        cmocka_unit_test(test_from_vocab),
        cmocka_unit_test(test_unused_and_user_defined),
    };
    const struct CMUnitTest spm_tests[] = {
        cmocka_unit_test(test_spm_minimal_ok),
        cmocka_unit_test(test_spm_normalizer_defaults),
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
        cmocka_unit_test(test_spm_corruptions),
        cmocka_unit_test(test_gguf_small_vocabularies),
    };
    int failed = cmocka_run_group_tests_name("house tokenizer", house_tests, load_house, free_house);
    failed += cmocka_run_group_tests_name("GGUF vocabularies", gguf_tests, load_llama_spm, free_llama_spm);
    failed += cmocka_run_group_tests_name("vocabulary", vocab_tests, NULL, NULL);
    failed += cmocka_run_group_tests_name("tokenizer.model parsing", spm_tests, make_tmp, rm_tmp);
    return failed != 0;
}
