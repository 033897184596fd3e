"""The com.victronenergy.BusItem service: one Venus OS D-Bus service on its own bus connection.

    svc = BusItemService('com.victronenergy.grid.pzem_ttyUSB0_1')
    svc.add_path('/Ac/Power', None, text='{:.0f} W')
    svc.add_path('/CustomName', '', writeable=True, on_change=callback)  # callback(path, value)->bool
    svc.register()                 # request the name only now, after all paths exist
    with svc:                      # one ItemsChanged on '/' with only the changed values
        svc['/Ac/Power'] = 230.0
    svc.update({'/Ac/Power': 231.0, '/Connected': 1})     # the same, for a whole poll at once
    svc['/Connected'] = 1          # outside a batch: PropertiesChanged on '/Connected'
    svc.close()

Wire contract (reference/venus-dbus.md section 1): '/' serves GetItems, GetValue, GetText and emits
ItemsChanged; every path serves GetValue, GetText, SetValue and emits PropertiesChanged; an
intermediate node such as '/Ac' answers GetValue/GetText with its subtree. One FallbackObject at '/'
serves every path, so a service costs one Python object plus one small record per path. A path
that is neither an item nor a node above one has no object, as in velib (one object per path): any
method there is answered org.freedesktop.DBus.Error.UnknownObject, which gui-v2 takes as "no such
path" (it asks every AC meter for GetMin/GetMax on /PowerGuard/... paths).
"""
import contextlib

import dbus
import dbus.bus
import dbus.lowlevel
import dbus.service
from dbus.exceptions import DBusException, NameExistsException
from dbus.mainloop.glib import DBusGMainLoop

BUSITEM = 'com.victronenergy.BusItem'
UNKNOWN_OBJECT = 'org.freedesktop.DBus.Error.UnknownObject'
INVALID_TEXT = '---'

__all__ = ['BusItemService', 'NameExistsException', 'BUSITEM']


