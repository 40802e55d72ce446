#!/usr/bin/env bash
# Installs the system packages ringsgd builds and runs on, if any is missing. Idempotent.
# Debian package names: OpenMPI (library + mpirun), zstd, OpenBLAS, zlib, pkg-config
# (the system-library targets are found through it), the Fashion-MNIST IDX files, the fortunes
# text files (the byte-level GPT's corpus), iproute2
# (ip and tc: the simulated cluster, launch/simcluster.sh), gnuplot (bench scaling's plot) and
# SLURM with munge (launch/testslurm.sh: the SLURM tests run a real controller and node daemon).
set -euo pipefail
packages=(libopenmpi-dev openmpi-bin libzstd-dev libopenblas-dev zlib1g-dev pkg-config dataset-fashion-mnist fortunes iproute2 gnuplot-nox slurmctld slurmd slurm-client munge)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "ringsgd setup: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi
