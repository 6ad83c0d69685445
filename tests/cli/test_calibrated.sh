# calibrate -> GPTQ / AWQ / RTN on the house model (a small calibration set to
# keep the test short): GPTQ and AWQ beat RTN at 3 bits on perplexity;
# calibration, GPTQ and AWQ are bit-identical at 1 and 2 threads; the imatrix.dat
# calibrate writes drives the llama.cpp quantizers; verify passes.
source "$(dirname "$0")/lib.sh"

cat > r.yaml <<Y
qpipe: 1
name: calibrated
vars: {valid: "$SHARED/data/shakespeare/valid.txt"}
stages:
  model: {uses: fetch, with: {source: "$SHARED/models/house-llama"}}
  calib: {uses: calibrate, needs: [model], with: {dataset: "$SHARED/data/shakespeare/train.txt", samples: 16, seq_len: 128, seed: 7}}
  base: {uses: evaluate, needs: [model], with: {dataset: "\${vars.valid}", max_chunks: 60}}
  rtn: {uses: quantize, needs: [model], with: {method: rtn, bits: 3, group_size: 128}}
  gptq: {uses: quantize, needs: [model, calib], with: {method: gptq, bits: 3, group_size: 128}}
  awq: {uses: quantize, needs: [model, calib], with: {method: awq, bits: 3, group_size: 128, clip: false}}
  q4k_im: {uses: quantize, needs: [model, calib], with: {method: gguf, type: Q4_K, pure: true}}
  e_rtn: {uses: evaluate, needs: [rtn], with: {dataset: "\${vars.valid}", max_chunks: 60, reference: base}}
  e_gptq: {uses: evaluate, needs: [gptq], with: {dataset: "\${vars.valid}", max_chunks: 60, reference: base}}
  e_awq: {uses: evaluate, needs: [awq], with: {dataset: "\${vars.valid}", max_chunks: 60, reference: base}}
Y
expect_exit 0 "$QPIPE" run r.yaml --no-provenance --json -j 2
cp "$T/out" "$T/run1"
python3 - "$T/run1" <<'P' || fail "calibrated methods"
import json, sys
ev = {e["stage"]: e for e in map(json.loads, open(sys.argv[1])) if e.get("event") == "stage"}
m = lambda s: ev[s]["metrics"]
r, g, a = m("e_rtn")["ppl_delta"], m("e_gptq")["ppl_delta"], m("e_awq")["ppl_delta"]
print("ppl delta rtn %.4f gptq %.4f awq %.4f" % (r, g, a))
assert g < r and a < r, (r, g, a)
assert m("calib")["tokens"] == 16 * 128
assert m("q4k_im")["tensors_quantized"] == 44
P
ok
digest() { grep "^{\"event\":\"stage\",\"stage\":\"$1\"" "$2" | sed -E 's/.*"output":"([0-9a-f]+)".*/\1/'; }
# one thread: the same bytes
expect_exit 0 "$QPIPE" run r.yaml --no-provenance --json --threads 1 --force=calib --stage calib
[ "$(digest calib "$T/out")" = "$(digest calib "$T/run1")" ] || fail "calibrate differs at 1 thread"; ok
expect_exit 0 "$QPIPE" run r.yaml --no-provenance --json --threads 1 --force=gptq --stage gptq
[ "$(digest gptq "$T/out")" = "$(digest gptq "$T/run1")" ] || fail "gptq differs at 1 thread"; ok
expect_exit 0 "$QPIPE" run r.yaml --no-provenance --json --threads 1 --force=awq --stage awq
[ "$(digest awq "$T/out")" = "$(digest awq "$T/run1")" ] || fail "awq differs at 1 thread"; ok
expect_exit 0 "$QPIPE" verify r.yaml --stage gptq --threads 2
done_ok
