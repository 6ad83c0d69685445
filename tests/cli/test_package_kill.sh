# A package that fails or is killed mid-write never leaves a partial file
# where the package goes: `out:` is either absent, the previous complete
# package, or the new complete one — never a half-written GGUF, and no
# temp file inside it.  (The GGUF is written to a hidden temp file in a
# temp directory beside out:, fsynced, renamed; the directory is swapped in.)
source "$(dirname "$0")/lib.sh"

cat > r.yaml <<Y
qpipe: 1
name: pkgkill
stages:
  model: {uses: fetch, with: {source: "$SHARED/models/house-llama"}}
  q: {uses: quantize, needs: [model], with: {method: gguf, type: BF16}}
  package: {uses: package, needs: [q], with: {format: gguf, out: dist, name: B}}
Y
listing() { (cd dist && LC_ALL=C ls -A | tr '\n' ' '); }
expect_exit 0 "$QPIPE" run r.yaml --no-provenance
[ "$(listing)" = "B.gguf README.md provenance.json " ] || fail "fresh: $(listing)"; ok
sha256sum dist/* > ref.sums
complete_or_absent() {
  if [ -e dist ]; then
    [ "$(listing)" = "B.gguf README.md provenance.json " ] || fail "after $1: dist holds $(listing)"
    sha256sum -c --quiet ref.sums || fail "after $1: dist differs from the complete package"
  fi
  ok
}

# SIGKILL at varied moments, with and without a previous package in place
for i in $(seq 1 8); do
  [ $((i % 2)) -eq 0 ] && rm -rf dist
  "$QPIPE" run r.yaml --force=package --no-provenance >/dev/null 2>&1 &
  pid=$!
  sleep "0.$(printf '%03d' $(( (i * 61) % 300 + 10 )))"
  kill -9 $pid 2>/dev/null
  wait $pid 2>/dev/null
  complete_or_absent "kill $i"
done

# killed at a known point mid-write: a 2 MiB file size limit stops the
# 10 MB GGUF with SIGXFSZ; out: keeps the previous complete package, and the
# next run sweeps the dead run's temp directory
expect_exit 0 "$QPIPE" run r.yaml --force=package --no-provenance
sha256sum -c --quiet ref.sums || fail "rerun differs"; ok
(ulimit -f 2048; exec "$QPIPE" run r.yaml --force=package --no-provenance) >out.txt 2>&1
rc=$?
[ $rc -ne 0 ] || fail "the package ran to the end under a 2 MiB file size limit"; ok
complete_or_absent "SIGXFSZ"
[ -n "$(ls -d dist.tmp-* 2>/dev/null)" ] || fail "no temp directory: the kill came before the write"; ok
[ -z "$(find dist -name '.qpipe-*')" ] || fail "temp file inside dist"; ok
expect_exit 0 "$QPIPE" run r.yaml --force=package --no-provenance
sha256sum -c --quiet ref.sums || fail "package after the kill differs"; ok
[ -z "$(ls -d dist.tmp-* dist.old-* 2>/dev/null)" ] || fail "left beside dist: $(ls -d dist.*)"; ok
expect_exit 0 "$QPIPE" cache verify
expect_grep ': 0 problems'
done_ok
