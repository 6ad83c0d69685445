#include "model/eval.h"
#include "common/alloc.h"
#include "common/error.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct qp_eval_acc {
    int with_ref;
    size_t batch;           /* windows per forward pass; 0: from QP_EVAL_BATCH_BYTES */
    double nll_sum, ref_nll_sum, kld_sum, dp_sq_sum;
    uint64_t scored, windows, top1_same;
    double *kld;            /* per scored position, for percentiles */
    size_t n_kld, cap_kld;
};

int qp_eval_acc_new(qp_eval_acc **out, int with_reference)
{
    qp_eval_acc *a = qp_xcalloc(1, sizeof(*a));
    a->with_ref = with_reference;
    *out = a;
    return 0;
}

void qp_eval_acc_free(qp_eval_acc *a)
{
    if (!a)
        return;
    free(a->kld);
    free(a);
}

/* log-softmax of one row in double: out[v] = row[v] - logsumexp(row). */
static void log_softmax(double *out, const float *row, size_t vocab)
{
    double mx = -INFINITY;
    for (size_t v = 0; v < vocab; v++)
        if (row[v] > mx)
            mx = row[v];
    double s = 0;
    for (size_t v = 0; v < vocab; v++)
        s += exp((double)row[v] - mx);
    double lse = mx + log(s);
    for (size_t v = 0; v < vocab; v++)
        out[v] = (double)row[v] - lse;
}

void qp_eval_acc_set_batch(qp_eval_acc *a, size_t windows)
{
    a->batch = windows;
}

size_t qp_eval_batch_windows_hp(const qp_llama_hparams *hp, const qp_llama_hparams *ref, int threads, size_t ctx,
                                size_t budget)
{
    size_t vocab = (size_t)hp->vocab;
    /* one window's logits (and the reference's) beside the activations */
    double fixed = (double)ctx * (double)vocab * sizeof(float) * (ref ? 2.0 : 1.0);
    size_t S = 1;
    while (S < QP_EVAL_MAX_BATCH) {
        double need = fixed + qp_llama_batch_bytes_hp(hp, threads, S + 1, ctx) +
                      (ref ? qp_llama_batch_bytes_hp(ref, threads, S + 1, ctx) : 0);
        if (need > (double)budget)
            break;
        S++;
    }
    return S;
}

size_t qp_eval_batch_windows(const qp_llama *m, const qp_llama *ref, size_t ctx, size_t budget)
{
    return qp_eval_batch_windows_hp(qp_llama_get_hparams(m), ref ? qp_llama_get_hparams(ref) : NULL,
                                    qp_llama_threads(m), ctx, budget);
}

static size_t argmax(const float *row, size_t vocab)
{
    size_t best = 0;
    for (size_t v = 1; v < vocab; v++)
        if (row[v] > row[best])
            best = v;
    return best;
}

/* Per-position terms of one window, computed by the model's threads into
 * arrays and then summed in position order (the same doubles whatever the
 * thread count). */
typedef struct {
    const float *logits, *ref_logits;   /* [n, vocab] */
    const int32_t *tokens;
    size_t first, n, vocab;
    double *scratch;                    /* [threads, 2, vocab]: lq, lp */
    double *nll, *kl, *ref_nll, *dp2;   /* [n] */
    unsigned char *same;                /* [n] */
} score_ctx;

#define SCORE_ROWS 8

static void score_task(void *varg, size_t task, int thread)
{
    const score_ctx *c = varg;
    double *lq = c->scratch + (size_t)thread * 2 * c->vocab, *lp = lq + c->vocab;
    size_t t0 = c->first + task * SCORE_ROWS, t1 = t0 + SCORE_ROWS < c->n ? t0 + SCORE_ROWS : c->n;
    for (size_t t = t0; t < t1; t++) {
        const float *row = c->logits + (t - 1) * c->vocab;
        int32_t target = c->tokens[t];
        log_softmax(lq, row, c->vocab);
        c->nll[t] = -lq[target];
        if (!c->ref_logits)
            continue;
        const float *rrow = c->ref_logits + (t - 1) * c->vocab;
        log_softmax(lp, rrow, c->vocab);
        double kl = 0;
        for (size_t v = 0; v < c->vocab; v++)
            kl += exp(lp[v]) * (lp[v] - lq[v]);
        if (kl < 0)
            kl = 0;  /* rounding of two near-identical distributions */
        c->kl[t] = kl;
        c->ref_nll[t] = -lp[target];
        double dp = exp(lq[target]) - exp(lp[target]);
        c->dp2[t] = dp * dp;
        c->same[t] = argmax(row, c->vocab) == argmax(rrow, c->vocab);
    }
}

