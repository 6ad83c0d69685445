/* method mixed: measure each weight's sensitivity, then allocate types
 * (see stages/quant_mixed.h for the algorithm). */
#include "stages/quant_mixed.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "model/hf_names.h"
#include "model/eval.h"
#include "model/gguf_llama.h"
#include "model/llama_kernels.h"
#include "stages/layer_ckpt.h"
#include "stages/model_load.h"
#include "stages/qmethods.h"
#include "stages/qtensor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LADDER QP_QM_MAX_LADDER

typedef struct {
    char *name;               /* Hugging Face name */
    int layer;                /* -1: embedding, n_layers: lm_head, else its decoder layer */
    int64_t rows, cols;
    qp_ggml_type type[MAX_LADDER];
    double bytes[MAX_LADDER]; /* stored size at each ladder type */
    double kl[MAX_LADDER];    /* mean KLD per token with only this weight at that type */
    int level;                /* the allocator's current choice */
    void *packed[MAX_LADDER]; /* quantized bytes at each type, kept while within PACKED_KEEP_BYTES */
    int imatrix_used[MAX_LADDER];  /* whether those bytes were weighted by the importance matrix */
} mixed_tensor;

/* Quantized tensors kept between the sensitivity pass and the mixes checked
 * during allocation, so a check only dequantizes (K-quants with an
 * importance matrix cost far more to quantize than a forward pass over the
 * windows); beyond this, they are quantized again. */
#define PACKED_KEEP_BYTES ((size_t)1 << 30)

typedef struct {
    qp_stage_ctx *ctx;
    const qp_artifact *model;
    const qp_imatrix *imatrix;
    qp_loaded_model *lm;
    qp_llama *m;
    const int32_t *tokens;    /* [W, T] calibration windows */
    size_t W, T, D, V, L;
    float *x_cur;             /* [W, T, D] unquantized input of the layer being measured (x_store's memory) */
    qp_act_store *x_store;    /* holds x_cur, for the per-layer checkpoints */
    float *x_last;            /* [W, T, D] unquantized output of the last layer */
    float *buf;               /* [T, D] */
    float *logits;            /* [T, V] */
    qp_kl_ref *ref;
    size_t n_ladder;
    mixed_tensor *t;
    size_t n;
    uint64_t measured;        /* forward measurements so far (progress) */
    size_t packed_kept;       /* bytes held in mixed_tensor.packed */
    double ppl_ref;           /* perplexity of the unquantized model on the windows */
} mixed_ctx;

static int tensor_layer(const char *name, size_t L)
{
    int l = qp_hf_layer_of(name, NULL);
    if (l >= 0)
        return l;
    return strcmp(name, QP_HF_LM_HEAD) == 0 ? (int)L : -1;
}

/* dst [rows, cols] = dequantize(quantize(w, ladder type k)); imatrix
 * weights when the type uses them.  w may be NULL when the quantized bytes
 * are kept from before. */
static int quant_dequant(mixed_ctx *mc, mixed_tensor *t, size_t k, const float *w, float *dst)
{
    qp_ggml_type type = t->type[k];
    size_t row_size = qp_qtype_row_size(type, t->cols), size = row_size * (size_t)t->rows;
    void *packed = t->packed[k];
    float *imw = NULL;
    int rc = 0;
    if (packed)
        goto dequantize;
    if (!w)
        return qp_error_set(QP_ERROR, "internal: '%s' has no weights to quantize", t->name);
    packed = qp_xmalloc(size);
    if (mc->imatrix && qp_qtype_get(type)->uses_imatrix) {
        char gname[256];
        if ((rc = qp_gguf_llama_name(gname, sizeof(gname), t->name)) != 0)
            goto done;
        imw = qp_xmalloc((size_t)t->cols * sizeof(float));
        rc = qp_imatrix_weights(mc->imatrix, gname, t->cols, imw);
        if (rc == QP_ENOTFOUND) {
            qp_error_clear();   /* llama-quantize goes without for this tensor */
            free(imw);
            imw = NULL;
            rc = 0;
        } else if (rc) {
            goto done;
        }
    }
    if ((rc = qp_quantize(type, w, packed, t->rows, t->cols, imw, mc->ctx->threads)) != 0)
        goto done;
    if (mc->packed_kept + size <= PACKED_KEEP_BYTES) {
        t->packed[k] = packed;
        t->imatrix_used[k] = imw != NULL;
        mc->packed_kept += size;
    }
dequantize:
    for (int64_t r = 0; r < t->rows && rc == 0; r++)
        rc = qp_dequantize_row(type, (const char *)packed + (size_t)r * row_size, dst + (size_t)r * (size_t)t->cols,
                               t->cols);
done:
    free(imw);
    if (packed != t->packed[k])
        free(packed);
    return rc;
}


