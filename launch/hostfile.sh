#!/usr/bin/env bash
# Runs ringsgd across the hosts of an OpenMPI hostfile:
#   launch/hostfile.sh HOSTFILE NP [ringsgd arguments…]
# Hostfile lines look like "node01 slots=32". Every host needs the same checkout at the same
# path (a shared filesystem, or build on each), the packages of launch/setup.sh, and
# passwordless ssh from this one. TCP is used between hosts unless MPIRUN_ARGS says otherwise
# (e.g. MPIRUN_ARGS="--mca btl_tcp_if_include eth0").
set -euo pipefail
usage="usage: launch/hostfile.sh HOSTFILE NP COMMAND [ringsgd arguments…]  (NP: number of ranks, ≥ 1)"
case "${1-}" in -h|--help) echo "$usage"; exit 0 ;; esac
if [ $# -lt 2 ]; then echo "$usage" >&2; exit 2; fi
if [ ! -f "$1" ]; then echo "launch/hostfile.sh: error: the hostfile '$1' does not exist; $usage" >&2; exit 2; fi
if ! [[ "$2" =~ ^[0-9]{1,6}$ ]] || [ "$2" -lt 1 ]; then
  echo "launch/hostfile.sh: error: NP '$2' is not a number of ranks ≥ 1; $usage" >&2
  exit 2
fi
if [ $# -lt 3 ]; then echo "launch/hostfile.sh: error: no ringsgd command after NP; $usage" >&2; exit 2; fi
hostfile=$1 np=$2; shift 2
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=launch/run-ranks.sh
source "$root/launch/run-ranks.sh"
"$root/launch/build.sh"
args=(--hostfile "$hostfile" -np "$np" --map-by slot -x OPENBLAS_NUM_THREADS=1 -x SWIFT_BACKTRACE=enable=no)
[ "$(id -u)" -eq 0 ] && args+=(--allow-run-as-root)
run_ranks "${args[@]}" "${mpirun_extra[@]}" "$root/.build/release/ringsgd" "$@"
