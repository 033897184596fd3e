"""Three PZEM-016 published as one three-phase meter (and two as a split-phase one)."""
import dbus
import pytest

from driver_rig import Rig
from pzemsim import AcMeter

GROUP_MAP = """\
# three phases of the house supply
[4]
group = house
phase = L1
role = grid
name = House supply
[5]
group = house   # middle meter
phase = L2
[6]
group = house
phase = L3
"""


def phase_meters():
    return [AcMeter(4, voltage=230.0, current=2.0, power=400.2, energy_wh=1000,
                    power_factor=0.87),
            AcMeter(5, voltage=231.0, current=1.0, power=231.0, energy_wh=2000,
                    power_factor=1.0),
            AcMeter(6, voltage=229.0, current=3.0, power=618.3, energy_wh=3500,
                    power_factor=0.9)]


def invalid(value):
    return isinstance(value, dbus.Array) and len(value) == 0


@pytest.fixture
def rig(tmp_path):
    with Rig(tmp_path, phase_meters(), GROUP_MAP) as r:
        r.start_driver()
        name = r.wait_service(r.service('grid', 4))
        r.wait_value(name, '/Ac/Power', lambda v: not invalid(v))
        r.wait_started()
        r.group = name
        yield r


def test_one_service_with_phases_and_totals(rig):
    items = rig.items(rig.group)
    v = {path: item['Value'] for path, item in items.items()}
    assert v['/NrOfPhases'] == 3
    assert v['/CustomName'] == 'House supply'
    assert v['/ProductName'] == 'PZEM-016 3-phase'
    assert v['/Mgmt/Connection'] == 'Modbus RTU ttyPZEM0:4,5,6'
    assert v['/Ac/L1/Power'] == pytest.approx(400.2)
    assert v['/Ac/L2/Power'] == pytest.approx(231.0)
    assert v['/Ac/L3/Power'] == pytest.approx(618.3)
    assert v['/Ac/L2/Voltage'] == pytest.approx(231.0)
    assert v['/Ac/L3/Current'] == pytest.approx(3.0)
    assert v['/Ac/Power'] == pytest.approx(400.2 + 231.0 + 618.3)
    assert v['/Ac/Energy/Forward'] == pytest.approx(6.5)
    assert v['/Ac/L3/Energy/Forward'] == pytest.approx(3.5)
    names = [str(n) for n in rig.client.bus.list_names()]
    assert not any(n.endswith('pzem_ttyPZEM0_5') or n.endswith('pzem_ttyPZEM0_6') for n in names)


def test_totals_always_match_the_phases_in_the_same_signal(rig):
    for m in rig.meters.values():
        m.accumulate = True
    rig.client.sync(rig.group)
    rig.signals.clear()
    for step in range(8):
        for i, m in enumerate(rig.meters.values()):
            watts = 100.0 * (step + 1) * (i + 1)
            m.set(power=watts, current=round(watts / m.voltage, 3), power_factor=1.0)
        rig.pump(0.25)
    rig.client.sync(rig.group)
    published = {}
    signals = rig.signals.signals(rig.group, 'ItemsChanged')
    assert len(signals) >= 4
    requests = sum(m.stats['requests'] for m in rig.meters.values())
    for _, _, _, payload in signals:
        published.update({str(p): item['Value'] for p, item in payload.items()})
        if '/Ac/Power' in payload and not invalid(payload['/Ac/Power']['Value']):
            phases = sum(published['/Ac/L%d/Power' % n] for n in (1, 2, 3))
            assert payload['/Ac/Power']['Value'] == pytest.approx(phases)
    # one ItemsChanged per group poll: three requests (one per phase) per signal at most
    assert len(signals) <= requests / 3 + 1


def test_a_silent_phase_invalidates_that_phase_and_the_totals(rig):
    rig.meters[5].inject('silent')
    rig.wait_value(rig.group, '/Ac/L2/Power', invalid, timeout=8.0)
    items = rig.items(rig.group)
    assert invalid(items['/Ac/Power']['Value'])
    # energy totals are the driver's own: the silent phase counted nothing that is known yet
    assert not invalid(items['/Ac/Energy/Forward']['Value'])
    assert items['/Ac/L1/Power']['Value'] == pytest.approx(400.2)
    assert items['/Ac/L3/Power']['Value'] == pytest.approx(618.3)
    assert items['/Connected']['Value'] == 1       # the other phases still answer
    # the log says which phase, not the whole group
    assert 'WARNING ttyPZEM0:5 (L2 of 4,5,6): not answering (' in rig.log()
    assert 'ttyPZEM0:4,5,6: not answering' not in rig.log()
    rig.meters[5].clear_faults()
    rig.wait_value(rig.group, '/Ac/Power', lambda v: v == pytest.approx(1249.5), timeout=4.0)


def test_all_phases_silent_disconnects_the_group(rig):
    for m in rig.meters.values():
        m.inject('silent')
    rig.wait_value(rig.group, '/Connected', lambda v: v == 0, timeout=8.0)


def test_role_and_name_changes_apply_to_the_group_and_all_its_sections(rig):
    assert rig.client.set_value(rig.group, '/CustomName', 'Whole house') == 0
    assert rig.client.set_value(rig.group, '/Role', 'acload') == 0
    rig.wait_gone(rig.group)
    acload = rig.wait_service(rig.service('acload', 4))
    assert rig.value(acload, '/NrOfPhases') == 3
    assert rig.value(acload, '/CustomName') == 'Whole house'
    with open(rig.map_path) as f:
        text = f.read()
    sections = text.split('[')[1:]
    assert len(sections) == 3
    for section in sections:
        assert 'role = acload' in section
        assert 'role = grid' not in section
    assert 'group = house   # middle meter' in text
    assert text.startswith('# three phases of the house supply\n[4]\n')
    assert rig.client.set_value(acload, '/Role', 'dcload') == 2


def test_split_phase_with_two_meters(tmp_path):
    text = '[4]\ngroup = split\nphase = L1\n[5]\ngroup = split\nphase = L2\n'
    with Rig(tmp_path, phase_meters()[:2], text) as rig:
        rig.start_driver()
        # no role given: a group nobody gave a role is published as acload, never grid
        name = rig.wait_service(rig.service('acload', 4))
        rig.wait_value(name, '/Ac/Power', lambda v: v == pytest.approx(631.2))
        items = rig.items(name)
        assert items['/NrOfPhases']['Value'] == 2
        assert '/Ac/L3/Power' not in items


@pytest.mark.parametrize('text,message', [
    ('[4]\ngroup = g\nphase = L1\n[5]\ngroup = g\nphase = L1\n', 'pzem.conf:6'),
    ('[4]\ngroup = g\nphase = L1\n[5]\ngroup = g\nphase = L2\nmodel = PZEM-017\n', 'pzem.conf:7'),
    ('[ttyPZEM0:4]\ngroup = g\nphase = L1\n[ttyOther:5]\ngroup = g\nphase = L2\n', 'pzem.conf:'),
])
def test_group_mistakes_are_reported_with_their_line(tmp_path, text, message):
    with Rig(tmp_path, phase_meters(), text + '[6]\nrole = acload\n') as rig:
        rig.start_driver()
        rig.wait_service(rig.service('acload', 6))
        log = rig.log()
        assert 'ERROR map: ' in log and message in log, log
