/* Hugging Face tokenizer.json (+ tokenizer_config.json) loader for BPE
 * models; the pipeline it configures runs in tokenizer_hfenc.c.
 *
 * Token ids and types follow convert_hf_to_gguf.py's get_vocab_base, so a
 * GGUF written from this tokenizer matches llama.cpp's converter: the
 * vocabulary is model.vocab plus added_tokens (added content wins an id
 * both name), ids neither names are "[PAD<id>]" of type UNUSED, added
 * special tokens (or ones that look special: <|...|>, <｜...｜>,
 * <unused...>, <pad>, <mask>, <2mass>, [@BOS@]) are CONTROL, other added
 * tokens USER_DEFINED, the rest NORMAL (with byte_fallback, <0xNN> pieces
 * are BYTE so the byte fallback can find them).
 *
 * BOS / EOS / PAD: tokenizer_config.json's bos_token / eos_token /
 * pad_token (a string or {"content": ...}) mapped through the added tokens,
 * then the vocabulary; add_bos_token / add_eos_token when booleans, else
 * what a TemplateProcessing post-processor adds around a single sequence. */
#include "model/tokenizer.h"
#include "model/tokenizer_impl.h"
#include "model/tokenizer_pipe.h"

#include "common/alloc.h"
#include "common/buf.h"
#include "common/error.h"
#include "common/fsutil.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Vocabularies beyond this many ids are refused (the largest in use are
 * ~260k); it bounds what a hostile "id" can make us allocate. */
#define MAX_IDS ((size_t)1 << 24)
#define MAX_UNNAMED_IDS 65536   /* ids without a piece (gaps), see build_vocab */
#define MAX_DEPTH 32
/* Pipeline steps of one kind (pre-tokenizers run depth-first, one stack
 * frame each). */
#define MAX_STEPS 64

#define GPT2_REGEX "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

typedef struct {
    const char *name;       /* tokenizer.json as errors call it */
    qp_tok_bpe *b;
    size_t cap_norms, cap_pres, cap_decs;
    const char **split_regexes;   /* of Split pre-tokenizers, in order */
    size_t n_split, cap_split;
    int other_pre;          /* a pre-tokenizer other than Split / ByteLevel */
    int bytelevel_regex;    /* a ByteLevel pre-tokenizer with use_regex */
} ld_t;

static int ferr(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int ferr(const char *name, const char *fmt, ...)
{
    char body[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof(body), fmt, ap);
    va_end(ap);
    return qp_error_set(QP_EFORMAT, "%s: %s", name, body);
}

/* ---- small JSON readers ------------------------------------------------------ */

/* A boolean member: def when absent or null. */
static int get_bool(const char *name, const char *path, const json_t *o, const char *key, int def, int *out)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v))
        return ferr(name, "%s.%s is not true or false", path, key);
    *out = json_is_true(v);
    return 0;
}

/* A string member: NULL when absent or null. */
static int get_str(const char *name, const char *path, const json_t *o, const char *key, const char **out,
                   size_t *len)
{
    json_t *v = json_object_get(o, key);
    *out = NULL;
    if (len)
        *len = 0;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return ferr(name, "%s.%s is not a string", path, key);
    *out = json_string_value(v);
    if (len)
        *len = json_string_length(v);
    return 0;
}

static int get_int(const char *name, const char *path, const json_t *o, const char *key, long def, long lo,
                   long hi, long *out)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return ferr(name, "%s.%s is not an integer in %ld..%ld", path, key, lo, hi);
    *out = (long)json_integer_value(v);
    return 0;
}

/* A string member that must be there, copied: *out (NUL-terminated) and
 * *len. */
static int get_req_str(const char *name, const char *path, const json_t *o, const char *key, char **out,
                       size_t *len)
{
    const char *s;
    int rc = get_str(name, path, o, key, &s, len);
    if (rc)
        return rc;
    if (!s)
        return ferr(name, "%s.%s is missing", path, key);
    *out = qp_xstrndup(s, *len);
    return 0;
}

/* {"String": s} or {"Regex": r} -> a pattern. */
static int get_pattern(const char *name, const char *path, const json_t *o, qp_pattern *p, const char **regex)
{
    json_t *v = json_object_get(o, "pattern");
    if (regex)
        *regex = NULL;
    if (!json_is_object(v))
        return ferr(name, "%s.pattern is missing or not an object {\"String\": ...} / {\"Regex\": ...}", path);
    json_t *s = json_object_get(v, "String"), *r = json_object_get(v, "Regex");
    if (json_is_string(s)) {
        p->lit_len = json_string_length(s);
        p->lit = qp_xmalloc(p->lit_len + 1);
        memcpy(p->lit, json_string_value(s), p->lit_len + 1);
        return 0;
    }
    if (json_is_string(r)) {
        char where[256];
        snprintf(where, sizeof(where), "%s.pattern.Regex", path);
        if (regex)
            *regex = json_string_value(r);
        return qp_regex_compile(&p->re, json_string_value(r), json_string_length(r), QP_RE_ONIG, name, where);
    }
    return ferr(name, "%s.pattern has neither a \"String\" nor a \"Regex\" string", path);
}

static const char *type_of(const json_t *o)
{
    return json_string_value(json_object_get(o, "type"));
}

/* ---- pipeline steps ------------------------------------------------------------ */

