# package format safetensors: a GPTQ artifact's dequantized weights as a
# plain Hugging Face checkpoint.  F32 is bit for bit what evaluate used (the
# package, fetched back and evaluated, scores the same perplexity); BF16 and
# F16 are those f32 values rounded to nearest even; a dense tensor already in
# the written dtype is copied byte for byte; shards follow max_shard_size
# with an index as transformers writes it; README.md is a Hub model card.
source "$(dirname "$0")/lib.sh"

git init -q . 2>/dev/null
cp -r "$SHARED/models/house-llama" src && rm -rf src/reference
# a source card whose license the package's card carries (behind a byte
# order mark, with a comment)
printf -- '\xef\xbb\xbf---\nlicense: apache-2.0 # the code and the weights\nlanguage: en\n---\n# house-llama\n' > src/README.md
VALID="$SHARED/data/shakespeare/valid.txt"
cat > r.yaml <<Y
qpipe: 1
name: st
stages:
  model: {uses: fetch, with: {source: src}}
  calib: {uses: calibrate, needs: [model], with: {dataset: "$SHARED/data/shakespeare/train.txt", samples: 16, seq_len: 128, seed: 0}}
  q: {uses: quantize, needs: [model, calib], with: {method: gptq, bits: 4, group_size: 128}}
  ev: {uses: evaluate, needs: [q], with: {dataset: "$VALID", ctx: 256, max_chunks: 48}}
  p32: {uses: package, needs: [q], with: {format: safetensors, out: dist/f32, dtype: f32}}
  pbf: {uses: package, needs: [q], with: {format: safetensors, out: dist/bf16, dtype: bf16, max_shard_size: 4MB, base_model: house/llama}}
  pf16: {uses: package, needs: [q], with: {format: safetensors, out: dist/f16, dtype: f16, max_shard_size: 3MiB}}
  plain: {uses: package, needs: [model], with: {format: safetensors, out: dist/plain}}
  pg: {uses: package, needs: [q], with: {format: gptq, out: dist/gptq, base_model: house/llama}}
Y
expect_exit 0 "$QPIPE" run r.yaml --no-provenance --json
cp "$T/out" run1.json
ppl_q=$(grep '"stage":"ev"' run1.json | grep -o '"ppl":[0-9.e+-]*' | cut -d: -f2)
[ -n "$ppl_q" ] || fail "no ppl for the GPTQ artifact"; ok

# files: one file under 5GB, shards named and indexed past max_shard_size
[ -f dist/f32/model.safetensors ] && [ ! -e dist/f32/model.safetensors.index.json ] || fail "f32: not one file"; ok
[ -f dist/bf16/model-00001-of-00003.safetensors ] && [ -f dist/bf16/model-00003-of-00003.safetensors ] \
  || fail "bf16: not 3 shards: $(ls dist/bf16)"; ok
[ ! -e dist/bf16/model.safetensors ] || fail "bf16: a single file beside the shards"; ok
for f in config.json tokenizer.model tokenizer_config.json generation_config.json README.md provenance.json; do
  [ -f "dist/bf16/$f" ] || fail "bf16 lacks $f"; ok
done
grep -q '"torch_dtype": "bfloat16"' dist/bf16/config.json || fail "bf16 config.json torch_dtype"; ok
grep -q '"torch_dtype": "float32"' dist/f32/config.json || fail "f32 config.json torch_dtype"; ok
grep -q '"torch_dtype": "float16"' dist/f16/config.json || fail "f16 config.json torch_dtype"; ok
! grep -q quantization_config dist/{f32,bf16,f16,plain}/config.json || fail "a quantization_config in a float checkpoint"; ok

# the tensors, read by an independent reader: every shard holds what the
# index says, within max_shard_size; bf16/f16 are the f32 values rounded
# to nearest even; the plain package's tensors are the source's bytes
python3 - dist src <<'PY' || fail "safetensors contents"
import json, struct, sys, os, math
dist, src = sys.argv[1], sys.argv[2]
def read(path):
    with open(path, 'rb') as f:
        data = f.read()
    n = struct.unpack('<Q', data[:8])[0]
    hdr = json.loads(data[8:8 + n])
    assert hdr.pop('__metadata__') == {'format': 'pt'}, path
    body = data[8 + n:]
    end = 0
    out = {}
    for name, t in sorted(hdr.items(), key=lambda kv: kv[1]['data_offsets']):
        b, e = t['data_offsets']
        assert b == end, (path, name, 'gap or overlap')
        end = e
        size = {'F32': 4, 'BF16': 2, 'F16': 2}[t['dtype']] * math.prod(t['shape'])
        assert e - b == size, (path, name)
        out[name] = (t['dtype'], t['shape'], body[b:e])
    assert end == len(body), path
    return out
