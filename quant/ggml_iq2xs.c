/* IQ2_XXS (2.0625 bpw) and IQ2_XS (2.3125 bpw): each group of 8 weights is
 * an index into a grid of 8-vectors whose magnitudes are the levels
 * 2l+1, l = 0..2 (bytes 8, 25, 43 in the dequantization grids) — 256
 * points for IQ2_XXS, 512 for IQ2_XS — plus 7 sign bits (the eighth is the
 * parity: an odd count of negatives flips the sign of the least important
 * weight); a 4-bit scale per 32 (IQ2_XXS) or per 16 (IQ2_XS) weights and an
 * fp16 super-scale per 256.  These are the bytes of llama-quantize
 * (llama.cpp c392e50: quantize_iq2_xxs / quantize_iq2_xs ->
 * quantize_row_iq2_xxs_impl / quantize_row_iq2_xs_impl), which exist ONLY
 * with an importance matrix: ggml asserts quant_weights != NULL, and
 * llama-quantize refuses a tensor of these types that has no imatrix entry
 * ("Missing importance matrix for tensor %s in a very low-bit
 * quantization").  qpipe's table has no no-imatrix quantizer for them.
 *
 * Layouts (little-endian):
 *   IQ2_XXS, 66 B: d fp16, then per 32 weights two u32: four grid indices
 *     (bytes), then 4×7 sign bits (group k at bit 7k) and the scale l in
 *     bits 28..31 (dequantized d·(0.5 + l)·0.25).
 *   IQ2_XS, 74 B: d fp16, qs u16[32] (grid index in bits 0..8, 7 sign bits
 *     in 9..15), scales[8] (two 4-bit scales per byte, the 16-weight
 *     sub-block 2j in the low nibble).
 *
 * The search needs, for an 8-vector of levels off the grid, its nearest
 * grid points: ggml builds them at start-up (iq2xs_init_impl(type)) — for
 * each off-grid 16-bit key, the grid points at the smallest and the
 * second-smallest squared distance, ordered by (distance, grid index).
 * iq2_build() rebuilds that list for the keys whose levels are 0..2 (the
 * only ones the quantizer looks up; ggml also lists keys with a level 3,
 * which are never read).
 *
 * Shapes: x[n] f32, n % 256 == 0 -> n/256 blocks; qw[n] (not NULL). */
#include "quant/ggml_iq2xs_impl.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define GROUP_MAX_EPS_IQ2 1e-15f   /* ggml-quants.c's GROUP_MAX_EPS */
#define KMAXQ 3

/* ggml-common.h, iq2xxs_grid and iq2xs_grid (llama.cpp c392e50, data): the
 * dequantization grids, coordinate i in byte i, values 8, 25, 43 for the
 * levels 0, 1, 2.  ggml's quantizer lists the same points in the same
 * order as 2-bit level codes (iq2xs_init_impl's kgrid_2bit_256 / _512:
 * level of coordinate i in bits 2i, 2i+1); iq2_build() derives those codes
 * from these tables (checked once against ggml's lists: identical). */
