"""pzem.busitem on a private dbus-daemon, checked through an independent dbus-python client."""
import os
import sys
import textwrap
import threading

import dbus
import pytest

from dbus_helpers import (Client, SignalRecorder, connect, get_items, pump_until,
                          run_pumping, run_process)
from pzem.busitem import BusItemService, NameExistsException

NAME = 'com.victronenergy.grid.pzem_ttyUSB0_1'
INVALID = dbus.Array([], signature='i')
UNKNOWN_OBJECT = 'org.freedesktop.DBus.Error.UnknownObject'
UNKNOWN_METHOD = 'org.freedesktop.DBus.Error.UnknownMethod'


@pytest.fixture
def recorder(client):
    recorder = SignalRecorder(client)
    yield recorder
    recorder.stop()


@pytest.fixture
def make_service(address):
    """Services on their own connection to the private bus; all closed at the end."""
    made = []

    def make(name=NAME, register=True, **paths):
        bus = connect(address)
        svc = BusItemService(name, bus=bus)
        made.append((svc, bus))
        for path, value in paths.items():
            svc.add_path('/' + path, value)
        if register:
            svc.register()
        return svc
    yield make
    for svc, bus in made:
        svc.close()
        bus.close()


def meter(make_service, register=True):
    svc = make_service(register=False)
    svc.add_path('/DeviceInstance', 40)
    svc.add_path('/Connected', 1)
    svc.add_path('/Ac/Power', None, text='{:.0f} W')
    svc.add_path('/Ac/L1/Power', 12.5, text=lambda v: '%.1f W' % v)
    svc.add_path('/Ac/L1/Voltage', 230.0)
    svc.add_path('/AllowedRoles', ['grid', 'acload'])
    svc.add_path('/ProductName', 'PZEM-016')
    if register:
        svc.register()
    return svc


def error_name(call):
    with pytest.raises(dbus.exceptions.DBusException) as raised:
        call()
    return raised.value.get_dbus_name()


# --- methods on '/', nodes and paths -------------------------------------------------------


def test_get_items_has_every_path_absolute_with_value_and_text(make_service, client):
    meter(make_service)
    items = client.get_items(NAME)
    assert sorted(items) == sorted(['/AllowedRoles', '/Ac/L1/Power', '/Ac/L1/Voltage', '/Ac/Power',
                                    '/Connected', '/DeviceInstance', '/ProductName'])
    assert items['/Ac/L1/Power'] == {'Value': 12.5, 'Text': '12.5 W'}
    assert items['/Ac/Power']['Value'] == INVALID and items['/Ac/Power']['Text'] == '---'
    assert items['/DeviceInstance']['Text'] == '40'


def test_encodings(make_service, client):
    svc = make_service(Invalid=None, Float=1.5, Int=7, Big=2 ** 40, Bool=True, Text='abc',
                       Roles=['grid', 'acload'])
    items = client.get_items(svc.name)
    invalid = items['/Invalid']['Value']
    assert isinstance(invalid, dbus.Array) and invalid.signature == 'i' and len(invalid) == 0
    assert type(items['/Float']['Value']) is dbus.Double
    assert type(items['/Int']['Value']) is dbus.Int32
    assert type(items['/Big']['Value']) is dbus.Int64 and items['/Big']['Value'] == 2 ** 40
    assert type(items['/Bool']['Value']) is dbus.Int32 and items['/Bool']['Value'] == 1
    assert type(items['/Text']['Value']) is dbus.String
    roles = items['/Roles']['Value']
    assert roles.signature == 's' and list(roles) == ['grid', 'acload']
    assert type(client.get_value(svc.name, '/Bool')) is dbus.Int32
    assert svc['/Bool'] == 1 and svc['/Roles'] == ['grid', 'acload']


def test_get_value_and_text_on_a_path(make_service, client):
    meter(make_service)
    assert client.get_value(NAME, '/Ac/L1/Power') == 12.5
    assert client.get_text(NAME, '/Ac/L1/Power') == '12.5 W'
    assert client.get_value(NAME, '/Ac/Power') == INVALID
    assert client.get_text(NAME, '/Ac/Power') == '---'


def test_root_and_node_answer_with_relative_keys(make_service, client):
    meter(make_service)
    root = client.get_value(NAME, '/')
    assert root['DeviceInstance'] == 40 and root['Ac/L1/Power'] == 12.5 and len(root) == 7
    assert client.get_text(NAME, '/')['Ac/Power'] == '---'
    assert dict(client.get_value(NAME, '/Ac')) == {'Power': INVALID, 'L1/Power': 12.5,
                                                   'L1/Voltage': 230.0}
    assert dict(client.get_text(NAME, '/Ac/L1')) == {'Power': '12.5 W', 'Voltage': '230.0'}


