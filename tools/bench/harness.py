"""The benchmark's test bench: a private dbus-daemon with the localsettings stand-in, the
simulator in wire-time mode (a thread of this process), and the real driver as a subprocess
whose CPU time and memory are read from /proc. Everything started here is stopped by its PID.
"""
import contextlib
import math
import os
import shutil
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for _path in (ROOT, os.path.join(ROOT, 'tests')):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import dbus  # noqa: E402
from dbus_helpers import Client, bus_env, private_bus, pump_until, stop_process  # noqa: E402
from pzemsim import AcMeter, SimBus  # noqa: E402

DRIVER = os.path.join(ROOT, 'package', 'opt', 'pzem', 'dbus-pzem')
SETTINGS = os.path.join(ROOT, 'tests', 'fake_localsettings.py')
BUSITEM = 'com.victronenergy.BusItem'
PORT = 'ttyPZEM0'
TICK = os.sysconf('SC_CLK_TCK')
TURNAROUND = 0.08           # the simulated meter's response time (pzemsim's default)


def cpu_seconds(pid):
    """(utime, stime) of one process (not its children), in seconds."""
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK     # fields 14 and 15 of stat(5)


def _per_thread(pid, name, parse):
    """The sum of parse(text of /proc/PID/task/TID/name) over the process's threads."""
    total = 0
    for task in os.listdir('/proc/%d/task' % pid):
        try:
            with open('/proc/%d/task/%s/%s' % (pid, task, name)) as f:
                total += parse(f.read())
        except (OSError, IndexError, ValueError):
            pass                # the thread ended meanwhile
    return total


def runtime_seconds(pid):
    """Time on a CPU of all the process's threads, to the nanosecond (/proc/PID/task/*/schedstat):
    the same as utime + stime without their clock-tick (10 ms) resolution."""
    return _per_thread(pid, 'schedstat', lambda text: int(text.split()[0])) / 1e9


def wakeups(pid):
    """Times the process's threads went to sleep of their own accord and were woken again
    (voluntary context switches, /proc/PID/task/*/status): a count, not a time, so the
    machine's noise does not move it."""
    return _per_thread(pid, 'status', lambda text: int(
        text.split('\nvoluntary_ctxt_switches:', 1)[1].split()[0]))


def memory_kib(pid):
    """{'VmHWM': KiB, 'VmRSS': KiB} of one process."""
    found = {}
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            key, _, value = line.partition(':')
            if key in ('VmHWM', 'VmRSS'):
                found[key] = int(value.split()[0])
    return found


def meter_map(count, model=True, scan=False):
    """A map with `count` PZEM-016 at addresses 1..count: 1 is the grid meter, the rest AC loads.
    model=True names the model (no detection read at start), as a commissioned GX would.
    scan=False turns the search for meters the map does not name off: the poll-path figures
    then measure the same work as before the search existed ("Finding meters" measures it)."""
    lines = []
    for address in range(1, count + 1):
        lines += ['[%d]' % address, 'role = %s' % ('grid' if address == 1 else 'acload')]
        if model:
            lines.append('model = ac')
    if not scan:
        lines += ['[bus]', 'scan = no']
    return '\n'.join(lines) + '\n'


def service_name(address, port=PORT):
    return 'com.victronenergy.%s.pzem_%s_%d' % ('grid' if address == 1 else 'acload', port, address)


def ac_meters(count, fault_rate=0.0):
    # 230 V x 4 A x PF 0.9 = 828 W: consistent, as a real meter reports
    return [BenchMeter(a, voltage=230.0, current=4.0, power=828.0, energy_wh=1000 * a,
                       frequency=50.0, power_factor=0.9, fault_rate=fault_rate)
            for a in range(1, count + 1)]


class BenchMeter(AcMeter):
    """A PZEM-016 that notes when each request reached it (`times`, while `timing` is on), and
    spoils `fault_rate` of them with one of FAULTS at random."""

    FAULTS = ('no_reply', 'bad_crc', 'junk_values')

    def __init__(self, *args, fault_rate=0.0, **kwargs):
        AcMeter.__init__(self, *args, **kwargs)
        self.fault_rate = fault_rate
        self.timing = False
        self.times = []

    def handle(self, request):
        with self._lock:
            if self.timing:
                self.times.append(time.monotonic())
            if self.fault_rate and self._rng.random() < self.fault_rate:
                self.inject(self._rng.choice(self.FAULTS), count=1)
            return AcMeter.handle(self, request)


