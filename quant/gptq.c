/* GPTQ driver (quant/gptq.h): steps 1–7 of GPTQModel's `GPTQ.quantize`.
 * The serial part (validation, dead columns, permutation, Hessian inverse)
 * runs on the calling thread; step 6 runs per fixed chunk of rows, because
 * every row's quantization depends only on that row and on Hinv. */
#include "quant/gptq.h"

#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/gemm.h"
#include "common/tensor.h"
#include "quant/linear_impl.h"
#include "quant/qtypes.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void qp_gptq_params_default(qp_gptq_params *p)
{
    *p = (qp_gptq_params){
        .bits = 4,
        .group_size = 128,
        .sym = 1,
        .mse = 0,
        .damp_percent = 0.01,
        .damp_auto_increment = 0.0025,
        .act_order = 0,
        .static_groups = 0,
        .block_size = 128,
        .nsamples = 0,
    };
}

/* ---- act order ----------------------------------------------------------- */

typedef struct {
    double d;
    int32_t i;
} diag_ix;

static int cmp_desc(const void *a, const void *b)
{
    const diag_ix *x = a, *y = b;
    if (x->d != y->d)
        return x->d > y->d ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

int qp_gptq_act_order_perm(int32_t *perm, const double *diag, int64_t n)
{
    diag_ix *v = qp_xmalloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++)
        v[i] = (diag_ix){ diag[i], (int32_t)i };
    /* The comparator is a total order (index breaks ties), so qsort's
     * instability cannot show. */
    qsort(v, (size_t)n, sizeof *v, cmp_desc);
    for (int64_t i = 0; i < n; i++)
        perm[i] = v[i].i;
    free(v);
    return 0;
}

/* ---- step 6, per chunk of rows ----------------------------------------- */

typedef struct {
    char msg[320];
} chunk_fail;

typedef struct {
    const qp_gptq_params *p;
    qp_linear_params lp;
    int64_t rows, cols;
    int gs;                 /* columns per group (cols for one group per row) */
    int per_row;            /* group_size -1: one group per row, fitted in step 1 */
    int stat;               /* static groups in effect */
    const float *W;         /* [rows, cols] the caller's, original order */
    float *Wp;              /* [rows, cols] permuted, dead columns zeroed, lazily updated */
    const float *Hinv;      /* [cols, cols] upper Cholesky factor of H⁻¹ (permuted) */
    const int32_t *perm;    /* [cols] position -> original column, NULL = identity */
    const uint8_t *dead;    /* [cols] original order */
    qp_linear_view v;
    double *loss;           /* [n_chunks] Σ (w − q)² / d² of the chunk */
    chunk_fail *fail;       /* [n_chunks] */
} gptq_ctx;

static int fail_fit(gptq_ctx *g, int64_t c, int64_t row, int64_t group)
{
    snprintf(g->fail[c].msg, sizeof g->fail[c].msg, "gptq: weight [%lld x %lld]: row %lld, group %lld: %s",
             (long long)g->rows, (long long)g->cols, (long long)row, (long long)group, qp_error_last());
    return 1;
}

/* Row stride of the transposed block buffers (w1t, errt): a whole chunk,
 * so rows >= R of a short last chunk stay 0. */
#define RP ((int64_t)QP_GPTQ_ROW_CHUNK)

/* dst[r] −= e[r] · h for all QP_GPTQ_ROW_CHUNK rows of a chunk: one column
 * of the in-block rank-1 update.  The fixed trip count lets -O2 vectorise
 * it (a short chunk is zero-padded); element-wise, so the bits are those of
 * the scalar loop. */
static void axpy_neg(float *restrict dst, const float *restrict e, float h)
{
    for (int r = 0; r < QP_GPTQ_ROW_CHUNK; r++)
        dst[r] -= e[r] * h;
}

/* One chunk's rows [begin, begin + R) (chunk index c) and their current
 * group's scale and zero. */
typedef struct {
    gptq_ctx *g;
    int64_t begin, R, c;
    float *cur_s;           /* [R] */
    int *cur_z;             /* [R] */
} chunk_rows;

/* Steps 1 and 3: the fits made before any update (one group per row, or
 * static groups); row is scratch [cols]. */