const uint64_t qp_iq2xxs_grid[256] = {
    0x0808080808080808, 0x080808080808082b, 0x0808080808081919, 0x0808080808082b08,
    0x0808080808082b2b, 0x0808080808190819, 0x0808080808191908, 0x08080808082b0808,
    0x08080808082b082b, 0x08080808082b2b08, 0x08080808082b2b2b, 0x0808080819080819,
    0x0808080819081908, 0x0808080819190808, 0x0808080819192b08, 0x08080808192b0819,
    0x08080808192b1908, 0x080808082b080808, 0x080808082b08082b, 0x080808082b082b2b,
    0x080808082b2b082b, 0x0808081908080819, 0x0808081908081908, 0x0808081908190808,
    0x0808081908191919, 0x0808081919080808, 0x080808192b081908, 0x080808192b192b08,
    0x0808082b08080808, 0x0808082b0808082b, 0x0808082b082b082b, 0x0808082b2b08082b,
    0x0808190808080819, 0x0808190808081908, 0x0808190808190808, 0x08081908082b0819,
    0x08081908082b1908, 0x0808190819080808, 0x080819081908082b, 0x0808190819082b08,
    0x08081908192b0808, 0x080819082b080819, 0x080819082b081908, 0x080819082b190808,
    0x080819082b2b1908, 0x0808191908080808, 0x080819190808082b, 0x0808191908082b08,
    0x08081919082b0808, 0x080819191908192b, 0x08081919192b2b19, 0x080819192b080808,
    0x080819192b190819, 0x0808192b08082b19, 0x0808192b08190808, 0x0808192b19080808,
    0x0808192b2b081908, 0x0808192b2b2b1908, 0x08082b0808080808, 0x08082b0808081919,
    0x08082b0808082b08, 0x08082b0808191908, 0x08082b08082b2b08, 0x08082b0819080819,
    0x08082b0819081908, 0x08082b0819190808, 0x08082b081919082b, 0x08082b082b082b08,
    0x08082b1908081908, 0x08082b1919080808, 0x08082b2b0808082b, 0x08082b2b08191908,
    0x0819080808080819, 0x0819080808081908, 0x0819080808190808, 0x08190808082b0819,
    0x0819080819080808, 0x08190808192b0808, 0x081908082b081908, 0x081908082b190808,
    0x081908082b191919, 0x0819081908080808, 0x0819081908082b08, 0x08190819082b0808,
    0x0819081919190808, 0x0819081919192b2b, 0x081908192b080808, 0x0819082b082b1908,
    0x0819082b19081919, 0x0819190808080808, 0x0819190808082b08, 0x08191908082b0808,
    0x08191908082b1919, 0x0819190819082b19, 0x081919082b080808, 0x0819191908192b08,
    0x08191919192b082b, 0x0819192b08080808, 0x0819192b0819192b, 0x08192b0808080819,
    0x08192b0808081908, 0x08192b0808190808, 0x08192b0819080808, 0x08192b082b080819,
    0x08192b1908080808, 0x08192b1908081919, 0x08192b192b2b0808, 0x08192b2b19190819,
    0x082b080808080808, 0x082b08080808082b, 0x082b080808082b2b, 0x082b080819081908,
    0x082b0808192b0819, 0x082b08082b080808, 0x082b08082b08082b, 0x082b0819082b2b19,
    0x082b081919082b08, 0x082b082b08080808, 0x082b082b0808082b, 0x082b190808080819,
    0x082b190808081908, 0x082b190808190808, 0x082b190819080808, 0x082b19081919192b,
    0x082b191908080808, 0x082b191919080819, 0x082b1919192b1908, 0x082b192b2b190808,
    0x082b2b0808082b08, 0x082b2b08082b0808, 0x082b2b082b191908, 0x082b2b2b19081908,
    0x1908080808080819, 0x1908080808081908, 0x1908080808190808, 0x1908080808192b08,
    0x19080808082b0819, 0x19080808082b1908, 0x1908080819080808, 0x1908080819082b08,
    0x190808081919192b, 0x19080808192b0808, 0x190808082b080819, 0x190808082b081908,
    0x190808082b190808, 0x1908081908080808, 0x19080819082b0808, 0x19080819192b0819,
    0x190808192b080808, 0x190808192b081919, 0x1908082b08080819, 0x1908082b08190808,
    0x1908082b19082b08, 0x1908082b1919192b, 0x1908082b192b2b08, 0x1908190808080808,
    0x1908190808082b08, 0x19081908082b0808, 0x190819082b080808, 0x190819082b192b19,
    0x190819190819082b, 0x19081919082b1908, 0x1908192b08080808, 0x19082b0808080819,
    0x19082b0808081908, 0x19082b0808190808, 0x19082b0819080808, 0x19082b0819081919,
    0x19082b1908080808, 0x19082b1919192b08, 0x19082b19192b0819, 0x19082b192b08082b,
    0x19082b2b19081919, 0x19082b2b2b190808, 0x1919080808080808, 0x1919080808082b08,
    0x1919080808190819, 0x1919080808192b19, 0x19190808082b0808, 0x191908082b080808,
    0x191908082b082b08, 0x1919081908081908, 0x191908191908082b, 0x191908192b2b1908,
    0x1919082b2b190819, 0x191919082b190808, 0x191919082b19082b, 0x1919191908082b2b,
    0x1919192b08080819, 0x1919192b19191908, 0x19192b0808080808, 0x19192b0808190819,
    0x19192b0808192b19, 0x19192b08192b1908, 0x19192b1919080808, 0x19192b2b08082b08,
    0x192b080808081908, 0x192b080808190808, 0x192b080819080808, 0x192b0808192b2b08,
    0x192b081908080808, 0x192b081919191919, 0x192b082b08192b08, 0x192b082b192b0808,
    0x192b190808080808, 0x192b190808081919, 0x192b191908190808, 0x192b19190819082b,
    0x192b19192b081908, 0x192b2b081908082b, 0x2b08080808080808, 0x2b0808080808082b,
    0x2b08080808082b2b, 0x2b08080819080819, 0x2b0808082b08082b, 0x2b08081908081908,
    0x2b08081908192b08, 0x2b08081919080808, 0x2b08082b08190819, 0x2b08190808080819,
    0x2b08190808081908, 0x2b08190808190808, 0x2b08190808191919, 0x2b08190819080808,
    0x2b081908192b0808, 0x2b08191908080808, 0x2b0819191908192b, 0x2b0819192b191908,
    0x2b08192b08082b19, 0x2b08192b19080808, 0x2b08192b192b0808, 0x2b082b080808082b,
    0x2b082b1908081908, 0x2b082b2b08190819, 0x2b19080808081908, 0x2b19080808190808,
    0x2b190808082b1908, 0x2b19080819080808, 0x2b1908082b2b0819, 0x2b1908190819192b,
    0x2b1908192b080808, 0x2b19082b19081919, 0x2b19190808080808, 0x2b191908082b082b,
    0x2b19190819081908, 0x2b19191919190819, 0x2b192b082b080819, 0x2b192b19082b0808,
    0x2b2b08080808082b, 0x2b2b080819190808, 0x2b2b08082b081919, 0x2b2b081908082b19,
    0x2b2b082b08080808, 0x2b2b190808192b08, 0x2b2b2b0819190808, 0x2b2b2b1908081908,
};

