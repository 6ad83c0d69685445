/* Tokenizers: SentencePiece BPE (the LLaMA / llama.cpp "spm" vocabulary)
 * and byte-level BPE ranked by merges (Hugging Face tokenizer.json, GGUF
 * "gpt2"; see model/tokenizer_pipe.h for how those run).
 *
 * SentencePiece:
 * Loaded from a SentencePiece `tokenizer.model` (protobuf ModelProto, parsed
 * here without libprotobuf), from a GGUF's `tokenizer.ggml.*` keys, or from
 * plain arrays.  Encoding follows sentencepiece's bpe_model.cc (which
 * llama.cpp's llm_tokenizer_spm mirrors):
 *   text -> (runs of ' ' squeezed and trimmed when the model's
 *      remove_extra_whitespaces says so) -> ' ' replaced by U+2581 "▁",
 *      "▁" prepended when add_dummy_prefix and the text is not empty
 *   -> UTF-8 characters (each invalid byte is a character of its own;
 *      USER_DEFINED pieces are matched whole first)
 *   -> repeatedly merge the adjacent pair whose concatenation is a NORMAL /
 *      USER_DEFINED / UNUSED piece with the highest score (ties: leftmost),
 *      via a priority queue, O(n log n); merged UNUSED pieces are split back
 *   -> piece ids; a symbol that is not a piece becomes its bytes' <0xNN>
 *      pieces (byte fallback; unk for a missing byte piece) or, without
 *      byte fallback, one unk id per run of unknown symbols (as
 *      sentencepiece does).
 * A normaliser charsmap (e.g. nmt_nfkc) in tokenizer.model is not applied,
 * as llama.cpp does not apply it either.
 * A tokenizer is immutable after loading: encode/decode may run from many
 * threads at once. */
#ifndef QP_MODEL_TOKENIZER_H
#define QP_MODEL_TOKENIZER_H

#include <stddef.h>

typedef struct qp_tokenizer qp_tokenizer;

/* Piece types, numbered as sentencepiece's ModelProto and GGUF's
 * tokenizer.ggml.token_type number them. */
typedef enum {
    QP_TOK_NORMAL       = 1,
    QP_TOK_UNKNOWN      = 2,
    QP_TOK_CONTROL      = 3,
    QP_TOK_USER_DEFINED = 4,
    QP_TOK_UNUSED       = 5,
    QP_TOK_BYTE         = 6,
} qp_token_type;

/* Loads a SentencePiece tokenizer.model (BPE only; UNIGRAM is refused).
 * Errors (QP_EFORMAT) are one line "PATH: offset N: what is wrong", N the
 * byte offset in the file of the offending field. */
int qp_tokenizer_load_spm(qp_tokenizer **out, const char *path);

/* Loads the vocabulary of a GGUF (tokenizer.ggml.model "llama": tokens,
 * scores, token_type, bos/eos/unknown/padding ids, add_bos/add_eos/
 * add_space_prefix).  path names the file in errors (NULL: the GGUF's own
 * path); errors are one line "PATH: key 'K': ..." or
 * "PATH: tokenizer.ggml.tokens[i]: ...". */
typedef struct qp_gguf qp_gguf;   /* model/gguf.h */
int qp_tokenizer_load_gguf(qp_tokenizer **out, const qp_gguf *g, const char *path);

/* Builds a tokenizer from arrays of n pieces (NUL-terminated UTF-8).
 * scores may be NULL (all 0); types may be NULL (all NORMAL).  bos/eos may
 * be -1 (none); unk must be a valid id (of type UNKNOWN when types given).
 * Byte fallback is on when the vocabulary has BYTE pieces.  Add-BOS defaults
 * to on when bos >= 0, add-EOS to off. */
int qp_tokenizer_from_vocab(qp_tokenizer **out, size_t n, const char *const *pieces,
                            const float *scores, const int *types,
                            int bos, int eos, int unk, int add_dummy_prefix);

/* Loads a Hugging Face `tokenizer.json` (model type BPE) with the
 * `tokenizer_config.json` beside it (config may be NULL: no BOS/EOS added,
 * no chat template).  Normalizers, pre-tokenizers (PCRE2 regexes), added
 * tokens and decoders run as the Hugging Face tokenizers library runs them.
 * name is what errors call the file ("DIR/tokenizer.json"); errors are one
 * line "NAME: what is wrong" (QP_EFORMAT). */
int qp_tokenizer_load_hf(qp_tokenizer **out, const char *json, size_t len, const char *config_json,
                         size_t config_len, const char *name);

/* Loads the tokenizer of a Hugging Face model directory: tokenizer.model
 * when present, else tokenizer.json (+ tokenizer_config.json) — the order
 * llama.cpp's convert_hf_to_gguf tries them in, which the pipeline's model
 * loading and GGUF packaging follow too. */
