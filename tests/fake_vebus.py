"""A VE.Bus (MultiPlus) look-alike for the tests; NOT Victron's mk2-dbus.

    DBUS_SYSTEM_BUS_ADDRESS=... python tests/fake_vebus.py NAME INSTANCE
        [--signals properties|items|both] [--no-getitems] [--phases N] [--power W,W,W]

Owns com.victronenergy.vebus.NAME and publishes /DeviceInstance (INSTANCE), /ProductName,
/Connected, /State, /Ac/ActiveIn/ActiveInput and, per phase 1..N, /Ac/ActiveIn/Lx/P (W, negative =
fed back into the grid) and /Ac/ActiveIn/Lx/I. The P, I, /State and /Connected paths are writeable
through SetValue (an empty int32 array makes a value invalid), so a test scripts import, export,
zero, invalid and "Multi off" by SetValue. SetValue returns 0 (accepted) or -1 (read-only path, or
not a number).

How the real service announces a change, and why both ways are offered (--signals):
- mk2-dbus, the real vebus service, is closed source. It is built on Victron's C velib, whose
  D-Bus producer (ve_dbus_item.c, onItemChanged, read in a public copy of velib C) sends
  PropertiesChanged on the item's own object path with {'Value': v, 'Text': s} for every changed
  item, and serves no GetItems (its methods are GetValue, GetText, SetValue, GetMin, GetMax,
  GetDefault, SetDefault, GetDescription, Introspect); the copy read is undated, so a newer velib C
  may have more. dbus-flashmq (src/state.cpp) names a vebus
  path, /Hub4/L1/AcPowerSetpoint, that "may not always send PropertiesChanged": PropertiesChanged
  is what its vebus paths normally send. Hence the default, --signals properties.
- Victron's newer producers send ItemsChanged on '/' instead: veutil's Qt exporter
  (VeQItemExportedDbusService::processPending) batches all changes into one ItemsChanged and
  serves GetItems; aiovelib only sends ItemsChanged; velib_python sends ItemsChanged for a batch.
  A Venus release may move mk2-dbus to that; --signals items (or both) covers it.
- Consumers therefore subscribe to both, and fall back from GetItems to GetValue: velib
  dbusmonitor (GetItems, else GetValue on /DeviceInstance and per path), dbus-flashmq (GetItems,
  else GetValue on '/'). --no-getitems makes GetItems fail with UnknownMethod, as velib C does.
"""
import argparse

import dbus
import dbus.bus
import dbus.service
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib

BUSITEM = 'com.victronenergy.BusItem'
PREFIX = 'com.victronenergy.vebus.'


def _error(kind, message):
    return dbus.exceptions.DBusException(message, name='org.freedesktop.DBus.Error.' + kind)


def _wire(value):
    if value is None:
        return dbus.Array([], signature='i')
    if isinstance(value, float):
        return dbus.Double(value)
    if isinstance(value, int):
        return dbus.Int32(value)
    return dbus.String(value)


def _text(path, value):
    if value is None:
        return '---'
    if path.endswith('/P'):
        return '%.0f W' % value
    if path.endswith('/I'):
        return '%.1f A' % value
    return str(value)


