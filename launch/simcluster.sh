#!/usr/bin/env bash
# A cluster of simulated hosts on this machine, and ringsgd across it under mpirun:
#   launch/simcluster.sh --hosts H --ranks-per-host K --rate R -- [ringsgd arguments…]
#   launch/simcluster.sh --hosts 4 --ranks-per-host 1 --rate 1gbit -- train --config configs/synthetic-large.yaml
#
# Each host is a Linux network namespace with one veth link to a bridge in the root
# namespace; the bridge has an address of its own, through which the OpenMPI daemons in the
# namespaces reach mpirun. Every host link is shaped in both directions with a token bucket
# (tc tbf: this kernel has no netem, so rates, not delays). mpirun reaches a host through a
# small agent (--mca plm_rsh_agent) that does what ssh would: runs the command OpenMPI
# passes, inside that host's namespace. Ranks talk TCP between hosts (and shared memory
# within one, each host with its own backing directory).
#
# Options:
#   --hosts H            simulated hosts (1 … 64)
#   --ranks-per-host K   ranks on each host (default 1), or one count per host (2,1: uneven hosts)
#   --rate R             each host's link rate in tc's units (100mbit, 1gbit, 10gbit, …) or
#                        "none" for an unshaped veth
#   --subnet A.B.C       the private /24 to use (default: the first of 10.213.1 … 10.213.250
#                        that no route or address here uses)
# Environment: MPIRUN_ARGS (extra mpirun options), SIMCLUSTER_KEEP=1 (leave the namespaces up
# after the run, to inspect them; remove with `ip netns del` and `ip link del`).
#
# Everything created — namespaces, veths, bridge, qdiscs, /dev/shm directories, the agent —
# is removed on exit, on error and on Ctrl-C. Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
fail() { echo "simcluster: error: $*" >&2; exit 2; }
usage="usage: launch/simcluster.sh --hosts H [--ranks-per-host K] --rate R [--subnet A.B.C] -- [ringsgd arguments…]"

hosts="" per_host=1 rate="" subnet=""
while [ $# -gt 0 ]; do
  case "$1" in
    --hosts) hosts=${2-}; shift 2 || fail "--hosts needs a value; $usage" ;;
    --ranks-per-host) per_host=${2-}; shift 2 || fail "--ranks-per-host needs a value; $usage" ;;
    --rate) rate=${2-}; shift 2 || fail "--rate needs a value; $usage" ;;
    --subnet) subnet=${2-}; shift 2 || fail "--subnet needs a value; $usage" ;;
    --) shift; break ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) fail "unknown option '$1'; $usage" ;;
  esac
done
[[ "$hosts" =~ ^[0-9]+$ ]] && [ "$hosts" -ge 1 ] && [ "$hosts" -le 64 ] \
  || fail "--hosts must be a whole number in 1…64, got '${hosts}'; $usage"
IFS=, read -r -a slots <<<"$per_host"
for k in "${slots[@]}"; do
  [[ "$k" =~ ^[0-9]+$ ]] && [ "$k" -ge 1 ] && [ "$k" -le 64 ] \
    || fail "--ranks-per-host must be a whole number in 1…64 (or one per host, comma-separated), got '${per_host}'"
done
if [ "${#slots[@]}" -eq 1 ]; then
  for _ in $(seq 2 "$hosts"); do slots+=("${slots[0]}"); done
elif [ "${#slots[@]}" -ne "$hosts" ]; then
  fail "--ranks-per-host lists ${#slots[@]} counts for $hosts hosts; give one count, or one per host"
fi
ranks=0; most=0
for k in "${slots[@]}"; do ranks=$((ranks + k)); [ "$k" -gt "$most" ] && most=$k; done
[ -n "$rate" ] || fail "--rate is required (e.g. 1gbit, 10gbit, or none); $usage"
if [ "$rate" != none ] && ! [[ "$rate" =~ ^[0-9]+(\.[0-9]+)?(bit|kbit|mbit|gbit|tbit|bps|kbps|mbps|gbps|tbps)$ ]]; then
  fail "--rate '$rate' is not a rate tc accepts: a number and a unit such as 100mbit, 1gbit, 10gbit (or none)"