/* Room for one more step in an array of n of *cap elements of size bytes:
 * the array, grown when full; element n zeroed. */
static void *grow_steps(void *arr, size_t n, size_t *cap, size_t size)
{
    if (n == *cap) {
        *cap = *cap ? 2 * *cap : 4;
        arr = qp_xrealloc_array(arr, *cap, size);
    }
    memset((char *)arr + n * size, 0, size);
    return arr;
}

typedef int (*step_parser)(ld_t *l, const json_t *j, const char *path, int depth);

/* A normalizer, pre-tokenizer or decoder object up to its own fields, the
 * same for the three: absent or null is none, a Sequence runs parse over
 * its `member` array (one level deeper), anything else has a "type".
 * Depth and step count are bounded: a hostile file nests thousands deep.
 * Returns 1 when j is done with (none, or a Sequence), 0 with *type set
 * for the caller to parse, or an error. */
static int step_head(ld_t *l, const json_t *j, const char *path, int depth, size_t n_steps, const char *what,
                     const char *member, step_parser parse, const char **type)
{
    int rc;
    if (!j || json_is_null(j))
        return 1;
    *type = type_of(j);
    if (!json_is_object(j) || !*type)
        return ferr(l->name, "%s is not an object with a \"type\"", path);
    if (depth > MAX_DEPTH)
        return ferr(l->name, "%s: %s nested too deeply (more than %d levels)", path, what, MAX_DEPTH);
    if (n_steps >= MAX_STEPS)
        return ferr(l->name, "%s: more than %d %s", path, MAX_STEPS, what);
    if (strcmp(*type, "Sequence") != 0)
        return 0;
    json_t *arr = json_object_get(j, member);
    if (!json_is_array(arr))
        return ferr(l->name, "%s.%s is missing or not an array", path, member);
    for (size_t i = 0; i < json_array_size(arr); i++) {
        char sub[256];
        snprintf(sub, sizeof(sub), "%s.%s[%zu]", path, member, i);
        if ((rc = parse(l, json_array_get(arr, i), sub, depth + 1)))
            return rc;
    }
    return 1;
}

/* ---- normalizers ------------------------------------------------------------- */

static qp_norm *new_norm(ld_t *l)
{
    qp_tok_bpe *b = l->b;
    b->norms = grow_steps(b->norms, b->n_norms, &l->cap_norms, sizeof(*b->norms));
    return &b->norms[b->n_norms++];
}

static int parse_norm(ld_t *l, const json_t *j, const char *path, int depth)
{
    const char *type = NULL;
    int rc = step_head(l, j, path, depth, l->b->n_norms, "normalizers", "normalizers", parse_norm, &type);
    if (rc)
        return rc < 0 ? rc : 0;
    static const struct { const char *name; qp_norm_kind kind; } forms[] = {
        {"NFC", QP_NORM_NFC}, {"NFD", QP_NORM_NFD}, {"NFKC", QP_NORM_NFKC}, {"NFKD", QP_NORM_NFKD},
    };
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++)
        if (strcmp(type, forms[i].name) == 0) {
            new_norm(l)->kind = forms[i].kind;
            return 0;
        }
    if (strcmp(type, "Prepend") == 0 || strcmp(type, "Replace") == 0) {
        int prepend = type[0] == 'P';
        qp_norm *nm = new_norm(l);
        nm->kind = prepend ? QP_NORM_PREPEND : QP_NORM_REPLACE;
        if ((rc = get_req_str(l->name, path, j, prepend ? "prepend" : "content", &nm->str, &nm->str_len)))
            return rc;
        return prepend ? 0 : get_pattern(l->name, path, j, &nm->pat, NULL);
    }
    if (strcmp(type, "Lowercase") == 0) {
        new_norm(l)->kind = QP_NORM_LOWERCASE;
        return 0;
    }
    if (strcmp(type, "Strip") == 0) {
        qp_norm *nm = new_norm(l);
        nm->kind = QP_NORM_STRIP;
        if ((rc = get_bool(l->name, path, j, "strip_left", 1, &nm->left)) ||
            (rc = get_bool(l->name, path, j, "strip_right", 1, &nm->right)))
            return rc;
        return 0;
    }
    return ferr(l->name, "%s: unknown normalizer type '%s' (supported: NFC, NFD, NFKC, NFKD, Lowercase, Strip, "
                "Prepend, Replace, Sequence)", path, type);
}

/* ---- pre-tokenizers ------------------------------------------------------------ */

static qp_pretok *new_pre(ld_t *l, qp_pre_kind kind)
{
    qp_tok_bpe *b = l->b;
    b->pres = grow_steps(b->pres, b->n_pres, &l->cap_pres, sizeof(*b->pres));
    qp_pretok *p = &b->pres[b->n_pres++];
    p->kind = kind;
    return p;
}

static int parse_behavior(const char *name, const char *path, const json_t *j, qp_split_behavior *out)
{
    const char *s;
    int rc = get_str(name, path, j, "behavior", &s, NULL);
    if (rc)
        return rc;
    static const struct { const char *name; qp_split_behavior b; } tab[] = {
        {"Removed", QP_SPLIT_REMOVED}, {"Isolated", QP_SPLIT_ISOLATED},
        {"MergedWithPrevious", QP_SPLIT_MERGED_PREV}, {"MergedWithNext", QP_SPLIT_MERGED_NEXT},
        {"Contiguous", QP_SPLIT_CONTIGUOUS},
    };
    if (!s)
        return ferr(name, "%s.behavior is missing", path);
    for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
        if (strcmp(s, tab[i].name) == 0) {
            *out = tab[i].b;
            return 0;
        }
    return ferr(name, "%s.behavior '%s' is unknown (Removed, Isolated, MergedWithPrevious, MergedWithNext, "
                "Contiguous)", path, s);
}

