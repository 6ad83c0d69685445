/* IQ3_S (3.4375 bpw): each 32-weight sub-block is 8 groups of 4
 * magnitudes, each group a 9-bit index into a 512-point grid of 4-vectors
 * with odd levels 1, 3, …, 15, plus 32 plain sign bits (no parity trick, as
 * IQ3_XXS has) and a 4-bit scale; an fp16 super-scale per 256.  These are
 * the bytes of llama-quantize (llama.cpp c392e50: quantize_iq3_s ->
 * quantize_row_iq3_s_impl(32, …)), with or without an imatrix
 * (quantize_row_iq3_s_ref = no weights).
 *
 * Layout (110 B): d fp16; qs[64] low 8 bits of the grid indices; qh[8]:
 * bit k of qh[ib] is bit 8 of index k of sub-block ib; signs[32], bit j of
 * byte 4·ib + g = sign of weight 8g + j of sub-block ib; scales[4], two
 * 4-bit scales l per byte (low nibble first), dequantized d·(1 + 2l).
 *
 * ggml's particulars kept here: a sub-block whose weights are all zero is
 * skipped without advancing the qs and signs cursors (the next non-zero
 * sub-block's indices and signs land in its place; qh is indexed by
 * sub-block and is not affected); after the trial search every group is
 * snapped again at the final scale when any group was off the grid; the
 * super-scale is stored as fp16(d·1.033) while the sub-block scales are
 * rounded with 1/d.
 *
 * The neighbour lists are those of iq3xs_init_impl(512): for each of the
 * 4096 − 512 off-grid level vectors, the grid points at the three smallest
 * squared distances, ordered by (distance, grid index).
 *
 * Shapes: x[n] f32, n % 256 == 0 -> n/256 blocks of 110 bytes; qw[n] or NULL. */
#include "quant/ggml_iq3s_impl.h"

#include <float.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define NWANT 3   /* iq3xs_init_impl(512): the three smallest distances */

/* ggml-common.h, iq3s_grid (llama.cpp c392e50; data): the 512 grid points,
 * one byte per coordinate (odd levels 1..15), first coordinate in the low
 * byte.  The quantizer's kgrid_512 (ggml-quants.c) lists the same points in
 * the same order as 3-bit level keys; it is derived from this table. */
