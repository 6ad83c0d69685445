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
bad . "out: '.' names no subdirectory"
bad ./ "out: './' names no subdirectory"
bad .. "out: '..' names no subdirectory"
bad ./.git "out: './.git' is inside .git"
bad .qpipe/../x "out: '.qpipe/../x' is inside .qpipe"
bad a/./../b "out: 'a/./../b': write it without '.' after the first word"
bad dist/. "out: 'dist/.': write it without '.' after the first word"
bad a/.. "out: 'a/..': '..' may only lead the path"
bad a/../../x "out: 'a/../../x': '..' may only lead the path"
bad ../../../../../../../../../../tmp/x "stage 'pkg': out: '[./]*tmp/x' leads to .*, outside the recipe's work tree"
bad /tmp/x "out: must be a relative directory"
bad "$(printf 'dist/a\\nb')" "out: holds a control character \(byte 0x0a at 6\)"
bad "dist/$(printf 'x%.0s' $(seq 201))" "out: has a directory name of 201 bytes; give names of at most 200"
bad "$(printf 'd/%.0s' $(seq 520))" "out: is 1040 bytes long; give a path of at most 1024"
bad r.yaml "stage 'pkg': out: .*/r.yaml exists and is not a directory"
recipe dist && sed -i 's|out: "dist"|out: "dist", name: "a\\tb"|' r.yaml
expect_exit 2 "$QPIPE" run r.yaml --no-provenance
expect_grep "name: holds a control character \(byte 0x09 at 1\)"
mkdir -p data && echo mine > data/keep.txt
bad data "stage 'pkg': out: .*/data already holds files that are not a qpipe package"
[ "$(cat data/keep.txt)" = mine ] || fail "data was touched"; ok
ln -s /tmp escape
bad escape/x "stage 'pkg': out: .*/escape is a symbolic link"
bad dist "stage 'pkg': out: .*/dist holds the cache .*/dist/cache" --cache-dir "$T/dist/cache"
bad dist/cache/x "stage 'pkg': out: .*/dist/cache/x is inside the cache" --cache-dir "$T/dist/cache"
[ "$(git rev-parse HEAD)" = "$head_before" ] && [ -f .git/HEAD ] && [ "$(cat kept.txt)" = keep ] &&
  grep -q "uses: package" r.yaml || fail "a refused out: changed the repository or the recipe"; ok
git status --porcelain | grep -qv '^??' && fail "the index or worktree changed"; ok
# '..' within the work tree: a recipe in recipes/ writes ../dist/NAME (as the shipped ones do)
mkdir -p recipes && sed 's|out: "[^"]*"|out: "../dist/up"|' r.yaml > recipes/r.yaml
expect_exit 0 "$QPIPE" run recipes/r.yaml --no-provenance
ls dist/up/*.gguf >/dev/null || fail "no GGUF in dist/up"; ok
sed -i 's|out: "../dist/up"|out: "../recipes"|' recipes/r.yaml
expect_exit 2 "$QPIPE" run recipes/r.yaml --no-provenance
expect_grep "out: '../recipes' is the recipe's own directory or holds it"
rm -rf recipes dist
# a plain subdirectory still packages, and again over its own package
recipe ./dist/gguf
expect_exit 0 "$QPIPE" run r.yaml --no-provenance
ls dist/gguf/*.gguf >/dev/null || fail "no GGUF in dist/gguf"; ok
rm -rf dist/gguf/*.gguf
expect_exit 0 "$QPIPE" run r.yaml --no-provenance
ls dist/gguf/*.gguf >/dev/null || fail "the package was not made again in its own directory"; ok
# the limits themselves are accepted: five 200-byte names and a 1024-byte out:
w200=$(printf 'y%.0s' $(seq 200))
long="$w200/$w200/$w200/$w200/$w200/$(printf 'z%.0s' $(seq 19))"
[ ${#long} -eq 1024 ] || fail "the test's path is ${#long} bytes"
recipe "$long"
expect_exit 0 "$QPIPE" run r.yaml --no-provenance
ls "$long"/*.gguf >/dev/null || fail "no GGUF in the 1024-byte out:"; ok
rm -rf "$w200"
recipe ./dist/gguf
# two packages, one inside the other's out:
echo "  pkg2: {uses: package, needs: [model], with: {format: gguf, out: dist}}" >> r.yaml
expect_exit 2 "$QPIPE" run r.yaml --no-provenance
expect_grep "out: .*/dist and another package's out: .*/dist/gguf overlap|out: .*/dist/gguf and another package's out: .*/dist overlap"
done_ok
