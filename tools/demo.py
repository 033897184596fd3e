"""tools/demo.sh [--seconds N] [--fault-every N]: venus-pzem at work, with no hardware.

What it shows
  Six simulated PZEM meters on one simulated RS-485 port (real Modbus-RTU
  bytes on a pseudo-terminal): a PZEM-016 on the MultiPlus AC input (role
  grid), one on its AC output (acload), a PZEM-017 on a wind charger
  (dcsource) and three PZEM-016 on a 3-phase house supply (one acload group).
  The real driver reads them and publishes them on a private D-Bus, as on a
  GX. The screen shows what Venus sees there: per meter its role, link state,
  power, voltage, current, power factor, frequency and energy; the counts
  under /Pzem/Errors (NoReply, BadFrame, Exception, Implausible); and the last
  faults. Loads change slowly. Every --fault-every seconds one meter
  misbehaves (a bad CRC, no reply, impossible values, an exception reply) and
  its error count goes up; a meter that misses a few polls shows as lost (a
  meter not read yet, in the first seconds, as wait).

Options
  --seconds N       end after N seconds (default: run until q or Ctrl-C)
  --fault-every N   seconds between faults (default 20; 0: only on the f key)
  -h, --help        this text

Keys (when it runs on a terminal)
  f   the next fault now
  q   quit

How it ends
  q, Ctrl-C, --seconds or closing the terminal. It then stops everything it
  started (by PID), prints the driver's last log lines and deletes its
  temporary folder.

Terminal
  The live screen needs 80x24. A smaller terminal is told so until it is big
  enough; output that is not a terminal gets a plain snapshot every 5 seconds.
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = (80, 24)
PLAIN_EVERY = 5.0

DEMO_MAP = """\
# The demo's meter map: the same syntax as /data/conf/pzem.conf on a GX.
[1]
role = grid
sign = vebus
name = MultiPlus AC in
[2]
role = acload
name = AC out loads
[3]
role = dcsource
monitor_mode = wind
name = Wind charger
[4]
group = house
phase = L1
role = acload
name = House 3-phase
[5]
group = house
phase = L2
[6]
group = house
phase = L3
"""

VEBUS = 'com.victronenergy.vebus.demo'     # a MultiPlus stand-in (tests/fake_vebus.py)
MULTI_EVERY = 30.0      # the stand-in Multi takes from the grid, then feeds back, in turn
# What the screen says when the Multi turns around (feeding back or not): each event line,
# with its time in front, fits the 80 columns of the live view.
MULTI_EVENTS = {True: 'Multi feeds back (-800 W): MultiPlus AC in negative, kWh to "back"',
                False: 'Multi takes from the grid again: MultiPlus AC in positive'}
EVENT_TIME = '%H:%M:%S '

# (address, fault, requests, what it looks like): one after the other, round and round
FAULTS = [
    (1, 'bad_crc', 3, 'MultiPlus AC in: 3 replies with a bad CRC -> BadFrame'),
    (2, 'silent', 12, 'AC out loads: no answer to 12 requests -> NoReply'),
    (3, 'junk_values', 2, 'Wind charger: 2 replies with impossible values -> Implausible'),
    (5, 'exception', 3, 'House 3-phase L2: 3 exception replies -> Exception'),
]


def parse(argv):
    parser = argparse.ArgumentParser(prog='tools/demo.sh', usage=__doc__.split('\n')[0].split(': ')[0],
                                     description=__doc__.split(': ', 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     add_help=False)
    parser.add_argument('-h', '--help', action='help', help=argparse.SUPPRESS)
    parser.add_argument('--seconds', type=seconds, default=0, help=argparse.SUPPRESS)
    parser.add_argument('--fault-every', type=seconds, default=20.0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def seconds(text):
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:         # also refuses nan and inf
        raise argparse.ArgumentTypeError('%r: expected seconds from 0 to 86400' % text)
    return value


class Ended(Exception):
    """SIGTERM or SIGHUP: end the demo the way Ctrl-C does."""


def on_signal(number, frame):
    raise Ended()


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    folder = tempfile.mkdtemp(prefix='pzem-demo-')
    log_path = os.path.join(folder, 'dbus-pzem.log')
    try:
        print('demo: working in %s (deleted at the end)' % folder, flush=True)
        return run(args, folder, log_path)
    except (KeyboardInterrupt, Ended):
        return 0
    finally:
        print_log_tail(log_path)
        shutil.rmtree(folder, ignore_errors=True)
        print('demo: ended; %s is deleted' % folder, flush=True)


def run(args, folder, log_path):
    sys.path[:0] = [ROOT, os.path.join(ROOT, 'tests'), os.path.join(ROOT, 'tools')]
    import dbus.bus
    from dbus_helpers import bus_env, private_bus, stop_process
    from pzemsim import AcMeter, DcMeter, SimBus
    from pzemsim.vary import LoadVariation

    map_path = os.path.join(folder, 'pzem.conf')
    with open(map_path, 'w') as f:
        f.write(DEMO_MAP)
    sim = SimBus(os.path.join(folder, 'ttyPZEM0'))
    for address in (1, 2, 4, 5, 6):
        sim.add(AcMeter(address))
    sim.add(DcMeter(3))
    variation = LoadVariation(sim.meters)
    started = []
    with private_bus() as address:
        env = dict(bus_env(address), PYTHONPATH=ROOT)
        try:
            started.append(subprocess.Popen(
                [sys.executable, os.path.join(ROOT, 'tests', 'fake_localsettings.py')], env=env,
                start_new_session=True))    # Ctrl-C is the demo's to handle: it stops them
            started.append(subprocess.Popen(
                [sys.executable, os.path.join(ROOT, 'tests', 'fake_vebus.py'), 'demo', '276',
                 '--power', '800'], env=env, start_new_session=True))
            sim.start()
            variation.start()
            with open(log_path, 'w') as log:
                started.append(subprocess.Popen(
                    [sys.executable, os.path.join(ROOT, 'package', 'opt', 'pzem', 'dbus-pzem'),
                     '--config', map_path, sim.link], env=env, stdout=log, stderr=log,
                    start_new_session=True))
            screen = Screen(dbus.bus.BusConnection(address), started[-1], sim, args)
            return screen.run()
        finally:
            for proc in reversed(started):
                stop_process(proc)
            variation.stop()
            sim.stop()


class Screen:
    """The live view, the keys and the fault schedule."""

    def __init__(self, bus, driver, sim, args):
        self.bus = bus
        self.driver = driver
        self.sim = sim
        self.args = args
        self.events = []
        self.next_fault = 0
        self.start = time.monotonic()
        self.fault_due = self.start + args.fault_every / 2 if args.fault_every else None
        self.multi_due = self.start + MULTI_EVERY / 2
        self.multi_feeds_back = False
        self.seen = set()       # the meters seen connected: 'lost' only for those
        self.live = sys.stdout.isatty()
        self.keys = sys.stdin.isatty() and self.live

    def run(self):
        import venus_view
        end = self.start + self.args.seconds if self.args.seconds else None
        saved = self._keys_on()
        try:
            while True:
                now = time.monotonic()
                if self.driver.poll() is not None:
                    self.say('the driver exited with status %d' % self.driver.returncode)
                    self.draw(self.view())
                    return 1
                if self.fault_due is not None and now >= self.fault_due:
                    self.fault()
                    self.fault_due = now + self.args.fault_every
                if now >= self.multi_due:
                    self.multi()
                    self.multi_due = now + MULTI_EVERY
                self.draw(self.view())
                if end and now >= end:
                    return 0
                pause = 1.0 if self.live else PLAIN_EVERY
                if end:
                    pause = max(0.0, min(pause, end - now))
                key = self._key(pause)
                if key == 'q':
                    return 0
                if key == 'f':
                    self.fault()
        finally:
            self._keys_off(saved)

    def view(self):
        import venus_view
        return venus_view.render(venus_view.read_meters(self.bus), self.seen)

    def fault(self):
        address, kind, count, text = FAULTS[self.next_fault % len(FAULTS)]
        self.next_fault += 1
        self.sim.meter(address).inject(kind, count=count)
        self.say('fault: ' + text)

    def multi(self):
        """Turn the stand-in Multi around: the grid meter (sign = vebus) follows its direction."""
        import dbus
        self.multi_feeds_back = not self.multi_feeds_back
        power = -800.0 if self.multi_feeds_back else 800.0
        try:
            self.bus.call_blocking(VEBUS, '/Ac/ActiveIn/L1/P', 'com.victronenergy.BusItem',
                                   'SetValue', 'v', [dbus.Double(power)], timeout=2.0)
        except dbus.DBusException:
            return
        self.say(MULTI_EVENTS[self.multi_feeds_back])

    def say(self, text):
        self.events.append(time.strftime(EVENT_TIME) + text)
        del self.events[:-3]
        if not self.live:
            print('demo: ' + self.events[-1], flush=True)

    def draw(self, lines):
        title = time.strftime('%H:%M:%S') + '  what Venus sees: the driver\'s meters on D-Bus'
        if not self.live:
            print('\n'.join([title] + lines) + '\n', flush=True)
            return
        try:
            columns, rows = os.get_terminal_size(sys.stdout.fileno())   # not $COLUMNS: the real one
        except OSError:
            columns, rows = shutil.get_terminal_size()
        if columns < SIZE[0] or rows < SIZE[1]:
            screen = ['demo: this terminal is %dx%d; the live view needs %dx%d.' % (
                (columns, rows) + SIZE), 'Make it bigger, or press q to quit.']
        else:
            keys = 'keys: f fault now  q quit  (Ctrl-C also ends it)'
            screen = [title, ''] + lines + [''] + (self.events or ['(no fault yet)']) + [keys]
        sys.stdout.write('\x1b[H\x1b[J' + '\n'.join(line[:columns] for line in screen))
        sys.stdout.flush()

    def _keys_on(self):
        if not self.keys:
            return None
        import termios
        import tty
        saved = termios.tcgetattr(sys.stdin.fileno())
        tty.setcbreak(sys.stdin.fileno())
        return saved

    def _keys_off(self, saved):
        if saved is not None:
            import termios
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)
        if self.live:
            sys.stdout.write('\n')

    def _key(self, seconds):
        """The key pressed within `seconds` (lower case), or None."""
        if not self.keys:
            time.sleep(seconds)
            return None
        import select
        ready, _, _ = select.select([sys.stdin], [], [], seconds)
        return os.read(sys.stdin.fileno(), 1).decode(errors='replace').lower() if ready else None


def print_log_tail(log_path, lines=12):
    try:
        with open(log_path, errors='replace') as log:
            tail = log.read().splitlines()[-lines:]
    except OSError:
        return
    print('demo: the driver\'s last log lines:\n' + '\n'.join('  ' + l for l in tail), flush=True)


if __name__ == '__main__':
    sys.exit(main())
