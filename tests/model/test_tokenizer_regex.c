/* Pre-tokenizer regexes (model/tokenizer_regex.c) as Oniguruma and
 * llama.cpp read them, where PCRE2 alone would differ: \s is White_Space
 * (U+0085 in, U+180E out, whatever PCRE2's version says); Llama 3's pattern
 * on whitespace / newline runs, digits in threes and contractions in upper
 * case; a pattern that backtracks catastrophically is an error naming the
 * file and the pattern, never a silently different split. */
#include "tests/support/testutil.h"

#include "common/buf.h"
#include "common/error.h"
#include "model/tokenizer.h"
#include "model/tokenizer_pipe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GPT2_RE "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define LLAMA3_RE "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+" \
                  "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

typedef struct {
    const char *s;
    qp_buf all;   /* the matches joined by '|' */
} join_t;

static void join(void *ud, size_t a, size_t e)
{
    join_t *j = ud;
    if (j->all.len)
        qp_buf_putc(&j->all, '|');
    qp_buf_append(&j->all, j->s + a, e - a);
}

typedef struct {
    size_t *ends, *k;
} end_t;

/* Keeps the ends of the first four matches and counts them all. */
static void record_end(void *ud, size_t a, size_t e)
{
    (void)a;
    end_t *r = ud;
    if (*r->k < 4)
        r->ends[*r->k] = e;
    (*r->k)++;
}

/* The matches of pattern in text, joined by '|', must be want. */
static void check_matches(const char *pattern, qp_regex_dialect dialect, const char *text, const char *want)
{
    qp_regex *re = NULL;
    assert_int_equal(qp_regex_compile(&re, pattern, strlen(pattern), dialect, "test", "re"), 0);
    join_t j = { text, QP_BUF_INIT };
    assert_int_equal(qp_regex_each(re, text, strlen(text), join, &j), 0);
    if (strcmp(qp_buf_cstr(&j.all), want) != 0)
        fprintf(stderr, "'%s': got '%s' want '%s'\n", text, qp_buf_cstr(&j.all), want);
    assert_string_equal(qp_buf_cstr(&j.all), want);
    qp_buf_free(&j.all);
    qp_regex_free(re);
}

static void test_whitespace_is_white_space(void **state)
{
    (void)state;
    for (int d = 0; d < 2; d++) {
        qp_regex_dialect dialect = d ? QP_RE_LLAMA : QP_RE_ONIG;
        /* U+180E MONGOLIAN VOWEL SEPARATOR is Cf, not White_Space: it is
         * "other" and joins the space before it (PCRE2 10.42's own \s has
         * it, which gave " |\u180E|a") */
        check_matches(GPT2_RE, dialect, " \xE1\xA0\x8E" "a", " \xE1\xA0\x8E|a");
        /* U+0085 NEL is White_Space (PCRE2's \s lacks it in some versions) */
        check_matches(GPT2_RE, dialect, " \xC2\x85" "a", " |\xC2\x85|a");
        /* U+3000 and U+00A0 are */
        check_matches(GPT2_RE, dialect, "x\xE3\x80\x80\xC2\xA0y", "x|\xE3\x80\x80|\xC2\xA0|y");
        /* \S and \s inside a class */
        check_matches("\\S+", dialect, "a\xE1\xA0\x8E" "b\xC2\x85" "c", "a\xE1\xA0\x8E" "b|c");
        check_matches("[\\s]+", dialect, "a\xE1\xA0\x8E \xC2\x85" "b", " \xC2\x85");
    }
}

static void test_llama3_pattern(void **state)
{
    (void)state;
    /* contractions in any case; a letter run takes one non-letter,
     * non-digit, non-newline character before it; digits in threes
     * without the space before them; a whitespace run ending in newlines
     * is one piece, the last space of a run before a word goes to it */
    check_matches(LLAMA3_RE, QP_RE_ONIG, "I'M 12345  \n\n  x\t\ty  ",
                  "I|'M| |123|45|  \n\n| | x|\t|\ty|  ");
    check_matches(LLAMA3_RE, QP_RE_ONIG, "WE'LL THEY'RE it'S 'D", "WE|'LL| THEY|'RE| it|'S| '|D");
    check_matches(LLAMA3_RE, QP_RE_ONIG, "1234567 9\r\n\r\nok...\n\n", "123|456|7| |9|\r\n\r\n|ok|...\n\n");
    check_matches(LLAMA3_RE, QP_RE_ONIG, "a\n \n b", "a|\n \n| b");
    check_matches(LLAMA3_RE, QP_RE_ONIG, "$x \xC2\xA0y", "$x| |\xC2\xA0y");
}

