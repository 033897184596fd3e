"""What the rest of the Venus system says: the direction at the Multi's AC input, and ESS metering.

    directions = Directions(connection)           # one watcher per VE.Bus instance asked for
    vebus = directions.get()                      # lowest /DeviceInstance; get(276) picks one
    power = vebus.sign(1) * measured_power        # +1 import, -1 export; phase 1..3 or 'L1'..'L3'
    ess = EssGridMetering(connection, on_change)  # on_change(0 / 1 / None)

Everything here follows other services on the bus and never blocks the GLib main loop: names are
found with ListNames and followed with NameOwnerChanged, values come from one GetItems (GetValue per
path for a service without GetItems) and then from the service's signals; match rules are sent
without waiting for the bus daemon's reply. Signals are taken from the sender's unique name only,
so a service that goes away and comes back is read afresh. Sources: reference/venus-dbus.md 1, 9.
"""
import functools

import dbus.connection

BUSITEM = 'com.victronenergy.BusItem'
VEBUS_PREFIX = 'com.victronenergy.vebus.'
SETTINGS_SERVICE = 'com.victronenergy.settings'
RUN_WITHOUT_GRID_METER = '/Settings/CGwacs/RunWithoutGridMeter'
DAEMON = ('org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus')

PHASES = (1, 2, 3)
POWER_PATHS = {'/Ac/ActiveIn/L%d/P' % n: n for n in PHASES}
INSTANCE_PATH = '/DeviceInstance'
STATE_PATH = '/State'
STATE_OFF = 0

# W; a judgement, not a measurement. A Multi in ESS regulating its AC input to a set-point near 0 W
# wanders around it; the band keeps that from flipping the published sign back and forth. It is
# small next to real feed-in (hundreds of W and up), and while P stays inside it at most 30 W can
# be booked the wrong way (0.03 kWh an hour).
DEFAULT_DEAD_BAND = 30.0


class VebusDirection:
    """The direction of each phase at the Multi's AC input, from the VE.Bus service's
    /Ac/ActiveIn/Lx/P (W; negative = fed back into the grid).

    The service: com.victronenergy.vebus.*, the one with the lowest /DeviceInstance, or exactly the
    one with `instance` when given (systemcalc also takes the lowest). Rules:
    - Dead band with hysteresis: a phase turns to export (-1) only when P < -dead_band and back to
      import (+1) only when P > +dead_band; inside the band the last sign stays, so noise around
      zero does not flip it (energy booked the wrong way is then at most dead_band x the time).
    - Import (+1) whenever nothing can feed back: no VE.Bus service (or not the instance asked
      for), the service gone, a phase it does not publish, an invalid P (empty array), the Multi
      off (/State 0), and until every VE.Bus service present at start has been read (so the
      lowest instance is known). A change of service starts again from import.
    on_change(phase, sign) is called when a phase's sign flips.
    """

    def __init__(self, connection, instance=None, dead_band=DEFAULT_DEAD_BAND, on_change=None):
        self.instance = instance
        self.dead_band = float(dead_band)
        self.on_change = on_change
        self.service = None        # well-known name of the service followed, or None
        self._connection = connection
        self._signs = {n: 1 for n in PHASES}
        self._signs.update({'L%d' % n: 1 for n in PHASES})
        self._services = {}        # well-known name -> _Vebus
        self._started = False
        self._names = _NameWatch(connection, lambda n: n.startswith(VEBUS_PREFIX), self._owner)

    @property
    def ready(self):
        """True once the services present at start have been looked at."""
        return self._names.ready and all(s.scanned for s in self._services.values())

    def sign(self, phase):
        """+1 (import) or -1 (export) for phase 1..3 (or 'L1'..'L3')."""
        return self._signs[phase]

    def power(self, phase):
        """The last P (W) the followed service gave for phase 1..3, or None."""
        vebus = self._services.get(self.service)
        return None if vebus is None else vebus.power.get(phase)

    def describe(self):
        vebus = self._services.get(self.service)
        if vebus is not None:
            return '%s (VE.Bus instance %d)' % (vebus.name, vebus.instance)
        if self.instance is not None:
            return 'no VE.Bus device with instance %d: import assumed' % self.instance
        return 'no VE.Bus device: import assumed'

    def close(self):
        self._names.close()
        for vebus in self._services.values():
            vebus.close()
        self._services.clear()
        self.service = None

    # --- services coming and going ---

    def _owner(self, name, owner):
        old = self._services.pop(name, None)
        if old is not None:
            old.close()
        if owner:
            self._services[name] = _Vebus(self._connection, name, owner, self._update)
        self._update()

    def _choose(self):
        found = [(v.instance, v.name) for v in self._services.values() if v.instance is not None]
        if self.instance is not None:
            found = [f for f in found if f[0] == self.instance]
        return min(found)[1] if found else None

    def _update(self):
        if not self._started:
            if not self.ready:
                return      # not before every service present at start is read: lowest is lowest
            self._started = True
        chosen = self._choose()
        restart = chosen != self.service
        self.service = chosen
        vebus = self._services.get(chosen)
        for phase in PHASES:
            sign = 1 if restart else self._signs[phase]
            power = None if vebus is None or vebus.off else vebus.power.get(phase)
            if power is None or power > self.dead_band:
                sign = 1
            elif power < -self.dead_band:
                sign = -1
            self._set(phase, sign)

    def _set(self, phase, sign):
        if self._signs[phase] != sign:
            self._signs[phase] = self._signs['L%d' % phase] = sign
            if self.on_change is not None:
                self.on_change(phase, sign)


