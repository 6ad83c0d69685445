/* The tokenizer.* keys of an exported GGUF (see gguf_llama_vocab.h), in the
 * order convert_hf_to_gguf.py (c392e50) and gguf-py's SpecialVocab write
 * them.  Both vocabularies come from a loaded qp_tokenizer: the exporter
 * never parses tokenizer.model or tokenizer.json itself. */
#include "model/gguf_llama_vocab.h"

#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* GGUF tokenizer.ggml.token_type (gguf-py TokenType) */
enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER_DEFINED = 4, TT_UNUSED = 5, TT_BYTE = 6 };

typedef struct {
    size_t n;
    char **tokens;
    float *scores;     /* SentencePiece only */
    int32_t *types;
} vocab;

/* A vocabulary of the config's n_vocab ids for a tokenizer of n_tok
 * (`what`: "pieces" / "tokens"), which may not have more. */
static int vocab_alloc(vocab *v, size_t n_tok, const char *what, const char *name, int n_vocab, int with_scores)
{
    if (n_tok > (size_t)n_vocab)
        return qp_error_set(QP_EFORMAT, "%s: %zu %s, more than the config's vocab_size %d", name, n_tok, what,
                            n_vocab);
    v->n = (size_t)n_vocab;
    v->tokens = qp_xcalloc(v->n, sizeof(*v->tokens));
    v->scores = with_scores ? qp_xmalloc(v->n * sizeof(*v->scores)) : NULL;
    v->types = qp_xmalloc(v->n * sizeof(*v->types));
    return 0;
}

static void vocab_free(vocab *v)
{
    if (v->tokens)
        for (size_t i = 0; i < v->n; i++)
            free(v->tokens[i]);
    free(v->tokens);
    free(v->scores);
    free(v->types);
    memset(v, 0, sizeof(*v));
}

/* Model.does_token_look_special */
static int looks_special(const char *s)
{
    size_t n = strlen(s);
    if (strcmp(s, "<pad>") == 0 || strcmp(s, "<mask>") == 0 || strcmp(s, "<2mass>") == 0 ||
        strcmp(s, "[@BOS@]") == 0)
        return 1;
    if (n >= 4 && strncmp(s, "<|", 2) == 0 && strcmp(s + n - 2, "|>") == 0)
        return 1;
    /* "<｜" ... "｜>" (U+FF5C, deepseek-coder) */
    if (n >= 8 && strncmp(s, "<\xef\xbd\x9c", 4) == 0 && strcmp(s + n - 4, "\xef\xbd\x9c>") == 0)
        return 1;
    return n >= 8 && strncmp(s, "<unused", 7) == 0 && s[n - 1] == '>';
}

/* "▁" -> " " (pre-normalised user-defined spaces) */
static char *unspace(const char *s)
{
    char *r = qp_strdup(s), *o = r;
    for (const char *p = s; *p;) {
        if (strncmp(p, "\xe2\x96\x81", 3) == 0) {
            *o++ = ' ';
            p += 3;
        } else {
            *o++ = *p++;
        }
    }
    *o = '\0';
    return r;
}

/* ---- SentencePiece: _create_vocab_sentencepiece ---- */

/* SentencePiece's own numbering: IsUnknown / IsControl / IsUnused / IsByte
 * are tested, everything else (user-defined pieces too) is NORMAL. */
static int32_t spm_type(int t)
{
    switch (t) {
    case QP_TOK_UNKNOWN: return TT_UNKNOWN;
    case QP_TOK_CONTROL: return TT_CONTROL;
    case QP_TOK_UNUSED: return TT_UNUSED;
    case QP_TOK_BYTE: return TT_BYTE;
    default: return TT_NORMAL;
    }
}

static int build_spm(vocab *v, const qp_tokenizer *tok, const char *name, int n_vocab, const qp_gguf_llama_opts *o)
{
    size_t n_spm = qp_tokenizer_n_vocab(tok);
    int rc = vocab_alloc(v, n_spm, "pieces", name, n_vocab, 1);
    if (rc)
        return rc;
    for (size_t i = 0; i < v->n; i++) {
        if (i < n_spm) {
            v->tokens[i] = qp_strdup(qp_tokenizer_piece(tok, (int)i));
            v->scores[i] = qp_tokenizer_score(tok, (int)i);
            v->types[i] = spm_type(qp_tokenizer_type(tok, (int)i));
        } else {
            /* ids the tokenizer does not have */
            v->tokens[i] = qp_strfmt("[PAD%zu]", i);
            v->scores[i] = -10000.0f;
            v->types[i] = TT_UNUSED;
        }
    }
    for (size_t i = 0; i < o->n_added_json; i++) {
        const qp_gguf_added_token *a = &o->added_json[i];
        if (a->id < 0 || (size_t)a->id >= v->n)
            continue;   /* convert warns and ignores it */
        free(v->tokens[a->id]);
        v->tokens[a->id] = qp_strdup(a->content);
        v->scores[a->id] = -1000.0f;
        v->types[a->id] = TT_USER_DEFINED;
    }
    for (size_t i = 0; i < o->n_added_decoder; i++) {
        const qp_gguf_added_token *a = &o->added_decoder[i];
        if (a->id < 0 || (size_t)a->id >= v->n)
            return qp_error_set(QP_EFORMAT, "added token %d ('%s') is outside the vocabulary of %zu", a->id,
                                a->content, v->n);
        free(v->tokens[a->id]);
        if (a->special || looks_special(a->content)) {
            v->tokens[a->id] = qp_strdup(a->content);
            v->types[a->id] = TT_CONTROL;
        } else {
            v->tokens[a->id] = unspace(a->content);
            v->types[a->id] = TT_USER_DEFINED;
        }
        v->scores[a->id] = -1000.0f;
    }
    return 0;
}

