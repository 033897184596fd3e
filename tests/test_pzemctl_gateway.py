"""pzemctl through an RS-485 network gateway (issue 25), both kinds: a tcp:// or mbtcp:// URL, or a
gateway's name from the map, in place of the tty. pzemctl runs as a real subprocess against the
simulator's network front; with the driver running on the gateway, pzemctl borrows the gateway
from its service dbus-pzem.NAME (svc -d, then svc -u: a stand-in svc first in PATH)."""
import os
import re
import stat
import subprocess
import sys

import pytest

from ctl_helpers import PZEMCTL, Ctl, one_sentence
from gateway_fixtures import GatewayRig, gateway  # noqa: F401 (pytest fixture)
from pzemsim import AcMeter, DcMeter

KINDS = ('tcp', 'mbtcp')
TIMEOUT = ('--timeout', '0.3')
FAST = ('--scan-timeout', '0.15') + TIMEOUT     # a gateway's thread and loopback in between


@pytest.fixture
def ctl(tmp_path):
    ctl = Ctl(tmp_path, port='garage-wire')
    yield ctl
    ctl.stop()


def declare(ctl, front, more=''):
    ctl.write_map('[gateway:garage]\nhost = 127.0.0.1\nport = %d\nkind = %s\n\n%s' % (
        front.port, front.kind, more))


@pytest.mark.parametrize('kind', KINDS)
def test_scan_by_url_and_by_name(ctl, gateway, kind):
    ctl.start(AcMeter(1, voltage=231.0), DcMeter(3, voltage=13.4))
    front = gateway(ctl.sim, kind)
    ctl.write_map('')
    done = ctl.run_raw(front.url, 'scan', '--addresses', '1-5', *FAST)
    assert done.returncode == 0, done.stderr
    port = 'gw_127_0_0_1_%d' % front.port       # not in the map: named by host and port
    assert re.search(r'^  1  PZEM-016  231\.0 V ', done.stdout, re.M), done.stdout
    assert re.search(r'^  3  PZEM-017  13\.40 V ', done.stdout, re.M), done.stdout
    assert '2 meter(s) on %s; addresses 1..5 scanned in ' % port in done.stdout

    declare(ctl, front)
    done = ctl.run_raw('garage', 'scan', '--addresses', '1-5', *FAST)
    assert done.returncode == 0, done.stderr
    assert '2 meter(s) on garage; addresses 1..5 scanned in ' in done.stdout


@pytest.mark.pymodbus
@pytest.mark.parametrize('kind', KINDS)
def test_set_address_moves_the_meter_and_its_section(ctl, gateway, kind):
    meters = [AcMeter(1), DcMeter(3)]
    ctl.start(*meters)
    front = gateway(ctl.sim, kind)
    declare(ctl, front, '[garage:3]\nrole = dcsource\nname = Wind\n')
    done = ctl.run_raw('garage', 'set-address', '4', '--from', '3', '--yes', *FAST)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        'the PZEM-017 on garage now answers at address 4 (was 3)',
        'the map %s follows it: [garage:3] is now [garage:4]' % ctl.map_path]
    assert meters[1].address == 4
    with open(ctl.map_path) as f:
        assert f.read().endswith('[garage:4]\nrole = dcsource\nname = Wind\n')


