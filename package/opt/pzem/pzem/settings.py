"""localsettings client for a device's settings under /Settings/Devices/<ident>/.

ClassAndVrmInstance holds '<role>:<instance>' (e.g. 'grid:40'); localsettings hands out free
instances per class (reference/venus-dbus.md 3.2, 3.3). Energy holds the meter's running totals
(text made by pzem.energy). Every blocking call is bounded by its timeout and returns None when
localsettings is absent, fails or is too slow; the caller then uses fallback_instance() (or keeps
its totals in memory) and says so. Blocking calls are meant for start-up, a role change and a
clean stop; save_energy() is the one made from the poll loop, and it does not wait.
"""
import logging
import time

from dbus.exceptions import DBusException

SETTINGS_SERVICE = 'com.victronenergy.settings'
SETTINGS_IFACE = 'com.victronenergy.Settings'
BUSITEM = 'com.victronenergy.BusItem'

log = logging.getLogger('pzem')


def setting_path(ident):
    return '/Settings/Devices/%s/ClassAndVrmInstance' % ident


def parse(value):
    """'grid:40' -> ('grid', 40); None for anything else."""
    role, colon, instance = str(value).partition(':')
    try:
        return (role, int(instance)) if role and colon else None
    except ValueError:
        return None


def claim(connection, ident, role, default_instance=40, timeout=3.0):
    """(role, instance) stored for ident, created as role:default_instance (or the next free
    instance) when new; None without an answer from localsettings within timeout seconds."""
    entry = {'path': setting_path(ident), 'default': '%s:%d' % (role, default_instance)}
    results = _call(connection, '/', SETTINGS_IFACE, 'AddSettings', 'aa{sv}', [[entry]], timeout)
    for result in results or ():
        if result.get('error') == 0 and 'value' in result:
            return parse(result['value'])
    return None


def change_role(connection, ident, new_role, instance, timeout=3.0):
    """Store new_role:instance; returns what localsettings kept (it may bump the instance)."""
    deadline = time.monotonic() + timeout
    path = setting_path(ident)
    value = '%s:%d' % (new_role, instance)
    code = _call(connection, path, BUSITEM, 'SetValue', 'v', [value], timeout)
    if code != 0:
        return None
    return parse(_call(connection, path, BUSITEM, 'GetValue', '', [], deadline - time.monotonic()))


def watch(connection, ident, callback):
    """Call callback(role, instance) whenever the setting changes; handle.remove() stops it.
    Changes made through change_role() are reported too."""
    def on_change(changes):
        parsed = parse(changes.get('Value'))
        if parsed is not None:
            callback(*parsed)
    return connection.add_signal_receiver(on_change, 'PropertiesChanged', BUSITEM,
                                          SETTINGS_SERVICE, setting_path(ident))


def energy_path(ident):
    return '/Settings/Devices/%s/Energy' % ident


def load_energy(connection, ident, timeout=3.0):
    """The stored energy text for ident ('' when new; the setting is created as a string);
    None without an answer from localsettings within timeout seconds."""
    entry = {'path': energy_path(ident), 'default': ''}
    results = _call(connection, '/', SETTINGS_IFACE, 'AddSettings', 'aa{sv}', [[entry]], timeout)
    for result in results or ():
        if result.get('error') == 0 and 'value' in result:
            return str(result['value'])
    return None


def save_energy(connection, ident, text, on_failure=None, logger=None):
    """Store text without waiting for the answer; a failure is logged (on `logger`, the
    meter's, else with the ident) and reported to on_failure() later, from the main loop.
    Never raises."""
    def failed(why):
        _meter_log(logger, ident).warning('energy totals not saved: %s', why)
        if on_failure is not None:
            on_failure()

    def replied(code):
        if code != 0:
            failed('localsettings refused the value (%s)' % code)

    try:
        connection.call_async(SETTINGS_SERVICE, energy_path(ident), BUSITEM, 'SetValue', 'v',
                              [text], replied, lambda e: failed(e.get_dbus_message()),
                              timeout=10.0)
    except DBusException as e:
        failed(e.get_dbus_message())      # the connection is closed


def save_energy_now(connection, ident, text, timeout=1.0, logger=None):
    """Store text and wait at most timeout seconds; True when localsettings took it."""
    code = _call(connection, energy_path(ident), BUSITEM, 'SetValue', 'v', [text], timeout)
    if code != 0:
        _meter_log(logger, ident).warning(
            'energy totals not saved at stop: %s',
            'no answer from localsettings' if code is None else 'refused (%s)' % code)
        return False
    return True


def _meter_log(logger, ident):
    return logger if logger is not None else prefixed_log(ident)


def prefixed_log(prefix):
    """The driver's logger with `prefix: ` before every line."""
    return _Prefixed(log, {'prefix': prefix})


class _Prefixed(logging.LoggerAdapter):
    def process(self, msg, kwargs):
        return '%s: %s' % (self.extra['prefix'], msg), kwargs


def fallback_instance(ident, default_instance=40):
    """The instance to use without localsettings: default_instance + Modbus address - 1 (idents end
    in _<address>), so it is the same at every start and differs between meters on one port."""
    address = ident.rpartition('_')[2]
    return default_instance + int(address) - 1 if address.isdigit() else default_instance


def _call(connection, path, interface, method, signature, args, timeout):
    if timeout <= 0:
        return None
    try:
        return connection.call_blocking(SETTINGS_SERVICE, path, interface, method, signature, args,
                                        timeout=timeout)
    except DBusException:
        return None      # not on the bus, no reply in time, or an error: all mean "no answer"
