#!/bin/sh
# The one installer of venus-pzem, shared by the opkg maintainer scripts, PzemMeter/setup and the boot hook.
#
#   configure              postinst: template, serial-starter rule, udev pins, GUI plugin, boot hook, copy in /data
#   remove                 prerm remove: stops the drivers and takes out everything configure added
#   pins                   installs /data/conf/pzem-udev.rules again (pzemctl pin calls this)
#   rule                   composes the serial-starter rule again (after another add-on changed its own)
#   boot                   the /data/rc.local hook: puts the add-on back when a firmware update removed it
#   gateways               makes the gateway services again from the meter map (a driver per gateway)
#   watch-gateways         the loop of the service pzem-gateways: gateways follows the map's changes
#   install-ipk IPK        opkg install, or opkg's work done here where there is no opkg
#   uninstall-ipk [IPK]    opkg remove, or the same without opkg
#
# Everything acts on $PKG_ROOT (default /) and can run again without harm.
set -eu

INSTALL_DIR=$(cd "$(dirname "$0")" && pwd)
. "$INSTALL_DIR/common.sh"
. "$INSTALL_DIR/serial-starter.sh"
. "$INSTALL_DIR/udev-pins.sh"
. "$INSTALL_DIR/rc-local.sh"
. "$INSTALL_DIR/ipk.sh"
. "$INSTALL_DIR/gui-plugin.sh"
. "$INSTALL_DIR/gateway-services.sh"

# preinst install set aside a map no package owned (kept after a remove, or after a firmware update).
restore_kept_map() {
    if [ -f "$MAP.pzem-keep" ]; then
        mv -f "$MAP.pzem-keep" "$MAP"
        log "kept the existing meter map $MAP"
    fi
}

# What the boot hook needs while /opt is empty: this installer, and the package without its own copy.
keep_for_restore() {
    update_tree "$R/opt/pzem/install" "$KEEP_DIR/install" || true
    if [ -f "$R/opt/pzem/venus-pzem.ipk" ]; then
        update_file "$R/opt/pzem/venus-pzem.ipk" "$KEEP_IPK" 644 || true
    elif [ ! -f "$KEEP_IPK" ]; then
        log "warning: no $KEEP_IPK, so the add-on cannot come back by itself after a firmware update"
    fi
}

# What is installed now and what the user does next (opkg and setup show this).
say_next_steps() {
    cat <<EOF
venus-pzem $(cat "$R/opt/pzem/VERSION" 2>/dev/null) is installed: the driver /opt/pzem/dbus-pzem,
the command pzemctl and a serial-starter rule for dbus-pzem on USB serial ports.
Next steps, as in the README's "Commissioning a new bus" (ttyUSB0: the port):
  1. Connect the first meter only, and look at it
       pzemctl ttyUSB0 info
  2. Give it its address
       pzemctl ttyUSB0 set-address 2
  3. Add the next meters
       pzemctl ttyUSB0 set-address 3 --from 1
  4. Set the meters up (optional)
       pzemctl ttyUSB0 set-range / set-alarm / reset-energy
  5. Write the map
       /data/conf/pzem.conf
       pzemctl check-config
  6. Pin the adapter
       pzemctl ttyUSB0 pin
What runs on each port, and the driver's log: pzemctl status
EOF
}

configure() {
    remount_rw
    restore_kept_map
    restart=no
    if install_template; then restart=yes; fi
    keep_for_restore
    install_plugin || true
    add_hook
    if install_pins; then
        reload_udev
        restart=yes
    fi
    if update_rule; then restart=yes; fi
    if [ "$restart" = yes ]; then restart_serial_starter; fi
    for_each_driver -t
    install_gateway_services
    say_next_steps
}

remove_addon() {
    for_each_driver -d
    remove_gateway_services
    remount_rw
    remove_template
    if remove_rule; then restart_serial_starter; fi
    if remove_pins; then reload_udev; fi
    remove_hook
    remove_plugin
    rm -rf "$KEEP_DIR"
    # opkg leaves the new example beside a map the user changed; the user's map stays.
    rm -f "$MAP-opkg" "$R/data/log/pzem-install.log"
    printf '%s\n' "venus-pzem is removed. Kept for a later install, if there: your meter map" \
        "/data/conf/pzem.conf and adapter pins /data/conf/pzem-udev.rules."
}

present() { [ -e "$R/opt/pzem/dbus-pzem" ] && [ -e "$TEMPLATE_DIR/run" ]; }

boot() {
    mkdir -p "$R/data/log"
    exec >>"$R/data/log/pzem-install.log" 2>&1
    if ! present; then
        take_lock
        if ! present; then
            log "$(date): venus-pzem is missing (firmware update?): installing $KEEP_IPK again"
            install_ipk "$KEEP_IPK"
            return 0
        fi
    fi
    # Present: only follow the other add-ons that changed their aliases since, put the GUI
    # plugin back if something took it away, and make the gateway services.
    if update_rule; then
        log "$(date): serial-starter rule composed again"
        restart_serial_starter
    fi
    if install_plugin; then log "$(date): GUI plugin installed again"; fi
    install_gateway_services
}

case "${1:-}" in
configure) configure ;;
remove) remove_addon ;;
pins)
    remount_rw
    if install_pins; then
        reload_udev
        restart_serial_starter
    fi
    ;;
rule) if update_rule; then restart_serial_starter; fi ;;
boot) boot ;;
gateways) sync_gateways ;;
watch-gateways) watch_gateways ;;
install-ipk)
    [ $# -eq 2 ] || die "usage: $0 install-ipk IPK"
    take_lock
    install_ipk "$2"
    ;;
uninstall-ipk)
    take_lock
    uninstall_ipk "${2:-}"
    ;;
*)
    echo "usage: $0 COMMAND, one of:" >&2
    sed -n '4,12s/^#//p' "$0" >&2
    exit 2
    ;;
esac
