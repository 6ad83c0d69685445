#!/usr/bin/env python3
"""An independent reader of bitsandbytes checkpoints (python3 stdlib only).

Written from bitsandbytes' and transformers' public source (docs/bitsandbytes.md),
not from qpipe's writer: it parses model.safetensors, reads every quantized
Linear the way bnb's loader would (QuantState.from_dict for NF4, Int8Params +
SCB for LLM.int8), dequantizes it with bnb's f32 arithmetic, and prints
"NAME SHA256" of each dequantized weight's little-endian f32 bytes, sorted by
name.  Every f32 operation is rounded on its own: a product of two f32 (or of
an int8 and an f32) is exact in a Python float and array('f') rounds it to f32
(nearest even); the one sum (absmax + offset) is checked to be exact in double
before it is rounded, so no double rounding can hide.

  bnb_reader.py DIR [--source SRC] [--expect nf4|nf4-dq|int8] [--dump NAME OUT]

--source SRC   every dense tensor must equal SRC/model.safetensors' tensor of
               the same name: the same bytes when the dtypes agree, else equal
               as f32 (a wider dtype holds the value exactly).
--expect KIND  config.json's quantization_config must be BitsAndBytesConfig's
               to_dict for that kind, torch_dtype consistent with the tensors.
--dump N OUT   also write weight N's dequantized f32 bytes to OUT.
Exit 1 with "bnb_reader: WHAT" on the first problem.
"""
import array
import hashlib
import json
import struct
import sys

DTYPES = {"F32": ("f", 4), "F16": ("e", 2), "BF16": (None, 2), "U8": ("B", 1), "I8": ("b", 1)}
TORCH = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}
# bitsandbytes get_4bit_type("nf4"), as f32
NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
       -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
       0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
       0.7229568362236023, 1.0]
INV127 = array.array("f", [1.0 / 127.0])[0]   # bnb's 7.874015718698502e-3 as f32


def die(msg):
    print("bnb_reader: " + msg, file=sys.stderr)
    sys.exit(1)


class SafeTensors:
    """model.safetensors: u64 header length, JSON header, data; fully validated."""

    def __init__(self, path):
        with open(path, "rb") as f:
            self.raw = f.read()
        if len(self.raw) < 8:
            die(f"{path}: shorter than the 8-byte header length")
        (hlen,) = struct.unpack_from("<Q", self.raw, 0)
        if hlen > len(self.raw) - 8:
            die(f"{path}: header length {hlen} beyond the file")
        try:
            hdr = json.loads(self.raw[8:8 + hlen].decode("utf-8"))
        except ValueError as e:
            die(f"{path}: header is not JSON: {e}")
        self.meta = hdr.pop("__metadata__", None)
        self.base = 8 + hlen
        self.t = hdr
        spans = []
        for name, e in hdr.items():
            if set(e) != {"dtype", "shape", "data_offsets"}:
                die(f"{path}: {name}: header keys {sorted(e)}")
            if e["dtype"] not in DTYPES:
                die(f"{path}: {name}: dtype {e['dtype']} unexpected here")
            n = 1
            for d in e["shape"]:
                if not isinstance(d, int) or d < 0:
                    die(f"{path}: {name}: bad shape {e['shape']}")
                n *= d
            a, b = e["data_offsets"]
            size = DTYPES[e["dtype"]][1]
            if b - a != n * size or a < 0 or self.base + b > len(self.raw):
                die(f"{path}: {name}: offsets {a}..{b} do not hold {e['shape']} {e['dtype']}")
            if a % size:
                die(f"{path}: {name}: data offset {a} not aligned to {size} (torch cannot view it)")
            spans.append((a, b, name))
        spans.sort()
        end = 0
        for a, b, name in spans:
            if a != end:
                die(f"{path}: {name}: data starts at {a}, previous tensor ends at {end} (gap or overlap)")
            end = b
        if self.base + end != len(self.raw):
            die(f"{path}: {len(self.raw) - self.base - end} trailing bytes after the data")

    def has(self, name):
        return name in self.t

    def entry(self, name):
        if name not in self.t:
            die(f"tensor {name} missing")
        return self.t[name]

    def data(self, name):
        a, b = self.entry(name)["data_offsets"]
        return self.raw[self.base + a:self.base + b]

    def values(self, name, want_dtype=None):
        e = self.entry(name)
        if want_dtype and e["dtype"] != want_dtype:
            die(f"{name}: dtype {e['dtype']}, expected {want_dtype}")
        raw = self.data(name)
        if e["dtype"] == "BF16":   # the upper half of an f32
            hi = array.array("H", raw)
            out = array.array("I", [h << 16 for h in hi])
            return array.array("f", out.tobytes())
        arr = array.array(DTYPES[e["dtype"]][0])
        arr.frombytes(raw)
        return arr

    def shape(self, name):
        return self.entry(name)["shape"]


def f32(x):
    return array.array("f", [x])[0]


