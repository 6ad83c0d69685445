#include "model/llama_kernels.h"

#include <math.h>
#include <string.h>

void qp_kern_rmsnorm(float *y, const float *x, const float *w, size_t d, float eps)
{
    /* Sum of squares in double: PyTorch reduces in f32 with a tree, a
     * double sum is at least as accurate and independent of vector width. */
    double ss = 0.0;
    for (size_t i = 0; i < d; i++)
        ss += (double)x[i] * (double)x[i];
    float var = (float)(ss / (double)d);
    float r = 1.0f / sqrtf(var + eps);
    for (size_t i = 0; i < d; i++)
        y[i] = w[i] * (x[i] * r);
}

void qp_kern_rope_tables(float *cos_t, float *sin_t, size_t n_pos, int head_dim, float theta)
{
    int h = head_dim / 2;
    for (int i = 0; i < h; i++) {
        float inv = 1.0f / powf(theta, (float)(2 * i) / (float)head_dim);
        for (size_t p = 0; p < n_pos; p++) {
            float ang = (float)p * inv;
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

void qp_kern_swiglu(float *g, const float *u, size_t n)
{
    for (size_t i = 0; i < n; i++)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void qp_kern_softmax_causal(float *s, size_t valid, size_t len)
{
    float mx = s[0];
    for (size_t j = 1; j < valid; j++)
        mx = s[j] > mx ? s[j] : mx;
    float sum = 0.0f;
    for (size_t j = 0; j < valid; j++) {
        s[j] = expf(s[j] - mx);
        sum += s[j];
    }
    float inv = 1.0f / sum;
    for (size_t j = 0; j < valid; j++)
        s[j] *= inv;
    if (len > valid)
        memset(s + valid, 0, (len - valid) * sizeof(float));
}

double qp_kern_row_nll(const float *row, size_t vocab, int32_t target)
{
    float mx = row[0];
    for (size_t j = 1; j < vocab; j++)
        mx = row[j] > mx ? row[j] : mx;
    double sum = 0.0;
    for (size_t j = 0; j < vocab; j++)
        sum += exp((double)row[j] - (double)mx);
    return log(sum) + (double)mx - (double)row[target];
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
