# Sourced by pzem-install.sh: the target root, messages, the real-root guard, remount, file updates, lock.

# opkg passes the target root as PKG_ROOT ("/" or e.g. "/tmp/root/"); "" and "/" both mean this system.
R="${PKG_ROOT:-}"
R="${R%/}"

MAP="$R/data/conf/pzem.conf"
KEEP_DIR="$R/data/pzem"
KEEP_IPK="$KEEP_DIR/venus-pzem.ipk"

log() { printf 'pzem-install: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

# svc, udevadm, opkg and remount-rw.sh act on the running system: only when installing into it.
on_real_root() { [ -z "$R" ]; }

remount_rw() {
    if on_real_root && [ -x /opt/victronenergy/swupdate-scripts/remount-rw.sh ]; then
        /opt/victronenergy/swupdate-scripts/remount-rw.sh || log "warning: remount-rw.sh failed"
    fi
}

# update_file SRC DEST MODE: replaces DEST atomically when its content differs; status 0 = changed.
update_file() {
    if [ -f "$2" ] && cmp -s "$1" "$2"; then
        return 1
    fi
    mkdir -p "$(dirname "$2")"
    cp "$1" "$2.pzem-new"
    chmod "$3" "$2.pzem-new"
    mv -f "$2.pzem-new" "$2"
}

# update_tree SRC DEST: update_file for every file under SRC, keeping run bits; status 0 = changed.
update_tree() {
    tree_changed=1
    while IFS= read -r rel; do
        [ -n "$rel" ] || continue
        mode=644
        if [ -x "$1/$rel" ]; then mode=755; fi
        if update_file "$1/$rel" "$2/$rel" "$mode"; then tree_changed=0; fi
    done <<EOF
$(cd "$1" && find . -type f | LC_ALL=C sort)
EOF
    return "$tree_changed"
}

# The boot hook and PackageManager may both reinstall after a firmware update: one at a time.
LOCK_DIR="$R/run/pzem-install.lock"
take_lock() {
    mkdir -p "$R/run"
    waited=0
    until mkdir "$LOCK_DIR" 2>/dev/null; do
        waited=$((waited + 1))
        if [ "$waited" -ge 120 ]; then
            log "warning: $LOCK_DIR is 2 minutes old, taking it over"
            break
        fi
        sleep 1
    done
    HOLDS_LOCK=yes
}

WORK=""
HOLDS_LOCK=no
cleanup() {
    if [ -n "$WORK" ]; then rm -rf "$WORK"; fi
    if [ "$HOLDS_LOCK" = yes ]; then rmdir "$LOCK_DIR" 2>/dev/null || true; fi
}
trap cleanup EXIT
