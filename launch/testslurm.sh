#!/usr/bin/env bash
# A real SLURM on this machine for tests and trials: munged, slurmctld and slurmd from
# Debian's packages, with their own configuration, state, spool, ports and munge key under DIR.
#   launch/testslurm.sh start DIR                        # prints the SLURM_CONF to export
#   launch/testslurm.sh start DIR --nodes N --rate R     # N simulated nodes (N ≥ 2; 1 is the default)
#   launch/testslurm.sh stop DIR                         # stops the daemons, removes DIR (only one start made)
# Default: one node (this host, CPUs = its cores). With --nodes: N simulated hosts
# (launch/simhosts.sh: network namespaces on a bridge, links shaped to R), one slurmd in each
# with its own hostname (simnode1…N), NodeAddr and spool directory, slurmctld in the root
# namespace at the bridge's address — so `sbatch --nodes=2` places ranks on different hosts and
# their traffic crosses the shaped links. One partition; jobs run as root with
# proctrack/linuxproc (no cgroups needed) and srun --mpi=pmix available.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
usage="usage: launch/testslurm.sh start DIR [--nodes N --rate R] | stop DIR"
# Exit 3 only where this machine cannot run SLURM (no root, a package missing, no network
# namespaces): the tests skip on it. Any other failure to start exits 1 (usage: 2).
fail() { echo "testslurm: error: $*" >&2; exit 1; }
unavailable() { echo "testslurm: error: $*" >&2; exit 3; }
# shellcheck source=launch/simhosts.sh
source "$root/launch/simhosts.sh"
[ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }
command=$1 dir=$2
shift 2
# DIR goes into slurm.conf and SLURM_CONF, read by daemons and by sbatch from other working
# directories, and into unquoted word lists (the pid files): an absolute path without spaces.
# Empty (an unset variable, say) would have made /state, /spool, … at the root.
[ -n "$dir" ] || { echo "testslurm: error: DIR is empty; $usage" >&2; exit 2; }
[[ "$dir" != *[[:space:]]* ]] || { echo "testslurm: error: DIR '$dir' holds white space; give a path without it" >&2; exit 2; }
dir=$(realpath -m -- "$dir")
nodes=1 rate=none
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) nodes=${2-}; shift 2 || { echo "$usage" >&2; exit 2; } ;;
    --rate) rate=${2-}; shift 2 || { echo "$usage" >&2; exit 2; } ;;
    *) echo "testslurm: error: unknown option '$1'; $usage" >&2; exit 2 ;;
  esac
done
pidfiles() { ls "$dir"/slurmd*.pid "$dir/slurmctld.pid" "$dir/munge/munged.pid" 2>/dev/null || true; }
# The pids of the daemons still running: a pid file's pid only while that process is still one
# of ours by name — a daemon that died leaves its file, and its pid may since be another
# process's, which must not be signalled.
daemons() {
  local pidfile pid
  for pidfile in $(pidfiles); do
    pid=$(cat "$pidfile" 2>/dev/null || true)
    [[ "$pid" =~ ^[0-9]+$ ]] || continue
    case "$(cat "/proc/$pid/comm" 2>/dev/null || true)" in
      slurmd|slurmctld|munged) echo "$pid" ;;
    esac
  done
}
stop() {
  for pid in $(daemons); do kill "$pid" 2>/dev/null || true; done
  # Wait (up to 10 s) until they are gone, then make sure.
  for _ in $(seq 1 50); do
    [ -z "$(daemons)" ] && break
    sleep 0.2
  done
  for pid in $(daemons); do kill -9 "$pid" 2>/dev/null || true; done
  simhosts_destroy "$dir"
  rm -rf "$dir"   # start's own (its marker: checked by `stop`, the trap is set after it)
}
case "$command" in
  stop)
    [ -e "$dir/.testslurm" ] || [ ! -e "$dir" ] || { echo "testslurm: error: $dir was not made by 'launch/testslurm.sh start' (no $dir/.testslurm): nothing stopped or removed" >&2; exit 1; }
    stop; exit 0 ;;
  start) ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
