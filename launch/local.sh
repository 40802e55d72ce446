#!/usr/bin/env bash
# Runs ringsgd on this machine with NP MPI ranks:  launch/local.sh NP [ringsgd arguments…]
#   launch/local.sh 2 train --config configs/fashion-mlp.yaml
#   launch/local.sh 2 bench allreduce --json allreduce.json
# Extra mpirun options go in MPIRUN_ARGS, e.g. MPIRUN_ARGS="--mca btl tcp,self".
# One OpenBLAS thread per rank: mpirun's core binding otherwise changes what OpenBLAS picks.
set -euo pipefail
usage="usage: launch/local.sh NP COMMAND [ringsgd arguments…]  (NP: number of ranks, ≥ 1; COMMAND: train, evaluate, bench …)"
case "${1-}" in -h|--help) echo "$usage"; exit 0 ;; esac
if [ $# -lt 1 ]; then echo "$usage" >&2; exit 2; fi
if ! [[ "$1" =~ ^[0-9]{1,6}$ ]] || [ "$1" -lt 1 ]; then
  echo "launch/local.sh: error: NP '$1' is not a number of ranks ≥ 1; $usage" >&2
  exit 2
fi
if [ $# -lt 2 ]; then echo "launch/local.sh: error: no ringsgd command after NP; $usage" >&2; exit 2; fi
np=$1; shift
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=launch/run-ranks.sh
source "$root/launch/run-ranks.sh"
"$root/launch/build.sh"
args=(-np "$np" -x OPENBLAS_NUM_THREADS=1 -x SWIFT_BACKTRACE=enable=no)
[ "$(id -u)" -eq 0 ] && args+=(--allow-run-as-root)
# OpenMPI counts a machine's slots as its physical cores, not its hardware threads: a 2-vCPU VM
# of one core with two threads has one slot.
# Not more than the CPUs this process may use (a container's or taskset's limit), which is
# what OpenMPI counts too.
cores=$( (lscpu -p=Core,Socket 2>/dev/null || true) | { grep -v '^#' || true; } | sort -u | wc -l)
[ "$cores" -ge 1 ] && [ "$cores" -le "$(nproc)" ] || cores=$(nproc)
[ "$np" -gt "$cores" ] && args+=(--oversubscribe)
run_ranks "${args[@]}" "${mpirun_extra[@]}" "$root/.build/release/ringsgd" "$@"
