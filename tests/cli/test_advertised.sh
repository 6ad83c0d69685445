# What the parameter tables advertise exists: every `method` of quantize and
# every `format` of package that `qpipe stages` lists is run here once, on
# house-llama, and must succeed and produce its files.  The lists are read
# from `qpipe stages --markdown`, so a value added to a table without a way
# to run it here fails this test.
source "$(dirname "$0")/lib.sh"

git init -q . 2>/dev/null
# the allowed values of PARAM in the table of KIND, one per line
allowed() {
  "$QPIPE" stages --markdown | awk -v kind="### \`$1\`" -v param="| \`$2\` |" '
    index($0, "### ") == 1 { in_kind = index($0, kind) == 1 }
    in_kind && index($0, param) == 1 { print }' |
    awk -F' [|] ' '{ print $4 }' | sed 's/\\|/\n/g'
}
methods=$(allowed quantize method)
formats=$(allowed package format)
[ "$(echo "$methods" | wc -l)" -ge 7 ] || fail "quantize methods: '$methods'"; ok
[ "$(echo "$formats" | wc -l)" -ge 4 ] || fail "package formats: '$formats'"; ok

# each method's parameters (beyond method:), and each format's quantize stage
declare -A with=(
  [rtn]="bits: 4, group_size: 128"
  [gguf]="type: Q4_K_M"
  [nf4]="double_quant: true"
  [int8]=""
  [gptq]="bits: 4, group_size: 128"
  [awq]="bits: 4, group_size: 128, clip: false, duo_scaling: \"false\""
  [mixed]="ladder: [Q4_K, Q6_K], max_kld: 100, windows: 2"
  [qat]="bits: 4, group_size: 128, steps: 2, batch: 2, e2e_steps: 1"
)
declare -A source_of=([gguf]=q_gguf [gptq]=q_gptq [awq]=q_awq [safetensors]=q_rtn [bitsandbytes]=q_nf4)
declare -A weights_of=([gguf]='*.gguf' [gptq]=model.safetensors [awq]=model.safetensors
                       [safetensors]=model.safetensors [bitsandbytes]=model.safetensors)

{
  echo "qpipe: 1"
  echo "name: advertised"
  echo "stages:"
  echo "  model: {uses: fetch, with: {source: \"$SHARED/models/house-llama\"}}"
  echo "  calib: {uses: calibrate, needs: [model], with: {dataset: \"$SHARED/data/shakespeare/train.txt\", samples: 8, seq_len: 128, seed: 0}}"
  for m in $methods; do
    [ -n "${with[$m]+x}" ] || fail "quantize advertises method '$m', which this test does not run; add it"
    w=${with[$m]}
    echo "  q_$m: {uses: quantize, needs: [model, calib], with: {method: $m${w:+, $w}}}"
  done
  for f in $formats; do
    [ -n "${source_of[$f]+x}" ] || fail "package advertises format '$f', which this test does not run; add it"
    echo "  p_$f: {uses: package, needs: [${source_of[$f]}], with: {format: $f, out: dist/$f}}"
  done
} > r.yaml
for m in $methods; do grep -q "^  q_$m:" r.yaml || fail "method '$m' not in the recipe"; done
for f in $formats; do grep -q "^  p_$f:" r.yaml || fail "format '$f' not in the recipe"; done
ok

expect_exit 0 "$QPIPE" run r.yaml --no-provenance --json
for m in $methods; do
  grep '"event":"stage"' "$T/out" | grep "\"stage\":\"q_$m\"" | grep -q '"status":"ran"' || fail "q_$m did not run"
  ok
done
for f in $formats; do
  grep '"event":"stage"' "$T/out" | grep "\"stage\":\"p_$f\"" | grep -q '"status":"ran"' || fail "p_$f did not run"
  ls dist/$f/${weights_of[$f]} >/dev/null 2>&1 || fail "dist/$f has no ${weights_of[$f]}: $(ls dist/$f)"
  [ -s dist/$f/README.md ] && [ -s dist/$f/provenance.json ] || fail "dist/$f: no card or provenance"
  ok
done
echo "ran methods: $(echo $methods); formats: $(echo $formats)" >&2
done_ok
