/* Internal to quant/ggml_iq2xs.c and quant/quant_fast_iq2xs.c: IQ2_XXS's
 * and IQ2_XS's search tables (built once per grid, as ggml's
 * iq2xs_init_impl builds them) and the neighbour search a block quantizer
 * uses, so that the fast kernel reuses the reference's block code. */
#ifndef QP_QUANT_GGML_IQ2XS_IMPL_H
#define QP_QUANT_GGML_IQ2XS_IMPL_H

#include "quant/ggml_impl.h"

#define QP_IQ2_KMAP_SIZE 43692   /* ggml's kmap_size: 16-bit keys up to 0xAAAA (all levels 2) */

/* One grid's tables: grid points as odd levels 2l+1 (int8 × 8); the map
 * from a 16-bit level key (level of coordinate i in bits 2i, 2i+1) to its
 * grid index (>= 0) or to −(1 + offset of its neighbour list: count, then
 * grid indices); the fast search's copy of each list, coordinates as
 * floats, coordinate-major, padded to 8 (coords + coord_off[u]: q_i of
 * entry j at i·npad + j). */
typedef struct {
    const uint64_t *grid;
    int n;
    int8_t (*pos)[8];
    int *kmap;
    uint16_t *neighbours;
    float *coords;
    int *coord_off;
} qp_iq2_tables;

/* iq2_find_best_neighbour for off-grid key u: the listed grid point nearest
 * to xval at this scale (w = sqrt of the error weights), first on ties;
 * writes its levels to L and returns its index. */
typedef int (*qp_iq2_nearest_fn)(const qp_iq2_tables *t, int u, const float *xval, const float *w, float scale,
                                 int8_t *L);
int qp_iq2_best_neighbour(const qp_iq2_tables *t, int u, const float *xval, const float *w, float scale, int8_t *L);

/* quantize_row_iq2_xxs_impl / quantize_row_iq2_xs_impl with this search */
void qp_iq2_xxs_row_search(const float *x, void *y, int64_t n, const float *qw, qp_iq2_nearest_fn nearest);
void qp_iq2_xs_row_search(const float *x, void *y, int64_t n, const float *qw, qp_iq2_nearest_fn nearest);

#endif
