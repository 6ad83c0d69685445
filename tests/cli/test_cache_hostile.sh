# #14 items 8 and 9: the cache never follows a link out of itself, heals
# what is not a regular file in its place, and a forced rebuild replaces a
# damaged stored copy instead of keeping it.
source "$(dirname "$0")/lib.sh"

mkdir data && head -c 300000 /dev/urandom > data/blob.bin && printf 'alpha\n' > data/a.txt
cat > r.yaml <<'Y'
qpipe: 1
name: hostile
stages:
  src: {uses: fetch, with: {source: data}}
Y
C=$QPIPE_CACHE
expect_exit 0 "$QPIPE" run r.yaml --no-provenance
objs=$(find "$C/objects" -type f | sort)
big=$(ls -S $objs | head -1)
small=$(ls -S $objs | tail -1)
printf 'outside\n' > outside.txt && touch -d 2000-01-01 outside.txt
outside_state() { echo "$(cat outside.txt) $(stat -c %Y outside.txt)"; }
before=$(outside_state)

# a link in an object's place: verify reports and removes it, the target untouched
rm -f "$small" && ln -s "$T/outside.txt" "$small"
expect_exit 1 "$QPIPE" cache verify
expect_grep "$small: a symbolic link, not a cache entry; removed"
[ ! -L "$small" ] && [ "$(outside_state)" = "$before" ] || fail "verify followed or kept the link"; ok

# run --force finds a link there: the target is neither touched nor read; the object is written anew
rm -f "$small" && ln -s "$T/outside.txt" "$small"
expect_exit 0 "$QPIPE" run r.yaml --force --no-provenance
[ -f "$small" ] && [ ! -L "$small" ] && [ "$(outside_state)" = "$before" ] || fail "run --force followed the link"; ok

# a link read by a cached run: removed, and the stage recomputed
rm -f "$small" && ln -s "$T/outside.txt" "$small"
rm -f "$big" && mkdir "$big"
expect_exit 0 "$QPIPE" run r.yaml --no-provenance
[ -f "$small" ] && [ -f "$big" ] && [ "$(outside_state)" = "$before" ] || fail "a cached run did not heal the link/directory"; ok
expect_exit 0 "$QPIPE" cache verify
expect_grep "(^| )0 problems"

# a fan-out directory replaced by a link to a directory outside: never entered
fan=$(dirname "$small") && mkdir outdir && cp "$small" "outdir/$(basename "$small")" && chmod 644 "outdir/$(basename "$small")"
printf 'X' | dd of="outdir/$(basename "$small")" bs=1 seek=20 conv=notrunc 2>/dev/null
sum_out=$(sha256sum "outdir/$(basename "$small")")
rm -rf "$fan" && ln -s "$T/outdir" "$fan"
expect_exit 1 "$QPIPE" cache verify
expect_grep "$fan: a symbolic link, not a cache entry; removed"
[ "$(sha256sum "outdir/$(basename "$small")")" = "$sum_out" ] || fail "verify went through the linked fan-out directory"; ok
expect_exit 0 "$QPIPE" run r.yaml --no-provenance
[ -d "$fan" ] && [ ! -L "$fan" ] && [ -f "$small" ] || fail "the fan-out directory was not rebuilt"; ok

# an action entry replaced by a FIFO or a link to a device: never waited on
# or followed; the entry is dropped and the stage runs again
act=$(find "$C/actions" -type f | head -1)
rm -f "$act" && mkfifo "$act"
timeout 60 "$QPIPE" run r.yaml --no-provenance > "$T/out" 2>&1; rc=$?
[ $rc -eq 0 ] || { cat "$T/out" >&2; fail "a FIFO in actions/: exit $rc (124: it waited)"; }; ok
[ -f "$act" ] && [ ! -p "$act" ] || fail "the FIFO was not replaced by the entry"; ok
rm -f "$act" && ln -s /dev/zero "$act"
timeout 60 "$QPIPE" run r.yaml --no-provenance > "$T/out" 2>&1; rc=$?
[ $rc -eq 0 ] || { cat "$T/out" >&2; fail "a link to /dev/zero in actions/: exit $rc"; }; ok
[ -f "$act" ] && [ ! -L "$act" ] || fail "the link was not replaced by the entry"; ok

# #14 item 8: a damaged copy of an object the forced stage makes again is replaced
chmod u+w "$big" && printf 'XXXX' | dd of="$big" bs=1 seek=150000 conv=notrunc 2>/dev/null
expect_exit 0 "$QPIPE" run r.yaml --force --no-provenance
expect_exit 0 "$QPIPE" cache verify
expect_grep "(^| )0 problems"
done_ok
