"""A test rig for the real driver: a private dbus-daemon, optionally the localsettings stand-in,
the simulator on a pseudo-terminal (in this process), and `dbus-pzem` as a real subprocess.

The test thread pumps the GLib context (dbus_helpers) while it waits; the simulator serves the
pty from its own thread.
"""
import os
import subprocess
import sys
import time

import dbus

from dbus_helpers import (Client, SignalRecorder, bus_env, private_bus, pump, pump_until,
                          stop_process)
from pzemsim import SimBus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(ROOT, 'package', 'opt', 'pzem', 'dbus-pzem')
FAKE_SETTINGS = os.path.join(ROOT, 'tests', 'fake_localsettings.py')
FAKE_VEBUS = os.path.join(ROOT, 'tests', 'fake_vebus.py')
SETTINGS = 'com.victronenergy.settings'
VEBUS = 'com.victronenergy.vebus.'


class Rig(object):
    def __init__(self, tmp_path, meters, map_text=None, settings=True, settings_delay=0.0,
                 driver_args=('--interval', '0.2', '--timeout', '0.15'), port='ttyPZEM0',
                 sim_options=None):
        self.tmp = str(tmp_path)
        self.link = os.path.join(self.tmp, port)
        self.port = port
        self.map_path = os.path.join(self.tmp, 'pzem.conf')
        self.log_path = os.path.join(self.tmp, 'dbus-pzem.log')
        self.meters = {m.address: m for m in meters}
        self.map_text = map_text
        self.want_settings = settings
        self.settings_delay = settings_delay
        self.driver_args = list(driver_args)
        self.sim = SimBus(self.link, **(sim_options or {}))
        for m in meters:
            self.sim.add(m)
        self._bus_cm = None
        self.address = None
        self.settings = None
        self.driver = None
        self.client = None
        self.signals = None
        self.vebuses = {}           # well-known name -> Popen of a fake_vebus.py

    def __enter__(self):
        self._bus_cm = private_bus()
        self.address = self._bus_cm.__enter__()
        self.client = Client(self.address)
        self.signals = SignalRecorder(self.client)
        if self.map_text is not None:
            with open(self.map_path, 'w') as f:
                f.write(self.map_text)
        self.sim.start()
        if self.want_settings:
            self.start_settings()
        return self

    def __exit__(self, *exc):
        if self.driver is not None:
            stop_process(self.driver)
            self._log.close()
        for proc in self.vebuses.values():
            stop_process(proc)
        if self.settings is not None:
            stop_process(self.settings)
        self.sim.stop()
        self.signals.stop()
        self.client.close()
        self._bus_cm.__exit__(*exc)

    def start_settings(self):
        args = [sys.executable, FAKE_SETTINGS]
        if self.settings_delay:
            args += ['--delay', str(self.settings_delay)]
        self.settings = subprocess.Popen(args, env=bus_env(self.address))
        pump_until(lambda: self.client.owner(SETTINGS), 5.0, 'the localsettings stand-in')

    def start_driver(self, *extra, tty=None, env=None):
        self._log = open(self.log_path, 'a')
        args = [sys.executable, DRIVER, '--config', self.map_path] + self.driver_args + list(extra)
        args.append(tty or self.link)
        self.started = time.monotonic()
        environment = bus_env(self.address)
        environment.update(env or {})
        self.driver = subprocess.Popen(args, env=environment, stdout=self._log,
                                       stderr=subprocess.STDOUT)
        return self.driver

    def stop_driver(self, timeout=5.0):
        """SIGTERM, as `svc -d` sends it; returns the exit code. start_driver() may follow."""
        self.driver.terminate()
        code = self.wait_exit(timeout)
        self._log.close()
        self.driver = None
        return code

    def start_vebus(self, name='ttyS4', instance=276, power=(0.0,), *options):
        """A VE.Bus stand-in (tests/fake_vebus.py) with one phase per value of `power` (W,
        negative = feeding back); returns its service name. SetValue on /Ac/ActiveIn/Lx/P scripts
        it; stop_vebus() takes it away."""
        service = VEBUS + name
        args = [sys.executable, FAKE_VEBUS, name, str(instance), '--phases', str(len(power)),
                '--power', ','.join(str(float(p)) for p in power)] + list(options)
        self.vebuses[service] = subprocess.Popen(args, env=bus_env(self.address))
        pump_until(lambda: self.client.owner(service), 5.0, service)
        return service

    def stop_vebus(self, service):
        stop_process(self.vebuses.pop(service))
        pump_until(lambda: not self.client.owner(service), 5.0, '%s to go away' % service)

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def service(self, role, address):
        return 'com.victronenergy.%s.pzem_%s_%d' % (role, self.port, address)

    def wait_service(self, name, timeout=15.0):
        def up():
            if self.driver is not None and self.driver.poll() is not None:
                raise AssertionError('driver exited (%s) waiting for %s:\n%s' % (
                    self.driver.returncode, name, self.log()))
            return self.client.owner(name)
        pump_until(up, timeout, name)
        return name

    def wait_gone(self, name, timeout=8.0):
        pump_until(lambda: not self.client.owner(name), timeout, '%s to go away' % name)

    def items(self, name):
        return self.client.get_items(name)

    def value(self, name, path):
        return self.client.get_value(name, path)

    def wait_value(self, name, path, check, timeout=5.0):
        """Pump until check(value of path) is true; returns that value."""
        seen = {}

        def ok():
            try:
                seen['v'] = self.client.get_value(name, path)
            except dbus.DBusException:      # e.g. while the service re-registers
                return False
            return check(seen['v'])
        try:
            pump_until(ok, timeout, '%s %s' % (name, path))
        except AssertionError:
            raise AssertionError('%s %s stayed %r' % (name, path, seen.get('v')))
        return seen['v']

    def wait_polls(self, meter, count=3, timeout=5.0):
        """Pump until the simulated `meter` has been asked `count` more times."""
        target = meter.stats['requests'] + count
        pump_until(lambda: meter.stats['requests'] >= target, timeout,
                   '%d requests to %r' % (count, meter))

    def wait_log(self, text, count=1, timeout=5.0):
        """Pump until the driver's log holds `text` at least `count` times; returns the log."""
        pump_until(lambda: self.log().count(text) >= count, timeout, 'log line %r' % text)
        return self.log()

    def wait_started(self, timeout=8.0):
        """Pump until the driver's start-up (the map's meters, then the likely addresses) is
        over and its poll loop runs: the meters are published before that, complete."""
        return self.wait_log(' meter(s) published in ', timeout=timeout)

    def wait_exit(self, timeout):
        pump_until(lambda: self.driver.poll() is not None, timeout, 'the driver to exit')
        return self.driver.returncode

    @staticmethod
    def pump(seconds):
        pump(seconds)
