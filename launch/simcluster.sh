#!/usr/bin/env bash
# A cluster of simulated hosts on this machine, and ringsgd across it under mpirun:
#   launch/simcluster.sh --hosts H --ranks-per-host K --rate R -- [ringsgd arguments…]
#   launch/simcluster.sh --hosts 4 --ranks-per-host 1 --rate 1gbit -- train --config configs/synthetic-large.yaml
#
# Each host is a Linux network namespace with one veth link to a bridge in the root
# namespace (launch/simhosts.sh); the bridge has an address of its own, through which the
# OpenMPI daemons in the namespaces reach mpirun. Every host link is shaped in both directions
# with a token bucket (tc tbf: this kernel has no netem, so rates, not delays). mpirun reaches a
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
#   --local-dir PATH     a node-local disk: each host sees a directory of its own at PATH
#                        (a run directory under it is then not shared between hosts); the
#                        disks stay, as PATH/.simulated-disk-h1 … from this machine
# Environment: MPIRUN_ARGS (extra mpirun options), SIMCLUSTER_KEEP=1 (leave the namespaces up
# after the run, to inspect them; remove with `ip netns del` and `ip link del`),
# RINGSGD_BINARY (run this ringsgd instead of building and running .build/release/ringsgd: two
# builds measured side by side, alternating).
#
# Everything created — namespaces, veths, bridge, qdiscs, /dev/shm directories, the agent —
# is removed on exit, on error and on Ctrl-C. Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
fail() { echo "simcluster: error: $*" >&2; exit 2; }
# shellcheck source=launch/simhosts.sh
source "$root/launch/simhosts.sh"
usage="usage: launch/simcluster.sh --hosts H [--ranks-per-host K] --rate R [--subnet A.B.C] [--local-dir PATH] -- [ringsgd arguments…]"

hosts="" per_host=1 rate="" subnet="" local_dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --hosts) hosts=${2-}; shift 2 || fail "--hosts needs a value; $usage" ;;
    --ranks-per-host) per_host=${2-}; shift 2 || fail "--ranks-per-host needs a value; $usage" ;;
    --rate) rate=${2-}; shift 2 || fail "--rate needs a value; $usage" ;;
    --subnet) subnet=${2-}; shift 2 || fail "--subnet needs a value; $usage" ;;
    --local-dir) local_dir=${2-}; shift 2 || fail "--local-dir needs a value; $usage" ;;
    --) shift; break ;;
    -h|--help) sed -n '2,/^[^#]/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) fail "unknown option '$1'; $usage" ;;
  esac
done
[[ "$hosts" =~ ^[0-9]+$ ]] && [ "$hosts" -ge 1 ] && [ "$hosts" -le 64 ] \
  || fail "--hosts must be a whole number in 1…64, got '${hosts}'; $usage"
hosts=$((10#$hosts))   # base 10: shell arithmetic reads "08" as a bad octal number
IFS=, read -r -a slots <<<"$per_host"
for k in "${slots[@]}"; do
  [[ "$k" =~ ^[0-9]+$ ]] && [ "$k" -ge 1 ] && [ "$k" -le 64 ] \
    || fail "--ranks-per-host must be a whole number in 1…64 (or one per host, comma-separated), got '${per_host}'"
done
for i in "${!slots[@]}"; do slots[i]=$((10#${slots[i]})); done
if [ "${#slots[@]}" -eq 1 ]; then
  for _ in $(seq 2 "$hosts"); do slots+=("${slots[0]}"); done
elif [ "${#slots[@]}" -ne "$hosts" ]; then
  fail "--ranks-per-host lists ${#slots[@]} counts for $hosts hosts; give one count, or one per host"
fi
ranks=0; most=0
for k in "${slots[@]}"; do ranks=$((ranks + k)); [ "$k" -gt "$most" ] && most=$k; done
simhosts_check_rate "$rate"
# Another build to run (absolute: mpirun would look a bare name up on PATH), checked before any host exists.
binary=""
if [ -n "${RINGSGD_BINARY:-}" ]; then
  binary=$(realpath -e -- "$RINGSGD_BINARY" 2>/dev/null) && [ -f "$binary" ] && [ -x "$binary" ] \
    || fail "RINGSGD_BINARY '$RINGSGD_BINARY' is not an executable file; give the path of a ringsgd build, or unset it"
fi
[ $# -gt 0 ] || fail "nothing to run: put ringsgd's arguments after --; $usage"

# Names unique to this run (interface names are at most 15 characters).
tag="rs$$"
work=$(mktemp -d /tmp/simcluster.XXXXXX)
teardown() {
  local status=$?
  trap - EXIT INT TERM
  if [ "${SIMCLUSTER_KEEP:-0}" = 1 ]; then
    echo "simcluster: kept what $work/simhosts lists (SIMCLUSTER_KEEP=1); remove with ip netns del and ip link del" >&2
  else
    simhosts_destroy "$work"
    rm -rf "$work"
  fi
  exit "$status"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

simhosts_probe "$work"
[ -n "$subnet" ] || subnet=$(simhosts_pick_subnet)
[ -z "$local_dir" ] || [[ "$local_dir" == /* ]] || fail "--local-dir must be an absolute path, got '$local_dir'"
[[ "$subnet" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || fail "--subnet must be the first three numbers of a /24, e.g. 10.213.7, got '$subnet'"

simhosts_create "$tag" "$hosts" "$rate" "$subnet" "$work"
: >"$work/hostfile"
for i in $(seq 1 "$hosts"); do echo "$subnet.$i slots=${slots[$((i - 1))]}" >>"$work/hostfile"; done
simhosts_agent "$work" "$subnet" "$tag" "$hosts" "$local_dir"

echo "simcluster: $hosts hosts × ${per_host} ranks on $subnet.0/24, links shaped to $rate" >&2
if [ -z "$binary" ]; then "$root/launch/build.sh"; binary="$root/.build/release/ringsgd"; fi
# shellcheck source=launch/run-ranks.sh
source "$root/launch/run-ranks.sh"
simhosts_mca "$work" "$subnet" "$most"
args=(--hostfile "$work/hostfile" -np "$ranks" --map-by slot --bind-to none "${SIMHOSTS_MCA[@]}"
      -x OPENBLAS_NUM_THREADS=1 -x SWIFT_BACKTRACE=enable=no -x SIMCLUSTER_RATE="$rate" -x SIMCLUSTER_HOSTS="$hosts")
[ "$(id -u)" -eq 0 ] && args+=(--allow-run-as-root)
set +e
run_ranks "${args[@]}" "${mpirun_extra[@]}" "$binary" "$@"
status=$?
set -e
exit "$status"
