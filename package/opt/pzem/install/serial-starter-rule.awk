# Composes the service and alias lines of venus-pzem's serial-starter rule (see compose_rule).
# Input: the stock serial-starter.conf (or /dev/null when there is none, then Victron's documented
# stock aliases are assumed), then every other *.conf in serial-starter.d in the order serial-starter
# reads them. Output: `default` and `rs485` holding, in first-seen order, every program any of them
# put there, then pzem. A name nobody defines any more (an add-on that was uninstalled) is dropped.

function add(alias, value, trusted,    n, i, parts, p) {
    n = split(value, parts, ":")
    for (i = 1; i <= n; i++) {
        p = parts[i]
        if (p !~ /^[A-Za-z0-9_]+$/ || p == "pzem") continue
        if (trusted) known[p] = 1
        if ((alias, p) in seen) continue
        seen[alias, p] = 1
        order[alias] = order[alias] ":" p
    }
}

function emit(alias,    n, i, parts, out) {
    out = ""
    n = split(order[alias], parts, ":")
    for (i = 1; i <= n; i++)
        if (parts[i] != "" && parts[i] in known) out = out parts[i] ":"
    print "alias " alias " " out "pzem"
}

BEGIN {
    if (stock == "/dev/null") {
        add("default", "gps:vedirect", 1)
        add("rs485", "cgwacs:fzsonick:imt:modbus", 1)
    }
}

{ sub(/#.*/, "") }

$1 == "service" && NF >= 3 { known[$2] = 1 }

$1 == "alias" && NF >= 3 {
    known[$2] = 1
    if ($2 == "default" || $2 == "rs485") add($2, $3, FILENAME == stock)
}

END {
    print "service pzem dbus-pzem"
    emit("default")
    emit("rs485")
}
