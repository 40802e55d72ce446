#!/usr/bin/env bash
# Coverage-guided fuzzing of every decoder ringsgd feeds with outside bytes — codec payloads
# (every codec, alone and under zstd), checkpoints, IDX headers, YAML configs and --set
# overrides — with libFuzzer and AddressSanitizer:
#   launch/fuzz.sh [SECONDS]     (default 60)
# Starts from Tests/FuzzCorpus; any input that crashes, traps or leaks past the limits is
# written to $FUZZ_OUT (default runs/fuzz)/crash-… and the script exits non-zero. Add such an
# input to Tests/FuzzCorpus once fixed: the test suite replays the corpus on every run.
# FUZZ_BUILD=debug builds without optimisation: in 30 s instead of about 70 on 2 cores, for
# two thirds of the inputs a second (29 k against 46 k in 20 s, AMD EPYC, 2026-12-02) — the
# test suite's short run; fuzzing campaigns keep the default, release.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
seconds=${1:-60}
[[ "$seconds" =~ ^[0-9]{1,7}$ ]] && [ "$seconds" -ge 1 ] || { echo "usage: launch/fuzz.sh [SECONDS]  (a whole number ≥ 1, got '$seconds')" >&2; exit 2; }
"$root/launch/setup.sh"
cd "$root"
# libFuzzer's coverage guidance plus AddressSanitizer, so an out-of-bounds read is a crash too.
build=${FUZZ_BUILD:-release}
[[ "$build" == release || "$build" == debug ]] || { echo "launch/fuzz.sh: FUZZ_BUILD must be release or debug, got '$build'" >&2; exit 2; }
swift build -c "$build" --sanitize=fuzzer --sanitize=address --product fuzz-decoders -Xswiftc -DFUZZING --scratch-path "$root/.build-fuzz" >&2
export ASAN_OPTIONS=detect_leaks=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$root/Tests/FuzzCorpus" "$work/corpus"
out=${FUZZ_OUT:-$root/runs/fuzz}
mkdir -p "$out"
"$root/.build-fuzz/$build/fuzz-decoders" -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=8192 -timeout=10 -dict="$root/launch/fuzz.dict" \
  -print_final_stats=1 -artifact_prefix="$out/" "$work/corpus"
