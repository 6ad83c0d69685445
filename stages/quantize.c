/* quantize: turns a model artifact into a quantized model artifact, one
 * tensor at a time (memory ≈ one f32 tensor + its packed form).  Tensors
 * that stay at source precision keep their cache objects (same digest).
 * Reports bits per weight, bytes and relative reconstruction error
 * ‖W−Ŵ‖/‖W‖ per tensor and in total; the worst tensors go to the summary. */
#include "stages/bg_put.h"
#include "stages/kinds.h"
#include "stages/qmethod.h"
#include "stages/qtensor.h"
#include "stages/qtensor_ggml.h"
#include "common/alloc.h"
#include "common/buf.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/tensor.h"
#include "model/gguf_llama.h"
#include "quant/imatrix.h"
#include "quant/linear.h"
#include "stages/model_load.h"

#include <fnmatch.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const qp_param_spec params[] = {
    {"method", QP_P_STRING, NULL, "rtn|gguf|nf4|int8|gptq|awq|mixed|qat", 0, -1, QP_PF_REQUIRED,
     "quantization algorithm (mixed: sensitivity-driven llama.cpp types per tensor; qat: quantization-aware "
     "training)"},
    {"bits", QP_P_INT, "4", NULL, 2, 8, 0, "bits per weight (rtn, gptq, awq, qat)"},
    {"group_size", QP_P_INT, "128", QP_LINEAR_GROUP_SIZES, 0, -1, 0,
     "weights per scale along the input dimension (-1 = per output channel)"},
    {"sym", QP_P_BOOL, "false", NULL, 0, -1, 0, "symmetric grid (no zero point)"},
    {"type", QP_P_STRING, "Q4_K_M",
     "Q8_0|Q4_0|Q4_1|Q5_0|Q5_1|Q2_K|Q2_K_S|Q3_K|Q3_K_S|Q3_K_M|Q3_K_L|Q4_K|Q4_K_S|Q4_K_M|Q5_K|Q5_K_S|Q5_K_M|"
     "Q6_K|IQ4_NL|IQ4_XS|IQ3_XXS|IQ3_XS|IQ3_S|IQ3_M|IQ2_XXS|IQ2_XS|IQ2_S|IQ2_M|IQ1_S|IQ1_M|TQ1_0|TQ2_0|F16|BF16", 0, -1, 0,
     "method gguf: llama-quantize's file type (Q4_K = Q4_K_M, as there); with pure: its default block type "
     "(IQ2_S: IQ2_XS, IQ2_M: IQ2_S, as there; IQ2_XXS, IQ2_XS, IQ2_S, IQ1_S, IQ1_M: an imatrix entry for every "
     "tensor of that type, but token_embd and output for IQ1_M, else refused as llama-quantize does)"},
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
    {"steps", QP_P_INT, "200", NULL, 0, 100000, 0, "qat: sign-SGD steps per decoder block"},
    {"lr", QP_P_NUMBER, "0", NULL, 0, 1, 0, "qat: learning rate, decayed linearly to 0 (0 = 1/steps)"},
    {"batch", QP_P_INT, "8", NULL, 1, 4096, 0, "qat: calibration windows per step"},
    {"seed", QP_P_INT, "0", NULL, 0, 2147483647, 0, "qat: seed of the batch order"},
    {"init", QP_P_STRING, "rtn", "rtn|gptq", 0, -1, 0, "qat: starting point (gptq: the GPTQ solution)"},
    {"e2e_steps", QP_P_INT, "0", NULL, 0, 100000, 0,
     "qat: end-to-end steps training only the scales on next-token loss, codes frozen (0 = none)"},
    {"e2e_lr", QP_P_NUMBER, "0.001", NULL, 0, 1, 0,
     "qat: Adam learning rate of the end-to-end phase (on each scale relative to its block-wise value)"},
    {NULL, 0, NULL, NULL, 0, 0, 0, NULL},
};