def exact_sum(a, b):
    """a + b of two f32 values as bnb's f32 add: exact in double, then rounded."""
    s = a + b
    if s - a != b or s - (s - a) != a:
        die(f"absmax + offset ({a!r} + {b!r}) is not exact in double; this reader would double-round")
    return f32(s)


def expected_state(qs, shape, dq, dtype):
    keys = ["quant_type", "blocksize", "dtype", "shape"]
    if dq:
        keys += ["nested_blocksize", "nested_dtype", "nested_offset"]
    if list(qs) != keys:
        die(f"quant_state keys {list(qs)}, bnb's as_dict order is {keys}")
    if qs["quant_type"] != "nf4" or qs["dtype"] != dtype or qs["shape"] != shape:
        die(f"quant_state {qs}: expected nf4, dtype {dtype}, shape {shape}")
    if dq and (qs["nested_blocksize"] != 256 or qs["nested_dtype"] != "float32"):
        die(f"quant_state {qs}: nested blocksize 256 / dtype float32 expected")


def dequant_nf4(st, base, dtype):
    """bnb dequantize_4bit: absmax (recovered under double quant), then
    quant_map[code] * absmax[i // blocksize], codes high nibble first."""
    wname = base + ".weight"
    raw_state = st.data(wname + ".quant_state.bitsandbytes__nf4")
    text = raw_state.decode("utf-8")
    qs = json.loads(text)
    dq = "nested_offset" in qs
    expected_state(qs, qs.get("shape"), dq, dtype)
    if json.dumps(qs) != text:   # pack_dict_to_tensor is json.dumps of that dict
        die(f"{wname}: quant_state text differs from json.dumps of its own dict")
    rows, cols = qs["shape"]
    n, bs = rows * cols, qs["blocksize"]
    nb = (n + bs - 1) // bs
    if st.shape(wname) != [(n + 1) // 2, 1] or st.entry(wname)["dtype"] != "U8":
        die(f"{wname}: {st.entry(wname)['dtype']} {st.shape(wname)}, expected U8 [{(n + 1) // 2}, 1]")
    qmap = st.values(wname + ".quant_map", "F32")
    if list(qmap) != [f32(v) for v in NF4]:
        die(f"{wname}.quant_map is not bnb's NF4 table")
    if dq:
        qabs = st.values(wname + ".absmax", "U8")
        nabs = st.values(wname + ".nested_absmax", "F32")
        nmap = st.values(wname + ".nested_quant_map", "F32")
        off = qs["nested_offset"]
        if f32(off) != off:
            die(f"{wname}: nested_offset {off!r} is not an f32 value")
        if len(qabs) != nb or len(nabs) != (nb + 255) // 256 or len(nmap) != 256:
            die(f"{wname}: absmax / nested sizes {len(qabs)}, {len(nabs)}, {len(nmap)} for {nb} blocks")
        prod = array.array("f", [nmap[q] * nabs[b // 256] for b, q in enumerate(qabs)])
        absmax = [exact_sum(p, off) for p in prod]
    else:
        absmax = st.values(wname + ".absmax", "F32")
        if len(absmax) != nb:
            die(f"{wname}.absmax has {len(absmax)} values for {nb} blocks")
    codes = st.data(wname)
    if n % 2 and codes[-1] & 0x0F != 7:
        die(f"{wname}: padding nibble is not NF4 0.0 (code 7)")
    out = array.array("f")
    half = bs // 2
    for b in range(nb):
        t = array.array("f", [q * absmax[b] for q in qmap])   # rounded to f32
        vals = []
        for byte in codes[b * half:(b + 1) * half]:
            vals.append(t[byte >> 4])
            vals.append(t[byte & 0x0F])
        out.extend(vals)
    del out[n:]
    return wname, (rows, cols), out


def dequant_int8(st, base):
    """bnb int8_vectorwise_dequant: (q * SCB[row]) * (1/127), each f32."""
    wname = base + ".weight"
    e = st.entry(wname)
    if e["dtype"] != "I8" or len(e["shape"]) != 2:
        die(f"{wname}: {e['dtype']} {e['shape']}, expected I8 [out, in]")
    rows, cols = e["shape"]
    scb = st.values(base + ".SCB", "F32")
    if len(scb) != rows:
        die(f"{base}.SCB has {len(scb)} values for {rows} rows")
    fmt = st.entry(base + ".weight_format")
    if fmt["dtype"] != "U8" or fmt["shape"] != [] or st.data(base + ".weight_format") != b"\x00":
        die(f"{base}.weight_format: {fmt}, expected U8 [] = 0 (row)")
    q = st.values(wname, "I8")
    if any(v == -128 for v in q):
        die(f"{wname}: code -128 (LLM.int8 codes are -127..127)")
    out = array.array("f")
    for r in range(rows):
        s = scb[r]
        t = array.array("f", [v * s for v in q[r * cols:(r + 1) * cols]])
        out.extend(array.array("f", [v * INV127 for v in t]))
    return wname, (rows, cols), out


def check_config(cfg, kind, dense_dtype, skipped):
    b4 = kind != "int8"
    want = {
        "_load_in_4bit": b4, "_load_in_8bit": not b4,
        "bnb_4bit_compute_dtype": dense_dtype if b4 else "float32",
        "bnb_4bit_quant_storage": "uint8",
        "bnb_4bit_quant_type": "nf4" if b4 else "fp4",
        "bnb_4bit_use_double_quant": kind == "nf4-dq",
        "llm_int8_enable_fp32_cpu_offload": False, "llm_int8_has_fp16_weight": False,
        "llm_int8_skip_modules": skipped, "llm_int8_threshold": 6.0,
        "load_in_4bit": b4, "load_in_8bit": not b4, "quant_method": "bitsandbytes",
    }
    qc = cfg.get("quantization_config")
    if qc != want or list(qc) != sorted(want):
        die(f"quantization_config {json.dumps(qc)} != {json.dumps(want, sort_keys=True)}")
    if cfg.get("torch_dtype") != dense_dtype:
        die(f"config.json torch_dtype {cfg.get('torch_dtype')}, the dense tensors are {dense_dtype}")


def main(argv):
    args = argv[1:]
    if not args:
        die("usage: bnb_reader.py DIR [--source SRC] [--expect nf4|nf4-dq|int8] [--dump NAME OUT]")
    d, source, expect, dump = args[0], None, None, None
    i = 1
    while i < len(args):
        if args[i] == "--source":
            source, i = args[i + 1], i + 2
        elif args[i] == "--expect":
            expect, i = args[i + 1], i + 2
        elif args[i] == "--dump":
            dump, i = (args[i + 1], args[i + 2]), i + 3
        else:
            die(f"unknown argument {args[i]}")
    st = SafeTensors(d + "/model.safetensors")
    if st.meta != {"format": "pt"}:
        die(f"__metadata__ {st.meta}, transformers wants {{'format': 'pt'}}")
    with open(d + "/config.json") as f:
        cfg = json.load(f)
    names = set(st.t)
    nf4 = sorted(k[:-len(".weight.quant_state.bitsandbytes__nf4")] for k in names
                 if k.endswith(".weight.quant_state.bitsandbytes__nf4"))
    int8 = sorted(k[:-len(".SCB")] for k in names if k.endswith(".SCB"))
    if nf4 and int8:
        die("both NF4 and int8 modules in one checkpoint")
    owned = set()
    for b in nf4:
        owned |= {b + ".weight" + s for s in ("", ".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map",
                                               ".quant_state.bitsandbytes__nf4")}
    for b in int8:
        owned |= {b + ".weight", b + ".SCB", b + ".weight_format"}
    dense = sorted(names - owned)
    dtypes = {st.entry(k)["dtype"] for k in dense}
    if len(dtypes) != 1 or next(iter(dtypes)) not in TORCH:
        die(f"dense tensors in dtypes {sorted(dtypes)}, expected one of BF16/F16/F32")
    dense_dtype = TORCH[next(iter(dtypes))]
    out = []
    for b in nf4:
        out.append(dequant_nf4(st, b, dense_dtype))
    for b in int8:
        out.append(dequant_int8(st, b))
    if not out:
        die("no quantized module found")
    if source:
        src = SafeTensors(source + "/model.safetensors")
        for k in dense:
            if not src.has(k):
                die(f"dense tensor {k} is not in the source")
            if src.shape(k) != st.shape(k):
                die(f"{k}: shape {st.shape(k)}, source {src.shape(k)}")
            same = src.entry(k)["dtype"] == st.entry(k)["dtype"]
            if (same and src.data(k) != st.data(k)) or (not same and src.values(k) != st.values(k)):
                die(f"{k}: values differ from the source")
        for name, shape, _ in out:
            if src.shape(name) != list(shape):
                die(f"{name}: shape {list(shape)}, source {src.shape(name)}")
    if expect:
        if (expect == "int8") != bool(int8) or (expect == "nf4-dq") != any(
                st.has(b + ".weight.nested_absmax") for b in nf4):
            die(f"checkpoint is not {expect}")
        skipped = sorted(k[:-len(".weight")] for k in dense
                         if k.endswith(".weight") and len(st.shape(k)) == 2 and "embed" not in k)
        # a tied lm_head is not in the checkpoint but stays dense all the same
        # (transformers' get_keys_to_not_convert names it)
        if cfg.get("tie_word_embeddings") and "lm_head" not in skipped:
            skipped = sorted(skipped + ["lm_head"])
        check_config(cfg, expect, dense_dtype, skipped)
    for name, shape, vals in sorted(out):
        data = vals.tobytes() if sys.byteorder == "little" else None
        if data is None:
            vals.byteswap()
            data = vals.tobytes()
        print(name, hashlib.sha256(data).hexdigest())
        if dump and dump[0] == name:
            with open(dump[1], "wb") as f:
                f.write(data)
    print(f"# {len(out)} quantized, {len(dense)} dense ({dense_dtype})", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv)
