"""The real driver process against the simulator, checked through an independent D-Bus client."""
import re
import time

import dbus
import pytest

from driver_rig import Rig
from pzemsim import AcMeter, DcMeter

AC_ROLES = ['grid', 'genset', 'acload', 'pvinverter', 'evcharger', 'heatpump']
DC_ROLES = ['dcsource', 'dcload', 'dcsystem']
MANDATORY = ('/Mgmt/ProcessName', '/Mgmt/ProcessVersion', '/Mgmt/Connection', '/DeviceInstance',
             '/ProductId', '/ProductName', '/FirmwareVersion', '/HardwareVersion', '/Connected',
             '/CustomName', '/Serial', '/Role', '/AllowedRoles')

MAP = """\
# my meters
[1]
role = grid            # MultiPlus AC-in
name = MultiPlus AC in
[2]
role = acload
[3]
role = dcsource
monitor_mode = wind
"""


def grid_meter(address=1):
    # 230 V x 1.5 A x PF 0.87 = 300.15 W: consistent, as a real meter reports
    return AcMeter(address, voltage=230.0, current=1.5, power=300.1, energy_wh=1234,
                   frequency=50.0, power_factor=0.87)


def load_meter(address=2):
    return AcMeter(address, voltage=229.5, current=4.0, power=734.4, energy_wh=98765,
                   frequency=50.1, power_factor=0.8)


def wind_meter(address=3):
    return DcMeter(address, voltage=13.2, current=5.0, power=66.0, energy_wh=500)


def invalid(value):
    return isinstance(value, dbus.Array) and len(value) == 0 and value.signature == 'i'


@pytest.fixture
def rig(tmp_path):
    with Rig(tmp_path, [grid_meter(), load_meter(), wind_meter()], MAP) as r:
        r.start_driver()
        for role, address in (('grid', 1), ('acload', 2), ('dcsource', 3)):
            name = r.wait_service(r.service(role, address))
            r.wait_value(name, '/Connected', lambda v: v == 1)
        r.wait_started()
        yield r


def test_every_path_type_and_value(rig):
    grid = rig.service('grid', 1)
    rig.wait_value(grid, '/Connected', lambda v: v == 1)
    items = rig.items(grid)
    for path in MANDATORY:
        assert path in items, path
    v = {path: item['Value'] for path, item in items.items()}
    assert v['/Mgmt/ProcessName'] == 'dbus-pzem'
    assert v['/Mgmt/Connection'] == 'Modbus RTU ttyPZEM0:1'
    assert v['/Pzem/Port'] == 'ttyPZEM0'      # its port's service: com.victronenergy.pzem.ttyPZEM0
    assert isinstance(v['/DeviceInstance'], dbus.Int32) and v['/DeviceInstance'] == 40
    assert isinstance(v['/Connected'], dbus.Int32) and v['/Connected'] == 1
    assert isinstance(v['/ProductId'], dbus.Int32) and v['/ProductId'] == 0xFFFF
    assert items['/ProductId']['Text'] == '0xFFFF'
    assert v['/ProductName'] == 'PZEM-016'
    assert invalid(v['/FirmwareVersion']) and invalid(v['/HardwareVersion'])
    assert v['/CustomName'] == 'MultiPlus AC in'
    assert v['/Role'] == 'grid'
    assert list(v['/AllowedRoles']) == AC_ROLES and v['/AllowedRoles'].signature == 's'
    expected = {'/Ac/L1/Voltage': 230.0, '/Ac/L1/Current': 1.5, '/Ac/L1/Power': 300.1,
                '/Ac/L1/Energy/Forward': 1.234, '/Ac/L1/PowerFactor': 0.87,
                '/Ac/L1/Frequency': 50.0, '/Ac/Power': 300.1, '/Ac/Energy/Forward': 1.234,
                '/Ac/Frequency': 50.0, '/Ac/PowerFactor': 0.87}
    for path, value in expected.items():
        assert isinstance(v[path], dbus.Double), path
        assert v[path] == pytest.approx(value, abs=1e-9), path
    assert invalid(v['/Ac/Energy/Reverse'])     # a PZEM cannot measure export
    assert isinstance(v['/NrOfPhases'], dbus.Int32) and v['/NrOfPhases'] == 1
    assert '/Position' not in items             # grid has no position
    assert items['/Ac/L1/Voltage']['Text'] == '230.0 V'

    acload = rig.items(rig.service('acload', 2))
    assert acload['/Position']['Value'] == 0
    assert acload['/Ac/Energy/Forward']['Value'] == pytest.approx(98.765)
    assert acload['/DeviceInstance']['Value'] == 40      # classes count instances separately

    dc = rig.items(rig.service('dcsource', 3))
    dv = {path: item['Value'] for path, item in dc.items()}
    assert dv['/ProductName'] == 'PZEM-017'
    assert list(dv['/AllowedRoles']) == DC_ROLES
    assert dv['/Dc/0/Voltage'] == pytest.approx(13.2)
    assert dv['/Dc/0/Current'] == pytest.approx(5.0)
    assert dv['/Dc/0/Power'] == pytest.approx(66.0)
    assert dv['/History/EnergyOut'] == pytest.approx(0.5)      # a source delivers energy
    assert dv['/Settings/MonitorMode'] == -8                    # wind charger
    assert dv['/Alarms/HighVoltage'] == 0 and dv['/Alarms/LowVoltage'] == 0
    assert not any(p.startswith('/Ac/') for p in dc)

    setting = '/Settings/Devices/pzem_ttyPZEM0_1/ClassAndVrmInstance'
    assert rig.value('com.victronenergy.settings', setting) == 'grid:40'


