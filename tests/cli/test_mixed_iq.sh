# mixed with i-quants on its ladder: a weight the importance matrix has no
# entry for (token_embd, output) cannot take IQ2_XS, which needs one, and takes the
# next ladder type instead; a ladder with nothing else for it is refused
# before any measurement.
source "$(dirname "$0")/lib.sh"

git init -q . 2>/dev/null
cat > r.yaml <<Y
qpipe: 1
name: mixed-iq
stages:
  model: {uses: fetch, with: {source: "$SHARED/models/house-llama"}}
  calib: {uses: calibrate, needs: [model], with: {dataset: "$SHARED/data/shakespeare/train.txt", samples: 8, seq_len: 128, seed: 0}}
  q: {uses: quantize, needs: [model, calib], with: {method: mixed, ladder: [IQ2_XS, Q4_K], max_bpw: 3.0, windows: 4}}
Y
expect_exit 0 "$QPIPE" run r.yaml --no-provenance --json
expect_grep '"stage":"q".*"status":"ran"'
sed -i 's/ladder: \[IQ2_XS, Q4_K\]/ladder: [IQ2_XXS, IQ2_XS]/' r.yaml
expect_exit 2 "$QPIPE" run r.yaml --no-provenance
expect_grep "tensor '(lm_head|model.embed_tokens).weight' has no importance matrix entry and the ladder's highest type IQ2_XS needs one"
done_ok
