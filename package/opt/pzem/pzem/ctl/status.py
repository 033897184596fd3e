"""status: which ports run dbus-pzem, the meters it publishes on the system D-Bus, and the last
lines of its log. It only looks: nothing is stopped, opened or written.

Per port: the daemontools service /service/dbus-pzem.<tty> and its state, the dbus-pzem
processes (their last argument is the port), each com.victronenergy.<role>.pzem_<tty>_<n>
service with /Connected, its power, /DeviceInstance and /Mgmt/Connection, and the tail of
/var/log/dbus-pzem.<tty>/current with multilog's TAI64N stamps as local times. Tests point
PZEMCTL_SERVICE_DIR and PZEMCTL_LOG_DIR at stand-ins.
"""
import glob
import os
import re
import time

from .. import meter_map, tty
from .console import UsageError, say
from .port import gateway_for
from .port_lease import DRIVER, TAI64_UNIX, driver_processes, program, service_dir, service_state

LOG_DIR = '/var/log'
LOG_LINES = 8
LOG_TAIL_BYTES = 16384
SERVICE = re.compile(r'com\.victronenergy\.([a-z]+)\.pzem_(.+)_([0-9]+)$')
STAMP = re.compile(r'@([0-9a-f]{16})([0-9a-f]{8}) ')
POWER_PATHS = ('/Ac/Power', '/Dc/0/Power')


def log_dir():
    return os.environ.get('PZEMCTL_LOG_DIR', LOG_DIR)


def safe(port):
    """The port as it appears in a service name (pzem_<safe tty>_<address>)."""
    return re.sub('[^A-Za-z0-9_]', '_', port)


def status(port_arg=None):
    services = dict((os.path.basename(s)[len(DRIVER) + 1:], s)
                    for s in glob.glob(os.path.join(service_dir(), DRIVER + '.*')))
    processes = {}
    for pid, argv in driver_processes():
        processes.setdefault(port_of(argv), []).append((pid, argv))
    meters, bus_trouble = published()
    if port_arg:
        ports = [port_name(port_arg)]
    else:
        known = set(services) | set(processes)
        ports = sorted(known | (set(meters) - set(safe(p) for p in known)))
    if not ports:
        say('dbus-pzem runs on no port: no service %s/%s.* and no %s process'
            % (service_dir(), DRIVER, DRIVER))
    for number, port in enumerate(ports):
        if number:
            say()
        say(port)
        for line in service_lines(port, services.get(port)) + process_lines(processes.get(port)):
            say('  ' + line)
        for line in meter_lines(meters.get(safe(port), []), bus_trouble):
            say('  ' + line)
        for line in log_lines(port):
            say('  ' + line)


def port_name(arg, config=meter_map.DEFAULT_PATH):
    """The port `arg` names: a tty's bare name, or a gateway's name (its URL or its name in the
    map)."""
    try:
        gateway = gateway_for(arg, meter_map.load(config))
    except UsageError:
        gateway = None
    return tty.name(arg) if gateway is None else gateway[0]


def port_of(argv):
    """The port a dbus-pzem command line runs on (its last word), named as the driver names it:
    a gateway by the map its --config gives."""
    words = program(argv)
    config = words[words.index('--config') + 1] if '--config' in words[:-2] else \
        meter_map.DEFAULT_PATH
    return port_name(words[-1], config)


def service_lines(port, service):
    if service is None:
        return ['service %s.%s: none (serial-starter has not started the driver on this port)'
                % (DRIVER, port)]
    state = service_state(service)
    if state is None:
        return ['service %s.%s: not supervised (svscan does not run it)' % (DRIVER, port)]
    pid, since = state
    when = ' since %s' % readable(since) if since else ''
    if pid:
        return ['service %s.%s: up (pid %d)%s' % (DRIVER, port, pid, when)]
    return ['service %s.%s: down%s' % (DRIVER, port, when)]


def process_lines(processes):
    if not processes:
        return ['process: none']
    return ['process %d: %s' % (pid, ' '.join(argv)) for pid, argv in processes]


def published():
    """({safe port: [(service name, role, {path: value})]}, None) from the system D-Bus, or
    ({}, why not) when it cannot be asked."""
    try:
        import dbus
        bus = dbus.SystemBus(private=True)
    except Exception as e:      # no dbus-python, or no bus: say so, show the rest
        return {}, 'the system D-Bus cannot be asked: %s' % why(e)
    try:
        found = {}
        for name in sorted(bus.list_names()):
            match = SERVICE.match(str(name))
            if not match:
                continue
            role, port = match.group(1), match.group(2)
            values = dict((path, value_of(bus, name, path)) for path in
                          ('/Connected', '/DeviceInstance', '/Mgmt/Connection', '/CustomName')
                          + POWER_PATHS)
            found.setdefault(port, []).append((str(name), role, values))
        return found, None
    except Exception as e:
        return {}, 'the system D-Bus did not answer: %s' % why(e)
    finally:
        bus.close()


def why(error):
    """A D-Bus failure's own message, without the error name before it."""
    text = getattr(error, 'get_dbus_message', lambda: None)() or str(error)
    return text.split('\n')[0]


def value_of(bus, name, path):
    """The value at `path` of service `name`, or None when it has none."""
    import dbus
    try:
        value = bus.call_blocking(name, path, 'com.victronenergy.BusItem', 'GetValue', '', (),
                                  timeout=2.0)
    except dbus.DBusException:
        return None
    if isinstance(value, (dbus.Array, dbus.Dictionary)) and not value:
        return None     # velib's "invalid", or no such path
    return value


def meter_lines(meters, bus_trouble):
    if bus_trouble:
        return ['meters: unknown: %s' % bus_trouble]
    if not meters:
        return ['meters: none published on D-Bus']
    lines = []
    for name, role, v in meters:
        power = next((v[p] for p in POWER_PATHS if v[p] is not None), None)
        parts = [role, 'connected' if v['/Connected'] == 1 else 'NOT CONNECTED',
                 'power %s' % ('-' if power is None else '%.1f W' % power),
                 'instance %s' % ('-' if v['/DeviceInstance'] is None else v['/DeviceInstance'])]
        if v['/Mgmt/Connection']:
            parts.append(str(v['/Mgmt/Connection']))
        if v['/CustomName']:
            parts.append('"%s"' % v['/CustomName'])
        lines.append('%s: %s' % (name, ', '.join(parts)))
    return lines


def log_lines(port):
    path = os.path.join(log_dir(), '%s.%s' % (DRIVER, port), 'current')
    try:
        with open(path, 'rb') as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - LOG_TAIL_BYTES))
            tail = f.read().decode('utf-8', 'replace').splitlines()[-LOG_LINES:]
    except OSError:
        return ['log %s: none' % path]
    return ['log %s:' % path] + ['  ' + with_time(line) for line in tail]


def with_time(line):
    """multilog's '@4000000065f1c2a30b3c5e14 text' -> '2026-12-01 15:21:33 text'."""
    match = STAMP.match(line)
    if not match:
        return line
    seconds = int(match.group(1), 16) - TAI64_UNIX
    return '%s %s' % (readable(seconds), line[match.end():])


def readable(unix_time):
    return time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(unix_time))
