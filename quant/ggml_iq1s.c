/* IQ1_S (1.5625 bpw) and IQ1_M (1.75 bpw): each group of 8 weights is an
 * index (11 bits) into iq1s_grid, 2048 8-vectors of -1/0/1, shifted by
 * ±IQ1S_DELTA (0.125) per sub-block (IQ1_S: per 32) or per group pair
 * (IQ1_M: per 8, its two halves of 16 choosing independently), times an
 * odd 3-bit scale (2l+1) and a super-scale.  These are llama-quantize's
 * bytes (llama.cpp c392e50: quantize_iq1_s / quantize_iq1_m ->
 * quantize_row_iq1_s_impl / quantize_row_iq1_m_impl).  IQ1_S exists only
 * with an importance matrix (ggml asserts quant_weights); IQ1_M takes
 * weights x² without one (llama-quantize still asks for an imatrix for
 * every IQ1_M tensor but token_embd).
 *
 * Layouts (little-endian):
 *   IQ1_S, 50 B: d fp16; qs[32] low bytes of the indices; qh u16[8], per
 *     32 weights: the four high 3-bit parts (bits 3k..3k+2), the scale l
 *     in bits 12..14, the shift sign (1: -delta) in bit 15.
 *   IQ1_M, 56 B: qs[32]; qh[16], per 16 weights: index high bits of group
 *     0 in bits 0..2, shift sign bit 3, group 1 in bits 4..6 and 7;
 *     scales[8] as u16[4]: four 3-bit scales in bits 0..11, the fp16
 *     super-scale's nibble i in bits 12..15 of u16 i.
 *
 * The search: the exact 3-level split of each sub-block's sorted weights
 * (both shift signs; IQ1_M all four sign pairs), then each group's 8
 * levels snapped to the grid through iq2xs_init_impl's neighbour lists
 * (nwant 3: the grid points at the three smallest distances, ordered by
 * distance, then index), built here for the keys of levels 0..2.
 *
 * Shapes: x[n] f32, n % 256 == 0 -> n/256 blocks; qw[n] (IQ1_S: not NULL). */
#include "quant/ggml_iq1s_impl.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define NGRID 2048
#define KMAP_SIZE 43692          /* 16-bit keys up to 0xAAAA */
#define DELTA 0.125f             /* IQ1S_DELTA = IQ1M_DELTA */
#define GROUP_MAX_EPS_IQ1_S 1e-12f
#define GROUP_MAX_EPS_IQ1_M 1e-7f

static int8_t g_pos[NGRID][8];   /* levels as 2l+1 (1, 3, 5) */
static int16_t g_posc[8][NGRID]; /* the same, coordinate-major (the build's distances) */
static int *g_kmap;              /* key -> index, or -(1 + offset of its list) */
static uint16_t *g_nb;           /* lists: count, then indices */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static int key_in_range(int u)
{
    for (int k = 0; k < 8; ++k)
        if (((u >> 2 * k) & 3) == 3)
            return 0;
    return 1;
}

/* the grid points at the 3 smallest squared distances from key u, by
 * (distance, index) */
static int neighbours_of(int u, uint16_t *out)
{
    int8_t p[8];
    for (int k = 0; k < 8; ++k)
        p[k] = (int8_t)(2 * ((u >> 2 * k) & 3) + 1);
    int d2[NGRID];
    for (int j = 0; j < NGRID; ++j)
        d2[j] = 0;
    for (int k = 0; k < 8; ++k)   /* coordinate-major: vectorizes */
        for (int j = 0; j < NGRID; ++j) {
            const int e = g_posc[k][j] - p[k];
            d2[j] += e * e;
        }
    /* the three smallest distinct distances, then the points at them in
     * (distance, index) order */
    int m[3] = { INT32_MAX, INT32_MAX, INT32_MAX };
    for (int j = 0; j < NGRID; ++j) {
        const int v = d2[j];
        if (v < m[0]) {
            m[2] = m[1];
            m[1] = m[0];
            m[0] = v;
        } else if (v > m[0] && v < m[1]) {
            m[2] = m[1];
            m[1] = v;
        } else if (v > m[1] && v < m[2]) {
            m[2] = v;
        }
    }
    int n = 0;
    for (int w = 0; w < 3 && m[w] != INT32_MAX; ++w)
        for (int j = 0; j < NGRID; ++j)
            if (d2[j] == m[w])
                out[n++] = (uint16_t)j;
    return n;
}

