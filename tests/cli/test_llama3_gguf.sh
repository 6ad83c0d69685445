# A Llama 3.2-style model (LlamaForCausalLM, rope_scaling llama3 factor 32 /
# low 1 / high 4 / original 8192, θ 500000, head_dim 64, tied embeddings,
# byte-level BPE tokenizer.json with Llama 3's pre-tokenizer regex and
# <|begin_of_text|> as BOS), written here from house-qwen's tokenizer and
# random weights, through the pipeline: fetch, evaluate, quantize with
# method gguf (Q8_0, Q4_K_M), package format gguf.  The packages carry
# convert_hf_to_gguf.py's rope_freqs.weight (first in the F32 file, F32 and
# sorted among the non-layer tensors in llama-quantize's layout) with the
# values convert's script gives, re-derived here in Python with float32
# rounding step by step; no output.weight; token_embd takes the output
# tensor's type rule (tied).
source "$(dirname "$0")/lib.sh"

command -v python3 >/dev/null || fail "python3 is needed to write the model and read the GGUFs"; ok
export QPIPE_SHARED="$SHARED"

python3 - "$T/tiny-llama3" "$SHARED" <<'P' || fail "cannot write the synthetic model"
import json, os, random, struct, sys
out, shared = sys.argv[1], sys.argv[2]
os.makedirs(out)
D, L, H, KV, HD, F, V = 256, 2, 4, 2, 64, 512, 2049
tok = json.load(open(f'{shared}/models/house-qwen/tokenizer.json', encoding='utf-8'))
tok['normalizer'] = None
tok['pre_tokenizer']['pretokenizers'][0]['pattern']['Regex'] = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
tok['model']['ignore_merges'] = True
bot = {'content': '<|begin_of_text|>', 'lstrip': False, 'normalized': False, 'rstrip': False, 'single_word': False,
       'special': True}
tok['added_tokens'].append(dict(id=2048, **bot))
json.dump(tok, open(f'{out}/tokenizer.json', 'w', encoding='utf-8'), ensure_ascii=False)
tc = json.load(open(f'{shared}/models/house-qwen/tokenizer_config.json', encoding='utf-8'))
tc.update(bos_token='<|begin_of_text|>', add_bos_token=True)
tc['added_tokens_decoder']['2048'] = bot
json.dump(tc, open(f'{out}/tokenizer_config.json', 'w', encoding='utf-8'), ensure_ascii=False)
json.dump({'architectures': ['LlamaForCausalLM'], 'model_type': 'llama', 'hidden_size': D, 'intermediate_size': F,
           'num_attention_heads': H, 'num_key_value_heads': KV, 'head_dim': HD, 'num_hidden_layers': L,
           'vocab_size': V, 'rms_norm_eps': 1e-5, 'rope_theta': 500000.0, 'max_position_embeddings': 131072,
           'tie_word_embeddings': True, 'bos_token_id': 2048, 'eos_token_id': 2045, 'hidden_act': 'silu',
           'attention_bias': False, 'mlp_bias': False, 'torch_dtype': 'float32',
           'rope_scaling': {'factor': 32.0, 'low_freq_factor': 1.0, 'high_freq_factor': 4.0,
                            'original_max_position_embeddings': 8192, 'rope_type': 'llama3'}},
          open(f'{out}/config.json', 'w'), indent=1)
rng = random.Random(1234)
tensors = [('model.embed_tokens.weight', [V, D], 0), ('model.norm.weight', [D], 1)]
for l in range(L):
    p = f'model.layers.{l}.'
    tensors += [(p + 'input_layernorm.weight', [D], 1), (p + 'self_attn.q_proj.weight', [H * HD, D], 0),
                (p + 'self_attn.k_proj.weight', [KV * HD, D], 0), (p + 'self_attn.v_proj.weight', [KV * HD, D], 0),
                (p + 'self_attn.o_proj.weight', [D, H * HD], 0), (p + 'post_attention_layernorm.weight', [D], 1),
                (p + 'mlp.gate_proj.weight', [F, D], 0), (p + 'mlp.up_proj.weight', [F, D], 0),
                (p + 'mlp.down_proj.weight', [D, F], 0)]
