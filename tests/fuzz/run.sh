#!/usr/bin/env bash
# make fuzz: every harness in BUILD/fuzz/ (libFuzzer, ASan+UBSan) first
# replays its regression inputs (tests/fuzz/regress/NAME/: inputs that once
# crashed, each must now pass), then fuzzes for FUZZ_SECONDS from a corpus
# seeded with tests/fuzz/seeds/NAME/ and the matching files of ../shared.
# Prints the executions per harness; exit 1 on any crash, leak, timeout or
# out-of-memory (the input is kept under BUILD/fuzz-crashes/NAME/ — add it
# to tests/fuzz/regress/NAME/ once fixed). FUZZ_ONLY="gguf spm" runs only
# those harnesses (so two shells can share a 2-core machine).
set -uo pipefail
BUILD=${1:-build-fuzz}
SECONDS_EACH=${FUZZ_SECONDS:-600}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
SHARED=${QPIPE_SHARED:-$REPO/../shared}
export TMPDIR=${TMPDIR:-/tmp}

seeds() {   # NAME: files from ../shared that seed it
  case $1 in
    recipe|ytree) ls "$REPO"/recipes/*.yaml "$REPO"/bench/scale/recipes/*.yaml "$REPO"/tests/pipeline/recipes/*.yaml ;;
    lock) ;;
    safetensors) ;;
    gguf) ls "$SHARED"/vectors/house-qwen/Q4_0.gguf ;;   # (its first max_len bytes: header, vocabulary)
    spm) ls "$SHARED"/models/house-llama/tokenizer.model ;;
    hf_tokenizer) ls "$SHARED"/models/house-qwen/tokenizer.json ;;
    imatrix) ls "$SHARED"/vectors/house-llama/imatrix.dat ;;
    config) ls "$SHARED"/models/*/config.json ;;
  esac 2>/dev/null
}
max_len() {
  case $1 in
    gguf) echo 262144 ;;
    hf_tokenizer|imatrix) echo 131072 ;;
    *) echo 65536 ;;
  esac
}

status=0
for bin in "$BUILD"/fuzz/fuzz_*; do
  case $bin in *.d) continue ;; esac
  name=$(basename "$bin"); name=${name#fuzz_}
  if [ -n "${FUZZ_ONLY:-}" ] && [[ " $FUZZ_ONLY " != *" $name "* ]]; then continue; fi
  corpus=$BUILD/fuzz-corpus/$name crashes=$BUILD/fuzz-crashes/$name
  mkdir -p "$corpus" "$crashes"
  for f in "$REPO"/tests/fuzz/seeds/"$name"/* $(seeds "$name"); do
    [ -f "$f" ] && cp -f "$f" "$corpus/seed-$(basename "$f")"
  done
  if compgen -G "$REPO/tests/fuzz/regress/$name/*" >/dev/null; then
    if ! "$bin" "$REPO"/tests/fuzz/regress/"$name"/* > "$BUILD/fuzz-$name-regress.log" 2>&1; then
      echo "fuzz $name: a regression input fails again (log $BUILD/fuzz-$name-regress.log)"
      status=1
      continue
    fi
  fi
  "$bin" "$corpus" -max_total_time="$SECONDS_EACH" -max_len="$(max_len "$name")" -timeout=20 \
    -rss_limit_mb=2048 -artifact_prefix="$crashes/" -print_final_stats=1 > "$BUILD/fuzz-$name.log" 2>&1
  rc=$?
  runs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$BUILD/fuzz-$name.log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+' "$BUILD/fuzz-$name.log" | tail -1)
  if [ $rc -ne 0 ]; then
    echo "fuzz $name: FAILED after ${runs:-?} executions (log $BUILD/fuzz-$name.log, input in $crashes/)"
    status=1
  else
    echo "fuzz $name: ${runs:-?} executions in ${SECONDS_EACH}s, ${cov:-cov: ?}, 0 crashes"
  fi
done
exit $status