static int fit_before_update(const chunk_rows *k, float *row)
{
    gptq_ctx *g = k->g;
    const int64_t cols = g->cols, ng = g->v.n_groups;
    for (int64_t r = 0; r < k->R; r++) {
        const int64_t rr = k->begin + r;
        uint16_t s16;
        uint8_t z;
        if (g->per_row) {
            /* on the original row, before the dead columns are zeroed */
            if (qp_linear_fit_group(&g->lp, g->W + rr * cols, cols, 1, &s16, &z))
                return fail_fit(g, k->c, rr, 0);
            g->v.scales[rr * ng] = s16;
            g->v.zeros[rr * ng] = z;
            k->cur_s[r] = qp_f16_to_f32(s16);
            k->cur_z[r] = z;
        } else if (g->stat) {
            /* on the dead-zeroed row, original column order */
            for (int64_t j = 0; j < cols; j++)
                row[j] = g->dead[j] ? 0.0f : g->W[rr * cols + j];
            for (int64_t gi = 0; gi < ng; gi++) {
                if (qp_linear_fit_group(&g->lp, row + gi * g->gs, g->gs, 1, &s16, &z))
                    return fail_fit(g, k->c, rr, gi);
                g->v.scales[rr * ng + gi] = s16;
                g->v.zeros[rr * ng + gi] = z;
            }
        }
    }
    return 0;
}

/* The group of permuted column col: fitted now on W (lazily updated, not on
 * W1, as GPTQModel does) when a dynamic group starts there, or looked up
 * when groups are static. */
static int group_at(const chunk_rows *k, int64_t col, int64_t orig)
{
    gptq_ctx *g = k->g;
    const int64_t cols = g->cols, ng = g->v.n_groups;
    if (!g->per_row && !g->stat && col % g->gs == 0) {
        const int64_t gi = col / g->gs;
        for (int64_t r = 0; r < k->R; r++) {
            const int64_t rr = k->begin + r;
            uint16_t s16;
            uint8_t z;
            if (qp_linear_fit_group(&g->lp, g->Wp + rr * cols + col, g->gs, 1, &s16, &z))
                return fail_fit(g, k->c, rr, gi);
            g->v.scales[rr * ng + gi] = s16;
            g->v.zeros[rr * ng + gi] = z;
            k->cur_s[r] = qp_f16_to_f32(s16);
            k->cur_z[r] = z;
        }
    } else if (g->stat) {
        const int64_t gi = orig / g->gs;
        for (int64_t r = 0; r < k->R; r++) {
            k->cur_s[r] = qp_f16_to_f32(g->v.scales[(k->begin + r) * ng + gi]);
            k->cur_z[r] = g->v.zeros[(k->begin + r) * ng + gi];
        }
    }
    return 0;
}

/* Quantizes column w[R] (permuted col, original orig, Hinv diagonal d):
 * its codes, e[r] = (w − q) / d, and the loss added to *loss row by row. */
static int quantize_column(const chunk_rows *k, int64_t orig, float d, const float *w, float *e, double *loss)
{
    gptq_ctx *g = k->g;
    const int maxq = g->v.maxq;
    for (int64_t r = 0; r < k->R; r++) {
        if (!isfinite(w[r])) {
            snprintf(g->fail[k->c].msg, sizeof g->fail[k->c].msg,
                     "gptq: weight [%lld x %lld]: row %lld, column %lld: the GPTQ update made the weight %s; H is ill-conditioned, raise damp_percent",
                     (long long)g->rows, (long long)g->cols, (long long)(k->begin + r), (long long)orig,
                     isnan(w[r]) ? "nan" : "inf");
            return 1;
        }
        const uint8_t code = qp_linear_code(w[r], k->cur_s[r], k->cur_z[r], maxq);
        const float q = qp_linear_value(code, k->cur_s[r], k->cur_z[r]);
        const float diff = w[r] - q;
        g->v.codes[(k->begin + r) * g->cols + orig] = code;
        *loss += (double)diff * (double)diff / ((double)d * (double)d);
        e[r] = diff / d;
    }
    return 0;
}

/* Columns [i1, i2) of the chunk: W1 (transposed into w1t) is quantized
 * column by column with the in-block updates, and the rest of W gets the
 * block's error in one product. */
