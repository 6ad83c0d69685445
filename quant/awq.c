/* AWQ scale and clip searches (see quant/awq.h for the algorithm, the
 * grid and the determinism contract).
 *
 * Shapes: W f32 [rows, cols]; s, x̄, w̄ f32 [cols]; clip inputs
 * x f32 [n_tokens, cols], transposed once into xT f32 [cols, Tp]
 * (Tp = sampled tokens rounded up to 32, zero-padded) so the per-candidate
 * error is a run of axpy-like updates over contiguous tokens. */
#include "quant/awq.h"

#include "common/alloc.h"
#include "common/error.h"
#include "common/tensor.h"
#include "quant/linear.h"
#include "quant/linear_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX__)
#include <immintrin.h>
#endif

void qp_awq_params_default(qp_awq_params *p)
{
    *p = (qp_awq_params){ .bits = 4, .group_size = 128, .zero_point = 1, .n_grid = 20,
                          .duo_scaling = -1, .clip_n_grid = 20, .clip_max_shrink = 0.5,
                          .clip_n_sample_token = 512 };
}

/* ---- checks --------------------------------------------------------------- */

static int check_quant_params(const qp_awq_params *p, const char *who)
{
    if (!p)
        return qp_error_set(QP_EUSAGE, "%s: no parameters given", who);
    if (p->bits < 2 || p->bits > 8)
        return qp_error_set(QP_EUSAGE, "%s: bits %d is not supported (use 2 to 8)", who, p->bits);
    if (p->zero_point != 0 && p->zero_point != 1)
        return qp_error_set(QP_EUSAGE, "%s: zero_point %d must be 0 (sym) or 1 (asym)", who, p->zero_point);
    if (!qp_linear_group_size_ok(p->group_size))   /* AWQ writes linear tensors: linear's rule */
        return qp_error_set(QP_EUSAGE,
                            "%s: group_size %d is not supported (use 32, 64, 128, 256, or -1 for one group per row)",
                            who, p->group_size);
    return 0;
}

static int64_t group_cols(int group_size, int64_t cols)
{
    return group_size <= 0 ? cols : group_size;
}

/* label: "gate_proj" / "weight 1" / "weight" */
static int check_shape(const char *who, const char *label, int64_t rows, int64_t cols, int group_size)
{
    if (rows < 1 || cols < 1)
        return qp_error_set(QP_EUSAGE, "%s: %s [%lld x %lld]: a linear weight needs at least one row and one column",
                            who, label, (long long)rows, (long long)cols);
    if (group_size > 0 && cols % group_size != 0)
        return qp_error_set(QP_EUSAGE,
                            "%s: %s [%lld x %lld]: %lld input columns are not a multiple of group_size %d (choose a group size that divides %lld, or -1 for one group per row)",
                            who, label, (long long)rows, (long long)cols, (long long)cols, group_size,
                            (long long)cols);
    uint64_t n;
    if (qp_lin_mul_ok(&n, (uint64_t)rows, (uint64_t)cols) || n > (uint64_t)SIZE_MAX / 8)
        return qp_error_set(QP_EUSAGE, "%s: %s [%lld x %lld]: too many elements", who, label, (long long)rows,
                            (long long)cols);
    return 0;
}

static const char *nonfinite_name(float v)
{
    return isnan(v) ? "nan" : "inf";
}

static int check_finite_weight(const char *who, const char *label, const float *w, int64_t rows, int64_t cols)
{
    for (int64_t i = 0; i < rows * cols; i++)
        if (!isfinite(w[i]))
            return qp_error_set(QP_EUSAGE, "%s: %s [%lld x %lld]: row %lld, column %lld is %s; fix the checkpoint",
                                who, label, (long long)rows, (long long)cols, (long long)(i / cols),
                                (long long)(i % cols), nonfinite_name(w[i]));
    return 0;
}

