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
 * NFC and friends are utf8proc's. */
#include "model/tokenizer_pipe.h"

#include "common/alloc.h"
#include "common/buf.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* ---- words ------------------------------------------------------------ */

void qp_words_clear(qp_words *ws)
{
    qp_buf_truncate(&ws->text, 0);
    ws->n = 0;
}

void qp_words_free(qp_words *ws)
{
    qp_buf_free(&ws->text);
    free(ws->w);
    ws->w = NULL;
    ws->n = ws->cap = 0;
}

void qp_words_add(qp_words *ws, const char *p, size_t n, int origin)
{
    if (n == 0)
        return;
    if (ws->n == ws->cap) {
        ws->cap = ws->cap ? 2 * ws->cap : 64;
        ws->w = qp_xrealloc_array(ws->w, ws->cap, sizeof(*ws->w));
    }
    ws->w[ws->n++] = (qp_word){ (uint32_t)ws->text.len, (uint32_t)n, (uint32_t)(origin != 0) };
    qp_buf_append(&ws->text, p, n);
}

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

typedef struct {
    size_t *se;     /* start, end pairs */
    size_t n, cap;
} spans;

static void span_add(void *ud, size_t s, size_t e)
{
    spans *v = ud;
    if (v->n == v->cap) {
        v->cap = v->cap ? 2 * v->cap : 32;
        v->se = qp_xrealloc_array(v->se, v->cap, 2 * sizeof(*v->se));
    }
    v->se[2 * v->n] = s;
    v->se[2 * v->n + 1] = e;
    v->n++;
}

/* All non-overlapping matches of p in s[0..n), leftmost first. */
static void find_all(const qp_pattern *p, const char *s, size_t n, spans *v)
{
    v->n = 0;
    if (p->re) {
        qp_regex_each(p->re, s, n, span_add, v);
        return;
    }
    if (p->lit_len == 0)
        return;
    size_t i = 0;
    while (i + p->lit_len <= n) {
        const char *hit = memmem(s + i, n - i, p->lit, p->lit_len);
        if (!hit)
            break;
        size_t at = (size_t)(hit - s);
        span_add(v, at, at + p->lit_len);
        i = at + p->lit_len;
    }
}

/* ---- normalizers ----------------------------------------------------- */

static void unicode_form(qp_norm_kind k, qp_buf *b)
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
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)b->data, (utf8proc_ssize_t)b->len, &dst,
                                      (utf8proc_option_t)opt);
    if (r == UTF8PROC_ERROR_NOMEM)
        qp_xmalloc((size_t)-1);
    if (r >= 0) {   /* the text is valid UTF-8, so this always holds */
        qp_buf_truncate(b, 0);
        qp_buf_append(b, dst, (size_t)r);
    }
    free(dst);
}

static void replace_all(const qp_norm *nm, qp_buf *b, qp_buf *tmp)
{
    spans v = { 0 };
    find_all(&nm->pat, b->data ? b->data : "", b->len, &v);
    if (v.n) {
        qp_buf_truncate(tmp, 0);
        size_t prev = 0;
        for (size_t i = 0; i < v.n; i++) {
            qp_buf_append(tmp, b->data + prev, v.se[2 * i] - prev);
            qp_buf_append(tmp, nm->str, nm->str_len);
            prev = v.se[2 * i + 1];
        }
        qp_buf_append(tmp, b->data + prev, b->len - prev);
        qp_buf_truncate(b, 0);
        qp_buf_append(b, tmp->data, tmp->len);
    }
    free(v.se);
}

void qp_normalize(const qp_norm *norms, size_t n_norms, const char *s, size_t n, qp_buf *out)
{
    qp_buf tmp = QP_BUF_INIT;
    qp_buf_truncate(out, 0);
    qp_buf_append(out, s, n);
    for (size_t k = 0; k < n_norms; k++) {
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
            replace_all(nm, out, &tmp);
            break;
        default:
            unicode_form(nm->kind, out);
            break;
        }
    }
    qp_buf_free(&tmp);
}

