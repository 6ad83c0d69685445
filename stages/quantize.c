/* quantize: turns a model artifact into a quantized model artifact, one
 * tensor at a time (memory ≈ one f32 tensor + its packed form).  Tensors
 * that stay at source precision keep their cache objects (same digest).
 * Reports bits per weight, bytes and relative reconstruction error
 * ‖W−Ŵ‖/‖W‖ per tensor and in total; the worst tensors go to the summary. */
#include "stages/kinds.h"
#include "stages/qtensor.h"
#include "stages/quant_plan.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/tensor.h"
#include "quant/imatrix.h"
#include "quant/linear.h"
#include "quant/int8.h"
#include "quant/nf4.h"
#include "model/gguf_llama.h"
#include "stages/model_load.h"
#include "stages/quant_mixed.h"
#include "stages/quant_seq.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const qp_param_spec params[] = {
    {"method", QP_P_STRING, NULL, "rtn|gguf|nf4|int8|gptq|awq|mixed", 0, -1, QP_PF_REQUIRED,
     "quantization algorithm (mixed: sensitivity-driven llama.cpp types per tensor)"},
    {"bits", QP_P_INT, "4", NULL, 2, 8, 0, "bits per weight (rtn, gptq, awq)"},
    {"group_size", QP_P_INT, "128", "-1|32|64|128|256", 0, -1, 0,
     "weights per scale along the input dimension (-1 = per output channel)"},
    {"sym", QP_P_BOOL, "false", NULL, 0, -1, 0, "symmetric grid (no zero point)"},
    {"type", QP_P_STRING, "Q4_K_M",
     "Q8_0|Q4_0|Q4_1|Q5_0|Q5_1|Q2_K|Q2_K_S|Q3_K|Q3_K_S|Q3_K_M|Q3_K_L|Q4_K|Q4_K_S|Q4_K_M|Q5_K|Q5_K_S|Q5_K_M|"
     "Q6_K|IQ4_NL|F16|BF16", 0, -1, 0,
     "method gguf: llama-quantize's file type (Q4_K = Q4_K_M, as there); with pure: the block type"},
    {"imatrix", QP_P_PATH, "", NULL, 0, -1, QP_PF_CONTENT,
     "llama.cpp imatrix.dat to weight the error (instead of a calibrate input)"},
    {"mse", QP_P_BOOL, "false", NULL, 0, -1, 0, "MSE-optimal clipping search per group"},
    {"damp_percent", QP_P_NUMBER, "0.01", NULL, 0, 1, 0, "GPTQ dampening, fraction of mean diag(H)"},
    {"act_order", QP_P_BOOL, "false", NULL, 0, -1, 0, "GPTQ: columns in descending diag(H)"},
    {"static_groups", QP_P_BOOL, "false", NULL, 0, -1, 0, "GPTQ: group scales fixed before updates"},
    {"sequential", QP_P_BOOL, "true", NULL, 0, -1, 0,
     "GPTQ/AWQ: block i is calibrated on outputs of quantized blocks < i"},
    {"true_sequential", QP_P_BOOL, "true", NULL, 0, -1, 0, "GPTQ: q,k,v -> o -> gate,up -> down"},
    {"duo_scaling", QP_P_STRING, "auto", "auto|true|false", 0, -1, 0, "AWQ scale form"},
    {"clip", QP_P_BOOL, "true", NULL, 0, -1, 0, "AWQ clip search"},
    {"double_quant", QP_P_BOOL, "false", NULL, 0, -1, 0, "NF4: quantize the absmax scales"},
    {"override", QP_P_MAP_LIST, "[]", NULL, 0, -1, 0,
     "per-tensor overrides [{match: GLOB, bits|type: …}]"},
    {"skip", QP_P_STRING_LIST, "[]", NULL, 0, -1, 0, "tensor globs kept at source precision"},
    {"pure", QP_P_BOOL, "false", NULL, 0, -1, 0,
     "gguf: every quantized tensor at `type` (llama-quantize --pure) instead of its per-tensor rules"},
    {"ladder", QP_P_STRING_LIST, "[Q4_K, Q5_K, Q6_K]", NULL, 0, -1, 0,
     "mixed: llama.cpp block types, fewest bits first; every weight gets one"},
    {"max_bpw", QP_P_NUMBER, "0", NULL, 0, 32, 0, "mixed: size budget in bits per weight (0 = none)"},
    {"bpw_of", QP_P_STRING, "", NULL, 0, -1, 0,
     "mixed: the budget is the bits per weight this llama.cpp file type gives the model (e.g. Q4_K_M)"},
    {"max_kld", QP_P_NUMBER, "0", NULL, 0, 100, 0,
     "mixed: raise weights until the mean KLD on the calibration windows is at most this (0 = fill the budget)"},
    {"max_ppl_delta", QP_P_NUMBER, "0", NULL, 0, 1e6, 0,
     "mixed: raise weights until perplexity on the calibration windows rises at most this much (0 = none)"},
    {"max_ppl_ratio", QP_P_NUMBER, "0", NULL, 0, 1e6, 0,
     "mixed: raise weights until calibration perplexity / unquantized perplexity is at most this (0 = none)"},
    {"windows", QP_P_INT, "16", NULL, 1, 4096, 0, "mixed: calibration windows the sensitivities are measured on"},
    {NULL, 0, NULL, NULL, 0, 0, 0, NULL},
};

