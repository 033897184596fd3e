"""The real driver on the meters behind an RS-485 network gateway (issue 25), both kinds: the
simulator's network front on 127.0.0.1, a private dbus-daemon, the localsettings stand-in and
`dbus-pzem --config MAP tcp://...` or `mbtcp://...` as a subprocess. Everything the driver does on a
tty works through a gateway; a gateway that is gone, refuses, stops answering, is slow or garbles
never ends the driver, never puts a wrong value on D-Bus, and its meters are back within a poll
of the gateway answering again."""
import re
import subprocess
import sys
import time

import dbus
import pytest

from driver_rig import DRIVER
from gateway_fixtures import GatewayRig
from pzemsim import AcMeter, DcMeter

KINDS = ('tcp', 'mbtcp')
INVALID_WITHIN = 10.0       # seconds: the bound for a meter of a gateway that went away

MAP = """\
[garage:1]
role = grid
sign = vebus
name = Grid
[3]
role = dcsource
monitor_mode = wind
[11]
group = house
phase = L1
role = acload
name = House
[12]
group = house
phase = L2
"""


def invalid(value):
    return isinstance(value, dbus.Array) and len(value) == 0


def read_time(rig, service, path='/Ac/Power'):
    """Seconds a GetValue takes: the driver's main loop must answer while the gateway is away."""
    started = time.monotonic()
    rig.value(service, path)
    return time.monotonic() - started


def published(rig, service, path):
    """The values of `path` in the ItemsChanged signals since the recorder was last cleared."""
    rig.client.sync(service)
    return [payload[path]['Value'] for _, _, _, payload in rig.signals.signals(
        service, 'ItemsChanged') if path in payload]


def lines(rig, text):
    return [line for line in rig.log().splitlines() if text in line]


@pytest.mark.parametrize('kind', KINDS)
def test_meters_behind_a_gateway_as_on_a_tty(tmp_path, kind):
    meters = [AcMeter(1, voltage=231.0, current=2.0, power=420.0, power_factor=0.91,
                      energy_wh=12345), DcMeter(3, voltage=13.4, current=5.0, power=67.0),
              AcMeter(11), AcMeter(12), AcMeter(5)]
    with GatewayRig(tmp_path, meters, kind, MAP) as rig:
        rig.start_vebus(power=(-420.0,))       # the Multi feeds back
        rig.start_driver()
        rig.wait_started()
        grid = rig.wait_service(rig.service('grid', 1))
        assert rig.value(grid, '/Mgmt/Connection') == 'Modbus RTU garage:1'
        assert rig.value(grid, '/CustomName') == 'Grid'
        rig.wait_value(grid, '/Ac/Power', lambda v: v == -420.0)       # sign = vebus
        assert rig.value(grid, '/Ac/L1/Voltage') == 231.0
        assert rig.value(grid, '/Ac/Energy/Forward') == 12.345          # the driver's own total
        wind = rig.wait_service(rig.service('dcsource', 3))             # a plain [3] applies
        assert rig.value(wind, '/Settings/MonitorMode') == -8
        assert rig.value(wind, '/Dc/0/Voltage') == 13.4
        house = rig.wait_service(rig.service('acload', 11))             # a group
        assert rig.value(house, '/NrOfPhases') == 2
        assert rig.value(house, '/Mgmt/Connection') == 'Modbus RTU garage:11,12'

        # Discovery: meter 5 is found and written into the map under the gateway's name ...
        found = rig.wait_service(rig.service('acload', 5))
        with open(rig.map_path) as f:
            assert re.search(r'\n\[garage:5\]\nrole = acload\n', f.read())
        # ... and a role given in the GUI goes there too.
        assert rig.client.set_value(found, '/Role', 'heatpump') == 0
        heatpump = rig.wait_service(rig.service('heatpump', 5))
        rig.wait_value(heatpump, '/Connected', lambda v: v == 1)
        with open(rig.map_path) as f:
            assert re.search(r'\n\[garage:5\]\nrole = heatpump\n', f.read())

        # The error tallies: a broken reply is dropped and counted (a Modbus TCP gateway checks
        # the CRC itself and answers "no answer", exception 11).
        rig.meters[3].inject('bad_crc', count=1)
        path = '/Pzem/Errors/BadFrame' if kind == 'tcp' else '/Pzem/Errors/NoReply'
        rig.wait_value(wind, path, lambda v: v == 1)
        assert rig.value(wind, '/Dc/0/Voltage') == 13.4

        log = rig.log()
        banner = log.splitlines()[0]
        if kind == 'tcp':
            assert banner.startswith('INFO dbus-pzem %s on garage: transparent gateway '
                                     'tcp://127.0.0.1:%d, 9600 baud 8N2 behind it, poll every '
                                     '0.2s, map ' % (banner.split()[2], rig.gateway.port))
        else:
            assert banner.startswith('INFO dbus-pzem %s on garage: Modbus TCP gateway '
                                     'mbtcp://127.0.0.1:%d, poll every 0.2s, map ' % (
                                         banner.split()[2], rig.gateway.port))
        assert 'INFO connected to gateway garage (127.0.0.1:%d)' % rig.gateway.port in log
        assert 'ERROR' not in log and 'WARNING' not in log, log
        assert rig.alive()