static void build(void)
{
    g_kmap = malloc(KMAP_SIZE * sizeof *g_kmap);
    if (!g_kmap)
        abort();
    for (int i = 0; i < KMAP_SIZE; ++i)
        g_kmap[i] = -1;
    for (int j = 0; j < NGRID; ++j) {
        int u = 0;
        for (int k = 0; k < 8; ++k) {
            const int l = (int8_t)(uint8_t)(qp_iq1s_grid[j] >> 8 * k) + 1;
            g_pos[j][k] = (int8_t)(2 * l + 1);
            g_posc[k][j] = (int16_t)(2 * l + 1);
            u |= l << 2 * k;
        }
        g_kmap[u] = j;
    }
    /* one pass: each list appended as found (count, then indices) */
    size_t cap = 65536, counter = 0;
    g_nb = malloc(cap * sizeof *g_nb);
    if (!g_nb)
        abort();
    uint16_t tmp[NGRID];
    for (int u = 0; u < KMAP_SIZE; ++u) {
        if (g_kmap[u] >= 0 || !key_in_range(u))
            continue;
        const int n = neighbours_of(u, tmp);
        if (counter + 1 + (size_t)n > cap) {
            cap *= 2;
            g_nb = realloc(g_nb, cap * sizeof *g_nb);
            if (!g_nb)
                abort();
        }
        g_kmap[u] = -(int)(counter + 1);
        g_nb[counter] = (uint16_t)n;
        memcpy(g_nb + counter + 1, tmp, (size_t)n * sizeof *tmp);
        counter += 1 + (size_t)n;
    }
}

/* iq1_find_best_neighbour2: the listed point whose shifted levels xx[l]
 * at this scale are nearest to xval (weights w), first on ties */
static int best_neighbour(int u, const float *xval, const float *w, float scale, const float *xx)
{
    const uint16_t *nb = g_nb - g_kmap[u] - 1;
    float best = FLT_MAX;
    int grid_index = -1;
    for (int j = 1; j <= nb[0]; ++j) {
        const int8_t *pg = g_pos[nb[j]];
        float d2 = 0;
        for (int i = 0; i < 8; ++i) {
            const float q = xx[(pg[i] - 1) / 2];
            const float diff = scale * q - xval[i];
            d2 += w[i] * diff * diff;
        }
        if (d2 < best) {
            best = d2;
            grid_index = nb[j];
        }
    }
    return grid_index < 0 ? nb[1] : grid_index;   /* ggml asserts; only NaN gets here */
}

static int sort_helper(const void *a, const void *b)
{
    const float *l = a, *r = b;
    return *l < *r ? -1 : *l > *r ? 1 : 0;
}

/* ggml's (value, index) pairs sorted by value with the C library's qsort */
static void sort_pairs(const float *xb, int nw, float *pairs)
{
    for (int j = 0; j < nw; ++j) {
        int jj = j;
        pairs[2 * j] = xb[j];
        memcpy(&pairs[2 * j + 1], &jj, sizeof jj);
    }
    qsort(pairs, (size_t)nw, 2 * sizeof(float), sort_helper);
}

static int pair_index(const float *pairs, int j)
{
    int i;
    memcpy(&i, &pairs[2 * j + 1], sizeof i);
    return i;
}

/* levels of nw weights from the split (i1, i2) of the sorted order */
static void split_levels(const float *pairs, int nw, int i1, int i2, int8_t *L)
{
    for (int j = 0; j < nw; ++j)
        L[pair_index(pairs, j)] = (int8_t)(j < i1 ? 0 : j < i2 ? 1 : 2);
}