/* Metaspace's replacement and prepend scheme (pre-tokenizer and decoder);
 * older files say add_prefix_space instead of prepend_scheme. */
static int parse_metaspace(const char *name, const char *path, const json_t *j, char **repl, size_t *repl_len,
                           qp_prepend_scheme *scheme)
{
    const char *r, *ps;
    size_t rl;
    int rc, aps = 1;
    if ((rc = get_str(name, path, j, "replacement", &r, &rl)) ||
        (rc = get_str(name, path, j, "prepend_scheme", &ps, NULL)) ||
        (rc = get_bool(name, path, j, "add_prefix_space", 1, &aps)))
        return rc;
    if (!r) {
        r = QP_SPACE_SYM;
        rl = QP_SPACE_SYM_LEN;
    }
    if (rl == 0 || qp_utf8_char_len((const unsigned char *)r, rl) != rl)
        return ferr(name, "%s.replacement is not one character", path);
    *repl = qp_xstrndup(r, rl);
    *repl_len = rl;
    if (!ps)
        *scheme = aps ? QP_PREPEND_ALWAYS : QP_PREPEND_NEVER;
    else if (strcmp(ps, "always") == 0)
        *scheme = QP_PREPEND_ALWAYS;
    else if (strcmp(ps, "first") == 0)
        *scheme = QP_PREPEND_FIRST;
    else if (strcmp(ps, "never") == 0)
        *scheme = QP_PREPEND_NEVER;
    else
        return ferr(name, "%s.prepend_scheme '%s' is unknown (always, first, never)", path, ps);
    return 0;
}

static void note_split(ld_t *l, const char *regex)
{
    if (l->n_split == l->cap_split) {
        l->cap_split = l->cap_split ? 2 * l->cap_split : 4;
        l->split_regexes = qp_xrealloc_array(l->split_regexes, l->cap_split, sizeof(*l->split_regexes));
    }
    l->split_regexes[l->n_split++] = regex;
}

static int parse_pre(ld_t *l, const json_t *j, const char *path, int depth)
{
    const char *type = NULL;
    int rc = step_head(l, j, path, depth, l->b->n_pres, "pre-tokenizers", "pretokenizers", parse_pre, &type);
    if (rc)
        return rc < 0 ? rc : 0;
    if (strcmp(type, "Split") == 0) {
        qp_pretok *p = new_pre(l, QP_PRE_SPLIT);
        const char *regex;
        if ((rc = get_pattern(l->name, path, j, &p->pat, &regex)) ||
            (rc = parse_behavior(l->name, path, j, &p->behavior)) ||
            (rc = get_bool(l->name, path, j, "invert", 0, &p->invert)))
            return rc;
        if (regex && !p->invert && p->behavior == QP_SPLIT_ISOLATED)
            note_split(l, regex);
        else
            l->other_pre = 1;
        return 0;
    }
    if (strcmp(type, "ByteLevel") == 0) {
        qp_pretok *p = new_pre(l, QP_PRE_BYTELEVEL);
        int use_regex = 1;
        if ((rc = get_bool(l->name, path, j, "add_prefix_space", 1, &p->add_prefix_space)) ||
            (rc = get_bool(l->name, path, j, "use_regex", 1, &use_regex)))
            return rc;
        if (p->add_prefix_space)
            l->other_pre = 1;
        if (use_regex) {
            l->bytelevel_regex = 1;
            return qp_regex_compile(&p->pat.re, GPT2_REGEX, strlen(GPT2_REGEX), QP_RE_ONIG, l->name, path);
        }
        return 0;
    }
    if (strcmp(type, "Digits") == 0) {
        qp_pretok *p = new_pre(l, QP_PRE_DIGITS);
        int individual = 0;
        if ((rc = get_bool(l->name, path, j, "individual_digits", 0, &individual)))
            return rc;
        /* Rust's char::is_numeric is \p{N}; a run of them is Contiguous */
        p->behavior = individual ? QP_SPLIT_ISOLATED : QP_SPLIT_CONTIGUOUS;
        l->other_pre = 1;
        return qp_regex_compile(&p->pat.re, "\\p{N}", 5, QP_RE_ONIG, l->name, path);
    }
    if (strcmp(type, "Metaspace") == 0) {
        qp_pretok *p = new_pre(l, QP_PRE_METASPACE);
        l->other_pre = 1;
        if ((rc = parse_metaspace(l->name, path, j, &p->repl, &p->repl_len, &p->prepend)))
            return rc;
        return get_bool(l->name, path, j, "split", 1, &p->split);
    }
    if (strcmp(type, "Whitespace") == 0 || strcmp(type, "WhitespaceSplit") == 0) {
        /* Whitespace keeps \w+|[^\w\s]+ and drops the rest; WhitespaceSplit
         * drops whitespace */
        qp_pretok *p = new_pre(l, QP_PRE_SPLIT);
        int ws = type[10] == 'S';
        const char *re = ws ? "\\s+" : "\\w+|[^\\w\\s]+";
        p->behavior = QP_SPLIT_REMOVED;
        p->invert = !ws;
        l->other_pre = 1;
        return qp_regex_compile(&p->pat.re, re, strlen(re), QP_RE_ONIG, l->name, path);
    }
    if (strcmp(type, "Punctuation") == 0) {
        /* each punctuation character (Rust's is_ascii_punctuation or
         * is_punctuation: ASCII symbols and \p{P}) is a match */
        qp_pretok *p = new_pre(l, QP_PRE_SPLIT);
        const char *re = "[\\p{P}!-/:-@\\[-`{-~]";
        l->other_pre = 1;
        json_t *bj = json_object_get(j, "behavior");
        if (!bj || json_is_null(bj))
            p->behavior = QP_SPLIT_ISOLATED;
        else if ((rc = parse_behavior(l->name, path, j, &p->behavior)))
            return rc;
        return qp_regex_compile(&p->pat.re, re, strlen(re), QP_RE_ONIG, l->name, path);
    }
    return ferr(l->name, "%s: unknown pre-tokenizer type '%s' (supported: Split, ByteLevel, Digits, Metaspace, "
                "Punctuation, Whitespace, WhitespaceSplit, Sequence)", path, type);
}

