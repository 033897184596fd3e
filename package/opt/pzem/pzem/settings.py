"""localsettings client for a device's VRM instance: /Settings/Devices/<ident>/ClassAndVrmInstance.

The setting holds '<role>:<instance>' (e.g. 'grid:40'); localsettings hands out free instances per
class (reference/venus-dbus.md 3.2, 3.3). Every call is bounded by its timeout and returns None when
localsettings is absent, fails or is too slow; the caller then uses fallback_instance() and says so.
The calls block (for at most the timeout): they are meant for start-up and for a role change.
"""
import time

from dbus.exceptions import DBusException

SETTINGS_SERVICE = 'com.victronenergy.settings'
SETTINGS_IFACE = 'com.victronenergy.Settings'
BUSITEM = 'com.victronenergy.BusItem'


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
