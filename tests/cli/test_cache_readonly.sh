# #14 item 13: a read-only cache (a CI cache mounted read-only) serves hits
# — a fully cached run, and a package whose out: is missing made again from
# cached tensors — and fails only when something must be written, naming
# the cache.  The mount is read-only in a user namespace (unshare -rm).
source "$(dirname "$0")/lib.sh"

if ! unshare -rm true 2>/dev/null; then
  echo "skipped: no user namespaces here (unshare -rm), so no read-only mount to test with"
  exit 0
fi
mkdir data && printf 'alpha\n' > data/a.txt
cat > r.yaml <<Y
qpipe: 1
name: ro
stages:
  src: {uses: fetch, with: {source: data}}
  model: {uses: fetch, with: {source: "$SHARED/models/house-llama"}}
  q: {uses: quantize, needs: [model], with: {method: gguf, type: Q8_0}}
  w: {uses: run, needs: [src], with: {cmd: "cat \$QPIPE_INPUT_SRC/files/a.txt > o.txt", outs: [o.txt]}}
  pkg: {uses: package, needs: [q], with: {format: gguf, out: dist}}
Y
C=$QPIPE_CACHE
expect_exit 0 "$QPIPE" run r.yaml --no-provenance
sum_before=$(find "$C" -type f | sort | xargs sha256sum | sha256sum)
ro() {  # runs qpipe with the cache mounted read-only; stdout+stderr in $T/out
  unshare -rm bash -c 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"' ro "$C" "$@" \
    > "$T/out" 2>&1
}
ro "$QPIPE" run r.yaml --no-provenance; [ $? -eq 0 ] || { cat "$T/out" >&2; fail "a cached run on a read-only cache failed"; }; ok
expect_grep "0 ran, 5 cached"
rm -rf dist
ro "$QPIPE" run r.yaml --no-provenance; [ $? -eq 0 ] || { cat "$T/out" >&2; fail "re-packaging from a read-only cache failed"; }; ok
ls dist/*.gguf >/dev/null || fail "dist was not made again"; ok
touch data/a.txt   # same bytes, new mtime: hashed again, still a hit
ro "$QPIPE" run r.yaml --no-provenance; [ $? -eq 0 ] || { cat "$T/out" >&2; fail "a touched input failed on a read-only cache"; }; ok
echo changed > data/a.txt   # now src must be stored: that fails, naming the cache
ro "$QPIPE" run r.yaml --no-provenance; [ $? -eq 1 ] || { cat "$T/out" >&2; fail "a needed write did not fail"; }; ok
expect_grep "^qpipe: .*(Read-only file system|is read-only)"
[ "$(find "$C" -type f | sort | xargs sha256sum | sha256sum)" = "$sum_before" ] || fail "the read-only cache changed"; ok
done_ok
