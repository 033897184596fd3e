"""address_change.change_address, the one implementation of set-address (pzemctl, and the
driver for the GUI): the simulated bus on a pty, a real map file, and the map writer as the
driver itself calls it to add a section for a meter it finds."""
import os
import re

import pytest

from pzem import address_change, map_update, meter_map
from pzemsim import AcMeter, DcMeter
from sim_fixtures import modbus_bus, sim_bus  # noqa: F401 (pytest fixtures)

pytestmark = pytest.mark.pymodbus     # the address write goes through pymodbus


def no_sleep(seconds):
    """The pause between read backs (a fake clock: the suite does not wait)."""


@pytest.fixture
def rig(sim_bus, modbus_bus, tmp_path):  # noqa: F811
    """rig(map text, *meters) -> (sim, an open Bus on its port, its port name, the map path)."""
    def start(text, *meters):
        sim = sim_bus(*meters)
        path = tmp_path / 'pzem.conf'
        if text is not None:
            path.write_text(text)
        return sim, modbus_bus(sim), 'ttyPZEM0', str(path)
    return start


def writes_to(meter, then=None):
    """The address writes (FC 0x06) the meter receives; then() runs once each is done."""
    handle, seen = meter.handle, []

    def handled(request):
        reply = handle(request)
        if request[1] == 0x06:
            seen.append(bytes(request))
            if then is not None:
                then()
        return reply
    meter.handle = handled
    return seen


def driver_adds_a_section(path, port, address, model):
    """What the running driver does when it finds a meter no section names (driver.found)."""
    map_update.update_many(path, {'%s:%d' % (port, address): {'role': 'dcsource'}}, {
        '%s:%d' % (port, address): ['%s:%d: a %s found on 2026-12-01 15:20 by dbus-pzem; no '
                                    'section named it.' % (port, address, model),
                                    'Its role steers nothing; set role, name and the rest here '
                                    'or in the Venus GUI.']})


WIND = """\
# the wind charger
[ttyPZEM0:3]
role = dcsource
monitor_mode = wind
name = Wind charger
"""


def test_the_section_follows_the_meter_and_a_section_the_driver_added_meanwhile_goes(rig):
    meter = DcMeter(3)
    sim, bus, port, path = rig(WIND, meter)
    # The race of issue 23: the driver finds the meter at its new address right after the
    # write and appends [ttyPZEM0:4] before the map follows the meter.
    writes = writes_to(meter, then=lambda: driver_adds_a_section(path, port, 4, 'PZEM-017'))
    change = address_change.change_address(bus, port, 3, 4, path, sleep=no_sleep)
    assert (meter.address, len(writes)) == (4, 1)
    assert change == address_change.AddressChange(
        port, 3, 4, change.model, path, ('ttyPZEM0:3', 'ttyPZEM0:4'), None)
    assert change.model.name == 'PZEM-017'
    with open(path) as f:
        assert f.read() == WIND.replace('[ttyPZEM0:3]', '[ttyPZEM0:4]')
    spec, = meter_map.load(path).meters_for(port)
    assert (spec.address, spec.role, spec.monitor_mode, spec.name) == (4, 'dcsource', -8,
                                                                     'Wind charger')
    # The driver, still with its old map, finds it again: its section stays as it is.
    driver_adds_a_section(path, port, 4, 'PZEM-017')
    with open(path) as f:
        assert f.read() == WIND.replace('[ttyPZEM0:3]', '[ttyPZEM0:4]')


HOUSE = """\
[11]
group = house
phase = L1
role = grid
name = House
[12]        # L2's meter
group = house
phase = L2
[13]
group = house
phase = L3
"""


def test_a_group_member_moves_with_its_group_and_phase(rig):
    meters = [AcMeter(11), AcMeter(12), AcMeter(13)]
    sim, bus, port, path = rig(HOUSE, *meters)
    change = address_change.change_address(bus, port, 12, 14, path, sleep=no_sleep)
    assert change.moved == ('12', '14')
    with open(path) as f:
        assert f.read() == HOUSE.replace('[12]', '[14]')
    house, = meter_map.load(path).meters_for(port)
    assert (house.group, house.phases, house.role, house.name) == (
        'house', (('L1', 11), ('L2', 14), ('L3', 13)), 'grid', 'House')
    # and back: the plain section stays plain, so the group stays on one port
    address_change.change_address(bus, port, 14, 12, path, sleep=no_sleep)
    with open(path) as f:
        assert f.read() == HOUSE