const uint64_t qp_iq2xs_grid[512] = {
    0x0808080808080808, 0x080808080808082b, 0x0808080808081919, 0x0808080808082b08,
    0x0808080808082b2b, 0x0808080808190819, 0x0808080808191908, 0x080808080819192b,
    0x0808080808192b19, 0x08080808082b0808, 0x08080808082b082b, 0x08080808082b1919,
    0x08080808082b2b08, 0x0808080819080819, 0x0808080819081908, 0x080808081908192b,
    0x0808080819082b19, 0x0808080819190808, 0x080808081919082b, 0x0808080819191919,
    0x0808080819192b08, 0x08080808192b0819, 0x08080808192b1908, 0x080808082b080808,
    0x080808082b08082b, 0x080808082b081919, 0x080808082b082b08, 0x080808082b190819,
    0x080808082b191908, 0x080808082b192b19, 0x080808082b2b0808, 0x0808081908080819,
    0x0808081908081908, 0x080808190808192b, 0x0808081908082b19, 0x0808081908190808,
    0x080808190819082b, 0x0808081908191919, 0x0808081908192b08, 0x0808081908192b2b,
    0x08080819082b0819, 0x08080819082b1908, 0x0808081919080808, 0x080808191908082b,
    0x0808081919081919, 0x0808081919082b08, 0x0808081919190819, 0x0808081919191908,
    0x08080819192b0808, 0x08080819192b2b08, 0x080808192b080819, 0x080808192b081908,
    0x080808192b190808, 0x0808082b08080808, 0x0808082b0808082b, 0x0808082b08081919,
    0x0808082b08082b08, 0x0808082b08190819, 0x0808082b08191908, 0x0808082b082b0808,
    0x0808082b19080819, 0x0808082b19081908, 0x0808082b19190808, 0x0808082b19191919,
    0x0808082b2b080808, 0x0808082b2b082b2b, 0x0808190808080819, 0x0808190808081908,
    0x080819080808192b, 0x0808190808082b19, 0x0808190808190808, 0x080819080819082b,
    0x0808190808191919, 0x0808190808192b08, 0x08081908082b0819, 0x08081908082b1908,
    0x0808190819080808, 0x080819081908082b, 0x0808190819081919, 0x0808190819082b08,
    0x0808190819190819, 0x0808190819191908, 0x080819081919192b, 0x08081908192b0808,
    0x080819082b080819, 0x080819082b081908, 0x080819082b190808, 0x0808191908080808,
    0x080819190808082b, 0x0808191908081919, 0x0808191908082b08, 0x0808191908190819,
    0x0808191908191908, 0x08081919082b0808, 0x0808191919080819, 0x0808191919081908,
    0x0808191919190808, 0x08081919192b0819, 0x080819192b080808, 0x0808192b08080819,
    0x0808192b08081908, 0x0808192b08190808, 0x0808192b082b192b, 0x0808192b19080808,
    0x0808192b1908082b, 0x0808192b2b081908, 0x08082b0808080808, 0x08082b080808082b,
    0x08082b0808081919, 0x08082b0808082b08, 0x08082b0808082b2b, 0x08082b0808190819,
    0x08082b0808191908, 0x08082b08082b0808, 0x08082b08082b1919, 0x08082b0819080819,
    0x08082b0819081908, 0x08082b0819190808, 0x08082b0819192b08, 0x08082b082b080808,
    0x08082b082b2b0808, 0x08082b082b2b2b2b, 0x08082b1908080819, 0x08082b1908081908,
    0x08082b1908190808, 0x08082b1919080808, 0x08082b192b080819, 0x08082b192b082b19,
    0x08082b2b08080808, 0x08082b2b082b0808, 0x08082b2b082b2b08, 0x08082b2b2b19192b,
    0x08082b2b2b2b0808, 0x0819080808080819, 0x0819080808081908, 0x081908080808192b,
    0x0819080808082b19, 0x0819080808190808, 0x081908080819082b, 0x0819080808191919,
    0x0819080808192b08, 0x08190808082b0819, 0x08190808082b1908, 0x0819080819080808,
    0x081908081908082b, 0x0819080819081919, 0x0819080819082b08, 0x0819080819190819,
    0x0819080819191908, 0x08190808192b0808, 0x08190808192b2b2b, 0x081908082b080819,
    0x081908082b081908, 0x081908082b190808, 0x0819081908080808, 0x081908190808082b,
    0x0819081908081919, 0x0819081908082b08, 0x0819081908190819, 0x0819081908191908,
    0x08190819082b0808, 0x0819081919080819, 0x0819081919081908, 0x0819081919190808,
    0x081908192b080808, 0x081908192b191908, 0x081908192b19192b, 0x0819082b08080819,
    0x0819082b08081908, 0x0819082b0808192b, 0x0819082b08190808, 0x0819082b19080808,
    0x0819082b192b0808, 0x0819190808080808, 0x081919080808082b, 0x0819190808081919,
    0x0819190808082b08, 0x0819190808190819, 0x0819190808191908, 0x08191908082b0808,
    0x0819190819080819, 0x0819190819081908, 0x0819190819082b19, 0x0819190819190808,
    0x08191908192b1908, 0x081919082b080808, 0x0819191908080819, 0x0819191908081908,
    0x0819191908190808, 0x0819191919080808, 0x0819192b08080808, 0x0819192b08191908,
    0x0819192b19082b19, 0x08192b0808080819, 0x08192b0808081908, 0x08192b0808190808,
    0x08192b080819082b, 0x08192b0819080808, 0x08192b0819191908, 0x08192b082b08192b,
    0x08192b1908080808, 0x08192b1908081919, 0x08192b19192b192b, 0x08192b2b19190819,
    0x08192b2b2b2b2b19, 0x082b080808080808, 0x082b08080808082b, 0x082b080808081919,
    0x082b080808082b08, 0x082b080808082b2b, 0x082b080808190819, 0x082b080808191908,
    0x082b0808082b0808, 0x082b080819080819, 0x082b080819081908, 0x082b080819190808,
    0x082b08082b080808, 0x082b08082b2b0808, 0x082b081908080819, 0x082b081908081908,
    0x082b081908190808, 0x082b081919080808, 0x082b081919082b08, 0x082b0819192b1919,
    0x082b082b08080808, 0x082b082b082b082b, 0x082b082b2b080808, 0x082b082b2b2b2b08,
    0x082b190808080819, 0x082b190808081908, 0x082b190808190808, 0x082b1908082b2b19,
    0x082b190819080808, 0x082b191908080808, 0x082b191919080819, 0x082b19191919082b,
    0x082b19192b192b19, 0x082b192b08080819, 0x082b192b08192b2b, 0x082b192b2b2b192b,
    0x082b2b0808080808, 0x082b2b0808082b08, 0x082b2b0808082b2b, 0x082b2b08082b0808,
    0x082b2b0819191919, 0x082b2b082b082b08, 0x082b2b082b2b082b, 0x082b2b19192b2b08,
    0x082b2b192b190808, 0x082b2b2b08082b08, 0x082b2b2b082b0808, 0x082b2b2b2b08082b,
    0x082b2b2b2b082b08, 0x082b2b2b2b082b2b, 0x1908080808080819, 0x1908080808081908,
    0x190808080808192b, 0x1908080808082b19, 0x1908080808190808, 0x190808080819082b,
    0x1908080808191919, 0x1908080808192b08, 0x19080808082b0819, 0x19080808082b1908,
    0x1908080819080808, 0x190808081908082b, 0x1908080819081919, 0x1908080819082b08,
    0x1908080819082b2b, 0x1908080819190819, 0x1908080819191908, 0x19080808192b0808,
    0x19080808192b1919, 0x190808082b080819, 0x190808082b081908, 0x190808082b190808,
    0x1908081908080808, 0x190808190808082b, 0x1908081908081919, 0x1908081908082b08,
    0x1908081908190819, 0x1908081908191908, 0x19080819082b0808, 0x1908081919080819,
    0x1908081919081908, 0x1908081919190808, 0x190808192b080808, 0x190808192b081919,
    0x190808192b2b082b, 0x1908082b08080819, 0x1908082b08081908, 0x1908082b08190808,
    0x1908082b0819082b, 0x1908082b082b2b19, 0x1908082b19080808, 0x1908190808080808,
    0x190819080808082b, 0x1908190808081919, 0x1908190808082b08, 0x1908190808190819,
    0x1908190808191908, 0x1908190808192b19, 0x19081908082b0808, 0x1908190819080819,
    0x1908190819081908, 0x1908190819190808, 0x190819082b080808, 0x190819082b191908,
    0x1908191908080819, 0x1908191908081908, 0x1908191908190808, 0x19081919082b1908,
    0x1908191919080808, 0x190819192b192b2b, 0x1908192b08080808, 0x1908192b08082b2b,
    0x1908192b19081908, 0x1908192b19190808, 0x19082b0808080819, 0x19082b0808081908,
    0x19082b0808190808, 0x19082b0819080808, 0x19082b0819081919, 0x19082b0819191908,
    0x19082b08192b082b, 0x19082b1908080808, 0x19082b1908190819, 0x19082b1919081908,
    0x19082b1919190808, 0x19082b19192b2b19, 0x19082b2b08081908, 0x1919080808080808,
    0x191908080808082b, 0x1919080808081919, 0x1919080808082b08, 0x1919080808190819,
    0x1919080808191908, 0x19190808082b0808, 0x19190808082b2b08, 0x1919080819080819,
    0x1919080819081908, 0x1919080819190808, 0x191908082b080808, 0x1919081908080819,
    0x1919081908081908, 0x1919081908190808, 0x1919081908191919, 0x1919081919080808,
    0x191908191908082b, 0x1919082b08080808, 0x1919082b19081908, 0x1919082b2b2b2b2b,
    0x1919190808080819, 0x1919190808081908, 0x1919190808190808, 0x19191908082b0819,
    0x1919190819080808, 0x19191908192b0808, 0x191919082b080819, 0x191919082b2b0819,
    0x1919191908080808, 0x1919191908082b08, 0x191919192b080808, 0x191919192b082b08,
    0x1919192b082b0819, 0x1919192b192b2b08, 0x1919192b2b2b0819, 0x19192b0808080808,
    0x19192b0808191908, 0x19192b0819080819, 0x19192b0819190808, 0x19192b082b192b19,
    0x19192b1908192b2b, 0x19192b1919080808, 0x19192b191908082b, 0x19192b2b2b081919,
    0x192b080808080819, 0x192b080808081908, 0x192b080808190808, 0x192b080819080808,
    0x192b080819191908, 0x192b0808192b082b, 0x192b08082b08192b, 0x192b08082b2b2b19,
    0x192b081908080808, 0x192b082b082b1908, 0x192b082b19082b2b, 0x192b082b2b19082b,
    0x192b190808080808, 0x192b19080819192b, 0x192b191908190808, 0x192b191919080808,
    0x192b191919081919, 0x192b19192b2b1908, 0x192b2b0808080819, 0x192b2b08192b2b2b,
    0x192b2b19082b1919, 0x192b2b2b0808192b, 0x192b2b2b19191908, 0x192b2b2b192b082b,
    0x2b08080808080808, 0x2b0808080808082b, 0x2b08080808081919, 0x2b08080808082b08,
    0x2b08080808190819, 0x2b08080808191908, 0x2b080808082b0808, 0x2b080808082b2b2b,
    0x2b08080819080819, 0x2b08080819081908, 0x2b08080819190808, 0x2b0808082b080808,
    0x2b0808082b08082b, 0x2b0808082b2b2b08, 0x2b0808082b2b2b2b, 0x2b08081908080819,
    0x2b08081908081908, 0x2b0808190808192b, 0x2b08081908190808, 0x2b08081919080808,
    0x2b08081919190819, 0x2b08081919192b19, 0x2b08082b08080808, 0x2b08082b082b0808,
    0x2b08082b2b080808, 0x2b08082b2b08082b, 0x2b08082b2b2b0808, 0x2b08082b2b2b2b08,
    0x2b08190808080819, 0x2b08190808081908, 0x2b08190808190808, 0x2b0819080819082b,
    0x2b08190808191919, 0x2b08190819080808, 0x2b081908192b0808, 0x2b0819082b082b19,
    0x2b08191908080808, 0x2b08191919081908, 0x2b0819192b2b1919, 0x2b08192b08192b08,
    0x2b08192b192b2b2b, 0x2b082b0808080808, 0x2b082b0808082b08, 0x2b082b08082b1919,
    0x2b082b0819192b2b, 0x2b082b082b080808, 0x2b082b082b08082b, 0x2b082b082b2b2b08,
    0x2b082b190808192b, 0x2b082b2b082b082b, 0x2b082b2b2b080808, 0x2b082b2b2b082b08,
    0x2b082b2b2b19192b, 0x2b082b2b2b2b2b08, 0x2b19080808080819, 0x2b19080808081908,
    0x2b19080808190808, 0x2b19080819080808, 0x2b1908081919192b, 0x2b1908082b081908,
    0x2b19081908080808, 0x2b190819082b082b, 0x2b190819192b1908, 0x2b19082b1919192b,
    0x2b19082b2b082b19, 0x2b19190808080808, 0x2b19190808081919, 0x2b19190819081908,
    0x2b19190819190808, 0x2b19190819192b08, 0x2b191919082b2b19, 0x2b1919192b190808,
    0x2b1919192b19082b, 0x2b19192b19080819, 0x2b192b0819190819, 0x2b192b082b2b192b,
    0x2b192b1919082b19, 0x2b192b2b08191919, 0x2b192b2b192b0808, 0x2b2b080808080808,
    0x2b2b08080808082b, 0x2b2b080808082b08, 0x2b2b080808082b2b, 0x2b2b0808082b0808,
    0x2b2b0808082b2b2b, 0x2b2b08082b2b0808, 0x2b2b081919190819, 0x2b2b081919192b19,
    0x2b2b08192b2b192b, 0x2b2b082b08080808, 0x2b2b082b0808082b, 0x2b2b082b08082b08,
    0x2b2b082b082b2b2b, 0x2b2b082b2b080808, 0x2b2b082b2b2b0808, 0x2b2b190819080808,
    0x2b2b19082b191919, 0x2b2b192b192b1919, 0x2b2b192b2b192b08, 0x2b2b2b0808082b2b,
    0x2b2b2b08082b0808, 0x2b2b2b08082b082b, 0x2b2b2b08082b2b08, 0x2b2b2b082b2b0808,
    0x2b2b2b082b2b2b08, 0x2b2b2b1908081908, 0x2b2b2b192b081908, 0x2b2b2b192b08192b,
    0x2b2b2b2b082b2b08, 0x2b2b2b2b082b2b2b, 0x2b2b2b2b2b190819, 0x2b2b2b2b2b2b2b2b,
};

