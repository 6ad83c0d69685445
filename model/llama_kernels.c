#include "model/llama_kernels.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* The Makefile builds at -O2, where GCC 12 vectorises only trivially cheap
 * loops; the exp-heavy loops below need the full vectoriser (4x faster on
 * the house model's softmax and SwiGLU). */
#if defined(__GNUC__) && !defined(__clang__)
#define VECTORIZE __attribute__((optimize("tree-vectorize")))
#else
#define VECTORIZE
#endif

/* Lanes of the partial sums/maxima: a fixed association order, so vector
 * and scalar builds give the same bits. */
#define LANES 16

/* e^x in f32 within 1.5 ulp (max rel. error 8e-8 on [-87, 88]), written
 * with plain arithmetic so loops over it vectorise (libm's expf does not)
 * and give the same bits in every lane.  Inputs below -87 give e^-87
 * (≈ 1.6e-38, harmless next to the 1 in softmax / SwiGLU), above 88 give
 * e^88; NaN stays NaN.  Cephes' polynomial; ln 2 split for exact k·ln2. */
static inline float exp_f32(float x)
{
    float c = x > -87.0f ? x : -87.0f;
    c = c < 88.0f ? c : 88.0f;
    /* k = round-to-even(c / ln 2) by the 1.5·2^23 trick */
    float k = (c * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = c - k * 0.693145751953125f;
    r = r - k * 1.428606765330187045e-06f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    uint32_t bits = (uint32_t)((int32_t)k + 127) << 23;   /* 2^k, k in [-126, 127] */
    float scale;
    memcpy(&scale, &bits, sizeof(scale));
    float e = p * scale;
    return x != x ? x : e;
}

float qp_kern_exp(float x) { return exp_f32(x); }

VECTORIZE void qp_kern_rmsnorm(float *y, const float *x, const float *w, size_t d, float eps)
{
    /* Sum of squares in double over LANES partial sums: PyTorch reduces in
     * f32 with a tree; this is at least as accurate, vectorises, and its
     * order is fixed. */
    double lane[LANES];
    for (int l = 0; l < LANES; l++)
        lane[l] = 0.0;
    size_t body = d / LANES * LANES;
    for (size_t i = 0; i < body; i += LANES)
        for (int l = 0; l < LANES; l++)
            lane[l] += (double)x[i + (size_t)l] * (double)x[i + (size_t)l];
    for (size_t i = body; i < d; i++)
        lane[i - body] += (double)x[i] * (double)x[i];
    double ss = 0.0;
    for (int l = 0; l < LANES; l++)
        ss += lane[l];
    float var = (float)(ss / (double)d);
    float r = 1.0f / sqrtf(var + eps);
    for (size_t i = 0; i < d; i++)
        y[i] = w[i] * (x[i] * r);
}

/* The f32 constants of Llama 3 scaling, converted where PyTorch converts
 * them (see the header). */
typedef struct {
    float two_pi, factor, old_len, low, high, low_wavelen, high_wavelen, band;
} llama3_consts;

static llama3_consts llama3_constants(const qp_rope_scaling *s)
{
    llama3_consts c;
    c.two_pi = (float)(2.0 * 3.14159265358979323846);
    c.factor = (float)s->factor;
    c.old_len = (float)s->original_max_pos;
    c.low = (float)s->low_freq_factor;
    c.high = (float)s->high_freq_factor;
    c.low_wavelen = (float)((double)s->original_max_pos / s->low_freq_factor);
    c.high_wavelen = (float)((double)s->original_max_pos / s->high_freq_factor);
    c.band = (float)(s->high_freq_factor - s->low_freq_factor);
    return c;
}

/* One llama3-scaled frequency from the default one (see the header for
 * which PyTorch operation each line is). */
static float rope_llama3(float inv, const llama3_consts *c)
{
    float wavelen = (1.0f / inv) * c->two_pi;
    float scaled = wavelen > c->low_wavelen ? inv / c->factor : inv;
    if (wavelen < c->high_wavelen || wavelen > c->low_wavelen)
        return scaled;
    float smooth = ((1.0f / wavelen) * c->old_len - c->low) / c->band;
    return (1.0f - smooth) * scaled / c->factor + smooth * scaled;
}

static float rope_default(int i, int head_dim, float theta)
{
    float e = (float)(2 * i) / (float)head_dim;
    return 1.0f / (float)pow((double)theta, (double)e);
}

void qp_kern_rope_inv_freq(float *inv, int head_dim, float theta, const qp_rope_scaling *s)
{
    int llama3 = s && s->kind == QP_ROPE_LLAMA3;
    llama3_consts c;
    if (llama3)
        c = llama3_constants(s);
    for (int i = 0; i < head_dim / 2; i++) {
        inv[i] = rope_default(i, head_dim, theta);
        if (llama3)
            inv[i] = rope_llama3(inv[i], &c);
    }
}

void qp_kern_rope_tables(float *cos_t, float *sin_t, size_t n_pos, int head_dim, const float *inv)
{
    int h = head_dim / 2;
    for (int i = 0; i < h; i++) {
        for (size_t p = 0; p < n_pos; p++) {
            float ang = (float)p * inv[i];
            cos_t[p * (size_t)h + (size_t)i] = (float)cos((double)ang);
            sin_t[p * (size_t)h + (size_t)i] = (float)sin((double)ang);
        }
    }
}

void qp_kern_rope_half(float *x, int n_heads, int head_dim, size_t pos,
                       const float *cos_t, const float *sin_t)
{
    int h = head_dim / 2;
    const float *c = cos_t + pos * (size_t)h;
    const float *s = sin_t + pos * (size_t)h;
    for (int hd = 0; hd < n_heads; hd++) {
        float *v = x + (size_t)hd * (size_t)head_dim;
        for (int i = 0; i < h; i++) {
            float a = v[i], b = v[i + h];
            v[i] = a * c[i] - b * s[i];
            v[i + h] = b * c[i] + a * s[i];
        }
    }
}

VECTORIZE void qp_kern_swiglu(float *restrict g, const float *restrict u, size_t n)
{
    for (size_t i = 0; i < n; i++)
        g[i] = g[i] / (1.0f + exp_f32(-g[i])) * u[i];
}

VECTORIZE void qp_kern_softmax_causal(float *restrict s, size_t valid, size_t len)
{
    float lmax[LANES], lsum[LANES];
    for (int l = 0; l < LANES; l++)
        lmax[l] = s[0];
    size_t body = valid / LANES * LANES;
    for (size_t j = 0; j < body; j += LANES)
        for (int l = 0; l < LANES; l++)
            lmax[l] = s[j + (size_t)l] > lmax[l] ? s[j + (size_t)l] : lmax[l];
    float mx = lmax[0];
    for (int l = 1; l < LANES; l++)
        mx = lmax[l] > mx ? lmax[l] : mx;
    for (size_t j = body; j < valid; j++)
        mx = s[j] > mx ? s[j] : mx;
    for (int l = 0; l < LANES; l++)
        lsum[l] = 0.0f;
    for (size_t j = 0; j < body; j += LANES)
        for (int l = 0; l < LANES; l++) {
            float e = exp_f32(s[j + (size_t)l] - mx);
            s[j + (size_t)l] = e;
            lsum[l] += e;
        }
    for (size_t j = body; j < valid; j++) {
        s[j] = exp_f32(s[j] - mx);
        lsum[j - body] += s[j];
    }
    float sum = 0.0f;
    for (int l = 0; l < LANES; l++)
        sum += lsum[l];
    float inv = 1.0f / sum;
    for (size_t j = 0; j < valid; j++)
        s[j] *= inv;
    if (len > valid)
        memset(s + valid, 0, (len - valid) * sizeof(float));
}

double qp_kern_logsumexp(const float *row, size_t n)
{
    float mx = row[0];
    for (size_t j = 1; j < n; j++)
        mx = row[j] > mx ? row[j] : mx;
    double sum = 0.0;
    for (size_t j = 0; j < n; j++)
        sum += exp((double)row[j] - (double)mx);
    return log(sum) + (double)mx;
}

double qp_kern_row_nll(const float *row, size_t vocab, int32_t target)
{
    return qp_kern_logsumexp(row, vocab) - (double)row[target];
}

void qp_kern_rope_permute(float *dst, const float *src, int n_head, int head_dim,
                          size_t cols, int to_interleaved)
{
    int h = head_dim / 2;
    for (int hd = 0; hd < n_head; hd++) {
        size_t base = (size_t)hd * (size_t)head_dim;
        for (int s = 0; s < 2; s++) {
            for (int j = 0; j < h; j++) {
                size_t hf = base + (size_t)s * (size_t)h + (size_t)j;  /* [2, h] index */
                size_t gg = base + (size_t)j * 2 + (size_t)s;          /* [h, 2] index */
                size_t from = to_interleaved ? hf : gg;
                size_t to = to_interleaved ? gg : hf;
                memcpy(dst + to * cols, src + from * cols, cols * sizeof(float));
            }
        }
    }
}