def test_unknown_paths_and_get_items_off_root(make_service, client):
    meter(make_service)
    assert error_name(lambda: client.get_value(NAME, '/Nope')) == UNKNOWN_OBJECT
    assert error_name(lambda: client.get_text(NAME, '/Ac/Pow')) == UNKNOWN_OBJECT  # not a node
    assert error_name(lambda: client.set_value(NAME, '/Nope', 1)) == UNKNOWN_OBJECT
    assert error_name(lambda: client.call(NAME, '/Ac/Power', 'GetItems')) == UNKNOWN_METHOD


def test_any_method_at_a_path_without_object_is_unknown_object_as_in_velib(make_service,
                                                                           client):
    """gui-v2 asks every AC meter for GetMin/GetMax on /PowerGuard/... and ignores only
    UnknownObject: what libdbus answers for a velib service, which has no object there."""
    meter(make_service)
    for path in ('/PowerGuard/L1/Power', '/Ac/L1/Power/Extra', '/Ac/L'):
        for method in ('GetMin', 'GetMax', 'GetItems', 'GetValue'):
            assert error_name(lambda: client.call(NAME, path, method)) == UNKNOWN_OBJECT
    assert error_name(lambda: client.call(NAME, '/PowerGuard', 'Introspect',
                                          interface='org.freedesktop.DBus.Introspectable')) == \
        UNKNOWN_OBJECT
    # where velib has an object (the root, a node, a path), a method it lacks stays UnknownMethod
    for path in ('/', '/Ac/L1', '/Ac/L1/Power'):
        assert error_name(lambda: client.call(NAME, path, 'GetMin')) == UNKNOWN_METHOD
    assert client.get_value(NAME, '/Ac/L1/Power') == 12.5     # and the rest still answers
    assert client.set_value(NAME, '/Ac/L1', 1) == 1            # a node is not writable


# --- SetValue ------------------------------------------------------------------------------


def test_set_value_codes_and_callback(make_service, client, recorder):
    asked = []

    def on_change(path, value):
        asked.append((path, value))
        return value != 'refused'
    svc = make_service(register=False)
    svc.add_path('/CustomName', 'old', writeable=True, on_change=on_change)
    svc.add_path('/Position', 0, writeable=True)
    svc.add_path('/ProductName', 'PZEM-016')
    svc.register()

    assert client.set_value(NAME, '/ProductName', 'x') == 1
    assert client.set_value(NAME, '/CustomName', 'refused') == 2
    assert svc['/CustomName'] == 'old'
    assert client.set_value(NAME, '/CustomName', 'old') == 0       # equal: accepted, not asked
    assert asked == [('/CustomName', 'refused')]
    client.sync(NAME)
    assert recorder.signals(NAME) == []                             # nothing changed so far

    assert client.set_value(NAME, '/CustomName', 'Boat') == 0
    assert svc['/CustomName'] == 'Boat' and client.get_value(NAME, '/CustomName') == 'Boat'
    client.sync(NAME)
    [(sender, path, member, changes)] = recorder.signals(NAME)
    assert (path, member) == ('/CustomName', 'PropertiesChanged')
    assert changes == {'Value': 'Boat', 'Text': 'Boat'}

    assert client.set_value(NAME, '/Position', 2) == 0
    assert svc['/Position'] == 2 and type(svc['/Position']) is int


def test_an_action_path_asks_on_every_write_and_stores_nothing(make_service, client, recorder):
    asked = []

    def on_change(path, value):
        asked.append(value)
        if value == 7:
            svc[path] = 1       # the callback may show a state of its own
        return value != 'refused'
    svc = make_service(register=False)
    svc.add_path('/Scan', 0, action=True, on_change=on_change)
    svc.register()
    assert client.set_value(NAME, '/Scan', 0) == 0       # equal to the value: asked all the same
    assert client.set_value(NAME, '/Scan', 5) == 0
    assert svc['/Scan'] == 0                               # not stored
    assert client.set_value(NAME, '/Scan', 'refused') == 2
    assert client.set_value(NAME, '/Scan', 7) == 0
    assert svc['/Scan'] == 1 and client.get_value(NAME, '/Scan') == 1
    assert asked == [0, 5, 'refused', 7]
    with pytest.raises(ValueError):
        svc.add_path('/Other', 0, action=True)            # an action needs its callback