/* ---- decoders ------------------------------------------------------------------ */

static qp_dec *new_dec(ld_t *l, qp_dec_kind kind)
{
    qp_tok_bpe *b = l->b;
    b->decs = grow_steps(b->decs, b->n_decs, &l->cap_decs, sizeof(*b->decs));
    qp_dec *d = &b->decs[b->n_decs++];
    d->kind = kind;
    return d;
}

static int parse_dec(ld_t *l, const json_t *j, const char *path, int depth)
{
    const char *type = NULL;
    /* a decoder, even an empty Sequence, replaces the default join by ' ' */
    if (j && !json_is_null(j))
        l->b->has_decoder = 1;
    int rc = step_head(l, j, path, depth, l->b->n_decs, "decoders", "decoders", parse_dec, &type);
    if (rc)
        return rc < 0 ? rc : 0;
    if (strcmp(type, "ByteLevel") == 0) {
        new_dec(l, QP_DEC_BYTELEVEL);
        return 0;
    }
    if (strcmp(type, "ByteFallback") == 0) {
        new_dec(l, QP_DEC_BYTEFALLBACK);
        return 0;
    }
    if (strcmp(type, "Fuse") == 0) {
        new_dec(l, QP_DEC_FUSE);
        return 0;
    }
    if (strcmp(type, "Replace") == 0) {
        qp_dec *d = new_dec(l, QP_DEC_REPLACE);
        if ((rc = get_req_str(l->name, path, j, "content", &d->str, &d->str_len)))
            return rc;
        return get_pattern(l->name, path, j, &d->pat, NULL);
    }
    if (strcmp(type, "Strip") == 0) {
        qp_dec *d = new_dec(l, QP_DEC_STRIP);
        const char *s;
        size_t n;
        long start, stop;
        if ((rc = get_str(l->name, path, j, "content", &s, &n)) ||
            (rc = get_int(l->name, path, j, "start", 0, 0, 1 << 20, &start)) ||
            (rc = get_int(l->name, path, j, "stop", 0, 0, 1 << 20, &stop)))
            return rc;
        if (!s || n == 0 || qp_utf8_char_len((const unsigned char *)s, n) != n)
            return ferr(l->name, "%s.content is not one character", path);
        d->str = qp_xstrndup(s, n);
        d->str_len = n;
        d->start = (int)start;
        d->stop = (int)stop;
        return 0;
    }
    if (strcmp(type, "Metaspace") == 0) {
        qp_dec *d = new_dec(l, QP_DEC_METASPACE);
        return parse_metaspace(l->name, path, j, &d->str, &d->str_len, &d->prepend);
    }
    return ferr(l->name, "%s: unknown decoder type '%s' (supported: ByteLevel, ByteFallback, Fuse, Replace, "
                "Strip, Metaspace, Sequence)", path, type);
}

/* ---- vocabulary ------------------------------------------------------------------ */

/* convert_hf_to_gguf.py's does_token_look_special. */
static int looks_special(const char *s, size_t n)
{
    static const char *const names[] = {"<pad>", "<mask>", "<2mass>", "[@BOS@]"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strlen(names[i]) == n && memcmp(s, names[i], n) == 0)
            return 1;
#define PFX(p) (n >= strlen(p) && memcmp(s, p, strlen(p)) == 0)
#define SFX(p) (n >= strlen(p) && memcmp(s + n - strlen(p), p, strlen(p)) == 0)
    if (n >= 4 && PFX("<|") && SFX("|>"))
        return 1;
    if (n >= 8 && PFX("<\xEF\xBD\x9C") && SFX("\xEF\xBD\x9C>"))   /* <｜ ... ｜> */
        return 1;
    if (PFX("<unused") && SFX(">"))
        return 1;
#undef PFX
#undef SFX
    return 0;
}

static int is_byte_piece(const char *p, size_t n)
{
    if (n != 6 || memcmp(p, "<0x", 3) != 0 || p[5] != '>')
        return 0;
    for (int i = 3; i < 5; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'A' && p[i] <= 'F')))
            return 0;
    return 1;
}

