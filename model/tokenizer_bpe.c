/* SentencePiece BPE encoding and decoding (sentencepiece bpe_model.cc and
 * llama.cpp's llm_tokenizer_spm implement the same algorithm).
 *
 * Encoding keeps the normalised text in one buffer and the symbols as a
 * doubly linked list of [start, len) spans over it; candidate merges live in
 * a 4-ary max-heap ordered by (score desc, left index asc).  A popped
 * candidate is stale when either side was emptied or grew since it was
 * pushed (their lengths no longer add up to the candidate's size).  Every
 * merge removes one symbol and pushes at most two candidates, so the whole
 * encode is O(n log n) in the text length.
 *
 * The text is first cut where two adjacent characters appear side by side
 * in no mergeable piece (a filter built at load time, see tokenizer.c):
 * no merge can cross such a cut, so each run is merged on its own with
 * the same result, and the heap stays small (runs are roughly words). */
#include "model/tokenizer.h"
#include "model/tokenizer_impl.h"
#include "model/tokenizer_pipe.h"

#include "common/alloc.h"
#include "common/buf.h"
#include "common/error.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Texts beyond this are refused so spans fit in uint32 after the up-to-3x
 * growth of ' ' -> "▁". */
#define MAX_TEXT ((size_t)1 << 30)

typedef struct {
    uint32_t start, len;   /* bytes [start, start + len) of the normalised text */
    int32_t prev, next;    /* neighbours in the list, -1 at the ends */
    uint8_t frozen;        /* a USER_DEFINED piece: never merged further */
} sym_t;

typedef struct {
    uint64_t key;          /* (ordered score of the merged piece) << 32 | ~left:
                              one unsigned compare orders by score, then
                              leftmost first */
    uint32_t right;        /* symbol indices */
    uint32_t size;         /* byte length of the merged piece when pushed */
} bigram_t;

typedef struct {
    const qp_tokenizer *t;
    const char *text;      /* normalised text */
    sym_t *sym;            /* [nsym] */
    bigram_t *heap;        /* [cap_heap], max-heap */
    size_t nheap;
    uint32_t *rev;         /* [n_vocab] UNUSED piece -> left length of the
                              pair that last proposed it (0: none); NULL when
                              the vocabulary has no UNUSED pieces */
    int *ids;              /* [cap_ids] output */
    size_t nids;
    int prev_unk;          /* last output was an unk from a run of unknowns */
} enc_t;

/* ---- heap ----------------------------------------------------------- */

/* Maps a finite float to a uint32 with the same order (-0 as +0, so the
 * two tie as floats do). */