/* ---- pre-tokenizers --------------------------------------------------- */

/* Cuts s[0..n) at the matches of pat as `behavior` says; the pieces are
 * added to out (origin: the first piece when s is at the text's start). */
static void split_word(const char *s, size_t n, const qp_pattern *pat, qp_split_behavior behavior, int invert,
                       int origin, qp_words *out, spans *m)
{
    find_all(pat, s, n, m);
    /* segments: start, end, is_match; gaps between matches included */
    size_t cap = 2 * m->n + 1, ns = 0;
    size_t *seg = qp_xmalloc(cap * 3 * sizeof(*seg));
    size_t prev = 0;
    for (size_t i = 0; i < m->n; i++) {
        size_t a = m->se[2 * i], e = m->se[2 * i + 1];
        if (a != prev) {
            seg[3 * ns] = prev, seg[3 * ns + 1] = a, seg[3 * ns + 2] = 0;
            ns++;
        }
        seg[3 * ns] = a, seg[3 * ns + 1] = e, seg[3 * ns + 2] = 1;
        ns++;
        prev = e;
    }
    if (prev != n || ns == 0) {
        seg[3 * ns] = prev, seg[3 * ns + 1] = n, seg[3 * ns + 2] = 0;
        ns++;
    }
    if (invert)
        for (size_t i = 0; i < ns; i++)
            seg[3 * i + 2] = !seg[3 * i + 2];

    /* fold into pieces: start, end, removed */
    size_t *pc = qp_xmalloc(cap * 3 * sizeof(*pc));
    size_t np = 0;
    int prev_match = -1;
    switch (behavior) {
    case QP_SPLIT_ISOLATED:
    case QP_SPLIT_REMOVED:
        for (size_t i = 0; i < ns; i++) {
            pc[3 * np] = seg[3 * i], pc[3 * np + 1] = seg[3 * i + 1];
            pc[3 * np + 2] = behavior == QP_SPLIT_REMOVED && seg[3 * i + 2];
            np++;
        }
        break;
    case QP_SPLIT_MERGED_PREV:
        for (size_t i = 0; i < ns; i++) {
            int is_m = (int)seg[3 * i + 2];
            if (is_m && prev_match != 1 && np > 0) {
                pc[3 * (np - 1) + 1] = seg[3 * i + 1];
            } else {
                pc[3 * np] = seg[3 * i], pc[3 * np + 1] = seg[3 * i + 1], pc[3 * np + 2] = 0;
                np++;
            }
            prev_match = is_m;
        }
        break;
    case QP_SPLIT_MERGED_NEXT:
        /* built back to front, then reversed */
        for (size_t k = ns; k-- > 0;) {
            int is_m = (int)seg[3 * k + 2];
            if (is_m && prev_match != 1 && np > 0) {
                pc[3 * (np - 1)] = seg[3 * k];
            } else {
                pc[3 * np] = seg[3 * k], pc[3 * np + 1] = seg[3 * k + 1], pc[3 * np + 2] = 0;
                np++;
            }
            prev_match = is_m;
        }
        for (size_t i = 0, j = np ? np - 1 : 0; i < j; i++, j--)
            for (int f = 0; f < 3; f++) {
                size_t t = pc[3 * i + f];
                pc[3 * i + f] = pc[3 * j + f];
                pc[3 * j + f] = t;
            }
        break;
    case QP_SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < ns; i++) {
            int is_m = (int)seg[3 * i + 2];
            if (is_m == prev_match && np > 0) {
                pc[3 * (np - 1) + 1] = seg[3 * i + 1];
            } else {
                pc[3 * np] = seg[3 * i], pc[3 * np + 1] = seg[3 * i + 1], pc[3 * np + 2] = 0;
                np++;
            }
            prev_match = is_m;
        }
        break;
    }
    for (size_t i = 0; i < np; i++)
        if (!pc[3 * i + 2])
            qp_words_add(out, s + pc[3 * i], pc[3 * i + 1] - pc[3 * i], origin && pc[3 * i] == 0);
    free(seg);
    free(pc);
}

