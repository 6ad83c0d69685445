/* One prediction per stage kind (stages/estimate.h): the work each stage
 * does as it is written today, in FLOPs and bytes, divided by the machine's
 * rates; the peak RSS as what the stage holds at its fullest.  When a stage
 * changes how it works, change its function here and re-fit the
 * coefficients (stages/estimate_model.c). */
#include "stages/estimate.h"
#include "stages/calib_stats.h"
#include "stages/qmethod.h"
#include "stages/quant_plan.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/seqout.h"
#include "common/ggml_types.h"
#include "common/alloc.h"
#include "model/eval.h"
#include "model/hf_names.h"
#include "quant/qtypes.h"
#include "stages/act_store.h"
#include "stages/model_load.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MB 1e6
/* common/seqout.h: the staging buffers the helpers hold, and all of them */
#define SEQ_RING ((double)(QP_SEQOUT_NBUF - 1) * QP_SEQOUT_BUF)
#define SEQ_STAGING ((uint64_t)QP_SEQOUT_NBUF * QP_SEQOUT_BUF)

typedef struct {
    qp_est_result *r;
    const qp_est_machine *m;
    const qp_est_coef *c;
    int threads;
} est;

static void term(est *e, const char *name, double seconds)
{
    qp_est_result *r = e->r;
    for (size_t i = 0; i < r->n_terms; i++)
        if (strcmp(r->terms[i].name, name) == 0) {
            r->terms[i].seconds += seconds;
            r->seconds += seconds;
            return;
        }
    if (r->n_terms < QP_EST_MAX_TERMS) {
        r->terms[r->n_terms].name = name;
        r->terms[r->n_terms++].seconds = seconds;
    }
    r->seconds += seconds;
}

static double secs(double bytes, double mbs)
{
    return bytes / MB / mbs;
}

static int is_quantized_fmt(const qp_est_tensor *t)
{
    return t->fmt != QP_EST_DENSE;
}

static double zratio(const est *e, const qp_est_tensor *t)
{
    return is_quantized_fmt(t) ? e->m->zratio_q : e->m->zratio_bf16;
}

/* qp_cache_get: the compressed file read, decompressed and verified. */
/* Bytes of a malloc'ed buffer that are fresh pages: glibc serves blocks
 * above its largest mmap threshold (32 MiB on 64-bit) from new mappings,
 * smaller ones from reused heap pages. */
static double fresh(double bytes)
{
    return bytes > 33554432.0 ? bytes : 0;
}

/* the cache's rule (cache/object.c): large objects zstd barely shrinks
 * are stored as they are, no zstd either way */
static int stored(double raw, double zr)
{
    return raw >= (double)QP_CACHE_STORED_MIN_SIZE && zr > QP_CACHE_STORED_ABOVE;
}

/* qp_cache_get: read, decompressed and re-hashed unless stored; a stored
 * object is checked by its XXH64 instead (cache/object.c). */
static void cache_get(est *e, double raw, double zr)
{
    int st = stored(raw, zr);
    if (st)
        zr = 1;
    term(e, "memory", secs(fresh(raw), e->m->mem_mbs));   /* the malloc'ed buffer it fills */
    term(e, "read", secs(raw * zr, e->m->disk_r_mbs));
    if (zr < 1)
        term(e, "zstd", secs(raw, e->m->zstd_d_mbs));
    if (st)
        term(e, "xxh64", secs(raw, e->m->xxh_mbs));
    else
        term(e, "sha256", secs(raw, e->m->sha_mbs));
}

/* qp_cache_put: hashed, compressed unless stored, written (fsync'ed). */
static void cache_put(est *e, double raw, double zr)
{
    int st = stored(raw, zr);
    if (st)
        zr = 1;
    term(e, "sha256", secs(raw, e->m->sha_mbs));
    if (st)
        term(e, "xxh64", secs(raw, e->m->xxh_mbs));   /* the check frame */
    if (zr < 1)
        term(e, "zstd", secs(raw, e->m->zstd_c_mbs));
    term(e, "write", secs(raw * zr, e->m->disk_w_mbs));
    term(e, "fsync", e->m->fsync_ms / 1000);
}

/* the measured type whose kernels are closest to t's */
static int rate_slot(int fmt, int type)
{
    if (fmt == QP_EST_LINEAR || fmt == QP_EST_NF4)
        return QP_EST_Q4K;
    if (fmt == QP_EST_INT8)
        return QP_EST_Q80;
    switch (type) {
    case QP_GGML_Q5_K: case QP_GGML_Q6_K: return QP_EST_Q6K;
    case QP_GGML_Q2_K: case QP_GGML_Q3_K: case QP_GGML_Q4_K: case QP_GGML_IQ4_NL: case QP_GGML_IQ4_XS:
    case QP_GGML_IQ3_XXS: case QP_GGML_IQ3_S: case QP_GGML_IQ2_S: case QP_GGML_IQ2_XXS: case QP_GGML_IQ2_XS:
    case QP_GGML_IQ1_S: case QP_GGML_IQ1_M:
        return QP_EST_Q4K;   /* searches per sub-block */
    default: return QP_EST_Q80;
    }
}

/* a tensor -> f32 (qp_qtensor_to_f32), k: the share of one thread's time */
static void to_f32_k(est *e, const qp_est_tensor *t, double k)
{
    double out = (double)(t->rows * t->cols) * 4;
    if (t->fmt == QP_EST_DENSE)
        term(e, "convert", k * (t->type == QP_GGML_F32 ? secs(out, e->m->disk_r_mbs) : secs(out, e->m->convert_mbs)));
    else
        term(e, "dequantize", k * secs(out, e->m->deq_mbs[rate_slot(t->fmt, t->type)]));
}

static void to_f32(est *e, const qp_est_tensor *t)
{
    to_f32_k(e, t, 1.0);
}

/* a tensor -> f32 by qp_llama's pool: every thread converts rows
 * (model/llama.c fetch_task, the loaded model's rows callback) */
static void to_f32_par(est *e, const qp_est_tensor *t)
{
    to_f32_k(e, t, e->threads > 1 ? 1.0 / e->threads : 1.0);
}

/* reading one tensor of an artifact as f32 */
static void load_f32(est *e, const qp_est_tensor *t)
{
    cache_get(e, (double)t->bytes, zratio(e, t));
    to_f32(e, t);
}

static int is_layer_weight(const qp_est_tensor *t)
{
    return qp_hf_layer_of(t->name, NULL) >= 0;
}