/* method mixed: a ladder of block types in increasing size, and a budget or a target. */
static int validate_mixed(const json_t *p, const char *where)
{
    const json_t *ladder = json_object_get(p, "ladder");
    size_t i;
    json_t *v;
    double prev = 0;
    if (json_array_size(ladder) < 2 || json_array_size(ladder) > 8)
        return qp_error_set(QP_EUSAGE, "%s: ladder: needs 2 to 8 llama.cpp block types, fewest bits first "
                                       "(e.g. [Q4_K, Q5_K, Q6_K])", where);
    json_array_foreach(ladder, i, v) {
        const qp_qtype_info *ti = qp_qtype_by_name(json_string_value(v));
        if (!ti || ti->type == QP_GGML_F16 || ti->type == QP_GGML_F32 || ti->type == QP_GGML_BF16)
            return qp_error_set(QP_EUSAGE, "%s: ladder: '%s' is not a llama.cpp block type such as Q4_K", where,
                                json_string_value(v));
        double bpw = ti->bits_per_weight;
        if (bpw <= prev)
            return qp_error_set(QP_EUSAGE, "%s: ladder: %s does not have more bits than the type before it; list "
                                           "the types fewest bits first", where, ti->name);
        prev = bpw;
    }
    const char *of = json_string_value(json_object_get(p, "bpw_of"));
    if (of && of[0] && qp_llama_ftype_parse(of) < 0)
        return qp_error_set(QP_EUSAGE, "%s: bpw_of: %s is not a llama.cpp file type such as Q4_K_M", where, of);
    if (of && of[0] && json_number_value(json_object_get(p, "max_bpw")) > 0)
        return qp_error_set(QP_EUSAGE, "%s: give max_bpw or bpw_of, not both", where);
    if (!(of && of[0]) && json_number_value(json_object_get(p, "max_bpw")) <= 0 &&
        json_number_value(json_object_get(p, "max_kld")) <= 0 &&
        json_number_value(json_object_get(p, "max_ppl_delta")) <= 0 &&
        json_number_value(json_object_get(p, "max_ppl_ratio")) <= 0)
        return qp_error_set(QP_EUSAGE, "%s: method mixed needs a budget (max_bpw or bpw_of) or a target (max_kld, "
                                       "max_ppl_delta or max_ppl_ratio)", where);
    json_array_foreach(json_object_get(p, "override"), i, v)
        if (json_object_get(v, "bits"))
            return qp_error_set(QP_EUSAGE, "%s: override %zu: method mixed takes type:, not bits:", where, i + 1);
    return 0;
}

