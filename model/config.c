/* config.json / GGUF metadata -> qp_llama_config, refusing what the forward
 * pass does not implement (see config.h). */
#include "model/config.h"

#include "common/error.h"
#include "common/fsutil.h"

#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *qp_arch_name(qp_arch a)
{
    switch (a) {
    case QP_ARCH_LLAMA: return "llama";
    case QP_ARCH_MISTRAL: return "mistral";
    case QP_ARCH_QWEN2: return "qwen2";
    default: return "?";
    }
}

/* Fields checked by both sources; names differ per source. */
enum { F_VOCAB, F_HIDDEN, F_LAYERS, F_HEADS, F_KV, F_HEAD_DIM, F_FF, F_EPS, F_THETA, F_MAXPOS, F_COUNT };

static const char *json_names[F_COUNT] = {
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "head_dim", "intermediate_size", "rms_norm_eps", "rope_theta", "max_position_embeddings",
};

static const char *gguf_suffixes[F_COUNT] = {
    "vocab_size", "embedding_length", "block_count", "attention.head_count", "attention.head_count_kv",
    "attention.key_length", "feed_forward_length", "attention.layer_norm_rms_epsilon", "rope.freq_base",
    "context_length",
};

typedef struct {
    const char *path;
    const char *gguf_arch;   /* NULL for config.json */
    int head_dim_given;      /* head_dim (key_length) stated, not derived from hidden / heads */
    char names[F_COUNT][96];
} src;

static void src_init(src *s, const char *path, const char *gguf_arch)
{
    s->path = path;
    s->gguf_arch = gguf_arch;
    s->head_dim_given = 0;
    for (int f = 0; f < F_COUNT; f++) {
        if (gguf_arch)
            snprintf(s->names[f], sizeof(s->names[f]), "%s.%s", gguf_arch, gguf_suffixes[f]);
        else
            snprintf(s->names[f], sizeof(s->names[f]), "%s", json_names[f]);
    }
}

/* "PATH: hidden_size: MSG" (config.json) or "PATH: key 'llama.embedding_length': MSG" (GGUF). */
static int field_error(const src *s, const char *field, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int field_error(const src *s, const char *field, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (s->gguf_arch)
        return qp_error_set(QP_EFORMAT, "%s: key '%s': %s", s->path, field, msg);
    return qp_error_set(QP_EFORMAT, "%s: %s: %s", s->path, field, msg);
}

/* Shape rules the forward pass relies on. */
static int check_config(const src *s, const qp_llama_config *c)
{
    /* Mistral Nemo-style configs state a head_dim that is not hidden / heads */
    if (!s->head_dim_given && c->hidden % c->n_heads != 0)
        return field_error(s, s->names[F_HIDDEN], "%d is not divisible by %s %d", c->hidden, s->names[F_HEADS],
                           c->n_heads);
    if (c->n_heads % c->n_kv_heads != 0)
        return field_error(s, s->names[F_HEADS], "%d is not divisible by %s %d", c->n_heads, s->names[F_KV],
                           c->n_kv_heads);
    if (c->head_dim % 2 != 0)
        return field_error(s, s->names[F_HEAD_DIM], "%d must be even (RoPE rotates pairs)", c->head_dim);
    if (!(c->rms_eps > 0.0f))
        return field_error(s, s->names[F_EPS], "must be positive");
    if (!(c->rope_theta > 0.0f))
        return field_error(s, s->names[F_THETA], "must be positive");
    return 0;
}

/* ---------------- config.json ---------------- */

static const char *jtype(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE: case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

/* Integer field in [min, INT_MAX]; absent or null gives def, or an error when required. */
static int json_int(const src *s, const json_t *root, int f, int required, int def, int min, int *out)
{
    const char *k = s->names[f];
    const json_t *v = json_object_get(root, k);
    if (!v || json_is_null(v)) {
        if (required)
            return field_error(s, k, "missing (required)");
        *out = def;
        return 0;
    }
    if (!json_is_integer(v))
        return field_error(s, k, "expected an integer, got %s", jtype(v));
    json_int_t x = json_integer_value(v);
    if (x < min || x > INT_MAX)
        return field_error(s, k, "%" JSON_INTEGER_FORMAT " is out of range (%d to %d)", x, min, INT_MAX);
    *out = (int)x;
    return 0;
}

static int json_float(const src *s, const json_t *root, int f, double def, float *out)
{
    const char *k = s->names[f];
    const json_t *v = json_object_get(root, k);
    if (!v || json_is_null(v)) {
        *out = (float)def;
        return 0;
    }
    if (!json_is_number(v))
        return field_error(s, k, "expected a number, got %s", jtype(v));
    *out = (float)json_number_value(v);
    return 0;
}

static int json_bool(const src *s, const json_t *root, const char *k, int def, int *out)
{
    const json_t *v = json_object_get(root, k);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v))
        return field_error(s, k, "expected true or false, got %s", jtype(v));
    *out = json_is_true(v);
    return 0;
}