class BusItemService:
    """One D-Bus service: its paths, their values, and the signals that announce changes."""

    def __init__(self, name, bus=None, lock=None):
        """name: the well-known name. bus: a connection to use instead of a new private
        system-bus connection (the service then leaves it open on close()). lock: held while
        an outside SetValue is handled (its on_change and the change it makes), for a program
        that changes the service from another thread too."""
        self.name = name
        self.lock = lock if lock is not None else contextlib.nullcontext()
        self._own_bus = bus is None
        if bus is None:
            # private: object paths live on the connection, so every service needs its own.
            bus = dbus.SystemBus(private=True, mainloop=DBusGMainLoop())
        self.connection = bus   # the private D-Bus connection (settings.claim() etc. use it)
        self._items = {}
        self._depth = 0          # nesting depth of `with svc:` blocks
        self._before = {}        # path -> value before the current batch, for paths set in it
        self._registered = False
        self._root = _Root(self, bus)

    def add_path(self, path, value, text=None, writeable=False, on_change=None, action=False):
        """text: a format string ('{:.1f} V') or callable(value) -> str; default str(value).
        on_change(path, value) -> bool is asked before an outside SetValue is accepted.
        action=True: a request, not a setting: on_change is asked on every write, an equal
        value too, and the written value is not stored (on_change sets the path if it wants)."""
        if path == '/' or path in self._items:
            raise ValueError('path %r is the root or already added' % path)
        if action and on_change is None:
            raise ValueError('action path %r needs on_change' % path)
        dbus.ObjectPath(path)    # raises ValueError for an invalid object path
        self._items[path] = _Item(_plain(value), text, writeable or action, on_change, action)
        if self._depth:
            self._before[path] = _NEW
        elif self._registered:
            # consumers learn new paths from ItemsChanged (they ignore unknown PropertiesChanged)
            self._items_changed({path: self._props(path)})

    def register(self):
        """Request the well-known name; NameExistsException when another connection owns it."""
        reply = self.connection.request_name(self.name, dbus.bus.NAME_FLAG_DO_NOT_QUEUE)
        if reply not in (dbus.bus.REQUEST_NAME_REPLY_PRIMARY_OWNER,
                         dbus.bus.REQUEST_NAME_REPLY_ALREADY_OWNER):
            raise NameExistsException(self.name)
        self._registered = True

    def close(self):
        """Release the name, unexport '/', and close the connection if the service opened it."""
        if self._root is None:
            return
        if self._registered:
            self._registered = False
            try:
                self.connection.release_name(self.name)
            except DBusException:
                pass             # the bus is gone already: nothing left to release
        self._root.remove_from_connection()
        self._root = None
        if self._own_bus:
            self.connection.flush()
            self.connection.close()

    def __contains__(self, path):
        return path in self._items

    def __getitem__(self, path):
        return self._items[path].value

    def __setitem__(self, path, value):
        item = self._items[path]
        value = _plain(value)
        if _same(item.value, value):
            return
        old, item.value = item.value, value
        self._changed(path, old)

    def update(self, values):
        """{path: value}: set them all; one ItemsChanged with those that changed (the poll's
        path: the same as `with svc:` around one assignment each, in fewer steps)."""
        if self._depth:
            for path, value in values.items():
                self[path] = value
            return
        items = self._items
        changes = {}
        for path, value in values.items():
            item = items[path]
            kind = type(value)
            if kind not in _PLAIN_TYPES:
                value = _plain(value)
                kind = type(value)
            old = item.value
            if type(old) is kind and old == value:      # _same(), inlined: called ~30 times
                continue
            item.value = value
            changes[path] = {'Value': _wrap(value), 'Text': _text(item)}
        if changes and self._registered:
            self._items_changed(changes)

    def __enter__(self):
        self._depth += 1
        return self

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth == 0 and self._before:
            before, self._before = self._before, {}
            if self._registered:
                changes = {path: self._props(path) for path, old in before.items()
                           if not _same(old, self._items[path].value)}
                if changes:
                    self._items_changed(changes)
        return False

    def _items_changed(self, changes):
        # What _Root.ItemsChanged sends, without the steps of dbus-python's signal wrapper
        # (keyword handling, the method call, the walk over the object's exports): per poll.
        message = dbus.lowlevel.SignalMessage('/', BUSITEM, 'ItemsChanged')
        message.append(changes, signature='a{sa{sv}}')
        self.connection.send_message(message)

    def _changed(self, path, old):
        if self._depth:
            self._before.setdefault(path, old)
        elif self._registered:
            # dbus-python appends rel_path to the export path '/' verbatim: drop the leading '/'.
            self._root.PropertiesChanged(self._props(path), rel_path=path[1:])

    def _props(self, path):
        item = self._items[path]
        return {'Value': _wrap(item.value), 'Text': _text(item)}

    # --- what the root object serves ---

    def _has_object(self, path):
        """Whether a velib service would have an object at path: the root, an item, a node."""
        if path == '/' or path in self._items:
            return True
        prefix = path + '/'
        return any(p.startswith(prefix) for p in self._items)

    def _subtree(self, path):
        """[(key relative to path, item)] for every item below path."""
        prefix = '/' if path == '/' else path + '/'
        return [(p[len(prefix):], item) for p, item in self._items.items() if p.startswith(prefix)]

    def _get_items(self):
        return {path: self._props(path) for path in self._items}

    def _get_value(self, path):
        item = self._items.get(path)
        if item is not None:
            return _wrap(item.value)
        return dbus.Dictionary({k: _wrap(i.value) for k, i in self._subtree(path)},
                               signature='sv')

    def _get_text(self, path):
        item = self._items.get(path)
        if item is not None:
            return _text(item)
        # variant_level=1 makes dbus-python send a variant (a{ss}), as velib does for nodes
        return dbus.Dictionary({k: _text(i) for k, i in self._subtree(path)},
                               signature='ss', variant_level=1)

    def _set_value(self, path, wire_value):
        item = self._items.get(path)
        if item is None or not item.writeable:     # a node, or a read-only path
            return 1
        try:
            value = _plain(_unwrap(wire_value))
        except TypeError:
            return 1
        if item.action:
            return 0 if item.on_change(path, value) else 2
        if _same(item.value, value):
            return 0
        if item.on_change is not None and not item.on_change(path, value):
            return 2
        self[path] = value
        return 0

    def _children(self, path):
        """Names of the nodes directly below path, for introspection."""
        if path in self._items:
            return []
        return sorted({key.split('/', 1)[0] for key, _ in self._subtree(path)})


class _Item:
    __slots__ = ('value', 'text', 'writeable', 'on_change', 'action')

    def __init__(self, value, text, writeable, on_change, action=False):
        self.value = value
        self.text = text
        self.writeable = writeable
        self.on_change = on_change
        self.action = action


