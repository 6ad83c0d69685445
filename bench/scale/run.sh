#!/usr/bin/env bash
# make bench-scale: issue #13's "Done when" figures on synthetic real-size
# checkpoints (bench/synth_ckpt), each a ratio measured side by side in this
# one run.  docs/bench-scale.md says what runs, how long it takes and what
# the goals are.  Every figure is one line
#   NAME: qpipe X, baseline Y, ratio Z (goal >= G: met|NOT met)
# and the lines are repeated in a summary at the end (and written to
# $QPIPE_SCALE_DIR/results.txt).
#
# Environment (all optional):
#   QPIPE_SCALE_DIR       work directory, outside the repository (default ../scale-data):
#                         generated checkpoints, the qpipe cache, GGUFs, logs
#   QPIPE_SCALE_MODELS    directory holding ready checkpoints <preset>/READY (read only;
#                         default $QPIPE_SCALE_DIR/models, where missing ones are generated)
#   QPIPE_SCALE_SECTIONS  default "speed memory resume estimate"
#   QPIPE_SCALE_SPEED_PRESET  / QPIPE_SCALE_MEMORY_PRESET
#                         defaults tinyllama-1.1b / llama2-7b ("tiny" for a smoke run)
#   QPIPE_SCALE_THREADS   threads for qpipe and llama.cpp alike (default: nproc)
#   QPIPE_SCALE_LOCK      a file to flock for the whole run (a shared machine: every figure
#                         then comes from one interval without other heavy jobs)
#   QPIPE_SCALE_KEEP      1 keeps the cache and the GGUFs afterwards (default: removed)
#   LLAMA_CPP_BIN         llama-perplexity / llama-quantize (default /work/ext/llama.cpp/build/bin)
set -u -o pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${BUILD:-build}
QPIPE=${QPIPE:-$REPO/qpipe}
SYNTH=${SYNTH:-$REPO/$BUILD/bench/synth_ckpt}
BENCH_EVAL=${BENCH_EVAL:-$REPO/$BUILD/bench/bench_eval}
export QPIPE_SHARED=${QPIPE_SHARED:-$REPO/../shared}
SCALE_DIR=${QPIPE_SCALE_DIR:-$REPO/../scale-data}
MODELS=${QPIPE_SCALE_MODELS:-$SCALE_DIR/models}
SECTIONS=${QPIPE_SCALE_SECTIONS:-speed memory resume estimate}
SPEED_PRESET=${QPIPE_SCALE_SPEED_PRESET:-tinyllama-1.1b}
MEMORY_PRESET=${QPIPE_SCALE_MEMORY_PRESET:-llama2-7b}
THREADS=${QPIPE_SCALE_THREADS:-$(nproc)}
LOCK=${QPIPE_SCALE_LOCK:-}
LLAMA_CPP_BIN=${LLAMA_CPP_BIN:-/work/ext/llama.cpp/build/bin}
TEXT=$QPIPE_SHARED/data/wikitext-2-raw/wiki.test.raw       # evaluation text, both tools
CALIB_TEXT=$QPIPE_SHARED/data/shakespeare/train.txt        # GPTQ calibration samples
CTX=256
CHUNKS=16

