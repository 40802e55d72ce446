# Simulated hosts on this machine: Linux network namespaces, each with one veth link to a
# bridge in the root namespace (which has an address of its own), every link shaped in both
# directions with a token bucket (tc tbf: this kernel has no netem, so rates, not delays).
# Sourced (not run) by launch/simcluster.sh, which runs mpirun across the hosts, and by
# launch/testslurm.sh, which runs one slurmd in each. The caller defines fail().
#
#   simhosts_check_rate RATE                 RATE is tc's (100mbit, 1gbit, …) or "none"
#   simhosts_probe WORK                      fails, saying why, where namespaces cannot be made
#   simhosts_pick_subnet                     prints the first free 10.213.C (C in 1…250)
#   simhosts_create TAG HOSTS RATE SUBNET WORK
#       bridge TAGbr at SUBNET.254; host i is namespace TAGhi at SUBNET.i with eth0;
#       records what it made in WORK/simhosts (for simhosts_destroy)
#   simhosts_agent WORK SUBNET TAG HOSTS [LOCAL_DIR]
#       writes WORK/agent (what mpirun runs instead of ssh: --mca plm_rsh_agent) and
#       WORK/hosts.map; with LOCAL_DIR every host sees a directory of its own at that path
#   simhosts_mca WORK SUBNET MOST            sets the array SIMHOSTS_MCA to mpirun's options for
#                                            these hosts (the agent, TCP on SUBNET, shared memory
#                                            too when a host runs MOST > 1 ranks)
#   simhosts_kill WORK                       kills what runs inside the namespaces
#   simhosts_destroy WORK                    kills what runs inside the namespaces, deletes
#                                            them, their veths, the bridge and /dev/shm/NS
#                                            (idempotent; safe on a partial creation)

simhosts_check_rate() {
  local rate=$1
  [ -n "$rate" ] || fail "--rate is required (e.g. 1gbit, 10gbit, or none)"
  if [ "$rate" != none ] && ! [[ "$rate" =~ ^[0-9]+(\.[0-9]+)?(bit|kbit|mbit|gbit|tbit|bps|kbps|mbps|gbps|tbps)$ ]]; then
    fail "--rate '$rate' is not a rate tc accepts: a number and a unit such as 100mbit, 1gbit, 10gbit (or none)"
  fi
}

simhosts_probe() {
  local work=$1 probe="rsprobe$$"
  [ "$(id -u)" -eq 0 ] || fail "creating network namespaces needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN); run as root"
  command -v ip >/dev/null && command -v tc >/dev/null || fail "ip and tc are missing: run launch/setup.sh (Debian package iproute2)"
  ip netns add "$probe" 2>"$work/probe.err" \
    || fail "cannot create network namespaces here ($(head -n1 "$work/probe.err")); simulated hosts need root with CAP_SYS_ADMIN (not available in an unprivileged container)"
  ip netns del "$probe"
}

simhosts_pick_subnet() {
  local c
  for c in $(seq 1 250); do
    if [ -z "$(ip -4 route show to match "10.213.$c.1" | grep -v '^default')" ] && ! ip -4 addr | grep -q "inet 10\.213\.$c\."; then
      echo "10.213.$c"; return 0
    fi
  done
  fail "no free /24 in 10.213.1…250 (simulated clusters left by killed runs? 'ip netns list' shows them); remove them, or pass launch/simcluster.sh --subnet A.B.C"
}

# tbf's bucket must hold at least one (GSO) packet and a tick's worth of tokens; 1/100 s of
# the rate, at least 256 KiB.
simhosts_shape() {
  local rate=$1 work=$2 dev=$3; shift 3
  [ "$rate" = none ] && return 0
  local bits bytes burst
  # The unit is what follows the number as written ("10.0gbit", "010gbit"), not as awk prints it.
  bits=$(awk -v r="$rate" 'BEGIN { n = r + 0; u = r; sub(/^[0-9.]+/, "", u);
    m["bit"]=1; m["kbit"]=1e3; m["mbit"]=1e6; m["gbit"]=1e9; m["tbit"]=1e12;
    m["bps"]=8; m["kbps"]=8e3; m["mbps"]=8e6; m["gbps"]=8e9; m["tbps"]=8e12; printf "%.0f", n * m[u] }')
  bytes=$((bits / 8 / 100))
  burst=$((bytes > 262144 ? bytes : 262144))
  "$@" tc qdisc add dev "$dev" root tbf rate "$rate" burst "$burst" latency 100ms 2>"$work/tc.err" \
    || fail "tc refused rate '$rate': $(head -n1 "$work/tc.err")"
}