static int json_arch(const src *s, const json_t *root, qp_arch *out)
{
    static const struct {
        const char *cls, *model_type;
        qp_arch arch;
    } known[] = {
        { "LlamaForCausalLM", "llama", QP_ARCH_LLAMA },
        { "MistralForCausalLM", "mistral", QP_ARCH_MISTRAL },
        { "Qwen2ForCausalLM", "qwen2", QP_ARCH_QWEN2 },
    };
    const json_t *a = json_object_get(root, "architectures");
    const char *name = NULL;
    int by_class = 1;
    if (a && !json_is_null(a)) {
        if (!json_is_array(a) || json_array_size(a) == 0 || !json_is_string(json_array_get(a, 0)))
            return field_error(s, "architectures", "expected a non-empty array of strings");
        name = json_string_value(json_array_get(a, 0));
    } else {
        /* older configs name only the model type */
        const json_t *mt = json_object_get(root, "model_type");
        if (!json_is_string(mt))
            return field_error(s, "architectures", "missing (and no model_type)");
        name = json_string_value(mt);
        by_class = 0;
    }
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        if (strcmp(name, by_class ? known[i].cls : known[i].model_type) == 0) {
            *out = known[i].arch;
            return 0;
        }
    }
    return qp_error_set(QP_EFORMAT, "%s: architecture '%s' is not supported (LlamaForCausalLM, MistralForCausalLM, "
                        "Qwen2ForCausalLM)", s->path, name);
}

/* bos_token_id: int or null; eos_token_id: int, list of ints, or null. */
static int json_special_ids(const src *s, const json_t *root, qp_arch arch, qp_llama_config *c)
{
    /* HF's LlamaConfig/MistralConfig default to 1 and 2; Qwen2Config to none */
    int dflt = arch != QP_ARCH_QWEN2;
    const json_t *b = json_object_get(root, "bos_token_id");
    const json_t *e = json_object_get(root, "eos_token_id");
    c->bos_id = !b ? (dflt ? 1 : -1) : -1;
    if (b && !json_is_null(b)) {
        if (!json_is_integer(b) || json_integer_value(b) < 0 || json_integer_value(b) > INT_MAX)
            return field_error(s, "bos_token_id", "expected a non-negative integer, got %s", jtype(b));
        c->bos_id = (int)json_integer_value(b);
    }
    c->n_eos = 0;
    if (!e) {
        if (dflt)
            c->eos_ids[c->n_eos++] = 2;
    } else if (json_is_integer(e) || json_is_array(e)) {
        size_t n = json_is_array(e) ? json_array_size(e) : 1;
        if (n > QP_MAX_EOS)
            return field_error(s, "eos_token_id", "%zu ids, at most %d supported", n, QP_MAX_EOS);
        for (size_t i = 0; i < n; i++) {
            const json_t *x = json_is_array(e) ? json_array_get(e, i) : e;
            if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > INT_MAX)
                return field_error(s, "eos_token_id", "expected non-negative integers, got %s", jtype(x));
            c->eos_ids[c->n_eos++] = (int)json_integer_value(x);
        }
    } else if (!json_is_null(e)) {
        return field_error(s, "eos_token_id", "expected an integer or a list of integers, got %s", jtype(e));
    }
    c->eos_id = c->n_eos ? c->eos_ids[0] : -1;
    return 0;
}

