/* train/fakequant.h, written once for a real type (REAL, SFX: see
 * train/fakequant_f32.c).  Each group is processed in column order and
 * depends on nothing else, so results do not depend on who calls it how. */
#include <math.h>

#include "common/tensor.h"
#include "quant/linear.h"
#include "train/fakequant.h"

#define FQCAT2_(a, b) a##_##b
#define FQCAT_(a, b) FQCAT2_(a, b)
#define FQ FQCAT_(qp_fq, SFX)
#define FQPUB(name) FQCAT_(FQ, name)

void FQPUB(group)(const FQ *f, size_t r, size_t g, REAL *s_out, REAL *z_out)
{
    const size_t ng = f->cols / f->group_size;
    REAL s = f->s0[r * ng + g] * f->gamma[r * ng + g];
    REAL z;
    if (!f->surrogate)   /* the scale an exported checkpoint stores */
        s = (REAL)qp_f16_to_f32(qp_linear_scale_f16((float)s));
    if (f->sym)
        z = (REAL)((f->maxq + 1) / 2);
    else if (f->surrogate)
        z = f->zf[r * ng + g];
    else {
        z = (REAL)rint((double)f->zf[r * ng + g]);
        z = z < 0 ? 0 : z > (REAL)f->maxq ? (REAL)f->maxq : z;
    }
    *s_out = s;
    *z_out = z;
}

/* qi and c of one weight (c clamped to [0, maxq]) */
static inline void fq_code(const FQ *f, size_t i, REAL s, REAL z, REAL *qi, REAL *c)
{
    REAL u = f->w[i] / s + (f->off ? (REAL)f->off[i] : 0) + f->v[i];
    REAL q = (f->surrogate ? u : (REAL)rint((double)u)) + z;
    *qi = q;
    *c = q < 0 ? 0 : q > (REAL)f->maxq ? (REAL)f->maxq : q;
}

void FQPUB(forward)(const FQ *f, REAL *what)
{
    const size_t ng = f->cols / f->group_size;
    for (size_t r = 0; r < f->rows; r++)
        for (size_t g = 0; g < ng; g++) {
            REAL s, z;
            FQPUB(group)(f, r, g, &s, &z);
            size_t i0 = r * f->cols + g * f->group_size;
            for (size_t i = i0; i < i0 + f->group_size; i++) {
                REAL qi, c;
                fq_code(f, i, s, z, &qi, &c);
                what[i] = s * (c - z);
            }
        }
}

void FQPUB(backward)(const FQ *f, const REAL *dwhat, REAL *dv, REAL *dgamma, REAL *dzf)
{
    const size_t ng = f->cols / f->group_size;
    for (size_t r = 0; r < f->rows; r++)
        for (size_t g = 0; g < ng; g++) {
            REAL s, z;
            FQPUB(group)(f, r, g, &s, &z);
            size_t i0 = r * f->cols + g * f->group_size;
            double ds = 0, dz = 0;
            for (size_t i = i0; i < i0 + f->group_size; i++) {
                REAL qi, c;
                fq_code(f, i, s, z, &qi, &c);
                const int in = qi >= 0 && qi <= (REAL)f->maxq;
                const REAL d = dwhat[i];
                if (dv)
                    dv[i] = in ? d * s : 0;
                ds += (double)(d * ((c - z) - (in ? f->w[i] / s : 0)));
                if (!in)
                    dz -= (double)(d * s);
            }
            if (dgamma)
                dgamma[r * ng + g] = (REAL)(ds * (double)f->s0[r * ng + g]);
            if (dzf)
                dzf[r * ng + g] = f->sym ? 0 : (REAL)dz;
        }
}