simhosts_create() {
  local tag=$1 hosts=$2 rate=$3 subnet=$4 work=$5 i ns veth
  local bridge="${tag}br"
  # Each object is recorded before it is made: a signal that lands between the two runs the
  # trap's simhosts_destroy, which skips what does not exist but cannot remove what it never
  # heard of.
  : >"$work/simhosts"
  echo "link $bridge" >>"$work/simhosts"
  ip link add "$bridge" type bridge
  ip addr add "$subnet.254/24" dev "$bridge"
  ip link set "$bridge" up
  for i in $(seq 1 "$hosts"); do
    ns="${tag}h$i" veth="${tag}v$i"
    echo "ns $ns" >>"$work/simhosts"
    ip netns add "$ns"
    echo "link $veth" >>"$work/simhosts"
    ip link add "$veth" type veth peer name "${tag}p$i"
    ip link set "${tag}p$i" netns "$ns"
    ip link set "$veth" master "$bridge" up
    ip -n "$ns" link set "${tag}p$i" name eth0
    ip -n "$ns" addr add "$subnet.$i/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    simhosts_shape "$rate" "$work" eth0 ip netns exec "$ns"   # the host's uplink
    simhosts_shape "$rate" "$work" "$veth"                    # and its downlink
    mkdir -p "/dev/shm/$ns"
  done
}

# The agent mpirun runs instead of ssh: skip ssh-style options, find the host's namespace,
# run OpenMPI's command line there through a shell (as sshd would). Each host also gets what
# a real host has of its own: a hostname (a UTS namespace), a temporary directory (OpenMPI's
# session directory and PMIx's store are named after the hostname and would collide between
# daemons: "ORTE_ERROR_LOG … session_dir.c", crashes at start-up), a shared-memory directory
# (vader's segments would collide too) and, with LOCAL_DIR, a node-local disk: its own
# LOCAL_DIR/.simulated-disk-hI bind-mounted at LOCAL_DIR in a mount namespace of its own, so
# that every host sees the same path with different contents. The disks stay after the hosts
# are gone (a later run on the same LOCAL_DIR finds its checkpoints); from this machine they
# are the .simulated-disk-h* directories of LOCAL_DIR.
simhosts_agent() {
  local work=$1 subnet=$2 tag=$3 hosts=$4 local_dir=${5:-} i
  : >"$work/hosts.map"
  [ -z "$local_dir" ] || mkdir -p "$local_dir"
  for i in $(seq 1 "$hosts"); do
    [ -z "$local_dir" ] || mkdir -p "$local_dir/.simulated-disk-h$i"
    echo "$subnet.$i ${tag}h$i" >>"$work/hosts.map"
  done
  {
    echo '#!/usr/bin/env bash'
    echo 'while [ $# -gt 0 ] && [[ "$1" == -* ]]; do shift; done'
    echo 'host=$1; shift'
    echo "ns=\$(awk -v h=\"\$host\" '\$1 == h { print \$2 }' \"$work/hosts.map\")"
    echo '[ -n "$ns" ] || { echo "simcluster agent: unknown host $host" >&2; exit 255; }'
    echo "export OMPI_MCA_btl_vader_backing_directory=/dev/shm/\$ns TMPDIR=$work/tmp-\$ns"
    echo 'mkdir -p "$TMPDIR"'
    printf 'local_dir=%q\n' "$local_dir"
    echo 'disk="$local_dir/.simulated-disk-h${ns##*h}"   # host i of namespace TAGhi'

    # shellcheck disable=SC2016
    echo 'exec ip netns exec "$ns" unshare --uts --mount /bin/sh -c '"'"'hostname "$0" && { [ -z "$2" ] || mount --bind "$1" "$2"; } && exec /bin/sh -c "$3"'"'"' "$ns" "$disk" "$local_dir" "$*"'
  } >"$work/agent"
  chmod +x "$work/agent"
}

simhosts_mca() {
  local btl="tcp,self"
  if [ "$3" -gt 1 ]; then btl="tcp,vader,self"; fi
  SIMHOSTS_MCA=(--mca plm_rsh_agent "$1/agent" --mca btl "$btl"
                --mca btl_tcp_if_include "$2.0/24" --mca oob_tcp_if_include "$2.0/24"
                --mca mpi_yield_when_idle 1)
}

simhosts_kill() {
  local work=$1 kind name pids
  [ -f "$work/simhosts" ] || return 0
  while read -r kind name; do
    [ "$kind" = ns ] || continue
    pids=$(ip netns pids "$name" 2>/dev/null || true)
    [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
  done <"$work/simhosts"
}

simhosts_destroy() {
  local work=$1 kind name
  [ -f "$work/simhosts" ] || return 0
  # Nothing may outlive its host: kill what still runs inside, then delete the namespace
  # (which deletes its end of the veth pair, and with it the pair and their qdiscs).
  simhosts_kill "$work"
  while read -r kind name; do
    [ "$kind" = ns ] || continue
    ip netns del "$name" 2>/dev/null || true
    rm -rf "/dev/shm/$name"
  done <"$work/simhosts"
  while read -r kind name; do
    [ "$kind" = link ] && ip link del "$name" 2>/dev/null || true
  done <"$work/simhosts"
  rm -f "$work/simhosts"
}