/* Over the windows, running from `layer` (-1 from the embedding, L only the
 * head, else layers layer..L-1 from x_cur): the mean KLD per token from the
 * reference, and (nll may be NULL) the mean next-token NLL. */
static int measure_from(mixed_ctx *mc, int layer, double *kl_mean, double *nll)
{
    double sum = 0, nll_sum = 0;
    int rc = 0;
    for (size_t s = 0; s < mc->W && rc == 0; s++) {
        const float *x;
        if ((size_t)layer == mc->L) {
            x = mc->x_last + s * mc->T * mc->D;
        } else {
            if (layer < 0)
                rc = qp_llama_embed(mc->m, mc->tokens + s * mc->T, mc->T, mc->buf);
            else
                memcpy(mc->buf, mc->x_cur + s * mc->T * mc->D, mc->T * mc->D * sizeof(float));
            for (size_t l = layer < 0 ? 0 : (size_t)layer; l < mc->L && rc == 0; l++)
                rc = qp_llama_layer(mc->m, (int)l, mc->buf, mc->T, NULL, NULL);
            x = mc->buf;
        }
        if (rc == 0 && (rc = qp_llama_head(mc->m, x, mc->T, mc->logits)) == 0) {
            sum += qp_kl_ref_sum(mc->ref, s * mc->T, mc->logits, mc->T);
            for (size_t t = 0; nll && t + 1 < mc->T; t++)
                nll_sum += qp_kern_row_nll(mc->logits + t * mc->V, mc->V, mc->tokens[s * mc->T + t + 1]);
        }
    }
    *kl_mean = sum / (double)(mc->W * mc->T);
    if (nll)
        *nll = nll_sum / (double)(mc->W * (mc->T - 1));
    return rc;
}

/* The unquantized reference: distributions, x_last, and x_cur = layer 0's input. */
static int reference_pass(mixed_ctx *mc)
{
    double nll = 0;
    int rc = 0;
    for (size_t s = 0; s < mc->W && rc == 0; s++) {
        float *x0 = mc->x_cur + s * mc->T * mc->D, *xl = mc->x_last + s * mc->T * mc->D;
        if ((rc = qp_llama_embed(mc->m, mc->tokens + s * mc->T, mc->T, x0)) != 0)
            break;
        memcpy(xl, x0, mc->T * mc->D * sizeof(float));
        for (size_t l = 0; l < mc->L && rc == 0; l++)
            rc = qp_llama_layer(mc->m, (int)l, xl, mc->T, NULL, NULL);
        if (rc == 0 && (rc = qp_llama_head(mc->m, xl, mc->T, mc->logits)) == 0)
            rc = qp_kl_ref_set(mc->ref, s * mc->T, mc->logits, mc->T);
        for (size_t t = 0; rc == 0 && t + 1 < mc->T; t++)
            nll += qp_kern_row_nll(mc->logits + t * mc->V, mc->V, mc->tokens[s * mc->T + t + 1]);
    }
    mc->ppl_ref = exp(nll / (double)(mc->W * (mc->T - 1)));
    return rc;
}

/* s[t][k] for one weight: quantized alone at each ladder type. */
static int measure_tensor(mixed_ctx *mc, mixed_tensor *t)
{
    float *w = NULL, *q = NULL;
    int64_t rows, cols;
    char *what = qp_strfmt("stage '%s'", mc->ctx->id);   /* the loader adds the tensor */
    int rc = qp_model_artifact_tensor_f32(&w, &rows, &cols, mc->model, mc->ctx->cache, t->name, what);
    if (rc)
        goto done;
    q = qp_xmalloc((size_t)(rows * cols) * sizeof(float));
    for (size_t k = 0; k < mc->n_ladder && rc == 0; k++) {
        if (k > 0 && t->type[k] == t->type[k - 1]) {
            t->kl[k] = t->kl[k - 1];   /* the same type after llama.cpp's fallback */
            continue;
        }
        if ((rc = quant_dequant(mc, t, k, w, q)) != 0 ||
            (rc = qp_loaded_model_override(mc->lm, t->name, q, (uint64_t)(rows * cols))) != 0 ||
            (rc = qp_llama_reload_weight(mc->m, t->name)) != 0 || (rc = measure_from(mc, t->layer, &t->kl[k], NULL)) != 0)
            break;
        qp_progress_update(mc->ctx->progress, ++mc->measured, (uint64_t)(mc->n * mc->n_ladder), "measurements");
    }
    qp_loaded_model_restore(mc->lm, t->name);
    if (rc == 0)
        rc = qp_llama_reload_weight(mc->m, t->name);
done:
    free(what);
    free(w);
    free(q);
    return rc;
}

