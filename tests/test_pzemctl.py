"""pzemctl, the commissioning tool, run as a real subprocess against the simulator on a pty."""
import fcntl
import os
import pty
import re
import signal
import stat
import struct
import subprocess
import sys
import termios
import time

import pytest

from ctl_helpers import FAST, PZEMCTL, ROOT, Ctl, one_sentence
from dbus_helpers import connect
from pzem.busitem import BusItemService
from pzem.roles import DEFAULT_ROLE
from pzemsim import AcMeter, DcMeter, with_crc


@pytest.fixture
def ctl(tmp_path):
    ctl = Ctl(tmp_path)
    yield ctl
    ctl.stop()


def grid(address=1, **values):
    settings = dict(voltage=231.4, current=1.9, power=420.0, energy_wh=12345,
                    frequency=49.9, power_factor=0.95)
    settings.update(values)
    return AcMeter(address, **settings)


def wind(address=3, **values):
    settings = dict(voltage=13.44, current=0.1, power=1.3, energy_wh=2)
    settings.update(values)
    return DcMeter(address, **settings)


def on_write(meter, reply_for, act=True):
    """Replace the meter's reply to each write (FC 0x06) by reply_for(request, reply); with
    act=False the write is not carried out either. Returns the list of writes seen."""
    handle, writes = meter.handle, []

    def handled(request):
        if request[1] != 0x06:
            return handle(request)
        writes.append(request)
        return reply_for(request, handle(request) if act else None)
    meter.handle = handled
    return writes


# -- scan ------------------------------------------------------------------------------------------

def test_scan_lists_every_meter_with_model_and_readings(ctl):
    ctl.start(grid(1), wind(3), grid(12, voltage=229.0, current=0.0, power=0.0, energy_wh=0),
              grid(13))
    done = ctl.run('scan', '--addresses', '1-12', *FAST)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        '  1  PZEM-016  231.4 V  1.900 A  420.0 W  12.345 kWh  49.9 Hz  PF 0.95',
        '  3  PZEM-017  13.44 V  0.10 A  1.3 W  0.002 kWh',
        ' 12  PZEM-016  229.0 V  0.000 A  0.0 W  0.000 kWh  49.9 Hz  PF 0.95',
        done.stdout.splitlines()[-1]]
    assert done.stdout.splitlines()[-1].startswith(
        '3 meter(s) on ttyUSB0; addresses 1..12 scanned in ')
    assert 'scanning ttyUSB0 12/12, 3 found' in done.stderr     # progress
    assert ctl.sim.meter(13).stats['requests'] == 0             # outside the range asked


def test_scan_shows_an_alarm_that_is_on(ctl):
    ctl.start(wind(3, voltage=320.0, current=0.0, power=0.0))
    done = ctl.run('scan', '--addresses', '3', *FAST)
    assert '  3  PZEM-017  320.00 V  0.00 A  0.0 W  0.002 kWh  HIGH-VOLTAGE ALARM' in done.stdout


def test_scan_of_an_empty_bus_fails(ctl):
    ctl.start()
    done = ctl.run('scan', '--addresses', '240-247', *FAST)
    assert done.returncode == 1
    assert one_sentence(done.stderr).startswith(
        'pzemctl: no meter answers on ttyUSB0 at any address 240..247')


def test_default_scan_timeout_fits_real_wire_timing(ctl):
    """The simulator delivers replies as late as a 9600 baud wire and a meter's turnaround
    would; the default per-address timeout still finds every meter, up to the last address."""
    ctl.start(grid(245), wind(247), wire_time=True)
    done = ctl.run('scan', '--addresses', '244-247')
    assert done.returncode == 0, done.stderr
    assert [l[:13] for l in done.stdout.splitlines()[:2]] == ['245  PZEM-016', '247  PZEM-017']


@pytest.mark.parametrize('option', ['0-5', '5-3', '1-248', 'x', '7-'])
def test_an_address_range_out_of_bounds_is_a_usage_error(ctl, option):
    done = ctl.run('scan', '--addresses', option)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].startswith(
        'pzemctl PORT scan: error: argument --addresses: ')
    assert 'Traceback' not in done.stderr


# -- info ------------------------------------------------------------------------------------------

def test_info_ac_meter_at_an_address(ctl):
    ctl.start(grid(1, power_alarm_w=2300), wind(3))
    done = ctl.run('info', '1')
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        'PZEM-016 (AC) at address 1 on ttyUSB0',
        '  power alarm above        2300 W',
        '  voltage                  231.4 V',
        '  current                  1.900 A',
        '  power                    420.0 W',
        '  energy                   12.345 kWh',
        '  frequency                49.9 Hz',
        '  power factor             0.95',
        '  power alarm              off']


def test_info_dc_meter_shows_thresholds_and_shunt_range(ctl):
    ctl.start(grid(1), wind(3, high_alarm_v=58.5, low_alarm_v=10.5, current_range=200))
    done = ctl.run('info', '3')
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:4] == [
        'PZEM-017 (DC) at address 3 on ttyUSB0',
        '  high-voltage alarm above 58.50 V',
        '  low-voltage alarm below  10.50 V',
        '  shunt range              200 A']
    assert '  voltage                  13.44 V' in done.stdout.splitlines()


def test_info_without_address_uses_0xf8_when_one_meter_is_connected(ctl):
    ctl.start(wind(42))
    done = ctl.run('info', '--addresses', '40-45', *FAST)
    assert done.returncode == 0, done.stderr
    # The meter answers 0xF8 with its own address byte; the seam accepts that for 0xF8.
    assert done.stdout.splitlines()[0] == (
        'PZEM-017 (DC) at address 42 on ttyUSB0 (asked at the general address 0xF8)')
    assert '  shunt range              100 A' in done.stdout


def test_info_without_address_refuses_with_two_meters(ctl):
    ctl.start(grid(1), wind(3))
    done = ctl.run('info', '--addresses', '1-5', *FAST)
    assert done.returncode == 1
    assert done.stdout == ''
    assert 'more than one meter answers on ttyUSB0 (addresses 1, 3' in one_sentence(done.stderr)


def test_a_slow_meter_is_found_at_its_own_address_not_taken_for_a_clash(ctl):
    # Meters that answer after 200 ms, asked with a 150 ms scan timeout: each reply comes while
    # the next address is asked. It is passed over there and its sender asked again, slowly.
    ctl.start(grid(1), wind(3), wire_time=True, turnaround=0.2)
    done = ctl.run('scan', '--addresses', '1-6', '--scan-timeout', '0.15')
    assert done.returncode == 0, done.stderr
    rows = [line.split()[:2] for line in done.stdout.splitlines()[:-1]]
    assert rows == [['1', 'PZEM-016'], ['3', 'PZEM-017']]
    assert done.stdout.splitlines()[-1].startswith('2 meter(s) on ttyUSB0')
    assert 'garbled' not in done.stdout + done.stderr
    assert 'slow to answer: address 1, 3 (after the scan\'s 0.15 s, so asked again with 0.5 s)' \
        in done.stderr
    done = ctl.run('info', '--addresses', '1-6', '--scan-timeout', '0.15')
    assert done.returncode == 1
    assert 'more than one meter answers on ttyUSB0 (addresses 1, 3' in one_sentence(done.stderr)


# -- set-address -----------------------------------------------------------------------------------

@pytest.mark.pymodbus
def test_set_address_refuses_an_address_in_use(ctl):
    ctl.start(grid(1), grid(2), wind(3))
    done = ctl.run('set-address', '3', '--from', '1', '--yes', *FAST)
    assert done.returncode == 2
    assert one_sentence(done.stderr) == (
        'pzemctl: address 3 is already in use on ttyUSB0 (a meter answers there): pick a free '
        'one ("pzemctl %s scan" lists the taken ones)' % ctl.link)
    assert sorted(m.address for m in ctl.sim.meters) == [1, 2, 3]


@pytest.mark.pymodbus
def test_set_address_on_a_busy_bus_moves_only_that_meter(ctl):
    first = grid(1)
    ctl.start(first, grid(2), wind(3))
    done = ctl.run('set-address', '5', '--from', '1', '--yes', *FAST)
    assert done.returncode == 0, done.stderr
    assert first.address == 5
    assert sorted(m.address for m in ctl.sim.meters) == [2, 3, 5]
    # The map given (here: not there yet) gets a section for the meter, as the driver adds one.
    assert done.stdout.splitlines() == [
        'the PZEM-016 on ttyUSB0 now answers at address 5 (was 1)',
        'the map %s had no section for it: added [ttyUSB0:5] with role acload, which steers '
        'nothing; give it its role and name there or in the Venus GUI' % ctl.map_path]
    with open(ctl.map_path) as f:
        text = f.read()
    assert re.match(r'# ttyUSB0:5: a PZEM-016 moved here from address 1 on \d{4}-\d\d-\d\d '
                    r'\d\d:\d\d; no section named it\.\n# Its role steers nothing; set role, name '
                    r'and the rest here or in the Venus GUI\.\n\[ttyUSB0:5\]\nrole = acload\n$',
                    text), text
    # It answers at the new address only.
    assert ctl.run('info', '5').stdout.startswith('PZEM-016 (AC) at address 5 on ttyUSB0')
    gone = ctl.run('info', '1', *FAST)
    assert gone.returncode == 1
    assert 'No reply from meter 1 on ttyUSB0' in one_sentence(gone.stderr)


