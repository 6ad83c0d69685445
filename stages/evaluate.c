/* evaluate: perplexity, KL divergence against a reference stage, and
 * multiple-choice accuracy.  Declared here so recipes validate; the model
 * runtime arrives with issue #3. */
#include "stages/kinds.h"

static const qp_param_spec params[] = {
    {"dataset", QP_P_PATH_LIST, NULL, NULL, 0, -1, QP_PF_REQUIRED | QP_PF_CONTENT,
     "text or JSONL file(s) scored for perplexity"},
    {"field", QP_P_STRING, "text", NULL, 0, -1, 0, "JSONL field holding the text"},
    {"protocol", QP_P_STRING, "windows", "windows|llama.cpp", 0, -1, 0, "perplexity protocol"},
    {"ctx", QP_P_INT, "0", NULL, 0, 1048576, 0, "window length in tokens (0 = model context)"},
    {"max_tokens", QP_P_INT, "0", NULL, 0, 1e15, 0, "stop after this many tokens (0 = all)"},
    {"max_chunks", QP_P_INT, "0", NULL, 0, 1e15, 0, "stop after this many windows (0 = all)"},
    {"mc", QP_P_PATH, "", NULL, 0, -1, QP_PF_CONTENT,
     "multiple-choice JSONL {ctx, endings, label} for acc / acc_norm"},
    {"reference", QP_P_STRING, "", NULL, 0, -1, 0,
     "evaluate stage of the unquantized model: adds KLD, top-1, ppl delta"},
    {NULL, 0, NULL, NULL, 0, 0, 0, NULL},
};

const qp_stage_kind qp_stage_evaluate = {
    .name = "evaluate", .version = 1,
    .doc = "perplexity, KL divergence vs a reference, multiple-choice accuracy",
    .params = params,
    .accepts = QP_ART_MODEL | QP_ART_QMODEL, .min_inputs = 1, .max_inputs = 1,
    .output = QP_ART_METRICS,
    .implemented = 0,
};
