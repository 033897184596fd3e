"""The port's own service of the real driver, end to end on a private bus with the simulator:
everything the GUI page reads and asks, as the page (or MQTT, Node-RED) does it. A request runs
between polls with the port held; the main loop goes on answering D-Bus meanwhile."""
import os
import time

import dbus
import pytest

from driver_rig import Rig
from pzem.port_service import DONE, FAILED, RUNNING
from pzem.port_status import ANSWERING, SILENT, WAITING
from pzemsim import AcMeter, DcMeter

PORT_SERVICE = 'com.victronenergy.pzem.ttyPZEM0'
INVALID = dbus.Array([], signature='i')
WRITE_REGISTER, READ_HOLDING = 0x06, 0x03

MAP = """\
# the plan
[ttyPZEM0:1]
role = grid
name = Grid
[ttyPZEM0:2]
role = acload
name = House
[ttyPZEM0:7]
role = acload
name = Pump
[bus]
scan = no
"""


class RecordingMeter(AcMeter):
    """A PZEM-016 that notes when each request reached it, and its function code."""

    def __init__(self, *args, **kwargs):
        AcMeter.__init__(self, *args, **kwargs)
        self.heard = []

    def handle(self, request):
        self.heard.append((time.monotonic(), request[1]))
        return AcMeter.handle(self, request)


def grid_meter():
    return RecordingMeter(1, voltage=230.0, current=4.0, power=920.0, power_factor=1.0,
                          energy_wh=12345)


def action(rig):
    return {key: rig.value(PORT_SERVICE, '/Action/' + key)
            for key in ('Sequence', 'Name', 'Address', 'State', 'Message')}


def request(rig, path, value):
    """Write a request as the page does; (SetValue's answer, seconds it took)."""
    started = time.monotonic()
    answer = rig.client.set_value(PORT_SERVICE, path, value)
    return answer, time.monotonic() - started


def wait_result(rig, sequence, timeout=10.0):
    rig.wait_value(PORT_SERVICE, '/Action/Sequence', lambda v: v == sequence, timeout)
    rig.wait_value(PORT_SERVICE, '/Action/State', lambda v: v != RUNNING, timeout)
    return action(rig)


def started_rig(tmp_path, meters, map_text=MAP, env=None, extra=()):
    rig = Rig(tmp_path, meters, map_text=map_text)
    rig.__enter__()
    try:
        rig.start_driver(*extra, env=env)
        rig.wait_started()
        rig.wait_service(PORT_SERVICE)
        rig.wait_polls(meters[0], 2)        # polling, and so stopped by SIGTERM as it should
    except BaseException:
        rig.__exit__(None, None, None)
        raise
    return rig


def two_meters(tmp_path, extra=()):
    house = RecordingMeter(2, voltage=231.0, current=2.0, power=462.0, power_factor=1.0)
    grid = grid_meter()
    return started_rig(tmp_path, [grid, house], extra=extra), grid, house


@pytest.fixture
def bus_of_two(tmp_path):
    """The grid meter at 1 and the house at 2; the map also names a pump at 7 that is off."""
    rig, grid, house = two_meters(tmp_path)
    try:
        yield rig, grid, house
    finally:
        rig.__exit__(None, None, None)


@pytest.fixture
def slow_bus_of_two(tmp_path):
    """The same with a reply timeout of 0.5 s: a new address takes 2 s or more (the new
    address and then the old one are each asked twice, silent), clearly longer than a D-Bus
    call to the driver takes even on a loaded machine."""
    rig, grid, house = two_meters(tmp_path, extra=('--timeout', '0.5'))
    try:
        yield rig, grid, house
    finally:
        rig.__exit__(None, None, None)


