# method qat end to end on the house model (a few steps, small calibration):
# block-wise training and the end-to-end scale phase run and record their
# losses; the same recipe at 1 and 2 threads gives the same artifact digest;
# the GPTQ v1 export, decoded by an independent reader
# (tests/support/gptq_reader.py), is bit for bit the f32 weights evaluate
# used (package format safetensors, dtype f32); GGUF Q4_0 at group 32 is
# written; a killed run resumes from its last finished block (or, past the
# last block, runs only the end-to-end phase again); bad
# parameters are one-line errors.
source "$(dirname "$0")/lib.sh"

VALID="$SHARED/data/shakespeare/valid.txt"
cat > r.yaml <<Y
qpipe: 1
name: qat
stages:
  model: {uses: fetch, with: {source: "$SHARED/models/house-llama"}}
  calib: {uses: calibrate, needs: [model], with: {dataset: "$SHARED/data/shakespeare/train.txt", samples: 6, seq_len: 48, seed: 1}}
  q: {uses: quantize, needs: [model, calib], with: {method: qat, bits: 4, group_size: 128, steps: 3, batch: 2, e2e_steps: 2}}
  ev: {uses: evaluate, needs: [q], with: {dataset: "$VALID", ctx: 128, max_chunks: 4}}
  p32: {uses: package, needs: [q], with: {format: safetensors, out: dist/f32, dtype: f32}}
  pg: {uses: package, needs: [q], with: {format: gptq, out: dist/gptq}}
Y
expect_exit 0 "$QPIPE" run r.yaml --no-provenance --json --threads 2
cp "$T/out" run1.json
d2=$(stage_output q run1.json)
[ ${#d2} -eq 64 ] || fail "no qat output"; ok
expect_grep '"stage":"q".*layer 6/6: block MSE' run1.json
expect_grep '"stage":"q".*end-to-end: next-token loss' run1.json
expect_grep '"stage":"ev".*"ppl":' run1.json

# the same bytes at 1 thread, in a fresh cache
expect_exit 0 "$QPIPE" run r.yaml --no-provenance --json --threads 1 --cache-dir c1 --stage q
d1=$(stage_output q)
[ "$d1" = "$d2" ] || fail "1 thread: $d1, 2 threads: $d2"; ok

# the GPTQ export decodes to the evaluated weights (layers 0 and 5, all seven linears)
python3 "$REPO/tests/support/gptq_reader.py" dist/gptq dist/f32 model.layers.0. model.layers.5. > reader.out 2>&1 \
  || { cat reader.out >&2; fail "GPTQ export differs from the evaluated weights"; }
expect_grep '^checked 14 tensors$' reader.out
grep -q '"qpipe_method": "qat"' dist/gptq/config.json || fail "config.json does not name qat"; ok

# GGUF Q4_0 at group 32 (sym): written and evaluated
cat > g.yaml <<Y
qpipe: 1
name: qat-gguf
stages:
  model: {uses: fetch, with: {source: "$SHARED/models/house-llama"}}
  calib: {uses: calibrate, needs: [model], with: {dataset: "$SHARED/data/shakespeare/train.txt", samples: 6, seq_len: 48, seed: 1}}
  q: {uses: quantize, needs: [model, calib], with: {method: qat, bits: 4, group_size: 32, sym: true, steps: 2, batch: 3}}
  q1: {uses: quantize, needs: [model, calib], with: {method: qat, bits: 4, group_size: 32, steps: 2, batch: 3}}
  pk: {uses: package, needs: [q], with: {format: gguf, out: dist/q40}}
  pk1: {uses: package, needs: [q1], with: {format: gguf, out: dist/q41}}
Y
expect_exit 0 "$QPIPE" run g.yaml --no-provenance --json
g40=$(ls dist/q40/*.gguf 2>/dev/null); g41=$(ls dist/q41/*.gguf 2>/dev/null)
[ -s "$g40" ] && [ -s "$g41" ] || fail "no GGUF written: $(ls -R dist)"; ok
# general.file_type: 2 (Q4_0) for the symmetric grid, 3 (Q4_1) for the asymmetric one
python3 - "$g40" "$g41" > ftypes.out <<'PY' || fail "GGUF file types"
import struct, sys
def ftype(path):
    b = open(path, "rb").read()
    assert b[:4] == b"GGUF"
    n_kv = struct.unpack_from("<Q", b, 16)[0]
    off = 24
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    for _ in range(n_kv):
        (kl,) = struct.unpack_from("<Q", b, off); key = b[off + 8:off + 8 + kl].decode(); off += 8 + kl
        (t,) = struct.unpack_from("<I", b, off); off += 4
        if key == "general.file_type":
            return struct.unpack_from("<I", b, off)[0]
        if t == 8:
            (sl,) = struct.unpack_from("<Q", b, off); off += 8 + sl
        elif t == 9:
            et, cnt = struct.unpack_from("<IQ", b, off); off += 12
            for _ in range(cnt):
                if et == 8:
                    (sl,) = struct.unpack_from("<Q", b, off); off += 8 + sl
                else:
                    off += sizes[et]
        else:
            off += sizes[t]
print(ftype(sys.argv[1]), ftype(sys.argv[2]))
PY
expect_grep '^2 3$' ftypes.out

# killed once two blocks are checkpointed (QPIPE_TEST_KILL_AFTER_LAYER=qat:2, as in
# test_resume.sh), rerun: it resumes at layer 3/6 and gives the uninterrupted digest
QPIPE_TEST_KILL_AFTER_LAYER=qat:2 "$QPIPE" run r.yaml --no-provenance --threads 2 --cache-dir ck --stage q > killed.out 2>&1
[ $? -eq 137 ] || { cat killed.out >&2; fail "the killed run did not die by SIGKILL"; }; ok
expect_exit 0 "$QPIPE" run r.yaml --no-provenance --json --threads 2 --cache-dir ck --stage q
expect_grep "qat: resuming at layer 3/6 from checkpoint"
[ "$(stage_output q)" = "$d2" ] || fail "resumed: $(stage_output q), uninterrupted: $d2"; ok

# killed after the last block's checkpoint, before the end-to-end phase: the
# rerun trains no block again, only the end-to-end phase, to the same digest
QPIPE_TEST_KILL_AFTER_LAYER=qat:5 "$QPIPE" run r.yaml --no-provenance --threads 2 --cache-dir ck2 --stage q > killed.out 2>&1
[ $? -eq 137 ] || { cat killed.out >&2; fail "the killed run did not die by SIGKILL"; }; ok
expect_exit 0 "$QPIPE" run r.yaml --no-provenance --json --threads 2 --cache-dir ck2 --stage q
expect_no_grep "block MSE"
expect_grep "end-to-end: next-token loss"
[ "$(stage_output q)" = "$d2" ] || fail "resumed before e2e: $(stage_output q), uninterrupted: $d2"; ok

# bad parameters: one line naming the key
cat > bad.yaml <<Y
qpipe: 1
name: bad
stages:
  model: {uses: fetch, with: {source: "$SHARED/models/house-llama"}}
  q: {uses: quantize, needs: [model], with: {method: qat, init: awq}}
Y
expect_exit 2 "$QPIPE" run bad.yaml --no-provenance
expect_grep "init"
sed -i 's/init: awq/act_order: true/' bad.yaml
expect_exit 2 "$QPIPE" run bad.yaml --no-provenance
expect_grep "act_order and static_groups do not apply to method qat"
done_ok
