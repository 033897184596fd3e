"""set-address while the driver runs (issue 23): pzemctl borrows the port through a stand-in of
serial-starter's stop-tty.sh / start-tty.sh, moves the meter, the map follows it, and the real
driver, started again as serial-starter would, publishes the meter at its new address with what
its section says, without an ERROR in its log."""
import os
import pathlib
import stat
import subprocess
import sys

import pytest

from ctl_helpers import FAST, PZEMCTL, Ctl
from driver_rig import Rig
from pzemsim import AcMeter, DcMeter

pytestmark = pytest.mark.pymodbus

MAP = """\
# my bus
[ttyPZEM0:1]
role = grid
name = Grid
# ttyPZEM0:3: a PZEM-017 found on 2026-12-01 15:20 by dbus-pzem; no section named it.
# Its role steers nothing; set role, name and the rest here or in the Venus GUI.
[ttyPZEM0:3]
role = dcsource
monitor_mode = wind
name = Wind charger
[11]
group = house
phase = L1
role = acload
name = House
[12]
group = house
phase = L2
[13]
group = house
phase = L3
"""


def serial_starter(tmp_path, driver):
    """stop-tty.sh stops the driver as `svc -d` does (SIGTERM); start-tty.sh leaves a note that
    the test acts on, as serial-starter starts the driver again. Returns the note's path."""
    folder = pathlib.Path(tmp_path) / 'serial-starter'
    folder.mkdir(exist_ok=True)
    started = pathlib.Path(tmp_path) / 'start-tty.called'
    for name, action in (('stop-tty.sh', 'kill -TERM %d' % driver.pid),
                         ('start-tty.sh', 'echo "$1" > "%s"' % started)):
        script = folder / name
        script.write_text('#!/bin/sh\n%s\n' % action)
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return started


def set_address(rig, ctl, *args):
    """pzemctl set-address with the driver running; then serial-starter's part: the driver
    starts again on the port pzemctl handed back."""
    started = serial_starter(rig.tmp, rig.driver)
    done = subprocess.run([sys.executable, PZEMCTL, rig.link, 'set-address'] + list(args) +
                          ['--yes', '--config', rig.map_path] + list(FAST),
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, env=ctl.env,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert started.read_text() == 'ttyPZEM0\n'
    os.unlink(str(started))
    rig.stop_driver()           # stopped by stop-tty.sh already: reaped here
    rig.start_driver()
    return done


def test_set_address_with_the_driver_running(tmp_path):
    meters = [AcMeter(1), DcMeter(3, voltage=13.2, current=5.0, power=66.0, energy_wh=500),
              AcMeter(11), AcMeter(12), AcMeter(13)]
    with Rig(tmp_path, meters, MAP) as rig:
        ctl = Ctl(tmp_path, port='ttyPZEM0')     # pzemctl's stand-in folders
        rig.start_driver()
        rig.wait_service(rig.service('dcsource', 3))
        rig.wait_service(rig.service('acload', 11))

        driver = rig.driver.pid
        done = set_address(rig, ctl, '4', '--from', '3')
        assert done.stdout.splitlines() == [
            'the PZEM-017 on ttyPZEM0 now answers at address 4 (was 3)',
            'the map %s follows it: [ttyPZEM0:3] is now [ttyPZEM0:4]' % rig.map_path]
        # The driver's whole command line, its --config too, names it as the port's holder.
        assert 'ttyPZEM0 is in use by process %d (dbus-pzem --config %s --interval' % (
            driver, rig.map_path) in done.stderr
        with open(rig.map_path) as f:
            assert f.read() == MAP.replace('[ttyPZEM0:3]', '[ttyPZEM0:4]')
        wind = rig.wait_service(rig.service('dcsource', 4))
        rig.wait_value(wind, '/Connected', lambda v: v == 1)
        assert rig.value(wind, '/CustomName') == 'Wind charger'
        assert rig.value(wind, '/Settings/MonitorMode') == -8
        assert not rig.client.owner(rig.service('dcsource', 3))

        # A group member: the group keeps its phase at the member's new address.
        set_address(rig, ctl, '14', '--from', '12')
        with open(rig.map_path) as f:
            assert f.read() == MAP.replace('[ttyPZEM0:3]', '[ttyPZEM0:4]').replace('[12]',
                                                                                  '[14]')
        house = rig.wait_service(rig.service('acload', 11))
        rig.wait_value(house, '/Mgmt/Connection', lambda v: v == 'Modbus RTU ttyPZEM0:11,14,13')
        rig.wait_value(house, '/Connected', lambda v: v == 1)
        assert rig.value(house, '/CustomName') == 'House'
        rig.wait_service(rig.service('dcsource', 4))

        assert 'ERROR' not in rig.log(), rig.log()
        assert [m.address for m in meters] == [1, 4, 11, 14, 13]

