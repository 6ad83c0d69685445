# recipes/house-q4km.yaml end to end: quantize, evaluate against the
# reference, gate, package into out: (GGUF + MODEL_CARD.md + provenance.json);
# a second run is fully cached and restores a deleted package; a gate that
# must fail exits 3, packages nothing and keeps the previous package intact.
source "$(dirname "$0")/lib.sh"

mkdir -p repo/recipes && cd repo
cp "$REPO/recipes/house-q4km.yaml" recipes/
export QPIPE_SHARED="$SHARED"
expect_exit 0 "$QPIPE" run recipes/house-q4km.yaml --no-provenance -j 2
expect_grep '6 stages: 6 ran'
expect_grep 'ok +q4km_eval.ppl_delta = 0\.05[0-9]+ <= 0.25'
[ -f dist/house-q4km/house-llama-Q4_K_M.gguf ] || fail "no GGUF"; ok
grep -q '| q4km_eval | ppl | 23.3' dist/house-q4km/MODEL_CARD.md || fail "card lacks the ppl"; ok
grep -q 'Gate `gate`: \*\*pass\*\*' dist/house-q4km/MODEL_CARD.md || fail "card lacks the gate"; ok
grep -q '"stage_key"' dist/house-q4km/provenance.json || fail "provenance.json"; ok
size=$(stat -c %s dist/house-q4km/house-llama-Q4_K_M.gguf)
[ "$size" -gt 3000000 ] && [ "$size" -lt 3300000 ] || fail "GGUF size $size"; ok

expect_exit 0 "$QPIPE" run recipes/house-q4km.yaml --no-provenance --json
expect_grep '"ran":0,"cached":6'
rm -rf dist/house-q4km
expect_exit 0 "$QPIPE" run recipes/house-q4km.yaml --no-provenance --json
expect_grep '"ran":0,"cached":6'
[ "$(stat -c %s dist/house-q4km/house-llama-Q4_K_M.gguf)" -eq "$size" ] || fail "restored GGUF differs"; ok

# a gate that must fail: exit 3, the package stage blocked, the old package untouched
before=$(sha256sum dist/house-q4km/house-llama-Q4_K_M.gguf)
sed -i 's/max_ppl_delta: 0.25/max_ppl_delta: 0.01/' recipes/house-q4km.yaml
expect_exit 3 "$QPIPE" run recipes/house-q4km.yaml --no-provenance
expect_grep 'FAIL q4km_eval.ppl_delta = 0\.05[0-9]+ <= 0.01'
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
done_ok
