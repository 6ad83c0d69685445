# Calibration activations beyond QPIPE_ACT_MEM are spilled to an unlinked
# temp file and streamed one window at a time (stages/act_store.h): the
# calibrate stage and sequential GPTQ give the same bytes spilled as in
# memory, leave nothing in the cache's tmp/, say so in the run's output,
# and a malformed budget is an error naming the variable.
source "$(dirname "$0")/lib.sh"

cat > r.yaml <<Y
qpipe: 1
name: act-spill
stages:
  model: {uses: fetch, with: {source: "$SHARED/models/house-llama"}}
  calib: {uses: calibrate, needs: [model], with: {dataset: "$SHARED/data/shakespeare/train.txt", samples: 4, seq_len: 64, seed: 5}}
  gptq: {uses: quantize, needs: [model, calib], with: {method: gptq, bits: 4, group_size: 128}}
Y
expect_exit 0 "$QPIPE" run r.yaml --no-provenance --json
mem_calib=$(stage_output calib); mem_gptq=$(stage_output gptq)
[ ${#mem_calib} -eq 64 ] && [ ${#mem_gptq} -eq 64 ] || fail "no outputs: '$mem_calib' '$mem_gptq'"; ok
expect_exit 0 env QPIPE_ACT_MEM=0 "$QPIPE" run r.yaml --no-provenance --cache-dir "$T/spill" --json
[ "$(stage_output calib)" = "$mem_calib" ] || fail "spilled calibration differs from the in-memory one"; ok
[ "$(stage_output gptq)" = "$mem_gptq" ] || fail "spilled GPTQ differs from the in-memory one"; ok
expect_grep 'activations spilled to disk'
[ -z "$(ls -A "$T/spill/tmp" 2>/dev/null)" ] || fail "spill files left in tmp/: $(ls "$T/spill/tmp")"; ok
expect_exit 2 env QPIPE_ACT_MEM=lots "$QPIPE" run r.yaml --no-provenance --cache-dir "$T/bad" --force=calib
expect_grep "QPIPE_ACT_MEM='lots': expected a size"
done_ok