fi
[ $# -gt 0 ] || fail "nothing to run: put ringsgd's arguments after --; $usage"
[ "$(id -u)" -eq 0 ] || fail "creating network namespaces needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN); run as root"
command -v ip >/dev/null && command -v tc >/dev/null || fail "ip and tc are missing: run launch/setup.sh (Debian package iproute2)"

# Names unique to this run (interface names are at most 15 characters).
tag="rs$$"
bridge="${tag}br"
work=$(mktemp -d /tmp/simcluster.XXXXXX)
namespaces=()
teardown() {
  local status=$?
  trap - EXIT INT TERM
  if [ "${SIMCLUSTER_KEEP:-0}" = 1 ]; then
    echo "simcluster: kept namespaces ${namespaces[*]:-} and bridge $bridge (SIMCLUSTER_KEEP=1)" >&2
  else
    for ns in "${namespaces[@]}"; do
      # Nothing may outlive its host: kill what still runs inside, then delete the namespace
      # (which deletes its end of the veth pair, and with it the pair and their qdiscs).
      pids=$(ip netns pids "$ns" 2>/dev/null || true)
      [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
      ip netns del "$ns" 2>/dev/null || true
      rm -rf "/dev/shm/$ns"
    done
    for i in $(seq 1 "${#namespaces[@]}"); do ip link del "${tag}v$i" 2>/dev/null || true; done
    ip link del "$bridge" 2>/dev/null || true
  fi
  rm -rf "$work"
  exit "$status"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

probe="${tag}probe"
ip netns add "$probe" 2>"$work/probe.err" \
  || fail "cannot create network namespaces here ($(head -n1 "$work/probe.err")); the simulated cluster needs root with CAP_SYS_ADMIN (not available in an unprivileged container)"
ip netns del "$probe"

if [ -z "$subnet" ]; then
  for c in $(seq 1 250); do
    if [ -z "$(ip -4 route show to match "10.213.$c.1" | grep -v '^default')" ] && ! ip -4 addr | grep -q "inet 10\.213\.$c\."; then
      subnet="10.213.$c"; break
    fi
  done
  [ -n "$subnet" ] || fail "no free /24 in 10.213.1…250; pass --subnet A.B.C"
fi
[[ "$subnet" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || fail "--subnet must be the first three numbers of a /24, e.g. 10.213.7, got '$subnet'"

# tbf's bucket must hold at least one (GSO) packet and a tick's worth of tokens; 1/100 s of
# the rate, at least 256 KiB.
tbf() {
  local dev=$1; shift
  [ "$rate" = none ] && return 0
  local bits bytes burst
  bits=$(awk -v r="$rate" 'BEGIN { n = r + 0; u = substr(r, length(n "") + 1);
    m["bit"]=1; m["kbit"]=1e3; m["mbit"]=1e6; m["gbit"]=1e9; m["tbit"]=1e12;
    m["bps"]=8; m["kbps"]=8e3; m["mbps"]=8e6; m["gbps"]=8e9; m["tbps"]=8e12; printf "%.0f", n * m[u] }')
  bytes=$((bits / 8 / 100))
  burst=$((bytes > 262144 ? bytes : 262144))
  "$@" tc qdisc add dev "$dev" root tbf rate "$rate" burst "$burst" latency 100ms 2>"$work/tc.err" \
    || fail "tc refused rate '$rate': $(head -n1 "$work/tc.err")"
}

ip link add "$bridge" type bridge
ip addr add "$subnet.254/24" dev "$bridge"
ip link set "$bridge" up
: >"$work/hostfile"
: >"$work/hosts.map"
for i in $(seq 1 "$hosts"); do
  ns="${tag}h$i" veth="${tag}v$i"
  namespaces+=("$ns")
  ip netns add "$ns"
  ip link add "$veth" type veth peer name "${tag}p$i"
  ip link set "${tag}p$i" netns "$ns"
  ip link set "$veth" master "$bridge" up
  ip -n "$ns" link set "${tag}p$i" name eth0
  ip -n "$ns" addr add "$subnet.$i/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  tbf eth0 ip netns exec "$ns"    # the host's uplink
  tbf "$veth"                     # and its downlink
  mkdir -p "/dev/shm/$ns"
  echo "$subnet.$i slots=${slots[$((i - 1))]}" >>"$work/hostfile"
  echo "$subnet.$i $ns" >>"$work/hosts.map"
done

# The agent mpirun runs instead of ssh: skip ssh-style options, find the host's namespace,
# run OpenMPI's command line there through a shell (as sshd would). Each host also gets what
# a real host has of its own: a hostname (a UTS namespace), a temporary directory (OpenMPI's
# session directory and PMIx's store are named after the hostname and would collide between
# daemons: "ORTE_ERROR_LOG … session_dir.c", crashes at start-up) and a shared-memory
# directory (vader's segments would collide too).
cat >"$work/agent" <<EOF
#!/usr/bin/env bash
while [ \$# -gt 0 ] && [[ "\$1" == -* ]]; do shift; done
host=\$1; shift
ns=\$(awk -v h="\$host" '\$1 == h { print \$2 }' "$work/hosts.map")
[ -n "\$ns" ] || { echo "simcluster agent: unknown host \$host" >&2; exit 255; }
export OMPI_MCA_btl_vader_backing_directory=/dev/shm/\$ns TMPDIR=$work/tmp-\$ns
mkdir -p "\$TMPDIR"
exec ip netns exec "\$ns" unshare --uts /bin/sh -c 'hostname "\$0" && exec /bin/sh -c "\$1"' "\$ns" "\$*"
EOF
chmod +x "$work/agent"

echo "simcluster: $hosts hosts × ${per_host} ranks on $subnet.0/24, links shaped to $rate" >&2
"$root/launch/build.sh"
# shellcheck source=launch/run-ranks.sh
source "$root/launch/run-ranks.sh"
btl="tcp,self"
[ "$most" -gt 1 ] && btl="tcp,vader,self"
args=(--hostfile "$work/hostfile" -np "$ranks" --map-by slot --bind-to none
      --mca plm_rsh_agent "$work/agent" --mca btl "$btl"
      --mca btl_tcp_if_include "$subnet.0/24" --mca oob_tcp_if_include "$subnet.0/24"
      --mca mpi_yield_when_idle 1
      -x OPENBLAS_NUM_THREADS=1 -x SWIFT_BACKTRACE=enable=no -x SIMCLUSTER_RATE="$rate" -x SIMCLUSTER_HOSTS="$hosts")
[ "$(id -u)" -eq 0 ] && args+=(--allow-run-as-root)
set +e
# shellcheck disable=SC2086
run_ranks "${args[@]}" ${MPIRUN_ARGS:-} "$root/.build/release/ringsgd" "$@"
status=$?
set -e
exit "$status"
