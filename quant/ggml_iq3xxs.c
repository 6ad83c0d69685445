/* IQ3_XXS (3.0625 bpw): each 32-weight sub-block is 8 groups of 4
 * magnitudes, each group an index into a 256-point grid of 4-vectors with
 * odd levels 1, 3, …, 15 (one byte), plus 4×7 sign bits (the eighth sign of
 * each 8 is the parity, so a sign is flipped on the least important weight
 * when the count of negatives is odd) and a 4-bit scale; an fp16
 * super-scale per 256.  These are the bytes of llama-quantize (llama.cpp
 * c392e50: quantize_iq3_xxs -> quantize_row_iq3_xxs_impl(256, …)), with or
 * without an imatrix (quantize_row_iq3_xxs_ref = no weights).
 *
 * Layout (98 B): d fp16, qs[64] grid indices (8 per sub-block), then 8
 * little-endian u32: signs of groups k = 0..3 of 8 weights in bits 7k..7k+6,
 * the sub-block scale l in bits 28..31 (dequantized d·(0.5 + l)·0.5).
 *
 * The search needs, for a 4-vector of levels off the grid, its nearest grid
 * points: ggml builds them at start-up (iq3xs_init_impl(256)) — for each of
 * the 4096 − 256 off-grid points the grid points at the smallest and the
 * second-smallest squared distance, ordered by (distance, grid index).
 * iq3_build_tables() rebuilds exactly that list.
 *
 * Shapes: x[n] f32, n % 256 == 0 -> n/256 blocks of 98 bytes; qw[n] or NULL. */
#include "quant/ggml_iq3xxs_impl.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>

#define GROUP_MAX_EPS_IQ3_XXS 1e-8f
#define NWANT 2          /* qp_iq3_neighbours: the two smallest distances */

/* ggml-common.h, iq3xxs_grid (llama.cpp c392e50, data): the dequantization
 * grid, bytes 4·(2l+1) for l = 0..6 and 62 for l = 7, first coordinate in
 * the low byte.  The quantizer's own grid (iq3xs_init_impl's kgrid_256)
 * lists the same points in the same order as 3-bit levels l; it is derived
 * from this table below. */
