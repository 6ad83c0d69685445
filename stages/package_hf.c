/* GPTQ v1 / AutoAWQ GEMM checkpoints (layouts in stages/package_hf.h).
 *
 * One pass over the artifact's tensors, streamed into the safetensors
 * writer (memory ≈ one tensor and its packed form).  The checkpoint has ONE
 * quantization config, so every linear tensor must share bits, group size
 * and sym; the first linear tensor sets them.  The config files are written
 * after the weights, when act-order (any non-default g_idx) is known.
 *
 * Dense tensors become F16 whatever their source dtype: GPTQ/AWQ kernels
 * compute in fp16 (transformers defaults GPTQ/AWQ models to float16, vLLM's
 * AWQ kernel accepts only float16), so config.json's torch_dtype is set to
 * "float16" and the file matches it.  A BF16/F32 value beyond fp16's range
 * is an error rather than an inf in the checkpoint. */
#include "stages/package_hf.h"
#include "stages/package_bnb.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/version.h"
#include "model/safetensors.h"
#include "common/tensor.h"
#include "quant/linear.h"
#include "stages/qtensor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The quantization config shared by every linear tensor of the checkpoint. */
typedef struct {
    int awq;
    int seen;              /* a linear tensor was found */
    char first[200];       /* the tensor that set the config */
    int bits, group_size;  /* group_size -1: one group per row */
    int sym, mse;
    int desc_act;          /* some tensor has a non-default g_idx */
    const char *fmt_name;  /* "GPTQ" / "AWQ GEMM" for messages */
} hf_config;

static int is_default_g_idx(const qp_linear_view *v)
{
    for (int64_t c = 0; c < v->cols; c++)
        if (v->g_idx[c] != (int32_t)(c / v->group_size))
            return 0;
    return 1;
}

static int add_tensor(qp_st_writer *w, const char *base, const char *suffix, qp_dtype dt, int ndim, uint64_t d0,
                      uint64_t d1, const void *data, size_t nbytes)
{
    char *name = qp_strfmt("%s.%s", base, suffix);
    uint64_t shape[2] = {d0, d1};
    int rc = qp_st_writer_add(w, name, dt, ndim, shape, data, nbytes);
    free(name);
    return rc;
}

/* The checks of one linear tensor against the format and the config. */
static int check_linear(hf_config *hc, const char *tname, const qp_linear_view *v, int gs, int custom_g_idx,
                        const char *what)
{
    if (hc->awq && v->bits != 4)
        return qp_error_set(QP_EUSAGE, "%s: tensor '%s' has %d-bit codes; AWQ GEMM checkpoints are 4-bit only "
                                       "(quantize with bits: 4, or package as gptq)", what, tname, v->bits);
    if (hc->awq && custom_g_idx)
        return qp_error_set(QP_EUSAGE, "%s: tensor '%s' has an act-order g_idx; AWQ GEMM checkpoints have no "
                                       "g_idx (quantize without act_order, or package as gptq)", what, tname);
    if (!hc->awq && !qp_hf_gptq_bits_ok(v->bits))
        return qp_error_set(QP_EUSAGE, "%s: tensor '%s' has %d-bit codes; GPTQ checkpoints hold 2, 3, 4 or 8 bits "
                                       "(quantize with one of those, or package as gguf)", what, tname, v->bits);
    if (hc->awq ? v->rows % 8 != 0 : (v->rows * v->bits) % 32 != 0 || (v->cols * v->bits) % 32 != 0)
        return qp_error_set(QP_EUSAGE, "%s: tensor '%s' [%lld x %lld]: %s packs %d-bit codes into 32-bit words, "
                                       "which needs %s a multiple of %d (package as gguf)",
                            what, tname, (long long)v->rows, (long long)v->cols, hc->fmt_name, v->bits,
                            hc->awq ? "out_features" : "in_features and out_features",
                            hc->awq ? 8 : 32 / (v->bits == 3 ? 1 : v->bits));
    if (!hc->seen) {
        hc->seen = 1;
        snprintf(hc->first, sizeof(hc->first), "%s", tname);
        hc->bits = v->bits;
        hc->group_size = gs;
        hc->sym = v->sym;
        hc->mse = v->mse;
    } else if (hc->bits != v->bits || hc->group_size != gs || hc->sym != v->sym) {
        return qp_error_set(QP_EUSAGE, "%s: tensor '%s' is %d-bit, group_size %d, %s but '%s' is %d-bit, "
                                       "group_size %d, %s; a %s checkpoint has one quantization config (quantize "
                                       "without per-tensor overrides, or package as gguf)",
                            what, tname, v->bits, gs, v->sym ? "sym" : "asym", hc->first, hc->bits,
                            hc->group_size, hc->sym ? "sym" : "asym", hc->fmt_name);
    }
    hc->desc_act |= custom_g_idx;
    return 0;
}