#define KMAP_SIZE QP_IQ2_KMAP_SIZE
typedef qp_iq2_tables iq2_tables;

static iq2_tables t_xxs = { qp_iq2xxs_grid, 256, NULL, NULL, NULL, NULL, NULL };
static iq2_tables t_xs = { qp_iq2xs_grid, 512, NULL, NULL, NULL, NULL, NULL };
static pthread_once_t once_xxs = PTHREAD_ONCE_INIT, once_xs = PTHREAD_ONCE_INIT;

static int byte_level(uint8_t b)
{
    return b == 8 ? 0 : b == 0x19 ? 1 : 2;
}

/* a key whose eight 2-bit fields are all <= 2 */
static int key_in_range(int u)
{
    for (int k = 0; k < 8; ++k)
        if (((u >> 2 * k) & 3) == 3)
            return 0;
    return 1;
}

/* The grid points at the nwant smallest squared distances from key u, in
 * (distance, index) order (qsort by that pair, as ggml does, gives the same
 * list: indices are distinct) -> out; returns their count. */
static int neighbours_of(const iq2_tables *t, int u, int nwant, uint16_t *out)
{
    int8_t p[8];
    for (int k = 0; k < 8; ++k)
        p[k] = (int8_t)(2 * ((u >> 2 * k) & 3) + 1);
    int d2[512];
    for (int j = 0; j < t->n; ++j) {
        int s = 0;
        for (int k = 0; k < 8; ++k)
            s += (t->pos[j][k] - p[k]) * (t->pos[j][k] - p[k]);
        d2[j] = s;
    }
    int n = 0, last = -1;
    for (int w = 0; w < nwant; ++w) {
        int dmin = INT32_MAX;
        for (int j = 0; j < t->n; ++j)
            if (d2[j] > last && d2[j] < dmin)
                dmin = d2[j];
        if (dmin == INT32_MAX)
            break;
        for (int j = 0; j < t->n; ++j)
            if (d2[j] == dmin)
                out[n++] = (uint16_t)j;
        last = dmin;
    }
    return n;
}

