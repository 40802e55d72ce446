#!/usr/bin/env bash
# Scaling benchmark: the same training job at np = 1, 2, 4, … up to MAXNP, one table.
#   launch/scaling.sh MAXNP [CONFIG] [extra `ringsgd train` options…]
#   launch/scaling.sh 2                                   # fashion-mlp, np 1 and 2, this machine
#   MODE=weak launch/scaling.sh 8 configs/fashion-cnn.yaml
#   LAUNCH="launch/hostfile.sh hosts" launch/scaling.sh 64 configs/synthetic-large.yaml
# Environment:
#   MODE=strong (default): the config's global batch at every np (must divide by np);
#   MODE=weak: PER_RANK_BATCH (default 64) samples per rank, global batch = that × np.
#   STEPS (default 300): training steps per run; samples/s is the trainer's own figure for the run.
#   LAUNCH (default launch/local.sh): how to start NP ranks; it is called as `$LAUNCH NP train …`.
#   OUT (default runs/scaling-<time>): one run directory per np, and scaling.tsv.
# Speed-up and efficiency are relative to the np 1 run of the same table.
set -euo pipefail
if [ $# -lt 1 ] || ! [[ "$1" =~ ^[0-9]+$ ]] || [ "$1" -lt 1 ]; then
  echo "usage: launch/scaling.sh MAXNP [CONFIG] [ringsgd train options…]  (MAXNP ≥ 1)" >&2
  exit 2
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
maxnp=$1; shift
config=${1:-$root/configs/fashion-mlp.yaml}; [ $# -gt 0 ] && shift
[ -f "$config" ] || { echo "scaling.sh: config $config not found" >&2; exit 2; }
mode=${MODE:-strong}
[[ "$mode" == strong || "$mode" == weak ]] || { echo "scaling.sh: MODE must be strong or weak, got $mode" >&2; exit 2; }
steps=${STEPS:-300}
launch=${LAUNCH:-$root/launch/local.sh}
out=${OUT:-$root/runs/scaling-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"

field() { sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p" "$2" | tr -d '"'; }

table="$out/scaling.tsv"
printf 'np\tglobal_batch\tsamples_per_second\tspeedup\tefficiency\tcompute_s\tcomm_s\tpeak_rss_mb\ttest_accuracy\n' > "$table"
printf '%4s %12s %12s %8s %10s %10s %8s %8s %9s\n' np global_batch samples/s speedup efficiency compute_s comm_s rss_mb test_acc
base=""
np=1
while [ "$np" -le "$maxnp" ]; do
  sets=(--set "train.max_steps=$steps")
  if [ "$mode" == weak ]; then
    batch=$(( ${PER_RANK_BATCH:-64} * np ))
    sets+=(--set "train.global_batch=$batch")
  else
    batch=$(sed -n 's/^ *global_batch: *\([0-9]*\).*/\1/p' "$config" | head -1)
  fi
  dir="$out/np-$np"
  $launch "$np" train --config "$config" "${sets[@]}" --run-dir "$dir" "$@" > "$dir.log" 2>&1 || {
    echo "scaling.sh: the np $np run failed; its output is in $dir.log:" >&2
    tail -5 "$dir.log" >&2
    exit 1
  }
  s="$dir/summary.json"
  sps=$(field samples_per_second "$s")
  [ -z "$base" ] && base=$sps
  speedup=$(awk -v a="$sps" -v b="$base" 'BEGIN { printf "%.2f", a / b }')
  efficiency=$(awk -v a="$sps" -v b="$base" -v n="$np" 'BEGIN { printf "%.0f%%", 100 * a / b / n }')
  row=("$np" "$batch" "$(printf %.0f "$sps")" "$speedup" "$efficiency" "$(printf %.2f "$(field compute_seconds "$s")")"
       "$(printf %.2f "$(field comm_seconds "$s")")" "$(printf %.0f "$(field peak_rss_mb "$s")")" "$(field test_accuracy "$s")")
  (IFS=$'\t'; echo "${row[*]}") >> "$table"
  printf '%4s %12s %12s %8s %10s %10s %8s %8s %9s\n' "${row[@]}"
  np=$(( np * 2 ))
done
echo "runs and scaling.tsv: $out"
