/* SentencePiece tokenizer.model loader: a minimal protobuf (proto2 wire
 * format) reader for ModelProto, without libprotobuf.
 *
 *   ModelProto      1 pieces (repeated SentencePiece), 2 trainer_spec,
 *                   3 normalizer_spec
 *   SentencePiece   1 piece (string), 2 score (float), 3 type (enum)
 *   TrainerSpec     3 model_type (1 UNIGRAM, 2 BPE), 24 treat_whitespace_as_suffix,
 *                   35 byte_fallback, 40 unk_id, 41 bos_id, 42 eos_id, 43 pad_id
 *   NormalizerSpec  1 name, 2 precompiled_charsmap, 3 add_dummy_prefix,
 *                   4 remove_extra_whitespaces, 5 escape_whitespaces
 * Every other field is skipped by its wire type.  Offsets in errors are
 * absolute byte offsets in the file.  The precompiled normalisation charsmap
 * (e.g. nmt_nfkc) is not applied, as llama.cpp does not apply it either. */
#include "model/tokenizer.h"
#include "model/tokenizer_impl.h"

#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"

#include <inttypes.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_GROUP_DEPTH 64

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_SGROUP = 3, WT_EGROUP = 4, WT_I32 = 5 };

typedef struct {
    const uint8_t *buf;    /* the whole file */
    size_t pos;            /* absolute offset of the next byte */
    size_t end;            /* end of the message being read */
    const char *path;
} pb_t;

static int pb_err(const pb_t *r, size_t off, const char *what)
{
    return qp_error_set(QP_EFORMAT, "%s: offset %zu: %s", r->path, off, what);
}

static int pb_varint(pb_t *r, uint64_t *out)
{
    size_t start = r->pos;
    uint64_t v = 0;
    for (int i = 0;; i++) {
        if (r->pos >= r->end)
            return pb_err(r, start, "truncated varint");
        uint8_t b = r->buf[r->pos++];
        if (i == 9 && b > 1)
            return pb_err(r, start, "varint longer than 64 bits");
        v |= (uint64_t)(b & 0x7F) << (7 * i);
        if (!(b & 0x80))
            break;
    }
    *out = v;
    return 0;
}

static int pb_tag(pb_t *r, uint32_t *field, int *wire, size_t *tag_off)
{
    uint64_t key;
    int rc;
    *tag_off = r->pos;
    if ((rc = pb_varint(r, &key)))
        return rc;
    *wire = (int)(key & 7);
    uint64_t f = key >> 3;
    if (f == 0 || f > 536870911u)
        return qp_error_set(QP_EFORMAT, "%s: offset %zu: invalid field number %" PRIu64,
                            r->path, *tag_off, f);
    if (*wire == 6 || *wire == 7)
        return qp_error_set(QP_EFORMAT, "%s: offset %zu: field %" PRIu64 " has invalid wire type %d",
                            r->path, *tag_off, f, *wire);
    *field = (uint32_t)f;
    return 0;
}

/* Reads a length prefix; *sub_end is where the payload ends. */
static int pb_len(pb_t *r, size_t *sub_end)
{
    size_t start = r->pos;
    uint64_t len;
    int rc;
    if ((rc = pb_varint(r, &len)))
        return rc;
    size_t left = r->end - r->pos;
    if (len > left)
        return qp_error_set(QP_EFORMAT, "%s: offset %zu: length %" PRIu64
                            " runs past the end of the enclosing message (%zu bytes left)",
                            r->path, start, len, left);
    *sub_end = r->pos + (size_t)len;
    return 0;
}

static int pb_fixed(pb_t *r, size_t n)
{
    if (r->end - r->pos < n)
        return qp_error_set(QP_EFORMAT, "%s: offset %zu: truncated %zu-byte fixed field (only %zu left)",
                            r->path, r->pos, n, r->end - r->pos);
    r->pos += n;
    return 0;
}