const uint32_t qp_iq3s_grid[512] = {
    0x01010101, 0x01010103, 0x01010105, 0x0101010b, 0x0101010f, 0x01010301, 0x01010303, 0x01010305,
    0x01010309, 0x0101030d, 0x01010501, 0x01010503, 0x0101050b, 0x01010707, 0x01010901, 0x01010905,
    0x0101090b, 0x0101090f, 0x01010b03, 0x01010b07, 0x01010d01, 0x01010d05, 0x01010f03, 0x01010f09,
    0x01010f0f, 0x01030101, 0x01030103, 0x01030105, 0x01030109, 0x01030301, 0x01030303, 0x0103030b,
    0x01030501, 0x01030507, 0x0103050f, 0x01030703, 0x0103070b, 0x01030909, 0x01030d03, 0x01030d0b,
    0x01030f05, 0x01050101, 0x01050103, 0x0105010b, 0x0105010f, 0x01050301, 0x01050307, 0x0105030d,
    0x01050503, 0x0105050b, 0x01050701, 0x01050709, 0x01050905, 0x0105090b, 0x0105090f, 0x01050b03,
    0x01050b07, 0x01050f01, 0x01050f07, 0x01070107, 0x01070303, 0x0107030b, 0x01070501, 0x01070505,
    0x01070703, 0x01070707, 0x0107070d, 0x01070909, 0x01070b01, 0x01070b05, 0x01070d0f, 0x01070f03,
    0x01070f0b, 0x01090101, 0x01090307, 0x0109030f, 0x01090503, 0x01090509, 0x01090705, 0x01090901,
    0x01090907, 0x01090b03, 0x01090f01, 0x010b0105, 0x010b0109, 0x010b0501, 0x010b0505, 0x010b050d,
    0x010b0707, 0x010b0903, 0x010b090b, 0x010b090f, 0x010b0d0d, 0x010b0f07, 0x010d010d, 0x010d0303,
    0x010d0307, 0x010d0703, 0x010d0b05, 0x010d0f03, 0x010f0101, 0x010f0105, 0x010f0109, 0x010f0501,
    0x010f0505, 0x010f050d, 0x010f0707, 0x010f0b01, 0x010f0b09, 0x03010101, 0x03010103, 0x03010105,
    0x03010109, 0x03010301, 0x03010303, 0x03010307, 0x0301030b, 0x0301030f, 0x03010501, 0x03010505,
    0x03010703, 0x03010709, 0x0301070d, 0x03010b09, 0x03010b0d, 0x03010d03, 0x03010f05, 0x03030101,
    0x03030103, 0x03030107, 0x0303010d, 0x03030301, 0x03030309, 0x03030503, 0x03030701, 0x03030707,
    0x03030903, 0x03030b01, 0x03030b05, 0x03030f01, 0x03030f0d, 0x03050101, 0x03050305, 0x0305030b,
    0x0305030f, 0x03050501, 0x03050509, 0x03050705, 0x03050901, 0x03050907, 0x03050b0b, 0x03050d01,
    0x03050f05, 0x03070103, 0x03070109, 0x0307010f, 0x03070301, 0x03070307, 0x03070503, 0x0307050f,
    0x03070701, 0x03070709, 0x03070903, 0x03070d05, 0x03070f01, 0x03090107, 0x0309010b, 0x03090305,
    0x03090309, 0x03090703, 0x03090707, 0x03090905, 0x0309090d, 0x03090b01, 0x03090b09, 0x030b0103,
    0x030b0301, 0x030b0307, 0x030b0503, 0x030b0701, 0x030b0705, 0x030b0b03, 0x030d0501, 0x030d0509,
    0x030d050f, 0x030d0909, 0x030d090d, 0x030f0103, 0x030f0107, 0x030f0301, 0x030f0305, 0x030f0503,
    0x030f070b, 0x030f0903, 0x030f0d05, 0x030f0f01, 0x05010101, 0x05010103, 0x05010107, 0x0501010b,
    0x0501010f, 0x05010301, 0x05010305, 0x05010309, 0x0501030d, 0x05010503, 0x05010507, 0x0501050f,
    0x05010701, 0x05010705, 0x05010903, 0x05010907, 0x0501090b, 0x05010b01, 0x05010b05, 0x05010d0f,
    0x05010f01, 0x05010f07, 0x05010f0b, 0x05030101, 0x05030105, 0x05030301, 0x05030307, 0x0503030f,
    0x05030505, 0x0503050b, 0x05030703, 0x05030709, 0x05030905, 0x05030b03, 0x05050103, 0x05050109,
    0x0505010f, 0x05050503, 0x05050507, 0x05050701, 0x0505070f, 0x05050903, 0x05050b07, 0x05050b0f,
    0x05050f03, 0x05050f09, 0x05070101, 0x05070105, 0x0507010b, 0x05070303, 0x05070505, 0x05070509,
    0x05070703, 0x05070707, 0x05070905, 0x05070b01, 0x05070d0d, 0x05090103, 0x0509010f, 0x05090501,
    0x05090507, 0x05090705, 0x0509070b, 0x05090903, 0x05090f05, 0x05090f0b, 0x050b0109, 0x050b0303,
    0x050b0505, 0x050b070f, 0x050b0901, 0x050b0b07, 0x050b0f01, 0x050d0101, 0x050d0105, 0x050d010f,
    0x050d0503, 0x050d0b0b, 0x050d0d03, 0x050f010b, 0x050f0303, 0x050f050d, 0x050f0701, 0x050f0907,
    0x050f0b01, 0x07010105, 0x07010303, 0x07010307, 0x0701030b, 0x0701030f, 0x07010505, 0x07010703,
    0x07010707, 0x0701070b, 0x07010905, 0x07010909, 0x0701090f, 0x07010b03, 0x07010d07, 0x07010f03,
    0x07030103, 0x07030107, 0x0703010b, 0x07030309, 0x07030503, 0x07030507, 0x07030901, 0x07030d01,
    0x07030f05, 0x07030f0d, 0x07050101, 0x07050305, 0x07050501, 0x07050705, 0x07050709, 0x07050b01,
    0x07070103, 0x07070301, 0x07070309, 0x07070503, 0x07070507, 0x0707050f, 0x07070701, 0x07070903,
    0x07070907, 0x0707090f, 0x07070b0b, 0x07070f07, 0x07090107, 0x07090303, 0x0709030d, 0x07090505,
    0x07090703, 0x07090b05, 0x07090d01, 0x07090d09, 0x070b0103, 0x070b0301, 0x070b0305, 0x070b050b,
    0x070b0705, 0x070b0909, 0x070b0b0d, 0x070b0f07, 0x070d030d, 0x070d0903, 0x070f0103, 0x070f0107,
    0x070f0501, 0x070f0505, 0x070f070b, 0x09010101, 0x09010109, 0x09010305, 0x09010501, 0x09010509,
    0x0901050f, 0x09010705, 0x09010903, 0x09010b01, 0x09010f01, 0x09030105, 0x0903010f, 0x09030303,
    0x09030307, 0x09030505, 0x09030701, 0x0903070b, 0x09030907, 0x09030b03, 0x09030b0b, 0x09050103,
    0x09050107, 0x09050301, 0x0905030b, 0x09050503, 0x09050707, 0x09050901, 0x09050b0f, 0x09050d05,
    0x09050f01, 0x09070109, 0x09070303, 0x09070307, 0x09070501, 0x09070505, 0x09070703, 0x0907070b,
    0x09090101, 0x09090105, 0x09090509, 0x0909070f, 0x09090901, 0x09090f03, 0x090b010b, 0x090b010f,
    0x090b0503, 0x090b0d05, 0x090d0307, 0x090d0709, 0x090d0d01, 0x090f0301, 0x090f030b, 0x090f0701,
    0x090f0907, 0x090f0b03, 0x0b010105, 0x0b010301, 0x0b010309, 0x0b010505, 0x0b010901, 0x0b010909,
    0x0b01090f, 0x0b010b05, 0x0b010d0d, 0x0b010f09, 0x0b030103, 0x0b030107, 0x0b03010b, 0x0b030305,
    0x0b030503, 0x0b030705, 0x0b030f05, 0x0b050101, 0x0b050303, 0x0b050507, 0x0b050701, 0x0b05070d,
    0x0b050b07, 0x0b070105, 0x0b07010f, 0x0b070301, 0x0b07050f, 0x0b070909, 0x0b070b03, 0x0b070d0b,
    0x0b070f07, 0x0b090103, 0x0b090109, 0x0b090501, 0x0b090705, 0x0b09090d, 0x0b0b0305, 0x0b0b050d,
    0x0b0b0b03, 0x0b0b0b07, 0x0b0d0905, 0x0b0f0105, 0x0b0f0109, 0x0b0f0505, 0x0d010303, 0x0d010307,
    0x0d01030b, 0x0d010703, 0x0d010707, 0x0d010d01, 0x0d030101, 0x0d030501, 0x0d03050f, 0x0d030d09,
    0x0d050305, 0x0d050709, 0x0d050905, 0x0d050b0b, 0x0d050d05, 0x0d050f01, 0x0d070101, 0x0d070309,
    0x0d070503, 0x0d070901, 0x0d09050b, 0x0d090907, 0x0d090d05, 0x0d0b0101, 0x0d0b0107, 0x0d0b0709,
    0x0d0b0d01, 0x0d0d010b, 0x0d0d0901, 0x0d0f0303, 0x0d0f0307, 0x0f010101, 0x0f010109, 0x0f01010f,
    0x0f010501, 0x0f010505, 0x0f01070d, 0x0f010901, 0x0f010b09, 0x0f010d05, 0x0f030105, 0x0f030303,
    0x0f030509, 0x0f030907, 0x0f03090b, 0x0f050103, 0x0f050109, 0x0f050301, 0x0f05030d, 0x0f050503,
    0x0f050701, 0x0f050b03, 0x0f070105, 0x0f070705, 0x0f07070b, 0x0f070b07, 0x0f090103, 0x0f09010b,
    0x0f090307, 0x0f090501, 0x0f090b01, 0x0f0b0505, 0x0f0b0905, 0x0f0d0105, 0x0f0d0703, 0x0f0f0101,
};