static void weight_label(char *buf, size_t n, const qp_awq_group *g, size_t j)
{
    if (g->names && g->names[j])
        snprintf(buf, n, "%s", g->names[j]);
    else
        snprintf(buf, n, "weight %zu", j);
}

/* ---- fake quantization: Q(W·diag(s))·diag(s)⁻¹ ----------------------------- */

/* What a worker saw go wrong (workers never call qp_error_set: the message
 * is thread-local; qp_linear_fit_group may, and its text is copied here). */
typedef struct {
    int64_t row, group;
    char msg[256];
} awq_fail;

static void record_fail(awq_fail *f, int64_t row, int64_t group)
{
    const char *m = qp_error_last();
    if (strncmp(m, "fit group: ", 11) == 0)
        m += 11;
    f->row = row;
    f->group = group;
    snprintf(f->msg, sizeof f->msg, "%s", m);
}

typedef struct {
    const float *w;       /* [rows, cols] */
    float *out;           /* [rows, cols] */
    const float *s;       /* [cols] or NULL */
    int64_t rows, cols, gs;
    qp_linear_params lp;
    awq_fail *fail;       /* [n_chunks] */
} fq_job;

/* out[k] = value(code(t[k])) / s[k] (s NULL: no divide) for one group of n
 * values on the grid (sc, z): qp_linear_code / qp_linear_value elementwise.
 * The AVX path does the same f32 operations (divide, round half to even,
 * + z, clamp; q − z is exact for these small integers), so the same bits. */
static void dequant_group(float *out, const float *t, const float *s, int64_t n, float sc, int z, int maxq)
{
    int64_t k = 0;
#if defined(__AVX__)
    const __m256 vs = _mm256_set1_ps(sc), vz = _mm256_set1_ps((float)z);
    const __m256 lo = _mm256_setzero_ps(), hi = _mm256_set1_ps((float)maxq);
    for (; k + 8 <= n; k += 8) {
        __m256 q = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(t + k), vs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        q = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(q, vz), lo), hi);
        __m256 v = _mm256_mul_ps(vs, _mm256_sub_ps(q, vz));
        if (s)
            v = _mm256_div_ps(v, _mm256_loadu_ps(s + k));
        _mm256_storeu_ps(out + k, v);
    }
#endif
    for (; k < n; k++) {
        float v = qp_linear_value(qp_linear_code(t[k], sc, z, maxq), sc, z);
        out[k] = s ? v / s[k] : v;
    }
}

/* One row: out = dequant(code(w·s)) / s per group. tmp f32 [gs]. */
static int fq_row(const fq_job *j, int64_t r, float *tmp, awq_fail *f)
{
    const int maxq = (1 << j->lp.bits) - 1;
    const float *w = j->w + r * j->cols;
    float *out = j->out + r * j->cols;
    for (int64_t g = 0; g < j->cols / j->gs; g++) {
        const int64_t c0 = g * j->gs;
        if (j->s)
            for (int64_t k = 0; k < j->gs; k++)
                tmp[k] = w[c0 + k] * j->s[c0 + k];
        else
            memcpy(tmp, w + c0, (size_t)j->gs * sizeof *tmp);
        uint16_t s16;
        uint8_t z;
        if (qp_linear_fit_group(&j->lp, tmp, j->gs, 1, &s16, &z)) {
            record_fail(f, r, g);
            return 1;
        }
        dequant_group(out + c0, tmp, j->s ? j->s + c0 : NULL, j->gs, qp_f16_to_f32(s16), z, maxq);
    }
    return 0;
}

static int fq_chunk(void *ctx, int64_t b, int64_t e, int64_t c)
{
    fq_job *j = ctx;
    float *tmp = qp_xmalloc((size_t)j->gs * sizeof *tmp);
    int st = 0;
    for (int64_t r = b; r < e && !st; r++)
        st = fq_row(j, r, tmp, &j->fail[c]);
    free(tmp);
    return st;
}

