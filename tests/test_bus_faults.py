"""The driver on what a real RS-485 bus does (issue 21): late replies, noise, strays, gaps, a dead
meter. Every value published stays valid and right; a fault costs at most its own poll.

The simulator answers as the wire would (9600 baud, 80 ms turnaround); the driver runs with the
device's defaults (1 s interval, 0.5 s timeout) unless a test says otherwise.
"""
import contextlib
import os
import time

import dbus
import pytest

from driver_rig import Rig
from pzemsim import AcMeter, DcMeter

WIRE = {'wire_time': True, 'turnaround': 0.08}
DEVICE_DEFAULTS = ('--interval', '1.0', '--timeout', '0.5')
LATE = {'delay': 0.6}           # after the 0.5 s timeout: it lands in the next exchange


def meters():
    return [AcMeter(1, voltage=230.0, current=1.5, power=300.1, energy_wh=1234,
                    power_factor=0.87),
            AcMeter(2, voltage=228.8, current=10.0, power=2196.5, energy_wh=777777,
                    power_factor=0.96),
            DcMeter(3, voltage=26.4, current=20.0, power=528.0, energy_wh=31000)]


MAP = '[bus]\nscan = no\n[1]\nrole = grid\n[2]\nrole = acload\n[3]\nrole = dcsource\n'
SERVICES = {1: 'grid', 2: 'acload', 3: 'dcsource'}
TRUE = {
    1: {'/Connected': 1, '/Ac/L1/Voltage': 230.0, '/Ac/L1/Current': 1.5, '/Ac/L1/Power': 300.1,
        '/Ac/Power': 300.1, '/Ac/L1/PowerFactor': 0.87, '/Ac/Energy/Forward': 1.234,
        '/Ac/Frequency': 50.0},
    2: {'/Connected': 1, '/Ac/L1/Voltage': 228.8, '/Ac/L1/Current': 10.0,
        '/Ac/L1/Power': 2196.5, '/Ac/Power': 2196.5, '/Ac/Energy/Forward': 777.777},
    3: {'/Connected': 1, '/Dc/0/Voltage': 26.4, '/Dc/0/Current': 20.0, '/Dc/0/Power': 528.0,
        '/History/EnergyOut': 31.0},
}
ERRORS = ('NoReply', 'BadFrame', 'Exception', 'Implausible')


def invalid(value):
    return isinstance(value, dbus.Array) and len(value) == 0


def complete(items, address):
    """The paths of TRUE[address] that are not valid and right in `items`."""
    wrong = []
    for path, want in TRUE[address].items():
        value = items[path]['Value']
        if invalid(value) or value != pytest.approx(want):
            wrong.append((path, value))
    return wrong


def errors(rig, name):
    items = rig.items(name)
    return {kind: int(items['/Pzem/Errors/' + kind]['Value']) for kind in ERRORS}


def faulty_bus(folder):
    """A started rig (not entered: the caller does) with the three meters on a wire-time bus."""
    os.makedirs(folder, exist_ok=True)
    return Rig(folder, meters(), MAP, driver_args=DEVICE_DEFAULTS, sim_options=WIRE)


def started(rig):
    rig.start_driver()
    rig.names = {a: rig.wait_service(rig.service(role, a)) for a, role in SERVICES.items()}
    rig.wait_started()
    return rig


def soak(rigs, seconds, sample=0.5):
    """Sample every value of every meter of every rig every `sample` s for `seconds`; the
    samples that were not all valid and right: {rig key: [(address, [(path, value)])]}."""
    bad = {}
    samples = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        Rig.pump(sample)
        for key, rig in rigs.items():
            for address, name in rig.names.items():
                wrong = complete(rig.items(name), address)
                samples += 1
                if wrong:
                    bad.setdefault(key, []).append((address, wrong))
    assert samples >= len(rigs) * len(SERVICES) * seconds / sample * 0.8
    return bad


def test_meters_are_complete_at_registration(tmp_path):
    # The first GetItems a service answers already holds a reading: /Connected 1, every
    # measurement valid (a PZEM-017 too, which identification alone does not read).
    with Rig(tmp_path, meters(), MAP, driver_args=DEVICE_DEFAULTS, sim_options=WIRE) as rig:
        rig.start_driver()
        for address, role in SERVICES.items():
            name = rig.wait_service(rig.service(role, address))
            assert complete(rig.items(name), address) == []