/* A JSON value for a message, cut short: config.json is untrusted. */
static void json_brief(char *buf, size_t cap, const json_t *v)
{
    char *d = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    size_t n = d ? strlen(d) : 0;
    if (n < cap)
        snprintf(buf, cap, "%s", d ? d : "?");
    else
        snprintf(buf, cap, "%.*s...", (int)(cap - 4), d);
    free(d);
}

/* "OBJ.KEY" into buf: the field name of a key of rope_scaling / rope_parameters. */
static const char *rope_field(char *buf, size_t cap, const char *obj, const char *key)
{
    snprintf(buf, cap, "%s.%.70s", obj, key);
    return buf;
}

/* A number of the rope object: present, finite, positive. */
static int rope_number(const src *s, const json_t *rs, const char *obj, const char *k, double *out)
{
    char field[96];
    rope_field(field, sizeof(field), obj, k);
    const json_t *v = json_object_get(rs, k);
    if (!v || json_is_null(v))
        return field_error(s, field, "missing (llama3 scaling needs factor, low_freq_factor, high_freq_factor and "
                           "original_max_position_embeddings)");
    if (!json_is_number(v))
        return field_error(s, field, "expected a number, got %s", jtype(v));
    double x = json_number_value(v);
    if (!(x > 0.0) || !isfinite(x) || x > 1e30)
        return field_error(s, field, "%g is out of range (0 < x <= 1e30)", x);
    *out = x;
    return 0;
}

/* rope_scaling: absent or null (plain RoPE), {"rope_type": "default"}, or
 * Llama 3's {"rope_type": "llama3", "factor", "low_freq_factor",
 * "high_freq_factor", "original_max_position_embeddings"} ("type" is the
 * legacy spelling of "rope_type", as transformers accepts it).  Newer
 * transformers write the same object as "rope_parameters", with rope_theta
 * inside it; that rope_theta then replaces the top-level one.  Any other
 * type, and any other field, is refused by name with its value: a scaling
 * qpipe ignored would give wrong logits silently. */