static int group_key(const int8_t *L)
{
    int u = 0;
    for (int j = 0; j < 8; ++j)
        u |= L[j] << 2 * j;
    return u;
}

/* ---- IQ1_S: quantize_row_iq1_s_impl ---- */

static void iq1_s_block(const float *xbl, uint8_t *out, const float *qwbl, int8_t *shifts)
{
    const float x_p[3] = { -1 + DELTA, DELTA, 1 + DELTA };
    const float x_m[3] = { -1 - DELTA, -DELTA, 1 - DELTA };
    float scales[8], weight[32], sumx[33], sumw[33], pairs[64];
    int8_t L[32];
    uint8_t qs[32];
    uint16_t qh[8];
    memset(qs, 0, sizeof qs);
    memset(qh, 0, sizeof qh);

    float max_scale = 0;
    float sumx2 = 0;
    for (int i = 0; i < QP_QK_K; ++i)
        sumx2 += xbl[i] * xbl[i];
    const float sigma2 = 2 * sumx2 / QP_QK_K;

    for (int ib = 0; ib < 8; ++ib) {
        const float *xb = xbl + 32 * ib;
        const float *qw = qwbl + 32 * ib;
        for (int i = 0; i < 32; ++i)
            weight[i] = qw[i] * sqrtf(sigma2 + xb[i] * xb[i]);
        float max = fabsf(xb[0]);
        for (int i = 1; i < 32; ++i)
            max = QP_MAX(max, fabsf(xb[i]));
        if (max < GROUP_MAX_EPS_IQ1_S) {
            scales[ib] = 0;
            continue;   /* shifts[ib] keeps its previous value, as in ggml */
        }
        sort_pairs(xb, 32, pairs);
        sumx[0] = sumw[0] = 0;
        for (int j = 0; j < 32; ++j) {
            const int i = pair_index(pairs, j);
            sumx[j + 1] = sumx[j] + weight[i] * xb[i];
            sumw[j + 1] = sumw[j] + weight[i];
        }
        float best_score = -FLT_MIN, scale = max;
        int besti1 = -1, besti2 = -1, best_shift = 0;
        for (int i1 = 0; i1 <= 32; ++i1) {
            for (int i2 = i1; i2 <= 32; ++i2) {
                for (int s = 0; s < 2; ++s) {
                    const float *xs = s ? x_m : x_p;
                    const float sumqx = (sumx[i1] - sumx[0]) * xs[0] + (sumx[i2] - sumx[i1]) * xs[1] +
                                        (sumx[32] - sumx[i2]) * xs[2];
                    const float sumq2 = (sumw[i1] - sumw[0]) * xs[0] * xs[0] + (sumw[i2] - sumw[i1]) * xs[1] * xs[1] +
                                        (sumw[32] - sumw[i2]) * xs[2] * xs[2];
                    if (sumq2 > 0 && sumqx * sumqx > best_score * sumq2) {
                        scale = sumqx / sumq2;
                        best_score = scale * sumqx;
                        besti1 = i1;
                        besti2 = i2;
                        best_shift = s ? -1 : 1;
                    }
                }
            }
        }
        if (besti1 < 0) {   /* ggml asserts (all-zero or NaN weights) */
            besti1 = besti2 = 0;
            best_shift = 1;
        }
        split_levels(pairs, 32, besti1, besti2, L);
        if (scale < 0) {
            for (int j = 0; j < 32; ++j)
                L[j] = (int8_t)(2 - L[j]);
            scale = -scale;
            best_shift = -best_shift;
        }
        bool all_on_grid = true;
        const float *xx = best_shift == 1 ? x_p : x_m;
        int index[4];
        for (int k = 0; k < 4; ++k) {
            const int u = group_key(L + 8 * k);
            int grid_index = g_kmap[u];
            if (grid_index < 0) {
                all_on_grid = false;
                grid_index = best_neighbour(u, xb + 8 * k, weight + 8 * k, scale, xx);
            }
            index[k] = grid_index;
        }
        if (!all_on_grid) {
            float sumqx = 0, sumq2 = 0;
            for (int k = 0; k < 4; ++k) {
                const int8_t *pg = g_pos[index[k]];
                for (int j = 0; j < 8; ++j) {
                    const float w = weight[8 * k + j];
                    const float q = xx[(pg[j] - 1) / 2];
                    sumqx += w * q * xb[8 * k + j];
                    sumq2 += w * q * q;
                }
            }
            if (sumqx > 0 && sumq2 > 0)
                scale = sumqx / sumq2;
        }
        uint16_t h = 0;
        for (int k = 0; k < 4; ++k) {
            qs[4 * ib + k] = (uint8_t)(index[k] & 255);
            h = (uint16_t)(h | (index[k] >> 8) << 3 * k);
        }
        qh[ib] = h;
        scales[ib] = scale;
        shifts[ib] = (int8_t)best_shift;
        max_scale = QP_MAX(max_scale, scale);
    }

    uint16_t dh = 0;
    if (max_scale) {
        const float d = max_scale / 15;
        dh = QP_FP16(d * 1.125f);
        const float id = 1 / d;
        for (int ib = 0; ib < 8; ++ib) {
            int l = qp_nearest_int(0.5f * (id * scales[ib] - 1));
            l = QP_MAX(0, QP_MIN(7, l));
            if (shifts[ib] == -1)
                l |= 8;
            qh[ib] = (uint16_t)(qh[ib] | l << 12);
        }
    }
    memcpy(out, &dh, 2);
    memcpy(out + 2, qs, 32);
    for (int ib = 0; ib < 8; ++ib) {
        out[34 + 2 * ib] = (uint8_t)qh[ib];
        out[35 + 2 * ib] = (uint8_t)(qh[ib] >> 8);
    }
}