@pytest.mark.pymodbus
def test_set_address_moves_the_meters_map_section_with_it(ctl):
    ctl.write_map('# my wind charger\n[ttyUSB0:1]   # found by the driver\nrole = dcsource\n'
                  'monitor_mode = wind\nname = Wind charger\n[2]\nrole = acload\n')
    ctl.start(wind(1), grid(2))
    done = ctl.run('set-address', '7', '--from', '1', '--yes', *FAST)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        'the PZEM-017 on ttyUSB0 now answers at address 7 (was 1)',
        'the map %s follows it: [ttyUSB0:1] is now [ttyUSB0:7]' % ctl.map_path]
    with open(ctl.map_path) as f:     # only the header line changed
        assert f.read() == ('# my wind charger\n[ttyUSB0:7]   # found by the driver\n'
                            'role = dcsource\nmonitor_mode = wind\nname = Wind charger\n'
                            '[2]\nrole = acload\n')


@pytest.mark.pymodbus
def test_set_address_refuses_an_address_another_section_names_before_writing(ctl):
    text = '[ttyUSB0:1]\nrole = dcsource\n[4]   # the grid meter, off now\nrole = grid\n'
    ctl.write_map(text)
    meter = wind(1)
    ctl.start(meter)
    writes = on_write(meter, lambda request, reply: reply)
    done = ctl.run('set-address', '4', '--from', '1', '--yes', *FAST)
    assert done.returncode == 2
    assert one_sentence(done.stderr) == (
        'pzemctl: the map %s has a section [4] (line 3) for a meter at address 4 on ttyUSB0: '
        'another meter\'s, which may be off now; pick another address, or remove that section '
        'first (or, if it was written for this meter, add --keep-map)' % ctl.map_path)
    assert (meter.address, writes) == (1, [])
    with open(ctl.map_path) as f:
        assert f.read() == text
    # A map written ahead for the new address: --keep-map leaves it to the user.
    kept = ctl.run('set-address', '4', '--from', '1', '--yes', '--keep-map', *FAST)
    assert kept.returncode == 0, kept.stderr
    assert meter.address == 4
    assert kept.stderr.splitlines()[-1] == (
        'the map %s was left as it is: [4] (line 3) describes the meter at address 4 now; '
        '[ttyUSB0:1] (line 1) still names address 1' % ctl.map_path)
    with open(ctl.map_path) as f:
        assert f.read() == text


@pytest.mark.pymodbus
def test_set_address_without_from_finds_the_only_meter(ctl):
    meter = wind(1)
    ctl.start(meter)
    done = ctl.run('set-address', '9', '--addresses', '1-5', '--yes', '--keep-map', *FAST)
    assert done.returncode == 0, done.stderr
    assert meter.address == 9
    assert done.stdout == 'the PZEM-017 on ttyUSB0 now answers at address 9 (was 1)\n'
    assert done.stderr.splitlines()[-1] == (
        'no map at %s: the driver adds a section [ttyUSB0:9] for the meter when it finds it'
        % ctl.map_path)
    ctl.write_map('[bus]\nscan = yes\n')
    back = ctl.run('set-address', '1', '--from', '9', '--yes', '--keep-map', *FAST)
    assert back.stderr.splitlines()[-1] == (
        'the map %s was left as it is: no section names address 1 on ttyUSB0; the driver adds '
        '[ttyUSB0:1] when it finds the meter' % ctl.map_path)


def test_set_address_without_from_refuses_with_two_meters(ctl):
    ctl.start(grid(1), grid(2))
    done = ctl.run('set-address', '9', '--addresses', '1-5', '--yes', *FAST)
    assert done.returncode == 1
    assert 'more than one meter answers' in one_sentence(done.stderr)
    assert sorted(m.address for m in ctl.sim.meters) == [1, 2]


@pytest.mark.pymodbus
def test_set_address_survives_a_lost_echo(ctl):
    meter = grid(1)
    ctl.start(meter)
    on_write(meter, lambda request, reply: None)    # the echo gets lost on the wire
    done = ctl.run('set-address', '4', '--from', '1', '--yes', *FAST)
    assert done.returncode == 0, done.stderr
    assert meter.address == 4


def test_set_address_refuses_without_yes_and_without_a_terminal_before_any_work(ctl):
    meter = grid(1)
    ctl.start(meter)
    done = ctl.run('set-address', '4', '--from', '1', *FAST)
    assert done.returncode == 2
    assert one_sentence(done.stderr) == (
        'pzemctl: refusing to give the meter at address 1 on ttyUSB0 the address 4 without '
        'confirmation: stdin is not a terminal, so add --yes')
    # Without --from not even the scan starts (it would take 40 s to end in the same refusal).
    scan = ctl.run('set-address', '4', *FAST)
    assert (scan.returncode, scan.stderr) == (2, (
        'pzemctl: refusing to give the only meter on ttyUSB0 the address 4 without '
        'confirmation: stdin is not a terminal, so add --yes\n'))
    assert (meter.address, meter.stats['requests']) == (1, 0)


@pytest.mark.pymodbus
def test_set_address_asks_on_a_terminal(ctl):
    ctl.write_map('[ttyUSB0:1]\nrole = grid\n')
    meter = grid(1)
    ctl.start(meter)
    no = ctl.run_on_terminal('n', 'set-address', '4', '--from', '1', *FAST)
    assert no.returncode == 1
    assert ('Give the PZEM-016 at address 1 on ttyUSB0 the address 4 (and in the map, [ttyUSB0:1] '
            'becomes [ttyUSB0:4])? [y/N]') in no.stderr
    assert no.stderr.splitlines()[-1].endswith(
        'pzemctl: cancelled: nothing was written to the meter')
    assert meter.address == 1
    yes = ctl.run_on_terminal('y', 'set-address', '4', '--from', '1', *FAST)
    assert yes.returncode == 0, yes.stderr
    assert meter.address == 4


@pytest.mark.parametrize('args', [('set-address', '0', '--from', '1'),
                                  ('set-address', '248', '--from', '1'),
                                  ('set-address', '5', '--from', '300'),
                                  ('info', '0xF8'), ('reset-energy', '-1', '--yes')])
def test_addresses_out_of_range_are_usage_errors(ctl, args):
    meter = grid(1)
    ctl.start(meter)
    done = ctl.run(*args)
    assert done.returncode == 2
    assert 'meters take 1..247' in done.stderr.splitlines()[-1]
    assert meter.address == 1 and meter.stats['requests'] == 0


@pytest.mark.parametrize('text, message', [
    ('0x02', "'0x02' is hexadecimal: addresses are written in decimal (0x02 is 2)"),
    ('02', None),
    ('two', "'two' is not an address: meters take 1..247")])
def test_addresses_are_written_in_decimal_as_in_the_map(ctl, tmp_path, text, message):
    ctl.start(grid(2))
    done = ctl.run('info', text)
    header = tmp_path / 'header.conf'
    header.write_text('[ttyUSB0:%s]\nrole = grid\n' % text)
    checked = ctl.run_raw('check-config', str(header))
    if message is None:
        assert done.returncode == 0, done.stderr
        assert checked.returncode == 0, checked.stdout
        return
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == 'pzemctl PORT info: error: argument ADDR: ' + message
    assert checked.returncode == 1
    assert checked.stdout.splitlines()[0] == '%s:1: [ttyUSB0:%s] %s; section ignored' % (
        header, text, message)


# -- reset-energy, set-alarm, set-range ------------------------------------------------------------

def test_reset_energy_with_yes(ctl):
    meter = grid(1)
    ctl.start(meter, wind(3))
    done = ctl.run('reset-energy', '1', '--yes')
    assert done.returncode == 0, done.stderr
    assert done.stdout == ('energy counter of the PZEM-016 at address 1 reset: now 0.000 kWh '
                           '(was 12.345 kWh)\n')
    assert meter.energy_wh == 0
    assert ctl.sim.meter(3).energy_wh == 2