/* X.weight (linear) -> X.qweight, X.qzeros, X.scales (+ X.g_idx). */
static int write_linear(qp_st_writer *w, hf_config *hc, const json_t *e, const char *tname, const void *buf,
                        size_t len, const char *what)
{
    qp_linear *q = NULL;
    uint32_t *qweight = NULL, *qzeros = NULL;
    uint16_t *scales = NULL;
    char *base = NULL;
    char *twhat = qp_strfmt("%s: tensor '%s'", what, tname);
    size_t n = strlen(tname);
    int rc;
    if (n < 8 || strcmp(tname + n - 7, ".weight") != 0) {
        rc = qp_error_set(QP_EFORMAT, "%s: a linear-quantized tensor must be a '.weight'; %s has no place for it",
                          twhat, hc->fmt_name);
        goto done;
    }
    if ((rc = qp_linear_deserialize(&q, buf, len, twhat)) != 0)
        goto done;
    qp_linear_view v;
    qp_linear_view_of(q, &v);
    int64_t rows, cols;
    qp_qtensor_rows_cols(e, &rows, &cols);
    if (json_array_size(json_object_get(e, "shape")) != 2 || rows != v.rows || cols != v.cols) {
        rc = qp_error_set(QP_ECORRUPT, "%s: the entry's shape does not match the stored [%lld x %lld] weight", twhat,
                          (long long)v.rows, (long long)v.cols);
        goto done;
    }
    if ((rc = check_linear(hc, tname, &v, v.group_size_given, !is_default_g_idx(&v), what)) != 0)
        goto done;
    base = qp_xstrdup(tname);
    base[n - 7] = '\0';
    const uint64_t R = (uint64_t)v.rows, C = (uint64_t)v.cols, G = (uint64_t)v.n_groups;
    /* qweight: gptq [C·bits/32, R], awq [C, R/8]; qzeros: gptq [G, R·bits/32], awq [G, R/8] */
    const uint64_t qw0 = hc->awq ? C : C * (uint64_t)v.bits / 32, qw1 = hc->awq ? R / 8 : R;
    const uint64_t qz1 = hc->awq ? R / 8 : R * (uint64_t)v.bits / 32;
    qweight = qp_xmalloc(qw0 * qw1 * 4 + 4);
    qzeros = qp_xmalloc(G * qz1 * 4 + 4);
    scales = qp_xmalloc(G * R * 2 + 2);
    if (hc->awq) {
        qp_hf_pack_awq_qweight(qweight, v.codes, v.rows, v.cols);
        qp_hf_pack_awq_qzeros(qzeros, v.zeros, v.rows, v.n_groups);
    } else {
        qp_hf_pack_gptq_qweight(qweight, v.codes, v.rows, v.cols, v.bits);
        qp_hf_pack_gptq_qzeros(qzeros, v.zeros, v.rows, v.n_groups, v.bits);
    }
    qp_hf_transpose_u16(scales, v.scales, v.rows, v.n_groups);
    /* tensors in name order: g_idx, qweight, qzeros, scales */
    if (!hc->awq)
        rc = add_tensor(w, base, "g_idx", QP_DT_I32, 1, C, 0, v.g_idx, C * 4);
    if (rc == 0)
        rc = add_tensor(w, base, "qweight", QP_DT_I32, 2, qw0, qw1, qweight, qw0 * qw1 * 4);
    if (rc == 0)
        rc = add_tensor(w, base, "qzeros", QP_DT_I32, 2, G, qz1, qzeros, G * qz1 * 4);
    if (rc == 0)
        rc = add_tensor(w, base, "scales", QP_DT_F16, 2, G, R, scales, G * R * 2);
done:
    qp_linear_free(q);
    free(qweight);
    free(qzeros);
    free(scales);
    free(base);
    free(twhat);
    return rc;
}