def test_a_gateway_the_map_does_not_name_gets_a_port_name_of_its_host_and_port(tmp_path):
    with GatewayRig(tmp_path, [AcMeter(1)], 'tcp', declare=False) as rig:
        rig.start_driver()
        port = 'gw_127_0_0_1_%d' % rig.gateway.port
        rig.wait_service('com.victronenergy.acload.pzem_%s_1' % port)
        with open(rig.map_path) as f:
            assert '\n[%s:1]\nrole = acload\n' % port in f.read()


@pytest.mark.parametrize('kind', KINDS)
def test_a_gateway_gone_and_back(tmp_path, kind):
    with GatewayRig(tmp_path, [AcMeter(1), AcMeter(2)], kind, '[1]\nrole = grid\n') as rig:
        rig.start_driver()
        rig.wait_started()
        grid, load = rig.service('grid', 1), rig.service('acload', 2)
        rig.wait_value(load, '/Connected', lambda v: v == 1)
        rig.gateway.stop()
        gone = time.monotonic()
        for service in (grid, load):
            rig.wait_value(service, '/Connected', lambda v: v == 0, timeout=INVALID_WITHIN)
        assert time.monotonic() - gone < INVALID_WITHIN
        assert invalid(rig.value(grid, '/Ac/Power'))
        assert rig.value(grid, '/Ac/Energy/Forward') is not None    # the totals stay
        assert max(read_time(rig, grid) for _ in range(5)) < 0.5
        assert rig.alive()

        rig.gateway.start()                     # the same port
        back = time.monotonic()
        for service in (grid, load):
            rig.wait_value(service, '/Connected', lambda v: v == 1, timeout=15.0)
        # connected at the next attempt (2, 4, 8 s apart here), then at once
        assert time.monotonic() - back < 9.0
        port = rig.gateway.port
        assert lines(rig, 'garage (127.0.0.1:%d) closed the connection' % port) == [
            'ERROR Gateway garage (127.0.0.1:%d) closed the connection. Connecting again every '
            'few seconds (at least once a minute); its meters are invalid meanwhile.' % port]
        assert lines(rig, 'refuses connections') == [
            'ERROR Gateway garage (127.0.0.1:%d) refuses connections: check its address and its '
            'TCP server port. Connecting again every few seconds (at least once a minute); its '
            'meters are invalid meanwhile.' % port]
        assert len(lines(rig, 'INFO connected to gateway garage (127.0.0.1:%d) again, after '
                          % port)) == 1
        assert rig.alive()


def test_a_gateway_that_refuses_at_start(tmp_path):
    """The driver stays, says why once, and publishes the map's meters once it can connect."""
    with GatewayRig(tmp_path, [AcMeter(1)], 'mbtcp', '[garage:1]\nrole = grid\n') as rig:
        rig.gateway.stop()
        rig.start_driver()
        rig.wait_log('so it stays and keeps looking')
        assert lines(rig, 'refuses connections') == [
            'ERROR Gateway garage (127.0.0.1:%d) refuses connections: check its address and its '
            'TCP server port. Connecting again every few seconds (at least once a minute); its '
            'meters are invalid meanwhile.' % rig.gateway.port]
        assert lines(rig, 'no PZEM meter answered') == [
            "WARNING no PZEM meter answered on garage yet; a gateway's driver runs as a service "
            "of its own, which would only start it again, so it stays and keeps looking"]
        assert not lines(rig, 'garage:1')       # not "does not answer": it was never asked
        rig.gateway.start()
        grid = rig.wait_service(rig.service('grid', 1), timeout=12.0)
        rig.wait_value(grid, '/Connected', lambda v: v == 1)
        assert rig.alive()


