"""The driver under faults, one at a time and mixed: what it publishes stays true."""
import os
import random
import subprocess

import dbus
import pytest

from driver_rig import Rig
from pzemsim import AcMeter, DcMeter

MAP = '[1]\nrole = grid\n[2]\nrole = acload\n[3]\nrole = dcsystem\n'
REPLY_FAULTS = ['no_reply', 'junk_values', 'wrong_address', 'bad_crc', 'truncated',
                'garbage_before', 'exception']


def truth():
    return {1: AcMeter(1, voltage=230.0, current=1.5, power=300.1, energy_wh=1234,
                       power_factor=0.87),
            2: AcMeter(2, voltage=228.8, current=10.0, power=2196.5, energy_wh=777777,
                       power_factor=0.96),
            3: DcMeter(3, voltage=26.4, current=20.0, power=528.0, energy_wh=31000)}


# what each meter's service may show: its truth, or invalid
TRUE_VALUES = {
    1: {'/Ac/L1/Voltage': 230.0, '/Ac/L1/Current': 1.5, '/Ac/L1/Power': 300.1,
        '/Ac/Power': 300.1, '/Ac/Energy/Forward': 1.234, '/Ac/L1/Energy/Forward': 1.234,
        '/Ac/L1/PowerFactor': 0.87, '/Ac/PowerFactor': 0.87},
    2: {'/Ac/L1/Voltage': 228.8, '/Ac/L1/Current': 10.0, '/Ac/L1/Power': 2196.5,
        '/Ac/Power': 2196.5, '/Ac/Energy/Forward': 777.777},
    3: {'/Dc/0/Voltage': 26.4, '/Dc/0/Current': 20.0, '/Dc/0/Power': 528.0,
        '/History/EnergyIn': 31.0},
}
SERVICES = {1: 'grid', 2: 'acload', 3: 'dcsystem'}


def is_invalid(value):
    return isinstance(value, dbus.Array) and len(value) == 0


@pytest.mark.long
def test_mixed_faults_never_publish_a_wrong_value(tmp_path):
    meters = truth()
    rng = random.Random(20261128)
    with Rig(tmp_path, list(meters.values()), MAP) as rig:
        rig.start_driver()
        names = {a: rig.wait_service(rig.service(role, a)) for a, role in SERVICES.items()}
        for name in names.values():
            rig.wait_value(name, '/Connected', lambda v: v == 1)
        rig.signals.clear()
        for _ in range(40):
            address = rng.choice(list(meters))
            kind = rng.choice(REPLY_FAULTS + ['silent'])
            meters[address].inject(kind, count=rng.randint(1, 6) if kind != 'silent' else None)
            rig.pump(rng.uniform(0.05, 0.4))
            if kind == 'silent' and rng.random() < 0.7:
                rig.pump(rng.uniform(0.3, 1.2))
                meters[address].clear_faults('silent')
        for m in meters.values():
            m.clear_faults()
        # A meter silent for less than 5 s is still valid (its last reading stands) and may go
        # invalid just after: every meter answers a few times first, then all are valid.
        for m in meters.values():
            rig.wait_polls(m, count=3)
        for name in names.values():
            rig.wait_value(name, '/Connected', lambda v: v == 1, timeout=5.0)
            rig.client.sync(name)
        assert rig.driver.poll() is None, rig.log()

        transitions = 0
        for address, name in names.items():
            connected = 1
            for _, _, member, payload in rig.signals.signals(name, 'ItemsChanged'):
                for path, item in payload.items():
                    value = item['Value']
                    if path == '/Connected':
                        if connected == 1 and value == 0:
                            transitions += 1
                        connected = value
                    elif path in TRUE_VALUES[address] and not is_invalid(value):
                        assert value == pytest.approx(TRUE_VALUES[address][path]), (path, value)
            for path, want in TRUE_VALUES[address].items():
                assert rig.value(name, path) == pytest.approx(want), path
        log = rig.log()
        # one line per state change, none per dropped frame
        assert log.count(': not answering (') == transitions
        assert log.count(': answering again') == transitions
        assert 'Traceback' not in log


@pytest.fixture
def full_tmpfs(tmp_path):
    """A tiny file system for the map, so that writing it fails part-way (ENOSPC)."""
    mount_point = str(tmp_path / 'conf')
    os.mkdir(mount_point)
    if subprocess.call(['mount', '-t', 'tmpfs', '-o', 'size=16k', 'tmpfs', mount_point],
                       stderr=subprocess.DEVNULL) != 0:
        pytest.skip('cannot mount a tmpfs here (needs root)')
    try:
        yield mount_point
    finally:
        subprocess.call(['umount', mount_point])


def test_a_map_write_that_fails_halfway_keeps_the_old_file(tmp_path, full_tmpfs):
    map_path = os.path.join(full_tmpfs, 'pzem.conf')
    original = '# my map\n[1]\nrole = grid   # AC-in\nname = Grid\n' + '# padding\n' * 200
    with Rig(tmp_path, [truth()[1]], None) as rig:
        rig.map_path = map_path
        with open(map_path, 'w') as f:
            f.write(original)
        fd = os.open(os.path.join(full_tmpfs, 'filler'), os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b'x' * 512):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        rig.start_driver()
        grid = rig.wait_service(rig.service('grid', 1))
        assert rig.client.set_value(grid, '/CustomName', 'A new and longer name') == 2
        assert rig.client.set_value(grid, '/Role', 'acload') == 2
        assert rig.value(grid, '/CustomName') == 'Grid'
        assert rig.client.owner(grid)
        with open(map_path) as f:
            assert f.read() == original
        assert [n for n in os.listdir(full_tmpfs) if n not in ('pzem.conf', 'filler')] == []
        assert 'the map could not be written' in rig.log()