def test_the_port_lists_its_meters_and_the_device_page_finds_its_way(bus_of_two):
    rig, grid, house = bus_of_two
    port = rig.items(PORT_SERVICE)
    v = {path: item['Value'] for path, item in port.items()}
    assert (v['/Counts/Listed'], v['/Counts/Answering']) == (3, 2)
    assert v['/Meters/7/State'] == WAITING and v['/Meters/7/Name'] == 'Pump'
    assert v['/Meters/2/State'] == ANSWERING and v['/Meters/2/Role'] == 'acload'
    assert v['/Pinned'] == INVALID      # a pseudo-terminal cannot be pinned
    # the device page: from the meter's own service to the port's and back
    meter = rig.wait_service(rig.service('grid', 1))
    mine = {path: item['Value'] for path, item in rig.items(meter).items()}
    assert mine['/Mgmt/ProcessName'] == 'dbus-pzem' and mine['/Pzem/Port'] == 'ttyPZEM0'
    assert 'com.victronenergy.pzem.' + mine['/Pzem/Port'] == PORT_SERVICE
    assert v['/Meters/1/Serial'] == mine['/Serial']
    assert v['/Meters/1/Service'] == meter
    assert v['/Meters/1/DeviceInstance'] == mine['/DeviceInstance']
    # no readings on the port's service: a poll changes nothing there
    assert '/Meters/1/Power' not in port
    before = rig.signals.count(PORT_SERVICE, 'ItemsChanged')
    house.set(power=470.0, current=2.034)
    rig.wait_value(rig.service('acload', 2), '/Ac/Power', lambda p: p == 470.0)
    rig.wait_polls(house, 3)
    rig.client.sync(PORT_SERVICE)
    assert rig.signals.count(PORT_SERVICE, 'ItemsChanged') == before
    # what a meter is changes there at once: its name, its role (and so its service)
    assert rig.client.set_value(rig.service('acload', 2), '/CustomName', 'Kitchen') == 0
    rig.wait_value(PORT_SERVICE, '/Meters/2/Name', lambda n: n == 'Kitchen', timeout=2.0)
    assert rig.client.set_value(rig.service('acload', 2), '/Role', 'heatpump') == 0
    rig.wait_value(PORT_SERVICE, '/Meters/2/Service',
                   lambda n: n == rig.service('heatpump', 2), timeout=5.0)
    assert rig.value(PORT_SERVICE, '/Meters/2/Role') == 'heatpump'


def test_a_meter_that_stops_answering_shows_at_once_as_it_goes(bus_of_two):
    rig, grid, house = bus_of_two
    house.inject('silent')
    rig.wait_value(PORT_SERVICE, '/Meters/2/State', lambda s: s == SILENT, timeout=12.0)
    assert rig.value(rig.service('acload', 2), '/Connected') == 0
    assert rig.value(PORT_SERVICE, '/Meters/2/Reason') == 'no reply'
    assert rig.value(PORT_SERVICE, '/Counts/Answering') == 1
    assert rig.value(PORT_SERVICE, '/Meters/2/Errors/NoReply') >= 3
    house.clear_faults()
    rig.wait_value(PORT_SERVICE, '/Meters/2/State', lambda s: s == ANSWERING, timeout=5.0)


@pytest.mark.pymodbus
def test_set_address_from_dbus_moves_the_meter_its_name_and_its_section(slow_bus_of_two):
    rig, grid, house = slow_bus_of_two
    answer, took = request(rig, '/Meters/1/SetAddress', 5)
    assert answer == 0 and took < 1.0
    # the main loop answers while the request has the port
    started = time.monotonic()
    assert rig.value(PORT_SERVICE, '/Action/State') == RUNNING
    assert rig.value(rig.service('grid', 1), '/CustomName') == 'Grid'
    assert time.monotonic() - started < 1.0
    result = wait_result(rig, 1)
    assert (result['Name'], result['Address'], result['State']) == ('set-address', 1, DONE)
    assert result['Message'] == ('The PZEM-016 now answers at address 5 (was 1); its map '
                                 'section [ttyPZEM0:1] is now [ttyPZEM0:5].')
    new = rig.wait_service(rig.service('grid', 5))
    assert rig.value(new, '/CustomName') == 'Grid'
    rig.wait_gone(rig.service('grid', 1))
    assert grid.address == 5
    with open(rig.map_path) as f:
        text = f.read()
    assert '[ttyPZEM0:5]\nrole = grid\nname = Grid\n' in text and '[ttyPZEM0:1]' not in text
    rig.wait_value(PORT_SERVICE, '/Meters/5/State', lambda s: s == ANSWERING)
    assert rig.value(PORT_SERVICE, '/Meters/5/Name') == 'Grid'
    assert rig.value(PORT_SERVICE, '/Meters/1/State') == INVALID
    # the poll thread was held: no poll of the house from the identification of the meter
    # (then 5 is asked: silent, 1 s) to its read-back at 5 (then 1 is asked: silent, 1 s)
    write = [t for t, function in grid.heard if function == WRITE_REGISTER][0]
    read_back = [t for t, function in grid.heard if function == READ_HOLDING and t > write][0]
    polls = [t for t, _ in house.heard]
    assert not [t for t in polls if write - 0.9 < t < read_back + 0.9], (write, read_back)
    assert 'ERROR' not in rig.log()


