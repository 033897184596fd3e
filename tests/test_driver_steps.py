"""The driver's steps one by one (pzem.driver.Driver), in this process: the simulator on a pty,
a private dbus-daemon, and a fake clock where a step has timing. The poll thread is not started
except by the test of run(): the tests call tick() themselves, at the fake times they choose."""
import contextlib
import logging
import os
import signal
import sys
import threading
import time

import dbus
import dbus.bus
import pytest
from gi.repository import GLib

from dbus_helpers import pump, pump_until, run_process
from driver_rig import FAKE_SETTINGS
from pzem import driver as driver_module
from pzem.driver import (EXIT_NO_METER, EXIT_PORT, EXIT_STOPPED, MAP_CHECK_SECONDS,
                         PROBE_SECONDS, Driver)
from pzem.poll import PROBE_MARGIN
from pzemsim import AcMeter
from sim_fixtures import sim_bus  # noqa: F401 (pytest fixture)

T0 = 5000.0
SCAN_TIMEOUT = 0.5      # generous: the simulator shares a busy machine with other suites
NO_SCAN = '[bus]\nscan = no\n'
GRID = NO_SCAN + '[1]\nrole = grid\n'
SETTINGS = 'com.victronenergy.settings'
ESS_SETTING = '/Settings/CGwacs/RunWithoutGridMeter'
UNSIGNED = 'ttyPZEM0:%d: a grid meter without sign = vebus, while ESS regulates'


class Clock(object):
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now


def ac(address):
    return AcMeter(address, voltage=230.0, current=1.5, power=300.1, energy_wh=1234,
                   power_factor=0.87)


def service(role, address):
    return 'com.victronenergy.%s.pzem_ttyPZEM0_%d' % (role, address)


@pytest.fixture
def system_bus(address, monkeypatch):
    """libdbus fixes the system bus's address at a process's first connection (dbus_helpers),
    and the driver and its meters ask for dbus.SystemBus(private=True): here each gets a
    private connection to this test's own dbus-daemon."""
    monkeypatch.setattr(dbus, 'SystemBus', lambda private=False, mainloop=None:
                        dbus.bus.BusConnection(address, mainloop=mainloop))
    return address


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.INFO, logger='pzem')
    return caplog


@pytest.fixture
def port(tmp_path, sim_bus):  # noqa: F811 (the imported fixture)
    """port(map text, *meters) -> (the started simulator, the map's path)."""
    def make(text, *meters):
        sim = sim_bus(*meters)
        path = tmp_path / 'pzem.conf'
        path.write_text(text)
        return sim, str(path)
    return make


def make_driver(sim, config, clock, kind=Driver, **options):
    options.setdefault('interval', 1.0)
    options.setdefault('timeout', 0.5)
    options.setdefault('scan_timeout', SCAN_TIMEOUT)
    return kind(sim.link, config, clock=clock, **options)


@contextlib.contextmanager
def started(sim, config, clock=None, since=0.0, kind=Driver):
    """A driver that has opened its port, connected and started up `since` seconds after the
    process started; closed afterwards."""
    clock = clock or Clock()
    driver = make_driver(sim, config, clock, kind, started=clock() - since)
    try:
        assert driver.open() is None and driver.connect() is None
        yield driver, driver.start_up()
    finally:
        driver.close()


def write_map(path, text):
    """Replace the map as an editor does (a new file put in place)."""
    with open(path + '.new', 'w') as f:
        f.write(text)
    os.replace(path + '.new', path)


def tick_at(driver, clock, when):
    """The poll thread's tick at fake time T0 + when, then what it handed to the main loop."""
    clock.now = T0 + when
    with driver.lock:
        driver.tick()
    pump(0.05)


# -- the command line and the map's [bus] ------------------------------------------------------

@pytest.mark.parametrize('options, interval, timeout, stopbits', [
    ({}, 3.0, 0.4, 1),
    ({'interval': 0.5, 'timeout': 0.2, 'stopbits': 2}, 0.5, 0.2, 2),
])
def test_the_command_line_goes_over_the_maps_bus_settings(tmp_path, logs, options, interval,
                                                          timeout, stopbits):
    config = tmp_path / 'pzem.conf'
    config.write_text('[bus]\ninterval = 3\ntimeout = 0.4\nstopbits = 1\nscan = no\n')
    driver = Driver(str(tmp_path / 'ttyUSB9'), str(config), **options)
    assert (driver.interval, driver.bus.timeout, driver.bus.stopbits) == (
        interval, timeout, stopbits)
    assert driver.scan is False
    assert driver.open() == EXIT_PORT                   # no such port: the banner, then 1
    assert logs.messages[0].startswith(
        'dbus-pzem %s on ttyUSB9: 9600 baud 8N%d, poll every %gs, map %s, no search for meters '
        'the map does not name' % (driver.version, stopbits, interval, config))