/* ggml keeps shifts[] across the blocks of its call (uninitialised at its
 * start); here across one row's blocks, starting at zero. */
void qp_iq1_s_row(const float *x, void *vy, int64_t n, const float *qw)
{
    pthread_once(&g_once, build);
    uint8_t *y = vy;
    int8_t shifts[8];
    memset(shifts, 0, sizeof shifts);
    for (int64_t ib = 0; ib < n / QP_QK_K; ++ib)
        iq1_s_block(x + QP_QK_K * ib, y + 50 * ib, qw + QP_QK_K * ib, shifts);
}

/* ---- IQ1_M: quantize_row_iq1_m_impl ---- */

static void iq1_m_weights(const float *xb, const float *qw, float sigma2, float *weight)
{
    if (qw)
        for (int i = 0; i < 16; ++i)
            weight[i] = qw[i] * sqrtf(sigma2 + xb[i] * xb[i]);
    else
        for (int i = 0; i < 16; ++i)
            weight[i] = xb[i] * xb[i];
}

/* group k's shifted levels for sign pair code s (0: +,+ 1: +,- 2: -,+ 3: -,-) */
static const float *iq1_m_xx(int s, int k, const float *x_p, const float *x_m)
{
    if (k == 0)
        return s < 2 ? x_p : x_m;
    return s % 2 == 0 ? x_p : x_m;
}

/* IQ1_M's exact split search (quantize_row_iq1_m_impl): for every split
 * (i1, i2) of the sorted order and sign pair k, the four sums accumulated
 * over the 16 weights in sorted order; the first best kept.  *scale comes
 * in as the sub-block's max (ggml's value when nothing is accepted). */
