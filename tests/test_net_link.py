"""The network links (pzem.net_link) through the simulator's network front on 127.0.0.1: real
sockets, the simulated meters behind a transparent and a Modbus TCP gateway, and what a network
does wrong: a refused or timed-out connect, a name that does not resolve, a dropped connection, a
peer that does not speak Modbus, replies with another transaction id."""

import os
import re
import socket
import threading
import time

import pytest

from gateway_fixtures import ask, gateway, net_link, receive_reply, wait_readable  # noqa: F401
from sim_fixtures import exchange, raw_port, sim_bus  # noqa: F401 (pytest fixtures)
from pzem.modbus import Bus
from pzem.net_link import (KEEPALIVE, USER_TIMEOUT, ModbusTcpLink, NotModbus, TcpLink,
                           default_name, link_for, parse_url, same_gateway)
from pzem.rtu import ANSWER, BadFrame, NoReply, PortGone, failure, find_reply, request_frame


def check_reply(request, data, count):
    """The registers of the answer to `request` in `data`, as the exchange judges it."""
    found = find_reply(request, count, data)
    if found.outcome == ANSWER:
        return found.value
    raise failure(request, count, data, found, 'the gateway')
from pzemsim import AcMeter, DcMeter
from pzemsim.gateway import Gateway

READ_AC = request_frame(1, 0x04, 0, 10)
READ_DC = request_frame(3, 0x04, 0, 8)
KINDS = ('tcp', 'mbtcp')


@pytest.fixture
def meters(sim_bus):
    return sim_bus(AcMeter(1, voltage=231.0, power=420.0), DcMeter(3, voltage=13.4))


# -- names ------------------------------------------------------------------------------------

def test_names_for_messages_services_and_sections():
    named = TcpLink('ew11-garage.local', 8899, name='garage')
    assert (named.name, named.where) == ('garage', 'gateway garage (ew11-garage.local:8899)')
    assert named.url == 'tcp://ew11-garage.local:8899'
    unnamed = ModbusTcpLink('EW11-Garage.local', 502)
    assert unnamed.name == 'gw_ew11_garage_local_502' == default_name('ew11-garage.local', 502)
    assert unnamed.where == 'gateway EW11-Garage.local:502'
    assert ModbusTcpLink('fe80::1', 502).where == 'gateway [fe80::1]:502'
    assert default_name('192.168.1.50', 8899) == 'gw_192_168_1_50_8899'


def test_char_time_is_the_wire_behind_a_transparent_gateway_and_none_for_modbus_tcp():
    assert TcpLink('h', 1).char_time == pytest.approx(11 / 9600.0)               # 8N2
    assert TcpLink('h', 1, stopbits=1, parity='E', baudrate=19200).char_time == \
        pytest.approx(11 / 19200.0)
    assert ModbusTcpLink('h', 1, baudrate=9600).char_time == 0


@pytest.mark.parametrize('url, parsed', [
    ('tcp://ew11-garage.local:8899', ('tcp', 'ew11-garage.local', 8899)),
    ('mbtcp://192.168.1.50:502', ('mbtcp', '192.168.1.50', 502)),
    ('mbtcp://[fe80::1]:502', ('mbtcp', 'fe80::1', 502)),
    ('tcp://gw:8899/', ('tcp', 'gw', 8899)),
])
def test_gateway_urls(url, parsed):
    assert parse_url(url) == parsed
    link = link_for(url, name='x')
    assert (link.kind, link.host, link.port, link.name) == parsed + ('x',)


def test_the_same_gateway_is_its_host_and_port_whatever_the_kind_or_case():
    assert same_gateway('tcp://EW11-Garage.local:8899', 'mbtcp://ew11-garage.local:8899/')
    assert same_gateway('mbtcp://[fe80::1]:502', 'mbtcp://[FE80::1]:502')
    assert not same_gateway('tcp://gw:8899', 'tcp://gw:502')
    assert not same_gateway('tcp://gw:8899', 'ttyUSB0')


@pytest.mark.parametrize('url, says', [
    ('http://gw:80', 'tcp://HOST:PORT for a transparent'),
    ('ttyUSB0', 'no gateway address'),
    ('tcp://gw', 'tcp://HOST:PORT, the port 1..65535'),
    ('mbtcp://gw:70000', 'the port 1..65535'),
    ('tcp://fe80::1:502', 'in brackets'),
    ('tcp://%s:502' % ('a' * 64), 'is no host name'),
    ('mbtcp://gw..local:502', 'is no host name'),
])
def test_bad_gateway_urls_get_one_sentence(url, says):
    with pytest.raises(ValueError) as error:
        parse_url(url)
    assert says in str(error.value)