/* Peak bytes one model holds while it runs (beside its activations): the
 * f32 qp_llama holds, the stored bytes kept, one tensor read per use (or,
 * cached, the tensor being read at construction). */
static uint64_t model_held(est *e, const qp_est_art *model, uint64_t cap)
{
    qp_llama_hparams hp;
    qp_est_hparams(&hp, &model->cfg);
    uint64_t per_use = 0, biggest = 0;
    uint64_t held = qp_est_llama_resident(&hp, e->c) + qp_est_stored_resident(model, &hp, e->c, cap, &per_use);
    if (qp_est_llama_cached(&hp, e->c))
        for (size_t k = 0; k < model->n; k++)
            biggest = model->t[k].bytes > biggest ? model->t[k].bytes : biggest;
    return held + per_use + biggest;
}

/* ---- fetch ---- */
static void est_fetch(const qp_est_input *in, est *e, qp_est_art *out)
{
    const char *source = qp_param_str(in->params, "source");
    if (strncmp(source, "git:", 4) == 0 || strncmp(source, "hf://", 5) == 0) {
        const char *kind = source[0] == 'g' ? "git" : "the Hugging Face Hub";
        e->r->known = 0;
        snprintf(e->r->note, sizeof(e->r->note), "%s source: its shapes are known once it is fetched",
                 source[0] == 'g' ? "git" : "hf");
        out->known = 0;
        snprintf(out->why, sizeof(out->why), "stage '%s' fetches from %s", in->id, kind);
        return;
    }
    char *path = qp_path_join(in->recipe_dir, source);
    struct stat st;
    int rc = stat(path, &st) == 0 && S_ISDIR(st.st_mode) ? qp_est_art_from_dir(out, path) : QP_ENOTFOUND;
    if (rc) {
        /* a data file or directory: its bytes, read, hashed, compressed */
        memset(out, 0, sizeof(*out));
        out->type = QP_ART_FILES;
        out->known = 0;
        snprintf(out->why, sizeof(out->why), "stage '%s' fetches no model (%s)", in->id,
                 rc == QP_ENOTFOUND ? "no config.json" : qp_error_last());
        qp_error_clear();
        out->bytes = stat(path, &st) == 0 && S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0;
    }
    free(path);
    double S = (double)out->bytes;
    term(e, "read", secs(S, e->m->disk_r_mbs));
    term(e, "sha256", e->c->fetch_sha_passes * secs(S, e->m->sha_mbs));
    double zr = stored(S, e->m->zratio_bf16) ? 1 : e->m->zratio_bf16;
    if (zr < 1)
        term(e, "zstd", secs(S, e->m->zstd_c_mbs));
    else
        term(e, "xxh64", secs(S, e->m->xxh_mbs));   /* stored objects' check frames */
    /* every object is fsync'ed before its rename, so the stream goes to
     * the disk at its own rate (disk_wd_mbs, past the page cache) when that
     * is below the page cache's: 1.1B, 2.2 GB of objects, ~2.8 s */
    term(e, "write", secs(S * zr, fmin(e->m->disk_w_mbs, e->m->disk_wd_mbs)));
    term(e, "fsync", (double)(out->n + 8) * e->m->fsync_ms / 1000);   /* one object per tensor and file */
    /* every page of the mapped checkpoint is faulted in once (file pages:
     * map_mbs, not the fresh anonymous pages of mem_mbs) */
    term(e, "memory", secs((double)qp_est_art_tensor_bytes(out), e->m->map_mbs));
    /* stages/fetch_source.c stores one tensor at a time from the mapping
     * and drops its pages after (release_pages, MADV_DONTNEED); the cache
     * streams each object through fixed buffers (cache/object.c).  Peak:
     * the largest tensor's pages (1.1B: 131 MB, 7B: 262 MB, as measured). */
    uint64_t largest = 0;
    for (size_t i = 0; i < out->n; i++)
        if (out->t[i].bytes > largest)
            largest = out->t[i].bytes;
    if (!out->n)
        largest = out->bytes < ((uint64_t)1 << 20) ? out->bytes : ((uint64_t)1 << 20);   /* data files: one I/O chunk */
    e->r->peak_rss = (uint64_t)(e->c->base_rss + e->c->fetch_resident * (double)largest);
    e->r->rss_part = "largest tensor";
    e->r->out_bytes = out->bytes;
    snprintf(e->r->advice, sizeof(e->r->advice), "a checkpoint whose largest tensor fits the memory");
}

/* ---- quantize ---- */
static uint64_t linear_bytes(int64_t rows, int64_t cols, int bits, int64_t group, int sym)
{
    int64_t g = group > 0 ? group : cols;
    uint64_t groups = (uint64_t)rows * (uint64_t)((cols + g - 1) / g);
    return (uint64_t)rows * (uint64_t)cols * (uint64_t)bits / 8 + groups * (sym ? 2u : 4u);
}

/* What tensor t becomes (out), as stages/quant_plan.c decides; 0 = dropped. */
static int plan_tensor(qp_est_tensor *o, const qp_est_tensor *t, const qp_quant_plan *plan, const json_t *params)
{
    *o = *t;
    if (qp_quant_plan_drops(plan, t->name))
        return 0;
    qp_tensor_plan tp;
    if (qp_quant_plan_tensor(&tp, plan, t->name, t->ndim, t->rows, t->cols) != 0) {
        qp_error_clear();
        return 1;   /* the stage will say what is wrong; keep the tensor */
    }
    switch (tp.kind) {
    case QP_TP_DENSE:
        if (tp.qtype == QP_GGML_F16) {
            o->type = QP_GGML_F16;
            o->bytes = (uint64_t)(t->rows * t->cols) * 2;
        }
        break;
    case QP_TP_GGML:
        o->fmt = QP_EST_GGML;
        o->type = (int)tp.qtype;
        o->bytes = (uint64_t)t->rows * qp_qtype_row_size(tp.qtype, t->cols);
        break;
    case QP_TP_LINEAR:
        o->fmt = QP_EST_LINEAR;
        o->type = tp.bits;
        o->bytes = linear_bytes(t->rows, t->cols, tp.bits, qp_param_int(params, "group_size"),
                                qp_param_bool(params, "sym"));
        break;
    case QP_TP_NF4:
        o->fmt = QP_EST_NF4;
        o->bytes = (uint64_t)(t->rows * t->cols) / 2 + (uint64_t)(t->rows * t->cols) / 64 * 4;
        break;
    case QP_TP_INT8:
        o->fmt = QP_EST_INT8;
        o->bytes = (uint64_t)(t->rows * t->cols) + (uint64_t)t->rows * 4;
        break;
    }
    return 1;
}

