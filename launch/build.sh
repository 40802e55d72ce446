#!/usr/bin/env bash
# Builds the release binary (.build/release/ringsgd) if any source is newer than it.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.build/release/ringsgd
if [ ! -x "$bin" ] || [ -n "$(find Package.swift Sources -newer "$bin" -print -quit)" ]; then
  swift build -c release --product ringsgd >&2
  touch "$bin"   # built after every change, even one SwiftPM did not relink for
fi
# The commit its sources are (the binary is newer than every source), for `ringsgd --version`.
if commit=$(git describe --always --dirty --abbrev=12 2>/dev/null); then echo "$commit" > "$bin.commit"; fi
