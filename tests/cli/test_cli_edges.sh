# #14 items 4 and 14: command-line values that used to be taken silently
# (a thread count that wrapped round, a --force naming no stage, an empty
# cache directory that meant the current one) and a recipe path that is a
# device; each is exit 2 with one line saying what to give instead.
source "$(dirname "$0")/lib.sh"

cat > r.yaml <<'Y'
qpipe: 1
name: edges
stages:
  a: {uses: run, with: {cmd: "true"}}
Y
expect_exit 2 "$QPIPE" run r.yaml --threads 4294967297 --no-provenance
expect_grep "^qpipe: --threads 4294967297: expected a number between 1 and 1024"
expect_exit 2 "$QPIPE" run r.yaml --threads 2x --no-provenance
expect_grep "^qpipe: --threads 2x: expected a number between 1 and 1024"
expect_exit 2 "$QPIPE" run r.yaml -j 0x10 --no-provenance
expect_grep "^qpipe: -j 0x10: expected a number of parallel stages"
QPIPE_THREADS=-3 expect_exit 2 "$QPIPE" run r.yaml --no-provenance
expect_grep "^qpipe: QPIPE_THREADS=-3: expected a number between 1 and 1024"
expect_exit 2 "$QPIPE" run r.yaml --force=nosuch --no-provenance
expect_grep "^qpipe: r.yaml: --force=nosuch: no such stage"
expect_exit 2 "$QPIPE" run r.yaml --force= --no-provenance
expect_grep "^qpipe: --force=: expected a stage ID"
expect_exit 2 "$QPIPE" run r.yaml --cache-dir '' --no-provenance
expect_grep "^qpipe: --cache-dir '': expected a directory"
[ ! -e objects ] && [ ! -e actions ] || fail "--cache-dir '' made a cache in the current directory"; ok
expect_exit 2 "$QPIPE" plan /dev/zero
expect_grep "^qpipe: /dev/zero: not a regular file"
# the values that are right still run
expect_exit 0 "$QPIPE" run r.yaml --threads 3 -j 2 --force=a --no-provenance
done_ok
