#!/usr/bin/env bash
# ringsgd against the peer (PyTorch DDP, ../shared/peer/torch_ddp.py) on this machine, side by
# side: alternating rounds of `ringsgd train` (one run per variant) and DDP, each the same
# number of steps at the same np and global batch (ringsgd's, passed to the peer as --batch;
# each round starts one run further along, so that no side always runs first), then a table of
# steady samples/s, peak RSS (MiB, as both sides measure it) and replica hashes a round, and the medians and their ratios. Alternating rounds because the figures of
# a shared VM drift by tens of percent within minutes: only rounds taken together compare.
#
#   launch/peer/versus_ddp.sh --peer-model resnet [--rounds 3] [--steps 60] [--np 2] \
#       [--variant 'NAME=--set key=value …'] … -- --config configs/fashion-resnet.yaml [--set …]
#   launch/peer/versus_ddp.sh --peer-model resnet --variant 'sync=--set model.batchnorm=sync' \
#       --variant 'broadcast=--set model.batchnorm=broadcast' -- --config configs/fashion-resnet.yaml
#
# Arguments after `--` go to every `ringsgd train` run (besides train.max_steps, no periodic
# checkpoints and no evaluation during the run). Each --variant adds its own arguments, split
# at spaces (no quoting: a --set value cannot hold a space); without one, a single variant
# named "ringsgd". Names: letters, digits, '.', '_', '-', each once, not "ddp". Ranks run
# through launch/local.sh, after one build; DDP with OMP_NUM_THREADS=1. A failed run's
# files are kept, and their directory named.
# Environment: PEER_PY (default ~/.cache/ringsgd-peer/venv/bin/python, made by
# ../shared/peer/setup.sh), PEER_SCRIPT (default ../shared/peer/torch_ddp.py).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
fail() { echo "versus_ddp: error: $*" >&2; exit 2; }
usage="usage: launch/peer/versus_ddp.sh --peer-model M [--rounds N] [--steps S] [--np N] [--variant 'NAME=ARGS'] … -- TRAIN-ARGS…"
rounds=3 steps=60 np=2 peer_model="" variants=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=${2-}; shift 2 || fail "--rounds needs a value; $usage" ;;
    --steps) steps=${2-}; shift 2 || fail "--steps needs a value; $usage" ;;
    --np) np=${2-}; shift 2 || fail "--np needs a value; $usage" ;;
    --peer-model) peer_model=${2-}; shift 2 || fail "--peer-model needs a value; $usage" ;;
    --variant) variants+=("${2-}"); shift 2 || fail "--variant needs a value; $usage" ;;
    --) shift; break ;;
    *) fail "unknown option '$1'; $usage" ;;
  esac
