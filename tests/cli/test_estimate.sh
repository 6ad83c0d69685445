# qpipe plan --estimate (a table per stage, the machine calibration measured
# once and cached, --recalibrate) and the memory check of qpipe run: refused
# before any stage runs (exit 1, one line naming the stage, predicted vs
# available, what to change), --ignore-memory, cached stages never refused.
source "$(dirname "$0")/lib.sh"

cat > r.yaml <<Y
qpipe: 1
name: est
stages:
  model: {uses: fetch, with: {source: "$SHARED/models/house-llama"}}
  q8: {uses: quantize, needs: [model], with: {method: gguf, type: Q8_0}}
  calib:
    uses: calibrate
    needs: [model]
    with: {dataset: "$SHARED/data/shakespeare/valid.txt", samples: 2, seq_len: 64, hessians: true}
Y

expect_exit 0 "$QPIPE" plan r.yaml --estimate
expect_grep '^machine calibration: measured in [0-9.]+s'
expect_grep '^  model +fetch +will run +[0-9.]+s +[0-9.]+ MB +10\.[0-9] MB'
# which term dominates depends on this machine's measured rates: only its presence is asserted
expect_grep '^  q8 +quantize +will run +[0-9.]+s +[0-9.]+ MB +[0-9.]+ MB +[a-z0-9 ]+ [0-9]+%; RSS: largest tensor'
expect_grep '^  calib +calibrate +will run .*RSS: one layer.s Hessians'
expect_grep '^machine: .*GEMM [0-9.]+ GFLOP/s'
expect_grep 'every stage fits'
# the calibration is cached: not measured again, unless asked
expect_exit 0 "$QPIPE" plan r.yaml --estimate
expect_no_grep 'machine calibration: measured'
ls "$QPIPE_CACHE"/meta/estimate/machine-* >/dev/null || fail "no cached calibration"; ok
expect_exit 0 "$QPIPE" plan r.yaml --estimate --json
expect_grep '^\{.*"event":"estimate".*"stages":\{.*"calib":\{.*"peak_rss":[1-9]'
expect_exit 2 "$QPIPE" run r.yaml --estimate
expect_exit 2 "$QPIPE" plan r.yaml --recalibrate
expect_exit 2 "$QPIPE" run r.yaml --memory lots

# a machine of 5 MB: the first stage is refused before anything runs
expect_exit 1 "$QPIPE" run r.yaml --no-provenance --memory 5M
expect_grep "^qpipe: stage 'model' \(fetch\) is predicted to need [0-9.]+ MB of memory at its peak \(largest tensor\), but 5.2 MB is available \(--memory\); .*--ignore-memory"
[ "$(wc -l < "$T/out")" -eq 1 ] || { cat "$T/out"; fail "more than one line"; }; ok
[ -z "$(ls "$QPIPE_CACHE/actions" 2>/dev/null)" ] || fail "a stage ran"; ok
# plan says what run would do
expect_exit 0 "$QPIPE" plan r.yaml --estimate --memory 5M
expect_grep "^run would refuse: stage 'model'"
# the override
expect_exit 0 "$QPIPE" run r.yaml --no-provenance --memory 5M --ignore-memory --stage q8 --json
[ "$(ran_stages)" = "model q8" ] || fail "ran: $(ran_stages)"; ok
# cached stages cost nothing: with model and q8 cached, calib is the one named
expect_exit 1 "$QPIPE" run r.yaml --no-provenance --memory 5M
expect_grep "^qpipe: stage 'calib' \(calibrate\) .*one layer.s Hessians.*hessians: false"
expect_exit 0 "$QPIPE" plan r.yaml --estimate
expect_grep '^  model +fetch +cached +0\.0s +- '
expect_grep '^  q8 +quantize +cached '
# --recalibrate measures again
expect_exit 0 "$QPIPE" plan r.yaml --estimate --recalibrate
expect_grep '^machine calibration: measured in'
done_ok
