# fetch from the Hugging Face Hub (hf://ORG/NAME[@REVISION]) against
# tests/support/hub_emulator.py serving the house model (minus reference/,
# the files a local fetch of the same directory imports): revision
# resolution, the entries of a local fetch, exact request counts of cached
# re-runs, offline mode, resumption, hash mismatch, tokens, 404s, retries,
# allow/ignore and hostile listings.
source "$(dirname "$0")/lib.sh"
MODEL="$SHARED/models/house-llama"
[ -f "$MODEL/model.safetensors" ] || fail "no $MODEL (set QPIPE_SHARED)"

python3 "$REPO/tests/support/hub_emulator.py" --root "$MODEL" --exclude reference --repo house/llama \
  --port-file "$T/hub.port" --log "$T/hub.log" &
HUB=$!
trap 'kill $HUB 2>/dev/null; wait $HUB 2>/dev/null; rm -rf "$T"' EXIT
for _ in $(seq 100); do [ -s "$T/hub.port" ] && break; sleep 0.05; done
read -r PORT COMMIT < "$T/hub.port" || fail "emulator did not start"
export HF_ENDPOINT="http://127.0.0.1:$PORT" QPIPE_HF_RETRY_BASE_MS=20
unset HF_TOKEN HF_HUB_OFFLINE
TOKEN=hf_SECRET_do_not_leak_8d1f
ctl() { curl -s -X POST --data "$1" "$HF_ENDPOINT/_control" >/dev/null || fail "control $1"; }
clear_log() { ctl '{"clear_log": true}'; }
nreq() { if [ -s "$T/hub.log" ]; then wc -l < "$T/hub.log"; else echo 0; fi; }
expect_nreq() { [ "$(nreq)" -eq "$1" ] || { cat "$T/hub.log" >&2; fail "expected $1 requests, got $(nreq): $2"; }; ok; }
# manifest FILE DIGEST: the artifact's manifest as JSON
manifest() { zstd -dcq "$QPIPE_CACHE/objects/${1:0:2}/${1:2}" 2>/dev/null || fail "no manifest $1"; }
recipe() {  # recipe FILE SOURCE [EXTRA WITH: ENTRIES]
  printf 'qpipe: 1\nname: hf\nstages:\n  model: {uses: fetch, with: {source: "%s"%s}}\n' "$2" "${3:-}" > "$1"
}

# --- the reference: a local fetch of the same files ---
cp -r "$MODEL" local && chmod -R u+w local && rm -rf local/reference
recipe local.yaml local
expect_exit 0 "$QPIPE" run local.yaml --no-provenance --json
local_digest=$(stage_output model)
manifest "$local_digest" > local.json

# --- @main: one metadata request, every file downloaded (LFS ones via the CDN) ---
recipe main.yaml "hf://house/llama@main"
clear_log
expect_exit 0 "$QPIPE" run main.yaml --no-provenance --json
[ "$(ran_stages)" = model ] || fail "not ran: $(ran_stages)"; ok
hf_digest=$(stage_output model)
expect_nreq 8 "1 revision + 5 resolve + 2 CDN"
# progress in bytes against the listing's total (the ETA comes with it)
expect_grep '"event":"progress","stage":"model","done":[0-9]+,"total":10514132,"unit":"bytes"'
expect_grep "revision/main" "$T/hub.log"
manifest "$hf_digest" > hf.json
# the same entries (every tensor and file, digest for digest) as the local
# fetch; the manifests differ only in meta's record of where it came from
python3 - "$COMMIT" "$local_digest" "$hf_digest" <<'P' >&2 || fail "hf entries differ from the local fetch"
import json, sys
a, b = json.load(open('local.json')), json.load(open('hf.json'))
assert a['entries'] == b['entries'] and len(a['entries']) > 50, 'entries'
assert a['type'] == b['type'] and a['metrics'] == b['metrics'], 'type/metrics'
assert b['meta']['hf'] == {'repo': 'house/llama', 'commit': sys.argv[1]}, b['meta']
assert b['meta']['source'] == 'hf://house/llama', b['meta']
# the model digest: the same for the same files, wherever they came from
assert a['meta']['content_digest'] == b['meta']['content_digest'], 'content digest'
assert {k: v for k, v in a['meta'].items() if k != 'source'} == \
       {k: v for k, v in b['meta'].items() if k not in ('source', 'hf')}, 'meta'
