"""A localsettings look-alike for the tests; NOT the real localsettings.

    DBUS_SYSTEM_BUS_ADDRESS=... python tests/fake_localsettings.py [--delay SECONDS]

Owns com.victronenergy.settings and follows reference/venus-dbus.md 3.2 and 3.3, i.e. the behaviour
of the real localsettings v1.76 as verified there:
- AddSettings(aa{sv}) -> aa{sv} on '/' (absolute paths under /Settings, else -9) or on a group
  (relative paths). The default's D-Bus type sets the setting type (int -> i, double -> f,
  string -> s); a boolean default is refused with -3. Existing values are never overwritten.
  Other codes: -2 '/_' in the path, -4 invalid path, -5 type differs from the existing setting,
  -7 default out of min/max, -8 the path is a group.
- ClassAndVrmInstance under /Settings/Devices/<uid>/: an existing value is returned unchanged; a new
  default whose class:instance another uid holds gets the next free instance within that class;
  SetValue of a taken combination is bumped silently and returns 0; a value not of the form
  'class:int' returns -1 (and -6 as an AddSettings default: a guess, not verified).
- Setting objects: GetValue, GetText, GetMin, GetMax, GetDefault, SetValue (0, or -1 when the value
  does not convert or is out of range) and PropertiesChanged; '/' serves GetItems and GetValue.
Settings live in memory only; no XML file, no legacy AddSetting.
--delay makes every method call answer that many seconds late.
"""
import argparse
import re
import time

import dbus
import dbus.bus
import dbus.service
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib

SERVICE = 'com.victronenergy.settings'
BUSITEM = 'com.victronenergy.BusItem'
SETTINGS = 'com.victronenergy.Settings'
ELEMENT = re.compile(r'^[A-Za-z0-9_]+$')
VRM = re.compile(r'^/Settings/Devices/([^/]+)/ClassAndVrmInstance$')
CONVERT = {'i': int, 'f': float, 's': str}


def _error(kind, message):
    return dbus.exceptions.DBusException(message, name='org.freedesktop.DBus.Error.' + kind)


def _parse_vrm(value):
    cls, colon, instance = str(value).partition(':')
    try:
        return (cls, int(instance)) if cls and colon else None
    except ValueError:
        return None


def _wire(kind, value):
    if kind == 'i':
        return dbus.Int32(value) if -2 ** 31 <= value < 2 ** 31 else dbus.Int64(value)
    return dbus.Double(value) if kind == 'f' else dbus.String(value)


class Setting:
    def __init__(self, kind, value, minimum, maximum):
        self.kind, self.value, self.default = kind, value, value
        self.min, self.max = minimum, maximum

    def limits_ok(self, value):
        return self.kind == 's' or (self.min == 0 and self.max == 0) or self.min <= value <= self.max

    def props(self, attributes=False):
        props = {'Value': _wire(self.kind, self.value), 'Text': str(self.value)}
        if attributes:
            props.update(Min=_wire(self.kind, self.min), Max=_wire(self.kind, self.max),
                         Default=_wire(self.kind, self.default))
        return props