/* Mean KLD and perplexity of the whole mix (every weight at its current level). */
static int measure_mix(mixed_ctx *mc, double *kl_mean, double *ppl)
{
    double nll = 0;
    float *w = NULL, *q = NULL;
    int rc = 0;
    for (size_t i = 0; i < mc->n && rc == 0; i++) {
        mixed_tensor *t = &mc->t[i];
        int64_t rows = t->rows, cols = t->cols;
        free(w);
        w = NULL;
        if (!t->packed[t->level] &&
            (rc = qp_model_artifact_tensor_f32(&w, &rows, &cols, mc->model, mc->ctx->cache, t->name, t->name)) != 0)
            break;
        q = qp_xrealloc(q, (size_t)(rows * cols) * sizeof(float));
        if ((rc = quant_dequant(mc, t, (size_t)t->level, w, q)) == 0 &&
            (rc = qp_loaded_model_override(mc->lm, t->name, q, (uint64_t)(rows * cols))) == 0)
            rc = qp_llama_reload_weight(mc->m, t->name);
    }
    if (rc == 0)
        rc = measure_from(mc, -1, kl_mean, &nll);
    *ppl = exp(nll);
    /* the unquantized weights again, only those that changed */
    for (size_t i = 0; i < mc->n; i++) {
        qp_loaded_model_restore(mc->lm, mc->t[i].name);
        if (rc == 0)
            rc = qp_llama_reload_weight(mc->m, mc->t[i].name);
    }
    free(w);
    free(q);
    return rc;
}

/* Bits a tensor takes under a plan, as the quantize stage counts them. */
static double plan_bits(const qp_tensor_plan *tp, const json_t *e, int64_t rows, int64_t cols)
{
    uint64_t nelem = qp_qtensor_nelem(e);
    if (tp->kind == QP_TP_GGML)
        return 8.0 * (double)qp_qtype_row_size(tp->qtype, cols) * (double)rows;
    if (tp->kind == QP_TP_DENSE && tp->qtype == QP_GGML_F16)
        return 16.0 * (double)nelem;
    return qp_qtensor_bits(e, (size_t)json_integer_value(json_object_get(e, "size"))) * (double)nelem;
}

/* The plan of model entry e: 1 for a tensor (tp, rows, cols filled), 0 for
 * another entry, or a negative qp_err. */
static int plan_entry(qp_tensor_plan *tp, int64_t *rows, int64_t *cols, const qp_quant_plan *plan, const json_t *e)
{
    const char *name = qp_artifact_entry_name(e);
    if (strncmp(name, "tensors/", 8) != 0 || qp_quant_plan_drops(plan, name + 8))
        return 0;   /* not a tensor, or one quantize drops */
    qp_qtensor_rows_cols(e, rows, cols);
    int ndim = (int)json_array_size(json_object_get(e, "shape"));
    int rc = qp_quant_plan_tensor(tp, plan, name + 8, ndim, *rows, *cols);
    return rc ? rc : 1;
}

/* Bits per weight llama.cpp's file type `type` gives this model. */
static int bpw_of_ftype(double *out, const qp_artifact *model, const qp_llama_config *cfg, const char *type,
                        int has_imatrix)
{
    /* method gguf at that file type, nothing skipped or overridden */
    const qp_quant_common none = {.imatrix = ""};
    const qp_qm_gguf_opts gguf = {.ftype = qp_llama_ftype_parse(type), .pure = 0};
    qp_quant_plan plan;
    qp_quant_plan_init(&plan, &qp_qm_gguf, &gguf, &none, cfg, has_imatrix);
    double bits = 0, weights = 0;
    int rc = 0;
    for (size_t k = 0; rc == 0 && k < qp_artifact_count(model); k++) {
        const json_t *e = qp_artifact_entry(model, k);
        int64_t rows, cols;
        qp_tensor_plan tp;
        int is_tensor = plan_entry(&tp, &rows, &cols, &plan, e);
        if (is_tensor <= 0) {
            rc = is_tensor;
            continue;
        }
        bits += plan_bits(&tp, e, rows, cols);
        weights += (double)qp_qtensor_nelem(e);
    }
    *out = weights > 0 ? bits / weights : 0;
    return rc;
}

static json_t *type_names(const mixed_tensor *t, size_t n_ladder)
{
    json_t *a = json_array();
    for (size_t k = 0; k < n_ladder; k++)
        json_array_append_new(a, json_string(qp_qtype_get(t->type[k])->name));
    return a;
}

typedef struct {
    size_t tensor;
    int from, to;
    double gain, cost_bits;
} raise_step;

/* The greedy sequence: from all-lowest, the step with the largest measured
 * gain per added bit that still fits the budget, until none is left.  Any
 * prefix of it is an allocation; the budget alone takes all of it. */
