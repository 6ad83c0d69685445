/* Export options: what convert_hf_to_gguf reads beside the weights
 * (gguf-py's SpecialVocab over config.json / tokenizer_config.json /
 * tokenizer.json, added tokens, the directory-name title) and gguf-py's
 * size label. */
#include "model/gguf_llama.h"

#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"

#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* SpecialVocab.special_token_types */
static const char *const special_names[QP_SPECIAL_COUNT] = { "bos", "eos", "unk", "sep", "pad", "cls", "mask" };

void qp_gguf_llama_opts_init(qp_gguf_llama_opts *o, const qp_llama_config *cfg)
{
    memset(o, 0, sizeof(*o));
    o->layout = QP_GGUF_LAYOUT_CONVERT;
    o->add_bos = 1;
    o->add_eos = 0;
    o->rope_orig_ctx = 8192.0;
    o->add_space_prefix = -1;
    if (cfg) {
        qp_gguf_llama_opts_set_special(o, QP_SPECIAL_BOS, cfg->bos_id, cfg->vocab);
        qp_gguf_llama_opts_set_special(o, QP_SPECIAL_EOS, cfg->eos_id, cfg->vocab);
    }
}

static void free_added(qp_gguf_added_token *a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(a[i].content);
    free(a);
}

void qp_gguf_llama_opts_free(qp_gguf_llama_opts *o)
{
    if (!o)
        return;
    free(o->name);
    free(o->size_label);
    free(o->chat_template);
    free_added(o->added_json, o->n_added_json);
    free_added(o->added_decoder, o->n_added_decoder);
    o->name = o->size_label = o->chat_template = NULL;
    o->added_json = o->added_decoder = NULL;
    o->n_added_json = o->n_added_decoder = 0;
}

void qp_gguf_llama_opts_set_special(qp_gguf_llama_opts *o, qp_special_token typ, int id, int n_vocab)
{
    if (id < 0 || (n_vocab > 0 && id >= n_vocab) || (int)typ < 0 || typ >= QP_SPECIAL_COUNT)
        return;
    for (int i = 0; i < o->n_special; i++)
        if (o->special[i].typ == typ)
            return;
    o->special[o->n_special].typ = typ;
    o->special[o->n_special].id = id;
    o->n_special++;
}

/* ---- names ---- */

static int is_version_or_number(const char *w, size_t n)
{
    /* ^(v\d+(?:\.\d+)*|\d.*)$ */
    if (n > 0 && isdigit((unsigned char)w[0]))
        return 1;
    if (n < 2 || w[0] != 'v' || !isdigit((unsigned char)w[1]))
        return 0;
    size_t i = 1;
    while (i < n) {
        if (!isdigit((unsigned char)w[i]))
            return 0;
        while (i < n && isdigit((unsigned char)w[i]))
            i++;
        if (i < n) {
            if (w[i] != '.' || i + 1 >= n)
                return 0;
            i++;
        }
    }
    return 1;
}

void qp_gguf_llama_title(char *out, size_t cap, const char *id)
{
    size_t o = 0;
    const char *p = id;
    if (cap == 0)
        return;
    for (;;) {
        while (*p == ' ' || *p == '-' || *p == '\t' || *p == '\n')
            p++;
        if (!*p)
            break;
        const char *w = p;
        while (*p && *p != ' ' && *p != '-' && *p != '\t' && *p != '\n')
            p++;
        size_t n = (size_t)(p - w);
        /* str.islower(): some cased character and no upper-case one */
        int lower = 0, upper = 0;
        for (size_t i = 0; i < n; i++) {
            lower |= islower((unsigned char)w[i]) != 0;
            upper |= isupper((unsigned char)w[i]) != 0;
        }
        int title = lower && !upper && !is_version_or_number(w, n);
        if (o > 0 && o + 1 < cap)
            out[o++] = ' ';
        int prev_alpha = 0;
        for (size_t i = 0; i < n && o + 1 < cap; i++) {
            char c = w[i];
            if (title) {
                /* str.title(): upper-case the first letter of each run of letters */
                int alpha = isalpha((unsigned char)c) != 0;
                c = alpha ? (char)(prev_alpha ? tolower((unsigned char)c) : toupper((unsigned char)c)) : c;
                prev_alpha = alpha;
            }
            out[o++] = c;
        }
    }
    out[o] = '\0';
}