def test_reset_energy_refuses_without_yes_and_without_a_terminal(ctl):
    meter = grid(1)
    ctl.start(meter)
    done = ctl.run('reset-energy', '1')
    assert done.returncode == 2
    assert one_sentence(done.stderr) == (
        'pzemctl: refusing to reset the energy counter of the meter at address 1 on ttyUSB0 '
        'without confirmation: stdin is not a terminal, so add --yes')
    assert (meter.energy_wh, meter.stats['requests']) == (12345, 0)


def test_reset_energy_asks_on_a_terminal(ctl):
    meter = grid(1)
    ctl.start(meter)
    no = ctl.run_on_terminal('n', 'reset-energy', '1')
    assert no.returncode == 1
    assert 'Reset the energy counter of the PZEM-016 at address 1' in no.stderr
    assert no.stderr.splitlines()[-1].endswith(
        'pzemctl: cancelled: nothing was written to the meter')
    assert meter.energy_wh == 12345
    yes = ctl.run_on_terminal('y', 'reset-energy', '1')
    assert yes.returncode == 0, yes.stderr
    assert meter.energy_wh == 0


@pytest.mark.pymodbus
def test_set_power_alarm_with_yes_and_refusal_without(ctl):
    meter = grid(1, power_alarm_w=2300)
    ctl.start(meter)
    refused = ctl.run('set-alarm', '1', '--power', '3000')
    assert refused.returncode == 2
    assert 'without confirmation' in one_sentence(refused.stderr)
    assert meter.power_alarm_w == 2300
    done = ctl.run('set-alarm', '1', '--power', '3000', '--yes')
    assert done.returncode == 0, done.stderr
    assert meter.power_alarm_w == 3000
    assert done.stdout.splitlines() == [
        'alarm thresholds of the PZEM-016 at address 1 on ttyUSB0:',
        '  power alarm above        3000 W']


@pytest.mark.pymodbus
def test_set_voltage_alarms_on_a_dc_meter(ctl):
    meter = wind(3)
    ctl.start(meter)
    done = ctl.run('set-alarm', '3', '--high', '58.4', '--low', '10.5', '--yes')
    assert done.returncode == 0, done.stderr
    assert (meter.high_alarm_v, meter.low_alarm_v) == (58.4, 10.5)
    assert done.stdout.splitlines()[1:] == ['  high-voltage alarm above 58.40 V',
                                            '  low-voltage alarm below  10.50 V']


@pytest.mark.pymodbus
def test_a_lost_echo_does_not_fail_a_write_that_took(ctl):
    meter = wind(3)
    ctl.start(meter)
    writes = on_write(meter, lambda request, reply: None)
    done = ctl.run('set-alarm', '3', '--low', '11', '--yes')
    assert done.returncode == 0, done.stderr
    assert meter.low_alarm_v == 11.0
    assert len(writes) == 1


@pytest.mark.pymodbus
def test_an_echoed_write_the_meter_did_not_keep_fails(ctl):
    meter = grid(1, power_alarm_w=2300)
    ctl.start(meter)
    on_write(meter, lambda request, reply: bytes(request), act=False)   # echo, value not kept
    done = ctl.run('set-alarm', '1', '--power', '1000', '--yes')
    assert done.returncode == 1
    assert one_sentence(done.stderr) == (
        'pzemctl: the meter at address 1 did not take the new power alarm: register 0x0001 '
        'reads 2300, expected 1000')
    assert meter.power_alarm_w == 2300


@pytest.mark.parametrize('args, message', [
    (('set-alarm', '1', '--high', '60', '--yes'),
     '--high and --low are for a PZEM-017 (DC); the meter at address 1 is a PZEM-016: use '
     '--power W'),
    (('set-alarm', '3', '--power', '100', '--yes'),
     '--power is for a PZEM-016 (AC); the meter at address 3 is a PZEM-017: use --high V and/or '
     '--low V'),
    (('set-alarm', '1', '--power', '30000', '--yes'),
     'power alarm 30000 W is out of range 0..25000 W'),
    (('set-alarm', '3', '--high', '400', '--yes'),
     'high-voltage alarm 400 V is out of range 5..350 V'),
    (('set-alarm', '3', '--low', '320', '--yes'),
     'the high-voltage alarm (300.00 V) must be above the low-voltage alarm (320.00 V)'),
    (('set-alarm', '3', '--yes'), 'give the voltage alarm thresholds: --high V and/or --low V'),
])
def test_set_alarm_refuses_what_does_not_fit_the_meter(ctl, args, message):
    ac, dc = grid(1), wind(3)
    ctl.start(ac, dc)
    done = ctl.run(*args)
    assert done.returncode == 2
    assert one_sentence(done.stderr) == 'pzemctl: ' + message
    assert (ac.power_alarm_w, dc.high_alarm_v, dc.low_alarm_v) == (2300, 300.0, 7.0)


@pytest.mark.pymodbus
def test_set_range_on_a_pzem017(ctl):
    meter = wind(3)
    ctl.start(meter)
    refused = ctl.run('set-range', '3', '200')
    assert refused.returncode == 2 and meter.current_range == 100
    assert 'refusing to set the shunt range of the meter at address 3 on ttyUSB0 to 200 A ' \
           'without confirmation' in one_sentence(refused.stderr)
    asked = ctl.run_on_terminal('n', 'set-range', '3', '200')
    assert 'Set the shunt range of the PZEM-017 at address 3 on ttyUSB0 to 200 A (now 100 A)? ' \
           '[y/N]' in asked.stderr
    done = ctl.run('set-range', '3', '200', '--yes')
    assert done.returncode == 0, done.stderr
    assert meter.current_range == 200
    assert done.stdout == 'shunt range of the PZEM-017 at address 3 on ttyUSB0: 200 A (was 100 A)\n'
    assert ctl.run('info', '3').stdout.splitlines()[3] == '  shunt range              200 A'


def test_set_range_refuses_an_ac_meter_and_odd_ranges(ctl):
    meter = grid(1)
    ctl.start(meter, wind(3))
    done = ctl.run('set-range', '1', '200', '--yes')
    assert done.returncode == 2
    assert one_sentence(done.stderr) == ('pzemctl: the meter at address 1 is a PZEM-016 (AC): only '
                                         'a PZEM-017 has a shunt range')
    odd = ctl.run('set-range', '3', '150', '--yes')
    assert odd.returncode == 2
    assert "invalid choice: 150" in odd.stderr
    assert ctl.sim.meter(3).current_range == 100


# -- monitor ---------------------------------------------------------------------------------------

MAP_WITH_GROUP = """\
[1]
group = house
phase = L1
role = grid
name = House
[2]
group = house
phase = L2
[3]
group = house
phase = L3
[4]
role = dcsource
name = Wind
"""


def test_monitor_shows_a_group_as_one_meter_with_its_phases(ctl):
    ctl.write_map(MAP_WITH_GROUP)
    ctl.start(grid(1, power=100.0, energy_wh=1000), grid(2, power=200.0, energy_wh=2000),
              grid(3, power=300.0, energy_wh=3000), wind(4))
    done = ctl.run('monitor', '--count', '2', '--interval', '0.2')
    assert done.returncode == 0, done.stderr
    snapshots = re.split(r'\n(?=ttyUSB0  )', done.stdout.strip())
    assert len(snapshots) == 2
    assert snapshots[0].startswith('ttyUSB0  ') and 'refresh 1' in snapshots[0]
    assert 'refresh 2' in snapshots[1]
    rows = [' '.join(line.split()) for line in snapshots[1].splitlines()[2:]]
    assert rows == [
        'ADDR METER ROLE NAME VOLTAGE CURRENT POWER ENERGY FREQ PF ALARM',
        '1,2,3 PZEM-016 3-phase grid House 600.0 W 6.000 kWh 0.45',
        'L1 1 PZEM-016 231.4 V 1.900 A 100.0 W 1.000 kWh 49.9 Hz 0.95 -',
        'L2 2 PZEM-016 231.4 V 1.900 A 200.0 W 2.000 kWh 49.9 Hz 0.95 -',
        'L3 3 PZEM-016 231.4 V 1.900 A 300.0 W 3.000 kWh 49.9 Hz 0.95 -',
        '4 PZEM-017 dcsource Wind 13.44 V 0.10 A 1.3 W 0.002 kWh -']


def test_monitor_shows_a_missing_phase_without_totals(ctl):
    ctl.write_map(MAP_WITH_GROUP)
    ctl.start(grid(1), grid(3), wind(4))
    done = ctl.run('monitor', '--count', '1', '--timeout', '0.2')
    assert done.returncode == 0, done.stderr
    rows = [' '.join(line.split()) for line in done.stdout.splitlines()[2:]]
    assert rows[1] == '1,2,3 PZEM-016 3-phase grid House L2 missing'
    assert rows[3] == 'L2 2 ? no reply'


