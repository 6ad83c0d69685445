/* Progress reporting from a running stage to the runner's display.  The
 * runner draws a bar with ETA when stdout is a TTY, emits NDJSON "progress"
 * events with --json, and prints nothing otherwise. */
#ifndef QP_ARTIFACT_PROGRESS_H
#define QP_ARTIFACT_PROGRESS_H

#include <stdint.h>

typedef struct qp_progress qp_progress;

/* done of total units ("tokens", "tensors", "bytes"); rate-limited inside. */
void qp_progress_update(qp_progress *p, uint64_t done, uint64_t total, const char *unit);
/* A one-line note shown under the stage (e.g. "quantized 42/84 tensors"). */
void qp_progress_note(qp_progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
