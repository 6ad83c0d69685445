/* KL divergence against stored reference distributions (model/eval.h). */
#include "model/eval.h"
#include "common/alloc.h"
#include "common/error.h"
#include "model/llama_kernels.h"

#include <math.h>
#include <stdlib.h>

struct qp_kl_ref {
    size_t rows, vocab;
    float *p;        /* [rows, V] reference probabilities */
    double *negent;  /* [rows] Σ p log p */
};

int qp_kl_ref_new(qp_kl_ref **out, size_t rows, size_t vocab)
{
    *out = NULL;
    qp_kl_ref *r = qp_xcalloc(1, sizeof(*r));
    r->rows = rows;
    r->vocab = vocab;
    r->p = qp_xmalloc(rows * vocab * sizeof(float));
    r->negent = qp_xcalloc(rows, sizeof(double));
    *out = r;
    return 0;
}

void qp_kl_ref_free(qp_kl_ref *r)
{
    if (!r)
        return;
    free(r->p);
    free(r->negent);
    free(r);
}

int qp_kl_ref_set(qp_kl_ref *r, size_t row0, const float *logits, size_t n)
{
    if (row0 + n > r->rows)
        return qp_error_set(QP_ERROR, "internal: KL reference rows %zu..%zu out of %zu", row0, row0 + n, r->rows);
    size_t V = r->vocab;
    for (size_t t = 0; t < n; t++) {
        const float *z = logits + t * V;
        float *p = r->p + (row0 + t) * V;
        double lse = qp_kern_logsumexp(z, V), ne = 0;
        for (size_t v = 0; v < V; v++) {
            double lp = (double)z[v] - lse;
            p[v] = (float)exp(lp);
            ne += (double)p[v] * lp;
        }
        r->negent[row0 + t] = ne;
    }
    return 0;
}

double qp_kl_ref_sum(const qp_kl_ref *r, size_t row0, const float *logits, size_t n)
{
    size_t V = r->vocab;
    double sum = 0;
    for (size_t t = 0; t < n && row0 + t < r->rows; t++) {
        const float *z = logits + t * V;
        const float *p = r->p + (row0 + t) * V;
        double pz = 0;
        for (size_t v = 0; v < V; v++)
            pz += (double)p[v] * (double)z[v];
        double kl = r->negent[row0 + t] - pz + qp_kern_logsumexp(z, V);
        sum += kl > 0 ? kl : 0;   /* rounding of two near-identical distributions */
    }
    return sum;
}
