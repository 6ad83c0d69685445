/* bitsandbytes NF4 / LLM.int8 checkpoints (layout in stages/package_bnb.h,
 * docs/bitsandbytes.md).
 *
 * The artifact already holds bnb's own encoding: quant/nf4.h stores bnb's
 * packed codes, absmax (or the 8-bit absmax, absmax2 and offset of double
 * quantization), quant/int8.h bnb's int8 codes and SCB.  So the export is a
 * renaming of stored bytes plus the constant maps and the quant_state JSON;
 * nothing is re-quantized, and a bnb reader dequantizes exactly what
 * evaluate scored (tests/cli/test_package_bnb.sh checks it bit for bit).
 *
 * One pass: the dense dtype is chosen first (it is named in every
 * quant_state), then every tensor is streamed into the safetensors writer
 * (memory ≈ one tensor). */
#include "stages/package_bnb.h"
#include "stages/qmethods.h"
#include "stages/package_hf.h"
#include "stages/qtensor.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/tensor.h"
#include "model/safetensors.h"
#include "quant/int8.h"
#include "quant/nf4.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BNB_NESTED_BLOCK 256   /* bnb quantizes the absmax in blocks of 256 (quantize_4bit) */

typedef struct {
    int int8;                 /* 1: method int8; 0: nf4 */
    qp_dtype dense;           /* QP_DT_BF16, QP_DT_F16 or QP_DT_F32 */
    const char *torch_dtype;  /* "bfloat16", "float16", "float32" */
    int seen;                 /* quantized tensors written */
    int double_quant;         /* nf4: of the first tensor (all must agree) */
    int blocksize;
    char first[200];
    json_t *skip;             /* llm_int8_skip_modules: linear weights kept dense */
    size_t pass;              /* element size this pass writes (4, 2, then 1) */
} bnb_ctx;

/* ---- Python's float repr ---- */

void qp_bnb_py_float(char *out, size_t cap, double v)
{
    if (v == 0.0 || !isfinite(v)) {
        snprintf(out, cap, "%s", v == 0.0 ? (signbit(v) ? "-0.0" : "0.0") : isnan(v) ? "NaN"
                                                                          : v > 0 ? "Infinity" : "-Infinity");
        return;
    }
    /* the fewest significant digits that read back as v: the correctly
     * rounded p-digit decimal is the nearest, so the first p that works is
     * Python's choice */
    char e[48];
    for (int p = 1; p <= 17; p++) {
        snprintf(e, sizeof(e), "%.*e", p - 1, v);
        if (strtod(e, NULL) == v)
            break;
    }
    const char *s = e;
    int neg = *s == '-';
    s += neg;
    char dig[24];
    int nd = 0;
    for (; *s && *s != 'e'; s++)
        if (*s != '.')
            dig[nd++] = *s;
    dig[nd] = '\0';
    const int x = atoi(s + 1);   /* v = 0.d1d2… × 10^(x+1) */
    size_t k = 0;
#define PUT(c) (k + 1 < cap ? (void)(out[k++] = (char)(c)) : (void)0)
    if (neg)
        PUT('-');
    if (x >= -4 && x < 16) {
        if (x < 0) {
            PUT('0');
            PUT('.');
            for (int i = 0; i < -x - 1; i++)
                PUT('0');
            for (int i = 0; i < nd; i++)
                PUT(dig[i]);
        } else {
            for (int i = 0; i <= x; i++)
                PUT(i < nd ? dig[i] : '0');
            PUT('.');
            if (nd > x + 1)
                for (int i = x + 1; i < nd; i++)
                    PUT(dig[i]);
            else
                PUT('0');
        }
    } else {
        PUT(dig[0]);
        if (nd > 1) {
            PUT('.');
            for (int i = 1; i < nd; i++)
                PUT(dig[i]);
        }
        char ex[16];
        snprintf(ex, sizeof(ex), "e%c%02d", x < 0 ? '-' : '+', x < 0 ? -x : x);
        for (const char *c = ex; *c; c++)
            PUT(*c);
    }
#undef PUT
    out[k] = '\0';
}

/* ---- helpers ---- */

/* Adds base+suffix when its element size is this pass's (see write_weights). */
static int add(qp_st_writer *w, const bnb_ctx *bc, const char *base, const char *suffix, qp_dtype dt, int ndim,
               uint64_t d0, uint64_t d1, const void *data, size_t nbytes)
{
    if (qp_dtype_size(dt) != bc->pass)
        return 0;
    char *name = qp_strfmt("%s%s", base, suffix);
    uint64_t shape[2] = {d0, d1};
    int rc = qp_st_writer_add(w, name, dt, ndim, shape, data, nbytes);
    free(name);
    return rc;
}