/* The input site a layer weight reads (HF module name after
 * "model.layers.N."), by qp_site_weights' map, or -1. */
static int site_of_weight(const char *rest)
{
    for (int site = QP_SITE_QKV; site <= QP_SITE_DOWN; site++) {
        const char *mods[3];
        size_t n = qp_site_weights((qp_llama_site)site, mods);
        for (size_t i = 0; i < n; i++) {
            size_t len = strlen(mods[i]);
            if (strncmp(rest, mods[i], len) == 0 && rest[len] == '.')
                return site;
        }
    }
    return -1;
}

/* method qat (stages/qmethod_qat.c, train/qat.h, train/e2e.h): per block,
 * the targets and the loss before and after over every window (3 forward
 * passes of S windows), `steps` forward+backward passes of `batch` windows
 * (backward ≈ 2 forwards), the advance; then e2e_steps passes of the whole
 * model (forward, recomputed forward and backward: ≈ 4 forwards) with the
 * head's two products (logits, and their gradient back), and two full cross-entropy
 * passes.  Memory: the activations [S, T, D] and the targets of one block
 * (the same size), the block's training state (~20 bytes per weight) and
 * a batch's activations; the e2e phase keeps every layer's input of a batch
 * and one byte per weight of the codes. */
static void est_qat(const qp_est_input *in, est *e, const qp_est_art *model, const qp_est_art *calib,
                    uint64_t *peak_extra, const char **peak_part)
{
    qp_llama_hparams hp;
    qp_est_hparams(&hp, &model->cfg);
    double S = (double)calib->samples, T = (double)calib->seq_len, L = hp.n_layers;
    double steps = (double)qp_param_int(in->params, "steps"), e2e = (double)qp_param_int(in->params, "e2e_steps");
    double batch = fmin((double)qp_param_int(in->params, "batch"), S);
    double rate = e->m->gemm_gflops * 1e9 * e->c->gemm_eff;
    double head = 2.0 * hp.vocab * (double)hp.hidden * T;   /* lm_head over one window */
    double layer = (qp_llama_window_flops(&hp, (size_t)T) - head) / L;   /* one layer, one window */
    term(e, "qat blocks", L * (4.0 * S + 3.0 * steps * batch) * layer / rate);
    if (e2e > 0)
        term(e, "qat end-to-end", (e2e * batch * (4.0 * L * layer + 2.0 * head) + 2.0 * S * (L * layer + head)) / rate);
    double D = hp.hidden, F = hp.intermediate, qd = (double)hp.n_heads * hp.head_dim;
    double kvd = (double)hp.n_kv_heads * hp.head_dim;
    double block_w = D * (2.0 * qd + 2.0 * kvd) + 3.0 * D * F;
    double x = S * T * D * 4.0, scratch = (double)e->threads * 2.0 * T * T * 4.0;
    double acts = batch * T * (12.0 * D + 4.0 * qd + 4.0 * kvd + 6.0 * F) * 4.0;
    double train = 2.0 * x + 20.0 * block_w + acts + scratch;
    double heads = (hp.tied_embeddings ? 1.0 : 2.0) * hp.vocab * D * 4.0;
    double whole = e2e > 0 ? x + (L + 5.0) * batch * T * D * 4.0 + L * block_w + 2.0 * block_w * 4.0 + acts +
                                 scratch + heads
                           : 0;
    *peak_extra = (uint64_t)fmax(train, whole);
    *peak_part = whole > train ? "qat end-to-end: every layer's batch input, the codes"
                               : "qat: activations and targets of every window, one block's training state";
}

/* The layer-by-layer run of GPTQ/AWQ (stages/quant_seq.c, qmethod_gptq.c):
 * per layer, the layer re-read and run over every calibration window once
 * per group of sites (true_sequential: 4) and once more to advance, the
 * Hessians accumulated, each weight quantized (GPTQ: inverse + updates). */