static int greedy_sequence(mixed_ctx *mc, double budget_bits, double bits, raise_step **out, size_t *n_out)
{
    size_t cap = mc->n * mc->n_ladder + 1, n = 0;
    raise_step *seq = qp_xmalloc(cap * sizeof(*seq));
    for (;;) {
        long best = -1;
        size_t best_k = 0;
        double best_eff = 0;
        for (size_t i = 0; i < mc->n; i++) {
            const mixed_tensor *t = &mc->t[i];
            for (size_t k = (size_t)t->level + 1; k < mc->n_ladder; k++) {
                double gain = t->kl[t->level] - t->kl[k], cost = 8.0 * (t->bytes[k] - t->bytes[t->level]);
                if (gain <= 0 || cost <= 0 || (budget_bits > 0 && bits + cost > budget_bits))
                    continue;
                if (gain / cost > best_eff) {   /* strict: ties keep the earlier weight, deterministic */
                    best = (long)i;
                    best_k = k;
                    best_eff = gain / cost;
                }
            }
        }
        if (best < 0 || n == cap)
            break;
        mixed_tensor *t = &mc->t[best];
        seq[n++] = (raise_step){(size_t)best, t->level, (int)best_k, t->kl[t->level] - t->kl[best_k],
                                8.0 * (t->bytes[best_k] - t->bytes[t->level])};
        bits += seq[n - 1].cost_bits;
        t->level = (int)best_k;
    }
    *out = seq;
    *n_out = n;
    return 0;
}

static void apply_prefix(mixed_ctx *mc, const raise_step *seq, size_t p)
{
    for (size_t i = 0; i < mc->n; i++)
        mc->t[i].level = 0;
    for (size_t j = 0; j < p; j++)
        mc->t[seq[j].tensor].level = seq[j].to;
}

typedef struct {
    double max_kld, max_ppl_delta, max_ppl_ratio;
} mixed_target;

static int target_given(const mixed_target *g)
{
    return g->max_kld > 0 || g->max_ppl_delta > 0 || g->max_ppl_ratio > 0;
}

static int target_met(const mixed_ctx *mc, const mixed_target *g, double kl, double ppl)
{
    return (g->max_kld <= 0 || kl <= g->max_kld) && (g->max_ppl_delta <= 0 || ppl - mc->ppl_ref <= g->max_ppl_delta) &&
           (g->max_ppl_ratio <= 0 || ppl / mc->ppl_ref <= g->max_ppl_ratio);
}

/* Measures the mix of prefix p of seq; records it in checks. */
static int check_prefix(mixed_ctx *mc, const raise_step *seq, size_t p, double *kl, double *ppl, json_t *checks)
{
    apply_prefix(mc, seq, p);
    int rc = measure_mix(mc, kl, ppl);
    if (rc == 0)
        json_array_append_new(checks, json_pack("{s:I, s:f, s:f}", "raised", (json_int_t)p, "kld", *kl, "ppl", *ppl));
    return rc;
}

/* Picks the prefix of the greedy sequence (see the header): all of it for a
 * budget alone; with a target, the shortest prefix whose measured mix meets
 * it — measured at prefixes where the predicted KLD (last measurement minus
 * the gains since) has fallen by a fifth, then bisected between the last
 * miss and the first hit. */
