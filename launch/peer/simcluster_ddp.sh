#!/usr/bin/env bash
# The peer (PyTorch DDP, ../shared/peer/torch_ddp.py) across simulated hosts — one rank per
# host, on the same shaped links as launch/simcluster.sh — for side-by-side measurements:
#   launch/peer/simcluster_ddp.sh --hosts H --rate R -- [torch_ddp.py arguments…]
#   launch/peer/simcluster_ddp.sh --hosts 4 --rate 100mbit -- --model cnn --epochs 5 --eval-every-steps 100
# Rank 0's output goes to stdout (its final JSON line last); another rank's only if it fails.
# Environment: PEER_PY (default ~/.cache/ringsgd-peer/venv/bin/python, made by
# ../shared/peer/setup.sh), PEER_SCRIPT (default ../shared/peer/torch_ddp.py).
# Everything created is removed on exit, on error and on Ctrl-C. Needs root.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
fail() { echo "simcluster_ddp: error: $*" >&2; exit 2; }
# shellcheck source=launch/simhosts.sh
source "$root/launch/simhosts.sh"
usage="usage: launch/peer/simcluster_ddp.sh --hosts H --rate R -- [torch_ddp.py arguments…]"
hosts="" rate=""
while [ $# -gt 0 ]; do
  case "$1" in
    --hosts) hosts=${2-}; shift 2 || fail "--hosts needs a value; $usage" ;;
    --rate) rate=${2-}; shift 2 || fail "--rate needs a value; $usage" ;;
    --) shift; break ;;
    *) fail "unknown option '$1'; $usage" ;;
  esac
done
[[ "$hosts" =~ ^[0-9]+$ ]] && [ "$hosts" -ge 2 ] && [ "$hosts" -le 64 ] || fail "--hosts must be a whole number in 2…64, got '$hosts'; $usage"
simhosts_check_rate "$rate"
# shellcheck source=launch/peer/peer-env.sh
source "$root/launch/peer/peer-env.sh"

tag="pd$$"
work=$(mktemp -d /tmp/simcluster-ddp.XXXXXX)
teardown() {
  local status=$?
  trap - EXIT INT TERM
  simhosts_destroy "$work"
  rm -rf "$work"
  exit "$status"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
simhosts_probe "$work"
subnet=$(simhosts_pick_subnet)
simhosts_create "$tag" "$hosts" "$rate" "$subnet" "$work"
echo "simcluster_ddp: $hosts hosts on $subnet.0/24, links shaped to $rate" >&2
pids=()
for i in $(seq 1 "$hosts"); do
  ip netns exec "${tag}h$i" env OMP_NUM_THREADS=1 GLOO_SOCKET_IFNAME=eth0 \
    "$py" "$script" --np "$hosts" --rank $((i - 1)) --master "$subnet.1" --port 29500 "$@" >"$work/rank$i.log" 2>&1 &
  pids+=($!)
done
status=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    status=1
    [ "$i" -gt 0 ] && { echo "simcluster_ddp: rank $i failed:" >&2; tail -5 "$work/rank$((i + 1)).log" >&2; }
  fi
done
cat "$work/rank1.log"
exit "$status"
