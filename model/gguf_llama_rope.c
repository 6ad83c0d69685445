/* rope_freqs.weight: the per-dimension RoPE divisors convert_hf_to_gguf.py
 * (c392e50, LlamaModel.generate_extra_tensors) stores for a config whose
 * rope_scaling has rope_type "llama3".  llama.cpp divides frequency i by
 * out[i]; the values must be the bits convert writes, so each step below is
 * the PyTorch / Python operation convert performs, rounded where it rounds.
 *
 * convert's script, in words:
 *   freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=float32) / dim))
 *   for freq in freqs:                        (freq: a 0-d float32 tensor)
 *       wavelen = 2 * math.pi / freq
 *       wavelen < old_ctx / high  -> 1
 *       wavelen > old_ctx / low   -> factor
 *       else smooth = (old_ctx / wavelen - low) / (high - low)
 *            -> 1 / ((1 - smooth) / factor + smooth)
 *   torch.tensor(list, dtype=float32)
 * with base = rope_theta, factor / low / high from rope_scaling and old_ctx
 * = hparams.get("original_max_position_embeddings", 8192) at the top level.
 *
 * Precision, operation by operation (PyTorch's rules for a float32 tensor
 * meeting a Python number: the number does not promote, it is converted to
 * float32 and the operation runs in float32):
 *   - arange / dim: float32 (2i) / float32(dim), one rounding.
 *   - base ** t: Tensor.__rpow__ = torch.pow(float32(base), t), float32 pow.
 *     PyTorch's CPU kernel calls powf (glibc's: at most 0.82 ulp, i.e.
 *     correctly rounded unless the exact power lies close to a half-way
 *     point) on the elements it does not vectorise and SLEEF's powf_u10
 *     (< 1 ulp) on 16- or 32-element chunks (AVX2 / AVX-512).  Which of
 *     the two convert ran depends on dim and on the converting machine, and
 *     neither can be run here; the correctly rounded value, float(pow(double,
 *     double)), is what both give except in rare near-half-way cases (the
 *     same choice as qp_kern_rope_inv_freq).  Measured against libsleef
 *     3.5.1 (powf8_u10avx2 / powf16_u10avx512f, in PyTorch's AVX2 chunking,
 *     the tail by glibc 2.36 powf): every factor of θ 500000 / 10000 / 1e6 ×
 *     head_dim 16 / 32 / 64 / 80 / 96 / 128 / 256 × factor 8 / 16 / 32 ×
 *     original context 4096 / 8192 agrees (8064 values) except three, all of
 *     θ 500000 / head_dim 96 / context 4096 (SLEEF's power one ulp off the
 *     correctly rounded one in the band); every Llama 3.x shape agrees.
 *   - 1.0 / t and 2 * math.pi / freq and old_ctx / wavelen: a Python number
 *     divided by a tensor is Tensor.__rtruediv__ = t.reciprocal() * number:
 *     float32 1/x, then a float32 multiply by float32(number).  So wavelen is
 *     (1/freq) * 6.2831855f, NOT 6.283185307179586 / freq.
 *   - wavelen < x, wavelen > x: compared in float32 with float32(x), where x
 *     = old_ctx / high (a Python float: double division).
 *   - t - low, t / (high - low), t / factor: float32 with the number
 *     converted to float32 (high - low is a double subtraction first);
 *     PyTorch's float32 division by a scalar is a true division.
 *   - 1 - smooth: Tensor.__rsub__, float32(1) - smooth.
 *   - the list: Python 1 -> 1.0f, factor (a Python float or int) -> float32
 *     (round to nearest), and the 0-d float32 tensors as they are. */
#include "model/gguf_llama.h"

#include "common/error.h"

#include <math.h>

int qp_gguf_llama_rope_factors(float *out, int head_dim, float theta, const qp_rope_scaling *s, double old_ctx)
{
    if (head_dim <= 0 || head_dim % 2)
        return qp_error_set(QP_EUSAGE, "rope_freqs: head_dim %d is not a positive even number", head_dim);
    if (!s || s->kind != QP_ROPE_LLAMA3)
        return qp_error_set(QP_EUSAGE, "rope_freqs: only llama3 rope scaling has rope_freqs factors");
    const double low_wavelen_d = old_ctx / s->low_freq_factor;    /* Python floats */
    const double high_wavelen_d = old_ctx / s->high_freq_factor;
    if (low_wavelen_d == high_wavelen_d)                          /* convert asserts */
        return qp_error_set(QP_EUSAGE, "rope_freqs: low_freq_factor %g and high_freq_factor %g give the same "
                            "wavelength", s->low_freq_factor, s->high_freq_factor);
    const float two_pi = (float)(2.0 * 3.14159265358979323846);   /* float32(2 * math.pi) */
    const float low_wavelen = (float)low_wavelen_d, high_wavelen = (float)high_wavelen_d;
    const float old = (float)old_ctx, low = (float)s->low_freq_factor;
    const float band = (float)(s->high_freq_factor - s->low_freq_factor);
    const float factor = (float)s->factor;
    for (int i = 0; i < head_dim / 2; i++) {
        float e = (float)(2 * i) / (float)head_dim;
        float p = (float)pow((double)theta, (double)e);
        float freq = 1.0f / p;
        float wavelen = (1.0f / freq) * two_pi;
        if (wavelen < high_wavelen) {
            out[i] = 1.0f;
        } else if (wavelen > low_wavelen) {
            out[i] = factor;
        } else {
            float smooth = ((1.0f / wavelen) * old - low) / band;
            float denom = (1.0f - smooth) / factor + smooth;
            out[i] = 1.0f / denom;
        }
    }
    return 0;
}