/* ---- byte-level BPE: get_vocab_base ---- */

/* tokenizer.vocab (model vocabulary + added tokens) by id: an added token
 * (special: CONTROL, else USER_DEFINED in the tokenizer) is CONTROL when
 * special or when it looks special, else USER_DEFINED with "▁" as " ";
 * a vocabulary token is NORMAL; an id nothing names is "[PADi]" UNUSED.
 * (convert also round-trips non-normalized added tokens through
 * decode(encode(t)), which gives t back for an added token matched whole.) */
static int build_bpe(vocab *v, const qp_tokenizer *tok, const char *name, int n_vocab)
{
    size_t n_tok = qp_tokenizer_n_vocab(tok);
    int rc = vocab_alloc(v, n_tok, "tokens", name, n_vocab, 0);
    if (rc)
        return rc;
    for (size_t i = 0; i < v->n; i++) {
        const char *piece = i < n_tok ? qp_tokenizer_piece(tok, (int)i) : NULL;
        if (!piece) {
            v->tokens[i] = qp_strfmt("[PAD%zu]", i);
            v->types[i] = TT_UNUSED;
            continue;
        }
        int t = qp_tokenizer_type(tok, (int)i);
        if (t == QP_TOK_CONTROL || (t == QP_TOK_USER_DEFINED && looks_special(piece))) {
            v->tokens[i] = qp_strdup(piece);
            v->types[i] = TT_CONTROL;
        } else if (t == QP_TOK_USER_DEFINED) {
            v->tokens[i] = unspace(piece);
            v->types[i] = TT_USER_DEFINED;
        } else {
            v->tokens[i] = qp_strdup(piece);
            v->types[i] = TT_NORMAL;
        }
    }
    return 0;
}

/* ---- keys ---- */

/* SpecialVocab.add_to_gguf: merges (BPE), special ids in the order they
 * were found, add_<typ>_token flags, chat template. */
static int add_special_vocab(qp_gguf_writer *w, const qp_tokenizer *tok, const qp_gguf_llama_opts *o)
{
    static const char *const id_keys[QP_SPECIAL_COUNT] = {
        "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.seperator_token_id", "tokenizer.ggml.padding_token_id", "tokenizer.ggml.cls_token_id",
        "tokenizer.ggml.mask_token_id",
    };
    int rc = 0;
    size_t n_merges = qp_tokenizer_model(tok) == QP_TOK_MODEL_BPE ? qp_tokenizer_n_merges(tok) : 0;
    if (n_merges) {
        const char **m = qp_xmalloc(n_merges * sizeof(*m));
        for (size_t i = 0; i < n_merges; i++)
            m[i] = qp_tokenizer_merge(tok, i);
        rc |= qp_gguf_writer_add_string_array(w, "tokenizer.ggml.merges", m, NULL, n_merges);
        free(m);
    }
    for (int i = 0; i < o->n_special; i++)
        rc |= qp_gguf_writer_add_u32(w, id_keys[o->special[i].typ], (uint32_t)o->special[i].id);
    if (o->add_bos >= 0)
        rc |= qp_gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", o->add_bos != 0);
    if (o->add_eos >= 0)
        rc |= qp_gguf_writer_add_bool(w, "tokenizer.ggml.add_eos_token", o->add_eos != 0);
    /* tokenizer_config.json's, as the options read it; else the tokenizer's own */
    const char *tmpl = o->chat_template ? o->chat_template : qp_tokenizer_chat_template(tok);
    if (tmpl)
        rc |= qp_gguf_writer_add_str(w, "tokenizer.chat_template", tmpl);
    return rc ? QP_ERROR : 0;
}

int qp_gguf_llama_add_vocab(qp_gguf_writer *w, const qp_tokenizer *tok, const char *tok_name, int n_vocab,
                            const qp_gguf_llama_opts *o)
{
    vocab v = { 0 };
    int rc = 0;
    const int bpe = qp_tokenizer_model(tok) == QP_TOK_MODEL_BPE;
    const char *pre = bpe ? qp_tokenizer_pre(tok) : "default";
    if (!pre) {
        /* convert_hf_to_gguf's get_vocab_base_pre raises here too */
        return qp_error_set(QP_EUSAGE, "%s: the BPE pre-tokenizer is not one llama.cpp knows (tokenizer.ggml.pre); "
                            "GGUF export needs a recognised one such as qwen2 or llama-bpe", tok_name);
    }
    if ((rc = bpe ? build_bpe(&v, tok, tok_name, n_vocab) : build_spm(&v, tok, tok_name, n_vocab, o)) != 0)
        goto done;
    rc |= qp_gguf_writer_add_str(w, "tokenizer.ggml.model", bpe ? "gpt2" : "llama");
    rc |= qp_gguf_writer_add_str(w, "tokenizer.ggml.pre", pre);
    rc |= qp_gguf_writer_add_string_array(w, "tokenizer.ggml.tokens", (const char *const *)v.tokens, NULL, v.n);
    if (v.scores)
        rc |= qp_gguf_writer_add_scalar_array(w, "tokenizer.ggml.scores", QP_GGUF_F32, v.scores, v.n);
    rc |= qp_gguf_writer_add_scalar_array(w, "tokenizer.ggml.token_type", QP_GGUF_I32, v.types, v.n);
    rc = rc ? QP_ERROR : add_special_vocab(w, tok, o);
done:
    vocab_free(&v);
    return rc;
}
