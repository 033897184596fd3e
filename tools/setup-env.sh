#!/bin/bash
# Installs what the demo and the tests need: Debian packages, and two virtualenvs with the
# device's Python stack (.venv: pymodbus 2.5.3 as on Venus v3.60+) and the newest pymodbus 3.x (.venv-pm3).
set -eu
cd "$(dirname "$0")/.."

need_apt=""
for cmd in dbus-daemon socat pkg-config gcc ar dpkg-deb; do
    command -v "$cmd" >/dev/null 2>&1 || need_apt=yes
done
for pc in dbus-1 glib-2.0 gobject-introspection-1.0 cairo; do
    pkg-config --exists "$pc" 2>/dev/null || need_apt=yes
done
# Qt 6's tools for the gui-v2 plugin (tools/mkplugin.sh) and its QML check (tests/test_gui_plugin.py)
for tool in /usr/lib/qt6/bin/lupdate /usr/lib/qt6/bin/lrelease /usr/lib/qt6/libexec/rcc \
    /usr/lib/qt6/bin/qmllint; do
    [ -x "$tool" ] || need_apt=yes
done
if [ -n "$need_apt" ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "setup-env: this needs Debian or Ubuntu (apt-get) to install dbus, socat and the build" \
            "headers and Qt 6's tools; elsewhere install those and python3-venv yourself and run it again" >&2
        exit 1
    fi
    as_root=(env DEBIAN_FRONTEND=noninteractive)
    if [ "$(id -u)" != 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            echo "setup-env: installing Debian packages needs root: run it as root, or install sudo" >&2
            exit 1
        fi
        as_root=(sudo "${as_root[@]}")
    fi
    echo "setup-env: installing Debian packages (dbus, socat, build headers, Qt 6 tools) as: ${as_root[*]} apt-get"
    "${as_root[@]}" apt-get update -qq
    "${as_root[@]}" apt-get install -y -qq dbus socat pkg-config gcc binutils dpkg libdbus-1-dev libglib2.0-dev \
        libgirepository1.0-dev libcairo2-dev python3-venv python3-dev \
        qt6-l10n-tools qt6-base-dev-tools qt6-declarative-dev-tools >/dev/null
fi

make_venv() {  # make_venv DIR REQUIREMENTS
    local dir="$1" req="$2" stamp
    stamp="$dir/.requirements.sha"
    if [ -f "$stamp" ] && [ "$(sha256sum "$req" | cut -d' ' -f1)" = "$(cat "$stamp")" ]; then
        return 0
    fi
    echo "setup-env: building $dir from $req"
    python3 -m venv "$dir"
    "$dir/bin/pip" install -q --upgrade pip wheel setuptools
    "$dir/bin/pip" install -q -r "$req"
    sha256sum "$req" | cut -d' ' -f1 > "$stamp"
}

make_venv .venv requirements/device.txt
if [ "${1:-}" != "--device-only" ]; then
    make_venv .venv-pm3 requirements/pymodbus3.txt
fi