def test_values_follow_the_meter(rig):
    grid = rig.service('grid', 1)
    rig.meters[1].set(voltage=231.4, current=2.0, power=402.7, power_factor=0.87)
    rig.wait_value(grid, '/Ac/L1/Voltage', lambda v: v == pytest.approx(231.4))
    assert rig.value(grid, '/Ac/Power') == pytest.approx(402.7)
    rig.meters[3].set(voltage=14.0, high_alarm_v=13.5)
    rig.wait_value(rig.service('dcsource', 3), '/Alarms/HighVoltage', lambda v: v == 2)


def test_role_write_reregisters_and_rewrites_the_map(rig):
    grid = rig.service('grid', 1)
    assert rig.client.set_value(grid, '/Role', 'acload') == 0
    rig.wait_gone(grid)
    acload = rig.wait_service(rig.service('acload', 1))
    assert rig.value(acload, '/Role') == 'acload'
    assert rig.value(acload, '/Position') == 0
    # acload:40 is taken by meter 2, so localsettings moves this one up within its class
    assert rig.value(acload, '/DeviceInstance') == 41
    setting = '/Settings/Devices/pzem_ttyPZEM0_1/ClassAndVrmInstance'
    assert rig.value('com.victronenergy.settings', setting) == 'acload:41'
    with open(rig.map_path) as f:
        lines = f.read().splitlines()
    expected = MAP.splitlines()
    assert len(lines) == len(expected)
    for got, want in zip(lines, expected):
        if want.startswith('role = grid'):
            assert got.startswith('role = acload') and got.endswith('# MultiPlus AC-in')
        else:
            assert got == want


def test_error_counts_are_on_the_service_a_role_write_registers_anew(rig):
    # The publisher sends the error paths only when a count moves: a new service (all paths
    # new, at 0) must get them all the same.
    grid = rig.service('grid', 1)
    rig.meters[1].inject('bad_crc', count=1)
    rig.wait_value(grid, '/Pzem/Errors/BadFrame', lambda v: v == 1)
    assert rig.client.set_value(grid, '/Role', 'acload') == 0
    acload = rig.wait_service(rig.service('acload', 1))
    rig.wait_value(acload, '/Connected', lambda v: v == 1)
    assert rig.value(acload, '/Pzem/Errors/BadFrame') == 1