/* A dense tensor as F16 under its own name. */
static int write_dense(qp_st_writer *w, const json_t *e, const char *tname, const void *buf, size_t len,
                       const char *what)
{
    const char *dt = json_string_value(json_object_get(e, "dtype"));
    const json_t *jshape = json_object_get(e, "shape");
    uint64_t shape[QP_MAX_DIMS], nelem = qp_qtensor_nelem(e);
    int ndim = (int)json_array_size(jshape);
    char *twhat = qp_strfmt("%s: tensor '%s'", what, tname);
    float *f = NULL;
    uint16_t *h = NULL;
    int rc = 0;
    if (ndim > QP_MAX_DIMS || (nelem == 0 && ndim > 0)) {
        rc = qp_error_set(QP_ECORRUPT, "%s: malformed shape", twhat);
        goto done;
    }
    for (int i = 0; i < ndim; i++)
        shape[i] = (uint64_t)json_integer_value(json_array_get(jshape, (size_t)i));
    if (dt && !strcmp(dt, "F16")) {
        if (len != nelem * 2)
            rc = qp_error_set(QP_ECORRUPT, "%s: %zu bytes stored, F16 %llu elements need %llu", twhat, len,
                              (unsigned long long)nelem, (unsigned long long)nelem * 2);
        else
            rc = qp_st_writer_add(w, tname, QP_DT_F16, ndim, shape, buf, len);
        goto done;
    }
    f = qp_xmalloc(nelem * sizeof(float) + 4);
    h = qp_xmalloc(nelem * 2 + 2);
    if ((rc = qp_qtensor_to_f32(e, buf, len, f, nelem, twhat)) != 0)
        goto done;
    for (uint64_t k = 0; k < nelem; k++) {
        h[k] = qp_f32_to_f16(f[k]);
        if (isfinite(f[k]) && (h[k] & 0x7fffu) == 0x7c00u) {
            rc = qp_error_set(QP_EUSAGE, "%s: element %llu = %g is beyond float16's range, which GPTQ/AWQ "
                                         "checkpoints use (package as gguf)", twhat, (unsigned long long)k,
                              (double)f[k]);
            goto done;
        }
    }
    rc = qp_st_writer_add(w, tname, QP_DT_F16, ndim, shape, h, nelem * 2);
done:
    free(f);
    free(h);
    free(twhat);
    return rc;
}

static int write_weights(const char *path, const qp_artifact *model, qp_cache *cache, hf_config *hc,
                         const char *what)
{
    qp_st_writer *w = NULL;
    int rc = qp_st_writer_new(&w, path);
    if (rc == 0)
        rc = qp_st_writer_set_metadata(w, "format", "pt");   /* transformers refuses other values */
    for (size_t i = 0; rc == 0 && i < qp_artifact_count(model); i++) {
        const json_t *e = qp_artifact_entry(model, i);
        const char *name = qp_artifact_entry_name(e);
        if (strncmp(name, "tensors/", 8) != 0)
            continue;
        const char *tname = name + 8;
        const char *fmt = json_string_value(json_object_get(e, "format"));
        int linear = fmt && !strcmp(fmt, "linear");
        if (fmt && !linear && strcmp(fmt, "dense") != 0) {
            rc = qp_error_set(QP_EUSAGE, "%s: tensor '%s' is %s-quantized; %s checkpoints hold linear (RTN, GPTQ, "
                                         "AWQ, QAT) tensors only (quantize with method rtn, gptq, awq or qat, or "
                                         "package as gguf)", what, tname, fmt, hc->fmt_name);
            break;
        }
        void *buf = NULL;
        size_t len = 0;
        if ((rc = qp_cache_get(cache, qp_artifact_entry_digest(e), &buf, &len)) != 0) {
            qp_error_prefix("%s: tensor '%s'", what, tname);
            break;
        }
        rc = linear ? write_linear(w, hc, e, tname, buf, len, what) : write_dense(w, e, tname, buf, len, what);
        free(buf);
    }
    if (rc == 0 && !hc->seen)
        rc = qp_error_set(QP_EUSAGE, "%s: the model has no linear-quantized tensor; %s export needs a model "
                                     "quantized with method rtn, gptq, awq or qat", what, hc->fmt_name);
    if (w && rc)
        qp_st_writer_abort(w);
    else if (w)
        rc = qp_st_writer_finish(w);
    return rc;
}

