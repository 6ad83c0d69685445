# Resumable long stages: GPTQ, AWQ, mixed and calibrate checkpoint every
# layer into the cache.  A run SIGKILLed right after layer N's checkpoint
# (QPIPE_TEST_KILL_AFTER_LAYER, test-only) is rerun: it says it resumes at
# layer N+1, the run record says so, and every output digest equals an
# uninterrupted run's in a fresh cache.  A corrupt checkpoint is discarded
# with one warning and the layer before it is used; a checkpoint of another
# stage key is never used; a finished stage leaves no checkpoint behind, and
# `qpipe cache gc` removes the entries of a stage that finished anyway.
# Activations spilled to disk (QPIPE_ACT_MEM=0) resume the same way.
source "$(dirname "$0")/lib.sh"

mkdir repo && cd repo && git init -q .
cat > r.yaml <<Y
qpipe: 1
name: resume
stages:
  model: {uses: fetch, with: {source: "$SHARED/models/house-llama"}}
  calib:
    uses: calibrate
    needs: [model]
    with: {dataset: "$SHARED/data/shakespeare/train.txt", samples: 4, seq_len: 64, seed: 0}
  gptq:
    uses: quantize
    needs: [model, calib]
    with: {method: gptq, bits: 4, group_size: 64, act_order: true}
  awq:
    uses: quantize
    needs: [model, calib]
    with: {method: awq, bits: 4, group_size: 64, clip: false}
  mixed:
    uses: quantize
    needs: [model, calib]
    with: {method: mixed, bpw_of: Q4_K_M, ladder: [Q4_K, Q6_K]}
Y
printf '.qpipe/\n' > .gitignore
git add -A && git commit -qm init

# outputs: "stage digest" lines of a --json run, sorted
outputs() { grep '"event":"stage"' "$1" | sed -E 's/^\{"event":"stage","stage":"([^"]*)".*"output":"([0-9a-f]+)".*/\1 \2/' | sort; }

# the uninterrupted run, in its own cache
QPIPE_CACHE="$T/fresh" "$QPIPE" run r.yaml --no-provenance --json -j1 > "$T/fresh.json" 2>&1 || { cat "$T/fresh.json"; fail "fresh run"; }
ok
outputs "$T/fresh.json" > "$T/fresh.out"
[ "$(wc -l < "$T/fresh.out")" -eq 5 ] || fail "fresh run: $(cat "$T/fresh.out")"; ok

# kill_at NAME:N [--force=ID] — runs r.yaml until the stage called STAGE has checkpointed layer N
kill_at() {
  QPIPE_TEST_KILL_AFTER_LAYER=$1 "$QPIPE" run r.yaml --no-provenance -j1 ${2:-} > "$T/killed" 2>&1
  local rc=$?
  [ $rc -eq 137 ] || { cat "$T/killed" >&2; fail "run with QPIPE_TEST_KILL_AFTER_LAYER=$1 exited $rc, not 137 (SIGKILL)"; }
  ok
}

# each long stage, killed mid-stage and resumed by a run of that stage
# (calibrate first: the quantize stages need it); the record of the last
# resumed run (mixed) is checked below
resume_at() {  # STAGE-ID NAME N: kill after layer N, rerun, expect layer N+1
  kill_at "$2:$3"
  expect_exit 0 "$QPIPE" run r.yaml --json -j1 --stage "$1" ${4:-}
  expect_grep "^qpipe: stage '$1': $2: resuming at layer $(($3 + 1))/6 from checkpoint\$"
  expect_grep "\"event\":\"note\",\"stage\":\"$1\",\"message\":\"$2: resuming at layer $(($3 + 1))/6 from checkpoint\""
  expect_grep "\"event\":\"stage\",\"stage\":\"$1\",\"kind\":\"[a-z]+\",\"status\":\"ran\""
}
resume_at calib calibrate 2 --no-provenance
resume_at gptq gptq 2 --no-provenance
resume_at awq awq 3 --no-provenance
resume_at mixed mixed 1
expect_exit 0 "$QPIPE" run r.yaml --no-provenance --json -j1
cp "$T/out" "$T/resumed.json"
expect_grep '"ran":0,"cached":5'
outputs "$T/resumed.json" > "$T/resumed.out"
diff "$T/fresh.out" "$T/resumed.out" || fail "resumed outputs differ from the uninterrupted run"; ok
# the run record says which stages resumed, and where
git show qpipe/provenance:run.json > "$T/rec"
tr -d ' \n' < "$T/rec" > "$T/rec1"
expect_grep '"resumed":\{"layer":2,"layers":6,"what":"mixed"\},"seconds"' "$T/rec1"
# finished stages keep no checkpoint: nothing left for gc but garbage
expect_exit 0 "$QPIPE" cache verify
expect_grep ': 0 problems'
expect_exit 0 "$QPIPE" cache gc
expect_grep 'removed [0-9]+ objects .*, 0 actions'