# -- meters through both kinds ----------------------------------------------------------------

def test_both_kinds_hand_on_the_bytes_the_meter_put_on_the_wire(meters, raw_port, gateway,
                                                                  net_link):
    port = raw_port(meters)
    on_the_wire = exchange(port, READ_AC, 25)
    port.close()                                    # the gateway is the only one on the wire
    for kind in KINDS:
        front = gateway(meters, kind)
        link = net_link(front)
        assert ask(link, READ_AC, 25) == on_the_wire, kind
        assert check_reply(READ_AC, on_the_wire, 10)[0] == 2310
        assert check_reply(READ_DC, ask(link, READ_DC, 21), 8)[0] == 1340
        front.stop()                                # one master on the wire at a time


@pytest.mark.parametrize('kind', KINDS)
def test_many_requests_in_a_row(meters, gateway, net_link, kind):
    link = net_link(gateway(meters, kind))
    for n in range(20):
        request = READ_AC if n % 2 else READ_DC
        assert check_reply(request, ask(link, request, 25 if n % 2 else 21),
                           10 if n % 2 else 8)


def test_modbus_tcp_gateway_says_when_the_meter_does_not_answer(meters, gateway, net_link):
    link = net_link(gateway(meters, 'mbtcp'))
    reply = ask(link, request_frame(9, 0x04, 0, 10), 5)
    assert reply[1:3] == bytes((0x84, 11))          # the gateway's exception, as an RTU frame
    with pytest.raises(NoReply, match=r'the gateway says the meter did not answer \(exception '
                       r'11\)'):
        check_reply(request_frame(9, 0x04, 0, 10), reply, 10)
    meters.meter(1).inject('bad_crc', count=1)      # a gateway checks the CRC: no good answer
    with pytest.raises(NoReply, match='exception 11'):
        check_reply(READ_AC, ask(link, READ_AC, 5), 10)
    assert check_reply(READ_AC, ask(link, READ_AC, 25), 10)


def test_modbus_tcp_gateway_without_its_serial_port_says_path_unavailable(meters, gateway,
                                                                          net_link):
    link = net_link(gateway(meters.link + '-not-there', 'mbtcp'))
    with pytest.raises(NoReply, match=r'exception 10, path unavailable'):
        check_reply(READ_AC, ask(link, READ_AC, 5), 10)


def test_a_transparent_gateway_passes_what_the_wire_carries_garbled_too(meters, gateway,
                                                                        net_link):
    link = net_link(gateway(meters, 'tcp'))
    meters.meter(1).inject('bad_crc', count=1)
    with pytest.raises(BadFrame):
        check_reply(READ_AC, ask(link, READ_AC, 25), 10)


# -- what a network does wrong ----------------------------------------------------------------

@pytest.mark.parametrize('kind', KINDS)
def test_refused(meters, gateway, net_link, kind):
    front = gateway(meters, kind)
    front.stop()
    link = net_link(front, open=False, name='garage')
    with pytest.raises(PortGone) as error:
        link.open()
    assert str(error.value) == ('Gateway garage (127.0.0.1:%d) refuses connections: check its '
                                'address and its TCP server port.' % front.port)
    front.start()                                   # back on the same port
    link.open()
    assert check_reply(READ_AC, ask(link, READ_AC, 25), 10)


def test_connect_times_out(meters, gateway, net_link):
    front = gateway(meters, 'mbtcp')
    front.unplug()
    link = net_link(front, open=False, name='garage', connect_timeout=0.2)
    started = time.monotonic()
    with pytest.raises(PortGone) as error:
        link.open()
    assert 0.15 < time.monotonic() - started < 1.5
    assert str(error.value) == ('Gateway garage (127.0.0.1:%d) does not answer within 0.2 s: '
                                'check that it is powered and on the network, and its address.'
                                % front.port)
    front.start()
    link.open()
    assert check_reply(READ_AC, ask(link, READ_AC, 25), 10)


def test_a_host_no_resolver_could_take_is_a_name_that_does_not_resolve():
    with pytest.raises(PortGone, match=r'^Gateway garage \(gw\.\.local:8899\): the name '
                       r'gw\.\.local does not resolve \(not a host name\)'):
        TcpLink('gw..local', 8899, name='garage').open()


