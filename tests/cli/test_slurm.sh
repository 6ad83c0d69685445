# The Slurm executor (qpipe run --executor slurm) on a one-node cluster from
# Debian's slurmctld, slurmd and munge, which this test starts and stops
# (tests/support/slurm-cluster.sh): a recipe's three candidates run as one
# job array whose job ids the run record names, with the digests of a local
# run; then a rejecting gate (exit 3), a failing job, a job cancelled from
# outside, a job over its time limit, Ctrl-C (every job cancelled), a job
# sbatch refuses, resources: errors, and no Slurm installed; and jobs that
# share nothing but the remote cache (--job-cache-dir, nginx).
source "$(dirname "$0")/lib.sh"
source "$REPO/tests/support/nginx-dav.sh"

for b in munged slurmctld slurmd sbatch; do
  command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] ||
    { echo "skip: $b is not installed (scripts/install-deps.sh installs slurmctld, slurmd, slurm-client, munge)"; exit 0; }
done
[ -f "$SHARED/models/house-llama/model.safetensors" ] || { echo "skip: no $SHARED/models/house-llama"; exit 0; }

CLUSTER=$REPO/tests/support/slurm-cluster.sh
SC=$T/cluster
# 16 schedulable CPUs whatever the machine: the sleeping jobs below must not
# hold the others back (a compute stage without resources asks 8)
cluster_env=$(SLURM_TEST_CPUS=16 bash "$CLUSTER" start "$SC") || fail "the Slurm cluster did not start"
eval "$cluster_env"
NG=$T/nginx
trap 'stop_nginx; bash "$CLUSTER" stop "$SC"; rm -rf "$T"' EXIT
export QPIPE_SLURM_POLL=0.2
PY=python3
# jobs_of NAME: "JOBID STATE" of the cluster's jobs named qpipe:NAME
jobs_of() { squeue -h -n "qpipe:$1" -o '%i %T' 2>/dev/null; }
# wait_running NAME: until a job named qpipe:NAME runs (30 s at most)
wait_running() {
  for _ in $(seq 300); do jobs_of "$1" | grep -q RUNNING && return 0; sleep 0.1; done
  fail "no running job qpipe:$1"
}
digests() { grep '"event":"stage"' "$1" | sed -E 's/^\{"event":"stage","stage":"([^"]*)".*"output":"([0-9a-f]+)".*/\1 \2/' | sort; }

# 0. a job over its time limit (1 minute, Slurm's unit; it ends 60 to 90 s
#    after it starts): started first, checked last.  Not under ASan: the
#    wait is the same code as a cancelled job's (6.) and the minute and a
#    half is CI time the sanitizer finds nothing in.
slow_pid=
if [ "${BUILD:-build}" != build-asan ]; then
  mkdir -p slow
  cat > slow/r.yaml <<Y
qpipe: 1
name: slow
stages:
  slow: {uses: run, with: {cmd: "sleep 600"}, resources: {time: 1, cpus: 1}}
Y
  "$QPIPE" run slow/r.yaml --executor slurm --no-provenance --threads 1 >"$T/slow.out" 2>&1 &
  slow_pid=$!
fi

# 1. no Slurm: a usage error before anything runs
mkdir -p repo && cd repo && git init -q .
cat > r.yaml <<Y
qpipe: 1
name: slurm
stages:
  model: {uses: fetch, with: {source: "$SHARED/models/house-llama"}}
  q:
    uses: quantize
    needs: [model]
    candidates:
      - {name: r4, method: rtn, bits: 4, group_size: 64}
      - {name: r3, method: rtn, bits: 3, group_size: 64}
      - {name: q8, method: gguf, type: Q8_0}
    resources: {cpus: 1, mem: 2G, time: "0:10:00"}
  e: {uses: evaluate, needs: [q], with: {dataset: "$SHARED/data/shakespeare/valid.txt", max_chunks: 1}}
  gate: {uses: gate, needs: [e], with: {max_ppl: 40}}
  # its model card lists the evaluation's metrics: the same bytes whether
  # the inputs were computed in this process or read from the cache
  pkg: {uses: package, needs: ["q@q8", "gate@q8"], with: {format: gguf, out: dist/q8}}