void qp_gguf_llama_size_label(char *out, size_t cap, uint64_t n)
{
    /* gguf-py model_weight_count_rounded_notation(n, min_digits=2) */
    double x = (double)n, scaled;
    char suffix;
    if (x > 1e12) {
        scaled = x * 1e-12;
        suffix = 'T';
    } else if (x > 1e9) {
        scaled = x * 1e-9;
        suffix = 'B';
    } else if (x > 1e6) {
        scaled = x * 1e-6;
        suffix = 'M';
    } else {
        scaled = x * 1e-3;
        suffix = 'K';
    }
    /* digits of round(scaled) (Python rounds half to even) without leading zeros */
    double r = nearbyint(scaled);
    char digits[64];
    snprintf(digits, sizeof(digits), "%.0f", r);
    int nd = r == 0 ? 0 : (int)strlen(digits);
    int fix = 2 - nd > 0 ? 2 - nd : 0;
    snprintf(out, cap, "%.*f%c", fix, scaled, suffix);
}

/* ---- HF directory ---- */

static int load_json(json_t **out, const char *dir, const char *file)
{
    char *path = qp_path_join(dir, file);
    json_error_t err;
    int rc = 0;
    *out = NULL;
    if (qp_path_exists(path)) {
        *out = json_load_file(path, 0, &err);
        if (!*out)
            rc = qp_error_set(QP_EFORMAT, "%s: line %d: %s", path, err.line, err.text);
    }
    free(path);
    return rc;
}

static void add_token(qp_gguf_added_token **arr, size_t *n, int id, const char *content, int special)
{
    qp_gguf_added_token *p = *arr = qp_xrealloc_array(*arr, *n + 1, sizeof(*p));
    p[*n].id = id;
    p[*n].content = qp_strdup(content);
    p[*n].special = special;
    (*n)++;
}

/* Python's bool(value) of a JSON value (gguf-py packs add_bool's value with
 * struct "?"): null, false, 0, "", [] and {} are false. */
static int truthy(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_TRUE: return 1;
    case JSON_INTEGER: return json_integer_value(v) != 0;
    case JSON_REAL: return json_real_value(v) != 0.0;
    case JSON_STRING: return json_string_length(v) > 0;
    case JSON_ARRAY: return json_array_size(v) > 0;
    case JSON_OBJECT: return json_object_size(v) > 0;
    default: return 0;
    }
}

/* general.name: the directory name, title-cased */
static void name_from_dir(qp_gguf_llama_opts *o, const char *dir)
{
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/')
        len--;
    const char *b = dir + len;
    while (b > dir && b[-1] != '/')
        b--;
    char *base = qp_xstrndup(b, (size_t)(dir + len - b));
    const size_t cap = strlen(base) * 2 + 2;
    o->name = qp_xmalloc(cap);
    qp_gguf_llama_title(o->name, cap, base);
    free(base);
}

/* The "id" of the first entry of tokenizer.json's added_tokens whose
 * content is `content` (NULL when none). */
static json_t *added_token_id(json_t *added_tokens, const char *content)
{
    size_t i;
    json_t *at;
    json_array_foreach(added_tokens, i, at) {
        json_t *c = json_object_get(at, "content");
        if (json_is_string(c) && strcmp(json_string_value(c), content) == 0)
            return json_object_get(at, "id");
    }
    return NULL;
}

/* SpecialVocab._try_load_from_tokenizer_json: tokenizer_config's
 * add_<typ>_token flags, and its <typ>_token contents matched against
 * tokenizer.json's added_tokens; the chat template. */
static void specials_from_tokenizer_json(qp_gguf_llama_opts *o, const qp_llama_config *cfg, json_t *tok_cfg,
                                         json_t *tok)
{
    json_t *tmpl = json_object_get(tok_cfg, "chat_template");
    json_t *added_tokens = tok ? json_object_get(tok, "added_tokens") : NULL;
    if (json_is_string(tmpl))
        o->chat_template = qp_strdup(json_string_value(tmpl));
    for (int typ = 0; typ < QP_SPECIAL_COUNT; typ++) {
        char key[32];
        snprintf(key, sizeof(key), "add_%s_token", special_names[typ]);
        json_t *add = json_object_get(tok_cfg, key);
        if (json_is_boolean(add)) {
            if (typ == QP_SPECIAL_BOS)
                o->add_bos = json_is_true(add);
            else if (typ == QP_SPECIAL_EOS)
                o->add_eos = json_is_true(add);
        }
        snprintf(key, sizeof(key), "%s_token", special_names[typ]);
        json_t *entry = json_object_get(tok_cfg, key);
        const char *content = NULL;
        if (json_is_string(entry))
            content = json_string_value(entry);
        else if (json_is_object(entry) && json_is_string(json_object_get(entry, "content")))
            content = json_string_value(json_object_get(entry, "content"));
        if (!content || !json_is_array(added_tokens))
            continue;
        json_t *id = added_token_id(added_tokens, content);
        if (json_is_integer(id))
            qp_gguf_llama_opts_set_special(o, (qp_special_token)typ, (int)json_integer_value(id), cfg->vocab);
    }
}

