"""The simulator's network front (pzemsim.gateway) through plain sockets: Modbus TCP and
transparent bytes exactly, several connections, delay, cut, stop and start on the same port,
unplug, its faults, and its command line."""

import errno
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from gateway_fixtures import gateway  # noqa: F401 (pytest fixture)
from sim_fixtures import sim_bus  # noqa: F401 (pytest fixture)
from pzemsim import AcMeter, DcMeter
from pzemsim.crc import crc_ok
from pzemsim.gateway import Gateway, reply_length

H = bytes.fromhex
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
READ_AC = H('01 04 00 00 00 0A 70 0D')
MBTCP_READ_AC = H('0001 0000 0006 01 04 0000 000A')


@pytest.fixture
def meters(sim_bus):
    return sim_bus(AcMeter(1, voltage=231.0, power=420.0), DcMeter(3, voltage=13.4))


@pytest.fixture
def connect():
    """connect(gateway or port, timeout=2.0) -> a plain socket to it, closed after the test."""
    made = []

    def open_socket(front, timeout=2.0):
        sock = socket.create_connection(('127.0.0.1', getattr(front, 'port', front)), timeout)
        made.append(sock)
        return sock

    yield open_socket
    for sock in made:
        sock.close()


def receive(sock, size):
    """Exactly `size` bytes (fewer only when the peer closed); socket.timeout after its timeout."""
    data = b''
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def mbap(transaction, unit, pdu):
    return (transaction.to_bytes(2, 'big') + b'\x00\x00' + (len(pdu) + 1).to_bytes(2, 'big') +
            bytes((unit,)) + pdu)


def round_trip(sock, request, size):
    started = time.monotonic()
    sock.sendall(request)
    reply = receive(sock, size)
    return reply, time.monotonic() - started


# -- Modbus TCP ---------------------------------------------------------------------------------

def test_modbus_tcp_request_and_reply_exactly(meters, gateway, connect):
    sock = connect(gateway(meters, 'mbtcp'))
    sock.sendall(MBTCP_READ_AC)
    reply = receive(sock, 29)
    registers = AcMeter(1, voltage=231.0, power=420.0).handle(READ_AC)
    assert reply == H('0001 0000 0017') + registers[:-2]        # unit id + PDU, no CRC


def test_modbus_tcp_answers_requests_in_order_and_to_each_connection(meters, gateway, connect):
    front = gateway(meters, 'mbtcp')
    first, second = connect(front), connect(front)
    first.sendall(mbap(7, 1, H('04 0000 000A')) + mbap(8, 3, H('04 0000 0008')))
    second.sendall(mbap(7, 3, H('04 0000 0008')))
    assert receive(first, 29)[:7] == H('0007 0000 0017 01')
    assert receive(first, 25)[:7] == H('0008 0000 0013 03')
    assert receive(second, 25)[:7] == H('0007 0000 0013 03')
    assert front.stats['requests'] == 3 and front.stats['replies'] == 3


def test_modbus_tcp_exception_11_when_the_meter_is_silent(meters, gateway, connect):
    front = gateway(meters, 'mbtcp')
    sock = connect(front)
    meters.meter(1).inject('silent', count=1)
    assert round_trip(sock, MBTCP_READ_AC, 9)[0] == H('0001 0000 0003 01 84 0B')
    meters.meter(1).inject('truncated', count=1)
    assert round_trip(sock, MBTCP_READ_AC, 9)[0] == H('0001 0000 0003 01 84 0B')
    assert front.stats['no_answer'] == 2
    assert len(round_trip(sock, MBTCP_READ_AC, 29)[0]) == 29


def test_modbus_tcp_exception_10_without_a_serial_port(tmp_path, gateway, connect):
    front = gateway(str(tmp_path / 'ttyNone'), 'mbtcp')
    assert round_trip(connect(front), MBTCP_READ_AC, 9)[0] == H('0001 0000 0003 01 84 0A')
    assert front.stats['no_path'] == 1


def test_modbus_tcp_gateway_hangs_up_on_what_is_not_modbus_tcp(meters, gateway, connect):
    front = gateway(meters, 'mbtcp')
    sock = connect(front)
    sock.sendall(b'GET / HTTP/1.0\r\n\r\n')
    assert sock.recv(64) == b''
    assert front.stats['bad_requests'] == 1


def test_the_wire_behind_keeps_its_own_time(sim_bus, gateway, connect):
    wire = sim_bus(AcMeter(1), wire_time=True)
    sock = connect(gateway(wire, 'mbtcp', rtu_timeout=1.0))
    reply, took = round_trip(sock, MBTCP_READ_AC, 29)
    assert len(reply) == 29
    assert took >= (8 + 25) * wire.char_time + wire.turnaround