def load(d):
    idx = os.path.join(d, 'model.safetensors.index.json')
    if not os.path.exists(idx):
        return read(os.path.join(d, 'model.safetensors'))
    index = json.load(open(idx))
    out, total = {}, 0
    for f in sorted(set(index['weight_map'].values())):
        part = read(os.path.join(d, f))
        for k in part:
            assert index['weight_map'][k] == f, (k, f)
        out.update(part)
    assert set(out) == set(index['weight_map'])
    assert index['metadata']['total_size'] == sum(len(v[2]) for v in out.values())
    return out
f32, bf, f16, plain = (load(os.path.join(dist, x)) for x in ('f32', 'bf16', 'f16', 'plain'))
source = read(os.path.join(src, 'model.safetensors'))
assert set(f32) == set(bf) == set(f16) == set(plain) == set(source)
for d, cap in (('bf16', 4000000), ('f16', 3 << 20)):
    for f in os.listdir(os.path.join(dist, d)):
        if f.endswith('.safetensors'):
            tensors = read(os.path.join(dist, d, f)).values()
            assert sum(len(t[2]) for t in tensors) <= cap or len(tensors) == 1, (d, f)
def bf16_of(u):   # f32 bits -> bf16 bits, round to nearest even
    return (u + 0x7fff + ((u >> 16) & 1)) >> 16
def f16_of(x):
    return struct.unpack('<H', struct.pack('<e', x))[0]
changed = 0
for name, (dt, shape, raw) in f32.items():
    assert dt == 'F32' and shape == source[name][1]
    words = struct.unpack('<%dI' % (len(raw) // 4), raw)
    want_bf = struct.pack('<%dH' % len(words), *(bf16_of(u) for u in words))
    assert bf[name][0] == 'BF16' and bf[name][2] == want_bf, name
    vals = struct.unpack('<%df' % len(words), raw)
    want_f16 = struct.pack('<%dH' % len(vals), *(f16_of(v) for v in vals))
    assert f16[name][0] == 'F16' and f16[name][2] == want_f16, name
    assert plain[name] == source[name], name
    changed += bf[name][2] != source[name][2]
assert changed >= 42, changed   # every quantized weight differs from the source
print('ok', len(f32), 'tensors', changed, 'changed')
PY
ok

# fetched back and evaluated: F32 scores exactly what evaluate scored for
# the GPTQ artifact; BF16 within its rounding
cat > e.yaml <<Y
qpipe: 1
name: back
stages:
  f32: {uses: fetch, with: {source: dist/f32}}
  bf: {uses: fetch, with: {source: dist/bf16}}
  e32: {uses: evaluate, needs: [f32], with: {dataset: "$VALID", ctx: 256, max_chunks: 48}}
  ebf: {uses: evaluate, needs: [bf], with: {dataset: "$VALID", ctx: 256, max_chunks: 48}}
Y
expect_exit 0 "$QPIPE" run e.yaml --no-provenance --json
ppl_32=$(grep '"stage":"e32"' "$T/out" | grep -o '"ppl":[0-9.e+-]*' | cut -d: -f2)
ppl_bf=$(grep '"stage":"ebf"' "$T/out" | grep -o '"ppl":[0-9.e+-]*' | cut -d: -f2)
echo "ppl: GPTQ artifact $ppl_q, safetensors f32 $ppl_32, bf16 $ppl_bf" >&2
[ "$ppl_32" = "$ppl_q" ] || fail "f32 package ppl $ppl_32 != artifact ppl $ppl_q"; ok
awk -v a="$ppl_bf" -v b="$ppl_q" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d < 0.002 * b) }' \
  || fail "bf16 package ppl $ppl_bf far from $ppl_q"; ok

# the Hub card: front matter first, every value a double-quoted scalar;
# base_model (and, for a quantized format, its relation), the source's
# license, tags; how to load it; the source by its directory name only
fm() {  # the front matter of card $1 as JSON, parsed line by line
  python3 - "$1" <<'PY'
import json, sys
lines = open(sys.argv[1], encoding='utf-8').read().split('\n')
assert lines[0] == '---', 'no front matter'
end = lines.index('---', 1)
out, key = {}, None
for l in lines[1:end]:
    if l.startswith('- '):
        out[key].append(json.loads(l[2:]))
    elif l.endswith(':'):
        key = l[:-1]; out[key] = []
    else:
        k, v = l.split(': ', 1)
        assert v.startswith('"') and v.endswith('"'), l
        out[k] = json.loads(v)
print(json.dumps(out, sort_keys=True))
PY
}
fm dist/bf16/README.md > fm.json || fail "bf16 card front matter"
python3 - <<'PY' || fail "bf16 card: $(cat fm.json)"
import json
m = json.load(open('fm.json'))
assert m == {'base_model': 'house/llama', 'library_name': 'transformers', 'license': 'apache-2.0',
             'pipeline_tag': 'text-generation', 'tags': ['qpipe', 'safetensors', 'dequantized', 'gptq']}, m
