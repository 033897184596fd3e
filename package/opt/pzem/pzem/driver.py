"""dbus-pzem [--config FILE] PORT: publish every PZEM meter on one RS-485 port on D-Bus.

PORT is a tty (serial-starter's ttyUSB0, or a path) or a network gateway's address,
tcp://HOST:PORT (transparent) or mbtcp://HOST:PORT (Modbus TCP): gateway_driver.py.

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

from gi.repository import GLib

from . import meter_map, modbus, net_link, numbers, roles, tty, udev
from .meter import meter_log
from .meter_map import MeterSpec
from .poll import Poller
from .poll_thread import MainLoopLock, PollThread

PROBE_SECONDS = 4.0     # serial-starter waits for us: give up well within 5 s
INTERVAL = 1.0          # the meters refresh about once a second
SCAN_TIMEOUT = 0.15     # a PZEM answers a one-register read in about 0.1 s
MAP_CHECK_SECONDS = 2.0
WORK_SECONDS = 15.0     # close() waits this long for a request that has the port

EXIT_STOPPED, EXIT_PORT, EXIT_NO_METER, EXIT_COMMAND_LINE = 0, 1, 2, 3

log = logging.getLogger('pzem')


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(EXIT_COMMAND_LINE, '%s: %s\n' % (self.prog, message))    # not argparse's 2


def parse_args(argv):
    p = _Parser(prog='dbus-pzem', description=__doc__.split('\n')[0])
    p.add_argument('tty', metavar='PORT', help="serial port: a name under /dev (ttyUSB0) or a "
                   "path; or a network gateway: tcp://HOST:PORT (transparent) or "
                   "mbtcp://HOST:PORT (Modbus TCP)")
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
    if net_link.is_url(args.tty):
        try:
            net_link.parse_url(args.tty)
        except ValueError as e:
            p.error(str(e))
    elif not tty.name(args.tty):
        p.error('give the serial port, e.g. ttyUSB0')
    return args


def read_version():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        with open(os.path.join(here, 'VERSION')) as f:
            return f.read().strip()
    except OSError:
        return 'unknown'


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


class Driver(object):
    """One port and every meter on it, from start to stop; `run()` returns the exit code.

    The steps, in order: open() the port, connect() to D-Bus, start_up() (the map's meters and
    the likely addresses, within the start-up budget), watch() the rest of the system,
    start_polling(), then the GLib main loop until stop(), and close(). While it runs, the poll
    thread calls tick() once per slot with the lock held and hands over to the main loop what
    must run there (a probe that may publish a meter, an edited map: check_map()).

    The port is a tty; port_name(), make_bus(), describe_bus() and reason_to_stay() are the only
    methods that know it. A network gateway is a subclass that overrides them
    (gateway_driver.GatewayDriver): its bus reads and writes as modbus.Bus does, and instead of
    raising modbus.PortGone when the connection goes it connects again.
    """

    def __init__(self, device, config=meter_map.DEFAULT_PATH, interval=None, timeout=None,
                 stopbits=None, scan_timeout=SCAN_TIMEOUT, started=None, clock=time.monotonic):
        """device: the port as the command line gives it; interval, timeout, stopbits: the
        command line's, over the map's [bus]; started: when serial-starter's wait began (the
        start-up budget counts from then), by `clock`."""
        self.clock = clock
        self.started = clock() if started is None else started
        self.version = read_version()
        self.config = config
        self.follower = MapFollower(config, meter_map.load(config))
        self.port = self.port_name(device)      # a gateway's name comes from the map
        self.bus_options = self.follower.current.bus_options(self.port)     # as applied
        options = dict(self.bus_options)
        in_map = options.pop('interval', INTERVAL)
        self.interval = in_map if interval is None else interval
        self.scan = options.pop('scan', True)
        self.scan_timeout = scan_timeout
        for key, value in (('timeout', timeout), ('stopbits', stopbits)):
            if value is not None:
                options[key] = value
        self.bus = self.make_bus(device, options)
        # Held by the poll thread for each tick, and by the main thread around everything it
        # does to the meters (changes from D-Bus, scheduled re-registrations): poll_thread.py.
        self.lock = MainLoopLock()
        self.code, self.why = EXIT_STOPPED, None
        self.pending = set()    # what the poll thread handed to the main loop, not done yet
        self.map_due = None     # when tick() looks at the map file next
        self.ess = None         # ESS's grid metering: 0 = on an external meter
        self.loop = self.connection = self.directions = self.context = None
        self.poller = self.poll_thread = self.ess_watch = None
        self.signal_sources = []
        self.port_service = None    # the port's own service (serve_port())
        self.found_here = set()     # addresses of the meters this run found (found())
        self.holding = False        # a request has the port: no poll, no probe (hold_port())
        self.worker = None          # the thread that carries that request out

    # -- the port: what another kind of port overrides -------------------------------------

    def port_name(self, device):
        """The port's name in the log, the service names and the map ([PORT:N], [bus:PORT])."""
        return tty.name(device)

    def make_bus(self, device, options):
        return modbus.Bus(device, **options)

    def describe_bus(self):
        return '%d baud 8%s%d' % (self.bus.baudrate, self.bus.parity, self.bus.stopbits)

    def reason_to_stay(self):
        """Why a start with no meter answering is no reason to exit, or None: a port pinned to
        this driver (a `pzemctl pin` rule), which serial-starter would only start again."""
        try:
            if udev.properties(self.bus.path).get('VE_SERVICE') == 'pzem':
                return 'the port is pinned to this driver'
        except LookupError:
            pass
        return None

    # -- the steps ---------------------------------------------------------------------------

    def run(self):
        try:
            code = self.open() or self.connect() or self.start_up()
            if code:
                return code
            self.watch()
            self.start_polling()
            self.loop.run()
            return self.code
        finally:
            self.close()

    def open(self):
        """Say what runs, open the port; EXIT_PORT when it cannot be used."""
        log.info('dbus-pzem %s on %s: %s, poll every %gs, map %s%s', self.version, self.port,
                 self.describe_bus(), self.interval, self.config,
                 '' if self.scan else ', no search for meters the map does not name')
        for problem in self.follower.current.problems:
            log.error('map: %s', problem)
        try:
            self.bus.open()
        except modbus.PortGone as e:
            log.error('%s', e)
            log.info('stopping: the serial port cannot be used')
            return EXIT_PORT
        return None

    def connect(self):
        """The D-Bus connection and what every meter shares; EXIT_PORT without D-Bus."""
        # Imported here so that a bad port is reported even where dbus-python is missing.
        import dbus
        import dbus.mainloop.glib
        from . import energy, system
        from .publisher import Context, Instances
        dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
        dbus.mainloop.glib.threads_init()   # the poll thread sends on the same connections
        self.loop = GLib.MainLoop()
        try:
            self.connection = dbus.SystemBus(private=True)
        except dbus.DBusException as e:
            log.error('cannot reach the system D-Bus (%s): no meter can be published', e)
            log.info('stopping: no D-Bus')
            return EXIT_PORT
        self.directions = system.Directions(self.connection)
        self.context = Context(
            self.port, self.config, self.version, Instances(schedule=self.soon), lock=self.lock,
            directions=lambda spec: self.directions.get(spec.vebus),
            stores=lambda ident, log: energy.EnergyStore(self.connection, ident, logger=log),
            energy_for=lambda model: energy.PhaseEnergy(model.max_kw),
            on_start=lambda publisher: self.warn_if_unsigned_grid([publisher]),
            on_change=self.port_changed)
        return None

    def start_up(self):
        """Ask the map's meters and the likely addresses until the start-up budget is spent;
        EXIT_NO_METER when none answered (unless there is a reason to stay), EXIT_PORT when the
        port went away."""
        self.poller = Poller(self.bus, self.port, self.follower.current.meters_for(self.port),
                             self.interval, self.publish, self.found, scan=self.scan,
                             scan_timeout=self.scan_timeout, clock=self.clock,
                             changed=self.port_changed)
        try:
            # D-Bus is served between the probes: a meter is on the bus, answering, at once
            count = self.poller.start(deadline=self.started + PROBE_SECONDS,
                                      between=self.serve_pending)
        except modbus.PortGone as e:
            log.error('%s', e)
            log.info('stopping: the serial port went away')
            return EXIT_PORT
        answered = self.poller.answered
        if count:
            log.info('%d meter(s) published in %.1fs', count, self.clock() - self.started)
        elif answered:
            log.error('%d meter(s) answered (address %s) but none could be published: see the '
                      'lines above; the driver stays and tries again', len(answered),
                      ', '.join(map(str, sorted(answered))))
        else:
            reason = self.reason_to_stay()
            if reason is None:
                log.info('stopping: no PZEM meter answered on %s: exiting so serial-starter can '
                         'try other drivers on this port', self.port)
                return EXIT_NO_METER
            log.warning('no PZEM meter answered on %s yet; %s, so it stays and keeps looking',
                        self.port, reason)
        self.map_due = self.clock() + MAP_CHECK_SECONDS
        return None

    def watch(self):
        """Follow what the driver acts on besides its meters (ESS's grid metering), and serve
        the port's own service (what the GUI page drives, as dbus-modbus-client's
        com.victronenergy.modbusclient.<name> with its writable /Scan)."""
        from . import system
        self.ess_watch = system.EssGridMetering(self.connection, self.on_ess)
        self.serve_port()

    def start_polling(self):
        """The poll thread, from one slot on, and the signals that stop it."""
        self.poll_thread = PollThread(
            self.tick, self.lock, clock=self.clock,
            on_crash=lambda: self.stop(EXIT_PORT, 'the poll loop failed'),
            catch_up=self.interval)
        # The probe's readings are fresh: answer D-Bus first, poll again one slot later.
        self.poll_thread.start(self.poller.slot)
        # The sources stay until close() removes them: a second signal only asks again.
        for signum, name in ((signal.SIGTERM, 'SIGTERM'), (signal.SIGINT, 'SIGINT')):
            self.signal_sources.append(GLib.unix_signal_add(
                GLib.PRIORITY_HIGH, signum,
                lambda name=name: self.stop(EXIT_STOPPED, 'asked to (%s)' % name) or True))

    def stop(self, code, why):
        """End the main loop with this exit code (from any thread); the first reason is logged."""
        with self.lock:
            first = self.why is None
            self.code, self.why = code, why
        if first:
            log.info('stopping: %s', why)
        if self.poll_thread is not None:
            self.poll_thread.halt()
        self.loop.quit()

    def close(self):
        """Stop polling, take every meter off D-Bus (saving its energy totals) and let go of
        the port, whichever step the driver got to."""
        for source in self.signal_sources:
            GLib.source_remove(source)
        self.signal_sources = []
        if self.poll_thread is not None:
            self.poll_thread.stop()
        if self.worker is not None:     # a meter write half done is worse than a slow stop
            self.worker.join(WORK_SECONDS)
        for part in (self.port_service, self.ess_watch, self.poller, self.directions,
                     self.connection, self.bus):
            if part is not None:
                part.close()

    # -- the meters ----------------------------------------------------------------------------

    def publish(self, spec, phases):
        """The Poller's publish(): a Publisher for a meter that answered, or None."""
        from .publisher import Publisher
        log_ = meter_log(self.port, spec.addresses)
        try:
            return Publisher(spec, phases, self.context, log_)
        except Exception as e:      # a D-Bus failure must not take the other meters down
            log_.error('answers, but could not be published on D-Bus: %s', e)
            return None

    def found(self, address, model):
        """The Poller's found(): a meter the map does not name gets a section of its own,
        with a role that steers nothing."""
        from . import map_update    # here: the driver loads it only when it writes the map
        if self.follower.current.mentions(self.port, address):
            return None     # the map names it (in a section it left out): not ours to add
        section = '%s:%d' % (self.port, address)
        role = roles.DEFAULT_ROLE[model.family]
        comments = {section: [line.replace('%d', str(address))
                              for line in found_section(self.port, model, time.localtime())]}
        try:
            map_update.update_many(self.config, {section: {'role': role}}, comments)
            sections = (section,)
        except map_update.MapWriteError as e:
            meter_log(self.port, [address]).warning(
                'could not add it to the map (%s): published as %s; GUI changes to it are '
                'refused until the map can be written', e, role)
            sections = ()
        self.found_here.add(address)
        return MeterSpec.single(address, role=role, sections=sections)

    def on_ess(self, value):
        """ESS's grid metering changed (0: on an external meter, 1: on the Multi, None)."""
        with self.lock:
            changed = value != self.ess
            self.ess = value
            if changed:
                self.warn_if_unsigned_grid(self.poller.published)

    def warn_if_unsigned_grid(self, publishers):
        if self.ess != 0:
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

    # -- the poll thread and the main loop -----------------------------------------------------

    def tick(self):
        """The poll thread's tick (lock held): poll one meter; the next slot's length. What
        creates or closes a D-Bus connection (a probe that publishes a meter, an edited map)
        is handed to the main loop: dbus-python must not set a connection up or take it down
        while the main loop may be dispatching on it."""
        if self.holding:        # a request has the port (hold_port()): no poll, no probe
            return self.poller.slot
        slot_started = self.clock()
        try:
            self.poller.poll_next()
            if 'probe' not in self.pending and self.poller.wants_probe(slot_started):
                self.hand_over('probe', lambda: self.holding or self.poller.probe(slot_started))
        except modbus.PortGone as e:
            log.error('%s', e)
            self.stop(EXIT_PORT, 'the serial port went away')
        except Exception:   # a bug must not end the polling of every meter silently
            log.exception('poll failed; going on')
        # The map is looked at from here, not from a timer of its own (one wake-up less);
        # only an edit wakes the main loop.
        if slot_started >= self.map_due:
            self.map_due = slot_started + MAP_CHECK_SECONDS
            if 'map' not in self.pending and self.follower.touched():
                self.hand_over('map', self.check_map)
        return self.poller.slot

    def follow_map(self):
        """Apply the map at once after the driver itself changed it (a meter's new address):
        until then the poller would count misses at the old address and the search might
        publish the meter at the new one with the default role."""
        new = self.follower.changed() or meter_map.load(self.config)
        self.poller.apply_map(new.meters_for(self.port))

    def check_map(self):
        """Apply an edited map, when it can be used (main loop, lock held)."""
        new = self.follower.changed()
        if new is None:
            return
        log.info('map: %s changed: applying it', self.config)
        self.poller.apply_map(new.meters_for(self.port))
        if new.bus_options(self.port) != self.bus_options:
            self.bus_options = new.bus_options(self.port)
            log.info('map: the [bus] settings changed: they apply when the driver starts again '
                     '(svc -t /service/dbus-pzem.%s)', self.port)

    def hand_over(self, what, func):
        """func from the main loop, soon; `what` stays pending until then (one of a kind)."""
        self.pending.add(what)
        self.soon(lambda: self._handed_over(what, func))

    def _handed_over(self, what, func):
        self.pending.discard(what)
        try:
            func()
        except modbus.PortGone as e:
            log.error('%s', e)
            self.stop(EXIT_PORT, 'the serial port went away')
        except Exception:
            log.exception('%s failed; going on', what)

    def soon(self, func):
        """func from the main loop with the lock held, soon (any thread may ask)."""

        def run():
            with self.lock:
                func()
            return False
        GLib.idle_add(run)

    @staticmethod
    def serve_pending(most=50):
        """Let the main loop answer what waits (D-Bus calls), without blocking."""
        context = GLib.MainContext.default()
        for _ in range(most):
            if not context.iteration(False):
                return

    # -- the port's own service: what the GUI page shows and asks for ------------------------

    def serve_port(self):
        """Publish the port's own service (port_service) on the driver's connection; without
        it the meters are published all the same."""
        from .port_service import PortService
        from .port_source import DriverSource
        try:
            self.port_service = PortService(self.port, DriverSource(self), self.version,
                                            bus=self.connection, lock=self.lock)
        except Exception as e:      # another process has the name, D-Bus trouble
            log.error('the port\'s own service (for the GUI page) could not be published: %s', e)

    def port_changed(self, urgent=True):
        """What the port's service shows changed (any thread): PortService.changed()."""
        if self.port_service is not None:
            self.port_service.changed(urgent)

    def hold_port(self, work, then):
        """Carry out a request that talks to the meters (main loop, lock held), as pzemctl
        would, with the port to itself: work() runs on a thread of its own while the poll
        thread skips its ticks (tick()) and the main loop goes on answering D-Bus; then
        then(what work returned, None) or then(None, the exception it raised) runs in the main
        loop with the lock held, before the next poll."""
        self.holding = True

        def run():
            try:
                result, error = work(), None
            except modbus.PortGone as e:
                log.error('%s', e)
                self.stop(EXIT_PORT, 'the serial port went away')
                result, error = None, e
            except Exception as e:      # AddressChangeError, ResetNotConfirmed, ModbusError
                result, error = None, e
            self.soon(lambda: conclude(result, error))

        def conclude(result, error):
            self.holding = False
            self.worker = None
            then(result, error)
        self.worker = threading.Thread(target=run, name='request', daemon=True)
        self.worker.start()


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format='%(levelname)s %(message)s', stream=sys.stderr)
    kind = Driver
    if net_link.is_url(args.tty):
        from .gateway_driver import GatewayDriver as kind
    driver = kind(args.tty, args.config, interval=args.interval, timeout=args.timeout,
                  stopbits=args.stopbits, scan_timeout=args.scan_timeout,
                  started=time.monotonic() - process_age())
    return driver.run()