typedef struct {
    size_t n;
    const char **piece;
    size_t *len;
    int *type;
    int *from_added;     /* 1 + index into b->added, 0 for model.vocab */
    qp_buf pads;         /* "[PAD<i>]" spellings */
    size_t *pad_off;
} vocab_t;

static void vocab_free(vocab_t *v)
{
    free(v->piece);
    free(v->len);
    free(v->type);
    free(v->from_added);
    free(v->pad_off);
    qp_buf_free(&v->pads);
}

static int parse_added(ld_t *l, const json_t *root, long *max_id)
{
    qp_tok_bpe *b = l->b;
    json_t *arr = json_object_get(root, "added_tokens");
    if (!arr || json_is_null(arr))
        return 0;
    if (!json_is_array(arr))
        return ferr(l->name, "added_tokens is not an array");
    size_t n = json_array_size(arr);
    b->added = qp_xcalloc(n ? n : 1, sizeof(*b->added));
    qp_buf blob = QP_BUF_INIT;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(arr, i);
        char path[64];
        snprintf(path, sizeof(path), "added_tokens[%zu]", i);
        if (!json_is_object(o)) {
            rc = ferr(l->name, "%s is not an object", path);
            goto done;
        }
        long id;
        const char *content;
        size_t clen;
        int special = 0, lstrip = 0, rstrip = 0, single = 0, normalized = 0;
        if ((rc = get_int(l->name, path, o, "id", -1, 0, (long)MAX_IDS - 1, &id)) ||
            (rc = get_str(l->name, path, o, "content", &content, &clen)) ||
            (rc = get_bool(l->name, path, o, "special", 0, &special)) ||
            (rc = get_bool(l->name, path, o, "lstrip", 0, &lstrip)) ||
            (rc = get_bool(l->name, path, o, "rstrip", 0, &rstrip)) ||
            (rc = get_bool(l->name, path, o, "single_word", 0, &single)) ||
            (rc = get_bool(l->name, path, o, "normalized", !special, &normalized)))
            goto done;
        if (id < 0 || !content || clen == 0) {
            rc = ferr(l->name, "%s needs an \"id\" and a non-empty \"content\"", path);
            goto done;
        }
        if (id > *max_id)
            *max_id = id;
        b->added[i] = (qp_added){ (int)id, (uint32_t)blob.len, (uint32_t)clen, (uint8_t)special, (uint8_t)lstrip,
                                  (uint8_t)rstrip, (uint8_t)single, (uint8_t)normalized };
        qp_buf_append(&blob, content, clen);
        qp_buf_putc(&blob, '\0');
        b->n_added++;
    }
done:
    b->added_blob = qp_buf_detach(&blob, NULL);
    return rc;
}

static int build_vocab(ld_t *l, const json_t *vocab, long max_id, int byte_fallback, vocab_t *v)
{
    qp_tok_bpe *b = l->b;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)vocab, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) >= (json_int_t)MAX_IDS)
            return ferr(l->name, "model.vocab['%.60s'] is not an id in 0..%zu", key, MAX_IDS - 1);
        if (json_integer_value(val) > max_id)
            max_id = (long)json_integer_value(val);
    }
    if (max_id < 0)
        return ferr(l->name, "model.vocab is empty");
    /* Unnamed ids become "[PAD<id>]" pieces (as convert_hf_to_gguf.py pads);
     * real vocabularies leave a few hundred.  A 70 KB file naming id 12.7 M
     * otherwise built 12.7 M pieces (seconds and hundreds of MB). */
    size_t named = json_object_size(vocab) + b->n_added;
    if ((size_t)max_id + 1 > named + MAX_UNNAMED_IDS)
        return ferr(l->name, "ids reach %ld but only %zu are named: more than %d ids would have no piece (model.vocab "
                    "and added_tokens must number the vocabulary densely)", max_id, named, MAX_UNNAMED_IDS);
    v->n = (size_t)max_id + 1;
    v->piece = qp_xcalloc(v->n, sizeof(*v->piece));
    v->len = qp_xcalloc(v->n, sizeof(*v->len));
    v->type = qp_xcalloc(v->n, sizeof(*v->type));
    v->from_added = qp_xcalloc(v->n, sizeof(*v->from_added));
    v->pad_off = qp_xcalloc(v->n, sizeof(*v->pad_off));
    json_object_foreach((json_t *)vocab, key, val) {
        size_t id = (size_t)json_integer_value(val);
        if (v->piece[id]) {
            return ferr(l->name, "model.vocab gives id %zu to both '%.60s' and '%.60s'", id, v->piece[id], key);
        }
        v->piece[id] = key;
        v->len[id] = strlen(key);
        v->type[id] = byte_fallback && is_byte_piece(key, v->len[id]) ? QP_TOK_BYTE : QP_TOK_NORMAL;
    }
    for (size_t i = 0; i < b->n_added; i++) {
        const qp_added *a = &b->added[i];
        const char *c = b->added_blob + a->off;
        /* the same id for two contents: whichever we kept, ids would differ
         * from what some other reader of the file makes of it */
        size_t other = (size_t)v->from_added[a->id];
        if (other && (b->added[other - 1].len != a->len ||
                      memcmp(b->added_blob + b->added[other - 1].off, c, a->len) != 0))
            return ferr(l->name, "added_tokens[%zu] and added_tokens[%zu] both have id %d; give each token its "
                        "own id", other - 1, i, a->id);
        v->piece[a->id] = c;
        v->len[a->id] = a->len;
        v->type[a->id] = a->special || looks_special(c, a->len) ? QP_TOK_CONTROL : QP_TOK_USER_DEFINED;
        v->from_added[a->id] = (int)i + 1;
    }
    for (size_t id = 0; id < v->n; id++)
        if (!v->piece[id]) {
            v->pad_off[id] = v->pads.len;
            qp_buf_printf(&v->pads, "[PAD%zu]", id);
            qp_buf_putc(&v->pads, '\0');
            v->type[id] = QP_TOK_UNUSED;
        }
    for (size_t id = 0; id < v->n; id++)
        if (!v->piece[id]) {
            v->piece[id] = v->pads.data + v->pad_off[id];
            v->len[id] = strlen(v->piece[id]);
        }
    return 0;
}