def test_monitor_scan_finds_meters_without_a_map(ctl):
    ctl.start(grid(7), wind(9))
    done = ctl.run('monitor', '--scan', '--count', '1', '--addresses', '5-10', *FAST)
    assert done.returncode == 0, done.stderr
    rows = [' '.join(line.split()) for line in done.stdout.splitlines()[3:5]]
    # Without a map, the driver publishes each meter in its family's default role.
    assert rows == [
        '7 PZEM-016 %s 231.4 V 1.900 A 420.0 W 12.345 kWh 49.9 Hz 0.95 -' % DEFAULT_ROLE['ac'],
        '9 PZEM-017 %s 13.44 V 0.10 A 1.3 W 0.002 kWh -' % DEFAULT_ROLE['dc']]


def test_monitor_warns_of_a_role_the_driver_refuses(ctl):
    ctl.write_map('[1]\nrole = dcload\nname = Oven\n[3]\nrole = grid\n[4]\nrole = dcsource\n')
    ctl.start(grid(1), wind(3), wind(4))
    done = ctl.run('monitor', '--count', '1')
    assert done.returncode == 0, done.stderr
    rows = [' '.join(line.split()) for line in done.stdout.strip().splitlines()[2:]]
    assert rows[1].startswith('1 PZEM-016 dcload! Oven 231.4 V')
    assert rows[2].startswith('3 PZEM-017 grid! 13.44 V')
    assert rows[3].startswith('4 PZEM-017 dcsource 13.44 V')
    assert rows[4:] == [
        '',
        '! 1: role dcload does not fit a PZEM-016 (AC): the driver will not publish it; use one '
        'of grid, genset, acload, pvinverter, evcharger, heatpump',
        '! 3: role grid does not fit a PZEM-017 (DC): the driver will not publish it; use one of '
        'dcsource, dcload, dcsystem']


# -- pin / unpin -----------------------------------------------------------------------------------

FOREIGN = 'ACTION=="add", ENV{ID_MODEL}=="GPS", ENV{VE_SERVICE}="gps"  # someone else\'s'


def pin_env(tmp_path, **props):
    """A PKG_ROOT in the test folder, and a USB adapter described in a properties file (this
    machine has none)."""
    root = tmp_path / 'root'
    (root / 'data' / 'conf').mkdir(parents=True, exist_ok=True)
    path = tmp_path / ('udev-%s.properties' % len(list(tmp_path.glob('udev-*'))))
    path.write_text(''.join('%s=%s\n' % item for item in sorted(props.items())))
    return {'PKG_ROOT': str(root), 'PZEM_UDEV_PROPERTIES': str(path)}, root


def test_pin_and_unpin_write_and_remove_exactly_their_own_rule(ctl, tmp_path):
    ctl.start(grid(1))
    by_serial, root = pin_env(tmp_path, ID_BUS='usb', ID_SERIAL_SHORT='A50285BI',
                              ID_PATH='platform-xhci-hcd.0-usb-0:1:1.0', DEVNAME='/dev/ttyUSB0')
    by_path, _ = pin_env(tmp_path, ID_BUS='usb', ID_PATH='platform-xhci-hcd.0-usb-0:2:1.0')
    rules = root / 'data' / 'conf' / 'pzem-udev.rules'
    installed = root / 'etc' / 'udev' / 'rules.d' / 'zz-pzem.rules'
    rules.write_text('# my own notes\n' + FOREIGN + '\n')

    done = ctl.run('pin', env=by_serial)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == (
        'pinned ttyUSB0 (ID_SERIAL_SHORT=A50285BI) to the pzem driver in %s' % rules)
    serial_rule = [
        '# pzemctl pin ID_SERIAL_SHORT=A50285BI (was ttyUSB0)',
        'ACTION=="add", SUBSYSTEM=="tty", ENV{ID_BUS}=="usb", ENV{ID_SERIAL_SHORT}=="A50285BI", '
        'ENV{VE_SERVICE}="pzem"']
    assert rules.read_text().splitlines() == ['# my own notes', FOREIGN] + serial_rule
    assert installed.read_text() == rules.read_text()     # the installer's pins step ran

    again = ctl.run('pin', env=by_serial)
    assert again.stdout.startswith('pinned again ttyUSB0')
    assert rules.read_text().splitlines() == ['# my own notes', FOREIGN] + serial_rule

    assert ctl.run('pin', env=by_path).returncode == 0
    path_rule = [
        '# pzemctl pin ID_PATH=platform-xhci-hcd.0-usb-0:2:1.0 (was ttyUSB0)',
        'ACTION=="add", SUBSYSTEM=="tty", ENV{ID_BUS}=="usb", '
        'ENV{ID_PATH}=="platform-xhci-hcd.0-usb-0:2:1.0", ENV{VE_SERVICE}="pzem"']
    assert rules.read_text().splitlines() == ['# my own notes', FOREIGN] + serial_rule + path_rule

    done = ctl.run('unpin', env=by_serial)
    assert done.returncode == 0, done.stderr
    assert rules.read_text().splitlines() == ['# my own notes', FOREIGN] + path_rule
    assert installed.read_text() == rules.read_text()
    assert 'is not pinned' in ctl.run('unpin', env=by_serial).stdout


def test_pin_refuses_a_port_that_is_not_usb(ctl, tmp_path):
    ctl.start(grid(1))
    env, root = pin_env(tmp_path, DEVNAME='/dev/ttyS0')
    done = ctl.run('pin', env=env)
    assert done.returncode == 1
    assert one_sentence(done.stderr) == ('pzemctl: ttyUSB0 is not a USB adapter (ID_BUS=unknown): '
                                         'only USB adapters can be pinned')
    assert not (root / 'data' / 'conf' / 'pzem-udev.rules').exists()


# -- check-config ----------------------------------------------------------------------------------

def test_check_config_reports_each_problem_with_its_line(ctl, tmp_path):
    broken = tmp_path / 'broken.conf'
    broken.write_text('[1]\nrole = grid\n\n[2]\nrole = gridd\n[300]\nrole = acload\n'
                      '[3]\ncolour = red\n')
    done = ctl.run_raw('check-config', str(broken))
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith('%s:5: [2] key \'role\': unknown role \'gridd\'' % broken)
    assert lines[1].startswith('%s:6:' % broken) and '300' in lines[1]
    assert lines[2].startswith("%s:9: [3] key 'colour': unknown key" % broken)
    assert lines[3].startswith('note: [1]: role grid without sign: ')
    assert one_sentence(done.stderr) == 'pzemctl: 3 problem(s) in %s' % broken
    # The same with a port before the command.
    assert ctl.run_raw('ttyUSB0', 'check-config', str(broken)).stdout == done.stdout


AT_INPUT = ("directly at the inverter/charger's AC input with nothing between (no loads, no PV, "
            "no other source on that stretch of cable)")


def test_check_config_says_when_sign_vebus_is_right(ctl, tmp_path):
    path = tmp_path / 'signs.conf'
    path.write_text('[1]\nrole = grid\n[2]\nrole = grid\nsign = vebus\n[3]\nrole = acload\n')
    done = ctl.run_raw('check-config', str(path))
    assert done.returncode == 0
    assert done.stdout.splitlines() == [
        'note: [1]: role grid without sign: a PZEM cannot tell import from export, so '
        'everything counts as import. If the meter sits %s, add "sign = vebus"; otherwise do '
        'not let ESS regulate on it (Grid metering: Inverter/Charger)' % AT_INPUT,
        'note: [2]: sign = vebus is right only if the meter sits %s: its power is then negative '
        'while the Multi feeds back, and that energy counts as export (Energy/Reverse)'
        % AT_INPUT,
        '%s: no problems' % path]


def test_check_config_of_a_good_map(ctl, tmp_path):
    good = tmp_path / 'good.conf'
    good.write_text(MAP_WITH_GROUP)
    done = ctl.run_raw('check-config', str(good))
    assert (done.returncode, done.stdout.splitlines()[-1]) == (0, '%s: no problems' % good)
    missing = ctl.run_raw('check-config', str(tmp_path / 'nope.conf'))
    assert missing.returncode == 1 and 'no such file' in missing.stdout


# -- failures --------------------------------------------------------------------------------------

def test_no_reply(ctl):
    ctl.start(grid(1))
    done = ctl.run('info', '9', *FAST)
    assert done.returncode == 1 and done.stdout == ''
    assert one_sentence(done.stderr).startswith('pzemctl: No reply from meter 9 on ttyUSB0')


def test_bad_crc(ctl):
    meter = grid(1)
    ctl.start(meter)
    meter.inject('bad_crc')
    done = ctl.run('info', '1')
    assert done.returncode == 1
    assert one_sentence(done.stderr) == (
        'pzemctl: Meter 1 on ttyUSB0 sent a garbled reply: check the RS-485 wiring and '
        'termination, and that no other meter has the same address.')


