# Sourced by pzem-install.sh: our one marked line in /data/rc.local (puts the add-on back after a firmware update).

RC_LOCAL="$R/data/rc.local"
HOOK_MARK='# venus-pzem'
HOOK_LINE="[ -x /data/pzem/install/pzem-install.sh ] && /data/pzem/install/pzem-install.sh boot || true $HOOK_MARK"

# Prints rc.local without our line; with ADD=yes puts our line back at the end, but before a final `exit`.
rc_local_edit() {
    awk -v add="$1" -v line="$HOOK_LINE" -v mark="$HOOK_MARK" '
        function ours(s) { return length(s) >= length(mark) && substr(s, length(s) - length(mark) + 1) == mark }
        !ours($0) { lines[++n] = $0 }
        END {
            at = n + 1
            last = n
            while (last > 0 && lines[last] ~ /^[ \t]*$/) last--
            if (last > 0 && lines[last] ~ /^[ \t]*exit([ \t]+[0-9]+)?[ \t]*$/) at = last
            if (add == "yes" && n == 0) print "#!/bin/sh"
            for (i = 1; i <= n; i++) {
                if (add == "yes" && i == at) print line
                print lines[i]
            }
            if (add == "yes" && at == n + 1) print line
        }' "$RC_LOCAL"
}

# rc_local_write: replaces rc.local with stdin when different, keeping its mode.
rc_local_write() {
    cp -p "$RC_LOCAL" "$RC_LOCAL.pzem-new"
    cat > "$RC_LOCAL.pzem-new"
    if cmp -s "$RC_LOCAL.pzem-new" "$RC_LOCAL"; then
        rm -f "$RC_LOCAL.pzem-new"
    else
        mv -f "$RC_LOCAL.pzem-new" "$RC_LOCAL"
    fi
}

add_hook() {
    if [ ! -e "$RC_LOCAL" ]; then
        mkdir -p "$(dirname "$RC_LOCAL")"
        printf '#!/bin/sh\n%s\n' "$HOOK_LINE" > "$RC_LOCAL.pzem-new"
        chmod 755 "$RC_LOCAL.pzem-new"
        mv -f "$RC_LOCAL.pzem-new" "$RC_LOCAL"
        return 0
    fi
    rc_local_edit yes | rc_local_write
    if [ ! -x "$RC_LOCAL" ]; then
        log "warning: $RC_LOCAL is not executable, so it does not run at boot; left as it is"
    fi
}

# Takes our line out; deletes rc.local when nothing but a shebang and blank lines is left.
remove_hook() {
    if [ ! -f "$RC_LOCAL" ]; then return 0; fi
    rc_local_edit no | rc_local_write
    if ! grep -v -e '^#!' -e '^[[:space:]]*$' "$RC_LOCAL" >/dev/null; then
        rm -f "$RC_LOCAL"
    fi
}