/* ---- config files ---- */

static double param_num(const json_t *params, const char *k, double def)
{
    const json_t *v = json_object_get(params, k);
    return json_is_number(v) ? json_number_value(v) : def;
}

static int param_bool(const json_t *params, const char *k, int def)
{
    const json_t *v = json_object_get(params, k);
    return json_is_boolean(v) ? json_is_true(v) : def;
}

/* quantization_config, in the key order GPTQModel / AutoAWQ write it. */
static json_t *quant_config(const hf_config *hc, const qp_artifact *model)
{
    const json_t *meta = qp_artifact_meta_c(model);
    const json_t *params = json_object_get(meta, "params");
    const char *method = json_string_value(json_object_get(meta, "method"));
    if (hc->awq)
        return json_pack("{s:s, s:b, s:i, s:i, s:s, s:n}", "quant_method", "awq", "zero_point", !hc->sym,
                         "group_size", hc->group_size, "bits", hc->bits, "version", "gemm",
                         "modules_to_not_convert");
    double damp = param_num(params, "damp_percent", 0.01);
    int static_groups = param_bool(params, "static_groups", 0);
    int true_seq = param_bool(params, "true_sequential", 1);
    char *quantizer = qp_strfmt("qpipe:%s", QP_VERSION);
    /* AutoGPTQ / transformers read damp_percent, static_groups and
     * true_sequential at the top level, GPTQModel keeps them in meta */
    json_t *qc = json_pack("{s:i, s:i, s:b, s:b, s:b, s:f, s:b, s:b, s:s, s:s, s:s, s:{s:[s], s:f, s:b, s:b, s:b, "
                           "s:s}}",
                           "bits", hc->bits, "group_size", hc->group_size, "desc_act", hc->desc_act, "sym", hc->sym,
                           "lm_head", 0, "damp_percent", damp, "static_groups", static_groups, "true_sequential",
                           true_seq, "quant_method", "gptq", "checkpoint_format", "gptq", "pack_dtype", "int32",
                           "meta", "quantizer", quantizer, "damp_percent", damp, "static_groups", static_groups,
                           "true_sequential", true_seq, "mse", hc->mse, "qpipe_method", method ? method : "unknown");
    free(quantizer);
    return qc;
}

/* Fewest significant digits (<= 17) that give back every real of the tree,
 * so 1e-05 is written 1e-5 instead of 1.0000000000000001e-5. */
static int real_precision(const json_t *j)
{
    int p = 1;
    if (json_is_real(j)) {
        double v = json_real_value(j);
        char buf[40];
        for (p = 1; p < 17; p++) {
            snprintf(buf, sizeof(buf), "%.*g", p, v);
            if (strtod(buf, NULL) == v)
                break;
        }
        /* and every integer digit, so 10000.0 is not written 1e4 */
        int digits = 1;
        for (double a = fabs(v); a >= 10.0 && digits < 17; a /= 10.0)
            digits++;
        p = digits > p ? digits : p;
    } else if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v) {
            int q = real_precision(v);
            p = q > p ? q : p;
        }
    } else if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) {
            int q = real_precision(v);
            p = q > p ? q : p;
        }
    }
    return p;
}

int qp_package_write_json(const char *dir, const char *name, const json_t *j, const char *what)
{
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_REAL_PRECISION(real_precision(j)));
    if (!text)
        return qp_error_set(QP_ERROR, "%s: cannot serialise %s", what, name);
    char *with_nl = qp_strfmt("%s\n", text);
    char *path = qp_path_join(dir, name);
    int rc = qp_write_file_atomic(path, with_nl, strlen(with_nl), NULL);
    free(path);
    free(with_nl);
    free(text);
    return rc;
}

int qp_package_read_config(json_t **out, const qp_artifact *model, qp_cache *cache, const char *what)
{
    void *buf = NULL;
    size_t len = 0;
    *out = NULL;
    int rc = qp_artifact_read(model, cache, "files/config.json", &buf, &len);
    if (rc) {
        if (rc == QP_ENOTFOUND)
            return qp_error_set(QP_EFORMAT, "%s: the model has no config.json; a Hugging Face checkpoint needs one",
                                what);
        qp_error_prefix("%s: config.json", what);
        return rc;
    }
    json_error_t err;
    json_t *cfg = json_loadb(buf, len, 0, &err);
    free(buf);
    if (!json_is_object(cfg)) {
        json_decref(cfg);
        return qp_error_set(QP_EFORMAT, "%s: config.json line %d: %s", what, err.line,
                            cfg ? "not a JSON object" : err.text);
    }
    *out = cfg;
    return 0;
}

