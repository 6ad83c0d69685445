#!/usr/bin/env bash
# A one-node Slurm cluster for tests and demos, from Debian's slurmctld,
# slurmd and munge packages: everything (config, munge key and socket,
# state, spool, logs) lives in DIR, on ports nothing else listens on.
#
#   slurm-cluster.sh start DIR   prints "export SLURM_CONF=DIR/slurm.conf"
#                                once the node is idle (exit 1 if it never is)
#   slurm-cluster.sh stop DIR    cancels its jobs and stops the daemons
#
# SLURM_CONF is all a client (sbatch, scontrol, qpipe --executor slurm)
# needs to find it.  Root is simplest (slurmd starts jobs as their user);
# otherwise the daemons run as the current user and so do the jobs.
set -u
cmd=${1:-}; D=${2:-}
[ -n "$cmd" ] && [ -n "$D" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

stop() {
  [ -f "$D/slurm.conf" ] && SLURM_CONF=$D/slurm.conf scancel --full --quiet --user="$(id -un)" 2>/dev/null
  for p in slurmd slurmctld munged; do
    [ -f "$D/$p.pid" ] || continue
    pid=$(cat "$D/$p.pid")
    kill "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
    rm -f "$D/$p.pid"
  done
}

source "$(dirname "${BASH_SOURCE[0]}")/free-port.sh"

start() {
  for b in munged slurmctld slurmd sbatch; do
    command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || { echo "no $b (scripts/install-deps.sh installs it)" >&2; exit 1; }
  done
  PATH=$PATH:/usr/sbin
  mkdir -p "$D/state" "$D/spool"
  chmod 700 "$D"
  user=$(id -un)
  node=$(hostname -s)
  # munge: its own key and socket (no system daemon needed)
  head -c 1024 /dev/urandom > "$D/munge.key"
  chmod 400 "$D/munge.key"
  munged --key-file="$D/munge.key" --socket="$D/munge.sock" --pid-file="$D/munged.pid" \
         --log-file="$D/munged.log" --seed-file="$D/munge.seed" --force 2>"$D/munged.err" ||
    { cat "$D/munged.err" >&2; exit 1; }
  # the node as slurmd sees it, a little memory held back for the system
  cpus=$(slurmd -C 2>/dev/null | sed -nE 's/.*CPUs=([0-9]+).*/\1/p')
  mem=$(slurmd -C 2>/dev/null | sed -nE 's/.*RealMemory=([0-9]+).*/\1/p')
  [ -n "$cpus" ] || cpus=$(nproc)
  [ -n "$mem" ] || mem=$(( $(sed -nE 's/^MemTotal: *([0-9]+).*/\1/p' /proc/meminfo) / 1024 ))
  mem=$(( mem > 2048 ? mem - 1024 : mem ))
  # SLURM_TEST_CPUS: schedule more CPUs than there are (config_overrides),
  # so a test's sleeping jobs do not queue the others behind them
  cpus=${SLURM_TEST_CPUS:-$cpus}
  cat > "$D/slurm.conf" <<C
ClusterName=qpipetest
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
AuthInfo=socket=$D/munge.sock
CredType=cred/munge
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/slurmctld.log
SlurmdLogFile=$D/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# a job that asks no memory gets this much, not the whole node (as on real clusters)
DefMemPerCPU=512
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
MinJobAge=600
KillWait=5
SchedulerParameters=sched_interval=1
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=small Nodes=ALL MaxTime=INFINITE State=UP
C
  export SLURM_CONF=$D/slurm.conf
  slurmctld -f "$SLURM_CONF" 2>"$D/slurmctld.err" || { cat "$D/slurmctld.err" "$D/slurmctld.log" >&2; stop; exit 1; }
  slurmd -f "$SLURM_CONF" 2>"$D/slurmd.err" || { cat "$D/slurmd.err" "$D/slurmd.log" >&2; stop; exit 1; }
  for _ in $(seq 100); do
    [ "$(sinfo -h -p debug -o %T 2>/dev/null)" = idle ] && { echo "export SLURM_CONF=$SLURM_CONF"; return 0; }
    sleep 0.2
  done
  echo "the node never became idle:" >&2
  sinfo >&2; tail -5 "$D/slurmctld.log" "$D/slurmd.log" >&2
  stop
  exit 1
}

case $cmd in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