static void est_sequential(const qp_est_input *in, est *e, const qp_est_art *model, const qp_est_art *calib,
                           const qp_est_art *q, uint64_t *peak_extra, const char **peak_part)
{
    qp_llama_hparams hp;
    qp_est_hparams(&hp, &model->cfg);
    const char *method = qp_param_str(in->params, "method");
    int gptq = strcmp(method, "gptq") == 0;
    int sequential = qp_param_bool(in->params, "sequential");
    int groups = gptq && qp_param_bool(in->params, "true_sequential") ? 4 : 1;
    double S = (double)calib->samples, T = (double)calib->seq_len, n = S * T;
    double L = hp.n_layers;
    double rate = e->m->gemm_gflops * 1e9;
    /* one layer's forward FLOPs over one window (the window's, without lm_head) */
    double layer_flops = (qp_llama_window_flops(&hp, (size_t)T) - 2.0 * hp.vocab * (double)hp.hidden * T) / L;
    double runs = sequential ? groups + 1 : 0;
    /* A GPTQ run that only collects inputs stops at the last site it needs
     * (qp_llama_layer_observe): q/k/v's input costs a norm; o's, the
     * q/k/v products and attention; gate/up's, also o; down's, all but
     * down_proj.  Only the run that advances x is whole. */
    double D = hp.hidden, F = hp.intermediate, qd = (double)hp.n_heads * hp.head_dim;
    double to_o = layer_flops - 2.0 * T * (qd * D + 3.0 * D * F);
    double to_gate_up = to_o + 2.0 * T * qd * D, to_down = to_gate_up + 4.0 * T * D * F;
    double run_flops = !sequential ? 0
                       : !gptq       ? runs * layer_flops   /* AWQ runs whole layers */
                       : groups == 4 ? to_o + to_gate_up + to_down + layer_flops
                                     : to_down + layer_flops;
    term(e, "forward", L * S * run_flops / (rate * e->c->gemm_eff));
    /* the layer's weights re-read for every run (overrides are memcpy'd) */
    for (size_t i = 0; i < model->n; i++)
        if (is_layer_weight(&model->t[i]))
            for (double k = 0; k < runs; k++)
                load_f32(e, &model->t[i]);
    if (sequential) {
        double hess = 0;
        for (int s = 0; s < 4; s++) {
            double d = (double)qp_site_dim(&hp, (qp_llama_site)s);
            hess += 2.0 * n * d * d;
        }
        term(e, "hessians", L * hess / (rate * e->c->hessian_eff));
    }
    uint64_t keep = 0, biggest = 0;
    double upd = 0, inv = 0;
    unsigned char *inv_done = qp_xcalloc((size_t)(hp.n_layers > 0 ? hp.n_layers : 1) * 4, 1);
    for (size_t i = 0; i < q->n; i++) {
        const qp_est_tensor *t = &q->t[i];
        if (t->fmt != QP_EST_LINEAR)
            continue;
        const qp_est_tensor *src = &model->t[i];
        double dd = (double)t->cols;
        if (gptq) {
            /* one inverse per site: q, k and v (gate and up) share theirs */
            const char *rest = NULL;
            int layer = qp_hf_layer_of(t->name, &rest);
            int site = rest ? site_of_weight(rest) : -1;
            int shared = site >= 0 && layer >= 0 && layer < hp.n_layers && inv_done[layer * 4 + site]++ > 0;
            if (!shared)
                inv += e->c->gptq_inv_flops * dd * dd * dd;
            upd += 2.0 * (double)t->rows * dd * dd;
        } else {
            upd += 2.0 * n * (double)(t->rows * t->cols) * 20;
        }
        load_f32(e, src);                        /* the weight, as f32 */
        term(e, "dequantize", secs((double)(t->rows * t->cols) * 4, e->m->deq_mbs[QP_EST_Q4K]));
        cache_put(e, (double)t->bytes, e->m->zratio_q);
        keep += (uint64_t)(t->rows * t->cols) * 4;
        /* AWQ (gptq: replaced below): 5 d² doubles and three f32 copies of the weight */
        uint64_t d = (uint64_t)t->cols;
        uint64_t here = 40 * d * d + 3 * (uint64_t)(t->rows * t->cols) * 4;
        if (here > biggest)
            biggest = here;
    }
    /* AWQ searches scales and clips by running the site's products ~20 times (its grid) */
    free(inv_done);
    term(e, gptq ? "gptq updates" : "awq search", upd / (rate * e->c->gptq_eff));
    if (gptq)
        term(e, "hessian inverse", inv / (rate * e->c->hinv_eff));
    /* stages/quant_seq.c: the model streamed with no layer stored bytes
     * kept (model_held, cap 0: tile, f32 lm_head, embedding's and
     * lm_head's stored bytes, one tensor per use), the windows'
     * activations [S, T, D] f32 (act_store) and one window's scratch, one
     * window through one layer */
    uint64_t x = (uint64_t)(n * hp.hidden * 4) + (uint64_t)(T * hp.hidden * 4) +
                 (uint64_t)qp_llama_batch_bytes_hp(&hp, e->threads, 1, (size_t)T);
    uint64_t copies = (uint64_t)(e->c->gptq_keeps_q * (double)keep / (hp.n_layers > 0 ? hp.n_layers : 1));
    if (gptq) {
        /* stages/qmethod_gptq.c, site by site (q,k,v -> o -> gate,up -> down):
         * the Hessian collected (Σ x xᵀ in doubles + the f32 per-window
         * product: 12 d², then H's copy beside the sums: 16 d²); each
         * weight then quantized (quant/gptq.c): H 8 d², Hinv f32 4 d², the
         * inverse's f64 work matrix 8 d² (quant/gptq_hinv.c) and W f32
         * 4 r·d; after the inverse, W and its permuted copy Wp; Ŵ (back)
         * served as the layer's override until the layer ends.  The
         * overrides of the sites already done are held meanwhile. */
        static const qp_llama_site order[4] = {QP_SITE_QKV, QP_SITE_O, QP_SITE_GATE_UP, QP_SITE_DOWN};
        double kvd = (double)hp.n_kv_heads * hp.head_dim;
        double done = 0;
        biggest = 0;
        for (int k = 0; k < 4; k++) {
            double d = (double)qp_site_dim(&hp, order[k]), r = 0, rows_all = 0;
            switch (order[k]) {
            case QP_SITE_QKV: r = qd; rows_all = qd + 2 * kvd; break;
            case QP_SITE_O: r = D; rows_all = D; break;
            case QP_SITE_GATE_UP: r = F; rows_all = 2 * F; break;
            default: r = D; rows_all = D; break;
            }
            double collect = 16 * d * d, inverse = 20 * d * d + 4 * r * d, update = 12 * d * d + 12 * r * d;
            double here = e->c->gptq_keeps_q * done + fmax(collect, fmax(inverse, update));
            if (here > (double)biggest)
                biggest = (uint64_t)here;
            done += 4 * rows_all * d;
        }
        copies = 0;   /* counted per site above */
    }
    *peak_extra = model_held(e, model, 0) + copies + biggest + x;
    if (copies >= biggest && copies >= x) {
        *peak_part = "f32 copies of one quantized layer";
        snprintf(e->r->advice, sizeof(e->r->advice),
                 "one layer's f32 quantized weights do not fit: quantize on a machine with more memory");
    } else if (biggest >= x) {
        *peak_part = gptq ? "one site's Hessian, inverse and the layer's f32 copies" : "Hessian and its inverse";
        snprintf(e->r->advice, sizeof(e->r->advice),
                 "the widest layer input's Hessian (d x d doubles, 5 copies) does not fit: quantize on a machine "
                 "with more memory");
    } else {
        *peak_part = "calibration activations";
        snprintf(e->r->advice, sizeof(e->r->advice), "fewer calibration samples or a shorter seq_len");
    }
}

/* 1 (and the stage's estimate marked unknown, saying why) when the input
 * model's shapes are not known before the run */
static int model_unknown(est *e, const qp_est_art *model)
{
    if (model && model->known && model->n)
        return 0;
    e->r->known = 0;
    snprintf(e->r->note, sizeof(e->r->note), "%s", model && model->why[0] ? model->why : "input model unknown");
    return 1;
}

