# Shared helpers for the CLI tests (sourced).  Each test runs in its own
# temp directory; $QPIPE is the binary under test (make test sets it).
set -u
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
QPIPE=${QPIPE:-$REPO/qpipe}
SHARED=${QPIPE_SHARED:-$REPO/../shared}
SHARED=$(cd "$SHARED" 2>/dev/null && pwd || echo "$SHARED")
T=$(mktemp -d "${TMPDIR:-/tmp}/qpipe-cli.XXXXXX")
trap 'rm -rf "$T"' EXIT
cd "$T"
export QPIPE_CACHE="$T/.qpipe/cache"
export GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@t GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@t
checks=0

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { checks=$((checks+1)); }
# expect_exit CODE CMD...: runs CMD, stdout+stderr in $T/out, checks the exit code
expect_exit() {
  local want=$1; shift
  "$@" >"$T/out" 2>&1; local got=$?
  [ "$got" -eq "$want" ] || { cat "$T/out" >&2; fail "expected exit $want, got $got: $*"; }
  ok
}
expect_grep() { grep -qE -- "$1" "${2:-$T/out}" || { cat "${2:-$T/out}" >&2; fail "no line matching '$1'"; }; ok; }
expect_no_grep() { ! grep -qE -- "$1" "${2:-$T/out}" || { cat "${2:-$T/out}" >&2; fail "unexpected line matching '$1'"; }; ok; }
# ran_stages FILE: the sorted ids of stages that ran, from --json output
ran_stages() { grep '"event":"stage"' "${1:-$T/out}" | grep '"status":"ran"' | sed -E 's/^\{"event":"stage","stage":"([^"]*)".*/\1/' | sort | tr '\n' ' ' | sed 's/ $//'; }
# stage_output STAGE [FILE...]: the output digest(s) of STAGE in --json output
stage_output() { local s=$1; shift; cat "${@:-$T/out}" | grep "^{\"event\":\"stage\",\"stage\":\"$s\"" | sed -E 's/.*"output":"([0-9a-f]+)".*/\1/'; }
done_ok() { echo "ok: $checks checks"; }
