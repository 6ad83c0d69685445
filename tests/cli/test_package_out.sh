# #14 item 5: a package replaces its out: directory whole, so out: must be a
# directory strictly inside the recipe's directory and nothing the user
# keeps.  Each bad out: is exit 2 before any stage runs, and the thing it
# named is untouched.
source "$(dirname "$0")/lib.sh"

git init -q . && echo keep > kept.txt && git add kept.txt && git commit -qm init
head_before=$(git rev-parse HEAD)
recipe() {  # OUT
  cat > r.yaml <<Y
qpipe: 1
name: out
stages:
  model: {uses: fetch, with: {source: "$SHARED/models/house-llama"}}
  pkg: {uses: package, needs: [model], with: {format: gguf, out: "$1"}}
Y
}
bad() {  # OUT MESSAGE-REGEX [qpipe args]
  local out=$1 msg=$2; shift 2
  recipe "$out"
  expect_exit 2 "$QPIPE" run r.yaml --no-provenance --json "$@"
  expect_grep "$msg"
  expect_no_grep '"status":"ran"'
}
bad .git "out: '.git' is inside .git"
bad sub/.git/x "out: 'sub/.git/x' is inside .git"
bad .qpipe "out: '.qpipe' is inside .qpipe, where the cache lives"
bad . "out: '.' is the recipe's own directory"
bad ./ "out: './' is the recipe's own directory"
bad .. "out: '..' leaves the recipe's directory"
bad a/.. "out: 'a/..' leaves the recipe's directory"
bad a/../../x "leaves the recipe's directory"
bad /tmp/x "out: must be a relative directory"
bad r.yaml "stage 'pkg': out: .*/r.yaml exists and is not a directory"
ln -s /tmp escape
bad escape/x "stage 'pkg': out: .*/escape is a symbolic link"
bad dist "stage 'pkg': out: .*/dist holds the cache .*/dist/cache" --cache-dir "$T/dist/cache"
bad dist/cache/x "stage 'pkg': out: .*/dist/cache/x is inside the cache" --cache-dir "$T/dist/cache"
[ "$(git rev-parse HEAD)" = "$head_before" ] && [ -f .git/HEAD ] && [ "$(cat kept.txt)" = keep ] &&
  grep -q "uses: package" r.yaml || fail "a refused out: changed the repository or the recipe"; ok
git status --porcelain | grep -qv '^??' && fail "the index or worktree changed"; ok
# a plain subdirectory still packages
recipe dist/gguf
expect_exit 0 "$QPIPE" run r.yaml --no-provenance
ls dist/gguf/*.gguf >/dev/null || fail "no GGUF in dist/gguf"; ok
done_ok
