/* Private to model/tokenizer*.c: the byte-level / rank BPE tokenizer of
 * Hugging Face tokenizer.json files and GGUF "gpt2" vocabularies.
 *
 * Encoding runs, as the Hugging Face tokenizers library does:
 *   text (invalid UTF-8 bytes become U+FFFD, as llama.cpp does; a Python
 *        string cannot hold them)
 *   -> added tokens cut out (leftmost, then longest; special ones only with
 *      QP_TOK_PARSE_SPECIAL)
 *   -> each other stretch: normalizers (NFC, Prepend, Replace, ...)
 *   -> pre-tokenizers (Split by PCRE2 regex, ByteLevel, Digits, Metaspace),
 *      each refining the words of the one before
 *   -> each word merged by rank (tokenizer_merge.c).
 * Decoding runs the decoder chain over the pieces of the ids.
 * A GGUF "gpt2" vocabulary is the same machine configured as llama.cpp
 * runs it: its regex list as Split pre-tokenizers, ByteLevel, no
 * normalizer. */
#ifndef QP_MODEL_TOKENIZER_PIPE_H
#define QP_MODEL_TOKENIZER_PIPE_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "model/tokenizer.h"

/* ---- regexes (tokenizer_regex.c) ------------------------------------ */

typedef struct qp_regex qp_regex;

/* Whose pattern: tokenizer.json's (Oniguruma) or llama.cpp's (std::regex). */
typedef enum { QP_RE_ONIG, QP_RE_LLAMA } qp_regex_dialect;

/* Compiles an Oniguruma-style pattern (as tokenizer.json and llama.cpp
 * write them) with PCRE2 in UTF + UCP mode, JIT when available.  Errors
 * (QP_EFORMAT): "NAME: WHERE: bad regex: MESSAGE at offset N". */
int qp_regex_compile(qp_regex **out, const char *pat, size_t len, qp_regex_dialect dialect, const char *name,
                     const char *where);
void qp_regex_free(qp_regex *re);
/* The matches of re in valid UTF-8 s[0..n), in order: calls fn(ud, start,
 * end) for each (an empty match advances one character).  A search that
 * exceeds PCRE2's match, depth or heap limit is QP_EFORMAT naming the
 * pattern (NAME: WHERE of the compile); the matches before it were
 * reported. */
typedef void (*qp_regex_fn)(void *ud, size_t start, size_t end);
int qp_regex_each(const qp_regex *re, const char *s, size_t n, qp_regex_fn fn, void *ud);

/* ---- words -------------------------------------------------------------- */

/* Receives the words a pre-tokenizer makes, in order; origin: the word
 * starts at offset 0 of the original text (Metaspace's "first"). */
typedef void (*qp_word_fn)(void *ud, const char *p, size_t n, int origin);

/* ---- pipeline steps (tokenizer_pretok.c) ---------------------------- */

typedef enum {
    QP_NORM_NFC, QP_NORM_NFD, QP_NORM_NFKC, QP_NORM_NFKD, QP_NORM_PREPEND, QP_NORM_REPLACE,
    QP_NORM_LOWERCASE, QP_NORM_STRIP,
} qp_norm_kind;

/* A Replace pattern or Split pattern: a literal string or a regex. */
typedef struct {
    char *lit;            /* literal (NULL when a regex) */
    size_t lit_len;
    qp_regex *re;
} qp_pattern;

typedef struct {
    qp_norm_kind kind;
    char *str;            /* Prepend's text / Replace's content */
    size_t str_len;
    qp_pattern pat;       /* Replace */
    int left, right;      /* Strip: which ends */
} qp_norm;

typedef enum { QP_PRE_SPLIT, QP_PRE_BYTELEVEL, QP_PRE_DIGITS, QP_PRE_METASPACE } qp_pre_kind;

