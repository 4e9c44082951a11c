#!/bin/bash
# A real Slurm test on one machine: starts munged, slurmctld and slurmd
# (Debian's slurm-wlm and munge; every file under a temporary folder, the
# local host as one node of 2 CPUs), submits with submit.sh a small
# landscape as a 4-task job array and a sweep along t as a 3-task one, at
# once on one experiment, each with its merge as a dependent job; waits for
# them with deadlines, compares the merged plane.json and along.json with
# unsharded runs', and stops the daemons whatever happens.
#
#   scripts/slurm/test-local.sh MODECONN_BINARY EXPERIMENT_WITH_A_CURVE
#
# Exit status: 0 passed, 77 skipped (the reason is printed: packages not
# installed, daemons that cannot start here), anything else failed.
set -uo pipefail
SKIP=77
skip() { echo "SKIP slurm test: $*" >&2; exit $SKIP; }
fail() { echo "FAIL slurm test: $*" >&2; exit 1; }
[ $# -eq 2 ] || { echo "usage: $0 MODECONN_BINARY EXPERIMENT" >&2; exit 2; }
bin=$(realpath "$1") src=$(realpath "$2")
# Small runs, one thread each (the unsharded run uses the same).
small=(--threads 1 --train-subset 600 --test-subset 300)
landscape=(--grid 4 "${small[@]}")
sweep=(--points 5 "${small[@]}")
here=$(cd "$(dirname "$0")" && pwd)

for c in munged slurmctld slurmd sbatch squeue sinfo scontrol python3; do
    command -v "$c" >/dev/null 2>&1 ||
        skip "$c is not installed (Debian: apt-get install slurm-wlm munge)"
done
[ "$(id -u)" = 0 ] || skip "slurmd must run as root here (to start jobs); run as root"

T=$(mktemp -d /tmp/modeconn-slurm.XXXXXX)
chmod 700 "$T"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    [ -f "$T/munged.pid" ] && kill "$(cat "$T/munged.pid")" 2>/dev/null
    sleep 1
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
    [ -f "$T/munged.pid" ] && kill -9 "$(cat "$T/munged.pid")" 2>/dev/null
    if [ -n "${KEEP_SLURM_TEST:-}" ]; then echo "kept $T" >&2; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# Polls `$2...` every second until it succeeds or $1 seconds pass.
wait_for() {
    local limit=$1 start=$SECONDS
    shift
    until "$@"; do
        [ $((SECONDS - start)) -ge "$limit" ] && return 1
        sleep 1
    done
}

# munge: a fresh key and socket of our own.
dd if=/dev/urandom of="$T/munge.key" bs=1024 count=1 status=none
chmod 400 "$T/munge.key"
mkdir -m 700 "$T/munge"
munged --force --key-file="$T/munge.key" --socket="$T/munge/socket" \
    --pid-file="$T/munged.pid" --log-file="$T/munged.log" --seed-file="$T/munge.seed" \
    >"$T/munged.out" 2>&1 || skip "munged does not start here: $(tail -3 "$T/munged.out" "$T/munged.log" 2>/dev/null)"

# Two free ports, the local host as the only node.
port=$((20000 + RANDOM % 20000))
node=$(hostname -s)
mkdir -p "$T/ctld" "$T/spool" "$T/jobs"
cat >"$T/slurm.conf" <<CONF
ClusterName=modeconn-test
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$port
SlurmdPort=$((port + 1))
AuthType=auth/munge
AuthInfo=socket=$T/munge/socket
CredType=cred/munge
StateSaveLocation=$T/ctld
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd.pid
SlurmctldLogFile=$T/slurmctld.log
SlurmdLogFile=$T/slurmd.log
PlugStackConfig=$T/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=600
NodeName=$node NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=test Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
: >"$T/plugstack.conf"
export SLURM_CONF=$T/slurm.conf

slurmctld -D -i -f "$SLURM_CONF" >"$T/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -f "$SLURM_CONF" -N "$node" >"$T/slurmd.out" 2>&1 &
pids+=($!)
node_idle() { [ "$(sinfo -h -n "$node" -o %t 2>/dev/null)" = idle ]; }
if ! wait_for 60 node_idle; then
    skip "the one-node cluster did not come up within 60 s: $(tail -3 "$T/slurmctld.log" "$T/slurmd.log" "$T/slurmd.out" 2>/dev/null | tr '\n' ' ')"
fi
echo "slurm: $(date +%T) node $node idle, controller on port $port" >&2

# The same landscape and sweep, unsharded here and as job arrays on the cluster.
cp -r "$src" "$T/whole"
cp -r "$src" "$T/sharded"
for d in whole sharded; do rm -rf "$T/$d/shards" "$T/$d/landscape" "$T/$d/eval"; done
run() { MODECONN_QUIET=1 timeout 300 "$bin" "$@" --exp "$T/whole" >>"$T/whole.out" 2>&1; }
run landscape "${landscape[@]}" && run eval "${sweep[@]}" ||
    fail "the unsharded runs failed: $(tail -5 "$T/whole.out")"
echo "slurm: $(date +%T) submitting" >&2
submit() {
    (cd "$T/jobs" && MODECONN=$bin MODECONN_QUIET=1 SBATCH_ARGS="--chdir=$T/jobs" \
        SBATCH_MERGE_ARGS="--chdir=$T/jobs" "$here/submit.sh" "$@")
}
ids=$(submit landscape "$T/sharded" 4 "${landscape[@]}") || fail "sbatch refused the landscape: $ids"
ids2=$(submit sweep "$T/sharded" 3 "${sweep[@]}") || fail "sbatch refused the sweep: $ids2"
echo "slurm: landscape $ids; sweep $ids2" >&2
merges=("${ids##* }" "${ids2##* }")
finished() { [ -z "$(squeue -h -j "${merges[0]},${merges[1]}" 2>/dev/null)" ]; }
wait_for 300 finished || fail "the jobs did not finish within 300 s: $(squeue 2>&1)"
for m in "${merges[@]}"; do
    state=$(scontrol show job "$m" | grep -o 'JobState=[A-Z_]*')
    [ "$state" = JobState=COMPLETED ] ||
        fail "merge job $m ended in $state: $(tail -n 20 "$T"/jobs/*.out 2>/dev/null)"
done
for f in "$T"/jobs/modeconn-landscape-*.out "$T"/jobs/modeconn-sweep-*.out; do
    grep -q "shard" "$f" || fail "$f does not report a shard: $(cat "$f")"
done
[ "$(ls "$T"/jobs/modeconn-landscape-*.out | wc -l)" = 4 ] || fail "not 4 landscape tasks: $(ls "$T/jobs")"

python3 - "$T/whole" "$T/sharded" <<'PY' || fail "a merged result differs from the unsharded one"
import json, os, sys
for rel in ("landscape/plane.json", "eval/along.json"):
    a, b = (json.load(open(os.path.join(d, rel))) for d in sys.argv[1:])
    for f in (a, b):
        f.pop("seconds", None)
        f.get("meta", {}).pop("seconds", None)
    diff = [k for k in set(a) | set(b) if a.get(k) != b.get(k)]
    if diff:
        sys.exit(f"{rel}: fields that differ: {diff}")
PY
cmp -s "$T/whole/eval/along.csv" "$T/sharded/eval/along.csv" || fail "along.csv differs"
[ ! -e "$T/sharded/shards" ] || fail "the merges left $T/sharded/shards behind"
echo "PASS slurm test: a 4-task landscape array and a 3-task sweep array, each merged by a dependent job, equal the unsharded runs" >&2