void qp_package_set_torch_dtype(json_t *cfg, const char *torch_dtype)
{
    json_object_set_new(cfg, "torch_dtype", json_string(torch_dtype));
    if (json_object_get(cfg, "dtype"))   /* newer transformers' name for it */
        json_object_set_new(cfg, "dtype", json_string(torch_dtype));
}

static int write_configs(const char *dir, const qp_artifact *model, qp_cache *cache, const hf_config *hc,
                         const char *what)
{
    json_t *cfg = NULL, *qc = NULL;
    int rc = qp_package_read_config(&cfg, model, cache, what);
    if (rc)
        goto done;
    qc = quant_config(hc, model);
    if (!qc) {
        rc = qp_error_set(QP_ERROR, "%s: cannot build quantization_config", what);
        goto done;
    }
    qp_package_set_torch_dtype(cfg, "float16");
    json_object_set(cfg, "quantization_config", qc);
    rc = qp_package_write_json(dir, "config.json", cfg, what);
    if (rc == 0 && !hc->awq)   /* GPTQModel reads quantize_config.json first */
        rc = qp_package_write_json(dir, "quantize_config.json", qc, what);
done:
    json_decref(cfg);
    json_decref(qc);
    return rc;
}

/* Files of the source model that do not belong in the quantized one: its
 * weights (replaced by model.safetensors), our own outputs, quantization
 * configs of some earlier checkpoint, and its README.md — the card of the
 * unquantized model (dtype, size, how it was made), which hubs show as the
 * package's own; the package writes its own README.md, the Hub's card. */
static int skip_file(const char *name)
{
    static const char *exact[] = {"config.json", "model.safetensors", "quantize_config.json", "quant_config.json",
                                  "README.md", NULL};
    static const char *suffix[] = {".safetensors", ".safetensors.index.json", ".bin", ".bin.index.json", ".pt",
                                   ".pth", ".gguf", NULL};
    for (int i = 0; exact[i]; i++)
        if (!strcmp(name, exact[i]))
            return 1;
    size_t n = strlen(name);
    for (int i = 0; suffix[i]; i++) {
        size_t m = strlen(suffix[i]);
        if (n >= m && !strcmp(name + n - m, suffix[i]))
            return 1;
    }
    return name[0] == '.' || name[0] == '\0';
}

int qp_package_copy_files(const char *dir, const qp_artifact *model, qp_cache *cache, const char *what)
{
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < qp_artifact_count(model); i++) {
        const json_t *e = qp_artifact_entry(model, i);
        const char *name = qp_artifact_entry_name(e);
        if (strncmp(name, "files/", 6) != 0 || strchr(name + 6, '/') || skip_file(name + 6))
            continue;
        char *path = qp_path_join(dir, name + 6);
        if ((rc = qp_cache_get_to_file(cache, qp_artifact_entry_digest(e), path)) != 0)
            qp_error_prefix("%s: %s", what, name);
        free(path);
    }
    return rc;
}

int qp_package_hf(const char *dir, const qp_artifact *model, qp_cache *cache, qp_hf_format format, const char *what)
{
    if (format == QP_HF_BNB)
        return qp_package_bnb(dir, model, cache, what);
    hf_config hc = {0};
    hc.awq = format == QP_HF_AWQ;
    hc.fmt_name = hc.awq ? "AWQ GEMM" : "GPTQ";
    if (!qp_artifact_find(model, "files/config.json"))
        return qp_error_set(QP_EFORMAT, "%s: the model has no config.json; a Hugging Face checkpoint needs one", what);
    char *path = qp_path_join(dir, "model.safetensors");
    int rc = write_weights(path, model, cache, &hc, what);
    free(path);
    if (rc == 0)
        rc = write_configs(dir, model, cache, &hc, what);
    if (rc == 0)
        rc = qp_package_copy_files(dir, model, cache, what);
    return rc;
}
