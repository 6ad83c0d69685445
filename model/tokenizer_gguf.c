/* Tokenizer from a GGUF's tokenizer.ggml.* metadata: llama.cpp's "llama"
 * (SentencePiece) and "gpt2" (byte-level BPE) vocabularies.  Defaults for
 * absent keys are llama.cpp's for that vocabulary: "llama": bos 1, eos 2,
 * unk 0, no pad, add BOS, no EOS, dummy prefix on; "gpt2": bos = eos = 11,
 * no unk or pad, add BOS as its pre-tokenizer type says, no EOS.  A "gpt2"
 * vocabulary is tokenized as llama.cpp does: tokenizer.ggml.pre selects its
 * regex list (tokenizer_gguf_pre.c); CONTROL and UNKNOWN pieces written in
 * the text are matched with QP_TOK_PARSE_SPECIAL, USER_DEFINED ones always;
 * no normalization. */
#include "model/tokenizer.h"
#include "model/tokenizer_impl.h"
#include "model/tokenizer_pipe.h"

#include "common/alloc.h"
#include "common/error.h"
#include "model/gguf.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* An optional integer key: *out keeps its default when absent. */
static int opt_int(const qp_gguf *g, const char *path, const char *key, int *out)
{
    int64_t v;
    int rc = qp_gguf_get_int(g, key, &v);
    if (rc == QP_ENOTFOUND) {
        qp_error_clear();
        return 0;
    }
    if (rc)
        return rc;
    /* Writers store "no such token" as -1 or as u32 0xFFFFFFFF. */
    if (v == -1 || v == (int64_t)UINT32_MAX) {
        *out = -1;
        return 0;
    }
    if (v < 0 || v > INT32_MAX)
        return qp_error_set(QP_EFORMAT, "%s: key '%s': token id %lld is out of range",
                            path, key, (long long)v);
    *out = (int)v;
    return 0;
}

static int opt_bool(const qp_gguf *g, const char *key, int *out)
{
    bool b;
    int rc = qp_gguf_get_bool(g, key, &b);
    if (rc == QP_ENOTFOUND) {
        qp_error_clear();
        return 0;
    }
    if (rc)
        return rc;
    *out = b;
    return 0;
}

/* An optional per-token array: NULL when absent, else its length must
 * match the token count. */
static int opt_array(const qp_gguf *g, const char *path, const char *key, uint64_t n,
                     const qp_gguf_value **out)
{
    *out = NULL;
    int rc = qp_gguf_get_array(g, key, -1, out);
    if (rc == QP_ENOTFOUND) {
        qp_error_clear();
        *out = NULL;
        return 0;
    }
    if (rc)
        return rc;
    if (qp_gguf_array_len(*out) != n)
        return qp_error_set(QP_EFORMAT, "%s: key '%s': has %llu entries but tokenizer.ggml.tokens has %llu",
                            path, key, (unsigned long long)qp_gguf_array_len(*out), (unsigned long long)n);
    return 0;
}

/* tokenizer.chat_template when present. */
static int opt_template(const qp_gguf *g, qp_tokenizer *t)
{
    const char *s;
    uint64_t len;
    int rc = qp_gguf_get_string(g, "tokenizer.chat_template", &s, &len);
    if (rc == QP_ENOTFOUND) {
        qp_error_clear();
        return 0;
    }
    if (rc)
        return rc;
    t->chat_template = qp_xstrndup(s, (size_t)len);
    return 0;
}

