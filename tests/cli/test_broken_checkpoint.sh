# A Qwen2 checkpoint broken the way real downloads are: one NaN weight, and
# a directory without its tokenizer files.  Each stage that meets it fails
# with one line naming the stage and the cause (not the calibration data,
# not a missing metric), nothing is cached for it, a re-run fails the same
# way, and the cache stays clean.
source "$(dirname "$0")/lib.sh"

cp -r "$SHARED/models/house-qwen" nan
rm -rf nan/reference
# bf16 NaN (0x7fc0) as element 1000 of layer 1's down_proj (row 1, column 232)
python3 - nan/model.safetensors <<'P'
import json, struct, sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8 + n])
t = h['model.layers.1.mlp.down_proj.weight']
assert t['dtype'] == 'BF16'
at = 8 + n + t['data_offsets'][0] + 2 * 1000
b[at:at + 2] = b'\xc0\x7f'
open(p, 'wb').write(b)
P
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
# quantize: the quantizer's message now names the tensor
"$QPIPE" run r.yaml --stage q8 --no-provenance >"$T/out" 2>&1 && fail "q8 ran on a NaN weight"; ok
expect_grep "^qpipe: stage 'q8': tensor 'model\.layers\.1\.mlp\.down_proj\.weight': quantize Q8_0: row 1, column 232 is NaN"
"$QPIPE" run r.yaml --stage rtn --no-provenance >"$T/out" 2>&1 && fail "rtn ran on a NaN weight"; ok
expect_grep "^qpipe: stage 'rtn': tensor 'model\.layers\.1\.mlp\.down_proj\.weight': .*row 1, column 232"

# no tokenizer at all: used to say "the model has no tokenizer.model"
export M="$T/notok"
expect_exit 1 "$QPIPE" run r.yaml --stage base --no-provenance
expect_grep "^qpipe: stage 'base': input 'model': the model has neither tokenizer.json nor tokenizer.model; copy the checkpoint's tokenizer files beside config.json$"

expect_exit 0 "$QPIPE" cache verify
expect_grep ': 0 problems$'
[ -z "$(ls -A .qpipe/cache/tmp 2>/dev/null)" ] || fail "files left in the cache's tmp/"; ok
done_ok