static void est_quantize(const qp_est_input *in, est *e, qp_est_art *out)
{
    const qp_est_art *model = in->n_inputs ? in->inputs[0] : NULL;
    const qp_est_art *calib = in->n_inputs > 1 ? in->inputs[1] : NULL;
    if (model_unknown(e, model)) {
        out->known = 0;
        snprintf(out->why, sizeof(out->why), "%s", e->r->note);
        return;
    }
    const qp_quant_method *method = qp_quant_method_find(qp_param_str(in->params, "method"));
    qp_quant_common common;
    void *opts = NULL;
    char *where = qp_strfmt("stage '%s'", in->id);
    int rc = qp_quant_common_parse(&common, in->params, where);
    if (rc == 0 && method)
        rc = qp_quant_opts_parse(&opts, method, in->params, where);
    free(where);
    if (rc || !method) {
        qp_error_clear();
        qp_quant_common_free(&common);
        qp_quant_opts_free(method, opts);
        e->r->known = 0;
        snprintf(e->r->note, sizeof(e->r->note), "the parameters do not parse");
        out->known = 0;
        return;
    }
    qp_quant_plan plan;
    qp_quant_plan_init(&plan, method, opts, &common, &model->cfg,
                       common.imatrix[0] != 0 || (calib && (method->flags & QP_QM_IMATRIX)));
    *out = *model;
    out->type = QP_ART_QMODEL;
    out->t = qp_xcalloc(model->n ? model->n : 1, sizeof(*out->t));
    out->n = model->n;
    uint64_t other = model->bytes - qp_est_art_tensor_bytes(model);
    uint64_t peak = 0, prev_packed = 0;
    double grown = 0;
    for (size_t i = 0; i < model->n; i++) {
        const qp_est_tensor *t = &model->t[i];
        qp_est_tensor *o = &out->t[i];
        if (!plan_tensor(o, t, &plan, in->params)) {
            o->bytes = 0;
            continue;
        }
        if (o->fmt == QP_EST_DENSE && o->type == t->type)
            continue;   /* kept: the very same object */
        double f32 = (double)(t->rows * t->cols) * 4;
        load_f32(e, t);
        if (method->run && o->fmt == QP_EST_LINEAR) {
            cache_get(e, (double)o->bytes, e->m->zratio_q);   /* the run's stored object */
        } else if (o->fmt == QP_EST_DENSE) {
            term(e, "convert", secs(f32, e->m->convert_mbs));
        } else {
            int slot = rate_slot(o->fmt, o->type);
            double rate = e->m->quant_mbs[slot] * (o->fmt == QP_EST_GGML ? 1.0 : e->c->linear_mbs_per_q4k);
            term(e, "quantize", secs(f32, rate));
        }
        to_f32(e, o);   /* back to f32 for the error */
        term(e, "memory", secs(fresh((double)o->bytes), e->m->mem_mbs));   /* the packed bytes */
        /* a llama.cpp type from a dense source goes row chunk by row chunk
         * (stages/qtensor_ggml.c); the rest holds the tensor in f32 twice */
        int one_pass = !method->run && o->fmt == QP_EST_GGML && t->fmt == QP_EST_DENSE;
        if (!one_pass && f32 > grown) {   /* the reused f32 and error buffers grow to the largest tensor */
            term(e, "memory", secs((f32 - grown) * 2, e->m->mem_mbs));
            grown = f32;
        }
        cache_put(e, (double)o->bytes, zratio(e, o));
        /* the previous tensor's packed bytes are still being stored beside
         * this one (stages/bg_put.h) */
        uint64_t here = t->bytes + (one_pass ? 0 : (uint64_t)f32 * 2) + o->bytes + prev_packed;
        if (here > peak)
            peak = here;
        prev_packed = o->bytes;
    }
    e->r->rss_part = "largest tensor (source, f32, error copy)";
    if (method->run && (strcmp(method->name, "gptq") == 0 || strcmp(method->name, "awq") == 0)) {
        if (!calib || !calib->samples) {
            snprintf(e->r->note, sizeof(e->r->note), "calibration shapes unknown: the layer-by-layer run not counted");
        } else {
            uint64_t extra = 0;
            const char *part = NULL;
            est_sequential(in, e, model, calib, out, &extra, &part);
            if (extra > peak) {
                peak = extra;
                e->r->rss_part = part;
            }
        }
    } else if (method->run && strcmp(method->name, "qat") == 0) {
        if (!calib || !calib->samples) {
            snprintf(e->r->note, sizeof(e->r->note), "calibration shapes unknown: the training not counted");
        } else {
            uint64_t extra = 0;
            const char *part = NULL;
            est_qat(in, e, model, calib, &extra, &part);
            if (extra > peak) {
                peak = extra;
                e->r->rss_part = part;
            }
        }
    } else if (method->run) {
        snprintf(e->r->note, sizeof(e->r->note), "method %s: its search is not predicted (sizes at the ladder's "
                                                 "lowest type)", method->name);
    }
    out->bytes = qp_est_art_tensor_bytes(out) + other;
    e->r->peak_rss = (uint64_t)e->c->base_rss + peak;
    e->r->out_bytes = out->bytes;
    out->largest_file = 0;
    qp_quant_common_free(&common);
    qp_quant_opts_free(method, opts);
}

/* ---- datasets ---- */
/* bytes per token of the file at path: the model's tokenizer on its first
 * 64 kB, else the coefficient */
static double bpt_of(const qp_est_art *model, const char *path, const est *e)
{
    double b = qp_est_bytes_per_token(model->dir, path, NULL);
    return b > 0 ? b : e->c->bytes_per_token;
}

/* the whole file is tokenized (evaluate and calibrate read every file) */
static void tokenize_term(est *e, const qp_est_art *model, const char *path, double bytes)
{
    double mbs = 0;
    qp_est_bytes_per_token(model->dir, path, &mbs);
    if (mbs > 0)
        term(e, "tokenize", secs(bytes, mbs));
}

/* The i-th file of the stage's `dataset:` as the stage will open it, and
 * its size; NULL past the end.  *size is -1 for a file that is not there
 * yet (the run itself will say so). */
static char *dataset_file(const qp_est_input *in, size_t i, double *size)
{
    const json_t *list = json_object_get(in->params, "dataset");
    if (i >= json_array_size(list))
        return NULL;
    char *path = qp_path_join(in->recipe_dir, json_string_value(json_array_get(list, i)));
    struct stat st;
    *size = stat(path, &st) == 0 ? (double)st.st_size : -1;
    return path;
}

static double dataset_tokens(const qp_est_input *in, est *e, const qp_est_art *model, double *bytes_out)
{
    double tokens = 0, bytes = 0, size;
    char *path;
    for (size_t i = 0; (path = dataset_file(in, i, &size)) != NULL; i++) {
        if (size >= 0) {
            bytes += size;
            tokens += size / bpt_of(model, path, e);
            tokenize_term(e, model, path, size);
        }
        free(path);
    }
    if (bytes_out)
        *bytes_out = bytes;
    return tokens;
}

