#include "stages/package_gguf.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "model/config.h"
#include "model/gguf_llama.h"
#include "model/gguf_writer.h"
#include "model/tokenizer.h"
#include "common/tensor.h"
#include "quant/linear.h"
#include "quant/qtypes.h"
#include "stages/model_load.h"
#include "stages/qtensor.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const qp_artifact *a;
    qp_cache *cache;
    const char *what;
    unsigned file_type;   /* llama_ftype: 32 (BF16) stores 2-D weights as BF16 */
    float *f32;           /* scratch [largest tensor] for conversions */
    size_t f32_cap;       /* elements */
    qp_buf held;          /* the last tensor's cache object, lent to the writer (its allocation reused) */
} export_ctx;

#define FTYPE_MOSTLY_BF16 32u

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* convert_hf_to_gguf.py's prepare_tensors for llama / qwen2 (whose
 * tensor_force_quant is Model's: no opinion): 1-D tensors, *_norm.weight
 * and anything not named *.weight (biases) stay F32 in every --outtype;
 * the rest (token_embd and output included) take the file's type. */
static int stays_f32(const qp_gguf_llama_tensor *t)
{
    return t->n_dims <= 1 || ends_with(t->gguf_name, "_norm.weight") || !ends_with(t->gguf_name, ".weight");
}

static const json_t *entry_of(const export_ctx *x, const char *hf_name)
{
    char name[160];
    snprintf(name, sizeof(name), "tensors/%s", hf_name);
    return qp_artifact_find(x->a, name);
}

static int tensor_type(void *ud, const qp_gguf_llama_tensor *t, uint32_t *type)
{
    export_ctx *x = ud;
    const json_t *e = entry_of(x, t->hf_name);
    if (!e)
        return qp_error_set(QP_EFORMAT, "%s: tensor '%s' is missing", x->what, t->hf_name);
    const char *fmt = json_string_value(json_object_get(e, "format"));
    if (!fmt || !strcmp(fmt, "dense")) {
        /* A BF16 file keeps the source's objects (no rel_error: not
         * encoded), so their type is the file's whatever the checkpoint's
         * dtype, as convert's --outtype bf16; F16 weights come encoded
         * (quantize's F16, an override, llama-quantize's F16 fallback).
         * Norms and biases are F32 in every file, whatever their dtype
         * (an F16 checkpoint's too: convert widens them). */
        const char *dt = json_string_value(json_object_get(e, "dtype"));
        if (stays_f32(t))
            *type = QP_GGML_F32;
        else if (x->file_type == FTYPE_MOSTLY_BF16 && !json_object_get(e, "rel_error"))
            *type = QP_GGML_BF16;
        else if (dt && !strcmp(dt, "F16"))
            *type = QP_GGML_F16;
        else
            *type = QP_GGML_F32;
        return 0;
    }
    if (!strcmp(fmt, "ggml")) {
        const qp_qtype_info *qi = qp_qtype_by_name(json_string_value(json_object_get(e, "qtype")));
        if (!qi)
            return qp_error_set(QP_ECORRUPT, "%s: tensor '%s': unknown ggml type", x->what, t->hf_name);
        *type = (uint32_t)qi->type;
        return 0;
    }
    if (!strcmp(fmt, "linear")) {
        const json_t *gs = json_object_get(e, "group_size"), *bits = json_object_get(e, "bits");
        int sym = json_is_true(json_object_get(e, "sym")), act = json_is_true(json_object_get(e, "act_order"));
        if (json_integer_value(gs) == 32 && !act && json_integer_value(bits) == 4) {
            *type = sym ? QP_GGML_Q4_0 : QP_GGML_Q4_1;
            return 0;
        }
        if (json_integer_value(gs) == 32 && !act && json_integer_value(bits) == 8 && sym) {
            *type = QP_GGML_Q8_0;
            return 0;
        }
        return qp_error_set(QP_EUSAGE,
                            "%s: tensor '%s': %lld-bit%s group-%lld%s weights have no exact llama.cpp block type; "
                            "GGUF export takes 4-bit (Q4_0 sym, Q4_1 asym) or 8-bit sym (Q8_0) with group_size 32 "
                            "and no act_order — they are never re-quantized",
                            x->what, t->hf_name, (long long)json_integer_value(bits), sym ? " sym" : "",
                            (long long)json_integer_value(gs), act ? " act_order" : "");
    }
    return qp_error_set(QP_EUSAGE,
                        "%s: tensor '%s' is %s-quantized, which GGUF cannot hold as is; quantize with method gguf "
                        "(or GPTQ/AWQ with group_size 32, exported as Q4_0/Q4_1/Q8_0)",
                        x->what, t->hf_name, fmt);
}

