# A fetch + run + gate recipe: a second run executes 0 stages; editing one
# parameter reruns exactly the stages downstream of it; reordering keys and
# comments reruns nothing; editing a dep's bytes reruns its consumers.
source "$(dirname "$0")/lib.sh"

mkdir data && printf 'alpha\nbeta\n' > data/a.txt && printf 'gamma\n' > data/b.txt
cat > r.yaml <<'Y'
qpipe: 1
name: reuse
stages:
  src: {uses: fetch, with: {source: data}}
  words:
    uses: run
    needs: [src]
    with: {cmd: "cat $QPIPE_INPUT_SRC/files/*.txt | wc -w > words.txt && echo \"{\\\"words\\\": $(cat words.txt)}\" > words.json", outs: [words.txt], metrics: words.json}
  lines:
    uses: run
    needs: [src]
    with: {cmd: "K=1; cat $QPIPE_INPUT_SRC/files/*.txt | wc -l > lines.txt && echo \"{\\\"lines\\\": $(cat lines.txt), \\\"k\\\": $K}\" > lines.json", outs: [lines.txt], metrics: lines.json}
  extra:
    uses: run
    with: {cmd: "cat notes.md > extra.txt", deps: [notes.md], outs: [extra.txt]}
  gate_w: {uses: gate, needs: [words], with: {max_words: 10}}
  gate_l: {uses: gate, needs: [lines], with: {max_lines: 10}}
Y
echo "# notes" > notes.md

expect_exit 0 "$QPIPE" run r.yaml --json --no-provenance
[ "$(ran_stages)" = "extra gate_l gate_w lines src words" ] || fail "first run: $(ran_stages)"; ok
expect_grep '"event":"summary","ran":6,"cached":0'
[ "$(cat words.txt | tr -d ' ')" = 3 ] || fail "words.txt"; ok

expect_exit 0 "$QPIPE" run r.yaml --json --no-provenance
[ "$(ran_stages)" = "" ] || fail "second run ran: $(ran_stages)"; ok
expect_grep '"ran":0,"cached":6'

# a parameter edit reruns exactly that stage and what is downstream of it
sed -i 's/max_words: 10/max_words: 11/' r.yaml
expect_exit 0 "$QPIPE" run r.yaml --json --no-provenance
[ "$(ran_stages)" = "gate_w" ] || fail "after gate edit ran: $(ran_stages)"; ok

sed -i 's/K=1;/K=2;/' r.yaml
expect_exit 0 "$QPIPE" run r.yaml --json --no-provenance
[ "$(ran_stages)" = "gate_l lines" ] || fail "after cmd edit ran: $(ran_stages)"; ok

# key order and comments do not matter
python3 - <<'P' 2>/dev/null || sed -i '1i # a comment' r.yaml
import re
s = open('r.yaml').read()
s = s.replace("gate_w: {uses: gate, needs: [words], with: {max_words: 11}}",
              "gate_w: {with: {max_words: 11}, needs: [words], uses: gate}  # reordered")
open('r.yaml', 'w').write("# comment\n" + s)
P
expect_exit 0 "$QPIPE" run r.yaml --json --no-provenance
[ "$(ran_stages)" = "" ] || fail "reorder ran: $(ran_stages)"; ok

# one byte of a fetched file: src and everything after it (outputs equal -> gates cached)
printf 'alpha\nbetA\n' > data/a.txt
expect_exit 0 "$QPIPE" run r.yaml --json --no-provenance
[ "$(ran_stages)" = "lines src words" ] || fail "data edit ran: $(ran_stages)"; ok

# a dep file of a run stage
echo "# notes 2" > notes.md
expect_exit 0 "$QPIPE" run r.yaml --json --no-provenance
[ "$(ran_stages)" = "extra" ] || fail "dep edit ran: $(ran_stages)"; ok

# a deleted out is restored from the cache without running the stage
rm words.txt
expect_exit 0 "$QPIPE" run r.yaml --json --no-provenance
[ "$(ran_stages)" = "" ] || fail "restore ran: $(ran_stages)"; ok
[ -f words.txt ] || fail "words.txt not restored"; ok

# plan says why
sed -i 's/max_lines: 10/max_lines: 12/' r.yaml
expect_exit 0 "$QPIPE" plan r.yaml
expect_grep 'will run +gate_l +gate .*param max_lines: 10(\.0)? -> 12(\.0)?'
expect_grep 'cached +words'
expect_grep '6 stages: 5 cached, 1 will run'

# --force=ID reruns one stage; --stage runs a stage and its ancestors only
expect_exit 0 "$QPIPE" run r.yaml --json --no-provenance --force=words --stage gate_w
[ "$(ran_stages)" = "words" ] || fail "force ran: $(ran_stages)"; ok
expect_no_grep '"stage":"lines"'

# graph
expect_exit 0 "$QPIPE" graph r.yaml
expect_grep '"src" -> "words";'
expect_grep '^digraph "reuse" \{'
expect_grep '"gate_w" \[label="gate_w\\n\(gate\)", shape=diamond\];'
expect_grep '"words" \[label="words\\n\(run\)"\];'
done_ok
