/* Internal to quant/ggml_iq2s.c and quant/quant_fast_iq2s.c: IQ2_S's search
 * tables (built once, as ggml's iq2xs_init_impl(GGML_TYPE_IQ2_S) builds
 * them) and the two searches a block quantizer uses. */
#ifndef QP_QUANT_GGML_IQ2S_IMPL_H
#define QP_QUANT_GGML_IQ2S_IMPL_H

#include "quant/ggml_impl.h"

#define QP_IQ2S_KMAXQ 3
#define QP_IQ2S_KMAP_SIZE 43692   /* ggml's kmap_size: keys of 8 levels of 2 bits, levels <= 2 */

/* Built by qp_iq2s_tables(): grid points as odd levels 2l+1 (l = 0..2);
 * the map from a 16-bit level key to its grid index (>= 0) or to
 * −(1 + offset of its neighbour list: count, then grid indices); the fast
 * search's copy of each list, coordinates as floats, coordinate-major,
 * padded to 8 (qp_iq2s_coords + qp_iq2s_coord_off[u]: q_i of entry j at
 * i·npad + j). */
extern int8_t qp_iq2s_grid_pos[1024][8];
extern int qp_iq2s_kmap[QP_IQ2S_KMAP_SIZE];
extern uint16_t *qp_iq2s_neighbours;
extern float *qp_iq2s_coords;
extern int qp_iq2s_coord_off[QP_IQ2S_KMAP_SIZE];
void qp_iq2s_tables(void);   /* once; thread-safe */

/* 8 levels (0..2) -> their 16-bit key */
static inline int qp_iq2s_levels_key(const int8_t *L)
{
    int u = 0;
    for (int i = 0; i < 8; ++i)
        u |= L[i] << 2 * i;
    return u;
}

/* iq2_find_best_neighbour over IQ2_S's list for off-grid key u (reference) */
int qp_iq2s_best_neighbour(int u, const float *xval, const float *w, float scale, int8_t *L);
/* the 19-trial scale search of one 16-weight sub-block (reference): the
 * accepted trial's levels in L and on-grid flags in on_grid (left as given
 * when none is accepted); returns the scale (max/5 when none is) */
float qp_iq2s_trials_ref(const float *xval, const float *weight, const float *waux, float max, int8_t *L,
                         bool *on_grid);

typedef struct {
    float (*trials)(const float *xval, const float *weight, const float *waux, float max, int8_t *L, bool *on_grid);
    int (*nearest)(int u, const float *xval, const float *w, float scale, int8_t *L);
} qp_iq2s_search;

/* quantize_row_iq2_s_impl with these searches */
void qp_iq2_s_row_search(const float *x, void *y, int64_t n, const float *qw, const qp_iq2s_search *fn);

#endif
