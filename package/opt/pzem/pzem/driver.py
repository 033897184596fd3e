"""dbus-pzem [--config FILE] TTY: publish every PZEM meter on one RS-485 port on D-Bus.

Exit codes: 0 stopped by a signal, 1 the port is missing or vanished, 2 no configured meter
answered at start (so serial-starter tries the next driver on this port), 3 bad command line.
"""
import argparse
import logging
import os
import signal
import sys
import time

from . import meter_map, modbus, udev
from .poll import Poller, Wanted
from .publisher import Instances, Publisher

DEFAULT_MAP = '/data/conf/pzem.conf'
PROBE_SECONDS = 4.0     # serial-starter waits for us: give up well within 5 s
BUS_DEFAULTS = {'interval': 1.0, 'baudrate': 9600, 'stopbits': 2, 'parity': 'N',
                'timeout': 0.5, 'local_echo': False}

log = logging.getLogger('pzem')


def parse_args(argv):
    p = argparse.ArgumentParser(prog='dbus-pzem', description=__doc__.split('\n')[0])
    p.add_argument('tty', help="serial port: a name under /dev (ttyUSB0) or a path")
    p.add_argument('--config', default=DEFAULT_MAP, help='meter map (default %(default)s)')
    p.add_argument('--interval', type=float, help='seconds between polls of one meter')
    p.add_argument('--timeout', type=float, help='seconds to wait for a reply')
    p.add_argument('--stopbits', type=int, choices=(1, 2))
    p.add_argument('--reprobe', type=float, default=60.0,
                   help='seconds between tries of an address that did not answer')
    p.add_argument('--debug', action='store_true', help='log every dropped reading')
    return p.parse_args(argv)


def read_version():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        with open(os.path.join(here, 'VERSION')) as f:
            return f.read().strip()
    except OSError:
        return 'unknown'


def wanted_meters(the_map, port):
    """What to look for on `port`: the map's meters and groups, or address 1 when it has none."""
    if not the_map.has_sections_for(port):
        return [Wanted([meter_map.MeterConfig(address=1)])]
    singles, groups = [], {}
    for config in the_map.meters_for(port):
        if config.group:
            groups.setdefault(config.group, []).append(config)
        else:
            singles.append(Wanted([config]))
    return singles + [Wanted(configs) for configs in groups.values()]


def pinned(path):
    """True when udev gives this port to our driver alone (a `pzemctl pin` rule)."""
    try:
        return udev.properties(path).get('VE_SERVICE') == 'pzem'
    except LookupError:
        return False


def process_age():
    """Seconds since this process started: serial-starter's wait began then, imports included."""
    try:
        with open('/proc/self/stat') as f:
            ticks = int(f.read().rsplit(')', 1)[1].split()[19])     # field 22: starttime
        with open('/proc/uptime') as f:
            return max(0.0, float(f.read().split()[0]) - ticks / os.sysconf('SC_CLK_TCK'))
    except (OSError, ValueError, IndexError):
        return 0.0


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format='%(levelname)s %(message)s', stream=sys.stderr)
    started = time.monotonic() - process_age()
    version = read_version()
    port = os.path.basename(args.tty)
    the_map = meter_map.load(args.config)
    for problem in the_map.problems:
        log.error('map: %s', problem)

    options = dict(BUS_DEFAULTS)
    options.update(the_map.bus_options(port))
    for key in ('interval', 'timeout', 'stopbits'):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    log.info('dbus-pzem %s on %s: %d baud 8%s%d, poll every %gs, map %s', version, port,
             options['baudrate'], options['parity'], options['stopbits'], options['interval'],
             args.config)

    bus = modbus.Bus(args.tty, baudrate=options['baudrate'], stopbits=options['stopbits'],
                     parity=options['parity'], timeout=options['timeout'],
                     local_echo=options['local_echo'])
    try:
        bus.open()
    except modbus.PortGone as e:
        log.error('%s', e)
        return 1

    # Imported here so that a bad port is reported even where D-Bus is missing.
    import dbus.mainloop.glib
    from gi.repository import GLib
    dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
    loop = GLib.MainLoop()
    outcome = {'code': 0}

    def stop(code):
        outcome['code'] = code
        loop.quit()

    def soon(func):
        GLib.idle_add(lambda: bool(func()) and False)

    instances = Instances(schedule=soon)

    def publish(phases, place):
        try:
            return Publisher(port, phases, place, args.config, version, instances)
        except Exception as e:      # a D-Bus failure must not take the other meters down
            log.error('%s: could not publish %s: %s', port,
                      ','.join(str(m.address) for _, m in phases), e)
            return None

    wanted = wanted_meters(the_map, port)
    poller = Poller(bus, port, wanted, options['interval'], publish, reprobe=args.reprobe)
    try:
        found = poller.probe(deadline=started + PROBE_SECONDS)
    except modbus.PortGone as e:
        log.error('%s', e)
        return 1
    addresses = ', '.join(str(a) for w in wanted for a in w.addresses)
    if found:
        log.info('%s: %d meter(s) published in %.1fs', port, found, time.monotonic() - started)
    elif pinned(bus.path):
        # serial-starter restarts a pinned driver at once: exiting would only loop.
        log.warning('no PZEM meter answered on %s at address %s yet; the port is pinned to this '
                    'driver, so it stays and tries again every %gs', port, addresses, args.reprobe)
    else:
        log.error('no PZEM meter answered on %s at address %s: exiting so serial-starter can '
                  'try other drivers on this port', port, addresses)
        poller.close()
        bus.close()
        return 2

    def tick():
        try:
            delay = poller.tick()
        except modbus.PortGone as e:
            log.error('%s', e)
            stop(1)
            return False
        except Exception:   # a bug must not end the polling of every meter silently
            log.exception('poll failed; going on')
            delay = options['interval']
        GLib.timeout_add(int(delay * 1000), tick)
        return False

    # The probe's readings are fresh: answer D-Bus first, poll again one slot later.
    GLib.timeout_add(int(1000 * options['interval'] / max(1, found)), tick)
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, lambda: stop(0) or False)
    try:
        loop.run()
    finally:
        poller.close()
        bus.close()
    return outcome['code']
