/* The tokenizer.json pipeline pieces on the examples the Hugging Face
 * tokenizers library documents and tests them with (Split behaviours,
 * Whitespace, Digits, Metaspace, ByteLevel, normalizers), and small
 * tokenizer.json files exercising what house-qwen does not: Metaspace /
 * byte-fallback models (Llama 2 style), merges as pairs, ignore_merges,
 * added tokens with lstrip / rstrip / single_word, and the decoders. */
#include "tests/support/testutil.h"

#include "common/buf.h"
#include "common/error.h"
#include "model/tokenizer.h"
#include "model/tokenizer_pipe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- pre-tokenizers on their own ------------------------------------------ */

static char space_sym[] = "\xE2\x96\x81";   /* U+2581 */
static char dash[] = "-", blank[] = " ";

typedef struct {
    qp_buf all;   /* words joined by '|' */
} collect_t;

static void collect(void *ud, const char *p, size_t n, int origin)
{
    (void)origin;
    collect_t *c = ud;
    if (c->all.len)
        qp_buf_putc(&c->all, '|');
    qp_buf_append(&c->all, p, n);
}

/* Runs one pre-tokenizer over text and compares the words joined by '|'. */
static void check_pre(const qp_pretok *p, const char *text, int origin, const char *want)
{
    collect_t c = { QP_BUF_INIT };
    qp_buf a = QP_BUF_INIT, b = QP_BUF_INIT;
    qp_pretokenize(p, text, strlen(text), origin, &a, &b, collect, &c);
    if (strcmp(qp_buf_cstr(&c.all), want) != 0)
        fprintf(stderr, "'%s': got '%s' want '%s'\n", text, qp_buf_cstr(&c.all), want);
    assert_string_equal(qp_buf_cstr(&c.all), want);
    qp_buf_free(&c.all);
    qp_buf_free(&a);
    qp_buf_free(&b);
}