Y
git add r.yaml && git commit -qm recipe
expect_exit 2 env PATH="$T/nowhere" "$QPIPE" run r.yaml --executor slurm
expect_grep 'sbatch is not installed.*slurm-client'
expect_exit 2 "$QPIPE" run r.yaml --partition debug
expect_grep 'go with --executor slurm'
expect_exit 2 "$QPIPE" plan r.yaml --executor slurm
expect_exit 2 "$QPIPE" plan r.yaml --stage model --expect-key "$(printf 'a%.0s' $(seq 64))"
expect_grep "expect-key go with 'qpipe run'"

# 2. the candidates as one job array; the run record names every job
expect_exit 0 "$QPIPE" run r.yaml --executor slurm --threads 1 --json
cp "$T/out" "$T/slurm.json"
[ -z "$(ls .qpipe/slurm/job-*.sh 2>/dev/null)" ] || fail "job scripts left: $(ls .qpipe/slurm)"; ok
[ "$(ran_stages)" = "e@q8 e@r3 e@r4 gate@q8 gate@r3 gate@r4 model pkg q@q8 q@r3 q@r4" ] || fail "ran: $(ran_stages)"; ok
arr=$(grep '"event":"submitted"' "$T/out" | grep '"stages":\["q@r4","q@r3","q@q8"\]' | sed -E 's/.*"job":"([0-9]+)".*/\1/')
[ -n "$arr" ] || { cat "$T/out" >&2; fail "the candidates were not one job array"; }; ok
git show qpipe/provenance:run.json > "$T/rec"
$PY - "$T/rec" "$arr" <<'P' || fail "run record"
import json, os, sys
rec = json.load(open(sys.argv[1])); arr = sys.argv[2]
st = rec["stages"]
for i, c in enumerate(["r4", "r3", "q8"]):
    s = st["q@" + c]["slurm"]
    assert s["job"] == "%s_%d" % (arr, i), s
    assert s["state"] == "COMPLETED" and s["exit"] == 0, s
    assert s["cpus"] == 1 and s["mem_mb"] == 2048 and s["time_min"] == 10, s
    assert os.path.isabs(s["log"]) and "qpipe-slurm-exit: 0" in open(s["log"]).read(), s
    assert s["err"] == s["log"][:-4] + ".err" and os.path.exists(s["err"]), s
# a stage without resources: gets the estimate's memory and time
e = st["e@r4"]["slurm"]
assert e["mem_mb"] > 256 and e["time_min"] >= 10, e
assert st["model"]["slurm"]["job"].isdigit()
P
ok
# the same digests as a local run into another cache
digests "$T/slurm.json" > "$T/d_slurm"
QPIPE_CACHE=$T/local expect_exit 0 "$QPIPE" run r.yaml --no-provenance --json --threads 2
digests "$T/out" > "$T/d_local"
cmp -s "$T/d_slurm" "$T/d_local" || { diff "$T/d_slurm" "$T/d_local" >&2; fail "Slurm and local digests differ"; }; ok
# all cached: nothing submitted; resources are not part of any key
sed -i 's/mem: 2G/mem: 3G/' r.yaml
expect_exit 0 "$QPIPE" run r.yaml --executor slurm --json --no-provenance
expect_grep '"ran":0,"cached":11'
expect_no_grep '"event":"submitted"'

# 2b. jobs that share only the remote cache: each uses its own cache
#     directory (--job-cache-dir), the results come back by read-through
start_nginx
expect_exit 2 "$QPIPE" run r.yaml --executor slurm --job-cache-dir "$T/node"
expect_grep 'job-cache-dir .*add --remote-cache URL'
QPIPE_CACHE=$T/viaremote expect_exit 0 "$QPIPE" run r.yaml --executor slurm --threads 1 --json --no-provenance \
  --remote-cache "$URL" --job-cache-dir "$T/node"
