#!/usr/bin/env bash
# The README's first command: install what is missing, build release, run the main job.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/launch/setup.sh"
"$root/launch/build.sh"
exec "$root/launch/local.sh" 2 train --config "$root/configs/fashion-mlp.yaml" --run-dir "$root/runs/fashion-mlp" --overwrite "$@"
