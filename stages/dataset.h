/* Dataset files of evaluate/calibrate: plain text as is, JSONL records'
 * `field` joined with blank lines (as the GPTQ/AWQ evaluations join
 * WikiText).  Files ending .jsonl/.json are JSONL. */
#ifndef QP_STAGES_DATASET_H
#define QP_STAGES_DATASET_H

#include <stddef.h>

int qp_dataset_read(char **out, size_t *len, const char *path, const char *field);

#endif
