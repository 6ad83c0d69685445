/* Bit packing of the GPTQ v1 and AutoAWQ GEMM checkpoint tensors (layouts
 * in stages/package_hf.h).  GPTQ's 2/4/8-bit packings and its 3-bit one
 * (AutoGPTQ's pack: 10⅔ codes per word, codes 10 and 21 of every 32
 * straddling two words) are all the same little-endian bit stream of
 * `bits`-bit fields, so one accumulator loop packs every width. */
#include "stages/package_hf.h"

#include <stddef.h>

int qp_hf_gptq_bits_ok(int bits)
{
    return bits == 2 || bits == 3 || bits == 4 || bits == 8;
}

/* Packs n fields (src[0], src[stride], …, each & mask) as a little-endian
 * bit stream into words dst[0], dst[dst_stride], …; n·bits % 32 == 0. */
static void pack_stream(uint32_t *dst, int64_t dst_stride, const uint8_t *src, int64_t stride, int64_t n, int bits,
                        int delta)
{
    const unsigned mask = (1u << bits) - 1;
    uint64_t acc = 0;
    int have = 0;
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) {
        acc |= (uint64_t)(((unsigned)src[i * stride] + (unsigned)delta) & mask) << have;
        have += bits;
        if (have >= 32) {
            dst[k++ * dst_stride] = (uint32_t)acc;
            acc >>= 32;
            have -= 32;
        }
    }
}

/* qweight [cols·bits/32, rows]: column r is row r of the codes */
void qp_hf_pack_gptq_qweight(uint32_t *dst, const uint8_t *codes, int64_t rows, int64_t cols, int bits)
{
    for (int64_t r = 0; r < rows; r++)
        pack_stream(dst + r, rows, codes + r * cols, 1, cols, bits, 0);
}

/* qzeros [n_groups, rows·bits/32]: row g is column g of the zeros, minus 1 */
void qp_hf_pack_gptq_qzeros(uint32_t *dst, const uint8_t *zeros, int64_t rows, int64_t n_groups, int bits)
{
    const int64_t words = rows * bits / 32;
    for (int64_t g = 0; g < n_groups; g++)
        pack_stream(dst + g * words, 1, zeros + g, n_groups, rows, bits, -1);
}

/* nibble j of a word holds output 8c + awq_order[j] (AutoAWQ's GEMM order) */
static const int awq_order[8] = {0, 2, 4, 6, 1, 3, 5, 7};

/* qweight [cols, rows/8] */
void qp_hf_pack_awq_qweight(uint32_t *dst, const uint8_t *codes, int64_t rows, int64_t cols)
{
    const int64_t words = rows / 8;
    for (int64_t c = 0; c < words; c++) {
        const uint8_t *row[8];
        for (int j = 0; j < 8; j++)
            row[j] = codes + (8 * c + awq_order[j]) * cols;
        for (int64_t i = 0; i < cols; i++) {
            uint32_t w = 0;
            for (int j = 0; j < 8; j++)
                w |= (uint32_t)(row[j][i] & 15u) << (4 * j);
            dst[i * words + c] = w;
        }
    }
}

/* qzeros [n_groups, rows/8] */
void qp_hf_pack_awq_qzeros(uint32_t *dst, const uint8_t *zeros, int64_t rows, int64_t n_groups)
{
    const int64_t words = rows / 8;
    for (int64_t g = 0; g < n_groups; g++)
        for (int64_t c = 0; c < words; c++) {
            uint32_t w = 0;
            for (int j = 0; j < 8; j++)
                w |= (uint32_t)(zeros[(8 * c + awq_order[j]) * n_groups + g] & 15u) << (4 * j);
            dst[g * words + c] = w;
        }
}

void qp_hf_transpose_u16(uint16_t *dst, const uint16_t *src, int64_t rows, int64_t n_groups)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t g = 0; g < n_groups; g++)
            dst[g * rows + r] = src[r * n_groups + g];
}