static int quantize_validate(const json_t *p, const char *where)
{
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(p, "override"), i, o) {
        const char *k;
        json_t *v;
        if (!json_is_object(o) || !json_is_string(json_object_get(o, "match")))
            return qp_error_set(QP_EUSAGE, "%s: override %zu: needs match: GLOB", where, i + 1);
        json_object_foreach(o, k, v) {
            if (strcmp(k, "match") && strcmp(k, "type") && strcmp(k, "bits"))
                return qp_error_set(QP_EUSAGE, "%s: override %zu: unknown key '%s' (match, type, bits)", where,
                                    i + 1, k);
        }
        const char *t = json_string_value(json_object_get(o, "type"));
        if (json_object_get(o, "type") && (!t || !qp_qtype_by_name(t)))
            return qp_error_set(QP_EUSAGE, "%s: override %zu: type must be a llama.cpp type such as Q6_K", where,
                                i + 1);
        json_t *b = json_object_get(o, "bits");
        if (b && (!json_is_integer(b) || json_integer_value(b) < 2 || json_integer_value(b) > 8))
            return qp_error_set(QP_EUSAGE, "%s: override %zu: bits must be an integer 2..8", where, i + 1);
    }
    const char *im = json_string_value(json_object_get(p, "imatrix"));
    const char *method = json_string_value(json_object_get(p, "method"));
    if (im && im[0] && strcmp(method, "gguf") != 0 && strcmp(method, "mixed") != 0)
        return qp_error_set(QP_EUSAGE, "%s: imatrix: only applies to methods gguf and mixed", where);
    return strcmp(method, "mixed") == 0 ? validate_mixed(p, where) : 0;
}

typedef struct {
    char name[256];
    double rel_error;
} worst_entry;

static void keep_worst(worst_entry *w, size_t cap, const char *name, double err)
{
    for (size_t i = 0; i < cap; i++) {
        if (err > w[i].rel_error || !w[i].name[0]) {
            memmove(&w[i + 1], &w[i], (cap - i - 1) * sizeof(*w));
            snprintf(w[i].name, sizeof(w[i].name), "%s", name);
            w[i].rel_error = err;
            return;
        }
    }
}

static int read_calib_imatrix(qp_stage_ctx *ctx, const qp_artifact *calib, qp_imatrix **out)
{
    const json_t *e = qp_artifact_find(calib, "files/imatrix.dat");
    if (!e)
        return qp_error_set(QP_EFORMAT, "stage '%s': calibration input has no imatrix.dat", ctx->id);
    char *dir = qp_path_join(qp_cache_dir(ctx->cache), "tmp"), *tmp = NULL;
    int fd = -1;
    int rc = qp_mkdir_p(dir, 0755);
    if (rc == 0)
        rc = qp_mkstemp_in(dir, "imatrix", &tmp, &fd);
    if (rc == 0) {
        close(fd);
        rc = qp_cache_get_to_file(ctx->cache, qp_artifact_entry_digest(e), tmp);
        if (rc == 0)
            rc = qp_imatrix_read(out, tmp);
        unlink(tmp);
    }
    free(tmp);
    free(dir);
    if (rc)
        qp_error_prefix("stage '%s': calibration imatrix", ctx->id);
    return rc;
}

/* Encodes one f32 tensor [rows, cols] by its plan; *packed (malloc'ed) and
 * the entry's format fields.  imat: per-column importance (ggml) or NULL. */