def test_name_and_position_writes_go_to_the_map(rig):
    acload = rig.service('acload', 2)
    assert rig.client.set_value(acload, '/CustomName', 'Kitchen') == 0
    assert rig.client.set_value(acload, '/Position', 1) == 0
    assert rig.value(acload, '/CustomName') == 'Kitchen'
    with open(rig.map_path) as f:
        text = f.read()
    assert '[2]\nrole = acload\nname = Kitchen\nposition = 1\n' in text
    assert text.startswith('# my meters\n[1]\nrole = grid            # MultiPlus AC-in\n')


@pytest.mark.parametrize('path,value', [
    ('/Role', 'dcsource'),          # a DC role for an AC meter
    ('/Role', 'bogus'),
    ('/Role', 7),
    ('/CustomName', 'x' * 33),      # longer than the GUI allows
    ('/CustomName', 12),
])
def test_invalid_writes_are_refused_and_change_nothing(rig, path, value):
    grid = rig.service('grid', 1)
    before = rig.value(grid, path)
    assert rig.client.set_value(grid, path, value) == 2
    assert rig.value(grid, path) == before
    assert rig.client.owner(grid)
    with open(rig.map_path) as f:
        assert f.read() == MAP


def test_position_and_readonly_writes_are_refused(rig):
    acload = rig.service('acload', 2)
    assert rig.client.set_value(acload, '/Position', 5) == 2
    assert rig.client.set_value(acload, '/Position', 'output') == 2
    assert rig.client.set_value(acload, '/Ac/Power', 1.0) == 1
    assert rig.client.set_value(acload, '/DeviceInstance', 3) == 1
    assert rig.value(acload, '/Position') == 0
    with open(rig.map_path) as f:
        assert f.read() == MAP


def test_silent_meter_goes_invalid_and_comes_back(rig):
    grid = rig.service('grid', 1)
    rig.wait_value(grid, '/Connected', lambda v: v == 1)
    rig.meters[1].inject('silent')
    rig.wait_value(grid, '/Connected', lambda v: v == 0, timeout=8.0)
    # invalid once it gave no good reading for 5 s (and 3 polls in a row failed), not later
    # than the poll after that: as the driver's own clock measured it
    seconds = float(re.search(r'ttyPZEM0:1: not answering \(\d+ polls missed in ([\d.]+) s',
                              rig.log()).group(1))
    assert 5.0 <= seconds < 6.0
    items = rig.items(grid)
    for path in ('/Ac/Power', '/Ac/L1/Voltage', '/Ac/L1/Current', '/Ac/L1/Power'):
        assert invalid(items[path]['Value']), path
    # the energy total is the driver's own: still true while the meter is silent
    assert items['/Ac/Energy/Forward']['Value'] == pytest.approx(1.234)
    rig.meters[1].clear_faults()
    rig.wait_value(grid, '/Connected', lambda v: v == 1, timeout=4.0)
    assert rig.value(grid, '/Ac/Power') == pytest.approx(300.1)
    log = rig.log()
    assert log.count('ttyPZEM0:1: not answering') == 1
    assert log.count('ttyPZEM0:1: answering again') == 1


# errors each fault leaves in the tallies; a no-reply may come on top of them on a loaded
# machine (a reply later than the 0.15 s timeout), so those are counted at least
@pytest.mark.parametrize('fault, errors', [
    ('no_reply', {'NoReply': 2}), ('junk_values', {'Implausible': 2}),
    ('bad_crc', {'BadFrame': 2}), ('wrong_address', {'NoReply': 2}),
    ('truncated', {'BadFrame': 2}), ('exception', {'Exception': 2}), ('late', {'NoReply': 1}),
    ('garbage_before', {}), ('stray', {}), ('noise', {}), ('stretched', {})])
