# Four `qpipe run` at once on one cache: all succeed, every stage runs in
# exactly one process, and all four report identical outputs.
source "$(dirname "$0")/lib.sh"

git init -q . && mkdir data && head -c 2000000 /dev/urandom > data/blob.bin
cat > r.yaml <<'Y'
qpipe: 1
name: conc
stages:
  src: {uses: fetch, with: {source: data}}
  a: {uses: run, needs: [src], with: {cmd: "sleep 0.3; sha256sum $QPIPE_INPUT_SRC/files/blob.bin | cut -c1-16 > a.txt", outs: [a.txt]}}
  b: {uses: run, needs: [src], with: {cmd: "sleep 0.2; wc -c < $QPIPE_INPUT_SRC/files/blob.bin > b.txt; echo '{\"size\": '$(cat b.txt)'}' > b.json", outs: [b.txt], metrics: b.json}}
  c: {uses: run, needs: [a, b], with: {cmd: "cat $QPIPE_INPUT_A/files/a.txt $QPIPE_INPUT_B/files/b.txt > c.txt", outs: [c.txt]}}
  g: {uses: gate, needs: [b], with: {min_size: 1000}}
Y
git add r.yaml && git commit -qm recipe
for i in 1 2 3 4; do
  "$QPIPE" run r.yaml -j 2 --json > run$i.out 2> run$i.err &
  pids="${pids:-} $!"
done
for p in $pids; do wait $p || { cat run*.err >&2; fail "a concurrent run failed"; }; ok; done
for s in src a b c g; do
  n=$(cat run*.out | grep "^{\"event\":\"stage\",\"stage\":\"$s\"" | grep -c '"status":"ran"')
  [ "$n" -eq 1 ] || fail "stage $s ran $n times across the four processes"; ok
  outs=$(stage_output "$s" run*.out | sort -u | wc -l)
  [ "$outs" -eq 1 ] || fail "stage $s: $outs different outputs"; ok
done
expect_exit 0 "$QPIPE" cache verify
expect_grep ': 0 problems'
# every process that executed a stage recorded provenance; the chain is linear
n=$(git rev-list --count qpipe/provenance)
[ "$n" -ge 1 ] && [ "$n" -le 4 ] || fail "provenance commits: $n"; ok
[ "$(git rev-list --merges qpipe/provenance | wc -l)" -eq 0 ] || fail "merge commits"; ok
done_ok
