/* Rank BPE (GPT-2 style), as the Hugging Face BPE model and llama.cpp's
 * llm_tokenizer_bpe run it on one pre-tokenized word:
 *   word -> one symbol per UTF-8 character (its piece id) -> repeatedly
 *   merge the adjacent pair with the lowest merge rank (leftmost among
 *   equals) into the piece the merge names -> the symbols' ids.
 * Symbols form a linked list over an array; candidate pairs sit in a binary
 * min-heap keyed (rank, left index).  A popped candidate is stale when its
 * left symbol died or either side no longer holds the ids it was pushed
 * with.  Each merge removes a symbol and pushes at most two candidates, so
 * a word of n characters costs O(n log n) time and O(n) memory, however
 * long (a text without spaces is one word).
 *
 * A character that is not a piece becomes, in order of preference, its
 * bytes' <0xNN> pieces (byte_fallback), the unk piece (consecutive ones
 * fused with fuse_unk), its bytes' single-byte pieces (llama.cpp), or
 * nothing (tokenizers drops it when the model has no unk). */
#include "model/tokenizer_pipe.h"
#include "model/tokenizer_impl.h"

#include "common/alloc.h"
#include "common/buf.h"
#include "common/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the merge table -------------------------------------------------- */

static uint64_t mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static const qp_merge_slot *merge_find(const qp_tok_bpe *b, int left, int right)
{
    if (!b->merges || left < 0 || right < 0)
        return NULL;
    uint64_t key = ((uint64_t)(uint32_t)left << 32 | (uint32_t)right) + 1;
    size_t i = (size_t)mix(key) & b->merge_mask;
    for (;;) {
        const qp_merge_slot *s = &b->merges[i];
        if (s->key == 0)
            return NULL;
        if (s->key == key)
            return s;
        i = (i + 1) & b->merge_mask;
    }
}

/* A piece quoted for a message: at most 60 bytes, controls escaped. */
static void quote(char *dst, size_t cap, const char *p, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 6 < cap; i++) {
        unsigned char c = (unsigned char)p[i];
        if (i >= 60) {
            memcpy(dst + o, "...", 3);
            o += 3;
            break;
        }
        if (c < 0x20 || c == 0x7F || c == '\'')
            o += (size_t)snprintf(dst + o, cap - o, "\\x%02X", c);
        else
            dst[o++] = (char)c;
    }
    dst[o] = '\0';
}

static void store_side(qp_buf *blob, const char *p, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        if (p[k] == ' ')
            qp_buf_puts(blob, "\xC4\xA0");
        else
            qp_buf_putc(blob, p[k]);
    }
}

