# After a run, `git log qpipe/provenance` shows the record commit; HEAD, the
# index and the working tree are unchanged; `qpipe log` lists the records;
# a rejected gate is recorded with its numbers; outside a repo: a warning.
source "$(dirname "$0")/lib.sh"

mkdir repo && cd repo && git init -q . && printf 'one two three\n' > words.txt
cat > r.yaml <<'Y'
qpipe: 1
name: prov
stages:
  src: {uses: fetch, with: {source: words.txt}}
  count: {uses: run, needs: [src], with: {cmd: "echo '{\"words\": '$(wc -w < $QPIPE_INPUT_SRC/files/words.txt)'}' > m.json", metrics: m.json}}
  gate: {uses: gate, needs: [count], with: {max_words: 5}}
Y
printf '.qpipe/\nm.json\n' > .gitignore
git add -A && git commit -qm init
head_before=$(git rev-parse HEAD); index_before=$(sha256sum .git/index); status_before=$(git status --porcelain)
expect_exit 0 "$QPIPE" run r.yaml
expect_grep '^provenance: [0-9a-f]{12} on qpipe/provenance'
[ "$(git rev-parse HEAD)" = "$head_before" ] || fail "HEAD moved"; ok
[ "$(sha256sum .git/index)" = "$index_before" ] || fail "index changed"; ok
[ "$(git status --porcelain)" = "$status_before" ] || fail "working tree changed: $(git status --porcelain)"; ok
[ "$(git symbolic-ref HEAD)" = "refs/heads/$(git branch --show-current)" ] || fail "HEAD detached"; ok
git log --format=%s qpipe/provenance > "$T/log"
expect_grep '^qpipe run prov: pass' "$T/log"
git show qpipe/provenance:run.json > "$T/rec"
expect_grep '"recipe": "r.yaml"' "$T/rec"
expect_grep "\"commit\": \"$head_before\"" "$T/rec"
expect_grep '"dirty": false' "$T/rec"
expect_grep '"verdict": "pass"' "$T/rec"
expect_grep '"numerics": "seqfma-1"' "$T/rec"
expect_grep '"words": 3' "$T/rec"
git show qpipe/provenance:recipe.yaml | cmp - r.yaml || fail "recipe copy differs"; ok

# a cached rerun records nothing new
expect_exit 0 "$QPIPE" run r.yaml
[ "$(git rev-list --count qpipe/provenance)" -eq 1 ] || fail "cached run committed"; ok

# a rejection is recorded with its numbers, parent = previous record
sed -i 's/max_words: 5/max_words: 2/' r.yaml
expect_exit 3 "$QPIPE" run r.yaml
[ "$(git rev-list --count qpipe/provenance)" -eq 2 ] || fail "rejection not committed"; ok
git show qpipe/provenance:run.json > "$T/rec"
expect_grep '"verdict": "rejected"' "$T/rec"
expect_grep '"dirty": true' "$T/rec"
expect_grep '"margin": -1' "$T/rec"
expect_exit 0 "$QPIPE" log r.yaml
expect_grep 'prov +rejected +1 ran, 2 cached'
expect_grep 'prov +pass +3 ran, 0 cached'
[ "$(grep -c . "$T/out")" -eq 2 ] || fail "log lines"; ok

# diff of the two records: the edited parameter and the gate's new verdict
expect_exit 0 "$QPIPE" diff qpipe/provenance~1 qpipe/provenance
expect_grep 'params +gate +max_words +5(\.0)? +2(\.0)? +-3'
expect_grep 'verdict: pass -> rejected'
expect_no_grep 'params +count '
expect_exit 2 "$QPIPE" diff qpipe/provenance
expect_exit 1 "$QPIPE" diff qpipe/provenance~7 qpipe/provenance
expect_grep "has only 2 record"
# outside a repository: a warning, and the run goes on
mkdir -p "$T/norepo" && cp r.yaml words.txt "$T/norepo/" && cd "$T/norepo" && sed -i "s/max_words: 2/max_words: 1/" r.yaml
GIT_CEILING_DIRECTORIES="$T" expect_exit 3 "$QPIPE" run r.yaml
expect_grep 'warning: r.yaml is not inside a git repository'
done_ok