[ "$(ran_stages | wc -w)" = 11 ] || fail "via the remote: ran $(ran_stages)"; ok
digests "$T/out" > "$T/d_remote"
cmp -s "$T/d_slurm" "$T/d_remote" || { diff "$T/d_slurm" "$T/d_remote" >&2; fail "digests via the remote differ"; }; ok
[ -d "$T/node/objects" ] || [ -d "$T/node/actions" ] || fail "the jobs did not use --job-cache-dir"; ok
stop_nginx
# a remote that is off: nothing is submitted whose result could not come back
QPIPE_CACHE=$T/fresh expect_exit 1 "$QPIPE" run r.yaml --executor slurm --threads 1 --no-provenance \
  --remote-cache "$URL" --job-cache-dir "$T/node2"
expect_grep "not submitted: the remote cache http://127.0.0.1:[0-9]+/qp was turned off"
expect_no_grep '^  submitted'

# 3. a rejecting gate on Slurm is still a rejection (its job exits 3)
cat > gate.yaml <<Y
qpipe: 1
name: strict
stages:
  model: {uses: fetch, with: {source: "$SHARED/models/house-llama"}}
  q: {uses: quantize, needs: [model], with: {method: rtn, bits: 4, group_size: 64}}
  e: {uses: evaluate, needs: [q], with: {dataset: "$SHARED/data/shakespeare/valid.txt", max_chunks: 1}}
  strict: {uses: gate, needs: [e], with: {max_ppl: 1}}
Y
# (no --threads: a compute stage asks min(8, the largest node's CPUs), a
# stage that reads and writes 1)
expect_exit 3 "$QPIPE" run gate.yaml --executor slurm --partition small --no-provenance --json
expect_grep '"stage":"strict".*"status":"ran".*"rejected":true'
expect_grep '"stage":"strict".*"slurm":\{[^}]*"exit":3'
expect_grep '"stage":"strict".*"partition":"small"'
expect_grep '"stage":"e",.*"slurm":\{[^}]*"cpus":8'
expect_grep '"stage":"strict",.*"slurm":\{[^}]*"cpus":1'
# a job whose stage has another key than the submitting run computed
# (the recipe changed in between) refuses to run it
expect_exit 2 "$QPIPE" run gate.yaml --stage q --expect-key "$(printf '0%.0s' $(seq 64))" --no-provenance
expect_grep "stage 'q': its key here is [0-9a-f]{12}, the run that submitted this job computed 000000000000: the recipe"

# 4. a failing job: its id and its log's tail
cat > fail.yaml <<Y
qpipe: 1
name: failing
stages:
  boom: {uses: run, with: {cmd: "echo boom-marker-1 >&2; exit 7"}}
Y
expect_exit 1 "$QPIPE" run fail.yaml --executor slurm --threads 1 --no-provenance
expect_grep "stage 'boom': Slurm job [0-9]+ FAILED \(exit 1\): boom-marker-1 \| qpipe: stage 'boom': command exited with status 7 .*\(stderr: /.*/\.qpipe/slurm/[0-9]+\.err\)"

# 4b. two failing tasks of one array: each stage keeps its own job's error;
#     logs in a directory whose name has a '%' (Slurm's pattern character)
cat > fail2.yaml <<Y
qpipe: 1
name: failing2
stages:
  b:
    uses: run
    candidates:
      - {name: x, cmd: "echo marker-x >&2; exit 5"}
      - {name: y, cmd: "echo fine"}
      - {name: z, cmd: "echo marker-z >&2; exit 6"}