static int encode_tensor(qp_stage_ctx *ctx, const qp_tensor_plan *plan, const float *w, int64_t rows, int64_t cols,
                         const float *imat, void **packed, size_t *plen, json_t *extra, double *bpw)
{
    const json_t *p = ctx->params;
    int rc = 0;
    uint64_t nelem = (uint64_t)rows * (uint64_t)cols;
    *packed = NULL;
    switch (plan->kind) {
    case QP_TP_DENSE: { /* a dense conversion (F16 fallback) */
        *plen = (size_t)nelem * 2;
        uint16_t *h = malloc(*plen);
        if (!h)
            return qp_error_set(QP_ERROR, "out of memory");
        for (uint64_t k = 0; k < nelem; k++)
            h[k] = qp_f32_to_f16(w[k]);
        *packed = h;
        json_object_set_new(extra, "format", json_string("dense"));
        json_object_set_new(extra, "dtype", json_string("F16"));
        *bpw = 16;
        return 0;
    }
    case QP_TP_GGML: {
        *plen = qp_qtype_row_size(plan->qtype, cols) * (size_t)rows;
        *packed = malloc(*plen ? *plen : 1);
        if (!*packed)
            return qp_error_set(QP_ERROR, "out of memory");
        rc = qp_quantize(plan->qtype, w, *packed, rows, cols, imat, ctx->threads);
        json_object_set_new(extra, "format", json_string("ggml"));
        json_object_set_new(extra, "qtype", json_string(qp_qtype_get(plan->qtype)->name));
        json_object_set_new(extra, "imatrix", json_boolean(imat != NULL));
        *bpw = 8.0 * (double)*plen / (double)nelem;
        return rc;
    }
    case QP_TP_LINEAR: {
        qp_linear_params lp = {.bits = plan->bits, .group_size = (int)qp_param_int(p, "group_size"),
                               .sym = qp_param_bool(p, "sym"), .mse = qp_param_bool(p, "mse")};
        qp_linear *q = NULL;
        if ((rc = qp_linear_new(&q, rows, cols, &lp)) == 0 && (rc = qp_rtn_quantize(q, w, ctx->threads)) == 0 &&
            (rc = qp_linear_serialize(q, packed, plen)) == 0) {
            json_object_set_new(extra, "format", json_string("linear"));
            json_object_set_new(extra, "bits", json_integer(plan->bits));
            json_object_set_new(extra, "group_size", json_integer(lp.group_size));
            json_object_set_new(extra, "sym", json_boolean(lp.sym));
            *bpw = qp_linear_bits_per_weight(q);
        }
        qp_linear_free(q);
        return rc;
    }
    case QP_TP_NF4: {
        qp_nf4_params np = {.blocksize = 64, .double_quant = qp_param_bool(p, "double_quant")};
        qp_nf4 *q = NULL;
        if ((rc = qp_nf4_new(&q, rows, cols, &np)) == 0 && (rc = qp_nf4_quantize(q, w, ctx->threads)) == 0 &&
            (rc = qp_nf4_serialize(q, packed, plen)) == 0) {
            json_object_set_new(extra, "format", json_string("nf4"));
            json_object_set_new(extra, "double_quant", json_boolean(np.double_quant));
            *bpw = qp_nf4_bits_per_weight(q);
        }
        qp_nf4_free(q);
        return rc;
    }
    case QP_TP_INT8: {
        qp_int8 *q = NULL;
        if ((rc = qp_int8_new(&q, rows, cols)) == 0 && (rc = qp_int8_quantize(q, w, ctx->threads)) == 0 &&
            (rc = qp_int8_serialize(q, packed, plen)) == 0) {
            json_object_set_new(extra, "format", json_string("int8"));
            *bpw = qp_int8_bits_per_weight(q);
        }
        qp_int8_free(q);
        return rc;
    }
    }
    return qp_error_set(QP_ERROR, "internal: unknown tensor plan");
}

