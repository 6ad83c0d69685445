/* One layer's activations of the calibration windows, x [S, T, D] f32, for
 * the layer-by-layer stages (calibrate, sequential GPTQ): in memory when
 * S·T·D floats fit the budget, else spilled to an unlinked temp file in the
 * cache's tmp/ and read and written one window at a time (pread/pwrite), so
 * memory is one window whatever the calibration set's size.
 *
 * Budget: QP_ACT_MEM_DEFAULT, or $QPIPE_ACT_MEM ("512M", "2G", bytes; "0"
 * always spills) — the same rule `qpipe plan` states for the stage
 * (qp_act_store_plan_note). */
#ifndef QP_STAGES_ACT_STORE_H
#define QP_STAGES_ACT_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "cache/cache.h"

#define QP_ACT_MEM_DEFAULT ((uint64_t)2 << 30)   /* 2 GiB of f32 activations */

typedef struct qp_act_store qp_act_store;

/* The budget in bytes ($QPIPE_ACT_MEM or the default); an unparsable value
 * is an error naming the variable. */
int qp_act_store_budget(uint64_t *out);
/* For `qpipe plan` (--estimate): 1 when S windows of w floats would be
 * spilled under the current budget, and then a line for the stage's plan
 * ("activations 8.6 GB > QPIPE_ACT_MEM 2.0 GB: spilled to disk, one window
 * in memory") in note[cap]; 0 (note "") when they stay in memory. */
int qp_act_store_plan_note(size_t S, size_t w, char *note, size_t cap);
/* S windows of w floats each; spills when S·w·4 bytes exceed the budget
 * and may_spill (else stays in memory whatever the size: a caller that
 * needs all windows at once).  what names the stage for messages. */
int qp_act_store_new(qp_act_store **out, qp_cache *cache, size_t S, size_t w, int may_spill, const char *what);
void qp_act_store_free(qp_act_store *a);
/* 1 when the windows live in a temp file. */
int qp_act_store_spilled(const qp_act_store *a);
/* All S windows contiguous in memory, or NULL when spilled. */
float *qp_act_store_data(qp_act_store *a);
/* Where to build window s before put: its memory, or buf (not read). */
float *qp_act_store_slot(qp_act_store *a, size_t s, float *buf);
/* Window s: a pointer into memory, or buf [w] filled from the file. */
int qp_act_store_get(qp_act_store *a, size_t s, float *buf, float **out);
/* Stores window s from src [w] (no copy when src is the in-memory window). */
int qp_act_store_put(qp_act_store *a, size_t s, const float *src);

#endif