@pytest.mark.parametrize('there', ['[4]\nrole = grid\n', '[ttyPZEM0:4]\nrole = dcsource\n'])
def test_a_section_for_another_meter_at_the_new_address_is_refused_before_writing(rig, there):
    text = WIND + there
    meter = DcMeter(3)
    sim, bus, port, path = rig(text, meter)
    writes = writes_to(meter)
    with pytest.raises(address_change.SectionTaken) as refused:
        address_change.change_address(bus, port, 3, 4, path, sleep=no_sleep)
    header = there[1:there.index(']')]
    assert str(refused.value) == (
        'the map %s has a section [%s] (line 6) for a meter at address 4 on ttyPZEM0: another '
        'meter\'s, which may be off now; pick another address, or remove that section first'
        % (path, header))
    assert (meter.address, writes) == (3, [])
    with open(path) as f:
        assert f.read() == text


def test_an_address_in_use_on_the_bus_is_refused_before_writing(rig):
    meter = DcMeter(3)
    sim, bus, port, path = rig(WIND, meter, AcMeter(4))
    writes = writes_to(meter)
    with pytest.raises(address_change.AddressTaken, match='address 4 is already in use on '
                                                          'ttyPZEM0'):
        address_change.change_address(bus, port, 3, 4, path, sleep=no_sleep)
    assert (meter.address, writes) == (3, [])


def test_approve_sees_the_plan_and_may_cancel_before_writing(rig):
    meter = DcMeter(3)
    sim, bus, port, path = rig(WIND, meter)
    writes = writes_to(meter)
    plans = []
    with pytest.raises(address_change.Cancelled, match='nothing was written'):
        address_change.change_address(bus, port, 3, 4, path,
                                      approve=lambda plan: plans.append(plan) and False)
    assert [p.moved for p in plans] == [('ttyPZEM0:3', 'ttyPZEM0:4')]
    assert (meter.address, writes) == (3, [])


def test_a_meter_no_section_names_gets_one_as_the_driver_would_add_it(rig):
    meter = AcMeter(1)
    sim, bus, port, path = rig('[bus]\nscan = no\n', meter)
    change = address_change.change_address(bus, port, 1, 20, path, sleep=no_sleep)
    assert (change.moved, change.added) == (None, 'ttyPZEM0:20')
    with open(path) as f:
        text = f.read()
    assert re.match(r'\[bus\]\nscan = no\n\n# ttyPZEM0:20: a PZEM-016 moved here from address 1 '
                    r'on \d{4}-\d\d-\d\d \d\d:\d\d; no section named it\.\n# Its role steers '
                    r'nothing; set role, name and the rest here or in the Venus GUI\.\n'
                    r'\[ttyPZEM0:20\]\nrole = acload\n$', text), text


def test_without_a_map_only_the_meter_changes(rig):
    meter = AcMeter(1)
    sim, bus, port, path = rig(None, meter)
    change = address_change.change_address(bus, port, 1, 2, None, sleep=no_sleep)
    assert (meter.address, change.moved, change.added) == (2, None, None)
    assert not os.path.exists(path)


def test_the_same_address_changes_nothing(rig):
    meter = DcMeter(3)
    sim, bus, port, path = rig(WIND, meter)
    writes = writes_to(meter)
    change = address_change.change_address(bus, port, 3, 3, path)
    assert (change.moved, change.added, writes) == (None, None, [])


def test_a_map_that_cannot_be_read_is_refused_before_writing(rig, tmp_path):
    meter = DcMeter(3)
    sim, bus, port, path = rig(None, meter)
    with open(path, 'wb') as f:
        f.write(b'[ttyPZEM0:3]\nname = Caf\xe9\n')
    writes = writes_to(meter)
    with pytest.raises(address_change.Refused) as refused:
        address_change.change_address(bus, port, 3, 4, path)
    assert str(refused.value) == ('the map cannot follow the meter: %s:2: not UTF-8 text (byte '
                                  '0xe9); the map is not used' % path)
    assert (meter.address, writes) == (3, [])


def test_a_map_that_cannot_be_written_says_the_meter_moved_and_what_to_do(rig):
    meter = DcMeter(3)
    sim, bus, port, path = rig(WIND, meter)

    def spoil():    # someone saves the map in another encoding while the meter moves
        with open(path, 'wb') as f:
            f.write(WIND.replace('Wind charger', 'Windmühle').encode('latin-1'))
    writes_to(meter, then=spoil)
    with pytest.raises(address_change.AddressChangeError) as failed:
        address_change.change_address(bus, port, 3, 4, path, sleep=no_sleep)
    assert failed.value.written and meter.address == 4
    assert str(failed.value) == (
        'the PZEM-017 on ttyPZEM0 now answers at address 4 (was 3), but the map %s could not '
        'follow it (%s:5: not UTF-8 text (byte 0xfc); not changing it): in the map, rename '
        '[ttyPZEM0:3] to [ttyPZEM0:4] by hand' % (path, path))


def test_addresses_out_of_range_are_refused(rig):
    sim, bus, port, path = rig(WIND, DcMeter(3))
    with pytest.raises(address_change.Refused, match='address 248 is out of range: meters take '
                                                     '1..247'):
        address_change.change_address(bus, port, 3, 248, path)
