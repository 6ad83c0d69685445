/* Internal to quant/ggml_iq3s.c and quant/quant_fast_iq3s.c: IQ3_S's search
 * tables (built once, as ggml's iq3xs_init_impl(512) builds them) and the
 * two searches a block quantizer uses, so that the fast kernel reuses the
 * reference's block code. */
#ifndef QP_QUANT_GGML_IQ3S_IMPL_H
#define QP_QUANT_GGML_IQ3S_IMPL_H

#include "quant/ggml_impl.h"

#define QP_IQ3S_KMAXQ 8
#define QP_IQ3S_KMAP_SIZE 4096   /* 4 levels of 3 bits */
#define QP_IQ3S_NTRIAL 19        /* trial scales is = -9..9 */

/* Built by qp_iq3s_tables(): grid points as odd levels 2l+1; the map from a
 * 12-bit level key to its grid index (>= 0) or to −(1 + offset of its
 * neighbour list: count, then grid indices); the fast search's copy of each
 * list, coordinates as floats, coordinate-major, padded to 8
 * (qp_iq3s_coords + qp_iq3s_coord_off[u]: q_i of entry j at i·npad + j). */
extern int8_t qp_iq3s_grid_pos[512][4];
extern int qp_iq3s_kmap[QP_IQ3S_KMAP_SIZE];
extern uint16_t *qp_iq3s_neighbours;
extern float *qp_iq3s_coords;
extern int qp_iq3s_coord_off[QP_IQ3S_KMAP_SIZE];
void qp_iq3s_tables(void);   /* once; thread-safe */

/* 4 levels (0..7) -> their 12-bit key */
static inline int qp_iq3s_levels_key(const int8_t *L)
{
    return L[0] | L[1] << 3 | L[2] << 6 | L[3] << 9;
}

/* iq3_find_best_neighbour over the 512-grid's list for off-grid key u
 * (reference): writes the levels to L, returns the grid index */
int qp_iq3s_best_neighbour(int u, const float *xval, const float *w, float scale, int8_t *L);
/* the 19-trial scale search of one 32-weight sub-block (reference): the
 * accepted trial's levels in L and on-grid flags in on_grid (left as given
 * when none is accepted); returns the scale (max/15 when none is) */
float qp_iq3s_trials_ref(const float *xval, const float *weight, const float *waux, float max, int8_t *L,
                         bool *on_grid);

typedef struct {
    float (*trials)(const float *xval, const float *weight, const float *waux, float max, int8_t *L, bool *on_grid);
    int (*nearest)(int u, const float *xval, const float *w, float scale, int8_t *L);
} qp_iq3s_search;

/* quantize_row_iq3_s_impl(32, …) with these searches */
void qp_iq3_s_row_search(const float *x, void *y, int64_t n, const float *qw, const qp_iq3s_search *fn);

#endif
