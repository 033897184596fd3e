"""Fixtures for tests through the simulator's network front (pzemsim.gateway) on 127.0.0.1.

    from sim_fixtures import sim_bus  # noqa: F401 (pytest fixtures)
    from gateway_fixtures import gateway, net_link  # noqa: F401

    def test_read(sim_bus, gateway, net_link):
        front = gateway(sim_bus(AcMeter(1)), 'mbtcp')     # started; stopped after the test
        link = net_link(front, name='garage')              # a pzem.net_link link, open

GatewayRig is driver_rig.Rig with the meters behind such a gateway: the real driver runs on the
gateway's URL.
"""

import select

import pytest

from driver_rig import Rig
from pzemsim.gateway import Gateway

GATEWAY_DRIVER_ARGS = ('--interval', '0.2', '--timeout', '0.3')


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


class GatewayRig(Rig):
    """The driver rig (driver_rig.Rig) with the simulated meters behind a network gateway of
    `kind` ('tcp' or 'mbtcp'; gateway_options go to pzemsim.gateway.Gateway). The map starts with
    the gateway's section, [gateway:NAME] with the port the gateway listens on (declare=False
    leaves it out: the driver then names the port itself), then `map_text`; NAME is the port of
    the services and of [NAME:N]. start_driver() runs the driver on the gateway's URL."""

    def __init__(self, tmp_path, meters, kind, map_text='', name='garage', declare=True,
                 gateway_options=None, driver_args=GATEWAY_DRIVER_ARGS, **options):
        Rig.__init__(self, tmp_path, meters, None, port=name, driver_args=driver_args, **options)
        self.kind = kind
        self.gateway_map = map_text
        self.declare = declare
        self.gateway_options = gateway_options or {}
        self.gateway = None

    def __enter__(self):
        Rig.__enter__(self)
        try:
            self.gateway = Gateway(self.sim, self.kind, **self.gateway_options).start()
            with open(self.map_path, 'w') as f:
                f.write((self.section() if self.declare else '') + self.gateway_map)
        except BaseException:
            Rig.__exit__(self, None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        try:
            Rig.__exit__(self, *exc)
        finally:
            self.gateway.stop()

    def section(self, host='127.0.0.1'):
        return '[gateway:%s]\nhost = %s\nport = %d\nkind = %s\n\n' % (
            self.port, host, self.gateway.port, self.kind)

    def start_driver(self, *extra, tty=None, env=None):
        return Rig.start_driver(self, *extra, tty=tty or self.gateway.url, env=env)

    def alive(self):
        """True while the driver runs (a gateway's driver never exits for the network's sake)."""
        return self.driver is not None and self.driver.poll() is None
