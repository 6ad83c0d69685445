/* Fast IQ2_S entry: the reference (ggml_iq2s.c), threaded by qp_quantize;
 * no kernel of its own yet. */
#include "quant/ggml_iq2s_impl.h"

void qp_iq2_s_fast(const float *x, void *y, int64_t n, const float *qw)
{
    qp_iq2_s_row(x, y, n, qw);
}