/* The BPE side of a "gpt2" vocabulary once its pieces are in t. */
static int finish_bpe(const qp_gguf *g, const char *path, qp_tokenizer *t)
{
    int rc;
    const qp_gguf_value *mg = NULL;
    if ((rc = qp_gguf_get_array(g, "tokenizer.ggml.merges", QP_GGUF_STRING, &mg)))
        return rc;
    uint64_t nm = qp_gguf_array_len(mg);
    if (nm > (uint64_t)INT32_MAX)
        return qp_error_set(QP_EFORMAT, "%s: key 'tokenizer.ggml.merges': %llu merges, too many", path,
                            (unsigned long long)nm);
    const char **m = qp_xmalloc((nm ? nm : 1) * sizeof(*m));
    size_t *ml = qp_xmalloc((nm ? nm : 1) * sizeof(*ml));
    for (uint64_t i = 0; i < nm && !rc; i++) {
        uint64_t l;
        rc = qp_gguf_array_get_string(mg, i, &m[i], &l);
        ml[i] = (size_t)l;
    }
    if (!rc)
        rc = qp_tok_merges_build(t, t->bpe, (size_t)nm, m, ml, NULL, NULL, 1, path, "tokenizer.ggml.merges");
    free(m);
    free(ml);
    if (rc)
        return rc;
    /* the pieces llama.cpp cuts out of the text before pre-tokenizing */
    qp_tok_bpe *b = t->bpe;
    size_t na = 0;
    for (size_t i = 0; i < t->n; i++)
        na += t->types[i] == QP_TOK_CONTROL || t->types[i] == QP_TOK_USER_DEFINED || t->types[i] == QP_TOK_UNKNOWN;
    b->added = qp_xcalloc(na ? na : 1, sizeof(*b->added));
    for (size_t i = 0; i < t->n; i++) {
        int ty = t->types[i];
        if (ty != QP_TOK_CONTROL && ty != QP_TOK_USER_DEFINED && ty != QP_TOK_UNKNOWN)
            continue;
        /* the content is the piece itself: added_blob is the vocabulary blob */
        b->added[b->n_added++] = (qp_added){ (int)i, t->off[i], t->len[i], (uint8_t)(ty != QP_TOK_USER_DEFINED),
                                             0, 0, 0, 0 };
    }
    b->added_blob = qp_xmalloc(t->off[t->n - 1] + t->len[t->n - 1] + 1);
    memcpy(b->added_blob, t->blob, t->off[t->n - 1] + t->len[t->n - 1] + 1);
    qp_tok_added_index(b);
    return 0;
}

/* tokenizer.ggml.model: *bpe for "gpt2", with *b holding its pipeline as
 * tokenizer.ggml.pre names it (*pre_bos: llama.cpp's add-BOS default for
 * that type); "llama" is SentencePiece; anything else is refused. */
static int read_model(const qp_gguf *g, const char *path, int *bpe, qp_tok_bpe **b, int *pre_bos)
{
    const char *model = NULL;
    int rc = qp_gguf_get_string(g, "tokenizer.ggml.model", &model, NULL);
    if (rc)
        return rc;
    *bpe = strcmp(model, "gpt2") == 0;
    if (strcmp(model, "bert") == 0)
        return qp_error_set(QP_EFORMAT, "%s: key 'tokenizer.ggml.model': is 'bert' (WordPiece), which qpipe does "
                            "not tokenize; only 'llama' (SentencePiece) and 'gpt2' (byte-level BPE) are supported",
                            path);
    if (strcmp(model, "llama") != 0 && !*bpe)
        return qp_error_set(QP_EFORMAT, "%s: key 'tokenizer.ggml.model': is '%s'; only 'llama' "
                            "(SentencePiece BPE) and 'gpt2' (byte-level BPE) vocabularies are supported", path,
                            model);
    if (!*bpe)
        return 0;
    const char *pre = NULL;
    rc = qp_gguf_get_string(g, "tokenizer.ggml.pre", &pre, NULL);
    if (rc == QP_ENOTFOUND) {
        qp_error_clear();
        rc = 0;
    }
    *b = qp_xcalloc(1, sizeof(**b));
    (*b)->unk = -1;
    return rc ? rc : qp_tok_bpe_llama_pre(*b, pre, path, pre_bos);
}

/* The per-token arrays: pieces (pointing into the GGUF), scores and types
 * (NULL when absent). */
typedef struct {
    uint64_t n;
    const char **pieces;
    size_t *lens;
    float *scores;
    int *types;
} vocab_arrays;

static void vocab_arrays_free(vocab_arrays *v)
{
    free(v->pieces);
    free(v->lens);
    free(v->scores);
    free(v->types);
}