void qp_iq1_m_split_ref(const float *xb, const float *weight, const int *idx, float *scale_io, int *bi1, int *bi2,
                        int *bk)
{
    const float x_p[3] = { -1 + DELTA, DELTA, 1 + DELTA };
    const float x_m[3] = { -1 - DELTA, -DELTA, 1 - DELTA };
    float best_score = -FLT_MIN, scale = *scale_io;
    int besti1 = -1, besti2 = -1, best_k = -1;
    for (int i1 = 0; i1 <= 16; ++i1) {
        for (int i2 = i1; i2 <= 16; ++i2) {
            float sumqx[4] = { 0, 0, 0, 0 }, sumq2[4] = { 0, 0, 0, 0 };
            for (int j = 0; j < 16; ++j) {
                const int i = idx[j];
                const int g = j < i1 ? 0 : j < i2 ? 1 : 2;
                const float wp = weight[i] * x_p[g], wm = weight[i] * x_m[g];
                const float ap = wp * xb[i], am = wm * xb[i];
                const float bp = wp * x_p[g], bm = wm * x_m[g];
                /* first half: pairs 0, 1 take +; second half: 0, 2 */
                const int s1 = i < 8 ? 1 : 2, s2 = i < 8 ? 2 : 1;
                sumqx[0] += ap;
                sumqx[s1] += ap;
                sumqx[s2] += am;
                sumqx[3] += am;
                sumq2[0] += bp;
                sumq2[s1] += bp;
                sumq2[s2] += bm;
                sumq2[3] += bm;
            }
            for (int k = 0; k < 4; ++k) {
                if (sumq2[k] > 0 && sumqx[k] * sumqx[k] > best_score * sumq2[k]) {
                    scale = sumqx[k] / sumq2[k];
                    best_score = scale * sumqx[k];
                    besti1 = i1;
                    besti2 = i2;
                    best_k = k;
                }
            }
        }
    }
    *scale_io = scale;
    *bi1 = besti1;
    *bi2 = besti2;
    *bk = best_k;
}

