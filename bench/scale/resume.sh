#!/usr/bin/env bash
# make bench-scale's resume figure: GPTQ on the 1.1B preset killed after
# layer 10 and rerun (bench/bench_resume.sh does the work and checks the
# digest).  Called by bench/scale/run.sh with QPIPE, THREADS, QP_SCALE_MODEL
# and LOGS set; the caller already holds the heavy-run lock.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
work="$LOGS/resume-work"
mkdir -p "$work"
MODEL="$QP_SCALE_MODEL" QPIPE="$QPIPE" WORK="$work" KILL=10 THREADS="$THREADS" bash "$REPO/bench/bench_resume.sh"
