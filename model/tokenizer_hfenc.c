/* Byte-level BPE encode and decode: added tokens, then normalizers,
 * pre-tokenizers and rank merges per stretch of text (tokenizer_pipe.h);
 * decoding runs the decoder chain.
 *
 * Added tokens are matched as tokenizers' AddedVocabulary matches them:
 * leftmost match first, the longest among those starting there; tokens
 * with `normalized` false against the text as given, the others inside
 * each normalized stretch; lstrip / rstrip swallow whitespace beside the
 * match; single_word matches only between non-word characters.  Special
 * tokens are matched only with QP_TOK_PARSE_SPECIAL (otherwise they are
 * plain text, as split_special_tokens=True makes them); non-special added
 * tokens are always matched. */
#include "model/tokenizer_pipe.h"
#include "model/tokenizer_impl.h"

#include "common/alloc.h"
#include "common/buf.h"
#include "common/error.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#define MAX_TEXT ((size_t)1 << 30)

/* ---- added-token index ----------------------------------------------------- */

void qp_tok_added_index(qp_tok_bpe *b)
{
    if (b->n_added == 0)
        return;
    b->added_trie = qp_tok_trie_new();
    qp_buf norm = QP_BUF_INIT;
    for (size_t i = 0; i < b->n_added; i++) {
        const qp_added *a = &b->added[i];
        const char *key = b->added_blob + a->off;
        size_t len = a->len;
        /* a normalized token is looked for in normalized text, so by its
         * normalized spelling, as tokenizers' refresh_added_tokens builds
         * its trie ("Hello" under Lowercase matches "HELLO").  The content
         * is short, so no regex limit can fail here; a content the
         * normalizers empty can never match. */
        if (a->normalized && b->n_norms > 0) {
            if (qp_normalize(b->norms, b->n_norms, key, len, &norm) != 0)
                continue;
            key = norm.data;
            len = norm.len;
        }
        /* a repeated content keeps its first entry */
        if (len > 0)
            qp_tok_trie_add(b->added_trie, key, len, (int)i);
        if (a->normalized)
            b->any_normalized_added = 1;
    }
    qp_buf_free(&norm);
}

/* ---- characters ------------------------------------------------------------ */

static int32_t cp_at(const char *s, size_t n, size_t i, size_t *len)
{
    utf8proc_int32_t c;
    utf8proc_ssize_t l = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &c);
    if (l <= 0) {
        *len = 1;
        return -1;
    }
    *len = (size_t)l;
    return c;
}

/* The code point ending at s[i] (i > 0). */
static int32_t cp_before(const char *s, size_t i)
{
    size_t k = i - 1;
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80 && i - k < 4)
        k--;
    size_t l;
    return cp_at(s, i, k, &l);
}

/* Rust's char::is_whitespace: the White_Space property. */
static int is_ws(int32_t c)
{
    if (c < 0)
        return 0;
    if ((c >= 9 && c <= 13) || c == ' ' || c == 0x85)
        return 1;
    utf8proc_category_t k = utf8proc_category(c);
    return k == UTF8PROC_CATEGORY_ZS || k == UTF8PROC_CATEGORY_ZL || k == UTF8PROC_CATEGORY_ZP;
}

/* tokenizers' single_word boundary is Rust regex's Unicode \w (UTS #18):
 * Alphabetic (letters, letter numbers, and marks below), marks, decimal
 * digits, connector punctuation ('_'), ZWNJ / ZWJ.  Other numbers (No:
 * '²') are not word characters. */
static int is_word(int32_t c)
{
    if (c < 0)
        return 0;
    if (c == 0x200C || c == 0x200D)
        return 1;
    utf8proc_category_t k = utf8proc_category(c);
    return (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_ND) || k == UTF8PROC_CATEGORY_NL ||
           k == UTF8PROC_CATEGORY_PC;
}

/* Invalid UTF-8 bytes each become U+FFFD (llama.cpp's reading; a Python
 * string given to tokenizers cannot hold them).  NULL when s is valid. */