/* GPTQ/AWQ codes as llama.cpp blocks of 32 (one group = one block):
 *   Q4_0: d = s, nibbles q (x = (q − 8)·d; sym z = 8)      — exact
 *   Q8_0: d = s, int8 q − 128 (x = qs·d; sym z = 128)      — exact
 *   Q4_1: d = s, m = fp16(−s·z) (x = q·d + m)              — m rounds to fp16 */
static int linear_to_blocks(const void *buf, size_t len, uint32_t type, void *dst, size_t nbytes, const char *what)
{
    qp_linear *q = NULL;
    int rc = qp_linear_deserialize(&q, buf, len, what);
    if (rc)
        return rc;
    qp_linear_view v;
    qp_linear_view_of(q, &v);
    size_t row_size = qp_qtype_row_size((qp_ggml_type)type, v.cols);
    if (row_size * (size_t)v.rows != nbytes || v.group_size != 32) {
        qp_linear_free(q);
        return qp_error_set(QP_ECORRUPT, "%s: does not fit the GGUF tensor", what);
    }
    uint8_t *out = dst;
    for (int64_t r = 0; r < v.rows; r++)
        for (int64_t g = 0; g < v.n_groups; g++) {
            const uint8_t *codes = v.codes + r * v.cols + g * 32;
            uint16_t s = v.scales[r * v.n_groups + g];
            int z = v.zeros[r * v.n_groups + g];
            uint8_t *b = out + (size_t)r * row_size + (size_t)g * qp_qtype_get((qp_ggml_type)type)->type_size;
            if (type == QP_GGML_Q8_0) {
                memcpy(b, &s, 2);
                for (int j = 0; j < 32; j++)
                    ((int8_t *)(b + 2))[j] = (int8_t)(codes[j] - z);
                continue;
            }
            memcpy(b, &s, 2);
            uint8_t *qs = b + 2;
            if (type == QP_GGML_Q4_1) {
                uint16_t m = qp_f32_to_f16(-qp_f16_to_f32(s) * (float)z);
                memcpy(b + 2, &m, 2);
                qs = b + 4;
            }
            for (int j = 0; j < 16; j++)
                qs[j] = (uint8_t)((codes[j] & 15) | ((codes[j + 16] & 15) << 4));
        }
    qp_linear_free(q);
    return 0;
}

/* convert_hf_to_gguf widens bf16 to f32 and gguf-py's BF16 rounds it back:
 * the same bits, except a signalling NaN comes back quiet (bit 6 set). */
static void bf16_quiet_nans(void *buf, uint64_t nelem)
{
    uint16_t *d = buf;
    for (uint64_t i = 0; i < nelem; i++)
        if ((d[i] & 0x7fffu) > 0x7f80u)
            d[i] |= 0x0040u;
}

/* Any dense dtype -> f32 -> bf16 with gguf-py's rounding (qp_f32_to_bf16:
 * nearest even, NaN quieted). */
