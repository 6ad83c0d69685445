# A tied checkpoint (tie_word_embeddings true) that ships lm_head.weight
# anyway — some exporters write the tied copy out.  The model runs
# embed_tokens, as transformers ties it, so quantize drops the stray tensor:
# it is not quantized (a NaN in it used to fail the stage, exit 2), not
# counted in bytes/bpw (they described tensors the package does not hold),
# not exported, and not a weight for mixed to budget; every result equals
# the clean checkpoint's.
source "$(dirname "$0")/lib.sh"

cp -r "$SHARED/models/house-qwen" stray
rm -rf stray/reference
# lm_head.weight = embed_tokens' rows rotated by one, with a bf16 NaN in row 0
python3 - stray/model.safetensors <<'P'
import json, struct, sys
p = sys.argv[1]
b = open(p, 'rb').read()
n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8 + n])
meta = h.pop('__metadata__', None)
data = b[8 + n:]
blobs = {k: data[v['data_offsets'][0]:v['data_offsets'][1]] for k, v in h.items()}
e = h['model.embed_tokens.weight']
row = len(blobs['model.embed_tokens.weight']) // e['shape'][0]
lm = bytearray(blobs['model.embed_tokens.weight'][row:] + blobs['model.embed_tokens.weight'][:row])
lm[6:8] = b'\xc0\x7f'
blobs['lm_head.weight'] = bytes(lm)
h['lm_head.weight'] = dict(e)
out, off, hdr = [], 0, {}
if meta is not None:
    hdr['__metadata__'] = meta
for k in sorted(blobs):
    hdr[k] = {'dtype': h[k]['dtype'], 'shape': h[k]['shape'], 'data_offsets': [off, off + len(blobs[k])]}
    off += len(blobs[k])
    out.append(blobs[k])
j = json.dumps(hdr).encode()
j += b' ' * (-len(j) % 8)
open(p, 'wb').write(struct.pack('<Q', len(j)) + j + b''.join(out))
P
head -c 20000 "$SHARED/data/shakespeare/valid.txt" > small.txt
cat > r.yaml <<Y
qpipe: 1
name: tied
vars:
  m: "\${env.M}"
stages:
  model: {uses: fetch, with: {source: "\${vars.m}"}}
  q8: {uses: quantize, needs: [model], with: {method: gguf, type: Q4_K_M}}
  rtn: {uses: quantize, needs: [model], with: {method: rtn, bits: 4, group_size: 128}}
  calib: {uses: calibrate, needs: [model], with: {dataset: small.txt, samples: 4, seq_len: 64}}
  mix: {uses: quantize, needs: [model, calib], with: {method: mixed, ladder: [Q4_K, Q8_0], max_bpw: 5.0}}
  e: {uses: evaluate, needs: [rtn], with: {dataset: small.txt, ctx: 64, max_chunks: 8}}
  pkg: {uses: package, needs: [q8], with: {format: gguf, out: "dist/\${env.N}", name: m}}
Y
metrics() { grep '"event":"stage"' "$1" | python3 -c '
import json, sys
for l in sys.stdin:
    e = json.loads(l)
    if e["stage"] in ("q8", "rtn", "e", "mix"): print(e["stage"], json.dumps(e["metrics"], sort_keys=True))'; }
M="$SHARED/models/house-qwen" N=clean expect_exit 0 "$QPIPE" run r.yaml --no-provenance --json
metrics "$T/out" > clean.txt
M="$T/stray" N=stray expect_exit 0 "$QPIPE" run r.yaml --no-provenance --json
metrics "$T/out" > stray.txt
[ "$(wc -l < clean.txt)" -eq 4 ] || fail "metrics: $(cat clean.txt)"; ok
diff clean.txt stray.txt >&2 || fail "the stray lm_head.weight changed the results"; ok
grep -q '"tensors_quantized": 43' clean.txt || fail "tensors_quantized: $(cat clean.txt)"; ok
# the GGUFs differ only in their names and qpipe.* keys: same size, no output.weight
[ "$(stat -c %s dist/clean/m.gguf)" = "$(stat -c %s dist/stray/m.gguf)" ] || fail "GGUF sizes differ"; ok
# a GGUF tensor name is a u64 length then the bytes: 13, "output.weight"
python3 -c 'import sys; sys.exit(b"\x0d" + b"\0" * 7 + b"output.weight" in open(sys.argv[1], "rb").read())' \
  dist/stray/m.gguf || fail "output.weight exported"; ok
done_ok
