/* The fake quantizer QAT trains through (train/qat.h): GPTQ's integer grid
 * (quant/linear.h) with learnable rounding offsets, scales and zero points,
 * AutoRound-style (arXiv 2309.05516) with OmniQuant/EfficientQAT's
 * learnable step size and zero point:
 *
 *   per weight  w [rows, cols]   the unquantized weight (fixed)
 *               v                rounding offset in [−0.5, 0.5] (learned)
 *               off              integer offset (fixed; 0, or what makes
 *                                v = 0 reproduce a GPTQ solution's codes)
 *   per group   s = fp16(s0·γ)   scale; s0 the initial fit, γ learned
 *               z = sym ? 2^(bits−1) : clamp(round(zf), 0, maxq), zf learned
 *
 *   u = w/s + off + v,  qi = round(u) + z,  c = clamp(qi, 0, maxq)
 *   Ŵ = s·(c − z)                                   (quant/linear.h's value)
 *
 * Gradients: the straight-through estimator for both roundings (round(u)
 * and round(zf) pass gradients as the identity) and for the fp16 rounding
 * of s; everything else exactly: with in = [0 <= qi <= maxq],
 *   ∂Ŵ/∂v  = s·in
 *   ∂Ŵ/∂s  = (c − z) − in·w/s,   ∂s/∂γ = s0
 *   ∂Ŵ/∂zf = s·(in − 1)          (asym only)
 * so the gradients are the exact gradients of the surrogate with every
 * rounding removed (`surrogate`, what the finite-difference check in
 * tests/train/test_fakequant.c differentiates).
 *
 * Groups are runs of group_size consecutive columns (cols % group_size == 0;
 * one group per row: group_size = cols). */
#ifndef QP_TRAIN_FAKEQUANT_H
#define QP_TRAIN_FAKEQUANT_H

#include <stddef.h>
#include <stdint.h>

#define QP_FQ_DECLARE(RT, SFX)                                                                                  \
    typedef struct {                                                                                           \
        size_t rows, cols, group_size; /* group_size divides cols */                                           \
        int maxq, sym;                                                                                         \
        int surrogate;                 /* 1: no rounding anywhere (gradient checks) */                         \
        const RT *w;                   /* [rows, cols] */                                                      \
        const int16_t *off;            /* [rows, cols] or NULL (all 0) */                                      \
        const RT *s0;                  /* [rows, n_groups] */                                                  \
        RT *v;                         /* [rows, cols] */                                                      \
        RT *gamma;                     /* [rows, n_groups] */                                                  \
        RT *zf;                        /* [rows, n_groups] (unused when sym) */                                \
    } qp_fq_##SFX;                                                                                             \
    /* The scale and zero point of group (r, g) as forward uses them. */                                       \
    void qp_fq_##SFX##_group(const qp_fq_##SFX *f, size_t r, size_t g, RT *s, RT *z);                          \
    /* Ŵ [rows, cols] */                                                                                       \
    void qp_fq_##SFX##_forward(const qp_fq_##SFX *f, RT *what);                                                \
    /* From dL/dŴ: dL/dv [rows, cols], dL/dγ and dL/dzf [rows, n_groups]                                     \
     * (written; dzf zero when sym).  Any output may be NULL. */                                               \
    void qp_fq_##SFX##_backward(const qp_fq_##SFX *f, const RT *dwhat, RT *dv, RT *dgamma, RT *dzf);

QP_FQ_DECLARE(float, f32)
QP_FQ_DECLARE(double, f64)

#endif