/* "model.layers.0.mlp.up_proj.weight" -> base "model.layers.0.mlp.up_proj." (the
 * module with its dot); 0 when the name is not a ".weight". */
static int weight_base(char *base, size_t cap, const char *tname)
{
    size_t n = strlen(tname);
    if (n < 8 || strcmp(tname + n - 7, ".weight") != 0 || n - 6 >= cap)
        return 0;
    memcpy(base, tname, n - 6);
    base[n - 6] = '\0';
    return 1;
}

static const char *torch_name(qp_dtype dt)
{
    return dt == QP_DT_BF16 ? "bfloat16" : dt == QP_DT_F16 ? "float16" : "float32";
}

/* The dtype every dense tensor is written in: their own when all share one
 * 16-bit dtype, else F32 (which holds every BF16/F16/F32 value exactly). */
static qp_dtype dense_dtype(const qp_artifact *model)
{
    qp_dtype common = QP_DT_INVALID;
    for (size_t i = 0; i < qp_artifact_count(model); i++) {
        const json_t *e = qp_artifact_entry(model, i);
        const char *fmt = json_string_value(json_object_get(e, "format"));
        if (strncmp(qp_artifact_entry_name(e), "tensors/", 8) != 0 || (fmt && strcmp(fmt, "dense") != 0))
            continue;
        qp_dtype dt = qp_dtype_parse(json_string_value(json_object_get(e, "dtype")));
        if (common == QP_DT_INVALID)
            common = dt;
        else if (dt != common)
            return QP_DT_F32;
    }
    return common == QP_DT_BF16 || common == QP_DT_F16 ? common : QP_DT_F32;
}

/* ---- quantized tensors ---- */

/* The quant_state JSON exactly as bnb's pack_dict_to_tensor writes it:
 * json.dumps (", " and ": " separators) of the non-tensor items of
 * QuantState.as_dict in their insertion order. */
static char *quant_state_json(const bnb_ctx *bc, const qp_nf4_view *v)
{
    if (!v->double_quant)
        return qp_strfmt("{\"quant_type\": \"nf4\", \"blocksize\": %d, \"dtype\": \"%s\", \"shape\": [%lld, %lld]}",
                         v->blocksize, bc->torch_dtype, (long long)v->rows, (long long)v->cols);
    char off[48];
    qp_bnb_py_float(off, sizeof(off), (double)v->offset);
    return qp_strfmt("{\"quant_type\": \"nf4\", \"blocksize\": %d, \"dtype\": \"%s\", \"shape\": [%lld, %lld], "
                     "\"nested_blocksize\": %d, \"nested_dtype\": \"float32\", \"nested_offset\": %s}",
                     v->blocksize, bc->torch_dtype, (long long)v->rows, (long long)v->cols, BNB_NESTED_BLOCK, off);
}

/* f32 values as little-endian bytes (the host is little-endian: x86-64 / aarch64). */
static int add_f32(qp_st_writer *w, const bnb_ctx *bc, const char *base, const char *suffix, const float *v,
                   uint64_t n)
{
    return add(w, bc, base, suffix, QP_DT_F32, 1, n, 0, v, (size_t)n * 4);
}

