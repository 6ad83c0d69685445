/* Tokenizer core: vocabulary validation, the piece hash table, BPE encoding
 * and decoding.  Loaders (tokenizer_spm.c, tokenizer_gguf.c) only fill a
 * qp_tok_spec and call qp_tok_build(). */
#include "model/tokenizer.h"
#include "model/tokenizer_impl.h"
#include "model/tokenizer_pipe.h"

#include "common/alloc.h"
#include "common/error.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- UTF-8 ---------------------------------------------------------- */

/* How many leading bytes of s[0..n) are a valid start of one UTF-8
 * character (the whole character when *need of them); *need is the length
 * the lead byte announces, 0 for a byte that cannot lead. */
static size_t utf8_prefix(const unsigned char *s, size_t n, size_t *need)
{
    *need = 0;
    if (n == 0)
        return 0;
    unsigned b = s[0];
    if (b < 0x80) {
        *need = 1;
        return 1;
    }
    unsigned lo = 0x80, hi = 0xBF;   /* allowed range of the second byte */
    if (b >= 0xC2 && b <= 0xDF) {
        *need = 2;
    } else if (b >= 0xE0 && b <= 0xEF) {
        *need = 3;
        if (b == 0xE0) lo = 0xA0;          /* overlong */
        if (b == 0xED) hi = 0x9F;          /* surrogates */
    } else if (b >= 0xF0 && b <= 0xF4) {
        *need = 4;
        if (b == 0xF0) lo = 0x90;          /* overlong */
        if (b == 0xF4) hi = 0x8F;          /* > U+10FFFF */
    } else {
        return 0;
    }
    if (n < 2 || s[1] < lo || s[1] > hi)
        return 1;
    size_t k = 2;
    while (k < *need && k < n && (s[k] & 0xC0) == 0x80)
        k++;
    return k;
}

size_t qp_utf8_char_len(const unsigned char *s, size_t n)
{
    size_t need, k = utf8_prefix(s, n, &need);
    return need && k == need ? need : 0;
}

size_t qp_utf8_bad_len(const unsigned char *s, size_t n)
{
    size_t need, k = utf8_prefix(s, n, &need);
    return k ? k : 1;
}

static int utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t l = qp_utf8_char_len(s + i, n - i);
        if (l == 0)
            return 0;
        i += l;
    }
    return 1;
}

/* ---- hashing -------------------------------------------------------- */

uint64_t qp_tok_hash(const char *p, size_t n)
{
    /* FNV-1a: pieces are short, so a per-byte hash is cheap enough. */
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

int qp_tok_lookup(const qp_tokenizer *t, const char *p, size_t n)
{
    size_t i = (size_t)qp_tok_hash(p, n) & t->mask;
    for (;;) {
        uint32_t v = t->table[i];
        if (v == 0)
            return -1;
        uint32_t id = v - 1;
        if (t->len[id] == n && memcmp(t->blob + t->off[id], p, n) == 0)
            return (int)id;
        i = (i + 1) & t->mask;
    }
}

/* ---- errors naming the origin ---------------------------------------- */

/* A piece quoted for an error message: control and invalid bytes escaped,
 * long pieces cut.  QUOTED(q, p, n) quotes into the char array q and is q:
 * a vocabulary of 150k pieces is quoted only where one is wrong. */
#define QUOTED(q, p, n) (quote_piece((q), sizeof(q), (p), (n)), (q))
static void quote_piece(char *dst, size_t cap, const char *p, size_t n)
{
    int valid = utf8_valid((const unsigned char *)p, n);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (o + 8 >= cap || i >= 40) {
            memcpy(dst + o, "...", 3);
            o += 3;
            break;
        }
        if (c < 0x20 || c == 0x7F || c == '\'' || c == '\\' || (c >= 0x80 && !valid)) {
            o += (size_t)snprintf(dst + o, cap - o, "\\x%02X", c);
        } else if (c >= 0x80) {
            size_t l = qp_utf8_char_len((const unsigned char *)p + i, n - i);
            memcpy(dst + o, p + i, l);
            o += l;
            i += l - 1;
        } else {
            dst[o++] = (char)c;
        }
    }
    dst[o] = '\0';
}

