"""The driver's side of its port's own service (port_service.PortSource): what is on the port, read
from the poller and its publishers, and the requests, handed to the Driver's action methods.

Everything here is called by the port service from the main loop with the driver's lock held
(its refresh and its SetValue take that lock), so the poller is never read half-way through a
poll tick.
"""
from . import pins, port_status
from .port_service import PortSource


class DriverSource(PortSource):
    def __init__(self, driver):
        self.driver = driver
        self._pin_match = None      # (udev key, value) naming the adapter, or why it has none

    # -- what is on the port -----------------------------------------------------------------

    def meters(self):
        poller = self.driver.poller
        statuses = []
        for publisher in poller.published:
            statuses += port_status.from_publisher(publisher, self.driver.found_here)
        for waiting in poller.waiting:
            statuses += port_status.waiting(waiting.spec)
        for spec in poller.refused:
            statuses += port_status.refused(spec)
        return statuses

    def searching(self):
        percent = self.driver.poller.search_percent()
        return percent is not None, percent

    def pinned(self):
        match = self.pin_match()
        if isinstance(match, str):
            return None
        try:
            return pins.is_pinned(*match)
        except pins.PinError:
            return None

    def pin_match(self):
        """(udev key, value) that names the adapter, or the sentence saying why it cannot be
        pinned; asked once (it runs udevadm), as the adapter stays what it is while the driver
        runs."""
        if self._pin_match is None:
            try:
                self._pin_match = pins.match_for(self.driver.port, self.driver.bus.path)
            except pins.PinError as e:
                self._pin_match = str(e)
        return self._pin_match

    # -- requests: the driver carries them out -------------------------------------------------

    def set_address(self, address, new, done):
        return self.driver.set_meter_address(address, new, done)

    def reset_energy(self, address, done):
        return self.driver.reset_meter_energy(address, done)

    def search(self, start, done):
        return self.driver.search_meters(start, done)

    def pin(self, on, done):
        match = self.pin_match()
        if isinstance(match, str):
            return sentence(match)
        return self.driver.pin_port(on, done)


def sentence(text):
    """A library's message ('the meter did not ...') as the page shows the driver's sentences:
    with a capital (unless it starts with a name such as ttyUSB0) and a full stop."""
    text = text.strip()
    if not text:
        return text
    first = text.split(None, 1)[0]
    if first.isalpha() and first.islower():
        text = text[0].upper() + text[1:]
    return text + ('' if text.endswith(('.', '!', '?')) else '.')