/* Appends s[0..n) spelled in the byte-level alphabet as one word. */
static void add_bytelevel(qp_words *out, const char *s, size_t n, int origin, qp_buf *tmp)
{
    pthread_once(&bl_once, bl_init);
    qp_buf_truncate(tmp, 0);
    qp_buf_reserve(tmp, 2 * n);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        qp_buf_append(tmp, bl.spell[c], bl.len[c]);
    }
    qp_words_add(out, tmp->data, tmp->len, origin);
}

static void bytelevel(const qp_pretok *p, const qp_words *in, qp_words *out, spans *m, qp_buf *tmp)
{
    qp_words pieces = { 0 };
    qp_buf spelled = QP_BUF_INIT;
    for (size_t i = 0; i < in->n; i++) {
        const char *s = in->text.data + in->w[i].off;
        size_t n = in->w[i].len;
        int origin = (int)in->w[i].origin;
        if (p->add_prefix_space && s[0] != ' ') {
            qp_buf_truncate(tmp, 0);
            qp_buf_putc(tmp, ' ');
            qp_buf_append(tmp, s, n);
            s = tmp->data;
            n = tmp->len;
        }
        if (p->pat.re) {
            qp_words_clear(&pieces);
            split_word(s, n, &p->pat, QP_SPLIT_ISOLATED, 0, origin, &pieces, m);
            for (size_t k = 0; k < pieces.n; k++)
                add_bytelevel(out, pieces.text.data + pieces.w[k].off, pieces.w[k].len, (int)pieces.w[k].origin,
                              &spelled);
        } else {
            add_bytelevel(out, s, n, origin, &spelled);
        }
    }
    qp_buf_free(&spelled);
    qp_words_free(&pieces);
}

static void metaspace(const qp_pretok *p, const qp_words *in, qp_words *out, spans *m, qp_buf *tmp)
{
    qp_pattern rep = { .lit = p->repl, .lit_len = p->repl_len };
    for (size_t i = 0; i < in->n; i++) {
        const char *s = in->text.data + in->w[i].off;
        size_t n = in->w[i].len;
        int origin = (int)in->w[i].origin;
        qp_buf_truncate(tmp, 0);
        int starts = n >= 1 && (s[0] == ' ' || (n >= p->repl_len && memcmp(s, p->repl, p->repl_len) == 0));
        if (!starts && (p->prepend == QP_PREPEND_ALWAYS || (p->prepend == QP_PREPEND_FIRST && origin)))
            qp_buf_append(tmp, p->repl, p->repl_len);
        for (size_t k = 0; k < n; k++) {
            if (s[k] == ' ')
                qp_buf_append(tmp, p->repl, p->repl_len);
            else
                qp_buf_putc(tmp, s[k]);
        }
        if (p->split)
            split_word(tmp->data, tmp->len, &rep, QP_SPLIT_MERGED_NEXT, 0, origin, out, m);
        else
            qp_words_add(out, tmp->data, tmp->len, origin);
    }
}

void qp_pretokenize(const qp_pretok *p, const qp_words *in, qp_words *out)
{
    spans m = { 0 };
    qp_buf tmp = QP_BUF_INIT;
    qp_words_clear(out);
    switch (p->kind) {
    case QP_PRE_SPLIT:
    case QP_PRE_DIGITS:
        for (size_t i = 0; i < in->n; i++)
            split_word(in->text.data + in->w[i].off, in->w[i].len, &p->pat, p->behavior, p->invert,
                       (int)in->w[i].origin, out, &m);
        break;
    case QP_PRE_BYTELEVEL:
        bytelevel(p, in, out, &m, &tmp);
        break;
    case QP_PRE_METASPACE:
        metaspace(p, in, out, &m, &tmp);
        break;
    }
    free(m.se);
    qp_buf_free(&tmp);
}
