"""Gateways in the meter map: `[gateway:NAME]` (host, port, kind), its meters in `[NAME:N]`, its
wire in `[bus:NAME]`; every problem named with file, line and key; and the installer's list
(python3 -m pzem.gateway_list)."""
import os
import subprocess
import sys

import pytest

from pzem import meter_map
from pzem.meter_map import GatewaySpec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GOOD = '''\
[gateway:garage]
host = ew11-garage.local
port = 8899
kind = tcp

[gateway:shed]          # a Modbus TCP gateway, on 502
host = 192.168.1.50
kind = mbtcp

[bus:garage]
stopbits = 1

[3]
role = dcsource

[garage:3]
role = pvinverter
position = 1
'''


def parse(text):
    return meter_map.parse(text, '/data/conf/pzem.conf')


def test_gateways_their_meters_and_their_wire():
    the_map = parse(GOOD)
    assert the_map.problems == []
    assert the_map.gateways() == [
        GatewaySpec('garage', 'tcp', 'ew11-garage.local', 8899, 1),
        GatewaySpec('shed', 'mbtcp', '192.168.1.50', 502, 6)]
    assert [g.url for g in the_map.gateways()] == ['tcp://ew11-garage.local:8899',
                                                   'mbtcp://192.168.1.50:502']
    (behind_garage,) = the_map.meters_for('garage')     # the gateway's name is its port name
    assert (behind_garage.role, behind_garage.position) == ('pvinverter', 1)
    assert the_map.meters_for('shed')[0].role == 'dcsource'
    assert the_map.meters_for('ttyUSB0')[0].role == 'dcsource'
    assert the_map.bus_options('garage') == {'stopbits': 1}
    assert the_map.bus_options('shed') == {}


@pytest.mark.parametrize('lines, kind, host, port', [
    (['kind = transparent', 'port = 23'], 'tcp', 'gw', 23),
    (['kind = Modbus-TCP'], 'mbtcp', 'gw', 502),
    (['kind = modbustcp', 'port = 5020'], 'mbtcp', 'gw', 5020),
])
def test_kind_spellings_and_the_modbus_tcp_port(lines, kind, host, port):
    (gateway,) = parse('[gateway:g]\nhost = gw\n' + '\n'.join(lines) + '\n').gateways()
    assert (gateway.kind, gateway.host, gateway.port) == (kind, host, port)


@pytest.mark.parametrize('host, url', [
    ('fe80::1', 'mbtcp://[fe80::1]:502'),
    ('[fe80::1]', 'mbtcp://[fe80::1]:502'),
    ('10.0.0.7', 'mbtcp://10.0.0.7:502'),
    ('gw.example.org.', 'mbtcp://gw.example.org.:502'),
    ('waveshare_eth', 'mbtcp://waveshare_eth:502'),
])
def test_hosts(host, url):
    (gateway,) = parse('[gateway:g]\nhost = %s\nkind = mbtcp\n' % host).gateways()
    assert gateway.url == url


HEADER_PROBLEMS = [
    ('[gateway]', "[gateway] a gateway section is [gateway:NAME], e.g. [gateway:garage]: the name "
                  "is its port name, as in [garage:3]; section ignored"),
    ('[gateway:ttyUSB9]', "[gateway:ttyUSB9] gateway name 'ttyUSB9' would be taken for a serial "
                          "port: choose another; section ignored"),
    ('[gateway:bus]', "[gateway:bus] gateway name 'bus' would be taken for a section kind: choose "
                      "another; section ignored"),
    ('[gateway:2nd]', "[gateway:2nd] gateway name '2nd': use up to 32 letters, digits, _ and -, "
                      "starting with a letter; section ignored"),
    ('[gateway:a.b]', "[gateway:a.b] gateway name 'a.b': use up to 32 letters, digits, _ and -, "
                      "starting with a letter; section ignored"),
    ('[gateway:%s]' % ('g' * 33), "gateway name '%s': use up to 32" % ('g' * 33)),
]


@pytest.mark.parametrize('header, says', HEADER_PROBLEMS)
def test_bad_gateway_headers(header, says):
    the_map = parse('%s\nhost = gw\nport = 8899\nkind = tcp\n[1]\nrole = grid\n' % header)
    (problem,) = the_map.problems
    assert problem.startswith('/data/conf/pzem.conf:1: ') and says in problem, problem
    assert the_map.gateways() == []
    assert the_map.meters_for('ttyUSB0')[0].role == 'grid'      # the rest of the map works


VALUE_PROBLEMS = [
    ('host = 192.168.1.50:8899', 'host', "give the port on a line of its own: port = 8899"),
    ('host = tcp://gw:8899', 'host', "give the gateway's host name or IP address only; its port "
                                     "goes in port =, tcp or mbtcp in kind ="),
    ('host = gw..local', 'host', "'gw..local' is not a host name or IP address"),
    ('host = fe80::1::2', 'host', "'fe80::1::2' is not an IPv6 address"),
    ('host = my gateway', 'host', "'my gateway' is not a host name or IP address"),
    ('port = 0', 'port', "'0' is not a TCP port (1..65535)"),
    ('port = 65536', 'port', "'65536' is not a TCP port (1..65535)"),
    ('port = http', 'port', "'http' is not a TCP port (1..65535)"),
    ('kind = udp', 'kind', "kind 'udp': use tcp (a transparent gateway: RTU frames pass as they "
                           "are) or mbtcp (Modbus TCP to RTU)"),
    ('kind =', 'kind', 'no value given'),
]