def test_set_value_waits_for_the_services_lock(address, client):
    # The driver's poll thread holds the lock during a tick: a write from the GUI is handled
    # after it, on_change and the change together.
    lock = threading.Lock()
    events = []
    svc = BusItemService(NAME, bus=connect(address), lock=lock)
    svc.add_path('/CustomName', 'old', writeable=True,
                 on_change=lambda path, value: events.append(('on_change', lock.locked())) or True)
    svc.register()
    try:
        lock.acquire()
        releaser = threading.Timer(0.3, lambda: (events.append(('released', None)),
                                                 lock.release()))
        releaser.start()
        assert client.set_value(NAME, '/CustomName', 'new') == 0
        releaser.join()
        assert events == [('released', None), ('on_change', True)]
        assert svc['/CustomName'] == 'new' and not lock.locked()
    finally:
        svc.close()
        svc.connection.close()


@pytest.mark.parametrize('wire, plain', [
    (dbus.Array([], signature='i'), None),
    (dbus.Array([], signature='s'), None),
    (dbus.Int32(5), 5),
    (dbus.Boolean(True), 1),
    (dbus.Double(2.5), 2.5),
    (dbus.String('abc'), 'abc'),
    (dbus.Array(['grid', 'acload'], signature='s'), ['grid', 'acload']),
])
def test_set_value_hands_plain_python_to_the_callback(make_service, client, wire, plain):
    seen = []
    svc = make_service(register=False)
    svc.add_path('/X', 'start', writeable=True, on_change=lambda p, v: seen.append(v) or True)
    svc.register()
    assert client.set_value(NAME, '/X', wire) == 0
    assert seen == [plain] and type(seen[0]) is type(plain)
    assert svc['/X'] == plain


# --- signals -------------------------------------------------------------------------------


def test_batch_sends_one_items_changed_with_only_the_changed_paths(make_service, client, recorder):
    svc = meter(make_service)
    with svc:
        svc['/Ac/Power'] = 230.0
        svc['/Ac/L1/Power'] = 230.0
        svc['/Ac/L1/Voltage'] = 230.0     # unchanged
        svc['/Connected'] = True          # == 1: unchanged
    client.sync(NAME)
    [(sender, path, member, changes)] = recorder.signals(NAME)
    assert (path, member) == ('/', 'ItemsChanged')
    assert sender == client.owner(NAME)
    assert dict(changes) == {'/Ac/Power': {'Value': 230.0, 'Text': '230 W'},
                             '/Ac/L1/Power': {'Value': 230.0, 'Text': '230.0 W'}}


def test_batch_without_change_sends_nothing(make_service, client, recorder):
    svc = meter(make_service)
    with svc:
        svc['/Ac/L1/Voltage'] = 230.0
    with svc:
        svc['/Ac/Power'] = 5.0            # and back: no net change
        svc['/Ac/Power'] = None
    client.sync(NAME)
    assert recorder.signals(NAME) == []


def test_nested_batches_send_one_signal(make_service, client, recorder):
    svc = meter(make_service)
    with svc:
        svc['/Ac/Power'] = 1.0
        with svc:
            svc['/Ac/L1/Power'] = 1.0
        svc['/Ac/L1/Voltage'] = 231.0
    client.sync(NAME)
    assert recorder.count(NAME, 'ItemsChanged') == 1
    assert len(recorder.signals(NAME)[0][3]) == 3


def test_update_sends_one_items_changed_with_only_the_changed_paths(make_service, client,
                                                                     recorder):
    svc = meter(make_service)
    svc.update({'/Ac/Power': 230.0, '/Ac/L1/Power': 12.5, '/Ac/L1/Voltage': 231.0,
                '/Connected': True})            # True == 1 and 12.5: unchanged
    svc.update({'/Ac/Power': 230.0})            # nothing changed: no signal
    svc.update({'/Ac/Power': 230})              # an int after a float: another D-Bus type
    client.sync(NAME)
    assert [(r[1], r[2], dict(r[3])) for r in recorder.signals(NAME)] == [
        ('/', 'ItemsChanged', {'/Ac/Power': {'Value': 230.0, 'Text': '230 W'},
                               '/Ac/L1/Voltage': {'Value': 231.0, 'Text': '231.0'}}),
        ('/', 'ItemsChanged', {'/Ac/Power': {'Value': 230, 'Text': '230 W'}}),
    ]
    assert client.get_value(NAME, '/Ac/L1/Voltage') == 231.0
    with pytest.raises(KeyError):
        svc.update({'/No/Such/Path': 1})


