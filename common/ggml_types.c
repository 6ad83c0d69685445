/* The ggml type table (see ggml_types.h). */
#include "common/ggml_types.h"

#include <strings.h>

static const struct {
    const char *name;    /* GGUF / llama-quantize --help spelling: "Q4_K" */
    const char *lower;   /* ggml_type_name() spelling, in llama.cpp's logs: "q4_K" */
    uint32_t block, bytes;
} ggml_types[] = {
    [QP_GGML_F32] = { "F32", "f32", 1, 4 },
    [QP_GGML_F16] = { "F16", "f16", 1, 2 },
    [QP_GGML_Q4_0] = { "Q4_0", "q4_0", 32, 18 },
    [QP_GGML_Q4_1] = { "Q4_1", "q4_1", 32, 20 },
    [QP_GGML_Q5_0] = { "Q5_0", "q5_0", 32, 22 },
    [QP_GGML_Q5_1] = { "Q5_1", "q5_1", 32, 24 },
    [QP_GGML_Q8_0] = { "Q8_0", "q8_0", 32, 34 },
    [QP_GGML_Q8_1] = { "Q8_1", "q8_1", 32, 36 },
    [QP_GGML_Q2_K] = { "Q2_K", "q2_K", 256, 84 },
    [QP_GGML_Q3_K] = { "Q3_K", "q3_K", 256, 110 },
    [QP_GGML_Q4_K] = { "Q4_K", "q4_K", 256, 144 },
    [QP_GGML_Q5_K] = { "Q5_K", "q5_K", 256, 176 },
    [QP_GGML_Q6_K] = { "Q6_K", "q6_K", 256, 210 },
    [QP_GGML_Q8_K] = { "Q8_K", "q8_K", 256, 292 },
    [QP_GGML_IQ2_XXS] = { "IQ2_XXS", "iq2_xxs", 256, 66 },
    [QP_GGML_IQ2_XS] = { "IQ2_XS", "iq2_xs", 256, 74 },
    [QP_GGML_IQ3_XXS] = { "IQ3_XXS", "iq3_xxs", 256, 98 },
    [QP_GGML_IQ1_S] = { "IQ1_S", "iq1_s", 256, 50 },
    [QP_GGML_IQ4_NL] = { "IQ4_NL", "iq4_nl", 32, 18 },
    [QP_GGML_IQ3_S] = { "IQ3_S", "iq3_s", 256, 110 },
    [QP_GGML_IQ2_S] = { "IQ2_S", "iq2_s", 256, 82 },
    [QP_GGML_IQ4_XS] = { "IQ4_XS", "iq4_xs", 256, 136 },
    [QP_GGML_I8] = { "I8", "i8", 1, 1 },
    [QP_GGML_I16] = { "I16", "i16", 1, 2 },
    [QP_GGML_I32] = { "I32", "i32", 1, 4 },
    [QP_GGML_I64] = { "I64", "i64", 1, 8 },
    [QP_GGML_F64] = { "F64", "f64", 1, 8 },
    [QP_GGML_IQ1_M] = { "IQ1_M", "iq1_m", 256, 56 },
    [QP_GGML_BF16] = { "BF16", "bf16", 1, 2 },
    [QP_GGML_TQ1_0] = { "TQ1_0", "tq1_0", 256, 54 },
    [QP_GGML_TQ2_0] = { "TQ2_0", "tq2_0", 256, 66 },
};
#define N_GGML_TYPES (sizeof(ggml_types) / sizeof(ggml_types[0]))

const char *qp_ggml_type_name(uint32_t type)
{
    return type < N_GGML_TYPES ? ggml_types[type].name : NULL;
}

const char *qp_ggml_type_log_name(uint32_t type)
{
    return type < N_GGML_TYPES ? ggml_types[type].lower : NULL;
}

uint32_t qp_ggml_block_size(uint32_t type)
{
    return type < N_GGML_TYPES ? ggml_types[type].block : 0;
}

uint32_t qp_ggml_type_size(uint32_t type)
{
    return type < N_GGML_TYPES ? ggml_types[type].bytes : 0;
}

int qp_ggml_type_parse(const char *name)
{
    for (uint32_t t = 0; name && t < N_GGML_TYPES; t++)
        if (ggml_types[t].name && strcasecmp(ggml_types[t].name, name) == 0)
            return (int)t;
    return -1;
}