int qp_tok_merges_build(qp_tokenizer *t, qp_tok_bpe *b, size_t n, const char *const *lefts,
                        const size_t *left_lens, const char *const *rights, const size_t *right_lens,
                        int lenient, const char *name, const char *where)
{
    int rc = 0;
    char q[256], q2[256];
    qp_buf blob = QP_BUF_INIT, cat = QP_BUF_INIT;
    size_t cap = 16;
    while (cap < 2 * n + 16)
        cap <<= 1;
    b->merges = qp_xcalloc(cap, sizeof(*b->merges));
    b->merge_mask = cap - 1;
    b->merge_off = qp_xmalloc((n ? n : 1) * sizeof(*b->merge_off));
    b->n_merges = n;
    for (size_t i = 0; i < n; i++) {
        const char *a = lefts[i], *c;
        size_t al = left_lens[i], cl;
        if (!rights && lenient) {
            /* llama.cpp: the first space after the first byte; none: two
             * empty sides that never match */
            const char *sp = al > 1 ? memchr(a + 1, ' ', al - 1) : NULL;
            c = sp ? sp + 1 : a + al;
            cl = sp ? al - (size_t)(c - a) : 0;
            al = sp ? (size_t)(sp - a) : 0;
        } else if (!rights) {
            /* "left right": exactly one space, as tokenizers requires */
            const char *sp = memchr(a, ' ', al);
            if (!sp || memchr(sp + 1, ' ', al - (size_t)(sp + 1 - a))) {
                quote(q, sizeof(q), a, al);
                rc = qp_error_set(QP_EFORMAT, "%s: %s[%zu] '%s' is not two pieces separated by one space",
                                  name, where, i, q);
                goto done;
            }
            c = sp + 1;
            cl = al - (size_t)(c - a);
            al = (size_t)(sp - a);
        } else {
            c = rights[i];
            cl = right_lens[i];
        }
        int ia = qp_tok_lookup(t, a, al), ic = qp_tok_lookup(t, c, cl);
        qp_buf_truncate(&cat, 0);
        qp_buf_append(&cat, a, al);
        qp_buf_append(&cat, c, cl);
        int im = qp_tok_lookup(t, cat.data ? cat.data : "", cat.len);
        if ((ia < 0 || ic < 0 || im < 0) && !lenient) {
            const char *bad = ia < 0 ? a : ic < 0 ? c : cat.data;
            size_t bl = ia < 0 ? al : ic < 0 ? cl : cat.len;
            quote(q, sizeof(q), bad, bl);
            quote(q2, sizeof(q2), cat.data, cat.len);
            rc = qp_error_set(QP_EFORMAT, "%s: %s[%zu] (merging into '%s'): '%s' is not a token of the vocabulary",
                              name, where, i, q2, q);
            goto done;
        }
        /* the stored spelling, as GGUF's tokenizer.ggml.merges has it:
         * strings as given; a ' ' inside a pair's side is written U+0120,
         * as convert_hf_to_gguf writes it */
        b->merge_off[i] = (uint32_t)blob.len;
        if (rights) {
            store_side(&blob, a, al);
            qp_buf_putc(&blob, ' ');
            store_side(&blob, c, cl);
        } else {
            qp_buf_append(&blob, lefts[i], left_lens[i]);
        }
        qp_buf_putc(&blob, '\0');
        if (blob.len > UINT32_MAX) {
            rc = qp_error_set(QP_EFORMAT, "%s: %s: the merges exceed 4 GiB", name, where);
            goto done;
        }
        if (ia < 0 || ic < 0 || im < 0)
            continue;   /* lenient: never applies */
        uint64_t key = ((uint64_t)(uint32_t)ia << 32 | (uint32_t)ic) + 1;
        size_t h = (size_t)mix(key) & b->merge_mask;
        while (b->merges[h].key && b->merges[h].key != key)
            h = (h + 1) & b->merge_mask;
        /* a repeated pair keeps its first rank in llama.cpp (bpe_ranks'
         * emplace) and its last in tokenizers (the merges collected into a
         * HashMap, each insert replacing) */
        if (b->merges[h].key == 0 || !lenient)
            b->merges[h] = (qp_merge_slot){ key, (uint32_t)i, im };
    }
    b->merge_blob = qp_buf_detach(&blob, NULL);
done:
    qp_buf_free(&blob);
    qp_buf_free(&cat);
    return rc;
}

/* ---- output ----------------------------------------------------------- */

void qp_ids_push(qp_ids *v, int id)
{
    if (v->n == v->cap) {
        v->cap = v->cap ? 2 * v->cap : 256;
        v->ids = qp_xrealloc_array(v->ids, v->cap, sizeof(*v->ids));
    }
    v->ids[v->n++] = id;
}

/* ---- merging ------------------------------------------------------------ */

typedef struct {
    int32_t id;          /* piece id; -1: an unknown character */
    int32_t prev, next;
    uint32_t start, len; /* bytes of the word (len 0: merged away) */
} sym_t;

typedef struct {
    uint64_t key;        /* rank << 32 | left index: smaller first */
    int32_t lid, rid;    /* the ids when pushed */
} cand_t;

typedef struct {
    cand_t *h;
    size_t n;
} heap_t;

static void heap_push(heap_t *hp, cand_t c)
{
    size_t i = hp->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (hp->h[p].key <= c.key)
            break;
        hp->h[i] = hp->h[p];
        i = p;
    }
    hp->h[i] = c;
}

static cand_t heap_pop(heap_t *hp)
{
    cand_t top = hp->h[0], last = hp->h[--hp->n];
    size_t n = hp->n, i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && hp->h[c + 1].key < hp->h[c].key)
            c++;
        if (last.key <= hp->h[c].key)
            break;
        hp->h[i] = hp->h[c];
        i = c;
    }
    if (n > 0)
        hp->h[i] = last;
    return top;
}