static int quantize_run(qp_stage_ctx *ctx)
{
    const qp_artifact *in = ctx->inputs[0];
    qp_artifact *out = ctx->output;
    qp_imatrix *imatrix = NULL;
    float *f32 = NULL, *back = NULL, *imat = NULL;
    void *src = NULL, *packed = NULL;
    char *what = NULL;
    json_t *notes = json_array();
    json_t *calibrated = NULL;   /* GPTQ/AWQ/mixed results by tensor name: stored objects */
    json_t *mixed_assign = NULL, *mixed_report = NULL;   /* method mixed: types by tensor name, why */
    int rc = 0;
    for (size_t i = 1; i < ctx->n_inputs; i++)
        if (qp_artifact_type_of(ctx->inputs[i]) != QP_ART_CALIB) {
            rc = qp_error_set(QP_EUSAGE, "stage '%s': input '%s' must be a calibration artifact", ctx->id,
                              ctx->input_ids[i]);
            goto done;
        }
    if (qp_artifact_type_of(in) != QP_ART_MODEL) {
        rc = qp_error_set(QP_EUSAGE, "stage '%s': the first input '%s' must be the model to quantize", ctx->id,
                          ctx->input_ids[0]);
        goto done;
    }
    const char *method = qp_param_str(ctx->params, "method");
    const char *im_path = qp_param_str(ctx->params, "imatrix");
    const qp_artifact *calib = ctx->n_inputs > 1 ? ctx->inputs[1] : NULL;
    int ggml_method = !strcmp(method, "gguf") || !strcmp(method, "mixed");
    if (calib && !(im_path && im_path[0]) && ggml_method) {
        /* qpipe's own importance matrix goes through the very reader (and
         * quantizers) verified against llama.cpp's files */
        if ((rc = read_calib_imatrix(ctx, calib, &imatrix)) != 0)
            goto done;
    } else if (im_path && im_path[0]) {
        char *abs = qp_stage_path(ctx, im_path);
        rc = qp_imatrix_read(&imatrix, abs);
        free(abs);
        if (rc) {
            qp_error_prefix("stage '%s': imatrix", ctx->id);
            goto done;
        }
    }
    qp_llama_config cfg;
    char *cwhat = qp_strfmt("stage '%s': input '%s'", ctx->id, ctx->input_ids[0]);
    rc = qp_model_artifact_config(&cfg, in, ctx->cache, cwhat);
    free(cwhat);
    if (rc)
        goto done;
    qp_quant_plan plan_ctx;
    if ((rc = qp_quant_plan_init(&plan_ctx, ctx->params, &cfg, imatrix != NULL)) != 0) {
        qp_error_prefix("stage '%s'", ctx->id);
        goto done;
    }
    if (!strcmp(method, "gptq") || !strcmp(method, "awq")) {
        if (!calib) {
            rc = qp_error_set(QP_EUSAGE, "stage '%s': method %s needs a calibrate stage in needs:", ctx->id, method);
            goto done;
        }
        if ((rc = qp_quant_sequential(&calibrated, ctx, in, calib, &plan_ctx)) != 0)
            goto done;
    }
    if (!strcmp(method, "mixed")) {
        if (!calib) {
            rc = qp_error_set(QP_EUSAGE, "stage '%s': method mixed measures sensitivities on calibration windows; "
                                         "add a calibrate stage to needs:", ctx->id);
            goto done;
        }
        if ((rc = qp_quant_mixed_assign(&mixed_assign, &mixed_report, &calibrated, ctx, in, calib, imatrix,
                                        &plan_ctx)) != 0)
            goto done;
        plan_ctx.assign = mixed_assign;
    }
    double sum_err = 0, sum_ref = 0, bits_all = 0, weights_all = 0, bits_q = 0, weights_q = 0;
    uint64_t bytes_all = 0;
    size_t n_quantized = 0, n_tensors = 0;
    worst_entry worst[6] = {{"", 0}};
    size_t total = qp_artifact_count(in);
    for (size_t k = 0; k < total && rc == 0; k++) {
        const json_t *e = qp_artifact_entry(in, k);
        const char *ename = qp_artifact_entry_name(e);
        uint64_t size = (uint64_t)json_integer_value(json_object_get(e, "size"));
        json_t *extra = json_deep_copy(e);
        json_object_del(extra, "name");
        json_object_del(extra, "digest");
        json_object_del(extra, "size");
        if (strncmp(ename, "tensors/", 8) != 0) {
            /* config, tokenizer, …: the same objects */
            rc = qp_artifact_add(out, ename, qp_artifact_entry_digest(e), size, extra);
            continue;
        }
        const char *tname = ename + 8;
        int64_t rows, cols;
        qp_qtensor_rows_cols(e, &rows, &cols);
        int ndim = (int)json_array_size(json_object_get(e, "shape"));
        uint64_t nelem = qp_qtensor_nelem(e);
        qp_tensor_plan plan;
        n_tensors++;
        if ((rc = qp_quant_plan_tensor(&plan, &plan_ctx, tname, ndim, rows, cols)) != 0) {
            json_decref(extra);
            qp_error_prefix("stage '%s'", ctx->id);
            break;
        }
        if (plan.reason[0])
            json_array_append_new(notes, json_pack("{s:s, s:s}", "tensor", tname, "note", plan.reason));
        const json_t *cal_early = calibrated ? json_object_get(calibrated, tname) : NULL;
        const char *cal_format = cal_early ? json_string_value(json_object_get(cal_early, "format")) : NULL;
        if (cal_format && !strcmp(cal_format, "dense")) {
            /* a tensor the algorithm changed but does not quantize (AWQ's scaled norms) */
            json_object_set_new(extra, "format", json_string("dense"));
            json_object_set(extra, "dtype", json_object_get(cal_early, "dtype"));
            uint64_t dsize = (uint64_t)json_integer_value(json_object_get(cal_early, "size"));
            bits_all += 8.0 * (double)dsize;
            weights_all += (double)nelem;
            bytes_all += dsize;
            rc = qp_artifact_add(out, ename, json_string_value(json_object_get(cal_early, "digest")), dsize, extra);
            continue;
        }
        if (plan.kind == QP_TP_DENSE && plan.qtype != QP_GGML_F16) {
            /* kept at source precision: the very same object */
            json_object_set_new(extra, "format", json_string("dense"));
            bits_all += qp_qtensor_bits(e, (size_t)size) * (double)nelem;
            weights_all += (double)nelem;
            bytes_all += size;
            rc = qp_artifact_add(out, ename, qp_artifact_entry_digest(e), size, extra);
            continue;
        }
        /* source -> f32 -> packed -> f32 again for the error */
        size_t len = 0, plen = 0;
        free(src);
        src = NULL;
        free(packed);
        packed = NULL;
        free(what);
        what = qp_strfmt("stage '%s': tensor '%s'", ctx->id, tname);
        float *nf = realloc(f32, nelem * sizeof(float)), *nb = nf ? realloc(back, nelem * sizeof(float)) : NULL;
        if (nf)
            f32 = nf;
        if (nb)
            back = nb;
        if (!nf || !nb) {
            rc = qp_error_set(QP_ERROR, "%s: out of memory", what);
            json_decref(extra);
            break;
        }
        if ((rc = qp_cache_get(ctx->cache, qp_artifact_entry_digest(e), &src, &len)) == 0)
            rc = qp_qtensor_to_f32(e, src, len, f32, nelem, what);
        const float *im_w = NULL;
        if (rc == 0 && imatrix && plan.kind == QP_TP_GGML && qp_qtype_get(plan.qtype)->uses_imatrix) {
            char gname[256];
            qp_gguf_llama_name(gname, sizeof(gname), tname);
            imat = realloc(imat, (size_t)cols * sizeof(float));
            int irc = qp_imatrix_weights(imatrix, gname, cols, imat);
            if (irc == 0)
                im_w = imat;
            else if (irc == QP_ENOTFOUND)
                qp_error_clear();   /* llama-quantize goes without for this tensor */
            else
                rc = irc;
        }
        double bpw = 0;
        const json_t *cal = calibrated ? json_object_get(calibrated, tname) : NULL;
        if (rc == 0 && cal) {
            /* quantized by the calibrated driver (or mixed's allocator): its stored object */
            rc = qp_cache_get(ctx->cache, json_string_value(json_object_get(cal, "digest")), &packed, &plen);
            json_object_set_new(extra, "format", json_string(cal_format ? cal_format : "linear"));
            const char *ck;
            json_t *cv;
            json_object_foreach((json_t *)cal, ck, cv)
                if (strcmp(ck, "digest") && strcmp(ck, "size") && strcmp(ck, "bpw") && strcmp(ck, "format"))
                    json_object_set(extra, ck, cv);
            bpw = json_number_value(json_object_get(cal, "bpw"));
        } else if (rc == 0 && plan.kind == QP_TP_LINEAR && calibrated) {
            rc = qp_error_set(QP_ERROR, "stage '%s': tensor '%s' was not quantized by %s", ctx->id, tname, method);
        } else if (rc == 0) {
            rc = encode_tensor(ctx, &plan, f32, rows, cols, im_w, &packed, &plen, extra, &bpw);
        }
        if (rc == 0)
            rc = qp_qtensor_to_f32(extra, packed, plen, back, nelem, what);
        if (rc) {
            json_decref(extra);
            break;
        }
        double d2 = 0, w2 = 0;
        for (uint64_t j2 = 0; j2 < nelem; j2++) {
            double d = (double)f32[j2] - (double)back[j2];
            d2 += d * d;
            w2 += (double)f32[j2] * (double)f32[j2];
        }
        double rel = w2 > 0 ? sqrt(d2 / w2) : 0;
        sum_err += d2;
        sum_ref += w2;
        json_object_set_new(extra, "rel_error", json_real(rel));
        json_object_set_new(extra, "bpw", json_real(bpw));
        bits_all += bpw * (double)nelem;
        weights_all += (double)nelem;
        bits_q += bpw * (double)nelem;
        weights_q += (double)nelem;
        bytes_all += plen;
        n_quantized++;
        keep_worst(worst, sizeof(worst) / sizeof(worst[0]), tname, rel);
        rc = qp_artifact_add_bytes(out, ctx->cache, ename, packed, plen, extra);
        qp_progress_update(ctx->progress, k + 1, total, "tensors");
    }
    if (rc == 0) {
        qp_artifact_set_metric(out, "bpw", weights_all > 0 ? bits_all / weights_all : 0);
        qp_artifact_set_metric(out, "bpw_quantized", weights_q > 0 ? bits_q / weights_q : 0);
        /* deployed size: every tensor at its exported bits per weight */
        qp_artifact_set_metric(out, "bytes", bits_all / 8.0);
        qp_artifact_set_metric(out, "stored_bytes", (double)bytes_all);
        qp_artifact_set_metric(out, "rel_error", sum_ref > 0 ? sqrt(sum_err / sum_ref) : 0);
        qp_artifact_set_metric(out, "tensors_quantized", (double)n_quantized);
        json_t *meta = qp_artifact_meta(out);
        json_t *jw = json_array();
        for (size_t w = 0; w < sizeof(worst) / sizeof(worst[0]) && worst[w].name[0]; w++)
            json_array_append_new(jw, json_pack("{s:s, s:f}", "tensor", worst[w].name, "rel_error", worst[w].rel_error));
        json_object_set_new(meta, "worst_tensors", jw);
        json_object_set_new(meta, "notes", notes);
        notes = NULL;
        json_object_set_new(meta, "method", json_string(method));
        json_object_set_new(meta, "params", json_deep_copy(ctx->params));
        json_object_set_new(meta, "source_model", json_string(ctx->input_digests[0]));
        if (calib)
            json_object_set_new(meta, "calibration", json_string(ctx->input_digests[1]));
        json_object_set(meta, "source", json_object_get(qp_artifact_meta_c(in), "source"));
        json_object_set_new(meta, "imatrix", json_boolean(imatrix != NULL));
        if (mixed_report) {
            json_object_set(meta, "mixed", mixed_report);
            qp_artifact_set_metric(out, "kld_calibration", json_number_value(json_object_get(mixed_report, "kld_mix")));
            qp_artifact_set_metric(out, "tensors_raised",
                                   (double)json_array_size(json_object_get(mixed_report, "raised")));
        }
        if (calibrated && json_object_get(calibrated, "_awq"))
            json_object_set(meta, "awq", json_object_get(calibrated, "_awq"));
        if (imatrix) {
            /* what llama-quantize records as quantize.imatrix.* */
            const char *file = im_path && im_path[0] ? im_path : "imatrix.dat";
            char *from_calib = calib && !(im_path && im_path[0])
                                   ? qp_strfmt("qpipe:calibrate/%s/imatrix.dat", ctx->input_ids[1]) : NULL;
            json_object_set_new(meta, "imatrix_info",
                                json_pack("{s:s, s:s, s:I, s:I}", "file", from_calib ? from_calib : file, "dataset",
                                          qp_imatrix_dataset(imatrix) ? qp_imatrix_dataset(imatrix) : "",
                                          "entries_count", (json_int_t)qp_imatrix_count(imatrix), "chunks_count",
                                          (json_int_t)qp_imatrix_last_call(imatrix)));
            free(from_calib);
        }
        json_object_set_new(meta, "tensors", json_integer((json_int_t)n_tensors));
        qp_artifact_set_type(out, QP_ART_QMODEL);
        if (worst[0].name[0])
            qp_progress_note(ctx->progress, "worst tensor %s: rel error %.4f", worst[0].name, worst[0].rel_error);
    }
done:
    json_decref(mixed_assign);
    json_decref(mixed_report);
    json_decref(calibrated);
    json_decref(notes);
    qp_imatrix_free(imatrix);
    free(what);
    free(f32);
    free(back);
    free(imat);
    free(src);
    free(packed);
    return rc;
}

const qp_stage_kind qp_stage_quantize = {
    .name = "quantize", .version = 7,
    .doc = "quantize a model (RTN, llama.cpp types, NF4, INT8, GPTQ, AWQ, sensitivity-driven mixed)",
    .params = params,
    .accepts = QP_ART_MODEL | QP_ART_CALIB, .min_inputs = 1, .max_inputs = 2,
    .output = QP_ART_QMODEL,
    .float_numerics = 1,
    .validate = quantize_validate,
    .run = quantize_run,
};
