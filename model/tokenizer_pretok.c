/* Normalizers and pre-tokenizers of the byte-level BPE pipeline, as the
 * Hugging Face tokenizers library defines them (normalizers/ and
 * pre_tokenizers/ sources, NormalizedString::split):
 *   - a pattern's matches cut a word into alternating gaps and matches;
 *     `behavior` then decides what becomes a word (Isolated: each piece;
 *     Removed: gaps only; MergedWithPrevious/Next: a match joins the piece
 *     before/after; Contiguous: runs of the same kind join); `invert`
 *     swaps gaps and matches first; empty words vanish.
 *   - ByteLevel prepends ' ' to each word not starting with one
 *     (add_prefix_space), splits with the GPT-2 regex (use_regex) and spells
 *     every byte as GPT-2's bytes_to_unicode character.
 *   - Digits isolates each \p{N} character (individual_digits) or runs of
 *     them; Metaspace spells ' ' as the replacement, prepends it (always,
 *     or only to the word at the very start of the text) and splits before
 *     each replacement (split).
 * NFC and friends are utf8proc's.
 *
 * Words stream: a pre-tokenizer hands each word to a callback as soon as it
 * is known (the split behaviours need only the piece before), so a text of
 * millions of words never exists as a list; NFC-style forms run over pieces
 * of about 1 MiB cut between two ASCII characters (which never compose nor
 * reorder across such a cut).  Memory stays a small multiple of the text. */
#include "model/tokenizer_pipe.h"

#include "common/alloc.h"
#include "common/buf.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* ---- byte-level alphabet ---------------------------------------------- */

/* GPT-2's bytes_to_unicode: the printable bytes '!'..'~', 0xA1..0xAC and
 * 0xAE..0xFF stand for themselves; the other 68 bytes, in order, for
 * U+0100, U+0101, ... */
static uint32_t byte_cp(unsigned b)
{
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE))
        return b;
    unsigned k = 0;
    for (unsigned x = 0; x < b; x++)
        if (!((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE)))
            k++;
    return 256 + k;
}

static struct {
    char spell[256][3];
    uint8_t len[256];
    int16_t back[324];   /* code point < 324 -> byte, -1 */
} bl;
static pthread_once_t bl_once = PTHREAD_ONCE_INIT;

static void bl_init(void)
{
    for (int c = 0; c < 324; c++)
        bl.back[c] = -1;
    for (unsigned b = 0; b < 256; b++) {
        uint32_t cp = byte_cp(b);
        bl.back[cp] = (int16_t)b;
        if (cp < 0x80) {
            bl.spell[b][0] = (char)cp;
            bl.len[b] = 1;
        } else {
            bl.spell[b][0] = (char)(0xC0 | (cp >> 6));
            bl.spell[b][1] = (char)(0x80 | (cp & 0x3F));
            bl.len[b] = 2;
        }
    }
}

const char *qp_byte_to_unicode(unsigned b, size_t *len)
{
    pthread_once(&bl_once, bl_init);
    *len = bl.len[b & 0xFF];
    return bl.spell[b & 0xFF];
}

int qp_unicode_to_byte(uint32_t c)
{
    pthread_once(&bl_once, bl_init);
    return c < 324 ? bl.back[c] : -1;
}

/* ---- patterns ------------------------------------------------------------ */

void qp_pattern_free(qp_pattern *p)
{
    free(p->lit);
    qp_regex_free(p->re);
    p->lit = NULL;
    p->re = NULL;
}

/* Calls fn(ud, start, end) for each non-overlapping match of p in
 * s[0..n), leftmost first; fails when a regex hits a limit. */
static int find_each(const qp_pattern *p, const char *s, size_t n, qp_regex_fn fn, void *ud)
{
    if (p->re)
        return qp_regex_each(p->re, s, n, fn, ud);
    if (p->lit_len == 0)
        return 0;
    size_t i = 0;
    while (i + p->lit_len <= n) {
        const char *hit = memmem(s + i, n - i, p->lit, p->lit_len);
        if (!hit)
            break;
        size_t at = (size_t)(hit - s);
        fn(ud, at, at + p->lit_len);
        i = at + p->lit_len;
    }
    return 0;
}

/* ---- normalizers ----------------------------------------------------- */

