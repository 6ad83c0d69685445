/* One cache object stored by a helper thread while the caller goes on.
 *
 * quantize reads and verifies a tensor (SHA-256, one core), encodes it
 * (every core), then stores the packed bytes (SHA-256 and the write, one
 * core): with the store of tensor k running beside the read of tensor k+1
 * both cores work through the serial parts.  One object in flight at a
 * time, so memory grows by one packed tensor at most. */
#ifndef QP_STAGES_BG_PUT_H
#define QP_STAGES_BG_PUT_H

#include <stddef.h>

#include "cache/cache.h"

typedef struct qp_bg_put qp_bg_put;

int qp_bg_put_new(qp_bg_put **out, qp_cache *c);
/* Starts storing bytes[0..n) (the put takes them: freed, or handed back by
 * qp_bg_put_take_spare, once stored and collected).
 * The previous put must have been collected (qp_bg_put_wait). */
int qp_bg_put_start(qp_bg_put *p, void *bytes, size_t n);
/* Waits for the put in flight; 0 and its digest, or its error (with its
 * message on this thread).  1 when none was in flight. */
int qp_bg_put_wait(qp_bg_put *p, char digest[QP_HEX_LEN]);
/* The bytes of the last collected put, handed back instead of freed (a
 * caller encoding tensor after tensor fills them again rather than
 * faulting in fresh pages), or NULL.  They stay takeable while the next
 * put runs (a caller that collects put k, starts put k+1 and then encodes
 * tensor k+2 fills put k's buffer); what is not taken is freed by the
 * next collect or by _free. */
void *qp_bg_put_take_spare(qp_bg_put *p);
/* Waits for what is in flight (its result dropped) and frees. */
void qp_bg_put_free(qp_bg_put *p);

#endif
