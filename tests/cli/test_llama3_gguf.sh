# A Llama 3.1-style checkpoint (rope_scaling rope_type llama3) evaluates with
# the scaled frequencies, but llama.cpp reads that scaling from a
# rope_freqs.weight tensor qpipe's GGUF export does not write: the package
# used to be a GGUF that llama.cpp runs with plain RoPE — not the model that
# was evaluated and gated.  It is refused with one line (exit 2), nothing is
# left in or beside out:, and the same recipe without rope_scaling packages.
source "$(dirname "$0")/lib.sh"

cp -r "$SHARED/models/house-llama" l3
rm -rf l3/reference
python3 - l3/config.json <<'P'
import json, sys
c = json.load(open(sys.argv[1]))
c["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192}
json.dump(c, open(sys.argv[1], "w"))
P
cat > r.yaml <<Y
qpipe: 1
name: l3
vars:
  m: "\${env.M}"
stages:
  model: {uses: fetch, with: {source: "\${vars.m}"}}
  q: {uses: quantize, needs: [model], with: {method: gguf, type: Q8_0}}
  pkg: {uses: package, needs: [q], with: {format: gguf, out: dist/m, name: m}}
Y
M="$T/l3" expect_exit 2 "$QPIPE" run r.yaml --no-provenance
expect_grep "^qpipe: stage 'pkg': input 'q': config.json: rope_scaling llama3 cannot be exported to GGUF yet \(llama.cpp needs a rope_freqs.weight tensor qpipe does not write\); package it as gptq or awq$"
[ "$(grep -c '^qpipe:' "$T/out")" -eq 1 ] || fail "more than one error line"; ok
[ -z "$(ls -A dist 2>/dev/null)" ] || fail "left in dist/: $(ls -A dist)"; ok
M="$SHARED/models/house-llama" expect_exit 0 "$QPIPE" run r.yaml --no-provenance
[ -f dist/m/m.gguf ] || fail "no GGUF for the plain model"; ok
expect_exit 0 "$QPIPE" cache verify
done_ok