/* A normal form of b, in pieces of about 1 MiB cut between two ASCII
 * bytes (an ASCII character is a starter that composes with nothing after
 * it but combining marks, and the next one is ASCII). */
static void unicode_form(qp_norm_kind k, qp_buf *b, qp_buf *tmp)
{
    int opt = UTF8PROC_STABLE;
    switch (k) {
    case QP_NORM_NFC: opt |= UTF8PROC_COMPOSE; break;
    case QP_NORM_NFD: opt |= UTF8PROC_DECOMPOSE; break;
    case QP_NORM_NFKC: opt |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
    default: opt |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
    }
    if (b->len == 0)
        return;
    qp_buf_truncate(tmp, 0);
    size_t at = 0;
    while (at < b->len) {
        size_t end = b->len;
        if (end - at > ((size_t)1 << 20)) {
            end = at + ((size_t)1 << 20);
            while (end < b->len && !((unsigned char)b->data[end - 1] < 0x80 && (unsigned char)b->data[end] < 0x80))
                end++;
        }
        utf8proc_uint8_t *dst = NULL;
        utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)b->data + at, (utf8proc_ssize_t)(end - at),
                                          &dst, (utf8proc_option_t)opt);
        if (r == UTF8PROC_ERROR_NOMEM)
            qp_xmalloc((size_t)-1);
        if (r >= 0)   /* the text is valid UTF-8, so this always holds */
            qp_buf_append(tmp, dst, (size_t)r);
        else
            qp_buf_append(tmp, b->data + at, end - at);
        free(dst);
        at = end;
    }
    qp_buf_truncate(b, 0);
    qp_buf_append(b, tmp->data, tmp->len);
}

typedef struct {
    const qp_norm *nm;
    const char *src;
    size_t prev;
    qp_buf *out;
} repl_t;

static void repl_match(void *ud, size_t start, size_t end)
{
    repl_t *r = ud;
    qp_buf_append(r->out, r->src + r->prev, start - r->prev);
    qp_buf_append(r->out, r->nm->str, r->nm->str_len);
    r->prev = end;
}

static int replace_all(const qp_norm *nm, qp_buf *b, qp_buf *tmp)
{
    qp_buf_truncate(tmp, 0);
    repl_t r = { nm, b->data ? b->data : "", 0, tmp };
    int rc = find_each(&nm->pat, r.src, b->len, repl_match, &r);
    if (rc)
        return rc;
    qp_buf_append(tmp, r.src + r.prev, b->len - r.prev);
    qp_buf_truncate(b, 0);
    qp_buf_append(b, tmp->data ? tmp->data : "", tmp->len);
    return 0;
}

/* Rust's char::is_whitespace (White_Space). */
static int white(int32_t c)
{
    if ((c >= 9 && c <= 13) || c == ' ' || c == 0x85)
        return 1;
    utf8proc_category_t k = utf8proc_category(c);
    return k == UTF8PROC_CATEGORY_ZS || k == UTF8PROC_CATEGORY_ZL || k == UTF8PROC_CATEGORY_ZP;
}

static int cased(int32_t c)
{
    return c >= 0 && (utf8proc_tolower(c) != c || utf8proc_toupper(c) != c);
}

/* Rust's str::to_lowercase: the simple mappings, plus SpecialCasing's
 * unconditional İ -> i̇ and Σ -> ς at the end of a word (after a cased
 * letter, not before one). */
static void lowercase(qp_buf *b, qp_buf *tmp)
{
    qp_buf_truncate(tmp, 0);
    int32_t prev = -1;
    for (size_t i = 0; i < b->len;) {
        utf8proc_int32_t c;
        utf8proc_ssize_t l = utf8proc_iterate((const utf8proc_uint8_t *)b->data + i, (utf8proc_ssize_t)(b->len - i), &c);
        if (l <= 0) {   /* cannot happen: the text is valid UTF-8 */
            qp_buf_putc(tmp, b->data[i++]);
            continue;
        }
        int32_t lc;
        if (c == 0x130) {
            qp_buf_puts(tmp, "i\xCC\x87");
        } else {
            if (c == 0x3A3) {
                utf8proc_int32_t next = -1;
                if (i + (size_t)l < b->len)
                    utf8proc_iterate((const utf8proc_uint8_t *)b->data + i + l,
                                     (utf8proc_ssize_t)(b->len - i - (size_t)l), &next);
                lc = cased(prev) && !cased(next) ? 0x3C2 : 0x3C3;
            } else {
                lc = utf8proc_tolower(c);
            }
            utf8proc_uint8_t enc[4];
            utf8proc_ssize_t el = utf8proc_encode_char(lc, enc);
            qp_buf_append(tmp, enc, (size_t)el);
        }
        prev = c;
        i += (size_t)l;
    }
    qp_buf_truncate(b, 0);
    qp_buf_append(b, tmp->data ? tmp->data : "", tmp->len);
}