/* tokenizer_config.json's added_tokens_decoder: {"id": {"content", "special"}} */
static int added_from_decoder(qp_gguf_llama_opts *o, const qp_llama_config *cfg, json_t *tok_cfg, const char *dir)
{
    json_t *dec = json_object_get(tok_cfg, "added_tokens_decoder");
    const char *k;
    json_t *v;
    if (!json_is_object(dec))
        return 0;
    json_object_foreach(dec, k, v) {
        char *end;
        long id = strtol(k, &end, 10);
        json_t *c = json_object_get(v, "content");
        if (*end || end == k || id < 0 || id >= cfg->vocab || !json_is_string(c))
            return qp_error_set(QP_EFORMAT, "%s/tokenizer_config.json: added_tokens_decoder '%s': expected "
                                "an id below %d with a string content", dir, k, cfg->vocab);
        add_token(&o->added_decoder, &o->n_added_decoder, (int)id, json_string_value(c),
                  json_is_true(json_object_get(v, "special")));
    }
    return 0;
}

/* SpecialVocab._try_load_from_config_json */
static void specials_from_config(qp_gguf_llama_opts *o, const qp_llama_config *cfg, json_t *config)
{
    for (int typ = 0; typ < QP_SPECIAL_COUNT; typ++) {
        char key[32];
        snprintf(key, sizeof(key), "%s_token_id", special_names[typ]);
        json_t *id = json_object_get(config, key);
        if (json_is_integer(id))
            qp_gguf_llama_opts_set_special(o, (qp_special_token)typ, (int)json_integer_value(id), cfg->vocab);
    }
}

/* added_tokens.json: {"content": id} */
static int added_from_json(qp_gguf_llama_opts *o, json_t *added, const char *dir)
{
    const char *k;
    json_t *v;
    json_object_foreach(added, k, v) {
        if (!json_is_integer(v))
            return qp_error_set(QP_EFORMAT, "%s/added_tokens.json: '%s': expected an integer id", dir, k);
        add_token(&o->added_json, &o->n_added_json, (int)json_integer_value(v), k, 0);
    }
    return 0;
}

int qp_gguf_llama_opts_from_hf_dir(qp_gguf_llama_opts *o, const qp_llama_config *cfg, const char *dir)
{
    json_t *config = NULL, *tok_cfg = NULL, *tok = NULL, *added = NULL;
    int rc;

    qp_gguf_llama_opts_init(o, NULL);
    o->add_bos = o->add_eos = -1;
    if ((rc = load_json(&config, dir, "config.json")) != 0 ||
        (rc = load_json(&tok_cfg, dir, "tokenizer_config.json")) != 0 ||
        (rc = load_json(&tok, dir, "tokenizer.json")) != 0 ||
        (rc = load_json(&added, dir, "added_tokens.json")) != 0)
        goto done;
    name_from_dir(o, dir);
    if (config && json_is_integer(json_object_get(config, "head_dim")))
        o->head_dim_keys = 1;
    /* LlamaModel.generate_extra_tensors: hparams.get("original_max_position_embeddings",
     * 8192), the top-level key — not rope_scaling's */
    json_t *orig = config ? json_object_get(config, "original_max_position_embeddings") : NULL;
    if (orig && !json_is_null(orig)) {
        if (!json_is_number(orig) || !(json_number_value(orig) > 0) || !isfinite(json_number_value(orig))) {
            rc = qp_error_set(QP_EFORMAT, "%s/config.json: original_max_position_embeddings: expected a positive "
                              "number", dir);
            goto done;
        }
        o->rope_orig_ctx = json_number_value(orig);
    }
    if (tok_cfg && json_object_get(tok_cfg, "add_prefix_space"))
        o->add_space_prefix = truthy(json_object_get(tok_cfg, "add_prefix_space"));
    if (tok_cfg) {
        specials_from_tokenizer_json(o, cfg, tok_cfg, tok);
        if ((rc = added_from_decoder(o, cfg, tok_cfg, dir)) != 0)
            goto done;
    }
    if (config)
        specials_from_config(o, cfg, config);
    if (added && (rc = added_from_json(o, added, dir)) != 0)
        goto done;
    rc = 0;
done:
    if (rc != 0)
        qp_gguf_llama_opts_free(o);
    json_decref(config);
    json_decref(tok_cfg);
    json_decref(tok);
    json_decref(added);
    return rc;
}