# DIR is the harness's alone (stop removes it): a new or empty directory — checked before
# anything else, on machines that cannot run SLURM too.
if [ -e "$dir" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
  fail "$dir exists and is not empty; give a new or empty directory (launch/testslurm.sh stop removes it)"
fi
[[ "$nodes" =~ ^[0-9]+$ ]] && [ "$nodes" -ge 1 ] && [ "$nodes" -le 16 ] || fail "--nodes must be a whole number in 1…16, got '$nodes'"
nodes=$((10#$nodes))   # base 10: "08" is a bad octal number to shell arithmetic
[ "$rate" = none ] || [ "$nodes" -gt 1 ] || { echo "testslurm: error: --rate shapes the links between simulated nodes; give --nodes N (N ≥ 2) with it, or drop it" >&2; exit 2; }
simhosts_check_rate "$rate"
[ "$(id -u)" -eq 0 ] || unavailable "starting slurmd needs root"
for tool in munged slurmctld slurmd sbatch; do
  command -v "$tool" >/dev/null || unavailable "$tool is missing: run launch/setup.sh --with-slurm (Debian packages slurmctld slurmd slurm-client munge)"
done
# The daemons outlive this script: they must not inherit any descriptor of our caller beyond
# 0–2 (a caller that waits for EOF on one — Foundation's Process does — would wait forever).
for fd in /proc/$$/fd/*; do
  fd=${fd##*/}
  [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-" 2>/dev/null || true
done
mkdir -p "$dir"/{state,spool,log,munge}
touch "$dir/.testslurm"
# A failed start removes DIR (stop), but keeps the daemons' logs, and says where: they say why.
# The copy is made first and said last, errors ignored (set +e): a write to a closed terminal or
# a broken pipe must not end the trap before `stop` has run.
keep_logs() {
  local kept
  kept=$(mktemp -d /tmp/testslurm-logs.XXXXXX) || return 0
  cp -r "$dir/log" "$dir/munge/munged.log" "$dir/slurm.conf" "$kept/" 2>/dev/null
  echo "$kept"
}
trap 'status=$?; if [ $status -ne 0 ]; then set +e; kept=$(keep_logs); stop; [ -z "$kept" ] || echo "testslurm: the daemons'"'"' logs of this failed start are in $kept" >&2; fi; exit $status' EXIT
# Bash runs the EXIT trap with status 0 when a signal it has no trap for ends it: without these,
# Ctrl-C (or a closed terminal) during start left the daemons and namespaces running.
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
dd if=/dev/urandom of="$dir/munge/munge.key" bs=1 count=1024 2>/dev/null
chmod 400 "$dir/munge/munge.key"
munged --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" --pid-file="$dir/munge/munged.pid" \
  --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/seed" -f </dev/null >"$dir/log/munged.out" 2>&1
# Ports nothing else here uses, derived from DIR so that two harnesses do not collide.
base=$(( 17000 + $(cksum <<<"$dir" | cut -d' ' -f1) % 2000 * 2 ))
host=$(hostname)
controller=127.0.0.1
if [ "$nodes" -gt 1 ]; then
  (fail() { unavailable "$@"; }; simhosts_probe "$dir")   # its failures: no root, ip/tc or namespaces
  subnet=$(simhosts_pick_subnet)
  simhosts_create "sl$$" "$nodes" "$rate" "$subnet" "$dir"
  controller=$subnet.254
  node_lines=$(for i in $(seq 1 "$nodes"); do
    echo "NodeName=simnode$i NodeAddr=$subnet.$i CPUs=$(nproc) RealMemory=2000 State=UNKNOWN"
  done)
else
  node_lines="NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=2000 State=UNKNOWN"
fi
cat >"$dir/slurm.conf" <<CONF
ClusterName=ringsgd-test
SlurmctldHost=$host($controller)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$base
SlurmdPort=$((base + 1))
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
KillWait=5
SlurmdTimeout=10
MinJobAge=600
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.txt
SwitchType=switch/none
$node_lines
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$dir/slurm.conf"
# The daemons must not hold our caller's stdout/stderr open (a test reading them would wait forever).
slurmctld -f "$SLURM_CONF" </dev/null >"$dir/log/slurmctld.out" 2>&1
if [ "$nodes" -gt 1 ]; then
  # Each slurmd in its host's namespace, with the host's own hostname (a UTS namespace): it
  # finds its NodeName by hostname, as on a real node.
  # nsenter, not `ip netns exec`: the latter remounts /sys, hiding the cgroup filesystem
  # slurmd initialises. Each node also gets a private PMIx directory (a bind mount in its own
  # mount namespace over the one path mpi.conf names): the PMIx plugin names its per-step
  # directory by job and step alone, and nodes sharing one /tmp collide ("File exists").
  echo "PMIxCliTmpDirBase=$dir/pmix" >"$dir/mpi.conf"
  mkdir -p "$dir/pmix"
  for i in $(seq 1 "$nodes"); do
    mkdir -p "$dir/spool/simnode$i" "$dir/pmix-simnode$i"
    nsenter --net="/run/netns/sl$$h$i" unshare --uts --mount --propagation private /bin/sh -c \
      'mount --bind "$2" "$3" && hostname "$0" && exec slurmd -f "$1"' "simnode$i" "$SLURM_CONF" "$dir/pmix-simnode$i" "$dir/pmix" \
      </dev/null >"$dir/log/slurmd-simnode$i.out" 2>&1
  done
else
  mkdir -p "$dir/spool/$host"
  slurmd -f "$SLURM_CONF" </dev/null >"$dir/log/slurmd.out" 2>&1
fi
for _ in $(seq 1 150); do
  if [ "$(sinfo -h -N -o %T 2>/dev/null | grep -c idle)" -ge "$nodes" ]; then echo "$SLURM_CONF"; exit 0; fi
  sleep 0.2
done
fail "$nodes node(s) did not become idle within 30 s ($(sinfo -h -N -o '%N %T' 2>/dev/null | tr '\n' ' ')); the daemons' logs say why"