const uint32_t qp_iq3xxs_grid[256] = {
    0x04040404, 0x04040414, 0x04040424, 0x04040c0c, 0x04040c1c, 0x04040c3e, 0x04041404, 0x04041414,
    0x04041c0c, 0x04042414, 0x04043e1c, 0x04043e2c, 0x040c040c, 0x040c041c, 0x040c0c04, 0x040c0c14,
    0x040c140c, 0x040c142c, 0x040c1c04, 0x040c1c14, 0x040c240c, 0x040c2c24, 0x040c3e04, 0x04140404,
    0x04140414, 0x04140424, 0x04140c0c, 0x04141404, 0x04141414, 0x04141c0c, 0x04141c1c, 0x04141c3e,
    0x04142c0c, 0x04142c3e, 0x04143e2c, 0x041c040c, 0x041c043e, 0x041c0c04, 0x041c0c14, 0x041c142c,
    0x041c3e04, 0x04240c1c, 0x04241c3e, 0x04242424, 0x04242c3e, 0x04243e1c, 0x04243e2c, 0x042c040c,
    0x042c043e, 0x042c1c14, 0x042c2c14, 0x04341c2c, 0x04343424, 0x043e0c04, 0x043e0c24, 0x043e0c34,
    0x043e241c, 0x043e340c, 0x0c04040c, 0x0c04041c, 0x0c040c04, 0x0c040c14, 0x0c04140c, 0x0c04141c,
    0x0c041c04, 0x0c041c14, 0x0c041c24, 0x0c04243e, 0x0c042c04, 0x0c0c0404, 0x0c0c0414, 0x0c0c0c0c,
    0x0c0c1404, 0x0c0c1414, 0x0c14040c, 0x0c14041c, 0x0c140c04, 0x0c140c14, 0x0c14140c, 0x0c141c04,
    0x0c143e14, 0x0c1c0404, 0x0c1c0414, 0x0c1c1404, 0x0c1c1c0c, 0x0c1c2434, 0x0c1c3434, 0x0c24040c,
    0x0c24042c, 0x0c242c04, 0x0c2c1404, 0x0c2c1424, 0x0c2c2434, 0x0c2c3e0c, 0x0c34042c, 0x0c3e1414,
    0x0c3e2404, 0x14040404, 0x14040414, 0x14040c0c, 0x14040c1c, 0x14041404, 0x14041414, 0x14041434,
    0x14041c0c, 0x14042414, 0x140c040c, 0x140c041c, 0x140c042c, 0x140c0c04, 0x140c0c14, 0x140c140c,
    0x140c1c04, 0x140c341c, 0x140c343e, 0x140c3e04, 0x14140404, 0x14140414, 0x14140c0c, 0x14140c3e,
    0x14141404, 0x14141414, 0x14141c3e, 0x14142404, 0x14142c2c, 0x141c040c, 0x141c0c04, 0x141c0c24,
    0x141c3e04, 0x141c3e24, 0x14241c2c, 0x14242c1c, 0x142c041c, 0x142c143e, 0x142c240c, 0x142c3e24,
    0x143e040c, 0x143e041c, 0x143e0c34, 0x143e242c, 0x1c04040c, 0x1c040c04, 0x1c040c14, 0x1c04140c,
    0x1c04141c, 0x1c042c04, 0x1c04342c, 0x1c043e14, 0x1c0c0404, 0x1c0c0414, 0x1c0c1404, 0x1c0c1c0c,
    0x1c0c2424, 0x1c0c2434, 0x1c14040c, 0x1c14041c, 0x1c140c04, 0x1c14142c, 0x1c142c14, 0x1c143e14,
    0x1c1c0c0c, 0x1c1c1c1c, 0x1c241c04, 0x1c24243e, 0x1c243e14, 0x1c2c0404, 0x1c2c0434, 0x1c2c1414,
    0x1c2c2c2c, 0x1c340c24, 0x1c341c34, 0x1c34341c, 0x1c3e1c1c, 0x1c3e3404, 0x24040424, 0x24040c3e,
    0x24041c2c, 0x24041c3e, 0x24042c1c, 0x24042c3e, 0x240c3e24, 0x24141404, 0x24141c3e, 0x24142404,
    0x24143404, 0x24143434, 0x241c043e, 0x241c242c, 0x24240424, 0x24242c0c, 0x24243424, 0x242c142c,
    0x242c241c, 0x242c3e04, 0x243e042c, 0x243e0c04, 0x243e0c14, 0x243e1c04, 0x2c040c14, 0x2c04240c,
    0x2c043e04, 0x2c0c0404, 0x2c0c0434, 0x2c0c1434, 0x2c0c2c2c, 0x2c140c24, 0x2c141c14, 0x2c143e14,
    0x2c1c0414, 0x2c1c2c1c, 0x2c240c04, 0x2c24141c, 0x2c24143e, 0x2c243e14, 0x2c2c0414, 0x2c2c1c0c,
    0x2c342c04, 0x2c3e1424, 0x2c3e2414, 0x34041424, 0x34042424, 0x34042434, 0x34043424, 0x340c140c,
    0x340c340c, 0x34140c3e, 0x34143424, 0x341c1c04, 0x341c1c34, 0x34242424, 0x342c042c, 0x342c2c14,
    0x34341c1c, 0x343e041c, 0x343e140c, 0x3e04041c, 0x3e04042c, 0x3e04043e, 0x3e040c04, 0x3e041c14,
    0x3e042c14, 0x3e0c1434, 0x3e0c2404, 0x3e140c14, 0x3e14242c, 0x3e142c14, 0x3e1c0404, 0x3e1c0c2c,
    0x3e1c1c1c, 0x3e1c3404, 0x3e24140c, 0x3e24240c, 0x3e2c0404, 0x3e2c0414, 0x3e2c1424, 0x3e341c04,
};

/* The quantizer's tables (iq3xs_init_impl(256)): grid points as odd levels
 * 2l+1 (int8 × 4), the map from a 12-bit level vector to its grid index
 * (>= 0) or to −(1 + offset of its neighbour list), and the lists
 * (count, then grid indices). */
int8_t qp_iq3_grid_pos[256][4];
int qp_iq3_kmap[QP_IQ3_KMAP_SIZE];
uint16_t *qp_iq3_neighbours;
float *qp_iq3_coords;
int qp_iq3_coord_off[QP_IQ3_KMAP_SIZE];
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

/* the dequantization byte 4·(2l+1) (62 for l = 7) -> l */
static int byte_level(uint8_t b)
{
    return b == 62 ? 7 : (b / 4 - 1) / 2;
}

static int cmp_dist(const void *a, const void *b)
{
    const int *l = a, *r = b;   /* (squared distance, grid index), lexicographic */
    return l[0] < r[0] ? -1 : l[0] > r[0] ? 1 : l[1] < r[1] ? -1 : l[1] > r[1] ? 1 : 0;
}

