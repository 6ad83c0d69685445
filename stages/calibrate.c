/* calibrate: runs the unquantized model over seeded samples of a dataset and
 * collects, per linear-layer input, the Hessian, mean |x| and mean x² (the
 * importance matrix).  Declared here so recipes validate; the implementation
 * arrives with the calibration work (issue #5). */
#include "stages/kinds.h"

static const qp_param_spec params[] = {
    {"dataset", QP_P_PATH_LIST, NULL, NULL, 0, -1, QP_PF_REQUIRED | QP_PF_CONTENT,
     "text or JSONL file(s) the samples are drawn from"},
    {"field", QP_P_STRING, "text", NULL, 0, -1, 0, "JSONL field holding the text"},
    {"samples", QP_P_INT, "128", NULL, 1, 1000000, 0, "number of sequences"},
    {"seq_len", QP_P_INT, "0", NULL, 0, 1048576, 0, "tokens per sequence (0 = model context)"},
    {"seed", QP_P_INT, "0", NULL, 0, 4294967295.0, 0, "seed of the sample generator"},
    {NULL, 0, NULL, NULL, 0, 0, 0, NULL},
};

const qp_stage_kind qp_stage_calibrate = {
    .name = "calibrate", .version = 1,
    .doc = "collect Hessians, activation statistics and the importance matrix",
    .params = params,
    .accepts = QP_ART_MODEL, .min_inputs = 1, .max_inputs = 1,
    .output = QP_ART_CALIB,
    .implemented = 0,
};
