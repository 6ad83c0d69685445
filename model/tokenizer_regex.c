/* Pre-tokenizer regexes through PCRE2.
 *
 * tokenizer.json patterns are written for Oniguruma (Hugging Face) and
 * llama.cpp's lists for its own matcher; both read \s as Unicode
 * White_Space: U+0009..U+000D, U+0085 (NEL) and property Z (Oniguruma's
 * documented definition; llama.cpp's whitespace table is the same set).
 * PCRE2's UCP \s is not that set and differs between PCRE2 versions (10.42
 * adds its \h and \v, so U+180E MONGOLIAN VOWEL SEPARATOR, a format
 * character since Unicode 6.3, counts as a space there), so \s and \S are
 * spelled out here from those properties.  Everything else these patterns
 * use (\p{L}, \p{N}, (?i:...), lookahead, possessive and counted
 * quantifiers) means the same in PCRE2.
 * Anchors follow the dialect: Oniguruma's ^ and $ match at line ends,
 * std::regex's $ only at the end of the text.
 *
 * Matching is bounded: PCRE2's match limit (also for JIT code), depth and
 * heap limits stop a pathological pattern, and hitting one is an error
 * naming the pattern: tokenizing the rest of the text some other way would
 * silently give ids that neither tokenizers nor llama.cpp give.  The match
 * limit grows with the text searched: the usual patterns backtrack over a
 * run once per search (Qwen2's and Llama 3's \s*[\r\n]+ tries every
 * shorter prefix of a 100M-space run before \s+(?!\S) takes it), so a
 * fixed limit would refuse long ordinary texts, while an exponential
 * pattern still stops within that many steps.  A pattern quadratic over
 * many searches (each one short of the limit) is not caught. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "model/tokenizer_pipe.h"

#include "common/alloc.h"
#include "common/buf.h"
#include "common/error.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MATCH_LIMIT 50000000u   /* plus MATCH_PER_BYTE per byte searched */
#define MATCH_PER_BYTE 2u
#define DEPTH_LIMIT 100000u
#define HEAP_LIMIT_KIB (64u * 1024u)

/* White_Space as class members (see above). */
#define WS_MEMBERS "\\x{9}-\\x{D}\\x{85}\\p{Z}"

struct qp_regex {
    pcre2_code *code;
    pcre2_match_context *mctx;
    int jit;
    char *label;          /* "NAME: WHERE", for errors while matching */
};

/* Rewrites \s and \S as described above (and, for llama.cpp's patterns,
 * \U as the 'U' std::regex reads it); pattern bytes otherwise kept.
 * map[i] (map has n + 1 entries) is where pattern byte i went in out. */
static void translate(const char *p, size_t n, qp_buf *out, size_t *map, qp_regex_dialect dialect)
{
    int in_class = 0;
    size_t mapped = 0;
    for (size_t i = 0; i < n; i++) {
        for (; mapped <= i; mapped++)
            map[mapped] = out->len;
        char c = p[i];
        if (c == '\\' && i + 1 < n) {
            char d = p[i + 1];
            if (d == 's')
                qp_buf_puts(out, in_class ? WS_MEMBERS : "[" WS_MEMBERS "]");
            else if (d == 'S' && !in_class)
                qp_buf_puts(out, "[^" WS_MEMBERS "]");
            /* \S inside a class has no spelling as members; no known
             * tokenizer pattern writes it, and PCRE2's differs only at
             * U+180E and the like */
            else if (d == 'U' && dialect == QP_RE_LLAMA)
                qp_buf_putc(out, 'U');   /* an identity escape in ECMAScript */
            else
                qp_buf_append(out, p + i, 2);
            i++;
            continue;
        }
        if (c == '[' && !in_class) {
            in_class = 1;
            qp_buf_putc(out, c);
            /* a ']' right after '[' or '[^' is a literal member */
            if (i + 1 < n && p[i + 1] == '^') {
                qp_buf_putc(out, '^');
                i++;
            }
            if (i + 1 < n && p[i + 1] == ']') {
                qp_buf_putc(out, ']');
                i++;
            }
            continue;
        }
        if (c == '[' && in_class && i + 1 < n && p[i + 1] == ':') {
            /* a POSIX class [:name:] inside a class */
            const char *end = NULL;
            for (size_t k = i + 2; k + 1 < n; k++)
                if (p[k] == ':' && p[k + 1] == ']') {
                    end = p + k + 2;
                    break;
                }
            if (end) {
                qp_buf_append(out, p + i, (size_t)(end - (p + i)));
                i = (size_t)(end - p) - 1;
                continue;
            }
        }
        if (c == ']' && in_class)
            in_class = 0;
        qp_buf_putc(out, c);
    }
    for (; mapped <= n; mapped++)
        map[mapped] = out->len;
}