/* The merges, as "a b" strings or [a, b] pairs. */
static int parse_merges(ld_t *l, qp_tokenizer *t, const json_t *merges)
{
    int rc;
    if (!merges || json_is_null(merges))
        merges = NULL;
    else if (!json_is_array(merges))
        return ferr(l->name, "model.merges is not an array");
    size_t n = merges ? json_array_size(merges) : 0;
    const char **lefts = qp_xcalloc(n ? n : 1, sizeof(*lefts)), **rights = NULL;
    size_t *ll = qp_xcalloc(n ? n : 1, sizeof(*ll)), *rl = NULL;
    int pairs = n > 0 && json_is_array(json_array_get(merges, 0));
    if (pairs) {
        rights = qp_xcalloc(n, sizeof(*rights));
        rl = qp_xcalloc(n, sizeof(*rl));
    }
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(merges, i);
        if (pairs) {
            if (!json_is_array(m) || json_array_size(m) != 2 || !json_is_string(json_array_get(m, 0)) ||
                !json_is_string(json_array_get(m, 1))) {
                rc = ferr(l->name, "model.merges[%zu] is not a pair of strings like the first merge", i);
                goto done;
            }
            lefts[i] = json_string_value(json_array_get(m, 0));
            ll[i] = json_string_length(json_array_get(m, 0));
            rights[i] = json_string_value(json_array_get(m, 1));
            rl[i] = json_string_length(json_array_get(m, 1));
        } else {
            if (!json_is_string(m)) {
                rc = ferr(l->name, "model.merges[%zu] is not a string \"left right\" like the first merge", i);
                goto done;
            }
            lefts[i] = json_string_value(m);
            ll[i] = json_string_length(m);
        }
    }
    rc = qp_tok_merges_build(t, t->bpe, n, lefts, ll, rights, rl, 0, l->name, "model.merges");
done:
    free(lefts);
    free(rights);
    free(ll);
    free(rl);
    return rc;
}

/* ---- tokenizer_config.json and the post-processor ------------------------------ */

/* Id of a special token's content: the added tokens first, then the vocabulary. */
static int special_id(const qp_tokenizer *t, const char *s, size_t n)
{
    const qp_tok_bpe *b = t->bpe;
    for (size_t i = 0; i < b->n_added; i++)
        if (b->added[i].len == n && memcmp(b->added_blob + b->added[i].off, s, n) == 0)
            return b->added[i].id;
    return qp_tok_lookup(t, s, n);
}

/* tokenizer_config's NAME_token: a string, {"content": ...}, or null / absent
 * (*id kept). */
static int config_token(const char *cname, const json_t *cfg, const char *key, const qp_tokenizer *t, int *id)
{
    json_t *v = json_object_get(cfg, key);
    if (!v || json_is_null(v))
        return 0;
    if (json_is_object(v))
        v = json_object_get(v, "content");
    if (!json_is_string(v))
        return ferr(cname, "%s is neither a string nor an object with a \"content\" string", key);
    int found = special_id(t, json_string_value(v), json_string_length(v));
    if (found >= 0)
        *id = found;
    return 0;
}

/* add_<what>_token true needs a <what>_token that is a token: transformers
 * refuses a null one, and adding nothing in silence would evaluate the
 * model on other inputs than it expects. */
static int check_add(const char *cname, const json_t *cfg, const char *what, int add, int id)
{
    if (!add || id >= 0)
        return 0;
    char key[16];
    snprintf(key, sizeof(key), "%s_token", what);
    const json_t *v = json_object_get(cfg, key);
    if (json_is_object(v))
        v = json_object_get(v, "content");
    if (json_is_string(v))
        return ferr(cname, "add_%s_token is true but %s '%.60s' is not a token of the vocabulary; fix %s or set "
                    "add_%s_token to false", what, key, json_string_value(v), key, what);
    return ferr(cname, "add_%s_token is true but there is no %s; name one or set add_%s_token to false", what, key,
                what);
}

/* What a TemplateProcessing post-processor puts around one sequence:
 * *bos / *eos the ids of a leading / trailing SpecialToken, -1 when none.
 * A template is at least its sequence and one token (gguf-py reads only
 * those too).  An id outside the vocabulary is an error: cast to int it
 * could name any piece. */