/* Nested quantifiers on a run with no match (the text has a "bc" after
 * its a's, so the required "c" is there): exponential backtracking. */
#define BAD_RE "(a+)+c"

static void test_limit_is_an_error(void **state)
{
    (void)state;
    char text[64];
    memset(text, 'a', 40);
    memcpy(text + 40, "bc", 3);
    qp_regex *re = NULL;
    assert_int_equal(qp_regex_compile(&re, BAD_RE, strlen(BAD_RE), QP_RE_ONIG, "t/tokenizer.json", "where"), 0);
    join_t j = { text, QP_BUF_INIT };
    assert_int_equal(qp_regex_each(re, text, strlen(text), join, &j), QP_EFORMAT);
    const char *msg = qp_error_last();
    assert_non_null(strstr(msg, "t/tokenizer.json: where: "));
    assert_non_null(strstr(msg, "limit"));
    assert_null(strchr(msg, '\n'));
    qp_buf_free(&j.all);
    qp_regex_free(re);

    /* through a tokenizer.json: the Split pre-tokenizer and a Replace
     * normalizer each fail the encode, with no ids */
    static const char *const files[] = {
        "{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"" BAD_RE "\"},\"behavior\":\"Isolated\"},"
        "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[]}}",
        "{\"normalizer\":{\"type\":\"Replace\",\"pattern\":{\"Regex\":\"" BAD_RE "\"},\"content\":\"b\"},"
        "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[]}}",
    };
    static const char *const where[] = { "pre_tokenizer.pattern.Regex", "normalizer.pattern.Regex" };
    for (size_t k = 0; k < 2; k++) {
        qp_tokenizer *t = NULL;
        int rc = qp_tokenizer_load_hf(&t, files[k], strlen(files[k]), NULL, 0, "t/tokenizer.json");
        if (rc)
            fprintf(stderr, "%s\n", qp_error_last());
        assert_int_equal(rc, 0);
        int *ids = (int *)1;
        size_t n = 7;
        assert_int_equal(qp_tokenizer_encode(t, text, strlen(text), 0, &ids, &n), QP_EFORMAT);
        assert_null(ids);
        assert_int_equal(n, 0);
        msg = qp_error_last();
        fprintf(stderr, "%s\n", msg);
        assert_non_null(strstr(msg, "t/tokenizer.json: "));
        assert_non_null(strstr(msg, where[k]));
        /* a short text still encodes */
        assert_int_equal(qp_tokenizer_encode(t, "aab", 3, 0, &ids, &n), 0);
        assert_int_equal(n, 3);
        free(ids);
        qp_tokenizer_free(t);
    }
}

/* A long but ordinary text is no limit case: Qwen2's and Llama 3's
 * \s*[\r\n]+ backtracks once over a whitespace run, a step per byte, so a
 * run longer than PCRE2's fixed 50M-step limit must still split (it once
 * stopped with "match limit exceeded"). */
static void test_long_run_within_limit(void **state)
{
    (void)state;
    const char *pat = "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+|\\p{L}+";
    size_t n = (size_t)60 << 20;
    char *text = malloc(n + 2);
    assert_non_null(text);
    memset(text, ' ', n);
    memcpy(text + n, "xy", 2);
    qp_regex *re = NULL;
    assert_int_equal(qp_regex_compile(&re, pat, strlen(pat), QP_RE_ONIG, "test", "re"), 0);
    size_t ends[4] = { 0 }, k = 0;
    int rc = qp_regex_each(re, text, n + 2, record_end, &(end_t){ ends, &k });
    if (rc)
        fprintf(stderr, "%s\n", qp_error_last());
    assert_int_equal(rc, 0);
    assert_int_equal(k, 3);   /* n - 1 spaces, the last space, "xy" */
    assert_int_equal(ends[0], n - 1);
    assert_int_equal(ends[1], n);
    assert_int_equal(ends[2], n + 2);
    qp_regex_free(re);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whitespace_is_white_space),
        cmocka_unit_test(test_llama3_pattern),
        cmocka_unit_test(test_limit_is_an_error),
        cmocka_unit_test(test_long_run_within_limit),
    };
    return cmocka_run_group_tests_name("tokenizer regexes", tests, NULL, NULL);
}