/* the grid points of point u ordered by (distance, index), into dist2[2·256];
 * returns how many fall within the NWANT smallest distances */
static int sorted_neighbours(int u, int *dist2)
{
    int8_t pos[4];
    for (int k = 0; k < 4; ++k)
        pos[k] = (int8_t)(2 * ((u >> 3 * k) & 7) + 1);
    for (int j = 0; j < 256; ++j) {
        int d2 = 0;
        for (int k = 0; k < 4; ++k)
            d2 += (qp_iq3_grid_pos[j][k] - pos[k]) * (qp_iq3_grid_pos[j][k] - pos[k]);
        dist2[2 * j] = d2;
        dist2[2 * j + 1] = j;
    }
    qsort(dist2, 256, 2 * sizeof(int), cmp_dist);
    int n = 0, nhave = 1, d2 = dist2[0];
    for (int j = 0; j < 256; ++j) {
        if (dist2[2 * j] > d2) {
            if (nhave == NWANT)
                break;
            d2 = dist2[2 * j];
            ++nhave;
        }
        ++n;
    }
    return n;
}

static void iq3_build_tables(void)
{
    for (int i = 0; i < QP_IQ3_KMAP_SIZE; ++i)
        qp_iq3_kmap[i] = -1;
    for (int j = 0; j < 256; ++j) {
        int u = 0;
        for (int k = 0; k < 4; ++k) {
            const int l = byte_level((uint8_t)(qp_iq3xxs_grid[j] >> 8 * k));
            qp_iq3_grid_pos[j][k] = (int8_t)(2 * l + 1);
            u |= l << 3 * k;
        }
        qp_iq3_kmap[u] = j;
    }
    int dist2[2 * 256], total = 0;
    for (int u = 0; u < QP_IQ3_KMAP_SIZE; ++u)
        if (qp_iq3_kmap[u] < 0)
            total += 1 + sorted_neighbours(u, dist2);
    qp_iq3_neighbours = malloc((size_t)total * sizeof *qp_iq3_neighbours);
    if (!qp_iq3_neighbours)
        abort();   /* a few tens of KB at start-up */
    int counter = 0;
    for (int u = 0; u < QP_IQ3_KMAP_SIZE; ++u) {
        if (qp_iq3_kmap[u] >= 0)
            continue;
        const int n = sorted_neighbours(u, dist2);
        qp_iq3_kmap[u] = -(counter + 1);
        qp_iq3_neighbours[counter++] = (uint16_t)n;
        for (int j = 0; j < n; ++j)
            qp_iq3_neighbours[counter++] = (uint16_t)dist2[2 * j + 1];
    }
    /* the float copy for the fast search */
    int nf = 0;
    for (int u = 0; u < QP_IQ3_KMAP_SIZE; ++u)
        if (qp_iq3_kmap[u] < 0)
            nf += 4 * ((qp_iq3_neighbours[-qp_iq3_kmap[u] - 1] + 7) & ~7);
    qp_iq3_coords = calloc((size_t)nf, sizeof *qp_iq3_coords);
    if (!qp_iq3_coords)
        abort();
    nf = 0;
    for (int u = 0; u < QP_IQ3_KMAP_SIZE; ++u) {
        if (qp_iq3_kmap[u] >= 0)
            continue;
        const uint16_t *nb = qp_iq3_neighbours - qp_iq3_kmap[u] - 1;
        const int npad = (nb[0] + 7) & ~7;
        qp_iq3_coord_off[u] = nf;
        for (int j = 0; j < nb[0]; ++j)
            for (int i = 0; i < 4; ++i)
                qp_iq3_coords[nf + i * npad + j] = qp_iq3_grid_pos[nb[1 + j]][i];
        nf += 4 * npad;
    }
}

/* iq3_find_best_neighbour for off-grid key u: the listed grid point nearest
 * to xval at this scale (weights w = sqrt of the error weights), first on
 * ties; writes its levels to L and returns its index. */
int qp_iq3_best_neighbour(int u, const float *xval, const float *w, float scale, int8_t *L)
{
    const uint16_t *nb = qp_iq3_neighbours - qp_iq3_kmap[u] - 1;
    float best_d2 = FLT_MAX;
    int grid_index = -1;
    for (int j = 1; j <= nb[0]; ++j) {
        const int8_t *pg = qp_iq3_grid_pos[nb[j]];
        float d2 = 0;
        for (int i = 0; i < 4; ++i) {
            const float q = pg[i];
            const float diff = scale * q - xval[i];
            d2 += w[i] * diff * diff;
        }
        if (d2 < best_d2) {
            best_d2 = d2;
            grid_index = nb[j];
        }
    }
    for (int i = 0; i < 4; ++i)
        L[i] = (int8_t)((qp_iq3_grid_pos[grid_index][i] - 1) / 2);
    return grid_index;
}