static char *sanitize(const char *s, size_t n, size_t *out_len)
{
    size_t i = 0;
    while (i < n) {
        size_t l = qp_utf8_char_len((const unsigned char *)s + i, n - i);
        if (!l)
            break;
        i += l;
    }
    if (i == n)
        return NULL;
    qp_buf b = QP_BUF_INIT;
    qp_buf_append(&b, s, i);
    while (i < n) {
        size_t l = qp_utf8_char_len((const unsigned char *)s + i, n - i);
        if (l) {
            qp_buf_append(&b, s + i, l);
            i += l;
        } else {
            qp_buf_puts(&b, "\xEF\xBF\xBD");
            i++;
        }
    }
    return qp_buf_detach(&b, out_len);
}

/* ---- encoding ------------------------------------------------------------- */

typedef struct enc enc_t;

/* One pre-tokenizer stage of the depth-first pipeline. */
typedef struct {
    enc_t *e;
    size_t k;            /* the stage that receives the words */
    qp_buf a, b;         /* its scratch */
} stage_t;

struct enc {
    const qp_tokenizer *t;
    const qp_tok_bpe *b;
    unsigned flags;
    qp_ids out;
    int rc;              /* the first error; the rest of the text is skipped */
    qp_buf norm;
    stage_t *st;         /* [n_pres + 1] */
};

/* Candidates for added_at, shortest first: the longest acceptable wins
 * (llama.cpp), or only the longest when acceptable (tokenizers). */
typedef struct {
    const enc_t *e;
    const char *s;
    size_t n, i;
    int normalized;
    int best;
    size_t best_len;
    size_t longest_len;  /* of any token of this kind, acceptable or not */
} cand_t;

static void consider(void *ud, int a, size_t len)
{
    cand_t *c = ud;
    const qp_added *ad = &c->e->b->added[a];
    if (ad->normalized != c->normalized)
        return;
    c->longest_len = len;
    if (ad->special && !(c->e->flags & QP_TOK_PARSE_SPECIAL))
        return;
    if (ad->single_word) {
        size_t cl, i = c->i;
        if ((i > 0 && is_word(cp_before(c->s, i))) || (i + len < c->n && is_word(cp_at(c->s, c->n, i + len, &cl))))
            return;
    }
    c->best = a;
    c->best_len = len;
}

/* The added token matching at s[i] (normalized: the tokens matched after
 * normalization): its index, with the span it covers (strips included) in
 * [*ms, *me); -1 when none, *me then where to look next.  lo bounds how
 * far lstrip may reach back.
 * tokenizers' AddedVocabulary walks the leftmost-longest matches of all its
 * tokens and drops one it rejects (a special token left as text, a
 * single_word token inside a word), resuming after it: no shorter token at
 * i and none inside the dropped one.  llama.cpp's partition never looks
 * for tokens it would reject, so a shorter or later one can match. */
static int added_at(const enc_t *e, const char *s, size_t n, size_t i, size_t lo, int normalized, size_t *ms,
                    size_t *me)
{
    cand_t c = { e, s, n, i, normalized, -1, 0, 0 };
    qp_tok_trie_prefixes(e->b->added_trie, s + i, n - i, consider, &c);
    if (c.best < 0 || (e->b->added_hf && c.best_len != c.longest_len)) {
        *me = e->b->added_hf && c.longest_len ? i + c.longest_len : i + 1;
        return -1;
    }
    const qp_added *ad = &e->b->added[c.best];
    size_t a0 = i, a1 = i + c.best_len;
    if (ad->lstrip)
        while (a0 > lo && is_ws(cp_before(s, a0))) {
            size_t k0 = a0 - 1;
            while (k0 > lo && ((unsigned char)s[k0] & 0xC0) == 0x80)
                k0--;
            a0 = k0;
        }
    if (ad->rstrip) {
        size_t cl;
        while (a1 < n && is_ws(cp_at(s, n, a1, &cl)))
            a1 += cl;
    }
    *ms = a0;
    *me = a1;
    return c.best;
}

/* A word reaching stage k: the next pre-tokenizer, or the model after
 * the last.  Depth-first, so no stage keeps a list of words. */
static void stage_word(void *ud, const char *s, size_t n, int origin)
{
    stage_t *st = ud;
    enc_t *e = st->e;
    if (e->rc)
        return;
    if (st->k == e->b->n_pres) {
        qp_tok_bpe_word(e->t, s, n, &e->out);
        return;
    }
    int rc = qp_pretokenize(&e->b->pres[st->k], s, n, origin, &st->a, &st->b, stage_word, &e->st[st->k + 1]);
    if (rc && !e->rc)
        e->rc = rc;
}

