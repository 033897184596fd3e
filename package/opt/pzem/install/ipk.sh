# Sourced by pzem-install.sh: installs or removes the package with opkg on this system, or, where
# there is no opkg (a folder used as root, a machine without opkg), does opkg's work itself.

PKG=venus-pzem

use_opkg() { on_real_root && have opkg; }

installed_version() {
    opkg list-installed "$PKG" 2>/dev/null | awk -v p="$PKG" '$1 == p { print $3 }'
}

ipk_version() {
    ar p "$1" control.tar.gz | tar -xzOf - ./control | sed -n 's/^Version: *//p'
}

# unpack_ipk IPK DIR: DIR/control/ (control file, maintainer scripts) and DIR/data.tar.gz
unpack_ipk() {
    mkdir -p "$2/control"
    ar p "$1" control.tar.gz > "$2/control.tar.gz"
    ar p "$1" data.tar.gz > "$2/data.tar.gz"
    tar -xzf "$2/control.tar.gz" -C "$2/control"
}

install_ipk() {
    [ -f "$1" ] || die "no package file $1"
    remount_rw
    if use_opkg; then
        installed=$(installed_version)
        offered=$(ipk_version "$1" 2>/dev/null)    # empty where there is no ar
        if [ -z "$installed" ] || { [ -n "$offered" ] && [ "$offered" != "$installed" ]; }; then
            opkg install "$1"
        elif [ "$offered" = "$installed" ] && [ -x "$R/opt/pzem/install/pzem-install.sh" ]; then
            log "$PKG $installed is installed already: configuring it again"
            "$R/opt/pzem/install/pzem-install.sh" configure
        else
            # the same version, or one unknown without ar: opkg refuses the same again unless forced
            opkg install --force-reinstall "$1"
        fi
        return 0
    fi
    log "no opkg for this root: unpacking $1 the way opkg does"
    WORK=$(mktemp -d)
    unpack_ipk "$1" "$WORK"
    PKG_ROOT="$R/"
    export PKG_ROOT
    "$WORK/control/preinst" install
    tar -xzf "$WORK/data.tar.gz" -C "$R/"
    "$WORK/control/postinst" configure
}

# Without opkg: what prerm remove, opkg and postrm remove do, from the package's own file list.
uninstall_ipk() {
    if use_opkg && [ -n "$(installed_version)" ]; then
        opkg remove "$PKG"
        return 0
    fi
    WORK=$(mktemp -d)
    ipk="$KEEP_IPK"
    if [ ! -f "$ipk" ]; then ipk="${1:-}"; fi
    if [ -n "$ipk" ] && [ -f "$ipk" ]; then unpack_ipk "$ipk" "$WORK"; fi
    remove_addon
    if [ -f "$WORK/data.tar.gz" ]; then remove_payload "$WORK"; fi
    rm -rf "$R/opt/pzem"
}

# Deletes the package's files, deepest first; keeps a conffile the user changed, as opkg does.
remove_payload() {
    tar -tzf "$1/data.tar.gz" | LC_ALL=C sort -r | while IFS= read -r entry; do
        path="${entry#./}"
        path="${path%/}"
        target="$R/$path"
        if [ -d "$target" ] && [ ! -L "$target" ]; then
            rmdir "$target" 2>/dev/null || true
            continue
        fi
        if grep -qx "/$path" "$1/control/conffiles" 2>/dev/null; then
            mkdir -p "$1/shipped"
            tar -xzf "$1/data.tar.gz" -C "$1/shipped" "$entry"
            if [ -f "$target" ] && ! cmp -s "$1/shipped/$path" "$target"; then
                log "keeping $target: it was changed"
                continue
            fi
        fi
        rm -f "$target"
    done
}