/* Skips one field's payload of any wire type; a group is skipped up to its
 * matching end-group tag. */
static int pb_skip(pb_t *r, uint32_t field, int wire, size_t tag_off, int depth)
{
    uint64_t v;
    size_t sub_end;
    int rc;
    switch (wire) {
    case WT_VARINT:
        return pb_varint(r, &v);
    case WT_I64:
        return pb_fixed(r, 8);
    case WT_I32:
        return pb_fixed(r, 4);
    case WT_LEN:
        if ((rc = pb_len(r, &sub_end)))
            return rc;
        r->pos = sub_end;
        return 0;
    case WT_SGROUP:
        if (depth >= MAX_GROUP_DEPTH)
            return pb_err(r, tag_off, "groups nested too deeply");
        for (;;) {
            uint32_t f;
            int w;
            size_t off;
            if (r->pos >= r->end)
                return qp_error_set(QP_EFORMAT, "%s: offset %zu: group (field %" PRIu32 ") has no end-group tag",
                                    r->path, tag_off, field);
            if ((rc = pb_tag(r, &f, &w, &off)))
                return rc;
            if (w == WT_EGROUP) {
                if (f != field)
                    return qp_error_set(QP_EFORMAT, "%s: offset %zu: end-group tag for field %" PRIu32
                                        " closes the group of field %" PRIu32, r->path, off, f, field);
                return 0;
            }
            if ((rc = pb_skip(r, f, w, off, depth + 1)))
                return rc;
        }
    default: /* WT_EGROUP outside a group */
        return qp_error_set(QP_EFORMAT, "%s: offset %zu: end-group tag for field %" PRIu32 " without a group",
                            r->path, tag_off, field);
    }
}

static int pb_want(const pb_t *r, size_t tag_off, uint32_t field, const char *name, int wire, int want)
{
    if (wire == want)
        return 0;
    return qp_error_set(QP_EFORMAT, "%s: offset %zu: field %" PRIu32 " (%s) has wire type %d, expected %d",
                        r->path, tag_off, field, name, wire, want);
}

static int32_t as_int32(uint64_t v)
{
    return (int32_t)(uint32_t)v;   /* proto int32: low 32 bits, sign-extended encoding */
}

/* ---- messages ------------------------------------------------------- */

typedef struct {
    size_t n, cap;
    const char **piece;
    size_t *len;
    float *score;
    int *type;
    uint64_t *off;
} vocab_t;

typedef struct {
    int model_type;         /* default UNIGRAM, as in the .proto */
    int suffix_ws;
    int byte_fallback;
    uint64_t byte_fallback_off;
    int unk, bos, eos, pad;
    int add_dummy_prefix, remove_extra_ws, escape_ws;
    size_t model_type_off;  /* SIZE_MAX: not in the file */
    size_t suffix_ws_off;
} spec_t;

static void grow(vocab_t *v)
{
    size_t cap = v->cap ? 2 * v->cap : 1024;
    v->piece = qp_xrealloc_array(v->piece, cap, sizeof(*v->piece));
    v->len = qp_xrealloc_array(v->len, cap, sizeof(*v->len));
    v->score = qp_xrealloc_array(v->score, cap, sizeof(*v->score));
    v->type = qp_xrealloc_array(v->type, cap, sizeof(*v->type));
    v->off = qp_xrealloc_array(v->off, cap, sizeof(*v->off));
    v->cap = cap;
}

