#!/usr/bin/env bash
# Installs the system packages ringsgd builds and runs on, if any is missing. Idempotent.
# Debian package names: OpenMPI (library + mpirun), zstd, OpenBLAS, zlib, pkg-config
# (the system-library targets are found through it), the Fashion-MNIST IDX files, the fortunes
# text files (the byte-level GPT's corpus), iproute2
# (ip and tc: the simulated cluster, launch/simcluster.sh), gnuplot (bench scaling's plot) and
# SLURM with munge (launch/testslurm.sh: the SLURM tests run a real controller and node daemon)
# and QEMU's user mode (the test that an older CPU gets a clear error, on an emulated one)
# — the last two only with --with-slurm (launch/test.sh): installing SLURM starts and enables
# munge and SLURM's services, which training on this machine does not need.
#   launch/setup.sh [--with-slurm]
set -euo pipefail
packages=(libopenmpi-dev openmpi-bin libzstd-dev libopenblas-dev zlib1g-dev pkg-config dataset-fashion-mnist fortunes iproute2 gnuplot-nox procps)
case "${1:-}" in
  "") ;;
  --with-slurm) packages+=(slurmctld slurmd slurm-client munge python3 qemu-user) ;;   # the test suite's (python3: zipfile reads our .npz back)
  *) echo "usage: launch/setup.sh [--with-slurm]" >&2; exit 2 ;;
esac
missing=()
for p in "${packages[@]}"; do
  # Installed, not merely known: a removed package keeps its configuration ("rc") and dpkg -s succeeds.
  # (One line per architecture a package is installed for: every one must be "ii".)
  status=$(dpkg-query -W -f='${db:Status-Abbrev}\n' "$p" 2>/dev/null || true)
  [ -n "$status" ] && ! grep -qv '^ii' <<<"$status" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "ringsgd setup: installing ${missing[*]}" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "ringsgd setup: error: ${missing[*]} must be installed and there is no sudo here; run launch/setup.sh as root" >&2; exit 1; }
    sudo="sudo"
  fi
  # A fresh cloud machine runs apt of its own at boot (unattended-upgrades, cloud-init): wait
  # for its lock, up to 10 minutes, instead of failing on "Could not get lock".
  # Through env: sudo's env_reset would drop a plain assignment, and debconf could prompt.
  apt_get() {
    local attempt errors
    errors=$(mktemp)
    for attempt in $(seq 1 30); do
      # stderr into a file, shown once apt has ended (no process to wait for).
      if $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=10 "$@" 2>"$errors"; then
        cat "$errors" >&2; rm -f "$errors"; return 0
      fi
      cat "$errors" >&2
      grep -q 'Could not get lock\|Unable to acquire the dpkg frontend lock\|Unable to lock directory' "$errors" || { rm -f "$errors"; return 1; }
      [ "$attempt" -eq 1 ] && echo "ringsgd setup: another apt is running (this machine's own updates?): waiting for it" >&2
      sleep 10
    done
    rm -f "$errors"
    echo "ringsgd setup: error: apt stayed locked for 10 minutes; wait for the other apt to finish (ps aux | grep apt) and run launch/setup.sh again" >&2
    return 1
  }
  apt_get update
  apt_get install -y --no-install-recommends "${missing[@]}"
fi