def test_update_sends_the_d_bus_types_get_items_answers_with(make_service, client, recorder):
    # update() hands float, str and int32 values to dbus-python as they are: the signal must
    # carry the same types as every other way of reading them.
    svc = make_service(Invalid=0, Float=0.5, Int=0, Big=0, Negative=0, Text='', Roles=['x'])
    svc.update({'/Invalid': None, '/Float': 1.5, '/Int': 7, '/Big': 2 ** 40,
                '/Negative': -2 ** 31, '/Text': 'abc', '/Roles': ['grid', 'acload']})
    client.sync(svc.name)
    (signal,) = recorder.signals(svc.name)
    sent, items = dict(signal[3]), client.get_items(svc.name)
    assert sorted(sent) == sorted(items)
    for path, item in sent.items():
        value, asked = item['Value'], items[path]['Value']
        assert type(value) is type(asked) and value == asked, path
        assert getattr(value, 'signature', None) == getattr(asked, 'signature', None), path
        assert item['Text'] == items[path]['Text'], path
    assert type(sent['/Big']['Value']) is dbus.Int64
    assert type(sent['/Negative']['Value']) is dbus.Int32
    assert type(sent['/Float']['Value']) is dbus.Double


def test_update_inside_a_batch_joins_it_and_before_register_sends_nothing(
        make_service, client, recorder):
    svc = meter(make_service, register=False)
    svc.update({'/Ac/Power': 10.0})
    svc.register()
    with svc:
        svc['/Connected'] = 0
        svc.update({'/Ac/Power': 11.0})
    client.sync(NAME)
    assert [(r[1], r[2], dict(r[3])) for r in recorder.signals(NAME)] == [
        ('/', 'ItemsChanged', {'/Connected': {'Value': 0, 'Text': '0'},
                               '/Ac/Power': {'Value': 11.0, 'Text': '11 W'}})]


def test_single_set_sends_properties_changed_on_the_path_only_when_changed(
        make_service, client, recorder):
    svc = meter(make_service)
    svc['/Connected'] = 1
    svc['/Connected'] = 0
    svc['/Ac/Power'] = 1.0
    svc['/Ac/Power'] = 1          # int after float: another D-Bus type, so a change
    client.sync(NAME)
    assert [(r[1], r[2], dict(r[3])) for r in recorder.signals(NAME)] == [
        ('/Connected', 'PropertiesChanged', {'Value': 0, 'Text': '0'}),
        ('/Ac/Power', 'PropertiesChanged', {'Value': 1.0, 'Text': '1 W'}),
        ('/Ac/Power', 'PropertiesChanged', {'Value': 1, 'Text': '1 W'}),
    ]
    assert type(recorder.signals(NAME)[-1][3]['Value']) is dbus.Int32


def test_text_is_formatted_only_when_sent_or_asked(make_service, client):
    calls = []
    svc = make_service(register=False)
    svc.add_path('/Ac/Power', 1.0, text=lambda v: calls.append(v) or '%.0f W' % v)
    svc.register()
    for _ in range(50):
        svc['/Ac/Power'] = 1.0
        with svc:
            svc['/Ac/Power'] = 1.0
    assert calls == []
    with svc:
        svc['/Ac/Power'] = 2.0
        svc['/Ac/Power'] = 3.0
    assert calls == [3.0]
    assert client.get_text(NAME, '/Ac/Power') == '3 W'


def test_no_signals_before_register(make_service, client, recorder):
    svc = meter(make_service, register=False)
    svc['/Connected'] = 0
    with svc:
        svc['/Ac/Power'] = 10.0
    svc.register()
    client.sync(NAME)
    assert recorder.signals(NAME) == []
    assert client.get_value(NAME, '/Ac/Power') == 10.0


def test_path_added_after_register_is_announced(make_service, client, recorder):
    svc = meter(make_service)
    svc.add_path('/Ac/Frequency', 50.0)
    client.sync(NAME)
    [(_, path, member, changes)] = recorder.signals(NAME)
    assert (path, member, list(changes)) == ('/', 'ItemsChanged', ['/Ac/Frequency'])


# --- name, registration, connection ---------------------------------------------------------


