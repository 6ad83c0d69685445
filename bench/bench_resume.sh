#!/usr/bin/env bash
# Resume at real size (issue #13 point 5): GPTQ 4-bit g128 on a synthetic
# checkpoint (default /work/big/tinyllama-1.1b, 22 layers) with 8 x 256
# calibration tokens: one uninterrupted run, then the GPTQ stage again
# (--force) SIGKILLed right after layer KILL's checkpoint (test-only
# QPIPE_TEST_KILL_AFTER_LAYER), then rerun: it must resume at layer KILL+1
# and end with the uninterrupted run's digest.  Prints the three times.
# Real-size: run it under the shared heavy lock, e.g.
#   flock /work/notes/heavy.lock bash bench/bench_resume.sh
# Inside a script that already holds the lock (make bench-scale):
#   MODEL=/work/big/tinyllama-1.1b QPIPE=./qpipe WORK=/scratch/dir bash bench/bench_resume.sh
# Env: MODEL, QPIPE (binary), WORK (a directory; the bench works in a fresh
# subdirectory of it, removed at the end), KILL (default 10), THREADS
# (default 2), SHARED (default $QPIPE_SHARED).  Exit 0 and one "resume:"
# line when the resumed digest equals the uninterrupted one, else 1.
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
MODEL=${MODEL:-/work/big/tinyllama-1.1b}
QPIPE=${QPIPE:-$REPO/qpipe}
KILL=${KILL:-10}
THREADS=${THREADS:-2}
SHARED=${SHARED:-${QPIPE_SHARED:-$REPO/../shared}}
fail() { echo "bench_resume: FAIL: $*" >&2; exit 1; }
[ -f "$MODEL/READY" ] || [ -f "$MODEL/config.json" ] || fail "$MODEL is not a checkpoint (no READY / config.json)"
mkdir -p "${WORK:-${TMPDIR:-/tmp}}" || fail "cannot create ${WORK:-${TMPDIR:-/tmp}}"
WORK=$(mktemp -d "${WORK:-${TMPDIR:-/tmp}}/qpipe-resume.XXXXXX") && cd "$WORK" || fail "cannot make a work directory"
trap 'rm -rf "$WORK"' EXIT
export QPIPE_CACHE="$WORK/cache"
cat > r.yaml <<Y
qpipe: 1
name: bench-resume
stages:
  model: {uses: fetch, with: {source: "$MODEL"}}
  calib:
    uses: calibrate
    needs: [model]
    with: {dataset: "$SHARED/data/shakespeare/train.txt", samples: 8, seq_len: 256, seed: 0, hessians: false}
  gptq:
    uses: quantize
    needs: [model, calib]
    with: {method: gptq, bits: 4, group_size: 128}
Y
digest() { grep '"event":"stage","stage":"gptq"' "$1" | sed -E 's/.*"output":"([0-9a-f]+)".*/\1/'; }
secs() { grep '"event":"stage","stage":"gptq"' "$1" | sed -E 's/.*"seconds":([0-9.]+).*/\1/'; }
now() { date +%s.%N; }

"$QPIPE" run r.yaml --no-provenance --threads "$THREADS" --json > full.json 2> full.err || { cat full.err; fail "uninterrupted run"; }
full=$(digest full.json); full_s=$(secs full.json)
[ -n "$full" ] || fail "no gptq digest in the uninterrupted run"
t0=$(now)
QPIPE_TEST_KILL_AFTER_LAYER=gptq:$KILL "$QPIPE" run r.yaml --no-provenance --threads "$THREADS" --force=gptq --json \
    > killed.json 2> killed.err
rc=$?
t1=$(now)
[ $rc -eq 137 ] || { cat killed.err; fail "the killed run exited $rc, not 137"; }
/usr/bin/time -v "$QPIPE" run r.yaml --no-provenance --threads "$THREADS" --force=gptq --json > resumed.json 2> resumed.err ||
    { cat resumed.err; fail "resumed run"; }
grep -q "gptq: resuming at layer $((KILL + 1))/" resumed.err || { cat resumed.err; fail "no 'resuming at layer $((KILL + 1))'"; }
resumed=$(digest resumed.json)
[ "$resumed" = "$full" ] || fail "resumed digest $resumed differs from the uninterrupted $full"
rss=$(grep 'Maximum resident' resumed.err | awk '{print $NF}')
grep "resuming at layer" resumed.err
printf 'resume: gptq uninterrupted %.1f s; killed after layer %d at %.1f s (whole run); resumed stage %.1f s (peak RSS %d MB); digest %s equal\n' \
    "$full_s" "$KILL" "$(echo "$t1 - $t0" | bc)" "$(secs resumed.json)" "$((rss / 1024))" "${full:0:12}"