static void test_split_behaviors(void **state)
{
    (void)state;
    qp_pretok p = { .kind = QP_PRE_SPLIT, .pat = { .lit = dash, .lit_len = 1 } };
    static const struct { qp_split_behavior b; const char *want; } cases[] = {
        {QP_SPLIT_REMOVED, "the|final|countdown"},
        {QP_SPLIT_ISOLATED, "the|-|final|-|-|countdown"},
        {QP_SPLIT_MERGED_PREV, "the-|final-|-|countdown"},
        {QP_SPLIT_MERGED_NEXT, "the|-final|-|-countdown"},
        {QP_SPLIT_CONTIGUOUS, "the|-|final|--|countdown"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        p.behavior = cases[i].b;
        check_pre(&p, "the-final--countdown", 1, cases[i].want);
    }
    /* matches at both ends */
    p.behavior = QP_SPLIT_MERGED_NEXT;
    check_pre(&p, "-a-", 1, "-a|-");
    p.behavior = QP_SPLIT_MERGED_PREV;
    check_pre(&p, "-a-", 1, "-|a-");

    /* invert: the matches are the words (tokenizers' Whitespace) */
    qp_pretok w = { .kind = QP_PRE_SPLIT, .behavior = QP_SPLIT_REMOVED, .invert = 1 };
    const char *re = "\\w+|[^\\w\\s]+";
    assert_int_equal(qp_regex_compile(&w.pat.re, re, strlen(re), QP_RE_ONIG, "test", "re"), 0);
    check_pre(&w, "Hey friend!     How are you?!?", 1, "Hey|friend|!|How|are|you|?!?");
    qp_pattern_free(&w.pat);

    /* Punctuation (each punctuation character a match, Isolated) through a
     * file, as tokenizers' own test has it */
    const char *pj = "{\"pre_tokenizer\":{\"type\":\"Punctuation\"%s},\"model\":{\"type\":\"BPE\","
                     "\"vocab\":{\"a\":0,\"!\":1,\"a!\":2,\"!!\":3},\"merges\":[\"a !\",\"! !\"]}}";
    static const struct { const char *beh; int ids[4]; size_t n; } pc[] = {
        {"", {0, 1, 1}, 3},                                   /* Isolated: a | ! | ! */
        {",\"behavior\":\"Contiguous\"", {0, 3}, 2},          /* a | !! */
        {",\"behavior\":\"MergedWithPrevious\"", {2, 1}, 2},  /* a! | ! */
    };
    for (size_t k = 0; k < sizeof(pc) / sizeof(pc[0]); k++) {
        char js[512];
        snprintf(js, sizeof(js), pj, pc[k].beh);
        qp_tokenizer *t = NULL;
        assert_int_equal(qp_tokenizer_load_hf(&t, js, strlen(js), NULL, 0, "p"), 0);
        assert_null(qp_tokenizer_pre(t));
        int *ids = NULL;
        size_t n = 0;
        assert_int_equal(qp_tokenizer_encode(t, "a!!", 3, 0, &ids, &n), 0);
        assert_int_equal(n, pc[k].n);
        assert_memory_equal(ids, pc[k].ids, n * sizeof(int));
        free(ids);
        qp_tokenizer_free(t);
    }
}

static void test_digits_metaspace_bytelevel(void **state)
{
    (void)state;
    qp_pretok d = { .kind = QP_PRE_DIGITS, .behavior = QP_SPLIT_ISOLATED };
    assert_int_equal(qp_regex_compile(&d.pat.re, "\\p{N}", 5, QP_RE_ONIG, "test", "re"), 0);
    check_pre(&d, "Hey 123 friend!", 1, "Hey |1|2|3| friend!");
    d.behavior = QP_SPLIT_CONTIGUOUS;
    check_pre(&d, "Hey 123 friend!", 1, "Hey |123| friend!");
    check_pre(&d, "\xD9\xA3\xD9\xA4x", 1, "\xD9\xA3\xD9\xA4|x");   /* Arabic-Indic digits are \p{N} */
    qp_pattern_free(&d.pat);

    qp_pretok m = { .kind = QP_PRE_METASPACE, .repl = space_sym, .repl_len = 3, .prepend = QP_PREPEND_ALWAYS,
                    .split = 1 };
    check_pre(&m, "Hey friend!", 1, "\xE2\x96\x81Hey|\xE2\x96\x81" "friend!");
    check_pre(&m, "Hey   friend!", 1, "\xE2\x96\x81Hey|\xE2\x96\x81|\xE2\x96\x81|\xE2\x96\x81" "friend!");
    m.prepend = QP_PREPEND_FIRST;
    check_pre(&m, "Hey friend!", 1, "\xE2\x96\x81Hey|\xE2\x96\x81" "friend!");
    check_pre(&m, "Hey friend!", 0, "Hey|\xE2\x96\x81" "friend!");
    m.prepend = QP_PREPEND_NEVER;
    m.split = 0;
    check_pre(&m, "Hey friend!", 1, "Hey\xE2\x96\x81" "friend!");

    qp_pretok b = { .kind = QP_PRE_BYTELEVEL, .add_prefix_space = 1 };
    const char *gpt2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
    assert_int_equal(qp_regex_compile(&b.pat.re, gpt2, strlen(gpt2), QP_RE_ONIG, "test", "re"), 0);
    check_pre(&b, "Hello my friend, how is your day going?", 1,
              "\xC4\xA0Hello|\xC4\xA0my|\xC4\xA0" "friend|,|\xC4\xA0how|\xC4\xA0is|\xC4\xA0your|\xC4\xA0" "day|"
              "\xC4\xA0going|?");
    /* bytes_to_unicode: '\n' -> U+010A, 0xFF stays, 0xAD -> U+0143 */
    qp_pattern_free(&b.pat);
    b.add_prefix_space = 0;
    check_pre(&b, "a\n\xFF\xAD", 1, "a\xC4\x8A\xC3\xBF\xC5\x83");
}

static void test_normalizers(void **state)
{
    (void)state;
    qp_buf out = QP_BUF_INIT;
    qp_norm seq[2] = {
        { .kind = QP_NORM_PREPEND, .str = space_sym, .str_len = 3 },
        { .kind = QP_NORM_REPLACE, .str = space_sym, .str_len = 3, .pat = { .lit = blank, .lit_len = 1 } },
    };
    qp_normalize(seq, 2, "Hey you", 7, &out);
    assert_string_equal(qp_buf_cstr(&out), "\xE2\x96\x81Hey\xE2\x96\x81you");
    qp_normalize(seq, 2, "", 0, &out);   /* Prepend leaves the empty string empty */
    assert_int_equal(out.len, 0);
    qp_norm nfkc = { .kind = QP_NORM_NFKC };
    qp_normalize(&nfkc, 1, "\xEF\xAC\x81", 3, &out);   /* U+FB01 ﬁ */
    assert_string_equal(qp_buf_cstr(&out), "fi");
    qp_norm nfc = { .kind = QP_NORM_NFC };
    qp_normalize(&nfc, 1, "e\xCC\x81", 3, &out);
    assert_string_equal(qp_buf_cstr(&out), "\xC3\xA9");
    qp_norm nfd = { .kind = QP_NORM_NFD };
    qp_normalize(&nfd, 1, "\xC3\xA9", 2, &out);
    assert_string_equal(qp_buf_cstr(&out), "e\xCC\x81");
    /* Rust's to_lowercase: İ -> i + U+0307, final sigma */
    qp_norm lower = { .kind = QP_NORM_LOWERCASE };
    const char *greek = "HELLO \xC4\xB0 \xCE\x9F\xCE\x94\xCE\x9F\xCE\xA3 \xCE\xA3\xCE\x91";
    qp_normalize(&lower, 1, greek, strlen(greek), &out);
    assert_string_equal(qp_buf_cstr(&out), "hello i\xCC\x87 \xCE\xBF\xCE\xB4\xCE\xBF\xCF\x82 \xCF\x83\xCE\xB1");
    qp_norm strip[2] = { { .kind = QP_NORM_STRIP, .left = 1, .right = 1 }, { .kind = QP_NORM_STRIP, .right = 1 } };
    qp_normalize(strip, 1, " \t a b \xE3\x80\x80\n", 10, &out);
    assert_string_equal(qp_buf_cstr(&out), "a b");
    qp_normalize(strip + 1, 1, "  a  ", 5, &out);
    assert_string_equal(qp_buf_cstr(&out), "  a");
    qp_normalize(strip, 1, " \t ", 3, &out);
    assert_int_equal(out.len, 0);
    /* a long text is normalized in pieces with the same result */
    qp_buf big = QP_BUF_INIT, want = QP_BUF_INIT;
    for (int i = 0; i < 300000; i++) {
        qp_buf_puts(&big, "ab e\xCC\x81 ");
        qp_buf_puts(&want, "ab \xC3\xA9 ");
    }
    qp_normalize(&nfc, 1, big.data, big.len, &out);
    assert_int_equal(out.len, want.len);
    assert_memory_equal(out.data, want.data, want.len);
    qp_buf_free(&big);
    qp_buf_free(&want);
    qp_buf_free(&out);
}

/* ---- whole tokenizer.json files ------------------------------------------------ */

static qp_tokenizer *load_json(const char *json, const char *config)
{
    qp_tokenizer *t = NULL;
    int rc = qp_tokenizer_load_hf(&t, json, strlen(json), config, config ? strlen(config) : 0, "t/tokenizer.json");
    if (rc)
        fprintf(stderr, "%s\n", qp_error_last());
    assert_int_equal(rc, 0);
    return t;
}

static void check_encode(const qp_tokenizer *t, const char *text, unsigned flags, const int *want, size_t nwant,
                         const char *decoded)
{
    int *ids = NULL;
    size_t n = 0;
    assert_int_equal(qp_tokenizer_encode(t, text, strlen(text), flags, &ids, &n), 0);
    if (n != nwant || memcmp(ids, want, n * sizeof(int)) != 0) {
        fprintf(stderr, "'%s':", text);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "\n");
    }
    assert_int_equal(n, nwant);
    assert_memory_equal(ids, want, n * sizeof(int));
    if (decoded) {
        char *back = NULL;
        size_t bl = 0;
        assert_int_equal(qp_tokenizer_decode(t, ids, n, 0, &back, &bl), 0);
        assert_string_equal(back, decoded);
        free(back);
    }
    free(ids);
}