static uint32_t score_order(float f)
{
    uint32_t u;
    if (f == 0.0f)
        f = 0.0f;
    memcpy(&u, &f, 4);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* 1 when a must be popped before b: higher score, then leftmost. */
static int before(const bigram_t *a, const bigram_t *b)
{
    return a->key > b->key;
}

/* A 4-ary heap: half the depth of a binary one, and a node's children
 * share a cache line. */
static void heap_push(enc_t *e, bigram_t b)
{
    size_t i = e->nheap++;
    while (i > 0) {
        size_t p = (i - 1) / 4;
        if (!before(&b, &e->heap[p]))
            break;
        e->heap[i] = e->heap[p];
        i = p;
    }
    e->heap[i] = b;
}

static bigram_t heap_pop(enc_t *e)
{
    bigram_t top = e->heap[0];
    bigram_t last = e->heap[--e->nheap];
    size_t n = e->nheap, i = 0;
    for (;;) {
        size_t c = 4 * i + 1;
        if (c >= n)
            break;
        size_t best = c, end = c + 4 < n ? c + 4 : n;
        for (size_t k = c + 1; k < end; k++)
            if (before(&e->heap[k], &e->heap[best]))
                best = k;
        if (!before(&e->heap[best], &last))
            break;
        e->heap[i] = e->heap[best];
        i = best;
    }
    if (n > 0)
        e->heap[i] = last;
    return top;
}

/* ---- merging -------------------------------------------------------- */

/* Pieces that merges may produce: sentencepiece's pieces_ map (CONTROL,
 * UNKNOWN and BYTE pieces are never spelled by text). */
static int mergeable(int type)
{
    return type == QP_TOK_NORMAL || type == QP_TOK_USER_DEFINED || type == QP_TOK_UNUSED;
}

static void try_pair(enc_t *e, int32_t l, int32_t r)
{
    if (l < 0 || r < 0 || e->sym[l].frozen || e->sym[r].frozen)
        return;
    const sym_t *a = &e->sym[l], *b = &e->sym[r];
    uint32_t size = a->len + b->len;
    int id = qp_tok_lookup(e->t, e->text + a->start, size);
    if (id < 0 || !mergeable(e->t->types[id]))
        return;
    uint64_t key = (uint64_t)score_order(e->t->scores[id]) << 32 | (uint32_t)~(uint32_t)l;
    heap_push(e, (bigram_t){ key, (uint32_t)r, size });
    /* Like sentencepiece, remember the split of an UNUSED piece when it is
     * proposed (last proposal wins), to undo it after merging. */
    if (e->rev && e->t->types[id] == QP_TOK_UNUSED)
        e->rev[id] = a->len;
}

static void emit(enc_t *e, int id)
{
    e->ids[e->nids++] = id;
}

/* A span that is not a piece: its bytes' <0xNN> pieces, or one unk for a
 * whole run of unknown spans when there is no byte fallback. */
static void emit_unknown(enc_t *e, uint32_t start, uint32_t len)
{
    const qp_tokenizer *t = e->t;
    if (t->byte_fallback) {
        for (uint32_t i = 0; i < len; i++) {
            int id = t->byte_id[(unsigned char)e->text[start + i]];
            emit(e, id >= 0 ? id : t->unk);
        }
        e->prev_unk = 0;
        return;
    }
    if (!e->prev_unk)
        emit(e, t->unk);
    e->prev_unk = 1;
}

/* Emits the span [start, start+len), splitting merged UNUSED pieces back
 * into the pieces they were made of. */
static void emit_span(enc_t *e, uint32_t start, uint32_t len)
{
    int id = qp_tok_lookup(e->t, e->text + start, len);
    if (id < 0) {
        emit_unknown(e, start, len);
        return;
    }
    if (e->t->types[id] == QP_TOK_UNUSED && e->rev && e->rev[id] > 0 && e->rev[id] < len) {
        uint32_t left = e->rev[id];
        emit_span(e, start, left);
        emit_span(e, start + left, len - left);
        return;
    }
    emit(e, id);
    e->prev_unk = 0;
}

/* 0 when no mergeable piece holds the characters of adjacent symbols i
 * and j = i + 1 side by side, so no merge can ever cross between them. */
static int may_join(const enc_t *e, int32_t i, int32_t j)
{
    const sym_t *a = &e->sym[i], *b = &e->sym[j];
    if (a->frozen || b->frozen)
        return 0;
    size_t h = (size_t)qp_tok_hash(e->text + a->start, a->len + b->len) & e->t->pair_mask;
    return (e->t->pair_bits[h / 64] >> (h % 64)) & 1;
}

/* BPE over symbols first..last (adjacent, fresh from the split), then
 * emits the resulting pieces. */
static void merge_run(enc_t *e, int32_t first, int32_t last)
{
    for (int32_t i = first; i <= last; i++) {
        e->sym[i].prev = i > first ? i - 1 : -1;
        e->sym[i].next = i < last ? i + 1 : -1;
    }
    e->nheap = 0;
    for (int32_t i = first; i < last; i++)
        try_pair(e, i, i + 1);

    while (e->nheap > 0) {
        bigram_t b = heap_pop(e);
        int32_t left = (int32_t)~(uint32_t)b.key;
        sym_t *l = &e->sym[left], *r = &e->sym[b.right];
        if (l->len == 0 || r->len == 0 || l->len + r->len != b.size || l->next != (int32_t)b.right)
            continue;
        /* r joins l; l keeps its index so left-to-right tie order holds. */
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0)
            e->sym[r->next].prev = left;
        try_pair(e, l->prev, left);
        try_pair(e, left, l->next);
    }

    for (int32_t i = first; i >= 0; i = e->sym[i].next)
        emit_span(e, e->sym[i].start, e->sym[i].len);
}

/* ---- normalisation -------------------------------------------------- */

/* sentencepiece's normaliser without a charsmap: optionally squeeze and
 * trim ' ', prepend the dummy prefix, spell ' ' as "▁".  Returns the
 * malloc'ed text and its length in *out_len. */
static char *normalize(const qp_tokenizer *t, const char *text, size_t len, size_t *out_len)
{
    char *buf = qp_xmalloc(3 * len + QP_SPACE_SYM_LEN + 1);
    const char *space = t->escape_ws ? QP_SPACE_SYM : " ";
    size_t space_len = t->escape_ws ? QP_SPACE_SYM_LEN : 1;
    size_t begin = 0, end = len;
    if (t->remove_extra_ws) {
        while (begin < end && text[begin] == ' ')
            begin++;
        while (end > begin && text[end - 1] == ' ')
            end--;
    }
    size_t o = 0;
    if (begin < end && t->add_dummy_prefix) {
        memcpy(buf, space, space_len);
        o = space_len;
    }
    for (size_t i = begin; i < end; i++) {
        if (text[i] == ' ') {
            if (t->remove_extra_ws && i > begin && text[i - 1] == ' ')
                continue;
            memcpy(buf + o, space, space_len);
            o += space_len;
        } else {
            buf[o++] = text[i];
        }
    }
    buf[o] = '\0';
    *out_len = o;
    return buf;
}