@pytest.mark.pymodbus
def test_a_refused_address_change_changes_nothing(bus_of_two):
    rig, grid, house = bus_of_two
    with open(rig.map_path) as f:
        before = f.read()
    # refused by the port's service: taken by another meter, or by the map's pump
    assert request(rig, '/Meters/1/SetAddress', 2)[0] == 2
    assert action(rig)['Message'] == 'Address 2 is taken on ttyPZEM0 by PZEM-016 "House": ' \
        'pick a free one.'
    assert request(rig, '/Meters/1/SetAddress', 7)[0] == 2
    assert 'has a section for a meter at address 7' in action(rig)['Message']
    # refused by the meter itself
    grid.inject('exception', count=1, code=0x04, function=WRITE_REGISTER)
    assert request(rig, '/Meters/1/SetAddress', 9)[0] == 0
    result = wait_result(rig, 3)
    assert result['State'] == FAILED and result['Address'] == 1
    assert 'exception 4' in result['Message'], result
    assert grid.address == 1
    with open(rig.map_path) as f:
        assert f.read() == before
    assert rig.value(rig.service('grid', 1), '/CustomName') == 'Grid'
    rig.wait_polls(grid, 2)
    assert rig.value(PORT_SERVICE, '/Meters/1/State') == ANSWERING
    assert not rig.client.owner(rig.service('grid', 9))


def test_reset_energy_from_dbus_and_the_totals_keep_rising(tmp_path):
    grid = AcMeter(1, voltage=230.0, current=100.0, power=23000.0, power_factor=1.0,
                   energy_wh=5000)
    grid.accumulate = True          # 6.4 Wh a second
    rig = started_rig(tmp_path, [grid])
    try:
        service = rig.service('grid', 1)
        forward = rig.wait_value(service, '/Ac/Energy/Forward', lambda e: e >= 5.0)
        implausible = rig.value(service, '/Pzem/Errors/Implausible')
        assert request(rig, '/Meters/1/ResetEnergy', 1)[0] == 0
        result = wait_result(rig, 1)
        assert (result['Name'], result['State']) == ('reset-energy', DONE), result
        assert result['Message'].startswith("The meter's counter reads 0.0")
        assert result['Message'].endswith('; the published totals keep counting up.')
        assert grid.energy_wh < 100
        # the totals go on from where they were, rising with what the meter counts from 0
        after = rig.wait_value(service, '/Ac/Energy/Forward', lambda e: e > forward + 0.02)
        rig.wait_value(service, '/Ac/Energy/Forward', lambda e: e > after)
        assert rig.value(service, '/Pzem/Errors/Implausible') == implausible
        assert rig.value(service, '/Pzem/Errors/EnergyDropped') == 0

        # a reset the meter refuses changes nothing
        grid.inject('exception', count=1, code=0x04, function=0x42)
        counted = grid.energy_wh
        assert request(rig, '/Meters/1/ResetEnergy', 1)[0] == 0
        result = wait_result(rig, 2)
        assert result['State'] == FAILED and 'exception 4' in result['Message'], result
        assert grid.energy_wh >= counted
        rig.wait_value(service, '/Ac/Energy/Forward', lambda e: e > after + 0.01)
        assert rig.value(service, '/Pzem/Errors/Implausible') == implausible
    finally:
        rig.__exit__(None, None, None)