def test_bad_replies_are_dropped_and_counted(rig, fault, errors):
    # a late reply fails its own exchange and is passed over in the next; noise, strays and
    # gaps around a good reply cost nothing
    grid = rig.service('grid', 1)
    rig.wait_value(grid, '/Connected', lambda v: v == 1)
    rig.client.sync(grid)
    rig.signals.clear()
    rig.meters[1].inject(fault, count=2)
    rig.pump(1.5)
    rig.client.sync(grid)
    for _, _, member, payload in rig.signals.signals(grid, 'ItemsChanged'):
        for path, item in payload.items():
            value = item['Value']
            if path == '/Ac/L1/Voltage':
                assert value == pytest.approx(230.0)
            if path in ('/Ac/Power', '/Ac/L1/Power'):
                assert value == pytest.approx(300.1)
            if path == '/Ac/Energy/Forward':
                assert value == pytest.approx(1.234)
    assert rig.value(grid, '/Connected') == 1   # two misses do not disconnect
    items = rig.items(grid)
    for kind in ('NoReply', 'BadFrame', 'Exception', 'Implausible'):
        counted = items['/Pzem/Errors/' + kind]['Value']
        if kind == 'NoReply':
            assert counted >= errors.get(kind, 0), kind
        else:
            assert counted == errors.get(kind, 0), kind


def test_at_most_one_items_changed_per_poll(rig):
    grid = rig.service('grid', 1)
    rig.meters[1].accumulate = True
    rig.meters[1].set(power=20000.0, current=100.0, voltage=230.0, power_factor=0.87)
    rig.client.sync(grid)
    requests_before = rig.meters[1].stats['requests']
    rig.signals.clear()
    rig.pump(2.0)
    rig.client.sync(grid)
    polls = rig.meters[1].stats['requests'] - requests_before
    changed = rig.signals.count(grid, 'ItemsChanged')
    assert polls >= 5
    assert 1 <= changed <= polls + 1
    assert rig.signals.count(grid, 'PropertiesChanged') == 0


def test_no_meter_answering_exits_within_5_seconds(tmp_path):
    # 99 is not among the addresses searched at start: nothing answers within the budget
    with Rig(tmp_path, [grid_meter(99)], '[4]\nrole = grid\n[5]\nrole = acload\n') as rig:
        rig.driver_args = []            # the device defaults: 0.5 s timeout
        rig.start_driver()
        code = rig.wait_exit(8.0)
        elapsed = time.monotonic() - rig.started
        assert code == 2
        assert elapsed < 5.0, elapsed
        log = rig.log()
        assert 'ttyPZEM0:4: the map names a meter here (role grid), but it does not answer' in log
        assert 'stopping: no PZEM meter answered on ttyPZEM0' in log


def test_missing_port_exits_with_a_clear_message(tmp_path):
    with Rig(tmp_path, [grid_meter()], MAP) as rig:
        rig.start_driver(tty=str(tmp_path / 'ttyUSB9'))
        assert rig.wait_exit(5.0) == 1
        assert 'ttyUSB9' in rig.log()


def test_port_vanishing_exits_nonzero(rig):
    rig.sim.stop()
    assert rig.wait_exit(5.0) == 1
    assert 'ttyPZEM0' in rig.log()


def test_without_a_map_a_found_meter_is_an_acload_written_into_the_map(tmp_path):
    with Rig(tmp_path, [grid_meter()], None) as rig:
        rig.start_driver()
        name = rig.wait_service(rig.service('acload', 1))
        rig.wait_value(name, '/Ac/Power', lambda v: v == pytest.approx(300.1))
        assert rig.value(name, '/IsGenericEnergyMeter') == 1
        with open(rig.map_path) as f:
            text = f.read()
        assert '[ttyPZEM0:1]\nrole = acload\n' in text
        assert '# ttyPZEM0:1: a PZEM-016 found on ' in text
        assert not rig.client.owner(rig.service('grid', 1))


def test_a_dc_meter_alone_defaults_to_dcsource(tmp_path):
    with Rig(tmp_path, [wind_meter(1)], None) as rig:
        rig.start_driver()
        name = rig.wait_service(rig.service('dcsource', 1))
        rig.wait_value(name, '/Dc/0/Power', lambda v: v == pytest.approx(66.0))


