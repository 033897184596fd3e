"""Fixtures for tests through the simulator's network front (pzemsim.gateway) on 127.0.0.1.

    from sim_fixtures import sim_bus  # noqa: F401 (pytest fixtures)
    from gateway_fixtures import gateway, net_link  # noqa: F401

    def test_read(sim_bus, gateway, net_link):
        front = gateway(sim_bus(AcMeter(1)), 'mbtcp')     # started; stopped after the test
        link = net_link(front, name='garage')              # a pzem.net_link link, open
"""

import select

import pytest

from pzemsim.gateway import Gateway


@pytest.fixture
def gateway():
    """gateway(sim or serial path, kind='tcp', **Gateway options) -> a started Gateway; every
    gateway made is stopped after the test."""
    made = []

    def start(wire, kind='tcp', **options):
        front = Gateway(wire, kind, **options)
        made.append(front)
        return front.start()

    yield start
    for front in made:
        front.stop()


@pytest.fixture
def net_link():
    """net_link(gateway, open=True, **link options) -> the pzem.net_link link of the gateway's
    kind to it; every link made is closed after the test."""
    from pzem.net_link import link_for
    made = []

    def connect(front, open=True, **options):
        link = link_for(front.url, **options)
        made.append(link)
        if open:
            link.open()
        return link

    yield connect
    for link in made:
        link.close()


def wait_readable(link, timeout=2.0):
    """True once the link's connection has something to read (or was closed), as the exchange
    waits for it; False after `timeout` seconds."""
    poll = select.poll()
    poll.register(link.fileno(), select.POLLIN)
    return bool(poll.poll(timeout * 1000.0))


def receive_reply(link, size, timeout=2.0):
    """The bytes received until `size` came, the link had nothing more for `timeout` seconds, or
    a receive raised (then it raises)."""
    data = b''
    while len(data) < size and wait_readable(link, timeout):
        data += link.receive()
    return data


def ask(link, request, size, timeout=2.0):
    link.send(request)
    return receive_reply(link, size, timeout)
