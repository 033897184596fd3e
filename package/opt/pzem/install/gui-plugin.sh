# Sourced by pzem-install.sh: the gui-v2 UI plugin ("PZEM meters" page, device-page entry).
# gui-v2 (Venus OS v3.80 and later) reads /data/apps/enabled/<app>/gui-v2/*.json and follows the
# folder while it runs; before v3.80 nothing reads /data/apps, so the files are harmless there.
# The JSON ships in /opt/pzem/gui-v2/; it is copied to /data (kept over firmware updates) and
# enabled by a link, at every install and every boot.

APP=venus-pzem
APP_DIR="$R/data/apps/available/$APP"
APP_LINK="$R/data/apps/enabled/$APP"
APP_LINK_TARGET="../available/$APP"
PLUGIN_SRC="$R/opt/pzem/gui-v2"

# install_plugin: copies our JSON, drops one an older version had under another name, enables
# the app; status 0 = something changed.
install_plugin() {
    plugin_changed=1
    if ! [ -d "$PLUGIN_SRC" ]; then
        log "warning: no $PLUGIN_SRC: the GUI page is not installed"
        return 1
    fi
    if update_tree "$PLUGIN_SRC" "$APP_DIR/gui-v2"; then plugin_changed=0; fi
    for old in "$APP_DIR/gui-v2"/*; do
        if [ -e "$old" ] && ! [ -e "$PLUGIN_SRC/${old##*/}" ]; then
            rm -f "$old"
            plugin_changed=0
        fi
    done
    if ! [ -L "$APP_LINK" ] || [ "$(readlink "$APP_LINK")" != "$APP_LINK_TARGET" ]; then
        mkdir -p "$R/data/apps/enabled"
        rm -rf "$APP_LINK"
        ln -s "$APP_LINK_TARGET" "$APP_LINK"
        plugin_changed=0
    fi
    return "$plugin_changed"
}

# remove_plugin: the link and our app folder; /data/apps itself only if we left it empty.
remove_plugin() {
    if [ -L "$APP_LINK" ]; then rm -f "$APP_LINK"; fi
    rm -rf "$APP_DIR"
    for dir in "$R/data/apps/enabled" "$R/data/apps/available" "$R/data/apps"; do
        rmdir "$dir" 2>/dev/null || true
    done
}