/* A Llama-2-style file: Prepend + Replace normalizers, no pre-tokenizer,
 * byte fallback, unk, a TemplateProcessing post-processor adding <s>. */
static char *llama2_json(void)
{
    qp_buf b = QP_BUF_INIT;
    qp_buf_puts(&b, "{\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true},"
                    "{\"id\":1,\"content\":\"<s>\",\"special\":true},{\"id\":2,\"content\":\"</s>\",\"special\":true}],"
                    "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\xE2\x96\x81\"},"
                    "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\xE2\x96\x81\"}]},"
                    "\"pre_tokenizer\":null,"
                    "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\","
                    "\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"special_tokens\":{\"<s>\":"
                    "{\"id\":\"<s>\",\"ids\":[1],\"tokens\":[\"<s>\"]}}},"
                    "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":"
                    "\"\xE2\x96\x81\"},\"content\":\" \"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},"
                    "{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0}]},"
                    "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"byte_fallback\":true,\"fuse_unk\":true,"
                    "\"vocab\":{\"<unk>\":0,\"<s>\":1,\"</s>\":2");
    for (int i = 0; i < 256; i++)
        qp_buf_printf(&b, ",\"<0x%02X>\":%d", i, 3 + i);
    qp_buf_puts(&b, ",\"\xE2\x96\x81\":259,\"a\":260,\"b\":261,\"\xE2\x96\x81" "a\":262,\"ab\":263,"
                    "\"\xE2\x96\x81" "ab\":264},\"merges\":[\"\xE2\x96\x81 a\",\"a b\",\"\xE2\x96\x81" "a b\"]}}");
    return qp_buf_detach(&b, NULL);
}

