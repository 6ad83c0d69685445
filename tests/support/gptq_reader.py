#!/usr/bin/env python3
"""Dequantizes linear weights of a GPTQ v1 safetensors checkpoint (python3
stdlib only), written from the format's public description (AutoGPTQ /
GPTQModel v1 packing), not from qpipe's writer, and compares them with a
dense f32 checkpoint's weights of the same names, bit for bit.

  gptq_reader.py GPTQ_DIR DENSE_DIR NAME_PREFIX...

For every `PREFIX.qweight` of GPTQ_DIR/model.safetensors whose name starts
with one of the prefixes:
  qweight i32 [in·bits/32, out]: column o is a little-endian bit stream,
          input i's code at bits [i·bits, (i+1)·bits)
  qzeros  i32 [G, out·bits/32]: row g the same stream over outputs, holding
          (z − 1) mod 2^bits
  scales  f16 [G, out], g_idx i32 [in]
  w[o][i] = f32(scales[g][o]) · (q − z), g = g_idx[i], one f32 rounding
(the product of an fp16 value and a small integer is exact in a double, so
array('f') rounds it once, as an f32 multiply does) must equal DENSE_DIR's
PREFIX.weight (F32, [out, in]) byte for byte.  Prints "checked N tensors";
exit 1 with "gptq_reader: WHAT" on the first difference.
"""
import array
import json
import struct
import sys


def die(msg):
    print("gptq_reader: " + msg, file=sys.stderr)
    sys.exit(1)


def load(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack_from("<Q", raw, 0)
    hdr = json.loads(raw[8:8 + n])
    hdr.pop("__metadata__", None)
    return raw, 8 + n, hdr


def tensor(st, name, dtype):
    raw, base, hdr = st
    if name not in hdr:
        die(f"{name} missing")
    e = hdr[name]
    if e["dtype"] != dtype:
        die(f"{name}: dtype {e['dtype']}, expected {dtype}")
    a, b = e["data_offsets"]
    data = raw[base + a:base + b]
    if dtype == "F16":   # array has no half type; struct does
        return struct.unpack(f"<{len(data) // 2}e", data), e["shape"]
    return array.array({"I32": "i", "F32": "f"}[dtype], data), e["shape"]


def field(words, base, stride, idx, bits):
    """field idx of the bit stream whose word w is words[base + w·stride]"""
    bit = idx * bits
    w, off = divmod(bit, 32)
    v = (words[base + w * stride] & 0xFFFFFFFF) >> off
    if off + bits > 32:
        v |= (words[base + (w + 1) * stride] & 0xFFFFFFFF) << (32 - off)
    return v & ((1 << bits) - 1)


def main():
    if len(sys.argv) < 4:
        die("usage: gptq_reader.py GPTQ_DIR DENSE_DIR NAME_PREFIX...")
    q = load(sys.argv[1] + "/model.safetensors")
    d = load(sys.argv[2] + "/model.safetensors")
    cfg = json.load(open(sys.argv[1] + "/config.json"))["quantization_config"]
    bits = cfg["bits"]
    maxq = (1 << bits) - 1
    names = sorted(k[:-len(".qweight")] for k in q[2] if k.endswith(".qweight")
                   and any(k.startswith(p) for p in sys.argv[3:]))
    if not names:
        die("no packed tensor matches " + " ".join(sys.argv[3:]))
    for name in names:
        qw, qshape = tensor(q, name + ".qweight", "I32")
        qz, _ = tensor(q, name + ".qzeros", "I32")
        sc, sshape = tensor(q, name + ".scales", "F16")
        gi, _ = tensor(q, name + ".g_idx", "I32")
        ref, rshape = tensor(d, name + ".weight", "F32")
        n_in, n_out = qshape[0] * 32 // bits, qshape[1]
        if rshape != [n_out, n_in]:
            die(f"{name}: dense shape {rshape}, packed [{n_out}, {n_in}]")
        G = sshape[0]
        zero = [[(field(qz, g * len(qz) // G, 1, o, bits) + 1) & maxq for o in range(n_out)] for g in range(G)]
        out = array.array("f", bytes(4 * n_out * n_in))
        for o in range(n_out):
            row = o * n_in
            for i in range(n_in):
                g = gi[i]
                c = field(qw, o, n_out, i, bits)
                out[row + i] = sc[g * n_out + o] * (c - zero[g][o])
        if out.tobytes() != ref.tobytes():
            for k in range(len(out)):
                if out[k] != ref[k]:
                    die(f"{name}: element [{k // n_in}][{k % n_in}]: GPTQ decodes {out[k]!r}, dense has {ref[k]!r}")
    print(f"checked {len(names)} tensors")


main()
