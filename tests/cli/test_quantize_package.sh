# recipes/house-q4km.yaml end to end: quantize, evaluate against the
# reference, gate, package into out: (GGUF + README.md + provenance.json);
# a second run is fully cached and restores a deleted package; a gate that
# must fail exits 3, packages nothing and keeps the previous package intact.
source "$(dirname "$0")/lib.sh"

mkdir -p repo/recipes && cd repo
cp "$REPO/recipes/house-q4km.yaml" recipes/
export QPIPE_SHARED="$SHARED"
expect_exit 0 "$QPIPE" run recipes/house-q4km.yaml --no-provenance -j 2
expect_grep '6 stages: 6 ran'
# the gate's lines, whatever the number (the gate itself checks it)
expect_grep 'ok +q4km_eval.ppl_delta = [-0-9.e]+ <= 0.25'
[ -f dist/house-q4km/house-llama-Q4_K_M.gguf ] || fail "no GGUF"; ok
# valid.txt's 23.2523 (test_evaluate.sh) plus a delta the gate kept <= 0.25
grep -Eq '^\| q4km_eval \| ppl \| 23\.[0-9]+ \|$' dist/house-q4km/README.md || fail "card lacks the ppl"; ok
grep -q 'Gate `gate`: \*\*pass\*\*' dist/house-q4km/README.md || fail "card lacks the gate"; ok
grep -q 'numerics profile `seqfma-1`' dist/house-q4km/README.md || fail "card lacks the numerics profile"; ok
grep -q '"stage_key"' dist/house-q4km/provenance.json || fail "provenance.json"; ok
size=$(stat -c %s dist/house-q4km/house-llama-Q4_K_M.gguf)
[ "$size" -gt 3000000 ] && [ "$size" -lt 3300000 ] || fail "GGUF size $size"; ok

expect_exit 0 "$QPIPE" run recipes/house-q4km.yaml --no-provenance --json
expect_grep '"ran":0,"cached":6'
rm -rf dist/house-q4km
expect_exit 0 "$QPIPE" run recipes/house-q4km.yaml --no-provenance --json
expect_grep '"ran":1,"cached":5'
[ "$(stat -c %s dist/house-q4km/house-llama-Q4_K_M.gguf)" -eq "$size" ] || fail "restored GGUF differs"; ok

# a gate that must fail: exit 3, the package stage blocked, the old package untouched
before=$(sha256sum dist/house-q4km/house-llama-Q4_K_M.gguf)
sed -i 's/max_ppl_delta: 0.25/max_ppl_delta: 0.01/' recipes/house-q4km.yaml
expect_exit 3 "$QPIPE" run recipes/house-q4km.yaml --no-provenance
expect_grep 'FAIL q4km_eval.ppl_delta = [-0-9.e]+ <= 0.01'
expect_grep 'blocked +package +package'
[ "$(sha256sum dist/house-q4km/house-llama-Q4_K_M.gguf)" = "$before" ] || fail "package changed"; ok
# and into a fresh out: nothing at all
sed -i 's|out: ../dist/house-q4km|out: ../dist/rejected|' recipes/house-q4km.yaml
expect_exit 3 "$QPIPE" run recipes/house-q4km.yaml --no-provenance
[ ! -e dist/rejected ] || fail "a rejected artifact was packaged"; ok
ls dist | grep -q tmp && fail "temp directory left behind"; ok

# verify rebuilds everything bit for bit
sed -i 's/max_ppl_delta: 0.01/max_ppl_delta: 0.25/' recipes/house-q4km.yaml
expect_exit 0 "$QPIPE" verify recipes/house-q4km.yaml --stage q4km

# candidates -> select -> package: the smallest passing candidate is packaged,
# its card shows the selection table and the chosen candidate's gate and metrics
cat > recipes/sel.yaml <<Y
qpipe: 1
name: sel
stages:
  model: {uses: fetch, with: {source: "$SHARED/models/house-llama"}}
  base: {uses: evaluate, needs: [model], with: {dataset: "$SHARED/data/shakespeare/valid.txt", ctx: 256, max_chunks: 8}}
  q:
    uses: quantize
    needs: [model]
    candidates:
      - {name: q8_0, method: gguf, type: Q8_0}
      - {name: q4_0, method: gguf, type: Q4_0, pure: true}
      - {name: q2_k, method: gguf, type: Q2_K}
  eval: {uses: evaluate, needs: [q], with: {dataset: "$SHARED/data/shakespeare/valid.txt", ctx: 256, max_chunks: 8, reference: base}}
  gate: {uses: gate, needs: [eval, q], with: {max_kld_mean: 0.05}}
  pick: {uses: select, needs: ["gate@*"]}
  package: {uses: package, needs: [pick, "q@*"], with: {format: gguf, out: ../dist/sel}}
Y
expect_exit 0 "$QPIPE" run recipes/sel.yaml --no-provenance
expect_grep 'SELECTED q@q4_0 '
expect_grep ' +q@q2_k +[0-9]+ bytes +gate gate@q2_k +fail'
[ -f dist/sel/house-llama-Q4_0.gguf ] || fail "the selected candidate was not packaged"; ok
card=dist/sel/README.md
grep -q 'Selection `pick` (policy `smallest`): \*\*q@q4_0\*\* among 3 candidates' $card || fail "card: selection"; ok
grep -Eq '^\| q@q2_k \| [0-9]+ \| gate@q2_k \| fail \|$' $card || fail "card: rejected candidate row"; ok
grep -q 'Gate `gate@q4_0`: \*\*pass\*\*' $card || fail "card: chosen gate"; ok
grep -Eq '^\| max_kld_mean \| 0\.0[0-9]+ \| <= 0\.05 \|' $card || fail "card: gate check"; ok
grep -Eq '^\| eval@q4_0 \| ppl \| 1[0-9.]+ \|$' $card || fail "card: chosen evaluation"; ok
grep -q 'eval@q8_0' $card && fail "card shows a candidate that was not packaged"; ok
done_ok
