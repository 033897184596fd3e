#!/bin/sh
# Builds build/venus-pzem_<version>_all.ipk (+ copy venus-pzem.ipk) and build/PzemMeter-<version>.tar.gz, reproducibly.
#
#   tools/mkipk.sh [--version VERSION] [--maintainer 'NAME <CONTACT>'] [--out DIR]
#
# The version comes from package/opt/pzem/VERSION, the maintainer from MAINTAINER (the options
# override them, for tests); both go into the control file and PzemMeter/ReadMe. File times
# are SOURCE_DATE_EPOCH, else the last commit's time, so two builds of one commit are identical.
# The gui-v2 UI plugin is built into /opt/pzem/gui-v2/PzemMeters.json (tools/mkplugin.sh).
# The ipk carries a copy of itself without that copy (/opt/pzem/venus-pzem.ipk): the installer keeps
# it in /data to put the add-on back after a firmware update.
set -eu

die() { echo "mkipk: $*" >&2; exit 1; }
usage() { sed -n '4p' "$0" | sed 's/^# *//' >&2; exit 2; }

top=$(cd "$(dirname "$0")/.." && pwd)
out="$top/build"
version=""
maintainer=""
while [ $# -gt 0 ]; do
    case "$1" in
    --version) [ $# -ge 2 ] || usage; version="$2"; shift 2 ;;
    --maintainer) [ $# -ge 2 ] || usage; maintainer="$2"; shift 2 ;;
    --out) [ $# -ge 2 ] || usage; out="$2"; shift 2 ;;
    *) usage ;;
    esac
done

need() {  # need TOOL DEBIAN-PACKAGE
    command -v "$1" >/dev/null 2>&1 || die "'$1' is missing: install it (Debian/Ubuntu package $2)"
}
need ar binutils
need tar tar
need gzip gzip
need find findutils
tar --version 2>/dev/null | grep -q 'GNU tar' || die "needs GNU tar (--owner, --mtime, --mode); 'tar' here is another one"

if [ -z "$version" ]; then version=$(tr -d ' \t\r\n' < "$top/package/opt/pzem/VERSION"); fi
case "$version" in
[0-9]*) ;;
*) die "version '$version' must start with a digit" ;;
esac
case "$version" in
*[!A-Za-z0-9.+~-]*) die "version '$version' may hold only letters, digits and . + ~ -" ;;
esac

if [ -z "$maintainer" ]; then maintainer=$(grep -v -e '^#' -e '^[[:space:]]*$' "$top/MAINTAINER" | head -n 1); fi
case "$maintainer" in
*'<'*@*'>'|*'<http'*'>') ;;
*) die "maintainer '$maintainer' needs a contact: 'Name <e-mail>' or 'Name <https://...>' (set it in MAINTAINER)" ;;
esac
case "$maintainer" in
*[\\\|\&]*) die "maintainer '$maintainer' may not hold \\, | or &" ;;
esac
case "$maintainer" in
*.example'>') echo "mkipk: warning: the maintainer's contact in MAINTAINER is a placeholder: set the real one before a release" >&2 ;;
esac
[ -f "$top/LICENSE" ] || die "LICENSE is missing"
license=$(sed -n 's/^License: *//p' "$top/package/CONTROL/control")
head -n 1 "$top/LICENSE" | grep -q "^$license License" || die "LICENSE is not the $license license that package/CONTROL/control names"

epoch="${SOURCE_DATE_EPOCH:-}"
if [ -z "$epoch" ]; then epoch=$(git -C "$top" log -1 --format=%ct 2>/dev/null || true); fi
if [ -z "$epoch" ]; then epoch=1704067200; fi  # no git: a fixed time keeps builds identical

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# copy_clean SRC DEST: a copy without what Python, editors and git leave in a working tree.
copy_clean() {
    mkdir -p "$2"
    (cd "$1" && find . -mindepth 1 \( -path ./CONTROL -o -name __pycache__ -o -name '*.py[co]' \
        -o -name '*~' -o -name '.*' \) -prune -o -print | tar --no-recursion -T - -cf -) | tar -xf - -C "$2"
}

