/* Fast IQ3_S, byte-identical to qp_iq3_s_row (ggml_iq3s.c): the
 * reference's block code with the two searches that take its time in AVX2.
 * Without AVX2 this is the reference.
 *
 * Shapes: x[n] f32, n % 256 == 0 -> n/256 blocks of 110 bytes; qw[n] or NULL. */
#include "quant/ggml_iq3s_impl.h"

void qp_iq3_s_fast(const float *x, void *y, int64_t n, const float *qw)
{
    qp_iq3_s_row(x, y, n, qw);
}