/* The weights were checked (shape, finiteness) by the caller. */
static int fake_quantize_run(float *out, const float *w, int64_t rows, int64_t cols, const float *s,
                             const qp_awq_params *p, int n_threads, const char *who, const char *label)
{
    fq_job j = { .w = w, .out = out, .s = s, .rows = rows, .cols = cols,
                 .gs = group_cols(p->group_size, cols),
                 .lp = { .bits = p->bits, .group_size = p->group_size, .sym = !p->zero_point, .mse = 0 } };
    j.fail = qp_xcalloc((size_t)qp_lin_nchunks(rows, QP_AWQ_ROW_CHUNK), sizeof *j.fail);
    int rc = 0;
    int64_t bad = qp_lin_parallel(rows, QP_AWQ_ROW_CHUNK, n_threads, fq_chunk, &j);
    if (bad >= 0) {
        const awq_fail *f = &j.fail[bad];
        rc = qp_error_set(QP_EUSAGE, "%s: %s [%lld x %lld]: row %lld, group %lld: %s", who, label,
                          (long long)rows, (long long)cols, (long long)f->row, (long long)f->group, f->msg);
    }
    free(j.fail);
    return rc;
}

int qp_awq_fake_quantize(float *out, const float *w, int64_t rows, int64_t cols, const float *s,
                         const qp_awq_params *p, int n_threads)
{
    int rc;
    if ((rc = check_quant_params(p, "awq")) || (rc = check_shape("awq", "weight", rows, cols, p->group_size)) ||
        (rc = check_finite_weight("awq", "weight", w, rows, cols)))
        return rc;
    if (s)
        for (int64_t c = 0; c < cols; c++)
            if (!(isfinite(s[c]) && s[c] > 0.0f))
                return qp_error_set(QP_EUSAGE, "awq: scale s[%lld] is %g; scales must be finite and positive",
                                    (long long)c, (double)s[c]);
    return fake_quantize_run(out, w, rows, cols, s, p, n_threads, "awq", "weight");
}

/* ---- scale search ----------------------------------------------------------- */

static int check_group(const qp_awq_group *g, const qp_awq_params *p)
{
    if (!g || g->n_weights < 1 || !g->ws || !g->rows || !g->x_absmean)
        return qp_error_set(QP_EUSAGE, "awq: the scale group needs at least one weight, its shapes and x_absmean");
    for (size_t j = 0; j < g->n_weights; j++) {
        char label[128];
        weight_label(label, sizeof label, g, j);
        int rc;
        if (!g->ws[j])
            return qp_error_set(QP_EUSAGE, "awq: %s: no weight data given", label);
        if ((rc = check_shape("awq", label, g->rows[j], g->cols, p->group_size)) ||
            (rc = check_finite_weight("awq", label, g->ws[j], g->rows[j], g->cols)))
            return rc;
    }
    for (int64_t c = 0; c < g->cols; c++) {
        float v = g->x_absmean[c];
        if (!isfinite(v))
            return qp_error_set(QP_EUSAGE,
                                "awq: x_absmean[%lld] is %s; the calibration produced a non-finite activation statistic",
                                (long long)c, nonfinite_name(v));
        if (v < 0.0f)
            return qp_error_set(QP_EUSAGE, "awq: x_absmean[%lld] is %g; a mean of |x| cannot be negative",
                                (long long)c, (double)v);
    }
    return 0;
}