# -- start-up --------------------------------------------------------------------------------

def test_start_up_publishes_what_answers_and_counts_from_the_process_start(
        port, system_bus, client, logs):
    sim, config = port(GRID, ac(1))
    with started(sim, config, since=1.5) as (driver, code):
        assert code is None
        assert client.owner(service('grid', 1))
        assert 'INFO 1 meter(s) published in 1.5s' in [
            '%s %s' % (r.levelname, r.getMessage()) for r in logs.records]
        assert driver.map_due == T0 + MAP_CHECK_SECONDS


@pytest.mark.parametrize('left, published', [(SCAN_TIMEOUT + PROBE_MARGIN + 0.01, True),
                                              (SCAN_TIMEOUT + PROBE_MARGIN - 0.01, False)])
def test_the_start_up_budget_is_what_serial_starter_leaves(port, system_bus, left, published):
    # A probe is made only while the budget has room for its timeout and a margin; the budget
    # ends PROBE_SECONDS after the process started, whatever the driver's own start-up took.
    meter = ac(1)
    sim, config = port(GRID, meter)
    with started(sim, config, since=PROBE_SECONDS - left) as (driver, code):
        assert code == (None if published else EXIT_NO_METER)
        assert (meter.stats['requests'] > 0) == published


def test_the_start_up_budget_is_read_when_the_driver_starts(port, system_bus, monkeypatch):
    # tools/bench/callgrind_driver.py lifts it so, for a driver slowed down by valgrind
    monkeypatch.setattr(driver_module, 'PROBE_SECONDS', 600.0)
    sim, config = port(GRID, ac(1))
    with started(sim, config, since=PROBE_SECONDS) as (driver, code):
        assert code is None


def test_no_meter_answering_exits_2_and_says_why(port, system_bus, logs):
    sim, config = port(GRID)
    driver = make_driver(sim, config, Clock())
    assert driver.run() == EXIT_NO_METER
    assert 'ttyPZEM0:1: the map names a meter here (role grid), but it does not answer' in \
        logs.text
    assert logs.messages[-1] == ('stopping: no PZEM meter answered on ttyPZEM0: exiting so '
                                 'serial-starter can try other drivers on this port')


@pytest.mark.parametrize('service_name, stays', [('pzem', True), ('gps', False)])
def test_a_port_pinned_to_the_driver_keeps_it_without_meters(
        port, system_bus, logs, tmp_path, monkeypatch, service_name, stays):
    props = tmp_path / 'udev.properties'
    props.write_text('ID_BUS=usb\nID_SERIAL_SHORT=A50285BI\nVE_SERVICE=%s\n' % service_name)
    monkeypatch.setenv('PZEM_UDEV_PROPERTIES', str(props))
    sim, config = port(GRID)
    with started(sim, config) as (driver, code):
        assert code == (None if stays else EXIT_NO_METER)
        assert ('the port is pinned to this driver, so it stays and keeps looking'
                in logs.text) == stays


def test_a_meter_that_answers_but_cannot_be_published_keeps_the_driver(
        port, system_bus, client, logs):
    client.bus.request_name(service('grid', 1), dbus.bus.NAME_FLAG_DO_NOT_QUEUE)
    sim, config = port(GRID, ac(1))
    with started(sim, config) as (driver, code):
        assert code is None
        assert 'ttyPZEM0:1: answers, but could not be published on D-Bus' in logs.text
        assert ('1 meter(s) answered (address 1) but none could be published: see the lines '
                'above; the driver stays and tries again') in logs.messages


def test_a_missing_port_exits_1(tmp_path, logs):
    config = tmp_path / 'pzem.conf'
    config.write_text(GRID)
    driver = Driver(str(tmp_path / 'ttyUSB9'), str(config), clock=Clock())
    assert driver.run() == EXIT_PORT
    assert 'ttyUSB9' in logs.text
    assert logs.messages[-1] == 'stopping: the serial port cannot be used'