int8_t qp_iq3s_grid_pos[512][4];
int qp_iq3s_kmap[QP_IQ3S_KMAP_SIZE];
uint16_t *qp_iq3s_neighbours;
float *qp_iq3s_coords;
int qp_iq3s_coord_off[QP_IQ3S_KMAP_SIZE];
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static int cmp_dist(const void *a, const void *b)
{
    const int *l = a, *r = b;   /* (squared distance, grid index), lexicographic */
    return l[0] < r[0] ? -1 : l[0] > r[0] ? 1 : l[1] < r[1] ? -1 : l[1] > r[1] ? 1 : 0;
}

/* the grid points of key u ordered by (distance, index), into dist2[2·512];
 * returns how many fall within the NWANT smallest distances */
static int sorted_neighbours(int u, int *dist2)
{
    int pos[4];
    for (int k = 0; k < 4; ++k)
        pos[k] = 2 * ((u >> 3 * k) & 7) + 1;
    for (int j = 0; j < 512; ++j) {
        int d2 = 0;
        for (int k = 0; k < 4; ++k)
            d2 += (qp_iq3s_grid_pos[j][k] - pos[k]) * (qp_iq3s_grid_pos[j][k] - pos[k]);
        dist2[2 * j] = d2;
        dist2[2 * j + 1] = j;
    }
    qsort(dist2, 512, 2 * sizeof(int), cmp_dist);
    int n = 0, nhave = 1, d2 = dist2[0];
    for (int j = 0; j < 512; ++j) {
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

static void build_tables(void)
{
    for (int i = 0; i < QP_IQ3S_KMAP_SIZE; ++i)
        qp_iq3s_kmap[i] = -1;
    for (int j = 0; j < 512; ++j) {
        int u = 0;
        for (int k = 0; k < 4; ++k) {
            const int b = (int)((qp_iq3s_grid[j] >> 8 * k) & 0xff);
            qp_iq3s_grid_pos[j][k] = (int8_t)b;
            u |= ((b - 1) / 2) << 3 * k;
        }
        qp_iq3s_kmap[u] = j;
    }
    int *dist2 = malloc(2 * 512 * sizeof *dist2);
    int *count = malloc(QP_IQ3S_KMAP_SIZE * sizeof *count);
    if (!dist2 || !count)
        abort();   /* a few tens of KB at start-up */
    int total = 0;
    for (int u = 0; u < QP_IQ3S_KMAP_SIZE; ++u)
        if (qp_iq3s_kmap[u] < 0) {
            count[u] = sorted_neighbours(u, dist2);
            total += 1 + count[u];
        }
    qp_iq3s_neighbours = malloc((size_t)total * sizeof *qp_iq3s_neighbours);
    if (!qp_iq3s_neighbours)
        abort();
    int counter = 0, nf = 0;
    for (int u = 0; u < QP_IQ3S_KMAP_SIZE; ++u) {
        if (qp_iq3s_kmap[u] >= 0)
            continue;
        const int n = sorted_neighbours(u, dist2);
        qp_iq3s_kmap[u] = -(counter + 1);
        qp_iq3s_neighbours[counter++] = (uint16_t)n;
        for (int j = 0; j < n; ++j)
            qp_iq3s_neighbours[counter++] = (uint16_t)dist2[2 * j + 1];
        nf += 4 * ((n + 7) & ~7);
    }
    /* the float copy for the fast search */
    qp_iq3s_coords = calloc((size_t)nf, sizeof *qp_iq3s_coords);
    if (!qp_iq3s_coords)
        abort();
    nf = 0;
    for (int u = 0; u < QP_IQ3S_KMAP_SIZE; ++u) {
        if (qp_iq3s_kmap[u] >= 0)
            continue;
        const uint16_t *nb = qp_iq3s_neighbours - qp_iq3s_kmap[u] - 1;
        const int npad = (nb[0] + 7) & ~7;
        qp_iq3s_coord_off[u] = nf;
        for (int j = 0; j < nb[0]; ++j)
            for (int i = 0; i < 4; ++i)
                qp_iq3s_coords[nf + i * npad + j] = qp_iq3s_grid_pos[nb[1 + j]][i];
        nf += 4 * npad;
    }
    free(count);
    free(dist2);
}

void qp_iq3s_tables(void)
{
    pthread_once(&tables_once, build_tables);
}

int qp_iq3s_best_neighbour(int u, const float *xval, const float *w, float scale, int8_t *L)
{
    const uint16_t *nb = qp_iq3s_neighbours - qp_iq3s_kmap[u] - 1;
    float best_d2 = FLT_MAX;
    int grid_index = -1;
    for (int j = 1; j <= nb[0]; ++j) {
        const int8_t *pg = qp_iq3s_grid_pos[nb[j]];
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
        L[i] = (int8_t)((qp_iq3s_grid_pos[grid_index][i] - 1) / 2);
    return grid_index;
}

float qp_iq3s_trials_ref(const float *xval, const float *weight, const float *waux, float max, int8_t *L,
                         bool *on_grid)
{
    int8_t Laux[32];
    bool on_grid_aux[8];
    float best = 0;
    float scale = max / (2 * QP_IQ3S_KMAXQ - 1);
    for (int is = -9; is <= 9; ++is) {
        const float id = (2 * QP_IQ3S_KMAXQ - 1 + is * 0.2f) / max;
        const float this_scale = 1 / id;
        for (int k = 0; k < 8; ++k) {
            for (int i = 0; i < 4; ++i) {
                const int l = qp_nearest_int(0.5f * (id * xval[4 * k + i] - 1));
                Laux[4 * k + i] = (int8_t)QP_MAX(0, QP_MIN(QP_IQ3S_KMAXQ - 1, l));
            }
            const int u = qp_iq3s_levels_key(Laux + 4 * k);
            on_grid_aux[k] = qp_iq3s_kmap[u] >= 0;
            if (qp_iq3s_kmap[u] < 0)
                qp_iq3s_best_neighbour(u, xval + 4 * k, waux + 4 * k, this_scale, Laux + 4 * k);
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
            memcpy(L, Laux, 32);
            memcpy(on_grid, on_grid_aux, sizeof on_grid_aux);
        }
    }
    return scale;
}

static void iq3_s_block(const float *xbl, uint8_t *out, const float *qw, const qp_iq3s_search *fn)
{
    float scales[8], weight[32], xval[32], waux[32];
    int8_t L[32];
    bool on_grid[8];
    uint8_t *const qs0 = out + 2, *const qh = out + 66, *const signs0 = out + 74, *const sc = out + 106;
    uint8_t *qs = qs0, *signs = signs0;
    memset(out, 0, 110);

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
        uint8_t block_signs[4];
        for (int k = 0; k < 4; ++k) {
            uint8_t s = 0;
            for (int i = 0; i < 8; ++i) {
                if (xb[8 * k + i] >= 0) {
                    xval[8 * k + i] = xb[8 * k + i];
                } else {
                    xval[8 * k + i] = -xb[8 * k + i];
                    s |= (uint8_t)(1 << i);
                }
            }
            block_signs[k] = s;
        }
        float max = xval[0];
        for (int i = 1; i < 32; ++i)
            max = QP_MAX(max, xval[i]);
        memset(L, 0, 32);
        if (!max) {
            scales[ib] = 0;
            continue;   /* ggml: qs and signs cursors stay where they are */
        }
        for (int k = 0; k < 8; ++k)
            on_grid[k] = false;
        float scale = fn->trials(xval, weight, waux, max, L, on_grid);
        int n_not_ongrid = 0;
        for (int k = 0; k < 8; ++k)
            n_not_ongrid += !on_grid[k];
        if (n_not_ongrid > 0 && scale > 0) {
            /* every group (not only the off-grid ones) snapped at the final scale */
            const float id = 1 / scale;
            for (int k = 0; k < 8; ++k) {
                int u = 0;
                for (int i = 0; i < 4; ++i) {
                    int l = qp_nearest_int(0.5f * (id * xval[4 * k + i] - 1));
                    l = QP_MAX(0, QP_MIN(QP_IQ3S_KMAXQ - 1, l));
                    u |= l << 3 * i;
                }
                int grid_index = qp_iq3s_kmap[u];
                if (grid_index < 0)
                    grid_index = fn->nearest(u, xval + 4 * k, waux + 4 * k, scale, L + 4 * k);
                for (int i = 0; i < 4; ++i)
                    L[4 * k + i] = (int8_t)((qp_iq3s_grid_pos[grid_index][i] - 1) / 2);
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
                block_signs[k] = (uint8_t)~block_signs[k];
        }
        for (int k = 0; k < 8; ++k) {
            const int g = qp_iq3s_kmap[qp_iq3s_levels_key(L + 4 * k)];
            if (g < 0)
                abort();   /* ggml: "Oops: found point not on grid" (cannot happen: L comes from the grid) */
            qs[k] = (uint8_t)(g & 255);
            qh[ib] |= (uint8_t)((g >> 8) << k);
        }
        qs += 8;
        memcpy(signs, block_signs, 4);
        signs += 4;
        scales[ib] = scale;
        max_scale = QP_MAX(max_scale, scale);
    }

    if (!max_scale)
        return;   /* d = +0 */
    const float d = max_scale / 31;
    const uint16_t dh = QP_FP16(d * 1.033f);   /* ggml's fudge factor */
    memcpy(out, &dh, 2);
    const float id = 1 / d;
    for (int ib = 0; ib < 8; ib += 2) {
        int l1 = qp_nearest_int(0.5f * (id * scales[ib] - 1));
        l1 = QP_MAX(0, QP_MIN(15, l1));
        int l2 = qp_nearest_int(0.5f * (id * scales[ib + 1] - 1));
        l2 = QP_MAX(0, QP_MIN(15, l2));
        sc[ib / 2] = (uint8_t)(l1 | l2 << 4);
    }
}

void qp_iq3_s_row_search(const float *x, void *vy, int64_t n, const float *qw, const qp_iq3s_search *fn)
{
    qp_iq3s_tables();
    uint8_t *y = vy;
    for (int64_t ib = 0; ib < n / QP_QK_K; ++ib)
        iq3_s_block(x + QP_QK_K * ib, y + 110 * ib, qw ? qw + QP_QK_K * ib : NULL, fn);
}

void qp_iq3_s_row(const float *x, void *y, int64_t n, const float *qw)
{
    static const qp_iq3s_search ref = { qp_iq3s_trials_ref, qp_iq3s_best_neighbour };
    qp_iq3_s_row_search(x, y, n, qw, &ref);
}