static void test_llama2_style(void **state)
{
    (void)state;
    char *json = llama2_json();
    qp_tokenizer *t = load_json(json, NULL);
    assert_int_equal(qp_tokenizer_bos(t), 1);
    assert_int_equal(qp_tokenizer_wants_bos(t), 1);
    assert_int_equal(qp_tokenizer_unk(t), 0);
    assert_int_equal(qp_tokenizer_has_byte_fallback(t), 1);
    assert_int_equal(qp_tokenizer_type(t, 3 + 'c'), QP_TOK_BYTE);
    assert_int_equal(qp_tokenizer_type(t, 1), QP_TOK_CONTROL);
    assert_null(qp_tokenizer_pre(t));
    /* "ab c" -> "▁ab▁c": ▁ab, ▁, c by byte fallback */
    int w1[] = { 1, 264, 259, 3 + 'c' };
    /* decoding keeps special pieces, as tokenizers' decode does by default;
     * Strip then finds no leading space to drop */
    check_encode(t, "ab c", QP_TOK_ADD_BOS, w1, 4, "<s> ab c");
    check_encode(t, "ab c", 0, w1 + 1, 3, "ab c");
    /* é is two byte pieces; ByteFallback joins them back */
    int w2[] = { 259, 3 + 0xC3, 3 + 0xA9 };
    check_encode(t, "\xC3\xA9", 0, w2, 3, "\xC3\xA9");
    /* special tokens: parsed only when asked; the stretch after one is
     * normalized on its own (Prepend again) */
    int w3[] = { 1, 264 };
    check_encode(t, "<s>ab", QP_TOK_PARSE_SPECIAL, w3, 2, NULL);
    int w4[] = { 259, 3 + '<', 3 + 's', 3 + '>', 263 };
    check_encode(t, "<s>ab", 0, w4, 5, "<s>ab");
    qp_tokenizer_free(t);

    /* add_bos_token false in the config wins over the template */
    t = load_json(json, "{\"add_bos_token\": false, \"bos_token\": {\"content\": \"<s>\"}, \"eos_token\": \"</s>\"}");
    assert_int_equal(qp_tokenizer_wants_bos(t), 0);
    assert_int_equal(qp_tokenizer_bos(t), 1);
    assert_int_equal(qp_tokenizer_eos(t), 2);
    assert_null(qp_tokenizer_chat_template(t));
    qp_tokenizer_free(t);
    free(json);
}