static int parse_piece(pb_t *r, size_t end, size_t tag_off, vocab_t *v)
{
    int rc;
    if (v->n == v->cap)
        grow(v);
    size_t i = v->n++;
    v->piece[i] = "";
    v->len[i] = 0;
    v->score[i] = 0.0f;
    v->type[i] = QP_TOK_NORMAL;
    v->off[i] = tag_off;
    pb_t m = *r;
    m.end = end;
    while (m.pos < m.end) {
        uint32_t f;
        int w;
        size_t off, sub_end;
        uint64_t x;
        if ((rc = pb_tag(&m, &f, &w, &off)))
            return rc;
        switch (f) {
        case 1:
            if ((rc = pb_want(&m, off, f, "SentencePiece.piece", w, WT_LEN)) || (rc = pb_len(&m, &sub_end)))
                return rc;
            v->piece[i] = (const char *)m.buf + m.pos;
            v->len[i] = sub_end - m.pos;
            m.pos = sub_end;
            break;
        case 2: {
            if ((rc = pb_want(&m, off, f, "SentencePiece.score", w, WT_I32)))
                return rc;
            size_t at = m.pos;
            if ((rc = pb_fixed(&m, 4)))
                return rc;
            uint32_t bits = (uint32_t)m.buf[at] | (uint32_t)m.buf[at + 1] << 8 |
                            (uint32_t)m.buf[at + 2] << 16 | (uint32_t)m.buf[at + 3] << 24;
            memcpy(&v->score[i], &bits, 4);
            break;
        }
        case 3:
            if ((rc = pb_want(&m, off, f, "SentencePiece.type", w, WT_VARINT)) || (rc = pb_varint(&m, &x)))
                return rc;
            v->type[i] = x > INT_MAX ? INT_MAX : (int)x;
            break;
        default:
            if ((rc = pb_skip(&m, f, w, off, 0)))
                return rc;
        }
    }
    r->pos = end;
    return 0;
}

/* A message of which only some varint fields matter: name_of(f) names a
 * wanted field (for messages; NULL: skip it) and set() stores its value. */
typedef struct {
    const char *(*name_of)(uint32_t f);
    void (*set)(spec_t *s, uint32_t f, uint64_t x, size_t off);
} varint_fields;

static int parse_varint_fields(pb_t *r, size_t end, spec_t *s, const varint_fields *vf)
{
    int rc;
    pb_t m = *r;
    m.end = end;
    while (m.pos < m.end) {
        uint32_t f;
        int w;
        size_t off;
        uint64_t x;
        if ((rc = pb_tag(&m, &f, &w, &off)))
            return rc;
        const char *name = vf->name_of(f);
        if (!name) {
            if ((rc = pb_skip(&m, f, w, off, 0)))
                return rc;
            continue;
        }
        if ((rc = pb_want(&m, off, f, name, w, WT_VARINT)) || (rc = pb_varint(&m, &x)))
            return rc;
        vf->set(s, f, x, off);
    }
    r->pos = end;
    return 0;
}

static const char *trainer_field(uint32_t f)
{
    switch (f) {
    case 3: return "TrainerSpec.model_type";
    case 24: return "TrainerSpec.treat_whitespace_as_suffix";
    case 35: return "TrainerSpec.byte_fallback";
    case 40: return "TrainerSpec.unk_id";
    case 41: return "TrainerSpec.bos_id";
    case 42: return "TrainerSpec.eos_id";
    case 43: return "TrainerSpec.pad_id";
    default: return NULL;
    }
}

static void trainer_set(spec_t *s, uint32_t f, uint64_t x, size_t off)
{
    switch (f) {
    case 3: s->model_type = as_int32(x); s->model_type_off = off; break;
    case 24: s->suffix_ws = x != 0; s->suffix_ws_off = off; break;
    case 35: s->byte_fallback = x != 0; s->byte_fallback_off = off; break;
    case 40: s->unk = as_int32(x); break;
    case 41: s->bos = as_int32(x); break;
    case 42: s->eos = as_int32(x); break;
    case 43: s->pad = as_int32(x); break;
    }
}

static const varint_fields trainer_fields = {trainer_field, trainer_set};

static const char *normalizer_field(uint32_t f)
{
    return f == 3 ? "NormalizerSpec.add_dummy_prefix"
         : f == 4 ? "NormalizerSpec.remove_extra_whitespaces"
         : f == 5 ? "NormalizerSpec.escape_whitespaces" : NULL;
}