static void iq2_build(iq2_tables *t, int nwant)
{
    t->pos = malloc((size_t)t->n * sizeof *t->pos);
    t->kmap = malloc(KMAP_SIZE * sizeof *t->kmap);
    if (!t->pos || !t->kmap)
        abort();   /* a few hundred KB at start-up */
    for (int i = 0; i < KMAP_SIZE; ++i)
        t->kmap[i] = -1;
    for (int j = 0; j < t->n; ++j) {
        int u = 0;
        for (int k = 0; k < 8; ++k) {
            const int l = byte_level((uint8_t)(t->grid[j] >> 8 * k));
            t->pos[j][k] = (int8_t)(2 * l + 1);
            u |= l << 2 * k;
        }
        t->kmap[u] = j;
    }
    uint16_t *tmp = malloc(512 * sizeof *tmp);
    int total = 0;
    if (!tmp)
        abort();
    for (int u = 0; u < KMAP_SIZE; ++u)
        if (t->kmap[u] < 0 && key_in_range(u))
            total += 1 + neighbours_of(t, u, nwant, tmp);
    t->neighbours = malloc((size_t)total * sizeof *t->neighbours);
    if (!t->neighbours)
        abort();
    int counter = 0;
    for (int u = 0; u < KMAP_SIZE; ++u) {
        if (t->kmap[u] >= 0 || !key_in_range(u))
            continue;
        const int n = neighbours_of(t, u, nwant, t->neighbours + counter + 1);
        t->kmap[u] = -(counter + 1);
        t->neighbours[counter] = (uint16_t)n;
        counter += 1 + n;
    }
    free(tmp);
    /* the float copy for the fast search */
    t->coord_off = malloc(KMAP_SIZE * sizeof *t->coord_off);
    int nf = 0;
    if (!t->coord_off)
        abort();
    for (int u = 0; u < KMAP_SIZE; ++u)
        if (t->kmap[u] < 0 && key_in_range(u))
            nf += 8 * ((t->neighbours[-t->kmap[u] - 1] + 7) & ~7);
    t->coords = calloc((size_t)nf, sizeof *t->coords);
    if (!t->coords)
        abort();
    nf = 0;
    for (int u = 0; u < KMAP_SIZE; ++u) {
        t->coord_off[u] = -1;
        if (t->kmap[u] >= 0 || !key_in_range(u))
            continue;
        const uint16_t *nb = t->neighbours - t->kmap[u] - 1;
        const int npad = (nb[0] + 7) & ~7;
        t->coord_off[u] = nf;
        for (int j = 0; j < nb[0]; ++j)
            for (int i = 0; i < 8; ++i)
                t->coords[nf + i * npad + j] = t->pos[nb[1 + j]][i];
        nf += 8 * npad;
    }
}