PY
ok
fm dist/gptq/README.md > fm.json || fail "gptq card front matter"
python3 - <<'PY' || fail "gptq card: $(cat fm.json)"
import json
m = json.load(open('fm.json'))
assert m['base_model'] == 'house/llama' and m['base_model_relation'] == 'quantized', m
assert m['tags'] == ['qpipe', 'gptq', 'quantized', '4-bit'], m
PY
ok
fm dist/f32/README.md | grep -q '"base_model"' && fail "base_model without a Hub source"; ok
grep -q 'from_pretrained(".", torch_dtype="auto", device_map="auto")' dist/bf16/README.md || fail "card: transformers"; ok
grep -q 'vllm serve' dist/bf16/README.md || fail "card: vLLM"; ok
grep -q 'convert_hf_to_gguf.py . --outtype bf16' dist/bf16/README.md || fail "card: llama.cpp"; ok
grep -q '| dtype | BF16 (the quantized weights, dequantized)' dist/bf16/README.md || fail "card: dtype"; ok
grep -q '^| source model | src |$' dist/bf16/README.md || fail "card: the source by its name only"; ok
! grep -q "$T" dist/*/README.md || fail "a card names the build directory"; ok
grep -q '^# src-BF16$' dist/plain/README.md || fail "plain package title: $(grep '^# ' dist/plain/README.md)"; ok
grep -q '| dtype | BF16 |' dist/plain/README.md || fail "plain package dtype row"; ok

# licenses: "other" carries license_name and license_link; values YAML
# would read as another type stay strings
cp src/README.md readme.orig
printf -- '---\nlicense: other\nlicense_name: house-research\nlicense_link: https://example.org/LICENSE\n---\n' > src/README.md
sed 's|dist/|dist2/|g' r.yaml > r2.yaml
expect_exit 0 "$QPIPE" run r2.yaml --no-provenance --stage pbf
fm dist2/bf16/README.md > fm.json || fail "other card"
grep -q '"license": "other", "license_link": "https://example.org/LICENSE", "license_name": "house-research"' fm.json \
  || fail "license other: $(cat fm.json)"; ok
for lic in yes null 1.0; do
  sed "s|base_model: house/llama|license: \"$lic\"|" r2.yaml > r3.yaml
  expect_exit 0 "$QPIPE" run r3.yaml --no-provenance --stage pbf
  grep -qx "license: \"$lic\"" dist2/bf16/README.md || fail "license $lic not quoted"; ok
  ! grep -q '^license_name' dist2/bf16/README.md || fail "license_name kept for another license"; ok
done
cp readme.orig src/README.md
# a deleted shard is rebuilt from the cache on the next run
rm dist/bf16/model-00002-of-00003.safetensors
expect_exit 0 "$QPIPE" run r.yaml --no-provenance --json
[ "$(ran_stages)" = "pbf" ] || fail "restore ran: $(ran_stages)"; ok
[ -f dist/bf16/model-00002-of-00003.safetensors ] || fail "shard not restored"; ok

# errors, before anything runs
for bad in 'dtype: f16' 'max_shard_size: 5GB, dtype: bf16'; do
  sed "s|out: dist/plain}|out: dist/g, $bad}|; s|format: safetensors, out: dist/g|format: gguf, out: dist/g|" r.yaml > bad.yaml
  expect_exit 2 "$QPIPE" run bad.yaml --no-provenance
  expect_grep 'applies to format safetensors only'
done
sed 's|max_shard_size: 4MB|max_shard_size: lots|' r.yaml > bad.yaml
expect_exit 2 "$QPIPE" run bad.yaml --no-provenance
expect_grep "max_shard_size 'lots': give a positive size"
for bad in ../etc a--b/c org/name- x/y.git /x org/ a/b/c; do
  sed "s|base_model: house/llama|base_model: \"$bad\"|" r.yaml > bad.yaml
  expect_exit 2 "$QPIPE" run bad.yaml --no-provenance
  expect_grep "base_model: '$bad' is not a Hub model id"
done
sed 's|base_model: house/llama|license: "MIT: yes"|' r.yaml > bad.yaml
expect_exit 2 "$QPIPE" run bad.yaml --no-provenance
expect_grep "license: 'MIT: yes' is not a Hub license id"
done_ok
