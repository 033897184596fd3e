"""pzem.system on a private dbus-daemon: the direction from tests/fake_vebus.py (subprocesses that
the tests script through SetValue) and the ESS grid-metering setting from
tests/fake_localsettings.py. The watchers live in the test process; the test thread pumps GLib."""
import os
import signal
import sys

import dbus
import pytest

from dbus_helpers import SignalRecorder, pump, pump_until, run_process
from pzem import system

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE_VEBUS = os.path.join(HERE, 'fake_vebus.py')
FAKE_SETTINGS = os.path.join(HERE, 'fake_localsettings.py')
SETTINGS = 'com.victronenergy.settings'
INVALID = dbus.Array([], signature='i')
STYLES = ('properties', 'items', 'both')


@pytest.fixture
def closing():
    """Closes every watcher a test made."""
    made = []
    yield made.append
    for watcher in made:
        watcher.close()


def vebus(address, name='ttyS4', instance=276, *options):
    """A fake VE.Bus service as a subprocess (context manager, stopped by PID on exit)."""
    return run_process([sys.executable, FAKE_VEBUS, name, str(instance)] + list(options), address,
                       wait_for_name=system.VEBUS_PREFIX + name)


def localsettings(address):
    return run_process([sys.executable, FAKE_SETTINGS], address, wait_for_name=SETTINGS)


def watch(bus, closing, **options):
    flips = []
    direction = system.VebusDirection(bus, on_change=lambda *flip: flips.append(flip), **options)
    closing(direction)
    pump_until(lambda: direction.ready, what='the watcher to look at the bus')
    return direction, flips


def set_power(client, phase, watts, name='ttyS4'):
    """Script the Multi's P on phase; wait for nothing (the caller waits for what it expects)."""
    value = INVALID if watts is None else float(watts)
    assert client.set_value(system.VEBUS_PREFIX + name, '/Ac/ActiveIn/L%d/P' % phase, value) == 0


def seen(direction, phase, watts):
    """Wait until the watcher has taken in watts (None = invalid) for phase."""
    pump_until(lambda: direction.power(phase) == watts, what='P%d = %s' % (phase, watts))


def signs(direction):
    return tuple(direction.sign(p) for p in (1, 2, 3))


# --- direction -------------------------------------------------------------------------------


@pytest.mark.parametrize('style', STYLES)
def test_import_export_and_back_with_each_signal_style(address, bus, client, closing, style):
    with vebus(address, 'ttyS4', 276, '--signals', style, '--power=800,0,0'):
        direction, flips = watch(bus, closing)
        assert direction.service == 'com.victronenergy.vebus.ttyS4'
        assert direction.power(1) == 800.0 and direction.sign(1) == 1
        set_power(client, 1, -500)
        pump_until(lambda: direction.sign(1) == -1, what='export')
        assert direction.sign('L1') == -1 and direction.power(1) == -500.0
        set_power(client, 1, 500)
        pump_until(lambda: direction.sign(1) == 1, what='import again')
        assert flips == [(1, -1), (1, 1)]


def test_dead_band_keeps_the_last_sign(address, bus, client, closing):
    with vebus(address, 'ttyS4', 276, '--power=-500,0,0'):
        direction, flips = watch(bus, closing, dead_band=30)
        assert direction.sign(1) == -1
        for watts in (-10, 0, 20, 30):          # inside the band (30 is not above it)
            set_power(client, 1, watts)
            seen(direction, 1, watts)
            assert direction.sign(1) == -1, watts
        set_power(client, 1, 30.5)
        pump_until(lambda: direction.sign(1) == 1, what='import above the band')
        for watts in (5, -29, -30):
            set_power(client, 1, watts)
            seen(direction, 1, watts)
            assert direction.sign(1) == 1, watts
        set_power(client, 1, -31)
        pump_until(lambda: direction.sign(1) == -1, what='export below the band')
        assert flips == [(1, -1), (1, 1), (1, -1)]     # the first: exporting at start


