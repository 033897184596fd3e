#!/bin/bash
# Runs the whole test suite: installs what it needs, checks the Python 3.8 floor, then pytest on the
# device's stack (pymodbus 2.5.3), then what pymodbus touches again on the newest pymodbus 3.x.
# Extra arguments go to both pytest runs; PZEM_TEST_WORKERS sets the parallel workers (default 4:
# the tests mostly wait on serial timeouts and D-Bus, so more workers than cores pays off).
set -eu
cd "$(dirname "$0")/.."
bash tools/setup-env.sh
workers="${PZEM_TEST_WORKERS:-4}"

echo "== vermin: driver code must run on Python 3.8"
.venv/bin/vermin -q --no-tips --violations -t=3.8- package/opt/pzem pzemsim

echo "== tests on the device stack (pymodbus 2.5.3)"
.venv/bin/python -m pytest -q -n "$workers" "$@" tests

echo "== what pymodbus touches, on the newest pymodbus 3.x"
.venv-pm3/bin/python -m pytest -q -n "$workers" -m pymodbus "$@" tests
