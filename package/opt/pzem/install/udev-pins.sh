# Sourced by pzem-install.sh: the udev rules that pin an adapter to the pzem service.

# Written by `pzemctl pin`; the user's work, so it stays in /data (also on remove).
PINS_SRC="$R/data/conf/pzem-udev.rules"
# Sorts after serial-starter.rules, so our VE_SERVICE is the one that counts.
PINS_RULES="$R/etc/udev/rules.d/zz-pzem.rules"

# Status 0 when the installed rules changed.
install_pins() {
    if [ -s "$PINS_SRC" ]; then
        update_file "$PINS_SRC" "$PINS_RULES" 644
        return
    fi
    remove_pins
}

remove_pins() {
    if [ ! -e "$PINS_RULES" ]; then return 1; fi
    rm -f "$PINS_RULES"
}

reload_udev() {
    if on_real_root && have udevadm; then
        udevadm control --reload-rules && udevadm trigger --subsystem-match=tty --action=add
    fi
}