/* Pre-tokenizers and model over one normalized stretch. */
static void model_text(enc_t *e, const char *s, size_t n, int origin)
{
    if (n > 0)
        stage_word(&e->st[0], s, n, origin);
}

/* Normalizes a stretch of the text, cuts out the added tokens that match
 * normalized text, and models the rest. */
static void encode_stretch(enc_t *e, const char *s, size_t n, int origin)
{
    if (n == 0 || e->rc)
        return;
    if ((e->rc = qp_normalize(e->b->norms, e->b->n_norms, s, n, &e->norm)))
        return;
    const char *copy = e->norm.data;
    size_t nn = e->norm.len;
    if (!e->b->any_normalized_added || nn == 0) {
        model_text(e, copy, nn, origin);
        return;
    }
    size_t start = 0;
    for (size_t i = 0; i < nn;) {
        size_t ms, me;
        int a = added_at(e, copy, nn, i, start, 1, &ms, &me);
        if (a < 0) {
            i = me;
            continue;
        }
        model_text(e, copy + start, ms - start, origin && start == 0);
        qp_ids_push(&e->out, e->b->added[a].id);
        i = start = me;
    }
    model_text(e, copy + start, nn - start, origin && start == 0);
}

int qp_tok_bpe_encode(const qp_tokenizer *t, const char *text, size_t len, unsigned flags, int **out_ids,
                      size_t *out_n)
{
    *out_ids = NULL;
    *out_n = 0;
    if (len > MAX_TEXT)
        return qp_error_set(QP_EUSAGE, "tokenizer: text of %zu bytes is too long (limit %zu bytes); split it",
                            len, MAX_TEXT);
    if (len > 0 && !text)
        return qp_error_set(QP_EUSAGE, "tokenizer: text is NULL");
    size_t n = len;
    char *clean = sanitize(len ? text : "", len, &n);
    const char *s = clean ? clean : len ? text : "";
    enc_t e = { .t = t, .b = t->bpe, .flags = flags };
    e.st = qp_xcalloc(e.b->n_pres + 1, sizeof(*e.st));
    for (size_t k = 0; k <= e.b->n_pres; k++) {
        e.st[k].e = &e;
        e.st[k].k = k;
    }
    if ((flags & QP_TOK_ADD_BOS) && t->bos >= 0)
        qp_ids_push(&e.out, t->bos);

    size_t start = 0;
    for (size_t i = 0; i < n && !e.rc;) {
        size_t ms, me;
        if (!e.b->added_trie)
            break;
        int a = added_at(&e, s, n, i, start, 0, &ms, &me);
        if (a < 0) {
            i = me;
            continue;
        }
        encode_stretch(&e, s + start, ms - start, start == 0);
        qp_ids_push(&e.out, e.b->added[a].id);
        i = start = me;
    }
    encode_stretch(&e, s + start, n - start, start == 0);

    if ((flags & QP_TOK_ADD_EOS) && t->eos >= 0)
        qp_ids_push(&e.out, t->eos);
    if (e.rc) {   /* no partial ids: they would be wrong, not just short */
        free(e.out.ids);
    } else {
        if (!e.out.ids)
            e.out.ids = qp_xmalloc(sizeof(int));
        *out_ids = e.out.ids;
        *out_n = e.out.n;
    }
    free(clean);
    qp_buf_free(&e.norm);
    for (size_t k = 0; k <= e.b->n_pres; k++) {
        qp_buf_free(&e.st[k].a);
        qp_buf_free(&e.st[k].b);
    }
    free(e.st);
    return e.rc;
}

/* ---- decoding -------------------------------------------------------------- */

/* A list of byte strings (the decoders' tokens). */
typedef struct {
    qp_buf text;
    size_t *off, *len;
    size_t n, cap;
} toks_t;

static void toks_add(toks_t *v, const char *p, size_t n)
{
    if (v->n == v->cap) {
        v->cap = v->cap ? 2 * v->cap : 64;
        v->off = qp_xrealloc_array(v->off, v->cap, sizeof(*v->off));
        v->len = qp_xrealloc_array(v->len, v->cap, sizeof(*v->len));
    }
    v->off[v->n] = v->text.len;
    v->len[v->n] = n;
    v->n++;
    qp_buf_append(&v->text, p, n);
}