def test_without_d_bus_it_exits_1(port, logs, tmp_path, monkeypatch):
    nobody = 'unix:path=%s' % (tmp_path / 'nobus')
    monkeypatch.setattr(dbus, 'SystemBus', lambda private=False, mainloop=None:
                        dbus.bus.BusConnection(nobody, mainloop=mainloop))
    sim, config = port(GRID, ac(1))
    driver = make_driver(sim, config, Clock())
    assert driver.run() == EXIT_PORT
    assert 'cannot reach the system D-Bus (' in logs.text
    assert logs.messages[-1] == 'stopping: no D-Bus'


# -- stop ----------------------------------------------------------------------------------

def test_a_signal_ends_the_loop_and_run_takes_everything_down(port, system_bus, client, logs):
    meter = ac(1)
    sim, config = port(GRID, meter)
    driver = make_driver(sim, config, time.monotonic, interval=0.2)
    seen = {}
    give_up = time.monotonic() + 10.0

    def polled_then_signal():
        first = seen.setdefault('first', meter.stats['requests'])     # once started up
        seen['polled'] = meter.stats['requests'] >= first + 3      # the poll thread's ticks
        if not seen['polled'] and time.monotonic() < give_up:
            return True
        seen['owner'] = client.owner(service('grid', 1))
        os.kill(os.getpid(), signal.SIGTERM)    # caught by the driver's GLib signal source
        os.kill(os.getpid(), signal.SIGTERM)    # a second one only asks again
        return False

    GLib.timeout_add(20, polled_then_signal)
    assert driver.run() == EXIT_STOPPED
    assert seen['polled'] and seen['owner']
    assert not client.owner(service('grid', 1))
    assert [m for m in logs.messages if m.startswith('stopping:')] == [
        'stopping: asked to (SIGTERM)']
    assert not [t for t in threading.enumerate() if t.name == 'poll']


def test_the_port_going_away_while_polling_stops_with_1(port, system_bus, logs):
    sim, config = port(GRID, ac(1))
    clock = Clock()
    with started(sim, config, clock) as (driver, code):
        assert code is None
        sim.stop()
        tick_at(driver, clock, 1.0)
        assert (driver.code, driver.why) == (EXIT_PORT, 'the serial port went away')
        assert logs.messages[-1] == 'stopping: the serial port went away'


def test_only_the_first_reason_to_stop_is_logged(port, system_bus, logs):
    sim, config = port(GRID, ac(1))
    with started(sim, config) as (driver, code):
        driver.stop(EXIT_STOPPED, 'asked to (SIGTERM)')
        driver.stop(EXIT_STOPPED, 'asked to (SIGINT)')
        assert [m for m in logs.messages if m.startswith('stopping:')] == [
            'stopping: asked to (SIGTERM)']
        assert driver.code == EXIT_STOPPED


# -- the map, edited while the driver runs -----------------------------------------------------

def test_the_map_is_looked_at_every_2_seconds_of_polling(port, system_bus, client, logs):
    sim, config = port(GRID, ac(1), ac(2))
    clock = Clock()
    with started(sim, config, clock) as (driver, code):
        write_map(config, GRID + '[2]\nrole = acload\n')
        tick_at(driver, clock, MAP_CHECK_SECONDS - 0.1)
        assert 'map: %s changed: applying it' % config not in logs.messages
        tick_at(driver, clock, MAP_CHECK_SECONDS)
        assert 'map: %s changed: applying it' % config in logs.messages
        tick_at(driver, clock, MAP_CHECK_SECONDS + 1.0)       # the new meter's probe
        pump_until(lambda: client.owner(service('acload', 2)), 5.0, 'the new meter')

        write_map(config, GRID)                                  # looked at 2 s after the last
        tick_at(driver, clock, 2 * MAP_CHECK_SECONDS - 0.1)
        assert client.owner(service('acload', 2))
        tick_at(driver, clock, 2 * MAP_CHECK_SECONDS)
        pump_until(lambda: not client.owner(service('acload', 2)), 5.0, 'the meter to go')


def test_a_bus_change_waits_for_a_restart_and_is_said_once(port, system_bus, logs):
    sim, config = port(GRID, ac(1))
    clock = Clock()
    said = ('map: the [bus] settings changed: they apply when the driver starts again '
            '(svc -t /service/dbus-pzem.ttyPZEM0)')
    with started(sim, config, clock) as (driver, code):
        write_map(config, GRID.replace('scan = no', 'scan = no\ninterval = 5'))
        tick_at(driver, clock, MAP_CHECK_SECONDS)
        assert logs.messages.count(said) == 1
        write_map(config, GRID.replace('scan = no', 'scan = no\ninterval = 5') + 'name = Grid\n')
        tick_at(driver, clock, 2 * MAP_CHECK_SECONDS)
        assert logs.messages.count('map: %s changed: applying it' % config) == 2
        assert logs.messages.count(said) == 1
        assert driver.poller.interval == 1.0


