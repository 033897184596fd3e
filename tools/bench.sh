#!/bin/bash
# Benchmarks the real driver against the simulator; writes docs/benchmarks.md (--quick: ~5 min;
# --per-read [--baseline DIR]: CPU and instructions per read and memory, before and after,
# ~40 min).
set -eu
cd "$(dirname "$0")/.."
bash tools/setup-env.sh --device-only
exec .venv/bin/python tools/bench "$@"