static int is_head(const qp_est_tensor *t, const qp_llama_hparams *hp)
{
    return strcmp(t->name, hp->tied_embeddings ? QP_HF_EMBED : QP_HF_LM_HEAD) == 0;
}

/* A model's forward passes over `windows` windows of n tokens in `passes`
 * passes (evaluate: batches of windows; calibrate: one window per layer
 * call), as stages/model_load.c and model/llama.c do them:
 *   - cached (qp_est_llama_cached): every tensor read and converted once;
 *   - streamed: each layer matrix dequantized into the reused tile once per
 *     pass (by every thread); its stored bytes read from the cache once
 *     when kept (`cap`, qp_est_stored_resident), else once per pass; the
 *     tensors outside the layers read once; lm_head converted once when it
 *     stays f32 (<= QP_LLAMA_HEAD_RESIDENT), else per pass in chunks. */
static void forward_model(est *e, const qp_est_art *model, double windows, double passes, size_t n, int with_head,
                          uint64_t cap)
{
    qp_llama_hparams hp;
    qp_est_hparams(&hp, &model->cfg);
    double flops = qp_llama_window_flops(&hp, n);
    if (!with_head)
        flops -= 2.0 * hp.vocab * (double)hp.hidden * (double)n;
    term(e, "gemm", windows * flops / (e->m->gemm_gflops * 1e9 * e->c->gemm_eff));
    int cached = qp_est_llama_cached(&hp, e->c);
    int head_f32 = (double)hp.vocab * (double)hp.hidden * 4 <= (double)QP_LLAMA_HEAD_RESIDENT;
    uint64_t kept = 0;
    for (size_t i = 0; i < model->n; i++)
        if (!is_layer_weight(&model->t[i]))
            kept += model->t[i].bytes;
    for (size_t i = 0; i < model->n; i++) {
        const qp_est_tensor *t = &model->t[i];
        if (!t->bytes)
            continue;
        if (cached) {
            cache_get(e, (double)t->bytes, zratio(e, t));
            to_f32_par(e, t);
        } else if (!is_layer_weight(t)) {
            cache_get(e, (double)t->bytes, zratio(e, t));   /* kept (keep_globals) */
            if (is_head(t, &hp) && head_f32)
                to_f32_par(e, t);
            else if (is_head(t, &hp) && with_head)
                for (double p = 0; p < passes; p++)
                    to_f32_par(e, t);
        } else if (t->ndim < 2) {
            cache_get(e, (double)t->bytes, zratio(e, t));   /* norms: f32 at construction */
        } else {
            int keep = cap && kept + t->bytes <= cap;
            if (keep)
                kept += t->bytes;
            for (double p = 0; p < passes; p++) {
                if (!keep || p == 0)
                    cache_get(e, (double)t->bytes, zratio(e, t));
                to_f32_par(e, t);
            }
        }
    }
}

/* ---- evaluate ---- */
static void est_evaluate(const qp_est_input *in, est *e, qp_est_art *out)
{
    const qp_est_art *model = in->n_inputs ? in->inputs[0] : NULL;
    memset(out, 0, sizeof(*out));
    out->type = QP_ART_METRICS;
    out->known = 1;
    out->bytes = 2048;
    e->r->out_bytes = out->bytes;
    if (model_unknown(e, model))
        return;
    qp_llama_hparams hp;
    qp_est_hparams(&hp, &model->cfg);
    size_t ctx = (size_t)qp_param_int(in->params, "ctx");
    if (ctx == 0)
        ctx = (size_t)hp.max_pos;
    uint64_t max_tokens = (uint64_t)qp_param_int(in->params, "max_tokens");
    uint64_t max_chunks = (uint64_t)qp_param_int(in->params, "max_chunks");
    double windows = 0, bytes = 0, size;
    char *path;
    for (size_t i = 0; (path = dataset_file(in, i, &size)) != NULL; i++) {
        if (size >= 0) {
            bytes += size;
            uint64_t left = max_chunks ? max_chunks - (uint64_t)windows : 0;
            windows += (double)qp_est_eval_windows((uint64_t)(size / bpt_of(model, path, e)), ctx, max_tokens, left);
            tokenize_term(e, model, path, size);
        }
        free(path);
        if (max_chunks && windows >= (double)max_chunks)
            break;
    }
    /* model/eval.c: batches of qp_eval_batch_windows windows per pass
     * (QP_EVAL_BATCH_BYTES of activations and one window's logits each);
     * stages/evaluate.c opens the models resident (stored bytes up to a
     * third of RAM, qp_loaded_model_resident_cap) */
    const qp_est_art *ref = in->reference;
    int with_ref = ref && ref->known && ref->n;
    qp_llama_hparams rh;
    if (with_ref)
        qp_est_hparams(&rh, &ref->cfg);
    size_t batch = qp_eval_batch_windows_hp(&hp, with_ref ? &rh : NULL, e->threads, ctx, QP_EVAL_BATCH_BYTES);
    double passes = ceil(windows / (double)batch);
    uint64_t cap = (uint64_t)qp_loaded_model_resident_cap();
    forward_model(e, model, windows, passes, ctx, 1, cap);
    uint64_t peak = model_held(e, model, cap) + (uint64_t)qp_llama_batch_bytes_hp(&hp, e->threads, batch, ctx) +
                    (uint64_t)ctx * (uint64_t)hp.vocab * 4;   /* eval.c's logits of one window */
    if (with_ref) {
        forward_model(e, ref, windows, passes, ctx, 1, cap);
        peak += model_held(e, ref, cap) + (uint64_t)qp_llama_batch_bytes_hp(&rh, e->threads, batch, ctx) +
                (uint64_t)ctx * (uint64_t)rh.vocab * 4;
    } else if (ref) {
        snprintf(e->r->note, sizeof(e->r->note), "reference model unknown: not counted");
    }
    peak += (uint64_t)(bytes * 5);   /* the text and its token ids */
    e->r->peak_rss = (uint64_t)e->c->base_rss + peak;
    e->r->rss_part = qp_est_llama_cached(&hp, e->c) ? "f32 weights" : "stored weights, f32 lm_head, batch";
    if (!qp_param_str(in->params, "mc")[0])
        snprintf(e->r->note + strlen(e->r->note), sizeof(e->r->note) - strlen(e->r->note),
                 "%s%.0f windows of %zu, %zu a pass", e->r->note[0] ? "; " : "", windows, ctx, batch);
    else
        snprintf(e->r->note, sizeof(e->r->note), "%.0f windows of %zu, %zu a pass; mc: not counted", windows, ctx,
                 batch);
    snprintf(e->r->advice, sizeof(e->r->advice), "a smaller ctx, or evaluate without reference:");
}

