# The shared HTTP remote cache (--remote-cache, Bazel layout cas/ + ac/)
# against a real nginx with WebDAV PUT, started and stopped by this test:
# a second, empty cache directory reuses everything from the remote (0
# stages run, the same digests); a corrupted remote object is reported and
# not cached; entries swapped between two keys on the server are refused
# (with and without the key an entry records) and the stages run locally;
# several corrupt or oversized objects give one warning and a count; URLs
# with a query, a fragment, a dot word, a space, %00 or no host are refused;
# a remote killed mid-run gives one warning and a local run; 401 without
# credentials (warning, local run) and success with them; 4 concurrent
# writers leave a consistent remote.
source "$(dirname "$0")/lib.sh"

source "$REPO/tests/support/nginx-dav.sh"
[ -x "$NGINX" ] || { echo "skip: nginx not installed (scripts/install-deps.sh installs it)"; exit 0; }
[ -f "$SHARED/models/house-llama/model.safetensors" ] || { echo "skip: no $SHARED/models/house-llama"; exit 0; }

NG=$T/nginx
trap 'stop_nginx; rm -rf "$T"' EXIT

cat > r.yaml <<Y
qpipe: 1
name: remote
stages:
  model: {uses: fetch, with: {source: "$SHARED/models/house-llama"}}
  calib: {uses: calibrate, needs: [model], with: {dataset: "$SHARED/data/shakespeare/train.txt", samples: 4, seq_len: 64, seed: 3}}
  rtn: {uses: quantize, needs: [model], with: {method: rtn, bits: 4, group_size: 64}}
  e_rtn: {uses: evaluate, needs: [rtn], with: {dataset: "$SHARED/data/shakespeare/valid.txt", max_chunks: 4}}
Y
ALL="calib e_rtn model rtn"
# digests DIR_OUT: "stage digest" lines of a --json run, sorted
digests() { grep '"event":"stage"' "$1" | sed -E 's/^\{"event":"stage","stage":"([^"]*)".*"output":"([0-9a-f]+)".*/\1 \2/' | sort; }
run_with() {   # run_with CACHE_DIR WANT_EXIT [ARGS...]
  local dir=$1 want=$2; shift 2
  QPIPE_CACHE=$T/$dir expect_exit "$want" "$QPIPE" run r.yaml --json --no-provenance "$@"
}

start_nginx

# 1. write-back from a first cache, read-through into an empty second one
run_with c1 0 --remote-cache "$URL"
[ "$(ran_stages)" = "$ALL" ] || fail "first run ran: $(ran_stages)"; ok
expect_no_grep 'warning'
digests "$T/out" > d1
cp "$T/out" "$T/run1.out"
n_cas=$(find "$NG/root/qp/cas" -type f | wc -l)
n_ac=$(find "$NG/root/qp/ac" -type f | wc -l)
[ "$n_cas" -gt 0 ] && [ "$n_ac" = 4 ] || fail "remote holds $n_cas objects, $n_ac actions"; ok
# every remote object is the raw bytes named by their SHA-256
for f in $(find "$NG/root/qp/cas" -type f | head -20); do
  [ "$(sha256sum "$f" | cut -d' ' -f1)" = "$(basename "$f")" ] || fail "cas/$(basename "$f") is not its own digest"
done; ok
start=$(date +%s.%N)
run_with c2 0 --remote-cache "$URL"
t_pull=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
[ "$(ran_stages)" = "" ] || fail "second cache ran: $(ran_stages)"; ok
expect_grep '"ran":0,"cached":4'
expect_grep 'remote cache: 4 action\(s\) and [0-9]+ object\(s\)'
digests "$T/out" > d2
cmp -s d1 d2 || { diff d1 d2 >&2; fail "digests differ between the caches"; }; ok
QPIPE_CACHE=$T/c2 expect_exit 0 "$QPIPE" cache verify
echo "two-cache-directories: pulled $(du -sb "$NG/root/qp" | cut -f1) remote bytes in ${t_pull}s"
# read mode never writes; a run with the remote and a warm local cache asks nothing
run_with c2 0 --remote-cache "$URL" --remote-cache-mode read
expect_grep '0 action\(s\) and 0 object\(s\) \(0 bytes\) down, 0 action\(s\) and 0 object\(s\) \(0 bytes\) up'