# The figure names' model label: the issue's "1.1B" / "7B", else the preset.
label() { case "$1" in tinyllama-1.1b) echo 1.1B ;; llama2-7b) echo 7B ;; llama3-8b) echo 8B ;; *) echo "$1" ;; esac; }
die() { echo "bench-scale: $*" >&2; exit 1; }
for f in "$QPIPE" "$SYNTH"; do [ -x "$f" ] || die "$f is not built (make $(basename "$f"))"; done
[ -f "$TEXT" ] || die "$TEXT missing (set QPIPE_SHARED)"
case "$SCALE_DIR" in "$REPO"|"$REPO"/*) die "QPIPE_SCALE_DIR=$SCALE_DIR is inside the repository; choose a directory outside it";; esac
mkdir -p "$SCALE_DIR" || die "cannot create $SCALE_DIR"
SCALE_DIR=$(cd "$SCALE_DIR" && pwd)
LOGS=$SCALE_DIR/logs
CACHE=$SCALE_DIR/cache
mkdir -p "$LOGS" "$CACHE"
RESULTS=$SCALE_DIR/results.txt
: > "$RESULTS"

# ---- helpers -------------------------------------------------------------------

# fcalc EXPR: floating-point arithmetic (awk), 4 significant decimals kept by the callers' printf
fcalc() { awk "BEGIN { printf \"%.6f\", $* }"; }

# figure NAME QPIPE BASELINE RATIO GOAL: prints and records one figure line (ratio >= goal is met)
figure() {
  local met
  met=$(awk -v r="$4" -v g="$5" 'BEGIN { print (r + 0 >= g + 0) ? "met" : "NOT met" }')
  local line
  line=$(printf '%s: qpipe %s, baseline %s, ratio %.2f (goal >= %s: %s)' "$1" "$2" "$3" "$4" "$5" "$met")
  echo "$line"
  echo "$line" >> "$RESULTS"
}
# note TEXT: a line for the summary that is not a figure (skips, hooks)
note() { echo "$*"; echo "$*" >> "$RESULTS"; }

# measure TAG CMD...: runs CMD under /usr/bin/time -v, output in
# $LOGS/TAG.out; sets WALL (s), RSS_KB and RC.  Never exits on failure.
measure() {
  local tag=$1; shift
  sync   # the previous step's unwritten pages are not this one's to write
  /usr/bin/time -v -o "$LOGS/$tag.time" "$@" > "$LOGS/$tag.out" 2>&1
  RC=$?
  RSS_KB=$(awk -F: '/Maximum resident set size/ { gsub(/ /, "", $2); print $2 }' "$LOGS/$tag.time")
  WALL=$(awk '/Elapsed \(wall clock\)/ { t = $NF; n = split(t, p, ":"); s = 0;
                for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }' "$LOGS/$tag.time")
  RSS_KB=${RSS_KB:-0}; WALL=${WALL:-0}
  if [ "$RC" -ne 0 ]; then
    echo "  $tag: exit $RC (log $LOGS/$tag.out):" >&2
    tail -5 "$LOGS/$tag.out" | sed 's/^/    /' >&2
  fi
  return 0
}
f1() { printf %.1f "$1"; }   # one decimal
gb() { fcalc "$1 / 1048576"; }   # kB -> GiB

# ensure_model PRESET: prints the checkpoint directory, generating it when no
# READY copy exists in $MODELS or $SCALE_DIR/models
ensure_model() {
  local p=$1
  for d in "$MODELS/$p" "$SCALE_DIR/models/$p"; do
    [ -f "$d/READY" ] && { echo "$d"; return 0; }
  done
  local d=$SCALE_DIR/models/$p
  echo "  generating $p into $d" >&2
  measure "synth-$p" "$SYNTH" "$p" "$d"
  [ "$RC" -eq 0 ] || die "synth_ckpt $p failed (log $LOGS/synth-$p.out)"
  touch "$d/READY"
  echo "$d"
}

# stage RECIPE ID: runs one stage of RECIPE (its inputs must be cached
# already: callers go in dependency order), forced, under measure; sets
# SECS (the stage's own seconds from --json), WALL, RSS_KB, RC and METRICS
# (the stage's JSON metrics object)
stage() {
  local recipe=$1 id=$2
  measure "$(basename "$recipe" .yaml)-$id" "$QPIPE" run "$recipe" --stage "$id" --force="$id" \
    --threads "$THREADS" --cache-dir "$CACHE" --no-provenance --json
  local line
  line=$(grep "^{\"event\":\"stage\",\"stage\":\"$id\"" "$LOGS/$(basename "$recipe" .yaml)-$id.out" | tail -1)
  SECS=$(echo "$line" | sed -nE 's/.*"seconds":([0-9.e+-]+).*/\1/p')
  METRICS=$(echo "$line" | sed -nE 's/.*"metrics":(\{[^}]*\}).*/\1/p')
  SECS=${SECS:-0}
  echo "$id $SECS $RSS_KB" >> "$SCALE_DIR/measured-$(basename "$recipe" .yaml).tsv"
  [ "$RC" -eq 0 ] || { SECS=0; return 1; }
}
metric() { echo "$METRICS" | sed -nE "s/.*\"$1\":([0-9.e+-]+).*/\1/p"; }