def test_a_group_is_complete_at_registration(tmp_path):
    phases = [AcMeter(a, voltage=230.0 + a, current=2.0, power=2.0 * (230.0 + a) * 0.9,
                      energy_wh=1000 * a, power_factor=0.9) for a in (4, 5, 6)]
    text = '[bus]\nscan = no\n' + ''.join(
        '[%d]\nrole = grid\ngroup = house\nphase = L%d\n' % (a, a - 3) for a in (4, 5, 6))
    with Rig(tmp_path, phases, text, driver_args=DEVICE_DEFAULTS, sim_options=WIRE) as rig:
        rig.start_driver()
        name = rig.wait_service(rig.service('grid', 4))
        items = rig.items(name)
        assert items['/Connected']['Value'] == 1
        for n in (1, 2, 3):
            for path in ('/Ac/L%d/Voltage' % n, '/Ac/L%d/Power' % n, '/Ac/L%d/Current' % n):
                assert not invalid(items[path]['Value']), path
        for path in ('/Ac/Power', '/Ac/PowerFactor', '/Ac/Frequency', '/Ac/Energy/Forward'):
            assert not invalid(items[path]['Value']), path


@pytest.mark.parametrize('position', [0, 1, 2, 3])
def test_one_late_reply_costs_one_poll_of_the_meter_that_was_late(tmp_path, position):
    four = [AcMeter(a, voltage=230.0, current=1.0, power=207.0, energy_wh=100 * a,
                    power_factor=0.9) for a in (1, 2, 3, 4)]
    text = '[bus]\nscan = no\n' + ''.join('[%d]\nrole = acload\n' % a for a in (1, 2, 3, 4))
    with Rig(tmp_path, four, text, driver_args=('--interval', '0.4', '--timeout', '0.5'),
             sim_options=WIRE) as rig:
        rig.start_driver()
        names = [rig.wait_service(rig.service('acload', a)) for a in (1, 2, 3, 4)]
        rig.wait_started()
        late = four[position]
        late.inject('late', count=1, **LATE)
        rig.wait_polls(late, count=1)
        for meter in four:                      # a whole round after the late one
            rig.wait_polls(meter, count=2)
        for n, name in enumerate(names):
            counted = errors(rig, name)
            want = {kind: 0 for kind in ERRORS}
            if n == position:
                want['NoReply'] = 1
            assert counted == want, (n, counted)
            assert rig.value(name, '/Connected') == 1
        assert 'not answering' not in rig.log()


# the fault mixes of the minute-long soaks: each fault's share of the requests
SOAKS = {
    '8 % late replies': {'late': 0.08},
    '10 % bad CRC and 10 % silence': {'bad_crc': 0.1, 'no_reply': 0.1},
    'every fault at once': {'late': 0.05, 'bad_crc': 0.05, 'no_reply': 0.05, 'stray': 0.05,
                            'noise': 0.05, 'stretched': 0.05, 'previous': 0.05,
                            'garbage_before': 0.05, 'truncated': 0.05},
}


@pytest.mark.long
def test_a_minute_on_three_faulty_buses_every_value_stays_valid_and_right(tmp_path):
    # The three soaks run side by side, each bus with its own driver: one minute in all.
    with contextlib.ExitStack() as stack:
        rigs = {}
        for n, (mix, shares) in enumerate(SOAKS.items()):
            rigs[mix] = started(stack.enter_context(faulty_bus(str(tmp_path / str(n)))))
        for mix, shares in SOAKS.items():
            for meter in rigs[mix].meters.values():
                for kind, share in shares.items():
                    meter.inject(kind, share=share, **(LATE if kind == 'late' else {}))
        assert soak(rigs, 60.0) == {}
        for mix, shares in SOAKS.items():
            struck = sum(m.stats[kind] for m in rigs[mix].meters.values() for kind in shares)
            assert struck >= 0.5 * sum(shares.values()) * 150, mix   # the faults did happen
            assert 'not answering' not in rigs[mix].log(), mix


def test_a_dead_meter_is_invalid_within_6_s_and_back_at_its_first_answer(tmp_path):
    with faulty_bus(str(tmp_path)) as rig:
        started(rig)
        grid = rig.names[1]
        rig.meters[1].inject('dead', count=1, seconds=7.0)
        rig.wait_value(grid, '/Connected', lambda v: v == 0, timeout=10.0)
        # from the first request it left unanswered (the simulator's clock is this process's)
        assert time.monotonic() - rig.meters[1].dead_since < 6.0
        items = rig.items(grid)
        for path in ('/Ac/Power', '/Ac/L1/Voltage', '/Ac/L1/Current'):
            assert invalid(items[path]['Value']), path
        # the other meters keep their slots and their values meanwhile
        for address in (2, 3):
            assert complete(rig.items(rig.names[address]), address) == []
        rig.wait_value(grid, '/Connected', lambda v: v == 1, timeout=5.0)
        assert time.monotonic() - rig.meters[1].dead_since >= 7.0   # not before it answers
        assert complete(rig.items(grid), 1) == []
        line = [l for l in rig.log().splitlines() if 'ttyPZEM0:1: not answering (' in l]
        assert len(line) == 1
        # not before its last good reading is 5 s old, as the driver's own clock measured
        assert float(line[0].split(' polls missed in ')[1].split(' s')[0]) >= 5.0