class FakeVebus(dbus.service.FallbackObject):
    def __init__(self, bus, instance, phases, power, signals, getitems):
        dbus.service.FallbackObject.__init__(self, bus, '/')
        self.signals = signals
        self.getitems = getitems
        self.items = {
            '/Mgmt/ProcessName': 'fake_vebus', '/Mgmt/Connection': 'VE.Bus',
            '/DeviceInstance': instance, '/ProductName': 'MultiPlus 48/5000/70-50 (fake)',
            '/Connected': 1, '/State': 9, '/Ac/ActiveIn/ActiveInput': 0,
        }
        for n in range(1, phases + 1):
            self.items['/Ac/ActiveIn/L%d/P' % n] = power[n - 1]
            self.items['/Ac/ActiveIn/L%d/I' % n] = round(power[n - 1] / 230.0, 1)
        self.writeable = {p for p in self.items
                          if p.endswith(('/P', '/I')) or p in ('/State', '/Connected')}

    def _props(self, path):
        value = self.items[path]
        return {'Value': _wire(value), 'Text': dbus.String(_text(path, value))}

    def _subtree(self, path):
        prefix = '/' if path == '/' else path + '/'
        found = {p[len(prefix):]: v for p, v in self.items.items() if p.startswith(prefix)}
        if not found:
            raise _error('UnknownObject', 'no path ' + path)
        return found

    @dbus.service.method(BUSITEM, out_signature='a{sa{sv}}', rel_path_keyword='path')
    def GetItems(self, path):
        if path != '/' or not self.getitems:
            raise _error('UnknownMethod', 'no GetItems here')
        return {p: self._props(p) for p in self.items}

    @dbus.service.method(BUSITEM, out_signature='v', rel_path_keyword='path')
    def GetValue(self, path):
        if path in self.items:
            return _wire(self.items[path])
        return dbus.Dictionary({k: _wire(v) for k, v in self._subtree(path).items()},
                               signature='sv')

    @dbus.service.method(BUSITEM, out_signature='s', rel_path_keyword='path')
    def GetText(self, path):
        if path not in self.items:
            raise _error('UnknownObject', 'no path ' + path)
        return _text(path, self.items[path])

    @dbus.service.method(BUSITEM, in_signature='v', out_signature='i', rel_path_keyword='path')
    def SetValue(self, value, path):
        if path not in self.writeable:
            return -1
        if isinstance(value, dbus.Array) and len(value) == 0:
            value = None
        elif isinstance(value, (int, float)) and not isinstance(value, dbus.Boolean):
            value = int(value) if path in ('/State', '/Connected') else float(value)
        else:
            return -1
        if value != self.items[path] or type(value) is not type(self.items[path]):
            self.items[path] = value
            self._announce(path)
        return 0

    def _announce(self, path):
        if self.signals in ('properties', 'both'):
            self.PropertiesChanged(self._props(path), rel_path=path[1:])
        if self.signals in ('items', 'both'):
            self.ItemsChanged({path: self._props(path)})

    @dbus.service.signal(BUSITEM, signature='a{sa{sv}}')
    def ItemsChanged(self, changes):
        pass

    # dbus-python joins the export path '/' and rel_path verbatim: rel_path has no leading '/'
    @dbus.service.signal(BUSITEM, signature='a{sv}', rel_path_keyword='rel_path')
    def PropertiesChanged(self, changes, rel_path=None):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('name', help='the part after ' + PREFIX)
    parser.add_argument('instance', type=int, help='/DeviceInstance')
    parser.add_argument('--signals', choices=('properties', 'items', 'both'),
                        default='properties', help='how a change is announced')
    parser.add_argument('--no-getitems', action='store_true', help='GetItems fails, as in velib C')
    parser.add_argument('--phases', type=int, choices=(1, 2, 3), default=3)
    parser.add_argument('--power', default='0,0,0', help='initial P of L1,L2,L3 in W')
    args = parser.parse_args()
    power = [float(p) for p in args.power.split(',')] + [0.0, 0.0, 0.0]
    DBusGMainLoop(set_as_default=True)
    bus = dbus.SystemBus(private=True)
    FakeVebus(bus, args.instance, args.phases, power, args.signals, not args.no_getitems)
    if bus.request_name(PREFIX + args.name, dbus.bus.NAME_FLAG_DO_NOT_QUEUE) != \
            dbus.bus.REQUEST_NAME_REPLY_PRIMARY_OWNER:
        raise SystemExit('%s is taken' % (PREFIX + args.name))
    GLib.MainLoop().run()


if __name__ == '__main__':
    main()
