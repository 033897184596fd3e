"""pzem.energy.EnergyStore against tests/fake_localsettings.py on a private dbus-daemon, with a
fake clock for the save interval."""
import logging
import os
import sys

import dbus
import pytest

from dbus_helpers import SignalRecorder, connect, pump_until, run_process
from pzem import energy, models, settings
from pzem.energy import EnergyStore, PhaseEnergy, Saved

FAKE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fake_localsettings.py')
SETTINGS = 'com.victronenergy.settings'
IDENT = 'pzem_ttyUSB0_1'
PATH = '/Settings/Devices/%s/Energy' % IDENT
WALL0 = 1764590000.0


class Clock(object):
    def __init__(self, now=0.0):
        self.now = now

    def __call__(self):
        return self.now


def localsettings(address):
    return run_process([sys.executable, FAKE], address, wait_for_name=SETTINGS)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def wall():
    return Clock(WALL0)


def meter(clock, wall, names=('L1',)):
    return {name: PhaseEnergy(models.AC.max_kw, clock=clock, wall=wall) for name in names}


def advance(seconds, *clocks):
    for c in clocks:
        c.now += seconds


def energy_writes(recorder, client):
    """The values localsettings took for the Energy setting, from its PropertiesChanged signals."""
    client.sync(SETTINGS)
    return [str(r[3]['Value']) for r in recorder.signals(SETTINGS, 'PropertiesChanged', PATH)]


def test_round_trip_through_localsettings(address, bus, client, clock, wall):
    with localsettings(address):
        store = EnergyStore(bus, IDENT, clock)
        assert store.load() == {}
        assert client.get_value(SETTINGS, PATH) == ''       # created as a string setting
        phases = meter(clock, wall, ('L1', 'L2', 'L3'))
        phases['L1'].book(12.345, 1)
        phases['L2'].book(0.5, 1)
        phases['L3'].book(7.0, 1)
        advance(60, clock, wall)
        phases['L2'].book(0.6, -1)
        assert store.save_now(phases)
        assert client.get_value(SETTINGS, PATH) == (
            '1 t=1764590000 L1=12.345/0.000@12.345 L2=0.500/0.100@0.600 L3=7.000/0.000@7.000')

        # the next run (a new connection) gets the totals back
        again = connect(address)
        try:
            saved = EnergyStore(again, IDENT, clock).load()
        finally:
            again.close()
        assert saved == {'L1': Saved(12.345, 0.0, 12.345, WALL0),
                         'L2': Saved(0.5, 0.1, 0.6, WALL0),
                         'L3': Saved(7.0, 0.0, 7.0, WALL0)}
        restored = meter(clock, wall, ('L1', 'L2', 'L3'))
        for name, p in restored.items():
            p.restore(saved[name])
        restored['L2'].book(0.7, -1)                # 100 Wh counted while stopped: import
        assert (restored['L2'].forward, restored['L2'].reverse) == (0.6, 0.1)


def test_at_most_one_write_per_save_interval_and_only_after_a_change(address, bus, client,
                                                                      clock, wall):
    with localsettings(address):
        store = EnergyStore(bus, IDENT, clock)
        store.load()
        recorder = SignalRecorder(client)
        phases = meter(clock, wall)
        phases['L1'].book(100.0, 1)
        writes = []
        for second in range(0, 610, 10):            # a poll every 10 s for 10 minutes
            clock.now = wall.now = second
            phases['L1'].book(100.0 + second / 1000.0, 1)
            writes.append(store.maybe_save(phases))
        # load at 0, then writes at 300 and 600 (s), nothing in between
        assert [i * 10 for i, w in enumerate(writes) if w] == [300, 600]
        pump_until(lambda: len(energy_writes(recorder, client)) == 2, what='two writes')
        assert energy_writes(recorder, client)[-1] == '1 t=600 L1=100.600/0.000@100.600'

        # nothing booked since: no write, however long it is
        clock.now = 5000
        assert not store.maybe_save(phases)
        client.sync(SETTINGS)
        assert len(energy_writes(recorder, client)) == 2
        recorder.stop()


def test_save_now_writes_at_once(address, bus, client, clock, wall):
    with localsettings(address):
        store = EnergyStore(bus, IDENT, clock)
        store.load()
        phases = meter(clock, wall)
        phases['L1'].book(1.0, 1)
        advance(1, clock, wall)
        assert not store.maybe_save(phases)         # too soon for the periodic save
        assert store.save_now(phases)               # the clean stop does not wait
        assert client.get_value(SETTINGS, PATH) == '1 t=1764590000 L1=1.000/0.000@1.000'
        assert not store.save_now(phases)           # nothing new: no write


