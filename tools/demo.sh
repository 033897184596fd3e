#!/bin/bash
# Runs the demo: simulated PZEM meters, a private D-Bus, the real driver and a live view.
set -eu
cd "$(dirname "$0")/.."
bash tools/setup-env.sh --device-only
exec .venv/bin/python tools/demo.py "$@"