static int json_rope_scaling(const src *s, const json_t *root, qp_rope_scaling *out, float *theta)
{
    static const char *const llama3_keys[] = {
        "factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings",
    };
    const json_t *rs = json_object_get(root, "rope_scaling");
    const json_t *rp = json_object_get(root, "rope_parameters");
    const char *obj = "rope_scaling";
    char field[96], val[80];
    memset(out, 0, sizeof(*out));
    if (rp && !json_is_null(rp)) {
        if (rs && !json_is_null(rs))
            return field_error(s, "rope_parameters", "given together with rope_scaling; keep one of them");
        rs = rp;
        obj = "rope_parameters";
    }
    if (!rs || json_is_null(rs))
        return 0;
    if (!json_is_object(rs))
        return field_error(s, obj, "expected an object or null, got %s", jtype(rs));
    const json_t *t = json_object_get(rs, "rope_type"), *legacy = json_object_get(rs, "type");
    char tfield[96];
    rope_field(tfield, sizeof(tfield), obj, t ? "rope_type" : "type");
    if (!t)
        t = legacy;
    if (!t)
        return field_error(s, obj, "has no rope_type (qpipe runs llama3 scaling or none)");
    if (!json_is_string(t))
        return field_error(s, tfield, "expected a string, got %s", jtype(t));
    const char *type = json_string_value(t);
    if (legacy && legacy != t && !(json_is_string(legacy) && strcmp(json_string_value(legacy), type) == 0)) {
        json_brief(val, sizeof(val), legacy);
        return field_error(s, rope_field(field, sizeof(field), obj, "type"), "%s contradicts rope_type '%s'", val,
                           type);
    }
    int llama3 = strcmp(type, "llama3") == 0;
    if (!llama3 && strcmp(type, "default") != 0)
        return field_error(s, tfield, "'%s' is not supported (qpipe runs llama3 scaling or none)", type);
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)rs, key, v) {
        int known = strcmp(key, "rope_type") == 0 || strcmp(key, "type") == 0 ||
                    (rs == rp && strcmp(key, "rope_theta") == 0);
        for (size_t i = 0; llama3 && i < sizeof(llama3_keys) / sizeof(llama3_keys[0]); i++)
            known |= strcmp(key, llama3_keys[i]) == 0;
        if (!known) {
            json_brief(val, sizeof(val), v);
            return field_error(s, rope_field(field, sizeof(field), obj, key), "%s is not supported with rope_type "
                               "'%s' (qpipe runs llama3 scaling or none)", val, type);
        }
    }
    const json_t *th = rs == rp ? json_object_get(rs, "rope_theta") : NULL;
    if (th && !json_is_null(th)) {
        if (!json_is_number(th))
            return field_error(s, rope_field(field, sizeof(field), obj, "rope_theta"), "expected a number, got %s",
                               jtype(th));
        float f = (float)json_number_value(th);
        if (!(f > 0.0f) || !isfinite(f))
            return field_error(s, rope_field(field, sizeof(field), obj, "rope_theta"), "must be positive");
        *theta = f;
    }
    if (!llama3)
        return 0;
    qp_rope_scaling r = {.kind = QP_ROPE_LLAMA3};
    int rc;
    if ((rc = rope_number(s, rs, obj, "factor", &r.factor)) != 0 ||
        (rc = rope_number(s, rs, obj, "low_freq_factor", &r.low_freq_factor)) != 0 ||
        (rc = rope_number(s, rs, obj, "high_freq_factor", &r.high_freq_factor)) != 0)
        return rc;
    if (!(r.high_freq_factor > r.low_freq_factor))
        return field_error(s, rope_field(field, sizeof(field), obj, "high_freq_factor"),
                           "%g must be greater than low_freq_factor %g", r.high_freq_factor, r.low_freq_factor);
    const json_t *om = json_object_get(rs, "original_max_position_embeddings");
    rope_field(field, sizeof(field), obj, "original_max_position_embeddings");
    if (!om || json_is_null(om))
        return field_error(s, field, "missing (llama3 scaling needs factor, low_freq_factor, high_freq_factor and "
                           "original_max_position_embeddings)");
    if (!json_is_integer(om) || json_integer_value(om) < 1 || json_integer_value(om) > INT_MAX) {
        json_brief(val, sizeof(val), om);
        return field_error(s, field, "%s is not an integer in 1..%d", val, INT_MAX);
    }
    r.original_max_pos = (int)json_integer_value(om);
    *out = r;
    return 0;
}

/* Refusals: features the forward pass does not implement; records the
 * sliding window it runs within (c->sliding_window). */