int qp_awq_w_absmean(float *w_mean, const qp_awq_group *g, const qp_awq_params *p)
{
    int rc;
    if ((rc = check_quant_params(p, "awq")) || (rc = check_group(g, p)))
        return rc;
    const int64_t cols = g->cols, gs = group_cols(p->group_size, cols);
    double *acc = qp_xcalloc((size_t)cols, sizeof *acc);
    int64_t total = 0;
    for (size_t j = 0; j < g->n_weights; j++) {
        for (int64_t r = 0; r < g->rows[j]; r++) {
            const float *w = g->ws[j] + r * cols;   /* [cols] */
            for (int64_t c0 = 0; c0 < cols; c0 += gs) {
                float mx = 0.0f;
                for (int64_t k = 0; k < gs; k++) {
                    float a = fabsf(w[c0 + k]);
                    mx = a > mx ? a : mx;
                }
                const float den = mx + 1e-6f;
                for (int64_t k = 0; k < gs; k++)
                    acc[c0 + k] += (double)(fabsf(w[c0 + k]) / den);
            }
        }
        total += g->rows[j];
    }
    for (int64_t c = 0; c < cols; c++)
        w_mean[c] = (float)(acc[c] / (double)total);
    free(acc);
    return 0;
}

void qp_awq_candidate_scales(float *s, const float *x_absmean, const float *w_mean, int64_t cols, float alpha,
                             int duo)
{
    float mx = -INFINITY, mn = INFINITY;
    for (int64_t c = 0; c < cols; c++) {
        float v = powf(x_absmean[c], alpha);
        if (duo)
            v = v / (powf(w_mean[c], 1.0f - alpha) + 1e-4f);
        v = v < 1e-4f ? 1e-4f : v;
        s[c] = v;
        mx = v > mx ? v : mx;
        mn = v < mn ? v : mn;
    }
    const float norm = (float)sqrt((double)mx * (double)mn);
    for (int64_t c = 0; c < cols; c++) {
        float v = s[c] / norm;
        s[c] = isfinite(v) ? v : 1.0f;
    }
}

int qp_awq_search_scale(float *best_s, qp_awq_scale_stats *stats, const qp_awq_group *g,
                        const qp_awq_params *p, qp_awq_loss_fn loss, void *ud, int n_threads)
{
    int rc;
    if ((rc = check_quant_params(p, "awq")))
        return rc;
    if (p->n_grid < 1 || p->n_grid > QP_AWQ_MAX_GRID)
        return qp_error_set(QP_EUSAGE, "awq: n_grid %d is outside [1, %d]", p->n_grid, QP_AWQ_MAX_GRID);
    if (p->duo_scaling < -1 || p->duo_scaling > 1)
        return qp_error_set(QP_EUSAGE, "awq: duo_scaling %d must be -1 (auto), 0 or 1", p->duo_scaling);
    if (!loss || !best_s)
        return qp_error_set(QP_EUSAGE, "awq: the scale search needs an output array and a loss callback");
    if ((rc = check_group(g, p)))
        return rc;

    const int64_t cols = g->cols;
    const size_t nw = g->n_weights;
    float *w_mean = NULL, *s = qp_xmalloc((size_t)cols * sizeof *s);
    float **cand = qp_xcalloc(nw, sizeof *cand);
    qp_awq_scale_stats st = { .loss = INFINITY, .grid_index = -1, .rtn_loss = NAN };
    for (int i = 0; i < QP_AWQ_MAX_GRID; i++)
        st.loss_x[i] = st.loss_duo[i] = NAN;
    for (size_t j = 0; j < nw; j++)
        cand[j] = qp_xmalloc((size_t)(g->rows[j] * cols) * sizeof **cand);
    if (p->duo_scaling != 0) {
        w_mean = qp_xmalloc((size_t)cols * sizeof *w_mean);
        if ((rc = qp_awq_w_absmean(w_mean, g, p)))
            goto done;
    }

    const int forms[2] = { p->duo_scaling == 1 ? 1 : 0, 1 };
    const int n_forms = p->duo_scaling == -1 ? 2 : 1;
    for (int fi = 0; fi < n_forms; fi++) {
        const int duo = forms[fi];
        for (int i = 0; i < p->n_grid; i++) {
            /* AutoAWQ: ratio = arange(n_grid, f32)[i] / n_grid, in f32 */
            const float alpha = (float)i / (float)p->n_grid;
            qp_awq_candidate_scales(s, g->x_absmean, w_mean, cols, alpha, duo);
            for (size_t j = 0; j < nw; j++) {
                char label[128];
                weight_label(label, sizeof label, g, j);
                if ((rc = fake_quantize_run(cand[j], g->ws[j], g->rows[j], cols, s, p, n_threads, "awq", label)))
                    goto done;
            }
            double l = NAN;
            if ((rc = loss(ud, (const float *const *)cand, &l))) {
                qp_error_prefix("awq: scale candidate alpha %.2f (%s)", (double)alpha, duo ? "duo" : "x");
                goto done;
            }
            st.n_evals++;
            if (!isfinite(l)) {
                rc = qp_error_set(QP_EUSAGE, "awq: scale candidate alpha %.2f (%s): the loss callback returned %s",
                                  (double)alpha, duo ? "duo" : "x", isnan(l) ? "nan" : "inf");
                goto done;
            }
            (duo ? st.loss_duo : st.loss_x)[i] = l;
            if (!duo && i == 0)
                st.rtn_loss = l;
            if (l < st.loss) {
                st.loss = l;
                st.alpha = (double)alpha;
                st.grid_index = i;
                st.duo = duo;
                memcpy(best_s, s, (size_t)cols * sizeof *s);
            }
        }
    }
    if (stats)
        *stats = st;
done:
    if (cand)
        for (size_t j = 0; j < nw; j++)
            free(cand[j]);
    free(cand);
    free(s);
    free(w_mean);
    return rc;
}

