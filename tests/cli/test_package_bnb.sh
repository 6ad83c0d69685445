# format: bitsandbytes on house-llama: NF4 (plain and double-quant) and
# LLM.int8 exports are re-read by an independent python reader
# (tests/support/bnb_reader.py: safetensors parsed and validated, bnb's
# dequantization emulated in f32) and every quantized weight must equal, bit
# for bit, what qpipe dequantizes for evaluate (qp_qtensor_to_f32, via
# test_package_bnb --dump); dense tensors equal the source's, config.json
# carries BitsAndBytesConfig's to_dict; verify and a restore rebuild the same
# bytes.  A checkpoint with two nibbles swapped must fail the comparison.
# Other methods are refused in one line.
source "$(dirname "$0")/lib.sh"

DUMP=$REPO/${BUILD:-build}/tests/stages/test_package_bnb
READER=$REPO/tests/support/bnb_reader.py
[ -x "$DUMP" ] || fail "$DUMP not built (make ${BUILD:-build}/tests/stages/test_package_bnb)"; ok
command -v python3 >/dev/null || fail "python3 is needed"; ok
MODEL=$SHARED/models/house-llama

mkdir -p repo/recipes && cd repo
cat > recipes/bnb.yaml <<Y
qpipe: 1
name: bnb
stages:
  model: {uses: fetch, with: {source: "$MODEL"}}
  nf4: {uses: quantize, needs: [model], with: {method: nf4}}
  nf4dq: {uses: quantize, needs: [model], with: {method: nf4, double_quant: true}}
  int8: {uses: quantize, needs: [model], with: {method: int8}}
  p_nf4: {uses: package, needs: [nf4], with: {format: bitsandbytes, out: ../dist/nf4}}
  p_nf4dq: {uses: package, needs: [nf4dq], with: {format: bitsandbytes, out: ../dist/nf4dq}}
  p_int8: {uses: package, needs: [int8], with: {format: bitsandbytes, out: ../dist/int8}}
Y
expect_exit 0 "$QPIPE" run recipes/bnb.yaml --no-provenance --json -j 3
cp "$T/out" "$T/run.json"
expect_grep '"ran":7,"cached":0'

# kind  quantize-stage  expected sizes of model.safetensors (bytes, min max)
check_export() {
  local kind=$1 q=$2 lo=$3 hi=$4 dir=dist/$2
  local digest; digest=$(stage_output "$q" "$T/run.json")
  [ -n "$digest" ] || fail "no output digest for $q"
  "$DUMP" --dump "$QPIPE_CACHE" "$digest" > "$T/$q.qpipe" || fail "dump of $q"
  python3 "$READER" "$dir" --source "$MODEL" --expect "$kind" > "$T/$q.bnb" 2>"$T/$q.err" || { cat "$T/$q.err" >&2; fail "reader refused $dir"; }
  [ "$(wc -l < "$T/$q.qpipe")" -eq 42 ] || fail "$q: $(wc -l < "$T/$q.qpipe") quantized tensors, expected 42"; ok
  diff "$T/$q.qpipe" "$T/$q.bnb" >&2 || fail "$q: bitsandbytes dequantization differs from what evaluate scores"; ok
  grep -q '^# 42 quantized, 15 dense (bfloat16)$' "$T/$q.err" || fail "$q: $(cat "$T/$q.err")"; ok
  local size; size=$(stat -c %s "$dir/model.safetensors")
  echo "$kind: model.safetensors $size bytes"
  [ "$size" -ge "$lo" ] && [ "$size" -le "$hi" ] || fail "$q: model.safetensors is $size bytes"; ok
  for f in config.json tokenizer.model tokenizer_config.json generation_config.json README.md provenance.json; do
    [ -f "$dir/$f" ] || fail "$q: $f missing"
  done; ok
  grep -q 'compatible runtimes | transformers + bitsandbytes' "$dir/README.md" || fail "$q: card runtimes"; ok
}
# 4.5 / 4.13 / 8.1 bits per quantized weight, plus the BF16 embeddings and lm_head (1 MiB)
check_export nf4 nf4 3700000 3780000
check_export nf4-dq nf4dq 3530000 3610000
check_export int8 int8 5800000 5900000

# house-qwen: tied embeddings (no lm_head.weight; lm_head still listed as
# kept dense) and q/k/v biases, NF4 with double quantization
QWEN=$SHARED/models/house-qwen
cat > recipes/qwen.yaml <<Y
qpipe: 1
name: bnb-qwen
stages:
  model: {uses: fetch, with: {source: "$QWEN"}}
  q: {uses: quantize, needs: [model], with: {method: nf4, double_quant: true}}
  p: {uses: package, needs: [q], with: {format: bitsandbytes, out: ../dist/qwen}}
