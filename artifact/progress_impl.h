/* The runner's side of qp_progress (stages only see pipeline/progress.h). */
#ifndef QP_ARTIFACT_PROGRESS_IMPL_H
#define QP_ARTIFACT_PROGRESS_IMPL_H

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "artifact/progress.h"

struct qp_progress {
    const char *stage;
    FILE *out;
    pthread_mutex_t *out_mu;
    int tty, json, shown;
    double start, last;
};

void qp_progress_init(qp_progress *p, const char *stage, FILE *out, pthread_mutex_t *out_mu, int tty, int json);
/* Erases a drawn bar (caller holds out_mu). */
void qp_progress_clear(qp_progress *p);

#endif