/* ---- encode --------------------------------------------------------- */

/* Longest USER_DEFINED piece starting at text[i], 0 when none. */
static size_t user_match(const qp_tokenizer *t, const char *text, size_t i, size_t n)
{
    if (!t->max_user_len || !t->user_first[(unsigned char)text[i]])
        return 0;
    size_t max = n - i < t->max_user_len ? n - i : t->max_user_len;
    for (size_t l = max; l > 0; l--) {
        int id = qp_tok_lookup(t, text + i, l);
        if (id >= 0 && t->types[id] == QP_TOK_USER_DEFINED)
            return l;
    }
    return 0;
}

typedef struct {
    int id;
    size_t len;
} longest_t;

static void keep_longest(void *ud, int id, size_t len)
{
    longest_t *l = ud;
    l->id = id;
    l->len = len;
}

/* Longest CONTROL / UNKNOWN piece starting at text[i] (its id in *id), 0
 * when none. */
static size_t control_match(const qp_tokenizer *t, const char *text, size_t i, size_t n, int *id)
{
    longest_t l = { -1, 0 };
    qp_tok_trie_prefixes(t->ctrl_trie, text + i, n - i, keep_longest, &l);
    *id = l.id;
    return l.len;
}

/* QP_TOK_PARSE_SPECIAL for SentencePiece, as llama.cpp does it: CONTROL and
 * UNKNOWN pieces written in the text become their ids, and each stretch
 * between them is encoded on its own (so each gets the dummy prefix). */
static int encode_specials(const qp_tokenizer *t, const char *text, size_t len, unsigned flags, int **out_ids,
                           size_t *out_n)
{
    size_t cap = len + 3, n = 0, start = 0;
    int *ids = qp_xmalloc(cap * sizeof(*ids));
    if ((flags & QP_TOK_ADD_BOS) && t->bos >= 0)
        ids[n++] = t->bos;
    for (size_t i = 0; i <= len; i++) {
        int id = -1;
        size_t l = i < len ? control_match(t, text, i, len, &id) : 0;
        if (!l && i < len)
            continue;
        int *part = NULL;
        size_t np = 0;
        int rc = qp_tokenizer_encode(t, text + start, i - start, 0, &part, &np);
        if (rc) {
            free(ids);
            return rc;
        }
        if (n + np + 3 > cap) {
            cap = 2 * (n + np + 3);
            ids = qp_xrealloc_array(ids, cap, sizeof(*ids));
        }
        memcpy(ids + n, part, np * sizeof(*ids));
        n += np;
        free(part);
        if (l) {
            ids[n++] = id;
            i += l - 1;
            start = i + 1;
        }
    }
    if ((flags & QP_TOK_ADD_EOS) && t->eos >= 0)
        ids[n++] = t->eos;
    *out_ids = ids;
    *out_n = n;
    return 0;
}

