# A cached package leaves its `out:` directory exactly as a fresh one does:
# the package's files, restored when missing or changed (the small ones from
# the cache; the GGUF, which the cache does not keep a second copy of, by
# packaging again from the cached quantized tensors), and nothing else —
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
listing() { (cd dist && LC_ALL=C ls -A | tr '\n' ' '); }
expect_exit 0 "$QPIPE" run A.yaml --no-provenance
[ "$(listing)" = "A.gguf README.md provenance.json " ] || fail "fresh A: $(listing)"; ok
sha256sum dist/* > a.sums
expect_exit 0 "$QPIPE" run B.yaml --no-provenance
[ "$(listing)" = "B.gguf README.md provenance.json " ] || fail "fresh B: $(listing)"; ok
# B's package replaced dist: A's GGUF is rebuilt (not kept in the cache),
# its card and provenance restored
expect_exit 0 "$QPIPE" run A.yaml --no-provenance
expect_grep '3 stages: 1 ran, 2 cached'
expect_grep 'out: files were missing or changed; rebuilt'
[ "$(listing)" = "A.gguf README.md provenance.json " ] || fail "cached A: $(listing)"; ok
sha256sum -c --quiet a.sums || fail "cached A differs from fresh A"; ok
# the GGUF is not in the cache: objects are named by the SHA-256 of their bytes
gsum=$(sha256sum dist/A.gguf | cut -c1-64)
[ -d .qpipe/cache/objects/00 ] || [ -n "$(ls .qpipe/cache/objects)" ] || fail "no cache at .qpipe/cache"
[ ! -e ".qpipe/cache/objects/${gsum:0:2}/${gsum:2}" ] || fail "the GGUF is in the cache"; ok
expect_exit 0 "$QPIPE" run A.yaml --no-provenance
expect_grep '3 stages: 0 ran, 3 cached'
# a changed GGUF (same size, one byte): rebuilt (plan, which reads no
# bytes, says so beforehand only when the size differs: truncated below)
printf 'X' | dd of=dist/A.gguf bs=1 seek=100 conv=notrunc 2>/dev/null
expect_exit 0 "$QPIPE" run A.yaml --no-provenance
expect_grep '3 stages: 1 ran, 2 cached'
sha256sum -c --quiet a.sums || fail "rebuilt A differs from fresh A"; ok
truncate -s 1000 dist/A.gguf
expect_exit 0 "$QPIPE" plan A.yaml
expect_grep 'package .*out: files are missing or changed; they will be rebuilt'
# the package's output is still known (its action is cached): a lock can
# be written with dist/ gone, as in a CI job that restored only the cache
rm -rf dist
expect_exit 0 "$QPIPE" lock A.yaml
[ -s A.yaml.lock ] || fail "no A.yaml.lock"; ok
grep -A4 '^  package:' A.yaml.lock | grep -q 'output: [0-9a-f]\{64\}' || fail "the lock lacks the package's output"; ok
expect_exit 0 "$QPIPE" run A.yaml --no-provenance
expect_grep '3 stages: 1 ran, 2 cached'
sha256sum -c --quiet a.sums || fail "rebuilt A differs from fresh A"; ok
# a stray file and a changed one: the cached run makes the directory A's again
echo stray > dist/notes.txt
mkdir dist/sub
echo changed > dist/README.md
expect_exit 0 "$QPIPE" run A.yaml --no-provenance
expect_grep '3 stages: 0 ran, 3 cached'
[ "$(listing)" = "A.gguf README.md provenance.json " ] || fail "cached A after edits: $(listing)"; ok
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
[ "$(listing)" = "A.gguf README.md provenance.json " ] || fail "forced A: $(listing)"; ok
sha256sum -c --quiet a.sums || fail "forced A differs from fresh A"; ok
# a run stage that needs the package gets the GGUF copied from out: (the
# cache has no copy), checked against the manifest's digest
cp A.yaml C.yaml
cat >> C.yaml <<'Y'
  sum: {uses: run, needs: [package], with: {cmd: "sha256sum $QPIPE_INPUT_PACKAGE/files/dist/A.gguf | cut -c1-64 > sum.txt", outs: [sum.txt]}}
Y
expect_exit 0 "$QPIPE" run C.yaml --no-provenance
[ "$(cat sum.txt)" = "$(sha256sum dist/A.gguf | cut -c1-64)" ] || fail "the run stage saw another GGUF"; ok
expect_exit 0 "$QPIPE" cache verify
done_ok
