/* Fast IQ1_S and IQ1_M: byte-identical to qp_iq1_s_row / qp_iq1_m_row
 * (ggml_iq1s.c).  No kernel of their own yet: the reference, which
 * qp_quantize threads over rows. */
#include "quant/ggml_impl.h"

void qp_iq1_s_fast(const float *x, void *y, int64_t n, const float *qw)
{
    qp_iq1_s_row(x, y, n, qw);
}

void qp_iq1_m_fast(const float *x, void *y, int64_t n, const float *qw)
{
    qp_iq1_m_row(x, y, n, qw);
}