/* ---- clip search ------------------------------------------------------------ */

#define CLIP_TBLOCK 32

/* e[t] = Σ_k d[k]·xT[k·Tp + t] for t < Tp (Tp % 32 == 0): k ascending, each
 * term an f32 product added in f32 (no FMA), so the AVX and scalar paths
 * give the same bits.  Zero d[k] are skipped (adding ±0 changes nothing). */
static void dot_tokens(float *e, const float *d, const float *xT, int64_t gs, int64_t Tp)
{
#if defined(__AVX__)
    for (int64_t t = 0; t < Tp; t += CLIP_TBLOCK) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t k = 0; k < gs; k++) {
            if (d[k] == 0.0f)
                continue;
            const float *x = xT + k * Tp + t;
            const __m256 dk = _mm256_set1_ps(d[k]);
            a0 = _mm256_add_ps(a0, _mm256_mul_ps(dk, _mm256_loadu_ps(x)));
            a1 = _mm256_add_ps(a1, _mm256_mul_ps(dk, _mm256_loadu_ps(x + 8)));
            a2 = _mm256_add_ps(a2, _mm256_mul_ps(dk, _mm256_loadu_ps(x + 16)));
            a3 = _mm256_add_ps(a3, _mm256_mul_ps(dk, _mm256_loadu_ps(x + 24)));
        }
        _mm256_storeu_ps(e + t, a0);
        _mm256_storeu_ps(e + t + 8, a1);
        _mm256_storeu_ps(e + t + 16, a2);
        _mm256_storeu_ps(e + t + 24, a3);
    }
#else
    for (int64_t t = 0; t < Tp; t++)
        e[t] = 0.0f;
    for (int64_t k = 0; k < gs; k++) {
        if (d[k] == 0.0f)
            continue;
        const float dk = d[k], *x = xT + k * Tp;
        for (int64_t t = 0; t < Tp; t++)
            e[t] += dk * x[t];
    }
#endif
}

typedef struct {
    const float *w;          /* [rows, cols] */
    const float *xT;         /* [cols, Tp] */
    int64_t rows, cols, gs, n_groups, T, Tp;
    int n_shrink, n_grid;
    qp_linear_params lp;
    float *max_val;          /* [rows, n_groups] */
    double *err, *err0;      /* [rows, n_groups] or NULL */
    awq_fail *fail;          /* [n_chunks] */
} clip_job;