static void test_merges_pairs_and_ignore(void **state)
{
    (void)state;
    /* pairs, one side holding a space (GGUF spells it U+0120) */
    const char *j1 = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\" \":0,\"a\":1,\" a\":2,\"b\":3},"
                     "\"merges\":[[\" \",\"a\"]]}}";
    qp_tokenizer *t = load_json(j1, NULL);
    assert_int_equal(qp_tokenizer_n_merges(t), 1);
    assert_string_equal(qp_tokenizer_merge(t, 0), "\xC4\xA0 a");
    int w1[] = { 2, 3 };
    check_encode(t, " ab", 0, w1, 2, NULL);   /* no decoder: pieces joined by ' ' */
    char *back = NULL;
    size_t bl = 0;
    assert_int_equal(qp_tokenizer_decode(t, w1, 2, 0, &back, &bl), 0);
    assert_string_equal(back, " a b");
    free(back);
    qp_tokenizer_free(t);

    /* ignore_merges: a word that is a piece is taken whole */
    const char *j2 = "{\"model\":{\"type\":\"BPE\",\"ignore_merges\":%s,\"vocab\":{\"a\":0,\"b\":1,\"c\":2,"
                     "\"ab\":3,\"abc\":4},\"merges\":[\"a b\"]}}";
    char buf[512];
    snprintf(buf, sizeof(buf), j2, "true");
    t = load_json(buf, NULL);
    int w2[] = { 4 };
    check_encode(t, "abc", 0, w2, 1, NULL);
    qp_tokenizer_free(t);
    snprintf(buf, sizeof(buf), j2, "false");
    t = load_json(buf, NULL);
    int w3[] = { 3, 2 };
    check_encode(t, "abc", 0, w3, 2, NULL);
    /* without unk and byte fallback an unknown character is dropped */
    int w4[] = { 0, 1 };
    check_encode(t, "azb", 0, w4, 2, NULL);
    qp_tokenizer_free(t);
}

