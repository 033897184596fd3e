"""One persistent GLib timer for the poll loop.

GLib re-arms a repeating timeout from the moment it was dispatched, so a timer of period P slips
by the dispatch latency at every tick: hours of polling would drift. The ticker keeps the ideal
schedule (start + k x P) and re-arms only when the period changes or it has slipped by a quarter
of a period, instead of adding a new timeout at every tick.
"""
import time

from gi.repository import GLib


class Ticker(object):
    def __init__(self, tick, clock=time.monotonic):
        """tick() -> the period (s) wanted from now on; it may change it (meters come and go)."""
        self._tick = tick
        self.clock = clock
        self.period = None
        self._source = None
        self._origin = 0.0
        self._count = 0

    def start(self, period, first_delay=None):
        self.stop()
        self.period = period
        delay = period if first_delay is None else first_delay
        self._origin = self.clock() + delay - period     # tick k is due at origin + k x period
        self._count = 0
        if first_delay is None:
            self._arm_repeating()
        else:
            self._source = GLib.timeout_add(max(0, int(delay * 1000)), self._first)

    def stop(self):
        if self._source is not None:
            GLib.source_remove(self._source)
            self._source = None

    def _arm_repeating(self):
        self._source = GLib.timeout_add(max(1, int(round(self.period * 1000))), self._fire)

    def _first(self):
        self._source = None
        if self._fire():
            self._arm_repeating()
        return False

    def _fire(self):
        """One tick; True while the repeating timer may stay as it is."""
        period = self._tick()
        self._count += 1
        if period != self.period:
            self._source = None
            self.start(period)
            return False
        late = self.clock() - (self._origin + self._count * self.period)
        if abs(late) <= self.period / 4:
            return True
        if late > self.period:          # a long stall: start the schedule afresh from now
            self._origin, self._count, late = self.clock(), 0, 0.0
        self._source = GLib.timeout_add(max(0, int((self.period - late) * 1000)), self._first)
        return False
