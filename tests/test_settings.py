"""pzem.settings against tests/fake_localsettings.py (reference 3.2/3.3) on a private dbus-daemon;
the last tests pin down the fake's own contract, since other tests rely on it."""
import os
import sys
import time

import dbus
import pytest

from dbus_helpers import Client, SignalRecorder, connect, pump_until, run_process
from pzem import settings

FAKE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fake_localsettings.py')
SETTINGS = 'com.victronenergy.settings'


@pytest.fixture
def bus(address):
    bus = connect(address)
    yield bus
    bus.close()


def localsettings(address, *options):
    return run_process([sys.executable, FAKE] + list(options), address, wait_for_name=SETTINGS)


@pytest.fixture
def with_localsettings(address):
    with localsettings(address):
        yield


@pytest.fixture
def client(address):
    client = Client(address)
    yield client
    client.close()


def setting(ident):
    return '/Settings/Devices/%s/ClassAndVrmInstance' % ident


# --- claim ---------------------------------------------------------------------------------


def test_claim_creates_the_setting_and_keeps_it(bus, client, with_localsettings):
    assert settings.claim(bus, 'pzem_ttyUSB0_1', 'grid') == ('grid', 40)
    assert client.get_value(SETTINGS, setting('pzem_ttyUSB0_1')) == 'grid:40'
    # an existing value is returned unchanged, whatever the new default says
    assert settings.claim(bus, 'pzem_ttyUSB0_1', 'acload', 45) == ('grid', 40)


def test_claim_bumps_the_instance_within_the_class(bus, with_localsettings):
    assert settings.claim(bus, 'pzem_ttyUSB0_1', 'grid') == ('grid', 40)
    assert settings.claim(bus, 'pzem_ttyUSB0_2', 'grid') == ('grid', 41)
    assert settings.claim(bus, 'pzem_ttyUSB1_1', 'grid') == ('grid', 42)
    assert settings.claim(bus, 'pzem_ttyUSB0_3', 'dcsource') == ('dcsource', 40)
    assert settings.claim(bus, 'pzem_ttyUSB0_2', 'grid') == ('grid', 41)


def test_claim_without_localsettings_is_none_at_once(bus):
    started = time.monotonic()
    assert settings.claim(bus, 'pzem_ttyUSB0_1', 'grid', timeout=3.0) is None
    assert time.monotonic() - started < 0.5


def test_claim_with_slow_localsettings_gives_up_at_the_timeout(address, bus):
    with localsettings(address, '--delay', '2'):
        started = time.monotonic()
        assert settings.claim(bus, 'pzem_ttyUSB0_1', 'grid', timeout=0.3) is None
        elapsed = time.monotonic() - started
        assert 0.25 < elapsed < 0.8


def test_claim_with_slow_localsettings_within_the_timeout(address, bus):
    with localsettings(address, '--delay', '0.2'):
        assert settings.claim(bus, 'pzem_ttyUSB0_1', 'acload', timeout=2.0) == ('acload', 40)


# --- change_role and watch -----------------------------------------------------------------


def test_change_role_reads_back_the_bumped_instance(bus, client, with_localsettings):
    settings.claim(bus, 'pzem_ttyUSB0_1', 'grid')
    settings.claim(bus, 'pzem_ttyUSB0_2', 'acload')
    assert settings.change_role(bus, 'pzem_ttyUSB0_2', 'grid', 40) == ('grid', 41)
    assert client.get_value(SETTINGS, setting('pzem_ttyUSB0_2')) == 'grid:41'
    assert settings.change_role(bus, 'pzem_ttyUSB0_1', 'acload', 40) == ('acload', 40)


def test_change_role_without_localsettings_is_none(bus):
    assert settings.change_role(bus, 'pzem_ttyUSB0_1', 'grid', 40, timeout=1.0) is None


def test_change_role_of_an_unknown_setting_is_none(bus, with_localsettings):
    assert settings.change_role(bus, 'pzem_never_claimed', 'grid', 40) is None