def test_info_reset_energy_and_monitor(ctl, gateway):
    meter = AcMeter(2, voltage=229.0, energy_wh=5000)
    ctl.start(meter)
    front = gateway(ctl.sim, 'mbtcp')
    declare(ctl, front, '[garage:2]\nrole = acload\nname = Pump\n')
    done = ctl.run_raw('garage', 'info', '2', *TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('PZEM-016 (AC) at address 2 on garage')
    done = ctl.run_raw('garage', 'reset-energy', '2', '--yes', *TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert meter.energy_wh == 0
    done = ctl.run_raw(front.url, 'monitor', '--count', '1', *TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert 'Pump' in done.stdout and '229.0' in done.stdout


def test_a_gateway_that_cannot_be_reached_is_one_sentence_and_exit_1(ctl, gateway):
    ctl.start(AcMeter(1))
    front = gateway(ctl.sim, 'tcp')
    declare(ctl, front)
    front.stop()
    done = ctl.run_raw('garage', 'scan', *FAST)
    assert done.returncode == 1
    assert one_sentence(done.stderr) == (
        'pzemctl: Gateway garage (127.0.0.1:%d) refuses connections: check its address and its '
        'TCP server port.' % front.port)


@pytest.mark.parametrize('args, code, says', [
    (('tcp://gw', 'scan'), 2, "give the gateway as tcp://HOST:PORT, the port 1..65535"),
    (('tcp://127.0.0.1:8899', 'pin'), 2, 'gw_127_0_0_1_8899 is a network gateway: there is no '
     'USB adapter to pin'),
])
def test_what_cannot_be_done_through_a_gateway(ctl, args, code, says):
    done = ctl.run_raw(*args)
    assert done.returncode == code, done.stderr
    assert says in one_sentence(done.stderr)


def stand_in_svc(tmp_path, driver):
    """A folder with an `svc` that stops the driver as `svc -d` does (SIGTERM) and notes each
    call, as daemontools would start the driver again on `svc -u`."""
    folder = tmp_path / 'bin'
    folder.mkdir()
    calls = tmp_path / 'svc.calls'
    svc = folder / 'svc'
    svc.write_text('#!/bin/sh\necho "$*" >> "%s"\n[ "$1" = -d ] && kill -TERM %d\nexit 0\n'
                   % (calls, driver.pid))
    svc.chmod(svc.stat().st_mode | stat.S_IXUSR)
    return str(folder), calls


@pytest.mark.pymodbus
@pytest.mark.parametrize('kind', KINDS)
def test_set_address_with_the_gateways_driver_running(tmp_path, kind):
    meters = [AcMeter(1), DcMeter(3, voltage=13.2)]
    with GatewayRig(tmp_path, meters, kind, '[garage:3]\nrole = dcsource\nname = Wind\n') as rig:
        rig.start_driver()
        rig.wait_started()              # its SIGTERM handler is in place from here on
        ctl = Ctl(tmp_path, port='unused')
        supervise = tmp_path / 'service' / 'dbus-pzem.garage' / 'supervise'
        supervise.mkdir(parents=True)
        (supervise / 'status').write_bytes(b'\0' * 12 + rig.driver.pid.to_bytes(4, 'little') +
                                           b'\0u')
        path, calls = stand_in_svc(tmp_path, rig.driver)
        done = subprocess.run(
            [sys.executable, PZEMCTL, 'garage', 'set-address', '4', '--from', '3', '--yes',
             '--config', rig.map_path] + list(FAST), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=60,
            env=dict(ctl.env, PATH=path + os.pathsep + os.environ['PATH']))
        assert done.returncode == 0, done.stderr
        service = str(tmp_path / 'service' / 'dbus-pzem.garage')
        assert calls.read_text() == '-d %s\n-u %s\n' % (service, service)
        assert 'garage is in use by service dbus-pzem.garage: stopping it with svc -d' in \
            done.stderr
        assert rig.stop_driver() == 0       # stopped by svc -d, cleanly
        rig.start_driver()                  # as daemontools does on svc -u
        wind = rig.wait_service(rig.service('dcsource', 4))
        rig.wait_value(wind, '/Connected', lambda v: v == 1)
        assert rig.value(wind, '/CustomName') == 'Wind'
        assert 'ERROR' not in rig.log(), rig.log()


def test_a_driver_on_the_gateway_that_no_service_runs_is_named_not_stopped(tmp_path):
    # a name of its own: status lists every dbus-pzem on the machine by its port
    with GatewayRig(tmp_path, [AcMeter(1)], 'tcp', '[shed:1]\nrole = grid\n', name='shed') as rig:
        rig.start_driver()
        rig.wait_started()
        ctl = Ctl(tmp_path, port='unused')
        done = ctl.run_raw(rig.gateway.url, 'scan', '--config', rig.map_path, *FAST)
        assert done.returncode == 1
        assert re.match(r'pzemctl: shed is in use by process %d \(dbus-pzem --config .* '
                        r'tcp://127\.0\.0\.1:%d\): stop it first \(a gateway serves one master '
                        r'at a time\)$' % (rig.driver.pid, rig.gateway.port),
                        one_sentence(done.stderr))
        assert rig.alive()
        # status names the driver's port as the driver does: by the gateway's name in its map
        done = ctl.run_pumping(rig.address, 'shed', 'status')
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0] == 'shed'
        assert lines[2].startswith('  process %d: ' % rig.driver.pid)
        assert lines[3].startswith('  com.victronenergy.grid.pzem_shed_1: grid, connected, ')
