/* package: writes a deployable artifact (GGUF, GPTQ/AWQ safetensors) with a
 * model card into `out:`, atomically.  Declared here so recipes validate;
 * the writers arrive with issues #4/#5. */
#include "stages/kinds.h"

static const qp_param_spec params[] = {
    {"format", QP_P_STRING, NULL, "gguf|gptq|awq|safetensors", 0, -1, QP_PF_REQUIRED,
     "output format"},
    {"out", QP_P_PATH, NULL, NULL, 0, -1, QP_PF_REQUIRED, "output directory (replaced atomically)"},
    {"name", QP_P_STRING, "", NULL, 0, -1, 0, "artifact file name (default: recipe name)"},
    {NULL, 0, NULL, NULL, 0, 0, 0, NULL},
};

const qp_stage_kind qp_stage_package = {
    .name = "package", .version = 1,
    .doc = "write GGUF / GPTQ / AWQ files, model card and provenance into out:",
    .params = params,
    .accepts = QP_ART_MODEL | QP_ART_QMODEL | QP_ART_VERDICT | QP_ART_METRICS | QP_ART_CALIB,
    .min_inputs = 1, .max_inputs = -1,
    .output = QP_ART_FILES,
    .implemented = 0,
};
