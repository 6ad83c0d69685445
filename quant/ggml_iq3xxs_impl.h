/* Internal to quant/ggml_iq3xxs.c and quant/quant_fast_iq3xxs.c: IQ3_XXS's
 * search tables (built once, as ggml's iq3xs_init_impl(256) builds them),
 * the per-row search state, and the two searches a block quantizer uses,
 * so that the fast kernel reuses the reference's block code. */
#ifndef QP_QUANT_GGML_IQ3XXS_IMPL_H
#define QP_QUANT_GGML_IQ3XXS_IMPL_H

#include "quant/ggml_impl.h"

#define QP_IQ3_KMAXQ 8
#define QP_IQ3_KMAP_SIZE 4096   /* 4 levels of 3 bits */

/* Built by qp_iq3_xxs_row_search's first call: grid points as odd levels
 * 2l+1; the map from a 12-bit level key to its grid index (>= 0) or to
 * −(1 + offset of its neighbour list: count, then grid indices); the fast
 * search's copy of each list, coordinates as floats, coordinate-major,
 * padded to 8 (qp_iq3_coords + qp_iq3_coord_off[u]: q_i of entry j at
 * i·npad + j). */
extern int8_t qp_iq3_grid_pos[256][4];
extern int qp_iq3_kmap[QP_IQ3_KMAP_SIZE];
extern uint16_t *qp_iq3_neighbours;
extern float *qp_iq3_coords;
extern int qp_iq3_coord_off[QP_IQ3_KMAP_SIZE];

/* 4 levels (0..7) -> their 12-bit key */
static inline int qp_iq3_levels_key(const int8_t *L)
{
    return L[0] | L[1] << 3 | L[2] << 6 | L[3] << 9;
}

/* Search state that ggml keeps across the sub-blocks of a row: a sub-block
 * for which no trial scale is accepted (all-zero weights) reuses the
 * previous one's levels and on-grid flags.  ggml leaves them uninitialised
 * at the start of a row; here they start at zero. */
typedef struct {
    int8_t L[32];
    bool is_on_grid[8];
} qp_iq3_state;

/* iq3_find_best_neighbour for off-grid key u (reference) */
int qp_iq3_best_neighbour(int u, const float *xval, const float *w, float scale, int8_t *L);
/* the 31-trial scale search of one sub-block (reference) */
float qp_iq3_trials_ref(const float *xval, const float *weight, const float *waux, float max, qp_iq3_state *st);

/* the two searches, reference or fast (the same results) */
typedef struct {
    float (*trials)(const float *xval, const float *weight, const float *waux, float max, qp_iq3_state *st);
    int (*nearest)(int u, const float *xval, const float *w, float scale, int8_t *L);
} qp_iq3_search;

/* quantize_row_iq3_xxs_impl with these searches */
void qp_iq3_xxs_row_search(const float *x, void *y, int64_t n, const float *qw, const qp_iq3_search *fn);

#endif