int qp_tokenizer_encode(const qp_tokenizer *t, const char *text, size_t len,
                        unsigned flags, int **out_ids, size_t *out_n)
{
    if (t->model == QP_TOK_MODEL_BPE)
        return qp_tok_bpe_encode(t, text, len, flags, out_ids, out_n);
    enc_t e = { .t = t };
    char *norm = NULL;
    size_t n = 0;
    *out_ids = NULL;
    *out_n = 0;

    if (len > MAX_TEXT)
        return qp_error_set(QP_EUSAGE, "tokenizer: text of %zu bytes is too long (limit %zu bytes); split it",
                            len, MAX_TEXT);
    if (len > 0 && !text)
        return qp_error_set(QP_EUSAGE, "tokenizer: text is NULL");
    if ((flags & QP_TOK_PARSE_SPECIAL) && t->ctrl_trie && len > 0)
        return encode_specials(t, text, len, flags, out_ids, out_n);
    norm = normalize(t, len ? text : "", len, &n);
    e.text = norm;
    /* Output: at most one id per normalised byte, plus bos and eos. */
    e.ids = qp_xmalloc((n + 2) * sizeof(*e.ids));
    e.sym = qp_xmalloc((n ? n : 1) * sizeof(*e.sym));
    /* Each merge pushes at most two candidates and removes a symbol. */
    e.heap = qp_xmalloc((3 * n + 1) * sizeof(*e.heap));
    if (t->has_unused)
        e.rev = qp_xcalloc(t->n, sizeof(*e.rev));

    if ((flags & QP_TOK_ADD_BOS) && t->bos >= 0)
        emit(&e, t->bos);

    /* Split into characters (an invalid byte is a character of its own) or
     * whole USER_DEFINED pieces. */
    int32_t nsym = 0;
    for (size_t i = 0; i < n;) {
        size_t l = user_match(t, norm, i, n);
        int frozen = l > 0;
        if (!l)
            l = qp_utf8_char_len((const unsigned char *)norm + i, n - i);
        if (!l)
            l = 1;
        e.sym[nsym] = (sym_t){ (uint32_t)i, (uint32_t)l, -1, -1, (uint8_t)frozen };
        nsym++;
        i += l;
    }

    /* Merge each run of symbols that might join on its own: the runs never
     * interact, and a small heap stays in cache. */
    int32_t first = 0;
    for (int32_t i = 0; i < nsym; i++) {
        if (i + 1 < nsym && may_join(&e, i, i + 1))
            continue;
        merge_run(&e, first, i);
        first = i + 1;
    }

    if ((flags & QP_TOK_ADD_EOS) && t->eos >= 0)
        emit(&e, t->eos);

    free(norm);
    free(e.sym);
    free(e.heap);
    free(e.rev);
    *out_ids = e.ids;
    *out_n = e.nids;
    return 0;
}

/* ---- decode --------------------------------------------------------- */

/* Appends piece text with every "▁" spelled ' ' (when the model escapes
 * whitespace); skip_prefix drops one leading "▁". */
static void put_text(qp_buf *b, const char *p, size_t n, int escape, int skip_prefix)
{
    size_t i = 0;
    if (skip_prefix && n >= QP_SPACE_SYM_LEN && memcmp(p, QP_SPACE_SYM, QP_SPACE_SYM_LEN) == 0)
        i = QP_SPACE_SYM_LEN;
    else if (skip_prefix && !escape && n >= 1 && p[0] == ' ')
        i = 1;
    size_t run = i;
    for (; i < n; i++) {
        if (escape && i + QP_SPACE_SYM_LEN <= n && memcmp(p + i, QP_SPACE_SYM, QP_SPACE_SYM_LEN) == 0) {
            qp_buf_append(b, p + run, i - run);
            qp_buf_putc(b, ' ');
            i += QP_SPACE_SYM_LEN - 1;
            run = i + 1;
        }
    }
    qp_buf_append(b, p + run, n - run);
}

int qp_tokenizer_decode(const qp_tokenizer *t, const int *ids, size_t n, unsigned flags,
                        char **out_text, size_t *out_len)
{
    if (t->model == QP_TOK_MODEL_BPE)
        return qp_tok_bpe_decode(t, ids, n, out_text, out_len);
    qp_buf b = QP_BUF_INIT;
    *out_text = NULL;
    if (out_len)
        *out_len = 0;
    /* Strip the dummy prefix from the first piece that is not CONTROL. */
    int at_start = (flags & QP_TOK_DECODE_STRIP_PREFIX) && t->add_dummy_prefix;
    for (size_t i = 0; i < n; i++) {
        int id = ids[i];
        if (id < 0 || (size_t)id >= t->n) {
            qp_buf_free(&b);
            return qp_error_set(QP_EUSAGE, "tokenizer: token id %d at position %zu is out of range "
                                "(vocabulary of %zu pieces)", id, i, t->n);
        }
        const char *p = t->blob + t->off[id];
        size_t len = t->len[id];
        switch (t->types[id]) {
        case QP_TOK_CONTROL:
            continue;
        case QP_TOK_BYTE: {
            char c = (char)(((p[3] >= 'A' ? p[3] - 'A' + 10 : p[3] - '0') << 4) |
                            (p[4] >= 'A' ? p[4] - 'A' + 10 : p[4] - '0'));
            qp_buf_putc(&b, c);
            break;
        }
        case QP_TOK_UNKNOWN:
            /* sentencepiece's surface for <unk>: " ⁇ ". */
            qp_buf_puts(&b, at_start ? "\xE2\x81\x87 " : " \xE2\x81\x87 ");
            break;
        default:
            put_text(&b, p, len, t->escape_ws, at_start);
            break;
        }
        at_start = 0;
    }
    *out_text = qp_buf_detach(&b, out_len);
    return 0;
}
