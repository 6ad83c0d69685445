# candidates: one stage written once runs as q@NAME; the gate fans out,
# select fans in with g@*; adding a candidate runs only its chain plus the
# fan-in stages; the '@' ids work in plan, graph, lock, --stage, --force
# and the run stage's input variables.
source "$(dirname "$0")/lib.sh"

cand() {  # name bytes ppl_delta
  echo "      - {name: $1, cmd: \"echo '{\\\"bytes\\\": $2, \\\"bpw\\\": 4.0, \\\"ppl_delta\\\": $3}' > $1.json\"}"
}
recipe() {  # candidate lines on stdin
  echo "qpipe: 1"; echo "name: mx"; echo "stages:"
  echo "  q:"
  echo "    uses: run"
  echo "    with: {metrics: \"\${matrix.name}.json\"}"
  echo "    candidates:"
  cat
  echo "  g: {uses: gate, needs: [q], with: {max_ppl_delta: 0.5}}"
  echo "  pick: {uses: select, needs: [\"g@*\"]}"
  echo "  report:"
  echo "    uses: run"
  echo "    needs: [pick, \"q@*\"]"
  echo "    with: {cmd: \"env | grep -o '^QPIPE_INPUT_[A-Z0-9_]*' | sort | paste -sd ' ' > report.txt\", outs: report.txt}"
}
{ cand int8 8000 0.01; cand q4 4000 0.3; cand q2 2000 1.7; } | recipe > r.yaml
expect_exit 0 "$QPIPE" run r.yaml --no-provenance --json
[ "$(ran_stages)" = "g@int8 g@q2 g@q4 pick q@int8 q@q2 q@q4 report" ] || fail "first run ran: $(ran_stages)"; ok
expect_grep '"selected_bytes":4000'
[ "$(cat report.txt)" = "QPIPE_INPUT_PICK QPIPE_INPUT_Q_INT8 QPIPE_INPUT_Q_Q2 QPIPE_INPUT_Q_Q4" ] ||
  fail "report saw inputs: $(cat report.txt)"; ok
expect_exit 0 "$QPIPE" run r.yaml --no-provenance
expect_grep 'SELECTED +q@q4 +4000 bytes +gate g@q4 +pass'
expect_grep ' +q@q2 +2000 bytes +gate g@q2 +fail'

# a new candidate in the middle of the list: only its chain and the fan-in
{ cand int8 8000 0.01; cand q3 3000 0.4; cand q4 4000 0.3; cand q2 2000 1.7; } | recipe > r.yaml
expect_exit 0 "$QPIPE" run r.yaml --no-provenance --json
[ "$(ran_stages)" = "g@q3 pick q@q3 report" ] || fail "adding a candidate ran: $(ran_stages)"; ok
expect_grep '"selected_bytes":3000'
expect_exit 0 "$QPIPE" run r.yaml --no-provenance --json
[ "$(ran_stages)" = "" ] || fail "an unchanged rerun ran: $(ran_stages)"; ok

# the ids everywhere else
expect_exit 0 "$QPIPE" plan r.yaml
expect_grep 'g@q3'
expect_exit 0 "$QPIPE" graph r.yaml
expect_grep '"q@q3" -> "g@q3";'
expect_grep '"g@q2" -> "pick";'
expect_exit 0 "$QPIPE" lock r.yaml
expect_grep '^ *"?q@q3"?:' r.yaml.lock
expect_exit 0 "$QPIPE" run r.yaml --no-provenance --json --frozen
[ "$(ran_stages)" = "" ] || fail "a frozen rerun ran: $(ran_stages)"; ok
expect_exit 0 "$QPIPE" run r.yaml --no-provenance --json --force=q@q2
[ "$(ran_stages)" = "q@q2" ] || fail "--force=q@q2 ran: $(ran_stages)"; ok
expect_exit 0 "$QPIPE" run r.yaml --no-provenance --json --stage g@int8 --force
[ "$(ran_stages)" = "g@int8 q@int8" ] || fail "--stage g@int8 --force ran: $(ran_stages)"; ok

# a recipe error names the written position, one line, exit 2
sed -i 's/needs: \[q\]/needs: ["q@q5"]/' r.yaml
expect_exit 2 "$QPIPE" run r.yaml --no-provenance
expect_grep "^qpipe: r.yaml:12:27: needs 'q@q5': stage 'q' has no instance 'q5' \(did you mean 'q@q3'\?\)$"
[ "$(wc -l < "$T/out")" -eq 1 ] || fail "error is not one line"; ok
done_ok