/* ---- calibrate ---- */
static void est_calibrate(const qp_est_input *in, est *e, qp_est_art *out)
{
    const qp_est_art *model = in->n_inputs ? in->inputs[0] : NULL;
    memset(out, 0, sizeof(*out));
    out->type = QP_ART_CALIB;
    out->known = 1;
    if (model_unknown(e, model))
        return;
    qp_llama_hparams hp;
    qp_est_hparams(&hp, &model->cfg);
    int64_t S = qp_param_int(in->params, "samples"), T = qp_param_int(in->params, "seq_len");
    if (T == 0)
        T = hp.max_pos;
    int hess = qp_param_bool(in->params, "hessians");
    out->samples = S;
    out->seq_len = T;
    out->hessians = hess;
    double bytes = 0;
    dataset_tokens(in, e, model, &bytes);
    /* stages/calibrate.c runs each layer over every window in turn
     * (qp_llama_layer per window): the model is opened streamed with no
     * stored bytes kept (qp_loaded_model_open), so a layer's matrices are
     * read and converted once per window */
    forward_model(e, model, (double)S, (double)S, (size_t)T, 0, 0);
    double rate = e->m->gemm_gflops * 1e9;
    uint64_t stats = 0, hbytes = 0;
    double hflops = 0;
    for (int l = 0; l < hp.n_layers; l++)
        for (int s = 0; s < 4; s++) {
            uint64_t d = qp_site_dim(&hp, (qp_llama_site)s);
            stats += 2 * d * 8;
            if (hess) {
                hbytes += d * d * 4;
                stats += d * d * 12;
                hflops += 2.0 * (double)S * (double)T * (double)(d * d);
            }
        }
    term(e, "hessians", hflops / (rate * e->c->hessian_eff));
    cache_put(e, (double)hbytes, 1.0);
    term(e, "fsync", (double)hp.n_layers * 4 * (hess ? 3 : 2) * e->m->fsync_ms / 1000);
    out->bytes = (uint64_t)(S * T * 4) + hbytes + stats / 8 * 0 + (uint64_t)hp.n_layers * 4 * 2 * 4 * hp.intermediate;
    e->r->out_bytes = out->bytes;
    /* one layer's statistics at a time (stages/calibrate.c stores each
     * layer's before the next); the windows' activations [S, T, D] f32 in
     * memory up to QP_ACT_MEM_DEFAULT (stages/act_store.c, else spilled:
     * one window's buffer); one window through one layer
     * (qp_llama_batch_bytes of 1 x T); the token ids; the text and its
     * stream.  qp_llama_new loads an lm_head of at most
     * QP_LLAMA_HEAD_RESIDENT in f32 even though calibrate never applies it,
     * and model_load.c keeps the embedding's and lm_head's stored bytes:
     * both are in model_held. */
    double stats_held = (double)stats / (hp.n_layers > 0 ? hp.n_layers : 1);
    double acts = (double)S * (double)T * hp.hidden * 4;
    if (acts > (double)QP_ACT_MEM_DEFAULT)
        acts = (double)T * hp.hidden * 4;
    e->r->peak_rss = (uint64_t)(e->c->base_rss + (double)model_held(e, model, 0) +
                                qp_llama_batch_bytes_hp(&hp, e->threads, 1, (size_t)T) + stats_held + bytes * 5 +
                                acts + (double)T * hp.hidden * 4 + (double)(S * T * 4));
    e->r->rss_part = hess ? "one layer's Hessians" : "f32 lm_head, stored globals, activations";
    snprintf(e->r->advice, sizeof(e->r->advice),
             hess ? "hessians: false (sequential GPTQ collects its own, one layer at a time)"
                  : "fewer samples or a shorter seq_len");
}