def test_zero_from_the_start_is_import(address, bus, closing):
    with vebus(address, 'ttyS4', 276, '--power=0,-3,12'):
        direction, _ = watch(bus, closing)
        assert direction.power(2) == -3.0 and signs(direction) == (1, 1, 1)


def test_invalid_power_is_import(address, bus, client, closing):
    with vebus(address, 'ttyS4', 276, '--power=-900,0,0'):
        direction, _ = watch(bus, closing)
        assert direction.sign(1) == -1
        set_power(client, 1, None)
        seen(direction, 1, None)
        assert direction.sign(1) == 1
        set_power(client, 1, -900)
        pump_until(lambda: direction.sign(1) == -1, what='export again')


def test_multi_off_is_import(address, bus, client, closing):
    with vebus(address, 'ttyS4', 276, '--power=-900,0,0'):
        direction, _ = watch(bus, closing)
        assert direction.sign(1) == -1
        assert client.set_value('com.victronenergy.vebus.ttyS4', '/State', 0) == 0
        pump_until(lambda: direction.sign(1) == 1, what='import while off')
        assert client.set_value('com.victronenergy.vebus.ttyS4', '/State', 9) == 0
        pump_until(lambda: direction.sign(1) == -1, what='export once on again')


def test_no_vebus_at_all_is_import(bus, closing):
    direction, flips = watch(bus, closing)
    assert signs(direction) == (1, 1, 1) and direction.service is None
    assert direction.power(1) is None
    assert direction.describe() == 'no VE.Bus device: import assumed'
    assert flips == []


def test_vebus_appearing_later(address, bus, closing):
    direction, flips = watch(bus, closing)
    assert direction.service is None
    with vebus(address, 'ttyS4', 276, '--power=-700,0,0'):
        pump_until(lambda: direction.sign(1) == -1, what='the late VE.Bus service')
        assert direction.describe() == 'com.victronenergy.vebus.ttyS4 (VE.Bus instance 276)'
    assert flips == [(1, -1)]


def test_vebus_going_away_is_import(address, bus, closing):
    with vebus(address, 'ttyS4', 276, '--power=-700,-700,-700'):
        direction, flips = watch(bus, closing)
        assert signs(direction) == (-1, -1, -1)
    pump_until(lambda: direction.service is None, what='the service to go')
    assert signs(direction) == (1, 1, 1) and direction.power(1) is None
    assert sorted(flips) == [(1, -1), (1, 1), (2, -1), (2, 1), (3, -1), (3, 1)]


def test_vebus_coming_back_is_read_afresh(address, bus, closing):
    direction, _ = watch(bus, closing)
    with vebus(address, 'ttyS4', 276, '--power=-700,0,0'):
        pump_until(lambda: direction.sign(1) == -1, what='export')
    pump_until(lambda: direction.service is None, what='the service to go')
    with vebus(address, 'ttyS4', 276, '--power=700,0,0'):
        pump_until(lambda: direction.power(1) == 700.0, what='the new service')
        assert direction.sign(1) == 1


def test_lowest_instance_wins_and_instance_picks_another(address, bus, client, closing):
    with vebus(address, 'ttyS4', 261, '--power=-500,0,0'), \
            vebus(address, 'ttyS5', 257, '--power=500,0,0') as lower:
        lowest, flips = watch(bus, closing)
        picked, _ = watch(bus, closing, instance=261)
        assert lowest.service == 'com.victronenergy.vebus.ttyS5' and lowest.sign(1) == 1
        assert picked.service == 'com.victronenergy.vebus.ttyS4' and picked.sign(1) == -1
        set_power(client, 1, -400, name='ttyS5')
        pump_until(lambda: lowest.sign(1) == -1, what='the lowest instance exporting')
        set_power(client, 1, 400, name='ttyS4')
        pump_until(lambda: picked.sign(1) == 1, what='the picked instance importing')
        assert lowest.sign(1) == -1
        set_power(client, 1, -400, name='ttyS4')
        pump_until(lambda: picked.sign(1) == -1, what='the picked instance exporting')
        lower.terminate()
        pump_until(lambda: lowest.service == 'com.victronenergy.vebus.ttyS4', what='261 to win')
        assert lowest.sign(1) == -1 and picked.service == 'com.victronenergy.vebus.ttyS4'
        assert flips == [(1, -1)]           # exporting before and after the change: no flip


