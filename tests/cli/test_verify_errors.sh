# `qpipe verify` (exit 4 naming the stage and file on a difference), and the
# exit codes and one-line messages of user errors.
source "$(dirname "$0")/lib.sh"

printf 'a b c\n' > in.txt
cat > r.yaml <<'Y'
qpipe: 1
name: verify
stages:
  src: {uses: fetch, with: {source: in.txt}}
  det: {uses: run, needs: [src], with: {cmd: "tr a-z A-Z < $QPIPE_INPUT_SRC/files/in.txt > det.txt", outs: [det.txt]}}
Y
expect_exit 0 "$QPIPE" run r.yaml --no-provenance
expect_exit 0 "$QPIPE" verify r.yaml
expect_grep '2 stages: 2 ran'
cat >> r.yaml <<'Y'
  clock: {uses: run, with: {cmd: "date +%s%N > clock.txt", outs: [clock.txt]}}
Y
expect_exit 0 "$QPIPE" run r.yaml --no-provenance
expect_exit 4 "$QPIPE" verify r.yaml
expect_grep 'DIFFERS +clock +run .*differs from the cached output: files/clock.txt'
expect_grep "qpipe: stage 'clock': differs from the cached output: files/clock.txt"

# bad recipe: exit 2, file:line:col
cat > bad.yaml <<'Y'
qpipe: 1
name: bad
stages:
  a: {uses: fetch, with: {source: in.txt}}
  b: {uses: gate, needs: [a, nope], with: {max_x: 1}}
Y
expect_exit 2 "$QPIPE" run bad.yaml
expect_grep "^qpipe: bad.yaml:5:[0-9]+: .*'nope'"
[ "$(wc -l < "$T/out")" -eq 1 ] || fail "more than one line"; ok
expect_exit 2 "$QPIPE" run missing.yaml
expect_grep '^qpipe: missing.yaml: '
expect_exit 2 "$QPIPE" run
expect_exit 2 "$QPIPE" frobnicate
expect_exit 2 "$QPIPE" run r.yaml -j 0

# a missing file a stage reads: exit 1, names the recipe position and the file
cat > miss.yaml <<'Y'
qpipe: 1
name: miss
stages:
  x: {uses: run, with: {cmd: "true", deps: [nothere.txt]}}
Y
expect_exit 1 "$QPIPE" run miss.yaml --no-provenance
expect_grep "miss.yaml:4:[0-9]+: stage 'x': deps: .*nothere.txt: No such file or directory"

# a failing command: exit 1, its output shown, downstream blocked, no action recorded
cat > failing.yaml <<'Y'
qpipe: 1
name: failing
stages:
  f: {uses: run, with: {cmd: "echo boom-output; exit 7", outs: [f.txt]}}
  g: {uses: run, needs: [f], with: {cmd: "true"}}
Y
expect_exit 1 "$QPIPE" run failing.yaml --no-provenance
expect_grep 'boom-output'
expect_grep "qpipe: stage 'f': command exited with status 7"
expect_grep 'blocked +g '

# a corrupt cache object is reported, removed and recomputed, never used
expect_exit 0 "$QPIPE" run r.yaml --no-provenance
obj=$(find "$QPIPE_CACHE/objects" -type f | head -1)
for o in $(find "$QPIPE_CACHE/objects" -type f); do printf 'garbage' | dd of="$o" bs=1 seek=20 conv=notrunc 2>/dev/null; done
expect_exit 0 "$QPIPE" run r.yaml --no-provenance
expect_grep '3 stages: [1-3] ran'
[ "$(cat det.txt)" = "A B C" ] || fail "det.txt wrong after recompute"; ok
"$QPIPE" cache verify >/dev/null 2>&1   # removes the corrupt objects the run did not need
expect_exit 0 "$QPIPE" cache verify
expect_grep ': 0 problems'
expect_exit 0 "$QPIPE" run r.yaml --no-provenance
for o in $(find "$QPIPE_CACHE/objects" -type f | head -3); do printf 'garbage' | dd of="$o" bs=1 seek=20 conv=notrunc 2>/dev/null; done
expect_exit 1 "$QPIPE" cache verify
expect_grep 'problem: .*corrupt'
expect_grep ': [3-9] problems'
expect_exit 0 "$QPIPE" cache verify
expect_grep ': 0 problems'
expect_exit 0 "$QPIPE" cache gc --max-size 1
expect_exit 0 "$QPIPE" cache stats
expect_grep 'objects: 0 '
expect_exit 2 "$QPIPE" cache gc --max-size lots
expect_grep 'lots'
done_ok