Y
expect_exit 0 "$QPIPE" run recipes/qwen.yaml --no-provenance --json
cp "$T/out" "$T/qwen.json"
"$DUMP" --dump "$QPIPE_CACHE" "$(stage_output q "$T/qwen.json")" > "$T/qwen.qpipe" || fail "dump of qwen"
python3 "$READER" dist/qwen --source "$QWEN" --expect nf4-dq > "$T/qwen.bnb" 2>"$T/qwen.err" \
  || { cat "$T/qwen.err" >&2; fail "reader refused dist/qwen"; }
[ "$(wc -l < "$T/qwen.qpipe")" -gt 10 ] || fail "qwen: too few quantized tensors"; ok
diff "$T/qwen.qpipe" "$T/qwen.bnb" >&2 || fail "qwen: bitsandbytes dequantization differs from what evaluate scores"; ok
grep -q '"llm_int8_skip_modules": \[' dist/qwen/config.json || fail "qwen: no skip list"; ok
python3 -c 'import json,sys; q=json.load(open("dist/qwen/config.json"))["quantization_config"]; assert q["llm_int8_skip_modules"]==["lm_head"], q' \
  || fail "qwen: lm_head not listed as kept dense"; ok

# double quantization stores a different absmax, the same weights up to it:
# the NF4 and NF4-dq exports must not hash alike (the test would be blind)
! diff -q "$T/nf4.bnb" "$T/nf4dq.bnb" >/dev/null || fail "nf4 and nf4-dq dequantize identically"; ok

# verify rebuilds a package bit for bit; a deleted package is made again
# from the cached tensors with the same bytes
expect_exit 0 "$QPIPE" verify recipes/bnb.yaml --stage p_nf4dq
before=$(sha256sum < dist/int8/model.safetensors)
rm -rf dist/int8
expect_exit 0 "$QPIPE" run recipes/bnb.yaml --no-provenance --json
expect_grep '"ran":1,"cached":6'
[ "$(sha256sum < dist/int8/model.safetensors)" = "$before" ] || fail "the rebuilt int8 package differs"; ok

# negative check: swap the nibbles of one byte of one packed weight; the
# reader must then disagree with qpipe on exactly that tensor
cp -r dist/nf4 "$T/bad"
python3 - "$T/bad/model.safetensors" <<'P'
import json, struct, sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
n = struct.unpack_from("<Q", b, 0)[0]
h = json.loads(b[8:8 + n])
a, _ = h["model.layers.3.mlp.up_proj.weight"]["data_offsets"]
i = 8 + n + a + 1000
while (b[i] >> 4) == (b[i] & 15):
    i += 1
b[i] = ((b[i] & 15) << 4) | (b[i] >> 4)
open(p, "wb").write(b)
P
python3 "$READER" "$T/bad" > "$T/bad.bnb" 2>/dev/null || fail "reader refused the swapped checkpoint"
[ "$(diff "$T/nf4.qpipe" "$T/bad.bnb" | grep -c '^>')" -eq 1 ] || fail "a swapped nibble went unnoticed"; ok
diff "$T/nf4.qpipe" "$T/bad.bnb" | grep -q '^> model.layers.3.mlp.up_proj.weight ' || fail "wrong tensor flagged"; ok

# other methods: one line naming the stage, the method and the formats that fit
cat > recipes/gguf.yaml <<Y
qpipe: 1
name: bnb-refused
stages:
  model: {uses: fetch, with: {source: "$MODEL"}}
  q8: {uses: quantize, needs: [model], with: {method: gguf, type: Q8_0}}
  p: {uses: package, needs: [q8], with: {format: bitsandbytes, out: ../dist/refused}}
  p_plain: {uses: package, needs: [model], with: {format: bitsandbytes, out: ../dist/plain}}
Y
expect_exit 2 "$QPIPE" run recipes/gguf.yaml --no-provenance --stage p
expect_grep "stage 'p': input 'q8': method gguf has no bitsandbytes form; format bitsandbytes takes method nf4 or int8 \(package this model as gguf, or quantize with method nf4 or int8\)"
expect_exit 2 "$QPIPE" run recipes/gguf.yaml --no-provenance --stage p_plain
expect_grep "stage 'p_plain': input 'model': the model is not quantized; format bitsandbytes takes a model quantized with method nf4 or int8"
[ ! -e dist/refused ] && [ ! -e dist/plain ] || fail "a refused package left files"; ok
done_ok