def test_a_search_finds_a_meter_at_any_address_and_can_be_stopped(tmp_path):
    far = DcMeter(30, voltage=13.2, current=5.0, power=66.0)
    rig = started_rig(tmp_path, [grid_meter(), far], extra=('--scan-timeout', '0.03'))
    try:
        assert rig.value(PORT_SERVICE, '/Scan') == 0        # scan = no: none in the background
        assert request(rig, '/Scan', 1)[0] == 0
        assert action(rig)['State'] == RUNNING
        rig.wait_value(PORT_SERVICE, '/Scan', lambda v: v == 1)
        rig.wait_value(PORT_SERVICE, '/ScanProgress', lambda p: p != INVALID and p > 0)
        rig.wait_service(rig.service('dcsource', 30), timeout=20.0)
        rig.wait_value(PORT_SERVICE, '/Meters/30/State', lambda s: s == ANSWERING)
        assert rig.value(PORT_SERVICE, '/Meters/30/Found') == 1
        assert rig.value(PORT_SERVICE, '/Meters/30/Model') == 'PZEM-017'
        assert request(rig, '/Meters/1/ResetEnergy', 1)[0] == 2     # one request at a time
        assert request(rig, '/Scan', 0)[0] == 0     # the running search ends, and says so
        result = wait_result(rig, 1)
        assert result['Name'] == 'search' and result['State'] == DONE
        assert result['Message'] == 'The search was stopped: found 1 new meter(s), at address 30.'
        assert rig.value(PORT_SERVICE, '/Scan') == 0
        assert rig.value(PORT_SERVICE, '/ScanProgress') == INVALID
        with open(rig.map_path) as f:
            assert '[ttyPZEM0:30]\nrole = dcsource\n' in f.read()
    finally:
        rig.__exit__(None, None, None)


def test_pinning_a_pseudo_terminal_is_refused_with_why(bus_of_two):
    rig, grid, house = bus_of_two
    assert request(rig, '/Pinned', 1)[0] == 2
    result = action(rig)
    assert result['Name'] == 'pin' and result['State'] == FAILED
    assert result['Message'].startswith('ttyPZEM0 is a pseudo-terminal (/dev/pts/')
    assert result['Message'].endswith('not a USB adapter: only USB adapters can be pinned.')


def test_pin_and_unpin_a_usb_adapter(tmp_path):
    root = tmp_path / 'root'
    (root / 'data' / 'conf').mkdir(parents=True)
    props = tmp_path / 'udev.properties'
    props.write_text('ID_BUS=usb\nID_SERIAL_SHORT=A50285BI\n')
    env = {'PKG_ROOT': str(root), 'PZEM_UDEV_PROPERTIES': str(props)}
    rig = started_rig(tmp_path, [grid_meter()], env=env)
    try:
        rules = root / 'data' / 'conf' / 'pzem-udev.rules'
        installed = root / 'etc' / 'udev' / 'rules.d' / 'zz-pzem.rules'
        assert rig.value(PORT_SERVICE, '/Pinned') == 0
        assert request(rig, '/Pinned', 1)[0] == 0
        result = wait_result(rig, 1)
        assert result['State'] == DONE, result
        assert result['Message'].startswith('Pinned ttyPZEM0 (ID_SERIAL_SHORT=A50285BI) to the '
                                            'pzem driver in %s' % rules)
        assert 'ENV{ID_SERIAL_SHORT}=="A50285BI", ENV{VE_SERVICE}="pzem"' in rules.read_text()
        assert installed.read_text() == rules.read_text()   # the installer's pins step ran
        assert rig.value(PORT_SERVICE, '/Pinned') == 1
        assert request(rig, '/Pinned', 0)[0] == 0
        result = wait_result(rig, 2)
        assert result['Message'] == 'Unpinned ttyPZEM0: its rule is removed from %s.' % rules
        assert rig.value(PORT_SERVICE, '/Pinned') == 0
        assert 'A50285BI' not in rules.read_text()
    finally:
        rig.__exit__(None, None, None)


def test_the_port_service_goes_with_the_driver(bus_of_two):
    rig, grid, house = bus_of_two
    assert rig.stop_driver() == 0
    rig.wait_gone(PORT_SERVICE)
    assert 'ERROR' not in rig.log()
    assert os.path.exists(rig.map_path)
