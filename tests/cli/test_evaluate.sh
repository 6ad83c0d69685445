# evaluate on the house model: the reference perplexity of valid.txt under
# both protocols, KLD/top-1 against a reference stage, multiple-choice
# accuracy, a fully cached second run, and bit-identical metrics at 1 and 2
# threads.
source "$(dirname "$0")/lib.sh"

head -n 60 "$SHARED/data/shakespeare/mc.jsonl" > mc60.jsonl
cat > e.yaml <<Y
qpipe: 1
name: house-eval
stages:
  model: {uses: fetch, with: {source: "$SHARED/models/house-llama"}}
  base:
    uses: evaluate
    needs: [model]
    with: {dataset: "$SHARED/data/shakespeare/valid.txt", ctx: 256, mc: mc60.jsonl}
  lcpp:
    uses: evaluate
    needs: [model]
    with: {dataset: "$SHARED/data/shakespeare/valid.txt", ctx: 256, protocol: llama.cpp, max_chunks: 40}
  self:
    uses: evaluate
    needs: [model]
    with: {dataset: "$SHARED/data/shakespeare/valid.txt", reference: base, max_chunks: 8}
  gate: {uses: gate, needs: [base, self], with: {max_base.ppl: 23.27, max_kld_mean: 0.0, min_top1: 1.0}}
Y
expect_exit 0 "$QPIPE" run e.yaml --no-provenance --json --threads 2
python3 - "$T/out" <<'P'
import json, sys
ev = {e["stage"]: e for e in map(json.loads, open(sys.argv[1])) if e.get("event") == "stage"}
ref = 23.252300488084487
b = ev["base"]["metrics"]
assert abs(b["ppl"] - ref) / ref < 5e-4, b
assert b["tokens_scored"] == 51905 and b["windows"] == 204, b
assert 0.5 < b["acc"] <= 1 and b["mc_items"] == 60, b
l = ev["lcpp"]["metrics"]
assert l["windows"] == 40 and l["tokens_scored"] == 40 * 127, l
s = ev["self"]["metrics"]
assert s["kld_mean"] == 0 and s["top1"] == 1 and s["ppl_delta"] == 0 and s["ppl_ratio"] == 1, s
print("ppl", b["ppl"], "acc", b["acc"])
P
[ $? -eq 0 ] || fail "metrics"; ok
out1=$(stage_output base)
expect_exit 0 "$QPIPE" run e.yaml --no-provenance --json
expect_grep '"ran":0,"cached":5'
# bit-identical at 1 thread
expect_exit 0 "$QPIPE" run e.yaml --no-provenance --json --threads 1 --force=base --stage base
out2=$(stage_output base)
[ "$out1" = "$out2" ] || fail "metrics differ between 1 and 2 threads"; ok
expect_exit 0 "$QPIPE" verify e.yaml --stage lcpp
# the full llama.cpp protocol gives llama-perplexity's number
sed -i 's/protocol: llama.cpp, max_chunks: 40/protocol: llama.cpp/' e.yaml
expect_exit 0 "$QPIPE" run e.yaml --no-provenance --json --stage lcpp
python3 -c "
import json,sys
e=[json.loads(l) for l in open('$T/out') if l.startswith('{\"event\":\"stage\",\"stage\":\"lcpp\"')][0]['metrics']
assert e['windows']==203 and e['tokens_scored']==25781 and abs(e['ppl']-22.450272865977528)/22.45<5e-4, e" || fail "llama.cpp protocol"; ok
# JSONL datasets (field) and max_tokens: the same text as one record scores the same
python3 -c "
import json; t=open('$SHARED/data/shakespeare/valid.txt').read()
open('valid.jsonl','w').write(json.dumps({'body': t})+'\n')"
cat >> e.yaml <<Y
  jl: {uses: evaluate, needs: [model], with: {dataset: valid.jsonl, field: body, max_tokens: 2000}}
  tx: {uses: evaluate, needs: [model], with: {dataset: "$SHARED/data/shakespeare/valid.txt", max_tokens: 2000}}
Y
expect_exit 0 "$QPIPE" run e.yaml --no-provenance --json --stage jl
m1=$(grep '^{"event":"stage","stage":"jl"' "$T/out" | sed -E 's/.*"metrics":(\{[^}]*\}).*/\1/')
expect_exit 0 "$QPIPE" run e.yaml --no-provenance --json --stage tx
m2=$(grep '^{"event":"stage","stage":"tx"' "$T/out" | sed -E 's/.*"metrics":(\{[^}]*\}).*/\1/')
[ "$m1" = "$m2" ] || fail "jsonl vs text: $m1 vs $m2"; ok
echo "$m1" | grep -q '"tokens_scored":1992' || fail "max_tokens: $m1"; ok
# a dataset that does not exist: one line naming the recipe position and file
sed -i 's|mc: mc60.jsonl|mc: nope.jsonl|' e.yaml
expect_exit 1 "$QPIPE" run e.yaml --no-provenance
expect_grep "e.yaml:[0-9]+:[0-9]+: stage 'base': mc: .*nope.jsonl: No such file or directory"
done_ok