def test_exception_reply_says_what_it_means(ctl):
    meter = grid(1)
    ctl.start(meter)
    meter.inject('exception', code=2)
    done = ctl.run('reset-energy', '1', '--yes')
    assert done.returncode == 1
    sentence = one_sentence(done.stderr)
    assert 'exception 2 (illegal data address)' in sentence
    assert meter.energy_wh == 12345


@pytest.mark.pymodbus
def test_exception_reply_to_the_write_itself(ctl):
    meter = wind(3)
    ctl.start(meter)
    refused = on_write(meter, lambda request, reply: with_crc(bytes((request[0], 0x86, 3))),
                       act=False)
    done = ctl.run('set-range', '3', '300', '--yes')
    assert done.returncode == 1
    assert 'exception 3 (illegal data value)' in one_sentence(done.stderr)
    assert meter.current_range == 100 and len(refused) == 1


def test_missing_port(ctl, tmp_path):
    done = ctl.run_raw(str(tmp_path / 'ttyUSB9'), 'scan')
    assert done.returncode == 1
    assert one_sentence(done.stderr) == (
        'pzemctl: serial port %s does not exist: is the USB RS-485 adapter plugged in '
        '(ls /dev/ttyUSB*)?' % (tmp_path / 'ttyUSB9'))


def test_port_that_vanishes_mid_scan(ctl):
    ctl.start(grid(1))
    proc = subprocess.Popen([sys.executable, PZEMCTL, ctl.link, 'scan', '--config', ctl.map_path,
                             '--addresses', '1-200', '--scan-timeout', '0.01'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, env=ctl.env)
    first = proc.stderr.readline()      # progress after 50 addresses: the scan is under way
    ctl.stop()
    out, err = proc.communicate(timeout=60)
    assert first.startswith('scanning ttyUSB0 50/200'), first + err
    assert proc.returncode == 1
    assert 'went away' in one_sentence(err) or 'failed' in one_sentence(err)


# -- a port held by the driver ---------------------------------------------------------------------

HOLDER = """\
import sys, time
port = open(sys.argv[1], 'rb')     # stands in for dbus-pzem holding its port
open(sys.argv[2], 'w').write('ready')
time.sleep(60)
"""


@pytest.fixture
def holder(ctl, tmp_path):
    """A stand-in driver process named dbus-pzem that keeps the port open."""
    script = tmp_path / 'dbus-pzem'
    script.write_text(HOLDER)
    ready = tmp_path / 'ready'
    procs = []

    def start():
        proc = subprocess.Popen([sys.executable, str(script), ctl.link, str(ready)])
        procs.append(proc)
        deadline = time.monotonic() + 10
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        ready.unlink()
        return proc
    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def stand_in_serial_starter(tmp_path, proc):
    """stop-tty.sh ends the stand-in driver, as svc -d would; both scripts log their calls.
    Serial-starter does not run on the test machine."""
    folder = tmp_path / 'serial-starter'
    folder.mkdir()
    log = tmp_path / 'serial-starter.log'
    for name, action in (('stop-tty.sh', 'kill %d' % proc.pid), ('start-tty.sh', 'true')):
        script = folder / name
        script.write_text('#!/bin/sh\necho "%s $*" >> "%s"\n%s\n' % (name, log, action))
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return log


def test_port_held_by_the_driver_without_serial_starter_scripts(ctl, holder):
    ctl.start(grid(1))
    proc = holder()
    done = ctl.run('info', '1')
    assert done.returncode == 1
    sentence = one_sentence(done.stderr)
    assert sentence.startswith('pzemctl: ttyUSB0 is in use by process %d (' % proc.pid)
    assert sentence.endswith('stop the driver first: svc -d /service/dbus-pzem.ttyUSB0 (svc -u '
                             'to start it again afterwards)')
    assert proc.poll() is None


def test_port_held_by_the_driver_is_borrowed_and_handed_back(ctl, holder, tmp_path):
    ctl.start(grid(1))
    proc = holder()
    log = stand_in_serial_starter(tmp_path, proc)
    done = ctl.run('info', '1')
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('PZEM-016 (AC) at address 1 on ttyUSB0')
    assert log.read_text() == 'stop-tty.sh ttyUSB0\nstart-tty.sh ttyUSB0\n'
    assert 'releasing it with' in done.stderr


def test_port_is_handed_back_after_a_failure_too(ctl, holder, tmp_path):
    ctl.start(grid(1))
    proc = holder()
    log = stand_in_serial_starter(tmp_path, proc)
    done = ctl.run('info', '9', *FAST)
    assert done.returncode == 1
    assert 'No reply from meter 9' in done.stderr.splitlines()[-1]
    assert log.read_text() == 'stop-tty.sh ttyUSB0\nstart-tty.sh ttyUSB0\n'


def test_a_running_service_counts_as_holding_the_port(ctl, tmp_path):
    ctl.start(grid(1))
    supervise = tmp_path / 'service' / 'dbus-pzem.ttyUSB0' / 'supervise'
    supervise.mkdir(parents=True)
    # daemontools status: 12 bytes TAI64N, then the pid (little endian), paused, want.
    (supervise / 'status').write_bytes(b'\0' * 12 + (4242).to_bytes(4, 'little') + b'\0u')
    done = ctl.run('info', '1')
    assert done.returncode == 1
    assert one_sentence(done.stderr).startswith(
        'pzemctl: ttyUSB0 is in use by service dbus-pzem.ttyUSB0 and ')


# -- usage -----------------------------------------------------------------------------------------

def test_usage_errors_exit_2(ctl):
    assert ctl.run_raw().returncode == 2
    assert ctl.run_raw('ttyUSB0', 'explode').returncode == 2
    helped = ctl.run_raw('--help')
    assert helped.returncode == 0 and 'set-address' in helped.stdout


# -- numbers on the command line -------------------------------------------------------------------

@pytest.mark.parametrize('args, message', [
    (('info', '1', '--timeout', '-1'),
     'argument --timeout: -1 is not a number of seconds above 0'),
    (('info', '1', '--timeout', 'inf'),
     'argument --timeout: inf is not a number of seconds above 0'),
    (('info', '1', '--timeout', 'nan'),
     'argument --timeout: nan is not a number of seconds above 0'),
    (('info', '1', '--timeout', '1e300'),
     'argument --timeout: 1e300 seconds is too long: at most 3600'),
    (('scan', '--scan-timeout', '-1'),
     'argument --scan-timeout: -1 is not a number of seconds above 0'),
    (('monitor', '--interval', '-0.5'),
     'argument --interval: -0.5 is not a number of seconds of 0 or more'),
    (('monitor', '--count', '0'), 'argument --count: 0 is not a whole number of 1 or more'),
    (('monitor', '--count', '1.5'),
     "argument --count: '1.5' is not a whole number of 1 or more"),
    (('set-alarm', '1', '--power', 'nan', '--yes'), 'argument --power: nan is not a number'),
    (('set-alarm', '3', '--high', 'inf', '--yes'), 'argument --high: inf is not a number'),
    (('set-alarm', '3', '--low', 'ten', '--yes'), "argument --low: 'ten' is not a number"),
])
def test_a_bad_number_is_one_sentence_and_exit_2(ctl, args, message):
    meter = grid(1)
    ctl.start(meter)
    done = ctl.run(*args)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].endswith('error: ' + message)
    assert 'Traceback' not in done.stderr
    assert meter.stats['requests'] == 0


def test_number_types_take_their_bounds_and_refuse_just_past_them():
    import argparse
    from pzem import numbers
    from pzem.ctl.cli import address_range
    assert (numbers.seconds('0'), numbers.seconds('3600')) == (0.0, 3600.0)
    assert numbers.positive_seconds('0.001') == 0.001
    assert (numbers.count('1'), numbers.finite('-5.5')) == (1, -5.5)
    assert (address_range('7'), address_range('1-247')) == (range(7, 8), range(1, 248))
    for kind, text in ((numbers.seconds, '3600.5'), (numbers.seconds, '-0.001'),
                       (numbers.positive_seconds, '0'), (numbers.count, '0'),
                       (numbers.count, '1000001'), (numbers.finite, '-inf'),
                       (address_range, '0'), (address_range, '248')):
        with pytest.raises(argparse.ArgumentTypeError):
            kind(text)


# -- ports that are not serial adapters ------------------------------------------------------------

