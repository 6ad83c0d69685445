# select: the smallest candidate whose gate passed, on constructed metrics;
# adding a candidate reruns only it and select; nothing passing exits 3.
source "$(dirname "$0")/lib.sh"

cand() {  # id bytes ppl_delta
  echo "  $1: {uses: run, with: {cmd: \"echo '{\\\"bytes\\\": $2, \\\"bpw\\\": 4.0, \\\"ppl_delta\\\": $3}' > $1.json\", metrics: $1.json}}"
  echo "  g_$1: {uses: gate, needs: [$1], with: {max_ppl_delta: 0.5}}"
}
{
  echo "qpipe: 1"; echo "name: sel"; echo "stages:"
  cand int8 8000 0.01; cand q4 4000 0.3; cand q2 2000 1.7
  echo "  pick: {uses: select, needs: [g_int8, g_q4, g_q2]}"
} > r.yaml
expect_exit 0 "$QPIPE" run r.yaml --no-provenance
expect_grep 'SELECTED +q4 +4000 bytes +gate g_q4 +pass'
expect_grep ' +q2 +2000 bytes +gate g_q2 +fail'
expect_grep ' +int8 +8000 bytes'
# a new, smaller passing candidate: only it, its gate and select run
sed -i 's/  pick: {uses: select, needs: \[g_int8, g_q4, g_q2\]}//' r.yaml
cand q3 3000 0.4 >> r.yaml
echo "  pick: {uses: select, needs: [g_int8, g_q4, g_q2, g_q3]}" >> r.yaml
expect_exit 0 "$QPIPE" run r.yaml --no-provenance --json
[ "$(ran_stages)" = "g_q3 pick q3" ] || fail "adding a candidate ran: $(ran_stages)"; ok
expect_grep '"selected_bytes":3000'
# policy first: the first passing in needs order
sed -i 's/needs: \[g_int8, g_q4, g_q2, g_q3\]}/needs: [g_int8, g_q4, g_q2, g_q3], with: {policy: first}}/' r.yaml
expect_exit 0 "$QPIPE" run r.yaml --no-provenance
expect_grep 'SELECTED +int8'
# nothing passes: exit 3, dependents blocked
sed -i 's/max_ppl_delta: 0.5/max_ppl_delta: 0.001/g' r.yaml
echo "  after: {uses: run, needs: [pick], with: {cmd: \"true\"}}" >> r.yaml
expect_exit 3 "$QPIPE" run r.yaml --no-provenance
expect_grep 'REJECTED +pick +select'
expect_grep 'blocked +after'
# the default release policy (INT4 first; if ppl degrades by more than 1.0,
# mixed precision; then INT8), written with candidates: and policy: first
policy() {  # int4_delta mixed_delta
  pc() { echo "      - {name: $1, cmd: \"echo '{\\\"bytes\\\": $2, \\\"bpw\\\": 4, \\\"ppl_delta\\\": $3}' > $1.json\", metrics: $1.json}"; }
  {
    echo "qpipe: 1"; echo "name: policy"; echo "stages:"
    echo "  q:"; echo "    uses: run"; echo "    candidates:"
    pc int4 4000 "$1"; pc mixed 4800 "$2"; pc int8 8000 0.02
    echo "  gate: {uses: gate, needs: [q], with: {max_ppl_delta: 1.0}}"
    echo "  pick: {uses: select, needs: [\"gate@*\"], with: {policy: first}}"
  } > policy.yaml
}
policy 1.4 0.6
expect_exit 0 "$QPIPE" run policy.yaml --no-provenance
expect_grep 'SELECTED +q@mixed +4800 bytes +gate gate@mixed +pass'
expect_grep ' +q@int4 +4000 bytes +gate gate@int4 +fail'
policy 1.4 1.2
expect_exit 0 "$QPIPE" run policy.yaml --no-provenance
expect_grep 'SELECTED +q@int8 +8000 bytes'
policy 0.5 0.3
expect_exit 0 "$QPIPE" run policy.yaml --no-provenance
expect_grep 'SELECTED +q@int4 +4000 bytes'
# a select input that is not a gate is a recipe error
cat > bad.yaml <<'Y'
qpipe: 1
name: bad
stages:
  m: {uses: run, with: {cmd: "true"}}
  pick: {uses: select, needs: [m]}
Y
expect_exit 2 "$QPIPE" run bad.yaml --no-provenance
expect_grep "input 'm' is a files artifact, but select accepts verdict"
done_ok
