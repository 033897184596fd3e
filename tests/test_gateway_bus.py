"""The driver's bus through a network gateway (pzem.gateway_bus.GatewayBus), on real sockets to the
simulator's network front and to plain loopback servers: it connects at once or later and never
raises for the network's sake; a request while it is not connected fails at once; a connection
that fails is made again (at once after one that carried replies, then ever more slowly); the log
says once what is wrong and once that the gateway is back; a gateway that stops answering is
noticed."""
import logging
import re
import socket
import threading
import time

import pytest

from gateway_fixtures import gateway  # noqa: F401 (pytest fixture)
from sim_fixtures import sim_bus  # noqa: F401 (pytest fixture)
from pzem.gateway_bus import GatewayAway, GatewayBus
from pzem.modbus import NoReply
from pzem.net_link import link_for
from pzemsim import AcMeter

KINDS = ('tcp', 'mbtcp')
FAST = (0.1, 0.2, 0.4)          # backoff for tests: the driver's is 2 s up to a minute


@pytest.fixture
def meters(sim_bus):
    return sim_bus(AcMeter(1, voltage=231.0))


@pytest.fixture
def gateway_bus():
    """gateway_bus(url, **GatewayBus options) -> an open GatewayBus on a link named 'garage';
    every one made is closed after the test."""
    made = []

    def make(url, connect_timeout=1.0, timeout=0.3, backoff=FAST, **options):
        link = link_for(url, name='garage', connect_timeout=connect_timeout)
        bus = GatewayBus(link, timeout=timeout, backoff=backoff, **options)
        made.append(bus)
        bus.open()
        return bus

    yield make
    for bus in made:
        bus.close()


def read(bus):
    return bus.read_input(1, 10)[0]


