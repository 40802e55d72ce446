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
# The whole suite is bounded (and killed 30 s after its TERM if it has not ended): nothing
# here can hang CI. (Our tests are XCTest only.)
# `timeout` runs the suite in a process group of its own, which a Ctrl-C at the terminal does
# not reach, and bash runs no trap while a command runs in the foreground: so the suite runs in
# the background, followed by `tail`, and an INT or TERM here is passed to `timeout`, which
# ends the suite's whole group.
# No @testable imports: without them the tests link the very library modules build.sh compiled,
# instead of compiling every one again with -enable-testing (35 s of a fresh clone's build).
timeout -k 30 1500 swift test -c release --disable-swift-testing --disable-testable-imports "$@" > "$log" 2>&1 &
suite=$!
tail -f -n +1 --pid="$suite" "$log" &
follower=$!
# HUP and QUIT too: a closed terminal must not leave the suite running without this script.
trap 'kill -TERM "$suite" 2>/dev/null' INT TERM HUP QUIT
status=0
wait "$suite" || status=$?
# A signal ends `wait` early while the suite is still stopping: wait again, for its own status.
while kill -0 "$suite" 2>/dev/null; do status=0; wait "$suite" || status=$?; done
wait "$follower" || true
trap - INT TERM HUP QUIT
# A plain closing tally of the test cases, counted from XCTest's line for each ("Test Case
# 'A.b' passed (…)"; its summary counts failed assertions, not tests, and skips apart).
if grep -qE '^Test Suite .(All tests|Selected tests). (passed|failed)' "$log"; then
  count() { grep -cE "^Test Case '[^']+' $1 \(" "$log" || true; }
  echo "tests: $(count passed) passed, $(count failed) failed, $(count skipped) skipped"
fi
exit "$status"
