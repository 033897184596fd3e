# Sourced by pzem-install.sh: one supervised driver service per gateway of the meter map, and the watcher that follows the map.
#
# The services live in /run and are linked into /service, both volatile: configure and the boot hook
# make them from the map, so nothing of them is on the root filesystem and a firmware update needs
# nothing more. The watcher (service pzem-gateways: a shell loop, no Python while the map is
# unchanged) runs sync_gateways within WATCH_SECONDS of a change to the map.

GATEWAY_SERVICES="$R/run/pzem/services"
SERVICE_DIR="$R/service"
SYNCED="$R/run/pzem/gateways.synced"    # the checksum of the map the services were last made from
WATCHER=pzem-gateways
WATCH_SECONDS="${PZEM_WATCH_SECONDS:-10}"

# Prints "NAME URL" per usable gateway of the map; fails, printing nothing, when it cannot be read.
list_gateways() {
    PYTHONPATH="$R/opt/pzem" python3 -B -m pzem.gateway_list "$MAP"
}

map_sum() {
    cksum < "$MAP" 2>/dev/null || echo none
}

# write_service NAME COMMAND LOG-NAME: its folder in /run, linked into /service; status 0 = changed.
write_service() {
    dir="$GATEWAY_SERVICES/$1"
    mkdir -p "$dir/log"
    printf '#!/bin/sh\n%s\nexec 2>&1\nexec %s\n' \
        '# venus-pzem: made from the meter map by pzem-install.sh at every boot; do not edit.' \
        "$2" > "$dir/run.pzem-tmp"
    printf '#!/bin/sh\nexec multilog t s25000 n4 /var/log/%s\n' "$3" > "$dir/log/run.pzem-tmp"
    service_changed=1
    if update_file "$dir/run.pzem-tmp" "$dir/run" 755; then service_changed=0; fi
    if update_file "$dir/log/run.pzem-tmp" "$dir/log/run" 755; then service_changed=0; fi
    rm -f "$dir/run.pzem-tmp" "$dir/log/run.pzem-tmp"
    link="$SERVICE_DIR/$1"
    if [ ! -L "$link" ] && [ -e "$link" ]; then
        log "warning: $link is not ours; the service $1 is not started"
    elif [ ! -L "$link" ]; then
        mkdir -p "$SERVICE_DIR"
        ln -s "/run/pzem/services/$1" "$link"       # svscan starts it within 5 seconds
    elif [ "$service_changed" = 0 ] && on_real_root && have svc; then
        svc -t "$link" || true                      # runs its new run script
    fi
    return "$service_changed"
}

# remove_service NAME: unlinked first, so that svscan does not start it again.
remove_service() {
    if [ -L "$SERVICE_DIR/$1" ]; then rm -f "$SERVICE_DIR/$1"; fi
    if on_real_root && have svc; then
        svc -dx "$GATEWAY_SERVICES/$1" "$GATEWAY_SERVICES/$1/log" 2>/dev/null || true
    fi
    rm -rf "${GATEWAY_SERVICES:?}/$1"
}

# One service dbus-pzem.NAME per gateway the map declares, none for the others. Status 1 when the
# map cannot be read: then the services stay as they are.
sync_gateways() {
    sum=$(map_sum)
    mkdir -p "$GATEWAY_SERVICES"
    if ! wanted=$(list_gateways); then
        log "the meter map $MAP cannot be read: the gateway services stay as they are"
        printf '%s\n' "$sum" > "$SYNCED"
        return 1
    fi
    while read -r name url; do
        if [ -n "$name" ] && write_service "dbus-pzem.$name" \
            "/opt/pzem/dbus-pzem --config /data/conf/pzem.conf $url" "dbus-pzem.$name"; then
            log "gateway $name: service dbus-pzem.$name for $url"
        fi
    done <<EOF
$wanted
EOF
    for dir in "$GATEWAY_SERVICES"/dbus-pzem.*; do
        name="${dir##*/dbus-pzem.}"
        if [ -d "$dir" ] && ! printf '%s\n' "$wanted" | awk -v n="$name" '$1 == n { f = 1 }
                END { exit !f }'; then
            remove_service "dbus-pzem.$name"
            log "gateway $name: no longer in the map, service dbus-pzem.$name removed"
        fi
    done
    printf '%s\n' "$sum" > "$SYNCED"
}

# configure and the boot hook: the services, and the watcher (restarted: it may run an older
# installer).
install_gateway_services() {
    sync_gateways || true
    if ! write_service "$WATCHER" "/opt/pzem/install/pzem-install.sh watch-gateways" "$WATCHER" \
        && on_real_root && have svc; then
        svc -t "$SERVICE_DIR/$WATCHER" 2>/dev/null || true
    fi
}

remove_gateway_services() {
    for dir in "$GATEWAY_SERVICES"/*; do
        if [ -d "$dir" ]; then remove_service "${dir##*/}"; fi
    done
    rm -rf "$R/run/pzem"
}

# The watcher's loop: two short forks (cksum, sleep) per round; Python only when the map changed.
watch_gateways() {
    log "following $MAP: a gateway added, changed or removed there gets its service" \
        "within $WATCH_SECONDS s"
    while :; do
        synced=""
        if [ -f "$SYNCED" ]; then read -r synced < "$SYNCED" || true; fi
        if [ "$(map_sum)" != "$synced" ]; then sync_gateways || true; fi
        sleep "$WATCH_SECONDS"
    done
}
