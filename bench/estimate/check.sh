#!/usr/bin/env bash
# Predicted vs measured, stage by stage (issue #13: `plan --estimate` within
# ±30 % of the measured time and peak RSS).  In a fresh cache, for each stage
# of RECIPE in plan order (so its ancestors are cached and only the stage
# itself runs, writing its objects for the first time, as the estimate
# assumes): `qpipe plan --estimate --json --stage ID`, then
# `qpipe run --stage ID` under /usr/bin/time -v (stage seconds from the
# runner's JSON event, peak RSS from "Maximum resident set size") and the
# machine's heavy lock.  Prints one line per stage with both ratios
# (predicted / measured); exits 1 when one is off by more than 30 %.
#
#   QPIPE=./qpipe SCRATCH=/work/scratch/x bench/estimate/check.sh [RECIPE]
# REPLAY=1: no stage runs; the predictions of this binary (a re-fitted
# coefficient table) against the measurements of the last run in SCRATCH
# (its logs/measured.jsonl; the plan then uses --force=ID on the cached
# cache, so each stage is predicted as the only one that runs).
# RESUME=1: keep SCRATCH; stages already in logs/measured.jsonl are replayed,
# the others measured (run the whole script under the lock with LOCK= to
# measure the rest in one turn: flock /work/notes/heavy.lock env LOCK= RESUME=1 …).
# Each measurement records the load average when its stage started (the
# estimate multiplies times by max(1, (load + 1) / cpus)); a replay predicts
# at that load (LOAD_OVERRIDE=x: at load x; 0 = a quiet machine).
# env: QPIPE (./qpipe), SCRATCH (emptied and used for the cache and the
#      recipe's outputs; default $TMPDIR/qpipe-estimate),
#      THREADS (default: online CPUs), LOCK (/work/notes/heavy.lock when it
#      exists; "" runs without), LOGS (where the /usr/bin/time logs go).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
QPIPE=$(realpath "${QPIPE:-./qpipe}")
RECIPE=$(realpath "${1:-$here/estimate-1b.yaml}")
shift || true
SCRATCH=${SCRATCH:-${TMPDIR:-/tmp}/qpipe-estimate}
CACHE=$SCRATCH/cache
THREADS=${THREADS:-$(nproc)}
LOCK=${LOCK-/work/notes/heavy.lock}
LOGS=${LOGS:-$SCRATCH/logs}
REPLAY=${REPLAY:-0}
RESUME=${RESUME:-0}
if [ "$REPLAY" != 1 ] && [ "$RESUME" != 1 ]; then
  rm -rf "$CACHE" "$SCRATCH/work" "$LOGS/measured.jsonl"
fi
mkdir -p "$CACHE" "$LOGS"
export QPIPE_SHARED=${QPIPE_SHARED:-/work/shared}
# the recipe's outputs (packages) land next to a copy of it in the scratch area
work=$SCRATCH/work
mkdir -p "$work"
cp "$RECIPE" "$work/recipe.yaml"
cd "$work"

locked() {
  if [ -n "$LOCK" ] && [ -e "$LOCK" ]; then flock "$LOCK" "$@"; else "$@"; fi
}

mapfile -t stages < <("$QPIPE" plan recipe.yaml --json --cache-dir "$CACHE" | jq -r 'select(.event=="stage") | .stage')
force=()
# the machine calibration, under the heavy lock too (its rates are what the
# predictions divide by; measured beside another heavy run they are not the
# machine's); RECALIBRATE=1 measures again in a REPLAY
if { [ "$REPLAY" != 1 ] && [ "$RESUME" != 1 ]; } || [ "${RECALIBRATE:-0}" = 1 ]; then
  locked "$QPIPE" plan recipe.yaml --estimate --recalibrate --cache-dir "$CACHE" --threads "$THREADS" | tail -2 | head -1
fi

printf '%-12s %-9s %9s %9s %6s   %10s %10s %6s  %s\n' stage kind pred_s meas_s ratio pred_rss meas_rss ratio dominant
worst=0
for id in "${stages[@]}"; do
  replay=$REPLAY
  if [ "$RESUME" = 1 ] && [ -f "$LOGS/measured.jsonl" ] && grep -q "\"stage\":\"$id\"" "$LOGS/measured.jsonl"; then
    replay=1
  fi
  force=()
  [ "$replay" = 1 ] && force=(--force="$id")
  # the load the stage runs beside (the prediction's shared-machine factor):
  # now, or in a replay the one recorded with the measurement
  if [ "$replay" = 1 ]; then
    load=$(jq -r "select(.stage==\"$id\") | .load // empty" "$LOGS/measured.jsonl" | tail -1)
    [ -n "${LOAD_OVERRIDE:-}" ] && load=$LOAD_OVERRIDE
    [ -n "$load" ] && export QPIPE_ESTIMATE_LOAD=$load
  else
    load=$(cut -d' ' -f1 /proc/loadavg)
  fi
  est=$("$QPIPE" plan recipe.yaml --estimate --json --stage "$id" "${force[@]}" --cache-dir "$CACHE" \
        --threads "$THREADS" | jq -c "select(.event==\"estimate\") | .stages[\"$id\"]")
  if [ "$replay" = 1 ]; then
    meas_s=$(jq -r "select(.stage==\"$id\") | .seconds" "$LOGS/measured.jsonl" | tail -1)
    meas_kb=$(jq -r "select(.stage==\"$id\") | .rss_kb" "$LOGS/measured.jsonl" | tail -1)
  else
    log=$LOGS/$id.time
    ev=$(locked /usr/bin/time -v -o "$log" "$QPIPE" run recipe.yaml --stage "$id" --cache-dir "$CACHE" \
         --threads "$THREADS" --no-provenance --ignore-memory --json | jq -c "select(.event==\"stage\" and .stage==\"$id\")")
    meas_s=$(jq -r .seconds <<<"$ev")
    meas_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
    echo "{\"stage\":\"$id\",\"seconds\":$meas_s,\"rss_kb\":$meas_kb,\"load\":$load}" >>"$LOGS/measured.jsonl"
  fi
  pred_s=$(jq -r .seconds <<<"$est")
  pred_b=$(jq -r .peak_rss <<<"$est")
  kind=$(jq -r .kind <<<"$est")
  dom=$(jq -r '.dominant + " / " + .rss_part' <<<"$est")
  read -r rt rr bad < <(awk -v ps="$pred_s" -v ms="$meas_s" -v pb="$pred_b" -v mk="$meas_kb" 'BEGIN {
      rt = ms > 0 ? ps / ms : 0; rr = mk > 0 ? pb / (mk * 1024) : 0;
      bad = (rt < 0.7 || rt > 1.3 || rr < 0.7 || rr > 1.3);
      printf "%.2f %.2f %d\n", rt, rr, bad }')
  printf '%-12s %-9s %9.1f %9.1f %6s   %9.0fM %9.0fM %6s  %s\n' "$id" "$kind" "$pred_s" "$meas_s" "$rt" \
    "$(awk -v b="$pred_b" 'BEGIN{print b/1e6}')" "$(awk -v k="$meas_kb" 'BEGIN{print k*1024/1e6}')" "$rr" "$dom"
  [ "$bad" = 1 ] && worst=1
done
"$QPIPE" plan recipe.yaml --estimate --cache-dir "$CACHE" --threads "$THREADS" | tail -2 | head -1
echo "(ratio = predicted / measured; the machine may be shared: timings are noisy)"
exit $worst