# a corrupt newest checkpoint: one warning, then the layer before it
kill_at gptq:3 --force=gptq
# the last two objects written are layer 3's activations and its manifest
newest=$(ls -t "$QPIPE_CACHE"/objects/*/* | head -2)
for f in $newest; do chmod u+w "$f"; printf 'garbage' | dd of="$f" bs=1 seek=20 conv=notrunc 2>/dev/null; done
expect_exit 0 "$QPIPE" run r.yaml --no-provenance --force=gptq -j1 --json
expect_grep "^qpipe: warning: stage 'gptq': gptq: checkpoint of layer 3/6 is unusable \(.*\); discarded$"
[ "$(grep -c 'checkpoint of layer' "$T/out")" -eq 1 ] || fail "more than one warning line"; ok
expect_grep "^qpipe: stage 'gptq': gptq: resuming at layer 3/6 from checkpoint$"
outputs "$T/out" | grep '^gptq ' > "$T/g.out"
grep '^gptq ' "$T/fresh.out" | diff - "$T/g.out" || fail "gptq after a corrupt checkpoint differs"; ok

# activations spilled to disk (QPIPE_ACT_MEM=0) are checkpointed and
# restored window by window: the same resume, the same bytes
QPIPE_ACT_MEM=0 kill_at gptq:1 --force=gptq
QPIPE_ACT_MEM=0 expect_exit 0 "$QPIPE" run r.yaml --no-provenance --force=gptq -j1 --json
expect_grep "^qpipe: stage 'gptq': gptq: resuming at layer 2/6 from checkpoint$"
outputs "$T/out" | grep '^gptq ' > "$T/g.out"
grep '^gptq ' "$T/fresh.out" | diff - "$T/g.out" || fail "gptq resumed with spilled activations differs"; ok
QPIPE_ACT_MEM=0 kill_at calibrate:4 --force=calib
QPIPE_ACT_MEM=0 expect_exit 0 "$QPIPE" run r.yaml --no-provenance --force=calib --stage calib -j1 --json
expect_grep "^qpipe: stage 'calib': calibrate: resuming at layer 5/6 from checkpoint$"
outputs "$T/out" | grep '^calib ' > "$T/c.out"
grep '^calib ' "$T/fresh.out" | diff - "$T/c.out" || fail "calibrate resumed with spilled activations differs"; ok

# another key (other bits) never uses gptq's checkpoint; gptq still does
kill_at gptq:4 --force=gptq
sed 's/method: gptq, bits: 4/method: gptq, bits: 3/' r.yaml > r3.yaml
expect_exit 0 "$QPIPE" run r3.yaml --no-provenance -j1 --stage gptq
expect_no_grep 'resuming'
expect_exit 0 "$QPIPE" run r.yaml --no-provenance --force=gptq -j1 --json
expect_grep "^qpipe: stage 'gptq': gptq: resuming at layer 5/6 from checkpoint$"
outputs "$T/out" | grep '^gptq ' > "$T/g.out"
grep '^gptq ' "$T/fresh.out" | diff - "$T/g.out" || fail "gptq resumed at layer 5 differs"; ok

# checkpoints of a stage that finished anyway (here: by a run without the
# kill after the killed one left its entries, simulated by restoring them)
kill_at gptq:2 --force=gptq
cp -a "$QPIPE_CACHE/actions" "$T/actions.saved"
expect_exit 0 "$QPIPE" run r.yaml --no-provenance --force=gptq -j1
cp -an "$T/actions.saved/." "$QPIPE_CACHE/actions/"
expect_exit 0 "$QPIPE" cache gc
expect_grep 'removed [0-9]+ objects .*, 2 actions'
expect_exit 0 "$QPIPE" cache gc
expect_grep 'removed 0 objects .*, 0 actions'
expect_exit 0 "$QPIPE" run r.yaml --no-provenance --json
expect_grep '"ran":0,"cached":5'
done_ok
