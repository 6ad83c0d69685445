# house-qwen (tokenizer.json, no BOS) end to end through fetch, evaluate and
# calibrate: the model artifact carries the tokenizer files, the tokenizer
# is loaded from tokenizer.json + tokenizer_config.json, and both perplexity
# protocols give reference/perplexity.json's figures (within 0.05 %) with
# exactly its token counts; a reference stage sees the same tokenizer, a
# changed tokenizer_config.json is another tokenizer; multiple choice and
# calibration windows run without BOS.
source "$(dirname "$0")/lib.sh"

Q="$SHARED/models/house-qwen"
head -n 20 "$SHARED/data/shakespeare/mc.jsonl" > mc20.jsonl
cat > q.yaml <<Y
qpipe: 1
name: house-qwen-eval
stages:
  model: {uses: fetch, with: {source: "$Q"}}
  win:
    uses: evaluate
    needs: [model]
    with: {dataset: "$SHARED/data/shakespeare/valid.txt", ctx: 256, mc: mc20.jsonl}
  lcpp:
    uses: evaluate
    needs: [model]
    with: {dataset: "$SHARED/data/shakespeare/valid.txt", ctx: 256, protocol: llama.cpp}
  self:
    uses: evaluate
    needs: [model]
    with: {dataset: "$SHARED/data/shakespeare/valid.txt", reference: win, max_chunks: 4}
  calib:
    uses: calibrate
    needs: [model]
    with: {dataset: "$SHARED/data/shakespeare/train.txt", samples: 4, seq_len: 64, hessians: false}
Y
expect_exit 0 "$QPIPE" run q.yaml --no-provenance --json --threads 2
python3 - "$T/out" "$Q/reference/perplexity.json" <<'P'
import json, sys
ev = {e["stage"]: e for e in map(json.loads, open(sys.argv[1])) if e.get("event") == "stage"}
ref = json.load(open(sys.argv[2]))
w, l = ref["valid.txt"], ref["valid.txt (llama.cpp protocol)"]
assert w["protocol_name"] == "windows" and l["protocol_name"] == "llama.cpp"
m = ev["win"]["metrics"]
assert m["windows"] == w["windows"] and m["tokens_scored"] == w["scored"], (m, w)
assert abs(m["ppl"] / w["ppl"] - 1) <= 5e-4, (m["ppl"], w["ppl"])
assert 0 < m["acc"] <= 1 and m["mc_items"] == 20, m
c = ev["lcpp"]["metrics"]
assert c["windows"] == l["chunks"] and c["tokens_scored"] == l["scored"], (c, l)
assert abs(c["ppl"] / l["ppl"] - 1) <= 5e-4, (c["ppl"], l["ppl"])
s = ev["self"]["metrics"]
assert s["kld_mean"] == 0 and s["top1"] == 1 and s["windows"] == 4, s
k = ev["calib"]["metrics"]
assert k["tokens"] == 4 * 64 and k["samples"] == 4, k
print("house-qwen windows ppl %.6f (reference %.6f, rel %.2e), llama.cpp ppl %.6f (reference %.6f, rel %.2e)"
      % (m["ppl"], w["ppl"], m["ppl"] / w["ppl"] - 1, c["ppl"], l["ppl"], c["ppl"] / l["ppl"] - 1))
P
[ $? -eq 0 ] || fail "metrics"; ok

# the model artifact carries every tokenizer/generation file of the directory
cat >> q.yaml <<Y
  ls: {uses: run, needs: [model], with: {cmd: "ls \$QPIPE_INPUT_MODEL/files > files.txt", outs: [files.txt]}}
Y
expect_exit 0 "$QPIPE" run q.yaml --no-provenance --stage ls
for f in tokenizer.json tokenizer_config.json generation_config.json config.json; do
  expect_grep "^$f\$" files.txt
done

# calibration windows hold text tokens only: config.json's bos_token_id 2045
# (<|endoftext|>, absent from train.txt) is not put first, the tokenizer adds no BOS
cat >> q.yaml <<Y
  cs: {uses: run, needs: [calib], with: {cmd: "cp \$QPIPE_INPUT_CALIB/samples samples.bin", outs: [samples.bin]}}
Y
expect_exit 0 "$QPIPE" run q.yaml --no-provenance --stage cs
python3 -c "
import struct
b = open('samples.bin', 'rb').read()
ids = struct.unpack('<%di' % (len(b) // 4), b)
assert len(ids) == 4 * 64, len(ids)
assert all(0 <= i < 2045 for i in ids), [i for i in ids if i >= 2045]" || fail "calibration windows"; ok

# tokenizer_config.json is part of the tokenizer: a copy of the model whose
# chat template differs cannot serve as the KL reference
mkdir qcopy
cp "$Q"/config.json "$Q"/model.safetensors "$Q"/tokenizer.json "$Q"/generation_config.json qcopy/
python3 - "$Q/tokenizer_config.json" qcopy/tokenizer_config.json <<'P'
import json, sys
c = json.load(open(sys.argv[1]))
c["chat_template"] = "{{ messages }}"
json.dump(c, open(sys.argv[2], "w"), indent=2)
P
cat >> q.yaml <<Y
  model2: {uses: fetch, with: {source: qcopy}}
  other:
    uses: evaluate
    needs: [model2]
    with: {dataset: "$SHARED/data/shakespeare/valid.txt", reference: win, max_chunks: 2}
Y
expect_exit 2 "$QPIPE" run q.yaml --no-provenance --stage other
expect_grep "stage 'other': the model and reference 'win' have different tokenizers"

# a broken tokenizer.json: one line naming the stage, input and file
printf '{"model": {"type": "BPE", "vocab": {' > qcopy/tokenizer.json
expect_exit 1 "$QPIPE" run q.yaml --no-provenance --stage other
expect_grep "stage 'other': input 'model2': tokenizer.json: "

# a rope_scaling qpipe cannot run: one line naming the field and its value
cp "$Q/tokenizer.json" qcopy/
python3 - "$Q/config.json" qcopy/config.json <<'P'
import json, sys
c = json.load(open(sys.argv[1]))
c["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}
json.dump(c, open(sys.argv[2], "w"), indent=2)
P
expect_exit 1 "$QPIPE" run q.yaml --no-provenance --stage other
expect_grep "^qpipe: stage 'other': input 'model2': config.json: rope_scaling.rope_type: 'yarn' is not supported \(qpipe runs llama3 scaling or none\)$"
done_ok
