/* MODEL_CARD.md and provenance.json of a package: what a person or a
 * registry needs to trust the file — source and digests, method and its
 * parameters, calibration, metrics before/after, gate checks, size, bits
 * per weight, memory estimate, compatible runtimes. */
#ifndef QP_STAGES_MODEL_CARD_H
#define QP_STAGES_MODEL_CARD_H

#include <stdint.h>

#include "stages/stage.h"

/* runtimes: the card's "compatible runtimes" cell (the package format's). */
int qp_model_card_write(const char *dir, const qp_stage_ctx *ctx, const qp_artifact *model, size_t model_index,
                        const char *file_name, uint64_t file_size, const char *runtimes);

#endif