static int json_refusals(const src *s, const json_t *root, qp_llama_config *c)
{
    const json_t *act = json_object_get(root, "hidden_act");
    if (act && !json_is_null(act)) {
        if (!json_is_string(act))
            return field_error(s, "hidden_act", "expected a string, got %s", jtype(act));
        /* transformers' ACT2FN maps both names to SiLU */
        if (strcmp(json_string_value(act), "silu") != 0 && strcmp(json_string_value(act), "swish") != 0)
            return field_error(s, "hidden_act", "'%s' is not supported (SwiGLU with silu only)",
                               json_string_value(act));
    }
    const json_t *prf = json_object_get(root, "partial_rotary_factor");
    if (prf && !json_is_null(prf) && !(json_is_number(prf) && json_number_value(prf) == 1.0)) {
        char val[80];
        json_brief(val, sizeof(val), prf);
        return field_error(s, "partial_rotary_factor", "%s is not supported (RoPE over the whole head only)", val);
    }
    int flag;
    int rc;
    if (c->arch == QP_ARCH_LLAMA) {
        /* Llama's attention_bias also adds an o_proj bias, which the forward pass lacks */
        if ((rc = json_bool(s, root, "attention_bias", 0, &flag)) != 0)
            return rc;
        if (flag)
            return field_error(s, "attention_bias", "true is not supported for llama (o_proj bias)");
        if ((rc = json_bool(s, root, "mlp_bias", 0, &flag)) != 0)
            return rc;
        if (flag)
            return field_error(s, "mlp_bias", "true is not supported (MLP biases)");
    }
    if (c->arch == QP_ARCH_MISTRAL || c->arch == QP_ARCH_QWEN2) {
        /* The window matters when it is in force (always for Mistral, only
         * with use_sliding_window for Qwen2, as in transformers) and shorter
         * than the context; a window >= max_position_embeddings never bites.
         * A shorter one caps the forward pass's positions (config.h). */
        const json_t *sw = json_object_get(root, "sliding_window");
        int use = c->arch == QP_ARCH_MISTRAL;
        if (c->arch == QP_ARCH_QWEN2 && (rc = json_bool(s, root, "use_sliding_window", 0, &use)) != 0)
            return rc;
        if (sw && !json_is_null(sw)) {
            if (!json_is_integer(sw) || json_integer_value(sw) <= 0)
                return field_error(s, "sliding_window", "expected a positive integer or null, got %s", jtype(sw));
            if (use && json_integer_value(sw) < c->max_pos)
                c->sliding_window = (int)json_integer_value(sw);
        }
    }
    return 0;
}

int qp_llama_config_parse(qp_llama_config *out, const char *json, size_t len, const char *name)
{
    int rc = 0;
    json_error_t err;
    src s;
    qp_llama_config c;
    memset(&c, 0, sizeof(c));
    src_init(&s, name, NULL);
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &err);
    if (!root)
        return qp_error_set(QP_EFORMAT, "%s: line %d column %d: invalid JSON: %s", name, err.line, err.column,
                            err.text);
    if (!json_is_object(root)) {
        rc = qp_error_set(QP_EFORMAT, "%s: not a JSON object", name);
        goto done;
    }
    if ((rc = json_arch(&s, root, &c.arch)) != 0)
        goto done;
    /* HF class defaults for the optional fields */
    int def_max_pos = c.arch == QP_ARCH_LLAMA ? 2048 : c.arch == QP_ARCH_MISTRAL ? 131072 : 32768;
    if ((rc = json_int(&s, root, F_VOCAB, 1, 0, 1, &c.vocab)) != 0 ||
        (rc = json_int(&s, root, F_HIDDEN, 1, 0, 1, &c.hidden)) != 0 ||
        (rc = json_int(&s, root, F_LAYERS, 1, 0, 1, &c.n_layers)) != 0 ||
        (rc = json_int(&s, root, F_HEADS, 1, 0, 1, &c.n_heads)) != 0 ||
        (rc = json_int(&s, root, F_KV, 0, c.n_heads, 1, &c.n_kv_heads)) != 0 ||
        (rc = json_int(&s, root, F_FF, 1, 0, 1, &c.intermediate)) != 0 ||
        (rc = json_int(&s, root, F_MAXPOS, 0, def_max_pos, 1, &c.max_pos)) != 0 ||
        (rc = json_int(&s, root, F_HEAD_DIM, 0, c.hidden / c.n_heads, 1, &c.head_dim)) != 0 ||
        (rc = json_float(&s, root, F_EPS, 1e-6, &c.rms_eps)) != 0 ||
        (rc = json_float(&s, root, F_THETA, 10000.0, &c.rope_theta)) != 0 ||
        (rc = json_bool(&s, root, "tie_word_embeddings", 0, &c.tied_embeddings)) != 0)
        goto done;
    const json_t *hd = json_object_get(root, s.names[F_HEAD_DIM]);
    s.head_dim_given = hd && !json_is_null(hd);
    c.qkv_bias = c.arch == QP_ARCH_QWEN2;
    if ((rc = check_config(&s, &c)) != 0 || (rc = json_refusals(&s, root, &c)) != 0 ||
        (rc = json_rope_scaling(&s, root, &c.rope_scaling, &c.rope_theta)) != 0 ||
        (rc = json_special_ids(&s, root, c.arch, &c)) != 0)
        goto done;
    *out = c;
