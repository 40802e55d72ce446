#!/usr/bin/env bash
# Runs ringsgd across the hosts of an OpenMPI hostfile:
#   launch/hostfile.sh HOSTFILE NP [ringsgd arguments…]
# Hostfile lines look like "node01 slots=32". Every host needs the same checkout at the same
# path (a shared filesystem, or build on each), the packages of launch/setup.sh, and
# passwordless ssh from this one. TCP is used between hosts unless MPIRUN_ARGS says otherwise
# (e.g. MPIRUN_ARGS="--mca btl_tcp_if_include eth0").
set -euo pipefail
if [ $# -lt 2 ] || [ ! -f "$1" ] || ! [[ "$2" =~ ^[0-9]{1,6}$ ]] || [ "$2" -lt 1 ]; then
  echo "usage: launch/hostfile.sh HOSTFILE NP [ringsgd arguments…]  (HOSTFILE must exist; NP: number of ranks, ≥ 1)" >&2
  exit 2
fi
hostfile=$1 np=$2; shift 2
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=launch/run-ranks.sh
source "$root/launch/run-ranks.sh"
"$root/launch/build.sh"
args=(--hostfile "$hostfile" -np "$np" --map-by slot -x OPENBLAS_NUM_THREADS=1 -x SWIFT_BACKTRACE=enable=no)
[ "$(id -u)" -eq 0 ] && args+=(--allow-run-as-root)
# shellcheck disable=SC2086
run_ranks "${args[@]}" ${MPIRUN_ARGS:-} "$root/.build/release/ringsgd" "$@"