static int read_arrays(const qp_gguf *g, const char *path, vocab_arrays *v)
{
    int rc;
    const qp_gguf_value *tok = NULL, *sc = NULL, *ty = NULL;
    if ((rc = qp_gguf_get_array(g, "tokenizer.ggml.tokens", QP_GGUF_STRING, &tok)))
        return rc;
    uint64_t n = v->n = qp_gguf_array_len(tok);
    if (n > (uint64_t)INT32_MAX)
        return qp_error_set(QP_EFORMAT, "%s: key 'tokenizer.ggml.tokens': %llu tokens, too many", path,
                            (unsigned long long)n);
    if ((rc = opt_array(g, path, "tokenizer.ggml.scores", n, &sc)) ||
        (rc = opt_array(g, path, "tokenizer.ggml.token_type", n, &ty)))
        return rc;
    size_t cnt = n ? (size_t)n : 1;
    v->pieces = qp_xmalloc(cnt * sizeof(*v->pieces));
    v->lens = qp_xmalloc(cnt * sizeof(*v->lens));
    for (uint64_t i = 0; i < n; i++) {
        uint64_t len;
        if ((rc = qp_gguf_array_get_string(tok, i, &v->pieces[i], &len)))
            return rc;
        v->lens[i] = (size_t)len;
    }
    if (sc) {
        v->scores = qp_xmalloc(cnt * sizeof(*v->scores));
        if ((rc = qp_gguf_array_copy_f32(sc, v->scores)))
            return rc;
    }
    if (ty) {
        int32_t *t32 = qp_xmalloc(cnt * sizeof(*t32));
        v->types = qp_xmalloc(cnt * sizeof(*v->types));
        rc = qp_gguf_array_copy_i32(ty, t32);
        for (uint64_t i = 0; i < n && !rc; i++)
            v->types[i] = t32[i];
        free(t32);
    }
    return rc;
}

int qp_tokenizer_load_gguf(qp_tokenizer **out, const qp_gguf *g, const char *path)
{
    int rc;
    vocab_arrays v = { 0 };
    qp_tok_bpe *b = NULL;
    int bpe = 0, pre_bos = 0;
    *out = NULL;
    if (!path)
        path = qp_gguf_path(g);
    if ((rc = read_model(g, path, &bpe, &b, &pre_bos)) || (rc = read_arrays(g, path, &v)))
        goto done;

    int bos = 1, eos = 2, unk = 0, pad = -1;
    int add_bos = 1, add_eos = 0, add_space = 1;
    if (bpe) {
        bos = eos = 11 < (int)v.n && pre_bos >= 0 ? 11 : -1;
        if (pre_bos < 0)
            bos = -1;
        unk = -1;
        add_bos = pre_bos > 0;
        add_space = 0;
    }
    if ((rc = opt_int(g, path, "tokenizer.ggml.bos_token_id", &bos)) ||
        (rc = opt_int(g, path, "tokenizer.ggml.eos_token_id", &eos)) ||
        (rc = opt_int(g, path, "tokenizer.ggml.unknown_token_id", &unk)) ||
        (rc = opt_int(g, path, "tokenizer.ggml.padding_token_id", &pad)) ||
        (rc = opt_bool(g, "tokenizer.ggml.add_bos_token", &add_bos)) ||
        (rc = opt_bool(g, "tokenizer.ggml.add_eos_token", &add_eos)) ||
        (rc = opt_bool(g, "tokenizer.ggml.add_space_prefix", &add_space)))
        goto done;

    qp_tok_spec spec = {
        .n = (size_t)v.n, .pieces = v.pieces, .lens = v.lens, .scores = v.scores, .types = v.types,
        .bos = bos, .eos = eos, .unk = unk, .pad = pad,
        .add_dummy_prefix = add_space, .remove_extra_whitespaces = 0, .escape_whitespaces = 1,
        .byte_fallback = bpe ? 0 : -1, .wants_bos = add_bos, .wants_eos = add_eos,
        .bpe = bpe, .dup_last = bpe, .many_unknown = !bpe,
    };
    qp_tok_origin origin = { .path = path, .array = "tokenizer.ggml.tokens" };
    if ((rc = qp_tok_build(out, &spec, &origin)))
        goto done;
    if (bpe) {
        (*out)->bpe = b;
        b = NULL;
        rc = finish_bpe(g, path, *out);
    }
    if (!rc)
        rc = opt_template(g, *out);
    if (rc) {
        qp_tokenizer_free(*out);
        *out = NULL;
    }

done:
    qp_tok_bpe_free(b);
    vocab_arrays_free(&v);
    return rc;
}
