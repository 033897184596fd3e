"""Test support: a private dbus-daemon, an independent D-Bus client, and a signal recorder.

Main loop choice: no threads. Everything in the test process (the services under test, the client,
the signal recorder) attaches its connection to the default GLib main context, and the helpers
iterate that context in the test's own thread while they wait (pump, pump_until). Client calls are
asynchronous (call_async) for that reason: a blocking call to a service living in the same thread
would wait for a reply that nobody dispatches. Blocking calls to the bus daemon itself are fine.
Whatever must be a separate process (the fake localsettings, a service on the default system bus)
runs as a subprocess that the test starts and stops by its PID (run_process).

libdbus reads DBUS_SYSTEM_BUS_ADDRESS only once per process (the first dbus.SystemBus() fixes it), so
in-process services get their connection through BusItemService(bus=connect(address)), and
subprocesses get the variable in their environment (bus_env, run_process).

The client is plain dbus-python; it does not use the project's busitem code.
"""
import contextlib
import os
import shutil
import subprocess
import tempfile
import time

import dbus
import dbus.bus
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib

BUSITEM = 'com.victronenergy.BusItem'

_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
    <allow user="*"/>
  </policy>
</busconfig>
"""


@contextlib.contextmanager
def private_bus():
    """Start a private dbus-daemon, yield its address, stop it (by PID) afterwards."""
    tmp = tempfile.mkdtemp(prefix='pzem-dbus-')
    config = os.path.join(tmp, 'bus.conf')
    with open(config, 'w') as f:
        f.write(_CONFIG.format(socket=os.path.join(tmp, 'bus')))
    with open(os.path.join(tmp, 'daemon.log'), 'w+') as log:
        daemon = subprocess.Popen(['dbus-daemon', '--config-file=' + config, '--nofork',
                                   '--print-address=1'], stdout=subprocess.PIPE, stderr=log)
        try:
            address = daemon.stdout.readline().decode().strip()
            if not address:
                log.seek(0)
                raise RuntimeError('dbus-daemon did not start: ' + log.read())
            yield address
        finally:
            stop_process(daemon)
            daemon.stdout.close()
            shutil.rmtree(tmp, ignore_errors=True)


def bus_env(address, env=None):
    """A copy of env (default os.environ) with the system bus pointing at address."""
    env = dict(os.environ if env is None else env)
    env['DBUS_SYSTEM_BUS_ADDRESS'] = address
    return env


def connect(address):
    """A new private connection to address, dispatched by the GLib main context."""
    return dbus.bus.BusConnection(address, mainloop=DBusGMainLoop())


def pump(seconds=0.0):
    """Run the GLib main context for about `seconds` (at least one pass)."""
    context = GLib.MainContext.default()
    deadline = time.monotonic() + seconds
    while True:
        while context.iteration(False):
            pass
        if time.monotonic() >= deadline:
            return
        time.sleep(0.002)


def pump_until(condition, timeout=5.0, what='condition'):
    """Run the GLib main context until condition() is true; AssertionError after timeout."""
    context = GLib.MainContext.default()
    deadline = time.monotonic() + timeout
    while not condition():
        if not context.iteration(False):
            if time.monotonic() > deadline:
                raise AssertionError('timed out after %.1f s waiting for %s' % (timeout, what))
            time.sleep(0.002)
    return True


@contextlib.contextmanager
def run_process(args, address, wait_for_name=None, timeout=5.0):
    """Run args with the system bus at address; wait until wait_for_name has an owner; yield the
    Popen; stop it by PID afterwards (terminate, then kill)."""
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(args, env=bus_env(address), stdout=log, stderr=subprocess.STDOUT)
    try:
        if wait_for_name:
            bus = dbus.bus.BusConnection(address)
            try:
                deadline = time.monotonic() + timeout
                while not bus.name_has_owner(wait_for_name):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        raise RuntimeError('%s did not take %s: %s' % (
                            args, wait_for_name, log.read().decode(errors='replace')))
                    time.sleep(0.01)
            finally:
                bus.close()
        yield proc
    finally:
        stop_process(proc)
        log.close()


def run_pumping(args, address, timeout=10.0):
    """Run a command-line tool (dbus-send, gdbus) against the bus at address while the GLib
    context keeps running, so services in this process can answer it. Returns (rc, output)."""
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(args, env=bus_env(address), stdout=out, stderr=subprocess.STDOUT)
        try:
            pump_until(lambda: proc.poll() is not None, timeout, ' '.join(args))
        finally:
            stop_process(proc)
        out.seek(0)
        return proc.returncode, out.read().decode(errors='replace')


def stop_process(proc):
    """Terminate a process this test run started (by its PID), kill it if it lingers."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Client:
    """An independent BusItem client on its own connection. Calls return raw dbus-python values
    (dbus.Int32, dbus.Array with .signature, ...) so tests can check the wire encoding; a D-Bus
    error is raised as dbus.exceptions.DBusException."""

    def __init__(self, address):
        self.bus = connect(address)

    def close(self):
        self.bus.close()

    def call(self, service, path, method, *args, signature=None, interface=BUSITEM, timeout=5.0):
        result = {}
        self.bus.call_async(service, path, interface, method, signature, args,
                            lambda *reply: result.setdefault('reply', reply),
                            lambda error: result.setdefault('error', error), timeout=timeout)
        pump_until(lambda: result, timeout + 1.0, '%s %s %s' % (service, path, method))
        if 'error' in result:
            raise result['error']
        reply = result['reply']
        return reply[0] if len(reply) == 1 else (reply or None)

    def get_items(self, service):
        return self.call(service, '/', 'GetItems')

    def get_value(self, service, path):
        return self.call(service, path, 'GetValue')

    def get_text(self, service, path):
        return self.call(service, path, 'GetText')

    def set_value(self, service, path, value):
        """value: plain Python or an explicit dbus type (dbus.Array([], signature='i') = invalid)."""
        return self.call(service, path, 'SetValue', value, signature='v')

    def sync(self, service):
        """Return once every message the service sent before now has reached this client: the
        reply to Peer.Ping comes after them on the same connection."""
        self.call(service, '/', 'Ping', interface='org.freedesktop.DBus.Peer')

    def owner(self, name):
        """The unique name owning `name`, or None."""
        try:
            return self.bus.get_name_owner(name)
        except dbus.DBusException:      # no owner (or it just went away)
            return None