def test_a_name_that_does_not_resolve():
    link = TcpLink('no-such-gateway.invalid', 8899, name='garage')
    with pytest.raises(PortGone) as error:
        link.open()
    message = str(error.value)
    assert message.startswith('Gateway garage (no-such-gateway.invalid:8899): the name '
                              'no-such-gateway.invalid does not resolve (')
    assert message.endswith("): check the host in the meter map and the GX's network settings "
                            "(DNS).")


class SlowResolver(TcpLink):
    """A link whose name lookup takes as long as the test wants: a stand-in for a DNS server that
    does not answer (getaddrinfo itself has no timeout, and none of this machine's names hangs)."""

    release = None      # set by the test: the lookup returns once this event is set
    lookups = 0

    @staticmethod
    def _getaddrinfo(host, port, *args):
        if len(args) == 4 and args[3] & socket.AI_NUMERICHOST:
            return socket.getaddrinfo(host, port, *args)    # an address, or gaierror at once
        SlowResolver.lookups += 1
        SlowResolver.release.wait()
        return socket.getaddrinfo('127.0.0.1', port, 0, socket.SOCK_STREAM)


def test_a_name_lookup_is_bounded_by_the_connect_timeout(meters, gateway):
    front = gateway(meters, 'tcp')
    SlowResolver.release, SlowResolver.lookups = threading.Event(), 0
    link = SlowResolver('ew11-garage.local', front.port, name='garage', connect_timeout=0.2)
    try:
        for _ in range(2):      # the second open waits for the same lookup, starts no other
            started = time.monotonic()
            with pytest.raises(PortGone) as error:
                link.open()
            assert 0.15 < time.monotonic() - started < 1.0
        assert SlowResolver.lookups == 1
        assert str(error.value) == (
            "Gateway garage (ew11-garage.local:%d): the name ew11-garage.local was not resolved "
            "within 0.2 s: check the GX's network settings (DNS), or give the gateway's IP "
            "address in the meter map." % front.port)
        SlowResolver.release.set()
        link.open()
        assert check_reply(READ_AC, ask(link, READ_AC, 25), 10)[0] == 2310
    finally:
        SlowResolver.release.set()
        link.close()


def test_an_ip_address_is_not_looked_up(meters, gateway):
    front = gateway(meters, 'tcp')
    SlowResolver.release, SlowResolver.lookups = threading.Event(), 0
    link = SlowResolver('127.0.0.1', front.port)
    try:
        link.open()
        assert SlowResolver.lookups == 0
    finally:
        link.close()


@pytest.mark.parametrize('kind', KINDS)
def test_a_dead_peer_ends_the_connection_instead_of_hanging_it(meters, gateway, net_link, kind):
    """TCP itself gives up on a gateway gone from the network: after USER_TIMEOUT s without an
    acknowledgement while a request waits, and by keepalive probes while none does."""
    sock = net_link(gateway(meters, kind))._sock
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == USER_TIMEOUT * 1000
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert (sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)) == KEEPALIVE
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


@pytest.mark.parametrize('kind', KINDS)
def test_lost_closes_and_says_why_in_one_sentence(meters, gateway, net_link, kind):
    front = gateway(meters, kind)
    link = net_link(front, name='garage')
    assert not link.vanished()
    front.cut()
    assert wait_readable(link)
    with pytest.raises(OSError) as error:
        link.receive()
    gone = link.lost(error.value)
    assert isinstance(gone, PortGone)
    assert str(gone) == 'Gateway garage (127.0.0.1:%d) closed the connection.' % front.port
    with pytest.raises(OSError):
        link.fileno()                               # closed
    assert str(link.lost(None)) == ('Gateway garage (127.0.0.1:%d): the connection was lost.'
                                    % front.port)


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('reset', [False, True], ids=['closed', 'reset'])
def test_a_dropped_connection_raises_oserror_and_can_be_opened_again(meters, gateway, net_link,
                                                                       kind, reset):
    front = gateway(meters, kind)
    link = net_link(front, name='garage')
    assert check_reply(READ_AC, ask(link, READ_AC, 25), 10)
    front.cut(reset=reset)
    assert wait_readable(link)
    with pytest.raises(OSError) as error:
        link.receive()
    assert 'gateway garage (127.0.0.1:%d)' % front.port in error.value.strerror
    link.close()
    link.open()
    assert check_reply(READ_AC, ask(link, READ_AC, 25), 10)