/* idx >= 0: about piece idx; idx == -1: about the vocabulary as a whole;
 * idx == -2: about the byte_fallback setting. */
static int origin_error(const qp_tok_origin *o, long idx, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int origin_error(const qp_tok_origin *o, long idx, const char *fmt, ...)
{
    char body[512], head[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof(body), fmt, ap);
    va_end(ap);
    const char *path = o && o->path ? o->path : "tokenizer vocabulary";
    if (o && o->by_offset) {
        uint64_t off = idx >= 0 ? o->offsets[idx] : idx == -2 ? o->byte_fallback_offset : o->end_offset;
        snprintf(head, sizeof(head), "%s: offset %" PRIu64 ": ", path, off);
    } else if (o && o->array && idx >= 0) {
        snprintf(head, sizeof(head), "%s: %s[%ld]: ", path, o->array, idx);
    } else {
        snprintf(head, sizeof(head), "%s: ", path);
    }
    return qp_error_set(QP_EFORMAT, "%s%s", head, body);
}

static const char *type_name(int type)
{
    switch (type) {
    case QP_TOK_NORMAL: return "NORMAL";
    case QP_TOK_UNKNOWN: return "UNKNOWN";
    case QP_TOK_CONTROL: return "CONTROL";
    case QP_TOK_USER_DEFINED: return "USER_DEFINED";
    case QP_TOK_UNUSED: return "UNUSED";
    case QP_TOK_BYTE: return "BYTE";
    default: return "?";
    }
}

/* "<0xNN>" with uppercase hex -> NN, else -1 (sentencepiece's spelling). */
static int byte_piece_value(const char *p, size_t n)
{
    if (n != 6 || memcmp(p, "<0x", 3) != 0 || p[5] != '>')
        return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = p[i];
        int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* ---- construction --------------------------------------------------- */

void qp_tokenizer_free(qp_tokenizer *t)
{
    if (!t)
        return;
    free(t->blob);
    free(t->off);
    free(t->len);
    free(t->scores);
    free(t->types);
    free(t->table);
    free(t->pair_bits);
    qp_tok_bpe_free(t->bpe);
    qp_tok_trie_free(t->ctrl_trie);
    free(t->chat_template);
    free(t);
}

/* Sets a bit for every pair of adjacent characters inside a piece that
 * merges can produce: text characters whose pair is not marked can never
 * end up in one piece, so the encoder may cut the text there. */
static void build_pair_filter(qp_tokenizer *t)
{
    size_t pairs = 0;
    for (size_t i = 0; i < t->n; i++)
        pairs += t->len[i];
    size_t bits = 4096;
    while (bits < 16 * pairs && bits < ((size_t)1 << 26))
        bits <<= 1;
    t->pair_bits = qp_xcalloc(bits / 64, sizeof(uint64_t));
    t->pair_mask = bits - 1;
    for (size_t i = 0; i < t->n; i++) {
        int type = t->types[i];
        if (type != QP_TOK_NORMAL && type != QP_TOK_USER_DEFINED && type != QP_TOK_UNUSED)
            continue;
        const unsigned char *p = (const unsigned char *)t->blob + t->off[i];
        size_t n = t->len[i];
        /* pieces are valid UTF-8: walk (previous char, char) pairs */
        size_t prev = 0, a = qp_utf8_char_len(p, n);
        while (a < n) {
            size_t b = qp_utf8_char_len(p + a, n - a);
            size_t h = (size_t)qp_tok_hash((const char *)p + prev, a + b - prev) & t->pair_mask;
            t->pair_bits[h / 64] |= (uint64_t)1 << (h % 64);
            prev = a;
            a += b;
        }
    }
}

static int check_special(const qp_tok_spec *s, const qp_tok_origin *o, const char *name, int id)
{
    if (id < -1 || (id >= 0 && (size_t)id >= s->n))
        return origin_error(o, -1, "%s id %d is out of range (%zu pieces)", name, id, s->n);
    return 0;
}

/* The piece arrays and the hash table, sized for s; the pieces' total size
 * (NULs included) must fit the uint32 offsets. */
static int alloc_tables(qp_tokenizer *t, const qp_tok_spec *s, const qp_tok_origin *o)
{
    size_t total = 0;
    for (size_t i = 0; i < s->n; i++) {
        total += (s->lens ? s->lens[i] : strlen(s->pieces[i])) + 1;
        if (total > UINT32_MAX)
            return origin_error(o, (long)i, "the pieces exceed 4 GiB in total");
    }
    size_t cap = 1;
    while (cap < 2 * s->n)
        cap <<= 1;
    t->mask = cap - 1;
    t->blob = qp_xmalloc(total);
    t->off = qp_xmalloc(s->n * sizeof(*t->off));
    t->len = qp_xmalloc(s->n * sizeof(*t->len));
    t->scores = qp_xmalloc(s->n * sizeof(*t->scores));
    t->types = qp_xmalloc(s->n);
    t->table = qp_xcalloc(cap, sizeof(*t->table));
    for (int b = 0; b < 256; b++)
        t->byte_id[b] = -1;
    return 0;
}

/* One piece on its own: non-empty valid UTF-8 without NUL, a known type, a
 * finite score; q is the piece quoted for messages. */
static int check_piece(const qp_tok_origin *o, size_t i, const char *p, size_t n, int type, float score)
{
    char q[256];
    if (n == 0)
        return origin_error(o, (long)i, "piece %zu is empty", i);
    if (memchr(p, '\0', n))
        return origin_error(o, (long)i, "piece %zu '%s' contains a NUL byte", i, QUOTED(q, p, n));
    if (!utf8_valid((const unsigned char *)p, n))
        return origin_error(o, (long)i, "piece %zu '%s' is not valid UTF-8", i, QUOTED(q, p, n));
    if (type < QP_TOK_NORMAL || type > QP_TOK_BYTE)
        return origin_error(o, (long)i, "piece %zu '%s' has unknown type %d (expected 1..6)", i, QUOTED(q, p, n), type);
    if (!isfinite(score))
        return origin_error(o, (long)i, "piece %zu '%s' has a non-finite score", i, QUOTED(q, p, n));
    return 0;
}

/* Checks piece i of s and adds it at blob offset *pos (advanced past it and
 * its NUL); *first_unk is the UNKNOWN piece seen so far (-1: none). */
static int add_piece(qp_tokenizer *t, const qp_tok_spec *s, const qp_tok_origin *o, size_t i, size_t *pos,
                     long *first_unk)
{
    char q[256];   /* the piece quoted, made only for an error message */
    const char *p = s->pieces[i];
    size_t n = s->lens ? s->lens[i] : strlen(p);
    int type = s->types ? s->types[i] : QP_TOK_NORMAL;
    float score = s->scores ? s->scores[i] : 0.0f;
    int rc = check_piece(o, i, p, n, type, score);
    if (rc)
        return rc;
    if (type == QP_TOK_BYTE) {
        int v = byte_piece_value(p, n);
        if (v < 0)
            return origin_error(o, (long)i, "BYTE piece %zu '%s' is not named <0xNN> (two uppercase hex digits)", i, QUOTED(q, p, n));
        t->byte_id[v] = (int)i;
    }
    if (type == QP_TOK_UNKNOWN && !s->many_unknown) {
        if (*first_unk >= 0)
            return origin_error(o, (long)i, "piece %zu '%s' is a second UNKNOWN piece (the first is piece %ld)",
                                i, QUOTED(q, p, n), *first_unk);
        *first_unk = (long)i;
    }
    if (type == QP_TOK_UNUSED)
        t->has_unused = 1;
    if ((type == QP_TOK_CONTROL || type == QP_TOK_UNKNOWN) && !s->bpe) {
        if (!t->ctrl_trie)
            t->ctrl_trie = qp_tok_trie_new();
        qp_tok_trie_add(t->ctrl_trie, p, n, (int)i);
    }
    if (type == QP_TOK_USER_DEFINED) {
        if (n > t->max_user_len)
            t->max_user_len = n;
        t->user_first[(unsigned char)p[0]] = 1;
    }
    int prev = qp_tok_lookup(t, p, n);
    if (prev >= 0 && !s->bpe)
        return origin_error(o, (long)i, "piece %zu '%s' duplicates piece %d", i, QUOTED(q, p, n), prev);
    memcpy(t->blob + *pos, p, n);
    t->blob[*pos + n] = '\0';
    t->off[i] = (uint32_t)*pos;
    t->len[i] = (uint32_t)n;
    t->scores[i] = score;
    t->types[i] = (uint8_t)type;
    size_t h = (size_t)qp_tok_hash(p, n) & t->mask;
    while (t->table[h] && t->table[h] != (uint32_t)prev + 1)
        h = (h + 1) & t->mask;
    if (prev < 0 || s->dup_last)
        t->table[h] = (uint32_t)i + 1;
    *pos += n + 1;
    return 0;
}

/* s->unk must name a piece, and (when the types are given) the one piece of
 * type UNKNOWN. */
static int check_unk(const qp_tokenizer *t, const qp_tok_spec *s, const qp_tok_origin *o, long first_unk)
{
    if (s->bpe)
        return check_special(s, o, "unk", s->unk);
    if (s->many_unknown && s->unk >= 0 && (size_t)s->unk < s->n)
        return 0;   /* llama.cpp reads unk by id whatever the types say */
    if (s->unk < 0 || (size_t)s->unk >= s->n) {
        if (s->types && first_unk < 0)
            return origin_error(o, -1, "no piece has type UNKNOWN (exactly one is required)");
        return origin_error(o, -1, "unk id %d is out of range (%zu pieces)", s->unk, s->n);
    }
    if (!s->types)
        return 0;
    if (first_unk < 0)
        return origin_error(o, -1, "no piece has type UNKNOWN (exactly one is required)");
    if (first_unk != s->unk) {
        char q[256];
        quote_piece(q, sizeof(q), t->blob + t->off[s->unk], t->len[s->unk]);
        return origin_error(o, -1, "unk id %d is piece '%s' of type %s, but the UNKNOWN piece is %ld",
                            s->unk, q, type_name(t->types[s->unk]), first_unk);
    }
    return 0;
}

/* byte_fallback 1 needs all 256 BYTE pieces; -1 turns it on when any
 * exists; 0 leaves it off. */
static int set_byte_fallback(qp_tokenizer *t, const qp_tok_spec *s, const qp_tok_origin *o)
{
    if (s->byte_fallback == 1) {
        for (int b = 0; b < 256; b++)
            if (t->byte_id[b] < 0)
                return origin_error(o, -2, "byte_fallback is set but there is no BYTE piece <0x%02X>", b);
        t->byte_fallback = 1;
    } else if (s->byte_fallback < 0) {
        for (int b = 0; b < 256 && !t->byte_fallback; b++)
            t->byte_fallback = t->byte_id[b] >= 0;
    }
    return 0;
}

int qp_tok_build(qp_tokenizer **out, const qp_tok_spec *s, const qp_tok_origin *o)
{
    int rc;
    *out = NULL;
    if (s->n == 0)
        return origin_error(o, -1, "the vocabulary has no pieces");
    if (s->n > (size_t)INT32_MAX / 2)
        return origin_error(o, -1, "the vocabulary has %zu pieces, too many", s->n);

    qp_tokenizer *t = qp_xcalloc(1, sizeof(*t));
    t->n = s->n;
    if ((rc = alloc_tables(t, s, o)))
        goto done;
    long first_unk = -1;
    size_t pos = 0;
    for (size_t i = 0; i < s->n; i++)
        if ((rc = add_piece(t, s, o, i, &pos, &first_unk)))
            goto done;
    if ((rc = check_unk(t, s, o, first_unk)) || (rc = check_special(s, o, "bos", s->bos)) ||
        (rc = check_special(s, o, "eos", s->eos)) || (rc = check_special(s, o, "pad", s->pad)) ||
        (rc = set_byte_fallback(t, s, o)))
        goto done;
    t->bos = s->bos;
    t->eos = s->eos;
    t->unk = s->unk;
    t->pad = s->pad;
    t->add_dummy_prefix = s->add_dummy_prefix != 0;
    t->remove_extra_ws = s->remove_extra_whitespaces != 0;
    t->escape_ws = s->escape_whitespaces != 0;
    t->wants_bos = s->wants_bos != 0 && s->bos >= 0;
    t->wants_eos = s->wants_eos != 0 && s->eos >= 0;
    t->model = s->bpe ? QP_TOK_MODEL_BPE : QP_TOK_MODEL_SPM;
    if (!s->bpe)
        build_pair_filter(t);
done:
    if (rc) {
        qp_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

int qp_tokenizer_from_vocab(qp_tokenizer **out, size_t n, const char *const *pieces,
                            const float *scores, const int *types,
                            int bos, int eos, int unk, int add_dummy_prefix)
{
    qp_tok_spec s = {
        .n = n, .pieces = pieces, .scores = scores, .types = types,
        .bos = bos, .eos = eos, .unk = unk, .pad = -1,
        .add_dummy_prefix = add_dummy_prefix, .remove_extra_whitespaces = 0,
        .escape_whitespaces = 1, .byte_fallback = -1,
        .wants_bos = 1, .wants_eos = 0,
    };
    *out = NULL;
    if (n > 0 && !pieces)
        return qp_error_set(QP_EUSAGE, "tokenizer vocabulary: pieces is NULL");
    return qp_tok_build(out, &s, NULL);
}

/* ---- accessors ------------------------------------------------------ */

size_t qp_tokenizer_n_vocab(const qp_tokenizer *t) { return t->n; }
int qp_tokenizer_bos(const qp_tokenizer *t) { return t->bos; }
int qp_tokenizer_eos(const qp_tokenizer *t) { return t->eos; }
int qp_tokenizer_unk(const qp_tokenizer *t) { return t->unk; }
int qp_tokenizer_pad(const qp_tokenizer *t) { return t->pad; }
int qp_tokenizer_wants_bos(const qp_tokenizer *t) { return t->wants_bos; }
int qp_tokenizer_wants_eos(const qp_tokenizer *t) { return t->wants_eos; }
int qp_tokenizer_has_byte_fallback(const qp_tokenizer *t) { return t->byte_fallback; }
int qp_tokenizer_add_dummy_prefix(const qp_tokenizer *t) { return t->add_dummy_prefix; }

const char *qp_tokenizer_piece(const qp_tokenizer *t, int id)
{
    return (id >= 0 && (size_t)id < t->n) ? t->blob + t->off[id] : NULL;
}

float qp_tokenizer_score(const qp_tokenizer *t, int id)
{
    return (id >= 0 && (size_t)id < t->n) ? t->scores[id] : 0.0f;
}

int qp_tokenizer_type(const qp_tokenizer *t, int id)
{
    return (id >= 0 && (size_t)id < t->n) ? t->types[id] : 0;
}

int qp_tokenizer_find(const qp_tokenizer *t, const char *piece, size_t len)
{
    return qp_tok_lookup(t, piece, len);
}

qp_tok_model qp_tokenizer_model(const qp_tokenizer *t) { return t->model; }

const char *qp_tokenizer_pre(const qp_tokenizer *t)
{
    return t->bpe ? t->bpe->pre_name : NULL;
}

size_t qp_tokenizer_n_merges(const qp_tokenizer *t)
{
    return t->bpe ? t->bpe->n_merges : 0;
}

const char *qp_tokenizer_merge(const qp_tokenizer *t, size_t i)
{
    return t->bpe && i < t->bpe->n_merges ? t->bpe->merge_blob + t->bpe->merge_off[i] : NULL;
}

const char *qp_tokenizer_chat_template(const qp_tokenizer *t) { return t->chat_template; }