/* X.weight (nf4) -> X.weight, .absmax, .quant_map[, .nested_absmax, .nested_quant_map], .quant_state… */
static int write_nf4(qp_st_writer *w, bnb_ctx *bc, const char *base, const char *tname, const void *buf, size_t len,
                     const char *twhat)
{
    qp_nf4 *q = NULL;
    char *qs = NULL;
    int rc = qp_nf4_deserialize(&q, buf, len, twhat);
    if (rc)
        return rc;
    qp_nf4_view v;
    qp_nf4_view_of(q, &v);
    if (!bc->seen) {
        bc->double_quant = v.double_quant;
        bc->blocksize = v.blocksize;
        snprintf(bc->first, sizeof(bc->first), "%s", tname);
    } else if (bc->double_quant != v.double_quant || bc->blocksize != v.blocksize) {
        rc = qp_error_set(QP_EUSAGE, "%s: blocksize %d, double_quant %s but '%s' has blocksize %d, double_quant %s; "
                                     "a bitsandbytes checkpoint has one quantization config (quantize without "
                                     "per-tensor overrides)", twhat, v.blocksize, v.double_quant ? "true" : "false",
                          bc->first, bc->blocksize, bc->double_quant ? "true" : "false");
        goto done;
    }
    const uint64_t nbytes = (uint64_t)(v.n + 1) / 2, B = (uint64_t)v.n_blocks, B2 = (uint64_t)v.n_blocks2;
    char *wbase = qp_strfmt("%sweight", base);
    /* weight u8 [(n+1)/2, 1]: bnb's packed storage (quantize_4bit's out) */
    rc = add(w, bc, wbase, "", QP_DT_U8, 2, nbytes, 1, v.codes, (size_t)nbytes);
    if (rc == 0 && v.double_quant)   /* absmax u8 [B]: the 8-bit codes of absmax − offset */
        rc = add(w, bc, wbase, ".absmax", QP_DT_U8, 1, B, 0, v.qabsmax, (size_t)B);
    else if (rc == 0)   /* absmax f32 [B] */
        rc = add_f32(w, bc, wbase, ".absmax", v.absmax, B);
    if (rc == 0)   /* quant_map f32 [16] */
        rc = add_f32(w, bc, wbase, ".quant_map", qp_nf4_levels(), 16);
    if (rc == 0 && v.double_quant) {
        /* nested_absmax f32 [B2], nested_quant_map f32 [256] */
        rc = add_f32(w, bc, wbase, ".nested_absmax", v.absmax2, B2);
        if (rc == 0)
            rc = add_f32(w, bc, wbase, ".nested_quant_map", qp_nf4_dynamic_map(), 256);
    }
    if (rc == 0) {   /* quant_state u8 [len]: the JSON's UTF-8 bytes */
        qs = quant_state_json(bc, &v);
        rc = add(w, bc, wbase, ".quant_state.bitsandbytes__nf4", QP_DT_U8, 1, strlen(qs), 0, qs, strlen(qs));
    }
    free(wbase);
done:
    free(qs);
    qp_nf4_free(q);
    return rc;
}

/* X.weight (int8) -> X.weight i8 [out, in], X.SCB f32 [out], X.weight_format u8 [] */
static int write_int8(qp_st_writer *w, const bnb_ctx *bc, const char *base, const void *buf, size_t len,
                      const char *twhat)
{
    qp_int8 *q = NULL;
    int rc = qp_int8_deserialize(&q, buf, len, twhat);
    if (rc)
        return rc;
    qp_int8_view v;
    qp_int8_view_of(q, &v);
    const uint8_t row_format = 0;   /* bnb's "row" layout, the only one it still loads */
    const uint64_t R = (uint64_t)v.rows, C = (uint64_t)v.cols;
    rc = add(w, bc, base, "weight", QP_DT_I8, 2, R, C, v.codes, (size_t)(R * C));
    if (rc == 0)
        rc = add(w, bc, base, "SCB", QP_DT_F32, 1, R, 0, v.absmax, (size_t)R * 4);
    if (rc == 0)
        rc = add(w, bc, base, "weight_format", QP_DT_U8, 0, 0, 0, &row_format, 1);
    qp_int8_free(q);
    return rc;
}

/* ---- dense tensors ---- */

/* A dense tensor in bc->dense: the stored bytes when the dtype matches,
 * else widened to F32 (exact). */
static int write_dense(qp_st_writer *w, const bnb_ctx *bc, const json_t *e, const char *tname, const void *buf,
                       size_t len, const char *twhat)
{
    const json_t *jshape = json_object_get(e, "shape");
    const int ndim = (int)json_array_size(jshape);
    const uint64_t nelem = qp_qtensor_nelem(e);
    uint64_t shape[QP_MAX_DIMS];
    if (ndim > QP_MAX_DIMS || (nelem == 0 && ndim > 0))
        return qp_error_set(QP_ECORRUPT, "%s: malformed shape", twhat);
    for (int i = 0; i < ndim; i++)
        shape[i] = (uint64_t)json_integer_value(json_array_get(jshape, (size_t)i));
    const qp_dtype dt = qp_dtype_parse(json_string_value(json_object_get(e, "dtype")));
    if (dt == bc->dense) {
        if (len != nelem * qp_dtype_size(dt))
            return qp_error_set(QP_ECORRUPT, "%s: %zu bytes stored, %s %llu elements need %llu", twhat, len,
                                qp_dtype_name(dt), (unsigned long long)nelem,
                                (unsigned long long)(nelem * qp_dtype_size(dt)));
        return qp_st_writer_add(w, tname, dt, ndim, shape, buf, len);
    }
    /* only F32 is ever a conversion target (dense_dtype) */
    float *f = qp_xmalloc(nelem * sizeof(float) + 4);
    int rc = qp_qtensor_to_f32(e, buf, len, f, nelem, twhat);
    if (rc == 0)
        rc = qp_st_writer_add(w, tname, QP_DT_F32, ndim, shape, f, nelem * 4);
    free(f);
    return rc;
}