def test_instance_not_present_is_import(address, bus, closing):
    with vebus(address, 'ttyS4', 276, '--power=-500,0,0'):
        direction, _ = watch(bus, closing, instance=5)
        assert direction.service is None and direction.sign(1) == 1
        assert direction.describe() == 'no VE.Bus device with instance 5: import assumed'


def test_three_phases_with_different_signs(address, bus, client, closing):
    with vebus(address, 'ttyS4', 276, '--power=-500,400,-5'):
        direction, _ = watch(bus, closing)
        assert signs(direction) == (-1, 1, 1)
        set_power(client, 2, -400)
        pump_until(lambda: direction.sign(2) == -1, what='L2 exporting')
        assert signs(direction) == (-1, -1, 1)
        set_power(client, 3, -2500)
        pump_until(lambda: direction.sign(3) == -1, what='L3 exporting')
        set_power(client, 1, 2500)
        pump_until(lambda: direction.sign(1) == 1, what='L1 importing')
        assert signs(direction) == (1, -1, -1)


def test_phases_a_single_phase_multi_does_not_have_are_import(address, bus, closing):
    with vebus(address, 'ttyS4', 276, '--phases', '1', '--power=-500,0,0'):
        direction, _ = watch(bus, closing)
        assert signs(direction) == (-1, 1, 1)
        assert direction.power(1) == -500.0 and direction.power(2) is None


def test_a_service_without_getitems_is_read_per_path(address, bus, client, closing):
    with vebus(address, 'ttyS4', 276, '--no-getitems', '--power=-500,600,0'):
        direction, _ = watch(bus, closing)
        assert signs(direction) == (-1, 1, 1)
        assert direction.describe() == 'com.victronenergy.vebus.ttyS4 (VE.Bus instance 276)'
        set_power(client, 2, -600)
        pump_until(lambda: direction.sign(2) == -1, what='L2 exporting')


def test_closed_watcher_lets_go_of_the_bus(address, bus, client, closing):
    with vebus(address, 'ttyS4', 276, '--power=-500,0,0'):
        direction, flips = watch(bus, closing)
        other, _ = watch(bus, closing)
        direction.close()
        set_power(client, 1, 500)
        pump_until(lambda: other.sign(1) == 1, what='the other watcher to see it')
        assert flips == [(1, -1)] and direction.service is None


def test_a_hung_vebus_service_does_not_hold_up_the_watcher(address, bus, closing):
    with vebus(address, 'ttyS4', 276, '--power=-500,0,0') as proc:
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            direction = system.VebusDirection(bus)      # a blocking call would hang here
            closing(direction)
            pump(0.1)
            assert not direction.ready and direction.sign(1) == 1   # GetItems still unanswered
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        pump_until(lambda: direction.sign(1) == -1, what='the answer once it runs again')


def test_directions_share_one_watcher_per_instance(address, bus, closing):
    flips = []
    directions = system.Directions(bus, on_change=lambda *flip: flips.append(flip))
    closing(directions)
    assert directions.get() is directions.get()
    assert directions.get(261) is directions.get(261)
    assert directions.get(261) is not directions.get()
    with vebus(address, 'ttyS4', 261, '--power=-500,0,0'):
        pump_until(lambda: directions.get(261).sign(1) == -1 and directions.get().sign(1) == -1,
                   what='both watchers')
        assert set(flips) == {(None, 1, -1), (261, 1, -1)}