int qp_tokenizer_load_dir(qp_tokenizer **out, const char *dir);

void qp_tokenizer_free(qp_tokenizer *t);

size_t qp_tokenizer_n_vocab(const qp_tokenizer *t);
int qp_tokenizer_bos(const qp_tokenizer *t);       /* -1 when none */
int qp_tokenizer_eos(const qp_tokenizer *t);       /* -1 when none */
int qp_tokenizer_unk(const qp_tokenizer *t);
int qp_tokenizer_pad(const qp_tokenizer *t);       /* -1 when none */
/* The model's own defaults (tokenizer_config / GGUF add_bos_token ...). */
int qp_tokenizer_wants_bos(const qp_tokenizer *t);
int qp_tokenizer_wants_eos(const qp_tokenizer *t);
int qp_tokenizer_has_byte_fallback(const qp_tokenizer *t);
int qp_tokenizer_add_dummy_prefix(const qp_tokenizer *t);

/* Piece text (▁ kept), score and type of id; NULL / 0 / 0 when out of range. */
const char *qp_tokenizer_piece(const qp_tokenizer *t, int id);
float qp_tokenizer_score(const qp_tokenizer *t, int id);
int qp_tokenizer_type(const qp_tokenizer *t, int id);
/* Id of the piece with exactly these bytes (any type); -1 when none. */
int qp_tokenizer_find(const qp_tokenizer *t, const char *piece, size_t len);

/* What kind of vocabulary: SentencePiece ("llama" in GGUF) or byte-level
 * BPE ranked by merges ("gpt2" in GGUF). */
typedef enum { QP_TOK_MODEL_SPM = 1, QP_TOK_MODEL_BPE = 2 } qp_tok_model;
qp_tok_model qp_tokenizer_model(const qp_tokenizer *t);
/* GGUF tokenizer.ggml.pre of a BPE vocabulary ("qwen2", "llama-bpe", ...),
 * recognised from its pre-tokenizer; NULL for SPM or when unrecognised. */
const char *qp_tokenizer_pre(const qp_tokenizer *t);
/* BPE merges in rank order, each "left right" as GGUF's
 * tokenizer.ggml.merges and tokenizer.json store them; 0 / NULL for SPM. */
size_t qp_tokenizer_n_merges(const qp_tokenizer *t);
const char *qp_tokenizer_merge(const qp_tokenizer *t, size_t i);
/* tokenizer_config.json's chat_template (or GGUF tokenizer.chat_template);
 * NULL when none. */
const char *qp_tokenizer_chat_template(const qp_tokenizer *t);

/* Encode flags. */
#define QP_TOK_ADD_BOS 1u   /* prepend bos (ignored when the model has none) */
#define QP_TOK_ADD_EOS 2u   /* append eos (ignored when the model has none) */
#define QP_TOK_PARSE_SPECIAL 4u /* special tokens written in the text become their ids: tokenizer.json's
                                   special added tokens, GGUF CONTROL/UNKNOWN pieces (non-special added /
                                   USER_DEFINED ones are matched always); otherwise they are plain text */

/* Encodes len bytes of text (need not be NUL-terminated nor valid UTF-8; for
 * BPE vocabularies each invalid byte reads as U+FFFD, as llama.cpp reads it).
 * *out_ids is malloc'ed (non-NULL even when *out_n is 0).  Only fails on
 * text longer than 1 GiB or NULL text (QP_EUSAGE). */
int qp_tokenizer_encode(const qp_tokenizer *t, const char *text, size_t len,
                        unsigned flags, int **out_ids, size_t *out_n);

/* Decode flags. */
#define QP_TOK_DECODE_STRIP_PREFIX 1u  /* drop the space the dummy prefix added */

/* Decodes ids to text.  BPE vocabularies run their decoder chain (tokenizer.json's
 * decoder; ByteLevel for GGUF "gpt2") over every piece, special ones
 * included, as tokenizers' decode does by default (bytes come back raw,
 * without U+FFFD replacement); flags are ignored.  SentencePiece: "▁" -> ' ',
 * consecutive <0xNN> pieces -> their raw bytes, CONTROL pieces (bos/eos) ->
 * nothing, UNKNOWN -> " ⁇ " (as sentencepiece).  With QP_TOK_DECODE_STRIP_PREFIX and a model that adds
 * the dummy prefix, the leading ' ' of the first text piece is dropped, so
 * decode(encode(x)) == x.  *out_text is malloc'ed and NUL-terminated.
 * An id out of range is an error (QP_EUSAGE). */
int qp_tokenizer_decode(const qp_tokenizer *t, const int *ids, size_t n, unsigned flags,
                        char **out_text, size_t *out_len);

#endif
