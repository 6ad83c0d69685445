#!/usr/bin/env bash
# make bench-scale's plan --estimate figures: bench/estimate/check.sh runs
# the 1.1B estimate recipe stage by stage, measures each under
# /usr/bin/time -v and prints predicted / measured per stage (exit 1 when a
# ratio is outside 0.7..1.3).  Called by bench/scale/run.sh with QPIPE,
# THREADS and QP_SCALE_MODEL set; the caller already holds the lock (LOCK=).
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
LOCK= SCRATCH="${LOGS:-/tmp}/estimate-work" QPIPE="$QPIPE" THREADS="$THREADS" QP_SCALE_MODEL="$QP_SCALE_MODEL" \
    bash "$REPO/bench/estimate/check.sh" "$REPO/bench/estimate/estimate-1b.yaml"