def test_an_edit_with_a_problem_leaves_the_map_as_it_was(port, system_bus, client, logs):
    sim, config = port(GRID, ac(1))
    clock = Clock()
    with started(sim, config, clock) as (driver, code):
        write_map(config, NO_SCAN + '[1]\nrole = gridd\n')
        tick_at(driver, clock, MAP_CHECK_SECONDS)
        assert 'map: %s changed: applying it' % config not in logs.messages
        assert "[1] key 'role': unknown role 'gridd'" in logs.text
        assert [p.role for p in driver.poller.published] == ['grid']
        assert client.owner(service('grid', 1))


class CountingChecks(Driver):
    checks = 0

    def check_map(self):
        self.checks += 1
        super(CountingChecks, self).check_map()


def test_an_edit_is_handed_to_the_main_loop_once(port, system_bus, logs):
    sim, config = port(GRID, ac(1))
    clock = Clock()
    with started(sim, config, clock, kind=CountingChecks) as (driver, code):
        write_map(config, GRID + 'name = Grid\n')
        clock.now = T0 + MAP_CHECK_SECONDS
        with driver.lock:
            driver.tick()
            clock.now += MAP_CHECK_SECONDS
            driver.tick()                               # not yet applied: not handed over again
        assert driver.pending == {'map'}
        pump(0.1)
        assert driver.pending == set()
        assert driver.checks == 1
        assert logs.messages.count('map: %s changed: applying it' % config) == 1


# -- ESS's grid metering ---------------------------------------------------------------------

def unsigned_warnings(logs, address):
    return [r for r in logs.records
            if r.levelname == 'WARNING' and r.getMessage().startswith(UNSIGNED % address)]


def test_each_unsigned_grid_meter_is_warned_about_when_ess_turns_to_it(port, system_bus, logs):
    text = NO_SCAN + '[1]\nrole = grid\n[2]\nrole = grid\nsign = vebus\n[3]\nrole = acload\n'
    sim, config = port(text, ac(1), ac(2), ac(3))
    with started(sim, config) as (driver, code):
        assert len(driver.poller.published) == 3
        for value in (None, 1):
            driver.on_ess(value)
        assert not unsigned_warnings(logs, 1)
        driver.on_ess(0)
        driver.on_ess(0)                                # no change: said once
        assert len(unsigned_warnings(logs, 1)) == 1
        driver.on_ess(1)
        driver.on_ess(0)
        assert len(unsigned_warnings(logs, 1)) == 2
        assert not unsigned_warnings(logs, 2) and not unsigned_warnings(logs, 3)
        message = unsigned_warnings(logs, 1)[0].getMessage()
        assert 'add "sign = vebus" to its section' in message
        assert 'set Grid metering to Inverter/Charger' in message


def test_a_meter_that_becomes_an_unsigned_grid_meter_is_warned_about_at_once(
        port, system_bus, client, logs):
    sim, config = port(NO_SCAN + '[1]\nrole = acload\n', ac(1))
    clock = Clock()
    with started(sim, config, clock) as (driver, code):
        driver.on_ess(0)
        assert not unsigned_warnings(logs, 1)
        write_map(config, GRID)
        tick_at(driver, clock, MAP_CHECK_SECONDS)
        pump_until(lambda: client.owner(service('grid', 1)), 5.0, 'the re-registration')
        assert len(unsigned_warnings(logs, 1)) == 1


def test_the_setting_reaches_the_driver_from_localsettings(port, system_bus, client, logs):
    with run_process([sys.executable, FAKE_SETTINGS], system_bus, wait_for_name=SETTINGS):
        [result] = client.call(SETTINGS, '/', 'AddSettings',
                               [{'path': ESS_SETTING, 'default': 0}], signature='aa{sv}',
                               interface='com.victronenergy.Settings')
        assert result['error'] == 0
        sim, config = port(GRID, ac(1))
        with started(sim, config) as (driver, code):
            driver.watch()
            pump_until(lambda: unsigned_warnings(logs, 1), 5.0, 'the warning')
            assert client.set_value(SETTINGS, ESS_SETTING, 1) == 0
            pump_until(lambda: driver.ess == 1, 5.0, 'ESS on the Multi')
            assert client.set_value(SETTINGS, ESS_SETTING, 0) == 0
            pump_until(lambda: len(unsigned_warnings(logs, 1)) == 2, 5.0, 'the second warning')