static void try_pair(const qp_tok_bpe *b, const sym_t *s, heap_t *hp, int32_t l)
{
    if (l < 0 || s[l].next < 0)
        return;
    const qp_merge_slot *m = merge_find(b, s[l].id, s[s[l].next].id);
    if (m)
        heap_push(hp, (cand_t){ (uint64_t)m->rank << 32 | (uint32_t)l, s[l].id, s[s[l].next].id });
}

/* A character (or fused run) that is not a piece. */
static void emit_unknown(const qp_tokenizer *t, const qp_tok_bpe *b, const char *w, const sym_t *s, qp_ids *out,
                         int *prev_unk)
{
    if (b->byte_fallback) {
        int ok = 1;
        for (uint32_t k = 0; k < s->len && ok; k++)
            ok = t->byte_id[(unsigned char)w[s->start + k]] >= 0;
        if (ok) {
            for (uint32_t k = 0; k < s->len; k++)
                qp_ids_push(out, t->byte_id[(unsigned char)w[s->start + k]]);
            *prev_unk = 0;
            return;
        }
    }
    if (b->unk >= 0) {
        if (!(b->fuse_unk && *prev_unk))
            qp_ids_push(out, b->unk);
        *prev_unk = 1;
        return;
    }
    if (b->llama_unknown)
        for (uint32_t k = 0; k < s->len; k++) {
            int id = qp_tok_lookup(t, w + s->start + k, 1);
            if (id >= 0)
                qp_ids_push(out, id);
        }
}

static void merge_word(const qp_tokenizer *t, const char *w, size_t n, qp_ids *out)
{
    const qp_tok_bpe *b = t->bpe;
    sym_t *s = qp_xmalloc(n * sizeof(*s));
    int32_t ns = 0;
    for (size_t i = 0; i < n;) {
        size_t l = qp_utf8_char_len((const unsigned char *)w + i, n - i);
        if (!l)
            l = 1;
        s[ns] = (sym_t){ qp_tok_lookup(t, w + i, l), ns - 1, ns + 1, (uint32_t)i, (uint32_t)l };
        ns++;
        i += l;
    }
    s[ns - 1].next = -1;

    heap_t hp = { qp_xmalloc(3 * (size_t)ns * sizeof(cand_t)), 0 };
    for (int32_t i = 0; i + 1 < ns; i++)
        try_pair(b, s, &hp, i);
    while (hp.n > 0) {
        cand_t c = heap_pop(&hp);
        int32_t l = (int32_t)(uint32_t)c.key;
        int32_t r = s[l].next;
        if (s[l].len == 0 || r < 0 || s[l].id != c.lid || s[r].id != c.rid)
            continue;
        const qp_merge_slot *m = merge_find(b, c.lid, c.rid);
        /* r joins l; l keeps its index so the leftmost-first order holds */
        s[l].id = m->id;
        s[l].len += s[r].len;
        s[r].len = 0;
        s[l].next = s[r].next;
        if (s[r].next >= 0)
            s[s[r].next].prev = l;
        try_pair(b, s, &hp, s[l].prev);
        try_pair(b, s, &hp, l);
    }
    int prev_unk = 0;
    for (int32_t i = 0; i >= 0; i = s[i].next) {
        if (s[i].id >= 0) {
            qp_ids_push(out, s[i].id);
            prev_unk = 0;
        } else {
            emit_unknown(t, b, w, &s[i], out, &prev_unk);
        }
    }
    free(hp.h);
    free(s);
}

void qp_tok_bpe_word(const qp_tokenizer *t, const char *w, size_t n, qp_ids *out)
{
    if (n == 0)
        return;
    if (t->bpe->ignore_merges) {
        int id = qp_tok_lookup(t, w, n);
        if (id >= 0) {
            qp_ids_push(out, id);
            return;
        }
    }
    /* A word beyond QP_BPE_MAX_WORD bytes is merged in pieces of that size
     * (cut before a UTF-8 character): memory stays bounded (~64 bytes per
     * byte of a piece) for a text of 1 GiB without a space.  Only such
     * words can tokenize differently from tokenizers / llama.cpp, and only
     * next to a cut. */
    while (n > QP_BPE_MAX_WORD) {
        size_t cut = QP_BPE_MAX_WORD;
        while (cut > 1 && ((unsigned char)w[cut] & 0xC0) == 0x80)
            cut--;
        merge_word(t, w, cut, out);
        w += cut;
        n -= cut;
    }
    merge_word(t, w, n, out);
}
