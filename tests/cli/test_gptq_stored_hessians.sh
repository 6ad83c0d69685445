# GPTQ with sequential: false reads the Hessians the calibrate stage stored
# (one per site and layer), checked against the model's shapes: it runs,
# writes a quantized model, and differs from the sequential run (which
# calibrates each block on the outputs of the quantized blocks before it).
source "$(dirname "$0")/lib.sh"

cat > r.yaml <<Y
qpipe: 1
name: stored-hessians
stages:
  model: {uses: fetch, with: {source: "$SHARED/models/house-llama"}}
  calib: {uses: calibrate, needs: [model], with: {dataset: "$SHARED/data/shakespeare/train.txt", samples: 8, seq_len: 64, seed: 3}}
  stored: {uses: quantize, needs: [model, calib], with: {method: gptq, bits: 4, group_size: 128, sequential: false}}
  seq: {uses: quantize, needs: [model, calib], with: {method: gptq, bits: 4, group_size: 128}}
Y
expect_exit 0 "$QPIPE" run r.yaml --no-provenance --json
[ "$(ran_stages)" = "calib model seq stored" ] || fail "ran: $(ran_stages)"; ok
a=$(stage_output stored); b=$(stage_output seq)
[ ${#a} -eq 64 ] && [ ${#b} -eq 64 ] || fail "no outputs: '$a' '$b'"; ok
[ "$a" != "$b" ] || fail "sequential: false gave the sequential run's bytes"; ok
done_ok
