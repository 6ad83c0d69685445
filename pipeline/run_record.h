/* The run record: what `qpipe run` commits to the provenance branch. */
#ifndef QP_PIPELINE_RUN_RECORD_H
#define QP_PIPELINE_RUN_RECORD_H

#include <jansson.h>

#include "pipeline/recipe.h"

/* Builds the record (recipe path and digest, source commit and dirty flag,
 * qpipe version, vars, per-stage params/inputs/outputs/metrics/timings,
 * verdict, host) and commits it.  QP_ENOTFOUND (with a warning-worthy
 * message) when the recipe is not inside a git repository. */
int qp_run_record_commit(char out_commit[41], const qp_recipe *r, const json_t *stages, const char *verdict,
                         double started_unix, double seconds, const char *branch);

#endif
