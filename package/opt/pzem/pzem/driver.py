"""dbus-pzem [--config FILE] TTY: publish every PZEM meter on one RS-485 port on D-Bus.

Exit codes: 0 stopped by a signal, 1 the port is missing or vanished (or no D-Bus), 2 no meter
answered at start (so serial-starter tries the next driver on this port), 3 bad command line.
"""
import argparse
import logging
import os
import signal
import threading
import sys
import time

from . import meter_map, modbus, numbers, roles, tty
from .meter import meter_log
from .meter_map import MeterSpec
from .poll import Poller

PROBE_SECONDS = 4.0     # serial-starter waits for us: give up well within 5 s
INTERVAL = 1.0          # the meters refresh about once a second
SCAN_TIMEOUT = 0.15     # a PZEM answers a one-register read in about 0.1 s
MAP_CHECK_SECONDS = 2.0

log = logging.getLogger('pzem')


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(3, '%s: %s\n' % (self.prog, message))    # 2 means "no meter answered"


def parse_args(argv):
    p = _Parser(prog='dbus-pzem', description=__doc__.split('\n')[0])
    p.add_argument('tty', help="serial port: a name under /dev (ttyUSB0) or a path")
    p.add_argument('--config', default=meter_map.DEFAULT_PATH,
                   help='meter map (default %(default)s)')
    p.add_argument('--interval', type=numbers.seconds, help='seconds between polls of one meter')
    p.add_argument('--timeout', type=numbers.positive_seconds,
                   help='seconds to wait for a reply')
    p.add_argument('--stopbits', type=int, choices=(1, 2))
    p.add_argument('--scan-timeout', type=numbers.positive_seconds, default=SCAN_TIMEOUT,
                   help='seconds to wait for a reply when looking for meters (default %(default)s)')
    p.add_argument('--debug', action='store_true', help='log every dropped reading')
    args = p.parse_args(argv)
    if not tty.name(args.tty):
        p.error('give the serial port, e.g. ttyUSB0')
    return args


def read_version():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        with open(os.path.join(here, 'VERSION')) as f:
            return f.read().strip()
    except OSError:
        return 'unknown'


def pinned(path):
    """True when udev gives this port to our driver alone (a `pzemctl pin` rule)."""
    from . import udev      # here: it needs subprocess, and only a driver without meters asks
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


class MapFollower(object):
    """The map as the driver uses it: re-read when the file changes; an edit that leaves
    something out is not applied (the last good map stays), each problem logged once."""

    def __init__(self, path, the_map):
        self.path = path
        self.current = the_map
        self._stamp = self._stat()
        self._reported = set(the_map.problems)

    def _stat(self):
        try:
            st = os.stat(self.path)
            return st.st_mtime_ns, st.st_size, st.st_ino
        except OSError:
            return None

    def touched(self):
        """True when the file is not as it was last read (one stat: asked every 2 s)."""
        return self._stat() != self._stamp

    def changed(self):
        """The new map when the file changed and can be used, else None."""
        stamp = self._stat()
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        new = meter_map.load(self.path)
        fresh = [p for p in new.problems if p not in self._reported]
        for problem in fresh:
            log.error('map: %s', problem)
        self._reported = set(new.problems)
        if new.broken or not new.readable:
            if fresh:
                log.error('map: %s was edited but has the problem(s) above: the map as it was '
                          'before stays in use until they are fixed', self.path)
            return None
        self.current = new
        return new


