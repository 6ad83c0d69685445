# fetch: a git repository at a pinned commit (libgit2), sha256 pins, and a
# Hugging Face checkpoint split into per-tensor objects stored once.
source "$(dirname "$0")/lib.sh"

# --- git ---
mkdir upstream && cd upstream && git init -q . && mkdir -p sub && echo v1 > sub/a.txt && echo top > top.txt
git add -A && git commit -qm one && c1=$(git rev-parse HEAD)
echo v2 > sub/a.txt && git commit -qam two && c2=$(git rev-parse HEAD)
cd "$T"
cat > g.yaml <<Y
qpipe: 1
name: git
stages:
  src: {uses: fetch, with: {source: "git:upstream", rev: "$c1", path: sub}}
  show: {uses: run, needs: [src], with: {cmd: "cat \$QPIPE_INPUT_SRC/files/a.txt > shown.txt", outs: [shown.txt]}}
Y
expect_exit 0 "$QPIPE" run g.yaml --no-provenance
[ "$(cat shown.txt)" = v1 ] || fail "pinned commit not used"; ok
sed -i "s/$c1/$c2/" g.yaml
expect_exit 0 "$QPIPE" run g.yaml --no-provenance --json
[ "$(ran_stages)" = "show src" ] || fail "rev change ran: $(ran_stages)"; ok
[ "$(cat shown.txt)" = v2 ] || fail "second commit not used"; ok
# new commits on the branch do not matter: the rev is pinned
(cd upstream && echo v3 > sub/a.txt && git commit -qam three)
expect_exit 0 "$QPIPE" run g.yaml --no-provenance --json
[ "$(ran_stages)" = "" ] || fail "moving branch reran: $(ran_stages)"; ok
sed -i "s/rev: \"$c2\"/rev: main/" g.yaml
expect_exit 2 "$QPIPE" run g.yaml --no-provenance
expect_grep 'g.yaml:4:[0-9]+: .*40-digit commit id'
sed -i "s/rev: main/rev: \"$(printf '%040d' 1)\"/" g.yaml
expect_exit 1 "$QPIPE" run g.yaml --no-provenance
expect_grep 'commit 0000000000000000000000000000000000000001 not found'

# --- sha256 pins ---
mkdir data && echo hello > data/h.txt
good=$(sha256sum data/h.txt | cut -c1-64)
cat > p.yaml <<Y
qpipe: 1
name: pins
stages:
  src: {uses: fetch, with: {source: data, sha256: {h.txt: "$good"}}}
Y
expect_exit 0 "$QPIPE" run p.yaml --no-provenance
echo changed > data/h.txt
expect_exit 1 "$QPIPE" run p.yaml --no-provenance
expect_grep "file 'h.txt': sha256 is [0-9a-f]{64} but the recipe pins $good"
sed -i "s/h.txt: /nope.txt: /" p.yaml
expect_exit 1 "$QPIPE" run p.yaml --no-provenance
expect_grep "sha256 pin names 'nope.txt', which is not in the source"
sed -i "s/\"$good\"/\"xyz\"/" p.yaml
expect_exit 2 "$QPIPE" run p.yaml --no-provenance
expect_grep 'must be 64 lowercase hex digits'

# --- a checkpoint: per-tensor objects, stored once across recipes ---
cp -r "$SHARED/models/house-llama" model && rm -rf model/reference
cat > m.yaml <<'Y'
qpipe: 1
name: model
stages:
  model: {uses: fetch, with: {source: model}}
Y
expect_exit 0 "$QPIPE" run m.yaml --no-provenance --json
expect_exit 0 "$QPIPE" cache stats
objs=$(sed -nE 's/.*objects: ([0-9]+).*/\1/p' "$T/out")
# the same weights under another directory and recipe: the key covers
# content, not paths, so the stage is cached and nothing new is stored
cp -r model model2 && sed 's/source: model}/source: model2}/; s/name: model/name: model2/' m.yaml > m2.yaml
expect_exit 0 "$QPIPE" run m2.yaml --no-provenance --json
expect_grep '"status":"cached"'
expect_exit 0 "$QPIPE" cache stats
[ "$(sed -nE 's/.*objects: ([0-9]+).*/\1/p' "$T/out")" -eq "$objs" ] || fail "tensors stored twice"; ok
# edit one tensor's bytes: exactly one new tensor object (plus the manifest)
python3 - <<'P'
import json, struct
p = 'model2/model.safetensors'
b = bytearray(open(p, 'rb').read())
n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8 + n])
beg, end = h['model.norm.weight']['data_offsets']
b[8 + n + beg] ^= 1
open(p, 'wb').write(b)
P
expect_exit 0 "$QPIPE" run m2.yaml --no-provenance --json
expect_exit 0 "$QPIPE" cache stats
[ "$(sed -nE 's/.*objects: ([0-9]+).*/\1/p' "$T/out")" -eq $((objs + 2)) ] || fail "expected exactly 2 new objects"; ok
# a truncated checkpoint is refused with the file named
head -c 1000 model/model.safetensors > model2/model.safetensors
expect_exit 1 "$QPIPE" run m2.yaml --no-provenance
expect_grep 'model2/model.safetensors'
done_ok
