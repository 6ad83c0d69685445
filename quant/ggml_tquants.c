/* TQ1_0 and TQ2_0: ternary weights {-1, 0, 1}·d for BitNet b1.58 / TriLM
 * style models, d = the super-block's largest magnitude (fp16).  These are
 * the bytes of quantize_row_tq1_0_ref / quantize_row_tq2_0_ref (llama.cpp
 * c392e50), which is also what llama-quantize writes: quantize_tq1_0 and
 * quantize_tq2_0 ignore the imatrix.
 *
 * A weight's trit is lroundf(x/d) + 1 ∈ {0, 1, 2} (x·(1/d), rounded half
 * away from zero).
 * TQ1_0 (1.6875 bpw): the first 160 trits go five per byte into qs[0..32)
 * (byte m holds trits m, m+32, …, m+128, first one most significant), the
 * next 80 into qs[32..48) (m, m+16, …, m+64), the last 16 four per byte
 * into qh[4] (j, j+4, j+8, j+12, then ×3 so the first is again the most
 * significant of five); a base-3 number q ≤ 242 is stored as
 * ceil(q·256/243), so that trit k comes back as ((uint8)(q·3^k)·3) >> 8.
 * TQ2_0 (2.0625 bpw): 2 bits per trit, byte m of each 32-byte group holds
 * trits m, m+32, m+64, m+96 from the low bits up.
 *
 * Shapes: x[n] f32, n % 256 == 0  ->  n/256 blocks of 54 (TQ1_0) or 66
 * (TQ2_0) bytes. */
#include "quant/ggml_impl.h"

#include <math.h>

/* ggml's "int xi = lroundf(x*id) + 1": the long result is narrowed as
 * ggml's int does (only the degenerate 1/d = inf case leaves {0,1,2}) */
static inline int trit(float x, float id)
{
    return (int)(lroundf(x * id) + 1);
}

static float block_amax(const float *x)
{
    float amax = 0.0f;
    for (int j = 0; j < QP_QK_K; j++)
        amax = QP_MAX(amax, fabsf(x[j]));
    return amax;
}

void qp_tq1_0_ref(const float *x, void *vy, int64_t n)
{
    qp_block_tq1_0 *y = vy;
    const int64_t nb = n / QP_QK_K;
    for (int64_t i = 0; i < nb; i++) {
        const float d = block_amax(x);
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = QP_FP16(d);
        /* qs[0..32): five trits along 32 bytes; qs[32..48): along 16 */
        for (int part = 0; part < 2; part++) {
            const int stride = part == 0 ? 32 : 16, base = part == 0 ? 0 : 32;
            for (int m = 0; m < stride; m++) {
                uint8_t q = 0;
                for (int k = 0; k < 5; k++) {
                    q = (uint8_t)(q * 3);
                    q = (uint8_t)(q + trit(x[m + k * stride], id));
                }
                y[i].qs[base + m] = (uint8_t)(((uint16_t)q * 256 + (243 - 1)) / 243);   /* ceil(q·256/243) */
            }
            x += 5 * stride;
        }
        /* qh: four trits per byte, then one more ×3 */
        for (int j = 0; j < 4; j++) {
            uint8_t q = 0;
            for (int m = 0; m < 4; m++) {
                q = (uint8_t)(q * 3);
                q = (uint8_t)(q + trit(x[j + m * 4], id));
            }
            q = (uint8_t)(q * 3);
            y[i].qh[j] = (uint8_t)(((uint16_t)q * 256 + (243 - 1)) / 243);
        }
        x += 16;
    }
}

void qp_tq2_0_ref(const float *x, void *vy, int64_t n)
{
    qp_block_tq2_0 *y = vy;
    const int64_t nb = n / QP_QK_K;
    for (int64_t i = 0; i < nb; i++) {
        const float d = block_amax(x);
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = QP_FP16(d);
        for (int j = 0; j < 64; j += 32) {
            for (int m = 0; m < 32; m++) {
                uint8_t q = 0;
                for (int k = 0; k < 4; k++)
                    q = (uint8_t)(q + ((trit(x[m + k * 32], id) & 3) << (2 * k)));
                y[i].qs[j + m] = q;
            }
            x += 128;
        }
    }
}