def test_ports_that_are_not_serial_adapters(ctl, tmp_path):
    plain = tmp_path / 'notes.txt'
    plain.write_text('hello\n')
    for port, sentence in [
            ('/dev/null', '/dev/null is a device but not a serial port: give the adapter, like '
                          'ttyUSB0'),
            (str(plain), '%s is a file, not a serial port: give the adapter, like ttyUSB0' % plain),
            (str(tmp_path), '%s is a folder, not a serial port: give the adapter, like ttyUSB0'
             % tmp_path)]:
        for command in ('info', 'pin'):
            done = ctl.run_raw(port, command)
            assert done.returncode == 1, done.stderr
            assert one_sentence(done.stderr) == 'pzemctl: ' + sentence
    empty = ctl.run_raw('', 'scan')
    assert empty.returncode == 2
    assert one_sentence(empty.stderr) == (
        'pzemctl: give a serial port: ttyUSB0 or a path like /dev/ttyUSB0')


def test_pin_refuses_a_pseudo_terminal(ctl):
    ctl.start(grid(1))
    done = ctl.run('pin')
    assert done.returncode == 1
    sentence = one_sentence(done.stderr)
    assert sentence.startswith('pzemctl: ttyUSB0 is a pseudo-terminal (/dev/pts/')
    assert sentence.endswith('), not a USB adapter: only USB adapters can be pinned')


# -- a port held by another program ----------------------------------------------------------------

def test_a_port_held_by_another_program_is_left_alone(ctl, tmp_path):
    ctl.start(grid(1))
    script = tmp_path / 'gps_dbus'
    script.write_text(HOLDER)
    ready = tmp_path / 'ready'
    proc = subprocess.Popen([sys.executable, str(script), ctl.link, str(ready)])
    try:
        deadline = time.monotonic() + 10
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        log = stand_in_serial_starter(tmp_path, proc)
        done = ctl.run('info', '1')
        assert done.returncode == 2
        sentence = one_sentence(done.stderr)
        assert sentence.startswith('pzemctl: refusing to take ttyUSB0 from process %d (gps_dbus '
                                   % proc.pid)
        assert sentence.endswith('which is not dbus-pzem without confirmation: stdin is not a '
                                 'terminal, so add --yes')
        no = ctl.run_on_terminal('n', 'info', '1')
        assert no.returncode == 1
        assert 'Take ttyUSB0 from process %d (gps_dbus ' % proc.pid in no.stderr
        assert no.stderr.splitlines()[-1].endswith(' is ttyUSB0 the right port?')
        assert 'pzemctl: cancelled: ttyUSB0 was left to process %d' % proc.pid in no.stderr
        assert not log.exists() and proc.poll() is None       # nothing was stopped
        done = ctl.run('info', '1', '--yes')                  # the user says it is right
        assert done.returncode == 0, done.stderr
        assert log.read_text() == 'stop-tty.sh ttyUSB0\nstart-tty.sh ttyUSB0\n'
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_another_service_on_the_port_is_left_alone(ctl, tmp_path):
    ctl.start(grid(1))
    supervise = tmp_path / 'service' / 'vedirect-interface.ttyUSB0' / 'supervise'
    supervise.mkdir(parents=True)
    (supervise / 'status').write_bytes(b'\0' * 12 + (4242).to_bytes(4, 'little') + b'\0u')
    done = ctl.run('scan', '--addresses', '1')
    assert done.returncode == 2
    assert one_sentence(done.stderr).startswith(
        'pzemctl: refusing to take ttyUSB0 from service vedirect-interface.ttyUSB0, which is not '
        'dbus-pzem')
    assert ctl.sim.meter(1).stats['requests'] == 0


# -- status ----------------------------------------------------------------------------------------

SLEEPER = 'import time\ntime.sleep(60)\n'
STARTED = 1795000000        # 2026-11-18, a Unix time for the service and log stamps


def tai64n(unix_time):
    return '%016x%08x' % (2 ** 62 + 10 + unix_time, 0)


def shown(unix_time):
    return time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(unix_time))


def test_status_shows_the_driver_its_meters_and_its_log(ctl, tmp_path, address):
    script = tmp_path / 'dbus-pzem'         # a stand-in driver process for ttyPZEM7
    script.write_text(SLEEPER)
    driver = subprocess.Popen([sys.executable, str(script), '--config', ctl.map_path, 'ttyPZEM7'])
    grid_meter = BusItemService('com.victronenergy.grid.pzem_ttyPZEM7_1', bus=connect(address))
    wind_meter = BusItemService('com.victronenergy.dcsource.pzem_ttyPZEM7_3',
                                bus=connect(address))
    other = BusItemService('com.victronenergy.battery.ttyPZEM7', bus=connect(address))
    try:
        for svc, values in ((grid_meter, {'/Connected': 1, '/Ac/Power': 420.54,
                                          '/DeviceInstance': 40, '/CustomName': 'House',
                                          '/Mgmt/Connection': 'Modbus RTU ttyPZEM7:1'}),
                            (wind_meter, {'/Connected': 0, '/Dc/0/Power': [],
                                          '/DeviceInstance': 41}),
                            (other, {'/Connected': 1})):
            for path, value in values.items():
                svc.add_path(path, value)
            svc.register()
        supervise = tmp_path / 'service' / 'dbus-pzem.ttyPZEM7' / 'supervise'
        supervise.mkdir(parents=True)
        (supervise / 'status').write_bytes(bytes.fromhex(tai64n(STARTED)) +
                                           driver.pid.to_bytes(4, 'little') + b'\0u')
        log = tmp_path / 'log' / 'dbus-pzem.ttyPZEM7'
        log.mkdir(parents=True)
        (log / 'current').write_text(''.join(
            '@%s line %d\n' % (tai64n(STARTED + n), n) for n in range(12)) + 'no stamp\n')

        done = ctl.run_pumping(address, 'status')
        assert done.returncode == 0, done.stderr
        # Other dbus-pzem processes on this shared machine may add blocks of their own.
        blocks = dict((b.split('\n', 1)[0], b) for b in done.stdout.strip().split('\n\n'))
        assert blocks['ttyPZEM7'].splitlines() == [
            'ttyPZEM7',
            '  service dbus-pzem.ttyPZEM7: up (pid %d) since %s' % (driver.pid, shown(STARTED)),
            '  process %d: %s %s --config %s ttyPZEM7' % (driver.pid, sys.executable, script,
                                                         ctl.map_path),
            '  com.victronenergy.dcsource.pzem_ttyPZEM7_3: dcsource, NOT CONNECTED, power -, '
            'instance 41',
            '  com.victronenergy.grid.pzem_ttyPZEM7_1: grid, connected, power 420.5 W, '
            'instance 40, Modbus RTU ttyPZEM7:1, "House"',
            '  log %s:' % (log / 'current')] + [
            '    %s line %d' % (shown(STARTED + n), n) for n in range(5, 12)] + [
            '    no stamp']
        # A port given narrows it down; a port without the driver says so.
        assert ctl.run_pumping(address, 'ttyPZEM7', 'status').stdout == \
            blocks['ttyPZEM7'] + '\n'
        idle = ctl.run_pumping(address, 'ttyPZEM8', 'status')
        assert idle.returncode == 0, idle.stderr
        assert idle.stdout.splitlines() == [
            'ttyPZEM8',
            '  service dbus-pzem.ttyPZEM8: none (serial-starter has not started the driver on '
            'this port)',
            '  process: none',
            '  meters: none published on D-Bus',
            '  log %s: none' % (tmp_path / 'log' / 'dbus-pzem.ttyPZEM8' / 'current')]
    finally:
        for svc in (grid_meter, wind_meter, other):
            svc.close()
        driver.kill()
        driver.wait()


def test_status_without_the_system_bus(ctl):
    done = ctl.run_raw('ttyUSB0', 'status',
                       env={'DBUS_SYSTEM_BUS_ADDRESS': 'unix:path=/nonexistent'})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[3].startswith(
        '  meters: unknown: the system D-Bus cannot be asked: ')


def test_check_config_says_when_a_port_section_replaces_a_plain_one(ctl, tmp_path):
    path = tmp_path / 'found.conf'
    path.write_text('[1]\nrole = acload\n[ttyUSB0:1]\nrole = acload\n')
    done = ctl.run_raw('check-config', str(path))
    assert done.returncode == 0
    assert done.stdout.splitlines()[0] == (
        'note: [1] is not used on ttyUSB0: [ttyUSB0:1] (line 3) replaces it there; edit that '
        'one, or remove it')


def test_check_config_of_a_device_ends_at_once_with_one_sentence(ctl):
    done = ctl.run_raw('check-config', '/dev/zero')
    assert done.returncode == 1
    assert done.stdout == ('/dev/zero: not a regular file (a device, a pipe or a socket), so not '
                           'a map; the map is not used\n')
    assert one_sentence(done.stderr) == 'pzemctl: 1 problem(s) in /dev/zero'


# -- check-config: what the map will do ------------------------------------------------------------