def test_name_appears_only_at_register_with_every_path_in_place(make_service, client):
    seen = {}

    def on_owner(name, old, new):
        if name == NAME and new:   # what a consumer does: GetItems as soon as the name appears
            client.bus.call_async(NAME, '/', 'com.victronenergy.BusItem', 'GetItems', '', (),
                                  lambda items: seen.setdefault('items', items),
                                  lambda error: seen.setdefault('items', error))
    client.bus.add_signal_receiver(on_owner, 'NameOwnerChanged', 'org.freedesktop.DBus',
                                   'org.freedesktop.DBus', '/org/freedesktop/DBus')
    svc = meter(make_service, register=False)
    client.sync(client.bus.get_unique_name())
    assert client.owner(NAME) is None
    svc.register()
    pump_until(lambda: 'items' in seen, what='GetItems after NameOwnerChanged')
    assert '/DeviceInstance' in seen['items'] and seen['items']['/DeviceInstance']['Value'] == 40


def test_taken_name_raises(make_service):
    make_service()
    with pytest.raises(NameExistsException, match=NAME):
        make_service()


def test_two_services_have_separate_trees(make_service, client):
    make_service(name=NAME, DeviceInstance=40)
    make_service(name='com.victronenergy.acload.pzem_ttyUSB0_2', DeviceInstance=41, Extra=1)
    assert list(client.get_items(NAME)) == ['/DeviceInstance']
    assert client.get_value('com.victronenergy.acload.pzem_ttyUSB0_2', '/DeviceInstance') == 41


def test_close_releases_the_name_and_unexports(make_service, client, recorder, address):
    svc = meter(make_service)
    unique = client.owner(NAME)
    svc.close()
    pump_until(lambda: client.owner(NAME) is None, what='name released')
    # nothing exported at '/' any more: libdbus itself answers UnknownMethod
    assert error_name(lambda: client.get_items(unique)) == 'org.freedesktop.DBus.Error.UnknownMethod'
    svc.close()                                   # twice is fine
    svc['/Connected'] = 0                         # and setting after close sends nothing
    assert recorder.signals(unique) == []


def test_introspection_by_command_line_tools(make_service, address):
    meter(make_service)
    rc, out = run_pumping(['gdbus', 'introspect', '--system', '--dest', NAME,
                           '--object-path', '/Ac/L1/Power'], address)
    assert rc == 0 and 'SetValue' in out and 'PropertiesChanged' in out
    rc, out = run_pumping(['gdbus', 'introspect', '--system', '--dest', NAME,
                           '--object-path', '/Ac'], address)
    assert rc == 0 and 'node L1' in out and 'node Power' in out
    rc, out = run_pumping(['dbus-send', '--system', '--print-reply', '--dest=' + NAME,
                           '/Ac/L1/Voltage', 'com.victronenergy.BusItem.GetValue'], address)
    assert rc == 0 and 'double 230' in out
    rc, out = run_pumping(['dbus-send', '--system', '--print-reply', '--dest=' + NAME,
                           '/Ac/Nope', 'com.victronenergy.BusItem.GetValue'], address)
    assert rc != 0 and UNKNOWN_OBJECT in out


SERVICE_SCRIPT = textwrap.dedent('''
    import signal
    from gi.repository import GLib
    from pzem.busitem import BusItemService
    svc = BusItemService(%r)
    svc.add_path('/DeviceInstance', 40)
    svc.add_path('/Ac/Power', 100.0, text='{:.0f} W')
    svc.add_path('/CustomName', '', writeable=True, on_change=lambda p, v: True)
    svc.register()
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    loop.run()
    svc.close()
''' % NAME)


def test_default_connection_is_a_private_system_bus_connection(address):
    driver_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              'package', 'opt', 'pzem')
    args = [sys.executable, '-c', 'import sys; sys.path.insert(0, %r)\n' % driver_dir
            + SERVICE_SCRIPT]
    with run_process(args, address, wait_for_name=NAME) as proc:
        assert get_items(address, NAME)['/Ac/Power'] == {'Value': 100.0, 'Text': '100 W'}
        rc, out = run_pumping(['dbus-send', '--system', '--print-reply', '--dest=' + NAME,
                               '/CustomName', 'com.victronenergy.BusItem.SetValue',
                               'variant:string:Boat'], address)
        assert rc == 0 and 'int32 0' in out
        proc.terminate()
        assert proc.wait(5) == 0
    client = Client(address)
    try:
        assert client.owner(NAME) is None
    finally:
        client.close()