done:
    json_decref(root);
    return rc;
}

int qp_llama_config_load(qp_llama_config *out, const char *path)
{
    char *text = NULL;
    size_t len = 0;
    int rc = qp_read_file(path, &text, &len);
    if (rc == 0)
        rc = qp_llama_config_parse(out, text, len, path);
    free(text);
    return rc;
}

/* ---------------- GGUF ---------------- */

/* <arch>.<field> as an int in [min, INT_MAX]; absent gives def unless required. */
static int gguf_int(const src *s, const qp_gguf *g, int f, int required, int def, int min, int *out)
{
    const char *k = s->names[f];
    int64_t x;
    if (!qp_gguf_find(g, k) && !required) {
        *out = def;
        return 0;
    }
    int rc = qp_gguf_get_int(g, k, &x);
    if (rc != 0)
        return rc;
    if (x < min || x > INT_MAX)
        return field_error(s, k, "%" PRId64 " is out of range (%d to %d)", x, min, INT_MAX);
    *out = (int)x;
    return 0;
}

static int gguf_float(const src *s, const qp_gguf *g, int f, int required, double def, float *out)
{
    double x;
    if (!qp_gguf_find(g, s->names[f]) && !required) {
        *out = (float)def;
        return 0;
    }
    int rc = qp_gguf_get_float(g, s->names[f], &x);
    if (rc == 0)
        *out = (float)x;
    return rc;
}

static int gguf_vocab(const src *s, const qp_gguf *g, int *out)
{
    const qp_gguf_value *tok;
    if (qp_gguf_find(g, s->names[F_VOCAB]))
        return gguf_int(s, g, F_VOCAB, 1, 0, 1, out);
    if (qp_gguf_get_array(g, "tokenizer.ggml.tokens", QP_GGUF_STRING, &tok) == 0 &&
        qp_gguf_array_len(tok) > 0 && qp_gguf_array_len(tok) <= INT_MAX) {
        *out = (int)qp_gguf_array_len(tok);
        return 0;
    }
    return field_error(s, s->names[F_VOCAB], "missing (and no tokenizer.ggml.tokens)");
}

/* As json_refusals, for GGUF keys and tensors. */
static int gguf_refusals(const src *s, const qp_gguf *g, qp_llama_config *c)
{
    char key[128];
    const char *t;
    int rc;
    snprintf(key, sizeof(key), "%s.rope.scaling.type", s->gguf_arch);
    if (qp_gguf_find(g, key)) {
        if ((rc = qp_gguf_get_string(g, key, &t, NULL)) != 0)
            return rc;
        if (strcmp(t, "none") != 0)
            return field_error(s, key, "'%s' is not supported in a GGUF input (qpipe runs GGUF models "
                               "with plain RoPE; Llama 3 scaling from a Hugging Face config.json)", t);
    }
    /* llama.cpp stores Llama 3.1-style scaling as a frequency-factor tensor */
    if (qp_gguf_find_tensor(g, "rope_freqs.weight"))
        return qp_error_set(QP_EFORMAT, "%s: tensor 'rope_freqs.weight': RoPE frequency factors (Llama 3 rope "
                            "scaling) are not supported in a GGUF input; use the Hugging Face checkpoint, whose "
                            "config.json rope_scaling qpipe runs", s->path);
    snprintf(key, sizeof(key), "%s.rope.dimension_count", s->gguf_arch);
    if (qp_gguf_find(g, key)) {
        int64_t rd;
        if ((rc = qp_gguf_get_int(g, key, &rd)) != 0)
            return rc;
        if (rd != c->head_dim)
            return field_error(s, key, "%" PRId64 " differs from the head dim %d: partial rotary embeddings are not "
                               "supported", rd, c->head_dim);
    }
    snprintf(key, sizeof(key), "%s.attention.sliding_window", s->gguf_arch);
    if (qp_gguf_find(g, key)) {
        int64_t w;
        if ((rc = qp_gguf_get_int(g, key, &w)) != 0)
            return rc;
        if (w > 0 && w < c->max_pos)
            c->sliding_window = (int)w;
    }
    if (qp_gguf_find_tensor(g, "blk.0.attn_output.bias"))
        return qp_error_set(QP_EFORMAT, "%s: tensor 'blk.0.attn_output.bias': output-projection biases are not "
                            "supported", s->path);
    return 0;
}