class _Root(dbus.service.FallbackObject):
    """Exported at '/', serves the root and every path below it (rel_path = the absolute path)."""

    def __init__(self, service, bus):
        dbus.service.FallbackObject.__init__(self, bus, '/')
        self._service = service

    def _message_cb(self, connection, message):
        # dbus-python's dispatcher (the same in 1.2.16 and 1.3.x): answer for the objects a
        # velib service would not have before it looks the method up (UnknownMethod otherwise).
        if isinstance(message, dbus.lowlevel.MethodCallMessage) and \
                not self._service._has_object(message.get_path()):
            if not message.get_no_reply():
                connection.send_message(dbus.lowlevel.ErrorMessage(
                    message, UNKNOWN_OBJECT, 'no object at %s in %s (method %s)' % (
                        message.get_path(), self._service.name, message.get_member())))
            return
        dbus.service.FallbackObject._message_cb(self, connection, message)

    @dbus.service.method(BUSITEM, out_signature='a{sa{sv}}', rel_path_keyword='path')
    def GetItems(self, path):
        if path != '/':
            raise _error('UnknownMethod', 'GetItems is served on / only')
        return self._service._get_items()

    @dbus.service.method(BUSITEM, out_signature='v', rel_path_keyword='path')
    def GetValue(self, path):
        return self._service._get_value(path)

    # no out_signature: 's' on a path, 'v' (a{ss}) on '/' and on nodes
    @dbus.service.method(BUSITEM, rel_path_keyword='path')
    def GetText(self, path):
        return self._service._get_text(path)

    @dbus.service.method(BUSITEM, in_signature='v', out_signature='i', rel_path_keyword='path')
    def SetValue(self, value, path):
        with self._service.lock:
            return self._service._set_value(path, value)

    @dbus.service.signal(BUSITEM, signature='a{sa{sv}}')
    def ItemsChanged(self, changes):
        pass

    @dbus.service.signal(BUSITEM, signature='a{sv}', rel_path_keyword='rel_path')
    def PropertiesChanged(self, changes, rel_path=None):
        pass

    @dbus.service.method(dbus.INTROSPECTABLE_IFACE, out_signature='s',
                         path_keyword='object_path', connection_keyword='connection')
    def Introspect(self, object_path, connection):
        # dbus-python lists only exported objects as children; ours are virtual, so add them.
        children = self._service._children(object_path)
        xml = dbus.service.Object.Introspect(self, object_path, connection)
        head, _, tail = xml.rpartition('</node>')
        return head + ''.join('  <node name="%s"/>\n' % c for c in children) + '</node>' + tail


_NEW = object()   # "no value before": a path added after register()
_PLAIN_TYPES = (type(None), int, float, str)


def _same(a, b):
    # 1 and 1.0 are equal in Python but go out as different D-Bus types
    return type(a) is type(b) and a == b


def _plain(value):
    """The stored form of a value: None, int (also for bool), float, str, or a list of those."""
    if value is None or type(value) in (int, float, str):
        return value
    if isinstance(value, bool):
        return int(value)
    for kind in (int, float, str):
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    raise TypeError('cannot publish %r on D-Bus' % (value,))


def _wrap(value):
    """The D-Bus form: None -> empty int32 array (invalid), int -> int32 (int64 if too big).
    A float, a str and an int32 stay as they are: in a variant dbus-python sends them as a
    double, a string and an int32 (it refuses a bigger int), with no object made per value."""
    kind = type(value)
    if kind is float or kind is str or (kind is int and -2 ** 31 <= value < 2 ** 31):
        return value
    if value is None:
        return dbus.Array([], signature='i')
    if isinstance(value, float):
        return dbus.Double(value)
    if isinstance(value, int):
        return dbus.Int32(value) if -2 ** 31 <= value < 2 ** 31 else dbus.Int64(value)
    if isinstance(value, str):
        return dbus.String(value)
    if all(isinstance(v, str) for v in value):
        return dbus.Array(value, signature='s')
    return dbus.Array([_wrap(v) for v in value], signature='v')


def _unwrap(value):
    """D-Bus types to plain Python; an empty array (of any type) is None, as in velib."""
    if isinstance(value, (list, tuple)):
        return [_unwrap(v) for v in value] or None
    for kind in (int, float, str):   # dbus.Boolean is an int: True arrives as 1
        if isinstance(value, kind):
            return kind(value)
    return value


def _text(item):
    if item.value is None:
        return INVALID_TEXT
    if item.text is None:
        return str(item.value)
    if callable(item.text):
        return item.text(item.value)
    return item.text.format(item.value)


def _error(kind, message):
    return DBusException(message, name='org.freedesktop.DBus.Error.' + kind)
