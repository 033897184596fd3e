#!/bin/sh
# Builds the gui-v2 UI plugin plugin/PzemMeters into one JSON, as gui-v2's plugin compiler does, reproducibly.
#
#   tools/mkplugin.sh OUT.json VERSION [EPOCH]
#
# The steps of gui-v2's tools/gui-v2-plugin-compiler.py: lupdate the QML into PzemMeters_en.ts
# (and any PzemMeters_<lang>.ts kept in plugin/PzemMeters), lrelease -idbased each into a .qm, a
# .qrc with the QML, the .qm and any images under /PzemMeters, rcc -binary -compress-algo zlib,
# and the JSON gui-v2 reads, with the rcc in base64. Unlike the compiler it lists files in name
# order and gives every input the time EPOCH (default: the last commit's), because rcc stores
# each file's modification time: so two builds of one commit are byte-identical.
# Needs Qt 6's tools (Debian: qt6-l10n-tools, qt6-base-dev-tools) and python3.
set -eu

die() { echo "mkplugin: $*" >&2; exit 1; }
[ $# -ge 2 ] && [ $# -le 3 ] || { sed -n '4p' "$0" | sed 's/^# *//' >&2; exit 2; }
out="$1" version="$2"
top=$(cd "$(dirname "$0")/.." && pwd)
name=PzemMeters
epoch="${3:-$(git -C "$top" log -1 --format=%ct 2>/dev/null || echo 1704067200)}"

# qt6_tool NAME DEBIAN-PACKAGE: Qt 6's NAME (Debian keeps them out of PATH, in /usr/lib/qt6/...)
qt6_tool() {
    for dir in /usr/lib/qt6/bin /usr/lib/qt6/libexec /usr/lib/x86_64-linux-gnu/qt6/bin \
        /usr/lib/aarch64-linux-gnu/qt6/bin; do
        if [ -x "$dir/$1" ]; then echo "$dir/$1"; return 0; fi
    done
    if command -v "$1" >/dev/null 2>&1 && "$1" -v 2>&1 | grep -q ' 6\.'; then command -v "$1"; return 0; fi
    die "Qt 6's $1 is missing: install it (Debian/Ubuntu package $2)"
}
lupdate=$(qt6_tool lupdate qt6-l10n-tools)
lrelease=$(qt6_tool lrelease qt6-l10n-tools)
rcc=$(qt6_tool rcc qt6-base-dev-tools)
command -v python3 >/dev/null 2>&1 || die "python3 is missing"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
src="$work/$name"
mkdir "$src"
(cd "$top/plugin/$name" && find . -maxdepth 1 -type f \( -name '*.qml' -o -name '*.ts' -o -name '*.svg' \
    -o -name '*.png' \) | LC_ALL=C sort | tar -cf - -T -) | tar -xf - -C "$src"
cd "$src"
qml=$(ls -- *.qml | LC_ALL=C sort)
[ -n "$qml" ] || die "no QML in plugin/$name"
[ -f "${name}_en.ts" ] || ts_default="${name}_en.ts"
# shellcheck disable=SC2086  # the file lists are names without spaces, split on purpose
"$lupdate" -silent $qml -ts $(ls -- *.ts 2>/dev/null | LC_ALL=C sort) ${ts_default:-} \
    || die "lupdate failed"
for ts in $(ls -- *.ts | LC_ALL=C sort); do
    "$lrelease" -silent "$ts" -idbased -qm "${ts%.ts}.qm" || die "lrelease failed on $ts"
done
{
    printf '<RCC>\n<qresource prefix="/%s">\n' "$name"
    ls -- *.qml *.qm *.svg *.png 2>/dev/null | LC_ALL=C sort | sed 's|.*|<file>&</file>|'
    printf '</qresource>\n</RCC>\n'
} > "$name.qrc"
find . -type f -exec touch -h -d "@$epoch" {} +
"$rcc" -binary -compress-algo zlib -o "$name.rcc" "$name.qrc" || die "rcc failed"

python3 - "$name" "$version" "$out" <<'EOF'
import base64, glob, json, sys
name, version, out = sys.argv[1:]
with open(name + '.rcc', 'rb') as f:
    resource = base64.b64encode(f.read()).decode('ascii')
plugin = {
    'name': name,
    'version': version,
    'minRequiredVersion': 'v1.2.14',     # the first gui-v2 with UI plugins and device-page entries
    'maxRequiredVersion': '',
    'translations': ['qrc:/%s/%s' % (name, qm) for qm in sorted(glob.glob('*.qm'))],
    'integrations': [
        {'type': 1, 'url': 'qrc:/%s/%s_Settings.qml' % (name, name)},
        # every device with ProductId 0xFFFF gets the entry; the page checks the device is ours
        {'type': 2, 'productId': '0xFFFF', 'url': 'qrc:/%s/%s_Device.qml' % (name, name),
         'title': 'pzem_meters_device_title'},
    ],
    'resource': resource,
}
with open(out, 'w', encoding='utf-8') as f:
    json.dump(plugin, f, indent=4)
    f.write('\n')
EOF
echo "mkplugin: built $out"
