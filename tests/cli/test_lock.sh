# qpipe lock / run --frozen / verify against the lock: a locked rebuild
# fails (exit 2, naming the input) when a dataset byte or a parameter
# changed, and verify compares fresh outputs with the lock as well.
source "$(dirname "$0")/lib.sh"

mkdir data && printf 'one two three\n' > data/words.txt && printf 'calibration text\n' > calib.txt
cat > r.yaml <<'Y'
qpipe: 1
name: locked
stages:
  src: {uses: fetch, with: {source: data}}
  count: {uses: run, needs: [src], with: {cmd: "echo '{\"words\": '$(cat $QPIPE_INPUT_SRC/files/words.txt | wc -w)'}' > m.json", metrics: m.json, deps: [calib.txt]}}
  gate: {uses: gate, needs: [count], with: {max_words: 5}}
Y
expect_exit 1 "$QPIPE" lock r.yaml
expect_grep "stage 'src' is not cached"
[ ! -e r.yaml.lock ] || fail "a lock was written for uncached stages"; ok
expect_exit 0 "$QPIPE" run r.yaml --no-provenance
expect_exit 0 "$QPIPE" lock r.yaml
expect_grep 'wrote r.yaml.lock'
python3 -c "
import json; l=json.load(open('r.yaml.lock'))
assert l['qpipe_lock']==1 and set(l['stages'])=={'src','count','gate'}
assert 'words.txt' in l['stages']['src']['reads']['files'] and len(l['stages']['count']['output'])==64
assert l['stages']['count']['files']['deps']" || fail "lock content"; ok
expect_exit 0 "$QPIPE" run r.yaml --frozen --no-provenance --json
expect_grep '"ran":0,"cached":3'

# one byte of a dataset: the frozen rebuild refuses, naming stage and input
printf 'one two threE\n' > data/words.txt
expect_exit 2 "$QPIPE" run r.yaml --frozen --no-provenance
expect_grep "r.yaml: --frozen: stage 'src': reads files differs from the lock \(its source changed\)"
printf 'one two three\n' > data/words.txt
printf 'other calibration\n' > calib.txt
expect_exit 2 "$QPIPE" run r.yaml --frozen --no-provenance
expect_grep "stage 'count': files deps differs from the lock \(a file it reads changed\)"
printf 'calibration text\n' > calib.txt
# a parameter
sed -i 's/max_words: 5/max_words: 6/' r.yaml
expect_exit 2 "$QPIPE" run r.yaml --frozen --no-provenance
expect_grep "stage 'gate': params max_words differs from the lock \(a parameter changed\)"
# unfrozen runs go on; relocking accepts the change
expect_exit 0 "$QPIPE" run r.yaml --no-provenance
expect_exit 0 "$QPIPE" lock r.yaml
expect_exit 0 "$QPIPE" run r.yaml --frozen --no-provenance
# verify: against the cache and the lock
expect_exit 0 "$QPIPE" verify r.yaml
python3 -c "
import json; l=json.load(open('r.yaml.lock'))
l['stages']['count']['output']='0'*64
json.dump(l, open('r.yaml.lock','w'))"
expect_exit 4 "$QPIPE" verify r.yaml
expect_grep "stage 'count': differs from the lock: output [0-9a-f]{12}, locked 000000000000"
# no lock at all
rm r.yaml.lock
expect_exit 2 "$QPIPE" run r.yaml --frozen --no-provenance
expect_grep '--frozen needs r.yaml.lock'
echo '{"qpipe_lock": 1' > r.yaml.lock
expect_exit 2 "$QPIPE" run r.yaml --frozen --no-provenance
expect_grep 'r.yaml.lock:'
done_ok