# A recipe copied into the work directory: packages land in its dist/.
recipe() {
  local w=$SCALE_DIR/work-$1
  mkdir -p "$w"
  cp "$REPO/bench/scale/recipes/$2.yaml" "$w/$2.yaml"
  : > "$SCALE_DIR/measured-$2.tsv"
  echo "$w/$2.yaml"
}

HAVE_LLAMA=0
if [ -x "$LLAMA_CPP_BIN/llama-perplexity" ] && [ -x "$LLAMA_CPP_BIN/llama-quantize" ]; then
  HAVE_LLAMA=1
fi
llama_missing() {
  note "llama.cpp: no llama-perplexity/llama-quantize in $LLAMA_CPP_BIN; build c392e50 outside this repository" \
       "(git clone https://github.com/ggml-org/llama.cpp && cd llama.cpp && git checkout c392e50 &&" \
       "cmake -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF && cmake --build build -j --target llama-perplexity" \
       "llama-quantize) and set LLAMA_CPP_BIN=.../llama.cpp/build/bin; llama.cpp ratios skipped"
}

# ---- the same-process GFLOP/s of evaluation (bench/bench_eval.c) -----------------
# build/bench/bench_eval runs the batched evaluation (weights kept as stored,
# dequantized matrix by matrix) and OpenBLAS sgemm in one process, at the
# same thread count; its "result" line gives both rates.
bench_eval_args() {   # MODEL_DIR TYPE -> bench_eval's arguments (TYPE bf16 = the checkpoint's own dtype)
  case "$2" in
    bf16) echo "$1 $CHUNKS $THREADS --ctx $CTX --stream --type base" ;;
    *) echo "$1 $CHUNKS $THREADS --ctx $CTX --stream --type $2" ;;
  esac
}
# bench_eval_parse LOG: sets BE_GFLOPS (the evaluation's rate over all its
# windows) and BE_PEAK (OpenBLAS sgemm, same process, same threads) from its
# "result type=... gflops=X peak_gflops=Y" line
bench_eval_parse() {
  BE_GFLOPS=$(sed -nE 's/^result type=.* gflops=([0-9.]+) .*/\1/p' "$1" | head -1)
  BE_PEAK=$(sed -nE 's/^result type=.* peak_gflops=([0-9.]+) .*/\1/p' "$1" | head -1)
}
flops_figure() {   # NAME MODEL_DIR TYPE
  local args
  args=$(bench_eval_args "$2" "$3")
  if [ ! -x "$BENCH_EVAL" ]; then note "$1: $BENCH_EVAL not built (make $BUILD/bench/bench_eval)"; return; fi
  # shellcheck disable=SC2086
  measure "bench_eval-$3" "$BENCH_EVAL" $args
  bench_eval_parse "$LOGS/bench_eval-$3.out"
  if [ "$RC" -ne 0 ] || [ -z "$BE_GFLOPS" ] || [ -z "$BE_PEAK" ]; then
    note "$1: bench_eval failed or printed no GFLOP/s (log $LOGS/bench_eval-$3.out)"; return
  fi
  figure "$1" "$BE_GFLOPS GFLOP/s" "$BE_PEAK GFLOP/s sgemm (OpenBLAS, same process, $THREADS threads)" \
    "$(fcalc "$BE_GFLOPS / $BE_PEAK")" 0.75
  # context: the evaluate stage's own rate at bench_eval's FLOP count per window
  local gw stps
  gw=$(sed -nE 's/.* ([0-9.]+) GFLOP per window.*/\1/p' "$LOGS/bench_eval-$3.out" | head -1)
  if [ "$3" = bf16 ]; then stps=${TPS_base_eval:-}; else stps=${TPS_q4km_eval:-}; fi
  if [ -n "$gw" ] && [ -n "$stps" ]; then
    echo "  (the $3 evaluate stage: $(printf %.1f "$(fcalc "$stps * $gw / $CTX")") GFLOP/s over all its windows," \
         "$(printf %.2f "$(fcalc "$stps * $gw / $CTX / $BE_PEAK")") of that sgemm peak)"
  fi
}

