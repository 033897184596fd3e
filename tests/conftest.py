"""Shared pytest set-up: import paths for the driver package and the simulator."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER_DIR = os.path.join(ROOT, 'package', 'opt', 'pzem')
for path in (ROOT, DRIVER_DIR, os.path.join(ROOT, 'tests')):
    if path not in sys.path:
        sys.path.insert(0, path)


from dbus_helpers import Client, connect, private_bus  # noqa: E402  (needs the paths above)


def pytest_collection_modifyitems(items):
    """Tests marked `long` go first: the parallel workers take them at once, and the run does
    not wait for one of them at its end."""
    items.sort(key=lambda item: item.get_closest_marker('long') is None)


@pytest.fixture
def address():
    """The address of a private dbus-daemon, stopped after the test."""
    with private_bus() as address:
        yield address


@pytest.fixture
def bus(address):
    """A connection of the test's own to the private bus."""
    bus = connect(address)
    yield bus
    bus.close()


@pytest.fixture
def client(address):
    """An independent BusItem client on the private bus."""
    client = Client(address)
    yield client
    client.close()
