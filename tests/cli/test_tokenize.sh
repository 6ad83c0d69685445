#!/usr/bin/env bash
# qpipe tokenize: every house-qwen tokenizer case through tokenizer.json (the
# Hugging Face ids, NFC included) and through llama.cpp's F32.gguf vocabulary
# (llama-tokenize's ids: tokenize.jsonl), special tokens parsed by default
# and plain text with --no-special; house-llama's SentencePiece directory
# with its BOS and without (--no-bos); one-line errors and exit codes.
. "$(dirname "$0")/lib.sh"

QWEN=$SHARED/models/house-qwen
LLAMA=$SHARED/models/house-llama

# cases FILE.json|FILE.jsonl DIR: writes DIR/N.txt (the text's bytes) and DIR/N.ids
split_cases() {
  python3 - "$1" "$2" <<'EOF'
import json, sys, os
src, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
if src.endswith(".jsonl"):
    cases = [json.loads(l) for l in open(src, encoding="utf-8") if l.strip()]
else:
    cases = json.load(open(src, encoding="utf-8"))["cases"]
for i, c in enumerate(cases):
    open(f"{out}/{i:03d}.txt", "wb").write(c["text"].encode("utf-8"))
    open(f"{out}/{i:03d}.ids", "w").write(json.dumps(c["ids"]) + "\n")
EOF
}

# check_all TOKENIZER DIR MIN [flags]: every DIR/N.txt (at least MIN) must give exactly DIR/N.ids
check_all() {
  local tok=$1 dir=$2 min=$3; shift 3
  local n=0
  for txt in "$dir"/*.txt; do
    "$QPIPE" tokenize "$tok" -f "$txt" "$@" >"$T/got" 2>"$T/err" || { cat "$T/err" >&2; fail "tokenize $txt"; }
    cmp -s "$T/got" "${txt%.txt}.ids" || { echo "want $(cat "${txt%.txt}.ids")"; echo " got $(cat "$T/got")"; \
      fail "$tok: case $(basename "$txt") differs"; }
    n=$((n+1))
  done
  [ "$n" -ge "$min" ] || fail "only $n cases in $dir"
  ok
}

split_cases "$QWEN/reference/tokenizer_cases.json" "$T/hf"
check_all "$QWEN" "$T/hf" 104

split_cases "$SHARED/vectors/house-qwen/tokenize.jsonl" "$T/gguf"
check_all "$SHARED/vectors/house-qwen/F32.gguf" "$T/gguf" 104

# Special tokens: parsed by default, plain text with --no-special.
expect_exit 0 "$QPIPE" tokenize "$QWEN" "<|im_start|>user"
[ "$(head -c 6 "$T/out")" = "[2046," ] || { cat "$T/out"; fail "<|im_start|> not parsed as a special token"; }
ok
expect_exit 0 "$QPIPE" tokenize "$QWEN" --no-special "<|im_start|>user"
expect_no_grep '2046'
expect_exit 0 "$QPIPE" tokenize "$QWEN" --pieces "Hello world"
expect_grep '^\[\[39, "H"\], '

# SentencePiece: the model adds BOS (id 1); --no-bos gives the reference ids.
expect_exit 0 "$QPIPE" tokenize "$LLAMA" "Hello"
expect_grep '^\[1, '
split_cases "$LLAMA/reference/tokenizer_cases.json" "$T/spm"
check_all "$LLAMA" "$T/spm" 10 --no-bos

# A directory with both files reads tokenizer.model, as convert_hf_to_gguf
# and the pipeline do.
mkdir -p "$T/both" && cp "$QWEN/tokenizer.json" "$QWEN/tokenizer_config.json" "$LLAMA/tokenizer.model" "$T/both/"
"$QPIPE" tokenize "$LLAMA" --no-bos "Hello world" >"$T/want" || fail "tokenize house-llama"
expect_exit 0 "$QPIPE" tokenize "$T/both" --no-bos "Hello world"
cmp -s "$T/out" "$T/want" || { cat "$T/out" "$T/want"; fail "both files: tokenizer.model not preferred"; }
ok

# Errors: one line, exit 1 for a missing / broken tokenizer, 2 for usage.
expect_exit 2 "$QPIPE" tokenize "$QWEN"
expect_exit 2 "$QPIPE" tokenize
expect_exit 1 "$QPIPE" tokenize "$T/nowhere" "x"
expect_grep "nowhere"
mkdir -p "$T/broken" && printf '{"model": {"type": "BPE", "vocab": {' >"$T/broken/tokenizer.json"
expect_exit 1 "$QPIPE" tokenize "$T/broken" "x"
expect_grep "broken/tokenizer.json"
[ "$(wc -l <"$T/out")" -eq 1 ] || { cat "$T/out"; fail "error is not one line"; }
ok
expect_exit 1 "$QPIPE" tokenize "$QWEN" -f "$T/absent.txt"
expect_grep "absent.txt"

done_ok