/* Scores positions [first, n) of one window: target tokens[t] from logits row t-1.
 * logits/ref_logits: [n, vocab]; scratch as score_ctx's, terms [5, n]. */
static int score_window(qp_eval_acc *a, qp_llama *m, const float *logits, const float *ref_logits,
                        const int32_t *tokens, size_t n, size_t first, size_t vocab, double *scratch, double *terms)
{
    if (first >= n)
        return 0;
    if (a->with_ref && a->n_kld + n > a->cap_kld) {
        a->cap_kld = (a->cap_kld + n) * 2;
        a->kld = qp_xrealloc_array(a->kld, a->cap_kld, sizeof(*a->kld));
    }
    score_ctx c = {logits, a->with_ref ? ref_logits : NULL, tokens, first, n, vocab, scratch,
                   terms, terms + n, terms + 2 * n, terms + 3 * n, (unsigned char *)(terms + 4 * n)};
    qp_llama_run_tasks(m, (n - first + SCORE_ROWS - 1) / SCORE_ROWS, score_task, &c);
    for (size_t t = first; t < n; t++) {
        a->nll_sum += c.nll[t];
        a->scored++;
        if (!a->with_ref)
            continue;
        a->kld_sum += c.kl[t];
        a->kld[a->n_kld++] = c.kl[t];
        a->ref_nll_sum += c.ref_nll[t];
        a->dp_sq_sum += c.dp2[t];
        a->top1_same += c.same[t];
    }
    return 0;
}