/* Checks the overrides, that imatrix: goes with a method that takes one,
 * and the method's own options (parsed here only to be checked). */
static int quantize_validate(const json_t *p, const char *where)
{
    qp_quant_common common;
    int rc = qp_quant_common_parse(&common, p, where);
    const qp_quant_method *m = qp_quant_method_find(qp_param_str(p, "method"));
    if (rc == 0 && !m)
        rc = qp_error_set(QP_EUSAGE, "%s: method: unknown method '%s'", where, qp_param_str(p, "method"));
    if (rc == 0 && common.imatrix[0] && !(m->flags & QP_QM_IMATRIX)) {
        /* "gguf and mixed": the methods that take one */
        qp_buf names = QP_BUF_INIT;
        size_t n, k = 0, n_im = 0;
        const qp_quant_method *const *all = qp_quant_methods(&n);
        for (size_t i = 0; i < n; i++)
            n_im += (all[i]->flags & QP_QM_IMATRIX) != 0;
        for (size_t i = 0; i < n; i++)
            if (all[i]->flags & QP_QM_IMATRIX)
                qp_buf_printf(&names, "%s%s", k++ == 0 ? "" : k == n_im ? " and " : ", ", all[i]->name);
        rc = qp_error_set(QP_EUSAGE, "%s: imatrix: only applies to methods %s", where, qp_buf_cstr(&names));
        qp_buf_free(&names);
    }
    qp_quant_common_free(&common);
    void *opts = NULL;
    if (rc == 0)
        rc = qp_quant_opts_parse(&opts, m, p, where);
    qp_quant_opts_free(m, opts);
    return rc;
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

/* The importance matrix: imatrix:, or for a method that takes one, the
 * calibration's own (read through the very reader, and quantizers,
 * verified against llama.cpp's files). */
static int read_imatrix(qp_quant_job *job)
{
    qp_stage_ctx *ctx = job->ctx;
    const char *im_path = job->common->imatrix;
    if (job->calib && !im_path[0] && (job->method->flags & QP_QM_IMATRIX))
        return read_calib_imatrix(ctx, job->calib, &job->imatrix);
    if (!im_path[0])
        return 0;
    char *abs = qp_stage_path(ctx, im_path);
    int rc = qp_imatrix_read(&job->imatrix, abs);
    free(abs);
    if (rc)
        qp_error_prefix("stage '%s': imatrix", ctx->id);
    return rc;
}

/* what llama-quantize records as quantize.imatrix.* */
static void describe_imatrix(const qp_quant_job *job, json_t *meta)
{
    const char *im_path = job->common->imatrix;
    const char *file = im_path[0] ? im_path : "imatrix.dat";
    char *from_calib = job->calib && !im_path[0]
                           ? qp_strfmt("qpipe:calibrate/%s/imatrix.dat", job->ctx->input_ids[1]) : NULL;
    json_object_set_new(meta, "imatrix_info",
                        json_pack("{s:s, s:s, s:I, s:I}", "file", from_calib ? from_calib : file, "dataset",
                                  qp_imatrix_dataset(job->imatrix) ? qp_imatrix_dataset(job->imatrix) : "",
                                  "entries_count", (json_int_t)qp_imatrix_count(job->imatrix), "chunks_count",
                                  (json_int_t)qp_imatrix_last_call(job->imatrix)));
    free(from_calib);
}

/* A dense conversion (llama.cpp's F16 fallback). */
static void encode_f16(const float *w, uint64_t nelem, void **packed, size_t *plen, json_t *extra, double *bpw)
{
    *plen = (size_t)nelem * 2;
    uint16_t *h = qp_xmalloc(*plen ? *plen : 1);
    for (uint64_t k = 0; k < nelem; k++)
        h[k] = qp_f32_to_f16(w[k]);
    *packed = h;
    json_object_set_new(extra, "format", json_string("dense"));
    json_object_set_new(extra, "dtype", json_string("F16"));
    *bpw = 16;
}

/* The inputs, the options, the importance matrix and the plan of one run. */
static int job_open(qp_quant_job *job, qp_quant_common *common, void **opts, qp_stage_ctx *ctx)
{
    memset(job, 0, sizeof(*job));
    job->ctx = ctx;
    job->model = ctx->inputs[0];
    job->calib = ctx->n_inputs > 1 ? ctx->inputs[1] : NULL;
    job->method = qp_quant_method_find(qp_param_str(ctx->params, "method"));
    job->common = common;
    job->results = qp_quant_results_new();
    char *where = qp_strfmt("stage '%s'", ctx->id);
    int rc = qp_quant_common_parse(common, ctx->params, where);
    for (size_t i = 1; rc == 0 && i < ctx->n_inputs; i++)
        if (qp_artifact_type_of(ctx->inputs[i]) != QP_ART_CALIB)
            rc = qp_error_set(QP_EUSAGE, "stage '%s': input '%s' must be a calibration artifact", ctx->id,
                              ctx->input_ids[i]);
    if (rc == 0 && qp_artifact_type_of(job->model) != QP_ART_MODEL)
        rc = qp_error_set(QP_EUSAGE, "stage '%s': the first input '%s' must be the model to quantize", ctx->id,
                          ctx->input_ids[0]);
    if (rc == 0 && !job->method)
        rc = qp_error_set(QP_EUSAGE, "stage '%s': unknown method '%s'", ctx->id, qp_param_str(ctx->params, "method"));
    if (rc == 0 && (rc = qp_quant_opts_parse(opts, job->method, ctx->params, where)) == 0)
        job->opts = *opts;
    if (rc == 0 && (rc = read_imatrix(job)) == 0) {
        char *cwhat = qp_strfmt("stage '%s': input '%s'", ctx->id, ctx->input_ids[0]);
        rc = qp_model_artifact_config(&job->cfg, job->model, ctx->cache, cwhat);
        free(cwhat);
    }
    if (rc == 0)
        qp_quant_plan_init(&job->plan, job->method, job->opts, common, &job->cfg, job->imatrix != NULL);
    if (rc == 0 && (job->method->flags & QP_QM_NEEDS_CALIB) && !job->calib)
        rc = qp_error_set(QP_EUSAGE, "stage '%s': method %s %s", ctx->id, job->method->name,
                          job->method->needs_calib);
    free(where);
    return rc;
}

static void job_close(qp_quant_job *job, qp_quant_common *common, void *opts)
{
    qp_quant_results_free(job->results);
    json_decref(job->report);
    json_decref(job->plan.assign);
    qp_imatrix_free(job->imatrix);
    qp_quant_opts_free(job->method, opts);
    qp_quant_common_free(common);
}

enum { N_WORST = 6 };   /* the worst tensors named in the metadata */

/* Totals over the tensors, for the metrics. */
typedef struct {
    json_t *notes;
    double sum_err, sum_ref, bits_all, weights_all, bits_q, weights_q;
    uint64_t bytes_all;
    size_t n_quantized, n_tensors;
    worst_entry worst[N_WORST];
    float *f32, *back, *imat;   /* reused between tensors */
    qp_buf src;                 /* the source tensor's bytes, reused between tensors */
    size_t put_cap, spare_cap;  /* allocated sizes of the packed buffer in flight and of the spare */
    size_t k, total;            /* the entry being quantized, of how many (progress) */
    /* the previous tensor's packed bytes, being stored by a helper thread
     * while this one is read and encoded; its entry once they are */
    qp_bg_put *put;
    char *put_name;
    json_t *put_extra;
    size_t put_len, put_k;
} tensor_pass;

/* Waits for the tensor the helper is storing and adds its entry. */
static int collect_put(qp_quant_job *job, tensor_pass *tp)
{
    char digest[QP_HEX_LEN];
    int rc = qp_bg_put_wait(tp->put, digest);
    if (rc == 1)
        return 0;   /* none in flight */
    if (rc == 0)
        rc = qp_artifact_add(job->ctx->output, tp->put_name, digest, tp->put_len, tp->put_extra);
    else
        json_decref(tp->put_extra);
    tp->put_extra = NULL;
    free(tp->put_name);
    tp->put_name = NULL;
    if (rc == 0)
        qp_progress_update(job->ctx->progress, tp->put_k + 1, tp->total, "tensors");
    return rc;
}

/* A stored object taken as it is: a run's dense result, or the source's own. */
static int add_kept(qp_quant_job *job, tensor_pass *tp, const char *ename, const char *digest, uint64_t size,
                    double bits, uint64_t nelem, json_t *extra)
{
    tp->bits_all += bits;
    tp->weights_all += (double)nelem;
    tp->bytes_all += size;
    return qp_artifact_add(job->ctx->output, ename, digest, size, extra);
}

/* importance of each input column for a ggml type that uses it, NULL when
 * llama-quantize goes without (no imatrix, or none for this tensor) */
static int imatrix_for(qp_quant_job *job, tensor_pass *tp, const qp_tensor_plan *plan, const char *tname,
                       int64_t cols, const float **im_w)
{
    *im_w = NULL;
    if (!job->imatrix || plan->kind != QP_TP_GGML || !qp_qtype_get(plan->qtype)->uses_imatrix)
        return 0;
    char gname[256];
    qp_gguf_llama_name(gname, sizeof(gname), tname);
    tp->imat = qp_xrealloc(tp->imat, (size_t)cols * sizeof(float));
    int rc = qp_imatrix_weights(job->imatrix, gname, cols, tp->imat);
    if (rc == 0)
        *im_w = tp->imat;
    else if (rc == QP_ENOTFOUND)
        qp_error_clear();   /* llama-quantize goes without for this tensor */
    else
        return rc;
    return 0;
}

/* The packed bytes of one tensor: st, the run's stored object, or encoded now. */
static int pack_tensor(qp_quant_job *job, tensor_pass *tp, const qp_tensor_plan *plan, const qp_quant_stored *st,
                       const char *tname, int64_t rows, int64_t cols, void **packed, size_t *plen, json_t *extra,
                       double *bpw)
{
    if (st) {
        /* quantized by the method's run (GPTQ/AWQ, or mixed's allocator): its stored object */
        const char *fmt = json_string_value(json_object_get(st->fields, "format"));
        json_object_set_new(extra, "format", json_string(fmt ? fmt : "linear"));
        const char *k;
        json_t *v;
        json_object_foreach(st->fields, k, v)
            if (strcmp(k, "format") != 0)
                json_object_set(extra, k, v);
        *bpw = st->bpw;
        return qp_cache_get(job->ctx->cache, st->digest, packed, plen);
    }
    if (plan->kind == QP_TP_DENSE) {
        encode_f16(tp->f32, (uint64_t)rows * (uint64_t)cols, packed, plen, extra, bpw);
        return 0;
    }
    const float *im_w = NULL;
    int rc = imatrix_for(job, tp, plan, tname, cols, &im_w);
    if (rc == 0 && !job->method->encode && plan->kind != QP_TP_GGML)
        return qp_error_set(QP_ERROR, "stage '%s': tensor '%s' was not quantized by %s", job->ctx->id, tname,
                            job->method->name);
    if (rc)
        return rc;
    if (plan->kind == QP_TP_GGML)
        rc = qp_quant_encode_ggml(job, plan, tp->f32, rows, cols, im_w, packed, plen, extra, bpw);
    else
        rc = job->method->encode(job, plan, tp->f32, rows, cols, packed, plen, extra, bpw);
    if (rc)   /* the quantizers' messages (a non-finite weight …) name no tensor */
        qp_error_prefix("stage '%s': tensor '%s'", job->ctx->id, tname);
    return rc;
}

/* A llama.cpp block type from a dense float source: qp_qtensor_ggml_encode
 * in one pass over the rows (the general path below holds the tensor in
 * f32 twice and reads it six times).  1 when it applies and ran. */
static int quantize_ggml_dense(qp_quant_job *job, tensor_pass *tp, const json_t *e, const qp_tensor_plan *plan,
                               const void *src, size_t len, int64_t rows, int64_t cols, void **packed,
                               size_t *packed_cap, size_t *plen,
                               double *d2, double *w2, json_t *extra, double *bpw, const char *what, int *rc)
{
    const char *fmt = json_string_value(json_object_get(e, "format"));
    qp_dtype dt = qp_dtype_parse(json_string_value(json_object_get(e, "dtype")));
    if (plan->kind != QP_TP_GGML || (fmt && strcmp(fmt, "dense") != 0) ||
        (dt != QP_DT_F32 && dt != QP_DT_F16 && dt != QP_DT_BF16))
        return 0;
    uint64_t nelem = (uint64_t)rows * (uint64_t)cols;
    if (len != nelem * qp_dtype_size(dt)) {
        *rc = qp_error_set(QP_ECORRUPT, "%s: %zu bytes do not hold %llu %s elements", what, len,
                           (unsigned long long)nelem, qp_dtype_name(dt));
        return 1;
    }
    const float *im_w = NULL;
    if ((*rc = imatrix_for(job, tp, plan, qp_artifact_entry_name(e) + 8, cols, &im_w)) != 0)
        return 1;
    *plen = qp_qtype_row_size(plan->qtype, cols) * (size_t)rows;
    /* the buffer the helper thread stored two tensors ago, when it is large
     * enough: its pages are already there */
    void *spare = qp_bg_put_take_spare(tp->put);
    size_t cap = tp->spare_cap;
    if (!spare || cap < *plen) {
        free(spare);
        cap = *plen ? *plen : 1;
        spare = qp_xmalloc(cap);
    }
    *packed = spare;
    *packed_cap = cap;
    *rc = qp_qtensor_ggml_encode(plan->qtype, src, dt, rows, cols, im_w, job->ctx->threads, *packed, d2, w2, what);
    json_object_set_new(extra, "format", json_string("ggml"));
    json_object_set_new(extra, "qtype", json_string(qp_qtype_get(plan->qtype)->name));
    json_object_set_new(extra, "imatrix", json_boolean(im_w != NULL));
    *bpw = 8.0 * (double)*plen / (double)nelem;
    return 1;
}

/* source -> f32 -> packed -> f32 again for the error; the entry added.
 * st: the method's run already quantized it (NULL: encode it now). */
static int quantize_tensor(qp_quant_job *job, tensor_pass *tp, const json_t *e, const qp_tensor_plan *plan,
                           const qp_quant_stored *st, json_t *extra)
{
    qp_stage_ctx *ctx = job->ctx;
    const char *ename = qp_artifact_entry_name(e), *tname = ename + 8;
    int64_t rows, cols;
    qp_qtensor_rows_cols(e, &rows, &cols);
    uint64_t nelem = qp_qtensor_nelem(e);
    void *src = NULL, *packed = NULL;
    size_t len = 0, plen = 0, packed_cap = 0;
    double bpw = 0;
    char *what = qp_strfmt("stage '%s': tensor '%s'", ctx->id, tname);
    double d2 = 0, w2 = 0;
    int rc = qp_cache_get_into(ctx->cache, qp_artifact_entry_digest(e), &tp->src);
    src = tp->src.data;
    len = tp->src.len;
    if (rc == 0 && (st || !quantize_ggml_dense(job, tp, e, plan, src, len, rows, cols, &packed, &packed_cap, &plen,
                                               &d2, &w2, extra, &bpw, what, &rc))) {
        tp->f32 = qp_xrealloc(tp->f32, nelem * sizeof(float));
        tp->back = qp_xrealloc(tp->back, nelem * sizeof(float));
        rc = qp_qtensor_to_f32(e, src, len, tp->f32, nelem, what);
        /* not needed beside f32, back and packed: peak = one tensor in f32
         * twice + packed, and the previous packed tensor being stored */
        qp_buf_free(&tp->src);
        src = NULL;
        packed_cap = 0;   /* packed comes from the method, sized as it is */
        if (rc == 0 &&
            (st || (rc = qp_qtensor_check_finite(tp->f32, rows, cols, what)) == 0) &&
            (rc = pack_tensor(job, tp, plan, st, tname, rows, cols, &packed, &plen, extra, &bpw)) == 0)
            rc = qp_qtensor_to_f32(extra, packed, plen, tp->back, nelem, what);
        for (uint64_t j = 0; rc == 0 && j < nelem; j++) {
            double d = (double)tp->f32[j] - (double)tp->back[j];
            d2 += d * d;
            w2 += (double)tp->f32[j] * (double)tp->f32[j];
        }
    }
    if (rc == 0) {
        double rel = w2 > 0 ? sqrt(d2 / w2) : 0;
        tp->sum_err += d2;
        tp->sum_ref += w2;
        json_object_set_new(extra, "rel_error", json_real(rel));
        json_object_set_new(extra, "bpw", json_real(bpw));
        tp->bits_all += bpw * (double)nelem;
        tp->weights_all += (double)nelem;
        tp->bits_q += bpw * (double)nelem;
        tp->weights_q += (double)nelem;
        tp->bytes_all += plen;
        tp->n_quantized++;
        keep_worst(tp->worst, N_WORST, tname, rel);
        rc = collect_put(job, tp);
        if (rc == 0) {
            tp->put_name = qp_xstrdup(ename);
            tp->put_extra = json_incref(extra);
            tp->put_len = plen;
            tp->put_k = tp->k;
            tp->spare_cap = tp->put_cap;   /* the put collected above: its buffer is the spare */
            tp->put_cap = packed_cap ? packed_cap : plen;
            rc = qp_bg_put_start(tp->put, packed, plen);   /* takes packed */
            packed = NULL;
        }
    }
    json_decref(extra);
    free(what);
    free(packed);
    return rc;
}

/* One entry of the model: other files as they are, tensors by their plan. */
static int pass_entry(qp_quant_job *job, tensor_pass *tp, const json_t *e)
{
    const char *ename = qp_artifact_entry_name(e);
    uint64_t size = (uint64_t)json_integer_value(json_object_get(e, "size"));
    json_t *extra = json_deep_copy(e);
    json_object_del(extra, "name");
    json_object_del(extra, "digest");
    json_object_del(extra, "size");
    if (strncmp(ename, "tensors/", 8) != 0)   /* config, tokenizer, …: the same objects */
        return qp_artifact_add(job->ctx->output, ename, qp_artifact_entry_digest(e), size, extra);
    const char *tname = ename + 8;
    if (qp_quant_plan_drops(&job->plan, tname)) {
        /* a tied checkpoint that ships lm_head.weight anyway: the model runs
         * embed_tokens (as transformers ties it), so the stray copy is neither
         * quantized, counted in bpw/bytes, nor exported */
        json_decref(extra);
        json_array_append_new(tp->notes, json_pack("{s:s, s:s}", "tensor", tname, "note",
                                                   "dropped: tie_word_embeddings is true, the model uses "
                                                   "model.embed_tokens.weight"));
        return 0;
    }
    int64_t rows, cols;
    qp_qtensor_rows_cols(e, &rows, &cols);
    uint64_t nelem = qp_qtensor_nelem(e);
    qp_tensor_plan plan;
    tp->n_tensors++;
    int rc = qp_quant_plan_tensor(&plan, &job->plan, tname, (int)json_array_size(json_object_get(e, "shape")), rows,
                                  cols);
    if (rc) {
        json_decref(extra);
        qp_error_prefix("stage '%s'", job->ctx->id);
        return rc;
    }
    if (plan.reason[0])
        json_array_append_new(tp->notes, json_pack("{s:s, s:s}", "tensor", tname, "note", plan.reason));
    const qp_quant_stored *st = qp_quant_results_get(job->results, tname);
    const char *st_format = st ? json_string_value(json_object_get(st->fields, "format")) : NULL;
    if (st_format && !strcmp(st_format, "dense")) {
        /* a tensor the algorithm changed but does not quantize (AWQ's scaled norms) */
        json_object_set_new(extra, "format", json_string("dense"));
        json_object_set(extra, "dtype", json_object_get(st->fields, "dtype"));
        return add_kept(job, tp, ename, st->digest, st->size, 8.0 * (double)st->size, nelem, extra);
    }
    if (plan.kind == QP_TP_DENSE && plan.qtype != QP_GGML_F16) {
        /* kept at source precision: the very same object */
        json_object_set_new(extra, "format", json_string("dense"));
        return add_kept(job, tp, ename, qp_artifact_entry_digest(e), size,
                        qp_qtensor_bits(e, (size_t)size) * (double)nelem, nelem, extra);
    }
    return quantize_tensor(job, tp, e, &plan, st, extra);
}

/* llama-quantize refuses a "very low-bit" type (IQ2_XXS, IQ2_XS, … : the
 * table of qp_ggml_needs_imatrix) for a tensor the importance matrix has
 * no entry for; qpipe refuses the same, before any tensor is quantized.
 * The tensors checked: every one for a method whose plan needs no run
 * (gguf); for the others, those an override gives a type. */
static int refuse_missing_imatrix(qp_quant_job *job)
{
    const qp_quant_common *c = job->common;
    const int full = !job->method->run;
    for (size_t k = 0; k < qp_artifact_count(job->model); k++) {
        const json_t *e = qp_artifact_entry(job->model, k);
        const char *ename = qp_artifact_entry_name(e);
        if (strncmp(ename, "tensors/", 8) != 0 || qp_quant_plan_drops(&job->plan, ename + 8))
            continue;
        const char *tname = ename + 8;
        const int ndim = (int)json_array_size(json_object_get(e, "shape"));
        if (!full) {
            const qp_quant_override *ov = NULL;
            for (size_t i = 0; i < c->n_overrides && !ov; i++)
                if (fnmatch(c->overrides[i].match, tname, 0) == 0)
                    ov = &c->overrides[i];
            if (!ov || !ov->type || ndim < 2)
                continue;
        }
        int64_t rows, cols;
        qp_qtensor_rows_cols(e, &rows, &cols);
        qp_tensor_plan plan;
        int rc = qp_quant_plan_tensor(&plan, &job->plan, tname, ndim, rows, cols);
        if (rc) {
            qp_error_prefix("stage '%s'", job->ctx->id);
            return rc;
        }
        char gname[256];
        if (plan.kind != QP_TP_GGML || qp_gguf_llama_name(gname, sizeof(gname), tname) != 0) {
            qp_error_clear();
            continue;
        }
        if (!qp_ggml_needs_imatrix(plan.qtype, (qp_llama_ftype)job->plan.ftype, gname) ||
            (job->imatrix && qp_imatrix_find(job->imatrix, gname)))
            continue;
        return qp_error_set(QP_EUSAGE,
                            "stage '%s': Missing importance matrix for tensor %s in a very low-bit quantization "
                            "(%s; llama-quantize refuses it too): %s, or give '%s' another type with override:",
                            job->ctx->id, gname, qp_qtype_get(plan.qtype)->name,
                            job->imatrix ? "use an imatrix: computed with an entry for it"
                                         : "set imatrix: to an importance matrix that covers it",
                            tname);
    }
    return 0;
}

/* What every quantized artifact records, then the method's own part. */
static void describe(qp_quant_job *job, tensor_pass *tp)
{
    qp_stage_ctx *ctx = job->ctx;
    qp_artifact *out = ctx->output;
    qp_artifact_set_metric(out, "bpw", tp->weights_all > 0 ? tp->bits_all / tp->weights_all : 0);
    qp_artifact_set_metric(out, "bpw_quantized", tp->weights_q > 0 ? tp->bits_q / tp->weights_q : 0);
    /* deployed size: every tensor at its exported bits per weight */
    qp_artifact_set_metric(out, "bytes", tp->bits_all / 8.0);
    qp_artifact_set_metric(out, "stored_bytes", (double)tp->bytes_all);
    qp_artifact_set_metric(out, "rel_error", tp->sum_ref > 0 ? sqrt(tp->sum_err / tp->sum_ref) : 0);
    qp_artifact_set_metric(out, "tensors_quantized", (double)tp->n_quantized);
    json_t *meta = qp_artifact_meta(out);
    json_t *jw = json_array();
    for (size_t w = 0; w < N_WORST && tp->worst[w].name[0]; w++)
        json_array_append_new(jw, json_pack("{s:s, s:f}", "tensor", tp->worst[w].name, "rel_error",
                                            tp->worst[w].rel_error));
    json_object_set_new(meta, "worst_tensors", jw);
    json_object_set(meta, "notes", tp->notes);
    json_object_set_new(meta, "method", json_string(job->method->name));
    json_object_set_new(meta, "params", json_deep_copy(ctx->params));
    json_object_set_new(meta, "source_model", json_string(ctx->input_digests[0]));
    if (job->calib)
        json_object_set_new(meta, "calibration", json_string(ctx->input_digests[1]));
    json_object_set(meta, "source", json_object_get(qp_artifact_meta_c(job->model), "source"));
    json_object_set_new(meta, "imatrix", json_boolean(job->imatrix != NULL));
    if (job->method->describe)
        job->method->describe(job, out);
    if (job->imatrix)
        describe_imatrix(job, meta);
    json_object_set_new(meta, "tensors", json_integer((json_int_t)tp->n_tensors));
    qp_artifact_set_type(out, QP_ART_QMODEL);
    if (tp->worst[0].name[0])
        qp_progress_note(ctx->progress, "worst tensor %s: rel error %.4f", tp->worst[0].name, tp->worst[0].rel_error);
}

static int quantize_run(qp_stage_ctx *ctx)
{
    qp_quant_job job;
    qp_quant_common common;
    void *opts = NULL;
    tensor_pass tp = {.notes = json_array()};
    int rc = job_open(&job, &common, &opts, ctx);
    if (rc == 0)
        rc = refuse_missing_imatrix(&job);
    if (rc == 0 && job.method->run)
        rc = job.method->run(&job);
    tp.total = qp_artifact_count(job.model);
    qp_bg_put_new(&tp.put, ctx->cache);
    for (tp.k = 0; tp.k < tp.total && rc == 0; tp.k++)
        rc = pass_entry(&job, &tp, qp_artifact_entry(job.model, tp.k));
    if (rc == 0)
        rc = collect_put(&job, &tp);
    if (rc == 0)
        describe(&job, &tp);
    qp_bg_put_free(tp.put);   /* after a failure: the put in flight joined, its result dropped */
    json_decref(tp.put_extra);
    free(tp.put_name);
    job_close(&job, &common, opts);
    json_decref(tp.notes);
    free(tp.f32);
    free(tp.back);
    qp_buf_free(&tp.src);
    free(tp.imat);
    return rc;
}

/* version 9: llama.cpp types from dense sources are encoded in one pass
 * (stages/qtensor_ggml.c) whose rel_error sums in four lanes per row: the
 * same blocks, a rel_error that differs in its last bits from version 8's */
const qp_stage_kind qp_stage_quantize = {
    .name = "quantize", .version = 9,
    .doc = "quantize a model (RTN, llama.cpp types, NF4, INT8, GPTQ, AWQ, sensitivity-driven mixed)",
    .params = params,
    .accepts = QP_ART_MODEL | QP_ART_CALIB, .min_inputs = 1, .max_inputs = 2,
    .output = QP_ART_QMODEL,
    .float_numerics = 1,
    .uses_threads = 1,
    .validate = quantize_validate,
    .run = quantize_run,
};