static int to_bf16(export_ctx *x, const json_t *e, const void *buf, size_t len, void *dst, uint64_t nelem,
                   const char *what)
{
    if (nelem > x->f32_cap) {
        free(x->f32);
        x->f32 = qp_xmalloc((size_t)nelem * sizeof(float));
        x->f32_cap = (size_t)nelem;
    }
    int rc = qp_qtensor_to_f32(e, buf, len, x->f32, nelem, what);
    uint16_t *d = dst;
    for (uint64_t i = 0; rc == 0 && i < nelem; i++)
        d[i] = qp_f32_to_bf16(x->f32[i]);
    return rc;
}

/* The tensor's GGUF bytes: the cache object itself when it already holds
 * them (ggml blocks as quantized, F16 as encoded, a bf16 source's BF16 —
 * its NaNs quieted in place), lent until the next call; otherwise
 * converted into dst (every byte written). */
static int tensor_view(void *ud, const qp_gguf_llama_tensor *t, uint32_t type, void *dst, size_t nbytes,
                       const void **data)
{
    export_ctx *x = ud;
    const json_t *e = entry_of(x, t->hf_name);
    int rc = qp_cache_get_into(x->cache, qp_artifact_entry_digest(e), &x->held);
    if (rc)
        return rc;
    const void *buf = x->held.data;
    size_t len = x->held.len;
    char *what = qp_strfmt("%s: tensor '%s'", x->what, t->hf_name);
    uint64_t nelem = qp_qtensor_nelem(e);
    const char *fmt = json_string_value(json_object_get(e, "format"));
    *data = dst;
    if (type == QP_GGML_F32 || type == QP_GGML_F16 || type == QP_GGML_BF16) {
        const char *dt = json_string_value(json_object_get(e, "dtype"));
        if (type == QP_GGML_F16 && dt && !strcmp(dt, "F16") && len == nbytes) {
            *data = buf;
        } else if (type == QP_GGML_F32 && nbytes == nelem * sizeof(float)) {
            rc = qp_qtensor_to_f32(e, buf, len, dst, nelem, what);
        } else if (type == QP_GGML_BF16 && dt && !strcmp(dt, "BF16") && len == nbytes) {
            bf16_quiet_nans(x->held.data, nelem);
            *data = buf;
        } else if (type == QP_GGML_BF16 && nbytes == nelem * 2) {
            rc = to_bf16(x, e, buf, len, dst, nelem, what);
        } else {
            rc = qp_error_set(QP_ECORRUPT, "%s: size does not match the GGUF tensor", what);
        }
    } else if (fmt && !strcmp(fmt, "linear")) {
        rc = linear_to_blocks(buf, len, type, dst, nbytes, what);
    } else if (len == nbytes) {
        *data = buf;   /* ggml blocks exactly as quantized */
    } else {
        rc = qp_error_set(QP_ECORRUPT, "%s: %zu bytes stored, the GGUF tensor needs %zu", what, len, nbytes);
    }
    free(what);
    return rc;
}

static int tensor_data(void *ud, const qp_gguf_llama_tensor *t, uint32_t type, void *dst, size_t nbytes)
{
    const void *p = NULL;
    int rc = tensor_view(ud, t, type, dst, nbytes, &p);
    if (rc == 0 && p != dst)
        memcpy(dst, p, nbytes);
    return rc;
}

/* convert_hf_to_gguf reads tokenizer_config.json etc. from the model
 * directory: materialise the artifact's files under work_dir/<name>. */
static int materialise_files(const qp_artifact *a, qp_cache *cache, const char *dir)
{
    int rc = qp_mkdir_p(dir, 0755);
    for (size_t i = 0; rc == 0 && i < qp_artifact_count(a); i++) {
        const json_t *e = qp_artifact_entry(a, i);
        const char *name = qp_artifact_entry_name(e);
        if (strncmp(name, "files/", 6) != 0 || strchr(name + 6, '/'))
            continue;
        char *path = qp_path_join(dir, name + 6);
        rc = qp_cache_get_to_file(cache, qp_artifact_entry_digest(e), path);
        free(path);
    }
    return rc;
}