# -- transparent --------------------------------------------------------------------------------

def test_transparent_bytes_pass_as_they_are_to_every_connection(meters, gateway, connect):
    front = gateway(meters, 'tcp')
    first, second = connect(front), connect(front)
    expected = AcMeter(1, voltage=231.0, power=420.0).handle(READ_AC)
    first.sendall(READ_AC)
    assert receive(first, 25) == expected
    assert receive(second, 25) == expected          # a gateway's TCP server sends to all
    second.sendall(READ_AC[:3])
    second.sendall(READ_AC[3:])                     # a request in pieces is one on the wire
    assert receive(second, 25) == expected
    assert front.connections == 2


def test_transparent_gateway_with_a_broken_meter(meters, gateway, connect):
    sock = connect(gateway(meters, 'tcp'))
    meters.meter(1).inject('garbage_before', count=1)
    reply = round_trip(sock, READ_AC, 27)[0]
    assert reply[:2] == b'\x00\xff' and crc_ok(reply[2:])


# -- what a network does ------------------------------------------------------------------------

@pytest.mark.parametrize('kind, request_, size', [('tcp', READ_AC, 25),
                                                   ('mbtcp', MBTCP_READ_AC, 29)])
def test_delay_is_added_to_each_round_trip_and_can_change(meters, gateway, connect, kind,
                                                          request_, size):
    front = gateway(meters, kind, delay=0.3)
    sock = connect(front)
    reply, took = round_trip(sock, request_, size)
    assert len(reply) == size and 0.3 <= took < 1.5
    front.delay = 0
    reply, took = round_trip(sock, request_, size)
    assert len(reply) == size and took < 0.3


@pytest.mark.parametrize('kind', ['tcp', 'mbtcp'])
def test_stop_refuses_and_start_serves_again_on_the_same_port(meters, gateway, connect, kind):
    front = gateway(meters, kind)
    port = front.port
    sock = connect(front)
    front.stop()
    assert sock.recv(64) == b''                     # its connection is closed
    with pytest.raises(ConnectionRefusedError):
        connect(port)
    front.start()
    assert front.port == port
    request, size = (READ_AC, 25) if kind == 'tcp' else (MBTCP_READ_AC, 29)
    assert len(round_trip(connect(port), request, size)[0]) == size


@pytest.mark.parametrize('kind', ['tcp', 'mbtcp'])
def test_cut_closes_the_open_connections_and_keeps_listening(meters, gateway, connect, kind):
    front = gateway(meters, kind)
    closed = connect(front)
    front.cut()
    assert closed.recv(64) == b''
    reset = connect(front)
    front.cut(reset=True)
    with pytest.raises(ConnectionResetError):
        reset.recv(64)
    assert front.stats['cuts'] == 2
    request, size = (READ_AC, 25) if kind == 'tcp' else (MBTCP_READ_AC, 29)
    assert len(round_trip(connect(front), request, size)[0]) == size


def test_unplugged_connect_times_out_open_connections_hear_nothing(meters, gateway, connect):
    front = gateway(meters, 'mbtcp')
    port = front.port
    stranded = connect(front, timeout=0.2)
    front.unplug()
    stranded.sendall(MBTCP_READ_AC)
    with pytest.raises(socket.timeout):
        stranded.recv(64)
    with pytest.raises(socket.timeout):
        connect(port, timeout=0.2)
    front.start()
    assert front.port == port
    with pytest.raises(ConnectionResetError):
        stranded.recv(64)                           # it restarted: the old connection is gone
    assert len(round_trip(connect(port), MBTCP_READ_AC, 29)[0]) == 29


# -- faults ---------------------------------------------------------------------------------

def test_faults_for_a_number_of_requests(meters, gateway, connect):
    front = gateway(meters, 'mbtcp')
    sock = connect(front)
    front.inject('wrong_transaction', count=1)
    assert round_trip(sock, MBTCP_READ_AC, 29)[0][:2] != H('0001')
    assert round_trip(sock, MBTCP_READ_AC, 29)[0][:2] == H('0001')
    front.inject('junk', count=1, data=b'nonsense')
    assert round_trip(sock, MBTCP_READ_AC, 8)[0] == b'nonsense'
    front.inject('mute')
    sock.sendall(MBTCP_READ_AC)
    sock.settimeout(0.2)
    with pytest.raises(socket.timeout):
        sock.recv(64)
    sock.settimeout(2.0)
    assert front.stats['mute'] == 1
    front.clear_faults()
    assert len(round_trip(sock, MBTCP_READ_AC, 29)[0]) == 29
    front.inject('drop', count=1)
    assert round_trip(sock, MBTCP_READ_AC, 29)[0] == b''
    assert front.stats['faults'] == 4


