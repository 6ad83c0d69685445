# The numerics contract (common/numerics.h): calibrate, GPTQ, AWQ, mixed and
# evaluate give the same stage keys, output digests and metrics whatever
# OpenBLAS kernel the environment asks for (OPENBLAS_CORETYPE unset, Haswell,
# SkylakeX, Cooperlake), whatever OPENBLAS_NUM_THREADS and --threads say, and
# whichever of qpipe's own GEMM paths computes them: QPIPE_GEMM=avx2 is what
# an AVX2-only machine runs, QPIPE_GEMM=scalar the portable C kernels.  A
# kernel or path this CPU cannot run is skipped, and the output says so.
source "$(dirname "$0")/lib.sh"

cat > r.yaml <<Y
qpipe: 1
name: numerics
vars: {valid: "$SHARED/data/shakespeare/valid.txt"}
stages:
  model: {uses: fetch, with: {source: "$SHARED/models/house-llama"}}
  calib: {uses: calibrate, needs: [model], with: {dataset: "$SHARED/data/shakespeare/train.txt", samples: 8, seq_len: 64, seed: 7}}
  base: {uses: evaluate, needs: [model], with: {dataset: "\${vars.valid}", max_chunks: 6}}
  gptq: {uses: quantize, needs: [model, calib], with: {method: gptq, bits: 4, group_size: 128, act_order: true}}
  awq: {uses: quantize, needs: [model, calib], with: {method: awq, bits: 4, group_size: 128, clip: false}}
  mixed: {uses: quantize, needs: [model, calib], with: {method: mixed, bpw_of: Q4_K_M, ladder: [Q4_K, Q6_K], windows: 2}}
  e_gptq: {uses: evaluate, needs: [gptq], with: {dataset: "\${vars.valid}", max_chunks: 6, reference: base}}
  e_awq: {uses: evaluate, needs: [awq], with: {dataset: "\${vars.valid}", max_chunks: 6, reference: base}}
  e_mixed: {uses: evaluate, needs: [mixed], with: {dataset: "\${vars.valid}", max_chunks: 6, reference: base}}
Y

expect_exit 0 "$QPIPE" --version
expect_grep '^numerics seqfma-1 '

flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
has() { for f in "$@"; do [[ " $flags " == *" $f "* ]] || return 1; done; }

# one stage per line: id, key, output digest, metrics (seconds left out)
summary() {
  python3 - "$1" <<'P'
import json, sys
for line in open(sys.argv[1]):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get("event") == "stage" and "output" in e:
        print(e["stage"], e["key"], e["output"], json.dumps(e.get("metrics"), sort_keys=True))
P
}

# run NAME THREADS [VAR=VALUE ...]: the whole recipe in a fresh cache
run() {
  local name=$1 threads=$2; shift 2
  env -u OPENBLAS_CORETYPE -u OPENBLAS_NUM_THREADS -u QPIPE_GEMM "$@" QPIPE_CACHE="$T/cache-$name" \
    "$QPIPE" run r.yaml --no-provenance --json --threads "$threads" >"$T/out" 2>&1 \
    || { cat "$T/out" >&2; fail "$name: qpipe run failed"; }
  summary "$T/out" >"$T/sum-$name"
  [ "$(wc -l <"$T/sum-$name")" -eq 9 ] || { cat "$T/out" >&2; fail "$name: expected 9 stages"; }
  ok
  if [ "$name" != native ]; then
    diff "$T/sum-native" "$T/sum-$name" >&2 || fail "$name differs from the native run"
    ok
  fi
  echo "same keys, digests and metrics: $name ($threads threads; $*)"
}

run native 2
if [ "${BUILD:-build}" = build-asan ]; then
  # Under ASan+UBSan a pipeline run is ~10x slower; the sanitizers need one
  # run per code path (vector kernels, other thread count), the full
  # kernel/thread/path matrix runs in `make test`.
  run gemm-avx2-1thread 1 QPIPE_GEMM=avx2 OPENBLAS_CORETYPE=Cooperlake
  echo "SKIP under ASan: the OpenBLAS kernel matrix and the scalar path (make test runs them)"
else
  if has avx2 fma; then
    run haswell 1 OPENBLAS_CORETYPE=Haswell OPENBLAS_NUM_THREADS=2
    run gemm-avx2 3 QPIPE_GEMM=avx2
  else
    echo "SKIP OPENBLAS_CORETYPE=Haswell and QPIPE_GEMM=avx2: this CPU has no AVX2+FMA"
  fi
  if has avx512f avx512bw avx512vl avx512dq avx512cd; then
    run skylakex 3 OPENBLAS_CORETYPE=SkylakeX
    run gemm-avx512 1 QPIPE_GEMM=avx512
  else
    echo "SKIP OPENBLAS_CORETYPE=SkylakeX and QPIPE_GEMM=avx512: this CPU has no AVX-512 (F, BW, VL, DQ, CD)"
  fi
  if has avx512f avx512bw avx512vl avx512dq avx512cd avx512_bf16; then
    run cooperlake 2 OPENBLAS_CORETYPE=Cooperlake
  else
    echo "SKIP OPENBLAS_CORETYPE=Cooperlake: this CPU has no AVX-512 BF16"
  fi
  run gemm-scalar 2 QPIPE_GEMM=scalar
fi

# the path a run used is the one --version reports
QPIPE_GEMM=scalar "$QPIPE" --version >"$T/out" 2>&1
expect_grep 'scalar kernels'
sed 's/^/  /' "$T/sum-native"
done_ok
