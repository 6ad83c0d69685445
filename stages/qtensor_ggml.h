/* A dense tensor to a llama.cpp block type in one pass over its rows, with
 * the error the quantize stage reports. */
#ifndef QP_STAGES_QTENSOR_GGML_H
#define QP_STAGES_QTENSOR_GGML_H

#include <stdint.h>

#include "common/ggml_types.h"
#include "common/tensor.h"

/* src: rows x cols elements of dtype dt (F32, F16, BF16).  Writes the
 * blocks of type t (rows x qp_qtype_row_size(t, cols) bytes) into dst and
 * the squared error sum(w - dequant(q))^2 and squared norm sum(w^2) into
 * *err2 and *ref2.
 *
 * Rows go in chunks sized to stay in cache (widened to f32, checked finite,
 * quantized, dequantized back and compared while still there), so the
 * tensor is never held in f32.  The bytes are qp_quantize's (every row
 * depends on itself alone).  The sums are double, four lanes per row
 * (element j into lane j % 4), lanes then rows then chunks added in order:
 * a function of the data only, whatever n_threads.
 *
 * A non-finite weight fails with QP_EFORMAT naming `what`, its row and
 * column (the first in row order); dst is then unspecified. */
int qp_qtensor_ggml_encode(qp_ggml_type t, const void *src, qp_dtype dt, int64_t rows, int64_t cols,
                           const float *imatrix, int n_threads, void *dst, double *err2, double *ref2,
                           const char *what);

#endif