@pytest.mark.parametrize('kind', KINDS)
def test_a_gateway_that_drops_the_connection_on_a_request(meters, gateway, net_link, kind):
    front = gateway(meters, kind)
    link = net_link(front)
    front.inject('drop', count=1)
    with pytest.raises(OSError):
        ask(link, READ_AC, 25)


@pytest.mark.parametrize('kind', KINDS)
def test_a_hung_gateway_gives_nothing(meters, gateway, net_link, kind):
    front = gateway(meters, kind)
    link = net_link(front)
    front.inject('mute', count=1)
    assert ask(link, READ_AC, 25, timeout=0.2) == b''
    link.discard_input()
    assert check_reply(READ_AC, ask(link, READ_AC, 25), 10)


def test_a_peer_that_is_not_modbus_tcp_is_named_and_closed(meters, gateway, net_link):
    front = gateway(meters, 'mbtcp')
    link = net_link(front, name='garage')
    front.inject('junk', count=1)
    with pytest.raises(NotModbus) as error:
        ask(link, READ_AC, 25)
    assert isinstance(error.value, OSError)
    assert error.value.strerror == (
        "gateway garage (127.0.0.1:%d) sent something that is not Modbus TCP "
        "(b'HTTP/1.1 400 Bad'): check the gateway's kind (mbtcp: Modbus TCP; tcp: RTU frames "
        "passed as they are) and its port" % front.port)
    with pytest.raises(OSError):
        link.fileno()                               # closed: open() connects again
    link.open()
    assert check_reply(READ_AC, ask(link, READ_AC, 25), 10)


def test_a_transparent_link_hands_junk_on_for_the_exchange_to_judge(meters, gateway, net_link):
    front = gateway(meters, 'tcp')
    link = net_link(front)
    front.inject('junk', count=1, data=b'\x01\x04junk junk junk junk junk')
    with pytest.raises(BadFrame):
        check_reply(READ_AC, ask(link, READ_AC, 25), 10)


def test_a_reply_with_another_transaction_id_is_dropped_and_counted(meters, gateway, net_link):
    front = gateway(meters, 'mbtcp')
    link = net_link(front)
    front.inject('wrong_transaction', count=1)
    assert ask(link, READ_AC, 25, timeout=0.3) == b''
    assert link.stats['stray_replies'] == 1
    assert check_reply(READ_AC, ask(link, READ_AC, 25), 10)
    assert link.stats['stray_replies'] == 1


def test_a_reply_with_another_transaction_id_is_named_in_the_no_reply(meters, gateway, net_link):
    front = gateway(meters, 'mbtcp')
    bus = Bus(link=net_link(front, open=False, name='garage'), timeout=0.3)
    bus.open()
    try:
        front.inject('wrong_transaction', count=1)
        with pytest.raises(NoReply) as error:
            bus.read_input(1, 10)
        assert re.match(r'No reply from meter 1 on garage within 0\.3 s: the gateway answered '
                        r'with Modbus TCP transaction id \d+ where 1 was asked, and such a reply '
                        r'is dropped: a late answer to an earlier request \(a longer timeout may '
                        r'help\), or a gateway that mixes up transaction ids\.$',
                        str(error.value)), str(error.value)
        assert bus.read_input(1, 10)[0] == 2310     # the next one is in step
        front.inject('mute', count=1)               # nothing at all: the plain sentence
        with pytest.raises(NoReply, match='check that it is powered'):
            bus.read_input(1, 10)
    finally:
        bus.close()


def test_a_request_given_up_on_does_not_make_the_next_one_miss(meters, gateway, net_link):
    """A Modbus TCP gateway asks its wire one request at a time: a short ask of a silent
    address (a scan's) holds it until the gateway's own timeout. The next request waits for that
    answer first, so it does not miss its own; a meter that answered late is heard."""
    front = gateway(meters, 'mbtcp', rtu_timeout=0.4)
    bus = Bus(link=net_link(front, open=False), timeout=0.5)
    bus.open()
    try:
        with pytest.raises(NoReply):
            bus.read_input(9, 1, timeout=0.1)           # nobody there: exception 11 at 0.4 s
        assert bus.read_input(1, 10, timeout=0.1)[0] == 2310
        front.delay = 0.2                               # a meter's answer after the short ask
        with pytest.raises(NoReply):
            bus.read_input(3, 1, timeout=0.1)
        assert bus.read_input(1, 10)[0] == 2310
        assert bus.heard == {3}
    finally:
        bus.close()


