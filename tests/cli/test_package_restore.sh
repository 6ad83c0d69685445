# A cached package leaves its `out:` directory exactly as a fresh one does:
# the package's files, restored when missing or changed, and nothing else —
# not the GGUF of another package that used the same directory (a recipe
# switched from A to B and back used to leave B.gguf beside A.gguf, under
# A's model card).  A package killed mid-write leaves no half-written copy
# behind for good: the next package run sweeps it.
source "$(dirname "$0")/lib.sh"

for n in A B; do
cat > $n.yaml <<Y
qpipe: 1
name: pkg
stages:
  model: {uses: fetch, with: {source: "$SHARED/models/house-qwen"}}
  q: {uses: quantize, needs: [model], with: {method: gguf, type: Q8_0}}
  package: {uses: package, needs: [q], with: {format: gguf, out: dist, name: $n}}
Y
done
listing() { (cd dist && ls -A | tr '\n' ' '); }
expect_exit 0 "$QPIPE" run A.yaml --no-provenance
[ "$(listing)" = "A.gguf MODEL_CARD.md provenance.json " ] || fail "fresh A: $(listing)"; ok
sha256sum dist/* > a.sums
expect_exit 0 "$QPIPE" run B.yaml --no-provenance
[ "$(listing)" = "B.gguf MODEL_CARD.md provenance.json " ] || fail "fresh B: $(listing)"; ok
expect_exit 0 "$QPIPE" run A.yaml --no-provenance
expect_grep '3 stages: 0 ran, 3 cached'
[ "$(listing)" = "A.gguf MODEL_CARD.md provenance.json " ] || fail "cached A: $(listing)"; ok
sha256sum -c --quiet a.sums || fail "cached A differs from fresh A"; ok
# a stray file and a changed one: the cached run makes the directory A's again
echo stray > dist/notes.txt
mkdir dist/sub
echo changed > dist/MODEL_CARD.md
expect_exit 0 "$QPIPE" run A.yaml --no-provenance
expect_grep '3 stages: 0 ran, 3 cached'
[ "$(listing)" = "A.gguf MODEL_CARD.md provenance.json " ] || fail "cached A after edits: $(listing)"; ok
sha256sum -c --quiet a.sums || fail "cached A differs from fresh A"; ok

# a package killed mid-write leaves dist.tmp-PID-XXXXXX (or dist.old-PID)
# beside dist: the next package run removes those of dead processes and
# keeps a live one's (another run writing the same out:)
sh -c 'exit 0' & dead=$!
wait $dead
mkdir "dist.tmp-$dead-abcdef" "dist.old-$dead" "dist.tmp-$$-ghijkl" dist.tmp-notapid
echo half > "dist.tmp-$dead-abcdef/A.gguf"
expect_exit 0 "$QPIPE" run A.yaml --force=package --no-provenance
[ ! -e "dist.tmp-$dead-abcdef" ] && [ ! -e "dist.old-$dead" ] || fail "stale package dirs left: $(ls -d dist.*)"; ok
[ -d "dist.tmp-$$-ghijkl" ] && [ -d dist.tmp-notapid ] || fail "a live or foreign dir was removed"; ok
[ "$(listing)" = "A.gguf MODEL_CARD.md provenance.json " ] || fail "forced A: $(listing)"; ok
sha256sum -c --quiet a.sums || fail "forced A differs from fresh A"; ok
expect_exit 0 "$QPIPE" cache verify
done_ok