/* A dense 2-D ".weight" that transformers would make a bnb Linear unless
 * told not to: every one but the embeddings (nn.Embedding is never
 * converted).  Its module goes into llm_int8_skip_modules. */
static void note_dense_linear(bnb_ctx *bc, const json_t *e, const char *tname)
{
    char base[256];
    if (json_array_size(json_object_get(e, "shape")) != 2 || !weight_base(base, sizeof(base), tname) ||
        strstr(tname, "embed"))
        return;
    base[strlen(base) - 1] = '\0';
    json_array_append_new(bc->skip, json_string(base));
}

/* One tensor of the artifact, in this pass: a dense tensor in the pass of
 * its output dtype, a quantized one in the f32 pass (absmax, maps, SCB)
 * and the byte pass (codes, quant_state). */
static int write_entry(qp_st_writer *w, qp_cache *cache, bnb_ctx *bc, const json_t *e, const char *tname,
                       const char *what)
{
    const char *want = bc->int8 ? "int8" : "nf4";
    const char *fmt = json_string_value(json_object_get(e, "format"));
    const int dense = !fmt || !strcmp(fmt, "dense");
    if (dense ? qp_dtype_size(bc->dense) != bc->pass : bc->pass == 2)
        return 0;
    char *twhat = qp_strfmt("%s: tensor '%s'", what, tname);
    char base[256];
    void *buf = NULL;
    size_t len = 0;
    int rc = 0;
    if (!dense && strcmp(fmt, want) != 0) {
        rc = qp_error_set(QP_EUSAGE, "%s: is %s-quantized in a method %s model; a bitsandbytes checkpoint holds one "
                                     "kind (quantize without per-tensor overrides)", twhat, fmt, want);
        goto done;
    }
    if (!dense && (json_array_size(json_object_get(e, "shape")) != 2 || !weight_base(base, sizeof(base), tname))) {
        rc = qp_error_set(QP_EFORMAT, "%s: a bitsandbytes-quantized tensor must be a 2-D Linear '.weight'; this one "
                                      "has no place in the checkpoint", twhat);
        goto done;
    }
    if ((rc = qp_cache_get(cache, qp_artifact_entry_digest(e), &buf, &len)) != 0) {
        qp_error_prefix("%s", twhat);
        goto done;
    }
    if (dense) {
        note_dense_linear(bc, e, tname);
        rc = write_dense(w, bc, e, tname, buf, len, twhat);
        goto done;
    }
    rc = bc->int8 ? write_int8(w, bc, base, buf, len, twhat) : write_nf4(w, bc, base, tname, buf, len, twhat);
    bc->seen += bc->pass == 1;
done:
    free(buf);
    free(twhat);
    return rc;
}

/* Three passes over the tensors — 4-byte elements, then 2-byte, then
 * bytes — so every tensor's data is aligned to its element size, as the
 * safetensors library's own writer arranges it (torch views the mapped
 * bytes as the dtype, which needs an aligned offset).  A quantized tensor
 * is read twice (its f32 and its byte parts); a dense one once. */
static int write_weights(const char *path, const qp_artifact *model, qp_cache *cache, bnb_ctx *bc, const char *what)
{
    static const size_t passes[] = {4, 2, 1};
    qp_st_writer *w = NULL;
    int rc = qp_st_writer_new(&w, path);
    if (rc == 0)
        rc = qp_st_writer_set_metadata(w, "format", "pt");   /* transformers refuses other values */
    for (size_t p = 0; rc == 0 && p < sizeof(passes) / sizeof(passes[0]); p++) {
        bc->pass = passes[p];
        for (size_t i = 0; rc == 0 && i < qp_artifact_count(model); i++) {
            const json_t *e = qp_artifact_entry(model, i);
            const char *name = qp_artifact_entry_name(e);
            if (strncmp(name, "tensors/", 8) == 0)
                rc = write_entry(w, cache, bc, e, name + 8, what);
        }
    }
    if (rc == 0 && !bc->seen)
        rc = qp_error_set(QP_EUSAGE, "%s: the model has no %s-quantized tensor; nothing for bitsandbytes to load",
                          what, bc->int8 ? "int8" : "nf4");
    if (w && rc)
        qp_st_writer_abort(w);
    else if (w)
        rc = qp_st_writer_finish(w);
    return rc;
}

