"""A live view of what Venus sees: every com.victronenergy.* service on the bus and its values.

It is an independent D-Bus client (plain dbus-python calls, like the GUI's GetItems and
ItemsChanged), refreshed in place. Usage: venus_view.py [--once] [--seconds N]
"""
import argparse
import sys
import time

import dbus

SHOWN = ('/DeviceInstance', '/ProductName', '/CustomName', '/Connected', '/Role', '/Position',
         '/Settings/MonitorMode', '/NrOfPhases', '/Ac/Power', '/Ac/Energy/Forward',
         '/Ac/Frequency', '/Dc/0/Voltage', '/Dc/0/Current', '/Dc/0/Power',
         '/History/EnergyIn', '/History/EnergyOut')


def snapshot(bus):
    lines = []
    names = sorted(n for n in bus.list_names() if str(n).startswith('com.victronenergy.'))
    for name in names:
        if name == 'com.victronenergy.settings':
            continue
        try:
            items = bus.get_object(name, '/', introspect=False).GetItems(
                dbus_interface='com.victronenergy.BusItem', timeout=2)
        except dbus.DBusException as e:
            lines.append('%s: %s' % (name, e.get_dbus_message()))
            continue
        lines.append(str(name))
        phases = sorted({p.split('/')[2] for p in items if p.startswith('/Ac/L')})
        paths = list(SHOWN) + ['/Ac/%s/%s' % (ph, q) for ph in phases
                               for q in ('Voltage', 'Current', 'Power', 'Energy/Forward')]
        for path in paths:
            if path in items:
                lines.append('    %-24s %s' % (path, items[path]['Text']))
    return lines or ['(no com.victronenergy services on the bus yet)']


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--once', action='store_true', help='print one snapshot and exit')
    p.add_argument('--seconds', type=float, default=0, help='stop after N seconds (0: never)')
    args = p.parse_args()
    bus = dbus.SystemBus()
    end = time.monotonic() + args.seconds if args.seconds else None
    while True:
        lines = snapshot(bus)
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