/* The 31 trial scales around max/15 of one sub-block: each trial snaps the
 * groups to the grid (off-grid ones to their nearest listed neighbour at
 * that scale) and the best weighted fit is kept, its levels and on-grid
 * flags in st (left as they were when no trial is accepted).  Returns the
 * scale (max/15 when no trial is accepted). */
float qp_iq3_trials_ref(const float *xval, const float *weight, const float *waux, float max, qp_iq3_state *st)
{
    int8_t Laux[32];
    bool on_grid_aux[8];
    float best = 0;
    float scale = max / (2 * QP_IQ3_KMAXQ - 1);
    for (int is = -15; is <= 15; ++is) {
        const float id = (2 * QP_IQ3_KMAXQ - 1 + is * 0.2f) / max;
        const float this_scale = 1 / id;
        for (int k = 0; k < 8; ++k) {
            for (int i = 0; i < 4; ++i) {
                const int l = qp_nearest_int(0.5f * (id * xval[4 * k + i] - 1));
                Laux[4 * k + i] = (int8_t)QP_MAX(0, QP_MIN(QP_IQ3_KMAXQ - 1, l));
            }
            const int u = qp_iq3_levels_key(Laux + 4 * k);
            on_grid_aux[k] = qp_iq3_kmap[u] >= 0;
            if (qp_iq3_kmap[u] < 0)
                qp_iq3_best_neighbour(u, xval + 4 * k, waux + 4 * k, this_scale, Laux + 4 * k);
        }
        float sumqx = 0, sumq2 = 0;
        for (int i = 0; i < 32; ++i) {
            const float w = weight[i];
            const float q = 2 * Laux[i] + 1;
            sumqx += w * xval[i] * q;
            sumq2 += w * q * q;
        }
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
            scale = sumqx / sumq2;
            best = scale * sumqx;
            memcpy(st->L, Laux, 32);
            memcpy(st->is_on_grid, on_grid_aux, sizeof on_grid_aux);
        }
    }
    return scale;
}