static int quantize_block(const chunk_rows *k, int64_t i1, int64_t i2, float *w1t, float *errt, double *loss)
{
    gptq_ctx *g = k->g;
    const int64_t cols = g->cols, count = i2 - i1;
    /* W1 = W[rows, i1:i2], transposed so a column is contiguous */
    for (int64_t r = 0; r < k->R; r++) {
        const float *src = g->Wp + (k->begin + r) * cols + i1;
        for (int64_t i = 0; i < count; i++)
            w1t[i * RP + r] = src[i];
    }
    for (int64_t i = 0; i < count; i++) {
        const int64_t col = i1 + i;
        const int64_t orig = g->perm ? g->perm[col] : col;
        float *e = errt + i * RP;
        int rc = group_at(k, col, orig);
        if (rc || (rc = quantize_column(k, orig, g->Hinv[col * cols + col], w1t + i * RP, e, loss)))
            return rc;
        /* W1[:, i+1:] −= err ⊗ Hinv[col, col+1:i2] */
        const float *hrow = g->Hinv + col * cols + i1;
        for (int64_t j = i + 1; j < count; j++)
            axpy_neg(w1t + j * RP, e, hrow[j]);
    }
    /* W[:, i2:] −= Err [R, count] · Hinv[i1:i2, i2:] [count, cols − i2] */
    if (i2 < cols)
        qp_sgemm(QP_TRANS, QP_NOTRANS, (size_t)k->R, (size_t)(cols - i2), (size_t)count, -1.0f, errt, (size_t)RP,
                 g->Hinv + i1 * cols + i2, (size_t)cols, 1.0f, g->Wp + k->begin * cols + i2, (size_t)cols);
    return 0;
}

static int gptq_chunk(void *ctx, int64_t begin, int64_t end, int64_t c)
{
    gptq_ctx *g = ctx;
    const int64_t R = end - begin, cols = g->cols;
    const int bs = g->p->block_size < cols ? g->p->block_size : (int)cols;
    float *w1t = qp_xcalloc((size_t)bs * (size_t)RP, sizeof *w1t);   /* [bs, RP] block, transposed */
    float *errt = qp_xcalloc((size_t)bs * (size_t)RP, sizeof *errt); /* [bs, RP], rows >= R stay 0 */
    float *row = g->stat ? qp_xmalloc((size_t)cols * sizeof *row) : NULL;
    chunk_rows k = {
        .g = g, .begin = begin, .R = R, .c = c,
        .cur_s = qp_xmalloc((size_t)R * sizeof(float)),
        .cur_z = qp_xmalloc((size_t)R * sizeof(int)),
    };
    double loss = 0.0;
    int rc = fit_before_update(&k, row);
    for (int64_t i1 = 0; rc == 0 && i1 < cols; i1 += bs)
        rc = quantize_block(&k, i1, i1 + bs < cols ? i1 + bs : cols, w1t, errt, &loss);
    if (rc == 0)
        g->loss[c] = loss;
    free(w1t);
    free(errt);
    free(k.cur_s);
    free(k.cur_z);
    free(row);
    return rc;
}

/* ---- driver ---------------------------------------------------------------- */

static int check_params(const qp_gptq_params *p)
{
    if (!p)
        return qp_error_set(QP_EUSAGE, "gptq: no parameters given");
    if (!(p->damp_percent > 0.0 && p->damp_percent < 1.0))
        return qp_error_set(QP_EUSAGE, "gptq: damp_percent %g is outside (0, 1)", p->damp_percent);
    if (!(p->damp_auto_increment >= 0.0 && p->damp_auto_increment < 1.0))
        return qp_error_set(QP_EUSAGE, "gptq: damp_auto_increment %g is outside [0, 1)", p->damp_auto_increment);
    if (p->block_size < 1)
        return qp_error_set(QP_EUSAGE, "gptq: block_size %d must be at least 1", p->block_size);
    if (p->nsamples < 0)
        return qp_error_set(QP_EUSAGE, "gptq: nsamples %lld is negative", (long long)p->nsamples);
    return 0;
}

/* The serial preparation of the n = cols columns, shared by the weights
 * that read the same input (quant/gptq.h). */
struct qp_gptq_prepared {
    int64_t n;
    double damp_percent, damp_auto_increment;  /* asked for */
    int act_order;
    uint8_t *dead;    /* [n] original order: H's diagonal is 0 */
    double *diag;     /* [n] H's diagonal, 1 for dead columns */
    int32_t *perm;    /* [n] position -> original column */
    float *hinv;      /* [n, n] */
    int64_t n_dead;
    double damp_used;
    int retries;
    double seconds_prepare, seconds_hinv;
};

void qp_gptq_prepared_free(qp_gptq_prepared *h)
{
    if (!h)
        return;
    free(h->dead);
    free(h->diag);
    free(h->perm);
    free(h->hinv);
    free(h);
}

