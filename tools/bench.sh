#!/bin/bash
# Benchmarks the real driver against the simulator; writes docs/benchmarks.md (--quick: ~5 min;
# --per-read [--baseline DIR]: CPU per read and memory, before and after, ~20 min).
set -eu
cd "$(dirname "$0")/.."
bash tools/setup-env.sh --device-only
exec .venv/bin/python tools/bench "$@"
