/* README.md (the model card) and provenance.json of a package: what a person or a
 * registry needs to trust the file — source and digests, method and its
 * parameters, calibration, metrics before/after, gate checks, size, bits
 * per weight, memory estimate, compatible runtimes. */
#ifndef QP_STAGES_MODEL_CARD_H
#define QP_STAGES_MODEL_CARD_H

#include <stdint.h>

#include "stages/stage.h"

/* The card is README.md, the file the Hugging Face Hub shows as a
 * repository's model card: YAML front matter (base_model,
 * base_model_relation, library_name, license, pipeline_tag, tags), then
 * how to load the package, the source, the quantization, the evaluation,
 * the gates and the file. */
#define QP_MODEL_CARD_FILE "README.md"

typedef enum { QP_CARD_GGUF, QP_CARD_GPTQ, QP_CARD_AWQ, QP_CARD_BITSANDBYTES, QP_CARD_SAFETENSORS } qp_card_format;

typedef struct {
    qp_card_format format;
    const char *title;       /* the package's name: the card's heading */
    const char *runtimes;    /* the "compatible runtimes" cell */
    const char *file_name;   /* the file a runtime opens (GGUF, model.safetensors or its index) */
    uint64_t file_size;      /* bytes of the weights */
    const char *dtype;       /* safetensors: the float type written; else NULL */
    int quantized;           /* the artifact was quantized (set by the card writer) */
} qp_card_file;

/* 1 when s is "" or a Hub id: repo != 0, ORG/NAME (letters, digits, '-',
 * '_', '.'; no '..', at most 96 bytes each part); repo == 0, a license id
 * (lowercase letters, digits, '-', '.'; at most 64 bytes).  Either is
 * written unquoted into the card's YAML front matter. */
int qp_hub_id_ok(const char *s, int repo);

int qp_model_card_write(const char *dir, const qp_stage_ctx *ctx, const qp_artifact *model, size_t model_index,
                        const qp_card_file *file);

#endif
