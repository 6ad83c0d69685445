/* Activation statistics of a model over calibration samples, per decoder
 * layer and per linear-product input site (see qp_llama_site):
 *   H      = 2/n Σ x xᵀ      [dim, dim]  (GPTQ's Hessian; accumulated in double)
 *   absmean = 1/n Σ |x|      [dim]       (AWQ's activation scale)
 *   sqsum   = Σ x²           [dim]       (llama.cpp's importance matrix)
 * n = tokens seen.  Shared by the calibrate stage and sequential GPTQ/AWQ,
 * which recompute them layer by layer on already-quantized inputs. */
#ifndef QP_STAGES_CALIB_STATS_H
#define QP_STAGES_CALIB_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "model/llama.h"

typedef struct {
    size_t dim;
    uint64_t n;          /* tokens */
    uint64_t calls;      /* windows (llama-imatrix's ncall) */
    double *xxt;         /* [dim, dim] Σ x xᵀ (upper triangle filled, mirrored on finish) */
    double *abs_sum;     /* [dim] */
    double *sq_sum;      /* [dim] */
    float *scratch;      /* [dim, dim] per-window f32 product */
} qp_site_stats;

typedef struct {
    int n_layers;
    int want_hessian;
    qp_site_stats *sites;   /* [n_layers * 4], index layer*4 + site */
} qp_calib_stats;

/* The width of a site's inputs: the columns of the weights it feeds
 * (q/k/v and gate/up: D; o: n_heads·head_dim; down: F). */
size_t qp_site_dim(const qp_llama_hparams *hp, qp_llama_site site);
/* One site's accumulators; hessian 0 skips Σ x xᵀ. */
void qp_site_stats_init(qp_site_stats *st, size_t dim, int hessian);
void qp_site_stats_free(qp_site_stats *st);
/* Adds one window x [n, dim] (in row order: deterministic). */
void qp_site_stats_add(qp_site_stats *st, const float *x, size_t n);

void qp_calib_stats_init(qp_calib_stats *s, const qp_llama_hparams *hp, int want_hessian);
void qp_calib_stats_free(qp_calib_stats *s);
/* The observer to pass to qp_llama_forward_observed / qp_llama_layer (ud =
 * the qp_calib_stats). */
void qp_calib_stats_observe(void *ud, int layer, qp_llama_site site, const float *x, size_t n, size_t dim);
/* One layer's inputs into st[4] (by site), for the sites whose dim > 0:
 * the observer a method passes when it collects a single layer (GPTQ's
 * sequential Hessians, QAT's GPTQ init); ud = the qp_site_filter. */
typedef struct {
    int layer;
    qp_site_stats *st;   /* [4] */
} qp_site_filter;
void qp_site_filter_observe(void *ud, int layer, qp_llama_site site, const float *x, size_t n, size_t dim);
/* H = 2/n Σ x xᵀ as a full symmetric matrix of doubles (malloc'ed); NULL when
 * the accumulators were made without the Hessian. */
double *qp_site_hessian(const qp_site_stats *st);
/* The same H rounded to f32 into h [dim, dim] (the values of (float) of
 * qp_site_hessian's), without the double copy; -1 without a Hessian. */
int qp_site_hessian_f32(const qp_site_stats *st, float *h);
/* Adds (on) or frees (off) the Σ x xᵀ accumulator of one site, so a caller
 * going layer by layer holds one layer's Hessians at a time. */
void qp_site_stats_hessian(qp_site_stats *st, int on);

/* "attn_in", "attn_out", "mlp_in", "mlp_down" */
const char *qp_site_name(qp_llama_site site);
/* The linear weights fed by a site: up to 3 HF suffixes ("self_attn.q_proj", …). */
size_t qp_site_weights(qp_llama_site site, const char *out[3]);
/* llama.cpp GGUF names of those weights ("attn_q", …). */
size_t qp_site_gguf_weights(qp_llama_site site, const char *out[3]);

#endif
