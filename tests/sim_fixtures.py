"""Fixtures for tests that talk Modbus-RTU bytes to the simulator (pzemsim) on a pty.

Import the fixtures into a test module to use them:

    from sim_fixtures import sim_bus, raw_port, modbus_bus  # noqa: F401 (pytest fixtures)

    def test_read(sim_bus, modbus_bus):
        sim = sim_bus(AcMeter(1, voltage=231.0))     # started; stopped after the test
        bus = modbus_bus(sim, timeout=0.2)            # a pzem.modbus.Bus, open on the sim's link
"""

from collections import Counter

import pytest
import serial

from pzemsim import SimBus


@pytest.fixture
def sim_bus(tmp_path):
    """sim_bus(*meters, **SimBus options) -> a started SimBus whose link lies in the test's
    tmp folder; every bus made is stopped after the test."""
    buses = []

    def start(*meters, **options):
        sim = SimBus(str(tmp_path / ('ttyPZEM%d' % len(buses))), **options)
        for meter in meters:
            sim.add(meter)
        buses.append(sim)
        return sim.start()

    yield start
    for sim in buses:
        sim.stop()


@pytest.fixture
def raw_port():
    """raw_port(sim or path, timeout=0.2) -> a pyserial port (9600 8N2) on the simulator's link."""
    ports = []

    def open_port(sim, timeout=0.2):
        port = serial.Serial(getattr(sim, 'link', sim), 9600, stopbits=2, timeout=timeout)
        ports.append(port)
        return port

    yield open_port
    for port in ports:
        try:
            port.close()
        except (OSError, serial.SerialException):
            pass


@pytest.fixture
def modbus_bus():
    """modbus_bus(sim or path, timeout=0.2, **Bus options) -> an open pzem.modbus.Bus."""
    from pzem.modbus import Bus
    buses = []

    def open_bus(sim, timeout=0.2, **options):
        bus = Bus(getattr(sim, 'link', sim), timeout=timeout, **options)
        buses.append(bus)
        bus.open()
        return bus

    yield open_bus
    for bus in buses:
        bus.close()


class ScriptedMeter:
    """A stand-in meter for SimBus that answers each request for its address with the bytes
    in `reply`, whatever they are (None: silence). `requests` keeps what it was sent."""

    model = 'scripted'

    def __init__(self, address=1, reply=None):
        self.address = address
        self.reply = reply
        self.requests = []
        self.stats = Counter()

    def handle(self, request):
        self.requests.append(request)
        return self.reply


def exchange(port, request, size):
    """Write `request` on a raw port and read up to `size` bytes back (fewer on timeout)."""
    port.reset_input_buffer()
    port.write(request)
    return port.read(size)