@pytest.mark.parametrize('line, key, says', VALUE_PROBLEMS)
def test_bad_gateway_values_name_file_line_and_key(line, key, says):
    text = '[gateway:g]\nhost = gw\nport = 8899\nkind = tcp\n'
    lines = [l for l in text.splitlines() if not l.startswith(key + ' ')] + [line]
    the_map = parse('\n'.join(lines) + '\n')
    assert the_map.problems == ["/data/conf/pzem.conf:4: [gateway:g] key '%s': %s; section "
                                "ignored" % (key, says)]
    assert the_map.gateways() == []
    assert ('gateway', 'g') in the_map.left_out


@pytest.mark.parametrize('text, says', [
    ('port = 8899\nkind = tcp', 'a gateway needs its host = NAME or IP address'),
    ('host = gw\nport = 8899', 'a gateway needs its kind = tcp (transparent: RTU frames pass as '
                               'they are) or mbtcp (Modbus TCP to RTU)'),
    ('host = gw\nkind = tcp', 'a transparent gateway needs its port = N (its TCP server port, '
                              'e.g. 8899 on an Elfin EW11)'),
])
def test_what_a_gateway_needs(text, says):
    the_map = parse('# gateways\n[gateway:g]\n%s\n' % text)
    assert the_map.problems == ['/data/conf/pzem.conf:2: [gateway:g] %s; section ignored' % says]
    assert the_map.gateways() == []


def test_unknown_keys_are_named_and_the_gateway_still_works():
    the_map = parse('[gateway:g]\nhost = gw\nkind = mbtcp\nrole = grid\nbaudrate = 9600\n')
    assert the_map.problems == [
        "/data/conf/pzem.conf:4: [gateway:g] key 'role': unknown key, ignored; gateway keys are "
        "host, port, kind",
        "/data/conf/pzem.conf:5: [gateway:g] key 'baudrate': unknown key, ignored; gateway keys "
        "are host, port, kind"]
    assert [g.name for g in the_map.gateways()] == ['g']


def test_one_host_and_port_one_gateway_one_name_one_section():
    the_map = parse('[gateway:a]\nhost = GW.local\nkind = mbtcp\n'
                    '[gateway:b]\nhost = gw.local\nport = 502\nkind = tcp\n'
                    '[gateway:a]\nhost = other\nkind = mbtcp\n'
                    '[gateway:c]\nhost = gw.local\nport = 503\nkind = mbtcp\n')
    assert the_map.problems == [
        '/data/conf/pzem.conf:4: [gateway:b] the same host and port as [gateway:a] on line 1; '
        'section ignored',
        '/data/conf/pzem.conf:8: [gateway:a] the same section as [gateway:a] on line 1; this one '
        'is ignored']
    assert [(g.name, g.port) for g in the_map.gateways()] == [('a', 502), ('c', 503)]


def test_the_example_map_shows_a_gateway_that_parses(tmp_path):
    """The commented example in the shipped map, with its '# ' taken away."""
    with open(os.path.join(ROOT, 'package', 'data', 'conf', 'pzem.conf')) as f:
        lines = f.read().splitlines()
    start = lines.index('# [gateway:garage]')
    block = []
    for line in lines[start:]:
        if not line.startswith('#'):
            break
        block.append(line[2:])
    the_map = parse('\n'.join(block) + '\n')
    assert the_map.problems == []
    assert [g.url for g in the_map.gateways()] == ['tcp://ew11-garage.local:8899']
    assert the_map.meters_for('garage')[0].role == 'pvinverter'


# -- python3 -m pzem.gateway_list: the installer's list ---------------------------------------------

def gateway_list(path):
    return subprocess.run([sys.executable, '-B', '-m', 'pzem.gateway_list', str(path)],
                          cwd=os.path.join(ROOT, 'package', 'opt', 'pzem'),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=30)


def test_gateway_list_prints_name_and_url_and_the_gateway_problems(tmp_path):
    path = tmp_path / 'pzem.conf'
    path.write_text(GOOD + '[gateway:broken]\nhost = gw:80\nkind = tcp\n[9]\nrole = nonsense\n')
    done = gateway_list(path)
    assert done.returncode == 0
    assert done.stdout == 'garage tcp://ew11-garage.local:8899\nshed mbtcp://192.168.1.50:502\n'
    assert done.stderr == ("%s:20: [gateway:broken] key 'host': give the port on a line of its "
                           "own: port = 80; section ignored\n" % path)


def test_gateway_list_of_no_map_is_empty(tmp_path):
    done = gateway_list(tmp_path / 'none.conf')
    assert (done.returncode, done.stdout, done.stderr) == (0, '', '')


def test_gateway_list_of_an_unreadable_map_fails_and_says_why(tmp_path):
    path = tmp_path / 'pzem.conf'
    path.write_bytes(GOOD.encode() + b'\x00')
    done = gateway_list(path)
    assert (done.returncode, done.stdout) == (1, '')
    assert 'binary data' in done.stderr and str(path) in done.stderr