hdr, blobs, off = {}, [], 0
for name, shape, norm in tensors:
    n = 1
    for s in shape:
        n *= s
    b = struct.pack(f'<{n}f', *[(1.0 if norm else 0.0) + (rng.random() - 0.5) * (0.2 if norm else 0.1)
                               for _ in range(n)])
    hdr[name] = {'dtype': 'F32', 'shape': shape, 'data_offsets': [off, off + len(b)]}
    blobs.append(b)
    off += len(b)
h = json.dumps(hdr).encode()
h += b' ' * (-len(h) % 8)
with open(f'{out}/model.safetensors', 'wb') as f:
    f.write(struct.pack('<Q', len(h)) + h + b''.join(blobs))
P
ok

mkdir -p repo/recipes && cd repo
cat > recipes/l3.yaml <<Y
qpipe: 1
name: tiny-llama3-gguf
stages:
  model: {uses: fetch, with: {source: "$T/tiny-llama3"}}
  base: {uses: evaluate, needs: [model], with: {dataset: "$SHARED/data/shakespeare/valid.txt", ctx: 64, max_chunks: 4}}
  p_F32: {uses: package, needs: [model], with: {format: gguf, out: ../dist/F32, name: F32}}
  q_Q8_0: {uses: quantize, needs: [model], with: {method: gguf, type: Q8_0}}
  e_Q8_0: {uses: evaluate, needs: [q_Q8_0], with: {dataset: "$SHARED/data/shakespeare/valid.txt", ctx: 64, max_chunks: 4, reference: base}}
  p_Q8_0: {uses: package, needs: [q_Q8_0], with: {format: gguf, out: ../dist/Q8_0, name: Q8_0}}
  q_mix: {uses: quantize, needs: [model], with: {method: gguf, type: Q4_K_M}}
  p_mix: {uses: package, needs: [q_mix], with: {format: gguf, out: ../dist/mix, name: mix}}
Y
expect_exit 0 "$QPIPE" run recipes/l3.yaml --no-provenance -j 2
expect_grep '8 stages: 8 ran'
expect_grep 'e_Q8_0 .* top1='

python3 - "$T/repo/dist" <<'P' || fail "the Llama 3 packages are not what convert_hf_to_gguf / llama-quantize write"
import math, struct, sys
dist = sys.argv[1]

def read(path):
    b = open(path, 'rb').read()
    pos = 0
    def take(n):
        nonlocal pos
        pos += n
        return b[pos - n:pos]
    def u32(): return struct.unpack('<I', take(4))[0]
    def u64(): return struct.unpack('<Q', take(8))[0]
    def string(): return take(u64()).decode('utf-8')
    fmt = {0: '<B', 1: '<b', 2: '<H', 3: '<h', 4: '<I', 5: '<i', 6: '<f', 7: '<?', 10: '<Q', 11: '<q', 12: '<d'}
    def value(t):
        if t in fmt:
            return struct.unpack(fmt[t], take(struct.calcsize(fmt[t])))[0]
        if t == 8:
            return string()
        if t == 9:
            et, n = u32(), u64()
            return [value(et) for _ in range(n)]
        raise SystemExit(f'{path}: value type {t}')
    assert take(4) == b'GGUF' and u32() == 3
    nt, nkv = u64(), u64()
    kv = {}
    for _ in range(nkv):
        k = string()
        kv[k] = value(u32())
    tensors = []
    for _ in range(nt):
        name = string()
        nd = u32()
        ne = [u64() for _ in range(nd)]
        tensors.append((name, ne, u32(), u64()))
    data = (pos + 31) // 32 * 32
    return kv, tensors, b, data

def check(cond, what):
    if not cond:
        raise SystemExit(what)

