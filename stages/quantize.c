/* quantize: turns a model artifact into a quantized model artifact.
 * Declared here so recipes validate; the formats arrive with issues #4/#5. */
#include "stages/kinds.h"

static const qp_param_spec params[] = {
    {"method", QP_P_STRING, NULL, "rtn|gguf|nf4|int8|gptq|awq", 0, -1, QP_PF_REQUIRED,
     "quantization algorithm"},
    {"bits", QP_P_INT, "4", NULL, 2, 8, 0, "bits per weight (rtn, gptq, awq)"},
    {"group_size", QP_P_INT, "128", "-1|32|64|128|256", 0, -1, 0,
     "weights per scale along the input dimension (-1 = per output channel)"},
    {"sym", QP_P_BOOL, "false", NULL, 0, -1, 0, "symmetric grid (no zero point)"},
    {"type", QP_P_STRING, "Q4_K_M",
     "Q8_0|Q4_0|Q4_1|Q5_0|Q5_1|Q2_K|Q3_K|Q4_K|Q5_K|Q6_K|Q3_K_M|Q4_K_M|Q5_K_M", 0, -1, 0,
     "llama.cpp block type or mix (method gguf)"},
    {"imatrix", QP_P_PATH, "", NULL, 0, -1, QP_PF_CONTENT,
     "llama.cpp imatrix.dat to weight the error (instead of a calibrate input)"},
    {"mse", QP_P_BOOL, "false", NULL, 0, -1, 0, "MSE-optimal clipping search per group"},
    {"damp_percent", QP_P_NUMBER, "0.01", NULL, 0, 1, 0, "GPTQ dampening, fraction of mean diag(H)"},
    {"act_order", QP_P_BOOL, "false", NULL, 0, -1, 0, "GPTQ: columns in descending diag(H)"},
    {"static_groups", QP_P_BOOL, "false", NULL, 0, -1, 0, "GPTQ: group scales fixed before updates"},
    {"sequential", QP_P_BOOL, "true", NULL, 0, -1, 0,
     "GPTQ/AWQ: block i is calibrated on outputs of quantized blocks < i"},
    {"true_sequential", QP_P_BOOL, "true", NULL, 0, -1, 0, "GPTQ: q,k,v -> o -> gate,up -> down"},
    {"duo_scaling", QP_P_STRING, "auto", "auto|true|false", 0, -1, 0, "AWQ scale form"},
    {"clip", QP_P_BOOL, "true", NULL, 0, -1, 0, "AWQ clip search"},
    {"double_quant", QP_P_BOOL, "false", NULL, 0, -1, 0, "NF4: quantize the absmax scales"},
    {"override", QP_P_MAP_LIST, "[]", NULL, 0, -1, 0,
     "per-tensor overrides [{match: GLOB, bits|type: …}]"},
    {"skip", QP_P_STRING_LIST, "[]", NULL, 0, -1, 0, "tensor globs kept at source precision"},
    {NULL, 0, NULL, NULL, 0, 0, 0, NULL},
};

const qp_stage_kind qp_stage_quantize = {
    .name = "quantize", .version = 1,
    .doc = "quantize a model (RTN, llama.cpp types, NF4, INT8, GPTQ, AWQ)",
    .params = params,
    .accepts = QP_ART_MODEL | QP_ART_CALIB, .min_inputs = 1, .max_inputs = 2,
    .output = QP_ART_QMODEL,
    .implemented = 0,
};