static int template_specials(const char *name, const qp_tokenizer *t, const json_t *pp, int *bos, int *eos,
                             int depth)
{
    int rc;
    const char *type = type_of(pp);
    if (!type || depth > MAX_DEPTH)
        return 0;
    if (strcmp(type, "Sequence") == 0) {
        json_t *arr = json_object_get(pp, "processors");
        for (size_t i = 0; i < json_array_size(arr); i++)
            if ((rc = template_specials(name, t, json_array_get(arr, i), bos, eos, depth + 1)))
                return rc;
        return 0;
    }
    if (strcmp(type, "TemplateProcessing") != 0)
        return 0;
    json_t *single = json_object_get(pp, "single");
    size_t n = json_array_size(single);
    for (int end = 0; end < 2 && n > 1; end++) {
        json_t *st = json_object_get(json_array_get(single, end ? n - 1 : 0), "SpecialToken");
        const char *tok = json_string_value(json_object_get(st, "id"));
        if (!tok)
            continue;
        json_t *ids = json_object_get(json_object_get(json_object_get(pp, "special_tokens"), tok), "ids");
        json_t *first = json_array_get(ids, 0);
        int id;
        if (json_is_integer(first)) {
            json_int_t v = json_integer_value(first);
            if (v < 0 || (size_t)v >= t->n)
                return ferr(name, "post_processor: special token '%.60s' has id %lld, outside the vocabulary "
                            "(0..%zu)", tok, (long long)v, t->n - 1);
            id = (int)v;
        } else {
            id = special_id(t, tok, strlen(tok));
        }
        if (id >= 0)
            *(end ? eos : bos) = id;
    }
    return 0;
}

static int apply_config(qp_tokenizer *t, const json_t *root, const char *name, const char *cjson, size_t clen,
                        const char *cname)
{
    int rc = 0;
    int tb = -1, te = -1;
    if ((rc = template_specials(name, t, json_object_get(root, "post_processor"), &tb, &te, 0)))
        return rc;
    t->bos = tb;
    t->eos = te;
    t->wants_bos = tb >= 0;
    t->wants_eos = te >= 0;
    if (!cjson)
        return 0;
    json_error_t je;
    json_t *cfg = json_loadb(cjson, clen, JSON_REJECT_DUPLICATES, &je);
    if (!cfg)
        return ferr(cname, "line %d column %d: %s", je.line, je.column, je.text);
    if (!json_is_object(cfg)) {
        rc = ferr(cname, "is not a JSON object");
        goto done;
    }
    if ((rc = config_token(cname, cfg, "bos_token", t, &t->bos)) ||
        (rc = config_token(cname, cfg, "eos_token", t, &t->eos)) ||
        (rc = config_token(cname, cfg, "pad_token", t, &t->pad)))
        goto done;
    int add = 0;
    if ((rc = get_bool(cname, "tokenizer_config", cfg, "add_bos_token", t->wants_bos, &add)) ||
        (rc = check_add(cname, cfg, "bos", add, t->bos)))
        goto done;
    t->wants_bos = add;
    if ((rc = get_bool(cname, "tokenizer_config", cfg, "add_eos_token", t->wants_eos, &add)) ||
        (rc = check_add(cname, cfg, "eos", add, t->eos)))
        goto done;
    t->wants_eos = add;
    json_t *ct = json_object_get(cfg, "chat_template");
    if (json_is_string(ct)) {
        t->chat_template = qp_xstrdup(json_string_value(ct));
    } else if (json_is_array(ct)) {
        /* named templates: the "default" one, as convert_hf_to_gguf keeps it */
        for (size_t i = 0; i < json_array_size(ct); i++) {
            json_t *e = json_array_get(ct, i);
            const char *nm = json_string_value(json_object_get(e, "name"));
            const char *tpl = json_string_value(json_object_get(e, "template"));
            if (nm && tpl && strcmp(nm, "default") == 0)
                t->chat_template = qp_xstrdup(tpl);
        }
    } else if (ct && !json_is_null(ct)) {
        rc = ferr(cname, "chat_template is neither a string nor a list of {name, template}");
    }
done:
    json_decref(cfg);
    return rc;
}

/* ---- the loader ------------------------------------------------------------------ */

static int parse_model(ld_t *l, const json_t *root, const json_t **vocab, const json_t **merges)
{
    int rc;
    qp_tok_bpe *b = l->b;
    json_t *model = json_object_get(root, "model");
    if (!json_is_object(model))
        return ferr(l->name, "no \"model\" object (a tokenizer.json needs one)");
    const char *type = type_of(model);
    *vocab = json_object_get(model, "vocab");
    *merges = json_object_get(model, "merges");
    if (type && strcmp(type, "BPE") != 0)
        return ferr(l->name, "model type '%s' is not supported; only BPE is (WordPiece and Unigram are not)",
                    type);
    if (!type && !*merges)
        return ferr(l->name, "model has no \"type\" and no \"merges\"; only BPE models are supported");
    if (!json_is_object(*vocab))
        return ferr(l->name, "model.vocab is missing or not an object");
    const char *pfx, *sfx;
    if ((rc = get_str(l->name, "model", model, "continuing_subword_prefix", &pfx, NULL)) ||
        (rc = get_str(l->name, "model", model, "end_of_word_suffix", &sfx, NULL)))
        return rc;
    if ((pfx && *pfx) || (sfx && *sfx))
        return ferr(l->name, "model.continuing_subword_prefix / end_of_word_suffix are not supported");
    if ((rc = get_bool(l->name, "model", model, "ignore_merges", 0, &b->ignore_merges)) ||
        (rc = get_bool(l->name, "model", model, "byte_fallback", 0, &b->byte_fallback)) ||
        (rc = get_bool(l->name, "model", model, "fuse_unk", 0, &b->fuse_unk)))
        return rc;
    return 0;
}