static int allocate(mixed_ctx *mc, double budget_bits, double *cur_bits, const mixed_target *g, json_t *report)
{
    raise_step *seq = NULL;
    size_t n = 0, p;
    json_t *raised = json_array(), *checks = json_array();
    double kl, ppl, kl_low, ppl_low;
    int rc = greedy_sequence(mc, budget_bits, *cur_bits, &seq, &n);
    if (rc || (rc = check_prefix(mc, seq, 0, &kl_low, &ppl_low, checks)) != 0)
        goto done;
    kl = kl_low;
    ppl = ppl_low;
    int reached = !target_given(g) || target_met(mc, g, kl, ppl);
    if (!target_given(g)) {
        p = n;
        if (n > 0 && (rc = check_prefix(mc, seq, n, &kl, &ppl, checks)) != 0)
            goto done;
    } else if (reached) {
        p = 0;
    } else {
        size_t lo = 0, hi = 0;   /* lo: a measured miss; hi: a measured hit (0 = none yet) */
        while (lo < n) {
            double predicted = kl;
            size_t q = lo;
            while (q < n && (predicted > 0.8 * kl && !(g->max_kld > 0 && predicted <= g->max_kld)))
                predicted -= seq[q++].gain;
            q = q > lo ? q : lo + 1;
            if ((rc = check_prefix(mc, seq, q, &kl, &ppl, checks)) != 0)
                goto done;
            if (target_met(mc, g, kl, ppl)) {
                hi = q;
                break;
            }
            lo = q;
        }
        reached = hi > 0;
        p = reached ? hi : n;
        while (reached && hi - lo > 1) {
            size_t mid = lo + (hi - lo) / 2;
            double k2, p2;
            if ((rc = check_prefix(mc, seq, mid, &k2, &p2, checks)) != 0)
                goto done;
            if (target_met(mc, g, k2, p2))
                hi = mid;
            else
                lo = mid;
        }
        p = reached ? hi : n;
        /* the chosen prefix's numbers, measured again only if the last check was another */
        const json_t *last = json_array_get(checks, json_array_size(checks) - 1);
        if ((size_t)json_integer_value(json_object_get(last, "raised")) != p) {
            if ((rc = check_prefix(mc, seq, p, &kl, &ppl, checks)) != 0)
                goto done;
        } else {
            kl = json_number_value(json_object_get(last, "kld"));
            ppl = json_number_value(json_object_get(last, "ppl"));
        }
    }
    apply_prefix(mc, seq, p);
    for (size_t j = 0; j < p; j++) {
        const mixed_tensor *t = &mc->t[seq[j].tensor];
        *cur_bits += seq[j].cost_bits;
        json_array_append_new(raised, json_pack("{s:s, s:s, s:s, s:f, s:f}", "tensor", t->name, "from",
                                                qp_qtype_get(t->type[seq[j].from])->name, "to",
                                                qp_qtype_get(t->type[seq[j].to])->name, "kld_gain", seq[j].gain,
                                                "bytes_added", seq[j].cost_bits / 8.0));
    }
    json_object_set_new(report, "kld_lowest", json_real(kl_low));
    json_object_set_new(report, "ppl_lowest", json_real(ppl_low));
    json_object_set_new(report, "ppl_ref", json_real(mc->ppl_ref));
    json_object_set_new(report, "kld_mix", json_real(kl));
    json_object_set_new(report, "ppl_mix", json_real(ppl));
    json_object_set_new(report, "target_reached", json_boolean(reached));
    json_object_set(report, "raised", raised);
    json_object_set(report, "checks", checks);
    if (!reached)
        qp_progress_note(mc->ctx->progress, "mixed: the target is not reached within the budget/ladder (KLD %.5f, "
                                            "ppl %.4f vs %.4f); the gate decides", kl, ppl, mc->ppl_ref);
done:
    free(seq);
    json_decref(raised);
    json_decref(checks);
    return rc;
}

/* The chosen type's bytes of every weight still held, stored in the cache
 * so the quantize stage takes them instead of quantizing again. */
static int store_chosen(qp_quant_results *stored, mixed_ctx *mc)
{
    for (size_t i = 0; i < mc->n; i++) {
        const mixed_tensor *t = &mc->t[i];
        const void *bytes = t->packed[t->level];
        if (!bytes)
            continue;   /* beyond PACKED_KEEP_BYTES: quantize encodes it */
        size_t size = qp_qtype_row_size(t->type[t->level], t->cols) * (size_t)t->rows;
        char digest[QP_HEX_LEN];
        int rc = qp_cache_put(mc->ctx->cache, bytes, size, digest);
        if (rc)
            return rc;
        qp_quant_results_put(stored, t->name, digest, size, 8.0 * (double)size / (double)(t->rows * t->cols),
                             json_pack("{s:s, s:s, s:b}", "format", "ggml", "qtype",
                                       qp_qtype_get(t->type[t->level])->name, "imatrix", t->imatrix_used[t->level]));
    }
    return 0;
}

/* The weights the allocator decides (mc->t, at their ladder types), the
 * bits of all the others (*fixed_bits), every weight (*weights) and the bits
 * of the decided ones at the lowest type (*cur_bits). */