static int gguf_token_id(const qp_gguf *g, const char *key, int *out)
{
    int64_t x;
    *out = -1;
    if (!qp_gguf_find(g, key))
        return 0;
    int rc = qp_gguf_get_int(g, key, &x);
    if (rc != 0)
        return rc;
    if (x < 0 || x > INT_MAX)
        return qp_error_set(QP_EFORMAT, "%s: key '%s': %" PRId64 " is not a token id", qp_gguf_path(g), key, x);
    *out = (int)x;
    return 0;
}

int qp_llama_config_from_gguf(qp_llama_config *out, const qp_gguf *g)
{
    const char *arch;
    int rc;
    src s;
    qp_llama_config c;
    memset(&c, 0, sizeof(c));
    if ((rc = qp_gguf_get_string(g, "general.architecture", &arch, NULL)) != 0)
        return rc;
    if (strcmp(arch, "llama") == 0)
        c.arch = QP_ARCH_LLAMA;
    else if (strcmp(arch, "qwen2") == 0)
        c.arch = QP_ARCH_QWEN2;
    else
        return qp_error_set(QP_EFORMAT, "%s: key 'general.architecture': architecture '%s' is not supported "
                            "(llama, qwen2)", qp_gguf_path(g), arch);
    src_init(&s, qp_gguf_path(g), arch);
    if ((rc = gguf_int(&s, g, F_HIDDEN, 1, 0, 1, &c.hidden)) != 0 ||
        (rc = gguf_int(&s, g, F_LAYERS, 1, 0, 1, &c.n_layers)) != 0 ||
        (rc = gguf_int(&s, g, F_HEADS, 1, 0, 1, &c.n_heads)) != 0 ||
        (rc = gguf_int(&s, g, F_KV, 0, c.n_heads, 1, &c.n_kv_heads)) != 0 ||
        (rc = gguf_int(&s, g, F_FF, 1, 0, 1, &c.intermediate)) != 0 ||
        (rc = gguf_int(&s, g, F_MAXPOS, 1, 0, 1, &c.max_pos)) != 0 ||
        (rc = gguf_int(&s, g, F_HEAD_DIM, 0, c.hidden / c.n_heads, 1, &c.head_dim)) != 0 ||
        (rc = gguf_float(&s, g, F_EPS, 1, 0.0, &c.rms_eps)) != 0 ||
        (rc = gguf_float(&s, g, F_THETA, 0, 10000.0, &c.rope_theta)) != 0 ||
        (rc = gguf_vocab(&s, g, &c.vocab)) != 0)
        return rc;
    s.head_dim_given = qp_gguf_find(g, s.names[F_HEAD_DIM]) != NULL;
    /* llama.cpp ties the output to the embedding when output.weight is absent */
    c.tied_embeddings = qp_gguf_tensor_count(g) > 0 && !qp_gguf_find_tensor(g, "output.weight");
    c.qkv_bias = c.arch == QP_ARCH_QWEN2 || qp_gguf_find_tensor(g, "blk.0.attn_q.bias") != NULL;
    if ((rc = check_config(&s, &c)) != 0 || (rc = gguf_refusals(&s, g, &c)) != 0 ||
        (rc = gguf_token_id(g, "tokenizer.ggml.bos_token_id", &c.bos_id)) != 0 ||
        (rc = gguf_token_id(g, "tokenizer.ggml.eos_token_id", &c.eos_id)) != 0)
        return rc;
    c.n_eos = c.eos_id >= 0;
    c.eos_ids[0] = c.eos_id >= 0 ? c.eos_id : 0;
    *out = c;
    return 0;
}
