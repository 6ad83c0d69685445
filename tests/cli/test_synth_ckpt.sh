# bench/synth_ckpt's tiny preset: the HF layout it writes (shards, index,
# config, the real LLaMA vocabulary), fetch + evaluate through a recipe,
# determinism (same seed, same bytes; another seed, other weights) and
# errors that leave no half-written checkpoint behind.
source "$(dirname "$0")/lib.sh"
SYNTH=${SYNTH:-$REPO/${BUILD:-build}/bench/synth_ckpt}
[ -x "$SYNTH" ] || fail "$SYNTH not built (make ${BUILD:-build}/bench/synth_ckpt)"; ok
export QP_LLAMA2_TOKENIZER="$SHARED/models/llama2-tokenizer"

expect_exit 0 "$SYNTH" tiny a --seed 7
expect_grep 'tiny -> a: 21 tensors, 3 shard\(s\), seed 7'
for f in config.json generation_config.json model.safetensors.index.json tokenizer.model tokenizer_config.json \
         model-00001-of-00003.safetensors model-00002-of-00003.safetensors model-00003-of-00003.safetensors; do
  [ -f "a/$f" ] || fail "a/$f missing"; ok
done
[ "$(ls -A a | wc -l)" -eq 8 ] || fail "stray files: $(ls -A a)"; ok
cmp -s a/tokenizer.model "$SHARED/models/llama2-tokenizer/tokenizer.model" || fail "tokenizer.model not copied"; ok
python3 - a <<'PY' || fail "layout check"
import json, struct, sys, os
d = sys.argv[1]
c = json.load(open(f"{d}/config.json"))
assert c["architectures"] == ["LlamaForCausalLM"] and c["torch_dtype"] == "bfloat16", c
assert (c["bos_token_id"], c["eos_token_id"], c["vocab_size"], c["tie_word_embeddings"]) == (1, 2, 32000, False)
idx = json.load(open(f"{d}/model.safetensors.index.json"))
total = 0
for shard in sorted(set(idx["weight_map"].values())):
    b = open(f"{d}/{shard}", "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    assert n % 8 == 0, "header not padded to 8"
    h = json.loads(b[8:8 + n])
    assert h.pop("__metadata__") == {"format": "pt"}
    end = 0
    for name, t in h.items():
        assert idx["weight_map"][name] == shard and t["dtype"] == "BF16"
        lo, hi = t["data_offsets"]
        count = 1
        for s in t["shape"]: count *= s
        assert hi - lo == 2 * count and lo == end, name
        end = hi
        total += hi - lo
        if name.endswith("norm.weight"):
            assert set(struct.unpack(f"<{count}H", b[8 + n + lo:8 + n + hi])) == {0x3F80}, name
    assert len(b) == 8 + n + end, shard
assert total == idx["metadata"]["total_size"] and len(idx["weight_map"]) == 21
PY
ok

# determinism: same seed, same bytes; another seed changes the weights only
expect_exit 0 "$SYNTH" tiny b --seed 7
for f in a/*; do cmp -s "$f" "b/${f#a/}" || fail "seed 7 twice: ${f#a/} differs"; ok; done
expect_exit 0 "$SYNTH" tiny c --seed 8
cmp -s a/config.json c/config.json || fail "config depends on the seed"; ok
! cmp -s a/model-00001-of-00003.safetensors c/model-00001-of-00003.safetensors || fail "seed ignored"; ok

# fetch + evaluate (4 windows of 128 tokens): random weights give a
# perplexity near the vocabulary size; the same bytes fetch to the same object
expect_exit 0 env QP_SYNTH_MODEL="$T/a" "$QPIPE" run "$REPO/bench/scale/recipes/synth-tiny.yaml" --no-provenance --json
grep -qE '"stage":"base".*"windows":4\.0' "$T/out" || { cat "$T/out" >&2; fail "4 windows not scored"; }; ok
ppl=$(grep '"stage":"base"' "$T/out" | grep -o '"ppl":[0-9.e+]*' | cut -d: -f2)
awk -v p="$ppl" 'BEGIN { exit !(p > 16000 && p < 64000) }' || fail "ppl $ppl of random weights"; ok
fa=$(stage_output model)
expect_exit 0 env QP_SYNTH_MODEL="$T/b" "$QPIPE" run "$REPO/bench/scale/recipes/synth-tiny.yaml" --no-provenance --json
[ "$(stage_output model)" = "$fa" ] || fail "same seed, other fetch output"; ok
expect_exit 0 "$QPIPE" tokenize a "Hello world"
expect_grep '^\[1, ?15043, ?3186\]$'

# errors: usage (exit 2); a missing vocabulary fails before anything is
# written; a failure after the shards (here tokenizer_config.json cannot be
# replaced) leaves no config.json, the file that makes a directory a
# checkpoint, and no temp files
expect_exit 2 "$SYNTH" huge d
expect_grep "unknown preset 'huge'"
expect_exit 2 "$SYNTH" tiny d --seed -1
expect_grep 'expected --seed N'
expect_exit 1 env QP_LLAMA2_TOKENIZER="$T/nowhere" "$SYNTH" tiny d
expect_grep 'nowhere/tokenizer.model'
[ ! -e d ] || fail "wrote d without a vocabulary"; ok
rm a/tokenizer_config.json && mkdir a/tokenizer_config.json
expect_exit 1 "$SYNTH" tiny a --seed 7
expect_grep 'shard 3/3 written'
[ ! -e a/config.json ] || fail "config.json left after a failure"; ok
[ -z "$(ls -A a | grep -v tokenizer_config | grep '^\.')" ] || fail "temp files left: $(ls -A a)"; ok
touch file
expect_exit 1 "$SYNTH" tiny file/sub
[ ! -e file/sub ] || fail "wrote under a file"; ok
done_ok