/* Scratch: cw, d f32 [gs]; e f32 [Tp]. */
static int clip_group(const clip_job *j, int64_t r, int64_t g, float *cw, float *d, float *e, awq_fail *f)
{
    const int maxq = (1 << j->lp.bits) - 1;
    const int64_t gs = j->gs;
    const float *wg = j->w + r * j->cols + g * gs;        /* [gs] */
    const float *xT = j->xT + g * gs * j->Tp;             /* [gs, Tp] */
    float m0 = 0.0f;
    for (int64_t k = 0; k < gs; k++) {
        float a = fabsf(wg[k]);
        m0 = a > m0 ? a : m0;
    }
    double best = INFINITY, e0 = NAN;
    float best_m = m0;
    for (int i = 0; i < j->n_shrink; i++) {
        /* AutoAWQ: org_max_val * (1 - i_s / n_grid): a Python double, applied in f32 */
        const float m = m0 * (float)(1.0 - (double)i / (double)j->n_grid);
        for (int64_t k = 0; k < gs; k++)
            cw[k] = wg[k] < -m ? -m : (wg[k] > m ? m : wg[k]);
        uint16_t s16;
        uint8_t z;
        if (qp_linear_fit_group(&j->lp, cw, gs, 1, &s16, &z)) {
            record_fail(f, r, g);
            return 1;
        }
        const float sc = qp_f16_to_f32(s16);
        for (int64_t k = 0; k < gs; k++)
            d[k] = qp_linear_value(qp_linear_code(cw[k], sc, z, maxq), sc, z) - wg[k];
        dot_tokens(e, d, xT, gs, j->Tp);
        double sum = 0.0;
        for (int64_t t = 0; t < j->T; t++)
            sum += (double)e[t] * (double)e[t];
        const double err = sum / (double)j->T;
        if (i == 0)
            e0 = err;
        if (err < best) {
            best = err;
            best_m = m;
        }
    }
    const int64_t o = r * j->n_groups + g;
    j->max_val[o] = best_m;
    if (j->err)
        j->err[o] = best;
    if (j->err0)
        j->err0[o] = e0;
    return 0;
}

static int clip_chunk(void *ctx, int64_t b, int64_t e, int64_t c)
{
    clip_job *j = ctx;
    float *buf = qp_xmalloc((size_t)(2 * j->gs + j->Tp) * sizeof *buf);
    int st = 0;
    for (int64_t r = b; r < e && !st; r++)
        for (int64_t g = 0; g < j->n_groups && !st; g++)
            st = clip_group(j, r, g, buf, buf + j->gs, buf + 2 * j->gs, &j->fail[c]);
    free(buf);
    return st;
}