int qp_tokenizer_load_hf(qp_tokenizer **out, const char *json, size_t len, const char *config_json,
                         size_t config_len, const char *name)
{
    int rc;
    qp_tokenizer *t = NULL;
    vocab_t v = { 0 };
    ld_t l = { .name = name ? name : "tokenizer.json" };
    char *cname = NULL;
    *out = NULL;
    l.b = qp_xcalloc(1, sizeof(*l.b));
    l.b->unk = -1;

    json_error_t je;
    json_t *root = json_loadb(json ? json : "", json ? len : 0, 0, &je);
    if (!root) {
        rc = ferr(l.name, "line %d column %d: %s", je.line, je.column, je.text);
        goto done;
    }
    if (!json_is_object(root)) {
        rc = ferr(l.name, "is not a JSON object");
        goto done;
    }
    const json_t *vocab = NULL, *merges = NULL;
    long max_id = -1;
    if ((rc = parse_model(&l, root, &vocab, &merges)) || (rc = parse_added(&l, root, &max_id)) ||
        (rc = parse_norm(&l, json_object_get(root, "normalizer"), "normalizer", 0)) ||
        (rc = parse_pre(&l, json_object_get(root, "pre_tokenizer"), "pre_tokenizer", 0)) ||
        (rc = parse_dec(&l, json_object_get(root, "decoder"), "decoder", 0)) ||
        (rc = build_vocab(&l, vocab, max_id, l.b->byte_fallback, &v)))
        goto done;

    qp_tok_spec spec = {
        .n = v.n, .pieces = v.piece, .lens = v.len, .types = v.type,
        .bos = -1, .eos = -1, .unk = -1, .pad = -1, .byte_fallback = 0, .bpe = 1,
    };
    qp_tok_origin origin = { .path = l.name, .array = "vocabulary id" };
    if ((rc = qp_tok_build(&t, &spec, &origin)))
        goto done;
    t->bpe = l.b;
    l.b = NULL;
    qp_tok_bpe *b = t->bpe;
    if (b->byte_fallback)
        for (int i = 0; i < 256 && !t->byte_fallback; i++)
            t->byte_fallback = t->byte_id[i] >= 0;
    const char *unk;
    if ((rc = get_str(l.name, "model", json_object_get(root, "model"), "unk_token", &unk,
                      NULL)))
        goto done;
    if (unk) {
        b->unk = qp_tok_lookup(t, unk, strlen(unk));
        if (b->unk < 0) {
            rc = ferr(l.name, "model.unk_token '%.60s' is not in the vocabulary", unk);
            goto done;
        }
        t->unk = b->unk;
    }
    if ((rc = parse_merges(&l, t, merges)))
        goto done;
    b->added_hf = 1;
    qp_tok_added_index(b);
    b->pre_name = l.other_pre ? NULL : qp_tok_pre_from_regexes(l.split_regexes, l.n_split, l.bytelevel_regex);

    /* tokenizer_config.json beside tokenizer.json */
    size_t nl = strlen(l.name);
    if (nl >= 14 && strcmp(l.name + nl - 14, "tokenizer.json") == 0) {
        cname = qp_xmalloc(nl + 8);
        memcpy(cname, l.name, nl - 14);
        strcpy(cname + nl - 14, "tokenizer_config.json");
    } else {
        qp_buf cb = QP_BUF_INIT;
        qp_buf_printf(&cb, "%s (tokenizer_config.json)", l.name);
        cname = qp_buf_detach(&cb, NULL);
    }
    if ((rc = apply_config(t, root, l.name, config_json, config_len, cname)))
        goto done;
    *out = t;
    t = NULL;
done:
    json_decref(root);
    vocab_free(&v);
    free(l.split_regexes);
    free(cname);
    qp_tok_bpe_free(l.b);
    qp_tokenizer_free(t);
    return rc;
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int qp_tokenizer_load_dir(qp_tokenizer **out, const char *dir)
{
    int rc;
    char *tj = qp_path_join(dir, "tokenizer.json"), *tc = qp_path_join(dir, "tokenizer_config.json");
    char *tm = qp_path_join(dir, "tokenizer.model");
    char *js = NULL, *cs = NULL;
    size_t jl = 0, cl = 0;
    *out = NULL;
    if (file_exists(tm)) {
        rc = qp_tokenizer_load_spm(out, tm);
    } else if (file_exists(tj)) {
        if ((rc = qp_read_file(tj, &js, &jl)))
            goto done;
        if (file_exists(tc) && (rc = qp_read_file(tc, &cs, &cl)))
            goto done;
        rc = qp_tokenizer_load_hf(out, js, jl, cs, cl, tj);
    } else {
        rc = qp_error_set(QP_ENOTFOUND, "%s: no tokenizer.json or tokenizer.model in the model directory", dir);
    }
done:
    free(tj);
    free(tc);
    free(tm);
    free(js);
    free(cs);
    return rc;
}
