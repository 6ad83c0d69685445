# calibrate -> GPTQ / AWQ / RTN on the house model (a small calibration set to
# keep the test short): what AWQ guarantees on the layer outputs it searched
# (no scale group ends above its α = 0 candidate, which is RTN; clipping is
# kept only where it lowered the layer's loss); GPTQ and AWQ well below RTN
# on held-out perplexity at 2 bits, where the margin is wide; calibration,
# GPTQ and AWQ are bit-identical at 1 and 2 threads; the imatrix.dat
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
  rtn: {uses: quantize, needs: [model], with: {method: rtn, bits: 2, group_size: 128}}
  gptq: {uses: quantize, needs: [model, calib], with: {method: gptq, bits: 2, group_size: 128}}
  awq: {uses: quantize, needs: [model, calib], with: {method: awq, bits: 2, group_size: 128, clip: true}}
  q4k_im: {uses: quantize, needs: [model, calib], with: {method: gguf, type: Q4_K, pure: true}}
  e_rtn: {uses: evaluate, needs: [rtn], with: {dataset: "\${vars.valid}", max_chunks: 60, reference: base}}
  e_gptq: {uses: evaluate, needs: [gptq], with: {dataset: "\${vars.valid}", max_chunks: 60, reference: base}}
  e_awq: {uses: evaluate, needs: [awq], with: {dataset: "\${vars.valid}", max_chunks: 60, reference: base}}
Y
expect_exit 0 "$QPIPE" run r.yaml --no-provenance --json -j 2
cp "$T/out" "$T/run1"
python3 - "$T/run1" "$QPIPE_CACHE" <<'P' || fail "calibrated methods"
import json, subprocess, sys
ev = {e["stage"]: e for e in map(json.loads, open(sys.argv[1])) if e.get("event") == "stage"}
m = lambda s: ev[s]["metrics"]

def manifest(stage):
    d = ev[stage]["output"]
    path = "%s/objects/%s/%s" % (sys.argv[2], d[:2], d[2:])
    return json.loads(subprocess.run(["zstd", "-dcq", path], check=True, capture_output=True).stdout)

# AWQ: per layer, one entry per searched scale group and one for the clip
# decision (stages/quant_awq.c).  The x form's α = 0 candidate has s = 1
# exactly, so it IS RTN; it is evaluated first and a later candidate wins
# only with a strictly smaller loss (quant/awq.c), so the chosen loss never
# exceeds rtn_loss, whatever the arithmetic rounds to.  The clipped layer is
# kept exactly when its loss is below the unclipped one.  The manifest keeps
# doubles at 17 digits, so these comparisons hold bit for bit.
layers = manifest("awq")["meta"]["awq"]
assert len(layers) == 6, len(layers)
searched = 0
for i, layer in enumerate(layers):
    groups = [g for g in layer if g["group"] != "clip"]
    clips = [g for g in layer if g["group"] == "clip"]
    assert groups and len(clips) == 1, (i, layer)
    for g in groups:
        assert 0 <= g["rtn_loss"] and g["loss"] <= g["rtn_loss"], (i, g)
        searched += 1
    c = clips[0]
    assert 0 <= c["loss_clipped"], (i, c)   # clip: true, so the clipped layer was measured
    assert c["kept"] == (c["loss_clipped"] < c["loss_plain"]), (i, c)
print("awq: %d scale groups, none above RTN; clip kept in %d of %d layers"
      % (searched, sum(l[-1]["kept"] for l in layers), len(layers)))

# Held-out perplexity only where the margin is wide.  At 2 bits the ppl
# deltas measured were rtn 7.46, gptq 4.87-5.29, awq 3.80-4.30 (seed 7 under
# the OpenBLAS Haswell, SkylakeX, Cooperlake and Zen kernels, and seeds 1-3
# natively): GPTQ and AWQ 29 % or more below RTN, while the kernel alone
# moved GPTQ by 9 %; the bound asks for 10 %.  At 3 bits the kernel moved
# GPTQ by 24 % and flipped AWQ without clipping against RTN: no comparison.
r, g, a = m("e_rtn")["ppl_delta"], m("e_gptq")["ppl_delta"], m("e_awq")["ppl_delta"]
print("2-bit ppl delta rtn %.4f gptq %.4f awq %.4f" % (r, g, a))
assert g < 0.9 * r and a < 0.9 * r, (r, g, a)
assert m("calib")["tokens"] == 16 * 128
assert m("q4k_im")["tensors_quantized"] == 44
P
ok
# one thread: the same bytes
expect_exit 0 "$QPIPE" run r.yaml --no-provenance --json --threads 1 --force=calib --stage calib
[ "$(stage_output calib "$T/out")" = "$(stage_output calib "$T/run1")" ] || fail "calibrate differs at 1 thread"; ok
expect_exit 0 "$QPIPE" run r.yaml --no-provenance --json --threads 1 --force=gptq --stage gptq
[ "$(stage_output gptq "$T/out")" = "$(stage_output gptq "$T/run1")" ] || fail "gptq differs at 1 thread"; ok
# (under ASan+UBSan the 2-bit AWQ clip search alone takes minutes: the
# thread-count check of AWQ runs in `make test`, and test_numerics.sh checks
# AWQ at 1, 2 and 3 threads in both builds)
if [ "${BUILD:-build}" != build-asan ]; then
  expect_exit 0 "$QPIPE" run r.yaml --no-provenance --json --threads 1 --force=awq --stage awq
  [ "$(stage_output awq "$T/out")" = "$(stage_output awq "$T/run1")" ] || fail "awq differs at 1 thread"; ok
fi
expect_exit 0 "$QPIPE" verify r.yaml --stage gptq --threads 2
done_ok