def test_without_localsettings_nothing_is_loaded_or_saved_and_one_line_says_so(bus, clock, wall,
                                                                               caplog):
    caplog.set_level(logging.INFO, logger='pzem')
    store = EnergyStore(bus, IDENT, clock)
    assert store.load() is None
    phases = meter(clock, wall)
    phases['L1'].book(1.0, 1)
    clock.now = 1000
    assert not store.maybe_save(phases)
    assert not store.save_now(phases)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ['%s: localsettings did not answer: energy totals are not saved: after a '
                     'restart they start again from the meters\' own counters' % IDENT]


def test_garbage_in_the_setting_restores_nothing_and_is_replaced(address, bus, client, clock,
                                                                 wall, caplog):
    with localsettings(address):
        client.call(SETTINGS, '/', 'AddSettings', [{'path': PATH, 'default': 'L1 = 12 kWh'}],
                    signature='aa{sv}', interface='com.victronenergy.Settings')
        store = EnergyStore(bus, IDENT, clock)
        assert store.load() == {}
        assert any('stored energy totals ignored' in r.getMessage() for r in caplog.records)
        phases = meter(clock, wall)
        phases['L1'].book(2.0, 1)
        assert store.save_now(phases)
        assert energy.decode(client.get_value(SETTINGS, PATH)) == {
            'L1': Saved(2.0, 0.0, 2.0, WALL0)}


def test_a_failed_save_is_logged_and_tried_again(address, bus, clock, wall, caplog):
    with localsettings(address):
        store = EnergyStore(bus, IDENT, clock)
        store.load()
    # localsettings went away after the start
    phases = meter(clock, wall)
    phases['L1'].book(3.0, 1)
    clock.now = 300
    assert store.maybe_save(phases)                 # sent; the error comes back later
    assert not phases['L1'].changed
    pump_until(lambda: phases['L1'].changed, what='the failure to come back')
    assert any('energy totals not saved' in r.getMessage() for r in caplog.records)
    assert not store.save_now(phases)
    assert phases['L1'].changed


def test_no_connection_writes_nothing_and_keeps_the_change(address, bus, clock, wall):
    with localsettings(address):
        store = EnergyStore(bus, IDENT, clock)
        store.load()
        store.connection = None                     # the service is being re-registered
        phases = meter(clock, wall)
        phases['L1'].book(3.0, 1)
        clock.now = 300
        assert not store.maybe_save(phases) and not store.save_now(phases)
        assert phases['L1'].changed
        store.connection = bus
        assert store.maybe_save(phases)


def test_load_energy_of_a_setting_with_another_type_is_none(address, bus, client):
    with localsettings(address):
        client.call(SETTINGS, '/', 'AddSettings', [{'path': PATH, 'default': dbus.Int32(5)}],
                    signature='aa{sv}', interface='com.victronenergy.Settings')
        assert settings.load_energy(bus, IDENT, timeout=3.0) is None


def test_a_publisher_saves_what_is_due_also_when_the_registers_stay_the_same(
        address, bus, client, clock, wall, monkeypatch, tmp_path):
    # A change booked too soon after the last save must not wait for the next change: a
    # meter whose registers then stay the same (no load, steady voltage) still gets it saved.
    from pzem.meter import Meter
    from pzem.meter_map import MeterSpec
    from pzem.publisher import Context, Instances, Publisher
    monkeypatch.setenv('DBUS_SYSTEM_BUS_ADDRESS', address)

    def regs(wh):     # 230.0 V, 1 A, 207 W, PF 0.90, 50 Hz, no alarm
        return [2300, 1000, 0, 2070, 0, wh, 0, 500, 90, 0]

    with localsettings(address):
        context = Context('ttyUSB0', str(tmp_path / 'pzem.conf'), 'test',
                          Instances(schedule=lambda func: None),
                          stores=lambda ident, log: EnergyStore(bus, ident, clock, logger=log),
                          energy_for=lambda model: PhaseEnergy(model.max_kw, clock, wall),
                          clock=clock)
        meter = Meter('ttyUSB0', 1, models.AC, clock=clock)
        meter.take(regs(100))
        publisher = Publisher(MeterSpec.single(1, role='grid'), [('L1', meter)], context,
                              logging.getLogger('test'))
        try:
            advance(10, clock, wall)
            meter.take(regs(150))
            publisher.update()              # 10 s after the load: not due yet
            client.sync(SETTINGS)
            assert client.get_value(SETTINGS, PATH) == ''
            advance(energy.SAVE_SECONDS, clock, wall)
            meter.take(regs(150))           # the same registers
            publisher.update()
            pump_until(lambda: client.get_value(SETTINGS, PATH) != '', what='the save')
            assert client.get_value(SETTINGS, PATH).startswith('1 t=%d L1=0.150/0.000@0.150'
                                                              % (WALL0 + 10))
        finally:
            publisher.close(final=False)