def test_a_name_that_does_not_resolve(tmp_path):
    """The driver stays and says so once; it never asks anything while not connected."""
    with GatewayRig(tmp_path, [AcMeter(1)], 'tcp', '[garage:1]\nrole = grid\n') as rig:
        with open(rig.map_path, 'w') as f:
            f.write(rig.section(host='no-such-gateway.invalid') + '[garage:1]\nrole = grid\n')
        rig.start_driver(tty='tcp://no-such-gateway.invalid:%d' % rig.gateway.port)
        rig.wait_log('so it stays and keeps looking')
        [line] = lines(rig, 'does not resolve')
        assert line.startswith('ERROR Gateway garage (no-such-gateway.invalid:%d): the name '
                               'no-such-gateway.invalid does not resolve (' % rig.gateway.port)
        assert rig.alive()


def test_a_bad_gateway_address_on_the_command_line_is_exit_3():
    done = subprocess.run([sys.executable, DRIVER, 'tcp://gw'], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=30)
    assert done.returncode == 3
    assert "dbus-pzem: 'tcp://gw': give the gateway as tcp://HOST:PORT, the port " \
           "1..65535" in done.stderr


@pytest.mark.parametrize('kind', KINDS)
def test_a_gateway_that_stops_answering(tmp_path, kind):
    """Off the network: the open connection hears nothing, a new one is not answered."""
    with GatewayRig(tmp_path, [AcMeter(1), AcMeter(2)], kind, '[1]\nrole = grid\n') as rig:
        rig.start_driver()
        rig.wait_started()
        grid, load = rig.service('grid', 1), rig.service('acload', 2)
        rig.wait_value(load, '/Connected', lambda v: v == 1)
        rig.gateway.unplug()
        gone = time.monotonic()
        for service in (grid, load):
            rig.wait_value(service, '/Connected', lambda v: v == 0, timeout=INVALID_WITHIN)
        assert time.monotonic() - gone < INVALID_WITHIN
        port = rig.gateway.port
        if kind == 'mbtcp':     # a Modbus TCP gateway answers every request: it hangs
            rig.wait_log('stopped answering')
            # ... and connecting again is not answered either (3 s, in a thread of its own)
            rig.wait_log('does not answer within 3 s', timeout=8.0)
        else:                   # silence behind a transparent one: the gateway or the meters
            rig.wait_log('nothing has come through gateway garage (127.0.0.1:%d) for ' % port)
        assert max(read_time(rig, grid) for _ in range(10)) < 0.5
        assert invalid(rig.value(grid, '/Ac/Power'))

        rig.gateway.start()         # back: the connections it had are reset
        for service in (grid, load):
            rig.wait_value(service, '/Connected', lambda v: v == 1, timeout=15.0)
        assert len(lines(rig, 'stopped answering') + lines(rig, 'nothing has come')) == 1
        assert rig.alive()