def test_check_config_fails_when_a_port_section_hides_keys_of_a_plain_one(ctl, tmp_path):
    # The trap: the user's [1] is replaced by the section the driver added for the
    # meter it found, so the meter would be an acload without direction.
    path = tmp_path / 'shadow.conf'
    path.write_text('[1]\nrole = grid\nsign = vebus\nname = Grid\n'
                    '# ttyUSB0:1: a PZEM-016 found on 2026-12-01 15:20 by dbus-pzem\n'
                    '[ttyUSB0:1]\nrole = acload\n')
    done = ctl.run_raw('check-config', str(path))
    assert done.returncode == 1
    assert done.stdout.splitlines()[0] == (
        '%s:6: [ttyUSB0:1] replaces [1] (line 1) on ttyUSB0 as a whole: the sign, name of [1] '
        'do not apply there; add them to [ttyUSB0:1], or remove [ttyUSB0:1] to use [1]' % path)
    assert one_sentence(done.stderr) == 'pzemctl: 1 problem(s) in %s' % path


def test_check_config_notes_a_port_in_the_wrong_case(ctl, tmp_path):
    path = tmp_path / 'case.conf'
    path.write_text('[ttyUSB0:1]\nrole = acload\n[ttyusb0:2]\nrole = acload\n')
    done = ctl.run('check-config', str(path))       # the port given is one that is seen
    assert done.returncode == 0, done.stdout
    assert done.stdout.splitlines() == [
        'note: [ttyusb0:2] (line 3): no port is called ttyusb0, so it applies nowhere; port '
        'names are case-sensitive: did you mean [ttyUSB0:2]?',
        '%s: no problems' % path]
    # A port the machine has not seen at all (no adapter, no dbus-pzem run on it).
    alone = ctl.run_raw('check-config', str(path))
    assert alone.stdout.splitlines()[0] == (
        'note: [ttyUSB0:1] (line 1): no port ttyUSB0 is here now (not in /dev, and dbus-pzem '
        'has not run on one): it applies once an adapter shows up as ttyUSB0')
    # One that serial-starter runs dbus-pzem on counts as seen.
    os.makedirs(os.path.join(ctl.tmp, 'service', 'dbus-pzem.ttyUSB0'))
    seen = ctl.run_raw('check-config', str(path))
    assert seen.stdout.splitlines()[0].endswith('did you mean [ttyUSB0:2]?')
    assert 'ttyUSB0 is here now' not in seen.stdout


def test_check_config_notes_a_hash_that_cut_a_name(ctl, tmp_path):
    path = tmp_path / 'hash.conf'
    path.write_text('[2]\nrole = acload\nname = Pump #2\n[3]\nrole = acload\n'
                    'name = Fridge   # in the kitchen\n[4]\nname = "Pump #4"\n')
    done = ctl.run_raw('check-config', str(path))
    assert done.returncode == 0
    assert done.stdout.splitlines() == [
        'note: [2] (line 3): the name is \'Pump\': \'#2\' is a comment; to keep it in the name, '
        'quote it: name = "Pump #2"',
        '%s: no problems' % path]


def test_check_config_of_a_missing_file_says_so(ctl, tmp_path):
    missing = tmp_path / 'nonexist.conf'
    done = ctl.run_raw('check-config', str(missing))
    assert done.returncode == 1
    assert done.stdout == ('%s: no such file (without a map the driver publishes the meters it '
                           'finds with roles that steer nothing)\n' % missing)
    assert one_sentence(done.stderr) == 'pzemctl: 1 problem(s) in %s' % missing


def test_check_config_takes_one_map(ctl, tmp_path):
    done = ctl.run_raw('check-config', '--config', str(tmp_path / 'a.conf'),
                       str(tmp_path / 'b.conf'))
    assert done.returncode == 2
    assert one_sentence(done.stderr) == (
        'pzemctl: check-config takes one map: give FILE or --config, not both (%s, %s)'
        % (tmp_path / 'b.conf', tmp_path / 'a.conf'))


def test_monitor_says_when_its_map_does_not_exist(ctl, tmp_path):
    ctl.start(grid(1))
    done = ctl.run('monitor', '--count', '1', '--addresses', '1-2', '--config',
                   str(tmp_path / 'nonexist.conf'), *FAST)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[0] == 'the map %s does not exist: scanning' % (
        tmp_path / 'nonexist.conf')


def test_monitor_shows_the_meter_of_a_broken_section_with_the_safe_default_role(ctl):
    ctl.write_map('[1]\nrole = gird\nname = Grid\n')
    ctl.start(grid(1))
    done = ctl.run('monitor', '--count', '1')
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[0] == (
        'the map %s has 1 problem(s): "pzemctl check-config %s" lists them'
        % (ctl.map_path, ctl.map_path))
    rows = [' '.join(line.split()) for line in done.stdout.splitlines()[2:]]
    assert rows[1].startswith('1 PZEM-016 acload 231.4 V')


# -- pzemctl on a terminal: 80x24 and wider --------------------------------------------------------

