/* Private to model/tokenizer*.c: the vocabulary description every loader
 * fills in, and the one constructor that validates it. */
#ifndef QP_MODEL_TOKENIZER_IMPL_H
#define QP_MODEL_TOKENIZER_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "model/tokenizer.h"

/* U+2581 LOWER ONE EIGHTH BLOCK, sentencepiece's visible space. */
#define QP_SPACE_SYM "\xE2\x96\x81"
#define QP_SPACE_SYM_LEN 3

struct qp_tokenizer {
    size_t n;
    char *blob;            /* every piece, NUL-terminated, back to back */
    uint32_t *off;         /* [n] piece i starts at blob + off[i] */
    uint32_t *len;         /* [n] piece byte length */
    float *scores;         /* [n] */
    uint8_t *types;        /* [n] qp_token_type */
    uint32_t *table;       /* [mask+1] open addressing: id + 1, 0 = empty */
    size_t mask;
    int bos, eos, unk, pad;
    int add_dummy_prefix, remove_extra_ws, escape_ws;
    int byte_fallback, wants_bos, wants_eos;
    int byte_id[256];      /* id of <0xNN>, -1 when absent */
    int has_unused;
    size_t max_user_len;   /* longest USER_DEFINED piece, 0 when none */
    uint8_t user_first[256]; /* 1 if some USER_DEFINED piece starts with byte */
    struct qp_tok_trie *ctrl_trie; /* SPM: CONTROL / UNKNOWN pieces (the
                              specials QP_TOK_PARSE_SPECIAL parses); NULL none */
    uint64_t *pair_bits;   /* filter over adjacent character pairs inside
                              mergeable pieces (false positives only; SPM) */
    size_t pair_mask;      /* bits - 1 */
    qp_tok_model model;    /* SPM or BPE */
    struct qp_tok_bpe *bpe; /* BPE only: pipeline, merges, added tokens
                              (model/tokenizer_pipe.h) */
    char *chat_template;   /* NULL when none */
};

/* The hash of the piece table and the pair filter. */
uint64_t qp_tok_hash(const char *p, size_t n);

/* Id of the piece with exactly these bytes, -1 when none (hash lookup). */
int qp_tok_lookup(const qp_tokenizer *t, const char *p, size_t n);

typedef struct {
    size_t n;
    const char *const *pieces;   /* piece bytes, not necessarily NUL-terminated */
    const size_t *lens;          /* piece lengths; NULL -> strlen(pieces[i]) */
    const float *scores;         /* NULL -> all 0 */
    const int *types;            /* NULL -> all NORMAL */
    int bos, eos, unk, pad;      /* -1 = none (unk: required) */
    int add_dummy_prefix;
    int remove_extra_whitespaces;
    int escape_whitespaces;
    int byte_fallback;           /* 1: on, every <0x00>..<0xFF> must exist;
                                    0: off (BYTE pieces only decode);
                                    -1: on iff any BYTE piece exists */
    int wants_bos, wants_eos;
    /* 0 (SentencePiece): exactly one UNKNOWN piece, at unk; no piece twice.
     * QP_TOK_MODEL_BPE: unk may be -1 and need not be of type UNKNOWN; a
     * piece spelled twice keeps its first id (dup_last: its last id, as
     * llama.cpp's token_to_id). */
    int bpe;
    int dup_last;
    /* GGUF "llama" (llama.cpp's reading): any number of pieces may be of
     * type UNKNOWN (phi-3 types its padding so, and its <unk> CONTROL);
     * unk is just an id. */
    int many_unknown;
} qp_tok_spec;

/* Where a vocabulary came from, so validation errors name it:
 * with offsets "PATH: offset N: ...", N = offsets[i] for piece i or
 * end_offset for whole-vocabulary problems; without them
 * "PATH: ARRAY[i]: ..." (e.g. ARRAY = "tokenizer.ggml.tokens") or
 * "PATH: ..." for whole-vocabulary problems. */
typedef struct {
    const char *path;
    int by_offset;                  /* errors say "offset N" (offsets may be
                                       NULL when there are no pieces) */
    const uint64_t *offsets;
    uint64_t end_offset;
    const char *array;
    uint64_t byte_fallback_offset;  /* where byte_fallback was set (offsets mode) */
} qp_tok_origin;

/* Validates the spec (non-empty, valid UTF-8, unique pieces, known types,
 * finite scores, BYTE pieces named <0xNN> with uppercase hex, exactly one
 * UNKNOWN piece at unk, special ids in range) and builds the tokenizer.
 * Returns 0 or QP_EFORMAT with a one-line message. */
int qp_tok_build(qp_tokenizer **out, const qp_tok_spec *spec, const qp_tok_origin *origin);

/* Length of the valid UTF-8 character at s[0..n), or 0 when s[0] does not
 * start one (bad lead byte, bad or missing continuation, overlong form,
 * surrogate, > U+10FFFF). */
size_t qp_utf8_char_len(const unsigned char *s, size_t n);
/* When s[0..n) (n > 0) does not start a valid character: the length of its
 * maximal ill-formed subpart (Unicode's "maximal subpart" practice, which
 * Rust's String::from_utf8_lossy follows): the lead byte and the
 * continuation bytes that could still have completed it; 1 at least. */
size_t qp_utf8_bad_len(const unsigned char *s, size_t n);

#endif