def test_bad_fault_requests_are_refused(meters):
    front = Gateway(meters, 'tcp')
    with pytest.raises(ValueError, match='unknown fault'):
        front.inject('silent')
    with pytest.raises(ValueError, match='takes no option'):
        front.inject('mute', data=b'x')
    with pytest.raises(ValueError, match='mbtcp'):
        front.inject('wrong_transaction')
    with pytest.raises(ValueError, match='kind'):
        Gateway(meters, 'udp')


@pytest.mark.parametrize('reply, length', [
    ('01', None), ('01 04', None), ('01 04 14', 25), ('01 03 02', 7), ('01 84', 5),
    ('01 06', 8), ('01 42', 4), ('01 41', None)])
def test_reply_length(reply, length):
    assert reply_length(H(reply)) == length


# -- command line ---------------------------------------------------------------------------

def start_pzemsim(*args, env=None):
    return subprocess.Popen([sys.executable, '-m', 'pzemsim'] + list(args), cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True)


def test_command_line_gateways(tmp_path, connect):
    process = start_pzemsim('--meter', '1:ac', '--meter', '3:dc', '--tcp', '0', '--mbtcp', '0',
                            '--delay', '0.005', '--link', str(tmp_path / 'ttyPZEM0'))
    try:
        lines = [process.stdout.readline() for _ in range(3)]
        assert lines[0].startswith('pzemsim: %s -> /dev/pts/' % (tmp_path / 'ttyPZEM0'))
        ports = {}
        for line in lines[1:]:
            match = re.match(r'pzemsim: (\w+)://127\.0\.0\.1:(\d+) \((.*)\): (.*); Ctrl-C stops$',
                             line.rstrip('\n'))
            assert match, line
            ports[match.group(1)] = int(match.group(2))
            assert '0.005 s added to each round trip' in match.group(3)
            assert match.group(4) == 'PZEM-016 at 1, PZEM-017 at 3'
        # both at once: each gateway has a wire of its own to the same meters
        tcp, mbtcp = connect(ports['tcp']), connect(ports['mbtcp'])
        tcp.sendall(READ_AC)
        mbtcp.sendall(mbap(1, 3, H('04 0000 0008')))
        assert crc_ok(receive(tcp, 25))
        assert receive(mbtcp, 25)[:9] == H('0001 0000 0013 03 04 10')
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert 'stopped' in out
    with pytest.raises(ConnectionRefusedError):
        connect(ports['tcp'])


def test_command_line_gateway_alone_and_its_private_wire_is_removed(tmp_path, connect):
    process = start_pzemsim('--meter', '1:ac', '--mbtcp', '0',
                            env=dict(os.environ, TMPDIR=str(tmp_path)))
    try:
        line = process.stdout.readline()
        port = int(re.match(r'pzemsim: mbtcp://127\.0\.0\.1:(\d+) ', line).group(1))
        assert len(round_trip(connect(port), MBTCP_READ_AC, 29)[0]) == 29
        (wires,) = os.listdir(str(tmp_path))
        assert os.listdir(str(tmp_path / wires)) == ['mbtcp']
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0 and out.endswith('pzemsim: stopped\n'), err
    assert os.listdir(str(tmp_path)) == []


def test_command_line_refuses_a_port_in_use_in_one_sentence(meters, gateway):
    taken = gateway(meters, 'tcp').port
    done = subprocess.run([sys.executable, '-m', 'pzemsim', '--meter', '1:ac', '--tcp',
                           str(taken)], cwd=ROOT, capture_output=True, universal_newlines=True,
                          timeout=30)
    assert done.returncode == 1
    assert done.stderr == 'pzemsim: cannot listen on 127.0.0.1:%d: %s\n' % (
        taken, os.strerror(errno.EADDRINUSE))


@pytest.mark.parametrize('args, says', [
    (['--meter', '1:ac'], 'give --link, or a gateway with --tcp or --mbtcp'),
    (['--meter', '1:ac', '--tcp', '70000'], 'expected a TCP port from 0'),
    (['--meter', '1:ac', '--tcp', '0', '--delay', 'x'], 'expected seconds'),
])
def test_command_line_refuses_bad_arguments(args, says):
    done = subprocess.run([sys.executable, '-m', 'pzemsim'] + args, cwd=ROOT,
                          capture_output=True, universal_newlines=True, timeout=30)
    assert done.returncode == 2 and says in done.stderr