/* ---- config.json ---- */

/* BitsAndBytesConfig(...).to_dict(), keys sorted as save_pretrained writes
 * them (to_json_string sort_keys=True).  An int8 export keeps the 4-bit
 * fields at their defaults, as to_dict does (quant type fp4, compute dtype
 * float32). */
static json_t *quant_config(const bnb_ctx *bc)
{
    const int b4 = !bc->int8;
    return json_pack("{s:b, s:b, s:s, s:s, s:s, s:b, s:b, s:b, s:O, s:f, s:b, s:b, s:s}",
                     "_load_in_4bit", b4, "_load_in_8bit", !b4,
                     "bnb_4bit_compute_dtype", b4 ? bc->torch_dtype : "float32",
                     "bnb_4bit_quant_storage", "uint8",
                     "bnb_4bit_quant_type", b4 ? "nf4" : "fp4",
                     "bnb_4bit_use_double_quant", b4 && bc->double_quant,
                     "llm_int8_enable_fp32_cpu_offload", 0,
                     "llm_int8_has_fp16_weight", 0,
                     "llm_int8_skip_modules", bc->skip,
                     "llm_int8_threshold", 6.0,
                     "load_in_4bit", b4, "load_in_8bit", !b4,
                     "quant_method", "bitsandbytes");
}

static int write_config(const char *dir, const qp_artifact *model, qp_cache *cache, bnb_ctx *bc, const char *what)
{
    json_t *cfg = NULL, *qc = NULL;
    int rc = qp_package_read_config(&cfg, model, cache, what);
    if (rc)
        goto done;
    /* a tied lm_head is the embedding (dense) but transformers builds a
     * Linear for it: keep it out of the conversion, as its own default does */
    if (json_is_true(json_object_get(cfg, "tie_word_embeddings")) && !qp_artifact_find(model, "tensors/lm_head.weight"))
        json_array_append_new(bc->skip, json_string("lm_head"));
    qc = quant_config(bc);
    if (!qc) {
        rc = qp_error_set(QP_ERROR, "%s: cannot build quantization_config", what);
        goto done;
    }
    qp_package_set_torch_dtype(cfg, bc->torch_dtype);
    json_object_set(cfg, "quantization_config", qc);
    rc = qp_package_write_json(dir, "config.json", cfg, what);
done:
    json_decref(cfg);
    json_decref(qc);
    return rc;
}

/* ---- entry ---- */

int qp_package_bnb(const char *dir, const qp_artifact *model, qp_cache *cache, const char *what)
{
    const json_t *meta = qp_artifact_meta_c(model);
    const char *method = json_string_value(json_object_get(meta, "method"));
    if (!method)
        return qp_error_set(QP_EUSAGE, "%s: the model is not quantized; format bitsandbytes takes a model quantized "
                                       "with method nf4 or int8 (quantize it first, or package it as gguf)", what);
    if (strcmp(method, "nf4") != 0 && strcmp(method, "int8") != 0) {
        const qp_quant_method *qm = qp_quant_method_find(method);
        const int linear = qm && qm->plan == qp_qm_linear_plan;   /* rtn, gptq, awq, qat */
        return qp_error_set(QP_EUSAGE, "%s: method %s has no bitsandbytes form; format bitsandbytes takes method nf4 "
                                       "or int8 (package this model as %s, or quantize with method nf4 or int8)",
                            what, method, linear ? "gptq, awq or gguf" : "gguf");
    }
    if (!qp_artifact_find(model, "files/config.json"))
        return qp_error_set(QP_EFORMAT, "%s: the model has no config.json; a Hugging Face checkpoint needs one", what);
    bnb_ctx bc = {.int8 = !strcmp(method, "int8"), .skip = json_array()};
    bc.dense = dense_dtype(model);
    bc.torch_dtype = torch_name(bc.dense);
    char *path = qp_path_join(dir, "model.safetensors");
    int rc = write_weights(path, model, cache, &bc, what);
    free(path);
    if (rc == 0)
        rc = write_config(dir, model, cache, &bc, what);
    if (rc == 0)
        rc = qp_package_copy_files(dir, model, cache, what);
    json_decref(bc.skip);
    return rc;
}