# 1b. two keys' entries swapped on the server (model's under rtn's key and
#     back): each records its key, so both are misses with a warning, the
#     two stages run locally, and what is recorded locally is right (a run
#     without the remote then runs nothing)
key_of() { grep "^{\"event\":\"stage\",\"stage\":\"$1\"" "$T/run1.out" | sed -E 's/.*"key":"([0-9a-f]+)".*/\1/'; }
AC=$NG/root/qp/ac
km=$(key_of model); kr=$(key_of rtn)
[ -f "$AC/$km" ] && [ -f "$AC/$kr" ] || fail "no ac/ entries for model ($km) and rtn ($kr)"; ok
cp "$AC/$km" "$T/ac_model"; cp "$AC/$kr" "$T/ac_rtn"
swapped_run() {   # swapped_run CACHE WHAT: both entries refused, model and rtn rerun
  cp "$T/ac_model" "$AC/$kr"; cp "$T/ac_rtn" "$AC/$km"
  run_with "$1" 0 --remote-cache "$URL" --remote-cache-mode read
  [ "$(ran_stages)" = "model rtn" ] || fail "swapped entries ($2): ran $(ran_stages)"; ok
  [ "$(grep -c 'does not fit the key' "$T/out")" = 2 ] || { cat "$T/out" >&2; fail "swapped entries ($2): expected 2 warnings"; }; ok
  expect_grep "$2"
  expect_grep '2 remote entries that did not fit their key ignored'
  digests "$T/out" | cmp -s - d1 || fail "swapped entries ($2): digests differ"; ok
  run_with "$1" 0
  [ "$(ran_stages)" = "" ] || fail "swapped entries ($2): a wrong entry was recorded locally"; ok
}
swapped_run s1 'it records key'
# entries as older qpipe wrote them (no "key"): the runner's check of the
# artifact's type catches the same swap
sed -i -E 's/,"key":"[0-9a-f]+"//' "$T/ac_model" "$T/ac_rtn"
grep -q '"key"' "$T/ac_model" && fail "key not removed"
swapped_run s2 'produces quantized-model, the entry names a model artifact'
cp "$T/ac_model" "$AC/$km"; cp "$T/ac_rtn" "$AC/$kr"

# 1c. several bad objects (one longer than the size its entry records, one
#     garbage): one warning, the rest counted in the summary line
calib_art=$(awk '$1 == "calib" {print $2}' d1); eval_art=$(awk '$1 == "e_rtn" {print $2}' d1)
cp "$NG/root/qp/cas/$calib_art" "$T/cas_calib"; cp "$NG/root/qp/cas/$eval_art" "$T/cas_eval"
printf 'and then some' >> "$NG/root/qp/cas/$calib_art"
printf 'garbage' > "$NG/root/qp/cas/$eval_art"
run_with s3 0 --remote-cache "$URL" --remote-cache-mode read
[ "$(grep -c 'warning: remote cache' "$T/out")" = 1 ] || { cat "$T/out" >&2; fail "bad objects: expected one warning"; }; ok
expect_grep 'is (larger than its recorded [0-9]+ bytes|corrupt or partial)'
expect_grep '; 2 corrupt remote object\(s\) ignored'
[ "$(ran_stages)" = "calib e_rtn" ] || fail "bad objects: ran $(ran_stages)"; ok
cp "$T/cas_calib" "$NG/root/qp/cas/$calib_art"; cp "$T/cas_eval" "$NG/root/qp/cas/$eval_art"

# 1d. URLs whose cas/ and ac/ requests would go elsewhere: exit 2, one line
for bad in "http://127.0.0.1:$PORT/qp?x=1|query string" "http://127.0.0.1:$PORT/qp#f|fragment" \
           "http://127.0.0.1:$PORT/a/../qp|path word '..'" "http://127.0.0.1:$PORT/q p|space" \
           "http://127.0.0.1:$PORT/qp%00|%00" "http:///qp|host is empty"; do
  QPIPE_CACHE=$T/u expect_exit 2 "$QPIPE" run r.yaml --remote-cache "${bad%%|*}"
  expect_grep "${bad##*|}"
  [ "$(grep -c . "$T/out")" = 1 ] || { cat "$T/out" >&2; fail "URL ${bad%%|*}: not one line"; }; ok
done

# 2. a corrupted remote object is reported once, not cached; the stage
#    runs locally and its upload repairs the remote copy
art=$(grep ' e_rtn ' <(sed 's/^/ /' d1) | awk '{print $2}')
victim=$(find "$NG/root/qp/cas" -type f -name "$art")
[ -n "$victim" ] || fail "no remote object $art"; ok
printf 'garbage' > "$victim"
QPIPE_CACHE=$T/c3 expect_exit 0 "$QPIPE" run r.yaml --json --no-provenance --remote-cache "$URL" --stage e_rtn
expect_grep "object $art is corrupt or partial"
[ "$(grep -c 'is corrupt' "$T/out")" = 1 ] || fail "corruption reported more than once"; ok
[ "$(ran_stages)" = "e_rtn" ] || fail "after corruption ran: $(ran_stages)"; ok
QPIPE_CACHE=$T/c3 expect_exit 0 "$QPIPE" cache verify
[ "$(sha256sum "$victim" | cut -d' ' -f1)" = "$art" ] || fail "the corrupt remote object was not repaired"; ok
# a truncated (partial) object, no rerun possible to repair it: read mode
obj=$(find "$NG/root/qp/cas" -type f -size +100k | head -1)
head -c 1000 "$obj" > "$NG/part" && cat "$NG/part" > "$obj"
QPIPE_CACHE=$T/c4 expect_exit 0 "$QPIPE" run r.yaml --json --no-provenance --remote-cache "$URL" --remote-cache-mode read
expect_grep "object $(basename "$obj") is corrupt or partial \(1000 bytes"
QPIPE_CACHE=$T/c4 expect_exit 0 "$QPIPE" cache verify
expect_grep '0 problem|ok|no problem'
# and the object was not cached under its name with wrong bytes: verify passed above
rm -rf "$NG/root/qp"