# --- the fake's own contract ------------------------------------------------------------------


@pytest.mark.parametrize('style, members', [('properties', ['PropertiesChanged']),
                                            ('items', ['ItemsChanged']),
                                            ('both', ['PropertiesChanged', 'ItemsChanged'])])
def test_fake_vebus_announces_as_asked(address, client, style, members):
    recorder = SignalRecorder(client)
    name = 'com.victronenergy.vebus.ttyS4'
    with vebus(address, 'ttyS4', 276, '--signals', style):
        items = client.get_items(name)
        assert items['/DeviceInstance']['Value'] == 276 and items['/Ac/ActiveIn/L3/P']['Value'] == 0
        assert client.set_value(name, '/Ac/ActiveIn/L1/P', -250.0) == 0
        assert client.set_value(name, '/Ac/ActiveIn/L1/P', -250.0) == 0      # no change: no signal
        assert client.set_value(name, '/Ac/ActiveIn/L1/I', INVALID) == 0
        assert client.set_value(name, '/ProductName', 'x') == -1
        assert client.set_value(name, '/Ac/ActiveIn/L1/P', 'x') == -1
        client.sync(name)
        got = [(r[2], r[1]) for r in recorder.signals(name)]
        want = []
        for path in ('/Ac/ActiveIn/L1/P', '/Ac/ActiveIn/L1/I'):
            want += [(m, path if m == 'PropertiesChanged' else '/') for m in members]
        assert got == want
        assert client.get_value(name, '/Ac/ActiveIn/L1/P') == -250.0
        assert client.get_value(name, '/Ac/ActiveIn/L1/I').signature == 'i'
    recorder.stop()


def test_fake_vebus_without_getitems(address, client):
    with vebus(address, 'ttyS4', 276, '--no-getitems'):
        with pytest.raises(dbus.DBusException) as error:
            client.get_items('com.victronenergy.vebus.ttyS4')
        assert error.value.get_dbus_name() == 'org.freedesktop.DBus.Error.UnknownMethod'
        assert client.get_value('com.victronenergy.vebus.ttyS4', '/')['DeviceInstance'] == 276


# --- ESS grid metering -------------------------------------------------------------------------


def add_setting(client, value):
    [result] = client.call(SETTINGS, '/', 'AddSettings',
                           [{'path': system.RUN_WITHOUT_GRID_METER, 'default': value}],
                           signature='aa{sv}', interface='com.victronenergy.Settings')
    assert result['error'] == 0


def ess(bus, closing):
    values = []
    metering = system.EssGridMetering(bus, values.append)
    closing(metering)
    return metering, values


def test_ess_value_and_change(address, bus, client, closing):
    with localsettings(address):
        add_setting(client, 0)
        metering, values = ess(bus, closing)
        pump_until(lambda: values == [0], what='the setting')
        assert client.set_value(SETTINGS, system.RUN_WITHOUT_GRID_METER, 1) == 0
        pump_until(lambda: values == [0, 1], what='the change')
        assert client.set_value(SETTINGS, system.RUN_WITHOUT_GRID_METER, 0) == 0
        pump_until(lambda: values == [0, 1, 0], what='the change back')
        assert metering.value == 0


def test_ess_setting_absent_then_added(address, bus, client, closing):
    with localsettings(address):
        metering, values = ess(bus, closing)
        pump_until(lambda: values == [None], what='absent setting')
        add_setting(client, 1)
        pump_until(lambda: values == [None, 1], what='the new setting')


def test_ess_without_localsettings_then_with_then_without(address, bus, client, closing):
    metering, values = ess(bus, closing)
    pump_until(lambda: values == [None], what='no localsettings')
    with localsettings(address):
        add_setting(client, 0)
        pump_until(lambda: values == [None, 0], what='localsettings and the setting')
    pump_until(lambda: values == [None, 0, None], what='localsettings gone')
    assert metering.value is None
