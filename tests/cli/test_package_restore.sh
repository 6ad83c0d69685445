# A cached package leaves its `out:` directory exactly as a fresh one does:
# the package's files, restored when missing or changed, and nothing else —
# not the GGUF of another package that used the same directory (a recipe
# switched from A to B and back used to leave B.gguf beside A.gguf, under
# A's model card).
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
expect_exit 0 "$QPIPE" cache verify
done_ok