static void build_xxs(void) { iq2_build(&t_xxs, 2); }
static void build_xs(void) { iq2_build(&t_xs, 2); }

/* iq2_find_best_neighbour (reference) */
int qp_iq2_best_neighbour(const iq2_tables *t, int u, const float *xval, const float *w, float scale, int8_t *L)
{
    const uint16_t *nb = t->neighbours - t->kmap[u] - 1;
    float best_d2 = FLT_MAX;
    int grid_index = -1;
    for (int j = 1; j <= nb[0]; ++j) {
        const int8_t *pg = t->pos[nb[j]];
        float d2 = 0;
        for (int i = 0; i < 8; ++i) {
            const float q = pg[i];
            const float diff = scale * q - xval[i];
            d2 += w[i] * diff * diff;
        }
        if (d2 < best_d2) {
            best_d2 = d2;
            grid_index = nb[j];
        }
    }
    if (grid_index < 0)
        grid_index = nb[1];   /* ggml asserts; only NaN distances get here */
    for (int i = 0; i < 8; ++i)
        L[i] = (int8_t)((t->pos[grid_index][i] - 1) / 2);
    return grid_index;
}

/* 8 levels -> their key, or -1 when a level is outside 0..2 */
static int levels_key(const int8_t *L)
{
    int u = 0;
    for (int i = 0; i < 8; ++i) {
        if (L[i] < 0 || L[i] > KMAXQ - 1)
            return -1;
        u |= L[i] << 2 * i;
    }
    return u;
}

/* levels of 8 magnitudes at inverse scale id, clamped to 0..2 -> L; key */
static int snap8(const float *xval, float id, int8_t *L)
{
    int u = 0;
    for (int i = 0; i < 8; ++i) {
        const int l = qp_nearest_int(0.5f * (id * xval[i] - 1));
        L[i] = (int8_t)QP_MAX(0, QP_MIN(KMAXQ - 1, l));
        u |= L[i] << 2 * i;
    }
    return u;
}

/* magnitudes of nw weights and their sign bytes (7 bits each, per 8):
 * an odd count of negatives in 8 flips the least important one */