class Directions:
    """One VebusDirection per instance asked for (None = the lowest), shared by the meters that
    ask for it. on_change(instance, phase, sign) is called for every watcher's flips."""

    def __init__(self, connection, dead_band=DEFAULT_DEAD_BAND, on_change=None):
        self._connection = connection
        self._dead_band = dead_band
        self._on_change = on_change
        self._watchers = {}

    def get(self, instance=None):
        watcher = self._watchers.get(instance)
        if watcher is None:
            on_change = self._on_change and functools.partial(self._on_change, instance)
            watcher = VebusDirection(self._connection, instance, self._dead_band, on_change)
            self._watchers[instance] = watcher
        return watcher

    def close(self):
        for watcher in self._watchers.values():
            watcher.close()
        self._watchers.clear()


class EssGridMetering:
    """Follows localsettings' /Settings/CGwacs/RunWithoutGridMeter (0: ESS regulates on an external
    grid meter, 1: on the Multi's own measurement). on_change(value) gets the int value, or None
    when the setting or localsettings is absent; it is called at start and on every change."""

    _UNSET = object()

    def __init__(self, connection, on_change):
        self.on_change = on_change
        self.value = None
        self._reported = self._UNSET
        self._connection = connection
        self._peer = None
        self._names = _NameWatch(connection, lambda n: n == SETTINGS_SERVICE, self._owner,
                                 self._started)

    def close(self):
        self._names.close()
        if self._peer is not None:
            self._peer.close()
            self._peer = None

    def _owner(self, name, owner):
        if self._peer is not None:
            self._peer.close()
            self._peer = None
        if owner:
            self._peer = _Peer(self._connection, owner, (RUN_WITHOUT_GRID_METER,), self._values,
                               scan='GetValue')
        else:
            self._report(None)

    def _started(self):
        if self._peer is None:
            self._report(None)   # no localsettings at start

    def _values(self, values):
        if RUN_WITHOUT_GRID_METER in values:
            value = values[RUN_WITHOUT_GRID_METER]
            self._report(None if value is None else int(value))

    def _report(self, value):
        self.value = value
        if value != self._reported:
            self._reported = value
            self.on_change(value)


class _Vebus:
    """One VE.Bus service: its instance, on/off state and per-phase P, kept current."""

    def __init__(self, connection, name, owner, on_update):
        self.name = name
        self.instance = None
        self.off = False
        self.power = {}
        self._on_update = on_update
        paths = tuple(POWER_PATHS) + (INSTANCE_PATH, STATE_PATH)
        self._peer = _Peer(connection, owner, paths, self._values)

    @property
    def scanned(self):
        return self._peer.scanned

    def close(self):
        self._peer.close()

    def _values(self, values):
        for path, value in values.items():
            if path == INSTANCE_PATH:
                self.instance = None if value is None else int(value)
            elif path == STATE_PATH:
                self.off = value == STATE_OFF
            else:
                self.power[POWER_PATHS[path]] = value
        self._on_update()