class Changer:
    """Changes every value of every meter `per_second` times a second (so each poll sees new
    ones): voltage, power factor, frequency and power move, current = P / (V x PF), and energy
    counts up by 2.5 to 3.6 Wh a second, so the whole-Wh counter changes at every poll too."""

    def __init__(self, meters, per_second=10.0):
        self.meters = meters
        self.period = 1.0 / per_second
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        for meter in self.meters:
            meter.accumulate = True
        self._thread = threading.Thread(target=self._run, name='bench-changer', daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        for meter in self.meters:
            meter.accumulate = False

    def _run(self):
        step = 0
        while not self._stop.wait(self.period):
            step += 1
            for i, meter in enumerate(self.meters):
                t = step * 0.37 + i
                voltage = round(230.0 + 4.0 * math.sin(t), 1)
                pf = round(0.93 + 0.05 * math.sin(t * 1.3), 2)
                power = round(11000.0 + 2000.0 * math.sin(t * 0.7), 1)
                meter.set(voltage=voltage, power_factor=pf, power=power,
                          current=round(power / (voltage * pf), 3),
                          frequency=round(50.0 + 0.1 * math.sin(t * 2.1), 1))


class Recorder:
    """ItemsChanged signals and service names as they arrive (monotonic time), while pumped."""

    def __init__(self, client):
        self.client = client
        self.records = []       # (time, sender, payload) of ItemsChanged
        self.names = []         # (time, well-known name, new owner) of NameOwnerChanged
        self._matches = [
            client.bus.add_signal_receiver(self._on_signal, 'ItemsChanged', BUSITEM,
                                           sender_keyword='sender'),
            client.bus.add_signal_receiver(self._on_name, 'NameOwnerChanged',
                                           'org.freedesktop.DBus', 'org.freedesktop.DBus',
                                           '/org/freedesktop/DBus'),
        ]

    def _on_signal(self, payload, sender=None):
        self.records.append((time.monotonic(), str(sender), payload))

    def _on_name(self, name, old, new):
        if new:
            self.names.append((time.monotonic(), str(name), str(new)))

    def close(self):
        for match in self._matches:
            match.remove()

    def first(self, since, test, sender=None):
        """Time of the first record after `since` whose payload passes test(payload)."""
        for at, who, payload in self.records:
            if at >= since and (sender is None or who == sender) and test(payload):
                return at
        return None

    def wait(self, since, test, timeout, sender=None, what='a signal'):
        pump_until(lambda: self.first(since, test, sender) is not None, timeout, what)
        return self.first(since, test, sender)

    def wait_meters_up(self, since, count, timeout):
        """{owner: time} when a client first learnt that each of `count` meter services has
        /Connected 1: from an ItemsChanged, or from GetValue asked as soon as its name
        appeared (for a service registered with values already)."""
        known, asked = {}, set()

        def learnt(owner, at):
            if owner not in known or at < known[owner]:
                known[owner] = at

        def check():
            for at, name, owner in self.names:
                if at >= since and '.pzem_' in name and name not in asked:
                    asked.add(name)
                    self.client.bus.call_async(
                        name, '/Connected', BUSITEM, 'GetValue', '', (),
                        lambda value, owner=owner: value == 1 and learnt(owner, time.monotonic()),
                        lambda error: None)
            for at, who, payload in self.records:
                if at >= since and connected(1)(payload):
                    learnt(who, at)
            return len(known) >= count

        pump_until(check, timeout, '%d meters up' % count)
        return known


def connected(value):
    return lambda payload: '/Connected' in payload and payload['/Connected']['Value'] == value


def connected_with_values(payload):
    """Connected 1 and a valid /Ac/Power in the same ItemsChanged."""
    power = payload.get('/Ac/Power', {}).get('Value')
    return connected(1)(payload) and power is not None and not isinstance(power, dbus.Array)


class Bench:
    """A private bus with the localsettings stand-in, for any number of driver runs."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.address = None
        self.client = None
        self._stack = contextlib.ExitStack()

    def __enter__(self):
        os.makedirs(self.workdir, exist_ok=True)
        self.address = self._stack.enter_context(private_bus())
        settings = subprocess.Popen([sys.executable, SETTINGS], env=bus_env(self.address),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._stack.callback(stop_process, settings)
        self.client = Client(self.address)
        self._stack.callback(self.client.close)
        pump_until(lambda: self.client.owner('com.victronenergy.settings'), 10.0, 'localsettings')
        return self

    def __exit__(self, *exc):
        self._stack.close()

    def run(self, meters, driver_args=(), map_text=None, wrapper=(), name='run', driver=None):
        """`driver`: the dbus-pzem to run (default: this tree's); `wrapper`: a script and its
        arguments that run it (profiled_driver.py, callgrind_driver.py), or none."""
        return DriverRun(self, meters, list(driver_args), map_text, list(wrapper), name,
                         driver or DRIVER)

    @contextlib.contextmanager
    def recorder(self):
        rec = Recorder(self.client)
        try:
            yield rec
        finally:
            rec.close()


class DriverRun:
    """One simulated bus and one `dbus-pzem` process on it."""

    def __init__(self, bench, meters, driver_args, map_text, wrapper, name, driver):
        self.bench = bench
        self.driver = driver
        self.meters = meters
        self.folder = os.path.join(bench.workdir, name)
        shutil.rmtree(self.folder, ignore_errors=True)
        os.makedirs(self.folder)
        self.port = PORT            # the driver's name for it (a gateway's: its map name)
        self.link = os.path.join(self.folder, PORT)
        self.target = self.link     # what the driver is started on (a gateway: its URL)
        self.map_path = os.path.join(self.folder, 'pzem.conf')
        self.log_path = os.path.join(self.folder, 'dbus-pzem.log')
        if map_text is not None:
            with open(self.map_path, 'w') as f:
                f.write(map_text)
        self.driver_args = driver_args
        self.wrapper = wrapper
        self.sim = SimBus(self.link, wire_time=True, turnaround=TURNAROUND)
        for meter in meters:
            self.sim.add(meter)
        self.proc = None
        self.started = None
        self.returncode = None

    def __enter__(self):
        self.sim.start()
        try:
            self.start_driver()
        except BaseException:
            self.sim.stop()
            raise
        return self

    def __exit__(self, *exc):
        try:
            self.stop_driver()
        finally:
            self.sim.stop()

    def start_driver(self):
        command = [sys.executable] + self.wrapper + [self.driver, '--config', self.map_path]
        command += self.driver_args + [self.target]
        with open(self.log_path, 'ab') as log:
            self.started = time.monotonic()
            self.proc = subprocess.Popen(command, env=bus_env(self.bench.address), stdout=log,
                                         stderr=subprocess.STDOUT)

    def stop_driver(self):
        if self.proc is not None:
            stop_process(self.proc)
            self.returncode = self.proc.returncode
        return self.returncode

    @property
    def pid(self):
        return self.proc.pid

    def cpu(self):
        return cpu_seconds(self.pid)

    def runtime(self):
        return runtime_seconds(self.pid)

    def wakeups(self):
        return wakeups(self.pid)

    def memory(self):
        return memory_kib(self.pid)

    def replies(self):
        """{address: replies the meter has put on the wire so far}."""
        return {m.address: m.stats['replies'] for m in self.meters}

    def requests(self):
        return {m.address: m.stats['requests'] for m in self.meters}

    def log(self):
        with open(self.log_path, errors='replace') as f:
            return f.read()

    def wait_connected(self, addresses, timeout=20.0):
        """Wait until every address's service has /Connected 1; returns {address: unique name}."""
        client = self.bench.client
        owners = {}

        def all_up():
            if self.proc.poll() is not None:
                raise RuntimeError('the driver exited (%s):\n%s' % (
                    self.proc.returncode, self.log()))
            for address in addresses:
                if address in owners:
                    continue
                name = service_name(address, self.port)
                owner = client.owner(name)
                try:
                    if owner and client.get_value(name, '/Connected') == 1:
                        owners[address] = owner
                except dbus.exceptions.DBusException:
                    pass        # busy registering (or the machine is overloaded): ask again
            return len(owners) == len(addresses)

        pump_until(all_up, timeout, 'meters %s to be connected' % list(addresses))
        return owners

    def wait_exit(self, timeout):
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self.returncode = self.proc.returncode
        return self.returncode
