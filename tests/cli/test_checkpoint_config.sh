# #14 item 12: a checkpoint that does not match its config, or whose logits
# are not finite, is refused with one line (exit 1) instead of evaluating
# something else or succeeding without a perplexity.
source "$(dirname "$0")/lib.sh"

cp -r "$SHARED/models/house-llama" fewer && rm -rf fewer/reference
python3 - fewer/config.json <<'P'
import json, sys
c = json.load(open(sys.argv[1])); c['num_hidden_layers'] -= 1; json.dump(c, open(sys.argv[1], 'w'))
P
cp -r "$SHARED/models/house-llama" hot && rm -rf hot/reference
python3 - hot/model.safetensors <<'P'
import json, struct, sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
n = struct.unpack('<Q', b[:8])[0]
a, e = json.loads(b[8:8 + n])['model.norm.weight']['data_offsets']
b[8 + n + a:8 + n + e] = b'\x7f\x7f' * ((e - a) // 2)   # the bf16 maximum everywhere
open(p, 'wb').write(b)
P
head -c 20000 "$SHARED/data/shakespeare/valid.txt" > small.txt
cat > r.yaml <<'Y'
qpipe: 1
name: cfg
stages:
  model: {uses: fetch, with: {source: "${env.M}"}}
  e: {uses: evaluate, needs: [model], with: {dataset: small.txt, ctx: 64, max_chunks: 2}}
  g: {uses: gate, needs: [e], with: {max_ppl: 1000}}
Y
M=fewer expect_exit 1 "$QPIPE" run r.yaml --no-provenance
expect_grep "^qpipe: stage 'e': input 'model': tensor 'model.layers.5.[a-z_.]+' is in layer 5, but config.json's num_hidden_layers is 5; the checkpoint and its config do not match"
expect_grep "blocked +g"
M=hot expect_exit 1 "$QPIPE" run r.yaml --no-provenance
expect_grep "^qpipe: stage 'e': input 'model': the mean NLL is (nan|inf): the model's logits are not finite"
expect_no_grep "no input reports metric"
# the unchanged checkpoint still evaluates and passes
M=$SHARED/models/house-llama expect_exit 0 "$QPIPE" run r.yaml --no-provenance
done_ok