print('model (content) digest', a['meta']['content_digest'], 'local artifact', sys.argv[2][:12], 'hf artifact', sys.argv[3][:12])
P
ok

# --- cached re-runs make no request: @main stays at the commit first
# resolved (recorded in the cache, said on stderr); the commit needs none ---
clear_log
expect_exit 0 "$QPIPE" run main.yaml --no-provenance --json
expect_grep '"status":"cached"'
expect_nreq 0 "a cached re-run of @main"
expect_grep "hf://house/llama@main: 'main' is commit $COMMIT, as first resolved"
echo "emulator log of the first @main run: 8 requests; of the cached re-run: $(nreq)" >&2
# --refresh asks the Hub again: one metadata request, nothing downloaded
clear_log
expect_exit 0 "$QPIPE" run main.yaml --no-provenance --json --refresh
expect_grep '"status":"cached"'
expect_nreq 1 "--refresh resolves main again"
expect_no_grep "as first resolved"
recipe pinned.yaml "hf://house/llama@$COMMIT"
clear_log
expect_exit 0 "$QPIPE" run pinned.yaml --no-provenance --json
expect_grep '"status":"cached"'
[ "$(stage_output model)" = "$hf_digest" ] || fail "@commit and @main differ"; ok
expect_nreq 0 "a pinned commit whose stage is cached"
expect_exit 0 "$QPIPE" plan pinned.yaml
expect_grep 'cached +model +fetch'
expect_nreq 0 "plan of a pinned, cached stage"
# the lock pins the commit
expect_exit 0 "$QPIPE" lock main.yaml
expect_grep "commit: $COMMIT" main.yaml.lock

# --- offline: cached → served; not cached → one clear line ---
clear_log
HF_HUB_OFFLINE=1 expect_exit 0 "$QPIPE" run main.yaml --no-provenance --json
expect_grep '"status":"cached"'
expect_exit 0 "$QPIPE" run main.yaml --no-provenance --offline --json
expect_grep '"status":"cached"'
expect_nreq 0 "offline"
QPIPE_CACHE="$T/c-offline" expect_exit 1 "$QPIPE" run main.yaml --no-provenance --offline
expect_grep "revision 'main' is not in the cache and offline mode is on \(HF_HUB_OFFLINE=1\)"
QPIPE_CACHE="$T/c-offline" HF_HUB_OFFLINE=1 expect_exit 1 "$QPIPE" run pinned.yaml --no-provenance
expect_grep "not in the cache and offline mode is on"
expect_nreq 0 "offline, not cached"

# --- a dropped connection: the partial file is kept and continued with Range ---
export QPIPE_CACHE="$T/c-resume"
ctl '{"drop": {"file": "model.safetensors", "after": 1000000}}'
clear_log
expect_exit 0 "$QPIPE" run main.yaml --no-provenance --json
[ "$(stage_output model)" = "$hf_digest" ] || fail "resumed download gave another artifact"; ok
expect_grep '"path": "/cdn/[0-9a-f]+", "range": "bytes=1000000-"' "$T/hub.log"
expect_nreq 10 "8 + the resolve and CDN requests of the resumption"
ls "$QPIPE_CACHE/tmp" | grep -q '^hf-' && fail "temp downloads left behind: $(ls "$QPIPE_CACHE/tmp")"; ok

# --- wrong bytes: an error, nothing cached; the next run downloads again ---
export QPIPE_CACHE="$T/c-corrupt"
ctl '{"corrupt": "config.json"}'
expect_exit 1 "$QPIPE" run main.yaml --no-provenance
expect_grep "file 'config.json' at commit [0-9a-f]{12}: downloaded bytes have git blob id [0-9a-f]{40} but the Hub says"
expect_exit 0 "$QPIPE" cache stats
expect_grep 'objects: 0'
ctl '{"corrupt": "model.safetensors"}'
expect_exit 1 "$QPIPE" run main.yaml --no-provenance
expect_grep "file 'model.safetensors' .*sha256 [0-9a-f]{64} but the Hub says"
clear_log
expect_exit 0 "$QPIPE" run main.yaml --no-provenance --json
[ "$(stage_output model)" = "$hf_digest" ] || fail "good run after a corrupt one differs"; ok
expect_grep 'resolve/[0-9a-f]{40}/config.json' "$T/hub.log"

