/* Every stage kind, defined one per file in stages/. */
#ifndef QP_STAGES_KINDS_H
#define QP_STAGES_KINDS_H

#include "stages/stage.h"

extern const qp_stage_kind qp_stage_fetch;
extern const qp_stage_kind qp_stage_calibrate;
extern const qp_stage_kind qp_stage_quantize;
extern const qp_stage_kind qp_stage_evaluate;
extern const qp_stage_kind qp_stage_gate;
extern const qp_stage_kind qp_stage_package;
extern const qp_stage_kind qp_stage_run;
extern const qp_stage_kind qp_stage_select;

#endif