static int collect_tensors(mixed_ctx *mc, const qp_quant_job *job, double *fixed_bits, double *weights,
                           double *cur_bits)
{
    const qp_qm_mixed_opts *o = job->opts;
    int rc = 0;
    mc->t = qp_xcalloc(qp_artifact_count(job->model) + 1, sizeof(mixed_tensor));
    for (size_t k = 0; k < qp_artifact_count(job->model) && rc == 0; k++) {
        const json_t *e = qp_artifact_entry(job->model, k);
        int64_t rows, cols;
        qp_tensor_plan tp;
        int is_tensor = plan_entry(&tp, &rows, &cols, &job->plan, e);
        if (is_tensor <= 0) {
            rc = is_tensor;
            continue;
        }
        *weights += (double)qp_qtensor_nelem(e);
        if (!tp.mixed) {
            *fixed_bits += plan_bits(&tp, e, rows, cols);
            continue;
        }
        mixed_tensor *t = &mc->t[mc->n++];
        t->name = qp_xstrdup(qp_artifact_entry_name(e) + 8);
        t->layer = tensor_layer(t->name, mc->L);
        t->rows = rows;
        t->cols = cols;
        for (size_t j = 0; j < mc->n_ladder && rc == 0; j++) {
            qp_ggml_type want = qp_qtype_by_name(o->ladder[j])->type;
            if ((rc = qp_qtype_fallback(&t->type[j], want, cols)) != 0)
                qp_error_prefix("stage '%s': tensor '%s'", job->ctx->id, t->name);
            t->bytes[j] = (double)qp_qtype_row_size(t->type[j], cols) * (double)rows;
        }
        /* a weight the importance matrix has no entry for (token_embd: its
         * input is token ids) cannot take a type that needs one (IQ2_XXS,
         * IQ2_XS, IQ2_S): it takes the next ladder type that does not */
        char gname[256];
        int has_im = rc == 0 && job->imatrix && qp_gguf_llama_name(gname, sizeof(gname), t->name) == 0 &&
                     qp_imatrix_find(job->imatrix, gname);
        if (rc == 0)
            qp_error_clear();
        for (size_t j = mc->n_ladder; rc == 0 && !has_im && j-- > 0;) {
            if (!qp_qtype_get(t->type[j])->needs_imatrix)
                continue;
            if (j + 1 == mc->n_ladder)
                rc = qp_error_set(QP_EUSAGE, "stage '%s': tensor '%s' has no importance matrix entry and the "
                                             "ladder's highest type %s needs one; end the ladder with a type that "
                                             "does not (Q4_K, Q6_K …)", job->ctx->id, t->name, o->ladder[j]);
            else {
                t->type[j] = t->type[j + 1];
                t->bytes[j] = t->bytes[j + 1];
            }
        }
        *cur_bits += 8.0 * t->bytes[0];
    }
    if (rc == 0 && mc->n == 0)
        rc = qp_error_set(QP_EUSAGE, "stage '%s': method mixed has no weight left to decide (all skipped or "
                                     "overridden)", job->ctx->id);
    return rc;
}

/* The calibration windows, the model and the unquantized reference on them. */
static int open_windows(mixed_ctx *mc, const qp_quant_job *job, int32_t **samples)
{
    qp_stage_ctx *ctx = job->ctx;
    const qp_qm_mixed_opts *o = job->opts;
    char *what = qp_strfmt("stage '%s': input '%s'", ctx->id, ctx->input_ids[0]);
    int rc = qp_loaded_model_open(&mc->lm, job->model, ctx->cache, ctx->threads, what);
    free(what);
    if (rc)
        return rc;
    mc->m = qp_loaded_model_llama(mc->lm);
    const qp_llama_hparams *hp = qp_llama_get_hparams(mc->m);
    int64_t S, T;
    if ((rc = qp_calib_samples_load(samples, &S, &T, ctx, job->calib, hp->max_pos, 2)) != 0)
        return rc;
    mc->W = (size_t)o->windows;
    mc->W = mc->W < (size_t)S ? mc->W : (size_t)S;
    mc->T = (size_t)T;
    mc->D = (size_t)hp->hidden;
    mc->V = (size_t)hp->vocab;
    mc->tokens = *samples;
    /* in memory always (measure_from reads windows directly) */
    if ((rc = qp_act_store_new(&mc->x_store, mc->ctx->cache, mc->W, mc->T * mc->D, 0, "mixed")) != 0)
        return rc;
    mc->x_cur = qp_act_store_data(mc->x_store);
    mc->x_last = qp_xmalloc(mc->W * mc->T * mc->D * sizeof(float));
    mc->buf = qp_xmalloc(mc->T * mc->D * sizeof(float));
    mc->logits = qp_xmalloc(mc->T * mc->V * sizeof(float));
    if ((rc = qp_kl_ref_new(&mc->ref, mc->W * mc->T, mc->V)) == 0)
        rc = reference_pass(mc);
    return rc;
}

/* A checkpoint after decoder layer l: the KLDs measured so far (the
 * embedding's and layers 0..l's, C99 hex floats: bit-exact), with x_cur. */
static int save_sensitivities(mixed_ctx *mc, qp_layer_ckpt *ck, int l)
{
    json_t *kl = json_object();
    for (size_t i = 0; i < mc->n; i++) {
        const mixed_tensor *t = &mc->t[i];
        if (t->layer > l)
            continue;
        json_t *a = json_array();
        for (size_t k = 0; k < mc->n_ladder; k++) {
            char v[64];
            snprintf(v, sizeof(v), "%a", t->kl[k]);
            json_array_append_new(a, json_string(v));
        }
        json_object_set_new(kl, t->name, a);
    }
    json_t *state = json_pack("{s:o}", "kld", kl);
    int rc = qp_layer_ckpt_save(ck, l, state, mc->x_store, mc->W, mc->T * mc->D, NULL, 0);
    json_decref(state);
    return rc;
}

/* Takes a checkpoint's KLDs (every weight up to its layer; x_cur follows),
 * or nothing when one is missing or malformed. */