# --- 5xx and 429 are retried (Retry-After honoured); then a bounded failure ---
export QPIPE_CACHE="$T/c-retry"
ctl '{"fail": {"status": 500, "count": 2}}'
clear_log
expect_exit 0 "$QPIPE" run main.yaml --no-provenance --json
expect_nreq 10 "2 failed + 8"
export QPIPE_CACHE="$T/c-retry2"
ctl '{"fail": {"status": 429, "count": 1, "retry_after": 1}}'
start=$(date +%s%N)
expect_exit 0 "$QPIPE" run main.yaml --no-provenance
[ $(( ($(date +%s%N) - start) / 1000000 )) -ge 900 ] || fail "Retry-After not honoured"; ok
export QPIPE_CACHE="$T/c-retry3"
ctl '{"fail": {"status": 503, "count": 5}}'
clear_log
expect_exit 1 "$QPIPE" run main.yaml --no-provenance
expect_grep "hf://house/llama@main: revision 'main': the Hub answered HTTP 503 5 times; try again later"
expect_nreq 5 "5 attempts, no more"
ctl '{"reset": true}'
# nothing listening: connection errors are retried, then one line
HF_ENDPOINT=http://127.0.0.1:1 expect_exit 1 "$QPIPE" run main.yaml --no-provenance
expect_grep "revision 'main': cannot reach http://127.0.0.1:1 \(.*\) after 5 attempts; check the network or HF_ENDPOINT"

# --- tokens: 401 without one; never in the cache, output or run records ---
mkdir prov && cd prov && git init -q . && printf '.qpipe/\n' > .gitignore && git add -A && git commit -qm init
recipe main.yaml "hf://house/llama@main"
export QPIPE_CACHE="$T/prov/.qpipe/cache"
ctl "{\"require_token\": \"$TOKEN\"}"
expect_exit 1 "$QPIPE" run main.yaml
expect_grep "the Hub needs authentication \(HTTP 401\); set HF_TOKEN to a token with read access to house/llama"
HF_TOKEN=wrong expect_exit 1 "$QPIPE" run main.yaml
expect_grep "the Hub refused the token in HF_TOKEN \(HTTP 401\)"
clear_log
HF_TOKEN=$TOKEN "$QPIPE" run main.yaml --json > "$T/tok.out" 2>&1 || { cat "$T/tok.out"; fail "run with token"; }
ok
HF_TOKEN=$TOKEN expect_exit 0 "$QPIPE" lock main.yaml
expect_grep '"auth": true, "method": "GET", "path": "/api/models' "$T/hub.log"
grep -q '"auth": false' "$T/hub.log" && fail "a request without the token"; ok
git log -p --all > "$T/git.log"
! grep -rq "$TOKEN" . "$T/tok.out" "$T/out" "$T/git.log" || fail "the token leaked"; ok
cd "$T"
ctl '{"reset": true}'

# --- 404s name what is missing ---
export QPIPE_CACHE="$T/c-404"
recipe nope.yaml "hf://house/llama@nope"
expect_exit 1 "$QPIPE" run nope.yaml --no-provenance
expect_grep "hf://house/llama@nope: revision 'nope' not found in house/llama \(HTTP 404\)"
recipe norepo.yaml "hf://house/missing"
expect_exit 1 "$QPIPE" run norepo.yaml --no-provenance
expect_grep "repository house/missing or revision 'main' not found"

# --- allow/ignore: only the kept files are requested; the globs are keyed ---
export QPIPE_CACHE="$T/c-globs"
recipe globs.yaml "hf://house/llama@main" ', allow: ["*.json"], ignore: [generation_config.json]'
clear_log
expect_exit 0 "$QPIPE" run globs.yaml --no-provenance --json
manifest "$(stage_output model)" | python3 -c '
import json, sys
d = json.load(sys.stdin)
names = [e["name"] for e in d["entries"]]
assert d["type"] == "files" and names == ["files/config.json", "files/tokenizer_config.json"], names' \
  || fail "allow/ignore kept the wrong files"