class _Peer:
    """Values of a few paths of one service (by unique name): one scan, then its signals.
    on_values({path: float or None}) gets what arrived, scan results and signals alike. Replies and
    signals from one sender arrive in the order it sent them, so the latest message always wins."""

    def __init__(self, connection, owner, paths, on_values, scan='GetItems'):
        self.scanned = False
        self._connection = connection
        self._owner = owner
        self._paths = paths
        self._on_values = on_values
        self._closed = False
        # one rule per path: the bus daemon then drops the service's other PropertiesChanged
        self._matches = [_listen(connection, self._properties_changed, 'PropertiesChanged', BUSITEM,
                                 owner, path, path_keyword='path') for path in paths]
        self._matches.append(_listen(connection, self._items_changed, 'ItemsChanged', BUSITEM,
                                     owner, '/'))
        if scan == 'GetItems':
            self._call('/', 'GetItems', self._got_items, self._get_values)
        else:
            self._get_values()

    def close(self):
        self._closed = True
        for match in self._matches:
            match.remove()
        self._matches = []

    def _call(self, path, method, reply, error):
        self._connection.call_async(self._owner, path, BUSITEM, method, '', (),
                                    lambda *r: self._closed or reply(*r),
                                    lambda e: self._closed or error(e))

    def _got_items(self, items):
        self.scanned = True
        self._deliver({_absolute(p): props.get('Value') for p, props in items.items()
                       if isinstance(props, dict)}, absent_invalid=True)

    def _get_values(self, error=None):
        """No GetItems (older services): GetValue per path."""
        pending = set(self._paths)

        def done(path, value):
            pending.discard(path)
            self.scanned = not pending
            self._deliver({path: value})
        for path in self._paths:
            self._call(path, 'GetValue', lambda v, p=path: done(p, v),
                       lambda e, p=path: done(p, None))

    def _items_changed(self, items):
        self._deliver({_absolute(p): props['Value'] for p, props in items.items()
                       if isinstance(props, dict) and 'Value' in props})

    def _properties_changed(self, changes, path=None):
        if 'Value' in changes:
            self._deliver({str(path): changes['Value']})

    def _deliver(self, values, absent_invalid=False):
        found = {p: _number(values.get(p)) for p in self._paths
                 if p in values or absent_invalid}
        if found and not self._closed:
            self._on_values(found)


class _NameWatch:
    """Calls on_owner(name, unique_owner) for every bus name that `wanted(name)` accepts, when it
    is found at start or appears, and on_owner(name, None) when it goes away; on_ready() once the
    names present at start have all been reported."""

    def __init__(self, connection, wanted, on_owner, on_ready=None):
        self.ready = False
        self._connection = connection
        self._wanted = wanted
        self._on_owner = on_owner
        self._on_ready = on_ready
        self._owners = {}
        self._pending = set()
        self._closed = False
        self._match = _listen(connection, self._changed, 'NameOwnerChanged', DAEMON[2], DAEMON[0],
                              DAEMON[1])
        connection.call_async(DAEMON[0], DAEMON[1], DAEMON[2], 'ListNames', '', (),
                              self._listed, lambda error: self._listed([]))

    def close(self):
        self._closed = True
        self._match.remove()

    def _listed(self, names):
        if self._closed:
            return
        self._pending = {str(n) for n in names if self._wanted(str(n))}
        for name in sorted(self._pending):
            self._connection.call_async(DAEMON[0], DAEMON[1], DAEMON[2], 'GetNameOwner', 's',
                                        (name,), lambda owner, n=name: self._found(n, str(owner)),
                                        lambda error, n=name: self._found(n, ''))
        self._check_ready()

    def _found(self, name, owner):
        if self._closed:
            return
        self._pending.discard(name)
        self._set(name, owner)
        self._check_ready()

    def _check_ready(self):
        if not self._pending and not self.ready:
            self.ready = True
            if self._on_ready is not None:
                self._on_ready()

    def _changed(self, name, old, new):
        if not self._closed and self._wanted(str(name)):
            self._set(str(name), str(new))

    def _set(self, name, owner):
        if self._owners.get(name, '') != owner:
            if owner:
                self._owners[name] = owner
            else:
                self._owners.pop(name, None)
            self._on_owner(name, owner or None)


def _listen(connection, handler, member, interface, sender, path=None, **keywords):
    """Receive signals like connection.add_signal_receiver, but send the match rule to the bus
    daemon without waiting for its reply (match.remove() takes it away the same way)."""
    match = dbus.connection.Connection.add_signal_receiver(connection, handler, member, interface,
                                                          sender, path, **keywords)
    connection.add_match_string_non_blocking(str(match))
    return match


def _absolute(path):
    path = str(path)
    return path if path.startswith('/') else '/' + path


def _number(value):
    """A D-Bus value as float, None when invalid (an empty array) or not a number."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None