# 3. the remote killed mid-run: one warning, the local run succeeds
( while [ ! -d "$NG/root/qp/ac" ]; do sleep 0.05; done; stop_nginx ) &
killer=$!
run_with c5 0 --remote-cache "$URL"
wait $killer
[ "$(ran_stages)" = "$ALL" ] || fail "killed-remote run ran: $(ran_stages)"; ok
[ "$(grep -c 'warning: remote cache' "$T/out")" = 1 ] || { cat "$T/out" >&2; fail "expected one warning"; }; ok
expect_grep 'continuing with the local cache only'
digests "$T/out" | cmp -s - d1 || fail "killed-remote run: digests differ"; ok
# nothing listens at all: one warning, success
run_with c6 0 --remote-cache "$URL" --stage model
[ "$(grep -c 'warning: remote cache' "$T/out")" = 1 ] || fail "expected one warning (no server)"; ok

# 4. basic auth: 401 without credentials, success with them
rm -rf "$NG/root"
mkdir -p "$NG"
printf 'ci:%s\n' "$(openssl passwd -apr1 s3cret)" > "$NG/htpasswd"
start_nginx "auth_basic \"qpipe\"; auth_basic_user_file $NG/htpasswd;"
run_with c7 0 --remote-cache "$URL" --stage model
expect_grep 'HTTP 401 \(credentials missing or refused'
[ "$(grep -c 'warning: remote cache' "$T/out")" = 1 ] || fail "expected one 401 warning"; ok
QPIPE_REMOTE_CACHE_USER=ci QPIPE_REMOTE_CACHE_PASSWORD=wrong run_with c8 0 --remote-cache "$URL" --stage model
expect_grep 'HTTP 401'
expect_no_grep 'wrong'
QPIPE_REMOTE_CACHE_USER=ci QPIPE_REMOTE_CACHE_PASSWORD=s3cret QPIPE_REMOTE_CACHE="$URL" run_with c9 0
expect_no_grep 'warning'
expect_no_grep 's3cret'
[ "$(find "$NG/root/qp/ac" -type f | wc -l)" = 4 ] || fail "authenticated upload"; ok
QPIPE_REMOTE_CACHE_USER=ci QPIPE_REMOTE_CACHE_PASSWORD=s3cret run_with c10 0 --remote-cache "$URL"
[ "$(ran_stages)" = "" ] || fail "authenticated read ran: $(ran_stages)"; ok
stop_nginx

# 5. four concurrent writers of the same recipe, then a fifth empty cache
rm -rf "$NG/root"
start_nginx
pids=""
for i in 1 2 3 4; do
  QPIPE_CACHE=$T/w$i "$QPIPE" run r.yaml --json --no-provenance --remote-cache "$URL" > "$T/w$i.out" 2>&1 &
  pids="$pids $!"
done
for p in $pids; do wait "$p" || fail "a concurrent writer failed"; done; ok
for i in 1 2 3 4; do
  expect_no_grep 'warning' "$T/w$i.out"
  digests "$T/w$i.out" | cmp -s - d1 || fail "writer $i: digests differ"
done; ok
for f in $(find "$NG/root/qp/cas" -type f); do
  [ "$(sha256sum "$f" | cut -d' ' -f1)" = "$(basename "$f")" ] || fail "after concurrent writers cas/$(basename "$f") is wrong"
done; ok
run_with w5 0 --remote-cache "$URL" --remote-cache-mode read
[ "$(ran_stages)" = "" ] || fail "fifth cache ran: $(ran_stages)"; ok
digests "$T/out" | cmp -s - d1 || fail "fifth cache: digests differ"; ok

# 6. cache push / pull
rm -rf "$NG/root/qp"
QPIPE_CACHE=$T/w1 expect_exit 0 "$QPIPE" cache push r.yaml --remote-cache "$URL"
expect_grep '0 action\(s\) and 0 object\(s\) \(0 bytes\) down, 4 action\(s\)'
QPIPE_CACHE=$T/p1 expect_exit 0 "$QPIPE" cache pull r.yaml --remote-cache "$URL"
expect_grep 'remote cache: 4 action\(s\)'
run_with p1 0
[ "$(ran_stages)" = "" ] || fail "after pull ran: $(ran_stages)"; ok
QPIPE_CACHE=$T/p2 expect_exit 2 "$QPIPE" cache pull r.yaml
expect_grep 'needs --remote-cache'
stop_nginx
done_ok
