#!/bin/bash
# Runs the demo: simulated PZEM meters, a private D-Bus, the real driver and a live view (--help says more).
set -eu
cd "$(dirname "$0")/.."
for arg in "$@"; do
    # the help needs nothing but python3: answer it before any virtualenv is built
    case "$arg" in -h | --help) exec python3 tools/demo.py --help ;; esac
done
bash tools/setup-env.sh --device-only
exec .venv/bin/python tools/demo.py "$@"