# tar_gz DIR OUT FIND-ARGS...: gzipped tar of what `find FIND-ARGS` lists in DIR, in name order,
# root:root, modes 644/755, one fixed time.
tar_gz() {
    dir="$1" target="$2"
    shift 2
    (cd "$dir" && find "$@" | LC_ALL=C sort) > "$work/list"
    tar -C "$dir" --no-recursion -T "$work/list" --format=gnu --owner=0 --group=0 --numeric-owner \
        --mode=u=rwX,go=rX --mtime="@$epoch" -cf - | gzip -9n > "$target"
}

# build_ipk DATA-DIR OUT: ar archive debian-binary, control.tar.gz, data.tar.gz (ar D: no times, no owners)
build_ipk() {
    rm -rf "$work/ipk"
    mkdir "$work/ipk"
    printf '2.0\n' > "$work/ipk/debian-binary"
    tar_gz "$work/control" "$work/ipk/control.tar.gz" . -mindepth 1
    tar_gz "$1" "$work/ipk/data.tar.gz" . -mindepth 1
    (cd "$work/ipk" && ar rcD "$work/ipk.ar" debian-binary control.tar.gz data.tar.gz)
    mv "$work/ipk.ar" "$2"
}

data="$work/data"
copy_clean "$top/package" "$data"
printf '%s\n' "$version" > "$data/opt/pzem/VERSION"
mkdir "$data/opt/pzem/gui-v2"
sh "$top/tools/mkplugin.sh" "$data/opt/pzem/gui-v2/PzemMeters.json" "$version" "$epoch" >/dev/null
cp "$top/LICENSE" "$data/opt/pzem/LICENSE"

mkdir "$work/control"
sed -e "s/@VERSION@/$version/" -e "s|@MAINTAINER@|$maintainer|" "$top/package/CONTROL/control" > "$work/control/control"
cp "$top/package/CONTROL/conffiles" "$work/control/conffiles"
for script in preinst postinst prerm postrm; do
    [ -x "$top/package/CONTROL/$script" ] || die "package/CONTROL/$script must be executable: opkg runs it directly"
    cp "$top/package/CONTROL/$script" "$work/control/$script"
done
while IFS= read -r conffile; do
    [ -f "$data$conffile" ] || die "conffile $conffile is not in package/"
done < "$work/control/conffiles"

build_ipk "$data" "$work/inner.ipk"
cp "$work/inner.ipk" "$data/opt/pzem/venus-pzem.ipk"
build_ipk "$data" "$work/venus-pzem.ipk"

setup="$work/pm/PzemMeter"
copy_clean "$top/setuphelper/PzemMeter" "$setup"
[ -x "$setup/setup" ] || die "setuphelper/PzemMeter/setup must be executable: PackageManager refuses it otherwise"
printf 'v%s\n' "$version" > "$setup/version"
cp "$top/LICENSE" "$setup/LICENSE"
{
    printf 'PzemMeter %s: venus-pzem, Peacefair PZEM-016/017 energy meters as Victron meters on Venus OS.\n' "v$version"
    printf 'Maintainer: %s\n' "$maintainer"
    printf 'License: %s (see LICENSE)\n' "$license"
    printf 'Install: ./setup install; remove: ./setup uninstall.\n'
} > "$setup/ReadMe"
cp "$work/venus-pzem.ipk" "$setup/venus-pzem.ipk"
copy_clean "$top/package/opt/pzem/install" "$setup/install"
mkdir -p "$out"
tar_gz "$work/pm" "$out/PzemMeter-$version.tar.gz" PzemMeter

cp "$work/venus-pzem.ipk" "$out/venus-pzem_${version}_all.ipk"
cp "$work/venus-pzem.ipk" "$out/venus-pzem.ipk"
echo "mkipk: built $out/venus-pzem_${version}_all.ipk, venus-pzem.ipk and PzemMeter-$version.tar.gz"
