/* ggml tensor types: THE table of ggml type ids (also GGUF tensor type ids),
 * their names, block sizes and bytes per block, from the block structs of
 * ggml-common.h (e.g. Q4_K = d, dmin, scales[12], qs[128] = 144 bytes for 256
 * weights).  The GGUF reader and writer (model/) and the quantizers (quant/,
 * which say which of these types they can produce) both use it. */
#ifndef QP_COMMON_GGML_TYPES_H
#define QP_COMMON_GGML_TYPES_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    QP_GGML_F32 = 0, QP_GGML_F16 = 1, QP_GGML_Q4_0 = 2, QP_GGML_Q4_1 = 3,
    QP_GGML_Q5_0 = 6, QP_GGML_Q5_1 = 7, QP_GGML_Q8_0 = 8, QP_GGML_Q8_1 = 9,
    QP_GGML_Q2_K = 10, QP_GGML_Q3_K = 11, QP_GGML_Q4_K = 12, QP_GGML_Q5_K = 13,
    QP_GGML_Q6_K = 14, QP_GGML_Q8_K = 15,
    QP_GGML_IQ2_XXS = 16, QP_GGML_IQ2_XS = 17, QP_GGML_IQ3_XXS = 18, QP_GGML_IQ1_S = 19,
    QP_GGML_IQ4_NL = 20, QP_GGML_IQ3_S = 21, QP_GGML_IQ2_S = 22, QP_GGML_IQ4_XS = 23,
    QP_GGML_I8 = 24, QP_GGML_I16 = 25, QP_GGML_I32 = 26, QP_GGML_I64 = 27, QP_GGML_F64 = 28,
    QP_GGML_IQ1_M = 29, QP_GGML_BF16 = 30, QP_GGML_TQ1_0 = 34, QP_GGML_TQ2_0 = 35,
} qp_ggml_type;

/* "Q4_K", …; NULL for an id that is not in the table. */
const char *qp_ggml_type_name(uint32_t type);
/* ggml's own spelling, as llama.cpp logs it ("q4_K", "iq4_nl"); NULL if unknown. */
const char *qp_ggml_type_log_name(uint32_t type);
/* Elements per block (1 for plain types) and bytes per block; 0 if unknown. */
uint32_t qp_ggml_block_size(uint32_t type);
uint32_t qp_ggml_type_size(uint32_t type);
/* The id for a name, compared without case ("Q4_K", "q4_k"), or -1. */
int qp_ggml_type_parse(const char *name);

#endif