@pytest.mark.parametrize('kind', KINDS)
def test_a_gateway_that_garbles(tmp_path, kind):
    """Bytes that are not Modbus: never a value, never an exit; back once they are."""
    with GatewayRig(tmp_path, [AcMeter(1, voltage=231.0)], kind, '[1]\nrole = grid\n') as rig:
        rig.start_driver()
        rig.wait_started()
        grid = rig.service('grid', 1)
        rig.wait_value(grid, '/Connected', lambda v: v == 1)
        rig.client.sync(grid)
        rig.signals.clear()
        rig.gateway.inject('junk')              # every request answered with an HTTP error
        rig.wait_value(grid, '/Connected', lambda v: v == 0, timeout=INVALID_WITHIN)
        if kind == 'tcp':           # passed on as they came: the exchange finds no frame
            assert rig.value(grid, '/Pzem/Errors/BadFrame') > 0
        else:                       # not Modbus TCP: the stream cannot be followed
            [line] = lines(rig, 'not Modbus TCP')
            assert line == (
                "ERROR Gateway garage (127.0.0.1:%d) sent something that is not Modbus TCP "
                "(b'HTTP/1.1 400 Bad'): check the gateway's kind (mbtcp: Modbus TCP; tcp: RTU "
                "frames passed as they are) and its port. Connecting again every few seconds "
                "(at least once a minute); its meters are invalid meanwhile." % rig.gateway.port)
        rig.gateway.clear_faults()
        rig.wait_value(grid, '/Connected', lambda v: v == 1, timeout=15.0)
        voltages = published(rig, grid, '/Ac/L1/Voltage')
        assert voltages and all(v == 231.0 or invalid(v) for v in voltages), voltages
        assert rig.alive()


@pytest.mark.parametrize('kind', KINDS)
def test_a_slow_gateway(tmp_path, kind):
    """A round trip of 0.2 s is only slower (the first ask of a probe waits less: the meter is
    asked again with the full timeout). One longer than the timeout is no reply: the meter goes
    invalid, never shows an old value as new, and is back once the gateway is quick again."""
    with GatewayRig(tmp_path, [AcMeter(1, voltage=231.0)], kind, '[1]\nrole = grid\n',
                    gateway_options={'delay': 0.2},
                    driver_args=('--interval', '0.5', '--timeout', '0.5')) as rig:
        rig.start_driver()
        grid = rig.wait_service(rig.service('grid', 1))
        rig.wait_value(grid, '/Connected', lambda v: v == 1)
        try:
            rig.wait_polls(rig.meters[1], 4, timeout=10.0)
        except AssertionError:
            raise AssertionError(rig.log())
        assert rig.value(grid, '/Pzem/Errors/NoReply') == 0
        assert rig.value(grid, '/Ac/L1/Voltage') == 231.0
        if kind == 'tcp':
            return          # later still, a late reply may answer the same request again
        rig.gateway.delay = 0.8
        rig.wait_value(grid, '/Connected', lambda v: v == 0, timeout=INVALID_WITHIN)
        rig.client.sync(grid)
        rig.signals.clear()
        rig.meters[1].set(voltage=232.0)
        rig.gateway.delay = 0.0
        rig.wait_value(grid, '/Connected', lambda v: v == 1, timeout=5.0)
        voltages = published(rig, grid, '/Ac/L1/Voltage')
        assert voltages and all(v == 232.0 for v in voltages), voltages
        assert rig.alive()


def test_replies_with_another_transaction_id(tmp_path):
    """A Modbus TCP gateway that answers with the wrong transaction id: never taken for the
    answer; the meter goes invalid and the log says why in one line."""
    with GatewayRig(tmp_path, [AcMeter(1, voltage=231.0)], 'mbtcp', '[1]\nrole = grid\n') as rig:
        rig.start_driver()
        grid = rig.wait_service(rig.service('grid', 1))
        rig.wait_value(grid, '/Connected', lambda v: v == 1)
        rig.gateway.inject('wrong_transaction')
        # waited for longer than the bound, which the driver's own clock is held to: a loaded
        # machine may deliver the change late, not make the driver decide it late
        rig.wait_value(grid, '/Connected', lambda v: v == 0, timeout=2 * INVALID_WITHIN)
        [line] = lines(rig, 'garage:1: not answering')
        assert float(re.search(r'polls missed in ([\d.]+) s', line).group(1)) < INVALID_WITHIN
        assert re.search(r'last: No reply from meter 1 on garage within 0\.3 s: the gateway '
                         r'answered with Modbus TCP transaction id \d+ where \d+ was asked, and '
                         r'such a reply is dropped: a late answer to an earlier request \(a '
                         r'longer timeout may help\), or a gateway that mixes up transaction '
                         r'ids\.\)$', line), line
        rig.gateway.clear_faults()
        rig.wait_value(grid, '/Connected', lambda v: v == 1, timeout=5.0)
        assert rig.alive()
