# A Qwen2 checkpoint broken the way real downloads are: one NaN weight, and
# a directory without its tokenizer files.  Each stage that meets it fails
# with one line naming the stage and the cause (not the calibration data,
# not a missing metric), nothing is cached for it, a re-run fails the same
# way, and the cache stays clean.
source "$(dirname "$0")/lib.sh"

# bf16 NaN (0x7fc0) as element 1000 (row 1, column 232) of down_proj in
# layer 1 (nan: every later activation is NaN) or in the last layer 5 (nan5:
# calibration is finite, only the weight is not)
nan_model() {
  cp -r "$SHARED/models/house-qwen" "$1"
  rm -rf "$1/reference"
  python3 - "$1/model.safetensors" "$2" <<'P'
import json, struct, sys
p, name = sys.argv[1], sys.argv[2]
b = bytearray(open(p, 'rb').read())
n = struct.unpack('<Q', b[:8])[0]
t = json.loads(b[8:8 + n])[name]
assert t['dtype'] == 'BF16'
at = 8 + n + t['data_offsets'][0] + 2 * 1000
b[at:at + 2] = b'\xc0\x7f'
open(p, 'wb').write(b)
P
}
nan_model nan model.layers.1.mlp.down_proj.weight
nan_model nan5 model.layers.5.mlp.down_proj.weight
cp -r "$SHARED/models/house-qwen" notok
rm -rf notok/reference notok/tokenizer.json
head -c 20000 "$SHARED/data/shakespeare/valid.txt" > small.txt

cat > r.yaml <<Y
qpipe: 1
name: broken
vars:
  m: "\${env.M}"
stages:
  model: {uses: fetch, with: {source: "\${vars.m}"}}
  base: {uses: evaluate, needs: [model], with: {dataset: small.txt, ctx: 64, max_chunks: 4}}
  calib: {uses: calibrate, needs: [model], with: {dataset: small.txt, samples: 2, seq_len: 32}}
  q8: {uses: quantize, needs: [model], with: {method: gguf, type: Q8_0}}
  rtn: {uses: quantize, needs: [model], with: {method: rtn, bits: 4, group_size: 128}}
  gptq: {uses: quantize, needs: [model, calib], with: {method: gptq, bits: 4, group_size: 128}}
Y
export M="$T/nan"
# evaluate: the NaN used to give a "successful", cached artifact without ppl/nll
for i in 1 2; do
  expect_exit 1 "$QPIPE" run r.yaml --stage base --no-provenance
  expect_grep "^qpipe: stage 'base': input 'model': the mean NLL is nan: the model's logits are not finite; check the checkpoint for NaN or infinite weights$"
  [ "$(grep -c '^qpipe:' "$T/out")" -eq 1 ] || fail "more than one error line"; ok
  expect_grep '1 failed'
done
# calibrate: used to blame "imatrix entry 'blk.2.attn_q.weight'" and exit 2
expect_exit 1 "$QPIPE" run r.yaml --stage calib --no-provenance
expect_grep "^qpipe: stage 'calib': input 'model': the activations entering layer 2's attn_in \(column 0\) are not finite: check the checkpoint for NaN or infinite weights$"
expect_no_grep 'imatrix'
# quantize: a data error (exit 1, not 2) naming the tensor, for every method
for st in q8 rtn; do
  expect_exit 1 "$QPIPE" run r.yaml --stage $st --no-provenance
  expect_grep "^qpipe: stage '$st': tensor 'model\.layers\.1\.mlp\.down_proj\.weight': row 1, column 232 is NaN; fix the checkpoint \(quantization needs finite weights\)$"
done
export M="$T/nan5"
expect_exit 0 "$QPIPE" run r.yaml --stage calib --no-provenance
expect_exit 1 "$QPIPE" run r.yaml --stage gptq --no-provenance
expect_grep "^qpipe: .*tensor 'model\.layers\.5\.mlp\.down_proj\.weight': row 1, column 232 is NaN; fix the checkpoint \(quantization needs finite weights\)$"

# no tokenizer at all: used to say "the model has no tokenizer.model"
export M="$T/notok"
expect_exit 1 "$QPIPE" run r.yaml --stage base --no-provenance
expect_grep "^qpipe: stage 'base': input 'model': the model has neither tokenizer.json nor tokenizer.model; copy the checkpoint's tokenizer files beside config.json$"

expect_exit 0 "$QPIPE" cache verify
expect_grep ': 0 problems$'
[ -z "$(ls -A .qpipe/cache/tmp 2>/dev/null)" ] || fail "files left in the cache's tmp/"; ok
done_ok