static int load_sensitivities(void *ud, int layer, const json_t *state)
{
    mixed_ctx *mc = ud;
    const json_t *kl = json_object_get(state, "kld");
    double *v = qp_xcalloc(mc->n * mc->n_ladder, sizeof(double));
    int rc = json_is_object(kl) ? 0 : qp_error_set(QP_EFORMAT, "its state has no KLDs");
    for (size_t i = 0; i < mc->n && rc == 0; i++) {
        const mixed_tensor *t = &mc->t[i];
        if (t->layer > layer)
            continue;
        const json_t *a = json_object_get(kl, t->name);
        if (!json_is_array(a) || json_array_size(a) != mc->n_ladder) {
            rc = qp_error_set(QP_EFORMAT, "its KLDs of %s are missing", t->name);
            break;
        }
        for (size_t k = 0; k < mc->n_ladder && rc == 0; k++) {
            const char *str = json_string_value(json_array_get(a, k));
            char *end = NULL;
            v[i * mc->n_ladder + k] = str ? strtod(str, &end) : 0;
            if (!str || end == str || *end)
                rc = qp_error_set(QP_EFORMAT, "its KLD %zu of %s is not a number", k, t->name);
        }
    }
    for (size_t i = 0; i < mc->n && rc == 0; i++)
        if (mc->t[i].layer <= layer) {
            memcpy(mc->t[i].kl, v + i * mc->n_ladder, mc->n_ladder * sizeof(double));
            mc->measured += mc->n_ladder;
        }
    free(v);
    return rc;
}

/* 1. sensitivities: the embedding (whole model), then layer by layer from
 * the stored input, advancing it through the unquantized layer; lm_head
 * last, from the stored output.  Checkpointed after every layer. */
static int measure_all(mixed_ctx *mc)
{
    qp_layer_ckpt *ck = qp_layer_ckpt_new(mc->ctx, "mixed", (int)mc->L);
    int start = 0;
    int rc = qp_layer_ckpt_resume(ck, mc->x_store, mc->W, mc->T * mc->D, load_sensitivities, mc, &start);
    for (size_t i = 0; i < mc->n && rc == 0 && start == 0; i++)
        if (mc->t[i].layer < 0)
            rc = measure_tensor(mc, &mc->t[i]);
    for (size_t l = (size_t)start; l < mc->L && rc == 0; l++) {
        for (size_t i = 0; i < mc->n && rc == 0; i++)
            if (mc->t[i].layer == (int)l)
                rc = measure_tensor(mc, &mc->t[i]);
        for (size_t s = 0; s < mc->W && rc == 0; s++)
            rc = qp_llama_layer(mc->m, (int)l, mc->x_cur + s * mc->T * mc->D, mc->T, NULL, NULL);
        if (rc == 0)
            rc = save_sensitivities(mc, ck, (int)l);
    }
    for (size_t i = 0; i < mc->n && rc == 0; i++)
        if ((size_t)mc->t[i].layer == mc->L)
            rc = measure_tensor(mc, &mc->t[i]);
    if (rc == 0)
        qp_layer_ckpt_finish(ck);
    qp_layer_ckpt_free(ck);
    return rc;
}

static json_t *ladder_json(const qp_qm_mixed_opts *o)
{
    json_t *a = json_array();
    for (size_t k = 0; k < o->n_ladder; k++)
        json_array_append_new(a, json_string(o->ladder[k]));
    return a;
}

/* The report's settings, before allocate() adds its numbers. */
static void report_settings(json_t *rep, const mixed_ctx *mc, const qp_qm_mixed_opts *o, int measured,
                            double max_bpw, const mixed_target *target)
{
    json_object_set_new(rep, "sensitivity_measured", json_boolean(measured));
    json_object_set_new(rep, "ladder", ladder_json(o));
    json_object_set_new(rep, "windows", json_integer((json_int_t)mc->W));
    json_object_set_new(rep, "tokens", json_integer((json_int_t)(mc->W * mc->T)));
    json_object_set_new(rep, "max_bpw", json_real(max_bpw));
    if (o->bpw_of[0])
        json_object_set_new(rep, "bpw_of", json_string(o->bpw_of));
    json_object_set_new(rep, "max_kld", json_real(target->max_kld));
    json_object_set_new(rep, "max_ppl_delta", json_real(target->max_ppl_delta));
    json_object_set_new(rep, "max_ppl_ratio", json_real(target->max_ppl_ratio));
}