static void toks_free(toks_t *v)
{
    qp_buf_free(&v->text);
    free(v->off);
    free(v->len);
    memset(v, 0, sizeof(*v));
}

#define TOK(v, i) ((v)->text.data + (v)->off[i])

/* <0xNN> (either case of hex, as tokenizers parses it) -> NN, else -1. */
static int byte_token(const char *p, size_t n)
{
    if (n != 6 || memcmp(p, "<0x", 3) != 0 || p[5] != '>')
        return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = p[i];
        int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'A' && c <= 'F') ? c - 'A' + 10
              : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Rust's String::from_utf8_lossy, which tokenizers' ByteLevel decoder
 * ends with: each maximal ill-formed subpart (a bad byte, or the valid
 * start of a character cut short) becomes one U+FFFD.  The decoders after
 * ByteLevel (a Replace regex runs with PCRE2_NO_UTF_CHECK) need valid text,
 * and so do callers printing the result; a piece that splits a character
 * decodes to U+FFFD on its own, and joined with the rest of the character
 * to the character. */
static void utf8_lossy(const char *p, size_t n, qp_buf *out)
{
    const unsigned char *s = (const unsigned char *)p;
    size_t i = 0, run = 0;
    while (i < n) {
        size_t l = qp_utf8_char_len(s + i, n - i);
        if (l) {
            i += l;
            continue;
        }
        qp_buf_append(out, p + run, i - run);
        qp_buf_puts(out, "\xEF\xBF\xBD");
        i += qp_utf8_bad_len(s + i, n - i);
        run = i;
    }
    qp_buf_append(out, p + run, n - run);
}

static void dec_bytelevel(const toks_t *in, toks_t *out, qp_buf *tmp)
{
    qp_buf all = QP_BUF_INIT;
    for (size_t i = 0; i < in->n; i++) {
        const char *p = TOK(in, i);
        size_t n = in->len[i], at = 0;
        qp_buf_truncate(tmp, 0);
        int ok = 1;
        while (at < n && ok) {
            size_t l;
            int32_t c = cp_at(p, n, at, &l);
            int byte = c >= 0 ? qp_unicode_to_byte((uint32_t)c) : -1;
            if (byte < 0)
                ok = 0;
            else
                qp_buf_putc(tmp, (char)byte);
            at += l;
        }
        if (ok)
            qp_buf_append(&all, tmp->data, tmp->len);
        else
            qp_buf_append(&all, p, n);
    }
    qp_buf_truncate(tmp, 0);
    utf8_lossy(all.data ? all.data : "", all.len, tmp);
    toks_add(out, tmp->data ? tmp->data : "", tmp->len);
    qp_buf_free(&all);
}

static void dec_bytefallback(const toks_t *in, toks_t *out, qp_buf *tmp)
{
    qp_buf_truncate(tmp, 0);
    size_t nbytes = 0;
    for (size_t i = 0; i <= in->n; i++) {
        int v = i < in->n ? byte_token(TOK(in, i), in->len[i]) : -1;
        if (v >= 0) {
            qp_buf_putc(tmp, (char)v);
            nbytes++;
            continue;
        }
        if (nbytes) {
            size_t at = 0, ok = 1;
            while (at < tmp->len && ok) {
                size_t l = qp_utf8_char_len((const unsigned char *)tmp->data + at, tmp->len - at);
                ok = l > 0;
                at += l;
            }
            if (ok)
                toks_add(out, tmp->data, tmp->len);
            else
                for (size_t k = 0; k < nbytes; k++)
                    toks_add(out, "\xEF\xBF\xBD", 3);
            qp_buf_truncate(tmp, 0);
            nbytes = 0;
        }
        if (i < in->n)
            toks_add(out, TOK(in, i), in->len[i]);
    }
}

static void dec_replace(const qp_dec *d, const toks_t *in, toks_t *out, qp_buf *tmp)
{
    qp_norm nm = { .kind = QP_NORM_REPLACE, .str = d->str, .str_len = d->str_len, .pat = d->pat };
    for (size_t i = 0; i < in->n; i++) {
        qp_normalize(&nm, 1, TOK(in, i), in->len[i], tmp);
        toks_add(out, tmp->data ? tmp->data : "", tmp->len);
    }
}