int qp_regex_compile(qp_regex **out, const char *pat, size_t len, qp_regex_dialect dialect, const char *name,
                     const char *where)
{
    int rc = 0;
    qp_buf tr = QP_BUF_INIT;
    *out = NULL;
    size_t *map = qp_xmalloc((len + 1) * sizeof(*map));
    translate(pat, len, &tr, map, dialect);
    int err;
    PCRE2_SIZE erroff;
    /* Oniguruma (Ruby syntax): ^ and $ are line anchors; std::regex
     * (ECMAScript): $ is the end of the text only */
    uint32_t flags = dialect == QP_RE_ONIG ? PCRE2_MULTILINE : PCRE2_DOLLAR_ENDONLY;
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)qp_buf_cstr(&tr), tr.len, PCRE2_UTF | PCRE2_UCP | flags, &err,
                                     &erroff, NULL);
    if (!code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof(msg));
        /* the offset in the pattern as written */
        size_t orig = 0;
        while (orig < len && map[orig + 1] <= erroff)
            orig++;
        rc = qp_error_set(QP_EFORMAT, "%s: %s: bad regex: %s at offset %zu", name, where, (const char *)msg,
                          orig);
        goto done;
    }
    qp_regex *re = qp_xcalloc(1, sizeof(*re));
    re->code = code;
    re->jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
    qp_buf lb = QP_BUF_INIT;
    qp_buf_printf(&lb, "%s: %s", name, where);
    re->label = qp_buf_detach(&lb, NULL);
    re->mctx = pcre2_match_context_create(NULL);
    if (!re->mctx)
        qp_xmalloc((size_t)-1);   /* allocation policy: report and end */
    pcre2_set_match_limit(re->mctx, MATCH_LIMIT);
    pcre2_set_depth_limit(re->mctx, DEPTH_LIMIT);
    pcre2_set_heap_limit(re->mctx, HEAP_LIMIT_KIB);
    *out = re;
done:
    free(map);
    qp_buf_free(&tr);
    return rc;
}

void qp_regex_free(qp_regex *re)
{
    if (!re)
        return;
    pcre2_match_context_free(re->mctx);
    pcre2_code_free(re->code);
    free(re->label);
    free(re);
}

/* Length of the UTF-8 character starting with byte c (input is valid). */
static size_t char_len(unsigned char c)
{
    return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

int qp_regex_each(const qp_regex *re, const char *s, size_t n, qp_regex_fn fn, void *ud)
{
    int rc = 0;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re->code, NULL);
    if (!md)
        qp_xmalloc((size_t)-1);
    pcre2_match_context *mctx = re->mctx, *own = NULL;
    if (n > (MATCH_LIMIT / MATCH_PER_BYTE) / 8) {   /* short texts share re's context */
        uint64_t lim = MATCH_LIMIT + (uint64_t)MATCH_PER_BYTE * n;
        own = pcre2_match_context_copy(re->mctx);
        if (!own)
            qp_xmalloc((size_t)-1);
        pcre2_set_match_limit(own, lim > UINT32_MAX ? UINT32_MAX : (uint32_t)lim);
        mctx = own;
    }
    size_t pos = 0;
    while (pos <= n) {
        int r = pcre2_match(re->code, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, md, mctx);
        if (r == PCRE2_ERROR_JIT_STACKLIMIT)   /* retry interpreted: heap-bounded */
            r = pcre2_match(re->code, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, mctx);
        if (r == PCRE2_ERROR_NOMATCH)
            break;
        if (r < 0) {   /* a limit, or PCRE2 out of memory */
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(r, msg, sizeof(msg));
            rc = qp_error_set(QP_EFORMAT, "%s: matching stopped at byte %zu of a %zu-byte stretch of text: %s; "
                              "the pattern backtracks too much for this text (simplify the pattern, or split "
                              "the text)", re->label, pos, n, (const char *)msg);
            break;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (me < ms) {   /* \K in a lookahead; not in tokenizer patterns */
            rc = qp_error_set(QP_EFORMAT, "%s: a match ends before it starts (\\K in a lookaround); "
                              "remove the \\K", re->label);
            break;
        }
        fn(ud, ms, me);
        if (me > ms)
            pos = me;
        else if (me < n)
            pos = me + char_len((unsigned char)s[me]);
        else
            break;
    }
    pcre2_match_data_free(md);
    pcre2_match_context_free(own);
    return rc;
}