typedef enum {
    QP_SPLIT_REMOVED, QP_SPLIT_ISOLATED, QP_SPLIT_MERGED_PREV, QP_SPLIT_MERGED_NEXT, QP_SPLIT_CONTIGUOUS,
} qp_split_behavior;

typedef enum { QP_PREPEND_ALWAYS, QP_PREPEND_FIRST, QP_PREPEND_NEVER } qp_prepend_scheme;

typedef struct {
    qp_pre_kind kind;
    qp_pattern pat;             /* Split; Digits and ByteLevel's regex */
    qp_split_behavior behavior; /* Split */
    int invert;                 /* Split */
    int add_prefix_space;       /* ByteLevel */
    char *repl;                 /* Metaspace replacement (UTF-8 char) */
    size_t repl_len;
    qp_prepend_scheme prepend;  /* Metaspace */
    int split;                  /* Metaspace */
} qp_pretok;

typedef enum {
    QP_DEC_BYTELEVEL, QP_DEC_REPLACE, QP_DEC_BYTEFALLBACK, QP_DEC_FUSE, QP_DEC_STRIP, QP_DEC_METASPACE,
} qp_dec_kind;

typedef struct {
    qp_dec_kind kind;
    qp_pattern pat;             /* Replace */
    char *str;                  /* Replace content / Strip content / Metaspace replacement */
    size_t str_len;
    int start, stop;            /* Strip */
    qp_prepend_scheme prepend;  /* Metaspace */
} qp_dec;

void qp_pattern_free(qp_pattern *p);
/* Runs the normalizers over s[0..n) into out (cleared first); fails only
 * when a Replace regex hits a limit (qp_regex_each). */
int qp_normalize(const qp_norm *norms, size_t n_norms, const char *s, size_t n, qp_buf *out);
/* Runs one pre-tokenizer over the word s[0..n), handing each word it makes
 * to fn (the word may live in the scratch buffers, valid during the call);
 * fails only when a regex hits a limit (qp_regex_each). */
int qp_pretokenize(const qp_pretok *p, const char *s, size_t n, int origin, qp_buf *scratch_a, qp_buf *scratch_b,
                    qp_word_fn fn, void *ud);
/* GPT-2's bytes_to_unicode: the UTF-8 spelling of byte b (2 bytes at most). */
const char *qp_byte_to_unicode(unsigned b, size_t *len);
/* The byte a mapped character stands for, -1 when c is not one. */
int qp_unicode_to_byte(uint32_t c);

/* ---- added tokens ---------------------------------------------------- */

typedef struct {
    int id;
    uint32_t off, len;          /* content in qp_tok_bpe.added_blob */
    uint8_t special, lstrip, rstrip, single_word, normalized;
} qp_added;

/* ---- the model ------------------------------------------------------- */

typedef struct {
    uint64_t key;               /* (left id << 32 | right id) + 1, 0 = empty */
    uint32_t rank;
    int32_t id;                 /* the merged piece */
} qp_merge_slot;

typedef struct qp_tok_bpe {
    qp_norm *norms;
    size_t n_norms;
    qp_pretok *pres;
    size_t n_pres;
    qp_dec *decs;
    size_t n_decs;
    int has_decoder;            /* 0: pieces joined by ' ' (tokenizers' default) */

    qp_added *added;            /* in file (tokenizer.json) or id (GGUF) order */
    size_t n_added;
    char *added_blob;
    struct qp_tok_trie *added_trie; /* contents -> index; NULL when none;
                                   normalized ones as the normalizers
                                   spell them */
    int any_normalized_added;   /* some added token matches after normalization */
    int added_hf;               /* tokenizers' matching: a rejected
                                   leftmost-longest match is skipped whole
                                   (llama.cpp's: rejected tokens are not
                                   candidates) */

    qp_merge_slot *merges;      /* open addressing over (left, right) */
    size_t merge_mask;
    char *merge_blob;           /* "a b\0" strings in rank order */
    uint32_t *merge_off;        /* [n_merges] */
    size_t n_merges;

    int ignore_merges;          /* a word that is a piece is not merged */
    int byte_fallback;          /* unknown character -> <0xNN> pieces */
    int unk;                    /* model unk id, -1 when none */
    int fuse_unk;
    int llama_unknown;          /* llama.cpp: unknown symbol -> its bytes'
                                   single-byte pieces, when they exist */
    const char *pre_name;       /* GGUF tokenizer.ggml.pre, NULL unknown */
} qp_tok_bpe;