/* Steps 2, 4 and 5 (step 5 reads H through perm). */
int qp_gptq_prepare(qp_gptq_prepared **out, const double *H, int64_t cols, const qp_gptq_params *p, int n_threads)
{
    *out = NULL;
    const double t0 = qp_now();
    int rc = check_params(p);
    if (rc)
        return rc;
    if (!H)
        return qp_error_set(QP_EUSAGE, "gptq: no Hessian given");
    const int64_t n = cols;
    /* cols is capped as in qp_gptq_hinv (46340² < 2³¹) */
    if (n < 1 || n > 46340)
        return qp_error_set(QP_EUSAGE, "gptq: H [%lld x %lld]: 1 to 46340 input columns are supported",
                            (long long)n, (long long)n);
    if ((rc = qp_gptq_check_hessian(H, n)))
        return rc;
    qp_gptq_prepared *s = qp_xcalloc(1, sizeof *s);
    *s = (qp_gptq_prepared){ .n = n, .damp_percent = p->damp_percent,
                             .damp_auto_increment = p->damp_auto_increment, .act_order = p->act_order };
    s->dead = qp_xmalloc((size_t)n);
    s->diag = qp_xcalloc((size_t)n, sizeof *s->diag);
    s->perm = qp_xmalloc((size_t)n * sizeof *s->perm);
    s->hinv = qp_xmalloc((size_t)n * (size_t)n * sizeof *s->hinv);
    /* Step 2: dead columns. */
    for (int64_t i = 0; i < n; i++) {
        s->dead[i] = H[i * n + i] == 0.0;
        s->n_dead += s->dead[i];
        s->diag[i] = s->dead[i] ? 1.0 : H[i * n + i];
    }
    /* Step 4: the order. */
    if (p->act_order) {
        qp_gptq_act_order_perm(s->perm, s->diag, n);
    } else {
        for (int64_t i = 0; i < n; i++)
            s->perm[i] = (int32_t)i;
    }
    /* Step 5: H[perm][:, perm] is read through the permutation, never copied */
    const double t1 = qp_now();
    if ((rc = qp_gptq_hinv_perm(s->hinv, H, s->perm, s->diag, n, p->damp_percent, p->damp_auto_increment,
                                &s->damp_used, &s->retries, n_threads))) {
        qp_gptq_prepared_free(s);
        return rc;
    }
    s->seconds_prepare = t1 - t0;
    s->seconds_hinv = qp_now() - t1;
    *out = s;
    return 0;
}

/* W must be finite (qp_first_nonfinite: the vectorised scan). */
static int check_weight(const float *W, int64_t rows, int64_t cols)
{
    const int64_t k = qp_first_nonfinite(W, rows * cols);
    if (k < 0)
        return 0;
    return qp_error_set(QP_EUSAGE, "gptq: weight [%lld x %lld]: row %lld, column %lld: weight is %s; fix the checkpoint",
                        (long long)rows, (long long)cols, (long long)(k / cols), (long long)(k % cols),
                        isnan(W[k]) ? "nan" : "inf");
}

/* Wp = W[:, perm] with the dead columns zeroed. */
static float *permuted_weight(const qp_gptq_prepared *s, const float *W, int64_t rows)
{
    const int64_t n = s->n;
    float *wp = qp_xmalloc((size_t)rows * (size_t)n * sizeof *wp);
    for (int64_t r = 0; r < rows; r++) {
        const float *src = W + r * n;
        float *dst = wp + r * n;
        for (int64_t i = 0; i < n; i++)
            dst[i] = s->dead[s->perm[i]] ? 0.0f : src[s->perm[i]];
    }
    return wp;
}

/* Step 7 for act order with dynamic groups: the group of each original
 * column (the codes are already in original column order). */
static int set_g_idx(qp_linear *q, const int32_t *perm, int64_t n, int gs)
{
    int32_t *g_idx = qp_xmalloc((size_t)n * sizeof *g_idx);
    for (int64_t i = 0; i < n; i++)
        g_idx[perm[i]] = (int32_t)(i / gs);
    int rc = qp_linear_set_g_idx(q, g_idx);
    if (rc)
        qp_error_prefix("gptq");
    free(g_idx);
    return rc;
}

/* qp_gptq_quantize_prepared; weight_checked: the caller already ran
 * check_weight on W (qp_gptq_quantize, before the inverse). */