# ---- speed: the 1.1B figures -----------------------------------------------------
section_speed() {
  local p=$SPEED_PRESET m r w L
  L=$(label "$p")
  echo "== speed: $p, $THREADS threads (qpipe --threads / llama.cpp -t), text $(basename "$TEXT"), ctx $CTX, $CHUNKS chunks"
  m=$(ensure_model "$p") || return
  r=$(recipe speed scale-speed)
  w=$(dirname "$r")
  export QP_SCALE_MODEL=$m QP_SCALE_TEXT=$TEXT QP_SCALE_CHUNKS=$CHUNKS
  stage "$r" model || { note "$p fetch failed (log in $LOGS)"; return; }
  echo "  fetch: $(f1 "$SECS")s, peak RSS $(printf %.2f "$(gb "$RSS_KB")") GiB"

  # the packages first: llama.cpp's inputs
  local f32 q4 b16
  for s in q4km bf16 q8 pkg_f32 pkg_q4km pkg_bf16; do
    stage "$r" "$s" || { note "$p: stage $s failed (log in $LOGS)"; return; }
    eval "SECS_$s=$SECS RSS_$s=$RSS_KB"
    echo "  $s: $(f1 "$SECS")s, peak RSS $(printf %.2f "$(gb "$RSS_KB")") GiB"
  done
  f32=$(ls "$w"/dist/f32/*.gguf) q4=$(ls "$w"/dist/q4km/*.gguf) b16=$(ls "$w"/dist/bf16/*.gguf)

  # evaluate: bf16 base and Q4_K_M, llama-perplexity's protocol on both sides
  local tokens=$((CTX * CHUNKS)) eval_q4 eval_b16
  for s in base_eval q4km_eval; do
    stage "$r" "$s" || { note "$p: stage $s failed (log in $LOGS)"; return; }
    local n=$(metric windows); n=${n%.*}
    [ "${n:-0}" -eq "$CHUNKS" ] || note "$p $s: scored ${n:-0} windows, not $CHUNKS"
    eval "TPS_$s=$(fcalc "$tokens / $SECS") PPL_$s=$(metric ppl) RSS_$s=$RSS_KB"
  done
  if [ "$HAVE_LLAMA" -eq 1 ]; then
    local what gguf tag
    for what in q4km bf16; do
      if [ "$what" = q4km ]; then gguf=$q4 tag=q4km_eval; else gguf=$f32 tag=base_eval; fi
      measure "llama-perplexity-$what" "$LLAMA_CPP_BIN/llama-perplexity" -m "$gguf" -f "$TEXT" -c "$CTX" \
        --chunks "$CHUNKS" -t "$THREADS"
      local lppl
      lppl=$(sed -nE 's/.*Final estimate: PPL = ([0-9.]+).*/\1/p' "$LOGS/llama-perplexity-$what.out")
      if [ "$RC" -ne 0 ] || [ -z "$lppl" ]; then note "$p evaluate $what: llama-perplexity failed (log $LOGS/llama-perplexity-$what.out)"; continue; fi
      local qtps ltps qppl qrss
      eval "qtps=\$TPS_$tag qppl=\$PPL_$tag qrss=\$RSS_$tag"
      ltps=$(fcalc "$tokens / $WALL")
      echo "  evaluate $what: qpipe ppl $qppl, RSS $(printf %.2f "$(gb "$qrss")") GiB; llama-perplexity ppl $lppl on $(basename "$gguf"), $(f1 "$WALL")s, RSS $(printf %.2f "$(gb "$RSS_KB")") GiB"
      figure "$L evaluate $( [ "$what" = q4km ] && echo Q4_K_M || echo bf16 ) (ctx $CTX, $CHUNKS windows) tokens/s" "$(printf %.1f "$qtps") tok/s" \
        "llama-perplexity $(printf %.1f "$ltps") tok/s" "$(fcalc "$qtps / $ltps")" 1.5
    done
  else
    echo "  (llama.cpp ratios skipped: no llama.cpp, see above)"
    echo "  evaluate: qpipe bf16 $(printf %.1f "$TPS_base_eval") tok/s, Q4_K_M $(printf %.1f "$TPS_q4km_eval") tok/s"
  fi
  flops_figure "$L evaluate bf16 GFLOP/s" "$m" bf16
  flops_figure "$L evaluate Q4_K_M GFLOP/s" "$m" Q4_K_M

  # quantize: qpipe from the bf16 checkpoint, llama-quantize from the F32 GGUF, same threads
  if [ "$HAVE_LLAMA" -eq 1 ]; then
    local t qs
    for t in Q4_K_M Q8_0; do
      if [ "$t" = Q4_K_M ]; then qs=$SECS_q4km; else qs=$SECS_q8; fi
      measure "llama-quantize-$t" "$LLAMA_CPP_BIN/llama-quantize" "$f32" "$w/llama-$t.gguf" "$t" "$THREADS"
      rm -f "$w/llama-$t.gguf"
      if [ "$RC" -ne 0 ]; then note "$p quantize $t: llama-quantize failed (log $LOGS/llama-quantize-$t.out)"; continue; fi
      figure "$L quantize $t ($THREADS threads each) time" "$(f1 "$qs")s" "llama-quantize $(f1 "$WALL")s from F32 GGUF" \
        "$(fcalc "$WALL / $qs")" 1
    done
  fi

  # package: bytes/s of each GGUF against cp + fsync of the same bytes
  local kind file ps bytes
  for kind in bf16 f32 q4km; do
    case $kind in bf16) file=$b16 ;; f32) file=$f32 ;; q4km) file=$q4 ;; esac
    eval "ps=\$SECS_pkg_$kind"
    bytes=$(stat -c %s "$file")
    measure "cp-$kind" bash -c 'cp --reflink=never "$1" "$2" && sync "$2"' cp "$file" "$w/cp-copy.gguf"
    rm -f "$w/cp-copy.gguf"
    local mbq mbc
    mbq=$(fcalc "$bytes / $ps / 1e6") mbc=$(fcalc "$bytes / $WALL / 1e6")
    figure "$L package $(echo "$kind" | sed 's/q4km/Q4_K_M/; s/f32/F32/; s/bf16/BF16/') GGUF ($(printf %.2f "$(fcalc "$bytes / 1e9")") GB) throughput" "$(printf %.0f "$mbq") MB/s" \
      "cp+sync $(printf %.0f "$mbc") MB/s" "$(fcalc "$mbq / $mbc")" 0.5
  done
}