/* Strips White_Space characters from the ends asked for. */
static void strip(qp_buf *b, int left, int right)
{
    size_t a = 0, z = b->len;
    while (left && a < z) {
        utf8proc_int32_t c;
        utf8proc_ssize_t l = utf8proc_iterate((const utf8proc_uint8_t *)b->data + a, (utf8proc_ssize_t)(z - a), &c);
        if (l <= 0 || !white(c))
            break;
        a += (size_t)l;
    }
    while (right && z > a) {
        size_t k = z - 1;
        while (k > a && ((unsigned char)b->data[k] & 0xC0) == 0x80)
            k--;
        utf8proc_int32_t c;
        utf8proc_ssize_t l = utf8proc_iterate((const utf8proc_uint8_t *)b->data + k, (utf8proc_ssize_t)(z - k), &c);
        if (l <= 0 || !white(c))
            break;
        z = k;
    }
    memmove(b->data, b->data + a, z - a);
    qp_buf_truncate(b, z - a);
}

int qp_normalize(const qp_norm *norms, size_t n_norms, const char *s, size_t n, qp_buf *out)
{
    int rc = 0;
    qp_buf tmp = QP_BUF_INIT;
    qp_buf_truncate(out, 0);
    qp_buf_append(out, s, n);
    for (size_t k = 0; k < n_norms && rc == 0; k++) {
        const qp_norm *nm = &norms[k];
        switch (nm->kind) {
        case QP_NORM_PREPEND:
            if (out->len) {
                qp_buf_truncate(&tmp, 0);
                qp_buf_append(&tmp, nm->str, nm->str_len);
                qp_buf_append(&tmp, out->data, out->len);
                qp_buf_truncate(out, 0);
                qp_buf_append(out, tmp.data, tmp.len);
            }
            break;
        case QP_NORM_REPLACE:
            rc = replace_all(nm, out, &tmp);
            break;
        case QP_NORM_LOWERCASE:
            lowercase(out, &tmp);
            break;
        case QP_NORM_STRIP:
            if (out->len)
                strip(out, nm->left, nm->right);
            break;
        default:
            unicode_form(nm->kind, out, &tmp);
            break;
        }
    }
    qp_buf_free(&tmp);
    return rc;
}

/* ---- pre-tokenizers --------------------------------------------------- */

/* Streams the pieces of one word cut by a pattern's matches: segments (gaps
 * and matches, in order) come in through seg(); `behavior` decides the
 * pieces, each handed to fn when the next segment shows it is complete. */
typedef struct {
    const char *s;
    size_t n;
    int origin;
    qp_split_behavior behavior;
    int invert;
    qp_word_fn fn;
    void *ud;
    size_t prev_end;        /* end of the last match */
    int has_pending;
    size_t ps, pe;          /* the piece not yet handed on */
    int pmatch;             /* ... and whether it is (ends in) a match */
    int prev_match;         /* the last segment was a match */
} splitter;

static void emit(splitter *sp, size_t a, size_t e)
{
    if (e > a)
        sp->fn(sp->ud, sp->s + a, e - a, sp->origin && a == 0);
}

static void flush(splitter *sp)
{
    if (sp->has_pending)
        emit(sp, sp->ps, sp->pe);
    sp->has_pending = 0;
}

static void hold(splitter *sp, size_t a, size_t e, int m)
{
    flush(sp);
    sp->has_pending = 1;
    sp->ps = a;
    sp->pe = e;
    sp->pmatch = m;
}