static void magnitudes(const float *xb, const float *weight, int nw, float *xval, uint8_t *block_signs)
{
    for (int k = 0; k < nw / 8; ++k) {
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
}

static void fit_sums(const float *xval, const float *weight, const int8_t *L, int nw, float *sumqx, float *sumq2)
{
    float a = 0, b = 0;
    for (int i = 0; i < nw; ++i) {
        const float w = weight[i];
        const float q = 2 * L[i] + 1;
        a += w * xval[i] * q;
        b += w * q * q;
    }
    *sumqx = a;
    *sumq2 = b;
}

/* the sub-block's error weights qw·sqrt(sigma2 + x²) and their roots */
static void error_weights(const float *xb, const float *qw, float sigma2, int nw, float *weight, float *waux)
{
    for (int i = 0; i < nw; ++i)
        weight[i] = qw[i] * sqrtf(sigma2 + xb[i] * xb[i]);
    for (int i = 0; i < nw; ++i)
        waux[i] = sqrtf(weight[i]);
}

/* ---- IQ2_XXS: quantize_row_iq2_xxs_impl ---- */

static void iq2_xxs_block(const float *xbl, uint8_t *out, const float *qwbl, qp_iq2_nearest_fn nearest)
{
    const iq2_tables *t = &t_xxs;
    float scales[8], weight[32], xval[32], waux[32];
    int8_t L[32], Laux[32];
    uint8_t block_signs[4];
    uint32_t q2[16];
    memset(q2, 0, sizeof q2);

    float max_scale = 0;
    float sumx2 = 0;
    for (int i = 0; i < QP_QK_K; ++i)
        sumx2 += xbl[i] * xbl[i];
    const float sigma2 = sumx2 / QP_QK_K;

    for (int ib = 0; ib < 8; ++ib) {
        const float *xb = xbl + 32 * ib;
        error_weights(xb, qwbl + 32 * ib, sigma2, 32, weight, waux);
        magnitudes(xb, weight, 32, xval, block_signs);
        float max = xval[0];
        for (int i = 1; i < 32; ++i)
            max = QP_MAX(max, xval[i]);
        if (max < GROUP_MAX_EPS_IQ2) {
            scales[ib] = 0;
            continue;   /* indices, signs and scale stay 0 */
        }
        float scale = qp_make_qp_quants(32, KMAXQ + 1, xval, (uint8_t *)L, weight);
        const float eff_max = scale * KMAXQ;
        float best = 0;
        for (int is = -6; is <= 6; ++is) {
            const float id = (2 * KMAXQ - 1 + is * 0.1f) / eff_max;
            const float this_scale = 1 / id;
            for (int k = 0; k < 4; ++k) {
                const int u = snap8(xval + 8 * k, id, Laux + 8 * k);
                if (t->kmap[u] < 0)
                    nearest(t, u, xval + 8 * k, waux + 8 * k, this_scale, Laux + 8 * k);
            }
            float sumqx, sumq2;
            fit_sums(xval, weight, Laux, 32, &sumqx, &sumq2);
            if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
                scale = sumqx / sumq2;
                best = scale * sumqx;
                memcpy(L, Laux, 32);
            }
        }
        if (scale > 0) {
            const float id = 1 / scale;
            for (int k = 0; k < 4; ++k) {
                int8_t Ltmp[8];
                const int u = snap8(xval + 8 * k, id, Ltmp);
                int grid_index = t->kmap[u];
                if (grid_index < 0)
                    grid_index = nearest(t, u, xval + 8 * k, waux + 8 * k, scale, L + 8 * k);
                for (int i = 0; i < 8; ++i)
                    L[8 * k + i] = (int8_t)((t->pos[grid_index][i] - 1) / 2);
            }
            float sumqx, sumq2;
            fit_sums(xval, weight, L, 32, &sumqx, &sumq2);
            if (sumq2 > 0)
                scale = sumqx / sumq2;
        }
        if (scale < 0) {   /* ggml's guard; magnitudes and positive levels cannot get here */
            scale = -scale;
            for (int k = 0; k < 4; ++k)
                block_signs[k] = (uint8_t)(~block_signs[k] & 127);
        }
        int g[4], off = 0;
        for (int k = 0; k < 4; ++k) {
            /* ggml's uint16_t key; levels outside 0..2 come only from
             * make_qp_quants when no trial scale was accepted (up to 4, and
             * negative for the magnitude the parity flip made negative:
             * ggml shifts the negative int8, i.e. its two's complement bits) */
            uint16_t u = 0;
            for (int i = 0; i < 8; ++i)
                u |= (uint16_t)((unsigned)L[8 * k + i] << 2 * i);
            g[k] = u < KMAP_SIZE ? t->kmap[u] : -1;
            off |= g[k] < 0;
        }
        if (off) {
            /* ggml aborts here ("Oops: found point not on grid", or reads
             * past its map): only a sub-block whose error weights are all 0
             * (scale 0, no trial accepted) can get here; written as zero */
            scales[ib] = 0;
            continue;
        }
        for (int k = 0; k < 4; ++k) {
            q2[2 * ib + 0] |= (uint32_t)g[k] << 8 * k;
            q2[2 * ib + 1] |= (uint32_t)block_signs[k] << 7 * k;
        }
        scales[ib] = scale;
        max_scale = QP_MAX(max_scale, scale);
    }

    if (!max_scale) {
        memset(out, 0, 66);
        return;
    }
    const float d = max_scale / 31;
    const uint16_t dh = QP_FP16(d);
    const float id = 1 / d;
    for (int ib = 0; ib < 8; ++ib) {
        int l = qp_nearest_int(0.5f * (id * scales[ib] - 1));
        l = QP_MAX(0, QP_MIN(15, l));
        q2[2 * ib + 1] |= (uint32_t)l << 28;
    }
    memcpy(out, &dh, 2);
    for (int i = 0; i < 16; ++i)
        for (int b = 0; b < 4; ++b)
            out[2 + 4 * i + b] = (uint8_t)(q2[i] >> 8 * b);
}

void qp_iq2_xxs_row_search(const float *x, void *vy, int64_t n, const float *qw, qp_iq2_nearest_fn nearest)
{
    pthread_once(&once_xxs, build_xxs);
    uint8_t *y = vy;
    for (int64_t ib = 0; ib < n / QP_QK_K; ++ib)
        iq2_xxs_block(x + QP_QK_K * ib, y + 66 * ib, qw + QP_QK_K * ib, nearest);
}