Y
expect_exit 1 "$QPIPE" run fail2.yaml --executor slurm --threads 1 --no-provenance --json --slurm-log-dir "$T/logs%j"
expect_grep '"stage":"b@x".*"error":"stage .b@x.: Slurm job [0-9]+_0 FAILED .*marker-x'
expect_grep '"stage":"b@z".*"error":"stage .b@z.: Slurm job [0-9]+_2 FAILED .*marker-z'
expect_grep '"stage":"b@y".*"status":"ran"'
ls "$T/logs%j"/*_1.out >/dev/null 2>&1 || fail "no logs in $T/logs%j"; ok
expect_exit 2 "$QPIPE" run fail2.yaml --executor slurm --slurm-log-dir "$T/back\\slash"
expect_grep 'has a backslash'

# 5. sbatch refuses a request no node can meet
cat > huge.yaml <<Y
qpipe: 1
name: huge
stages:
  big: {uses: run, with: {cmd: "true"}, resources: {mem: 1000T}}
Y
expect_exit 1 "$QPIPE" run huge.yaml --executor slurm --threads 1 --no-provenance
expect_grep "stage 'big': sbatch refused the job \(exit 1\): .*"

# 6. a job cancelled from outside fails its stage
cat > nap.yaml <<Y
qpipe: 1
name: nap
stages:
  nap: {uses: run, with: {cmd: "echo nap-started; sleep 120"}}
Y
"$QPIPE" run nap.yaml --executor slurm --threads 1 --no-provenance >"$T/nap.out" 2>&1 &
pid=$!
wait_running nap
scancel "$(jobs_of nap | awk '{print $1}')"
wait "$pid"; rc=$?
[ "$rc" = 1 ] || { cat "$T/nap.out" >&2; fail "cancelled job: exit $rc"; }; ok
expect_grep "stage 'nap': Slurm job [0-9]+ CANCELLED" "$T/nap.out"

# 7. Ctrl-C cancels every job of the run and exits 130
cat > nap2.yaml <<Y
qpipe: 1
name: nap2
stages:
  a: {uses: run, with: {cmd: "sleep 121"}}
  b: {uses: run, with: {cmd: "sleep 122"}}
Y
"$QPIPE" run nap2.yaml --executor slurm --threads 1 --no-provenance >"$T/int.out" 2>&1 &
pid=$!
wait_running a
wait_running b
kill -INT "$pid"
wait "$pid"; rc=$?
[ "$rc" = 130 ] || { cat "$T/int.out" >&2; fail "Ctrl-C: exit $rc"; }; ok
expect_grep 'interrupted: cancelled Slurm job' "$T/int.out"
expect_grep 'qpipe: interrupted: 2 Slurm job\(s\) cancelled$' "$T/int.out"
for _ in $(seq 50); do [ -z "$(jobs_of a)$(jobs_of b)" ] && break; sleep 0.1; done
[ -z "$(jobs_of a)$(jobs_of b)" ] || fail "jobs left after Ctrl-C: $(jobs_of a) $(jobs_of b)"; ok

# 8. resources: mistakes are recipe errors with their line
for bad in "cpus: 0" "mem: 16" "time: soon" "gpu: 1" "partition: 'a b'"; do
  printf 'qpipe: 1\nname: bad\nstages:\n  s:\n    uses: run\n    with: {cmd: "true"}\n    resources: {%s}\n' "$bad" > bad.yaml
  expect_exit 2 "$QPIPE" plan bad.yaml
  expect_grep '^qpipe: bad.yaml:7:[0-9]+: .*resources'
done

# 0. (started first) the job over its time limit
if [ -n "$slow_pid" ]; then
  wait "$slow_pid"; rc=$?
  [ "$rc" = 1 ] || { cat "$T/slow.out" >&2; fail "timed-out job: exit $rc"; }; ok
  expect_grep "stage 'slow': Slurm job [0-9]+ TIMEOUT \(exit 0, signal 15\): .*DUE TO TIME LIMIT .*\(stderr: /.*/slurm/[0-9]+\.err\)" "$T/slow.out"
fi
done_ok