static void seg(splitter *sp, size_t a, size_t e, int m)
{
    if (sp->invert)
        m = !m;
    switch (sp->behavior) {
    case QP_SPLIT_ISOLATED:
        emit(sp, a, e);
        break;
    case QP_SPLIT_REMOVED:
        if (!m)
            emit(sp, a, e);
        break;
    case QP_SPLIT_MERGED_PREV:
        /* a match joins the piece before it unless that was a match */
        if (m && !sp->prev_match && sp->has_pending)
            sp->pe = e;
        else
            hold(sp, a, e, m);
        break;
    case QP_SPLIT_MERGED_NEXT:
        /* a match joins the piece after it unless that is a match */
        if (sp->has_pending && sp->pmatch && !m) {
            sp->pe = e;
            flush(sp);
        } else {
            hold(sp, a, e, m);
        }
        break;
    case QP_SPLIT_CONTIGUOUS:
        if (sp->has_pending && sp->pmatch == m)
            sp->pe = e;
        else
            hold(sp, a, e, m);
        break;
    }
    sp->prev_match = m;
}

static void on_match(void *ud, size_t start, size_t end)
{
    splitter *sp = ud;
    if (start > sp->prev_end)
        seg(sp, sp->prev_end, start, 0);
    seg(sp, start, end, 1);
    sp->prev_end = end;
}

/* Cuts s[0..n) at the matches of pat as `behavior` says and hands each
 * piece to fn (origin: the piece starts the text). */
static int split_word(const char *s, size_t n, const qp_pattern *pat, qp_split_behavior behavior, int invert,
                      int origin, qp_word_fn fn, void *ud)
{
    splitter sp = { .s = s, .n = n, .origin = origin, .behavior = behavior, .invert = invert, .fn = fn, .ud = ud };
    int rc = find_each(pat, s, n, on_match, &sp);
    if (rc)
        return rc;
    if (sp.prev_end < n)
        seg(&sp, sp.prev_end, n, 0);
    flush(&sp);
    return 0;
}

typedef struct {
    qp_buf *spell;
    qp_word_fn fn;
    void *ud;
} bl_t;

/* Spells a piece in the byte-level alphabet and hands it on. */
static void bl_piece(void *ud, const char *s, size_t n, int origin)
{
    bl_t *c = ud;
    pthread_once(&bl_once, bl_init);
    qp_buf_truncate(c->spell, 0);
    qp_buf_reserve(c->spell, 2 * n);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        qp_buf_append(c->spell, bl.spell[ch], bl.len[ch]);
    }
    c->fn(c->ud, c->spell->data, c->spell->len, origin);
}

int qp_pretokenize(const qp_pretok *p, const char *s, size_t n, int origin, qp_buf *scratch_a, qp_buf *scratch_b,
                   qp_word_fn fn, void *ud)
{
    if (n == 0)
        return 0;
    switch (p->kind) {
    case QP_PRE_SPLIT:
    case QP_PRE_DIGITS:
        return split_word(s, n, &p->pat, p->behavior, p->invert, origin, fn, ud);
    case QP_PRE_BYTELEVEL: {
        if (p->add_prefix_space && s[0] != ' ') {
            qp_buf_truncate(scratch_a, 0);
            qp_buf_putc(scratch_a, ' ');
            qp_buf_append(scratch_a, s, n);
            s = scratch_a->data;
            n = scratch_a->len;
        }
        bl_t c = { scratch_b, fn, ud };
        if (p->pat.re)
            return split_word(s, n, &p->pat, QP_SPLIT_ISOLATED, 0, origin, bl_piece, &c);
        bl_piece(&c, s, n, origin);
        return 0;
    }
    case QP_PRE_METASPACE: {
        qp_buf_truncate(scratch_a, 0);
        int starts = s[0] == ' ' || (n >= p->repl_len && memcmp(s, p->repl, p->repl_len) == 0);
        if (!starts && (p->prepend == QP_PREPEND_ALWAYS || (p->prepend == QP_PREPEND_FIRST && origin)))
            qp_buf_append(scratch_a, p->repl, p->repl_len);
        for (size_t k = 0; k < n; k++) {
            if (s[k] == ' ')
                qp_buf_append(scratch_a, p->repl, p->repl_len);
            else
                qp_buf_putc(scratch_a, s[k]);
        }
        if (p->split) {
            qp_pattern rep = { .lit = p->repl, .lit_len = p->repl_len };
            return split_word(scratch_a->data, scratch_a->len, &rep, QP_SPLIT_MERGED_NEXT, 0, origin, fn, ud);
        }
        fn(ud, scratch_a->data, scratch_a->len, origin);
        return 0;
    }
    }
    return 0;
}