class FakeSettings(dbus.service.FallbackObject):
    def __init__(self, bus, delay):
        dbus.service.FallbackObject.__init__(self, bus, '/')
        self.delay = delay
        self.settings = {}

    def _slow(self):
        if self.delay:
            time.sleep(self.delay)

    def _setting(self, path):
        if path not in self.settings:
            raise _error('UnknownObject', 'no setting ' + path)
        return self.settings[path]

    def _is_group(self, path):
        return path == '/' or any(p.startswith(path + '/') for p in self.settings)

    def _free_instance(self, path, cls, instance):
        taken = {_parse_vrm(s.value) for p, s in self.settings.items() if VRM.match(p) and p != path}
        while (cls, instance) in taken:
            instance += 1
        return '%s:%d' % (cls, instance)

    def _add(self, path, entry):
        default = entry.get('default')
        if not path.startswith('/Settings/'):
            return -9
        if '/_' in path:
            return -2
        if not all(ELEMENT.match(e) for e in path[1:].split('/')):
            return -4
        if isinstance(default, dbus.Boolean):
            return -3
        kind = ('i' if isinstance(default, int) else 'f' if isinstance(default, float)
                else 's' if isinstance(default, str) else None)
        if kind is None:
            return -3
        if self._is_group(path):
            return -8
        convert = CONVERT[kind]
        setting = Setting(kind, convert(default), convert(entry.get('min', 0)),
                          convert(entry.get('max', 0)))
        if not setting.limits_ok(setting.value):
            return -7
        existing = self.settings.get(path)
        if existing is not None:
            return -5 if existing.kind != kind else 0
        if VRM.match(path):
            parsed = _parse_vrm(setting.value)
            if parsed is None:
                return -6
            setting.value = self._free_instance(path, *parsed)
        self.settings[path] = setting
        self.PropertiesChanged(setting.props(attributes=True), rel_path=path[1:])
        return 0

    @dbus.service.method(SETTINGS, in_signature='aa{sv}', out_signature='aa{sv}',
                         rel_path_keyword='group')
    def AddSettings(self, entries, group):
        self._slow()
        if group not in ('/', '/Settings') and not self._is_group(group):
            raise _error('UnknownObject', 'not a group: ' + group)
        results = []
        for entry in entries:
            path = str(entry.get('path', ''))
            if group != '/':
                path = group + '/' + path.lstrip('/')
            error = self._add(path, entry)
            result = {'path': entry.get('path', ''), 'error': dbus.Int32(error)}
            if error == 0:
                setting = self.settings[path]
                result['value'] = _wire(setting.kind, setting.value)
            results.append(result)
        return results

    @dbus.service.method(BUSITEM, out_signature='a{sa{sv}}', rel_path_keyword='path')
    def GetItems(self, path):
        self._slow()
        if path != '/':
            raise _error('UnknownMethod', 'GetItems is served on / only')
        return {p: s.props(attributes=True) for p, s in self.settings.items()}

    @dbus.service.method(BUSITEM, out_signature='v', rel_path_keyword='path')
    def GetValue(self, path):
        self._slow()
        if path in self.settings:
            return _wire(self.settings[path].kind, self.settings[path].value)
        if not self._is_group(path):
            raise _error('UnknownObject', 'no setting ' + path)
        prefix = '/' if path == '/' else path + '/'
        return dbus.Dictionary({p[len(prefix):]: _wire(s.kind, s.value)
                                for p, s in self.settings.items() if p.startswith(prefix)},
                               signature='sv')

    @dbus.service.method(BUSITEM, out_signature='s', rel_path_keyword='path')
    def GetText(self, path):
        self._slow()
        return str(self._setting(path).value)

    @dbus.service.method(BUSITEM, out_signature='v', rel_path_keyword='path')
    def GetMin(self, path):
        self._slow()
        setting = self._setting(path)
        return _wire(setting.kind, setting.min)

    @dbus.service.method(BUSITEM, out_signature='v', rel_path_keyword='path')
    def GetMax(self, path):
        self._slow()
        setting = self._setting(path)
        return _wire(setting.kind, setting.max)

    @dbus.service.method(BUSITEM, out_signature='v', rel_path_keyword='path')
    def GetDefault(self, path):
        self._slow()
        setting = self._setting(path)
        return _wire(setting.kind, setting.default)

    @dbus.service.method(BUSITEM, in_signature='v', out_signature='i', rel_path_keyword='path')
    def SetValue(self, value, path):
        self._slow()
        if self._is_group(path) and path not in self.settings:
            return -1
        setting = self._setting(path)
        try:
            value = CONVERT[setting.kind](value)
        except (TypeError, ValueError):
            return -1
        if not setting.limits_ok(value):
            return -1
        if VRM.match(path):
            parsed = _parse_vrm(value)
            if parsed is None:
                return -1
            value = self._free_instance(path, *parsed)
        if value != setting.value:
            setting.value = value
            self.PropertiesChanged(setting.props(), rel_path=path[1:])
        return 0

    # dbus-python joins the export path '/' and rel_path verbatim: rel_path has no leading '/'
    @dbus.service.signal(BUSITEM, signature='a{sv}', rel_path_keyword='rel_path')
    def PropertiesChanged(self, changes, rel_path=None):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--delay', type=float, default=0.0, help='answer every call this late (s)')
    args = parser.parse_args()
    DBusGMainLoop(set_as_default=True)
    bus = dbus.SystemBus(private=True)
    FakeSettings(bus, args.delay)
    if bus.request_name(SERVICE, dbus.bus.NAME_FLAG_DO_NOT_QUEUE) != \
            dbus.bus.REQUEST_NAME_REPLY_PRIMARY_OWNER:
        raise SystemExit('%s is taken' % SERVICE)
    GLib.MainLoop().run()


if __name__ == '__main__':
    main()
