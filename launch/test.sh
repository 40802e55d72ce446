#!/usr/bin/env bash
# The README's second command: install what is missing, build, run the whole test suite
# (unit tests in-process, multi-process tests under real mpirun, each bounded by a timeout).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
"$root/launch/setup.sh" --with-slurm
export SWIFT_BACKTRACE=enable=no OPENBLAS_NUM_THREADS=1
"$root/launch/build.sh"                          # the binary, and the commit it was built from
swift build -c release --product fuzz-decoders   # the corpus replayer (FuzzTests)
# Built after every change (SwiftPM does not relink a product a change did not touch): the
# MPI tests check that the binaries are newer than the sources.
touch .build/release/fuzz-decoders
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# The whole suite is bounded: nothing here can hang CI. (Our tests are XCTest only.)
set +e
timeout 1500 swift test -c release --disable-swift-testing "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# A plain closing tally from XCTest's last summary line.
summary=$(grep -E 'Executed [0-9]+ tests?, with [0-9]+ failures?' "$log" | tail -1 || true)
if [ -n "$summary" ]; then
  total=$(sed -E 's/.*Executed ([0-9]+) tests?.*/\1/' <<<"$summary")
  failed=$(sed -E 's/.*with ([0-9]+) failures?.*/\1/' <<<"$summary")
  echo "tests: $((total - failed)) passed, $failed failed"
fi
exit "$status"