static void iq3_xxs_block(const float *xbl, uint8_t *out, const float *qw, qp_iq3_state *st, const qp_iq3_search *fn)
{
    float scales[8], weight[32], xval[32], waux[32];
    uint8_t block_signs[4];
    uint8_t q3[64];
    uint32_t sas[8];
    int8_t *L = st->L;
    memset(q3, 0, sizeof q3);
    memset(sas, 0, sizeof sas);

    float max_scale = 0;
    float sumx2 = 0;
    for (int i = 0; i < QP_QK_K; ++i)
        sumx2 += xbl[i] * xbl[i];
    const float sigma2 = 2 * sumx2 / QP_QK_K;

    for (int ib = 0; ib < 8; ++ib) {
        const float *xb = xbl + 32 * ib;
        if (qw) {
            for (int i = 0; i < 32; ++i)
                weight[i] = qw[32 * ib + i] * sqrtf(sigma2 + xb[i] * xb[i]);
        } else {
            for (int i = 0; i < 32; ++i)
                weight[i] = xb[i] * xb[i];
        }
        for (int i = 0; i < 32; ++i)
            waux[i] = sqrtf(weight[i]);
        /* magnitudes; an odd number of negatives in 8 flips the least important */
        for (int k = 0; k < 4; ++k) {
            int nflip = 0;
            uint8_t s = 0;
            for (int i = 0; i < 8; ++i) {
                if (xb[8 * k + i] >= 0) {
                    xval[8 * k + i] = xb[8 * k + i];
                } else {
                    xval[8 * k + i] = -xb[8 * k + i];
                    ++nflip;
                    s |= (uint8_t)(1 << i);
                }
            }
            if (nflip % 2) {
                int imin = 0;
                float min = weight[8 * k] * xb[8 * k] * xb[8 * k];
                for (int i = 1; i < 8; ++i) {
                    const float ax = weight[8 * k + i] * xb[8 * k + i] * xb[8 * k + i];
                    if (ax < min) {
                        min = ax;
                        imin = i;
                    }
                }
                xval[8 * k + imin] = -xval[8 * k + imin];
                s ^= (uint8_t)(1 << imin);
            }
            block_signs[k] = s & 127;
        }
        float max = xval[0];
        for (int i = 1; i < 32; ++i)
            max = QP_MAX(max, xval[i]);
        if (max < GROUP_MAX_EPS_IQ3_XXS) {
            scales[ib] = 0;
            memset(L, 0, 32);
            continue;   /* indices and signs stay 0 */
        }
        /* 31 trial scales around max/15 */
        float scale = fn->trials(xval, weight, waux, max, st);
        /* groups that were snapped to a neighbour: redo them at the final scale */
        int n_not_ongrid = 0;
        for (int k = 0; k < 8; ++k)
            n_not_ongrid += !st->is_on_grid[k];
        if (n_not_ongrid > 0 && scale > 0) {
            const float id = 1 / scale;
            for (int k = 0; k < 8; ++k) {
                if (st->is_on_grid[k])
                    continue;
                int u = 0;
                for (int i = 0; i < 4; ++i) {
                    int l = qp_nearest_int(0.5f * (id * xval[4 * k + i] - 1));
                    l = QP_MAX(0, QP_MIN(QP_IQ3_KMAXQ - 1, l));
                    u |= l << 3 * i;
                }
                int grid_index = qp_iq3_kmap[u];
                if (grid_index < 0)
                    grid_index = fn->nearest(u, xval + 4 * k, waux + 4 * k, scale, L + 4 * k);
                for (int i = 0; i < 4; ++i)
                    L[4 * k + i] = (int8_t)((qp_iq3_grid_pos[grid_index][i] - 1) / 2);
            }
            float sumqx = 0, sumq2 = 0;
            for (int i = 0; i < 32; ++i) {
                const float w = weight[i];
                const float q = 2 * L[i] + 1;
                sumqx += w * xval[i] * q;
                sumq2 += w * q * q;
            }
            if (sumq2 > 0)
                scale = sumqx / sumq2;
        }
        if (scale < 0) {   /* ggml's guard; magnitudes and positive levels cannot get here */
            scale = -scale;
            for (int k = 0; k < 4; ++k)
                block_signs[k] = (uint8_t)(~block_signs[k] & 127);
        }
        for (int k = 0; k < 8; ++k) {
            const int g = qp_iq3_kmap[qp_iq3_levels_key(L + 4 * k)];
            if (g < 0)
                abort();   /* ggml: "Oops: found point not on grid" (cannot happen: L comes from the grid) */
            q3[8 * ib + k] = (uint8_t)g;
        }
        sas[ib] = (uint32_t)block_signs[0] | (uint32_t)block_signs[1] << 7 | (uint32_t)block_signs[2] << 14 |
                  (uint32_t)block_signs[3] << 21;
        scales[ib] = scale;
        max_scale = QP_MAX(max_scale, scale);
    }

    if (!max_scale) {
        memset(out, 0, 98);   /* d = +0 and all indices, signs, scales 0 */
        return;
    }
    const float d = max_scale / 31;
    const uint16_t dh = QP_FP16(d * 1.0125f);   /* ggml's "small improvement via this fudge factor" */
    const float id = 1 / d;
    for (int ib = 0; ib < 8; ++ib) {
        int l = qp_nearest_int(0.5f * (id * scales[ib] - 1));
        l = QP_MAX(0, QP_MIN(15, l));
        sas[ib] |= (uint32_t)l << 28;
    }
    memcpy(out, &dh, 2);
    memcpy(out + 2, q3, 64);
    for (int ib = 0; ib < 8; ++ib)
        for (int b = 0; b < 4; ++b)
            out[66 + 4 * ib + b] = (uint8_t)(sas[ib] >> 8 * b);
}

void qp_iq3_xxs_row_search(const float *x, void *vy, int64_t n, const float *qw, const qp_iq3_search *fn)
{
    pthread_once(&tables_once, iq3_build_tables);
    uint8_t *y = vy;
    qp_iq3_state st;
    memset(&st, 0, sizeof st);
    for (int64_t ib = 0; ib < n / QP_QK_K; ++ib)
        iq3_xxs_block(x + QP_QK_K * ib, y + 98 * ib, qw ? qw + QP_QK_K * ib : NULL, &st, fn);
}

void qp_iq3_xxs_row(const float *x, void *y, int64_t n, const float *qw)
{
    static const qp_iq3_search ref = { qp_iq3_trials_ref, qp_iq3_best_neighbour };
    qp_iq3_xxs_row_search(x, y, n, qw, &ref);
}
