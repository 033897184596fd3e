"""What Venus sees: every com.victronenergy.* meter on the system bus, one line each (and one per
phase of a group), with its power factor and its /Pzem/Errors counts, in 80 columns.

It is an independent D-Bus client: plain dbus-python GetItems calls, as the GUI makes them.
Usage: venus_view.py [--once] [--seconds N]
"""
import argparse
import sys
import time

WIDTH = 80
ERRORS = ('NoReply', 'BadFrame', 'Exception', 'Implausible')
ROW = '{:<15} {:<8} {:<4} {:>8} {:>6} {:>6} {:>4} {:>4} {:>8} {:>8}'
WIDTHS = {'P': 8, 'U': 6, 'I': 6, 'PF': 4, 'Hz': 4, 'E': 8}
HEADER = ROW.format('meter', 'role', 'link', 'P W', 'U V', 'I A', 'PF', 'Hz', 'E kWh', 'back kWh')
ERROR_ROW = '{:<15}' + ' {:>11}' * len(ERRORS)


def read_meters(bus):
    """[(service name, {path: value} or None, problem)] for every com.victronenergy service
    but localsettings and the driver's own port services (no meters), in name order."""
    import dbus
    found = []
    for name in sorted(str(n) for n in bus.list_names()):
        if not name.startswith('com.victronenergy.') or name == 'com.victronenergy.settings' \
                or name.startswith('com.victronenergy.pzem.'):
            continue
        try:
            items = bus.get_object(name, '/', introspect=False).GetItems(
                dbus_interface='com.victronenergy.BusItem', timeout=2)
        except dbus.DBusException as e:
            found.append((name, None, e.get_dbus_message() or e.get_dbus_name()))
            continue
        found.append((name, {str(p): plain(v['Value']) for p, v in items.items()}, None))
    return found


def plain(value):
    """A D-Bus value as Python: None for the empty array Venus uses for 'invalid'."""
    if isinstance(value, (list, tuple)) and len(value) == 0:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if isinstance(value, float) else int(value)
    return str(value) if isinstance(value, str) else value


def number(value, decimals, column):
    """The value with as many of `decimals` as fit its column; '-' when invalid."""
    if not isinstance(value, (int, float)):
        return '-'
    for places in range(decimals, -1, -1):
        text = '%.*f' % (places, value)
        if len(text) <= WIDTHS[column]:
            break
    return text


def render(meters, seen=None):
    """The view as lines of at most WIDTH characters.

    `seen`: the services seen connected so far, kept by the caller from one refresh to the next
    (updated here). /Connected 0 then shows as 'lost' for a service seen connected before and
    'wait' for one not read yet; without `seen` (one snapshot), as 'no'."""
    if not meters:
        return ['(no com.victronenergy meter on the bus yet)']
    lines = [HEADER]
    errors = [ERROR_ROW.format('/Pzem/Errors', *ERRORS)]
    for name, items, problem in meters:
        if items is None:
            lines.append(('%s: %s' % (name, problem))[:WIDTH])
            continue
        lines.extend(meter_rows(name, items, link(name, items.get('/Connected'), seen)))
        label = (items.get('/CustomName') or name.split('.')[-1])[:15]
        counts = [items.get('/Pzem/Errors/' + e) for e in ERRORS]
        errors.append(ERROR_ROW.format(label, *('%d' % c if isinstance(c, int) else '-'
                                               for c in counts)))
    return lines + [''] + errors


def link(name, connected, seen):
    """'ok', or for a service not connected 'lost' / 'wait' / 'no' (see render)."""
    if connected == 1:
        if seen is not None:
            seen.add(name)
        return 'ok'
    if connected != 0:
        return '?'
    if seen is None:
        return 'no'
    return 'lost' if name in seen else 'wait'


def meter_rows(name, items, link):
    get = items.get
    label = (get('/CustomName') or name.split('.')[-1])[:15]
    role = name.split('.')[2] if name.count('.') >= 3 else '?'
    if '/Dc/0/Voltage' in items:
        energy = get('/History/EnergyOut', get('/History/EnergyIn'))
        return [ROW.format(label, role, link, number(get('/Dc/0/Power'), 1, 'P'),
                           number(get('/Dc/0/Voltage'), 2, 'U'),
                           number(get('/Dc/0/Current'), 2, 'I'), '', '',
                           number(energy, 3, 'E'), '')]
    phases = sorted({p.split('/')[2] for p in items if p.startswith('/Ac/L')})
    single = len(phases) == 1

    def phase(ph, field, decimals, column):
        return number(get('/Ac/%s/%s' % (ph, field)), decimals, column)

    first = ROW.format(label, role, link, number(get('/Ac/Power'), 1, 'P'),
                       phase(phases[0], 'Voltage', 1, 'U') if single else '',
                       phase(phases[0], 'Current', 2, 'I') if single else '',
                       number(get('/Ac/PowerFactor'), 2, 'PF'),
                       number(get('/Ac/Frequency'), 1, 'Hz'),
                       number(get('/Ac/Energy/Forward'), 3, 'E'),
                       number(get('/Ac/Energy/Reverse'), 3, 'E'))
    if single or not phases:
        return [first]
    return [first] + [ROW.format('  ' + ph, '', '', phase(ph, 'Power', 1, 'P'),
                                 phase(ph, 'Voltage', 1, 'U'), phase(ph, 'Current', 2, 'I'),
                                 phase(ph, 'PowerFactor', 2, 'PF'), '',
                                 phase(ph, 'Energy/Forward', 3, 'E'),
                                 phase(ph, 'Energy/Reverse', 3, 'E')) for ph in phases]


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--once', action='store_true', help='print one snapshot and exit')
    p.add_argument('--seconds', type=float, default=0, help='stop after N seconds (0: never)')
    args = p.parse_args()
    import dbus
    bus = dbus.SystemBus()
    end = time.monotonic() + args.seconds if args.seconds else None
    seen = None if args.once else set()
    while True:
        lines = render(read_meters(bus), seen)
        if args.once or not sys.stdout.isatty():
            print('\n'.join(lines) + '\n', flush=True)
        else:
            sys.stdout.write('\x1b[H\x1b[J' + time.strftime('%H:%M:%S  what Venus sees\n\n')
                             + '\n'.join(lines) + '\n')
            sys.stdout.flush()
        if args.once or (end and time.monotonic() >= end):
            return 0
        time.sleep(1.0)


if __name__ == '__main__':
    sys.exit(main())