int qp_awq_search_clip(float *max_val, double *err, double *err_noclip, const float *w, int64_t rows,
                       int64_t cols, const float *x, int64_t n_tokens, const qp_awq_params *p,
                       int n_threads)
{
    int rc;
    const char *who = "awq clip";
    if ((rc = check_quant_params(p, who)))
        return rc;
    if (p->clip_n_grid < 1)
        return qp_error_set(QP_EUSAGE, "%s: clip_n_grid %d must be at least 1", who, p->clip_n_grid);
    if (!(p->clip_max_shrink >= 0.0 && p->clip_max_shrink < 1.0))
        return qp_error_set(QP_EUSAGE, "%s: clip_max_shrink %g is outside [0, 1)", who, p->clip_max_shrink);
    if (p->clip_n_sample_token < 1)
        return qp_error_set(QP_EUSAGE, "%s: clip_n_sample_token %lld must be at least 1", who,
                            (long long)p->clip_n_sample_token);
    if (!max_val || !w || !x)
        return qp_error_set(QP_EUSAGE, "%s: no weight, input or output array given", who);
    if ((rc = check_shape(who, "weight", rows, cols, p->group_size)) ||
        (rc = check_finite_weight(who, "weight", w, rows, cols)))
        return rc;
    if (n_tokens < 1)
        return qp_error_set(QP_EUSAGE, "%s: x [%lld x %lld]: the clip search needs at least one input token", who,
                            (long long)n_tokens, (long long)cols);

    /* AutoAWQ: input_feat[:, 0 :: max(1, n_token // n_sample_token)] */
    const int64_t step = n_tokens / p->clip_n_sample_token > 1 ? n_tokens / p->clip_n_sample_token : 1;
    const int64_t T = (n_tokens + step - 1) / step;
    const int64_t Tp = (T + CLIP_TBLOCK - 1) / CLIP_TBLOCK * CLIP_TBLOCK;
    for (int64_t t = 0; t < T; t++)
        for (int64_t c = 0; c < cols; c++) {
            float v = x[t * step * cols + c];
            if (!isfinite(v))
                return qp_error_set(QP_EUSAGE,
                                    "%s: x [%lld x %lld]: token %lld, column %lld is %s; the calibration inputs are not finite",
                                    who, (long long)n_tokens, (long long)cols, (long long)(t * step),
                                    (long long)c, nonfinite_name(v));
        }

    clip_job j = { .w = w, .rows = rows, .cols = cols, .gs = group_cols(p->group_size, cols), .T = T, .Tp = Tp,
                   .n_shrink = (int)(p->clip_max_shrink * p->clip_n_grid), .n_grid = p->clip_n_grid,
                   .lp = { .bits = p->bits, .group_size = p->group_size, .sym = !p->zero_point, .mse = 0 },
                   .max_val = max_val, .err = err, .err0 = err_noclip };
    j.n_groups = cols / j.gs;
    if (j.n_shrink < 1)
        j.n_shrink = 1;   /* max_shrink · n_grid < 1: only "no clipping" (AutoAWQ would leave max_val unset) */
    float *xT = qp_xcalloc((size_t)(cols * Tp), sizeof *xT);
    j.fail = qp_xcalloc((size_t)qp_lin_nchunks(rows, QP_AWQ_ROW_CHUNK), sizeof *j.fail);
    for (int64_t t = 0; t < T; t++) {
        const float *xt = x + t * step * cols;    /* [cols] */
        for (int64_t c = 0; c < cols; c++)
            xT[c * Tp + t] = xt[c];
    }
    j.xT = xT;
    int64_t bad = qp_lin_parallel(rows, QP_AWQ_ROW_CHUNK, n_threads, clip_chunk, &j);
    if (bad >= 0) {
        const awq_fail *f = &j.fail[bad];
        rc = qp_error_set(QP_EUSAGE, "%s: weight [%lld x %lld]: row %lld, group %lld: %s", who,
                          (long long)rows, (long long)cols, (long long)f->row, (long long)f->group, f->msg);
    }
    free(xT);
    free(j.fail);
    return rc;
}

int qp_awq_apply_clip(float *w, int64_t rows, int64_t cols, const float *max_val, int group_size)
{
    int rc;
    if (group_size < -1)
        return qp_error_set(QP_EUSAGE,
                            "awq apply clip: group_size %d is not supported (use -1 for one group per row, or a positive size)",
                            group_size);
    if ((rc = check_shape("awq apply clip", "weight", rows, cols, group_size)))
        return rc;
    const int64_t gs = group_cols(group_size, cols), ng = cols / gs;
    for (int64_t i = 0; i < rows * ng; i++)
        if (!(max_val[i] >= 0.0f))
            return qp_error_set(QP_EUSAGE,
                                "awq apply clip: max_val[%lld][%lld] is %g; clip values must be >= 0 (from qp_awq_search_clip)",
                                (long long)(i / ng), (long long)(i % ng), (double)max_val[i]);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t g = 0; g < ng; g++) {
            const float m = max_val[r * ng + g];
            float *wg = w + r * cols + g * gs;    /* [gs] */
            for (int64_t k = 0; k < gs; k++)
                wg[k] = wg[k] < -m ? -m : (wg[k] > m ? m : wg[k]);
        }
    return 0;
}