def test_old_role_names_are_accepted(tmp_path):
    text = '[1]\nrole = inverter0\n[2]\nrole = inverter\n'
    with Rig(tmp_path, [grid_meter(1), load_meter(2)], text) as rig:
        rig.start_driver()
        pv1 = rig.wait_service(rig.service('pvinverter', 1))
        pv2 = rig.wait_service(rig.service('pvinverter', 2))
        assert rig.value(pv1, '/Position') == 0
        assert rig.value(pv2, '/Position') == 1


def test_without_localsettings_a_fallback_instance_and_one_log_line(tmp_path):
    with Rig(tmp_path, [grid_meter(1), load_meter(2)], MAP.split('[3]')[0],
             settings=False) as rig:
        rig.start_driver()
        grid = rig.wait_service(rig.service('grid', 1))
        acload = rig.wait_service(rig.service('acload', 2))
        assert rig.value(grid, '/DeviceInstance') == 40
        assert rig.value(acload, '/DeviceInstance') == 41
        assert rig.log().count('did not answer: using fallback VRM instances') == 1


def test_slow_localsettings_falls_back_without_stalling(tmp_path):
    with Rig(tmp_path, [grid_meter(1)], '[1]\nrole = grid\n', settings_delay=10.0) as rig:
        rig.start_driver()
        grid = rig.wait_service(rig.service('grid', 1), timeout=10.0)
        assert rig.value(grid, '/DeviceInstance') == 40
        rig.wait_value(grid, '/Connected', lambda v: v == 1)


def test_a_late_meter_is_found_by_the_reprobe(tmp_path):
    with Rig(tmp_path, [grid_meter(1)], '[1]\nrole = grid\n[2]\nrole = acload\n') as rig:
        rig.start_driver()
        rig.wait_service(rig.service('grid', 1))
        rig.sim.add(load_meter(2))
        rig.wait_service(rig.service('acload', 2), timeout=6.0)


def test_a_role_of_the_wrong_family_is_not_published(tmp_path):
    text = '[1]\nrole = grid\n[3]\nrole = grid\n'
    with Rig(tmp_path, [grid_meter(1), wind_meter(3)], text) as rig:
        rig.start_driver()
        rig.wait_service(rig.service('grid', 1))
        rig.pump(1.0)
        assert not rig.client.owner(rig.service('grid', 3))
        assert ('ttyPZEM0:3: a DC meter (PZEM-017) answers, but the map gives it role grid: '
                'not published' in rig.log())


def test_map_mistakes_are_reported_and_good_meters_keep_running(tmp_path):
    text = '[1]\nrole = grid\ncolour = blue\n[2]\nrole = windmill\nname = Mill\n'
    with Rig(tmp_path, [grid_meter(1), load_meter(2)], text) as rig:
        rig.start_driver()
        rig.wait_service(rig.service('grid', 1))
        # The meter of the broken section is published as a found one would be: a role that
        # steers nothing, nothing else from the section; the log says which section and why.
        mill = rig.wait_service(rig.service('acload', 2))
        assert rig.value(mill, '/CustomName') == ''
        log = rig.log()
        assert "pzem.conf:3" in log and "colour" in log
        assert ("ERROR map: %s:5: [2] key 'role': unknown role 'windmill'; roles: grid, genset, "
                "acload, pvinverter, evcharger, heatpump (AC), dcsource, dcload, dcsystem (DC); "
                "section ignored: its meter gets the safe default role (acload for AC, dcsource "
                "for DC) until this is fixed\n" % rig.map_path) in log


def test_a_vrm_instance_changed_in_settings_re_registers(rig):
    grid = rig.service('grid', 1)
    setting = '/Settings/Devices/pzem_ttyPZEM0_1/ClassAndVrmInstance'
    assert rig.client.set_value('com.victronenergy.settings', setting, 'grid:47') == 0
    rig.wait_value(grid, '/DeviceInstance', lambda v: v == 47)
    rig.wait_value(grid, '/Connected', lambda v: v == 1)
    assert 'VRM instance changed to 47' in rig.log()