ok
expect_nreq 3 "1 revision + 2 files"
recipe globs.yaml "hf://house/llama@main" ', allow: ["*.json"]'
expect_exit 0 "$QPIPE" run globs.yaml --no-provenance --json
[ "$(ran_stages)" = model ] || fail "a changed glob did not rerun"; ok
# two stages downloading the same file at once (-j 2): each imports its own copy
cat > two.yaml <<'Y'
qpipe: 1
name: two
stages:
  a: {uses: fetch, with: {source: "hf://house/llama", allow: [config.json, "*.safetensors"], type: files}}
  b: {uses: fetch, with: {source: "hf://house/llama", allow: ["*.json", tokenizer.model]}}
Y
expect_exit 0 "$QPIPE" run two.yaml --no-provenance -j 2 --json
[ "$(ran_stages)" = "a b" ] || fail "two stages: $(ran_stages)"; ok
recipe bad.yaml local ', allow: ["*.json"]'
expect_exit 2 "$QPIPE" run bad.yaml --no-provenance
expect_grep 'allow: and ignore: only apply to hf:// sources'

# --- pins work as for a local source ---
good=$(sha256sum "$MODEL/config.json" | cut -c1-64)
recipe pin.yaml "hf://house/llama@main" ", allow: [config.json], sha256: {config.json: \"$good\"}"
expect_exit 0 "$QPIPE" run pin.yaml --no-provenance
recipe pin.yaml "hf://house/llama@main" ", allow: [config.json], sha256: {config.json: \"${good//?/0}\"}"
expect_exit 1 "$QPIPE" run pin.yaml --no-provenance
expect_grep "file 'config.json': sha256 is $good but the recipe pins 0{64}"

# --- main moves upstream: runs keep the recorded commit (no request) until
# --refresh, which a locked run then refuses and an unlocked one fetches ---
export QPIPE_CACHE="$T/.qpipe/cache"
ctl '{"move_main": "2"}'
clear_log
expect_exit 0 "$QPIPE" run main.yaml --no-provenance --frozen --json
expect_grep '"status":"cached"'
expect_nreq 0 "a moved branch before --refresh"
expect_exit 2 "$QPIPE" run main.yaml --no-provenance --frozen --refresh
expect_grep "stage 'model': reads hf differs from the lock"
expect_exit 0 "$QPIPE" run main.yaml --no-provenance --json --refresh
[ "$(ran_stages)" = model ] || fail "--refresh did not fetch the moved branch: $(ran_stages)"; ok
manifest "$(stage_output model)" | python3 -c '
import json, sys
c = json.load(sys.stdin)["meta"]["hf"]["commit"]
assert len(c) == 40 and c != sys.argv[1], c' "$COMMIT" || fail "the new commit is not recorded"
ok
# and the new commit is what later runs keep
new_digest=$(stage_output model)
clear_log
expect_exit 0 "$QPIPE" run main.yaml --no-provenance --json
[ "$(stage_output model)" = "$new_digest" ] || fail "a later run went back to the old commit"; ok
expect_nreq 0 "the refreshed record"
ctl '{"move_main": ""}'

# --- hostile names: refused before any request or write ---
export QPIPE_CACHE="$T/c-hostile"
for bad in "hf://../x" "hf://house/llama/x" "hf://house/ll ama" "hf://house/llama@a..b" "hf://house/.."; do
  recipe h.yaml "$bad"
  expect_exit 2 "$QPIPE" run h.yaml --no-provenance
  expect_grep 'expected hf://ORG/NAME|is not a branch, tag or commit'
done
for sib in "../evil" "/etc/passwd" 'a\\b' "a//b"; do
  ctl "{\"reset\": true, \"extra_sibling\": \"$sib\"}"
  recipe h.yaml "hf://house/llama@main"
  expect_exit 1 "$QPIPE" run h.yaml --no-provenance
  expect_grep "unsafe or malformed file name"
done
ctl '{"reset": true, "extra_sibling": "config.json"}'
expect_exit 1 "$QPIPE" run h.yaml --no-provenance
expect_grep "names 'config.json' twice"
ctl '{"reset": true}'
HF_TOKEN=$'abc\r\nX-Evil: 1' expect_exit 2 "$QPIPE" run h.yaml --no-provenance
expect_grep 'HF_TOKEN holds a space or control character'
[ ! -e "$T/evil" ] && [ ! -e "$QPIPE_CACHE/evil" ] || fail "a hostile name was written"; ok
done_ok