class SignalRecorder:
    """Records every BusItem signal (ItemsChanged, PropertiesChanged) the client's connection
    receives, with sender and object path. Signals arrive while the GLib context is pumped; call
    client.sync(service) first to be sure all of a service's signals so far are in."""

    def __init__(self, client):
        self.client = client
        self.records = []       # (sender unique name, object path, member, first argument)
        self._owners = {}       # well-known name -> last unique name seen owning it
        self._matches = [
            client.bus.add_signal_receiver(self._on_signal, dbus_interface=BUSITEM,
                                           sender_keyword='sender', path_keyword='path',
                                           member_keyword='member'),
            client.bus.add_signal_receiver(self._on_owner, 'NameOwnerChanged',
                                           'org.freedesktop.DBus', 'org.freedesktop.DBus',
                                           '/org/freedesktop/DBus'),
        ]

    def _on_signal(self, payload, sender=None, path=None, member=None):
        self.records.append((str(sender), str(path), str(member), payload))

    def _on_owner(self, name, old, new):
        if new:
            self._owners[str(name)] = str(new)

    def stop(self):
        for match in self._matches:
            match.remove()

    def clear(self):
        del self.records[:]

    def signals(self, service=None, member=None, path=None):
        """Records from `service` (well-known or unique name), optionally one member and path."""
        sender = None
        if service is not None:
            sender = service if service.startswith(':') else (
                self.client.owner(service) or self._owners.get(service))
        return [r for r in self.records
                if (sender is None or r[0] == sender) and (member is None or r[2] == member)
                and (path is None or r[1] == path)]

    def count(self, service, member):
        return len(self.signals(service, member))


def get_items(address, service):
    return _one_call(address, 'get_items', service)


def get_value(address, service, path):
    return _one_call(address, 'get_value', service, path)


def get_text(address, service, path):
    return _one_call(address, 'get_text', service, path)


def set_value(address, service, path, value):
    return _one_call(address, 'set_value', service, path, value)


def _one_call(address, method, *args):
    client = Client(address)
    try:
        return getattr(client, method)(*args)
    finally:
        client.close()