static void test_added_tokens(void **state)
{
    (void)state;
    const char *j = "{\"added_tokens\":["
                    "{\"id\":5,\"content\":\"<m>\",\"special\":false,\"lstrip\":true,\"normalized\":false},"
                    "{\"id\":6,\"content\":\"<r>\",\"special\":false,\"rstrip\":true,\"normalized\":false},"
                    "{\"id\":7,\"content\":\"xx\",\"special\":false,\"single_word\":true,\"normalized\":false},"
                    "{\"id\":8,\"content\":\"<sp>\",\"special\":true,\"normalized\":false},"
                    "{\"id\":9,\"content\":\"<sp>x\",\"special\":true,\"normalized\":false}],"
                    "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\" \":1,\"b\":2,\"x\":3,\"<\":4,\"s\":10,"
                    "\"p\":11,\">\":12},\"merges\":[]}}";
    qp_tokenizer *t = load_json(j, NULL);
    assert_int_equal(qp_tokenizer_n_vocab(t), 13);
    assert_int_equal(qp_tokenizer_type(t, 5), QP_TOK_USER_DEFINED);
    assert_int_equal(qp_tokenizer_type(t, 8), QP_TOK_CONTROL);
    int w1[] = { 0, 5, 2 };              /* lstrip swallows the space before */
    check_encode(t, "a <m>b", 0, w1, 3, NULL);
    int w2[] = { 0, 6, 2 };              /* rstrip the spaces after */
    check_encode(t, "a<r>  b", 0, w2, 3, NULL);
    int w3[] = { 0, 3, 3 };              /* single_word: not inside a word */
    check_encode(t, "axx", 0, w3, 3, NULL);
    int w4[] = { 0, 1, 7, 1, 2 };
    check_encode(t, "a xx b", 0, w4, 5, NULL);
    int w5[] = { 9, 0 };                 /* leftmost, then longest */
    check_encode(t, "<sp>xa", QP_TOK_PARSE_SPECIAL, w5, 2, NULL);
    int w6[] = { 4, 10, 11, 12, 3 };     /* specials are text without the flag */
    check_encode(t, "<sp>x", 0, w6, 5, NULL);
    qp_tokenizer_free(t);
}

/* Where tokenizers' AddedVocabulary and a naive matcher part: a rejected
 * leftmost-longest match is dropped whole (no shorter token at its start,
 * none inside it); normalized tokens are looked for by their normalized
 * spelling; single_word's word characters are Rust's \w. */
static void test_added_tokens_hf_matching(void **state)
{
    (void)state;
    const char *j = "{\"added_tokens\":["
                    "{\"id\":10,\"content\":\"ab\",\"special\":false,\"single_word\":true,\"normalized\":false},"
                    "{\"id\":11,\"content\":\"b\",\"special\":false,\"normalized\":false},"
                    "{\"id\":12,\"content\":\"<|b|>\",\"special\":true,\"normalized\":false},"
                    "{\"id\":13,\"content\":\"Hi\",\"special\":false,\"normalized\":true}],"
                    "\"normalizer\":{\"type\":\"Lowercase\"},"
                    "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"x\":2,\"<\":3,\"|\":4,\">\":5,\"h\":6,"
                    "\"i\":7,\"\xC2\xB2\":8,\"\xCC\x81\":9},\"merges\":[]}}";
    qp_tokenizer *t = load_json(j, NULL);
    /* "ab" inside a word is rejected, and so is the "b" within it */
    int w1[] = { 2, 0, 1 };
    check_encode(t, "xab", 0, w1, 3, NULL);
    int w2[] = { 10 };
    check_encode(t, "ab", 0, w2, 1, NULL);
    /* a special token left as text hides the added "b" inside it */
    int w3[] = { 3, 4, 1, 4, 5 };
    check_encode(t, "<|b|>", 0, w3, 5, NULL);
    int w4[] = { 12 };
    check_encode(t, "<|b|>", QP_TOK_PARSE_SPECIAL, w4, 1, NULL);
    /* "Hi" is normalized: Lowercase spells it "hi", which "HI" becomes */
    int w5[] = { 13, 13 };
    check_encode(t, "HIhi", 0, w5, 2, NULL);
    /* \w: a combining mark is a word character, '²' (No) is not */
    int w6[] = { 9, 0, 1 };
    check_encode(t, "\xCC\x81" "ab", 0, w6, 3, NULL);
    int w7[] = { 8, 10 };
    check_encode(t, "\xC2\xB2" "ab", 0, w7, 2, NULL);
    qp_tokenizer_free(t);
}

/* Llama 3's shape: no add_bos_token in tokenizer_config.json, and a
 * post_processor Sequence [ByteLevel, TemplateProcessing "<|begin_of_text|>
 * $A"].  Its class, PreTrainedTokenizerFast, takes BOS from the
 * post-processor alone (only subclasses such as LlamaTokenizerFast rebuild
 * it from add_bos_token), and convert_hf_to_gguf's SpecialVocab falls back
 * to the template when the key is absent: BOS is added, EOS is not. */