/* The per-weight part of the report, and {hf_name: type} for the plan. */
static void report_choices(json_t *rep, json_t *asg, const mixed_ctx *mc, int measured)
{
    json_t *sens = json_array();
    for (size_t i = 0; i < mc->n; i++) {
        const mixed_tensor *t = &mc->t[i];
        json_t *kl = json_array(), *by = json_array();
        for (size_t k = 0; k < mc->n_ladder; k++) {
            json_array_append_new(kl, measured ? json_real(t->kl[k]) : json_null());
            json_array_append_new(by, json_integer((json_int_t)t->bytes[k]));
        }
        json_array_append_new(sens, json_pack("{s:s, s:o, s:o, s:o, s:s}", "tensor", t->name, "types",
                                              type_names(t, mc->n_ladder), "kld", kl, "bytes", by, "chosen",
                                              qp_qtype_get(t->type[t->level])->name));
        json_object_set_new(asg, t->name, json_string(qp_qtype_get(t->type[t->level])->name));
    }
    json_object_set_new(rep, "sensitivity", sens);
}

/* The budget in bits per weight (max_bpw, or what bpw_of gives this model). */
static int budget_bpw(double *max_bpw, const qp_quant_job *job)
{
    const qp_qm_mixed_opts *o = job->opts;
    *max_bpw = o->max_bpw;
    if (!o->bpw_of[0])
        return 0;
    int rc = bpw_of_ftype(max_bpw, job->model, &job->cfg, o->bpw_of, job->imatrix != NULL);
    if (rc)
        qp_error_prefix("stage '%s': bpw_of", job->ctx->id);
    return rc;
}

static void mixed_close(mixed_ctx *mc, int32_t *samples)
{
    for (size_t i = 0; mc->t && i < mc->n; i++) {
        free(mc->t[i].name);
        for (size_t k = 0; k < MAX_LADDER; k++)
            free(mc->t[i].packed[k]);
    }
    free(mc->t);
    qp_kl_ref_free(mc->ref);
    qp_loaded_model_free(mc->lm);
    qp_act_store_free(mc->x_store);
    free(mc->x_last);
    free(mc->buf);
    free(mc->logits);
    free(samples);
}

int qp_quant_mixed_assign(qp_quant_job *job)
{
    qp_stage_ctx *ctx = job->ctx;
    const qp_qm_mixed_opts *o = job->opts;
    mixed_ctx mc = {.ctx = ctx, .model = job->model, .imatrix = job->imatrix, .n_ladder = o->n_ladder,
                    .L = (size_t)job->cfg.n_layers};
    int32_t *samples = NULL;
    json_t *rep = json_object(), *asg = json_object();
    double fixed_bits = 0, weights = 0, cur_bits = 0, max_bpw = 0;
    int rc = collect_tensors(&mc, job, &fixed_bits, &weights, &cur_bits);
    if (rc || (rc = budget_bpw(&max_bpw, job)) != 0)
        goto done;
    double budget_bits = max_bpw > 0 ? max_bpw * weights - fixed_bits : 0;
    if (max_bpw > 0 && cur_bits > budget_bits) {
        rc = qp_error_set(QP_EUSAGE, "stage '%s': %.4f bits per weight is below what the lowest ladder type "
                                     "needs (%.4f); raise max_bpw or lower the ladder", ctx->id, max_bpw,
                          (cur_bits + fixed_bits) / weights);
        goto done;
    }
    if ((rc = open_windows(&mc, job, &samples)) != 0)
        goto done;
    mixed_target target = {o->max_kld, o->max_ppl_delta, o->max_ppl_ratio};
    /* a target the all-lowest mix already meets needs no sensitivities
     * (the default policy's mixed candidate when INT4 would have passed) */
    int skip_sensitivity = 0;
    if (target_given(&target)) {
        double kl0, ppl0;
        if ((rc = measure_mix(&mc, &kl0, &ppl0)) != 0)
            goto done;
        skip_sensitivity = target_met(&mc, &target, kl0, ppl0);
    }
    if (!skip_sensitivity && (rc = measure_all(&mc)) != 0)
        goto done;
    /* 2. allocation (with no sensitivities every gain is 0: nothing is raised) */
    report_settings(rep, &mc, o, !skip_sensitivity, max_bpw, &target);
    if ((rc = allocate(&mc, budget_bits, &cur_bits, &target, rep)) != 0)
        goto done;
    json_object_set_new(rep, "bpw", json_real((cur_bits + fixed_bits) / weights));
    report_choices(rep, asg, &mc, !skip_sensitivity);
    qp_progress_note(ctx->progress, "mixed: %zu of %zu weights raised, %.4f bpw, KLD %.5f on calibration (all %s: "
                                    "%.5f)", json_array_size(json_object_get(rep, "raised")), mc.n,
                     json_number_value(json_object_get(rep, "bpw")),
                     json_number_value(json_object_get(rep, "kld_mix")), o->ladder[0],
                     json_number_value(json_object_get(rep, "kld_lowest")));
    if ((rc = store_chosen(job->results, &mc)) != 0)
        goto done;
    job->report = rep;
    job->plan.assign = asg;
    rep = asg = NULL;
done:
    mixed_close(&mc, samples);
    json_decref(rep);
    json_decref(asg);
    return rc;
}