static void dec_strip(const qp_dec *d, const toks_t *in, toks_t *out)
{
    for (size_t i = 0; i < in->n; i++) {
        const char *p = TOK(in, i);
        size_t n = in->len[i], a = 0, z = n, l = d->str_len;
        for (int k = 0; k < d->start && a + l <= z && memcmp(p + a, d->str, l) == 0; k++)
            a += l;
        for (int k = 0; k < d->stop && z >= a + l && memcmp(p + z - l, d->str, l) == 0; k++)
            z -= l;
        toks_add(out, p + a, z - a);
    }
}

static void dec_metaspace(const qp_dec *d, const toks_t *in, toks_t *out, qp_buf *tmp)
{
    for (size_t i = 0; i < in->n; i++) {
        const char *p = TOK(in, i);
        size_t n = in->len[i];
        qp_buf_truncate(tmp, 0);
        for (size_t k = 0; k < n;) {
            if (d->str_len && k + d->str_len <= n && memcmp(p + k, d->str, d->str_len) == 0) {
                /* tokenizers drops every replacement of the first token */
                if (!(i == 0 && d->prepend != QP_PREPEND_NEVER))
                    qp_buf_putc(tmp, ' ');
                k += d->str_len;
            } else {
                qp_buf_putc(tmp, p[k++]);
            }
        }
        toks_add(out, tmp->data ? tmp->data : "", tmp->len);
    }
}

int qp_tok_bpe_decode(const qp_tokenizer *t, const int *ids, size_t n, char **out_text, size_t *out_len)
{
    const qp_tok_bpe *b = t->bpe;
    toks_t v[2];
    memset(v, 0, sizeof(v));
    qp_buf tmp = QP_BUF_INIT;
    *out_text = NULL;
    if (out_len)
        *out_len = 0;
    for (size_t i = 0; i < n; i++) {
        int id = ids[i];
        if (id < 0 || (size_t)id >= t->n) {
            toks_free(&v[0]);
            return qp_error_set(QP_EUSAGE, "tokenizer: token id %d at position %zu is out of range "
                                "(vocabulary of %zu pieces)", id, i, t->n);
        }
        toks_add(&v[0], t->blob + t->off[id], t->len[id]);
    }
    toks_t *cur = &v[0], *nxt = &v[1];
    for (size_t k = 0; k < b->n_decs; k++) {
        const qp_dec *d = &b->decs[k];
        toks_free(nxt);
        switch (d->kind) {
        case QP_DEC_BYTELEVEL: dec_bytelevel(cur, nxt, &tmp); break;
        case QP_DEC_BYTEFALLBACK: dec_bytefallback(cur, nxt, &tmp); break;
        case QP_DEC_REPLACE: dec_replace(d, cur, nxt, &tmp); break;
        case QP_DEC_STRIP: dec_strip(d, cur, nxt); break;
        case QP_DEC_METASPACE: dec_metaspace(d, cur, nxt, &tmp); break;
        case QP_DEC_FUSE:
            toks_add(nxt, cur->text.data ? cur->text.data : "", cur->text.len);
            break;
        }
        toks_t *x = cur;
        cur = nxt;
        nxt = x;
    }
    qp_buf res = QP_BUF_INIT;
    for (size_t i = 0; i < cur->n; i++) {
        if (i > 0 && !b->has_decoder)
            qp_buf_putc(&res, ' ');
        qp_buf_append(&res, TOK(cur, i), cur->len[i]);
    }
    *out_text = qp_buf_detach(&res, out_len);
    toks_free(&v[0]);
    toks_free(&v[1]);
    qp_buf_free(&tmp);
    return 0;
}

/* ---- lifetime ---------------------------------------------------------------- */

void qp_tok_bpe_free(qp_tok_bpe *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n_norms; i++) {
        free(b->norms[i].str);
        qp_pattern_free(&b->norms[i].pat);
    }
    for (size_t i = 0; i < b->n_pres; i++) {
        qp_pattern_free(&b->pres[i].pat);
        free(b->pres[i].repl);
    }
    for (size_t i = 0; i < b->n_decs; i++) {
        qp_pattern_free(&b->decs[i].pat);
        free(b->decs[i].str);
    }
    free(b->norms);
    free(b->pres);
    free(b->decs);
    free(b->added);
    free(b->added_blob);
    qp_tok_trie_free(b->added_trie);
    free(b->merges);
    free(b->merge_blob);
    free(b->merge_off);
    free(b);
}
