# #14 item 7: run records never move what the user works on.  A branch that
# is checked out (HEAD, unborn HEAD, another worktree), a name that is not
# a branch name, and an existing branch of someone's history are refused
# before anything runs (exit 2); HEAD, the index and the worktree never change.
source "$(dirname "$0")/lib.sh"

git init -q -b main repo && cd repo
cat > r.yaml <<'Y'
qpipe: 1
name: prov
stages:
  a: {uses: run, with: {cmd: "echo ${env.N:-0} > a.txt", outs: [a.txt]}}
Y
printf 'a.txt\n.qpipe/\n' > .gitignore
git add r.yaml .gitignore && git commit -qm "recipe"
state() { echo "$(git symbolic-ref HEAD) $(git rev-parse HEAD) $(git status --porcelain | tr '\n' ' ')"; }
refused() {  # MESSAGE-REGEX run-args...
  local msg=$1; shift
  local before; before=$(state)
  N=$RANDOM expect_exit 2 "$QPIPE" run r.yaml --json "$@"
  expect_grep "$msg"
  expect_no_grep '"status":"ran"'
  [ "$(state)" = "$before" ] || fail "HEAD, index or worktree changed: $before -> $(state)"; ok
}
refused "provenance branch 'main' is checked out \(HEAD\)" --branch main
refused "provenance branch 'HEAD' is not a valid git branch name" --branch HEAD
[ ! -e .git/refs/heads/HEAD ] || fail "refs/heads/HEAD was created"; ok
refused "provenance branch '-x' is not a valid git branch name" --branch -x
# someone's branch: not appended to
git branch feature && feature_tip=$(git rev-parse feature)
refused "branch 'feature' exists and its tip is not a qpipe run record" --branch feature
[ "$(git rev-parse feature)" = "$feature_tip" ] || fail "feature moved"; ok
# a branch checked out in another worktree
git worktree add -q ../wt -b wtbranch
refused "provenance branch 'wtbranch' is checked out in a worktree" --branch wtbranch
# the default branch: written, HEAD stays; then checked out, it is refused
before=$(state)
N=1 expect_exit 0 "$QPIPE" run r.yaml
expect_grep "^provenance: [0-9a-f]{12} on qpipe/provenance"
[ "$(state)" = "$before" ] || fail "a recorded run changed HEAD/index/worktree"; ok
cp r.yaml ../r.yaml.keep && git checkout -q qpipe/provenance && cp ../r.yaml.keep r.yaml
refused "provenance branch 'qpipe/provenance' is checked out \(HEAD\)"
rm r.yaml && git checkout -q main
# an unborn HEAD names a branch that does not exist yet
cd .. && git init -q -b records fresh && cd fresh && cp ../repo/r.yaml . 
N=2 expect_exit 2 "$QPIPE" run r.yaml --branch records
expect_grep "provenance branch 'records' is checked out \(HEAD\)"
git rev-parse -q --verify refs/heads/records >/dev/null && fail "the unborn branch was created"; ok
done_ok