def test_a_late_reply_never_passes_for_the_next_request(meters, gateway, net_link):
    front = gateway(meters, 'mbtcp', delay=0.1)
    link = net_link(front)
    link.send(READ_DC)                              # given up on: its reply comes late
    reply = ask(link, READ_AC, 25)                  # ... before this one's
    assert check_reply(READ_AC, reply, 10)[0] == 2310
    assert link.stats['stray_replies'] == 1


def test_after_discard_input_a_late_reply_is_dropped(meters, gateway, net_link):
    front = gateway(meters, 'mbtcp', delay=0.1)
    link = net_link(front)
    link.send(READ_AC)
    link.discard_input()                            # the exchange gave up on it
    assert wait_readable(link)
    assert link.receive() == b''
    assert link.stats['stray_replies'] == 1


def test_discard_input_keeps_a_modbus_tcp_stream_in_step():
    """Half a reply is in when the exchange gives up: the rest must not be read as a new frame."""
    server = socket.socket()
    server.bind(('127.0.0.1', 0))
    server.listen(1)
    link = ModbusTcpLink('127.0.0.1', server.getsockname()[1])
    link.open()
    peer, _ = server.accept()
    server.close()
    try:
        link.send(READ_AC)
        request = peer.recv(64)
        assert request == bytes.fromhex('0001 0000 0006 01 04 0000 000a')
        late = bytes.fromhex('0001 0000 0003 01 84 0b')     # an old transaction id
        peer.sendall(late[:4])
        assert wait_readable(link)
        link.discard_input()
        link.send(READ_AC)
        assert peer.recv(64)[:2] == b'\x00\x02'
        answer = bytes.fromhex('0002 0000 0003 01 84 0b')
        peer.sendall(late[4:] + answer)
        assert receive_reply(link, 5) == bytes.fromhex('01 84 0b') + crc_bytes('01 84 0b')
        assert link.stats['stray_replies'] == 1
    finally:
        peer.close()
        link.close()


# -- the link as the exchange uses it ---------------------------------------------------------

@pytest.mark.parametrize('kind', KINDS)
def test_closed_link(meters, gateway, net_link, kind):
    link = net_link(gateway(meters, kind), open=False)
    for call in (link.fileno, lambda: link.send(READ_AC), link.receive):
        with pytest.raises(OSError):
            call()
    link.open()
    fd = link.fileno()
    link.open()                                     # already open: nothing happens
    assert link.fileno() == fd
    link.close()
    link.close()
    with pytest.raises(OSError):
        link.fileno()


@pytest.mark.parametrize('kind', KINDS)
def test_receive_does_not_block(meters, gateway, net_link, kind):
    link = net_link(gateway(meters, kind, delay=0.2))
    link.send(READ_AC)
    started = time.monotonic()
    assert link.receive() == b''
    assert time.monotonic() - started < 0.05
    assert len(receive_reply(link, 25)) == 25


def test_the_links_listen_on_nothing(sim_bus, gateway, net_link):
    fronts = [gateway(sim_bus(AcMeter(1)), kind) for kind in KINDS]
    before = listening_sockets()
    for front in fronts:
        assert check_reply(READ_AC, ask(net_link(front), READ_AC, 25), 10)
    assert listening_sockets() == before == {front.port for front in fronts}


def test_the_simulators_gateway_is_only_on_loopback(meters):
    with Gateway(meters, 'tcp') as front:
        assert front.url.startswith('tcp://127.0.0.1:')
        assert front.port in listening_sockets(host='0100007F')


# -- helpers ----------------------------------------------------------------------------------

def crc_bytes(hex_frame):
    from pzem.rtu import crc16
    crc = crc16(bytes.fromhex(hex_frame))
    return bytes((crc & 0xFF, crc >> 8))


def listening_sockets(host=None):
    """The TCP ports this process listens on (from /proc: its sockets in state LISTEN)."""
    inodes = set()
    for fd in os.listdir('/proc/self/fd'):
        try:
            target = os.readlink('/proc/self/fd/' + fd)
        except OSError:
            continue
        if target.startswith('socket:['):
            inodes.add(target[8:-1])
    ports = set()
    for table in ('/proc/net/tcp', '/proc/net/tcp6'):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                address, port = fields[1].split(':')
                if fields[3] == '0A' and fields[9] in inodes and host in (None, address):
                    ports.add(int(port, 16))
    return ports