def eventually(check, timeout=5.0):
    """check()'s first value that is not an exception or falsy, asked every 5 ms."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
            if value:
                return value
        except NoReply:
            pass
        if time.monotonic() > deadline:
            raise AssertionError('not within %g s' % timeout)
        time.sleep(0.005)


def said(caplog, text):
    """The log lines (of the 'pzem' logger) that contain `text`."""
    return [r.getMessage() for r in caplog.records if r.name == 'pzem' and text in r.getMessage()]


@pytest.fixture(autouse=True)
def log_everything(caplog):
    caplog.set_level(logging.INFO, logger='pzem')


@pytest.mark.parametrize('kind', KINDS)
def test_connects_at_open_and_reads(meters, gateway, gateway_bus, caplog, kind):
    front = gateway(meters, kind)
    bus = gateway_bus(front.url)
    assert bus.connected
    assert read(bus) == 2310
    assert said(caplog, 'connected') == ['connected to gateway garage (127.0.0.1:%d)' % front.port]


@pytest.mark.parametrize('kind', KINDS)
def test_a_gateway_that_refuses_at_start_is_connected_once_it_answers(meters, gateway,
                                                                      gateway_bus, caplog, kind):
    front = gateway(meters, kind)
    front.stop()
    bus = gateway_bus(front.url)                # does not raise
    assert not bus.connected
    started = time.monotonic()
    with pytest.raises(GatewayAway) as away:
        read(bus)
    assert time.monotonic() - started < 0.05    # nothing to wait for: it fails at once
    assert str(away.value) == 'No reply from meter 1 on garage: the gateway is not connected.'
    time.sleep(0.5)                             # a few more refused attempts: said once
    assert said(caplog, 'refuses') == [
        'Gateway garage (127.0.0.1:%d) refuses connections: check its address and its TCP '
        'server port. Connecting again every few seconds (at least once a minute); its meters '
        'are invalid meanwhile.' % front.port]
    front.start()
    assert eventually(lambda: read(bus)) == 2310
    assert said(caplog, 'connected to') == ['connected to gateway garage (127.0.0.1:%d) again, '
                                            'after 1 s' % front.port]


@pytest.mark.parametrize('kind', KINDS)
def test_a_connection_that_carried_replies_is_made_again_at_once(meters, gateway, gateway_bus,
                                                                 caplog, kind):
    front = gateway(meters, kind)
    bus = gateway_bus(front.url, backoff=(5.0,))   # only an attempt made at once can be in time
    assert read(bus) == 2310
    front.cut()
    with pytest.raises(GatewayAway, match='the connection to the gateway failed'):
        read(bus)
    assert not bus.connected
    started = time.monotonic()
    assert eventually(lambda: read(bus), timeout=1.0) == 2310
    assert time.monotonic() - started < 0.5
    assert said(caplog, 'closed') == [
        'Gateway garage (127.0.0.1:%d) closed the connection. Connecting again every few seconds '
        '(at least once a minute); its meters are invalid meanwhile.' % front.port]
    assert front.stats['connections'] == 2


def test_connections_that_carry_nothing_back_are_made_again_ever_more_slowly(gateway_bus,
                                                                               caplog):
    """A peer that accepts and hangs up at once: each connection fails at its first request."""
    server = socket.socket()
    server.bind(('127.0.0.1', 0))
    server.listen(8)
    server.settimeout(0.05)
    accepted, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                peer, _ = server.accept()
            except socket.timeout:
                continue
            accepted.append(time.monotonic())
            peer.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        bus = gateway_bus('tcp://127.0.0.1:%d' % server.getsockname()[1])
        eventually(lambda: len(accepted) >= 6 or read(bus) and False, timeout=5.0)
    finally:
        stop.set()
        thread.join()
        server.close()
    gaps = [b - a for a, b in zip(accepted, accepted[1:])][:5]
    for gap, wanted in zip(gaps, (0.1, 0.2, 0.4, 0.4, 0.4)):
        assert wanted - 0.01 < gap < wanted + 0.2, gaps
    assert len(said(caplog, 'closed the connection')) == 1
    assert len(said(caplog, 'again, after')) == 1     # never said again: it never answered


def test_a_modbus_tcp_gateway_that_stops_answering_is_connected_again(meters, gateway,
                                                                      gateway_bus, caplog):
    front = gateway(meters, 'mbtcp')
    bus = gateway_bus(front.url, timeout=0.1, silent_seconds=0.5)
    assert read(bus) == 2310
    front.inject('mute')                        # takes every request, answers none
    started = time.monotonic()
    while not said(caplog, 'stopped answering'):
        with pytest.raises(NoReply):
            read(bus)
        assert time.monotonic() - started < 3.0
    assert time.monotonic() - started >= 0.5
    [line] = said(caplog, 'stopped answering')
    assert re.match(r'Gateway garage \(127\.0\.0\.1:%d\) stopped answering: nothing came back '
                    r'to (\d+) requests in (\d+\.\d) s on an open connection\. Connecting again '
                    r'every few seconds \(at least once a minute\); its meters are invalid '
                    r'meanwhile\.$' % front.port, line), line
    front.clear_faults()
    assert eventually(lambda: read(bus), timeout=3.0) == 2310
    assert front.stats['connections'] >= 2


def test_silence_behind_a_transparent_gateway_shortens_the_wait(meters, gateway, gateway_bus,
                                                               caplog):
    front = gateway(meters, 'tcp')
    bus = gateway_bus(front.url, timeout=0.4, quick_timeout=0.05, silent_seconds=0.5)
    assert read(bus) == 2310
    meters.meter(1).inject('silent')            # no meter answers: nothing comes through
    waits = []
    while len(waits) < 6:
        started = time.monotonic()
        with pytest.raises(NoReply):
            read(bus)
        waits.append(time.monotonic() - started)
    assert min(waits[:2]) >= 0.38 and max(waits[-2:]) < 0.2, waits
    assert bus.connected and bus.silent         # the connection stays: the gateway may be fine
    [line] = said(caplog, 'nothing has come through')
    assert line.startswith('nothing has come through gateway garage (127.0.0.1:%d) for ' %
                           front.port)
    assert line.endswith("Asking with a 0.05 s timeout until something comes.")
    meters.meter(1).clear_faults()
    assert eventually(lambda: read(bus), timeout=2.0) == 2310
    assert not bus.silent
    assert said(caplog, 'replies come through') == [
        'replies come through gateway garage (127.0.0.1:%d) again' % front.port]


def test_close_ends_the_connector(meters, gateway, gateway_bus):
    front = gateway(meters, 'tcp')
    front.stop()
    bus = gateway_bus(front.url)
    thread = bus._thread
    assert thread.is_alive()
    started = time.monotonic()
    bus.close()
    assert time.monotonic() - started < 0.5
    assert not thread.is_alive()


def test_a_request_that_cannot_go_out_is_not_counted_as_sent(meters, gateway, gateway_bus):
    front = gateway(meters, 'mbtcp')
    front.stop()
    bus = gateway_bus(front.url)
    with pytest.raises(GatewayAway):
        read(bus)
    assert bus.stats['requests'] == 0