static void test_llama3_bos_from_post_processor(void **state)
{
    (void)state;
    const char *j =
        "{\"added_tokens\":[{\"id\":3,\"content\":\"<|begin_of_text|>\",\"special\":true,\"normalized\":false},"
        "{\"id\":4,\"content\":\"<|end_of_text|>\",\"special\":true,\"normalized\":false}],"
        "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true},"
        "\"post_processor\":{\"type\":\"Sequence\",\"processors\":[{\"type\":\"ByteLevel\",\"add_prefix_space\":true,"
        "\"trim_offsets\":false,\"use_regex\":true},{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":"
        "{\"id\":\"<|begin_of_text|>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"pair\":["
        "{\"SpecialToken\":{\"id\":\"<|begin_of_text|>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}},"
        "{\"SpecialToken\":{\"id\":\"<|begin_of_text|>\",\"type_id\":1}},{\"Sequence\":{\"id\":\"B\",\"type_id\":1}}],"
        "\"special_tokens\":{\"<|begin_of_text|>\":{\"id\":\"<|begin_of_text|>\",\"ids\":[3],\"tokens\":"
        "[\"<|begin_of_text|>\"]}}}]},"
        "\"decoder\":{\"type\":\"ByteLevel\"},"
        "\"model\":{\"type\":\"BPE\",\"ignore_merges\":true,\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[]}}";
    static const char *const configs[] = {
        NULL,
        "{\"bos_token\":\"<|begin_of_text|>\",\"eos_token\":\"<|end_of_text|>\",\"chat_template\":\"x\"}",
    };
    for (size_t c = 0; c < 2; c++) {
        qp_tokenizer *t = load_json(j, configs[c]);
        assert_int_equal(qp_tokenizer_wants_bos(t), 1);
        assert_int_equal(qp_tokenizer_bos(t), 3);
        assert_int_equal(qp_tokenizer_eos(t), c ? 4 : -1);
        /* ignore_merges: "ab" is a piece, taken whole with no merge */
        int w[] = { 3, 2 };
        check_encode(t, "ab", QP_TOK_ADD_BOS, w, 2, "<|begin_of_text|>ab");
        qp_tokenizer_free(t);
    }
}

/* A merge listed twice ranks where tokenizers puts it: its last place (the
 * merges go into a HashMap, each insert replacing); llama.cpp keeps the
 * first, and so does qpipe for a GGUF vocabulary. */
static void test_repeated_merge_last_rank(void **state)
{
    (void)state;
    const char *j = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"c\":2,\"ab\":3,\"bc\":4},"
                    "\"merges\":[\"a b\",\"b c\",\"a b\"]}}";
    qp_tokenizer *t = load_json(j, NULL);
    int w[] = { 0, 4 };
    check_encode(t, "abc", 0, w, 2, NULL);
    qp_tokenizer_free(t);
}

static void test_metaspace_model(void **state)
{
    (void)state;
    /* Metaspace pre-tokenizer and decoder, prepend_scheme "first": the
     * stretch after a special token gets no ▁ */
    const char *j = "{\"added_tokens\":[{\"id\":0,\"content\":\"<s>\",\"special\":true,\"normalized\":false}],"
                    "\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\","
                    "\"prepend_scheme\":\"first\",\"split\":true},"
                    "\"decoder\":{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\",\"prepend_scheme\":\"first\"},"
                    "\"model\":{\"type\":\"BPE\",\"vocab\":{\"<s>\":0,\"\xE2\x96\x81\":1,\"x\":2,\"y\":3,"
                    "\"\xE2\x96\x81x\":4,\"\xE2\x96\x81y\":5},\"merges\":[\"\xE2\x96\x81 x\",\"\xE2\x96\x81 y\"]}}";
    qp_tokenizer *t = load_json(j, NULL);
    int w1[] = { 4, 5 };
    check_encode(t, "x y", 0, w1, 2, "x y");
    int w2[] = { 0, 2, 5 };
    check_encode(t, "<s>x y", QP_TOK_PARSE_SPECIAL, w2, 3, "<s>x y");
    qp_tokenizer_free(t);
}