static void normalizer_set(spec_t *s, uint32_t f, uint64_t x, size_t off)
{
    (void)off;
    if (f == 3) s->add_dummy_prefix = x != 0;
    if (f == 4) s->remove_extra_ws = x != 0;
    if (f == 5) s->escape_ws = x != 0;
}

static const varint_fields normalizer_fields = {normalizer_field, normalizer_set};

int qp_tokenizer_load_spm(qp_tokenizer **out, const char *path)
{
    int rc;
    char *data = NULL;
    size_t size = 0;
    vocab_t v = { 0 };
    /* Defaults of sentencepiece_model.proto. */
    spec_t s = { .model_type = 1, .model_type_off = SIZE_MAX, .unk = 0, .bos = 1, .eos = 2, .pad = -1,
                 .add_dummy_prefix = 1, .remove_extra_ws = 1, .escape_ws = 1 };
    *out = NULL;

    if ((rc = qp_read_file(path, &data, &size)))
        goto done;
    pb_t r = { (const uint8_t *)data, 0, size, path };
    while (r.pos < r.end) {
        uint32_t f;
        int w;
        size_t off, sub_end;
        if ((rc = pb_tag(&r, &f, &w, &off)))
            goto done;
        const char *name = f == 1 ? "ModelProto.pieces" : f == 2 ? "ModelProto.trainer_spec"
                         : f == 3 ? "ModelProto.normalizer_spec" : NULL;
        if (!name) {
            if ((rc = pb_skip(&r, f, w, off, 0)))
                goto done;
            continue;
        }
        if ((rc = pb_want(&r, off, f, name, w, WT_LEN)) || (rc = pb_len(&r, &sub_end)))
            goto done;
        /* A repeated embedded message merges, as protobuf parsers do. */
        rc = f == 1 ? parse_piece(&r, sub_end, off, &v)
           : parse_varint_fields(&r, sub_end, &s, f == 2 ? &trainer_fields : &normalizer_fields);
        if (rc)
            goto done;
    }

    /* An empty vocabulary is the clearer complaint (e.g. an empty file). */
    if (v.n > 0 && s.model_type != 2) {
        rc = qp_error_set(QP_EFORMAT, "%s: offset %zu: model_type %d (%s) is not supported; only BPE (2) is",
                          path, s.model_type_off == SIZE_MAX ? size : s.model_type_off, s.model_type,
                          s.model_type == 1 ? "UNIGRAM" : s.model_type == 3 ? "WORD"
                          : s.model_type == 4 ? "CHAR" : "unknown");
        goto done;
    }
    if (s.suffix_ws) {
        rc = qp_error_set(QP_EFORMAT, "%s: offset %zu: treat_whitespace_as_suffix is not supported",
                          path, s.suffix_ws_off);
        goto done;
    }
    qp_tok_spec spec = {
        .n = v.n, .pieces = v.piece, .lens = v.len, .scores = v.score, .types = v.type,
        .bos = s.bos, .eos = s.eos, .unk = s.unk, .pad = s.pad,
        .add_dummy_prefix = s.add_dummy_prefix, .remove_extra_whitespaces = s.remove_extra_ws,
        .escape_whitespaces = s.escape_ws, .byte_fallback = s.byte_fallback,
        /* LLaMA's tokenizer_config default; a caller reading
         * tokenizer_config.json may override per encode call. */
        .wants_bos = 1, .wants_eos = 0,
    };
    qp_tok_origin origin = { .path = path, .by_offset = 1, .offsets = v.off, .end_offset = size,
                             .byte_fallback_offset = s.byte_fallback_off };
    rc = qp_tok_build(out, &spec, &origin);

done:
    free(v.piece);
    free(v.len);
    free(v.score);
    free(v.type);
    free(v.off);
    free(data);
    return rc;
}