done
[[ "$rounds" =~ ^[0-9]+$ ]] && [ "$rounds" -ge 1 ] || fail "--rounds must be a whole number ≥ 1, got '$rounds'"
[[ "$steps" =~ ^[0-9]+$ ]] && [ "$steps" -ge 21 ] || fail "--steps must be a whole number ≥ 21 (both sides' steady rates skip the first 10 steps once more than 20 ran), got '$steps'"
[[ "$np" =~ ^[0-9]+$ ]] && [ "$np" -ge 1 ] || fail "--np must be a whole number ≥ 1, got '$np'"
[ -n "$peer_model" ] || fail "--peer-model is required (torch_ddp.py's --model: mlp, cnn, linear-large, resnet, gpt); $usage"
[ $# -gt 0 ] || fail "give the train arguments after --, at least --config FILE; $usage"
[ ${#variants[@]} -gt 0 ] || variants=("ringsgd=")
names=" "
for v in "${variants[@]}"; do
  [[ "$v" == *=* ]] || fail "--variant must be NAME=ARGS, got '$v'"
  name=${v%%=*}
  [[ "$name" =~ ^[A-Za-z0-9._-]+$ ]] && [ "$name" != ddp ] \
    || fail "--variant's NAME must be letters, digits, '.', '_' or '-', and not 'ddp' (the peer's row), got '$name'"
  [[ "$names" != *" $name "* ]] || fail "--variant $name is given twice: each name once"
  names+="$name "
done
# shellcheck source=launch/peer/peer-env.sh
source "$root/launch/peer/peer-env.sh"

work=$(mktemp -d /tmp/versus-ddp.XXXXXX)
# Removed when all went well; kept, and named, when something failed.
trap 'status=$?; if [ "$status" -eq 0 ]; then rm -rf "$work"; else echo "versus_ddp: the runs so far are in $work" >&2; fi' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
cpu=$( (grep -m1 '^model name' /proc/cpuinfo || true) | cut -d: -f2- | sed 's/^ *//')
# Built once here (each run's launch/local.sh then finds nothing to do): the commit named is the
# binary's, as build.sh records it (-dirty for uncommitted changes).
"$root/launch/build.sh" >&2 || fail "the build failed (its output above)"
commit=$(cat "$root/.build/release/ringsgd.commit" 2>/dev/null || echo "an unrecorded commit")
echo "versus_ddp: $rounds alternating rounds of $steps steps at np $np on $(nproc) × ${cpu:-an unnamed CPU}, at $commit" >&2

# One result line a run: round, name, steady samples/s, peak RSS (MB a rank), replica hash.
cat > "$work/ringsgd_result.py" <<'PY'
import json, sys
try:
    s = json.load(open(sys.argv[1]))
    print(sys.argv[2], sys.argv[3], s["steady_samples_per_second"], s["peak_rss_mb"], s["param_hash"], s["global_batch"], sep="\t")
except (OSError, ValueError, KeyError) as error:
    sys.exit(f"versus_ddp: error: {sys.argv[1]}: {error!r}")
PY
cat > "$work/ddp_result.py" <<'PY'
import json, sys
try:
    s = json.loads([line for line in open(sys.argv[1]) if line.startswith("{")][-1])
    print(sys.argv[2], "ddp", s["steady_samples_per_second"], max(s["peak_rss_mb_per_process"]), "-", "-", sep="\t")
except (OSError, ValueError, KeyError, IndexError) as error:
    sys.exit(f"versus_ddp: error: {sys.argv[1]}: no result line ({error!r})")
PY
cat > "$work/table.py" <<'PY'
import statistics, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
rounds = list(dict.fromkeys(r[0] for r in rows))
rate = {(r[0], r[1]): float(r[2]) for r in rows}
def memory(mine): return f"{min(float(r[3]) for r in mine):.0f}–{max(float(r[3]) for r in mine):.0f}"
peer = [r for r in rows if r[1] == "ddp"]
ddp = statistics.median(float(r[2]) for r in peer)
print(f"{'':12} {'median samples/s':>17} {'× DDP':>6}  {'each round × DDP':<28} {'MiB a rank':>10}  replica hash")
for name in dict.fromkeys(r[1] for r in rows if r[1] != "ddp"):
    mine = [r for r in rows if r[1] == name]
    median = statistics.median(float(r[2]) for r in mine)
    each = " ".join(f"{rate[(k, name)] / rate[(k, 'ddp')]:.2f}" for k in rounds)
    hashes = " ".join(sorted(set(r[4] for r in mine)))
    print(f"{name:12} {median:17.1f} {median / ddp:6.2f}  {each:<28} {memory(mine):>10}  {hashes}")
print(f"{'DDP':12} {ddp:17.1f} {'':6}  {'':<28} {memory(peer):>10}")
PY

results="$work/results.tsv"
# The peer trains at ringsgd's global batch (summary.json's), so that samples/s compare like
# for like: torch_ddp.py's own default is 128, whatever the config says.
batch=""
run_variant() {   # round, variant, the train arguments
  local round=$1 v=$2 name run log extra this
  shift 2
  name=${v%%=*}
  read -r -a extra <<< "${v#*=}"
  run="$work/run-$round-$name" log="$work/run-$round-$name.log"
  if ! "$root/launch/local.sh" "$np" train "$@" ${extra[@]+"${extra[@]}"} --set train.max_steps="$steps" \
      --set checkpoint.every_steps=0 --set train.eval_every_steps=0 --run-dir "$run" > "$log" 2>&1; then
    tail -3 "$log" >&2
    fail "round $round, $name: ringsgd train failed (its last lines above)"
  fi
  "$py" "$work/ringsgd_result.py" "$run/summary.json" "$round" "$name" >> "$results" || exit 2
  this=$(tail -1 "$results" | cut -f6)
  [ -z "$batch" ] || [ "$batch" = "$this" ] \
    || fail "variant $name trains at global batch $this, an earlier run at $batch: one DDP run compares with one batch; give the variants the same train.global_batch"
  batch=$this
  tail -1 "$results" | awk -F'\t' '{printf "round %s  %-12s %8.1f samples/s  %6.0f MiB a rank  hash %s\n", $1, $2, $3, $4, $5}' >&2
}
run_ddp() {   # round
  local round=$1 log="$work/ddp-$1.log"
  if ! OMP_NUM_THREADS=1 "$py" "$script" --model "$peer_model" --np "$np" --batch "$batch" --max-steps "$steps" --no-eval > "$log" 2>&1; then
    tail -3 "$log" >&2
    fail "round $round: torch_ddp.py failed (its last lines above)"
  fi
  "$py" "$work/ddp_result.py" "$log" "$round" >> "$results" || exit 2
  tail -1 "$results" | awk -F'\t' '{printf "round %s  %-12s %8.1f samples/s  %6.0f MiB a rank\n", $1, $2, $3, $4}' >&2
}
# Each round starts one place further along [variants…, DDP], so that no side always runs
# first or last in a round (round 1 starts with ringsgd: DDP needs its batch).
runs=("${variants[@]}" "=ddp")
for round in $(seq 1 "$rounds"); do
  for i in $(seq 0 $(( ${#runs[@]} - 1 ))); do
    item=${runs[$(( (i + round - 1) % ${#runs[@]} ))]}
    if [ "$item" = "=ddp" ]; then run_ddp "$round"; else run_variant "$round" "$item" "$@"; fi
  done
done
"$py" "$work/table.py" "$results"