static void iq1_m_block(const float *xbl, uint8_t *out, const float *qwbl, int *shifts, qp_iq1m_split_fn split)
{
    const float x_p[3] = { -1 + DELTA, DELTA, 1 + DELTA };
    const float x_m[3] = { -1 - DELTA, -DELTA, 1 - DELTA };
    const uint8_t masks[4] = { 0x00, 0x80, 0x08, 0x88 };
    float scales[16], weight[16], pairs[32];
    int8_t L[16];
    uint8_t qs[32], qh[16];
    uint16_t sc[4] = { 0, 0, 0, 0 };
    memset(qs, 0, sizeof qs);
    memset(qh, 0, sizeof qh);

    float max_scale = 0;
    float sumx2 = 0;
    for (int i = 0; i < QP_QK_K; ++i)
        sumx2 += xbl[i] * xbl[i];
    const float sigma2 = 2 * sumx2 / QP_QK_K;

    for (int ib = 0; ib < 16; ++ib) {
        const float *xb = xbl + 16 * ib;
        iq1_m_weights(xb, qwbl ? qwbl + 16 * ib : NULL, sigma2, weight);
        float max = fabsf(xb[0]);
        for (int i = 1; i < 16; ++i)
            max = QP_MAX(max, fabsf(xb[i]));
        if (max < GROUP_MAX_EPS_IQ1_M) {
            scales[ib] = 0;
            continue;   /* shifts[ib] keeps its previous value, as in ggml */
        }
        sort_pairs(xb, 16, pairs);
        int idx[16];
        for (int j = 0; j < 16; ++j)
            idx[j] = pair_index(pairs, j);
        float scale = max;
        int besti1 = -1, besti2 = -1, best_k = -1;
        split(xb, weight, idx, &scale, &besti1, &besti2, &best_k);
        if (besti1 < 0) {   /* ggml asserts (all-zero or NaN weights) */
            besti1 = besti2 = 0;
            best_k = 0;
        }
        split_levels(pairs, 16, besti1, besti2, L);
        if (scale < 0) {
            for (int j = 0; j < 16; ++j)
                L[j] = (int8_t)(2 - L[j]);
            scale = -scale;
            best_k = 3 - best_k;
        }
        bool all_on_grid = true;
        int index[2];
        for (int k = 0; k < 2; ++k) {
            const float *xx = iq1_m_xx(best_k, k, x_p, x_m);
            const int u = group_key(L + 8 * k);
            int grid_index = g_kmap[u];
            if (grid_index < 0) {
                all_on_grid = false;
                grid_index = best_neighbour(u, xb + 8 * k, weight + 8 * k, scale, xx);
            }
            index[k] = grid_index;
        }
        if (!all_on_grid) {
            float sumqx_f = 0, sumq2_f = 0;
            for (int k = 0; k < 2; ++k) {
                const float *xx = iq1_m_xx(best_k, k, x_p, x_m);
                const int8_t *pg = g_pos[index[k]];
                for (int j = 0; j < 8; ++j) {
                    const float w = weight[8 * k + j];
                    const float q = xx[(pg[j] - 1) / 2];
                    sumqx_f += w * q * xb[8 * k + j];
                    sumq2_f += w * q * q;
                }
            }
            if (sumqx_f > 0 && sumq2_f > 0)
                scale = sumqx_f / sumq2_f;
        }
        qs[2 * ib + 0] = (uint8_t)(index[0] & 255);
        qs[2 * ib + 1] = (uint8_t)(index[1] & 255);
        qh[ib] = (uint8_t)((index[0] >> 8) | ((index[1] >> 8) << 4));
        scales[ib] = scale;
        shifts[ib] = best_k;
        max_scale = QP_MAX(max_scale, scale);
    }

    if (max_scale) {
        float d = max_scale / 15;
        const float id = 1 / d;
        float sumqx_f = 0, sumq2_f = 0;
        for (int ib = 0; ib < 16; ++ib) {
            int l = qp_nearest_int(0.5f * (id * scales[ib] - 1));
            l = QP_MAX(0, QP_MIN(7, l));
            sc[ib / 4] = (uint16_t)(sc[ib / 4] | l << 3 * (ib % 4));
            qh[ib] |= masks[shifts[ib]];
            const float *xb = xbl + 16 * ib;
            iq1_m_weights(xb, qwbl ? qwbl + 16 * ib : NULL, sigma2, weight);
            for (int k = 0; k < 2; ++k) {
                const float *xx = iq1_m_xx(shifts[ib], k, x_p, x_m);
                const int8_t *pg = g_pos[qs[2 * ib + k] + ((qh[ib] << (8 - 4 * k)) & 0x700)];
                for (int j = 0; j < 8; ++j) {
                    const float w = weight[8 * k + j];
                    const float q = xx[(pg[j] - 1) / 2] * (2 * l + 1);
                    sumqx_f += w * q * xb[8 * k + j];
                    sumq2_f += w * q * q;
                }
            }
        }
        if (sumq2_f > 0)
            d = sumqx_f / sumq2_f;
        const uint16_t s = QP_FP16(d * 1.1125f);
        sc[0] = (uint16_t)(sc[0] | (s & 0x000f) << 12);
        sc[1] = (uint16_t)(sc[1] | (s & 0x00f0) << 8);
        sc[2] = (uint16_t)(sc[2] | (s & 0x0f00) << 4);
        sc[3] = (uint16_t)(sc[3] | (s & 0xf000));
    }
    memcpy(out, qs, 32);
    memcpy(out + 32, qh, 16);
    for (int i = 0; i < 4; ++i) {
        out[48 + 2 * i] = (uint8_t)sc[i];
        out[49 + 2 * i] = (uint8_t)(sc[i] >> 8);
    }
}

void qp_iq1_m_row_search(const float *x, void *vy, int64_t n, const float *qw, qp_iq1m_split_fn split)
{
    pthread_once(&g_once, build);
    uint8_t *y = vy;
    int shifts[16];
    memset(shifts, 0, sizeof shifts);
    for (int64_t ib = 0; ib < n / QP_QK_K; ++ib)
        iq1_m_block(x + QP_QK_K * ib, y + 56 * ib, qw ? qw + QP_QK_K * ib : NULL, shifts, split);
}

void qp_iq1_m_row(const float *x, void *y, int64_t n, const float *qw)
{
    qp_iq1_m_row_search(x, y, n, qw, qp_iq1_m_split_ref);
}