void qp_tok_bpe_free(qp_tok_bpe *b);

/* Builds the merge table from n "a b" strings (or pairs when rights is
 * non-NULL: lefts[i], rights[i]).  Strict (tokenizers): exactly one space,
 * every side and the concatenation pieces of t, else an error naming NAME,
 * WHERE and the merge; a repeated pair takes its last rank.  Lenient
 * (llama.cpp): split at the first space after the first byte; a merge naming
 * no piece never applies; a repeated pair keeps its first rank. */
int qp_tok_merges_build(qp_tokenizer *t, qp_tok_bpe *b, size_t n, const char *const *lefts,
                        const size_t *left_lens, const char *const *rights, const size_t *right_lens,
                        int lenient, const char *name, const char *where);

/* Appends the ids of one pre-tokenized word (rank BPE). */
typedef struct {
    int *ids;
    size_t n, cap;
} qp_ids;
void qp_ids_push(qp_ids *v, int id);
/* Words longer than this are merged in pieces of this size (bounded memory;
 * see tokenizer_merge.c). */
#define QP_BPE_MAX_WORD ((size_t)1 << 20)
void qp_tok_bpe_word(const qp_tokenizer *t, const char *w, size_t n, qp_ids *out);

/* A byte trie of token contents (tokenizer_trie.c): fn(ud, value, len) for
 * each entry that is a prefix of s[0..n), shortest first; at most one step
 * per byte of the longest entry. */
typedef struct qp_tok_trie qp_tok_trie;
typedef void (*qp_trie_fn)(void *ud, int value, size_t len);
qp_tok_trie *qp_tok_trie_new(void);
void qp_tok_trie_free(qp_tok_trie *tr);
/* Adds p[0..n) (n > 0) with value; a content added twice keeps its first. */
void qp_tok_trie_add(qp_tok_trie *tr, const char *p, size_t n, int value);
void qp_tok_trie_prefixes(const qp_tok_trie *tr, const char *s, size_t n, qp_trie_fn fn, void *ud);

/* Added tokens: builds the lookup trie once b->added and b->norms are
 * filled. */
void qp_tok_added_index(qp_tok_bpe *b);

/* BPE encode / decode (tokenizer_hfenc.c), called by qp_tokenizer_encode /
 * qp_tokenizer_decode for QP_TOK_MODEL_BPE. */
int qp_tok_bpe_encode(const qp_tokenizer *t, const char *text, size_t len, unsigned flags, int **out_ids,
                      size_t *out_n);
int qp_tok_bpe_decode(const qp_tokenizer *t, const int *ids, size_t n, char **out_text, size_t *out_len);

/* Known pre-tokenizer regexes (tokenizer_gguf_pre.c): the GGUF pre name of
 * a tokenizer.json's Split regexes (NULL when unknown) ... */
const char *qp_tok_pre_from_regexes(const char *const *regexes, size_t n, int bytelevel_regex);
/* ... and a GGUF vocabulary's pipeline as llama.cpp runs its pre type
 * (NULL: "default"): the regexes as Isolated splits, ByteLevel, the
 * ByteLevel decoder, ignore_merges; *add_bos is llama.cpp's default for
 * the type.  An unknown type is QP_EFORMAT naming PATH and the key. */
int qp_tok_bpe_llama_pre(qp_tok_bpe *b, const char *pre, const char *path, int *add_bos);

#endif
