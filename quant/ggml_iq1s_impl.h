/* Internal to quant/ggml_iq1s.c and quant/quant_fast_iq1s.c: IQ1_M's block
 * code with its split search as a parameter, so that the fast kernel reuses
 * the reference's block code. */
#ifndef QP_QUANT_GGML_IQ1S_IMPL_H
#define QP_QUANT_GGML_IQ1S_IMPL_H

#include "quant/ggml_impl.h"

/* The exact 3-level split of a 16-weight sub-block (xb, its error weights,
 * idx: the weights' indices in ascending order of xb): the split (i1, i2)
 * and sign pair k (0: +,+ 1: +,- 2: -,+ 3: -,-) of the best score, its
 * scale; *scale comes in as the sub-block's max, *bi1 < 0 on return when
 * no split is accepted. */
typedef void (*qp_iq1m_split_fn)(const float *xb, const float *weight, const int *idx, float *scale, int *bi1,
                                 int *bi2, int *bk);
void qp_iq1_m_split_ref(const float *xb, const float *weight, const int *idx, float *scale, int *bi1, int *bi2,
                        int *bk);
/* quantize_row_iq1_m_impl with this split search */
void qp_iq1_m_row_search(const float *x, void *y, int64_t n, const float *qw, qp_iq1m_split_fn split);

#endif
