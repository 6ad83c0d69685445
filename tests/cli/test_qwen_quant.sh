# recipes/house-qwen-gptq-w4g128.yaml and house-qwen-awq-w4g128.yaml end to
# end on house-qwen (Qwen2: q/k/v biases, tied embeddings, no BOS):
#   - quality: on the same valid.txt windows, GPTQ 4-bit g128's perplexity
#     delta is at most 0.9x plain RTN's (same bits and group size), AWQ's at
#     most 0.95x;
#   - the exports: GPTQ v1 / AutoAWQ GEMM tensors for every linear layer, the
#     q/k/v biases in F16 beside them, the tied embedding in F16 and no
#     lm_head, config.json still tied, and the tokenizer files of the model
#     copied byte for byte.  (That the exported tensors decode to exactly
#     the weights evaluated is tests/stages/test_quant_qwen.c.)
source "$(dirname "$0")/lib.sh"

mkdir -p repo/recipes && cd repo
cp "$REPO/recipes/house-qwen-gptq-w4g128.yaml" "$REPO/recipes/house-qwen-awq-w4g128.yaml" recipes/
asan=0
if [ "${BUILD:-build}" = build-asan ]; then
  # Under ASan+UBSan these two recipes take ~25 minutes: the sanitizers need
  # every code path once, not the full data, so calibration and evaluation
  # shrink and the gates open; the quality bounds below are asserted on the
  # recipes as committed in `make test`.
  asan=1
  sed -i -e 's/samples: 128, seq_len: 256/samples: 8, seq_len: 128/' -e 's/ctx: 256/ctx: 256, max_tokens: 2048/' \
      -e 's/max_ppl_delta: 1.0, max_kld_mean: 0.02/max_ppl_delta: 100, max_kld_mean: 10/' recipes/*.yaml
fi
export QPIPE_SHARED="$SHARED"
expect_exit 0 "$QPIPE" run recipes/house-qwen-gptq-w4g128.yaml --no-provenance --json -j 2
cp "$T/out" "$T/gptq.json"
expect_exit 0 "$QPIPE" run recipes/house-qwen-awq-w4g128.yaml --no-provenance --json -j 2
cp "$T/out" "$T/awq.json"
# the second recipe reuses the first one's model, calibration, base and RTN
for s in model calib base rtn rtn_eval; do
  [ "$(stage_output $s "$T/gptq.json")" = "$(stage_output $s "$T/awq.json")" ] || fail "stage $s differs"; ok
done

if [ $asan = 1 ]; then
  echo "SKIP under ASan: the quality bounds (reduced calibration and evaluation; make test asserts them)"
else
python3 - "$T/gptq.json" "$T/awq.json" <<'P' || fail "quality bounds"
import json, sys
def stages(path):
    return {e["stage"]: e for e in map(json.loads, open(path)) if e.get("event") == "stage"}
g, a = stages(sys.argv[1]), stages(sys.argv[2])
m = lambda run, s: run[s]["metrics"]
base, rtn = m(g, "base"), m(g, "rtn_eval")
ge, ae = m(g, "gptq_eval"), m(a, "awq_eval")
# the same windows and tokens for all four
for e in (rtn, ge, ae):
    assert e["tokens_scored"] == base["tokens_scored"] and e["windows"] == base["windows"], e
    assert e["ppl_ref"] == base["ppl"], e
r, gd, ad = rtn["ppl_delta"], ge["ppl_delta"], ae["ppl_delta"]
print("house-qwen valid.txt ppl %.4f (%d windows, %d tokens scored); 4-bit g128 ppl delta: rtn %.4f, "
      "gptq %.4f (%.3fx rtn), awq %.4f (%.3fx rtn); kld_mean rtn %.5f gptq %.5f awq %.5f"
      % (base["ppl"], base["windows"], base["tokens_scored"], r, gd, gd / r, ad, ad / r,
         rtn["kld_mean"], ge["kld_mean"], ae["kld_mean"]))
assert r > 0, r
assert gd <= 0.9 * r, (gd, r)
assert ad <= 0.95 * r, (ad, r)
P
ok
fi

# the exports
python3 - "$SHARED/models/house-qwen" dist/house-qwen-gptq-w4g128 dist/house-qwen-awq-w4g128 <<'P' || fail "exports"
import json, os, struct, sys
src = sys.argv[1]
def header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))
for pkg, awq in ((sys.argv[2], False), (sys.argv[3], True)):
    h = header(os.path.join(pkg, "model.safetensors"))
    h.pop("__metadata__", None)
    assert "lm_head.weight" not in h and "lm_head.qweight" not in h, pkg
    e = h["model.embed_tokens.weight"]
    assert e["dtype"] == "F16" and e["shape"] == [2048, 256], e
    for l in range(6):
        p = "model.layers.%d." % l
        for proj, out in (("q_proj", 256), ("k_proj", 64), ("v_proj", 64)):
            b = h[p + "self_attn.%s.bias" % proj]
            assert b["dtype"] == "F16" and b["shape"] == [out], (proj, b)
        for mod, (out, inp) in (("self_attn.q_proj", (256, 256)), ("self_attn.k_proj", (64, 256)),
                                ("self_attn.v_proj", (64, 256)), ("self_attn.o_proj", (256, 256)),
                                ("mlp.gate_proj", (768, 256)), ("mlp.up_proj", (768, 256)),
                                ("mlp.down_proj", (256, 768))):
            qw, sc = h[p + mod + ".qweight"], h[p + mod + ".scales"]
            assert qw["dtype"] == "I32" and sc["dtype"] == "F16", mod
            assert qw["shape"] == ([inp, out // 8] if awq else [inp // 8, out]), (mod, qw)
            assert sc["shape"] == [inp // 128, out], (mod, sc)
            assert (p + mod + ".g_idx" in h) != awq, mod
            assert p + mod + ".weight" not in h, mod
        assert p + "self_attn.o_proj.bias" not in h
    # 7 linears x (3 or 4) + 3 biases + 2 norms per layer; embedding and final norm
    assert len(h) == 6 * (7 * (3 if awq else 4) + 3 + 2) + 2, len(h)
    cfg = json.load(open(os.path.join(pkg, "config.json")))
    assert cfg["tie_word_embeddings"] is True and cfg["model_type"] == "qwen2", cfg
    qc = cfg["quantization_config"]
    assert qc["quant_method"] == ("awq" if awq else "gptq") and qc["bits"] == 4 and qc["group_size"] == 128, qc
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert open(os.path.join(pkg, name), "rb").read() == open(os.path.join(src, name), "rb").read(), name
    print("%s: %d tensors, biases F16, no lm_head, tokenizer files copied" % (os.path.basename(pkg), len(h)))
P
ok
done_ok
