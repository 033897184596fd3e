"""The driver's side of its port's own service (port_service.PortSource): what is on the port, read
from the poller and its publishers, and the requests, carried out with the driver's own code, the
same as pzemctl's: address_change (a new address, the map following), energy_reset, pins, and
the poller's search.

Everything here is called by the port service from the main loop with the driver's lock held
(its refresh and its SetValue take that lock), so the poller is never read half-way through a
poll tick. A request that talks to the meters runs with the port held (Driver.hold_port): on a
thread of its own, no poll meanwhile, and what follows from it (the new map applied, the meter
told its counter was reset) in the main loop before the next poll.
"""
import logging
import threading

from gi.repository import GLib

from . import pins, port_status, roles
from .port_service import PortSource

SEARCH_REPORT_SECONDS = 1.0     # a requested search's progress, refreshed this often

log = logging.getLogger('pzem')


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

    # -- requests -----------------------------------------------------------------------------

    def set_address(self, address, new, done):
        """The meter at `address` gets `new` and its map section follows it; the new map
        applies at once (Driver.follow_map)."""
        from . import address_change
        driver = self.driver

        def then(change, error):
            if error is not None:
                return done(False, sentence(str(error)))
            driver.follow_map()
            said = 'The %s now answers at address %d (was %d)' % (change.model.name, new, address)
            if change.moved:
                said += '; its map section [%s] is now [%s]' % change.moved
            elif change.added:
                said += '; the map had no section for it: added [%s] with role %s' % (
                    change.added, roles.DEFAULT_ROLE[change.model.family])
            done(True, said + '.')
        driver.hold_port(lambda: address_change.change_address(
            driver.bus, driver.port, address, new, driver.config), _guarded(then, done))

    def reset_energy(self, address, done):
        """The meter's own counter to 0; the published totals go on from where they are (the
        meter takes the reset as its new baseline: Meter.counter_reset)."""
        from .energy_reset import reset_counter
        driver = self.driver
        meter = next((m for p in driver.poller.published for _, m in p.phases
                      if m.address == address), None)
        if meter is None:
            return 'No meter is published at address %d on %s.' % (address, driver.port)
        before = meter.reading['energy'] if meter.reading else None

        def then(kwh, error):
            if error is not None:
                return done(False, sentence(str(error)))
            meter.counter_reset(kwh)
            done(True, 'The meter\'s counter reads %.3f kWh now%s; the published totals keep '
                       'counting up.' % (kwh, '' if before is None else
                                         ' (was %.3f kWh)' % before))
        driver.hold_port(lambda: reset_counter(driver.bus, address, meter.model),
                         _guarded(then, done))

    def search(self, start, done):
        """Every address nobody named, asked between the polls (Poller.search); done() once
        every address was asked, or once it was stopped (search(False, None))."""
        driver = self.driver
        driver.poller.search(start)
        if not start:
            return None         # the running search notices, and reports its end
        before = set(driver.found_here)

        def follow():
            with driver.lock:
                percent = driver.poller.search_percent()
                driver.port_changed()
                if percent is not None:
                    return True
                found = sorted(driver.found_here - before)
                done(True, '%s: %s.' % (
                    'The search was stopped' if driver.poller.search_stopped else
                    'Every address was asked', 'found no new meter' if not found else
                    'found %d new meter(s), at address %s' % (len(found),
                                                               ', '.join(map(str, found)))))
                return False
        GLib.timeout_add(int(SEARCH_REPORT_SECONDS * 1000), follow)
        return None

    def pin(self, on, done):
        """The adapter's udev rule (pins, as pzemctl pin / unpin), on a thread of its own: the
        installer's step it runs reloads udev. The port is not needed for it."""
        match = self.pin_match()
        if isinstance(match, str):
            return sentence(match)
        port, path = self.driver.port, self.driver.bus.path

        def run():
            try:
                key, value, was, rules = (pins.pin if on else pins.unpin)(port, path)
            except pins.PinError as e:
                done(False, sentence(str(e)))
                return
            except Exception as e:      # the installer could not be run at all
                log.exception('%s: %s failed', port, 'pin' if on else 'unpin')
                done(False, '%s failed: %s.' % ('Pinning' if on else 'Unpinning', e))
                return
            if on:
                said = 'Pinned %s (%s=%s) to the pzem driver in %s; it takes effect when the ' \
                       'adapter is plugged in again.' % (port, key, value, rules)
            elif was:
                said = 'Unpinned %s: its rule is removed from %s.' % (port, rules)
            else:
                said = '%s was not pinned: nothing to remove.' % port
            done(True, said)
        threading.Thread(target=run, name='pin', daemon=True).start()
        return None


def _guarded(then, done):
    """then(result, error), or done(False, why) when it fails itself: a request is never left
    running."""
    def guarded(result, error):
        try:
            then(result, error)
        except Exception as e:
            log.exception('finishing a request failed')
            done(False, 'It was carried out, but the driver failed to follow it (%s): restart '
                        'the driver.' % e)
    return guarded


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
