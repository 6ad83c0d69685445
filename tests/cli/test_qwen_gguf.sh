# house-qwen (Qwen2, byte-level BPE tokenizer.json, q/k/v biases, tied
# embeddings) through the pipeline: fetch, quantize with method gguf (--pure
# Q8_0 / Q4_0 / Q4_K / Q6_K and the Q4_K_M mix), package format gguf.  With
# qpipe's own qpipe.* keys dropped, every package is byte-identical to the
# file llama.cpp wrote (vectors/house-qwen/, see its MANIFEST.txt).
source "$(dirname "$0")/lib.sh"

command -v python3 >/dev/null || fail "python3 is needed to drop the qpipe.* keys"; ok
export QPIPE_SHARED="$SHARED"
V="$SHARED/vectors/house-qwen"
mkdir -p repo/recipes && cd repo
cat > recipes/qwen.yaml <<Y
qpipe: 1
name: house-qwen-gguf
stages:
  model: {uses: fetch, with: {source: "$SHARED/models/house-qwen"}}
  p_F32: {uses: package, needs: [model], with: {format: gguf, out: ../dist/F32, name: F32}}
  q_Q8_0: {uses: quantize, needs: [model], with: {method: gguf, type: Q8_0, pure: true}}
  p_Q8_0: {uses: package, needs: [q_Q8_0], with: {format: gguf, out: ../dist/Q8_0, name: Q8_0}}
  q_Q4_0: {uses: quantize, needs: [model], with: {method: gguf, type: Q4_0, pure: true}}
  p_Q4_0: {uses: package, needs: [q_Q4_0], with: {format: gguf, out: ../dist/Q4_0, name: Q4_0}}
  q_Q4_K: {uses: quantize, needs: [model], with: {method: gguf, type: Q4_K, pure: true}}
  p_Q4_K: {uses: package, needs: [q_Q4_K], with: {format: gguf, out: ../dist/Q4_K, name: Q4_K}}
  q_Q6_K: {uses: quantize, needs: [model], with: {method: gguf, type: Q6_K, pure: true}}
  p_Q6_K: {uses: package, needs: [q_Q6_K], with: {format: gguf, out: ../dist/Q6_K, name: Q6_K}}
  q_mix: {uses: quantize, needs: [model], with: {method: gguf, type: Q4_K_M}}
  p_mix: {uses: package, needs: [q_mix], with: {format: gguf, out: ../dist/mix-Q4_K_M, name: mix-Q4_K_M}}
Y
expect_exit 0 "$QPIPE" run recipes/qwen.yaml --no-provenance -j 2
expect_grep '12 stages: 12 ran'

# Rewrites a GGUF without its qpipe.* keys: the kv section is re-encoded
# as read, the tensor infos kept, the data section realigned (tensor offsets
# are relative to it, so they do not change).
strip() {
  python3 - "$1" "$2" <<'P'
import struct, sys
src, dst = sys.argv[1], sys.argv[2]
b = open(src, 'rb').read()
pos = 0
def take(n):
    global pos
    pos += n
    return b[pos - n:pos]
def u32(): return struct.unpack('<I', take(4))[0]
def u64(): return struct.unpack('<Q', take(8))[0]
def string(): return take(u64())
SIZE = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
def value(t):
    if t in SIZE: take(SIZE[t])
    elif t == 8: string()
    elif t == 9:
        et, n = u32(), u64()
        for _ in range(n): value(et)
    else: raise SystemExit('%s: value type %d' % (src, t))
assert take(4) == b'GGUF' and u32() == 3
n_tensors, n_kv = u64(), u64()
kept, dropped, align = [], 0, 32
for _ in range(n_kv):
    start = pos
    key = string()
    t = u32()
    vstart = pos
    value(t)
    if key == b'general.alignment': align = struct.unpack('<I', b[vstart:vstart + 4])[0]
    if key.startswith(b'qpipe.'): dropped += 1
    else: kept.append(b[start:pos])
infos_start = pos
for _ in range(n_tensors):
    string(); nd = u32(); take(8 * nd); u32(); u64()
infos = b[infos_start:pos]
data = b[(pos + align - 1) // align * align:]
if dropped < 3: raise SystemExit('%s: only %d qpipe.* keys' % (src, dropped))
head = b'GGUF' + struct.pack('<IQQ', 3, n_tensors, len(kept)) + b''.join(kept) + infos
open(dst, 'wb').write(head + b'\0' * (-len(head) % align) + data)
P
}

for name in F32 Q8_0 Q4_0 Q4_K Q6_K mix-Q4_K_M; do
  f="$T/repo/dist/$name/$name.gguf"
  [ -f "$f" ] || fail "no $name.gguf"; ok
  strip "$f" "$T/$name.stripped" || fail "cannot read $f"; ok
  cmp "$T/$name.stripped" "$V/$name.gguf" || fail "$name.gguf differs from llama.cpp's (qpipe.* keys aside)"; ok
  echo "$name.gguf: $(stat -c %s "$f") bytes, llama.cpp's $(stat -c %s "$V/$name.gguf") (identical without qpipe.*)"
done

# the stripping itself: a file that is not llama.cpp's does not compare equal
cp "$T/repo/dist/F32/F32.gguf" "$T/tampered.gguf"
printf 'X' | dd of="$T/tampered.gguf" bs=1 seek=$(( $(stat -c %s "$T/tampered.gguf") - 1 )) conv=notrunc 2>/dev/null
strip "$T/tampered.gguf" "$T/tampered.stripped"
! cmp -s "$T/tampered.stripped" "$V/F32.gguf" || fail "a changed tensor byte went unnoticed"; ok

# a second run is fully cached
expect_exit 0 "$QPIPE" run recipes/qwen.yaml --no-provenance --json
expect_grep '"ran":0,"cached":12'
done_ok