def test_a_pinned_port_keeps_the_driver_up_until_a_meter_answers(tmp_path):
    # udev's view of the adapter, as `pzemctl pin` leaves it (no USB adapter on this machine)
    props = tmp_path / 'udev.properties'
    props.write_text('ID_BUS=usb\nID_SERIAL_SHORT=A50285BI\nVE_SERVICE=pzem\n')
    with Rig(tmp_path, [], '[1]\nrole = grid\n') as rig:
        rig.start_driver(env={'PZEM_UDEV_PROPERTIES': str(props)})
        rig.pump(6.0)
        assert rig.driver.poll() is None, rig.log()
        assert 'pinned to this driver, so it stays' in rig.log()
        rig.sim.add(grid_meter(1))
        rig.wait_service(rig.service('grid', 1), timeout=5.0)


def test_a_failed_re_registration_is_retried_and_polling_goes_on(rig):
    grid = rig.service('grid', 1)
    squatter = rig.service('acload', 1)
    rig.client.bus.request_name(squatter, dbus.bus.NAME_FLAG_DO_NOT_QUEUE)
    assert rig.client.set_value(grid, '/Role', 'acload') == 0
    rig.wait_gone(grid)
    rig.pump(1.0)
    assert 'could not re-register' in rig.log()
    assert rig.driver.poll() is None
    rig.client.bus.release_name(squatter)
    rig.wait_service(squatter, timeout=15.0)
    rig.wait_value(squatter, '/Connected', lambda v: v == 1)
    assert rig.value(squatter, '/Role') == 'acload'


def test_a_meter_that_could_not_be_published_is_tried_again(tmp_path):
    with Rig(tmp_path, [grid_meter(1), load_meter(2)], '[1]\nrole = grid\n[2]\nrole = acload\n') as rig:
        squatter = rig.service('grid', 1)
        rig.client.bus.request_name(squatter, dbus.bus.NAME_FLAG_DO_NOT_QUEUE)
        rig.start_driver()
        rig.wait_service(rig.service('acload', 2))
        rig.wait_log('ttyPZEM0:1: answers, but could not be published on D-Bus')
        rig.client.bus.release_name(squatter)
        rig.wait_service(squatter, timeout=6.0)
        rig.wait_value(squatter, '/Connected', lambda v: v == 1)


def test_without_d_bus_the_log_says_so_and_not_that_meters_are_silent(tmp_path):
    with Rig(tmp_path, [grid_meter(1)], '[1]\nrole = grid\n') as rig:
        rig.start_driver(env={'DBUS_SYSTEM_BUS_ADDRESS': 'unix:path=%s' % (tmp_path / 'nobus')})
        assert rig.wait_exit(8.0) == 1
        log = rig.log()
        assert 'ERROR cannot reach the system D-Bus (' in log
        assert 'no meter can be published' in log
        assert log.rstrip().splitlines()[-1] == 'INFO stopping: no D-Bus'
        assert 'did not answer' not in log and 'does not answer' not in log


@pytest.mark.parametrize('args, sentence', [
    (['--timeout', '-1'], 'dbus-pzem: argument --timeout: -1 is not a number of seconds above 0'),
    (['--timeout', 'nan'], 'dbus-pzem: argument --timeout: nan is not a number of seconds above 0'),
    (['--interval', 'inf'], 'dbus-pzem: argument --interval: inf is not a number of seconds of 0 '
                            'or more'),
])
def test_a_bad_number_on_the_command_line_is_one_sentence_and_exit_3(args, sentence):
    import subprocess
    import sys
    from driver_rig import DRIVER
    done = subprocess.run([sys.executable, DRIVER] + args + ['ttyUSB0'], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 3
    assert done.stderr.splitlines()[-1] == sentence
    assert 'Traceback' not in done.stderr