static int quantize_prepared(qp_linear **out, const float *W, const qp_gptq_prepared *s, int64_t rows, int64_t cols,
                             const qp_gptq_params *p, qp_gptq_stats *stats, int n_threads, int weight_checked)
{
    qp_linear *q = NULL;
    float *wp = NULL;
    double *loss = NULL;
    chunk_fail *fail = NULL;
    int rc;

    *out = NULL;
    const double t0 = qp_now();
    if ((rc = check_params(p)))
        return rc;
    if (!W || !s)
        return qp_error_set(QP_EUSAGE, "gptq: no weight or no prepared Hessian given");
    if (s->n != cols || s->damp_percent != p->damp_percent || s->damp_auto_increment != p->damp_auto_increment ||
        (s->act_order != 0) != (p->act_order != 0))
        return qp_error_set(QP_EUSAGE, "gptq: weight [%lld x %lld]: the prepared Hessian is for %lld columns with "
                                       "other damp / act_order parameters",
                            (long long)rows, (long long)cols, (long long)s->n);
    const qp_linear_params lp = { .bits = p->bits, .group_size = p->group_size, .sym = p->sym, .mse = p->mse };
    if ((rc = qp_linear_new(&q, rows, cols, &lp))) {
        qp_error_prefix("gptq");
        return rc;
    }
    if (!weight_checked && (rc = check_weight(W, rows, cols)))
        goto done;
    wp = permuted_weight(s, W, rows);
    const double t1 = qp_now();

    /* Step 6. */
    const int64_t n_chunks = qp_lin_nchunks(rows, QP_GPTQ_ROW_CHUNK);
    loss = qp_xcalloc((size_t)n_chunks, sizeof *loss);
    fail = qp_xcalloc((size_t)n_chunks, sizeof *fail);
    gptq_ctx g = {
        .p = p, .lp = lp, .rows = rows, .cols = cols,
        .per_row = p->group_size <= 0,
        .stat = p->group_size > 0 && p->static_groups,
        .W = W, .Wp = wp, .Hinv = s->hinv, .perm = p->act_order ? s->perm : NULL, .dead = s->dead,
        .loss = loss, .fail = fail,
    };
    qp_linear_view_of(q, &g.v);
    g.gs = g.v.group_size;
    int64_t bad = qp_lin_parallel(rows, QP_GPTQ_ROW_CHUNK, n_threads, gptq_chunk, &g);
    if (bad >= 0) {
        rc = qp_error_set(QP_EUSAGE, "%s", fail[bad].msg);
        goto done;
    }

    /* Step 7. */
    if (p->act_order && p->group_size > 0 && !p->static_groups && (rc = set_g_idx(q, s->perm, cols, g.gs)))
        goto done;
    if (stats) {
        double total = 0.0;
        for (int64_t c = 0; c < n_chunks; c++)
            total += loss[c];
        total /= 2.0;
        *stats = (qp_gptq_stats){
            .damp_percent = s->damp_used,
            .damp_retries = s->retries,
            .dead_columns = s->n_dead,
            .loss = total,
            .avg_loss = p->nsamples > 0 ? total / (double)p->nsamples : NAN,
            .loss_per_weight = total / ((double)rows * (double)cols),
            .seconds_prepare = s->seconds_prepare + (t1 - t0),
            .seconds_hinv = s->seconds_hinv,
            .seconds_update = qp_now() - t1,
        };
    }
    *out = q;
    q = NULL;
done:
    qp_linear_free(q);
    free(wp);
    free(loss);
    free(fail);
    return rc;
}

int qp_gptq_quantize_prepared(qp_linear **out, const float *W, const qp_gptq_prepared *s, int64_t rows,
                              int64_t cols, const qp_gptq_params *p, qp_gptq_stats *stats, int n_threads)
{
    return quantize_prepared(out, W, s, rows, cols, p, stats, n_threads, 0);
}

int qp_gptq_quantize(qp_linear **out, const float *W, const double *H, int64_t rows, int64_t cols,
                     const qp_gptq_params *p, qp_gptq_stats *stats, int n_threads)
{
    qp_gptq_prepared *s = NULL;
    *out = NULL;
    int rc = check_params(p);
    if (rc)
        return rc;
    if (!W || !H)
        return qp_error_set(QP_EUSAGE, "gptq: no weight or no Hessian given");
    /* the weight's own errors (shape, group size, a non-finite value) come
     * before H's, and before the n³ work */
    const qp_linear_params lp = { .bits = p->bits, .group_size = p->group_size, .sym = p->sym, .mse = p->mse };
    qp_linear *probe = NULL;
    if ((rc = qp_linear_new(&probe, rows, cols, &lp))) {
        qp_error_prefix("gptq");
        return rc;
    }
    qp_linear_free(probe);
    if ((rc = check_weight(W, rows, cols)) || (rc = qp_gptq_prepare(&s, H, cols, p, n_threads)))
        return rc;
    rc = quantize_prepared(out, W, s, rows, cols, p, stats, n_threads, 1);
    qp_gptq_prepared_free(s);
    return rc;
}