/* ---- package ---- */
static void est_package(const qp_est_input *in, est *e, qp_est_art *out)
{
    const qp_est_art *model = NULL;
    for (size_t i = 0; i < in->n_inputs; i++)
        if (in->inputs[i]->type & (QP_ART_MODEL | QP_ART_QMODEL))
            model = in->inputs[i];
    memset(out, 0, sizeof(*out));
    out->type = QP_ART_FILES;
    out->known = 1;
    if (model_unknown(e, model))
        return;
    const char *format = qp_param_str(in->params, "format");
    int gguf = format && strcmp(format, "gguf") == 0;
    int plain = format && strcmp(format, "safetensors") == 0;
    /* format safetensors writes every tensor in one float type: dtype:, or
     * for auto the checkpoint's (its dense tensors' width) */
    const char *dt = qp_param_str(in->params, "dtype");
    dt = dt ? dt : "auto";
    uint64_t out_size = !strcmp(dt, "f32") ? 4 : strcmp(dt, "auto") != 0 ? 2 : 0;
    for (size_t i = 0; plain && !out_size && i < model->n; i++)
        if (model->t[i].fmt == QP_EST_DENSE)
            out_size = model->t[i].type == QP_GGML_F32 ? 4 : 2;
    out_size = out_size ? out_size : 4;
    /* GGUF (stages/package_gguf.c, model/gguf_writer.c): one tensor at a
     * time, its stored bytes held (qp_cache_get) and lent to the writer as
     * they are when they already are the GGUF's (ggml blocks, BF16, F16),
     * else converted into the writer's buffer, which grows to the largest
     * converted tensor and stays; q/k rows are permuted through a scratch
     * copy into that buffer; every byte goes out through seqout's staging
     * buffers (common/seqout.h), which hash and write it.
     * The tensors outside the layers come first (both tensor orders sort
     * them ahead of blk.*), each held beside the header and the staging
     * buffers, a layer tensor beside the staging buffers. */
    uint64_t bytes = 0, glob = 0, layer = 0, conv = 0;
    /* seconds per byte the helpers drain (the slower of hashing and writing) */
    double drain = fmax(1 / (e->m->sha_mbs * MB), 1 / (e->m->disk_wd_mbs * MB)), serial = 0;
    for (size_t i = 0; i < model->n; i++) {
        const qp_est_tensor *t = &model->t[i];
        if (!t->bytes)
            continue;
        uint64_t written = t->bytes, converted = 0;
        cache_get(e, (double)t->bytes, zratio(e, t));
        if (gguf && t->fmt == QP_EST_DENSE && t->type != QP_GGML_F32 && t->type != QP_GGML_F16) {
            written = (uint64_t)(t->rows * t->cols) * 4;   /* bf16 goes out as F32 (issue #13) */
            converted = written;
            to_f32(e, t);
        } else if (gguf && t->fmt != QP_EST_DENSE && t->fmt != QP_EST_GGML) {
            to_f32(e, t);   /* GPTQ/AWQ codes: the GGUF holds their dequantized ggml form */
            converted = written;
        }
        if (plain) {   /* package_st.c: dequantized to f32, then converted; a dense tensor of the width is copied */
            written = (uint64_t)(t->rows * t->cols) * out_size;
            int same = t->fmt == QP_EST_DENSE && (t->type == QP_GGML_F32 ? 4u : 2u) == out_size;
            converted = same ? written : (uint64_t)(t->rows * t->cols) * 4 + (out_size == 4 ? 0 : written);
            if (!same)
                to_f32(e, t);
        }
        int rope = !plain && (strstr(t->name, "q_proj") || strstr(t->name, "k_proj"));
        if (rope)
            converted = 2 * written;   /* the scratch and the writer's buffer */
        conv = converted > conv ? converted : conv;
        bytes += written;
        /* a tensor is read whole before its bytes go out, so the helpers
         * drain it beside the next read only as far as the ring holds
         * (SEQ_RING): the rest of a large tensor is serial */
        if (gguf && written > SEQ_RING)
            serial += (double)(written - SEQ_RING) * drain;
        uint64_t here = t->bytes + conv;
        if (is_layer_weight(t))
            layer = here > layer ? here : layer;
        else
            glob = here > glob ? here : glob;
        if (!gguf) {   /* safetensors (package_hf.c, package_st.c): one tensor and its converted copies */
            uint64_t h = t->bytes + (plain ? converted : written);
            glob = h > glob ? h : glob;
        }
    }
    uint64_t header = (uint64_t)model->cfg.vocab * 24 + 65536;
    uint64_t biggest = gguf ? (glob + header > layer ? glob + header : layer) + SEQ_STAGING : glob;
    bytes += header;   /* header, vocabulary, card */
    if (gguf) {
        /* seqout's three-stage pipeline (common/seqout.c): while this
         * thread reads, verifies and converts tensors into one staging
         * buffer, a hasher thread hashes the one before and a writer thread
         * writes the one before that past the page cache.  The stage takes
         * as long as the slowest of the three (the reader's side with the
         * serial part of large tensors); the reader and the hasher share
         * the CPUs (the writer waits on the disk), and a stream has a fixed
         * cost (threads, buffers, first blocks, the final fsync). */
        double reader = e->r->seconds + serial;
        double sha = secs((double)bytes, e->m->sha_mbs), wr = secs((double)bytes, e->m->disk_wd_mbs);
        double cpu = (e->r->seconds + sha) / (e->m->cpus >= 2 ? 2 : 1);
        double t = fmax(fmax(reader, sha), fmax(wr, cpu));
        if (t > e->r->seconds)
            term(e, wr > sha && t > cpu ? "write" : "sha256", t - e->r->seconds);
        term(e, "write", e->m->disk_wd_fixed_ms / 1000);
    } else {
        /* safetensors: written, then hashed (package.c store_dir) */
        term(e, "write", secs((double)bytes, e->m->disk_w_mbs));
        term(e, "sha256", secs((double)bytes, e->m->sha_mbs));
    }
    /* safetensors: the file; GGUF: the publish after the stream's own
     * fsync, the card and provenance.json (cache objects), the directory */
    term(e, "fsync", (gguf ? 3 : 1) * e->m->fsync_ms / 1000);
    out->bytes = bytes;
    e->r->out_bytes = bytes;
    e->r->peak_rss = (uint64_t)e->c->base_rss + biggest;
    e->r->rss_part = !gguf                   ? "largest tensor"
                     : layer > glob + header ? "a layer tensor and the write buffers"
                                             : "a global tensor, the header and the write buffers";
}

void qp_estimate_stage(const qp_est_input *in, qp_est_result *res, qp_est_art *out)
{
    memset(res, 0, sizeof(*res));
    memset(out, 0, sizeof(*out));
    res->known = 1;
    est e = {res, in->mach, in->coef, in->threads > 0 ? in->threads : 1};
    const char *k = in->kind->name;
    if (strcmp(k, "fetch") == 0)
        est_fetch(in, &e, out);
    else if (strcmp(k, "quantize") == 0)
        est_quantize(in, &e, out);
    else if (strcmp(k, "evaluate") == 0)
        est_evaluate(in, &e, out);
    else if (strcmp(k, "calibrate") == 0)
        est_calibrate(in, &e, out);
    else if (strcmp(k, "package") == 0)
        est_package(in, &e, out);
    else if (strcmp(k, "gate") == 0 || strcmp(k, "select") == 0) {
        res->peak_rss = (uint64_t)in->coef->base_rss;
        out->type = QP_ART_VERDICT;
        out->known = 1;
        /* select passes on the candidate it chooses: the first's shapes */
        for (size_t i = 0; i < in->n_inputs; i++)
            if (in->inputs[i]->type & (QP_ART_MODEL | QP_ART_QMODEL) && in->inputs[i]->known) {
                *out = *in->inputs[i];
                out->t = qp_xmalloc((in->inputs[i]->n ? in->inputs[i]->n : 1) * sizeof(*out->t));
                memcpy(out->t, in->inputs[i]->t, in->inputs[i]->n * sizeof(*out->t));
                break;
            }
    } else {
        res->known = 0;
        snprintf(res->note, sizeof(res->note), "a %s stage runs a command: not predicted", k);
        out->known = 0;
        snprintf(out->why, sizeof(out->why), "stage '%s' is a %s stage", in->id, k);
    }
    if (!res->rss_part)
        res->rss_part = "";
    double f = qp_est_slowdown(in->mach, in->coef);   /* a shared machine's share */
    res->seconds *= f;
    for (size_t i = 0; i < res->n_terms; i++)
        res->terms[i].seconds *= f;
}
