#!/bin/bash
# Runs the whole test suite: installs what it needs, checks the Python 3.8 floor, then pytest on the
# device's stack (pymodbus 2.5.3), then what pymodbus touches again on the newest pymodbus 3.x.
# Every stage runs even when one before it failed, and the end says which failed: a stage that
# did not run is never silent. Extra arguments go to both pytest runs; PZEM_TEST_WORKERS sets the
# parallel workers (default 4: the tests mostly wait on serial timeouts and D-Bus, so more
# workers than cores pays off).
set -u
cd "$(dirname "$0")/.."
if ! bash tools/setup-env.sh; then
    echo "== not run: vermin, the device-stack tests and the pymodbus 3.x tests (setting up failed)"
    exit 1
fi
workers="${PZEM_TEST_WORKERS:-4}"
failed=()

stage() {  # stage NAME COMMAND...: runs it, and remembers it when it fails
    local name="$1"
    shift
    echo "== $name"
    "$@" || failed+=("$name")
}

stage "vermin: driver code must run on Python 3.8" \
    .venv/bin/vermin -q --no-tips --violations -t=3.8- package/opt/pzem pzemsim
stage "tests on the device stack (pymodbus 2.5.3)" \
    .venv/bin/python -m pytest -q -n "$workers" "$@" tests
stage "what pymodbus touches, on the newest pymodbus 3.x" \
    .venv-pm3/bin/python -m pytest -q -n "$workers" -m pymodbus "$@" tests

if [ "${#failed[@]}" -gt 0 ]; then
    printf '== FAILED: %s\n' "${failed[@]}"
    exit 1
fi
echo "== all stages passed"