def test_watch_reports_changes_until_removed(bus, client, with_localsettings):
    seen = []
    settings.claim(bus, 'pzem_ttyUSB0_1', 'grid')
    settings.claim(bus, 'pzem_ttyUSB0_2', 'grid')
    handle = settings.watch(bus, 'pzem_ttyUSB0_1', lambda role, instance: seen.append((role, instance)))
    assert client.set_value(SETTINGS, setting('pzem_ttyUSB0_2'), 'grid:47') == 0   # other ident
    assert client.set_value(SETTINGS, setting('pzem_ttyUSB0_1'), 'genset:45') == 0
    pump_until(lambda: seen, what='watch callback')
    assert seen == [('genset', 45)]
    handle.remove()
    client.set_value(SETTINGS, setting('pzem_ttyUSB0_1'), 'grid:46')
    client.sync(SETTINGS)
    assert seen == [('genset', 45)]


def test_fallback_instance_is_stable_and_distinct_per_address():
    assert settings.fallback_instance('pzem_ttyUSB0_1') == 40
    assert settings.fallback_instance('pzem_ttyUSB0_1') == settings.fallback_instance('pzem_ttyUSB0_1')
    assert settings.fallback_instance('pzem_ttyUSB0_3') == 42
    assert settings.fallback_instance('pzem_ttyUSB0_2', default_instance=20) == 21
    assert settings.fallback_instance('odd') == 40


@pytest.mark.parametrize('text, parsed', [
    ('grid:40', ('grid', 40)), ('dcsource:0', ('dcsource', 0)),
    ('grid', None), ('grid:', None), (':40', None), ('grid:x', None), (None, None)])
def test_parse(text, parsed):
    assert settings.parse(text) == parsed


# --- the fake's own contract (reference 3.2/3.3) -------------------------------------------


def add(client, *entries, group='/'):
    return client.call(SETTINGS, group, 'AddSettings', list(entries), signature='aa{sv}',
                       interface='com.victronenergy.Settings')


def test_fake_add_settings_codes(client, with_localsettings):
    results = add(client,
                  {'path': '/Settings/Pzem/Poll', 'default': 1000, 'min': 100, 'max': 5000},
                  {'path': '/Settings/Pzem/Enabled', 'default': dbus.Boolean(True)},
                  {'path': '/Pzem/Outside', 'default': 1},
                  {'path': '/Settings/_Hidden/X', 'default': 1},
                  {'path': '/Settings/Pzem/Range', 'default': 7, 'min': 0, 'max': 5},
                  {'path': '/Settings/Pzem', 'default': 1})
    assert [r['error'] for r in results] == [0, -3, -9, -2, -7, -8]
    assert results[0]['value'] == 1000 and 'value' not in results[1]
    assert add(client, {'path': '/Settings/Pzem/Poll', 'default': 'text'})[0]['error'] == -5
    [relative] = add(client, {'path': 'Name', 'default': 'x'}, group='/Settings/Pzem')
    assert relative['error'] == 0 and client.get_value(SETTINGS, '/Settings/Pzem/Name') == 'x'


def test_fake_set_value_and_signals(client, with_localsettings):
    recorder = SignalRecorder(client)
    add(client, {'path': setting('a'), 'default': 'grid:40'},
        {'path': setting('b'), 'default': 'grid:40'},
        {'path': '/Settings/Pzem/Poll', 'default': 1000, 'min': 100, 'max': 5000})
    assert client.get_value(SETTINGS, setting('b')) == 'grid:41'
    assert client.set_value(SETTINGS, setting('b'), 'grid:40') == 0        # taken: bumped
    assert client.get_value(SETTINGS, setting('b')) == 'grid:41'
    assert client.set_value(SETTINGS, setting('b'), 'acload:40') == 0
    assert client.get_value(SETTINGS, setting('b')) == 'acload:40'
    assert client.set_value(SETTINGS, setting('b'), 'acload') == -1
    assert client.set_value(SETTINGS, '/Settings/Pzem/Poll', 50) == -1
    assert client.set_value(SETTINGS, '/Settings/Pzem/Poll', 'x') == -1
    assert client.set_value(SETTINGS, '/Settings/Pzem/Poll', 500) == 0
    items = client.get_items(SETTINGS)
    assert items['/Settings/Pzem/Poll']['Value'] == 500 and items['/Settings/Pzem/Poll']['Max'] == 5000
    client.sync(SETTINGS)
    changes = [(r[1], r[3]['Value']) for r in recorder.signals(SETTINGS, 'PropertiesChanged')]
    assert changes[-2:] == [(setting('b'), 'acload:40'), ('/Settings/Pzem/Poll', 500)]
    recorder.stop()