# convert's LlamaModel.generate_extra_tensors with PyTorch's float32 rounding
f32 = lambda x: struct.unpack('<f', struct.pack('<f', x))[0]
def rope_freqs(base, dim, factor, low, high, old):
    out = []
    for i in range(0, dim, 2):
        e = f32(f32(i) / f32(dim))                        # arange(float32) / dim
        freq = f32(1.0 / f32(math.pow(f32(base), e)))     # 1.0 / (base ** t): reciprocal * 1
        wavelen = f32(f32(1.0 / freq) * f32(2 * math.pi))  # 2 * math.pi / freq: reciprocal * number
        if wavelen < f32(old / high):
            out.append(1.0)
        elif wavelen > f32(old / low):
            out.append(f32(factor))
        else:
            smooth = f32(f32(f32(f32(1.0 / wavelen) * f32(old)) - f32(low)) / f32(high - low))
            out.append(f32(1.0 / f32(f32(f32(1.0 - smooth) / f32(factor)) + smooth)))
    return out
want = rope_freqs(500000.0, 64, 32.0, 1.0, 4.0, 8192)
check(1.0 < min(x for x in want if x != 1.0) and sorted(want) == want and want[-1] == 32.0, 'factors shape')

F32, Q8_0, Q6_K, Q4_K = 0, 8, 14, 12
for name, ftype in (('F32', None), ('Q8_0', 7), ('mix', 15)):
    kv, tensors, b, data = read(f'{dist}/{name}/{name}.gguf')
    names = [t[0] for t in tensors]
    types = {t[0]: t[2] for t in tensors}
    check(kv['general.architecture'] == 'llama', f'{name}: architecture')
    check(kv['tokenizer.ggml.model'] == 'gpt2' and kv['tokenizer.ggml.pre'] == 'llama-bpe', f'{name}: vocabulary')
    check(kv['tokenizer.ggml.bos_token_id'] == 2048 and kv['tokenizer.ggml.add_bos_token'] is True, f'{name}: bos')
    check(kv['tokenizer.ggml.add_space_prefix'] is False, f'{name}: add_space_prefix')
    check(kv['llama.rope.dimension_count'] == 64 and kv['llama.attention.key_length'] == 64, f'{name}: head dims')
    check(not any(k.startswith('llama.rope.scaling') for k in kv), f'{name}: convert writes no rope.scaling keys')
    check('output.weight' not in names and len(names) == 1 + 2 + 9 * 2, f'{name}: tensor list {names}')
    check(types['rope_freqs.weight'] == F32, f'{name}: rope_freqs type')
    if ftype is None:
        check(names[0] == 'rope_freqs.weight' and names[1] == 'token_embd.weight', f'{name}: convert order {names[:3]}')
        check(kv['general.file_type'] == 0 and types['token_embd.weight'] == F32, f'{name}: F32')
    else:
        check(names[:4] == ['output_norm.weight', 'rope_freqs.weight', 'token_embd.weight', 'blk.0.attn_k.weight'],
              f'{name}: llama-quantize order {names[:4]}')
        check(kv['general.file_type'] == ftype, f'{name}: file_type')
        keys = [k for k in kv if not k.startswith('qpipe.')]
        check(keys[-2:] == ['general.quantization_version', 'general.file_type'], f'{name}: key order {keys[-3:]}')
    if name == 'Q8_0':
        check(types['token_embd.weight'] == Q8_0 and types['blk.1.attn_q.weight'] == Q8_0, f'{name}: types')
    if name == 'mix':
        check(types['token_embd.weight'] == Q6_K, f'{name}: tied token_embd takes the output rule (Q6_K)')
        check(types['blk.0.attn_q.weight'] == Q4_K, f'{name}: attn_q')
    _, ne, _, off = tensors[names.index('rope_freqs.weight')]
    check(ne == [32], f'{name}: rope_freqs shape {ne}')
    got = list(struct.unpack('<32f', b[data + off:data + off + 128]))
    check(got == want, f'{name}: rope_freqs {got} != convert {want}')
    print(f'{name}.gguf: rope_freqs.weight F32 [32] as convert computes it ({sum(1 < x < 32 for x in got)} in the band)')
P
ok

# a second run is fully cached
expect_exit 0 "$QPIPE" run recipes/l3.yaml --no-provenance --json
expect_grep '"ran":0,"cached":8'
done_ok
