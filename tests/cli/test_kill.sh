# SIGKILL `qpipe run` mid-stage 20 times at varied points: afterwards
# `qpipe cache verify` reports 0 problems every time, no out is left
# half-written where the cache claims it, and the next run completes.
source "$(dirname "$0")/lib.sh"

mkdir data && head -c 3000000 /dev/urandom > data/blob.bin && printf 'x\n' > data/x.txt
cat > r.yaml <<'Y'
qpipe: 1
name: kill
stages:
  src: {uses: fetch, with: {source: data}}
  big:
    uses: run
    needs: [src]
    with: {cmd: "cat $QPIPE_INPUT_SRC/files/blob.bin $QPIPE_INPUT_SRC/files/blob.bin $QPIPE_INPUT_SRC/files/blob.bin > big.bin && echo '{\"n\": 1}' > m.json", outs: [big.bin], metrics: m.json}
  copy:
    uses: run
    needs: [big]
    with: {cmd: "cp $QPIPE_INPUT_BIG/files/big.bin copy.bin", outs: [copy.bin]}
  gate: {uses: gate, needs: [big], with: {max_n: 1}}
Y
for i in $(seq 1 20); do
  # vary the cache's state and the moment of the kill
  if [ $((i % 5)) -eq 0 ]; then rm -rf "$QPIPE_CACHE"; fi
  "$QPIPE" run r.yaml --force --no-provenance >/dev/null 2>&1 &
  pid=$!
  sleep "0.$(printf '%03d' $(( (i * 37) % 400 + 5 )))"
  kill -9 $pid 2>/dev/null
  wait $pid 2>/dev/null
  expect_exit 0 "$QPIPE" cache verify
  expect_grep ': 0 problems'
done
expect_exit 0 "$QPIPE" run r.yaml --no-provenance
expect_grep '4 stages: .* 0 failed'
cmp big.bin copy.bin || fail "copy differs from big"; ok
[ "$(stat -c %s big.bin)" -eq 9000000 ] || fail "big.bin has the wrong size"; ok
expect_exit 0 "$QPIPE" run r.yaml --no-provenance --json
expect_grep '"ran":0,"cached":4'
expect_exit 0 "$QPIPE" cache verify
expect_grep ': 0 problems'
done_ok