int qp_eval_stream(qp_eval_acc *a, qp_llama *m, qp_llama *ref, const int32_t *tokens, size_t n, int bos,
                   qp_ppl_protocol proto, size_t ctx, size_t max_chunks, qp_eval_progress_fn progress, void *ud)
{
    const qp_llama_hparams *hp = qp_llama_get_hparams(m);
    size_t vocab = (size_t)hp->vocab;
    if (ctx < 2)
        return qp_error_set(QP_EUSAGE, "evaluation context %zu is too short (at least 2 tokens)", ctx);
    if (ctx > (size_t)hp->max_pos)
        return qp_error_set(QP_EUSAGE, "evaluation context %zu exceeds the model's %d positions; lower ctx:", ctx,
                            hp->max_pos);
    if (a->with_ref != (ref != NULL))
        return qp_error_set(QP_ERROR, "internal: reference model mismatch in evaluation");
    if (ref && qp_llama_get_hparams(ref)->vocab != hp->vocab)
        return qp_error_set(QP_EUSAGE, "reference model has a vocabulary of %d, the evaluated model %d",
                            qp_llama_get_hparams(ref)->vocab, hp->vocab);
    size_t n_windows = proto == QP_PPL_WINDOWS ? (n + ctx - 1) / ctx : n / ctx;
    if (proto == QP_PPL_WINDOWS && n > 0 && n % ctx == 1)
        n_windows--;  /* a trailing 1-token window scores nothing */
    if (max_chunks && a->windows + n_windows > max_chunks)
        n_windows = max_chunks > a->windows ? max_chunks - a->windows : 0;
    size_t batch = a->batch ? a->batch : qp_eval_batch_windows(m, ref, ctx, QP_EVAL_BATCH_BYTES);
    float *logits = qp_xmalloc(ctx * vocab * sizeof(float));
    float *ref_logits = ref ? qp_xmalloc(ctx * vocab * sizeof(float)) : NULL;
    double *scratch = qp_xmalloc((size_t)qp_llama_threads(m) * 2 * vocab * sizeof(double));
    double *terms = qp_xmalloc(5 * ctx * sizeof(double));
    int32_t *chunk = qp_xmalloc(batch * ctx * sizeof(int32_t));
    int rc = 0;
    uint64_t total_tokens = 0, done_tokens = 0;
    for (size_t w = 0; w < n_windows; w++)
        total_tokens += n - w * ctx < ctx ? n - w * ctx : ctx;
    /* Batches of up to `batch` consecutive windows of one length (only the
     * last window of a stream can be shorter); a window's logits do not
     * depend on the batch it ran in (model/llama.h). */
    for (size_t w = 0; w < n_windows;) {
        size_t len = n - w * ctx < ctx ? n - w * ctx : ctx, first = proto == QP_PPL_LLAMACPP ? ctx / 2 + 1 : 1;
        size_t S = 0;
        while (S < batch && w + S < n_windows && n - (w + S) * ctx >= len) {
            int32_t *c = chunk + S * len;
            memcpy(c, tokens + (w + S) * ctx, len * sizeof(int32_t));
            if (proto == QP_PPL_LLAMACPP && bos >= 0)
                c[0] = bos;
            S++;
            if (len < ctx)
                break;   /* the short last window runs alone */
        }
        if ((rc = qp_llama_forward_batch(m, chunk, S, len)) != 0)
            goto done;
        if (ref && (rc = qp_llama_forward_batch(ref, chunk, S, len)) != 0)
            goto done;
        for (size_t s = 0; s < S; s++) {
            /* position t is scored from logits row t-1: rows before first-1
             * are never read (llama-perplexity computes only the scored ones) */
            size_t row0 = first - 1;
            if ((rc = qp_llama_batch_logits_from(m, s, row0, logits)) != 0)
                goto done;
            if (ref && (rc = qp_llama_batch_logits_from(ref, s, row0, ref_logits)) != 0)
                goto done;
            if ((rc = score_window(a, m, logits, ref_logits, chunk + s * len, len, first, vocab, scratch, terms)) !=
                0)
                goto done;
            a->windows++;
            done_tokens += len;
            if (progress)
                progress(ud, done_tokens, total_tokens);
        }
        w += S;
    }
done:
    free(logits);
    free(ref_logits);
    free(scratch);
    free(terms);
    free(chunk);
    return rc;
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* Linear interpolation between closest ranks (numpy's default). */
static double percentile(const double *sorted, size_t n, double q)
{
    if (n == 0)
        return NAN;
    double pos = q * (double)(n - 1);
    size_t lo = (size_t)pos;
    if (lo + 1 >= n)
        return sorted[n - 1];
    double frac = pos - (double)lo;
    return sorted[lo] + frac * (sorted[lo + 1] - sorted[lo]);
}

int qp_eval_finish(const qp_eval_acc *a, qp_eval_result *out)
{
    memset(out, 0, sizeof(*out));
    if (a->scored == 0)
        return qp_error_set(QP_EUSAGE, "evaluation scored no tokens: the dataset is shorter than two tokens or "
                                       "max_tokens/max_chunks are too small");
    out->scored = a->scored;
    out->windows = a->windows;
    out->nll_mean = a->nll_sum / (double)a->scored;
    out->ppl = exp(out->nll_mean);
    if (!a->with_ref)
        return 0;
    double n = (double)a->scored;
    out->ppl_ref = exp(a->ref_nll_sum / n);
    out->ppl_delta = out->ppl - out->ppl_ref;
    out->ppl_ratio = out->ppl / out->ppl_ref;
    out->kld_mean = a->kld_sum / n;
    out->top1 = (double)a->top1_same / n;
    out->rms_dp = sqrt(a->dp_sq_sum / n);
    double *sorted = qp_xmalloc(a->n_kld * sizeof(double));
    memcpy(sorted, a->kld, a->n_kld * sizeof(double));
    qsort(sorted, a->n_kld, sizeof(double), cmp_double);
    out->kld_p99 = percentile(sorted, a->n_kld, 0.99);
    out->kld_median = percentile(sorted, a->n_kld, 0.5);
    free(sorted);
    return 0;
}

/* How multiple-choice sequences start: with the BOS the tokenizer adds
 * (flags), or, when it adds none and ctx has no tokens, with `lead` (the
 * vocabulary's BOS, else its EOS; -1: none to use). */
typedef struct {
    unsigned flags;   /* QP_TOK_ADD_BOS when the tokenizer adds BOS */
    int lead;         /* the token put before an empty ctx, or -1 */
} mc_encoding;

/* Encodes text as a multiple-choice sequence; *ctx_tokens (the tokens of
 * ctx alone) grows by 1 when `lead` is put first. */
static int mc_encode(const qp_tokenizer *tok, const mc_encoding *enc, const char *text, size_t len, size_t *ctx_tokens,
                     int **ids, size_t *n)
{
    int rc = qp_tokenizer_encode(tok, text, len, enc->flags, ids, n);
    if (rc || *ctx_tokens > 0)
        return rc;
    if (enc->lead < 0) {
        free(*ids);
        *ids = NULL;
        return qp_error_set(QP_EUSAGE, "the context has no tokens and the model has neither BOS nor EOS to condition "
                                       "the ending on");
    }
    *ids = qp_xrealloc_array(*ids, *n + 1, sizeof(int));
    memmove(*ids + 1, *ids, *n * sizeof(int));
    (*ids)[0] = enc->lead;
    (*n)++;
    (*ctx_tokens)++;
    return 0;
}

/* Sum of log p(ending tokens | everything before), one forward pass. */
static int score_ending(qp_llama *m, const qp_tokenizer *tok, const mc_encoding *enc, const char *ctx,
                        size_t ctx_tokens, const char *ending, double *out_lp)
{
    size_t lc = strlen(ctx), le = strlen(ending);
    char *text = qp_xmalloc(lc + le + 1);
    int *ids = NULL;
    size_t n = 0;
    float *logits = NULL;
    int rc;
    memcpy(text, ctx, lc);
    memcpy(text + lc, ending, le + 1);
    if ((rc = mc_encode(tok, enc, text, lc + le, &ctx_tokens, &ids, &n)) != 0)
        goto done;
    const qp_llama_hparams *hp = qp_llama_get_hparams(m);
    if (n > (size_t)hp->max_pos) {
        /* keep the ending and as much context as fits, as lm-eval truncates on the left */
        size_t drop = n - (size_t)hp->max_pos;
        if (drop >= ctx_tokens) {
            rc = qp_error_set(QP_EUSAGE, "multiple-choice ending longer than the model context (%d tokens)",
                              hp->max_pos);
            goto done;
        }
        memmove(ids, ids + drop, (n - drop) * sizeof(int));
        n -= drop;
        ctx_tokens -= drop;
    }
    if (ctx_tokens >= n) {
        *out_lp = 0;  /* the ending added no tokens of its own */
        goto done;
    }
    logits = qp_xmalloc(n * (size_t)hp->vocab * sizeof(float));
    if ((rc = qp_llama_forward(m, (const int32_t *)ids, n, logits)) != 0)
        goto done;
    double s = 0;
    for (size_t t = ctx_tokens; t < n; t++)
        s -= qp_logits_nll(logits + (t - 1) * (size_t)hp->vocab, (size_t)hp->vocab, ids[t]);
    *out_lp = s;
done:
    free(text);
    free(ids);
    free(logits);
    return rc;
}

int qp_eval_mc(qp_mc_result *out, qp_llama *m, const qp_tokenizer *tok, const qp_mc_item *items, size_t n,
               qp_eval_progress_fn progress, void *ud)
{
    size_t correct = 0, correct_norm = 0;
    int wants_bos = qp_tokenizer_wants_bos(tok);
    /* lm-evaluation-harness's prefix_token_id: BOS when the vocabulary has one, else EOS */
    int lead = qp_tokenizer_bos(tok) >= 0 ? qp_tokenizer_bos(tok) : qp_tokenizer_eos(tok);
    mc_encoding enc = {wants_bos ? QP_TOK_ADD_BOS : 0u, wants_bos ? -1 : lead};
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < n; i++) {
        const qp_mc_item *it = &items[i];
        int *ctx_ids = NULL;
        size_t n_ctx = 0;
        int rc = qp_tokenizer_encode(tok, it->ctx, strlen(it->ctx), enc.flags, &ctx_ids, &n_ctx);
        free(ctx_ids);
        if (rc)
            return rc;
        double best = -INFINITY, best_norm = -INFINITY;
        size_t arg = 0, arg_norm = 0;
        for (size_t e = 0; e < it->n_endings; e++) {
            double lp = 0;
            if ((rc = score_ending(m, tok, &enc, it->ctx, n_ctx, it->endings[e], &lp)) != 0) {
                qp_error_prefix("multiple-choice item %zu, ending %zu", i + 1, e);
                return rc;
            }
            size_t len = strlen(it->endings[e]);
            double norm = lp / (double)(len ? len : 1);
            if (lp > best) {
                best = lp;
                arg = e;
            }
            if (norm > best_norm) {
                best_norm = norm;
                arg_norm = e;
            }
        }
        correct += (int)arg == it->label;
        correct_norm += (int)arg_norm == it->label;
        if (progress)
            progress(ud, i + 1, n);
    }
    out->items = n;
    out->acc = n ? (double)correct / (double)n : 0;
    out->acc_norm = n ? (double)correct_norm / (double)n : 0;
    return 0;
}