/* ByteLevel decoding ends as tokenizers' does, with from_utf8_lossy: a
 * piece that splits a character decodes to U+FFFD on its own (one per
 * maximal ill-formed subpart) and to the character with the rest of it;
 * a Replace regex after it sees valid UTF-8. */
static void test_bytelevel_decode_split_char(void **state)
{
    (void)state;
    /* the byte-level pieces of U+4E2D (E4 B8 AD) and of 'a', ids 0..3 */
    static const unsigned char bytes[] = { 0xE4, 0xB8, 0xAD, 'a' };
    qp_buf vocab = QP_BUF_INIT;
    for (int i = 0; i < 4; i++) {
        size_t l;
        const char *sp = qp_byte_to_unicode(bytes[i], &l);
        qp_buf_printf(&vocab, "%s\"%.*s\":%d", i ? "," : "", (int)l, sp, i);
    }
    static const char *const decoders[] = {
        "{\"type\":\"ByteLevel\"}",
        "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"ByteLevel\"},{\"type\":\"Replace\","
        "\"pattern\":{\"Regex\":\".\"},\"content\":\"<$0>\"}]}",
    };
    static const struct { int ids[4]; size_t n; const char *want[2]; } cases[] = {
        { {0, 1, 2}, 3, {"\xE4\xB8\xAD", "<$0>"} },
        { {0}, 1, {"\xEF\xBF\xBD", "<$0>"} },
        { {0, 1}, 2, {"\xEF\xBF\xBD", "<$0>"} },                 /* E4 B8: one subpart */
        { {1, 2}, 2, {"\xEF\xBF\xBD\xEF\xBF\xBD", "<$0><$0>"} }, /* two stray continuations */
        { {0, 3}, 2, {"\xEF\xBF\xBD" "a", "<$0><$0>"} },
        { {0, 0, 1, 2}, 4, {"\xEF\xBF\xBD\xE4\xB8\xAD", "<$0><$0>"} },
    };
    for (size_t d = 0; d < 2; d++) {
        qp_buf j = QP_BUF_INIT;
        qp_buf_printf(&j, "{\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false},\"decoder\":%s,"
                      "\"model\":{\"type\":\"BPE\",\"vocab\":{%s},\"merges\":[]}}", decoders[d], qp_buf_cstr(&vocab));
        qp_tokenizer *t = load_json(qp_buf_cstr(&j), NULL);
        for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
            char *back = NULL;
            size_t bl = 0;
            assert_int_equal(qp_tokenizer_decode(t, cases[c].ids, cases[c].n, 0, &back, &bl), 0);
            assert_string_equal(back, cases[c].want[d]);
            free(back);
        }
        qp_tokenizer_free(t);
        qp_buf_free(&j);
    }
    qp_buf_free(&vocab);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_behaviors),
        cmocka_unit_test(test_digits_metaspace_bytelevel),
        cmocka_unit_test(test_normalizers),
        cmocka_unit_test(test_llama2_style),
        cmocka_unit_test(test_merges_pairs_and_ignore),
        cmocka_unit_test(test_added_tokens),
        cmocka_unit_test(test_added_tokens_hf_matching),
        cmocka_unit_test(test_llama3_bos_from_post_processor),
        cmocka_unit_test(test_repeated_merge_last_rank),
        cmocka_unit_test(test_metaspace_model),
        cmocka_unit_test(test_bytelevel_decode_split_char),
    };
    return cmocka_run_group_tests_name("tokenizer.json pipeline", tests, NULL, NULL);
}