void qp_iq2_xxs_row(const float *x, void *y, int64_t n, const float *qw)
{
    qp_iq2_xxs_row_search(x, y, n, qw, qp_iq2_best_neighbour);
}

/* ---- IQ2_XS: quantize_row_iq2_xs_impl ---- */

/* L: the levels of the previous 16-weight sub-block of the row.  At
 * c392e50 ggml does not reset them before the trial search, so a sub-block
 * for which no trial is accepted (all-zero error weights) is written with
 * its predecessor's levels; ggml leaves them uninitialised at a row's
 * start, here they start at zero. */
static void iq2_xs_block(const float *xbl, uint8_t *out, const float *qwbl, int8_t *L, qp_iq2_nearest_fn nearest)
{
    const iq2_tables *t = &t_xs;
    float scales[16], weight[16], xval[16], waux[16];
    int8_t Laux[16];
    bool is_on_grid[2], is_on_grid_aux[2];
    uint8_t block_signs[2];
    uint16_t q2[32];
    uint8_t sc[8];
    memset(q2, 0, sizeof q2);
    memset(sc, 0, sizeof sc);

    float max_scale = 0;
    float sumx2 = 0;
    for (int i = 0; i < QP_QK_K; ++i)
        sumx2 += xbl[i] * xbl[i];
    const float sigma2 = sumx2 / QP_QK_K;

    for (int ib = 0; ib < 16; ++ib) {
        const float *xb = xbl + 16 * ib;
        error_weights(xb, qwbl + 16 * ib, sigma2, 16, weight, waux);
        magnitudes(xb, weight, 16, xval, block_signs);
        float max = xval[0];
        for (int i = 1; i < 16; ++i)
            max = QP_MAX(max, xval[i]);
        if (max < GROUP_MAX_EPS_IQ2) {
            scales[ib] = 0;
            memset(L, 0, 16);
            continue;
        }
        float best = 0;
        float scale = max / (2 * KMAXQ - 1);
        is_on_grid[0] = is_on_grid[1] = true;
        for (int is = -9; is <= 9; ++is) {
            const float id = (2 * KMAXQ - 1 + is * 0.1f) / max;
            const float this_scale = 1 / id;
            for (int k = 0; k < 2; ++k) {
                const int u = snap8(xval + 8 * k, id, Laux + 8 * k);
                is_on_grid_aux[k] = t->kmap[u] >= 0;
                if (t->kmap[u] < 0)
                    nearest(t, u, xval + 8 * k, waux + 8 * k, this_scale, Laux + 8 * k);
            }
            float sumqx, sumq2;
            fit_sums(xval, weight, Laux, 16, &sumqx, &sumq2);
            if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
                scale = sumqx / sumq2;
                best = scale * sumqx;
                memcpy(L, Laux, 16);
                is_on_grid[0] = is_on_grid_aux[0];
                is_on_grid[1] = is_on_grid_aux[1];
            }
        }
        if ((!is_on_grid[0] || !is_on_grid[1]) && scale > 0) {
            const float id = 1 / scale;
            for (int k = 0; k < 2; ++k) {
                if (is_on_grid[k])
                    continue;
                const int u = snap8(xval + 8 * k, id, L + 8 * k);
                if (t->kmap[u] < 0)
                    nearest(t, u, xval + 8 * k, waux + 8 * k, scale, L + 8 * k);
            }
            float sumqx, sumq2;
            fit_sums(xval, weight, L, 16, &sumqx, &sumq2);
            if (sumq2 > 0)
                scale = sumqx / sumq2;
        }
        if (scale < 0) {
            scale = -scale;
            for (int k = 0; k < 2; ++k)
                block_signs[k] = (uint8_t)(~block_signs[k] & 127);
        }
        for (int k = 0; k < 2; ++k) {
            const int g = t->kmap[levels_key(L + 8 * k)];
            if (g < 0)
                abort();   /* ggml: "Oops: found point not on grid" (cannot happen: L comes from the grid) */
            q2[2 * ib + k] = (uint16_t)(g | block_signs[k] << 9);
        }
        scales[ib] = scale;
        max_scale = QP_MAX(max_scale, scale);
    }

    if (!max_scale) {
        memset(out, 0, 74);
        return;
    }
    const float d = max_scale / 31;
    const uint16_t dh = QP_FP16(d);
    const float id = 1 / d;
    for (int ib = 0; ib < 16; ++ib) {
        int l = qp_nearest_int(0.5f * (id * scales[ib] - 1));
        l = QP_MAX(0, QP_MIN(15, l));
        sc[ib / 2] |= (uint8_t)(ib % 2 ? l << 4 : l);
    }
    memcpy(out, &dh, 2);
    for (int i = 0; i < 32; ++i) {
        out[2 + 2 * i] = (uint8_t)q2[i];
        out[3 + 2 * i] = (uint8_t)(q2[i] >> 8);
    }
    memcpy(out + 66, sc, 8);
}

void qp_iq2_xs_row_search(const float *x, void *vy, int64_t n, const float *qw, qp_iq2_nearest_fn nearest)
{
    pthread_once(&once_xs, build_xs);
    uint8_t *y = vy;
    int8_t L[16];
    memset(L, 0, sizeof L);
    for (int64_t ib = 0; ib < n / QP_QK_K; ++ib)
        iq2_xs_block(x + QP_QK_K * ib, y + 74 * ib, qw + QP_QK_K * ib, L, nearest);
}

void qp_iq2_xs_row(const float *x, void *y, int64_t n, const float *qw)
{
    qp_iq2_xs_row_search(x, y, n, qw, qp_iq2_best_neighbour);
}
