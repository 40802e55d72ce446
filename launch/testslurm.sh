#!/usr/bin/env bash
# A real SLURM on this machine for tests and trials: munged, slurmctld and slurmd from
# Debian's packages, with their own configuration, state, spool, ports and munge key under DIR.
#   launch/testslurm.sh start DIR     # prints the SLURM_CONF to export
#   launch/testslurm.sh stop DIR      # stops the daemons, removes DIR
# One node (this host, CPUs = its cores), one partition; jobs run as root with
# proctrack/linuxproc (no cgroups needed) and srun --mpi=pmix available.
set -euo pipefail
usage="usage: launch/testslurm.sh start|stop DIR"
[ $# -eq 2 ] || { echo "$usage" >&2; exit 2; }
command=$1 dir=$2
stop() {
  for daemon in slurmd slurmctld; do
    [ -f "$dir/$daemon.pid" ] && kill "$(cat "$dir/$daemon.pid")" 2>/dev/null || true
  done
  [ -f "$dir/munge/munged.pid" ] && kill "$(cat "$dir/munge/munged.pid")" 2>/dev/null || true
  # Wait (up to 10 s) until they are gone, then make sure.
  for _ in $(seq 1 50); do
    alive=0
    for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
      [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && alive=1
    done
    [ $alive -eq 0 ] && break
    sleep 0.2
  done
  for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
    [ -f "$pidfile" ] && kill -9 "$(cat "$pidfile")" 2>/dev/null || true
  done
  rm -rf "$dir"
}
case "$command" in
  stop) stop; exit 0 ;;
  start) ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
[ "$(id -u)" -eq 0 ] || { echo "testslurm: error: starting slurmd needs root" >&2; exit 3; }
for tool in munged slurmctld slurmd sbatch; do
  command -v "$tool" >/dev/null || { echo "testslurm: error: $tool is missing: run launch/setup.sh (Debian packages slurmctld slurmd slurm-client munge)" >&2; exit 3; }
done
# The daemons outlive this script: they must not inherit any descriptor of our caller beyond
# 0–2 (a caller that waits for EOF on one — Foundation's Process does — would wait forever).
for fd in /proc/$$/fd/*; do
  fd=${fd##*/}
  [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-" 2>/dev/null || true
done
mkdir -p "$dir"/{state,spool,log,munge}
trap 'status=$?; [ $status -eq 0 ] || stop; exit $status' EXIT
dd if=/dev/urandom of="$dir/munge/munge.key" bs=1 count=1024 2>/dev/null
chmod 400 "$dir/munge/munge.key"
munged --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" --pid-file="$dir/munge/munged.pid" \
  --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/seed" -f </dev/null >"$dir/log/munged.out" 2>&1
# Ports nothing else here uses, derived from DIR so that two harnesses do not collide.
base=$(( 17000 + $(cksum <<<"$dir" | cut -d' ' -f1) % 2000 * 2 ))
host=$(hostname)
cat >"$dir/slurm.conf" <<CONF
ClusterName=ringsgd-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$base
SlurmdPort=$((base + 1))
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
KillWait=5
MinJobAge=600
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.txt
SwitchType=switch/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$dir/slurm.conf"
# The daemons must not hold our caller's stdout/stderr open (a test reading them would wait forever).
slurmctld -f "$SLURM_CONF" </dev/null >"$dir/log/slurmctld.out" 2>&1
slurmd -f "$SLURM_CONF" </dev/null >"$dir/log/slurmd.out" 2>&1
for _ in $(seq 1 100); do
  if sinfo -h -o %T 2>/dev/null | grep -q idle; then echo "$SLURM_CONF"; exit 0; fi
  sleep 0.2
done
echo "testslurm: error: the node did not become idle within 20 s; see $dir/log" >&2
exit 1
