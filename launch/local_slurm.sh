#!/usr/bin/env bash
# A SLURM cluster on this one machine, to try launch/slurm.sbatch without a cluster (the tests use it):
#
#   launch/local_slurm.sh start [STATE_DIR]    prints `export SLURM_CONF=...`; sbatch/squeue/scancel then use it
#   launch/local_slurm.sh stop  [STATE_DIR]    cancels its jobs and stops its daemons
#
# It installs nothing: it needs Debian's packages (`apt-get install slurmctld slurmd slurm-client munge`)
# and root (slurmd starts jobs as their users). Everything it writes is under STATE_DIR (default
# $GRADUS_SLURM_DIR or /tmp/gradus-slurm): a munge key and munged on its own socket, a minimal
# slurm.conf, and slurmctld + slurmd with their state, spool and logs. No systemd, no cgroups:
# processes are tracked through /proc (proctrack/linuxproc) and tasks are not bound (task/none).
# The node is this host (`hostname -s`) with its nproc CPUs. GRADUS_SLURM_NODES=2 adds a second
# node on the same host (`<host>-2`, its own slurmd and port, the same CPUs counted again), so a
# two-machine stage's `srun --nodes=2` runs here as it would on two machines. GRADUS_SLURM_PORT
# (default 6817) is slurmctld's port, the slurmds take the next ones: two clusters on one machine
# need two ports.
set -euo pipefail

action=${1:?usage: launch/local_slurm.sh start|stop [STATE_DIR]}
dir=${2:-${GRADUS_SLURM_DIR:-/tmp/gradus-slurm}}
port=${GRADUS_SLURM_PORT:-6817}
host=$(hostname -s)
nodes=("$host")
for index in $(seq 2 "${GRADUS_SLURM_NODES:-1}"); do nodes+=("$host-$index"); done
export SLURM_CONF=$dir/slurm.conf

stop_daemon() {  # stop_daemon PIDFILE: TERM, then KILL after 10 s
    local pid
    [[ -f $1 ]] || return 0
    pid=$(cat "$1")
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
}

if [[ $action == stop ]]; then
    if [[ -f $dir/slurmctld.pid ]]; then
        jobs=$(squeue --noheader --format=%i 2>/dev/null || true)
        if [[ -n $jobs ]]; then
            # shellcheck disable=SC2086  # one job id per word
            scancel $jobs 2>/dev/null || true
            for _ in $(seq 60); do [[ -z $(squeue --noheader --format=%i 2>/dev/null) ]] && break; sleep 0.5; done
        fi
    fi
    for pidfile in "$dir"/slurmd-*.pid; do stop_daemon "$pidfile"; done
    stop_daemon "$dir/slurmctld.pid"
    stop_daemon "$dir/munged.pid"
    exit 0
fi
[[ $action == start ]] || { echo "usage: launch/local_slurm.sh start|stop [STATE_DIR]" >&2; exit 2; }

for program in munged slurmctld slurmd sinfo; do
    command -v "$program" >/dev/null || { echo "local_slurm: $program not found (apt-get install slurmctld slurmd slurm-client munge)" >&2; exit 1; }
done
[[ $(id -u) == 0 ]] || { echo "local_slurm: slurmd must run as root" >&2; exit 1; }

for node in "${nodes[@]}"; do mkdir -p "$dir/spool/$node"; done
mkdir -p "$dir/ctld"
chmod 700 "$dir"
if [[ ! -f $dir/munge.key ]]; then
    dd if=/dev/urandom of="$dir/munge.key" bs=1024 count=1 status=none
    chmod 400 "$dir/munge.key"
fi
munged --force --key-file="$dir/munge.key" --socket="$dir/munge.socket" --pid-file="$dir/munged.pid" \
    --log-file="$dir/munged.log" --seed-file="$dir/munged.seed"

cat > "$SLURM_CONF" <<EOF
ClusterName=gradus-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/ctld
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd-%n.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerParameters=sched_interval=2
ReturnToService=2
# Finished jobs leave squeue after 5 s; a job's processes get 30 s between SIGTERM and SIGKILL.
MinJobAge=5
KillWait=30
# Jobs may requeue themselves (launch/slurm.sbatch does before its time limit).
JobRequeue=1
EOF
for index in "${!nodes[@]}"; do
    echo "NodeName=${nodes[$index]} NodeHostname=$host NodeAddr=127.0.0.1 Port=$((port + 1 + index)) CPUs=$(nproc) State=UNKNOWN" >> "$SLURM_CONF"
done
echo "PartitionName=local Nodes=$(IFS=,; echo "${nodes[*]}") Default=YES MaxTime=INFINITE State=UP" >> "$SLURM_CONF"

slurmctld -c -f "$SLURM_CONF"
for node in "${nodes[@]}"; do slurmd -f "$SLURM_CONF" -N "$node"; done
for _ in $(seq 150); do
    state=$(sinfo --noheader --format=%T 2>/dev/null | sort -u | tr '\n' ' ' || true)
    if [[ $state == "idle " ]]; then
        echo "export SLURM_CONF=$SLURM_CONF"
        exit 0
    fi
    sleep 0.2
done
echo "local_slurm: the nodes did not come up within 30 s (node state: ${state:-no answer}); see $dir/*.log" >&2
exit 1
