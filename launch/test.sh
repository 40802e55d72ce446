#!/usr/bin/env bash
# The README's second command: install what is missing, build, run the whole test suite
# (unit tests in-process, multi-process tests under real mpirun, each bounded by a timeout).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
"$root/launch/setup.sh"
export SWIFT_BACKTRACE=enable=no OPENBLAS_NUM_THREADS=1
swift build -c release --product ringsgd
# The whole suite is bounded: nothing here can hang CI.
timeout 1500 swift test -c release "$@"