def found_section(port, model, when):
    return ['%s:%s: a %s found on %s by dbus-pzem; no section named it.' % (
                port, '%d', model.name, time.strftime('%Y-%m-%d %H:%M', when)),
            'Its role steers nothing; set role, name and the rest here or in the Venus GUI.']


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format='%(levelname)s %(message)s', stream=sys.stderr)
    started = time.monotonic() - process_age()
    version = read_version()
    port = tty.name(args.tty)
    the_map = meter_map.load(args.config)
    options = the_map.bus_options(port)
    interval = args.interval if args.interval is not None else options.pop('interval', INTERVAL)
    options.pop('interval', None)
    scan = options.pop('scan', True)
    for key in ('timeout', 'stopbits'):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    bus = modbus.Bus(args.tty, **options)
    log.info('dbus-pzem %s on %s: %d baud 8%s%d, poll every %gs, map %s%s', version, port,
             bus.baudrate, bus.parity, bus.stopbits, interval, args.config,
             '' if scan else ', no search for meters the map does not name')
    for problem in the_map.problems:
        log.error('map: %s', problem)
    try:
        bus.open()
    except modbus.PortGone as e:
        log.error('%s', e)
        log.info('stopping: the serial port cannot be used')
        return 1

    # Imported here so that a bad port is reported even where D-Bus is missing.
    import dbus
    import dbus.mainloop.glib
    from gi.repository import GLib
    from . import energy, system
    from .poll_thread import PollThread
    from .publisher import Context, Instances, Publisher
    dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
    dbus.mainloop.glib.threads_init()   # the poll thread sends on the same connections
    loop = GLib.MainLoop()
    outcome = {'code': 0}
    follower = MapFollower(args.config, the_map)
    # Held by the poll thread for each tick, and by the main thread around everything it does
    # to the meters (changes from D-Bus, scheduled re-registrations): see poll_thread.py.
    lock = threading.RLock()

    def stop(code, why):
        with lock:
            first = outcome.get('why') is None
            outcome.update(code=code, why=why)
        if first:
            log.info('stopping: %s', why)
        poll_thread.halt()
        loop.quit()

    def soon(func):
        def run():
            with lock:
                func()
            return False
        GLib.idle_add(run)

    def serve_pending(most=50):
        context = GLib.MainContext.default()
        for _ in range(most):
            if not context.iteration(False):
                return

    try:
        connection = dbus.SystemBus(private=True)
    except dbus.DBusException as e:
        log.error('cannot reach the system D-Bus (%s): no meter can be published', e)
        log.info('stopping: no D-Bus')
        bus.close()
        return 1
    directions = system.Directions(connection)
    context = Context(port, args.config, version, Instances(schedule=soon), lock=lock,
                      directions=lambda spec: directions.get(spec.vebus),
                      stores=lambda ident, log: energy.EnergyStore(connection, ident,
                                                                   logger=log),
                      energy_for=lambda model: energy.PhaseEnergy(model.max_kw),
                      on_start=lambda publisher: warn_if_unsigned_grid([publisher]))

    def publish(spec, phases):
        meter_log_ = meter_log(port, spec.addresses)
        try:
            publisher = Publisher(spec, phases, context, meter_log_)
        except Exception as e:      # a D-Bus failure must not take the other meters down
            meter_log_.error('answers, but could not be published on D-Bus: %s', e)
            return None
        return publisher

    def found(address, model):
        from . import map_update    # here: the driver loads it only when it writes the map
        if follower.current.mentions(port, address):
            return None     # the map names it (in a section it left out): not ours to add
        section = '%s:%d' % (port, address)
        role = roles.DEFAULT_ROLE[model.family]
        comments = {section: [line.replace('%d', str(address))
                              for line in found_section(port, model, time.localtime())]}
        try:
            map_update.update_many(args.config, {section: {'role': role}}, comments)
            sections = (section,)
        except map_update.MapWriteError as e:
            meter_log(port, [address]).warning(
                'could not add it to the map (%s): published as %s; GUI changes to it are '
                'refused until the map can be written', e, role)
            sections = ()
        return MeterSpec.single(address, role=role, sections=sections)

    ess = {'value': None}

    def warn_if_unsigned_grid(publishers):
        if ess['value'] != 0:
            return
        for p in publishers:
            if p.role == 'grid' and p.spec.sign is None:
                p.log.warning(
                    'a grid meter without sign = vebus, while ESS regulates on an external grid '
                    'meter (Settings > ESS > Grid metering: External meter): a PZEM cannot tell '
                    'import from export, so ESS would take export for import. If the meter sits '
                    'right at the inverter/charger\'s AC input, add "sign = vebus" to its '
                    'section; otherwise give it another role, or set Grid metering to '
                    'Inverter/Charger')

    def on_ess(value):
        with lock:
            changed = value != ess['value']
            ess['value'] = value
            if changed:
                warn_if_unsigned_grid(poller.published)

    poller = Poller(bus, port, follower.current.meters_for(port), interval, publish, found,
                    scan=scan, scan_timeout=args.scan_timeout)
    try:
        # D-Bus is served between the probes: a meter is on the bus, answering, at once
        count = poller.start(deadline=started + PROBE_SECONDS, between=serve_pending)
    except modbus.PortGone as e:
        log.error('%s', e)
        log.info('stopping: the serial port went away')
        return 1
    if count:
        log.info('%d meter(s) published in %.1fs', count, time.monotonic() - started)
    elif poller.answered:
        log.error('%d meter(s) answered (address %s) but none could be published: see the '
                  'lines above; the driver stays and tries again', len(poller.answered),
                  ', '.join(map(str, sorted(poller.answered))))
    elif pinned(bus.path):
        # serial-starter restarts a pinned driver at once: exiting would only loop.
        log.warning('no PZEM meter answered on %s yet; the port is pinned to this driver, so it '
                    'stays and keeps looking', port)
    else:
        log.info('stopping: no PZEM meter answered on %s: exiting so serial-starter can try '
                 'other drivers on this port', port)
        poller.close()
        bus.close()
        return 2
    ess_watch = system.EssGridMetering(connection, on_ess)

    map_due = {'at': time.monotonic() + MAP_CHECK_SECONDS}
    pending = set()     # what the poll thread handed to the main loop and is not done yet

    def tick():
        """The poll thread's tick (lock held): poll one meter. What creates or closes a D-Bus
        connection (a probe that publishes a meter, an edited map) is handed to the main loop:
        dbus-python must not set a connection up or take it down while the main loop may be
        dispatching on it."""
        slot_started = time.monotonic()
        try:
            poller.poll_next()
            if 'probe' not in pending and poller.wants_probe(slot_started):
                hand_over('probe', lambda: poller.probe(slot_started))
        except modbus.PortGone as e:
            log.error('%s', e)
            stop(1, 'the serial port went away')
        except Exception:   # a bug must not end the polling of every meter silently
            log.exception('poll failed; going on')
        # The map is looked at from here, not from a timer of its own (one wake-up less);
        # only an edit wakes the main loop.
        if slot_started >= map_due['at']:
            map_due['at'] = slot_started + MAP_CHECK_SECONDS
            if 'map' not in pending and follower.touched():
                hand_over('map', check_map)
        return poller.slot

    def hand_over(what, func):
        def run():
            with lock:
                pending.discard(what)
                try:
                    func()
                except modbus.PortGone as e:
                    log.error('%s', e)
                    stop(1, 'the serial port went away')
                except Exception:
                    log.exception('%s failed; going on', what)
            return False
        pending.add(what)
        GLib.idle_add(run)

    applied = {'bus': the_map.bus_options(port)}

    def check_map():
        new = follower.changed()
        if new is not None:
            log.info('map: %s changed: applying it', args.config)
            poller.apply_map(new.meters_for(port))
            if new.bus_options(port) != applied['bus']:
                applied['bus'] = new.bus_options(port)
                log.info('map: the [bus] settings changed: they apply when the driver starts '
                         'again (svc -t /service/dbus-pzem.%s)', port)

    poll_thread = PollThread(tick, lock, on_crash=lambda: stop(1, 'the poll loop failed'))
    # The probe's readings are fresh: answer D-Bus first, poll again one slot later.
    poll_thread.start(poller.slot)
    for signum, name in ((signal.SIGTERM, 'SIGTERM'), (signal.SIGINT, 'SIGINT')):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum,
                             lambda name=name: stop(0, 'asked to (%s)' % name) or False)
    try:
        loop.run()
    finally:
        poll_thread.stop()
        ess_watch.close()
        poller.close()
        directions.close()
        bus.close()
    return outcome['code']
