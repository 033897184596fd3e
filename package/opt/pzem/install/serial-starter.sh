# Sourced by pzem-install.sh: the serial-starter service template, our rule file and restarts.

TEMPLATE_SRC="$R/opt/pzem/service-template"
TEMPLATE_DIR="$R/opt/victronenergy/service-templates/dbus-pzem"
RULE_DIR="$R/data/conf/serial-starter.d"
# Named to sort after the other add-ons' files: serial-starter keeps the last alias definition it reads.
RULE_FILE="$RULE_DIR/zz-pzem.conf"
STOCK_CONF="$R/etc/venus/serial-starter.conf"

install_template() {
    update_tree "$TEMPLATE_SRC" "$TEMPLATE_DIR"
}

remove_template() {
    rm -rf "$TEMPLATE_DIR"
}

# Prints our rule: the pzem service, and `default` and `rs485` as the union of every definition
# serial-starter reads before ours (stock file, then the other add-ons' files) plus pzem.
compose_rule() {
    set --
    for f in "$RULE_DIR"/*.conf; do
        if [ -f "$f" ] && [ "$f" != "$RULE_FILE" ]; then set -- "$@" "$f"; fi
    done
    stock="$STOCK_CONF"
    if [ ! -f "$stock" ]; then stock=/dev/null; fi
    printf '%s\n' "# venus-pzem: rewritten by pzem-install.sh at install and at every boot; do not edit." \
        "# The aliases repeat what the other add-ons add: serial-starter keeps only the last definition."
    awk -v stock="$stock" -f "$INSTALL_DIR/serial-starter-rule.awk" "$stock" "$@"
}

# Status 0 when the rule file changed.
update_rule() {
    mkdir -p "$RULE_DIR"
    compose_rule > "$RULE_FILE.pzem-tmp"
    if update_file "$RULE_FILE.pzem-tmp" "$RULE_FILE" 644; then
        rm -f "$RULE_FILE.pzem-tmp"
        return 0
    fi
    rm -f "$RULE_FILE.pzem-tmp"
    return 1
}

remove_rule() {
    if [ ! -e "$RULE_FILE" ]; then return 1; fi
    rm -f "$RULE_FILE"
}

# serial-starter reads its rules once, at start.
restart_serial_starter() {
    if on_real_root && have svc && [ -e /service/serial-starter ]; then
        svc -t /service/serial-starter
    fi
}

# Our drivers' services: serial-starter's from our template (dbus-pzem.ttyUSB0, ...) and the
# gateways' (dbus-pzem.NAME). svc fails on a service svscan has not taken up yet (it does within 5 s
# of its link): that one starts by itself, so it is passed over instead of ending the install.
for_each_driver() {
    if ! on_real_root || ! have svc; then return 0; fi
    for service in "$R"/service/dbus-pzem.*; do
        if [ -e "$service" ] && ! svc "$1" "$service" 2>/dev/null; then
            log "$service is not supervised yet (svscan takes it up within 5 s): not told $1"
        fi
    done
}
