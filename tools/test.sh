#!/bin/bash
# Runs the whole test suite: installs what it needs, then pytest on the device's stack
# (pymodbus 2.5.3) and the Modbus seam tests again on the newest pymodbus 3.x, then vermin.
set -eu
cd "$(dirname "$0")/.."
bash tools/setup-env.sh

echo "== vermin: driver code must run on Python 3.8"
.venv/bin/vermin -q --no-tips --violations -t=3.8- package/opt/pzem pzemsim

echo "== tests on the device stack (pymodbus 2.5.3)"
.venv/bin/python -m pytest -q "$@" tests

echo "== tests on the newest pymodbus 3.x"
.venv-pm3/bin/python -m pytest -q -m "not device_only" "$@" tests