def on_terminal(ctl, columns, rows, *args):
    """pzemctl ARGS with stdout on a pseudo-terminal of that size; returns (code, its lines)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack('HHHH', rows, columns, 0, 0))
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.ONLCR          # the lines as written, without \r
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    proc = subprocess.Popen([sys.executable, PZEMCTL, ctl.link] + list(args) +
                            ['--config', ctl.map_path], stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=subprocess.PIPE, env=ctl.env)
    os.close(slave)
    out = b''
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:                 # EIO: the process closed the terminal
            break
        if not chunk:
            break
        out += chunk
    code = proc.wait(60)
    os.close(master)
    return code, out.decode().splitlines()


WIDE_MAP = MAP_WITH_GROUP.replace('name = House', 'name = House supply, all phases') + \
    '[5]\nrole = acload\nname = MultiPlus AC out\n'


def test_monitor_fits_80_columns_and_uses_132(ctl):
    ctl.write_map(WIDE_MAP)
    ctl.start(grid(1, power=100.0), grid(2, power=200.0), grid(3, power=300.0),
              wind(4, voltage=58.44, current=100.5, power=5873.2, energy_wh=9999999), grid(5))
    code, lines = on_terminal(ctl, 80, 24, 'monitor', '--count', '1')
    assert code == 0
    assert max(len(line) for line in lines) <= 80, '\n'.join(lines)
    rows = [' '.join(line.split()) for line in lines[2:]]
    assert rows[:3] == [
        'ADDR METER ROLE NAME V A W kWh PF ALARM',
        '1,2,3 016x3 grid House supply, all~ 600.0 37.035 0.45',     # a long name is cut
        'L1 1 016 231.4 1.900 100.0 12.345 0.95 -']
    assert rows[5:7] == ['4 017 dcsource Wind 58.44 100.50 5873.2 9999.999 -',
                         '5 016 acload MultiPlus AC out 231.4 1.900 420.0 12.345 0.95 -']
    code, lines = on_terminal(ctl, 132, 24, 'monitor', '--count', '1')
    assert code == 0
    assert 80 < max(len(line) for line in lines) <= 132
    rows = [' '.join(line.split()) for line in lines[2:]]
    assert rows[:2] == [
        'ADDR METER ROLE NAME VOLTAGE CURRENT POWER ENERGY FREQ PF ALARM',
        '1,2,3 PZEM-016 3-phase grid House supply, all phases 600.0 W 37.035 kWh 0.45']
    assert rows[5:7] == ['4 PZEM-017 dcsource Wind 58.44 V 100.50 A 5873.2 W 9999.999 kWh -',
                         '5 PZEM-016 acload MultiPlus AC out 231.4 V 1.900 A 420.0 W 12.345 kWh '
                         '49.9 Hz 0.95 -']


def test_a_live_monitor_fits_the_height_of_the_terminal(ctl):
    ctl.write_map(''.join('[%d]\nrole = acload\n' % a for a in range(1, 31)))
    ctl.start(*[grid(a) for a in range(1, 31)])
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack('HHHH', 24, 80, 0, 0))
    proc = subprocess.Popen([sys.executable, PZEMCTL, ctl.link, 'monitor', '--config',
                             ctl.map_path, '--interval', '60'], stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=subprocess.PIPE, env=ctl.env)
    os.close(slave)
    out = b''
    try:
        while b'more line(s)' not in out:
            out += os.read(master, 65536)
    finally:
        proc.send_signal(signal.SIGINT)         # Ctrl-C ends a monitor: exit 0
        assert proc.wait(30) == 0
        os.close(master)
    screen = out.decode().split('\x1b[H')[-1].split('\x1b[J')[0]
    lines = [line.replace('\x1b[K', '') for line in screen.split('\r\n') if line]
    assert len(lines) == 23
    assert lines[-1] == '(11 more line(s): a taller terminal shows them)'


# -- the command line: hints, help, rounding, what is missing --------------------------------------

@pytest.mark.parametrize('args, sentence', [
    (('chek-config',), "unknown command 'chek-config' (did you mean 'check-config'?); pzemctl "
                       "--help lists them"),
    (('ttyUSB0', 'sacn'), "unknown command 'sacn' (did you mean 'scan'?); pzemctl --help lists "
                          "them"),
    (('scan', 'ttyUSB0', '--addresses', '1-5'),
     'the port comes before the command: pzemctl ttyUSB0 scan --addresses 1-5'),
    (('set-address', '3'), 'give the port before the command: pzemctl PORT set-address 3 (e.g. '
                           'pzemctl ttyUSB0 set-address)'),
    (('scan',), 'give the port before the command: pzemctl PORT scan (e.g. pzemctl ttyUSB0 '
                'scan)'),
])
def test_a_typo_or_a_swapped_order_gets_a_hint(ctl, args, sentence):
    done = subprocess.run([sys.executable, PZEMCTL] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, env=ctl.env)
    assert done.returncode == 2
    assert done.stderr == 'pzemctl: %s\n' % sentence


def test_each_command_shows_only_its_own_options(ctl):
    def options(*args):
        text = ctl.run_raw('ttyUSB0', *args, '--help').stdout
        return set(re.findall(r'(?<![\w-])--[a-z-]+', text)) - {'--help'}
    assert options('pin') == options('unpin') == options('status') == set()
    assert options('check-config') == {'--config'}
    assert options('reset-energy') == {'--config', '--stopbits', '--timeout', '--yes'}
    assert options('scan') == {'--config', '--stopbits', '--timeout', '--addresses',
                               '--scan-timeout', '--yes'}
    assert options('set-address') == options('scan') | {'--from', '--keep-map'}
    helped = ctl.run_raw('ttyUSB0', 'set-address', '--help').stdout
    assert 'NEW               the new Modbus address (1..247), free on the bus and in' in helped
    info = ctl.run_raw('ttyUSB0', 'info', '--help').stdout
    assert 'ADDR              its Modbus address (default: the only meter on the port,' in info


@pytest.mark.pymodbus
def test_a_rounded_value_is_said(ctl):
    ac, dc = grid(1), wind(3)
    ctl.start(ac, dc)
    done = ctl.run('set-alarm', '1', '--power', '2.5', '--yes')
    assert done.returncode == 0, done.stderr
    assert 'the meter takes whole watts: --power 2.5 is written as 2 W' in done.stderr
    assert ac.power_alarm_w == 2 and done.stdout.endswith('power alarm above        2 W\n')
    done = ctl.run('set-alarm', '3', '--high', '58.456', '--low', '10.5', '--yes')
    assert done.returncode == 0, done.stderr
    assert done.stderr == 'the meter takes steps of 0.01 V: --high 58.456 is written as 58.46 V\n'
    assert (dc.high_alarm_v, dc.low_alarm_v) == (58.46, 10.5)


@pytest.mark.parametrize('args', [('set-address', '5', '--from', '1', '--yes'),
                                  ('set-address', '5', '--yes'),
                                  ('set-alarm', '1', '--power', '100', '--yes'),
                                  ('set-range', '1', '200', '--yes')])
def test_a_write_on_a_python_without_pymodbus_says_what_is_missing_before_the_work(ctl, args):
    meter = grid(1)
    ctl.start(meter)
    # -S: the same python without its site-packages, so without pymodbus (and pzemctl needs
    # nothing else from there)
    command = [sys.executable, '-S', PZEMCTL, ctl.link] + list(args) + ['--config', ctl.map_path]
    done = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, env=ctl.env,
                          timeout=60)
    assert done.returncode == 1
    assert done.stderr == (
        'pzemctl: writing a meter\'s registers needs the Python package pymodbus, which %s does '
        'not have: on Venus OS it comes with the firmware; elsewhere install it (pip install '
        '"pymodbus<4"), or run pzemctl with a python that has it\n' % sys.executable)
    assert meter.stats['requests'] == 0
    # what needs no pymodbus still works there
    info = subprocess.run(command[:4] + ['info', '1', '--config', ctl.map_path],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, env=ctl.env, timeout=60)
    assert info.returncode == 0, info.stderr


def test_a_port_with_a_trailing_slash_is_that_port(ctl):
    ctl.start(grid(1))
    done = ctl.run_raw(ctl.link + '/', 'info', '1', '--config', ctl.map_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('PZEM-016 (AC) at address 1 on ttyUSB0\n')


# -- scan: what is counted -------------------------------------------------------------------------

def test_garbled_addresses_are_not_counted_as_meters_and_fail_the_scan(ctl):
    ctl.start(grid(1), grid(1, voltage=229.0), wind(3))      # two meters at address 1
    done = ctl.run('scan', '--addresses', '1-4', *FAST)
    assert done.returncode == 1
    assert done.stdout.splitlines()[:2] == [
        '  1  ?         garbled replies: two meters at this address, or bad wiring',
        '  3  PZEM-017  13.44 V  0.10 A  1.3 W  0.002 kWh']
    assert done.stdout.splitlines()[2].startswith(
        '1 meter(s) on ttyUSB0; addresses 1..4 scanned in ')
    assert one_sentence(done.stderr) == ('pzemctl: garbled replies at address 1: two meters share '
                                         'an address, or the wiring is bad')


def test_ctrl_c_during_a_scan_keeps_what_was_found(ctl):
    meters = [grid(1), wind(3)]
    ctl.start(*meters)
    proc = subprocess.Popen([sys.executable, PZEMCTL, ctl.link, 'scan', '--config', ctl.map_path,
                             '--scan-timeout', '0.01'], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, env=ctl.env)
    progress = proc.stderr.readline()       # after 50 addresses: both meters are behind it
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert progress.startswith('scanning ttyUSB0 50/247, 2 found'), progress + err
    assert proc.returncode == 1
    lines = out.splitlines()
    assert [line[:13] for line in lines[:2]] == ['  1  PZEM-016', '  3  PZEM-017']
    asked = int(re.match(r'2 meter\(s\) on ttyUSB0; addresses 1\.\.(\d+) of 1\.\.247 scanned in ',
                         lines[2]).group(1))
    assert 50 <= asked < 247
    assert one_sentence(err) == 'pzemctl: interrupted: addresses %d..247 were not scanned' % (
        asked + 1)


# -- exit codes: the README's table, run -----------------------------------------------------------

def readme_exit_codes():
    """[(code, command)] from the README's exit-code table: each `pzemctl ...` of a row."""
    with open(os.path.join(ROOT, 'README.md')) as f:
        text = f.read()
    table = text[text.index('| exit | means | for example |'):].split('\n\n', 1)[0]
    rows = [row for row in table.splitlines()[2:] if row.startswith('|')]
    found = []
    for row in rows:
        code = int(row.split('|')[1])
        commands = re.findall(r'`(pzemctl [^`]+)`', row)
        assert commands, row
        found += [(code, command) for command in commands]
    assert sorted({code for code, _ in found}) == [0, 1, 2]
    return found


@pytest.mark.pymodbus
@pytest.mark.parametrize('code, command', readme_exit_codes())
def test_exit_codes_follow_the_readmes_table(tmp_path, code, command):
    """Each example runs on the README's plan: PZEM-016 at 1 and 2, PZEM-017 at 3, on ttyUSB0
    (the simulator's link in its place), without a terminal."""
    ctl = Ctl(tmp_path)
    ctl.start(grid(1), grid(2), wind(3))
    try:
        words = command.split()[1:]
        words = [ctl.link if w == 'ttyUSB0' else w for w in words]
        if words[0] == ctl.link:
            words += ['--config', ctl.map_path] + list(FAST)
        done = subprocess.run([sys.executable, PZEMCTL] + words, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, env=ctl.env, timeout=60)
    finally:
        ctl.stop()
    assert done.returncode == code, done.stderr
    if code:
        assert done.stderr.splitlines()[-1].startswith('pzemctl'), done.stderr


def test_the_port_holder_is_named_with_its_whole_command_line():
    from pzem.ctl.port_lease import is_driver, program
    argv = ['/usr/bin/python3', '-u', '/opt/pzem/dbus-pzem', '--config', 'live.conf', 'ttyUSB0']
    assert program(argv) == ['dbus-pzem', '--config', 'live.conf', 'ttyUSB0']
    assert is_driver(argv) and not is_driver(['python3', '-u', '/usr/bin/gps_dbus', 'dbus-pzem'])
    assert program(['/opt/victronenergy/gps-dbus/gps_dbus', '-s', '/dev/ttyUSB0']) == [
        'gps_dbus', '-s', '/dev/ttyUSB0']