# ---- memory: the 7B-shaped figures ---------------------------------------------
rss_figure() {   # NAME RSS_KB LIMIT_BYTES LIMIT_TEXT
  local lim_gb
  lim_gb=$(fcalc "$3 / 1073741824")
  figure "$1" "$(printf %.2f "$(gb "$2")") GiB" "$4 $(printf %.2f "$lim_gb") GiB" "$(fcalc "$3 / ($2 * 1024)")" 1
}
section_memory() {
  local p=$MEMORY_PRESET m r w L
  L=$(label "$p")
  echo "== memory: $p, $THREADS threads"
  m=$(ensure_model "$p") || return
  r=$(recipe memory scale-memory)
  w=$(dirname "$r")
  export QP_SCALE_MODEL=$m QP_SCALE_TEXT=$TEXT QP_SCALE_CALIB=$CALIB_TEXT
  local two=$((2 * 1073741824))
  local s
  local -A what=([model]="fetch" [q4km]="quantize Q4_K_M" [pkg_q4km]="package Q4_K_M GGUF")
  for s in model q4km pkg_q4km; do
    stage "$r" "$s" || { note "$p: stage $s failed (log in $LOGS)"; return; }
    echo "  $s: $(f1 "$SECS")s, peak RSS $(printf %.2f "$(gb "$RSS_KB")") GiB"
    rss_figure "$L ${what[$s]} peak RSS ($(f1 "$SECS")s)" "$RSS_KB" "$two" "limit"
  done
  local gguf size
  gguf=$(ls "$w"/dist/q4km/*.gguf) size=$(stat -c %s "$gguf")
  stage "$r" q4km_eval || { note "$p: stage q4km_eval failed (log in $LOGS)"; return; }
  echo "  q4km_eval: $(f1 "$SECS")s, $(metric windows) windows, peak RSS $(printf %.2f "$(gb "$RSS_KB")") GiB"
  rss_figure "$L evaluate Q4_K_M (4 windows) peak RSS" "$RSS_KB" "$(fcalc "1.25 * $size" | cut -d. -f1)" \
    "1.25 x GGUF"
  stage "$r" calib || { note "$p: stage calib failed (log in $LOGS)"; return; }
  local cs=$SECS crss=$RSS_KB
  stage "$r" gptq || { note "$p: stage gptq failed (log in $LOGS)"; return; }
  local peak=$(( RSS_KB > crss ? RSS_KB : crss ))
  echo "  GPTQ w4g128, 8 x 256 calibration tokens: calibrate $(f1 "$cs")s (RSS $(printf %.2f "$(gb "$crss")") GiB)," \
       "quantize $(f1 "$SECS")s (RSS $(printf %.2f "$(gb "$RSS_KB")") GiB)"
  rss_figure "$L GPTQ w4g128 8x256 peak RSS (time $(printf %.0f "$(fcalc "$cs + $SECS")")s)" "$peak" \
    "$((6 * 1073741824))" "limit"
}

# ---- resume: GPTQ on the 1.1B killed after layer 10 and rerun ----------------
# bench/scale/resume.sh (bench/bench_resume.sh) runs the 1.1B GPTQ stage,
# SIGKILLs it after its 10th layer, reruns it and prints the layer it
# resumed at and whether the digest equals an uninterrupted run's.
section_resume() {
  echo "== resume"
  local m
  m=$(ensure_model "$SPEED_PRESET") || return
  QPIPE=$QPIPE CACHE=$CACHE THREADS=$THREADS QP_SCALE_MODEL=$m QP_SCALE_CALIB=$CALIB_TEXT LOGS=$LOGS \
    bash "$REPO/bench/scale/resume.sh" | tee -a "$RESULTS"
}

# ---- estimate: qpipe plan --estimate against the measured stages --------------
# bench/scale/estimate.sh (bench/estimate/check.sh) runs the 1.1B estimate
# recipe stage by stage in a fresh cache and prints predicted / measured
# time and peak RSS per stage (goal within 0.7..1.3).
section_estimate() {
  echo "== estimate"
  local m
  m=$(ensure_model "$SPEED_PRESET") || return
  QPIPE=$QPIPE THREADS=$THREADS QP_SCALE_MODEL=$m LOGS=$LOGS \
    bash "$REPO/bench/scale/estimate.sh" | tee -a "$RESULTS"
}

if [ -n "$LOCK" ]; then
  exec 9>>"$LOCK" || die "cannot open the lock file $LOCK"
  echo "bench-scale: waiting for $LOCK"
  flock 9 || die "flock $LOCK failed"
fi
echo "bench-scale: $(date -u +%FT%TZ), $(nproc) CPUs, $THREADS threads, work dir $SCALE_DIR"
echo "  qpipe $("$QPIPE" version 2>/dev/null | head -1); llama.cpp: $([ $HAVE_LLAMA -eq 1 ] && echo "$LLAMA_CPP_BIN" || echo none)"
[ $HAVE_LLAMA -eq 1 ] || llama_missing
# A fresh cache: every stage is timed writing its objects (--force reruns a
# stage but finds objects already stored, and a GPTQ would resume from an
# earlier run's layer checkpoints).
rm -rf "$CACHE" "$SCALE_DIR"/work-*
T0=$(date +%s)
for s in $SECTIONS; do
  case "$s" in
    speed|memory|resume|estimate) "section_$s" ;;
    *) die "unknown section '$s' (speed memory resume estimate)" ;;
  esac
done
if [ "${QPIPE_SCALE_KEEP:-0}" != 1 ]; then
  rm -rf "$CACHE" "$SCALE_DIR"/work-*
fi
echo "== summary ($(( $(date +%s) - T0 ))s; the machine may have been shared: ratios are side by side)"
cat "$RESULTS"