/* The tokenizer as convert_hf_to_gguf takes it (tokenizer.model, tried
 * first by its _set_vocab_sentencepiece, else tokenizer.json), which is the
 * order qp_tokenizer_load_dir follows.  *tok_name: the file read, for
 * messages. */
static int load_tokenizer(qp_tokenizer **tok, char **tok_name, const char *dir, const char *what)
{
    *tok_name = NULL;
    int rc = qp_tokenizer_load_dir(tok, dir);
    if (rc == QP_ENOTFOUND)
        return qp_error_set(QP_EFORMAT, "%s: the model has neither tokenizer.model nor tokenizer.json; GGUF export "
                                        "needs its tokenizer", what);
    if (rc)
        return rc;
    *tok_name = qp_path_join(dir, qp_tokenizer_model(*tok) == QP_TOK_MODEL_SPM ? "tokenizer.model" : "tokenizer.json");
    return 0;
}

int qp_package_gguf(const char *path, const qp_artifact *model, qp_cache *cache, const char *model_name,
                    unsigned file_type, const json_t *extra_keys, const char *work_dir, const char *what,
                    char file_digest[QP_HEX_LEN])
{
    qp_llama_config cfg;
    qp_gguf_llama_opts opts;
    qp_gguf_writer *w = NULL;
    qp_tokenizer *tok = NULL;
    char *tok_name = NULL;
    export_ctx x = {model, cache, what, file_type, NULL, 0, QP_BUF_INIT};
    int rc = qp_model_artifact_config(&cfg, model, cache, what);
    if (rc)
        return rc;
    char *dir = qp_path_join(work_dir, model_name);
    int have_opts = 0;
    if ((rc = materialise_files(model, cache, dir)) != 0 || (rc = load_tokenizer(&tok, &tok_name, dir, what)) != 0)
        goto done;
    if ((rc = qp_gguf_llama_opts_from_hf_dir(&opts, &cfg, dir)) != 0)
        goto done;
    have_opts = 1;
    /* F32, F16 and BF16 are convert_hf_to_gguf's own --outtype files; the
     * block types are llama-quantize's rewrite of its F32 file */
    opts.layout = file_type == 0 || file_type == 1 || file_type == FTYPE_MOSTLY_BF16 ? QP_GGUF_LAYOUT_CONVERT
                                                                                      : QP_GGUF_LAYOUT_QUANTIZE;
    opts.file_type = file_type;
    qp_gguf_llama_source src = {.ud = &x, .tensor_type = tensor_type, .tensor_data = tensor_data,
                                .tensor_view = tensor_view};
    if ((rc = qp_gguf_llama_export_tok_new(&w, path, &cfg, tok, tok_name, &src, &opts)) != 0)
        goto done;
    const char *k;
    json_t *v;
    /* in the caller's order: llama-quantize's quantize.imatrix.* first */
    json_object_foreach((json_t *)extra_keys, k, v) {
        if (json_is_string(v))
            rc = qp_gguf_writer_add_string(w, k, json_string_value(v), strlen(json_string_value(v)));
        else if (json_is_integer(v))
            rc = qp_gguf_writer_add_i32(w, k, (int32_t)json_integer_value(v));
        if (rc)
            break;
    }
    /* the digest is taken of the bytes as they are written: no second read */
    qp_gguf_writer_want_digest(w, file_digest);
    if (rc)
        qp_gguf_writer_abort(w);
    else
        rc = qp_gguf_writer_finish(w);
done:
    free(x.f32);
    qp_buf_free(&x.held);
    if (have_opts)
        qp_gguf_llama_opts_free(&opts);
    qp_tokenizer_free(tok);
    qp_rm_rf(dir);
    free(tok_name);
    free(dir);
    return rc;
}
